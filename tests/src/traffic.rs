//! Traffic between network namespaces, for the enforcement tests: one-shot TCP, UDP and
//! ICMP echo probes, services that record what reached them, and long-lived streams.
//!
//! Everything runs in the test process. A socket belongs for life to the network namespace
//! of the thread that made it, whatever thread uses it later; so each probe or stream runs
//! on a thread that first enters its namespace with setns(2). That is fast (no process per
//! probe) and exact: every probe carries a token of its own, services record the tokens that
//! reach them, and timeouts are socket timeouts.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// How often service threads look at their stop flag.
const POLL: Duration = Duration::from_millis(50);
/// Every probe and stream message starts with its token.
const TOKEN_LEN: usize = 8;

/// Enters the network namespace `netns` (a name under /run/netns) on the calling thread.
fn enter(netns: &str) {
    let path = format!("/run/netns/{netns}");
    let file = File::open(&path).unwrap_or_else(|e| panic!("cannot open {path}: {e}"));
    // SAFETY: a valid namespace file descriptor; CLONE_NEWNET moves only this thread.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert!(rc == 0, "setns({path}): {}", io::Error::last_os_error());
}

/// Runs `f` on a new thread inside the network namespace `netns` and returns its result.
pub fn in_netns<T: Send>(netns: &str, f: impl FnOnce() -> T + Send) -> T {
    thread::scope(|scope| {
        scope
            .spawn(|| {
                enter(netns);
                f()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Starts `f` on a new thread inside the network namespace `netns`.
pub fn spawn_in_netns<T: Send + 'static>(
    netns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    let netns = netns.to_string();
    thread::spawn(move || {
        enter(&netns);
        f()
    })
}

/// A number no other probe or message of this test process carries.
pub fn new_token() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    (u64::from(std::process::id()) << 32) | NEXT.fetch_add(1, Ordering::Relaxed)
}

fn token_of(bytes: &[u8]) -> Option<u64> {
    let head: [u8; TOKEN_LEN] = bytes.get(..TOKEN_LEN)?.try_into().ok()?;
    Some(u64::from_be_bytes(head))
}

/// What a probe is: TCP or UDP to a port, or an ICMP (v4 or v6, by address) echo request
/// with the given code (0 is the usual one; hosts answer any).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Probe {
    Tcp(u16),
    Udp(u16),
    IcmpEcho(u8),
}

impl Probe {
    /// A plain ping.
    pub const PING: Probe = Probe::IcmpEcho(0);
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Probe::Tcp(port) => write!(f, "tcp/{port}"),
            Probe::Udp(port) => write!(f, "udp/{port}"),
            Probe::IcmpEcho(0) => write!(f, "icmp"),
            Probe::IcmpEcho(code) => write!(f, "icmp/code{code}"),
        }
    }
}

/// A message that reached a service.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    /// The service's port (0 for none).
    pub port: u16,
    /// The datagram's length (TCP: the message's, 8).
    pub len: usize,
    pub from: IpAddr,
    pub at: Instant,
}

/// The tokens that reached a namespace's services, and when.
#[derive(Default)]
pub struct Inbox {
    arrived: Mutex<HashMap<u64, Arrival>>,
    changed: Condvar,
}

impl Inbox {
    fn record(&self, token: u64, arrival: Arrival) {
        let mut arrived = self.arrived.lock().unwrap_or_else(|p| p.into_inner());
        arrived.entry(token).or_insert(arrival);
        self.changed.notify_all();
    }

    /// The arrival of `token`, if it has arrived.
    pub fn get(&self, token: u64) -> Option<Arrival> {
        let arrived = self.arrived.lock().unwrap_or_else(|p| p.into_inner());
        arrived.get(&token).copied()
    }

    /// How many messages reached the service on `port`.
    pub fn count_on(&self, port: u16) -> usize {
        let arrived = self.arrived.lock().unwrap_or_else(|p| p.into_inner());
        arrived.values().filter(|a| a.port == port).count()
    }

