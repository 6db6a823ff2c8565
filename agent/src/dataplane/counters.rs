//! The programs' per-CPU counters, summed over CPUs: per endpoint (by host veth ifindex,
//! through the index `PAL_EP_INDEX` gives it in `PAL_EP_STATS`), per rule (by the index
//! [`super::slot_image::RuleCounters`] gave it), and per reason.

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::Path;

use aya::Pod;

use aya::maps::{HashMap, MapData, MapError, PerCpuArray, PerCpuValues};
use palisade_common::{
    Counter, EndpointIndex, EndpointIndexKey, EndpointStats, RuleStats, STAT_COUNT, map_names,
};

use super::typed_map::{self, MapOpenError};

#[derive(Debug, thiserror::Error)]
pub enum CounterError {
    #[error(transparent)]
    Open(#[from] MapOpenError),
    #[error("cannot count the possible CPUs: {0}")]
    Cpus(String),
    #[error("cannot {action} map `{name}`: {source}")]
    Map {
        action: &'static str,
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error(
        "all {0} endpoint counters of `PAL_EP_STATS` are in use; give it more with --map-size \
         or --max-endpoints"
    )]
    EndpointsFull(u32),
}

pub struct CounterMaps {
    endpoint_indexes: HashMap<MapData, EndpointIndexKey, EndpointIndex>,
    endpoints: PerCpuArray<MapData, EndpointStats>,
    /// The indexes `endpoint_indexes` holds, read from the map when the first endpoint is
    /// tracked (readers such as `palisade stats` never need it); this process is then the
    /// only writer (the host lock).
    indexes_in_use: Option<BTreeSet<u32>>,
    rules: PerCpuArray<MapData, RuleStats>,
    reasons: PerCpuArray<MapData, Counter>,
}

fn map_err(action: &'static str, name: &'static str) -> impl Fn(MapError) -> CounterError {
    move |source| CounterError::Map {
        action,
        name,
        source,
    }
}

impl CounterMaps {
    /// Takes the counter maps out of a loaded object.
    pub fn take(ebpf: &mut aya::Ebpf) -> Result<CounterMaps, CounterError> {
        Ok(CounterMaps {
            endpoint_indexes: typed_map::take(ebpf, map_names::EP_INDEX)?,
            endpoints: typed_map::take(ebpf, map_names::EP_STATS)?,
            indexes_in_use: None,
            rules: typed_map::take(ebpf, map_names::RULE_STATS)?,
            reasons: typed_map::take(ebpf, map_names::STATS)?,
        })
    }

    /// Opens the maps an agent pinned under `pin_dir` (for `palisade stats`).
    pub fn open_pinned(pin_dir: &Path) -> Result<CounterMaps, CounterError> {
        Ok(CounterMaps {
            endpoint_indexes: typed_map::open_pinned(pin_dir, map_names::EP_INDEX)?,
            endpoints: typed_map::open_pinned(pin_dir, map_names::EP_STATS)?,
            indexes_in_use: None,
            rules: typed_map::open_pinned(pin_dir, map_names::RULE_STATS)?,
            reasons: typed_map::open_pinned(pin_dir, map_names::STATS)?,
        })
    }

    /// Starts counting for the host veth `ifindex` (the programs only count interfaces
    /// with an index): gives it the lowest free `PAL_EP_STATS` index, zeroed first, since a
    /// forgotten endpoint's counts may sit there. Keeps an existing index: counts survive
    /// agent restarts.
    pub fn track_endpoint(&mut self, ifindex: u32) -> Result<(), CounterError> {
        let key = EndpointIndexKey { ifindex };
        if self.endpoint_indexes.get(&key, 0).is_ok() {
            return Ok(());
        }
        let capacity = self.endpoints.len();
        let in_use = self.indexes_in_use()?;
        let index = (0..capacity)
            .find(|i| !in_use.contains(i))
            .ok_or(CounterError::EndpointsFull(capacity))?;
        self.endpoints
            .set(index, zeroed()?, 0)
            .map_err(map_err("write", map_names::EP_STATS))?;
        self.endpoint_indexes
            .insert(key, EndpointIndex::new(index), 0)
            .map_err(map_err("write", map_names::EP_INDEX))?;
        self.indexes_in_use()?.insert(index);
        Ok(())
    }

