//! The node agent: follows the datastore and keeps an up-to-date, validated view of the
//! resources this node enforces. Enforcement (compiling that view into the eBPF maps and
//! attaching programs to workload interfaces) builds on this loop.

mod sync;

pub use sync::{ResourceView, SyncEvent, follow};
