//! Writes compiled policy into the kernel maps: incremental and atomic.
//!
//! Two slots: packets use slot `generation % 2`. A new image goes into the other slot, as
//! the difference from what that slot last held, and then one write of
//! `PAL_CONFIG[0].generation` switches every later packet to it. A packet reads the
//! generation once, so it sees the old policy or the new, never a mix. The slot just retired
//! is not written again until [`RETIRE_GRACE`] has passed, which is far longer than any
//! packet takes in the program that read the old generation.
//!
//! Each image is written into both slots: before its flip into the inactive one, and
//! after the grace period, by [`Writer::catch_up`], into the one just retired, so that the
//! next change has only itself to write before its flip. Left to the next publish, the
//! retired slot's catching up doubled the writing on the way to that flip (at 10,000
//! policies some 6,000 map writes instead of 3,000 per policy changed).
//!
//! After a restart the maps are adopted, not cleared: the active slot stays as the earlier
//! agent left it, so enforcement never stops; the inactive slot's hash entries are read
//! back (so stale ones get deleted); its arrays count as unknown and are written in full.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr};
use std::ops::Range;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use aya::Pod;
use aya::maps::lpm_trie::Key;
use aya::maps::{
    Array, HashMap as BpfHashMap, IterableMap, LpmTrie, MapData, MapError, PerCpuArray,
};
use aya::sys::SyscallError;
use palisade_common::{
    Cell, Config, LocalKey, LocalValue, LpmData, Outcome, PeerKey, PeerValue, PolicyKey,
    PolicyValue, RemoteKey, RemoteValue, Row, RuleStats, TableKey, TableValue, map_names,
};

use crate::compile::{ChangedKeys, Changes, Image, PeerGroup, RemoteId, TableId};
use crate::model::ResourceKey;

use super::map_batch;
use super::slot_image::{
    ArrayBases, ArrayLimits, EncodeError, LpmKey, RuleCounters, SlotImage, check_limits, encode,
    local_entry, peer_entry, policy_entry, push_outcome, remote_entry,
};
use super::table_layout::{SlotTables, TableWrites, lay_out};

/// How long a retired slot is left alone before it is written again.
pub const RETIRE_GRACE: Duration = Duration::from_millis(2);

/// Why policy could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("palisade's eBPF object has no map `{0}`; is the object stale?")]
    MissingMap(&'static str),
    #[error("map `{name}` is not what palisade expects: {source}")]
    MapType {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("cannot {action} map `{name}`: {source}")]
    Map {
        action: &'static str,
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error(transparent)]
    Encode(#[from] EncodeError),
    #[error("cannot zero the counters of new rules: {0}")]
    Counters(String),
}

/// The policy maps, taken out of the loaded object.
pub struct PolicyMaps {
    config: Array<MapData, Config>,
    local: BpfHashMap<MapData, LocalKey, LocalValue>,
    remote: BpfHashMap<MapData, RemoteKey, RemoteValue>,
    lpm: LpmTrie<MapData, LpmData, RemoteValue>,
    peers: BpfHashMap<MapData, PeerKey, PeerValue>,
    policy: BpfHashMap<MapData, PolicyKey, PolicyValue>,
    table: BpfHashMap<MapData, TableKey, TableValue>,
    rows: Array<MapData, Row>,
    cells: Array<MapData, Cell>,
    outcomes: Array<MapData, Outcome>,
    /// `PAL_RULE_STATS`'s size: how many rules can be counted.
    rule_counters: u32,
}

fn take<M>(ebpf: &mut aya::Ebpf, name: &'static str) -> Result<M, WriteError>
where
    M: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = ebpf.take_map(name).ok_or(WriteError::MissingMap(name))?;
    M::try_from(map).map_err(|source| WriteError::MapType { name, source })
}

/// The size of `PAL_RULE_STATS`, left in the object for the counters.
fn rule_counters(ebpf: &aya::Ebpf) -> Result<u32, WriteError> {
    let name = map_names::RULE_STATS;
    let map = ebpf.map(name).ok_or(WriteError::MissingMap(name))?;
    let stats: PerCpuArray<&MapData, RuleStats> =
        PerCpuArray::try_from(map).map_err(|source| WriteError::MapType { name, source })?;
    Ok(stats.len())
}

impl PolicyMaps {
    /// Takes the policy maps out of `ebpf`, reading `PAL_RULE_STATS`'s size on the way (so
    /// before the counters take that map).
    pub fn take(ebpf: &mut aya::Ebpf) -> Result<PolicyMaps, WriteError> {
        Ok(PolicyMaps {
            config: take(ebpf, map_names::CONFIG)?,
            local: take(ebpf, map_names::LOCAL)?,
            remote: take(ebpf, map_names::REMOTE)?,
            lpm: take(ebpf, map_names::LPM)?,
            peers: take(ebpf, map_names::PEERS)?,
            policy: take(ebpf, map_names::POLICY)?,
            table: take(ebpf, map_names::TABLE)?,
            rows: take(ebpf, map_names::ROWS)?,
            cells: take(ebpf, map_names::CELLS)?,
            outcomes: take(ebpf, map_names::OUTCOMES)?,
            rule_counters: rule_counters(ebpf)?,
        })
    }
}

/// What one [`Writer::publish`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Published {
    pub generation: u32,
    /// Entries written (inserted or changed) and deleted in the new slot.
    pub written: usize,
    pub deleted: usize,
}

