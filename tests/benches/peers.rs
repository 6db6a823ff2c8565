//! `cargo xtask bench peers`: palisade beside what its users run instead, with real traffic.
//!
//! Five dataplanes enforce the same v1 world, each on a node of its own (a router
//! namespace with the same plumbing: two workloads added by `palisade workload add`, and
//! an idle veth for every other endpoint of the node, so dispatch works at a node's scale):
//! (a) no policy at all (no programs, no netfilter rules, conntrack unused), (b) palisade
//! (a real agent), (c) Felix 2.6.8's iptables + ipset rendering through iptables-legacy,
//! (d) the same through iptables-nft, (e) an nftables ruleset. Separate nodes, because a
//! namespace keeps netfilter tables (and with the nat table, conntrack) once used.
//!
//! The world is the dataplane bench's generated cluster at 10, 1,000 and 10,000 policies.
//! The server workload has the labels of the node's first endpoint (app0, tier web, prod),
//! so a tenth of the policies at 1,000 (7% at 10,000) select it, none of which decide its
//! flows, so every dataplane walks them; the client is in tier api and env dev, which few
//! policies select (and which no `pass` rule of the world's names); the policy that allows
//! the client's flows comes last in order. Both add no rules a node of the world does not
//! already have, but the last policy's. Two more worlds have the pilot's shape: the
//! same 1,000 or 10,000 policies, each now selecting the server (still none deciding its
//! flows), so all of them stand in front of the allow; they are in the tables, not the plot. Before
//! measuring, every dataplane must connect the allowed ports and refuse the denied ones.
//!
//! Then rounds: in each, the dataplanes in a random order, each through TCP_CRR, TCP_RR
//! and the UDP rate (`palisade_tests::transactions`), client and server on one CPU, the
//! harness on the other. Each rate is also taken as a ratio to (a) in the same round.
//! After the rounds: palisade's programs under real traffic (the kernel's run-time
//! statistics, `BPF_ENABLE_STATS`, one run of each load per round), a CPU profile of a CRR
//! run (`perf record -e cpu-clock`), and one policy changed at a time in every dataplane
//! (palisade's agent from the store write to its generation flip; Felix's
//! `iptables-restore --noflush` of the changed chains; one nft transaction).
//!
//! Prints Markdown; `cargo xtask bench peers` keeps it in bench/README.md and the plot in
//! bench/peers.svg. `PALISADE_PEERS_ROUNDS`, `PALISADE_PEERS_SECONDS` and
//! `PALISADE_PEERS_SCALES` (e.g. `10,1000`; `1000-in-front` is the pilot's shape) shorten
//! a run while developing;
//! `PALISADE_PEERS_VARIANTS` (e.g. `none,palisade`) leaves out the netfilter dataplanes;
//! `PALISADE_PEERS_ONLY=updates` measures only the policy changes (no traffic rounds, no
//! profiles, no plot) and `PALISADE_PEERS_CHANGES` sets how many (10 by default; more to
//! profile the agent through them);
//! `PALISADE_PEERS_BASELINE=PATH` adds (b0), another build's `palisade` binary (with its
//! own eBPF object), to every round, so that a change to the programs is measured paired
//! against the build it changes; `PALISADE_PEERS_DUMP_LOG=1` prints the agent's whole log
//! after the policy changes (to line it up with a `perf record -k CLOCK_REALTIME`);
//! `PALISADE_PEERS_IDLE=SECONDS` leaves every dataplane idle that long before the changes
//! (with `PALISADE_PEERS_ONLY=updates`, to tell what idleness costs the first change from
//! what the traffic rounds do).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark that cannot run fails

#[path = "../../agent/tests/common/generated.rs"]
mod generated;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade::model::{Resource, validate};
use palisade::netplumb::host_interface_name;
use palisade::store::{Datastore as Store, Op};
use palisade_common::program_names;
use palisade_peers::felix::{self, Config};
use palisade_peers::{Family, View, nft};
use palisade_tests::agent_process::{
    AgentHome, AgentProcess, PublishTimes, line_has, published_times,
};
use palisade_tests::netfilter::{
    Backend, apply_felix_update, apply_nft_update, flush_conntrack, load_felix, load_nft,
};
use palisade_tests::netns::run_ok;
use palisade_tests::palisade_cli::Datastore;
use palisade_tests::router::Router;
use palisade_tests::topology::{Workload, WorkloadSpec};
use palisade_tests::traffic::{Observed, Probe, Services, probe};
use palisade_tests::transactions::{self, Kind, Outcome, Setup, pin_process_to_cpus, pin_to_cpu};
use palisade_tests::{Cleanup, require_root};
use plotters::prelude::*;
use serde_json::json;

/// The node every dataplane plays.
const NODE: &str = "peers";
/// Endpoints of the world on the node (the rest are on other nodes), as in the other benches.
const PER_NODE: usize = 100;
/// palisade plumbs `pal...` host interfaces: Felix's InterfacePrefix for this node.
const PREFIX: &str = "pal";
/// Client and server share this CPU; the harness and the agent stay on the other (but for
/// the policy changes, see [`update_times`]).
const LOAD_CPU: usize = 0;
const HARNESS_CPU: usize = 1;
const TCP_ALLOWED: u16 = 7100;
const UDP_ALLOWED: u16 = 7101;
const TCP_DENIED: u16 = 7200;
const UDP_DENIED: u16 = 7201;
const WARMUP: Duration = Duration::from_millis(500);
/// Policy changes timed per dataplane and scale, unless `PALISADE_PEERS_CHANGES` says.
const CHANGES: usize = 10;
/// palisade's conntrack table (`PAL_CT`) on its nodes. Every CRR connection leaves a
/// closing entry on each workload's interface for `CT_TIMEOUT_CLOSING_NS` (10 s, and until
/// the agent's next sweep deletes it), keyed by the client's port. The kernel hands out the
/// client's ports in turn (the even ones of 1024-65535 first), so a port comes back after
/// some 32,000 connections and reopens its entry in place: a workload holds about one
/// entry per port (~30,000 measured at ~12,000 connections/s). That is over the budget of
/// the 10-policy world's own sizing (65,536 entries, a quarter each), beyond which new
/// connections are dropped. This size is the 1,000- and 10,000-policy worlds' own (256
/// local endpoints or more): each workload's budget, 65,536, holds the load twice over.
const CT_FOR_LOAD: u32 = 262_144;
/// Kernel conntrack's TIME_WAIT in the netfilter nodes: a CRR run leaves an entry per
/// connection, 120 s by default, which would fill the table over a run.
const TIME_WAIT_SECONDS: &str = "10";
/// How long an agent may take to enforce or publish before the bench fails.
const PATIENCE: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Variant {
    NoPolicy,
    Palisade,
    /// Another build of palisade (`PALISADE_PEERS_BASELINE`), measured in the same rounds
    /// so that a change to the programs is judged against what it changes, paired.
    PalisadeBaseline,
    FelixLegacy,
    FelixNft,
    Nftables,
}

impl Variant {
    const ALL: [Variant; 6] = [
        Variant::NoPolicy,
        Variant::Palisade,
        Variant::PalisadeBaseline,
        Variant::FelixLegacy,
        Variant::FelixNft,
        Variant::Nftables,
    ];

