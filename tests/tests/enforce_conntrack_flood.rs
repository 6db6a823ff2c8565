//! A workload that opens flows at line rate cannot evict other workloads' flows, however
//! idle: workload C opens 1,000,000 UDP flows (to a namespace outside the host) while A
//! holds 1,000 idle TCP connections to B. Afterwards every one of A's conntrack entries is
//! still there (on A's and on B's host veth), every connection carries a message each way
//! (the server's first, which only its conntrack entries let through: B's egress policy and
//! A's ingress policy allow nothing), and C's excess was dropped and counted
//! (`dropped_conntrack_budget`), C holding no more than its budget (the agent's default).
//!
//! C sends with sendmmsg(2) from 16 sockets (16 source ports × 62,500 destination ports),
//! 1,024 datagrams a call: no process per packet. Each flow gets two datagrams: the kernel's
//! LRU keeps entries that were ever looked up ahead of those that never were, so a flood of
//! one-datagram flows would only evict itself; with two, the flood's entries rank like the
//! idle connections' and, without a budget, evict them (checked with
//! `--conntrack-budget 0`: every one of the connections' 2,000 entries was gone).

use std::io::{Read, Write};
use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use palisade::dataplane::conntrack::{Conntrack, default_budget};
use palisade::dataplane::pin_dir;
use palisade::dataplane::{MapSizes, SizedFor};
use palisade_tests::matrix::{Scene, WorkloadPlan};
use palisade_tests::packet::IPPROTO_TCP;
use palisade_tests::traffic::in_netns;
use palisade_tests::{Cleanup, require_root};

const CONNECTIONS: usize = 1_000;
const SERVER_PORT: u16 = 7401;
const FLOWS: usize = 1_000_000;
const SOCKETS: usize = 16;
const BATCH: usize = 1_024;

const POLICY: &str = r#"- apiVersion: v1
  kind: profile
  metadata:
    name: server
    labels: {role: server}
  spec:
    ingress:
    - action: allow
      protocol: tcp
      source:
        selector: role == 'client'
      destination:
        ports: [7401]
- apiVersion: v1
  kind: profile
  metadata:
    name: client
    labels: {role: client}
  spec:
    egress:
    - action: allow
"#;

/// Sends one datagram to each of `ports` of `dst` from `socket`, `BATCH` a call.
fn flood(socket: &UdpSocket, dst: Ipv4Addr, ports: std::ops::Range<u16>) -> usize {
    let payload = *b"palisade";
    let ports: Vec<u16> = ports.collect();
    let mut sent = 0;
    for chunk in ports.chunks(BATCH) {
        let mut addresses: Vec<libc::sockaddr_in> = chunk
            .iter()
            .map(|port| libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: port.to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(dst).to_be(),
                },
                sin_zero: [0; 8],
            })
            .collect();
        let mut iov = libc::iovec {
            iov_base: payload.as_ptr() as *mut libc::c_void,
            iov_len: payload.len(),
        };
        let mut messages: Vec<libc::mmsghdr> = addresses
            .iter_mut()
            .map(|address| {
                // SAFETY: plain data; zero is valid for every field.
                let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
                header.msg_name = (address as *mut libc::sockaddr_in).cast();
                header.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
                header.msg_iov = &mut iov;
                header.msg_iovlen = 1;
                libc::mmsghdr {
                    msg_hdr: header,
                    msg_len: 0,
                }
            })
            .collect();
        let mut at = 0;
        while at < messages.len() {
            // SAFETY: `messages[at..]` are valid headers whose names, iovec and payload
            // outlive the call.
            let n = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    messages[at..].as_mut_ptr(),
                    (messages.len() - at) as libc::c_uint,
                    0,
                )
            };
            assert!(n > 0, "sendmmsg: {}", std::io::Error::last_os_error());
            at += n as usize;
        }
        sent += messages.len();
    }
    sent
}

/// A's connections to B: the client ends and the server ends.
fn connect_all(scene: &Scene) -> (Vec<TcpStream>, Vec<TcpStream>) {
    let server = scene.peer("server").ip(false).expect("an address");
    let listener: TcpListener = in_netns(&scene.peer("server").netns, || {
        TcpListener::bind(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            SERVER_PORT,
        ))
    })
    .expect("listen on the server");
    // Accepted as they come: the listen queue is shorter than the connections.
    let accepting = std::thread::spawn(move || {
        (0..CONNECTIONS)
            .map(|i| {
                listener
                    .accept()
                    .unwrap_or_else(|e| panic!("accept {i}: {e}"))
                    .0
            })
            .collect::<Vec<TcpStream>>()
    });
    let clients: Vec<TcpStream> = in_netns(&scene.peer("client").netns, || {
        (0..CONNECTIONS)
            .map(|i| {
                let server = SocketAddr::new(server, SERVER_PORT);
                TcpStream::connect_timeout(&server, Duration::from_secs(5))
                    .unwrap_or_else(|e| panic!("connection {i}: {e}"))
            })
            .collect()
    });
    let servers = accepting
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p));
    (clients, servers)
}