/// What a slot holds, as far as the writer knows.
struct SlotState {
    image: SlotImage,
    /// Whether `image` has the arrays too (not after adoption or a failed write).
    arrays_known: bool,
    /// The image changes since the slot was last written: all after adoption and after a
    /// failed write.
    behind: Changes,
    /// Endpoint bindings the slot was last written with.
    bindings: BTreeMap<ResourceKey, u32>,
    /// The `PAL_LOCAL` key of each bound endpoint address in the slot.
    endpoint_keys: BTreeMap<(ResourceKey, IpAddr), LocalKey>,
    /// Where the slot's tables are in its arrays, and the holes freed tables left.
    tables: SlotTables,
    /// How many of the image's outcomes the slot holds.
    outcomes: usize,
}

impl SlotState {
    fn unknown(image: SlotImage) -> SlotState {
        SlotState {
            image,
            arrays_known: false,
            behind: Changes::All,
            bindings: BTreeMap::new(),
            endpoint_keys: BTreeMap::new(),
            tables: SlotTables::default(),
            outcomes: 0,
        }
    }
}

pub struct Writer {
    maps: PolicyMaps,
    config: Config,
    slots: [SlotState; 2],
    retired_at: [Option<Instant>; 2],
    limits: ArrayLimits,
    counters: RuleCounters,
    /// Rule counter indexes below this were zeroed for this writer.
    counters_zeroed: u32,
}

impl Writer {
    /// Takes over the maps as they are: fresh (all zero) or left by an earlier agent.
    pub fn adopt(maps: PolicyMaps) -> Result<Writer, WriteError> {
        let config = maps.config.get(&0, 0).map_err(|source| WriteError::Map {
            action: "read",
            name: map_names::CONFIG,
            source,
        })?;
        let limits = ArrayLimits {
            rows: (maps.rows.len() / 2) as usize,
            cells: (maps.cells.len() / 2) as usize,
            outcomes: (maps.outcomes.len() / 2) as usize,
        };
        let counters = RuleCounters::new(maps.rule_counters as usize);
        let mut writer = Writer {
            maps,
            config,
            slots: [
                SlotState::unknown(SlotImage::default()),
                SlotState::unknown(SlotImage::default()),
            ],
            retired_at: [None, None],
            limits,
            counters,
            counters_zeroed: 0,
        };
        let [slot0, slot1] = writer.read_slots()?;
        writer.slots[0].image = slot0;
        writer.slots[1].image = slot1;
        Ok(writer)
    }

    pub fn generation(&self) -> u32 {
        self.config.generation
    }

    pub fn active_slot(&self) -> u8 {
        (self.config.generation % 2) as u8
    }

    pub fn config(&self) -> Config {
        self.config
    }

    /// Which rule each `PAL_RULE_STATS` index counts.
    pub fn rule_counters(&self) -> &RuleCounters {
        &self.counters
    }

    /// The entries of each map this writer fills, both slots together (for the arrays:
    /// the indexes in use), from its own record of what it wrote, so no map is read. The
    /// arrays are left out while a slot's are unknown (adopted, not yet written).
    pub fn occupancy(&self) -> Vec<(&'static str, u64)> {
        let sum = |entries: fn(&SlotImage) -> usize| -> u64 {
            self.slots.iter().map(|s| entries(&s.image) as u64).sum()
        };
        let mut occupancy = vec![
            (map_names::CONFIG, 1),
            (map_names::LOCAL, sum(|i| i.local.len())),
            (map_names::REMOTE, sum(|i| i.remote.len())),
            (map_names::LPM, sum(|i| i.lpm.len())),
            (map_names::PEERS, sum(|i| i.peers.len())),
            (map_names::POLICY, sum(|i| i.policy.len())),
            (map_names::TABLE, sum(|i| i.table.len())),
        ];
        if self.slots.iter().all(|s| s.arrays_known) {
            occupancy.extend([
                (map_names::ROWS, sum(|i| i.rows.len())),
                (map_names::CELLS, sum(|i| i.cells.len())),
                (map_names::OUTCOMES, sum(|i| i.outcomes.len())),
            ]);
        }
        occupancy.push((map_names::RULE_STATS, u64::from(self.counters.len())));
        occupancy
    }

