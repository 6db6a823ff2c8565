//! `palisade workload add/remove` through the binary: real namespaces and veths, the routes
//! and sysctls Calico sets, real traffic between two workloads and from a third namespace
//! routed through the host, the endpoint in a private datastore, and nothing left behind
//! by `remove` or by a failed `add`.
//!
//! No agent runs, so nothing filters the traffic: this is the plumbing alone.

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use palisade::netplumb::host_interface_name;
use palisade_tests::netns::{Netns, create_veth, ip_json, link_exists, run_ok, unique_name};
use palisade_tests::{Cleanup, palisade_binary, require_root};

/// How long a connection may take to work; not a speed requirement.
const PATIENCE: Duration = Duration::from_secs(10);

struct Store {
    url: String,
    _dir: tempfile::TempDir,
}

impl Store {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self {
            url: format!("file://{}", dir.path().join("store").display()),
            _dir: dir,
        }
    }

    fn palisade(&self, args: &[&str]) -> Output {
        Command::new(palisade_binary())
            .args(["--datastore", &self.url])
            .args(args)
            .output()
            .unwrap()
    }

    fn palisade_ok(&self, args: &[&str]) -> String {
        let out = self.palisade(args);
        assert!(
            out.status.success(),
            "palisade {args:?} failed: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn endpoints_yaml(&self) -> String {
        self.palisade_ok(&["get", "workloadEndpoint", "-o", "yaml"])
    }
}

/// Adds the workload `name` and registers its removal (if it is still there then).
fn add_workload(cleanup: &mut Cleanup, store: &Store, name: &str, args: &[&str]) -> String {
    let mut full = vec!["workload", "add", name];
    full.extend_from_slice(args);
    let out = store.palisade_ok(&full);
    let host = host_interface_name(name);
    let url = store.url.clone();
    let name = name.to_string();
    cleanup.defer(format!("remove workload {name}"), move || {
        if link_exists(&host) {
            let out = Command::new(palisade_binary())
                .args([
                    "--datastore",
                    &url,
                    "workload",
                    "remove",
                    &name,
                    "--node",
                    "node1",
                ])
                .output()?;
            anyhow::ensure!(out.status.success(), "workload remove {name}: {out:?}");
        }
        Ok(())
    });
    out
}

fn addresses(ns: &Netns, dev: &str) -> Vec<String> {
    let json = ns.ip_json(&["addr", "show", "dev", dev]);
    json[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["scope"] == "global")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect()
}

fn routes(ns: &Netns, family: &str) -> Vec<String> {
    let json = ns.ip_json(&[family, "route", "show"]);
    json.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{} via={} dev={} scope={}",
                r["dst"].as_str().unwrap_or(""),
                r["gateway"].as_str().unwrap_or("-"),
                r["dev"].as_str().unwrap_or(""),
                r["scope"].as_str().unwrap_or("")
            )
        })
        .collect()
}

/// The host's routes to `address`, as `ip -j route show` gives them.
fn host_route(address: &str) -> serde_json::Value {
    let family = if address.contains(':') { "-6" } else { "-4" };
    ip_json(&[family, "route", "show", address])
}

fn sysctl(key: &str) -> String {
    std::fs::read_to_string(format!("/proc/sys/{key}"))
        .unwrap()
        .trim()
        .to_string()
}

