//! The map ABI shared by the eBPF programs (`ebpf/`) and the agent: `#[repr(C)]` keys and
//! values, and the constants both sides must agree on. `no_std`, no dependencies, so the
//! kernel side can use it as is.
//!
//! # How the maps fit together
//!
//! ```text
//!  PAL_CONFIG[0]            generation (slot = generation % 2), switches
//!  PAL_LOCAL   (slot, ifindex, own address)  → local label-set ID      (absent: spoofed)
//!  PAL_REMOTE  (slot, peer address)          → remote ID               (endpoint addresses)
//!  PAL_LPM     (slot, family, peer prefix)   → remote ID               (CIDR classes, world /0)
//!  PAL_PEERS   (slot, dir, local, remote)    → peer group              (absent: group 0)
//!  PAL_POLICY  (slot, dir, local, group)     → table ID
//!  PAL_TABLE   (slot, table, protocol|OTHER) → rows [first, first+count) of PAL_ROWS
//!  PAL_ROWS    [i] (a-start, cells [first, first+count) of PAL_CELLS)  binary search on a
//!  PAL_CELLS   [i] (b-start, outcome index into PAL_OUTCOMES)           binary search on b
//!  PAL_OUTCOMES[i] verdict, log flag, rule counter
//! ```
//! `a`/`b` are (source port, destination port) for TCP and UDP, (type, code) for the ICMP
//! of the family, (0, 0) otherwise.
//!
//! A *peer group* gathers the remote IDs that one local ID's rules treat alike in one
//! direction; most peers are in group 0, which needs no `PAL_PEERS` entry. Two levels,
//! so that a rule change that concerns many peers rewrites a few `PAL_POLICY` entries
//! instead of one entry per (local, remote).
//!
//! Everything the compiler produces is written twice over, once per *slot*: the agent
//! writes the inactive slot, then flips [`Config::generation`], so a packet (which reads
//! the generation once) sees the old policy or the new one, never a mix. Indexes into the
//! array maps (`PAL_ROWS`, `PAL_CELLS`, `PAL_OUTCOMES`) are absolute: slot `s` owns
//! `[s * n / 2, (s + 1) * n / 2)` of a map with `n` entries, and the agent writes absolute
//! indexes, so the kernel side never computes offsets.
//!
//! Host-to-workload traffic (the packet's `ingress_ifindex` is 0: the host made it) is
//! allowed without policy unless [`CONFIG_HOST_TO_WORKLOAD_POLICY`]; workload-to-host
//! traffic (destination in `PAL_HOST_ADDRS`) is dropped after egress policy allowed it
//! unless [`CONFIG_WORKLOAD_TO_HOST_ACCEPT`].
//!
//! Not slotted: conntrack (`PAL_CT`, entries carry the generation they were last checked
//! under; `PAL_CT_USAGE` counts each endpoint's entries against its budget), fragments
//! (`PAL_FRAGS`), counters and events.
#![no_std]

/// Bumped whenever a key, value or map definition changes shape. Pins live under
/// `/sys/fs/bpf/palisade/<ABI_VERSION>/`, so an agent with a new ABI starts fresh instead of
/// adopting maps it cannot read, and takes over from the older one (see the agent's
/// `dataplane::older_abi`). The `abi-next` feature adds one, for the upgrade test.
pub const ABI_VERSION: u32 = if cfg!(feature = "abi-next") {
    RELEASED_ABI_VERSION + 1
} else {
    RELEASED_ABI_VERSION
};

/// The ABI of this source tree (what [`ABI_VERSION`] is without `abi-next`).
pub const RELEASED_ABI_VERSION: u32 = 6;

