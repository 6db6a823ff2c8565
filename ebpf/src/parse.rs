//! From a frame to the fields policy and conntrack look at, or the reason to drop it.
//!
//! Every read is bounds-checked (`load`: the linear packet data when the header is there,
//! `bpf_skb_load_bytes` otherwise), and every header is also checked against the length its
//! IP header declares: a frame that cannot be parsed is dropped, never passed unchecked.
//!
//! The types are plain structs and field-less enums rather than enums with data: every byte
//! of them is always written, so the verifier never sees a copy of uninitialised stack.

use aya_ebpf::programs::TcContext;
use palisade_common::{
    Addr, DIR_INGRESS, DROP_MALFORMED, DROP_UNKNOWN_ETHERTYPE, FAMILY_V4, FAMILY_V6,
};

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;
pub const PROTO_SCTP: u8 = 132;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

const ETH_HLEN: usize = 14;
const ETHERTYPE_OFFSET: usize = 12;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86dd;

const IPV4_MIN_HLEN: usize = 20;
const IPV4_MORE_FRAGMENTS: u16 = 0x2000;
const IPV4_OFFSET_MASK: u16 = 0x1fff;

const IPV6_HLEN: usize = 40;
/// The hop limit neighbour discovery is sent with; a packet that still has it crossed no
/// router.
const HOP_LIMIT_UNFORWARDED: u8 = 255;
const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_DESTINATION_OPTIONS: u8 = 60;
/// Every extension header is a multiple of 8 bytes, at least 8.
const IPV6_EXTENSION_UNIT: usize = 8;
const IPV6_FRAGMENT_OFFSET_MASK: u16 = 0xfff8;
const IPV6_MORE_FRAGMENTS: u16 = 0x0001;
/// More extension headers than this before the upper-layer header: malformed. Real traffic
/// has one or two; the bound keeps the walk a short, verifiable loop.
pub const MAX_IPV6_EXTENSION_HEADERS: usize = 6;

const TCP_MIN_HLEN: usize = 20;
const UDP_HLEN: usize = 8;
const SCTP_COMMON_HLEN: usize = 12;
/// Type, code, checksum and four bytes that every ICMP message has (the echo identifier and
/// sequence number for echo messages).
const ICMP_HLEN: usize = 8;

/// ICMPv6 link control that passes like ARP, as Felix lets it: multicast listener query,
/// report and done (MLD, RFC 2710: 130-132), router solicitation .. redirect (RFC 4861:
/// 133-137), and MLDv2 reports (RFC 3810: 143). A workload's stack sends these on its own
/// (e.g. MLD reports for its solicited-node groups) to link-scoped addresses, MLD also
/// with hop limit 1; the host sends neighbour discovery to the workload's own (global)
/// address too: its unicast NUD probes, and advertisements answering solicitations the
/// workload sent from that address.
const ND_FIRST_TYPE: u8 = 130;
const ND_LAST_TYPE: u8 = 137;
const MLDV2_REPORT: u8 = 143;

/// Whether an IP packet is a fragment, and which. Only the first fragment carries the L4
/// header.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum FragmentKind {
    Whole,
    First,
    Later,
}

#[derive(Clone, Copy)]
pub struct Fragment {
    pub kind: FragmentKind,
    /// The datagram's identification (IPv4's 16 bits widened); 0 when whole.
    pub id: u32,
}

impl Fragment {
    const WHOLE: Self = Self {
        kind: FragmentKind::Whole,
        id: 0,
    };
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum L4Kind {
    /// A protocol whose header is not read, or a later fragment (it has none).
    Opaque,
    /// TCP, UDP or SCTP: `a` and `b` are the source and destination ports.
    Ports,
    /// The family's ICMP: `a` and `b` are the type and code; `echo_id` is meaningful for
    /// echo requests and replies only.
    Icmp,
}

/// The upper-layer header, as far as palisade reads it.
#[derive(Clone, Copy)]
pub struct L4 {
    pub kind: L4Kind,
    pub a: u16,
    pub b: u16,
    pub echo_id: u16,
}

impl L4 {
    const OPAQUE: Self = Self {
        kind: L4Kind::Opaque,
        a: 0,
        b: 0,
        echo_id: 0,
    };
}

/// An IP packet's fields.
#[derive(Clone, Copy)]
pub struct Packet {
    pub family: u8,
    pub protocol: u8,
    pub tcp_flags: u8,
    pub has_ip_options: bool,
    pub fragment: Fragment,
    pub l4: L4,
    pub src: Addr,
    pub dst: Addr,
}

impl Packet {
    /// Before parsing.
    pub const NONE: Self = Self {
        family: 0,
        protocol: 0,
        tcp_flags: 0,
        has_ip_options: false,
        fragment: Fragment::WHOLE,
        l4: L4::OPAQUE,
        src: [0; 16],
        dst: [0; 16],
    };

