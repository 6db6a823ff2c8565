//! One packet through palisade, for any of the programs: parse, identity, fragments,
//! conntrack, admission; then counters, events and the debug line; and for a packet a
//! workload sends that passed, forwarding it to another local workload, whose ingress
//! judgment `deliver` then makes.
//!
//! The configuration (and with it the generation and slot) is read once, at the start, so a
//! packet sees the old policy or the new one, never a mix.

use aya_ebpf::programs::TcContext;
use palisade_common::{
    CONFIG_DEBUG_LOG, CONFIG_LOCAL_REDIRECT, Config, CtKey, DIR_EGRESS, DIR_INGRESS,
    DROP_CT_BUDGET, DROP_NOT_LOCAL, DROP_REVOKED, DROP_SPOOFED, ENDPOINT_NONE, EVENT_DROP,
    EVENT_LOG, OUTCOME_LOG, STAT_CT_ESTABLISHED, STAT_CT_NEW, STAT_CT_PICKED_UP, STAT_CT_RECHECKED,
    STAT_FRAGMENTS, STAT_HOST_TO_WORKLOAD, STAT_IP_OPTIONS, STAT_PASSED_ARP_ND,
};

use crate::{
    admission, clock,
    conntrack::{self, Entry, Opened},
    counters, debug_log,
    events::{self, Subject},
    forward, frag, identity, maps,
    parse::{self, FragmentKind, PARSED_ARP_OR_ND, PARSED_IP, Packet},
    policy::{self, Query},
    verdict::{NO_STAT, Verdict},
};

/// `direction`: `DIR_EGRESS` for packets from the workload, `DIR_INGRESS` for packets to it.
#[inline(always)]
pub fn run(ctx: &TcContext, direction: u8) -> i32 {
    let config = maps::config();
    // SAFETY: the program's own context, valid for the whole run.
    let (ifindex, ingress_ifindex) =
        unsafe { ((*ctx.skb.skb).ifindex, (*ctx.skb.skb).ingress_ifindex) };
    let verdict = judge_and_count(ctx, &config, direction, ifindex, ingress_ifindex);
    if verdict.pass && verdict.forward_to != 0 && config.flags & CONFIG_LOCAL_REDIRECT != 0 {
        if direction == DIR_EGRESS {
            // Only once the packet passed and was counted: forwarding changes where it
            // goes, not what was decided about it; the destination's ingress policy
            // judges it on its way in.
            if let Some(action) = forward::to_local_workload(ctx, ifindex, verdict.forward_to)
            {
                return action;
            }
        } else {
            // The stack forwarded a flow's first packet here from another local workload,
            // with the MACs the later ones will be delivered with.
            forward::learn_macs(ctx, ifindex);
        }
    }
    verdict.tc_action()
}

/// `palisade_deliver`: the packet `palisade_from_wl` passed on the sender's host veth and
/// forwards to the local workload behind host veth `skb->cb[0]`, judged as that veth's
/// `palisade_to_wl` would judge it, then handed to the workload's side of the veth.
#[inline(always)]
pub fn deliver(ctx: &TcContext) -> i32 {
    let config = maps::config();
    // SAFETY: the program's own context, valid for the whole run. `cb[0]` was written by
    // `forward::hand_to_deliver` in the run that tail-called this one; this program is
    // attached nowhere, so no other way leads here.
    let (to, ingress_ifindex) =
        unsafe { ((*ctx.skb.skb).cb[0], (*ctx.skb.skb).ingress_ifindex) };
    let verdict = judge_and_count(ctx, &config, DIR_INGRESS, to, ingress_ifindex);
    if !verdict.pass {
        return verdict.tc_action();
    }
    forward::into_workload(to)
}

/// The verdict on the packet at the host veth `ifindex` in `direction`, counted, reported
/// and logged. `ingress_ifindex`: the interface the packet came into the host by
/// (`skb->skb_iif`), 0 when the host made it.
#[inline(always)]
fn judge_and_count(
    ctx: &TcContext,
    config: &Config,
    direction: u8,
    ifindex: u32,
    ingress_ifindex: u32,
) -> Verdict {
    let subject = Subject {
        direction,
        ifindex,
        generation: config.generation,
        len: ctx.len(),
    };
    let mut packet = Packet::NONE;
    let (verdict, parsed) = match parse::parse(ctx, direction, &mut packet) {
        PARSED_IP => (
            judge(&packet, config, &subject, ingress_ifindex),
            Some(&packet),
        ),
        PARSED_ARP_OR_ND => (Verdict::pass(STAT_PASSED_ARP_ND), None),
        drop_reason => (Verdict::drop(drop_reason), None),
    };
    finish(ctx, config, &subject, parsed, &verdict);
    verdict
}

