//! How many entries each map gets (`max_entries`), chosen when the object is loaded.
//!
//! The kernel allocates hash maps, arrays and rings in full when they are created, so a
//! map's size is what the node pays whether it is used or not. The operator says what the
//! maps are for ([`SizedFor`]: the workload endpoints in the cluster and the policies), one
//! formula per map turns that into entries ([`MapSizes::for_scale`]), and any map can be
//! given its own size on top (`NAME=ENTRIES`, [`MapSizes::set`]). Every map the agent sizes
//! is in [`SIZED`]; a new map is one more line there.
//!
//! Maps pinned by an earlier agent keep the size they were made with (see
//! [`super::load::load_sized`]): the new sizes take effect once no pin is left.

use std::collections::BTreeMap;
use std::fmt;

use palisade_common::{capacity, map_names};

/// What the maps are sized for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizedFor {
    /// Workload endpoints in the whole cluster: every node knows each as a peer.
    pub endpoints: u32,
    /// Global policies.
    pub policies: u32,
}

impl SizedFor {
    /// The agent's default: a cluster of 10,000 endpoints and 1,000 policies.
    pub const DEFAULT: SizedFor = SizedFor {
        endpoints: 10_000,
        policies: 1_000,
    };

    /// Endpoints on one node: the node's share of `endpoints`, at most [`NODE_ENDPOINTS`].
    pub fn local_endpoints(&self) -> u64 {
        u64::from(self.endpoints.min(NODE_ENDPOINTS))
    }
}

/// The most workload endpoints the formulas expect on one node (Kubernetes' default is 110
/// pods per node); a node with more sets `PAL_LOCAL`, `PAL_CT`, `PAL_EP_INDEX` and `PAL_EP_STATS`
/// itself.
pub const NODE_ENDPOINTS: u32 = 256;

/// How a map's entry count must be shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Two slots of equal size (`palisade_common`'s slotted maps): an even count.
    Slotted,
    /// Any count from 1.
    Plain,
    /// A ring buffer: bytes, a power of two and a multiple of the page size.
    Ring,
}

/// One sized map: its name, shape and what it needs for a scale.
struct Sizing {
    name: &'static str,
    shape: Shape,
    /// Entries (for a slotted map, of both slots) for a scale.
    entries: fn(&SizedFor) -> u64,
}

