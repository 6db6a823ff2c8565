//! Random resource sets and packets for differential tests: the compiler against the
//! reference evaluator (`compile_differential.rs`), and the real eBPF program against it
//! (`tests/tests/bpf_differential.rs`, which includes this file by path).
//!
//! The sets mix what makes policy hard: overlapping CIDRs of both families, port ranges,
//! negated matches, selectors and tags, `pass`, `log`, missing profiles, profiles whose
//! rules do not compile, host endpoints as peers.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use palisade::model::{Resource, ResourceKey, validate};
use palisade::policy::{Direction, Packet};
use serde_json::{Value, json};

/// SplitMix64: small, seeded, reproducible.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    pub fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())].clone()
    }
}

pub const V4_ENDPOINT: [&str; 6] = [
    "10.0.0.1",
    "10.0.0.2",
    "10.0.0.3",
    "10.0.0.5",
    "10.0.1.9",
    "192.168.1.1",
];
pub const V6_ENDPOINT: [&str; 4] = ["fd00::1", "fd00::2", "fd00::5", "fd00:1::9"];
pub const V4_OTHER: [&str; 6] = [
    "10.0.0.100",
    "10.0.0.4",
    "10.0.2.5",
    "172.16.0.1",
    "8.8.8.8",
    "0.0.0.0",
];
pub const V6_OTHER: [&str; 5] = ["fd00::100", "fd00::6", "fd00:2::1", "2001:db8::1", "::1"];
pub const V4_NETS: [&str; 8] = [
    "10.0.0.0/8",
    "10.0.0.0/24",
    "10.0.0.0/30",
    "10.0.0.4/30",
    "10.0.0.3/32",
    "192.168.0.0/16",
    "0.0.0.0/0",
    "10.0.1.0/24",
];
pub const V6_NETS: [&str; 6] = [
    "fd00::/16",
    "fd00::/120",
    "fd00::4/126",
    "fd00:1::/32",
    "::/0",
    "fd00::2/128",
];
pub const SELECTORS: [&str; 9] = [
    "role == 'db'",
    "role != 'db'",
    "has(tier)",
    "tier in {'a', 'b'}",
    "all()",
    "!has(env) && role == 'app'",
    "env == 'prod' || role == 'db'",
    "has(web)",
    "backup == 'true'",
];
pub const TAGS: [&str; 3] = ["web", "db", "t1"];
pub const PORTS: [&str; 8] = [
    "80",
    "443",
    "1000:2000",
    "1500:3000",
    "65535",
    "1:1023",
    "0:79",
    "3306",
];

pub fn port_value(s: &str) -> Value {
    s.parse::<u16>()
        .map(|p| json!(p))
        .unwrap_or_else(|_| json!(s))
}

pub fn labels(rng: &mut Rng) -> Value {
    let mut m = serde_json::Map::new();
    for key in ["role", "tier", "env", "backup"] {
        if rng.chance(40) {
            let v = match key {
                "role" => rng.pick(&["db", "app"]),
                "tier" => rng.pick(&["a", "b", "c"]),
                "env" => rng.pick(&["prod", "dev"]),
                _ => "true",
            };
            m.insert(key.into(), json!(v));
        }
    }
    Value::Object(m)
}

pub fn entity(rng: &mut Rng, family: u8, ports: bool) -> Value {
    let mut e = json!({});
    let nets: &[&str] = if family == 4 { &V4_NETS } else { &V6_NETS };
    if rng.chance(20) {
        e["selector"] = json!(rng.pick(&SELECTORS));
    }
    if rng.chance(12) {
        e["notSelector"] = json!(rng.pick(&SELECTORS));
    }
    if rng.chance(10) {
        e["tag"] = json!(rng.pick(&TAGS));
    }
    if rng.chance(8) {
        e["notTag"] = json!(rng.pick(&TAGS));
    }
    if rng.chance(25) {
        let n = 1 + rng.below(2);
        e["nets"] = json!((0..n).map(|_| rng.pick(nets)).collect::<Vec<_>>());
    }
    if rng.chance(15) {
        e["notNets"] = json!([rng.pick(nets)]);
    }
    if ports && rng.chance(35) {
        let n = 1 + rng.below(2);
        e["ports"] = json!(
            (0..n)
                .map(|_| port_value(rng.pick(&PORTS)))
                .collect::<Vec<_>>()
        );
    }
    if ports && rng.chance(15) {
        e["notPorts"] = json!([port_value(rng.pick(&PORTS))]);
    }
    e
}