/// Who sends or receives the packet on the workload's side, under the current slot.
struct Local {
    slot: u8,
    local_id: u32,
}

/// The workload's identity, from its own address in the packet; `Err` is the drop reason
/// when the address is not the workload's (spoofed on the way out, not local on the way in).
#[inline(always)]
fn local_of(packet: &Packet, config: &Config, subject: &Subject) -> Result<Local, u32> {
    let slot = (config.generation % 2) as u8;
    let egress = subject.direction == DIR_EGRESS;
    let own_addr = if egress { &packet.src } else { &packet.dst };
    match identity::local_id(slot, packet.family, subject.ifindex, own_addr) {
        Some(local_id) => Ok(Local { slot, local_id }),
        None => Err(if egress { DROP_SPOOFED } else { DROP_NOT_LOCAL }),
    }
}

/// `ingress_ifindex`: the interface the packet came into the host by (`skb->skb_iif`), 0
/// when the host made it.
#[inline(always)]
fn judge(packet: &Packet, config: &Config, subject: &Subject, ingress_ifindex: u32) -> Verdict {
    if packet.has_ip_options {
        counters::count(STAT_IP_OPTIONS);
    }
    let fragment = packet.fragment;
    match fragment.kind {
        FragmentKind::Whole => judge_flow(packet, config, subject, ingress_ifindex),
        FragmentKind::First => {
            counters::count(STAT_FRAGMENTS);
            let verdict = judge_flow(packet, config, subject, ingress_ifindex);
            frag::remember_first(
                subject.ifindex,
                subject.direction,
                fragment.id,
                packet,
                &verdict,
                clock::now(),
            );
            verdict
        }
        FragmentKind::Later => {
            counters::count(STAT_FRAGMENTS);
            match local_of(packet, config, subject) {
                Ok(_) => frag::judge_later(subject.ifindex, subject.direction, fragment.id, packet),
                Err(reason) => Verdict::drop(reason),
            }
        }
    }
}

/// Conntrack first; identity and policy (with the host rules) for what it does not know.
#[inline(always)]
fn judge_flow(
    packet: &Packet,
    config: &Config,
    subject: &Subject,
    ingress_ifindex: u32,
) -> Verdict {
    let direction = subject.direction;
    // The host made it: it did not come in through any interface.
    let from_host = direction == DIR_INGRESS && ingress_ifindex == 0;
    let key = conntrack::key_of(subject.ifindex, direction, packet);
    let entry = match &key {
        Some(key) => conntrack::lookup(key, packet, direction),
        None => Entry::NONE,
    };
    if entry.holds && entry.value.generation == config.generation {
        // Decided under this very generation: no identity lookup, no policy.
        if entry.revoked() {
            return Verdict::drop(DROP_REVOKED);
        }
        // The entry was admitted (or re-checked) under this generation, so its local
        // address passed the identity check in this very slot, which the agent never
        // changes while packets use it. The key holds that address and the ifindex.
        // The entry also knows where the endpoint counts: no `PAL_EP_INDEX` lookup.
        let endpoint = entry.value.endpoint;
        conntrack::refresh(&entry, packet, config.generation, endpoint);
        return Verdict::pass_of(STAT_CT_ESTABLISHED, endpoint)
            .forwarded_to(entry.value.forward_ifindex);
    }
    let local = match local_of(packet, config, subject) {
        Ok(local) => local,
        Err(reason) => return Verdict::drop(reason),
    };
    if entry.holds
        && let Some(key) = &key
    {
        return recheck(key, &entry, packet, config, &local);
    }
    // A new flow, or a TCP segment of a connection conntrack lost (evicted, or left in an
    // older ABI's maps): either way the packet is judged like the first of a flow in the
    // direction it travels, and opens the flow if policy allows it. A flow revoked earlier
    // still has its entry (it held the packet above), so this never reopens it.

    let (a, b) = policy::table_keys(packet);
    let peer = if direction == DIR_EGRESS {
        &packet.dst
    } else {
        &packet.src
    };
    let query = Query {
        slot: local.slot,
        direction,
        local_id: local.local_id,
        family: packet.family,
        peer,
        protocol: packet.protocol,
        a,
        b,
    };
    let admission = admission::admit(&query, from_host, config.flags);
    // Looked up after policy, not carried through it (see `verdict::Verdict::endpoint`).
    if admission.from_host {
        let endpoint = counters::endpoint_index(subject.ifindex);
        if !track(key.as_ref(), packet, direction, config, endpoint, 0) {
            return Verdict::drop(DROP_CT_BUDGET);
        }
        events::flow_allowed(
            config,
            subject,
            packet,
            STAT_HOST_TO_WORKLOAD,
            u32::MAX,
            false,
        );
        return Verdict::pass_of(STAT_HOST_TO_WORKLOAD, endpoint);
    }
    let decision = &admission.decision;
    counters::count_rule(decision.rule_counter, subject.len);
    if !admission.allowed {
        if decision.flags & OUTCOME_LOG != 0 {
            events::report(
                EVENT_LOG,
                subject,
                Some(packet),
                admission.reason,
                decision.outcome,
            );
        }
        return Verdict::drop_by(admission.reason, decision.outcome);
    }
    let endpoint = counters::endpoint_index(subject.ifindex);
    // Learnt when the packet reaches its destination: only then are both ends' views of
    // the flow known to be the same.
    let forward_ifindex = match &key {
        Some(key)
            if direction == DIR_INGRESS
                && ingress_ifindex != 0
                && config.flags & CONFIG_LOCAL_REDIRECT != 0 =>
        {
            conntrack::learn_forwarding(key, ingress_ifindex)
        }
        _ => 0,
    };
    if !track(
        key.as_ref(),
        packet,
        direction,
        config,
        endpoint,
        forward_ifindex,
    ) {
        return Verdict::drop_by(DROP_CT_BUDGET, decision.outcome);
    }
    // Told apart only now: a flag known all through the policy lookup would have the
    // verifier walk that lookup once for each value.
    let picked_up = packet.protocol == parse::PROTO_TCP && packet.tcp_flags & parse::TCP_SYN == 0;
    let stat = if picked_up {
        STAT_CT_PICKED_UP
    } else {
        STAT_CT_NEW
    };
    events::flow_allowed(
        config,
        subject,
        packet,
        stat,
        decision.outcome,
        decision.flags & OUTCOME_LOG != 0,
    );
    // On the way in, `forward_to` says that the flow was just learnt for forwarding.
    Verdict::pass_of(stat, endpoint).forwarded_to(forward_ifindex)
}

