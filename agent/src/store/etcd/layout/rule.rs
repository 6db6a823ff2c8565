//! A rule as libcalico-go v1.7.3 stores it (`lib/backend/model/rule.go`): flat `src_*` /
//! `dst_*` fields, `!` for the negated ones, `next-tier` for `pass`. Field order is Go's
//! struct order, so the JSON is byte for byte what libcalico-go writes.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::model::{Action, EntityRule, IcmpFields, Port, Protocol, Rule};

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct BackendRule {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ip_version: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    protocol: Option<Protocol>,
    #[serde(default, rename = "!protocol", skip_serializing_if = "Option::is_none")]
    not_protocol: Option<Protocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    icmp_type: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    icmp_code: Option<u8>,
    #[serde(
        default,
        rename = "!icmp_type",
        skip_serializing_if = "Option::is_none"
    )]
    not_icmp_type: Option<u8>,
    #[serde(
        default,
        rename = "!icmp_code",
        skip_serializing_if = "Option::is_none"
    )]
    not_icmp_code: Option<u8>,

    #[serde(default, skip_serializing_if = "String::is_empty")]
    src_tag: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    src_net: Option<IpNet>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    src_nets: Vec<IpNet>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    src_selector: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    src_ports: Vec<Port>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    dst_tag: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    dst_selector: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dst_net: Option<IpNet>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    dst_nets: Vec<IpNet>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    dst_ports: Vec<Port>,

    #[serde(default, rename = "!src_tag", skip_serializing_if = "String::is_empty")]
    not_src_tag: String,
    #[serde(default, rename = "!src_net", skip_serializing_if = "Option::is_none")]
    not_src_net: Option<IpNet>,
    #[serde(default, rename = "!src_nets", skip_serializing_if = "Vec::is_empty")]
    not_src_nets: Vec<IpNet>,
    #[serde(
        default,
        rename = "!src_selector",
        skip_serializing_if = "String::is_empty"
    )]
    not_src_selector: String,
    #[serde(default, rename = "!src_ports", skip_serializing_if = "Vec::is_empty")]
    not_src_ports: Vec<Port>,
    #[serde(default, rename = "!dst_tag", skip_serializing_if = "String::is_empty")]
    not_dst_tag: String,
    #[serde(
        default,
        rename = "!dst_selector",
        skip_serializing_if = "String::is_empty"
    )]
    not_dst_selector: String,
    #[serde(default, rename = "!dst_net", skip_serializing_if = "Option::is_none")]
    not_dst_net: Option<IpNet>,
    #[serde(default, rename = "!dst_nets", skip_serializing_if = "Vec::is_empty")]
    not_dst_nets: Vec<IpNet>,
    #[serde(default, rename = "!dst_ports", skip_serializing_if = "Vec::is_empty")]
    not_dst_ports: Vec<Port>,
    // `log_prefix` (Felix configuration, not part of the v1 API rule) and fields of later
    // Calico versions are read and dropped: serde ignores unknown fields here on purpose.
}

