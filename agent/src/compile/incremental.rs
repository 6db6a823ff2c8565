//! The compiler an agent keeps: it remembers its last compilation and applies the common
//! changes to it in place, touching only the image entries they affect, instead of
//! compiling every resource again.
//!
//! In place:
//! - a workload endpoint added, changed or removed: its addresses' exact entries, and for a
//!   local endpoint its local IDs (an existing ID when another endpoint already has its
//!   key, else a new one with its tables);
//! - a policy added, changed or removed whose rules test only what the rules of the last
//!   full compile already test: the local endpoints its selector picks (before or after)
//!   get their programs again; rules that did not change keep their IDs, so tables of
//!   programs without the changed rules are found in the cache;
//! - a profile's rules changed (not its labels or tags), under the same condition: the
//!   local endpoints that list the profile get their programs again;
//! - IP pools and allocations: nothing (policy does not read them).
//!
//! Everything else (profiles created, deleted or relabelled, host endpoints, new label tests or CIDRs, an address with
//! several owners, a lot of changes at once, too much garbage) compiles in full, which
//! renumbers everything. In place, IDs are stable: local IDs and table IDs are reused once
//! free (a table once no group entry refers to it, [`super::table_ids`]), so steady churn
//! keeps the image's tables near a full compile's; outcomes (one per distinct verdict and
//! rule) and compiled rules are only appended. The result is the same policy as a full
//! compile; the
//! differential test `tests/compile_incremental.rs` holds the two together.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use crate::model::validate::validate;
use crate::model::{Policy, Profile, Resource, ResourceKey};

use super::Locals;
use super::build::Build;
use super::capacity::{Capacities, CompileError};
use super::changes::{ChangedKeys, Changes};
use super::identity::{LocalId, LocalKey, LocalKeys};
use super::image::Image;
use super::inputs::PolicyRules;

/// More changes than this at once compile in full (a snapshot, a bulk import).
const MAX_IN_PLACE: usize = 64;

pub struct Compiler {
    /// `None`: every endpoint is local; else this node's.
    node: Option<String>,
    capacities: Capacities,
    resources: BTreeMap<ResourceKey, Arc<Resource>>,
    build: Option<Build>,
}

/// A change the compiler cannot apply in place.
struct NeedsFull;

impl Compiler {
    pub fn new(locals: Locals<'_>, capacities: Capacities) -> Compiler {
        Compiler {
            node: match locals {
                Locals::All => None,
                Locals::Node(node) => Some(node.to_owned()),
            },
            capacities,
            resources: BTreeMap::new(),
            build: None,
        }
    }

    /// Makes the next update compile in full (and so drop what in-place updates left
    /// unused).
    pub fn forget(&mut self) {
        self.build = None;
    }

    /// The image of the resources of the last successful [`Compiler::update`].
    pub fn image(&self) -> Option<&Image> {
        self.build.as_ref().map(|b| &b.image)
    }

    /// Brings the image up to `resources` (each under its own key, [`Resource::key`]);
    /// says which entries it touched. On error (the
    /// policy does not fit) the compiler forgets its image: the next update compiles in
    /// full. Resources that are the same allocation as in the last update are not looked
    /// at again.
    pub fn update(
        &mut self,
        resources: &BTreeMap<ResourceKey, Arc<Resource>>,
    ) -> Result<Changes, CompileError> {
        let changed = diff(&mut self.resources, resources);
        let in_place = match self.build.as_mut() {
            Some(build) if changed.len() <= MAX_IN_PLACE && !too_much_garbage(build) => {
                build.changes = Some(ChangedKeys::default());
                let node = self.node.as_deref();
                let applied = changed.iter().try_for_each(|key| {
                    apply(
                        build,
                        node,
                        key,
                        self.resources.get(key).map(|r| &**r),
                        resources.get(key).map(|r| &**r),
                    )
                });
                build.end_update();
                applied.is_ok()
            }
            _ => false,
        };
        for key in &changed {
            match resources.get(key) {
                Some(r) => self.resources.insert(key.clone(), Arc::clone(r)),
                None => self.resources.remove(key),
            };
        }
        if in_place
            && let Some(build) = self.build.as_mut()
            && self.capacities.check(&build.image.stats()).is_empty()
        {
            let changes = build.changes.take().unwrap_or_default();
            return Ok(Changes::Keys(changes));
        }
        // In place did not apply or does not fit: a full compile may (it drops garbage).
        self.build = None;
        let node = self.node.clone();
        let include = |key: &ResourceKey| Locals::from(node.as_deref()).includes(key);
        let build = Build::full(self.resources.values().map(|r| &**r), include)?;
        let exceeded = self.capacities.check(&build.image.stats());
        if !exceeded.is_empty() {
            return Err(CompileError::Capacity(exceeded));
        }
        self.build = Some(build);
        Ok(Changes::All)
    }
}

