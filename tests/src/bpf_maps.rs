//! The maps of a loaded palisade object, opened with aya and filled by hand, so that tests of
//! the TC programs can say "endpoint X on ifindex 1 with address A; peers of class R; policy
//! entry -> table -> rows -> cells -> outcomes" and read counters, conntrack and events back.
//!
//! [`Dataplane`] owns the loaded object. Row, cell and outcome indexes are handed out per
//! slot from the slot's half of each array map, as the agent does (absolute indexes).

use std::{net::IpAddr, path::Path};

use aya::{
    Ebpf,
    maps::{Array, HashMap, LpmTrie, MapData, PerCpuArray, PerCpuValues, RingBuf, lpm_trie::Key},
    programs::SchedClassifier,
    util::nr_cpus,
};
use palisade::dataplane::{self, LoadedObject};
use palisade_common::{
    Addr, Cell, Config, Counter, CtKey, CtUsage, CtUsageKey, CtValue, DIR_EGRESS, DIR_INGRESS,
    EndpointIndex, EndpointIndexKey, EndpointStats, Event, FAMILY_V4, FAMILY_V6, HostAddrKey,
    HostAddrValue, LPM_HEADER_BITS, LocalKey, LocalValue, LpmData, NO_RULE, OUTCOME_LOG, Outcome,
    PROTOCOL_OTHER, PeerKey, PeerValue, PolicyKey, PolicyValue, RemoteKey, RemoteValue, Row,
    RuleStats, STAT_COUNT, TableKey, TableValue, VERDICT_ALLOW, VERDICT_DENY, capacity, map_names,
    program_names,
};

use crate::bpf_run::{self, SkbContext};

/// What a cell decides.
#[derive(Clone, Copy, Debug)]
pub struct Decides {
    pub verdict: u8,
    pub log: bool,
    pub rule_counter: u32,
}

pub const ALLOW: Decides = Decides {
    verdict: VERDICT_ALLOW,
    log: false,
    rule_counter: NO_RULE,
};
pub const DENY: Decides = Decides {
    verdict: VERDICT_DENY,
    log: false,
    rule_counter: NO_RULE,
};

impl Decides {
    pub fn rule(self, rule_counter: u32) -> Self {
        Self {
            rule_counter,
            ..self
        }
    }

    pub fn logged(self) -> Self {
        Self { log: true, ..self }
    }
}

/// A policy table's rows for one protocol: each row from its `a` start on, with cells from
/// their `b` start on.
#[derive(Clone, Debug, Default)]
pub struct Rows {
    rows: Vec<(u16, Vec<(u16, Decides)>)>,
}

impl Rows {
    /// One row and one cell: the same outcome for every `a` and `b`.
    pub fn uniform(decides: Decides) -> Self {
        Self::default().row(0, &[(0, decides)])
    }

    /// A row starting at `a`, with `cells` as (`b` start, outcome), sorted by start.
    pub fn row(mut self, a: u16, cells: &[(u16, Decides)]) -> Self {
        self.rows.push((a, cells.to_vec()));
        self
    }
}

/// Absolute indexes of the outcomes of a table's cells, in order (equal outcomes share one).
pub type OutcomeIndexes = Vec<u32>;

pub struct Dataplane {
    loaded: LoadedObject,
    /// Outcomes already written, per slot: like the agent, one index per distinct outcome.
    outcomes: [std::collections::HashMap<(u8, bool, u32), u32>; 2],
    /// Next free row, cell and outcome index, per slot.
    next_row: [u32; 2],
    next_cell: [u32; 2],
    next_outcome: [u32; 2],
}

pub fn addr_of(ip: IpAddr) -> (u8, Addr) {
    let mut addr = [0u8; 16];
    match ip {
        IpAddr::V4(v4) => {
            addr[..4].copy_from_slice(&v4.octets());
            (FAMILY_V4, addr)
        }
        IpAddr::V6(v6) => (FAMILY_V6, v6.octets()),
    }
}

fn map<'a>(ebpf: &'a mut Ebpf, name: &str) -> &'a mut aya::maps::Map {
    ebpf.map_mut(name)
        .unwrap_or_else(|| panic!("the object has no map {name}"))
}

impl Dataplane {
    /// Loads the embedded object (unpinned) and sets `PAL_CONFIG` to generation 0, no
    /// switches, every drop reported.
    pub fn load() -> Self {
        Self::load_with_pins(None)
    }

