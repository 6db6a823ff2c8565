//! Traffic between network namespaces, for the enforcement tests: one-shot TCP, UDP and
//! ICMP echo probes, services that record what reached them, long-lived streams, the TTL a
//! datagram arrives with, and the MACs of the frames an interface receives.
//!
//! Everything runs in the test process. A socket belongs for life to the network namespace
//! of the thread that made it, whatever thread uses it later; so each probe or stream runs
//! on a thread that first enters its namespace with setns(2). That is fast (no process per
//! probe) and exact: every probe carries a token of its own, services record the tokens that
//! reach them, and timeouts are socket timeouts.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

mod frames;
mod hop_limit;
mod services;
mod streams;

pub use frames::{Frame, FrameCapture, Mac, interface_mac, interface_packets};
pub use hop_limit::arrival_hop_limit;
pub use services::{Arrival, Inbox, Services};
pub use streams::{DatagramStream, EchoStream, PushStream, RepeatedProbe, StreamLog};

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
