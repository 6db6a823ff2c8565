//! Node-local forwarding: a packet a workload sends to another workload of this node goes
//! straight to that workload's host veth, instead of through the host's IP stack.
//!
//! Only packets of a flow the destination's program learnt (`CtValue::forward_ifindex`,
//! see `conntrack::learn_forwarding`) are forwarded so: the flow's first packet went
//! through the host's stack, which routed it to that veth, and arrived there under the very
//! addresses and ports the sender's entry has, so the host neither NATs the flow nor sends
//! it elsewhere. Everything else (a flow's first packet, every packet of a flow the host
//! NATs, the host's own addresses, other nodes) goes to the stack as before.
//!
//! Once the destination's MACs are known (`learn_macs`: from the frames the stack sent the
//! destination, kept in its `PAL_EP_INDEX` entry), the packet gets them and
//! `palisade_from_wl` tail-calls `palisade_deliver` (`PAL_DELIVER`), which judges it as the
//! destination's `palisade_to_wl` would, with its ingress policy and conntrack, and hands
//! it to the destination veth's other end with `bpf_redirect_peer`: into the workload's
//! namespace at once, as Cilium's host routing does, past the host veth's egress, its
//! qdisc and the backlog queue a veth's transmit goes through. The destination's host veth
//! does not count those packets as sent; the workload's end counts them as received.
//! Until the MACs are known (and should the tail call fail) `bpf_redirect_neigh` hands the
//! packet to the kernel's neighbour output on that veth (the MACs the stack would write,
//! an ARP or neighbour solicitation when none is known) and `dev_queue_xmit`, which runs
//! the veth's TC egress programs: the destination's `palisade_to_wl` judges it there.
//! Either way, what is skipped is the host's IP layer: the route lookup, netfilter's
//! PREROUTING, FORWARD and POSTROUTING hooks (and with them the host's conntrack and NAT)
//! and its forwarding counters. What the stack would do to a forwarded packet itself is
//! done here: the TTL or hop limit drops by one, and what the stack would refuse or answer
//! (TTL running out, too big for the veth's MTU, IPv4 options, fragments, hop-by-hop
//! options) is left to it. A veth's two ends have one MTU (the plumbing makes them so), so
//! what fits the host end fits the workload's.
//!
//! The headers are read again from the packet rather than taken from the parsed `Packet`:
//! the verifier then meets this code with the same state from every way through the
//! pipeline and checks it once, not once per combination of parsed values.

use aya_ebpf::{
    bindings::{BPF_F_RECOMPUTE_CSUM, bpf_redir_neigh},
    helpers::{bpf_check_mtu, bpf_redirect_neigh, bpf_redirect_peer},
    programs::TcContext,
};
use palisade_common::{DELIVER_SLOT, EndpointIndexKey};

use crate::{
    maps::{PAL_DELIVER, PAL_EP_INDEX},
    parse::{IPV6_DST_OFFSET, Ipv4Header},
};

const ETH_HLEN: usize = 14;
const MAC_LEN: usize = 6;
const NO_MAC: [u8; MAC_LEN] = [0; MAC_LEN];
const ETHERTYPE_OFFSET: usize = 12;
const ETH_P_IP: [u8; 2] = 0x0800u16.to_be_bytes();
const ETH_P_IPV6: [u8; 2] = 0x86ddu16.to_be_bytes();
const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;
/// `skb->pkt_type` of a frame addressed to the host veth's own MAC: the only frames the
/// stack would forward.
const PACKET_HOST: u32 = 0;
/// `bpf_check_mtu`'s answer for a packet that fits, and its flag that checks each segment
/// of a GSO packet (without it, any GSO packet fits).
const BPF_MTU_CHK_RET_SUCCESS: i64 = 0;
const BPF_MTU_CHK_SEGS: u64 = 1;

/// A packet with IPv4 options (e.g. record route) is the stack's to forward.
const IPV4_NO_OPTIONS: u8 = 0x45;
/// "More fragments" and the fragment offset: set in any fragment, which the stack may
/// have to reassemble.
const IPV4_FRAGMENT_MASK: u16 = 0x3fff;

