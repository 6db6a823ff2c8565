//! [`Model`]: the resources, checked and indexed for evaluation.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use crate::model::labels::effective_labels_by_name;
use crate::model::validate::validate;
use crate::model::{
    HostEndpoint, PolicySpec, PolicyType, Profile, Resource, ResourceKey, Rule, WorkloadEndpoint,
    application_order,
};
use crate::selector::Selector;

use super::Direction;
use super::rule_match::CompiledRule;

/// The resources policy is evaluated over.
///
/// Resources that fail validation, or whose selectors do not parse, are left out, as
/// Felix treats them as deleted; a profile left out this way then denies everything for
/// the endpoints that list it, like any missing profile.
pub struct Model {
    pub(super) profiles: BTreeMap<String, CompiledProfile>,
    /// Sorted by (order, name): the order policies are applied in.
    pub(super) policies: Vec<CompiledPolicy>,
    pub(super) workloads: BTreeMap<ResourceKey, LocalEndpoint>,
    /// For each address, the effective labels of every endpoint (workload or host) that
    /// owns it. Rule selectors and tags match a peer address through these.
    pub(super) owners: HashMap<IpAddr, Vec<BTreeMap<String, String>>>,
    /// Every valid profile as written: labels and tags count even when rules do not compile.
    raw_profiles: BTreeMap<String, Profile>,
    /// Resources left out, with the reason.
    pub rejected: Vec<(ResourceKey, String)>,
}

pub(super) struct CompiledProfile {
    pub ingress: Vec<CompiledRule>,
    pub egress: Vec<CompiledRule>,
}

pub(super) struct CompiledPolicy {
    pub name: String,
    pub class: PolicyClass,
    pub order: Option<f64>,
    pub selector: Selector,
    /// `None` when the policy does not govern that direction.
    pub ingress: Option<Vec<CompiledRule>>,
    pub egress: Option<Vec<CompiledRule>>,
}

/// Which of Felix's lists a policy goes into. Workload endpoints use only the normal
/// list; untracked (doNotTrack) and preDNAT policies act on host endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyClass {
    Normal,
    Untracked,
    PreDnat,
}

/// A workload endpoint as its own policy sees it.
pub(super) struct LocalEndpoint {
    pub endpoint: WorkloadEndpoint,
    pub labels: BTreeMap<String, String>,
}

impl CompiledPolicy {
    pub fn rules(&self, direction: Direction) -> Option<&[CompiledRule]> {
        match direction {
            Direction::Ingress => self.ingress.as_deref(),
            Direction::Egress => self.egress.as_deref(),
        }
    }
}

impl Model {
    pub fn new(resources: impl IntoIterator<Item = Resource>) -> Model {
        let mut model = Model {
            profiles: BTreeMap::new(),
            policies: Vec::new(),
            workloads: BTreeMap::new(),
            owners: HashMap::new(),
            raw_profiles: BTreeMap::new(),
            rejected: Vec::new(),
        };
        let mut workloads = Vec::new();
        let mut hosts = Vec::new();
        for resource in resources {
            if let Err(e) = validate(&resource) {
                model.rejected.push((resource.key(), e.to_string()));
                continue;
            }
            match resource {
                Resource::Profile(p) => {
                    model.raw_profiles.insert(p.metadata.name.clone(), p);
                }
                Resource::Policy(p) => match compile_policy(&p.metadata.name, &p.spec) {
                    Ok(Some(compiled)) => model.policies.push(compiled),
                    Ok(None) => {}
                    Err(e) => model.rejected.push((Resource::Policy(p).key(), e)),
                },
                Resource::WorkloadEndpoint(w) => workloads.push(w),
                Resource::HostEndpoint(h) => hosts.push(h),
                Resource::IpPool(_) | Resource::IpAllocation(_) => {}
            }
        }
        for (name, profile) in &model.raw_profiles {
            match compile_profile(profile) {
                Ok(compiled) => {
                    model.profiles.insert(name.clone(), compiled);
                }
                Err(e) => model
                    .rejected
                    .push((ResourceKey::Profile { name: name.clone() }, e)),
            }
        }
        // Labels come from every profile that exists, even one whose rules do not compile:
        // Felix's label index only needs the profile's labels and tags.
        for w in workloads {
            let labels =
                effective_labels_by_name(&w.metadata.labels, &w.spec.profiles, &model.raw_profiles);
            for net in &w.spec.ip_networks {
                model
                    .owners
                    .entry(net.addr())
                    .or_default()
                    .push(labels.clone());
            }
            model.workloads.insert(
                w.key(),
                LocalEndpoint {
                    endpoint: w,
                    labels,
                },
            );
        }
        for h in hosts {
            let labels =
                effective_labels_by_name(&h.metadata.labels, &h.spec.profiles, &model.raw_profiles);
            add_host_owner(&mut model.owners, &h, &labels);
        }
        model
            .policies
            .sort_by(|a, b| application_order((a.order, &a.name), (b.order, &b.name)));
        model
    }

