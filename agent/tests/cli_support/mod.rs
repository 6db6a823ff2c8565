//! Runs the real `palisade` binary against a private, throw-away datastore: the embedded
//! file store, or a real etcd started for the test. One suite, two backends: tests written
//! inside [`both_backends!`] run once per backend.

#![allow(dead_code, clippy::unwrap_used)]

use std::cell::Cell;
use std::io::Write;
use std::process::{Command, Stdio};

use tempfile::TempDir;

#[path = "../common/etcd.rs"]
pub mod etcd;

use etcd::EtcdServer;

/// Where a test's datastore lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    File,
    Etcd,
}

thread_local! {
    /// The backend of the test running on this thread (each test has its own thread).
    static BACKEND: Cell<Backend> = const { Cell::new(Backend::File) };
}

/// Runs `test` with every [`Palisade`] it makes on `backend`.
pub fn on_backend(backend: Backend, test: impl FnOnce()) {
    BACKEND.with(|b| b.set(backend));
    test();
}

/// Turns each `fn name() { body }` into a module `name` with two tests, `file` and `etcd`,
/// that run the body against each backend.
#[allow(unused_macros)]
macro_rules! both_backends {
    ($($(#[$meta:meta])* fn $name:ident() $body:block)*) => {$(
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn body() $body

            #[test]
            fn file() {
                $crate::cli_support::on_backend($crate::cli_support::Backend::File, body);
            }

            #[test]
            fn etcd() {
                $crate::cli_support::on_backend($crate::cli_support::Backend::Etcd, body);
            }
        }
    )*};
}
#[allow(unused_imports)]
pub(crate) use both_backends;

/// A private datastore (and scratch directory for input files), removed on drop.
pub struct Palisade {
    dir: TempDir,
    /// The etcd server of an etcd-backed instance, stopped on drop.
    etcd: Option<EtcdServer>,
}

/// What one run of the binary printed, and its exit code.
#[derive(Debug)]
pub struct Run {
    pub stdout: String,
    pub stderr: String,
    pub code: i32,
}

impl Run {
    /// Asserts the exit code and the whole of stdout.
    #[track_caller]
    pub fn expect(&self, code: i32, stdout: &str) {
        assert_eq!(
            (self.code, self.stdout.as_str()),
            (code, stdout),
            "stderr: {}",
            self.stderr
        );
    }
}

impl Palisade {
    /// A datastore on the backend of the running test (see [`on_backend`]).
    pub fn new() -> Palisade {
        Palisade::on(BACKEND.with(Cell::get))
    }

    pub fn on(backend: Backend) -> Palisade {
        Palisade {
            dir: tempfile::tempdir().unwrap(),
            etcd: (backend == Backend::Etcd).then(EtcdServer::start),
        }
    }

    pub fn backend(&self) -> Backend {
        if self.etcd.is_some() {
            Backend::Etcd
        } else {
            Backend::File
        }
    }

    /// The etcd server of an etcd-backed instance.
    pub fn etcd(&self) -> Option<&EtcdServer> {
        self.etcd.as_ref()
    }

    pub fn datastore_url(&self) -> String {
        match &self.etcd {
            Some(etcd) => etcd.url(),
            None => format!("file://{}", self.dir.path().join("store").display()),
        }
    }

    /// Writes `contents` to a file in the scratch directory and returns its path.
    pub fn file(&self, name: &str, contents: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path.display().to_string()
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with_stdin(args, "")
    }

    pub fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Run {
        let mut child = Command::new(env!("CARGO_BIN_EXE_palisade"))
            .arg("--datastore")
            .arg(self.datastore_url())
            .args(args)
            .env_remove("PALISADE_DATASTORE")
            .env_remove("PALISADE_ETCD_CA")
            .env_remove("PALISADE_ETCD_CERT")
            .env_remove("PALISADE_ETCD_KEY")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The child may exit without reading stdin; a broken pipe is fine then.
        let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
        let output = child.wait_with_output().unwrap();
        Run {
            stdout: String::from_utf8(output.stdout).unwrap(),
            stderr: String::from_utf8(output.stderr).unwrap(),
            code: output.status.code().unwrap_or(-1),
        }
    }

    /// The datastore's revision, read through the library (not the CLI under test).
    pub fn revision(&self) -> u64 {
        let url = self.datastore_url();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let store = palisade::store::open(&url).await.unwrap();
                store.list(None).await.unwrap().revision
            })
    }

    /// `palisade apply -f -` of `yaml`, which must succeed.
    pub fn apply(&self, yaml: &str) {
        let run = self.run_with_stdin(&["apply", "-f", "-"], yaml);
        assert_eq!(run.code, 0, "apply failed: {run:?}");
    }
}

/// Lines joined with `\n`, with a final `\n`: expected output, line by line.
pub fn lines(lines: &[&str]) -> String {
    let mut text = lines.join("\n");
    text.push('\n');
    text
}
