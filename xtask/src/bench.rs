//! Keeps the latest benchmark results in bench/README.md, with the machine they ran on:
//! each part of `cargo xtask bench` rewrites its own section and leaves the others.

use std::path::Path;

use anyhow::{Context, Result};
use clap::ValueEnum;

/// The parts of `cargo xtask bench`, each a bench target of `palisade-tests`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Part {
    /// Per packet, compile and update costs, in process.
    Dataplane,
    /// An etcd write to the maps of a running agent.
    Etcd,
    /// palisade beside no policy, Felix-style iptables and nftables, with real traffic.
    Peers,
}

impl Part {
    pub const ALL: [Part; 3] = [Part::Dataplane, Part::Etcd, Part::Peers];

    /// The bench target's name.
    pub fn target(self) -> &'static str {
        match self {
            Part::Dataplane => "dataplane",
            Part::Etcd => "etcd",
            Part::Peers => "peers",
        }
    }
}

const TARGETS: &str = "\
Targets (issue 3): established at most the empty program + 60 ns, new flow at most the empty
program + 200 ns, both within 20% of themselves from 10 to 10,000 policies and endpoints;
10,000 endpoints (2,000 label sets) and 1,000 policies: full compile under 2 s, maps under
256 MiB, one policy changed under 50 ms, one endpoint added under 10 ms.";

const ETCD_HEADING: &str = "## etcd write -> maps updated";

const ETCD_SECTION: &str = "\
A real etcd on loopback holds the dataplane bench's world (1,000 endpoints, 1,000 \
policies); a real `palisade agent` follows it, with a few workloads plumbed by `palisade \
workload add` on its node. Each change rewrites one policy through palisade's store (one \
etcd transaction); the time runs from just before that write until the generation in the \
agent's pinned `PAL_CONFIG` map flips, which the agent does once the new policy is \
complete in the maps. The agent's own compile and publish times (from its \"policy \
published\" log lines) say where the time goes.";

const ETCD_TARGET: &str = "Target (issue 4): p99 under 100 ms.";

const PEERS_HEADING: &str = "## Beside the peers: no policy, Felix-style iptables, nftables";

const PEERS_SECTION: &str = "\
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
client comes last. Before measuring, each dataplane must connect the allowed ports and \
refuse the denied ones.\n\n\
Method: netperf's semantics in Rust (`tests/src/transactions.rs`): TCP_CRR (connect, \
one byte each way, shutdown, wait for the close), TCP_RR (one byte each way on one \
connection) and a UDP rate (one-byte datagrams on a flow whose first datagram was \
answered; the rate is what the server received). Client and server run pinned to CPU 0 \
(a veth delivers on the sending CPU, so the whole path runs there and 1/rate is its CPU \
time), the harness and the agent on CPU 1. The client namespace reuses TIME_WAIT ports \
(`tcp_tw_reuse=1`, ports 1024-65535); the netfilter nodes keep TIME_WAIT conntrack \
entries 10 s and their conntrack table is flushed before each run. In each round every \
dataplane runs every load once, in a random order; ratios are to (a) in the same round \
(median and min..max of the rounds), which cancels slow drift. The noise table gives \
each rate's spread over the rounds and the largest steal time seen; numbers taken while \
other jobs ran on the machine are marked so below. Only IPv4 is loaded and measured. \
`PALISADE_PEERS_ROUNDS`, `PALISADE_PEERS_SECONDS` and `PALISADE_PEERS_SCALES` shorten a \
run while developing. The plot (bench/peers.svg) shows CRR and RR against the number of \
policies.";

const PEERS_TARGETS: &str = "\
Targets (issue 14): palisade at least 0.95x no policy in CRR, RR and UDP at every scale; \
at least 3x Felix-style iptables in CRR at 1,000 policies and 10x at 10,000.";

/// Replaces (or adds) the section of `part` in bench/README.md with `output`, the part's
/// tables, and refreshes the machine line.
pub fn record(repo: &Path, part: Part, output: &str) -> Result<()> {
    let path = repo.join("bench").join("README.md");
    let existing = std::fs::read_to_string(&path).unwrap_or_default();
    let mut sections = split_sections(&existing);
    let (heading, body) = match part {
        Part::Dataplane => (String::new(), dataplane_section(output)),
        Part::Etcd => (
            ETCD_HEADING.to_string(),
            format!("{ETCD_SECTION}\n\n{}\n\n{ETCD_TARGET}\n", output.trim_end()),
        ),
        Part::Peers => (
            PEERS_HEADING.to_string(),
            format!(
                "{PEERS_SECTION}\n\nLast run: {}.\n\n{}\n\n![CRR and RR against policies](peers.svg)\n\n{PEERS_TARGETS}\n",
                machine(),
                output.trim_end()
            ),
        ),
    };
    match sections.iter_mut().find(|(h, _)| *h == heading) {
        Some(section) => section.1 = body,
        None => sections.push((heading, body)),
    }
    let mut text = String::new();
    for (heading, body) in &sections {
        if !heading.is_empty() {
            text += heading;
            text += "\n\n";
        }
        text += body.trim_end();
        text += "\n\n";
    }
    let dir = repo.join("bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(&path, text.trim_end().to_string() + "\n")
        .with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("bench: results kept in {}", path.display());
    Ok(())
}

/// The file's sections: the part before the first `## ` heading (heading ""), then one
/// per heading.
fn split_sections(text: &str) -> Vec<(String, String)> {
    let mut sections = vec![(String::new(), String::new())];
    for line in text.lines() {
        if line.starts_with("## ") {
            sections.push((line.to_string(), String::new()));
        } else if let Some((_, body)) = sections.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    for (_, body) in &mut sections {
        *body = body.trim().to_string();
    }
    sections
}

/// The kernel and CPUs this machine has, for the "Last run" lines.
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
    format!("kernel {}, {} x {}", kernel.trim(), cpus, cpu)
}

fn dataplane_section(table: &str) -> String {
    format!(
        "# Benchmarks\n\n\
         `cargo xtask bench` (as root) runs every part and rewrites this file; `cargo xtask \
         bench PART` (dataplane, etcd, peers) runs one and rewrites its section. Per-packet \
         costs are the kernel's own \
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
         Last run: {}.\n\n{}\n\n{}\n",
        machine(),
        table.trim_end(),
        TARGETS,
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_part_rewrites_its_own_section_only() {
        let dir = tempfile_dir();
        let bench = dir.join("bench");
        std::fs::create_dir_all(&bench).unwrap();
        std::fs::write(
            bench.join("README.md"),
            "# Benchmarks\n\nold dataplane\n\n## etcd write -> maps updated\n\nold etcd\n",
        )
        .unwrap();
        record(&dir, Part::Peers, "| peers table |").unwrap();
        record(&dir, Part::Etcd, "| new etcd |").unwrap();
        let text = std::fs::read_to_string(bench.join("README.md")).unwrap();
        assert!(
            text.starts_with("# Benchmarks\n\nold dataplane\n\n## etcd"),
            "{text}"
        );
        assert!(
            text.contains("| new etcd |") && !text.contains("old etcd"),
            "{text}"
        );
        let peers = text.find(PEERS_HEADING).unwrap();
        assert!(text[peers..].contains("| peers table |"));
        assert!(peers > text.find("| new etcd |").unwrap());
        record(&dir, Part::Peers, "| peers again |").unwrap();
        let again = std::fs::read_to_string(bench.join("README.md")).unwrap();
        assert_eq!(again.matches(PEERS_HEADING).count(), 1);
        assert!(again.contains("| peers again |") && !again.contains("| peers table |"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
