//! Node-local forwarding: a packet a workload sends to another workload of this node goes
//! straight to that workload's host veth, instead of through the host's IP stack.
//!
//! The kernel's own routes and neighbours decide (`bpf_fib_lookup`), so the packet leaves
//! by the interface, with the MACs, the stack would have given it. Only the outcome where
//! the lookup forwards it to another attached workload veth is taken; everything else
//! (the host's own addresses, other nodes, no neighbour yet, TTL running out, too big for
//! the MTU, forwarding disabled) goes to the stack as before, which knows what to do.
//!
//! `bpf_redirect` to a device's egress sends the packet through `dev_queue_xmit`, which
//! runs that device's TC egress programs: the destination's `palisade_to_wl` still judges
//! it with its ingress policy and conntrack. What is skipped is the host's IP layer:
//! netfilter's PREROUTING, FORWARD and POSTROUTING hooks (and with them the host's
//! conntrack and NAT) and its forwarding counters.
//!
//! Only flows the destination's program already tracks under the packet's own addresses
//! and ports (TCP, UDP, SCTP) are forwarded so: a flow's first packet, and every packet of
//! a flow the host's NAT rewrites, still take the stack (see `tracked_at`).
//!
//! The headers are read again from the packet rather than taken from the parsed `Packet`:
//! the verifier then meets this code with the same state from every way through the
//! pipeline and checks it once, not once per combination of parsed values.

use aya_ebpf::{
    bindings::{BPF_F_RECOMPUTE_CSUM, BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup},
    helpers::{bpf_fib_lookup as fib_lookup, bpf_redirect},
    programs::TcContext,
};
use palisade_common::{CtKey, EndpointIndexKey, FAMILY_V4, FAMILY_V6};

use crate::{
    maps::{PAL_CT, PAL_EP_INDEX},
    parse::{
        IPV6_DST_OFFSET, IPV6_SRC_OFFSET, Ipv4Header, PROTO_SCTP, PROTO_TCP, PROTO_UDP,
    },
};

const ETH_ALEN: usize = 6;
const ETH_HLEN: usize = 14;
const ETHERTYPE_OFFSET: usize = 12;
const ETH_P_IP: [u8; 2] = 0x0800u16.to_be_bytes();
const ETH_P_IPV6: [u8; 2] = 0x86ddu16.to_be_bytes();
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
/// `skb->pkt_type` of a frame addressed to the host veth's own MAC: the only frames the
/// stack would forward.
const PACKET_HOST: u32 = 0;

/// A packet with IPv4 options (e.g. record route) is the stack's to forward.
const IPV4_NO_OPTIONS: u8 = 0x45;
/// "More fragments" and the fragment offset: set in any fragment, which the stack may
/// have to reassemble.
const IPV4_FRAGMENT_MASK: u16 = 0x3fff;

/// The whole fixed IPv6 header (`parse` reads it in parts); bytes only, like
/// `parse::Ipv4Header`.
#[repr(C)]
#[derive(Clone, Copy)]
struct Ipv6Header {
    version_class_flow: [u8; 4],
    payload_length: [u8; 2],
    next_header: u8,
    hop_limit: u8,
    src: [u8; 16],
    dst: [u8; 16],
}
/// Traffic class and flow label: the first word without the version.
const IPV6_FLOWINFO_MASK: u32 = 0x0fff_ffff;
const IPV6_NEXT_HEADER_OFFSET: usize = 6;
const IPV6_HOP_LIMIT_OFFSET: usize = 7;
/// Hop-by-hop options ask every router to look at them (e.g. router alert); a fragment
/// may need reassembling. Both are left to the stack.
const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_FRAGMENT: u8 = 44;

/// Where the lookup sends the packet and with which MACs.
struct NextHop {
    ifindex: u32,
    source_mac: [u8; ETH_ALEN],
    destination_mac: [u8; ETH_ALEN],
}

