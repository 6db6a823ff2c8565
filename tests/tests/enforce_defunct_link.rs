//! A pinned TCX link someone detached (`bpftool link detach`, as a user cleaning up by
//! hand might; the pin under `<bpffs>/palisade/<ABI>/links/<ifindex>/` stays) cannot be
//! switched to a new program. The next agent notices the link is attached to nothing,
//! removes the stale pin, attaches afresh, says so in a warning naming the interface, and
//! starts and enforces, instead of failing to start on every try.

use palisade::dataplane::attach::interface_index;
use palisade::dataplane::{interface_pin_dir, pin_dir};
use palisade_tests::attachments::{OnInterface, assert_enforcing_in};
use palisade_tests::matrix::Scene;
use palisade_tests::netns::run_ok;
use palisade_tests::steady_traffic::{
    self, TCP_ALLOWED, TCP_DENIED, TCP_PORTS, UDP_PORTS, client_and_server,
};
use palisade_tests::traffic::Probe;
use palisade_tests::{Cleanup, require_root};

const PROBES: [Probe; 2] = [Probe::Tcp(TCP_ALLOWED), Probe::Tcp(TCP_DENIED)];

#[test]
fn an_agent_replaces_a_detached_pinned_link_and_enforces() {
    require_root();
    let mut cleanup = Cleanup::new();
    let mut scene = Scene::build(
        &mut cleanup,
        "e2e-defunct",
        &client_and_server(&["10.249.1.1", "10.249.1.2"]),
        None,
        &TCP_PORTS,
        &UDP_PORTS,
    );
    scene.agent = Some(scene.home.start(&["--attach-mode", "tcx"]));
    scene.store.apply(steady_traffic::POLICY);
    scene.wait_for_enforcement();
    let interfaces = scene.interfaces();
    let interfaces: Vec<&str> = interfaces.iter().map(String::as_str).collect();
    assert_enforcing_in("tcx", &interfaces, scene.home.bpffs.path());
    let status = scene.agent.take().expect("the agent").terminate();
    assert!(status.success(), "the agent's exit status: {status}");

    // The server's links: detached by hand, their pins left behind.
    let server = interfaces[1];
    let ifindex = interface_index(server).expect("the server's interface");
    let links = interface_pin_dir(&pin_dir(scene.home.bpffs.path()), ifindex);
    let mut pins: Vec<_> = std::fs::read_dir(&links)
        .expect("the server's link pins")
        .map(|entry| entry.expect("a pin").path())
        .collect();
    pins.sort();
    assert_eq!(pins.len(), 2, "{pins:?}");
    for pin in &pins {
        run_ok(
            "bpftool",
            &["link", "detach", "pinned", &pin.display().to_string()],
        );
    }
    OnInterface::read(server).assert_empty(server);
    // Nothing stands between the client and the denied port now.
    let open = scene.probe("client", "server", Probe::Tcp(TCP_DENIED), false);
    assert!(
        open.reached,
        "the denied port is closed without programs: {open:?}"
    );

    scene.agent = Some(scene.home.start(&["--attach-mode", "tcx"]));
    for pin in &pins {
        let hook = pin.file_name().and_then(|n| n.to_str()).expect("a hook");
        scene.agent().wait_for_ever_said(&[
            "a pinned TCX link was detached from its interface",
            &format!("interface={server}"),
            &format!("hook={hook}"),
        ]);
    }
    let revision = scene.store.revision();
    scene.agent().wait_for_ever_said(&[
        "attachments adopted",
        "mode=tcx",
        "interfaces=2",
        "removed=0",
    ]);
    scene
        .agent()
        .wait_for_ever_said(&["policy published", &format!("revision={revision}")]);
    assert_enforcing_in("tcx", &interfaces, scene.home.bpffs.path());
    // Panics where the dataplane and the reference evaluator differ.
    let matrix = scene.matrix("after the agent attached afresh", &PROBES, &[false]);
    assert!(matrix.allows("client", "server", Probe::Tcp(TCP_ALLOWED)));
    assert!(!matrix.allows("client", "server", Probe::Tcp(TCP_DENIED)));
}
