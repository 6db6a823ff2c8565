//! The packet fuzzer's second opinion: what a frame on a workload's host-side veth is, read
//! from the RFCs, not from the kernel's parser (`ebpf/src/parse.rs`), so that the two can be
//! held against each other (`tests/tests/bpf_packet_fuzz.rs`).
//!
//! What it accepts, and why:
//! - **Ethernet II** (14 bytes: two addresses and an EtherType). `0x0800` is IPv4, `0x86dd`
//!   IPv6; `0x0806` is ARP (RFC 826), which carries no IP packet and is link control, outside
//!   policy. Every other EtherType, VLAN tags (802.1Q) included, is refused: a workload's veth
//!   carries untagged IP and ARP only.
//! - **IPv4** (RFC 791 §3.1): version 4; IHL at least 5 words; the total length at least the
//!   header and within the frame (bytes beyond it are link padding). The header's options are
//!   skipped as a whole: none changes the addresses, protocol or ports policy reads (the
//!   receiving stack checks their syntax and refuses source routes). The 13-bit fragment
//!   offset and the MF flag say whether it is a whole datagram, its first fragment (offset 0,
//!   MF) or a later one; the identification, with the addresses and the protocol, names the
//!   datagram (§3.2).
//! - **IPv6** (RFC 8200): version 6; 40 + payload length within the frame. The extension
//!   headers that carry nothing of their own for an upper layer are walked (§4): Hop-by-Hop
//!   Options (0), Routing (43) and Destination Options (60), each `(length + 1) * 8` bytes,
//!   and the Fragment header (44, 8 bytes): a nonzero offset makes the packet a later
//!   fragment (what follows is data, not a header); offset 0 with M set a first fragment;
//!   offset 0 without M an atomic fragment, a whole packet (RFC 6946). Any other next header
//!   (AH, ESP, No Next Header, ...) is the packet's upper-layer protocol, which policy
//!   matches by number. Every header must lie within the payload length.
//! - **Upper layers**, in a whole packet or a first fragment, within the IP packet: TCP
//!   (RFC 9293 §3.1) needs its 20 bytes and a data offset of at least 5 words that stays in
//!   the packet; UDP (RFC 768) 8 bytes; SCTP (RFC 9260) its 12-byte common header; the
//!   family's ICMP (RFC 792, RFC 4443) 8 bytes (type, code, checksum, and the message's
//!   first word). Their ports, or type and code, are what policy reads. ICMP of the other
//!   family is just another protocol number. Other protocols need nothing, UDP-Lite (RFC
//!   3828) included: v1 rules name ports with protocol tcp or udp only, so no verdict
//!   depends on its ports.
//! - **IPv6 link control**: neighbour and router discovery (RFC 4861: ICMPv6 133-137) and
//!   multicast listener discovery (RFC 2710: 130-132; RFC 3810: 143) pass outside policy, as
//!   the link needs them, but only while they cannot leave the link: a whole packet whose
//!   destination is link-scoped (fe80::/10 unicast, ff02::/16 multicast), or whose hop limit
//!   is at most 1 (no router forwards it, RFC 8200 §3), or, towards the workload, whose hop
//!   limit is 255 (a router forwarding it would have decremented it, so the host sent it).
//!   Any other ICMPv6 message of those types is judged by policy like any packet.
//!
//! Checksums (IPv4 header, TCP, UDP, ICMP) are not verified: the receiving stack does that,
//! and a wrong checksum changes no field policy reads.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use palisade::policy::{Direction, L4, Packet};

/// What a frame is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reading {
    /// Outside policy: ARP, or IPv6 link control that stays on the link.
    LinkControl(&'static str),
    /// An IP packet, judged by policy (or, if a later fragment, by its first fragment).
    Ip(IpPacket),
    /// Not a frame to pass, and why.
    Refused(String),
}

/// Which part of a datagram a packet is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fragment {
    Whole,
    First { id: u32 },
    Later { id: u32 },
}

