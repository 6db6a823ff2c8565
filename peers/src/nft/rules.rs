//! One v1 rule as one nftables rule: sets and anonymous sets say in one rule what iptables
//! needs mark blocks and port splits for.

use std::collections::BTreeMap;

use ipnet::IpNet;
use palisade::model::{Action, EntityRule, IcmpFields, Port, Rule};
use palisade::selector::Selector;
use sha2::{Digest, Sha256};

use crate::view::{Family, applies_to, entity_selectors};

/// The mark bit a `pass` sets, so that the endpoint chain skips to its profiles.
pub const PASS_MARK: u32 = 0x0200_0000;

/// The selector sets the rules use: set name -> selector.
pub type SetsUsed = BTreeMap<String, Selector>;

/// The named set of a selector: `s_` and 20 hex digits of the SHA-256 of its unique ID
/// (nft identifiers cannot hold the ID's `:`).
pub fn set_name(selector: &Selector) -> String {
    let digest = Sha256::digest(selector.unique_id().as_bytes());
    let hex: String = digest.iter().take(10).map(|b| format!("{b:02x}")).collect();
    format!("s_{hex}")
}

/// Where a rule sits: a policy's `pass` skips to the profiles, a profile's ends the profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Policy,
    Profile,
}

/// The rule as one nft rule, or `None` when it does not apply to `family` (see
/// [`applies_to`], or a CIDR list holds only the other family's CIDRs).
pub fn render_rule(
    rule: &Rule,
    owner: Owner,
    family: Family,
    sets: &mut SetsUsed,
) -> Option<String> {
    if !applies_to(rule, family) {
        return None;
    }
    let mut parts = Vec::new();
    if let Some(number) = rule.protocol.as_ref().and_then(|p| p.number()) {
        parts.push(format!("meta l4proto {number}"));
    }
    if let Some(number) = rule.not_protocol.as_ref().and_then(|p| p.number()) {
        parts.push(format!("meta l4proto != {number}"));
    }
    let ports_header = match rule.protocol.as_ref().and_then(|p| p.number()) {
        Some(17) => "udp",
        _ => "tcp",
    };
    for (entity, source) in [(&rule.source, true), (&rule.destination, false)] {
        parts.extend(entity_parts(entity, source, family, ports_header, sets)?);
    }
    let icmp = match family {
        Family::V4 => "icmp",
        Family::V6 => "icmpv6",
    };
    if let Some(IcmpFields {
        icmp_type: Some(t),
        code,
    }) = rule.icmp
    {
        parts.push(format!("{icmp} type {t}"));
        if let Some(c) = code {
            parts.push(format!("{icmp} code {c}"));
        }
    }
    if let Some(IcmpFields {
        icmp_type: Some(t),
        code,
    }) = rule.not_icmp
    {
        parts.push(match code {
            Some(c) => format!("{icmp} type . {icmp} code != {{ {t} . {c} }}"),
            None => format!("{icmp} type != {t}"),
        });
    }
    parts.push(verdict(rule.action, owner));
    Some(parts.join(" "))
}

fn verdict(action: Action, owner: Owner) -> String {
    match (action, owner) {
        (Action::Allow, _) => "accept".into(),
        (Action::Deny, _) => "drop".into(),
        (Action::Pass, Owner::Policy) => format!("meta mark set meta mark | {PASS_MARK:#x} return"),
        (Action::Pass, Owner::Profile) => "return".into(),
        (Action::Log, _) => "log prefix \"calico-packet: \" level notice".into(),
    }
}

fn entity_parts(
    entity: &EntityRule,
    source: bool,
    family: Family,
    ports_header: &str,
    sets: &mut SetsUsed,
) -> Option<Vec<String>> {
    let address = match (family, source) {
        (Family::V4, true) => "ip saddr",
        (Family::V4, false) => "ip daddr",
        (Family::V6, true) => "ip6 saddr",
        (Family::V6, false) => "ip6 daddr",
    };
    let port = if source { "sport" } else { "dport" };
    let mut parts = Vec::new();
    if let Some(nets) = nets_of(entity.all_nets(), family)? {
        parts.push(format!("{address} {nets}"));
    }
    let selectors = entity_selectors(entity)?;
    for selector in &selectors.positive {
        let name = set_name(selector);
        sets.entry(name.clone()).or_insert_with(|| selector.clone());
        parts.push(format!("{address} @{name}"));
    }
    if let Some(nets) = nets_of(entity.all_not_nets(), family)? {
        parts.push(format!("{address} != {nets}"));
    }
    for selector in &selectors.negative {
        let name = set_name(selector);
        sets.entry(name.clone()).or_insert_with(|| selector.clone());
        parts.push(format!("{address} != @{name}"));
    }
    if !entity.ports.is_empty() {
        parts.push(format!("{ports_header} {port} {}", port_set(&entity.ports)));
    }
    if !entity.not_ports.is_empty() {
        parts.push(format!(
            "{ports_header} {port} != {}",
            port_set(&entity.not_ports)
        ));
    }
    Some(parts)
}

/// `Some(None)` for no CIDRs, `Some(Some("{ ... }"))` for the family's CIDRs (nested ones
/// dropped: an interval set may not overlap), `None` if only other-family CIDRs were given.
fn nets_of<'a>(nets: impl Iterator<Item = &'a IpNet>, family: Family) -> Option<Option<String>> {
    let all: Vec<IpNet> = nets.map(IpNet::trunc).collect();
    let mut kept: Vec<IpNet> = all
        .iter()
        .copied()
        .filter(|n| Family::of(&n.addr()) == family)
        .collect();
    if all.is_empty() {
        return Some(None);
    }
    if kept.is_empty() {
        return None;
    }
    kept.sort_by_key(|n| (n.prefix_len(), n.network()));
    let mut outer: Vec<IpNet> = Vec::new();
    for net in kept {
        if !outer.iter().any(|o| o.contains(&net)) {
            outer.push(net);
        }
    }
    let list: Vec<String> = outer.iter().map(IpNet::to_string).collect();
    Some(Some(format!("{{ {} }}", list.join(", "))))
}

/// `{ 80, 8000-8080 }`, overlapping and touching ranges merged (an interval set may not
/// overlap).
fn port_set(ports: &[Port]) -> String {
    let mut sorted = ports.to_vec();
    sorted.sort();
    let mut merged: Vec<Port> = Vec::new();
    for port in sorted {
        match merged.last_mut() {
            Some(last) if u32::from(port.min) <= u32::from(last.max) + 1 => {
                last.max = last.max.max(port.max);
            }
            _ => merged.push(port),
        }
    }
    let list: Vec<String> = merged
        .iter()
        .map(|p| {
            if p.min == p.max {
                p.min.to_string()
            } else {
                format!("{}-{}", p.min, p.max)
            }
        })
        .collect();
    format!("{{ {} }}", list.join(", "))
}
