//! `palisade flows` on real traffic between workloads plumbed by `palisade workload add`:
//! new flows allowed and packets denied appear with both endpoints' names, ports, the
//! deciding rule and the kernel's time; the filters; a burst larger than the ring buffer
//! shows as lost events; and after an agent restart, drops reported while no agent ran
//! carry the kernel's time and the rule names the earlier agent wrote.

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use palisade_tests::matrix::{Scene, WorkloadPlan};
use palisade_tests::traffic::{Datagram, in_netns, send_datagram};
use palisade_tests::{Cleanup, palisade_binary, require_root};
use serde_json::Value;

const ALLOWED: u16 = 7401;
const DENIED: u16 = 7402;
const BURST_PORT: u16 = 7403;
/// How long records get to show up in the stream (the agent reads the ring buffer as soon
/// as it is told; this bounds a stuck agent, it is not a speed requirement).
const PATIENCE: Duration = Duration::from_secs(20);
/// How far a record's time may be from the test's own clock readings around the send:
/// both are the machine's wall clock, so only the conversion's error counts.
const CLOCK_TOLERANCE: Duration = Duration::from_millis(200);

const POLICY: &str = r#"- apiVersion: v1
  kind: profile
  metadata:
    name: client
  spec:
    egress:
    - action: allow
- apiVersion: v1
  kind: profile
  metadata:
    name: server
  spec:
    ingress:
    - action: allow
      protocol: udp
      destination:
        ports: [7401]
    - action: deny
      protocol: udp
"#;

fn scene(cleanup: &mut Cleanup, node: &str, client: &'static str, server: &'static str) -> Scene {
    Scene::build(
        cleanup,
        node,
        &[
            WorkloadPlan {
                label: "client",
                profiles: &["client"],
                ips: &[client],
            },
            WorkloadPlan {
                label: "server",
                profiles: &["server"],
                ips: &[server],
            },
        ],
        None,
        &[],
        &[ALLOWED, DENIED],
    )
}

fn start(scene: &mut Scene, extra: &[&str]) {
    scene.agent = Some(scene.home.start(extra));
    scene.store.apply(POLICY);
    scene.wait_for_enforcement();
}

/// `palisade flows -o json ARGS` (without --follow) on the scene's agent: its records.
fn flows(scene: &Scene, args: &[&str]) -> Vec<Value> {
    let out = Command::new(palisade_binary())
        .args(["--datastore", scene.store.url(), "flows", "-o", "json"])
        .arg("--run-dir")
        .arg(scene.home.run_dir())
        .args(args)
        .output()
        .expect("run palisade flows");
    assert!(
        out.status.success(),
        "palisade flows {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Waits until `flows` shows records `wanted` accepts; returns them.
fn wait_for(scene: &Scene, args: &[&str], wanted: impl Fn(&Value) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let all = flows(scene, args);
        let found: Vec<Value> = all.iter().filter(|r| wanted(r)).cloned().collect();
        if !found.is_empty() {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "no such record in {PATIENCE:?}; the stream holds:\n{}",
            all.iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        );
        thread::sleep(Duration::from_millis(100));
    }
}

fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).expect("after 1970").as_nanos() as u64
}

/// Asserts that `record`'s time lies between the test's readings `before` and `after`.
fn assert_time_between(record: &Value, before: SystemTime, after: SystemTime) {
    let time = record["time_ns"].as_u64().expect("time_ns");
    let slack = CLOCK_TOLERANCE.as_nanos() as u64;
    assert!(
        time + slack >= unix_ns(before) && time <= unix_ns(after) + slack,
        "record time {time} ({}) is not between {} and {}: {record}",
        record["time"],
        unix_ns(before),
        unix_ns(after)
    );
}

fn to_port(scene: &Scene, port: u16) -> impl Fn(&Value) -> bool + use<> {
    let server = scene
        .peer("server")
        .ip(false)
        .expect("an address")
        .to_string();
    move |r: &Value| {
        r["type"] == "flow"
            && r["dst"]["address"] == server.as_str()
            && r["dst"]["port"] == u64::from(port)
    }
}

fn send(scene: &Scene, port: u16) {
    let server = scene.peer("server").ip(false).expect("an address");
    send_datagram(
        &scene.peer("client").netns,
        SocketAddr::new(server, port),
        &Datagram {
            len: 32,
            ..Datagram::default()
        },
    );
}