pub fn rule(rng: &mut Rng) -> Value {
    let action = rng.pick(&["allow", "allow", "deny", "pass", "log"]);
    let mut r = json!({ "action": action });
    let protocol = if rng.chance(60) {
        Some(rng.pick(&[
            json!("tcp"),
            json!("udp"),
            json!("icmp"),
            json!("icmpv6"),
            json!("sctp"),
            json!(6),
            json!(47),
        ]))
    } else {
        None
    };
    if let Some(p) = &protocol {
        r["protocol"] = p.clone();
    }
    if rng.chance(10) {
        r["notProtocol"] = json!(rng.pick(&["tcp", "udp", "icmp", "sctp"]));
    }
    let ip_version = if rng.chance(20) {
        Some(rng.pick(&[4u8, 6]))
    } else {
        None
    };
    if let Some(v) = ip_version {
        r["ipVersion"] = json!(v);
    }
    let icmpish = matches!(
        protocol.as_ref().and_then(Value::as_str),
        Some("icmp" | "icmpv6")
    );
    let icmp = |rng: &mut Rng| {
        let mut f = json!({});
        if rng.chance(85) {
            f["type"] = json!(rng.pick(&[0u8, 3, 8, 11]));
            if rng.chance(50) {
                f["code"] = json!(rng.pick(&[0u8, 1, 255]));
            }
        }
        f
    };
    if icmpish && rng.chance(50) {
        r["icmp"] = icmp(rng);
    }
    if icmpish && rng.chance(25) || rng.chance(3) {
        r["notICMP"] = icmp(rng);
    }
    let ports = matches!(
        protocol.as_ref(),
        Some(p) if p == "tcp" || p == "udp" || p == &json!(6)
    );
    // CIDRs of one rule are of one family, as validation demands.
    let family = ip_version.unwrap_or_else(|| rng.pick(&[4u8, 6]));
    r["source"] = entity(rng, family, ports);
    r["destination"] = entity(rng, family, ports);
    r
}

pub fn rules(rng: &mut Rng, max: usize) -> Vec<Value> {
    (0..rng.below(max + 1)).map(|_| rule(rng)).collect()
}

pub fn addresses(rng: &mut Rng) -> Vec<String> {
    let mut out = Vec::new();
    if rng.chance(85) {
        out.push(rng.pick(&V4_ENDPOINT).to_string());
    }
    if rng.chance(45) {
        out.push(rng.pick(&V6_ENDPOINT).to_string());
    }
    if rng.chance(10) {
        out.push(rng.pick(&V4_ENDPOINT).to_string());
    }
    out.dedup();
    out
}

/// A random resource set: up to 4 profiles (prof0..prof3; prof4 is referenced, never
/// created; prof3 sometimes has a rule that does not compile), up to 5 policies, 2..6
/// workload endpoints, up to 2 host endpoints.
pub fn world(rng: &mut Rng) -> Vec<Value> {
    let mut out = vec![];
    for i in 0..rng.below(5) {
        let mut ingress = rules(rng, 3);
        if i == 3 && rng.chance(50) {
            ingress.push(json!({"action": "allow", "source": {"selector": "((("}}));
        }
        let tags: Vec<&str> = (0..rng.below(3)).map(|_| rng.pick(&TAGS)).collect();
        out.push(json!({"apiVersion": "v1", "kind": "profile",
            "metadata": {"name": format!("prof{i}"), "labels": labels(rng), "tags": tags},
            "spec": {"ingress": ingress, "egress": rules(rng, 3)}}));
    }
    for i in 0..rng.below(6) {
        let mut spec = json!({"selector": rng.pick(&SELECTORS), "ingress": rules(rng, 3),
                              "egress": rules(rng, 3)});
        if rng.chance(70) {
            spec["order"] = json!(rng.pick(&[0.0, 1.0, 1.0, 2.5, 10.0]));
        }
        if rng.chance(30) {
            let types = rng.pick(&[
                json!(["ingress"]),
                json!(["egress"]),
                json!(["ingress", "egress"]),
            ]);
            spec["types"] = types;
        }
        if rng.chance(5) {
            spec["doNotTrack"] = json!(true);
        } else if rng.chance(5) {
            spec["preDNAT"] = json!(true);
            spec["egress"] = json!([]);
        }
        out.push(json!({"apiVersion": "v1", "kind": "policy",
            "metadata": {"name": format!("pol{i}")}, "spec": spec}));
    }
    for i in 0..2 + rng.below(5) {
        let nets: Vec<String> = addresses(rng)
            .into_iter()
            .map(|a| {
                if a.contains(':') {
                    format!("{a}/128")
                } else {
                    format!("{a}/32")
                }
            })
            .collect();
        let profiles: Vec<String> = (0..rng.below(4))
            .map(|_| format!("prof{}", rng.below(5)))
            .collect();
        out.push(json!({"apiVersion": "v1", "kind": "workloadEndpoint",
            "metadata": {"name": format!("ep{i}"), "node": "n", "orchestrator": "o",
                         "workload": format!("w{i}"), "labels": labels(rng)},
            "spec": {"interfaceName": format!("cali{i}"), "ipNetworks": nets, "profiles": profiles}}));
    }
    for i in 0..rng.below(3) {
        let ips = vec![rng.pick(&V4_ENDPOINT), rng.pick(&V6_ENDPOINT)];
        let profiles: Vec<String> = (0..rng.below(2))
            .map(|_| format!("prof{}", rng.below(5)))
            .collect();
        out.push(json!({"apiVersion": "v1", "kind": "hostEndpoint",
            "metadata": {"name": format!("host{i}"), "node": "n", "labels": labels(rng)},
            "spec": {"expectedIPs": ips, "profiles": profiles}}));
    }
    out
}

