//! One compilation, kept: the inputs, the remote classes, the local IDs, the caches of
//! tables and outcomes, and the image they make. A full compile builds it from resources
//! ([`Build::full`]); [`super::incremental`] then changes it in place, recording which
//! image entries it touched.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::Hash;
use std::net::IpAddr;
use std::rc::Rc;

use crate::model::{Resource, ResourceKey};
use crate::policy::Direction;

use super::changes::ChangedKeys;
use super::identity::{LocalId, LocalIds, LocalKey};
use super::image::{GroupEntry, Image, PeerEntry, PeerGroup, TableId};
use super::inputs::Inputs;
use super::peer_classes::{self, PeerBit, RemoteSets};
use super::peer_groups::{PeerGroups, changed_rules};
use super::program::{Decided, Outcome, Program};
use super::reach::ChangeReach;
use super::remote::{RemoteClasses, RemoteId};
use super::rules::{CompiledRule, RuleId};
use super::signature::{Bits, Family, Signature};
use super::table::{self, OutcomeId, Table};
use super::table_ids::TableIds;
use super::{CompileError, Map};

pub(crate) struct Build {
    pub inputs: Inputs,
    pub remotes: RemoteClasses,
    sets: RemoteSets,
    /// Programs of different local IDs often read the same peer bits.
    classes_of: Map<(Family, Vec<PeerBit>), Rc<Vec<Bits>>>,
    tables: TableCache,
    /// What each program set since the last [`Build::end_update`] gave its peers, by
    /// family: local IDs with other labels often run the same program, and its classes and
    /// their tables are the same for all of them. Programs are long and seldom come back
    /// in a later update, so this is emptied after each one.
    program_tables: [Map<Program, Rc<ProgramTables>>; 2],
    pub locals: LocalIds,
    /// Per (local ID, direction): how its peers are grouped, to change in place.
    peer_groups: Map<(LocalId, Direction), PeerGroups>,
    pub image: Image,
    /// What incremental changes touched since they were last taken; `None` while a full
    /// compile builds the image (everything is new then).
    pub changes: Option<ChangedKeys>,
    /// Sizes right after the full compile: garbage (rules and outcomes nothing
    /// refers to any more) is measured against them.
    pub fresh: Sizes,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Sizes {
    pub rules: usize,
    pub tables: usize,
    pub outcomes: usize,
}

/// A program's peers as [`Build::set_program`] made them, for the other local IDs that run
/// the program in the same update.
struct ProgramTables {
    program: Rc<Program>,
    bit_counts: Rc<BTreeMap<PeerBit, u32>>,
    classes: Rc<Vec<Bits>>,
    class_tables: Vec<TableId>,
}

/// Tables and outcomes already made: the same narrowed program gives the same table.
#[derive(Default)]
struct TableCache {
    /// By family; with the table ID's epoch when it was cached (the ID may have been freed
    /// and given to another table since).
    compiled: [Map<Program, (TableId, u32)>; 2],
    /// Where each distinct live table is in the image.
    table_index: Map<Table, u32>,
    outcome_ids: Map<Decided, OutcomeId>,
    outcome_index: Map<Outcome, u32>,
    ids: TableIds,
    /// How many programs and decisions the caches held after the full compile: in-place
    /// updates add entries that are seldom asked for again, so the caches are emptied
    /// when they have grown far past that.
    cached_at_full: usize,
}

impl TableCache {
    fn table_of(
        &mut self,
        rules: &[CompiledRule],
        image: &mut Image,
        touched: Option<&mut BTreeSet<TableId>>,
        family: Family,
        program: Program,
    ) -> TableId {
        let compiled = &mut self.compiled[usize::from(family == Family::V6)];
        if let Some(&(id, epoch)) = compiled.get(&program)
            && self.ids.epoch(id.0) == epoch
        {
            return id;
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
        let id = match self.table_index.get(&table) {
            Some(&id) => id,
            None => {
                let id = self.ids.allocate();
                match image.tables.get_mut(id as usize) {
                    Some(free) => *free = Some(table.clone()),
                    None => image.tables.push(Some(table.clone())),
                }
                self.table_index.insert(table, id);
                if let Some(touched) = touched {
                    touched.insert(TableId(id));
                }
                id
            }
        };
        compiled.insert(program, (TableId(id), self.ids.epoch(id)));
        TableId(id)
    }

    fn cached(&self) -> usize {
        self.compiled.iter().map(Map::len).sum::<usize>() + self.outcome_ids.len()
    }

    /// Empties the program and decision caches once in-place updates have grown them far
    /// past what the full compile needed. They are only caches: what they held is made
    /// again when asked for, to the same IDs (tables and outcomes are found by content).
    /// Their room is kept, so that they fill again without growing.
    fn bound_caches(&mut self) {
        if self.cached() > 2 * self.cached_at_full + 4096 {
            self.compiled.iter_mut().for_each(Map::clear);
            self.outcome_ids.clear();
        }
    }

    /// Makes room in the caches, right after the full compile, for what in-place updates
    /// may add before [`TableCache::bound_caches`] empties them. A hash map that grows
    /// hashes every key again, and these keys are whole programs: the first change after a
    /// full compile at 10,000 policies spent some 3 ms of its compile so (perf), when its
    /// few new tables tipped the cache over its load factor.
    fn reserve_for_updates(&mut self) {
        let room = self.cached_at_full + 4096;
        self.compiled.iter_mut().for_each(|m| m.reserve(room));
        self.outcome_ids.reserve(room);
    }
}

/// Makes `map[key]` `value` (`None`: no entry); records `key` in `touched` when that
/// changed the map.
fn set_entry<K: Ord + Copy, V: PartialEq + Copy>(
    map: &mut BTreeMap<K, V>,
    touched: Option<&mut BTreeSet<K>>,
    key: K,
    value: Option<V>,
) {
    let held = match value {
        Some(v) => map.insert(key, v),
        None => map.remove(&key),
    };
    if held != value
        && let Some(touched) = touched
    {
        touched.insert(key);
    }
}

/// Adds (or takes away) the peer bits each of `ids`' rules reads to `counts`, which says how
/// many rules of a program read each bit (a bit no rule reads has no entry).
fn count_bits<'a>(
    counts: &mut BTreeMap<PeerBit, u32>,
    ids: impl Iterator<Item = &'a RuleId>,
    inputs: &Inputs,
    add: bool,
) {
    for rule in ids.filter_map(|&id| inputs.rule(id)) {
        let peer = rule.peer();
        let bits = peer
            .label_tests()
            .map(PeerBit::Label)
            .chain(peer.cidrs().map(PeerBit::Cidr));
        for bit in bits {
            if add {
                *counts.entry(bit).or_default() += 1;
            } else if let Some(n) = counts.get_mut(&bit) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    counts.remove(&bit);
                }
            }
        }
    }
}

