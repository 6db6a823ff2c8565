//! Reports on `PAL_EVENTS` for the agent: packets that passed `log` rules, (sampled) drops,
//! and (sampled, when the agent asks for them) new flows that were allowed.
//!
//! `Event::reason` is the packet's `DROP_*` when it was dropped; a log event of a packet
//! that passed carries [`REASON_PASSED`] instead, an allowed flow the `STAT_*` of its pass.
//! Every event carries the time the program saw the packet (`CLOCK_BOOTTIME`); the clock is
//! read only here, never on the way of a packet that is not reported.

use aya_ebpf::helpers::{bpf_get_prandom_u32, bpf_ktime_get_boot_ns};
use palisade_common::{
    Addr, CONFIG_ALLOW_EVENTS, Config, EVENT_ALLOW, EVENT_LOG, EVENT_WAKEUP_MASK, Event,
    STAT_EVENTS_LOST,
};

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

/// Whether this drop is one of the sampled ones.
#[inline(always)]
pub fn drop_sampled(mask: u32) -> bool {
    sampled(mask)
}

/// Whether this event is one of the sampled ones: `random & mask == 0`.
#[inline(always)]
fn sampled(mask: u32) -> bool {
    // SAFETY: a helper without arguments or preconditions.
    mask == 0 || unsafe { bpf_get_prandom_u32() } & mask == 0
}

/// The opening packet of a flow that was allowed (`stat` counts its pass): a log event if
/// `log` rules saw it, else, if the agent asked for them, a sampled allow event.
#[inline(always)]
pub fn flow_allowed(
    config: &Config,
    subject: &Subject,
    packet: &Packet,
    stat: u32,
    outcome: u32,
    logged: bool,
) {
    let (kind, reason) = if logged {
        (EVENT_LOG, REASON_PASSED)
    } else if config.flags & CONFIG_ALLOW_EVENTS != 0 && sampled(config.allow_event_mask) {
        (EVENT_ALLOW, stat)
    } else {
        return;
    };
    report(kind, subject, Some(packet), reason, outcome);
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
        // SAFETY: a helper without arguments or preconditions.
        time_ns: unsafe { bpf_ktime_get_boot_ns() },
    });
    entry.submit(if sampled(EVENT_WAKEUP_MASK) {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    });
}

/// `bpf_ringbuf_submit` flags: see [`EVENT_WAKEUP_MASK`] for why most events wake nobody.
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