/// Map names (at most 15 bytes: the kernel's object-name limit). The agent pins each map
/// under its name.
pub mod map_names {
    pub const CONFIG: &str = "PAL_CONFIG";
    pub const LOCAL: &str = "PAL_LOCAL";
    pub const REMOTE: &str = "PAL_REMOTE";
    pub const LPM: &str = "PAL_LPM";
    pub const PEERS: &str = "PAL_PEERS";
    pub const POLICY: &str = "PAL_POLICY";
    pub const TABLE: &str = "PAL_TABLE";
    pub const ROWS: &str = "PAL_ROWS";
    pub const CELLS: &str = "PAL_CELLS";
    pub const OUTCOMES: &str = "PAL_OUTCOMES";
    pub const CT: &str = "PAL_CT";
    pub const FRAGS: &str = "PAL_FRAGS";
    pub const EP_STATS: &str = "PAL_EP_STATS";
    pub const EP_INDEX: &str = "PAL_EP_INDEX";
    pub const RULE_STATS: &str = "PAL_RULE_STATS";
    pub const STATS: &str = "PAL_STATS";
    pub const EVENTS: &str = "PAL_EVENTS";
    pub const HOST_ADDRS: &str = "PAL_HOST_ADDRS";
    pub const CT_USAGE: &str = "PAL_CT_USAGE";
    pub const DELIVER: &str = "PAL_DELIVER";

    /// Every map, in the order the README lists them.
    pub const ALL: [&str; 20] = [
        CONFIG, LOCAL, REMOTE, LPM, PEERS, POLICY, TABLE, ROWS, CELLS, OUTCOMES, CT, CT_USAGE,
        FRAGS, EP_INDEX, EP_STATS, RULE_STATS, STATS, EVENTS, HOST_ADDRS, DELIVER,
    ];
}

/// Default map sizes (`max_entries`). The slotted maps hold two slots, so each slot gets half.
pub mod capacity {
    pub const LOCAL: u32 = 2 * 8_192;
    pub const REMOTE: u32 = 2 * 65_536;
    pub const LPM: u32 = 2 * 16_384;
    pub const PEERS: u32 = 2 * 262_144;
    pub const POLICY: u32 = 2 * 65_536;
    pub const TABLE: u32 = 2 * 32_768;
    pub const ROWS: u32 = 2 * 65_536;
    pub const CELLS: u32 = 2 * 262_144;
    pub const OUTCOMES: u32 = 2 * 16_384;
    pub const CT: u32 = 262_144;
    /// One entry per attached host veth, like `EP_INDEX`.
    pub const CT_USAGE: u32 = 8_192;
    pub const FRAGS: u32 = 16_384;
    pub const EP_INDEX: u32 = 8_192;
    /// One slot per `EP_INDEX` entry.
    pub const EP_STATS: u32 = 8_192;
    pub const RULE_STATS: u32 = 65_536;
    /// Bytes; a power of two and a multiple of the page size.
    pub const EVENTS: u32 = 1 << 20;
    pub const HOST_ADDRS: u32 = 1_024;
}

/// The TC programs. Both are attached to every local workload's host-side veth.
pub mod program_names {
    /// On the host veth's ingress: packets from the workload, its egress policy.
    pub const FROM_WORKLOAD: &str = "palisade_from_wl";
    /// On the host veth's egress: packets to the workload, its ingress policy.
    pub const TO_WORKLOAD: &str = "palisade_to_wl";
    /// Not attached: `FROM_WORKLOAD` tail-calls it (through `PAL_DELIVER[DELIVER_SLOT]`) for a
    /// packet of a flow it forwards to another local workload, whose ingress policy and
    /// conntrack it checks before delivering the packet into that workload's namespace.
    pub const DELIVER: &str = "palisade_deliver";
    /// Does nothing: the baseline `cargo xtask bench` measures the others against.
    pub const EMPTY: &str = "palisade_empty";
}

pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

/// Policy directions, from the container's point of view. Ingress is enforced on the host
/// veth's egress (packets going into the container), egress on the host veth's ingress.
pub const DIR_INGRESS: u8 = 0;
pub const DIR_EGRESS: u8 = 1;

pub const VERDICT_DENY: u8 = 0;
pub const VERDICT_ALLOW: u8 = 1;

/// The peer group of every remote ID without a `PAL_PEERS` entry.
pub const GROUP_DEFAULT: u32 = 0;
/// [`TableKey::protocol`] of the entry every protocol without its own entry uses.
pub const PROTOCOL_OTHER: u16 = 256;
/// [`Outcome::rule_counter`] when no rule decided (end of policies, missing profile, ...).
pub const NO_RULE: u32 = u32::MAX;
/// Binary searches over `PAL_ROWS` and `PAL_CELLS` run at most this many steps, enough for
/// any range of 2^16 entries.
pub const SEARCH_STEPS: u32 = 17;

