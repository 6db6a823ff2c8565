//! `palisade docker-plugin`: the Docker network and IPAM plugin on its own, for hosts
//! where the agent runs elsewhere or without it (`palisade agent` serves the same plugin).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::stop_signals::StopSignals;
use crate::docker::{self, PluginOptions, PluginServer};
use crate::log;

/// Serve the Docker network and IPAM driver (`docker network create --driver palisade
/// --ipam-driver palisade NAME`) until SIGTERM or SIGINT.
#[derive(Debug, Args)]
pub struct DockerPluginArgs {
    /// This node's name, the `node` of the endpoints the plugin writes (default: the host
    /// name).
    #[arg(long, env = "PALISADE_NODE")]
    pub node: Option<String>,
    #[command(flatten)]
    pub plugin: PluginFlags,
}

/// Where the plugin listens and where it finds Docker; shared with `palisade agent`.
#[derive(Debug, Clone, Args)]
pub struct PluginFlags {
    /// The plugin's socket. Docker finds plugins in /run/docker/plugins and knows each by
    /// its socket's name without `.sock`.
    #[arg(
        long = "socket",
        value_name = "PATH",
        env = "PALISADE_DOCKER_PLUGIN_SOCKET",
        default_value = docker::DEFAULT_SOCKET
    )]
    pub socket: PathBuf,
    /// The Docker Engine API socket, read for network names and container labels.
    #[arg(long, value_name = "PATH", default_value = docker::DEFAULT_DOCKER_SOCKET)]
    pub docker_socket: PathBuf,
}

impl PluginFlags {
    pub fn options(&self, node: &str) -> PluginOptions {
        PluginOptions {
            socket: self.socket.clone(),
            node: node.to_string(),
            docker_socket: self.docker_socket.clone(),
        }
    }
}

pub async fn run(args: DockerPluginArgs, datastore_url: &str) -> ExitCode {
    let node = args.node.unwrap_or_else(super::agent::host_name);
    let store = match crate::store::open(datastore_url).await {
        Ok(store) => store,
        Err(e) => {
            log::error(
                "cannot open the datastore",
                &[("url", &datastore_url), ("error", &e)],
            );
            return ExitCode::FAILURE;
        }
    };
    let mut stop = match StopSignals::install() {
        Ok(stop) => stop,
        Err(e) => {
            log::error("cannot install signal handlers", &[("error", &e)]);
            return ExitCode::FAILURE;
        }
    };
    let server = match PluginServer::bind(args.plugin.options(&node), store) {
        Ok(server) => server,
        Err(e) => {
            log::error("cannot start the docker plugin", &[("error", &e)]);
            return ExitCode::FAILURE;
        }
    };
    server.run(stop.recv()).await;
    ExitCode::SUCCESS
}