fn ping(from: &Netns, to: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let out = from.run("busybox", &["ping", "-c", "1", "-W", "1", to]);
        if out.status.success() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "ping {to} from {} failed: {}",
            from.name,
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

/// An echo server on `port` in `ns` (busybox nc running cat), killed by the cleanup.
fn echo_server(cleanup: &mut Cleanup, ns: &Netns, port: u16) {
    let port = port.to_string();
    let child: Child = Command::new("ip")
        .args([
            "netns", "exec", &ns.name, "busybox", "nc", "-ll", "-p", &port,
        ])
        .args(["-e", "/bin/cat"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    cleanup.defer(format!("kill the echo server in {}", ns.name), move || {
        // SAFETY: plain kill(2) on our child; ESRCH if it has exited is fine.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let mut child = child;
        child.wait()?;
        Ok(())
    });
}

/// Sends a line over TCP from `from` to `to:port` and expects it echoed back.
fn tcp_echo(from: &Netns, to: &str, port: u16) {
    let script = format!("echo hello-{to} | busybox nc -w 2 {to} {port}");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let out = from.run("sh", &["-c", &script]);
        if String::from_utf8_lossy(&out.stdout).trim() == format!("hello-{to}") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no TCP echo from {to}:{port} in {}: {out:?}",
            from.name
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn two_workloads_and_the_outside_talk_over_ipv4_and_ipv6_and_remove_leaves_nothing() {
    require_root();
    let mut cleanup = Cleanup::new();
    let store = Store::new();
    let ns_a = Netns::create(&mut cleanup, "pwa");
    let ns_b = Netns::create(&mut cleanup, "pwb");
    let outside = Netns::create(&mut cleanup, "pwo");
    let name_a = unique_name("wa");
    let name_b = unique_name("wb");

    let said = add_workload(
        &mut cleanup,
        &store,
        &name_a,
        &[
            "--netns",
            &ns_a.name,
            "--ip",
            "10.231.1.1",
            "--ip",
            "fd31:1::1",
            "--labels",
            "role=db,tier=back",
            "--profile",
            "databases",
            "--profile",
            "backups",
            "--node",
            "node1",
        ],
    );
    let host_a = host_interface_name(&name_a);
    assert!(said.contains(&host_a), "{said}");
    // It says what it changed on the host, which stays changed (as with Calico).
    assert!(
        said.contains(
            "The host forwards for it: net.ipv4.ip_forward=1, net.ipv6.conf.all.forwarding=1"
        ),
        "{said}"
    );
    // The namespace given as a path, as container runtimes do.
    add_workload(
        &mut cleanup,
        &store,
        &name_b,
        &[
            "--netns",
            &format!("/run/netns/{}", ns_b.name),
            "--ip",
            "10.231.1.2",
            "--ip",
            "fd31:1::2",
            "--node",
            "node1",
        ],
    );
    let host_b = host_interface_name(&name_b);

    // Inside: eth0 with the addresses as /32 and /128, Calico's routes.
    assert_eq!(addresses(&ns_a, "eth0"), ["10.231.1.1/32", "fd31:1::1/128"]);
    let v4 = routes(&ns_a, "-4");
    assert!(
        v4.contains(&"default via=169.254.1.1 dev=eth0 scope=".to_string())
            && v4.contains(&"169.254.1.1 via=- dev=eth0 scope=link".to_string()),
        "{v4:?}"
    );
    let v6 = routes(&ns_a, "-6");
    assert!(
        v6.contains(&"default via=fe80::ecee:eeff:feee:eeee dev=eth0 scope=".to_string()),
        "{v6:?}"
    );

    // Host: the veth with the fixed MAC, proxy ARP, host routes, forwarding.
    let link = ip_json(&["link", "show", "dev", &host_a]);
    assert_eq!(link[0]["address"], "ee:ee:ee:ee:ee:ee");
    assert!(
        link[0]["flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "UP")
    );
    assert_eq!(sysctl(&format!("net/ipv4/conf/{host_a}/proxy_arp")), "1");
    assert_eq!(sysctl("net/ipv4/ip_forward"), "1");
    assert_eq!(sysctl("net/ipv6/conf/all/forwarding"), "1");
    for (address, dev) in [
        ("10.231.1.1", &host_a),
        ("fd31:1::1", &host_a),
        ("10.231.1.2", &host_b),
        ("fd31:1::2", &host_b),
    ] {
        let route = host_route(address);
        assert_eq!(route[0]["dev"], dev.as_str(), "route to {address}: {route}");
    }

    // The endpoint, with the container side's MAC.
    let yaml = store.endpoints_yaml();
    let mac = ns_a.ip_json(&["link", "show", "dev", "eth0"])[0]["address"]
        .as_str()
        .unwrap()
        .to_string();
    for expected in [
        format!("name: {name_a}"),
        "orchestrator: palisade".to_string(),
        format!("workload: {name_a}"),
        "node: node1".to_string(),
        format!("interfaceName: {host_a}"),
        "- 10.231.1.1/32".to_string(),
        "- fd31:1::1/128".to_string(),
        format!("mac: {mac}"),
        "role: db".to_string(),
        "- databases\n    - backups".to_string(),
        format!("interfaceName: {host_b}"),
    ] {
        assert!(yaml.contains(&expected), "no {expected:?} in:\n{yaml}");
    }

    // Traffic between the workloads.
    ping(&ns_a, "10.231.1.2");
    ping(&ns_a, "fd31:1::2");
    ping(&ns_b, "10.231.1.1");
    echo_server(&mut cleanup, &ns_b, 7001);
    tcp_echo(&ns_a, "10.231.1.2", 7001);
    tcp_echo(&ns_a, "fd31:1::2", 7001);

    // And from a plain namespace routed through the host.
    let (out_host, out_peer) = (unique_name("pwh"), unique_name("pwp"));
    create_veth(&mut cleanup, &out_host, &out_peer);
    run_ok("ip", &["link", "set", &out_peer, "netns", &outside.name]);
    run_ok("ip", &["addr", "add", "10.231.3.1/24", "dev", &out_host]);
    run_ok(
        "ip",
        &["addr", "add", "fd31:3::1/64", "dev", &out_host, "nodad"],
    );
    run_ok("ip", &["link", "set", &out_host, "up"]);
    outside.run_ok("ip", &["addr", "add", "10.231.3.2/24", "dev", &out_peer]);
    outside.run_ok(
        "ip",
        &["addr", "add", "fd31:3::2/64", "dev", &out_peer, "nodad"],
    );
    outside.run_ok("ip", &["link", "set", &out_peer, "up"]);
    outside.run_ok("ip", &["route", "add", "default", "via", "10.231.3.1"]);
    outside.run_ok("ip", &["-6", "route", "add", "default", "via", "fd31:3::1"]);
    ping(&outside, "10.231.1.1");
    ping(&outside, "fd31:1::1");
    tcp_echo(&outside, "10.231.1.2", 7001);
    tcp_echo(&outside, "fd31:1::2", 7001);

    // Remove: no link, no route, no endpoint; the namespace itself stays.
    for name in [&name_a, &name_b] {
        let said = store.palisade_ok(&["workload", "remove", name, "--node", "node1"]);
        assert!(said.contains(name.as_str()), "{said}");
    }
    for host in [&host_a, &host_b] {
        assert!(!link_exists(host), "{host} is still there");
    }
    for address in ["10.231.1.1", "fd31:1::1", "10.231.1.2", "fd31:1::2"] {
        let route = host_route(address);
        assert_eq!(route, serde_json::json!([]), "route to {address} left");
    }
    assert_eq!(store.endpoints_yaml().trim(), "[]");
    assert!(!ns_a.run("ip", &["link", "show", "eth0"]).status.success());
    let again = store.palisade(&["workload", "remove", &name_a, "--node", "node1"]);
    assert!(!again.status.success(), "removing twice must fail");
}

/// The host's view of the things a failed `add` could leave behind.
fn assert_nothing_left(store: &Store, ns: &Netns, names: &[&str], addresses: &[&str]) {
    for name in names {
        let host = host_interface_name(name);
        assert!(!link_exists(&host), "{host} left behind");
    }
    for address in addresses {
        let route = host_route(address);
        assert_eq!(route, serde_json::json!([]), "route to {address} left");
    }
    assert!(
        !ns.run("ip", &["link", "show", "eth0"]).status.success(),
        "eth0 left in {}",
        ns.name
    );
    let yaml = store.endpoints_yaml();
    for name in names {
        assert!(
            !yaml.contains(&format!("name: {name}")),
            "{name} in:\n{yaml}"
        );
    }
}

/// Failed with a message naming `needle`: on stderr, or for a syntax error (a value that
/// does not parse, such as `--ip 10.231.2.300`) in the one-line "Invalid option" message
/// every command prints on stdout.
fn assert_fails(out: &Output, needle: &str) {
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "should have failed: {out:?}");
    assert!(said.contains(needle), "no {needle:?} in: {said}");
}

#[test]
fn failed_adds_leave_nothing_behind() {
    require_root();
    let mut cleanup = Cleanup::new();
    let store = Store::new();
    let ns = Netns::create(&mut cleanup, "pwe");
    let other = Netns::create(&mut cleanup, "pwf");
    let name = unique_name("we");
    let ip = "10.231.2.1";

    let missing = unique_name("nons");
    let missing_path = format!("/run/netns/{missing}");
    // (namespace, address, labels, what the error must name)
    let refused = [
        (missing.as_str(), ip, None, missing_path.as_str()),
        ("/etc/hostname", ip, None, "not a network namespace"),
        (ns.name.as_str(), "10.231.2.300", None, "--ip"),
        (ns.name.as_str(), "224.0.0.1", None, "224.0.0.1"),
        (ns.name.as_str(), ip, Some("role"), "--labels"),
    ];
    for (netns, address, labels, needle) in refused {
        let mut args = vec![
            "workload", "add", &name, "--netns", netns, "--ip", address, "--node", "node1",
        ];
        if let Some(labels) = labels {
            args.extend(["--labels", labels]);
        }
        assert_fails(&store.palisade(&args), needle);
    }
    assert_nothing_left(&store, &ns, &[&name], &[ip]);

    // A duplicate name: the second add fails and the first workload is untouched.
    add_workload(
        &mut cleanup,
        &store,
        &name,
        &["--netns", &ns.name, "--ip", ip, "--node", "node1"],
    );
    let out = store.palisade(&[
        "workload",
        "add",
        &name,
        "--netns",
        &other.name,
        "--ip",
        "10.231.2.2",
        "--node",
        "node1",
    ]);
    assert_fails(&out, "already exists");
    assert!(link_exists(&host_interface_name(&name)));
    assert_eq!(addresses(&ns, "eth0"), [format!("{ip}/32")]);
    assert!(!other.run("ip", &["link", "show", "eth0"]).status.success());
    let route = host_route("10.231.2.2");
    assert_eq!(route, serde_json::json!([]));

    // An address another workload has: the plumbing fails half way and is undone.
    let second = unique_name("we");
    let out = store.palisade(&[
        "workload",
        "add",
        &second,
        "--netns",
        &other.name,
        "--ip",
        ip,
        "--node",
        "node1",
    ]);
    assert_fails(&out, "already has a route");
    assert_nothing_left(&store, &other, &[&second], &[]);

    // A namespace that has an eth0 already.
    let third = unique_name("we");
    let out = store.palisade(&[
        "workload",
        "add",
        &third,
        "--netns",
        &ns.name,
        "--ip",
        "10.231.2.3",
        "--node",
        "node1",
    ]);
    assert_fails(&out, "eth0");
    assert!(!link_exists(&host_interface_name(&third)));
    assert_eq!(host_route("10.231.2.3"), serde_json::json!([]));

    store.palisade_ok(&["workload", "remove", &name, "--node", "node1"]);
    assert_nothing_left(&store, &ns, &[&name], &[ip]);
}
