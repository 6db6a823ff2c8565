//! A whole workload plumbed in one step, all or nothing: what `palisade workload add` and
//! `remove` do to the network (the CLI adds the datastore write).

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;

use super::Error;
use super::container_side::configure_container_side;
use super::host_side::{add_host_routes, create_host_veth, delete_host_veth};
use super::names::{CONTAINER_INTERFACE, host_interface_name, temp_interface_name};
use super::namespace::NetnsHandle;
use super::rtnl::Rtnl;

/// What to plumb.
#[derive(Debug, Clone)]
pub struct WorkloadPlumbing {
    /// The workload's name; the host interface's name is derived from it.
    pub name: String,
    /// A namespace name under /run/netns, or a path to a namespace file.
    pub netns: String,
    /// At least one; each becomes a /32 or /128 on the workload's `eth0`.
    pub addresses: Vec<IpAddr>,
}

/// What was plumbed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlumbedWorkload {
    pub host_interface: String,
    pub host_index: u32,
    /// The MAC of the workload's `eth0`, `aa:bb:cc:dd:ee:ff`.
    pub container_mac: String,
    /// The workload's addresses as /32 and /128 networks.
    pub ip_networks: Vec<IpNet>,
}

/// Connects the namespace of `workload` to the host: a veth pair, the container end as
/// `eth0` with the addresses and default routes, the host end with proxy ARP and a route
/// per address.
///
/// Nothing is created until the namespace is known to be usable; on any later failure the
/// pair is deleted again, which removes everything else with it.
pub async fn plumb_workload(workload: &WorkloadPlumbing) -> Result<PlumbedWorkload, Error> {
    let ip_networks = host_networks(&workload.addresses)?;
    let netns = NetnsHandle::open(&workload.netns)?;
    let host = Rtnl::host()?;
    let container = Rtnl::in_namespace(&netns)?;
    if container.link_by_name(CONTAINER_INTERFACE).await?.is_some() {
        return Err(Error::InterfaceExists {
            step: format!("plumb workload {}", workload.name),
            name: format!("{CONTAINER_INTERFACE} (in {})", netns.path().display()),
        });
    }
    let host_name = host_interface_name(&workload.name);
    let temp_name = temp_interface_name(&workload.name);
    let veth = create_host_veth(&host, &host_name, &temp_name, &workload.addresses).await?;
    let configured = async {
        let interface =
            configure_container_side(&host, &container, &netns, &veth, &workload.addresses).await?;
        add_host_routes(&host, &veth, &workload.addresses).await?;
        Ok::<_, Error>(interface)
    }
    .await;
    match configured {
        Ok(interface) => Ok(PlumbedWorkload {
            host_interface: veth.name,
            host_index: veth.index,
            container_mac: interface.mac,
            ip_networks,
        }),
        Err(err) => {
            // Best effort: the error that made us undo is the one worth reporting.
            let _ = delete_host_veth(&host, &veth.name).await;
            Err(err)
        }
    }
}

/// Deletes the plumbing of the workload `name` (the veth pair, and with it the host routes
/// and the container's `eth0`). Returns whether there was any.
pub async fn unplumb_workload(name: &str) -> Result<bool, Error> {
    let host = Rtnl::host()?;
    delete_host_veth(&host, &host_interface_name(name)).await
}

/// The /32 and /128 networks of `addresses`, which must be usable unicast addresses, at
/// least one, and each only once.
pub fn host_networks(addresses: &[IpAddr]) -> Result<Vec<IpNet>, Error> {
    if addresses.is_empty() {
        return Err(Error::Invalid(
            "a workload needs at least one address".into(),
        ));
    }
    let mut seen = BTreeSet::new();
    let mut networks = Vec::with_capacity(addresses.len());
    for address in addresses {
        let usable = !(address.is_unspecified()
            || address.is_multicast()
            || address.is_loopback()
            || matches!(address, IpAddr::V4(v4) if v4.is_broadcast() || v4.is_link_local())
            || matches!(address, IpAddr::V6(v6) if v6.is_unicast_link_local()));
        if !usable {
            return Err(Error::Invalid(format!(
                "{address} cannot be a workload address (it is not a routable unicast address)"
            )));
        }
        if !seen.insert(*address) {
            return Err(Error::Invalid(format!("{address} is given twice")));
        }
        networks.push(IpNet::from(*address));
    }
    Ok(networks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_become_host_networks() {
        let nets =
            host_networks(&["10.1.2.3".parse().unwrap(), "fd00::5".parse().unwrap()]).unwrap();
        assert_eq!(
            nets,
            vec![
                "10.1.2.3/32".parse::<IpNet>().unwrap(),
                "fd00::5/128".parse().unwrap()
            ]
        );
    }

    #[test]
    fn unusable_or_repeated_addresses_are_refused() {
        for bad in [
            "0.0.0.0",
            "224.0.0.1",
            "127.0.0.1",
            "169.254.1.1",
            "fe80::1",
            "::",
        ] {
            let err = host_networks(&[bad.parse().unwrap()]).unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
        let twice: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(host_networks(&[twice, twice]).is_err());
        assert!(host_networks(&[]).is_err());
    }
}
