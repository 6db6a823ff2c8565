//! The Dockerfile's build context: `palisade` (debug info stripped) and `debs/`, bpftool's
//! Debian package with every package it depends on, as this host's apt has them. The
//! packages are downloaded once into the cache (see [`super::base::cache_dir`]) and taken
//! from there while apt offers the same versions.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::base::cache_dir;
use crate::command;

/// The Debian packages the image installs, with their dependencies.
const PACKAGES: &[&str] = &["bpftool"];

/// Makes the context in `<work dir>/context` and returns its path.
pub fn prepare(repo: &Path, binary: &Path) -> Result<PathBuf> {
    let dir = super::work_dir(repo).join("context");
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    let debs = dir.join("debs");
    fs::create_dir_all(&debs).with_context(|| format!("cannot create {}", debs.display()))?;

    // Line tables make up most of the binary; symbols stay, so backtraces name functions.
    command::run(
        Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(dir.join("palisade"))
            .arg(binary),
    )
    .context("cannot strip the palisade binary (strip is in binutils, which gcc brings)")?;

    let cache = cache_dir()?.join("debs");
    fs::create_dir_all(&cache).with_context(|| format!("cannot create {}", cache.display()))?;
    for file in downloaded_packages(&cache)? {
        let from = cache.join(&file);
        fs::copy(&from, debs.join(&file))
            .with_context(|| format!("cannot copy {} into the context", from.display()))?;
    }
    Ok(dir)
}

/// The file names of [`PACKAGES`] and their dependencies in `cache`, downloading those
/// that are not there yet.
fn downloaded_packages(cache: &Path) -> Result<Vec<String>> {
    let packages = dependency_closure()?;
    let files = file_names(&packages)?;
    // A package's file is `<package>_<version>_<arch>.deb`.
    let missing: Vec<&str> = files
        .iter()
        .filter(|file| !cache.join(file).is_file())
        .filter_map(|file| file.split('_').next())
        .collect();
    if missing.is_empty() {
        eprintln!("image: Debian packages {}: cached", packages.join(" "));
    } else {
        eprintln!("image: Debian packages {}: downloading", missing.join(" "));
        command::run(
            Command::new("apt-get")
                .arg("download")
                .args(&missing)
                .current_dir(cache),
        )
        .context("cannot download the image's Debian packages")?;
    }
    for file in &files {
        if !cache.join(file).is_file() {
            bail!("apt-get download left no {} in {}", file, cache.display());
        }
    }
    Ok(files)
}

/// [`PACKAGES`] and everything they depend on (not recommends), real packages only.
fn dependency_closure() -> Result<Vec<String>> {
    let listing = command::output(
        Command::new("apt-cache")
            .args(["depends", "--recurse", "--no-recommends", "--no-suggests"])
            .args([
                "--no-conflicts",
                "--no-breaks",
                "--no-replaces",
                "--no-enhances",
            ])
            .args(PACKAGES),
    )
    .context("cannot list the image packages' dependencies")?;
    // Dependencies are indented; the packages themselves start the line, virtual ones in
    // angle brackets.
    let mut packages: Vec<String> = listing
        .lines()
        .filter(|line| !line.starts_with(char::is_whitespace) && !line.starts_with('<'))
        .map(|line| line.trim().to_string())
        .filter(|line| !line.is_empty())
        .collect();
    packages.sort();
    packages.dedup();
    Ok(packages)
}

/// The file names `apt-get download` gives the packages' candidate versions.
fn file_names(packages: &[String]) -> Result<Vec<String>> {
    let uris = match print_uris(packages) {
        Ok(uris) => uris,
        Err(first) => {
            // Package lists that are missing or stale (a fresh machine that had everything
            // but the lists) are refreshed once.
            eprintln!("image: {first:#}; refreshing the package lists");
            command::run(Command::new("apt-get").arg("update"))
                .context("cannot refresh the apt package lists")?;
            print_uris(packages)?
        }
    };
    let files: Vec<String> = uris
        .lines()
        .filter_map(|line| line.split_whitespace().nth(1))
        .map(str::to_string)
        .collect();
    if files.len() != packages.len() {
        bail!(
            "apt-get download --print-uris named {} files for {} packages ({}):\n{uris}",
            files.len(),
            packages.len(),
            packages.join(" ")
        );
    }
    Ok(files)
}

fn print_uris(packages: &[String]) -> Result<String> {
    command::output(
        Command::new("apt-get")
            .args(["download", "--print-uris"])
            .args(packages),
    )
}
