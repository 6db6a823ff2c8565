//! `palisade flows`: the verdicts the programs report (new flows allowed, drops, `log`
//! rules), as records the agent keeps a bounded window of and streams to local clients
//! over a root-only unix socket in its run directory.
//!
//! - `record`: what one line of the stream says (shared by the agent and the client).
//! - `hub`: the recent window and the live fan-out, bounded; a slow client loses records
//!   (counted and told), never the agent's time or memory.
//! - `socket`: the listener in the run directory and the one-line request a client sends.

pub mod hub;
pub mod record;
pub mod socket;

pub use hub::FlowHub;
pub use record::{Flow, Lost, LostSource, StreamItem, Verdict};
