//! The TC programs' policy decisions, run with BPF_PROG_TEST_RUN on crafted frames against
//! maps filled by hand: table cells and port ranges, ICMP type and code, the protocol
//! fallback, peer groups, CIDR classes and the world, slots and
//! generations, anti-spoofing, and the host's own traffic.
//!
//! Privileged: run through `cargo xtask test` as root.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use palisade_common::{
    CONFIG_HOST_TO_WORKLOAD_POLICY, CONFIG_WORKLOAD_TO_HOST_ACCEPT, Config, DIR_EGRESS,
    DIR_INGRESS, DROP_NOT_LOCAL, DROP_POLICY, DROP_SPOOFED, DROP_TO_HOST, STAT_CT_NEW,
    STAT_HOST_TO_WORKLOAD,
};
use palisade_tests::{
    bpf_maps::{ALLOW, DENY, Rows},
    bpf_run::SkbContext,
    bpf_scenario::{
        ANY_V4, ANY_V6, IFINDEX, LOCAL_ID, PEER_ID, PEER_V4, PEER_V6, STRANGER_V4, STRANGER_V6,
        WORKLOAD_V4, WORKLOAD_V6, WORLD_ID, dataplane_with_workload, expect, expect_in,
        install_workload, policy_for_every_peer, set_generation, sock, uniform_policy,
    },
    packet::{
        Frame, IPPROTO_GRE, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP,
        TCP_SYN,
    },
    require_root,
};

const HOST_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 65, 255, 254));

#[test]
fn destination_port_ranges_decide_tcp_and_udp() {
    require_root();
    let mut dp = dataplane_with_workload(0);
    // Egress: TCP to 80 and to 8000-8999, UDP to 53; nothing else.
    policy_for_every_peer(
        &mut dp,
        0,
        DIR_EGRESS,
        1,
        Some(IPPROTO_TCP),
        &Rows::default().row(
            0,
            &[
                (0, DENY),
                (80, ALLOW),
                (81, DENY),
                (8000, ALLOW),
                (9000, DENY),
            ],
        ),
    );
    dp.table(
        0,
        1,
        Some(IPPROTO_UDP),
        &Rows::default().row(0, &[(0, DENY), (53, ALLOW), (54, DENY)]),
    );

    let cases = [
        (0, false),
        (79, false),
        (80, true),
        (81, false),
        (7999, false),
        (8000, true),
        (8999, true),
        (9000, false),
        (65535, false),
    ];
    for (i, (port, pass)) in cases.into_iter().enumerate() {
        // A new source port each time, so that no packet rides on an earlier one's flow.
        let src = 40000 + i as u16;
        for (workload, peer) in [(WORKLOAD_V4, PEER_V4), (WORKLOAD_V6, PEER_V6)] {
            let tcp = Frame::tcp(sock(workload, src), sock(peer, port), TCP_SYN).build();
            expect(
                &mut dp,
                DIR_EGRESS,
                &tcp,
                pass,
                &format!("TCP to {peer} port {port}"),
            );
        }
        let udp = Frame::udp(sock(WORKLOAD_V4, src), sock(PEER_V4, port)).build();
        expect(
            &mut dp,
            DIR_EGRESS,
            &udp,
            port == 53,
            &format!("UDP to port {port}"),
        );
    }
}

#[test]
fn source_port_rows_decide_ingress() {
    require_root();
    let mut dp = dataplane_with_workload(0);
    // Ingress TCP: from source ports 1024 and up, to port 22 only.
    policy_for_every_peer(
        &mut dp,
        0,
        DIR_INGRESS,
        1,
        Some(IPPROTO_TCP),
        &Rows::default()
            .row(0, &[(0, DENY)])
            .row(1024, &[(0, DENY), (22, ALLOW), (23, DENY)]),
    );
    for (src, dst, pass) in [
        (1023, 22, false),
        (1024, 22, true),
        (65535, 22, true),
        (40000, 23, false),
        (40001, 21, false),
    ] {
        let frame = Frame::tcp(sock(PEER_V4, src), sock(WORKLOAD_V4, dst), TCP_SYN).build();
        expect(
            &mut dp,
            DIR_INGRESS,
            &frame,
            pass,
            &format!("TCP from port {src} to port {dst}"),
        );
    }
}

