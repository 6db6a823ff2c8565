//! The connectivity matrix: for every ordered pair of workload endpoints, the flow's
//! verdict and what decided it on each side, for one kind of packet (built as `trace`
//! builds it) or for every packet (summed up over the grid cells the rules cut).
//! Endpoints with the same labels and profiles that every other endpoint sees alike (and
//! that see every other alike) share a row and a column.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::compile::OutcomeId;
use crate::model::{Resource, ResourceKey, WorkloadEndpoint};
use crate::policy::{Model, Packet, Verdict};

use super::grid::{Keys, grids, rules_of};
use super::impact::{FlowOutcome, flow_state};
use super::places::{Place, PlaceKind};
use super::probe::Probe;

/// What the matrix is about.
#[derive(Debug, Clone, Copy)]
pub enum Question {
    /// One kind of packet.
    Packet(Probe),
    /// Every packet: which ranges of which protocols pass.
    Every,
}

/// A range of cells of one protocol, decided alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cells {
    /// `None`: every protocol no rule names.
    pub protocol: Option<u8>,
    pub keys: Keys,
    /// Source ports or ICMP types (inclusive).
    pub a: (u16, u16),
    /// Destination ports or ICMP codes (inclusive).
    pub b: (u16, u16),
    pub flow: FlowOutcome,
}

/// One cell of the matrix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    /// An endpoint with itself: its traffic does not cross its policy.
    Itself,
    /// The two ends have no IP version in common.
    NoCommonFamily,
    /// The packet asked about, and its flow.
    Packet { packet: Packet, flow: FlowOutcome },
    /// Every packet, as ranges of cells.
    Every(Vec<Cells>),
}

/// How a cell reads at a glance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    Allow,
    Deny,
    /// Some packets pass, others not.
    Some,
    /// No flow here (an endpoint with itself, or no common IP version).
    None,
}

impl Reach {
    pub fn as_str(self) -> &'static str {
        match self {
            Reach::Allow => "allow",
            Reach::Deny => "deny",
            Reach::Some => "some",
            Reach::None => "-",
        }
    }
}

impl Cell {
    pub fn reach(&self) -> Reach {
        match self {
            Cell::Itself | Cell::NoCommonFamily => Reach::None,
            Cell::Packet { flow, .. } => match flow.verdict {
                Verdict::Allow => Reach::Allow,
                Verdict::Deny => Reach::Deny,
            },
            Cell::Every(ranges) => {
                let allowed = ranges.iter().filter(|r| r.flow.verdict == Verdict::Allow);
                match allowed.count() {
                    0 => Reach::Deny,
                    n if n == ranges.len() => Reach::Allow,
                    _ => Reach::Some,
                }
            }
        }
    }

    /// Equal verdicts for equal reasons (addresses aside).
    fn decided_alike(&self, other: &Cell) -> bool {
        match (self, other) {
            (Cell::Packet { flow: a, .. }, Cell::Packet { flow: b, .. }) => a == b,
            (a, b) => a == b,
        }
    }
}

/// Endpoints that share a row and a column.
#[derive(Debug, Clone)]
pub struct Group {
    pub members: Vec<WorkloadEndpoint>,
    pub labels: BTreeMap<String, String>,
    pub profiles: Vec<String>,
}

pub struct Matrix {
    pub groups: Vec<Group>,
    /// `cells[source group][destination group]`.
    pub cells: Vec<Vec<Cell>>,
}

/// The matrix of `resources`; `grouped` merges interchangeable endpoints.
pub fn matrix(resources: &[Resource], question: Question, grouped: bool) -> Matrix {
    let model = Model::new(resources.to_vec());
    let endpoints: Vec<&WorkloadEndpoint> = model.workload_endpoints().collect();
    let rules = rules_of(resources);
    let full: Vec<Vec<Cell>> = endpoints
        .iter()
        .map(|src| {
            endpoints
                .iter()
                .map(|dst| cell(&model, src, dst, question, &rules))
                .collect()
        })
        .collect();
    let members = if grouped {
        group_members(&model, &endpoints, &full)
    } else {
        (0..endpoints.len()).map(|i| vec![i]).collect()
    };
    let cells = members
        .iter()
        .map(|src| {
            members
                .iter()
                .map(|dst| group_cell(src, dst, &full))
                .collect()
        })
        .collect();
    let groups = members
        .iter()
        .filter_map(|m| {
            let first = endpoints.get(*m.first()?)?;
            Some(Group {
                members: m
                    .iter()
                    .filter_map(|&i| endpoints.get(i).map(|w| (*w).clone()))
                    .collect(),
                labels: model
                    .effective_labels(&first.key())
                    .cloned()
                    .unwrap_or_default(),
                profiles: first.spec.profiles.clone(),
            })
        })
        .collect();
    Matrix { groups, cells }
}

fn place(endpoint: &WorkloadEndpoint, address: IpAddr) -> Place {
    Place {
        kind: PlaceKind::Workload(endpoint.key()),
        address,
    }
}

fn addresses(endpoint: &WorkloadEndpoint) -> Vec<IpAddr> {
    endpoint.spec.ip_networks.iter().map(|n| n.addr()).collect()
}

