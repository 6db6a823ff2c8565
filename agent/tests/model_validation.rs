//! Validation: one test per rule of the v1 model (reference §1, §2.4), each asserting
//! upstream's message text, the field path and the bad value; plus valid resources.
//!
//! Tests marked NEEDS-SELECTOR-PARSER only pass with the real selector module.

// Tests fail loudly on bad fixtures; unwrap is the point.
#![allow(clippy::unwrap_used)]

mod common;

use common::seeds;
use palisade::model::parse::parse_documents;
use palisade::model::validate::{FieldError, ValidationError, governed_types, normalize, validate};
use palisade::model::{Policy, PolicySpec, PolicyType, Port, Resource, Rule};

fn parse_one(yaml: &str) -> Resource {
    let mut resources = parse_documents(yaml).unwrap();
    assert_eq!(resources.len(), 1, "fixture must hold one resource");
    resources.remove(0)
}

fn errors(yaml: &str) -> Vec<FieldError> {
    match validate(&parse_one(yaml)) {
        Ok(()) => panic!("expected validation errors for:\n{yaml}"),
        Err(ValidationError { fields }) => fields,
    }
}

/// Asserts that `yaml` has exactly one problem, at `path` with `value` and `reason`, and
/// that the rendered message is upstream's single-field form.
fn assert_one(yaml: &str, path: &str, value: &str, reason: &str) {
    let resource = parse_one(yaml);
    let error = validate(&resource).expect_err("expected a validation error");
    assert_eq!(
        error.fields,
        [FieldError {
            path: path.into(),
            value: value.into(),
            reason: reason.into()
        }],
        "for:\n{yaml}"
    );
    assert_eq!(
        error.to_string(),
        format!("error with field {path} = '{value}' ({reason})")
    );
}

fn assert_valid(yaml: &str) {
    if let Err(e) = validate(&parse_one(yaml)) {
        panic!("expected valid, got {e}\nfor:\n{yaml}");
    }
}

/// A profile with one ingress rule written as a YAML flow mapping.
fn profile_rule(rule: &str) -> String {
    format!("kind: profile\napiVersion: v1\nmetadata: {{name: p}}\nspec:\n  ingress:\n  - {rule}\n")
}

fn policy(spec: &str) -> String {
    format!("kind: policy\napiVersion: v1\nmetadata: {{name: pol}}\nspec: {spec}\n")
}

fn workload(metadata: &str, spec: &str) -> String {
    format!("kind: workloadEndpoint\napiVersion: v1\nmetadata: {metadata}\nspec: {spec}\n")
}

const WEP_META: &str = "{node: host1, orchestrator: docker, workload: w1, name: eth0}";

fn host_endpoint(metadata: &str, spec: &str) -> String {
    format!("kind: hostEndpoint\napiVersion: v1\nmetadata: {metadata}\nspec: {spec}\n")
}

fn pool(cidr: &str, spec: &str) -> String {
    format!("kind: ipPool\napiVersion: v1\nmetadata: {{cidr: \"{cidr}\"}}\nspec: {spec}\n")
}

const NAME_REASON: &str = "invalid name: use 1-128 of a-z A-Z 0-9 _ . - /";

// ---- valid resources ----

