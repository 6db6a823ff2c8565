//! Local IDs: which endpoint addresses are policed alike.
//!
//! Endpoints with the same effective labels and profile list run the same program. Two
//! things can still tell two of their addresses apart, and the kernel knows both from the
//! packet: the family (`ipVersion`, and what ICMP is), and rules that test the endpoint's own
//! address (the destination of an ingress rule, the source of an egress rule: `nets`,
//! selectors, tags on the local side). So a local ID is keyed by (labels, profiles, family,
//! the program left after deciding those tests), and the kernel finds it by
//! (interface, own address). Numbered in key order: deterministic.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::rc::Rc;

use crate::model::ResourceKey;
use crate::policy::Direction;

use super::inputs::{Inputs, Workload};
use super::program::Program;
use super::signature::Family;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LocalId(pub u32);

/// What a local ID stands for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LocalInfo {
    pub labels: BTreeMap<String, String>,
    pub profiles: Vec<String>,
    pub family: Family,
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct LocalKey {
    info: LocalInfo,
    /// Ingress, egress: with family and local-address tests decided.
    programs: [Program; 2],
}

pub(crate) struct LocalIds {
    /// Indexed by local ID.
    pub locals: Vec<(LocalInfo, [Program; 2])>,
    pub of_endpoint: BTreeMap<(ResourceKey, IpAddr), LocalId>,
}

impl LocalIds {
    pub fn assign(inputs: &Inputs, include: impl Fn(&ResourceKey) -> bool) -> LocalIds {
        let mut keys: BTreeMap<LocalKey, Vec<(ResourceKey, IpAddr)>> = BTreeMap::new();
        // Many endpoints share labels and profiles: their programs are found once.
        let mut programs_of: HashMap<LabelsAndProfiles<'_>, Rc<Programs>> = HashMap::new();
        for w in inputs.workloads.iter().filter(|w| include(&w.key)) {
            let found = Rc::clone(
                programs_of
                    .entry((&w.labels, &w.profiles))
                    .or_insert_with(|| Rc::new(Programs::of_endpoint(inputs, w))),
            );
            let Programs {
                programs,
                label_tests,
                cidrs,
            } = &*found;
            for &addr in &w.addrs {
                let family = Family::of(addr);
                let sig =
                    inputs
                        .universe
                        .signature(addr, inputs.owners_of(addr), label_tests, cidrs);
                let resolved = programs.each_ref().map(|p| {
                    p.retain(|id| {
                        inputs
                            .rule(id)
                            .is_some_and(|r| r.applies_to_family(family) && r.local().holds(&sig))
                    })
                });
                let key = LocalKey {
                    info: LocalInfo {
                        labels: w.labels.clone(),
                        profiles: w.profiles.clone(),
                        family,
                    },
                    programs: resolved,
                };
                keys.entry(key).or_default().push((w.key.clone(), addr));
            }
        }
        let mut out = LocalIds {
            locals: Vec::new(),
            of_endpoint: BTreeMap::new(),
        };
        for (i, (key, endpoints)) in keys.into_iter().enumerate() {
            let id = LocalId(u32::try_from(i).unwrap_or(u32::MAX));
            for e in endpoints {
                out.of_endpoint.insert(e, id);
            }
            out.locals.push((key.info, key.programs));
        }
        out
    }
}

/// What an endpoint's programs depend on.
type LabelsAndProfiles<'a> = (&'a BTreeMap<String, String>, &'a [String]);

/// An endpoint's programs, with the tests their rules make of its own address.
struct Programs {
    programs: [Program; 2],
    label_tests: Vec<usize>,
    cidrs: Vec<usize>,
}

impl Programs {
    fn of_endpoint(inputs: &Inputs, w: &Workload) -> Programs {
        let programs = [Direction::Ingress, Direction::Egress]
            .map(|d| Program::of_endpoint(inputs, &w.labels, &w.profiles, d));
        let mut label_tests = BTreeSet::new();
        let mut cidrs = BTreeSet::new();
        for rule in programs
            .iter()
            .flat_map(|p| p.rule_ids())
            .filter_map(|id| inputs.rule(id))
        {
            label_tests.extend(rule.local().label_tests());
            cidrs.extend(rule.local().cidrs());
        }
        Programs {
            programs,
            label_tests: label_tests.into_iter().collect(),
            cidrs: cidrs.into_iter().collect(),
        }
    }
}