    /// Changes the run-time switches (everything but the generation).
    pub fn set_switches(
        &mut self,
        flags: u32,
        drop_event_mask: u32,
        allow_event_mask: u32,
    ) -> Result<(), WriteError> {
        let config = Config {
            flags,
            drop_event_mask,
            allow_event_mask,
            ..self.config
        };
        self.write_config(config)
    }

    /// Whether `PAL_CONFIG` still holds what this writer wrote last. If someone else moved
    /// it (another process writing the same pinned maps), returns what it holds now and
    /// takes the maps over again as [`Writer::adopt`] does: both slots count as unknown, so
    /// the next publish writes the slot packets do not use now in full, and flips from the
    /// generation found (with this writer's switches).
    pub fn check_config(&mut self) -> Result<Option<Config>, WriteError> {
        let found = self
            .maps
            .config
            .get(&0, 0)
            .map_err(|source| WriteError::Map {
                action: "read",
                name: map_names::CONFIG,
                source,
            })?;
        if found == self.config {
            return Ok(None);
        }
        self.config.generation = found.generation;
        for s in 0..2 {
            self.forget_slot(s);
            // Packets may still be reading a slot the other writer just retired.
            self.retired_at[s] = Some(Instant::now());
        }
        Ok(Some(found))
    }

    /// Sets how many conntrack entries each endpoint may hold (0: no budget).
    pub fn set_ct_budget(&mut self, ct_budget: u32) -> Result<(), WriteError> {
        let config = Config {
            ct_budget,
            ..self.config
        };
        self.write_config(config)
    }

    /// Writes `image` into the inactive slot and makes it the active one, comparing
    /// everything with what the slot holds. See [`Writer::publish_changes`].
    pub fn publish(
        &mut self,
        image: &Image,
        ifindex_of: &BTreeMap<ResourceKey, u32>,
        zero_counters: impl FnOnce(Range<u32>) -> Result<(), String>,
    ) -> Result<Published, WriteError> {
        self.publish_changes(image, &Changes::All, ifindex_of, zero_counters)
    }

    /// Writes `image` into the inactive slot and makes it the active one. `changes` says
    /// what changed since the image of the last publish (the compiler's report): the slot
    /// is brought up to date by writing only the entries changed since it was last written,
    /// the tables given new IDs or freed since (laid out in the holes freed tables left, see
    /// [`super::table_layout`]) and the outcomes appended since. On error the policy in force is unchanged
    /// (the inactive slot may be half-written, which nothing reads, and is known to need
    /// rewriting).
    ///
    /// Rule counter indexes are this writer's own (an earlier agent's counts may still sit
    /// at them): `zero_counters` is given the indexes handed out since it last succeeded, and
    /// must zero them, before the flip makes any packet count there.
    pub fn publish_changes(
        &mut self,
        image: &Image,
        changes: &Changes,
        ifindex_of: &BTreeMap<ResourceKey, u32>,
        zero_counters: impl FnOnce(Range<u32>) -> Result<(), String>,
    ) -> Result<Published, WriteError> {
        for state in &mut self.slots {
            state.behind.merge(changes);
        }
        let slot = 1 - self.active_slot();
        let s = usize::from(slot);
        self.wait_out_grace(s);
        let mut stats = Published::default();
        // Written before the flip; a failure leaves the slot unknown.
        if let Err(e) = self.write_slot(slot, image, ifindex_of, &mut stats) {
            self.forget_slot(s);
            return Err(e);
        }
        let handed_out = self.counters.len();
        if handed_out > self.counters_zeroed {
            zero_counters(self.counters_zeroed..handed_out).map_err(WriteError::Counters)?;
            self.counters_zeroed = handed_out;
        }
        let retiring = usize::from(self.active_slot());
        self.write_config(Config {
            generation: self.config.generation.wrapping_add(1),
            ..self.config
        })?;
        self.retired_at[retiring] = Some(Instant::now());
        stats.generation = self.config.generation;
        Ok(stats)
    }

