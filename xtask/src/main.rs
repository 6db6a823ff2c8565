//! `cargo xtask`: palisade's build automation, in Rust rather than shell.
//!
//! `cargo xtask build` and `cargo xtask test` are all a fresh Debian machine with rustup needs:
//! they bootstrap the toolchain and packages, build the eBPF object with nightly, and build
//! or test the stable workspace with that object embedded in the agent.

mod bench;
mod bootstrap;
mod cargo;
mod command;
mod ebpf;
mod image;

use std::{ffi::OsString, os::unix::process::CommandExt, path::PathBuf, process::ExitCode};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use crate::{bootstrap::Step, cargo::Workspace};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "palisade's build automation"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what the build and tests need: Debian packages, nightly + rust-src,
    /// bpf-linker. Idempotent; installing packages needs root.
    Bootstrap {
        /// Install nothing: name every missing piece, and fail if anything is missing.
        #[arg(long, alias = "check")]
        check_only: bool,
        /// Treat a step as missing, to exercise its install path (for testing xtask).
        #[arg(long, value_enum, hide = true)]
        assume_missing: Vec<Step>,
    },
    /// Build the eBPF object (nightly, bpfel-unknown-none) and print its path.
    BuildEbpf {
        /// Use the dev profile (still optimised: the verifier needs it).
        #[arg(long)]
        debug: bool,
    },
    /// Bootstrap, build the eBPF object, and build the workspace with it embedded.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Build, then run `palisade agent ARGS` (as root, for the dataplane).
    Run {
        #[arg(long)]
        release: bool,
        /// Arguments for `palisade agent`.
        #[arg(last = true)]
        args: Vec<OsString>,
    },
    /// Build (also `palisade-abi-next`, the map ABI one ahead, for the upgrade test), then
    /// run `cargo test --workspace ARGS` as root (the privileged tests need it).
    Test {
        /// Arguments for `cargo test`: `cargo xtask test -- -p palisade-tests -- --nocapture`.
        #[arg(last = true)]
        args: Vec<OsString>,
    },
    /// Build the node container image (deploy/Dockerfile) with the release binary, on the
    /// Docker daemon at DOCKER_HOST (or the default socket); print its size.
    Image {
        /// The image's name and tag; repeat for several (default: palisade:<version> and
        /// palisade:latest).
        #[arg(long = "tag", value_name = "NAME:TAG")]
        tags: Vec<String>,
    },
    /// Measure per-packet cost, compile and update times, the time from an etcd write to
    /// the agent's maps, the agent's own memory, CPU and maps, and a metrics scrape (release
    /// build, as root); print the tables and keep them in bench/README.md. Name parts to run
    /// only those (the file keeps the others' last results).
    Bench {
        /// Parts to run: dataplane, etcd, agent, peers, metrics (default: all).
        parts: Vec<String>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let repo = repo_root()?;
    match cli.command {
        Cmd::Bootstrap {
            check_only,
            assume_missing,
        } => {
            bootstrap::everything(&bootstrap::Options {
                check_only,
                assume_missing,
            })?;
        }
        Cmd::BuildEbpf { debug } => {
            let toolchain = bootstrap::ebpf_toolchain(&bootstrap::Options::default())?;
            let profile = if debug {
                ebpf::Profile::Dev
            } else {
                ebpf::Profile::Release
            };
            let object = ebpf::build(&repo, profile, &toolchain)?;
            println!("{}", object.display());
        }
        Cmd::Build { release } => {
            build(&repo, workspace_profile(release))?;
        }
        Cmd::Run { release, args } => {
            let profile = workspace_profile(release);
            build(&repo, profile)?;
            let binary = Workspace::new(&repo).binary(profile, "palisade")?;
            let err = std::process::Command::new(&binary)
                .arg("agent")
                .args(&args)
                .exec();
            // exec only returns on failure; on success the agent's exit code is ours.
            return Err(err).with_context(|| format!("cannot run {}", binary.display()));
        }
        Cmd::Test { args } => {
            if !command::is_root() {
                bail!(
                    "the tests load eBPF programs and create namespaces, so they need root\n\
                     hint: run `cargo xtask test` as root"
                );
            }
            let object = build(&repo, cargo::Profile::Dev)?;
            let workspace = Workspace::new(&repo);
            // Before the image: building it leaves the normal binary in place again.
            workspace.build_abi_next(&object)?;
            let binary = workspace.binary(cargo::Profile::Dev, "palisade")?;
            // The node container tests run this binary in the image, as users get it.
            let archive = image::build_for_tests(&repo, &binary)?;
            let tag = format!("{}:{}", image::IMAGE_NAME, image::VERSION);
            let validator = bootstrap::kubernetes_validate_program()?;
            workspace.test(
                &object,
                &[
                    (image::ARCHIVE_ENV, archive.as_os_str()),
                    (image::IMAGE_ENV, tag.as_ref()),
                    ("PALISADE_KUBERNETES_VALIDATE", validator.as_os_str()),
                ],
                &args,
            )?;
        }
        Cmd::Image { tags } => {
            let tags = if tags.is_empty() {
                image::default_tags()
            } else {
                tags
            };
            let docker = image::Docker::from_environment();
            // Before minutes of building.
            docker.check_reachable()?;
            build(&repo, cargo::Profile::Release)?;
            let binary = Workspace::new(&repo).binary(cargo::Profile::Release, "palisade")?;
            let built = image::build(&repo, &docker, &binary, &tags)?;
            println!(
                "{}: {:.1} MB ({} bytes)",
                built.tags.join(", "),
                built.size_mb(),
                built.size_bytes
            );
        }
        Cmd::Bench { parts } => {
            if !command::is_root() {
                bail!("the benchmarks load eBPF programs, so they need root");
            }
            let parts = bench::select(&parts)?;
            let object = build(&repo, cargo::Profile::Release)?;
            let workspace = Workspace::new(&repo);
            // Each part is kept as soon as it ends: a long run that fails later keeps it.
            for part in parts {
                let table = workspace.bench(&object, part.name)?;
                print!("{table}");
                bench::record(&repo, &[(part, table)])?;
            }
        }
    }
    Ok(())
}

fn workspace_profile(release: bool) -> cargo::Profile {
    if release {
        cargo::Profile::Release
    } else {
        cargo::Profile::Dev
    }
}

/// Bootstrap, build the eBPF object, build the workspace; returns the object's path.
fn build(repo: &std::path::Path, profile: cargo::Profile) -> Result<PathBuf> {
    let toolchain = bootstrap::everything(&bootstrap::Options::default())?;
    let object = ebpf::build(repo, ebpf::Profile::Release, &toolchain)?;
    eprintln!("build: eBPF object {}", object.display());
    Workspace::new(repo).build(profile, &object)?;
    Ok(object)
}

/// The repository root: xtask lives in `<root>/xtask`.
fn repo_root() -> Result<PathBuf> {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map(PathBuf::from)
        .context("xtask's manifest directory has no parent")
}
