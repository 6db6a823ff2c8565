//! The seed example through the reference evaluator: the profile variant and the
//! global-policy variant give the verdicts the seed describes, and the same verdict as each
//! other on a grid of packets.

mod common;

use std::net::IpAddr;

use common::seeds;
use palisade::cli::trace::{TraceArgs, trace};
use palisade::model::{Resource, validate};
use palisade::policy::{Model, Packet, Verdict};

fn resources(yaml: &str) -> Vec<Resource> {
    let mut rs: Vec<Resource> = serde_yaml_ng::from_str(yaml).unwrap();
    for r in &mut rs {
        validate::normalize(r);
    }
    rs
}

fn profile_variant() -> Model {
    let mut rs = resources(seeds::PROFILES_WITH_RULES);
    rs.extend(resources(&seeds::endpoints_yaml("node1")));
    Model::new(rs)
}

fn policy_variant() -> Model {
    let mut rs = resources(seeds::PROFILES_LABELS_ONLY);
    rs.extend(resources(seeds::GLOBAL_POLICIES));
    rs.extend(resources(&seeds::endpoints_yaml("node1")));
    Model::new(rs)
}

fn trace_args(src: &str, dst: &str, protocol: &str, dport: Option<u16>) -> TraceArgs {
    TraceArgs {
        src: src.into(),
        dst: dst.into(),
        protocol: protocol.into(),
        sport: None,
        dport,
        icmp_type: None,
        icmp_code: None,
    }
}

fn verdict(model: &Model, src: &str, dst: &str, protocol: &str, dport: Option<u16>) -> String {
    let report = trace(&trace_args(src, dst, protocol, dport), model).unwrap();
    report.lines().last().unwrap().to_string()
}

#[test]
fn seed_verdicts_in_both_variants() {
    for (variant, model) in [
        ("profiles", profile_variant()),
        ("policies", policy_variant()),
    ] {
        assert!(model.rejected.is_empty(), "{variant}: {:?}", model.rejected);
        let check = |src: &str, dst: &str, proto: &str, dport: Option<u16>, want: &str| {
            assert_eq!(
                verdict(&model, src, dst, proto, dport),
                format!("verdict: {want}"),
                "{variant}: {src} -> {dst} {proto} {dport:?}"
            );
        };
        check("app1", "db1", "tcp", Some(3306), "allow");
        check("app2", "db2", "tcp", Some(3306), "allow");
        check("app1", "db1", "tcp", Some(3307), "deny");
        check("app1", "db1", "udp", Some(3306), "deny");
        for (proto, port) in [
            ("tcp", Some(5432)),
            ("udp", Some(53)),
            ("icmp", None),
            ("sctp", Some(9)),
        ] {
            check("db1", "db2", proto, port, "allow");
            check("db2", "db1", proto, port, "allow");
            check("db1", "app1", proto, port, "deny");
            check("app1", seeds::OUTSIDE_IP, proto, port, "allow");
            check("db1", seeds::OUTSIDE_IP, proto, port, "deny");
            check(seeds::OUTSIDE_IP, "db1", proto, port, "deny");
            check(seeds::OUTSIDE_IP, "app1", proto, port, "deny");
            check("app1", "app2", proto, port, "deny");
        }
    }
}

#[test]
fn trace_report_names_what_decided() {
    let report = trace(
        &trace_args("app1", "db1", "tcp", Some(3306)),
        &profile_variant(),
    )
    .unwrap();
    assert_eq!(
        report,
        "packet: tcp 192.168.0.21:49152 -> 192.168.0.11:3306\n\
         source: workloadEndpoint app1 (node1/libnetwork/libnetwork/app1)\n  \
         egress: allow by profile apps egress rule 1 (allow)\n\
         destination: workloadEndpoint db1 (node1/libnetwork/libnetwork/db1)\n  \
         ingress: allow by profile databases ingress rule 1 (allow)\n\
         verdict: allow\n"
    );
    let report = trace(
        &trace_args("app1", "db1", "tcp", Some(3307)),
        &policy_variant(),
    )
    .unwrap();
    assert!(
        report.contains("ingress: deny by end of policies"),
        "{report}"
    );
    let report = trace(
        &trace_args("db1", "app1", "tcp", Some(80)),
        &profile_variant(),
    )
    .unwrap();
    assert!(report.contains("egress: deny by default deny"), "{report}");
}

