//! Connection tracking: flows policy already allowed pass with one lookup, replies included,
//! and are checked again when the policy generation changes.
//!
//! A flow is keyed from the workload's point of view (its address and port are "local"),
//! so a packet and its reply find the same `PAL_CT` entry. ICMP echo requests and replies
//! share an entry by echo identifier; other ICMP messages (errors included) are not
//! tracked and go to policy every time.
//!
//! A flow a new generation's policy denies is not forgotten but marked revoked
//! (`CT_REVOKED`): every packet of its key is dropped, from either side, until the entry
//! expires, so that retransmissions cannot open it again whatever the other direction's
//! policy allows. Each endpoint's entries count against its budget (`PAL_CT_USAGE`).

use core::ptr::NonNull;

use palisade_common::{
    CT_CLOSING, CT_REVOKED, CtKey, CtUsageKey, CtValue, DIR_EGRESS, ENDPOINT_NONE, FAMILY_V4,
    ct_expired,
};

use crate::{
    clock,
    maps::{PAL_CT, PAL_CT_USAGE},
    parse::{
        L4Kind, PROTO_ICMP, PROTO_ICMPV6, PROTO_SCTP, PROTO_TCP, PROTO_UDP, Packet, TCP_ACK,
        TCP_FIN, TCP_RST, TCP_SYN,
    },
};

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;

/// The entry that holds the packet's flow, if any: where it is, and a copy of it. A plain
/// struct, every field always set (an `Option` of it leaves fields undefined on `None`,
/// which the compiler may still copy around, and the verifier rejects reading).
pub struct Entry {
    /// Null when nothing holds the packet.
    at: *mut CtValue,
    pub value: CtValue,
    /// An entry of the packet's flow, live or revoked. Not when the key has no entry, or
    /// its entry expired, or the packet starts a new flow over it: then the packet is
    /// judged as if there were none, and a new entry takes its place.
    pub holds: bool,
    /// The time the entry was judged at (0 when there is none): the clock is read only
    /// for packets that have an entry, and once.
    pub now: u64,
}

impl Entry {
    pub const NONE: Entry = Entry {
        at: core::ptr::null_mut(),
        value: CtValue {
            generation: 0,
            origin: 0,
            flags: 0,
            icmp_type: 0,
            icmp_code: 0,
            last_seen_ns: 0,
            endpoint: ENDPOINT_NONE,
            forward_ifindex: 0,
        },
        holds: false,
        now: 0,
    };

