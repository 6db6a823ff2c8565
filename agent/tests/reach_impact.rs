//! The impact preview (`reach::impact`) against brute force: for a held set of random
//! worlds and random changes to them (fixed seeds), every flow's verdict before and after
//! is asked of the reference evaluator packet by packet — every destination port, every
//! protocol number, every ICMP type — and a flow whose verdict changes must be exactly one
//! the report lists, with the same before and after.
//!
//! Flow ends: every workload endpoint address and host endpoint address of either version,
//! and addresses no endpoint owns (inside and outside the rule CIDRs). A flow to or from
//! an endpoint missing in a version is absent there (counted as not allowed).
#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

mod common;

use std::net::IpAddr;

use common::random_world::*;
use palisade::model::Resource;
use palisade::policy::{Model, Packet, Verdict};
use palisade::reach::{Impact, Place, PlaceKind, impact};

/// Worlds, and changes per world.
const WORLDS: u64 = 20;
const CHANGES: usize = 2;

fn owned_places(resources: &[&[Resource]]) -> Vec<Place> {
    let mut out = Vec::new();
    for version in resources {
        for r in *version {
            match r {
                Resource::WorkloadEndpoint(w) => {
                    for n in &w.spec.ip_networks {
                        out.push(Place {
                            kind: PlaceKind::Workload(w.key()),
                            address: n.addr(),
                        });
                    }
                }
                Resource::HostEndpoint(h) => {
                    for ip in &h.spec.expected_ips {
                        out.push(Place {
                            kind: PlaceKind::Host(r.key()),
                            address: *ip,
                        });
                    }
                }
                _ => {}
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The flow as `model` decides it: `None` if a workload end is missing there.
fn allowed(model: &Model, src: &Place, dst: &Place, packet: &Packet) -> bool {
    let key = |p: &Place| match &p.kind {
        PlaceKind::Workload(k) => Some(k.clone()),
        _ => None,
    };
    for place in [src, dst] {
        if let Some(k) = key(place) {
            let present = model
                .workload_endpoint(&k)
                .is_some_and(|w| w.spec.ip_networks.iter().any(|n| n.addr() == place.address));
            if !present {
                return false;
            }
        }
    }
    model
        .evaluate_flow(key(src).as_ref(), key(dst).as_ref(), packet)
        .verdict()
        == Verdict::Allow
}

/// Packets of every protocol number between two addresses; TCP and UDP at every port
/// bound the random rules use (both sides of it) from source ports in each of their
/// ranges, and, for `every_port`, at every destination port; ICMP of every type.
fn packets(rng: &mut Rng, src: IpAddr, dst: IpAddr, every_port: bool) -> Vec<Packet> {
    let icmp = if src.is_ipv4() { 1 } else { 58 };
    let edges: Vec<u16> = vec![
        0, 1, 79, 80, 81, 442, 443, 444, 999, 1000, 1023, 1024, 1499, 1500, 2000, 2001, 2999, 3000,
        3001, 3305, 3306, 3307, 65534, 65535,
    ];
    let sources = [0u16, 80, 443, 1500, 3306, 65535, rng.next() as u16];
    let mut out = Vec::new();
    for protocol in 0..=255u8 {
        out.push(Packet::new(src, dst, protocol, (49152, 80), (8, 0)));
    }
    if every_port {
        let (protocol, sport) = (rng.pick(&[6u8, 17]), rng.pick(&sources));
        for dport in 0..=u16::MAX {
            out.push(Packet::new(src, dst, protocol, (sport, dport), (0, 0)));
        }
    }
    for protocol in [6u8, 17] {
        for &sport in &sources {
            for &dport in edges.iter().chain([&(rng.next() as u16)]) {
                out.push(Packet::new(src, dst, protocol, (sport, dport), (0, 0)));
            }
        }
    }
    for icmp_type in 0..=255u8 {
        out.push(Packet::new(src, dst, icmp, (0, 0), (icmp_type, 0)));
    }
    for icmp_type in [0u8, 3, 8, 11, 254, 255] {
        for code in [1u8, 2, 255, rng.next() as u8] {
            out.push(Packet::new(src, dst, icmp, (0, 0), (icmp_type, code)));
        }
    }
    out
}

fn check(rng: &mut Rng, before: &[Resource], after: &[Resource], what: &str) -> (usize, usize) {
    let report: Impact = impact(before, after);
    let models = [Model::new(before.to_vec()), Model::new(after.to_vec())];
    let mut places = owned_places(&[before, after]);
    let owned: Vec<IpAddr> = places.iter().map(|p| p.address).collect();
    for address in peers(true).into_iter().chain(peers(false)) {
        if !owned.contains(&address) {
            places.push(report.outside_place(address));
        }
    }
    let mut pairs = Vec::new();
    for src in &places {
        for dst in &places {
            let endpoints = (
                matches!(src.kind, PlaceKind::Workload(_)),
                matches!(dst.kind, PlaceKind::Workload(_)),
            );
            let same_endpoint = endpoints == (true, true) && src.kind == dst.kind;
            if src.address.is_ipv4() == dst.address.is_ipv4()
                && (endpoints.0 || endpoints.1)
                && !same_endpoint
            {
                pairs.push((src, dst));
            }
        }
    }
    // Every destination port for one flow: one the report lists, if any.
    let listed = |src: &Place, dst: &Place| {
        report
            .groups
            .iter()
            .any(|g| g.sources.contains(src) && g.destinations.contains(dst))
    };
    let deep = pairs
        .iter()
        .position(|(s, d)| listed(s, d))
        .unwrap_or_else(|| rng.below(pairs.len().max(1)));
    let (mut checked, mut changed) = (0, 0);
    for (i, (src, dst)) in pairs.iter().enumerate() {
        for packet in packets(rng, src.address, dst.address, i == deep) {
            let want = (
                allowed(&models[0], src, dst, &packet),
                allowed(&models[1], src, dst, &packet),
            );
            let got = report.change_for(src, dst, &packet).map(|c| {
                let ok = |s: &palisade::reach::FlowState| {
                    s.as_ref().is_some_and(|f| f.verdict == Verdict::Allow)
                };
                (ok(&c.before), ok(&c.after))
            });
            checked += 1;
            if want.0 != want.1 {
                changed += 1;
                assert_eq!(
                    got,
                    Some(want),
                    "{what}: {packet} from {src:?} to {dst:?}: the report misses a change"
                );
            } else {
                assert_eq!(
                    got, None,
                    "{what}: {packet} from {src:?} to {dst:?}: the report lists a change that is none"
                );
            }
        }
    }
    (checked, changed)
}

#[test]
fn random_changes_match_brute_force_over_every_port() {
    let (mut checked, mut changed, mut changes) = (0, 0, 0);
    for seed in 0..WORLDS {
        let mut rng = Rng(0x1517_0000 + seed);
        let mut world = World::new(world(&mut rng));
        for step in 0..CHANGES {
            let before = to_resources(&world.values);
            let what = world.change(&mut rng);
            let after = to_resources(&world.values);
            let (c, d) = check(
                &mut rng,
                &before,
                &after,
                &format!("world {seed} step {step}: {what}"),
            );
            checked += c;
            changed += d;
            changes += 1;
        }
    }
    // The held set must really exercise the comparison.
    assert!(
        changed > 1000,
        "only {changed} changed packets of {checked} ({changes} changes)"
    );
    eprintln!("{checked} packets checked, {changed} changed, over {changes} changes");
}

#[test]
fn no_change_reports_nothing() {
    let mut rng = Rng(7);
    for _ in 0..10 {
        let resources = to_resources(&world(&mut rng));
        assert!(impact(&resources, &resources).is_empty());
    }
}