    fn name(self) -> &'static str {
        match self {
            Variant::NoPolicy => "(a) no policy",
            Variant::Palisade => "(b) palisade",
            Variant::PalisadeBaseline => "(b0) palisade baseline",
            Variant::FelixLegacy => "(c) Felix iptables-legacy",
            Variant::FelixNft => "(c') Felix iptables-nft",
            Variant::Nftables => "(d) nftables",
        }
    }

    /// What `PALISADE_PEERS_VARIANTS` calls it.
    fn key(self) -> &'static str {
        match self {
            Variant::NoPolicy => "none",
            Variant::Palisade => "palisade",
            Variant::PalisadeBaseline => "baseline",
            Variant::FelixLegacy => "felix-legacy",
            Variant::FelixNft => "felix-nft",
            Variant::Nftables => "nftables",
        }
    }

    fn color(self) -> RGBColor {
        match self {
            Variant::NoPolicy => RGBColor(120, 120, 120),
            Variant::Palisade => RGBColor(0, 114, 178),
            Variant::PalisadeBaseline => RGBColor(86, 180, 233),
            Variant::FelixLegacy => RGBColor(213, 94, 0),
            Variant::FelixNft => RGBColor(230, 159, 0),
            Variant::Nftables => RGBColor(0, 158, 115),
        }
    }

    fn backend(self) -> Option<Backend> {
        match self {
            Variant::FelixLegacy => Some(Backend::Legacy),
            Variant::FelixNft => Some(Backend::Nft),
            _ => None,
        }
    }

    fn uses_netfilter(self) -> bool {
        matches!(
            self,
            Variant::FelixLegacy | Variant::FelixNft | Variant::Nftables
        )
    }

    /// A real palisade agent runs this node (this build, or the baseline's).
    fn is_palisade(self) -> bool {
        matches!(self, Variant::Palisade | Variant::PalisadeBaseline)
    }
}

#[derive(Debug, Clone, Copy)]
struct Scale {
    endpoints: usize,
    label_sets: usize,
    policies: usize,
    /// The pilot's shape rather than the generated world's: every policy selects the
    /// server (none decides its flows), so all of them stand in front of the allow.
    all_in_front: bool,
}

const SCALES: [Scale; 5] = [
    Scale {
        endpoints: 10,
        label_sets: 10,
        policies: 10,
        all_in_front: false,
    },
    Scale {
        endpoints: 1_000,
        label_sets: 200,
        policies: 1_000,
        all_in_front: false,
    },
    Scale {
        endpoints: 10_000,
        label_sets: 2_000,
        policies: 10_000,
        all_in_front: false,
    },
    Scale {
        endpoints: 1_000,
        label_sets: 200,
        policies: 1_000,
        all_in_front: true,
    },
    Scale {
        endpoints: 10_000,
        label_sets: 2_000,
        policies: 10_000,
        all_in_front: true,
    },
];

impl Scale {
    fn label(&self) -> String {
        format!("{} policies, {} endpoints", self.key(), self.endpoints)
    }

    /// How `PALISADE_PEERS_SCALES` names the scale, and the tables' "policies" column.
    fn key(&self) -> String {
        if self.all_in_front {
            format!("{}-in-front", self.policies)
        } else {
            self.policies.to_string()
        }
    }

    /// The generator's apps (`label_sets / 10`).
    fn apps(&self) -> usize {
        self.label_sets.max(10) / 10
    }
}

/// What a run is configured with.
struct Plan {
    rounds: usize,
    duration: Duration,
    scales: Vec<Scale>,
    /// The dataplanes measured, in `Variant::ALL`'s order: (a) and (b) always.
    variants: Vec<Variant>,
    /// The `palisade` binary of (b0), when it is measured.
    baseline: Option<PathBuf>,
    /// Only the policy changes are measured (`PALISADE_PEERS_ONLY=updates`).
    updates_only: bool,
    /// Policy changes timed per dataplane and scale.
    changes: usize,
    /// How long the agent sits idle before the changes (`PALISADE_PEERS_IDLE`, seconds), as
    /// it does through the traffic rounds, to tell what idleness costs from what traffic does.
    idle: Duration,
}

impl Plan {
    fn from_env() -> Plan {
        let number = |name: &str, default: u64| -> u64 {
            std::env::var(name)
                .ok()
                .map(|v| {
                    v.parse()
                        .unwrap_or_else(|_| panic!("{name}={v}: not a number"))
                })
                .unwrap_or(default)
        };
        let scales = match std::env::var("PALISADE_PEERS_SCALES") {
            Ok(list) => list
                .split(',')
                .map(|p| {
                    *SCALES
                        .iter()
                        .find(|s| s.key() == p.trim())
                        .unwrap_or_else(|| {
                            panic!(
                                "PALISADE_PEERS_SCALES: no scale `{p}`; they are {}",
                                SCALES.map(|s| s.key()).join(", ")
                            )
                        })
                })
                .collect(),
            Err(_) => SCALES.to_vec(),
        };
        let baseline = std::env::var_os("PALISADE_PEERS_BASELINE").map(PathBuf::from);
        if let Some(binary) = &baseline {
            assert!(
                binary.is_file(),
                "PALISADE_PEERS_BASELINE={}: no such file (a palisade binary, e.g. a copy of \
                 target/release/palisade from the build to compare with)",
                binary.display()
            );
        }
        let wanted = |v: Variant| v != Variant::PalisadeBaseline || baseline.is_some();
        let variants =
            match std::env::var("PALISADE_PEERS_VARIANTS") {
                Ok(list) => {
                    let named: Vec<Variant> =
                        list.split(',')
                            .map(|k| {
                                let k = k.trim();
                                *Variant::ALL.iter().find(|v| v.key() == k).unwrap_or_else(|| {
                            panic!(
                                "PALISADE_PEERS_VARIANTS: no dataplane `{k}`; they are {}",
                                Variant::ALL.map(Variant::key).join(", ")
                            )
                        })
                            })
                            .collect();
                    assert!(
                        !named.contains(&Variant::PalisadeBaseline) || baseline.is_some(),
                        "PALISADE_PEERS_VARIANTS names `baseline`: set PALISADE_PEERS_BASELINE too"
                    );
                    Variant::ALL
                        .into_iter()
                        .filter(|v| {
                            matches!(v, Variant::NoPolicy | Variant::Palisade) || named.contains(v)
                        })
                        .collect()
                }
                Err(_) => Variant::ALL.into_iter().filter(|&v| wanted(v)).collect(),
            };
        let updates_only = match std::env::var("PALISADE_PEERS_ONLY") {
            Ok(part) if part == "updates" => true,
            Ok(part) => panic!("PALISADE_PEERS_ONLY={part}: the only part is `updates`"),
            Err(_) => false,
        };
        Plan {
            updates_only,
            changes: number("PALISADE_PEERS_CHANGES", CHANGES as u64) as usize,
            idle: Duration::from_secs(number("PALISADE_PEERS_IDLE", 0)),
            rounds: number("PALISADE_PEERS_ROUNDS", 5) as usize,
            duration: Duration::from_secs(number("PALISADE_PEERS_SECONDS", 3)),
            scales,
            variants,
            baseline,
        }
    }
}

/// One dataplane's node.
struct Node {
    variant: Variant,
    router: Router,
    client: Workload,
    server: Workload,
    /// palisade's agent (its home first: the agent is killed before its pins go).
    agent: Option<(AgentProcess, AgentHome)>,
    felix: Option<felix::Ruleset>,
    nft: Option<nft::Ruleset>,
    /// What was loaded and how long loading took.
    loaded: String,
}

