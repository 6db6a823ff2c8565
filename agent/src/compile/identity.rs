//! Local IDs: which endpoint addresses are policed alike.
//!
//! Endpoints with the same effective labels and profile list run the same program. Two
//! things can still tell two of their addresses apart, and the kernel knows both from the
//! packet: the family (`ipVersion`, and what ICMP is), and rules that test the endpoint's own
//! address (the destination of an ingress rule, the source of an egress rule: `nets`,
//! selectors, tags on the local side). So a local ID is keyed by (labels, profiles, family,
//! the program left after deciding those tests), and the kernel finds it by
//! (interface, own address). A full compile numbers them in key order (deterministic);
//! between full compiles they are kept, handed out as keys appear and freed (for reuse)
//! when their last endpoint address goes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::rc::Rc;

use crate::model::ResourceKey;

use super::Map;
use super::inputs::{Inputs, PolicyRules, Workload};
use super::program::Program;
use super::rules::{CompiledRule, RuleId};
use super::shared_programs::SharedPrograms;
use super::signature::{Family, Signature};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LocalId(pub u32);

/// What a local ID stands for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LocalInfo {
    pub labels: BTreeMap<String, String>,
    pub profiles: Vec<String>,
    pub family: Family,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct LocalKey {
    pub info: LocalInfo,
    /// Ingress, egress: with family and local-address tests decided.
    pub programs: SharedPrograms,
}

/// The local IDs in use, kept between compilations: an ID is handed out when the first
/// endpoint address with its key appears and freed (for reuse) when the last one goes.
pub(crate) struct LocalIds {
    /// Indexed by local ID; `None` for a free ID.
    keys: Vec<Option<LocalKey>>,
    id_of: Map<LocalKey, LocalId>,
    /// Endpoint addresses using each ID.
    users: Vec<usize>,
    free: BTreeSet<LocalId>,
    /// Many endpoints share labels and profiles: their programs are found once.
    programs_of: Map<LabelsAndProfiles, Rc<Programs>>,
}

/// What an endpoint's programs depend on.
type LabelsAndProfiles = (BTreeMap<String, String>, Vec<String>);

impl LocalIds {
    /// The first assignment: IDs numbered in key order, so a full compile is deterministic.
    pub fn assign(
        inputs: &Inputs,
        include: impl Fn(&ResourceKey) -> bool,
    ) -> (LocalIds, BTreeMap<(ResourceKey, IpAddr), LocalId>) {
        let mut ids = LocalIds {
            keys: Vec::new(),
            id_of: Map::default(),
            users: Vec::new(),
            free: BTreeSet::new(),
            programs_of: Map::default(),
        };
        let mut by_key: BTreeMap<LocalKey, Vec<(ResourceKey, IpAddr)>> = BTreeMap::default();
        let mut local_keys = LocalKeys::default();
        for w in inputs.workloads.iter().filter(|w| include(&w.key)) {
            let programs = ids.programs(inputs, w);
            for &addr in &w.addrs {
                let key = local_keys.key(inputs, w, &programs, addr);
                by_key.entry(key).or_default().push((w.key.clone(), addr));
            }
        }
        let mut endpoints = BTreeMap::default();
        for (i, (key, users)) in by_key.into_iter().enumerate() {
            let id = LocalId(u32::try_from(i).unwrap_or(u32::MAX));
            ids.users.push(users.len());
            for e in users {
                endpoints.insert(e, id);
            }
            ids.id_of.insert(key.clone(), id);
            ids.keys.push(Some(key));
        }
        (ids, endpoints)
    }

    /// The programs of endpoints with `w`'s labels and profiles.
    pub fn programs(&mut self, inputs: &Inputs, w: &Workload) -> Rc<Programs> {
        let key = (w.labels.clone(), w.profiles.clone());
        Rc::clone(
            self.programs_of
                .entry(key)
                .or_insert_with(|| Rc::new(Programs::of_endpoint(inputs, w))),
        )
    }