    /// When the inactive slot may be brought up to the last publish ([`Writer::catch_up`]:
    /// once its grace period is over), if it is behind it; `None` when it is not, or when
    /// the maps hold no publish of this writer (after adoption, a failed write, or another
    /// writer's).
    pub fn catch_up_due(&self) -> Option<Instant> {
        let active = &self.slots[usize::from(self.active_slot())];
        let s = usize::from(1 - self.active_slot());
        let inactive = &self.slots[s];
        let nothing_behind = |state: &SlotState| {
            state.arrays_known && matches!(&state.behind, Changes::Keys(k) if k.is_empty())
        };
        // Each slot lays its tables out in its own holes, so their layouts may differ;
        // the changed table IDs are in `behind`.
        let level = nothing_behind(inactive)
            && inactive.outcomes == active.outcomes
            && inactive.bindings == active.bindings;
        if !nothing_behind(active) || level {
            return None;
        }
        Some(self.retired_at[s].map_or_else(Instant::now, |at| at + RETIRE_GRACE))
    }

    /// Writes `image` with `ifindex_of`, those of the last publish, into the inactive
    /// slot, so that the next publish writes only what changes after it. Nothing in force
    /// changes: packets read the other slot (waits out the grace period if called before
    /// [`Writer::catch_up_due`]). On error the slot is known to need writing in full, as
    /// after a failed publish, and the policy in force is the same.
    pub fn catch_up(
        &mut self,
        image: &Image,
        ifindex_of: &BTreeMap<ResourceKey, u32>,
    ) -> Result<Published, WriteError> {
        let slot = 1 - self.active_slot();
        let s = usize::from(slot);
        self.wait_out_grace(s);
        let mut stats = Published {
            generation: self.config.generation,
            ..Published::default()
        };
        if let Err(e) = self.write_slot(slot, image, ifindex_of, &mut stats) {
            self.forget_slot(s);
            return Err(e);
        }
        Ok(stats)
    }

    /// Sleeps until slot `s` may be written, if it was retired less than [`RETIRE_GRACE`]
    /// ago.
    fn wait_out_grace(&self, s: usize) {
        if let Some(retired) = self.retired_at[s] {
            let since = retired.elapsed();
            if since < RETIRE_GRACE {
                std::thread::sleep(RETIRE_GRACE - since);
            }
        }
    }

    /// After a failed write: what the slot's hash maps hold is read back (so that stale
    /// entries get deleted), the rest is unknown.
    fn forget_slot(&mut self, s: usize) {
        let held = self
            .read_slots()
            .map(|[slot0, slot1]| if s == 0 { slot0 } else { slot1 })
            .unwrap_or_default();
        self.slots[s] = SlotState::unknown(held);
    }

    fn bases(&self, slot: u8) -> ArrayBases {
        let m = &self.maps;
        ArrayBases {
            rows: u32::from(slot) * m.rows.len() / 2,
            cells: u32::from(slot) * m.cells.len() / 2,
            outcomes: u32::from(slot) * m.outcomes.len() / 2,
        }
    }

    /// Brings `slot` up to `image`: in full when it is behind by everything, else only
    /// what changed.
    fn write_slot(
        &mut self,
        slot: u8,
        image: &Image,
        ifindex_of: &BTreeMap<ResourceKey, u32>,
        stats: &mut Published,
    ) -> Result<(), WriteError> {
        let s = usize::from(slot);
        let mut state =
            std::mem::replace(&mut self.slots[s], SlotState::unknown(SlotImage::default()));
        let (bases, limits) = (self.bases(slot), self.limits);
        let written = match std::mem::take(&mut state.behind) {
            Changes::Keys(keys) if state.arrays_known => {
                let (changed, layout) = (&keys.tables, std::mem::take(&mut state.tables));
                match lay_out(image, slot, changed, &state.image, layout, bases, limits) {
                    Some(tables) => self
                        .write_slot_changes(slot, image, ifindex_of, &keys, tables, state, stats)?,
                    // The holes are too small for the new tables: packed again, they fit.
                    None => self.write_slot_in_full(slot, image, ifindex_of, state, stats)?,
                }
            }
            _ => self.write_slot_in_full(slot, image, ifindex_of, state, stats)?,
        };
        self.slots[s] = written;
        Ok(())
    }

