//! The same policy as an nftables ruleset, written as a careful nft user would: one table,
//! a named set per selector, dispatch by verdict maps keyed by interface name (one lookup,
//! where Felix's iptables walks a tree), each v1 rule one nft rule (anonymous sets hold
//! CIDR and port lists), and verdicts instead of marks wherever they suffice.
//!
//! Two base chains on the forward hook: `forward-from-wl` runs the sending workload's egress
//! policy, `forward-to-wl` (a later priority) the receiving workload's ingress policy. An
//! `accept` ends only its own base chain, so a policy or profile allows with a plain
//! `accept` and the packet still meets the other side's policy; `drop` is final. Policies
//! apply in order and a packet no policy allows or passes is dropped; `pass` sets a mark
//! bit and returns, and the endpoint chain then goes to its profiles. Traffic from a
//! workload to the host is dropped unless established (Felix's default); from the host to
//! a workload it is not policed.
//!
//! [`Ruleset::script`] loads it all with `nft -f`; [`Ruleset::update_to`] is one `nft -f`
//! transaction with what changed.

mod rules;

use std::collections::{BTreeMap, BTreeSet};

use palisade::model::Action;

pub use rules::{Owner, PASS_MARK, SetsUsed, render_rule, set_name};

use crate::felix::NDP_TYPES;
use crate::view::{Family, View};

/// The table every chain and set lives in.
pub const TABLE: &str = "calico";
const FROM_WORKLOAD_MAP: &str = "from-wl";
const TO_WORKLOAD_MAP: &str = "to-wl";

/// One regular chain and its rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    pub rules: Vec<String>,
}

/// Everything the ruleset holds for one node and family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    pub family: Family,
    pub interface_prefix: String,
    /// Named sets: name -> member addresses.
    pub sets: BTreeMap<String, BTreeSet<String>>,
    /// Interface -> endpoint chain, for each dispatch map.
    pub from_workload: BTreeMap<String, String>,
    pub to_workload: BTreeMap<String, String>,
    /// Regular chains, by name.
    pub chains: BTreeMap<String, Vec<String>>,
}

/// The nft family keyword of a table.
fn table_family(family: Family) -> &'static str {
    match family {
        Family::V4 => "ip",
        Family::V6 => "ip6",
    }
}

fn address_type(family: Family) -> &'static str {
    match family {
        Family::V4 => "ipv4_addr",
        Family::V6 => "ipv6_addr",
    }
}

/// Chain names: a v1 name never starts with a letter nft would read otherwise, since every
/// name gets a prefix.
fn policy_chain(ingress: bool, name: &str) -> String {
    format!("{}-{name}", if ingress { "pi" } else { "po" })
}

fn profile_chain(ingress: bool, name: &str) -> String {
    format!("{}-{name}", if ingress { "pri" } else { "pro" })
}

fn endpoint_chain(ingress: bool, interface: &str) -> String {
    format!("{}-{interface}", if ingress { "tw" } else { "fw" })
}

