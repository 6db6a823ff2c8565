//! What the TC programs make of frames before policy: ARP and neighbour discovery pass,
//! other EtherTypes and malformed IP are dropped, IPv4 options and IPv6 extension headers are
//! skipped (within bounds), and fragments follow their first fragment's verdict.
//!
//! Privileged: run through `cargo xtask test` as root.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use palisade_common::{
    CONFIG_HOST_TO_WORKLOAD_POLICY, Config, DIR_EGRESS, DIR_INGRESS, DROP_FRAGMENT, DROP_MALFORMED,
    DROP_POLICY, DROP_UNKNOWN_ETHERTYPE, STAT_FRAGMENTS, STAT_IP_OPTIONS, STAT_PASSED_ARP_ND,
};
use palisade_tests::{
    bpf_maps::{ALLOW, DENY, Dataplane, Rows},
    bpf_run::SkbContext,
    bpf_scenario::{
        PEER_V4, PEER_V6, WORKLOAD_V4, WORKLOAD_V6, dataplane_with_workload, expect, expect_in,
        policy_for_every_peer, sock, uniform_policy,
    },
    packet::{
        ETH_HLEN, ETH_P_VLAN, Frame, IP_OFFSET, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP,
        IPV6_DESTINATION_OPTIONS, IPV6_HOP_BY_HOP, IPV6_ROUTING, TCP_SYN, arp_request, ethernet,
    },
    require_root,
};

fn stat(dp: &mut Dataplane, index: u32) -> u64 {
    dp.stats()[index as usize]
}

/// A workload whose egress allows TCP to port 80 only and whose ingress allows nothing.
fn dataplane_allowing_port_80_out() -> Dataplane {
    let mut dp = dataplane_with_workload(0);
    policy_for_every_peer(
        &mut dp,
        0,
        DIR_EGRESS,
        1,
        Some(IPPROTO_TCP),
        &Rows::default().row(0, &[(0, DENY), (80, ALLOW), (81, DENY)]),
    );
    dp.table(0, 1, None, &Rows::uniform(DENY));
    uniform_policy(&mut dp, 0, DIR_INGRESS, 2, DENY);
    dp
}

#[test]
fn arp_and_neighbour_discovery_pass_without_any_policy() {
    require_root();
    // Nothing installed at all: every other packet would be dropped.
    let mut dp = Dataplane::load();
    let arp = arp_request(Ipv4Addr::new(10, 65, 0, 1), Ipv4Addr::new(169, 254, 1, 1));
    let link_local = IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1));
    let all_nodes = IpAddr::V6(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1));
    let before = stat(&mut dp, STAT_PASSED_ARP_ND);
    for direction in [DIR_EGRESS, DIR_INGRESS] {
        expect(&mut dp, direction, &arp, true, "ARP");
        // Neighbour and router discovery (133-137) and multicast listener discovery
        // (130-132, MLDv2 reports 143) pass, as Felix lets them.
        for nd_type in (130..=137).chain([143]) {
            let nd = Frame::icmp(link_local, all_nodes, nd_type, 0, 0).build();
            expect(
                &mut dp,
                direction,
                &nd,
                true,
                &format!("ICMPv6 type {nd_type}"),
            );
        }
        let echo = Frame::icmp(link_local, all_nodes, 128, 0, 0).build();
        expect(
            &mut dp,
            direction,
            &echo,
            false,
            "ICMPv6 echo is not discovery",
        );
        let unreachable = Frame::icmp(link_local, all_nodes, 1, 0, 0).build();
        expect(
            &mut dp,
            direction,
            &unreachable,
            false,
            "ICMPv6 destination unreachable is not discovery",
        );
    }
    assert_eq!(stat(&mut dp, STAT_PASSED_ARP_ND) - before, 20);
}

