//! The IPAM driver: pools are palisade's ipPool resources, addresses are ipAllocation
//! resources (see [`super::allocator`]). As in Calico's libnetwork IPAM, a network either
//! names no subnet (its addresses then come from every enabled pool of the family) or
//! names exactly one configured pool with `--subnet`; Docker gets a placeholder gateway
//! (`0.0.0.0/0`, `::/0`) so that it never asks for one, because containers route through
//! the host at 169.254.1.1 instead.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::allocator;
use super::error::PluginError;
use super::protocol::{
    AddressSpaces, GATEWAY_ADDRESS_TYPE, IpamCapabilities, POOL_GATEWAY_KEY, REQUEST_ADDRESS_TYPE,
    ReleaseAddressRequest, RequestAddressRequest, RequestAddressResponse, RequestPoolRequest,
    RequestPoolResponse,
};
use crate::model::{IpPool, Kind, Resource};
use crate::store::Datastore;

/// The pool IDs of networks created without `--subnet`.
pub const AUTO_POOL_IPV4: &str = "PalisadePoolIPv4";
pub const AUTO_POOL_IPV6: &str = "PalisadePoolIPv6";

/// The pools used while no ipPool of the family is configured: Calico's defaults.
pub const DEFAULT_POOL_IPV4: Ipv4Net =
    Ipv4Net::new_assert(std::net::Ipv4Addr::new(192, 168, 0, 0), 16);
pub const DEFAULT_POOL_IPV6: Ipv6Net = Ipv6Net::new_assert(
    std::net::Ipv6Addr::new(0xfd80, 0x24e2, 0xf998, 0x72d6, 0, 0, 0, 0),
    64,
);

/// The placeholder gateways handed to Docker with a pool.
pub const PLACEHOLDER_GATEWAY_IPV4: &str = "0.0.0.0/0";
pub const PLACEHOLDER_GATEWAY_IPV6: &str = "::/0";

pub fn capabilities() -> IpamCapabilities {
    IpamCapabilities {
        requires_mac_address: false,
        requires_request_replay: false,
    }
}

pub fn default_address_spaces() -> AddressSpaces {
    AddressSpaces {
        local_default_address_space: "PalisadeLocalAddressSpace",
        global_default_address_space: "PalisadeGlobalAddressSpace",
    }
}

/// Which pools a pool ID stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PoolId {
    /// Every enabled pool of the family (IPv6 if true).
    Auto { v6: bool },
    /// Exactly this configured pool.
    Cidr(IpNet),
}

impl PoolId {
    fn parse(text: &str) -> Result<PoolId, PluginError> {
        match text {
            AUTO_POOL_IPV4 => Ok(PoolId::Auto { v6: false }),
            AUTO_POOL_IPV6 => Ok(PoolId::Auto { v6: true }),
            _ => text.parse::<IpNet>().map(PoolId::Cidr).map_err(|_| {
                PluginError::bad_request(format!(
                    "palisade IPAM: unknown PoolID '{text}' (expected {AUTO_POOL_IPV4}, {AUTO_POOL_IPV6} or a pool CIDR)"
                ))
            }),
        }
    }
}

pub async fn request_pool(
    store: &dyn Datastore,
    request: RequestPoolRequest,
) -> Result<RequestPoolResponse, PluginError> {
    if !request.sub_pool.is_empty() {
        return Err(PluginError::failed(format!(
            "palisade IPAM does not support sub pool configuration (--ip-range {}) on 'docker network create': \
             addresses come from palisade's ipPool resources; leave --ip-range out",
            request.sub_pool
        )));
    }
    if let Some(options) = request.options.as_ref().filter(|o| !o.is_empty()) {
        let given: Vec<String> = options.iter().map(|(k, v)| format!("{k}={v}")).collect();
        return Err(PluginError::failed(format!(
            "palisade IPAM does not support options (--ipam-opt {}); leave them out",
            given.join(", --ipam-opt ")
        )));
    }
    let placeholder = if request.v6 {
        PLACEHOLDER_GATEWAY_IPV6
    } else {
        PLACEHOLDER_GATEWAY_IPV4
    };
    let data = BTreeMap::from([(POOL_GATEWAY_KEY.to_string(), placeholder.to_string())]);
    if request.pool.is_empty() {
        let (pool_id, pool) = match request.v6 {
            false => (AUTO_POOL_IPV4, "0.0.0.0/0"),
            true => (AUTO_POOL_IPV6, "::/0"),
        };
        return Ok(RequestPoolResponse {
            pool_id: pool_id.to_string(),
            pool: pool.to_string(),
            data,
        });
    }
    let subnet: IpNet = request.pool.parse().map_err(|_| {
        PluginError::bad_request(format!(
            "palisade IPAM: the requested subnet '{}' is not a CIDR",
            request.pool
        ))
    })?;
    if matches!(subnet, IpNet::V6(_)) != request.v6 {
        return Err(PluginError::failed(format!(
            "palisade IPAM: the requested subnet {subnet} is of the other IP version than the pool Docker asked for"
        )));
    }
    let pools = configured_pools(store).await?;
    let pool = pools
        .iter()
        .find(|p| p.metadata.cidr == subnet)
        .ok_or_else(|| {
            let default = [IpNet::V4(DEFAULT_POOL_IPV4), IpNet::V6(DEFAULT_POOL_IPV6)];
            let why = if default.contains(&subnet) {
                " (it is the built-in default pool, used while no ipPool of its IP version exists; \
                 it is not a stored pool: create it as an ipPool to name it, or leave --subnet out)"
            } else {
                ""
            };
            PluginError::failed(format!(
                "The requested subnet {subnet} must match the CIDR of a configured palisade IP pool{why} \
                 (`palisade get ippools` lists them; create one with `palisade create`, or leave --subnet out)"
            ))
        })?;
    if pool.spec.disabled {
        return Err(PluginError::failed(format!(
            "palisade IPAM: IP pool {subnet} is disabled; enable it or pick another pool"
        )));
    }
    Ok(RequestPoolResponse {
        pool_id: subnet.to_string(),
        pool: subnet.to_string(),
        data,
    })
}

