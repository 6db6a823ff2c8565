//! The dispatch chains (FLX2 `rules/dispatch.go`): from a packet's interface to its
//! endpoint's chain, through a one-level tree keyed by the character after the
//! interfaces' common prefix, so a packet passes about 16 + E/16 rules for E endpoints.

use std::collections::BTreeMap;

use super::iptables::{Action, Chain, Rule};
use super::matches::{in_interface, out_interface};
use super::names::{
    FROM_WORKLOAD, FROM_WORKLOAD_DISPATCH, TO_WORKLOAD, TO_WORKLOAD_DISPATCH, chain,
};

const UNKNOWN: &str = "Unknown interface";

/// Which way a dispatch tree sends packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// By input interface to `cali-fw-<iface>`: the workload's egress policy.
    FromWorkload,
    /// By output interface to `cali-tw-<iface>`: the workload's ingress policy.
    ToWorkload,
}

impl Way {
    fn root(self) -> &'static str {
        match self {
            Way::FromWorkload => FROM_WORKLOAD_DISPATCH,
            Way::ToWorkload => TO_WORKLOAD_DISPATCH,
        }
    }

    fn interface_match(self, pattern: &str) -> String {
        match self {
            Way::FromWorkload => in_interface(pattern),
            Way::ToWorkload => out_interface(pattern),
        }
    }

    fn endpoint_chain(self, interface: &str) -> String {
        match self {
            Way::FromWorkload => chain(FROM_WORKLOAD, interface),
            Way::ToWorkload => chain(TO_WORKLOAD, interface),
        }
    }
}

/// The root dispatch chain of `way` and its children, for the workload `interfaces`.
pub fn dispatch_chains(way: Way, interfaces: &[&str]) -> Vec<Chain> {
    let mut names: Vec<&str> = interfaces.to_vec();
    names.sort_unstable();
    names.dedup();
    let prefix = common_prefix(&names);
    let mut buckets: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for name in &names {
        let rest = &name[prefix.len()..];
        let next = rest.chars().next().map_or("", |c| &rest[..c.len_utf8()]);
        buckets.entry(next).or_default().push(name);
    }
    let to_endpoint = |name: &str| {
        Rule::new(
            vec![way.interface_match(name)],
            Action::Goto(way.endpoint_chain(name)),
        )
    };
    let unknown = || Rule::commented(UNKNOWN, vec![], Action::Drop);
    let mut root = Vec::new();
    let mut children = Vec::new();
    for (next, members) in buckets {
        if let [only] = members[..] {
            root.push(to_endpoint(only));
            continue;
        }
        let child = format!("{}-{next}", way.root());
        root.push(Rule::new(
            vec![way.interface_match(&format!("{prefix}{next}+"))],
            Action::Goto(child.clone()),
        ));
        let mut rules: Vec<Rule> = members.iter().map(|m| to_endpoint(m)).collect();
        rules.push(unknown());
        children.push(Chain::new(child, rules));
    }
    root.push(unknown());
    let mut chains = vec![Chain::new(way.root(), root)];
    chains.extend(children);
    chains
}

fn common_prefix<'a>(names: &[&'a str]) -> &'a str {
    let Some((first, rest)) = names.split_first() else {
        return "";
    };
    let mut len = first.len();
    for name in rest {
        len = first
            .bytes()
            .zip(name.bytes())
            .take(len)
            .take_while(|(a, b)| a == b)
            .count();
    }
    // Interface names are ASCII; keep the cut on a character boundary all the same.
    while !first.is_char_boundary(len) {
        len -= 1;
    }
    &first[..len]
}