/// The host's neighbour discovery with a workload, as Linux does it over Calico's plumbing
/// (the workload's gateway is the host veth's link-local address): besides link-scoped
/// destinations, the host sends to the workload's own global address its unicast NUD
/// probes, and its advertisements answering solicitations the workload sent from that
/// address. They pass outside policy, even where the host's traffic is policed, because
/// their hop limit of 255 says no router forwarded them; the same messages forwarded (hop
/// limit 254), or from the workload to a global address, are policy's to judge.
#[test]
fn the_host_s_neighbour_discovery_to_a_workload_s_own_address_passes() {
    require_root();
    let mut dp = dataplane_with_workload(0);
    uniform_policy(&mut dp, 0, DIR_EGRESS, 1, DENY);
    uniform_policy(&mut dp, 0, DIR_INGRESS, 2, DENY);
    dp.set_config(Config {
        flags: CONFIG_HOST_TO_WORKLOAD_POLICY,
        ..Config::default()
    });
    let gateway: IpAddr = "fe80::ecee:eeff:feee:eeee".parse().unwrap();
    let with_hop_limit = |src, dst, icmp_type, hop_limit: u8| {
        let mut frame = Frame::icmp(src, dst, icmp_type, 0, 0).build();
        frame[ETH_HLEN + 7] = hop_limit;
        frame
    };
    let passed = stat(&mut dp, STAT_PASSED_ARP_ND);
    let denied = stat(&mut dp, DROP_POLICY);
    for (icmp_type, what) in [(135, "a NUD probe"), (136, "an advertisement")] {
        let from_host = with_hop_limit(gateway, WORKLOAD_V6, icmp_type, 255);
        expect_in(
            &mut dp,
            DIR_INGRESS,
            &from_host,
            SkbContext::FROM_HOST_ON_LO,
            true,
            &format!("{what} from the host to the workload's address"),
        );
        let forwarded = with_hop_limit(PEER_V6, WORKLOAD_V6, icmp_type, 254);
        expect(
            &mut dp,
            DIR_INGRESS,
            &forwarded,
            false,
            &format!("{what} forwarded to the workload's address"),
        );
        let answer = with_hop_limit(WORKLOAD_V6, gateway, icmp_type, 255);
        expect(
            &mut dp,
            DIR_EGRESS,
            &answer,
            true,
            &format!("{what} from the workload to its gateway"),
        );
        let routed = with_hop_limit(WORKLOAD_V6, PEER_V6, icmp_type, 255);
        expect(
            &mut dp,
            DIR_EGRESS,
            &routed,
            false,
            &format!("{what} from the workload to a peer's address"),
        );
    }
    assert_eq!(stat(&mut dp, STAT_PASSED_ARP_ND) - passed, 4);
    assert_eq!(stat(&mut dp, DROP_POLICY) - denied, 4);
}

#[test]
fn other_ethertypes_are_dropped() {
    require_root();
    let mut dp = dataplane_with_workload(0);
    uniform_policy(&mut dp, 0, DIR_EGRESS, 1, ALLOW);
    let inner = Frame::udp(sock(WORKLOAD_V4, 40000), sock(PEER_V4, 53)).build();
    let mut tagged = ethernet(ETH_P_VLAN, &[0, 1]);
    tagged.extend_from_slice(&inner[12..]);
    let lldp = ethernet(0x88cc, &[0; 46]);
    let before = stat(&mut dp, DROP_UNKNOWN_ETHERTYPE);
    for (frame, what) in [(&tagged, "a VLAN-tagged frame"), (&lldp, "LLDP")] {
        expect(&mut dp, DIR_EGRESS, frame, false, what);
        expect(&mut dp, DIR_INGRESS, frame, false, what);
    }
    assert_eq!(stat(&mut dp, DROP_UNKNOWN_ETHERTYPE) - before, 4);
}

