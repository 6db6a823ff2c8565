//! What the TC programs tell the agent: per-endpoint counters (per CPU) for every packet,
//! per-rule counters for decided new flows, `PAL_STATS` reasons, and events on the ring
//! buffer (log rules, sampled drops, and the count of events lost to a full buffer).
//!
//! Privileged: run through `cargo xtask test` as root.

use palisade::dataplane::counters::CounterMaps;
use palisade_common::{
    Config, DIR_EGRESS, DIR_INGRESS, DROP_MALFORMED, DROP_POLICY, EVENT_DROP, EVENT_LOG,
    EndpointStats, Event, FAMILY_V4, STAT_EVENTS_LOST,
};
use palisade_tests::{
    bpf_maps::{ALLOW, DENY, Dataplane, Rows, addr_of, program_name},
    bpf_run::{SkbContext, TC_ACT_SHOT, run_repeated},
    bpf_scenario::{
        IFINDEX, PEER_V4, WORKLOAD_V4, dataplane_with_workload, expect, install_workload,
        policy_for_every_peer, set_generation, sock, uniform_policy,
    },
    packet::{Frame, IPPROTO_TCP, IPPROTO_UDP, TCP_ACK, TCP_SYN, arp_request},
    require_root,
};

/// Ring buffer records are the event plus an 8-byte header, in a 1 MiB buffer.
const EVENTS_THAT_FIT: usize = (1 << 20) / (size_of::<Event>() + 8);

/// Pins the calling thread to `cpu`, so that the per-CPU counters it makes land there.
fn run_on_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the calls only read it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set),
            0,
            "cannot pin the test to CPU {cpu}: {}",
            std::io::Error::last_os_error()
        );
    }
}

fn available_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

#[test]
fn endpoint_counters_count_every_packet_by_direction_and_verdict() {
    require_root();
    let mut dp = dataplane_with_workload(0);
    uniform_policy(&mut dp, 0, DIR_EGRESS, 1, ALLOW);
    uniform_policy(&mut dp, 0, DIR_INGRESS, 2, DENY);
    dp.endpoint_stats_entry(IFINDEX);

    let syn = Frame::tcp(sock(WORKLOAD_V4, 40000), sock(PEER_V4, 80), TCP_SYN).build();
    let reply = Frame::tcp(sock(PEER_V4, 80), sock(WORKLOAD_V4, 40000), TCP_ACK).build();
    let stray = Frame::tcp(sock(PEER_V4, 80), sock(WORKLOAD_V4, 40001), TCP_ACK).build();
    let arp = arp_request([10, 65, 0, 1].into(), [169, 254, 1, 1].into());
    let mut malformed = syn.clone();
    malformed[14] = 0x44;

    expect(&mut dp, DIR_EGRESS, &syn, true, "SYN");
    expect(&mut dp, DIR_EGRESS, &arp, true, "ARP");
    expect(&mut dp, DIR_EGRESS, &malformed, false, "malformed");
    // Established packets count too, on whichever CPU they run.
    let cpus = available_cpus();
    let repeat = 100;
    for cpu in 0..cpus {
        run_on_cpu(cpu);
        let program = dp.program(program_name(DIR_INGRESS));
        run_repeated(program, &reply, SkbContext::FORWARDED_ON_LO, repeat);
    }
    expect(&mut dp, DIR_INGRESS, &stray, false, "a stray segment");

    let stats = dp.endpoint_stats(IFINDEX);
    let (syn_len, arp_len, reply_len) = (syn.len() as u64, arp.len() as u64, reply.len() as u64);
    let in_packets = cpus as u64 * u64::from(repeat);
    assert_eq!(
        stats,
        EndpointStats {
            egress_allowed_packets: 2,
            egress_allowed_bytes: syn_len + arp_len,
            egress_denied_packets: 1,
            egress_denied_bytes: malformed.len() as u64,
            ingress_allowed_packets: in_packets,
            ingress_allowed_bytes: in_packets * reply_len,
            ingress_denied_packets: 1,
            ingress_denied_bytes: stray.len() as u64,
        }
    );
    if cpus > 1 {
        let cpus_that_counted = per_cpu_ingress_allowed(&mut dp)
            .into_iter()
            .filter(|&packets| packets >= u64::from(repeat))
            .count();
        assert!(
            cpus_that_counted >= 2,
            "the established packets ran on {cpus} CPUs but were not counted per CPU"
        );
    }
}

