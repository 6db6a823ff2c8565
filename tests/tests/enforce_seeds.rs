//! The seed documents' examples enforced end to end: real workloads plumbed by `palisade
//! workload add`, the agent enforcing, real TCP, UDP and ICMP echo between every ordered
//! pair of workloads and an outside namespace, each compared with `palisade trace`'s
//! verdict for that packet. Three variants: policy in the profiles, the same through global
//! policies, and the "multiple networks" extension.
//!
//! Reachable means: TCP, the server read the probe's message; UDP, the listener got the
//! datagram; ICMP, the echo reply came back. Where a probe is reachable its reply must have
//! come back too (replies pass by connection tracking).

use palisade_tests::matrix::{Matrix, Scene, WorkloadPlan};
use palisade_tests::traffic::{Observed, Probe};
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
    Probe::PING,
];
const PORTS: [u16; 3] = [3306, 3307, 80];

fn plan(
    label: &'static str,
    profiles: &'static [&'static str],
    ips: &'static [&'static str],
) -> WorkloadPlan<'static> {
    WorkloadPlan {
        label,
        profiles,
        ips,
    }
}

/// Without an agent nothing filters: what the policy will deny gets through now, so the
/// denials seen later are palisade's doing and not the plumbing's.
fn assert_open(scene: &Scene, src: &str, dst: &str, what: Probe) {
    let seen = scene.probe(src, dst, what, false);
    assert_eq!(
        seen,
        Observed::BOTH_WAYS,
        "{src} -> {dst} {what} without enforcement"
    );
}

#[test]
fn profile_and_global_policy_variants_enforce_what_trace_says() {
    require_root();
    let mut cleanup = Cleanup::new();
    let mut scene = Scene::build(
        &mut cleanup,
        "e2e-seeds",
        &[
            plan("db1", &["databases"], &["10.241.1.1"]),
            plan("db2", &["databases"], &["10.241.1.2"]),
            plan("app1", &["apps"], &["10.241.1.3"]),
            plan("app2", &["apps"], &["10.241.1.4"]),
        ],
        Some(("10.241.250", "fd41:250")),
        &PORTS,
        &PORTS,
    );
    assert_open(&scene, "outside", "db1", Probe::Tcp(3307));
    assert_open(&scene, "app1", "app2", Probe::Udp(80));
    assert_open(&scene, "db1", "app1", Probe::PING);
    scene.start_agent();

    // Variant 1: the rules are in the profiles.
    scene.store.apply(seeds::PROFILES_WITH_RULES);
    scene.wait_for_enforcement();
    let matrix = scene.matrix("seeds, policy in the profiles", &PROBES, &[false]);
    assert_seed_isolation(&matrix, "db2");

    // Variant 2: the profiles only label; global policies hold the rules.
    scene.store.apply(seeds::PROFILES_LABELS_ONLY);
    scene.store.create(seeds::GLOBAL_POLICIES);
    scene.wait_for_enforcement();
    let matrix = scene.matrix("seeds, global policies", &PROBES, &[false]);
    assert_seed_isolation(&matrix, "db2");
}

/// What the seed says the example does, whatever trace says: apps reach databases on TCP
/// 3306 only, databases reach each other on anything, nothing else reaches a database.
/// `db2` is the label of a second database.
fn assert_seed_isolation(matrix: &Matrix, db2: &str) {
    assert!(matrix.allows("app1", "db1", Probe::Tcp(3306)));
    assert!(!matrix.allows("app1", "db1", Probe::Tcp(3307)));
    assert!(!matrix.allows("app1", "db1", Probe::Udp(3306)));
    assert!(matrix.allows("db1", db2, Probe::Udp(80)));
    assert!(matrix.allows(db2, "db1", Probe::PING));
    assert!(!matrix.allows("db1", "app1", Probe::Tcp(80)));
    assert!(!matrix.allows("outside", "db1", Probe::Tcp(3306)));
    assert!(matrix.allows("app1", "outside", Probe::Tcp(80)));
}

#[test]
fn multiple_networks_enforce_what_trace_says() {
    require_root();
    let mut cleanup = Cleanup::new();
    let mut scene = Scene::build(
        &mut cleanup,
        "e2e-seeds-multi",
        &[
            plan("db1", &["databases"], &["10.241.2.1"]),
            // On the databases and backups networks, the seed's way (one network whose
            // profile has both labels) and the way without Docker networking (two profiles).
            plan("dbb", &["database-backup"], &["10.241.2.2"]),
            plan("dbbk", &["databases", "backups"], &["10.241.2.3"]),
            plan("app1", &["apps"], &["10.241.2.4"]),
            plan("app2", &["apps"], &["10.241.2.5"]),
            plan("bk1", &["backups"], &["10.241.2.6"]),
        ],
        Some(("10.241.251", "fd41:251")),
        &PORTS,
        &PORTS,
    );
    scene.start_agent();
    scene.store.apply(seeds::PROFILES_LABELS_ONLY);
    scene.store.create(seeds::GLOBAL_POLICIES);
    scene.store.create(seeds::MULTIPLE_NETWORKS);
    scene.wait_for_enforcement();
    let matrix = scene.matrix("seeds, multiple networks", &PROBES, &[false]);
    assert_seed_isolation(&matrix, "dbb");
    assert_seed_isolation(&matrix, "dbbk");
    // The backup network reaches the databases on it, on anything, and only those.
    for db in ["dbb", "dbbk"] {
        assert!(matrix.allows("bk1", db, Probe::Tcp(80)), "bk1 -> {db}");
        assert!(matrix.allows(db, "bk1", Probe::Udp(3307)), "{db} -> bk1");
    }
    assert!(!matrix.allows("bk1", "db1", Probe::Tcp(80)));
    assert!(!matrix.allows("bk1", "app1", Probe::Tcp(80)));
}
