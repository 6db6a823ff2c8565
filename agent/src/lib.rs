//! palisade: Calico v1-style network policy for containers, enforced by eBPF.
//!
//! See ARCHITECTURE.md at the repository root for a map of the code.

pub mod agent;
pub mod cli;
pub mod compile;
pub mod log;
pub mod model;
pub mod policy;
pub mod selector;
pub mod store;