    /// Waits up to `timeout` for `token` to arrive.
    pub fn wait(&self, token: u64, timeout: Duration) -> Option<Arrival> {
        let deadline = Instant::now() + timeout;
        let mut arrived = self.arrived.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(arrival) = arrived.get(&token) {
                return Some(*arrival);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            arrived = self
                .changed
                .wait_timeout(arrived, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// Echo services in one namespace, on every address, IPv4 and IPv6: TCP servers that
/// echo each 8-byte message, UDP servers that echo each datagram's token. Every token that
/// reaches them goes to their [`Inbox`]. Stopped and joined on drop.
pub struct Services {
    inbox: Arc<Inbox>,
    stop: Arc<AtomicBool>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
    /// The server side of every accepted connection, by the client's address.
    connections: Arc<Mutex<HashMap<SocketAddr, TcpStream>>>,
}

impl Services {
    pub fn start(netns: &str, tcp_ports: &[u16], udp_ports: &[u16]) -> Services {
        let (listeners, sockets) = in_netns(netns, || {
            let listeners: Vec<TcpListener> = tcp_ports.iter().map(|&p| tcp_listener(p)).collect();
            let sockets: Vec<UdpSocket> = udp_ports.iter().map(|&p| udp_server(p)).collect();
            (listeners, sockets)
        });
        let services = Services {
            inbox: Arc::default(),
            stop: Arc::default(),
            threads: Arc::default(),
            connections: Arc::default(),
        };
        let mut threads = Vec::new();
        for listener in listeners {
            let (inbox, stop) = (services.inbox.clone(), services.stop.clone());
            let (all, connections) = (services.threads.clone(), services.connections.clone());
            threads.push(thread::spawn(move || {
                accept_loop(&listener, &inbox, &stop, &all, &connections);
            }));
        }
        for socket in sockets {
            let (inbox, stop) = (services.inbox.clone(), services.stop.clone());
            threads.push(thread::spawn(move || udp_loop(&socket, &inbox, &stop)));
        }
        lock(&services.threads).extend(threads);
        services
    }

    pub fn inbox(&self) -> Arc<Inbox> {
        self.inbox.clone()
    }

    /// TCP segments the server side of the connection from `client` retransmitted so far.
    pub fn retransmissions_to(&self, client: SocketAddr) -> Option<u32> {
        let canonical = SocketAddr::new(client.ip().to_canonical(), client.port());
        lock(&self.connections)
            .get(&canonical)
            .map(tcp_retransmissions)
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Handlers may still be added by an accept in progress: join until none are left.
        loop {
            let threads: Vec<_> = lock(&self.threads).drain(..).collect();
            if threads.is_empty() {
                break;
            }
            for thread in threads {
                let _ = thread.join();
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// A socket bound to `[::]:port` that also takes IPv4 (as mapped addresses).
fn dual_stack(kind: Type, port: u16) -> Socket {
    let socket = Socket::new(Domain::IPV6, kind, None).expect("socket");
    socket.set_only_v6(false).expect("IPV6_V6ONLY");
    socket.set_reuse_address(true).expect("SO_REUSEADDR");
    let address = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
    socket
        .bind(&address.into())
        .unwrap_or_else(|e| panic!("bind {address}: {e}"));
    socket
}

fn tcp_listener(port: u16) -> TcpListener {
    let socket = dual_stack(Type::STREAM, port);
    socket.listen(128).expect("listen");
    socket.into()
}

fn udp_server(port: u16) -> UdpSocket {
    let socket: UdpSocket = dual_stack(Type::DGRAM, port).into();
    socket.set_read_timeout(Some(POLL)).expect("SO_RCVTIMEO");
    socket
}

/// Waits up to [`POLL`] for `fd` to become readable.
fn readable(fd: &impl AsFd) -> bool {
    let mut pollfd = libc::pollfd {
        fd: fd.as_fd().as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut pollfd, 1, POLL.as_millis() as libc::c_int) };
    n > 0
}

fn accept_loop(
    listener: &TcpListener,
    inbox: &Arc<Inbox>,
    stop: &Arc<AtomicBool>,
    threads: &Arc<Mutex<Vec<JoinHandle<()>>>>,
    connections: &Arc<Mutex<HashMap<SocketAddr, TcpStream>>>,
) {
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    while !stop.load(Ordering::Relaxed) {
        if !readable(listener) {
            continue;
        }
        let Ok((stream, peer)) = listener.accept() else {
            continue;
        };
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        if let Ok(clone) = stream.try_clone() {
            lock(connections).insert(peer, clone);
        }
        let (inbox, stop) = (inbox.clone(), stop.clone());
        let handler = thread::spawn(move || echo_connection(stream, peer, port, &inbox, &stop));
        lock(threads).push(handler);
    }
}

/// Echoes every 8-byte message of one connection, recording its token.
fn echo_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    port: u16,
    inbox: &Inbox,
    stop: &AtomicBool,
) {
    if stream.set_read_timeout(Some(POLL)).is_err() {
        return;
    }
    let mut pending = Vec::new();
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(e) if is_timeout(&e) => continue,
            Err(_) => return,
        }
        let whole = pending.len() - pending.len() % TOKEN_LEN;
        for message in pending[..whole].chunks(TOKEN_LEN) {
            if let Some(token) = token_of(message) {
                inbox.record(
                    token,
                    Arrival {
                        port,
                        len: TOKEN_LEN,
                        from: peer.ip(),
                        at: Instant::now(),
                    },
                );
            }
        }
        if stream.write_all(&pending[..whole]).is_err() {
            return;
        }
        pending.drain(..whole);
    }
}

fn udp_loop(socket: &UdpSocket, inbox: &Inbox, stop: &AtomicBool) {
    let port = socket.local_addr().map(|a| a.port()).unwrap_or(0);
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        let Ok((len, from)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let Some(token) = token_of(&buf[..len]) else {
            continue;
        };
        inbox.record(
            token,
            Arrival {
                port,
                len,
                from: from.ip().to_canonical(),
                at: Instant::now(),
            },
        );
        let _ = socket.send_to(&buf[..TOKEN_LEN], from);
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// What a probe saw: whether it reached its destination (a service recorded its token; for
/// ICMP, the echo reply came back) and whether the reply came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    pub reached: bool,
    pub replied: bool,
}

impl Observed {
    pub const NOTHING: Observed = Observed {
        reached: false,
        replied: false,
    };
    pub const BOTH_WAYS: Observed = Observed {
        reached: true,
        replied: true,
    };
}

/// Sends `probe` from `netns` to `dst`, whose services record into `inbox`; waits up to
/// `timeout` for the connection, the arrival and the reply each.
pub fn probe(netns: &str, dst: IpAddr, probe: Probe, inbox: &Inbox, timeout: Duration) -> Observed {
    in_netns(netns, || probe_here(dst, probe, inbox, timeout))
}

/// [`probe`] from the calling thread's namespace.
pub fn probe_here(dst: IpAddr, probe: Probe, inbox: &Inbox, timeout: Duration) -> Observed {
    match probe {
        Probe::Tcp(port) => tcp_probe(SocketAddr::new(dst, port), inbox, timeout),
        Probe::Udp(port) => udp_probe(SocketAddr::new(dst, port), inbox, timeout),
        Probe::IcmpEcho(code) => {
            let replied = icmp_echo(dst, code, timeout);
            Observed {
                reached: replied,
                replied,
            }
        }
    }
}

fn tcp_probe(dst: SocketAddr, inbox: &Inbox, timeout: Duration) -> Observed {
    let deadline = Instant::now() + timeout;
    let token = new_token();
    let Ok(mut stream) = TcpStream::connect_timeout(&dst, timeout) else {
        return Observed::NOTHING;
    };
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    let mut echo = [0u8; TOKEN_LEN];
    let replied = stream.set_read_timeout(Some(left)).is_ok()
        && stream.write_all(&token.to_be_bytes()).is_ok()
        && stream.read_exact(&mut echo).is_ok()
        && u64::from_be_bytes(echo) == token;
    Observed {
        reached: inbox
            .wait(token, deadline.saturating_duration_since(Instant::now()))
            .is_some(),
        replied,
    }
}

fn udp_probe(dst: SocketAddr, inbox: &Inbox, timeout: Duration) -> Observed {
    let deadline = Instant::now() + timeout;
    let token = new_token();
    let socket = UdpSocket::bind(unspecified(dst.ip())).expect("bind a UDP socket");
    socket.set_read_timeout(Some(timeout)).expect("SO_RCVTIMEO");
    socket
        .send_to(&token.to_be_bytes(), dst)
        .unwrap_or_else(|e| panic!("send to {dst}: {e}"));
    let mut echo = [0u8; 64];
    let replied = matches!(socket.recv_from(&mut echo),
        Ok((n, from)) if from == dst && token_of(&echo[..n]) == Some(token));
    Observed {
        reached: inbox
            .wait(token, deadline.saturating_duration_since(Instant::now()))
            .is_some(),
        replied,
    }
}

fn unspecified(like: IpAddr) -> SocketAddr {
    match like {
        IpAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        IpAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
    }
}

/// Sends one ICMP (or ICMPv6) echo request with `code` to `dst` from a raw socket and waits
/// up to `timeout` for its reply, matched by identifier and payload.
pub fn icmp_echo(dst: IpAddr, code: u8, timeout: Duration) -> bool {
    static NEXT_ID: AtomicU16 = AtomicU16::new(1);
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let token = new_token();
    let (domain, protocol, request, reply) = match dst {
        IpAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4, 8, 0),
        IpAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6, 128, 129),
    };
    let socket = Socket::new(domain, Type::RAW, Some(protocol)).expect("raw ICMP socket");
    let mut message = vec![request, code, 0, 0];
    message.extend_from_slice(&id.to_be_bytes());
    message.extend_from_slice(&1u16.to_be_bytes());
    message.extend_from_slice(&token.to_be_bytes());
    if dst.is_ipv4() {
        // The kernel fills in ICMPv6 checksums itself, not ICMP ones.
        let sum = internet_checksum(&message);
        message[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    let to = SockAddr::from(SocketAddr::new(dst, 0));
    if socket.send_to(&message, &to).is_err() {
        return false;
    }
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 1500];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || socket.set_read_timeout(Some(left)).is_err() {
            return false;
        }
        let Ok(n) = (&socket).read(&mut buf) else {
            return false;
        };
        // IPv4 raw sockets deliver the IP header too; ICMPv6 ones do not.
        let icmp = if dst.is_ipv4() {
            let header = usize::from(buf[0] & 0x0f) * 4;
            buf.get(header..n).unwrap_or_default()
        } else {
            &buf[..n]
        };
        let matches = icmp.len() >= 16
            && icmp[0] == reply
            && icmp[4..6] == id.to_be_bytes()
            && token_of(&icmp[8..]) == Some(token);
        if matches {
            return true;
        }
    }
}

fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// TCP segments `stream` retransmitted (`tcpi_total_retrans`): 0 means nothing it sent
/// was lost.
pub fn tcp_retransmissions(stream: &TcpStream) -> u32 {
    // SAFETY: tcp_info is plain data; zero is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` and `len` are valid for writes of the size given.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    assert!(rc == 0, "TCP_INFO: {}", io::Error::last_os_error());
    info.tcpi_total_retrans
}

/// One UDP datagram carrying a fresh token.
#[derive(Debug, Clone, Default)]
pub struct Datagram {
    /// The source address to bind to (default: the kernel's choice).
    pub source: Option<IpAddr>,
    /// The payload length (at least the token's 8 bytes).
    pub len: usize,
    /// IPv4 options for the IP header (`IP_OPTIONS`).
    pub ip_options: Vec<u8>,
}

/// Sends `datagram` from `netns` to `dst`; returns its token. A datagram longer than the
/// path MTU is fragmented by the sender (path MTU discovery is off for the socket).
pub fn send_datagram(netns: &str, dst: SocketAddr, datagram: &Datagram) -> u64 {
    in_netns(netns, || {
        let token = new_token();
        let source = datagram
            .source
            .map(|ip| SocketAddr::new(ip, 0))
            .unwrap_or_else(|| unspecified(dst.ip()));
        let socket = UdpSocket::bind(source)
            .unwrap_or_else(|e| panic!("bind a UDP socket to {source}: {e}"));
        if dst.is_ipv4() {
            setsockopt(
                &socket,
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER,
                &libc::IP_PMTUDISC_DONT.to_ne_bytes(),
            );
            if !datagram.ip_options.is_empty() {
                setsockopt(
                    &socket,
                    libc::IPPROTO_IP,
                    libc::IP_OPTIONS,
                    &datagram.ip_options,
                );
            }
        }
        let mut payload = vec![0u8; datagram.len.max(TOKEN_LEN)];
        payload[..TOKEN_LEN].copy_from_slice(&token.to_be_bytes());
        socket
            .send_to(&payload, dst)
            .unwrap_or_else(|e| panic!("send {} bytes to {dst}: {e}", payload.len()));
        token
    })
}

fn setsockopt(socket: &impl AsRawFd, level: libc::c_int, name: libc::c_int, value: &[u8]) {
    // SAFETY: `value` is valid for reads of its length for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            value.as_ptr().cast(),
            value.len() as libc::socklen_t,
        )
    };
    assert!(
        rc == 0,
        "setsockopt({level}, {name}): {}",
        io::Error::last_os_error()
    );
}

/// What a stream sent and got back.
#[derive(Debug, Default)]
pub struct StreamLog {
    /// Every message's token and when it was sent, in order.
    pub sent: Vec<(u64, Instant)>,
    /// When each message's echo (or, for datagrams, nothing) came back.
    pub echoed: HashMap<u64, Instant>,
    /// The first socket error, if any.
    pub error: Option<String>,
    /// The sending side's TCP retransmissions (0 for UDP).
    pub retransmissions: u32,
    /// The client's address, to ask the server side about the connection.
    pub local: Option<SocketAddr>,
}

impl StreamLog {
    /// The first message that got no echo.
    pub fn first_unanswered(&self) -> Option<(u64, Instant)> {
        self.sent
            .iter()
            .copied()
            .find(|(token, _)| !self.echoed.contains_key(token))
    }

