//! Effective labels: lookup order, missing profiles, and the allocation-free view.

// Tests fail loudly on bad fixtures; unwrap is the point.
#![allow(clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;

use palisade::model::labels::{EffectiveLabels, effective_labels};
use palisade::model::{Profile, ProfileMetadata};
use palisade::selector::Labels;

/// Counts allocations made by the current thread, so that tests running in parallel do
/// not disturb each other.
struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // try_with: the thread-local may be gone while a thread shuts down.
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn profile(name: &str, labels: &[(&str, &str)], tags: &[&str]) -> Profile {
    Profile {
        metadata: ProfileMetadata {
            name: name.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            labels: map(labels),
        },
        spec: Default::default(),
    }
}

#[test]
fn first_hit_wins_in_endpoint_then_profile_order() {
    let own = map(&[("a", "own")]);
    let first = profile("p1", &[("a", "p1"), ("b", "p1")], &["c", "b"]);
    let second = profile("p2", &[("b", "p2"), ("c", "p2"), ("d", "p2")], &["e", "d"]);
    let listed = [Some(&first), Some(&second)];
    let expected = map(&[("a", "own"), ("b", "p1"), ("c", ""), ("d", "p2"), ("e", "")]);
    assert_eq!(effective_labels(&own, &listed), expected);

    // Profile order matters: the other way round, p2's labels come first.
    let reversed = [Some(&second), Some(&first)];
    let expected = map(&[
        ("a", "own"),
        ("b", "p2"),
        ("c", "p2"),
        ("d", "p2"),
        ("e", ""),
    ]);
    assert_eq!(effective_labels(&own, &reversed), expected);
}

#[test]
fn a_missing_profile_contributes_nothing() {
    let own = BTreeMap::new();
    let later = profile("p2", &[("x", "y")], &["t"]);
    let listed = [None, Some(&later), None];
    assert_eq!(
        effective_labels(&own, &listed),
        map(&[("t", ""), ("x", "y")])
    );
    assert_eq!(effective_labels(&own, &[None]), BTreeMap::new());
}

#[test]
fn the_view_agrees_with_the_map() {
    let own = map(&[("a", "own"), ("z", "")]);
    let first = profile("p1", &[("a", "p1"), ("b", "p1")], &["c", "b"]);
    let second = profile("p2", &[("b", "p2"), ("c", "p2"), ("d", "p2")], &["e", "d"]);
    for listed in [
        vec![Some(&first), None, Some(&second)],
        vec![Some(&second), Some(&first)],
        vec![],
    ] {
        let full = effective_labels(&own, &listed);
        let view = EffectiveLabels::new(&own, &listed);
        for key in ["a", "b", "c", "d", "e", "z", "absent", ""] {
            assert_eq!(
                view.get(key),
                full.get(key).map(String::as_str),
                "{key} in {listed:?}"
            );
        }
    }
}

#[test]
fn the_view_does_not_allocate() {
    let own = map(&[("a", "own")]);
    let first = profile("p1", &[("b", "p1")], &["c"]);
    let listed = [None, Some(&first)];
    let view = EffectiveLabels::new(&own, &listed);
    let before = ALLOCATIONS.with(Cell::get);
    let found = [
        view.get("a"),
        view.get("b"),
        view.get("c"),
        view.get("absent"),
    ];
    let after = ALLOCATIONS.with(Cell::get);
    assert_eq!(found, [Some("own"), Some("p1"), Some(""), None]);
    assert_eq!(after - before, 0, "EffectiveLabels::get allocated");
    // The counter does see allocations: building the map makes some.
    let full = effective_labels(&own, &listed);
    assert!(
        ALLOCATIONS.with(Cell::get) > after,
        "allocation counting is broken"
    );
    assert_eq!(full.len(), 3);
}