    /// The TCP/UDP/SCTP ports or the ICMP type and code, as events report them.
    #[inline(always)]
    pub fn l4_keys(&self) -> (u16, u16) {
        (self.l4.a, self.l4.b)
    }
}

/// [`parse`]'s answer for an IP packet (the `Packet` is filled in).
pub const PARSED_IP: u32 = u32::MAX;
/// [`parse`]'s answer for ARP, or IPv6 neighbour/router discovery: passed without policy,
/// since the link cannot work without it and it never crosses a router.
pub const PARSED_ARP_OR_ND: u32 = u32::MAX - 1;

/// The IPv4 header without options; bytes only (alignment 1), so that it may be referenced
/// where it is in the packet (`forward` writes its TTL in place).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Ipv4Header {
    pub version_ihl: u8,
    pub tos: u8,
    pub total_length: [u8; 2],
    pub id: [u8; 2],
    pub flags_fragment_offset: [u8; 2],
    pub ttl: u8,
    pub protocol: u8,
    pub checksum: [u8; 2],
    pub src: [u8; 4],
    pub dst: [u8; 4],
}

/// The IPv6 header up to the addresses, which are read into the `Packet` on their own.
#[repr(C)]
#[derive(Clone, Copy)]
struct Ipv6Fixed {
    version_class_flow: [u8; 4],
    payload_length: [u8; 2],
    next_header: u8,
    hop_limit: u8,
}

pub const IPV6_SRC_OFFSET: usize = 8;
pub const IPV6_DST_OFFSET: usize = 24;

/// The TCP header up to the flags.
#[repr(C)]
#[derive(Clone, Copy)]
struct TcpHead {
    ports: [u8; 4],
    seq: [u8; 4],
    ack: [u8; 4],
    data_offset: u8,
    flags: u8,
}

/// Parses the frame, travelling in `direction` (`DIR_INGRESS`: to the workload), into
/// `packet`; returns [`PARSED_IP`] (then `packet` is filled in), [`PARSED_ARP_OR_ND`], or
/// the `DROP_*` to drop the frame for.
///
/// Inlined: a call of a BPF function and its return cost some 5 ns per packet on kernels
/// that guard every return (SRSO's safe RET), and the stack has room for its headers. It
/// writes into the caller's `packet` and answers with a number, which a BPF function of
/// its own would need as well (its signature goes into the object's BTF, which the kernel
/// rejects for Rust enums with data).
#[inline(always)]
pub fn parse(ctx: &TcContext, direction: u8, packet: &mut Packet) -> u32 {
    match parse_ethernet(ctx, direction == DIR_INGRESS, packet) {
        Ok(answer) => answer,
        Err(reason) => reason,
    }
}

#[inline(always)]
fn parse_ethernet(ctx: &TcContext, to_workload: bool, packet: &mut Packet) -> Result<u32, u32> {
    let ethertype = u16::from_be_bytes(load::<[u8; 2]>(ctx, ETHERTYPE_OFFSET)?);
    match ethertype {
        ETH_P_IP => parse_ipv4(ctx, packet).map(|()| PARSED_IP),
        ETH_P_IPV6 => {
            let stays_on_link = parse_ipv6(ctx, to_workload, packet)?;
            Ok(if stays_on_link && is_neighbour_discovery(packet) {
                PARSED_ARP_OR_ND
            } else {
                PARSED_IP
            })
        }
        ETH_P_ARP => Ok(PARSED_ARP_OR_ND),
        // VLAN tags included: workloads' veths carry untagged frames.
        _ => Err(DROP_UNKNOWN_ETHERTYPE),
    }
}

