//! What each map costs the kernel: its size and the memory the kernel accounts to it (the
//! `memlock` line of a map fd's `/proc/self/fdinfo`), read from the pins, so that it works
//! beside a running agent as well as in it.

use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

use aya::maps::MapInfo;
use palisade_common::map_names;

use super::load::map_pin_dir;

/// One pinned map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapMemory {
    pub name: &'static str,
    pub max_entries: u32,
    /// Bytes the kernel accounts to the map.
    pub bytes: u64,
}

/// Every map pinned under the pin directory `dir`, in the order of
/// [`map_names::ALL`]; maps not pinned there are left out.
pub fn pinned_maps_memory(dir: &Path) -> std::io::Result<Vec<MapMemory>> {
    let maps = map_pin_dir(dir);
    let mut out = Vec::new();
    for name in map_names::ALL {
        let path = maps.join(name);
        if !path.exists() {
            continue;
        }
        let info = MapInfo::from_pin(&path).map_err(std::io::Error::other)?;
        let fd = info.fd().map_err(std::io::Error::other)?;
        out.push(MapMemory {
            name,
            max_entries: info.max_entries(),
            bytes: memlock(fd.as_fd().as_raw_fd())?,
        });
    }
    Ok(out)
}

/// The `memlock` of this process's map fd `fd`.
fn memlock(fd: i32) -> std::io::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("memlock:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("fd {fd} has no memlock line")))
}

/// The sum of `maps`' bytes, in MiB.
pub fn total_mib(maps: &[MapMemory]) -> f64 {
    maps.iter().map(|m| m.bytes).sum::<u64>() as f64 / (1024.0 * 1024.0)
}
