//! Request/response load between two workload namespaces, with netperf's semantics
//! (netperf itself is not installable here): TCP_CRR (a connection per transaction:
//! connect, send one byte, shut down writing, read the one-byte response, wait for the
//! server's close, close), TCP_RR (one connection, one byte each way per transaction), and
//! a UDP small-datagram rate (one-byte datagrams on a flow whose first datagram was
//! answered, as most UDP flows are, so connection tracking sees it established; the
//! server acknowledges every 32nd, and the client keeps at most 128 unacknowledged).
//!
//! Client and server run as threads of this process, each in its namespace and both pinned
//! to one CPU: a veth hands a packet to the receiving side's backlog on the sending CPU, so
//! the whole path (TC programs, netfilter hooks) runs there too; with one saturated CPU,
//! 1/rate is the CPU time of a transaction, and what policy costs shows in full. What the
//! CPU did during a run comes from /proc/stat (steal says how much a hypervisor took).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::traffic::spawn_in_netns;

/// What is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Transactions with a connection each (TCP_CRR).
    Crr,
    /// Transactions on one connection (TCP_RR).
    Rr,
    /// One-byte datagrams received per second.
    Udp,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Crr, Kind::Rr, Kind::Udp];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Crr => "TCP_CRR",
            Kind::Rr => "TCP_RR",
            Kind::Udp => "UDP",
        }
    }
}

/// Where and how long: client and server namespaces, the server's address, the CPU both
/// run on, the warm-up (not counted) and the measured time.
#[derive(Debug, Clone)]
pub struct Setup {
    pub client_netns: String,
    pub server_netns: String,
    pub server: SocketAddr,
    pub cpu: usize,
    pub warmup: Duration,
    pub duration: Duration,
}

/// One run's result.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// Transactions (CRR, RR) or datagrams received (UDP) in the measured time.
    pub count: u64,
    pub elapsed: Duration,
    /// Failed connects, resets and timeouts in the measured time.
    pub errors: u64,
    /// What the pinned CPU did meanwhile.
    pub cpu: CpuTimes,
}

impl Outcome {
    pub fn rate(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }
}

/// One CPU's /proc/stat counters (in clock ticks).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTimes {
    pub user: u64,
    pub system: u64,
    pub idle: u64,
    pub softirq: u64,
    pub steal: u64,
    pub total: u64,
}

impl CpuTimes {
    /// The counters of `cpu` now.
    pub fn read(cpu: usize) -> io::Result<CpuTimes> {
        let stat = std::fs::read_to_string("/proc/stat")?;
        let label = format!("cpu{cpu}");
        let line = stat
            .lines()
            .find(|l| l.split_whitespace().next() == Some(label.as_str()))
            .ok_or_else(|| io::Error::other(format!("no {label} in /proc/stat")))?;
        let fields: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        let at = |i: usize| fields.get(i).copied().unwrap_or(0);
        Ok(CpuTimes {
            user: at(0) + at(1),
            system: at(2),
            idle: at(3) + at(4),
            softirq: at(6),
            steal: at(7),
            total: fields.iter().take(8).sum(),
        })
    }

    pub fn since(&self, earlier: &CpuTimes) -> CpuTimes {
        CpuTimes {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
            idle: self.idle.saturating_sub(earlier.idle),
            softirq: self.softirq.saturating_sub(earlier.softirq),
            steal: self.steal.saturating_sub(earlier.steal),
            total: self.total.saturating_sub(earlier.total),
        }
    }

    /// The share of the time a hypervisor took from this CPU.
    pub fn steal_share(&self) -> f64 {
        self.steal as f64 / self.total.max(1) as f64
    }

    /// The share of the time the CPU was idle (near 0 when the run saturated it).
    pub fn idle_share(&self) -> f64 {
        self.idle as f64 / self.total.max(1) as f64
    }
}

/// Pins the calling thread to `cpu`.
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    pin_thread(0, &[cpu])
}

/// Lets every thread of process `pid` run on every CPU in `cpus` only (threads it starts
/// later inherit that from the thread that starts them).
pub fn pin_process_to_cpus(pid: libc::pid_t, cpus: &[usize]) -> io::Result<()> {
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let tid = task?.file_name().to_string_lossy().parse::<libc::pid_t>();
        let Ok(tid) = tid else { continue };
        match pin_thread(tid, cpus) {
            // The thread ended meanwhile.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            other => other?,
        }
    }
    Ok(())
}

