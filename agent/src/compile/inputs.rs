//! From resources to what the compiler works on: valid policies in the order they apply,
//! profiles, workload endpoints with their effective labels, and the owners of every
//! endpoint address. Mirrors `policy::index::Model::new`, which is the definition.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::model::labels::effective_labels_by_name;
use crate::model::validate::validate;
use crate::model::{
    Policy, Profile, Resource, ResourceKey, Rule, WorkloadEndpoint, application_order,
};
use crate::policy::{Direction, RuleOwner};
use crate::selector::Selector;

use super::CompileError;
use super::rules::{CompiledRule, PeerTest, RuleId, Universe, compile_rule};
use super::signature::Signature;

pub(crate) struct Inputs {
    pub universe: Universe,
    /// Every rule of every policy and profile that compiled; programs refer to them by index.
    /// Only appended, with [`Inputs::add_rules`].
    pub rules: Vec<CompiledRule>,
    /// Each rule's peer test, by rule ID.
    peer_tests: Vec<PeerTest>,
    /// Normal (tracked, not preDNAT) policies, sorted by (order, nil last, name).
    pub policies: Vec<PolicyRules>,
    /// Profiles that exist; `None` when their rules do not compile (they then deny all,
    /// like a missing profile, but their labels still count).
    pub profiles: BTreeMap<String, Option<[Vec<RuleId>; 2]>>,
    /// Sorted by key.
    pub workloads: Vec<Workload>,
    /// Effective labels of every endpoint (workload or host) owning each address.
    pub owners: BTreeMap<IpAddr, Vec<BTreeMap<String, String>>>,
    /// The valid profiles as written: their labels are part of endpoints' effective labels.
    raw_profiles: BTreeMap<String, Profile>,
}

#[derive(Clone)]
pub(crate) struct PolicyRules {
    pub name: String,
    pub order: Option<f64>,
    pub selector: Selector,
    /// Index 0 ingress, 1 egress; `None` when the policy does not govern that direction.
    pub rules: [Option<Vec<RuleId>>; 2],
}

pub(crate) struct Workload {
    pub key: ResourceKey,
    pub labels: BTreeMap<String, String>,
    pub profiles: Vec<String>,
    pub addrs: Vec<IpAddr>,
}

pub(crate) fn dir_index(direction: Direction) -> usize {
    match direction {
        Direction::Ingress => 0,
        Direction::Egress => 1,
    }
}

impl Inputs {
    /// Fails only on two resources with the same key: which one counts would depend on
    /// input order, and the image must not.
    pub fn gather<R: Borrow<Resource>>(
        resources: impl IntoIterator<Item = R>,
    ) -> Result<Inputs, CompileError> {
        // Borrowed, not copied: an agent's full compile reads resources it keeps shared,
        // and only profiles are kept whole.
        let resources: Vec<R> = resources.into_iter().collect();
        let mut seen = BTreeSet::new();
        let mut raw_profiles = BTreeMap::new();
        let mut policies = Vec::new();
        let mut workloads = Vec::new();
        let mut hosts = Vec::new();
        for resource in &resources {
            let resource: &Resource = resource.borrow();
            let key = resource.key();
            if !seen.insert(key.clone()) {
                return Err(CompileError::DuplicateResource(key));
            }
            // Invalid resources are treated as deleted, as Felix does.
            if validate(resource).is_err() {
                continue;
            }
            match resource {
                Resource::Profile(p) => {
                    raw_profiles.insert(p.metadata.name.clone(), p.clone());
                }
                // Untracked and preDNAT policies never apply to workload endpoints.
                Resource::Policy(p) if !p.spec.do_not_track && !p.spec.pre_dnat => policies.push(p),
                Resource::Policy(_) | Resource::IpPool(_) | Resource::IpAllocation(_) => {}
                Resource::WorkloadEndpoint(w) => workloads.push((key, w)),
                Resource::HostEndpoint(h) => hosts.push(h),
            }
        }
        policies.sort_by(|a, b| {
            application_order(
                (a.spec.order, &a.metadata.name),
                (b.spec.order, &b.metadata.name),
            )
        });
        workloads.sort_by(|a, b| a.0.cmp(&b.0));

        let mut inputs = Inputs {
            universe: Universe::default(),
            rules: Vec::new(),
            peer_tests: Vec::new(),
            policies: Vec::new(),
            profiles: BTreeMap::new(),
            workloads: Vec::new(),
            owners: BTreeMap::new(),
            raw_profiles: BTreeMap::new(),
        };
        for policy in policies {
            if let Some(compiled) = inputs.compile_policy(policy, |_, _, _| None) {
                inputs.policies.push(compiled);
            }
        }
        for (name, profile) in &raw_profiles {
            let compiled = inputs.compile_profile(profile, |_, _, _| None);
            inputs.profiles.insert(name.clone(), compiled);
        }
        inputs.raw_profiles = raw_profiles;
        for (key, w) in workloads {
            let workload = inputs.workload(key, w);
            inputs.add_owner(&workload);
            inputs.workloads.push(workload);
        }
        for h in hosts {
            let labels = effective_labels_by_name(
                &h.metadata.labels,
                &h.spec.profiles,
                &inputs.raw_profiles,
            );
            for ip in &h.spec.expected_ips {
                inputs.owners.entry(*ip).or_default().push(labels.clone());
            }
        }
        Ok(inputs)
    }

