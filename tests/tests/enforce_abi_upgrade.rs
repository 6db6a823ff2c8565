//! Upgrading across map ABI versions keeps every connection: an agent of the next ABI
//! (`palisade-abi-next`, this build with `ABI_VERSION + 1`) replaces a running one under
//! steady allowed and denied traffic. It starts with maps of its own and takes each
//! interface over from the older programs once its maps hold the policy (TCX links switched
//! in place, clsact filters replaced in place), with the older conntrack entries carried
//! over; then it removes the older pins. Not one allowed packet lost, not one retransmission,
//! not one denied packet through, and nothing of the older ABI left.

use std::thread;
use std::time::Duration;

use palisade_common::ABI_VERSION;
use palisade_tests::attachments::assert_enforcing_from;
use palisade_tests::matrix::Scene;
use palisade_tests::steady_traffic::{
    self, SteadyTraffic, TCP_PORTS, UDP_PORTS, client_and_server,
};
use palisade_tests::{Cleanup, palisade_abi_next_binary, require_root};

const PHASE: Duration = Duration::from_millis(500);

fn upgrade(mode: &str, ips: [&str; 2]) {
    require_root();
    let mut cleanup = Cleanup::new();
    let mut scene = Scene::build(
        &mut cleanup,
        "e2e-abi-upgrade",
        &client_and_server(&ips),
        None,
        &TCP_PORTS,
        &UDP_PORTS,
    );
    scene.agent = Some(scene.home.start(&["--attach-mode", mode]));
    scene.store.apply(steady_traffic::POLICY);
    scene.wait_for_enforcement();
    let interfaces = scene.interfaces();
    let interfaces: Vec<&str> = interfaces.iter().map(String::as_str).collect();
    let root = scene.home.bpffs.path().join("palisade");
    let (older, newer) = (
        root.join(ABI_VERSION.to_string()),
        root.join((ABI_VERSION + 1).to_string()),
    );
    assert_enforcing_from(mode, &interfaces, &older);

    let traffic = SteadyTraffic::start(&scene);
    thread::sleep(PHASE);
    // The older agent stops first (one agent per host); its programs go on enforcing.
    let status = scene.agent.take().expect("the agent").terminate();
    assert!(status.success(), "the older agent's exit: {status}");
    thread::sleep(PHASE);

    let mut agent = scene
        .home
        .start_binary(&palisade_abi_next_binary(), &["--attach-mode", mode]);
    let found = agent.wait_for(&["found the pins of an older map ABI"]);
    assert!(found.contains(&format!("version={ABI_VERSION}")), "{found}");
    let carried = agent.wait_for(&["conntrack carried over from an older map ABI"]);
    let removed = agent.wait_for(&["older map ABI removed", &format!("version={ABI_VERSION}")]);
    scene.agent = Some(agent);
    thread::sleep(PHASE);
    let report = traffic.stop(&scene);
    report.check(&format!(
        "upgrade to ABI {} ({mode}): {carried}; {removed}",
        ABI_VERSION + 1
    ));
    assert!(
        report.denied.len() > 20,
        "only {} denied attempts",
        report.denied.len()
    );

    assert!(
        !older.exists(),
        "the older pins are still there: {}",
        older.display()
    );
    assert_enforcing_from(mode, &interfaces, &newer);
}

#[test]
fn an_agent_of_the_next_abi_takes_over_tcx_links_losing_nothing() {
    upgrade("tcx", ["10.244.7.1", "10.244.7.2"]);
}

#[test]
fn an_agent_of_the_next_abi_takes_over_clsact_filters_losing_nothing() {
    upgrade("clsact", ["10.244.8.1", "10.244.8.2"]);
}