/// Pins thread `tid` (0: the calling thread) to `cpus`.
fn pin_thread(tid: libc::pid_t, cpus: &[usize]) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data, zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        if cpu >= libc::CPU_SETSIZE as usize {
            return Err(io::Error::other(format!("no CPU {cpu}")));
        }
        // SAFETY: CPU_SET writes inside `set` for any cpu below CPU_SETSIZE, checked above.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: `set` is a valid cpu_set_t of the size given.
    let rc = unsafe { libc::sched_setaffinity(tid, size_of::<libc::cpu_set_t>(), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Runs `kind` once: starts the server, runs the client through the warm-up and the
/// measured time, stops the server. Errors say what could not be set up; failures during
/// the run are counted in [`Outcome::errors`].
pub fn run(kind: Kind, setup: &Setup) -> io::Result<Outcome> {
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = {
        let (stop, received, setup) = (stop.clone(), received.clone(), setup.clone());
        spawn_in_netns(&setup.server_netns.clone(), move || {
            pin_to_cpu(setup.cpu)?;
            serve(kind, setup.server, &stop, &received, ready_tx)
        })
    };
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|_| io::Error::other("the server did not start"))??;
    let client = {
        let setup = setup.clone();
        spawn_in_netns(&setup.client_netns.clone(), move || {
            pin_to_cpu(setup.cpu)?;
            drive(kind, &setup, &received)
        })
    };
    let outcome = join(client);
    stop.store(true, Ordering::SeqCst);
    // A blocked accept or receive wakes up to see the flag.
    wake(kind, setup);
    let served = join(server);
    let outcome = outcome?;
    served?;
    Ok(outcome)
}

fn join<T>(handle: JoinHandle<io::Result<T>>) -> io::Result<T> {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

fn wake(kind: Kind, setup: &Setup) {
    let setup = setup.clone();
    let _ = spawn_in_netns(&setup.client_netns.clone(), move || match kind {
        Kind::Crr | Kind::Rr => {
            let _ = TcpStream::connect_timeout(&setup.server, Duration::from_secs(1));
        }
        Kind::Udp => {
            if let Ok(socket) = UdpSocket::bind(unspecified(&setup.server)) {
                let _ = socket.send_to(b"w", setup.server);
            }
        }
    })
    .join();
}

fn unspecified(like: &SocketAddr) -> SocketAddr {
    if like.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    }
}

type Ready = std::sync::mpsc::Sender<io::Result<()>>;

/// Serves `kind` on `address` until `stop`; UDP datagrams are counted in `received`.
fn serve(
    kind: Kind,
    address: SocketAddr,
    stop: &AtomicBool,
    received: &AtomicU64,
    ready: Ready,
) -> io::Result<()> {
    match kind {
        Kind::Crr | Kind::Rr => {
            let listener = match TcpListener::bind(address) {
                Ok(l) => l,
                Err(e) => {
                    let _ = ready.send(Err(io::Error::other(format!("bind {address}: {e}"))));
                    return Ok(());
                }
            };
            let _ = ready.send(Ok(()));
            while !stop.load(Ordering::SeqCst) {
                let Ok((stream, _)) = listener.accept() else {
                    continue;
                };
                if kind == Kind::Crr {
                    let _ = answer_once(stream);
                } else {
                    let _ = answer_all(stream, stop);
                }
            }
            Ok(())
        }
        Kind::Udp => {
            let socket = match UdpSocket::bind(address) {
                Ok(s) => s,
                Err(e) => {
                    let _ = ready.send(Err(io::Error::other(format!("bind {address}: {e}"))));
                    return Ok(());
                }
            };
            socket.set_read_timeout(Some(Duration::from_millis(100)))?;
            let _ = ready.send(Ok(()));
            let mut buf = [0u8; 64];
            let mut since_handshake = 0u64;
            while !stop.load(Ordering::SeqCst) {
                match socket.recv_from(&mut buf) {
                    // The handshake is answered, so the flow has traffic both ways.
                    Ok((n, from)) if buf[..n] == *b"hello" => {
                        since_handshake = 0;
                        socket.send_to(b"h", from)?;
                    }
                    Ok((_, from)) => {
                        received.fetch_add(1, Ordering::Relaxed);
                        since_handshake += 1;
                        if since_handshake.is_multiple_of(ACK_EVERY) {
                            socket.send_to(&since_handshake.to_be_bytes(), from)?;
                        }
                    }
                    Err(_) => {}
                }
            }
            Ok(())
        }
    }
}

/// CRR, server side: read the request, answer, read to the client's close, close.
fn answer_once(mut stream: TcpStream) -> io::Result<()> {
    let mut byte = [0u8; 1];
    stream.read_exact(&mut byte)?;
    stream.write_all(&byte)?;
    let mut rest = [0u8; 16];
    while stream.read(&mut rest)? > 0 {}
    Ok(())
}

/// RR, server side: answer every byte until the client closes.
fn answer_all(mut stream: TcpStream, stop: &AtomicBool) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut byte = [0u8; 1];
    while !stop.load(Ordering::Relaxed) {
        if stream.read(&mut byte)? == 0 {
            break;
        }
        stream.write_all(&byte)?;
    }
    Ok(())
}

