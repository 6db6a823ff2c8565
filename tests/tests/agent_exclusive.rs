//! One agent per host (issue 12). The newcomer's scenario: with an agent enforcing, a second
//! `palisade agent` (a second `cargo xtask run`, with a run directory of its own) on the
//! same bpffs must exit with status 1 at once, naming the running agent's PID, and touch
//! nothing: the interfaces keep running the first agent's programs, and a policy change
//! afterwards (removing an allow) closes the port for real.
//!
//! Defence in depth: if something that does not take the lock (an older release, a tool)
//! writes the pinned maps anyway, the agent notices the moved generation, says so in an
//! ERROR line, and rewrites the maps in full.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use palisade::compile::{Capacities, Changes, Compiler, Locals};
use palisade::dataplane::writer::{PolicyMaps, Writer};
use palisade::dataplane::{self, pin_dir};
use palisade_tests::attachments::{OnInterface, assert_enforcing_in, embedded_object};
use palisade_tests::matrix::Scene;
use palisade_tests::steady_traffic::{
    self, TCP_ALLOWED, TCP_DENIED, TCP_PORTS, UDP_PORTS, client_and_server,
};
use palisade_tests::traffic::{Observed, Probe};
use palisade_tests::{Cleanup, palisade_binary, require_root};

/// The bound for the second agent to give up.
const REFUSED_WITHIN: Duration = Duration::from_secs(2);

const PROBES: [Probe; 2] = [Probe::Tcp(TCP_ALLOWED), Probe::Tcp(TCP_DENIED)];

/// `steady_traffic::POLICY` without the allow of TCP to the allowed port.
fn policy_without_tcp_allow() -> String {
    let policy = steady_traffic::POLICY.replace(
        "    - action: allow\n      protocol: tcp\n      source:\n        selector: role == 'client'\n      destination:\n        ports: [7100]\n",
        "",
    );
    assert_ne!(
        policy,
        steady_traffic::POLICY,
        "the allow to remove is there"
    );
    policy
}

fn interfaces(scene: &Scene) -> Vec<String> {
    scene
        .workloads
        .iter()
        .map(|w| w.interface.clone())
        .collect()
}