    /// Every workload endpoint, by key.
    pub fn workload_endpoints(&self) -> impl Iterator<Item = &WorkloadEndpoint> {
        self.workloads.values().map(|w| &w.endpoint)
    }

    /// The workload endpoint with this key, if it exists and is valid.
    pub fn workload_endpoint(&self, key: &ResourceKey) -> Option<&WorkloadEndpoint> {
        self.workloads.get(key).map(|w| &w.endpoint)
    }

    /// The effective labels of a workload endpoint.
    pub fn effective_labels(&self, key: &ResourceKey) -> Option<&BTreeMap<String, String>> {
        self.workloads.get(key).map(|w| &w.labels)
    }

    /// The policies of `class` that select endpoints with these effective labels and
    /// govern `direction`, in the order they apply.
    pub fn applicable_policies(
        &self,
        labels: &BTreeMap<String, String>,
        class: PolicyClass,
        direction: Direction,
    ) -> Vec<&str> {
        self.policies
            .iter()
            .filter(|p| {
                p.class == class && p.rules(direction).is_some() && p.selector.matches(labels)
            })
            .map(|p| p.name.as_str())
            .collect()
    }

    /// Whether rule selectors and tags see every address alike in both models (the same
    /// owners with the same labels).
    pub fn same_peers(&self, other: &Model) -> bool {
        self.owners == other.owners
    }

    /// The effective labels of a host endpoint (for the policy lists that apply to it).
    pub fn host_endpoint_labels(&self, host: &HostEndpoint) -> BTreeMap<String, String> {
        effective_labels_by_name(
            &host.metadata.labels,
            &host.spec.profiles,
            &self.raw_profiles,
        )
    }
}

fn add_host_owner(
    owners: &mut HashMap<IpAddr, Vec<BTreeMap<String, String>>>,
    host: &HostEndpoint,
    labels: &BTreeMap<String, String>,
) {
    for ip in &host.spec.expected_ips {
        owners.entry(*ip).or_default().push(labels.clone());
    }
}

fn compile_policy(name: &str, spec: &PolicySpec) -> Result<Option<CompiledPolicy>, String> {
    let class = if spec.do_not_track {
        PolicyClass::Untracked
    } else if spec.pre_dnat {
        PolicyClass::PreDnat
    } else {
        PolicyClass::Normal
    };
    let selector = Selector::parse(&spec.selector)
        .map_err(|e| format!("selector '{}': {e}", spec.selector))?;
    // Types empty = both directions (how a policy without types reads back).
    let governs = |t: PolicyType| spec.types.is_empty() || spec.types.contains(&t);
    let ingress = if governs(PolicyType::Ingress) {
        Some(compile_rules(&spec.ingress)?)
    } else {
        None
    };
    let egress = if governs(PolicyType::Egress) {
        Some(compile_rules(&spec.egress)?)
    } else {
        None
    };
    Ok(Some(CompiledPolicy {
        name: name.to_string(),
        class,
        order: spec.order,
        selector,
        ingress,
        egress,
    }))
}

fn compile_profile(profile: &Profile) -> Result<CompiledProfile, String> {
    Ok(CompiledProfile {
        ingress: compile_rules(&profile.spec.ingress)?,
        egress: compile_rules(&profile.spec.egress)?,
    })
}

fn compile_rules(rules: &[Rule]) -> Result<Vec<CompiledRule>, String> {
    rules.iter().map(CompiledRule::new).collect()
}
