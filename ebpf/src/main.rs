//! palisade's TC programs, attached to every local workload's host-side veth.
//!
//! Both run the same pipeline (`pipeline`), told apart only by direction: the packet's
//! source is the workload's own address on the way out and its destination on the way in.
//! One concern per module, as in Cilium's bpf/lib:
//!
//! | module | job |
//! |---|---|
//! | `maps` | every map of the ABI (`palisade_common`) |
//! | `parse` | Ethernet, IPv4/IPv6 (options, extension headers, fragments), L4 |
//! | `identity` | local ID (anti-spoofing) and the peer's remote ID |
//! | `policy` | the policy lookup chain, one function for new flows and re-checks |
//! | `admission` | policy plus the rules for the host's own traffic |
//! | `conntrack` | flows, replies, re-checks under a new generation |
//! | `clock` | the time conntrack and fragment records keep |
//! | `frag` | verdicts of first fragments for the later ones |
//! | `counters`, `events`, `debug_log` | what the agent learns about packets |
//! | `forward` | node-local workload-to-workload forwarding, past the host's stack |
//! | `verdict` | pass or drop, and why |
#![no_std]
#![no_main]
// `atomic_xadd`: the target has atomic adds but no compare-and-swap, so `core::sync::atomic`
// offers no `fetch_add` on it.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod admission;
mod clock;
mod conntrack;
mod counters;
mod debug_log;
mod events;
mod forward;
mod frag;
mod identity;
mod maps;
mod parse;
mod pipeline;
mod policy;
mod verdict;

use aya_ebpf::{macros::classifier, programs::TcContext};
use palisade_common::{DIR_EGRESS, DIR_INGRESS};

/// Host veth ingress: packets the workload sends (its egress policy).
#[classifier]
pub fn palisade_from_wl(ctx: TcContext) -> i32 {
    pipeline::run(&ctx, DIR_EGRESS)
}

/// Host veth egress: packets to the workload (its ingress policy).
#[classifier]
pub fn palisade_to_wl(ctx: TcContext) -> i32 {
    pipeline::run(&ctx, DIR_INGRESS)
}

/// Tail-called by `palisade_from_wl`, still on the sender's host veth ingress, for a packet
/// it forwards to another local workload: that workload's ingress policy and conntrack,
/// then into its namespace (`forward::deliver`). Never attached.
#[classifier]
pub fn palisade_deliver(ctx: TcContext) -> i32 {
    pipeline::deliver(&ctx)
}

/// Does nothing: the baseline `cargo xtask bench` measures the others against, loaded from
/// the same object in the same way. Never attached.
#[classifier]
pub fn palisade_empty(_ctx: TcContext) -> i32 {
    aya_ebpf::bindings::TC_ACT_OK
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
