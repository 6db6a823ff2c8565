//! A reference model of palisade's connection tracking, written for clarity, for the
//! differential test of the real programs (`tests/tests/bpf_differential.rs`). Policy
//! decisions are `policy::Model::evaluate`'s; this states what conntrack does with them.
//!
//! - Each enforcement point (a host veth) tracks flows from its workload's side: a flow is
//!   (protocol, workload address and port, peer address and port) for TCP, UDP and SCTP;
//!   ICMP echo of the address family by identifier (requests go the way the flow was
//!   opened, replies the other way); any other protocol by the addresses alone. Other ICMP
//!   messages of the family are not tracked: policy decides each.
//! - A packet of a live flow last decided under the current generation passes. Under
//!   another generation the flow's opening packet is decided again: allowed, the packet
//!   passes; denied, the flow is revoked.
//! - A revoked flow drops every packet of its key, from either side, until
//!   `CT_TIMEOUT_REVOKED_NS` after the cut (later packets do not extend it); a later
//!   generation that allows the opening packet makes it live again.
//! - Anything else (no flow, an expired one, a packet that starts a new flow over an old
//!   one's key: a bare SYN after FIN or RST, an echo request the other way) is decided by
//!   policy in the direction it travels, as the first packet of a flow, TCP segments
//!   without SYN included (they "pick up" a flow conntrack lost). Allowed, it opens the flow
//!   (an echo reply opens nothing).
//! - Idle timeouts: `CT_TIMEOUT_*`, by state and protocol; a FIN or RST makes a flow
//!   closing.

use std::collections::HashMap;
use std::net::IpAddr;

use palisade::model::ResourceKey;
use palisade::policy::{Decision, Direction, L4, Model, Packet, Verdict};
use palisade_common::{
    CT_TIMEOUT_CLOSING_NS, CT_TIMEOUT_OTHER_NS, CT_TIMEOUT_REVOKED_NS, CT_TIMEOUT_TCP_NS,
};

use crate::packet::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP};
use crate::packet::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};

/// One packet at one enforcement point.
#[derive(Debug, Clone)]
pub struct Crossing<'a> {
    /// The workload endpoint behind the host veth.
    pub endpoint: &'a ResourceKey,
    pub ifindex: u32,
    /// From the workload's point of view.
    pub direction: Direction,
    pub packet: Packet,
    /// `TCP_*` bits (TCP only).
    pub tcp_flags: u8,
    /// The echo identifier (ICMP echo only).
    pub echo_id: u16,
}

/// What happened to a packet, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Passed: its flow was decided under this generation.
    Established,
    /// Passed: its flow's opening packet is allowed under this generation too.
    Rechecked,
    /// Decided by policy like the first packet of a flow. `picked_up`: a TCP segment
    /// without SYN.
    Decided { decision: Decision, picked_up: bool },
    /// Dropped: its flow is revoked; with the re-check's decision when this packet
    /// decided the flow again.
    Revoked(Option<Decision>),
}

impl Outcome {
    pub fn passes(&self) -> bool {
        match self {
            Outcome::Established | Outcome::Rechecked => true,
            Outcome::Decided { decision, .. } => decision.verdict == Verdict::Allow,
            Outcome::Revoked(_) => false,
        }
    }
}

/// A flow, as the workload behind `ifindex` sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub ifindex: u32,
    pub protocol: u8,
    pub local: IpAddr,
    pub local_port: u16,
    pub remote: IpAddr,
    pub remote_port: u16,
}

