//! The packets that speak for all others: per protocol, the L4 key domains cut at every
//! bound any rule uses, as the compiler's range tables cut them (`compile/table`). Every
//! rule criterion is constant on a cell, so one packet per cell decides the whole cell, for
//! every resource set whose rules were included in the cut.

use std::collections::BTreeSet;

use crate::compile::RangeTable;
use crate::model::{Resource, Rule};
use crate::policy::{L4, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};

/// What the two keys of a protocol's cells are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// (source port, destination port): TCP and UDP, the protocols rules name ports for.
    Ports,
    /// (type, code): the ICMP of the family.
    Icmp,
    /// No keys: one cell.
    None,
}

/// One protocol's cells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolGrid {
    /// The protocol number, or `None` for every protocol no rule names.
    pub protocol: Option<u8>,
    /// A protocol number that stands for the grid (for `None`: one no rule names).
    pub number: u8,
    pub keys: Keys,
    /// Starts of the first key's ranges, sorted, from 0.
    pub a_starts: Vec<u16>,
    /// Starts of the second key's ranges, sorted, from 0.
    pub b_starts: Vec<u16>,
}

impl ProtocolGrid {
    /// The largest value of either key.
    pub fn max(&self) -> u16 {
        match self.keys {
            Keys::Ports => u16::MAX,
            Keys::Icmp => u16::from(u8::MAX),
            Keys::None => 0,
        }
    }

    /// The L4 fields of the packet at keys `(a, b)`.
    pub fn l4(&self, a: u16, b: u16) -> L4 {
        let narrow = |v: u16| u8::try_from(v).unwrap_or(u8::MAX);
        match self.keys {
            Keys::Ports => L4::Ports { src: a, dst: b },
            Keys::Icmp => L4::Icmp {
                icmp_type: narrow(a),
                code: narrow(b),
            },
            Keys::None => L4::None,
        }
    }

    /// The cells, evaluated by `outcome` and merged where neighbours agree.
    pub fn table(&self, outcome: impl FnMut(u16, u16) -> crate::compile::OutcomeId) -> RangeTable {
        RangeTable::build(&self.a_starts, &self.b_starts, outcome)
    }

    /// The end of the range starting at `starts[i]`.
    pub fn range_end(&self, starts: &[u16], i: usize) -> u16 {
        starts
            .get(i + 1)
            .map(|next| next - 1)
            .unwrap_or_else(|| self.max())
    }
}

/// Every rule of `resources` (profiles' and policies', both directions).
pub fn rules_of<'a>(resources: impl IntoIterator<Item = &'a Resource>) -> Vec<&'a Rule> {
    let mut rules = Vec::new();
    for resource in resources {
        match resource {
            Resource::Profile(p) => rules.extend(p.spec.ingress.iter().chain(&p.spec.egress)),
            Resource::Policy(p) => rules.extend(p.spec.ingress.iter().chain(&p.spec.egress)),
            _ => {}
        }
    }
    rules
}

/// The grids of one address family (`v4`), cut by every bound of `rules`.
pub fn grids(v4: bool, rules: &[&Rule]) -> Vec<ProtocolGrid> {
    let icmp = if v4 { PROTO_ICMP } else { PROTO_ICMPV6 };
    let mut named: BTreeSet<u8> = rules
        .iter()
        .flat_map(|r| [&r.protocol, &r.not_protocol])
        .filter_map(|p| p.as_ref().and_then(|p| p.number()))
        .collect();
    named.extend([PROTO_TCP, PROTO_UDP, icmp]);
    let starts =
        |ranges: Vec<(u16, u16)>, max: u16| crate::compile::range_starts(ranges.into_iter(), max);

    let mut out = Vec::new();
    for &protocol in &named {
        let grid = if protocol == PROTO_TCP || protocol == PROTO_UDP {
            let ports = |pick: fn(&Rule) -> [&Vec<crate::model::Port>; 2]| {
                rules
                    .iter()
                    .flat_map(|r| pick(r).into_iter().flatten().map(|p| (p.min, p.max)))
                    .collect::<Vec<_>>()
            };
            ProtocolGrid {
                protocol: Some(protocol),
                number: protocol,
                keys: Keys::Ports,
                a_starts: starts(ports(|r| [&r.source.ports, &r.source.not_ports]), u16::MAX),
                b_starts: starts(
                    ports(|r| [&r.destination.ports, &r.destination.not_ports]),
                    u16::MAX,
                ),
            }
        } else if protocol == icmp {
            let fields: Vec<_> = rules
                .iter()
                .flat_map(|r| r.icmp.iter().chain(&r.not_icmp))
                .filter(|f| f.icmp_type.is_some())
                .collect();
            let single = |v: u8| (u16::from(v), u16::from(v));
            ProtocolGrid {
                protocol: Some(protocol),
                number: protocol,
                keys: Keys::Icmp,
                a_starts: starts(
                    fields
                        .iter()
                        .filter_map(|f| f.icmp_type)
                        .map(single)
                        .collect(),
                    255,
                ),
                b_starts: starts(
                    fields.iter().filter_map(|f| f.code).map(single).collect(),
                    255,
                ),
            }
        } else {
            ProtocolGrid {
                protocol: Some(protocol),
                number: protocol,
                keys: Keys::None,
                a_starts: vec![0],
                b_starts: vec![0],
            }
        };
        out.push(grid);
    }
    // Every protocol no rule names is decided alike; one of them speaks for all.
    if let Some(other) = (0..=u8::MAX).find(|p| !named.contains(p)) {
        out.push(ProtocolGrid {
            protocol: None,
            number: other,
            keys: Keys::None,
            a_starts: vec![0],
            b_starts: vec![0],
        });
    }
    out
}

/// A protocol's name for people: `tcp`, `proto 47`, or `other protocols`.
pub fn protocol_name(protocol: Option<u8>) -> String {
    match protocol {
        None => "other protocols".to_string(),
        Some(n) => crate::model::PROTOCOL_NAMES
            .iter()
            .find(|(_, num)| *num == n)
            .map(|(name, _)| (*name).to_string())
            .unwrap_or_else(|| format!("proto {n}")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;
    use crate::model::parse::parse_documents;

    #[test]
    fn cuts_come_from_every_rule_and_other_protocols_get_one_grid() {
        let resources = parse_documents(
            "- apiVersion: v1
  kind: profile
  metadata: {name: p}
  spec:
    ingress:
    - {action: allow, protocol: tcp, destination: {ports: [3306, '8000:8080']}}
    - {action: deny, protocol: 47}
    egress:
    - {action: allow, protocol: icmp, icmp: {type: 8, code: 0}}
",
        )
        .unwrap();
        let rules = rules_of(&resources);
        let grids = grids(true, &rules);
        let names: Vec<String> = grids.iter().map(|g| protocol_name(g.protocol)).collect();
        assert_eq!(names, ["icmp", "tcp", "udp", "proto 47", "other protocols"]);
        let tcp = &grids[1];
        assert_eq!(tcp.a_starts, [0]);
        assert_eq!(tcp.b_starts, [0, 3306, 3307, 8000, 8081]);
        assert_eq!(tcp.range_end(&tcp.b_starts, 4), u16::MAX);
        let icmp = &grids[0];
        assert_eq!(
            (icmp.a_starts.as_slice(), icmp.b_starts.as_slice()),
            (&[0, 8, 9][..], &[0, 1][..])
        );
        assert_eq!(grids[4].number, 0);
    }
}
