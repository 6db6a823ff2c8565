//! Keeps the latest benchmark results in bench/README.md, with the machine they ran on.
//!
//! Each part of `cargo xtask bench` is one bench target of `palisade-tests` and one section
//! of the file, between `<!-- bench:NAME -->` markers: a run of some parts rewrites their
//! sections and keeps the others as the last run of theirs left them.

use std::path::Path;

use anyhow::{Context, Result, bail};

/// One part of the benchmarks: a bench target of `palisade-tests` and its section.
pub struct Part {
    /// The bench target, and the section's marker.
    pub name: &'static str,
    /// What the part measures and how (Markdown, from its heading on).
    intro: &'static str,
    /// What follows the tables (a figure the part draws).
    figure: Option<&'static str>,
    /// The goals its numbers answer to.
    goal: Option<&'static str>,
}

/// Every part, in the order they run and appear.
pub const PARTS: &[Part] = &[
    Part {
        name: "dataplane",
        intro: DATAPLANE_SECTION,
        figure: None,
        goal: Some(TARGETS),
    },
    Part {
        name: "etcd",
        intro: ETCD_SECTION,
        figure: None,
        goal: Some(ETCD_TARGET),
    },
    Part {
        name: "agent",
        intro: AGENT_SECTION,
        figure: None,
        goal: Some(AGENT_TARGET),
    },
    Part {
        name: "peers",
        intro: PEERS_SECTION,
        figure: Some("![CRR and RR against the number of policies, every dataplane](peers.svg)"),
        goal: Some(PEERS_TARGETS),
    },
    Part {
        name: "metrics",
        intro: METRICS_SECTION,
        figure: None,
        goal: None,
    },
];

/// The parts named in `names` (every part when empty); an unknown name is an error that
/// lists the known ones.
pub fn select(names: &[String]) -> Result<Vec<&'static Part>> {
    if names.is_empty() {
        return Ok(PARTS.iter().collect());
    }
    names
        .iter()
        .map(|name| {
            PARTS.iter().find(|p| p.name == name).with_context(|| {
                format!(
                    "no benchmark part `{name}`; the parts are {}",
                    PARTS.iter().map(|p| p.name).collect::<Vec<_>>().join(", ")
                )
            })
        })
        .collect()
}

const DATAPLANE_SECTION: &str = "\
## Per packet, compile and update

\
         `cargo xtask bench` (as root) rewrites this file. Per-packet costs are the kernel's own \
         average over 1,000,000 BPF_PROG_TEST_RUN repeats, the median of 5 rounds in which the \
         empty program and both packets take turns. The established flow is a conntrack hit; \
         the new flow is a packet the policy denies (no conntrack entry is made, so every repeat \
         takes the whole lookup path, and, as by the agent's default, every drop is reported \
         as an event). The allowed new flow is what TCP_CRR with port reuse makes of most \
         connections: a SYN of a 4-tuple whose closing entry is still in the conntrack table \
         (the packet also carries FIN, so that it leaves the entry closing and every repeat \
         starts the flow again): policy allows it, the entry is reopened and, as by the \
         agent's default, the flow is reported as an event. The bench reads no events, so \
         once the ring buffer is full the reports of both new-flow rows are counted lost \
         instead. The endpoint's counters and conntrack budget entries exist, as the agent \
         makes them when it attaches. `PALISADE_DATAPLANE_BASELINE=PATH[,PATH..]` measures \
         other builds' eBPF objects beside this one in the same rounds, on the same maps and \
         packets (a table of its own, below the first; so only builds of the same map ABI \
         version: an older ABI's object fails to load on these maps); `PALISADE_DATAPLANE_SCALES` (e.g. \
         `10000/10000`, endpoints/policies) measures only the scales it names, to shorten a \
         run while developing. \
         Compile and update times are wall-clock in the release build. An update is done as \
         the agent does it: the compiler it keeps finds the change among all resources and \
         applies it in place, the writer writes the entries that changed into the inactive \
         slot, and the generation flips. \"One policy changed\" flips the action of the first \
         ingress rule of each of the first 21 policies in turn (median, and the maximum: \
         policies 0 and 15 select every endpoint of the node; policy 0's first rule, a `pass` \
         from tier web, concerns a fifth of all peers, a new table for each of their peer \
         groups; policy 15's, an `allow` from one app, concerns few peers, but each of their \
         classes gets a new table of the whole program); \
         \"one endpoint added\" adds 21 endpoints on the node, one at a time; then 300 \
         policy changes in a row (a policy picked at random, a random ingress rule's action \
         flipped) show the worst case of a long churn: the 99th percentile, the maximum, and \
         how many of the updates compiled in full. Map memory is the kernel's memlock accounting of every map at the sizes the object declares (the agent's section below has them at the sizes the agent chooses).";

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