/// The fields of an IP packet that policy reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpPacket {
    /// What the policy evaluator judges; a later fragment has no upper-layer header, so its
    /// `l4` is [`L4::None`].
    pub packet: Packet,
    pub fragment: Fragment,
    /// TCP's flags byte, for TCP in a whole packet or a first fragment.
    pub tcp_flags: Option<u8>,
}

impl fmt::Display for Reading {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reading::LinkControl(what) => write!(f, "link control ({what})"),
            Reading::Ip(ip) => write!(f, "{} ({:?})", ip.packet, ip.fragment),
            Reading::Refused(why) => write!(f, "refused: {why}"),
        }
    }
}

const ETHERNET_LEN: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV6: u16 = 0x86dd;

const TCP: u8 = 6;
const UDP: u8 = 17;
const SCTP: u8 = 132;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;

/// Reads `frame` as seen travelling in `direction` (egress: from the workload).
pub fn read(frame: &[u8], direction: Direction) -> Reading {
    match read_frame(frame, direction) {
        Ok(reading) => reading,
        Err(why) => Reading::Refused(why),
    }
}

fn read_frame(frame: &[u8], direction: Direction) -> Result<Reading, String> {
    let ethertype = be16(frame, 12).ok_or("shorter than an Ethernet header")?;
    let ip = &frame[ETHERNET_LEN..];
    match ethertype {
        ETHERTYPE_IPV4 => read_ipv4(ip).map(Reading::Ip),
        ETHERTYPE_IPV6 => read_ipv6(ip, direction),
        ETHERTYPE_ARP => Ok(Reading::LinkControl("ARP")),
        other => Err(format!("EtherType {other:#06x}")),
    }
}

fn read_ipv4(ip: &[u8]) -> Result<IpPacket, String> {
    let header = ip.get(..20).ok_or("shorter than an IPv4 header")?;
    if header[0] >> 4 != 4 {
        return Err(format!("IP version {} in an IPv4 frame", header[0] >> 4));
    }
    let header_len = usize::from(header[0] & 0x0f) * 4;
    if header_len < 20 {
        return Err(format!("IHL of {header_len} bytes"));
    }
    let total_len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    if total_len < header_len {
        return Err(format!(
            "total length {total_len} below the header's {header_len}"
        ));
    }
    if total_len > ip.len() {
        return Err(format!(
            "total length {total_len} beyond the {} bytes there",
            ip.len()
        ));
    }
    let id = u32::from(u16::from_be_bytes([header[4], header[5]]));
    let flags_offset = u16::from_be_bytes([header[6], header[7]]);
    let more_fragments = flags_offset & 0x2000 != 0;
    let offset = flags_offset & 0x1fff;
    let fragment = match (offset, more_fragments) {
        (0, false) => Fragment::Whole,
        (0, true) => Fragment::First { id },
        _ => Fragment::Later { id },
    };
    let protocol = header[9];
    let src = IpAddr::V4(Ipv4Addr::new(
        header[12], header[13], header[14], header[15],
    ));
    let dst = IpAddr::V4(Ipv4Addr::new(
        header[16], header[17], header[18], header[19],
    ));
    upper_layer(src, dst, protocol, fragment, &ip[header_len..total_len])
}