    #[inline(always)]
    pub fn revoked(&self) -> bool {
        self.value.flags & CT_REVOKED != 0
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Echo {
    Request,
    Reply,
}

/// The key of the packet's flow, or `None` for packets that are not tracked (ICMP other
/// than echo).
#[inline(always)]
pub fn key_of(ifindex: u32, direction: u8, packet: &Packet) -> Option<CtKey> {
    let egress = direction == DIR_EGRESS;
    let l4 = &packet.l4;
    let (local_port, remote_port) = match l4.kind {
        L4Kind::Ports if egress => (l4.a, l4.b),
        L4Kind::Ports => (l4.b, l4.a),
        L4Kind::Icmp => {
            echo_of(packet)?;
            (l4.echo_id, 0)
        }
        L4Kind::Opaque => (0, 0),
    };
    let (local_addr, remote_addr) = if egress {
        (packet.src, packet.dst)
    } else {
        (packet.dst, packet.src)
    };
    Some(CtKey {
        ifindex,
        family: packet.family,
        protocol: packet.protocol,
        local_port,
        remote_port,
        _pad: 0,
        local_addr,
        remote_addr,
    })
}

/// The entry that holds the packet (see [`Entry::holds`]). A revoked entry holds every
/// packet of its key until it expires.
#[inline(always)]
pub fn lookup(key: &CtKey, packet: &Packet, direction: u8) -> Entry {
    let Some(at) = PAL_CT.get_ptr_mut(key) else {
        return Entry::NONE;
    };
    // SAFETY: a value pointer from a successful lookup, copied at once.
    let value = unsafe { *at };
    let now = clock::now();
    let holds = !ct_expired(&value, packet.protocol, now)
        && (value.flags & CT_REVOKED != 0 || continues(&value, packet, direction));
    Entry {
        at,
        value,
        holds,
        now,
    }
}

/// Records a packet of a flow found allowed under `generation` (a revoked one is live
/// again), of the endpoint at `PAL_EP_STATS[endpoint]`.
#[inline(always)]
pub fn refresh(entry: &Entry, packet: &Packet, generation: u32, endpoint: u32) {
    let Some(at) = NonNull::new(entry.at) else {
        return;
    };
    let closing = if is_closing(packet) { CT_CLOSING } else { 0 };
    let flags = (entry.value.flags & !CT_REVOKED) | closing;
    let value = &entry.value;
    let at = at.as_ptr();
    // SAFETY: `at` comes from `lookup` in this run of the program. Another CPU may write
    // the same entry at once; both write the same kind of news, so either result is fine.
    // Only what changed is written: the coarse clock moves once a tick, so most packets
    // of a busy flow leave the entry's cache line clean (both directions of a flow, on
    // different CPUs, read it).
    unsafe {
        if value.last_seen_ns != entry.now {
            (*at).last_seen_ns = entry.now;
        }
        if value.generation != generation {
            (*at).generation = generation;
        }
        if value.flags != flags {
            (*at).flags = flags;
        }
        if value.endpoint != endpoint {
            (*at).endpoint = endpoint;
        }
    }
}

/// Marks the flow of `entry` revoked under `generation`. Its clock starts at the first
/// revocation only: a flow that stays denied across generations stays cut for
/// `CT_TIMEOUT_REVOKED_NS` from the cut, not from the last packet.
#[inline(always)]
pub fn revoke(entry: &Entry, generation: u32) {
    let Some(at) = NonNull::new(entry.at) else {
        return;
    };
    let was_revoked = entry.revoked();
    let at = at.as_ptr();
    // SAFETY: as in `refresh`. The flag goes first, so that a packet on another CPU that
    // sees the new generation also sees the flow revoked.
    unsafe {
        (*at).flags |= CT_REVOKED;
        if !was_revoked {
            (*at).last_seen_ns = entry.now;
        }
        (*at).generation = generation;
    }
}

/// Why [`open`] did not track a flow.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// Tracked (or not to be tracked: echo replies).
    Yes,
    /// The endpoint's budget is used up: the flow must not pass.
    OverBudget,
}

/// Starts tracking a flow policy allowed (in place of a stale entry of the same key, if
/// there is one). A new key is counted against the budget of the endpoint behind
/// `key.ifindex` (`budget` entries, 0: no limit). An echo reply opens nothing: only its
/// request does, so a reply without one is decided by policy every time. `endpoint`: the
/// `PAL_EP_STATS` index the flow's packets count at; `forward_ifindex`: see
/// [`CtValue::forward_ifindex`] (0 but for what [`learn_forwarding`] found).
#[inline(always)]
pub fn open(
    key: &CtKey,
    packet: &Packet,
    direction: u8,
    generation: u32,
    budget: u32,
    endpoint: u32,
    forward_ifindex: u32,
) -> Opened {
    // ICMP types and codes fit in a byte; `parse` widened them.
    let (icmp_type, icmp_code) = match packet.l4.kind {
        L4Kind::Icmp => (packet.l4.a as u8, packet.l4.b as u8),
        _ => (0, 0),
    };
    if echo_of(packet) == Some(Echo::Reply) {
        return Opened::Yes;
    }
    let value = CtValue {
        generation,
        origin: direction,
        flags: if is_closing(packet) { CT_CLOSING } else { 0 },
        icmp_type,
        icmp_code,
        last_seen_ns: clock::now(),
        endpoint,
        forward_ifindex,
    };
    // A key that has an entry (a closing or expired flow's: under TCP_CRR with port reuse,
    // most connections') is reopened where it is. An update of the LRU map would pop a free
    // node, lock the bucket and give the old node back under the LRU's global lock, each
    // time. The lookup is asked again here rather than carried down from `lookup`: its
    // answer, known all through policy, would double the verifier's paths there.
    if let Some(at) = PAL_CT.get_ptr_mut(key) {
        reopen(at, &value);
        return Opened::Yes;
    }
    // Whether the key is new is still the map's to say (`BPF_NOEXIST`): another CPU may
    // have made it since. Failures other than EEXIST (a transient -EBUSY of the LRU) only
    // mean that the next packet asks policy again.
    let Some(usage) = PAL_CT_USAGE.get_ptr_mut(CtUsageKey {
        ifindex: key.ifindex,
    }) else {
        // An interface the agent does not track has no budget.
        let _ = PAL_CT.insert(key, value, BPF_ANY);
        return Opened::Yes;
    };
    // SAFETY: a value pointer from a successful lookup. `entries` is only added to
    // atomically (and rewritten by the agent's sweep); an aligned u64 read is not torn.
    let entries = unsafe { &raw mut (*usage).entries };
    // SAFETY: as above.
    let used = unsafe { core::ptr::read_volatile(entries) };
    if budget != 0 && used >= u64::from(budget) {
        // A key the endpoint holds already (an expired flow's) takes no new room.
        return if PAL_CT.insert(key, value, BPF_EXIST).is_ok() {
            Opened::Yes
        } else {
            Opened::OverBudget
        };
    }
    match PAL_CT.insert(key, value, BPF_NOEXIST) {
        // Two CPUs may both pass the check at the budget's edge: the budget may be
        // exceeded by at most one entry per CPU.
        // SAFETY: as above.
        Ok(()) => unsafe {
            core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
                entries, 1,
            );
        },
        Err(_) => {
            let _ = PAL_CT.insert(key, value, BPF_EXIST);
        }
    }
    Opened::Yes
}

