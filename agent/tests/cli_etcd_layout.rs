//! palisade and Calico's own tools share etcd: what `palisade apply` writes are exactly
//! the keys and JSON values libcalico-go v1 writes (checked with `etcdctl get --prefix
//! /calico`), and keys written raw in Calico's layout (as the Docker plugin, calicoctl or
//! pycalico would) are listed by `palisade get` and enforced by `palisade trace`.

#![allow(clippy::unwrap_used)]

mod cli_support;

use cli_support::{Backend, Palisade, lines};

fn etcd_palisade() -> Palisade {
    Palisade::on(Backend::Etcd)
}

const RESOURCES: &str = r#"
- apiVersion: v1
  kind: profile
  metadata:
    name: databases
    tags: [db]
    labels: {role: database}
  spec:
    ingress:
    - action: allow
      protocol: tcp
      source: {selector: role == 'app'}
      destination: {ports: [3306]}
    - action: pass
      source: {notNets: [10.0.0.0/8]}
    egress:
    - action: allow
- apiVersion: v1
  kind: profile
  metadata: {name: team/apps}
- apiVersion: v1
  kind: policy
  metadata: {name: deny-icmp}
  spec:
    order: 10
    selector: has(role)
    ingress:
    - action: deny
      protocol: icmp
      icmp: {type: 8}
- apiVersion: v1
  kind: workloadEndpoint
  metadata:
    name: eth0
    node: node1
    orchestrator: libnetwork
    workload: libnetwork
    labels: {app: web}
  spec:
    interfaceName: cali12345678901
    mac: EE:EE:EE:EE:EE:EE
    ipNetworks: [192.168.0.11/32, 'fd00::11/128']
    profiles: [databases]
- apiVersion: v1
  kind: hostEndpoint
  metadata: {name: eth1, node: node1}
  spec: {interfaceName: eth1, expectedIPs: [10.1.0.1]}
- apiVersion: v1
  kind: ipPool
  metadata: {cidr: 192.168.0.0/16}
  spec: {nat-outgoing: true, ipip: {enabled: true}}
"#;