const METRICS_SECTION: &str = "\
## A metrics scrape

The agent's `/metrics` reads the kernel's counters at scrape time. A full conntrack map \
(filled from user space to its capacity; the LRU keeps what fits) is counted by the census \
a scrape runs at most once per 30 s (`BPF_MAP_LOOKUP_BATCH`, 4,096 entries per call), \
against a key-by-key walk (`BPF_MAP_GET_NEXT_KEY`, one call per entry): the census median \
of 21 runs, the walk once. A scrape of a node with many endpoints and rule counters reads every counter \
(summed over CPUs) and encodes the Prometheus text, median of 21 with the census cached, \
and once with a census.";

const PEERS_SECTION: &str = "\
## Beside the peers: no policy, Felix-style iptables, nftables\n\n\
`cargo xtask bench peers` runs real traffic through five dataplanes that enforce the same \
v1 world, each on a node of its own: a router namespace with two workloads plumbed by \
`palisade workload add` and an idle veth for every other endpoint of the node (100 at \
1,000 and 10,000 policies), so that dispatch works at a node's scale. (a) enforces \
nothing (no programs, no netfilter rules, kernel conntrack unused); (b) is a real \
`palisade agent`; (c) is Felix 2.6.8's iptables + ipset rendering of the resources \
(`peers/src/felix`: static raw, mangle, filter and nat chains, dispatch chains, endpoint, \
policy and profile chains, marks, conntrack rules, hash comments) loaded with \
`iptables-legacy-restore`, (c') the same through `iptables-nft-restore`; (d) is an \
nftables ruleset as a careful nft user would write it (`peers/src/nft`: named sets, \
verdict-map dispatch, one nft rule per v1 rule). Separate nodes, because a namespace \
keeps its netfilter tables (and, with the nat table, conntrack) once they were used. \
The world is the dataplane bench's generated cluster; the server is selected by about a \
tenth of the policies, none of which decide its flows, and the policy that allows the \
client comes last. The rows `1000-in-front` and `10000-in-front` have the shape of the \
issue's pilot: the same 1,000 or 10,000 policies, each rewritten to select the server \
(their rules unchanged, so still none decides its flows), all in front of the allow; they \
are in the tables, not in the plot. \
Before measuring, each dataplane must connect the allowed ports and \
refuse the denied ones.\n\n\
Method: netperf's semantics in Rust (`tests/src/transactions.rs`): TCP_CRR (connect, \
one byte each way, shutdown, wait for the close), TCP_RR (one byte each way on one \
connection) and a UDP rate (one-byte datagrams on a flow whose first datagram was \
answered; the rate is what the server received). Client and server run pinned to CPU 0 \
(a veth delivers on the sending CPU, so the whole path runs there and 1/rate is its CPU \
time), the harness and the agent on CPU 1. palisade's agent runs with its defaults, so, \
after each flow's first packet, its programs deliver between the two workloads themselves \
(the destination's ingress policy in `palisade_deliver`, then `bpf_redirect_peer` into its \
namespace; `--no-local-redirect` turns that off), where the other dataplanes go through \
the host's IP forwarding and the destination veth's transmit. The client namespace reuses TIME_WAIT ports \
(`tcp_tw_reuse=1`, ports 1024-65535); the netfilter nodes keep TIME_WAIT conntrack \
entries 10 s and their conntrack table is flushed before each run. In each round every \
dataplane runs every load once, in a random order; ratios are to (a) in the same round \
(median and min..max of the rounds), which cancels slow drift. The noise table gives \
each rate's spread over the rounds and the largest steal time seen; numbers taken while \
other jobs ran on the machine are marked so below. Only IPv4 is loaded and measured. \
`PALISADE_PEERS_ROUNDS`, `PALISADE_PEERS_SECONDS` and `PALISADE_PEERS_SCALES` (e.g. \
`10,1000,1000-in-front`) shorten a run while developing; `PALISADE_PEERS_VARIANTS` (e.g. `none,palisade`) leaves dataplanes \
out, and `PALISADE_PEERS_BASELINE=PATH` adds (b0), another build's `palisade` binary, to \
every round, so that a change to the programs is measured paired against the build it \
changes; `PALISADE_PEERS_ONLY=updates` times only the policy changes (no traffic, no \
profiles, no plot), `PALISADE_PEERS_CHANGES` sets how many (10) and `PALISADE_PEERS_IDLE` \
leaves the dataplanes idle that many seconds before them. palisade's conntrack table is sized for the load (`--map-size PAL_CT=262144`, the \
1,000- and 10,000-policy worlds' own size, so each workload's budget is 65,536 flows): \
every CRR connection leaves a closing entry for 10 s keyed by the client's port, and the \
client's ports come round again after ~32,000 connections (a port that comes back \
reopens its entry), so a workload holds ~30,000 entries, over the 10-policy world's own \
budget (16,384), beyond which new connections are dropped. palisade's programs are timed by the kernel's run-time statistics \
(`BPF_ENABLE_STATS`, on only for those runs), each load once per round. The plot (bench/peers.svg) shows CRR and RR against the number of \
policies.";