#[test]
fn a_second_agent_exits_naming_the_first_and_changes_nothing() {
    require_root();
    let mut cleanup = Cleanup::new();
    let mut scene = Scene::build(
        &mut cleanup,
        "e2e-exclusive",
        &client_and_server(&["10.246.1.1", "10.246.1.2"]),
        None,
        &TCP_PORTS,
        &UDP_PORTS,
    );
    scene.store.apply(steady_traffic::POLICY);
    scene.agent = Some(scene.home.start(&["--attach-mode", "tcx"]));
    scene.wait_for_enforcement();
    let names = interfaces(&scene);
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let before: Vec<(u64, u64)> = names
        .iter()
        .map(|i| OnInterface::read(i).programs())
        .collect();
    let first = scene.agent().pid();

    // The newcomer: the same bpffs, its own run directory.
    let own_run_dir = tempfile::tempdir().expect("a temporary directory");
    let started = Instant::now();
    let mut second = Command::new(palisade_binary())
        .args(["--datastore", scene.store.url()])
        .args(["agent", "--no-docker-plugin", "--node", &scene.home.node])
        .arg("--bpffs")
        .arg(scene.home.bpffs.path())
        .arg("--run-dir")
        .arg(own_run_dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the second agent");
    let status = loop {
        if let Some(status) = second.try_wait().expect("wait for the second agent") {
            break status;
        }
        if started.elapsed() > REFUSED_WITHIN {
            let _ = second.kill();
            let out = second
                .wait_with_output()
                .expect("the second agent's output");
            panic!(
                "the second agent still ran after {REFUSED_WITHIN:?}; it said:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = started.elapsed();
    let said = String::from_utf8_lossy(
        &second
            .wait_with_output()
            .expect("the second agent's output")
            .stderr,
    )
    .into_owned();
    println!("the second agent exited with {status} after {took:?}:\n{said}");
    assert_eq!(status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!("PID {first}")) && said.contains("ERROR"),
        "the refusal should name the running agent's PID {first}:\n{said}"
    );
    assert!(
        !said.contains("eBPF programs loaded") && !said.contains("maps adopted"),
        "the second agent loaded something before it gave up:\n{said}"
    );
    assert!(
        std::fs::read_dir(own_run_dir.path())
            .expect("list the run dir")
            .next()
            .is_none(),
        "the second agent wrote to its run directory"
    );

    // Nothing changed: the same programs on every hook, and the first agent runs on.
    let after: Vec<(u64, u64)> = names
        .iter()
        .map(|i| OnInterface::read(i).programs())
        .collect();
    assert_eq!(after, before, "the interfaces' program ids changed");
    assert_enforcing_in("tcx", &names, scene.home.bpffs.path());
    assert!(
        scene.agent().still_running(),
        "the first agent is gone:\n{}",
        scene.agent().log()
    );

    let matrix = scene.matrix("before removing the allow", &PROBES, &[false]);
    assert!(matrix.allows("client", "server", Probe::Tcp(TCP_ALLOWED)));

    // Removing the allow closes the port, for real.
    scene.store.apply(&policy_without_tcp_allow());
    scene.wait_for_enforcement();
    let matrix = scene.matrix("after removing the allow", &PROBES, &[false]);
    assert!(!matrix.allows("client", "server", Probe::Tcp(TCP_ALLOWED)));
}

#[test]
fn an_agent_whose_maps_someone_else_wrote_says_so_and_rewrites_them() {
    require_root();
    let mut cleanup = Cleanup::new();
    let mut scene = Scene::build(
        &mut cleanup,
        "e2e-intruded",
        &client_and_server(&["10.246.2.1", "10.246.2.2"]),
        None,
        &TCP_PORTS,
        &UDP_PORTS,
    );
    scene.store.apply(steady_traffic::POLICY);
    scene.start_agent();
    scene.wait_for_enforcement();
    scene.matrix("before", &PROBES, &[false]);

    // Someone who does not take the lock (an old release, a tool) writes the pinned maps
    // while the agent is stopped: an image with no endpoint at all, in both slots, and the
    // generation flipped to it. Every workload packet is then dropped as spoofed.
    scene.agent().signal(libc::SIGSTOP);
    let mut intruder = dataplane::load(embedded_object(), Some(&pin_dir(scene.home.bpffs.path())))
        .expect("load the object on the agent's pins");
    let mut writer = Writer::adopt(PolicyMaps::take(intruder.ebpf_mut()).expect("the policy maps"))
        .expect("adopt the agent's maps");
    let found = writer.generation();
    let mut compiler = Compiler::new(Locals::Node("somebody-else"), Capacities::UNLIMITED);
    compiler
        .update(&Default::default())
        .expect("compile the empty image");
    let image = compiler.image().expect("an image");
    let published = writer
        .publish_changes(image, &Changes::All, &Default::default(), |_| Ok(()))
        .expect("write the agent's maps");
    drop(intruder);
    assert_eq!(
        scene.probe("client", "server", Probe::Tcp(TCP_ALLOWED), false),
        Observed::NOTHING,
        "the intruder's empty image is in force while the agent is stopped"
    );
    scene.agent().signal(libc::SIGCONT);

    let said = scene.agent().wait_for(&[
        "ERROR",
        "WRITTEN BY ANOTHER PROCESS",
        &format!("expected_generation={found}"),
        &format!("found_generation={}", published.generation),
    ]);
    println!("{said}");
    let rewritten = scene.agent().wait_for(&["policy published"]);
    println!("{rewritten}");
    let matrix = scene.matrix("after the agent rewrote its maps", &PROBES, &[false]);
    assert!(matrix.allows("client", "server", Probe::Tcp(TCP_ALLOWED)));
}
