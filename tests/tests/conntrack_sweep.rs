//! The agent's conntrack sweep, on the kernel's maps: it deletes the expired entries (in
//! batches, passing over keys that vanished meanwhile), keeps the live ones, and recounts
//! each endpoint's entries, counting as evicted those that vanished without it.
//!
//! Privileged: run through `cargo xtask test` as root.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsFd;
use std::path::PathBuf;

use aya::maps::{HashMap, Map, MapData};
use palisade::dataplane::conntrack::{Conntrack, Swept};
use palisade::dataplane::{ensure_pin_dir, map_batch, map_pin_dir};
use palisade_common::{CT_TIMEOUT_OTHER_NS, CtKey, CtUsage, CtValue, map_names};
use palisade_tests::agent_process::PrivateBpffs;
use palisade_tests::bpf_maps::{Dataplane, addr_of};
use palisade_tests::require_root;

const UDP: u8 = 17;
/// More than one batch of the walk that reads the table (4,096 entries).
const FLOWS: u16 = 10_000;
/// The sweep's clock: every entry last seen at 0 is expired, every one seen now is live.
const NOW: u64 = 3 * CT_TIMEOUT_OTHER_NS;

fn flow(ifindex: u32, port: u16) -> CtKey {
    let (family, local_addr) = addr_of(IpAddr::V4(Ipv4Addr::new(10, 238, 10, 1)));
    let (_, remote_addr) = addr_of(IpAddr::V4(Ipv4Addr::new(10, 238, 10, 2)));
    CtKey {
        ifindex,
        family,
        protocol: UDP,
        local_port: 40_000,
        remote_port: port,
        _pad: 0,
        local_addr,
        remote_addr,
    }
}

fn seen_at(last_seen_ns: u64) -> CtValue {
    CtValue {
        last_seen_ns,
        ..CtValue::default()
    }
}

/// The embedded object loaded with its maps pinned in a private bpffs (kept mounted while
/// the first value lives), and their pin directory.
fn pinned_dataplane() -> (PrivateBpffs, PathBuf, Dataplane) {
    require_root();
    let bpffs = PrivateBpffs::mount();
    let pin_dir = ensure_pin_dir(bpffs.path()).expect("the pin directory");
    let dataplane = Dataplane::load_with_pins(Some(&pin_dir));
    (bpffs, pin_dir, dataplane)
}

/// Endpoint 1 holds `FLOWS` entries, every other one expired, and five more that vanish
/// before the sweep (deleted by hand, as an eviction would); endpoint 2 holds three live
/// ones. The counts say what the programs added.
#[test]
fn the_sweep_deletes_expired_flows_keeps_live_ones_and_recounts_each_endpoint() {
    let (_bpffs, pin_dir, mut dataplane) = pinned_dataplane();
    let mut table = Conntrack::open_pinned(&pin_dir).expect("the pinned conntrack maps");
    table.track_endpoint(1).expect("endpoint 1 counted");
    table.track_endpoint(2).expect("endpoint 2 counted");
    for port in 0..FLOWS {
        let last_seen = if port % 2 == 0 { 0 } else { NOW };
        dataplane.set_conntrack(&flow(1, port), seen_at(last_seen));
    }
    for port in FLOWS..FLOWS + 5 {
        dataplane.set_conntrack(&flow(1, port), seen_at(NOW));
        assert!(table.remove_flow(&flow(1, port)).expect("deleted by hand"));
    }
    for port in 0..3 {
        dataplane.set_conntrack(&flow(2, port), seen_at(NOW));
    }
    dataplane.set_ct_usage(
        1,
        CtUsage {
            entries: u64::from(FLOWS) + 5,
            evicted: 0,
        },
    );
    dataplane.set_ct_usage(
        2,
        CtUsage {
            entries: 3,
            evicted: 0,
        },
    );

    let swept = table.sweep(NOW).expect("a sweep");

    let live = u64::from(FLOWS) / 2;
    assert_eq!(
        swept,
        Swept {
            live: live + 3,
            expired: live,
            evicted: 5,
        }
    );
    let left = table.flows().expect("the flows left");
    assert_eq!(left.len() as u64, live + 3);
    assert!(
        left.iter().all(|(_, value)| value.last_seen_ns == NOW),
        "an expired flow is left"
    );
    assert_eq!(
        dataplane.ct_usage(1),
        CtUsage {
            entries: live,
            evicted: 5,
        }
    );
    assert_eq!(
        dataplane.ct_usage(2),
        CtUsage {
            entries: 3,
            evicted: 0,
        }
    );
    // Nothing expired any more: the next sweep deletes nothing and finds nothing evicted.
    assert_eq!(
        table.sweep(NOW).expect("a second sweep"),
        Swept {
            live: live + 3,
            expired: 0,
            evicted: 0,
        }
    );
}

/// A batch delete passes over keys the map does not hold, wherever they are in the batch,
/// and says which keys it deleted.
#[test]
fn a_batch_delete_passes_over_missing_keys() {
    let (_bpffs, pin_dir, mut dataplane) = pinned_dataplane();
    let held: Vec<CtKey> = (0..6).map(|port| flow(1, port)).collect();
    for key in &held {
        dataplane.set_conntrack(key, seen_at(NOW));
    }
    let missing = |port| flow(9, port);
    let batch = [
        missing(0),
        held[0],
        held[1],
        missing(1),
        missing(2),
        held[2],
        held[3],
        missing(3),
    ];
    let ct = MapData::from_pin(map_pin_dir(&pin_dir).join(map_names::CT)).expect("PAL_CT");
    let mut deleted = Vec::new();
    map_batch::delete(ct.fd().as_fd(), &batch, |key: &CtKey| deleted.push(*key))
        .expect("a batch delete");
    assert_eq!(deleted, held[..4]);
    let ct: HashMap<_, CtKey, CtValue> =
        HashMap::try_from(Map::from_map_data(ct).expect("PAL_CT")).expect("PAL_CT as a hash map");
    let mut left: Vec<CtKey> = ct.keys().map(|k| k.expect("a key")).collect();
    left.sort_by_key(|k| k.remote_port);
    assert_eq!(left, held[4..]);
}
