//! Whether one rule matches one packet (reference §3.3): every criterion that is set must
//! hold.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;

use crate::model::{Action, EntityRule, IcmpFields, Port, Rule};
use crate::selector::{Labels, Selector};

use super::{L4, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, Packet};

/// A rule with its selectors parsed.
pub(super) struct CompiledRule {
    pub action: Action,
    ip_version: Option<u8>,
    protocol: Option<u8>,
    not_protocol: Option<u8>,
    icmp: Option<IcmpFields>,
    not_icmp: Option<IcmpFields>,
    source: CompiledEntity,
    destination: CompiledEntity,
}

struct CompiledEntity {
    nets: Vec<IpNet>,
    not_nets: Vec<IpNet>,
    /// A tag T matches like the selector `has(T)`.
    tag: Option<String>,
    not_tag: Option<String>,
    selector: Option<Selector>,
    not_selector: Option<Selector>,
    ports: Vec<Port>,
    not_ports: Vec<Port>,
}

impl CompiledRule {
    pub fn new(rule: &Rule) -> Result<CompiledRule, String> {
        let protocol = |p: &Option<crate::model::Protocol>| -> Result<Option<u8>, String> {
            p.as_ref()
                .map(|p| p.number().ok_or_else(|| format!("invalid protocol '{p}'")))
                .transpose()
        };
        Ok(CompiledRule {
            action: rule.action,
            ip_version: rule.ip_version,
            protocol: protocol(&rule.protocol)?,
            not_protocol: protocol(&rule.not_protocol)?,
            icmp: rule.icmp,
            not_icmp: rule.not_icmp,
            source: CompiledEntity::new(&rule.source)?,
            destination: CompiledEntity::new(&rule.destination)?,
        })
    }

    pub fn matches(
        &self,
        packet: &Packet,
        owners: &HashMap<IpAddr, Vec<BTreeMap<String, String>>>,
    ) -> bool {
        let version = match packet.src {
            IpAddr::V4(_) => 4,
            IpAddr::V6(_) => 6,
        };
        // Without an explicit ipVersion, `protocol: icmp` rules exist for IPv4 only and
        // `protocol: icmpv6` rules for IPv6 only (Felix's rule_convert).
        let implied_version = match self.protocol {
            Some(PROTO_ICMP) => Some(4),
            Some(PROTO_ICMPV6) => Some(6),
            _ => None,
        };
        if self
            .ip_version
            .or(implied_version)
            .is_some_and(|v| v != version)
        {
            return false;
        }
        if self.protocol.is_some_and(|p| p != packet.protocol) {
            return false;
        }
        if self.not_protocol.is_some_and(|p| p == packet.protocol) {
            return false;
        }
        let icmp = icmp_of(packet);
        if let Some(fields) = &self.icmp
            && !icmp_matches(fields, icmp, false)
        {
            return false;
        }
        if let Some(fields) = &self.not_icmp
            && !icmp_matches(fields, icmp, true)
        {
            return false;
        }
        let (src_port, dst_port) = ports_of(packet);
        self.source.matches(packet.src, src_port, owners)
            && self.destination.matches(packet.dst, dst_port, owners)
    }
}

/// The ICMP type and code, for ICMP packets of the packet's own family.
fn icmp_of(packet: &Packet) -> Option<(u8, u8)> {
    let icmp_proto = match packet.src {
        IpAddr::V4(_) => PROTO_ICMP,
        IpAddr::V6(_) => PROTO_ICMPV6,
    };
    match packet.l4 {
        L4::Icmp { icmp_type, code } if packet.protocol == icmp_proto => Some((icmp_type, code)),
        _ => None,
    }
}

/// Ports are only matched on TCP and UDP, the protocols v1 lets rules name ports for.
fn ports_of(packet: &Packet) -> (Option<u16>, Option<u16>) {
    match packet.l4 {
        L4::Ports { src, dst } if matches!(packet.protocol, PROTO_TCP | PROTO_UDP) => {
            (Some(src), Some(dst))
        }
        _ => (None, None),
    }
}

/// `icmp` matches ICMP packets of that type (and code); `notICMP` matches ICMP packets
/// that are not of that type (and code). Neither matches non-ICMP packets. An `icmp: {}`
/// without a type is no criterion at all, as in Felix.
fn icmp_matches(fields: &IcmpFields, icmp: Option<(u8, u8)>, negated: bool) -> bool {
    let Some(want_type) = fields.icmp_type else {
        return true;
    };
    let Some((icmp_type, code)) = icmp else {
        return false;
    };
    let hit = icmp_type == want_type && fields.code.is_none_or(|c| c == code);
    hit != negated
}

impl CompiledEntity {
    fn new(entity: &EntityRule) -> Result<CompiledEntity, String> {
        let selector = |s: &Option<String>| -> Result<Option<Selector>, String> {
            s.as_ref()
                .map(|s| Selector::parse(s).map_err(|e| format!("selector '{s}': {e}")))
                .transpose()
        };
        Ok(CompiledEntity {
            nets: entity.all_nets().copied().collect(),
            not_nets: entity.all_not_nets().copied().collect(),
            tag: entity.tag.clone(),
            not_tag: entity.not_tag.clone(),
            selector: selector(&entity.selector)?,
            not_selector: selector(&entity.not_selector)?,
            ports: entity.ports.clone(),
            not_ports: entity.not_ports.clone(),
        })
    }

    fn matches(
        &self,
        ip: IpAddr,
        port: Option<u16>,
        owners: &HashMap<IpAddr, Vec<BTreeMap<String, String>>>,
    ) -> bool {
        if !self.nets.is_empty() && !self.nets.iter().any(|n| n.contains(&ip)) {
            return false;
        }
        if self.not_nets.iter().any(|n| n.contains(&ip)) {
            return false;
        }
        // Selectors and tags stand for the set of addresses of the endpoints they match:
        // an address is in the set if any endpoint owning it matches.
        let owned_by = owners.get(&ip).map(Vec::as_slice).unwrap_or(&[]);
        let any_owner = |f: &dyn Fn(&BTreeMap<String, String>) -> bool| owned_by.iter().any(f);
        let has_tag = |tag: &str| any_owner(&|labels| Labels::get(labels, tag).is_some());
        if self.tag.as_deref().is_some_and(|t| !has_tag(t))
            || self.not_tag.as_deref().is_some_and(has_tag)
            || self
                .selector
                .as_ref()
                .is_some_and(|s| !any_owner(&|labels| s.matches(labels)))
            || self
                .not_selector
                .as_ref()
                .is_some_and(|s| any_owner(&|labels| s.matches(labels)))
        {
            return false;
        }
        if !self.ports.is_empty() {
            match port {
                Some(p) if self.ports.iter().any(|r| r.contains(p)) => {}
                _ => return false,
            }
        }
        if !self.not_ports.is_empty() {
            match port {
                Some(p) if !self.not_ports.iter().any(|r| r.contains(p)) => {}
                _ => return false,
            }
        }
        true
    }
}