/// Every map the agent sizes (`PAL_CONFIG` and `PAL_STATS` have fixed sizes). The per-slot
/// needs follow the compiler's images of the bench's generated clusters (100 local
/// endpoints; 10 to 10,000 endpoints and policies), with room to spare: an address per
/// endpoint and family; peer entries for (local ID, remote ID) pairs outside group 0 (up to
/// 129,300 at 10,000 endpoints); groups, tables, rows, cells and outcomes growing with the
/// node's endpoints and the policies (up to 6,075 groups, 977 tables of a few protocols
/// each, 106,638 cells and 14,444 outcomes at 10,000 policies).
const SIZED: [Sizing; 17] = [
    Sizing {
        name: map_names::LOCAL,
        shape: Shape::Slotted,
        entries: |s| 2 * slot(2 * s.local_endpoints()),
    },
    Sizing {
        name: map_names::REMOTE,
        shape: Shape::Slotted,
        entries: |s| 2 * slot(2 * u64::from(s.endpoints)),
    },
    Sizing {
        name: map_names::LPM,
        shape: Shape::Slotted,
        entries: |s| 2 * slot(u64::from(s.policies) + 64),
    },
    Sizing {
        name: map_names::PEERS,
        shape: Shape::Slotted,
        entries: |s| {
            let endpoints = u64::from(s.endpoints);
            2 * slot((2 * s.local_endpoints() * endpoints.min(512)).max(16 * endpoints))
        },
    },
    Sizing {
        name: map_names::POLICY,
        shape: Shape::Slotted,
        entries: |s| 2 * slot(32 * s.local_endpoints() + 4 * u64::from(s.policies)),
    },
    Sizing {
        name: map_names::TABLE,
        shape: Shape::Slotted,
        entries: |s| 2 * slot(16 * s.local_endpoints() + 4 * u64::from(s.policies)),
    },
    Sizing {
        name: map_names::ROWS,
        shape: Shape::Slotted,
        entries: |s| 2 * slot(64 * s.local_endpoints() + 16 * u64::from(s.policies)),
    },
    Sizing {
        name: map_names::CELLS,
        shape: Shape::Slotted,
        entries: |s| 2 * slot(64 * s.local_endpoints() + 16 * u64::from(s.policies)),
    },
    Sizing {
        name: map_names::OUTCOMES,
        shape: Shape::Slotted,
        entries: |s| 2 * slot(16 * s.local_endpoints() + 4 * u64::from(s.policies)),
    },
    Sizing {
        name: map_names::CT,
        shape: Shape::Plain,
        // A quarter is an endpoint's default conntrack budget, and a closed TCP flow holds
        // its entry 10 s: the floor keeps a small node's workloads able to open some 800
        // connections a second or more.
        entries: |s| (1024 * s.local_endpoints()).max(65_536),
    },
    Sizing {
        name: map_names::CT_USAGE,
        shape: Shape::Plain,
        entries: |s| 2 * s.local_endpoints().max(64),
    },
    Sizing {
        name: map_names::FRAGS,
        shape: Shape::Plain,
        entries: |s| (16 * s.local_endpoints()).max(1024),
    },
    Sizing {
        name: map_names::EP_INDEX,
        shape: Shape::Plain,
        entries: |s| 2 * s.local_endpoints().max(64),
    },
    Sizing {
        name: map_names::EP_STATS,
        shape: Shape::Plain,
        // An index per `EP_INDEX` entry.
        entries: |s| 2 * s.local_endpoints().max(64),
    },
    Sizing {
        name: map_names::RULE_STATS,
        shape: Shape::Plain,
        entries: |s| 16 * u64::from(s.policies) + 4096,
    },
    Sizing {
        name: map_names::EVENTS,
        shape: Shape::Ring,
        entries: |_| u64::from(capacity::EVENTS),
    },
    Sizing {
        name: map_names::HOST_ADDRS,
        shape: Shape::Plain,
        entries: |_| u64::from(capacity::HOST_ADDRS),
    },
];

/// A slot's share, rounded up to a multiple of 1,024 (at least 1,024).
fn slot(entries: u64) -> u64 {
    entries.div_ceil(1024).max(1) * 1024
}

/// The size of every map in [`SIZED`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapSizes {
    entries: BTreeMap<&'static str, u32>,
}

/// A size that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error(
        "no map is named `{name}`; the maps that can be sized are {}",
        sized_names()
    )]
    UnknownMap { name: String },
    #[error("{name}={entries}: {why}")]
    BadSize {
        name: &'static str,
        entries: u64,
        why: &'static str,
    },
    #[error("`{0}` is not NAME=ENTRIES (e.g. PAL_CT=65536)")]
    Syntax(String),
}

fn sized_names() -> String {
    SIZED.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
}

impl MapSizes {
    /// What the formulas give for `scale`.
    pub fn for_scale(scale: &SizedFor) -> Result<MapSizes, SizeError> {
        let mut sizes = MapSizes {
            entries: BTreeMap::new(),
        };
        for sizing in &SIZED {
            sizes.put(sizing, (sizing.entries)(scale))?;
        }
        Ok(sizes)
    }

    /// The sizes the eBPF object declares (`palisade_common::capacity`).
    pub fn declared() -> MapSizes {
        let entries = [
            (map_names::LOCAL, capacity::LOCAL),
            (map_names::REMOTE, capacity::REMOTE),
            (map_names::LPM, capacity::LPM),
            (map_names::PEERS, capacity::PEERS),
            (map_names::POLICY, capacity::POLICY),
            (map_names::TABLE, capacity::TABLE),
            (map_names::ROWS, capacity::ROWS),
            (map_names::CELLS, capacity::CELLS),
            (map_names::OUTCOMES, capacity::OUTCOMES),
            (map_names::CT, capacity::CT),
            (map_names::CT_USAGE, capacity::CT_USAGE),
            (map_names::FRAGS, capacity::FRAGS),
            (map_names::EP_INDEX, capacity::EP_INDEX),
            (map_names::EP_STATS, capacity::EP_STATS),
            (map_names::RULE_STATS, capacity::RULE_STATS),
            (map_names::EVENTS, capacity::EVENTS),
            (map_names::HOST_ADDRS, capacity::HOST_ADDRS),
        ];
        MapSizes {
            entries: entries.into_iter().collect(),
        }
    }