impl<'a> From<Option<&'a str>> for Locals<'a> {
    fn from(node: Option<&'a str>) -> Locals<'a> {
        node.map_or(Locals::All, Locals::Node)
    }
}

/// Keys whose resource differs between `old` and `new`, in one pass over both; `old` takes
/// `new`'s allocation of each resource that is the same in both.
fn diff(
    old: &mut BTreeMap<ResourceKey, Arc<Resource>>,
    new: &BTreeMap<ResourceKey, Arc<Resource>>,
) -> Vec<ResourceKey> {
    let mut changed = Vec::new();
    let (mut old, mut new) = (old.iter_mut().peekable(), new.iter().peekable());
    loop {
        let key = match (old.peek_mut(), new.peek()) {
            (None, None) => return changed,
            (Some((k, _)), None) => (*k).clone(),
            (None, Some((k, _))) => (*k).clone(),
            // The same allocation is the same resource, under its own key in both: no
            // need to compare the keys (a string compare per field; the walk over
            // every resource of a 10,000-policy world cost milliseconds doing so).
            (Some((a, x)), Some((b, y))) if Arc::ptr_eq(x, y) => {
                debug_assert_eq!(*a, *b, "a resource under another key");
                old.next();
                new.next();
                continue;
            }
            (Some((a, x)), Some((b, y))) => match (*a).cmp(b) {
                Ordering::Less => (*a).clone(),
                Ordering::Greater => (*b).clone(),
                Ordering::Equal => {
                    if **x != **y {
                        changed.push((*a).clone());
                    } else {
                        // The same resource in another allocation (a snapshot read it
                        // again, a write put it unchanged): kept as the new one, so that
                        // the next walk passes it by pointer instead of comparing it
                        // field by field (every resource, after a re-snapshot: 15 ms
                        // per update at 10,000 endpoints and 10,000 policies, for good).
                        **x = Arc::clone(y);
                    }
                    old.next();
                    new.next();
                    continue;
                }
            },
        };
        // Only on one side: step past it there.
        if old.peek().is_some_and(|(k, _)| **k == key) {
            old.next();
        } else {
            new.next();
        }
        changed.push(key);
    }
}

/// A safety net: freed tables are reused, so steady churn keeps their count near a full
/// compile's; rules and outcomes, only appended, grow by what changes bring that is new
/// (a changed rule, a new verdict for a rule). When any is as many again as a full
/// compile makes, a full compile drops what nothing refers to any more.
fn too_much_garbage(build: &Build) -> bool {
    let now = build.sizes();
    let fresh = build.fresh;
    now.rules > 2 * fresh.rules + 1024
        || now.tables > 2 * fresh.tables + 1024
        || now.outcomes > 2 * fresh.outcomes + 1024
}

fn apply(
    build: &mut Build,
    node: Option<&str>,
    key: &ResourceKey,
    old: Option<&Resource>,
    new: Option<&Resource>,
) -> Result<(), NeedsFull> {
    // Invalid resources are treated as deleted, as in a full compile.
    let new = new.filter(|r| validate(r).is_ok());
    let old = old.filter(|r| validate(r).is_ok());
    match (old, new) {
        (None, None) => Ok(()),
        (Some(Resource::IpPool(_) | Resource::IpAllocation(_)), _)
        | (_, Some(Resource::IpPool(_) | Resource::IpAllocation(_))) => Ok(()),
        (
            None | Some(Resource::WorkloadEndpoint(_)),
            new @ (None | Some(Resource::WorkloadEndpoint(_))),
        ) => endpoint_changed(build, node, key, new),
        (Some(Resource::Profile(old)), Some(Resource::Profile(new)))
            if old.metadata.labels == new.metadata.labels
                && old.metadata.tags == new.metadata.tags =>
        {
            profile_rules_changed(build, node, old, new)
        }
        (old @ (None | Some(Resource::Policy(_))), new @ (None | Some(Resource::Policy(_)))) => {
            let as_policy = |r: Option<&Resource>| match r {
                Some(Resource::Policy(p)) if applies_to_workloads(p) => Some(p.clone()),
                _ => None,
            };
            policy_changed(
                build,
                node,
                key,
                as_policy(old).as_ref(),
                as_policy(new).as_ref(),
            )
        }
        _ => Err(NeedsFull),
    }
}

fn applies_to_workloads(p: &Policy) -> bool {
    !p.spec.do_not_track && !p.spec.pre_dnat
}

