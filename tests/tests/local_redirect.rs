//! Node-local forwarding by the programs: what two workloads of one node send each other
//! passes their policy as before and reaches the other workload one hop (one TTL) away, as
//! through the host, but without the host's IP stack forwarding it; with the agent's
//! `--no-local-redirect` the host's stack forwards it again.
//!
//! The node is a router namespace, so its forwarding counters (`IpForwDatagrams`,
//! `Ip6OutForwDatagrams`) count this test's packets only. A flow's first packet always
//! takes the stack (the destination's program must know the flow before its packets skip
//! the stack), and so does every packet of a flow the host's NAT rewrites.

use std::net::{IpAddr, SocketAddr};
use std::thread;
use std::time::Duration;

use palisade_tests::agent_process::{AgentHome, AgentProcess};
use palisade_tests::matrix::PROBE_TIMEOUT;
use palisade_tests::palisade_cli::Datastore;
use palisade_tests::router::Router;
use palisade_tests::topology::{Workload, WorkloadSpec};
use palisade_tests::traffic::{
    EchoStream, Frame, FrameCapture, Observed, Probe, Services, StreamLog, arrival_hop_limit,
    interface_mac, interface_packets, probe,
};
use palisade_tests::{Cleanup, netfilter, require_root};

const NODE: &str = "redirect";
/// Allowed both ways, TCP and UDP.
const ALLOWED: u16 = 7101;
/// Served, but no policy allows it.
const DENIED: u16 = 7102;
/// Allowed (UDP), served by nothing but the hop limit probes' receivers.
const HOP_LIMIT_PORT: u16 = 7103;
/// The TTL and hop limit the probes are sent with: not a default, so that one arriving
/// unchanged could not pass for one decremented.
const SENT_HOP_LIMIT: u8 = 30;
/// What TCP the policy allows once it revokes `ALLOWED` (an empty list would be any port).
const OTHER: u16 = 7109;
const INTERVAL: Duration = Duration::from_millis(50);
/// A service address the router rewrites to workload 1 (`through_dnat`).
const SERVICE_ADDR: &str = "10.96.0.10";
const SERVICE_PORT: u16 = 80;

/// Both workloads have the profile `peer`, which accepts `tcp_ports` (TCP) and the two UDP
/// ports from peers, and sends anything.
fn policy(tcp_ports: &str) -> String {
    format!(
        r#"- apiVersion: v1
  kind: profile
  metadata:
    name: peer
    labels: {{role: peer}}
  spec:
    ingress:
    - action: allow
      protocol: tcp
      source:
        selector: role == 'peer'
      destination:
        ports: {tcp_ports}
    - action: allow
      protocol: udp
      source:
        selector: role == 'peer'
      destination:
        ports: [{ALLOWED}, {HOP_LIMIT_PORT}]
    egress:
    - action: allow
"#
    )
}

/// Two workloads on a router namespace with an agent, each serving `ALLOWED` and `DENIED`.
/// Dropped in field order: the agent before its home, the services before the cleanup
/// deletes their namespaces.
struct Node {
    agent: Option<AgentProcess>,
    home: AgentHome,
    store: Datastore,
    router: Router,
    workloads: Vec<(Workload, Services)>,
}

impl Node {
    fn build(cleanup: &mut Cleanup) -> Node {
        let router = Router::create(cleanup);
        let store = Datastore::new();
        store.apply(&policy(&format!("[{ALLOWED}]")));
        let workloads = [["10.239.1.1", "fd39:1::1"], ["10.239.1.2", "fd39:1::2"]]
            .iter()
            .map(|ips| {
                let spec = WorkloadSpec {
                    prefix: "rdr",
                    ips,
                    labels: "",
                    profiles: &["peer"],
                };
                let workload = router.add_workload(cleanup, &store, NODE, &spec);
                let services =
                    Services::start(&workload.netns.name, &[ALLOWED, DENIED], &[ALLOWED, DENIED]);
                (workload, services)
            })
            .collect();
        let home = AgentHome::in_netns(store.url(), NODE, &router.ns.name);
        Node {
            agent: None,
            home,
            store,
            router,
            workloads,
        }
    }

