//! Checks of each resource kind: metadata, spec, and the cross-field rules
//! [LCG v1.7.3 `lib/api/*.go` validate tags, `validator.go`, `common.go`].

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::names::{
    INTERFACE_REASON, LABEL_KEY_REASON, LABEL_VALUE_REASON, MAC_REASON, NAME_REASON,
    NAMESPACED_NAME_REASON, TAG_REASON, is_interface, is_label_key, is_label_value, is_mac,
    is_name, is_namespaced_name, is_tag,
};
use super::rules::{check_rule, check_selector};
use super::{Problems, list};
use crate::model::{
    HostEndpoint, IpAllocation, IpPool, Policy, PolicyType, Profile, Rule, WorkloadEndpoint,
};

pub(super) fn check_profile(profile: &Profile, problems: &mut Problems) {
    let metadata = &profile.metadata;
    check_identifier("metadata.name", "name", &metadata.name, problems);
    for (index, tag) in metadata.tags.iter().enumerate() {
        if !is_tag(tag) {
            problems.add(format!("metadata.tags[{index}]"), tag, TAG_REASON);
        }
    }
    check_labels("metadata.labels", &metadata.labels, problems);
    check_rules("spec.ingress", &profile.spec.ingress, problems);
    check_rules("spec.egress", &profile.spec.egress, problems);
}

pub(super) fn check_policy(policy: &Policy, problems: &mut Problems) {
    check_identifier("metadata.name", "name", &policy.metadata.name, problems);
    let spec = &policy.spec;
    // `""` selects everything, like `all()`.
    if !spec.selector.is_empty() {
        check_selector("spec.selector", &spec.selector, problems);
    }
    check_rules("spec.ingress", &spec.ingress, problems);
    check_rules("spec.egress", &spec.egress, problems);

    if spec.do_not_track && spec.pre_dnat {
        problems.add(
            "spec.preDNAT",
            true,
            "PreDNAT and DoNotTrack cannot both be true, for a given PolicySpec",
        );
    }
    if spec.pre_dnat && !spec.egress.is_empty() {
        problems.add(
            "spec.egress",
            rule_count(&spec.egress),
            "PreDNAT PolicySpec cannot have any EgressRules",
        );
    }
    let types = list(spec.types.iter().map(|t| type_name(*t)));
    if spec.pre_dnat && spec.types.contains(&PolicyType::Egress) {
        problems.add(
            "spec.types",
            &types,
            "PreDNAT PolicySpec cannot have 'egress' Type",
        );
    }
    for (index, policy_type) in spec.types.iter().enumerate() {
        if spec.types[..index].contains(policy_type) {
            problems.add(
                "spec.types",
                &types,
                format!(
                    "'{}' type specified more than once",
                    type_name(*policy_type)
                ),
            );
        }
    }
}

pub(super) fn check_workload_endpoint(endpoint: &WorkloadEndpoint, problems: &mut Problems) {
    let metadata = &endpoint.metadata;
    // All four identifiers are required, in the order libcalico-go checks them.
    check_node("metadata.node", &metadata.node, problems);
    check_identifier(
        "metadata.orchestrator",
        "orchestrator",
        &metadata.orchestrator,
        problems,
    );
    check_identifier(
        "metadata.workload",
        "workload",
        &metadata.workload,
        problems,
    );
    check_identifier("metadata.name", "name", &metadata.name, problems);
    check_labels("metadata.labels", &metadata.labels, problems);

    let spec = &endpoint.spec;
    for (index, network) in spec.ip_networks.iter().enumerate() {
        if network.prefix_len() != network.max_prefix_len() {
            problems.add(
                format!("spec.ipNetworks[{index}]"),
                network,
                "IP network contains multiple addresses",
            );
        }
    }
    for (index, nat) in spec.ip_nats.iter().enumerate() {
        if nat.internal_ip.is_ipv4() != nat.external_ip.is_ipv4() {
            problems.add(
                format!("spec.ipNATs[{index}].externalIP"),
                nat.external_ip,
                "mismatched IP versions",
            );
        }
        if !spec
            .ip_networks
            .iter()
            .any(|n| n.contains(&nat.internal_ip))
        {
            problems.add(
                format!("spec.ipNATs[{index}].internalIP"),
                nat.internal_ip,
                "NAT is not in the endpoint networks",
            );
        }
    }
    if let Some(gateway) = spec.ipv4_gateway.filter(|g| !g.is_ipv4()) {
        problems.add(
            "spec.ipv4Gateway",
            gateway,
            "invalid IPv4 gateway address specified",
        );
    }
    if let Some(gateway) = spec.ipv6_gateway.filter(|g| !g.is_ipv6()) {
        problems.add(
            "spec.ipv6Gateway",
            gateway,
            "invalid IPv6 gateway address specified",
        );
    }
    check_profile_names("spec.profiles", &spec.profiles, problems);
    // Required (upstream's `interface` tag has no omitempty here).
    if spec.interface_name.is_empty() {
        problems.add("spec.interfaceName", "", "an interface name is required");
    } else if !is_interface(&spec.interface_name) {
        problems.add("spec.interfaceName", &spec.interface_name, INTERFACE_REASON);
    }
    if let Some(mac) = spec.mac.as_deref().filter(|m| !m.is_empty())
        && !is_mac(mac)
    {
        problems.add("spec.mac", mac, MAC_REASON);
    }
}

