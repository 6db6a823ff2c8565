//! One-line descriptions of rules, in the style of calicoctl v0.x's `Rule.pprint`
//! (pycalico): action, protocol, `type N`, `code N`, then `from ...` and `to ...` with
//! `ports a,b`, `tag T` and `cidr C`. The v1 fields pycalico did not have are described
//! the same way: `ipv4`/`ipv6`, `!tcp`, `!type N`/`!code N`, `selector "..."` and the
//! negated `!ports`, `!tag`, `!cidr`, `!selector`.

use std::fmt::Display;

use crate::model::{EntityRule, IcmpFields, Rule};

pub fn pprint(rule: &Rule) -> String {
    let mut out = vec![rule.action.to_string()];
    if let Some(version) = rule.ip_version {
        out.push(format!("ipv{version}"));
    }
    if let Some(protocol) = &rule.protocol {
        out.push(protocol.to_string());
    }
    if let Some(protocol) = &rule.not_protocol {
        out.push(format!("!{protocol}"));
    }
    if let Some(icmp) = &rule.icmp {
        push_icmp(&mut out, icmp, "");
    }
    if let Some(icmp) = &rule.not_icmp {
        push_icmp(&mut out, icmp, "!");
    }
    push_entity(&mut out, "from", &rule.source);
    push_entity(&mut out, "to", &rule.destination);
    out.join(" ")
}

fn push_icmp(out: &mut Vec<String>, icmp: &IcmpFields, negation: &str) {
    if let Some(icmp_type) = icmp.icmp_type {
        out.push(format!("{negation}type"));
        out.push(icmp_type.to_string());
    }
    if let Some(code) = icmp.code {
        out.push(format!("{negation}code"));
        out.push(code.to_string());
    }
}

fn push_entity(out: &mut Vec<String>, word: &str, entity: &EntityRule) {
    if entity.is_empty() {
        return;
    }
    out.push(word.to_string());
    let nets: Vec<_> = entity.all_nets().collect();
    let not_nets: Vec<_> = entity.all_not_nets().collect();
    push_list(out, "ports", &entity.ports);
    push_value(out, "tag", entity.tag.as_deref());
    push_list(out, "cidr", &nets);
    push_value(
        out,
        "selector",
        entity.selector.as_deref().map(quote).as_deref(),
    );
    push_list(out, "!ports", &entity.not_ports);
    push_value(out, "!tag", entity.not_tag.as_deref());
    push_list(out, "!cidr", &not_nets);
    push_value(
        out,
        "!selector",
        entity.not_selector.as_deref().map(quote).as_deref(),
    );
}

fn push_list<T: Display>(out: &mut Vec<String>, keyword: &str, items: &[T]) {
    if items.is_empty() {
        return;
    }
    let texts: Vec<String> = items.iter().map(ToString::to_string).collect();
    out.push(keyword.to_string());
    out.push(texts.join(","));
}

fn push_value(out: &mut Vec<String>, keyword: &str, value: Option<&str>) {
    if let Some(value) = value {
        out.push(keyword.to_string());
        out.push(value.to_string());
    }
}

/// Selectors contain spaces; quoting keeps the description readable.
fn quote(selector: &str) -> String {
    format!("\"{selector}\"")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::model::{Action, Port, Protocol};

    #[test]
    fn pycalico_forms() {
        let tag_rule = Rule {
            source: EntityRule {
                tag: Some("P".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(pprint(&tag_rule), "allow from tag P");
        assert_eq!(pprint(&Rule::default()), "allow");
        let ports_rule = Rule {
            protocol: Some(Protocol::Name("tcp".into())),
            destination: EntityRule {
                ports: vec![Port::single(80), Port::single(443)],
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(pprint(&ports_rule), "allow tcp to ports 80,443");
        let icmp_rule = Rule {
            protocol: Some(Protocol::Name("icmp".into())),
            icmp: Some(IcmpFields {
                icmp_type: Some(8),
                code: None,
            }),
            ..Default::default()
        };
        assert_eq!(pprint(&icmp_rule), "allow icmp type 8");
    }

    #[test]
    fn v1_fields() {
        let rule = Rule {
            action: Action::Deny,
            not_protocol: Some(Protocol::Number(17)),
            source: EntityRule {
                nets: vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()],
                selector: Some("role == 'app'".into()),
                not_ports: vec![Port { min: 1, max: 1023 }],
                ..Default::default()
            },
            destination: EntityRule {
                not_tag: Some("db".into()),
                not_selector: Some("has(x)".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(
            pprint(&rule),
            "deny !17 from cidr 10.0.0.0/8,fd00::/8 selector \"role == 'app'\" !ports 1:1023 \
             to !tag db !selector \"has(x)\""
        );
    }
}