fn is_local(node: Option<&str>, key: &ResourceKey) -> bool {
    Locals::from(node).includes(key)
}

fn endpoint_changed(
    build: &mut Build,
    node: Option<&str>,
    key: &ResourceKey,
    new: Option<&Resource>,
) -> Result<(), NeedsFull> {
    let removed = build.inputs.remove_workload(key);
    if let Some(w) = &removed {
        build.inputs.remove_owner(w);
    }
    let added = match new {
        Some(Resource::WorkloadEndpoint(w)) => Some(build.inputs.workload(key.clone(), w)),
        _ => None,
    };
    let old_addrs: BTreeSet<IpAddr> = removed.iter().flat_map(|w| w.addrs.clone()).collect();
    let new_addrs: BTreeSet<IpAddr> = added.iter().flat_map(|w| w.addrs.clone()).collect();
    if let Some(w) = added {
        build.inputs.add_owner(&w);
        build.inputs.insert_workload(w);
    }
    let touched: BTreeSet<IpAddr> = old_addrs.union(&new_addrs).copied().collect();
    // An address's other owners count in its local tests and its remote signature: sharing
    // is rare enough to leave to a full compile.
    let shared = touched
        .iter()
        .any(|addr| build.inputs.owners_of(*addr).len() != usize::from(new_addrs.contains(addr)));
    if shared {
        return Err(NeedsFull);
    }
    if is_local(node, key) {
        // Bind the new addresses first: an ID they keep is not freed and made again.
        if let Ok(i) = build.inputs.workloads.binary_search_by(|w| w.key.cmp(key)) {
            rebind(build, i);
        }
        for addr in old_addrs.difference(&new_addrs) {
            build.unbind_endpoint(key, *addr);
        }
    }
    for addr in touched {
        let owners = build.inputs.owners_of(addr);
        let entry = if owners.is_empty() {
            None
        } else {
            build
                .remotes
                .exact_entry(&build.inputs.universe, addr, owners)
                .map_err(|_| NeedsFull)?
        };
        build.set_exact(addr, entry);
    }
    Ok(())
}

/// Polices every address of the local workload at `index` with the local ID its key has
/// now.
fn rebind(build: &mut Build, index: usize) {
    let Some(w) = build.inputs.workloads.get(index) else {
        return;
    };
    let programs = build.locals.programs(&build.inputs, w);
    let mut local_keys = LocalKeys::default();
    let keys: Vec<_> = w
        .addrs
        .iter()
        .map(|&addr| (addr, local_keys.key(&build.inputs, w, &programs, addr)))
        .collect();
    let endpoint = w.key.clone();
    for (addr, key) in keys {
        build.bind_endpoint(&endpoint, addr, key);
    }
}

fn policy_changed(
    build: &mut Build,
    node: Option<&str>,
    key: &ResourceKey,
    old: Option<&Policy>,
    new: Option<&Policy>,
) -> Result<(), NeedsFull> {
    let ResourceKey::Policy { name } = key else {
        return Err(NeedsFull);
    };
    let compiled = NewRules::mark(build);
    let (before, after) = build.inputs.replace_policy(name, old, new);
    build
        .locals
        .policy_replaced(&build.inputs, before.as_ref(), after.as_ref());
    let selects = |p: &Option<PolicyRules>, labels: &BTreeMap<String, String>| {
        p.as_ref().is_some_and(|p| p.selector.matches(labels))
    };
    rekey_locals(build, node, compiled, |labels, _| {
        selects(&before, labels) || selects(&after, labels)
    })
}

/// A profile's rules changed (its labels and tags did not, so no endpoint's labels did).
fn profile_rules_changed(
    build: &mut Build,
    node: Option<&str>,
    old: &Profile,
    new: &Profile,
) -> Result<(), NeedsFull> {
    let compiled = NewRules::mark(build);
    build.inputs.replace_profile_rules(old, new);
    let name = &new.metadata.name;
    let affected = |_: &BTreeMap<String, String>, profiles: &[String]| profiles.contains(name);
    build.locals.forget_programs(affected);
    rekey_locals(build, node, compiled, affected)
}

/// Where the compiled rules and the universe of tests stood before a change compiled new
/// rules.
struct NewRules {
    first: usize,
    label_tests: usize,
    cidrs: usize,
}

impl NewRules {
    fn mark(build: &Build) -> NewRules {
        let universe = &build.inputs.universe;
        NewRules {
            first: build.inputs.rules.len(),
            label_tests: universe.label_tests.len(),
            cidrs: universe.cidrs.len(),
        }
    }
}

