//! The map image: everything the kernel will look up, in memory, before any map ABI.
//!
//! ```text
//!  endpoints:  (workload endpoint, own address) → LocalId          (kernel: by ifindex + address)
//!  exact:      endpoint address → RemoteId                          (hash)
//!  lpm:        rule CIDR → RemoteId; no match → world               (LPM trie)
//!  peers:      (LocalId, direction, RemoteId) → PeerGroup          (hash; only where ≠ group 0)
//!  groups:     (LocalId, direction, PeerGroup) → TableId            (hash)
//!  tables:     TableId → per protocol, ranges of (port, port) or (type, code) → OutcomeId
//!  outcomes:   OutcomeId → verdict, deciding rule (or default), log rules passed
//! ```

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::model::{Action, ResourceKey};
use crate::policy::{Direction, Reason, RuleOwner, RuleRef, Verdict};

use super::identity::{LocalId, LocalInfo};
use super::program::Outcome;
use super::remote::RemoteId;
use super::table::Table;

/// Index into [`Image::tables`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableId(pub u32);

/// Remote IDs that one local ID's rules treat alike in one direction. Group 0 (most of the
/// peers) needs no entry per remote ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerGroup(pub u32);

impl PeerGroup {
    pub const DEFAULT: PeerGroup = PeerGroup(0);
}

/// A remote ID as a local ID sees it in one direction.
pub type PeerEntry = (LocalId, Direction, RemoteId);
/// One peer group of a local ID and direction.
pub type GroupEntry = (LocalId, Direction, PeerGroup);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub endpoints: BTreeMap<(ResourceKey, IpAddr), LocalId>,
    /// Indexed by local ID.
    pub locals: Vec<LocalInfo>,
    pub remote_ids: usize,
    pub exact: BTreeMap<IpAddr, RemoteId>,
    pub lpm: BTreeMap<IpNet, RemoteId>,
    pub world: RemoteId,
    /// Only remote IDs outside group 0.
    pub peers: BTreeMap<PeerEntry, PeerGroup>,
    pub groups: BTreeMap<GroupEntry, TableId>,
    /// Indexed by table ID; `None`: a free ID (a table in-place updates stopped using),
    /// which a later table takes.
    pub tables: Vec<Option<Table>>,
    pub outcomes: Vec<Outcome>,
}

/// Entry counts, per map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ImageStats {
    pub endpoint_addresses: usize,
    pub local_ids: usize,
    pub remote_ids: usize,
    pub endpoint_entries: usize,
    pub lpm_entries: usize,
    pub peer_entries: usize,
    pub group_entries: usize,
    pub tables: usize,
    pub table_rows: usize,
    pub outcomes: usize,
}

impl Image {
    pub fn stats(&self) -> ImageStats {
        ImageStats {
            endpoint_addresses: self.endpoints.len(),
            local_ids: self.locals.len(),
            remote_ids: self.remote_ids,
            endpoint_entries: self.exact.len(),
            lpm_entries: self.lpm.len(),
            peer_entries: self.peers.len(),
            group_entries: self.groups.len(),
            tables: self.live_tables().count(),
            table_rows: self.live_tables().map(|(_, t)| t.cell_count()).sum(),
            outcomes: self.outcomes.len(),
        }
    }

    /// The tables in use, by ID.
    pub fn live_tables(&self) -> impl Iterator<Item = (TableId, &Table)> {
        self.tables.iter().enumerate().filter_map(|(i, t)| {
            let id = TableId(u32::try_from(i).unwrap_or(u32::MAX));
            t.as_ref().map(|t| (id, t))
        })
    }

    /// A canonical byte encoding of the whole image: equal images, equal bytes. (Not the
    /// map ABI; that lives in `common` and is written by the dataplane.)
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::default();
        e.len(self.endpoints.len());
        for ((key, addr), id) in &self.endpoints {
            e.str(&key.to_string());
            e.ip(*addr);
            e.u32(id.0);
        }
        e.len(self.locals.len());
        for l in &self.locals {
            e.len(l.labels.len());
            for (k, v) in &l.labels {
                e.str(k);
                e.str(v);
            }
            e.len(l.profiles.len());
            for p in &l.profiles {
                e.str(p);
            }
            e.u8(l.family.version());
        }
        e.len(self.remote_ids);
        e.len(self.exact.len());
        for (addr, id) in &self.exact {
            e.ip(*addr);
            e.u32(id.0);
        }
        e.len(self.lpm.len());
        for (net, id) in &self.lpm {
            e.ip(net.addr());
            e.u8(net.prefix_len());
            e.u32(id.0);
        }
        e.u32(self.world.0);
        e.len(self.peers.len());
        for ((local, dir, remote), group) in &self.peers {
            e.u32(local.0);
            e.direction(*dir);
            e.u32(remote.0);
            e.u32(group.0);
        }
        e.len(self.groups.len());
        for ((local, dir, group), table) in &self.groups {
            e.u32(local.0);
            e.direction(*dir);
            e.u32(group.0);
            e.u32(table.0);
        }
        e.len(self.tables.len());
        for t in &self.tables {
            let Some(t) = t else {
                e.u8(0);
                continue;
            };
            e.u8(1);
            e.u32(t.other.0);
            e.len(t.protocols.len());
            for (proto, rt) in &t.protocols {
                e.u8(*proto);
                e.len(rt.rows.len());
                for row in &rt.rows {
                    e.u16(row.start);
                    e.len(row.cells.len());
                    for (start, o) in &row.cells {
                        e.u16(*start);
                        e.u32(o.0);
                    }
                }
            }
        }
        e.len(self.outcomes.len());
        for o in &self.outcomes {
            e.u8(matches!(o.verdict, Verdict::Allow).into());
            match &o.reason {
                Reason::Rule(r) => {
                    e.u8(0);
                    e.rule(r);
                }
                Reason::EndOfPolicies => e.u8(1),
                Reason::MissingProfile(name) => {
                    e.u8(2);
                    e.str(name);
                }
                Reason::NoProfileMatched => e.u8(3),
            }
            e.len(o.logged.len());
            for r in &o.logged {
                e.rule(r);
            }
        }
        e.0
    }
}

#[derive(Default)]
struct Encoder(Vec<u8>);

impl Encoder {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn len(&mut self, v: usize) {
        self.0.extend_from_slice(&(v as u64).to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.len(s.len());
        self.0.extend_from_slice(s.as_bytes());
    }
    fn ip(&mut self, ip: IpAddr) {
        match ip {
            IpAddr::V4(v4) => {
                self.u8(4);
                self.0.extend_from_slice(&v4.octets());
            }
            IpAddr::V6(v6) => {
                self.u8(6);
                self.0.extend_from_slice(&v6.octets());
            }
        }
    }
    fn direction(&mut self, d: Direction) {
        self.u8(match d {
            Direction::Ingress => 0,
            Direction::Egress => 1,
        });
    }
    fn rule(&mut self, r: &RuleRef) {
        match &r.owner {
            RuleOwner::Policy(n) => {
                self.u8(0);
                self.str(n);
            }
            RuleOwner::Profile(n) => {
                self.u8(1);
                self.str(n);
            }
        }
        self.direction(r.direction);
        self.len(r.index);
        self.u8(match r.action {
            Action::Allow => 0,
            Action::Deny => 1,
            Action::Log => 2,
            Action::Pass => 3,
        });
    }
}
