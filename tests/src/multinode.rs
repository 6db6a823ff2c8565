//! Several palisade nodes on one machine: each "host" is a network namespace with its own
//! agent process (an [`crate::agent_process::AgentHome`] in that namespace), the hosts are joined by a veth pair, and
//! one real etcd serves them all. Everything is undone by the test's [`Cleanup`] guard.
//!
//! etcd runs inside the first host's namespace, listening on its loopback and on its end of
//! the link between the hosts: every palisade process then reaches it at the same address,
//! and nothing is added to the root namespace, so parallel tests cannot collide there.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::netns::{Netns, unique_name};
use crate::{Cleanup, palisade_binary};

/// An upper bound for a process to react, so a broken one fails the test instead of
/// hanging it; not a speed requirement.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// etcd's client port inside the host namespace that runs it (a fresh namespace, so it is
/// free).
const ETCD_CLIENT_PORT: u16 = 2379;
const ETCD_PEER_PORT: u16 = 2380;

/// A host: a network namespace standing for one node, with its address on the link to the
/// other hosts.
pub struct Host {
    pub ns: Netns,
    pub node: String,
    pub link_address: String,
}

impl Host {
    /// Runs `palisade --datastore <datastore> args` inside this host's namespace.
    pub fn palisade(&self, datastore: &str, args: &[&str]) -> Output {
        let binary = palisade_binary();
        let mut full = vec![
            binary.to_str().expect("the binary path is UTF-8"),
            "--datastore",
            datastore,
        ];
        full.extend_from_slice(args);
        let (program, rest) = full.split_first().expect("full has a program");
        self.ns.run(program, rest)
    }

