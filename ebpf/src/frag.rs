//! IP fragments: only a datagram's first fragment has the L4 header policy looks at, so it
//! is judged like any packet and its verdict remembered; the later fragments of the
//! datagram get that verdict in the same direction on the same interface. A later fragment
//! whose first fragment was not seen there (or arrived after it) is dropped.

use palisade_common::{DROP_FRAGMENT, FragKey, FragValue, VERDICT_ALLOW, VERDICT_DENY};

use crate::{
    maps::PAL_FRAGS,
    parse::Packet,
    verdict::{NO_STAT, Verdict},
};

#[inline(always)]
fn key_of(ifindex: u32, direction: u8, id: u32, packet: &Packet) -> FragKey {
    FragKey {
        ifindex,
        id,
        family: packet.family,
        protocol: packet.protocol,
        direction,
        _pad: [0; 1],
        src: packet.src,
        dst: packet.dst,
    }
}

/// Remembers what the first fragment of datagram `id` got in `direction`.
#[inline(always)]
pub fn remember_first(
    ifindex: u32,
    direction: u8,
    id: u32,
    packet: &Packet,
    verdict: &Verdict,
    now: u64,
) {
    let value = FragValue {
        verdict: if verdict.pass {
            VERDICT_ALLOW
        } else {
            VERDICT_DENY
        },
        _pad: [0; 7],
        last_seen_ns: now,
    };
    // A full LRU map evicts the oldest datagrams; failing here drops the later fragments.
    let _ = PAL_FRAGS.insert(key_of(ifindex, direction, id, packet), value, 0);
}

/// The verdict for a later fragment of datagram `id` in `direction`.
#[inline(always)]
pub fn judge_later(ifindex: u32, direction: u8, id: u32, packet: &Packet) -> Verdict {
    let allowed = PAL_FRAGS
        .get_ptr(key_of(ifindex, direction, id, packet))
        // SAFETY: a value pointer from a successful lookup, read at once.
        .is_some_and(|value| unsafe { (*value).verdict } == VERDICT_ALLOW);
    if allowed {
        Verdict::pass(NO_STAT)
    } else {
        Verdict::drop(DROP_FRAGMENT)
    }
}
