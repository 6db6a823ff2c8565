//! Revocation of live connections: a policy change cuts, within a second, an established
//! TCP connection the new policy denies, and leaves alone one it still allows.
//!
//! Each connection sends an 8-byte message every 50 ms and reads its echo. Cut means: from
//! some message on, nothing is echoed any more. Untouched means: every message echoed, and
//! neither side retransmitted a single segment (nothing was dropped, not even once).

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use palisade_tests::matrix::{Scene, WorkloadPlan};
use palisade_tests::traffic::{EchoStream, Probe, PushStream, StreamLog};
use palisade_tests::{Cleanup, require_root};

const CUT_PORT: u16 = 7001;
const KEPT_PORT: u16 = 7002;
/// Where the server sends on its own.
const PUSH_PORT: u16 = 7003;
const INTERVAL: Duration = Duration::from_millis(50);
/// The longest a revocation may take.
const CUT_WITHIN: Duration = Duration::from_secs(1);

/// The server accepts both ports from clients; its egress is `egress` (YAML rules).
fn policy(ports: &str, server_egress: &str) -> String {
    format!(
        r#"- apiVersion: v1
  kind: profile
  metadata:
    name: server
    labels: {{role: server}}
  spec:
    ingress:
    - action: allow
      protocol: tcp
      source:
        selector: role == 'client'
      destination:
        ports: {ports}
    egress: {server_egress}
- apiVersion: v1
  kind: profile
  metadata:
    name: client
    labels: {{role: client}}
  spec:
    egress:
    - action: allow
"#
    )
}

/// The clients c1 and c2 and the server srv on `net`.0/24, the agent enforcing `initial`.
fn scene(cleanup: &mut Cleanup, node: &str, net: &str, initial: &str) -> Scene {
    let ips: Vec<String> = (1..=3).map(|i| format!("{net}.{i}")).collect();
    let (srv, c1, c2) = ([ips[0].as_str()], [ips[1].as_str()], [ips[2].as_str()]);
    let mut scene = Scene::build(
        cleanup,
        node,
        &[
            WorkloadPlan {
                label: "srv",
                profiles: &["server"],
                ips: &srv,
            },
            WorkloadPlan {
                label: "c1",
                profiles: &["client"],
                ips: &c1,
            },
            WorkloadPlan {
                label: "c2",
                profiles: &["client"],
                ips: &c2,
            },
        ],
        None,
        &[CUT_PORT, KEPT_PORT],
        &[],
    );
    scene.start_agent();
    scene.store.apply(initial);
    scene.wait_for_enforcement();
    scene
}

/// What happened to the two connections across a policy change.
struct Revocation {
    cut: StreamLog,
    kept: StreamLog,
    /// When the change was applied (the `palisade apply` started).
    applied: Instant,
    /// From `applied` until the agent said it published the change.
    published_after: Duration,
}

/// Runs a connection from c1 to CUT_PORT and one from c2 to KEPT_PORT, applies `change`
/// half a second in, and stops them `CUT_WITHIN` plus half a second later.
fn revoke(scene: &mut Scene, change: &str) -> Revocation {
    let server = scene.peer("srv").ip(false).expect("srv's address");
    let cut = EchoStream::start(
        &scene.peer("c1").netns,
        SocketAddr::new(server, CUT_PORT),
        INTERVAL,
    );
    let kept = EchoStream::start(
        &scene.peer("c2").netns,
        SocketAddr::new(server, KEPT_PORT),
        INTERVAL,
    );
    thread::sleep(Duration::from_millis(500));
    let applied = Instant::now();
    scene.store.apply(change);
    let revision = scene.store.revision();
    let published = scene
        .agent()
        .wait_for(&["policy published", &format!("revision={revision}")]);
    let published_after = applied.elapsed();
    // A policy change like this one is compiled in place, not by compiling everything.
    assert!(published.contains("compiled=in-place"), "{published}");
    thread::sleep(CUT_WITHIN + Duration::from_millis(500));
    Revocation {
        cut: cut.stop(),
        kept: kept.stop(),
        applied,
        published_after,
    }
}

/// Checks the kept connection lost nothing, on either side.
fn assert_untouched(scene: &Scene, kept: &StreamLog) {
    assert_eq!(kept.error, None, "the kept connection failed");
    assert_eq!(kept.unanswered(), 0, "kept connection lost messages");
    assert_eq!(
        kept.retransmissions, 0,
        "the kept connection's client retransmitted"
    );
    let local = kept.local.expect("the kept connection's address");
    let server_side = scene
        .peer("srv")
        .services
        .retransmissions_to(local)
        .expect("the server side of the kept connection");
    assert_eq!(server_side, 0, "the kept connection's server retransmitted");
}

