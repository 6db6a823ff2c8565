//! Checks of one policy or profile rule [LCG v1.7.3 `validateRule`, `validateProtocol`,
//! `validatePort`, `validateICMPFields`, and the rule fields' validate tags].

use ipnet::IpNet;

use super::names::{TAG_REASON, is_tag};
use super::{Problems, list};
use crate::model::rule::PROTOCOL_NAMES;
use crate::model::{EntityRule, IcmpFields, Port, Protocol, Rule};
use crate::selector::Selector;

const PORTS_NEED_PROTOCOL: &str = "protocol does not support ports";

/// Checks `rule`, found at `path` (`spec.ingress[0]`).
pub(super) fn check_rule(path: &str, rule: &Rule, problems: &mut Problems) {
    if let Some(version) = rule.ip_version
        && version != 4
        && version != 6
    {
        problems.add(
            format!("{path}.ipVersion"),
            version,
            "IP version must be 4 or 6",
        );
    }
    if let Some(protocol) = &rule.protocol {
        check_protocol(&format!("{path}.protocol"), protocol, problems);
    }
    if let Some(protocol) = &rule.not_protocol {
        check_protocol(&format!("{path}.notProtocol"), protocol, problems);
    }
    if let Some(icmp) = &rule.icmp {
        check_icmp(&format!("{path}.icmp"), icmp, problems);
    }
    if let Some(icmp) = &rule.not_icmp {
        check_icmp(&format!("{path}.notICMP"), icmp, problems);
    }
    check_entity(&format!("{path}.source"), &rule.source, problems);
    check_entity(&format!("{path}.destination"), &rule.destination, problems);
    check_ports_have_protocol(path, rule, problems);
    check_net_forms(path, rule, problems);
    check_ip_versions(path, rule, problems);
}

/// A lower-case name from the list, or a number 1-255.
pub(super) fn check_protocol(path: &str, protocol: &Protocol, problems: &mut Problems) {
    match protocol {
        Protocol::Number(n) if !(1..=255).contains(n) => {
            problems.add(path, n, "protocol number invalid");
        }
        Protocol::Name(name) if !PROTOCOL_NAMES.iter().any(|(known, _)| known == name) => {
            problems.add(path, name, "protocol name invalid");
        }
        _ => {}
    }
}

fn check_icmp(path: &str, icmp: &IcmpFields, problems: &mut Problems) {
    // Type 255 is reserved; the code is a u8, so always in range.
    if let Some(icmp_type) = icmp.icmp_type
        && icmp_type > 254
    {
        problems.add(
            format!("{path}.type"),
            icmp_type,
            "ICMP type must be between 0 and 254",
        );
    }
    if let (Some(code), None) = (icmp.code, icmp.icmp_type) {
        problems.add(
            format!("{path}.code"),
            code,
            "ICMP code specified without an ICMP type",
        );
    }
}

fn check_entity(path: &str, entity: &EntityRule, problems: &mut Problems) {
    for (field, tag) in [("tag", &entity.tag), ("notTag", &entity.not_tag)] {
        // An empty string is "not set", as upstream's omitempty.
        if let Some(tag) = tag.as_deref().filter(|t| !t.is_empty())
            && !is_tag(tag)
        {
            problems.add(format!("{path}.{field}"), tag, TAG_REASON);
        }
    }
    for (field, selector) in [
        ("selector", &entity.selector),
        ("notSelector", &entity.not_selector),
    ] {
        if let Some(selector) = selector.as_deref().filter(|s| !s.is_empty()) {
            check_selector(&format!("{path}.{field}"), selector, problems);
        }
    }
    for (field, ports) in [("ports", &entity.ports), ("notPorts", &entity.not_ports)] {
        for (index, port) in ports.iter().enumerate() {
            check_port(&format!("{path}.{field}[{index}]"), port, problems);
        }
    }
}

