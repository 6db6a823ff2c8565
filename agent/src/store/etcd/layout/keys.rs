//! Where each resource lives in Calico v1's etcd key space (libcalico-go v1.7.3
//! `lib/backend/model`), and what an arbitrary key under `/calico/v1/` means.

use crate::model::ResourceKey;

/// Everything palisade reads or writes is under this prefix.
pub const ROOT: &str = "/calico/v1/";

/// Felix waits for this key to be `true` before it reads anything else; libcalico-go's
/// `EnsureInitialized` writes it, and so does palisade's first commit.
pub const READY: &str = "/calico/v1/Ready";

/// The profiles' subtree: `<PROFILES><name>/{tags,labels,rules}`.
pub const PROFILES: &str = "/calico/v1/policy/profile/";

/// The three keys a profile is split into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProfilePart {
    Tags,
    Labels,
    Rules,
}

impl ProfilePart {
    pub const ALL: [ProfilePart; 3] = [ProfilePart::Tags, ProfilePart::Labels, ProfilePart::Rules];

    fn segment(self) -> &'static str {
        match self {
            ProfilePart::Tags => "tags",
            ProfilePart::Labels => "labels",
            ProfilePart::Rules => "rules",
        }
    }
}

/// What one etcd key under `/calico/v1/` holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyMeaning {
    /// A whole resource (every kind but profiles).
    Resource(ResourceKey),
    /// One of the three keys of profile `name`.
    ProfilePart { name: String, part: ProfilePart },
    /// A Calico key palisade has no use for: `Ready`, Felix configuration, node metadata,
    /// tier metadata.
    Ignored,
    /// Nothing palisade or libcalico-go v1 writes (or a policy in a tier other than
    /// `default`, which only Felix 1.x reads).
    Unknown,
}

/// `%` becomes `%25` and `/` becomes `%2f`, so that a name is always one key segment.
pub fn escape(name: &str) -> String {
    name.replace('%', "%25").replace('/', "%2f")
}

/// The inverse of [`escape`], in libcalico-go's order.
pub fn unescape(segment: &str) -> String {
    segment.replace("%2f", "/").replace("%25", "%")
}

/// The key of one profile part.
pub fn profile_part_key(name: &str, part: ProfilePart) -> String {
    format!("{}{}", profile_prefix(name), part.segment())
}

/// The prefix of all three keys of profile `name` (ends with `/`).
pub fn profile_prefix(name: &str) -> String {
    format!("{PROFILES}{}/", escape(name))
}

/// The etcd keys that hold the resource `key`: three for a profile, one otherwise.
pub fn keys_of(key: &ResourceKey) -> Vec<String> {
    match key {
        ResourceKey::Profile { name } => ProfilePart::ALL
            .iter()
            .map(|part| profile_part_key(name, *part))
            .collect(),
        ResourceKey::Policy { name } => {
            vec![format!("{ROOT}policy/tier/default/policy/{}", escape(name))]
        }
        ResourceKey::WorkloadEndpoint {
            node,
            orchestrator,
            workload,
            name,
        } => vec![format!(
            "{ROOT}host/{node}/workload/{}/{}/endpoint/{}",
            escape(orchestrator),
            escape(workload),
            escape(name)
        )],
        ResourceKey::HostEndpoint { node, name } => {
            vec![format!("{ROOT}host/{node}/endpoint/{}", escape(name))]
        }
        ResourceKey::IpPool { cidr } => {
            let version = if cidr.addr().is_ipv4() { 4 } else { 6 };
            vec![format!(
                "{ROOT}ipam/v{version}/pool/{}",
                cidr.to_string().replacen('/', "-", 1)
            )]
        }
        // palisade's own: Calico v1 has no per-address IPAM key (its blocks live under
        // /calico/ipam/v2), so these sit beside the pools where no Calico tool looks.
        ResourceKey::IpAllocation { address } => {
            let version = if address.is_ipv4() { 4 } else { 6 };
            vec![format!("{ROOT}ipam/v{version}/allocation/{address}")]
        }
    }
}

