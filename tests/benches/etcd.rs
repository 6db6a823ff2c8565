//! `cargo xtask bench`, the etcd row: how long from one write to etcd until the agent's
//! maps hold it, at 1,000 endpoints and 1,000 policies.
//!
//! Everything is real: an etcd on loopback, the world of the dataplane bench (the same
//! generator) written to it through palisade's store, a `palisade agent` process on a
//! private bpffs, a few workloads plumbed by `palisade workload add` so the agent attaches
//! and compiles its node for real. Then, many times: one policy is changed with the store
//! API, and the clock runs from just before that write until the generation in the pinned
//! `PAL_CONFIG` map flips, which the agent does only once the new policy is complete in the
//! maps. Nothing in the agent is instrumented for this; its own "policy published" lines
//! say where the time went (compile, then write and flip).
//!
//! Prints a Markdown table; `cargo xtask bench` keeps it in bench/README.md.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark that cannot run fails

#[path = "../../agent/tests/common/etcd.rs"]
mod etcd;
#[path = "../../agent/tests/common/generated.rs"]
mod generated;

use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade::model::{Resource, validate};
use palisade::store::{Datastore as Store, Op};
use palisade_tests::agent_process::{AgentHome, published_times};
use palisade_tests::palisade_cli::Datastore;
use palisade_tests::topology::{WorkloadSpec, add_workload};
use palisade_tests::{Cleanup, require_root};
use serde_json::json;

use etcd::EtcdServer;

const ENDPOINTS: usize = 1_000;
const LABEL_SETS: usize = 200;
const POLICIES: usize = 1_000;
/// The agent's node has this many of the endpoints (as in the dataplane bench); the rest
/// are spread over other nodes, 100 each.
const PER_NODE: usize = 100;
const NODE: &str = "bench-node";
/// Of this node's endpoints, how many are real workloads the agent attaches to.
const WORKLOADS: usize = 4;
/// How many single-policy changes are timed.
const CHANGES: usize = 200;
/// Resources per commit while writing the world (etcd limits a request's size).
const BATCH: usize = 100;
/// A change the agent has not published by then is a failure, not a slow sample.
const PATIENCE: Duration = Duration::from_secs(30);

