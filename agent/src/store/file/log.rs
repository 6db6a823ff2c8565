//! Reading `log.<gen>` files: the header, then the commits appended after a position.
//! Readers never lock: a frame is only ever appended whole by one `write`, a torn tail is
//! simply "not committed yet", and a log is never appended to once `CURRENT` has moved on.

use std::fs::File;
use std::path::Path;

use super::disk::{read_from, unavailable};
use super::frame::{self, Next};
use super::record::{self, CommitRecord, LogHeader};
use crate::store::StoreError;

/// Reads the header of a log; returns it and the offset of the first commit.
pub(super) fn read_header(file: &File, path: &Path) -> Result<(LogHeader, u64), StoreError> {
    // A header is a few dozen bytes; the commits after it need not be read here.
    let mut buf = [0u8; 256];
    let n = read_prefix(file, &mut buf).map_err(|e| unavailable("reading", path, e))?;
    match frame::read_frame(&buf[..n], 0) {
        Next::Frame { payload, end } => Ok((record::decode(payload, path, 0)?, end as u64)),
        _ => Err(StoreError::Corrupt(format!(
            "{}: the log header is missing or damaged",
            path.display()
        ))),
    }
}

/// The commits appended to a log since `offset`.
pub(super) struct NewCommits {
    /// Each commit with the offset just past its record.
    pub commits: Vec<(CommitRecord, u64)>,
    /// The file's length when read; beyond the last commit's end is a torn tail.
    pub file_len: u64,
    /// A damaged record after the last commit: the log cannot be read past it.
    pub damage: Option<Damage>,
}

/// A damaged record: where it starts, and what is wrong with it.
pub(super) struct Damage {
    pub offset: u64,
    pub why: String,
}

impl Damage {
    /// The error for the damaged record of the log at `path`, after which the commits up to
    /// revision `intact` were read: it says what is intact and what to do.
    pub fn error(&self, path: &Path, intact: crate::store::Revision) -> StoreError {
        let (path, offset) = (path.display(), self.offset);
        StoreError::Corrupt(format!(
            "{path}: the record at byte {offset} {}. Every commit up to revision {intact} \
             is intact. Restore the store from a backup, or keep those commits and drop the \
             damaged record and everything after it: stop every palisade process that uses \
             the store, copy its directory aside, and run `truncate -s {offset} {path}`",
            self.why
        ))
    }
}

pub(super) fn read_commits(
    file: &File,
    offset: u64,
    path: &Path,
) -> Result<NewCommits, StoreError> {
    let buf = read_from(file, offset, path)?;
    let mut commits = Vec::new();
    let mut pos = 0;
    let mut damage = None;
    loop {
        match frame::read_frame(&buf, pos) {
            Next::Frame { payload, end } => match serde_json::from_slice(payload) {
                Ok(commit) => {
                    pos = end;
                    commits.push((commit, offset + pos as u64));
                }
                // Intact framing around a payload that does not parse: not what we wrote.
                Err(e) => {
                    damage = Some(Damage {
                        offset: offset + pos as u64,
                        why: format!("does not parse: {e}"),
                    });
                    break;
                }
            },
            Next::End | Next::Torn => break,
            Next::Corrupt(why) => {
                damage = Some(Damage {
                    offset: offset + pos as u64,
                    why,
                });
                break;
            }
        }
    }
    Ok(NewCommits {
        commits,
        file_len: offset + buf.len() as u64,
        damage,
    })
}

/// Fills `buf` from the start of `file` as far as the file goes.
fn read_prefix(file: &File, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