    /// [`Dataplane::load`], with the maps pinned under `pin_dir` (see
    /// `palisade::dataplane::load`).
    pub fn load_with_pins(pin_dir: Option<&Path>) -> Self {
        let object = dataplane::ebpf_object().unwrap_or_else(|err| {
            panic!("{err}\n(the tests must run through `cargo xtask test`, which embeds it)")
        });
        let loaded = dataplane::load(object, pin_dir)
            .unwrap_or_else(|err| panic!("cannot load the eBPF object: {err}"));
        let mut dataplane = Self {
            loaded,
            outcomes: Default::default(),
            next_row: [0, capacity::ROWS / 2],
            next_cell: [0, capacity::CELLS / 2],
            next_outcome: [0, capacity::OUTCOMES / 2],
        };
        dataplane.set_config(Config::default());
        dataplane
    }

    pub fn ebpf(&mut self) -> &mut Ebpf {
        self.loaded.ebpf_mut()
    }

    pub fn program(&mut self, name: &'static str) -> &mut SchedClassifier {
        self.loaded
            .program(name)
            .unwrap_or_else(|err| panic!("no usable {name}: {err}"))
    }

    /// Runs the program for `direction` (`DIR_EGRESS`: from the workload) on `frame`.
    pub fn run(&mut self, direction: u8, frame: &[u8], ctx: SkbContext) -> u32 {
        bpf_run::run(self.program(program_name(direction)), frame, ctx)
    }

    pub fn set_config(&mut self, config: Config) {
        let mut array: Array<_, Config> = Array::try_from(map(self.ebpf(), map_names::CONFIG))
            .unwrap_or_else(|err| panic!("PAL_CONFIG: {err}"));
        array
            .set(0, config, 0)
            .unwrap_or_else(|err| panic!("cannot write PAL_CONFIG: {err}"));
    }

    /// `ip` is an address of the workload behind `ifindex`, with `local_id`.
    pub fn local(&mut self, slot: u8, ifindex: u32, ip: IpAddr, local_id: u32) {
        let key = local_key(slot, ifindex, ip);
        self.hash_insert(map_names::LOCAL, key, LocalValue { local_id });
    }

    pub fn remove_local(&mut self, slot: u8, ifindex: u32, ip: IpAddr) {
        let key = local_key(slot, ifindex, ip);
        let mut hash: HashMap<_, LocalKey, LocalValue> =
            HashMap::try_from(map(self.ebpf(), map_names::LOCAL)).unwrap_or_else(|e| panic!("{e}"));
        hash.remove(&key)
            .unwrap_or_else(|err| panic!("cannot remove {key:?}: {err}"));
    }

    /// `ip` is an endpoint address with `remote_id`.
    pub fn remote(&mut self, slot: u8, ip: IpAddr, remote_id: u32) {
        let (family, addr) = addr_of(ip);
        let key = RemoteKey {
            slot,
            family,
            _pad: [0; 2],
            addr,
        };
        self.hash_insert(map_names::REMOTE, key, RemoteValue { remote_id });
    }

    fn lpm_key(slot: u8, ip: IpAddr, prefix_len: u32) -> Key<LpmData> {
        let (family, addr) = addr_of(ip);
        Key::new(
            LPM_HEADER_BITS + prefix_len,
            LpmData {
                slot,
                family,
                addr,
                _pad: [0; 2],
            },
        )
    }

    /// Addresses in `ip/prefix_len` (`0.0.0.0/0` or `::/0`: the world) have `remote_id`.
    pub fn cidr(&mut self, slot: u8, ip: IpAddr, prefix_len: u32, remote_id: u32) {
        let key = Self::lpm_key(slot, ip, prefix_len);
        let mut trie: LpmTrie<_, LpmData, RemoteValue> =
            LpmTrie::try_from(map(self.ebpf(), map_names::LPM))
                .unwrap_or_else(|err| panic!("PAL_LPM: {err}"));
        trie.insert(&key, RemoteValue { remote_id }, 0)
            .unwrap_or_else(|err| panic!("cannot write PAL_LPM: {err}"));
    }

    pub fn remove_cidr(&mut self, slot: u8, ip: IpAddr, prefix_len: u32) {
        let key = Self::lpm_key(slot, ip, prefix_len);
        let mut trie: LpmTrie<_, LpmData, RemoteValue> =
            LpmTrie::try_from(map(self.ebpf(), map_names::LPM))
                .unwrap_or_else(|err| panic!("PAL_LPM: {err}"));
        trie.remove(&key)
            .unwrap_or_else(|err| panic!("cannot remove from PAL_LPM: {err}"));
    }

    /// The table of peer group `group` of (local ID, direction).
    pub fn group(&mut self, slot: u8, direction: u8, local_id: u32, group: u32, table_id: u32) {
        let key = PolicyKey {
            slot,
            direction,
            _pad: [0; 2],
            local_id,
            group,
        };
        self.hash_insert(map_names::POLICY, key, PolicyValue { table_id });
    }

