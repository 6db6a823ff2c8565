//! Reading a whole hash map with `BPF_MAP_LOOKUP_BATCH`, and writing or deleting many entries
//! of a map with `BPF_MAP_UPDATE_BATCH` and `BPF_MAP_DELETE_BATCH`, which aya 0.14 does not
//! expose.
//!
//! Batches walk the map bucket by bucket, so entries the kernel deletes or inserts meanwhile
//! (an LRU evicting under a flood) cannot restart the walk, as they can restart a walk by
//! `BPF_MAP_GET_NEXT_KEY` (whose cursor is a key: a key that vanished sends it back to the
//! first bucket). And it is one system call per few thousand entries instead of two per
//! entry.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use aya::Pod;

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

/// Entries asked for per call. A batch must hold at least the largest bucket; hash buckets
/// hold a handful.
const BATCH: u32 = 4096;

/// `union bpf_attr` for the `BPF_MAP_*_BATCH` commands.
#[repr(C)]
#[derive(Default)]
pub(super) struct BatchAttr {
    pub in_batch: u64,
    pub out_batch: u64,
    pub keys: u64,
    pub values: u64,
    pub count: u32,
    pub map_fd: u32,
    pub elem_flags: u64,
    pub flags: u64,
}

/// One `BPF_MAP_LOOKUP_BATCH` call; on return `attr.count` says how many entries it
/// gave, also with the error `ENOENT` (the last batch).
///
/// # Safety
/// `attr.keys` and `attr.values` must point to room for `attr.count` keys and values of
/// the map's sizes, and `attr.in_batch` (unless 0) and `attr.out_batch` to a cursor of at
/// least the map's key size and 8 bytes, all live for the call.
pub(super) unsafe fn lookup_batch(attr: &mut BatchAttr) -> io::Result<()> {
    // SAFETY: the caller vouches for the buffers.
    unsafe { batch(BPF_MAP_LOOKUP_BATCH, attr) }
}

/// One `BPF_MAP_*_BATCH` `command` with `attr`.
///
/// # Safety
/// The buffers `attr` points to must be what `command` reads and writes, live for the call.
unsafe fn batch(command: libc::c_long, attr: &mut BatchAttr) -> io::Result<()> {
    // SAFETY: the caller vouches for the buffers; the size passed keeps the kernel from
    // reading past the batch prefix of `union bpf_attr`.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command,
            attr as *mut BatchAttr,
            size_of::<BatchAttr>(),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Writes `values[i]` at `keys[i]` into the (not per-CPU) map `fd`, whose keys and values
/// must be `K` and `V`: one system call for all of them, where one per entry made most of
/// the agent's time writing a policy change (some 3,000 entries at 10,000 policies, about
/// a microsecond and a half each). On error, some of the entries may be written.
pub fn update<K: Pod, V: Pod>(fd: BorrowedFd<'_>, keys: &[K], values: &[V]) -> io::Result<()> {
    if keys.len() != values.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a batch needs as many values as keys",
        ));
    }
    let mut done = 0;
    while done < keys.len() {
        let count = u32::try_from(keys.len() - done).unwrap_or(u32::MAX);
        let mut attr = BatchAttr {
            keys: keys[done..].as_ptr() as u64,
            values: values[done..].as_ptr() as u64,
            count,
            map_fd: fd.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        // SAFETY: `keys` and `values` hold at least `count` elements of the map's key and
        // value sizes from `done` on, and are only read by the kernel.
        unsafe { batch(BPF_MAP_UPDATE_BATCH, &mut attr) }?;
        // The kernel says how many it wrote; all of them unless interrupted.
        if attr.count == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "the kernel wrote no entry of a batch",
            ));
        }
        done += attr.count as usize;
    }
    Ok(())
}

/// Deletes `keys` (of type `K`, the map's key) from the map `fd`, calling `deleted` with each
/// key it deleted. A key the map does not hold (deleted or evicted meanwhile) is passed
/// over. One system call for many keys: after a burst of short connections the sweep
/// deletes some 100,000 expired flows, 110 ms of CPU one call per key, 33 ms in one batch
/// (measured here, `PAL_CT` of 262,144 entries).
pub fn delete<K: Pod>(
    fd: BorrowedFd<'_>,
    keys: &[K],
    mut deleted: impl FnMut(&K),
) -> io::Result<()> {
    let mut done = 0;
    while done < keys.len() {
        let mut attr = BatchAttr {
            keys: keys[done..].as_ptr() as u64,
            count: u32::try_from(keys.len() - done).unwrap_or(u32::MAX),
            map_fd: fd.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        // SAFETY: `keys` holds at least `count` elements of the map's key size from `done`
        // on, only read by the kernel.
        let result = unsafe { batch(BPF_MAP_DELETE_BATCH, &mut attr) };
        // The kernel stops at the first key it cannot delete; `count` says how many it
        // deleted before it.
        let count = (attr.count as usize).min(keys.len() - done);
        keys[done..done + count].iter().for_each(&mut deleted);
        done += count;
        match result {
            Ok(()) => {}
            // Gone already: the next key.
            Err(error) if error.raw_os_error() == Some(libc::ENOENT) => done += 1,
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// Calls `visit` with every entry of the (not per-CPU) hash map `fd`, whose keys and
/// values must be `K` and `V`. An entry inserted or deleted during the walk may or may not
/// be visited; every other entry is visited once.
pub fn for_each<K: Pod + Default, V: Pod + Default>(
    fd: BorrowedFd<'_>,
    mut visit: impl FnMut(&K, &V),
) -> io::Result<()> {
    let mut keys = vec![K::default(); BATCH as usize];
    let mut values = vec![V::default(); BATCH as usize];
    // The hash map's cursor is a bucket index (u32), opaque to us.
    let mut cursor = [0u8; 8];
    let mut next = [0u8; 8];
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { cursor.as_mut_ptr() as u64 },
            out_batch: next.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: BATCH,
            map_fd: fd.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        // SAFETY: `keys` and `values` hold `count` elements of the map's key and value
        // sizes (the caller's types), and the cursors hold 8 bytes, more than the kernel's
        // 4-byte bucket index.
        let result = unsafe { lookup_batch(&mut attr) };
        // ENOENT: the walk is over, and `count` still says what this last call found.
        let over = result.is_err();
        if let Err(error) = result
            && error.raw_os_error() != Some(libc::ENOENT)
        {
            return Err(error);
        }
        let found = attr.count.min(BATCH) as usize;
        for (key, value) in keys.iter().zip(&values).take(found) {
            visit(key, value);
        }
        if over {
            return Ok(());
        }
        cursor = next;
        first = false;
    }
}
