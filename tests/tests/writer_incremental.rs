//! The writer's in-place path against its full one: random worlds changed step by step
//! (endpoints, policies, interface bindings), compiled by the compiler an agent keeps and
//! written with `Writer::publish_changes`, which writes only what changed. After every
//! publish, what the kernel maps hold for the active slot (read back with the bpf syscall)
//! must equal the full encoding of the same image: every hash and LPM entry, every outcome,
//! and every table's rows and cells as its `PAL_TABLE` entries lead to them (in place, a
//! table goes where a freed one left room, so the layout differs). `bpf_differential` holds
//! the full encoding against the evaluator with real packets, so equal maps mean the same
//! verdicts.
//!
//! Between publishes, now and then, the slot a flip retired is caught up
//! (`Writer::catch_up`, as the agent does once its grace period is over): it must then hold
//! the same, and the next publish still be right.
//!
//! And a long steady churn, on maps whose arrays hold only about twice what a full compile
//! of the world needs, stays in place: freed tables' rows and cells are reused.
//!
//! Privileged: run through `cargo xtask test` as root.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failing unwrap is a failing test

#[path = "../../agent/tests/common/random_world.rs"]
mod random_world;

use std::collections::BTreeMap;
use std::sync::Arc;

use palisade::compile::{Capacities, Changes, Compiler, Image, Locals};
use palisade::dataplane::slot_image::{ArrayBases, SlotImage, encode};
use palisade::dataplane::{self, MapSizes, writer::PolicyMaps, writer::Writer};
use palisade::model::{Resource, ResourceKey};
use palisade_common::map_names;
use palisade_tests::require_root;
use random_world::{Rng, World, world};

const NODE: &str = "n";

#[test]
fn in_place_writes_leave_the_maps_as_a_full_write_would() {
    require_root();
    let object = dataplane::ebpf_object().expect("run the tests through `cargo xtask test`");
    let mut loaded = dataplane::load(object, None).expect("cannot load the eBPF object");
    let maps = PolicyMaps::take(loaded.ebpf_mut()).expect("policy maps");
    let mut writer = Writer::adopt(maps).expect("adopt fresh maps");

    let mut rng = Rng(0x1AC0_0002);
    let (mut in_place, mut full, mut written, mut caught_up) = (0, 0, 0, 0);
    let mut next_ifindex = 100;
    for _ in 0..40 {
        let mut world = World::new(world(&mut rng));
        let mut compiler = Compiler::new(Locals::Node(NODE), Capacities::UNLIMITED);
        let mut bindings: BTreeMap<ResourceKey, u32> = BTreeMap::new();
        for step in 0..30 {
            if step > 0 {
                world.change(&mut rng);
            }
            let resources = world.resources();
            rebind(&mut rng, &resources, &mut bindings, &mut next_ifindex);
            let changes = compiler.update(&resources).unwrap();
            match changes {
                Changes::All => full += 1,
                Changes::Keys(_) => in_place += 1,
            }
            let image = compiler.image().unwrap();
            let published = writer
                .publish_changes(image, &changes, &bindings, |_| Ok(()))
                .unwrap();
            written += published.written + published.deleted;

            let active = writer.active_slot();
            assert_holds(&writer, active, image, &bindings, &format!("step {step}"));
            if writer.catch_up_due().is_none() {
                // Nothing behind: the retired slot already holds this image.
                let what = format!("step {step}, nothing to catch up");
                assert_holds(&writer, 1 - active, image, &bindings, &what);
            } else if rng.chance(50) {
                writer.catch_up(image, &bindings).unwrap();
                caught_up += 1;
                assert_eq!(writer.catch_up_due(), None, "caught up (step {step})");
                assert_eq!(writer.active_slot(), active, "a catch-up flips nothing");
                let what = format!("the catch-up after step {step}");
                assert_holds(&writer, 1 - active, image, &bindings, &what);
                assert_holds(&writer, active, image, &bindings, &what);
            }
        }
    }
    eprintln!(
        "{in_place} publishes in place, {full} in full, {caught_up} catch-ups, {written} \
         entries written"
    );
    assert!(in_place >= 2 * full, "{in_place} in place, {full} in full");
}

