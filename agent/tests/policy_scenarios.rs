//! The policy-evaluation scenarios of `shared/conformance/policy-scenarios.md` (taken from
//! Felix's own tests), run through the reference evaluator.
//!
//! Not run, and why: §3's `adminUp=false` chain (v1 resources have no admin state), §5's
//! named-port vectors (v3 only) and "allow from tcp:0-80" (port 0 is invalid in v1, so the
//! policy is rejected), and §6 (host-endpoint enforcement: failsafe ports, doNotTrack and
//! preDNAT chains on host interfaces; palisade enforces policy on workloads, and host
//! endpoints take part only as peers). §2's host-endpoint rows are checked for which
//! policy lists apply, which the evaluator does model.

use std::net::IpAddr;

use palisade::model::{Resource, validate};
use palisade::policy::{Direction, Model, Packet, PolicyClass, Verdict};
use serde_json::{Value, json};

fn shared_dir() -> std::path::PathBuf {
    std::env::var_os("PALISADE_SHARED_DIR")
        .map(Into::into)
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared").into())
}

/// The JSON lines of every ```jsonl block under the section whose heading starts `## <n>.`
fn section_vectors(section: u32) -> Vec<Value> {
    let path = shared_dir().join("conformance/policy-scenarios.md");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut in_section = false;
    let mut in_block = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("## ") {
            in_section = rest.starts_with(&format!("{section}."));
            continue;
        }
        if line.starts_with("```") {
            in_block = in_section && line.trim() == "```jsonl";
            continue;
        }
        if in_block && !line.trim().is_empty() {
            out.push(serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}")));
        }
    }
    assert!(!out.is_empty(), "no vectors found in section {section}");
    out
}

fn resource(v: Value) -> Resource {
    let mut r: Resource = serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{v}: {e}"));
    validate::normalize(&mut r);
    r
}

fn profile(name: &str, spec: Value, tags: &[&str], labels: Value) -> Resource {
    resource(json!({"apiVersion": "v1", "kind": "profile",
        "metadata": {"name": name, "tags": tags, "labels": labels}, "spec": spec}))
}

fn workload(name: &str, ips: &[&str], labels: Value, profiles: &[&str]) -> Resource {
    let nets: Vec<String> = ips
        .iter()
        .map(|ip| {
            if ip.contains(':') {
                format!("{ip}/128")
            } else {
                format!("{ip}/32")
            }
        })
        .collect();
    resource(json!({"apiVersion": "v1", "kind": "workloadEndpoint",
        "metadata": {"name": name, "node": "node1", "orchestrator": "test", "workload": name,
                     "labels": labels},
        "spec": {"interfaceName": format!("cali{name}"), "ipNetworks": nets, "profiles": profiles}}))
}

fn wep_key(name: &str) -> palisade::model::ResourceKey {
    palisade::model::ResourceKey::WorkloadEndpoint {
        node: "node1".into(),
        orchestrator: "test".into(),
        workload: name.into(),
        name: name.into(),
    }
}

fn tcp(src: &str, dst: &str, dport: u16) -> Packet {
    Packet::new(
        src.parse().unwrap(),
        dst.parse().unwrap(),
        6,
        (40000, dport),
        (0, 0),
    )
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().map(|x| x.as_str().unwrap()).collect())
        .unwrap_or_default()
}

