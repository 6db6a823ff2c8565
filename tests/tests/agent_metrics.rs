//! The agent's health and metrics endpoints, as an operator's tools see them: a real
//! Prometheus server scrapes a real agent enforcing between workloads plumbed by
//! `palisade workload add`, and finds the denied packets on the right endpoint; `/readyz`
//! answers 503 until the policy is published (an agent started while etcd is down), 200
//! after; an address in use is a configuration error that stops the agent before it
//! touches the dataplane, `off` turns an endpoint off, and the idle agent stays live.

use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use palisade_common::ABI_VERSION;
use palisade_tests::agent_process::{AgentHome, PATIENCE};
use palisade_tests::http;
use palisade_tests::matrix::Scene;
use palisade_tests::palisade_cli::Datastore;
use palisade_tests::prometheus::{JOB, Prometheus};
use palisade_tests::steady_traffic::{
    POLICY, TCP_PORTS, UDP_ALLOWED, UDP_DENIED, UDP_PORTS, client_and_server,
};
use palisade_tests::traffic::{Datagram, send_datagram};
use palisade_tests::{Cleanup, require_root};

#[path = "../../agent/tests/common/etcd.rs"]
mod etcd;

use etcd::EtcdServer;

/// How often the test's Prometheus scrapes: short, so that the test waits little.
const SCRAPE_INTERVAL: Duration = Duration::from_millis(500);

/// `promtool check metrics` (Prometheus' own linter: format, names, units) on `text`.
fn promtool_lint(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool (Debian's prometheus package; `cargo xtask bootstrap` installs it)");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("promtool's stdin");
        stdin.write_all(text.as_bytes()).expect("write to promtool");
    }
    let out = child.wait_with_output().expect("wait for promtool");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until `/readyz` at `health` answers 200, and returns that answer. The agent logs
/// what it published and attached a moment before it reports it to the health server, so
/// a test that saw the log lines may still find the report on its way.
fn ready(health: SocketAddr) -> http::Response {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let answer = http::get(health, "/readyz", &[]);
        if answer.status == 200 {
            return answer;
        }
        assert_eq!(answer.status, 503, "{}", answer.body);
        assert!(
            Instant::now() < deadline,
            "not ready within {PATIENCE:?}: {}",
            answer.body
        );
        thread::sleep(Duration::from_millis(50));
    }
}

fn denied_to(endpoint: &str) -> String {
    format!(
        "palisade_endpoint_packets_total{{job=\"{JOB}\",endpoint=\"{endpoint}\",direction=\"ingress\",verdict=\"denied\"}}"
    )
}

fn allowed_to(endpoint: &str) -> String {
    format!(
        "palisade_endpoint_packets_total{{job=\"{JOB}\",endpoint=\"{endpoint}\",direction=\"ingress\",verdict=\"allowed\"}}"
    )
}

#[test]
fn prometheus_scrapes_the_agent_and_sees_denied_packets_on_the_right_endpoint() {
    require_root();
    let mut cleanup = Cleanup::new();
    let mut scene = Scene::build(
        &mut cleanup,
        "metrics",
        &client_and_server(&["10.238.1.1", "10.238.1.2"]),
        None,
        &TCP_PORTS,
        &UDP_PORTS,
    );
    scene.store.apply(POLICY);
    scene.start_agent();
    scene.wait_for_enforcement();
    let health = scene.agent().serving("/readyz");
    let metrics = scene.agent().serving("/metrics");
    ready(health);
    let exposition = http::get(metrics, "/metrics", &[]);
    assert_eq!(exposition.status, 200, "{}", exposition.body);
    assert!(
        exposition
            .content_type
            .starts_with("text/plain; version=0.0.4"),
        "{}",
        exposition.content_type
    );
    promtool_lint(&exposition.body);

    let prometheus = Prometheus::start(&[metrics], SCRAPE_INTERVAL);
    prometheus.wait_for(&format!("up{{job=\"{JOB}\"}}"), "the agent is up", |v| {
        v == 1.0
    });
    let build = prometheus.query("palisade_build_info");
    assert_eq!(build.len(), 1, "{build:?}");
    assert_eq!(build[0].labels["abi"], ABI_VERSION.to_string(), "{build:?}");
    assert_eq!(
        build[0].labels["version"],
        env!("CARGO_PKG_VERSION"),
        "{build:?}"
    );

    let (client, server) = (&scene.workloads[0], &scene.workloads[1]);
    let series = |expr: &str, what: &str| prometheus.wait_for(expr, what, |_| true);
    let denied_before = series(&denied_to(&server.name), "the server's denied packets");
    let client_denied_before = series(&denied_to(&client.name), "the client's denied packets");
    let allowed_before = series(&allowed_to(&server.name), "the server's allowed packets");
    let policy_drops_before = series(
        "palisade_dropped_packets_total{reason=\"policy\"}",
        "drops by policy",
    );

    // Denied: UDP to the server's closed port, one packet each, never retransmitted.
    const DENIED: u64 = 20;
    let server_ip = server.ips[0];
    for _ in 0..DENIED {
        send_datagram(
            &client.netns.name,
            SocketAddr::new(server_ip, UDP_DENIED),
            &Datagram {
                len: 64,
                ..Datagram::default()
            },
        );
    }
    // Allowed: UDP to the open port, each one seen arriving.
    const ALLOWED: u64 = 5;
    let inbox = scene.peer("server").services.inbox();
    for _ in 0..ALLOWED {
        let token = send_datagram(
            &client.netns.name,
            SocketAddr::new(server_ip, UDP_ALLOWED),
            &Datagram {
                len: 64,
                ..Datagram::default()
            },
        );
        assert!(
            inbox.wait(token, PATIENCE).is_some(),
            "an allowed datagram did not arrive"
        );
    }

    let denied_after = prometheus.wait_for(
        &denied_to(&server.name),
        "the server's denied packets counted",
        |v| v >= denied_before + DENIED as f64,
    );
    prometheus.wait_for(
        &allowed_to(&server.name),
        "the server's allowed packets counted",
        |v| v >= allowed_before + ALLOWED as f64,
    );
    prometheus.wait_for(
        "palisade_dropped_packets_total{reason=\"policy\"}",
        "drops by policy counted",
        |v| v >= policy_drops_before + DENIED as f64,
    );
    // Nothing was sent to the client: its denied series stays where it was.
    let client_denied_after = series(&denied_to(&client.name), "the client's denied packets");
    assert_eq!(client_denied_after, client_denied_before);
    eprintln!(
        "server ingress denied {denied_before} -> {denied_after} after {DENIED} denied datagrams"
    );

    // The same counters as `palisade stats`, which reads the same maps.
    let stats = scene.home.stats(Some(&server.name));
    let ingress = stats.endpoint(&server.name, "ingress");
    assert!(
        ingress.denied_packets as f64 >= denied_after,
        "palisade stats: {}; prometheus: {denied_after}",
        stats.text
    );
    let samples = prometheus.query("palisade_map_entries{map=\"PAL_LOCAL\"}");
    assert!(
        samples.len() == 1 && samples[0].value >= 2.0,
        "the two endpoints' PAL_LOCAL entries: {samples:?}"
    );
    let conntrack = prometheus.query("palisade_conntrack_entries");
    assert_eq!(conntrack.len(), 1, "{conntrack:?}");
}

