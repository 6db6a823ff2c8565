//! Long-lived traffic from a namespace, logged message by message: TCP echo streams, UDP
//! datagram streams, repeated probes, and a server that keeps sending.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::services::tcp_listener;
use super::{
    Inbox, Observed, POLL, Probe, TOKEN_LEN, in_netns, is_timeout, new_token, probe_here,
    spawn_in_netns, tcp_retransmissions, token_of, unspecified,
};

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

/// A thread that runs until asked to stop, then hands back what it made. Dropped without
/// [`Stoppable::stop`] (a failing test), it is stopped and joined all the same.
struct Stoppable<T> {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<T>>,
}

impl<T: Default + Send + 'static> Stoppable<T> {
    /// Runs `f` on a new thread; `f` watches the flag it is given.
    fn spawn(f: impl FnOnce(&AtomicBool) -> T + Send + 'static) -> Stoppable<T> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        Stoppable {
            stop,
            thread: Some(thread::spawn(move || f(&flag))),
        }
    }

    /// [`Stoppable::spawn`] with the thread inside the network namespace `netns`.
    fn spawn_in_netns(
        netns: &str,
        f: impl FnOnce(&AtomicBool) -> T + Send + 'static,
    ) -> Stoppable<T> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        Stoppable {
            stop,
            thread: Some(spawn_in_netns(netns, move || f(&flag))),
        }
    }

    /// Raises the flag and returns the thread's result (its panic, if it panicked).
    fn stop(mut self) -> T {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .map(|t| t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .unwrap_or_default()
    }
}

impl<T> Drop for Stoppable<T> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Moves the whole tokens at the start of `pending` to `found`, keeping a partial one.
fn take_tokens(pending: &mut Vec<u8>, mut found: impl FnMut(u64)) {
    let whole = pending.len() - pending.len() % TOKEN_LEN;
    pending[..whole]
        .chunks(TOKEN_LEN)
        .filter_map(token_of)
        .for_each(&mut found);
    pending.drain(..whole);
}

/// A TCP connection from a namespace that sends an 8-byte message every `interval` and
/// reads the echoes, until stopped.
pub struct EchoStream(Stoppable<StreamLog>);

impl EchoStream {
    /// Connects from `netns` to `dst` (panics if that fails within 2 s) and starts sending.
    pub fn start(netns: &str, dst: SocketAddr, interval: Duration) -> EchoStream {
        let stream = in_netns(netns, || {
            TcpStream::connect_timeout(&dst, Duration::from_secs(2))
        })
        .unwrap_or_else(|e| panic!("connect from {netns} to {dst}: {e}"));
        EchoStream(Stoppable::spawn(move |stop| {
            run_echo_stream(stream, interval, stop)
        }))
    }

    /// Stops sending, waits a moment for the last echoes, and returns the log.
    pub fn stop(self) -> StreamLog {
        self.0.stop()
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
                take_tokens(&mut pending, |token| {
                    log.echoed.insert(token, at);
                });
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
pub struct DatagramStream(Stoppable<StreamLog>);

impl DatagramStream {
    pub fn start(netns: &str, dst: SocketAddr, interval: Duration) -> DatagramStream {
        let socket = in_netns(netns, || UdpSocket::bind(unspecified(dst.ip())))
            .unwrap_or_else(|e| panic!("UDP socket in {netns}: {e}"));
        DatagramStream(Stoppable::spawn(move |stop| {
            let mut log = StreamLog {
                local: socket.local_addr().ok(),
                ..StreamLog::default()
            };
            let mut next_send = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let token = new_token();
                if let Err(e) = socket.send_to(&token.to_be_bytes(), dst) {
                    log.error.get_or_insert(format!("send: {e}"));
                }
                log.sent.push((token, Instant::now()));
                next_send += interval;
                thread::sleep(next_send.saturating_duration_since(Instant::now()));
            }
            log
        }))
    }

    pub fn stop(self) -> StreamLog {
        self.0.stop()
    }
}

/// The same probe from a namespace again and again, one every `interval` (each waiting up
/// to `interval`), until stopped: traffic that must keep failing.
pub struct RepeatedProbe(Stoppable<Vec<Observed>>);

impl RepeatedProbe {
    pub fn start(
        netns: &str,
        dst: IpAddr,
        what: Probe,
        inbox: Arc<Inbox>,
        interval: Duration,
    ) -> RepeatedProbe {
        RepeatedProbe(Stoppable::spawn_in_netns(netns, move |stop| {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                seen.push(probe_here(dst, what, &inbox, interval));
            }
            seen
        }))
    }

    /// Stops and returns what every attempt saw.
    pub fn stop(self) -> Vec<Observed> {
        self.0.stop()
    }
}

/// A TCP connection over which the server sends: a listener made for it on `port` in
/// `server_netns`, a client connecting from `client_netns`, and the server's side sending
/// an 8-byte message every `interval` until stopped. The log's `echoed` holds when each
/// message reached the client.
pub struct PushStream {
    server: Stoppable<StreamLog>,
    client: Stoppable<HashMap<u64, Instant>>,
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
        PushStream {
            server: Stoppable::spawn(move |stop| push(server_side, interval, stop)),
            client: Stoppable::spawn(move |stop| receive(client, stop)),
        }
    }

    /// Stops sending, gives the last messages a moment to arrive, and returns the log.
    pub fn stop(self) -> StreamLog {
        let mut log = self.server.stop();
        thread::sleep(Duration::from_millis(200));
        log.echoed = self.client.stop();
        log
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
                take_tokens(&mut pending, |token| {
                    arrived.insert(token, Instant::now());
                });
            }
            Err(e) if is_timeout(&e) => {}
            Err(_) => break,
        }
    }
    arrived
}
