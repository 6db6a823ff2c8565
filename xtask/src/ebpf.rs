//! `cargo xtask build-ebpf`: builds the eBPF crate (`ebpf/`) into an object file.
//!
//! The crate is its own workspace built with nightly for `bpfel-unknown-none`, `-Z
//! build-std=core` and bpf-linker; none of that may leak into the stable workspace build, so
//! every flag here is scoped to this one cargo invocation.

use std::{
    env,
    ffi::OsString,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::{bootstrap::EbpfToolchain, command};

const TARGET: &str = "bpfel-unknown-none";
const PACKAGE_BINARY: &str = "palisade-ebpf";

/// `-C link-arg=--btf` makes bpf-linker emit BTF (needed for BTF maps and for bpftool to
/// print map contents by field); debuginfo is what the BTF is generated from.
const RUSTFLAGS: &str = "-C debuginfo=2 -C link-arg=--btf";

/// Cargo profile of the eBPF build. Both are optimised (the verifier requires it); `Dev`
/// merely keeps a separate output directory for experiments.
#[derive(Clone, Copy, Debug)]
pub enum Profile {
    Release,
    Dev,
}

impl Profile {
    fn directory(self) -> &'static str {
        match self {
            Self::Release => "release",
            Self::Dev => "debug",
        }
    }
}

/// Builds the object and returns its absolute path.
pub fn build(repo: &Path, profile: Profile, toolchain: &EbpfToolchain) -> Result<PathBuf> {
    let crate_dir = repo.join("ebpf");
    // Explicit, so that a CARGO_TARGET_DIR shared by several checkouts (or a target-dir in a
    // cargo config) cannot redirect, or mix up, this checkout's object.
    let target_dir = crate_dir.join("target");

    let mut cargo = Command::new("cargo");
    cargo
        .current_dir(&crate_dir)
        .args([
            "+nightly",
            "build",
            "--target",
            TARGET,
            "-Z",
            "build-std=core",
        ])
        .arg("--target-dir")
        .arg(&target_dir);
    if let Profile::Release = profile {
        cargo.arg("--release");
    }
    // RUSTFLAGS overrides any `build.rustflags` from the repository's .cargo/config.toml
    // (which cargo still reads from inside ebpf/). Inherited settings meant for the host
    // build are dropped: an encoded-flags variable would win over RUSTFLAGS, and
    // RUSTUP_TOOLCHAIN/RUSTC (set when xtask itself runs under `cargo run`) would pick the
    // stable compiler.
    for variable in [
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTUP_TOOLCHAIN",
    ] {
        cargo.env_remove(variable);
    }
    cargo
        .env("RUSTFLAGS", RUSTFLAGS)
        .env("PATH", path_with_linker(&toolchain.bpf_linker)?);

    eprintln!(
        "build-ebpf: building {} ({})",
        crate_dir.display(),
        profile.directory()
    );
    command::run(&mut cargo).context("cannot build the eBPF crate")?;

    let object = target_dir
        .join(TARGET)
        .join(profile.directory())
        .join(PACKAGE_BINARY);
    if !object.is_file() {
        bail!(
            "the eBPF build succeeded but {} does not exist; did the binary's name in \
             ebpf/Cargo.toml change?",
            object.display()
        );
    }
    Ok(object)
}

/// PATH with bpf-linker's directory first: rustc runs the linker by name, and bootstrap may
/// have found it in `$CARGO_HOME/bin` without that being in PATH.
fn path_with_linker(bpf_linker: &Path) -> Result<OsString> {
    let mut dirs: Vec<PathBuf> = env::var_os("PATH")
        .map(|path| env::split_paths(&path).collect())
        .unwrap_or_default();
    if let Some(linker_dir) = bpf_linker.parent()
        && dirs.first().map(PathBuf::as_path) != Some(linker_dir)
    {
        dirs.insert(0, linker_dir.to_owned());
    }
    env::join_paths(dirs).context("cannot put bpf-linker's directory in PATH")
}
