//! The seed documents' examples enforced end to end: real workloads plumbed by `palisade
//! workload add`, the agent enforcing, real TCP, UDP and ICMP echo between every ordered
//! pair of workloads and an outside namespace, each compared with `palisade trace`'s
//! verdict for that packet. Three variants: policy in the profiles, the same through global
//! policies, and the "multiple networks" extension.
//!
//! Reachable means: TCP, the server read the probe's message; UDP, the listener got the
//! datagram; ICMP, the echo reply came back. Where a probe is reachable its reply must have
//! come back too (replies pass by connection tracking).

use std::net::IpAddr;
use std::thread;
use std::time::Duration;

use palisade_tests::agent_process::{AgentHome, AgentProcess};
use palisade_tests::palisade_cli::Datastore;
use palisade_tests::topology::{Workload, WorkloadSpec, add_outside, add_workload};
use palisade_tests::traffic::{Observed, Probe, Services, probe};
use palisade_tests::{Cleanup, require_root};

#[path = "../../agent/tests/common/seeds.rs"]
#[allow(dead_code)]
mod seeds;

const PROBES: [Probe; 7] = [
    Probe::Tcp(3306),
    Probe::Tcp(3307),
    Probe::Tcp(80),
    Probe::Udp(3306),
    Probe::Udp(3307),
    Probe::Udp(80),
    Probe::IcmpEcho,
];
const TCP_PORTS: [u16; 3] = [3306, 3307, 80];
const UDP_PORTS: [u16; 3] = [3306, 3307, 80];

/// How long a probe waits before calling its destination unreachable. Allowed probes take
/// well under a millisecond; this only bounds the denied ones (all probes run at once).
const PROBE_TIMEOUT: Duration = Duration::from_millis(1000);

/// One end of the matrix: a workload or the outside namespace, with its services.
struct Peer {
    /// The seed's name (db1, app1, outside, ...), for the printed matrix.
    label: &'static str,
    /// What `palisade trace` is given: the endpoint's name, or the outside's address.
    trace_as: String,
    netns: String,
    ip: IpAddr,
    services: Services,
}

fn workload_peer(label: &'static str, workload: &Workload) -> Peer {
    Peer {
        label,
        trace_as: workload.name.clone(),
        netns: workload.netns.name.clone(),
        ip: workload.v4(),
        services: Services::start(&workload.netns.name, &TCP_PORTS, &UDP_PORTS),
    }
}

/// One cell of the matrix.
struct Cell {
    observed: Observed,
    traced: bool,
}

impl Cell {
    fn agrees(&self) -> bool {
        self.observed.reached == self.traced && self.observed.replied == self.traced
    }

    fn show(&self) -> String {
        let word = |allowed: bool| if allowed { "allow" } else { "deny" };
        match (self.agrees(), self.observed) {
            (true, _) => word(self.traced).to_string(),
            (
                false,
                Observed {
                    reached: true,
                    replied: false,
                },
            ) => {
                format!("ONE-WAY(trace:{})", word(self.traced))
            }
            (false, o) => format!(
                "{}(trace:{})",
                word(o.reached).to_uppercase(),
                word(self.traced)
            ),
        }
    }
}

