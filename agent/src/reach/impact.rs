//! The reachability a change gains and loses: the reference evaluator run on both versions
//! for every pair of places and every cell of the grids both versions' rules cut, so the
//! answer is exact, not sampled.
//!
//! A flow is allowed when every workload end that applies policy allows it. A flow to or
//! from a workload endpoint that does not exist in a version (or not with that address)
//! is absent there: adding an endpoint gains what it may reach, removing one loses it.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::compile::OutcomeId;
use crate::model::{Policy, Profile};
use crate::model::{Resource, ResourceKey};
use crate::policy::{Decision, Direction, Model, Packet, PolicyClass, Reason, Verdict};

use super::grid::{Keys, ProtocolGrid, grids, rules_of};
use super::places::{Place, PlaceKind, narrowest_cidr, places, rule_cidrs};

/// One end's decision: its verdict and what decided it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SideDecision {
    pub verdict: Verdict,
    pub reason: Reason,
}

impl From<&Decision> for SideDecision {
    fn from(d: &Decision) -> SideDecision {
        SideDecision {
            verdict: d.verdict,
            reason: d.reason.clone(),
        }
    }
}

/// A flow as one version decides it. `None` where the flow is absent (an end that does
/// not exist).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FlowOutcome {
    pub verdict: Verdict,
    /// The source workload's egress decision, if the source is a workload.
    pub egress: Option<SideDecision>,
    /// The destination workload's ingress decision, if the destination is a workload.
    pub ingress: Option<SideDecision>,
}

pub type FlowState = Option<FlowOutcome>;

fn allowed(state: &FlowState) -> bool {
    state.as_ref().is_some_and(|f| f.verdict == Verdict::Allow)
}

/// A range of cells of one protocol whose verdict changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellChange {
    /// `None`: every protocol no rule of either version names.
    pub protocol: Option<u8>,
    pub keys: Keys,
    /// Source ports, or ICMP types (inclusive).
    pub a: (u16, u16),
    /// Destination ports, or ICMP codes (inclusive).
    pub b: (u16, u16),
    pub before: FlowState,
    pub after: FlowState,
}

impl CellChange {
    /// Allowed after, not before.
    pub fn gained(&self) -> bool {
        allowed(&self.after)
    }
}

/// Pairs of places that change alike: every source with every destination (an endpoint
/// with itself excepted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImpactGroup {
    pub sources: Vec<Place>,
    pub destinations: Vec<Place>,
    pub changes: Vec<CellChange>,
}

/// What a change does to reachability.
pub struct Impact {
    pub groups: Vec<ImpactGroup>,
    /// Every rule CIDR of both versions: the classes of unowned addresses.
    pub cidrs: Vec<IpNet>,
    v4_grids: Vec<ProtocolGrid>,
    v6_grids: Vec<ProtocolGrid>,
}

impl Impact {
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// The place that stands for the unowned address `address`.
    pub fn outside_place(&self, address: IpAddr) -> Place {
        let family: Vec<IpNet> = self
            .cidrs
            .iter()
            .filter(|n| n.addr().is_ipv4() == address.is_ipv4())
            .copied()
            .collect();
        Place {
            kind: PlaceKind::Outside {
                within: narrowest_cidr(&family, address),
            },
            address,
        }
    }

    /// The change this report gives for `packet` from `source` to `destination` (places
    /// compared by kind, and by address for owned places), if any.
    pub fn change_for(
        &self,
        source: &Place,
        destination: &Place,
        packet: &Packet,
    ) -> Option<&CellChange> {
        let same = |a: &Place, b: &Place| match (&a.kind, &b.kind) {
            (PlaceKind::Outside { .. }, PlaceKind::Outside { .. }) => {
                a.kind == b.kind && a.address.is_ipv4() == b.address.is_ipv4()
            }
            _ => a == b,
        };
        let grids = if packet.src.is_ipv4() {
            &self.v4_grids
        } else {
            &self.v6_grids
        };
        let grid = grids
            .iter()
            .find(|g| g.protocol == Some(packet.protocol))
            .or_else(|| grids.iter().find(|g| g.protocol.is_none()))?;
        let (a, b) = match (grid.keys, packet.l4) {
            (Keys::Ports, crate::policy::L4::Ports { src, dst }) => (src, dst),
            (Keys::Icmp, crate::policy::L4::Icmp { icmp_type, code }) => {
                (u16::from(icmp_type), u16::from(code))
            }
            _ => (0, 0),
        };
        self.groups
            .iter()
            .filter(|g| {
                g.sources.iter().any(|s| same(s, source))
                    && g.destinations.iter().any(|d| same(d, destination))
            })
            .flat_map(|g| &g.changes)
            .find(|c| {
                c.protocol == grid.protocol
                    && (c.a.0..=c.a.1).contains(&a)
                    && (c.b.0..=c.b.1).contains(&b)
            })
    }
}

