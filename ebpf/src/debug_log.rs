//! Kernel-side debug lines (aya-log), read by the agent's `aya_log::EbpfLogger`. Only
//! called under `CONFIG_DEBUG_LOG`, so the fast path pays one branch when it is off.

use aya_ebpf::programs::TcContext;
use aya_log_ebpf::debug;

use crate::{events::Subject, verdict::Verdict};

/// One line per packet: where it was and what it got (`stat` is the `STAT_*` of a pass or
/// the `DROP_*` of a drop).
#[inline(never)]
pub fn verdict(ctx: &TcContext, subject: &Subject, verdict: &Verdict) {
    debug!(
        ctx,
        "palisade ifindex={} direction={} generation={} len={} pass={} stat={} outcome={}",
        subject.ifindex,
        subject.direction,
        subject.generation,
        subject.len,
        u8::from(verdict.pass),
        verdict.stat,
        verdict.outcome
    );
}
