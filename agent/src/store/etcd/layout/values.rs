//! The JSON values of Calico v1's backend model (libcalico-go v1.7.3
//! `lib/backend/model`, converted as `lib/converter` does). Struct field order is Go's, so
//! serde writes the fields in the order libcalico-go does; unknown fields are ignored on
//! read, so values written by other Calico versions still read.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::rule::BackendRule;
use crate::model::{
    HostEndpoint, HostEndpointMetadata, HostEndpointSpec, IpNat, IpPool, IpPoolMetadata,
    IpPoolSpec, IpipConfig, Policy, PolicyMetadata, PolicySpec, PolicyType, Rule, WorkloadEndpoint,
    WorkloadEndpointMetadata, WorkloadEndpointSpec,
};

/// `/calico/v1/policy/profile/<name>/rules`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ProfileRules {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    inbound_rules: Vec<BackendRule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    outbound_rules: Vec<BackendRule>,
}

impl ProfileRules {
    pub fn from_api(ingress: &[Rule], egress: &[Rule]) -> ProfileRules {
        ProfileRules {
            inbound_rules: ingress.iter().map(BackendRule::from_api).collect(),
            outbound_rules: egress.iter().map(BackendRule::from_api).collect(),
        }
    }

    /// (ingress, egress)
    pub fn into_api(self) -> Result<(Vec<Rule>, Vec<Rule>), String> {
        Ok((
            rules_to_api(self.inbound_rules)?,
            rules_to_api(self.outbound_rules)?,
        ))
    }
}

fn rules_to_api(rules: Vec<BackendRule>) -> Result<Vec<Rule>, String> {
    rules
        .into_iter()
        .enumerate()
        .map(|(i, r)| r.into_api().map_err(|e| format!("rule {i}: {e}")))
        .collect()
}

/// `/calico/v1/policy/tier/default/policy/<name>`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct BackendPolicy {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "go_float",
        deserialize_with = "order_or_default"
    )]
    order: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    inbound_rules: Vec<BackendRule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    outbound_rules: Vec<BackendRule>,
    #[serde(default)]
    selector: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    untracked: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pre_dnat: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    types: Vec<String>,
}

impl BackendPolicy {
    pub fn from_api(policy: &Policy) -> BackendPolicy {
        let spec = &policy.spec;
        // The converter's defaulting, for a policy that was not normalized before writing.
        let types: Vec<PolicyType> = if !spec.types.is_empty() {
            spec.types.clone()
        } else if spec.egress.is_empty() {
            vec![PolicyType::Ingress]
        } else if spec.ingress.is_empty() {
            vec![PolicyType::Egress]
        } else {
            vec![PolicyType::Ingress, PolicyType::Egress]
        };
        BackendPolicy {
            order: spec.order,
            inbound_rules: spec.ingress.iter().map(BackendRule::from_api).collect(),
            outbound_rules: spec.egress.iter().map(BackendRule::from_api).collect(),
            selector: spec.selector.clone(),
            untracked: spec.do_not_track,
            annotations: policy.metadata.annotations.clone(),
            pre_dnat: spec.pre_dnat,
            types: types
                .iter()
                .map(|t| policy_type_name(*t).to_string())
                .collect(),
        }
    }

    /// A policy stored without `types` (written before libcalico-go v1.7) governs both
    /// directions, or ingress only if it is pre-DNAT.
    pub fn into_api(self, name: String) -> Result<Policy, String> {
        let types = if self.types.is_empty() {
            if self.pre_dnat {
                vec![PolicyType::Ingress]
            } else {
                vec![PolicyType::Ingress, PolicyType::Egress]
            }
        } else {
            self.types
                .iter()
                .map(|t| match t.to_ascii_lowercase().as_str() {
                    "ingress" => Ok(PolicyType::Ingress),
                    "egress" => Ok(PolicyType::Egress),
                    _ => Err(format!("policy type '{t}' is not ingress or egress")),
                })
                .collect::<Result<_, _>>()?
        };
        Ok(Policy {
            metadata: PolicyMetadata {
                name,
                annotations: self.annotations,
            },
            spec: PolicySpec {
                order: self.order,
                selector: self.selector,
                ingress: rules_to_api(self.inbound_rules)?,
                egress: rules_to_api(self.outbound_rules)?,
                do_not_track: self.untracked,
                pre_dnat: self.pre_dnat,
                types,
            },
        })
    }
}