/// The impact of going from the resources `before` to `after`.
pub fn impact(before: &[Resource], after: &[Resource]) -> Impact {
    let rules = rules_of(before.iter().chain(after));
    let cidrs = rule_cidrs(&rules);
    let all_places = places(&[before, after], &cidrs);
    let models = [Model::new(before.to_vec()), Model::new(after.to_vec())];
    let v4_grids = grids(true, &rules);
    let v6_grids = grids(false, &rules);

    // Where peers look alike in both versions, an end whose own rules did not change
    // decides alike: a pair of such ends needs no evaluation.
    let unchanged = models[0].same_peers(&models[1]).then(|| {
        let inputs = [Inputs::new(before), Inputs::new(after)];
        let same = |place: &Place, direction: Direction| match place.endpoint() {
            None => true,
            Some(key) => {
                let of = |v: usize| {
                    let present = flow_state_present(&models[v], place);
                    (present, inputs[v].fingerprint(&models[v], key, direction))
                };
                of(0) == of(1)
            }
        };
        all_places
            .iter()
            .map(|p| (same(p, Direction::Egress), same(p, Direction::Ingress)))
            .collect::<Vec<_>>()
    });

    // Per pair, the changed cells; places are compared by index.
    let mut per_pair: BTreeMap<(usize, usize), Vec<CellChange>> = BTreeMap::new();
    for (si, src) in all_places.iter().enumerate() {
        for (di, dst) in all_places.iter().enumerate() {
            if !is_flow(src, dst) {
                continue;
            }
            if let Some(same) = &unchanged
                && same.get(si).is_some_and(|s| s.0)
                && same.get(di).is_some_and(|d| d.1)
            {
                per_pair.insert((si, di), Vec::new());
                continue;
            }
            let grids = if src.address.is_ipv4() {
                &v4_grids
            } else {
                &v6_grids
            };
            let changes = pair_changes(&models, src, dst, grids);
            per_pair.insert((si, di), changes);
        }
    }
    Impact {
        groups: merge(group(&models, &all_places, &per_pair)),
        cidrs,
        v4_grids,
        v6_grids,
    }
}

/// Whether policy can decide packets from `src` to `dst`: one family, distinct
/// endpoints, and at least one end a workload.
fn is_flow(src: &Place, dst: &Place) -> bool {
    if src.address.is_ipv4() != dst.address.is_ipv4() {
        return false;
    }
    match (src.endpoint(), dst.endpoint()) {
        (None, None) => false,
        (Some(a), Some(b)) => a != b,
        _ => true,
    }
}

/// Whether a place is there in `model`: any non-workload place is; a workload's only if
/// the endpoint exists there with that address.
fn flow_state_present(model: &Model, place: &Place) -> bool {
    match place.endpoint() {
        None => true,
        Some(key) => model
            .workload_endpoint(key)
            .is_some_and(|w| w.spec.ip_networks.iter().any(|n| n.addr() == place.address)),
    }
}

/// The flow from `src` to `dst` as `model` decides `packet`; `None` if a workload end does
/// not exist there with that address.
pub fn flow_state(model: &Model, src: &Place, dst: &Place, packet: &Packet) -> FlowState {
    if !flow_state_present(model, src) || !flow_state_present(model, dst) {
        return None;
    }
    let flow = model.evaluate_flow(src.endpoint(), dst.endpoint(), packet);
    Some(FlowOutcome {
        verdict: flow.verdict(),
        egress: flow.egress.as_ref().map(SideDecision::from),
        ingress: flow.ingress.as_ref().map(SideDecision::from),
    })
}

