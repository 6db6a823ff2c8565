//! Everything that changes the store's files. Each function here runs while this process
//! holds the writers' lock and its replica has just been refreshed from disk.
//!
//! The order of the steps is what makes a crash at any point harmless: a commit is one
//! record appended and synced, so it is there whole or (torn) not at all; a new generation
//! is written and synced completely before `CURRENT` is switched to it, and the old one
//! is only deleted after the switch is durable.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::disk::{self, StoreFile, path_of, replace_file, sync_dir, unavailable};
use super::record::{self, CommitRecord, LogHeader, SnapshotOut};
use super::replica::Replica;
use crate::model::{Resource, ResourceKey};
use crate::store::{Revision, StoreError};

/// Creates generation 1, the empty store, when `CURRENT` does not exist yet.
pub(super) fn initialize(dir: &Path) -> Result<(), StoreError> {
    refuse_to_overwrite_data(dir)?;
    write_generation(dir, 1, 0, &BTreeMap::new())?;
    replace_file(dir, disk::CURRENT, disk::current_contents(1).as_bytes())?;
    sync_dir(dir)
}

/// Without `CURRENT` the directory may only hold what an interrupted [`initialize`] left:
/// generation 1's files with no commit in them. Anything more means `CURRENT` was lost,
/// and starting afresh would throw data away.
fn refuse_to_overwrite_data(dir: &Path) -> Result<(), StoreError> {
    let empty_log_len = record::encode(
        &LogHeader {
            generation: 1,
            base_revision: 0,
        },
        dir,
    )?
    .len() as u64;
    let entries = fs::read_dir(dir).map_err(|e| unavailable("listing", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| unavailable("listing", dir, e))?;
        let name = entry.file_name();
        let has_data = match disk::classify(&name.to_string_lossy()) {
            StoreFile::Snapshot(g) => g != 1,
            StoreFile::Log(1) => entry.metadata().map_or(true, |m| m.len() > empty_log_len),
            StoreFile::Log(_) => true,
            StoreFile::Temp | StoreFile::Other => false,
        };
        if has_data {
            return Err(StoreError::Corrupt(format!(
                "{}: missing, but the directory holds store data ({})",
                path_of(dir, disk::CURRENT).display(),
                name.to_string_lossy()
            )));
        }
    }
    Ok(())
}

/// Writes `snapshot.<generation>` and an empty `log.<generation>`, durably.
fn write_generation(
    dir: &Path,
    generation: u64,
    revision: Revision,
    resources: &BTreeMap<ResourceKey, Resource>,
) -> Result<(), StoreError> {
    let snapshot_name = disk::snapshot_name(generation);
    let snapshot = SnapshotOut {
        generation,
        revision,
        resources: resources.values().collect(),
    };
    let bytes = record::encode(&snapshot, &path_of(dir, &snapshot_name))?;
    replace_file(dir, &snapshot_name, &bytes)?;
    let log_name = disk::log_name(generation);
    let header = LogHeader {
        generation,
        base_revision: revision,
    };
    replace_file(
        dir,
        &log_name,
        &record::encode(&header, &path_of(dir, &log_name))?,
    )?;
    sync_dir(dir)
}

/// Cuts off what a crashed writer left half-written at the end of the log, so that the
/// next record follows the last complete one.
pub(super) fn cut_torn_tail(replica: &mut Replica, dir: &Path) -> Result<(), StoreError> {
    if replica.log_len <= replica.log_end {
        return Ok(());
    }
    let path = path_of(dir, &disk::log_name(replica.generation));
    let Some(log) = replica.log() else {
        return Ok(());
    };
    log.set_len(replica.log_end)
        .and_then(|()| log.sync_all())
        .map_err(|e| unavailable("truncating the unfinished record at the end of", &path, e))?;
    eprintln!(
        "palisade: warning: datastore {}: removed an unfinished record at its end (byte {}, \
         {} bytes): a commit interrupted before it was acknowledged; every commit up to \
         revision {} is intact",
        path.display(),
        replica.log_end,
        replica.log_len - replica.log_end,
        replica.revision
    );
    replica.log_len = replica.log_end;
    Ok(())
}

/// Appends one commit and returns once it is on disk.
pub(super) fn append(
    replica: &mut Replica,
    dir: &Path,
    commit: CommitRecord,
) -> Result<(), StoreError> {
    let path = path_of(dir, &disk::log_name(replica.generation));
    let bytes = record::encode(&commit, &path)?;
    let Some(log) = replica.log() else {
        return Err(StoreError::Unavailable(format!(
            "datastore {}: not initialized",
            dir.display()
        )));
    };
    // One write, so that concurrent readers see the record whole or not at all (a short
    // read of it is a torn tail to them, which they skip until it is complete).
    let written = log
        .write_all_at(&bytes, replica.log_end)
        .and_then(|()| log.sync_data());
    if let Err(e) = written {
        // Best effort: leave no record that we are about to report as not committed. If
        // even that fails, the outcome is unknown, as with any storage that fails a sync.
        let _ = log.set_len(replica.log_end);
        replica.invalidate();
        return Err(unavailable("appending to", &path, e));
    }
    let end = replica.log_end + bytes.len() as u64;
    replica.apply(commit, &path)?;
    replica.log_end = end;
    replica.log_len = end;
    Ok(())
}

/// Starts a new generation from the replica's state and retires the older ones, keeping
/// the previous log as history for watchers.
pub(super) fn compact(replica: &mut Replica, dir: &Path) -> Result<(), StoreError> {
    let next = replica.generation + 1;
    write_generation(dir, next, replica.revision, &replica.resources)?;
    replace_file(dir, disk::CURRENT, disk::current_contents(next).as_bytes())?;
    sync_dir(dir)?;
    remove_retired_files(dir, next);
    // The new generation is what every reader now loads; so do we.
    replica.invalidate();
    replica.refresh(dir)
}

/// Deletes snapshots older than `live`, logs older than the one before it (kept for
/// watchers), leftovers of generations a crash kept from going live, and temporary files.
/// Failure only costs disk space, so it is not reported.
fn remove_retired_files(dir: &Path, live: u64) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let retired = match disk::classify(&entry.file_name().to_string_lossy()) {
            StoreFile::Snapshot(g) => g != live,
            StoreFile::Log(g) => g != live && g + 1 != live,
            StoreFile::Temp => true,
            StoreFile::Other => false,
        };
        if retired {
            let _ = fs::remove_file(entry.path());
        }
    }
}
