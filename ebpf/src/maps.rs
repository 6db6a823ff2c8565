//! Every map of the ABI, declared once: names from `palisade_common::map_names`, sizes from
//! `palisade_common::capacity`, keys and values from `palisade_common`.
//!
//! They are BTF maps (`#[btf_map]`), so the kernel knows their key and value types and
//! `bpftool map dump` prints them field by field. What each map means, and how the slots of
//! the slotted ones work, is documented once, in `palisade_common`.

use aya_ebpf::{
    btf_maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
    macros::btf_map,
};
use palisade_common::{
    Cell, Config, Counter, CtKey, CtUsage, CtUsageKey, CtValue, EndpointIndex, EndpointIndexKey,
    EndpointStats, Event, FragKey, FragValue, HostAddrKey, HostAddrValue, LocalKey, LocalValue,
    LpmData, Outcome, PeerKey, PeerValue, PolicyKey, PolicyValue, RemoteKey, RemoteValue, Row,
    RuleStats, STAT_COUNT, TableKey, TableValue, capacity,
};

#[btf_map]
pub static PAL_CONFIG: Array<Config, 1> = Array::new();

#[btf_map]
pub static PAL_LOCAL: HashMap<LocalKey, LocalValue, { capacity::LOCAL as usize }> = HashMap::new();

#[btf_map]
pub static PAL_REMOTE: HashMap<RemoteKey, RemoteValue, { capacity::REMOTE as usize }> =
    HashMap::new();

#[btf_map]
pub static PAL_LPM: LpmTrie<LpmData, RemoteValue, { capacity::LPM as usize }> = LpmTrie::new();

#[btf_map]
pub static PAL_PEERS: HashMap<PeerKey, PeerValue, { capacity::PEERS as usize }> = HashMap::new();

#[btf_map]
pub static PAL_POLICY: HashMap<PolicyKey, PolicyValue, { capacity::POLICY as usize }> =
    HashMap::new();

#[btf_map]
pub static PAL_TABLE: HashMap<TableKey, TableValue, { capacity::TABLE as usize }> = HashMap::new();

#[btf_map]
pub static PAL_ROWS: Array<Row, { capacity::ROWS as usize }> = Array::new();

#[btf_map]
pub static PAL_CELLS: Array<Cell, { capacity::CELLS as usize }> = Array::new();

#[btf_map]
pub static PAL_OUTCOMES: Array<Outcome, { capacity::OUTCOMES as usize }> = Array::new();

/// LRU: a full table evicts the flows idle longest instead of refusing new ones.
#[btf_map]
pub static PAL_CT: LruHashMap<CtKey, CtValue, { capacity::CT as usize }> = LruHashMap::new();

/// Each endpoint's `PAL_CT` entries, against its budget: a plain hash (the agent creates
/// an entry when it attaches), updated with atomic adds.
#[btf_map]
pub static PAL_CT_USAGE: HashMap<CtUsageKey, CtUsage, { capacity::CT_USAGE as usize }> =
    HashMap::new();

/// LRU for the same reason as `PAL_CT`: records of long-reassembled datagrams age out alone.
#[btf_map]
pub static PAL_FRAGS: LruHashMap<FragKey, FragValue, { capacity::FRAGS as usize }> =
    LruHashMap::new();

/// Each attached host veth's slot in `PAL_EP_STATS` (the agent creates the entry when it
/// attaches).
#[btf_map]
pub static PAL_EP_INDEX: HashMap<EndpointIndexKey, EndpointIndex, { capacity::EP_INDEX as usize }> =
    HashMap::new();

/// Per CPU, so counting needs no atomic operations; the agent sums the CPUs. An array, so
/// that a packet whose conntrack entry carries the index counts with an inlined lookup.
#[btf_map]
pub static PAL_EP_STATS: PerCpuArray<EndpointStats, { capacity::EP_STATS as usize }> =
    PerCpuArray::new();

#[btf_map]
pub static PAL_RULE_STATS: PerCpuArray<RuleStats, { capacity::RULE_STATS as usize }> =
    PerCpuArray::new();

#[btf_map]
pub static PAL_STATS: PerCpuArray<Counter, { STAT_COUNT as usize }> = PerCpuArray::new();

#[btf_map]
pub static PAL_EVENTS: RingBuf<Event, { capacity::EVENTS as usize }> = RingBuf::new();

#[btf_map]
pub static PAL_HOST_ADDRS: HashMap<HostAddrKey, HostAddrValue, { capacity::HOST_ADDRS as usize }> =
    HashMap::new();

/// `palisade_deliver`, for `palisade_from_wl` to tail-call: the agent puts it in after
/// loading (an empty slot makes the tail call fall through to the neighbour path).
#[btf_map]
pub static PAL_DELIVER: ProgramArray<1> = ProgramArray::new();

/// `PAL_CONFIG[0]`, copied: a packet reads the configuration once, so the generation (and
/// with it the slot) cannot change under it half way.
#[inline(always)]
pub fn config() -> Config {
    PAL_CONFIG.get(0).copied().unwrap_or_default()
}