#[inline(always)]
fn parse_ipv4(ctx: &TcContext, packet: &mut Packet) -> Result<(), u32> {
    let header: Ipv4Header = load(ctx, ETH_HLEN)?;
    if header.version_ihl >> 4 != 4 {
        return Err(DROP_MALFORMED);
    }
    let header_len = usize::from(header.version_ihl & 0x0f) * 4;
    let total_len = usize::from(u16::from_be_bytes(header.total_length));
    if header_len < IPV4_MIN_HLEN
        || total_len < header_len
        || ETH_HLEN + total_len > ctx.len() as usize
    {
        return Err(DROP_MALFORMED);
    }
    let flags_offset = u16::from_be_bytes(header.flags_fragment_offset);
    let kind = if flags_offset & IPV4_OFFSET_MASK != 0 {
        FragmentKind::Later
    } else if flags_offset & IPV4_MORE_FRAGMENTS != 0 {
        FragmentKind::First
    } else {
        FragmentKind::Whole
    };
    packet.family = FAMILY_V4;
    packet.protocol = header.protocol;
    packet.has_ip_options = header_len > IPV4_MIN_HLEN;
    packet.fragment = Fragment {
        kind,
        id: u32::from(u16::from_be_bytes(header.id)),
    };
    packet.src = ipv4_addr(header.src);
    packet.dst = ipv4_addr(header.dst);
    if kind == FragmentKind::Later {
        packet.l4 = L4::OPAQUE;
        packet.tcp_flags = 0;
        return Ok(());
    }
    parse_l4(
        ctx,
        packet,
        PROTO_ICMP,
        ETH_HLEN + header_len,
        ETH_HLEN + total_len,
    )
}

/// Fills `packet` from an IPv6 packet; `Ok(true)` if the packet stays on the link between
/// the workload and the host: its destination is link-scoped (fe80::/10 unicast, ff02::/16
/// multicast); or its hop limit is at most 1, so no router forwards it (RFC 8200 §3); or it
/// travels to the workload with hop limit 255, which a router forwarding it would have
/// decremented, so the host itself sent it (RFC 4861 §6.1, §7.1: receivers take neighbour
/// and router discovery only with hop limit 255, for the same reason).
#[inline(always)]
fn parse_ipv6(ctx: &TcContext, to_workload: bool, packet: &mut Packet) -> Result<bool, u32> {
    let header: Ipv6Fixed = load(ctx, ETH_HLEN)?;
    if header.version_class_flow[0] >> 4 != 6 {
        return Err(DROP_MALFORMED);
    }
    let end = ETH_HLEN + IPV6_HLEN + usize::from(u16::from_be_bytes(header.payload_length));
    if end > ctx.len() as usize {
        return Err(DROP_MALFORMED);
    }
    packet.src = load(ctx, ETH_HLEN + IPV6_SRC_OFFSET)?;
    packet.dst = load(ctx, ETH_HLEN + IPV6_DST_OFFSET)?;
    packet.family = FAMILY_V6;
    packet.has_ip_options = false;
    let l4_offset = walk_ipv6_extensions(ctx, packet, header.next_header, end)?;
    let stays_on_link = header.hop_limit <= 1
        || (to_workload && header.hop_limit == HOP_LIMIT_UNFORWARDED)
        || is_link_scoped(&packet.dst);
    if packet.fragment.kind == FragmentKind::Later {
        packet.l4 = L4::OPAQUE;
        packet.tcp_flags = 0;
        return Ok(stays_on_link);
    }
    parse_l4(ctx, packet, PROTO_ICMPV6, l4_offset, end)?;
    Ok(stays_on_link)
}

/// fe80::/10 (link-local unicast) or ff02::/16 (link-local multicast).
#[inline(always)]
fn is_link_scoped(addr: &Addr) -> bool {
    (addr[0] == 0xfe && addr[1] & 0xc0 == 0x80) || (addr[0] == 0xff && addr[1] & 0x0f == 0x02)
}

/// Skips the extension headers after the fixed header; sets the packet's protocol and
/// fragment, and returns the upper-layer header's offset. A later fragment ends the walk at
/// its fragment header: what follows is the middle of a datagram, not a header.
#[inline(always)]
fn walk_ipv6_extensions(
    ctx: &TcContext,
    packet: &mut Packet,
    mut next: u8,
    end: usize,
) -> Result<usize, u32> {
    let mut offset = ETH_HLEN + IPV6_HLEN;
    packet.fragment = Fragment::WHOLE;
    for _ in 0..MAX_IPV6_EXTENSION_HEADERS {
        if !is_ipv6_extension(next) {
            break;
        }
        if offset + IPV6_EXTENSION_UNIT > end {
            return Err(DROP_MALFORMED);
        }
        let header: [u8; 8] = load(ctx, offset)?;
        if next == IPV6_FRAGMENT {
            let offset_flags = u16::from_be_bytes([header[2], header[3]]);
            let id = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
            // Offset 0 without "more fragments" is an atomic fragment (RFC 6946): whole.
            if offset_flags & IPV6_FRAGMENT_OFFSET_MASK != 0 {
                packet.fragment = Fragment {
                    kind: FragmentKind::Later,
                    id,
                };
                packet.protocol = header[0];
                return Ok(offset + IPV6_EXTENSION_UNIT);
            } else if offset_flags & IPV6_MORE_FRAGMENTS != 0 {
                packet.fragment = Fragment {
                    kind: FragmentKind::First,
                    id,
                };
            }
            offset += IPV6_EXTENSION_UNIT;
        } else {
            offset += (usize::from(header[1]) + 1) * IPV6_EXTENSION_UNIT;
        }
        next = header[0];
    }
    // Too many headers, or the last one runs past the packet's end.
    if is_ipv6_extension(next) || offset > end {
        return Err(DROP_MALFORMED);
    }
    packet.protocol = next;
    Ok(offset)
}