#[test]
fn allowed_and_denied_flows_appear_with_names_ports_rules_and_kernel_times() {
    require_root();
    let mut cleanup = Cleanup::new();
    let mut scene = scene(&mut cleanup, "e2e-flows", "10.246.1.1", "10.246.1.2");
    start(&mut scene, &[]);
    let (client, server) = (
        scene.workloads[0].name.clone(),
        scene.workloads[1].name.clone(),
    );

    let before = SystemTime::now();
    send(&scene, ALLOWED);
    send(&scene, DENIED);
    let after = SystemTime::now();

    let to_allowed = to_port(&scene, ALLOWED);
    let allowed = wait_for(&scene, &[], |r| {
        to_allowed(r) && r["event"] == "new_flow" && r["direction"] == "ingress"
    });
    let a = &allowed[0];
    assert_eq!(a["verdict"], "allow", "{a}");
    assert_eq!(a["protocol"], "udp", "{a}");
    assert_eq!(a["src"]["endpoint"], client.as_str(), "{a}");
    assert_eq!(a["dst"]["endpoint"], server.as_str(), "{a}");
    assert!(a["src"]["port"].as_u64().is_some_and(|p| p > 0), "{a}");
    assert_eq!(a["rule"], "profile server ingress rule 1 (allow)", "{a}");
    assert_eq!(a["policy"], "server", "{a}");
    assert_time_between(a, before, after);
    // The client's egress opened the same flow on its own interface.
    wait_for(&scene, &[], |r| {
        to_allowed(r)
            && r["direction"] == "egress"
            && r["rule"] == "profile client egress rule 1 (allow)"
    });

    let to_denied = to_port(&scene, DENIED);
    let denied = wait_for(&scene, &[], |r| to_denied(r) && r["event"] == "drop");
    let d = &denied[0];
    assert_eq!(d["verdict"], "deny", "{d}");
    assert_eq!(d["reason"], "policy", "{d}");
    assert_eq!(d["src"]["endpoint"], client.as_str(), "{d}");
    assert_eq!(d["dst"]["endpoint"], server.as_str(), "{d}");
    assert_eq!(d["rule"], "profile server ingress rule 2 (deny)", "{d}");
    assert_time_between(d, before, after);

    // Filters: by verdict, by endpoint (the client's name), by policy or profile.
    let deny_only = flows(&scene, &["--verdict", "deny"]);
    assert!(!deny_only.is_empty());
    assert!(
        deny_only
            .iter()
            .all(|r| r["type"] == "lost" || r["verdict"] == "deny"),
        "{deny_only:?}"
    );
    let of_client = flows(&scene, &["--endpoint", &client]);
    assert!(of_client.iter().any(&to_denied), "{of_client:?}");
    let by_client_profile = flows(&scene, &["--policy", "client"]);
    assert!(!by_client_profile.is_empty());
    assert!(
        by_client_profile
            .iter()
            .all(|r| r["type"] == "lost" || r["policy"] == "client"),
        "{by_client_profile:?}"
    );
    let out = Command::new(palisade_binary())
        .args([
            "--datastore",
            scene.store.url(),
            "flows",
            "--endpoint",
            "nobody",
        ])
        .arg("--run-dir")
        .arg(scene.home.run_dir())
        .output()
        .expect("run palisade flows");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--endpoint 'nobody'"),
        "{out:?}"
    );

    // The text form names the same.
    let text = Command::new(palisade_binary())
        .args([
            "--datastore",
            scene.store.url(),
            "flows",
            "--verdict",
            "deny",
        ])
        .arg("--run-dir")
        .arg(scene.home.run_dir())
        .output()
        .expect("run palisade flows");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.lines()
            .any(|l| l.contains(&format!("{server} 10.246.1.2:{DENIED}"))
                && l.contains("profile server ingress rule 2 (deny) (policy)")),
        "{text}"
    );
}

#[test]
fn a_burst_larger_than_the_ring_buffer_shows_as_lost_events() {
    require_root();
    let mut cleanup = Cleanup::new();
    let mut scene = scene(&mut cleanup, "e2e-flows-burst", "10.246.2.1", "10.246.2.2");
    // A ring of 64 KiB holds about 800 events.
    start(&mut scene, &["--map-size", "PAL_EVENTS=65536"]);
    const BURST: u64 = 3000;
    // The agent is stopped so that nothing reads the ring while the burst fills it.
    scene.agent().signal(libc::SIGSTOP);
    let server = scene.peer("server").ip(false).expect("an address");
    in_netns(&scene.peer("client").netns, || {
        let socket = UdpSocket::bind("0.0.0.0:0").expect("a UDP socket");
        for _ in 0..BURST {
            socket
                .send_to(&[0u8; 16], SocketAddr::new(server, BURST_PORT))
                .expect("send");
        }
    });
    scene.agent().signal(libc::SIGCONT);
    let lost = wait_for(&scene, &[], |r| {
        r["type"] == "lost" && r["source"] == "kernel"
    });
    let lost_events: u64 = lost.iter().map(|r| r["events"].as_u64().unwrap_or(0)).sum();
    let shown = flows(&scene, &[])
        .iter()
        .filter(|r| to_port(&scene, BURST_PORT)(r) && r["event"] == "drop")
        .count() as u64;
    println!("burst of {BURST}: {shown} drops shown, {lost_events} events lost");
    assert!(lost_events > 0);
    // Every denied packet of the burst is either in the stream or counted as lost.
    assert!(
        shown + lost_events >= BURST,
        "{shown} shown + {lost_events} lost < {BURST}"
    );
    assert!(lost[0]["since"].is_string(), "{}", lost[0]);
}

#[test]
fn drops_reported_while_no_agent_ran_carry_the_kernel_time_and_the_rule() {
    require_root();
    let mut cleanup = Cleanup::new();
    let mut scene = scene(
        &mut cleanup,
        "e2e-flows-restart",
        "10.246.3.1",
        "10.246.3.2",
    );
    start(&mut scene, &[]);
    let first = scene.home.pinned_config().generation();
    scene.agent.take().expect("an agent").terminate();

    // The programs go on enforcing and reporting into the pinned ring buffer.
    let before = SystemTime::now();
    send(&scene, DENIED);
    let after = SystemTime::now();
    // Long enough that the next agent's start time could not pass for the drop's.
    thread::sleep(Duration::from_secs(2));
    scene.agent = Some(scene.home.start(&[]));
    scene.agent().wait_for(&["serving palisade flows"]);
    let to_denied = to_port(&scene, DENIED);
    let denied = wait_for(&scene, &[], |r| to_denied(r) && r["event"] == "drop");
    let d = &denied[0];
    assert_eq!(d["generation"], u64::from(first), "{d}");
    assert_eq!(d["rule"], "profile server ingress rule 2 (deny)", "{d}");
    assert_time_between(d, before, after);
    // And the log line says the same.
    let line = scene
        .agent()
        .wait_for_ever_said(&["packet dropped", &format!("dst_port={DENIED}")]);
    assert!(
        line.contains("rule=\"profile server ingress rule 2 (deny)\""),
        "{line}"
    );
}