    /// Puts `remote_id` into peer group `group` of (local ID, direction).
    pub fn peer(&mut self, slot: u8, direction: u8, local_id: u32, remote_id: u32, group: u32) {
        let key = PeerKey {
            slot,
            direction,
            _pad: [0; 2],
            local_id,
            remote_id,
        };
        self.hash_insert(map_names::PEERS, key, PeerValue { group });
    }

    /// Table `table_id`'s rows for `protocol` (`None`: every protocol without its own).
    /// Returns the absolute outcome index of each cell, row by row.
    pub fn table(
        &mut self,
        slot: u8,
        table_id: u32,
        protocol: Option<u8>,
        rows: &Rows,
    ) -> OutcomeIndexes {
        let s = usize::from(slot);
        let first_row = self.next_row[s];
        let mut outcome_indexes = Vec::new();
        for (i, (a, cells)) in rows.rows.iter().enumerate() {
            let first_cell = self.next_cell[s];
            for (j, (b, decides)) in cells.iter().enumerate() {
                let outcome = self.outcome(slot, decides);
                self.array_set(
                    map_names::CELLS,
                    first_cell + j as u32,
                    Cell {
                        start: *b,
                        _pad: 0,
                        outcome,
                    },
                );
                outcome_indexes.push(outcome);
            }
            self.next_cell[s] += cells.len() as u32;
            self.array_set(
                map_names::ROWS,
                first_row + i as u32,
                Row {
                    start: *a,
                    _pad: 0,
                    first_cell,
                    cell_count: cells.len() as u32,
                },
            );
        }
        self.next_row[s] += rows.rows.len() as u32;
        let key = TableKey {
            slot,
            _pad: 0,
            protocol: protocol.map_or(PROTOCOL_OTHER, u16::from),
            table_id,
        };
        self.hash_insert(
            map_names::TABLE,
            key,
            TableValue {
                first_row,
                row_count: rows.rows.len() as u32,
            },
        );
        outcome_indexes
    }

    /// The absolute index of `decides` in `slot`'s outcomes, written on first use.
    fn outcome(&mut self, slot: u8, decides: &Decides) -> u32 {
        let s = usize::from(slot);
        let identity = (decides.verdict, decides.log, decides.rule_counter);
        if let Some(&index) = self.outcomes[s].get(&identity) {
            return index;
        }
        let index = self.next_outcome[s];
        self.next_outcome[s] += 1;
        self.array_set(
            map_names::OUTCOMES,
            index,
            Outcome {
                verdict: decides.verdict,
                flags: if decides.log { OUTCOME_LOG } else { 0 },
                _pad: [0; 2],
                rule_counter: decides.rule_counter,
            },
        );
        self.outcomes[s].insert(identity, index);
        index
    }

    pub fn host_addr(&mut self, ip: IpAddr) {
        let (family, addr) = addr_of(ip);
        let key = HostAddrKey {
            family,
            _pad: [0; 3],
            addr,
        };
        self.hash_insert(map_names::HOST_ADDRS, key, HostAddrValue { present: 1 });
    }

    /// Creates `ifindex`'s endpoint counters (zero) at the next free index, as the agent
    /// does when it attaches (the tests never free one).
    pub fn endpoint_stats_entry(&mut self, ifindex: u32) {
        if self.endpoint_index(ifindex).is_some() {
            return;
        }
        let index = {
            let indexes: HashMap<_, EndpointIndexKey, EndpointIndex> =
                HashMap::try_from(map(self.ebpf(), map_names::EP_INDEX))
                    .unwrap_or_else(|err| panic!("PAL_EP_INDEX: {err}"));
            indexes.keys().count() as u32
        };
        self.set_endpoint_index(ifindex, index);
    }

    /// Gives `ifindex` the counters at `PAL_EP_STATS[index]`, zeroed first: what the agent
    /// does when it attaches an interface afresh.
    pub fn set_endpoint_index(&mut self, ifindex: u32, index: u32) {
        let cpus = nr_cpus().unwrap_or_else(|(what, err)| panic!("{what}: {err}"));
        let values = PerCpuValues::try_from(vec![EndpointStats::default(); cpus])
            .unwrap_or_else(|err| panic!("{err}"));
        let mut array: PerCpuArray<_, EndpointStats> =
            PerCpuArray::try_from(map(self.ebpf(), map_names::EP_STATS))
                .unwrap_or_else(|err| panic!("PAL_EP_STATS: {err}"));
        array
            .set(index, values, 0)
            .unwrap_or_else(|err| panic!("cannot write PAL_EP_STATS[{index}]: {err}"));
        self.hash_insert(
            map_names::EP_INDEX,
            EndpointIndexKey { ifindex },
            EndpointIndex::new(index),
        );
    }