impl BackendRule {
    /// libcalico-go's `ruleAPIToBackend`: destination CIDRs are masked to their network,
    /// source CIDRs are kept as written (upstream does the same).
    pub fn from_api(rule: &Rule) -> BackendRule {
        let (icmp_type, icmp_code) = icmp_parts(rule.icmp);
        let (not_icmp_type, not_icmp_code) = icmp_parts(rule.not_icmp);
        let src = &rule.source;
        let dst = &rule.destination;
        BackendRule {
            action: match rule.action {
                Action::Allow => "allow",
                Action::Deny => "deny",
                Action::Log => "log",
                Action::Pass => "next-tier",
            }
            .to_string(),
            ip_version: rule.ip_version,
            protocol: rule.protocol.clone(),
            not_protocol: rule.not_protocol.clone(),
            icmp_type,
            icmp_code,
            not_icmp_type,
            not_icmp_code,
            src_tag: src.tag.clone().unwrap_or_default(),
            src_net: src.net,
            src_nets: src.nets.clone(),
            src_selector: src.selector.clone().unwrap_or_default(),
            src_ports: src.ports.clone(),
            dst_tag: dst.tag.clone().unwrap_or_default(),
            dst_selector: dst.selector.clone().unwrap_or_default(),
            dst_net: dst.net.map(|n| n.trunc()),
            dst_nets: dst.nets.iter().map(IpNet::trunc).collect(),
            dst_ports: dst.ports.clone(),
            not_src_tag: src.not_tag.clone().unwrap_or_default(),
            not_src_net: src.not_net,
            not_src_nets: src.not_nets.clone(),
            not_src_selector: src.not_selector.clone().unwrap_or_default(),
            not_src_ports: src.not_ports.clone(),
            not_dst_tag: dst.not_tag.clone().unwrap_or_default(),
            not_dst_selector: dst.not_selector.clone().unwrap_or_default(),
            not_dst_net: dst.not_net.map(|n| n.trunc()),
            not_dst_nets: dst.not_nets.iter().map(IpNet::trunc).collect(),
            not_dst_ports: dst.not_ports.clone(),
        }
    }

    /// libcalico-go's `ruleBackendToAPI`: an empty action is `allow`, `next-tier` is
    /// `pass`. A lone `net` stays `net`, lone `nets` stay `nets`; both together are merged
    /// into `nets` (upstream always merges; v1 validation forbids mixing them anyway).
    pub fn into_api(self) -> Result<Rule, String> {
        let action = match self.action.as_str() {
            "" | "allow" => Action::Allow,
            "deny" => Action::Deny,
            "log" => Action::Log,
            "next-tier" => Action::Pass,
            other => {
                return Err(format!(
                    "rule action '{other}' is not one of allow, deny, log, next-tier"
                ));
            }
        };
        let (net, nets) = merge_nets(self.src_net, self.src_nets);
        let (not_net, not_nets) = merge_nets(self.not_src_net, self.not_src_nets);
        let source = EntityRule {
            tag: non_empty(self.src_tag),
            not_tag: non_empty(self.not_src_tag),
            net,
            not_net,
            nets,
            not_nets,
            selector: non_empty(self.src_selector),
            not_selector: non_empty(self.not_src_selector),
            ports: self.src_ports,
            not_ports: self.not_src_ports,
        };
        let (net, nets) = merge_nets(self.dst_net, self.dst_nets);
        let (not_net, not_nets) = merge_nets(self.not_dst_net, self.not_dst_nets);
        let destination = EntityRule {
            tag: non_empty(self.dst_tag),
            not_tag: non_empty(self.not_dst_tag),
            net,
            not_net,
            nets,
            not_nets,
            selector: non_empty(self.dst_selector),
            not_selector: non_empty(self.not_dst_selector),
            ports: self.dst_ports,
            not_ports: self.not_dst_ports,
        };
        Ok(Rule {
            action,
            ip_version: self.ip_version,
            protocol: self.protocol,
            not_protocol: self.not_protocol,
            icmp: icmp_fields(self.icmp_type, self.icmp_code),
            not_icmp: icmp_fields(self.not_icmp_type, self.not_icmp_code),
            source,
            destination,
        })
    }
}

fn icmp_parts(icmp: Option<IcmpFields>) -> (Option<u8>, Option<u8>) {
    icmp.map_or((None, None), |i| (i.icmp_type, i.code))
}

fn icmp_fields(icmp_type: Option<u8>, code: Option<u8>) -> Option<IcmpFields> {
    (icmp_type.is_some() || code.is_some()).then_some(IcmpFields { icmp_type, code })
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// libcalico-go's `combineNets` order (`nets` first, then `net`) when both are set.
fn merge_nets(net: Option<IpNet>, mut nets: Vec<IpNet>) -> (Option<IpNet>, Vec<IpNet>) {
    match (net, nets.is_empty()) {
        (Some(net), false) => {
            nets.push(net);
            (None, nets)
        }
        (net, _) => (net, nets),
    }
}