    /// Policy `before` became `after` (the same name; either may be missing): the cached
    /// programs of the endpoints either one selects get its new rules. Where the policy
    /// keeps its place (the same order, selecting the endpoints before and after) its old
    /// rules are swapped for the new ones in place, without evaluating every policy's
    /// selector again; the other programs are forgotten, to be made afresh.
    pub fn policy_replaced(
        &mut self,
        inputs: &Inputs,
        before: Option<&PolicyRules>,
        after: Option<&PolicyRules>,
    ) {
        let kept_place = match (before, after) {
            (Some(b), Some(a)) => b.order == a.order,
            _ => false,
        };
        fn selects(p: Option<&PolicyRules>, labels: &BTreeMap<String, String>) -> bool {
            p.is_some_and(|p| p.selector.matches(labels))
        }
        // Endpoints with other labels often run the same programs: each is patched once,
        // and the patched programs are shared.
        let mut patched_of: Map<SharedPrograms, Option<Rc<Programs>>> = Map::default();
        self.programs_of.retain(|(labels, _), programs| {
            let (was, is) = (selects(before, labels), selects(after, labels));
            if !was && !is {
                return true;
            }
            let (Some(before), Some(after)) = (before, after) else {
                return false;
            };
            if !(was && is && kept_place) {
                return false;
            }
            let patched = patched_of
                .entry(programs.programs.clone())
                .or_insert_with(|| {
                    programs
                        .with_policy_replaced(inputs, &before.rules, &after.rules)
                        .map(Rc::new)
                });
            match patched {
                Some(patched) => {
                    *programs = Rc::clone(patched);
                    true
                }
                None => false,
            }
        });
    }

    /// Forgets the programs of endpoints with the labels and profiles `affected` names (one
    /// of their profiles changed).
    pub fn forget_programs(
        &mut self,
        affected: impl Fn(&BTreeMap<String, String>, &[String]) -> bool,
    ) {
        self.programs_of
            .retain(|(labels, profiles), _| !affected(labels, profiles));
    }

    /// One more user of `key`'s ID; `true` when the ID is new (its tables are to be built).
    pub fn acquire(&mut self, key: LocalKey) -> (LocalId, bool) {
        if let Some(&id) = self.id_of.get(&key) {
            if let Some(users) = self.users.get_mut(id.0 as usize) {
                *users += 1;
            }
            return (id, false);
        }
        let id = match self.free.pop_first() {
            Some(id) => id,
            None => {
                self.keys.push(None);
                self.users.push(0);
                LocalId(u32::try_from(self.keys.len() - 1).unwrap_or(u32::MAX))
            }
        };
        let i = id.0 as usize;
        self.id_of.insert(key.clone(), id);
        self.keys[i] = Some(key);
        self.users[i] = 1;
        (id, true)
    }

    /// One user of `id` fewer; `true` when that was the last (the ID is now free).
    pub fn release(&mut self, id: LocalId) -> bool {
        let i = id.0 as usize;
        let Some(users) = self.users.get_mut(i) else {
            return false;
        };
        *users = users.saturating_sub(1);
        if *users > 0 {
            return false;
        }
        if let Some(key) = self.keys.get_mut(i).and_then(Option::take) {
            self.id_of.remove(&key);
        }
        self.free.insert(id);
        true
    }

    /// Gives `id` a new key, for all its users at once; `false` (and nothing changed) when
    /// another ID has that key.
    pub fn rekey(&mut self, id: LocalId, key: LocalKey) -> bool {
        if self.id_of.contains_key(&key) {
            return false;
        }
        let Some(slot) = self.keys.get_mut(id.0 as usize) else {
            return false;
        };
        if let Some(old) = slot.replace(key.clone()) {
            self.id_of.remove(&old);
        }
        self.id_of.insert(key, id);
        true
    }

    /// How many endpoint addresses `id` polices.
    pub fn users(&self, id: LocalId) -> usize {
        self.users.get(id.0 as usize).copied().unwrap_or(0)
    }

    pub fn key(&self, id: LocalId) -> Option<&LocalKey> {
        self.keys.get(id.0 as usize).and_then(Option::as_ref)
    }

    /// How many IDs there are, free ones included.
    pub fn len(&self) -> usize {
        self.keys.len()
    }
}

/// Local keys of endpoint addresses, for one pass over many endpoints: endpoints with
/// other labels often run the same programs and their own addresses pass the same tests,
/// so the programs are resolved once for each such pair.
#[derive(Default)]
pub(crate) struct LocalKeys {
    resolved: Map<(SharedPrograms, Family, Signature), SharedPrograms>,
}

