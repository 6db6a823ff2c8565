//! Policy and profile rules to iptables rules (FLX2 `rules/policy.go`): one v1 rule becomes
//! one or more iptables rules. Match fragments come positive first (protocol, source
//! CIDR, source sets, source ports, then the same for the destination, ICMP), negated after.
//! `allow` and `pass` set their mark and return; `deny` drops; `log` logs and goes on.

use std::collections::BTreeMap;

use ipnet::IpNet;
use palisade::model::{Action as V1Action, EntityRule, IcmpFields, Port, Protocol, Rule as V1Rule};
use palisade::selector::Selector;

use super::Config;
use super::iptables::{Action, Chain, Rule};
use super::matches;
use super::names;
use crate::view::{Family, applies_to, entity_selectors};

/// The selector sets the rendered rules refer to, by set ID.
pub type SetsUsed = BTreeMap<String, Selector>;

/// A policy's or profile's chain: `prefix` (`cali-pi-`, ...) and `name`, its `rules`.
pub fn rules_chain(
    config: &Config,
    prefix: &str,
    name: &str,
    rules: &[V1Rule],
    sets: &mut SetsUsed,
) -> Chain {
    let rendered = rules
        .iter()
        .flat_map(|rule| render_rule(config, rule, sets))
        .collect();
    Chain::new(names::chain(prefix, name), rendered)
}

/// One side of a rule, as Felix's proto rule has it.
#[derive(Default)]
struct Side {
    nets: Vec<String>,
    not_nets: Vec<String>,
    sets: Vec<String>,
    not_sets: Vec<String>,
    ports: Vec<Port>,
    not_ports: Vec<Port>,
}

impl Side {
    /// `None` when the rule does not apply to this family: filtering by family emptied a
    /// CIDR list that was not empty (FLX2 `filterNets`).
    fn of(entity: &EntityRule, family: Family, sets: &mut SetsUsed) -> Option<Side> {
        let nets = filter_nets(entity.all_nets(), family)?;
        let not_nets = filter_nets(entity.all_not_nets(), family)?;
        let selectors = entity_selectors(entity)?;
        let mut name = |selector: &Selector| {
            let id = selector.unique_id();
            let set = names::ipset(family, &id);
            sets.entry(id).or_insert_with(|| selector.clone());
            set
        };
        Some(Side {
            nets,
            not_nets,
            sets: selectors.positive.iter().map(&mut name).collect(),
            not_sets: selectors.negative.iter().map(&mut name).collect(),
            ports: entity.ports.clone(),
            not_ports: entity.not_ports.clone(),
        })
    }
}

fn filter_nets<'a>(nets: impl Iterator<Item = &'a IpNet>, family: Family) -> Option<Vec<String>> {
    let all: Vec<&IpNet> = nets.collect();
    let kept: Vec<String> = all
        .iter()
        .filter(|n| Family::of(&n.addr()) == family)
        .map(|n| n.to_string())
        .collect();
    if !all.is_empty() && kept.is_empty() {
        return None;
    }
    Some(kept)
}

fn protocol_name(protocol: &Protocol) -> String {
    match protocol {
        Protocol::Name(name) => name.clone(),
        Protocol::Number(number) => number.to_string(),
    }
}

/// The mark block that stands for CIDR lists iptables cannot say in one rule (more than
/// one positive CIDR on a side, or positive and negated ones together): the first rule
/// sets up the scratch bits, positive blocks OR into a scratch bit, negated ones clear it;
/// the rule proper then requires `scratch0`.
struct MarkBlock<'a> {
    config: &'a Config,
    rules: Vec<Rule>,
    started: bool,
    done_first_positive: bool,
}

