//! `palisade cleanup` (issue 12): after it, nothing of palisade is on the host: no palisade
//! program in `bpftool net`, `bpftool link` or `tc filter show` on any interface, no
//! `<bpffs>/palisade`, no plugin socket, no run directory, and the workloads reach each
//! other unpoliced; the datastore and the workloads' plumbing stay. It refuses while an
//! agent runs, naming it.
//!
//! The host is a network namespace of the test's own (cleanup sweeps every interface of
//! the namespace it runs in, and tests running beside this one have their agents in the
//! root namespace), with a private bpffs. On it: an agent of this release (TCX links,
//! pinned under `palisade/<ABI_VERSION>`) enforcing on workloads a and b; TCX links pinned
//! under `palisade/2`, standing for an older release's, on c; and on d clsact filters whose
//! pins (`palisade/1`) are gone, as after a bpffs was wiped. The older releases' layouts are
//! made with this build's object pinned under their version directories: the layout of a
//! version directory has not changed since the first release.

use std::collections::BTreeSet;
use std::os::unix::net::UnixListener;
use std::path::Path;

use palisade::dataplane::attach::{AttachMode, Attachments, interface_index};
use palisade::dataplane::{self, lock_dir};
use palisade_tests::agent_process::AgentHome;
use palisade_tests::attachments::{OnInterface, embedded_object};
use palisade_tests::multinode::{Host, echo_server, tcp_echoes};
use palisade_tests::netns::{Netns, run_ok};
use palisade_tests::palisade_cli::Datastore;
use palisade_tests::traffic::in_netns;
use palisade_tests::{Cleanup, palisade_binary, require_root};

const NODE: &str = "cleanup-node";
/// The node of the workloads only the older releases' leftovers are on.
const OTHER_NODE: &str = "cleanup-elsewhere";
const PORT: u16 = 7300;

/// Every workload lets nothing in.
const POLICY: &str = r#"- apiVersion: v1
  kind: profile
  metadata:
    name: closed
  spec:
    egress:
    - action: allow
"#;

struct Workload {
    ip: &'static str,
    ns: Netns,
    interface: String,
}