impl Node {
    fn setup(&self, kind: Kind, duration: Duration) -> Setup {
        let port = if kind == Kind::Udp {
            UDP_ALLOWED
        } else {
            TCP_ALLOWED
        };
        Setup {
            client_netns: self.client.netns.name.clone(),
            server_netns: self.server.netns.name.clone(),
            server: SocketAddr::new(self.server.ips[0], port),
            cpu: LOAD_CPU,
            warmup: WARMUP,
            duration,
        }
    }
}

/// What each dataplane held at one scale: (scale, policies selecting the server, per
/// variant what was loaded).
type Loaded = (usize, usize, Vec<(Variant, String)>);

/// One measured run.
struct Sample {
    scale: usize,
    round: usize,
    variant: Variant,
    kind: Kind,
    outcome: Outcome,
}

fn main() {
    require_root();
    pin_to_cpu(HARNESS_CPU).expect("pin the harness to its CPU");
    let plan = Plan::from_env();
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut setups = Vec::new();
    let mut profiles = Vec::new();
    let mut cpu_profiles = Vec::new();
    let mut updates = Vec::new();
    for (index, scale) in plan.scales.iter().enumerate() {
        eprintln!("peers: {}", scale.label());
        let mut cleanup = Cleanup::new();
        let store = Datastore::new();
        let world = world(scale);
        write_world(&store, &world);
        // Each variant keeps its place in `Variant::ALL` for its addresses, whichever run.
        let mut nodes: Vec<Node> = Variant::ALL
            .iter()
            .enumerate()
            .filter(|(_, v)| plan.variants.contains(v))
            .map(|(t, &variant)| plumb(&mut cleanup, &store, scale, t, variant))
            .collect();
        let view = View::new(&store.resources());
        let selecting = server_policies(&view, &nodes[0]);
        for node in &mut nodes {
            load(node, &store, &view, scale, &plan);
            check(node);
            eprintln!("peers:   {}: {}", node.variant.name(), node.loaded);
        }
        setups.push((index, selecting.len(), nodes_loaded(&nodes)));
        if !plan.updates_only {
            samples.extend(rounds(&plan, index, &nodes));
            profiles.push((index, bpf_profile(&plan, &nodes)));
            cpu_profiles.push((
                index,
                nodes
                    .iter()
                    .filter(|n| n.variant == Variant::NoPolicy || n.variant.is_palisade())
                    .map(|n| (n.variant, cpu_profile(n, plan.duration)))
                    .collect(),
            ));
        }
        if scale.policies >= 1_000 && !scale.all_in_front {
            if !plan.idle.is_zero() {
                eprintln!("peers:   idle for {:?} before the changes", plan.idle);
                std::thread::sleep(plan.idle);
            }
            updates.push((
                index,
                update_times(&store, &mut nodes, &selecting, plan.changes),
            ));
        }
        for node in &mut nodes {
            if let Some((agent, home)) = node.agent.take() {
                drop(agent);
                drop(home);
            }
        }
        drop(nodes);
        drop(cleanup);
    }
    let report = Report {
        plan: &plan,
        samples: &samples,
    };
    report.print(&setups, &profiles, &updates, started.elapsed());
    if plan.updates_only {
        return;
    }
    print_cpu_profiles(&plan, &cpu_profiles);
    let plot = repo_root().join("bench").join("peers.svg");
    report.plot(&plot);
    eprintln!("peers: plot in {}", plot.display());
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the repository")
        .to_path_buf()
}

fn node_of(nodes: &[Node], variant: Variant) -> &Node {
    nodes
        .iter()
        .find(|n| n.variant == variant)
        .expect("every variant has a node")
}

/// The generated cluster, its endpoints on this node given palisade's interface names,
/// and a last policy that lets the bench's client reach the server's allowed ports.
fn world(scale: &Scale) -> Vec<Resource> {
    let mut world = generated::generated_cluster(
        scale.endpoints,
        scale.label_sets,
        scale.policies,
        NODE,
        PER_NODE,
    );
    for resource in &mut world {
        match resource {
            Resource::WorkloadEndpoint(w) if w.metadata.node == NODE => {
                w.spec.interface_name = host_interface_name(&w.metadata.name);
            }
            // The generated rules stay: none of them matches the client's flows.
            Resource::Policy(p) if scale.all_in_front => {
                p.spec.selector = "peers == 'server'".into();
            }
            _ => {}
        }
    }
    let allow = json!({"apiVersion": "v1", "kind": "policy",
        "metadata": {"name": "zz-peers-allow"},
        "spec": {"order": scale.policies + 1, "selector": "has(peers)",
            "ingress": [
                {"action": "allow", "protocol": "tcp", "source": {"selector": "peers == 'client'"},
                 "destination": {"ports": [TCP_ALLOWED]}},
                {"action": "allow", "protocol": "udp", "source": {"selector": "peers == 'client'"},
                 "destination": {"ports": [UDP_ALLOWED]}}],
            "egress": [{"action": "allow"}]}});
    let mut allow: Resource = serde_json::from_value(allow).unwrap();
    validate::normalize(&mut allow);
    world.push(allow);
    world
}

fn write_world(store: &Datastore, world: &[Resource]) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store: Arc<dyn Store> = palisade::store::open(store.url()).await.unwrap();
        for batch in world.chunks(2_000) {
            store
                .commit(batch.iter().cloned().map(Op::Apply).collect())
                .await
                .unwrap();
        }
    });
}

/// The node of `variant` (the `t`th): its router, an idle interface for every endpoint of
/// the world on this node, and the client and server workloads.
fn plumb(
    cleanup: &mut Cleanup,
    store: &Datastore,
    scale: &Scale,
    t: usize,
    variant: Variant,
) -> Node {
    let router = Router::create(cleanup);
    for i in 0..scale.endpoints.min(PER_NODE) {
        router.idle_interface(&host_interface_name(&format!("ep{i}")));
    }
    let apps = scale.apps();
    let workload = |who: &str, host: u8, labels: &str, profile: &str, cleanup: &mut Cleanup| {
        let ip = format!("10.200.{t}.{host}");
        let labels = format!("{labels},peers={who}");
        let spec = WorkloadSpec {
            prefix: &who[..3],
            ips: &[&ip],
            labels: &labels,
            profiles: &[profile],
        };
        router.add_workload(cleanup, store, NODE, &spec)
    };
    let client_labels = format!("app=app{},tier=api", 1 % apps);
    let client = workload("client", 1, &client_labels, "env-dev", cleanup);
    let server = workload("server", 2, "app=app0,tier=web", "env-prod", cleanup);
    // CRR opens connections faster than TIME_WAIT frees their ports.
    client
        .netns
        .run_ok("sysctl", &["-q", "-w", "net.ipv4.tcp_tw_reuse=1"]);
    client.netns.run_ok(
        "sysctl",
        &["-q", "-w", "net.ipv4.ip_local_port_range=1024 65535"],
    );
    Node {
        variant,
        router,
        client,
        server,
        agent: None,
        felix: None,
        nft: None,
        loaded: String::new(),
    }
}

/// The policies that select the server (any node's: they are plumbed alike).
fn server_policies(view: &View, node: &Node) -> Vec<String> {
    let server = view
        .endpoints
        .iter()
        .find(|(w, _)| w.spec.interface_name == node.server.interface)
        .expect("the server's endpoint");
    view.policies
        .iter()
        .filter(|p| p.selector.matches(&server.1) && p.name() != "zz-peers-allow")
        .map(|p| p.name().to_string())
        .collect()
}