/// Stores each distinct value once, numbered in first-seen order (the compiler visits in
/// a fixed order, so a full compile numbers deterministically).
fn intern<T: Hash + Eq + Clone>(index: &mut Map<T, u32>, items: &mut Vec<T>, value: T) -> u32 {
    if let Some(&i) = index.get(&value) {
        return i;
    }
    let i = u32::try_from(items.len()).unwrap_or(u32::MAX);
    items.push(value.clone());
    index.insert(value, i);
    i
}

/// What the tables of a program's peer classes are made from.
struct ClassTables<'a> {
    inputs: &'a Inputs,
    remotes: &'a RemoteClasses,
    tables: &'a mut TableCache,
    image: &'a mut Image,
    touched: Option<&'a mut BTreeSet<TableId>>,
    family: Family,
}

impl ClassTables<'_> {
    /// The table of each of `classes` under `program`. `previous`: the classes' tables
    /// under an earlier program and the rules that alone tell the two apart; a class none
    /// of those rules can change a decision for keeps its table.
    fn of(
        &mut self,
        program: &Program,
        classes: &[Bits],
        previous: Option<(&Vec<TableId>, &ChangeReach)>,
    ) -> Vec<TableId> {
        let inputs = self.inputs;
        let holds = |id: RuleId, sig: &Signature| inputs.peer_holds(id, sig);
        classes
            .iter()
            .enumerate()
            .map(|(i, class)| {
                let sig = self.remotes.signature(peer_classes::first(class));
                let kept = match (previous, sig) {
                    (Some((before, change)), Some(sig))
                        if !change.concerns(|id| holds(id, sig)) =>
                    {
                        before.get(i).copied()
                    }
                    _ => None,
                };
                kept.unwrap_or_else(|| {
                    let narrowed =
                        program.narrowed(&inputs.rules, |id| sig.is_some_and(|sig| holds(id, sig)));
                    self.tables.table_of(
                        &inputs.rules,
                        self.image,
                        self.touched.as_deref_mut(),
                        self.family,
                        narrowed,
                    )
                })
            })
            .collect()
    }
}