    /// What the compiler keeps of a (valid) workload endpoint.
    pub fn workload(&self, key: ResourceKey, w: &WorkloadEndpoint) -> Workload {
        Workload {
            labels: effective_labels_by_name(
                &w.metadata.labels,
                &w.spec.profiles,
                &self.raw_profiles,
            ),
            key,
            profiles: w.spec.profiles.clone(),
            addrs: w.spec.ip_networks.iter().map(|n| n.addr()).collect(),
        }
    }

    pub fn add_owner(&mut self, w: &Workload) {
        for addr in &w.addrs {
            self.owners.entry(*addr).or_default().push(w.labels.clone());
        }
    }

    pub fn remove_owner(&mut self, w: &Workload) {
        for addr in &w.addrs {
            if let Some(owners) = self.owners.get_mut(addr) {
                if let Some(i) = owners.iter().position(|l| *l == w.labels) {
                    owners.remove(i);
                }
                if owners.is_empty() {
                    self.owners.remove(addr);
                }
            }
        }
    }

    /// Puts `w` in its place among the workloads (replacing one with its key).
    pub fn insert_workload(&mut self, w: Workload) {
        match self.workloads.binary_search_by(|x| x.key.cmp(&w.key)) {
            Ok(i) => self.workloads[i] = w,
            Err(i) => self.workloads.insert(i, w),
        }
    }

    pub fn remove_workload(&mut self, key: &ResourceKey) -> Option<Workload> {
        let i = self.workloads.binary_search_by(|x| x.key.cmp(key)).ok()?;
        Some(self.workloads.remove(i))
    }

    /// Replaces the policy called `name` (`old` as it was written) by `new`, which must be
    /// valid and apply to workloads, or removes it. Rules that did not change keep their
    /// IDs, so programs without the changed rules stay equal to what they were. Returns the
    /// selectors of the policy before and after.
    pub fn replace_policy(
        &mut self,
        name: &str,
        old: Option<&Policy>,
        new: Option<&Policy>,
    ) -> (Option<PolicyRules>, Option<PolicyRules>) {
        let before = self
            .policies
            .iter()
            .position(|p| p.name == name)
            .map(|i| self.policies.remove(i));
        let unchanged = |direction: Direction, index: usize, rule: &Rule| {
            let (old, before) = (old?, before.as_ref()?);
            let written = [&old.spec.ingress, &old.spec.egress];
            let compiled = [before.rules[0].as_ref(), before.rules[1].as_ref()];
            kept_rule_id(written, compiled, direction, index, rule)
        };
        let after = new.and_then(|p| self.compile_policy(p, unchanged));
        let replaced = (before, after.clone());
        if let Some(after) = after {
            let at = self.policies.partition_point(|p| {
                application_order((p.order, &p.name), (after.order, &after.name)).is_lt()
            });
            self.policies.insert(at, after);
        }
        replaced
    }

    /// `unchanged` gives the ID of a rule that is already compiled (same policy, direction,
    /// position and text).
    fn compile_policy(
        &mut self,
        policy: &Policy,
        unchanged: impl Fn(Direction, usize, &Rule) -> Option<RuleId>,
    ) -> Option<PolicyRules> {
        let spec = &policy.spec;
        let selector = Selector::parse(&spec.selector).ok()?;
        let owner = RuleOwner::Policy(policy.metadata.name.clone());
        let governs = |t| spec.types.is_empty() || spec.types.contains(&t);
        let mut compiled = Vec::new();
        let mut list = |inputs: &mut Inputs, rules: &[Rule], direction| {
            inputs.compile_list(rules, &owner, direction, &mut compiled, &|i, r| {
                unchanged(direction, i, r)
            })
        };
        let ingress = if governs(crate::model::PolicyType::Ingress) {
            Some(list(self, &spec.ingress, Direction::Ingress)?)
        } else {
            None
        };
        let egress = if governs(crate::model::PolicyType::Egress) {
            Some(list(self, &spec.egress, Direction::Egress)?)
        } else {
            None
        };
        self.add_rules(compiled);
        Some(PolicyRules {
            name: policy.metadata.name.clone(),
            order: spec.order,
            selector,
            rules: [ingress, egress],
        })
    }

