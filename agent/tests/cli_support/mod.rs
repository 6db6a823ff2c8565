//! Runs the real `palisade` binary against a private, throw-away file datastore.

#![allow(dead_code, clippy::unwrap_used)]

use std::io::Write;
use std::process::{Command, Stdio};

use tempfile::TempDir;

/// A private datastore (and scratch directory for input files), removed on drop.
pub struct Palisade {
    dir: TempDir,
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
    pub fn new() -> Palisade {
        Palisade {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn datastore_url(&self) -> String {
        format!("file://{}", self.dir.path().join("store").display())
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