/// An address in 16 bytes: IPv6 as is, IPv4 in the first 4 bytes and zeros after.
pub type Addr = [u8; 16];

/// `PAL_CONFIG[0]`: the one value the agent flips, and run-time switches.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Bumped by the agent after each complete write of a slot; `generation % 2` is the
    /// slot packets use. Conntrack entries admitted under another generation are checked
    /// again against the current policy.
    pub generation: u32,
    /// `CONFIG_*` bits.
    pub flags: u32,
    /// A denied packet is reported on `PAL_EVENTS` when `random & mask == 0`: 0 reports
    /// every drop, 15 one in 16.
    pub drop_event_mask: u32,
    /// How many `PAL_CT` entries each endpoint (host veth) may hold; a new flow beyond it
    /// is dropped ([`DROP_CT_BUDGET`]). 0: no budget.
    pub ct_budget: u32,
    /// With [`CONFIG_ALLOW_EVENTS`], a new flow policy allowed is reported on `PAL_EVENTS`
    /// when `random & mask == 0`, as drops are by `drop_event_mask`.
    pub allow_event_mask: u32,
}

/// Kernel-side debug logging (aya-log); off by default.
pub const CONFIG_DEBUG_LOG: u32 = 1 << 0;
/// Traffic from the host itself to a local workload goes through the workload's ingress
/// policy. Off by default: like Felix, the host may always reach its workloads.
pub const CONFIG_HOST_TO_WORKLOAD_POLICY: u32 = 1 << 1;
/// Traffic from a workload to the host itself, once its egress policy allowed it, is
/// accepted. Off by default: Felix's `DefaultEndpointToHostAction` is DROP.
pub const CONFIG_WORKLOAD_TO_HOST_ACCEPT: u32 = 1 << 2;
/// New flows that are allowed are reported on `PAL_EVENTS` ([`EVENT_ALLOW`], sampled by
/// [`Config::allow_event_mask`]). Off in a zeroed configuration, so that nothing is
/// reported before an agent asks for it.
pub const CONFIG_ALLOW_EVENTS: u32 = 1 << 3;
/// A packet a workload sends to another workload of this node, once its egress policy
/// passed it, is forwarded by the programs (`bpf_redirect_neigh` to the destination's host
/// veth, whose program still applies its ingress policy) instead of by the host's IP
/// stack, when its flow's first packet went through the stack to that veth under the same
/// addresses and ports ([`CtValue::forward_ifindex`]). Off in a zeroed configuration; the
/// agent turns it on unless told not to.
pub const CONFIG_LOCAL_REDIRECT: u32 = 1 << 4;

/// `PAL_LOCAL` key: an address of the workload behind a host veth.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LocalKey {
    pub slot: u8,
    pub family: u8,
    pub _pad: [u8; 2],
    pub ifindex: u32,
    pub addr: Addr,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LocalValue {
    pub local_id: u32,
}

/// `PAL_REMOTE` key: an endpoint address anywhere in the cluster.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RemoteKey {
    pub slot: u8,
    pub family: u8,
    pub _pad: [u8; 2],
    pub addr: Addr,
}

/// `PAL_REMOTE` and `PAL_LPM` value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RemoteValue {
    pub remote_id: u32,
}

/// The data part of a `PAL_LPM` key (after the `u32` prefix length, which counts the 16
/// bits of `slot` and `family` plus the address prefix length).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LpmData {
    pub slot: u8,
    pub family: u8,
    pub addr: Addr,
    /// Makes the key 24 bytes, so the value behind it is 4-byte aligned. Never part of a
    /// prefix.
    pub _pad: [u8; 2],
}

/// Bits of an [`LpmData`] before the address.
pub const LPM_HEADER_BITS: u32 = 16;

/// `PAL_PEERS` key: a remote ID as one local ID sees it in one direction.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PeerKey {
    pub slot: u8,
    pub direction: u8,
    pub _pad: [u8; 2],
    pub local_id: u32,
    pub remote_id: u32,
}

