//! The BPF filesystem and palisade's pin directory in it.
//!
//! Maps and links are pinned under `/sys/fs/bpf/palisade/<ABI_VERSION>/` so that a restarted
//! agent adopts them and enforcement never stops, while an agent with a new map ABI starts
//! from an empty directory. A fresh machine often has no bpffs mounted at all.

use std::{
    ffi::CString,
    fs, io,
    os::unix::{ffi::OsStrExt, fs::DirBuilderExt},
    path::{Path, PathBuf},
};

use palisade_common::ABI_VERSION;

use super::Error;

/// Where bpffs is conventionally mounted.
pub const BPFFS_ROOT: &str = "/sys/fs/bpf";

const MOUNTS: &str = "/proc/self/mounts";

/// palisade's directory in the bpffs mounted at `bpffs`: one pin directory per ABI version
/// under it, and the lock of the dataplane on it (see [`super::host_lock`]).
pub fn lock_dir(bpffs: &Path) -> PathBuf {
    bpffs.join("palisade")
}

/// The pin directory for this ABI version under the bpffs mounted at `bpffs`.
pub fn pin_dir(bpffs: &Path) -> PathBuf {
    lock_dir(bpffs).join(ABI_VERSION.to_string())
}

/// Whether a bpffs is mounted exactly at `path`.
pub fn bpffs_mounted_at(path: &Path) -> Result<bool, Error> {
    let mounts = fs::read_to_string(MOUNTS).map_err(|source| Error::ReadMounts {
        path: MOUNTS,
        source,
    })?;
    Ok(is_bpffs_mounted_at(&mounts, path))
}

/// Mounts bpffs at `path` unless a bpffs is already mounted exactly there.
///
/// Returns whether it mounted one, so that a caller which owns the mount (a test) can undo it.
pub fn ensure_bpffs_mounted(path: &Path) -> Result<bool, Error> {
    if bpffs_mounted_at(path)? {
        return Ok(false);
    }
    mount_bpffs(path).map_err(|source| Error::MountBpffs {
        path: path.to_owned(),
        source,
    })?;
    Ok(true)
}

/// Mounts bpffs at `bpffs` if needed and creates the pin directory under it.
pub fn ensure_pin_dir(bpffs: &Path) -> Result<PathBuf, Error> {
    ensure_bpffs_mounted(bpffs)?;
    let dir = pin_dir(bpffs);
    // Only root reads palisade's pins (a mount of our own is private already, but a bpffs
    // mounted by others may not be).
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|source| Error::CreatePinDir {
            path: dir.clone(),
            source,
        })?;
    Ok(dir)
}

/// Whether the `/proc/self/mounts` text `mounts` has a `bpf` filesystem mounted at `path`.
fn is_bpffs_mounted_at(mounts: &str, path: &Path) -> bool {
    // Lines are "source mountpoint fstype options dump pass", with spaces in the mount point
    // escaped as \040; compare the escaped form.
    let wanted = escape_mount_path(path);
    mounts.lines().any(|line| {
        let mut fields = line.split_ascii_whitespace();
        let (_source, mount_point, fs_type) = (fields.next(), fields.next(), fields.next());
        mount_point == Some(wanted.as_str()) && fs_type == Some("bpf")
    })
}

fn escape_mount_path(path: &Path) -> String {
    let mut escaped = String::new();
    for &byte in path.as_os_str().as_bytes() {
        match byte {
            b' ' | b'\t' | b'\n' | b'\\' => escaped.push_str(&format!("\\{byte:03o}")),
            _ => escaped.push(char::from(byte)),
        }
    }
    escaped
}

fn mount_bpffs(path: &Path) -> io::Result<()> {
    let target = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    let fs_type = c"bpf";
    // Owner only, as systemd mounts it: bpffs defaults to world-readable and writable.
    let options = c"mode=0700";
    // SAFETY: every pointer is a valid NUL-terminated string that outlives the call.
    let rc = unsafe {
        libc::mount(
            fs_type.as_ptr(),
            target.as_ptr(),
            fs_type.as_ptr(),
            0,
            options.as_ptr().cast(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTS_SAMPLE: &str = "\
sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0
bpf /sys/fs/bpf bpf rw,nosuid,nodev,noexec,relatime,mode=700 0 0
tmpfs /tmp/with\\040space tmpfs rw 0 0
bpf /tmp/with\\040space/bpf bpf rw 0 0
";

    #[test]
    fn finds_bpffs_at_its_mount_point_only() {
        assert!(is_bpffs_mounted_at(MOUNTS_SAMPLE, Path::new("/sys/fs/bpf")));
        assert!(!is_bpffs_mounted_at(MOUNTS_SAMPLE, Path::new("/sys/fs")));
        assert!(!is_bpffs_mounted_at(MOUNTS_SAMPLE, Path::new("/sys")));
    }

    #[test]
    fn matches_escaped_mount_points() {
        assert!(is_bpffs_mounted_at(
            MOUNTS_SAMPLE,
            Path::new("/tmp/with space/bpf")
        ));
        assert!(!is_bpffs_mounted_at(
            MOUNTS_SAMPLE,
            Path::new("/tmp/with space")
        ));
    }

    #[test]
    fn pin_dir_is_versioned() {
        assert_eq!(
            pin_dir(Path::new("/sys/fs/bpf")),
            PathBuf::from(format!("/sys/fs/bpf/palisade/{ABI_VERSION}"))
        );
    }
}
