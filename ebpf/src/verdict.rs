//! What happens to a packet, and which `PAL_STATS` counter says why.

use aya_ebpf::bindings::{TC_ACT_OK, TC_ACT_SHOT};
use palisade_common::ENDPOINT_NONE;

/// [`Verdict::stat`] of a pass that has no counter of its own.
pub const NO_STAT: u32 = u32::MAX;

/// A struct rather than an enum with data, so that every byte is always initialised (the
/// verifier rejects copies of uninitialised stack).
#[derive(Clone, Copy)]
pub struct Verdict {
    pub pass: bool,
    /// For a pass, the `STAT_*` that counts it (or [`NO_STAT`]); for a drop, its `DROP_*`.
    pub stat: u32,
    /// The absolute `PAL_OUTCOMES` index that decided, or `u32::MAX`.
    pub outcome: u32,
    /// The endpoint's `PAL_EP_STATS` index where the way to the verdict learnt it (from
    /// the flow's conntrack entry, or looked up to open one); [`ENDPOINT_NONE`] otherwise,
    /// and the counting looks it up.
    pub endpoint: u32,
    /// Out of a workload: the host veth of another local workload this pass may be
    /// forwarded to (the flow's `CtValue::forward_ifindex`), or 0: the stack forwards it.
    /// Into one: the sender's host veth when this packet, a flow's first, taught the
    /// sender's entry to forward (`conntrack::learn_forwarding`), else 0.
    pub forward_to: u32,
}

impl Verdict {
    #[inline(always)]
    pub fn pass(stat: u32) -> Self {
        Self {
            pass: true,
            stat,
            outcome: u32::MAX,
            endpoint: ENDPOINT_NONE,
            forward_to: 0,
        }
    }

    /// A pass of the endpoint at `PAL_EP_STATS[endpoint]`.
    #[inline(always)]
    pub fn pass_of(stat: u32, endpoint: u32) -> Self {
        Self {
            endpoint,
            ..Self::pass(stat)
        }
    }

    /// The same pass, to be forwarded to the host veth `ifindex` (0: by the stack).
    #[inline(always)]
    pub fn forwarded_to(self, ifindex: u32) -> Self {
        Self {
            forward_to: ifindex,
            ..self
        }
    }

    /// A drop no policy outcome decided.
    #[inline(always)]
    pub fn drop(reason: u32) -> Self {
        Self::drop_by(reason, u32::MAX)
    }

    #[inline(always)]
    pub fn drop_by(reason: u32, outcome: u32) -> Self {
        Self {
            pass: false,
            stat: reason,
            outcome,
            endpoint: ENDPOINT_NONE,
            forward_to: 0,
        }
    }

    #[inline(always)]
    pub fn tc_action(&self) -> i32 {
        if self.pass { TC_ACT_OK } else { TC_ACT_SHOT }
    }
}
