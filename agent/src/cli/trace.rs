//! `palisade trace`: which verdict the stored policy gives a packet, and why, computed by
//! the reference evaluator.

use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;

use crate::model::{Protocol, ResourceKey, WorkloadEndpoint};
use crate::policy::{Decision, Model, Packet, has_ports};
use crate::store::Datastore;

/// The source port used when `--sport` is not given: the first IANA ephemeral port.
const DEFAULT_SOURCE_PORT: u16 = 49152;

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// The source: a workloadEndpoint's name, or an IP address.
    #[arg(long)]
    pub src: String,
    /// The destination: a workloadEndpoint's name, or an IP address.
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
    match trace(&args, &model) {
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
    let protocol = parse_protocol(&args.protocol)?;
    let src = resolve("--src", &args.src, model)?;
    let dst = resolve("--dst", &args.dst, model)?;
    let (src_ip, dst_ip) = addresses(&src, &dst)?;
    let ports = if has_ports(protocol) {
        let dport = args
            .dport
            .ok_or_else(|| format!("--dport is required for protocol {}", args.protocol))?;
        (args.sport.unwrap_or(DEFAULT_SOURCE_PORT), dport)
    } else {
        (0, 0)
    };
    let echo_request = if src_ip.is_ipv4() { 8 } else { 128 };
    let icmp = (
        args.icmp_type.unwrap_or(echo_request),
        args.icmp_code.unwrap_or(0),
    );
    let packet = Packet::new(src_ip, dst_ip, protocol, ports, icmp);

    let key = |p: &Peer| match p {
        Peer::Workload { key, .. } => Some(key.clone()),
        Peer::Address(_) => None,
    };
    let flow = model.evaluate_flow(key(&src).as_ref(), key(&dst).as_ref(), &packet);

    let mut out = format!("packet: {packet}\n");
    out += &side("source", &src, "egress", flow.egress.as_ref());
    out += &side("destination", &dst, "ingress", flow.ingress.as_ref());
    out += &format!("verdict: {}\n", flow.verdict());
    Ok(out)
}

fn side(role: &str, peer: &Peer, direction: &str, decision: Option<&Decision>) -> String {
    match (peer, decision) {
        (Peer::Workload { key, endpoint, .. }, Some(d)) => {
            let mut s = format!(
                "{role}: workloadEndpoint {} ({key})\n  {direction}: {d}\n",
                endpoint.metadata.name
            );
            for rule in &d.logged {
                s += &format!("  logged by {rule}\n");
            }
            s
        }
        (Peer::Workload { key, .. }, None) => {
            format!("{role}: {key}\n  {direction}: not evaluated\n")
        }
        (Peer::Address(ip), _) => {
            format!("{role}: {ip} (not a workload endpoint: no {direction} policy applies there)\n")
        }
    }
}

fn parse_protocol(text: &str) -> Result<u8, String> {
    let protocol = match text.parse::<i64>() {
        Ok(n) => Protocol::Number(n),
        Err(_) => Protocol::Name(text.to_string()),
    };
    protocol.number().ok_or_else(|| {
        format!("--protocol '{text}': use tcp, udp, icmp, icmpv6, sctp, udplite or a number 1-255")
    })
}

/// An IP address, or the name of a workload endpoint.
fn resolve<'a>(option: &str, text: &str, model: &'a Model) -> Result<Peer<'a>, String> {
    let matches: Vec<&WorkloadEndpoint> = match text.parse::<IpAddr>() {
        Ok(ip) => model
            .workload_endpoints()
            .filter(|w| w.spec.ip_networks.iter().any(|n| n.addr() == ip))
            .collect(),
        Err(_) => model
            .workload_endpoints()
            .filter(|w| w.metadata.name == text)
            .collect(),
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
        (several, _) => {
            let keys: Vec<String> = several.iter().map(|w| w.key().to_string()).collect();
            Err(format!(
                "{option} '{text}' matches several workload endpoints: {}",
                keys.join(", ")
            ))
        }
    }
}

/// The packet's addresses: an endpoint given by name uses its address of the family the
/// other side has (IPv4 when both sides are endpoints with both families); one given by
/// address uses that address.
fn addresses(src: &Peer, dst: &Peer) -> Result<(IpAddr, IpAddr), String> {
    let ips = |p: &Peer| -> Vec<IpAddr> {
        match p {
            Peer::Workload {
                address: Some(ip), ..
            } => vec![*ip],
            Peer::Workload { endpoint, .. } => {
                endpoint.spec.ip_networks.iter().map(|n| n.addr()).collect()
            }
            Peer::Address(ip) => vec![*ip],
        }
    };
    let (s, d) = (ips(src), ips(dst));
    for want_v4 in [true, false] {
        let pick = |v: &[IpAddr]| v.iter().copied().find(|ip| ip.is_ipv4() == want_v4);
        if let (Some(a), Some(b)) = (pick(&s), pick(&d)) {
            return Ok((a, b));
        }
    }
    Err("the source and destination have no IP version in common".to_string())
}