    fn write_slot_in_full(
        &mut self,
        slot: u8,
        image: &Image,
        ifindex_of: &BTreeMap<ResourceKey, u32>,
        old: SlotState,
        stats: &mut Published,
    ) -> Result<SlotState, WriteError> {
        let bases = self.bases(slot);
        let new = encode(
            image,
            slot,
            ifindex_of,
            bases,
            self.limits,
            &mut self.counters,
        )?;
        let m = &mut self.maps;
        sync_hash(
            &mut m.local,
            map_names::LOCAL,
            &old.image.local,
            &new.local,
            stats,
        )?;
        sync_hash(
            &mut m.remote,
            map_names::REMOTE,
            &old.image.remote,
            &new.remote,
            stats,
        )?;
        sync_lpm(&mut m.lpm, &old.image.lpm, &new.lpm, stats)?;
        sync_hash(
            &mut m.peers,
            map_names::PEERS,
            &old.image.peers,
            &new.peers,
            stats,
        )?;
        sync_hash(
            &mut m.policy,
            map_names::POLICY,
            &old.image.policy,
            &new.policy,
            stats,
        )?;
        sync_hash(
            &mut m.table,
            map_names::TABLE,
            &old.image.table,
            &new.table,
            stats,
        )?;
        // After adoption or a failed write the arrays' contents are unknown.
        let held = old.arrays_known.then_some(&old.image);
        sync_arrays(m, bases, held, &new, [0; 3], stats)?;
        let endpoint_keys = image
            .endpoints
            .iter()
            .filter_map(|((endpoint, addr), local)| {
                let ifindex = *ifindex_of.get(endpoint)?;
                let (key, _) = local_entry(slot, *addr, ifindex, *local);
                Some(((endpoint.clone(), *addr), key))
            })
            .collect();
        Ok(SlotState {
            tables: SlotTables::packed(&new),
            image: new,
            arrays_known: true,
            behind: Changes::default(),
            bindings: ifindex_of.clone(),
            endpoint_keys,
            outcomes: image.outcomes.len(),
        })
    }

    /// Writes the changed tables where `tables` laid them out, the outcomes the slot does
    /// not have yet, then the entries `keys` names (and those of endpoints bound
    /// differently).
    #[allow(clippy::too_many_arguments)] // one step of write_slot, split out to be read
    fn write_slot_changes(
        &mut self,
        slot: u8,
        image: &Image,
        ifindex_of: &BTreeMap<ResourceKey, u32>,
        keys: &ChangedKeys,
        tables: TableWrites,
        mut state: SlotState,
        stats: &mut Published,
    ) -> Result<SlotState, WriteError> {
        let bases = self.bases(slot);
        let record = &mut state.image;

        // Tables and outcomes first: nothing refers to them until the entries below do.
        let outcomes = record.outcomes.len();
        for outcome in image.outcomes.iter().skip(state.outcomes) {
            push_outcome(record, outcome, &mut self.counters)?;
        }
        check_limits(record, self.limits)?;
        let m = &mut self.maps;
        let TableWrites {
            rows,
            cells,
            entries,
            layout,
        } = tables;
        set_array(
            &mut m.cells,
            map_names::CELLS,
            bases.cells,
            &mut record.cells,
            cells,
            stats,
        )?;
        set_array(
            &mut m.rows,
            map_names::ROWS,
            bases.rows,
            &mut record.rows,
            rows,
            stats,
        )?;
        sync_array(
            &mut m.outcomes,
            map_names::OUTCOMES,
            bases.outcomes,
            None,
            &record.outcomes,
            outcomes,
            stats,
        )?;
        state.tables = layout;
        let mut tables = Entries::default();
        for (key, value) in entries {
            tables.touch(key, record.table.get(&key).copied(), value);
        }
        tables.write(&mut m.table, map_names::TABLE, &mut record.table, stats)?;

        Entries::of_touched(&keys.exact, &image.exact, &record.remote, |addr, id| {
            remote_entry(slot, addr, id.unwrap_or(RemoteId(0)))
        })
        .write(&mut m.remote, map_names::REMOTE, &mut record.remote, stats)?;
        // Groups before the peers that join them (within the slot nothing is read yet, but
        // a failed write then leaves no peer in a group without a table).
        Entries::of_touched(
            &keys.groups,
            &image.groups,
            &record.policy,
            |entry, table| policy_entry(slot, entry, table.unwrap_or(TableId(0))),
        )
        .write(&mut m.policy, map_names::POLICY, &mut record.policy, stats)?;
        Entries::of_touched(&keys.peers, &image.peers, &record.peers, |entry, group| {
            peer_entry(slot, entry, group.unwrap_or(PeerGroup::DEFAULT))
        })
        .write(&mut m.peers, map_names::PEERS, &mut record.peers, stats)?;

        // Endpoints last: a new endpoint's local ID is complete before packets can get it.
        let mut endpoints: BTreeSet<(ResourceKey, IpAddr)> = keys.endpoints.clone();
        let rebound = ifindex_of
            .keys()
            .chain(state.bindings.keys())
            .filter(|k| ifindex_of.get(*k) != state.bindings.get(*k));
        for endpoint in rebound {
            endpoints.extend(of_endpoint(&image.endpoints, endpoint).cloned());
            endpoints.extend(of_endpoint(&state.endpoint_keys, endpoint).cloned());
        }
        let mut local = Entries::default();
        for (endpoint, addr) in &endpoints {
            let at = (endpoint.clone(), *addr);
            if let Some(old) = state.endpoint_keys.remove(&at) {
                local.touch(old, record.local.get(&old).copied(), None);
            }
            let bound = image.endpoints.get(&at).zip(ifindex_of.get(endpoint));
            if let Some((id, ifindex)) = bound {
                let (key, value) = local_entry(slot, *addr, *ifindex, *id);
                local.touch(key, record.local.get(&key).copied(), Some(value));
                state.endpoint_keys.insert(at, key);
            }
        }
        local.write(&mut m.local, map_names::LOCAL, &mut record.local, stats)?;

        state.behind = Changes::default();
        state.bindings = ifindex_of.clone();
        state.outcomes = image.outcomes.len();
        Ok(state)
    }

