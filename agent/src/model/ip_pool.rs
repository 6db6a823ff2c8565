use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// An IP pool: the addresses palisade's IPAM hands out.
#[derive(Debug, Clone, PartialEq)]
pub struct IpPool {
    pub metadata: IpPoolMetadata,
    pub spec: IpPoolSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpPoolMetadata {
    pub cidr: IpNet,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpPoolSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipip: Option<IpipConfig>,
    #[serde(
        default,
        rename = "nat-outgoing",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub nat_outgoing: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpipConfig {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}
