//! Damage for the packet fuzzer (`tests/tests/bpf_packet_fuzz.rs`): a valid frame mutated
//! the ways that trip parsers up. Cut short at any offset; bits flipped and bytes set to
//! values that mean something in some header; IPv4's IHL, total length, fragment fields and
//! options; IPv6's payload length and extension headers (inserted, of any type and length,
//! fragment headers included); the protocol or next header; TCP's data offset; the
//! EtherType; bytes appended. Every mutation is recorded, so a failure says what was done.

use std::fmt;

use crate::packet::{ETH_HLEN, ETH_P_IPV4, ETH_P_IPV6};

/// Byte values that mean something in some header: IP versions and IHLs, protocol and
/// next-header numbers, lengths at the edges.
const INTERESTING: [u8; 22] = [
    0, 1, 2, 4, 5, 6, 8, 15, 17, 43, 44, 50, 51, 58, 59, 60, 0x45, 0x4f, 0x60, 0x80, 132, 0xff,
];

/// One thing done to a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mutation {
    Truncate(usize),
    FlipBit { at: usize, bit: u8 },
    SetByte { at: usize, value: u8 },
    EtherType(u16),
    Ipv4Ihl(u8),
    Ipv4TotalLength(u16),
    Ipv4Fragment { more: bool, offset: u16 },
    Ipv4Options(Vec<u8>),
    Ipv6PayloadLength(u16),
    Ipv6Extension { kind: u8, units: u8 },
    Ipv6Fragment { offset: u16, more: bool, id: u32 },
    Protocol(u8),
    TcpDataOffset(u8),
    HopLimit(u8),
    Append(usize),
}

impl fmt::Display for Mutation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

/// Where the headers of the frame being mutated start, as far as the mutator knows (a
/// mutation may move them; later mutations then hit other bytes, which is fine).
#[derive(Clone, Copy, Debug)]
struct Layout {
    ethertype: u16,
    /// The upper-layer header's offset in the frame, as built.
    l4: usize,
}

fn layout(frame: &[u8]) -> Layout {
    let ethertype = frame
        .get(12..14)
        .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
    let l4 = match ethertype {
        ETH_P_IPV4 => frame
            .get(ETH_HLEN)
            .map_or(ETH_HLEN + 20, |v| ETH_HLEN + usize::from(v & 0x0f) * 4),
        _ => ETH_HLEN + 40,
    };
    Layout { ethertype, l4 }
}

/// The longest frame [`mutate`] makes. BPF_PROG_TEST_RUN copies a frame into one page
/// together with an skb's headroom and tailroom, so it refuses frames longer than about
/// 3.7 KB (a 3,730-byte one was refused on x86-64, Linux 6.18); a frame of the usual
/// 1,500-byte MTU fits with room for long extension headers.
pub const MAX_FRAME_LEN: usize = 3072;

/// `count` (1 to 3) random mutations of `frame`, applied in turn; `random` gives 64 random
/// bits a call. A mutation that would grow the frame past [`MAX_FRAME_LEN`] is left out.
pub fn mutate(frame: &[u8], random: &mut dyn FnMut() -> u64) -> (Vec<u8>, Vec<Mutation>) {
    let mut out = frame.to_vec();
    let count = 1 + random() % 3;
    let mut done = Vec::new();
    for _ in 0..count {
        let mutation = pick(&out, random);
        let mut mutated = out.clone();
        apply(&mut mutated, &mutation);
        if mutated.len() <= MAX_FRAME_LEN {
            out = mutated;
            done.push(mutation);
        }
    }
    (out, done)
}

/// Every prefix of `frame` shorter than it.
pub fn truncations(frame: &[u8]) -> impl Iterator<Item = (Vec<u8>, Mutation)> + '_ {
    (0..frame.len()).map(|len| (frame[..len].to_vec(), Mutation::Truncate(len)))
}