/// `PAL_PEERS` value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PeerValue {
    /// Never [`GROUP_DEFAULT`]: those peers have no entry.
    pub group: u32,
}

/// `PAL_POLICY` key: one peer group of a local ID and direction.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PolicyKey {
    pub slot: u8,
    pub direction: u8,
    pub _pad: [u8; 2],
    pub local_id: u32,
    pub group: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PolicyValue {
    pub table_id: u32,
}

/// `PAL_TABLE` key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TableKey {
    pub slot: u8,
    pub _pad: u8,
    /// An IP protocol number, or [`PROTOCOL_OTHER`].
    pub protocol: u16,
    pub table_id: u32,
}

/// `PAL_TABLE` value: the table's rows for one protocol.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TableValue {
    pub first_row: u32,
    pub row_count: u32,
}

/// `PAL_ROWS` value: from `start` (of key `a`) to the next row's start.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Row {
    pub start: u16,
    pub _pad: u16,
    pub first_cell: u32,
    pub cell_count: u32,
}

/// `PAL_CELLS` value: from `start` (of key `b`) to the next cell's start.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Cell {
    pub start: u16,
    pub _pad: u16,
    pub outcome: u32,
}

/// `PAL_OUTCOMES` value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Outcome {
    /// [`VERDICT_ALLOW`] or [`VERDICT_DENY`].
    pub verdict: u8,
    /// `OUTCOME_*` bits.
    pub flags: u8,
    pub _pad: [u8; 2],
    /// Index into `PAL_RULE_STATS` of the deciding rule, or [`NO_RULE`].
    pub rule_counter: u32,
}

/// `log` rules were passed on the way to the verdict: report the packet on `PAL_EVENTS`.
pub const OUTCOME_LOG: u8 = 1 << 0;

/// `PAL_CT` key: a flow as seen from the workload behind `ifindex`, so that a packet and
/// its reply give the same key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtKey {
    pub ifindex: u32,
    pub family: u8,
    pub protocol: u8,
    /// The workload's port (TCP, UDP, SCTP), or the ICMP echo identifier; 0 otherwise.
    pub local_port: u16,
    pub remote_port: u16,
    pub _pad: u16,
    pub local_addr: Addr,
    pub remote_addr: Addr,
}

/// `PAL_CT` value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtValue {
    /// [`Config::generation`] under which the flow was last found allowed (or, with
    /// [`CT_REVOKED`], denied).
    pub generation: u32,
    /// [`DIR_EGRESS`]: the workload opened the flow; [`DIR_INGRESS`]: the peer did.
    pub origin: u8,
    /// `CT_*` bits.
    pub flags: u8,
    /// ICMP type and code of the opening packet (to check the flow again under new policy).
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// CLOCK_MONOTONIC of the last packet, at tick resolution (`bpf_ktime_get_coarse_ns`);
    /// for a revoked flow, of the revocation.
    pub last_seen_ns: u64,
    /// The `PAL_EP_STATS` index of the endpoint behind the key's ifindex when the flow was
    /// last decided (opened or re-checked), or [`ENDPOINT_NONE`]: packets of the flow
    /// count there without asking `PAL_EP_INDEX`. An endpoint's index changes only when it
    /// is attached afresh, and that comes with a new generation, which re-decides the flow.
    pub endpoint: u32,
    /// The host veth the flow's packets from this workload are forwarded to by the
    /// programs ([`CONFIG_LOCAL_REDIRECT`]), or 0: they go through the host's stack. Set
    /// by the destination's `palisade_to_wl` when it opens its own entry for a packet the
    /// stack brought from this workload's host veth (`ingress_ifindex`) under this very
    /// key's addresses and ports, so that a flow the host NATs is never found (its packets
    /// arrive under other addresses) and stays on the stack. The destination's own entry
    /// gets this workload's host veth, for the replies. TCP, UDP and SCTP only; taken
    /// over from the shape's old padding (0 in entries older programs wrote).
    pub forward_ifindex: u32,
}

