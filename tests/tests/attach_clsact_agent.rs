//! `palisade agent --attach-mode clsact` on real workloads: it says which mode it attaches
//! in, enforces exactly what `palisade trace` says (the same matrix the TCX runs pass), and
//! takes its filters off a workload whose endpoint is deleted (the interface staying) or
//! that is removed with its interface, leaving the other workloads enforced.

use palisade_tests::attachments::{OnInterface, assert_enforcing_in};
use palisade_tests::matrix::{Scene, WorkloadPlan};
use palisade_tests::netns::link_exists;
use palisade_tests::traffic::Probe;
use palisade_tests::{Cleanup, require_root};

const NODE: &str = "clsact-node";

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
        ports: [7300]
    - action: deny
      protocol: udp
      destination:
        ports: [7302]
    - action: allow
      protocol: udp
    egress:
    - action: allow
- apiVersion: v1
  kind: profile
  metadata:
    name: client
    labels: {role: client}
  spec:
    ingress:
    - action: allow
      protocol: tcp
      destination:
        ports: [7301]
    egress:
    - action: deny
      protocol: tcp
      destination:
        ports: [7301]
    - action: allow
"#;

#[test]
fn clsact_mode_enforces_like_trace_and_removes_filters_with_their_workload() {
    require_root();
    let mut cleanup = Cleanup::new();
    let mut scene = Scene::build(
        &mut cleanup,
        NODE,
        &[
            WorkloadPlan {
                label: "client",
                profiles: &["client"],
                ips: &["10.245.1.1", "fd45:1::1"],
            },
            WorkloadPlan {
                label: "server",
                profiles: &["server"],
                ips: &["10.245.1.2", "fd45:1::2"],
            },
            WorkloadPlan {
                label: "other",
                profiles: &["server"],
                ips: &["10.245.1.3", "fd45:1::3"],
            },
        ],
        Some(("10.245.250", "fd45:250")),
        &[7300, 7301],
        &[7302, 7303],
    );
    scene.agent = Some(scene.home.start(&["--attach-mode", "clsact"]));
    scene
        .agent()
        .wait_for(&["attachments adopted", "mode=clsact", "interfaces=0"]);
    scene.store.apply(POLICY);
    scene.wait_for_enforcement();
    let interfaces = scene.interfaces();
    for interface in &interfaces {
        scene.agent().wait_for_ever_said(&[
            "enforcing on workload interface",
            &format!("interface={interface}"),
            "mode=clsact",
        ]);
    }
    let names: Vec<&str> = interfaces.iter().map(String::as_str).collect();
    assert_enforcing_in("clsact", &names, scene.home.bpffs.path());

    let matrix = scene.matrix(
        "clsact",
        &[
            Probe::Tcp(7300),
            Probe::Tcp(7301),
            Probe::Udp(7302),
            Probe::Udp(7303),
        ],
        &[false, true],
    );
    let allowed = matrix.cells.iter().filter(|(_, c)| c.traced).count();
    assert!(
        allowed > 0 && allowed < matrix.cells.len(),
        "the matrix should have both verdicts: {allowed} of {} allowed",
        matrix.cells.len()
    );

    // The endpoint goes, the interface stays: the agent takes its filters off.
    let server = &scene.workloads[1];
    let (server_name, server_interface) = (server.name.clone(), server.interface.clone());
    scene.store.palisade_ok(
        &[
            "delete",
            "workloadEndpoint",
            &server_name,
            "--node",
            NODE,
            "--orchestrator",
            "palisade",
            "--workload",
            &server_name,
        ],
        "",
    );
    // Named by endpoint and interface, not only by ifindex.
    scene.agent().wait_for(&[
        "stopped enforcing",
        &format!("interface={server_interface}"),
        &format!("name={server_name}"),
    ]);
    assert!(link_exists(&server_interface));
    OnInterface::read(&server_interface).assert_empty(&server_interface);

    // The workload goes with its interface: its filters went with the interface, and the
    // agent forgets it without complaint.
    let other = &scene.workloads[2];
    let (other_name, other_interface) = (other.name.clone(), other.interface.clone());
    scene
        .store
        .palisade_ok(&["workload", "remove", &other_name, "--node", NODE], "");
    scene
        .agent()
        .wait_for(&["stopped enforcing", &format!("interface={other_interface}")]);
    assert!(!link_exists(&other_interface));

    // The client is still enforced, by the same filters.
    assert_enforcing_in("clsact", &[&interfaces[0]], scene.home.bpffs.path());
    let log = scene.agent().log();
    assert!(
        !log.contains(" ERROR "),
        "the agent reported errors:\n{log}"
    );
}