#[test]
fn icmp_type_and_code_decide_icmp() {
    require_root();
    let mut dp = dataplane_with_workload(0);
    // Echo requests with code 0 only, per family.
    policy_for_every_peer(
        &mut dp,
        0,
        DIR_EGRESS,
        1,
        Some(IPPROTO_ICMP),
        &Rows::default()
            .row(0, &[(0, DENY)])
            .row(8, &[(0, ALLOW), (1, DENY)])
            .row(9, &[(0, DENY)]),
    );
    dp.table(
        0,
        1,
        Some(IPPROTO_ICMPV6),
        &Rows::default()
            .row(0, &[(0, DENY)])
            .row(128, &[(0, ALLOW), (1, DENY)])
            .row(129, &[(0, DENY)]),
    );
    let cases = [
        (WORKLOAD_V4, PEER_V4, 8, 0, true),
        (WORKLOAD_V4, PEER_V4, 8, 1, false),
        (WORKLOAD_V4, PEER_V4, 13, 0, false),
        (WORKLOAD_V4, PEER_V4, 3, 3, false),
        (WORKLOAD_V6, PEER_V6, 128, 0, true),
        (WORKLOAD_V6, PEER_V6, 128, 1, false),
        (WORKLOAD_V6, PEER_V6, 1, 4, false),
    ];
    for (i, (src, dst, icmp_type, code, pass)) in cases.into_iter().enumerate() {
        let frame = Frame::icmp(src, dst, icmp_type, code, 100 + i as u16).build();
        expect(
            &mut dp,
            DIR_EGRESS,
            &frame,
            pass,
            &format!("ICMP type {icmp_type} code {code} to {dst}"),
        );
    }
}

#[test]
fn protocols_without_rows_of_their_own_use_protocol_other() {
    require_root();
    let mut dp = dataplane_with_workload(0);
    // Egress: TCP allowed, every other protocol denied.
    policy_for_every_peer(
        &mut dp,
        0,
        DIR_EGRESS,
        1,
        Some(IPPROTO_TCP),
        &Rows::uniform(ALLOW),
    );
    dp.table(0, 1, None, &Rows::uniform(DENY));
    // Ingress: only the fallback, allowing everything.
    uniform_policy(&mut dp, 0, DIR_INGRESS, 2, ALLOW);

    let tcp = Frame::tcp(sock(WORKLOAD_V4, 40000), sock(PEER_V4, 80), TCP_SYN).build();
    expect(&mut dp, DIR_EGRESS, &tcp, true, "TCP has its own rows");
    let udp = Frame::udp(sock(WORKLOAD_V4, 40000), sock(PEER_V4, 53)).build();
    expect(
        &mut dp,
        DIR_EGRESS,
        &udp,
        false,
        "UDP falls back to PROTOCOL_OTHER",
    );
    let gre = Frame::raw(WORKLOAD_V4, PEER_V4, IPPROTO_GRE, vec![0; 8]).build();
    expect(
        &mut dp,
        DIR_EGRESS,
        &gre,
        false,
        "GRE falls back to PROTOCOL_OTHER",
    );

    let gre_in = Frame::raw(PEER_V6, WORKLOAD_V6, IPPROTO_GRE, vec![0; 8]).build();
    expect(
        &mut dp,
        DIR_INGRESS,
        &gre_in,
        true,
        "GRE in, by PROTOCOL_OTHER",
    );
    let icmp_in = Frame::icmp(PEER_V4, WORKLOAD_V4, 8, 0, 1).build();
    expect(
        &mut dp,
        DIR_INGRESS,
        &icmp_in,
        true,
        "ICMP in, by PROTOCOL_OTHER",
    );
}

#[test]
fn sctp_is_decided_without_ports() {
    require_root();
    let mut dp = dataplane_with_workload(0);
    // Calico v1 rules have ports for TCP and UDP only: SCTP's table keys are (0, 0). A table
    // that allows exactly (0, 0) shows which keys the program used.
    policy_for_every_peer(
        &mut dp,
        0,
        DIR_EGRESS,
        1,
        Some(IPPROTO_SCTP),
        &Rows::default()
            .row(0, &[(0, ALLOW), (1, DENY)])
            .row(1, &[(0, DENY)]),
    );
    let sctp = Frame::sctp(sock(WORKLOAD_V4, 5000), sock(PEER_V4, 6000)).build();
    expect(
        &mut dp,
        DIR_EGRESS,
        &sctp,
        true,
        "SCTP with ports 5000 -> 6000",
    );
}