#[test]
fn valid_resources_of_every_kind() {
    assert_valid(
        "kind: profile\napiVersion: v1\nmetadata:\n  name: ns/.My-valid-Profile_190\n  tags: [.My-valid-tag_190, a]\n  labels: {calico/k8s_ns: kube-system, empty: \"\"}\nspec:\n  ingress:\n  - {action: allow, protocol: tcp, source: {tag: a, nets: [10.0.0.0/8]}, destination: {ports: [80, \"8000:8080\"], notPorts: [8001]}}\n  - {action: deny, protocol: icmp, icmp: {type: 8, code: 0}, notICMP: {type: 3}}\n  - {action: log, ipVersion: 6, notProtocol: 58, source: {net: \"fd00::/8\", notNet: \"fd00:1::/32\"}}\n  - {action: pass, protocol: 132, ipVersion: 4, destination: {notNets: [192.168.0.0/16]}}\n  egress:\n  - {action: allow, protocol: udp, source: {ports: [53]}}\n  - {action: allow, protocol: 17, destination: {notPorts: [\"1:1023\"]}}\n  - {action: allow, protocol: \"6\", destination: {ports: [65535]}}\n",
    );
    assert_valid(&policy(
        "{order: 10, selector: \"role == 'db'\", doNotTrack: true, ingress: [{action: allow}], egress: [{action: allow}], types: [ingress, egress]}",
    ));
    assert_valid(&policy(
        "{preDNAT: true, ingress: [{action: deny}], types: [ingress]}",
    ));
    assert_valid(&workload(
        "{node: host-1.example, orchestrator: k8s, workload: ns/pod, name: eth0, activeInstanceID: x, labels: {app: web}}",
        "{interfaceName: cali.12345678, ipNetworks: [10.0.0.1/32, \"fd00::1/128\"], ipNATs: [{internalIP: 10.0.0.1, externalIP: 172.16.0.1}], ipv4Gateway: 169.254.1.1, ipv6Gateway: \"fe80::1\", profiles: [ns/p1, p2], mac: \"EE:EE:EE:EE:EE:EE\"}",
    ));
    assert_valid(&host_endpoint(
        "{node: h, name: eth0}",
        "{interfaceName: eth0}",
    ));
    assert_valid(&host_endpoint(
        "{node: h, name: any}",
        "{expectedIPs: [192.0.2.1]}",
    ));
    assert_valid(&pool(
        "10.0.0.0/26",
        "{ipip: {enabled: true, mode: cross-subnet}, nat-outgoing: true}",
    ));
    assert_valid(&pool(
        "10.0.0.0/26",
        "{ipip: {enabled: true, mode: always}}",
    ));
    assert_valid(&pool("fd00::/122", "{}"));
}

#[test]
fn the_seed_documents_are_valid() {
    let text = [
        seeds::PROFILES_WITH_RULES,
        seeds::PROFILES_LABELS_ONLY,
        seeds::GLOBAL_POLICIES,
        seeds::MULTIPLE_NETWORKS,
    ]
    .join("");
    for resource in parse_documents(&text).unwrap() {
        validate(&resource).unwrap();
    }
}

// ---- names, tags, labels ----

#[test]
fn profile_name_must_be_a_namespaced_name() {
    for bad in [
        "my!nvalid-Profile",
        "my-invalid-profile$",
        "has space",
        &"a".repeat(129),
    ] {
        assert_one(
            &format!("kind: profile\napiVersion: v1\nmetadata: {{name: \"{bad}\"}}\n"),
            "metadata.name",
            bad,
            NAME_REASON,
        );
    }
    assert_valid(&format!(
        "kind: profile\napiVersion: v1\nmetadata: {{name: \"{}\"}}\n",
        "a".repeat(128)
    ));
}

#[test]
fn an_empty_name_is_a_missing_identifier() {
    assert_one(
        "kind: profile\napiVersion: v1\nmetadata: {name: \"\"}\n",
        "metadata.name",
        "",
        "insufficient identifiers, missing 'name'",
    );
    assert_one(
        "kind: policy\napiVersion: v1\nmetadata: {name: \"\"}\n",
        "metadata.name",
        "",
        "insufficient identifiers, missing 'name'",
    );
}

#[test]
fn policy_name_must_be_a_namespaced_name() {
    assert_one(
        "kind: policy\napiVersion: v1\nmetadata: {name: \"a:b\"}\n",
        "metadata.name",
        "a:b",
        NAME_REASON,
    );
}

#[test]
fn tags_use_the_name_regex_without_slash() {
    assert_one(
        "kind: profile\napiVersion: v1\nmetadata: {name: p, tags: [ok, \"my!nvalid-tag\"]}\n",
        "metadata.tags[1]",
        "my!nvalid-tag",
        "invalid tag: use 1-128 of a-z A-Z 0-9 _ . -",
    );
    assert_one(
        "kind: profile\napiVersion: v1\nmetadata: {name: p, tags: [a/b]}\n",
        "metadata.tags[0]",
        "a/b",
        "invalid tag: use 1-128 of a-z A-Z 0-9 _ . -",
    );
}

