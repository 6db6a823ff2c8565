//! Which image entries an update touched: what the writer must look at again. Touched
//! does not mean changed; the writer compares with what the maps hold.

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::model::ResourceKey;

use super::image::{GroupEntry, PeerEntry, TableId};

/// Entries of [`super::Image`] touched, by map. Outcomes are only ever appended between
/// full compiles, so the writer needs no list of them; table IDs are reused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangedKeys {
    pub endpoints: BTreeSet<(ResourceKey, IpAddr)>,
    pub exact: BTreeSet<IpAddr>,
    pub peers: BTreeSet<PeerEntry>,
    pub groups: BTreeSet<GroupEntry>,
    /// Table IDs given a new table or freed.
    pub tables: BTreeSet<TableId>,
}

impl ChangedKeys {
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
            && self.exact.is_empty()
            && self.peers.is_empty()
            && self.groups.is_empty()
            && self.tables.is_empty()
    }

    pub fn len(&self) -> usize {
        self.endpoints.len()
            + self.exact.len()
            + self.peers.len()
            + self.groups.len()
            + self.tables.len()
    }
}

/// What changed in an image since some earlier one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changes {
    /// Renumbered: a full compile. Everything must be compared.
    All,
    /// Only these entries and tables, plus outcomes appended.
    Keys(ChangedKeys),
}

impl Default for Changes {
    fn default() -> Self {
        Changes::Keys(ChangedKeys::default())
    }
}

impl Changes {
    /// Adds `later` to what changed.
    pub fn merge(&mut self, later: &Changes) {
        match (&mut *self, later) {
            (Changes::All, _) => {}
            (_, Changes::All) => *self = Changes::All,
            (Changes::Keys(mine), Changes::Keys(theirs)) => {
                mine.endpoints.extend(theirs.endpoints.iter().cloned());
                mine.exact.extend(theirs.exact.iter().copied());
                mine.peers.extend(theirs.peers.iter().copied());
                mine.groups.extend(theirs.groups.iter().copied());
                mine.tables.extend(theirs.tables.iter().copied());
            }
        }
    }
}
