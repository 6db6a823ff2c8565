//! Calico v1 API resources (`apiVersion: v1`): their Rust shape and serde mapping
//! (this file and its siblings), document parsing (`parse`), validation (`validate`) and
//! the labels selectors see (`labels`).
//!
//! The structs mirror libcalico-go v1.7.3 `lib/api`; field names are the v1 JSON/YAML
//! names. Values that upstream validates with a specific message (protocols, names,
//! labels) are kept as written and checked by [`validate`], so that the error can name
//! the field path and the bad value.

mod host_endpoint;
mod ip_allocation;
mod ip_pool;
pub mod labels;
pub mod parse;
mod policy;
mod profile;
mod rule;
pub mod validate;
mod workload_endpoint;

use std::fmt;

use serde::{Serialize, Serializer};

pub use host_endpoint::{HostEndpoint, HostEndpointMetadata, HostEndpointSpec};
pub use ip_allocation::{IpAllocation, IpAllocationMetadata, IpAllocationSpec};
pub use ip_pool::{IpPool, IpPoolMetadata, IpPoolSpec, IpipConfig};
pub use policy::{Policy, PolicyMetadata, PolicySpec, PolicyType, application_order};
pub use profile::{Profile, ProfileMetadata, ProfileSpec};
pub use rule::{Action, EntityRule, IcmpFields, PROTOCOL_NAMES, Port, Protocol, Rule};
pub use workload_endpoint::{
    IpNat, WorkloadEndpoint, WorkloadEndpointMetadata, WorkloadEndpointSpec, endpoints_listing,
};

/// The only API version palisade reads and writes.
pub const API_VERSION: &str = "v1";

/// The resource kinds palisade stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Profile,
    Policy,
    WorkloadEndpoint,
    HostEndpoint,
    IpPool,
    /// palisade's own record of an address its IPAM handed out.
    IpAllocation,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Profile,
        Kind::Policy,
        Kind::WorkloadEndpoint,
        Kind::HostEndpoint,
        Kind::IpPool,
        Kind::IpAllocation,
    ];

    /// The `kind:` string of a single resource (case-sensitive, as upstream).
    pub fn api_name(self) -> &'static str {
        match self {
            Kind::Profile => "profile",
            Kind::Policy => "policy",
            Kind::WorkloadEndpoint => "workloadEndpoint",
            Kind::HostEndpoint => "hostEndpoint",
            Kind::IpPool => "ipPool",
            Kind::IpAllocation => "ipAllocation",
        }
    }

    /// The `kind:` string of a list of this kind (`profileList`, ...).
    pub fn list_name(self) -> &'static str {
        match self {
            Kind::Profile => "profileList",
            Kind::Policy => "policyList",
            Kind::WorkloadEndpoint => "workloadEndpointList",
            Kind::HostEndpoint => "hostEndpointList",
            Kind::IpPool => "ipPoolList",
            Kind::IpAllocation => "ipAllocationList",
        }
    }

    pub fn from_api_name(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.api_name() == s)
    }

    pub fn from_list_name(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.list_name() == s)
    }

    /// calicoctl's KIND argument aliases (case-insensitive): `profile|profiles|pro|pros`, ...
    pub fn from_cli_alias(s: &str) -> Option<Kind> {
        match s.to_ascii_lowercase().as_str() {
            "profile" | "profiles" | "pro" | "pros" => Some(Kind::Profile),
            "policy" | "policies" | "pol" | "pols" => Some(Kind::Policy),
            "workloadendpoint" | "workloadendpoints" | "wep" | "weps" => {
                Some(Kind::WorkloadEndpoint)
            }
            "hostendpoint" | "hostendpoints" | "hep" | "heps" => Some(Kind::HostEndpoint),
            "ippool" | "ippools" | "ipp" | "ipps" | "pool" | "pools" => Some(Kind::IpPool),
            "ipallocation" | "ipallocations" => Some(Kind::IpAllocation),
            _ => None,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.api_name())
    }
}

/// The identity of a stored resource. `Display` gives libcalico-go's key strings
/// (`Profile(name=x)`, ...), which calicoctl prints in "already exists" errors.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum ResourceKey {
    Profile {
        name: String,
    },
    Policy {
        name: String,
    },
    WorkloadEndpoint {
        node: String,
        orchestrator: String,
        workload: String,
        name: String,
    },
    HostEndpoint {
        node: String,
        name: String,
    },
    IpPool {
        cidr: ipnet::IpNet,
    },
    IpAllocation {
        address: std::net::IpAddr,
    },
}

