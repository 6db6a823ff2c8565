//! One packet kind asked about (`trace`, `matrix --protocol`), and the packet it makes
//! between two ends: the one place both commands build their packets, so they agree.

use std::net::IpAddr;

use crate::model::Protocol;
use crate::policy::{Packet, has_ports};

/// The source port used when none is given: the first IANA ephemeral port.
pub const DEFAULT_SOURCE_PORT: u16 = 49152;

/// A protocol with its L4 fields, without addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub protocol: u8,
    /// (source, destination), for protocols with ports.
    pub ports: (u16, u16),
    /// (type, code), `None` for the echo request of the packet's family.
    pub icmp: (Option<u8>, u8),
}

impl Probe {
    /// Reads the options as `trace` and `matrix` take them; errors name the option.
    pub fn parse(
        protocol: &str,
        sport: Option<u16>,
        dport: Option<u16>,
        icmp_type: Option<u8>,
        icmp_code: Option<u8>,
    ) -> Result<Probe, String> {
        let number = parse_protocol(protocol)?;
        let ports = if has_ports(number) {
            let dport = dport.ok_or_else(|| {
                format!("--dport is required for protocol {protocol} (the destination port)")
            })?;
            (sport.unwrap_or(DEFAULT_SOURCE_PORT), dport)
        } else {
            (0, 0)
        };
        Ok(Probe {
            protocol: number,
            ports,
            icmp: (icmp_type, icmp_code.unwrap_or(0)),
        })
    }

    /// The packet from `src` to `dst`, each given by its addresses: IPv4 when both have
    /// it, else IPv6.
    pub fn packet(&self, src: &[IpAddr], dst: &[IpAddr]) -> Result<Packet, String> {
        for want_v4 in [true, false] {
            let pick = |v: &[IpAddr]| v.iter().copied().find(|ip| ip.is_ipv4() == want_v4);
            if let (Some(a), Some(b)) = (pick(src), pick(dst)) {
                let echo_request = if want_v4 { 8 } else { 128 };
                let icmp = (self.icmp.0.unwrap_or(echo_request), self.icmp.1);
                return Ok(Packet::new(a, b, self.protocol, self.ports, icmp));
            }
        }
        Err("the source and destination have no IP version in common".to_string())
    }
}

/// `tcp`, `udp`, `icmp`, `icmpv6`, `sctp`, `udplite` or a number 1-255.
pub fn parse_protocol(text: &str) -> Result<u8, String> {
    let protocol = match text.parse::<i64>() {
        Ok(n) => Protocol::Number(n),
        Err(_) => Protocol::Name(text.to_string()),
    };
    protocol.number().ok_or_else(|| {
        format!("--protocol '{text}': use tcp, udp, icmp, icmpv6, sctp, udplite or a number 1-255")
    })
}
