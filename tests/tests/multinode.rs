//! Issue 4's acceptance test: two nodes, each a network namespace with its own agent and
//! private bpffs, joined by a veth link and sharing one real etcd. The seed example's
//! databases run on node A, its apps on node B; real TCP across the link gives exactly the
//! verdicts `palisade trace` computes from the stored policy.

use palisade_tests::agent_process::{AgentHome, AgentProcess};
use palisade_tests::multinode::{Host, echo_server, route_to, start_etcd, tcp_echoes, two_hosts};
use palisade_tests::netns::Netns;
use palisade_tests::{Cleanup, require_root};

// Only the first variant is used here.
#[allow(dead_code)]
#[path = "../../agent/tests/common/seeds.rs"]
mod seeds;

/// The link between the hosts: a /30 inside the test's own namespaces, so it cannot clash
/// with anything outside them.
const A_LINK: &str = "10.99.0.1";
const B_LINK: &str = "10.99.0.2";

/// The port the apps listen on (the seed lets nothing in to them).
const APP_PORT: u16 = 8080;

/// Tries for a connection the trace allows: the echo servers may still be starting.
const TRIES_WHEN_ALLOWED: usize = 5;
/// Tries for one it denies: any success is a leak, so more than one try is a stricter check.
const TRIES_WHEN_DENIED: usize = 2;
/// Seconds one try waits: a denied SYN is dropped, so a denied connection times out.
const TRY_SECONDS: u32 = 2;

/// A workload: its name (also its endpoint's), its address and its network namespace.
struct Workload {
    name: &'static str,
    ip: &'static str,
    ns: Netns,
}

/// `palisade workload add` on `host`. Its host-side veth goes with the host namespace,
/// its endpoint with etcd; the workload's namespace is deleted by the cleanup.
fn add_workload(
    cleanup: &mut Cleanup,
    host: &Host,
    datastore: &str,
    (name, ip, profile): (&'static str, &'static str, &str),
) -> Workload {
    let ns = Netns::create(cleanup, "mnw");
    host.palisade_ok(
        datastore,
        &[
            "workload",
            "add",
            name,
            "--netns",
            &ns.name,
            "--ip",
            ip,
            "--profile",
            profile,
            "--node",
            &host.node,
        ],
    );
    Workload { name, ip, ns }
}

/// What `palisade trace` says about TCP from `src` to `dst:port`: true for allow.
fn trace_allows(host: &Host, datastore: &str, src: &str, dst: &str, port: u16) -> bool {
    let port = port.to_string();
    let report = host.palisade_ok(
        datastore,
        &[
            "trace",
            "--src",
            src,
            "--dst",
            dst,
            "--protocol",
            "tcp",
            "--dport",
            &port,
        ],
    );
    match report.lines().last() {
        Some("verdict: allow") => true,
        Some("verdict: deny") => false,
        _ => panic!("no verdict line in the trace of {src} -> {dst}:{port}:\n{report}"),
    }
}

/// Waits until `agent` has seen all four endpoints, published the policy that knows them,
/// and enforces on both of its local workloads' interfaces.
fn wait_until_enforcing(agent: &mut AgentProcess) {
    agent.wait_for(&["policy view updated", "workload_endpoints=4"]);
    agent.wait_for(&["policy published", "local_endpoints=2"]);
    while agent.count(&["enforcing on workload interface"]) < 2 {
        agent.wait_for(&["enforcing on workload interface"]);
    }
}

