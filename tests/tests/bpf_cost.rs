//! What a packet costs in the TC programs, against an empty TC program on the same frame:
//! an established flow (config, identity, one conntrack hit, counters) and a new flow that
//! policy denies (the whole lookup chain, with a table of many cells).
//!
//! Times come from BPF_PROG_TEST_RUN (the kernel's mean over many back-to-back runs). The
//! targets are an established flow within 60 ns and a new denied flow within 200 ns of the
//! empty program; the assertions allow for a busy shared machine and catch regressions of
//! a different order (a loop gone wrong, a lookup too many per packet).
//!
//! Privileged: run through `cargo xtask test` as root.

use std::time::Duration;

use palisade_common::{Config, DIR_EGRESS};
use palisade_tests::{
    bpf_maps::{ALLOW, DENY, Decides, Rows, program_name},
    bpf_run::{SkbContext, TC_ACT_OK, TC_ACT_SHOT, empty_program_cost, run_repeated},
    bpf_scenario::{
        PEER_V4, WORKLOAD_V4, dataplane_with_workload, expect, policy_for_every_peer, sock,
    },
    packet::{Frame, IPPROTO_TCP, TCP_ACK, TCP_SYN},
    require_root,
};

const REPEAT: u32 = 1_000_000;
/// Best of this many measurements, to see past other work on the machine.
const ROUNDS: usize = 5;
/// How far over the targets a measurement may be before the test fails.
const SLACK: u32 = 2;
const ESTABLISHED_TARGET: Duration = Duration::from_nanos(60);
const NEW_DENIED_TARGET: Duration = Duration::from_nanos(200);

#[test]
fn per_packet_cost_against_an_empty_program() {
    require_root();
    let mut dp = dataplane_with_workload(0);
    // Egress TCP: 1024 destination port ranges of 30 ports, denied and allowed in turn,
    // in 64 rows of source port ranges: 64 Ki cells to search.
    let cells: Vec<(u16, Decides)> = (0..1024u16)
        .map(|i| {
            (
                i * 30,
                if i % 2 == 0 {
                    DENY.rule(1)
                } else {
                    ALLOW.rule(2)
                },
            )
        })
        .collect();
    let mut rows = Rows::default();
    for i in 0..64u16 {
        rows = rows.row(i * 1000, &cells);
    }
    policy_for_every_peer(&mut dp, 0, DIR_EGRESS, 1, Some(IPPROTO_TCP), &rows);
    // Drops would fill the event ring; report (almost) none.
    dp.set_config(Config {
        drop_event_mask: u32::MAX,
        ..Config::default()
    });

    let syn = Frame::tcp(sock(WORKLOAD_V4, 40000), sock(PEER_V4, 45), TCP_SYN).build();
    expect(
        &mut dp,
        DIR_EGRESS,
        &syn,
        true,
        "the flow's SYN (port 45: allowed)",
    );
    let established = Frame::tcp(sock(WORKLOAD_V4, 40000), sock(PEER_V4, 45), TCP_ACK).build();
    let denied = Frame::tcp(sock(WORKLOAD_V4, 40001), sock(PEER_V4, 75), TCP_SYN).build();
    let ctx = SkbContext::FORWARDED_ON_LO;

    let best = |measure: &mut dyn FnMut() -> Duration| {
        (0..ROUNDS).map(|_| measure()).min().unwrap_or_default()
    };
    let empty = best(&mut || empty_program_cost(&established, ctx, REPEAT));
    let program = program_name(DIR_EGRESS);
    let established_cost = best(&mut || {
        let (action, cost) = run_repeated(dp.program(program), &established, ctx, REPEAT);
        assert_eq!(action, TC_ACT_OK);
        cost
    });
    let denied_cost = best(&mut || {
        let (action, cost) = run_repeated(dp.program(program), &denied, ctx, REPEAT);
        assert_eq!(action, TC_ACT_SHOT);
        cost
    });
    let over = |cost: Duration| cost.saturating_sub(empty);
    eprintln!(
        "per packet: empty program {empty:?}; established flow {established_cost:?} \
         (+{:?}); new denied flow {denied_cost:?} (+{:?})",
        over(established_cost),
        over(denied_cost)
    );
    assert!(
        over(established_cost) <= ESTABLISHED_TARGET * SLACK,
        "an established packet costs {:?} over an empty program (target {ESTABLISHED_TARGET:?})",
        over(established_cost)
    );
    assert!(
        over(denied_cost) <= NEW_DENIED_TARGET * SLACK,
        "a new denied packet costs {:?} over an empty program (target {NEW_DENIED_TARGET:?})",
        over(denied_cost)
    );
}
