//! Workload plumbing: the veth pair, addresses and routes that connect a container's network
//! namespace to the host, Calico style.
//!
//! Every workload gets its own veth pair. The host side (`pal` + 11 hex digits, see
//! [`names`]) has the fixed MAC `ee:ee:ee:ee:ee:ee`, proxy ARP and a host route per workload
//! address; the container side is `eth0` with the workload's addresses as /32 and /128 and
//! default routes through gateways that exist only as far as the container can tell
//! (169.254.1.1, answered by the host's proxy ARP, and the host veth's fixed link-local
//! address). So every packet from a workload goes through the host's routing, and through
//! palisade's programs on the host side of the veth.
//!
//! The work is split so that the Docker plugin can reuse the host half: libnetwork moves the
//! container side into the sandbox and configures it itself, from the plugin's replies.
//! - [`host_side`]: create the pair in the host namespace, configure the host end, install
//!   the host routes, delete the pair by the host end's name;
//! - [`container_side`]: move the other end into a namespace as `eth0` and configure it;
//! - [`workload`]: both, all or nothing, for `palisade workload add/remove`.

pub mod container_side;
pub mod host_side;
pub mod names;
pub mod namespace;
pub mod rtnl;
pub mod sysctl;
pub mod workload;

use std::net::IpAddr;
use std::path::PathBuf;

pub use container_side::{ContainerInterface, configure_container_side};
pub use host_side::{HostVeth, add_host_routes, create_host_veth, delete_host_veth};
pub use names::{
    CONTAINER_INTERFACE, HOST_VETH_MAC, IPV4_GATEWAY, IPV6_GATEWAY, host_interface_name,
    temp_interface_name,
};
pub use namespace::NetnsHandle;
pub use rtnl::Rtnl;
pub use workload::{PlumbedWorkload, WorkloadPlumbing, plumb_workload, unplumb_workload};

/// Why plumbing a workload failed. Each variant names the step, so that the message says
/// what failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open the network namespace {path}: {source}")]
    OpenNamespace {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path} is not a network namespace: {source}")]
    EnterNamespace {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot open a netlink socket{context}: {source}")]
    NetlinkSocket {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("netlink: cannot {step}: {source}")]
    Netlink {
        step: String,
        #[source]
        source: rtnetlink::Error,
    },

    #[error("cannot {step}: an interface named {name} already exists")]
    InterfaceExists { step: String, name: String },

    #[error("no interface named {0}")]
    NoSuchInterface(String),

    #[error("cannot route {address} to {interface}: the host already has a route for it")]
    AddressRouted { address: IpAddr, interface: String },

    #[error("cannot set {path} to {value}: {source}")]
    Sysctl {
        path: PathBuf,
        value: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error("{0}")]
    Invalid(String),
}

/// The kernel's errno in a netlink error reply, if that is what `error` is.
pub fn netlink_errno(error: &rtnetlink::Error) -> Option<i32> {
    match error {
        rtnetlink::Error::NetlinkError(message) => message.code.map(|code| -code.get()),
        _ => None,
    }
}
