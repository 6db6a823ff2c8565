//! Helpers for palisade's end-to-end tests.
//!
//! These tests run as root through `cargo xtask test` and touch the real kernel: they load
//! eBPF programs, mount bpffs, and later create namespaces, veths and processes. Two rules
//! follow from that:
//! - a test that lacks something it needs (root, the embedded eBPF object) FAILS with a message
//!   saying how to get it; it never skips, so a green run means everything really ran;
//! - every test undoes what it did, also when it fails, through a [`Cleanup`] guard.

pub mod agent_process;
pub mod attachments;
pub mod bpf_maps;
pub mod bpf_run;
pub mod bpf_scenario;
pub mod conntrack_model;
pub mod docker;
pub mod http;
pub mod matrix;
pub mod multinode;
pub mod netfilter;
pub mod netns;
pub mod node_container;
pub mod packet;
pub mod palisade_cli;
pub mod power_cut_fs;
pub mod prometheus;
pub mod router;
pub mod steady_traffic;
pub mod topology;
pub mod traffic;
pub mod transactions;

use std::{env, path::PathBuf, thread};

/// Panics unless the test runs as root.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "this test needs root (it uses bpf(2), mounts and network namespaces), but runs as \
         uid {euid}; run the tests with `cargo xtask test` as root"
    );
}

/// The `palisade` binary of the build under test: cargo puts test executables in
/// `target/<profile>/deps/` and binaries in `target/<profile>/`.
///
/// Panics if it is not there, which means the workspace was not built first (`cargo xtask
/// test` builds it).
pub fn palisade_binary() -> PathBuf {
    let test_executable = env::current_exe().expect("cannot find the test executable's path");
    let binary = test_executable
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile_dir| profile_dir.join("palisade"))
        .unwrap_or_else(|| {
            panic!(
                "unexpected test executable location {}",
                test_executable.display()
            )
        });
    assert!(
        binary.is_file(),
        "{} does not exist; run the tests with `cargo xtask test`, which builds it",
        binary.display()
    );
    binary
}

/// The `palisade` of the build under test, one map ABI ahead (`palisade-abi-next`, which
/// `cargo xtask test` builds beside it): the next release, for the upgrade test.
pub fn palisade_abi_next_binary() -> PathBuf {
    let binary = palisade_binary().with_file_name("palisade-abi-next");
    assert!(
        binary.is_file(),
        "{} does not exist; run the tests with `cargo xtask test`, which builds it",
        binary.display()
    );
    binary
}

type CleanupStep = Box<dyn FnOnce() -> anyhow::Result<()>>;

/// Undoes a test's side effects when dropped, in reverse order of registration, whether the
/// test passed or panicked.
///
/// Register each undo step right after the action it undoes succeeds:
/// ```no_run
/// # use palisade_tests::Cleanup;
/// let mut cleanup = Cleanup::new();
/// std::fs::create_dir("/tmp/example")?;
/// cleanup.defer("remove /tmp/example", || Ok(std::fs::remove_dir("/tmp/example")?));
/// # Ok::<(), std::io::Error>(())
/// ```
/// Every step runs even if an earlier one fails. Failures are printed, and they fail a test
/// that had passed so far: leaked state would break later tests in confusing ways.
#[derive(Default)]
pub struct Cleanup {
    steps: Vec<(String, CleanupStep)>,
}

impl Cleanup {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `step`, described by `what` in failure messages.
    pub fn defer(
        &mut self,
        what: impl Into<String>,
        step: impl FnOnce() -> anyhow::Result<()> + 'static,
    ) {
        self.steps.push((what.into(), Box::new(step)));
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let mut failures = Vec::new();
        while let Some((what, step)) = self.steps.pop() {
            if let Err(err) = step() {
                eprintln!("cleanup: {what}: {err:#}");
                failures.push(what);
            }
        }
        // Panicking while already unwinding would abort the whole test binary; the test is
        // failing anyway and the messages above say what leaked.
        if !failures.is_empty() && !thread::panicking() {
            panic!("cleanup failed: {}", failures.join("; "));
        }
    }
}
