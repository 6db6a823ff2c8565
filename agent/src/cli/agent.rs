//! `palisade agent`: the node agent.
//!
//! PLACEHOLDER: being written.

use std::process::ExitCode;

use clap::Args;

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// This node's name (defaults to the host name).
    #[arg(long, env = "PALISADE_NODE")]
    pub node: Option<String>,
}

pub async fn run(_args: AgentArgs, _datastore_url: String) -> ExitCode {
    ExitCode::FAILURE
}