pub async fn request_address(
    store: &Arc<dyn Datastore>,
    node: &str,
    request: RequestAddressRequest,
) -> Result<RequestAddressResponse, PluginError> {
    let options = request.options.unwrap_or_default();
    if options.get(REQUEST_ADDRESS_TYPE).map(String::as_str) == Some(GATEWAY_ADDRESS_TYPE) {
        return Err(PluginError::failed(
            "palisade IPAM does not support specifying a gateway: create the network without \
             --gateway (containers reach everything through the host, at 169.254.1.1)",
        ));
    }
    let pool_id = PoolId::parse(&request.pool_id)?;
    let pools = pools_for(store.as_ref(), pool_id).await?;
    let allocation = if request.address.is_empty() {
        allocator::claim_any(store, &pools, node).await?
    } else {
        let address: IpAddr = request.address.parse().map_err(|_| {
            PluginError::bad_request(format!(
                "palisade IPAM: the requested address '{}' is not an IP address",
                request.address
            ))
        })?;
        allocator::claim_exact(store.as_ref(), address, &pools, node).await?
    };
    let address = allocation.metadata.address;
    let prefix = match address {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    Ok(RequestAddressResponse {
        address: format!("{address}/{prefix}"),
        data: BTreeMap::new(),
    })
}

pub async fn release_address(
    store: &dyn Datastore,
    request: ReleaseAddressRequest,
) -> Result<(), PluginError> {
    let address: IpAddr = request.address.parse().map_err(|_| {
        PluginError::bad_request(format!(
            "palisade IPAM: the address to release '{}' is not an IP address",
            request.address
        ))
    })?;
    // Docker releases the placeholder gateway of a network as if it were an address.
    if address.is_unspecified() {
        return Ok(());
    }
    allocator::release(store, address).await
}

/// The pools a pool ID allocates from, in allocation order.
async fn pools_for(store: &dyn Datastore, pool_id: PoolId) -> Result<Vec<IpNet>, PluginError> {
    let configured = configured_pools(store).await?;
    match pool_id {
        PoolId::Cidr(cidr) => match configured.iter().find(|p| p.metadata.cidr == cidr) {
            Some(pool) if !pool.spec.disabled => Ok(vec![cidr]),
            Some(_) => Err(PluginError::failed(format!(
                "palisade IPAM: IP pool {cidr} of this network is disabled"
            ))),
            None => Err(PluginError::failed(format!(
                "palisade IPAM: IP pool {cidr} of this network no longer exists; recreate it with `palisade create`"
            ))),
        },
        PoolId::Auto { v6 } => {
            let of_family: Vec<&IpPool> = configured
                .iter()
                .filter(|p| matches!(p.metadata.cidr, IpNet::V6(_)) == v6)
                .collect();
            if of_family.is_empty() {
                return Ok(vec![match v6 {
                    false => IpNet::V4(DEFAULT_POOL_IPV4),
                    true => IpNet::V6(DEFAULT_POOL_IPV6),
                }]);
            }
            let enabled: Vec<IpNet> = of_family
                .iter()
                .filter(|p| !p.spec.disabled)
                .map(|p| p.metadata.cidr)
                .collect();
            if enabled.is_empty() {
                return Err(PluginError::failed(format!(
                    "palisade IPAM: every {} IP pool is disabled; enable one or create another",
                    if v6 { "IPv6" } else { "IPv4" }
                )));
            }
            Ok(enabled)
        }
    }
}

/// The ipPool resources, ordered by CIDR.
async fn configured_pools(store: &dyn Datastore) -> Result<Vec<IpPool>, PluginError> {
    let snapshot = store
        .list(Some(Kind::IpPool))
        .await
        .map_err(|e| PluginError::store("reading the IP pools", e))?;
    Ok(snapshot
        .resources
        .into_iter()
        .filter_map(|r| match r {
            Resource::IpPool(p) => Some(p),
            _ => None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_ids() {
        assert_eq!(
            PoolId::parse(AUTO_POOL_IPV4).unwrap(),
            PoolId::Auto { v6: false }
        );
        assert_eq!(
            PoolId::parse("10.9.0.0/16").unwrap(),
            PoolId::Cidr("10.9.0.0/16".parse().unwrap())
        );
        assert!(matches!(
            PoolId::parse("CalicoPoolIPv4"),
            Err(PluginError::BadRequest(_))
        ));
    }
}
