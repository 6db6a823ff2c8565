//! The image on a larger generated policy: entry counts (printed; run with `--nocapture`),
//! rules that ignore the peer not multiplied by peers, capacity errors, determinism.
#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

mod common;

use std::time::Instant;

use common::generated::generated;

use palisade::compile::{Capacities, CompileError, PeerGroup, compile};
use palisade::model::Resource;

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
    // Every (local ID, direction) has a group 0; peer entries only for peers whose table
    // differs from group 0's: far fewer than local IDs × remote IDs.
    let default_groups = image
        .groups
        .keys()
        .filter(|(_, _, g)| *g == PeerGroup::DEFAULT)
        .count();
    assert_eq!(default_groups, 2 * stats.local_ids);
    let ingress = image
        .peers
        .keys()
        .filter(|(_, d, _)| *d == palisade::policy::Direction::Ingress)
        .count();
    eprintln!(
        "peer entries: {ingress} ingress, {} egress; local × remote = {}",
        stats.peer_entries - ingress,
        stats.local_ids * stats.remote_ids
    );
    assert!(stats.peer_entries < stats.local_ids * stats.remote_ids / 2);

    let mut reversed = resources;
    reversed.reverse();
    let again = compile(reversed, &Capacities::UNLIMITED).unwrap();
    assert_eq!(image.encode(), again.encode());
}

#[test]
fn rules_that_ignore_the_peer_need_no_peer_entries() {
    let resources: Vec<Resource> = generated(300, 0);
    let image = compile(resources, &Capacities::UNLIMITED).unwrap();
    let stats = image.stats();
    // The profiles' ingress rule looks at the peer (tag); their egress rule does not.
    assert!(stats.peer_entries > 0);
    assert!(
        image
            .peers
            .keys()
            .all(|(_, d, _)| *d == palisade::policy::Direction::Ingress),
        "egress rules ignore the peer: no egress peer entries"
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
        peer_entries: stats.peer_entries,
        group_entries: stats.group_entries,
        tables: stats.tables,
        table_rows: stats.table_rows,
    };
    assert_eq!(compile(resources, &exact).unwrap(), image);
}