/// The nftables rendering of `view` for the workloads of `node` (interfaces named
/// `<interface_prefix>...`).
pub fn render(view: &View, node: &str, family: Family, interface_prefix: &str) -> Ruleset {
    let locals = view.local_endpoints(node);
    let mut used = SetsUsed::new();
    let mut chains = BTreeMap::new();
    let mut from_workload = BTreeMap::new();
    let mut to_workload = BTreeMap::new();

    let active = View::active_policies(&locals);
    let mut has_pass = BTreeMap::new();
    for &index in &active {
        let policy = &view.policies[index];
        for ingress in [true, false] {
            let mut passes = false;
            let mut rules = Vec::new();
            for rule in policy.rules(ingress) {
                if let Some(rendered) = render_rule(rule, Owner::Policy, family, &mut used) {
                    passes |= rule.action == Action::Pass;
                    rules.push(rendered);
                }
            }
            has_pass.insert((index, ingress), passes);
            chains.insert(policy_chain(ingress, policy.name()), rules);
        }
    }
    for name in view.active_profiles(&locals) {
        let Some(profile) = view.profiles.get(name) else {
            continue;
        };
        for (ingress, rules) in [(true, &profile.spec.ingress), (false, &profile.spec.egress)] {
            let rendered = rules
                .iter()
                .filter_map(|r| render_rule(r, Owner::Profile, family, &mut used))
                .collect();
            chains.insert(profile_chain(ingress, name), rendered);
        }
    }
    for local in &locals {
        for (ingress, policies) in [
            (true, &local.ingress_policies),
            (false, &local.egress_policies),
        ] {
            let name = endpoint_chain(ingress, local.interface);
            let profiles_name = format!("{name}-profiles");
            let any_pass = policies.iter().any(|&i| has_pass[&(i, ingress)]);
            let mut rules = vec!["ct state invalid drop".to_string()];
            if any_pass {
                rules.push(format!("meta mark set meta mark & {:#x}", !PASS_MARK));
            }
            for &index in policies {
                rules.push(format!(
                    "jump {}",
                    policy_chain(ingress, view.policies[index].name())
                ));
                if has_pass[&(index, ingress)] {
                    rules.push(format!(
                        "meta mark & {PASS_MARK:#x} == {PASS_MARK:#x} goto {profiles_name}"
                    ));
                }
            }
            if policies.is_empty() {
                rules.push(format!("goto {profiles_name}"));
            } else {
                // Policies applied and none allowed or passed.
                rules.push("drop".into());
            }
            let mut profile_rules = Vec::new();
            for profile in &local.endpoint.spec.profiles {
                if !view.profiles.contains_key(profile) {
                    // A profile that does not exist denies everything.
                    break;
                }
                profile_rules.push(format!("jump {}", profile_chain(ingress, profile)));
            }
            profile_rules.push("drop".into());
            chains.insert(name.clone(), rules);
            chains.insert(profiles_name, profile_rules);
            let map = if ingress {
                &mut to_workload
            } else {
                &mut from_workload
            };
            map.insert(local.interface.to_string(), name);
        }
    }
    let sets = used
        .iter()
        .map(|(name, selector)| {
            let members = view
                .members(selector, family)
                .iter()
                .map(|ip| ip.to_string())
                .collect();
            (name.clone(), members)
        })
        .collect();
    Ruleset {
        family,
        interface_prefix: interface_prefix.to_string(),
        sets,
        from_workload,
        to_workload,
        chains,
    }
}

impl Ruleset {
    fn table(&self) -> String {
        format!("{} {TABLE}", table_family(self.family))
    }

    /// The whole ruleset as one `nft -f` script (the table must not exist yet).
    pub fn script(&self) -> String {
        let table = self.table();
        let workloads = format!("\"{}*\"", self.interface_prefix);
        let mut s = format!("add table {table}\n");
        for (name, members) in &self.sets {
            s += &format!(
                "add set {table} {name} {{ type {}; }}\n",
                address_type(self.family)
            );
            s += &element_lines(&table, name, members.iter().map(String::as_str));
        }
        // Every chain exists before any rule refers to it.
        for name in self.chains.keys() {
            s += &format!("add chain {table} {name}\n");
        }
        for (name, rules) in &self.chains {
            for rule in rules {
                s += &format!("add rule {table} {name} {rule}\n");
            }
        }
        for (map, entries) in [
            (FROM_WORKLOAD_MAP, &self.from_workload),
            (TO_WORKLOAD_MAP, &self.to_workload),
        ] {
            s += &format!("add map {table} {map} {{ type ifname : verdict; }}\n");
            s += &map_elements("add", &table, map, entries.iter());
        }
        s += &format!(
            "add chain {table} forward-from-wl {{ type filter hook forward priority filter; policy accept; }}\n\
             add rule {table} forward-from-wl ct state established,related accept\n\
             add rule {table} forward-from-wl iifname vmap @{FROM_WORKLOAD_MAP}\n\
             add rule {table} forward-from-wl iifname {workloads} drop\n\
             add chain {table} forward-to-wl {{ type filter hook forward priority filter + 10; policy accept; }}\n\
             add rule {table} forward-to-wl ct state established,related accept\n\
             add rule {table} forward-to-wl oifname vmap @{TO_WORKLOAD_MAP}\n\
             add rule {table} forward-to-wl oifname {workloads} drop\n\
             add chain {table} input {{ type filter hook input priority filter; policy accept; }}\n\
             add rule {table} input iifname {workloads} ct state established,related accept\n"
        );
        if self.family == Family::V6 {
            // Neighbour discovery and MLD with the host, whatever the policy says.
            let types: Vec<String> = NDP_TYPES.iter().map(u8::to_string).collect();
            s += &format!(
                "add rule {table} input iifname {workloads} icmpv6 type {{ {} }} accept\n",
                types.join(", ")
            );
        }
        s += &format!("add rule {table} input iifname {workloads} drop\n");
        s
    }

