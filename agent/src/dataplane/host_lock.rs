//! One palisade per dataplane: an exclusive `flock(2)` on `<bpffs>/palisade`, the
//! directory above every ABI version's pins, held by `palisade agent` for its whole life
//! and by `palisade cleanup` while it works.
//!
//! Why there: the bpffs is what makes a dataplane one (its pinned maps, programs and
//! links), so two agents with different `--run-dir`s or datastores on one bpffs exclude
//! each other, and so do an old and a new release (the directory does not depend on the
//! ABI version, and every release from this one on takes the same lock). The node
//! container bind-mounts the host's bpffs, so an agent in it and one on the host see the
//! same directory inode and exclude each other too. Agents on different bpffs mounts (as
//! the tests run them, side by side) are different dataplanes and do not. bpffs holds no
//! regular files, but its directories can be locked, and the kernel drops the lock when
//! its holder dies, also by SIGKILL: no stale lock files.
//!
//! The lock cannot carry the holder's PID, so a refused process reads it from
//! `/proc/locks`, which lists every `flock` with its owner and the inode it is on.

use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::bpffs::lock_dir;

const PROC_LOCKS: &str = "/proc/locks";
/// A refused lock whose holder is gone by the time `/proc/locks` is read is tried again.
const RETRIES: usize = 20;
const RETRY_PAUSE: Duration = Duration::from_millis(10);

/// Held while a palisade process owns the dataplane of one bpffs; released on drop (and by
/// the kernel when the process dies).
#[derive(Debug)]
pub struct HostLock {
    _dir: File,
    path: PathBuf,
}

impl HostLock {
    /// The locked directory, `<bpffs>/palisade`.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The process that holds the lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// 0 if the kernel does not say (the holder is in a PID namespace this one cannot see).
    pub pid: u32,
    /// Its command line, if it could be read.
    pub command: Option<String>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.pid, &self.command) {
            (0, _) => f.write_str("a process in another PID namespace"),
            (pid, Some(command)) => write!(f, "PID {pid}: {command}"),
            (pid, None) => write!(f, "PID {pid}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another palisade process holds {} ({holder}); only one palisade agent may run per \
         host (per bpffs): stop it first",
        path.display()
    )]
    Held { path: PathBuf, holder: Holder },
    #[error("cannot lock {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Takes the lock of the bpffs mounted at `bpffs`, without waiting: if another process
/// holds it, says which.
pub fn lock(bpffs: &Path) -> Result<HostLock, LockError> {
    let path = lock_dir(bpffs);
    let io_error = |source| LockError::Io {
        path: path.clone(),
        source,
    };
    match fs::DirBuilder::new().mode(0o700).create(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_error(e)),
    }
    let dir = File::open(&path).map_err(io_error)?;
    for _ in 0..RETRIES {
        // SAFETY: flock on a descriptor we own; no memory is passed.
        if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(HostLock { _dir: dir, path });
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) => {}
            _ => return Err(io_error(err)),
        }
        let meta = dir.metadata().map_err(io_error)?;
        if let Some(holder) = holder_of(meta.dev(), meta.ino()).map_err(io_error)? {
            return Err(LockError::Held { path, holder });
        }
        // Released between our attempt and the read: try again.
        std::thread::sleep(RETRY_PAUSE);
    }
    Err(LockError::Held {
        path,
        holder: Holder {
            pid: 0,
            command: None,
        },
    })
}

/// Who holds a `flock` on the inode (`dev`, `ino`), from `/proc/locks`; `None` if nobody.
fn holder_of(dev: u64, ino: u64) -> io::Result<Option<Holder>> {
    let locks = fs::read_to_string(PROC_LOCKS)?;
    let Some(pid) = flock_holder(&locks, libc::major(dev), libc::minor(dev), ino) else {
        return Ok(None);
    };
    Ok(Some(Holder {
        pid,
        command: command_line(pid),
    }))
}

/// The PID of the `FLOCK` on (`major`, `minor`, `ino`) in the text of `/proc/locks`, whose
/// lines read `1: FLOCK  ADVISORY  WRITE 1234 00:2a:5678 0 EOF` (device numbers in hex);
/// processes waiting for a lock are listed with `->` and are skipped.
fn flock_holder(locks: &str, major: u32, minor: u32, ino: u64) -> Option<u32> {
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [_, "FLOCK", _, _, pid, place, ..] = fields[..] else {
            return None;
        };
        let mut parts = place.split(':');
        let (maj, min, inode) = (parts.next()?, parts.next()?, parts.next()?);
        let same = u32::from_str_radix(maj, 16).ok()? == major
            && u32::from_str_radix(min, 16).ok()? == minor
            && inode.parse::<u64>().ok()? == ino;
        // A negative or unparsable PID means the kernel would not say.
        same.then(|| pid.parse::<u32>().unwrap_or(0))
    })
}

/// `/proc/<pid>/cmdline` with spaces between the arguments.
fn command_line(pid: u32) -> Option<String> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let words: Vec<String> = raw
        .split(|&b| b == 0)
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    (!words.is_empty()).then(|| words.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCKS: &str = "\
1: POSIX  ADVISORY  WRITE 700 00:2a:99 0 EOF
2: FLOCK  ADVISORY  WRITE 4321 00:2a:12 0 EOF
2: -> FLOCK  ADVISORY  WRITE 5555 00:2a:12 0 EOF
3: FLOCK  ADVISORY  WRITE 1234 103:1f:12 0 EOF
";

    #[test]
    fn finds_the_flock_holder_of_an_inode() {
        assert_eq!(flock_holder(LOCKS, 0x103, 0x1f, 12), Some(1234));
        assert_eq!(flock_holder(LOCKS, 0, 0x2a, 12), Some(4321));
        // POSIX locks are not ours; another inode is not ours.
        assert_eq!(flock_holder(LOCKS, 0, 0x2a, 99), None);
        assert_eq!(flock_holder(LOCKS, 0, 0x2a, 13), None);
    }

    #[test]
    fn names_the_holder() {
        let holder = Holder {
            pid: 42,
            command: Some("palisade agent".into()),
        };
        assert_eq!(holder.to_string(), "PID 42: palisade agent");
        let hidden = Holder {
            pid: 0,
            command: None,
        };
        assert_eq!(hidden.to_string(), "a process in another PID namespace");
    }
}