fn pick(frame: &[u8], random: &mut dyn FnMut() -> u64) -> Mutation {
    let layout = layout(frame);
    let len = frame.len().max(1);
    let mut below = |n: u64| random() % n.max(1);
    // Headers are where the parser decides; most damage goes there.
    let header_span = (layout.l4 + 24).min(len) as u64;
    let interesting = |r: u64| INTERESTING[(r % INTERESTING.len() as u64) as usize];
    let v4 = layout.ethertype == ETH_P_IPV4;
    let v6 = layout.ethertype == ETH_P_IPV6;
    match below(15) {
        0 => Mutation::Truncate(below(len as u64) as usize),
        1 | 2 => Mutation::FlipBit {
            at: below(header_span) as usize,
            bit: below(8) as u8,
        },
        3 => Mutation::SetByte {
            at: below(header_span) as usize,
            value: interesting(below(1 << 16)),
        },
        4 => Mutation::EtherType(
            [ETH_P_IPV4, ETH_P_IPV6, 0x0806, 0x8100, 0x88cc, 0][below(6) as usize],
        ),
        5 if v4 => Mutation::Ipv4Ihl(below(16) as u8),
        5 | 6 if v6 => Mutation::Ipv6PayloadLength(length_near(
            frame.len().saturating_sub(ETH_HLEN + 40),
            &mut below,
        )),
        6 if v4 => Mutation::Ipv4TotalLength(length_near(
            frame.len().saturating_sub(ETH_HLEN),
            &mut below,
        )),
        7 if v4 => Mutation::Ipv4Fragment {
            more: below(2) == 0,
            offset: [0, 1, 2, 3, 0x1fff][below(5) as usize],
        },
        8 if v4 => Mutation::Ipv4Options(
            (0..below(12) * 4)
                .map(|_| interesting(below(1 << 16)))
                .collect(),
        ),
        7 | 8 if v6 => Mutation::Ipv6Extension {
            kind: [0, 43, 60, 60, 51, 50, 59, 135, 44][below(9) as usize],
            units: [0, 0, 1, 2, 31, 150][below(6) as usize],
        },
        9 if v6 => Mutation::Ipv6Fragment {
            offset: [0, 0, 1, 2, 0x1fff][below(5) as usize],
            more: below(2) == 0,
            id: [0, 1, 7][below(3) as usize],
        },
        10 => Mutation::Protocol(interesting(below(1 << 16))),
        11 => Mutation::TcpDataOffset(below(16) as u8),
        12 => Mutation::HopLimit([0, 1, 2, 64, 254, 255][below(6) as usize]),
        13 => Mutation::Append(1 + below(64) as usize),
        _ => Mutation::SetByte {
            at: below(len as u64) as usize,
            value: below(256) as u8,
        },
    }
}

/// A length field's value near the right one, or at an edge.
fn length_near(right: usize, below: &mut dyn FnMut(u64) -> u64) -> u16 {
    let right = right as i64;
    let value = match below(6) {
        0 => 0,
        1 => right - 1,
        2 => right + 1,
        3 => right - 8,
        4 => 0xffff,
        _ => below(0x1_0000) as i64,
    };
    value.clamp(0, 0xffff) as u16
}

/// Applies `mutation` to `frame`; one that does not fit the frame does what it can.
pub fn apply(frame: &mut Vec<u8>, mutation: &Mutation) {
    let layout = layout(frame);
    let set = |frame: &mut Vec<u8>, at: usize, bytes: &[u8]| {
        for (i, &byte) in bytes.iter().enumerate() {
            if let Some(slot) = frame.get_mut(at + i) {
                *slot = byte;
            }
        }
    };
    match mutation {
        Mutation::Truncate(len) => frame.truncate(*len),
        Mutation::FlipBit { at, bit } => {
            if let Some(byte) = frame.get_mut(*at) {
                *byte ^= 1 << bit;
            }
        }
        Mutation::SetByte { at, value } => set(frame, *at, &[*value]),
        Mutation::EtherType(ethertype) => set(frame, 12, &ethertype.to_be_bytes()),
        Mutation::Ipv4Ihl(ihl) => {
            if let Some(byte) = frame.get_mut(ETH_HLEN) {
                *byte = (*byte & 0xf0) | (ihl & 0x0f);
            }
        }
        Mutation::Ipv4TotalLength(len) => set(frame, ETH_HLEN + 2, &len.to_be_bytes()),
        Mutation::Ipv4Fragment { more, offset } => {
            let field = (offset & 0x1fff) | if *more { 0x2000 } else { 0 };
            set(frame, ETH_HLEN + 6, &field.to_be_bytes());
        }
        Mutation::Ipv4Options(options) => {
            let at = (ETH_HLEN + 20).min(frame.len());
            frame.splice(at..at, options.iter().copied());
            if let Some(byte) = frame.get(ETH_HLEN).copied() {
                let words = (usize::from(byte & 0x0f) + options.len() / 4).min(15) as u8;
                frame[ETH_HLEN] = (byte & 0xf0) | words;
            }
            let total = (frame.len().saturating_sub(ETH_HLEN)).min(0xffff) as u16;
            set(frame, ETH_HLEN + 2, &total.to_be_bytes());
        }
        Mutation::Ipv6PayloadLength(len) => set(frame, ETH_HLEN + 4, &len.to_be_bytes()),
        Mutation::Ipv6Extension { kind, units } => {
            let size = (usize::from(*units) + 1) * 8;
            let mut header = vec![0u8; size];
            header[0] = frame.get(ETH_HLEN + 6).copied().unwrap_or(59);
            header[1] = *units;
            if *kind == 44 {
                header.truncate(8);
                header[1] = 0;
            } else if size >= 8 {
                // PadN over the rest of the options area.
                header[2] = 1;
                header[3] = (size - 4) as u8;
            }
            insert_ipv6_header(frame, *kind, &header);
        }
        Mutation::Ipv6Fragment { offset, more, id } => {
            let mut header = vec![0u8; 8];
            header[0] = frame.get(ETH_HLEN + 6).copied().unwrap_or(59);
            let field = (offset << 3) | u16::from(*more);
            header[2..4].copy_from_slice(&field.to_be_bytes());
            header[4..8].copy_from_slice(&id.to_be_bytes());
            insert_ipv6_header(frame, 44, &header);
        }
        Mutation::Protocol(protocol) => {
            let at = if layout.ethertype == ETH_P_IPV4 {
                ETH_HLEN + 9
            } else {
                ETH_HLEN + 6
            };
            set(frame, at, &[*protocol]);
        }
        Mutation::TcpDataOffset(words) => {
            if let Some(byte) = frame.get_mut(layout.l4 + 12) {
                *byte = (words << 4) | (*byte & 0x0f);
            }
        }
        Mutation::HopLimit(limit) => {
            let at = if layout.ethertype == ETH_P_IPV4 {
                ETH_HLEN + 8
            } else {
                ETH_HLEN + 7
            };
            set(frame, at, &[*limit]);
        }
        Mutation::Append(count) => {
            let fill = (frame.len() as u8).wrapping_mul(31);
            frame.extend((0..*count).map(|i| fill.wrapping_add(i as u8)));
        }
    }
}

