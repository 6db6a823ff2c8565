//! Differential test: the compiled image, looked up as the kernel will, gives exactly the
//! reference evaluator's decision (verdict, deciding rule or default, log rules passed) for
//! random resource sets and packets. Also: the seed example, and determinism (shuffled
//! input, byte-identical image).
//!
//! The policed endpoint's own address is always one of its addresses (the kernel drops
//! egress packets from other sources, and routes only its addresses to it); the peer is
//! any address of the same family: endpoint addresses, host endpoint addresses, addresses
//! inside and outside the rule CIDRs.
#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

mod common;

use std::net::IpAddr;

use common::random_world::*;
use common::seeds;
use palisade::compile::{Capacities, Image, compile};
use palisade::model::{Resource, ResourceKey, validate};
use palisade::policy::{Direction, Model, Packet, Reason, Verdict};
use serde_json::Value;

/// Checks every (endpoint address, direction) against `packets_each` random packets;
/// returns the number of cases checked.
/// How often each kind of decision came up: the test must reach all of them.
#[derive(Default, Debug)]
struct Seen {
    cases: usize,
    allow: usize,
    by_rule: usize,
    end_of_policies: usize,
    missing_profile: usize,
    no_profile_matched: usize,
    logged: usize,
    peer_entries: usize,
    exact_entries: usize,
    lpm_entries: usize,
}

fn check_world(rng: &mut Rng, values: &[Value], packets_each: usize, seen: &mut Seen) {
    let resources = to_resources(values);
    let model = Model::new(resources.clone());
    let image = compile(resources, &Capacities::UNLIMITED).unwrap();
    let stats = image.stats();
    seen.peer_entries += stats.peer_entries;
    seen.exact_entries += stats.endpoint_entries;
    seen.lpm_entries += stats.lpm_entries;
    let peers4: Vec<IpAddr> = V4_ENDPOINT
        .iter()
        .chain(&V4_OTHER)
        .map(|s| s.parse().unwrap())
        .collect();
    let peers6: Vec<IpAddr> = V6_ENDPOINT
        .iter()
        .chain(&V6_OTHER)
        .map(|s| s.parse().unwrap())
        .collect();
    for endpoint in model.workload_endpoints() {
        let key = endpoint.key();
        for net in &endpoint.spec.ip_networks {
            let local_addr = net.addr();
            let local = image
                .local_id_of(&key, local_addr)
                .unwrap_or_else(|| panic!("no local ID for {key} {local_addr}"));
            let peers = if local_addr.is_ipv4() {
                &peers4
            } else {
                &peers6
            };
            for direction in [Direction::Ingress, Direction::Egress] {
                for _ in 0..packets_each {
                    let peer = rng.pick(peers);
                    let packet = random_packet(rng, local_addr, peer, direction);
                    let want = model.evaluate(&key, direction, &packet).unwrap();
                    let got = image
                        .lookup(local, peer, direction, &packet)
                        .map(|o| o.to_decision());
                    assert_eq!(
                        got.as_ref(),
                        Some(&want),
                        "\n{key} {direction} {packet}\nresources: {}",
                        serde_json::to_string_pretty(values).unwrap()
                    );
                    seen.cases += 1;
                    seen.allow += usize::from(want.verdict == Verdict::Allow);
                    seen.logged += usize::from(!want.logged.is_empty());
                    match want.reason {
                        Reason::Rule(_) => seen.by_rule += 1,
                        Reason::EndOfPolicies => seen.end_of_policies += 1,
                        Reason::MissingProfile(_) => seen.missing_profile += 1,
                        Reason::NoProfileMatched => seen.no_profile_matched += 1,
                    }
                }
            }
        }
    }
}

#[test]
fn random_worlds_agree_with_the_evaluator() {
    let mut rng = Rng(0x5EED_0001);
    let mut seen = Seen::default();
    let mut worlds = 0;
    while seen.cases < 40_000 {
        let values = world(&mut rng);
        check_world(&mut rng, &values, 12, &mut seen);
        worlds += 1;
    }
    eprintln!("{worlds} resource sets: {seen:?}");
    // Every kind of decision must have come up often enough to mean something.
    for (what, n) in [
        ("allow", seen.allow),
        ("deny", seen.cases - seen.allow),
        ("decided by a rule", seen.by_rule),
        ("end of policies", seen.end_of_policies),
        ("missing profile", seen.missing_profile),
        ("no profile matched", seen.no_profile_matched),
        ("log rules passed", seen.logged),
        ("peer entries", seen.peer_entries),
        ("exact entries", seen.exact_entries),
    ] {
        assert!(n >= 500, "only {n} cases of {what}");
    }
}

#[test]
fn same_input_in_any_order_gives_the_same_bytes() {
    let mut rng = Rng(0x5EED_0002);
    for _ in 0..100 {
        let values = world(&mut rng);
        let mut shuffled = values.clone();
        for i in (1..shuffled.len()).rev() {
            let j = rng.below(i + 1);
            shuffled.swap(i, j);
        }
        let a = compile(to_resources(&values), &Capacities::UNLIMITED).unwrap();
        let b = compile(to_resources(&shuffled), &Capacities::UNLIMITED).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.encode(), b.encode());
    }
}

fn seed_resources(parts: &[&str]) -> Vec<Resource> {
    let mut out = vec![];
    for yaml in parts {
        let mut rs: Vec<Resource> = serde_yaml_ng::from_str(yaml).unwrap();
        for r in &mut rs {
            validate::normalize(r);
        }
        out.extend(rs);
    }
    out
}

#[test]
fn seed_example_on_a_full_grid() {
    let endpoints = seeds::endpoints_yaml("node1");
    for parts in [
        vec![seeds::PROFILES_WITH_RULES, endpoints.as_str()],
        vec![
            seeds::PROFILES_LABELS_ONLY,
            seeds::GLOBAL_POLICIES,
            endpoints.as_str(),
        ],
        vec![
            seeds::PROFILES_LABELS_ONLY,
            seeds::GLOBAL_POLICIES,
            seeds::MULTIPLE_NETWORKS,
            endpoints.as_str(),
        ],
    ] {
        let resources = seed_resources(&parts);
        let model = Model::new(resources.clone());
        let image = compile(resources, &Capacities::UNLIMITED).unwrap();
        let addrs: Vec<IpAddr> = [
            "192.168.0.11",
            "192.168.0.12",
            "192.168.0.21",
            "192.168.0.22",
            seeds::OUTSIDE_IP,
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        for endpoint in model.workload_endpoints() {
            let key: ResourceKey = endpoint.key();
            let own = endpoint.spec.ip_networks[0].addr();
            let local = image.local_id_of(&key, own).unwrap();
            for &peer in &addrs {
                for direction in [Direction::Ingress, Direction::Egress] {
                    for (protocol, dport) in [
                        (6u8, 3306u16),
                        (6, 3307),
                        (6, 80),
                        (17, 3306),
                        (1, 0),
                        (132, 3306),
                    ] {
                        let (src, dst) = match direction {
                            Direction::Ingress => (peer, own),
                            Direction::Egress => (own, peer),
                        };
                        let packet = Packet::new(src, dst, protocol, (40000, dport), (8, 0));
                        let want = model.evaluate(&key, direction, &packet).unwrap();
                        let got = image.lookup(local, peer, direction, &packet).unwrap();
                        assert_eq!(got.to_decision(), want, "{key} {direction} {packet}");
                    }
                }
            }
        }
        let _: &Image = &image;
    }
}
