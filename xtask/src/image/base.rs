//! The Dockerfile's base image: present, pulled, or made here.
//!
//! Where no image registry answers (as on the project's build machines), the base is made
//! from Debian's own packages: `debootstrap --variant=minbase <suite>`, imported with
//! `docker import` under the base's name, so the same Dockerfile builds offline. The root
//! file system is cached (it takes a few minutes to make), per suite and architecture, in
//! `$XDG_CACHE_HOME/palisade` (or `~/.cache/palisade`): outside the checkout, so fresh
//! clones on one machine share it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use super::Docker;
use crate::command;

/// How long a pull may take before the registry counts as unreachable.
const PULL_PATIENCE: Duration = Duration::from_secs(60);

/// The default of the Dockerfile's `ARG BASE=...`.
pub fn default_base(dockerfile: &Path) -> Result<String> {
    let text = fs::read_to_string(dockerfile)
        .with_context(|| format!("cannot read {}", dockerfile.display()))?;
    text.lines()
        .find_map(|line| line.trim().strip_prefix("ARG BASE="))
        .map(|base| base.trim().to_string())
        .ok_or_else(|| anyhow!("{} has no `ARG BASE=...` line", dockerfile.display()))
}

/// Makes sure the daemon has `base`.
pub fn ensure(docker: &Docker, base: &str) -> Result<()> {
    if docker.has_image(base) {
        eprintln!("image: base {base}: present");
        return Ok(());
    }
    // Which suite to make is checked before any time goes into pulling.
    let suite = debian_suite(base)?;
    if pull(docker, base) {
        eprintln!("image: base {base}: pulled");
        return Ok(());
    }
    eprintln!("image: base {base}: no registry answered; making it with debootstrap");
    let rootfs = cached_rootfs(&suite)?;
    command::run(
        docker
            .command(["import", "--change", r#"CMD ["bash"]"#])
            .arg(&rootfs)
            .arg(base),
    )
    .with_context(|| format!("cannot import {} as {base}", rootfs.display()))?;
    eprintln!("image: base {base}: made from Debian {suite} (debootstrap --variant=minbase)");
    Ok(())
}

/// The Debian suite of a `debian:<suite>` or `debian:<suite>-slim` base, which must be the
/// build host's own: bpftool's packages come from the host's apt.
fn debian_suite(base: &str) -> Result<String> {
    let suite = base
        .strip_prefix("debian:")
        .map(|tag| tag.strip_suffix("-slim").unwrap_or(tag))
        .filter(|suite| !suite.is_empty() && suite.chars().all(|c| c.is_ascii_lowercase()))
        .ok_or_else(|| {
            anyhow!(
                "the base {base} is not here and cannot be made: only debian:<suite>[-slim] \
                 bases are made with debootstrap\nhint: load {base} into the daemon \
                 (docker load), or build with the Dockerfile's default base"
            )
        })?;
    let host = host_codename()?;
    if host != suite {
        bail!(
            "the base is Debian {suite} but this host runs {host}: the image's bpftool \
             packages come from this host's apt, so the base must be debian:{host}-slim"
        );
    }
    Ok(suite.to_string())
}

fn host_codename() -> Result<String> {
    let release = fs::read_to_string("/etc/os-release").context("cannot read /etc/os-release")?;
    release
        .lines()
        .find_map(|line| line.strip_prefix("VERSION_CODENAME="))
        .map(|name| name.trim_matches('"').to_string())
        .ok_or_else(|| anyhow!("/etc/os-release names no VERSION_CODENAME"))
}

/// `docker pull`, given up after [`PULL_PATIENCE`]; whether it succeeded.
fn pull(docker: &Docker, base: &str) -> bool {
    eprintln!("image: base {base}: missing; trying docker pull");
    let Ok(mut child) = docker
        .command(["pull", base])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    let deadline = Instant::now() + PULL_PATIENCE;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) => std::thread::sleep(Duration::from_millis(200)),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

/// A tar of a minbase root file system of `suite`, made once and then taken from the cache.
fn cached_rootfs(suite: &str) -> Result<PathBuf> {
    let arch = command::output(Command::new("dpkg").arg("--print-architecture"))?;
    let dir = cache_dir()?.join("base");
    let tar = dir.join(format!("debian-{suite}-minbase-{}.tar", arch.trim()));
    if tar.is_file() {
        eprintln!("image: root file system {}: cached", tar.display());
        return Ok(tar);
    }
    if !command::is_root() {
        bail!("debootstrap needs root\nhint: run `cargo xtask image` as root");
    }
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tree = tempfile_dir(&dir, "rootfs")?;
    let made = (|| {
        // No mirror named: debootstrap's default, as the host's apt reaches Debian.
        command::run(
            Command::new("debootstrap")
                .args(["--variant=minbase", suite])
                .arg(&tree),
        )
        .context("debootstrap failed (`cargo xtask bootstrap` installs it)")?;
        let partial = tar.with_extension("tar.partial");
        command::run(
            Command::new("tar")
                .args(["--numeric-owner", "--xattrs", "-C"])
                .arg(&tree)
                .arg("-cf")
                .arg(&partial)
                .arg("."),
        )?;
        // Complete or absent: an interrupted run leaves no tar that looks cached.
        fs::rename(&partial, &tar).with_context(|| format!("cannot write {}", tar.display()))
    })();
    // debootstrap mounts /proc and /sys in the tree while it works; a failed run may leave
    // them there, and removing the tree must not walk into them.
    unmount_below(&tree);
    let removed = fs::remove_dir_all(&tree);
    made?;
    removed.with_context(|| format!("cannot remove {}", tree.display()))?;
    Ok(tar)
}

/// `$XDG_CACHE_HOME/palisade`, or `~/.cache/palisade`.
pub fn cache_dir() -> Result<PathBuf> {
    if let Some(cache) = std::env::var_os("XDG_CACHE_HOME").filter(|c| !c.is_empty()) {
        return Ok(PathBuf::from(cache).join("palisade"));
    }
    std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".cache").join("palisade"))
        .ok_or_else(|| anyhow!("neither XDG_CACHE_HOME nor HOME is set; no cache directory"))
}

/// A fresh, empty directory `<parent>/<prefix>.<pid>` (a leftover of a killed run with the
/// same pid is removed first).
fn tempfile_dir(parent: &Path, prefix: &str) -> Result<PathBuf> {
    let dir = parent.join(format!("{prefix}.{}", std::process::id()));
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// Detaches every mount at or below `dir`, deepest first.
pub(super) fn unmount_below(dir: &Path) {
    let Ok(mountinfo) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|point| point.starts_with(dir))
        .collect();
    points.sort_by_key(|point| std::cmp::Reverse(point.components().count()));
    for point in points {
        if let Ok(path) = std::ffi::CString::new(point.as_os_str().as_encoded_bytes()) {
            // SAFETY: a valid NUL-terminated path for the duration of the call.
            unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
        }
    }
}
