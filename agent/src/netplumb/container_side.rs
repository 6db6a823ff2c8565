//! The container half of a workload's plumbing, for workloads that no orchestrator plumbs:
//! the peer of a [`HostVeth`] moved into the workload's namespace as `eth0`, with its
//! addresses and Calico's routes. (Docker does this half itself, from the plugin's replies.)

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_route::address::AddressHeaderFlags;
use netlink_packet_route::route::RouteScope;
use rtnetlink::{LinkUnspec, RouteMessageBuilder};

use super::host_side::HostVeth;
use super::names::{CONTAINER_INTERFACE, IPV4_GATEWAY, IPV6_GATEWAY};
use super::namespace::NetnsHandle;
use super::rtnl::{Rtnl, link_mac};
use super::{Error, netlink_errno};

/// The workload's side of the pair, once configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInterface {
    /// Its index inside the workload's namespace.
    pub index: u32,
    /// Its MAC, `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
}

/// Moves the peer of `veth` from the host (`host`) into `netns` (where `container` is
/// connected) as `eth0`, gives it `addresses` as /32 and /128, and routes everything through
/// the host: an on-link route to 169.254.1.1 and a default route via it (IPv4), a default
/// route via the host veth's link-local address (IPv6).
///
/// Not undone on failure here: deleting the host end ([`super::delete_host_veth`]) removes
/// this end too, wherever it is.
pub async fn configure_container_side(
    host: &Rtnl,
    container: &Rtnl,
    netns: &NetnsHandle,
    veth: &HostVeth,
    addresses: &[IpAddr],
) -> Result<ContainerInterface, Error> {
    let ns = netns.path().display();
    // One request moves and renames it, so a namespace that has an eth0 already refuses
    // the move and leaves the peer where it was.
    let move_and_rename = LinkUnspec::new_with_index(veth.peer_index)
        .setns_by_fd(netns.raw_fd())
        .name(CONTAINER_INTERFACE.to_string())
        .build();
    host.handle()
        .link()
        .set(move_and_rename)
        .execute()
        .await
        .map_err(|source| {
            let step = format!("move {} into {ns} as {CONTAINER_INTERFACE}", veth.peer_name);
            if netlink_errno(&source) == Some(libc::EEXIST) {
                Error::InterfaceExists {
                    step,
                    name: format!("{CONTAINER_INTERFACE} (in {ns})"),
                }
            } else {
                Error::Netlink { step, source }
            }
        })?;
    let link = container
        .link_by_name(CONTAINER_INTERFACE)
        .await?
        .ok_or_else(|| Error::NoSuchInterface(format!("{CONTAINER_INTERFACE} in {ns}")))?;
    let index = link.header.index;
    let mac = link_mac(&link).unwrap_or_default();
    let handle = container.handle();

    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(|source| Error::Netlink {
            step: format!("set {CONTAINER_INTERFACE} up in {ns}"),
            source,
        })?;
    for address in addresses {
        let prefix = if address.is_ipv4() { 32 } else { 128 };
        let mut request = handle.address().add(index, *address, prefix);
        // A point-to-point link has nobody to collide with; DAD would only keep the
        // address unusable for a second.
        request.message_mut().header.flags = AddressHeaderFlags::Nodad;
        request.execute().await.map_err(|source| Error::Netlink {
            step: format!("add {address}/{prefix} to {CONTAINER_INTERFACE} in {ns}"),
            source,
        })?;
    }
    if addresses.iter().any(IpAddr::is_ipv4) {
        let gateway = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(IPV4_GATEWAY, 32)
            .output_interface(index)
            .scope(RouteScope::Link)
            .build();
        let default = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(IPV4_GATEWAY)
            .output_interface(index)
            .build();
        for (route, what) in [
            (gateway, "the on-link route to"),
            (default, "the default route via"),
        ] {
            handle
                .route()
                .add(route)
                .execute()
                .await
                .map_err(|source| Error::Netlink {
                    step: format!("add {what} {IPV4_GATEWAY} in {ns}"),
                    source,
                })?;
        }
    }
    if addresses.iter().any(IpAddr::is_ipv6) {
        let default = RouteMessageBuilder::<Ipv6Addr>::new()
            .gateway(IPV6_GATEWAY)
            .output_interface(index)
            .build();
        handle
            .route()
            .add(default)
            .execute()
            .await
            .map_err(|source| Error::Netlink {
                step: format!("add the default route via {IPV6_GATEWAY} in {ns}"),
                source,
            })?;
    }
    Ok(ContainerInterface { index, mac })
}
