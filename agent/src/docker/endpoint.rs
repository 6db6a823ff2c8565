//! The workloadEndpoint of a container's Docker endpoint, as Calico's libnetwork plugin
//! writes it: named by the Docker EndpointID, on this node, orchestrator and workload
//! `libnetwork`, the network's profile.

use std::net::IpAddr;

use ipnet::IpNet;
use sha2::{Digest, Sha256};

use super::error::PluginError;
use super::protocol::EndpointInterface;
use crate::model::{ResourceKey, WorkloadEndpoint, WorkloadEndpointMetadata, WorkloadEndpointSpec};
use crate::netplumb::host_interface_name;

/// The orchestrator and workload identifiers of every Docker endpoint (Calico's).
pub const ORCHESTRATOR: &str = "libnetwork";
pub const WORKLOAD: &str = "libnetwork";

/// The datastore key of the endpoint `endpoint_id` on `node`.
pub fn endpoint_key(node: &str, endpoint_id: &str) -> ResourceKey {
    ResourceKey::WorkloadEndpoint {
        node: node.to_string(),
        orchestrator: ORCHESTRATOR.to_string(),
        workload: WORKLOAD.to_string(),
        name: endpoint_id.to_string(),
    }
}

/// The endpoint to write for `CreateEndpoint`, and whether its MAC address was chosen
/// here (and must be told to Docker) rather than given by the user.
pub fn new_endpoint(
    node: &str,
    endpoint_id: &str,
    network_name: &str,
    interface: &EndpointInterface,
) -> Result<(WorkloadEndpoint, bool), PluginError> {
    let mut ip_networks = Vec::new();
    for (field, text) in [
        ("Interface.Address", &interface.address),
        ("Interface.AddressIPv6", &interface.address_ipv6),
    ] {
        if !text.is_empty() {
            ip_networks.push(host_network(field, text)?);
        }
    }
    if ip_networks.is_empty() {
        return Err(PluginError::failed(
            "palisade: no address assigned for the endpoint: palisade networks need the palisade IPAM driver \
             (docker network create --ipam-driver)",
        ));
    }
    let (mac, chosen_here) = match interface.mac_address.as_str() {
        "" => (derived_mac(endpoint_id), true),
        given => (given.to_ascii_lowercase(), false),
    };
    let endpoint = WorkloadEndpoint {
        metadata: WorkloadEndpointMetadata {
            name: endpoint_id.to_string(),
            workload: WORKLOAD.to_string(),
            orchestrator: ORCHESTRATOR.to_string(),
            node: node.to_string(),
            ..WorkloadEndpointMetadata::default()
        },
        spec: WorkloadEndpointSpec {
            ip_networks,
            profiles: vec![network_name.to_string()],
            interface_name: host_interface_name(endpoint_id),
            mac: Some(mac),
            ..WorkloadEndpointSpec::default()
        },
    };
    Ok((endpoint, chosen_here))
}

/// `ip/len` from Docker, as the endpoint's /32 or /128.
fn host_network(field: &str, text: &str) -> Result<IpNet, PluginError> {
    let address: IpAddr = match text.parse::<IpNet>() {
        Ok(net) => net.addr(),
        Err(_) => text.parse().map_err(|_| {
            PluginError::bad_request(format!(
                "palisade: {field} '{text}' is not an address or address/prefix"
            ))
        })?,
    };
    Ok(IpNet::from(address))
}

/// The container-side MAC address of an endpoint: locally administered, unicast, from the
/// EndpointID. Calico gives containers ee:ee:ee:ee:ee:ee, the host veth's own MAC; a
/// container MAC distinct from the host side's keeps the two ends' IPv6 link-local
/// addresses apart, so duplicate address detection does not fail on IPv6 networks.
pub fn derived_mac(endpoint_id: &str) -> String {
    let digest = Sha256::digest(endpoint_id.as_bytes());
    let mut octets = [0u8; 6];
    octets.copy_from_slice(&digest[..6]);
    octets[0] = (octets[0] & 0xfc) | 0x02;
    let parts: Vec<String> = octets.iter().map(|o| format!("{o:02x}")).collect();
    parts.join(":")
}

/// The addresses of an endpoint, for the host routes.
pub fn addresses(endpoint: &WorkloadEndpoint) -> Vec<IpAddr> {
    endpoint.spec.ip_networks.iter().map(IpNet::addr).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Resource;
    use crate::model::validate::validate;

    fn interface(v4: &str, v6: &str, mac: &str) -> EndpointInterface {
        EndpointInterface {
            address: v4.into(),
            address_ipv6: v6.into(),
            mac_address: mac.into(),
        }
    }

    #[test]
    fn endpoints_are_written_as_calico_writes_them() {
        let id = "f5683ff98d408d804a6b80ef75f09750a9a844e205d6b65f9b9a54b1ef9752b0";
        let (endpoint, chosen) = new_endpoint(
            "node1",
            id,
            "databases",
            &interface("10.9.0.1/32", "fd00::5/128", ""),
        )
        .unwrap();
        assert!(chosen);
        assert_eq!(endpoint.key(), endpoint_key("node1", id));
        assert_eq!(endpoint.metadata.orchestrator, "libnetwork");
        assert_eq!(endpoint.metadata.workload, "libnetwork");
        assert_eq!(endpoint.spec.profiles, ["databases"]);
        assert_eq!(endpoint.spec.interface_name, host_interface_name(id));
        assert_eq!(
            endpoint.spec.ip_networks,
            [
                "10.9.0.1/32".parse::<IpNet>().unwrap(),
                "fd00::5/128".parse().unwrap()
            ]
        );
        validate(&Resource::WorkloadEndpoint(endpoint)).unwrap();
    }

    #[test]
    fn a_given_mac_is_kept() {
        let (endpoint, chosen) = new_endpoint(
            "n",
            "e1",
            "net",
            &interface("10.0.0.1/32", "", "02:AA:bb:cc:dd:ee"),
        )
        .unwrap();
        assert!(!chosen);
        assert_eq!(endpoint.spec.mac.as_deref(), Some("02:aa:bb:cc:dd:ee"));
    }

    #[test]
    fn an_endpoint_needs_an_address() {
        let err = new_endpoint("n", "e1", "net", &interface("", "", "")).unwrap_err();
        assert!(err.message().contains("no address assigned"), "{err}");
        let err = new_endpoint("n", "e1", "net", &interface("bogus", "", "")).unwrap_err();
        assert!(err.message().contains("Interface.Address 'bogus'"), "{err}");
    }

    #[test]
    fn derived_macs_are_local_unicast_and_not_the_host_side_mac() {
        for id in ["a", "b", "ffff"] {
            let mac = derived_mac(id);
            let first = u8::from_str_radix(&mac[..2], 16).unwrap();
            assert_eq!(first & 0x03, 0x02, "{mac}");
            assert_ne!(mac, "ee:ee:ee:ee:ee:ee");
            assert_eq!(mac, derived_mac(id));
        }
    }
}