#[test]
fn malformed_ipv4_is_dropped() {
    require_root();
    let mut dp = dataplane_with_workload(0);
    uniform_policy(&mut dp, 0, DIR_EGRESS, 1, ALLOW);
    let (src, dst) = (WORKLOAD_V4, PEER_V4);
    let tcp = Frame::tcp(sock(src, 40000), sock(dst, 80), TCP_SYN).build();
    let damaged = |edit: &dyn Fn(&mut Vec<u8>)| {
        let mut frame = tcp.clone();
        edit(&mut frame);
        frame
    };
    let total_length = |frame: &mut Vec<u8>, length: u16| {
        frame[IP_OFFSET + 2..IP_OFFSET + 4].copy_from_slice(&length.to_be_bytes());
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        // Frames shorter than their EtherType's fixed IP header cannot be made here:
        // BPF_PROG_TEST_RUN (kernel 6.18) refuses them with EINVAL.
        (
            damaged(&|f| f[IP_OFFSET] = 0x65),
            "version 6 in an IPv4 frame",
        ),
        (damaged(&|f| f[IP_OFFSET] = 0x44), "IHL 4"),
        (
            damaged(&|f| f[IP_OFFSET] = 0x4f),
            "IHL 15, beyond the total length",
        ),
        (
            damaged(&|f| total_length(f, 19)),
            "total length below the header length",
        ),
        (
            damaged(&|f| total_length(f, 41)),
            "total length beyond the frame",
        ),
        (
            damaged(&|f| total_length(f, 39)),
            "total length cutting the TCP header",
        ),
        (
            damaged(&|f| f[IP_OFFSET + 32] = 4 << 4),
            "TCP data offset 4",
        ),
        (
            damaged(&|f| f[IP_OFFSET + 32] = 6 << 4),
            "TCP data offset beyond the packet",
        ),
        (
            Frame::raw(src, dst, IPPROTO_TCP, vec![0; 10]).build(),
            "10 bytes of TCP header",
        ),
        (
            Frame::raw(src, dst, IPPROTO_UDP, vec![0; 7]).build(),
            "7 bytes of UDP header",
        ),
        (
            Frame::raw(src, dst, IPPROTO_ICMP, vec![8, 0, 0, 0]).build(),
            "4 bytes of ICMP",
        ),
        (
            Frame::raw(WORKLOAD_V6, PEER_V6, IPPROTO_TCP, vec![0; 19]).build(),
            "19 bytes of TCP header over IPv6",
        ),
        (
            damaged(&|f| {
                f.truncate(IP_OFFSET + 30);
            }),
            "a frame shorter than its IPv4 total length",
        ),
        (
            {
                let mut v6 = Frame::udp(sock(WORKLOAD_V6, 1), sock(PEER_V6, 53)).build();
                v6[IP_OFFSET + 4..IP_OFFSET + 6].copy_from_slice(&100u16.to_be_bytes());
                v6
            },
            "an IPv6 payload length beyond the frame",
        ),
        (
            {
                let mut v6 = Frame::udp(sock(WORKLOAD_V6, 1), sock(PEER_V6, 53)).build();
                v6[IP_OFFSET] = 0x40;
                v6
            },
            "version 4 in an IPv6 frame",
        ),
    ];
    let before = stat(&mut dp, DROP_MALFORMED);
    for (frame, what) in &cases {
        expect(&mut dp, DIR_EGRESS, frame, false, what);
    }
    assert_eq!(stat(&mut dp, DROP_MALFORMED) - before, cases.len() as u64);
    // The undamaged frame passes, so the drops above are the damage's doing.
    expect(&mut dp, DIR_EGRESS, &tcp, true, "the undamaged frame");
}

#[test]
fn ipv4_options_are_skipped_and_counted() {
    require_root();
    let mut dp = dataplane_allowing_port_80_out();
    let before = stat(&mut dp, STAT_IP_OPTIONS);
    for words in [1, 10] {
        let allowed = Frame::tcp(
            sock(WORKLOAD_V4, 40000 + words as u16),
            sock(PEER_V4, 80),
            TCP_SYN,
        )
        .ipv4_options(words)
        .build();
        expect(
            &mut dp,
            DIR_EGRESS,
            &allowed,
            true,
            &format!("{words} words of options, port 80"),
        );
        let denied = Frame::tcp(sock(WORKLOAD_V4, 40000), sock(PEER_V4, 81), TCP_SYN)
            .ipv4_options(words)
            .build();
        expect(
            &mut dp,
            DIR_EGRESS,
            &denied,
            false,
            &format!("{words} words of options, port 81"),
        );
    }
    assert_eq!(stat(&mut dp, STAT_IP_OPTIONS) - before, 4);
}

#[test]
fn ipv6_extension_headers_are_walked_up_to_six() {
    require_root();
    let mut dp = dataplane_allowing_port_80_out();
    let frame = |port: u16, extensions: &[u8]| {
        Frame::tcp(
            sock(WORKLOAD_V6, 40000 + port),
            sock(PEER_V6, port),
            TCP_SYN,
        )
        .ipv6_extensions(extensions)
        .build()
    };
    let chain = [IPV6_HOP_BY_HOP, IPV6_DESTINATION_OPTIONS, IPV6_ROUTING];
    expect(
        &mut dp,
        DIR_EGRESS,
        &frame(80, &chain),
        true,
        "three headers, port 80",
    );
    expect(
        &mut dp,
        DIR_EGRESS,
        &frame(81, &chain),
        false,
        "three headers, port 81",
    );
    let six = [IPV6_DESTINATION_OPTIONS; 6];
    expect(&mut dp, DIR_EGRESS, &frame(80, &six), true, "six headers");

    let before = stat(&mut dp, DROP_MALFORMED);
    let seven = [IPV6_DESTINATION_OPTIONS; 7];
    expect(
        &mut dp,
        DIR_EGRESS,
        &frame(80, &seven),
        false,
        "seven headers",
    );
    let mut truncated = frame(80, &chain);
    // Cut the payload inside the second extension header.
    let payload = 8 + 4;
    truncated[IP_OFFSET + 4..IP_OFFSET + 6].copy_from_slice(&(payload as u16).to_be_bytes());
    truncated.truncate(IP_OFFSET + 40 + payload);
    expect(
        &mut dp,
        DIR_EGRESS,
        &truncated,
        false,
        "a truncated extension header",
    );
    assert_eq!(stat(&mut dp, DROP_MALFORMED) - before, 2);
}

