//! Differential test of the compiler an agent keeps ([`Compiler`]): random worlds, then
//! long random sequences of the changes operators make (endpoints come, go, change labels
//! and addresses; policy and profile rules change action, come and go; selectors and
//! orders change; policies are copied and deleted; now and then something only a full
//! compile can follow). After every update:
//! - the image, looked up as the kernel will, gives the reference evaluator's decision for
//!   every local endpoint address, both directions, random packets and peers;
//! - an update made in place touched (reported) every entry and table that differs from the
//!   image before it, and only appended outcomes: what the writer relies on to write only
//!   the difference;
//! - the tables in use are exactly those group entries name: freed ones are free.
//!
//! And a long steady churn of in-place changes never compiles in full: freed tables are
//! reused, the image stays near a full compile's size, and ends up deciding as one does.
#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::net::IpAddr;
use std::sync::Arc;

use common::random_world::*;
use palisade::compile::{
    Capacities, ChangedKeys, Changes, Compiler, Image, Locals, TableId, compile_for,
};
use palisade::model::{Resource, ResourceKey};
use palisade::policy::{Direction, Model};

const NODE: &str = "n";

#[test]
fn in_place_updates_agree_with_the_evaluator_and_report_what_they_touched() {
    let mut rng = Rng(0x1AC0_0001);
    let mut counts = Counts::default();
    for world_no in 0..120 {
        let locals = if world_no % 2 == 0 {
            Locals::All
        } else {
            Locals::Node(NODE)
        };
        let mut world = World::new(world(&mut rng));
        let mut compiler = Compiler::new(locals, Capacities::UNLIMITED);
        let mut resources = world.resources();
        compiler.update(&resources).unwrap();
        let mut before = compiler.image().unwrap().clone();
        for _ in 0..40 {
            let what = world.change(&mut rng);
            resources = world.resources();
            let changes = compiler.update(&resources).unwrap();
            let image = compiler.image().unwrap();
            match &changes {
                Changes::All => counts.full += 1,
                Changes::Keys(keys) => {
                    counts.in_place += 1;
                    counts.touched += keys.len();
                    only_reported_entries_differ(&before, image, keys, what);
                }
            }
            live_tables_are_those_groups_name(image, what);
            counts.cases += agrees_with_the_evaluator(&mut rng, &resources, image, locals, what);
            before = image.clone();
        }
    }
    eprintln!("{counts:?}");
    assert!(counts.cases >= 100_000, "{counts:?}");
    // Most changes must have been made in place, or this tests the full compile again.
    assert!(counts.in_place >= 2 * counts.full, "{counts:?}");
}

#[test]
fn steady_churn_reuses_freed_tables_and_never_compiles_in_full() {
    let mut rng = Rng(0x1AC0_0003);
    let (mut changes_made, mut largest) = (0, 0.0f64);
    for world_no in 0..4 {
        let locals = if world_no % 2 == 0 {
            Locals::All
        } else {
            Locals::Node(NODE)
        };
        let mut world = World::new(world(&mut rng));
        world.only_workload_policies();
        world.add_templates(&mut rng, 6);
        let mut compiler = Compiler::new(locals, Capacities::UNLIMITED);
        let mut resources = world.resources();
        compiler.update(&resources).unwrap();
        let mut before = compiler.image().unwrap().clone();
        for step in 0..1500 {
            let what = world.churn(&mut rng, 30, 20);
            resources = world.resources();
            let changes = compiler.update(&resources).unwrap();
            let image = compiler.image().unwrap();
            let Changes::Keys(keys) = &changes else {
                panic!("world {world_no} step {step}: {what} compiled in full");
            };
            only_reported_entries_differ(&before, image, keys, what);
            live_tables_are_those_groups_name(image, what);
            changes_made += 1;
            if step % 25 == 24 {
                let full = compile_for(
                    resources.values().map(|r| (**r).clone()),
                    &Capacities::UNLIMITED,
                    locals,
                )
                .unwrap();
                let (kept, fresh) = (image.stats(), full.stats());
                // In place, peer groups only split and the IDs of tables freed are kept
                // for reuse, so the image is somewhat larger than a fresh one; appending
                // tables made it grow by every change.
                let bound = |fresh: usize| 2 * fresh + 64;
                assert!(
                    kept.table_rows <= bound(fresh.table_rows)
                        && image.tables.len() <= bound(fresh.tables),
                    "world {world_no} step {step}: {} table IDs, {kept:?}, fresh {fresh:?}",
                    image.tables.len()
                );
                largest = largest.max(kept.table_rows as f64 / fresh.table_rows.max(1) as f64);
            }
            if step % 100 == 99 {
                agrees_with_the_evaluator(&mut rng, &resources, image, locals, what);
            }
            before = image.clone();
        }
        let full = compile_for(
            resources.values().map(|r| (**r).clone()),
            &Capacities::UNLIMITED,
            locals,
        )
        .unwrap();
        decide_alike(
            &mut rng,
            &resources,
            compiler.image().unwrap(),
            &full,
            locals,
        );
    }
    eprintln!(
        "{changes_made} changes in place; table cells at most {largest:.2} x a full compile's"
    );
}