    /// What the maps hold for `slot`, read back from the kernel (arrays as far as the
    /// writer has filled them): for checking that what was written is what was meant.
    pub fn held(&self, slot: u8) -> Result<SlotImage, WriteError> {
        let [slot0, slot1] = self.read_slots()?;
        let mut held = if slot == 0 { slot0 } else { slot1 };
        let record = &self.slots[usize::from(slot)].image;
        let bases = self.bases(slot);
        held.rows = read_array(
            &self.maps.rows,
            map_names::ROWS,
            bases.rows,
            record.rows.len(),
        )?;
        held.cells = read_array(
            &self.maps.cells,
            map_names::CELLS,
            bases.cells,
            record.cells.len(),
        )?;
        held.outcomes = read_array(
            &self.maps.outcomes,
            map_names::OUTCOMES,
            bases.outcomes,
            record.outcomes.len(),
        )?;
        Ok(held)
    }

    /// The slot's share of each array map.
    pub fn array_layout(&self, slot: u8) -> (ArrayBases, ArrayLimits) {
        (self.bases(slot), self.limits)
    }

    fn write_config(&mut self, config: Config) -> Result<(), WriteError> {
        self.maps
            .config
            .set(0, config, 0)
            .map_err(|source| WriteError::Map {
                action: "write",
                name: map_names::CONFIG,
                source,
            })?;
        self.config = config;
        Ok(())
    }

    /// The hash-map entries the maps hold, per slot: one pass over each map.
    fn read_slots(&self) -> Result<[SlotImage; 2], WriteError> {
        let m = &self.maps;
        let [local0, local1] = read_hash(&m.local, map_names::LOCAL, |k| k.slot)?;
        let [remote0, remote1] = read_hash(&m.remote, map_names::REMOTE, |k| k.slot)?;
        let [peers0, peers1] = read_hash(&m.peers, map_names::PEERS, |k| k.slot)?;
        let [policy0, policy1] = read_hash(&m.policy, map_names::POLICY, |k| k.slot)?;
        let [table0, table1] = read_hash(&m.table, map_names::TABLE, |k| k.slot)?;
        let mut slots = [
            SlotImage {
                local: local0,
                remote: remote0,
                peers: peers0,
                policy: policy0,
                table: table0,
                ..SlotImage::default()
            },
            SlotImage {
                local: local1,
                remote: remote1,
                peers: peers1,
                policy: policy1,
                table: table1,
                ..SlotImage::default()
            },
        ];
        for entry in m.lpm.iter() {
            let (key, value) = entry.map_err(|source| WriteError::Map {
                action: "read",
                name: map_names::LPM,
                source,
            })?;
            if let Some(slot) = slots.get_mut(usize::from(key.data().slot)) {
                slot.lpm.insert((key.prefix_len(), key.data()), value);
            }
        }
        Ok(slots)
    }
}

/// The entries of one hash map that an update touches: what the slot held, what it gets.
struct Entries<K, V> {
    old: HashMap<K, V>,
    new: HashMap<K, V>,
}

