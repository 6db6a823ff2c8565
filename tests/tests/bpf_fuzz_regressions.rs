//! The bypasses the packet fuzzer (`bpf_packet_fuzz.rs`) found, each as the frame that
//! passed and must not: kept here so that they stay fixed whatever the fuzzer's seed.
//!
//! Privileged: run through `cargo xtask test` as root.

use std::net::{IpAddr, SocketAddr};

use palisade_common::{DIR_EGRESS, DIR_INGRESS};
use palisade_tests::{
    bpf_maps::{ALLOW, DENY},
    bpf_scenario::{
        PEER_V6, WORKLOAD_V4, WORKLOAD_V6, dataplane_with_workload, expect, sock, uniform_policy,
    },
    packet::{ETH_HLEN, Frame, IPPROTO_UDP},
    require_root,
};

/// ICMPv6 neighbour discovery types passed without policy to any destination, from any
/// source: found as type 137 to ::1, type 136 from a spoofed fe3b::1 to ff06::1.
#[test]
fn discovery_types_off_the_link_are_judged_by_policy() {
    require_root();
    let mut dp = dataplane_with_workload(0);
    uniform_policy(&mut dp, 0, DIR_EGRESS, 1, DENY);
    uniform_policy(&mut dp, 0, DIR_INGRESS, 2, DENY);
    let spoofed: IpAddr = "fe3b::1".parse().unwrap();
    let site_multicast: IpAddr = "ff06::1".parse().unwrap();
    for icmp_type in [130, 133, 135, 136, 137, 143] {
        let routed = Frame::icmp(WORKLOAD_V6, PEER_V6, icmp_type, 0, 0).build();
        expect(
            &mut dp,
            DIR_EGRESS,
            &routed,
            false,
            &format!("type {icmp_type} to a peer"),
        );
        let incoming = Frame::icmp(PEER_V6, WORKLOAD_V6, icmp_type, 0, 0).build();
        expect(
            &mut dp,
            DIR_INGRESS,
            &incoming,
            false,
            &format!("type {icmp_type} from a peer"),
        );
        let from_elsewhere = Frame::icmp(spoofed, site_multicast, icmp_type, 0, 0).build();
        expect(
            &mut dp,
            DIR_EGRESS,
            &from_elsewhere,
            false,
            &format!("type {icmp_type}, spoofed"),
        );
    }
    // Hop limit 1: no router forwards it, so it stays link control (MLD is sent so).
    let mut report = Frame::icmp(WORKLOAD_V6, site_multicast, 131, 0, 0).build();
    report[ETH_HLEN + 7] = 1;
    expect(
        &mut dp,
        DIR_EGRESS,
        &report,
        true,
        "an MLD report with hop limit 1",
    );
}

/// An IPv6 extension header whose length ran past the packet passed when the next header
/// was a protocol palisade reads no header of (here 11).
#[test]
fn an_extension_header_past_the_packet_is_malformed() {
    require_root();
    let mut dp = dataplane_with_workload(0);
    uniform_policy(&mut dp, 0, DIR_EGRESS, 1, ALLOW);
    let mut frame = Frame::udp(sock(WORKLOAD_V6, 3000), sock(PEER_V6, 3000)).build();
    frame[ETH_HLEN + 6] = 0; // hop-by-hop options first
    frame[ETH_HLEN + 4..ETH_HLEN + 6].copy_from_slice(&15u16.to_be_bytes());
    let payload = ETH_HLEN + 40;
    frame[payload] = 11; // next header
    frame[payload + 1] = 184; // (184 + 1) * 8 bytes, far past the 15 there
    frame.truncate(payload + 15);
    expect(
        &mut dp,
        DIR_EGRESS,
        &frame,
        false,
        "a header past the packet",
    );
}

/// A first fragment allowed out of the workload let later fragments of that datagram in:
/// found as 10.0.0.2 -> 10.0.0.2, first fragment out, later fragment in.
#[test]
fn later_fragments_follow_first_fragments_of_their_own_direction() {
    require_root();
    let mut dp = dataplane_with_workload(0);
    uniform_policy(&mut dp, 0, DIR_EGRESS, 1, ALLOW);
    uniform_policy(&mut dp, 0, DIR_INGRESS, 2, DENY);
    let to_itself = SocketAddr::new(WORKLOAD_V4, 4000);
    let first = Frame::udp(to_itself, to_itself)
        .fragment(0, 0, true)
        .build();
    expect(&mut dp, DIR_EGRESS, &first, true, "the first fragment, out");
    let later = Frame::raw(WORKLOAD_V4, WORKLOAD_V4, IPPROTO_UDP, vec![0xab; 16])
        .fragment(0, 1, false)
        .build();
    expect(&mut dp, DIR_INGRESS, &later, false, "a later fragment, in");
    expect(&mut dp, DIR_EGRESS, &later, true, "a later fragment, out");
}