impl LocalKeys {
    /// The local key of `w`'s address `addr`.
    pub fn key(
        &mut self,
        inputs: &Inputs,
        w: &Workload,
        programs: &Rc<Programs>,
        addr: IpAddr,
    ) -> LocalKey {
        let family = Family::of(addr);
        let info = LocalInfo {
            labels: w.labels.clone(),
            profiles: w.profiles.clone(),
            family,
        };
        // No rule can fail for any own address: every address keeps every rule.
        if !programs.tests_own_address() {
            return LocalKey {
                info,
                programs: programs.programs.clone(),
            };
        }
        let sig = inputs.universe.signature(
            addr,
            inputs.owners_of(addr),
            &programs.label_tests,
            &programs.cidrs,
        );
        let resolved = self
            .resolved
            .entry((programs.programs.clone(), family, sig))
            .or_insert_with_key(|(_, _, sig)| {
                SharedPrograms::new(programs.programs.get().each_ref().map(|p| {
                    p.retain(|id| {
                        inputs
                            .rule(id)
                            .is_some_and(|r| r.applies_to_family(family) && r.local().holds(sig))
                    })
                }))
            });
        LocalKey {
            info,
            programs: resolved.clone(),
        }
    }
}

/// An endpoint's programs, with the tests their rules make of its own address.
pub(crate) struct Programs {
    programs: SharedPrograms,
    /// At least the tests the rules make (after a policy change in place, also those its
    /// old rules made: a test no rule reads only sets a signature bit nothing reads).
    label_tests: Vec<usize>,
    cidrs: Vec<usize>,
    /// Whether some rule (or, after a change in place, some old rule) is of one family.
    one_family: bool,
}

impl Programs {
    fn of_endpoint(inputs: &Inputs, w: &Workload) -> Programs {
        Programs::with_tests(inputs, Program::of_endpoint(inputs, &w.labels, &w.profiles))
    }

    /// The programs with one policy's rules replaced (`[ingress, egress]`, `None` where the
    /// policy does not govern the direction), when the policy keeps its place; `None` when
    /// they must be made afresh (see [`Program::with_policy_rules_replaced`]).
    fn with_policy_replaced(
        &self,
        inputs: &Inputs,
        old: &[Option<Vec<RuleId>>; 2],
        new: &[Option<Vec<RuleId>>; 2],
    ) -> Option<Programs> {
        let mut programs = self.programs.get().clone();
        for (d, program) in programs.iter_mut().enumerate() {
            match (&old[d], &new[d]) {
                (None, None) => {}
                (Some(old), Some(new)) => {
                    *program = program.with_policy_rules_replaced(old, new)?
                }
                _ => return None,
            }
        }
        // The rules that stay test what they tested: only the new rules' tests are looked
        // for, not every rule's again.
        let mut patched = Programs {
            programs: SharedPrograms::new(programs),
            label_tests: self.label_tests.clone(),
            cidrs: self.cidrs.clone(),
            one_family: self.one_family,
        };
        patched.add_tests(
            new.iter()
                .flatten()
                .flatten()
                .filter_map(|&id| inputs.rule(id)),
        );
        Some(patched)
    }

    fn with_tests(inputs: &Inputs, programs: [Program; 2]) -> Programs {
        let rules: Vec<&CompiledRule> = programs
            .iter()
            .flat_map(|p| p.rule_ids())
            .filter_map(|id| inputs.rule(id))
            .collect();
        let mut made = Programs {
            programs: SharedPrograms::new(programs),
            label_tests: Vec::new(),
            cidrs: Vec::new(),
            one_family: false,
        };
        made.add_tests(rules.into_iter());
        made
    }