const IPV6_NEXT_HEADER_OFFSET: usize = 6;
const IPV6_HOP_LIMIT_OFFSET: usize = 7;
/// Hop-by-hop options ask every router to look at them (e.g. router alert); a fragment
/// may need reassembling. Both are left to the stack.
const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_FRAGMENT: u8 = 44;

/// `TC_ACT_REDIRECT` once the IP packet (which the workload behind host veth `ifindex`
/// sent, and which its policy passed) is on its way to the host veth `to`, another local
/// workload's; `None` to let the stack forward it, unchanged.
#[inline(always)]
pub fn to_local_workload(ctx: &TcContext, ifindex: u32, to: u32) -> Option<i32> {
    // SAFETY: the program's own context, valid for the whole run.
    if unsafe { (*ctx.skb.skb).pkt_type } != PACKET_HOST || to == ifindex {
        return None;
    }
    // The agent removes a veth's entry when the veth goes: a flow to a workload that is
    // gone goes to the stack, which may route its address elsewhere by now.
    let destination = PAL_EP_INDEX.get_ptr(EndpointIndexKey { ifindex: to })?;
    // SAFETY: a value pointer from a successful lookup; read at once, by copy.
    let macs = unsafe { ((*destination).workload_mac, (*destination).host_mac) };
    let ethertype: [u8; 2] = read(ctx, ETHERTYPE_OFFSET)?;
    // SAFETY: a C struct of integers, for which all zeros is valid.
    let mut next_hop: bpf_redir_neigh = unsafe { core::mem::zeroed() };
    if ethertype == ETH_P_IP {
        let header: Ipv4Header = read(ctx, ETH_HLEN)?;
        let fragment = u16::from_be_bytes(header.flags_fragment_offset) & IPV4_FRAGMENT_MASK;
        // TTL 1 runs out here: the stack answers with ICMP time exceeded.
        if header.version_ihl != IPV4_NO_OPTIONS || fragment != 0 || header.ttl <= 1 {
            return None;
        }
        fits(ctx, to)?;
        next_hop.nh_family = AF_INET;
        next_hop.__bindgen_anon_1.ipv4_nh = u32::from_ne_bytes(header.dst);
        let header = header_mut::<Ipv4Header>(ctx)?;
        // SAFETY: `header_mut` checked that the header is inside the linear data; the
        // verifier makes the skb writable before the program runs.
        unsafe { decrement_ttl(&mut *header) };
    } else if ethertype == ETH_P_IPV6 {
        let next_header: u8 = read(ctx, ETH_HLEN + IPV6_NEXT_HEADER_OFFSET)?;
        let hop_limit: u8 = read(ctx, ETH_HLEN + IPV6_HOP_LIMIT_OFFSET)?;
        if hop_limit <= 1 || next_header == IPV6_HOP_BY_HOP || next_header == IPV6_FRAGMENT {
            return None;
        }
        fits(ctx, to)?;
        let destination: [u8; 16] = read(ctx, ETH_HLEN + IPV6_DST_OFFSET)?;
        next_hop.nh_family = AF_INET6;
        next_hop.__bindgen_anon_1.ipv6_nh = words(&destination);
        // Through the helper, which also keeps a CHECKSUM_COMPLETE skb's sum right (no
        // IPv6 header checksum makes up for the change, as IPv4's does for the TTL).
        ctx.store(
            ETH_HLEN + IPV6_HOP_LIMIT_OFFSET,
            &(hop_limit - 1),
            u64::from(BPF_F_RECOMPUTE_CSUM),
        )
        .ok()?;
    } else {
        return None;
    }
    if macs.1 != NO_MAC {
        hand_to_deliver(ctx, to, macs);
    }
    // SAFETY: a parameter block of the size passed. The destination is the next hop: a
    // workload's address is on its veth's link. With no flags the helper cannot fail here:
    // it answers `TC_ACT_REDIRECT`, and the neighbour output happens after the program.
    Some(
        unsafe { bpf_redirect_neigh(to, &mut next_hop, size_of::<bpf_redir_neigh>() as i32, 0) }
            as i32,
    )
}

