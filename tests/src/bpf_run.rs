//! Running TC programs on crafted frames with BPF_PROG_TEST_RUN, and timing them.
//!
//! The program sees a `struct __sk_buff` built from [`SkbContext`]: `ifindex` must name an
//! existing interface (1 = lo) for per-interface lookups to work, and `ingress_ifindex` 0
//! means "made by the host itself" to palisade.

use std::time::Duration;

use aya::programs::{SchedClassifier, TestRun, TestRunOptions};

/// `TC_ACT_OK`: the packet continues.
pub const TC_ACT_OK: u32 = 0;
/// `TC_ACT_SHOT`: the packet is dropped.
pub const TC_ACT_SHOT: u32 = 2;

/// Offsets in `struct __sk_buff` (include/uapi/linux/bpf.h), which the kernel copies into
/// the test skb; everything before `ifindex` other than these must be zero.
const SKB_INGRESS_IFINDEX_OFFSET: usize = 36;
const SKB_IFINDEX_OFFSET: usize = 40;
const SKB_CTX_LEN: usize = SKB_IFINDEX_OFFSET + 4;

/// The interface a test packet is seen on, and the one it came in on.
#[derive(Clone, Copy, Debug)]
pub struct SkbContext {
    pub ifindex: u32,
    pub ingress_ifindex: u32,
}

impl SkbContext {
    /// On lo (ifindex 1), forwarded from lo: a packet that did not come from the host.
    pub const FORWARDED_ON_LO: Self = Self {
        ifindex: 1,
        ingress_ifindex: 1,
    };
    /// On lo, made by the host itself.
    pub const FROM_HOST_ON_LO: Self = Self {
        ifindex: 1,
        ingress_ifindex: 0,
    };

    fn bytes(&self) -> [u8; SKB_CTX_LEN] {
        let mut ctx = [0u8; SKB_CTX_LEN];
        ctx[SKB_INGRESS_IFINDEX_OFFSET..SKB_INGRESS_IFINDEX_OFFSET + 4]
            .copy_from_slice(&self.ingress_ifindex.to_ne_bytes());
        ctx[SKB_IFINDEX_OFFSET..SKB_IFINDEX_OFFSET + 4]
            .copy_from_slice(&self.ifindex.to_ne_bytes());
        ctx
    }
}

/// Runs `program` once on `frame`; returns its TC action.
pub fn run(program: &mut SchedClassifier, frame: &[u8], ctx: SkbContext) -> u32 {
    run_repeated(program, frame, ctx, 1).0
}

/// Runs `program` once on `frame`; the TC action, or the error of a frame the kernel's test
/// runner refuses to run (it wants at least an Ethernet header and, for IP EtherTypes, the
/// fixed IP header).
pub fn try_run(
    program: &mut SchedClassifier,
    frame: &[u8],
    ctx: SkbContext,
) -> Result<u32, aya::programs::ProgramError> {
    let ctx = ctx.bytes();
    program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            ctx_in: Some(&ctx),
            repeat: 1,
            ..TestRunOptions::default()
        })
        .map(|result| result.return_value)
}

/// Runs `program` `repeat` times on `frame` (in the kernel, back to back); returns the last
/// TC action and the mean time of one run.
pub fn run_repeated(
    program: &mut SchedClassifier,
    frame: &[u8],
    ctx: SkbContext,
    repeat: u32,
) -> (u32, Duration) {
    let ctx = ctx.bytes();
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            ctx_in: Some(&ctx),
            repeat,
            ..TestRunOptions::default()
        })
        .unwrap_or_else(|err| {
            panic!(
                "BPF_PROG_TEST_RUN of a {}-byte frame failed: {err} ({:?})",
                frame.len(),
                std::error::Error::source(&err)
            )
        });
    (result.return_value, result.duration)
}
