//! Who can reach whom, asked of the reference evaluator (`policy/`), exactly: the
//! impact of a change (`impact`, for `--dry-run` and `diff`) and the connectivity matrix
//! (`matrix`). Both ask about every packet by asking about one per cell of the grids the
//! rules cut (`grid`), between every end that rules can tell apart (`places`); `probe`
//! builds the packet of one asked-about kind, as `trace` does.

pub mod grid;
pub mod impact;
pub mod matrix;
pub mod places;
pub mod probe;

pub use grid::{Keys, ProtocolGrid};
pub use impact::{CellChange, FlowOutcome, FlowState, Impact, ImpactGroup, SideDecision, impact};
pub use places::{Place, PlaceKind};
pub use probe::Probe;