/// A FIN or RST was seen: the entry expires after [`CT_TIMEOUT_CLOSING_NS`].
pub const CT_CLOSING: u8 = 1 << 0;
/// The policy of [`CtValue::generation`] denies the flow: every packet of its key, from
/// either side, is dropped until the entry expires ([`CT_TIMEOUT_REVOKED_NS`] after the
/// cut) or a later generation allows the flow again.
pub const CT_REVOKED: u8 = 1 << 1;

/// Idle timeouts, after which an entry no longer counts (the agent's sweep, or the LRU,
/// removes it).
pub const CT_TIMEOUT_TCP_NS: u64 = 6 * 3600 * 1_000_000_000;
pub const CT_TIMEOUT_CLOSING_NS: u64 = 10 * 1_000_000_000;
pub const CT_TIMEOUT_OTHER_NS: u64 = 60 * 1_000_000_000;
/// How long a revoked flow stays cut, counted from the cut (retransmissions do not extend
/// it): TCP's close timeout. After it, a packet of the flow is judged like any other.
pub const CT_TIMEOUT_REVOKED_NS: u64 = CT_TIMEOUT_CLOSING_NS;

/// How long the entry `value` of a flow of `protocol` lives without packets.
#[inline(always)]
pub fn ct_timeout_ns(value: &CtValue, protocol: u8) -> u64 {
    if value.flags & CT_REVOKED != 0 {
        CT_TIMEOUT_REVOKED_NS
    } else if value.flags & CT_CLOSING != 0 {
        CT_TIMEOUT_CLOSING_NS
    } else if protocol == IPPROTO_TCP {
        CT_TIMEOUT_TCP_NS
    } else {
        CT_TIMEOUT_OTHER_NS
    }
}

/// Whether the entry `value` of a flow of `protocol` has expired at `now_ns` (the clock of
/// [`CtValue::last_seen_ns`]): the programs treat it as absent, and the agent's sweep
/// deletes it. The age is signed: an entry seen after `now_ns` (by another CPU, or by the
/// programs while the agent's sweep walks the table with the time it took at its start) is
/// live; an unsigned difference would call the busiest flows expired and cut them.
#[inline(always)]
pub fn ct_expired(value: &CtValue, protocol: u8, now_ns: u64) -> bool {
    (now_ns.wrapping_sub(value.last_seen_ns) as i64) > ct_timeout_ns(value, protocol) as i64
}

const IPPROTO_TCP: u8 = 6;

/// `PAL_CT_USAGE` key: one per attached host veth, created by the agent when it attaches.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtUsageKey {
    pub ifindex: u32,
}

/// `PAL_CT_USAGE` value: how much of its [`Config::ct_budget`] an endpoint uses.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtUsage {
    /// `PAL_CT` entries of the endpoint. The programs add one (atomically) for each key
    /// they insert; the agent's sweep subtracts the entries it deletes and those that
    /// vanished without it (evicted), so between sweeps this may count too many, never too
    /// few (but for the programs' additions during the sweep's own read-and-write).
    pub entries: u64,
    /// Entries that vanished without the agent deleting them (LRU evictions, or deleted by
    /// hand), as the agent's sweeps found. Written by the agent only.
    pub evicted: u64,
}

/// `PAL_FRAGS` key: the datagram a non-first fragment belongs to, as it crosses one
/// enforcement point (interface and direction: a first fragment allowed out of a workload
/// says nothing about fragments coming in).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey {
    pub ifindex: u32,
    /// IPv4 identification (16 bits) or IPv6 fragment header identification.
    pub id: u32,
    pub family: u8,
    pub protocol: u8,
    /// `DIR_INGRESS` or `DIR_EGRESS`.
    pub direction: u8,
    pub _pad: [u8; 1],
    pub src: Addr,
    pub dst: Addr,
}

/// `PAL_FRAGS` value: what the datagram's first fragment got.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragValue {
    pub verdict: u8,
    pub _pad: [u8; 7],
    pub last_seen_ns: u64,
}

/// `PAL_HOST_ADDRS` key: an address of the host itself (any interface), kept by the agent
/// so that the programs can tell workload-to-host traffic from forwarded traffic.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HostAddrKey {
    pub family: u8,
    pub _pad: [u8; 3],
    pub addr: Addr,
}

