//! `cargo xtask bench`, the agent's own cost: resident memory and CPU of a real `palisade
//! agent` process following a real etcd at 10,000 endpoints with 1,000 and with 10,000
//! policies, and what each map costs the kernel at the sizes the agent chooses.
//!
//! As in the etcd bench: an etcd on loopback holds the dataplane bench's world (the same
//! generator), a `palisade agent` on a private bpffs follows it, with a few workloads
//! plumbed by `palisade workload add` on its node (100 of the endpoints are on it). The
//! agent's memory is its `VmRSS` and `VmHWM` (peak) from `/proc/PID/status`; its CPU is
//! `utime + stime` from `/proc/PID/stat`: until its first publish, over one-policy changes
//! (each waited for in the pinned `PAL_CONFIG`), and idle. Map memory is the kernel's
//! `memlock` accounting of each pinned map, for the maps the agent made (sized by its flags
//! for the scale) and for maps made in this process at other sizes.
//!
//! Prints Markdown tables; `cargo xtask bench` keeps them in bench/README.md.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark that cannot run fails

#[path = "../../agent/tests/common/etcd.rs"]
mod etcd;
#[path = "../../agent/tests/common/generated.rs"]
mod generated;

use std::sync::Arc;
use std::time::{Duration, Instant};

use aya::maps::{Array, Map, MapData};
use palisade::dataplane::map_memory::{MapMemory, pinned_maps_memory, total_mib};
use palisade::dataplane::{self, MapSizes, SizedFor, map_pin_dir, pin_dir};
use palisade::model::{Resource, validate};
use palisade::store::{Datastore as Store, Op};
use palisade_common::{Config, map_names};
use palisade_tests::agent_process::{AgentHome, AgentProcess, PrivateBpffs};
use palisade_tests::palisade_cli::Datastore;
use palisade_tests::topology::{WorkloadSpec, add_workload};
use palisade_tests::{Cleanup, require_root};
use serde_json::json;

use etcd::EtcdServer;

const ENDPOINTS: usize = 10_000;
const LABEL_SETS: usize = 2_000;
/// The agent's node has this many of the endpoints; the rest are on other nodes.
const PER_NODE: usize = 100;
const NODE: &str = "bench-node";
const WORKLOADS: usize = 4;
const CHANGES: usize = 20;
const BATCH: usize = 100;
/// How long the idle agent is watched.
const IDLE: Duration = Duration::from_secs(5);
/// Longer than any start or change takes; a bound, not a requirement.
const PATIENCE: Duration = Duration::from_secs(300);

struct Cost {
    policies: usize,
    start: Duration,
    start_cpu: Duration,
    rss_started_mib: f64,
    change_cpu: Duration,
    rss_after_mib: f64,
    peak_mib: f64,
    idle_cpu_percent: f64,
    maps: Vec<MapMemory>,
}

fn main() {
    require_root();
    let costs: Vec<Cost> = [1_000, 10_000].into_iter().map(measure).collect();
    let sizings = map_sizings();

    println!(
        "| scale | agent's flags | start (to first publish) | CPU to first publish | RSS then | CPU per policy change | RSS after {CHANGES} changes | peak RSS (VmHWM) | CPU idle | map memory |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for c in &costs {
        println!(
            "| {ENDPOINTS} endpoints ({LABEL_SETS} label sets, {PER_NODE} on the node), {} policies | {} | {:.1} s | {:.1} s | {:.0} MiB | {:.0} ms | {:.0} MiB | {:.0} MiB | {:.2}% | {:.1} MiB |",
            c.policies,
            flags(c.policies).join(" "),
            c.start.as_secs_f64(),
            c.start_cpu.as_secs_f64(),
            c.rss_started_mib,
            c.change_cpu.as_secs_f64() * 1e3 / CHANGES as f64,
            c.rss_after_mib,
            c.peak_mib,
            c.idle_cpu_percent,
            total_mib(&c.maps),
        );
    }
    println!();
    print!("| map |");
    for (name, _) in &sizings {
        print!(" {name} |");
    }
    println!();
    println!("|---|{}", "---|".repeat(sizings.len()));
    for name in map_names::ALL {
        print!("| {name} |");
        for (_, maps) in &sizings {
            match maps.iter().find(|m| m.name == name) {
                Some(m) => print!(" {} ({}) |", mib(m.bytes), m.max_entries),
                None => print!(" - |"),
            }
        }
        println!();
    }
    print!("| all |");
    for (_, maps) in &sizings {
        print!(" **{:.1} MiB** |", total_mib(maps));
    }
    println!();
}

fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// The agent's flags at a scale: the maps sized for it.
fn flags(policies: usize) -> Vec<String> {
    vec![
        "--max-endpoints".into(),
        ENDPOINTS.to_string(),
        "--max-policies".into(),
        policies.to_string(),
    ]
}

/// Maps made at several sizes, in this process, on a private bpffs each.
fn map_sizings() -> Vec<(String, Vec<MapMemory>)> {
    let object = dataplane::ebpf_object().expect("run through `cargo xtask bench`");
    let scales = [
        ("sized for 100 endpoints, 100 policies", 100, 100),
        ("default (10,000 endpoints, 1,000 policies)", 10_000, 1_000),
        ("10,000 endpoints, 10,000 policies", 10_000, 10_000),
    ];
    let mut out = vec![(
        "declared by the object (before sizes were chosen)".to_string(),
        made_with(object, &MapSizes::declared()),
    )];
    for (label, endpoints, policies) in scales {
        let sizes = MapSizes::for_scale(&SizedFor {
            endpoints,
            policies,
        })
        .unwrap();
        out.push((label.to_string(), made_with(object, &sizes)));
    }
    out
}

