//! Counting the entries of a hash map the kernel side fills (conntrack, fragments): the
//! kernel keeps no count user space can read, so the entries are read in batches of
//! thousands per bpf(2) call (`BPF_MAP_LOOKUP_BATCH`, which aya 0.14 does not expose) and
//! counted. About 70 calls for a full conntrack map of 262,144 entries instead of one
//! `BPF_MAP_GET_NEXT_KEY` call per entry.

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

use aya::maps::{MapData, MapError};

use super::map_batch::{BatchAttr, lookup_batch};

/// Entries asked for per call. A hash bucket is returned whole, so a call may need more
/// room than this when a bucket is larger (`ENOSPC`): the batch then grows.
const BATCH: u32 = 4096;

/// A hash map opened for counting.
pub struct Census {
    map: MapData,
    key_size: usize,
    value_size: usize,
    max_entries: u32,
}

impl Census {
    /// Opens the map pinned at `path`.
    pub fn open_pinned(path: &Path) -> Result<Census, MapError> {
        let map = MapData::from_pin(path)?;
        let info = map.info()?;
        Ok(Census {
            key_size: info.key_size() as usize,
            value_size: info.value_size() as usize,
            max_entries: info.max_entries(),
            map,
        })
    }

    pub fn max_entries(&self) -> u32 {
        self.max_entries
    }

    /// How many entries the map holds now. Entries the kernel adds or removes meanwhile
    /// may or may not be counted, as with any walk of a live map.
    pub fn count(&self) -> io::Result<u64> {
        let mut batch = BATCH;
        let mut keys = vec![0u8; self.key_size * batch as usize];
        let mut values = vec![0u8; self.value_size * batch as usize];
        // The position between calls: a bucket index for hash maps (a u32); room for a
        // key, as libbpf gives it.
        let mut position = vec![0u8; self.key_size.max(8)];
        let mut next = vec![0u8; self.key_size.max(8)];
        let mut total = 0u64;
        let mut first = true;
        let fd = u32::try_from(self.map.fd().as_fd().as_raw_fd())
            .map_err(|_| io::Error::other("bad map descriptor"))?;
        loop {
            let mut attr = BatchAttr {
                in_batch: if first { 0 } else { position.as_ptr() as u64 },
                out_batch: next.as_mut_ptr() as u64,
                keys: keys.as_mut_ptr() as u64,
                values: values.as_mut_ptr() as u64,
                count: batch,
                map_fd: fd,
                ..BatchAttr::default()
            };
            // SAFETY: the buffers hold `count` keys and values of the map's sizes, and the
            // positions room for a key and 8 bytes, all live for the call.
            if let Err(error) = unsafe { lookup_batch(&mut attr) } {
                match error.raw_os_error() {
                    // The last batch: `count` says how many it held.
                    Some(libc::ENOENT) => return Ok(total + u64::from(attr.count)),
                    Some(libc::ENOSPC) if attr.count == 0 => {
                        batch *= 2;
                        keys.resize(self.key_size * batch as usize, 0);
                        values.resize(self.value_size * batch as usize, 0);
                        continue;
                    }
                    _ => return Err(error),
                }
            }
            total += u64::from(attr.count);
            std::mem::swap(&mut position, &mut next);
            first = false;
        }
    }
}
