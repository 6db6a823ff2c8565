//! Reading resource files: documents, lists, arrays, JSON, strictness, error locations and
//! round trips.

// Tests fail loudly on bad fixtures; unwrap is the point.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::seeds;
use palisade::model::parse::{ParseError, parse_documents};
use palisade::model::validate::validate;
use palisade::model::{
    Action, EntityRule, HostEndpoint, HostEndpointMetadata, HostEndpointSpec, IcmpFields, IpNat,
    IpPool, IpPoolMetadata, IpPoolSpec, IpipConfig, Kind, Policy, PolicyMetadata, PolicySpec,
    PolicyType, Port, Profile, ProfileMetadata, ProfileSpec, Protocol, Resource, Rule,
    WorkloadEndpoint, WorkloadEndpointMetadata, WorkloadEndpointSpec,
};

const SEED_PROFILES: &str = seeds::PROFILES_WITH_RULES;
const SEED_POLICIES: &str = seeds::GLOBAL_POLICIES;

fn parse_err(text: &str) -> ParseError {
    match parse_documents(text) {
        Ok(resources) => panic!("expected an error, parsed {resources:?}"),
        Err(e) => e,
    }
}

fn profile_named(name: &str) -> Resource {
    Resource::Profile(Profile {
        metadata: ProfileMetadata {
            name: name.into(),
            ..Default::default()
        },
        spec: ProfileSpec::default(),
    })
}

fn names(resources: &[Resource]) -> Vec<String> {
    resources.iter().map(|r| r.key().to_string()).collect()
}

#[test]
fn seed_profiles_parse_and_validate_unchanged() {
    let resources = parse_documents(SEED_PROFILES).unwrap();
    assert_eq!(resources.len(), 2);
    for resource in &resources {
        validate(resource).unwrap();
    }
    let Resource::Profile(databases) = &resources[0] else {
        panic!("not a profile: {:?}", resources[0]);
    };
    assert_eq!(databases.metadata.name, "databases");
    assert_eq!(databases.metadata.labels["role"], "database");
    let first = &databases.spec.ingress[0];
    assert_eq!(first.action, Action::Allow);
    assert_eq!(first.protocol, Some(Protocol::Name("tcp".into())));
    assert_eq!(first.source.selector.as_deref(), Some("role == 'app'"));
    assert_eq!(first.destination.ports, vec![Port::single(3306)]);
    assert_eq!(databases.spec.ingress.len(), 2);
    assert_eq!(
        databases.spec.egress[0].destination.selector.as_deref(),
        Some("role == 'database'")
    );
    let Resource::Profile(apps) = &resources[1] else {
        panic!("not a profile: {:?}", resources[1]);
    };
    assert_eq!(apps.metadata.name, "apps");
    assert_eq!(apps.spec.egress.len(), 1);
    assert!(apps.spec.ingress.is_empty());
}

#[test]
fn seed_policies_parse_and_validate_unchanged() {
    let resources = parse_documents(SEED_POLICIES).unwrap();
    assert_eq!(
        names(&resources),
        ["Policy(name=databases)", "Policy(name=apps)"]
    );
    for resource in &resources {
        validate(resource).unwrap();
    }
    let Resource::Policy(databases) = &resources[0] else {
        panic!("not a policy");
    };
    assert_eq!(databases.spec.order, Some(0.0));
    assert_eq!(databases.spec.selector, "role == 'database'");
    assert_eq!(databases.spec.ingress.len(), 2);
    assert_eq!(databases.spec.egress.len(), 1);
    assert!(
        databases.spec.types.is_empty(),
        "types are defaulted on write, not on parse"
    );
    let Resource::Policy(apps) = &resources[1] else {
        panic!("not a policy");
    };
    assert_eq!(apps.spec.selector, "role == 'app'");
    assert_eq!(apps.spec.egress, vec![Rule::default()]);
}

#[test]
fn several_yaml_documents_in_file_order() {
    let text = "\
---
kind: profile
apiVersion: v1
metadata: {name: one}
---
---
apiVersion: v1
kind: policy
metadata: {name: two}
spec: {selector: all()}
...
---
kind: profile
apiVersion: v1
metadata: {name: three}
";
    let resources = parse_documents(text).unwrap();
    assert_eq!(
        names(&resources),
        [
            "Profile(name=one)",
            "Policy(name=two)",
            "Profile(name=three)"
        ]
    );
}

