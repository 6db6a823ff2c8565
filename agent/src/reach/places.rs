//! The ends of flows: every workload endpoint's address, every host endpoint's address,
//! and one address for each class of other addresses that rules can tell apart.
//!
//! Rules see an address that no endpoint owns only through the rule CIDRs containing it
//! (selectors and tags match owned addresses only). CIDRs overlap only by nesting, so
//! the CIDRs containing an address are fixed by the narrowest one: one address per
//! narrowest CIDR (and one outside them all) speaks for every unowned address. Such a
//! class is a range minus sub-ranges and points, so if it has any address at all, it has
//! one at a range end or next to a removed range or point: those are the candidates.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::model::{Resource, ResourceKey};

/// What stands at one end of a flow.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PlaceKind {
    /// A workload endpoint's address: its policy applies there.
    Workload(ResourceKey),
    /// A host endpoint's address: a peer only (palisade enforces on workloads).
    Host(ResourceKey),
    /// Every unowned address whose narrowest containing rule CIDR is `within` (`None`:
    /// in no rule CIDR).
    Outside { within: Option<IpNet> },
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Place {
    pub kind: PlaceKind,
    /// The address packets use (for an outside class: one of its addresses).
    pub address: IpAddr,
}

impl Place {
    pub fn endpoint(&self) -> Option<&ResourceKey> {
        match &self.kind {
            PlaceKind::Workload(key) => Some(key),
            _ => None,
        }
    }
}

/// Every rule CIDR of `rules`, truncated, without repeats.
pub fn rule_cidrs(rules: &[&crate::model::Rule]) -> Vec<IpNet> {
    let nets: BTreeSet<IpNet> = rules
        .iter()
        .flat_map(|r| [&r.source, &r.destination])
        .flat_map(|e| e.all_nets().chain(e.all_not_nets()))
        .map(IpNet::trunc)
        .collect();
    nets.into_iter().collect()
}

/// The narrowest of `cidrs` containing `address`.
pub fn narrowest_cidr(cidrs: &[IpNet], address: IpAddr) -> Option<IpNet> {
    cidrs
        .iter()
        .filter(|n| n.contains(&address))
        .max_by_key(|n| n.prefix_len())
        .copied()
}

/// The places of every version in `versions`, sorted: workload addresses, host
/// addresses, then one address per class of unowned addresses (`cidrs`: every rule CIDR
/// of every version).
pub fn places(versions: &[&[Resource]], cidrs: &[IpNet]) -> Vec<Place> {
    let mut owned: BTreeSet<Place> = BTreeSet::new();
    for resources in versions {
        for resource in *resources {
            match resource {
                Resource::WorkloadEndpoint(w) => {
                    for net in &w.spec.ip_networks {
                        owned.insert(Place {
                            kind: PlaceKind::Workload(w.key()),
                            address: net.addr(),
                        });
                    }
                }
                Resource::HostEndpoint(h) => {
                    for ip in &h.spec.expected_ips {
                        owned.insert(Place {
                            kind: PlaceKind::Host(resource.key()),
                            address: *ip,
                        });
                    }
                }
                _ => {}
            }
        }
    }
    let owned_addresses: BTreeSet<IpAddr> = owned.iter().map(|p| p.address).collect();
    let mut out: Vec<Place> = owned.into_iter().collect();
    for v4 in [true, false] {
        out.extend(outside_classes(v4, cidrs, &owned_addresses));
    }
    out
}

/// One unowned address per class of the family, for classes that have one.
fn outside_classes(v4: bool, cidrs: &[IpNet], owned: &BTreeSet<IpAddr>) -> Vec<Place> {
    let max: u128 = if v4 { u128::from(u32::MAX) } else { u128::MAX };
    let family: Vec<IpNet> = cidrs
        .iter()
        .filter(|n| matches!(n, IpNet::V4(_)) == v4)
        .copied()
        .collect();
    let mut candidates: BTreeSet<u128> = BTreeSet::from([0, max]);
    let mut around = |lo: u128, hi: u128| {
        candidates.insert(lo);
        candidates.insert(hi);
        if let Some(before) = lo.checked_sub(1) {
            candidates.insert(before);
        }
        if hi < max {
            candidates.insert(hi + 1);
        }
    };
    for net in &family {
        around(number(net.network()), number(net.broadcast()));
    }
    for ip in owned.iter().filter(|ip| ip.is_ipv4() == v4) {
        around(number(*ip), number(*ip));
    }
    let mut classes: BTreeMap<Option<IpNet>, IpAddr> = BTreeMap::new();
    for n in candidates {
        let address = address(v4, n);
        if owned.contains(&address) {
            continue;
        }
        classes
            .entry(narrowest_cidr(&family, address))
            .or_insert(address);
    }
    classes
        .into_iter()
        .map(|(within, address)| Place {
            kind: PlaceKind::Outside { within },
            address,
        })
        .collect()
}

fn number(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn address(v4: bool, n: u128) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(u32::try_from(n).unwrap_or(u32::MAX)))
    } else {
        IpAddr::V6(Ipv6Addr::from(n))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;

    #[test]
    fn one_unowned_address_per_class_and_none_for_a_class_that_is_all_owned() {
        let cidrs: Vec<IpNet> = ["10.0.0.0/8", "10.0.0.0/31", "10.1.0.0/16"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let owned: BTreeSet<IpAddr> = ["10.0.0.0", "10.0.0.1", "0.0.0.0"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let classes = outside_classes(true, &cidrs, &owned);
        let got: Vec<(Option<String>, String)> = classes
            .iter()
            .map(|p| match &p.kind {
                PlaceKind::Outside { within } => {
                    (within.map(|n| n.to_string()), p.address.to_string())
                }
                _ => unreachable!(),
            })
            .collect();
        // 10.0.0.0/31 is wholly owned: no class for it.
        assert_eq!(
            got,
            [
                (None, "0.0.0.1".to_string()),
                (Some("10.0.0.0/8".to_string()), "10.0.0.2".to_string()),
                (Some("10.1.0.0/16".to_string()), "10.1.0.0".to_string()),
            ]
        );
    }
}
