//! Services in a namespace that record every token reaching them: TCP and UDP echo
//! servers, dual-stack, stopped and joined on drop.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

use super::{POLL, TOKEN_LEN, in_netns, is_timeout, tcp_retransmissions, token_of};

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

pub(super) fn tcp_listener(port: u16) -> TcpListener {
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
