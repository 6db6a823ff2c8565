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
    CT_CLOSING, CT_REVOKED, CtKey, CtUsageKey, CtValue, DIR_EGRESS, FAMILY_V4, ct_expired,
};

use crate::{
    maps::{PAL_CT, PAL_CT_USAGE},
    parse::{
        L4Kind, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, Packet, TCP_ACK, TCP_FIN, TCP_RST,
        TCP_SYN,
    },
};

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;

/// The entry of the packet's key: where it is, and a copy of it.
pub struct Entry {
    pub at: NonNull<CtValue>,
    pub value: CtValue,
    /// Expired, or the packet starts a new flow over it: the packet is judged as if there
    /// were no entry, and a new one takes its place.
    pub stale: bool,
}

impl Entry {
    /// Whether the packet belongs to the flow of the entry (live or revoked).
    #[inline(always)]
    pub fn holds(&self) -> bool {
        !self.stale
    }

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

/// The entry of the packet's key, if there is one (see [`Entry::stale`]). A revoked entry
/// holds every packet of its key until it expires.
#[inline(always)]
pub fn lookup(key: &CtKey, packet: &Packet, direction: u8, now: u64) -> Option<Entry> {
    let at = NonNull::new(PAL_CT.get_ptr_mut(key)?)?;
    // SAFETY: a value pointer from a successful lookup, copied at once.
    let value = unsafe { *at.as_ptr() };
    let stale = ct_expired(&value, packet.protocol, now)
        || (value.flags & CT_REVOKED == 0 && !continues(&value, packet, direction));
    Some(Entry { at, value, stale })
}

/// Records a packet of a flow found allowed under `generation` (a revoked one is live
/// again).
#[inline(always)]
pub fn refresh(entry: &Entry, packet: &Packet, generation: u32, now: u64) {
    let closing = if is_closing(packet) { CT_CLOSING } else { 0 };
    let flags = (entry.value.flags & !CT_REVOKED) | closing;
    let entry = entry.at.as_ptr();
    // SAFETY: `entry` comes from `lookup` in this run of the program. Another CPU may write
    // the same entry at once; both write the same kind of news, so either result is fine.
    unsafe {
        (*entry).last_seen_ns = now;
        (*entry).generation = generation;
        if (*entry).flags != flags {
            (*entry).flags = flags;
        }
    }
}

/// Marks the flow of `entry` revoked under `generation`. Its clock starts at the first
/// revocation only: a flow that stays denied across generations stays cut for
/// `CT_TIMEOUT_REVOKED_NS` from the cut, not from the last packet.
#[inline(always)]
pub fn revoke(entry: &Entry, generation: u32, now: u64) {
    let was_revoked = entry.revoked();
    let entry = entry.at.as_ptr();
    // SAFETY: as in `refresh`. The flag goes first, so that a packet on another CPU that
    // sees the new generation also sees the flow revoked.
    unsafe {
        (*entry).flags |= CT_REVOKED;
        if !was_revoked {
            (*entry).last_seen_ns = now;
        }
        (*entry).generation = generation;
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

/// Starts tracking a flow policy allowed, in place of `replacing` (a stale entry of the same
/// key) if any. A new key is counted against the budget of the endpoint behind `key.ifindex`
/// (`budget` entries, 0: no limit). An echo reply opens nothing: only its request does, so a
/// reply without one is decided by policy every time.
#[inline(always)]
pub fn open(
    key: &CtKey,
    replacing: Option<&Entry>,
    packet: &Packet,
    direction: u8,
    generation: u32,
    now: u64,
    budget: u32,
) -> Opened {
    // ICMP types and codes fit in a byte; `parse` widened them.
    let (icmp_type, icmp_code) = match packet.l4.kind {
        L4Kind::Icmp => (packet.l4.a as u8, packet.l4.b as u8),
        _ => (0, 0),
    };
    if echo_of(packet) == Some(Echo::Reply) {
        return Opened::Yes;
    }
    if replacing.is_none() && !claim(key.ifindex, budget) {
        return Opened::OverBudget;
    }
    let value = CtValue {
        generation,
        origin: direction,
        flags: if is_closing(packet) { CT_CLOSING } else { 0 },
        icmp_type,
        icmp_code,
        last_seen_ns: now,
    };
    // Failure here (a transient -EBUSY of the LRU) only means the next packet asks policy
    // again; the claim stays until the agent's sweep recounts.
    let _ = PAL_CT.insert(key, value, 0);
    Opened::Yes
}

/// Counts one more entry for the endpoint `ifindex`, unless its budget is used up. An
/// interface the agent does not track (no `PAL_CT_USAGE` entry) has no budget.
#[inline(always)]
fn claim(ifindex: u32, budget: u32) -> bool {
    let Some(usage) = PAL_CT_USAGE.get_ptr_mut(CtUsageKey { ifindex }) else {
        return true;
    };
    // SAFETY: a value pointer from a successful lookup; `entries` is only ever added to
    // atomically here (and rewritten by the agent's sweep), so a torn read cannot happen on
    // an aligned u64. Two CPUs may both pass the check at the budget's edge: the budget may
    // be exceeded by a few entries, never by more than the number of CPUs.
    unsafe {
        let entries = &raw mut (*usage).entries;
        if budget != 0 && core::ptr::read_volatile(entries) >= u64::from(budget) {
            return false;
        }
        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
            entries, 1,
        );
    }
    true
}

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