    /// `PAL_EP_INDEX[ifindex]`: where the endpoint counts in `PAL_EP_STATS`.
    pub fn endpoint_index(&mut self, ifindex: u32) -> Option<u32> {
        let indexes: HashMap<_, EndpointIndexKey, EndpointIndex> =
            HashMap::try_from(map(self.ebpf(), map_names::EP_INDEX))
                .unwrap_or_else(|err| panic!("PAL_EP_INDEX: {err}"));
        match indexes.get(&EndpointIndexKey { ifindex }, 0) {
            Ok(EndpointIndex { index, .. }) => Some(index),
            Err(aya::maps::MapError::KeyNotFound) => None,
            Err(err) => panic!("PAL_EP_INDEX[{ifindex}]: {err}"),
        }
    }

    /// `PAL_STATS`, summed over the CPUs, indexed by `STAT_*`.
    pub fn stats(&mut self) -> [u64; STAT_COUNT as usize] {
        let array: PerCpuArray<_, Counter> =
            PerCpuArray::try_from(map(self.ebpf(), map_names::STATS))
                .unwrap_or_else(|err| panic!("PAL_STATS: {err}"));
        let mut sums = [0u64; STAT_COUNT as usize];
        for (index, sum) in sums.iter_mut().enumerate() {
            let values = array
                .get(&(index as u32), 0)
                .unwrap_or_else(|err| panic!("PAL_STATS[{index}]: {err}"));
            *sum = values.iter().map(|counter| counter.packets).sum();
        }
        sums
    }

    /// How much `PAL_STATS[index]` grew from `before` (an earlier [`Dataplane::stats`]).
    pub fn stats_grown(&mut self, before: &[u64; STAT_COUNT as usize], index: u32) -> u64 {
        let now = self.stats();
        now[index as usize] - before[index as usize]
    }

    /// The counters of the endpoint behind `ifindex`, one value per CPU; `None` when it has
    /// no index.
    pub fn endpoint_stats_per_cpu(&mut self, ifindex: u32) -> Option<Vec<EndpointStats>> {
        let index = self.endpoint_index(ifindex)?;
        Some(self.endpoint_stats_at_per_cpu(index))
    }

    /// `PAL_EP_STATS[index]`, one value per CPU.
    pub fn endpoint_stats_at_per_cpu(&mut self, index: u32) -> Vec<EndpointStats> {
        let array: PerCpuArray<_, EndpointStats> =
            PerCpuArray::try_from(map(self.ebpf(), map_names::EP_STATS))
                .unwrap_or_else(|err| panic!("PAL_EP_STATS: {err}"));
        let values = array
            .get(&index, 0)
            .unwrap_or_else(|err| panic!("PAL_EP_STATS[{index}]: {err}"));
        values.iter().copied().collect()
    }

    /// `PAL_EP_STATS[index]`, summed over the CPUs.
    pub fn endpoint_stats_at(&mut self, index: u32) -> EndpointStats {
        self.endpoint_stats_at_per_cpu(index)
            .into_iter()
            .fold(EndpointStats::default(), |sum, cpu| sum + cpu)
    }

    /// The counters of the endpoint behind `ifindex`, summed over the CPUs.
    pub fn endpoint_stats(&mut self, ifindex: u32) -> EndpointStats {
        let values = self
            .endpoint_stats_per_cpu(ifindex)
            .unwrap_or_else(|| panic!("PAL_EP_INDEX has no entry for ifindex {ifindex}"));
        values
            .iter()
            .fold(EndpointStats::default(), |sum, cpu| sum + *cpu)
    }

    /// `PAL_RULE_STATS[rule_counter]`, summed over the CPUs.
    pub fn rule_stats(&mut self, rule_counter: u32) -> RuleStats {
        let array: PerCpuArray<_, RuleStats> =
            PerCpuArray::try_from(map(self.ebpf(), map_names::RULE_STATS))
                .unwrap_or_else(|err| panic!("PAL_RULE_STATS: {err}"));
        let values = array
            .get(&rule_counter, 0)
            .unwrap_or_else(|err| panic!("PAL_RULE_STATS[{rule_counter}]: {err}"));
        values
            .iter()
            .fold(RuleStats::default(), |sum, cpu| sum + *cpu)
    }