/// `PAL_HOST_ADDRS` value (its presence is what counts).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HostAddrValue {
    pub present: u32,
}

/// `PAL_EP_INDEX` key: one entry per attached host veth, created by the agent.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EndpointIndexKey {
    pub ifindex: u32,
}

/// `PAL_EP_INDEX` value: the endpoint's slot in `PAL_EP_STATS`. The agent hands indexes
/// out when it attaches (zeroing the slot first) and takes them back when the interface
/// goes; a per-CPU array rather than a per-CPU hash keyed by ifindex, so that a packet of
/// a known flow (which carries the index in [`CtValue::endpoint`]) counts without a hash
/// lookup.
///
/// The MACs are the programs' to fill: the destination addresses of frames the host's
/// stack sends to the workload (its own MAC, as the host's neighbour table has it, and the
/// host veth's). The agent writes zeros; `palisade_to_wl` learns them from the first
/// packet of a flow the stack forwarded from another local workload, and once they are
/// known `palisade_from_wl` delivers that flow's packets into the workload's namespace
/// with these MACs (see [`program_names::DELIVER`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EndpointIndex {
    pub index: u32,
    /// The workload's MAC: a frame's destination.
    pub workload_mac: [u8; 6],
    /// The host veth's MAC: a frame's source. All zeros until learnt.
    pub host_mac: [u8; 6],
}

impl EndpointIndex {
    /// The entry the agent writes for an endpoint at `PAL_EP_STATS[index]`: MACs unknown.
    pub const fn new(index: u32) -> Self {
        Self {
            index,
            workload_mac: [0; 6],
            host_mac: [0; 6],
        }
    }
}

/// The one slot of `PAL_DELIVER` (a program array): [`program_names::DELIVER`].
pub const DELIVER_SLOT: u32 = 0;

/// [`CtValue::endpoint`] of a flow whose interface had no `PAL_EP_INDEX` entry.
pub const ENDPOINT_NONE: u32 = u32::MAX;

/// `PAL_EP_STATS` value (per CPU, at the endpoint's [`EndpointIndex`]), directions from
/// the workload's point of view.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EndpointStats {
    pub ingress_allowed_packets: u64,
    pub ingress_allowed_bytes: u64,
    pub ingress_denied_packets: u64,
    pub ingress_denied_bytes: u64,
    pub egress_allowed_packets: u64,
    pub egress_allowed_bytes: u64,
    pub egress_denied_packets: u64,
    pub egress_denied_bytes: u64,
}

/// Summing the per-CPU values of one entry.
impl core::ops::Add for EndpointStats {
    type Output = EndpointStats;

    fn add(self, o: EndpointStats) -> EndpointStats {
        EndpointStats {
            ingress_allowed_packets: self.ingress_allowed_packets + o.ingress_allowed_packets,
            ingress_allowed_bytes: self.ingress_allowed_bytes + o.ingress_allowed_bytes,
            ingress_denied_packets: self.ingress_denied_packets + o.ingress_denied_packets,
            ingress_denied_bytes: self.ingress_denied_bytes + o.ingress_denied_bytes,
            egress_allowed_packets: self.egress_allowed_packets + o.egress_allowed_packets,
            egress_allowed_bytes: self.egress_allowed_bytes + o.egress_allowed_bytes,
            egress_denied_packets: self.egress_denied_packets + o.egress_denied_packets,
            egress_denied_bytes: self.egress_denied_bytes + o.egress_denied_bytes,
        }
    }
}

/// `PAL_RULE_STATS` value (per CPU): packets of new flows a rule decided.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RuleStats {
    pub packets: u64,
    pub bytes: u64,
}

impl core::ops::Add for RuleStats {
    type Output = RuleStats;

    fn add(self, o: RuleStats) -> RuleStats {
        RuleStats {
            packets: self.packets + o.packets,
            bytes: self.bytes + o.bytes,
        }
    }
}

/// `PAL_STATS` value (per CPU), indexed by `STAT_*`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Counter {
    pub packets: u64,
}