#[inline(always)]
fn is_ipv6_extension(next_header: u8) -> bool {
    matches!(
        next_header,
        IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_FRAGMENT | IPV6_DESTINATION_OPTIONS
    )
}

/// Reads the L4 header at `offset`, which must end by `end` (the end of the IP packet).
/// `icmp` is the family's ICMP protocol: ICMPv4 inside IPv6 is just another protocol.
#[inline(always)]
fn parse_l4(
    ctx: &TcContext,
    packet: &mut Packet,
    icmp: u8,
    offset: usize,
    end: usize,
) -> Result<(), u32> {
    let protocol = packet.protocol;
    packet.tcp_flags = 0;
    packet.l4 = match protocol {
        PROTO_TCP => {
            if offset + TCP_MIN_HLEN > end {
                return Err(DROP_MALFORMED);
            }
            let head: TcpHead = load(ctx, offset)?;
            let header_len = usize::from(head.data_offset >> 4) * 4;
            if header_len < TCP_MIN_HLEN || offset + header_len > end {
                return Err(DROP_MALFORMED);
            }
            packet.tcp_flags = head.flags;
            ports(head.ports)
        }
        PROTO_UDP | PROTO_SCTP => {
            let header_len = if protocol == PROTO_UDP {
                UDP_HLEN
            } else {
                SCTP_COMMON_HLEN
            };
            if offset + header_len > end {
                return Err(DROP_MALFORMED);
            }
            ports(load(ctx, offset)?)
        }
        _ if protocol == icmp => {
            if offset + ICMP_HLEN > end {
                return Err(DROP_MALFORMED);
            }
            let header: [u8; 6] = load(ctx, offset)?;
            L4 {
                kind: L4Kind::Icmp,
                a: u16::from(header[0]),
                b: u16::from(header[1]),
                echo_id: u16::from_be_bytes([header[4], header[5]]),
            }
        }
        _ => L4::OPAQUE,
    };
    Ok(())
}

#[inline(always)]
fn ports(bytes: [u8; 4]) -> L4 {
    L4 {
        kind: L4Kind::Ports,
        a: u16::from_be_bytes([bytes[0], bytes[1]]),
        b: u16::from_be_bytes([bytes[2], bytes[3]]),
        echo_id: 0,
    }
}

/// Neighbour discovery is never fragmented (RFC 6980), so a fragment is not let through as
/// such; and it is link control only while it stays on the link (the caller checks): sent
/// anywhere else, those message types are ordinary ICMPv6 that policy judges.
#[inline(always)]
fn is_neighbour_discovery(packet: &Packet) -> bool {
    packet.protocol == PROTO_ICMPV6
        && packet.l4.kind == L4Kind::Icmp
        && packet.fragment.kind == FragmentKind::Whole
        && ((u16::from(ND_FIRST_TYPE)..=u16::from(ND_LAST_TYPE)).contains(&packet.l4.a)
            || packet.l4.a == u16::from(MLDV2_REPORT))
}

#[inline(always)]
fn ipv4_addr(a: [u8; 4]) -> Addr {
    [a[0], a[1], a[2], a[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
}

/// Reads a header at `offset`: straight from the packet's linear data when it is there
/// (the common case, and the cheap one), else through `bpf_skb_load_bytes`, which also
/// reaches paged data. A header that does not fit in the packet makes it malformed.
#[inline(always)]
fn load<T: Copy>(ctx: &TcContext, offset: usize) -> Result<T, u32> {
    let start = ctx.data();
    if start + offset + size_of::<T>() <= ctx.data_end() {
        // SAFETY: the bytes are inside the linear packet data, checked just above (the
        // verifier checks it too); `T` is a byte array or a struct of them.
        return Ok(unsafe { core::ptr::read_unaligned((start + offset) as *const T) });
    }
    ctx.load(offset).map_err(|_| DROP_MALFORMED)
}
