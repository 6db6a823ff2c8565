//! `cargo xtask bench`: what palisade costs, measured on this machine.
//!
//! - per packet, through BPF_PROG_TEST_RUN (the kernel's own average over many repeats),
//!   beside an empty TC program in the same run: an established flow (conntrack hit) and a
//!   new flow the policy denies (so no entry is made and every repeat takes the full path);
//! - the full compile, the entries and kernel memory of the maps;
//! - one policy changed and one endpoint added: compile plus incremental write;
//!
//! at 10, 1,000 and 10,000 endpoints (the largest with 2,000 label sets) with 10, 1,000,
//! 1,000 and 10,000 policies.
//! Prints a Markdown table; `cargo xtask bench` keeps it in bench/README.md.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark that cannot run fails

#[path = "../../agent/tests/common/generated.rs"]
mod generated;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use palisade::compile::{Capacities, Image, Locals, compile_for};
use palisade::dataplane::writer::{PolicyMaps, Writer};
use palisade::dataplane::{self, LoadedObject};
use palisade::model::{Resource, ResourceKey};
use palisade::policy::{Direction, Model, PROTO_TCP, Packet, Verdict};
use palisade_common::program_names;
use palisade_tests::bpf_run::{SkbContext, run_repeated};
use palisade_tests::packet::Frame;
use palisade_tests::require_root;

const REPEAT: u32 = 1_000_000;
const UPLINK: u32 = 1;

struct Scale {
    endpoints: usize,
    label_sets: usize,
    policies: usize,
}

struct Row {
    scale: String,
    empty_ns: u128,
    established_ns: u128,
    new_denied_ns: u128,
    compile: Duration,
    node_compile: Duration,
    entries: usize,
    memory_mib: f64,
    policy_change: Duration,
    endpoint_added: Duration,
}

fn private_interface() -> u32 {
    // SAFETY: unshare(2) with CLONE_NEWNET changes only the calling thread's namespace.
    assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
    let ok = Command::new("ip")
        .args([
            "link", "add", "pbench0", "type", "veth", "peer", "name", "pbench1",
        ])
        .status()
        .unwrap()
        .success();
    assert!(ok, "ip link add");
    let name = CString::new("pbench0").unwrap();
    // SAFETY: a valid NUL-terminated name.
    unsafe { libc::if_nametoindex(name.as_ptr()) }
}

fn run(
    loaded: &mut LoadedObject,
    program: &'static str,
    data: &[u8],
    ctx: SkbContext,
) -> (u32, u128) {
    let (verdict, mean) = run_repeated(loaded.program(program).unwrap(), data, ctx, REPEAT);
    (verdict, mean.as_nanos())
}

/// Kernel memory of the maps: the `memlock` line of each map fd's fdinfo.
fn maps_memory() -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir("/proc/self/fdinfo").unwrap().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        if !text.contains("map_type:") {
            continue;
        }
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("memlock:") {
                total += v.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    total
}

/// A peer address and TCP port the policed endpoint's egress policy gives `want` for.
fn find_flow(
    model: &Model,
    key: &ResourceKey,
    local: IpAddr,
    peers: &[IpAddr],
    want: Verdict,
) -> (IpAddr, u16) {
    for &peer in peers {
        for port in [443u16, 8000, 8443, 53, 22, 9050, 5000] {
            let packet = Packet::new(local, peer, PROTO_TCP, (40000, port), (0, 0));
            if model
                .evaluate(key, Direction::Egress, &packet)
                .map(|d| d.verdict)
                == Some(want)
            {
                return (peer, port);
            }
        }
    }
    panic!("no {want:?} flow found for {key}");
}

/// Workloads per node: the agent compiles local IDs for its own node's endpoints only.
const PER_NODE: usize = 100;