#[test]
fn a_peer_in_a_group_of_its_own_gets_that_group_s_table() {
    require_root();
    let mut dp = dataplane_with_workload(0);
    uniform_policy(&mut dp, 0, DIR_EGRESS, 1, DENY);
    dp.peer(0, DIR_EGRESS, LOCAL_ID, PEER_ID, 1);
    dp.group(0, DIR_EGRESS, LOCAL_ID, 1, 2);
    dp.table(0, 2, None, &Rows::uniform(ALLOW));

    for (workload, peer, stranger) in [
        (WORKLOAD_V4, PEER_V4, STRANGER_V4),
        (WORKLOAD_V6, PEER_V6, STRANGER_V6),
    ] {
        let to_peer = Frame::tcp(sock(workload, 40000), sock(peer, 80), TCP_SYN).build();
        expect(
            &mut dp,
            DIR_EGRESS,
            &to_peer,
            true,
            "to the peer, by its group",
        );
        let to_stranger = Frame::tcp(sock(workload, 40000), sock(stranger, 80), TCP_SYN).build();
        expect(
            &mut dp,
            DIR_EGRESS,
            &to_stranger,
            false,
            "to the world, by group 0",
        );
    }
}

#[test]
fn cidr_classes_take_the_longest_prefix_and_exact_entries_win() {
    require_root();
    let mut dp = dataplane_with_workload(0);
    let class_16 = 2;
    let class_24 = 3;
    dp.cidr(0, IpAddr::V4(Ipv4Addr::new(10, 70, 0, 0)), 16, class_16);
    dp.cidr(0, IpAddr::V4(Ipv4Addr::new(10, 70, 5, 0)), 24, class_24);
    // The peer's /16 is a denied class, but the peer has an exact entry.
    dp.cidr(0, IpAddr::V4(Ipv4Addr::new(10, 65, 0, 0)), 16, class_24);
    dp.cidr(
        0,
        IpAddr::V6(Ipv6Addr::new(0xfd00, 0x70, 0, 0, 0, 0, 0, 0)),
        32,
        class_16,
    );
    uniform_policy(&mut dp, 0, DIR_EGRESS, 1, DENY);
    for (remote, group, table, decides) in [
        (class_16, 1, 2, ALLOW),
        (class_24, 2, 3, DENY),
        (PEER_ID, 3, 4, ALLOW),
    ] {
        dp.peer(0, DIR_EGRESS, LOCAL_ID, remote, group);
        dp.group(0, DIR_EGRESS, LOCAL_ID, group, table);
        dp.table(0, table, None, &Rows::uniform(decides));
    }

    let cases = [
        (WORKLOAD_V4, IpAddr::V4(Ipv4Addr::new(10, 70, 1, 1)), true),
        (WORKLOAD_V4, IpAddr::V4(Ipv4Addr::new(10, 70, 5, 1)), false),
        (WORKLOAD_V4, IpAddr::V4(Ipv4Addr::new(10, 71, 0, 1)), false),
        (WORKLOAD_V4, PEER_V4, true),
        (WORKLOAD_V4, IpAddr::V4(Ipv4Addr::new(10, 65, 0, 3)), false),
        (
            WORKLOAD_V6,
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0x70, 9, 0, 0, 0, 0, 1)),
            true,
        ),
        (WORKLOAD_V6, STRANGER_V6, false),
    ];
    for (workload, peer, pass) in cases {
        let frame = Frame::udp(sock(workload, 40000), sock(peer, 53)).build();
        expect(&mut dp, DIR_EGRESS, &frame, pass, &format!("UDP to {peer}"));
    }
}