impl<'a> MarkBlock<'a> {
    fn new(config: &'a Config) -> MarkBlock<'a> {
        MarkBlock {
            config,
            rules: Vec::new(),
            started: false,
            done_first_positive: false,
        }
    }

    fn start(&mut self, initial: u32) {
        if !self.started {
            let mask = self.config.mark_scratch0 | self.config.mark_scratch1;
            self.rules.push(Rule::new(
                vec![],
                Action::SetMaskedMark {
                    mark: initial,
                    mask,
                },
            ));
            self.started = true;
        }
    }

    fn positive(&mut self, nets: &[String], source: bool) {
        self.start(0);
        // The first positive block writes the result bit directly; later ones compute into
        // scratch1 and AND it back.
        let bit = if self.done_first_positive {
            self.config.mark_scratch1
        } else {
            self.config.mark_scratch0
        };
        for net in nets {
            self.rules.push(Rule::new(
                vec![net_match(net, source, false)],
                Action::SetMark(bit),
            ));
        }
        if self.done_first_positive {
            self.rules.push(Rule::new(
                vec![matches::mark_clear(self.config.mark_scratch1)],
                Action::ClearMark(self.config.mark_scratch0),
            ));
        }
        self.done_first_positive = true;
    }

    fn negated(&mut self, nets: &[String], source: bool) {
        self.start(self.config.mark_scratch0);
        for net in nets {
            self.rules.push(Rule::new(
                vec![net_match(net, source, false)],
                Action::ClearMark(self.config.mark_scratch0),
            ));
        }
    }
}

fn net_match(net: &str, source: bool, negated: bool) -> String {
    match (source, negated) {
        (true, false) => matches::source_net(net),
        (true, true) => matches::not_source_net(net),
        (false, false) => matches::dest_net(net),
        (false, true) => matches::not_dest_net(net),
    }
}

/// The iptables rules of one v1 rule (none if it does not apply to the config's family).
pub fn render_rule(config: &Config, rule: &V1Rule, sets: &mut SetsUsed) -> Vec<Rule> {
    if !applies_to(rule, config.family) {
        return Vec::new();
    }
    let (Some(mut src), Some(mut dst)) = (
        Side::of(&rule.source, config.family, sets),
        Side::of(&rule.destination, config.family, sets),
    ) else {
        return Vec::new();
    };

    let mut block = MarkBlock::new(config);
    if src.nets.len() > 1 {
        block.positive(&std::mem::take(&mut src.nets), true);
    }
    if dst.nets.len() > 1 {
        block.positive(&std::mem::take(&mut dst.nets), false);
    }
    if src.nets.len() + src.not_nets.len() > 1 {
        block.negated(&std::mem::take(&mut src.not_nets), true);
    }
    if dst.nets.len() + dst.not_nets.len() > 1 {
        block.negated(&std::mem::take(&mut dst.not_nets), false);
    }

    let split = |ports: &[Port]| -> Vec<Vec<Port>> {
        let splits = matches::split_ports(ports);
        if splits.is_empty() {
            vec![vec![]]
        } else {
            splits
        }
    };
    let mut out = block.rules.clone();
    for src_ports in split(&src.ports) {
        for dst_ports in &split(&dst.ports) {
            let mut criteria = rule_match(config, rule, &src, &dst, &src_ports, dst_ports);
            if block.started {
                criteria.push(matches::mark_set(config.mark_scratch0));
            }
            out.extend(actions(config, rule.action, criteria));
        }
    }
    out
}

/// FLX2 `CalculateRuleMatch`, with the positive port lists already split to fit.
fn rule_match(
    config: &Config,
    rule: &V1Rule,
    src: &Side,
    dst: &Side,
    src_ports: &[Port],
    dst_ports: &[Port],
) -> Vec<String> {
    let v6 = config.family == Family::V6;
    let mut m = Vec::new();
    if let Some(p) = &rule.protocol {
        m.push(matches::protocol(&protocol_name(p)));
    }
    for (side, ports, source) in [(src, src_ports, true), (dst, dst_ports, false)] {
        let direction = if source { "src" } else { "dst" };
        let which = if source { "source" } else { "destination" };
        if let Some(net) = side.nets.first() {
            m.push(net_match(net, source, false));
        }
        m.extend(
            side.sets
                .iter()
                .map(|s| matches::ipset(s, false, direction)),
        );
        if !ports.is_empty() {
            m.push(matches::ports(ports, false, which));
        }
    }
    if let Some(IcmpFields {
        icmp_type: Some(t),
        code,
    }) = rule.icmp
    {
        m.push(matches::icmp(v6, false, t, code));
    }
    if let Some(p) = &rule.not_protocol {
        m.push(matches::not_protocol(&protocol_name(p)));
    }
    for (side, source) in [(src, true), (dst, false)] {
        let direction = if source { "src" } else { "dst" };
        let which = if source { "source" } else { "destination" };
        if let Some(net) = side.not_nets.first() {
            m.push(net_match(net, source, true));
        }
        m.extend(
            side.not_sets
                .iter()
                .map(|s| matches::ipset(s, true, direction)),
        );
        for split in matches::split_ports(&side.not_ports) {
            m.push(matches::ports(&split, true, which));
        }
    }
    if let Some(IcmpFields {
        icmp_type: Some(t),
        code,
    }) = rule.not_icmp
    {
        m.push(matches::icmp(v6, true, t, code));
    }
    m
}

/// FLX2 `CalculateActions`: allow and pass set their mark on a match, then return on it.
fn actions(config: &Config, action: V1Action, criteria: Vec<String>) -> Vec<Rule> {
    let returning = |mark: u32| {
        vec![
            Rule::new(criteria.clone(), Action::SetMark(mark)),
            Rule::new(vec![matches::mark_set(mark)], Action::Return),
        ]
    };
    match action {
        V1Action::Allow => returning(config.mark_accept),
        V1Action::Pass => returning(config.mark_pass),
        V1Action::Deny => vec![Rule::new(criteria, Action::Drop)],
        V1Action::Log => vec![Rule::new(
            criteria,
            Action::Log {
                prefix: config.log_prefix.clone(),
            },
        )],
    }
}
