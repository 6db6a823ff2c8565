//! What `/metrics` costs the agent: the census of a full conntrack map in batches (what a
//! scrape does at most once per 30 s) against a key-by-key walk, and one whole scrape
//! (every counter read and summed over CPUs, then encoded) of a node with many endpoints
//! and rule counters, the census cached as between two censuses.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aya::maps::{HashMap, MapData, PerCpuArray, PerCpuValues};
use aya::util::nr_cpus;
use palisade::dataplane::map_census::Census;
use palisade::dataplane::{ensure_pin_dir, map_pin_dir};
use palisade::telemetry::Latencies;
use palisade::telemetry::exposition::{Format, Scrape, render};
use palisade::telemetry::sample::Sampler;
use palisade::telemetry::status::{DatastoreState, Enforcement, LocalEndpoint, RuleLabels, Status};
use palisade_common::{
    CtKey, CtValue, EndpointIndex, EndpointIndexKey, EndpointStats, FAMILY_V4, capacity, map_names,
};
use palisade_tests::agent_process::PrivateBpffs;
use palisade_tests::bpf_maps::Dataplane;
use palisade_tests::require_root;

const ENDPOINTS: u32 = 1_000;
const RULES: u32 = 10_000;
const REPEATS: usize = 21;

fn flow(n: u32) -> CtKey {
    let mut local_addr = [0u8; 16];
    local_addr[..4].copy_from_slice(&[10, 238, (n >> 16) as u8, 1]);
    let mut remote_addr = [0u8; 16];
    remote_addr[..4].copy_from_slice(&[10, 239, 0, 1]);
    CtKey {
        ifindex: 1,
        family: FAMILY_V4,
        protocol: 17,
        local_port: (n & 0xffff) as u16,
        remote_port: 53,
        _pad: 0,
        local_addr,
        remote_addr,
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let started = Instant::now();
    let out = f();
    (out, started.elapsed())
}

fn status() -> Status {
    let endpoints = (0..ENDPOINTS)
        .map(|i| LocalEndpoint {
            name: format!("endpoint-{i:04}"),
            interface: format!("cali{i:011}"),
            ifindex: Some(1_000 + i),
            attached: true,
        })
        .collect();
    let rules: Vec<RuleLabels> = (0..RULES)
        .map(|index| RuleLabels {
            index,
            kind: "policy",
            owner: format!("policy-{:04}", index / 10),
            direction: if index % 2 == 0 { "ingress" } else { "egress" }.to_string(),
            rule: (index % 10 + 1).to_string(),
            action: "allow".to_string(),
        })
        .collect();
    Status {
        datastore: DatastoreState::InSync,
        datastore_revision: Some(1),
        enforcement: Enforcement {
            policy_revision: Some(1),
            endpoints,
            rules: Arc::from(rules),
            occupancy: vec![(map_names::LOCAL, 2 * u64::from(ENDPOINTS))],
        },
        updates_refused: 0,
    }
}

fn main() {
    require_root();
    let bpffs = PrivateBpffs::mount();
    let pin_dir = ensure_pin_dir(bpffs.path()).expect("the pin directory");
    let mut dataplane = Dataplane::load_with_pins(Some(&pin_dir));

    let mut ct: HashMap<&mut MapData, CtKey, CtValue> =
        HashMap::try_from(dataplane.ebpf().map_mut(map_names::CT).expect("PAL_CT"))
            .expect("PAL_CT as a hash map");
    for n in 0..capacity::CT {
        ct.insert(flow(n), CtValue::default(), 0)
            .expect("insert a flow");
    }
    let census = Census::open_pinned(&map_pin_dir(&pin_dir).join(map_names::CT))
        .expect("open the pinned PAL_CT");
    let entries = census.count().expect("a census");
    let batched = median(
        (0..REPEATS)
            .map(|_| timed(|| census.count().expect("a census")).1)
            .collect(),
    );
    let (walked, walk) = timed(|| ct.keys().count());
    assert_eq!(walked as u64, entries, "the walk and the census disagree");
    eprintln!("bench: census of {entries} conntrack entries {batched:?}, key walk {walk:?}");

    let cpus = nr_cpus().expect("the CPU count");
    for i in 0..ENDPOINTS {
        let values = PerCpuValues::try_from(vec![EndpointStats::default(); cpus]).unwrap();
        let mut counters: PerCpuArray<&mut MapData, EndpointStats> = PerCpuArray::try_from(
            dataplane
                .ebpf()
                .map_mut(map_names::EP_STATS)
                .expect("PAL_EP_STATS"),
        )
        .expect("PAL_EP_STATS as a per-CPU array");
        counters.set(i, values, 0).expect("an endpoint's counters");
        let mut indexes: HashMap<&mut MapData, EndpointIndexKey, EndpointIndex> =
            HashMap::try_from(
                dataplane
                    .ebpf()
                    .map_mut(map_names::EP_INDEX)
                    .expect("PAL_EP_INDEX"),
            )
            .expect("PAL_EP_INDEX as a hash map");
        indexes
            .insert(
                EndpointIndexKey { ifindex: 1_000 + i },
                EndpointIndex::new(i),
                0,
            )
            .expect("an endpoint's index");
    }

    let mut sampler = Sampler::open(&pin_dir).expect("a sampler");
    let status = status();
    let latencies = Latencies::default();
    let scrape = |sampler: &mut Sampler| {
        let kernel = sampler
            .sample(status.enforcement.rules.iter().map(|r| r.index))
            .expect("a sample");
        let scrape = Scrape {
            status: status.clone(),
            kernel,
        };
        render(Format::Prometheus, scrape, &latencies).expect("an exposition")
    };
    let (first, with_census) = timed(|| scrape(&mut sampler));
    let scrapes = median(
        (0..REPEATS)
            .map(|_| timed(|| scrape(&mut sampler)).1)
            .collect(),
    );
    eprintln!(
        "bench: scrape {scrapes:?} ({} bytes); the first, with a census, {with_census:?}",
        first.len()
    );

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "| conntrack entries | census (batched, per 30 s at most) | key-by-key walk | scrape: {ENDPOINTS} endpoints, {RULES} rule counters (read + encode) | the same with a census | exposition |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| {entries} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {} KiB |",
        ms(batched),
        ms(walk),
        ms(scrapes),
        ms(with_census),
        first.len() / 1024
    );
}
