//! Each policy goes into both slots of the maps: before its flip into the inactive one,
//! and once the flip's grace period is over into the one it retired, so that the next
//! change has only itself to write before its flip. After a burst of policy changes, once
//! the agent is idle, both slots of every compiled hash map hold as many entries (the
//! retired slot is not left one change behind).
//!
//! Privileged: run through `cargo xtask test` as root.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failing unwrap is a failing test

use std::thread;
use std::time::{Duration, Instant};

use aya::Pod;
use aya::maps::{HashMap, Map, MapData};
use palisade_common::{
    LocalKey, LocalValue, PeerKey, PeerValue, PolicyKey, PolicyValue, RemoteKey, RemoteValue,
    TableKey, TableValue, map_names,
};
use palisade_tests::agent_process::{AgentHome, PATIENCE};
use palisade_tests::matrix::Scene;
use palisade_tests::steady_traffic::{POLICY, TCP_PORTS, UDP_PORTS, client_and_server};
use palisade_tests::{Cleanup, require_root};

/// How many changes the burst has.
const CHANGES: u16 = 6;

/// A policy over every endpoint that opens `port` to the client: each change a port no rule
/// had, so every change adds tables.
fn policy_opening(port: u16) -> String {
    format!(
        r#"apiVersion: v1
kind: policy
metadata:
  name: catch-up
spec:
  order: 10
  selector: all()
  ingress:
  - action: allow
    protocol: tcp
    source:
      selector: role == 'client'
    destination:
      ports: [{port}]
  egress:
  - action: allow
"#
    )
}

/// The entries of the pinned hash map `name` in slot 0 and in slot 1.
fn entries_per_slot<K: Pod, V: Pod>(
    home: &AgentHome,
    name: &str,
    slot_of: fn(&K) -> u8,
) -> [usize; 2] {
    let pins = palisade::dataplane::pin_dir(home.bpffs.path());
    let path = palisade::dataplane::map_pin_dir(&pins).join(name);
    let data = MapData::from_pin(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let map: HashMap<MapData, K, V> = HashMap::try_from(Map::HashMap(data)).unwrap();
    let mut counts = [0; 2];
    for key in map.keys() {
        counts[usize::from(slot_of(&key.unwrap()))] += 1;
    }
    counts
}

fn slots(home: &AgentHome) -> Vec<(&'static str, [usize; 2])> {
    vec![
        (
            map_names::LOCAL,
            entries_per_slot::<LocalKey, LocalValue>(home, map_names::LOCAL, |k| k.slot),
        ),
        (
            map_names::REMOTE,
            entries_per_slot::<RemoteKey, RemoteValue>(home, map_names::REMOTE, |k| k.slot),
        ),
        (
            map_names::PEERS,
            entries_per_slot::<PeerKey, PeerValue>(home, map_names::PEERS, |k| k.slot),
        ),
        (
            map_names::POLICY,
            entries_per_slot::<PolicyKey, PolicyValue>(home, map_names::POLICY, |k| k.slot),
        ),
        (
            map_names::TABLE,
            entries_per_slot::<TableKey, TableValue>(home, map_names::TABLE, |k| k.slot),
        ),
    ]
}

#[test]
fn after_a_burst_of_changes_the_retired_slot_holds_the_policy_in_force_too() {
    require_root();
    let mut cleanup = Cleanup::new();
    let mut scene = Scene::build(
        &mut cleanup,
        "catch-up",
        &client_and_server(&["10.243.1.1", "10.243.1.2"]),
        None,
        &TCP_PORTS,
        &UDP_PORTS,
    );
    scene.store.apply(POLICY);
    scene.start_agent();
    scene.wait_for_enforcement();

    let config = scene.home.pinned_config();
    let generation = config.generation();
    for change in 0..CHANGES {
        scene.store.apply(&policy_opening(9000 + change));
    }
    let revision = scene.store.revision();
    scene
        .agent()
        .wait_for_ever_said(&["policy published", &format!("revision={revision}")]);
    assert_ne!(config.generation(), generation, "the burst flipped nothing");

    // The catch-up comes once the grace period (milliseconds) is over.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let held = slots(&scene.home);
        if held.iter().all(|(_, [a, b])| a == b) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the retired slot was not caught up: entries per slot {held:?}\n{}",
            scene.agent().log()
        );
        thread::sleep(Duration::from_millis(20));
    }
}