fn pair_changes(
    models: &[Model; 2],
    src: &Place,
    dst: &Place,
    grids: &[ProtocolGrid],
) -> Vec<CellChange> {
    let mut changes = Vec::new();
    for grid in grids {
        let mut states: Vec<(FlowState, FlowState)> = Vec::new();
        let table = grid.table(|a, b| {
            let packet = Packet {
                src: src.address,
                dst: dst.address,
                protocol: grid.number,
                l4: grid.l4(a, b),
            };
            let pair = (
                flow_state(&models[0], src, dst, &packet),
                flow_state(&models[1], src, dst, &packet),
            );
            let id = states.iter().position(|s| *s == pair).unwrap_or_else(|| {
                states.push(pair);
                states.len() - 1
            });
            OutcomeId(u32::try_from(id).unwrap_or(u32::MAX))
        });
        let row_starts: Vec<u16> = table.rows.iter().map(|r| r.start).collect();
        for (ri, row) in table.rows.iter().enumerate() {
            let cell_starts: Vec<u16> = row.cells.iter().map(|c| c.0).collect();
            for (ci, &(b_start, id)) in row.cells.iter().enumerate() {
                let Some((before, after)) = states.get(id.0 as usize) else {
                    continue;
                };
                if allowed(before) == allowed(after) {
                    continue;
                }
                changes.push(CellChange {
                    protocol: grid.protocol,
                    keys: grid.keys,
                    a: (row.start, grid.range_end(&row_starts, ri)),
                    b: (b_start, grid.range_end(&cell_starts, ci)),
                    before: before.clone(),
                    after: after.clone(),
                });
            }
        }
    }
    changes
}

/// An endpoint as policy sees it in one version: effective labels and profiles.
type Identity = (BTreeMap<String, String>, Vec<String>);

/// Joins groups with the same changes that share their sources (the destinations add up),
/// then those that share their destinations: every source with every destination still
/// holds, in fewer lines.
fn merge(groups: Vec<ImpactGroup>) -> Vec<ImpactGroup> {
    fn join(
        groups: Vec<ImpactGroup>,
        shared: fn(&ImpactGroup) -> &Vec<Place>,
        other: fn(&mut ImpactGroup) -> &mut Vec<Place>,
    ) -> Vec<ImpactGroup> {
        let mut out: Vec<ImpactGroup> = Vec::new();
        for mut g in groups {
            match out
                .iter_mut()
                .find(|o| o.changes == g.changes && shared(o) == shared(&g))
            {
                Some(o) => {
                    let more = std::mem::take(other(&mut g));
                    let list = other(o);
                    list.extend(more);
                    list.sort();
                    list.dedup();
                }
                None => out.push(g),
            }
        }
        out
    }
    let by_sources = join(groups, |g| &g.sources, |g| &mut g.destinations);
    join(by_sources, |g| &g.destinations, |g| &mut g.sources)
}

/// What makes places interchangeable in a report: for a workload, its family and, per
/// version, its identity (`None` where it does not exist); any other place is its own
/// class.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum ClassKey {
    Workload {
        v4: bool,
        versions: Vec<Option<Identity>>,
    },
    Single(usize),
}

fn class_of(models: &[Model; 2], places: &[Place], index: usize) -> ClassKey {
    let Some(place) = places.get(index) else {
        return ClassKey::Single(index);
    };
    match place.endpoint() {
        Some(key) => ClassKey::Workload {
            v4: place.address.is_ipv4(),
            versions: models
                .iter()
                .map(|m| {
                    let labels = m.effective_labels(key)?.clone();
                    let profiles = m.workload_endpoint(key)?.spec.profiles.clone();
                    Some((labels, profiles))
                })
                .collect(),
        },
        None => ClassKey::Single(index),
    }
}