fn policy_type_name(t: PolicyType) -> &'static str {
    match t {
        PolicyType::Ingress => "ingress",
        PolicyType::Egress => "egress",
    }
}

/// Go's encoding/json writes a float64 without a fraction as an integer (`100`, not
/// `100.0`).
fn go_float<S: Serializer>(value: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) if v.fract() == 0.0 && v.abs() < 1e15 => {
            // Exact: |v| < 2^53 and integral.
            #[allow(clippy::cast_possible_truncation)]
            s.serialize_i64(*v as i64)
        }
        Some(v) => s.serialize_f64(*v),
        None => s.serialize_none(),
    }
}

/// A number, or Felix 1.x's `"default"` (no order).
fn order_or_default<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Order {
        Number(f64),
        Text(String),
    }
    match Option::<Order>::deserialize(d)? {
        None => Ok(None),
        Some(Order::Number(n)) => Ok(Some(n)),
        Some(Order::Text(t)) if t == "default" => Ok(None),
        Some(Order::Text(t)) => Err(serde::de::Error::custom(format!(
            "order '{t}' is not a number"
        ))),
    }
}

/// `/calico/v1/host/<node>/workload/<orchestrator>/<workload>/endpoint/<name>`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct BackendWorkloadEndpoint {
    #[serde(default)]
    state: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    active_instance_id: String,
    /// Written as `null` when absent, as Go does for a nil pointer.
    #[serde(default)]
    mac: Option<String>,
    /// `null` for no profiles (the Docker plugin with profiles turned off writes that).
    #[serde(default)]
    profile_ids: Option<Vec<String>>,
    #[serde(default, deserialize_with = "null_as_empty")]
    ipv4_nets: Vec<IpNet>,
    #[serde(default, deserialize_with = "null_as_empty")]
    ipv6_nets: Vec<IpNet>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_empty"
    )]
    ipv4_nat: Vec<BackendNat>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_empty"
    )]
    ipv6_nat: Vec<BackendNat>,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_empty"
    )]
    labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ipv4_gateway: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ipv6_gateway: Option<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct BackendNat {
    int_ip: IpAddr,
    ext_ip: IpAddr,
}

impl BackendWorkloadEndpoint {
    pub fn from_api(endpoint: &WorkloadEndpoint) -> BackendWorkloadEndpoint {
        let spec = &endpoint.spec;
        let (ipv4_nets, ipv6_nets) = spec
            .ip_networks
            .iter()
            .map(IpNet::trunc)
            .partition(|n| n.addr().is_ipv4());
        let (ipv4_nat, ipv6_nat) = spec
            .ip_nats
            .iter()
            .map(|n| BackendNat {
                int_ip: n.internal_ip,
                ext_ip: n.external_ip,
            })
            .partition(|n| n.int_ip.is_ipv4());
        BackendWorkloadEndpoint {
            state: "active".to_string(),
            name: spec.interface_name.clone(),
            active_instance_id: endpoint.metadata.active_instance_id.clone(),
            mac: spec.mac.as_deref().map(go_mac),
            profile_ids: (!spec.profiles.is_empty()).then(|| spec.profiles.clone()),
            ipv4_nets,
            ipv6_nets,
            ipv4_nat,
            ipv6_nat,
            labels: endpoint.metadata.labels.clone(),
            ipv4_gateway: spec.ipv4_gateway,
            ipv6_gateway: spec.ipv6_gateway,
        }
    }

    /// The v1 model has no endpoint `state`: palisade enforces every stored endpoint.
    pub fn into_api(
        self,
        node: String,
        orchestrator: String,
        workload: String,
        name: String,
    ) -> WorkloadEndpoint {
        WorkloadEndpoint {
            metadata: WorkloadEndpointMetadata {
                name,
                workload,
                orchestrator,
                node,
                active_instance_id: self.active_instance_id,
                labels: self.labels,
            },
            spec: WorkloadEndpointSpec {
                ip_networks: self.ipv4_nets.into_iter().chain(self.ipv6_nets).collect(),
                ip_nats: self
                    .ipv4_nat
                    .into_iter()
                    .chain(self.ipv6_nat)
                    .map(|n| IpNat {
                        internal_ip: n.int_ip,
                        external_ip: n.ext_ip,
                    })
                    .collect(),
                ipv4_gateway: self.ipv4_gateway,
                ipv6_gateway: self.ipv6_gateway,
                profiles: self.profile_ids.unwrap_or_default(),
                interface_name: self.name,
                mac: self.mac.filter(|m| !m.is_empty()),
            },
        }
    }
}

