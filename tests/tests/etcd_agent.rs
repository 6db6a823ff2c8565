//! `palisade agent` on etcd, as real processes: it keeps running and reports itself
//! degraded while etcd is down, catches up within 2 s of etcd's return, resyncs to the
//! right state after etcd compacted the history it would have resumed from, and connects
//! over TLS with a client certificate (and refuses to start without one).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use palisade_tests::{Cleanup, palisade_binary, require_root};

#[path = "../../agent/tests/common/etcd.rs"]
mod etcd;

use etcd::{EtcdServer, TestPki};

/// An upper bound for the agent to react, so a broken agent fails the test instead of
/// hanging it; not a speed requirement (those are asserted separately).
const PATIENCE: Duration = Duration::from_secs(30);

struct Agent {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Agent {
    /// Starts `palisade agent` with `global` options before the subcommand, a private
    /// bpffs mount point, and a cleanup that kills it and unmounts.
    fn start(global: &[&str], cleanup: &mut Cleanup, dir: &Path) -> Agent {
        let bpffs = dir.join("bpffs");
        std::fs::create_dir_all(&bpffs).unwrap();
        let mut child = Command::new(palisade_binary())
            .args(global)
            .args(["agent", "--node", "node1", "--bpffs"])
            .arg(&bpffs)
            .env_remove("PALISADE_DATASTORE")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id() as libc::pid_t;
        cleanup.defer("unmount the test's bpffs", move || unmount(&bpffs));
        cleanup.defer("kill the agent", move || {
            // SAFETY: plain kill(2); a process that has exited already gives ESRCH.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            Ok(())
        });
        let (tx, lines) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Agent {
            child,
            lines,
            seen: vec![],
        }
    }

    /// Waits for a log line containing every one of `needles`.
    fn wait_for(&mut self, needles: &[&str]) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if needles.iter().all(|n| line.contains(n)) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no agent log line with {needles:?}; the agent said:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    fn still_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    fn stop(mut self) {
        // SAFETY: plain kill(2) on our child.
        assert_eq!(
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) },
            0
        );
        self.wait_for(&["agent stopped"]);
        let status = self.child.wait().unwrap();
        assert!(status.success(), "agent exit status {status}");
    }
}

fn unmount(path: &Path) -> anyhow::Result<()> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
    // SAFETY: a valid NUL-terminated path; umount2 has no other preconditions.
    if unsafe { libc::umount2(c_path.as_ptr(), libc::MNT_DETACH) } != 0 {
        let err = std::io::Error::last_os_error();
        // Not mounted (the agent failed early) is fine.
        if err.raw_os_error() != Some(libc::EINVAL) {
            return Err(err.into());
        }
    }
    Ok(())
}

/// Runs the CLI with `global` options; it must succeed.
fn cli(global: &[&str], args: &[&str], stdin: &str) {
    let mut child = Command::new(palisade_binary())
        .args(global)
        .args(args)
        .env_remove("PALISADE_DATASTORE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "palisade {args:?}: {out:?}");
}

fn profile(name: &str) -> String {
    format!("- apiVersion: v1\n  kind: profile\n  metadata: {{name: {name}}}\n")
}

const POLICY: &str =
    "- apiVersion: v1\n  kind: policy\n  metadata: {name: late}\n  spec: {selector: all()}\n";

#[test]
fn the_agent_rides_out_an_etcd_outage_and_catches_up_within_2s() {
    require_root();
    let mut cleanup = Cleanup::new();
    let dir = tempfile::tempdir().unwrap();
    let mut server = EtcdServer::start();
    let url = server.url();
    let global = ["--datastore", url.as_str()];
    let mut agent = Agent::start(&global, &mut cleanup, dir.path());
    agent.wait_for(&["policy view updated", "profiles=0"]);
    cli(&global, &["apply", "-f", "-"], &profile("databases"));
    agent.wait_for(&["policy view updated", "profiles=1", "policies=0"]);

    server.stop();
    let stopped = Instant::now();
    agent.wait_for(&[
        "WARN",
        "datastore unavailable; keeping the last known policy",
    ]);
    std::thread::sleep(Duration::from_secs(10).saturating_sub(stopped.elapsed()));
    assert!(
        agent.still_running(),
        "the agent exited while etcd was down"
    );

    server.restart();
    let back = Instant::now();
    cli(&global, &["apply", "-f", "-"], POLICY);
    agent.wait_for(&["policy view updated", "profiles=1", "policies=1"]);
    let caught_up = back.elapsed();
    eprintln!(
        "etcd down for {:?}; policy seen {caught_up:?} after etcd returned",
        back - stopped
    );
    assert!(
        caught_up < Duration::from_secs(2),
        "caught up after {caught_up:?}"
    );
    assert!(
        agent
            .seen
            .iter()
            .any(|l| l.contains("datastore reachable again")),
        "{}",
        agent.seen.join("\n")
    );
    agent.stop();
}

#[test]
fn a_compaction_past_the_agents_revision_ends_in_a_resync_to_the_right_state() {
    require_root();
    let mut cleanup = Cleanup::new();
    let dir = tempfile::tempdir().unwrap();
    let mut server = EtcdServer::start();
    let url = server.url();
    let port = server.client_port();
    let global = ["--datastore", url.as_str()];
    let mut agent = Agent::start(&global, &mut cleanup, dir.path());
    agent.wait_for(&["policy view updated", "profiles=0"]);
    cli(&global, &["apply", "-f", "-"], &profile("a"));
    agent.wait_for(&["policy view updated", "profiles=1"]);

    // Hide etcd from the agent (another client port, same data), change things behind its
    // back and compact the history it would resume from.
    server.stop();
    agent.wait_for(&["datastore unavailable"]);
    server.restart_on(etcd::free_port());
    let hidden = server.url();
    let hidden = ["--datastore", hidden.as_str()];
    cli(
        &hidden,
        &["apply", "-f", "-"],
        &(profile("b") + &profile("c")),
    );
    cli(&hidden, &["delete", "profile", "a"], "");
    cli(&hidden, &["apply", "-f", "-"], POLICY);
    let revision = server.revision();
    server.etcdctl(&["compact", &revision.to_string()]);

    server.restart_on(port);
    let line = agent.wait_for(&["policy view updated", "profiles=2", "policies=1"]);
    assert!(line.contains(&format!("revision={revision}")), "{line}");
    agent.stop();
}

#[test]
fn the_agent_connects_over_tls_with_a_client_certificate_and_not_without() {
    require_root();
    let mut cleanup = Cleanup::new();
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate();
    let server = EtcdServer::start_tls(&pki);
    let url = server.url();
    let files: Vec<PathBuf> = ["ca.pem", "client.pem", "client-key.pem"]
        .iter()
        .map(|f| pki.path(f))
        .collect();
    let files: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    let global = [
        "--datastore",
        url.as_str(),
        "--etcd-ca",
        &files[0],
        "--etcd-cert",
        &files[1],
        "--etcd-key",
        &files[2],
    ];
    let mut agent = Agent::start(&global, &mut cleanup, dir.path());
    agent.wait_for(&["policy view updated", "profiles=0"]);
    cli(&global, &["apply", "-f", "-"], &profile("secure"));
    agent.wait_for(&["policy view updated", "profiles=1"]);
    agent.stop();

    let refused = Command::new(palisade_binary())
        .args([
            "--datastore",
            url.as_str(),
            "--etcd-ca",
            &files[0],
            "agent",
            "--node",
            "n",
        ])
        .env_remove("PALISADE_DATASTORE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot open the datastore"), "{stderr}");
    assert!(stderr.contains("client certificate"), "{stderr}");
}
