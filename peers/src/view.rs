//! What a node's policy agent sees of the v1 resources, as Felix 2.6.8's calculation graph
//! hands it to its dataplane: the valid profiles and policies, every endpoint's effective
//! labels (for the members of selector sets), and for each endpoint on this node the
//! policies that apply to it, per direction, in order.
//!
//! Both renderings ([`crate::felix`] and [`crate::nft`]) start from this view, so they see
//! the same policy the same way; the semantics themselves are palisade's (`model::labels`
//! for inheritance, `application_order` for order, `Selector` for matching).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use palisade::model::labels::effective_labels_by_name;
use palisade::model::validate::validate;
use palisade::model::{
    EntityRule, IpPool, Policy, PolicyType, Profile, Resource, Rule, WorkloadEndpoint,
    application_order,
};
use palisade::selector::Selector;

/// The IP family a ruleset is rendered for (iptables and ip6tables are separate tables).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: &IpAddr) -> Family {
        if ip.is_ipv4() { Family::V4 } else { Family::V6 }
    }

    /// Felix's IP version number.
    pub fn version(self) -> u8 {
        match self {
            Family::V4 => 4,
            Family::V6 => 6,
        }
    }
}

/// A policy that takes part: valid, not untracked or pre-DNAT (those apply to host
/// endpoints only), with its selector parsed.
pub struct ActivePolicy {
    pub policy: Policy,
    pub selector: Selector,
}

impl ActivePolicy {
    pub fn name(&self) -> &str {
        &self.policy.metadata.name
    }

    /// Whether the policy governs `ingress` (true) or egress traffic; a policy with no
    /// types governs both, as palisade's evaluator reads it.
    pub fn governs(&self, ingress: bool) -> bool {
        let wanted = if ingress {
            PolicyType::Ingress
        } else {
            PolicyType::Egress
        };
        self.policy.spec.types.is_empty() || self.policy.spec.types.contains(&wanted)
    }

    pub fn rules(&self, ingress: bool) -> &[Rule] {
        if ingress {
            &self.policy.spec.ingress
        } else {
            &self.policy.spec.egress
        }
    }
}

/// An endpoint on this node, with what applies to it.
pub struct LocalEndpoint<'a> {
    pub endpoint: &'a WorkloadEndpoint,
    /// The host-side interface: where the endpoint's chains are dispatched from.
    pub interface: &'a str,
    /// Indexes into [`View::policies`], in the order they apply.
    pub ingress_policies: Vec<usize>,
    pub egress_policies: Vec<usize>,
}

/// The peer selectors of one side of a rule: a tag `t` is the selector `has(t)`, and the
/// rule's selector and tag must both match (two sets, ANDed), as Felix's rule scanner has it.
#[derive(Debug, Clone, Default)]
pub struct EntitySelectors {
    pub positive: Vec<Selector>,
    pub negative: Vec<Selector>,
}

pub struct View {
    pub profiles: BTreeMap<String, Profile>,
    /// In application order.
    pub policies: Vec<ActivePolicy>,
    /// Every valid workload endpoint, with its effective labels.
    pub endpoints: Vec<(WorkloadEndpoint, BTreeMap<String, String>)>,
    /// Host endpoints' expected addresses and effective labels (they are peers too).
    pub host_addresses: Vec<(Vec<IpAddr>, BTreeMap<String, String>)>,
    pub pools: Vec<IpPool>,
}

impl View {
    /// The view of `resources`. Invalid resources are left out, as Felix treats a resource
    /// that fails validation as deleted.
    pub fn new(resources: &[Resource]) -> View {
        let mut profiles = BTreeMap::new();
        let mut policies = Vec::new();
        let mut workloads = Vec::new();
        let mut hosts = Vec::new();
        let mut pools = Vec::new();
        for resource in resources {
            if validate(resource).is_err() {
                continue;
            }
            match resource {
                Resource::Profile(p) if rules_parse(&p.spec.ingress, &p.spec.egress) => {
                    profiles.insert(p.metadata.name.clone(), p.clone());
                }
                Resource::Policy(p) if !p.spec.do_not_track && !p.spec.pre_dnat => {
                    if let Ok(selector) = Selector::parse(&p.spec.selector)
                        && rules_parse(&p.spec.ingress, &p.spec.egress)
                    {
                        policies.push(ActivePolicy {
                            policy: p.clone(),
                            selector,
                        });
                    }
                }
                Resource::WorkloadEndpoint(w) => workloads.push(w.clone()),
                Resource::HostEndpoint(h) => hosts.push(h.clone()),
                Resource::IpPool(p) => pools.push(p.clone()),
                _ => {}
            }
        }
        policies.sort_by(|a, b| {
            application_order(
                (a.policy.spec.order, a.name()),
                (b.policy.spec.order, b.name()),
            )
        });
        let endpoints = workloads
            .into_iter()
            .map(|w| {
                let labels =
                    effective_labels_by_name(&w.metadata.labels, &w.spec.profiles, &profiles);
                (w, labels)
            })
            .collect();
        let host_addresses = hosts
            .into_iter()
            .map(|h| {
                let labels =
                    effective_labels_by_name(&h.metadata.labels, &h.spec.profiles, &profiles);
                (h.spec.expected_ips, labels)
            })
            .collect();
        View {
            profiles,
            policies,
            endpoints,
            host_addresses,
            pools,
        }
    }

