//! The names and fixed addresses of the plumbing.

use std::net::{Ipv4Addr, Ipv6Addr};

use sha2::{Digest, Sha256};

/// What the container side is called inside the workload's namespace.
pub const CONTAINER_INTERFACE: &str = "eth0";

/// The MAC of every host-side veth, as Calico gives them. The containers never need to tell
/// host veths apart, and a fixed MAC gives a fixed IPv6 link-local gateway address.
pub const HOST_VETH_MAC: [u8; 6] = [0xee; 6];

/// The IPv4 gateway of every workload. No interface has it: the host veth answers ARP for it
/// by proxy ARP, so it only has to be link-local and the same everywhere.
pub const IPV4_GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// The IPv6 gateway of every workload: the EUI-64 link-local address of [`HOST_VETH_MAC`],
/// which every host veth has.
pub const IPV6_GATEWAY: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0xecee, 0xeeff, 0xfeee, 0xeeee);

const HOST_PREFIX: &str = "pal";
const TEMP_PREFIX: &str = "tmp";
/// Prefix plus this many hex digits stays within the kernel's 15 characters.
const HASH_DIGITS: usize = 11;

/// The host-side interface of the endpoint `endpoint_id` (a workload name, a Docker
/// EndpointID): `pal` + the first 11 hex digits of the SHA-256 of the id.
///
/// Calico takes the first 11 characters of the id itself; hashing keeps names valid and
/// distinct for ids of any length and alphabet.
pub fn host_interface_name(endpoint_id: &str) -> String {
    format!("{HOST_PREFIX}{}", hash_digits(endpoint_id))
}

/// The temporary name of the container side while it is still in the host namespace.
pub fn temp_interface_name(endpoint_id: &str) -> String {
    format!("{TEMP_PREFIX}{}", hash_digits(endpoint_id))
}

fn hash_digits(endpoint_id: &str) -> String {
    let digest = Sha256::digest(endpoint_id.as_bytes());
    let mut hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    hex.truncate(HASH_DIGITS);
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_pal_and_eleven_hex_digits_of_the_sha256() {
        let name = host_interface_name("db1");
        assert_eq!(name.len(), 14);
        assert!(name.starts_with("pal"));
        assert!(name[3..].chars().all(|c| c.is_ascii_hexdigit()));
        let digest = Sha256::digest(b"db1");
        assert_eq!(&name[3..5], format!("{:02x}", digest[0]));
        assert_ne!(host_interface_name("db1"), host_interface_name("db2"));
        assert_eq!(temp_interface_name("db1")[3..], name[3..]);
    }

    #[test]
    fn the_ipv6_gateway_is_the_eui64_link_local_of_the_host_mac() {
        let mut eui64 = [0u8; 8];
        eui64[..3].copy_from_slice(&HOST_VETH_MAC[..3]);
        eui64[3..5].copy_from_slice(&[0xff, 0xfe]);
        eui64[5..].copy_from_slice(&HOST_VETH_MAC[3..]);
        eui64[0] ^= 0x02;
        let mut octets = [0u8; 16];
        octets[..2].copy_from_slice(&[0xfe, 0x80]);
        octets[8..].copy_from_slice(&eui64);
        assert_eq!(Ipv6Addr::from(octets), IPV6_GATEWAY);
    }
}