    /// Messages that got no echo.
    pub fn unanswered(&self) -> usize {
        self.sent
            .iter()
            .filter(|(token, _)| !self.echoed.contains_key(token))
            .count()
    }

    /// The longest time from sending a message to its echo.
    pub fn longest_round_trip(&self) -> Duration {
        self.sent
            .iter()
            .filter_map(|(token, sent)| self.echoed.get(token).map(|e| e.duration_since(*sent)))
            .max()
            .unwrap_or_default()
    }
}

/// A TCP connection from a namespace that sends an 8-byte message every `interval` and
/// reads the echoes, until stopped.
pub struct EchoStream {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<StreamLog>>,
}

impl EchoStream {
    /// Connects from `netns` to `dst` (panics if that fails within 2 s) and starts sending.
    pub fn start(netns: &str, dst: SocketAddr, interval: Duration) -> EchoStream {
        let stream = in_netns(netns, || {
            TcpStream::connect_timeout(&dst, Duration::from_secs(2))
        })
        .unwrap_or_else(|e| panic!("connect from {netns} to {dst}: {e}"));
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || run_echo_stream(stream, interval, &flag));
        EchoStream {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sending, waits a moment for the last echoes, and returns the log.
    pub fn stop(mut self) -> StreamLog {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .map(|t| t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .unwrap_or_default()
    }
}

impl Drop for EchoStream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run_echo_stream(mut stream: TcpStream, interval: Duration, stop: &AtomicBool) -> StreamLog {
    let mut log = StreamLog {
        local: stream.local_addr().ok(),
        ..StreamLog::default()
    };
    let mut pending = Vec::new();
    let mut next_send = Instant::now();
    // Once stopped, the last echoes get this long to come back.
    let mut drain_until: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if drain_until.is_none() && stop.load(Ordering::Relaxed) {
            drain_until = Some(now + Duration::from_millis(200));
        }
        match drain_until {
            Some(end) if now >= end || log.echoed.len() == log.sent.len() => break,
            Some(_) => {}
            None if now >= next_send => {
                let token = new_token();
                if let Err(e) = stream.write_all(&token.to_be_bytes()) {
                    log.error.get_or_insert(format!("write: {e}"));
                    break;
                }
                log.sent.push((token, now));
                next_send += interval;
            }
            None => {}
        }
        let wake = drain_until.unwrap_or(next_send);
        let wait = wake
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        if stream.set_read_timeout(Some(wait)).is_err() {
            break;
        }
        let mut buf = [0u8; 1024];
        match stream.read(&mut buf) {
            Ok(0) => {
                log.error.get_or_insert("closed by the server".to_string());
                break;
            }
            Ok(n) => {
                pending.extend_from_slice(&buf[..n]);
                let at = Instant::now();
                let whole = pending.len() - pending.len() % TOKEN_LEN;
                for message in pending[..whole].chunks(TOKEN_LEN) {
                    if let Some(token) = token_of(message) {
                        log.echoed.insert(token, at);
                    }
                }
                pending.drain(..whole);
            }
            Err(e) if is_timeout(&e) => {}
            Err(e) => {
                log.error.get_or_insert(format!("read: {e}"));
                break;
            }
        }
    }
    log.retransmissions = tcp_retransmissions(&stream);
    log
}

/// UDP datagrams with fresh tokens from a namespace to one destination, one every
/// `interval`, until stopped; the destination's [`Inbox`] tells which arrived.
pub struct DatagramStream {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<StreamLog>>,
}

impl DatagramStream {
    pub fn start(netns: &str, dst: SocketAddr, interval: Duration) -> DatagramStream {
        let socket = in_netns(netns, || UdpSocket::bind(unspecified(dst.ip())))
            .unwrap_or_else(|e| panic!("UDP socket in {netns}: {e}"));
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            let mut log = StreamLog {
                local: socket.local_addr().ok(),
                ..StreamLog::default()
            };
            let mut next_send = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                let token = new_token();
                if let Err(e) = socket.send_to(&token.to_be_bytes(), dst) {
                    log.error.get_or_insert(format!("send: {e}"));
                }
                log.sent.push((token, Instant::now()));
                next_send += interval;
                thread::sleep(next_send.saturating_duration_since(Instant::now()));
            }
            log
        });
        DatagramStream {
            stop,
            thread: Some(thread),
        }
    }

    pub fn stop(mut self) -> StreamLog {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .map(|t| t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .unwrap_or_default()
    }
}

