//! Enforcement does not depend on the agent process: across `kill -9`, the time without an
//! agent, a restart that adopts the pinned maps and attachments, and a graceful SIGTERM
//! restart, not one allowed packet is lost and not one denied packet gets through. In each
//! attach mode (TCX links, clsact filters), and across switching modes between runs
//! (tcx, then clsact after the kill, then tcx again after SIGTERM), after which each
//! interface carries exactly one set of attachments, running the new agent's programs.
//!
//! Allowed: a TCP connection with a message every 10 ms (each echoed; neither side may
//! retransmit a segment) and UDP datagrams every 5 ms (each must arrive). Denied: a TCP
//! connection attempt and a UDP datagram to denied ports every 20 ms (none may arrive).

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use palisade_tests::agent_process::AgentProcess;
use palisade_tests::attachments::assert_enforcing_in;
use palisade_tests::matrix::{Scene, WorkloadPlan};
use palisade_tests::traffic::{DatagramStream, EchoStream, Probe, RepeatedProbe};
use palisade_tests::{Cleanup, require_root};

const TCP_ALLOWED: u16 = 7100;
const UDP_ALLOWED: u16 = 7101;
const TCP_DENIED: u16 = 7200;
const UDP_DENIED: u16 = 7201;
/// How long each phase (agent up, agent gone) lasts.
const PHASE: Duration = Duration::from_millis(300);

const POLICY: &str = r#"- apiVersion: v1
  kind: profile
  metadata:
    name: server
  spec:
    ingress:
    - action: allow
      protocol: tcp
      source:
        selector: role == 'client'
      destination:
        ports: [7100]
    - action: allow
      protocol: udp
      source:
        selector: role == 'client'
      destination:
        ports: [7101]
- apiVersion: v1
  kind: profile
  metadata:
    name: client
    labels: {role: client}
  spec:
    egress:
    - action: allow
"#;

/// Starts an agent in `mode` on the scene's home and waits until it adopted both workloads'
/// attachments (converted them, if the last agent ran in `last_mode`) and published the
/// store's revision; then checks what the interfaces carry.
fn restart(scene: &mut Scene, mode: &str, last_mode: &str) -> (AgentProcess, Duration) {
    let started = Instant::now();
    let mut agent = scene.home.start(&["--attach-mode", mode]);
    let (kept, converted) = if mode == last_mode {
        ("interfaces=2", "converted=0")
    } else {
        ("interfaces=0", "converted=2")
    };
    agent.wait_for(&[
        "attachments adopted",
        &format!("mode={mode}"),
        kept,
        converted,
        "removed=0",
    ]);
    let revision = scene.store.revision();
    agent.wait_for(&["policy published", &format!("revision={revision}")]);
    let took = started.elapsed();
    assert_enforcing_in(mode, &interfaces(scene), scene.home.bpffs.path());
    (agent, took)
}

fn interfaces(scene: &Scene) -> Vec<&str> {
    scene
        .workloads
        .iter()
        .map(|w| w.interface.as_str())
        .collect()
}

#[test]
fn kill_and_restart_lose_no_allowed_packet_and_pass_no_denied_one() {
    kill_and_restart(["tcx", "tcx", "tcx"], ["10.244.1.1", "10.244.1.2"]);
}

#[test]
fn kill_and_restart_with_clsact_lose_no_allowed_packet_and_pass_no_denied_one() {
    kill_and_restart(["clsact", "clsact", "clsact"], ["10.244.2.1", "10.244.2.2"]);
}

#[test]
fn switching_tcx_clsact_tcx_across_restarts_loses_no_allowed_packet_and_passes_no_denied_one() {
    kill_and_restart(["tcx", "clsact", "tcx"], ["10.244.3.1", "10.244.3.2"]);
}