    /// Creates `ifindex`'s conntrack count (zero), as the agent does when it attaches: from
    /// then on its flows count against `Config::ct_budget`.
    pub fn ct_usage_entry(&mut self, ifindex: u32) {
        self.hash_insert(
            map_names::CT_USAGE,
            CtUsageKey { ifindex },
            CtUsage::default(),
        );
    }

    /// Sets `ifindex`'s conntrack count, as the programs' additions would have made it.
    pub fn set_ct_usage(&mut self, ifindex: u32, usage: CtUsage) {
        self.hash_insert(map_names::CT_USAGE, CtUsageKey { ifindex }, usage);
    }

    /// `PAL_CT_USAGE[ifindex]`.
    pub fn ct_usage(&mut self, ifindex: u32) -> CtUsage {
        let hash: HashMap<_, CtUsageKey, CtUsage> =
            HashMap::try_from(map(self.ebpf(), map_names::CT_USAGE))
                .unwrap_or_else(|err| panic!("PAL_CT_USAGE: {err}"));
        hash.get(&CtUsageKey { ifindex }, 0)
            .unwrap_or_else(|err| panic!("PAL_CT_USAGE[{ifindex}]: {err}"))
    }

    /// Writes `value` as the `PAL_CT` entry of `key` (to age an entry: what time does).
    pub fn set_conntrack(&mut self, key: &CtKey, value: CtValue) {
        self.hash_insert(map_names::CT, *key, value);
    }

    /// Deletes every `PAL_CT` entry (what eviction, or a new map ABI, does to live flows).
    pub fn forget_conntrack(&mut self) {
        let mut hash: HashMap<_, CtKey, CtValue> =
            HashMap::try_from(map(self.ebpf(), map_names::CT))
                .unwrap_or_else(|err| panic!("PAL_CT: {err}"));
        let keys: Vec<CtKey> = hash
            .keys()
            .map(|k| k.unwrap_or_else(|err| panic!("cannot read PAL_CT: {err}")))
            .collect();
        for key in keys {
            hash.remove(&key)
                .unwrap_or_else(|err| panic!("cannot delete from PAL_CT: {err}"));
        }
    }

    /// Every `PAL_CT` entry.
    pub fn conntrack(&mut self) -> Vec<(CtKey, CtValue)> {
        let hash: HashMap<_, CtKey, CtValue> = HashMap::try_from(map(self.ebpf(), map_names::CT))
            .unwrap_or_else(|err| panic!("PAL_CT: {err}"));
        hash.iter()
            .map(|entry| entry.unwrap_or_else(|err| panic!("cannot read PAL_CT: {err}")))
            .collect()
    }

    /// Takes the events on `PAL_EVENTS` so far.
    pub fn events(&mut self) -> Vec<Event> {
        let mut ring: RingBuf<&mut MapData> =
            RingBuf::try_from(map(self.ebpf(), map_names::EVENTS))
                .unwrap_or_else(|err| panic!("PAL_EVENTS: {err}"));
        let mut events = Vec::new();
        while let Some(item) = ring.next() {
            assert_eq!(item.len(), size_of::<Event>(), "an event of the wrong size");
            // SAFETY: `Event` is plain old data of exactly this size; read unaligned.
            events.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<Event>()) });
        }
        events
    }

    fn hash_insert<K: aya::Pod, V: aya::Pod>(&mut self, name: &str, key: K, value: V) {
        let mut hash: HashMap<_, K, V> =
            HashMap::try_from(map(self.ebpf(), name)).unwrap_or_else(|err| panic!("{name}: {err}"));
        hash.insert(key, value, 0)
            .unwrap_or_else(|err| panic!("cannot write {name}: {err}"));
    }

    fn array_set<V: aya::Pod>(&mut self, name: &str, index: u32, value: V) {
        let mut array: Array<_, V> =
            Array::try_from(map(self.ebpf(), name)).unwrap_or_else(|err| panic!("{name}: {err}"));
        array
            .set(index, value, 0)
            .unwrap_or_else(|err| panic!("cannot write {name}[{index}]: {err}"));
    }
}

/// The program enforcing `direction` (`DIR_EGRESS`: packets from the workload).
pub fn program_name(direction: u8) -> &'static str {
    match direction {
        DIR_EGRESS => program_names::FROM_WORKLOAD,
        DIR_INGRESS => program_names::TO_WORKLOAD,
        other => panic!("no direction {other}"),
    }
}

fn local_key(slot: u8, ifindex: u32, ip: IpAddr) -> LocalKey {
    let (family, addr) = addr_of(ip);
    LocalKey {
        slot,
        family,
        _pad: [0; 2],
        ifindex,
        addr,
    }
}
