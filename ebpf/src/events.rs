//! Reports on `PAL_EVENTS` for the agent: packets that passed `log` rules, and (sampled)
//! drops.
//!
//! `Event::reason` is the packet's `DROP_*` when it was dropped; a log event of a packet
//! that passed carries [`REASON_PASSED`] instead.

use aya_ebpf::helpers::bpf_get_prandom_u32;
use palisade_common::{Addr, Event, STAT_EVENTS_LOST};

use crate::{counters, maps::PAL_EVENTS, parse::Packet};

/// `Event::reason` of a log event whose packet passed.
pub const REASON_PASSED: u32 = u32::MAX;

/// Where and when a packet was seen; the packet's own fields come from `Packet`, when it
/// could be parsed.
pub struct Subject {
    pub direction: u8,
    pub ifindex: u32,
    pub generation: u32,
    pub len: u32,
}

/// Whether this drop is one of the sampled ones: `random & mask == 0`.
#[inline(always)]
pub fn drop_sampled(mask: u32) -> bool {
    // SAFETY: a helper without arguments or preconditions.
    mask == 0 || unsafe { bpf_get_prandom_u32() } & mask == 0
}

/// Puts an `EVENT_*` on the ring buffer; a full buffer counts `STAT_EVENTS_LOST`.
/// `packet` is `None` for frames that could not be parsed.
#[inline(always)]
pub fn report(kind: u8, subject: &Subject, packet: Option<&Packet>, reason: u32, outcome: u32) {
    let Some(mut entry) = PAL_EVENTS.reserve(0) else {
        counters::count(STAT_EVENTS_LOST);
        return;
    };
    const UNKNOWN: Addr = [0; 16];
    let (family, protocol, (a, b), src, dst) = match packet {
        Some(packet) => (
            packet.family,
            packet.protocol,
            packet.l4_keys(),
            packet.src,
            packet.dst,
        ),
        None => (0, 0, (0, 0), UNKNOWN, UNKNOWN),
    };
    entry.write(Event {
        kind,
        direction: subject.direction,
        family,
        protocol,
        reason,
        ifindex: subject.ifindex,
        generation: subject.generation,
        outcome,
        a,
        b,
        src,
        dst,
        len: subject.len,
        _pad: 0,
    });
    entry.submit(0);
}