impl<K, V> Default for Entries<K, V> {
    fn default() -> Self {
        Entries {
            old: HashMap::new(),
            new: HashMap::new(),
        }
    }
}

impl<K: Pod + Eq + Hash, V: Pod + PartialEq> Entries<K, V> {
    /// The map entries of the image's `touched` keys: as `image` has them now, deleted
    /// where it has them no more. `entry` makes the map's key and value of an image entry
    /// (its value `None` for one that is gone: only the key counts then).
    fn of_touched<I: Ord + Copy, T: Copy>(
        touched: &BTreeSet<I>,
        image: &BTreeMap<I, T>,
        held: &HashMap<K, V>,
        entry: impl Fn(I, Option<T>) -> (K, V),
    ) -> Self {
        let mut entries = Entries::default();
        for &i in touched {
            let now = image.get(&i).copied();
            let (key, value) = entry(i, now);
            entries.touch(key, held.get(&key).copied(), now.map(|_| value));
        }
        entries
    }

    fn touch(&mut self, key: K, held: Option<V>, wanted: Option<V>) {
        if let Some(v) = held {
            self.old.insert(key, v);
        }
        match wanted {
            Some(v) => self.new.insert(key, v),
            None => self.new.remove(&key),
        };
    }

    /// Writes the difference, and records it as what the slot holds.
    fn write(
        self,
        map: &mut BpfHashMap<MapData, K, V>,
        name: &'static str,
        record: &mut HashMap<K, V>,
        stats: &mut Published,
    ) -> Result<(), WriteError> {
        sync_hash(map, name, &self.old, &self.new, stats)?;
        for key in self.old.keys().filter(|k| !self.new.contains_key(k)) {
            record.remove(key);
        }
        record.extend(self.new);
        Ok(())
    }
}

/// The keys of `map` that belong to `endpoint`.
fn of_endpoint<'a, V>(
    map: &'a BTreeMap<(ResourceKey, IpAddr), V>,
    endpoint: &'a ResourceKey,
) -> impl Iterator<Item = &'a (ResourceKey, IpAddr)> + 'a {
    map.range((endpoint.clone(), IpAddr::V4(Ipv4Addr::UNSPECIFIED))..)
        .map(|(k, _)| k)
        .take_while(move |(e, _)| e == endpoint)
}

fn read_array<V: Pod>(
    map: &Array<MapData, V>,
    name: &'static str,
    base: u32,
    len: usize,
) -> Result<Vec<V>, WriteError> {
    (0..len)
        .map(|i| {
            let index = base.saturating_add(u32::try_from(i).unwrap_or(u32::MAX));
            map.get(&index, 0).map_err(|source| WriteError::Map {
                action: "read",
                name,
                source,
            })
        })
        .collect()
}

fn read_hash<K: Pod + Eq + Hash, V: Pod>(
    map: &BpfHashMap<MapData, K, V>,
    name: &'static str,
    slot_of: impl Fn(&K) -> u8,
) -> Result<[HashMap<K, V>; 2], WriteError> {
    let mut out = [HashMap::new(), HashMap::new()];
    for entry in map.iter() {
        let (k, v) = entry.map_err(|source| WriteError::Map {
            action: "read",
            name,
            source,
        })?;
        // Keys of no slot (none are written) are left alone.
        if let Some(slot) = out.get_mut(usize::from(slot_of(&k))) {
            slot.insert(k, v);
        }
    }
    Ok(out)
}

/// Writes `entries` into `map` in one batch.
fn write_batch<K: Pod, V: Pod>(
    map: &MapData,
    name: &'static str,
    (keys, values): (Vec<K>, Vec<V>),
    stats: &mut Published,
) -> Result<(), WriteError> {
    if keys.is_empty() {
        return Ok(());
    }
    map_batch::update(map.fd().as_fd(), &keys, &values).map_err(|io_error| WriteError::Map {
        action: "write",
        name,
        source: MapError::SyscallError(SyscallError {
            call: "bpf_map_update_batch",
            io_error,
        }),
    })?;
    stats.written += keys.len();
    Ok(())
}