/// `PAL_STATS` indexes. The `DROP_*` ones double as [`Event::reason`].
pub const DROP_POLICY: u32 = 0;
/// Headers shorter than they say, bad lengths, bad IHL, too many IPv6 extension headers.
pub const DROP_MALFORMED: u32 = 1;
/// A packet from a workload with a source address that is not one of its own.
pub const DROP_SPOOFED: u32 = 2;
/// A packet to a workload for an address that is not one of its own.
pub const DROP_NOT_LOCAL: u32 = 3;
/// A non-first fragment whose first fragment was not seen (or was denied).
pub const DROP_FRAGMENT: u32 = 4;
/// A live flow the current policy no longer allows.
pub const DROP_REVOKED: u32 = 5;
/// A workload's packet to the host itself (Felix's `DefaultEndpointToHostAction` DROP).
pub const DROP_TO_HOST: u32 = 6;
/// An EtherType that is neither IP nor ARP.
pub const DROP_UNKNOWN_ETHERTYPE: u32 = 7;
pub const STAT_CT_ESTABLISHED: u32 = 8;
pub const STAT_CT_NEW: u32 = 9;
pub const STAT_CT_RECHECKED: u32 = 10;
pub const STAT_IP_OPTIONS: u32 = 11;
pub const STAT_FRAGMENTS: u32 = 12;
pub const STAT_EVENTS_LOST: u32 = 13;
pub const STAT_PASSED_ARP_ND: u32 = 14;
pub const STAT_HOST_TO_WORKLOAD: u32 = 15;
/// A TCP packet that is not a SYN, of no flow conntrack knows, that policy allowed in the
/// direction it travels: the flow is tracked again from here ("picked up").
pub const STAT_CT_PICKED_UP: u32 = 16;
/// A new flow policy allowed, from or to an endpoint whose conntrack budget
/// ([`Config::ct_budget`]) is used up.
pub const DROP_CT_BUDGET: u32 = 17;
pub const STAT_COUNT: u32 = 18;

/// `STAT_*` names, as `palisade stats` prints them.
pub const STAT_NAMES: [&str; STAT_COUNT as usize] = [
    "dropped_policy",
    "dropped_malformed",
    "dropped_spoofed",
    "dropped_not_local",
    "dropped_fragment",
    "dropped_revoked",
    "dropped_to_host",
    "dropped_unknown_ethertype",
    "conntrack_established",
    "conntrack_new",
    "conntrack_rechecked",
    "ip_options",
    "fragments",
    "events_lost",
    "passed_arp_nd",
    "host_to_workload",
    "conntrack_picked_up",
    "dropped_conntrack_budget",
];

/// A packet passed `log` rules on its way to a verdict (of a new flow, or denied).
pub const EVENT_LOG: u8 = 1;
/// A dropped packet (sampled by [`Config::drop_event_mask`]).
pub const EVENT_DROP: u8 = 2;
/// The opening packet of a flow that was allowed (only with [`CONFIG_ALLOW_EVENTS`], sampled
/// by [`Config::allow_event_mask`]); never sent for packets of flows conntrack knows.
pub const EVENT_ALLOW: u8 = 3;

/// One event in `EVENT_WAKEUP_MASK + 1` (at random) wakes the agent's reader at once; the
/// others are submitted without a wakeup and read at its next poll, at most
/// [`EVENT_POLL_INTERVAL_MS`] later. A wakeup is an interrupt the sending CPU raises to
/// itself (IRQ work), on the packet's path; in a virtual machine that interrupt traps to
/// the hypervisor and cost 20 us of a 1-byte TCP connection's ~110 us here. A burst still
/// wakes the reader every 256 events or so, well before a ring buffer of the default size
/// (about 18,000 events) fills.
pub const EVENT_WAKEUP_MASK: u32 = 0xff;
/// How often the agent reads `PAL_EVENTS` without being woken.
pub const EVENT_POLL_INTERVAL_MS: u64 = 50;