#[test]
fn label_keys_are_checked() {
    assert_one(
        "kind: profile\napiVersion: v1\nmetadata: {name: p, labels: {\"rank!\": gold}}\n",
        "metadata.labels",
        "rank!",
        "invalid label key: use 1-512 of a-z A-Z 0-9 _ . - /",
    );
    let long_key = "k".repeat(513);
    assert_eq!(
        errors(&format!(
            "kind: profile\napiVersion: v1\nmetadata: {{name: p, labels: {{{long_key}: v}}}}\n"
        ))[0]
            .path,
        "metadata.labels"
    );
}

#[test]
fn label_values_are_checked() {
    assert_one(
        "kind: profile\napiVersion: v1\nmetadata: {name: p, labels: {rank: \"gold~\"}}\n",
        "metadata.labels[\"rank\"]",
        "gold~",
        "invalid label value: up to 63 of a-z A-Z 0-9 _ . -, ending with a letter or digit",
    );
    let long_value = "v".repeat(64);
    assert_eq!(
        errors(&format!(
            "kind: profile\napiVersion: v1\nmetadata: {{name: p, labels: {{k: {long_value}}}}}\n"
        ))[0]
            .value,
        long_value
    );
}

#[test]
fn endpoint_labels_are_checked_too() {
    let fields = errors(&workload(
        "{node: h, orchestrator: o, workload: w, name: n, labels: {\"~x\": y}}",
        "{interfaceName: cali0}",
    ));
    assert_eq!(fields[0].path, "metadata.labels");
    let fields = errors(&host_endpoint(
        "{node: h, name: n, labels: {x: \"y z\"}}",
        "{interfaceName: eth0}",
    ));
    assert_eq!(fields[0].path, "metadata.labels[\"x\"]");
}

// ---- rules ----

#[test]
fn ip_version_must_be_4_or_6() {
    assert_one(
        &profile_rule("{action: allow, ipVersion: 5}"),
        "spec.ingress[0].ipVersion",
        "5",
        "IP version must be 4 or 6",
    );
}

#[test]
fn protocol_names_are_lower_case_and_known() {
    assert_one(
        &profile_rule("{action: allow, protocol: TCP}"),
        "spec.ingress[0].protocol",
        "TCP",
        "protocol name invalid",
    );
    assert_one(
        &profile_rule("{action: allow, protocol: \"256\"}"),
        "spec.ingress[0].protocol",
        "256",
        "protocol name invalid",
    );
    assert_one(
        &profile_rule("{action: allow, notProtocol: gre}"),
        "spec.ingress[0].notProtocol",
        "gre",
        "protocol name invalid",
    );
    for name in ["tcp", "udp", "icmp", "icmpv6", "sctp", "udplite"] {
        assert_valid(&profile_rule(&format!(
            "{{action: allow, protocol: {name}}}"
        )));
    }
}

#[test]
fn protocol_numbers_are_1_to_255() {
    assert_one(
        &profile_rule("{action: allow, protocol: 0}"),
        "spec.ingress[0].protocol",
        "0",
        "protocol number invalid",
    );
    assert_one(
        &profile_rule("{action: allow, notProtocol: 256}"),
        "spec.ingress[0].notProtocol",
        "256",
        "protocol number invalid",
    );
    assert_valid(&profile_rule("{action: allow, protocol: 255}"));
    assert_valid(&profile_rule("{action: allow, protocol: \"1\"}"));
}

#[test]
fn icmp_type_is_0_to_254() {
    assert_one(
        &profile_rule("{action: allow, protocol: icmp, icmp: {type: 255}}"),
        "spec.ingress[0].icmp.type",
        "255",
        "ICMP type must be between 0 and 254",
    );
    assert_valid(&profile_rule(
        "{action: allow, protocol: icmp, icmp: {type: 254, code: 255}}",
    ));
    assert_valid(&profile_rule(
        "{action: allow, protocol: icmp, icmp: {type: 0}}",
    ));
}

