//! Differential test of the compiler an agent keeps ([`Compiler`]): random worlds, then
//! long random sequences of the changes operators make (endpoints come, go, change labels
//! and addresses; policy and profile rules change action, come and go; selectors and
//! orders change; policies are copied and deleted; now and then something only a full
//! compile can follow). After every update:
//! - the image, looked up as the kernel will, gives the reference evaluator's decision for
//!   every local endpoint address, both directions, random packets and peers;
//! - an update made in place touched (reported) every entry that differs from the image
//!   before it, and only appended tables and outcomes: what the writer relies on to write
//!   only the difference.
#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

mod common;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::net::IpAddr;
use std::sync::Arc;

use common::random_world::*;
use palisade::compile::{Capacities, ChangedKeys, Changes, Compiler, Image, Locals};
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
            counts.cases += agrees_with_the_evaluator(&mut rng, &resources, image, locals, what);
            before = image.clone();
        }
    }
    eprintln!("{counts:?}");
    assert!(counts.cases >= 100_000, "{counts:?}");
    // Most changes must have been made in place, or this tests the full compile again.
    assert!(counts.in_place >= 2 * counts.full, "{counts:?}");
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
    assert!(
        after.tables.starts_with(&before.tables),
        "after {what}: tables renumbered"
    );
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