    /// The endpoints on `node` that have an interface, sorted by interface name, each with
    /// the policies that select it.
    pub fn local_endpoints(&self, node: &str) -> Vec<LocalEndpoint<'_>> {
        let mut local: Vec<LocalEndpoint> = self
            .endpoints
            .iter()
            .filter(|(w, _)| w.metadata.node == node && !w.spec.interface_name.is_empty())
            .map(|(w, labels)| {
                let selecting = |ingress: bool| {
                    self.policies
                        .iter()
                        .enumerate()
                        .filter(|(_, p)| p.governs(ingress) && p.selector.matches(labels))
                        .map(|(i, _)| i)
                        .collect()
                };
                LocalEndpoint {
                    endpoint: w,
                    interface: &w.spec.interface_name,
                    ingress_policies: selecting(true),
                    egress_policies: selecting(false),
                }
            })
            .collect();
        local.sort_by(|a, b| a.interface.cmp(b.interface));
        local
    }

    /// The policies some endpoint of `locals` uses: Felix renders only those.
    pub fn active_policies(locals: &[LocalEndpoint]) -> BTreeSet<usize> {
        locals
            .iter()
            .flat_map(|l| l.ingress_policies.iter().chain(&l.egress_policies))
            .copied()
            .collect()
    }

    /// The profiles some endpoint of `locals` lists and that exist, by name.
    pub fn active_profiles<'a>(&'a self, locals: &[LocalEndpoint]) -> BTreeSet<&'a str> {
        locals
            .iter()
            .flat_map(|l| &l.endpoint.spec.profiles)
            .filter_map(|name| self.profiles.get_key_value(name).map(|(k, _)| k.as_str()))
            .collect()
    }

    /// The addresses of `family` of every endpoint, anywhere in the cluster, whose
    /// effective labels `selector` matches: the members of its set.
    pub fn members(&self, selector: &Selector, family: Family) -> BTreeSet<IpAddr> {
        let workloads = self.endpoints.iter().filter(|(_, l)| selector.matches(l));
        let workload_ips = workloads.flat_map(|(w, _)| w.spec.ip_networks.iter().map(|n| n.addr()));
        let host_ips = self
            .host_addresses
            .iter()
            .filter(|(_, l)| selector.matches(l))
            .flat_map(|(ips, _)| ips.iter().copied());
        workload_ips
            .chain(host_ips)
            .filter(|ip| Family::of(ip) == family)
            .collect()
    }
}

/// The selectors of one side of a rule; `None` if one does not parse (validation has
/// already refused such a resource).
pub fn entity_selectors(entity: &EntityRule) -> Option<EntitySelectors> {
    let parse = |tag: &Option<String>, selector: &Option<String>| -> Option<Vec<Selector>> {
        let mut out = Vec::new();
        if let Some(tag) = tag {
            out.push(Selector::parse(&format!("has({tag})")).ok()?);
        }
        if let Some(selector) = selector {
            out.push(Selector::parse(selector).ok()?);
        }
        Some(out)
    };
    Some(EntitySelectors {
        positive: parse(&entity.tag, &entity.selector)?,
        negative: parse(&entity.not_tag, &entity.not_selector)?,
    })
}

/// Whether `rule` can match packets of `family`: not if it names the other family's IP
/// version, or tests ICMP fields under the other family's ICMP protocol (an ICMP type is
/// only ever read from ICMP of the packet's own family, as palisade's evaluator has it).
pub fn applies_to(rule: &Rule, family: Family) -> bool {
    if rule.ip_version.is_some_and(|v| v != family.version()) {
        return false;
    }
    let other_icmp = match family {
        Family::V4 => 58,
        Family::V6 => 1,
    };
    let tests_icmp = rule.icmp.is_some() || rule.not_icmp.is_some();
    !(tests_icmp && rule.protocol.as_ref().and_then(|p| p.number()) == Some(other_icmp))
}

fn rules_parse(ingress: &[Rule], egress: &[Rule]) -> bool {
    ingress.iter().chain(egress).all(|r| {
        entity_selectors(&r.source).is_some() && entity_selectors(&r.destination).is_some()
    })
}
