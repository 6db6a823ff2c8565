//! One compilation, kept: the inputs, the remote classes, the local IDs, the caches of
//! tables and outcomes, and the image they make. A full compile builds it from resources
//! ([`Build::full`]); [`super::incremental`] then changes it in place, recording which
//! image entries it touched.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::net::IpAddr;
use std::rc::Rc;

use crate::model::{Resource, ResourceKey};
use crate::policy::Direction;

use super::CompileError;
use super::changes::{ChangedKeys, PolicyEntry};
use super::identity::{LocalId, LocalIds, LocalKey};
use super::image::{Image, TableId};
use super::inputs::Inputs;
use super::peer_classes::{self, PeerBit, RemoteSets, peer_bits};
use super::program::{Decided, Outcome, Program};
use super::remote::{RemoteClasses, RemoteId};
use super::rules::CompiledRule;
use super::signature::{Bits, Family};
use super::table::{self, OutcomeId, Table};

pub(crate) struct Build {
    pub inputs: Inputs,
    pub remotes: RemoteClasses,
    sets: RemoteSets,
    /// Programs of different local IDs often read the same peer bits.
    classes_of: HashMap<(Family, Vec<PeerBit>), Rc<Vec<Bits>>>,
    tables: TableCache,
    pub locals: LocalIds,
    pub image: Image,
    /// What incremental changes touched since they were last taken; `None` while a full
    /// compile builds the image (everything is new then).
    pub changes: Option<ChangedKeys>,
    /// Sizes right after the full compile: garbage (rules, tables and outcomes nothing
    /// refers to any more) is measured against them.
    pub fresh: Sizes,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Sizes {
    pub rules: usize,
    pub tables: usize,
    pub outcomes: usize,
}

/// Tables and outcomes already made: the same narrowed program gives the same table.
#[derive(Default)]
struct TableCache {
    /// By family.
    compiled: [HashMap<Program, TableId>; 2],
    table_ids: HashMap<Table, TableId>,
    outcome_ids: HashMap<Decided, OutcomeId>,
    outcome_index: HashMap<Outcome, OutcomeId>,
}

impl TableCache {
    fn table_of(
        &mut self,
        rules: &[CompiledRule],
        image: &mut Image,
        family: Family,
        program: Program,
    ) -> TableId {
        let compiled = &mut self.compiled[usize::from(family == Family::V6)];
        if let Some(id) = compiled.get(&program) {
            return *id;
        }
        let (outcome_ids, outcome_index) = (&mut self.outcome_ids, &mut self.outcome_index);
        let outcomes = &mut image.outcomes;
        let table = table::build_table(&program, rules, family, &mut |decided| {
            if let Some(&id) = outcome_ids.get(&decided) {
                return id;
            }
            let id = OutcomeId(intern(outcome_index, outcomes, decided.to_outcome(rules)));
            outcome_ids.insert(decided, id);
            id
        });
        let id = TableId(intern(&mut self.table_ids, &mut image.tables, table));
        compiled.insert(program, id);
        id
    }
}

/// Stores each distinct value once, numbered in first-seen order (the compiler visits in
/// a fixed order, so a full compile numbers deterministically).
fn intern<T: Hash + Eq + Clone, I: Copy + From<u32> + Into<u32>>(
    index: &mut HashMap<T, I>,
    items: &mut Vec<T>,
    value: T,
) -> u32 {
    if let Some(&i) = index.get(&value) {
        return i.into();
    }
    let i = u32::try_from(items.len()).unwrap_or(u32::MAX);
    items.push(value.clone());
    index.insert(value, I::from(i));
    i
}

impl From<u32> for TableId {
    fn from(i: u32) -> TableId {
        TableId(i)
    }
}

impl From<TableId> for u32 {
    fn from(id: TableId) -> u32 {
        id.0
    }
}

impl From<u32> for OutcomeId {
    fn from(i: u32) -> OutcomeId {
        OutcomeId(i)
    }
}

impl From<OutcomeId> for u32 {
    fn from(id: OutcomeId) -> u32 {
        id.0
    }
}

impl Build {
    /// Compiles `resources`, with local IDs for the endpoints `include` names.
    pub fn full(
        resources: impl IntoIterator<Item = Resource>,
        include: impl Fn(&ResourceKey) -> bool,
    ) -> Result<Build, CompileError> {
        let inputs = Inputs::gather(resources)?;
        let mut remotes = RemoteClasses::classify(&inputs);
        let (locals, endpoints) = LocalIds::assign(&inputs, include);
        let sets = RemoteSets::new(
            &remotes,
            inputs.universe.label_tests.len(),
            inputs.universe.cidrs.len(),
        );
        let image = Image {
            endpoints,
            locals: Vec::new(),
            remote_ids: remotes.signatures.len(),
            exact: std::mem::take(&mut remotes.exact),
            lpm: std::mem::take(&mut remotes.lpm),
            world: remotes.world,
            wildcard: BTreeMap::new(),
            specific: BTreeMap::new(),
            tables: Vec::new(),
            outcomes: Vec::new(),
        };
        let mut build = Build {
            inputs,
            remotes,
            sets,
            classes_of: HashMap::new(),
            tables: TableCache::default(),
            locals,
            image,
            changes: None,
            fresh: Sizes {
                rules: 0,
                tables: 0,
                outcomes: 0,
            },
        };
        for i in 0..build.locals.len() {
            let id = LocalId(u32::try_from(i).unwrap_or(u32::MAX));
            if let Some(key) = build.locals.key(id).cloned() {
                build.add_local(id, key);
            }
        }
        build.fresh = build.sizes();
        Ok(build)
    }