/// The first agent runs in `modes[0]`, the one after `kill -9` in `modes[1]`, the one after
/// SIGTERM in `modes[2]`. The client and server have the addresses `ips` (host routes:
/// tests running at once need addresses of their own).
fn kill_and_restart(modes: [&str; 3], ips: [&str; 2]) {
    require_root();
    let mut cleanup = Cleanup::new();
    let mut scene = Scene::build(
        &mut cleanup,
        "e2e-restart",
        &[
            WorkloadPlan {
                label: "client",
                profiles: &["client"],
                ips: &[ips[0]],
            },
            WorkloadPlan {
                label: "server",
                profiles: &["server"],
                ips: &[ips[1]],
            },
        ],
        None,
        &[TCP_ALLOWED, TCP_DENIED],
        &[UDP_ALLOWED, UDP_DENIED],
    );
    scene.agent = Some(scene.home.start(&["--attach-mode", modes[0]]));
    scene.store.apply(POLICY);
    scene.wait_for_enforcement();
    let mode = format!("mode={}", modes[0]);
    let names: Vec<String> = interfaces(&scene).iter().map(|i| i.to_string()).collect();
    for interface in names {
        let interface = format!("interface={interface}");
        scene
            .agent()
            .wait_for_ever_said(&["enforcing on workload interface", &interface, &mode]);
    }
    assert_enforcing_in(modes[0], &interfaces(&scene), scene.home.bpffs.path());
    let agent = scene.agent.take().expect("the agent");

    let server = scene.peer("server");
    let (address, inbox) = (
        server.ip(false).expect("an address"),
        server.services.inbox(),
    );
    let client = scene.peer("client").netns.clone();
    let stream = EchoStream::start(
        &client,
        SocketAddr::new(address, TCP_ALLOWED),
        Duration::from_millis(10),
    );
    let datagrams = DatagramStream::start(
        &client,
        SocketAddr::new(address, UDP_ALLOWED),
        Duration::from_millis(5),
    );
    let every = Duration::from_millis(20);
    let denied_tcp = RepeatedProbe::start(
        &client,
        address,
        Probe::Tcp(TCP_DENIED),
        inbox.clone(),
        every,
    );
    let denied_udp = RepeatedProbe::start(
        &client,
        address,
        Probe::Udp(UDP_DENIED),
        inbox.clone(),
        every,
    );
    thread::sleep(PHASE);

    // kill -9: nothing is cleaned up; the pins keep programs, links and maps.
    agent.kill();
    let killed = Instant::now();
    thread::sleep(PHASE);
    let gap_after_kill = killed..Instant::now();
    let (agent, took_kill) = restart(&mut scene, modes[1], modes[0]);
    thread::sleep(PHASE);

    // SIGTERM: the agent stops and leaves everything pinned, as after kill -9.
    let status = agent.terminate();
    assert!(
        status.success(),
        "the agent's exit status after SIGTERM: {status}"
    );
    let terminated = Instant::now();
    thread::sleep(PHASE);
    let gap_after_term = terminated..Instant::now();
    let (agent, took_term) = restart(&mut scene, modes[2], modes[1]);
    scene.agent = Some(agent);
    thread::sleep(PHASE);

    let datagrams = datagrams.stop();
    let stream = stream.stop();
    let denied = [denied_tcp.stop(), denied_udp.stop()];

    let lost: Vec<u64> = datagrams
        .sent
        .iter()
        .filter(|(token, _)| inbox.get(*token).is_none())
        .map(|(token, _)| *token)
        .collect();
    let arrived_in = |gap: &std::ops::Range<Instant>| {
        datagrams
            .sent
            .iter()
            .filter_map(|(token, _)| inbox.get(*token))
            .filter(|a| gap.contains(&a.at))
            .count()
    };
    let server_side = scene
        .peer("server")
        .services
        .retransmissions_to(stream.local.expect("the stream's address"))
        .expect("the server side of the stream");
    let attempts: usize = denied.iter().map(Vec::len).sum();
    println!(
        "restart {modes:?}: agents up again {took_kill:?} after kill -9 and {took_term:?} after SIGTERM; \
         {} datagrams ({} while no agent ran), {} lost; {} TCP messages, {} unanswered, \
         retransmissions {} (client) {} (server), longest round trip {:?}; {attempts} denied \
         attempts, {} through",
        datagrams.sent.len(),
        arrived_in(&gap_after_kill) + arrived_in(&gap_after_term),
        lost.len(),
        stream.sent.len(),
        stream.unanswered(),
        stream.retransmissions,
        server_side,
        stream.longest_round_trip(),
        inbox.count_on(TCP_DENIED) + inbox.count_on(UDP_DENIED),
    );

    assert!(lost.is_empty(), "{} allowed datagrams lost", lost.len());
    assert!(arrived_in(&gap_after_kill) > 0 && arrived_in(&gap_after_term) > 0);
    assert_eq!(stream.error, None);
    assert_eq!(stream.unanswered(), 0, "allowed TCP messages lost");
    assert_eq!(stream.retransmissions, 0, "the client retransmitted");
    assert_eq!(server_side, 0, "the server retransmitted");
    assert!(attempts > 50, "only {attempts} denied attempts");
    assert!(
        denied
            .iter()
            .flatten()
            .all(|seen| !seen.reached && !seen.replied)
    );
    assert_eq!(inbox.count_on(TCP_DENIED), 0, "denied TCP got through");
    assert_eq!(inbox.count_on(UDP_DENIED), 0, "denied UDP got through");
}
