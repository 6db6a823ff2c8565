//! Map capacities and what happens when the policy does not fit: the whole compile fails,
//! naming every limit exceeded and how much it would need. Nothing is truncated.

use std::fmt;

use crate::model::ResourceKey;

use super::image::ImageStats;

/// The sizes of the maps the image will be written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacities {
    pub local_ids: usize,
    pub remote_ids: usize,
    /// Exact-match entries: endpoint address → remote ID.
    pub endpoint_entries: usize,
    /// LPM entries: prefix → remote ID.
    pub lpm_entries: usize,
    /// (local ID, remote ID, direction) → peer group, for peers outside group 0.
    pub peer_entries: usize,
    /// (local ID, direction, peer group) → table.
    pub group_entries: usize,
    pub tables: usize,
    /// Cells of all tables together.
    pub table_rows: usize,
}

impl Capacities {
    pub const UNLIMITED: Capacities = Capacities {
        local_ids: usize::MAX,
        remote_ids: usize::MAX,
        endpoint_entries: usize::MAX,
        lpm_entries: usize::MAX,
        peer_entries: usize::MAX,
        group_entries: usize::MAX,
        tables: usize::MAX,
        table_rows: usize::MAX,
    };

    /// Every limit `stats` exceeds.
    pub fn check(&self, stats: &ImageStats) -> Vec<Exceeded> {
        [
            ("local IDs", stats.local_ids, self.local_ids),
            ("remote IDs", stats.remote_ids, self.remote_ids),
            (
                "endpoint address entries",
                stats.endpoint_entries,
                self.endpoint_entries,
            ),
            ("LPM entries", stats.lpm_entries, self.lpm_entries),
            ("peer entries", stats.peer_entries, self.peer_entries),
            ("policy entries", stats.group_entries, self.group_entries),
            ("tables", stats.tables, self.tables),
            ("table rows", stats.table_rows, self.table_rows),
        ]
        .into_iter()
        .filter(|&(_, needed, capacity)| needed > capacity)
        .map(|(limit, needed, capacity)| Exceeded {
            limit,
            needed,
            capacity,
        })
        .collect()
    }
}

/// One capacity the policy does not fit in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exceeded {
    pub limit: &'static str,
    pub needed: usize,
    pub capacity: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error("policy does not fit the dataplane's maps: {}; raise the capacities or simplify the policy", list(.0))]
    Capacity(Vec<Exceeded>),
    #[error("{0} appears twice in the input")]
    DuplicateResource(ResourceKey),
}

fn list(exceeded: &[Exceeded]) -> String {
    exceeded
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for Exceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} needed {} (capacity {})",
            self.limit, self.needed, self.capacity
        )
    }
}
