//! `cargo xtask bench`: what palisade costs, measured on this machine.
//!
//! - per packet, through BPF_PROG_TEST_RUN (the kernel's own average over many repeats),
//!   beside an empty TC program in the same run: an established flow (conntrack hit), a
//!   new flow the policy denies (so no entry is made and every repeat takes the full path)
//!   and a new flow the policy allows over the closing entry of its own 4-tuple (what
//!   TCP_CRR with port reuse does: every repeat asks policy, reopens the entry and reports
//!   the flow), the median of interleaved rounds; with `PALISADE_DATAPLANE_BASELINE`, other builds'
//!   objects (of the same map ABI version) on the same maps and packets in the same rounds;
//! - the full compile, the entries and kernel memory of the maps;
//! - one policy changed and one endpoint added, as the agent does it: the compiler it keeps
//!   finds the change among all resources, compiles it in place, and the writer writes
//!   only the entries that changed (median and maximum of several changes);
//!
//! at 10, 1,000 and 10,000 endpoints (the largest with 2,000 label sets) with 10, 1,000,
//! 1,000 and 10,000 policies (`PALISADE_DATAPLANE_SCALES=10000/10000`: only the scales
//! named, as endpoints/policies).
//! Prints a Markdown table; `cargo xtask bench` keeps it in bench/README.md.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark that cannot run fails

#[path = "../../agent/tests/common/generated.rs"]
mod generated;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade::compile::{Capacities, Changes, Compiler, Locals, compile_for};
use palisade::dataplane::conntrack::Conntrack;
use palisade::dataplane::counters::CounterMaps;
use palisade::dataplane::writer::{PolicyMaps, Writer};
use palisade::dataplane::{self, LoadedObject};
use palisade::model::Action;
use palisade::model::{Resource, ResourceKey};
use palisade::policy::{Direction, Model, PROTO_TCP, Packet, Verdict};
use palisade_common::{CONFIG_ALLOW_EVENTS, program_names};
use palisade_tests::agent_process::PrivateBpffs;
use palisade_tests::bpf_run::{SkbContext, run_repeated};
use palisade_tests::packet::{Frame, TCP_FIN, TCP_SYN};
use palisade_tests::require_root;

const REPEAT: u32 = 1_000_000;
/// Per-packet runs are repeated in rounds, every program once per round in turn, and the
/// median taken: other work on the machine then falls on all of them alike.
const ROUNDS: usize = 5;
/// Paths of other builds' eBPF objects (comma-separated) to measure per packet beside this
/// one, e.g. the object of the commit a change is compared against.
const BASELINE_VARIABLE: &str = "PALISADE_DATAPLANE_BASELINE";
/// The scales to measure (comma-separated `ENDPOINTS/POLICIES`, e.g. `10000/10000`), to
/// shorten a run while developing; every scale when unset.
const SCALES_VARIABLE: &str = "PALISADE_DATAPLANE_SCALES";
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
    new_allowed_ns: u128,
    /// For each baseline object: established, new flow (denied) and new flow (allowed), in
    /// the same rounds.
    baselines: Vec<PerPacket>,
    compile: Duration,
    node_compile: Duration,
    entries: usize,
    memory_mib: f64,
    policy_change: Samples,
    endpoint_added: Samples,
    churn: Samples,
    /// How many of the churn's updates compiled in full.
    churn_full: usize,
}

/// One object's per-packet medians: established, new flow (denied), new flow (allowed).
type PerPacket = (u128, u128, u128);

/// How many changes of each kind are timed.
const CHANGES: usize = 21;

/// How many policy changes the steady churn makes: far more than in-place updates once
/// took before the garbage they left forced a full compile (every few dozen at 10,000
/// policies).
const CHURN: usize = 300;

/// Durations of repeated changes.
struct Samples(Vec<Duration>);

impl Samples {
    fn median(&self) -> Duration {
        let mut sorted = self.0.clone();
        sorted.sort();
        sorted.get(sorted.len() / 2).copied().unwrap_or_default()
    }

    fn max(&self) -> Duration {
        self.0.iter().max().copied().unwrap_or_default()
    }

