//! The policy compiler: resources in, a map image out. Pure and deterministic: the same
//! resources, in any order, give a byte-identical image ([`Image::encode`]).
//!
//! The kernel answers "what does this endpoint's policy say about this packet" with a few
//! lookups instead of walking rules (see [`image`] for the maps, [`lookup`] for the walk):
//! 1. the policed address → [`LocalId`] ([`identity`]): endpoints with the same labels and
//!    profiles share one, split only by family and by rules that test their own address;
//! 2. the peer address → [`RemoteId`] ([`remote`], [`cidr_classes`]): everything any rule
//!    can ask about a peer address, as an ID;
//! 3. (local, remote, direction) → a [`Table`] ([`table`]), falling back to a wildcard
//!    table per (local, direction) so that rules that ignore the peer are not multiplied
//!    by the number of peers;
//! 4. the table, by protocol and ports or ICMP type/code → an [`Outcome`]: verdict,
//!    deciding rule, and the `log` rules passed.
//!
//! The semantics are those of [`crate::policy`], the reference evaluator; the differential
//! test `tests/compile_differential.rs` holds the two together.

mod capacity;
mod cidr_classes;
mod identity;
mod image;
mod inputs;
mod lookup;
mod peer_classes;
mod program;
mod remote;
mod rules;
mod signature;
mod table;

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::rc::Rc;

use crate::model::{Resource, ResourceKey};
use crate::policy::Direction;

pub use capacity::{Capacities, CompileError, Exceeded};
pub use identity::{LocalId, LocalInfo};
pub use image::{Image, ImageStats, TableId};
pub use program::Outcome;
pub use remote::RemoteId;
pub use signature::Family;
pub use table::{OutcomeId, RangeTable, Row, Table};

use identity::LocalIds;
use inputs::Inputs;
use peer_classes::{PeerBit, RemoteSets, peer_bits};
use program::{Decided, Program};
use remote::RemoteClasses;
use signature::Bits;

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
    let inputs = Inputs::gather(resources)?;
    let remotes = RemoteClasses::classify(&inputs);
    let locals = LocalIds::assign(&inputs, |key| locals.includes(key));

    let mut outcomes = Interner::default();
    let mut outcome_ids: HashMap<Decided, OutcomeId> = HashMap::new();
    let mut tables = Interner::default();
    // Programs already compiled, by family: the same narrowed program gives the same table.
    let mut compiled: [HashMap<Program, TableId>; 2] = Default::default();
    let mut table_of = |family: Family, program: Program| -> TableId {
        let compiled = &mut compiled[usize::from(family == Family::V6)];
        if let Some(id) = compiled.get(&program) {
            return *id;
        }
        let table = table::build_table(&program, &inputs.rules, family, &mut |decided| {
            if let Some(&id) = outcome_ids.get(&decided) {
                return id;
            }
            let id = OutcomeId(outcomes.intern(decided.to_outcome(&inputs.rules)));
            outcome_ids.insert(decided, id);
            id
        });
        let id = TableId(tables.intern(table));
        compiled.insert(program, id);
        id
    };

    let sets = RemoteSets::new(
        &remotes,
        inputs.universe.label_tests.len(),
        inputs.universe.cidrs.len(),
    );
    // Programs of different local IDs often read the same peer bits.
    let mut classes_of: HashMap<(Family, Vec<PeerBit>), Rc<Vec<Bits>>> = HashMap::new();
    let mut wildcard = BTreeMap::new();
    let mut specific = Vec::new();
    for (i, (info, programs)) in locals.locals.iter().enumerate() {
        let local = LocalId(u32::try_from(i).unwrap_or(u32::MAX));
        let family = info.family;
        for (direction, program) in [Direction::Ingress, Direction::Egress]
            .into_iter()
            .zip(programs)
        {
            let bits = peer_bits(program.rule_ids().filter_map(|id| inputs.rule(id)));
            if bits.is_empty() {
                wildcard.insert((local, direction), table_of(family, program.clone()));
                continue;
            }
            let classes = Rc::clone(
                classes_of
                    .entry((family, bits))
                    .or_insert_with_key(|(family, bits)| Rc::new(sets.classes(*family, bits))),
            );
            let per_class: Vec<(&Bits, TableId)> = classes
                .iter()
                .map(|class| {
                    let sig = remotes.signature(peer_classes::first(class));
                    let narrowed = program.retain(|id| match (inputs.rule(id), sig) {
                        (Some(rule), Some(sig)) => rule.peer().holds(sig),
                        _ => false,
                    });
                    (class, table_of(family, narrowed))
                })
                .collect();
            // The wildcard is the table most peers get; ties go to the lower table ID.
            let mut counts: BTreeMap<TableId, usize> = BTreeMap::new();
            for (class, t) in &per_class {
                *counts.entry(*t).or_default() += class.count_ones();
            }
            let Some(common) = counts
                .iter()
                .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
                .map(|(t, _)| *t)
            else {
                continue;
            };
            wildcard.insert((local, direction), common);
            for (class, t) in per_class {
                if t != common {
                    specific.extend(
                        peer_classes::members(class).map(|remote| ((local, remote, direction), t)),
                    );
                }
            }
        }
    }

    let image = Image {
        endpoints: locals.of_endpoint,
        locals: locals.locals.into_iter().map(|(info, _)| info).collect(),
        remote_ids: remotes.signatures.len(),
        exact: remotes.exact,
        lpm: remotes.lpm,
        world: remotes.world,
        wildcard,
        specific: specific.into_iter().collect(),
        tables: tables.items,
        outcomes: outcomes.items,
    };
    let exceeded = capacities.check(&image.stats());
    if exceeded.is_empty() {
        Ok(image)
    } else {
        Err(CompileError::Capacity(exceeded))
    }
}

/// Stores each distinct value once, numbered in first-seen order (the compiler visits in
/// a fixed order, so the numbering is deterministic).
struct Interner<T> {
    items: Vec<T>,
    index: HashMap<T, u32>,
}

impl<T> Default for Interner<T> {
    fn default() -> Self {
        Interner {
            items: Vec::new(),
            index: HashMap::new(),
        }
    }
}

impl<T: Hash + Eq + Clone> Interner<T> {
    fn intern(&mut self, value: T) -> u32 {
        if let Some(&i) = self.index.get(&value) {
            return i;
        }
        let i = u32::try_from(self.items.len()).unwrap_or(u32::MAX);
        self.items.push(value.clone());
        self.index.insert(value, i);
        i
    }
}
