//! `palisade flows`: the verdicts the running agent reports (new flows allowed, drops,
//! `log` rules), read from its socket in the run directory. Without `--follow` it prints
//! the agent's recent window (the last few thousand records) and exits; with it, it goes
//! on until interrupted. Losses are printed where they happened in the stream.
//!
//! The agent sends addresses; this command names them (workload names, Docker container
//! names, from the datastore and the Docker API, as `stats` and `trace` do) and applies the
//! filters, so that names and filters mean exactly what they mean in the other commands.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::endpoint_lookup::{self, ContainerNames, display_name};
use crate::dataplane::rule_names::DEFAULT_RUN_DIR;
use crate::flows::record::{Flow, Lost, LostSource, StreamItem, Verdict};
use crate::flows::socket::{Request, path_in};
use crate::model::{Kind, Resource, WorkloadEndpoint};
use crate::store::Datastore;

/// Show the verdicts the running agent reports: new flows allowed, drops, `log` rules.
#[derive(Debug, Args)]
pub struct FlowsArgs {
    /// Go on printing new records as they come (until interrupted); without it, print
    /// what the agent holds of the recent past and exit.
    #[arg(long)]
    pub follow: bool,
    /// Only flows from or to this workload endpoint: its name, NODE/NAME,
    /// NODE/ORCHESTRATOR/WORKLOAD/NAME, a Docker container's name or a unique prefix of its
    /// EndpointID.
    #[arg(long, value_name = "ENDPOINT")]
    pub endpoint: Option<String>,
    /// Only flows with this verdict.
    #[arg(long, value_enum)]
    pub verdict: Option<Verdict>,
    /// Only flows decided by a rule of this policy or profile.
    #[arg(long, value_name = "NAME")]
    pub policy: Option<String>,
    /// text (the default) or json (one object per line).
    #[arg(short = 'o', long, value_name = "OUTPUT", default_value = "text")]
    pub output: String,
    /// The agent's run-time directory (as given to `palisade agent`).
    #[arg(long, default_value = DEFAULT_RUN_DIR)]
    pub run_dir: PathBuf,
}

/// How often names are looked up again when an address has none (a container started
/// since).
const RENAME_INTERVAL: Duration = Duration::from_secs(2);

pub async fn run(args: FlowsArgs, url: &str) -> ExitCode {
    let json = match args.output.as_str() {
        "text" => false,
        "json" => true,
        other => {
            eprintln!("palisade flows: --output '{other}': use text or json");
            return ExitCode::FAILURE;
        }
    };
    let store = crate::store::open(url).await;
    if let Err(e) = &store {
        if args.endpoint.is_some() {
            eprintln!("palisade flows: --endpoint needs the datastore: {e}");
            return ExitCode::FAILURE;
        }
        eprintln!("palisade flows: cannot open the datastore ({e}); showing addresses only");
    }
    let mut names = Names::default();
    if let Ok(store) = &store {
        names.refresh(store.as_ref()).await;
    }
    let only = match &args.endpoint {
        None => None,
        Some(text) => match names.addresses_of(text) {
            Ok(addresses) => Some(addresses),
            Err(e) => {
                eprintln!("palisade flows: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let filter = Filter {
        addresses: only,
        verdict: args.verdict,
        policy: args.policy.clone(),
    };

    let path = path_in(&args.run_dir);
    let stream = match UnixStream::connect(&path).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "palisade flows: cannot connect to the agent at {}: {e}\nhint: is `palisade agent` \
                 running (as root, with the same --run-dir)? The socket is root's only.",
                path.display()
            );
            return ExitCode::FAILURE;
        }
    };
    let (read, mut write) = stream.into_split();
    let request = Request {
        follow: args.follow,
    };
    let mut line = serde_json::to_vec(&request).unwrap_or_default();
    line.push(b'\n');
    if let Err(e) = write.write_all(&line).await {
        eprintln!("palisade flows: cannot ask the agent: {e}");
        return ExitCode::FAILURE;
    }
    let mut lines = BufReader::new(read).lines();
    let mut out = std::io::stdout().lock();
    if !json {
        let _ = writeln!(out, "{}", text_header());
    }
    loop {
        let line = match lines.next_line().await {
            Ok(Some(line)) => line,
            Ok(None) => return ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("palisade flows: reading from the agent failed: {e}");
                return ExitCode::FAILURE;
            }
        };
        let mut item: StreamItem = match serde_json::from_str(&line) {
            Ok(item) => item,
            Err(e) => {
                eprintln!(
                    "palisade flows: the agent sent a line this command cannot read ({e}); is it another release?"
                );
                return ExitCode::FAILURE;
            }
        };
        if let StreamItem::Flow(flow) = &mut item {
            if !filter.wants(flow) {
                continue;
            }
            if let Ok(store) = &store {
                names.name(flow, store.as_ref()).await;
            }
        }
        let printed = if json {
            serde_json::to_string(&item).map(|s| writeln!(out, "{s}"))
        } else {
            Ok(writeln!(out, "{}", text_line(&item)))
        };
        if !matches!(printed, Ok(Ok(()))) || out.flush().is_err() {
            return ExitCode::FAILURE;
        }
    }
}

/// The filters, applied here: they need the names, which only this side has.
struct Filter {
    addresses: Option<BTreeSet<IpAddr>>,
    verdict: Option<Verdict>,
    policy: Option<String>,
}

