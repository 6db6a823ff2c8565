//! One policy changed at scale, the compiler alone: the dataplane bench's world and its
//! changes (the first ingress rule of each of the first policies flips its action), timed
//! per change without the map writes, to profile the compiler in isolation:
//!
//! ```sh
//! cargo build --release -p palisade --example policy_change
//! perf record -g target/release/examples/policy_change 10000 2000 10000
//! ```
//!
//! Arguments: endpoints, label sets, policies (default 10000 2000 10000), how many rounds
//! of the changes (default 1; each round's changed rule is new to the compiler, so no round
//! finds the last one's tables), and optionally the one policy to change (e.g. `pol015`).
//!
//! `PALISADE_CHANGE=port` makes the peers bench's change instead (`cargo xtask bench peers`,
//! "updates side by side"): each of the first ten policies that select the node's first
//! endpoint gets a new port in its allowed TCP rule, so every peer class of that endpoint's
//! program gets new tables. `PALISADE_CHANGE=etcd` makes the etcd bench's changes
//! (`cargo xtask bench etcd`): 200 new ports, in every seventh policy of all of them.
//! `PALISADE_CHANGE=churn` makes the dataplane bench's churn (300 random rules of random
//! policies flip their action) and names the changes that take over 10 ms.
//!
//! `PALISADE_COLD=1` writes over a buffer far larger than the CPU's caches before each
//! change (untimed), so that each compile finds its memory as after the agent sat idle
//! while the node did other work. `PALISADE_IDLE=SECONDS` sleeps that long before each
//! change (untimed), so that each compile finds its memory as the machine left it after
//! that long untouched (where a hypervisor reclaims a VM's idle memory, that costs more).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a profiling run that cannot run fails

#[path = "../tests/common/generated.rs"]
mod generated;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade::compile::{Capacities, Compiler, Locals};
use palisade::model::labels::effective_labels_by_name;
use palisade::model::{Action, Port, Profile, Protocol, Resource, ResourceKey};
use palisade::selector::Selector;

/// The dataplane bench's: 100 endpoints on the node, 21 changes.
const PER_NODE: usize = 100;
const CHANGES: usize = 21;
/// What `PALISADE_COLD` writes over before each change.
const COLD_BYTES: usize = 512 << 20;
/// The peers bench's: 10 changes.
const PEERS_CHANGES: usize = 10;
/// The etcd bench's: 200 changes.
const ETCD_CHANGES: usize = 200;
/// The dataplane bench's churn: 300 changes.
const CHURN: usize = 300;

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let only = (args.len() > 4).then(|| args.remove(4));
    let args: Vec<usize> = args
        .iter()
        .map(|a| a.parse().expect("arguments are numbers"))
        .collect();
    let arg = |i: usize, default: usize| args.get(i).copied().unwrap_or(default);
    let (endpoints, label_sets, policies) = (arg(0, 10_000), arg(1, 2_000), arg(2, 10_000));
    let rounds = arg(3, 1);
    let resources = generated::generated_cluster(endpoints, label_sets, policies, "n", PER_NODE);
    let mut current: BTreeMap<ResourceKey, Arc<Resource>> = resources
        .into_iter()
        .map(|r| (r.key(), Arc::new(r)))
        .collect();
    let mut compiler = Compiler::new(Locals::Node("n"), Capacities::UNLIMITED);
    let started = Instant::now();
    compiler.update(&current).unwrap();
    eprintln!(
        "node compile {:?}: {:?}",
        started.elapsed(),
        compiler.image().unwrap().stats()
    );
    // What every update pays before any change: finding what changed among all resources.
    let started = Instant::now();
    compiler.update(&current).unwrap();
    eprintln!("an update with nothing changed: {:?}", started.elapsed());
    // What the agent's datastore follower pays to hand each new view on.
    let started = Instant::now();
    let copy = current.clone();
    eprintln!("a copy of the resource map: {:?}", started.elapsed());
    drop(copy);
    let mode = std::env::var("PALISADE_CHANGE").unwrap_or_default();
    if mode == "churn" {
        churn(&mut compiler, &mut current);
        return;
    }
    let etcd = mode == "etcd";
    let new_port = mode == "port" || etcd;
    let selects_first_local = first_local_labels(&current);
    let changed: Vec<ResourceKey> = current
        .iter()
        .filter(|(_, r)| match &***r {
            Resource::Policy(_) if etcd => true,
            Resource::Policy(p) if new_port => Selector::parse(&p.spec.selector)
                .unwrap()
                .matches(&selects_first_local),
            Resource::Policy(_) => true,
            _ => false,
        })
        .map(|(k, _)| k)
        .filter(|k| {
            only.as_ref()
                .is_none_or(|name| matches!(k, ResourceKey::Policy { name: n } if n == name))
        })
        .take(if etcd {
            usize::MAX
        } else if new_port {
            PEERS_CHANGES
        } else {
            CHANGES
        })
        .cloned()
        .collect();
    // The etcd bench's: 200 changes spread over the policies (every seventh, wrapping).
    let changed: Vec<ResourceKey> = if etcd {
        (0..ETCD_CHANGES)
            .filter_map(|c| changed.get((c * 7) % changed.len().max(1)).cloned())
            .collect()
    } else {
        changed
    };
    let mut times: Vec<Duration> = Vec::new();
    let mut cpu_times: Vec<Duration> = Vec::new();
    let mut cold = std::env::var_os("PALISADE_COLD").map(|_| vec![0u8; COLD_BYTES]);
    let idle = std::env::var("PALISADE_IDLE")
        .ok()
        .map(|s| Duration::from_secs(s.parse().expect("PALISADE_IDLE: seconds")));
    for round in 0..rounds {
        for (i, policy) in changed.iter().enumerate() {
            let port = 20_000 + u16::try_from(round * changed.len() + i).unwrap();
            if new_port
                && let Some(Resource::Policy(p)) = current.get_mut(policy).map(Arc::make_mut)
            {
                // As the peers bench's `with_new_port`.
                let rule = p
                    .spec
                    .ingress
                    .iter_mut()
                    .find(|r| {
                        r.action == Action::Allow
                            && r.protocol == Some(Protocol::Name("tcp".into()))
                    })
                    .expect("the generator's allowed TCP rule");
                rule.destination.ports = vec![
                    Port::single(port),
                    Port {
                        min: 9000,
                        max: 9100,
                    },
                ];
            } else if let Some(Resource::Policy(p)) = current.get_mut(policy).map(Arc::make_mut)
                && let Some(rule) = p.spec.ingress.first_mut()
            {
                rule.action = match rule.action {
                    Action::Allow => Action::Deny,
                    _ => Action::Allow,
                };
            }
            if let Some(buffer) = cold.as_mut() {
                evict_caches(buffer);
            }
            if let Some(idle) = idle {
                std::thread::sleep(idle);
            }
            let (started, cpu_started) = (Instant::now(), thread_cpu());
            let changes = compiler.update(&current).unwrap();
            let (took, cpu) = (started.elapsed(), thread_cpu() - cpu_started);
            eprintln!("{policy}: {took:?}, CPU {cpu:?} ({})", describe(&changes));
            times.push(took);
            cpu_times.push(cpu);
        }
    }
    times.sort();
    cpu_times.sort();
    eprintln!(
        "median {:?}, max {:?} over {} changes; this thread's CPU time: median {:?}, max {:?}",
        times[times.len() / 2],
        times.last().unwrap(),
        times.len(),
        cpu_times[cpu_times.len() / 2],
        cpu_times.last().unwrap(),
    );
}