impl Build {
    /// Compiles `resources`, with local IDs for the endpoints `include` names.
    pub fn full<R: std::borrow::Borrow<Resource>>(
        resources: impl IntoIterator<Item = R>,
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
            peers: BTreeMap::default(),
            groups: BTreeMap::default(),
            tables: Vec::new(),
            outcomes: Vec::new(),
        };
        let mut build = Build {
            inputs,
            remotes,
            sets,
            classes_of: Map::default(),
            tables: TableCache::default(),
            program_tables: Default::default(),
            locals,
            peer_groups: Map::default(),
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
        // Measured before the end of the update, which bounds the caches by it.
        build.tables.cached_at_full = build.tables.cached();
        build.tables.reserve_for_updates();
        build.end_update();
        build.fresh = build.sizes();
        Ok(build)
    }

    /// Forgets what only the update just made needed, and frees the tables no group entry
    /// refers to any more (their IDs, and the writer their cells, are reused).
    pub fn end_update(&mut self) {
        // Emptied, not dropped: grown again from nothing, each update hashed its programs
        // (long keys) once per doubling.
        self.program_tables.iter_mut().for_each(Map::clear);
        for id in self.tables.ids.sweep() {
            if let Some(table) = self
                .image
                .tables
                .get_mut(id as usize)
                .and_then(Option::take)
            {
                self.tables.table_index.remove(&table);
            }
            if let Some(changes) = self.changes.as_mut() {
                changes.tables.insert(TableId(id));
            }
        }
        self.tables.bound_caches();
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
        for (direction, program) in [Direction::Ingress, Direction::Egress]
            .into_iter()
            .zip(key.programs.get())
        {
            // A policy change usually concerns one direction: the other keeps its groups,
            // tables and entries as they are.
            let unchanged = self
                .peer_groups
                .get(&(local, direction))
                .is_some_and(|g| g.family == family && *g.program == *program);
            if !unchanged {
                self.set_program(local, direction, family, program);
            }
        }
    }

    /// Makes (`local`, `direction`)'s peer groups and their tables those of `program`.
    /// When the program reads the same peer bits as before, only the classes of peers
    /// that its changed rules concern get their tables again, and only peers whose group
    /// splits get a new entry; otherwise the peers are grouped afresh.
    fn set_program(
        &mut self,
        local: LocalId,
        direction: Direction,
        family: Family,
        program: &Program,
    ) {
        let Build {
            inputs,
            remotes,
            sets,
            classes_of,
            tables,
            program_tables,
            image,
            peer_groups,
            changes,
            ..
        } = self;
        let old = peer_groups
            .remove(&(local, direction))
            .filter(|g| g.family == family);
        let same_program = &mut program_tables[usize::from(family == Family::V6)];
        let made = match same_program.get(program) {
            Some(made) => Rc::clone(made),
            None => {
                // The rules changed since, where only those rules tell the old program from
                // the new one: the peer bits read are then the old ones, give or take theirs.
                let changed = old
                    .as_ref()
                    .and_then(|g| changed_rules(&g.program, program));
                let bit_counts = match (&old, &changed) {
                    (Some(g), Some(changed)) => {
                        let mut counts = BTreeMap::clone(&g.bit_counts);
                        count_bits(&mut counts, changed.removed.iter(), inputs, false);
                        count_bits(&mut counts, changed.added.iter(), inputs, true);
                        counts
                    }
                    _ => {
                        let mut counts = BTreeMap::default();
                        let ids: Vec<RuleId> = program.rule_ids().collect();
                        count_bits(&mut counts, ids.iter(), inputs, true);
                        counts
                    }
                };
                let bits: Vec<PeerBit> = bit_counts.keys().copied().collect();
                let classes = Rc::clone(
                    classes_of
                        .entry((family, bits))
                        .or_insert_with_key(|(family, bits)| Rc::new(sets.classes(*family, bits))),
                );
                // The classes' tables so far, kept for the classes no changed rule can
                // change a decision for.
                let old = old
                    .as_ref()
                    .filter(|g| Rc::ptr_eq(&g.classes, &classes) || g.classes == classes);
                let reach = old.zip(changed.as_ref()).map(|(g, changed)| {
                    ChangeReach::of(&g.program, program, changed, &inputs.rules)
                });
                let previous = old.map(|g| &g.class_tables).zip(reach.as_ref());
                let class_tables = ClassTables {
                    inputs,
                    remotes,
                    tables,
                    image,
                    touched: changes.as_mut().map(|c| &mut c.tables),
                    family,
                }
                .of(program, &classes, previous);
                let made = Rc::new(ProgramTables {
                    program: Rc::new(program.clone()),
                    bit_counts: Rc::new(bit_counts),
                    classes,
                    class_tables,
                });
                same_program.insert(program.clone(), Rc::clone(&made));
                made
            }
        };
        let classes = Rc::clone(&made.classes);
        let old = old.filter(|g| Rc::ptr_eq(&g.classes, &classes) || g.classes == classes);
        let groups = match old {
            Some(mut groups) => {
                groups.bit_counts = Rc::clone(&made.bit_counts);
                for i in groups.refine(Rc::clone(&made.program), made.class_tables.clone()) {
                    let group = groups.class_groups[i];
                    for remote in peer_classes::members(&classes[i]) {
                        self.set_peer((local, direction, remote), group);
                    }
                }
                for (g, table) in groups.group_tables.iter().enumerate() {
                    let group = PeerGroup(u32::try_from(g).unwrap_or(u32::MAX));
                    self.set_group((local, direction, group), Some(*table));
                }
                groups
            }
            None => {
                let mut groups = PeerGroups::fresh(
                    Rc::clone(&made.program),
                    family,
                    Rc::clone(&classes),
                    made.class_tables.clone(),
                );
                groups.bit_counts = Rc::clone(&made.bit_counts);
                let peers = classes
                    .iter()
                    .zip(&groups.class_groups)
                    .filter(|(_, g)| **g != PeerGroup::DEFAULT)
                    .flat_map(|(class, g)| peer_classes::members(class).map(|r| (r, *g)))
                    .collect();
                self.set_entries(local, direction, peers, &groups.group_tables);
                groups
            }
        };
        self.peer_groups.insert((local, direction), groups);
    }