/// Puts the variant's dataplane in force on its node.
fn load(node: &mut Node, store: &Datastore, view: &View, scale: &Scale, plan: &Plan) {
    let started = Instant::now();
    match node.variant {
        Variant::NoPolicy => node.loaded = "nothing".into(),
        Variant::Palisade | Variant::PalisadeBaseline => {
            let home = AgentHome::in_netns(store.url(), NODE, &node.router.ns.name);
            // Sized for the world, as an operator would (`--max-endpoints`, `--max-policies`),
            // and the conntrack table for the load, as the operator of such a workload must:
            // see `CT_FOR_LOAD`.
            let endpoints = scale.endpoints.to_string();
            let policies = scale.policies.to_string();
            let conntrack = format!("{}={CT_FOR_LOAD}", palisade_common::map_names::CT);
            let options = [
                "--max-endpoints",
                &endpoints,
                "--max-policies",
                &policies,
                "--map-size",
                &conntrack,
            ];
            let mut agent = match (&plan.baseline, node.variant) {
                (Some(binary), Variant::PalisadeBaseline) => home.start_binary(binary, &options),
                _ => home.start(&options),
            };
            let interfaces = [
                node.client.interface.as_str(),
                node.server.interface.as_str(),
            ];
            wait_enforcing(&mut agent, &interfaces, store.revision());
            let line = agent.wait_for_ever_said(&["policy published"]);
            node.loaded = format!(
                "agent enforcing in {:.1} s ({})",
                started.elapsed().as_secs_f64(),
                line.split_once("policy published")
                    .map_or("", |(_, r)| r.trim())
            );
            node.agent = Some((agent, home));
        }
        Variant::FelixLegacy | Variant::FelixNft => {
            let config = Config::felix_defaults(Family::V4).with_interface_prefix(PREFIX);
            let ruleset = felix::render(view, NODE, &config);
            let rendered = started.elapsed();
            let backend = node.variant.backend().expect("a Felix variant");
            load_felix(&node.router.ns, &ruleset, backend).unwrap();
            node.loaded = format!(
                "{} iptables rules, {} ipsets ({} members): rendered in {:.2} s, loaded in {:.2} s",
                ruleset.rule_count(),
                ruleset.ipsets.len(),
                ruleset
                    .ipsets
                    .iter()
                    .map(|s| s.members.len())
                    .sum::<usize>(),
                rendered.as_secs_f64(),
                (started.elapsed() - rendered).as_secs_f64()
            );
            node.felix = Some(ruleset);
        }
        Variant::Nftables => {
            let ruleset = nft::render(view, NODE, Family::V4, PREFIX);
            let rendered = started.elapsed();
            load_nft(&node.router.ns, &ruleset).unwrap();
            node.loaded = format!(
                "{} nft rules, {} sets ({} members): rendered in {:.2} s, loaded in {:.2} s",
                ruleset.rule_count(),
                ruleset.sets.len(),
                ruleset.sets.values().map(|s| s.len()).sum::<usize>(),
                rendered.as_secs_f64(),
                (started.elapsed() - rendered).as_secs_f64()
            );
            node.nft = Some(ruleset);
        }
    }
    if node.variant.uses_netfilter() {
        node.router.sysctl(
            "net.netfilter.nf_conntrack_tcp_timeout_time_wait",
            TIME_WAIT_SECONDS,
        );
    }
}

/// Waits (longer than the tests do: a 10,000-policy world takes a while) for the agent to
/// enforce on `interfaces` and publish `revision`.
fn wait_enforcing(agent: &mut AgentProcess, interfaces: &[&str], revision: u64) {
    let deadline = Instant::now() + PATIENCE;
    let published = format!("revision={revision}");
    loop {
        let enforcing = interfaces.iter().all(|i| {
            agent.count(&["enforcing on workload interface", &format!("interface={i}")]) > 0
        });
        if enforcing && agent.count(&["policy published", &published]) > 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the agent did not enforce revision {revision} on {interfaces:?} within {PATIENCE:?}:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Correctness first: the allowed ports connect, the denied ones do not (with no policy,
/// everything connects).
fn check(node: &Node) {
    let services = Services::start(
        &node.server.netns.name,
        &[TCP_ALLOWED, TCP_DENIED],
        &[UDP_ALLOWED, UDP_DENIED],
    );
    let server: IpAddr = node.server.ips[0];
    let enforcing = node.variant != Variant::NoPolicy;
    for (what, allowed) in [
        (Probe::Tcp(TCP_ALLOWED), true),
        (Probe::Udp(UDP_ALLOWED), true),
        (Probe::Tcp(TCP_DENIED), !enforcing),
        (Probe::Udp(UDP_DENIED), !enforcing),
    ] {
        let seen = probe(
            &node.client.netns.name,
            server,
            what,
            &services.inbox(),
            Duration::from_secs(2),
        );
        let expected = if allowed {
            Observed::BOTH_WAYS
        } else {
            Observed::NOTHING
        };
        assert_eq!(
            seen,
            expected,
            "{}: {what} from the client to the server",
            node.variant.name()
        );
    }
}

fn nodes_loaded(nodes: &[Node]) -> Vec<(Variant, String)> {
    nodes
        .iter()
        .map(|n| (n.variant, n.loaded.clone()))
        .collect()
}

/// Shuffles with a small xorshift generator: the order only has to vary between rounds.
fn shuffled<T: Copy>(items: &[T], state: &mut u64) -> Vec<T> {
    let mut out = items.to_vec();
    for i in (1..out.len()).rev() {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        let j = (*state % (i as u64 + 1)) as usize;
        out.swap(i, j);
    }
    out
}

fn rounds(plan: &Plan, scale: usize, nodes: &[Node]) -> Vec<Sample> {
    let mut state = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0x9e37_79b9_7f4a_7c15, |d| d.as_nanos() as u64)
        | 1;
    let mut samples = Vec::new();
    for round in 0..plan.rounds {
        let order = shuffled(&plan.variants, &mut state);
        for variant in order {
            let node = node_of(nodes, variant);
            for kind in Kind::ALL {
                if variant.uses_netfilter() {
                    flush_conntrack(&node.router.ns).unwrap();
                }
                let outcome = transactions::run(kind, &node.setup(kind, plan.duration))
                    .unwrap_or_else(|e| panic!("{} {}: {e}", variant.name(), kind.name()));
                eprintln!(
                    "peers:   round {round} {:<28} {:<8} {:>9.0}/s errors {} steal {:.1}% idle {:.1}%",
                    variant.name(),
                    kind.name(),
                    outcome.rate(),
                    outcome.errors,
                    outcome.cpu.steal_share() * 100.0,
                    outcome.cpu.idle_share() * 100.0
                );
                samples.push(Sample {
                    scale,
                    round,
                    variant,
                    kind,
                    outcome,
                });
            }
        }
    }
    samples
}

/// palisade's programs under real traffic: the kernel's run-time statistics
/// (`BPF_ENABLE_STATS`, on only while this measures, since they cost a clock read per run)
/// over a CRR, an RR and a UDP run in every round, the palisade builds taking turns; each
/// program's time per run and runs per transaction.
struct BpfProfile {
    rows: Vec<BpfRow>,
}

struct BpfRow {
    variant: Variant,
    kind: Kind,
    program: &'static str,
    /// Of every round.
    ns_per_run: Vec<f64>,
    runs_per_transaction: Vec<f64>,
    /// The kernel verifier's instructions for the program as loaded.
    verified: Option<u32>,
}

/// The pin directory of a node's agent: this build's map ABI's, or, for a baseline of
/// another ABI, the one it made (each node has a bpffs of its own).
fn agent_pin_dir(bpffs: &Path) -> PathBuf {
    let own = palisade::dataplane::pin_dir(bpffs);
    if own.exists() {
        return own;
    }
    let root = palisade::dataplane::lock_dir(bpffs);
    std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.parse::<u32>().is_ok())
        })
        .unwrap_or_else(|| panic!("no pin directory of any ABI under {}", root.display()))
}

