//! The writer's in-place path against its full one: random worlds changed step by step
//! (endpoints, policies, interface bindings), compiled by the compiler an agent keeps and
//! written with `Writer::publish_changes`, which writes only what changed. After every
//! publish, what the kernel maps hold for the active slot (read back with the bpf syscall)
//! must equal the full encoding of the same image: every hash and LPM entry, every array
//! entry in use. `bpf_differential` holds the full encoding against the evaluator with real
//! packets, so equal maps mean the same verdicts. Between publishes, now and then, the
//! slot a flip retired is caught up (`Writer::catch_up`, as the agent does once its grace
//! period is over): it must then hold the same, and the next publish still be right.
//!
//! Privileged: run through `cargo xtask test` as root.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failing unwrap is a failing test

#[path = "../../agent/tests/common/random_world.rs"]
mod random_world;

use std::collections::BTreeMap;
use std::sync::Arc;

use palisade::compile::{Capacities, Changes, Compiler, Locals};
use palisade::dataplane::slot_image::encode;
use palisade::dataplane::{self, writer::PolicyMaps, writer::Writer};
use palisade::model::{Resource, ResourceKey};
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

/// What the kernel maps hold for `slot` is the full encoding of `image` with `bindings`.
fn assert_holds(
    writer: &Writer,
    slot: u8,
    image: &palisade::compile::Image,
    bindings: &BTreeMap<ResourceKey, u32>,
    when: &str,
) {
    let (bases, limits) = writer.array_layout(slot);
    let mut counters = writer.rule_counters().clone();
    let want = encode(image, slot, bindings, bases, limits, &mut counters).unwrap();
    let held = writer.held(slot).unwrap();
    assert_eq!(held.local, want.local, "PAL_LOCAL, slot {slot}, {when}");
    assert_eq!(held.remote, want.remote, "PAL_REMOTE, slot {slot}, {when}");
    assert_eq!(held.lpm, want.lpm, "PAL_LPM, slot {slot}, {when}");
    assert_eq!(held.peers, want.peers, "PAL_PEERS, slot {slot}, {when}");
    assert_eq!(held.policy, want.policy, "PAL_POLICY, slot {slot}, {when}");
    assert_eq!(held.table, want.table, "PAL_TABLE, slot {slot}, {when}");
    assert_eq!(held.rows, want.rows, "PAL_ROWS, slot {slot}, {when}");
    assert_eq!(held.cells, want.cells, "PAL_CELLS, slot {slot}, {when}");
    assert_eq!(
        held.outcomes, want.outcomes,
        "PAL_OUTCOMES, slot {slot}, {when}"
    );
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