    /// Like [`Host::palisade`], panicking with its output unless it succeeds; returns stdout.
    pub fn palisade_ok(&self, datastore: &str, args: &[&str]) -> String {
        let out = self.palisade(datastore, args);
        assert!(
            out.status.success(),
            "on {}: palisade {args:?} failed: {}\n{}{}",
            self.node,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Two hosts, `a` and `b`, joined by a veth pair with `a_address`/30 and `b_address`/30,
/// each other's default route, loopback up and IPv4 forwarding on in both.
pub fn two_hosts(
    cleanup: &mut Cleanup,
    (node_a, a_address): (&str, &str),
    (node_b, b_address): (&str, &str),
) -> (Host, Host) {
    let ns_a = Netns::create(cleanup, "mna");
    let ns_b = Netns::create(cleanup, "mnb");
    // Created inside a host namespace, the pair disappears with the namespaces.
    let (end_a, end_b) = (unique_name("mla"), unique_name("mlb"));
    ns_a.run_ok(
        "ip",
        &[
            "link", "add", &end_a, "type", "veth", "peer", "name", &end_b, "netns", &ns_b.name,
        ],
    );
    for (ns, end, address) in [(&ns_a, &end_a, a_address), (&ns_b, &end_b, b_address)] {
        ns.run_ok("ip", &["link", "set", "lo", "up"]);
        ns.run_ok("ip", &["addr", "add", &format!("{address}/30"), "dev", end]);
        ns.run_ok("ip", &["link", "set", end, "up"]);
        // /proc/sys/net shows the namespace of the process that reads it.
        ns.run_ok("sh", &["-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"]);
    }
    // Each host's default route is the other one, as a real host has an uplink: Calico's
    // workloads reach their gateway 169.254.1.1 by proxy ARP, which the host answers only
    // for addresses it has a route to.
    ns_a.run_ok("ip", &["route", "add", "default", "via", b_address]);
    ns_b.run_ok("ip", &["route", "add", "default", "via", a_address]);
    (
        Host {
            ns: ns_a,
            node: node_a.to_string(),
            link_address: a_address.to_string(),
        },
        Host {
            ns: ns_b,
            node: node_b.to_string(),
            link_address: b_address.to_string(),
        },
    )
}

/// Routes `addresses` (/32 each) in `from` via `to`'s link address.
pub fn route_to(from: &Host, to: &Host, addresses: &[&str]) {
    for address in addresses {
        from.ns.run_ok(
            "ip",
            &[
                "route",
                "add",
                &format!("{address}/32"),
                "via",
                &to.link_address,
            ],
        );
    }
}

/// A real etcd inside `host`'s namespace, listening on its loopback and its link address,
/// with its data in `dir`; killed by the cleanup. Returns the palisade datastore URL every
/// host can use.
pub fn start_etcd(cleanup: &mut Cleanup, host: &Host, dir: &Path) -> String {
    let client = format!("http://{}:{ETCD_CLIENT_PORT}", host.link_address);
    let peer = format!("http://127.0.0.1:{ETCD_PEER_PORT}");
    let log = std::fs::File::create(dir.join("etcd.log")).expect("cannot create etcd.log");
    let child = Command::new("ip")
        .args(["netns", "exec", &host.ns.name, "etcd", "--name=multinode"])
        .arg(format!("--data-dir={}", dir.join("etcd").display()))
        .arg(format!(
            "--listen-client-urls=http://127.0.0.1:{ETCD_CLIENT_PORT},{client}"
        ))
        .arg(format!("--advertise-client-urls={client}"))
        .arg(format!("--listen-peer-urls={peer}"))
        .arg(format!("--initial-advertise-peer-urls={peer}"))
        .arg(format!("--initial-cluster=multinode={peer}"))
        .args(["--logger=zap", "--log-level=warn"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("cannot share etcd.log"))
        .stderr(log)
        .spawn()
        .expect("cannot run etcd through `ip netns exec` (is etcd-server installed?)");
    kill_on_cleanup(cleanup, format!("stop etcd in {}", host.ns.name), child);

    let deadline = Instant::now() + PATIENCE;
    loop {
        let health = host.ns.run(
            "etcdctl",
            &[
                &format!("--endpoints={client}"),
                "--command-timeout=2s",
                "endpoint",
                "health",
            ],
        );
        if health.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "etcd in {} did not become healthy: {}\n{}",
            host.ns.name,
            String::from_utf8_lossy(&health.stderr),
            std::fs::read_to_string(dir.join("etcd.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    format!("etcd://{}:{ETCD_CLIENT_PORT}", host.link_address)
}

/// A server in `ns` that echoes what a client sends on TCP `port` (busybox nc running cat),
/// killed by the cleanup.
pub fn echo_server(cleanup: &mut Cleanup, ns: &Netns, port: u16) {
    let child = Command::new("ip")
        .args(["netns", "exec", &ns.name, "busybox", "nc", "-ll", "-p"])
        .arg(port.to_string())
        .args(["-e", "/bin/cat"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot run busybox nc through `ip netns exec`");
    kill_on_cleanup(
        cleanup,
        format!("stop the echo server on {} port {port}", ns.name),
        child,
    );
}

/// Whether one TCP exchange from `from` to `to:port` gets its line echoed back within
/// `timeout_secs` (a denied SYN is dropped, so a denied connection times out).
pub fn tcp_echoes(from: &Netns, to: &str, port: u16, timeout_secs: u32) -> bool {
    let token = format!("palisade-{to}-{port}");
    let script = format!("echo {token} | busybox nc -w {timeout_secs} {to} {port}");
    let out = from.run("sh", &["-c", &script]);
    String::from_utf8_lossy(&out.stdout).trim() == token
}

/// Kills `child` (and waits for it) when the cleanup runs; one that exited already is fine.
fn kill_on_cleanup(cleanup: &mut Cleanup, what: String, child: Child) {
    cleanup.defer(what, move || {
        let mut child = child;
        let pid = child.id() as libc::pid_t;
        // `ip netns exec` execs its command, so this is the process itself.
        // SAFETY: plain kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        child.wait()?;
        Ok(())
    });
}
