//! This process's copy of the store: the state of the live generation's snapshot plus
//! every commit read from its log so far. [`Replica::refresh`] catches up with what other
//! processes have written; it only ever moves from one commit boundary to a later one.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

use super::disk::{self, Access, path_of, read_current, read_from};
use super::frame::{self, Next};
use super::log::{read_commits, read_header};
use super::record::{self, CommitRecord, SnapshotIn, StoredChange};
use crate::model::{Resource, ResourceKey};
use crate::store::{Revision, StoreError};

/// How often to re-read `CURRENT` when the files it named vanished under us (a writer
/// compacted twice between our reading `CURRENT` and opening its files).
const RACE_RETRIES: usize = 20;

pub(super) struct Replica {
    /// 0 until the store directory has been initialized.
    pub generation: u64,
    pub revision: Revision,
    pub resources: BTreeMap<ResourceKey, Resource>,
    /// The generation's log, open for appending.
    log: Option<File>,
    /// Where the next commit record goes.
    pub log_end: u64,
    /// The log's length when last read; beyond `log_end` is a torn tail.
    pub log_len: u64,
    /// Commit records in the log.
    pub log_commits: u64,
}

impl Replica {
    pub fn empty() -> Replica {
        Replica {
            generation: 0,
            revision: 0,
            resources: BTreeMap::new(),
            log: None,
            log_end: 0,
            log_len: 0,
            log_commits: 0,
        }
    }

    /// The live log; `None` only before the store is initialized.
    pub fn log(&self) -> Option<&File> {
        self.log.as_ref()
    }

    /// Forgets everything, so the next refresh reloads from disk (after a failed write
    /// left us unsure what the log holds).
    pub fn invalidate(&mut self) {
        *self = Replica::empty();
    }

    /// Catches up with the store on disk.
    pub fn refresh(&mut self, dir: &Path) -> Result<(), StoreError> {
        for _ in 0..RACE_RETRIES {
            let Some(current) = read_current(dir)? else {
                if self.generation == 0 {
                    return Ok(());
                }
                return Err(StoreError::Corrupt(format!(
                    "{}: missing, but this store had generation {}",
                    path_of(dir, disk::CURRENT).display(),
                    self.generation
                )));
            };
            if current == self.generation {
                return self.read_new_commits(dir);
            }
            if current < self.generation {
                return Err(StoreError::Corrupt(format!(
                    "{}: generation went back from {} to {current}",
                    path_of(dir, disk::CURRENT).display(),
                    self.generation
                )));
            }
            if let Some(loaded) = Replica::load(dir, current)? {
                *self = loaded;
                return Ok(());
            }
            // Its files are gone: fine if a writer has moved `CURRENT` on meanwhile.
            if read_current(dir)? == Some(current) {
                return Err(StoreError::Corrupt(format!(
                    "{}: names generation {current}, but {} or {} is missing",
                    path_of(dir, disk::CURRENT).display(),
                    disk::snapshot_name(current),
                    disk::log_name(current)
                )));
            }
        }
        Err(StoreError::Unavailable(format!(
            "datastore {}: the store kept changing generation while being read",
            dir.display()
        )))
    }

    /// Loads generation `generation`; `None` if its files are gone (compacted away).
    fn load(dir: &Path, generation: u64) -> Result<Option<Replica>, StoreError> {
        let snapshot_path = path_of(dir, &disk::snapshot_name(generation));
        let log_path = path_of(dir, &disk::log_name(generation));
        // Open both before reading either: once open, deleting them does not matter.
        let Some(snapshot_file) =
            disk::open_if_exists(dir, &disk::snapshot_name(generation), Access::Read)?
        else {
            return Ok(None);
        };
        // Writable: this replica appends to it when this process commits.
        let Some(log) = disk::open_if_exists(dir, &disk::log_name(generation), Access::ReadWrite)?
        else {
            return Ok(None);
        };
        let snapshot = read_snapshot(&snapshot_file, &snapshot_path)?;
        if snapshot.generation != generation {
            return Err(StoreError::Corrupt(format!(
                "{}: holds generation {}",
                snapshot_path.display(),
                snapshot.generation
            )));
        }
        let (header, log_start) = read_header(&log, &log_path)?;
        if header.generation != generation || header.base_revision != snapshot.revision {
            return Err(StoreError::Corrupt(format!(
                "{}: header {header:?} does not continue {} (revision {})",
                log_path.display(),
                snapshot_path.display(),
                snapshot.revision
            )));
        }
        let mut resources = BTreeMap::new();
        for resource in snapshot.resources {
            resources.insert(resource.key(), resource);
        }
        let mut replica = Replica {
            generation,
            revision: snapshot.revision,
            resources,
            log: Some(log),
            log_end: log_start,
            log_len: log_start,
            log_commits: 0,
        };
        replica.read_new_commits(dir)?;
        Ok(Some(replica))
    }

    fn read_new_commits(&mut self, dir: &Path) -> Result<(), StoreError> {
        let Some(log) = &self.log else {
            return Ok(());
        };
        let path = path_of(dir, &disk::log_name(self.generation));
        let new = read_commits(log, self.log_end, &path)?;
        for (commit, end) in new.commits {
            self.apply(commit, &path)?;
            self.log_end = end;
        }
        self.log_len = new.file_len;
        match new.damage {
            Some(damage) => Err(damage.error(&path, self.revision)),
            None => Ok(()),
        }
    }

    /// Applies one commit read from (or just appended to) the log at `path`.
    pub fn apply(&mut self, commit: CommitRecord, path: &Path) -> Result<(), StoreError> {
        if commit.revision != self.revision + 1 {
            return Err(StoreError::Corrupt(format!(
                "{}: commit of revision {} follows revision {}",
                path.display(),
                commit.revision,
                self.revision
            )));
        }
        for change in commit.changes {
            match change {
                StoredChange::Put(resource) => {
                    self.resources.insert(resource.key(), resource);
                }
                StoredChange::Delete(key) => {
                    self.resources.remove(&key);
                }
            }
        }
        self.revision = commit.revision;
        self.log_commits += 1;
        Ok(())
    }
}

fn read_snapshot(file: &File, path: &Path) -> Result<SnapshotIn, StoreError> {
    let buf = read_from(file, 0, path)?;
    match frame::read_frame(&buf, 0) {
        Next::Frame { payload, end } if end == buf.len() => record::decode(payload, path, 0),
        _ => Err(StoreError::Corrupt(format!(
            "{}: not one intact snapshot record",
            path.display()
        ))),
    }
}
