//! Conntrack in the TC programs: replies of allowed flows pass although the replying side's
//! policy denies them, established flows pass, a new generation re-checks live flows
//! (keeping or revoking them), ICMP echo shares an entry by identifier, and FIN/RST close.
//!
//! Expiry is by time (`CT_TIMEOUT_*`) and not tested here.
//!
//! Privileged: run through `cargo xtask test` as root.

use std::net::{IpAddr, Ipv4Addr};

use palisade_common::{
    CT_CLOSING, CtKey, CtValue, DIR_EGRESS, DIR_INGRESS, DROP_POLICY, DROP_REVOKED,
    DROP_TCP_WITHOUT_FLOW, STAT_CT_ESTABLISHED, STAT_CT_NEW, STAT_CT_RECHECKED,
};
use palisade_tests::{
    bpf_maps::{ALLOW, DENY, Dataplane, Rows, addr_of},
    bpf_run::SkbContext,
    bpf_scenario::{
        IFINDEX, PEER_V4, PEER_V6, WORKLOAD_V4, WORKLOAD_V6, dataplane_with_workload, expect,
        expect_in, install_workload, policy_for_every_peer, set_generation, sock, uniform_policy,
    },
    packet::{
        Frame, IPPROTO_GRE, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, TCP_ACK,
        TCP_FIN, TCP_RST, TCP_SYN,
    },
    require_root,
};

const SYN_ACK: u8 = TCP_SYN | TCP_ACK;

/// The one `PAL_CT` entry there must be.
#[track_caller]
fn only_entry(dp: &mut Dataplane) -> (CtKey, CtValue) {
    let entries = dp.conntrack();
    assert_eq!(
        entries.len(),
        1,
        "expected one conntrack entry: {entries:?}"
    );
    entries[0]
}

fn stat(dp: &mut Dataplane, index: u32) -> u64 {
    dp.stats()[index as usize]
}

#[test]
fn replies_pass_although_the_replying_side_denies_them() {
    require_root();
    let mut dp = dataplane_with_workload(0);
    uniform_policy(&mut dp, 0, DIR_EGRESS, 1, ALLOW);
    uniform_policy(&mut dp, 0, DIR_INGRESS, 2, DENY);

    let syn = Frame::tcp(sock(WORKLOAD_V4, 40000), sock(PEER_V4, 80), TCP_SYN).build();
    expect(&mut dp, DIR_EGRESS, &syn, true, "the workload's SYN");
    let (key, value) = only_entry(&mut dp);
    assert_eq!(key.ifindex, IFINDEX);
    assert_eq!(key.protocol, IPPROTO_TCP);
    assert_eq!((key.local_port, key.remote_port), (40000, 80));
    assert_eq!(key.local_addr, addr_of(WORKLOAD_V4).1);
    assert_eq!(key.remote_addr, addr_of(PEER_V4).1);
    assert_eq!(
        (value.origin, value.generation, value.flags),
        (DIR_EGRESS, 0, 0)
    );

    let syn_ack = Frame::tcp(sock(PEER_V4, 80), sock(WORKLOAD_V4, 40000), SYN_ACK).build();
    expect(&mut dp, DIR_INGRESS, &syn_ack, true, "the peer's SYN-ACK");
    let other = Frame::tcp(sock(PEER_V4, 80), sock(WORKLOAD_V4, 40001), SYN_ACK).build();
    expect(&mut dp, DIR_INGRESS, &other, false, "a segment of no flow");

    for (workload, peer) in [(WORKLOAD_V4, PEER_V4), (WORKLOAD_V6, PEER_V6)] {
        let query = Frame::udp(sock(workload, 5353), sock(peer, 53)).build();
        expect(&mut dp, DIR_EGRESS, &query, true, "a UDP query");
        let answer = Frame::udp(sock(peer, 53), sock(workload, 5353)).build();
        expect(&mut dp, DIR_INGRESS, &answer, true, "its answer");
        let stray = Frame::udp(sock(peer, 54), sock(workload, 5353)).build();
        expect(
            &mut dp,
            DIR_INGRESS,
            &stray,
            false,
            "a datagram from another port",
        );
    }

    let gre = Frame::raw(WORKLOAD_V4, PEER_V4, IPPROTO_GRE, vec![0; 8]).build();
    expect(&mut dp, DIR_EGRESS, &gre, true, "GRE out");
    let gre_back = Frame::raw(PEER_V4, WORKLOAD_V4, IPPROTO_GRE, vec![0; 8]).build();
    expect(
        &mut dp,
        DIR_INGRESS,
        &gre_back,
        true,
        "GRE back, by address alone",
    );
}