/// `TC_ACT_REDIRECT` once the IP packet (which the workload behind host veth `ifindex`
/// sent, and which its policy passed) is on its way to another local workload's host
/// veth; `None` to let the stack forward it, unchanged.
#[inline(always)]
pub fn to_local_workload(ctx: &TcContext, ifindex: u32) -> Option<i32> {
    // SAFETY: the program's own context, valid for the whole run.
    if unsafe { (*ctx.skb.skb).pkt_type } != PACKET_HOST {
        return None;
    }
    let ethertype: [u8; 2] = read(ctx, ETHERTYPE_OFFSET)?;
    let next = if ethertype == ETH_P_IP {
        let next = lookup(ctx, params_v4(read(ctx, ETH_HLEN)?, ifindex)?)?;
        forwarded_elsewhere(&next, ifindex)?;
        tracked_at(ctx, FAMILY_V4, next.ifindex)?;
        let header = header_mut::<Ipv4Header>(ctx)?;
        // SAFETY: `header_mut` checked that the header is inside the linear data; the
        // verifier makes the skb writable before the program runs.
        unsafe { decrement_ttl(&mut *header) };
        next
    } else if ethertype == ETH_P_IPV6 {
        let next = lookup(ctx, params_v6(read(ctx, ETH_HLEN)?, ifindex)?)?;
        forwarded_elsewhere(&next, ifindex)?;
        tracked_at(ctx, FAMILY_V6, next.ifindex)?;
        // Read again rather than kept through the lookup: the stack has no room for the
        // whole header there. More than 1: `params_v6` checked it.
        let hop_limit: u8 = read(ctx, ETH_HLEN + IPV6_HOP_LIMIT_OFFSET)?;
        // Through the helper, which also keeps a CHECKSUM_COMPLETE skb's sum right (no
        // IPv6 header checksum makes up for the change, as IPv4's does for the TTL).
        ctx.store(
            ETH_HLEN + IPV6_HOP_LIMIT_OFFSET,
            &(hop_limit - 1),
            u64::from(BPF_F_RECOMPUTE_CSUM),
        )
        .ok()?;
        next
    } else {
        return None;
    };
    let start = ctx.data();
    if start + 2 * ETH_ALEN > ctx.data_end() {
        return None;
    }
    // SAFETY: both addresses are inside the linear data, checked just above (the IP
    // header after them was, too, and a packet does not shrink, so the check never fails
    // once the TTL or hop limit was written).
    unsafe {
        core::ptr::write_unaligned(start as *mut [u8; ETH_ALEN], next.destination_mac);
        core::ptr::write_unaligned((start + ETH_ALEN) as *mut [u8; ETH_ALEN], next.source_mac);
    }
    // SAFETY: a helper call with plain values; it only records where the packet goes.
    // With no flags it cannot fail: it answers `TC_ACT_REDIRECT`.
    Some(unsafe { bpf_redirect(next.ifindex, 0) } as i32)
}

/// The lookup's parameters for an IPv4 packet the stack would forward as it is.
#[inline(always)]
fn params_v4(header: Ipv4Header, ifindex: u32) -> Option<bpf_fib_lookup> {
    let fragment = u16::from_be_bytes(header.flags_fragment_offset) & IPV4_FRAGMENT_MASK;
    // TTL 1 runs out here: the stack answers with ICMP time exceeded.
    if header.version_ihl != IPV4_NO_OPTIONS || fragment != 0 || header.ttl <= 1 {
        return None;
    }
    let mut params = params_of(AF_INET, header.protocol, ifindex);
    params.__bindgen_anon_2.tos = header.tos;
    params.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(header.src);
    params.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(header.dst);
    Some(params)
}

#[inline(always)]
fn params_v6(header: Ipv6Header, ifindex: u32) -> Option<bpf_fib_lookup> {
    if header.hop_limit <= 1
        || header.next_header == IPV6_HOP_BY_HOP
        || header.next_header == IPV6_FRAGMENT
    {
        return None;
    }
    let mut params = params_of(AF_INET6, header.next_header, ifindex);
    params.__bindgen_anon_2.flowinfo =
        u32::from_ne_bytes(header.version_class_flow) & IPV6_FLOWINFO_MASK.to_be();
    params.__bindgen_anon_3.ipv6_src = words(&header.src);
    params.__bindgen_anon_4.ipv6_dst = words(&header.dst);
    Some(params)
}

/// An IPv6 address as the lookup's four words, in network order.
#[inline(always)]
fn words(addr: &[u8; 16]) -> [u32; 4] {
    let word = |i: usize| u32::from_ne_bytes([addr[i], addr[i + 1], addr[i + 2], addr[i + 3]]);
    [word(0), word(4), word(8), word(12)]
}

/// The parameters but the addresses and the class of service. The ports stay 0: they only
/// pick among equal-cost routes, which a workload's route is not. `tot_len` stays 0 too,
/// so that the helper checks the skb itself against the egress MTU, which knows GSO
/// packets (a total length taken from the header would refuse every GSO packet).
#[inline(always)]
fn params_of(family: u8, protocol: u8, ifindex: u32) -> bpf_fib_lookup {
    // SAFETY: a C struct of integers and byte arrays, for which all zeros is valid.
    let mut params: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    params.family = family;
    params.l4_protocol = protocol;
    params.ifindex = ifindex;
    params
}

