//! `cargo xtask bootstrap`: checks for, and installs, everything the build and the tests need
//! beyond the stable Rust toolchain that runs xtask itself.
//!
//! Every step is idempotent and prints one line saying what it checked and what it did, so a
//! second run prints "present" throughout. CI machines start from a fresh Debian with only
//! rustup and stable Rust; this is what turns them into build machines.

use std::{
    env, fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, anyhow, bail};
use clap::ValueEnum;

use crate::command;

/// Debian packages the project uses: bpftool to inspect programs and maps, etcd for the
/// etcd datastore tests, protoc and the well-known `.proto` files (`libprotobuf-dev`, only a
/// recommendation of `protobuf-compiler`, so `--no-install-recommends` leaves it out) for the
/// etcd client crate, busybox and docker for container tests, iproute2 for namespaces and
/// veths, debootstrap to make the node image's base where no registry is reachable,
/// python3-venv for the Kubernetes schema validator's environment,
/// prometheus (the server and promtool) for the metrics tests.
pub const DEBIAN_PACKAGES: &[&str] = &[
    "bpftool",
    "etcd-server",
    "etcd-client",
    "protobuf-compiler",
    "libprotobuf-dev",
    "busybox-static",
    "docker.io",
    "iproute2",
    "debootstrap",
    "python3-venv",
    // Headless browser for the `matrix --html` page tests.
    "chromium",
    "prometheus",
    // The peers the bench measures palisade against, and their tests: Felix-style
    // iptables (legacy and nf_tables) with ipsets, nftables, and conntrack to flush.
    "iptables",
    "ipset",
    "nftables",
    "conntrack",
];

/// The Kubernetes manifest is validated offline against Kubernetes' own schemas, which this
/// PyPI package ships; it lives in a virtual environment of its own (see
/// [`kubernetes_validate_dir`]).
const KUBERNETES_VALIDATE: &str = "kubernetes-validate";
const KUBERNETES_VALIDATE_VERSION: &str = "1.37.0";

/// The toolchain that builds the eBPF crate (`-Z build-std` is nightly-only).
pub const NIGHTLY: &str = "nightly";

/// bpf-linker links the eBPF crate. 0.13.0 offers the `llvm-21`, `llvm-22` and `llvm-23`
/// features; the one matching nightly's LLVM is chosen at install time.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// A step whose install path can be exercised on a machine that already has everything.
/// (The nightly toolchain is left out on purpose: "installing" it updates it to today's
/// nightly, which can change its LLVM and break the installed bpf-linker.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Step {
    DebianPackages,
    KubernetesValidate,
    RustSrc,
    BpfLinker,
}

/// How the steps behave.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Report what is missing, install nothing, fail if anything is missing.
    pub check_only: bool,
    /// Take these steps' checks as failed, to test the install paths.
    pub assume_missing: Vec<Step>,
}

impl Options {
    fn assumes_missing(&self, step: Step) -> bool {
        self.assume_missing.contains(&step)
    }
}

/// What the eBPF build needs from the bootstrap.
#[derive(Clone, Debug)]
pub struct EbpfToolchain {
    /// A working bpf-linker; its directory may not be in PATH (e.g. `$CARGO_HOME/bin`).
    pub bpf_linker: PathBuf,
}

/// Every step: Debian packages, then the eBPF toolchain. In check-only mode every step is
/// checked, and the error names every missing piece, not only the first.
pub fn everything(options: &Options) -> Result<EbpfToolchain> {
    if !options.check_only {
        debian_packages(options)?;
        kubernetes_validate(options)?;
        return ebpf_toolchain(options);
    }
    let checks = [
        debian_packages(options).map(|_| None),
        kubernetes_validate(options).map(|_| None),
        nightly(options).map(|_| None),
        rust_src(options).map(|_| None),
        bpf_linker(options).map(Some),
    ];
    let mut missing = Vec::new();
    let mut linker = None;
    for check in checks {
        match check {
            Ok(found) => linker = linker.or(found),
            Err(err) => missing.push(format!("{err:#}")),
        }
    }
    match linker {
        Some(bpf_linker) if missing.is_empty() => Ok(EbpfToolchain { bpf_linker }),
        _ => bail!(
            "missing:\n  - {}\nrun `cargo xtask bootstrap` (as root) to install them",
            missing.join("\n  - ")
        ),
    }
}

/// The steps the eBPF build needs: nightly, its rust-src, and bpf-linker.
pub fn ebpf_toolchain(options: &Options) -> Result<EbpfToolchain> {
    nightly(options)?;
    rust_src(options)?;
    let bpf_linker = bpf_linker(options)?;
    Ok(EbpfToolchain { bpf_linker })
}

fn say(what: &str, outcome: impl std::fmt::Display) {
    eprintln!("bootstrap: {what}: {outcome}");
}

