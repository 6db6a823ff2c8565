//! The datastore: palisade's only source of truth. The [`Datastore`] trait is what the CLI,
//! the agent and the Docker plugin talk to; [`file::FileStore`] is the embedded on-disk
//! backend (the default), [`etcd::EtcdStore`] keeps the resources in etcd, in Calico v1's
//! key layout, for a cluster of nodes.
//!
//! Semantics every backend provides:
//! - one [`Datastore::commit`] applies all of its operations or none of them, and moves the
//!   store to a new, higher revision (the file store counts commits one by one; etcd's
//!   revision grows with every write to the cluster, so it may jump by more than one);
//! - revisions only grow; [`Datastore::list`] returns the state at one revision and
//!   [`Datastore::watch`] streams every change after a given revision, so `list` + `watch`
//!   from its revision misses nothing and sees nothing twice;
//! - a watch that can no longer be served from history ends with [`StoreError::Compacted`];
//!   the reader then lists again and carries on from the new revision.

pub mod etcd;
pub mod file;

use std::sync::Arc;

use async_trait::async_trait;

use crate::model::{Kind, Resource, ResourceKey};

/// A store revision: 0 is before the first write; every commit makes it larger (by exactly
/// one in the file store, by at least one in etcd).
pub type Revision = u64;

/// The datastore used when neither `--datastore` nor `PALISADE_DATASTORE` is given.
pub const DEFAULT_DATASTORE_URL: &str = "file:///var/lib/palisade/store";

/// One write of a commit, with calicoctl's semantics.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Write a new resource; [`StoreError::AlreadyExists`] if one with its key exists,
    /// unless `skip_existing` (then it is left as it is and reported as skipped).
    Create {
        resource: Resource,
        skip_existing: bool,
    },
    /// Overwrite an existing resource; [`StoreError::NotFound`] if it does not exist.
    Replace(Resource),
    /// Create or overwrite.
    Apply(Resource),
    /// Remove a resource; [`StoreError::NotFound`] if absent, unless `skip_missing`.
    Delete {
        key: ResourceKey,
        skip_missing: bool,
    },
}

impl Op {
    pub fn key(&self) -> ResourceKey {
        match self {
            Op::Create { resource, .. } | Op::Replace(resource) | Op::Apply(resource) => {
                resource.key()
            }
            Op::Delete { key, .. } => key.clone(),
        }
    }
}

/// What happened to one op of a successful commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpOutcome {
    Written,
    /// `skip_existing` / `skip_missing` applied: nothing was changed for this op.
    Skipped,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CommitOutcome {
    /// The store's revision after the commit (unchanged if every op was skipped).
    pub revision: Revision,
    /// One outcome per op, in the order given.
    pub outcomes: Vec<OpOutcome>,
}

/// The resources of the store at one revision, ordered by key.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Snapshot {
    pub revision: Revision,
    pub resources: Vec<Resource>,
}

/// One change seen by a watcher.
// Changes are handed on one at a time, never stored in bulk: boxing the resource would
// only add an allocation per change.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Put {
        revision: Revision,
        resource: Resource,
    },
    Delete {
        revision: Revision,
        key: ResourceKey,
    },
}

impl Change {
    pub fn revision(&self) -> Revision {
        match self {
            Change::Put { revision, .. } | Change::Delete { revision, .. } => *revision,
        }
    }
}

/// A stream of changes in revision order. It ends (the sender is dropped) only after an
/// error, or when the store is closed.
pub type WatchStream = tokio::sync::mpsc::Receiver<Result<Change, StoreError>>;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    /// Op `index` of a commit would create a resource that exists; nothing was written.
    #[error("resource already exists: {key}")]
    AlreadyExists { index: usize, key: ResourceKey },
    /// Op `index` of a commit needs a resource that does not exist; nothing was written.
    #[error("resource does not exist: {key}")]
    NotFound { index: usize, key: ResourceKey },
    /// The history a watch needs is gone; list again and watch from the new revision.
    #[error("revision {requested} is no longer available (history starts after {oldest})")]
    Compacted {
        requested: Revision,
        oldest: Revision,
    },
    /// The store's data on disk or on the wire is not what palisade wrote.
    #[error("datastore corrupt: {0}")]
    Corrupt(String),
    /// The backend could not be reached or failed.
    #[error("{0}")]
    Unavailable(String),
}

#[async_trait]
pub trait Datastore: Send + Sync {
    /// One resource, or `None`.
    async fn get(&self, key: &ResourceKey) -> Result<Option<Resource>, StoreError>;

    /// Every resource of `kind` (all kinds if `None`) at the current revision.
    async fn list(&self, kind: Option<Kind>) -> Result<Snapshot, StoreError>;

    /// Applies all ops atomically, in order (a later op sees the effect of an earlier one),
    /// or none of them if any fails.
    async fn commit(&self, ops: Vec<Op>) -> Result<CommitOutcome, StoreError>;

    /// Every change with a revision greater than `after`, then new ones as they happen.
    async fn watch(&self, after: Revision) -> Result<WatchStream, StoreError>;
}

/// Opens the datastore named by `url`: `file:///path/to/dir` (the embedded store) or
/// `etcd://host:port[,host:port...]` (with `?ca=FILE&cert=FILE&key=FILE` for TLS, see
/// [`etcd::with_tls_files`]).
pub async fn open(url: &str) -> Result<Arc<dyn Datastore>, StoreError> {
    if let Some(path) = url.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(StoreError::Unavailable(format!(
                "datastore URL '{url}': a file URL needs an absolute path, like file:///var/lib/palisade/store"
            )));
        }
        let store = file::FileStore::open(std::path::Path::new(path))?;
        return Ok(Arc::new(store));
    }
    if url.starts_with(etcd::SCHEME) {
        let store = etcd::EtcdStore::open(url).await?;
        return Ok(Arc::new(store));
    }
    Err(StoreError::Unavailable(format!(
        "datastore URL '{url}' not understood: use file:///path/to/dir or etcd://host:port"
    )))
}
