//! The store directory's files and the I/O helpers that keep them crash-safe.
//!
//! ```text
//! lock            flock(2)ed exclusively by the one writer at a time
//! CURRENT         the live generation number, replaced atomically (write, fsync, rename)
//! snapshot.<gen>  one frame: the whole store at the generation's base revision
//! log.<gen>       a header frame, then one frame per commit after that base
//! *.tmp           files being written; renamed into place once synced
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::store::StoreError;

pub(super) const CURRENT: &str = "CURRENT";
pub(super) const LOCK: &str = "lock";
const TEMP_SUFFIX: &str = ".tmp";

pub(super) fn snapshot_name(generation: u64) -> String {
    format!("snapshot.{generation}")
}

pub(super) fn log_name(generation: u64) -> String {
    format!("log.{generation}")
}

/// What a directory entry is, for cleaning up after compaction.
#[derive(Debug, PartialEq)]
pub(super) enum StoreFile {
    Snapshot(u64),
    Log(u64),
    Temp,
    Other,
}

pub(super) fn classify(name: &str) -> StoreFile {
    if name.ends_with(TEMP_SUFFIX) {
        return StoreFile::Temp;
    }
    let generation = |rest: &str| rest.parse::<u64>().ok();
    if let Some(g) = name.strip_prefix("snapshot.").and_then(generation) {
        StoreFile::Snapshot(g)
    } else if let Some(g) = name.strip_prefix("log.").and_then(generation) {
        StoreFile::Log(g)
    } else {
        StoreFile::Other
    }
}

/// An I/O failure, naming what was being done, the path and the OS error, and what to do
/// where that is clear.
pub(super) fn unavailable(what: &str, path: &Path, err: io::Error) -> StoreError {
    let hint = match err.raw_os_error() {
        Some(libc::ENOSPC | libc::EDQUOT) => {
            ": the filesystem holding the datastore is full. What failed was not written, \
             and every earlier commit is intact: free some space there and try again"
        }
        Some(libc::EACCES | libc::EPERM) => {
            ": the datastore is private to the user who owns it (normally root): run \
             palisade as that user"
        }
        _ => "",
    };
    StoreError::Unavailable(format!("datastore: {what} {}: {err}{hint}", path.display()))
}

/// Creates the store directory (and its parents) accessible to its owner only.
pub(super) fn create_dir(dir: &Path) -> Result<(), StoreError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| unavailable("creating directory", dir, e))?;
    // Make the new directory's own entry durable, or a crash could lose the whole store.
    match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent),
        _ => Ok(()),
    }
}

/// Makes the store its owner's alone: the directory 0700, its files 0600. New stores are
/// made so; a store an older palisade made, or a directory an operator made beforehand,
/// is tightened when opened, with a warning (anyone else who could write there could
/// change the policy in force). Only the store's own files are touched.
pub(super) fn make_private(dir: &Path) -> Result<(), StoreError> {
    tighten(dir, 0o700)?;
    let entries = fs::read_dir(dir).map_err(|e| unavailable("listing", dir, e))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = name == CURRENT || name == LOCK || classify(&name) != StoreFile::Other;
        if ours {
            tighten(&entry.path(), 0o600)?;
        }
    }
    Ok(())
}

/// Clears the permission bits of `path` outside `allowed`.
fn tighten(path: &Path, allowed: u32) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = match fs::symlink_metadata(path) {
        Ok(meta) => meta.permissions().mode() & 0o7777,
        // Removed meanwhile by a compacting writer.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(unavailable("inspecting", path, e)),
    };
    if mode & !allowed == 0 {
        return Ok(());
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode & allowed))
        .map_err(|e| unavailable("making private", path, e))?;
    eprintln!(
        "palisade: warning: datastore {}: was mode {mode:o}, made it {:o}: the store is \
         private to its owner",
        path.display(),
        mode & allowed
    );
    Ok(())
}

/// Makes renames and creations in `dir` durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| unavailable("syncing directory", dir, e))
}

pub(super) fn open_lock_file(dir: &Path) -> Result<File, StoreError> {
    let path = dir.join(LOCK);
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|e| unavailable("opening lock file", &path, e))
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Access {
    Read,
    ReadWrite,
}

/// Opens `dir/name`; `None` if it does not exist.
pub(super) fn open_if_exists(
    dir: &Path,
    name: &str,
    access: Access,
) -> Result<Option<File>, StoreError> {
    let path = dir.join(name);
    let writable = access == Access::ReadWrite;
    match OpenOptions::new().read(true).write(writable).open(&path) {
        Ok(file) => Ok(Some(file)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(unavailable("opening", &path, e)),
    }
}

/// The generation `CURRENT` names; `None` if the store was never initialized.
pub(super) fn read_current(dir: &Path) -> Result<Option<u64>, StoreError> {
    let path = dir.join(CURRENT);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(unavailable("reading", &path, e)),
    };
    match text.trim().parse::<u64>() {
        Ok(generation) if generation > 0 => Ok(Some(generation)),
        _ => Err(StoreError::Corrupt(format!(
            "{}: expected a generation number, found {text:?}",
            path.display()
        ))),
    }
}

pub(super) fn current_contents(generation: u64) -> String {
    format!("{generation}\n")
}

/// Replaces `dir/name` with `bytes` so that a crash leaves either the old or the new file:
/// write a temporary file, sync it, rename it over. The caller syncs `dir` afterwards.
pub(super) fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
    let temp = dir.join(format!("{name}{TEMP_SUFFIX}"));
    let target = dir.join(name);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)
        .map_err(|e| unavailable("creating", &temp, e))?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    if let Err(e) = written {
        // On a full disk the space it holds is what the next try needs.
        let _ = fs::remove_file(&temp);
        return Err(unavailable("writing", &temp, e));
    }
    fs::rename(&temp, &target).map_err(|e| unavailable("renaming into place", &target, e))
}

/// Everything in `file` from `offset` to its current end.
pub(super) fn read_from(file: &File, offset: u64, path: &Path) -> Result<Vec<u8>, StoreError> {
    let len = file
        .metadata()
        .map_err(|e| unavailable("inspecting", path, e))?
        .len();
    let mut buf = vec![0u8; usize::try_from(len.saturating_sub(offset)).unwrap_or(0)];
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            // The file shrank (a writer cut a torn tail) since we looked at its length.
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(unavailable("reading", path, e)),
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

pub(super) fn path_of(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}