/// Gives the packet the destination's MACs (`workload`, `host`) and tail-calls
/// `palisade_deliver` with the destination's host veth `to` in `cb[0]`. Returns only when
/// the tail call did not happen (an empty `PAL_DELIVER`), or the header is not in the
/// linear data; the packet then takes the neighbour path, which writes the MACs again.
#[inline(always)]
fn hand_to_deliver(ctx: &TcContext, to: u32, (workload, host): ([u8; MAC_LEN], [u8; MAC_LEN])) {
    let start = ctx.data();
    if start + 2 * MAC_LEN > ctx.data_end() {
        return;
    }
    // SAFETY: inside the linear data, checked just above; the verifier makes the skb
    // writable before the program runs. `cb` is the program's own scratch space, kept
    // across a tail call.
    unsafe {
        core::ptr::write_unaligned(start as *mut [u8; MAC_LEN], workload);
        core::ptr::write_unaligned((start + MAC_LEN) as *mut [u8; MAC_LEN], host);
        (*ctx.skb.skb).cb[0] = to;
        PAL_DELIVER.tail_call(ctx, DELIVER_SLOT);
    }
}

/// `palisade_deliver`'s way out for a packet the destination's policy passed: to the
/// other end of the host veth `to`, the workload's, as if it had arrived there.
#[inline(always)]
pub fn into_workload(to: u32) -> i32 {
    // SAFETY: a plain helper call. With no flags it answers `TC_ACT_REDIRECT`; the kernel
    // drops the packet after the program if `to` has no peer by then.
    unsafe { bpf_redirect_peer(to, 0) as i32 }
}

/// `palisade_to_wl` on the host veth `ifindex`, for a flow's first packet the stack
/// forwarded from another local workload: the frame's MACs (the workload's as
/// destination, the host veth's as source) are what packets delivered past the stack get.
/// Written only when they changed (a workload may change its MAC); a packet delivered
/// while they are being written may get a torn one, which the workload takes all the same
/// (a frame the host veth accepted keeps `PACKET_HOST` through `bpf_redirect_peer`).
#[inline(always)]
pub fn learn_macs(ctx: &TcContext, ifindex: u32) {
    let Some(workload) = read::<[u8; MAC_LEN]>(ctx, 0) else {
        return;
    };
    let Some(host) = read::<[u8; MAC_LEN]>(ctx, MAC_LEN) else {
        return;
    };
    let Some(entry) = PAL_EP_INDEX.get_ptr_mut(EndpointIndexKey { ifindex }) else {
        return;
    };
    // SAFETY: a value pointer from a successful lookup, into a map the agent writes only
    // when it attaches or forgets the veth.
    unsafe {
        if (*entry).workload_mac != workload || (*entry).host_mac != host {
            (*entry).workload_mac = workload;
            (*entry).host_mac = host;
        }
    }
}

/// Whether the packet (each of its segments, for a GSO packet) fits the MTU of the veth
/// `to`; what does not is the stack's to refuse with ICMP.
#[inline(always)]
fn fits(ctx: &TcContext, to: u32) -> Option<()> {
    let mut mtu_len = 0u32;
    // SAFETY: the program's own skb and a u32 out-parameter.
    let answer =
        unsafe { bpf_check_mtu(ctx.skb.skb as *mut _, to, &mut mtu_len, 0, BPF_MTU_CHK_SEGS) };
    (answer == BPF_MTU_CHK_RET_SUCCESS).then_some(())
}

/// An IPv6 address as the helper's four words, in network order.
#[inline(always)]
fn words(addr: &[u8; 16]) -> [u32; 4] {
    let word = |i: usize| u32::from_ne_bytes([addr[i], addr[i + 1], addr[i + 2], addr[i + 3]]);
    [word(0), word(4), word(8), word(12)]
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