    /// Starts the agent with `extra` arguments and waits until it enforces the store.
    fn start_agent(&mut self, extra: &[&str]) {
        let mut agent = self.home.start(extra);
        let interfaces: Vec<&str> = self
            .workloads
            .iter()
            .map(|(w, _)| w.interface.as_str())
            .collect();
        agent.wait_until_enforcing(&interfaces, self.store.revision());
        self.agent = Some(agent);
    }

    /// Stops the agent and starts another with `extra` arguments, which adopts the
    /// attachments and the maps, and waits until it publishes the store's revision.
    fn restart_agent(&mut self, extra: &[&str]) {
        let status = self.agent.take().expect("an agent runs").terminate();
        assert!(status.success(), "the agent exited with {status}");
        let mut agent = self.home.start(extra);
        agent.wait_for(&["attachments adopted", "interfaces=2"]);
        let revision = self.store.revision();
        agent.wait_for(&["policy published", &format!("revision={revision}")]);
        self.agent = Some(agent);
    }

    fn address(&self, index: usize, ipv6: bool) -> IpAddr {
        let workload = &self.workloads[index].0;
        workload
            .ips
            .iter()
            .copied()
            .find(|ip| ip.is_ipv6() == ipv6)
            .unwrap_or_else(|| panic!("{} has no address of that family", workload.name))
    }

    /// `what` from workload `from` to workload `to`.
    fn probe(&self, from: usize, to: usize, what: Probe, ipv6: bool) -> Observed {
        let (sender, (_, receiver)) = (&self.workloads[from].0, &self.workloads[to]);
        let dst = self.address(to, ipv6);
        probe(
            &sender.netns.name,
            dst,
            what,
            &receiver.inbox(),
            PROBE_TIMEOUT,
        )
    }

    /// The TTL or hop limit a datagram sent with `sent` from `from` arrives at `to` with.
    fn arrival_hop_limit(&self, from: usize, to: usize, sent: u8, ipv6: bool) -> Option<u8> {
        arrival_hop_limit(
            &self.workloads[from].0.netns.name,
            &self.workloads[to].0.netns.name,
            SocketAddr::new(self.address(to, ipv6), HOP_LIMIT_PORT),
            sent,
            PROBE_TIMEOUT,
        )
    }

    /// Every allowed probe between the two, both ways, both families.
    fn assert_allowed_traffic_flows(&self) {
        for ipv6 in [false, true] {
            for (from, to) in [(0, 1), (1, 0)] {
                for what in [Probe::Tcp(ALLOWED), Probe::Udp(ALLOWED)] {
                    assert_eq!(
                        self.probe(from, to, what, ipv6),
                        Observed::BOTH_WAYS,
                        "{what} from workload {from} to {to} (IPv6: {ipv6})"
                    );
                }
            }
        }
    }

    /// The denied port stays denied, both ways, both families.
    fn assert_denied_traffic_refused(&self) {
        for ipv6 in [false, true] {
            for (from, to) in [(0, 1), (1, 0)] {
                for what in [Probe::Tcp(DENIED), Probe::Udp(DENIED)] {
                    assert!(
                        !self.probe(from, to, what, ipv6).reached,
                        "{what} from workload {from} to {to} (IPv6: {ipv6}) got through"
                    );
                }
            }
        }
    }

    /// One hop: the TTL and hop limit arrive one less than sent, as the host's forwarding
    /// leaves them; and a packet sent with 1 does not arrive at all (the host answers it
    /// with time exceeded, as a router does).
    fn assert_one_hop(&self) {
        for ipv6 in [false, true] {
            for (from, to) in [(0, 1), (1, 0)] {
                assert_eq!(
                    self.arrival_hop_limit(from, to, SENT_HOP_LIMIT, ipv6),
                    Some(SENT_HOP_LIMIT - 1),
                    "from workload {from} to {to} (IPv6: {ipv6})"
                );
                assert_eq!(
                    self.arrival_hop_limit(from, to, 1, ipv6),
                    None,
                    "a packet with TTL 1 from workload {from} to {to} (IPv6: {ipv6}) arrived"
                );
            }
        }
    }

    /// What the endpoints' counters say: allowed packets both ways on each side, and the
    /// denied ones on their ingress.
    fn endpoint_counts(&self) -> Vec<(u64, u64, u64)> {
        let stats = self.home.stats(None);
        self.workloads
            .iter()
            .map(|(w, _)| {
                let (egress, ingress) = (
                    stats.endpoint(&w.name, "egress"),
                    stats.endpoint(&w.name, "ingress"),
                );
                (
                    egress.allowed_packets,
                    ingress.allowed_packets,
                    ingress.denied_packets,
                )
            })
            .collect()
    }