fn per_cpu_ingress_allowed(dp: &mut Dataplane) -> Vec<u64> {
    dp.endpoint_stats_per_cpu(IFINDEX)
        .unwrap_or_else(|| panic!("no counters for ifindex {IFINDEX}"))
        .iter()
        .map(|cpu| cpu.ingress_allowed_packets)
        .collect()
}

#[test]
fn endpoints_without_a_counter_entry_are_not_counted() {
    require_root();
    let mut dp = dataplane_with_workload(0);
    uniform_policy(&mut dp, 0, DIR_EGRESS, 1, ALLOW);
    let syn = Frame::tcp(sock(WORKLOAD_V4, 40000), sock(PEER_V4, 80), TCP_SYN).build();
    expect(&mut dp, DIR_EGRESS, &syn, true, "SYN");
    assert_eq!(
        dp.endpoint_stats_per_cpu(IFINDEX),
        None,
        "the program must not create counter entries"
    );
}

#[test]
fn established_packets_count_where_their_flow_was_decided_until_a_new_generation() {
    require_root();
    let mut dp = dataplane_with_workload(0);
    install_workload(&mut dp, 1);
    uniform_policy(&mut dp, 0, DIR_EGRESS, 1, ALLOW);
    uniform_policy(&mut dp, 1, DIR_EGRESS, 1, ALLOW);
    dp.set_endpoint_index(IFINDEX, 0);
    let syn = Frame::tcp(sock(WORKLOAD_V4, 40000), sock(PEER_V4, 80), TCP_SYN).build();
    let ack = Frame::tcp(sock(WORKLOAD_V4, 40000), sock(PEER_V4, 80), TCP_ACK).build();
    let entry_endpoint = |dp: &mut Dataplane| -> Vec<u32> {
        dp.conntrack()
            .into_iter()
            .map(|(_, value)| value.endpoint)
            .collect()
    };

    expect(&mut dp, DIR_EGRESS, &syn, true, "SYN");
    assert_eq!(
        entry_endpoint(&mut dp),
        [0],
        "the flow's entry names its index"
    );
    // The interface attached afresh, with another index: the agent publishes a new
    // generation with it. Until then the flow's packets count where it was decided.
    dp.set_endpoint_index(IFINDEX, 3);
    expect(&mut dp, DIR_EGRESS, &ack, true, "ACK, same generation");
    assert_eq!(dp.endpoint_stats_at(0).egress_allowed_packets, 2);
    assert_eq!(dp.endpoint_stats_at(3).egress_allowed_packets, 0);

    set_generation(&mut dp, 1);
    expect(&mut dp, DIR_EGRESS, &ack, true, "ACK, re-checked");
    assert_eq!(entry_endpoint(&mut dp), [3], "the re-check moves the flow");
    expect(&mut dp, DIR_EGRESS, &ack, true, "ACK, established again");
    assert_eq!(dp.endpoint_stats_at(0).egress_allowed_packets, 2);
    assert_eq!(
        dp.endpoint_stats_at(3),
        EndpointStats {
            egress_allowed_packets: 2,
            egress_allowed_bytes: 2 * ack.len() as u64,
            ..EndpointStats::default()
        }
    );
}

