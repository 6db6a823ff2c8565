//! The per-interface and global kernel settings the plumbing needs, written through
//! /proc/sys of the calling thread's network namespace.

use std::path::PathBuf;

use super::Error;

/// Sets `/proc/sys/<key>` (a key with slashes, such as `net/ipv4/ip_forward`) to `value`.
pub fn set(key: &str, value: &'static str) -> Result<(), Error> {
    let path = PathBuf::from("/proc/sys").join(key);
    std::fs::write(&path, value).map_err(|source| Error::Sysctl {
        path,
        value,
        source,
    })
}

/// The settings of a host-side veth carrying IPv4: the host answers the workload's ARP
/// for its gateway (and anything else) itself, without proxy ARP's usual random delay, and
/// forwards what arrives from it.
pub fn configure_host_ipv4(interface: &str) -> Result<(), Error> {
    set("net/ipv4/ip_forward", "1")?;
    set(&format!("net/ipv4/conf/{interface}/forwarding"), "1")?;
    set(&format!("net/ipv4/neigh/{interface}/proxy_delay"), "0")?;
    set(&format!("net/ipv4/conf/{interface}/proxy_arp"), "1")
}

/// The settings of a host-side veth carrying IPv6, to be applied while it is still down:
/// IPv6 on, no duplicate address detection (its link-local address is the workload's
/// gateway and must answer neighbour solicitations at once; every host veth has the same
/// one, each on its own link), proxy NDP as Calico sets it, and forwarding.
pub fn configure_host_ipv6(interface: &str) -> Result<(), Error> {
    set("net/ipv6/conf/all/forwarding", "1")?;
    set(&format!("net/ipv6/conf/{interface}/disable_ipv6"), "0")?;
    set(&format!("net/ipv6/conf/{interface}/accept_dad"), "0")?;
    set(&format!("net/ipv6/conf/{interface}/proxy_ndp"), "1")?;
    set(&format!("net/ipv6/conf/{interface}/forwarding"), "1")
}
