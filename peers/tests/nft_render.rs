//! The nftables rendering of the reference's worked example, and its updates.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use palisade::model::{Resource, validate};
use palisade::selector::Selector;
use palisade_peers::nft::{self, set_name};
use palisade_peers::{Family, View};

const EXAMPLE: &str = r#"
- apiVersion: v1
  kind: policy
  metadata: {name: allow-frontend}
  spec:
    order: 100
    selector: role == 'db'
    ingress:
    - action: pass
      source: {selector: role == 'admin'}
    - action: allow
      protocol: tcp
      source: {selector: role == 'frontend', notNets: [10.65.9.0/24]}
      destination: {ports: [5432, "5000:5500", 5600]}
    egress:
    - action: allow
- apiVersion: v1
  kind: profile
  metadata: {name: ns.default}
  spec:
    ingress:
    - {action: deny, protocol: icmp, notICMP: {type: 8, code: 0}}
- apiVersion: v1
  kind: workloadEndpoint
  metadata: {name: db, node: node1, orchestrator: k8s, workload: db, labels: {role: db}}
  spec: {interfaceName: cali1a2b3c4d5e6, ipNetworks: [10.65.0.2/32], profiles: [ns.default]}
- apiVersion: v1
  kind: workloadEndpoint
  metadata: {name: fe, node: node2, orchestrator: k8s, workload: fe, labels: {role: frontend}}
  spec: {interfaceName: cali0000000000f, ipNetworks: [10.65.0.1/32], profiles: [ns.default]}
"#;

fn resources(yaml: &str) -> Vec<Resource> {
    palisade::model::parse::parse_documents(yaml)
        .unwrap()
        .into_iter()
        .map(|mut r| {
            validate::normalize(&mut r);
            r
        })
        .collect()
}

#[test]
fn each_rule_is_one_nft_rule_and_pass_skips_to_the_profiles() {
    let ruleset = nft::render(&View::new(&resources(EXAMPLE)), "node1", Family::V4, "cali");
    let frontend = set_name(&Selector::parse("role == 'frontend'").unwrap());
    let admin = set_name(&Selector::parse("role == 'admin'").unwrap());
    assert_eq!(
        ruleset.sets[&frontend].iter().collect::<Vec<_>>(),
        ["10.65.0.1"]
    );
    assert!(ruleset.sets[&admin].is_empty());
    assert_eq!(
        ruleset.chains["pi-allow-frontend"],
        [
            format!("ip saddr @{admin} meta mark set meta mark | 0x2000000 return"),
            format!(
                "meta l4proto 6 ip saddr @{frontend} ip saddr != {{ 10.65.9.0/24 }} tcp dport {{ 5000-5500, 5600 }} accept"
            ),
        ]
    );
    assert_eq!(ruleset.chains["po-allow-frontend"], ["accept"]);
    assert_eq!(
        ruleset.chains["tw-cali1a2b3c4d5e6"],
        [
            "ct state invalid drop",
            "meta mark set meta mark & 0xfdffffff",
            "jump pi-allow-frontend",
            "meta mark & 0x2000000 == 0x2000000 goto tw-cali1a2b3c4d5e6-profiles",
            "drop",
        ]
    );
    assert_eq!(
        ruleset.chains["tw-cali1a2b3c4d5e6-profiles"],
        ["jump pri-ns.default", "drop"]
    );
    assert_eq!(
        ruleset.chains["pri-ns.default"],
        ["meta l4proto 1 icmp type . icmp code != { 8 . 0 } drop"]
    );
    assert_eq!(ruleset.to_workload["cali1a2b3c4d5e6"], "tw-cali1a2b3c4d5e6");
    assert!(!ruleset.chains.contains_key("tw-cali0000000000f"));
    let script = ruleset.script();
    assert!(script.contains(
        "add element ip calico to-wl { \"cali1a2b3c4d5e6\" : goto tw-cali1a2b3c4d5e6 }\n"
    ));
    assert!(script.contains("add rule ip calico forward-to-wl oifname \"cali*\" drop\n"));
}

#[test]
fn an_update_is_one_transaction_with_the_changed_chains() {
    let view = |yaml: &str| View::new(&resources(yaml));
    let old = nft::render(&view(EXAMPLE), "node1", Family::V4, "cali");
    let new = nft::render(
        &view(&EXAMPLE.replace("5600]", "5601]")),
        "node1",
        Family::V4,
        "cali",
    );
    let update = old.update_to(&new);
    assert_eq!(update.chains_touched, 1);
    let lines: Vec<&str> = update.script.lines().collect();
    assert_eq!(lines[0], "flush chain ip calico pi-allow-frontend");
    assert_eq!(lines.len(), 3, "{}", update.script);
    assert!(lines[2].contains("tcp dport { 5000-5500, 5601 }"));
    assert!(old.update_to(&old).script.is_empty());
}
