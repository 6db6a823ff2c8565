//! The Docker network plugin: a libnetwork remote network driver and IPAM driver on one
//! unix socket, as Calico's libnetwork plugin, writing to palisade's datastore.
//!
//! ```text
//! docker network create --driver palisade --ipam-driver palisade NAME
//!   IpamDriver.RequestPool      a configured ipPool (--subnet) or all enabled pools
//!   NetworkDriver.CreateNetwork checks options; profile NAME created unless it exists
//! docker run --network NAME --label palisade.label.role=db ...
//!   IpamDriver.RequestAddress   ipAllocation created (atomic claim)
//!   NetworkDriver.CreateEndpoint workloadEndpoint written (profiles [NAME])
//!   NetworkDriver.Join          labels from the container; veth pair + host routes
//! docker rm -f / docker network rm: Leave, DeleteEndpoint, ReleaseAddress undo it all
//! ```
//!
//! Files: `protocol` (the JSON bodies), `listener` (the socket), `server` (HTTP),
//! `plugin` (routing and state), `network` and `ipam` (the two drivers), `allocator`
//! (address claims), `endpoint` and `profile` (the resources written),
//! `container_labels` and `docker_api` (what only the Docker API tells).

mod allocator;
mod container_labels;
pub mod docker_api;
mod endpoint;
mod error;
mod ipam;
mod listener;
mod network;
mod plugin;
mod profile;
pub mod protocol;
mod server;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use container_labels::LABEL_PREFIX;
pub use docker_api::DEFAULT_DOCKER_SOCKET;
pub use endpoint::{ORCHESTRATOR, WORKLOAD, derived_mac, new_endpoint};
pub use error::PluginError;
pub use ipam::{AUTO_POOL_IPV4, AUTO_POOL_IPV6, DEFAULT_POOL_IPV4, DEFAULT_POOL_IPV6};
pub use network::check_create_network;
pub use profile::default_network_profile;

use crate::log;
use crate::store::Datastore;
use listener::PluginSocket;
use plugin::Plugin;

/// Where Docker looks for a plugin named `palisade`.
pub const DEFAULT_SOCKET: &str = "/run/docker/plugins/palisade.sock";

/// How to run the plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginOptions {
    /// The socket to serve on; Docker knows the plugin by its file name without `.sock`.
    pub socket: PathBuf,
    /// This node's name, the `node` of the endpoints the plugin writes.
    pub node: String,
    /// The Docker Engine API socket, for network names and container labels.
    pub docker_socket: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("docker plugin socket {path}: {source}")]
    Socket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("docker plugin socket {0}: another plugin is serving on it")]
    AlreadyServed(PathBuf),
    #[error("docker plugin: {0}")]
    Netlink(#[from] crate::netplumb::Error),
}

/// A plugin listening on its socket, not yet answering. Binding first lets a caller
/// report a socket problem before it goes on.
pub struct PluginServer {
    socket: PluginSocket,
    plugin: Arc<Plugin>,
}

impl PluginServer {
    /// Listens on `options.socket`. Needs a tokio runtime.
    pub fn bind(options: PluginOptions, store: Arc<dyn Datastore>) -> Result<Self, ServeError> {
        let rtnl = crate::netplumb::Rtnl::host()?;
        let socket = PluginSocket::bind(&options.socket)?;
        let plugin = Plugin {
            store,
            node: options.node,
            driver_name: driver_name(&options.socket),
            docker: docker_api::DockerApi::new(&options.docker_socket),
            rtnl,
        };
        Ok(PluginServer {
            socket,
            plugin: Arc::new(plugin),
        })
    }

    /// The name to give `docker network create --driver` and `--ipam-driver`.
    pub fn driver_name(&self) -> &str {
        &self.plugin.driver_name
    }

    pub fn socket(&self) -> &Path {
        self.socket.path()
    }

    /// Answers requests until `shutdown` completes; the socket is removed on return.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        log::info(
            "docker plugin serving",
            &[
                ("socket", &self.socket.path().display()),
                ("driver", &self.plugin.driver_name),
                ("node", &self.plugin.node),
                ("docker_api", &self.plugin.docker.socket().display()),
            ],
        );
        server::run(&self.socket.listener, Arc::clone(&self.plugin), shutdown).await;
        log::info(
            "docker plugin stopped",
            &[("socket", &self.socket.path().display())],
        );
    }
}

/// Binds and serves until `shutdown` completes: what `palisade docker-plugin` and the
/// agent run.
pub async fn serve(
    options: PluginOptions,
    store: Arc<dyn Datastore>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    PluginServer::bind(options, store)?.run(shutdown).await;
    Ok(())
}

/// Docker names a plugin after its socket: `/run/docker/plugins/NAME.sock` is `NAME`.
fn driver_name(socket: &Path) -> String {
    socket
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "palisade".to_string())
}
