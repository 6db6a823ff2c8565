use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// A container's interface: its addresses, labels and profiles.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WorkloadEndpoint {
    pub metadata: WorkloadEndpointMetadata,
    pub spec: WorkloadEndpointSpec,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadEndpointMetadata {
    pub name: String,
    #[serde(default)]
    pub workload: String,
    #[serde(default)]
    pub orchestrator: String,
    #[serde(default)]
    pub node: String,
    #[serde(
        default,
        rename = "activeInstanceID",
        skip_serializing_if = "String::is_empty"
    )]
    pub active_instance_id: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadEndpointSpec {
    /// Each a /32 or /128.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_networks: Vec<IpNet>,
    #[serde(default, rename = "ipNATs", skip_serializing_if = "Vec::is_empty")]
    pub ip_nats: Vec<IpNat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4_gateway: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_gateway: Option<IpAddr>,
    /// Applied in this order, after any selector policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
    /// The host-side interface; required.
    #[serde(default)]
    pub interface_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpNat {
    #[serde(rename = "internalIP")]
    pub internal_ip: IpAddr,
    #[serde(rename = "externalIP")]
    pub external_ip: IpAddr,
}

/// How many workload endpoints of `resources` list the profile `name`.
pub fn endpoints_listing<'a>(
    resources: impl IntoIterator<Item = &'a super::Resource>,
    name: &str,
) -> usize {
    resources
        .into_iter()
        .filter(|r| {
            matches!(r, super::Resource::WorkloadEndpoint(w) if w.spec.profiles.iter().any(|p| p == name))
        })
        .count()
}