#[test]
fn databases_on_node_a_and_apps_on_node_b_connect_exactly_as_trace_says() {
    require_root();
    // Declared before the cleanup so it outlives it: etcd's data and the bpffs mount
    // points are in it.
    let dir = tempfile::tempdir().unwrap();
    let mut cleanup = Cleanup::new();
    let (host_a, host_b) = two_hosts(&mut cleanup, ("A", A_LINK), ("B", B_LINK));
    let datastore = start_etcd(&mut cleanup, &host_a, dir.path());

    let home_a = AgentHome::in_netns(&datastore, &host_a.node, &host_a.ns.name);
    let home_b = AgentHome::in_netns(&datastore, &host_b.node, &host_b.ns.name);
    let mut agent_a = home_a.start(&[]);
    let mut agent_b = home_b.start(&[]);

    // The seed's first variant, isolation by the profiles' rules, written from node B:
    // the CLI reaches etcd across the link too.
    let seed = dir.path().join("profiles.yaml");
    std::fs::write(&seed, seeds::PROFILES_WITH_RULES).unwrap();
    host_b.palisade_ok(&datastore, &["apply", "-f", seed.to_str().unwrap()]);

    let db1 = add_workload(
        &mut cleanup,
        &host_a,
        &datastore,
        ("db1", "192.168.0.11", "databases"),
    );
    let db2 = add_workload(
        &mut cleanup,
        &host_a,
        &datastore,
        ("db2", "192.168.0.12", "databases"),
    );
    let app1 = add_workload(
        &mut cleanup,
        &host_b,
        &datastore,
        ("app1", "192.168.0.21", "apps"),
    );
    let app2 = add_workload(
        &mut cleanup,
        &host_b,
        &datastore,
        ("app2", "192.168.0.22", "apps"),
    );
    route_to(&host_a, &host_b, &[app1.ip, app2.ip]);
    route_to(&host_b, &host_a, &[db1.ip, db2.ip]);

    wait_until_enforcing(&mut agent_a);
    wait_until_enforcing(&mut agent_b);

    for db in [&db1, &db2] {
        echo_server(&mut cleanup, &db.ns, 3306);
        echo_server(&mut cleanup, &db.ns, 3307);
    }
    for app in [&app1, &app2] {
        echo_server(&mut cleanup, &app.ns, APP_PORT);
    }

    // (source, destination, port, what the seed example means)
    let matrix = [
        (&app1, &db1, 3306, true),
        (&app2, &db2, 3306, true),
        (&app1, &db2, 3307, false),
        (&app2, &db1, 3307, false),
        (&db1, &db2, 3306, true),
        (&db2, &db1, 3307, true),
        (&db1, &app1, APP_PORT, false),
        (&db2, &app2, APP_PORT, false),
    ];
    let mut mismatches = Vec::new();
    for (src, dst, port, meant) in matrix {
        let traced = trace_allows(&host_a, &datastore, src.name, dst.name, port);
        assert_eq!(
            traced, meant,
            "trace {} -> {}:{port} disagrees with the seed example",
            src.name, dst.name
        );
        let tries = if traced {
            TRIES_WHEN_ALLOWED
        } else {
            TRIES_WHEN_DENIED
        };
        let connected = (0..tries).any(|_| tcp_echoes(&src.ns, dst.ip, port, TRY_SECONDS));
        eprintln!(
            "{} -> {}:{port}: trace {}, real TCP {}",
            src.name,
            dst.name,
            if traced { "allow" } else { "deny" },
            if connected {
                "connected"
            } else {
                "did not connect"
            }
        );
        if connected != traced {
            mismatches.push(format!(
                "{} ({}) -> {} ({}):{port}: trace allows: {traced}, TCP connected: {connected}",
                src.name, src.ip, dst.name, dst.ip
            ));
        }
    }
    // The agents report every dropped packet (sampling 2^0): a denied connection must be
    // one palisade dropped (not, say, a server that was not there), and an allowed one
    // must have lost nothing, its replies included, on either node.
    let said = format!("{}\n{}", agent_a.log(), agent_b.log());
    let drops: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("\"packet dropped\""))
        .collect();
    for (src, dst, port, meant) in matrix {
        let forward = [
            format!(" src={} ", src.ip),
            format!(" dst={} ", dst.ip),
            format!(" dst_port={port} "),
        ];
        let reply = [
            format!(" src={} ", dst.ip),
            format!(" dst={} ", src.ip),
            format!(" src_port={port} "),
        ];
        let matches = |needles: &[String]| {
            drops
                .iter()
                .any(|l| needles.iter().all(|n| l.contains(n.as_str())))
        };
        if meant {
            if matches(&forward) || matches(&reply) {
                mismatches.push(format!(
                    "{} -> {}:{port} is allowed, yet a packet of it was dropped",
                    src.name, dst.name
                ));
            }
        } else {
            let mut by_policy = forward.to_vec();
            by_policy.push(" reason=policy ".to_string());
            if !matches(&by_policy) {
                mismatches.push(format!(
                    "{} -> {}:{port} did not connect, but no agent reports dropping it by policy",
                    src.name, dst.name
                ));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "real traffic disagrees with palisade trace:\n{}\nagent A said:\n{}\nagent B said:\n{}",
        mismatches.join("\n"),
        agent_a.log(),
        agent_b.log()
    );
    eprintln!(
        "{} packets dropped, none of an allowed connection",
        drops.len()
    );
}