#[test]
fn icmp_code_needs_a_type() {
    assert_one(
        &profile_rule("{action: allow, protocol: icmp, icmp: {code: 3}}"),
        "spec.ingress[0].icmp.code",
        "3",
        "ICMP code specified without an ICMP type",
    );
    assert_one(
        &profile_rule("{action: allow, protocol: icmp, notICMP: {code: 0}}"),
        "spec.ingress[0].notICMP.code",
        "0",
        "ICMP code specified without an ICMP type",
    );
}

#[test]
fn rule_tags_use_the_tag_regex() {
    assert_one(
        &profile_rule("{action: allow, source: {tag: \"a b\"}}"),
        "spec.ingress[0].source.tag",
        "a b",
        "invalid tag: use 1-128 of a-z A-Z 0-9 _ . -",
    );
    assert_one(
        &profile_rule("{action: allow, destination: {notTag: \"x/y\"}}"),
        "spec.ingress[0].destination.notTag",
        "x/y",
        "invalid tag: use 1-128 of a-z A-Z 0-9 _ . -",
    );
}

/// NEEDS-SELECTOR-PARSER.
#[test]
fn rule_selectors_must_parse() {
    for (field, yaml_field) in [("selector", "selector"), ("notSelector", "notSelector")] {
        let fields = errors(&profile_rule(&format!(
            "{{action: allow, source: {{{yaml_field}: \"thing=hello &\"}}}}"
        )));
        assert_eq!(fields.len(), 1, "{fields:?}");
        assert_eq!(fields[0].path, format!("spec.ingress[0].source.{field}"));
        assert_eq!(fields[0].value, "thing=hello &");
        assert!(
            fields[0].reason.starts_with("invalid selector: "),
            "{}",
            fields[0].reason
        );
        assert!(
            fields[0].reason.contains(" at position "),
            "{}",
            fields[0].reason
        );
    }
}

/// NEEDS-SELECTOR-PARSER.
#[test]
fn policy_selector_must_parse() {
    let fields = errors(&policy("{selector: \"role == \"}"));
    assert_eq!(fields.len(), 1, "{fields:?}");
    assert_eq!(fields[0].path, "spec.selector");
    assert_eq!(fields[0].value, "role == ");
    assert!(fields[0].reason.starts_with("invalid selector: "));
}

#[test]
fn an_empty_selector_selects_everything() {
    assert_valid(&policy("{selector: \"\"}"));
    assert_valid(&profile_rule(
        "{action: allow, source: {selector: \"\", notSelector: \"\"}}",
    ));
}

#[test]
fn port_zero_is_invalid() {
    assert_one(
        &profile_rule("{action: allow, protocol: tcp, destination: {ports: [0]}}"),
        "spec.ingress[0].destination.ports[0]",
        "0",
        "port range invalid, port number must be between 0 and 65536",
    );
    assert_one(
        &profile_rule("{action: allow, protocol: udp, source: {notPorts: [80, \"0:10\"]}}"),
        "spec.ingress[0].source.notPorts[1]",
        "0:10",
        "port range invalid, port number must be between 0 and 65536",
    );
}

#[test]
fn a_reversed_port_range_is_invalid() {
    // Decoding rejects "90:80"; a range built in code is still checked.
    let mut rule = Rule {
        protocol: Some(palisade::model::Protocol::Name("tcp".into())),
        ..Rule::default()
    };
    rule.destination.ports = vec![Port { min: 90, max: 80 }];
    let resource = Resource::Policy(Policy {
        metadata: palisade::model::PolicyMetadata {
            name: "p".into(),
            ..Default::default()
        },
        spec: PolicySpec {
            ingress: vec![rule],
            ..Default::default()
        },
    });
    let error = validate(&resource).unwrap_err();
    assert_eq!(error.fields[0].reason, "port range invalid");
    assert_eq!(error.fields[0].path, "spec.ingress[0].destination.ports[0]");
}

