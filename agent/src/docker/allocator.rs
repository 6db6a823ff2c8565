//! Handing out addresses: the first free address of a list of pools, claimed by creating
//! its ipAllocation resource. The create is atomic and fails if the address is taken, so
//! two plugins (or two requests) racing for one address cannot both get it; the loser
//! picks again.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ipnet::IpNet;

use super::error::PluginError;
use crate::model::{
    IpAllocation, IpAllocationMetadata, IpAllocationSpec, Kind, Resource, ResourceKey,
};
use crate::store::{Datastore, Op, StoreError};

/// How often a claim is retried after losing a race for an address.
const MAX_RACES: usize = 64;

/// The addresses already handed out.
pub async fn taken_addresses(store: &dyn Datastore) -> Result<BTreeSet<IpAddr>, PluginError> {
    let snapshot = store
        .list(Some(Kind::IpAllocation))
        .await
        .map_err(|e| PluginError::store("reading the address allocations", e))?;
    Ok(snapshot
        .resources
        .iter()
        .filter_map(|r| match r {
            Resource::IpAllocation(a) => Some(a.metadata.address),
            _ => None,
        })
        .collect())
}

/// Claims the first free address of `pools` (in the order given) for `node`.
pub async fn claim_any(
    store: &Arc<dyn Datastore>,
    pools: &[IpNet],
    node: &str,
) -> Result<IpAllocation, PluginError> {
    let mut taken = taken_addresses(store.as_ref()).await?;
    for _ in 0..MAX_RACES {
        let Some((address, pool)) = first_free(pools, &taken) else {
            return Err(PluginError::failed(format!(
                "palisade IPAM: no free address left in {}",
                pool_list(pools)
            )));
        };
        match claim_in(store.as_ref(), address, pool, node).await {
            Ok(allocation) => return Ok(allocation),
            // Someone else claimed it since we looked: look again.
            Err(Claim::Taken) => {
                taken = taken_addresses(store.as_ref()).await?;
                taken.insert(address);
            }
            Err(Claim::Store(e)) => return Err(PluginError::store("claiming an address", e)),
        }
    }
    Err(PluginError::failed(format!(
        "palisade IPAM: lost the race for a free address in {} {MAX_RACES} times; try again",
        pool_list(pools)
    )))
}

/// Claims exactly `address`, which must be usable in one of `pools`.
pub async fn claim_exact(
    store: &dyn Datastore,
    address: IpAddr,
    pools: &[IpNet],
    node: &str,
) -> Result<IpAllocation, PluginError> {
    let Some(pool) = pools.iter().copied().find(|p| p.contains(&address)) else {
        return Err(PluginError::failed(format!(
            "palisade IPAM: the requested address {address} is not in {}",
            pool_list(pools)
        )));
    };
    if !usable(pool, address) {
        return Err(PluginError::failed(format!(
            "palisade IPAM: the requested address {address} is the network or broadcast address of pool {pool}"
        )));
    }
    match claim_in(store, address, pool, node).await {
        Ok(allocation) => Ok(allocation),
        Err(Claim::Taken) => Err(PluginError::failed(format!(
            "palisade IPAM: the requested address {address} is already in use"
        ))),
        Err(Claim::Store(e)) => Err(PluginError::store("claiming an address", e)),
    }
}

/// Releases `address`; releasing an address that is not allocated is not an error
/// (Docker releases a network's placeholder gateway too).
pub async fn release(store: &dyn Datastore, address: IpAddr) -> Result<(), PluginError> {
    store
        .commit(vec![Op::Delete {
            key: ResourceKey::IpAllocation { address },
            skip_missing: true,
        }])
        .await
        .map(|_| ())
        .map_err(|e| PluginError::store(&format!("releasing address {address}"), e))
}

enum Claim {
    Taken,
    Store(StoreError),
}

async fn claim_in(
    store: &dyn Datastore,
    address: IpAddr,
    pool: IpNet,
    node: &str,
) -> Result<IpAllocation, Claim> {
    let allocation = IpAllocation {
        metadata: IpAllocationMetadata { address },
        spec: IpAllocationSpec {
            pool,
            node: node.to_string(),
            endpoint: None,
        },
    };
    let op = Op::Create {
        resource: Resource::IpAllocation(allocation.clone()),
        skip_existing: false,
    };
    match store.commit(vec![op]).await {
        Ok(_) => Ok(allocation),
        Err(StoreError::AlreadyExists { .. }) => Err(Claim::Taken),
        Err(e) => Err(Claim::Store(e)),
    }
}

