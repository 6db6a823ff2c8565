//! What is not plain traffic: packets from an address the workload does not own (dropped,
//! counted, reported), IPv4 packets with options and fragmented datagrams (enforced like
//! any other, and counted), and `palisade stats [ENDPOINT]` following it all.

use std::net::{IpAddr, SocketAddr};
use std::thread;
use std::time::Duration;

use palisade_tests::matrix::{Scene, WorkloadPlan};
use palisade_tests::traffic::{Datagram, send_datagram};
use palisade_tests::{Cleanup, require_root};

const ALLOWED: u16 = 7301;
const DENIED: u16 = 7302;
/// How long a datagram gets to arrive; it takes well under a millisecond.
const ARRIVAL: Duration = Duration::from_millis(500);

/// The sender may send anything; the receiver takes UDP 7301 only.
const POLICY: &str = r#"- apiVersion: v1
  kind: profile
  metadata:
    name: sender
  spec:
    egress:
    - action: allow
- apiVersion: v1
  kind: profile
  metadata:
    name: receiver
  spec:
    ingress:
    - action: allow
      protocol: udp
      destination:
        ports: [7301]
"#;

/// IPv4 record route with room for two addresses, padded to a 4-byte multiple: an option
/// every router on the way may write to.
const RECORD_ROUTE: [u8; 12] = [7, 11, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0];

fn scene(cleanup: &mut Cleanup, node: &str, sender: &'static str, receiver: &'static str) -> Scene {
    let mut scene = Scene::build(
        cleanup,
        node,
        &[
            WorkloadPlan {
                label: "sender",
                profiles: &["sender"],
                ips: &[sender],
            },
            WorkloadPlan {
                label: "receiver",
                profiles: &["receiver"],
                ips: &[receiver],
            },
        ],
        None,
        &[],
        &[ALLOWED, DENIED],
    );
    scene.start_agent();
    scene.store.apply(POLICY);
    scene.wait_for_enforcement();
    scene
}

/// Sends `datagram` from the sender to the receiver's `port`; returns its length on arrival.
fn send(scene: &Scene, port: u16, datagram: &Datagram) -> Option<usize> {
    let token = send_only(scene, port, datagram);
    scene
        .peer("receiver")
        .services
        .inbox()
        .wait(token, ARRIVAL)
        .map(|a| a.len)
}

/// Sends `datagram` from the sender to the receiver's `port`; returns its token.
fn send_only(scene: &Scene, port: u16, datagram: &Datagram) -> u64 {
    let receiver = scene.peer("receiver").ip(false).expect("an address");
    send_datagram(
        &scene.peer("sender").netns,
        SocketAddr::new(receiver, port),
        datagram,
    )
}

/// Sends `count` copies of `datagram`, none of which may arrive; waits for them once.
fn send_refused(scene: &Scene, port: u16, datagram: &Datagram, count: u64) {
    let tokens: Vec<u64> = (0..count)
        .map(|_| send_only(scene, port, datagram))
        .collect();
    thread::sleep(ARRIVAL);
    let inbox = scene.peer("receiver").services.inbox();
    let arrived = tokens.iter().filter(|t| inbox.get(**t).is_some()).count();
    assert_eq!(
        arrived, 0,
        "{arrived} of {count} datagrams that must be dropped arrived"
    );
}

