//! `palisade agent` as a real process: it mounts bpffs, loads and pins the eBPF program,
//! follows the datastore as the CLI writes to it, and stops cleanly on SIGTERM.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use palisade_tests::{Cleanup, palisade_binary, require_root};

/// An upper bound for the agent to react, so a broken agent fails the test instead of
/// hanging it; not a speed requirement.
const PATIENCE: Duration = Duration::from_secs(20);

struct Agent {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Agent {
    /// Waits for a log line containing every one of `needles`.
    fn wait_for(&mut self, needles: &[&str]) -> String {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
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
}

fn cli(store: &str, args: &[&str], stdin: &str) {
    let mut child = Command::new(palisade_binary())
        .args(["--datastore", store])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "palisade {args:?}: {out:?}");
}

#[test]
fn agent_loads_pins_follows_the_store_and_stops() {
    require_root();
    let mut cleanup = Cleanup::new();
    let dir = tempfile::tempdir().unwrap();
    let bpffs = dir.path().join("bpffs");
    std::fs::create_dir(&bpffs).unwrap();
    let store = format!("file://{}", dir.path().join("store").display());

    let child = Command::new(palisade_binary())
        .args([
            "--datastore",
            &store,
            "agent",
            "--no-docker-plugin",
            "--node",
            "node1",
            "--bpffs",
        ])
        .arg(&bpffs)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    {
        let bpffs = bpffs.clone();
        cleanup.defer("unmount the test's bpffs", move || {
            let path = std::ffi::CString::new(bpffs.as_os_str().as_encoded_bytes())?;
            // SAFETY: a valid NUL-terminated path; umount2 has no other preconditions.
            if unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) } != 0 {
                let err = std::io::Error::last_os_error();
                // Not mounted (the agent failed early) is fine.
                if err.raw_os_error() != Some(libc::EINVAL) {
                    return Err(err.into());
                }
            }
            Ok(())
        });
    }
    cleanup.defer("kill the agent", move || {
        // SAFETY: plain kill(2); a process that has exited already gives ESRCH, ignored.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        Ok(())
    });
    let (tx, lines) = mpsc::channel();
    let mut child = child;
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut agent = Agent {
        child,
        lines,
        seen: vec![],
    };

    let loaded = agent.wait_for(&["eBPF programs loaded"]);
    let programs = palisade::dataplane::program_pin_dir(&palisade::dataplane::pin_dir(&bpffs));
    assert!(loaded.contains(&programs.display().to_string()), "{loaded}");
    let pin = programs.join("palisade_from_wl");
    let shown = Command::new("bpftool")
        .args(["--json", "prog", "show", "pinned"])
        .arg(&pin)
        .output()
        .unwrap();
    assert!(shown.status.success(), "bpftool: {shown:?}");
    let prog: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(prog["name"], "palisade_from_wl");
    assert_eq!(prog["type"], "sched_cls");

    agent.wait_for(&["policy view updated", "revision=0"]);
    cli(
        &store,
        &["apply", "-f", "-"],
        "- apiVersion: v1\n  kind: profile\n  metadata: {name: databases, labels: {role: database}}\n",
    );
    agent.wait_for(&["policy view updated", "revision=1", "profiles=1"]);
    cli(
        &store,
        &["apply", "-f", "-"],
        "- apiVersion: v1\n  kind: workloadEndpoint\n  metadata: {name: db1, node: node1, orchestrator: o, workload: w}\n  spec: {interfaceName: calidb1, ipNetworks: [10.0.0.1/32], profiles: [databases]}\n",
    );
    agent.wait_for(&["policy view updated", "revision=2", "local_endpoints=1"]);

    // SAFETY: plain kill(2) on our child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    agent.wait_for(&["agent stopped"]);
    let status = agent.child.wait().unwrap();
    assert!(status.success(), "agent exit status {status}");
}
