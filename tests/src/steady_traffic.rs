//! Steady allowed and denied traffic between a client and a server workload, for the tests
//! that disturb the agent or the datastore and must lose no allowed packet and pass no
//! denied one: a TCP connection with a message every 10 ms (each echoed; neither side may
//! retransmit), UDP datagrams every 5 ms (each must arrive), and a TCP connection attempt
//! and a UDP datagram to denied ports every 20 ms (none may arrive).

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::matrix::{Scene, WorkloadPlan};
use crate::traffic::{
    DatagramStream, EchoStream, Inbox, Observed, Probe, RepeatedProbe, StreamLog,
};

pub const TCP_ALLOWED: u16 = 7100;
pub const UDP_ALLOWED: u16 = 7101;
pub const TCP_DENIED: u16 = 7200;
pub const UDP_DENIED: u16 = 7201;
/// What the server serves (for [`Scene::build`]).
/// How long [`SteadyTraffic::stop`] waits for datagrams sent just before it.
const LATE_ARRIVAL: Duration = Duration::from_secs(1);

pub const TCP_PORTS: [u16; 2] = [TCP_ALLOWED, TCP_DENIED];
pub const UDP_PORTS: [u16; 2] = [UDP_ALLOWED, UDP_DENIED];

/// The server's profile allows the client's role on the allowed ports only; the client
/// may send anything.
pub const POLICY: &str = r#"- apiVersion: v1
  kind: profile
  metadata:
    name: server
  spec:
    ingress:
    - action: allow
      protocol: tcp
      source:
        selector: role == 'client'
      destination:
        ports: [7100]
    - action: allow
      protocol: udp
      source:
        selector: role == 'client'
      destination:
        ports: [7101]
- apiVersion: v1
  kind: profile
  metadata:
    name: client
    labels: {role: client}
  spec:
    egress:
    - action: allow
"#;

/// The client (`ips[0]`) and the server (`ips[1]`). Tests running at once need addresses
/// of their own: workloads get host routes.
pub fn client_and_server<'a>(ips: &'a [&'a str; 2]) -> [WorkloadPlan<'a>; 2] {
    [
        WorkloadPlan {
            label: "client",
            profiles: &["client"],
            ips: &ips[..1],
        },
        WorkloadPlan {
            label: "server",
            profiles: &["server"],
            ips: &ips[1..],
        },
    ]
}

/// The traffic, running from the scene's "client" to its "server".
pub struct SteadyTraffic {
    stream: EchoStream,
    datagrams: DatagramStream,
    denied: [RepeatedProbe; 2],
    inbox: Arc<Inbox>,
}

/// What [`SteadyTraffic`] saw.
pub struct TrafficReport {
    pub datagrams: StreamLog,
    pub stream: StreamLog,
    pub denied: Vec<Observed>,
    pub lost_datagrams: usize,
    /// When each allowed datagram that never arrived was sent, after `started`.
    pub lost_sent_after: Vec<Duration>,
    /// When the first allowed datagram was sent: the origin of `lost_sent_after`.
    pub started: Instant,
    /// When each allowed datagram that arrived arrived.
    pub datagram_arrivals: Vec<Instant>,
    pub server_retransmissions: u32,
    pub denied_arrived: usize,
}

impl SteadyTraffic {
    pub fn start(scene: &Scene) -> SteadyTraffic {
        let server = scene.peer("server");
        let address = server.ip(false).expect("an IPv4 address");
        let inbox = server.services.inbox();
        let client = scene.peer("client").netns.clone();
        let every = Duration::from_millis(20);
        let denied = |probe| RepeatedProbe::start(&client, address, probe, inbox.clone(), every);
        SteadyTraffic {
            stream: EchoStream::start(
                &client,
                SocketAddr::new(address, TCP_ALLOWED),
                Duration::from_millis(10),
            ),
            datagrams: DatagramStream::start(
                &client,
                SocketAddr::new(address, UDP_ALLOWED),
                Duration::from_millis(5),
            ),
            denied: [
                denied(Probe::Tcp(TCP_DENIED)),
                denied(Probe::Udp(UDP_DENIED)),
            ],
            inbox,
        }
    }

    pub fn stop(self, scene: &Scene) -> TrafficReport {
        let datagrams = self.datagrams.stop();
        let stream = self.stream.stop();
        let denied: Vec<Observed> = self.denied.into_iter().flat_map(|p| p.stop()).collect();
        // A datagram still in flight (or not yet read by the server's thread on a loaded
        // machine) when the streams stop is not lost: give the last ones time to arrive.
        let arrival_deadline = Instant::now() + LATE_ARRIVAL;
        let arrivals: Vec<Option<Instant>> = datagrams
            .sent
            .iter()
            .map(|(token, _)| {
                let left = arrival_deadline.saturating_duration_since(Instant::now());
                self.inbox.wait(*token, left).map(|a| a.at)
            })
            .collect();
        let started = datagrams
            .sent
            .first()
            .map_or_else(Instant::now, |(_, at)| *at);
        let lost_sent_after = datagrams
            .sent
            .iter()
            .zip(&arrivals)
            .filter(|(_, arrival)| arrival.is_none())
            .map(|((_, sent), _)| sent.duration_since(started))
            .collect();
        let server_retransmissions = scene
            .peer("server")
            .services
            .retransmissions_to(stream.local.expect("the stream's address"))
            .expect("the server side of the stream");
        TrafficReport {
            lost_datagrams: arrivals.iter().filter(|a| a.is_none()).count(),
            lost_sent_after,
            started,
            datagram_arrivals: arrivals.into_iter().flatten().collect(),
            server_retransmissions,
            denied_arrived: self.inbox.count_on(TCP_DENIED) + self.inbox.count_on(UDP_DENIED),
            datagrams,
            stream,
            denied,
        }
    }
}

impl TrafficReport {
    /// Allowed datagrams that arrived within `span`.
    pub fn datagrams_arrived_in(&self, span: &Range<Instant>) -> usize {
        self.datagram_arrivals
            .iter()
            .filter(|at| span.contains(at))
            .count()
    }

    /// Prints the counts (to be quoted) and asserts: no allowed packet lost, no denied one
    /// through.
    pub fn check(&self, what: &str) {
        eprintln!(
            "{what}: allowed: {} UDP datagrams, {} lost; {} TCP messages, {} unanswered, \
             retransmissions {} (client) {} (server), longest round trip {:?}; \
             denied: {} attempts, {} through",
            self.datagrams.sent.len(),
            self.lost_datagrams,
            self.stream.sent.len(),
            self.stream.unanswered(),
            self.stream.retransmissions,
            self.server_retransmissions,
            self.stream.longest_round_trip(),
            self.denied.len(),
            self.denied_arrived,
        );
        assert_eq!(
            self.lost_datagrams, 0,
            "allowed datagrams lost, sent this long after the first: {:?}",
            self.lost_sent_after
        );
        assert_eq!(self.stream.error, None);
        assert_eq!(self.stream.unanswered(), 0, "allowed TCP messages lost");
        assert_eq!(self.stream.retransmissions, 0, "the client retransmitted");
        assert_eq!(self.server_retransmissions, 0, "the server retransmitted");
        assert!(
            self.denied
                .iter()
                .all(|seen| !seen.reached && !seen.replied),
            "a denied attempt got through"
        );
        assert_eq!(self.denied_arrived, 0, "denied packets arrived");
    }
}