    /// How many rules the regular chains hold.
    pub fn rule_count(&self) -> usize {
        self.chains.values().map(Vec::len).sum()
    }

    /// One `nft -f` transaction from this ruleset to `new`: sets and their members, the
    /// changed chains rewritten (flush, then their rules), new chains, dispatch entries;
    /// chains and sets nothing refers to any more go last.
    pub fn update_to(&self, new: &Ruleset) -> NftUpdate {
        let table = self.table();
        let mut s = String::new();
        let mut touched = 0;
        for (name, members) in &new.sets {
            match self.sets.get(name) {
                None => {
                    s += &format!(
                        "add set {table} {name} {{ type {}; }}\n",
                        address_type(new.family)
                    );
                    s += &element_lines(&table, name, members.iter().map(String::as_str));
                }
                Some(old) => {
                    s += &element_lines(&table, name, members.difference(old).map(String::as_str));
                    let gone: Vec<&str> = old.difference(members).map(String::as_str).collect();
                    if !gone.is_empty() {
                        s += &format!("delete element {table} {name} {{ {} }}\n", gone.join(", "));
                    }
                }
            }
        }
        for name in new.chains.keys().filter(|n| !self.chains.contains_key(*n)) {
            s += &format!("add chain {table} {name}\n");
        }
        for (name, rules) in &new.chains {
            if self.chains.get(name) == Some(rules) {
                continue;
            }
            if self.chains.contains_key(name) {
                s += &format!("flush chain {table} {name}\n");
            }
            for rule in rules {
                s += &format!("add rule {table} {name} {rule}\n");
            }
            touched += 1;
        }
        for (map, old, new_entries) in [
            (FROM_WORKLOAD_MAP, &self.from_workload, &new.from_workload),
            (TO_WORKLOAD_MAP, &self.to_workload, &new.to_workload),
        ] {
            let removed: Vec<(&String, &String)> = old
                .iter()
                .filter(|(k, v)| new_entries.get(*k) != Some(*v))
                .collect();
            s += &map_elements("delete", &table, map, removed.into_iter());
            let added: Vec<(&String, &String)> = new_entries
                .iter()
                .filter(|(k, v)| old.get(*k) != Some(*v))
                .collect();
            s += &map_elements("add", &table, map, added.into_iter());
        }
        for name in self.chains.keys().filter(|n| !new.chains.contains_key(*n)) {
            s += &format!("flush chain {table} {name}\n");
        }
        for name in self.chains.keys().filter(|n| !new.chains.contains_key(*n)) {
            s += &format!("delete chain {table} {name}\n");
            touched += 1;
        }
        for name in self.sets.keys().filter(|n| !new.sets.contains_key(*n)) {
            s += &format!("delete set {table} {name}\n");
        }
        NftUpdate {
            script: s,
            chains_touched: touched,
        }
    }
}

/// One `nft -f` transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftUpdate {
    pub script: String,
    pub chains_touched: usize,
}

/// `add element` lines for `members`, a thousand to a line (nft's parser copes with long
/// lines, but not unboundedly).
fn element_lines<'a>(table: &str, set: &str, members: impl Iterator<Item = &'a str>) -> String {
    let members: Vec<&str> = members.collect();
    members
        .chunks(1000)
        .map(|chunk| format!("add element {table} {set} {{ {} }}\n", chunk.join(", ")))
        .collect()
}

fn map_elements<'a>(
    op: &str,
    table: &str,
    map: &str,
    entries: impl Iterator<Item = (&'a String, &'a String)>,
) -> String {
    entries
        .map(|(interface, chain)| {
            if op == "delete" {
                format!("delete element {table} {map} {{ \"{interface}\" }}\n")
            } else {
                format!("{op} element {table} {map} {{ \"{interface}\" : goto {chain} }}\n")
            }
        })
        .collect()
}
