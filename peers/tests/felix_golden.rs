//! The Felix renderer against the expected outputs in `../shared/reference/felix-iptables.md`:
//! the dispatch tree of §1.4, the endpoint chains of §1.5, the worked example of §1.11, and
//! the rule hashes of §1.8 (from real Felix dumps: felix#1421 and felix#1629).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use palisade::model::{Resource, validate};
use palisade_peers::felix::iptables::{Action, Chain, Rule};
use palisade_peers::felix::{self, Config, Way, dispatch_chains, endpoint_chain};
use palisade_peers::{Family, View};

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

fn lines(chain: &Chain) -> Vec<String> {
    chain.append_lines(false)
}

#[test]
fn dispatch_is_a_one_level_tree_by_the_character_after_the_common_prefix() {
    let chains = dispatch_chains(Way::FromWorkload, &["cali2444", "cali1234", "cali2333"]);
    let rendered: Vec<Vec<String>> = chains.iter().map(lines).collect();
    assert_eq!(
        rendered,
        [
            vec![
                "-A cali-from-wl-dispatch --in-interface cali1234 --goto cali-fw-cali1234",
                "-A cali-from-wl-dispatch --in-interface cali2+ --goto cali-from-wl-dispatch-2",
                "-A cali-from-wl-dispatch -m comment --comment \"Unknown interface\" --jump DROP",
            ],
            vec![
                "-A cali-from-wl-dispatch-2 --in-interface cali2333 --goto cali-fw-cali2333",
                "-A cali-from-wl-dispatch-2 --in-interface cali2444 --goto cali-fw-cali2444",
                "-A cali-from-wl-dispatch-2 -m comment --comment \"Unknown interface\" --jump DROP",
            ],
        ]
    );
    let to = dispatch_chains(Way::ToWorkload, &["cali1234", "cali2333", "cali2444"]);
    assert_eq!(
        lines(&to[0])[1],
        "-A cali-to-wl-dispatch --out-interface cali2+ --goto cali-to-wl-dispatch-2"
    );
    assert_eq!(
        lines(&to[1])[0],
        "-A cali-to-wl-dispatch-2 --out-interface cali2333 --goto cali-tw-cali2333"
    );
    // No endpoints: only the drop.
    assert_eq!(
        lines(&dispatch_chains(Way::ToWorkload, &[])[0]),
        ["-A cali-to-wl-dispatch -m comment --comment \"Unknown interface\" --jump DROP"]
    );
}

const WORKED_EXAMPLE: &str = r#"
- apiVersion: v1
  kind: policy
  metadata: {name: allow-frontend}
  spec:
    order: 100
    selector: role == 'db'
    ingress:
    - action: allow
      protocol: tcp
      source: {selector: role == 'frontend'}
      destination: {ports: [5432]}
    egress:
    - action: allow
- apiVersion: v1
  kind: profile
  metadata: {name: ns.default}
- apiVersion: v1
  kind: workloadEndpoint
  metadata: {name: db, node: node1, orchestrator: k8s, workload: db, labels: {role: db}}
  spec: {interfaceName: cali1a2b3c4d5e6, ipNetworks: [10.65.0.2/32], profiles: [ns.default]}
- apiVersion: v1
  kind: workloadEndpoint
  metadata: {name: fe, node: node2, orchestrator: k8s, workload: fe, labels: {role: frontend}}
  spec: {interfaceName: cali0000000000f, ipNetworks: [10.65.0.1/32], profiles: [ns.default]}
"#;