/// Opens the entry of a flow admission allowed (untracked packets have no key), for the
/// endpoint at `PAL_EP_STATS[endpoint]`, forwarded to `forward_ifindex` (0: by the
/// stack); false when the endpoint's conntrack budget is used up.
#[inline(always)]
fn track(
    key: Option<&CtKey>,
    packet: &Packet,
    direction: u8,
    config: &Config,
    endpoint: u32,
    forward_ifindex: u32,
) -> bool {
    let Some(key) = key else {
        return true;
    };
    conntrack::open(
        key,
        packet,
        direction,
        config.generation,
        config.ct_budget,
        endpoint,
        forward_ifindex,
    ) == Opened::Yes
}

/// A live (or revoked) flow last decided under another generation: its opening packet, as
/// it was, is decided again under the current one. Allowed, the flow goes on (a revoked
/// one is live again); denied, it is (or stays) revoked.
#[inline(always)]
fn recheck(key: &CtKey, entry: &Entry, packet: &Packet, config: &Config, local: &Local) -> Verdict {
    let (a, b) = conntrack::original_table_keys(key, &entry.value);
    let original = Query {
        slot: local.slot,
        direction: entry.value.origin,
        local_id: local.local_id,
        family: key.family,
        peer: &key.remote_addr,
        protocol: key.protocol,
        a,
        b,
    };
    // Which interface the opening packet came in on is not kept; the host's addresses tell
    // its flows apart.
    let opened_by_host =
        entry.value.origin == DIR_INGRESS && admission::is_host_addr(key.family, &key.remote_addr);
    let admission = admission::admit(&original, opened_by_host, config.flags);
    if admission.allowed {
        // Looked up again: the endpoint may have been attached afresh since the entry
        // was written, with another index.
        let endpoint = counters::endpoint_index(key.ifindex);
        conntrack::refresh(entry, packet, config.generation, endpoint);
        return Verdict::pass_of(STAT_CT_RECHECKED, endpoint);
    }
    conntrack::revoke(entry, config.generation);
    Verdict::drop_by(DROP_REVOKED, admission.decision.outcome)
}

/// What every packet gets, whatever decided it.
#[inline(always)]
fn finish(
    ctx: &TcContext,
    config: &Config,
    subject: &Subject,
    packet: Option<&Packet>,
    verdict: &Verdict,
) {
    let endpoint = if verdict.endpoint == ENDPOINT_NONE {
        counters::endpoint_index(subject.ifindex)
    } else {
        verdict.endpoint
    };
    counters::count_endpoint(endpoint, subject.direction, verdict.pass, subject.len);
    if verdict.pass {
        if verdict.stat != NO_STAT {
            counters::count(verdict.stat);
        }
    } else {
        counters::count(verdict.stat);
        if events::drop_sampled(config.drop_event_mask) {
            events::report(EVENT_DROP, subject, packet, verdict.stat, verdict.outcome);
        }
    }
    if config.flags & CONFIG_DEBUG_LOG != 0 {
        debug_log::verdict(ctx, subject, verdict);
    }
}