#[test]
fn palisade_writes_what_libcalico_go_writes() {
    let p = etcd_palisade();
    p.apply(RESOURCES);
    let etcd = p.etcd().unwrap();
    let expected: Vec<(&str, &str)> = vec![
        ("/calico/v1/Ready", "true"),
        (
            "/calico/v1/host/node1/endpoint/eth1",
            r#"{"name":"eth1","expected_ipv4_addrs":["10.1.0.1"]}"#,
        ),
        (
            "/calico/v1/host/node1/workload/libnetwork/libnetwork/endpoint/eth0",
            r#"{"state":"active","name":"cali12345678901","active_instance_id":"","mac":"ee:ee:ee:ee:ee:ee","profile_ids":["databases"],"ipv4_nets":["192.168.0.11/32"],"ipv6_nets":["fd00::11/128"],"labels":{"app":"web"}}"#,
        ),
        (
            "/calico/v1/ipam/v4/pool/192.168.0.0-16",
            r#"{"cidr":"192.168.0.0/16","ipip":"tunl0","ipip_mode":"","masquerade":true,"ipam":true,"disabled":false}"#,
        ),
        (
            "/calico/v1/policy/profile/databases/labels",
            r#"{"role":"database"}"#,
        ),
        (
            "/calico/v1/policy/profile/databases/rules",
            concat!(
                r#"{"inbound_rules":[{"action":"allow","protocol":"tcp","src_selector":"role == 'app'","dst_ports":[3306]},"#,
                r#"{"action":"next-tier","!src_nets":["10.0.0.0/8"]}],"outbound_rules":[{"action":"allow"}]}"#
            ),
        ),
        ("/calico/v1/policy/profile/databases/tags", r#"["db"]"#),
        ("/calico/v1/policy/profile/team%2fapps/labels", "{}"),
        ("/calico/v1/policy/profile/team%2fapps/rules", "{}"),
        ("/calico/v1/policy/profile/team%2fapps/tags", "[]"),
        (
            "/calico/v1/policy/tier/default/policy/deny-icmp",
            r#"{"order":10,"inbound_rules":[{"action":"deny","protocol":"icmp","icmp_type":8}],"selector":"has(role)","types":["ingress"]}"#,
        ),
    ];
    let dump = etcd.dump("/calico");
    let dump: Vec<(&str, &str)> = dump.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(dump, expected);

    // And palisade reads it back as written (names with '/' included).
    p.run(&["get", "profile", "-o", "wide"]).expect(
        0,
        &lines(&[
            "NAME        TAGS   ",
            "databases   db     ",
            "team/apps          ",
            "",
        ]),
    );
    // A delete removes every key of the resource, the profile's three together.
    p.run(&["delete", "profile", "team/apps"])
        .expect(0, "Successfully deleted 1 'profile' resource(s)\n");
    assert!(etcd.dump("/calico/v1/policy/profile/team").is_empty());
}

/// What the Calico Docker plugin (libnetwork-plugin v1.1) writes for two containers on
/// network `net1` and one on `net2`, and a Felix 1.x-era policy without `types`.
const CALICO_WRITTEN: &[(&str, &str)] = &[
    ("/calico/v1/Ready", "true"),
    ("/calico/v1/config/LogSeverityScreen", "info"),
    ("/calico/v1/host/node1/metadata", "{}"),
    ("/calico/v1/policy/profile/net1/tags", r#"["net1"]"#),
    ("/calico/v1/policy/profile/net1/labels", "{}"),
    (
        "/calico/v1/policy/profile/net1/rules",
        r#"{"inbound_rules":[{"action":"allow","src_tag":"net1"}],"outbound_rules":[{"action":"allow"}]}"#,
    ),
    ("/calico/v1/policy/profile/net2/tags", r#"["net2"]"#),
    ("/calico/v1/policy/profile/net2/labels", "{}"),
    (
        "/calico/v1/policy/profile/net2/rules",
        r#"{"inbound_rules":[{"action":"allow","src_tag":"net2"}],"outbound_rules":[{"action":"allow"}]}"#,
    ),
    (
        "/calico/v1/host/node1/workload/libnetwork/libnetwork/endpoint/aaaa",
        r#"{"state":"active","name":"caliaaaa","active_instance_id":"","mac":"ee:ee:ee:ee:ee:ee","profile_ids":["net1"],"ipv4_nets":["192.168.0.1/32"],"ipv6_nets":[]}"#,
    ),
    (
        "/calico/v1/host/node1/workload/libnetwork/libnetwork/endpoint/bbbb",
        r#"{"state":"active","name":"calibbbb","active_instance_id":"","mac":"ee:ee:ee:ee:ee:ee","profile_ids":["net1"],"ipv4_nets":["192.168.0.2/32"],"ipv6_nets":[]}"#,
    ),
    (
        "/calico/v1/host/node2/workload/libnetwork/libnetwork/endpoint/cccc",
        r#"{"state":"active","name":"calicccc","active_instance_id":"","mac":"ee:ee:ee:ee:ee:ee","profile_ids":["net2"],"ipv4_nets":["192.168.0.3/32"],"ipv6_nets":[]}"#,
    ),
    (
        "/calico/v1/policy/tier/default/policy/no-ssh",
        r#"{"order":5,"selector":"has(net1)","inbound_rules":[{"action":"deny","protocol":"tcp","dst_ports":[22]},{"action":"next-tier"}],"outbound_rules":[{"action":"next-tier"}]}"#,
    ),
];

#[test]
fn keys_written_by_calico_tools_are_read_and_enforced() {
    let p = etcd_palisade();
    let etcd = p.etcd().unwrap();
    for (key, value) in CALICO_WRITTEN {
        etcd.etcdctl(&["put", key, value]);
    }
    p.run(&["get", "workloadendpoints"]).expect(
        0,
        &lines(&[
            "NODE    ORCHESTRATOR   WORKLOAD     NAME   ",
            "node1   libnetwork     libnetwork   aaaa   ",
            "node1   libnetwork     libnetwork   bbbb   ",
            "node2   libnetwork     libnetwork   cccc   ",
            "",
        ]),
    );
    p.run(&["get", "profile", "net1", "-o", "yaml"]).expect(
        0,
        &lines(&[
            "- apiVersion: v1",
            "  kind: profile",
            "  metadata:",
            "    name: net1",
            "    tags:",
            "    - net1",
            "  spec:",
            "    egress:",
            "    - action: allow",
            "      destination: {}",
            "      source: {}",
            "    ingress:",
            "    - action: allow",
            "      destination: {}",
            "      source:",
            "        tag: net1",
        ]),
    );
    p.run(&["get", "policy", "-o", "wide"]).expect(
        0,
        &lines(&[
            "NAME     ORDER   SELECTOR    ",
            "no-ssh   5       has(net1)   ",
            "",
        ]),
    );
    p.run(&["profile", "net1", "rule", "show"]).expect(
        0,
        &lines(&[
            "Inbound rules:",
            "   1 allow from tag net1",
            "Outbound rules:",
            "   1 allow",
        ]),
    );
    let verdict = |src: &str, dst: &str, proto: &str, port: &str| -> String {
        let run = p.run(&[
            "trace",
            "--src",
            src,
            "--dst",
            dst,
            "--protocol",
            proto,
            "--dport",
            port,
        ]);
        assert_eq!(run.code, 0, "{run:?}");
        run.stdout.lines().last().unwrap().to_string()
    };
    // Same network: allowed by the profile's tag rule, except ssh, which the policy
    // denies before it passes everything else on to the profiles (`next-tier`; stored
    // without types, it governs both directions).
    assert_eq!(verdict("aaaa", "bbbb", "tcp", "80"), "verdict: allow");
    assert_eq!(verdict("aaaa", "bbbb", "tcp", "22"), "verdict: deny");
    // Across networks: net2's profile admits only its own tag.
    assert_eq!(verdict("aaaa", "cccc", "tcp", "80"), "verdict: deny");
    assert_eq!(verdict("cccc", "aaaa", "udp", "53"), "verdict: deny");
}