#[test]
fn ports_need_protocol_tcp_or_udp() {
    assert_one(
        &profile_rule("{action: allow, destination: {ports: [80]}}"),
        "spec.ingress[0].destination.ports",
        "[80]",
        "protocol does not support ports",
    );
    assert_one(
        &profile_rule("{action: allow, protocol: icmp, source: {notPorts: [\"1:2\"]}}"),
        "spec.ingress[0].source.notPorts",
        "[1:2]",
        "protocol does not support ports",
    );
    // notProtocol does not count.
    assert_one(
        &profile_rule("{action: allow, notProtocol: tcp, source: {ports: [22, 23]}}"),
        "spec.ingress[0].source.ports",
        "[22, 23]",
        "protocol does not support ports",
    );
    let fields = errors(&profile_rule(
        "{action: allow, protocol: sctp, source: {ports: [1], notPorts: [2]}, destination: {ports: [3], notPorts: [4]}}",
    ));
    let paths: Vec<&str> = fields.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "spec.ingress[0].source.ports",
            "spec.ingress[0].source.notPorts",
            "spec.ingress[0].destination.ports",
            "spec.ingress[0].destination.notPorts",
        ]
    );
    for protocol in ["tcp", "udp", "6", "17", "\"6\""] {
        assert_valid(&profile_rule(&format!(
            "{{action: allow, protocol: {protocol}, destination: {{ports: [80]}}}}"
        )));
    }
    assert_valid(&profile_rule(
        "{action: allow, protocol: icmp, destination: {ports: []}}",
    ));
}

#[test]
fn net_and_nets_do_not_mix() {
    assert_one(
        &profile_rule(
            "{action: allow, source: {net: 10.0.0.0/8}, destination: {nets: [10.1.0.0/16]}}",
        ),
        "spec.ingress[0].source.net",
        "10.0.0.0/8",
        "only one of Net and Nets fields allowed",
    );
    assert_one(
        &profile_rule("{action: allow, destination: {notNet: 10.0.0.0/8, notNets: [10.1.0.0/16]}}"),
        "spec.ingress[0].destination.notNet",
        "10.0.0.0/8",
        "only one of Net and Nets fields allowed",
    );
}

#[test]
fn cidrs_must_match_the_ip_version() {
    assert_one(
        &profile_rule("{action: allow, ipVersion: 6, source: {nets: [10.0.0.0/8]}}"),
        "spec.ingress[0].source.nets",
        "[10.0.0.0/8]",
        "rule IP version doesn't match CIDR version",
    );
    assert_one(
        &profile_rule("{action: allow, ipVersion: 4, destination: {notNet: \"fd00::/8\"}}"),
        "spec.ingress[0].destination.notNet",
        "[fd00::/8]",
        "rule IP version doesn't match CIDR version",
    );
}

#[test]
fn cidrs_must_not_mix_ip_versions() {
    assert_one(
        &profile_rule("{action: allow, source: {nets: [10.0.0.0/8, \"fd00::/8\"]}}"),
        "spec.ingress[0].source.nets",
        "[10.0.0.0/8, fd00::/8]",
        "rule contains both IPv4 and IPv6 CIDRs",
    );
    // Across source and destination, the later field is the one reported.
    assert_one(
        &profile_rule(
            "{action: allow, source: {nets: [10.0.0.0/8]}, destination: {notNets: [\"fd00::/8\"]}}",
        ),
        "spec.ingress[0].destination.notNets",
        "[fd00::/8]",
        "rule contains both IPv4 and IPv6 CIDRs",
    );
}

#[test]
fn actions_are_checked_when_decoding() {
    // `action` is required and one of allow|deny|log|pass; decoding enforces both.
    assert!(parse_documents(&profile_rule("{protocol: tcp}")).is_err());
    assert!(parse_documents(&profile_rule("{action: \"\"}")).is_err());
    assert!(parse_documents(&profile_rule("{action: Allow}")).is_err());
}

// ---- policy ----

#[test]
fn pre_dnat_and_do_not_track_exclude_each_other() {
    assert_one(
        &policy("{doNotTrack: true, preDNAT: true}"),
        "spec.preDNAT",
        "true",
        "PreDNAT and DoNotTrack cannot both be true, for a given PolicySpec",
    );
}

#[test]
fn pre_dnat_has_no_egress_rules() {
    assert_one(
        &policy("{preDNAT: true, egress: [{action: allow}]}"),
        "spec.egress",
        "1 rule",
        "PreDNAT PolicySpec cannot have any EgressRules",
    );
}