pub fn to_resources(values: &[Value]) -> Vec<Resource> {
    values
        .iter()
        .map(|v| {
            let mut r: Resource = serde_json::from_value(v.clone()).unwrap();
            validate::normalize(&mut r);
            r
        })
        .collect()
}

pub fn random_packet(rng: &mut Rng, local: IpAddr, peer: IpAddr, direction: Direction) -> Packet {
    let protocol = rng.pick(&[6u8, 6, 17, 17, 1, 58, 132, 47, 136]);
    let port = |rng: &mut Rng| {
        if rng.chance(80) {
            rng.pick(&[
                0u16, 1, 79, 80, 81, 443, 999, 1000, 1023, 1024, 1500, 2000, 2001, 3000, 3001,
                3306, 65534, 65535,
            ])
        } else {
            rng.next() as u16
        }
    };
    let ports = (port(rng), port(rng));
    let icmp = (
        rng.pick(&[0u8, 3, 8, 11, 254, 255]),
        rng.pick(&[0u8, 1, 2, 255]),
    );
    let (src, dst) = match direction {
        Direction::Ingress => (peer, local),
        Direction::Egress => (local, peer),
    };
    Packet::new(src, dst, protocol, ports, icmp)
}

/// Peer addresses of one family that are no endpoint's in [`world`].
pub fn peers(v4: bool) -> Vec<IpAddr> {
    let list: &[&str] = if v4 { &V4_OTHER } else { &V6_OTHER };
    list.iter().map(|s| s.parse().unwrap()).collect()
}

/// A resource set being changed the way operators change one, as JSON values.
pub struct World {
    pub values: Vec<Value>,
    /// For fresh names and addresses.
    next: usize,
}

impl World {
    pub fn new(values: Vec<Value>) -> World {
        World { values, next: 0 }
    }

    pub fn resources(&self) -> BTreeMap<ResourceKey, Arc<Resource>> {
        to_resources(&self.values)
            .into_iter()
            .map(|r| (r.key(), Arc::new(r)))
            .collect()
    }

    fn of_kind(&self, kind: &str) -> Vec<usize> {
        (0..self.values.len())
            .filter(|&i| self.values[i]["kind"] == kind)
            .collect()
    }

    fn fresh(&mut self) -> usize {
        self.next += 1;
        self.next
    }

    /// Fresh addresses, owned by no one else: the common case, made in place.
    fn fresh_networks(&mut self, rng: &mut Rng) -> Value {
        let n = self.fresh();
        let mut nets = vec![format!("10.0.{}.{}/32", 3 + n / 250, 1 + n % 250)];
        if rng.chance(40) {
            nets.push(format!("fd00::3:{n:x}/128"));
        }
        json!(nets)
    }

