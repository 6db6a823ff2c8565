//! Map sizes are the agent's to choose (`--max-endpoints`, `--max-policies`, `--map-size
//! NAME=ENTRIES`): a fresh agent makes its maps with them; a restarted agent with other
//! sizes adopts the pinned maps at the size they have, says so, and goes on enforcing
//! (policy changes included) without losing an allowed packet or passing a denied one;
//! sizes that cannot be are refused before anything is loaded or pinned.

use std::thread;
use std::time::Duration;

use palisade::dataplane::map_memory::pinned_maps_memory;
use palisade::dataplane::{MapSizes, SizedFor, pin_dir};
use palisade_common::map_names;
use palisade_tests::matrix::Scene;
use palisade_tests::steady_traffic::{
    self, SteadyTraffic, TCP_PORTS, UDP_PORTS, client_and_server,
};
use palisade_tests::{Cleanup, require_root};

/// How long the traffic runs before and after the restart.
const PHASE: Duration = Duration::from_millis(300);

const FIRST: [&str; 6] = [
    "--max-endpoints",
    "100",
    "--max-policies",
    "100",
    "--map-size",
    "PAL_CT=5000",
];

/// The sizes the first agent asks for.
fn first_sizes() -> MapSizes {
    let scale = SizedFor {
        endpoints: 100,
        policies: 100,
    };
    let mut sizes = MapSizes::for_scale(&scale).unwrap();
    sizes.set("PAL_CT", 5000).unwrap();
    sizes
}

/// Every pinned map's size, as the kernel has it.
fn pinned_sizes(scene: &Scene) -> Vec<(&'static str, u32)> {
    pinned_maps_memory(&pin_dir(scene.home.bpffs.path()))
        .unwrap()
        .into_iter()
        .map(|m| (m.name, m.max_entries))
        .collect()
}

#[test]
fn sizes_apply_when_made_and_pinned_maps_keep_theirs_across_a_restart() {
    require_root();
    let mut cleanup = Cleanup::new();
    let mut scene = Scene::build(
        &mut cleanup,
        "e2e-sizes",
        &client_and_server(&["10.244.9.1", "10.244.9.2"]),
        None,
        &TCP_PORTS,
        &UDP_PORTS,
    );
    scene.agent = Some(scene.home.start(&FIRST));
    scene.store.apply(steady_traffic::POLICY);
    scene.wait_for_enforcement();
    scene
        .agent()
        .wait_for_ever_said(&["maps sized", "PAL_CT=5000"]);

    let wanted = first_sizes();
    let made = pinned_sizes(&scene);
    for (name, entries) in wanted.iter() {
        assert!(
            made.contains(&(name, entries)),
            "{name} should have {entries} entries; the pins have {made:?}"
        );
    }
    assert!(made.contains(&(map_names::CONFIG, 1)), "{made:?}");

    let traffic = SteadyTraffic::start(&scene);
    thread::sleep(PHASE);
    scene.agent.take().expect("the agent").kill();

    // Larger sizes asked for: every pinned map keeps its own, and enforcement goes on.
    let mut agent = scene
        .home
        .start(&["--max-endpoints", "20000", "--map-size", "PAL_CT=7000"]);
    agent.wait_for(&[
        "a pinned map keeps its size",
        "map=PAL_CT",
        "asked=7000",
        "pinned=5000",
    ]);
    agent.wait_for_ever_said(&["a pinned map keeps its size", "map=PAL_PEERS"]);
    let revision = scene.store.revision();
    agent.wait_for(&["policy published", &format!("revision={revision}")]);
    scene.agent = Some(agent);
    assert_eq!(pinned_sizes(&scene), made);

    // The writer works with the sizes the maps have: a change that the maps must hold
    // (the client may no longer reach TCP port 9999; the traffic's ports are untouched)
    // is published.
    scene.store.apply(
        r#"- apiVersion: v1
  kind: policy
  metadata: {name: extra}
  spec:
    selector: role == 'client'
    egress:
    - {action: deny, protocol: tcp, destination: {ports: [9999]}}
    - {action: pass}
"#,
    );
    let revision = scene.store.revision();
    scene
        .agent()
        .wait_for(&["policy published", &format!("revision={revision}")]);
    thread::sleep(PHASE);

    let report = traffic.stop(&scene);
    report.check("restart with other map sizes");
    assert!(
        report.denied.len() > 10,
        "only {} denied attempts",
        report.denied.len()
    );
}

#[test]
fn impossible_sizes_are_refused_before_anything_is_pinned() {
    require_root();
    let mut cleanup = Cleanup::new();
    let scene = Scene::build(
        &mut cleanup,
        "e2e-badsize",
        &client_and_server(&["10.244.9.3", "10.244.9.4"]),
        None,
        &[],
        &[],
    );
    for (flags, says) in [
        (
            &["--map-size", "PAL_ROWS=3"][..],
            &["invalid map size", "PAL_ROWS=3", "even"][..],
        ),
        (
            &["--map-size", "PAL_NOPE=3"],
            &["invalid map size", "PAL_NOPE", "PAL_CT"],
        ),
        (
            &["--map-size", "PAL_EVENTS=5000"],
            &["invalid map size", "PAL_EVENTS=5000", "power of two"],
        ),
    ] {
        let mut agent = scene.home.start(flags);
        let status = agent.wait_exit();
        assert!(!status.success(), "{flags:?} was accepted");
        agent.wait_for_ever_said(says);
        let pins = pin_dir(scene.home.bpffs.path());
        assert!(
            !pins.join("maps").exists(),
            "{flags:?}: maps were pinned under {}",
            pins.display()
        );
    }
}
