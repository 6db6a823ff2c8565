//! A compiled [`Image`] as the exact entries of the kernel maps for one slot (see
//! `palisade_common` for the layout). Pure: the same image, bindings and slot give the same
//! entries, which is what lets [`super::writer`] write only the difference.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;
use palisade_common::{
    Addr, Cell, DIR_EGRESS, DIR_INGRESS, FAMILY_V4, FAMILY_V6, LPM_HEADER_BITS, LocalKey,
    LocalValue, LpmData, NO_RULE, OUTCOME_LOG, Outcome, PROTOCOL_OTHER, PeerKey, PeerValue,
    PolicyKey, PolicyValue, RemoteKey, RemoteValue, Row, TableKey, TableValue, VERDICT_ALLOW,
    VERDICT_DENY,
};

use crate::compile::{
    Capacities, GroupEntry, Image, LocalId, Outcome as CompiledOutcome, OutcomeId, PeerEntry,
    PeerGroup, RangeTable, RemoteId, Table, TableId,
};
use crate::model::ResourceKey;

use super::map_sizes::MapSizes;
use crate::policy::{Direction, RuleRef, Verdict};

/// Where a slot's share of each array map starts (absolute indexes, see `palisade_common`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArrayBases {
    pub rows: u32,
    pub cells: u32,
    pub outcomes: u32,
}

/// How many entries of each array map one slot may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArrayLimits {
    pub rows: usize,
    pub cells: usize,
    pub outcomes: usize,
}

/// An LPM key: prefix length in bits (including [`LPM_HEADER_BITS`]) and data.
pub type LpmKey = (u32, LpmData);

/// Every entry of one slot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotImage {
    pub local: HashMap<LocalKey, LocalValue>,
    pub remote: HashMap<RemoteKey, RemoteValue>,
    pub lpm: HashMap<LpmKey, RemoteValue>,
    pub peers: HashMap<PeerKey, PeerValue>,
    pub policy: HashMap<PolicyKey, PolicyValue>,
    pub table: HashMap<TableKey, TableValue>,
    /// Relative to [`ArrayBases::rows`].
    pub rows: Vec<Row>,
    /// Relative to [`ArrayBases::cells`].
    pub cells: Vec<Cell>,
    /// Relative to [`ArrayBases::outcomes`]; index = the image's outcome ID.
    pub outcomes: Vec<Outcome>,
}

/// Why an image cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error(
        "the policy needs {needed} {what} per slot, the maps hold {capacity}; the update was \
         refused and the policy in force is unchanged"
    )]
    ArrayFull {
        what: &'static str,
        needed: usize,
        capacity: usize,
    },
    #[error(
        "the policy has more than {capacity} distinct rules to count; the update was refused \
         and the policy in force is unchanged"
    )]
    RuleCountersFull { capacity: usize },
}

/// Stable counter indexes for rules, so that a rule keeps its `PAL_RULE_STATS` entry across
/// policy updates. Indexes are never reused while the agent runs.
#[derive(Debug, Clone, Default)]
pub struct RuleCounters {
    index: HashMap<RuleRef, u32>,
    rules: Vec<RuleRef>,
    capacity: usize,
}

impl RuleCounters {
    pub fn new(capacity: usize) -> RuleCounters {
        RuleCounters {
            index: HashMap::new(),
            rules: Vec::new(),
            capacity,
        }
    }

    pub(super) fn index_of(&mut self, rule: &RuleRef) -> Result<u32, EncodeError> {
        if let Some(&i) = self.index.get(rule) {
            return Ok(i);
        }
        if self.rules.len() >= self.capacity {
            return Err(EncodeError::RuleCountersFull {
                capacity: self.capacity,
            });
        }
        let i = u32::try_from(self.rules.len()).map_err(|_| EncodeError::RuleCountersFull {
            capacity: self.capacity,
        })?;
        self.index.insert(rule.clone(), i);
        self.rules.push(rule.clone());
        Ok(i)
    }

    /// How many indexes have been handed out (they are `0..len`).
    pub fn len(&self) -> u32 {
        u32::try_from(self.rules.len()).unwrap_or(u32::MAX)
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rule counted at `index`.
    pub fn rule(&self, index: u32) -> Option<&RuleRef> {
        self.rules.get(index as usize)
    }

    /// Every counted rule with its index.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &RuleRef)> {
        self.rules
            .iter()
            .enumerate()
            .map(|(i, r)| (u32::try_from(i).unwrap_or(u32::MAX), r))
    }
}