/// A selector expression, reporting the parser's message and position.
pub(super) fn check_selector(path: &str, selector: &str, problems: &mut Problems) {
    if let Err(error) = Selector::parse(selector) {
        problems.add(path, selector, format!("invalid selector: {error}"));
    }
}

fn check_port(path: &str, port: &Port, problems: &mut Problems) {
    // Decoding already rejects min > max for the string form; this guards ports built in code.
    if port.min > port.max {
        problems.add(path, port, "port range invalid");
    }
    if port.min == 0 || port.max == 0 {
        problems.add(
            path,
            port,
            "port range invalid, port number must be between 0 and 65536",
        );
    }
}

/// Ports only make sense with `protocol: tcp|udp` (6|17); `notProtocol` does not count.
fn check_ports_have_protocol(path: &str, rule: &Rule, problems: &mut Problems) {
    if rule.protocol.as_ref().is_some_and(Protocol::supports_ports) {
        return;
    }
    let lists = [
        ("source.ports", &rule.source.ports),
        ("source.notPorts", &rule.source.not_ports),
        ("destination.ports", &rule.destination.ports),
        ("destination.notPorts", &rule.destination.not_ports),
    ];
    for (field, ports) in lists {
        if !ports.is_empty() {
            problems.add(format!("{path}.{field}"), list(ports), PORTS_NEED_PROTOCOL);
        }
    }
}

/// The deprecated single `net`/`notNet` and the list forms are not to be mixed in a rule.
fn check_net_forms(path: &str, rule: &Rule, problems: &mut Problems) {
    let singles = [
        ("source.net", &rule.source.net),
        ("source.notNet", &rule.source.not_net),
        ("destination.net", &rule.destination.net),
        ("destination.notNet", &rule.destination.not_net),
    ];
    let has_lists = [
        &rule.source.nets,
        &rule.source.not_nets,
        &rule.destination.nets,
        &rule.destination.not_nets,
    ]
    .iter()
    .any(|nets| !nets.is_empty());
    let first_single = singles
        .iter()
        .find_map(|(field, net)| net.map(|n| (field, n)));
    if let (true, Some((field, net))) = (has_lists, first_single) {
        problems.add(
            format!("{path}.{field}"),
            net,
            "only one of Net and Nets fields allowed",
        );
    }
}

/// CIDRs must agree with `ipVersion` and with each other, across source and destination.
fn check_ip_versions(path: &str, rule: &Rule, problems: &mut Problems) {
    let groups = [
        ("source", "net", "nets", &rule.source, false),
        ("source", "notNet", "notNets", &rule.source, true),
        ("destination", "net", "nets", &rule.destination, false),
        ("destination", "notNet", "notNets", &rule.destination, true),
    ];
    let (mut seen_v4, mut seen_v6) = (false, false);
    for (side, single, plural, entity, negated) in groups {
        let nets: Vec<&IpNet> = if negated {
            entity.all_not_nets().collect()
        } else {
            entity.all_nets().collect()
        };
        let v4 = nets.iter().any(|n| matches!(n, IpNet::V4(_)));
        let v6 = nets.iter().any(|n| matches!(n, IpNet::V6(_)));
        let plural_used = if negated {
            !entity.not_nets.is_empty()
        } else {
            !entity.nets.is_empty()
        };
        let field = format!(
            "{path}.{side}.{}",
            if plural_used { plural } else { single }
        );
        if let Some(version) = rule.ip_version
            && ((v4 && version != 4) || (v6 && version != 6))
        {
            problems.add(
                &field,
                list(&nets),
                "rule IP version doesn't match CIDR version",
            );
        }
        if (v4 && seen_v6) || (v6 && seen_v4) || (v4 && v6) {
            problems.add(
                &field,
                list(&nets),
                "rule contains both IPv4 and IPv6 CIDRs",
            );
        }
        seen_v4 |= v4;
        seen_v6 |= v6;
    }
}
