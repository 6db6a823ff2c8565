//! `palisade trace`: which verdict the stored policy gives a packet, and why, computed by
//! the reference evaluator.

use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;

use crate::model::{ResourceKey, WorkloadEndpoint};
use crate::policy::{Decision, Model};
use crate::reach::probe::Probe;
use crate::store::Datastore;

use super::endpoint_lookup::{self, ContainerNames, endpoint_path};

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// The source: a workloadEndpoint (its name, NODE/ORCHESTRATOR/WORKLOAD/NAME or
    /// NODE/NAME, a Docker container's name or a unique prefix of its EndpointID), or an IP
    /// address.
    #[arg(long)]
    pub src: String,
    /// The destination, named as the source.
    #[arg(long)]
    pub dst: String,
    /// tcp, udp, icmp, icmpv6, sctp, udplite or a protocol number (1-255).
    #[arg(long)]
    pub protocol: String,
    /// Source port (tcp, udp, sctp, udplite; default 49152).
    #[arg(long)]
    pub sport: Option<u16>,
    /// Destination port (required for tcp, udp, sctp, udplite).
    #[arg(long)]
    pub dport: Option<u16>,
    /// ICMP type (icmp, icmpv6; default 8 for icmp and 128 for icmpv6: echo request).
    #[arg(long = "icmp-type")]
    pub icmp_type: Option<u8>,
    /// ICMP code (default 0).
    #[arg(long = "icmp-code")]
    pub icmp_code: Option<u8>,
}

/// One end of the traced packet.
enum Peer<'a> {
    Workload {
        key: ResourceKey,
        endpoint: &'a WorkloadEndpoint,
        /// The endpoint's address the packet uses, when it was given as one.
        address: Option<IpAddr>,
    },
    Address(IpAddr),
}

pub async fn run(args: TraceArgs, store: Arc<dyn Datastore>) -> ExitCode {
    let snapshot = match store.list(None).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("Failed to read the datastore: {e}");
            return ExitCode::FAILURE;
        }
    };
    let model = Model::new(snapshot.resources);
    let endpoints: Vec<&WorkloadEndpoint> = model.workload_endpoints().collect();
    let containers = ContainerNames::of(&endpoints).await;
    match trace_named(&args, &model, &containers) {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// The whole report, ending with the line `verdict: allow` or `verdict: deny`.
pub fn trace(args: &TraceArgs, model: &Model) -> Result<String, String> {
    trace_named(args, model, &ContainerNames::default())
}

/// [`trace`], knowing Docker containers' names.
pub fn trace_named(
    args: &TraceArgs,
    model: &Model,
    containers: &ContainerNames,
) -> Result<String, String> {
    let probe = Probe::parse(
        &args.protocol,
        args.sport,
        args.dport,
        args.icmp_type,
        args.icmp_code,
    )?;
    let src = resolve("--src", &args.src, model, containers)?;
    let dst = resolve("--dst", &args.dst, model, containers)?;
    let packet = probe.packet(&addresses(&src), &addresses(&dst))?;

    let key = |p: &Peer| match p {
        Peer::Workload { key, .. } => Some(key.clone()),
        Peer::Address(_) => None,
    };
    let flow = model.evaluate_flow(key(&src).as_ref(), key(&dst).as_ref(), &packet);

    let mut out = format!("packet: {packet}\n");
    out += &side("source", &src, "egress", flow.egress.as_ref(), containers);
    out += &side(
        "destination",
        &dst,
        "ingress",
        flow.ingress.as_ref(),
        containers,
    );
    out += &format!("verdict: {}\n", flow.verdict());
    Ok(out)
}

fn side(
    role: &str,
    peer: &Peer,
    direction: &str,
    decision: Option<&Decision>,
    containers: &ContainerNames,
) -> String {
    match (peer, decision) {
        (Peer::Workload { endpoint, .. }, Some(d)) => {
            let mut s = format!(
                "{role}: workloadEndpoint {} ({})\n  {direction}: {d}\n",
                endpoint_lookup::display_name(endpoint, containers),
                endpoint_path(endpoint)
            );
            for rule in &d.logged {
                s += &format!("  logged by {rule}\n");
            }
            s
        }
        (Peer::Workload { endpoint, .. }, None) => {
            format!(
                "{role}: workloadEndpoint {}\n  {direction}: not evaluated\n",
                endpoint_path(endpoint)
            )
        }
        (Peer::Address(ip), _) => {
            format!("{role}: {ip} (not a workload endpoint: no {direction} policy applies there)\n")
        }
    }
}

/// An IP address, or a workload endpoint named as [`endpoint_lookup::find`] reads names.
fn resolve<'a>(
    option: &str,
    text: &str,
    model: &'a Model,
    containers: &ContainerNames,
) -> Result<Peer<'a>, String> {
    let endpoints: Vec<&WorkloadEndpoint> = model.workload_endpoints().collect();
    let matches: Vec<&WorkloadEndpoint> = match text.parse::<IpAddr>() {
        Ok(ip) => endpoints
            .into_iter()
            .filter(|w| w.spec.ip_networks.iter().any(|n| n.addr() == ip))
            .collect(),
        Err(_) => endpoint_lookup::find(text, &endpoints, containers),
    };
    match (matches.as_slice(), text.parse::<IpAddr>()) {
        ([endpoint], address) => Ok(Peer::Workload {
            key: endpoint.key(),
            endpoint,
            address: address.ok(),
        }),
        ([], Ok(ip)) => Ok(Peer::Address(ip)),
        ([], Err(_)) => Err(format!(
            "{option} '{text}': no workloadEndpoint has that name (and it is not an IP address)"
        )),
        (several, _) => Err(endpoint_lookup::ambiguity(option, text, several)),
    }
}

/// The addresses a peer may use: the one it was named by, or all of an endpoint's.
fn addresses(peer: &Peer) -> Vec<IpAddr> {
    match peer {
        Peer::Workload {
            address: Some(ip), ..
        } => vec![*ip],
        Peer::Workload { endpoint, .. } => {
            endpoint.spec.ip_networks.iter().map(|n| n.addr()).collect()
        }
        Peer::Address(ip) => vec![*ip],
    }
}