/// What the agent says while etcd cannot be read.
const DEGRADED: &str = "datastore unavailable; keeping the last known policy";

#[test]
fn readyz_answers_503_before_the_first_publish_and_200_after() {
    require_root();
    let mut etcd = EtcdServer::start();
    let store = Datastore::at(&etcd.url());
    store.apply("- apiVersion: v1\n  kind: profile\n  metadata: {name: early}\n");
    etcd.stop();

    let home = AgentHome::new(store.url(), "node1");
    let mut agent = home.start(&[]);
    agent.wait_for(&["WARN", DEGRADED]);
    let health = agent.serving("/readyz");
    let metrics = agent.serving("/metrics");
    let alive = http::get(health, "/healthz", &[]);
    assert_eq!(alive.status, 200, "{}", alive.body);
    let not_ready = http::get(health, "/readyz", &[]);
    assert_eq!(not_ready.status, 503, "{}", not_ready.body);
    assert!(
        not_ready
            .body
            .contains("no view of the datastore yet (datastore degraded)"),
        "{}",
        not_ready.body
    );
    let exposition = http::get(metrics, "/metrics", &[]).body;
    for line in [
        "palisade_datastore_state{state=\"degraded\"} 1",
        "palisade_ready 0",
    ] {
        assert!(
            exposition.lines().any(|l| l == line),
            "{line}:\n{exposition}"
        );
    }
    assert!(
        !exposition.contains("palisade_policy_revision"),
        "{exposition}"
    );
    // Retrying, still not ready.
    agent.wait_for(&["WARN", DEGRADED]);
    assert_eq!(http::get(health, "/readyz", &[]).status, 503);

    etcd.restart();
    let revision = etcd.revision();
    // Not ready until the policy is published: 503 every time until the first 200.
    let ready = ready(health);
    assert!(
        ready
            .body
            .contains(&format!("the policy of revision {revision} is in force")),
        "{}",
        ready.body
    );
    agent.wait_for_ever_said(&["policy published", &format!("revision={revision}")]);
    let exposition = http::get(metrics, "/metrics", &[]).body;
    for line in [
        "palisade_datastore_state{state=\"in_sync\"} 1".to_string(),
        format!("palisade_policy_revision {revision}"),
        format!("palisade_datastore_revision {revision}"),
        "palisade_ready 1".to_string(),
    ] {
        assert!(
            exposition.lines().any(|l| l == line),
            "{line}:\n{exposition}"
        );
    }
    assert!(agent.terminate().success());
}

#[test]
fn an_address_in_use_is_refused_off_turns_metrics_off_and_an_idle_agent_stays_live() {
    require_root();
    let store = Datastore::new();
    let taken = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let address = taken.local_addr().expect("its address").to_string();
    let home = AgentHome::new(store.url(), "node1");
    let mut refused = home.start(&["--metrics-address", &address]);
    let status = refused.wait_exit();
    let log = refused.log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("cannot serve health and metrics"), "{log}");
    assert!(
        log.contains(&format!("cannot listen on {address} (--metrics-address)")),
        "{log}"
    );
    assert!(!log.contains("eBPF programs loaded"), "{log}");

    let mut agent = home.start(&["--metrics-address", "off", "--liveness-timeout", "5"]);
    let health = agent.serving("/healthz");
    agent.wait_for_ever_said(&["policy published"]);
    // The idle loop keeps beating: live for more than two timeouts in a row.
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(12) {
        let alive = http::get(health, "/healthz", &[]);
        assert_eq!(alive.status, 200, "{}", alive.body);
        thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        agent.count(&["serving health and metrics", "/metrics"]),
        0,
        "{}",
        agent.log()
    );
    assert_eq!(http::get(health, "/healthz", &[]).status, 200);
    ready(health);
    assert_eq!(http::get(health, "/metrics", &[]).status, 404);
    assert!(agent.terminate().success());
}
