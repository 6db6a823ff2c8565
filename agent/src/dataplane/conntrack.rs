//! Conntrack from user space: each endpoint's entries against its budget (`PAL_CT_USAGE`),
//! and the sweep that deletes expired entries and recounts.
//!
//! The programs never delete a `PAL_CT` entry (a revoked flow keeps its entry, marked, until
//! it expires) and add one to the endpoint's count for each key they insert. Entries go
//! away in two ways: the sweep deletes those that expired, and the LRU evicts when the map
//! is full (or someone deletes by hand). Each sweep recounts what is really there, so an
//! endpoint's count goes down with the flows it holds, and what vanished without the sweep
//! is counted as evicted.
//!
//! Between sweeps a count can only be too high (expired entries are still counted), which
//! errs on the side of the budget. The sweep's own write can lose the programs' additions
//! made between its last read and its write (microseconds): the one way the count can be
//! low, by a few entries, until the next sweep.

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::Duration;

use aya::maps::{HashMap, IterableMap, MapData, MapError};
use palisade_common::{CtKey, CtUsage, CtUsageKey, CtValue, ct_expired, map_names};

use super::map_batch;
use super::typed_map::{self, MapOpenError};

/// The default of `palisade agent --conntrack-budget` for a table of `table_entries` flows
/// (`PAL_CT`'s size as made): a quarter of it, so that it takes four workloads flooding at
/// once to fill it.
pub fn default_budget(table_entries: u32) -> u32 {
    (table_entries / 4).max(1)
}

/// How often the agent sweeps.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// The update flags of `bpf_map_update_elem`.
const BPF_NOEXIST: u64 = 1;
const BPF_EXIST: u64 = 2;

#[derive(Debug, thiserror::Error)]
pub enum ConntrackError {
    #[error(transparent)]
    Open(#[from] MapOpenError),
    #[error("cannot {action} map `{name}`: {source}")]
    Map {
        action: &'static str,
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("cannot read map `{name}`: {source}")]
    Read {
        name: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot delete from map `{name}`: {source}")]
    Delete {
        name: &'static str,
        #[source]
        source: std::io::Error,
    },
}

fn map_err(action: &'static str, name: &'static str) -> impl Fn(MapError) -> ConntrackError {
    move |source| ConntrackError::Map {
        action,
        name,
        source,
    }
}

/// `PAL_CT` and `PAL_CT_USAGE`.
pub struct Conntrack {
    flows: HashMap<MapData, CtKey, CtValue>,
    usage: HashMap<MapData, CtUsageKey, CtUsage>,
}

/// What one sweep found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Entries left (not expired).
    pub live: u64,
    /// Expired entries deleted.
    pub expired: u64,
    /// Entries of tracked endpoints that vanished since the last sweep without it.
    pub evicted: u64,
}

impl Conntrack {
    /// Takes the maps out of a loaded object.
    pub fn take(ebpf: &mut aya::Ebpf) -> Result<Conntrack, ConntrackError> {
        Ok(Conntrack {
            flows: typed_map::take(ebpf, map_names::CT)?,
            usage: typed_map::take(ebpf, map_names::CT_USAGE)?,
        })
    }

    /// Opens the maps an agent pinned under `pin_dir`.
    pub fn open_pinned(pin_dir: &Path) -> Result<Conntrack, ConntrackError> {
        Ok(Conntrack {
            flows: typed_map::open_pinned(pin_dir, map_names::CT)?,
            usage: typed_map::open_pinned(pin_dir, map_names::CT_USAGE)?,
        })
    }

    /// Starts counting the host veth `ifindex`'s entries against its budget. Keeps an
    /// existing count (an agent restart changes nothing in the map).
    pub fn track_endpoint(&mut self, ifindex: u32) -> Result<(), ConntrackError> {
        match self
            .usage
            .insert(CtUsageKey { ifindex }, CtUsage::default(), BPF_NOEXIST)
        {
            Ok(()) => Ok(()),
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EEXIST) => {
                Ok(())
            }
            Err(e) => Err(map_err("write", map_names::CT_USAGE)(e)),
        }
    }