#[test]
fn the_world_entry_classifies_everything_else_and_without_it_policy_denies() {
    require_root();
    let mut dp = dataplane_with_workload(0);
    uniform_policy(&mut dp, 0, DIR_EGRESS, 1, DENY);
    dp.peer(0, DIR_EGRESS, LOCAL_ID, WORLD_ID, 1);
    dp.group(0, DIR_EGRESS, LOCAL_ID, 1, 2);
    dp.table(0, 2, None, &Rows::uniform(ALLOW));

    let before = dp.stats();
    let to_world = Frame::udp(sock(WORKLOAD_V4, 40000), sock(STRANGER_V4, 53)).build();
    expect(
        &mut dp,
        DIR_EGRESS,
        &to_world,
        true,
        "to the world, by the world's entry",
    );

    dp.remove_cidr(0, ANY_V4, 0);
    dp.remove_cidr(0, ANY_V6, 0);
    let other_port = Frame::udp(sock(WORKLOAD_V4, 40001), sock(STRANGER_V4, 53)).build();
    expect(
        &mut dp,
        DIR_EGRESS,
        &other_port,
        false,
        "no remote ID at all",
    );
    let v6 = Frame::udp(sock(WORKLOAD_V6, 40001), sock(STRANGER_V6, 53)).build();
    expect(
        &mut dp,
        DIR_EGRESS,
        &v6,
        false,
        "no remote ID at all (IPv6)",
    );
    assert_eq!(dp.stats_grown(&before, DROP_POLICY), 2);
    assert_eq!(dp.stats_grown(&before, STAT_CT_NEW), 1);
}

#[test]
fn the_generation_selects_the_slot_a_packet_sees() {
    require_root();
    let mut dp = dataplane_with_workload(0);
    uniform_policy(&mut dp, 0, DIR_EGRESS, 1, ALLOW);
    install_workload(&mut dp, 1);
    uniform_policy(&mut dp, 1, DIR_EGRESS, 1, DENY);

    for (generation, pass) in [(0, true), (1, false), (2, true), (3, false)] {
        set_generation(&mut dp, generation);
        let frame = Frame::udp(
            sock(WORKLOAD_V4, 40000 + generation as u16),
            sock(PEER_V4, 53),
        )
        .build();
        expect(
            &mut dp,
            DIR_EGRESS,
            &frame,
            pass,
            &format!("a new flow under generation {generation}"),
        );
    }

    // Identity is slotted too: without the workload in slot 1, generation 5 sees a stranger.
    dp.remove_local(1, IFINDEX, WORKLOAD_V4);
    set_generation(&mut dp, 5);
    let before = dp.stats();
    let frame = Frame::udp(sock(WORKLOAD_V4, 41000), sock(PEER_V4, 53)).build();
    expect(
        &mut dp,
        DIR_EGRESS,
        &frame,
        false,
        "from an address slot 1 does not know",
    );
    assert_eq!(dp.stats_grown(&before, DROP_SPOOFED), 1);
}

#[test]
fn packets_from_addresses_not_the_workloads_own_are_spoofed() {
    require_root();
    let mut dp = dataplane_with_workload(0);
    uniform_policy(&mut dp, 0, DIR_EGRESS, 1, ALLOW);
    uniform_policy(&mut dp, 0, DIR_INGRESS, 2, ALLOW);
    // Another workload's address, behind another host veth.
    let elsewhere = IpAddr::V4(Ipv4Addr::new(10, 65, 0, 50));
    dp.local(0, 999, elsewhere, LOCAL_ID);

    let before = dp.stats();
    for src in [STRANGER_V4, elsewhere, PEER_V4] {
        let frame = Frame::udp(sock(src, 40000), sock(PEER_V4, 53)).build();
        expect(&mut dp, DIR_EGRESS, &frame, false, &format!("from {src}"));
    }
    let v6 = Frame::udp(sock(STRANGER_V6, 40000), sock(PEER_V6, 53)).build();
    expect(
        &mut dp,
        DIR_EGRESS,
        &v6,
        false,
        "from a foreign IPv6 address",
    );
    let own = Frame::udp(sock(WORKLOAD_V4, 40000), sock(PEER_V4, 53)).build();
    expect(
        &mut dp,
        DIR_EGRESS,
        &own,
        true,
        "from the workload's own address",
    );
    let after = dp.stats();
    assert_eq!(dp.stats_grown(&before, DROP_SPOOFED), 4);

    for dst in [STRANGER_V4, elsewhere] {
        let frame = Frame::udp(sock(PEER_V4, 53), sock(dst, 40000)).build();
        expect(&mut dp, DIR_INGRESS, &frame, false, &format!("to {dst}"));
    }
    assert_eq!(dp.stats_grown(&after, DROP_NOT_LOCAL), 2);
}