fn main() {
    require_root();
    let mut cleanup = Cleanup::new();
    let server = EtcdServer::start();
    let url = server.url();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store: Arc<dyn Store> = runtime.block_on(palisade::store::open(&url)).unwrap();

    let world = world();
    let started = Instant::now();
    for batch in world.chunks(BATCH) {
        let ops = batch.iter().cloned().map(Op::Apply).collect();
        runtime.block_on(store.commit(ops)).unwrap();
    }
    eprintln!(
        "bench: etcd: {} resources written in {:?}",
        world.len(),
        started.elapsed()
    );
    let cli = Datastore::at(&url);
    let mut interfaces = Vec::new();
    for k in 0..WORKLOADS {
        let ip = format!("10.237.0.{}", k + 1);
        let labels = format!("app=app{k},tier={}", generated::TIERS[k % 5]);
        let spec = WorkloadSpec {
            prefix: "eb",
            ips: &[&ip],
            labels: &labels,
            profiles: &["env-prod"],
        };
        interfaces.push(add_workload(&mut cleanup, &cli, NODE, &spec).interface);
    }

    let home = AgentHome::new(&url, NODE);
    let mut agent = home.start(&[]);
    let revision = runtime.block_on(store.list(None)).unwrap().revision;
    let names: Vec<&str> = interfaces.iter().map(String::as_str).collect();
    agent.wait_until_enforcing(&names, revision);
    let config = home.pinned_config();

    let mut policies: Vec<Resource> = world
        .iter()
        .filter(|r| matches!(r, Resource::Policy(_)))
        .cloned()
        .collect();
    let mut samples = Vec::with_capacity(CHANGES);
    let mut revisions = Vec::with_capacity(CHANGES);
    for change in 0..CHANGES {
        // Spread over the policies; each change gives a rule a port no rule had before,
        // so the compiled tables differ from what is in force and the maps must change.
        let index = (change * 7) % policies.len();
        policies[index] = with_new_port(&policies[index], 20_000 + change as u16);
        let before = config.generation();
        let started = Instant::now();
        let outcome = runtime
            .block_on(store.commit(vec![Op::Apply(policies[index].clone())]))
            .unwrap();
        while config.generation() == before {
            assert!(
                started.elapsed() < PATIENCE,
                "change {change} (revision {}) not in the maps after {PATIENCE:?}; the agent said:\n{}",
                outcome.revision,
                agent.log()
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        samples.push(started.elapsed());
        revisions.push(outcome.revision);
    }

    // The agent logs a publish just after its flip: wait for the last line.
    let last = revisions.last().copied().unwrap_or(revision);
    agent.wait_for_ever_said(&["policy published", &format!("revision={last}")]);
    let published = published_times(&agent.log());
    let mut compile_ms = Vec::new();
    let mut publish_ms = Vec::new();
    for revision in &revisions {
        let fields = published.get(revision).unwrap_or_else(|| {
            panic!("the agent said nothing about publishing revision {revision}")
        });
        compile_ms.push(fields.compile);
        publish_ms.push(fields.flip);
    }
    // Which changes made the tail: the agent's own lines for the slowest (how they
    // compiled, what they wrote).
    let log = agent.log();
    let slowest = publish_ms.iter().copied().fold(0.0, f64::max);
    let full = log
        .lines()
        .filter(|l| l.contains("policy published") && l.contains("compiled=full"))
        .count();
    eprintln!("bench: etcd: {full} publishes compiled in full (the first one included)");
    for line in log.lines().filter(|l| l.contains("policy published")) {
        let flip = line
            .split_whitespace()
            .find_map(|f| f.strip_prefix("flip_ms="))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        if flip * 2.0 >= slowest.max(1.0) && flip >= 10.0 {
            eprintln!("bench: etcd: slow publish: {line}");
        }
    }
    assert!(agent.terminate().success());

    samples.sort();
    compile_ms.sort_by(f64::total_cmp);
    publish_ms.sort_by(f64::total_cmp);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    eprintln!(
        "bench: etcd write -> maps updated over {CHANGES} changes: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(percentile(&samples, 50)),
        ms(percentile(&samples, 99)),
        ms(*samples.last().unwrap()),
    );
    println!(
        "| scale | changes | etcd write -> maps updated p50 | p99 | max | agent's compile p50 / p99 | agent's compile + write + flip p50 / p99 |"
    );
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {ENDPOINTS} endpoints ({LABEL_SETS} label sets; {PER_NODE} of them and {WORKLOADS} real workloads on the agent's node), {POLICIES} policies | {CHANGES} | {:.1} ms | {:.1} ms | {:.1} ms | {} / {} ms | {} / {} ms |",
        ms(percentile(&samples, 50)),
        ms(percentile(&samples, 99)),
        ms(*samples.last().unwrap()),
        percentile(&compile_ms, 50),
        percentile(&compile_ms, 99),
        percentile(&publish_ms, 50),
        percentile(&publish_ms, 99),
    );
}

/// The dataplane bench's world: the first [`PER_NODE`] endpoints on the agent's node, the
/// rest on other nodes.
fn world() -> Vec<Resource> {
    generated::generated_cluster(ENDPOINTS, LABEL_SETS, POLICIES, NODE, PER_NODE)
}

/// `policy` with its allowed TCP ingress ports (the generator's first TCP rule) moved to
/// `port` and 9000-9100.
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

/// The `p`th percentile of sorted `values` (nearest rank).
fn percentile<T: Copy>(values: &[T], p: usize) -> T {
    let rank = (values.len() * p).div_ceil(100).max(1);
    values[rank - 1]
}