#[test]
fn pre_dnat_has_no_egress_type() {
    assert_one(
        &policy("{preDNAT: true, types: [ingress, egress]}"),
        "spec.types",
        "[ingress, egress]",
        "PreDNAT PolicySpec cannot have 'egress' Type",
    );
}

#[test]
fn types_are_not_repeated() {
    assert_one(
        &policy("{types: [ingress, ingress]}"),
        "spec.types",
        "[ingress, ingress]",
        "'ingress' type specified more than once",
    );
    assert!(parse_documents(&policy("{types: [sideways]}")).is_err());
}

#[test]
fn types_may_disagree_with_the_rules_present() {
    assert_valid(&policy("{types: [egress], ingress: [{action: allow}]}"));
    assert_valid(&policy("{types: [ingress], egress: [{action: allow}]}"));
}

// ---- workload endpoints ----

#[test]
fn workload_networks_are_single_addresses() {
    assert_one(
        &workload(
            WEP_META,
            "{interfaceName: cali0, ipNetworks: [10.0.0.1/32, 10.0.1.0/24]}",
        ),
        "spec.ipNetworks[1]",
        "10.0.1.0/24",
        "IP network contains multiple addresses",
    );
    assert_one(
        &workload(
            WEP_META,
            "{interfaceName: cali0, ipNetworks: [\"fd00::/64\"]}",
        ),
        "spec.ipNetworks[0]",
        "fd00::/64",
        "IP network contains multiple addresses",
    );
}

#[test]
fn nat_addresses_share_an_ip_version() {
    assert_one(
        &workload(
            WEP_META,
            "{interfaceName: cali0, ipNetworks: [10.0.0.1/32], ipNATs: [{internalIP: 10.0.0.1, externalIP: \"fd00::1\"}]}",
        ),
        "spec.ipNATs[0].externalIP",
        "fd00::1",
        "mismatched IP versions",
    );
}

#[test]
fn nat_internal_address_is_the_endpoints() {
    assert_one(
        &workload(
            WEP_META,
            "{interfaceName: cali0, ipNetworks: [10.0.0.1/32], ipNATs: [{internalIP: 10.0.0.2, externalIP: 172.16.0.1}]}",
        ),
        "spec.ipNATs[0].internalIP",
        "10.0.0.2",
        "NAT is not in the endpoint networks",
    );
}

#[test]
fn gateways_have_the_right_ip_version() {
    assert_one(
        &workload(WEP_META, "{interfaceName: cali0, ipv4Gateway: \"fe80::1\"}"),
        "spec.ipv4Gateway",
        "fe80::1",
        "invalid IPv4 gateway address specified",
    );
    assert_one(
        &workload(WEP_META, "{interfaceName: cali0, ipv6Gateway: 169.254.1.1}"),
        "spec.ipv6Gateway",
        "169.254.1.1",
        "invalid IPv6 gateway address specified",
    );
}

#[test]
fn workload_interface_name_is_required() {
    assert_one(
        &workload(WEP_META, "{}"),
        "spec.interfaceName",
        "",
        "an interface name is required",
    );
}

#[test]
fn interface_names_are_1_to_15_safe_characters() {
    const REASON: &str = "invalid interface name: use 1-15 of a-z A-Z 0-9 _ . -";
    assert_one(
        &workload(WEP_META, "{interfaceName: cali0123456789ab}"),
        "spec.interfaceName",
        "cali0123456789ab",
        REASON,
    );
    assert_one(
        &workload(WEP_META, "{interfaceName: \"eth/0\"}"),
        "spec.interfaceName",
        "eth/0",
        REASON,
    );
    assert_one(
        &host_endpoint("{node: h, name: n}", "{interfaceName: \"eth 0\"}"),
        "spec.interfaceName",
        "eth 0",
        REASON,
    );
    assert_valid(&workload(WEP_META, "{interfaceName: cali0123456789a}"));
}

