//! The JSON payloads of the store's files.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::frame;
use crate::model::{Resource, ResourceKey};
use crate::store::{Change, Revision, StoreError};

/// `snapshot.<gen>`: the whole store at `revision`, resources ordered by key.
#[derive(Serialize)]
pub(super) struct SnapshotOut<'a> {
    pub generation: u64,
    pub revision: Revision,
    pub resources: Vec<&'a Resource>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SnapshotIn {
    pub generation: u64,
    pub revision: Revision,
    pub resources: Vec<Resource>,
}

/// The first record of `log.<gen>`: the log continues the snapshot of the same generation,
/// whose revision is `base_revision`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LogHeader {
    pub generation: u64,
    pub base_revision: Revision,
}

/// Every later record of a log: one commit.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CommitRecord {
    pub revision: Revision,
    pub changes: Vec<StoredChange>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
// Short-lived and mostly `Put`s: boxing would only add allocations.
#[allow(clippy::large_enum_variant)]
pub(super) enum StoredChange {
    Put(Resource),
    Delete(ResourceKey),
}

impl CommitRecord {
    /// The changes as watchers see them, in op order.
    pub fn into_changes(self) -> impl Iterator<Item = Change> {
        let revision = self.revision;
        self.changes.into_iter().map(move |change| match change {
            StoredChange::Put(resource) => Change::Put { revision, resource },
            StoredChange::Delete(key) => Change::Delete { revision, key },
        })
    }
}

/// Serializes and frames one payload.
pub(super) fn encode<T: Serialize>(value: &T, path: &Path) -> Result<Vec<u8>, StoreError> {
    let json = serde_json::to_vec(value).map_err(|e| {
        StoreError::Unavailable(format!("encoding a record for {}: {e}", path.display()))
    })?;
    frame::encode(&json).ok_or_else(|| {
        StoreError::Unavailable(format!(
            "a record of {} bytes for {} is too large",
            json.len(),
            path.display()
        ))
    })
}

/// Parses one payload read back from `path` at byte `offset`.
pub(super) fn decode<T: DeserializeOwned>(
    payload: &[u8],
    path: &Path,
    offset: usize,
) -> Result<T, StoreError> {
    serde_json::from_slice(payload).map_err(|e| {
        StoreError::Corrupt(format!(
            "{}: record at byte {offset} does not parse: {e}",
            path.display()
        ))
    })
}
