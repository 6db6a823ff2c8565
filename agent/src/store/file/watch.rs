//! Watching the store from any process. A watch follows the log files themselves: it reads
//! the commits appended since its last position, moves to the next generation's log once
//! `CURRENT` names it (a log is final by then), and sleeps until inotify reports a change
//! in the directory, or [`RECHECK_INTERVAL`] passes, so a missed event cannot stall it.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use inotify::{Inotify, WatchMask};
use tokio::sync::mpsc;

use super::disk::{self, Access, path_of, read_current};
use super::log::{read_commits, read_header};
use super::record::{CommitRecord, LogHeader};
use crate::store::{Change, Revision, StoreError, WatchStream};

const RECHECK_INTERVAL: Duration = Duration::from_millis(250);
const CHANNEL_CAPACITY: usize = 1024;
/// As in the replica: re-read `CURRENT` if the log it named was compacted away meanwhile.
const RACE_RETRIES: usize = 20;

/// Starts a watch of every commit after `after` (which the caller checked is not in the
/// future). Ends when the receiver is dropped, `closed` is set, or after an error.
pub(super) fn start(
    dir: &Path,
    after: Revision,
    closed: Arc<AtomicBool>,
) -> Result<WatchStream, StoreError> {
    // Watch the directory before the first read, so no commit can slip in between unseen.
    let waiter = DirWaiter::new(dir);
    let follower = Follower::start(dir, after)?;
    let (sender, receiver) = mpsc::channel(CHANNEL_CAPACITY);
    thread::Builder::new()
        .name("store-watch".into())
        .spawn(move || run(follower, waiter, sender, &closed))
        .map_err(|e| StoreError::Unavailable(format!("datastore: starting a watch: {e}")))?;
    Ok(receiver)
}

fn run(
    mut follower: Follower,
    mut waiter: DirWaiter,
    sender: mpsc::Sender<Result<Change, StoreError>>,
    closed: &AtomicBool,
) {
    let mut commits = Vec::new();
    loop {
        if sender.is_closed() || closed.load(Ordering::Acquire) {
            return;
        }
        let polled = follower.poll(&mut commits);
        for change in commits.drain(..).flat_map(CommitRecord::into_changes) {
            // Blocks while the receiver is full; fails once it is dropped.
            if sender.blocking_send(Ok(change)).is_err() {
                return;
            }
        }
        if let Err(e) = polled {
            let _ = sender.blocking_send(Err(e));
            return;
        }
        waiter.wait(RECHECK_INTERVAL);
    }
}

/// A position in the chain of logs.
struct Follower {
    dir: PathBuf,
    /// 0 while the store is not initialized (there is no log yet).
    generation: u64,
    log: Option<File>,
    /// Where the next commit record of `log` starts.
    offset: u64,
    /// The revision `log` has been read up to.
    position: Revision,
    /// Commits up to this one are read past but not delivered.
    after: Revision,
}

impl Follower {
    fn start(dir: &Path, after: Revision) -> Result<Follower, StoreError> {
        for _ in 0..RACE_RETRIES {
            let Some(current) = read_current(dir)? else {
                return Ok(Follower {
                    dir: dir.to_path_buf(),
                    generation: 0,
                    log: None,
                    offset: 0,
                    position: 0,
                    after,
                });
            };
            let Some(live) = open_log(dir, current)? else {
                if read_current(dir)? == Some(current) {
                    return Err(StoreError::Corrupt(format!(
                        "{}: names generation {current}, but {} is missing",
                        path_of(dir, disk::CURRENT).display(),
                        disk::log_name(current)
                    )));
                }
                continue;
            };
            if after >= live.header.base_revision {
                return Ok(Follower::at(dir, live, after));
            }
            // Older history is in the previous generation's log, while it is kept.
            return match open_log(dir, current - 1)? {
                Some(previous) if after >= previous.header.base_revision => {
                    Ok(Follower::at(dir, previous, after))
                }
                Some(previous) => Err(StoreError::Compacted {
                    requested: after,
                    oldest: previous.header.base_revision,
                }),
                None => Err(StoreError::Compacted {
                    requested: after,
                    oldest: live.header.base_revision,
                }),
            };
        }
        Err(StoreError::Unavailable(format!(
            "datastore {}: the store kept changing generation while a watch started",
            dir.display()
        )))
    }

    fn at(dir: &Path, log: OpenLog, after: Revision) -> Follower {
        Follower {
            dir: dir.to_path_buf(),
            generation: log.header.generation,
            log: Some(log.file),
            offset: log.start,
            position: log.header.base_revision,
            after,
        }
    }