#[test]
fn workload_identifiers_are_all_required() {
    for (missing, metadata) in [
        ("node", "{orchestrator: o, workload: w, name: n}"),
        ("orchestrator", "{node: h, workload: w, name: n}"),
        ("workload", "{node: h, orchestrator: o, name: n}"),
        (
            "name",
            "{node: h, orchestrator: o, workload: w, name: \"\"}",
        ),
    ] {
        assert_one(
            &workload(metadata, "{interfaceName: cali0}"),
            &format!("metadata.{missing}"),
            "",
            &format!("insufficient identifiers, missing '{missing}'"),
        );
    }
}

#[test]
fn node_names_have_no_slash() {
    assert_one(
        &workload(
            "{node: a/b, orchestrator: o, workload: w, name: n}",
            "{interfaceName: cali0}",
        ),
        "metadata.node",
        "a/b",
        "invalid name: use 1-128 of a-z A-Z 0-9 _ . -",
    );
}

#[test]
fn workload_and_orchestrator_are_namespaced_names() {
    let fields = errors(&workload(
        "{node: h, orchestrator: \"o!\", workload: \"w w\", name: n}",
        "{interfaceName: cali0}",
    ));
    let found: Vec<(&str, &str)> = fields
        .iter()
        .map(|f| (f.path.as_str(), f.value.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            ("metadata.orchestrator", "o!"),
            ("metadata.workload", "w w")
        ]
    );
}

#[test]
fn mac_addresses_are_checked() {
    assert_one(
        &workload(WEP_META, "{interfaceName: cali0, mac: \"ee:ee:ee:ee:ee\"}"),
        "spec.mac",
        "ee:ee:ee:ee:ee",
        "invalid MAC address",
    );
}

#[test]
fn endpoint_profile_names_are_checked() {
    assert_one(
        &workload(
            WEP_META,
            "{interfaceName: cali0, profiles: [ok, \"not ok\"]}",
        ),
        "spec.profiles[1]",
        "not ok",
        NAME_REASON,
    );
    assert_one(
        &host_endpoint(
            "{node: h, name: n}",
            "{interfaceName: eth0, profiles: [\"a$\"]}",
        ),
        "spec.profiles[0]",
        "a$",
        NAME_REASON,
    );
}

// ---- host endpoints ----

#[test]
fn host_endpoint_needs_an_interface_or_ips() {
    assert_one(
        &host_endpoint("{node: h, name: n}", "{profiles: [p]}"),
        "spec.interfaceName",
        "",
        "no interface or expected IPs have been specified",
    );
}

#[test]
fn host_endpoint_node_and_name_are_required() {
    assert_one(
        &host_endpoint("{name: n}", "{interfaceName: eth0}"),
        "metadata.node",
        "",
        "insufficient identifiers, missing 'node'",
    );
    assert_one(
        &host_endpoint("{node: h, name: \"\"}", "{interfaceName: eth0}"),
        "metadata.name",
        "",
        "insufficient identifiers, missing 'name'",
    );
}

// ---- IP pools ----

#[test]
fn pools_hold_at_least_a_block() {
    assert_one(
        &pool("10.0.0.0/27", "{}"),
        "metadata.cidr",
        "10.0.0.0/27",
        "IP pool size is too small (min /26) for use with Calico IPAM",
    );
    assert_one(
        &pool("fd00::/123", "{}"),
        "metadata.cidr",
        "fd00::/123",
        "IP pool size is too small (min /122) for use with Calico IPAM",
    );
    // A disabled pool is never allocated from.
    assert_valid(&pool("10.0.0.0/32", "{disabled: true}"));
}

#[test]
fn ipip_is_ipv4_only() {
    assert_one(
        &pool("fd00::/64", "{ipip: {enabled: true}}"),
        "spec.ipip.enabled",
        "true",
        "IPIP is not supported on an IPv6 IP pool",
    );
    assert_valid(&pool("fd00::/64", "{ipip: {enabled: false}}"));
}

