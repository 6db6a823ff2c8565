use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// One address handed out by palisade's IPAM (the Docker plugin's IPAM driver).
///
/// A palisade resource with no Calico v1 counterpart (Calico keeps IPAM blocks under
/// `/calico/ipam/v2`). There is one resource per address, keyed by the address, so that
/// claiming an address is a create-if-absent commit: the store's atomic create is what
/// keeps two plugins on one store from handing out the same address.
#[derive(Debug, Clone, PartialEq)]
pub struct IpAllocation {
    pub metadata: IpAllocationMetadata,
    pub spec: IpAllocationSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpAllocationMetadata {
    pub address: IpAddr,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpAllocationSpec {
    /// The ipPool the address came from (the built-in default pool if none was configured).
    pub pool: IpNet,
    /// The node whose plugin allocated it.
    pub node: String,
    /// The workloadEndpoint using it, once one does (Docker asks for an address before it
    /// names the endpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}