fn bpf_profile(plan: &Plan, nodes: &[Node]) -> BpfProfile {
    let palisades: Vec<&Node> = nodes.iter().filter(|n| n.variant.is_palisade()).collect();
    let names = [program_names::FROM_WORKLOAD, program_names::TO_WORKLOAD];
    let info = |node: &Node, name: &str| {
        let (_, home) = node.agent.as_ref().expect("palisade's agent");
        let pins = agent_pin_dir(home.bpffs.path());
        let path = palisade::dataplane::program_pin_dir(&pins).join(name);
        aya::programs::ProgramInfo::from_pin(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    let mut rows: Vec<BpfRow> = palisades
        .iter()
        .flat_map(|node| {
            Kind::ALL.into_iter().flat_map(move |kind| {
                names.map(|program| BpfRow {
                    variant: node.variant,
                    kind,
                    program,
                    ns_per_run: vec![],
                    runs_per_transaction: vec![],
                    verified: info(node, program).verified_instruction_count(),
                })
            })
        })
        .collect();
    let stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).expect("BPF_ENABLE_STATS");
    for round in 0..plan.rounds {
        // Alternate which build goes first, so that neither always follows the other.
        let mut order = palisades.clone();
        if round % 2 == 1 {
            order.reverse();
        }
        for node in order {
            for kind in Kind::ALL {
                let before = names.map(|n| info(node, n));
                // No warm-up: every run the counters see is of a counted transaction.
                let setup = Setup {
                    warmup: Duration::ZERO,
                    ..node.setup(kind, plan.duration)
                };
                let outcome = transactions::run(kind, &setup)
                    .unwrap_or_else(|e| panic!("{} {}: {e}", node.variant.name(), kind.name()));
                for (program, before) in names.into_iter().zip(before) {
                    let after = info(node, program);
                    let runs = after.run_count().saturating_sub(before.run_count()) as f64;
                    let time = after.run_time().saturating_sub(before.run_time());
                    let row = rows
                        .iter_mut()
                        .find(|r| {
                            r.variant == node.variant && r.kind == kind && r.program == program
                        })
                        .expect("a row per build, load and program");
                    row.ns_per_run.push(time.as_nanos() as f64 / runs.max(1.0));
                    row.runs_per_transaction
                        .push(runs / (outcome.count as f64).max(1.0));
                }
            }
        }
    }
    drop(stats);
    BpfProfile { rows }
}

/// Where the CPU time of CRR transactions goes: `perf record` (cpu-clock samples with
/// kernel call graphs) of this process, whose client and server threads run the whole
/// path, during one run without warm-up. Shares become CPU time per transaction through
/// perf's event count (nanoseconds of cpu-clock) over the transactions.
struct CpuProfile {
    rate: f64,
    /// CPU nanoseconds the samples stand for, per transaction.
    ns_per_transaction: f64,
    /// Kernel symbols by their own samples (share in %).
    self_share: Vec<(f64, String)>,
    /// The share under each stage of the path (callees included).
    inclusive: Vec<(f64, String)>,
    /// Kernel symbols by their own samples taken under palisade's programs (the programs
    /// and the helpers and map code they call), as `symbol (program)`: CPU nanoseconds per
    /// transaction.
    under_programs: Vec<(f64, String)>,
}

/// Stages of the path, reported with what they call: palisade's programs and the TC hooks
/// that run them, netfilter, conntrack, and the socket calls of the transaction.
const STAGES: [&str; 13] = [
    "palisade_from_wl",
    "palisade_deliver",
    "palisade_to_wl",
    "tcx_run",
    "sch_handle_ingress",
    "sch_handle_egress",
    "nf_hook_slow",
    "nf_conntrack_in",
    "ip_forward",
    "__sys_connect",
    "__sys_accept4",
    "__x64_sys_close",
    "__sys_sendto",
];

/// CPU time one perf sample stands for (`-c`, in ns of cpu-clock).
const SAMPLE_NS: u64 = 100_000;

fn cpu_profile(node: &Node, duration: Duration) -> CpuProfile {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("perf.data");
    let data = data.to_str().unwrap();
    // Samples are told apart by process id: threads started after perf (the client's and
    // the server's) are born on the harness's CPU, whose task events a record of the load's
    // CPU does not hold, so they have no name in it (`:TID`), only their process.
    let pid = std::process::id().to_string();
    let (cpu, period) = (LOAD_CPU.to_string(), SAMPLE_NS.to_string());
    // perf records until stopped: started first, so that the whole run is in the record.
    let mut recorder = std::process::Command::new("perf")
        .args([
            "record",
            "-q",
            "-e",
            "cpu-clock",
            "-c",
            &period,
            "-g",
            "-C",
            &cpu,
        ])
        .args(["-o", data, "--", "sleep", "600"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("perf (Debian linux-perf) records the load's CPU");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::metadata(data).map_or(0, |m| m.len()) == 0 {
        assert!(Instant::now() < deadline, "perf record did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let setup = Setup {
        warmup: Duration::ZERO,
        ..node.setup(Kind::Crr, duration)
    };
    let outcome = transactions::run(Kind::Crr, &setup).unwrap();
    // SAFETY: plain kill(2) on our own child, not yet reaped; SIGINT makes perf write out.
    unsafe { libc::kill(recorder.id() as libc::pid_t, libc::SIGINT) };
    let recorded = recorder.wait().unwrap();
    assert!(
        recorded.success() || recorded.code().is_none(),
        "perf record: {recorded}"
    );
    // Only this process's samples: its client and server threads run the whole path;
    // other processes on the CPU are not the load's.
    let report = |args: &[&str]| -> String {
        let mut all = vec!["report", "-i", data, "--stdio", "-g", "none", "--pid", &pid];
        all.extend_from_slice(args);
        run_ok("perf", &all)
    };
    let samples: f64 = report(&["--no-children", "-n", "--sort", "comm"])
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .sum();
    // Lines are `share% [k] symbol`, or `inclusive% self% [k] symbol` with --children.
    let kernel_rows = |text: String, skip: usize| -> Vec<(f64, String)> {
        text.lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let share = fields.next()?.strip_suffix('%')?.parse::<f64>().ok()?;
                let mut fields = fields.skip(skip);
                if fields.next()? != "[k]" {
                    return None;
                }
                // Kernel symbols have no spaces; what follows is a parent column, if any.
                Some((share, fields.next()?.to_string()))
            })
            .collect()
    };
    let relative = ["--percentage", "relative", "--sort", "sym"];
    let self_share = kernel_rows(report(&[&["--no-children"][..], &relative].concat()), 0);
    // The programs' kernel symbols are `bpf_prog_<tag>_palisade_{from,to}_wl`; a bare
    // `palisade_` would also match the harness's own frames (`palisade_tests::...`), at the
    // root of every call chain.
    // Counted in samples, not shares: with `--exclude-other` a share is of the samples
    // under the programs, not of the transaction's. Lines are `share% samples [k] symbol
    // parent`, one per symbol and program it ran under.
    let transactions = (outcome.count as f64).max(1.0);
    let under_programs = report(&[
        "--no-children",
        "-n",
        "--parent",
        "_palisade_(from|to)_wl",
        "--exclude-other",
        "--sort",
        "sym",
    ])
    .lines()
    .filter_map(|line| {
        let mut fields = line.split_whitespace().skip(1);
        let samples = fields.next()?.parse::<f64>().ok()?;
        if fields.next()? != "[k]" {
            return None;
        }
        let symbol = fields.next()?;
        let program = fields.next()?;
        let program = ["palisade_from_wl", "palisade_deliver", "palisade_to_wl"]
            .into_iter()
            .find(|p| program.ends_with(p))?;
        let ns = samples * SAMPLE_NS as f64 / transactions;
        Some((ns, format!("`{symbol}` ({program})")))
    })
    .take(25)
    .collect();
    let all_inclusive = kernel_rows(report(&[&["--children"][..], &relative].concat()), 1);
    let inclusive = STAGES
        .iter()
        .map(|stage| {
            let share = all_inclusive
                .iter()
                .filter(|(_, s)| s == stage || s.ends_with(&format!("_{stage}")))
                .map(|(v, _)| *v)
                .fold(0.0, f64::max);
            (share, (*stage).to_string())
        })
        .collect();
    CpuProfile {
        rate: outcome.rate(),
        ns_per_transaction: samples * SAMPLE_NS as f64 / transactions,
        self_share: self_share.into_iter().take(20).collect(),
        inclusive,
        under_programs,
    }
}

/// Profiles of one scale: (a)'s, then each palisade build's.
type CpuProfiles = (usize, Vec<(Variant, CpuProfile)>);

fn print_cpu_profiles(plan: &Plan, profiles: &[CpuProfiles]) {
    println!(
        "\nWhere a CRR transaction's CPU time goes: `perf record -e cpu-clock -g` of the bench's client and server threads (the whole path runs in them), one run each, in µs of CPU per transaction.\n"
    );
    let short = |v: Variant| v.name().split_once(' ').map_or(v.name(), |(s, _)| s);
    for (index, columns) in profiles {
        let us = |share: f64, p: &CpuProfile| share / 100.0 * p.ns_per_transaction / 1e3;
        let summary: Vec<String> = columns
            .iter()
            .map(|(v, p)| {
                format!(
                    "{} {:.0} CRR/s, {:.1} µs of CPU per transaction",
                    v.name(),
                    p.rate,
                    p.ns_per_transaction / 1e3
                )
            })
            .collect();
        println!(
            "{} policies: {}.\n",
            plan.scales[*index].key(),
            summary.join("; ")
        );
        let header: String = columns
            .iter()
            .map(|(v, _)| format!(" {} µs |", short(*v)))
            .collect();
        let rule = "---|".repeat(columns.len());
        println!("| stage (with what it calls) |{header}");
        println!("|---|{rule}");
        for (i, (_, stage)) in columns[0].1.inclusive.iter().enumerate() {
            let cells: String = columns
                .iter()
                .map(|(_, p)| format!(" {:.2} |", us(p.inclusive[i].0, p)))
                .collect();
            println!("| `{stage}` |{cells}");
        }
        println!("\n| kernel symbol (own samples) |{header}");
        println!("|---|{rule}");
        let mut symbols: Vec<&String> = columns
            .iter()
            .flat_map(|(_, p)| p.self_share.iter().map(|(_, s)| s))
            .collect();
        symbols.sort();
        symbols.dedup();
        let find = |p: &CpuProfile, s: &str| {
            p.self_share
                .iter()
                .find(|(_, n)| n == s)
                .map_or(0.0, |(v, _)| *v)
        };
        let mut rows: Vec<(Vec<f64>, &String)> = symbols
            .into_iter()
            .map(|s| (columns.iter().map(|(_, p)| us(find(p, s), p)).collect(), s))
            .collect();
        // By palisade's (the second column's) time.
        rows.sort_by(|a, b| b.0[1].total_cmp(&a.0[1]));
        for (values, symbol) in rows {
            let cells: String = values.iter().map(|v| format!(" {v:.2} |")).collect();
            println!("| `{symbol}` |{cells}");
        }
        for (variant, profile) in columns.iter().filter(|(v, _)| v.is_palisade()) {
            println!(
                "\n| {} under palisade's programs: kernel symbol (own samples) | µs |",
                short(*variant)
            );
            println!("|---|---|");
            for (ns, symbol) in &profile.under_programs {
                println!("| {symbol} | {:.2} |", ns / 1e3);
            }
        }
        println!();
    }
}

/// One policy changed at a time, in every enforcing dataplane: the milliseconds of each
/// change, by variant, with what they consist of.
struct UpdateTimes {
    /// Variant -> (samples in ms, what they measure).
    times: BTreeMap<Variant, (Vec<f64>, &'static str)>,
    /// What palisade's agent says each change took (its log).
    agent: Vec<PublishTimes>,
    /// The store's own commit of each change (the embedded store appends a record and
    /// syncs it) before the agent can see it, in ms.
    commit_ms: Vec<f64>,
    /// How many of palisade's changes the agent compiled in full rather than in place.
    full_compiles: usize,
    /// The Felix and nft renderings' own time (not counted above: Felix computes its
    /// changes incrementally).
    render_ms: Vec<f64>,
}

fn update_times(
    store: &Datastore,
    nodes: &mut [Node],
    selecting: &[String],
    changes: usize,
) -> UpdateTimes {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let backing: Arc<dyn Store> = runtime
        .block_on(palisade::store::open(store.url()))
        .unwrap();
    // The agent started on the harness's CPU (it inherits the harness's pinning), where the
    // harness's own commit of each change took turns with the agent's compile (5 ms of a
    // first change went so, perf showed, while the load's CPU idled). On a node the writer
    // is elsewhere (etcd, calicoctl), and iptables-restore and nft have the harness's CPU
    // to themselves while it waits for them: the agent gets the load's CPU, idle now, to
    // itself. (Let onto both CPUs, it took turns with the harness again: 10.2 ms median,
    // 14.8 max, against 8.6 and 10.1 on its own, at 10,000 policies.)
    for node in nodes.iter().filter(|n| n.variant.is_palisade()) {
        if let Some((agent, _)) = &node.agent {
            pin_process_to_cpus(agent.pid(), &[LOAD_CPU]).expect("pin the agent to the load's CPU");
        }
    }
    let mut current = store.resources();
    let mut times: BTreeMap<Variant, (Vec<f64>, &'static str)> = BTreeMap::new();
    let mut render_ms = vec![];
    let mut commit_ms = vec![];
    let mut revisions = Vec::new();
    for change in 0..changes {
        let name = &selecting[change % selecting.len()];
        let index = current
            .iter()
            .position(|r| matches!(r, Resource::Policy(p) if &p.metadata.name == name))
            .expect("the policy");
        current[index] = with_new_port(&current[index], 20_000 + change as u16);

        // palisade: from the store write until the agent's generation flips.
        let node = nodes
            .iter_mut()
            .find(|n| n.variant == Variant::Palisade)
            .unwrap();
        let (agent, home) = node.agent.as_mut().unwrap();
        let config = home.pinned_config();
        let before = config.generation();
        std::thread::sleep(Duration::from_millis(20));
        let started = Instant::now();
        // The flip is watched while the commit runs: the agent reads the record once it is
        // appended, so it may flip before the store's sync (and with it the commit) returns.
        let (outcome, flipped) = std::thread::scope(|scope| {
            let watcher = scope.spawn(|| {
                while config.generation() == before {
                    if started.elapsed() >= PATIENCE {
                        return None;
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
                Some(started.elapsed())
            });
            let outcome = runtime
                .block_on(backing.commit(vec![Op::Apply(current[index].clone())]))
                .unwrap();
            commit_ms.push(ms(started.elapsed()));
            (outcome, watcher.join().expect("the flip watcher"))
        });
        let Some(flipped) = flipped else {
            panic!(
                "revision {} not in force after {PATIENCE:?}:\n{}",
                outcome.revision,
                agent.log()
            );
        };
        times
            .entry(Variant::Palisade)
            .or_insert((vec![], "store write -> generation flip"))
            .0
            .push(ms(flipped));
        revisions.push(outcome.revision);

        // The peers: render the new policy, then apply only what changed.
        let rendering = Instant::now();
        let view = View::new(&current);
        for node in nodes.iter_mut() {
            match node.variant {
                Variant::FelixLegacy | Variant::FelixNft => {
                    let old = node.felix.as_ref().unwrap();
                    let new = felix::render(&view, NODE, &old.config);
                    let update = old.update_to(&new);
                    let backend = node.variant.backend().unwrap();
                    let took =
                        apply_felix_update(&node.router.ns, &update, Family::V4, backend).unwrap();
                    times
                        .entry(node.variant)
                        .or_insert((
                            vec![],
                            "ipset + iptables-restore --noflush of the changed chains",
                        ))
                        .0
                        .push(ms(took));
                    node.felix = Some(new);
                }
                Variant::Nftables => {
                    let old = node.nft.as_ref().unwrap();
                    let new = nft::render(&view, NODE, Family::V4, PREFIX);
                    let took = apply_nft_update(&node.router.ns, &old.update_to(&new)).unwrap();
                    times
                        .entry(node.variant)
                        .or_insert((vec![], "one nft -f transaction"))
                        .0
                        .push(ms(took));
                    node.nft = Some(new);
                }
                _ => {}
            }
        }
        render_ms.push(ms(rendering.elapsed()));
    }
    let node = nodes
        .iter_mut()
        .find(|n| n.variant == Variant::Palisade)
        .unwrap();
    let (agent, _) = node.agent.as_mut().unwrap();
    let last = revisions.last().copied().unwrap_or_default();
    agent.wait_for_ever_said(&["policy published", &format!("revision={last}")]);
    let log = agent.log();
    if std::env::var_os("PALISADE_PEERS_DUMP_LOG").is_some() {
        eprintln!("peers: agent log:\n{log}");
    }
    let published = published_times(&log);
    // What each change cost the agent, step by step, for whoever reads the run's output.
    for line in log
        .lines()
        .filter(|l| l.contains("policy published"))
        .skip(1)
    {
        eprintln!("peers:   {line}");
    }
    let full_compiles = revisions
        .iter()
        .filter(|r| {
            let revision = format!("revision={r}");
            log.lines().any(|l| {
                l.contains("policy published")
                    && line_has(l, &revision)
                    && l.contains("compiled=full")
            })
        })
        .count();
    let agent = revisions.iter().map(|r| published[r]).collect();
    UpdateTimes {
        times,
        agent,
        commit_ms,
        full_compiles,
        render_ms,
    }
}

/// `policy` with its first allowed TCP ingress rule on `port` and 9000-9100 (a port no
/// rule had, so every dataplane must change).
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

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn min_max(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(*v), hi.max(*v))
        })
}

struct Report<'a> {
    plan: &'a Plan,
    samples: &'a [Sample],
}

impl Report<'_> {
    fn rates(&self, scale: usize, variant: Variant, kind: Kind) -> Vec<f64> {
        self.samples
            .iter()
            .filter(|s| s.scale == scale && s.variant == variant && s.kind == kind)
            .map(|s| s.outcome.rate())
            .collect()
    }

    /// Per round: the variant's rate over no policy's in the same round.
    fn ratios(&self, scale: usize, variant: Variant, kind: Kind) -> Vec<f64> {
        self.ratios_to(scale, variant, Variant::NoPolicy, kind)
    }

    /// Per round: the variant's rate over `reference`'s in the same round.
    fn ratios_to(
        &self,
        scale: usize,
        variant: Variant,
        reference: Variant,
        kind: Kind,
    ) -> Vec<f64> {
        let rate = |v: Variant, round: usize| {
            self.samples
                .iter()
                .find(|s| s.scale == scale && s.variant == v && s.kind == kind && s.round == round)
                .map(|s| s.outcome.rate())
        };
        (0..self.plan.rounds)
            .filter_map(|round| Some(rate(variant, round)? / rate(reference, round)?))
            .collect()
    }

    /// palisade's CRR over Felix's, beside the most any dataplane could reach there: no
    /// policy's own CRR over Felix's.
    fn print_over_felix(&self) {
        let variants = &self.plan.variants;
        if !variants.contains(&Variant::FelixLegacy) {
            return;
        }
        println!(
            "\nTCP_CRR over Felix iptables-legacy's in the same round, median (min..max): palisade's, and no policy's, which bounds what any dataplane can reach in that world.\n"
        );
        println!("| policies | (b) palisade vs (c) | (a) no policy vs (c) |");
        println!("|---|---|---|");
        for (index, scale) in self.plan.scales.iter().enumerate() {
            let mut row = format!("| {} |", scale.key());
            for variant in [Variant::Palisade, Variant::NoPolicy] {
                let mut ratios = self.ratios_to(index, variant, Variant::FelixLegacy, Kind::Crr);
                if !variants.contains(&variant) || ratios.is_empty() {
                    row += " - |";
                    continue;
                }
                let (lo, hi) = min_max(&ratios);
                let ratio = median(&mut ratios);
                row += &format!(" {ratio:.2}x ({lo:.2}..{hi:.2}) |");
            }
            println!("{row}");
        }
    }

    fn print(
        &self,
        setups: &[Loaded],
        profiles: &[(usize, BpfProfile)],
        updates: &[(usize, UpdateTimes)],
        took: Duration,
    ) {
        if self.plan.updates_only {
            println!(
                "Policy changes only (PALISADE_PEERS_ONLY=updates), {:.0} min in all.\n",
                took.as_secs_f64() / 60.0
            );
        } else {
            self.print_traffic(took);
        }
        self.print_setups(setups);
        if !self.plan.updates_only {
            self.print_profiles(profiles);
        }
        self.print_updates(updates);
    }

    /// The rates, their ratios to (a) and their noise.
    fn print_traffic(&self, took: Duration) {
        let scales = &self.plan.scales;
        println!(
            "{} rounds of {} s per dataplane and load, {:.0} min in all.\n",
            self.plan.rounds,
            self.plan.duration.as_secs(),
            took.as_secs_f64() / 60.0
        );
        println!(
            "| policies | dataplane | TCP_CRR/s | CRR vs (a) | TCP_RR/s | RR vs (a) | UDP datagrams/s | UDP vs (a) |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        for (index, scale) in scales.iter().enumerate() {
            for &variant in &self.plan.variants {
                let mut row = format!("| {} | {} |", scale.key(), variant.name());
                for kind in Kind::ALL {
                    let rate = median(&mut self.rates(index, variant, kind));
                    let mut ratios = self.ratios(index, variant, kind);
                    let (lo, hi) = min_max(&ratios);
                    let ratio = median(&mut ratios);
                    row += &format!(" {rate:.0} | {ratio:.2}x ({lo:.2}..{hi:.2}) |");
                }
                println!("{row}");
            }
        }
        self.print_over_felix();
        println!(
            "\nNoise: the spread of each dataplane's rates over the rounds (max/min - 1), and the most CPU time a hypervisor took (steal) in any run.\n"
        );
        println!(
            "| policies | dataplane | CRR spread | RR spread | UDP spread | max steal | errors |"
        );
        println!("|---|---|---|---|---|---|---|");
        for (index, scale) in scales.iter().enumerate() {
            for &variant in &self.plan.variants {
                let mut row = format!("| {} | {} |", scale.key(), variant.name());
                for kind in Kind::ALL {
                    let (lo, hi) = min_max(&self.rates(index, variant, kind));
                    row += &format!(" {:.0}% |", (hi / lo - 1.0) * 100.0);
                }
                let runs = self
                    .samples
                    .iter()
                    .filter(|s| s.scale == index && s.variant == variant);
                let (steal, errors) = runs.fold((0.0f64, 0), |(st, er), s| {
                    (st.max(s.outcome.cpu.steal_share()), er + s.outcome.errors)
                });
                row += &format!(" {:.1}% | {errors} |", steal * 100.0);
                println!("{row}");
            }
        }
    }

    fn print_setups(&self, setups: &[Loaded]) {
        let scales = &self.plan.scales;
        println!(
            "\nThe worlds as each dataplane holds them (policies that select the server, all ahead of the allowing one):\n"
        );
        println!("| policies | selecting the server | dataplane | loaded |");
        println!("|---|---|---|---|");
        for (index, selecting, loaded) in setups {
            for (variant, what) in loaded {
                println!(
                    "| {} | {selecting} | {} | {what} |",
                    scales[*index].key(),
                    variant.name()
                );
            }
        }
    }

    fn print_profiles(&self, profiles: &[(usize, BpfProfile)]) {
        let scales = &self.plan.scales;
        println!(
            "\npalisade's programs under real traffic (the kernel's run-time statistics, `BPF_ENABLE_STATS`, on only for these runs: one run of each load per round{}); median and min..max of the rounds, and the instructions the verifier walked for each program. A packet `palisade_from_wl` delivers to the other workload runs `palisade_deliver` (the destination's ingress policy) as its tail call, which the kernel counts to `palisade_from_wl`; `palisade_to_wl` runs for the packets the host's stack sends:\n",
            if self.plan.baseline.is_some() {
                ", the builds taking turns"
            } else {
                ""
            }
        );
        println!(
            "| policies | dataplane | load | program | ns per run | runs per transaction | ns per transaction | verified instructions |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        for (index, profile) in profiles {
            for row in &profile.rows {
                let (lo, hi) = min_max(&row.ns_per_run);
                let ns = median(&mut row.ns_per_run.clone());
                let runs = median(&mut row.runs_per_transaction.clone());
                println!(
                    "| {} | {} | {} | {} | {ns:.0} ({lo:.0}..{hi:.0}) | {runs:.2} | {:.0} | {} |",
                    scales[*index].key(),
                    row.variant.name(),
                    row.kind.name(),
                    row.program,
                    ns * runs,
                    row.verified.map_or("?".to_string(), |v| v.to_string())
                );
            }
        }
    }

    fn print_updates(&self, updates: &[(usize, UpdateTimes)]) {
        let scales = &self.plan.scales;
        let changes = self.plan.changes;
        println!(
            "\nOne policy changed (a policy that selects the server gets a new port), {changes} times in each dataplane: median (max), ms. palisade's time runs from the store write until its generation flips, watched (every 0.2 ms) while the write runs: the store's commit is the embedded store's append and `fdatasync`, and the agent reads the record as soon as it is appended, so the sync overlaps the agent's work. The first change of a scale comes minutes after the agent last touched its compiled state (the traffic rounds ran meanwhile): it is shown apart too, as it pays for reaching that memory again (caches, TLB, and the hypervisor's handling of a VM's idle memory), where the changes after it find it warm.\n"
        );
        println!("| policies | dataplane | what is timed | one policy changed |");
        println!("|---|---|---|---|");
        for (index, update) in updates {
            let policies = scales[*index].policies;
            for (variant, (in_order, what)) in &update.times {
                let mut samples = in_order.clone();
                let (_, hi) = min_max(&samples);
                println!(
                    "| {policies} | {} | {what} | {:.1} ({hi:.1}) |",
                    variant.name(),
                    median(&mut samples)
                );
                if *variant == Variant::Palisade
                    && let [first, rest @ ..] = in_order.as_slice()
                    && !rest.is_empty()
                {
                    let mut rest = rest.to_vec();
                    let (_, rest_hi) = min_max(&rest);
                    let since = if self.plan.updates_only {
                        "untouched since the full compile"
                    } else {
                        "untouched through the traffic rounds"
                    };
                    println!(
                        "| {policies} | {} | the same: the first change (its compiled state {since}), then the other {} | {first:.1}, then {:.1} ({rest_hi:.1}) |",
                        variant.name(),
                        rest.len(),
                        median(&mut rest)
                    );
                }
            }
            let step = |of: fn(&PublishTimes) -> f64| {
                median(&mut update.agent.iter().map(of).collect::<Vec<f64>>())
            };
            let mut render = update.render_ms.clone();
            println!(
                "| {policies} | (b) palisade | the store's commit (appended and synced), then the agent's log: its compile / its write, up to the flip / its reconcile's start to the flip / to its log line (after naming the new outcomes and rules); {} of {changes} compiled in full | {:.1}, then {:.1} / {:.1} / {:.1} / {:.1} |",
                update.full_compiles,
                median(&mut update.commit_ms.clone()),
                step(|t| t.compile),
                step(|t| t.write),
                step(|t| t.flip),
                step(|t| t.total)
            );
            println!(
                "| {policies} | (c), (c'), (d) | rendering the new policy in full (this generator; Felix computes changes incrementally) | {:.0} |",
                median(&mut render)
            );
        }
    }

    /// CRR and RR against the number of policies, a line per dataplane, over the generated
    /// worlds (the all-in-front world is in the tables only).
    fn plot(&self, path: &Path) {
        let root = SVGBackend::new(path, (1100, 440)).into_drawing_area();
        root.fill(&WHITE).unwrap();
        let panels = root.split_evenly((1, 2));
        for (panel, kind) in panels.iter().zip([Kind::Crr, Kind::Rr]) {
            let series: Vec<(Variant, Vec<(f64, f64)>)> = self
                .plan
                .variants
                .iter()
                .map(|&v| {
                    let points = self
                        .plan
                        .scales
                        .iter()
                        .enumerate()
                        .filter(|(_, s)| !s.all_in_front)
                        .map(|(i, s)| (s.policies as f64, median(&mut self.rates(i, v, kind))))
                        .filter(|(_, r)| r.is_finite())
                        .collect();
                    (v, points)
                })
                .collect();
            let top = series
                .iter()
                .flat_map(|(_, p)| p.iter().map(|(_, r)| *r))
                .fold(1.0f64, f64::max)
                * 1.1;
            let mut chart = ChartBuilder::on(panel)
                .caption(
                    format!("{} (transactions/s)", kind.name()),
                    ("sans-serif", 20),
                )
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(60)
                .build_cartesian_2d((5f64..20_000f64).log_scale(), 0f64..top)
                .unwrap();
            chart
                .configure_mesh()
                .x_desc("policies")
                .y_desc("transactions/s")
                .x_label_formatter(&|x| format!("{x:.0}"))
                .y_label_formatter(&|y| format!("{y:.0}"))
                .draw()
                .unwrap();
            for (variant, points) in series {
                let color = variant.color();
                chart
                    .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                    .unwrap()
                    .label(variant.name())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                    });
                chart
                    .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                    .unwrap();
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .position(SeriesLabelPosition::LowerLeft)
                .draw()
                .unwrap();
        }
        root.present().unwrap();
    }
}
