//! One plugin instance: its state, and which handler answers which `/<Interface>.<Method>`.

use std::sync::Arc;

use serde::Serialize;
use serde_json::json;

use super::docker_api::DockerApi;
use super::error::PluginError;
use super::protocol::{
    ActivateResponse, EndpointOperInfoResponse, EndpointRequest, ReleasePoolRequest, decode,
};
use super::{ipam, network};
use crate::log;
use crate::netplumb::Rtnl;
use crate::store::Datastore;

/// What every handler works with.
pub struct Plugin {
    pub store: Arc<dyn Datastore>,
    /// This node's name: the `node` of the endpoints written here.
    pub node: String,
    /// The name Docker knows the plugin by (its socket's file name), for messages.
    pub driver_name: String,
    pub docker: DockerApi,
    /// A netlink connection in the host namespace, for the veth pairs.
    pub rtnl: Rtnl,
}

/// The protocol interfaces, which differ in how they report failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interface {
    Plugin,
    NetworkDriver,
    IpamDriver,
}

impl Interface {
    /// The JSON field of a failure's message: libnetwork's remote network driver reads
    /// `Err`, its remote IPAM driver `Error`.
    fn error_field(self) -> &'static str {
        match self {
            Interface::IpamDriver => "Error",
            Interface::Plugin | Interface::NetworkDriver => "Err",
        }
    }
}

/// An HTTP answer: status and JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    fn json(value: &impl Serialize) -> Reply {
        match serde_json::to_vec(value) {
            Ok(body) => Reply { status: 200, body },
            Err(e) => Reply {
                status: 500,
                body: json!({ "Err": format!("palisade: cannot encode the reply: {e}") })
                    .to_string()
                    .into_bytes(),
            },
        }
    }

    fn not_found(path: &str) -> Reply {
        Reply {
            status: 404,
            body: json!({ "Err": format!("palisade does not implement {path}") })
                .to_string()
                .into_bytes(),
        }
    }

    fn error(interface: Interface, error: &PluginError) -> Reply {
        let status = match error {
            PluginError::BadRequest(_) => 400,
            PluginError::Failed(_) => 200,
        };
        let mut body = serde_json::Map::new();
        body.insert(interface.error_field().into(), error.message().into());
        Reply {
            status,
            body: serde_json::Value::Object(body).to_string().into_bytes(),
        }
    }
}

/// The methods palisade answers, by request path.
const METHODS: &[(&str, Interface)] = &[
    ("/Plugin.Activate", Interface::Plugin),
    ("/NetworkDriver.GetCapabilities", Interface::NetworkDriver),
    ("/NetworkDriver.CreateNetwork", Interface::NetworkDriver),
    ("/NetworkDriver.DeleteNetwork", Interface::NetworkDriver),
    ("/NetworkDriver.CreateEndpoint", Interface::NetworkDriver),
    ("/NetworkDriver.EndpointOperInfo", Interface::NetworkDriver),
    ("/NetworkDriver.DeleteEndpoint", Interface::NetworkDriver),
    ("/NetworkDriver.Join", Interface::NetworkDriver),
    ("/NetworkDriver.Leave", Interface::NetworkDriver),
    (
        "/NetworkDriver.ProgramExternalConnectivity",
        Interface::NetworkDriver,
    ),
    (
        "/NetworkDriver.RevokeExternalConnectivity",
        Interface::NetworkDriver,
    ),
    ("/NetworkDriver.DiscoverNew", Interface::NetworkDriver),
    ("/NetworkDriver.DiscoverDelete", Interface::NetworkDriver),
    ("/IpamDriver.GetCapabilities", Interface::IpamDriver),
    ("/IpamDriver.GetDefaultAddressSpaces", Interface::IpamDriver),
    ("/IpamDriver.RequestPool", Interface::IpamDriver),
    ("/IpamDriver.ReleasePool", Interface::IpamDriver),
    ("/IpamDriver.RequestAddress", Interface::IpamDriver),
    ("/IpamDriver.ReleaseAddress", Interface::IpamDriver),
];