    /// Runs an established TCP connection from workload 0 to 1 (its handshake over), with
    /// messages every `INTERVAL`, for as long as `during` takes; then checks that it ran.
    fn while_established<T>(&self, ipv6: bool, during: impl FnOnce() -> T) -> T {
        let server = SocketAddr::new(self.address(1, ipv6), ALLOWED);
        let stream = EchoStream::start(&self.workloads[0].0.netns.name, server, INTERVAL);
        thread::sleep(Duration::from_millis(300));
        let measured = during();
        let log = stream.stop();
        assert!(
            log.echoed.len() >= 10 && log.error.is_none(),
            "the connection (IPv6: {ipv6}) should have run: {} echoed, {:?}",
            log.echoed.len(),
            log.error
        );
        measured
    }

    /// How many packets the host's stack forwarded (IPv4, IPv6) while an established TCP
    /// connection from workload 0 to 1 exchanged messages for a second, in each family: its
    /// handshake is left out (a flow's first packet always takes the stack).
    fn forwarded_while_established(&self) -> (u64, u64) {
        let forwarded = |ipv6: bool| {
            self.while_established(ipv6, || {
                let before = self.router.forwarded();
                thread::sleep(Duration::from_secs(1));
                let after = self.router.forwarded();
                if ipv6 {
                    after.1 - before.1
                } else {
                    after.0 - before.0
                }
            })
        };
        (forwarded(false), forwarded(true))
    }

    /// What reached workload 1 while an established IPv4 TCP connection from workload 0
    /// sent it messages for a second: the frames to its port, and how many packets its
    /// host veth sent and its own end received.
    fn delivery_while_established(&self) -> Delivery {
        let (server, _) = &self.workloads[1];
        let counters = || {
            (
                interface_packets(Some(&self.router.ns), &server.interface).1,
                interface_packets(Some(&server.netns), WORKLOAD_INTERFACE).0,
            )
        };
        self.while_established(false, || {
            let capture = FrameCapture::start(&server.netns.name, WORKLOAD_INTERFACE, ALLOWED);
            let before = counters();
            thread::sleep(Duration::from_secs(1));
            let after = counters();
            Delivery {
                host_sent: after.0 - before.0,
                workload_received: after.1 - before.1,
                frames: capture.stop(),
            }
        })
    }

    /// The frame every packet to workload 1 should arrive in, whoever sent it: to the
    /// workload's MAC, from its host veth's.
    fn frame_to_workload_1(&self) -> Frame {
        let (server, _) = &self.workloads[1];
        Frame {
            dst: interface_mac(Some(&server.netns), WORKLOAD_INTERFACE),
            src: interface_mac(Some(&self.router.ns), &server.interface),
        }
    }

    /// A TCP connection from workload 0 to `SERVICE_ADDR:SERVICE_PORT`, which the router
    /// rewrites (DNAT) to workload 1's `ALLOWED`: its replies must go back through the
    /// host's conntrack, which gives them the service's address again. Also how many
    /// IPv4 packets the host's stack forwarded while it ran.
    fn through_dnat(&self) -> (StreamLog, u64) {
        let server = self.address(1, false);
        netfilter::run_with_input(
            &self.router.ns,
            "iptables-legacy",
            &[
                "-t",
                "nat",
                "-A",
                "PREROUTING",
                "-d",
                SERVICE_ADDR,
                "-p",
                "tcp",
                "--dport",
                &SERVICE_PORT.to_string(),
                "-j",
                "DNAT",
                "--to-destination",
                &format!("{server}:{ALLOWED}"),
            ],
            "",
        )
        .expect("a DNAT rule on the router");
        let service = SocketAddr::new(SERVICE_ADDR.parse().expect("an address"), SERVICE_PORT);
        let before = self.router.forwarded();
        let stream = EchoStream::start(&self.workloads[0].0.netns.name, service, INTERVAL);
        thread::sleep(Duration::from_secs(1));
        let log = stream.stop();
        (log, self.router.forwarded().0 - before.0)
    }