#[test]
fn a_json_object() {
    let text = r#"{
	"kind": "hostEndpoint",
	"apiVersion": "v1",
	"metadata": {"name": "eth0", "node": "host1", "labels": {"env": "prod"}},
	"spec": {"interfaceName": "eth0", "expectedIPs": ["192.0.2.1", "2001:db8::1"]}
}"#;
    let resources = parse_documents(text).unwrap();
    assert_eq!(names(&resources), ["HostEndpoint(node=host1, name=eth0)"]);
    let Resource::HostEndpoint(endpoint) = &resources[0] else {
        panic!("not a host endpoint");
    };
    assert_eq!(endpoint.spec.expected_ips.len(), 2);
}

#[test]
fn a_json_array() {
    let text = r#"[
  {"kind": "profile", "apiVersion": "v1", "metadata": {"name": "a"}},
  {"kind": "ipPool", "apiVersion": "v1", "metadata": {"cidr": "10.1.0.0/16"}, "spec": {"nat-outgoing": true}}
]"#;
    let resources = parse_documents(text).unwrap();
    assert_eq!(
        names(&resources),
        ["Profile(name=a)", "IPPool(cidr=10.1.0.0/16)"]
    );
}

/// A policy's order reads as the same number from JSON as from YAML, so that what
/// `palisade get -o json` writes applies back unchanged (found by the `resources` fuzz
/// target: serde_json's default float parsing was one unit in the last place off here).
#[test]
fn a_json_order_reads_back_exactly() {
    let order = 100.58888888888889_f64;
    for text in [
        format!(
            r#"{{"kind": "policy", "apiVersion": "v1", "metadata": {{"name": "p"}}, "spec": {{"order": {order}}}}}"#
        ),
        format!("kind: policy\napiVersion: v1\nmetadata: {{name: p}}\nspec: {{order: {order}}}\n"),
    ] {
        let resources = parse_documents(&text).unwrap();
        let Resource::Policy(policy) = &resources[0] else {
            panic!("not a policy");
        };
        assert_eq!(policy.spec.order, Some(order), "{text}");
    }
}

#[test]
fn a_yaml_list_kind() {
    let text = "\
kind: profileList
apiVersion: v1
metadata: {}
items:
- metadata: {name: a}
- kind: profile
  apiVersion: v1
  metadata: {name: b}
  spec:
    egress: [{action: allow}]
";
    let resources = parse_documents(text).unwrap();
    assert_eq!(names(&resources), ["Profile(name=a)", "Profile(name=b)"]);
}

#[test]
fn every_list_kind_is_known() {
    for kind in Kind::ALL {
        let text = format!("kind: {}\napiVersion: v1\nitems: []\n", kind.list_name());
        assert_eq!(parse_documents(&text).unwrap(), vec![], "{kind}");
    }
}

#[test]
fn mixed_documents_lists_and_arrays() {
    let text = r#"
kind: profile
apiVersion: v1
metadata: {name: single}
---
[{"kind": "profile", "apiVersion": "v1", "metadata": {"name": "in-array"}},
 {"kind": "policyList", "apiVersion": "v1", "items": [{"metadata": {"name": "listed-in-array"}}]}]
---
kind: workloadEndpointList
apiVersion: v1
items:
- metadata: {node: h, orchestrator: docker, workload: w, name: eth0}
  spec: {interfaceName: cali1, ipNetworks: [10.0.0.1/32]}
"#;
    let resources = parse_documents(text).unwrap();
    assert_eq!(
        names(&resources),
        [
            "Profile(name=single)",
            "Profile(name=in-array)",
            "Policy(name=listed-in-array)",
            "WorkloadEndpoint(node=h, orchestrator=docker, workload=w, name=eth0)",
        ]
    );
}

#[test]
fn empty_input_has_no_resources() {
    for text in [
        "",
        "\n",
        "# just a comment\n",
        "---\n",
        "---\n---\n...\n",
        "[]",
        "kind: profileList\napiVersion: v1\n",
    ] {
        assert_eq!(parse_documents(text).unwrap(), vec![], "{text:?}");
    }
}

#[test]
fn a_missing_spec_is_an_empty_spec() {
    let resources =
        parse_documents("kind: profile\napiVersion: v1\nmetadata: {name: a}\nspec:\n").unwrap();
    assert_eq!(resources, vec![profile_named("a")]);
}