/// Writes a new flow's `value` over the entry at `at`, the flow's own key's. Another CPU
/// may read the entry meanwhile: what makes it live for the new flow goes last (the flags
/// first, so that no reader sees a revoked flow's flag with a fresh clock), and any mix a
/// reader sees either holds its packet as the old or the new flow would, or sends it to
/// policy.
#[inline(always)]
fn reopen(at: *mut CtValue, value: &CtValue) {
    // SAFETY: a value pointer from a successful lookup in this run of the program; the
    // volatile writes keep their order.
    unsafe {
        core::ptr::write_volatile(&raw mut (*at).flags, value.flags);
        core::ptr::write_volatile(&raw mut (*at).origin, value.origin);
        core::ptr::write_volatile(&raw mut (*at).icmp_type, value.icmp_type);
        core::ptr::write_volatile(&raw mut (*at).icmp_code, value.icmp_code);
        core::ptr::write_volatile(&raw mut (*at).endpoint, value.endpoint);
        core::ptr::write_volatile(&raw mut (*at).forward_ifindex, value.forward_ifindex);
        core::ptr::write_volatile(&raw mut (*at).last_seen_ns, value.last_seen_ns);
        core::ptr::write_volatile(&raw mut (*at).generation, value.generation);
    }
}

/// For a flow the destination's program is about to open (`key`, its own view) from a
/// packet the host brought from the host veth `ingress_ifindex`: when the sender's program
/// tracks the flow under the packet's very addresses and ports, the two workloads talk
/// without NAT between them, and each side's later packets may go straight to the other's
/// host veth. The sender's entry learns this veth; the answer (`ingress_ifindex`, or 0) is
/// what the destination's own entry keeps. TCP, UDP and SCTP only: their keys are the
/// same from both sides with the ports swapped.
#[inline(always)]
pub fn learn_forwarding(key: &CtKey, ingress_ifindex: u32) -> u32 {
    if key.protocol != PROTO_TCP && key.protocol != PROTO_UDP && key.protocol != PROTO_SCTP {
        return 0;
    }
    let sender = CtKey {
        ifindex: ingress_ifindex,
        family: key.family,
        protocol: key.protocol,
        local_port: key.remote_port,
        remote_port: key.local_port,
        _pad: 0,
        local_addr: key.remote_addr,
        remote_addr: key.local_addr,
    };
    let Some(at) = PAL_CT.get_ptr_mut(sender) else {
        return 0;
    };
    // SAFETY: a value pointer from a successful lookup. The sender's program reads the
    // field as one aligned word: it sees 0 or this veth.
    unsafe {
        if (*at).forward_ifindex != key.ifindex {
            core::ptr::write_volatile(&raw mut (*at).forward_ifindex, key.ifindex);
        }
    }
    ingress_ifindex
}

/// `bpf_map_update_elem` flags.
const BPF_ANY: u64 = 0;
const BPF_NOEXIST: u64 = 1;
const BPF_EXIST: u64 = 2;

/// The table keys of the packet that opened the flow, in its own orientation: what policy
/// is asked again when the generation changes.
#[inline(always)]
pub fn original_table_keys(key: &CtKey, value: &CtValue) -> (u16, u16) {
    let icmp = if key.family == FAMILY_V4 {
        PROTO_ICMP
    } else {
        PROTO_ICMPV6
    };
    if key.protocol == PROTO_TCP || key.protocol == PROTO_UDP {
        if value.origin == DIR_EGRESS {
            (key.local_port, key.remote_port)
        } else {
            (key.remote_port, key.local_port)
        }
    } else if key.protocol == icmp {
        (u16::from(value.icmp_type), u16::from(value.icmp_code))
    } else {
        (0, 0)
    }
}

/// Whether the packet continues the entry's flow rather than starting a new one with the
/// same addresses and ports: an echo request must go the way the first one went and a reply
/// the other way; a bare SYN after FIN or RST reopens the connection, which policy decides.
#[inline(always)]
fn continues(value: &CtValue, packet: &Packet, direction: u8) -> bool {
    match echo_of(packet) {
        Some(Echo::Request) => direction == value.origin,
        Some(Echo::Reply) => direction != value.origin,
        None => {
            let bare_syn = packet.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
            !(packet.protocol == PROTO_TCP && value.flags & CT_CLOSING != 0 && bare_syn)
        }
    }
}

#[inline(always)]
fn is_closing(packet: &Packet) -> bool {
    packet.protocol == PROTO_TCP && packet.tcp_flags & (TCP_FIN | TCP_RST) != 0
}

#[inline(always)]
fn echo_of(packet: &Packet) -> Option<Echo> {
    if packet.l4.kind != L4Kind::Icmp {
        return None;
    }
    match (packet.protocol, packet.l4.a as u8) {
        (PROTO_ICMP, ICMP_ECHO_REQUEST) | (PROTO_ICMPV6, ICMPV6_ECHO_REQUEST) => {
            Some(Echo::Request)
        }
        (PROTO_ICMP, ICMP_ECHO_REPLY) | (PROTO_ICMPV6, ICMPV6_ECHO_REPLY) => Some(Echo::Reply),
        _ => None,
    }
}