/// The kernel's forwarding decision, as the stack would take it for a packet that came in
/// on `params.ifindex`; `None` for anything but "forward it, the neighbour is known".
#[inline(always)]
fn lookup(ctx: &TcContext, mut params: bpf_fib_lookup) -> Option<NextHop> {
    // SAFETY: the program's own skb and a parameter block of the size passed.
    let answer = unsafe {
        fib_lookup(
            ctx.skb.skb as *mut _,
            &mut params,
            size_of::<bpf_fib_lookup>() as i32,
            0,
        )
    };
    (answer == i64::from(BPF_FIB_LKUP_RET_SUCCESS)).then_some(NextHop {
        ifindex: params.ifindex,
        source_mac: params.smac,
        destination_mac: params.dmac,
    })
}

/// Whether the packet leaves by another workload's host veth (one the agent attached to,
/// so its `palisade_to_wl` judges the packet), not the one it came in by.
#[inline(always)]
fn forwarded_elsewhere(next: &NextHop, ifindex: u32) -> Option<()> {
    let attached = PAL_EP_INDEX
        .get_ptr(EndpointIndexKey {
            ifindex: next.ifindex,
        })
        .is_some();
    (attached && next.ifindex != ifindex).then_some(())
}

/// Whether the destination's program (behind host veth `ifindex`) already tracks the
/// packet's flow under these very addresses and ports: only then does the packet skip the
/// host's stack. A flow's first packet (a SYN) always goes through the stack. So does every
/// packet of a flow the host rewrites: under DNAT or SNAT (a service address whose backend
/// is on this node, a masquerade) the destination knows the flow by other addresses than
/// the ones this packet carries, and a reply sent past the stack would miss the host's
/// conntrack, which un-NATs it. Only TCP, UDP and SCTP are forwarded so (ICMP is not worth
/// a path of its own).
///
/// The key is filled straight from the packet, after the lookup: the program's stack has
/// no room for it beside the lookup's parameters and a copy of the headers.
#[inline(always)]
fn tracked_at(ctx: &TcContext, family: u8, ifindex: u32) -> Option<()> {
    // The flow as the destination keys it: its own address and port are "local".
    let mut key = CtKey {
        ifindex,
        family,
        protocol: 0,
        local_port: 0,
        remote_port: 0,
        _pad: 0,
        local_addr: [0; 16],
        remote_addr: [0; 16],
    };
    // Only headers without options or extension headers get here (`params_v4`,
    // `params_v6`), so the ports follow the fixed header.
    let ports_at = if family == FAMILY_V4 {
        let header: Ipv4Header = read(ctx, ETH_HLEN)?;
        key.protocol = header.protocol;
        key.local_addr[..4].copy_from_slice(&header.dst);
        key.remote_addr[..4].copy_from_slice(&header.src);
        ETH_HLEN + size_of::<Ipv4Header>()
    } else {
        key.protocol = read(ctx, ETH_HLEN + IPV6_NEXT_HEADER_OFFSET)?;
        key.local_addr = read(ctx, ETH_HLEN + IPV6_DST_OFFSET)?;
        key.remote_addr = read(ctx, ETH_HLEN + IPV6_SRC_OFFSET)?;
        ETH_HLEN + size_of::<Ipv6Header>()
    };
    if key.protocol != PROTO_TCP && key.protocol != PROTO_UDP && key.protocol != PROTO_SCTP {
        return None;
    }
    let ports: [u8; 4] = read(ctx, ports_at)?;
    key.remote_port = u16::from_be_bytes([ports[0], ports[1]]);
    key.local_port = u16::from_be_bytes([ports[2], ports[3]]);
    PAL_CT.get_ptr(key).map(|_| ())
}

/// What `ip_decrease_ttl` does: the checksum follows the TTL's drop by one, incrementally
/// (RFC 1624). The header's ones' complement sum stays the same, so a CHECKSUM_COMPLETE
/// skb's sum needs no update.
#[inline(always)]
fn decrement_ttl(header: &mut Ipv4Header) {
    let sum = u32::from(u16::from_be_bytes(header.checksum)) + 0x0100;
    let sum = (sum + u32::from(sum >= 0xffff)) as u16;
    header.checksum = sum.to_be_bytes();
    header.ttl -= 1;
}

/// A header at `offset`, when it is in the linear data (the stack takes the rare packet
/// whose headers are not).
#[inline(always)]
fn read<T: Copy>(ctx: &TcContext, offset: usize) -> Option<T> {
    let start = ctx.data();
    if start + offset + size_of::<T>() > ctx.data_end() {
        return None;
    }
    // SAFETY: inside the linear data, checked just above; `T` is plain bytes and integers.
    Some(unsafe { core::ptr::read_unaligned((start + offset) as *const T) })
}

/// The IP header, writable, when it is in the linear data.
#[inline(always)]
fn header_mut<T>(ctx: &TcContext) -> Option<*mut T> {
    let start = ctx.data();
    if start + ETH_HLEN + size_of::<T>() > ctx.data_end() {
        return None;
    }
    Some((start + ETH_HLEN) as *mut T)
}
