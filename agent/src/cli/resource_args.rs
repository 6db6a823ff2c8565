//! The `KIND [NAME]` form of `get` and `delete`, with the endpoint identifiers
//! (`--node`, `--orchestrator`, `--workload`): which resources it names.

use std::net::IpAddr;

use clap::Args;
use ipnet::IpNet;

use crate::model::{Kind, Resource, ResourceKey};

/// Identifiers of workload and host endpoints. Left out, they match anything in `get`;
/// `delete` needs every identifier of the kind.
#[derive(Debug, Clone, Default, Args)]
pub struct EndpointIdentifiers {
    /// The node of a workloadEndpoint or hostEndpoint.
    #[arg(short = 'n', long)]
    pub node: Option<String>,
    /// The orchestrator of a workloadEndpoint.
    #[arg(long)]
    pub orchestrator: Option<String>,
    /// The workload of a workloadEndpoint.
    #[arg(long)]
    pub workload: Option<String>,
}

/// The resources a `KIND [NAME]` argument pair names.
#[derive(Debug, Clone)]
pub struct ResourceSelection {
    pub kind: Kind,
    name: Option<String>,
    /// For ipPool, NAME is a CIDR.
    cidr: Option<IpNet>,
    /// For ipAllocation, NAME is an address.
    address: Option<IpAddr>,
    ids: EndpointIdentifiers,
}

impl ResourceSelection {
    /// Reads `KIND` (calicoctl's case-insensitive aliases) and `NAME`. The error is the
    /// message calicoctl prints as it is.
    pub fn from_args(
        kind: &str,
        name: Option<&str>,
        ids: &EndpointIdentifiers,
    ) -> Result<ResourceSelection, String> {
        let kind = Kind::from_cli_alias(kind).ok_or_else(|| {
            format!(
                "Resource type '{kind}' is not supported; the kinds are profile, policy, \
                 workloadEndpoint, hostEndpoint, ipPool and ipAllocation (or pro, pol, wep, hep, pool)"
            )
        })?;
        let cidr = match (kind, name) {
            (Kind::IpPool, Some(name)) => Some(parse_cidr(name)?),
            _ => None,
        };
        let address = match (kind, name) {
            (Kind::IpAllocation, Some(name)) => Some(
                name.parse::<IpAddr>()
                    .map_err(|_| format!("invalid IP address: {name}"))?,
            ),
            _ => None,
        };
        Ok(ResourceSelection {
            kind,
            name: name.map(str::to_string),
            cidr,
            address,
            ids: ids.clone(),
        })
    }

    /// The NAME argument, if given.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The same selection without its NAME.
    pub fn without_name(&self) -> ResourceSelection {
        ResourceSelection {
            name: None,
            ..self.clone()
        }
    }

    /// Whether `resource` is one of the named resources (missing parts match anything).
    pub fn matches(&self, resource: &Resource) -> bool {
        fn fits(wanted: &Option<String>, actual: &str) -> bool {
            wanted.as_deref().is_none_or(|w| w == actual)
        }
        let ids = &self.ids;
        match resource {
            Resource::Profile(p) => fits(&self.name, &p.metadata.name),
            Resource::Policy(p) => fits(&self.name, &p.metadata.name),
            Resource::WorkloadEndpoint(w) => {
                fits(&self.name, &w.metadata.name)
                    && fits(&ids.node, &w.metadata.node)
                    && fits(&ids.orchestrator, &w.metadata.orchestrator)
                    && fits(&ids.workload, &w.metadata.workload)
            }
            Resource::HostEndpoint(h) => {
                fits(&self.name, &h.metadata.name) && fits(&ids.node, &h.metadata.node)
            }
            Resource::IpPool(p) => self.cidr.is_none_or(|c| c == p.metadata.cidr),
            Resource::IpAllocation(a) => self.address.is_none_or(|x| x == a.metadata.address),
        }
    }

    /// The key of the one resource this names; for `delete`, which (as libcalico-go)
    /// needs every identifier. The error is libcalico-go's message.
    pub fn exact_key(&self) -> Result<ResourceKey, String> {
        // libcalico-go's message, with the option that gives the identifier.
        let need = |value: &Option<String>, what: &str| {
            value.clone().ok_or_else(|| {
                let option = match what {
                    "name" => "NAME".to_string(),
                    other => format!("--{other}"),
                };
                format!("insufficient identifiers, missing '{what}' (give it with {option})")
            })
        };
        Ok(match self.kind {
            Kind::Profile => ResourceKey::Profile {
                name: need(&self.name, "name")?,
            },
            Kind::Policy => ResourceKey::Policy {
                name: need(&self.name, "name")?,
            },
            Kind::WorkloadEndpoint => ResourceKey::WorkloadEndpoint {
                node: need(&self.ids.node, "node")?,
                orchestrator: need(&self.ids.orchestrator, "orchestrator")?,
                workload: need(&self.ids.workload, "workload")?,
                name: need(&self.name, "name")?,
            },
            Kind::HostEndpoint => ResourceKey::HostEndpoint {
                node: need(&self.ids.node, "node")?,
                name: need(&self.name, "name")?,
            },
            Kind::IpPool => ResourceKey::IpPool {
                cidr: self
                    .cidr
                    .ok_or_else(|| "insufficient identifiers, missing 'cidr'".to_string())?,
            },
            Kind::IpAllocation => ResourceKey::IpAllocation {
                address: self
                    .address
                    .ok_or_else(|| "insufficient identifiers, missing 'address'".to_string())?,
            },
        })
    }

    /// The key to name in "resource does not exist" when a NAME was given and nothing
    /// matched; identifiers that were left out show as empty.
    pub fn key_for_report(&self) -> Option<ResourceKey> {
        let name = self.name.clone()?;
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        Some(match self.kind {
            Kind::Profile => ResourceKey::Profile { name },
            Kind::Policy => ResourceKey::Policy { name },
            Kind::WorkloadEndpoint => ResourceKey::WorkloadEndpoint {
                node: text(&self.ids.node),
                orchestrator: text(&self.ids.orchestrator),
                workload: text(&self.ids.workload),
                name,
            },
            Kind::HostEndpoint => ResourceKey::HostEndpoint {
                node: text(&self.ids.node),
                name,
            },
            Kind::IpPool => ResourceKey::IpPool { cidr: self.cidr? },
            Kind::IpAllocation => ResourceKey::IpAllocation {
                address: self.address?,
            },
        })
    }
}

/// Parses an ipPool NAME as Go's `net.ParseCIDR` does: host bits are masked off.
fn parse_cidr(text: &str) -> Result<IpNet, String> {
    text.parse::<IpNet>()
        .map(|net| net.trunc())
        .map_err(|_| format!("invalid CIDR address: {text}"))
}
