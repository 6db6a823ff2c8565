//! The image on a larger generated policy: entry counts (printed; run with `--nocapture`),
//! rules that ignore the peer not multiplied by peers, capacity errors, determinism.
#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use std::time::Instant;

use palisade::compile::{Capacities, CompileError, compile};
use palisade::model::{Resource, validate};
use serde_json::{Value, json};

const TIERS: [&str; 5] = ["web", "api", "db", "cache", "queue"];

/// `endpoints` workloads over 200 label sets (20 apps × 5 tiers × 2 envs), each with a v4
/// address and every fourth with a v6 one too, and `policies` policies of realistic shape:
/// selectors on app/tier/env, port ranges, CIDRs, some deny and pass, both directions.
fn generated(endpoints: usize, policies: usize) -> Vec<Resource> {
    let mut out: Vec<Value> = vec![];
    for env in ["prod", "dev"] {
        out.push(json!({"apiVersion": "v1", "kind": "profile",
            "metadata": {"name": format!("env-{env}"), "labels": {"env": env}, "tags": [env]},
            "spec": {"ingress": [{"action": "allow", "source": {"tag": env}}],
                     "egress": [{"action": "allow"}]}}));
    }
    for i in 0..endpoints {
        let set = i % 200;
        let (app, tier, env) = (set % 20, TIERS[(set / 20) % 5], ["prod", "dev"][set / 100]);
        let mut nets = vec![format!(
            "10.{}.{}.{}/32",
            1 + i / 62_500,
            (i / 250) % 250,
            1 + i % 250
        )];
        if i % 4 == 0 {
            nets.push(format!("fd00::{:x}/128", i + 1));
        }
        out.push(json!({"apiVersion": "v1", "kind": "workloadEndpoint",
            "metadata": {"name": format!("ep{i}"), "node": "n", "orchestrator": "o",
                         "workload": format!("w{i}"),
                         "labels": {"app": format!("app{app}"), "tier": tier}},
            "spec": {"interfaceName": format!("cali{i}"), "ipNetworks": nets,
                     "profiles": [format!("env-{env}")]}}));
    }
    for j in 0..policies {
        let app = j % 20;
        let tier = TIERS[j % 5];
        let mut ingress = vec![
            json!({"action": "allow", "protocol": "tcp",
                   "source": {"selector": format!("app == 'app{}'", (j + 1) % 20)},
                   "destination": {"ports": [8000 + j, "9000:9100"]}}),
            json!({"action": "deny", "source": {"nets": [format!("192.0.{}.0/24", j % 50)]}}),
            json!({"action": "allow", "protocol": "udp", "source": {"nets": ["10.0.0.0/8"]},
                   "destination": {"ports": ["5000:5999"], "notPorts": [5353]}}),
        ];
        if j % 10 == 0 {
            ingress.insert(
                0,
                json!({"action": "pass", "source": {"selector": "tier == 'web'"}}),
            );
        }
        if j % 7 == 0 {
            ingress
                .push(json!({"action": "log", "protocol": "tcp", "source": {"ports": ["1:1023"]}}));
        }
        let egress = vec![
            json!({"action": "allow", "protocol": "udp", "destination": {"ports": [53]}}),
            json!({"action": "allow", "protocol": "tcp",
                   "destination": {"selector": format!("tier == '{}'", TIERS[(j + 1) % 5]),
                                   "ports": ["443", "8000:8999"]}}),
            json!({"action": "deny", "destination": {"notNets": ["10.0.0.0/8", "172.16.0.0/12"]}}),
        ];
        let mut spec = json!({"order": j, "ingress": ingress, "egress": egress,
            "selector": format!("app == 'app{app}' && tier == '{tier}'")});
        if j % 3 == 0 {
            spec["selector"] = json!(format!("tier == '{tier}' && env == 'prod'"));
        }
        out.push(json!({"apiVersion": "v1", "kind": "policy",
            "metadata": {"name": format!("pol{j:03}")}, "spec": spec}));
    }
    out.into_iter()
        .map(|v| {
            let mut r: Resource = serde_json::from_value(v).unwrap();
            validate::normalize(&mut r);
            r
        })
        .collect()
}

#[test]
fn thousand_endpoints_hundred_policies() {
    let resources = generated(1000, 100);
    let start = Instant::now();
    let image = compile(resources.clone(), &Capacities::UNLIMITED).unwrap();
    let elapsed = start.elapsed();
    let stats = image.stats();
    eprintln!(
        "1000 endpoints, 200 label sets, 100 policies: compiled in {elapsed:?} ({} build)",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    eprintln!("{stats:#?}");
    // Every (local ID, direction) has its wildcard; specific entries only where the peer
    // changes the outcome: far fewer than local IDs × remote IDs.
    assert_eq!(stats.wildcard_entries, 2 * stats.local_ids);
    let ingress = image
        .specific
        .keys()
        .filter(|(_, _, d)| *d == palisade::policy::Direction::Ingress)
        .count();
    eprintln!(
        "specific entries: {ingress} ingress, {} egress; local × remote = {}",
        stats.specific_entries - ingress,
        stats.local_ids * stats.remote_ids
    );
    assert!(stats.specific_entries < stats.local_ids * stats.remote_ids / 2);

    let mut reversed = resources;
    reversed.reverse();
    let again = compile(reversed, &Capacities::UNLIMITED).unwrap();
    assert_eq!(image.encode(), again.encode());
}

#[test]
fn rules_that_ignore_the_peer_need_no_specific_entries() {
    let resources: Vec<Resource> = generated(300, 0);
    let image = compile(resources, &Capacities::UNLIMITED).unwrap();
    let stats = image.stats();
    // The profiles' ingress rule looks at the peer (tag); their egress rule does not.
    assert!(stats.specific_entries > 0);
    assert!(
        image
            .specific
            .keys()
            .all(|(_, _, d)| *d == palisade::policy::Direction::Ingress),
        "egress rules ignore the peer: no specific egress entries"
    );
}

#[test]
fn capacity_errors_name_every_limit_and_return_nothing_else() {
    let resources = generated(100, 10);
    let image = compile(resources.clone(), &Capacities::UNLIMITED).unwrap();
    let stats = image.stats();
    let tight = Capacities {
        local_ids: stats.local_ids - 1,
        table_rows: stats.table_rows - 1,
        ..Capacities::UNLIMITED
    };
    let err = compile(resources.clone(), &tight).unwrap_err();
    let CompileError::Capacity(exceeded) = &err else {
        panic!("{err}");
    };
    let names: Vec<(&str, usize)> = exceeded.iter().map(|e| (e.limit, e.needed)).collect();
    assert_eq!(
        names,
        vec![
            ("local IDs", stats.local_ids),
            ("table rows", stats.table_rows)
        ]
    );
    assert!(
        err.to_string()
            .contains(&format!("local IDs needed {}", stats.local_ids))
    );
    let exact = Capacities {
        local_ids: stats.local_ids,
        remote_ids: stats.remote_ids,
        endpoint_entries: stats.endpoint_entries,
        lpm_entries: stats.lpm_entries,
        policy_entries: stats.wildcard_entries + stats.specific_entries,
        tables: stats.tables,
        table_rows: stats.table_rows,
    };
    assert_eq!(compile(resources, &exact).unwrap(), image);
}
