//! Connection tracking: flows policy already allowed pass with one lookup, replies included,
//! and are checked again when the policy generation changes.
//!
//! A flow is keyed from the workload's point of view (its address and port are "local"),
//! so a packet and its reply find the same `PAL_CT` entry. ICMP echo requests and replies
//! share an entry by echo identifier; other ICMP messages (errors included) are not
//! tracked and go to policy every time.

use core::ptr::NonNull;

use palisade_common::{
    CT_CLOSING, CT_TIMEOUT_CLOSING_NS, CT_TIMEOUT_OTHER_NS, CT_TIMEOUT_TCP_NS, CtKey, CtValue,
    DIR_EGRESS, FAMILY_V4,
};

use crate::{
    maps::PAL_CT,
    parse::{
        L4Kind, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, Packet, TCP_ACK, TCP_FIN, TCP_RST,
        TCP_SYN,
    },
};

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;

/// A live entry of the packet's flow: where it is, and a copy of it.
pub struct Entry {
    pub at: NonNull<CtValue>,
    pub value: CtValue,
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

/// The live entry the packet continues, if any: expired entries and packets that start a
/// new flow over an old entry's addresses and ports are misses.
#[inline(always)]
pub fn lookup(key: &CtKey, packet: &Packet, direction: u8, now: u64) -> Option<Entry> {
    let at = NonNull::new(PAL_CT.get_ptr_mut(key)?)?;
    // SAFETY: a value pointer from a successful lookup, copied at once.
    let value = unsafe { *at.as_ptr() };
    if is_expired(&value, packet.protocol, now) || !continues(&value, packet, direction) {
        return None;
    }
    Some(Entry { at, value })
}

/// Records a packet of a live flow (found allowed under `generation`).
#[inline(always)]
pub fn refresh(entry: &Entry, packet: &Packet, generation: u32, now: u64) {
    let entry = entry.at.as_ptr();
    // SAFETY: `entry` comes from `lookup` in this run of the program. Another CPU may write
    // the same entry at once; both write the same kind of news, so either result is fine.
    unsafe {
        (*entry).last_seen_ns = now;
        (*entry).generation = generation;
        if is_closing(packet) {
            (*entry).flags |= CT_CLOSING;
        }
    }
}

/// Starts tracking a flow policy allowed. An echo reply opens nothing: only its request
/// does, so a reply without one is decided by policy every time.
#[inline(always)]
pub fn open(key: &CtKey, packet: &Packet, direction: u8, generation: u32, now: u64) {
    // ICMP types and codes fit in a byte; `parse` widened them.
    let (icmp_type, icmp_code) = match packet.l4.kind {
        L4Kind::Icmp => (packet.l4.a as u8, packet.l4.b as u8),
        _ => (0, 0),
    };
    if echo_of(packet) == Some(Echo::Reply) {
        return;
    }
    let value = CtValue {
        generation,
        origin: direction,
        flags: if is_closing(packet) { CT_CLOSING } else { 0 },
        icmp_type,
        icmp_code,
        last_seen_ns: now,
    };
    // A full LRU map evicts; failure here only means the next packet asks policy again.
    let _ = PAL_CT.insert(key, value, 0);
}

#[inline(always)]
pub fn close(key: &CtKey) {
    let _ = PAL_CT.remove(key);
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

#[inline(always)]
fn is_expired(value: &CtValue, protocol: u8, now: u64) -> bool {
    let timeout = if value.flags & CT_CLOSING != 0 {
        CT_TIMEOUT_CLOSING_NS
    } else if protocol == PROTO_TCP {
        CT_TIMEOUT_TCP_NS
    } else {
        CT_TIMEOUT_OTHER_NS
    };
    now.wrapping_sub(value.last_seen_ns) > timeout
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
