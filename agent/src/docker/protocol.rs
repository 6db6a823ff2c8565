//! The JSON bodies of libnetwork's remote driver protocol (moby/libnetwork
//! `drivers/remote/api/api.go` and `ipams/remote/api/api.go`), with Docker's field names.
//!
//! Requests are read leniently (unknown fields ignored, absent ones defaulted) because
//! Docker versions add fields; what a handler needs is checked by the handler, with a
//! message naming the field.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::PluginError;

/// `Plugin.Activate`: the driver kinds this plugin implements.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ActivateResponse {
    pub implements: Vec<&'static str>,
}

/// `NetworkDriver.GetCapabilities`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkCapabilities {
    pub scope: &'static str,
    pub connectivity_scope: &'static str,
}

/// `NetworkDriver.CreateNetwork`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateNetworkRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    /// Docker's network options: `com.docker.network.enable_ipv6`,
    /// `com.docker.network.internal`, and the `-o` options under
    /// `com.docker.network.generic`.
    pub options: Option<BTreeMap<String, Value>>,
    #[serde(rename = "IPv4Data")]
    pub ipv4_data: Option<Vec<IpamData>>,
    #[serde(rename = "IPv6Data")]
    pub ipv6_data: Option<Vec<IpamData>>,
}

/// What the IPAM driver gave Docker for one address family of a network.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct IpamData {
    pub address_space: String,
    pub pool: String,
    pub gateway: String,
    pub aux_addresses: Option<BTreeMap<String, String>>,
}

/// `NetworkDriver.DeleteNetwork`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DeleteNetworkRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
}

/// `NetworkDriver.CreateEndpoint`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateEndpointRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    pub interface: Option<EndpointInterface>,
    pub options: Option<BTreeMap<String, Value>>,
}

/// The endpoint's addresses as Docker's IPAM step assigned them (`ip/len`), and a MAC
/// address if the user gave one (`docker run --mac-address`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EndpointInterface {
    pub address: String,
    #[serde(rename = "AddressIPv6")]
    pub address_ipv6: String,
    pub mac_address: String,
}

/// The reply to `CreateEndpoint`: the driver may fill in what Docker left empty (here,
/// only the MAC address); `null` when it adds nothing.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateEndpointResponse {
    pub interface: Option<InterfaceReply>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct InterfaceReply {
    pub mac_address: String,
}

/// The body of `DeleteEndpoint`, `Leave`, `EndpointOperInfo` and
/// `RevokeExternalConnectivity`; `Join` and `ProgramExternalConnectivity` add fields that
/// are read as [`JoinRequest`] or ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EndpointRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
}

/// `NetworkDriver.Join`: the endpoint is about to be put into a container's sandbox.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct JoinRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    pub sandbox_key: String,
    pub options: Option<BTreeMap<String, Value>>,
}

/// The reply to `Join`: the interface Docker moves into the sandbox (renamed to
/// `DstPrefix` + a number), and the container's gateway and routes.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct JoinResponse {
    pub interface_name: InterfaceName,
    pub gateway: String,
    #[serde(rename = "GatewayIPv6", skip_serializing_if = "String::is_empty")]
    pub gateway_ipv6: String,
    pub static_routes: Vec<StaticRoute>,
    pub disable_gateway_service: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct InterfaceName {
    pub src_name: String,
    pub dst_prefix: String,
}

/// A route in the container. `RouteType` 1 is a connected route (no next hop), 0 one via
/// `NextHop`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct StaticRoute {
    pub destination: String,
    pub route_type: u8,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub next_hop: String,
}

/// libnetwork's `RouteType` of a route without a next hop.
pub const ROUTE_CONNECTED: u8 = 1;

/// `NetworkDriver.EndpointOperInfo`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointOperInfoResponse {
    pub value: BTreeMap<String, Value>,
}

/// `IpamDriver.GetCapabilities`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpamCapabilities {
    #[serde(rename = "RequiresMACAddress")]
    pub requires_mac_address: bool,
    pub requires_request_replay: bool,
}

/// `IpamDriver.GetDefaultAddressSpaces`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AddressSpaces {
    pub local_default_address_space: &'static str,
    pub global_default_address_space: &'static str,
}

/// `IpamDriver.RequestPool`: `Pool` is the network's `--subnet`, `SubPool` its
/// `--ip-range`, `Options` its `--ipam-opt`s.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RequestPoolRequest {
    pub address_space: String,
    pub pool: String,
    pub sub_pool: String,
    pub options: Option<BTreeMap<String, String>>,
    #[serde(rename = "V6")]
    pub v6: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RequestPoolResponse {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    pub pool: String,
    pub data: BTreeMap<String, String>,
}

/// `IpamDriver.ReleasePool`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ReleasePoolRequest {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
}

/// `IpamDriver.RequestAddress`: `Address` is empty for "any", else a specific address
/// (`docker run --ip`, `--aux-address`, or the `--gateway` of a network, which carries
/// `RequestAddressType` in `Options`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RequestAddressRequest {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    pub address: String,
    pub options: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RequestAddressResponse {
    pub address: String,
    pub data: BTreeMap<String, String>,
}

/// `IpamDriver.ReleaseAddress`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ReleaseAddressRequest {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    pub address: String,
}

/// The option key of `RequestAddress` that says what the address is for, and its value
/// for a network's gateway.
pub const REQUEST_ADDRESS_TYPE: &str = "RequestAddressType";
pub const GATEWAY_ADDRESS_TYPE: &str = "com.docker.network.gateway";

/// The `RequestPool` reply data key that gives Docker the network's gateway, so that it
/// does not ask the IPAM driver for one.
pub const POOL_GATEWAY_KEY: &str = "com.docker.network.gateway";

/// Network options Docker passes to `CreateNetwork`.
pub const OPTION_ENABLE_IPV6: &str = "com.docker.network.enable_ipv6";
pub const OPTION_GENERIC: &str = "com.docker.network.generic";
pub const OPTION_INTERNAL: &str = "com.docker.network.internal";

/// Reads the request body of `path` (`/NetworkDriver.CreateEndpoint`); an empty body reads
/// as `{}`. A malformed one is a bad request whose message names the method and the field.
pub fn decode<T: DeserializeOwned>(path: &str, body: &[u8]) -> Result<T, PluginError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let at = e.path().to_string();
        let method = path.trim_start_matches('/');
        if at == "." {
            PluginError::bad_request(format!(
                "palisade: malformed {method} request: {}",
                e.inner()
            ))
        } else {
            PluginError::bad_request(format!(
                "palisade: malformed {method} request: field {at}: {}",
                e.inner()
            ))
        }
    })
}