/// What one slot of maps of `sizes` holds, for the compiler's check.
pub fn slot_capacities(sizes: &MapSizes) -> Capacities {
    use palisade_common::map_names;
    let half = |name| sizes.get(name).map_or(usize::MAX, |n| (n / 2) as usize);
    Capacities {
        local_ids: usize::MAX,
        remote_ids: usize::MAX,
        endpoint_entries: half(map_names::REMOTE),
        // The two "world" entries (/0 of each family) are always there.
        lpm_entries: half(map_names::LPM).saturating_sub(2),
        peer_entries: half(map_names::PEERS),
        group_entries: half(map_names::POLICY),
        tables: half(map_names::TABLE),
        table_rows: half(map_names::CELLS),
    }
}

pub fn family_of(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => FAMILY_V4,
        IpAddr::V6(_) => FAMILY_V6,
    }
}

/// An address in the ABI's 16 bytes (IPv4 first, zero-padded).
pub fn addr_bytes(addr: IpAddr) -> Addr {
    let mut out = [0u8; 16];
    match addr {
        IpAddr::V4(v4) => out[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => out = v6.octets(),
    }
    out
}

pub fn direction_code(direction: Direction) -> u8 {
    match direction {
        Direction::Ingress => DIR_INGRESS,
        Direction::Egress => DIR_EGRESS,
    }
}

fn lpm_key(slot: u8, net: IpNet) -> LpmKey {
    let data = LpmData {
        slot,
        family: family_of(net.addr()),
        addr: addr_bytes(net.network()),
        _pad: [0; 2],
    };
    (LPM_HEADER_BITS + u32::from(net.prefix_len()), data)
}

/// The entries of `image` for `slot`. `ifindex_of` binds local workload endpoints to their
/// host veths; endpoints without a binding get no `PAL_LOCAL` entries (they are not on this
/// node, or their interface is not there yet).
pub fn encode(
    image: &Image,
    slot: u8,
    ifindex_of: &BTreeMap<ResourceKey, u32>,
    bases: ArrayBases,
    limits: ArrayLimits,
    counters: &mut RuleCounters,
) -> Result<SlotImage, EncodeError> {
    let mut out = SlotImage::default();

    for ((endpoint, addr), local) in &image.endpoints {
        if let Some(&ifindex) = ifindex_of.get(endpoint) {
            let (key, value) = local_entry(slot, *addr, ifindex, *local);
            out.local.insert(key, value);
        }
    }
    for (addr, remote) in &image.exact {
        let (key, value) = remote_entry(slot, *addr, *remote);
        out.remote.insert(key, value);
    }
    for (net, remote) in &image.lpm {
        out.lpm.insert(
            lpm_key(slot, *net),
            RemoteValue {
                remote_id: remote.0,
            },
        );
    }
    // "World": whatever no CIDR class covers. A /0 among the rule CIDRs already is that.
    for everything in [IpNet::V4(Default::default()), IpNet::V6(Default::default())] {
        out.lpm
            .entry(lpm_key(slot, everything))
            .or_insert(RemoteValue {
                remote_id: image.world.0,
            });
    }
    for (entry, group) in &image.peers {
        let (key, value) = peer_entry(slot, *entry, *group);
        out.peers.insert(key, value);
    }
    for (entry, table) in &image.groups {
        let (key, value) = policy_entry(slot, *entry, *table);
        out.policy.insert(key, value);
    }
    for (table_id, table) in image.live_tables() {
        let entries = push_table(&mut out, slot, table_id.0 as usize, table, bases);
        out.table.extend(entries);
    }
    for outcome in &image.outcomes {
        push_outcome(&mut out, outcome, counters)?;
    }
    check_limits(&out, limits)?;
    Ok(out)
}

/// A `PAL_LOCAL` entry: the endpoint address `addr` behind interface `ifindex`.
pub fn local_entry(slot: u8, addr: IpAddr, ifindex: u32, local: LocalId) -> (LocalKey, LocalValue) {
    let key = LocalKey {
        slot,
        family: family_of(addr),
        _pad: [0; 2],
        ifindex,
        addr: addr_bytes(addr),
    };
    (key, LocalValue { local_id: local.0 })
}

/// A `PAL_REMOTE` entry: an endpoint address's exact remote ID.
pub fn remote_entry(slot: u8, addr: IpAddr, remote: RemoteId) -> (RemoteKey, RemoteValue) {
    let key = RemoteKey {
        slot,
        family: family_of(addr),
        _pad: [0; 2],
        addr: addr_bytes(addr),
    };
    (
        key,
        RemoteValue {
            remote_id: remote.0,
        },
    )
}

/// A `PAL_PEERS` entry: a remote ID's peer group.
pub fn peer_entry(slot: u8, entry: PeerEntry, group: PeerGroup) -> (PeerKey, PeerValue) {
    let (local, direction, remote) = entry;
    let key = PeerKey {
        slot,
        direction: direction_code(direction),
        _pad: [0; 2],
        local_id: local.0,
        remote_id: remote.0,
    };
    (key, PeerValue { group: group.0 })
}

/// A `PAL_POLICY` entry: a peer group's table.
pub fn policy_entry(slot: u8, entry: GroupEntry, table: TableId) -> (PolicyKey, PolicyValue) {
    let (local, direction, group) = entry;
    let key = PolicyKey {
        slot,
        direction: direction_code(direction),
        _pad: [0; 2],
        local_id: local.0,
        group: group.0,
    };
    (key, PolicyValue { table_id: table.0 })
}

/// Appends table `table_id`'s rows and cells; returns its `PAL_TABLE` entries.
pub fn push_table(
    out: &mut SlotImage,
    slot: u8,
    table_id: usize,
    table: &Table,
    bases: ArrayBases,
) -> Vec<(TableKey, TableValue)> {
    let table_id = count(table_id);
    by_protocol(table)
        .map(|(protocol, ranges)| {
            let key = TableKey {
                slot,
                _pad: 0,
                protocol,
                table_id,
            };
            (key, push_ranges(out, &ranges, bases))
        })
        .collect()
}

/// The range tables of `table` by `PAL_TABLE` protocol: those it lists, then
/// [`PROTOCOL_OTHER`] for every other protocol.
pub fn by_protocol(table: &Table) -> impl Iterator<Item = (u16, Cow<'_, RangeTable>)> {
    table
        .protocols
        .iter()
        .map(|(p, t)| (u16::from(*p), Cow::Borrowed(t)))
        .chain([(PROTOCOL_OTHER, Cow::Owned(RangeTable::single(table.other)))])
}

/// A `PAL_CELLS` entry: where one range of key `b` starts and its outcome.
pub fn cell(start: u16, outcome: OutcomeId, bases: ArrayBases) -> Cell {
    Cell {
        start,
        _pad: 0,
        // Absolute: the slot's outcomes start at its base.
        outcome: bases.outcomes.saturating_add(outcome.0),
    }
}

/// Appends an outcome, giving its rule (and the `log` rules it passed) counters.
pub fn push_outcome(
    out: &mut SlotImage,
    outcome: &CompiledOutcome,
    counters: &mut RuleCounters,
) -> Result<(), EncodeError> {
    let rule_counter = match outcome.rule() {
        Some(rule) => counters.index_of(rule)?,
        None => NO_RULE,
    };
    // Logged rules get counters too, so `palisade stats` can name them in events.
    for rule in &outcome.logged {
        counters.index_of(rule)?;
    }
    out.outcomes.push(Outcome {
        verdict: match outcome.verdict {
            Verdict::Allow => VERDICT_ALLOW,
            Verdict::Deny => VERDICT_DENY,
        },
        flags: if outcome.logged.is_empty() {
            0
        } else {
            OUTCOME_LOG
        },
        _pad: [0; 2],
        rule_counter,
    });
    Ok(())
}

/// Refuses a slot whose arrays would not fit.
pub fn check_limits(out: &SlotImage, limits: ArrayLimits) -> Result<(), EncodeError> {
    for (what, needed, capacity) in [
        ("policy table rows", out.rows.len(), limits.rows),
        ("policy table cells", out.cells.len(), limits.cells),
        ("outcomes", out.outcomes.len(), limits.outcomes),
    ] {
        if needed > capacity {
            return Err(EncodeError::ArrayFull {
                what,
                needed,
                capacity,
            });
        }
    }
    Ok(())
}

/// Appends `ranges` to the slot's rows and cells; returns its `PAL_TABLE` value.
fn push_ranges(out: &mut SlotImage, ranges: &RangeTable, bases: ArrayBases) -> TableValue {
    let first_row = index(bases.rows, out.rows.len());
    for row in &ranges.rows {
        let first_cell = index(bases.cells, out.cells.len());
        for &(start, outcome) in &row.cells {
            out.cells.push(cell(start, outcome, bases));
        }
        out.rows.push(Row {
            start: row.start,
            _pad: 0,
            first_cell,
            cell_count: count(row.cells.len()),
        });
    }
    TableValue {
        first_row,
        row_count: count(ranges.rows.len()),
    }
}

pub fn index(base: u32, offset: usize) -> u32 {
    base.saturating_add(count(offset))
}

pub fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