/// In check-only mode a missing step is reported and ends the step; otherwise carry on and
/// install it.
fn stop_if_check_only(options: &Options, what: &str) -> Result<()> {
    if options.check_only {
        say(what, "missing");
        bail!("{what}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Debian packages

fn debian_packages(options: &Options) -> Result<()> {
    let what = format!("Debian packages ({})", DEBIAN_PACKAGES.join(" "));
    let missing = if options.assumes_missing(Step::DebianPackages) {
        DEBIAN_PACKAGES.to_vec()
    } else {
        missing_debian_packages()?
    };
    if missing.is_empty() {
        say(&what, "present");
        return Ok(());
    }
    let missing_list = missing.join(" ");
    if options.check_only {
        say(&what, format_args!("missing {missing_list}"));
        bail!("Debian packages {missing_list}");
    }
    if !command::is_root() {
        say(
            &what,
            format_args!("missing {missing_list}; cannot install them without root"),
        );
        bail!(
            "installing Debian packages needs root, and this is not root\n\
             hint: run `cargo xtask bootstrap` as root, or install them yourself:\n    \
             apt-get update && apt-get install -y --no-install-recommends {missing_list}"
        );
    }
    say(
        &what,
        format_args!("missing {missing_list}; installing with apt-get"),
    );
    let apt_get = || {
        let mut cmd = Command::new("apt-get");
        cmd.env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    };
    command::run(apt_get().arg("update")).context("cannot refresh the apt package lists")?;
    command::run(
        apt_get()
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing),
    )
    .with_context(|| format!("cannot install the Debian packages {missing_list}"))?;

    let still_missing = missing_debian_packages()?;
    if !still_missing.is_empty() {
        bail!(
            "apt-get succeeded but these packages are still not installed: {}",
            still_missing.join(" ")
        );
    }
    say(&what, "installed");
    Ok(())
}

fn missing_debian_packages() -> Result<Vec<&'static str>> {
    let mut missing = Vec::new();
    for &package in DEBIAN_PACKAGES {
        if !is_debian_package_installed(package)? {
            missing.push(package);
        }
    }
    Ok(missing)
}

fn is_debian_package_installed(package: &str) -> Result<bool> {
    // `ii` = selected for install and installed; anything else (unknown, removed with its
    // config left, half-installed) needs apt-get. dpkg-query exits 1 for unknown packages.
    let output = Command::new("dpkg-query")
        .args(["--show", "--showformat=${db:Status-Abbrev}", package])
        .output()
        .context(
            "cannot run dpkg-query: this bootstrap knows Debian and Ubuntu only\n\
             hint: install the packages yourself and skip `cargo xtask bootstrap`",
        )?;
    Ok(output.status.success() && output.stdout.starts_with(b"ii"))
}

// ---------------------------------------------------------------------------------------
// kubernetes-validate

/// The virtual environment that holds kubernetes-validate: `$CARGO_HOME/palisade/
/// kubernetes-validate`, beside the other tools the bootstrap builds.
pub fn kubernetes_validate_dir() -> Result<PathBuf> {
    Ok(cargo_home()?.join("palisade").join(KUBERNETES_VALIDATE))
}

/// The `kubernetes-validate` program of [`kubernetes_validate_dir`].
pub fn kubernetes_validate_program() -> Result<PathBuf> {
    Ok(kubernetes_validate_dir()?
        .join("bin")
        .join(KUBERNETES_VALIDATE))
}

fn kubernetes_validate(options: &Options) -> Result<PathBuf> {
    let what = format!("{KUBERNETES_VALIDATE} {KUBERNETES_VALIDATE_VERSION} (PyPI)");
    let program = kubernetes_validate_program()?;
    let installed = Command::new(&program)
        .arg("--version")
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string());
    if installed.as_deref() == Some(KUBERNETES_VALIDATE_VERSION)
        && !options.assumes_missing(Step::KubernetesValidate)
    {
        say(&what, format_args!("present ({})", program.display()));
        return Ok(program);
    }
    stop_if_check_only(options, &what)?;
    let venv = kubernetes_validate_dir()?;
    say(
        &what,
        format_args!("missing; installing into {}", venv.display()),
    );
    command::run(Command::new("python3").args(["-m", "venv"]).arg(&venv))
        .context("cannot make the virtual environment (python3-venv)")?;
    command::run(
        Command::new(venv.join("bin").join("pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .arg(format!(
                "{KUBERNETES_VALIDATE}=={KUBERNETES_VALIDATE_VERSION}"
            )),
    )
    .with_context(|| format!("cannot install {KUBERNETES_VALIDATE} from PyPI"))?;
    say(&what, "installed");
    Ok(program)
}

// ---------------------------------------------------------------------------------------
// Nightly toolchain and rust-src

