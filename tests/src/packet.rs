//! Crafted frames for running programs with BPF_PROG_TEST_RUN.
//!
//! [`Frame`] builds Ethernet + IPv4/IPv6 (with options, extension headers, fragments) + L4;
//! tests that need broken frames build a good one and damage it (`Frame::build` returns plain
//! bytes, and the `*_OFFSET` constants say where the headers are).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

pub const ETH_HLEN: usize = 14;
/// Where the IP header starts in a frame.
pub const IP_OFFSET: usize = ETH_HLEN;

pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_VLAN: u16 = 0x8100;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_GRE: u8 = 47;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_SCTP: u8 = 132;

pub const IPV6_HOP_BY_HOP: u8 = 0;
pub const IPV6_ROUTING: u8 = 43;
pub const IPV6_FRAGMENT: u8 = 44;
pub const IPV6_DESTINATION_OPTIONS: u8 = 60;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// A fragment header's worth: `offset` in 8-byte units.
#[derive(Clone, Copy, Debug)]
pub struct Fragment {
    pub id: u32,
    pub offset: u16,
    pub more: bool,
}

/// An Ethernet frame carrying one IP packet.
#[derive(Clone, Debug)]
pub struct Frame {
    src: IpAddr,
    dst: IpAddr,
    protocol: u8,
    /// The L4 header and payload, as they go on the wire.
    l4: Vec<u8>,
    ipv4_option_words: usize,
    ipv6_extensions: Vec<u8>,
    fragment: Option<Fragment>,
}

impl Frame {
    /// `src` and `dst` must be of one family.
    pub fn raw(src: IpAddr, dst: IpAddr, protocol: u8, l4: Vec<u8>) -> Self {
        assert_eq!(
            src.is_ipv4(),
            dst.is_ipv4(),
            "{src} and {dst} are of different families"
        );
        Self {
            src,
            dst,
            protocol,
            l4,
            ipv4_option_words: 0,
            ipv6_extensions: Vec::new(),
            fragment: None,
        }
    }

    /// A TCP segment without payload; `flags` are `TCP_*` bits.
    pub fn tcp(src: SocketAddr, dst: SocketAddr, flags: u8) -> Self {
        let mut tcp = vec![0u8; 20];
        tcp[0..2].copy_from_slice(&src.port().to_be_bytes());
        tcp[2..4].copy_from_slice(&dst.port().to_be_bytes());
        tcp[4..8].copy_from_slice(&1u32.to_be_bytes());
        tcp[12] = 5 << 4;
        tcp[13] = flags;
        tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
        Self::raw(src.ip(), dst.ip(), IPPROTO_TCP, tcp)
    }

