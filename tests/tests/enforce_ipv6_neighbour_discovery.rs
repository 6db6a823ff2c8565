//! IPv6 neighbour discovery between workloads and their host, end to end, as Linux does it
//! over Calico's plumbing (the workload's default route is via the host veth's link-local
//! `fe80::ecee:eeff:feee:eeee`, the host routes the workload's /128 to the veth), with the
//! agent's default flags and with `--host-to-endpoint policy`:
//! - both sides resolve each other: the workload solicits its gateway from its own global
//!   address, so the host's advertisement goes to that address;
//! - the host's unicast NUD probes to the workload's global address (hop limit 255) are
//!   answered, and so are the workload's probes of its gateway;
//! - and yet neighbour discovery messages that cross the host's routing, from one workload
//!   to another's global address, are judged by policy like any ICMPv6 (the bypass the
//!   packet fuzzer found), in both programs.
//!
//! The server's policy denies every ICMPv6 message into it and everything out of it, so
//! none of its discovery works unless palisade lets it pass as link control.

use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use palisade::netplumb::IPV6_GATEWAY;
use palisade_tests::matrix::{PROBE_TIMEOUT, Scene, WorkloadPlan};
use palisade_tests::netns::ip_json;
use palisade_tests::traffic::{Observed, Probe, in_netns, new_token, spawn_in_netns};
use palisade_tests::{Cleanup, require_root};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

const TCP_PORT: u16 = 8080;

/// `client` sends anything and accepts ICMPv6 (so that what the server sends it is decided
/// by the server's egress alone); `server` accepts TCP 8080 only and sends nothing of its
/// own.
const POLICY: &str = r#"- apiVersion: v1
  kind: profile
  metadata:
    name: client
  spec:
    ingress:
    - action: allow
      protocol: icmpv6
    egress:
    - action: allow
- apiVersion: v1
  kind: profile
  metadata:
    name: server
  spec:
    ingress:
    - action: allow
      protocol: tcp
      destination:
        ports: [8080]
    egress:
    - action: deny
"#;

/// Neighbour and router discovery types (RFC 4861): router solicitation and advertisement,
/// neighbour solicitation and advertisement, redirect.
const DISCOVERY_TYPES: [u8; 5] = [133, 134, 135, 136, 137];
const NEIGHBOUR_SOLICITATION: u8 = 135;

/// How long the kernel may take to settle a probe: it gives up after three unanswered
/// solicitations a second apart (FAILED); this bound only keeps a broken run from hanging.
const NUD_SETTLE_LIMIT: Duration = Duration::from_secs(30);
/// How long the positive control (a message that must arrive) may take.
const ARRIVAL_LIMIT: Duration = Duration::from_secs(5);
/// How often the waits here look again.
const POLL: Duration = Duration::from_millis(50);

#[test]
fn neighbour_discovery_with_the_host_works_with_the_default_flags() {
    neighbour_discovery_works_and_routed_discovery_is_judged(
        &[],
        ["fd43:4e44:1::1", "fd43:4e44:1::2"],
    );
}

#[test]
fn neighbour_discovery_with_the_host_works_when_the_host_is_policed() {
    neighbour_discovery_works_and_routed_discovery_is_judged(
        &["--host-to-endpoint", "policy"],
        ["fd43:4e44:2::1", "fd43:4e44:2::2"],
    );
}