impl ResourceKey {
    pub fn kind(&self) -> Kind {
        match self {
            ResourceKey::Profile { .. } => Kind::Profile,
            ResourceKey::Policy { .. } => Kind::Policy,
            ResourceKey::WorkloadEndpoint { .. } => Kind::WorkloadEndpoint,
            ResourceKey::HostEndpoint { .. } => Kind::HostEndpoint,
            ResourceKey::IpPool { .. } => Kind::IpPool,
            ResourceKey::IpAllocation { .. } => Kind::IpAllocation,
        }
    }
}

impl fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResourceKey::Profile { name } => write!(f, "Profile(name={name})"),
            ResourceKey::Policy { name } => write!(f, "Policy(name={name})"),
            ResourceKey::WorkloadEndpoint {
                node,
                orchestrator,
                workload,
                name,
            } => write!(
                f,
                "WorkloadEndpoint(node={node}, orchestrator={orchestrator}, workload={workload}, name={name})"
            ),
            ResourceKey::HostEndpoint { node, name } => {
                write!(f, "HostEndpoint(node={node}, name={name})")
            }
            ResourceKey::IpPool { cidr } => write!(f, "IPPool(cidr={cidr})"),
            ResourceKey::IpAllocation { address } => write!(f, "IPAllocation(address={address})"),
        }
    }
}

impl WorkloadEndpoint {
    pub fn key(&self) -> ResourceKey {
        ResourceKey::WorkloadEndpoint {
            node: self.metadata.node.clone(),
            orchestrator: self.metadata.orchestrator.clone(),
            workload: self.metadata.workload.clone(),
            name: self.metadata.name.clone(),
        }
    }
}

/// One v1 resource of any kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Resource {
    Profile(Profile),
    Policy(Policy),
    WorkloadEndpoint(WorkloadEndpoint),
    HostEndpoint(HostEndpoint),
    IpPool(IpPool),
    IpAllocation(IpAllocation),
}

impl Resource {
    pub fn kind(&self) -> Kind {
        match self {
            Resource::Profile(_) => Kind::Profile,
            Resource::Policy(_) => Kind::Policy,
            Resource::WorkloadEndpoint(_) => Kind::WorkloadEndpoint,
            Resource::HostEndpoint(_) => Kind::HostEndpoint,
            Resource::IpPool(_) => Kind::IpPool,
            Resource::IpAllocation(_) => Kind::IpAllocation,
        }
    }

    pub fn key(&self) -> ResourceKey {
        match self {
            Resource::Profile(p) => ResourceKey::Profile {
                name: p.metadata.name.clone(),
            },
            Resource::Policy(p) => ResourceKey::Policy {
                name: p.metadata.name.clone(),
            },
            Resource::WorkloadEndpoint(w) => w.key(),
            Resource::HostEndpoint(h) => ResourceKey::HostEndpoint {
                node: h.metadata.node.clone(),
                name: h.metadata.name.clone(),
            },
            Resource::IpPool(p) => ResourceKey::IpPool {
                cidr: p.metadata.cidr,
            },
            Resource::IpAllocation(a) => ResourceKey::IpAllocation {
                address: a.metadata.address,
            },
        }
    }
}

/// Serializes as the v1 envelope, in calicoctl's field order: kind, apiVersion, metadata, spec.
impl Serialize for Resource {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        fn envelope<S: Serializer, M: Serialize, P: Serialize>(
            serializer: S,
            kind: Kind,
            metadata: &M,
            spec: &P,
        ) -> Result<S::Ok, S::Error> {
            let mut s = serializer.serialize_struct("Resource", 4)?;
            s.serialize_field("kind", kind.api_name())?;
            s.serialize_field("apiVersion", API_VERSION)?;
            s.serialize_field("metadata", metadata)?;
            s.serialize_field("spec", spec)?;
            s.end()
        }
        match self {
            Resource::Profile(r) => envelope(serializer, self.kind(), &r.metadata, &r.spec),
            Resource::Policy(r) => envelope(serializer, self.kind(), &r.metadata, &r.spec),
            Resource::WorkloadEndpoint(r) => {
                envelope(serializer, self.kind(), &r.metadata, &r.spec)
            }
            Resource::HostEndpoint(r) => envelope(serializer, self.kind(), &r.metadata, &r.spec),
            Resource::IpPool(r) => envelope(serializer, self.kind(), &r.metadata, &r.spec),
            Resource::IpAllocation(r) => envelope(serializer, self.kind(), &r.metadata, &r.spec),
        }
    }
}

/// Deserializes one resource envelope (strictly: unknown kinds, versions and fields are
/// errors). For whole files with lists and several documents use [`parse::parse_documents`].
impl<'de> serde::Deserialize<'de> for Resource {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        parse::resource_from_value(value).map_err(serde::de::Error::custom)
    }
}