#[derive(Debug, Clone)]
struct Flow {
    origin: Direction,
    /// The packet that opened it, as it travelled.
    opening: Packet,
    generation: u32,
    closing: bool,
    revoked: bool,
    /// When it last passed a packet; revoked: when it was cut.
    last_seen: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Echo {
    Request,
    Reply,
}

#[derive(Debug, Default)]
pub struct ConntrackModel {
    flows: HashMap<FlowKey, Flow>,
}

impl ConntrackModel {
    /// What happens to `crossing` at time `now` (the programs' clock) under `generation`,
    /// whose policy is `policy`; the model's flows change accordingly.
    pub fn cross(
        &mut self,
        policy: &Model,
        generation: u32,
        now: u64,
        crossing: &Crossing,
    ) -> Outcome {
        let decide = |direction: Direction, packet: &Packet| {
            policy
                .evaluate(crossing.endpoint, direction, packet)
                .unwrap_or_else(|| panic!("{} is not a valid endpoint", crossing.endpoint))
        };
        let key = key_of(crossing);
        let closing = is_closing(crossing);
        if let Some(flow) = key.and_then(|k| self.flows.get_mut(&k))
            && !expired(flow, crossing.packet.protocol, now)
            && (flow.revoked || continues(flow, crossing))
        {
            if flow.generation == generation {
                if flow.revoked {
                    return Outcome::Revoked(None);
                }
                flow.last_seen = now;
                flow.closing |= closing;
                return Outcome::Established;
            }
            let decision = decide(flow.origin, &flow.opening);
            flow.generation = generation;
            if decision.verdict == Verdict::Allow {
                flow.revoked = false;
                flow.last_seen = now;
                flow.closing |= closing;
                return Outcome::Rechecked;
            }
            if !flow.revoked {
                flow.revoked = true;
                flow.last_seen = now;
            }
            return Outcome::Revoked(Some(decision));
        }
        let decision = decide(crossing.direction, &crossing.packet);
        let picked_up =
            crossing.packet.protocol == IPPROTO_TCP && crossing.tcp_flags & TCP_SYN == 0;
        if decision.verdict == Verdict::Allow
            && let Some(key) = key
            && echo_of(&crossing.packet) != Some(Echo::Reply)
        {
            self.flows.insert(
                key,
                Flow {
                    origin: crossing.direction,
                    opening: crossing.packet,
                    generation,
                    closing,
                    revoked: false,
                    last_seen: now,
                },
            );
        }
        Outcome::Decided {
            decision,
            picked_up,
        }
    }

    /// Forgets every flow (what an eviction does to each).
    pub fn forget_all(&mut self) {
        self.flows.clear();
    }

    /// Whether `key` has a revoked flow that has expired at `now`.
    pub fn revoked_and_expired(&self, key: &FlowKey, now: u64) -> bool {
        self.flows
            .get(key)
            .is_some_and(|f| f.revoked && expired(f, key.protocol, now))
    }
}

/// The flow key of a crossing, or `None` for ICMP other than echo.
pub fn key_of(crossing: &Crossing) -> Option<FlowKey> {
    let packet = &crossing.packet;
    let egress = crossing.direction == Direction::Egress;
    let (local, remote) = if egress {
        (packet.src, packet.dst)
    } else {
        (packet.dst, packet.src)
    };
    let (local_port, remote_port) =
        match packet.l4 {
            L4::Icmp { .. } => {
                echo_of(packet)?;
                (crossing.echo_id, 0)
            }
            L4::Ports { src, dst }
                if matches!(packet.protocol, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP) =>
            {
                if egress { (src, dst) } else { (dst, src) }
            }
            _ => (0, 0),
        };
    Some(FlowKey {
        ifindex: crossing.ifindex,
        protocol: packet.protocol,
        local,
        local_port,
        remote,
        remote_port,
    })
}

fn echo_of(packet: &Packet) -> Option<Echo> {
    match (packet.protocol, packet.l4) {
        (IPPROTO_ICMP, L4::Icmp { icmp_type: 8, .. })
        | (IPPROTO_ICMPV6, L4::Icmp { icmp_type: 128, .. }) => Some(Echo::Request),
        (IPPROTO_ICMP, L4::Icmp { icmp_type: 0, .. })
        | (IPPROTO_ICMPV6, L4::Icmp { icmp_type: 129, .. }) => Some(Echo::Reply),
        _ => None,
    }
}

fn is_closing(crossing: &Crossing) -> bool {
    crossing.packet.protocol == IPPROTO_TCP && crossing.tcp_flags & (TCP_FIN | TCP_RST) != 0
}

fn expired(flow: &Flow, protocol: u8, now: u64) -> bool {
    let timeout = if flow.revoked {
        CT_TIMEOUT_REVOKED_NS
    } else if flow.closing {
        CT_TIMEOUT_CLOSING_NS
    } else if protocol == IPPROTO_TCP {
        CT_TIMEOUT_TCP_NS
    } else {
        CT_TIMEOUT_OTHER_NS
    };
    // Signed, as the programs: a flow seen after `now` is live.
    (now.wrapping_sub(flow.last_seen) as i64) > timeout as i64
}

/// Whether a packet continues a live flow rather than starting a new one over its key.
fn continues(flow: &Flow, crossing: &Crossing) -> bool {
    match echo_of(&crossing.packet) {
        Some(Echo::Request) => crossing.direction == flow.origin,
        Some(Echo::Reply) => crossing.direction != flow.origin,
        None => {
            let bare_syn = crossing.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
            !(crossing.packet.protocol == IPPROTO_TCP && flow.closing && bare_syn)
        }
    }
}