#[test]
fn spoofed_sources_are_dropped_counted_and_reported_and_stats_follow_traffic() {
    require_root();
    let mut cleanup = Cleanup::new();
    let mut scene = scene(&mut cleanup, "e2e-spoof", "10.245.1.1", "10.245.1.2");
    let own: IpAddr = "10.245.1.1".parse().expect("an address");
    let spoofed: IpAddr = "10.245.1.99".parse().expect("an address");
    let sender = scene.workloads[0].clone();
    let receiver = scene.workloads[1].clone();
    sender.netns.run_ok(
        "ip",
        &["addr", "add", &format!("{spoofed}/32"), "dev", "eth0"],
    );

    let before = scene.home.stats(None);
    let from = |source| Datagram {
        source: Some(source),
        len: 64,
        ..Datagram::default()
    };
    const SPOOFED: u64 = 5;
    for _ in 0..SPOOFED {
        assert_eq!(
            send(&scene, ALLOWED, &from(spoofed)),
            None,
            "a spoofed datagram arrived"
        );
    }
    // The same from the workload's own address arrives: it is the address that is refused.
    assert_eq!(send(&scene, ALLOWED, &from(own)), Some(64));
    let after = scene.home.stats(None);
    let spoofed_drops = after.counter("dropped_spoofed") - before.counter("dropped_spoofed");
    assert!(
        spoofed_drops >= SPOOFED,
        "dropped_spoofed went up by {spoofed_drops}, not {SPOOFED}:\n{}",
        after.text
    );
    let reported = scene.agent().wait_for_ever_said(&[
        "packet dropped",
        "reason=\"spoofed source\"",
        &format!("src={spoofed}"),
    ]);
    assert!(
        reported.contains(&format!("dst={}", receiver.ips[0])),
        "{reported}"
    );

    // Per endpoint: what the receiver let in and refused, and what the sender's own
    // egress refused (the spoofed datagrams), grow with the traffic.
    let endpoint = |name: &str| scene.home.stats(Some(name));
    let (receiver_before, sender_before) = (endpoint(&receiver.name), endpoint(&sender.name));
    assert_eq!(
        receiver_before.endpoints.len(),
        2,
        "{}",
        receiver_before.text
    );
    assert!(
        receiver_before.counters.is_empty(),
        "{}",
        receiver_before.text
    );
    const ALLOWED_SENT: u64 = 10;
    const DENIED_SENT: u64 = 7;
    for _ in 0..ALLOWED_SENT {
        assert_eq!(send(&scene, ALLOWED, &from(own)), Some(64));
    }
    send_refused(&scene, DENIED, &from(own), DENIED_SENT);
    send_refused(&scene, ALLOWED, &from(spoofed), 1);
    let (receiver_after, sender_after) = (endpoint(&receiver.name), endpoint(&sender.name));
    let grew = |after: &palisade_tests::agent_process::Stats,
                before: &palisade_tests::agent_process::Stats,
                name: &str,
                direction: &str| {
        let (a, b) = (
            after.endpoint(name, direction),
            before.endpoint(name, direction),
        );
        (
            a.allowed_packets - b.allowed_packets,
            a.denied_packets - b.denied_packets,
            a.allowed_bytes - b.allowed_bytes,
        )
    };
    let (allowed, denied, allowed_bytes) =
        grew(&receiver_after, &receiver_before, &receiver.name, "ingress");
    println!(
        "stats: receiver ingress +{allowed} allowed (+{allowed_bytes} bytes), +{denied} denied \
         after {ALLOWED_SENT} allowed and {DENIED_SENT} denied datagrams\n{}",
        receiver_after.text
    );
    assert!(
        allowed >= ALLOWED_SENT,
        "receiver ingress allowed +{allowed}"
    );
    assert!(
        allowed_bytes >= ALLOWED_SENT * (64 + 28),
        "receiver ingress bytes +{allowed_bytes}"
    );
    assert!(denied >= DENIED_SENT, "receiver ingress denied +{denied}");
    let (sent, refused, _) = grew(&sender_after, &sender_before, &sender.name, "egress");
    assert!(
        sent >= ALLOWED_SENT + DENIED_SENT,
        "sender egress allowed +{sent}"
    );
    assert!(refused >= 1, "sender egress denied +{refused}");
}

#[test]
fn ip_options_and_fragments_are_enforced_and_counted() {
    require_root();
    let mut cleanup = Cleanup::new();
    let scene = scene(&mut cleanup, "e2e-frag", "10.245.2.1", "10.245.2.2");
    let before = scene.home.stats(None);

    let with_options = Datagram {
        len: 64,
        ip_options: RECORD_ROUTE.to_vec(),
        ..Datagram::default()
    };
    assert_eq!(send(&scene, ALLOWED, &with_options), Some(64));
    send_refused(&scene, DENIED, &with_options, 1);
    let after_options = scene.home.stats(None);
    let options = after_options.counter("ip_options") - before.counter("ip_options");
    // Each datagram crosses the sender's egress program, and the allowed one the receiver's
    // ingress program too.
    assert!(
        options >= 3,
        "ip_options went up by {options}:\n{}",
        after_options.text
    );

    // 4000 bytes over MTU 1500: the sender's kernel sends three fragments.
    let large = Datagram {
        len: 4000,
        ..Datagram::default()
    };
    assert_eq!(send(&scene, ALLOWED, &large), Some(4000));
    send_refused(&scene, DENIED, &large, 1);
    let after = scene.home.stats(None);
    let fragments = after.counter("fragments") - after_options.counter("fragments");
    let refused = after.counter("dropped_fragment") - after_options.counter("dropped_fragment");
    println!(
        "ip options: +{options} counted; fragments: +{fragments} counted, +{refused} later \
         fragments dropped with their denied first"
    );
    // Three fragments through the sender's egress each time, and the allowed datagram's
    // three through the receiver's ingress.
    assert!(
        fragments >= 9,
        "fragments went up by {fragments}:\n{}",
        after.text
    );
    assert!(
        refused >= 2,
        "dropped_fragment went up by {refused}:\n{}",
        after.text
    );
}