fn measure(scale: &Scale, ifindex: u32) -> Row {
    eprintln!(
        "bench: {} endpoints, {} label sets, {} policies",
        scale.endpoints, scale.label_sets, scale.policies
    );
    let mut resources: Vec<Resource> =
        generated::generated_with(scale.endpoints, scale.label_sets, scale.policies, "n");
    // The first PER_NODE endpoints are this node's; the rest are spread over other nodes.
    for (i, w) in resources
        .iter_mut()
        .filter_map(|r| match r {
            Resource::WorkloadEndpoint(w) => Some(w),
            _ => None,
        })
        .enumerate()
    {
        if i >= PER_NODE {
            w.metadata.node = format!("n{}", i / PER_NODE);
        }
    }
    let model = Model::new(resources.clone());
    let started = Instant::now();
    compile_for(resources.clone(), &Capacities::UNLIMITED, Locals::All).unwrap();
    let compile = started.elapsed();
    eprintln!("bench:   full compile (every endpoint local) {compile:?}");
    let started = Instant::now();
    let image: Image =
        compile_for(resources.clone(), &Capacities::UNLIMITED, Locals::Node("n")).unwrap();
    let node_compile = started.elapsed();
    eprintln!(
        "bench:   node compile {node_compile:?}: {:?}",
        image.stats()
    );

    let object = dataplane::ebpf_object().expect("run through `cargo xtask bench`");
    let mut loaded = dataplane::load(object, None).unwrap();
    let maps = PolicyMaps::take(loaded.ebpf_mut()).unwrap();
    let mut writer = Writer::adopt(maps).unwrap();

    let endpoints: Vec<_> = model.workload_endpoints().cloned().collect();
    let policed = &endpoints[0];
    let key = policed.key();
    let local = policed.spec.ip_networks[0].addr();
    let bindings = BTreeMap::from([(key.clone(), ifindex)]);
    let published = writer.publish(&image, &bindings, |_| Ok(())).unwrap();
    let entries = published.written;
    let memory_mib = maps_memory() as f64 / (1024.0 * 1024.0);

    let peers: Vec<IpAddr> = endpoints
        .iter()
        .skip(1)
        .map(|e| e.spec.ip_networks[0].addr())
        .filter(|a| a.is_ipv4())
        .collect();
    let (allowed_peer, allowed_port) = find_flow(&model, &key, local, &peers, Verdict::Allow);
    let (denied_peer, denied_port) = find_flow(&model, &key, local, &peers, Verdict::Deny);
    let ctx = SkbContext {
        ifindex,
        ingress_ifindex: UPLINK,
    };
    let allowed = Frame::for_keys(local, allowed_peer, PROTO_TCP, 40000, allowed_port).build();
    let denied = Frame::for_keys(local, denied_peer, PROTO_TCP, 40001, denied_port).build();

    loaded
        .ebpf_mut()
        .program_mut(program_names::EMPTY)
        .and_then(|p| <&mut aya::programs::SchedClassifier>::try_from(p).ok())
        .expect("the object's empty program")
        .load()
        .unwrap();
    let (_, empty_ns) = run(&mut loaded, program_names::EMPTY, &allowed, ctx);
    // The first run admits the flow; every repeat after is a conntrack hit.
    let (verdict, _) = run(&mut loaded, program_names::FROM_WORKLOAD, &allowed, ctx);
    assert_eq!(verdict, 0, "the allowed flow was not allowed");
    let (verdict, established_ns) = run(&mut loaded, program_names::FROM_WORKLOAD, &allowed, ctx);
    assert_eq!(verdict, 0);
    let (verdict, new_denied_ns) = run(&mut loaded, program_names::FROM_WORKLOAD, &denied, ctx);
    assert_eq!(verdict, 2, "the denied flow was not denied");

    // One policy changed: its first ingress rule now denies.
    let mut changed = resources.clone();
    if let Some(Resource::Policy(p)) = changed
        .iter_mut()
        .find(|r| matches!(r, Resource::Policy(_)))
        && let Some(rule) = p.spec.ingress.first_mut()
    {
        rule.action = palisade::model::Action::Deny;
    }
    let started = Instant::now();
    let image = compile_for(changed.clone(), &Capacities::UNLIMITED, Locals::Node("n")).unwrap();
    writer.publish(&image, &bindings, |_| Ok(())).unwrap();
    let policy_change = started.elapsed();

    // One endpoint added: a copy of the policed one under a new name and address.
    let mut added = changed;
    let mut extra = policed.clone();
    extra.metadata.name = "bench-extra".into();
    extra.metadata.workload = "bench-extra".into();
    extra.spec.ip_networks = vec!["10.250.250.250/32".parse().unwrap()];
    added.push(Resource::WorkloadEndpoint(extra));
    let started = Instant::now();
    let image = compile_for(added, &Capacities::UNLIMITED, Locals::Node("n")).unwrap();
    writer.publish(&image, &bindings, |_| Ok(())).unwrap();
    let endpoint_added = started.elapsed();

    Row {
        scale: format!(
            "{} endpoints ({} label sets), {} policies",
            scale.endpoints,
            scale.label_sets.min(scale.endpoints),
            scale.policies
        ),
        empty_ns,
        established_ns,
        new_denied_ns,
        compile,
        node_compile,
        entries,
        memory_mib,
        policy_change,
        endpoint_added,
    }
}

fn main() {
    require_root();
    let ifindex = private_interface();
    let scales = [
        Scale {
            endpoints: 10,
            label_sets: 10,
            policies: 10,
        },
        Scale {
            endpoints: 1_000,
            label_sets: 200,
            policies: 1_000,
        },
        Scale {
            endpoints: 10_000,
            label_sets: 2_000,
            policies: 1_000,
        },
        Scale {
            endpoints: 10_000,
            label_sets: 2_000,
            policies: 10_000,
        },
    ];
    let rows: Vec<Row> = scales.iter().map(|s| measure(s, ifindex)).collect();
    println!(
        "| scale | empty program | established (conntrack hit) | new flow (denied) | full compile (all local) | node compile ({PER_NODE} local) | map entries | map memory | one policy changed | one endpoint added |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} ns | {} ns (+{}) | {} ns (+{}) | {:.0} ms | {:.0} ms | {} | {:.1} MiB | {:.1} ms | {:.1} ms |",
            r.scale,
            r.empty_ns,
            r.established_ns,
            r.established_ns.saturating_sub(r.empty_ns),
            r.new_denied_ns,
            r.new_denied_ns.saturating_sub(r.empty_ns),
            r.compile.as_secs_f64() * 1e3,
            r.node_compile.as_secs_f64() * 1e3,
            r.entries,
            r.memory_mib,
            r.policy_change.as_secs_f64() * 1e3,
            r.endpoint_added.as_secs_f64() * 1e3,
        );
    }
}