    pub fn sizes(&self) -> Sizes {
        Sizes {
            rules: self.inputs.rules.len(),
            tables: self.image.tables.len(),
            outcomes: self.image.outcomes.len(),
        }
    }

    /// Puts a local ID into the image with `key`: its info and its policy entries. An ID
    /// that had entries keeps those that stay the same (only the others are touched).
    pub fn add_local(&mut self, local: LocalId, key: LocalKey) {
        let i = local.0 as usize;
        if i >= self.image.locals.len() {
            self.image.locals.resize(i + 1, key.info.clone());
        }
        self.image.locals[i] = key.info.clone();
        let family = key.info.family;
        let mut entries = BTreeMap::new();
        for (direction, program) in [Direction::Ingress, Direction::Egress]
            .into_iter()
            .zip(key.programs)
        {
            self.program_entries(local, direction, family, program, &mut entries);
        }
        self.set_local_entries(local, entries);
    }

    /// The wildcard entry of (`local`, `direction`) and, for the peer classes whose table
    /// differs from it, specific entries.
    fn program_entries(
        &mut self,
        local: LocalId,
        direction: Direction,
        family: Family,
        program: Program,
        out: &mut BTreeMap<PolicyEntry, TableId>,
    ) {
        let Build {
            inputs,
            remotes,
            sets,
            classes_of,
            tables,
            image,
            ..
        } = self;
        let bits = peer_bits(program.rule_ids().filter_map(|id| inputs.rule(id)));
        if bits.is_empty() {
            let table = tables.table_of(&inputs.rules, image, family, program);
            out.insert((local, None, direction), table);
            return;
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
                (
                    class,
                    tables.table_of(&inputs.rules, image, family, narrowed),
                )
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
            return;
        };
        out.insert((local, None, direction), common);
        for (class, t) in per_class {
            if t != common {
                for remote in peer_classes::members(class) {
                    out.insert((local, Some(remote), direction), t);
                }
            }
        }
    }

    /// Makes `local`'s policy entries `wanted`, touching only those that differ.
    fn set_local_entries(&mut self, local: LocalId, wanted: BTreeMap<PolicyEntry, TableId>) {
        let mut touched = Vec::new();
        for direction in [Direction::Ingress, Direction::Egress] {
            let entry = (local, None, direction);
            let want = wanted.get(&entry).copied();
            let held = match want {
                Some(t) => self.image.wildcard.insert((local, direction), t),
                None => self.image.wildcard.remove(&(local, direction)),
            };
            if held != want {
                touched.push(entry);
            }
        }
        let range = (local, RemoteId(0), Direction::Ingress)
            ..=(local, RemoteId(u32::MAX), Direction::Egress);
        let gone: Vec<_> = self
            .image
            .specific
            .range(range)
            .map(|(k, _)| *k)
            .filter(|(l, r, d)| !wanted.contains_key(&(*l, Some(*r), *d)))
            .collect();
        for key in gone {
            self.image.specific.remove(&key);
            touched.push((key.0, Some(key.1), key.2));
        }
        for (entry, table) in wanted {
            if let (l, Some(r), d) = entry
                && self.image.specific.insert((l, r, d), table) != Some(table)
            {
                touched.push(entry);
            }
        }
        if let Some(changes) = self.changes.as_mut() {
            changes.policy.extend(touched);
        }
    }

    /// Takes a freed local ID's policy entries out of the image.
    pub fn remove_local(&mut self, local: LocalId) {
        self.set_local_entries(local, BTreeMap::new());
    }

    /// Gives local ID `local` (all its users) the new key `key`, keeping the policy entries
    /// that stay the same; `false` when another ID has that key.
    pub fn rekey_local(&mut self, local: LocalId, key: LocalKey) -> bool {
        if !self.locals.rekey(local, key.clone()) {
            return false;
        }
        self.add_local(local, key);
        true
    }

    /// Polices `endpoint`'s address `addr` with `key`'s local ID (made if new).
    pub fn bind_endpoint(&mut self, endpoint: &ResourceKey, addr: IpAddr, key: LocalKey) {
        let (id, new) = self.locals.acquire(key.clone());
        if new {
            self.add_local(id, key);
        }
        let old = self.image.endpoints.insert((endpoint.clone(), addr), id);
        self.endpoint_touched(endpoint, addr);
        if let Some(old) = old {
            self.release(old);
        }
    }

    pub fn unbind_endpoint(&mut self, endpoint: &ResourceKey, addr: IpAddr) {
        if let Some(old) = self.image.endpoints.remove(&(endpoint.clone(), addr)) {
            self.endpoint_touched(endpoint, addr);
            self.release(old);
        }
    }

    fn release(&mut self, local: LocalId) {
        if self.locals.release(local) {
            self.remove_local(local);
        }
    }

    fn endpoint_touched(&mut self, endpoint: &ResourceKey, addr: IpAddr) {
        if let Some(changes) = self.changes.as_mut() {
            changes.endpoints.insert((endpoint.clone(), addr));
        }
    }
}
