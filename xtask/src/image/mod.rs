//! `cargo xtask image`: the node container image, from `deploy/Dockerfile`.
//!
//! The Dockerfile's build context is made here ([`context`]): the `palisade` binary and
//! bpftool's Debian packages, so that the build needs no network. Its base image (the
//! Dockerfile's `ARG BASE`) is pulled, or, where no registry answers, made from Debian's
//! packages with debootstrap and imported under the same name ([`base`]). `cargo xtask
//! test` builds the image of the binary under test on a private daemon ([`daemon`]) and
//! hands it to the tests as a `docker save` archive.

mod base;
mod context;
pub mod daemon;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::command;

/// The Dockerfile, relative to the repository.
const DOCKERFILE: &str = "deploy/Dockerfile";

/// The image's repository name; tags are the version and `latest`.
pub const IMAGE_NAME: &str = "palisade";

/// The workspace's version, which tags the image.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Tells the tests which archive holds the node image (`docker load -i`).
pub const ARCHIVE_ENV: &str = "PALISADE_NODE_IMAGE_ARCHIVE";
/// Tells the tests the image's name in that archive.
pub const IMAGE_ENV: &str = "PALISADE_NODE_IMAGE";

/// The default tags: `palisade:<version>` and `palisade:latest`.
pub fn default_tags() -> Vec<String> {
    vec![
        format!("{IMAGE_NAME}:{VERSION}"),
        format!("{IMAGE_NAME}:latest"),
    ]
}

/// The `docker` command line for one daemon (`DOCKER_HOST`, or the default socket).
#[derive(Clone, Debug)]
pub struct Docker {
    host: Option<String>,
}

impl Docker {
    /// The daemon that `DOCKER_HOST` names, as the docker command line would use it.
    pub fn from_environment() -> Docker {
        Docker { host: None }
    }

    /// The daemon listening on `socket`.
    pub fn at_socket(socket: &Path) -> Docker {
        Docker {
            host: Some(format!("unix://{}", socket.display())),
        }
    }

    /// `docker ARGS` for this daemon. The classic builder: BuildKit needs the buildx
    /// plugin, which Debian's docker.io does not ship.
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = Command::new("docker");
        if let Some(host) = &self.host {
            cmd.env("DOCKER_HOST", host);
        }
        cmd.env("DOCKER_BUILDKIT", "0").args(args);
        cmd
    }

    /// Whether the daemon has an image named `name`.
    pub fn has_image(&self, name: &str) -> bool {
        self.command(["image", "inspect", "--format", "{{.Id}}", name])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }

    /// Fails with a hint unless the daemon answers.
    pub fn check_reachable(&self) -> Result<()> {
        command::output(&mut self.command(["version", "--format", "{{.Server.Version}}"]))
            .map(|_| ())
            .context(
                "no Docker daemon answers at DOCKER_HOST (or the default socket)\n\
                 hint: start dockerd, or point DOCKER_HOST at one",
            )
    }
}

/// What was built.
pub struct Built {
    pub tags: Vec<String>,
    pub size_bytes: u64,
}

impl Built {
    pub fn size_mb(&self) -> f64 {
        self.size_bytes as f64 / 1_000_000.0
    }
}

/// Builds the image from `binary` with `docker`, tagged `tags`; checks that both programs
/// run in it and returns its size.
pub fn build(repo: &Path, docker: &Docker, binary: &Path, tags: &[String]) -> Result<Built> {
    let Some(first) = tags.first() else {
        bail!("no tag to build");
    };
    docker.check_reachable()?;
    let dockerfile = repo.join(DOCKERFILE);
    let base = base::default_base(&dockerfile)?;
    base::ensure(docker, &base)?;
    let context = context::prepare(repo, binary)?;

    let mut build = docker.command(["build", "--network", "none"]);
    build
        .arg("--file")
        .arg(&dockerfile)
        .args(["--build-arg", &format!("BASE={base}")])
        .args(["--build-arg", &format!("VERSION={VERSION}")]);
    for tag in tags {
        build.args(["--tag", tag]);
    }
    build.arg(&context);
    eprintln!("image: building {} from {}", tags.join(", "), DOCKERFILE);
    command::run(&mut build).context("docker build failed")?;

    for program in [["palisade", "version"], ["bpftool", "version"]] {
        command::output(
            &mut docker.command(
                ["run", "--rm", "--network", "none", first.as_str()]
                    .into_iter()
                    .chain(program),
            ),
        )
        .with_context(|| format!("`{}` does not run in {first}", program.join(" ")))?;
    }
    let size = command::output(&mut docker.command([
        "image",
        "inspect",
        "--format",
        "{{.Size}}",
        first.as_str(),
    ]))?;
    let size_bytes = size
        .trim()
        .parse()
        .with_context(|| format!("docker printed {size:?} for the image's size"))?;
    Ok(Built {
        tags: tags.to_vec(),
        size_bytes,
    })
}

/// Where xtask keeps what it makes for the image in this checkout.
pub fn work_dir(repo: &Path) -> PathBuf {
    repo.join("target").join("palisade-image")
}

/// For `cargo xtask test`: builds the image of `binary` (the binary under test) as
/// `palisade:<version>` on a private daemon and saves it to an archive the tests load
/// into their own daemons; returns the archive's path.
pub fn build_for_tests(repo: &Path, binary: &Path) -> Result<PathBuf> {
    let work = work_dir(repo);
    let archive = work.join("palisade-node-image.tar");
    let stamp_path = work.join("palisade-node-image.stamp");
    let stamp = inputs_stamp(repo, binary)?;
    if archive.is_file() && std::fs::read_to_string(&stamp_path).ok().as_deref() == Some(&stamp) {
        eprintln!(
            "image: the node image of the binary under test is up to date ({})",
            archive.display()
        );
        return Ok(archive);
    }
    let daemon = daemon::PrivateDaemon::start(&work)?;
    let docker = daemon.docker();
    let tag = format!("{IMAGE_NAME}:{VERSION}");
    let built = build(repo, &docker, binary, std::slice::from_ref(&tag))?;
    command::run(docker.command(["save", "--output"]).arg(&archive).arg(&tag))
        .context("cannot save the node image")?;
    std::fs::write(&stamp_path, &stamp)
        .with_context(|| format!("cannot write {}", stamp_path.display()))?;
    // Earlier builds' layers would pile up in the data root (vfs stores every layer whole):
    // only the base and the image stay.
    let _ = command::output(&mut docker.command(["image", "prune", "--force"]));
    eprintln!(
        "image: {tag} of the binary under test: {:.1} MB, saved to {}",
        built.size_mb(),
        archive.display()
    );
    Ok(archive)
}

/// What the test image is made of: the binary (by size and modification time), the
/// Dockerfile and the version. Equal stamps mean the saved archive is still that image.
fn inputs_stamp(repo: &Path, binary: &Path) -> Result<String> {
    use std::hash::{Hash, Hasher};
    let metadata =
        std::fs::metadata(binary).with_context(|| format!("cannot read {}", binary.display()))?;
    let dockerfile = std::fs::read(repo.join(DOCKERFILE))
        .with_context(|| format!("cannot read {DOCKERFILE}"))?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    metadata.len().hash(&mut hasher);
    metadata.modified().ok().hash(&mut hasher);
    dockerfile.hash(&mut hasher);
    VERSION.hash(&mut hasher);
    Ok(format!("{:016x}\n", hasher.finish()))
}