/// Sends `token` from each `from` stream and reads it on the matching `to` stream; returns
/// how many made it within a few seconds.
fn carry(from: &mut [TcpStream], to: &mut [TcpStream], token: u64) -> usize {
    for stream in from.iter_mut() {
        stream
            .write_all(&token.to_be_bytes())
            .expect("write on an established connection");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut arrived = 0;
    for stream in to.iter_mut() {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(10));
        let mut got = [0u8; 8];
        if stream.set_read_timeout(Some(left)).is_ok()
            && stream.read_exact(&mut got).is_ok()
            && u64::from_be_bytes(got) == token
        {
            arrived += 1;
        }
    }
    arrived
}

/// The conntrack entries of connections to SERVER_PORT, per interface.
fn connection_entries(scene: &Scene) -> std::collections::BTreeMap<u32, usize> {
    let table = Conntrack::open_pinned(&pin_dir(scene.home.bpffs.path()))
        .unwrap_or_else(|e| panic!("the agent's conntrack maps: {e}"));
    let mut per_interface = std::collections::BTreeMap::new();
    for (key, _) in table
        .flows()
        .unwrap_or_else(|e| panic!("read conntrack: {e}"))
    {
        let ours = key.local_port == SERVER_PORT || key.remote_port == SERVER_PORT;
        if key.protocol == IPPROTO_TCP && ours {
            *per_interface.entry(key.ifindex).or_insert(0) += 1;
        }
    }
    per_interface
}

#[test]
fn a_million_new_flows_evict_no_idle_connection_and_the_excess_is_dropped_and_counted() {
    require_root();
    let mut cleanup = Cleanup::new();
    let mut scene = Scene::build(
        &mut cleanup,
        "e2e-ct-flood",
        &[
            WorkloadPlan {
                label: "client",
                profiles: &["client"],
                ips: &["10.243.6.1"],
            },
            WorkloadPlan {
                label: "server",
                profiles: &["server"],
                ips: &["10.243.6.2"],
            },
            WorkloadPlan {
                label: "flooder",
                profiles: &["client"],
                ips: &["10.243.6.3"],
            },
        ],
        Some(("10.243.7", "fd43:7")),
        &[],
        &[],
    );
    scene.start_agent();
    scene.store.apply(POLICY);
    scene.wait_for_enforcement();

    let (mut clients, mut servers) = connect_all(&scene);
    assert_eq!(
        carry(&mut clients, &mut servers, 1),
        CONNECTIONS,
        "before the flood"
    );
    assert_eq!(
        carry(&mut servers, &mut clients, 2),
        CONNECTIONS,
        "before the flood"
    );
    let before = connection_entries(&scene);
    println!("entries of the {CONNECTIONS} connections per interface: {before:?}");
    assert_eq!(
        before.values().copied().collect::<Vec<_>>(),
        vec![CONNECTIONS; 2]
    );

    let outside = match scene.peer("outside").ip(false) {
        Some(IpAddr::V4(v4)) => v4,
        other => panic!("the outside's address: {other:?}"),
    };
    let started = Instant::now();
    let sent: usize = in_netns(&scene.peer("flooder").netns, || {
        let per_socket = FLOWS / SOCKETS;
        (0..SOCKETS)
            .map(|_| {
                let socket = UdpSocket::bind("0.0.0.0:0").expect("a UDP socket");
                let ports = 1..(per_socket as u16 + 1);
                // Twice: a flow with a second packet is one the kernel's LRU counts as in
                // use, as it counts the idle connections (a flood of one-packet flows only
                // ever evicts itself).
                flood(&socket, outside, ports.clone()) + flood(&socket, outside, ports)
            })
            .sum()
    });
    println!(
        "the flooder sent {sent} datagrams of distinct flows in {:?}",
        started.elapsed()
    );
    assert_eq!(sent, 2 * FLOWS);

    let after = connection_entries(&scene);
    assert_eq!(
        after, before,
        "the flood evicted entries of idle connections"
    );
    // The server speaks first: its egress policy allows nothing, so only the entries let it.
    assert_eq!(
        carry(&mut servers, &mut clients, 3),
        CONNECTIONS,
        "after the flood"
    );
    assert_eq!(
        carry(&mut clients, &mut servers, 4),
        CONNECTIONS,
        "after the flood"
    );

    let stats = scene.home.stats(None);
    let flooder = scene.workloads[2].name.clone();
    // The agent runs with the default sizes and budget: a quarter of its conntrack table.
    let table = MapSizes::for_scale(&SizedFor::DEFAULT)
        .expect("the default sizes")
        .get(palisade_common::map_names::CT)
        .expect("PAL_CT is sized");
    let budget = u64::from(default_budget(table));
    let held = scene.home.stats(None).conntrack_of(&flooder).entries;
    let dropped = stats.counter("dropped_conntrack_budget");
    let seen = stats.endpoint(&flooder, "egress");
    println!(
        "the flooder: {} packets allowed, {} denied; it holds {held} entries (budget {budget}); \
         dropped over budget: {dropped}; whole table: {:?}",
        seen.allowed_packets,
        seen.denied_packets,
        stats.conntrack_of("(all)")
    );
    // At the budget's edge each CPU may add one more.
    let cpus = std::thread::available_parallelism().map_or(1, usize::from) as u64;
    assert!(held <= budget + cpus, "the flooder holds {held} entries");
    assert!(held >= budget, "the flooder holds only {held} entries");
    assert!(
        dropped >= (FLOWS as u64) - budget - cpus,
        "only {dropped} flows dropped over budget"
    );
    assert!(seen.denied_packets >= dropped);
    assert_eq!(stats.conntrack_of("(all)").evicted, 0, "{}", stats.text);
}