#[test]
fn the_agent_gives_each_endpoint_a_zeroed_index_of_its_own_and_reuses_freed_ones() {
    require_root();
    let mut dp = dataplane_with_workload(0);
    uniform_policy(&mut dp, 0, DIR_EGRESS, 1, ALLOW);
    // An earlier agent's endpoint holds index 0.
    const EARLIER: u32 = 50;
    dp.set_endpoint_index(EARLIER, 0);
    let mut counters = CounterMaps::take(dp.ebpf()).expect("the counter maps");
    for ifindex in [IFINDEX, 2, 3] {
        counters.track_endpoint(ifindex).expect("an index");
    }
    let syn = Frame::tcp(sock(WORKLOAD_V4, 40000), sock(PEER_V4, 80), TCP_SYN).build();
    expect(&mut dp, DIR_EGRESS, &syn, true, "SYN");
    let counted = |counters: &CounterMaps| -> Vec<(u32, u64)> {
        counters
            .endpoints()
            .expect("the endpoint counters")
            .into_iter()
            .map(|(ifindex, stats)| (ifindex, stats.egress_allowed_packets))
            .collect()
    };
    assert_eq!(
        counted(&counters),
        [(IFINDEX, 1), (2, 0), (3, 0), (EARLIER, 0)]
    );

    // Tracking again keeps the index and its counts (an agent restart).
    counters.track_endpoint(IFINDEX).expect("the same index");
    assert_eq!(counted(&counters)[0], (IFINDEX, 1));
    // IFINDEX's index (1, after the earlier agent's 0) goes to the next endpoint, zeroed.
    counters.forget_endpoint(IFINDEX).expect("forgotten");
    counters
        .forget_endpoint(IFINDEX)
        .expect("forgetting twice is fine");
    counters.track_endpoint(4).expect("an index");
    assert_eq!(counted(&counters), [(2, 0), (3, 0), (4, 0), (EARLIER, 0)]);
    // A new flow of the interface without an index counts nowhere.
    let other_syn = Frame::tcp(sock(WORKLOAD_V4, 40001), sock(PEER_V4, 80), TCP_SYN).build();
    expect(
        &mut dp,
        DIR_EGRESS,
        &other_syn,
        true,
        "SYN without an index",
    );
    assert_eq!(counted(&counters), [(2, 0), (3, 0), (4, 0), (EARLIER, 0)]);
}

#[test]
fn rule_counters_count_the_new_flows_their_rule_decided() {
    require_root();
    let mut dp = dataplane_with_workload(0);
    let (allow_rule, deny_rule) = (5, 6);
    policy_for_every_peer(
        &mut dp,
        0,
        DIR_EGRESS,
        1,
        Some(IPPROTO_TCP),
        &Rows::default().row(
            0,
            &[(0, DENY.rule(deny_rule)), (80, ALLOW.rule(allow_rule))],
        ),
    );
    // No rule decided UDP (say, the end of the profiles): nothing to count.
    dp.table(0, 1, None, &Rows::uniform(DENY));

    let syn = Frame::tcp(sock(WORKLOAD_V4, 40000), sock(PEER_V4, 80), TCP_SYN).build();
    let ack = Frame::tcp(sock(WORKLOAD_V4, 40000), sock(PEER_V4, 80), TCP_ACK).build();
    let denied = Frame::tcp(sock(WORKLOAD_V4, 40000), sock(PEER_V4, 22), TCP_SYN).build();
    let udp = Frame::udp(sock(WORKLOAD_V4, 40000), sock(PEER_V4, 53)).build();
    expect(&mut dp, DIR_EGRESS, &syn, true, "the new flow");
    for _ in 0..3 {
        expect(&mut dp, DIR_EGRESS, &ack, true, "an established packet");
    }
    for _ in 0..2 {
        expect(&mut dp, DIR_EGRESS, &denied, false, "a denied packet");
    }
    expect(&mut dp, DIR_EGRESS, &udp, false, "UDP, no rule");

    let allowed = dp.rule_stats(allow_rule);
    assert_eq!((allowed.packets, allowed.bytes), (1, syn.len() as u64));
    let denials = dp.rule_stats(deny_rule);
    assert_eq!(
        (denials.packets, denials.bytes),
        (2, 2 * denied.len() as u64)
    );
    for other in [0, 4, 7] {
        assert_eq!(dp.rule_stats(other).packets, 0, "rule counter {other}");
    }
}