/// The dataplane bench's churn: policies picked at random (the same fixed sequence) get a
/// random ingress rule's action flipped, one change at a time; the slow ones are named.
fn churn(compiler: &mut Compiler, current: &mut BTreeMap<ResourceKey, Arc<Resource>>) {
    let mut picks = generated::Churn::over(current);
    let mut times: Vec<Duration> = Vec::new();
    for _ in 0..CHURN {
        let (policy, flipped) = picks.flip_next(current);
        let cpu_started = thread_cpu();
        let changes = compiler.update(current).unwrap();
        let cpu = thread_cpu() - cpu_started;
        if cpu > Duration::from_millis(10) {
            eprintln!(
                "{policy} ingress rule {flipped:?}: CPU {cpu:?} ({})",
                describe(&changes)
            );
        }
        times.push(cpu);
    }
    times.sort();
    let p99 = times[(times.len() * 99).div_ceil(100) - 1];
    eprintln!(
        "churn of {CHURN}: this thread's CPU time: median {:?}, p99 {p99:?}, max {:?}",
        times[times.len() / 2],
        times.last().unwrap(),
    );
}

/// The effective labels of node `n`'s first endpoint (the peers bench's server has them).
fn first_local_labels(
    resources: &BTreeMap<ResourceKey, Arc<Resource>>,
) -> BTreeMap<String, String> {
    let profiles: BTreeMap<String, Profile> = resources
        .values()
        .filter_map(|r| match &**r {
            Resource::Profile(p) => Some((p.metadata.name.clone(), p.clone())),
            _ => None,
        })
        .collect();
    resources
        .values()
        .find_map(|r| match &**r {
            Resource::WorkloadEndpoint(w) if w.metadata.node == "n" => Some(
                effective_labels_by_name(&w.metadata.labels, &w.spec.profiles, &profiles),
            ),
            _ => None,
        })
        .expect("an endpoint on node n")
}

/// This thread's CPU time: on a machine others load, closer to what the change costs
/// than the time on the clock.
fn thread_cpu() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec to write to.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    assert_eq!(rc, 0, "clock_gettime");
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn describe(changes: &palisade::compile::Changes) -> String {
    match changes {
        palisade::compile::Changes::All => "full compile".into(),
        palisade::compile::Changes::Keys(keys) => format!(
            "in place: {} peer entries, {} group entries, {} endpoints touched",
            keys.peers.len(),
            keys.groups.len(),
            keys.endpoints.len()
        ),
    }
}

/// Writes over every cache line of `buffer`, which leaves the CPU's caches (and TLB) full of
/// it and empty of the compiler's memory.
fn evict_caches(buffer: &mut [u8]) {
    for line in buffer.chunks_mut(64) {
        line[0] = line[0].wrapping_add(1);
    }
    std::hint::black_box(&buffer);
}
