//! Felix 2.6.8's iptables + ipset rendering of v1 policy for the workloads of one node:
//! Calico's classic dataplane, generated from the same resources palisade enforces, to
//! measure palisade against (`cargo xtask bench peers`). Follows
//! `../shared/reference/felix-iptables.md` §1: static chains with their hooks (raw, mangle,
//! filter, nat), dispatch chains, endpoint chains, policy and profile chains, marks,
//! conntrack rules, selector ipsets with every matching endpoint of the cluster, and the
//! rule-hash comments. IPv4 and IPv6 are separate rulesets (iptables and ip6tables).
//!
//! [`Ruleset::restore`] is what `ipset restore` and `iptables-restore --noflush` load;
//! [`Ruleset::update_to`] is what Felix writes when the policy changes: only the changed
//! chains, rule by rule (`-R`, `-A`, `-D`), as its table diffing does.

mod config;
mod dispatch;
mod endpoints;
pub mod iptables;
mod matches;
pub mod names;
mod rules;
mod static_chains;
mod update;

use std::collections::{BTreeMap, BTreeSet};

pub use config::Config;
pub use dispatch::{Way, dispatch_chains};
pub use endpoints::endpoint_chain;
pub use rules::{SetsUsed, render_rule, rules_chain};
pub use static_chains::NDP_TYPES;
pub use update::Update;

use crate::view::{Family, View};
use iptables::Table;

/// One ipset as Felix programs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpSet {
    pub name: String,
    /// `hash:ip` for selector sets, `hash:net` for the pool sets.
    pub kind: &'static str,
    pub family: Family,
    pub members: BTreeSet<String>,
}

impl IpSet {
    /// `create <name> <kind> family inet|inet6 maxelem 1048576`.
    pub fn create_line(&self) -> String {
        let family = match self.family {
            Family::V4 => "inet",
            Family::V6 => "inet6",
        };
        format!(
            "create {} {} family {family} maxelem 1048576",
            self.name, self.kind
        )
    }
}

/// Everything Felix would program for one node and family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    pub config: Config,
    pub ipsets: Vec<IpSet>,
    /// raw, mangle, filter, nat.
    pub tables: Vec<Table>,
}

impl Ruleset {
    /// `ipset restore` input: every set created and filled.
    pub fn ipset_restore(&self) -> String {
        let mut text = String::new();
        for set in &self.ipsets {
            text += &set.create_line();
            text.push('\n');
            for member in &set.members {
                text += &format!("add {} {member}\n", set.name);
            }
        }
        text
    }

    /// `iptables-restore --noflush` input: every table, its chains and its hooks.
    pub fn iptables_restore(&self) -> String {
        self.tables
            .iter()
            .map(|t| t.restore_text(self.config.hash_comments))
            .collect()
    }

    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.name == name)
    }

    /// How many rules the tables hold, hooks included.
    pub fn rule_count(&self) -> usize {
        self.tables
            .iter()
            .map(|t| {
                t.chains.iter().map(|c| c.rules.len()).sum::<usize>()
                    + t.hooks.iter().map(|(_, r)| r.len()).sum::<usize>()
            })
            .sum()
    }
}

/// Felix's rendering of `view` for the workloads of `node`.
pub fn render(view: &View, node: &str, config: &Config) -> Ruleset {
    let locals = view.local_endpoints(node);
    let mut sets = SetsUsed::new();
    let mut filter = static_chains::filter(config);
    let interfaces: Vec<&str> = locals.iter().map(|l| l.interface).collect();
    filter
        .chains
        .extend(dispatch_chains(Way::FromWorkload, &interfaces));
    filter
        .chains
        .extend(dispatch_chains(Way::ToWorkload, &interfaces));
    for local in &locals {
        let profiles: Vec<(&str, bool)> = local
            .endpoint
            .spec
            .profiles
            .iter()
            .map(|p| (p.as_str(), view.profiles.contains_key(p)))
            .collect();
        for (ingress, policies) in [
            (true, &local.ingress_policies),
            (false, &local.egress_policies),
        ] {
            let names: Vec<&str> = policies.iter().map(|&i| view.policies[i].name()).collect();
            filter.chains.push(endpoint_chain(
                config,
                local.interface,
                ingress,
                &names,
                &profiles,
            ));
        }
    }
    for index in View::active_policies(&locals) {
        let policy = &view.policies[index];
        let spec = &policy.policy.spec;
        filter.chains.push(rules_chain(
            config,
            names::POLICY_INBOUND,
            policy.name(),
            &spec.ingress,
            &mut sets,
        ));
        filter.chains.push(rules_chain(
            config,
            names::POLICY_OUTBOUND,
            policy.name(),
            &spec.egress,
            &mut sets,
        ));
    }
    for name in view.active_profiles(&locals) {
        let Some(profile) = view.profiles.get(name) else {
            continue;
        };
        filter.chains.push(rules_chain(
            config,
            names::PROFILE_INBOUND,
            name,
            &profile.spec.ingress,
            &mut sets,
        ));
        filter.chains.push(rules_chain(
            config,
            names::PROFILE_OUTBOUND,
            name,
            &profile.spec.egress,
            &mut sets,
        ));
    }

    let mut ipsets: Vec<IpSet> = sets
        .iter()
        .map(|(id, selector)| IpSet {
            name: names::ipset(config.family, id),
            kind: "hash:ip",
            family: config.family,
            members: view
                .members(selector, config.family)
                .iter()
                .map(|ip| ip.to_string())
                .collect(),
        })
        .collect();
    let pools: Vec<_> = view
        .pools
        .iter()
        .filter(|p| Family::of(&p.metadata.cidr.addr()) == config.family)
        .collect();
    let masquerade = pools.iter().any(|p| p.spec.nat_outgoing);
    if !pools.is_empty() {
        let pool_set = |id: &str, members: BTreeSet<String>| IpSet {
            name: names::ipset(config.family, id),
            kind: "hash:net",
            family: config.family,
            members,
        };
        let all = pools.iter().map(|p| p.metadata.cidr.to_string()).collect();
        let masq = pools
            .iter()
            .filter(|p| p.spec.nat_outgoing)
            .map(|p| p.metadata.cidr.to_string())
            .collect();
        ipsets.push(pool_set("all-ipam-pools", all));
        ipsets.push(pool_set("masq-ipam-pools", masq));
    }

    Ruleset {
        config: config.clone(),
        ipsets,
        tables: vec![
            static_chains::raw(config),
            static_chains::mangle(config),
            filter,
            static_chains::nat(config, masquerade),
        ],
    }
}

/// Chains by name, for diffs.
fn chains_by_name(table: &Table) -> BTreeMap<&str, &iptables::Chain> {
    table.chains.iter().map(|c| (c.name.as_str(), c)).collect()
}
