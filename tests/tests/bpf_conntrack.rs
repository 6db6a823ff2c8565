//! Conntrack in the TC programs: replies of allowed flows pass although the replying side's
//! policy denies them, established flows pass, TCP segments of flows conntrack lost are
//! picked up by policy, a new generation re-checks live flows (keeping or revoking them),
//! revoked flows stay cut from both sides until they expire, ICMP echo shares an entry by
//! identifier, FIN/RST close, and each endpoint's entries stay within its budget.
//!
//! Expiry is by time (`CT_TIMEOUT_*`, against `last_seen_ns`): the tests age an entry by
//! moving its `last_seen_ns` back by the timeout, which is what the passing of that much
//! time does to the programs' comparison, so the kernel side needs no test clock.
//!
//! Privileged: run through `cargo xtask test` as root.

use std::net::{IpAddr, Ipv4Addr};

use palisade_common::{
    CT_CLOSING, CT_REVOKED, CT_TIMEOUT_OTHER_NS, CT_TIMEOUT_REVOKED_NS, CT_TIMEOUT_TCP_NS, Config,
    CtKey, CtValue, DIR_EGRESS, DIR_INGRESS, DROP_CT_BUDGET, DROP_POLICY, DROP_REVOKED,
    STAT_CT_ESTABLISHED, STAT_CT_NEW, STAT_CT_PICKED_UP, STAT_CT_RECHECKED,
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
fn a_segment_of_a_lost_flow_is_picked_up_when_policy_allows_its_direction() {
    require_root();
    let mut dp = dataplane_with_workload(0);
    uniform_policy(&mut dp, 0, DIR_EGRESS, 1, ALLOW);
    uniform_policy(&mut dp, 0, DIR_INGRESS, 2, DENY);
    let before = dp.stats();
    let ack = Frame::tcp(sock(WORKLOAD_V4, 40000), sock(PEER_V4, 80), TCP_ACK).build();
    expect(
        &mut dp,
        DIR_EGRESS,
        &ack,
        true,
        "the workload's ACK of no flow",
    );
    assert_eq!(dp.stats_grown(&before, STAT_CT_PICKED_UP), 1);
    assert_eq!(dp.stats_grown(&before, STAT_CT_NEW), 0);
    let (key, value) = only_entry(&mut dp);
    assert_eq!((key.local_port, key.remote_port), (40000, 80));
    assert_eq!((value.origin, value.flags), (DIR_EGRESS, 0));
    let reply = Frame::tcp(sock(PEER_V4, 80), sock(WORKLOAD_V4, 40000), TCP_ACK).build();
    expect(
        &mut dp,
        DIR_INGRESS,
        &reply,
        true,
        "the peer's reply, by the picked-up entry",
    );

    // The other way round policy denies: a segment of no flow from the peer is dropped
    // and opens nothing.
    let before = dp.stats();
    let stray = Frame::tcp(sock(PEER_V4, 80), sock(WORKLOAD_V4, 40001), TCP_ACK).build();
    expect(
        &mut dp,
        DIR_INGRESS,
        &stray,
        false,
        "the peer's ACK of no flow",
    );
    assert_eq!(dp.stats_grown(&before, DROP_POLICY), 1);
    assert_eq!(dp.stats_grown(&before, STAT_CT_PICKED_UP), 0);
    assert_eq!(dp.conntrack().len(), 1);
}

/// A connection the workload opened loses its entry; the peer's reply comes first.
#[test]
fn a_pickup_that_starts_with_a_reply_waits_for_the_openers_next_segment() {
    require_root();
    let mut dp = dataplane_with_workload(0);
    uniform_policy(&mut dp, 0, DIR_EGRESS, 1, ALLOW);
    uniform_policy(&mut dp, 0, DIR_INGRESS, 2, DENY);
    let syn = Frame::tcp(sock(WORKLOAD_V4, 40000), sock(PEER_V4, 80), TCP_SYN).build();
    expect(&mut dp, DIR_EGRESS, &syn, true, "SYN");
    dp.forget_conntrack();

    // Judged as a flow the peer opens to port 40000: ingress policy denies it.
    let reply = Frame::tcp(sock(PEER_V4, 80), sock(WORKLOAD_V4, 40000), TCP_ACK).build();
    expect(
        &mut dp,
        DIR_INGRESS,
        &reply,
        false,
        "the reply, first after the loss",
    );
    assert!(dp.conntrack().is_empty(), "a denied segment opens nothing");
    let data = Frame::tcp(sock(WORKLOAD_V4, 40000), sock(PEER_V4, 80), TCP_ACK).build();
    expect(
        &mut dp,
        DIR_EGRESS,
        &data,
        true,
        "the workload's next segment",
    );
    expect(
        &mut dp,
        DIR_INGRESS,
        &reply,
        true,
        "the reply, retransmitted",
    );
    assert_eq!(only_entry(&mut dp).1.origin, DIR_EGRESS);

    // Where ingress policy allows the reply's own direction, the reply picks the flow up
    // itself, as one the peer opened.
    uniform_policy(&mut dp, 0, DIR_INGRESS, 3, ALLOW);
    dp.forget_conntrack();
    expect(
        &mut dp,
        DIR_INGRESS,
        &reply,
        true,
        "the reply, allowed its own way",
    );
    assert_eq!(only_entry(&mut dp).1.origin, DIR_INGRESS);
    expect(
        &mut dp,
        DIR_EGRESS,
        &data,
        true,
        "the workload's segment, by that entry",
    );
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
fn a_new_generation_revokes_the_flows_it_denies_and_they_stay_cut_from_both_sides() {
    require_root();
    let (mut dp, replies) = flows_across_a_generation_change(false);
    // Slot 1 lets everything in and out, except the flows' own opening packets: whatever the
    // other direction allows, a revoked flow stays cut.
    for (direction, table) in [(DIR_INGRESS, 3), (DIR_EGRESS, 4)] {
        let rows = match direction {
            DIR_INGRESS => Rows::default()
                .row(0, &[(0, ALLOW)])
                .row(5353, &[(0, ALLOW), (53, DENY), (54, ALLOW)])
                .row(5354, &[(0, ALLOW)]),
            _ => Rows::default().row(0, &[(0, ALLOW), (80, DENY), (81, ALLOW)]),
        };
        let protocol = if direction == DIR_INGRESS {
            IPPROTO_UDP
        } else {
            IPPROTO_TCP
        };
        policy_for_every_peer(&mut dp, 1, direction, table, Some(protocol), &rows);
        dp.table(1, table, None, &Rows::uniform(ALLOW));
    }
    let echo_out = Rows::default()
        .row(0, &[(0, ALLOW)])
        .row(8, &[(0, DENY), (1, ALLOW)])
        .row(9, &[(0, ALLOW)]);
    dp.table(1, 4, Some(IPPROTO_ICMP), &echo_out);
    set_generation(&mut dp, 1);
    let revoked = stat(&mut dp, DROP_REVOKED);
    expect_replies(&mut dp, &replies, false, "a reply of a revoked flow");
    assert_eq!(stat(&mut dp, DROP_REVOKED) - revoked, 3);
    let entries = dp.conntrack();
    assert_eq!(
        entries.len(),
        3,
        "revoked flows keep their entries: {entries:?}"
    );
    assert!(
        entries
            .iter()
            .all(|(_, v)| v.flags & CT_REVOKED != 0 && v.generation == 1)
    );

    // Retransmissions from both sides: the opener's packets (which the new policy denies)
    // and the other side's (which it would allow as a flow of their own).
    let openers = [
        (
            DIR_EGRESS,
            Frame::tcp(sock(WORKLOAD_V4, 40000), sock(PEER_V4, 80), TCP_SYN).build(),
        ),
        (
            DIR_INGRESS,
            Frame::udp(sock(PEER_V4, 5353), sock(WORKLOAD_V4, 53)).build(),
        ),
        (
            DIR_EGRESS,
            Frame::icmp(WORKLOAD_V4, PEER_V4, 8, 0, 77).build(),
        ),
    ];
    for _ in 0..3 {
        expect_replies(&mut dp, &replies, false, "the other side, again");
        for (direction, frame) in &openers {
            expect(&mut dp, *direction, frame, false, "the opener, again");
        }
    }
    assert_eq!(stat(&mut dp, DROP_REVOKED) - revoked, 3 + 3 * 6);
    assert_eq!(
        stat(&mut dp, DROP_POLICY),
        0,
        "held by the revoked entries, not by policy"
    );
}

/// The revoked entries of [`flows_across_a_generation_change`] (slot 1 denies everything),
/// their key and value.
fn revoked_flows() -> (Dataplane, [Vec<u8>; 3]) {
    let (mut dp, replies) = flows_across_a_generation_change(false);
    set_generation(&mut dp, 1);
    expect_replies(&mut dp, &replies, false, "a reply of a revoked flow");
    (dp, replies)
}

/// Moves every entry's clock back by `by` nanoseconds and a second: as if that long passed.
fn age_entries(dp: &mut Dataplane, by: u64) {
    for (key, mut value) in dp.conntrack() {
        value.last_seen_ns = value.last_seen_ns.wrapping_sub(by + 1_000_000_000);
        dp.set_conntrack(&key, value);
    }
}

#[test]
fn a_revoked_flow_is_judged_like_any_other_once_it_expires() {
    require_root();
    let (mut dp, replies) = revoked_flows();
    // Retransmissions do not keep the cut alive: time counts from the cut.
    let before: Vec<u64> = dp.conntrack().iter().map(|(_, v)| v.last_seen_ns).collect();
    expect_replies(&mut dp, &replies, false, "retransmitted");
    let after: Vec<u64> = dp.conntrack().iter().map(|(_, v)| v.last_seen_ns).collect();
    assert_eq!(before, after);

    // Just before the timeout, still cut.
    for (key, mut value) in dp.conntrack() {
        value.last_seen_ns = value
            .last_seen_ns
            .wrapping_sub(CT_TIMEOUT_REVOKED_NS - 1_000_000_000);
        dp.set_conntrack(&key, value);
    }
    let revoked = stat(&mut dp, DROP_REVOKED);
    expect_replies(
        &mut dp,
        &replies,
        false,
        "just before the revoked flow expires",
    );
    assert_eq!(stat(&mut dp, DROP_REVOKED) - revoked, 3);

    // Expired: policy decides each packet, here slot 1's deny-all.
    age_entries(&mut dp, CT_TIMEOUT_REVOKED_NS);
    let denied = stat(&mut dp, DROP_POLICY);
    expect_replies(
        &mut dp,
        &replies,
        false,
        "the same packets, judged by policy",
    );
    assert_eq!(stat(&mut dp, DROP_POLICY) - denied, 3);
    assert_eq!(stat(&mut dp, DROP_REVOKED) - revoked, 3);

    // ... which lets a new generation that allows them through, as new flows.
    install_workload(&mut dp, 0);
    for (direction, table) in [(DIR_INGRESS, 5), (DIR_EGRESS, 6)] {
        uniform_policy(&mut dp, 0, direction, table, ALLOW);
    }
    set_generation(&mut dp, 2);
    let new = stat(&mut dp, STAT_CT_NEW) + stat(&mut dp, STAT_CT_PICKED_UP);
    expect_replies(&mut dp, &replies, true, "allowed as flows of their own");
    assert_eq!(
        stat(&mut dp, STAT_CT_NEW) + stat(&mut dp, STAT_CT_PICKED_UP) - new,
        3
    );
    // The TCP and UDP flows are open again; the echo reply opened nothing (only requests
    // do), so the expired echo entry is as it was.
    for (key, value) in dp.conntrack() {
        let revoked = value.flags & CT_REVOKED != 0;
        assert_eq!(revoked, key.protocol == IPPROTO_ICMP, "{key:?} {value:?}");
    }
}

#[test]
fn a_revoked_flow_lives_again_under_a_generation_that_allows_it() {
    require_root();
    let (mut dp, replies) = revoked_flows();
    // Generation 2 is slot 0 again, which allows the flows.
    set_generation(&mut dp, 2);
    let rechecked = stat(&mut dp, STAT_CT_RECHECKED);
    expect_replies(
        &mut dp,
        &replies,
        true,
        "a reply under a generation that allows it",
    );
    assert_eq!(stat(&mut dp, STAT_CT_RECHECKED) - rechecked, 3);
    assert!(
        dp.conntrack()
            .iter()
            .all(|(_, v)| v.flags & CT_REVOKED == 0 && v.generation == 2)
    );

    // Revoked again under generation 3 (slot 1), the cut starts afresh.
    set_generation(&mut dp, 3);
    expect_replies(&mut dp, &replies, false, "revoked again");
    assert!(
        dp.conntrack()
            .iter()
            .all(|(_, v)| v.flags & CT_REVOKED != 0)
    );
}

#[test]
fn expired_flows_are_judged_like_new_ones() {
    require_root();
    let mut dp = dataplane_with_workload(0);
    uniform_policy(&mut dp, 0, DIR_EGRESS, 1, ALLOW);
    uniform_policy(&mut dp, 0, DIR_INGRESS, 2, DENY);
    let query = Frame::udp(sock(WORKLOAD_V4, 5353), sock(PEER_V4, 53)).build();
    let answer = Frame::udp(sock(PEER_V4, 53), sock(WORKLOAD_V4, 5353)).build();
    let syn = Frame::tcp(sock(WORKLOAD_V4, 40000), sock(PEER_V4, 80), TCP_SYN).build();
    let reply = Frame::tcp(sock(PEER_V4, 80), sock(WORKLOAD_V4, 40000), TCP_ACK).build();
    expect(&mut dp, DIR_EGRESS, &query, true, "a UDP query");
    expect(&mut dp, DIR_EGRESS, &syn, true, "a SYN");

    // A UDP flow idle for its timeout is gone; a TCP one is not (hours, not a minute).
    age_entries(&mut dp, CT_TIMEOUT_OTHER_NS);
    expect(
        &mut dp,
        DIR_INGRESS,
        &answer,
        false,
        "the answer after the UDP timeout",
    );
    expect(
        &mut dp,
        DIR_INGRESS,
        &reply,
        true,
        "a TCP reply a minute on",
    );
    age_entries(&mut dp, CT_TIMEOUT_TCP_NS);
    expect(
        &mut dp,
        DIR_INGRESS,
        &reply,
        false,
        "a TCP reply after the TCP timeout",
    );
}

#[test]
fn each_endpoint_holds_at_most_its_budget_of_flows() {
    require_root();
    let mut dp = dataplane_with_workload(0);
    uniform_policy(&mut dp, 0, DIR_EGRESS, 1, ALLOW);
    uniform_policy(&mut dp, 0, DIR_INGRESS, 2, DENY);
    dp.set_config(Config {
        ct_budget: 2,
        ..Config::default()
    });
    let flow = |port: u16| Frame::udp(sock(WORKLOAD_V4, port), sock(PEER_V4, 53)).build();
    let answer = |port: u16| Frame::udp(sock(PEER_V4, 53), sock(WORKLOAD_V4, port)).build();

    // Without a count (an interface the agent does not track) there is no budget.
    for port in 1000..1004 {
        expect(
            &mut dp,
            DIR_EGRESS,
            &flow(port),
            true,
            "an untracked interface's flow",
        );
    }
    dp.forget_conntrack();

    dp.ct_usage_entry(IFINDEX);
    let before = dp.stats();
    expect(&mut dp, DIR_EGRESS, &flow(2000), true, "the first flow");
    expect(&mut dp, DIR_EGRESS, &flow(2001), true, "the second flow");
    expect(
        &mut dp,
        DIR_EGRESS,
        &flow(2002),
        false,
        "a third flow, over budget",
    );
    expect(&mut dp, DIR_EGRESS, &flow(2002), false, "and again");
    assert_eq!(dp.stats_grown(&before, DROP_CT_BUDGET), 2);
    assert_eq!(dp.ct_usage(IFINDEX).entries, 2);
    assert_eq!(dp.conntrack().len(), 2);
    // The flows within budget go on, both ways.
    for port in [2000, 2001] {
        expect(
            &mut dp,
            DIR_EGRESS,
            &flow(port),
            true,
            "a flow within budget",
        );
        expect(&mut dp, DIR_INGRESS, &answer(port), true, "its answer");
    }
    // An expired entry's key is taken over without counting again: the flow held its place.
    age_entries(&mut dp, CT_TIMEOUT_OTHER_NS);
    expect(
        &mut dp,
        DIR_EGRESS,
        &flow(2000),
        true,
        "an expired flow, reopened",
    );
    assert_eq!(dp.ct_usage(IFINDEX).entries, 2);
    // A denied packet uses no budget, and a budget of 0 is none.
    expect(
        &mut dp,
        DIR_INGRESS,
        &answer(3000),
        false,
        "denied by policy",
    );
    assert_eq!(dp.ct_usage(IFINDEX).entries, 2);
    dp.set_config(Config::default());
    expect(&mut dp, DIR_EGRESS, &flow(2002), true, "no budget");
    assert_eq!(dp.ct_usage(IFINDEX).entries, 3);
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
fn a_connection_over_a_closing_flows_tuple_takes_its_entry_over_within_the_budget() {
    require_root();
    let mut dp = dataplane_with_workload(0);
    uniform_policy(&mut dp, 0, DIR_EGRESS, 1, ALLOW);
    uniform_policy(&mut dp, 0, DIR_INGRESS, 2, ALLOW);
    // A budget of one flow, used up by the first connection.
    dp.set_config(Config {
        ct_budget: 1,
        ..Config::default()
    });
    dp.ct_usage_entry(IFINDEX);
    let peer_syn = Frame::tcp(sock(PEER_V4, 40000), sock(WORKLOAD_V4, 80), TCP_SYN).build();
    expect(&mut dp, DIR_INGRESS, &peer_syn, true, "the peer's SYN");
    let rst = Frame::tcp(sock(WORKLOAD_V4, 80), sock(PEER_V4, 40000), TCP_RST).build();
    expect(&mut dp, DIR_EGRESS, &rst, true, "the workload's RST");
    let (_, closed) = only_entry(&mut dp);
    assert_eq!(
        (closed.origin, closed.flags & CT_CLOSING),
        (DIR_INGRESS, CT_CLOSING)
    );
    assert_eq!(dp.ct_usage(IFINDEX).entries, 1);
    // Long enough ago that the new flow's clock differs (the programs' clock is coarse).
    age_entries(&mut dp, 0);
    let aged = only_entry(&mut dp).1.last_seen_ns;

    // The workload now connects from the same tuple: a new flow of its own, which takes the
    // closing entry over although the budget is used up, and counts nothing new.
    let syn = Frame::tcp(sock(WORKLOAD_V4, 80), sock(PEER_V4, 40000), TCP_SYN).build();
    let before = dp.stats();
    expect(
        &mut dp,
        DIR_EGRESS,
        &syn,
        true,
        "a SYN over the closing flow",
    );
    assert_eq!(dp.stats_grown(&before, STAT_CT_NEW), 1);
    let (_, reopened) = only_entry(&mut dp);
    assert_eq!(reopened.origin, DIR_EGRESS, "the new flow's opener");
    assert_eq!(reopened.flags, 0, "neither closing nor revoked");
    assert!(reopened.last_seen_ns > aged, "the new flow's clock");
    assert_eq!(dp.ct_usage(IFINDEX).entries, 1);
    let syn_ack = Frame::tcp(sock(PEER_V4, 40000), sock(WORKLOAD_V4, 80), SYN_ACK).build();
    let before = dp.stats();
    expect(&mut dp, DIR_INGRESS, &syn_ack, true, "its answer");
    assert_eq!(dp.stats_grown(&before, STAT_CT_ESTABLISHED), 1);
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
