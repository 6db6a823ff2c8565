//! palisade: Calico v1-style network policy for containers, enforced by eBPF.
//!
//! See ARCHITECTURE.md at the repository root for a map of the code.

// Input from users, files, the datastore and the network must never panic the agent or
// the CLI; tests may unwrap.
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod agent;
pub mod cli;
pub mod compile;
pub mod dataplane;
pub mod docker;
pub mod log;
pub mod model;
pub mod netplumb;
pub mod policy;
pub mod reach;
pub mod selector;
pub mod store;
pub mod telemetry;