fn add_workload(
    cleanup: &mut Cleanup,
    host: &Host,
    store: &Datastore,
    (name, ip, node): (&str, &'static str, &str),
) -> Workload {
    let ns = Netns::create(cleanup, "clw");
    host.palisade_ok(
        store.url(),
        &[
            "workload",
            "add",
            name,
            "--netns",
            &ns.name,
            "--ip",
            ip,
            "--profile",
            "closed",
            "--node",
            node,
        ],
    );
    let endpoint = host.palisade_ok(
        store.url(),
        &[
            "get",
            "workloadendpoint",
            name,
            "--node",
            node,
            "-o",
            "json",
        ],
    );
    let endpoint: serde_json::Value = serde_json::from_str(&endpoint).expect("JSON");
    let interface = endpoint["spec"]["interfaceName"]
        .as_str()
        .or_else(|| endpoint[0]["spec"]["interfaceName"].as_str())
        .unwrap_or_else(|| panic!("no interfaceName in {endpoint}"))
        .to_string();
    echo_server(cleanup, &ns, PORT);
    Workload { ip, ns, interface }
}

/// Whether `from` reaches `to` (with a second chance when it should: echo servers start
/// asynchronously, and a busy machine delays them).
fn reaches(from: &Workload, to: &Workload, expected: bool) -> bool {
    let tries = if expected { 5 } else { 1 };
    (0..tries).any(|_| tcp_echoes(&from.ns, to.ip, PORT, 2))
}

/// In the host namespace: attaches this build's programs to `interface` in `mode`, with
/// their maps and links pinned under `<bpffs>/palisade/<version>/`.
fn leave_attachment(host: &Host, bpffs: &Path, version: &str, interface: &str, mode: AttachMode) {
    in_netns(&host.ns.name, || {
        let dir = lock_dir(bpffs).join(version);
        let mut loaded = dataplane::load(embedded_object(), Some(&dir)).expect("load");
        let (mut attachments, _) =
            Attachments::adopt(&mut loaded, &dir, mode).expect("attachments");
        let ifindex = interface_index(interface).expect("the interface");
        attachments
            .attach(&mut loaded, interface, ifindex)
            .expect("attach");
    });
}

/// `palisade cleanup` in the host namespace.
fn cleanup_command(host: &Host, home: &AgentHome, socket: &Path) -> std::process::Output {
    let binary = palisade_binary();
    let (bpffs, run_dir) = (
        home.bpffs.path().display().to_string(),
        home.run_dir().display().to_string(),
    );
    let socket = socket.display().to_string();
    host.ns.run(
        &binary.display().to_string(),
        &[
            "cleanup",
            "--bpffs",
            &bpffs,
            "--run-dir",
            &run_dir,
            "--socket",
            &socket,
        ],
    )
}

#[test]
fn cleanup_leaves_nothing_of_palisade_and_the_workloads_unpoliced() {
    require_root();
    let mut cleanup = Cleanup::new();
    let host = Host {
        ns: Netns::create(&mut cleanup, "clh"),
        node: NODE.to_string(),
        link_address: String::new(),
    };
    host.ns.run_ok("ip", &["link", "set", "lo", "up"]);
    host.ns
        .run_ok("sh", &["-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"]);
    // A default route, as a real host has an uplink: the host answers the workloads' ARP
    // for their gateway 169.254.1.1 only for an address it has a route to.
    host.ns.run_ok(
        "ip",
        &[
            "link",
            "add",
            "uplink",
            "type",
            "veth",
            "peer",
            "name",
            "uplink-peer",
        ],
    );
    for end in ["uplink", "uplink-peer"] {
        host.ns.run_ok("ip", &["link", "set", end, "up"]);
    }
    host.ns
        .run_ok("ip", &["route", "add", "default", "dev", "uplink"]);
    let store = Datastore::new();
    store.apply(POLICY);
    let a = add_workload(&mut cleanup, &host, &store, ("cl-a", "10.247.0.1", NODE));
    let b = add_workload(&mut cleanup, &host, &store, ("cl-b", "10.247.0.2", NODE));
    let c = add_workload(
        &mut cleanup,
        &host,
        &store,
        ("cl-c", "10.247.0.3", OTHER_NODE),
    );
    let d = add_workload(
        &mut cleanup,
        &host,
        &store,
        ("cl-d", "10.247.0.4", OTHER_NODE),
    );
    let all = [&a, &b, &c, &d];

    let home = AgentHome::in_netns(store.url(), NODE, &host.ns.name);
    let bpffs = home.bpffs.path().to_path_buf();
    let mut agent = home.start(&["--attach-mode", "tcx"]);
    agent.wait_until_enforcing(&[&a.interface, &b.interface], store.revision());
    leave_attachment(&host, &bpffs, "2", &c.interface, AttachMode::Tcx);
    leave_attachment(&host, &bpffs, "1", &d.interface, AttachMode::Clsact);
    std::fs::remove_dir_all(lock_dir(&bpffs).join("1")).expect("remove version 1's pins");
    let socket_dir = tempfile::tempdir().expect("a temporary directory");
    let socket = socket_dir.path().join("palisade.sock");
    drop(UnixListener::bind(&socket).expect("a plugin socket"));

    // Policed: a and b by the agent's policy, c and d by programs whose maps know nobody.
    assert!(!reaches(&a, &b, false) && !reaches(&c, &d, false));

    // Refused while the agent runs, naming it; nothing is touched.
    let refused = cleanup_command(&host, &home, &socket);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!("PID {}", agent.pid())),
        "cleanup should name the running agent:\n{said}"
    );
    assert!(lock_dir(&bpffs).exists() && socket.exists());
    let status = agent.terminate();
    assert!(status.success(), "the agent's exit: {status}");

    let program_ids: BTreeSet<u64> = in_netns(&host.ns.name, || {
        all.iter()
            .flat_map(|w| {
                let (ingress, egress) = OnInterface::read(&w.interface).programs();
                [ingress, egress]
            })
            .collect()
    });
    let out = cleanup_command(&host, &home, &socket);
    println!(
        "palisade cleanup:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "palisade cleanup failed: {}",
        out.status
    );

    // No palisade program on any hook, by tc, bpftool net and the kernel's TCX query.
    in_netns(&host.ns.name, || {
        for workload in all {
            OnInterface::read(&workload.interface).assert_empty(&workload.interface);
        }
    });
    let links: serde_json::Value =
        serde_json::from_str(&run_ok("bpftool", &["--json", "link", "show"])).expect("JSON");
    let ours: Vec<&serde_json::Value> = links
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| {
            l["prog_id"]
                .as_u64()
                .is_some_and(|id| program_ids.contains(&id))
        })
        .collect();
    assert!(
        ours.is_empty(),
        "links of palisade's programs remain: {ours:?}"
    );
    assert!(
        !lock_dir(&bpffs).exists(),
        "{} is still there",
        lock_dir(&bpffs).display()
    );
    assert!(!socket.exists(), "the plugin socket is still there");
    assert!(!home.run_dir().exists(), "the run directory is still there");

    // The datastore and the plumbing stay, and nothing polices the workloads any more.
    let endpoints = store.palisade_ok(&["get", "workloadendpoints"], "");
    for name in ["cl-a", "cl-b", "cl-c", "cl-d"] {
        assert!(endpoints.contains(name), "{name} is gone:\n{endpoints}");
    }
    for (from, to) in [(&a, &b), (&b, &a), (&c, &d), (&d, &c), (&a, &d)] {
        assert!(
            reaches(from, to, true),
            "{} does not reach {} after cleanup",
            from.ip,
            to.ip
        );
    }

    // Again, on a clean host: nothing to do, and it says so without failing.
    let again = cleanup_command(&host, &home, &socket);
    assert!(again.status.success(), "a second cleanup failed");
}