#[test]
fn pools_stay_clear_of_link_local() {
    const REASON: &str = "IP pool range overlaps with reserved link local address range";
    assert_one(
        &pool("169.254.1.0/24", "{}"),
        "metadata.cidr",
        "169.254.1.0/24",
        REASON,
    );
    assert_one(
        &pool("169.0.0.0/8", "{}"),
        "metadata.cidr",
        "169.0.0.0/8",
        REASON,
    );
    assert_one(
        &pool("fe80::/64", "{}"),
        "metadata.cidr",
        "fe80::/64",
        REASON,
    );
    assert_one(&pool("fe00::/7", "{}"), "metadata.cidr", "fe00::/7", REASON);
    assert_valid(&pool("169.255.0.0/16", "{}"));
}

#[test]
fn ipip_mode_is_always_or_cross_subnet() {
    assert_one(
        &pool("10.0.0.0/16", "{ipip: {enabled: true, mode: never}}"),
        "spec.ipip.mode",
        "never",
        "IPIP mode must be 'always' or 'cross-subnet'",
    );
}

// ---- rendering ----

#[test]
fn all_problems_are_collected_and_listed() {
    let yaml =
        profile_rule("{action: allow, protocol: TCP, ipVersion: 5, destination: {ports: [80]}}");
    let error = validate(&parse_one(&yaml)).unwrap_err();
    assert_eq!(
        error.to_string(),
        "error with the following fields:\n\
         -  spec.ingress[0].ipVersion = '5' (IP version must be 4 or 6)\n\
         -  spec.ingress[0].protocol = 'TCP' (protocol name invalid)\n\
         -  spec.ingress[0].destination.ports = '[80]' (protocol does not support ports)"
    );
}

#[test]
fn the_single_problem_form_is_upstreams() {
    let error = validate(&parse_one(&profile_rule("{action: allow, protocol: TCP}"))).unwrap_err();
    assert_eq!(
        error.to_string(),
        "error with field spec.ingress[0].protocol = 'TCP' (protocol name invalid)"
    );
    let as_std: &dyn std::error::Error = &error;
    assert!(as_std.source().is_none());
}

// ---- defaults ----

fn normalized_types(spec: &str) -> Vec<PolicyType> {
    let mut resource = parse_one(&policy(spec));
    normalize(&mut resource);
    match resource {
        Resource::Policy(p) => p.spec.types,
        other => panic!("not a policy: {other:?}"),
    }
}

#[test]
fn policy_types_default_on_write() {
    use PolicyType::{Egress, Ingress};
    assert_eq!(normalized_types("{}"), [Ingress]);
    assert_eq!(normalized_types("{ingress: [{action: allow}]}"), [Ingress]);
    assert_eq!(normalized_types("{egress: [{action: allow}]}"), [Egress]);
    assert_eq!(
        normalized_types("{ingress: [{action: allow}], egress: [{action: deny}]}"),
        [Ingress, Egress]
    );
    // Given types are kept, even when they disagree with the rules.
    assert_eq!(
        normalized_types("{types: [egress], ingress: [{action: allow}]}"),
        [Egress]
    );
}

#[test]
fn normalize_changes_nothing_else() {
    let mut resource = parse_one(&policy(
        "{order: 5, selector: \"a == 'b'\", egress: [{action: allow}]}",
    ));
    let before = resource.clone();
    normalize(&mut resource);
    let (Resource::Policy(before), Resource::Policy(after)) = (before, &resource) else {
        panic!("not policies");
    };
    assert_eq!(
        after,
        &Policy {
            spec: PolicySpec {
                types: vec![PolicyType::Egress],
                ..before.spec.clone()
            },
            ..before
        }
    );
    let profile = parse_one(&profile_rule("{action: allow}"));
    let mut normalized = profile.clone();
    normalize(&mut normalized);
    assert_eq!(normalized, profile);
}

#[test]
fn governed_types_read_empty_as_both() {
    let spec = |types: Vec<PolicyType>| PolicySpec {
        types,
        ..Default::default()
    };
    assert_eq!(governed_types(&spec(vec![])), (true, true));
    assert_eq!(
        governed_types(&spec(vec![PolicyType::Ingress])),
        (true, false)
    );
    assert_eq!(
        governed_types(&spec(vec![PolicyType::Egress])),
        (false, true)
    );
    assert_eq!(
        governed_types(&spec(vec![PolicyType::Egress, PolicyType::Ingress])),
        (true, true)
    );
}