    /// A TCP connection from workload 0 to 1 on `ALLOWED`, running while workload 1 goes
    /// (`palisade workload remove`: its veth too) and a new workload takes its addresses.
    /// The connection's packets, forwarded past the host to the old veth until then, must
    /// take the host's routes to the new one, whose kernel resets the connection. (Two
    /// things send them to the stack: the re-check under the generation the endpoints'
    /// change brings, and, before it, the gone veth's missing `PAL_EP_INDEX` entry; this
    /// checks the outcome, not which of them got there first.)
    fn address_moves(&mut self, cleanup: &mut Cleanup) -> StreamLog {
        let server = SocketAddr::new(self.address(1, false), ALLOWED);
        let stream = EchoStream::start(&self.workloads[0].0.netns.name, server, INTERVAL);
        thread::sleep(Duration::from_millis(500));
        let (gone, services) = self.workloads.remove(1);
        // The veth first: the old server's sockets close into a namespace with no way out.
        self.store.palisade_ok_in(
            Some(&self.router.ns.name),
            &["workload", "remove", &gone.name, "--node", NODE],
            "",
        );
        drop(services);
        let ips: Vec<String> = gone.ips.iter().map(ToString::to_string).collect();
        let ips: Vec<&str> = ips.iter().map(String::as_str).collect();
        let spec = WorkloadSpec {
            prefix: "rdr",
            ips: &ips,
            labels: "",
            profiles: &["peer"],
        };
        let workload = self.router.add_workload(cleanup, &self.store, NODE, &spec);
        let services =
            Services::start(&workload.netns.name, &[ALLOWED, DENIED], &[ALLOWED, DENIED]);
        let interface = workload.interface.clone();
        self.workloads.push((workload, services));
        let revision = self.store.revision();
        self.agent
            .as_mut()
            .expect("an agent runs")
            .wait_until_enforcing(&[&interface], revision);
        thread::sleep(Duration::from_millis(1500));
        stream.stop()
    }

    /// A TCP connection from workload 0 to 1 on `ALLOWED`, running across a policy change
    /// that stops allowing it.
    fn revoke(&mut self) -> StreamLog {
        let server = SocketAddr::new(self.address(1, false), ALLOWED);
        let stream = EchoStream::start(&self.workloads[0].0.netns.name, server, INTERVAL);
        thread::sleep(Duration::from_millis(500));
        self.allow_tcp_ports(&format!("[{OTHER}]"));
        thread::sleep(Duration::from_millis(1500));
        stream.stop()
    }

    /// Writes the policy with `tcp_ports` allowed and waits until the agent publishes it.
    fn allow_tcp_ports(&mut self, tcp_ports: &str) {
        self.store.apply(&policy(tcp_ports));
        let revision = self.store.revision();
        self.agent
            .as_mut()
            .expect("an agent runs")
            .wait_for(&["policy published", &format!("revision={revision}")]);
    }
}

/// The workload's end of its veth, in its namespace (what `palisade workload add` names it).
const WORKLOAD_INTERFACE: &str = "eth0";

/// See [`Node::delivery_while_established`].
struct Delivery {
    host_sent: u64,
    workload_received: u64,
    frames: Vec<Frame>,
}

