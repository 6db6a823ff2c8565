//! Upgrading across map ABI versions keeps every connection: an agent of the next ABI
//! (`palisade-abi-next`, this build with `ABI_VERSION + 1`) replaces a running one under
//! steady allowed and denied traffic. It starts with maps of its own and takes each
//! interface over from the older programs once its maps hold the policy (TCX links switched
//! in place, clsact filters replaced in place), with the older conntrack entries carried
//! over; then it removes the older pins. Not one allowed packet lost, not one retransmission,
//! not one denied packet through, and nothing of the older ABI left.

use std::thread;
use std::time::Duration;

use palisade::dataplane;
use palisade::dataplane::conntrack::Conntrack;
use palisade::dataplane::older_abi::OlderAbi;
use palisade_common::{
    ABI_VERSION, CtKey, CtValue, DIR_EGRESS, ENDPOINT_NONE, FAMILY_V4, map_names,
};
use palisade_tests::agent_process::PrivateBpffs;
use palisade_tests::attachments::assert_enforcing_from;
use palisade_tests::bpf_maps::Dataplane;
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

/// ABI 5 added the endpoint's counter index to the conntrack value. An agent carries the
/// entries of ABI 4's narrower values all the same: each flow as it was, with no index and
/// a stale generation, so its next packet re-checks it and writes the index.
#[test]
fn conntrack_entries_of_abi_4_are_carried_without_an_endpoint_index() {
    require_root();
    let bpffs = PrivateBpffs::mount();
    let older_dir = bpffs.path().join("palisade").join("4");
    let maps = dataplane::map_pin_dir(&older_dir);
    std::fs::create_dir_all(&maps).expect("the older map directory");
    let pin = maps.join(map_names::CT);
    let mut local_addr = [0u8; 16];
    local_addr[..4].copy_from_slice(&[10, 65, 0, 1]);
    let mut remote_addr = [0u8; 16];
    remote_addr[..4].copy_from_slice(&[10, 65, 0, 2]);
    let key = CtKey {
        ifindex: 1,
        family: FAMILY_V4,
        protocol: 6,
        local_port: 40000,
        remote_port: 80,
        _pad: 0,
        local_addr,
        remote_addr,
    };
    // ABI 4's value: generation, origin, flags, ICMP type and code, last seen.
    let mut narrow_value = Vec::new();
    narrow_value.extend_from_slice(&9u32.to_le_bytes());
    narrow_value.extend_from_slice(&[DIR_EGRESS, 0, 0, 0]);
    narrow_value.extend_from_slice(&12_345u64.to_le_bytes());
    let pin_arg = pin.to_string_lossy().into_owned();
    bpftool(&[
        "map", "create", &pin_arg, "type", "lru_hash", "key", "44", "value", "16", "entries", "64",
        "name", "PAL_CT",
    ]);
    let mut update = vec!["map", "update", "pinned", &pin_arg, "key", "hex"];
    // SAFETY: `CtKey` is plain old data without implicit padding.
    let key_bytes =
        unsafe { std::slice::from_raw_parts((&raw const key).cast::<u8>(), size_of::<CtKey>()) };
    let key_hex: Vec<String> = key_bytes.iter().map(|b| format!("{b:02x}")).collect();
    let value_hex: Vec<String> = narrow_value.iter().map(|b| format!("{b:02x}")).collect();
    update.extend(key_hex.iter().map(String::as_str));
    update.extend(["value", "hex"]);
    update.extend(value_hex.iter().map(String::as_str));
    bpftool(&update);

    let mut this_abi = Dataplane::load();
    let mut ct = Conntrack::take(this_abi.ebpf()).expect("this ABI's conntrack");
    let older = OlderAbi::find(bpffs.path()).expect("the older pins");
    assert_eq!(older.len(), 1, "{older:?}");
    let stale_generation = 77;
    assert_eq!(
        older[0]
            .carry_conntrack(&mut ct, stale_generation)
            .expect("carried"),
        1
    );
    assert_eq!(
        ct.flows().expect("this ABI's flows"),
        [(
            key,
            CtValue {
                generation: stale_generation,
                origin: DIR_EGRESS,
                last_seen_ns: 12_345,
                endpoint: ENDPOINT_NONE,
                ..CtValue::default()
            }
        )]
    );
}

fn bpftool(args: &[&str]) {
    let output = std::process::Command::new("bpftool")
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("cannot run bpftool: {err}"));
    assert!(
        output.status.success(),
        "bpftool {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