    /// Makes one random change; says what it was.
    pub fn change(&mut self, rng: &mut Rng) -> &'static str {
        let endpoints = self.of_kind("workloadEndpoint");
        let policies = self.of_kind("policy");
        let roll = rng.below(100);
        if roll < 35 && !endpoints.is_empty() {
            let i = rng.pick(&endpoints);
            match rng.below(4) {
                0 => {
                    self.values[i]["metadata"]["labels"] = labels(rng);
                    "endpoint labels changed"
                }
                1 => {
                    self.values[i]["spec"]["ipNetworks"] = self.fresh_networks(rng);
                    "endpoint addresses changed"
                }
                2 => {
                    self.values.remove(i);
                    "endpoint removed"
                }
                _ => {
                    self.values[i]["metadata"]["node"] = json!(rng.pick(&["n", "m"]));
                    "endpoint moved"
                }
            }
        } else if roll < 50 {
            let n = self.fresh();
            let profiles: Vec<String> = (0..rng.below(3))
                .map(|_| format!("prof{}", rng.below(5)))
                .collect();
            let nets = self.fresh_networks(rng);
            self.values
                .push(json!({"apiVersion": "v1", "kind": "workloadEndpoint",
                "metadata": {"name": format!("new{n}"), "node": rng.pick(&["n", "n", "m"]),
                             "orchestrator": "o", "workload": format!("nw{n}"),
                             "labels": labels(rng)},
                "spec": {"interfaceName": format!("calinew{n}"), "ipNetworks": nets,
                         "profiles": profiles}}));
            "endpoint added"
        } else if roll < 90 && !policies.is_empty() {
            let i = rng.pick(&policies);
            self.change_policy(rng, i)
        } else if roll < 97 {
            let profiles = self.of_kind("profile");
            if profiles.is_empty() {
                return "nothing";
            }
            let i = rng.pick(&profiles);
            if rng.chance(30) {
                self.values[i]["metadata"]["labels"] = labels(rng);
                return "profile labels changed";
            }
            let direction = rng.pick(&["ingress", "egress"]);
            let Some(rules) = self.values[i]["spec"][direction].as_array_mut() else {
                return "nothing";
            };
            if rules.is_empty() {
                rules.push(json!({"action": "allow"}));
                return "profile rule added";
            }
            let r = rng.below(rules.len());
            if rng.chance(30) {
                rules.remove(r);
                "profile rule removed"
            } else {
                rules[r]["action"] = json!(rng.pick(&["allow", "deny", "pass", "log"]));
                "profile rule action changed"
            }
        } else {
            let n = self.fresh();
            self.values
                .push(json!({"apiVersion": "v1", "kind": "policy",
                "metadata": {"name": format!("newpol{n}")},
                "spec": {"selector": rng.pick(&SELECTORS), "order": rng.below(12),
                         "ingress": rules(rng, 2), "egress": rules(rng, 2)}}));
            "random policy added"
        }
    }

    /// Makes every policy apply to workload endpoints in both directions (no `doNotTrack`,
    /// no `preDNAT`, no `types`): the rules of the others (of a direction) are not
    /// compiled for workloads, so one of them added to a workload policy brings tests only
    /// a full compile classifies.
    /// Invalid policies (treated as deleted, their rules never compiled) are left out.
    pub fn only_workload_policies(&mut self) {
        for i in self.of_kind("policy") {
            if let Some(spec) = self.values[i]["spec"].as_object_mut() {
                spec.remove("doNotTrack");
                spec.remove("preDNAT");
                spec.remove("types");
            }
        }
        self.values.retain(|v| {
            v["kind"] != "policy"
                || to_resources(std::slice::from_ref(v))
                    .iter()
                    .all(|r| validate::validate(r).is_ok())
        });
    }

    /// Adds `n` endpoints on fresh addresses of both families with random labels: the
    /// label sets [`World::churn`] gives the endpoints it adds or relabels. Made before the
    /// first compile, they make sure those endpoints' remote classes exist (an endpoint of
    /// a new remote class needs a full compile).
    pub fn add_templates(&mut self, rng: &mut Rng, n: usize) {
        for k in 0..n {
            let m = self.fresh();
            let nets = json!([
                format!("10.0.{}.{}/32", 3 + m / 250, 1 + m % 250),
                format!("fd00::3:{m:x}/128")
            ]);
            self.values
                .push(json!({"apiVersion": "v1", "kind": "workloadEndpoint",
                "metadata": {"name": format!("tmpl{k}"), "node": rng.pick(&["n", "m"]),
                             "orchestrator": "o", "workload": format!("tw{k}"),
                             "labels": labels(rng)},
                "spec": {"interfaceName": format!("calitmpl{k}"), "ipNetworks": nets,
                         "profiles": []}}));
        }
    }

    /// Makes one random change of the kinds steady churn brings, all of which the compiler
    /// an agent keeps applies in place, keeping the world near `endpoints` endpoints added
    /// by churn and `policies` policies: endpoints come (on fresh addresses, with the
    /// labels of a template, [`World::add_templates`]), go and change labels; policy rules
    /// change action, come (rules other policies have) and go; selectors and orders change;
    /// policies go and come back under names from a fixed pool (so rule names, and the
    /// outcomes they make, do not grow without end).
    pub fn churn(&mut self, rng: &mut Rng, endpoints: usize, policies: usize) -> &'static str {
        let named = |prefix: &str| -> Vec<usize> {
            self.of_kind("workloadEndpoint")
                .into_iter()
                .filter(|&i| {
                    self.values[i]["metadata"]["name"]
                        .as_str()
                        .is_some_and(|n| n.starts_with(prefix))
                })
                .collect()
        };
        let (templates, added) = (named("tmpl"), named("new"));
        let pols = self.of_kind("policy");
        let roll = rng.below(100);
        let template_labels = |world: &World, rng: &mut Rng| match templates.is_empty() {
            true => labels(rng),
            false => world.values[rng.pick(&templates)]["metadata"]["labels"].clone(),
        };
        if roll < 15 && !added.is_empty() {
            let i = added[rng.below(added.len())];
            self.values[i]["metadata"]["labels"] = template_labels(self, rng);
            "endpoint labels changed"
        } else if roll < 30 {
            if added.len() > endpoints {
                self.values.remove(added[rng.below(added.len())]);
                return "endpoint removed";
            }
            let labels = template_labels(self, rng);
            let n = self.fresh();
            let nets = self.fresh_networks(rng);
            self.values
                .push(json!({"apiVersion": "v1", "kind": "workloadEndpoint",
                "metadata": {"name": format!("new{n}"), "node": rng.pick(&["n", "n", "m"]),
                             "orchestrator": "o", "workload": format!("nw{n}"),
                             "labels": labels},
                "spec": {"interfaceName": format!("calinew{n}"), "ipNetworks": nets,
                         "profiles": []}}));
            "endpoint added"
        } else if roll < 40 && !pols.is_empty() {
            if pols.len() >= policies {
                self.values.remove(rng.pick(&pols));
                return "policy removed";
            }
            let mut copy = self.values[rng.pick(&pols)].clone();
            let name = format!("pooled{}", rng.below(policies));
            if self
                .values
                .iter()
                .any(|v| v["metadata"]["name"] == name.as_str())
            {
                return "nothing";
            }
            copy["metadata"]["name"] = json!(name);
            copy["spec"]["order"] = json!(rng.below(12));
            self.values.push(copy);
            "policy added under a pooled name"
        } else if !pols.is_empty() {
            let i = rng.pick(&pols);
            // Rules, selector, order: not removed or copied under a fresh name (above).
            self.change_policy_by(rng, i, 6)
        } else {
            "nothing"
        }
    }

    fn change_policy(&mut self, rng: &mut Rng, i: usize) -> &'static str {
        self.change_policy_by(rng, i, 8)
    }

    /// One of the first `kinds` kinds of policy change (8: any).
    fn change_policy_by(&mut self, rng: &mut Rng, i: usize, kinds: usize) -> &'static str {
        let direction = rng.pick(&["ingress", "egress"]);
        let count = self.values[i]["spec"][direction]
            .as_array()
            .map_or(0, Vec::len);
        match rng.below(kinds) {
            0 | 1 if count > 0 => {
                let r = rng.below(count);
                self.values[i]["spec"][direction][r]["action"] =
                    json!(rng.pick(&["allow", "deny", "pass", "log"]));
                "policy rule action changed"
            }
            2 if count > 0 => {
                let r = rng.below(count);
                if let Some(rules) = self.values[i]["spec"][direction].as_array_mut() {
                    rules.remove(r);
                }
                "policy rule removed"
            }
            3 => {
                // A rule some policy already has: its tests are known.
                let known: Vec<Value> = self
                    .of_kind("policy")
                    .into_iter()
                    .flat_map(|p| {
                        self.values[p]["spec"][direction]
                            .as_array()
                            .cloned()
                            .unwrap_or_default()
                    })
                    .collect();
                if known.is_empty() {
                    return "nothing";
                }
                let rule = rng.pick(&known);
                if let Some(rules) = self.values[i]["spec"][direction].as_array_mut() {
                    let at = rng.below(rules.len() + 1);
                    rules.insert(at, rule);
                }
                "known rule added to a policy"
            }
            4 => {
                self.values[i]["spec"]["selector"] = json!(rng.pick(&SELECTORS));
                "policy selector changed"
            }
            5 => {
                self.values[i]["spec"]["order"] = json!(rng.below(12));
                "policy order changed"
            }
            6 => {
                self.values.remove(i);
                "policy removed"
            }
            _ if kinds <= 6 => "nothing",
            _ => {
                let mut copy = self.values[i].clone();
                copy["metadata"]["name"] = json!(format!("copy{}", self.fresh()));
                copy["spec"]["order"] = json!(rng.below(12));
                self.values.push(copy);
                "policy copied"
            }
        }
    }
}
