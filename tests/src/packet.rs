//! Crafted packets for running programs with BPF_PROG_TEST_RUN.

use std::net::Ipv4Addr;

const ETH_P_IPV4: u16 = 0x0800;
const IPPROTO_TCP: u8 = 6;
const TCP_SYN: u8 = 0x02;

/// An Ethernet + IPv4 + TCP SYN frame without payload, with a valid IPv4 header checksum
/// (the TCP checksum is left zero: nothing on the TC path checks it).
pub fn ipv4_tcp_syn(src: Ipv4Addr, dst: Ipv4Addr, src_port: u16, dst_port: u16) -> Vec<u8> {
    let mut frame = Vec::with_capacity(54);

    // Ethernet: locally administered MACs, then the IPv4 ethertype.
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    frame.extend_from_slice(&ETH_P_IPV4.to_be_bytes());

    // IPv4: version 4, 5 words of header, total length 40, DF, TTL 64.
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&40u16.to_be_bytes());
    ip[6] = 0x40;
    ip[8] = 64;
    ip[9] = IPPROTO_TCP;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let checksum = internet_checksum(&ip);
    ip[10..12].copy_from_slice(&checksum.to_be_bytes());
    frame.extend_from_slice(&ip);

    // TCP: ports, sequence 1, data offset 5 words, SYN, window 64240.
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&src_port.to_be_bytes());
    tcp[2..4].copy_from_slice(&dst_port.to_be_bytes());
    tcp[4..8].copy_from_slice(&1u32.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = TCP_SYN;
    tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
    frame.extend_from_slice(&tcp);

    frame
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
    }
}
