//! IPv6 and ICMP enforced end to end, on dual-stack workloads: ICMP and ICMPv6 echo allowed
//! and denied by type and code rules (`icmp`, `notICMP`) and by `ipVersion`; replies of
//! allowed flows pass through a workload whose egress policy denies everything. Every probe
//! over both families is compared with `palisade trace`'s verdict for the same packet.

use palisade_tests::matrix::{Scene, WorkloadPlan};
use palisade_tests::traffic::{EchoStream, Probe};
use palisade_tests::{Cleanup, require_root};

use std::net::SocketAddr;
use std::time::Duration;

const TCP_PORT: u16 = 8080;
const UDP_PORT: u16 = 8081;
const PROBES: [Probe; 4] = [
    Probe::Tcp(TCP_PORT),
    Probe::Udp(UDP_PORT),
    Probe::PING,
    // An echo request with code 1: hosts answer it like any other.
    Probe::IcmpEcho(1),
];

/// `client` may send anything and accepts nothing (but replies). `quiet` accepts echo
/// requests (ICMPv6 with code 0 only; ICMP with any code), TCP 8080 and UDP 8081, and its
/// egress denies everything. `noping` refuses ICMPv6 echo requests, accepts ICMP except echo
/// requests with code 1, and anything else over IPv6 only.
const POLICY: &str = r#"- apiVersion: v1
  kind: profile
  metadata:
    name: client
  spec:
    egress:
    - action: allow
- apiVersion: v1
  kind: profile
  metadata:
    name: quiet
  spec:
    ingress:
    - action: allow
      protocol: icmpv6
      icmp: {type: 128, code: 0}
    - action: allow
      protocol: icmp
      icmp: {type: 8}
    - action: allow
      protocol: tcp
      destination:
        ports: [8080]
    - action: allow
      protocol: udp
      destination:
        ports: [8081]
    egress:
    - action: deny
- apiVersion: v1
  kind: profile
  metadata:
    name: noping
  spec:
    ingress:
    - action: deny
      protocol: icmpv6
      icmp: {type: 128}
    - action: allow
      protocol: icmp
      notICMP: {type: 8, code: 1}
    - action: allow
      ipVersion: 6
    egress:
    - action: allow
"#;

#[test]
fn icmp_rules_ip_versions_and_replies_over_ipv4_and_ipv6() {
    require_root();
    let mut cleanup = Cleanup::new();
    let plan = |label, profiles, ips| WorkloadPlan {
        label,
        profiles,
        ips,
    };
    let mut scene = Scene::build(
        &mut cleanup,
        "e2e-ipv6",
        &[
            plan("client", &["client"], &["10.242.1.1", "fd42:1::1"]),
            plan("quiet", &["quiet"], &["10.242.1.2", "fd42:1::2"]),
            plan("noping", &["noping"], &["10.242.1.3", "fd42:1::3"]),
        ],
        Some(("10.242.250", "fd42:250")),
        &[TCP_PORT],
        &[UDP_PORT],
    );
    scene.start_agent();
    scene.store.apply(POLICY);
    scene.wait_for_enforcement();

    let matrix = scene.matrix("IPv4 and IPv6, ICMP rules", &PROBES, &[false, true]);

    // Replies pass although quiet's egress denies everything: its answers to allowed
    // connections, datagrams and echo requests came back (the matrix checks every
    // reachable probe had its reply), from workloads and from outside.
    for src in ["client", "outside"] {
        for probe in [Probe::Tcp(TCP_PORT), Probe::Udp(UDP_PORT), Probe::PING] {
            assert!(matrix.allows(src, "quiet", probe), "{src} -> quiet {probe}");
            assert!(
                matrix.allows_v6(src, "quiet", probe),
                "{src} -> quiet {probe} v6"
            );
        }
    }
    // ... while nothing quiet starts gets out.
    for probe in PROBES {
        assert!(
            !matrix.allows("quiet", "client", probe),
            "quiet -> client {probe}"
        );
        assert!(
            !matrix.allows_v6("quiet", "outside", probe),
            "quiet -> outside {probe}"
        );
    }
    // ICMP type and code rules.
    assert!(!matrix.allows_v6("client", "quiet", Probe::IcmpEcho(1)));
    assert!(matrix.allows("client", "quiet", Probe::IcmpEcho(1)));
    assert!(!matrix.allows_v6("client", "noping", Probe::PING));
    assert!(matrix.allows("client", "noping", Probe::PING));
    assert!(!matrix.allows("client", "noping", Probe::IcmpEcho(1)));
    // ipVersion.
    assert!(matrix.allows_v6("client", "noping", Probe::Tcp(TCP_PORT)));
    assert!(!matrix.allows("client", "noping", Probe::Tcp(TCP_PORT)));

    // A longer connection into quiet over IPv6: every message echoed, nothing retransmitted.
    let quiet = scene.peer("quiet");
    let address = quiet.ip(true).expect("quiet's IPv6 address");
    let client = scene.peer("client").netns.clone();
    let stream = EchoStream::start(
        &client,
        SocketAddr::new(address, TCP_PORT),
        Duration::from_millis(10),
    );
    std::thread::sleep(Duration::from_millis(300));
    let log = stream.stop();
    assert!(
        log.sent.len() >= 20,
        "only {} messages sent",
        log.sent.len()
    );
    assert_eq!(log.unanswered(), 0, "{log:?}");
    assert_eq!(log.retransmissions, 0, "{log:?}");
    assert_eq!(log.error, None);
}
