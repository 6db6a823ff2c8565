//! Whether a flow may start: policy, and around it the rules for the host's own traffic,
//! which Felix keeps apart from policy.
//!
//! - The host may reach its workloads without their ingress policy (unless
//!   `CONFIG_HOST_TO_WORKLOAD_POLICY`), like Felix.
//! - A workload's packet to the host itself is dropped after its egress policy allowed it
//!   (unless `CONFIG_WORKLOAD_TO_HOST_ACCEPT`): Felix's `DefaultEndpointToHostAction` DROP.

use palisade_common::{
    Addr, CONFIG_HOST_TO_WORKLOAD_POLICY, CONFIG_WORKLOAD_TO_HOST_ACCEPT, DIR_EGRESS, DROP_POLICY,
    DROP_TO_HOST, HostAddrKey,
};

use crate::{
    maps::PAL_HOST_ADDRS,
    policy::{self, Decision, Query},
};

/// A struct rather than an enum with data, so that every byte is always initialised.
#[derive(Clone, Copy)]
pub struct Admission {
    pub allowed: bool,
    /// The host's own traffic to a workload, allowed without asking policy.
    pub from_host: bool,
    /// What policy said ([`Decision::MISSING`] when it was not asked).
    pub decision: Decision,
    /// For a denial, its `DROP_*`.
    pub reason: u32,
}

/// `from_host`: the flow was opened by the host itself (only meaningful for ingress).
#[inline(always)]
pub fn admit(query: &Query, from_host: bool, config_flags: u32) -> Admission {
    if from_host && config_flags & CONFIG_HOST_TO_WORKLOAD_POLICY == 0 {
        return Admission {
            allowed: true,
            from_host: true,
            decision: Decision::MISSING,
            reason: 0,
        };
    }
    let decision = policy::decide(query);
    let reason = if !decision.allowed {
        DROP_POLICY
    } else if query.direction == DIR_EGRESS
        && config_flags & CONFIG_WORKLOAD_TO_HOST_ACCEPT == 0
        && is_host_addr(query.family, query.peer)
    {
        DROP_TO_HOST
    } else {
        return Admission {
            allowed: true,
            from_host: false,
            decision,
            reason: 0,
        };
    };
    Admission {
        allowed: false,
        from_host: false,
        decision,
        reason,
    }
}

/// Whether `addr` is one of the host's own addresses (kept in `PAL_HOST_ADDRS` by the agent).
#[inline(always)]
pub fn is_host_addr(family: u8, addr: &Addr) -> bool {
    let key = HostAddrKey {
        family,
        _pad: [0; 3],
        addr: *addr,
    };
    PAL_HOST_ADDRS.get_ptr(key).is_some()
}