fn read_ipv6(ip: &[u8], direction: Direction) -> Result<Reading, String> {
    let header = ip.get(..40).ok_or("shorter than an IPv6 header")?;
    if header[0] >> 4 != 6 {
        return Err(format!("IP version {} in an IPv6 frame", header[0] >> 4));
    }
    let payload_len = usize::from(u16::from_be_bytes([header[4], header[5]]));
    let payload = ip
        .get(40..40 + payload_len)
        .ok_or_else(|| format!("payload length {payload_len} beyond the frame"))?;
    let hop_limit = header[7];
    let address = |at: usize| {
        let mut octets = [0u8; 16];
        octets.copy_from_slice(&header[at..at + 16]);
        Ipv6Addr::from(octets)
    };
    let (src, dst) = (address(8), address(24));
    let mut next = header[6];
    let mut at = 0;
    let mut fragment = Fragment::Whole;
    loop {
        match next {
            0 | 43 | 60 => {
                let head = payload
                    .get(at..at + 2)
                    .ok_or("an extension header beyond the payload")?;
                let len = (usize::from(head[1]) + 1) * 8;
                if at + len > payload.len() {
                    return Err("an extension header beyond the payload".into());
                }
                next = head[0];
                at += len;
            }
            44 => {
                let head = payload
                    .get(at..at + 8)
                    .ok_or("a fragment header beyond the payload")?;
                let offset_flags = u16::from_be_bytes([head[2], head[3]]);
                let id = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
                next = head[0];
                at += 8;
                if offset_flags >> 3 != 0 {
                    fragment = Fragment::Later { id };
                    break;
                }
                if offset_flags & 1 != 0 {
                    fragment = Fragment::First { id };
                }
            }
            _ => break,
        }
    }
    let ip_packet = upper_layer(src.into(), dst.into(), next, fragment, &payload[at..])?;
    if let L4::Icmp { icmp_type, .. } = ip_packet.packet.l4
        && fragment == Fragment::Whole
        && is_link_control_type(icmp_type)
        && stays_on_link(dst, hop_limit, direction)
    {
        return Ok(Reading::LinkControl("IPv6 neighbour or listener discovery"));
    }
    Ok(Reading::Ip(ip_packet))
}

/// ICMPv6 types of MLD (130-132, 143) and of neighbour and router discovery (133-137).
fn is_link_control_type(icmp_type: u8) -> bool {
    matches!(icmp_type, 130..=137 | 143)
}

fn stays_on_link(dst: Ipv6Addr, hop_limit: u8, direction: Direction) -> bool {
    let link_local_unicast = dst.segments()[0] & 0xffc0 == 0xfe80;
    let link_local_multicast = dst.segments()[0] & 0xff0f == 0xff02;
    link_local_unicast
        || link_local_multicast
        || hop_limit <= 1
        || (direction == Direction::Ingress && hop_limit == 255)
}

/// The upper-layer header at the start of `payload`, which runs to the end of the IP packet.
fn upper_layer(
    src: IpAddr,
    dst: IpAddr,
    protocol: u8,
    fragment: Fragment,
    payload: &[u8],
) -> Result<IpPacket, String> {
    let family_icmp = if src.is_ipv4() { ICMP } else { ICMPV6 };
    let packet = |l4| Packet {
        src,
        dst,
        protocol,
        l4,
    };
    if let Fragment::Later { .. } = fragment {
        return Ok(IpPacket {
            packet: packet(L4::None),
            fragment,
            tcp_flags: None,
        });
    }
    let need = |len: usize, what: &str| {
        if payload.len() < len {
            Err(format!(
                "{} bytes of {what} header, {len} needed",
                payload.len()
            ))
        } else {
            Ok(())
        }
    };
    let ports = || L4::Ports {
        src: u16::from_be_bytes([payload[0], payload[1]]),
        dst: u16::from_be_bytes([payload[2], payload[3]]),
    };
    let (l4, tcp_flags) = match protocol {
        TCP => {
            need(20, "TCP")?;
            let data_offset = usize::from(payload[12] >> 4) * 4;
            if data_offset < 20 || data_offset > payload.len() {
                return Err(format!(
                    "TCP data offset of {data_offset} bytes in a {}-byte segment",
                    payload.len()
                ));
            }
            (ports(), Some(payload[13]))
        }
        UDP => {
            need(8, "UDP")?;
            (ports(), None)
        }
        SCTP => {
            need(12, "SCTP")?;
            (ports(), None)
        }
        p if p == family_icmp => {
            need(8, "ICMP")?;
            (
                L4::Icmp {
                    icmp_type: payload[0],
                    code: payload[1],
                },
                None,
            )
        }
        _ => (L4::None, None),
    };
    Ok(IpPacket {
        packet: packet(l4),
        fragment,
        tcp_flags,
    })
}

fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]))
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::packet::{
        Frame, IPPROTO_TCP, IPV6_DESTINATION_OPTIONS, IPV6_HOP_BY_HOP, TCP_SYN, arp_request,
    };

    fn v4(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
    }

    fn v6(last: u16) -> IpAddr {
        IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, last))
    }

    fn ip(reading: Reading) -> IpPacket {
        match reading {
            Reading::Ip(ip) => ip,
            other => panic!("not an IP packet: {other}"),
        }
    }

    #[test]
    fn reads_what_the_frame_builder_writes() {
        let syn = Frame::tcp(
            SocketAddr::new(v4(1), 40000),
            SocketAddr::new(v4(2), 80),
            TCP_SYN,
        )
        .ipv4_options(3)
        .build();
        let syn_read = ip(read(&syn, Direction::Egress));
        assert_eq!(
            syn_read.packet,
            Packet::new(v4(1), v4(2), TCP, (40000, 80), (0, 0))
        );
        assert_eq!(syn_read.tcp_flags, Some(TCP_SYN));
        assert_eq!(syn_read.fragment, Fragment::Whole);

        let chained = Frame::udp(SocketAddr::new(v6(1), 5), SocketAddr::new(v6(2), 53))
            .ipv6_extensions(&[IPV6_HOP_BY_HOP, IPV6_DESTINATION_OPTIONS])
            .fragment(9, 0, true)
            .build();
        let chained_read = ip(read(&chained, Direction::Egress));
        assert_eq!(
            chained_read.packet,
            Packet::new(v6(1), v6(2), UDP, (5, 53), (0, 0))
        );
        assert_eq!(chained_read.fragment, Fragment::First { id: 9 });

        let later = Frame::raw(v6(1), v6(2), IPPROTO_TCP, vec![1; 16])
            .fragment(9, 2, false)
            .build();
        assert_eq!(
            ip(read(&later, Direction::Egress)).fragment,
            Fragment::Later { id: 9 }
        );
        let arp = arp_request(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(read(&arp, Direction::Egress), Reading::LinkControl("ARP"));
    }

    #[test]
    fn truncated_headers_are_refused() {
        let syn = Frame::tcp(
            SocketAddr::new(v4(1), 1),
            SocketAddr::new(v4(2), 2),
            TCP_SYN,
        )
        .build();
        for cut in 0..syn.len() {
            let mut short = syn[..cut].to_vec();
            // Keep the IP header's word: a frame cut short of its total length.
            assert!(
                matches!(read(&short, Direction::Egress), Reading::Refused(_)),
                "cut at {cut}"
            );
            // And a packet whose total length says it ends there.
            if cut >= ETHERNET_LEN + 20 {
                let total = (cut - ETHERNET_LEN) as u16;
                short[ETHERNET_LEN + 2..ETHERNET_LEN + 4].copy_from_slice(&total.to_be_bytes());
                assert!(
                    matches!(read(&short, Direction::Egress), Reading::Refused(_)),
                    "total length {total}"
                );
            }
        }
    }

    #[test]
    fn neighbour_discovery_is_link_control_only_on_the_link() {
        let link_local: IpAddr = "fe80::1".parse().unwrap();
        let all_nodes: IpAddr = "ff02::1".parse().unwrap();
        let solicitation = |dst, hop_limit: u8| {
            let mut frame = Frame::icmp(link_local, dst, 135, 0, 0).build();
            frame[ETHERNET_LEN + 7] = hop_limit;
            frame
        };
        for dst in [link_local, all_nodes] {
            assert!(matches!(
                read(&solicitation(dst, 255), Direction::Egress),
                Reading::LinkControl(_)
            ));
        }
        // Towards a global address it could be routed on: policy decides.
        assert!(matches!(
            read(&solicitation(v6(2), 255), Direction::Egress),
            Reading::Ip(_)
        ));
        assert!(matches!(
            read(&solicitation(v6(2), 1), Direction::Egress),
            Reading::LinkControl(_)
        ));
        assert!(matches!(
            read(&solicitation(v6(2), 255), Direction::Ingress),
            Reading::LinkControl(_)
        ));
        assert!(matches!(
            read(&solicitation(v6(2), 254), Direction::Ingress),
            Reading::Ip(_)
        ));
    }
}