/// `addresses`: the client's and the server's (each test its own: they run at once).
fn neighbour_discovery_works_and_routed_discovery_is_judged(
    agent_flags: &[&str],
    addresses: [&str; 2],
) {
    require_root();
    let mut cleanup = Cleanup::new();
    let plan = |label, profiles, ips| WorkloadPlan {
        label,
        profiles,
        ips,
    };
    let mut scene = Scene::build(
        &mut cleanup,
        "e2e-nd",
        &[
            plan("client", &["client"], &addresses[..1]),
            plan("server", &["server"], &addresses[1..]),
        ],
        None,
        &[TCP_PORT],
        &[],
    );
    scene.agent = Some(scene.home.start(agent_flags));
    scene.store.apply(POLICY);
    scene.wait_for_enforcement();
    // Every resolution from here on happens with the programs attached.
    for workload in &scene.workloads {
        workload
            .netns
            .run_ok("ip", &["-6", "neigh", "flush", "dev", "eth0"]);
        palisade_tests::netns::run_ok("ip", &["-6", "neigh", "flush", "dev", &workload.interface]);
    }

    // Resolution, both ways on both links: the connection needs the client and the server
    // to resolve their gateway, and the host to resolve both workloads.
    assert_eq!(
        scene.probe("client", "server", Probe::Tcp(TCP_PORT), true),
        Observed::BOTH_WAYS,
        "TCP over IPv6 from client to server, flags {agent_flags:?}"
    );

    // Unicast NUD both ways: each probe must be answered (REACHABLE), not given up (FAILED).
    for workload in &scene.workloads {
        let address = workload.ips[0].to_string();
        let host_view = || ip_json(&["-6", "neigh", "show", &address, "dev", &workload.interface]);
        palisade_tests::netns::run_ok(
            "ip",
            &[
                "-6",
                "neigh",
                "change",
                &address,
                "dev",
                &workload.interface,
                "nud",
                "probe",
            ],
        );
        assert_eq!(
            settled_state(host_view),
            "REACHABLE",
            "the host's unicast NUD probe of {address} on {}, flags {agent_flags:?}",
            workload.interface
        );
        let gateway = IPV6_GATEWAY.to_string();
        let netns = &workload.netns;
        let workload_view = || netns.ip_json(&["-6", "neigh", "show", &gateway, "dev", "eth0"]);
        netns.run_ok(
            "ip",
            &[
                "-6", "neigh", "change", &gateway, "dev", "eth0", "nud", "probe",
            ],
        );
        assert_eq!(
            settled_state(workload_view),
            "REACHABLE",
            "{}'s unicast NUD probe of its gateway, flags {agent_flags:?}",
            workload.name
        );
    }

    // Discovery messages routed between workloads are ICMPv6 like any other: the client's
    // reach the server (forwarded, hop limit 254) only if the server's ingress allowed
    // ICMPv6, which it does not; the server's reach the client only if the server's egress
    // allowed them, which it does not. The host's own messages (hop limit 255) are the
    // positive controls: they arrive, so the receivers were listening.
    let (client, server) = (scene.peer("client"), scene.peer("server"));
    let client_address = v6(client.ip(true));
    let server_address = v6(server.ip(true));
    let into_server = Receiver::start(&server.netns);
    let into_client = Receiver::start(&client.netns);
    let mut routed = Vec::new();
    for icmp_type in DISCOVERY_TYPES {
        let to_server = in_netns(&client.netns, || send(server_address, icmp_type));
        let to_client = in_netns(&server.netns, || send(client_address, icmp_type));
        routed.push((to_server, format!("type {icmp_type} from client to server")));
        routed.push((to_client, format!("type {icmp_type} from server to client")));
    }
    let to_server = send(server_address, NEIGHBOUR_SOLICITATION);
    let to_client = send(client_address, NEIGHBOUR_SOLICITATION);
    let arrived_at_server = into_server.until(to_server);
    let arrived_at_client = into_client.until(to_client);
    for (arrived, token, address) in [
        (&arrived_at_server, to_server, server_address),
        (&arrived_at_client, to_client, client_address),
    ] {
        assert!(
            arrived.contains(&token),
            "the host's solicitation to {address} did not arrive, flags {agent_flags:?}"
        );
    }
    let passed: Vec<&str> = routed
        .iter()
        .filter(|(token, _)| arrived_at_server.contains(token) || arrived_at_client.contains(token))
        .map(|(_, what)| what.as_str())
        .collect();
    assert!(
        passed.is_empty(),
        "routed discovery passed, flags {agent_flags:?}: {passed:?}"
    );
}

fn v6(address: Option<IpAddr>) -> Ipv6Addr {
    match address {
        Some(IpAddr::V6(v6)) => v6,
        other => panic!("not an IPv6 address: {other:?}"),
    }
}