#[test]
fn a_rule_an_earlier_one_covers_changes_nothing_until_that_one_changes() {
    let policy = |name: &str, order: u32, actions: [&str; 2]| {
        let rules: Vec<serde_json::Value> = actions
            .iter()
            .map(|action| {
                serde_json::json!({"action": action, "protocol": "udp",
                    "source": {"nets": ["10.0.0.0/8"]}, "destination": {"ports": [80]}})
            })
            .collect();
        serde_json::json!({"apiVersion": "v1", "kind": "policy", "metadata": {"name": name},
            "spec": {"selector": "all()", "order": order, "ingress": rules}})
    };
    let endpoint = serde_json::json!({"apiVersion": "v1", "kind": "workloadEndpoint",
        "metadata": {"name": "e", "node": NODE, "orchestrator": "o", "workload": "w",
                     "labels": {"app": "a"}},
        "spec": {"interfaceName": "cali0", "ipNetworks": ["10.0.0.1/32"]}});
    let resources = |first: [&str; 2], second: [&str; 2]| -> BTreeMap<ResourceKey, Arc<Resource>> {
        [
            endpoint.clone(),
            policy("first", 1, first),
            policy("second", 2, second),
        ]
        .into_iter()
        .map(|v| {
            let r = palisade::model::parse::resource_from_value(v).unwrap();
            (r.key(), Arc::new(r))
        })
        .collect()
    };
    let mut rng = Rng(0x1AC0_0004);
    let mut compiler = Compiler::new(Locals::Node(NODE), Capacities::UNLIMITED);
    compiler
        .update(&resources(["allow", "log"], ["allow", "allow"]))
        .unwrap();
    let mut before = compiler.image().unwrap().clone();
    // Each step: the first policy's actions, the second's, and whether the decisions change.
    for (first, second, decides) in [
        // Every rule of the second policy is behind the first policy's first rule.
        (["allow", "log"], ["deny", "allow"], false),
        (["allow", "log"], ["deny", "pass"], false),
        // The first policy's log rule is behind its allow too.
        (["allow", "deny"], ["deny", "pass"], false),
        // Now the covering rule itself changes.
        (["deny", "deny"], ["deny", "pass"], true),
        (["log", "deny"], ["deny", "pass"], true),
        // With a log rule first, the deny after it decides: the second policy is behind it.
        (["log", "deny"], ["allow", "allow"], false),
        // A log rule covers nothing: the second policy decides now.
        (["log", "log"], ["allow", "allow"], true),
    ] {
        let what = format!("{first:?} then {second:?}");
        let resources = resources(first, second);
        let Changes::Keys(keys) = compiler.update(&resources).unwrap() else {
            panic!("{what}: compiled in full");
        };
        let image = compiler.image().unwrap();
        only_reported_entries_differ(&before, image, &keys, &what);
        live_tables_are_those_groups_name(image, &what);
        let touched = keys.tables.len() + keys.groups.len() + keys.peers.len();
        assert_eq!(touched > 0, decides, "{what}: touched {keys:?}");
        let full = compile_for(
            resources.values().map(|r| (**r).clone()),
            &Capacities::UNLIMITED,
            Locals::Node(NODE),
        )
        .unwrap();
        decide_alike(&mut rng, &resources, image, &full, Locals::Node(NODE));
        before = image.clone();
    }
}

/// Every local endpoint address's decisions, by `kept` (made in place) and `full`, agree.
fn decide_alike(
    rng: &mut Rng,
    resources: &BTreeMap<ResourceKey, Arc<Resource>>,
    kept: &Image,
    full: &Image,
    locals: Locals<'_>,
) {
    let mut cases = 0;
    for resource in resources.values() {
        let Resource::WorkloadEndpoint(endpoint) = &**resource else {
            continue;
        };
        let key = endpoint.key();
        for net in &endpoint.spec.ip_networks {
            let own = net.addr();
            let (a, b) = (kept.local_id_of(&key, own), full.local_id_of(&key, own));
            assert_eq!(a.is_some(), b.is_some(), "{key} {own}: local in one only");
            let (Some(a), Some(b)) = (a, b) else {
                continue;
            };
            for direction in [Direction::Ingress, Direction::Egress] {
                for _ in 0..20 {
                    let peer = rng.pick(&peers(own.is_ipv4()));
                    let packet = random_packet(rng, own, peer, direction);
                    let decision = |image: &Image, id| {
                        image
                            .lookup(id, peer, direction, &packet)
                            .map(|o| o.to_decision())
                    };
                    assert_eq!(
                        decision(kept, a),
                        decision(full, b),
                        "{key} {direction} {packet}"
                    );
                    cases += 1;
                }
            }
        }
    }
    assert!(cases > 0 || matches!(locals, Locals::Node(_)));
}

