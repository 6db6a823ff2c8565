//! The programs' per-CPU counters, summed over CPUs: per endpoint (by host veth ifindex),
//! per rule (by the index [`super::slot_image::RuleCounters`] gave it), and per reason.

use std::ops::Range;
use std::path::Path;

use aya::Pod;

use aya::maps::{MapData, MapError, PerCpuArray, PerCpuHashMap, PerCpuValues};
use palisade_common::{Counter, EndpointStats, EndpointStatsKey, RuleStats, STAT_COUNT, map_names};

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
}

pub struct CounterMaps {
    endpoints: PerCpuHashMap<MapData, EndpointStatsKey, EndpointStats>,
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
            endpoints: typed_map::take(ebpf, map_names::EP_STATS)?,
            rules: typed_map::take(ebpf, map_names::RULE_STATS)?,
            reasons: typed_map::take(ebpf, map_names::STATS)?,
        })
    }

    /// Opens the maps an agent pinned under `pin_dir` (for `palisade stats`).
    pub fn open_pinned(pin_dir: &Path) -> Result<CounterMaps, CounterError> {
        Ok(CounterMaps {
            endpoints: typed_map::open_pinned(pin_dir, map_names::EP_STATS)?,
            rules: typed_map::open_pinned(pin_dir, map_names::RULE_STATS)?,
            reasons: typed_map::open_pinned(pin_dir, map_names::STATS)?,
        })
    }

    /// Starts counting for the host veth `ifindex` (the programs only add to entries that
    /// exist). Keeps an existing entry: counts survive agent restarts.
    pub fn track_endpoint(&mut self, ifindex: u32) -> Result<(), CounterError> {
        let key = EndpointStatsKey { ifindex };
        if self.endpoints.get(&key, 0).is_ok() {
            return Ok(());
        }
        let cpus =
            aya::util::nr_cpus().map_err(|(what, e)| CounterError::Cpus(format!("{what}: {e}")))?;
        let zero = PerCpuValues::try_from(vec![EndpointStats::default(); cpus])
            .map_err(|e| CounterError::Cpus(e.to_string()))?;
        self.endpoints
            .insert(key, zero, 0)
            .map_err(map_err("write", map_names::EP_STATS))
    }

    /// Stops counting for `ifindex` (its interface is gone).
    pub fn forget_endpoint(&mut self, ifindex: u32) -> Result<(), CounterError> {
        match self.endpoints.remove(&EndpointStatsKey { ifindex }) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_err("delete from", map_names::EP_STATS)(e)),
        }
    }

    /// Every tracked endpoint's counts, by ifindex.
    pub fn endpoints(&self) -> Result<Vec<(u32, EndpointStats)>, CounterError> {
        let mut out = Vec::new();
        for entry in self.endpoints.iter() {
            let (key, values) = entry.map_err(map_err("read", map_names::EP_STATS))?;
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