    /// A UDP datagram with a few bytes of payload.
    pub fn udp(src: SocketAddr, dst: SocketAddr) -> Self {
        let payload = b"palisade";
        let mut udp = vec![0u8; 8];
        udp[0..2].copy_from_slice(&src.port().to_be_bytes());
        udp[2..4].copy_from_slice(&dst.port().to_be_bytes());
        udp[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        udp.extend_from_slice(payload);
        Self::raw(src.ip(), dst.ip(), IPPROTO_UDP, udp)
    }

    /// An SCTP common header (and no chunk).
    pub fn sctp(src: SocketAddr, dst: SocketAddr) -> Self {
        let mut sctp = vec![0u8; 12];
        sctp[0..2].copy_from_slice(&src.port().to_be_bytes());
        sctp[2..4].copy_from_slice(&dst.port().to_be_bytes());
        Self::raw(src.ip(), dst.ip(), IPPROTO_SCTP, sctp)
    }

    /// An ICMP message of the addresses' family (ICMPv6 for IPv6): type, code, and the
    /// identifier field echo messages have (sequence 1).
    pub fn icmp(src: IpAddr, dst: IpAddr, icmp_type: u8, code: u8, id: u16) -> Self {
        let mut icmp = vec![0u8; 8];
        icmp[0] = icmp_type;
        icmp[1] = code;
        icmp[4..6].copy_from_slice(&id.to_be_bytes());
        icmp[6..8].copy_from_slice(&1u16.to_be_bytes());
        let protocol = if src.is_ipv4() {
            IPPROTO_ICMP
        } else {
            IPPROTO_ICMPV6
        };
        Self::raw(src, dst, protocol, icmp)
    }

    /// A new flow's first packet of `protocol` with table keys `(a, b)`, as the policy sees
    /// them: ports for TCP (a SYN), UDP and SCTP, type and code (low bytes) for the family's
    /// ICMP (echo identifier `a ^ b`), eight zero bytes of payload for anything else.
    pub fn for_keys(src: IpAddr, dst: IpAddr, protocol: u8, a: u16, b: u16) -> Self {
        let icmp = if src.is_ipv4() {
            IPPROTO_ICMP
        } else {
            IPPROTO_ICMPV6
        };
        let (s, d) = (SocketAddr::new(src, a), SocketAddr::new(dst, b));
        match protocol {
            IPPROTO_TCP => Self::tcp(s, d, TCP_SYN),
            IPPROTO_UDP => Self::udp(s, d),
            IPPROTO_SCTP => Self::sctp(s, d),
            p if p == icmp => Self::icmp(src, dst, a as u8, b as u8, a ^ b),
            _ => Self::raw(src, dst, protocol, vec![0u8; 8]),
        }
    }

    /// IPv4 only: `words` 4-byte words of options (NOPs), so IHL is 5 + `words`.
    pub fn ipv4_options(mut self, words: usize) -> Self {
        assert!(self.src.is_ipv4() && words <= 10);
        self.ipv4_option_words = words;
        self
    }

    /// IPv6 only: 8-byte extension headers of these types, in order, before the fragment
    /// header (if any) and the L4 header.
    pub fn ipv6_extensions(mut self, types: &[u8]) -> Self {
        assert!(self.src.is_ipv6());
        self.ipv6_extensions = types.to_vec();
        self
    }

    /// Makes it a fragment: IPv4 flags and offset, or an IPv6 fragment header. For a later
    /// fragment (`offset > 0`), build the frame with [`Frame::raw`] and payload bytes: it
    /// has no L4 header.
    pub fn fragment(mut self, id: u32, offset: u16, more: bool) -> Self {
        self.fragment = Some(Fragment { id, offset, more });
        self
    }

    pub fn build(&self) -> Vec<u8> {
        match (self.src, self.dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                ethernet(ETH_P_IPV4, &self.ipv4_packet(src.octets(), dst.octets()))
            }
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                ethernet(ETH_P_IPV6, &self.ipv6_packet(src.octets(), dst.octets()))
            }
            _ => unreachable!("checked in Frame::raw"),
        }
    }

    fn ipv4_packet(&self, src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        let header_len = 20 + 4 * self.ipv4_option_words;
        let mut ip = vec![0u8; header_len];
        ip[0] = 0x40 | (header_len / 4) as u8;
        ip[2..4].copy_from_slice(&((header_len + self.l4.len()) as u16).to_be_bytes());
        let mut flags_offset = 0x4000u16; // DF
        if let Some(fragment) = self.fragment {
            ip[4..6].copy_from_slice(&(fragment.id as u16).to_be_bytes());
            flags_offset = fragment.offset & 0x1fff;
            if fragment.more {
                flags_offset |= 0x2000;
            }
        }
        ip[6..8].copy_from_slice(&flags_offset.to_be_bytes());
        ip[8] = 64;
        ip[9] = self.protocol;
        ip[12..16].copy_from_slice(&src);
        ip[16..20].copy_from_slice(&dst);
        for option in &mut ip[20..] {
            *option = 1; // NOP
        }
        let checksum = internet_checksum(&ip);
        ip[10..12].copy_from_slice(&checksum.to_be_bytes());
        ip.extend_from_slice(&self.l4);
        ip
    }

    fn ipv6_packet(&self, src: [u8; 16], dst: [u8; 16]) -> Vec<u8> {
        // Each extension header names the one after it.
        let mut chain: Vec<u8> = self.ipv6_extensions.clone();
        if self.fragment.is_some() {
            chain.push(IPV6_FRAGMENT);
        }
        let mut extensions = Vec::new();
        for (i, &kind) in chain.iter().enumerate() {
            let next = chain.get(i + 1).copied().unwrap_or(self.protocol);
            let mut header = [0u8; 8];
            header[0] = next;
            if kind == IPV6_FRAGMENT {
                let fragment = self.fragment.unwrap_or(Fragment {
                    id: 0,
                    offset: 0,
                    more: false,
                });
                let offset_flags = (fragment.offset << 3) | u16::from(fragment.more);
                header[2..4].copy_from_slice(&offset_flags.to_be_bytes());
                header[4..8].copy_from_slice(&fragment.id.to_be_bytes());
            } else {
                header[1] = 0; // 8 bytes; options area: PadN of 4 bytes after 2 bytes
                header[2] = 1;
                header[3] = 4;
            }
            extensions.extend_from_slice(&header);
        }
        let first = chain.first().copied().unwrap_or(self.protocol);
        let payload_len = extensions.len() + self.l4.len();
        let mut ip = vec![0u8; 40];
        ip[0] = 0x60;
        ip[4..6].copy_from_slice(&(payload_len as u16).to_be_bytes());
        ip[6] = first;
        ip[7] = 64;
        ip[8..24].copy_from_slice(&src);
        ip[24..40].copy_from_slice(&dst);
        ip.extend_from_slice(&extensions);
        ip.extend_from_slice(&self.l4);
        ip
    }
}

