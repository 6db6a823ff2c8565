//! Counters, all per CPU (plain adds, no atomics; the agent sums the CPUs).

use palisade_common::{DIR_EGRESS, ENDPOINT_NONE, EndpointIndexKey, NO_RULE};

use crate::maps::{PAL_EP_INDEX, PAL_EP_STATS, PAL_RULE_STATS, PAL_STATS};

/// `PAL_STATS[stat]` += 1.
#[inline(always)]
pub fn count(stat: u32) {
    if let Some(counter) = PAL_STATS.get_ptr_mut(stat) {
        // SAFETY: this CPU's slot of a per-CPU array, which only this program run writes.
        unsafe { (*counter).packets += 1 };
    }
}

/// The `PAL_EP_STATS` index of the endpoint behind the host veth `ifindex`, or
/// [`ENDPOINT_NONE`] before the agent attached it.
#[inline(always)]
pub fn endpoint_index(ifindex: u32) -> u32 {
    match PAL_EP_INDEX.get_ptr(EndpointIndexKey { ifindex }) {
        // SAFETY: a value pointer from a successful lookup; read at once, by copy.
        Some(value) => unsafe { (*value).index },
        None => ENDPOINT_NONE,
    }
}

/// Every packet of the endpoint at `PAL_EP_STATS[index]`, in `direction` from the
/// workload's point of view. [`ENDPOINT_NONE`] is past the array's end: not counted.
#[inline(always)]
pub fn count_endpoint(index: u32, direction: u8, allowed: bool, bytes: u32) {
    let Some(stats) = PAL_EP_STATS.get_ptr_mut(index) else {
        return;
    };
    let bytes = u64::from(bytes);
    // SAFETY: this CPU's slot of a per-CPU array, which only this program run writes.
    let stats = unsafe { &mut *stats };
    let (packets, total) = match (direction == DIR_EGRESS, allowed) {
        (true, true) => (
            &mut stats.egress_allowed_packets,
            &mut stats.egress_allowed_bytes,
        ),
        (true, false) => (
            &mut stats.egress_denied_packets,
            &mut stats.egress_denied_bytes,
        ),
        (false, true) => (
            &mut stats.ingress_allowed_packets,
            &mut stats.ingress_allowed_bytes,
        ),
        (false, false) => (
            &mut stats.ingress_denied_packets,
            &mut stats.ingress_denied_bytes,
        ),
    };
    *packets += 1;
    *total += bytes;
}

/// The packet of a new flow that rule `rule_counter` decided.
#[inline(always)]
pub fn count_rule(rule_counter: u32, bytes: u32) {
    if rule_counter == NO_RULE {
        return;
    }
    if let Some(stats) = PAL_RULE_STATS.get_ptr_mut(rule_counter) {
        // SAFETY: as in `count`.
        unsafe {
            (*stats).packets += 1;
            (*stats).bytes += u64::from(bytes);
        }
    }
}
