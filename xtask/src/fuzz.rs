//! `cargo xtask fuzz`: every libFuzzer target for a while, then the packet fuzzer.
//!
//! The targets' bodies live in `fuzz/` (crate palisade-fuzz), their libFuzzer binaries in
//! `fuzz/libfuzzer` (cargo-fuzz, nightly). Each target starts from its committed corpus
//! and regressions, copied to a scratch corpus under `target/fuzz/`, so a run never
//! changes the committed files unless asked to (`--merge`). A crash leaves its input in
//! `target/fuzz/artifacts/<target>/`; fixing it means committing that input to
//! `fuzz/regressions/<target>/`, where `cargo xtask test` replays it from then on.

use std::{
    env,
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail};

use crate::{bootstrap, cargo::Workspace, command};

/// The targets, in `fuzz/src/lib.rs`' order.
pub const TARGETS: &[&str] = &[
    "selector",
    "resources",
    "etcd_layout",
    "docker_requests",
    "store_log",
];

/// The packet fuzzer's test, and the variables that set how many packets it sends and
/// which.
const PACKET_TEST: &str = "bpf_packet_fuzz";
const PACKETS_ENV: &str = "PALISADE_FUZZ_PACKETS";
const SEED_ENV: &str = "PALISADE_FUZZ_SEED";

pub struct Options {
    pub seconds: u64,
    pub targets: Vec<String>,
    pub packets: u64,
    /// The packet fuzzer's seed; `None`: a fresh one.
    pub seed: Option<u64>,
    pub merge: bool,
}

pub fn run(repo: &Path, options: &Options, object: Option<&Path>) -> Result<()> {
    let targets: Vec<&str> = if options.targets.is_empty() {
        TARGETS.to_vec()
    } else {
        for target in &options.targets {
            if !TARGETS.contains(&target.as_str()) {
                bail!(
                    "no fuzz target {target}; the targets are {}",
                    TARGETS.join(", ")
                );
            }
        }
        options.targets.iter().map(String::as_str).collect()
    };
    let mut crashed = Vec::new();
    for target in &targets {
        if !fuzz_target(repo, target, options)? {
            crashed.push(*target);
        }
    }
    if let Some(object) = object {
        let seed = options.seed.unwrap_or_else(fresh_seed);
        eprintln!(
            "fuzz: {} mutated packets through the real programs, seed {seed}",
            options.packets
        );
        let args: Vec<OsString> = [
            "-p",
            "palisade-tests",
            "--test",
            PACKET_TEST,
            "--",
            "--nocapture",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let (packets, seed_text) = (options.packets.to_string(), seed.to_string());
        Workspace::new(repo)
            .test(
                object,
                &[
                    (PACKETS_ENV, packets.as_ref()),
                    (SEED_ENV, seed_text.as_ref()),
                ],
                &args,
            )
            .with_context(|| {
                format!(
                    "the packet fuzzer found a bypass, or failed\n\
                     hint: `{SEED_ENV}={seed} {PACKETS_ENV}={} cargo xtask test -- \
                     -p palisade-tests --test {PACKET_TEST}` sends the same packets again",
                    options.packets
                )
            })?;
    }
    if !crashed.is_empty() {
        bail!(
            "these targets crashed: {}; their inputs are in {}\n\
             hint: reproduce with `cargo +nightly fuzz run --fuzz-dir fuzz/libfuzzer -s none TARGET INPUT`, \
             fix the bug, and commit the input to fuzz/regressions/TARGET/ named for what it found",
            crashed.join(", "),
            repo.join("target/fuzz/artifacts").display()
        );
    }
    Ok(())
}

/// Runs one target for the configured time; `false` if it crashed.
fn fuzz_target(repo: &Path, target: &str, options: &Options) -> Result<bool> {
    let committed = repo.join("fuzz/corpus").join(target);
    let regressions = repo.join("fuzz/regressions").join(target);
    let scratch = repo.join("target/fuzz/corpus").join(target);
    let artifacts = repo.join("target/fuzz/artifacts").join(target);
    fresh_dir(&scratch)?;
    fs::create_dir_all(&artifacts)
        .with_context(|| format!("cannot create {}", artifacts.display()))?;
    for seeds in [&committed, &regressions] {
        copy_files(seeds, &scratch)?;
    }
    eprintln!("fuzz: {target} for {} s", options.seconds);
    let mut artifact_prefix = artifacts.into_os_string();
    artifact_prefix.push("/");
    let mut run = cargo_fuzz(repo, target);
    run.arg(&scratch)
        .arg("--")
        .arg(format!("-max_total_time={}", options.seconds))
        .arg("-timeout=20")
        .arg("-rss_limit_mb=4096")
        .arg({
            let mut prefix = OsString::from("-artifact_prefix=");
            prefix.push(&artifact_prefix);
            prefix
        });
    let passed = match command::run(&mut run) {
        Ok(()) => true,
        Err(err) => {
            eprintln!("fuzz: {target}: {err:#}");
            false
        }
    };
    if passed && options.merge {
        // libFuzzer's merge adds to the first directory only the inputs that reach code
        // the ones already there do not, which keeps the committed corpus small.
        fs::create_dir_all(&committed)
            .with_context(|| format!("cannot create {}", committed.display()))?;
        let mut merge = cargo_fuzz(repo, target);
        merge.arg(&committed).arg(&scratch).args(["--", "-merge=1"]);
        command::run(&mut merge)
            .with_context(|| format!("cannot merge the new corpus of {target}"))?;
    }
    Ok(passed)
}

/// `cargo +nightly fuzz run TARGET` on palisade's cargo-fuzz crate, uninstrumented by
/// sanitizers (the targets are safe Rust: coverage guidance is what finds their bugs, and
/// the build is several times faster), optimised with debug assertions.
fn cargo_fuzz(repo: &Path, target: &str) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(repo)
        .args(["+nightly", "fuzz", "run", "--fuzz-dir", "fuzz/libfuzzer"])
        .args(["--sanitizer", "none", "--debug-assertions"])
        .arg(target);
    for variable in [
        "CARGO_TARGET_DIR",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTUP_TOOLCHAIN",
    ] {
        cmd.env_remove(variable);
    }
    if let Ok(home) = bootstrap::cargo_home() {
        let mut path: Vec<PathBuf> = env::var_os("PATH")
            .map(|path| env::split_paths(&path).collect())
            .unwrap_or_default();
        path.push(home.join("bin"));
        if let Ok(joined) = env::join_paths(path) {
            cmd.env("PATH", joined);
        }
    }
    cmd
}

/// A seed no earlier run is likely to have used: the clock's nanoseconds.
fn fresh_seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64)
}

fn fresh_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("cannot empty {}", dir.display()))?;
    }
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
}

fn copy_files(from: &Path, to: &Path) -> Result<()> {
    let Ok(entries) = fs::read_dir(from) else {
        return Ok(());
    };
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", from.display()))?;
        let path = entry.path();
        if path.is_file() {
            fs::copy(&path, to.join(entry.file_name()))
                .with_context(|| format!("cannot copy {}", path.display()))?;
        }
    }
    Ok(())
}