#[test]
fn flows_the_peer_opens_are_tracked_from_the_workloads_side() {
    require_root();
    let mut dp = dataplane_with_workload(0);
    uniform_policy(&mut dp, 0, DIR_INGRESS, 1, ALLOW);
    uniform_policy(&mut dp, 0, DIR_EGRESS, 2, DENY);

    let syn = Frame::tcp(sock(PEER_V6, 50000), sock(WORKLOAD_V6, 22), TCP_SYN).build();
    expect(&mut dp, DIR_INGRESS, &syn, true, "the peer's SYN");
    let (key, value) = only_entry(&mut dp);
    assert_eq!((key.local_port, key.remote_port), (22, 50000));
    assert_eq!(key.local_addr, addr_of(WORKLOAD_V6).1);
    assert_eq!(value.origin, DIR_INGRESS);

    let syn_ack = Frame::tcp(sock(WORKLOAD_V6, 22), sock(PEER_V6, 50000), SYN_ACK).build();
    expect(
        &mut dp,
        DIR_EGRESS,
        &syn_ack,
        true,
        "the workload's SYN-ACK",
    );
    let elsewhere = Frame::tcp(sock(WORKLOAD_V6, 22), sock(PEER_V6, 50001), SYN_ACK).build();
    expect(
        &mut dp,
        DIR_EGRESS,
        &elsewhere,
        false,
        "to a port of no flow",
    );
}

#[test]
fn established_packets_are_counted_as_such() {
    require_root();
    let mut dp = dataplane_with_workload(0);
    uniform_policy(&mut dp, 0, DIR_EGRESS, 1, ALLOW);
    let syn = Frame::tcp(sock(WORKLOAD_V4, 40000), sock(PEER_V4, 80), TCP_SYN).build();
    let ack = Frame::tcp(sock(WORKLOAD_V4, 40000), sock(PEER_V4, 80), TCP_ACK).build();
    let reply = Frame::tcp(sock(PEER_V4, 80), sock(WORKLOAD_V4, 40000), TCP_ACK).build();
    expect(&mut dp, DIR_EGRESS, &syn, true, "SYN");
    let (new, established) = (
        stat(&mut dp, STAT_CT_NEW),
        stat(&mut dp, STAT_CT_ESTABLISHED),
    );
    for _ in 0..3 {
        expect(&mut dp, DIR_EGRESS, &ack, true, "ACK");
        expect(&mut dp, DIR_INGRESS, &reply, true, "reply");
    }
    assert_eq!(stat(&mut dp, STAT_CT_NEW), new);
    assert_eq!(stat(&mut dp, STAT_CT_ESTABLISHED) - established, 6);
}

