//! The time conntrack and fragment records keep.
//!
//! CLOCK_MONOTONIC at tick resolution (`bpf_ktime_get_coarse_ns`): the clock of
//! `bpf_ktime_get_ns` (and of the agent's `CLOCK_MONOTONIC`), read from the last tick
//! instead of the hardware. Idle timeouts are seconds to hours long, so a few milliseconds
//! of resolution lose nothing, and every tracked packet saves the hardware clock read.

use aya_ebpf::helpers::bpf_ktime_get_coarse_ns;

#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: a helper without arguments or preconditions.
    unsafe { bpf_ktime_get_coarse_ns() }
}