/// Checks the cut connection was cut within `CUT_WITHIN` of the change, for good; returns
/// when (after the change) the last echoed and the first lost message were sent.
fn assert_cut(r: &Revocation) -> (Duration, Duration) {
    let (first_lost, lost_at) = r
        .cut
        .first_unanswered()
        .expect("the connection the new policy denies was never cut");
    let before: Vec<_> = r
        .cut
        .sent
        .iter()
        .take_while(|(t, _)| *t != first_lost)
        .collect();
    assert!(
        before.iter().all(|(_, at)| *at < r.applied + CUT_WITHIN),
        "cut later than {CUT_WITHIN:?}"
    );
    let last_echoed_at = before.last().map_or(r.applied, |(_, at)| *at);
    let after_cut = r.cut.sent.iter().skip(before.len());
    let revived: Vec<_> = after_cut
        .filter(|(t, _)| r.cut.echoed.contains_key(t))
        .map(|(_, at)| at.saturating_duration_since(r.applied))
        .collect();
    assert!(
        revived.is_empty(),
        "the cut connection came back: messages sent {revived:?} after the change were echoed"
    );
    assert!(
        r.cut.sent.len() > before.len() + 20,
        "the cut connection stopped sending: {:?}",
        r.cut.error
    );
    (
        last_echoed_at.saturating_duration_since(r.applied),
        lost_at.saturating_duration_since(r.applied),
    )
}

#[test]
fn a_policy_change_cuts_the_connection_it_denies_and_keeps_the_other() {
    require_root();
    let mut cleanup = Cleanup::new();
    let mut scene = scene(
        &mut cleanup,
        "e2e-revoke",
        "10.243.1",
        &policy("[7001, 7002]", "[]"),
    );
    let revocation = revoke(&mut scene, &policy("[7002]", "[]"));
    let (last_echoed, first_lost) = assert_cut(&revocation);
    println!(
        "revocation: policy published {:?} after `palisade apply` started; the connection \
         was cut between {:?} and {:?} after it (messages every {INTERVAL:?})",
        revocation.published_after, last_echoed, first_lost
    );
    assert_untouched(&scene, &revocation.kept);
    println!(
        "kept connection: {} messages, all echoed, longest round trip {:?}, no retransmission",
        revocation.kept.sent.len(),
        revocation.kept.longest_round_trip()
    );
    let stats = scene.home.stats(None);
    assert!(stats.counter("dropped_revoked") > 0, "{}", stats.text);

    // New connections follow the new policy too.
    assert!(
        !scene
            .probe("c1", "srv", Probe::Tcp(CUT_PORT), false)
            .reached
    );
    assert!(
        scene
            .probe("c1", "srv", Probe::Tcp(KEPT_PORT), false)
            .reached
    );
}

/// The server's egress allows everything and the server keeps sending on the connection
/// the change revokes: its packets after the change must not reopen the flow.
#[test]
fn a_revoked_connection_stays_cut_when_the_server_keeps_sending() {
    require_root();
    let mut cleanup = Cleanup::new();
    let allow_all = "\n    - action: allow";
    let mut scene = scene(
        &mut cleanup,
        "e2e-revoke-send",
        "10.243.2",
        &policy("[7001, 7002, 7003]", allow_all),
    );
    let server = scene.peer("srv").ip(false).expect("srv's address");
    let pushed = PushStream::start(
        &scene.peer("c1").netns,
        &scene.peer("srv").netns,
        server,
        PUSH_PORT,
        INTERVAL,
    );
    let revocation = revoke(&mut scene, &policy("[7002]", allow_all));
    let pushed = pushed.stop();
    let (last_echoed, first_lost) = assert_cut(&revocation);
    println!(
        "revocation (server egress open): cut between {last_echoed:?} and {first_lost:?} after \
         the change"
    );
    assert_untouched(&scene, &revocation.kept);
    let after_change: Vec<_> = pushed
        .sent
        .iter()
        .filter(|(_, at)| *at > revocation.applied + CUT_WITHIN)
        .collect();
    let arrived = after_change
        .iter()
        .filter(|(t, _)| pushed.echoed.contains_key(t))
        .count();
    assert_eq!(
        arrived,
        0,
        "the revoked connection still carries the server's messages: {arrived} of the {} it \
         sent from {CUT_WITHIN:?} after the change on reached the client",
        after_change.len()
    );
}