#[test]
fn the_worked_example_renders_as_the_reference_says() {
    let view = View::new(&resources(WORKED_EXAMPLE));
    let config = Config::felix_defaults(Family::V4).without_hash_comments();
    let ruleset = felix::render(&view, "node1", &config);
    let set = "cali4-s:lJVGDaqTNzSq4oOWKtH8pYj";
    assert_eq!(
        ruleset.ipset_restore(),
        format!("create {set} hash:ip family inet maxelem 1048576\nadd {set} 10.65.0.1\n")
    );
    let filter = ruleset.table("filter").unwrap();
    let chain = |name: &str| lines(filter.chain(name).unwrap_or_else(|| panic!("no {name}")));
    assert_eq!(
        chain("cali-pi-allow-frontend"),
        [
            format!(
                "-A cali-pi-allow-frontend -p tcp -m set --match-set {set} src -m multiport --destination-ports 5432 --jump MARK --set-mark 0x1000000/0x1000000"
            ),
            "-A cali-pi-allow-frontend -m mark --mark 0x1000000/0x1000000 --jump RETURN".into(),
        ]
    );
    assert_eq!(
        chain("cali-po-allow-frontend"),
        [
            "-A cali-po-allow-frontend --jump MARK --set-mark 0x1000000/0x1000000",
            "-A cali-po-allow-frontend -m mark --mark 0x1000000/0x1000000 --jump RETURN",
        ]
    );
    let tw = "-A cali-tw-cali1a2b3c4d5e6";
    assert_eq!(
        chain("cali-tw-cali1a2b3c4d5e6"),
        [
            format!("{tw} -m conntrack --ctstate RELATED,ESTABLISHED --jump ACCEPT"),
            format!("{tw} -m conntrack --ctstate INVALID --jump DROP"),
            format!("{tw} --jump MARK --set-mark 0/0x1000000"),
            format!(
                "{tw} -m comment --comment \"Start of policies\" --jump MARK --set-mark 0/0x2000000"
            ),
            format!("{tw} -m mark --mark 0/0x2000000 --jump cali-pi-allow-frontend"),
            format!(
                "{tw} -m comment --comment \"Return if policy accepted\" -m mark --mark 0x1000000/0x1000000 --jump RETURN"
            ),
            format!(
                "{tw} -m comment --comment \"Drop if no policies passed packet\" -m mark --mark 0/0x2000000 --jump DROP"
            ),
            format!("{tw} --jump cali-pri-ns.default"),
            format!(
                "{tw} -m comment --comment \"Return if profile accepted\" -m mark --mark 0x1000000/0x1000000 --jump RETURN"
            ),
            format!("{tw} -m comment --comment \"Drop if no profiles matched\" --jump DROP"),
        ]
    );
    // The mirror: egress policy and the profile's outbound chain.
    let fw = chain("cali-fw-cali1a2b3c4d5e6");
    assert_eq!(
        fw[4],
        "-A cali-fw-cali1a2b3c4d5e6 -m mark --mark 0/0x2000000 --jump cali-po-allow-frontend"
    );
    assert_eq!(
        fw[7],
        "-A cali-fw-cali1a2b3c4d5e6 --jump cali-pro-ns.default"
    );
    // Only the local endpoint has chains; the remote one is a set member only.
    assert!(filter.chain("cali-tw-cali0000000000f").is_none());
    assert_eq!(
        chain("cali-from-wl-dispatch"),
        [
            "-A cali-from-wl-dispatch --in-interface cali1a2b3c4d5e6 --goto cali-fw-cali1a2b3c4d5e6",
            "-A cali-from-wl-dispatch -m comment --comment \"Unknown interface\" --jump DROP",
        ]
    );
}

#[test]
fn rule_hashes_match_real_felix_dumps() {
    let config = Config::felix_defaults(Family::V4);
    // felix#1421: an endpoint with one profile and no policies.
    let tw = endpoint_chain(&config, "cali7de82f3e9d9", true, &[], &[("subnet1", true)]);
    assert_eq!(
        tw.hashes(),
        [
            "JyJfyCZDh5KLJMEG",
            "r0h9urDLgKviPdcf",
            "i4Ah6vw12IDVh7l-",
            "ii8UJF0GJI3jVhHx",
            "akPsh6yxx9_ZgopE",
            "Ff4EruL2KnhcC9AR"
        ]
    );
    // Hook rules hash under their built-in chain's name.
    let hook = |builtin: &str, target: &str| {
        Chain::new(
            builtin,
            vec![Rule::new(vec![], Action::Jump(target.into()))],
        )
        .hashes()
    };
    assert_eq!(hook("FORWARD", "cali-FORWARD"), ["wUHhoiAYhphO9Mso"]);
    assert_eq!(hook("INPUT", "cali-INPUT"), ["Cz_u1IQiXIMmKD4c"]);
    assert_eq!(hook("OUTPUT", "cali-OUTPUT"), ["tVnHkvAo15HuiPy0"]);
    // felix#1629: the raw table's static cali-PREROUTING.
    let ruleset = felix::render(&View::new(&[]), "node1", &config);
    let raw = ruleset.table("raw").unwrap();
    assert_eq!(
        raw.chain("cali-PREROUTING").unwrap().hashes(),
        [
            "zatSDPVUhhPCk6Iy",
            "-ES4EW0vxFmM81t8",
            "VE1J3S_1t9q8GAsm",
            "VX8l4jKL9w89GXz5"
        ]
    );
    let text = ruleset.iptables_restore();
    assert!(
        text.contains(
            "-A cali-PREROUTING -m comment --comment \"cali:-ES4EW0vxFmM81t8\" --in-interface cali+ --jump MARK --set-mark 0x4000000/0x4000000\n"
        ),
        "{text}"
    );
    assert!(text.contains(
        "-I FORWARD -m comment --comment \"cali:wUHhoiAYhphO9Mso\" --jump cali-FORWARD\n"
    ));
}

