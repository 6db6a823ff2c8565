//! Calico v1's etcd layout, both ways: which keys and JSON values a resource is written as
//! (what libcalico-go v1.7.3 writes, so Felix and calicoctl read palisade's data), and the
//! resource a key and value written by Calico's own tools stand for. Pure: no I/O.
//!
//! Profiles are three keys (`tags`, `labels`, `rules`); every other kind is one key.

mod keys;
mod rule;
mod values;

use std::collections::BTreeMap;
use std::fmt;

pub use keys::{KeyMeaning, PROFILES, ProfilePart, READY, ROOT, classify, keys_of, profile_prefix};

use crate::model::{
    IpAllocation, IpAllocationMetadata, IpAllocationSpec, Profile, ProfileMetadata, ProfileSpec,
    Resource, ResourceKey,
};
use values::{
    BackendHostEndpoint, BackendIpPool, BackendPolicy, BackendWorkloadEndpoint, ProfileRules,
};

/// A value under a known key that is not what Calico writes there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutError {
    pub key: String,
    pub problem: String,
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "etcd key {}: {}", self.key, self.problem)
    }
}

/// The keys and JSON values `resource` is stored as, in key order of [`keys_of`].
pub fn encode(resource: &Resource) -> Vec<(String, String)> {
    let keys = keys_of(&resource.key());
    let values: Vec<String> = match resource {
        Resource::Profile(profile) => {
            let rules = ProfileRules::from_api(&profile.spec.ingress, &profile.spec.egress);
            ProfilePart::ALL
                .iter()
                .map(|part| match part {
                    ProfilePart::Tags => json(&profile.metadata.tags),
                    ProfilePart::Labels => json(&profile.metadata.labels),
                    ProfilePart::Rules => json(&rules),
                })
                .collect()
        }
        Resource::Policy(policy) => vec![json(&BackendPolicy::from_api(policy))],
        Resource::WorkloadEndpoint(endpoint) => {
            vec![json(&BackendWorkloadEndpoint::from_api(endpoint))]
        }
        Resource::HostEndpoint(endpoint) => vec![json(&BackendHostEndpoint::from_api(endpoint))],
        Resource::IpPool(pool) => vec![json(&BackendIpPool::from_api(pool))],
        Resource::IpAllocation(allocation) => vec![json(&allocation.spec)],
    };
    keys.into_iter().zip(values).collect()
}

fn json<T: serde::Serialize>(value: &T) -> String {
    // Serializing these plain structs, vectors and string maps cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

/// The resource stored under `etcd_key`, which [`classify`] found to be `key` (any kind
/// but a profile: those are assembled with [`ProfileParts`]).
pub fn decode(etcd_key: &str, key: &ResourceKey, value: &[u8]) -> Result<Resource, LayoutError> {
    let fail = |problem: String| LayoutError {
        key: etcd_key.to_string(),
        problem,
    };
    let resource = match key.clone() {
        ResourceKey::Policy { name } => {
            let stored: BackendPolicy = parse(value).map_err(fail)?;
            Resource::Policy(stored.into_api(name).map_err(fail)?)
        }
        ResourceKey::WorkloadEndpoint {
            node,
            orchestrator,
            workload,
            name,
        } => {
            let stored: BackendWorkloadEndpoint = parse(value).map_err(fail)?;
            Resource::WorkloadEndpoint(stored.into_api(node, orchestrator, workload, name))
        }
        ResourceKey::HostEndpoint { node, name } => {
            let stored: BackendHostEndpoint = parse(value).map_err(fail)?;
            Resource::HostEndpoint(stored.into_api(node, name))
        }
        ResourceKey::IpPool { cidr } => {
            let stored: BackendIpPool = parse(value).map_err(fail)?;
            Resource::IpPool(stored.into_api(cidr))
        }
        ResourceKey::IpAllocation { address } => {
            let spec: IpAllocationSpec = parse(value).map_err(fail)?;
            Resource::IpAllocation(IpAllocation {
                metadata: IpAllocationMetadata { address },
                spec,
            })
        }
        ResourceKey::Profile { .. } => {
            return Err(fail("a profile is three keys, not one".to_string()));
        }
    };
    Ok(resource)
}

fn parse<'a, T: serde::Deserialize<'a>>(value: &'a [u8]) -> Result<T, String> {
    serde_json::from_slice(value).map_err(|e| format!("invalid JSON value: {e}"))
}

/// The parts of one profile read so far. A profile exists while any of its keys does;
/// a missing part reads as empty (no tags, no labels, no rules).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProfileParts {
    tags: Option<Vec<String>>,
    labels: Option<BTreeMap<String, String>>,
    rules: Option<(Vec<crate::model::Rule>, Vec<crate::model::Rule>)>,
}