#[test]
fn the_host_reaches_its_workloads_unless_told_to_police_it() {
    require_root();
    let mut dp = dataplane_with_workload(0);
    uniform_policy(&mut dp, 0, DIR_INGRESS, 1, DENY);
    uniform_policy(&mut dp, 0, DIR_EGRESS, 2, DENY);
    dp.host_addr(HOST_V4);

    let before = dp.stats();
    let from_host = Frame::tcp(sock(HOST_V4, 50000), sock(WORKLOAD_V4, 22), TCP_SYN).build();
    expect_in(
        &mut dp,
        DIR_INGRESS,
        &from_host,
        SkbContext::FROM_HOST_ON_LO,
        true,
        "made by the host",
    );
    assert_eq!(dp.stats_grown(&before, STAT_HOST_TO_WORKLOAD), 1);
    // The workload's answer goes to the host, which egress policy and the to-host rule
    // would both stop: conntrack lets it through.
    let reply = Frame::tcp(sock(WORKLOAD_V4, 22), sock(HOST_V4, 50000), 0x12).build();
    expect(&mut dp, DIR_EGRESS, &reply, true, "the reply to the host");

    let forwarded = Frame::tcp(sock(HOST_V4, 50001), sock(WORKLOAD_V4, 22), TCP_SYN).build();
    expect(
        &mut dp,
        DIR_INGRESS,
        &forwarded,
        false,
        "the same, forwarded",
    );

    dp.set_config(Config {
        flags: CONFIG_HOST_TO_WORKLOAD_POLICY,
        ..Config::default()
    });
    let policed = Frame::tcp(sock(HOST_V4, 50002), sock(WORKLOAD_V4, 22), TCP_SYN).build();
    expect_in(
        &mut dp,
        DIR_INGRESS,
        &policed,
        SkbContext::FROM_HOST_ON_LO,
        false,
        "made by the host, under CONFIG_HOST_TO_WORKLOAD_POLICY",
    );
}

#[test]
fn workloads_reach_the_host_only_when_told_to_accept() {
    require_root();
    let mut dp = dataplane_with_workload(0);
    uniform_policy(&mut dp, 0, DIR_EGRESS, 1, ALLOW);
    dp.host_addr(HOST_V4);

    let before = dp.stats();
    let to_host = Frame::tcp(sock(WORKLOAD_V4, 40000), sock(HOST_V4, 10250), TCP_SYN).build();
    expect(
        &mut dp,
        DIR_EGRESS,
        &to_host,
        false,
        "to the host, allowed by policy",
    );
    assert_eq!(dp.stats_grown(&before, DROP_TO_HOST), 1);
    let to_peer = Frame::tcp(sock(WORKLOAD_V4, 40000), sock(PEER_V4, 10250), TCP_SYN).build();
    expect(&mut dp, DIR_EGRESS, &to_peer, true, "to a peer");

    dp.set_config(Config {
        flags: CONFIG_WORKLOAD_TO_HOST_ACCEPT,
        ..Config::default()
    });
    let accepted = Frame::tcp(sock(WORKLOAD_V4, 40001), sock(HOST_V4, 10250), TCP_SYN).build();
    expect(
        &mut dp,
        DIR_EGRESS,
        &accepted,
        true,
        "to the host, under CONFIG_WORKLOAD_TO_HOST_ACCEPT",
    );

    // Policy still comes first: what it denies is a policy drop, switch or not.
    let mut dp = dataplane_with_workload(0);
    uniform_policy(&mut dp, 0, DIR_EGRESS, 1, DENY);
    dp.host_addr(HOST_V4);
    let before = dp.stats();
    expect(
        &mut dp,
        DIR_EGRESS,
        &to_host,
        false,
        "to the host, denied by policy",
    );
    let after = dp.stats();
    assert_eq!(dp.stats_grown(&before, DROP_POLICY), 1);
    assert_eq!(after[DROP_TO_HOST as usize], before[DROP_TO_HOST as usize]);
}
