//! The node agent: follows the datastore into a view of the resources ([`sync`]), and
//! enforces that view for this node's workloads ([`enforce`]).

mod enforce;
mod sync;
mod thread_usage;
mod views;

pub use enforce::Enforcer;
pub use sync::{ResourceView, SyncEvent, follow};