    /// Makes (`local`, `direction`)'s entries exactly `peers` and `groups`, touching only
    /// those that differ.
    fn set_entries(
        &mut self,
        local: LocalId,
        direction: Direction,
        peers: BTreeMap<RemoteId, PeerGroup>,
        groups: &[TableId],
    ) {
        let gone: Vec<RemoteId> = self
            .image
            .peers
            .range((local, direction, RemoteId(0))..=(local, direction, RemoteId(u32::MAX)))
            .map(|((_, _, r), _)| *r)
            .filter(|r| !peers.contains_key(r))
            .collect();
        for remote in gone {
            self.set_peer((local, direction, remote), PeerGroup::DEFAULT);
        }
        for (remote, group) in peers {
            self.set_peer((local, direction, remote), group);
        }
        let held: Vec<PeerGroup> = self
            .image
            .groups
            .range((local, direction, PeerGroup(0))..=(local, direction, PeerGroup(u32::MAX)))
            .map(|((_, _, g), _)| *g)
            .collect();
        for group in held {
            if group.0 as usize >= groups.len() {
                self.set_group((local, direction, group), None);
            }
        }
        for (g, table) in groups.iter().enumerate() {
            let group = PeerGroup(u32::try_from(g).unwrap_or(u32::MAX));
            self.set_group((local, direction, group), Some(*table));
        }
    }

    /// Puts a peer in `group` (group 0: no entry).
    fn set_peer(&mut self, entry: PeerEntry, group: PeerGroup) {
        let group = (group != PeerGroup::DEFAULT).then_some(group);
        let touched = self.changes.as_mut().map(|c| &mut c.peers);
        set_entry(&mut self.image.peers, touched, entry, group);
    }

    /// Gives a peer group its table (`None`: no such group).
    fn set_group(&mut self, entry: GroupEntry, table: Option<TableId>) {
        let held = self.image.groups.get(&entry).copied();
        if held == table {
            return;
        }
        if let Some(table) = table {
            self.tables.ids.refer(table.0);
        }
        if let Some(held) = held {
            self.tables.ids.unrefer(held.0);
        }
        let touched = self.changes.as_mut().map(|c| &mut c.groups);
        set_entry(&mut self.image.groups, touched, entry, table);
    }

    /// Gives an endpoint address its exact remote ID (`None`: the CIDR classes say it).
    pub fn set_exact(&mut self, addr: IpAddr, remote: Option<RemoteId>) {
        let touched = self.changes.as_mut().map(|c| &mut c.exact);
        set_entry(&mut self.image.exact, touched, addr, remote);
    }

    /// Takes a freed local ID's policy entries out of the image.
    pub fn remove_local(&mut self, local: LocalId) {
        for direction in [Direction::Ingress, Direction::Egress] {
            self.peer_groups.remove(&(local, direction));
            self.set_entries(local, direction, BTreeMap::default(), &[]);
        }
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