    fn p99(&self) -> Duration {
        let mut sorted = self.0.clone();
        sorted.sort();
        let at = (sorted.len() * 99).div_ceil(100).saturating_sub(1);
        sorted.get(at).copied().unwrap_or_default()
    }
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

/// What the verifier walked in each program, and how long loading the object took (its
/// maps adopted or made, both programs verified): the agent pays it at every start.
fn report_verified(name: &str, load: Duration, loaded: &mut LoadedObject) {
    let counts: Vec<String> = dataplane::PROGRAMS
        .iter()
        .map(|program| {
            let count = loaded
                .program(program)
                .unwrap()
                .info()
                .unwrap()
                .verified_instruction_count();
            format!("{program} {}", count.unwrap_or_default())
        })
        .collect();
    eprintln!(
        "bench:   {name}: verified instructions {}; loaded in {load:?}",
        counts.join(", ")
    );
}

fn median(mut samples: Vec<u128>) -> u128 {
    samples.sort_unstable();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

/// Another build's eBPF object, measured per packet beside this one.
struct Baseline {
    name: String,
    object: Vec<u8>,
}

/// The objects [`BASELINE_VARIABLE`] names, each called by its file name.
fn baselines() -> Vec<Baseline> {
    let Ok(paths) = std::env::var(BASELINE_VARIABLE) else {
        return Vec::new();
    };
    paths
        .split(',')
        .filter(|path| !path.is_empty())
        .map(|path| Baseline {
            name: std::path::Path::new(path)
                .file_name()
                .map_or(path.to_string(), |name| name.to_string_lossy().into_owned()),
            object: std::fs::read(path)
                .unwrap_or_else(|e| panic!("{BASELINE_VARIABLE}: cannot read {path}: {e}")),
        })
        .collect()
}

fn measure(scale: &Scale, ifindex: u32, baselines: &[Baseline]) -> Row {
    eprintln!(
        "bench: {} endpoints, {} label sets, {} policies",
        scale.endpoints, scale.label_sets, scale.policies
    );
    let resources = generated::generated_cluster(
        scale.endpoints,
        scale.label_sets,
        scale.policies,
        "n",
        PER_NODE,
    );
    let model = Model::new(resources.clone());
    let started = Instant::now();
    compile_for(resources.clone(), &Capacities::UNLIMITED, Locals::All).unwrap();
    let compile = started.elapsed();
    eprintln!("bench:   full compile (every endpoint local) {compile:?}");
    let mut current: BTreeMap<ResourceKey, Arc<Resource>> = resources
        .iter()
        .map(|r| (r.key(), Arc::new(r.clone())))
        .collect();
    let mut compiler = Compiler::new(Locals::Node("n"), Capacities::UNLIMITED);
    let started = Instant::now();
    let changes = compiler.update(&current).unwrap();
    let node_compile = started.elapsed();
    let image = compiler.image().unwrap();
    eprintln!(
        "bench:   node compile {node_compile:?}: {:?}",
        image.stats()
    );

    let object = dataplane::ebpf_object().expect("run through `cargo xtask bench`");
    // Pinned on a private bpffs, so that baseline objects loaded after it find its maps by
    // name and adopt them: the same world and the same conntrack entry for every object.
    let bpffs = PrivateBpffs::mount();
    let pins = bpffs.path().join("bench");
    let started = Instant::now();
    let mut loaded = dataplane::load(object, Some(&pins)).unwrap();
    report_verified("this build", started.elapsed(), &mut loaded);
    let maps = PolicyMaps::take(loaded.ebpf_mut()).unwrap();
    let mut writer = Writer::adopt(maps).unwrap();

    let endpoints: Vec<_> = model.workload_endpoints().cloned().collect();
    let policed = &endpoints[0];
    let key = policed.key();
    let local = policed.spec.ip_networks[0].addr();
    let mut bindings = BTreeMap::from([(key.clone(), ifindex)]);
    let published = writer
        .publish_changes(image, &changes, &bindings, |_| Ok(()))
        .unwrap();
    let entries = published.written;
    // As the agent does after the grace period: the retired slot takes the image too.
    writer.catch_up(image, &bindings).unwrap();
    let memory_mib = maps_memory() as f64 / (1024.0 * 1024.0);
    // What the agent does when it attaches to the endpoint's veth: its packets are
    // counted, and its flows against its conntrack budget.
    CounterMaps::take(loaded.ebpf_mut())
        .unwrap()
        .track_endpoint(ifindex)
        .unwrap();
    Conntrack::take(loaded.ebpf_mut())
        .unwrap()
        .track_endpoint(ifindex)
        .unwrap();
    // The agent's default switches: every drop and every allowed new flow is reported.
    writer.set_switches(CONFIG_ALLOW_EVENTS, 0, 0).unwrap();

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
    // A SYN that also carries FIN: it starts a flow over its key's closing entry (a bare SYN
    // does not continue a closing flow) and leaves the entry closing again, so every repeat
    // is a new allowed flow over an existing key, as under TCP_CRR with port reuse.
    let reopening = Frame::tcp(
        SocketAddr::new(local, 40002),
        SocketAddr::new(allowed_peer, allowed_port),
        TCP_SYN | TCP_FIN,
    )
    .build();

    loaded
        .ebpf_mut()
        .program_mut(program_names::EMPTY)
        .and_then(|p| <&mut aya::programs::SchedClassifier>::try_from(p).ok())
        .expect("the object's empty program")
        .load()
        .unwrap();
    let mut others: Vec<LoadedObject> = baselines
        .iter()
        .map(|baseline| {
            let started = Instant::now();
            let mut other = dataplane::load(&baseline.object, Some(&pins))
                .unwrap_or_else(|e| panic!("load the baseline {}: {e}", baseline.name));
            report_verified(&baseline.name, started.elapsed(), &mut other);
            other
        })
        .collect();
    // The first run admits the flow; every repeat after is a conntrack hit, for every
    // object (they share the entry).
    let (verdict, _) = run(&mut loaded, program_names::FROM_WORKLOAD, &allowed, ctx);
    assert_eq!(verdict, 0, "the allowed flow was not allowed");
    let mut empty = Vec::new();
    let mut established = Vec::new();
    let mut new_denied = Vec::new();
    let mut new_allowed = Vec::new();
    let mut other_established = vec![Vec::new(); others.len()];
    let mut other_new_denied = vec![Vec::new(); others.len()];
    let mut other_new_allowed = vec![Vec::new(); others.len()];
    for _ in 0..ROUNDS {
        empty.push(run(&mut loaded, program_names::EMPTY, &allowed, ctx).1);
        let (verdict, ns) = run(&mut loaded, program_names::FROM_WORKLOAD, &allowed, ctx);
        assert_eq!(verdict, 0);
        established.push(ns);
        let (verdict, ns) = run(&mut loaded, program_names::FROM_WORKLOAD, &denied, ctx);
        assert_eq!(verdict, 2, "the denied flow was not denied");
        new_denied.push(ns);
        let (verdict, ns) = run(&mut loaded, program_names::FROM_WORKLOAD, &reopening, ctx);
        assert_eq!(verdict, 0, "the reopened flow was not allowed");
        new_allowed.push(ns);
        for (i, other) in others.iter_mut().enumerate() {
            let name = &baselines[i].name;
            let (verdict, ns) = run(other, program_names::FROM_WORKLOAD, &allowed, ctx);
            assert_eq!(verdict, 0, "{name}: the established flow was not allowed");
            other_established[i].push(ns);
            let (verdict, ns) = run(other, program_names::FROM_WORKLOAD, &denied, ctx);
            assert_eq!(verdict, 2, "{name}: the denied flow was not denied");
            other_new_denied[i].push(ns);
            let (verdict, ns) = run(other, program_names::FROM_WORKLOAD, &reopening, ctx);
            assert_eq!(verdict, 0, "{name}: the reopened flow was not allowed");
            other_new_allowed[i].push(ns);
        }
    }
    drop(others);
    let empty_ns = median(empty);
    let established_ns = median(established);
    let new_denied_ns = median(new_denied);
    let new_allowed_ns = median(new_allowed);
    let baselines = other_established
        .into_iter()
        .zip(other_new_denied)
        .zip(other_new_allowed)
        .map(|((established, denied), allowed)| {
            (median(established), median(denied), median(allowed))
        })
        .collect();

    // One policy changed: its first ingress rule's action flips. The first policies select
    // every local endpoint of the node: the most work a policy change can be.
    let policies: Vec<ResourceKey> = current
        .keys()
        .filter(|k| matches!(k, ResourceKey::Policy { .. }))
        .take(CHANGES)
        .cloned()
        .collect();
    let mut policy_change = Samples(Vec::new());
    for policy in &policies {
        if let Some(Resource::Policy(p)) = current.get_mut(policy).map(Arc::make_mut)
            && let Some(rule) = p.spec.ingress.first_mut()
        {
            rule.action = match rule.action {
                Action::Allow => Action::Deny,
                _ => Action::Allow,
            };
        }
        policy_change.0.push(timed_update(
            &mut compiler,
            &mut writer,
            &current,
            &bindings,
        ));
    }

    // One endpoint added: a copy of the policed one under a new name and address, on its
    // own interface binding.
    let mut endpoint_added = Samples(Vec::new());
    for i in 0..CHANGES {
        let mut extra = policed.clone();
        extra.metadata.name = format!("bench-extra-{i}");
        extra.metadata.workload = format!("bench-extra-{i}");
        extra.spec.ip_networks = vec![format!("10.250.250.{}/32", i + 1).parse().unwrap()];
        bindings.insert(extra.key(), ifindex);
        current.insert(extra.key(), Arc::new(Resource::WorkloadEndpoint(extra)));
        endpoint_added.0.push(timed_update(
            &mut compiler,
            &mut writer,
            &current,
            &bindings,
        ));
    }
    // Steady churn: policies picked at random (a fixed sequence) get a random ingress rule's
    // action flipped, one change at a time.
    let mut picks = generated::Churn::over(&current);
    let (mut churn, mut churn_full) = (Samples(Vec::new()), 0);
    for _ in 0..CHURN {
        let (policy, _) = picks.flip_next(&mut current);
        std::thread::sleep(Duration::from_millis(5));
        let started = Instant::now();
        let changes = compiler.update(&current).unwrap();
        let compiled = started.elapsed();
        let image = compiler.image().unwrap();
        let published = writer
            .publish_changes(image, &changes, &bindings, |_| Ok(()))
            .unwrap();
        let took = started.elapsed();
        churn.0.push(took);
        // Where the slowest go: the compiler or the writer, and how much each touched.
        if took > Duration::from_millis(50) {
            let touched = match &changes {
                Changes::All => "all".to_string(),
                Changes::Keys(keys) => format!(
                    "{} peers, {} groups, {} tables",
                    keys.peers.len(),
                    keys.groups.len(),
                    keys.tables.len()
                ),
            };
            eprintln!(
                "bench:     slow change of {policy}: compile {compiled:?}, total {took:?}; \
                 touched {touched}; {} written, {} deleted",
                published.written, published.deleted
            );
        }
        churn_full += usize::from(matches!(changes, Changes::All));
    }
    eprintln!(
        "bench:   churn of {CHURN} policy changes: median {:?}, p99 {:?}, max {:?}, {churn_full} in full; {:?}",
        churn.median(),
        churn.p99(),
        churn.max(),
        compiler.image().unwrap().stats()
    );
    eprintln!(
        "bench:   policy changed {:?} (max {:?}), endpoint added {:?} (max {:?})",
        policy_change.median(),
        policy_change.max(),
        endpoint_added.median(),
        endpoint_added.max()
    );

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
        new_allowed_ns,
        baselines,
        compile,
        node_compile,
        entries,
        memory_mib,
        policy_change,
        endpoint_added,
        churn,
        churn_full,
    }
}

/// One update as the agent makes it: compile in place, write the difference, flip.
fn timed_update(
    compiler: &mut Compiler,
    writer: &mut Writer,
    resources: &BTreeMap<ResourceKey, Arc<Resource>>,
    bindings: &BTreeMap<ResourceKey, u32>,
) -> Duration {
    // The writer leaves a retired slot alone for a moment after a flip; an agent's changes
    // do not come back to back.
    std::thread::sleep(Duration::from_millis(5));
    let started = Instant::now();
    let changes = compiler.update(resources).unwrap();
    let image = compiler.image().unwrap();
    writer
        .publish_changes(image, &changes, bindings, |_| Ok(()))
        .unwrap();
    let took = started.elapsed();
    // Off the timed path, as in the agent: the retired slot takes the change too (after
    // the grace period), so that the next update writes only itself before its flip.
    writer.catch_up(image, bindings).unwrap();
    took
}

/// Every scale, or those `PALISADE_DATAPLANE_SCALES` names.
fn scales() -> Vec<Scale> {
    let all = [
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
    let Ok(names) = std::env::var(SCALES_VARIABLE) else {
        return all.into();
    };
    let chosen: Vec<Scale> = all
        .into_iter()
        .filter(|s| {
            names
                .split(',')
                .any(|n| n.trim() == format!("{}/{}", s.endpoints, s.policies))
        })
        .collect();
    assert!(
        !chosen.is_empty(),
        "{SCALES_VARIABLE}={names}: no such scale (10/10, 1000/1000, 10000/1000, 10000/10000)"
    );
    chosen
}

fn main() {
    require_root();
    let ifindex = private_interface();
    let scales = scales();
    let baselines = baselines();
    let rows: Vec<Row> = scales
        .iter()
        .map(|s| measure(s, ifindex, &baselines))
        .collect();
    println!(
        "| scale | empty program | established (conntrack hit) | new flow (denied) | new flow (allowed, over a closing entry) | full compile (all local) | node compile ({PER_NODE} local) | map entries | map memory | one policy changed | one endpoint added | {CHURN} policy changes in a row: p99 (max), compiled in full |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} ns | {} ns (+{}) | {} ns (+{}) | {} ns (+{}) | {:.0} ms | {:.0} ms | {} | {:.1} MiB | {:.1} ms (max {:.1}) | {:.2} ms (max {:.2}) | {:.1} ms ({:.1}), {} |",
            r.scale,
            r.empty_ns,
            r.established_ns,
            r.established_ns.saturating_sub(r.empty_ns),
            r.new_denied_ns,
            r.new_denied_ns.saturating_sub(r.empty_ns),
            r.new_allowed_ns,
            r.new_allowed_ns.saturating_sub(r.empty_ns),
            r.compile.as_secs_f64() * 1e3,
            r.node_compile.as_secs_f64() * 1e3,
            r.entries,
            r.memory_mib,
            r.policy_change.median().as_secs_f64() * 1e3,
            r.policy_change.max().as_secs_f64() * 1e3,
            r.endpoint_added.median().as_secs_f64() * 1e3,
            r.endpoint_added.max().as_secs_f64() * 1e3,
            r.churn.p99().as_secs_f64() * 1e3,
            r.churn.max().as_secs_f64() * 1e3,
            r.churn_full,
        );
    }
    if baselines.is_empty() {
        return;
    }
    println!();
    println!(
        "Beside other builds ({BASELINE_VARIABLE}), on the same maps and packets, in the same rounds:"
    );
    println!();
    println!(
        "| scale | object | established (conntrack hit) | new flow (denied) | new flow (allowed, over a closing entry) |"
    );
    println!("|---|---|---|---|---|");
    for r in &rows {
        let this = (
            "this build".to_string(),
            (r.established_ns, r.new_denied_ns, r.new_allowed_ns),
        );
        let others = baselines
            .iter()
            .map(|b| b.name.clone())
            .zip(r.baselines.iter().copied());
        for (name, (established, denied, allowed)) in std::iter::once(this).chain(others) {
            println!(
                "| {} | {name} | {established} ns (+{}) | {denied} ns (+{}) | {allowed} ns (+{}) |",
                r.scale,
                established.saturating_sub(r.empty_ns),
                denied.saturating_sub(r.empty_ns),
                allowed.saturating_sub(r.empty_ns),
            );
        }
    }
}
