//! Keeps the latest benchmark results in bench/README.md, with the machine they ran on.

use std::path::Path;

use anyhow::{Context, Result};

/// The bench targets of `palisade-tests`: per packet, compile and update costs in
/// process; and an etcd write to the maps of a running agent.
pub const DATAPLANE: &str = "dataplane";
pub const ETCD: &str = "etcd";
/// The agent's own memory and CPU, and what each map costs.
pub const AGENT: &str = "agent";

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

const AGENT_SECTION: &str = "\
## The agent's own cost

A real etcd on loopback holds 10,000 endpoints (2,000 label sets; 100 of them and 4 real \
workloads on the agent's node) and 1,000 or 10,000 policies; a real `palisade agent` \
follows it with its maps sized by `--max-endpoints` and `--max-policies` for the scale. \
RSS is the agent's `VmRSS` (and `VmHWM`, the peak) from `/proc/PID/status`; CPU is its \
`utime + stime`: until it first published the whole world, per one-policy change (20 \
changes, each waited for in the pinned `PAL_CONFIG`), and idle over 5 s. The second table \
is the kernel's `memlock` accounting of every map (and its `max_entries`) for maps made at \
the sizes the object declares, and at the sizes the agent chooses for three scales.";

const AGENT_TARGET: &str = "Targets (issue 14): RSS at 10,000 endpoints and 1,000 policies at \
most 256 MiB; maps at most 32 MiB when sized for 100 endpoints.";

pub fn record(repo: &Path, table: &str, etcd_table: &str, agent_table: &str) -> Result<()> {
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
         policies 0 and 15 select every endpoint of the node; policy 0's first rule, a `pass` \
         from tier web, concerns a fifth of all peers, a new table for each of their peer \
         groups; policy 15's, an `allow` from one app, concerns few peers, but each of their \
         classes gets a new table of the whole program); \
         \"one endpoint added\" adds 21 endpoints on the node, one at a time. Map memory is the kernel's memlock accounting of every map at the sizes the object declares (the agent's section below has them at the sizes the agent chooses).\n\n\
         Last run: kernel {}, {} x {}.\n\n{}\n\n{}\n\n{}\n\n{}\n\n{}\n\n{}\n\n{}\n\n{}\n",
        kernel.trim(),
        cpus,
        cpu,
        table.trim_end(),
        TARGETS,
        ETCD_SECTION,
        etcd_table.trim_end(),
        ETCD_TARGET,
        AGENT_SECTION,
        agent_table.trim_end(),
        AGENT_TARGET
    );
    let dir = repo.join("bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join("README.md");
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("bench: results kept in {}", path.display());
    Ok(())
}