#[test]
fn steady_churn_stays_in_place_and_reuses_the_arrays() {
    require_root();
    let object = dataplane::ebpf_object().expect("run the tests through `cargo xtask test`");
    let mut rng = Rng(0x1AC0_0004);
    let mut world = World::new(world(&mut rng));
    world.only_workload_policies();
    world.add_templates(&mut rng, 6);
    // Grown to its steady size first, then compiled in full: what the arrays are sized by.
    for _ in 0..200 {
        world.churn(&mut rng, 30, 20);
    }
    let mut compiler = Compiler::new(Locals::Node(NODE), Capacities::UNLIMITED);
    let resources = world.resources();
    compiler.update(&resources).unwrap();
    let fresh = compiler.image().unwrap().stats();
    let mut sizes = MapSizes::declared();
    // Both slots: each holds twice the full compile's cells, and 64 more.
    let map_entries = |n: usize| 2 * (2 * n as u64 + 64);
    sizes
        .set(map_names::CELLS, map_entries(fresh.table_rows))
        .unwrap();
    sizes
        .set(map_names::ROWS, map_entries(fresh.table_rows))
        .unwrap();
    let mut loaded = dataplane::load_sized(object, None, &sizes).expect("load the eBPF object");
    let maps = PolicyMaps::take(loaded.ebpf_mut()).expect("policy maps");
    let mut writer = Writer::adopt(maps).expect("adopt fresh maps");

    let mut bindings: BTreeMap<ResourceKey, u32> = BTreeMap::new();
    let mut next_ifindex = 100;
    rebind(&mut rng, &resources, &mut bindings, &mut next_ifindex);
    let image = compiler.image().unwrap();
    writer.publish(image, &bindings, |_| Ok(())).unwrap();
    let (mut tables_made, mut cells_made) = (0, 0);
    for step in 0..600 {
        let what = world.churn(&mut rng, 30, 20);
        let resources = world.resources();
        rebind(&mut rng, &resources, &mut bindings, &mut next_ifindex);
        let changes = compiler.update(&resources).unwrap();
        let Changes::Keys(keys) = &changes else {
            panic!("step {step}: {what} compiled in full");
        };
        let image = compiler.image().unwrap();
        for id in &keys.tables {
            if let Some(Some(table)) = image.tables.get(id.0 as usize) {
                tables_made += 1;
                cells_made += table.cell_count();
            }
        }
        writer
            .publish_changes(image, &changes, &bindings, |_| Ok(()))
            .unwrap_or_else(|e| panic!("step {step}: {what}: {e}"));
        let active = writer.active_slot();
        assert_holds(
            &writer,
            active,
            image,
            &bindings,
            &format!("step {step}: {what}"),
        );
        // As the agent does, most of the time: the retired slot takes the same change.
        if writer.catch_up_due().is_some() && rng.chance(50) {
            writer.catch_up(image, &bindings).unwrap();
            let what = format!("the catch-up after step {step}");
            assert_holds(&writer, 1 - active, image, &bindings, &what);
        }
    }
    let (_, limits) = writer.array_layout(writer.active_slot());
    eprintln!(
        "{tables_made} tables ({cells_made} cells) made in place; a full compile has {} \
         tables ({} cells); the slot holds {} cells",
        fresh.tables, fresh.table_rows, limits.cells
    );
    // The old way, appending every table made, would have filled the slot many times.
    assert!(
        cells_made > 3 * limits.cells,
        "{cells_made} cells made in place"
    );
}

/// What the kernel maps hold for `slot` is what the full encoding of `image` says, every
/// table resolved through its rows to its cells.
fn assert_holds(
    writer: &Writer,
    slot: u8,
    image: &Image,
    bindings: &BTreeMap<ResourceKey, u32>,
    when: &str,
) {
    let at = format!("slot {slot}, {when}");
    let (bases, limits) = writer.array_layout(slot);
    let mut counters = writer.rule_counters().clone();
    let want = encode(image, slot, bindings, bases, limits, &mut counters).unwrap();
    let held = writer.held(slot).unwrap();
    assert_eq!(held.local, want.local, "PAL_LOCAL after {at}");
    assert_eq!(held.remote, want.remote, "PAL_REMOTE after {at}");
    assert_eq!(held.lpm, want.lpm, "PAL_LPM after {at}");
    assert_eq!(held.peers, want.peers, "PAL_PEERS after {at}");
    assert_eq!(held.policy, want.policy, "PAL_POLICY after {at}");
    assert_eq!(
        resolved(&held, bases),
        resolved(&want, bases),
        "PAL_TABLE, PAL_ROWS and PAL_CELLS after {at}"
    );
    assert_eq!(held.outcomes, want.outcomes, "PAL_OUTCOMES after {at}");
}

/// One `PAL_TABLE` entry's rows: each row's start and its cells (start, outcome).
type Resolved = Vec<(u16, Vec<(u16, u32)>)>;

/// Every table of a slot as the programs read it: from `PAL_TABLE` through the rows to the
/// cells, wherever in the arrays they are.
fn resolved(slot: &SlotImage, bases: ArrayBases) -> BTreeMap<(u16, u32), Resolved> {
    slot.table
        .iter()
        .map(|(key, value)| {
            let first_row = (value.first_row - bases.rows) as usize;
            let rows = slot.rows[first_row..first_row + value.row_count as usize]
                .iter()
                .map(|row| {
                    let first_cell = (row.first_cell - bases.cells) as usize;
                    let cells = slot.cells[first_cell..first_cell + row.cell_count as usize]
                        .iter()
                        .map(|c| (c.start, c.outcome))
                        .collect();
                    (row.start, cells)
                })
                .collect();
            ((key.protocol, key.table_id), rows)
        })
        .collect()
}

/// Binds this node's endpoints to interfaces as an agent would find them: most keep their
/// interface, some have none yet, now and then one gets a new one.
fn rebind(
    rng: &mut Rng,
    resources: &BTreeMap<ResourceKey, Arc<Resource>>,
    bindings: &mut BTreeMap<ResourceKey, u32>,
    next_ifindex: &mut u32,
) {
    let local: Vec<ResourceKey> = resources
        .values()
        .filter_map(|r| match &**r {
            Resource::WorkloadEndpoint(w) if w.metadata.node == NODE => Some(w.key()),
            _ => None,
        })
        .collect();
    bindings.retain(|k, _| local.contains(k));
    for key in local {
        let roll = rng.below(100);
        if roll < 5 {
            bindings.remove(&key);
        } else if roll < 10 || !bindings.contains_key(&key) && roll < 80 {
            *next_ifindex += 1;
            bindings.insert(key, *next_ifindex);
        }
    }
}