/// Probes every ordered pair with every probe, all at once, and traces each packet;
/// prints the matrix and returns the cells by (source label, destination label, probe).
fn run_matrix(
    title: &str,
    store: &Datastore,
    peers: &[Peer],
) -> Vec<((&'static str, &'static str, Probe), Cell)> {
    let pairs: Vec<(&Peer, &Peer)> = peers
        .iter()
        .flat_map(|s| peers.iter().map(move |d| (s, d)))
        .filter(|(s, d)| s.label != d.label)
        .collect();
    let cases: Vec<(&Peer, &Peer, Probe)> = pairs
        .iter()
        .flat_map(|&(s, d)| PROBES.iter().map(move |&p| (s, d, p)))
        .collect();
    let (observed, traced) = thread::scope(|scope| {
        let probes: Vec<_> = cases
            .iter()
            .map(|&(s, d, p)| {
                let inbox = d.services.inbox();
                scope.spawn(move || probe(&s.netns, d.ip, p, &inbox, PROBE_TIMEOUT))
            })
            .collect();
        // Tracing is a process per packet: two at a time, beside the probes.
        let traced: Vec<bool> = thread::scope(|inner| {
            let halves: Vec<_> = cases
                .chunks(cases.len().div_ceil(2))
                .map(|chunk| {
                    inner.spawn(move || {
                        chunk
                            .iter()
                            .map(|(s, d, p)| {
                                store.trace_allows(&s.trace_as, &d.trace_as, *p, false)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            halves
                .into_iter()
                .flat_map(|h| h.join().expect("a trace thread"))
                .collect()
        });
        let observed: Vec<Observed> = probes
            .into_iter()
            .map(|h| h.join().expect("a probe thread"))
            .collect();
        (observed, traced)
    });

    let mut table = format!("\n{title}: observed, or OBSERVED(trace:verdict) where they differ\n");
    table += &format!("{:<18}", "src -> dst");
    for p in PROBES {
        table += &format!(" {:<16}", p.to_string());
    }
    let mut cells = Vec::new();
    for (i, (s, d, p)) in cases.iter().enumerate() {
        if *p == PROBES[0] {
            table += &format!("\n{:<18}", format!("{} -> {}", s.label, d.label));
        }
        let cell = Cell {
            observed: observed[i],
            traced: traced[i],
        };
        table += &format!(" {:<16}", cell.show());
        cells.push(((s.label, d.label, *p), cell));
    }
    println!("{table}\n");
    let differences: Vec<String> = cells
        .iter()
        .filter(|(_, c)| !c.agrees())
        .map(|((s, d, p), c)| format!("{s} -> {d} {p}: {}", c.show()))
        .collect();
    assert!(
        differences.is_empty(),
        "{title}: the dataplane and palisade trace differ:\n{}\n{table}",
        differences.join("\n")
    );
    cells
}

/// The verdict of the cell for `src -> dst probe`.
fn verdict(
    cells: &[((&'static str, &'static str, Probe), Cell)],
    src: &str,
    dst: &str,
    probe: Probe,
) -> bool {
    cells
        .iter()
        .find(|((s, d, p), _)| *s == src && *d == dst && *p == probe)
        .map(|(_, c)| c.traced)
        .unwrap_or_else(|| panic!("no cell {src} -> {dst} {probe}"))
}

/// Dropped in field order: the agent before its home (and with it the pins) goes, the
/// services before the test's cleanup deletes their namespaces.
struct Setup {
    agent: Option<AgentProcess>,
    home: AgentHome,
    store: Datastore,
    peers: Vec<Peer>,
    interfaces: Vec<String>,
}

/// The workloads (label, profiles, address) plumbed on a fresh store, the outside namespace
/// on `outside` (its /24 and /64, see [`add_outside`]), and services on every one of them;
/// no agent yet.
fn set_up(
    cleanup: &mut Cleanup,
    node: &str,
    outside: (&str, &str),
    workloads: &[(&'static str, &[&str], &str)],
) -> Setup {
    let store = Datastore::new();
    let home = AgentHome::new(store.url(), node);
    let mut peers = Vec::new();
    let mut interfaces = Vec::new();
    for (label, profiles, ip) in workloads {
        let spec = WorkloadSpec {
            prefix: &label[..label.len().min(4)],
            ips: &[ip],
            labels: "",
            profiles,
        };
        let workload = add_workload(cleanup, &store, node, &spec);
        interfaces.push(workload.interface.clone());
        peers.push(workload_peer(label, &workload));
    }
    let outside = add_outside(cleanup, outside.0, outside.1);
    peers.push(Peer {
        label: "outside",
        trace_as: outside.v4().to_string(),
        netns: outside.netns.name.clone(),
        ip: outside.v4(),
        services: Services::start(&outside.netns.name, &TCP_PORTS, &UDP_PORTS),
    });
    Setup {
        agent: None,
        home,
        store,
        peers,
        interfaces,
    }
}

impl Setup {
    fn peer(&self, label: &str) -> &Peer {
        self.peers
            .iter()
            .find(|p| p.label == label)
            .unwrap_or_else(|| panic!("no peer {label}"))
    }

    /// Without an agent nothing filters: what the policy will deny gets through now, so the
    /// denials seen later are palisade's doing and not the plumbing's.
    fn assert_open(&self, src: &str, dst: &str, what: Probe) {
        let (s, d) = (self.peer(src), self.peer(dst));
        let seen = probe(&s.netns, d.ip, what, &d.services.inbox(), PROBE_TIMEOUT);
        assert_eq!(
            seen,
            Observed {
                reached: true,
                replied: true
            },
            "{src} -> {dst} {what} without enforcement"
        );
    }

    fn start_agent(&mut self) {
        self.agent = Some(self.home.start(&[]));
    }

    /// Waits until the agent enforces the store's current revision on every workload.
    fn wait_for_enforcement(&mut self) {
        let revision = self.store.revision();
        let interfaces: Vec<&str> = self.interfaces.iter().map(String::as_str).collect();
        self.agent
            .as_mut()
            .expect("the agent was started")
            .wait_until_enforcing(&interfaces, revision);
    }
}

#[test]
fn profile_and_global_policy_variants_enforce_what_trace_says() {
    require_root();
    let mut cleanup = Cleanup::new();
    let mut setup = set_up(
        &mut cleanup,
        "e2e-seeds",
        ("10.241.250", "fd41:250"),
        &[
            ("db1", &["databases"], "10.241.1.1"),
            ("db2", &["databases"], "10.241.1.2"),
            ("app1", &["apps"], "10.241.1.3"),
            ("app2", &["apps"], "10.241.1.4"),
        ],
    );
    setup.assert_open("outside", "db1", Probe::Tcp(3307));
    setup.assert_open("app1", "app2", Probe::Udp(80));
    setup.assert_open("db1", "app1", Probe::IcmpEcho);
    setup.start_agent();

    // Variant 1: the rules are in the profiles.
    setup.store.apply(seeds::PROFILES_WITH_RULES);
    setup.wait_for_enforcement();
    let cells = run_matrix("seeds, policy in the profiles", &setup.store, &setup.peers);
    assert_seed_isolation(&cells, "db2");

    // Variant 2: the profiles only label; global policies hold the rules.
    setup.store.apply(seeds::PROFILES_LABELS_ONLY);
    setup.store.create(seeds::GLOBAL_POLICIES);
    setup.wait_for_enforcement();
    let cells = run_matrix("seeds, global policies", &setup.store, &setup.peers);
    assert_seed_isolation(&cells, "db2");
}

/// What the seed says the example does, whatever trace says: apps reach databases on TCP
/// 3306 only, databases reach each other on anything, nothing else reaches a database.
/// `db2` is the label of a second database.
fn assert_seed_isolation(cells: &[((&'static str, &'static str, Probe), Cell)], db2: &str) {
    assert!(verdict(cells, "app1", "db1", Probe::Tcp(3306)));
    assert!(!verdict(cells, "app1", "db1", Probe::Tcp(3307)));
    assert!(!verdict(cells, "app1", "db1", Probe::Udp(3306)));
    assert!(verdict(cells, "db1", db2, Probe::Udp(80)));
    assert!(verdict(cells, db2, "db1", Probe::IcmpEcho));
    assert!(!verdict(cells, "db1", "app1", Probe::Tcp(80)));
    assert!(!verdict(cells, "outside", "db1", Probe::Tcp(3306)));
    assert!(verdict(cells, "app1", "outside", Probe::Tcp(80)));
}

#[test]
fn multiple_networks_enforce_what_trace_says() {
    require_root();
    let mut cleanup = Cleanup::new();
    let mut setup = set_up(
        &mut cleanup,
        "e2e-seeds-multi",
        ("10.241.251", "fd41:251"),
        &[
            ("db1", &["databases"], "10.241.2.1"),
            // On the databases and backups networks, the seed's way (one network whose
            // profile has both labels) and the way without Docker networking (two profiles).
            ("dbb", &["database-backup"], "10.241.2.2"),
            ("dbbk", &["databases", "backups"], "10.241.2.3"),
            ("app1", &["apps"], "10.241.2.4"),
            ("app2", &["apps"], "10.241.2.5"),
            ("bk1", &["backups"], "10.241.2.6"),
        ],
    );
    setup.start_agent();
    setup.store.apply(seeds::PROFILES_LABELS_ONLY);
    setup.store.create(seeds::GLOBAL_POLICIES);
    setup.store.create(seeds::MULTIPLE_NETWORKS);
    setup.wait_for_enforcement();
    let cells = run_matrix("seeds, multiple networks", &setup.store, &setup.peers);
    assert_seed_isolation(&cells, "dbb");
    assert_seed_isolation(&cells, "dbbk");
    // The backup network reaches the databases on it, on anything, and only those.
    for db in ["dbb", "dbbk"] {
        assert!(verdict(&cells, "bk1", db, Probe::Tcp(80)), "bk1 -> {db}");
        assert!(verdict(&cells, db, "bk1", Probe::Udp(3307)), "{db} -> bk1");
    }
    assert!(!verdict(&cells, "bk1", "db1", Probe::Tcp(80)));
    assert!(!verdict(&cells, "bk1", "app1", Probe::Tcp(80)));
}