impl Filter {
    fn wants(&self, flow: &Flow) -> bool {
        self.addresses
            .as_ref()
            .is_none_or(|a| a.contains(&flow.src.address) || a.contains(&flow.dst.address))
            && self.verdict.is_none_or(|v| v == flow.verdict)
            && self
                .policy
                .as_ref()
                .is_none_or(|p| flow.policy.as_ref() == Some(p))
    }
}

/// Workload endpoints by address, as people know them.
#[derive(Default)]
struct Names {
    endpoints: Vec<WorkloadEndpoint>,
    containers: ContainerNames,
    by_address: BTreeMap<IpAddr, String>,
    refreshed: Option<Instant>,
}

impl Names {
    async fn refresh(&mut self, store: &dyn Datastore) {
        self.refreshed = Some(Instant::now());
        let Ok(listed) = store.list(Some(Kind::WorkloadEndpoint)).await else {
            return;
        };
        self.endpoints = listed
            .resources
            .into_iter()
            .filter_map(|r| match r {
                Resource::WorkloadEndpoint(w) => Some(w),
                _ => None,
            })
            .collect();
        let all: Vec<&WorkloadEndpoint> = self.endpoints.iter().collect();
        self.containers = ContainerNames::of(&all).await;
        self.by_address.clear();
        for w in &self.endpoints {
            let name = display_name(w, &self.containers);
            for net in &w.spec.ip_networks {
                // An address two endpoints claim is named by both.
                self.by_address
                    .entry(net.addr())
                    .and_modify(|n| {
                        n.push_str(" | ");
                        n.push_str(&name);
                    })
                    .or_insert_with(|| name.clone());
            }
        }
    }

    fn addresses_of(&self, text: &str) -> Result<BTreeSet<IpAddr>, String> {
        let all: Vec<&WorkloadEndpoint> = self.endpoints.iter().collect();
        let found = endpoint_lookup::find(text, &all, &self.containers);
        match found.len() {
            0 => Err(format!(
                "--endpoint '{text}': no workload endpoint has that name"
            )),
            1 => Ok(found[0].spec.ip_networks.iter().map(|n| n.addr()).collect()),
            _ => Err(endpoint_lookup::ambiguity("--endpoint", text, &found)),
        }
    }

    /// Names both sides; an address without a name has the names looked up again (not
    /// more often than [`RENAME_INTERVAL`]).
    async fn name(&mut self, flow: &mut Flow, store: &dyn Datastore) {
        let unknown = |n: &Names, a: &IpAddr| !n.by_address.contains_key(a);
        if (unknown(self, &flow.src.address) || unknown(self, &flow.dst.address))
            && self
                .refreshed
                .is_none_or(|t| t.elapsed() >= RENAME_INTERVAL)
        {
            self.refresh(store).await;
        }
        flow.src.endpoint = self.by_address.get(&flow.src.address).cloned();
        flow.dst.endpoint = self.by_address.get(&flow.dst.address).cloned();
    }
}

fn text_header() -> String {
    format!(
        "{:<30}  {:<7}  {:<8}  {:<7}  {:<40}  {:<40}  {:<6}  {}",
        "TIME", "VERDICT", "EVENT", "DIR", "SOURCE", "DESTINATION", "PROTO", "RULE (REASON)"
    )
}

fn side(peer: &crate::flows::record::Peer) -> String {
    let address = match peer.port {
        Some(port) => std::net::SocketAddr::new(peer.address, port).to_string(),
        None => peer.address.to_string(),
    };
    match &peer.endpoint {
        Some(name) => format!("{name} {address}"),
        None => address,
    }
}

fn text_line(item: &StreamItem) -> String {
    match item {
        StreamItem::Flow(f) => {
            let event = match f.event {
                crate::flows::record::FlowEvent::NewFlow => "new-flow",
                crate::flows::record::FlowEvent::Drop => "drop",
                crate::flows::record::FlowEvent::Log => "log",
            };
            let verdict = match f.verdict {
                Verdict::Allow => "allow",
                Verdict::Deny => "deny",
            };
            let protocol = match f.icmp {
                Some((t, c)) => format!("{} {t}/{c}", f.protocol),
                None => f.protocol.clone(),
            };
            let mut rule = f.rule.clone();
            if let Some(reason) = &f.reason {
                rule.push_str(&format!(" ({reason})"));
            }
            if !f.logged_by.is_empty() {
                rule.push_str(&format!(" [logged by {}]", f.logged_by.join("; ")));
            }
            format!(
                "{:<30}  {:<7}  {:<8}  {:<7}  {:<40}  {:<40}  {:<6}  {}",
                f.time,
                verdict,
                event,
                f.direction,
                side(&f.src),
                side(&f.dst),
                protocol,
                rule
            )
        }
        StreamItem::Lost(l) => lost_line(l),
    }
}

fn lost_line(lost: &Lost) -> String {
    match lost.source {
        LostSource::Kernel => format!(
            "{:<30}  LOST {} events: the kernel's ring buffer was full (between {} and {})",
            lost.time,
            lost.events,
            lost.since.as_deref().unwrap_or("?"),
            lost.time
        ),
        LostSource::Client => format!(
            "{:<30}  LOST {} records: this command read too slowly for the agent",
            lost.time, lost.events
        ),
    }
}