#[test]
fn several_cidrs_become_a_mark_block() {
    let view = View::new(&resources(
        r#"
- apiVersion: v1
  kind: profile
  metadata: {name: p}
  spec:
    ingress:
    - action: deny
      source: {nets: [10.0.0.0/8, 192.168.0.0/16], notNets: [10.1.0.0/16]}
    - action: allow
      protocol: tcp
      source: {net: 172.16.0.0/12, notNet: 172.16.1.0/24}
    - action: allow
      source: {nets: ["fd00::/8"]}
- apiVersion: v1
  kind: workloadEndpoint
  metadata: {name: a, node: n, orchestrator: k8s, workload: a}
  spec: {interfaceName: cali0a, ipNetworks: [10.65.0.2/32], profiles: [p]}
"#,
    ));
    let config = Config::felix_defaults(Family::V4).without_hash_comments();
    let ruleset = felix::render(&view, "n", &config);
    let pri = lines(
        ruleset
            .table("filter")
            .unwrap()
            .chain("cali-pri-p")
            .unwrap(),
    );
    let p = "-A cali-pri-p";
    assert_eq!(
        pri,
        [
            // Rule 1: two positive source CIDRs make a block; the one negated CIDR left
            // then fits the rule itself.
            format!("{p} --jump MARK --set-mark 0x0/0xc000000"),
            format!("{p} --source 10.0.0.0/8 --jump MARK --set-mark 0x4000000/0x4000000"),
            format!("{p} --source 192.168.0.0/16 --jump MARK --set-mark 0x4000000/0x4000000"),
            format!("{p} ! --source 10.1.0.0/16 -m mark --mark 0x4000000/0x4000000 --jump DROP"),
            // Rule 2: a positive and a negated source CIDR cannot share a rule: the
            // negated one becomes a block that clears the bit it starts with.
            format!("{p} --jump MARK --set-mark 0x4000000/0xc000000"),
            format!("{p} --source 172.16.1.0/24 --jump MARK --set-mark 0/0x4000000"),
            format!(
                "{p} -p tcp --source 172.16.0.0/12 -m mark --mark 0x4000000/0x4000000 --jump MARK --set-mark 0x1000000/0x1000000"
            ),
            format!("{p} -m mark --mark 0x1000000/0x1000000 --jump RETURN"),
            // Rule 3: IPv6 only, so not in the IPv4 ruleset.
        ]
    );
}

#[test]
fn an_update_rewrites_only_the_changed_rules() {
    let before = resources(WORKED_EXAMPLE);
    let after_yaml = WORKED_EXAMPLE.replace("ports: [5432]", "ports: [5433]");
    let after = resources(&after_yaml);
    let config = Config::felix_defaults(Family::V4);
    let old = felix::render(&View::new(&before), "node1", &config);
    let new = felix::render(&View::new(&after), "node1", &config);
    let update = old.update_to(&new);
    assert_eq!(update.chains_touched, 1);
    assert!(update.ipsets_before.is_empty() && update.ipsets_after.is_empty());
    let lines: Vec<&str> = update.iptables.lines().collect();
    assert_eq!(lines.len(), 4, "{}", update.iptables);
    assert_eq!(lines[0], "*filter");
    // The changed rule and the one after it (its hash chains in the one before).
    assert!(lines[1].starts_with("-R cali-pi-allow-frontend 1 -m comment --comment \"cali:"));
    assert!(lines[1].ends_with(
        "-m multiport --destination-ports 5433 --jump MARK --set-mark 0x1000000/0x1000000"
    ));
    assert!(lines[2].starts_with("-R cali-pi-allow-frontend 2 "));
    assert_eq!(lines[3], "COMMIT");
    assert!(old.update_to(&old).is_empty());

    // A policy that goes: its chains are flushed and deleted after the endpoint chains
    // stop jumping to them.
    let gone: Vec<Resource> = before
        .iter()
        .filter(|r| !matches!(r, Resource::Policy(_)))
        .cloned()
        .collect();
    let without = felix::render(&View::new(&gone), "node1", &config);
    let text = old.update_to(&without).iptables;
    let flush = text.find("--flush cali-pi-allow-frontend").unwrap();
    let delete = text.find("--delete-chain cali-pi-allow-frontend").unwrap();
    let last_replace = text.rfind("-R cali-tw-").unwrap();
    assert!(last_replace < flush && flush < delete, "{text}");
    assert!(
        old.update_to(&without)
            .ipsets_after
            .contains("destroy cali4-s:lJVGDaqTNzSq4oOWKtH8pYj")
    );
}
