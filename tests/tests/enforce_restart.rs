//! Enforcement does not depend on the agent process: across `kill -9`, the time without an
//! agent, a restart that adopts the pinned maps and attachments, and a graceful SIGTERM
//! restart, not one allowed packet is lost and not one denied packet gets through. In each
//! attach mode (TCX links, clsact filters), and across switching modes between runs
//! (tcx, then clsact after the kill, then tcx again after SIGTERM), after which each
//! interface carries exactly one set of attachments, running the new agent's programs.
//!
//! The traffic is `palisade_tests::steady_traffic`'s, allowed and denied, all along.

use std::thread;
use std::time::{Duration, Instant};

use palisade_tests::agent_process::AgentProcess;
use palisade_tests::attachments::{assert_enforcing_in, has_clsact_qdisc};
use palisade_tests::matrix::Scene;
use palisade_tests::steady_traffic::{
    self, SteadyTraffic, TCP_PORTS, UDP_PORTS, client_and_server,
};
use palisade_tests::{Cleanup, require_root};

/// How long each phase (agent up, agent gone) lasts.
const PHASE: Duration = Duration::from_millis(300);

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
        &client_and_server(&ips),
        None,
        &TCP_PORTS,
        &UDP_PORTS,
    );
    scene.agent = Some(scene.home.start(&["--attach-mode", modes[0]]));
    scene.store.apply(steady_traffic::POLICY);
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
    for interface in interfaces(&scene) {
        assert!(
            has_clsact_qdisc(interface),
            "{interface} has no clsact qdisc after its first attach in {} mode: a switch to \
             clsact mode would have to create one under traffic, which drops packets",
            modes[0]
        );
    }
    let agent = scene.agent.take().expect("the agent");

    let traffic = SteadyTraffic::start(&scene);
    thread::sleep(PHASE);

    // kill -9: nothing is cleaned up; the pins keep programs, links and maps.
    agent.kill();
    let killed = Instant::now();
    thread::sleep(PHASE);
    let gap_after_kill = killed..Instant::now();
    let (agent, took_kill) = restart(&mut scene, modes[1], modes[0]);
    let back_after_kill = Instant::now();
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
    let back_after_term = Instant::now();
    scene.agent = Some(agent);
    thread::sleep(PHASE);

    let report = traffic.stop(&scene);
    let in_gaps =
        report.datagrams_arrived_in(&gap_after_kill) + report.datagrams_arrived_in(&gap_after_term);
    let at = |instant: Instant| instant.duration_since(report.started);
    report.check(&format!(
        "restart {modes:?}: agents up again {took_kill:?} after kill -9 and {took_term:?} \
         after SIGTERM; {in_gaps} datagrams arrived while no agent ran; after the first \
         datagram: kill -9 at {:?}, agent back at {:?}, SIGTERM at {:?}, agent back at {:?}",
        at(killed),
        at(back_after_kill),
        at(terminated),
        at(back_after_term),
    ));
    assert!(
        report.datagrams_arrived_in(&gap_after_kill) > 0
            && report.datagrams_arrived_in(&gap_after_term) > 0
    );
    assert!(
        report.denied.len() > 50,
        "only {} denied attempts",
        report.denied.len()
    );
}
