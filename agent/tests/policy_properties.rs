//! Property: the evaluator's verdicts depend on the resources, not on the order in which
//! they were applied.

use palisade::model::{Resource, validate};
use palisade::policy::{Direction, Model, Packet};
use proptest::prelude::*;
use serde_json::{Value, json};

const IPS: [&str; 5] = ["10.0.0.1", "10.0.0.2", "10.0.0.5", "10.0.1.9", "192.0.2.1"];
const SELECTORS: [&str; 6] = [
    "role == 'db'",
    "role != 'db'",
    "has(tier)",
    "tier in {'a', 'b'}",
    "all()",
    "!has(env) && role == 'app'",
];
const NETS: [&str; 4] = ["10.0.0.0/30", "10.0.0.5/32", "10.0.0.0/16", "192.0.2.0/24"];

fn label_map() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(
        prop::sample::select(vec!["role", "tier", "env"]),
        prop::sample::select(vec!["db", "app", "a", "b"]),
        0..3,
    )
    .prop_map(|m| json!(m))
}

fn entity() -> impl Strategy<Value = Value> {
    (
        prop::option::of(prop::sample::select(SELECTORS.to_vec())),
        prop::option::of(prop::sample::select(SELECTORS.to_vec())),
        prop::option::of(prop::sample::select(vec!["web", "db", "t1"])),
        prop::option::of(prop::sample::select(NETS.to_vec())),
        prop::option::of(prop::sample::select(NETS.to_vec())),
    )
        .prop_map(|(sel, not_sel, tag, net, not_net)| {
            let mut e = json!({});
            if let Some(s) = sel {
                e["selector"] = json!(s);
            }
            if let Some(s) = not_sel {
                e["notSelector"] = json!(s);
            }
            if let Some(t) = tag {
                e["tag"] = json!(t);
            }
            if let Some(n) = net {
                e["nets"] = json!([n]);
            }
            if let Some(n) = not_net {
                e["notNets"] = json!([n]);
            }
            e
        })
}

fn rule() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(vec!["allow", "deny", "pass", "log"]),
        prop::option::of(prop::sample::select(vec!["tcp", "udp", "icmp"])),
        prop::option::of(prop::sample::select(vec![json!(80), json!("3000:3306")])),
        entity(),
        entity(),
    )
        .prop_map(|(action, proto, port, mut src, mut dst)| {
            let mut r = json!({"action": action});
            if let Some(p) = proto {
                r["protocol"] = json!(p);
                if let (Some(port), "tcp" | "udp") = (port, p) {
                    dst["ports"] = json!([port]);
                }
            }
            if src.as_object().is_some_and(|o| o.contains_key("nets")) {
                src.as_object_mut().unwrap().remove("notNets");
            }
            r["source"] = src;
            r["destination"] = dst;
            r
        })
}

fn world() -> impl Strategy<Value = Vec<Resource>> {
    let profiles = prop::collection::vec(
        (
            label_map(),
            prop::collection::vec(prop::sample::select(vec!["web", "db", "t1"]), 0..2),
            prop::collection::vec(rule(), 0..3),
            prop::collection::vec(rule(), 0..3),
        ),
        0..3,
    );
    let policies = prop::collection::vec(
        (
            prop::option::of(0..3i32),
            prop::sample::select(SELECTORS.to_vec()),
            prop::collection::vec(rule(), 0..3),
            prop::collection::vec(rule(), 0..3),
        ),
        0..4,
    );
    let endpoints =
        prop::collection::vec((label_map(), prop::collection::vec(0..4usize, 0..3)), 1..5);
    (profiles, policies, endpoints).prop_map(|(profiles, policies, endpoints)| {
        let mut out = vec![];
        for (i, (labels, tags, ingress, egress)) in profiles.into_iter().enumerate() {
            out.push(json!({"apiVersion": "v1", "kind": "profile",
                "metadata": {"name": format!("prof{i}"), "labels": labels, "tags": tags},
                "spec": {"ingress": ingress, "egress": egress}}));
        }
        for (i, (order, selector, ingress, egress)) in policies.into_iter().enumerate() {
            let mut spec = json!({"selector": selector, "ingress": ingress, "egress": egress});
            if let Some(o) = order {
                spec["order"] = json!(o);
            }
            out.push(json!({"apiVersion": "v1", "kind": "policy",
                "metadata": {"name": format!("pol{i}")}, "spec": spec}));
        }
        for (i, (labels, profiles)) in endpoints.into_iter().enumerate() {
            // Profile 3 is never created: a missing profile.
            let profiles: Vec<String> = profiles.iter().map(|p| format!("prof{p}")).collect();
            out.push(json!({"apiVersion": "v1", "kind": "workloadEndpoint",
                "metadata": {"name": format!("ep{i}"), "node": "n", "orchestrator": "o",
                             "workload": format!("w{i}"), "labels": labels},
                "spec": {"interfaceName": format!("cali{i}"), "ipNetworks": [format!("{}/32", IPS[i])],
                         "profiles": profiles}}));
        }
        out.into_iter()
            .map(|v| {
                let mut r: Resource = serde_json::from_value(v).unwrap();
                validate::normalize(&mut r);
                r
            })
            .collect()
    })
}

fn packet() -> impl Strategy<Value = Packet> {
    (
        prop::sample::select(IPS.to_vec()),
        prop::sample::select(IPS.to_vec()),
        prop::sample::select(vec![1u8, 6, 17, 132]),
        prop::sample::select(vec![80u16, 3000, 3306, 3307, 8080]),
        0..10u8,
    )
        .prop_map(|(s, d, proto, port, icmp_type)| {
            Packet::new(
                s.parse().unwrap(),
                d.parse().unwrap(),
                proto,
                (40000, port),
                (icmp_type, 0),
            )
        })
}

fn verdicts(model: &Model, packets: &[Packet]) -> Vec<String> {
    let keys: Vec<_> = model.workload_endpoints().map(|w| w.key()).collect();
    let mut out = vec![];
    for key in &keys {
        for dir in [Direction::Ingress, Direction::Egress] {
            for p in packets {
                out.push(format!(
                    "{key} {dir} {p}: {:?}",
                    model.evaluate(key, dir, p)
                ));
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn verdicts_do_not_depend_on_application_order(
        (resources, shuffled) in world().prop_flat_map(|rs| {
            let shuffled = Just(rs.clone()).prop_shuffle();
            (Just(rs), shuffled)
        }),
        packets in prop::collection::vec(packet(), 1..12),
    ) {
        let a = Model::new(resources);
        let b = Model::new(shuffled);
        prop_assert_eq!(verdicts(&a, &packets), verdicts(&b, &packets));
    }
}