    /// Adds the commits written since the last poll to `out`, in revision order.
    fn poll(&mut self, out: &mut Vec<CommitRecord>) -> Result<(), StoreError> {
        loop {
            // Read before the log: if it already names a later generation, our log is
            // complete and what we read of it is all there is.
            let current = read_current(&self.dir)?.unwrap_or(0);
            if let Some(log) = &self.log {
                let path = path_of(&self.dir, &disk::log_name(self.generation));
                let new = read_commits(log, self.offset, &path)?;
                for (commit, end) in new.commits {
                    if commit.revision != self.position + 1 {
                        return Err(StoreError::Corrupt(format!(
                            "{}: commit of revision {} follows revision {}",
                            path.display(),
                            commit.revision,
                            self.position
                        )));
                    }
                    self.position = commit.revision;
                    self.offset = end;
                    if commit.revision > self.after {
                        out.push(commit);
                    }
                }
                if let Some(damage) = new.damage {
                    return Err(damage.error(&path, self.position));
                }
            }
            if current <= self.generation {
                return Ok(());
            }
            self.move_to_next_generation()?;
        }
    }

    fn move_to_next_generation(&mut self) -> Result<(), StoreError> {
        let next = self.generation + 1;
        let Some(log) = open_log(&self.dir, next)? else {
            // Two or more compactions happened while we were not reading.
            return Err(StoreError::Compacted {
                requested: self.position.max(self.after),
                oldest: oldest_retained(&self.dir).unwrap_or(self.position),
            });
        };
        if log.header.base_revision != self.position {
            return Err(StoreError::Corrupt(format!(
                "{}: starts after revision {}, but the log before it ends at {}",
                path_of(&self.dir, &disk::log_name(next)).display(),
                log.header.base_revision,
                self.position
            )));
        }
        self.generation = next;
        self.log = Some(log.file);
        self.offset = log.start;
        Ok(())
    }
}

struct OpenLog {
    file: File,
    header: LogHeader,
    /// The offset of its first commit.
    start: u64,
}

fn open_log(dir: &Path, generation: u64) -> Result<Option<OpenLog>, StoreError> {
    if generation == 0 {
        return Ok(None);
    }
    let name = disk::log_name(generation);
    let Some(file) = disk::open_if_exists(dir, &name, Access::Read)? else {
        return Ok(None);
    };
    let path = path_of(dir, &name);
    let (header, start) = read_header(&file, &path)?;
    if header.generation != generation {
        return Err(StoreError::Corrupt(format!(
            "{}: header names generation {}",
            path.display(),
            header.generation
        )));
    }
    Ok(Some(OpenLog {
        file,
        header,
        start,
    }))
}

/// The revision after which history is still kept, for the message of a `Compacted`.
fn oldest_retained(dir: &Path) -> Option<Revision> {
    let current = read_current(dir).ok()??;
    let oldest = match open_log(dir, current - 1) {
        Ok(Some(previous)) => previous,
        _ => open_log(dir, current).ok()??,
    };
    Some(oldest.header.base_revision)
}

/// Sleeps until something in the store directory changes, or a timeout.
struct DirWaiter {
    /// `None` if inotify is unavailable (out of instances or watches): then we poll.
    inotify: Option<Inotify>,
    buffer: Vec<u8>,
}

impl DirWaiter {
    fn new(dir: &Path) -> DirWaiter {
        let inotify = Inotify::init().ok().and_then(|inotify| {
            inotify
                .watches()
                .add(
                    dir,
                    WatchMask::MODIFY | WatchMask::MOVED_TO | WatchMask::CREATE,
                )
                .ok()?;
            Some(inotify)
        });
        DirWaiter {
            inotify,
            buffer: vec![0; 4096],
        }
    }

    fn wait(&mut self, timeout: Duration) {
        let Some(inotify) = &mut self.inotify else {
            thread::sleep(timeout);
            return;
        };
        let mut pollfd = libc::pollfd {
            fd: inotify.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd for the duration of the call. An error (EINTR) only
        // means we look at the store sooner.
        unsafe { libc::poll(&mut pollfd, 1, timeout_ms) };
        // Drain what is queued (the descriptor is non-blocking): the events only say
        // "look again", and the next wait should sleep until a new one.
        while let Ok(events) = inotify.read_events(&mut self.buffer) {
            if events.count() == 0 {
                break;
            }
        }
    }
}