    /// Gives the map `name` (as `bpftool` shows it, `PAL_CT`; case and the `PAL_` prefix
    /// optional) `entries` entries (bytes for the ring buffer `PAL_EVENTS`).
    pub fn set(&mut self, name: &str, entries: u64) -> Result<(), SizeError> {
        let wanted = name.to_ascii_uppercase();
        let sizing = SIZED
            .iter()
            .find(|s| s.name == wanted || s.name.strip_prefix("PAL_") == Some(&wanted))
            .ok_or_else(|| SizeError::UnknownMap { name: name.into() })?;
        self.put(sizing, entries)
    }

    /// Applies `NAME=ENTRIES` overrides in order.
    pub fn with_overrides(mut self, overrides: &[MapSizeOverride]) -> Result<MapSizes, SizeError> {
        for o in overrides {
            self.set(&o.name, o.entries)?;
        }
        Ok(self)
    }

    fn put(&mut self, sizing: &Sizing, entries: u64) -> Result<(), SizeError> {
        let bad = |why| SizeError::BadSize {
            name: sizing.name,
            entries,
            why,
        };
        let n = u32::try_from(entries).map_err(|_| bad("more than 2^32 - 1"))?;
        match sizing.shape {
            Shape::Slotted if n < 2 || n % 2 != 0 => {
                return Err(bad(
                    "the map holds two slots of equal size: an even number, at least 2",
                ));
            }
            Shape::Plain if n == 0 => return Err(bad("at least 1")),
            Shape::Ring if !n.is_power_of_two() || (n as usize) < page_size() => {
                return Err(bad(
                    "a ring buffer's size is in bytes, a power of two and at least a page",
                ));
            }
            _ => {}
        }
        self.entries.insert(sizing.name, n);
        Ok(())
    }

    /// The size of map `name`, if it is one of the sized maps.
    pub fn get(&self, name: &str) -> Option<u32> {
        self.entries.get(name).copied()
    }

    /// Every sized map with its size.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u32)> + '_ {
        self.entries.iter().map(|(n, e)| (*n, *e))
    }

    /// A map's size as the kernel has it already (a pinned map), whatever was asked.
    pub(crate) fn keep(&mut self, name: &'static str, entries: u32) {
        self.entries.insert(name, entries);
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}

/// `NAME=ENTRIES` from the command line: one map's size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapSizeOverride {
    pub name: String,
    pub entries: u64,
}

impl std::str::FromStr for MapSizeOverride {
    type Err = SizeError;

    fn from_str(s: &str) -> Result<Self, SizeError> {
        let (name, entries) = s
            .split_once('=')
            .ok_or_else(|| SizeError::Syntax(s.into()))?;
        let entries = entries
            .trim()
            .replace('_', "")
            .parse()
            .map_err(|_| SizeError::Syntax(s.into()))?;
        Ok(MapSizeOverride {
            name: name.trim().into(),
            entries,
        })
    }
}

