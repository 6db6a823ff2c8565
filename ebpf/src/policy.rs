//! The policy decision: one lookup chain from (local ID, peer, packet keys) to an outcome,
//! used alike for new flows and for conntrack's re-checks under a new generation.
//!
//! ```text
//! peer ─PAL_REMOTE / PAL_LPM─▶ remote ID ─PAL_PEERS (absent: group 0)─▶ group ─PAL_POLICY─▶ table
//! table ─PAL_TABLE (protocol, then PROTOCOL_OTHER)─▶ rows ─search a─▶ cells ─search b─▶ outcome
//! ```
//! Apart from `PAL_PEERS`, where most peers have no entry by design, any miss or
//! inconsistency denies: the agent writes complete images, so a gap means something is
//! wrong, and failing closed is the only safe answer.

use aya_ebpf::btf_maps::Array;
use palisade_common::{
    Addr, GROUP_DEFAULT, NO_RULE, PROTOCOL_OTHER, PeerKey, PolicyKey, SEARCH_STEPS, TableKey,
    TableValue, VERDICT_ALLOW,
};

use crate::{
    identity,
    maps::{PAL_CELLS, PAL_OUTCOMES, PAL_PEERS, PAL_POLICY, PAL_ROWS, PAL_TABLE},
    parse::{L4Kind, PROTO_TCP, PROTO_UDP, Packet},
};

/// What policy is asked: the packet as it is on the wire, seen from the local workload.
pub struct Query<'a> {
    pub slot: u8,
    pub direction: u8,
    pub local_id: u32,
    pub family: u8,
    /// The other end: the destination of an egress packet, the source of an ingress one.
    pub peer: &'a Addr,
    pub protocol: u8,
    pub a: u16,
    pub b: u16,
}

#[derive(Clone, Copy)]
pub struct Decision {
    pub allowed: bool,
    /// Absolute `PAL_OUTCOMES` index, or `u32::MAX` when no outcome was reached.
    pub outcome: u32,
    /// `OUTCOME_*` bits.
    pub flags: u8,
    pub rule_counter: u32,
}

impl Decision {
    /// A lookup that found no outcome.
    pub const MISSING: Self = Self {
        allowed: false,
        outcome: u32::MAX,
        flags: 0,
        rule_counter: NO_RULE,
    };
}

/// The table keys of a packet: ports for TCP and UDP, type and code for the family's ICMP
/// (which `parse` only reads for that ICMP), nothing for any other protocol (rules only
/// have ports for TCP and UDP; SCTP's ports are for conntrack alone).
#[inline(always)]
pub fn table_keys(packet: &Packet) -> (u16, u16) {
    let l4 = &packet.l4;
    match l4.kind {
        L4Kind::Ports if packet.protocol == PROTO_TCP || packet.protocol == PROTO_UDP => {
            (l4.a, l4.b)
        }
        L4Kind::Icmp => (l4.a, l4.b),
        _ => (0, 0),
    }
}

/// A BPF function of its own rather than inlined: both call sites (new flows, re-checks)
/// share one copy, and its lookups' keys live in its own stack frame.
#[inline(never)]
pub fn decide(query: &Query) -> Decision {
    lookup(query).unwrap_or(Decision::MISSING)
}

#[inline(always)]
fn lookup(query: &Query) -> Option<Decision> {
    let remote_id = identity::remote_id(query.slot, query.family, query.peer)?;
    let table_id = policy_table(query, remote_id)?;
    let rows = table_rows(query.slot, query.protocol, table_id)?;
    let row =
        last_starting_at_or_below(&PAL_ROWS, rows.first_row, rows.row_count, query.a, |row| {
            row.start
        })?;
    let cell = last_starting_at_or_below(
        &PAL_CELLS,
        row.first_cell,
        row.cell_count,
        query.b,
        |cell| cell.start,
    )?;
    let outcome = PAL_OUTCOMES.get(cell.outcome)?;
    Some(Decision {
        allowed: outcome.verdict == VERDICT_ALLOW,
        outcome: cell.outcome,
        flags: outcome.flags,
        rule_counter: outcome.rule_counter,
    })
}

/// The table of the peer group `remote_id` is in for this local ID and direction.
#[inline(always)]
fn policy_table(query: &Query, remote_id: u32) -> Option<u32> {
    let peer = PeerKey {
        slot: query.slot,
        direction: query.direction,
        _pad: [0; 2],
        local_id: query.local_id,
        remote_id,
    };
    // SAFETY: a value pointer from a successful lookup, read at once.
    let group = PAL_PEERS
        .get_ptr(peer)
        .map_or(GROUP_DEFAULT, |value| unsafe { (*value).group });
    let key = PolicyKey {
        slot: query.slot,
        direction: query.direction,
        _pad: [0; 2],
        local_id: query.local_id,
        group,
    };
    let value = PAL_POLICY.get_ptr(key)?;
    // SAFETY: as above.
    Some(unsafe { (*value).table_id })
}

/// The table's rows for `protocol`, else its rows for every other protocol.
#[inline(always)]
fn table_rows(slot: u8, protocol: u8, table_id: u32) -> Option<TableValue> {
    let own = TableKey {
        slot,
        _pad: 0,
        protocol: u16::from(protocol),
        table_id,
    };
    let other = TableKey {
        protocol: PROTOCOL_OTHER,
        ..own
    };
    let value = PAL_TABLE
        .get_ptr(own)
        .or_else(|| PAL_TABLE.get_ptr(other))?;
    // SAFETY: as in `policy_table`.
    Some(unsafe { *value })
}

/// Binary search of `map[first .. first + count)`, sorted by `start`, for the last entry
/// whose start is at most `key`: the range `key` falls in. `None` when `key` is below the
/// first start or the range is longer than `SEARCH_STEPS` can cover.
#[inline(always)]
fn last_starting_at_or_below<T: Copy, const N: usize>(
    map: &Array<T, N>,
    first: u32,
    count: u32,
    key: u16,
    start: impl Fn(&T) -> u16,
) -> Option<T> {
    if count == 0 {
        return None;
    }
    // The answer, if any, is in [low, high).
    let mut low = first;
    let mut high = first.checked_add(count)?;
    for _ in 0..SEARCH_STEPS {
        if high - low <= 1 {
            break;
        }
        let middle = low + (high - low) / 2;
        if start(map.get(middle)?) <= key {
            low = middle;
        } else {
            high = middle;
        }
    }
    if high - low != 1 {
        return None;
    }
    let found = *map.get(low)?;
    (start(&found) <= key).then_some(found)
}
