//! Writes compiled policy into the kernel maps: incremental and atomic.
//!
//! Two slots: packets use slot `generation % 2`. A new image goes into the other slot, as
//! the difference from what that slot last held, and then one write of
//! `PAL_CONFIG[0].generation` switches every later packet to it. A packet reads the
//! generation once, so it sees the old policy or the new, never a mix. The slot just retired
//! is not written again until [`RETIRE_GRACE`] has passed, which is far longer than any
//! packet takes in the program that read the old generation.
//!
//! After a restart the maps are adopted, not cleared: the active slot stays as the earlier
//! agent left it, so enforcement never stops; the inactive slot's hash entries are read
//! back (so stale ones get deleted); its arrays count as unknown and are written in full.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::ops::Range;
use std::time::{Duration, Instant};

use aya::Pod;
use aya::maps::lpm_trie::Key;
use aya::maps::{Array, HashMap as BpfHashMap, LpmTrie, MapData, MapError};
use palisade_common::{
    Cell, Config, LocalKey, LocalValue, LpmData, Outcome, PolicyKey, PolicyValue, RemoteKey,
    RemoteValue, Row, TableKey, TableValue, capacity, map_names,
};

use crate::compile::Image;
use crate::model::ResourceKey;

use super::slot_image::{
    ArrayBases, ArrayLimits, EncodeError, LpmKey, RuleCounters, SlotImage, encode,
};

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
    policy: BpfHashMap<MapData, PolicyKey, PolicyValue>,
    table: BpfHashMap<MapData, TableKey, TableValue>,
    rows: Array<MapData, Row>,
    cells: Array<MapData, Cell>,
    outcomes: Array<MapData, Outcome>,
}

fn take<M>(ebpf: &mut aya::Ebpf, name: &'static str) -> Result<M, WriteError>
where
    M: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = ebpf.take_map(name).ok_or(WriteError::MissingMap(name))?;
    M::try_from(map).map_err(|source| WriteError::MapType { name, source })
}