fn nightly(options: &Options) -> Result<()> {
    let what = "nightly toolchain";
    let listing = command::output(Command::new("rustup").args(["toolchain", "list"])).context(
        "rustup is needed to manage the nightly toolchain\nhint: install it from https://rustup.rs",
    )?;
    if has_undated_nightly(&listing) {
        say(what, format_args!("present ({})", nightly_version()?));
        return Ok(());
    }
    stop_if_check_only(options, what)?;
    say(what, "missing; installing with rustup");
    // The minimal profile plus rust-src is all the eBPF build uses.
    command::run(Command::new("rustup").args([
        "toolchain",
        "install",
        NIGHTLY,
        "--profile",
        "minimal",
        "--component",
        "rust-src",
    ]))
    .context("cannot install the nightly toolchain")?;
    say(what, format_args!("installed ({})", nightly_version()?));
    Ok(())
}

/// Whether `rustup toolchain list` shows the moving `nightly` channel (not only dated ones
/// such as `nightly-2026-05-19-<host>`, which `+nightly` does not select).
fn has_undated_nightly(listing: &str) -> bool {
    listing.lines().any(|line| {
        let name = line.split_whitespace().next().unwrap_or_default();
        name == NIGHTLY
            || name.strip_prefix("nightly-").is_some_and(|rest| {
                rest.chars()
                    .next()
                    .is_some_and(|first| !first.is_ascii_digit())
            })
    })
}

fn nightly_version() -> Result<String> {
    let version = command::output(Command::new("rustc").args(["+nightly", "--version"]))?;
    Ok(version.trim().to_owned())
}

fn rust_src(options: &Options) -> Result<()> {
    let what = "rust-src for nightly";
    let installed = command::output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        NIGHTLY,
    ]))
    // Without nightly there is no component list, and no rust-src either.
    .unwrap_or_default();
    let present = installed.lines().any(|line| line.trim() == "rust-src");
    if present && !options.assumes_missing(Step::RustSrc) {
        say(what, "present");
        return Ok(());
    }
    stop_if_check_only(options, what)?;
    say(what, "missing; installing with rustup");
    command::run(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        NIGHTLY,
    ]))
    .context("cannot add rust-src to the nightly toolchain")?;
    say(what, "installed");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// bpf-linker

fn bpf_linker(options: &Options) -> Result<PathBuf> {
    let what = "bpf-linker";
    if !options.assumes_missing(Step::BpfLinker)
        && let Some((path, version)) = find_working_bpf_linker()?
    {
        say(
            what,
            format_args!("present ({version} at {})", path.display()),
        );
        return Ok(path);
    }
    stop_if_check_only(options, what)?;
    let llvm = NightlyLlvm::find()?;
    say(
        what,
        format_args!(
            "missing; building {BPF_LINKER_VERSION} against nightly's own LLVM {} ({}), \
             about a minute",
            llvm.major,
            llvm.library.display()
        ),
    );
    install_bpf_linker(&llvm)?;
    match find_working_bpf_linker()? {
        Some((path, version)) => {
            say(
                what,
                format_args!("installed ({version} at {})", path.display()),
            );
            Ok(path)
        }
        None => bail!(
            "bpf-linker was installed but `bpf-linker --version` still fails\n\
             hint: check {} and that {} exists",
            cargo_home()?.join("bin").display(),
            llvm.library.display()
        ),
    }
}

/// The first `bpf-linker` in PATH or in `$CARGO_HOME/bin` whose `--version` works, with that
/// version line. A copy that fails (e.g. its libLLVM went away with an old nightly) is skipped.
fn find_working_bpf_linker() -> Result<Option<(PathBuf, String)>> {
    let mut candidates: Vec<PathBuf> = env::var_os("PATH")
        .map(|path| env::split_paths(&path).collect())
        .unwrap_or_default();
    candidates.push(cargo_home()?.join("bin"));
    for dir in candidates {
        let path = dir.join("bpf-linker");
        if !path.is_file() {
            continue;
        }
        if let Ok(output) = Command::new(&path).arg("--version").output()
            && output.status.success()
        {
            let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            return Ok(Some((path, version)));
        }
    }
    Ok(None)
}

/// The libLLVM shipped inside the nightly toolchain, which bpf-linker is built against so
/// that it reads the bitcode nightly's rustc writes.
struct NightlyLlvm {
    major: u32,
    /// `<sysroot>/lib/libLLVM.so.<major>...`, the file whose name is its soname.
    library: PathBuf,
}