#[derive(Default, Debug)]
struct Counts {
    in_place: usize,
    full: usize,
    touched: usize,
    cases: usize,
}

fn agrees_with_the_evaluator(
    rng: &mut Rng,
    resources: &BTreeMap<ResourceKey, Arc<Resource>>,
    image: &Image,
    locals: Locals<'_>,
    what: &str,
) -> usize {
    let model = Model::new(
        resources
            .values()
            .map(|r| (**r).clone())
            .collect::<Vec<_>>(),
    );
    let mut cases = 0;
    let endpoint_addrs: Vec<IpAddr> = model
        .workload_endpoints()
        .flat_map(|e| e.spec.ip_networks.iter().map(|n| n.addr()))
        .collect();
    for endpoint in model.workload_endpoints() {
        let key = endpoint.key();
        let local = match locals {
            Locals::All => true,
            Locals::Node(node) => endpoint.metadata.node == node,
        };
        for net in &endpoint.spec.ip_networks {
            let own = net.addr();
            let Some(id) = image.local_id_of(&key, own) else {
                assert!(!local, "after {what}: no local ID for {key} {own}");
                continue;
            };
            assert!(local, "after {what}: {key} is not local, has a local ID");
            let peers: Vec<IpAddr> = peers(own.is_ipv4())
                .into_iter()
                .chain(endpoint_addrs.iter().copied())
                .filter(|p| p.is_ipv4() == own.is_ipv4())
                .collect();
            for direction in [Direction::Ingress, Direction::Egress] {
                for _ in 0..6 {
                    let peer = rng.pick(&peers);
                    let packet = random_packet(rng, own, peer, direction);
                    let want = model.evaluate(&key, direction, &packet).unwrap();
                    let got = image.lookup(id, peer, direction, &packet);
                    assert_eq!(
                        got.map(|o| o.to_decision()).as_ref(),
                        Some(&want),
                        "after {what}: {key} {direction} {packet}"
                    );
                    cases += 1;
                }
            }
        }
    }
    cases
}

/// Between `before` and `after`, entries differ only where `touched` says, tables and
/// outcomes were only appended, and the remote classes stayed.
fn only_reported_entries_differ(before: &Image, after: &Image, touched: &ChangedKeys, what: &str) {
    assert_differ_only(
        &before.endpoints,
        &after.endpoints,
        |k| touched.endpoints.contains(k),
        what,
    );
    assert_differ_only(
        &before.exact,
        &after.exact,
        |a| touched.exact.contains(a),
        what,
    );
    assert_differ_only(
        &before.peers,
        &after.peers,
        |k| touched.peers.contains(k),
        what,
    );
    assert_differ_only(
        &before.groups,
        &after.groups,
        |k| touched.groups.contains(k),
        what,
    );
    for i in 0..before.tables.len().max(after.tables.len()) {
        assert!(
            before.tables.get(i) == after.tables.get(i)
                || touched.tables.contains(&TableId(i as u32)),
            "after {what}: table {i} changed unreported"
        );
    }
    assert!(
        after.outcomes.starts_with(&before.outcomes),
        "after {what}: outcomes renumbered"
    );
    assert_eq!(
        (&before.lpm, before.world, before.remote_ids),
        (&after.lpm, after.world, after.remote_ids),
        "after {what}: remote classes changed in place"
    );
}

/// A mark over the image: the tables in use are the ones group entries name, no more.
fn live_tables_are_those_groups_name(image: &Image, what: &str) {
    let named: BTreeSet<TableId> = image.groups.values().copied().collect();
    let live: BTreeSet<TableId> = image.live_tables().map(|(id, _)| id).collect();
    assert_eq!(live, named, "after {what}: tables in use");
}

fn assert_differ_only<K: Ord + Debug, V: PartialEq + Debug>(
    before: &BTreeMap<K, V>,
    after: &BTreeMap<K, V>,
    touched: impl Fn(&K) -> bool,
    what: &str,
) {
    for key in before.keys().chain(after.keys()) {
        if before.get(key) != after.get(key) {
            assert!(
                touched(key),
                "after {what}: {key:?} went from {:?} to {:?} unreported",
                before.get(key),
                after.get(key)
            );
        }
    }
}