    /// Stops counting for `ifindex` (its interface is gone, its programs detached) and
    /// frees its index. Its conntrack entries may still name the index; the next
    /// generation, which comes with any interface attached afresh, re-decides them.
    pub fn forget_endpoint(&mut self, ifindex: u32) -> Result<(), CounterError> {
        let key = EndpointIndexKey { ifindex };
        let index = match self.endpoint_indexes.get(&key, 0) {
            Ok(EndpointIndex { index, .. }) => index,
            Err(MapError::KeyNotFound) => return Ok(()),
            Err(e) => return Err(map_err("read", map_names::EP_INDEX)(e)),
        };
        match self.endpoint_indexes.remove(&key) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(map_err("delete from", map_names::EP_INDEX)(e)),
        }
        self.indexes_in_use()?.remove(&index);
        Ok(())
    }

    fn indexes_in_use(&mut self) -> Result<&mut BTreeSet<u32>, CounterError> {
        if self.indexes_in_use.is_none() {
            let mut in_use = BTreeSet::new();
            for entry in self.endpoint_indexes.iter() {
                let (_, EndpointIndex { index, .. }) =
                    entry.map_err(map_err("read", map_names::EP_INDEX))?;
                in_use.insert(index);
            }
            self.indexes_in_use = Some(in_use);
        }
        Ok(self.indexes_in_use.get_or_insert_default())
    }

    /// Every tracked endpoint's counts, by ifindex.
    pub fn endpoints(&self) -> Result<Vec<(u32, EndpointStats)>, CounterError> {
        let mut out = Vec::new();
        for entry in self.endpoint_indexes.iter() {
            let (key, EndpointIndex { index, .. }) =
                entry.map_err(map_err("read", map_names::EP_INDEX))?;
            let values = self
                .endpoints
                .get(&index, 0)
                .map_err(map_err("read", map_names::EP_STATS))?;
            out.push((key.ifindex, sum_endpoint(&values)));
        }
        out.sort_by_key(|(i, _)| *i);
        Ok(out)
    }

    /// The counts of rule counter `index`.
    pub fn rule(&self, index: u32) -> Result<RuleStats, CounterError> {
        let values = self
            .rules
            .get(&index, 0)
            .map_err(map_err("read", map_names::RULE_STATS))?;
        Ok(values
            .iter()
            .fold(RuleStats::default(), |sum, cpu| sum + *cpu))
    }

    /// Zeroes the rule counters at `indexes` (handed out afresh by each agent, so an
    /// earlier agent's counts may sit there).
    pub fn zero_rules(&mut self, indexes: Range<u32>) -> Result<(), CounterError> {
        for index in indexes {
            self.rules
                .set(index, zeroed()?, 0)
                .map_err(map_err("write", map_names::RULE_STATS))?;
        }
        Ok(())
    }

    /// Packets per `STAT_*` reason.
    pub fn reasons(&self) -> Result<[u64; STAT_COUNT as usize], CounterError> {
        let mut out = [0u64; STAT_COUNT as usize];
        for (i, slot) in out.iter_mut().enumerate() {
            let index = u32::try_from(i).unwrap_or(u32::MAX);
            let values = self
                .reasons
                .get(&index, 0)
                .map_err(map_err("read", map_names::STATS))?;
            *slot = values.iter().map(|c| c.packets).sum();
        }
        Ok(out)
    }
}

/// A zero value for every possible CPU.
fn zeroed<T: Pod + Default + Clone>() -> Result<PerCpuValues<T>, CounterError> {
    let cpus =
        aya::util::nr_cpus().map_err(|(what, e)| CounterError::Cpus(format!("{what}: {e}")))?;
    PerCpuValues::try_from(vec![T::default(); cpus]).map_err(|e| CounterError::Cpus(e.to_string()))
}

fn sum_endpoint(values: &PerCpuValues<EndpointStats>) -> EndpointStats {
    values
        .iter()
        .fold(EndpointStats::default(), |sum, cpu| sum + *cpu)
}
