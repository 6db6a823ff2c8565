//! A FUSE filesystem that loses power: the closest thing to a power cut this kernel offers
//! a test (it has no device-mapper, so no dm-flakey, and no fault injection).
//!
//! Like LazyFS (what etcd's robustness tests use), it keeps what was written but not yet
//! synced apart from what is durable: `fsync`/`fdatasync` of a file makes its contents
//! durable, `fsync` of the directory makes its entries (creations, renames, removals)
//! durable. At the cut, after a chosen number of changing requests, it freezes: every
//! later request fails with EIO, as a dead disk's would, and it computes what a disk would
//! hold after the power came back, from a seeded random choice among what real filesystems
//! do with unsynced work:
//! - directory changes: any prefix of those since the last directory sync (a journal
//!   replays metadata in order);
//! - a file's unsynced data: none of it, all of it, or a torn mix: the new length, each
//!   4 KiB block either written back or not (a block that was not reads as before, zeros
//!   where the file grew).
//!
//! A new filesystem mounted from that image holds it all as durable. Requests are served
//! through the real kernel (VFS, page cache, `flock`, the FUSE protocol): the store under
//! test uses its ordinary file system calls. One flat directory: the store's own.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

const ROOT: u64 = 1;
const BLOCK: usize = 4096;
/// Attributes and names are not cached by the kernel: every lookup asks us.
const TTL: Duration = Duration::ZERO;

/// What a disk holds: the directory's files and their contents.
pub type DiskImage = BTreeMap<OsString, Vec<u8>>;

/// xorshift64, seeded: a failing cut is replayed from its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound.max(1)
    }
}

#[derive(Clone)]
struct File {
    data: Vec<u8>,
    durable: Vec<u8>,
    mode: u16,
}

#[derive(Clone)]
enum DirOp {
    Link(OsString, u64),
    Unlink(OsString),
    Rename(OsString, OsString),
}

struct State {
    files: BTreeMap<u64, File>,
    entries: BTreeMap<OsString, u64>,
    durable_entries: BTreeMap<OsString, u64>,
    /// Directory changes since the last directory sync, in order.
    pending: Vec<DirOp>,
    next_ino: u64,
    /// Changing requests still allowed before the cut.
    until_cut: Option<u64>,
    rng: Rng,
    /// Set at the cut: what the disk holds.
    after_cut: Option<DiskImage>,
}

impl State {
    fn apply(entries: &mut BTreeMap<OsString, u64>, op: &DirOp) {
        match op {
            DirOp::Link(name, ino) => {
                entries.insert(name.clone(), *ino);
            }
            DirOp::Unlink(name) => {
                entries.remove(name);
            }
            DirOp::Rename(from, to) => {
                if let Some(ino) = entries.remove(from) {
                    entries.insert(to.clone(), ino);
                }
            }
        }
    }

    /// Counts a changing request; false once the power is off.
    fn powered(&mut self) -> bool {
        if self.after_cut.is_some() {
            return false;
        }
        match &mut self.until_cut {
            Some(0) => {
                self.after_cut = Some(self.crash_image());
                false
            }
            Some(left) => {
                *left -= 1;
                true
            }
            None => true,
        }
    }

    fn crash_image(&mut self) -> DiskImage {
        let mut entries = self.durable_entries.clone();
        let replayed = self.rng.below(self.pending.len() as u64 + 1) as usize;
        for op in &self.pending[..replayed] {
            State::apply(&mut entries, op);
        }
        let mut image = DiskImage::new();
        for (name, ino) in entries {
            let Some(file) = self.files.get(&ino) else {
                continue;
            };
            let contents = if file.data == file.durable {
                file.data.clone()
            } else {
                match self.rng.below(3) {
                    0 => file.durable.clone(),
                    1 => file.data.clone(),
                    _ => torn(&file.durable, &file.data, &mut self.rng),
                }
            };
            image.insert(name, contents);
        }
        image
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let (kind, size, perm) = if ino == ROOT {
            (FileType::Directory, 0, 0o755)
        } else {
            let file = self.files.get(&ino)?;
            (FileType::RegularFile, file.data.len() as u64, file.mode)
        };
        let now = SystemTime::now();
        Some(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            kind,
            perm,
            nlink: 1,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: BLOCK as u32,
            flags: 0,
        })
    }
}

/// The file's unsynced data half written back: the new length, each block of it either
/// the new data or what the disk had there before (zeros past the old end).
fn torn(durable: &[u8], data: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut out = data.to_vec();
    for (i, block) in out.chunks_mut(BLOCK).enumerate() {
        if rng.below(2) == 0 {
            continue;
        }
        for (j, byte) in block.iter_mut().enumerate() {
            *byte = durable.get(i * BLOCK + j).copied().unwrap_or(0);
        }
    }
    out
}

/// The filesystem: the FUSE side and the test's handle share its state.
#[derive(Clone)]
pub struct PowerCutFs(Arc<Mutex<State>>);