impl Plugin {
    /// Answers one request. Unknown paths get 404, which libnetwork reads as "not
    /// implemented".
    pub async fn handle(self: &Arc<Self>, path: &str, body: &[u8]) -> Reply {
        let Some(&(_, interface)) = METHODS.iter().find(|(p, _)| *p == path) else {
            log::warn("docker plugin: unknown method", &[("path", &path)]);
            return Reply::not_found(path);
        };
        let method = &path[1..];
        match self.dispatch(path, body).await {
            Ok(reply) => {
                log::info(
                    "docker plugin request",
                    &[("method", &method), ("outcome", &"ok")],
                );
                reply
            }
            Err(error) => {
                log::warn(
                    "docker plugin request failed",
                    &[("method", &method), ("error", &error)],
                );
                Reply::error(interface, &error)
            }
        }
    }

    async fn dispatch(self: &Arc<Self>, path: &str, body: &[u8]) -> Result<Reply, PluginError> {
        let empty = json!({});
        Ok(match path {
            "/Plugin.Activate" => Reply::json(&ActivateResponse {
                implements: vec!["NetworkDriver", "IpamDriver"],
            }),
            "/NetworkDriver.GetCapabilities" => Reply::json(&network::capabilities()),
            "/NetworkDriver.CreateNetwork" => {
                let request = decode(path, body)?;
                network::check_create_network(&request, &self.driver_name)?;
                let plugin = Arc::clone(self);
                tokio::spawn(async move {
                    network::create_profile_when_named(&plugin, &request.network_id).await;
                });
                Reply::json(&empty)
            }
            // The network's profile stays: it is the operator's policy, and a network of
            // the same name created later uses it again.
            "/NetworkDriver.DeleteNetwork" => Reply::json(&empty),
            "/NetworkDriver.CreateEndpoint" => {
                Reply::json(&network::create_endpoint(self, decode(path, body)?).await?)
            }
            "/NetworkDriver.EndpointOperInfo" => {
                let _: EndpointRequest = decode(path, body)?;
                Reply::json(&EndpointOperInfoResponse {
                    value: Default::default(),
                })
            }
            "/NetworkDriver.DeleteEndpoint" => {
                network::delete_endpoint(self, decode(path, body)?).await?;
                Reply::json(&empty)
            }
            "/NetworkDriver.Join" => Reply::json(&network::join(self, decode(path, body)?).await?),
            "/NetworkDriver.Leave" => {
                network::leave(self, decode(path, body)?).await?;
                Reply::json(&empty)
            }
            // Port mappings and multi-host discovery do not apply: containers are routed,
            // not NATed, and the datastore is how nodes learn about each other.
            "/NetworkDriver.ProgramExternalConnectivity"
            | "/NetworkDriver.RevokeExternalConnectivity"
            | "/NetworkDriver.DiscoverNew"
            | "/NetworkDriver.DiscoverDelete" => Reply::json(&empty),
            "/IpamDriver.GetCapabilities" => Reply::json(&ipam::capabilities()),
            "/IpamDriver.GetDefaultAddressSpaces" => Reply::json(&ipam::default_address_spaces()),
            "/IpamDriver.RequestPool" => {
                Reply::json(&ipam::request_pool(self.store.as_ref(), decode(path, body)?).await?)
            }
            // Pools hold no state of their own: nothing to release.
            "/IpamDriver.ReleasePool" => {
                let _: ReleasePoolRequest = decode(path, body)?;
                Reply::json(&empty)
            }
            "/IpamDriver.RequestAddress" => Reply::json(
                &ipam::request_address(&self.store, &self.node, decode(path, body)?).await?,
            ),
            "/IpamDriver.ReleaseAddress" => {
                ipam::release_address(self.store.as_ref(), decode(path, body)?).await?;
                Reply::json(&empty)
            }
            _ => Reply::not_found(path),
        })
    }
}