/// Go's `net.HardwareAddr` prints a 6-byte address as lower-case, colon-separated hex,
/// whichever of its three input forms was used.
fn go_mac(mac: &str) -> String {
    let digits: String = mac
        .chars()
        .filter(|c| !matches!(c, ':' | '-' | '.'))
        .collect();
    if digits.len() != 12 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return mac.to_string();
    }
    let lower = digits.to_ascii_lowercase();
    (0..6)
        .map(|i| &lower[2 * i..2 * i + 2])
        .collect::<Vec<_>>()
        .join(":")
}

/// `/calico/v1/host/<node>/endpoint/<name>`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct BackendHostEndpoint {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    name: String,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_empty"
    )]
    expected_ipv4_addrs: Vec<IpAddr>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_empty"
    )]
    expected_ipv6_addrs: Vec<IpAddr>,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_empty"
    )]
    labels: BTreeMap<String, String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_empty"
    )]
    profile_ids: Vec<String>,
}

impl BackendHostEndpoint {
    pub fn from_api(endpoint: &HostEndpoint) -> BackendHostEndpoint {
        let spec = &endpoint.spec;
        let (expected_ipv4_addrs, expected_ipv6_addrs) =
            spec.expected_ips.iter().partition(|ip| ip.is_ipv4());
        BackendHostEndpoint {
            name: spec.interface_name.clone().unwrap_or_default(),
            expected_ipv4_addrs,
            expected_ipv6_addrs,
            labels: endpoint.metadata.labels.clone(),
            profile_ids: spec.profiles.clone(),
        }
    }

    pub fn into_api(self, node: String, name: String) -> HostEndpoint {
        HostEndpoint {
            metadata: HostEndpointMetadata {
                name,
                node,
                labels: self.labels,
            },
            spec: HostEndpointSpec {
                interface_name: (!self.name.is_empty()).then_some(self.name),
                expected_ips: self
                    .expected_ipv4_addrs
                    .into_iter()
                    .chain(self.expected_ipv6_addrs)
                    .collect(),
                profiles: self.profile_ids,
            },
        }
    }
}

/// `/calico/v1/ipam/v4/pool/<cidr with / as ->`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendIpPool {
    cidr: IpNet,
    #[serde(default)]
    ipip: String,
    #[serde(default)]
    ipip_mode: String,
    #[serde(default)]
    masquerade: bool,
    #[serde(default)]
    ipam: bool,
    #[serde(default)]
    disabled: bool,
}

impl BackendIpPool {
    /// `tunl0` is the only IP-in-IP interface v1 knows.
    pub fn from_api(pool: &IpPool) -> BackendIpPool {
        let (ipip, ipip_mode) = match &pool.spec.ipip {
            Some(config) => (
                if config.enabled { "tunl0" } else { "" }.to_string(),
                config.mode.clone().unwrap_or_default(),
            ),
            None => (String::new(), String::new()),
        };
        BackendIpPool {
            cidr: pool.metadata.cidr,
            ipip,
            ipip_mode,
            masquerade: pool.spec.nat_outgoing,
            ipam: !pool.spec.disabled,
            disabled: pool.spec.disabled,
        }
    }

    /// The key names the pool; the value's own `cidr` is not trusted over it.
    pub fn into_api(self, cidr: IpNet) -> IpPool {
        let ipip = (!self.ipip.is_empty() || !self.ipip_mode.is_empty()).then(|| IpipConfig {
            enabled: !self.ipip.is_empty(),
            mode: (!self.ipip_mode.is_empty()).then_some(self.ipip_mode),
        });
        IpPool {
            metadata: IpPoolMetadata { cidr },
            spec: IpPoolSpec {
                ipip,
                nat_outgoing: self.masquerade,
                disabled: self.disabled,
            },
        }
    }
}

/// Go writes a nil slice or map as `null`; read it as empty.
pub fn null_as_empty<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}
