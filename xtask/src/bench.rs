//! Keeps the latest benchmark results in bench/README.md, with the machine they ran on.

use std::path::Path;

use anyhow::{Context, Result};

/// The bench targets of `palisade-tests`: per packet, compile and update costs in
/// process; an etcd write to the maps of a running agent; what a metrics scrape costs.
pub const DATAPLANE: &str = "dataplane";
pub const ETCD: &str = "etcd";
pub const METRICS: &str = "metrics";

const TARGETS: &str = "\
Targets (issue 3): established at most the empty program + 60 ns, new flow at most the empty
program + 200 ns, both within 20% of themselves from 10 to 10,000 policies and endpoints;
10,000 endpoints (2,000 label sets) and 1,000 policies: full compile under 2 s, maps under
256 MiB, one policy changed under 50 ms, one endpoint added under 10 ms.";

const ETCD_SECTION: &str = "\
## etcd write -> maps updated

A real etcd on loopback holds the dataplane bench's world (1,000 endpoints, 1,000 \
policies); a real `palisade agent` follows it, with a few workloads plumbed by `palisade \
workload add` on its node. Each change rewrites one policy through palisade's store (one \
etcd transaction); the time runs from just before that write until the generation in the \
agent's pinned `PAL_CONFIG` map flips, which the agent does once the new policy is \
complete in the maps. The agent's own compile and publish times (from its \"policy \
published\" log lines) say where the time goes.";

const ETCD_TARGET: &str = "Target (issue 4): p99 under 100 ms.";

const METRICS_SECTION: &str = "\
## A metrics scrape

The agent's `/metrics` reads the kernel's counters at scrape time. A full conntrack map \
(filled from user space to its capacity; the LRU keeps what fits) is counted by the census \
a scrape runs at most once per 30 s (`BPF_MAP_LOOKUP_BATCH`, 4,096 entries per call), \
against a key-by-key walk (`BPF_MAP_GET_NEXT_KEY`, one call per entry): the census median \
of 21 runs, the walk once. A scrape of a node with many endpoints and rule counters reads every counter \
(summed over CPUs) and encodes the Prometheus text, median of 21 with the census cached, \
and once with a census.";

pub fn record(repo: &Path, table: &str, etcd_table: &str, metrics_table: &str) -> Result<()> {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let text = format!(
        "# Benchmarks\n\n\
         `cargo xtask bench` (as root) rewrites this file. Per-packet costs are the kernel's own \
         average over 1,000,000 BPF_PROG_TEST_RUN repeats; the empty program is measured in the \
         same run. The established flow is a conntrack hit; the new flow is a packet the policy \
         denies (no conntrack entry is made, so every repeat takes the whole lookup path). \
         Compile and update times are wall-clock in the release build. An update is done as \
         the agent does it: the compiler it keeps finds the change among all resources and \
         applies it in place, the writer writes the entries that changed into the inactive \
         slot, and the generation flips. \"One policy changed\" flips the action of the first \
         ingress rule of each of the first 21 policies in turn (median, and the maximum: \
         policy 0 selects every endpoint of the node, and its first rule, a `pass` from tier \
         web, concerns a fifth of all peers: a new table for each of their peer groups); \
         \"one endpoint added\" adds 21 endpoints on the node, one at a time. Map memory is the kernel's memlock accounting of every map.\n\n\
         Last run: kernel {}, {} x {}.\n\n{}\n\n{}\n\n{}\n\n{}\n\n{}\n\n{}\n\n{}\n",
        kernel.trim(),
        cpus,
        cpu,
        table.trim_end(),
        TARGETS,
        ETCD_SECTION,
        etcd_table.trim_end(),
        ETCD_TARGET,
        METRICS_SECTION,
        metrics_table.trim_end()
    );
    let dir = repo.join("bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join("README.md");
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("bench: results kept in {}", path.display());
    Ok(())
}
