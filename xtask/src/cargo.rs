//! The stable workspace: building, testing and locating its binaries.

use std::{
    env,
    ffi::{OsStr, OsString},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, anyhow, bail};

use crate::command;

/// Tells `agent/build.rs` which eBPF object to embed.
const OBJECT_ENV: &str = "PALISADE_EBPF_OBJECT";

/// Cargo profile of the workspace build.
#[derive(Clone, Copy, Debug)]
pub enum Profile {
    Dev,
    Release,
}

impl Profile {
    fn directory(self) -> &'static str {
        match self {
            Self::Dev => "debug",
            Self::Release => "release",
        }
    }
}

/// The workspace at `root`, driven with the cargo that runs xtask.
pub struct Workspace {
    root: PathBuf,
    cargo: OsString,
}

impl Workspace {
    pub fn new(root: &Path) -> Self {
        // `cargo xtask` sets CARGO to the cargo running it, so the workspace is built by
        // the same toolchain (stable) whatever PATH says.
        let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        Self {
            root: root.to_owned(),
            cargo,
        }
    }

    fn cargo(&self, subcommand: &str, object: &Path) -> Command {
        let mut cmd = Command::new(&self.cargo);
        cmd.current_dir(&self.root)
            .arg(subcommand)
            .arg("--workspace")
            .env(OBJECT_ENV, object);
        cmd
    }

    /// `cargo build --workspace` with `object` embedded in the agent.
    pub fn build(&self, profile: Profile, object: &Path) -> Result<()> {
        let mut cmd = self.cargo("build", object);
        if let Profile::Release = profile {
            cmd.arg("--release");
        }
        eprintln!("build: building the workspace ({})", profile.directory());
        command::run(&mut cmd).context("cannot build the workspace")
    }

    /// `cargo test --workspace --no-fail-fast ARGS` with `object` embedded in the agent and
    /// `env` set for the tests: every test binary runs, so one failure does not hide the
    /// others.
    pub fn test(&self, object: &Path, env: &[(&str, &OsStr)], args: &[OsString]) -> Result<()> {
        let mut cmd = self.cargo("test", object);
        cmd.arg("--no-fail-fast").args(args);
        for (name, value) in env {
            cmd.env(name, value);
        }
        eprintln!("test: testing the workspace");
        command::run(&mut cmd).context("tests failed")
    }

    /// Builds `palisade` once more with the map ABI one ahead (the `abi-next` feature), for
    /// the upgrade test, as `palisade-abi-next` beside `palisade`: the same target
    /// directory, so only palisade-common and the agent are compiled again. The normal
    /// binary is built again after it (cargo puts both at the same path).
    pub fn build_abi_next(&self, object: &Path) -> Result<PathBuf> {
        let mut cmd = Command::new(&self.cargo);
        cmd.current_dir(&self.root)
            .args([
                "build",
                "-p",
                "palisade",
                "--bin",
                "palisade",
                "--features",
                "abi-next",
            ])
            .args(["--message-format", "json-render-diagnostics"])
            .stderr(std::process::Stdio::inherit())
            .env(OBJECT_ENV, object);
        eprintln!(
            "build: building palisade-abi-next (the map ABI one ahead, for the upgrade test)"
        );
        let messages = command::output(&mut cmd).context("cannot build palisade-abi-next")?;
        let built = messages
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "palisade")
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .ok_or_else(|| anyhow!("cargo reported no palisade executable"))?;
        let next = built.with_file_name("palisade-abi-next");
        std::fs::copy(&built, &next)
            .with_context(|| format!("cannot copy {} to {}", built.display(), next.display()))?;
        let mut again = self.cargo("build", object);
        command::run(&mut again).context("cannot build the workspace again")?;
        // Cargo puts the normal binary back at `built` (asked, not assumed).
        let read = |path: &Path| {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
        };
        if read(&built)? == read(&next)? {
            bail!(
                "{} is still the abi-next build after building the workspace again",
                built.display()
            );
        }
        Ok(next)
    }

    /// `cargo bench -p palisade-tests --bench TARGET`, its standard output returned.
    pub fn bench(&self, object: &Path, target: &str) -> Result<String> {
        let mut cmd = Command::new(&self.cargo);
        cmd.current_dir(&self.root)
            .args(["bench", "-p", "palisade-tests", "--bench", target])
            .stderr(std::process::Stdio::inherit())
            .env(OBJECT_ENV, object);
        eprintln!("bench: running the {target} benchmarks");
        command::output(&mut cmd).with_context(|| format!("the {target} benchmarks failed"))
    }

    /// Where cargo puts the binary `name` of `profile`, honouring CARGO_TARGET_DIR and
    /// `build.target-dir` (asked of `cargo metadata` rather than guessed).
    pub fn binary(&self, profile: Profile, name: &str) -> Result<PathBuf> {
        let metadata = command::output(Command::new(&self.cargo).current_dir(&self.root).args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
        ]))?;
        let metadata: serde_json::Value =
            serde_json::from_str(&metadata).context("cannot parse `cargo metadata` output")?;
        let target_dir = metadata
            .get("target_directory")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| anyhow!("`cargo metadata` printed no target_directory"))?;
        Ok(Path::new(target_dir)
            .join(profile.directory())
            .join(OsStr::new(name)))
    }
}