/// What `key` holds, by its path alone.
pub fn classify(key: &str) -> KeyMeaning {
    let Some(rest) = key.strip_prefix(ROOT) else {
        return KeyMeaning::Unknown;
    };
    let segments: Vec<&str> = rest.split('/').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return KeyMeaning::Unknown;
    }
    match segments.as_slice() {
        ["Ready"] | ["config", ..] => KeyMeaning::Ignored,
        ["policy", "profile", name, part] => {
            let part = match *part {
                "tags" => ProfilePart::Tags,
                "labels" => ProfilePart::Labels,
                "rules" => ProfilePart::Rules,
                _ => return KeyMeaning::Unknown,
            };
            KeyMeaning::ProfilePart {
                name: unescape(name),
                part,
            }
        }
        ["policy", "tier", "default", "policy", name] => {
            KeyMeaning::Resource(ResourceKey::Policy {
                name: unescape(name),
            })
        }
        ["policy", "tier", _, "metadata"] => KeyMeaning::Ignored,
        [
            "host",
            node,
            "workload",
            orchestrator,
            workload,
            "endpoint",
            name,
        ] => KeyMeaning::Resource(ResourceKey::WorkloadEndpoint {
            node: (*node).to_string(),
            orchestrator: unescape(orchestrator),
            workload: unescape(workload),
            name: unescape(name),
        }),
        ["host", node, "endpoint", name] => KeyMeaning::Resource(ResourceKey::HostEndpoint {
            node: (*node).to_string(),
            name: unescape(name),
        }),
        [
            "host",
            _,
            "metadata" | "bird_ip" | "bird6_ip" | "config",
            ..,
        ] => KeyMeaning::Ignored,
        ["ipam", version @ ("v4" | "v6"), "pool", cidr] => {
            match cidr.replacen('-', "/", 1).parse::<ipnet::IpNet>() {
                Ok(cidr) if (cidr.addr().is_ipv4()) == (*version == "v4") => {
                    KeyMeaning::Resource(ResourceKey::IpPool { cidr })
                }
                _ => KeyMeaning::Unknown,
            }
        }
        ["ipam", version @ ("v4" | "v6"), "allocation", address] => {
            match address.parse::<std::net::IpAddr>() {
                Ok(address) if address.is_ipv4() == (*version == "v4") => {
                    KeyMeaning::Resource(ResourceKey::IpAllocation { address })
                }
                _ => KeyMeaning::Unknown,
            }
        }
        _ => KeyMeaning::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wep(node: &str, orchestrator: &str, workload: &str, name: &str) -> ResourceKey {
        ResourceKey::WorkloadEndpoint {
            node: node.into(),
            orchestrator: orchestrator.into(),
            workload: workload.into(),
            name: name.into(),
        }
    }

    #[test]
    fn keys_follow_libcalico_go() {
        let cases = [
            (
                ResourceKey::Policy {
                    name: "allow-db".into(),
                },
                "/calico/v1/policy/tier/default/policy/allow-db",
            ),
            (
                wep("node1", "libnetwork", "libnetwork", "ep1"),
                "/calico/v1/host/node1/workload/libnetwork/libnetwork/endpoint/ep1",
            ),
            (
                ResourceKey::HostEndpoint {
                    node: "node1".into(),
                    name: "eth0".into(),
                },
                "/calico/v1/host/node1/endpoint/eth0",
            ),
            (
                ResourceKey::IpPool {
                    cidr: "10.0.0.0/8".parse().unwrap(),
                },
                "/calico/v1/ipam/v4/pool/10.0.0.0-8",
            ),
            (
                ResourceKey::IpPool {
                    cidr: "fd00::/64".parse().unwrap(),
                },
                "/calico/v1/ipam/v6/pool/fd00::-64",
            ),
        ];
        for (key, path) in cases {
            assert_eq!(keys_of(&key), vec![path.to_string()]);
            assert_eq!(classify(path), KeyMeaning::Resource(key));
        }
        assert_eq!(
            keys_of(&ResourceKey::Profile { name: "db".into() }),
            [
                "/calico/v1/policy/profile/db/tags",
                "/calico/v1/policy/profile/db/labels",
                "/calico/v1/policy/profile/db/rules"
            ]
        );
    }

    #[test]
    fn names_are_escaped_hostnames_are_not() {
        // libcalico-go's keys_test: `foo/bar` is one segment.
        assert_eq!(
            profile_part_key("foo/bar", ProfilePart::Rules),
            "/calico/v1/policy/profile/foo%2fbar/rules"
        );
        assert_eq!(escape("a%2fb/c"), "a%252fb%2fc");
        assert_eq!(unescape(&escape("a%2fb/c")), "a%2fb/c");
        let key = wep("node1", "k8s", "ns/pod", "eth%0");
        let path = "/calico/v1/host/node1/workload/k8s/ns%2fpod/endpoint/eth%250";
        assert_eq!(keys_of(&key), vec![path.to_string()]);
        assert_eq!(classify(path), KeyMeaning::Resource(key));
        assert_eq!(
            classify("/calico/v1/policy/profile/foo%2fbar/tags"),
            KeyMeaning::ProfilePart {
                name: "foo/bar".into(),
                part: ProfilePart::Tags
            }
        );
    }

    #[test]
    fn other_calico_keys_are_ignored_and_strangers_unknown() {
        for ignored in [
            "/calico/v1/Ready",
            "/calico/v1/config/LogSeverityScreen",
            "/calico/v1/host/node1/metadata",
            "/calico/v1/host/node1/bird_ip",
            "/calico/v1/host/node1/config/DefaultEndpointToHostAction",
            "/calico/v1/policy/tier/default/metadata",
        ] {
            assert_eq!(classify(ignored), KeyMeaning::Ignored, "{ignored}");
        }
        for unknown in [
            "/calico/v1/policy/tier/other/policy/p1",
            "/calico/v1/policy/profile/db/other",
            "/calico/v1/policy/profile//rules",
            "/calico/v1/ipam/v4/pool/not-a-cidr",
            "/calico/v1/ipam/v6/pool/10.0.0.0-8",
            "/calico/v1/something/else",
            "/calico/v2/policy/profile/db/rules",
        ] {
            assert_eq!(classify(unknown), KeyMeaning::Unknown, "{unknown}");
        }
    }
}