/// A `PAL_EVENTS` record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Event {
    /// An `EVENT_*`.
    pub kind: u8,
    pub direction: u8,
    pub family: u8,
    pub protocol: u8,
    /// A `DROP_*` for drops (and log events of dropped packets); for [`EVENT_ALLOW`] the
    /// `STAT_*` that counted the pass ([`STAT_CT_NEW`], [`STAT_CT_PICKED_UP`] or
    /// [`STAT_HOST_TO_WORKLOAD`]); `u32::MAX` for log events of packets that passed.
    pub reason: u32,
    pub ifindex: u32,
    /// The generation whose maps decided (so the agent knows which image `outcome` is in).
    pub generation: u32,
    /// Absolute `PAL_OUTCOMES` index, or `u32::MAX` when no policy lookup decided.
    pub outcome: u32,
    /// Ports, or ICMP type and code.
    pub a: u16,
    pub b: u16,
    pub src: Addr,
    pub dst: Addr,
    /// Packet length in bytes.
    pub len: u32,
    pub _pad: u32,
    /// When the program saw the packet: `CLOCK_BOOTTIME` in nanoseconds
    /// (`bpf_ktime_get_boot_ns`), which, unlike `CLOCK_MONOTONIC`, keeps counting while the
    /// machine is suspended, so its distance to wall-clock time stays what it was.
    pub time_ns: u64,
}

#[cfg(feature = "user")]
mod pod {
    use super::*;

    // SAFETY: all of these are `#[repr(C)]`, made only of integers and byte arrays, with
    // every padding byte an explicit field, so every bit pattern is valid.
    unsafe impl aya::Pod for Config {}
    unsafe impl aya::Pod for LocalKey {}
    unsafe impl aya::Pod for LocalValue {}
    unsafe impl aya::Pod for RemoteKey {}
    unsafe impl aya::Pod for RemoteValue {}
    unsafe impl aya::Pod for LpmData {}
    unsafe impl aya::Pod for PeerKey {}
    unsafe impl aya::Pod for PeerValue {}
    unsafe impl aya::Pod for PolicyKey {}
    unsafe impl aya::Pod for PolicyValue {}
    unsafe impl aya::Pod for TableKey {}
    unsafe impl aya::Pod for TableValue {}
    unsafe impl aya::Pod for Row {}
    unsafe impl aya::Pod for Cell {}
    unsafe impl aya::Pod for Outcome {}
    unsafe impl aya::Pod for CtKey {}
    unsafe impl aya::Pod for CtValue {}
    unsafe impl aya::Pod for CtUsageKey {}
    unsafe impl aya::Pod for CtUsage {}
    unsafe impl aya::Pod for FragKey {}
    unsafe impl aya::Pod for FragValue {}
    unsafe impl aya::Pod for EndpointIndexKey {}
    unsafe impl aya::Pod for EndpointIndex {}
    unsafe impl aya::Pod for EndpointStats {}
    unsafe impl aya::Pod for RuleStats {}
    unsafe impl aya::Pod for Counter {}
    unsafe impl aya::Pod for Event {}
    unsafe impl aya::Pod for HostAddrKey {}
    unsafe impl aya::Pod for HostAddrValue {}
}

/// Layout checks: a size change here is an ABI change (bump [`ABI_VERSION`]).
const _: () = {
    assert!(core::mem::size_of::<Config>() == 20);
    assert!(core::mem::size_of::<LocalKey>() == 24);
    assert!(core::mem::size_of::<RemoteKey>() == 20);
    assert!(core::mem::size_of::<LpmData>() == 20);
    assert!(core::mem::size_of::<PeerKey>() == 12);
    assert!(core::mem::size_of::<PolicyKey>() == 12);
    assert!(core::mem::size_of::<TableKey>() == 8);
    assert!(core::mem::size_of::<Row>() == 12);
    assert!(core::mem::size_of::<Cell>() == 8);
    assert!(core::mem::size_of::<Outcome>() == 8);
    assert!(core::mem::size_of::<CtKey>() == 44);
    assert!(core::mem::size_of::<CtValue>() == 24);
    assert!(core::mem::size_of::<CtUsage>() == 16);
    assert!(core::mem::size_of::<FragKey>() == 44);
    assert!(core::mem::size_of::<FragValue>() == 16);
    assert!(core::mem::size_of::<EndpointStats>() == 64);
    assert!(core::mem::size_of::<Event>() == 72);
    assert!(core::mem::offset_of!(Event, time_ns) == 64);
};
