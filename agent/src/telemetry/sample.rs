//! What the kernel side counted, read at scrape time from the pinned maps through
//! descriptors of the scraper's own (the agent's main loop keeps its own): the per-CPU
//! counters, summed; the maps' capacities; and the entries of the maps the kernel fills,
//! counted by a census that runs at most once per [`CENSUS_INTERVAL`], however often the
//! agent is scraped.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use aya::maps::MapError;
use aya::maps::MapInfo;
use palisade_common::{CtUsage, EndpointStats, RuleStats, map_names};

use crate::dataplane::conntrack::{Conntrack, ConntrackError};
use crate::dataplane::counters::{CounterError, CounterMaps};
use crate::dataplane::map_census::Census;
use crate::dataplane::map_pin_dir;

/// The least time between two censuses of the kernel-filled maps. A census of a full
/// conntrack map (262,144 entries) is a few dozen bpf(2) calls copying about 16 MB: cheap
/// once in a while, wasteful on every scrape.
pub const CENSUS_INTERVAL: Duration = Duration::from_secs(30);

/// The maps whose entries the kernel adds (and the LRU removes), so that only a census
/// knows how many there are.
const KERNEL_FILLED: [&str; 2] = [map_names::CT, map_names::FRAGS];

#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error(transparent)]
    Counters(#[from] CounterError),
    #[error("cannot open the pinned map {path}: {source}")]
    Open {
        path: std::path::PathBuf,
        #[source]
        source: MapError,
    },
    #[error(transparent)]
    Conntrack(#[from] ConntrackError),
    #[error("cannot count the entries of {map}: {source}")]
    Census {
        map: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// One endpoint's counts, by host veth ifindex.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointSample {
    pub stats: EndpointStats,
    /// Its conntrack entries (against its budget) and the evictions the sweeps found.
    pub conntrack: CtUsage,
}

/// One scrape's reading of the kernel side.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelSample {
    pub endpoints: BTreeMap<u32, EndpointSample>,
    /// The rule counters asked for, by index.
    pub rules: Vec<(u32, RuleStats)>,
    /// Packets per `STAT_*` index (all of them).
    pub reasons: Vec<u64>,
    /// `max_entries` of each map that has entries (not the ring buffer).
    pub capacities: Vec<(&'static str, u32)>,
    /// Entries of the maps that only a walk can count: the kernel-filled ones at the last
    /// census, and the endpoint counters read just now.
    pub counted: Vec<(&'static str, u64)>,
}

/// Reads the kernel side of one agent's pins.
pub struct Sampler {
    counters: CounterMaps,
    conntrack: Conntrack,
    capacities: Vec<(&'static str, u32)>,
    census: Vec<(&'static str, Census)>,
    census_interval: Duration,
    last_census: Option<(Instant, Vec<(&'static str, u64)>)>,
}

impl Sampler {
    /// Opens the maps pinned under `pin_dir` (`<bpffs>/palisade/<abi>`).
    pub fn open(pin_dir: &Path) -> Result<Sampler, SampleError> {
        let maps = map_pin_dir(pin_dir);
        let mut capacities = Vec::new();
        for name in map_names::ALL {
            if name == map_names::EVENTS {
                continue;
            }
            let path = maps.join(name);
            let info =
                MapInfo::from_pin(&path).map_err(|source| SampleError::Open { path, source })?;
            capacities.push((name, info.max_entries()));
        }
        let mut census = Vec::new();
        for name in KERNEL_FILLED {
            let path = maps.join(name);
            let map =
                Census::open_pinned(&path).map_err(|source| SampleError::Open { path, source })?;
            census.push((name, map));
        }
        Ok(Sampler {
            counters: CounterMaps::open_pinned(pin_dir)?,
            conntrack: Conntrack::open_pinned(pin_dir)?,
            capacities,
            census,
            census_interval: CENSUS_INTERVAL,
            last_census: None,
        })
    }

    /// The same sampler with another least time between censuses.
    pub fn with_census_interval(self, census_interval: Duration) -> Sampler {
        Sampler {
            census_interval,
            ..self
        }
    }

    /// Reads every counter, and the rule counters at `rules` (indexes).
    pub fn sample(
        &mut self,
        rules: impl Iterator<Item = u32>,
    ) -> Result<KernelSample, SampleError> {
        let usage = self.conntrack.usage()?;
        let endpoints: BTreeMap<u32, EndpointSample> = self
            .counters
            .endpoints()?
            .into_iter()
            .map(|(ifindex, stats)| {
                let conntrack = usage.get(&ifindex).copied().unwrap_or_default();
                (ifindex, EndpointSample { stats, conntrack })
            })
            .collect();
        let mut rule_counts = Vec::new();
        for index in rules {
            rule_counts.push((index, self.counters.rule(index)?));
        }
        let reasons = self.counters.reasons()?.to_vec();
        let mut counted = self.census()?;
        // One index per endpoint, and one array slot in use per index.
        counted.push((map_names::EP_INDEX, endpoints.len() as u64));
        counted.push((map_names::EP_STATS, endpoints.len() as u64));
        counted.push((map_names::CT_USAGE, usage.len() as u64));
        Ok(KernelSample {
            endpoints,
            rules: rule_counts,
            reasons,
            capacities: self.capacities.clone(),
            counted,
        })
    }

    /// The entries of the kernel-filled maps, counted again if the last census is older
    /// than the census interval.
    fn census(&mut self) -> Result<Vec<(&'static str, u64)>, SampleError> {
        if let Some((at, counts)) = &self.last_census
            && at.elapsed() < self.census_interval
        {
            return Ok(counts.clone());
        }
        let mut counts = Vec::new();
        for (name, map) in &self.census {
            let entries = map
                .count()
                .map_err(|source| SampleError::Census { map: name, source })?;
            counts.push((*name, entries));
        }
        self.last_census = Some((Instant::now(), counts.clone()));
        Ok(counts)
    }
}