/// The lowest usable address of the first pool that has one not in `taken`.
pub fn first_free(pools: &[IpNet], taken: &BTreeSet<IpAddr>) -> Option<(IpAddr, IpNet)> {
    pools.iter().find_map(|&pool| {
        let (first, last) = usable_range(pool)?;
        // At most one more candidate than there are taken addresses in the pool.
        let mut candidate = first;
        loop {
            let address = to_address(pool, candidate);
            if !taken.contains(&address) {
                return Some((address, pool));
            }
            if candidate == last {
                return None;
            }
            candidate += 1;
        }
    })
}

/// Whether `address` of `pool` may be handed out.
pub fn usable(pool: IpNet, address: IpAddr) -> bool {
    let Some((first, last)) = usable_range(pool) else {
        return false;
    };
    pool.contains(&address) && (first..=last).contains(&to_number(address))
}

/// The usable addresses of a pool as numbers, first and last inclusive. IPv4 pools keep
/// their network and broadcast addresses out (some stacks refuse them as host
/// addresses), IPv6 pools their subnet-router anycast address.
fn usable_range(pool: IpNet) -> Option<(u128, u128)> {
    let network = to_number(pool.network());
    let last = to_number(pool.broadcast());
    let host_bits = pool.max_prefix_len() - pool.prefix_len();
    let (first, last) = match (pool, host_bits) {
        (_, 0) => (network, last),
        (IpNet::V4(_), 1) => (network, last),
        (IpNet::V4(_), _) => (network + 1, last - 1),
        (IpNet::V6(_), _) => (network + 1, last),
    };
    (first <= last).then_some((first, last))
}

fn to_number(address: IpAddr) -> u128 {
    match address {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn to_address(pool: IpNet, number: u128) -> IpAddr {
    match pool {
        // Numbers come from the pool's own range, so they fit.
        IpNet::V4(_) => IpAddr::V4(Ipv4Addr::from(u32::try_from(number).unwrap_or(u32::MAX))),
        IpNet::V6(_) => IpAddr::V6(Ipv6Addr::from(number)),
    }
}

fn pool_list(pools: &[IpNet]) -> String {
    let names: Vec<String> = pools.iter().map(ToString::to_string).collect();
    match names.len() {
        1 => format!("pool {}", names[0]),
        _ => format!("pools {}", names.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn first_free_skips_network_broadcast_and_taken() {
        let pools = [net("10.1.0.0/30"), net("10.2.0.0/29")];
        let mut taken = BTreeSet::new();
        assert_eq!(first_free(&pools, &taken), Some((ip("10.1.0.1"), pools[0])));
        taken.insert(ip("10.1.0.1"));
        assert_eq!(first_free(&pools, &taken), Some((ip("10.1.0.2"), pools[0])));
        taken.insert(ip("10.1.0.2"));
        // 10.1.0.3 is the broadcast address: on to the next pool.
        assert_eq!(first_free(&pools, &taken), Some((ip("10.2.0.1"), pools[1])));
        for last in 1..=6 {
            taken.insert(ip(&format!("10.2.0.{last}")));
        }
        assert_eq!(first_free(&pools, &taken), None);
    }

    #[test]
    fn ipv6_pools_skip_only_the_anycast_address() {
        let pool = net("fd00::/126");
        let taken: BTreeSet<IpAddr> = [ip("fd00::1"), ip("fd00::2")].into();
        assert_eq!(first_free(&[pool], &taken), Some((ip("fd00::3"), pool)));
        assert!(!usable(pool, ip("fd00::")));
        assert!(usable(pool, ip("fd00::3")));
    }

    #[test]
    fn usable_addresses() {
        let pool = net("192.168.0.0/16");
        assert!(!usable(pool, ip("192.168.0.0")));
        assert!(usable(pool, ip("192.168.0.1")));
        assert!(usable(pool, ip("192.168.255.254")));
        assert!(!usable(pool, ip("192.168.255.255")));
        assert!(!usable(pool, ip("10.0.0.1")));
        assert!(usable(net("10.0.0.7/32"), ip("10.0.0.7")));
        assert!(usable(net("10.0.0.6/31"), ip("10.0.0.6")));
    }

    #[test]
    fn a_large_pool_is_searched_only_as_far_as_needed() {
        let pool = net("fd80:24e2:f998:72d6::/64");
        let taken: BTreeSet<IpAddr> = (1..1000u16)
            .map(|i| IpAddr::V6(Ipv6Addr::new(0xfd80, 0x24e2, 0xf998, 0x72d6, 0, 0, 0, i)))
            .collect();
        let (address, _) = first_free(&[pool], &taken).unwrap();
        assert_eq!(address, ip("fd80:24e2:f998:72d6::3e8"));
    }
}