fn cell(
    model: &Model,
    src: &WorkloadEndpoint,
    dst: &WorkloadEndpoint,
    question: Question,
    rules: &[&crate::model::Rule],
) -> Cell {
    if src.key() == dst.key() {
        return Cell::Itself;
    }
    let probe = match question {
        Question::Packet(probe) => probe,
        // Any probe picks the family, as trace does.
        Question::Every => Probe {
            protocol: crate::policy::PROTO_TCP,
            ports: (0, 0),
            icmp: (None, 0),
        },
    };
    let Ok(packet) = probe.packet(&addresses(src), &addresses(dst)) else {
        return Cell::NoCommonFamily;
    };
    let (from, to) = (place(src, packet.src), place(dst, packet.dst));
    let flow_of = |packet: &Packet| flow_state(model, &from, &to, packet);
    match question {
        Question::Packet(_) => match flow_of(&packet) {
            Some(flow) => Cell::Packet { packet, flow },
            None => Cell::NoCommonFamily,
        },
        Question::Every => {
            let mut ranges = Vec::new();
            for grid in grids(packet.src.is_ipv4(), rules) {
                let mut flows: Vec<FlowOutcome> = Vec::new();
                let table = grid.table(|a, b| {
                    let probe_packet = Packet {
                        l4: grid.l4(a, b),
                        protocol: grid.number,
                        ..packet
                    };
                    let flow = flow_of(&probe_packet).unwrap_or(FlowOutcome {
                        verdict: Verdict::Deny,
                        egress: None,
                        ingress: None,
                    });
                    let id = flows.iter().position(|f| *f == flow).unwrap_or_else(|| {
                        flows.push(flow);
                        flows.len() - 1
                    });
                    OutcomeId(u32::try_from(id).unwrap_or(u32::MAX))
                });
                let row_starts: Vec<u16> = table.rows.iter().map(|r| r.start).collect();
                for (ri, row) in table.rows.iter().enumerate() {
                    let starts: Vec<u16> = row.cells.iter().map(|c| c.0).collect();
                    for (ci, &(b, id)) in row.cells.iter().enumerate() {
                        if let Some(flow) = flows.get(id.0 as usize) {
                            ranges.push(Cells {
                                protocol: grid.protocol,
                                keys: grid.keys,
                                a: (row.start, grid.range_end(&row_starts, ri)),
                                b: (b, grid.range_end(&starts, ci)),
                                flow: flow.clone(),
                            });
                        }
                    }
                }
            }
            Cell::Every(ranges)
        }
    }
}

/// Endpoints grouped: same labels and profiles, seen alike by and seeing alike every
/// other endpoint. Falls back to one endpoint per group if a group's cells would not all
/// be decided alike.
fn group_members(
    model: &Model,
    endpoints: &[&WorkloadEndpoint],
    full: &[Vec<Cell>],
) -> Vec<Vec<usize>> {
    let at = |i: usize, j: usize| full.get(i).and_then(|row| row.get(j));
    let alike = |a: Option<&Cell>, b: Option<&Cell>| match (a, b) {
        (Some(a), Some(b)) => a.decided_alike(b),
        _ => false,
    };
    let interchangeable = |e: usize, m: usize| {
        alike(at(e, m), at(m, e))
            && (0..endpoints.len())
                .filter(|&x| x != e && x != m)
                .all(|x| alike(at(e, x), at(m, x)) && alike(at(x, e), at(x, m)))
    };
    let class = |i: usize| {
        endpoints.get(i).map(|w| {
            (
                model.effective_labels(&w.key()).cloned(),
                w.spec.profiles.clone(),
            )
        })
    };
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for e in 0..endpoints.len() {
        let home = groups.iter_mut().find(|g| {
            g.first().is_some_and(|&f| class(f) == class(e))
                && g.iter().all(|&m| interchangeable(e, m))
        });
        match home {
            Some(g) => g.push(e),
            None => groups.push(vec![e]),
        }
    }
    let uniform = groups.iter().all(|src| {
        groups.iter().all(|dst| {
            let mut cells = src
                .iter()
                .flat_map(|&s| dst.iter().map(move |&d| (s, d)))
                .filter(|(s, d)| s != d)
                .filter_map(|(s, d)| at(s, d));
            match cells.next() {
                Some(first) => cells.all(|c| c.decided_alike(first)),
                None => true,
            }
        })
    });
    if uniform {
        groups
    } else {
        (0..endpoints.len()).map(|i| vec![i]).collect()
    }
}

/// A group pair's cell: any of its member pairs (an endpoint with itself aside), all
/// decided alike.
fn group_cell(src: &[usize], dst: &[usize], full: &[Vec<Cell>]) -> Cell {
    src.iter()
        .flat_map(|&s| dst.iter().map(move |&d| (s, d)))
        .find(|(s, d)| s != d)
        .and_then(|(s, d)| full.get(s).and_then(|row| row.get(d)))
        .cloned()
        .unwrap_or(Cell::Itself)
}

/// The key of every endpoint of the matrix, in row order.
pub fn member_keys(matrix: &Matrix) -> Vec<Vec<ResourceKey>> {
    matrix
        .groups
        .iter()
        .map(|g| g.members.iter().map(WorkloadEndpoint::key).collect())
        .collect()
}