/// Puts `header` first in the IPv6 extension chain, as header type `kind`, and grows the
/// payload length by its size.
fn insert_ipv6_header(frame: &mut Vec<u8>, kind: u8, header: &[u8]) {
    let at = ETH_HLEN + 40;
    if frame.len() < at {
        return;
    }
    frame.splice(at..at, header.iter().copied());
    frame[ETH_HLEN + 6] = kind;
    let payload = u16::from_be_bytes([frame[ETH_HLEN + 4], frame[ETH_HLEN + 5]]);
    let grown = payload.saturating_add(header.len() as u16);
    frame[ETH_HLEN + 4..ETH_HLEN + 6].copy_from_slice(&grown.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, SocketAddr};

    use super::*;
    use crate::packet::{Frame, TCP_SYN};

    #[test]
    fn inserted_extension_headers_keep_the_chain_readable() {
        let src: IpAddr = "fd00::1".parse().unwrap();
        let dst: IpAddr = "fd00::2".parse().unwrap();
        let mut frame =
            Frame::tcp(SocketAddr::new(src, 1), SocketAddr::new(dst, 80), TCP_SYN).build();
        apply(&mut frame, &Mutation::Ipv6Extension { kind: 60, units: 1 });
        apply(
            &mut frame,
            &Mutation::Ipv6Fragment {
                offset: 0,
                more: true,
                id: 7,
            },
        );
        assert_eq!(frame[ETH_HLEN + 6], 44);
        assert_eq!(frame[ETH_HLEN + 40], 60);
        assert_eq!(frame[ETH_HLEN + 48], 6);
        assert_eq!(
            usize::from(u16::from_be_bytes([
                frame[ETH_HLEN + 4],
                frame[ETH_HLEN + 5]
            ])),
            frame.len() - ETH_HLEN - 40
        );
    }

    /// Found by `cargo xtask fuzz` (seed 1796306880712347142): three long IPv6 extension
    /// headers made a 3,730-byte frame, which BPF_PROG_TEST_RUN refused to run.
    #[test]
    fn mutated_frames_stay_short_enough_for_the_test_runner() {
        let src: IpAddr = "fd00::1".parse().unwrap();
        let dst: IpAddr = "fd00::2".parse().unwrap();
        // A UDP header and its data filling a 1,500-byte IPv6 packet.
        let mtu_sized = Frame::raw(src, dst, 17, vec![0; 1500 - 40]).build();
        let mut seed = 7u64;
        let mut random = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            seed >> 11
        };
        for _ in 0..100_000 {
            let (mutated, done) = mutate(&mtu_sized, &mut random);
            assert!(
                mutated.len() <= MAX_FRAME_LEN,
                "{} bytes after {done:?}",
                mutated.len()
            );
        }
    }

    #[test]
    fn mutations_are_reproducible() {
        let frame = Frame::udp(
            "10.0.0.1:1".parse().unwrap(),
            "10.0.0.2:53".parse().unwrap(),
        )
        .build();
        let mut seed = 1u64;
        let mut random = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            seed >> 11
        };
        for _ in 0..1000 {
            let (mutated, done) = mutate(&frame, &mut random);
            let mut again = frame.clone();
            for mutation in &done {
                apply(&mut again, mutation);
            }
            assert_eq!(again, mutated, "{done:?}");
        }
    }
}
