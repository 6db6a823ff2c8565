//! The writers' lock: an exclusive `flock(2)` on the store's `lock` file, so that one
//! writer at a time, in any process, reads the latest state and appends to it. `flock`
//! locks belong to the open file description, so two `FileStore`s in one process exclude
//! each other as two processes do, and the kernel releases the lock when a writer dies.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use super::disk::unavailable;
use crate::store::StoreError;

/// Held while writing; unlocks on drop.
pub(super) struct WriterLock<'a> {
    file: &'a File,
}

/// Blocks until this process holds the exclusive lock on `file` (the store's `lock`).
pub(super) fn lock_exclusive<'a>(
    file: &'a File,
    path: &Path,
) -> Result<WriterLock<'a>, StoreError> {
    loop {
        // SAFETY: flock on a file descriptor we own; no memory is passed.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc == 0 {
            return Ok(WriterLock { file });
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(unavailable("locking", path, err));
        }
    }
}

impl Drop for WriterLock<'_> {
    fn drop(&mut self) {
        // SAFETY: as above. Failure is impossible for a valid descriptor we hold a lock on,
        // and the lock would go with the descriptor anyway.
        unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_UN) };
    }
}