    /// Adds what `rules` test of the endpoint's own address.
    fn add_tests<'a>(&mut self, rules: impl Iterator<Item = &'a CompiledRule>) {
        for rule in rules {
            self.label_tests.extend(rule.local().label_tests());
            self.cidrs.extend(rule.local().cidrs());
            self.one_family |= rule.ip_version.is_some();
        }
        // Long programs test the same few things many times: one sort beats a tree insert
        // per test.
        for tests in [&mut self.label_tests, &mut self.cidrs] {
            tests.sort_unstable();
            tests.dedup();
        }
    }

    /// Whether some rule may hold for one of an endpoint's addresses and not another.
    fn tests_own_address(&self) -> bool {
        self.one_family || !self.label_tests.is_empty() || !self.cidrs.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::parse::resource_from_value;
    use crate::model::{Policy, Resource};

    fn policy(destination: &str) -> Policy {
        let value = json!({"apiVersion": "v1", "kind": "policy",
            "metadata": {"name": "p"},
            "spec": {"selector": "all()", "order": 1,
                     "ingress": [{"action": "allow", "destination": {"selector": destination}},
                                 {"action": "deny", "protocol": "tcp"}]}});
        match resource_from_value(value).unwrap() {
            Resource::Policy(p) => p,
            _ => unreachable!("a policy"),
        }
    }

    #[test]
    fn programs_patched_in_place_test_their_new_rules_and_hash_as_made_afresh() {
        let old = policy("role == 'db'");
        let endpoint = resource_from_value(json!({"apiVersion": "v1", "kind": "workloadEndpoint",
            "metadata": {"name": "e", "node": "n", "orchestrator": "o", "workload": "w",
                         "labels": {"role": "web"}},
            "spec": {"interfaceName": "cali0", "ipNetworks": ["10.0.0.1/32"]}}))
        .unwrap();
        let mut inputs = Inputs::gather([Resource::Policy(old.clone()), endpoint]).unwrap();
        let (mut ids, _) = LocalIds::assign(&inputs, |_| true);
        fn w(inputs: &Inputs) -> &Workload {
            inputs.workloads.first().unwrap()
        }
        let before = ids.programs(&inputs, w(&inputs));

        let new = policy("role == 'web'");
        let (b, a) = inputs.replace_policy("p", Some(&old), Some(&new));
        ids.policy_replaced(&inputs, b.as_ref(), a.as_ref());
        let patched = ids.programs(&inputs, w(&inputs));
        assert!(
            !Rc::ptr_eq(&before, &patched),
            "the cached programs were patched"
        );
        let afresh = Rc::new(Programs::of_endpoint(&inputs, w(&inputs)));
        // Equal programs are one cache entry, however they were made.
        assert_eq!(patched.programs, afresh.programs);
        // The new rule's test of the endpoint's own labels is among those its signature
        // reads (the old rule's may stay: nothing reads it).
        for test in &afresh.label_tests {
            assert!(patched.label_tests.contains(test), "test {test} missing");
        }
        let addr = "10.0.0.1".parse().unwrap();
        let mut keys = LocalKeys::default();
        let (patched_key, afresh_key) = (
            keys.key(&inputs, w(&inputs), &patched, addr),
            LocalKeys::default().key(&inputs, w(&inputs), &afresh, addr),
        );
        assert_eq!(patched_key, afresh_key);
    }

    /// The local keys of an endpoint with one v4 and one v6 address under `ingress`'s rules.
    fn keys_of_both_families(ingress: serde_json::Value) -> (LocalKey, LocalKey) {
        let policy = resource_from_value(json!({"apiVersion": "v1", "kind": "policy",
            "metadata": {"name": "p"},
            "spec": {"selector": "all()", "order": 1, "ingress": ingress}}))
        .unwrap();
        let endpoint = resource_from_value(json!({"apiVersion": "v1", "kind": "workloadEndpoint",
            "metadata": {"name": "e", "node": "n", "orchestrator": "o", "workload": "w"},
            "spec": {"interfaceName": "cali0",
                     "ipNetworks": ["10.0.0.1/32", "fd00::1/128"]}}))
        .unwrap();
        let inputs = Inputs::gather([policy, endpoint]).unwrap();
        let (mut ids, _) = LocalIds::assign(&inputs, |_| true);
        let w = inputs.workloads.first().unwrap();
        let programs = ids.programs(&inputs, w);
        let mut keys = LocalKeys::default();
        let [v4, v6] = ["10.0.0.1", "fd00::1"].map(|a| a.parse().unwrap());
        (
            keys.key(&inputs, w, &programs, v4),
            keys.key(&inputs, w, &programs, v6),
        )
    }

    #[test]
    fn rules_that_test_no_own_address_are_kept_for_every_address() {
        let (v4, v6) = keys_of_both_families(json!([
            {"action": "allow", "protocol": "tcp", "source": {"selector": "all()"}},
            {"action": "deny"}]));
        assert_eq!(v4.programs, v6.programs);
        assert_eq!(v4.programs.get()[0].rule_ids().count(), 2);
        assert_ne!(v4.info, v6.info, "the family still tells them apart");
    }

    #[test]
    fn a_rule_of_one_family_is_kept_for_that_familys_addresses_only() {
        let (v4, v6) = keys_of_both_families(json!([
            {"action": "allow", "ipVersion": 6, "protocol": "tcp"},
            {"action": "deny"}]));
        let ingress = |k: &LocalKey| k.programs.get()[0].rule_ids().collect::<Vec<_>>();
        assert_eq!(ingress(&v4).len(), 1);
        assert_eq!(ingress(&v6).len(), 2);
    }
}