fn drive(kind: Kind, setup: &Setup, received: &AtomicU64) -> io::Result<Outcome> {
    match kind {
        Kind::Crr => timed(setup, |_| crr_transaction(setup.server)),
        Kind::Rr => {
            let mut stream = TcpStream::connect_timeout(&setup.server, Duration::from_secs(5))?;
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            timed(setup, |_| {
                let mut byte = [7u8; 1];
                stream.write_all(&byte)?;
                stream.read_exact(&mut byte)
            })
        }
        Kind::Udp => udp_stream(setup, received),
    }
}

/// Runs `transaction` back to back through the warm-up and the measured time.
fn timed(setup: &Setup, mut transaction: impl FnMut(u64) -> io::Result<()>) -> io::Result<Outcome> {
    let warm_until = Instant::now() + setup.warmup;
    let mut n = 0;
    while Instant::now() < warm_until {
        let _ = transaction(n);
        n += 1;
    }
    let cpu_before = CpuTimes::read(setup.cpu)?;
    let started = Instant::now();
    let end = started + setup.duration;
    let (mut count, mut errors) = (0u64, 0u64);
    while Instant::now() < end {
        match transaction(n) {
            Ok(()) => count += 1,
            Err(_) => errors += 1,
        }
        n += 1;
    }
    let elapsed = started.elapsed();
    Ok(Outcome {
        count,
        elapsed,
        errors,
        cpu: CpuTimes::read(setup.cpu)?.since(&cpu_before),
    })
}

/// One TCP_CRR transaction from an ephemeral port (the client namespace reuses ports in
/// TIME_WAIT, `net.ipv4.tcp_tw_reuse`).
fn crr_transaction(server: SocketAddr) -> io::Result<()> {
    let mut stream = TcpStream::connect(server)?;
    stream.set_read_timeout(Some(Duration::from_secs(1)))?;
    stream.write_all(&[1])?;
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut byte = [0u8; 1];
    stream.read_exact(&mut byte)?;
    let mut rest = [0u8; 16];
    while stream.read(&mut rest)? > 0 {}
    Ok(())
}

/// One-byte datagrams back to back on one flow, after a handshake the server answers;
/// the count is what the server received (`received`) in the measured time.
fn udp_stream(setup: &Setup, received: &AtomicU64) -> io::Result<Outcome> {
    let socket = UdpSocket::bind(unspecified(&setup.server))?;
    socket.connect(setup.server)?;
    socket.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut reply = [0u8; 16];
    socket.send(b"hello")?;
    socket.recv(&mut reply)?;
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    let mut window = Window::default();
    let warm_until = Instant::now() + setup.warmup;
    while Instant::now() < warm_until {
        window.step(&socket)?;
    }
    let received_before = received.load(Ordering::Relaxed);
    let cpu_before = CpuTimes::read(setup.cpu)?;
    let started = Instant::now();
    let end = started + setup.duration;
    window.stalls = 0;
    while Instant::now() < end {
        window.step(&socket)?;
    }
    let elapsed = started.elapsed();
    let cpu = CpuTimes::read(setup.cpu)?.since(&cpu_before);
    let count = received.load(Ordering::Relaxed) - received_before;
    Ok(Outcome {
        count,
        elapsed,
        errors: window.stalls,
        cpu,
    })
}

/// Flow control for the UDP rate: at most [`WINDOW`] datagrams unacknowledged, the server
/// acknowledging every [`ACK_EVERY`]. Without it the sender, sharing the CPU with the
/// receiver, would mostly fill the receiver's queue and the rate would measure the
/// scheduler; with it nothing is dropped and each datagram's whole cost is counted.
#[derive(Default)]
struct Window {
    sent: u64,
    acknowledged: u64,
    /// Times an acknowledgement did not come (a lost datagram): the window starts over.
    stalls: u64,
}

const WINDOW: u64 = 128;
const ACK_EVERY: u64 = 32;

impl Window {
    fn step(&mut self, socket: &UdpSocket) -> io::Result<()> {
        if self.sent - self.acknowledged < WINDOW {
            socket.send(&[1])?;
            self.sent += 1;
            return Ok(());
        }
        let mut ack = [0u8; 8];
        match socket.recv(&mut ack) {
            Ok(8) => {
                // The server's count is of datagrams since the handshake: the warm-up's too.
                self.acknowledged = self.acknowledged.max(u64::from_be_bytes(ack));
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                self.stalls += 1;
                self.acknowledged = self.sent;
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }
}