impl NightlyLlvm {
    fn find() -> Result<Self> {
        let verbose_version = command::output(Command::new("rustc").args(["+nightly", "-vV"]))?;
        let major = llvm_major(&verbose_version).with_context(|| {
            format!("cannot find the LLVM version in `rustc +nightly -vV`:\n{verbose_version}")
        })?;
        let sysroot =
            command::output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
        let lib_dir = Path::new(sysroot.trim()).join("lib");
        let prefix = format!("libLLVM.so.{major}");
        let mut libraries: Vec<PathBuf> = fs::read_dir(&lib_dir)
            .with_context(|| format!("cannot list {}", lib_dir.display()))?
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| {
                path.file_name()
                    .and_then(|name| name.to_str())
                    .is_some_and(|name| name.starts_with(&prefix))
                    && path.is_file()
            })
            .collect();
        libraries.sort();
        match libraries.as_slice() {
            [library] => Ok(Self {
                major,
                library: library.clone(),
            }),
            [] => bail!(
                "nightly's rustc uses LLVM {major} but {} has no {prefix}* file\n\
                 hint: reinstall nightly with `rustup toolchain install nightly --force`",
                lib_dir.display()
            ),
            several => bail!(
                "{} has several {prefix}* files ({}); cannot tell which one rustc uses",
                lib_dir.display(),
                several
                    .iter()
                    .map(|path| path.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    fn soname(&self) -> Result<&std::ffi::OsStr> {
        self.library
            .file_name()
            .ok_or_else(|| anyhow!("{} has no file name", self.library.display()))
    }
}

/// The LLVM major version from `rustc -vV` output ("LLVM version: 22.1.4" gives 22).
fn llvm_major(verbose_version: &str) -> Option<u32> {
    verbose_version
        .lines()
        .find_map(|line| line.strip_prefix("LLVM version:"))
        .and_then(|version| version.trim().split('.').next())
        .and_then(|major| major.parse().ok())
}

fn install_bpf_linker(llvm: &NightlyLlvm) -> Result<()> {
    // llvm-sys looks for `<LLVM_PREFIX>/lib/libLLVM.so`; the binary then needs the exact
    // soname at run time, found through the rpath to the same directory. The prefix lives in
    // CARGO_HOME next to the binary that depends on it.
    let prefix = cargo_home()?
        .join("palisade")
        .join(format!("llvm-{}", llvm.major));
    let lib = prefix.join("lib");
    fs::create_dir_all(&lib).with_context(|| format!("cannot create {}", lib.display()))?;
    for name in [std::ffi::OsStr::new("libLLVM.so"), llvm.soname()?] {
        let link = lib.join(name);
        // Replace links left by an older nightly.
        if fs::symlink_metadata(&link).is_ok() {
            fs::remove_file(&link).with_context(|| format!("cannot remove {}", link.display()))?;
        }
        symlink(&llvm.library, &link).with_context(|| {
            format!(
                "cannot link {} to {}",
                link.display(),
                llvm.library.display()
            )
        })?;
    }

    let mut install = Command::new("cargo");
    install
        .args([
            "+nightly",
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
        ])
        .args(["--locked", "--force", "--no-default-features", "--features"])
        .arg(format!("llvm-{}", llvm.major))
        .env("LLVM_PREFIX", &prefix);
    // `--force`: this only runs when the installed copy does not work, and cargo would
    // otherwise keep it as "already installed". A shared CARGO_TARGET_DIR or inherited flags
    // must not leak into this unrelated build.
    for variable in [
        "CARGO_TARGET_DIR",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTUP_TOOLCHAIN",
    ] {
        install.env_remove(variable);
    }
    command::run(&mut install).with_context(|| {
        format!(
            "cannot build bpf-linker {BPF_LINKER_VERSION} with feature llvm-{}\n\
             hint: bpf-linker {BPF_LINKER_VERSION} supports LLVM 21 to 23; if nightly moved \
             past that, raise BPF_LINKER_VERSION in xtask/src/bootstrap.rs",
            llvm.major
        )
    })
}

fn cargo_home() -> Result<PathBuf> {
    if let Some(home) = env::var_os("CARGO_HOME") {
        return Ok(PathBuf::from(home));
    }
    env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".cargo"))
        .ok_or_else(|| anyhow!("neither CARGO_HOME nor HOME is set; cannot find cargo's home"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_llvm_major() {
        let output = "rustc 1.97.0-nightly (e50aa6fba 2026-05-19)\nbinary: rustc\n\
                      host: x86_64-unknown-linux-gnu\nLLVM version: 22.1.4\n";
        assert_eq!(llvm_major(output), Some(22));
        assert_eq!(llvm_major("rustc 1.97.0\n"), None);
    }

    #[test]
    fn finds_only_the_undated_nightly() {
        assert!(has_undated_nightly(
            "stable-x86_64-unknown-linux-gnu (active, default)\n\
             nightly-x86_64-unknown-linux-gnu\n"
        ));
        assert!(!has_undated_nightly(
            "stable-x86_64-unknown-linux-gnu (default)\n\
             nightly-2026-05-19-x86_64-unknown-linux-gnu\n"
        ));
        assert!(!has_undated_nightly("no installed toolchains\n"));
    }
}
