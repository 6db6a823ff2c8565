//! Ethernet frames for any (source, destination, protocol, L4 keys), IPv4 or IPv6: what the
//! differential test and the benchmarks feed the real programs.

use std::net::IpAddr;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;
pub const PROTO_SCTP: u8 = 132;

/// A frame from `src` to `dst` (same family) carrying `protocol`, with L4 keys `(a, b)`:
/// source and destination port for TCP, UDP and SCTP, type and code for the family's ICMP
/// (low bytes), ignored otherwise. TCP packets are SYNs (a new flow); ICMP echo carries
/// identifier `a ^ b` so flows differ. Checksums are left zero except IPv4's header (no
/// TC program checks L4 checksums).
pub fn frame(src: IpAddr, dst: IpAddr, protocol: u8, a: u16, b: u16) -> Vec<u8> {
    let l4 = l4_header(src.is_ipv4(), protocol, a, b);
    let mut out = Vec::with_capacity(14 + 40 + l4.len());
    out.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01]);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.extend_from_slice(&0x0800u16.to_be_bytes());
            let mut ip = [0u8; 20];
            ip[0] = 0x45;
            let total = u16::try_from(20 + l4.len()).unwrap_or(u16::MAX);
            ip[2..4].copy_from_slice(&total.to_be_bytes());
            ip[6] = 0x40;
            ip[8] = 64;
            ip[9] = protocol;
            ip[12..16].copy_from_slice(&s.octets());
            ip[16..20].copy_from_slice(&d.octets());
            let checksum = internet_checksum(&ip);
            ip[10..12].copy_from_slice(&checksum.to_be_bytes());
            out.extend_from_slice(&ip);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            out.extend_from_slice(&0x86DDu16.to_be_bytes());
            let mut ip = [0u8; 40];
            ip[0] = 0x60;
            let payload = u16::try_from(l4.len()).unwrap_or(u16::MAX);
            ip[4..6].copy_from_slice(&payload.to_be_bytes());
            ip[6] = protocol;
            ip[7] = 64;
            ip[8..24].copy_from_slice(&s.octets());
            ip[24..40].copy_from_slice(&d.octets());
            out.extend_from_slice(&ip);
        }
        _ => panic!("frame: {src} and {dst} are of different families"),
    }
    out.extend_from_slice(&l4);
    out
}

fn l4_header(v4: bool, protocol: u8, a: u16, b: u16) -> Vec<u8> {
    let icmp = if v4 { PROTO_ICMP } else { PROTO_ICMPV6 };
    match protocol {
        PROTO_TCP => {
            let mut tcp = vec![0u8; 20];
            tcp[0..2].copy_from_slice(&a.to_be_bytes());
            tcp[2..4].copy_from_slice(&b.to_be_bytes());
            tcp[4..8].copy_from_slice(&1u32.to_be_bytes());
            tcp[12] = 5 << 4;
            tcp[13] = 0x02; // SYN
            tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
            tcp
        }
        PROTO_UDP => {
            let mut udp = vec![0u8; 8];
            udp[0..2].copy_from_slice(&a.to_be_bytes());
            udp[2..4].copy_from_slice(&b.to_be_bytes());
            udp[4..6].copy_from_slice(&8u16.to_be_bytes());
            udp
        }
        PROTO_SCTP => {
            let mut sctp = vec![0u8; 12];
            sctp[0..2].copy_from_slice(&a.to_be_bytes());
            sctp[2..4].copy_from_slice(&b.to_be_bytes());
            sctp
        }
        p if p == icmp => {
            let mut h = vec![0u8; 8];
            h[0] = a as u8;
            h[1] = b as u8;
            h[4..6].copy_from_slice(&(a ^ b).to_be_bytes());
            h[6..8].copy_from_slice(&1u16.to_be_bytes());
            h
        }
        _ => vec![0u8; 8],
    }
}

/// RFC 1071 one's-complement sum, as the IPv4 header checksum uses.
pub fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