impl PowerCutFs {
    /// A filesystem holding `image` (all durable) that loses power after `cut_after`
    /// changing requests (never, with `None`); `seed` drives what survives the cut.
    pub fn new(image: &DiskImage, cut_after: Option<u64>, seed: u64) -> PowerCutFs {
        let mut state = State {
            files: BTreeMap::new(),
            entries: BTreeMap::new(),
            durable_entries: BTreeMap::new(),
            pending: Vec::new(),
            next_ino: ROOT + 1,
            until_cut: cut_after,
            rng: Rng(seed | 1),
            after_cut: None,
        };
        for (name, contents) in image {
            let ino = state.next_ino;
            state.next_ino += 1;
            state.files.insert(
                ino,
                File {
                    data: contents.clone(),
                    durable: contents.clone(),
                    mode: 0o600,
                },
            );
            state.entries.insert(name.clone(), ino);
        }
        state.durable_entries = state.entries.clone();
        PowerCutFs(Arc::new(Mutex::new(state)))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Mounts it at `mountpoint`; unmounted when the session is dropped.
    pub fn mount(&self, mountpoint: &Path) -> BackgroundSession {
        let mut config = Config::default();
        config.mount_options = vec![MountOption::FSName("palisade-power-cut".into())];
        fuser::spawn_mount(self.clone(), mountpoint, &config).unwrap_or_else(|e| {
            panic!("mount the FUSE filesystem at {}: {e}", mountpoint.display())
        })
    }

    /// What the disk holds after the cut, if the power is off.
    pub fn after_cut(&self) -> Option<DiskImage> {
        self.state().after_cut.clone()
    }
}

impl Filesystem for PowerCutFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let state = self.state();
        if parent.0 != ROOT {
            return reply.error(Errno::ENOENT);
        }
        match state.entries.get(name).and_then(|&ino| state.attr(ino)) {
            Some(attr) => reply.entry(&TTL, &attr, Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.state().attr(ino.0) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut state = self.state();
        if size.is_some() && !state.powered() {
            return reply.error(Errno::EIO);
        }
        if let Some(file) = state.files.get_mut(&ino.0) {
            if let Some(size) = size {
                file.data.resize(size as usize, 0);
            }
            if let Some(mode) = mode {
                file.mode = (mode & 0o7777) as u16;
            }
        }
        match state.attr(ino.0) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let mut state = self.state();
        if parent.0 != ROOT {
            return reply.error(Errno::EPERM);
        }
        if !state.powered() {
            return reply.error(Errno::EIO);
        }
        let ino = state.next_ino;
        state.next_ino += 1;
        state.files.insert(
            ino,
            File {
                data: Vec::new(),
                durable: Vec::new(),
                mode: (mode & !umask & 0o7777) as u16,
            },
        );
        state.entries.insert(name.to_os_string(), ino);
        state.pending.push(DirOp::Link(name.to_os_string(), ino));
        match state.attr(ino) {
            Some(attr) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(0),
                FopenFlags::empty(),
            ),
            None => reply.error(Errno::EIO),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let state = self.state();
        if state.after_cut.is_some() {
            return reply.error(Errno::EIO);
        }
        let Some(file) = state.files.get(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let start = (offset as usize).min(file.data.len());
        let end = (start + size as usize).min(file.data.len());
        reply.data(&file.data[start..end]);
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut state = self.state();
        if !state.powered() {
            return reply.error(Errno::EIO);
        }
        let Some(file) = state.files.get_mut(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let end = offset as usize + data.len();
        if file.data.len() < end {
            file.data.resize(end, 0);
        }
        file.data[offset as usize..end].copy_from_slice(data);
        reply.written(data.len() as u32);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut state = self.state();
        if !state.powered() {
            return reply.error(Errno::EIO);
        }
        if let Some(file) = state.files.get_mut(&ino.0) {
            file.durable = file.data.clone();
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut state = self.state();
        if !state.powered() {
            return reply.error(Errno::EIO);
        }
        state.durable_entries = state.entries.clone();
        state.pending.clear();
        reply.ok();
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut state = self.state();
        if parent.0 != ROOT || !state.entries.contains_key(name) {
            return reply.error(Errno::ENOENT);
        }
        if !state.powered() {
            return reply.error(Errno::EIO);
        }
        state.entries.remove(name);
        state.pending.push(DirOp::Unlink(name.to_os_string()));
        reply.ok();
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut state = self.state();
        if parent.0 != ROOT || newparent.0 != ROOT || !flags.is_empty() {
            return reply.error(Errno::EINVAL);
        }
        if !state.entries.contains_key(name) {
            return reply.error(Errno::ENOENT);
        }
        if !state.powered() {
            return reply.error(Errno::EIO);
        }
        let op = DirOp::Rename(name.to_os_string(), newname.to_os_string());
        State::apply(&mut state.entries, &op);
        state.pending.push(op);
        reply.ok();
    }

    fn mkdir(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        // One flat directory: the store's own.
        reply.error(Errno::EPERM);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let state = self.state();
        if ino.0 != ROOT {
            return reply.error(Errno::ENOTDIR);
        }
        if state.after_cut.is_some() {
            return reply.error(Errno::EIO);
        }
        let listing = [
            (ROOT, FileType::Directory, OsString::from(".")),
            (ROOT, FileType::Directory, OsString::from("..")),
        ]
        .into_iter()
        .chain(
            state
                .entries
                .iter()
                .map(|(name, &ino)| (ino, FileType::RegularFile, name.clone())),
        );
        for (i, (ino, kind, name)) in listing.enumerate().skip(offset as usize) {
            if reply.add(INodeNo(ino), i as u64 + 1, kind, &name) {
                break;
            }
        }
        reply.ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_file_keeps_its_new_length_and_old_or_new_blocks() {
        let durable = vec![1u8; BLOCK + 10];
        let data = vec![2u8; 3 * BLOCK];
        let out = torn(&durable, &data, &mut Rng(7));
        assert_eq!(out.len(), data.len());
        for (i, block) in out.chunks(BLOCK).enumerate() {
            let new = block.iter().all(|&b| b == 2);
            let old = block
                .iter()
                .enumerate()
                .all(|(j, &b)| b == durable.get(i * BLOCK + j).copied().unwrap_or(0));
            assert!(new || old, "block {i} is neither");
        }
    }
}