#[test]
fn unknown_kinds_are_rejected_case_sensitively() {
    for (kind, version) in [
        ("Profile", "v1"),
        ("bgppeer", "v1"),
        ("fooList", "v1"),
        ("ProfileList", "v1"),
    ] {
        let text = format!("kind: {kind}\napiVersion: {version}\nmetadata: {{name: a}}\n");
        assert_eq!(
            parse_err(&text).to_string(),
            format!("Unknown resource type ({kind}) and/or version ({version})")
        );
    }
}

#[test]
fn unknown_versions_are_rejected() {
    assert_eq!(
        parse_err("kind: profile\napiVersion: v7\nmetadata: {name: a}\n").to_string(),
        "Unknown resource type (profile) and/or version (v7)"
    );
    assert_eq!(
        parse_err("kind: profile\nmetadata: {name: a}\n").to_string(),
        "Unknown resource type (profile) and/or version ()"
    );
    assert_eq!(
        parse_err("kind: profileList\napiVersion: v3\nitems: []\n").to_string(),
        "Unknown resource type (profileList) and/or version (v3)"
    );
}

#[test]
fn unknown_fields_are_rejected_with_their_path() {
    let text = "\
kind: profile
apiVersion: v1
metadata: {name: a}
spec:
  ingress:
  - action: allow
    protocl: tcp
";
    let error = parse_err(text);
    assert_eq!(error.path, "spec.ingress[0].protocl");
    assert!(
        error.to_string().starts_with(
            "spec.ingress[0].protocl = 'tcp': unknown field `protocl`, expected one of"
        ),
        "{error}"
    );

    let error = parse_err("kind: profile\napiVersion: v1\nmetadata: {name: a, colour: red}\n");
    assert_eq!(error.path, "metadata.colour");
    assert!(error.message.contains("unknown field `colour`"), "{error}");

    let error = parse_err("kind: profile\napiVersion: v1\nmetadata: {name: a}\nstatus: {}\n");
    assert_eq!(error.path, "status");
    assert!(
        error.message.starts_with("unknown field `status`"),
        "{error}"
    );

    let error = parse_err("kind: profileList\napiVersion: v1\nitem: []\n");
    assert_eq!(error.path, "item");

    let error = parse_err("kind: profileList\napiVersion: v1\nmetadata: {resourceVersion: x}\n");
    assert_eq!(error.path, "metadata.resourceVersion");
}