const PEERS_TARGETS: &str = "\
Targets (issue 14): palisade at least 0.95x no policy in CRR, RR and UDP at every scale; \
at least 3x Felix-style iptables in CRR at 1,000 policies and 10x at 10,000.";

const PREAMBLE: &str = "\
# Benchmarks

`cargo xtask bench [PART...]` (as root, release build) rewrites the sections of the parts it \
runs and keeps the others; each section says when and on what machine it was last run.";

fn begin_marker(name: &str) -> String {
    format!("<!-- bench:{name} -->")
}

fn end_marker(name: &str) -> String {
    format!("<!-- /bench:{name} -->")
}

/// The kernel and CPUs, for the sections' "last run" line.
fn machine() -> String {
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
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().next().unwrap_or("?").to_string();
    format!(
        "kernel {}, {cpus} x {cpu}, load average {load} when it ended",
        kernel.trim()
    )
}

/// The section of `part` with its results `table`.
fn section(part: &Part, table: &str, when: &str) -> String {
    let mut text = format!(
        "{}\n{}\n\nLast run: {when}.\n\n{}\n",
        begin_marker(part.name),
        part.intro.trim_end(),
        table.trim_end()
    );
    if let Some(figure) = part.figure {
        text.push_str(&format!("\n{figure}\n"));
    }
    if let Some(goal) = part.goal {
        text.push_str(&format!("\n{}\n", goal.trim_end()));
    }
    text.push_str(&end_marker(part.name));
    text.push('\n');
    text
}

/// The section of `part` in the file's `text`, markers included, if it has one.
fn existing_section<'t>(text: &'t str, part: &Part) -> Option<&'t str> {
    let begin = text.find(&begin_marker(part.name))?;
    let end_marker = end_marker(part.name);
    let end = text[begin..].find(&end_marker)? + begin + end_marker.len();
    let end = if text[end..].starts_with('\n') {
        end + 1
    } else {
        end
    };
    Some(&text[begin..end])
}

/// Writes the results of the parts that ran (`results`: each part with its table) into
/// bench/README.md, keeping the sections of the others.
pub fn record(repo: &Path, results: &[(&Part, String)]) -> Result<()> {
    let dir = repo.join("bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join("README.md");
    let old = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => bail!("cannot read {}: {e}", path.display()),
    };
    let when = format!(
        "{}, {}",
        command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        machine()
    );
    let mut text = format!("{PREAMBLE}\n\n");
    for part in PARTS {
        match results.iter().find(|(p, _)| p.name == part.name) {
            Some((part, table)) => text.push_str(&section(part, table, &when)),
            None => match existing_section(&old, part) {
                Some(kept) => text.push_str(kept),
                None => continue,
            },
        }
        text.push('\n');
    }
    std::fs::write(&path, text.trim_end().to_string() + "\n")
        .with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("bench: results kept in {}", path.display());
    Ok(())
}

fn command_output(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_of_some_parts_keeps_the_others() {
        let etcd = &PARTS[1];
        let metrics = &PARTS[3];
        let old = format!(
            "{PREAMBLE}\n\n{}\n{}",
            section(etcd, "| old etcd |", "then"),
            section(metrics, "| old metrics |", "then")
        );
        assert_eq!(
            existing_section(&old, etcd),
            Some(section(etcd, "| old etcd |", "then").as_str())
        );
        assert!(existing_section(&old, &PARTS[0]).is_none());
        assert!(select(&["nope".to_string()]).is_err());
        assert_eq!(select(&[]).map(|p| p.len()).ok(), Some(PARTS.len()));
    }
}
