//! Network namespaces, veths and commands run in them, for tests, each undone by the test's
//! [`Cleanup`] guard.
//!
//! The tests use the `ip` command on purpose: it is an independent view of what palisade
//! did through netlink, and the usual way to set up what palisade is tested against.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::Cleanup;

/// A name no other test (in this process or another) uses: `prefix`, this process's id and
/// a counter, in hex. With a prefix of up to 4 characters it fits an interface name (15).
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{:x}x{n:x}", std::process::id())
}

/// Runs `program args`, returning its output whatever its status.
pub fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("cannot run {program}: {err}"))
}

/// Runs `program args`, panicking with its output unless it succeeds; returns its stdout.
pub fn run_ok(program: &str, args: &[&str]) -> String {
    let output = run(program, args);
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `ip -j ARGS` in the host namespace, parsed.
pub fn ip_json(args: &[&str]) -> serde_json::Value {
    let mut full = vec!["-j"];
    full.extend_from_slice(args);
    let out = run_ok("ip", &full);
    if out.trim().is_empty() {
        return serde_json::Value::Array(vec![]);
    }
    serde_json::from_str(&out).unwrap_or_else(|err| panic!("ip {args:?}: bad JSON {err}: {out}"))
}

/// Whether the host namespace has an interface called `name`.
pub fn link_exists(name: &str) -> bool {
    run("ip", &["link", "show", "dev", name]).status.success()
}

/// A network namespace made with `ip netns add`, deleted by the cleanup guard.
#[derive(Debug, Clone)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates a namespace with a unique name starting with `prefix`.
    pub fn create(cleanup: &mut Cleanup, prefix: &str) -> Self {
        let name = unique_name(prefix);
        run_ok("ip", &["netns", "add", &name]);
        let deleted = name.clone();
        cleanup.defer(format!("delete namespace {name}"), move || {
            let out = run("ip", &["netns", "del", &deleted]);
            anyhow::ensure!(
                out.status.success(),
                "ip netns del {deleted}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Ok(())
        });
        Self { name }
    }

    /// Runs `program args` inside the namespace.
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        let mut full = vec!["netns", "exec", &self.name, program];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Runs `program args` inside the namespace, panicking unless it succeeds.
    pub fn run_ok(&self, program: &str, args: &[&str]) -> String {
        let output = self.run(program, args);
        assert!(
            output.status.success(),
            "in {}: {program} {args:?} failed: {}\n{}{}",
            self.name,
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `ip -j ARGS` inside the namespace, parsed.
    pub fn ip_json(&self, args: &[&str]) -> serde_json::Value {
        let mut full = vec!["-j"];
        full.extend_from_slice(args);
        let out = self.run_ok("ip", &full);
        if out.trim().is_empty() {
            return serde_json::Value::Array(vec![]);
        }
        serde_json::from_str(&out)
            .unwrap_or_else(|err| panic!("ip {args:?} in {}: bad JSON {err}: {out}", self.name))
    }
}

/// A veth pair `host` / `peer` in the host namespace, deleted by the cleanup guard unless
/// it is gone already (deleting either end deletes both).
/// A veth pair under fresh names starting with `host_prefix` and `peer_prefix`, deleted by
/// `cleanup`: the two names and the host side's interface index.
pub fn veth_pair(
    cleanup: &mut Cleanup,
    host_prefix: &str,
    peer_prefix: &str,
) -> (String, String, u32) {
    let (host, peer) = (unique_name(host_prefix), unique_name(peer_prefix));
    create_veth(cleanup, &host, &peer);
    let index = palisade::dataplane::attach::interface_index(&host)
        .unwrap_or_else(|| panic!("{host} has no interface index"));
    (host, peer, index)
}

pub fn create_veth(cleanup: &mut Cleanup, host: &str, peer: &str) {
    run_ok(
        "ip",
        &["link", "add", host, "type", "veth", "peer", "name", peer],
    );
    let host = host.to_string();
    cleanup.defer(format!("delete veth {host}"), move || {
        if link_exists(&host) {
            let out = run("ip", &["link", "del", &host]);
            anyhow::ensure!(
                out.status.success(),
                "ip link del {host}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    });
}