#[test]
fn only_a_syn_opens_a_tcp_flow() {
    require_root();
    let mut dp = dataplane_with_workload(0);
    uniform_policy(&mut dp, 0, DIR_EGRESS, 1, ALLOW);
    uniform_policy(&mut dp, 0, DIR_INGRESS, 1, ALLOW);
    let before = stat(&mut dp, DROP_TCP_WITHOUT_FLOW);
    // Allowed both ways by policy, yet no SYN: a connection palisade never admitted (or
    // revoked) is not opened again by its mid-stream packets.
    for (direction, frame) in [
        (
            DIR_EGRESS,
            Frame::tcp(sock(WORKLOAD_V4, 40000), sock(PEER_V4, 80), TCP_ACK),
        ),
        (
            DIR_INGRESS,
            Frame::tcp(sock(PEER_V4, 80), sock(WORKLOAD_V4, 40000), TCP_ACK),
        ),
        (
            DIR_EGRESS,
            Frame::tcp(
                sock(WORKLOAD_V4, 40001),
                sock(PEER_V4, 80),
                TCP_FIN | TCP_ACK,
            ),
        ),
    ] {
        expect(&mut dp, direction, &frame.build(), false, "TCP without SYN");
    }
    assert_eq!(stat(&mut dp, DROP_TCP_WITHOUT_FLOW) - before, 3);
    let syn = Frame::tcp(sock(WORKLOAD_V4, 40000), sock(PEER_V4, 80), TCP_SYN).build();
    expect(&mut dp, DIR_EGRESS, &syn, true, "a SYN opens it");
}

/// Slot 0 allows, per direction: TCP to port 80 out, UDP to 53 in, echo requests out.
/// Slot 1 gets `slot1_allows` for the same (or denies everything).
fn flows_across_a_generation_change(slot1_allows: bool) -> (Dataplane, [Vec<u8>; 3]) {
    let mut dp = dataplane_with_workload(0);
    install_workload(&mut dp, 1);
    for slot in [0, 1] {
        let (allow, deny) = if slot == 0 || slot1_allows {
            (ALLOW, DENY)
        } else {
            (DENY, DENY)
        };
        // Only the original orientation is allowed: a re-check that looked at a reply
        // as if it opened the flow would deny it.
        let tcp_out = Rows::default().row(0, &[(0, deny), (80, allow), (81, deny)]);
        policy_for_every_peer(&mut dp, slot, DIR_EGRESS, 1, Some(IPPROTO_TCP), &tcp_out);
        let echo_out = Rows::default()
            .row(0, &[(0, deny)])
            .row(8, &[(0, allow), (1, deny)])
            .row(9, &[(0, deny)]);
        dp.table(slot, 1, Some(IPPROTO_ICMP), &echo_out);
        dp.table(slot, 1, None, &Rows::uniform(DENY));
        let udp_in = Rows::default().row(0, &[(0, deny), (53, allow), (54, deny)]);
        policy_for_every_peer(&mut dp, slot, DIR_INGRESS, 2, Some(IPPROTO_UDP), &udp_in);
        dp.table(slot, 2, None, &Rows::uniform(DENY));
    }

    let syn = Frame::tcp(sock(WORKLOAD_V4, 40000), sock(PEER_V4, 80), TCP_SYN).build();
    expect(&mut dp, DIR_EGRESS, &syn, true, "TCP out");
    let query = Frame::udp(sock(PEER_V4, 5353), sock(WORKLOAD_V4, 53)).build();
    expect(&mut dp, DIR_INGRESS, &query, true, "UDP in");
    let ping = Frame::icmp(WORKLOAD_V4, PEER_V4, 8, 0, 77).build();
    expect(&mut dp, DIR_EGRESS, &ping, true, "echo request out");
    assert_eq!(dp.conntrack().len(), 3);

    // The next packet of each flow, in the reply direction.
    let replies = [
        Frame::tcp(sock(PEER_V4, 80), sock(WORKLOAD_V4, 40000), SYN_ACK).build(),
        Frame::udp(sock(WORKLOAD_V4, 53), sock(PEER_V4, 5353)).build(),
        Frame::icmp(PEER_V4, WORKLOAD_V4, 0, 0, 77).build(),
    ];
    (dp, replies)
}

/// Sends the replies of [`flows_across_a_generation_change`], each in its direction, and
/// expects `allowed` of each.
fn expect_replies(dp: &mut Dataplane, replies: &[Vec<u8>; 3], allowed: bool, why: &str) {
    let directions = [DIR_INGRESS, DIR_EGRESS, DIR_INGRESS];
    for (reply, direction) in replies.iter().zip(directions) {
        expect(dp, direction, reply, allowed, why);
    }
}