#[test]
fn ipv4_fragments_follow_their_first_fragment() {
    require_root();
    let mut dp = dataplane_allowing_port_80_out();
    let before = dp.stats();

    let first = Frame::tcp(sock(WORKLOAD_V4, 40000), sock(PEER_V4, 80), TCP_SYN)
        .fragment(0x1234, 0, true)
        .build();
    expect(
        &mut dp,
        DIR_EGRESS,
        &first,
        true,
        "the first fragment, port 80",
    );
    let later = |id: u32, offset: u16, more: bool| {
        Frame::raw(WORKLOAD_V4, PEER_V4, IPPROTO_TCP, vec![0xab; 24])
            .fragment(id, offset, more)
            .build()
    };
    expect(
        &mut dp,
        DIR_EGRESS,
        &later(0x1234, 5, true),
        true,
        "a middle fragment",
    );
    expect(
        &mut dp,
        DIR_EGRESS,
        &later(0x1234, 8, false),
        true,
        "the last fragment",
    );
    expect(
        &mut dp,
        DIR_EGRESS,
        &later(0x9999, 5, false),
        false,
        "a fragment of no datagram",
    );

    let denied_first = Frame::tcp(sock(WORKLOAD_V4, 40001), sock(PEER_V4, 81), TCP_SYN)
        .fragment(0x4321, 0, true)
        .build();
    expect(
        &mut dp,
        DIR_EGRESS,
        &denied_first,
        false,
        "the first fragment, port 81",
    );
    expect(
        &mut dp,
        DIR_EGRESS,
        &later(0x4321, 5, false),
        false,
        "its later fragment",
    );

    let mut delta = |index| dp.stats_grown(&before, index);
    assert_eq!(delta(STAT_FRAGMENTS), 6);
    assert_eq!(delta(DROP_FRAGMENT), 2);
}

#[test]
fn ipv6_fragments_follow_their_first_fragment() {
    require_root();
    let mut dp = dataplane_allowing_port_80_out();
    let before = dp.stats();
    let first = Frame::tcp(sock(WORKLOAD_V6, 40000), sock(PEER_V6, 80), TCP_SYN)
        .ipv6_extensions(&[IPV6_HOP_BY_HOP])
        .fragment(0xdead_beef, 0, true)
        .build();
    expect(
        &mut dp,
        DIR_EGRESS,
        &first,
        true,
        "the first fragment, port 80",
    );
    let later = |id: u32| {
        Frame::raw(WORKLOAD_V6, PEER_V6, IPPROTO_TCP, vec![0xab; 24])
            .fragment(id, 3, false)
            .build()
    };
    expect(
        &mut dp,
        DIR_EGRESS,
        &later(0xdead_beef),
        true,
        "its later fragment",
    );
    expect(
        &mut dp,
        DIR_EGRESS,
        &later(0xfeed),
        false,
        "a fragment of no datagram",
    );

    let denied_first = Frame::tcp(sock(WORKLOAD_V6, 40000), sock(PEER_V6, 81), TCP_SYN)
        .fragment(0xfeed_f00d, 0, true)
        .build();
    expect(
        &mut dp,
        DIR_EGRESS,
        &denied_first,
        false,
        "the first fragment, port 81",
    );
    expect(
        &mut dp,
        DIR_EGRESS,
        &later(0xfeed_f00d),
        false,
        "its later fragment",
    );

    // Offset 0 without "more fragments" is an atomic fragment: a whole packet.
    let atomic = Frame::tcp(sock(WORKLOAD_V6, 40002), sock(PEER_V6, 80), TCP_SYN)
        .fragment(1, 0, false)
        .build();
    expect(&mut dp, DIR_EGRESS, &atomic, true, "an atomic fragment");

    let mut delta = |index| dp.stats_grown(&before, index);
    assert_eq!(delta(STAT_FRAGMENTS), 5);
    assert_eq!(delta(DROP_FRAGMENT), 2);
}
