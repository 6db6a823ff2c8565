//! `palisade trace`: evaluates the stored resources with the reference evaluator.
//!
//! PLACEHOLDER: being written.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;

use crate::store::Datastore;

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// The source: a workloadEndpoint's name, or an IP address.
    #[arg(long)]
    pub src: String,
    /// The destination: a workloadEndpoint's name, or an IP address.
    #[arg(long)]
    pub dst: String,
    /// tcp, udp, icmp, icmpv6, sctp, udplite or a protocol number.
    #[arg(long)]
    pub protocol: String,
    #[arg(long)]
    pub sport: Option<u16>,
    #[arg(long)]
    pub dport: Option<u16>,
    #[arg(long = "icmp-type")]
    pub icmp_type: Option<u8>,
    #[arg(long = "icmp-code")]
    pub icmp_code: Option<u8>,
}

pub async fn run(_args: TraceArgs, _store: Arc<dyn Datastore>) -> ExitCode {
    ExitCode::FAILURE
}