/// The state the kernel settles a neighbour in after a probe (anything but PROBE), read
/// with `view` (`ip -j -6 neigh show ...`).
fn settled_state(view: impl Fn() -> serde_json::Value) -> String {
    let started = Instant::now();
    loop {
        let entries = view();
        let state = entries[0]["state"][0]
            .as_str()
            .unwrap_or("absent")
            .to_string();
        if state != "PROBE" || started.elapsed() > NUD_SETTLE_LIMIT {
            return state;
        }
        thread::sleep(POLL);
    }
}

/// Sends an ICMPv6 message of `icmp_type` with hop limit 255 (as discovery is sent) from
/// the calling thread's namespace to `dst`; returns the token it carries.
fn send(dst: Ipv6Addr, icmp_type: u8) -> u64 {
    let token = new_token();
    let socket =
        Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6)).expect("a raw ICMPv6 socket");
    socket
        .set_unicast_hops_v6(255)
        .expect("set the hop limit to 255");
    // Type, code, checksum (the kernel fills it in), four reserved bytes, then the token
    // where a solicitation's target address would start; 24 bytes, a solicitation's size.
    let mut message = vec![icmp_type, 0, 0, 0, 0, 0, 0, 0];
    message.extend_from_slice(&token.to_be_bytes());
    message.resize(24, 0);
    let to = SockAddr::from(SocketAddr::new(IpAddr::V6(dst), 0));
    socket
        .send_to(&message, &to)
        .unwrap_or_else(|e| panic!("send ICMPv6 type {icmp_type} to {dst}: {e}"));
    token
}

/// Collects the tokens of discovery-typed ICMPv6 messages that reach a namespace, from a
/// raw socket (which gets them before the kernel's own discovery looks at them, whatever
/// their hop limit); stops listening when dropped.
struct Receiver {
    tokens: mpsc::Receiver<u64>,
    stop: Arc<AtomicBool>,
    listener: Option<thread::JoinHandle<()>>,
}

impl Receiver {
    fn start(netns: &str) -> Receiver {
        let (tx, tokens) = mpsc::channel();
        let (ready_tx, ready) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let listener = spawn_in_netns(netns, move || {
            let socket = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))
                .expect("a raw ICMPv6 socket");
            socket.set_read_timeout(Some(POLL)).expect("a read timeout");
            let _ = ready_tx.send(());
            let mut buf = [MaybeUninit::<u8>::uninit(); 1500];
            while !stopped.load(Ordering::Relaxed) {
                let Ok(n) = socket.recv(&mut buf) else {
                    continue;
                };
                // SAFETY: recv initialised the first `n` bytes.
                let bytes: Vec<u8> = buf[..n]
                    .iter()
                    .map(|b| unsafe { b.assume_init() })
                    .collect();
                if n >= 16 && DISCOVERY_TYPES.contains(&bytes[0]) {
                    let token = u64::from_be_bytes(bytes[8..16].try_into().unwrap());
                    let _ = tx.send(token);
                }
            }
        });
        ready.recv().expect("the receiver started");
        Receiver {
            tokens,
            stop,
            listener: Some(listener),
        }
    }

    /// The tokens that arrived: until `awaited` did or [`ARRIVAL_LIMIT`] passed, then for
    /// [`PROBE_TIMEOUT`] more, for stragglers.
    fn until(&self, awaited: u64) -> Vec<u64> {
        let mut seen = Vec::new();
        let started = Instant::now();
        let mut quiet_from = None;
        loop {
            if let Ok(token) = self.tokens.recv_timeout(POLL) {
                seen.push(token);
                if token == awaited && quiet_from.is_none() {
                    quiet_from = Some(Instant::now());
                }
            }
            if quiet_from.is_none() && started.elapsed() > ARRIVAL_LIMIT {
                quiet_from = Some(Instant::now());
            }
            if quiet_from.is_some_and(|from| from.elapsed() > PROBE_TIMEOUT) {
                return seen;
            }
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(listener) = self.listener.take() {
            let _ = listener.join();
        }
    }
}