impl ProfileParts {
    /// Records the value of `part`, stored under `etcd_key`.
    pub fn set(
        &mut self,
        etcd_key: &str,
        part: ProfilePart,
        value: &[u8],
    ) -> Result<(), LayoutError> {
        let fail = |problem: String| LayoutError {
            key: etcd_key.to_string(),
            problem,
        };
        match part {
            ProfilePart::Tags => {
                let tags: Option<Vec<String>> = parse(value).map_err(fail)?;
                self.tags = Some(tags.unwrap_or_default());
            }
            ProfilePart::Labels => {
                let labels: Option<BTreeMap<String, String>> = parse(value).map_err(fail)?;
                self.labels = Some(labels.unwrap_or_default());
            }
            ProfilePart::Rules => {
                let rules: ProfileRules = parse(value).map_err(fail)?;
                self.rules = Some(rules.into_api().map_err(fail)?);
            }
        }
        Ok(())
    }

    pub fn clear(&mut self, part: ProfilePart) {
        match part {
            ProfilePart::Tags => self.tags = None,
            ProfilePart::Labels => self.labels = None,
            ProfilePart::Rules => self.rules = None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.tags.is_none() && self.labels.is_none() && self.rules.is_none()
    }

    pub fn to_profile(&self, name: &str) -> Resource {
        let (ingress, egress) = self.rules.clone().unwrap_or_default();
        Resource::Profile(Profile {
            metadata: ProfileMetadata {
                name: name.to_string(),
                tags: self.tags.clone().unwrap_or_default(),
                labels: self.labels.clone().unwrap_or_default(),
            },
            spec: ProfileSpec { ingress, egress },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::parse::parse_documents;

    fn resource(yaml: &str) -> Resource {
        let mut resources = parse_documents(yaml).unwrap();
        assert_eq!(resources.len(), 1);
        let mut resource = resources.remove(0);
        crate::model::validate::normalize(&mut resource);
        resource
    }

    /// Reads back what [`encode`] wrote, the way the store does.
    fn read_back(encoded: &[(String, String)]) -> Resource {
        let mut parts = BTreeMap::<String, ProfileParts>::new();
        let mut out = None;
        for (key, value) in encoded {
            match classify(key) {
                KeyMeaning::Resource(k) => out = Some(decode(key, &k, value.as_bytes()).unwrap()),
                KeyMeaning::ProfilePart { name, part } => parts
                    .entry(name)
                    .or_default()
                    .set(key, part, value.as_bytes())
                    .unwrap(),
                other => panic!("{key}: {other:?}"),
            }
        }
        out.unwrap_or_else(|| {
            let (name, parts) = parts.into_iter().next().unwrap();
            parts.to_profile(&name)
        })
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn docker_plugin_profile_and_endpoint_exactly_as_libnetwork_tests_expect() {
        let profile = resource(
            "apiVersion: v1\nkind: profile\nmetadata: {name: net1, tags: [net1]}\n\
             spec:\n  egress: [{action: allow}]\n  ingress: [{action: allow, source: {tag: net1}}]\n",
        );
        assert_eq!(
            encode(&profile),
            pairs(&[
                ("/calico/v1/policy/profile/net1/tags", r#"["net1"]"#),
                ("/calico/v1/policy/profile/net1/labels", "{}"),
                (
                    "/calico/v1/policy/profile/net1/rules",
                    r#"{"inbound_rules":[{"action":"allow","src_tag":"net1"}],"outbound_rules":[{"action":"allow"}]}"#
                ),
            ])
        );
        assert_eq!(read_back(&encode(&profile)), profile);

        let endpoint = resource(
            "apiVersion: v1\nkind: workloadEndpoint\n\
             metadata: {name: abc, node: host1, orchestrator: libnetwork, workload: libnetwork}\n\
             spec: {interfaceName: caliabc, mac: 'EE:EE:EE:EE:EE:EE', ipNetworks: [192.168.0.1/32], profiles: [net1]}\n",
        );
        assert_eq!(
            encode(&endpoint),
            pairs(&[(
                "/calico/v1/host/host1/workload/libnetwork/libnetwork/endpoint/abc",
                r#"{"state":"active","name":"caliabc","active_instance_id":"","mac":"ee:ee:ee:ee:ee:ee","profile_ids":["net1"],"ipv4_nets":["192.168.0.1/32"],"ipv6_nets":[]}"#
            )])
        );
        let Resource::WorkloadEndpoint(back) = read_back(&encode(&endpoint)) else {
            panic!("not an endpoint")
        };
        assert_eq!(back.spec.mac.as_deref(), Some("ee:ee:ee:ee:ee:ee"));

        let bare = resource(
            "apiVersion: v1\nkind: workloadEndpoint\n\
             metadata: {name: e, node: h, orchestrator: o, workload: w}\nspec: {interfaceName: cali0}\n",
        );
        assert_eq!(
            encode(&bare)[0].1,
            r#"{"state":"active","name":"cali0","active_instance_id":"","mac":null,"profile_ids":null,"ipv4_nets":[],"ipv6_nets":[]}"#
        );
        assert_eq!(read_back(&encode(&bare)), bare);
    }

    #[test]
    fn policy_rules_use_backend_field_names() {
        let policy = resource(
            r#"
apiVersion: v1
kind: policy
metadata: {name: p1, annotations: {a: b}}
spec:
  order: 100
  selector: role == 'db'
  ingress:
  - action: pass
    protocol: tcp
    notProtocol: 17
    source: {selector: role == 'app', notNets: [10.1.0.0/16], ports: [80, "8000:8080"]}
    destination: {notPorts: [22], nets: [10.0.0.5/24], tag: t1}
  - action: allow
    protocol: icmp
    icmp: {type: 8, code: 0}
    notICMP: {type: 3}
    ipVersion: 4
  egress:
  - action: deny
    destination: {notSelector: has(x), notTag: t2, net: 192.168.0.0/16}
"#,
        );
        let encoded = encode(&policy);
        assert_eq!(encoded.len(), 1);
        assert_eq!(encoded[0].0, "/calico/v1/policy/tier/default/policy/p1");
        assert_eq!(
            encoded[0].1,
            concat!(
                r#"{"order":100,"inbound_rules":["#,
                r#"{"action":"next-tier","protocol":"tcp","!protocol":17,"src_selector":"role == 'app'","src_ports":[80,"8000:8080"],"dst_tag":"t1","dst_nets":["10.0.0.0/24"],"!src_nets":["10.1.0.0/16"],"!dst_ports":[22]},"#,
                r#"{"action":"allow","ip_version":4,"protocol":"icmp","icmp_type":8,"icmp_code":0,"!icmp_type":3}],"#,
                r#""outbound_rules":[{"action":"deny","dst_net":"192.168.0.0/16","!dst_tag":"t2","!dst_selector":"has(x)"}],"#,
                r#""selector":"role == 'db'","annotations":{"a":"b"},"types":["ingress","egress"]}"#
            )
        );
        // Destination CIDRs come back masked, as calicoctl shows them.
        let Resource::Policy(back) = read_back(&encoded) else {
            panic!("not a policy")
        };
        let Resource::Policy(mut expected) = policy else {
            unreachable!()
        };
        expected.spec.ingress[0].destination.nets = vec!["10.0.0.0/24".parse().unwrap()];
        assert_eq!(back, expected);
    }

    #[test]
    fn fractional_orders_stay_fractional() {
        let policy =
            resource("apiVersion: v1\nkind: policy\nmetadata: {name: p}\nspec: {order: 10.5}\n");
        assert_eq!(
            encode(&policy)[0].1,
            r#"{"order":10.5,"selector":"","types":["ingress"]}"#
        );
        assert_eq!(read_back(&encode(&policy)), policy);
    }

    #[test]
    fn values_written_by_calico_tools_read_back() {
        // pycalico's `profile add` (rules only allow/src_tag), a Felix 1.x policy with
        // `"order": "default"` and no types, a host endpoint and an IP pool.
        let profile = read_back(&pairs(&[
            ("/calico/v1/policy/profile/web/tags", r#"["web"]"#),
            ("/calico/v1/policy/profile/web/labels", "null"),
            (
                "/calico/v1/policy/profile/web/rules",
                r#"{"inbound_rules":[{"action":"allow","src_tag":"web"},{"src_net":"10.0.0.0/8","dst_ports":["80"],"log_prefix":"x"}],"outbound_rules":[{"action":"allow"}]}"#,
            ),
        ]));
        assert_eq!(
            profile,
            resource(
                "apiVersion: v1\nkind: profile\nmetadata: {name: web, tags: [web]}\nspec:\n  \
                 ingress: [{action: allow, source: {tag: web}}, {action: allow, source: {net: 10.0.0.0/8}, destination: {ports: [80]}}]\n  \
                 egress: [{action: allow}]\n"
            )
        );

        let policy = read_back(&pairs(&[(
            "/calico/v1/policy/tier/default/policy/old",
            r#"{"order":"default","selector":"all()","inbound_rules":[{"action":"deny"}],"apply_on_forward":true}"#,
        )]));
        let Resource::Policy(policy) = policy else {
            panic!("not a policy")
        };
        assert_eq!(policy.spec.order, None);
        assert_eq!(
            policy.spec.types,
            [
                crate::model::PolicyType::Ingress,
                crate::model::PolicyType::Egress
            ]
        );

        let host = read_back(&pairs(&[(
            "/calico/v1/host/h1/endpoint/eth0",
            r#"{"name":"eth0","expected_ipv4_addrs":["10.0.0.1"],"expected_ipv6_addrs":["fd00::1"],"labels":{"role":"gw"},"profile_ids":["p"]}"#,
        )]));
        assert_eq!(
            host,
            resource(
                "apiVersion: v1\nkind: hostEndpoint\nmetadata: {name: eth0, node: h1, labels: {role: gw}}\n\
                 spec: {interfaceName: eth0, expectedIPs: [10.0.0.1, 'fd00::1'], profiles: [p]}\n"
            )
        );

        let pool = read_back(&pairs(&[(
            "/calico/v1/ipam/v4/pool/192.168.0.0-16",
            r#"{"cidr":"192.168.0.0/16","ipip":"tunl0","ipip_mode":"cross-subnet","masquerade":true,"ipam":true,"disabled":false}"#,
        )]));
        let Resource::IpPool(pool) = pool else {
            panic!("not a pool")
        };
        assert!(pool.spec.nat_outgoing);
        assert_eq!(
            pool.spec.ipip,
            Some(crate::model::IpipConfig {
                enabled: true,
                mode: Some("cross-subnet".into())
            })
        );
        assert_eq!(
            encode(&Resource::IpPool(pool.clone()))[0].1,
            r#"{"cidr":"192.168.0.0/16","ipip":"tunl0","ipip_mode":"cross-subnet","masquerade":true,"ipam":true,"disabled":false}"#
        );
    }

    #[test]
    fn a_profile_with_only_some_keys_exists_with_the_rest_empty() {
        let mut parts = ProfileParts::default();
        assert!(parts.is_empty());
        parts
            .set(
                "/calico/v1/policy/profile/p/rules",
                ProfilePart::Rules,
                b"{}",
            )
            .unwrap();
        assert!(!parts.is_empty());
        assert_eq!(
            parts.to_profile("p"),
            resource("apiVersion: v1\nkind: profile\nmetadata: {name: p}\n")
        );
        parts.clear(ProfilePart::Rules);
        assert!(parts.is_empty());
    }

    #[test]
    fn malformed_values_name_their_key() {
        let key = ResourceKey::Policy { name: "p".into() };
        let err = decode(
            "/calico/v1/policy/tier/default/policy/p",
            &key,
            b"{not json",
        )
        .unwrap_err();
        assert_eq!(err.key, "/calico/v1/policy/tier/default/policy/p");
        assert!(
            err.to_string().starts_with(
                "etcd key /calico/v1/policy/tier/default/policy/p: invalid JSON value"
            ),
            "{err}"
        );

        let err = decode(
            "/calico/v1/policy/tier/default/policy/p",
            &key,
            br#"{"selector":"","inbound_rules":[{"action":"reject"}]}"#,
        )
        .unwrap_err();
        assert!(
            err.problem.contains("rule 0: rule action 'reject'"),
            "{err}"
        );

        let mut parts = ProfileParts::default();
        let err = parts
            .set(
                "/calico/v1/policy/profile/p/tags",
                ProfilePart::Tags,
                br#"{"a":1}"#,
            )
            .unwrap_err();
        assert_eq!(err.key, "/calico/v1/policy/profile/p/tags");
    }
}