#[test]
fn a_new_generation_rechecks_live_flows_and_keeps_the_allowed() {
    require_root();
    let (mut dp, replies) = flows_across_a_generation_change(true);
    set_generation(&mut dp, 1);
    let rechecked = stat(&mut dp, STAT_CT_RECHECKED);
    expect_replies(&mut dp, &replies, true, "a reply under the new generation");
    assert_eq!(stat(&mut dp, STAT_CT_RECHECKED) - rechecked, 3);
    for (key, value) in dp.conntrack() {
        assert_eq!(
            value.generation, 1,
            "entry {key:?} was not moved to generation 1"
        );
    }

    let established = stat(&mut dp, STAT_CT_ESTABLISHED);
    expect_replies(&mut dp, &replies, true, "a reply once re-checked");
    assert_eq!(stat(&mut dp, STAT_CT_ESTABLISHED) - established, 3);
    assert_eq!(stat(&mut dp, STAT_CT_RECHECKED) - rechecked, 3);
}

#[test]
fn a_new_generation_revokes_the_flows_it_denies() {
    require_root();
    let (mut dp, replies) = flows_across_a_generation_change(false);
    set_generation(&mut dp, 1);
    let revoked = stat(&mut dp, DROP_REVOKED);
    expect_replies(&mut dp, &replies, false, "a reply of a revoked flow");
    assert_eq!(stat(&mut dp, DROP_REVOKED) - revoked, 3);
    assert!(dp.conntrack().is_empty(), "revoked entries must be deleted");

    // Now they are new flows, and policy denies them.
    let denied = stat(&mut dp, DROP_POLICY);
    expect_replies(&mut dp, &replies, false, "the same packet, as a new flow");
    assert_eq!(stat(&mut dp, DROP_POLICY) - denied, 3);
}

#[test]
fn icmp_echo_replies_share_the_requests_entry_by_identifier() {
    require_root();
    let mut dp = dataplane_with_workload(0);
    uniform_policy(&mut dp, 0, DIR_EGRESS, 1, ALLOW);
    uniform_policy(&mut dp, 0, DIR_INGRESS, 2, DENY);

    for (workload, peer, protocol, request, reply) in [
        (WORKLOAD_V4, PEER_V4, IPPROTO_ICMP, 8, 0),
        (WORKLOAD_V6, PEER_V6, IPPROTO_ICMPV6, 128, 129),
    ] {
        let ping = Frame::icmp(workload, peer, request, 0, 7).build();
        expect(&mut dp, DIR_EGRESS, &ping, true, "echo request");
        let entry = dp
            .conntrack()
            .into_iter()
            .find(|(key, _)| key.protocol == protocol)
            .unwrap_or_else(|| panic!("no entry for the echo request"));
        assert_eq!((entry.0.local_port, entry.0.remote_port), (7, 0));
        assert_eq!((entry.1.icmp_type, entry.1.icmp_code), (request, 0));

        let pong = Frame::icmp(peer, workload, reply, 0, 7).build();
        expect(&mut dp, DIR_INGRESS, &pong, true, "its echo reply");
        let other_id = Frame::icmp(peer, workload, reply, 0, 8).build();
        expect(
            &mut dp,
            DIR_INGRESS,
            &other_id,
            false,
            "a reply with another identifier",
        );
        let request_in = Frame::icmp(peer, workload, request, 0, 7).build();
        expect(
            &mut dp,
            DIR_INGRESS,
            &request_in,
            false,
            "a request the other way, same id",
        );
        let error = Frame::icmp(peer, workload, if request == 8 { 3 } else { 1 }, 1, 0).build();
        expect(
            &mut dp,
            DIR_INGRESS,
            &error,
            false,
            "an ICMP error: policy decides",
        );
    }
    assert_eq!(dp.conntrack().len(), 2, "only echo requests open entries");
}

