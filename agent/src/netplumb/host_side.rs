//! The host half of a workload's plumbing, shared by `palisade workload add` and the
//! Docker plugin: the veth pair with its host end configured, the host routes to the
//! workload's addresses, and tearing it all down by the host end's name.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_route::address::AddressHeaderFlags;
use netlink_packet_route::route::{RouteMessage, RouteScope};
use rtnetlink::{LinkUnspec, LinkVeth, RouteMessageBuilder};

use super::names::{HOST_VETH_MAC, IPV6_GATEWAY};
use super::rtnl::Rtnl;
use super::{Error, netlink_errno, sysctl};

/// A veth pair in the host namespace, its host end configured and up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostVeth {
    pub name: String,
    pub index: u32,
    /// The other end, still in the host namespace, down and unconfigured.
    pub peer_name: String,
    pub peer_index: u32,
}

/// Creates the veth pair `name` / `peer_name` in the host namespace and configures the host
/// end for a workload with `addresses`: MAC `ee:ee:ee:ee:ee:ee`, proxy ARP (IPv4), the
/// fixed link-local gateway address without DAD (IPv6), forwarding, up.
///
/// All or nothing: on failure the pair is deleted again.
pub async fn create_host_veth(
    rtnl: &Rtnl,
    name: &str,
    peer_name: &str,
    addresses: &[IpAddr],
) -> Result<HostVeth, Error> {
    for existing in [name, peer_name] {
        if rtnl.link_by_name(existing).await?.is_some() {
            return Err(Error::InterfaceExists {
                step: format!("create the veth pair {name}/{peer_name}"),
                name: existing.to_string(),
            });
        }
    }
    let message = LinkVeth::new(name, peer_name)
        .address(HOST_VETH_MAC.to_vec())
        .build();
    rtnl.handle()
        .link()
        .add(message)
        .execute()
        .await
        .map_err(|source| {
            if netlink_errno(&source) == Some(libc::EEXIST) {
                Error::InterfaceExists {
                    step: format!("create the veth pair {name}/{peer_name}"),
                    name: format!("{name} or {peer_name}"),
                }
            } else {
                Error::Netlink {
                    step: format!("create the veth pair {name}/{peer_name}"),
                    source,
                }
            }
        })?;
    match configure_new_pair(rtnl, name, peer_name, addresses).await {
        Ok(veth) => Ok(veth),
        Err(err) => {
            // Best effort: the error that made us undo is the one worth reporting.
            let _ = delete_host_veth(rtnl, name).await;
            Err(err)
        }
    }
}

async fn configure_new_pair(
    rtnl: &Rtnl,
    name: &str,
    peer_name: &str,
    addresses: &[IpAddr],
) -> Result<HostVeth, Error> {
    let index = link_index(rtnl, name).await?;
    let peer_index = link_index(rtnl, peer_name).await?;
    let ipv6 = addresses.iter().any(IpAddr::is_ipv6);
    if addresses.iter().any(IpAddr::is_ipv4) {
        sysctl::configure_host_ipv4(name)?;
    }
    if ipv6 {
        sysctl::configure_host_ipv6(name)?;
    }
    rtnl.handle()
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(|source| Error::Netlink {
            step: format!("set {name} up"),
            source,
        })?;
    if ipv6 {
        // The kernel derives this address from the MAC by itself, unless the host is set to
        // generate link-local addresses another way; the workloads' gateway must not depend
        // on that.
        let mut request = rtnl
            .handle()
            .address()
            .add(index, IpAddr::V6(IPV6_GATEWAY), 64);
        request.message_mut().header.flags = AddressHeaderFlags::Nodad;
        match request.execute().await {
            Ok(()) => {}
            Err(e) if netlink_errno(&e) == Some(libc::EEXIST) => {}
            Err(source) => {
                return Err(Error::Netlink {
                    step: format!("add the gateway address {IPV6_GATEWAY} to {name}"),
                    source,
                });
            }
        }
    }
    Ok(HostVeth {
        name: name.to_string(),
        index,
        peer_name: peer_name.to_string(),
        peer_index,
    })
}

async fn link_index(rtnl: &Rtnl, name: &str) -> Result<u32, Error> {
    rtnl.link_by_name(name)
        .await?
        .map(|link| link.header.index)
        .ok_or_else(|| Error::NoSuchInterface(name.to_string()))
}

/// Routes each of `addresses` (as a /32 or /128) to the host veth `veth`.
///
/// All or nothing: on failure the routes added so far are removed. An address the host
/// already routes is an error ([`Error::AddressRouted`]): two workloads cannot share one.
pub async fn add_host_routes(
    rtnl: &Rtnl,
    veth: &HostVeth,
    addresses: &[IpAddr],
) -> Result<(), Error> {
    for (done, address) in addresses.iter().enumerate() {
        let route = host_route(*address, veth.index);
        if let Err(source) = rtnl.handle().route().add(route).execute().await {
            for added in &addresses[..done] {
                let _ = rtnl
                    .handle()
                    .route()
                    .del(host_route(*added, veth.index))
                    .execute()
                    .await;
            }
            return Err(if netlink_errno(&source) == Some(libc::EEXIST) {
                Error::AddressRouted {
                    address: *address,
                    interface: veth.name.clone(),
                }
            } else {
                Error::Netlink {
                    step: format!("route {address} to {}", veth.name),
                    source,
                }
            });
        }
    }
    Ok(())
}

/// `address/32 dev <index> scope link`, or `address/128 dev <index>`.
fn host_route(address: IpAddr, index: u32) -> RouteMessage {
    match address {
        IpAddr::V4(address) => RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(address, 32)
            .output_interface(index)
            .scope(RouteScope::Link)
            .build(),
        IpAddr::V6(address) => RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(address, 128)
            .output_interface(index)
            .build(),
    }
}

/// Deletes the veth pair whose host end is `name`, and with it the host routes through it
/// and the other end, wherever it is. Returns whether there was such an interface.
pub async fn delete_host_veth(rtnl: &Rtnl, name: &str) -> Result<bool, Error> {
    let Some(link) = rtnl.link_by_name(name).await? else {
        return Ok(false);
    };
    match rtnl.handle().link().del(link.header.index).execute().await {
        Ok(()) => Ok(true),
        Err(e) if netlink_errno(&e) == Some(libc::ENODEV) => Ok(false),
        Err(source) => Err(Error::Netlink {
            step: format!("delete {name}"),
            source,
        }),
    }
}