impl PolicyMaps {
    pub fn take(ebpf: &mut aya::Ebpf) -> Result<PolicyMaps, WriteError> {
        Ok(PolicyMaps {
            config: take(ebpf, map_names::CONFIG)?,
            local: take(ebpf, map_names::LOCAL)?,
            remote: take(ebpf, map_names::REMOTE)?,
            lpm: take(ebpf, map_names::LPM)?,
            policy: take(ebpf, map_names::POLICY)?,
            table: take(ebpf, map_names::TABLE)?,
            rows: take(ebpf, map_names::ROWS)?,
            cells: take(ebpf, map_names::CELLS)?,
            outcomes: take(ebpf, map_names::OUTCOMES)?,
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

/// What a slot holds, as far as the writer knows. Its arrays are unknown after adoption.
#[derive(Default)]
struct SlotState {
    image: SlotImage,
    arrays_known: bool,
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
        let mut writer = Writer {
            maps,
            config,
            slots: Default::default(),
            retired_at: [None, None],
            limits,
            counters: RuleCounters::new(capacity::RULE_STATS as usize),
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

    /// Changes the run-time switches (everything but the generation).
    pub fn set_switches(&mut self, flags: u32, drop_event_mask: u32) -> Result<(), WriteError> {
        let config = Config {
            flags,
            drop_event_mask,
            ..self.config
        };
        self.write_config(config)
    }

    /// Writes `image` into the inactive slot and makes it the active one. On error the
    /// policy in force is unchanged (the inactive slot may be half-written, which nothing
    /// reads, and is known to need rewriting).
    ///
    /// Rule counter indexes are this writer's own (an earlier agent's counts may still sit
    /// at them): `zero_counters` is given the indexes handed out since it last succeeded, and
    /// must zero them, before the flip makes any packet count there.
    pub fn publish(
        &mut self,
        image: &Image,
        ifindex_of: &BTreeMap<ResourceKey, u32>,
        zero_counters: impl FnOnce(Range<u32>) -> Result<(), String>,
    ) -> Result<Published, WriteError> {
        let slot = 1 - self.active_slot();
        let s = usize::from(slot);
        let bases = ArrayBases {
            rows: u32::from(slot) * self.maps.rows.len() / 2,
            cells: u32::from(slot) * self.maps.cells.len() / 2,
            outcomes: u32::from(slot) * self.maps.outcomes.len() / 2,
        };
        let new = encode(
            image,
            slot,
            ifindex_of,
            bases,
            self.limits,
            &mut self.counters,
        )?;

        if let Some(retired) = self.retired_at[s] {
            let since = retired.elapsed();
            if since < RETIRE_GRACE {
                std::thread::sleep(RETIRE_GRACE - since);
            }
        }
        let state = std::mem::take(&mut self.slots[s]);
        let mut stats = Published::default();
        // Written before the flip; a failure leaves the slot unknown.
        let result = self.write_slot(slot, &state, &new, &mut stats);
        if let Err(e) = result {
            self.slots[s] = SlotState {
                image: self
                    .read_slots()
                    .map(|[slot0, slot1]| if s == 0 { slot0 } else { slot1 })
                    .unwrap_or_default(),
                arrays_known: false,
            };
            return Err(e);
        }
        self.slots[s] = SlotState {
            image: new,
            arrays_known: true,
        };
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

    fn write_slot(
        &mut self,
        slot: u8,
        old: &SlotState,
        new: &SlotImage,
        stats: &mut Published,
    ) -> Result<(), WriteError> {
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
        let known = old.arrays_known;
        let base = |len: u32| u32::from(slot) * len / 2;
        let rows_base = base(m.rows.len());
        let cells_base = base(m.cells.len());
        let outcomes_base = base(m.outcomes.len());
        sync_array(
            &mut m.rows,
            map_names::ROWS,
            rows_base,
            known.then_some(&old.image.rows[..]),
            &new.rows,
            stats,
        )?;
        sync_array(
            &mut m.cells,
            map_names::CELLS,
            cells_base,
            known.then_some(&old.image.cells[..]),
            &new.cells,
            stats,
        )?;
        sync_array(
            &mut m.outcomes,
            map_names::OUTCOMES,
            outcomes_base,
            known.then_some(&old.image.outcomes[..]),
            &new.outcomes,
            stats,
        )?;
        Ok(())
    }

    /// The hash-map entries the maps hold, per slot: one pass over each map.
    fn read_slots(&self) -> Result<[SlotImage; 2], WriteError> {
        let m = &self.maps;
        let [local0, local1] = read_hash(&m.local, map_names::LOCAL, |k| k.slot)?;
        let [remote0, remote1] = read_hash(&m.remote, map_names::REMOTE, |k| k.slot)?;
        let [policy0, policy1] = read_hash(&m.policy, map_names::POLICY, |k| k.slot)?;
        let [table0, table1] = read_hash(&m.table, map_names::TABLE, |k| k.slot)?;
        let mut slots = [
            SlotImage {
                local: local0,
                remote: remote0,
                policy: policy0,
                table: table0,
                ..SlotImage::default()
            },
            SlotImage {
                local: local1,
                remote: remote1,
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

/// Inserts what is new or changed, then deletes what is gone.
fn sync_hash<K: Pod + Eq + Hash, V: Pod + PartialEq>(
    map: &mut BpfHashMap<MapData, K, V>,
    name: &'static str,
    old: &HashMap<K, V>,
    new: &HashMap<K, V>,
    stats: &mut Published,
) -> Result<(), WriteError> {
    for (k, v) in new {
        if old.get(k) != Some(v) {
            map.insert(k, v, 0).map_err(|source| WriteError::Map {
                action: "write",
                name,
                source,
            })?;
            stats.written += 1;
        }
    }
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

/// Writes the entries of `new` that differ from `old` (all of them when `old` is unknown).
/// Entries past the end of `new` are left: nothing refers to them.
fn sync_array<V: Pod + PartialEq>(
    map: &mut Array<MapData, V>,
    name: &'static str,
    base: u32,
    old: Option<&[V]>,
    new: &[V],
    stats: &mut Published,
) -> Result<(), WriteError> {
    for (i, v) in new.iter().enumerate() {
        if old.and_then(|o| o.get(i)) == Some(v) {
            continue;
        }
        let index = base.saturating_add(u32::try_from(i).unwrap_or(u32::MAX));
        map.set(index, v, 0).map_err(|source| WriteError::Map {
            action: "write",
            name,
            source,
        })?;
        stats.written += 1;
    }
    Ok(())
}
