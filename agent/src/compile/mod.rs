//! The policy compiler: resources in, a map image out. Pure and deterministic: the same
//! resources, in any order, give a byte-identical image ([`Image::encode`]).
//!
//! The kernel answers "what does this endpoint's policy say about this packet" with a few
//! lookups instead of walking rules (see [`image`] for the maps, [`lookup`] for the walk):
//! 1. the policed address → [`LocalId`] ([`identity`]): endpoints with the same labels and
//!    profiles share one, split only by family and by rules that test their own address;
//! 2. the peer address → [`RemoteId`] ([`remote`], [`cidr_classes`]): everything any rule
//!    can ask about a peer address, as an ID;
//! 3. (local, remote, direction) → a [`PeerGroup`] ([`peer_groups`]): the peers the local
//!    ID's rules treat alike, most of them in group 0, which needs no entry per peer, so
//!    rules that ignore the peer are not multiplied by the number of peers;
//! 4. (local, direction, group) → a [`Table`] ([`table`]): a change that gives a whole
//!    group another table rewrites one entry;
//! 5. the table, by protocol and ports or ICMP type/code → an [`Outcome`]: verdict,
//!    deciding rule, and the `log` rules passed.
//!
//! The semantics are those of [`crate::policy`], the reference evaluator; the differential
//! test `tests/compile_differential.rs` holds the two together.
//!
//! [`compile`] builds an image from scratch ([`build`]). An agent keeps a [`Compiler`]
//! ([`incremental`]), which applies the common changes (endpoints, policies) to its last
//! image in place and reports the entries it touched ([`Changes`]), so that the writer
//! writes only those.

mod build;
mod capacity;
mod changes;
mod cidr_classes;
mod identity;
mod image;
mod incremental;
mod inputs;
mod lookup;
mod peer_classes;
mod peer_groups;
mod program;
mod reach;
mod remote;
mod rules;
mod shared_programs;
mod signature;
mod table;
mod table_ids;
mod table_row;

use crate::model::{Resource, ResourceKey};

pub use capacity::{Capacities, CompileError, Exceeded};
pub use changes::{ChangedKeys, Changes};
pub use identity::{LocalId, LocalInfo};
pub use image::{GroupEntry, Image, ImageStats, PeerEntry, PeerGroup, TableId};
pub use incremental::Compiler;
pub use program::Outcome;
pub use remote::RemoteId;
pub use signature::Family;
pub(crate) use table::range_starts;
pub use table::{OutcomeId, RangeTable, Row, Table};

use build::Build;

/// The compiler's hash maps. Their keys are mostly programs (long lists of rule IDs) and
/// tables, hashed several times per local ID on every change: foldhash hashes them far
/// faster than std's SipHash. Its seeds are still random per process, and the keys come
/// from the operator's resources, never from the network.
type Map<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Which workload endpoints get local IDs (policy programs): every one, or only those of
/// one node (what an agent enforces). Endpoints of every node are peers either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locals<'a> {
    All,
    Node(&'a str),
}

impl Locals<'_> {
    fn includes(&self, endpoint: &ResourceKey) -> bool {
        match (self, endpoint) {
            (Locals::All, _) => true,
            (Locals::Node(node), ResourceKey::WorkloadEndpoint { node: n, .. }) => n == node,
            (Locals::Node(_), _) => false,
        }
    }
}

/// Compiles `resources` into a map image that fits `capacities`, or says which capacities
/// it does not fit (and then returns nothing else).
pub fn compile(
    resources: impl IntoIterator<Item = Resource>,
    capacities: &Capacities,
) -> Result<Image, CompileError> {
    compile_for(resources, capacities, Locals::All)
}

/// [`compile`], with local IDs only for the endpoints `locals` names.
pub fn compile_for(
    resources: impl IntoIterator<Item = Resource>,
    capacities: &Capacities,
    locals: Locals<'_>,
) -> Result<Image, CompileError> {
    let image = Build::full(resources, |key| locals.includes(key))?.image;
    let exceeded = capacities.check(&image.stats());
    if exceeded.is_empty() {
        Ok(image)
    } else {
        Err(CompileError::Capacity(exceeded))
    }
}