#[test]
fn both_variants_agree_on_a_grid_of_packets() {
    let (a, b) = (profile_variant(), policy_variant());
    let hosts = [
        "192.168.0.11",
        "192.168.0.12",
        "192.168.0.21",
        "192.168.0.22",
        seeds::OUTSIDE_IP,
    ];
    let mut packets = 0;
    let mut allowed = 0;
    for src in hosts {
        for dst in hosts {
            if src == dst {
                continue;
            }
            let (s, d): (IpAddr, IpAddr) = (src.parse().unwrap(), dst.parse().unwrap());
            let mut cases = vec![];
            for port in [22, 80, 443, 3305, 3306, 3307, 5432, 8080] {
                for proto in [6, 17] {
                    cases.push(Packet::new(s, d, proto, (49152, port), (0, 0)));
                }
            }
            cases.push(Packet::new(s, d, 1, (0, 0), (8, 0)));
            cases.push(Packet::new(s, d, 132, (1000, 3306), (0, 0)));
            for p in cases {
                let key = |m: &Model, ip: IpAddr| {
                    m.workload_endpoints()
                        .find(|w| w.spec.ip_networks.iter().any(|n| n.addr() == ip))
                        .map(|w| w.key())
                };
                let va = a
                    .evaluate_flow(key(&a, s).as_ref(), key(&a, d).as_ref(), &p)
                    .verdict();
                let vb = b
                    .evaluate_flow(key(&b, s).as_ref(), key(&b, d).as_ref(), &p)
                    .verdict();
                assert_eq!(va, vb, "{p}");
                packets += 1;
                allowed += usize::from(va == Verdict::Allow);
            }
        }
    }
    assert!(packets >= 200, "only {packets} packets");
    // A grid where everything is allowed (or denied) would prove nothing.
    assert!(
        allowed > 20 && allowed < packets - 20,
        "{allowed} of {packets} allowed"
    );
}

/// "Multiple networks": database containers on `database-backup` get both labels and so
/// both the locked-down database policy and the backup network's full access.
#[test]
fn multiple_networks_backup_label() {
    let mut rs = resources(seeds::PROFILES_LABELS_ONLY);
    rs.extend(resources(seeds::GLOBAL_POLICIES));
    rs.extend(resources(seeds::MULTIPLE_NETWORKS));
    rs.extend(resources(&seeds::endpoints_yaml("node1")));
    rs.extend(resources(
        "- apiVersion: v1
  kind: workloadEndpoint
  metadata: {name: dbb1, node: node1, orchestrator: libnetwork, workload: libnetwork}
  spec: {interfaceName: calidbb1, ipNetworks: [192.168.0.31/32], profiles: [database-backup]}
- apiVersion: v1
  kind: workloadEndpoint
  metadata: {name: bk1, node: node1, orchestrator: libnetwork, workload: libnetwork}
  spec: {interfaceName: calibk1, ipNetworks: [192.168.0.41/32], profiles: [backups]}
",
    ));
    let model = Model::new(rs);
    assert!(model.rejected.is_empty(), "{:?}", model.rejected);
    let check = |src: &str, dst: &str, proto: &str, dport: Option<u16>, want: &str| {
        assert_eq!(
            verdict(&model, src, dst, proto, dport),
            format!("verdict: {want}"),
            "{src} -> {dst} {proto} {dport:?}"
        );
    };
    for (proto, port) in [("tcp", Some(9000)), ("udp", Some(514)), ("icmp", None)] {
        check("dbb1", "bk1", proto, port, "allow");
        check("bk1", "dbb1", proto, port, "allow");
        check("dbb1", "db1", proto, port, "allow"); // database <-> database
        check("db1", "dbb1", proto, port, "allow");
        check("bk1", "db1", proto, port, "deny"); // db1 is not on the backup network
        check("db1", "bk1", proto, port, "deny");
        check("app1", "bk1", proto, port, "deny");
    }
    check("app1", "dbb1", "tcp", Some(3306), "allow");
    check("app1", "dbb1", "tcp", Some(3307), "deny");
}