#[test]
fn drops_and_logged_flows_are_reported_as_events() {
    require_root();
    let mut dp = dataplane_with_workload(0);
    let outcomes = policy_for_every_peer(
        &mut dp,
        0,
        DIR_EGRESS,
        1,
        Some(IPPROTO_UDP),
        &Rows::default().row(
            0,
            &[
                (0, DENY),
                (53, ALLOW.logged()),
                (54, DENY.logged()),
                (55, DENY),
            ],
        ),
    );
    let (logged_allow, logged_deny, plain_deny) = (outcomes[1], outcomes[2], outcomes[3]);
    dp.set_config(Config {
        generation: 0,
        drop_event_mask: 0,
        ..Config::default()
    });

    let logged = Frame::udp(sock(WORKLOAD_V4, 40000), sock(PEER_V4, 53)).build();
    expect(&mut dp, DIR_EGRESS, &logged, true, "a logged, allowed flow");
    expect(&mut dp, DIR_EGRESS, &logged, true, "its next packet");
    let events = dp.events();
    assert_eq!(
        events.len(),
        1,
        "one log event for the new flow only: {events:?}"
    );
    let event = events[0];
    assert_eq!(
        (event.kind, event.direction, event.family, event.protocol),
        (EVENT_LOG, DIR_EGRESS, FAMILY_V4, IPPROTO_UDP)
    );
    assert_eq!((event.reason, event.outcome), (u32::MAX, logged_allow));
    assert_eq!((event.ifindex, event.generation), (IFINDEX, 0));
    assert_eq!((event.a, event.b), (40000, 53));
    assert_eq!(event.src, addr_of(WORKLOAD_V4).1);
    assert_eq!(event.dst, addr_of(PEER_V4).1);
    assert_eq!(event.len, logged.len() as u32);

    let denied_logged = Frame::udp(sock(WORKLOAD_V4, 40000), sock(PEER_V4, 54)).build();
    expect(
        &mut dp,
        DIR_EGRESS,
        &denied_logged,
        false,
        "a logged, denied flow",
    );
    let events = dp.events();
    let kinds: Vec<_> = events
        .iter()
        .map(|e| (e.kind, e.reason, e.outcome))
        .collect();
    assert_eq!(
        kinds,
        [
            (EVENT_LOG, DROP_POLICY, logged_deny),
            (EVENT_DROP, DROP_POLICY, logged_deny)
        ]
    );

    let denied = Frame::udp(sock(WORKLOAD_V4, 40000), sock(PEER_V4, 55)).build();
    expect(&mut dp, DIR_EGRESS, &denied, false, "a denied flow");
    let mut malformed = denied.clone();
    malformed[14] = 0x43;
    expect(&mut dp, DIR_INGRESS, &malformed, false, "a malformed frame");
    let events = dp.events();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(
        (
            events[0].kind,
            events[0].reason,
            events[0].outcome,
            events[0].b
        ),
        (EVENT_DROP, DROP_POLICY, plain_deny, 55)
    );
    assert_eq!(
        (events[1].kind, events[1].reason, events[1].outcome),
        (EVENT_DROP, DROP_MALFORMED, u32::MAX)
    );
    assert_eq!((events[1].direction, events[1].family), (DIR_INGRESS, 0));
    assert_eq!(events[1].src, [0; 16]);
}

#[test]
fn drop_events_are_sampled_by_the_mask() {
    require_root();
    let mut dp = dataplane_with_workload(0);
    uniform_policy(&mut dp, 0, DIR_EGRESS, 1, DENY);
    let denied = Frame::udp(sock(WORKLOAD_V4, 40000), sock(PEER_V4, 53)).build();
    let runs = 400u32;

    for (mask, expected) in [(u32::MAX, 0..=0), (1, 100..=300), (0, 400..=400)] {
        dp.set_config(Config {
            drop_event_mask: mask,
            ..Config::default()
        });
        let program = dp.program(program_name(DIR_EGRESS));
        let (action, _) = run_repeated(program, &denied, SkbContext::FORWARDED_ON_LO, runs);
        assert_eq!(action, TC_ACT_SHOT);
        let events = dp.events().len();
        assert!(
            expected.contains(&events),
            "mask {mask:#x}: {events} events of {runs} drops, expected {expected:?}"
        );
    }
}

#[test]
fn events_that_do_not_fit_are_counted_lost() {
    require_root();
    let mut dp = dataplane_with_workload(0);
    uniform_policy(&mut dp, 0, DIR_EGRESS, 1, DENY);
    let denied = Frame::udp(sock(WORKLOAD_V4, 40000), sock(PEER_V4, 53)).build();
    let runs = EVENTS_THAT_FIT as u32 + 5_000;
    let program = dp.program(program_name(DIR_EGRESS));
    run_repeated(program, &denied, SkbContext::FORWARDED_ON_LO, runs);

    let lost = dp.stats()[STAT_EVENTS_LOST as usize];
    let delivered = dp.events().len() as u64;
    assert_eq!(
        delivered + lost,
        u64::from(runs),
        "every drop is an event or lost"
    );
    assert!(
        lost >= 5_000 && delivered <= EVENTS_THAT_FIT as u64,
        "{delivered} delivered, {lost} lost; the buffer holds {EVENTS_THAT_FIT}"
    );
}
