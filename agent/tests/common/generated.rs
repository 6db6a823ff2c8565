//! Generated policy of realistic shape, for scale tests and benchmarks (the benchmark
//! includes this file by path).
#![allow(dead_code, clippy::unwrap_used)]

use palisade::model::{Resource, validate};
use serde_json::{Value, json};

pub const TIERS: [&str; 5] = ["web", "api", "db", "cache", "queue"];

/// `endpoints` workloads over 200 label sets (20 apps × 5 tiers × 2 envs), each with a v4
/// address and every fourth with a v6 one too, and `policies` policies of realistic shape:
/// selectors on app/tier/env, port ranges, CIDRs, some deny and pass, both directions.
pub fn generated(endpoints: usize, policies: usize) -> Vec<Resource> {
    generated_with(endpoints, 200, policies, "n")
}

/// [`generated`] with `label_sets` distinct label sets (a multiple of 200 spreads them over
/// more apps: `label_sets / 10` apps × 5 tiers × 2 envs), endpoints on `node`.
pub fn generated_with(
    endpoints: usize,
    label_sets: usize,
    policies: usize,
    node: &str,
) -> Vec<Resource> {
    let label_sets = label_sets.max(10);
    let apps = label_sets / 10;
    let mut out: Vec<Value> = vec![];
    for env in ["prod", "dev"] {
        out.push(json!({"apiVersion": "v1", "kind": "profile",
            "metadata": {"name": format!("env-{env}"), "labels": {"env": env}, "tags": [env]},
            "spec": {"ingress": [{"action": "allow", "source": {"tag": env}}],
                     "egress": [{"action": "allow"}]}}));
    }
    for i in 0..endpoints {
        let set = i % label_sets;
        let (app, tier, env) = (
            set % apps,
            TIERS[(set / apps) % 5],
            ["prod", "dev"][(set / (apps * 5)) % 2],
        );
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
            "metadata": {"name": format!("ep{i}"), "node": node, "orchestrator": "o",
                         "workload": format!("w{i}"),
                         "labels": {"app": format!("app{app}"), "tier": tier}},
            "spec": {"interfaceName": format!("cali{i}"), "ipNetworks": nets,
                     "profiles": [format!("env-{env}")]}}));
    }
    for j in 0..policies {
        let app = j % apps;
        let tier = TIERS[j % 5];
        let mut ingress = vec![
            json!({"action": "allow", "protocol": "tcp",
                   "source": {"selector": format!("app == 'app{}'", (j + 1) % apps)},
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

/// [`generated_with`] as one node of a cluster sees it: the first `per_node` endpoints on
/// `node`, the others spread over other nodes, `per_node` each.
pub fn generated_cluster(
    endpoints: usize,
    label_sets: usize,
    policies: usize,
    node: &str,
    per_node: usize,
) -> Vec<Resource> {
    let mut resources = generated_with(endpoints, label_sets, policies, node);
    let workloads = resources.iter_mut().filter_map(|r| match r {
        Resource::WorkloadEndpoint(w) => Some(w),
        _ => None,
    });
    for (i, w) in workloads.enumerate() {
        if i >= per_node {
            w.metadata.node = format!("{node}-other{}", i / per_node);
        }
    }
    resources
}

/// The dataplane bench's steady churn, also replayed by the `policy_change` example: a
/// fixed pseudo-random sequence of policies, each getting a random ingress rule's action
/// flipped (allow <-> deny), so that every run makes the same changes.
pub struct Churn {
    policies: Vec<palisade::model::ResourceKey>,
    seed: u64,
}

impl Churn {
    pub fn over<V>(current: &std::collections::BTreeMap<palisade::model::ResourceKey, V>) -> Churn {
        let policies = current
            .keys()
            .filter(|k| matches!(k, palisade::model::ResourceKey::Policy { .. }))
            .cloned()
            .collect();
        Churn {
            policies,
            seed: 0x9E37_79B9_7F4A_7C15,
        }
    }

    /// A xorshift step, reduced to `0..n`.
    fn next(&mut self, n: usize) -> usize {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        (self.seed % n.max(1) as u64) as usize
    }

    /// Makes the next change in `current`: the policy picked, and the index of the ingress
    /// rule flipped (`None` for a policy without ingress rules, left as it is).
    pub fn flip_next(
        &mut self,
        current: &mut std::collections::BTreeMap<
            palisade::model::ResourceKey,
            std::sync::Arc<Resource>,
        >,
    ) -> (palisade::model::ResourceKey, Option<usize>) {
        let at = self.next(self.policies.len());
        let policy = self.policies[at].clone();
        let mut flipped = None;
        if let Some(Resource::Policy(p)) = current.get_mut(&policy).map(std::sync::Arc::make_mut)
            && !p.spec.ingress.is_empty()
        {
            let at = self.next(p.spec.ingress.len());
            let rule = &mut p.spec.ingress[at];
            rule.action = match rule.action {
                palisade::model::Action::Allow => palisade::model::Action::Deny,
                _ => palisade::model::Action::Allow,
            };
            flipped = Some(at);
        }
        (policy, flipped)
    }
}