#[test]
fn errors_name_document_and_item() {
    let text = "\
kind: profile
apiVersion: v1
metadata: {name: a}
---
- kind: profile
  apiVersion: v1
  metadata: {name: b}
- kind: profile
  apiVersion: v1
  metadata: {name: c}
  spec:
    egress:
    - action: allow
      destination: {nets: [10.0.0.300/8]}
";
    let error = parse_err(text);
    assert_eq!(error.document, Some(2));
    assert_eq!(
        error.to_string(),
        "document 2: [1].spec.egress[0].destination.nets[0] = '10.0.0.300/8': invalid IP address syntax"
    );

    let text = "\
kind: policyList
apiVersion: v1
items:
- metadata: {name: a}
- metadata: {name: b}
  spec:
    ingress:
    - action: deny
      protocol: tcp
      destination: {ports: [\"90:80\"]}
";
    assert_eq!(
        parse_err(text).to_string(),
        "items[1].spec.ingress[0].destination.ports[0] = '90:80': minimum port number (90) is \
         greater than maximum port number (80) in port range"
    );
}

#[test]
fn a_single_document_is_not_numbered() {
    let error = parse_err(
        "kind: profile\napiVersion: v1\nmetadata: {name: a}\nspec: {ingress: [{action: permit}]}\n",
    );
    assert_eq!(error.document, None);
    assert_eq!(
        error.to_string(),
        "spec.ingress[0].action: unknown variant `permit`, expected one of `allow`, `deny`, `log`, `pass`"
    );
}

#[test]
fn list_items_must_be_of_the_list_kind() {
    let error = parse_err(
        "kind: profileList\napiVersion: v1\nitems:\n- kind: policy\n  metadata: {name: a}\n",
    );
    assert_eq!(
        error.to_string(),
        "items[0].kind = 'policy': an item of a profileList must have kind profile"
    );
}

#[test]
fn shape_errors() {
    assert_eq!(
        parse_err("kind: profile\napiVersion: v1\nmetadata: {name: a}\nspec: {ingress: [{}]}\n")
            .to_string(),
        "spec.ingress[0]: missing field `action`"
    );
    assert_eq!(
        parse_err("kind: profile\napiVersion: v1\nspec: {}\n").to_string(),
        "missing field `metadata` in profile"
    );
    assert!(
        parse_err("just a string\n")
            .to_string()
            .starts_with("a resource must be a mapping")
    );
    assert_eq!(
        parse_err("kind: policy\napiVersion: v1\nmetadata: {name: a}\nspec: {types: [ingres]}\n")
            .to_string(),
        "spec.types[0]: unknown variant `ingres`, expected `ingress` or `egress`"
    );
    assert_eq!(
        parse_err("kind: profile\napiVersion: v1\nmetadata: {name: a}\nspec: {ingress: [{action: allow, icmp: {type: 300}}]}\n")
            .to_string(),
        "spec.ingress[0].icmp.type: invalid value: integer `300`, expected u8"
    );
    let syntax = parse_err("kind: profile\napiVersion: v1\nmetadata: {name: [\n");
    assert!(syntax.to_string().contains("line"), "{syntax}");
}

#[test]
fn protocols_and_ports_keep_their_written_form() {
    let text = "\
kind: profile
apiVersion: v1
metadata: {name: a}
spec:
  ingress:
  - {action: allow, protocol: 6, destination: {ports: [80, \"8080\", \"9000:9010\"]}}
  - {action: allow, protocol: \"17\"}
  - {action: allow, protocol: \"256\"}
  - {action: allow, protocol: TCP}
";
    let resources = parse_documents(text).unwrap();
    let Resource::Profile(profile) = &resources[0] else {
        panic!("not a profile");
    };
    let protocols: Vec<_> = profile
        .spec
        .ingress
        .iter()
        .map(|r| r.protocol.clone())
        .collect();
    assert_eq!(
        protocols,
        [
            Some(Protocol::Number(6)),
            Some(Protocol::Number(17)),
            Some(Protocol::Name("256".into())),
            Some(Protocol::Name("TCP".into())),
        ]
    );
    assert_eq!(
        profile.spec.ingress[0].destination.ports,
        [
            Port::single(80),
            Port::single(8080),
            Port {
                min: 9000,
                max: 9010
            }
        ]
    );
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn full_rule() -> Rule {
    Rule {
        action: Action::Deny,
        ip_version: Some(4),
        protocol: Some(Protocol::Name("tcp".into())),
        not_protocol: Some(Protocol::Number(17)),
        icmp: Some(IcmpFields {
            icmp_type: Some(8),
            code: Some(0),
        }),
        not_icmp: Some(IcmpFields {
            icmp_type: Some(3),
            code: Some(1),
        }),
        source: full_entity(),
        destination: EntityRule {
            net: Some("10.9.0.0/16".parse().unwrap()),
            not_net: Some("10.9.9.0/24".parse().unwrap()),
            ..full_entity()
        },
    }
}

fn full_entity() -> EntityRule {
    EntityRule {
        tag: Some("web".into()),
        not_tag: Some("db".into()),
        net: None,
        not_net: None,
        nets: vec![
            "10.0.0.0/8".parse().unwrap(),
            "192.168.0.0/16".parse().unwrap(),
        ],
        not_nets: vec!["10.1.0.0/16".parse().unwrap()],
        selector: Some("role == 'app' && has(x)".into()),
        not_selector: Some("env in {'dev', 'test'}".into()),
        ports: vec![
            Port::single(80),
            Port {
                min: 8000,
                max: 8080,
            },
        ],
        not_ports: vec![Port::single(8001)],
    }
}

/// One resource of every kind with every field set.
fn every_kind_fully_set() -> Vec<Resource> {
    vec![
        Resource::Profile(Profile {
            metadata: ProfileMetadata {
                name: "ns/profile-1".into(),
                tags: vec!["web".into(), "tier-1".into()],
                labels: labels(&[("role", "web"), ("calico/k8s_ns", "default")]),
            },
            spec: ProfileSpec {
                ingress: vec![full_rule(), Rule::default()],
                egress: vec![Rule {
                    action: Action::Pass,
                    ..Rule::default()
                }],
            },
        }),
        Resource::Policy(Policy {
            metadata: PolicyMetadata {
                name: "allow-web".into(),
                annotations: labels(&[("owner", "team a"), ("note", "multi\nline")]),
            },
            spec: PolicySpec {
                order: Some(12.5),
                selector: "role == 'web'".into(),
                ingress: vec![full_rule()],
                egress: vec![Rule {
                    action: Action::Log,
                    ..Rule::default()
                }],
                do_not_track: true,
                pre_dnat: true,
                types: vec![PolicyType::Ingress, PolicyType::Egress],
            },
        }),
        Resource::WorkloadEndpoint(WorkloadEndpoint {
            metadata: WorkloadEndpointMetadata {
                name: "eth0".into(),
                workload: "container-1".into(),
                orchestrator: "libnetwork".into(),
                node: "host-1".into(),
                active_instance_id: "abc123".into(),
                labels: labels(&[("app", "frontend")]),
            },
            spec: WorkloadEndpointSpec {
                ip_networks: vec![
                    "10.0.0.5/32".parse().unwrap(),
                    "fd00::5/128".parse().unwrap(),
                ],
                ip_nats: vec![IpNat {
                    internal_ip: "10.0.0.5".parse().unwrap(),
                    external_ip: "172.16.0.5".parse().unwrap(),
                }],
                ipv4_gateway: Some("169.254.1.1".parse().unwrap()),
                ipv6_gateway: Some("fe80::1".parse().unwrap()),
                profiles: vec!["ns/profile-1".into(), "other".into()],
                interface_name: "cali0123456789a".into(),
                mac: Some("ee:ee:ee:ee:ee:ee".into()),
            },
        }),
        Resource::HostEndpoint(HostEndpoint {
            metadata: HostEndpointMetadata {
                name: "eth0".into(),
                node: "host-1".into(),
                labels: labels(&[("host", "yes")]),
            },
            spec: HostEndpointSpec {
                interface_name: Some("eth0".into()),
                expected_ips: vec![
                    "192.0.2.10".parse().unwrap(),
                    "2001:db8::10".parse().unwrap(),
                ],
                profiles: vec!["ns/profile-1".into()],
            },
        }),
        Resource::IpPool(IpPool {
            metadata: IpPoolMetadata {
                cidr: "10.100.0.0/16".parse().unwrap(),
            },
            spec: IpPoolSpec {
                ipip: Some(IpipConfig {
                    enabled: true,
                    mode: Some("cross-subnet".into()),
                }),
                nat_outgoing: true,
                disabled: true,
            },
        }),
    ]
}

#[test]
fn every_kind_round_trips_through_yaml() {
    for resource in every_kind_fully_set() {
        let text = serde_yaml_ng::to_string(&resource).unwrap();
        assert_eq!(parse_documents(&text).unwrap(), vec![resource], "{text}");
    }
}

#[test]
fn every_kind_round_trips_through_json() {
    for resource in every_kind_fully_set() {
        let text = serde_json::to_string_pretty(&resource).unwrap();
        assert_eq!(parse_documents(&text).unwrap(), vec![resource], "{text}");
    }
}

#[test]
fn a_list_of_every_kind_round_trips_as_an_array() {
    let resources = every_kind_fully_set();
    let yaml = serde_yaml_ng::to_string(&resources).unwrap();
    assert_eq!(parse_documents(&yaml).unwrap(), resources);
    let json = serde_json::to_string(&resources).unwrap();
    assert_eq!(parse_documents(&json).unwrap(), resources);
}

#[test]
fn the_envelope_is_written_in_calicoctl_order() {
    let json = serde_json::to_string(&profile_named("a")).unwrap();
    assert_eq!(
        json,
        r#"{"kind":"profile","apiVersion":"v1","metadata":{"name":"a"},"spec":{}}"#
    );
}

#[test]
fn resource_deserialize_is_as_strict_as_parse() {
    let ok: Resource =
        serde_json::from_str(r#"{"kind":"profile","apiVersion":"v1","metadata":{"name":"a"}}"#)
            .unwrap();
    assert_eq!(ok, profile_named("a"));
    let error = serde_json::from_str::<Resource>(r#"{"kind":"Profile","apiVersion":"v1"}"#)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("Unknown resource type (Profile) and/or version (v1)"),
        "{error}"
    );
}
