//! `palisade agent` on etcd, as real processes: it keeps running and reports itself
//! degraded while etcd is down, catches up within 2 s of etcd's return, resyncs to the
//! right state after etcd compacted the history it would have resumed from, and connects
//! over TLS with a client certificate (and refuses to start without one).
//!
//! It also starts while etcd is down: it adopts what the previous agent pinned, so a
//! restart during an outage does not stop enforcement, and it follows etcd once it is
//! back. Under steady traffic, neither a 10 s outage nor a restart during one loses an
//! allowed packet or lets a denied one through.

use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use palisade_tests::agent_process::{AgentHome, AgentProcess};
use palisade_tests::matrix::Scene;
use palisade_tests::palisade_cli::Datastore;
use palisade_tests::steady_traffic::{
    POLICY as TRAFFIC_POLICY, SteadyTraffic, TCP_PORTS, UDP_PORTS, client_and_server,
};
use palisade_tests::{Cleanup, require_root};

#[path = "../../agent/tests/common/etcd.rs"]
mod etcd;

use etcd::{EtcdServer, TestPki};

/// What the agent says while etcd cannot be read, at start as later.
const DEGRADED: &str = "datastore unavailable; keeping the last known policy";

fn profile(name: &str) -> String {
    format!("- apiVersion: v1\n  kind: profile\n  metadata: {{name: {name}}}\n")
}

const POLICY: &str =
    "- apiVersion: v1\n  kind: policy\n  metadata: {name: late}\n  spec: {selector: all()}\n";

#[test]
fn the_agent_rides_out_an_etcd_outage_and_catches_up_within_2s() {
    require_root();
    let mut server = EtcdServer::start();
    let store = Datastore::at(&server.url());
    let home = AgentHome::new(store.url(), "node1");
    let mut agent = home.start(&[]);
    agent.wait_for(&["policy view updated", "profiles=0"]);
    store.apply(&profile("databases"));
    agent.wait_for(&["policy view updated", "profiles=1", "policies=0"]);

    server.stop();
    let stopped = Instant::now();
    agent.wait_for(&["WARN", DEGRADED]);
    thread::sleep(Duration::from_secs(10).saturating_sub(stopped.elapsed()));
    assert!(
        agent.still_running(),
        "the agent exited while etcd was down"
    );

    server.restart();
    let back = Instant::now();
    store.apply(POLICY);
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
        agent.count(&["datastore reachable again"]) > 0,
        "{}",
        agent.log()
    );
    assert!(agent.terminate().success());
}

#[test]
fn a_compaction_past_the_agents_revision_ends_in_a_resync_to_the_right_state() {
    require_root();
    let mut server = EtcdServer::start();
    let port = server.client_port();
    let store = Datastore::at(&server.url());
    let home = AgentHome::new(store.url(), "node1");
    let mut agent = home.start(&[]);
    agent.wait_for(&["policy view updated", "profiles=0"]);
    store.apply(&profile("a"));
    agent.wait_for(&["policy view updated", "profiles=1"]);

    // Hide etcd from the agent (another client port, same data), change things behind its
    // back and compact the history it would resume from.
    server.stop();
    agent.wait_for(&[DEGRADED]);
    server.restart_on(etcd::free_port());
    let hidden = Datastore::at(&server.url());
    hidden.apply(&(profile("b") + &profile("c")));
    hidden.palisade_ok(&["delete", "profile", "a"], "");
    hidden.apply(POLICY);
    let revision = server.revision();
    server.etcdctl(&["compact", &revision.to_string()]);

    server.restart_on(port);
    agent.wait_for(&[
        "policy view updated",
        "profiles=2",
        "policies=1",
        &format!("revision={revision}"),
    ]);
    assert!(agent.terminate().success());
}

#[test]
fn the_agent_connects_over_tls_with_a_client_certificate_and_not_without() {
    require_root();
    let pki = TestPki::generate();
    let server = EtcdServer::start_tls(&pki);
    let url = server.url();
    let files: Vec<PathBuf> = ["ca.pem", "client.pem", "client-key.pem"]
        .iter()
        .map(|f| pki.path(f))
        .collect();
    let files: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    let tls = [
        "--etcd-ca",
        &files[0],
        "--etcd-cert",
        &files[1],
        "--etcd-key",
        &files[2],
    ];
    let home = AgentHome::new(&url, "node1").with_datastore_options(&tls);
    let mut agent = home.start(&[]);
    agent.wait_for(&["policy view updated", "profiles=0"]);
    let mut apply = tls.to_vec();
    apply.extend(["apply", "-f", "-"]);
    Datastore::at(&url).palisade_ok(&apply, &profile("secure"));
    agent.wait_for(&["policy view updated", "profiles=1"]);
    assert!(agent.terminate().success());

    // A certificate problem is configuration, not an outage: the agent does not start.
    let home = AgentHome::new(&url, "n").with_datastore_options(&tls[..2]);
    let mut refused = home.start(&[]);
    let status = refused.wait_exit();
    let log = refused.log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("cannot open the datastore"), "{log}");
    assert!(log.contains("client certificate"), "{log}");
    assert!(!log.contains("agent starting"), "{log}");
}