#[test]
fn sctp_flows_are_tracked_by_port() {
    require_root();
    let mut dp = dataplane_with_workload(0);
    uniform_policy(&mut dp, 0, DIR_EGRESS, 1, ALLOW);
    uniform_policy(&mut dp, 0, DIR_INGRESS, 2, DENY);
    let init = Frame::sctp(sock(WORKLOAD_V4, 5000), sock(PEER_V4, 6000)).build();
    expect(&mut dp, DIR_EGRESS, &init, true, "SCTP out");
    let (key, _) = only_entry(&mut dp);
    assert_eq!((key.local_port, key.remote_port), (5000, 6000));
    let back = Frame::sctp(sock(PEER_V4, 6000), sock(WORKLOAD_V4, 5000)).build();
    expect(&mut dp, DIR_INGRESS, &back, true, "SCTP back");
    let other = Frame::sctp(sock(PEER_V4, 6001), sock(WORKLOAD_V4, 5000)).build();
    expect(
        &mut dp,
        DIR_INGRESS,
        &other,
        false,
        "SCTP from another port",
    );
}

#[test]
fn fin_and_rst_close_a_flow_and_a_bare_syn_reopens_it_through_policy() {
    require_root();
    for closing in [TCP_FIN | TCP_ACK, TCP_RST] {
        let mut dp = dataplane_with_workload(0);
        uniform_policy(&mut dp, 0, DIR_EGRESS, 1, ALLOW);
        uniform_policy(&mut dp, 0, DIR_INGRESS, 2, DENY);
        let syn = Frame::tcp(sock(WORKLOAD_V4, 40000), sock(PEER_V4, 80), TCP_SYN).build();
        expect(&mut dp, DIR_EGRESS, &syn, true, "SYN");
        assert_eq!(only_entry(&mut dp).1.flags & CT_CLOSING, 0);

        let fin = Frame::tcp(sock(PEER_V4, 80), sock(WORKLOAD_V4, 40000), closing).build();
        expect(&mut dp, DIR_INGRESS, &fin, true, "FIN or RST of the flow");
        assert_eq!(only_entry(&mut dp).1.flags & CT_CLOSING, CT_CLOSING);

        let last_ack = Frame::tcp(sock(PEER_V4, 80), sock(WORKLOAD_V4, 40000), TCP_ACK).build();
        expect(
            &mut dp,
            DIR_INGRESS,
            &last_ack,
            true,
            "the last ACK of a closing flow",
        );
        // The peer reuses the tuple for a connection of its own: ingress policy decides.
        let reopen = Frame::tcp(sock(PEER_V4, 80), sock(WORKLOAD_V4, 40000), TCP_SYN).build();
        expect(
            &mut dp,
            DIR_INGRESS,
            &reopen,
            false,
            "a bare SYN over a closing flow",
        );
    }
}

#[test]
fn flows_the_host_opened_stay_open_under_a_new_generation() {
    require_root();
    let host = IpAddr::V4(Ipv4Addr::new(10, 65, 255, 254));
    let mut dp = dataplane_with_workload(0);
    install_workload(&mut dp, 1);
    for slot in [0, 1] {
        uniform_policy(&mut dp, slot, DIR_INGRESS, 1, DENY);
        uniform_policy(&mut dp, slot, DIR_EGRESS, 2, DENY);
    }
    dp.host_addr(host);
    let probe = Frame::tcp(sock(host, 50000), sock(WORKLOAD_V4, 8080), TCP_SYN).build();
    expect_in(
        &mut dp,
        DIR_INGRESS,
        &probe,
        SkbContext::FROM_HOST_ON_LO,
        true,
        "the host's SYN",
    );

    // Whether the opening packet came from the host is not kept with the flow: the host's
    // addresses tell, so the re-check keeps the flow although ingress policy denies it.
    set_generation(&mut dp, 1);
    let answer = Frame::tcp(sock(WORKLOAD_V4, 8080), sock(host, 50000), SYN_ACK).build();
    let rechecked = stat(&mut dp, STAT_CT_RECHECKED);
    expect(
        &mut dp,
        DIR_EGRESS,
        &answer,
        true,
        "the workload's answer, re-checked",
    );
    assert_eq!(stat(&mut dp, STAT_CT_RECHECKED) - rechecked, 1);
}