#[test]
fn local_workloads_talk_past_the_hosts_forwarding_under_their_policy_and_through_it_when_off() {
    require_root();
    let mut cleanup = Cleanup::new();
    let mut node = Node::build(&mut cleanup);
    node.start_agent(&[]);

    // The first packets may find no neighbour entry yet: the stack forwards those and
    // resolves it.
    node.assert_allowed_traffic_flows();
    let counted_before = node.endpoint_counts();
    node.assert_allowed_traffic_flows();
    node.assert_denied_traffic_refused();
    node.assert_one_hop();
    assert_eq!(
        node.forwarded_while_established(),
        (0, 0),
        "the host's stack forwarded an established connection's packets between local \
         workloads (IPv4, IPv6)"
    );
    // Delivered into the workload's namespace, past its host veth's transmit, in frames
    // with the MACs the host's stack would have written.
    let expected_frame = node.frame_to_workload_1();
    let delivered = node.delivery_while_established();
    assert!(
        delivered.workload_received >= 20 && delivered.host_sent * 4 < delivered.workload_received,
        "an established connection's packets should reach workload 1 past its host veth's \
         transmit: the host veth sent {}, the workload received {}",
        delivered.host_sent,
        delivered.workload_received
    );
    assert!(
        delivered.frames.len() >= 10 && delivered.frames.iter().all(|f| *f == expected_frame),
        "frames delivered to workload 1 should be {expected_frame:?}: {:?}",
        delivered.frames
    );
    let counted_after = node.endpoint_counts();
    for (index, (before, after)) in counted_before.iter().zip(&counted_after).enumerate() {
        // Each side's program ran on every packet: allowed both ways, the denied ones
        // on the destination's ingress.
        assert!(
            after.0 > before.0 && after.1 > before.1 && after.2 > before.2,
            "workload {index}'s counters (egress allowed, ingress allowed, ingress denied) \
             went from {before:?} to {after:?}"
        );
    }

    // An established connection the new policy denies is cut, although its packets never
    // meet the host's stack.
    let revoked = node.revoke();
    let (first_lost, _) = revoked
        .first_unanswered()
        .expect("the connection the new policy denies was never cut");
    let lost_from = revoked
        .sent
        .iter()
        .position(|(token, _)| *token == first_lost)
        .unwrap_or(revoked.sent.len());
    assert!(
        revoked.sent[lost_from..]
            .iter()
            .all(|(token, _)| !revoked.echoed.contains_key(token)),
        "the revoked connection came back"
    );
    assert!(
        lost_from > 0 && revoked.sent.len() > lost_from + 10,
        "the connection should run before the change and go on sending after it: \
         {lost_from} of {} messages before the cut ({:?})",
        revoked.sent.len(),
        revoked.error
    );

    // A flow the host rewrites keeps to the host's stack: the replies of a connection to a
    // DNATed service address, from a backend on the same node, are un-NATed there.
    node.allow_tcp_ports(&format!("[{ALLOWED}]"));
    let (serviced, forwarded) = node.through_dnat();
    assert!(
        serviced.echoed.len() >= 10 && serviced.unanswered() <= 1 && serviced.error.is_none(),
        "a connection to a DNATed service address with its backend on this node should run: \
         {} of {} echoed, {:?}",
        serviced.echoed.len(),
        serviced.sent.len(),
        serviced.error
    );
    // Nothing was learnt for it: every message and echo took the host's stack.
    assert!(
        forwarded >= 2 * serviced.echoed.len() as u64,
        "the host's stack forwarded {forwarded} packets of a DNATed connection that echoed \
         {} messages: its packets went past the host's NAT",
        serviced.echoed.len()
    );

    // A flow to a veth that is gone takes the host's routes, which now lead to the
    // workload that took the address.
    let moved = node.address_moves(&mut cleanup);
    assert!(
        moved.error.as_deref().is_some_and(|e| e.contains("reset")),
        "a connection to an address another workload took should be reset by that \
         workload: {:?}, {} of {} echoed",
        moved.error,
        moved.echoed.len(),
        moved.sent.len()
    );

    // Off: the host's stack forwards, with the same outcome.
    node.store.apply(&policy(&format!("[{ALLOWED}]")));
    node.restart_agent(&["--no-local-redirect"]);
    node.assert_allowed_traffic_flows();
    node.assert_denied_traffic_refused();
    node.assert_one_hop();
    // A message and its echo every 50 ms for a second, each with its ACK at the least.
    let (v4, v6) = node.forwarded_while_established();
    assert!(
        v4 >= 20 && v6 >= 20,
        "with --no-local-redirect the host's stack should forward the established \
         connection's packets: IPv4 {v4}, IPv6 {v6}"
    );
    // ... out of the host veth, in the frames the programs delivered with (workload 1 is
    // the one that took the moved addresses by now).
    let expected_frame = node.frame_to_workload_1();
    let forwarded = node.delivery_while_established();
    assert!(
        forwarded.host_sent >= forwarded.workload_received && forwarded.workload_received >= 20,
        "with --no-local-redirect the host veth should send what workload 1 receives: sent {}, \
         received {}",
        forwarded.host_sent,
        forwarded.workload_received
    );
    assert!(
        !forwarded.frames.is_empty() && forwarded.frames.iter().all(|f| *f == expected_frame),
        "frames the host's stack forwarded to workload 1 should be {expected_frame:?}: {:?}",
        forwarded.frames
    );
}