#[test]
fn the_agent_starts_while_etcd_is_down_and_follows_it_once_it_is_up() {
    require_root();
    let mut server = EtcdServer::start();
    let store = Datastore::at(&server.url());
    store.apply(&profile("early"));
    server.stop();

    let home = AgentHome::new(store.url(), "node1");
    let mut agent = home.start(&[]);
    agent.wait_for(&["WARN", DEGRADED]);
    // The dataplane is up without the datastore: programs loaded, pins adopted.
    agent.wait_for_ever_said(&["maps adopted"]);
    agent.wait_for_ever_said(&["attachments adopted"]);
    thread::sleep(Duration::from_secs(3));
    assert!(
        agent.still_running(),
        "the agent exited while etcd was down:\n{}",
        agent.log()
    );
    assert_eq!(agent.count(&["policy view updated"]), 0, "{}", agent.log());
    let warnings = agent.count(&["WARN", DEGRADED]);
    assert!(
        warnings >= 2,
        "it said degraded {warnings} times: not retrying?"
    );

    server.restart();
    let back = Instant::now();
    agent.wait_for(&["datastore reachable again"]);
    let revision = server.revision();
    agent.wait_for(&[
        "policy view updated",
        "profiles=1",
        &format!("revision={revision}"),
    ]);
    agent.wait_for(&["policy published", &format!("revision={revision}")]);
    eprintln!(
        "started degraded; policy published {:?} after etcd returned",
        back.elapsed()
    );
    assert!(agent.terminate().success());
}

/// A client and a server workload plumbed by `palisade workload add` on etcd, with the
/// policy above applied and an agent enforcing it.
fn enforcing_scene(cleanup: &mut Cleanup, server: &EtcdServer, node: &str, subnet: &str) -> Scene {
    let ips = [format!("{subnet}.1"), format!("{subnet}.2")];
    let mut scene = Scene::build_on(
        Datastore::at(&server.url()),
        cleanup,
        node,
        &client_and_server(&[&ips[0], &ips[1]]),
        None,
        &TCP_PORTS,
        &UDP_PORTS,
    );
    scene.store.apply(TRAFFIC_POLICY);
    scene.start_agent();
    scene.wait_for_enforcement();
    scene
}

/// How long etcd stays down under traffic.
const OUTAGE: Duration = Duration::from_secs(10);

#[test]
fn a_10s_etcd_outage_under_steady_traffic_loses_nothing_allowed_and_passes_nothing_denied() {
    require_root();
    let mut cleanup = Cleanup::new();
    let mut server = EtcdServer::start();
    let mut scene = enforcing_scene(&mut cleanup, &server, "etcd-outage", "10.236.2");
    let traffic = SteadyTraffic::start(&scene);
    thread::sleep(Duration::from_millis(500));

    server.stop();
    let stopped = Instant::now();
    scene.agent().wait_for(&["WARN", DEGRADED]);
    thread::sleep(OUTAGE.saturating_sub(stopped.elapsed()));
    assert!(scene.agent().still_running(), "the agent exited");
    server.restart();
    let down = stopped.elapsed();
    scene.agent().wait_for(&["datastore reachable again"]);
    thread::sleep(Duration::from_millis(500));

    let report = traffic.stop(&scene);
    report.check(&format!("etcd down {down:?} under traffic"));
    assert!(
        report.datagrams.sent.len() > 1000,
        "only {} datagrams",
        report.datagrams.sent.len()
    );
    assert!(
        report.denied.len() > 500,
        "only {} denied attempts",
        report.denied.len()
    );
}

#[test]
fn an_agent_restarted_while_etcd_is_down_keeps_enforcing_and_catches_up() {
    require_root();
    let mut cleanup = Cleanup::new();
    let mut server = EtcdServer::start();
    let mut scene = enforcing_scene(&mut cleanup, &server, "etcd-restart", "10.236.1");
    let traffic = SteadyTraffic::start(&scene);
    thread::sleep(Duration::from_millis(300));

    server.stop();
    scene.agent().wait_for(&["WARN", DEGRADED]);
    let agent = scene.agent.take().expect("the agent");
    assert!(agent.terminate().success());
    let mut agent: AgentProcess = scene.home.start(&[]);
    agent.wait_for(&["WARN", DEGRADED]);
    agent.wait_for_ever_said(&["attachments adopted", "interfaces=2", "removed=0"]);
    // Enforcing with what it adopted; nothing to follow yet.
    thread::sleep(Duration::from_secs(2));
    assert!(agent.still_running(), "{}", agent.log());
    assert_eq!(agent.count(&["policy published"]), 0, "{}", agent.log());

    server.restart();
    let back = Instant::now();
    agent.wait_for(&["datastore reachable again"]);
    let revision = server.revision();
    agent.wait_for(&["policy published", &format!("revision={revision}")]);
    let caught_up = back.elapsed();
    // And it follows changes again.
    scene.store.apply(&profile("after-the-outage"));
    let revision = server.revision();
    agent.wait_for(&["policy view updated", &format!("revision={revision}")]);
    scene.agent = Some(agent);
    thread::sleep(Duration::from_millis(300));

    let report = traffic.stop(&scene);
    report.check("agent restarted while etcd was down");
    eprintln!("restarted agent published etcd's revision {caught_up:?} after etcd returned");
    assert!(
        report.denied.len() > 100,
        "only {} denied attempts",
        report.denied.len()
    );
}