/// An Ethernet frame of `ethertype` around `payload`, with locally administered MACs.
pub fn ethernet(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(ETH_HLEN + payload.len());
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// An ARP request for `target` from `sender`.
pub fn arp_request(sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut arp = vec![0u8; 28];
    arp[0..2].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    arp[2..4].copy_from_slice(&ETH_P_IPV4.to_be_bytes());
    arp[4] = 6;
    arp[5] = 4;
    arp[6..8].copy_from_slice(&1u16.to_be_bytes()); // request
    arp[8..14].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    arp[14..18].copy_from_slice(&sender.octets());
    arp[24..28].copy_from_slice(&target.octets());
    ethernet(ETH_P_ARP, &arp)
}

/// An Ethernet + IPv4 + TCP SYN frame without payload, with a valid IPv4 header checksum
/// (the TCP checksum is left zero: nothing on the TC path checks it).
pub fn ipv4_tcp_syn(src: Ipv4Addr, dst: Ipv4Addr, src_port: u16, dst_port: u16) -> Vec<u8> {
    Frame::tcp(
        SocketAddr::new(src.into(), src_port),
        SocketAddr::new(dst.into(), dst_port),
        TCP_SYN,
    )
    .build()
}

/// RFC 1071 one's-complement sum, as the IPv4 header checksum uses.
fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;

    #[test]
    fn frame_has_the_expected_layout_and_checksum() {
        let frame = ipv4_tcp_syn(
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            40000,
            80,
        );
        assert_eq!(frame.len(), 14 + 20 + 20);
        assert_eq!(&frame[12..14], &[0x08, 0x00]);
        // A header with a correct checksum sums to zero.
        assert_eq!(internet_checksum(&frame[14..34]), 0);
        assert_eq!(&frame[36..38], &80u16.to_be_bytes());
        // DF, no fragment.
        assert_eq!(&frame[20..22], &[0x40, 0x00]);
    }

    #[test]
    fn ipv4_options_and_fragments() {
        let frame = Frame::raw(
            Ipv4Addr::new(10, 0, 0, 1).into(),
            Ipv4Addr::new(10, 0, 0, 2).into(),
            IPPROTO_UDP,
            vec![0; 16],
        )
        .ipv4_options(2)
        .fragment(0x1234, 3, true)
        .build();
        assert_eq!(frame[14], 0x47);
        assert_eq!(&frame[16..18], &(28u16 + 16).to_be_bytes());
        assert_eq!(&frame[18..20], &0x1234u16.to_be_bytes());
        assert_eq!(&frame[20..22], &(0x2000u16 | 3).to_be_bytes());
        assert_eq!(internet_checksum(&frame[14..42]), 0);
    }

    #[test]
    fn ipv6_extension_chain_ends_in_the_protocol() {
        let src = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
        let dst = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
        let frame = Frame::tcp(
            SocketAddr::new(src.into(), 1000),
            SocketAddr::new(dst.into(), 80),
            TCP_SYN,
        )
        .ipv6_extensions(&[IPV6_HOP_BY_HOP, IPV6_DESTINATION_OPTIONS])
        .fragment(7, 0, true)
        .build();
        assert_eq!(&frame[12..14], &ETH_P_IPV6.to_be_bytes());
        assert_eq!(frame[14 + 6], IPV6_HOP_BY_HOP);
        assert_eq!(frame[54], IPV6_DESTINATION_OPTIONS);
        assert_eq!(frame[62], IPV6_FRAGMENT);
        assert_eq!(frame[70], IPPROTO_TCP);
        assert_eq!(&frame[72..74], &1u16.to_be_bytes()); // offset 0, M
        assert_eq!(&frame[74..78], &7u32.to_be_bytes());
        assert_eq!(&frame[78..80], &1000u16.to_be_bytes());
        assert_eq!(frame.len(), 14 + 40 + 24 + 20);
    }
}