fn made_with(object: &[u8], sizes: &MapSizes) -> Vec<MapMemory> {
    let bpffs = PrivateBpffs::mount();
    let dir = pin_dir(bpffs.path());
    let loaded = dataplane::load_sized(object, Some(&dir), sizes).unwrap();
    let maps = pinned_maps_memory(&dir).unwrap();
    drop(loaded);
    maps
}

fn measure(policies: usize) -> Cost {
    eprintln!("bench: agent at {ENDPOINTS} endpoints, {policies} policies");
    let mut cleanup = Cleanup::new();
    let server = EtcdServer::start();
    let url = server.url();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store: Arc<dyn Store> = runtime.block_on(palisade::store::open(&url)).unwrap();
    let world = generated::generated_cluster(ENDPOINTS, LABEL_SETS, policies, NODE, PER_NODE);
    for batch in world.chunks(BATCH) {
        let ops = batch.iter().cloned().map(Op::Apply).collect();
        runtime.block_on(store.commit(ops)).unwrap();
    }
    let cli = Datastore::at(&url);
    let mut interfaces = Vec::new();
    for k in 0..WORKLOADS {
        let ip = format!("10.238.0.{}", k + 1);
        let labels = format!("app=app{k},tier={}", generated::TIERS[k % 5]);
        let spec = WorkloadSpec {
            prefix: "ac",
            ips: &[&ip],
            labels: &labels,
            profiles: &["env-prod"],
        };
        interfaces.push(add_workload(&mut cleanup, &cli, NODE, &spec).interface);
    }

    let home = AgentHome::new(&url, NODE);
    let revision = runtime.block_on(store.list(None)).unwrap().revision;
    let started = Instant::now();
    let flags = flags(policies);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut agent = home.start(&flags);
    let pid = agent.pid();
    wait_for(
        &mut agent,
        &["policy published", &format!("revision={revision}")],
    );
    for interface in &interfaces {
        let interface = format!("interface={interface}");
        wait_for(&mut agent, &["enforcing on workload interface", &interface]);
    }
    let start = started.elapsed();
    let start_cpu = cpu(pid);
    let rss_started_mib = status_mib(pid, "VmRSS");

    let config = pinned_config(&home);
    // Every fifth policy selects endpoints of the node (tier web, as all of them are), so
    // that each change is one the maps must hold and the agent flips for.
    let mut changed: Vec<Resource> = world
        .iter()
        .filter(|r| matches!(r, Resource::Policy(_)))
        .step_by(5)
        .take(CHANGES)
        .cloned()
        .collect();
    let before_changes = cpu(pid);
    for (i, policy) in changed.iter_mut().enumerate() {
        *policy = with_new_port(policy, 20_000 + i as u16);
        let generation = generation(&config);
        runtime
            .block_on(store.commit(vec![Op::Apply(policy.clone())]))
            .unwrap();
        let since = Instant::now();
        while self::generation(&config) == generation {
            assert!(since.elapsed() < PATIENCE, "change {i} was not published");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let change_cpu = cpu(pid) - before_changes;
    let rss_after_mib = status_mib(pid, "VmRSS");

    let before_idle = cpu(pid);
    std::thread::sleep(IDLE);
    let idle_cpu_percent = (cpu(pid) - before_idle).as_secs_f64() * 100.0 / IDLE.as_secs_f64();
    let peak_mib = status_mib(pid, "VmHWM");
    let maps = pinned_maps_memory(&pin_dir(home.bpffs.path())).unwrap();
    eprintln!(
        "bench:   start {start:?} (CPU {start_cpu:?}), RSS {rss_started_mib:.0} MiB, after changes {rss_after_mib:.0} MiB, peak {peak_mib:.0} MiB, maps {:.1} MiB",
        total_mib(&maps)
    );
    assert!(agent.terminate().success());
    Cost {
        policies,
        start,
        start_cpu,
        rss_started_mib,
        change_cpu,
        rss_after_mib,
        peak_mib,
        idle_cpu_percent,
        maps,
    }
}

/// Waits for a line with every needle, for longer than [`AgentProcess::wait_for`] does:
/// the largest world takes a while to compile on a loaded machine.
fn wait_for(agent: &mut AgentProcess, needles: &[&str]) {
    let since = Instant::now();
    while agent.count(needles) == 0 {
        assert!(
            since.elapsed() < PATIENCE,
            "the agent never said {needles:?}:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// User plus system CPU time of process `pid`.
fn cpu(pid: libc::pid_t) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command (which may hold spaces) start after the last ')'.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the command.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_secs_f64(ticks as f64 / hz as f64)
}

/// A `kB` line of `/proc/PID/status`, in MiB.
fn status_mib(pid: libc::pid_t, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb / 1024.0
}

/// `policy` with its allowed TCP ingress ports (the generator's first TCP rule) moved to
/// `port` and 9000-9100 (as in the etcd bench).
fn with_new_port(policy: &Resource, port: u16) -> Resource {
    let mut value = serde_json::to_value(policy).unwrap();
    let rules = value["spec"]["ingress"].as_array_mut().unwrap();
    let rule = rules
        .iter_mut()
        .find(|r| r["protocol"] == "tcp" && r["action"] == "allow")
        .expect("the generator's allowed TCP rule");
    rule["destination"]["ports"] = json!([port, "9000:9100"]);
    let mut changed: Resource = serde_json::from_value(value).unwrap();
    validate::normalize(&mut changed);
    changed
}

fn pinned_config(home: &AgentHome) -> Array<MapData, Config> {
    let path = map_pin_dir(&pin_dir(home.bpffs.path())).join(map_names::CONFIG);
    let data = MapData::from_pin(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Array::try_from(Map::Array(data)).unwrap()
}

fn generation(config: &Array<MapData, Config>) -> u32 {
    config.get(&0, 0).unwrap().generation
}