/// Inserts what is new or changed, then deletes what is gone.
fn sync_hash<K: Pod + Eq + Hash, V: Pod + PartialEq>(
    map: &mut BpfHashMap<MapData, K, V>,
    name: &'static str,
    old: &HashMap<K, V>,
    new: &HashMap<K, V>,
    stats: &mut Published,
) -> Result<(), WriteError> {
    let changed = new
        .iter()
        .filter(|(k, v)| old.get(k) != Some(v))
        .map(|(k, v)| (*k, *v))
        .unzip();
    write_batch(map.map(), name, changed, stats)?;
    for k in old.keys().filter(|k| !new.contains_key(k)) {
        match map.remove(k) {
            Ok(()) | Err(MapError::KeyNotFound) => stats.deleted += 1,
            Err(source) => {
                return Err(WriteError::Map {
                    action: "delete from",
                    name,
                    source,
                });
            }
        }
    }
    Ok(())
}

fn sync_lpm(
    map: &mut LpmTrie<MapData, LpmData, RemoteValue>,
    old: &HashMap<LpmKey, RemoteValue>,
    new: &HashMap<LpmKey, RemoteValue>,
    stats: &mut Published,
) -> Result<(), WriteError> {
    let name = map_names::LPM;
    for (&(len, data), v) in new {
        if old.get(&(len, data)) != Some(v) {
            map.insert(&Key::new(len, data), v, 0)
                .map_err(|source| WriteError::Map {
                    action: "write",
                    name,
                    source,
                })?;
            stats.written += 1;
        }
    }
    for &(len, data) in old.keys().filter(|k| !new.contains_key(k)) {
        match map.remove(&Key::new(len, data)) {
            Ok(()) | Err(MapError::KeyNotFound) => stats.deleted += 1,
            Err(source) => {
                return Err(WriteError::Map {
                    action: "delete from",
                    name,
                    source,
                });
            }
        }
    }
    Ok(())
}

/// Writes the slot's rows, cells and outcomes of `new` from the lengths `from` on, where
/// they differ from `held` (all of them when `held` is unknown).
fn sync_arrays(
    m: &mut PolicyMaps,
    bases: ArrayBases,
    held: Option<&SlotImage>,
    new: &SlotImage,
    from: [usize; 3],
    stats: &mut Published,
) -> Result<(), WriteError> {
    let [rows, cells, outcomes] = from;
    sync_array(
        &mut m.rows,
        map_names::ROWS,
        bases.rows,
        held.map(|h| &h.rows),
        &new.rows,
        rows,
        stats,
    )?;
    sync_array(
        &mut m.cells,
        map_names::CELLS,
        bases.cells,
        held.map(|h| &h.cells),
        &new.cells,
        cells,
        stats,
    )?;
    sync_array(
        &mut m.outcomes,
        map_names::OUTCOMES,
        bases.outcomes,
        held.map(|h| &h.outcomes),
        &new.outcomes,
        outcomes,
        stats,
    )
}

/// Writes `entries` (slot-relative index, value) into the slot's share of an array map and
/// its record `held`, skipping those it already holds. One batch: a policy change writes
/// thousands of rows and cells, and one system call each was most of its write. (A failed
/// write leaves the slot's arrays unknown, so `held` need not say which entries made it.)
fn set_array<V: Pod + PartialEq>(
    map: &mut Array<MapData, V>,
    name: &'static str,
    base: u32,
    held: &mut Vec<V>,
    entries: Vec<(usize, V)>,
    stats: &mut Published,
) -> Result<(), WriteError> {
    let mut indexes = Vec::with_capacity(entries.len());
    let mut values = Vec::with_capacity(entries.len());
    for (i, v) in entries {
        if held.get(i) == Some(&v) {
            continue;
        }
        indexes.push(base.saturating_add(u32::try_from(i).unwrap_or(u32::MAX)));
        values.push(v);
        if held.len() <= i {
            held.resize(i + 1, v);
        }
        held[i] = v;
    }
    write_batch(map.map(), name, (indexes, values), stats)
}

/// Writes the entries of `new` from index `from` on that differ from `old` (all of them
/// when `old` is unknown). Entries past the end of `new` are left: nothing refers to them.
fn sync_array<V: Pod + PartialEq>(
    map: &mut Array<MapData, V>,
    name: &'static str,
    base: u32,
    old: Option<&Vec<V>>,
    new: &[V],
    from: usize,
    stats: &mut Published,
) -> Result<(), WriteError> {
    let changed = new
        .iter()
        .enumerate()
        .skip(from)
        .filter(|&(i, v)| old.and_then(|o| o.get(i)) != Some(v))
        .map(|(i, v)| {
            (
                base.saturating_add(u32::try_from(i).unwrap_or(u32::MAX)),
                *v,
            )
        })
        .unzip();
    write_batch(map.map(), name, changed, stats)
}