impl fmt::Display for MapSizes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.iter().map(|(n, e)| format!("{n}={e}")).collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sized_map_is_a_map_of_the_abi_once() {
        for (i, s) in SIZED.iter().enumerate() {
            assert!(map_names::ALL.contains(&s.name), "{}", s.name);
            assert!(
                SIZED[i + 1..].iter().all(|o| o.name != s.name),
                "{}",
                s.name
            );
        }
        let declared = MapSizes::declared();
        assert_eq!(declared.iter().count(), SIZED.len());
    }

    #[test]
    fn formulas_give_valid_sizes_at_every_scale() {
        for endpoints in [1, 10, 100, 10_000, 100_000] {
            for policies in [0, 10, 1_000, 10_000] {
                let sizes = MapSizes::for_scale(&SizedFor {
                    endpoints,
                    policies,
                })
                .unwrap();
                assert_eq!(sizes.iter().count(), SIZED.len());
            }
        }
    }

    /// What the compiler's image of one of the bench's clusters needs per slot (100
    /// endpoints on the node, 125 local IDs).
    struct Measured {
        endpoints: u32,
        policies: u32,
        addresses: u32,
        peers: u32,
        groups: u32,
        tables: u32,
        cells: u32,
        outcomes: u32,
    }

    const fn measured(v: [u32; 8]) -> Measured {
        let [
            endpoints,
            policies,
            addresses,
            peers,
            groups,
            tables,
            cells,
            outcomes,
        ] = v;
        Measured {
            endpoints,
            policies,
            addresses,
            peers,
            groups,
            tables,
            cells,
            outcomes,
        }
    }

    const MEASURED: [Measured; 4] = [
        measured([10, 10, 13, 252, 90, 58, 383, 55]),
        measured([100, 100, 125, 10_930, 1_052, 265, 3_082, 446]),
        measured([1_000, 1_000, 1_250, 19_480, 2_050, 339, 17_590, 3_402]),
        measured([10_000, 10_000, 12_500, 129_300, 6_075, 977, 106_638, 14_444]),
    ];

    #[test]
    fn the_bench_clusters_fit_the_maps_sized_for_them() {
        for m in MEASURED {
            let sizes = MapSizes::for_scale(&SizedFor {
                endpoints: m.endpoints,
                policies: m.policies,
            })
            .unwrap();
            let slot = |name| sizes.get(name).unwrap() / 2;
            let at = format!("{} endpoints, {} policies", m.endpoints, m.policies);
            assert!(slot(map_names::REMOTE) >= m.addresses, "{at}");
            assert!(slot(map_names::PEERS) >= m.peers, "{at}");
            assert!(slot(map_names::POLICY) >= m.groups, "{at}");
            // A table has an entry per protocol it names and one for the others.
            assert!(slot(map_names::TABLE) >= 5 * m.tables, "{at}");
            assert!(slot(map_names::ROWS) >= m.cells, "{at}");
            assert!(slot(map_names::CELLS) >= m.cells, "{at}");
            assert!(slot(map_names::OUTCOMES) >= m.outcomes, "{at}");
        }
    }

    #[test]
    fn more_endpoints_never_means_smaller_maps() {
        let small = MapSizes::for_scale(&SizedFor {
            endpoints: 100,
            policies: 100,
        })
        .unwrap();
        let large = MapSizes::for_scale(&SizedFor::DEFAULT).unwrap();
        for (name, entries) in small.iter() {
            assert!(large.get(name).unwrap() >= entries, "{name}");
        }
    }

    #[test]
    fn overrides_name_maps_loosely_and_check_their_shape() {
        let mut sizes = MapSizes::for_scale(&SizedFor::DEFAULT).unwrap();
        sizes.set("PAL_CT", 5000).unwrap();
        sizes.set("ct", 6000).unwrap();
        assert_eq!(sizes.get(map_names::CT), Some(6000));
        sizes.set("pal_rows", 4096).unwrap();
        assert_eq!(sizes.get(map_names::ROWS), Some(4096));

        let err = sizes.set("PAL_ROWS", 4097).unwrap_err();
        assert!(err.to_string().contains("PAL_ROWS=4097"), "{err}");
        assert!(err.to_string().contains("even"), "{err}");
        assert!(sizes.set("PAL_CT", 0).is_err());
        assert!(sizes.set("PAL_EVENTS", 5000).is_err());
        assert!(sizes.set("PAL_EVENTS", 1 << 16).is_ok());
        assert!(sizes.set("PAL_CT", 1 << 33).is_err());
        let err = sizes.set("PAL_NOPE", 10).unwrap_err();
        assert!(err.to_string().contains("PAL_CT"), "{err}");
        // PAL_CONFIG and PAL_STATS have fixed sizes.
        assert!(sizes.set("PAL_CONFIG", 2).is_err());
    }

    #[test]
    fn overrides_parse_from_the_command_line() {
        let o: MapSizeOverride = "PAL_CT=65_536".parse().unwrap();
        assert_eq!(
            o,
            MapSizeOverride {
                name: "PAL_CT".into(),
                entries: 65_536
            }
        );
        assert!("PAL_CT".parse::<MapSizeOverride>().is_err());
        assert!("PAL_CT=lots".parse::<MapSizeOverride>().is_err());
    }
}