impl Drop for DatagramStream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The same probe from a namespace again and again, one every `interval` (each waiting up
/// to `interval`), until stopped: traffic that must keep failing.
pub struct RepeatedProbe {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<Observed>>>,
}

impl RepeatedProbe {
    pub fn start(
        netns: &str,
        dst: IpAddr,
        what: Probe,
        inbox: Arc<Inbox>,
        interval: Duration,
    ) -> RepeatedProbe {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = spawn_in_netns(netns, move || {
            let mut seen = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                seen.push(probe_here(dst, what, &inbox, interval));
            }
            seen
        });
        RepeatedProbe {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops and returns what every attempt saw.
    pub fn stop(mut self) -> Vec<Observed> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .map(|t| t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .unwrap_or_default()
    }
}

impl Drop for RepeatedProbe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A TCP connection over which the server sends: a listener made for it on `port` in
/// `server_netns`, a client connecting from `client_netns`, and the server's side sending
/// an 8-byte message every `interval` until stopped. The log's `echoed` holds when each
/// message reached the client.
pub struct PushStream {
    stop_server: Arc<AtomicBool>,
    stop_client: Arc<AtomicBool>,
    server: Option<JoinHandle<StreamLog>>,
    client: Option<JoinHandle<HashMap<u64, Instant>>>,
}

impl PushStream {
    pub fn start(
        client_netns: &str,
        server_netns: &str,
        server: IpAddr,
        port: u16,
        interval: Duration,
    ) -> PushStream {
        let listener = in_netns(server_netns, || tcp_listener(port));
        let dst = SocketAddr::new(server, port);
        let client = in_netns(client_netns, || {
            TcpStream::connect_timeout(&dst, Duration::from_secs(2))
        })
        .unwrap_or_else(|e| panic!("connect from {client_netns} to {dst}: {e}"));
        let (server_side, _) = listener.accept().expect("accept the push connection");
        let stop_server = Arc::new(AtomicBool::new(false));
        let flag = stop_server.clone();
        let server = thread::spawn(move || push(server_side, interval, &flag));
        let stop_client = Arc::new(AtomicBool::new(false));
        let flag = stop_client.clone();
        let client = thread::spawn(move || receive(client, &flag));
        PushStream {
            stop_server,
            stop_client,
            server: Some(server),
            client: Some(client),
        }
    }

    /// Stops sending, gives the last messages a moment to arrive, and returns the log.
    pub fn stop(mut self) -> StreamLog {
        self.stop_server.store(true, Ordering::Relaxed);
        let mut log = self
            .server
            .take()
            .map(|t| t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .unwrap_or_default();
        thread::sleep(Duration::from_millis(200));
        self.stop_client.store(true, Ordering::Relaxed);
        log.echoed = self
            .client
            .take()
            .map(|t| t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .unwrap_or_default();
        log
    }
}

impl Drop for PushStream {
    fn drop(&mut self) {
        self.stop_server.store(true, Ordering::Relaxed);
        self.stop_client.store(true, Ordering::Relaxed);
        if let Some(server) = self.server.take() {
            let _ = server.join();
        }
        if let Some(client) = self.client.take() {
            let _ = client.join();
        }
    }
}

fn push(mut stream: TcpStream, interval: Duration, stop: &AtomicBool) -> StreamLog {
    let mut log = StreamLog {
        local: stream.local_addr().ok(),
        ..StreamLog::default()
    };
    let mut next_send = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let token = new_token();
        if let Err(e) = stream.write_all(&token.to_be_bytes()) {
            log.error.get_or_insert(format!("write: {e}"));
            break;
        }
        log.sent.push((token, Instant::now()));
        next_send += interval;
        thread::sleep(next_send.saturating_duration_since(Instant::now()));
    }
    log.retransmissions = tcp_retransmissions(&stream);
    log
}

fn receive(mut stream: TcpStream, stop: &AtomicBool) -> HashMap<u64, Instant> {
    let mut arrived = HashMap::new();
    let mut pending = Vec::new();
    let mut buf = [0u8; 1024];
    if stream.set_read_timeout(Some(POLL)).is_err() {
        return arrived;
    }
    while !stop.load(Ordering::Relaxed) {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                pending.extend_from_slice(&buf[..n]);
                let whole = pending.len() - pending.len() % TOKEN_LEN;
                for message in pending[..whole].chunks(TOKEN_LEN) {
                    if let Some(token) = token_of(message) {
                        arrived.insert(token, Instant::now());
                    }
                }
                pending.drain(..whole);
            }
            Err(e) if is_timeout(&e) => {}
            Err(_) => break,
        }
    }
    arrived
}
