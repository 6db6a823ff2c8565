//! Live connections survive losing their conntrack entries, and revoked ones stay cut.
//!
//! Conntrack entries go missing when the LRU evicts them or a new map ABI starts with an
//! empty table. Here the test deletes the entries of live, allowed TCP connections itself,
//! on both enforcement points (the client's and the server's host veth), three times in
//! ten seconds: each connection must go on, every message echoed, none more than a second
//! late. One server's egress policy allows everything (its replies pick the flow up
//! themselves); the other's allows nothing (its replies wait for the client's next segment).
//!
//! Meanwhile a third connection is revoked by a policy change, with the server's egress and
//! the client's ingress open: neither the client's retransmissions nor the server's own
//! messages may get through while the cut lasts (`CT_TIMEOUT_REVOKED_NS`).

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use palisade::dataplane::conntrack::Conntrack;
use palisade::dataplane::pin_dir;
use palisade_common::CT_TIMEOUT_REVOKED_NS;
use palisade_tests::matrix::{Scene, WorkloadPlan};
use palisade_tests::packet::IPPROTO_TCP;
use palisade_tests::traffic::{EchoStream, PushStream, StreamLog};
use palisade_tests::{Cleanup, require_root};

/// The connections whose entries are deleted.
const LOSS_PORT: u16 = 7301;
/// The connection the policy change revokes, and the server's own messages on it.
const CUT_PORT: u16 = 7302;
const PUSH_PORT: u16 = 7303;
const INTERVAL: Duration = Duration::from_millis(20);
/// The longest any message of a connection that loses its entries may take.
const GAP: Duration = Duration::from_secs(1);
const CUT_WITHIN: Duration = Duration::from_secs(1);

/// `open` and `closed` serve the client; `open`'s egress allows everything, `closed`'s
/// nothing. `cut_ports` are the ports `open` lets the client reach besides LOSS_PORT.
fn policy(cut_ports: &str) -> String {
    format!(
        r#"- apiVersion: v1
  kind: profile
  metadata:
    name: open
    labels: {{role: server}}
  spec:
    ingress:
    - action: allow
      protocol: tcp
      source:
        selector: role == 'client'
      destination:
        ports: [{LOSS_PORT}{cut_ports}]
    egress:
    - action: allow
- apiVersion: v1
  kind: profile
  metadata:
    name: closed
    labels: {{role: server}}
  spec:
    ingress:
    - action: allow
      protocol: tcp
      source:
        selector: role == 'client'
      destination:
        ports: [{LOSS_PORT}]
- apiVersion: v1
  kind: profile
  metadata:
    name: client
    labels: {{role: client}}
  spec:
    ingress:
    - action: allow
      source:
        selector: role == 'server'
    egress:
    - action: allow
"#
    )
}

/// Deletes the entries of every connection to or from LOSS_PORT, on every interface;
/// returns how many there were.
fn delete_live_entries(scene: &Scene) -> usize {
    let mut table = Conntrack::open_pinned(&pin_dir(scene.home.bpffs.path()))
        .unwrap_or_else(|e| panic!("the agent's conntrack maps: {e}"));
    let flows = table
        .flows()
        .unwrap_or_else(|e| panic!("read conntrack: {e}"));
    let mut deleted = 0;
    for (key, _) in flows {
        let loss = key.local_port == LOSS_PORT || key.remote_port == LOSS_PORT;
        if key.protocol == IPPROTO_TCP && loss {
            deleted += usize::from(
                table
                    .remove_flow(&key)
                    .unwrap_or_else(|e| panic!("delete {key:?}: {e}")),
            );
        }
    }
    deleted
}

fn assert_went_on(what: &str, log: &StreamLog) {
    println!(
        "{what}: {} messages, {} unanswered, longest round trip {:?}, {} retransmissions",
        log.sent.len(),
        log.unanswered(),
        log.longest_round_trip(),
        log.retransmissions
    );
    assert_eq!(log.error, None, "{what} failed");
    assert_eq!(log.unanswered(), 0, "{what} lost messages");
    assert!(
        log.longest_round_trip() < GAP,
        "{what} stalled for {:?}",
        log.longest_round_trip()
    );
}

