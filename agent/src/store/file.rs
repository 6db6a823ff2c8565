//! The embedded on-disk store, `file:///var/lib/palisade/store` by default: the whole
//! store in one directory, shared by every palisade process on the host (the CLI writes,
//! the agent watches, several CLIs may write at once).
//!
//! On disk (the files are listed in `file/disk.rs`): a snapshot of the whole store per generation and
//! an append-only log of the commits after it; each commit is one CRC-checked record, so
//! it is on disk whole or not at all, and it is acknowledged only after `fdatasync`.
//! Writers take an exclusive `flock` and re-read the files before applying their ops;
//! readers and watchers take no lock: they read `CURRENT`, then the snapshot and log it
//! names, and ignore a record that is still being written. When the log grows past
//! [`FileStoreOptions`]' limits, the writer compacts: it writes the next generation's
//! snapshot and an empty log, switches `CURRENT` atomically, and keeps the previous log as
//! history for watches.
//!
//! The I/O is synchronous inside the async methods: every operation is a few small reads
//! and at most one write and sync, and commits must not hold the lock across an `.await`.
//! Watches run on their own thread.

mod disk;
mod frame;
mod lock;
mod log;
mod plan;
mod record;
mod replica;
mod watch;
mod writer;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use super::{CommitOutcome, Datastore, Op, Revision, Snapshot, StoreError, WatchStream};
use crate::model::{Kind, Resource, ResourceKey};
use record::{CommitRecord, StoredChange};
use replica::Replica;

/// When a writer compacts the log into a new snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStoreOptions {
    /// Compact once the log is longer than this many bytes.
    pub compact_after_bytes: u64,
    /// Compact once the log holds this many commits. This is also the least history a
    /// watch can start from: the previous log is kept.
    pub compact_after_commits: u64,
}

impl Default for FileStoreOptions {
    fn default() -> Self {
        FileStoreOptions {
            compact_after_bytes: 4 << 20,
            compact_after_commits: 1000,
        }
    }
}

impl FileStoreOptions {
    fn compaction_due(&self, replica: &Replica) -> bool {
        replica.log_end > self.compact_after_bytes
            || replica.log_commits >= self.compact_after_commits
    }
}

pub struct FileStore {
    dir: PathBuf,
    lock_file: File,
    options: FileStoreOptions,
    /// Serializes this process's use of the files, and caches what it read of them.
    replica: Mutex<Replica>,
    /// Set when the store is dropped, which ends its watches.
    closed: Arc<AtomicBool>,
}

impl FileStore {
    /// Opens the store in `dir`, creating it (mode 0700, files 0600; an existing store is
    /// made so) if needed, and recovers from a writer that crashed: an unfinished commit
    /// at the end of the log is removed.
    pub fn open(dir: &Path) -> Result<FileStore, StoreError> {
        FileStore::open_with_options(dir, FileStoreOptions::default())
    }

    pub fn open_with_options(
        dir: &Path,
        options: FileStoreOptions,
    ) -> Result<FileStore, StoreError> {
        disk::create_dir(dir)?;
        disk::make_private(dir)?;
        let store = FileStore {
            dir: dir.to_path_buf(),
            lock_file: disk::open_lock_file(dir)?,
            options,
            replica: Mutex::new(Replica::empty()),
            closed: Arc::new(AtomicBool::new(false)),
        };
        store.with_writer_lock(|_| Ok(()))?;
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn replica(&self) -> MutexGuard<'_, Replica> {
        // A panic while holding the lock cannot leave the files half-written (commits are
        // single records); the cached copy is reloaded to be safe.
        self.replica.lock().unwrap_or_else(|poisoned| {
            let mut replica = poisoned.into_inner();
            replica.invalidate();
            replica
        })
    }

    /// Runs `f` as the only writer of the store, with the replica up to date.
    fn with_writer_lock<T>(
        &self,
        f: impl FnOnce(&mut Replica) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut replica = self.replica();
        let _lock = lock::lock_exclusive(&self.lock_file, &self.dir.join(disk::LOCK))?;
        if disk::read_current(&self.dir)?.is_none() {
            writer::initialize(&self.dir)?;
        }
        replica.refresh(&self.dir)?;
        writer::cut_torn_tail(&mut replica, &self.dir)?;
        f(&mut replica)
    }

    /// Runs `f` on the replica after catching up with the files.
    fn read<T>(&self, f: impl FnOnce(&Replica) -> T) -> Result<T, StoreError> {
        let mut replica = self.replica();
        replica.refresh(&self.dir)?;
        Ok(f(&replica))
    }

    fn commit_now(&self, ops: Vec<Op>) -> Result<CommitOutcome, StoreError> {
        self.with_writer_lock(|replica| {
            let plan = plan::plan(&replica.resources, ops)?;
            if plan.changes.is_empty() {
                return Ok(CommitOutcome {
                    revision: replica.revision,
                    outcomes: plan.outcomes,
                });
            }
            let commit = CommitRecord {
                revision: replica.revision + 1,
                changes: plan.changes,
            };
            writer::append(replica, &self.dir, commit)?;
            let outcome = CommitOutcome {
                revision: replica.revision,
                outcomes: plan.outcomes,
            };
            if self.options.compaction_due(replica) {
                // The commit is durable already; a failed compaction is retried by the
                // next commit and must not make this one look failed.
                if let Err(e) = writer::compact(replica, &self.dir) {
                    replica.invalidate();
                    eprintln!("palisade: warning: compacting the datastore failed: {e}");
                }
            }
            Ok(outcome)
        })
    }
}

impl Drop for FileStore {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Release);
    }
}

#[async_trait]
impl Datastore for FileStore {
    async fn get(&self, key: &ResourceKey) -> Result<Option<Resource>, StoreError> {
        self.read(|replica| replica.resources.get(key).cloned())
    }

    async fn list(&self, kind: Option<Kind>) -> Result<Snapshot, StoreError> {
        self.read(|replica| Snapshot {
            revision: replica.revision,
            resources: replica
                .resources
                .iter()
                .filter(|(key, _)| kind.is_none_or(|kind| key.kind() == kind))
                .map(|(_, resource)| resource.clone())
                .collect(),
        })
    }

    async fn commit(&self, ops: Vec<Op>) -> Result<CommitOutcome, StoreError> {
        self.commit_now(ops)
    }

    async fn watch(&self, after: Revision) -> Result<WatchStream, StoreError> {
        let revision = self.read(|replica| replica.revision)?;
        if after > revision {
            return Err(StoreError::Unavailable(format!(
                "datastore {}: cannot watch from revision {after}, the store is at revision {revision}",
                self.dir.display()
            )));
        }
        watch::start(&self.dir, after, Arc::clone(&self.closed))
    }
}

/// The resources `ops` would leave, checked in order with the rules every commit follows
/// (create, replace, apply, delete as calicoctl), without writing anything: for previews.
pub fn preview_commit(
    state: &std::collections::BTreeMap<ResourceKey, Resource>,
    ops: Vec<Op>,
) -> Result<std::collections::BTreeMap<ResourceKey, Resource>, StoreError> {
    let plan = plan::plan(state, ops)?;
    let mut after = state.clone();
    for change in plan.changes {
        match change {
            StoredChange::Put(resource) => {
                after.insert(resource.key(), resource);
            }
            StoredChange::Delete(key) => {
                after.remove(&key);
            }
        }
    }
    Ok(after)
}