pub(super) fn check_host_endpoint(endpoint: &HostEndpoint, problems: &mut Problems) {
    let metadata = &endpoint.metadata;
    check_node("metadata.node", &metadata.node, problems);
    check_identifier("metadata.name", "name", &metadata.name, problems);
    check_labels("metadata.labels", &metadata.labels, problems);

    let spec = &endpoint.spec;
    let interface = spec.interface_name.as_deref().unwrap_or_default();
    if !interface.is_empty() && !is_interface(interface) {
        problems.add("spec.interfaceName", interface, INTERFACE_REASON);
    }
    check_profile_names("spec.profiles", &spec.profiles, problems);
    if interface.is_empty() && spec.expected_ips.is_empty() {
        problems.add(
            "spec.interfaceName",
            "",
            "no interface or expected IPs have been specified",
        );
    }
}

pub(super) fn check_ip_pool(pool: &IpPool, problems: &mut Problems) {
    let cidr = pool.metadata.cidr;
    let spec = &pool.spec;
    if let Some(ipip) = &spec.ipip {
        if ipip.enabled && matches!(cidr, IpNet::V6(_)) {
            problems.add(
                "spec.ipip.enabled",
                true,
                "IPIP is not supported on an IPv6 IP pool",
            );
        }
        if let Some(mode) = ipip.mode.as_deref()
            && !matches!(mode, "" | "always" | "cross-subnet")
        {
            problems.add(
                "spec.ipip.mode",
                mode,
                "IPIP mode must be 'always' or 'cross-subnet'",
            );
        }
    }
    // Calico IPAM hands out blocks of 64 addresses; a disabled pool is not allocated from.
    let host_bits = cidr.max_prefix_len() - cidr.prefix_len();
    if !spec.disabled && host_bits < 6 {
        let reason = match cidr {
            IpNet::V4(_) => "IP pool size is too small (min /26) for use with Calico IPAM",
            IpNet::V6(_) => "IP pool size is too small (min /122) for use with Calico IPAM",
        };
        problems.add("metadata.cidr", cidr, reason);
    }
    let link_local = match cidr {
        IpNet::V4(_) => IpNet::V4(V4_LINK_LOCAL),
        IpNet::V6(_) => IpNet::V6(V6_LINK_LOCAL),
    };
    if overlaps(&cidr, &link_local) {
        problems.add(
            "metadata.cidr",
            cidr,
            "IP pool range overlaps with reserved link local address range",
        );
    }
}

pub(super) fn check_ip_allocation(allocation: &IpAllocation, problems: &mut Problems) {
    let address = allocation.metadata.address;
    let spec = &allocation.spec;
    if !spec.pool.contains(&address) {
        problems.add(
            "metadata.address",
            address,
            format!("address is not in its pool {}", spec.pool),
        );
    }
    check_node("spec.node", &spec.node, problems);
    if let Some(endpoint) = &spec.endpoint {
        check_identifier("spec.endpoint", "name", endpoint, problems);
    }
}

/// Addresses a pool must not hand out: hosts use them for their own purposes (Calico's
/// workload gateway is 169.254.1.1).
const V4_LINK_LOCAL: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(169, 254, 0, 0), 16);
const V6_LINK_LOCAL: Ipv6Net = Ipv6Net::new_assert(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10);

/// Two CIDRs overlap when either contains the other's first address.
fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

fn check_rules(path: &str, rules: &[Rule], problems: &mut Problems) {
    for (index, rule) in rules.iter().enumerate() {
        check_rule(&format!("{path}[{index}]"), rule, problems);
    }
}

/// A required `namespacedname` identifier (resource, workload, orchestrator names).
fn check_identifier(path: &str, id: &str, value: &str, problems: &mut Problems) {
    if value.is_empty() {
        problems.add(
            path,
            value,
            format!("insufficient identifiers, missing '{id}'"),
        );
    } else if !is_namespaced_name(value) {
        problems.add(path, value, NAMESPACED_NAME_REASON);
    }
}

/// A required node name (the stricter `name` regex: no `/`).
fn check_node(path: &str, node: &str, problems: &mut Problems) {
    if node.is_empty() {
        problems.add(path, node, "insufficient identifiers, missing 'node'");
    } else if !is_name(node) {
        problems.add(path, node, NAME_REASON);
    }
}

fn check_profile_names(path: &str, profiles: &[String], problems: &mut Problems) {
    for (index, profile) in profiles.iter().enumerate() {
        if !is_namespaced_name(profile) {
            problems.add(format!("{path}[{index}]"), profile, NAMESPACED_NAME_REASON);
        }
    }
}

/// Label keys and values (§2.4); a bad value is reported under its key's path.
pub(super) fn check_labels(path: &str, labels: &BTreeMap<String, String>, problems: &mut Problems) {
    for (key, value) in labels {
        if !is_label_key(key) {
            problems.add(path, key, LABEL_KEY_REASON);
        }
        if !is_label_value(value) {
            problems.add(format!("{path}[{key:?}]"), value, LABEL_VALUE_REASON);
        }
    }
}

fn rule_count(rules: &[Rule]) -> String {
    match rules.len() {
        1 => "1 rule".to_string(),
        n => format!("{n} rules"),
    }
}

fn type_name(policy_type: PolicyType) -> &'static str {
    match policy_type {
        PolicyType::Ingress => "ingress",
        PolicyType::Egress => "egress",
    }
}