#[test]
fn connections_survive_lost_entries_and_revoked_ones_stay_cut_from_both_sides() {
    require_root();
    let mut cleanup = Cleanup::new();
    let mut scene = Scene::build(
        &mut cleanup,
        "e2e-ct-loss",
        &[
            WorkloadPlan {
                label: "client",
                profiles: &["client"],
                ips: &["10.243.5.1"],
            },
            WorkloadPlan {
                label: "open",
                profiles: &["open"],
                ips: &["10.243.5.2"],
            },
            WorkloadPlan {
                label: "closed",
                profiles: &["closed"],
                ips: &["10.243.5.3"],
            },
        ],
        None,
        &[LOSS_PORT, CUT_PORT],
        &[],
    );
    scene.start_agent();
    scene
        .store
        .apply(&policy(&format!(", {CUT_PORT}, {PUSH_PORT}")));
    scene.wait_for_enforcement();

    let client = scene.peer("client").netns.clone();
    let open = scene.peer("open").ip(false).expect("an address");
    let closed = scene.peer("closed").ip(false).expect("an address");
    let to_open = EchoStream::start(&client, SocketAddr::new(open, LOSS_PORT), INTERVAL);
    let to_closed = EchoStream::start(&client, SocketAddr::new(closed, LOSS_PORT), INTERVAL);
    let cut = EchoStream::start(&client, SocketAddr::new(open, CUT_PORT), INTERVAL);
    let pushed = PushStream::start(
        &client,
        &scene.peer("open").netns,
        open,
        PUSH_PORT,
        INTERVAL,
    );
    thread::sleep(Duration::from_millis(500));

    let applied = Instant::now();
    scene.store.apply(&policy(""));
    let revision = scene.store.revision();
    scene
        .agent()
        .wait_for(&["policy published", &format!("revision={revision}")]);

    // Three losses in ten seconds, all within the revoked flows' cut.
    let mut deleted = Vec::new();
    for at in [
        Duration::from_secs(1),
        Duration::from_secs(4),
        Duration::from_secs(7),
    ] {
        thread::sleep((applied + at).saturating_duration_since(Instant::now()));
        deleted.push(delete_live_entries(&scene));
    }
    let stop_at = applied + Duration::from_millis(9_500);
    assert!(
        stop_at < applied + Duration::from_nanos(CT_TIMEOUT_REVOKED_NS),
        "the test must end while the cut lasts"
    );
    thread::sleep(stop_at.saturating_duration_since(Instant::now()));
    let pushed = pushed.stop();
    let cut = cut.stop();
    let to_open = to_open.stop();
    let to_closed = to_closed.stop();
    println!("entries deleted each time (both veths of both connections): {deleted:?}");
    // Each connection has an entry on the client's veth and one on its server's.
    assert!(deleted.iter().all(|&n| n >= 4), "deleted {deleted:?}");

    assert_went_on("to the server whose egress is open", &to_open);
    assert_went_on("to the server whose egress is closed", &to_closed);

    let after_cut = |log: &StreamLog| -> (usize, usize) {
        let late: Vec<u64> = log
            .sent
            .iter()
            .filter(|(_, at)| *at > applied + CUT_WITHIN)
            .map(|(t, _)| *t)
            .collect();
        let through = late.iter().filter(|t| log.echoed.contains_key(t)).count();
        (late.len(), through)
    };
    let (client_sent, client_through) = after_cut(&cut);
    let (server_sent, server_through) = after_cut(&pushed);
    println!(
        "revoked: the client sent {client_sent} messages after the cut, {client_through} \
         echoed; the server sent {server_sent}, {server_through} arrived"
    );
    assert!(
        client_sent > 100 && server_sent > 100,
        "both sides kept sending"
    );
    assert_eq!(
        client_through, 0,
        "the client's messages got through the cut"
    );
    assert_eq!(
        server_through, 0,
        "the server's messages got through the cut"
    );

    let stats = scene.home.stats(None);
    assert!(stats.counter("conntrack_picked_up") > 0, "{}", stats.text);
    assert!(stats.counter("dropped_revoked") > 0, "{}", stats.text);
}
