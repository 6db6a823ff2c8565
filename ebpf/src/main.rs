//! palisade's TC programs.
//!
//! Two classifiers per workload host veth (names in `palisade_common::program_names`). For
//! now both let every packet through; parsing, conntrack and the policy lookup come next,
//! one concern per module.
#![no_std]
#![no_main]

// The map ABI shared with the agent. Linked now, while no map uses it yet, so that a change
// which breaks `no_std` there fails the eBPF build at once.
use palisade_common as _;

use aya_ebpf::{bindings::TC_ACT_OK, macros::classifier, programs::TcContext};

/// Host veth ingress: packets the workload sends (its egress policy).
#[classifier]
pub fn palisade_from_wl(_ctx: TcContext) -> i32 {
    TC_ACT_OK
}

/// Host veth egress: packets to the workload (its ingress policy).
#[classifier]
pub fn palisade_to_wl(_ctx: TcContext) -> i32 {
    TC_ACT_OK
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any path that could reach here, so it is never executed; BPF has
    // no way to abort.
    loop {}
}

/// The kernel only lets GPL-compatible programs call GPL-only helpers (e.g. the perf event
/// output that aya-log uses).
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
