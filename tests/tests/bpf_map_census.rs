//! Counting the entries of the maps the kernel fills, as `/metrics` does: a census in
//! batches finds every conntrack entry (over several batches), and the sampler counts
//! again only once its interval has passed, however often it is asked.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use aya::maps::HashMap;
use palisade::dataplane::map_census::Census;
use palisade::dataplane::{ensure_pin_dir, map_pin_dir};
use palisade::telemetry::sample::Sampler;
use palisade_common::{CtKey, CtValue, FAMILY_V4, capacity, map_names};
use palisade_tests::agent_process::PrivateBpffs;
use palisade_tests::bpf_maps::{Dataplane, addr_of};
use palisade_tests::require_root;

/// More than two of the census' batches (4,096 entries each).
const FLOWS: u16 = 10_000;

fn flow(n: u16) -> CtKey {
    let (family, local_addr) = addr_of(IpAddr::V4(Ipv4Addr::new(10, 238, 9, 1)));
    let (_, remote_addr) = addr_of(IpAddr::V4(Ipv4Addr::new(10, 238, 9, 2)));
    assert_eq!(family, FAMILY_V4);
    CtKey {
        ifindex: 1,
        family,
        protocol: 17,
        local_port: 40_000,
        remote_port: n,
        _pad: 0,
        local_addr,
        remote_addr,
    }
}

fn counted(sampler: &mut Sampler, map: &str) -> u64 {
    let sample = sampler.sample(std::iter::empty()).expect("a sample");
    sample
        .counted
        .iter()
        .find(|(name, _)| *name == map)
        .map(|(_, n)| *n)
        .unwrap_or_else(|| panic!("{map} not counted: {sample:?}"))
}

#[test]
fn a_census_counts_every_conntrack_entry_and_the_sampler_counts_once_per_interval() {
    require_root();
    let bpffs = PrivateBpffs::mount();
    let pin_dir = ensure_pin_dir(bpffs.path()).expect("the pin directory");
    let mut dataplane = Dataplane::load_with_pins(Some(&pin_dir));
    let census = Census::open_pinned(&map_pin_dir(&pin_dir).join(map_names::CT))
        .expect("open the pinned PAL_CT");
    assert_eq!(census.max_entries(), capacity::CT);
    assert_eq!(census.count().expect("a census"), 0);

    let mut ct: HashMap<_, CtKey, CtValue> =
        HashMap::try_from(dataplane.ebpf().map_mut(map_names::CT).expect("PAL_CT"))
            .expect("PAL_CT as a hash map");
    for n in 0..FLOWS {
        ct.insert(flow(n), CtValue::default(), 0)
            .expect("insert a flow");
    }
    assert_eq!(census.count().expect("a census"), u64::from(FLOWS));

    let mut cached = Sampler::open(&pin_dir)
        .expect("a sampler")
        .with_census_interval(Duration::MAX);
    let mut fresh = Sampler::open(&pin_dir)
        .expect("a sampler")
        .with_census_interval(Duration::ZERO);
    assert_eq!(counted(&mut cached, map_names::CT), u64::from(FLOWS));
    assert_eq!(counted(&mut cached, map_names::FRAGS), 0);
    let sample = cached.sample(std::iter::empty()).expect("a sample");
    assert!(
        sample.capacities.contains(&(map_names::CT, capacity::CT)),
        "{:?}",
        sample.capacities
    );

    for n in 0..FLOWS / 4 {
        ct.remove(&flow(n)).expect("remove a flow");
    }
    let left = u64::from(FLOWS - FLOWS / 4);
    assert_eq!(census.count().expect("a census"), left);
    assert_eq!(counted(&mut fresh, map_names::CT), left);
    // Within its interval, the sampler gives the last census again instead of walking.
    assert_eq!(counted(&mut cached, map_names::CT), u64::from(FLOWS));
}