/// Groups the pairs of places whose classes are alike and whose changes are equal.
fn group(
    models: &[Model; 2],
    places: &[Place],
    per_pair: &BTreeMap<(usize, usize), Vec<CellChange>>,
) -> Vec<ImpactGroup> {
    let classes: Vec<ClassKey> = (0..places.len())
        .map(|i| class_of(models, places, i))
        .collect();
    let mut blocks: BTreeMap<(&ClassKey, &ClassKey), Vec<(usize, usize)>> = BTreeMap::new();
    for &(s, d) in per_pair.keys() {
        if let (Some(cs), Some(cd)) = (classes.get(s), classes.get(d)) {
            blocks.entry((cs, cd)).or_default().push((s, d));
        }
    }
    let place = |i: usize| places.get(i).cloned();
    let mut groups = Vec::new();
    for pairs in blocks.values() {
        let changes_of = |p: &(usize, usize)| per_pair.get(p).cloned().unwrap_or_default();
        let first = pairs.first().map(changes_of).unwrap_or_default();
        if pairs.iter().all(|p| changes_of(p) == first) {
            if first.is_empty() {
                continue;
            }
            let mut sources: Vec<usize> = pairs.iter().map(|p| p.0).collect();
            let mut destinations: Vec<usize> = pairs.iter().map(|p| p.1).collect();
            sources.sort_unstable();
            sources.dedup();
            destinations.sort_unstable();
            destinations.dedup();
            groups.push(ImpactGroup {
                sources: sources.into_iter().filter_map(place).collect(),
                destinations: destinations.into_iter().filter_map(place).collect(),
                changes: first,
            });
        } else {
            for p in pairs {
                let changes = changes_of(p);
                if changes.is_empty() {
                    continue;
                }
                groups.push(ImpactGroup {
                    sources: place(p.0).into_iter().collect(),
                    destinations: place(p.1).into_iter().collect(),
                    changes,
                });
            }
        }
    }
    groups
}

/// One version's policies and profiles by name, as written: what an endpoint's own
/// decisions rest on, besides the peers.
struct Inputs<'a> {
    policies: BTreeMap<&'a str, &'a Policy>,
    profiles: BTreeMap<&'a str, &'a Profile>,
}

impl<'a> Inputs<'a> {
    fn new(resources: &'a [Resource]) -> Inputs<'a> {
        let mut inputs = Inputs {
            policies: BTreeMap::new(),
            profiles: BTreeMap::new(),
        };
        for r in resources {
            match r {
                Resource::Policy(p) => {
                    inputs.policies.insert(&p.metadata.name, p);
                }
                Resource::Profile(p) => {
                    inputs.profiles.insert(&p.metadata.name, p);
                }
                _ => {}
            }
        }
        inputs
    }

    /// Everything `key`'s decisions in `direction` depend on apart from the peers: its
    /// labels and profiles, the policies that apply (in order, with their rules) and its
    /// profiles' rules. Equal fingerprints and equal peers give equal decisions.
    fn fingerprint(&self, model: &Model, key: &ResourceKey, direction: Direction) -> String {
        let Some(endpoint) = model.workload_endpoint(key) else {
            return String::new();
        };
        let labels = model.effective_labels(key).cloned().unwrap_or_default();
        let rules =
            |ingress: &'a [crate::model::Rule], egress: &'a [crate::model::Rule]| match direction {
                Direction::Ingress => ingress,
                Direction::Egress => egress,
            };
        let policies: Vec<_> = model
            .applicable_policies(&labels, PolicyClass::Normal, direction)
            .into_iter()
            .map(|name| {
                let policy = self.policies.get(name);
                (
                    name,
                    policy.map(|p| (p.spec.order, rules(&p.spec.ingress, &p.spec.egress))),
                )
            })
            .collect();
        let profiles: Vec<_> = endpoint
            .spec
            .profiles
            .iter()
            .map(|name| {
                let profile = self.profiles.get(name.as_str());
                (
                    name,
                    profile.map(|p| rules(&p.spec.ingress, &p.spec.egress)),
                )
            })
            .collect();
        serde_json::to_string(&(&labels, &endpoint.spec.profiles, policies, profiles))
            .unwrap_or_default()
    }
}