/// After `compiled` rules: gives the local endpoints whose (labels, profiles) `affected`
/// names the keys their programs have now (the caller has brought their cached programs up
/// to date or forgotten them). Fails when the new rules test what the remote
/// classes cannot tell (new label tests or CIDRs would need new remote IDs).
fn rekey_locals(
    build: &mut Build,
    node: Option<&str>,
    compiled: NewRules,
    affected: impl Fn(&BTreeMap<String, String>, &[String]) -> bool,
) -> Result<(), NeedsFull> {
    let universe = &build.inputs.universe;
    if universe.label_tests.len() != compiled.label_tests || universe.cidrs.len() != compiled.cidrs
    {
        return Err(NeedsFull);
    }
    let remotes = &build.remotes;
    let classified = build.inputs.rules[compiled.first..].iter().all(|rule| {
        rule.peer()
            .label_tests()
            .all(|i| remotes.peer_label_tests.contains(&i))
            && rule.peer().cidrs().all(|i| remotes.peer_cidrs.contains(&i))
    });
    if !classified {
        return Err(NeedsFull);
    }
    let rebound: Vec<usize> = build
        .inputs
        .workloads
        .iter()
        .enumerate()
        .filter(|(_, w)| is_local(node, &w.key) && affected(&w.labels, &w.profiles))
        .map(|(i, _)| i)
        .collect();
    // By the local ID they have now: an ID whose users all get one new key keeps its
    // number, and only its entries that change are touched.
    let mut moving: BTreeMap<LocalId, Vec<(ResourceKey, IpAddr, LocalKey)>> = BTreeMap::new();
    let mut local_keys = LocalKeys::default();
    for i in rebound {
        let Some(w) = build.inputs.workloads.get(i) else {
            continue;
        };
        let programs = build.locals.programs(&build.inputs, w);
        for &addr in &w.addrs {
            let key = local_keys.key(&build.inputs, w, &programs, addr);
            if let Some(&id) = build.image.endpoints.get(&(w.key.clone(), addr)) {
                moving
                    .entry(id)
                    .or_default()
                    .push((w.key.clone(), addr, key));
            }
        }
    }
    for (id, users) in moving {
        let Some((_, _, first)) = users.first() else {
            continue;
        };
        if build.locals.key(id) == Some(first) && users.iter().all(|(_, _, k)| k == first) {
            continue;
        }
        if users.len() == build.locals.users(id)
            && users.iter().all(|(_, _, k)| k == first)
            && build.rekey_local(id, first.clone())
        {
            continue;
        }
        for (endpoint, addr, key) in users {
            build.bind_endpoint(&endpoint, addr, key);
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::parse::resource_from_value;

    fn policy(name: &str, port: u16) -> Arc<Resource> {
        let value = json!({"apiVersion": "v1", "kind": "policy",
            "metadata": {"name": name},
            "spec": {"selector": "all()", "order": 1,
                     "ingress": [{"action": "allow", "protocol": "tcp",
                                  "destination": {"ports": [port]}}]}});
        Arc::new(resource_from_value(value).unwrap())
    }

    fn view(resources: &[&Arc<Resource>]) -> BTreeMap<ResourceKey, Arc<Resource>> {
        resources.iter().map(|r| (r.key(), Arc::clone(r))).collect()
    }

    #[test]
    fn the_walk_keeps_the_new_allocation_of_a_resource_that_did_not_change() {
        let (a, b, changed) = (policy("a", 1), policy("b", 2), policy("c", 3));
        let mut known = view(&[&a, &b, &changed]);
        // `b` read again (a re-snapshot), `c` changed, `d` new.
        let (b_again, c_new, d) = (policy("b", 2), policy("c", 4), policy("d", 5));
        let next = view(&[&a, &b_again, &c_new, &d]);

        assert_eq!(diff(&mut known, &next), vec![c_new.key(), d.key()]);
        assert!(Arc::ptr_eq(&known[&b.key()], &b_again));
        assert!(Arc::ptr_eq(&known[&a.key()], &a));
        // The changed resource is the caller's to take (it compiles the change first).
        assert!(Arc::ptr_eq(&known[&changed.key()], &changed));
        assert!(!known.contains_key(&d.key()));
    }

    #[test]
    fn the_walk_finds_resources_that_only_one_side_has() {
        let (a, b) = (policy("a", 1), policy("b", 2));
        assert_eq!(diff(&mut view(&[&a, &b]), &view(&[&b])), vec![a.key()]);
        assert_eq!(diff(&mut view(&[&b]), &view(&[&a, &b])), vec![a.key()]);
        assert!(diff(&mut view(&[]), &view(&[])).is_empty());
    }
}
