//! The rulesets palisade is benchmarked against enforce the same policy it does: Felix's
//! iptables + ipset rendering (through the legacy and the nf_tables iptables) and the
//! nftables rendering, each generated from the store's resources and loaded into a
//! namespace that plays the node, agree with `palisade trace` on every probe between
//! workloads plumbed by `palisade workload add`, over IPv4 and IPv6.

use palisade_peers::felix::{self, Config};
use palisade_peers::{Family, View, nft};
use palisade_tests::matrix::{Matrix, Peer};
use palisade_tests::netfilter::{
    Backend, clear_felix, clear_nft, flush_conntrack, load_felix, load_nft,
};
use palisade_tests::palisade_cli::Datastore;
use palisade_tests::router::Router;
use palisade_tests::topology::WorkloadSpec;
use palisade_tests::traffic::Probe;
use palisade_tests::{Cleanup, require_root};

const NODE: &str = "peers-node";
/// palisade's host-side interfaces are `pal...`: Felix's InterfacePrefix for this node.
const PREFIX: &str = "pal";

/// Policies in front of profiles, with what makes Felix's rendering work hardest: `log`,
/// `pass`, several CIDRs (a mark block), a CIDR next to a negated one, negated ports,
/// tags and selectors together, ICMP type and code.
const POLICY: &str = r#"
- apiVersion: v1
  kind: profile
  metadata: {name: databases, labels: {role: database}, tags: [db]}
  spec:
    ingress:
    - action: allow
      protocol: tcp
      source: {selector: role == 'app'}
      destination: {ports: [3306]}
    - action: allow
      source: {tag: db}
    egress:
    - action: allow
- apiVersion: v1
  kind: profile
  metadata: {name: apps, labels: {role: app}, tags: [app]}
  spec:
    ingress:
    - action: allow
      protocol: udp
      destination: {ports: ["50:60"], notPorts: [54]}
    - action: allow
      protocol: tcp
      destination: {ports: [3307]}
    - action: allow
      protocol: udp
      source: {tag: db}
      destination: {ports: [54]}
    - action: allow
      protocol: icmp
      icmp: {type: 8, code: 0}
    - action: allow
      protocol: icmpv6
      icmp: {type: 128, code: 0}
    egress:
    - action: allow
- apiVersion: v1
  kind: policy
  metadata: {name: db-guard}
  spec:
    order: 10
    selector: role == 'database'
    ingress:
    - action: log
      protocol: tcp
    - action: deny
      protocol: tcp
      source: {nets: [10.99.0.0/16, 192.168.77.0/24]}
    - action: deny
      protocol: tcp
      source: {nets: ["fd99::/16", "fd98::/16"]}
    - action: pass
      source: {selector: role == 'app', tag: app, net: 10.72.0.0/16, notNet: 10.72.0.99/32}
    - action: allow
      protocol: tcp
      source: {notSelector: role == 'app'}
      destination: {notPorts: [3307]}
    types: [ingress]
- apiVersion: v1
  kind: policy
  metadata: {name: app-egress}
  spec:
    order: 20
    selector: role == 'app' && !has(quiet)
    egress:
    - action: deny
      protocol: tcp
      destination: {ports: [7100]}
    - action: allow
    types: [egress]
"#;

const TCP: [u16; 3] = [3306, 3307, 7100];
const UDP: [u16; 2] = [53, 54];
const PROBES: [Probe; 6] = [
    Probe::Tcp(3306),
    Probe::Tcp(3307),
    Probe::Tcp(7100),
    Probe::Udp(53),
    Probe::Udp(54),
    Probe::PING,
];

#[test]
fn felix_and_nftables_rulesets_enforce_what_palisade_trace_says() {
    require_root();
    let mut cleanup = Cleanup::new();
    let router = Router::create(&mut cleanup);
    let store = Datastore::new();
    store.apply(POLICY);
    let plan: [(&str, &[&str], &str, [&str; 2]); 4] = [
        ("db1", &["databases"], "", ["10.72.0.11", "fd72::11"]),
        ("db2", &["databases"], "", ["10.72.0.12", "fd72::12"]),
        ("app1", &["apps"], "", ["10.72.0.21", "fd72::21"]),
        ("app2", &["apps"], "quiet=yes", ["10.72.0.99", "fd72::99"]),
    ];
    let mut peers = Vec::new();
    for (label, profiles, labels, ips) in plan {
        let spec = WorkloadSpec {
            prefix: &label[..3],
            ips: &ips,
            labels,
            profiles,
        };
        let workload = router.add_workload(&mut cleanup, &store, NODE, &spec);
        peers.push(Peer::workload(label, &workload, &TCP, &UDP));
    }
    let view = View::new(&store.resources());

    for backend in [Backend::Legacy, Backend::Nft] {
        for family in [Family::V4, Family::V6] {
            let config = Config::felix_defaults(family).with_interface_prefix(PREFIX);
            let ruleset = felix::render(&view, NODE, &config);
            load_felix(&router.ns, &ruleset, backend).unwrap();
        }
        flush_conntrack(&router.ns).unwrap();
        Matrix::run(
            &format!("Felix 2.6.8 rendering, iptables {backend:?}"),
            &store,
            &peers,
            &PROBES,
            &[false, true],
        );
        clear_felix(&router.ns, backend).unwrap();
    }

    for family in [Family::V4, Family::V6] {
        load_nft(&router.ns, &nft::render(&view, NODE, family, PREFIX)).unwrap();
    }
    flush_conntrack(&router.ns).unwrap();
    let matrix = Matrix::run(
        "nftables rendering",
        &store,
        &peers,
        &PROBES,
        &[false, true],
    );
    for family in [Family::V4, Family::V6] {
        clear_nft(&router.ns, family).unwrap();
    }

    // The policy is not trivial: the matrix has both verdicts, for each kind of probe.
    for probe in PROBES {
        let verdicts: Vec<bool> = matrix
            .cells
            .iter()
            .filter(|(case, _)| case.probe == probe)
            .map(|(_, cell)| cell.traced)
            .collect();
        assert!(
            verdicts.contains(&true) && verdicts.contains(&false),
            "{probe}: {verdicts:?}"
        );
    }
    drop(peers);
}