    /// Replaces the rules of profile `new` (which exists, with the same labels and tags, as
    /// `old`); rules that did not change keep their IDs.
    pub fn replace_profile_rules(&mut self, old: &Profile, new: &Profile) {
        let before = self.profiles.get(&old.metadata.name).cloned().flatten();
        let unchanged = |direction: Direction, index: usize, rule: &Rule| {
            let [ingress, egress] = before.as_ref()?;
            let written = [&old.spec.ingress, &old.spec.egress];
            kept_rule_id(
                written,
                [Some(ingress), Some(egress)],
                direction,
                index,
                rule,
            )
        };
        let compiled = self.compile_profile(new, unchanged);
        self.profiles.insert(new.metadata.name.clone(), compiled);
        self.raw_profiles
            .insert(new.metadata.name.clone(), new.clone());
    }

    /// `unchanged` as for [`Inputs::compile_policy`].
    fn compile_profile(
        &mut self,
        profile: &Profile,
        unchanged: impl Fn(Direction, usize, &Rule) -> Option<RuleId>,
    ) -> Option<[Vec<RuleId>; 2]> {
        let owner = RuleOwner::Profile(profile.metadata.name.clone());
        let mut compiled = Vec::new();
        let ingress = self.compile_list(
            &profile.spec.ingress,
            &owner,
            Direction::Ingress,
            &mut compiled,
            &|i, r| unchanged(Direction::Ingress, i, r),
        )?;
        let egress = self.compile_list(
            &profile.spec.egress,
            &owner,
            Direction::Egress,
            &mut compiled,
            &|i, r| unchanged(Direction::Egress, i, r),
        )?;
        self.add_rules(compiled);
        Some([ingress, egress])
    }

    /// Compiles `rules` into `out` (committed to `self.rules` by the caller only if the
    /// whole policy or profile compiles), returning the ids they will have.
    fn compile_list(
        &mut self,
        rules: &[Rule],
        owner: &RuleOwner,
        direction: Direction,
        out: &mut Vec<CompiledRule>,
        unchanged: &dyn Fn(usize, &Rule) -> Option<RuleId>,
    ) -> Option<Vec<RuleId>> {
        let mut ids = Vec::with_capacity(rules.len());
        for (index, rule) in rules.iter().enumerate() {
            if let Some(id) = unchanged(index, rule) {
                ids.push(id);
                continue;
            }
            let compiled =
                compile_rule(&mut self.universe, rule, owner.clone(), direction, index).ok()?;
            let id = RuleId::try_from(self.rules.len() + out.len()).ok()?;
            out.push(compiled);
            ids.push(id);
        }
        Some(ids)
    }

    pub fn rule(&self, id: RuleId) -> Option<&CompiledRule> {
        self.rules.get(id as usize)
    }

    fn add_rules(&mut self, compiled: Vec<CompiledRule>) {
        self.peer_tests.extend(compiled.iter().map(PeerTest::of));
        self.rules.extend(compiled);
    }

    /// Whether rule `id` exists and its peer test holds for a peer of signature `sig`.
    pub fn peer_holds(&self, id: RuleId, sig: &Signature) -> bool {
        match self.peer_tests.get(id as usize) {
            None => false,
            Some(test) => test
                .holds(sig)
                .unwrap_or_else(|| self.rule(id).is_some_and(|r| r.peer().holds(sig))),
        }
    }

    pub fn owners_of(&self, addr: IpAddr) -> &[BTreeMap<String, String>] {
        self.owners.get(&addr).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// The ID a compiled rule keeps across a change of its policy or profile: the rule at the
/// same direction and position, with the same text, compiles the same. `written` and
/// `compiled` are the old rules, ingress then egress (`None`: not compiled, as for a
/// direction a policy does not govern).
fn kept_rule_id(
    written: [&Vec<Rule>; 2],
    compiled: [Option<&Vec<RuleId>>; 2],
    direction: Direction,
    index: usize,
    rule: &Rule,
) -> Option<RuleId> {
    let d = dir_index(direction);
    if written[d].get(index)? != rule {
        return None;
    }
    compiled[d]?.get(index).copied()
}