    /// Stops counting for `ifindex` (its interface is gone; a new interface with the same
    /// index starts from zero).
    pub fn forget_endpoint(&mut self, ifindex: u32) -> Result<(), ConntrackError> {
        match self.usage.remove(&CtUsageKey { ifindex }) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_err("delete from", map_names::CT_USAGE)(e)),
        }
    }

    /// Every tracked endpoint's usage, by ifindex.
    pub fn usage(&self) -> Result<BTreeMap<u32, CtUsage>, ConntrackError> {
        let mut out = BTreeMap::new();
        map_batch::for_each(self.usage.map().fd().as_fd(), |k: &CtUsageKey, v| {
            out.insert(k.ifindex, *v);
        })
        .map_err(|source| ConntrackError::Read {
            name: map_names::CT_USAGE,
            source,
        })?;
        Ok(out)
    }

    /// Every `PAL_CT` entry (for tests and inspection; a full map is 262,144 entries).
    pub fn flows(&self) -> Result<Vec<(CtKey, CtValue)>, ConntrackError> {
        let mut out = Vec::new();
        map_batch::for_each(self.flows.map().fd().as_fd(), |k: &CtKey, v: &CtValue| {
            out.push((*k, *v));
        })
        .map_err(|source| ConntrackError::Read {
            name: map_names::CT,
            source,
        })?;
        Ok(out)
    }

    /// Inserts the entry of a flow the table does not hold yet; false if it holds the key
    /// already or has no room.
    pub fn insert_new(&mut self, key: &CtKey, value: CtValue) -> bool {
        self.flows.insert(key, value, BPF_NOEXIST).is_ok()
    }

    /// Deletes the entry of `key`, if there is one (the flow's next packet goes to policy,
    /// like that of an evicted flow).
    pub fn remove_flow(&mut self, key: &CtKey) -> Result<bool, ConntrackError> {
        match self.flows.remove(key) {
            Ok(()) => Ok(true),
            Err(MapError::KeyNotFound) => Ok(false),
            Err(e) => Err(map_err("delete from", map_names::CT)(e)),
        }
    }

    /// Deletes the entries expired at `now_ns` (the programs' clock, [`monotonic_coarse_ns`])
    /// and recounts each tracked endpoint's entries.
    pub fn sweep(&mut self, now_ns: u64) -> Result<Swept, ConntrackError> {
        let counted = self.usage()?;
        let mut live: BTreeMap<u32, u64> = BTreeMap::new();
        let mut expired = Vec::new();
        map_batch::for_each(self.flows.map().fd().as_fd(), |k: &CtKey, v: &CtValue| {
            if ct_expired(v, k.protocol, now_ns) {
                expired.push(*k);
            } else {
                *live.entry(k.ifindex).or_default() += 1;
            }
        })
        .map_err(|source| ConntrackError::Read {
            name: map_names::CT,
            source,
        })?;
        let mut deleted: BTreeMap<u32, u64> = BTreeMap::new();
        // Keys evicted meanwhile are passed over, and counted as evicted below.
        map_batch::delete(self.flows.map().fd().as_fd(), &expired, |key: &CtKey| {
            *deleted.entry(key.ifindex).or_default() += 1;
        })
        .map_err(|source| ConntrackError::Delete {
            name: map_names::CT,
            source,
        })?;
        let mut swept = Swept {
            live: live.values().sum(),
            expired: deleted.values().sum(),
            evicted: 0,
        };
        for (ifindex, before) in counted {
            let key = CtUsageKey { ifindex };
            let now = match self.usage.get(&key, 0) {
                Ok(now) => now,
                // Forgotten meanwhile (its interface went away).
                Err(MapError::KeyNotFound) => continue,
                Err(e) => return Err(map_err("read", map_names::CT_USAGE)(e)),
            };
            let holds = live.get(&ifindex).copied().unwrap_or(0);
            let gone = deleted.get(&ifindex).copied().unwrap_or(0);
            // Entries inserted during the walk may be in `holds` and not in `before`: the
            // estimate can only be low.
            let evicted = before.entries.saturating_sub(holds + gone);
            swept.evicted += evicted;
            let recounted = CtUsage {
                // What the programs added since `before` was read may or may not be in
                // `holds`: counting it again errs on the side of the budget.
                entries: holds + now.entries.saturating_sub(before.entries),
                evicted: now.evicted + evicted,
            };
            match self.usage.insert(key, recounted, BPF_EXIST) {
                Ok(()) => {}
                Err(MapError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(map_err("write", map_names::CT_USAGE)(e)),
            }
        }
        Ok(swept)
    }
}

/// CLOCK_MONOTONIC at tick resolution: the clock of the programs' `bpf_ktime_get_coarse_ns`,
/// which `CtValue::last_seen_ns` is on.
pub fn monotonic_coarse_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to write; CLOCK_MONOTONIC_COARSE always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut now) };
    (now.tv_sec as u64) * 1_000_000_000 + now.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use palisade_common::{CT_TIMEOUT_TCP_NS, CtValue, ct_expired};

    const TCP: u8 = 6;

    fn seen_at(last_seen_ns: u64) -> CtValue {
        CtValue {
            last_seen_ns,
            ..CtValue::default()
        }
    }

    #[test]
    fn an_entry_seen_after_the_sweep_took_its_time_is_live() {
        let now = 1_000 * CT_TIMEOUT_TCP_NS;
        // Refreshed by a packet while the sweep walked the table.
        assert!(!ct_expired(&seen_at(now + 5_000_000), TCP, now));
        assert!(!ct_expired(&seen_at(now - CT_TIMEOUT_TCP_NS), TCP, now));
        assert!(ct_expired(&seen_at(now - CT_TIMEOUT_TCP_NS - 1), TCP, now));
    }
}