// §1: Felix fv ingress/egress and policy types.
#[test]
fn section_1_ingress_egress_and_types() {
    let ips = ["10.65.0.10", "10.65.0.11", "10.65.0.12"];
    let mut failures = Vec::new();
    let vectors = section_vectors(1);
    for v in &vectors {
        let mut resources = vec![profile(
            "default",
            json!({"egress": [{"action": "allow"}],
                   "ingress": [{"action": "allow", "source": {"tag": "default"}}]}),
            &["default"],
            json!({}),
        )];
        for (i, ip) in ips.iter().enumerate() {
            resources.push(workload(
                &format!("w{i}"),
                &[ip],
                json!({"name": format!("w{i}")}),
                &["default"],
            ));
        }
        for p in v["policies"].as_array().unwrap() {
            let text = p
                .to_string()
                .replace("sel(w0)", "name == 'w0'")
                .replace("sel(w1)", "name == 'w1'");
            let mut spec: Value = serde_json::from_str(&text).unwrap();
            let name = spec.as_object_mut().unwrap().remove("name").unwrap();
            resources.push(resource(json!({"apiVersion": "v1", "kind": "policy",
                "metadata": {"name": name}, "spec": spec})));
        }
        let model = Model::new(resources);
        assert!(model.rejected.is_empty(), "{:?}", model.rejected);
        for (flow, expect) in v["expect"].as_object().unwrap() {
            let (a, b) = flow.split_once("->").unwrap();
            let ia: usize = a[1..].parse().unwrap();
            let ib: usize = b[1..].parse().unwrap();
            let pkt = tcp(ips[ia], ips[ib], 8055);
            let got = model
                .evaluate_flow(Some(&wep_key(a)), Some(&wep_key(b)), &pkt)
                .verdict();
            if (got == Verdict::Allow) != expect.as_bool().unwrap() {
                failures.push(format!(
                    "{}: {flow} expected {expect}, got {got}",
                    v["case"]
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(vectors.len(), 6);
}

fn policy_resource(p: &Value) -> Resource {
    let mut spec = json!({"selector": "a == 'a'"});
    let obj = spec.as_object_mut().unwrap();
    if let Some(o) = p.get("order") {
        obj.insert("order".into(), o.clone());
    }
    if let Some(t) = p.get("types").filter(|t| t.is_array()) {
        obj.insert("types".into(), t.clone());
    }
    for flag in ["doNotTrack", "preDNAT"] {
        if let Some(f) = p.get(flag) {
            obj.insert(flag.into(), f.clone());
        }
    }
    // Felix's calc-graph tests use policies with rules in both directions (a preDNAT
    // policy has ingress rules only); `types` then decides what they govern.
    obj.insert("ingress".into(), json!([{"action": "allow"}]));
    if p.get("ingress_rules_only").is_none() && p.get("preDNAT").is_none() {
        obj.insert("egress".into(), json!([{"action": "allow"}]));
    }
    resource(json!({"apiVersion": "v1", "kind": "policy",
        "metadata": {"name": p["name"]}, "spec": spec}))
}

fn hep1(with_ips: bool) -> Resource {
    let mut spec =
        json!({"interfaceName": "eth1", "profiles": ["prof-1", "prof-2", "prof-missing"]});
    if with_ips {
        spec["expectedIPs"] = json!(["10.0.0.1", "10.0.0.2"]);
    }
    resource(json!({"apiVersion": "v1", "kind": "hostEndpoint",
        "metadata": {"name": "hep1", "node": "node1",
                     "labels": {"id": "loc-ep-1", "a": "a", "b": "b"}},
        "spec": spec}))
}

fn section_2_world(policies: Vec<Resource>) -> Model {
    let mut rs = vec![
        workload(
            "ep1",
            &["10.0.0.1", "10.0.0.2", "fc00:fe11::1", "fc00:fe11::2"],
            json!({"id": "loc-ep-1", "a": "a", "b": "b"}),
            &["prof-1", "prof-2", "prof-missing"],
        ),
        workload(
            "ep2",
            &["10.0.0.2", "10.0.0.3", "fc00:fe11::2", "fc00:fe11::3"],
            json!({"id": "loc-ep-2", "a": "a", "b": "b2"}),
            &["prof-2", "prof-3"],
        ),
        profile(
            "prof-1",
            json!({}),
            &["tag-1"],
            json!({"profile": "prof-1"}),
        ),
        profile("prof-2", json!({}), &[], json!({"profile": "prof-2"})),
        profile("prof-3", json!({}), &[], json!({"profile": "prof-3"})),
    ];
    rs.extend(policies);
    Model::new(rs)
}

// §2: which policies apply to an endpoint, in which lists and in which order.
#[test]
fn section_2_policy_selection_and_order() {
    let vectors = section_vectors(2);
    let mut failures = Vec::new();
    for v in &vectors {
        let policies: Vec<Resource> = match (&v["policy"], &v["policies"]) {
            (Value::Object(_), _) => vec![policy_resource(&v["policy"])],
            (_, Value::Array(ps)) => ps.iter().map(policy_resource).collect(),
            _ => vec![],
        };
        let model = section_2_world(policies);
        assert!(model.rejected.is_empty(), "{:?}", model.rejected);
        let ep = v["endpoint"].as_str().unwrap();
        let labels = if ep == "hep1" {
            let Resource::HostEndpoint(h) = hep1(false) else {
                unreachable!()
            };
            model.host_endpoint_labels(&h)
        } else {
            model.effective_labels(&wep_key(ep)).unwrap().clone()
        };
        let lists = |class| {
            (
                model.applicable_policies(&labels, class, Direction::Ingress),
                model.applicable_policies(&labels, class, Direction::Egress),
            )
        };
        let mut check = |what: &str, class, expected: &Value| {
            let (ing, eg) = lists(class);
            if ing != strs(&expected["ingress"]) || eg != strs(&expected["egress"]) {
                failures.push(format!("{v}: {what} lists ingress {ing:?} egress {eg:?}"));
            }
        };
        for (field, class) in [
            ("normal", PolicyClass::Normal),
            ("untracked", PolicyClass::Untracked),
            ("preDNAT", PolicyClass::PreDnat),
        ] {
            if let Some(expected) = v.get(field) {
                check(field, class, expected);
            }
        }
        if let Some(order) = v.get("order_both_directions") {
            let (ing, eg) = lists(PolicyClass::Normal);
            if ing != strs(order) || eg != strs(order) {
                failures.push(format!("{v}: order ingress {ing:?} egress {eg:?}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(vectors.len(), 11);
}

/// §2's IP-set facts, observed through a rule: which source addresses a selector admits.
#[test]
fn section_2_rule_selector_ip_sets() {
    let cases: [(&str, &[&str]); 4] = [
        (
            "all()",
            &[
                "10.0.0.1",
                "10.0.0.2",
                "10.0.0.3",
                "fc00:fe11::1",
                "fc00:fe11::2",
                "fc00:fe11::3",
            ],
        ),
        (
            "b == 'b'",
            &["10.0.0.1", "10.0.0.2", "fc00:fe11::1", "fc00:fe11::2"],
        ),
        (
            "has(tag-1)",
            &["10.0.0.1", "10.0.0.2", "fc00:fe11::1", "fc00:fe11::2"],
        ),
        ("tag-1 == 'foobar'", &[]),
    ];
    let candidates = [
        "10.0.0.1",
        "10.0.0.2",
        "10.0.0.3",
        "10.0.0.4",
        "fc00:fe11::1",
        "fc00:fe11::2",
        "fc00:fe11::3",
        "fc00:fe11::4",
    ];
    for (sel, members) in cases {
        let pol = resource(
            json!({"apiVersion": "v1", "kind": "policy", "metadata": {"name": "p"},
            "spec": {"selector": "id == 'loc-ep-1'",
                     "ingress": [{"action": "allow", "source": {"selector": sel}}]}}),
        );
        let model = section_2_world(vec![pol]);
        for c in candidates {
            let dst = if c.contains(':') {
                "fc00:fe11::1"
            } else {
                "10.0.0.1"
            };
            let got = model
                .evaluate(&wep_key("ep1"), Direction::Ingress, &tcp(c, dst, 80))
                .unwrap();
            assert_eq!(
                got.verdict == Verdict::Allow,
                members.contains(&c),
                "selector {sel}, source {c}: {got}"
            );
        }
    }
    // "explicit profile label overrides tag": prof-1 labels tag-1 = foobar.
    let pol = resource(
        json!({"apiVersion": "v1", "kind": "policy", "metadata": {"name": "p"},
        "spec": {"selector": "id == 'loc-ep-1'",
                 "ingress": [{"action": "allow", "source": {"selector": "tag-1 == 'foobar'"}}]}}),
    );
    let mut rs = vec![
        pol,
        workload("ep1", &["10.0.0.1"], json!({"id": "loc-ep-1"}), &["prof-1"]),
        profile("prof-1", json!({}), &["tag-1"], json!({"tag-1": "foobar"})),
    ];
    rs.push(hep1(true));
    let model = Model::new(rs);
    let got = model
        .evaluate(
            &wep_key("ep1"),
            Direction::Ingress,
            &tcp("10.0.0.1", "10.0.0.1", 80),
        )
        .unwrap();
    assert_eq!(got.verdict, Verdict::Allow, "{got}");
}

// §4: flow control between the policy tier and the profiles (v1 analogues).
#[test]
fn section_4_flow_control() {
    let vectors = section_vectors(4);
    assert_eq!(vectors.len(), 6);
    // (policy rules, or None for no policy; profile rules, or None for no profile; verdict)
    type Case = (Option<Value>, Option<Value>, Verdict);
    let cases: [(&str, Case); 6] = [
        ("no tiers", (None, None, Verdict::Deny)),
        (
            "empty tier has no impact",
            (None, Some(json!([{"action": "allow"}])), Verdict::Allow),
        ),
        (
            "unreachable tier",
            (
                Some(json!([{"action": "allow"}])),
                Some(json!([{"action": "deny"}])),
                Verdict::Allow,
            ),
        ),
        (
            "pass to nowhere",
            (Some(json!([{"action": "pass"}])), None, Verdict::Deny),
        ),
        (
            "pass to allow",
            (
                Some(json!([{"action": "pass"}, {"action": "deny"}])),
                Some(json!([{"action": "allow"}])),
                Verdict::Allow,
            ),
        ),
        (
            "pass to deny",
            (
                Some(json!([{"action": "pass"}, {"action": "allow"}])),
                Some(json!([{"action": "deny"}])),
                Verdict::Deny,
            ),
        ),
    ];
    for (name, (pol, prof, want)) in cases {
        let vector = vectors
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no vector {name}"));
        assert_eq!(
            vector["verdict_all"] == "ALLOW",
            want == Verdict::Allow,
            "{name}"
        );
        let mut rs = vec![];
        let mut profiles = vec![];
        if let Some(rules) = prof {
            rs.push(profile(
                "prof",
                json!({"ingress": rules, "egress": rules}),
                &[],
                json!({}),
            ));
            profiles.push("prof");
        }
        if let Some(rules) = pol {
            rs.push(resource(json!({"apiVersion": "v1", "kind": "policy",
                "metadata": {"name": "pol"}, "spec": {"ingress": rules, "egress": rules}})));
        }
        rs.push(workload("ep", &["10.0.0.2"], json!({}), &profiles));
        let model = Model::new(rs);
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let packets = [
            tcp("10.0.0.1", "10.0.0.2", 80),
            Packet::new(ip("10.0.0.2"), ip("10.0.0.1"), 6, (80, 31245), (0, 0)),
            Packet::new(ip("10.0.0.1"), ip("10.0.0.2"), 1, (0, 0), (0, 0)),
            Packet::new(ip("10.0.0.1"), ip("10.0.0.2"), 253, (0, 0), (0, 0)),
        ];
        for dir in [Direction::Ingress, Direction::Egress] {
            for p in &packets {
                let d = model.evaluate(&wep_key("ep"), dir, p).unwrap();
                assert_eq!(d.verdict, want, "{name} {dir} {p}: {d}");
            }
        }
    }
}

/// Parses `proto src[:port] -> dst[:port] [type=T code=C]`.
fn parse_packet(s: &str) -> Packet {
    let words: Vec<&str> = s.split_whitespace().collect();
    let proto = match words[0] {
        "tcp" => 6,
        "udp" => 17,
        "icmp" => 1,
        p => p.strip_prefix("proto").unwrap().parse().unwrap(),
    };
    let addr = |w: &str| -> (IpAddr, u16) {
        match w.rsplit_once(':') {
            Some((ip, port)) if !ip.contains(':') => (ip.parse().unwrap(), port.parse().unwrap()),
            _ => (w.parse().unwrap(), 0),
        }
    };
    let (src, sport) = addr(words[1]);
    let (dst, dport) = addr(words[3]);
    let mut icmp = (0, 0);
    for w in &words[4..] {
        if let Some(t) = w.strip_prefix("type=") {
            icmp.0 = t.parse().unwrap();
        }
        if let Some(c) = w.strip_prefix("code=") {
            icmp.1 = c.parse().unwrap();
        }
    }
    Packet::new(src, dst, proto, (sport, dport), icmp)
}

/// A §5 rule in v1 form. IP sets become the selector `has(set-X)`; see `ip_set_endpoints`.
fn v1_rule(rule_json: &Value) -> Value {
    let mut rule = json!({"action": rule_json["action"]});
    for (k, val) in rule_json.as_object().unwrap() {
        let Some((side, field)) = k.split_once('.') else {
            if k != "action" {
                rule[k] = val.clone();
            }
            continue;
        };
        match field.split_once("->") {
            Some((f, "ipset")) => {
                rule[side][f] = json!(format!("has(set-{})", val[0].as_str().unwrap()));
            }
            _ => rule[side][field] = val.clone(),
        }
    }
    rule
}

/// Host endpoints labelled `set-X` owning every packet address that set X's CIDRs contain.
fn ip_set_endpoints(v: &Value, packets: &[(Packet, bool)]) -> Vec<Resource> {
    let mut out = vec![];
    for (set, members) in v
        .get("ipsets")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let nets: Vec<ipnet::IpNet> = strs(members).iter().map(|m| m.parse().unwrap()).collect();
        let mut ips: Vec<IpAddr> = packets
            .iter()
            .flat_map(|(p, _)| [p.src, p.dst])
            .filter(|ip| nets.iter().any(|n| n.contains(ip)))
            .collect();
        ips.sort();
        ips.dedup();
        if !ips.is_empty() {
            out.push(resource(json!({"apiVersion": "v1", "kind": "hostEndpoint",
                "metadata": {"name": format!("set-{set}"), "node": "n",
                             "labels": {format!("set-{set}"): ""}},
                "spec": {"expectedIPs": ips}})));
        }
    }
    out
}

// §5: single-rule match vectors.
#[test]
fn section_5_rule_matches() {
    let vectors = section_vectors(5);
    let mut ran = 0;
    let mut failures = Vec::new();
    for v in &vectors {
        let name = v["name"].as_str().unwrap();
        let rule_json = &v["rules"][0];
        if rule_json
            .as_object()
            .unwrap()
            .keys()
            .any(|k| k.contains("namedPort"))
        {
            continue; // v3 only
        }
        if name == "allow from tcp:0-80" {
            continue; // port 0 is invalid in v1: the policy would be rejected
        }
        let packets: Vec<(Packet, bool)> = ["allowed", "dropped"]
            .iter()
            .flat_map(|k| {
                strs(&v[*k])
                    .into_iter()
                    .map(move |p| (parse_packet(p), *k == "allowed"))
            })
            .collect();
        let mut rs = ip_set_endpoints(v, &packets);
        rs.push(resource(
            json!({"apiVersion": "v1", "kind": "policy", "metadata": {"name": "pol"},
            "spec": {"types": ["ingress"], "ingress": [v1_rule(rule_json)]}}),
        ));
        rs.push(workload("ep", &["10.99.0.1"], json!({}), &[]));
        let model = Model::new(rs);
        assert!(
            model.rejected.is_empty(),
            "{name}: rejected {:?}",
            model.rejected
        );
        for (p, allowed) in packets {
            let d = model
                .evaluate(&wep_key("ep"), Direction::Ingress, &p)
                .unwrap();
            if (d.verdict == Verdict::Allow) != allowed {
                failures.push(format!("{name}: {p} expected allowed={allowed}, got {d}"));
            }
        }
        ran += 1;
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(ran >= 30, "only {ran} vectors ran");
}

// §3, the part with a v1 meaning: no policy and no profile drops everything new.
#[test]
fn section_3_no_policy_no_profile_drops() {
    let model = Model::new([workload("ep", &["10.0.0.2"], json!({}), &[])]);
    for dir in [Direction::Ingress, Direction::Egress] {
        let d = model
            .evaluate(&wep_key("ep"), dir, &tcp("10.0.0.1", "10.0.0.2", 80))
            .unwrap();
        assert_eq!(d.verdict, Verdict::Deny);
    }
}

fn default_profile(name: &str) -> Resource {
    profile(
        name,
        json!({"ingress": [{"action": "allow", "source": {"tag": name}}],
               "egress": [{"action": "allow"}]}),
        &[name],
        json!({}),
    )
}

fn ping(model: &Model, a: &str, a_ip: &str, b: &str, b_ip: &str) -> bool {
    let p = Packet::new(
        a_ip.parse().unwrap(),
        b_ip.parse().unwrap(),
        1,
        (0, 0),
        (8, 0),
    );
    model
        .evaluate_flow(Some(&wep_key(a)), Some(&wep_key(b)), &p)
        .verdict()
        == Verdict::Allow
}

// §7: profiles and tags only.
#[test]
fn section_7_profiles_and_tags() {
    let vectors = section_vectors(7);
    assert_eq!(vectors.len(), 3);
    // test_endpoint_commands_mainline: A, C, E in PROF_1_3_5; B in PROF_2; D in PROF_4.
    let members = [
        ("a", "PROF_1_3_5"),
        ("b", "PROF_2"),
        ("c", "PROF_1_3_5"),
        ("d", "PROF_4"),
        ("e", "PROF_1_3_5"),
    ];
    let mut rs: Vec<Resource> = ["PROF_1_3_5", "PROF_2", "PROF_4"]
        .iter()
        .map(|p| default_profile(p))
        .collect();
    for (i, (n, p)) in members.iter().enumerate() {
        rs.push(workload(
            n,
            &[&format!("10.1.0.{}", i + 1)],
            json!({}),
            &[p],
        ));
    }
    let model = Model::new(rs);
    for (i, (a, pa)) in members.iter().enumerate() {
        for (j, (b, pb)) in members.iter().enumerate() {
            if i != j {
                let ok = ping(
                    &model,
                    a,
                    &format!("10.1.0.{}", i + 1),
                    b,
                    &format!("10.1.0.{}", j + 1),
                );
                assert_eq!(ok, pa == pb, "{a} -> {b}");
            }
        }
    }
    // test_endpoint_commands: main's profile list changes; targets a, b, c.
    let steps = &vectors
        .iter()
        .find(|v| v["source"] == "calicoctl test_endpoint_commands")
        .unwrap()["expect"];
    for step in steps.as_array().unwrap() {
        let main_profiles = strs(&step["main.profiles"]);
        let mut rs: Vec<Resource> = ["PROF_A", "PROF_B", "PROF_C"]
            .iter()
            .map(|p| default_profile(p))
            .collect();
        rs.push(workload("main", &["10.2.0.1"], json!({}), &main_profiles));
        for (i, t) in ["a", "b", "c"].iter().enumerate() {
            let prof = format!("PROF_{}", t.to_uppercase());
            rs.push(workload(
                t,
                &[&format!("10.2.0.{}", i + 2)],
                json!({}),
                &[&prof],
            ));
        }
        let model = Model::new(rs);
        for (i, t) in ["a", "b", "c"].iter().enumerate() {
            let want = step[format!("main->{t}")].as_bool().unwrap();
            let got = ping(&model, "main", "10.2.0.1", t, &format!("10.2.0.{}", i + 2));
            assert_eq!(got, want, "profiles {main_profiles:?}: main -> {t}");
        }
    }
}
