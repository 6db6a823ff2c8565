//! The Ethernet addresses of the TCP frames a namespace's interface receives, as a packet
//! socket (`AF_PACKET`) there sees them: what whoever delivered them wrote as destination
//! and source. With an interface's packet and byte counters (`ip -s link`), what tells a
//! packet the host's stack or a veth's transmit sent from one put straight into the
//! namespace.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::spawn_in_netns;
use crate::netns::Netns;

pub type Mac = [u8; 6];

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const IPPROTO_TCP: u8 = 6;
/// How long a read waits before the capture looks at its stop flag again.
const POLL: Duration = Duration::from_millis(50);

/// One received frame: its Ethernet destination and source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    pub dst: Mac,
    pub src: Mac,
}

/// A capture running on its own thread inside a namespace; [`FrameCapture::stop`] ends it
/// and hands over what it saw.
pub struct FrameCapture {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<Frame>>>,
}

impl FrameCapture {
    /// Captures the IPv4 TCP frames to `port` that `interface` of `netns` receives.
    /// Returns once the socket is open, so that nothing sent after it is missed.
    pub fn start(netns: &str, interface: &str, port: u16) -> FrameCapture {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready, opened) = mpsc::channel();
        let interface = interface.to_string();
        let stopped = stop.clone();
        let thread = spawn_in_netns(netns, move || {
            let socket = packet_socket(&interface)
                .unwrap_or_else(|e| panic!("a packet socket on {interface}: {e}"));
            // The receiving end lives until `start` returns.
            let _ = ready.send(());
            let mut frames = Vec::new();
            let mut buf = [0u8; 2048];
            while !stopped.load(Ordering::Relaxed) {
                // SAFETY: a valid socket and a buffer of the length passed.
                let n = unsafe {
                    libc::recv(socket.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0)
                };
                if n < 0 {
                    let err = io::Error::last_os_error();
                    match err.kind() {
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => continue,
                        _ => panic!("recv on the packet socket on {interface}: {err}"),
                    }
                }
                if let Some(frame) = tcp_frame_to(&buf[..n as usize], port) {
                    frames.push(frame);
                }
            }
            frames
        });
        opened
            .recv()
            .expect("the capture thread died before opening its socket");
        FrameCapture {
            stop,
            thread: Some(thread),
        }
    }

    /// Ends the capture: every frame it saw, in order.
    pub fn stop(mut self) -> Vec<Frame> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .expect("a capture is stopped once")
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}

impl Drop for FrameCapture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A packet socket on `interface` that receives what arrives there (not what it sends),
/// with a read timeout of [`POLL`].
fn packet_socket(interface: &str) -> io::Result<OwnedFd> {
    let protocol = ETH_P_IP.to_be();
    // SAFETY: plain system calls; the descriptor is owned at once.
    let socket = unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(protocol));
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        OwnedFd::from_raw_fd(fd)
    };
    let name = std::ffi::CString::new(interface).map_err(io::Error::other)?;
    // SAFETY: a NUL-terminated name.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: all zeros is a valid `sockaddr_ll`; bound with its own size.
    let rc = unsafe {
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = protocol;
        addr.sll_ifindex = index as i32;
        libc::bind(
            socket.as_raw_fd(),
            (&raw const addr).cast(),
            size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // Outgoing frames are not wanted: only what the interface receives.
    let ignore_outgoing: i32 = 1;
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: POLL.as_micros() as libc::suseconds_t,
    };
    // SAFETY: options of the sizes passed.
    unsafe {
        for (option, value, len) in [
            (
                libc::PACKET_IGNORE_OUTGOING,
                (&raw const ignore_outgoing).cast(),
                size_of::<i32>(),
            ),
            (
                libc::SO_RCVTIMEO,
                (&raw const timeout).cast(),
                size_of::<libc::timeval>(),
            ),
        ] {
            let level = if option == libc::SO_RCVTIMEO {
                libc::SOL_SOCKET
            } else {
                libc::SOL_PACKET
            };
            if libc::setsockopt(socket.as_raw_fd(), level, option, value, len as u32) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(socket)
}

/// The frame's addresses, when it carries an IPv4 TCP segment to `port`.
fn tcp_frame_to(frame: &[u8], port: u16) -> Option<Frame> {
    let ip = frame.get(ETH_HLEN..)?;
    let header_len = usize::from(ip.first()? & 0x0f) * 4;
    if u16::from_be_bytes([frame[12], frame[13]]) != ETH_P_IP || *ip.get(9)? != IPPROTO_TCP {
        return None;
    }
    let tcp = ip.get(header_len..)?;
    let dst_port = u16::from_be_bytes([*tcp.get(2)?, *tcp.get(3)?]);
    (dst_port == port).then(|| Frame {
        dst: frame[0..6].try_into().expect("six bytes"),
        src: frame[6..12].try_into().expect("six bytes"),
    })
}

/// The MAC of `interface` in `netns` (`None`: this process's namespace).
pub fn interface_mac(netns: Option<&Netns>, interface: &str) -> Mac {
    let link = link_json(netns, interface);
    let text = link["address"]
        .as_str()
        .unwrap_or_else(|| panic!("{interface} has no address: {link}"));
    let bytes: Vec<u8> = text
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).unwrap_or_else(|e| panic!("{text}: {e}")))
        .collect();
    bytes
        .try_into()
        .unwrap_or_else(|_| panic!("{interface}'s address {text} is not a MAC"))
}

/// Packets `interface` in `netns` has received and sent, as its counters say.
pub fn interface_packets(netns: Option<&Netns>, interface: &str) -> (u64, u64) {
    let link = link_json(netns, interface);
    let stats = &link["stats64"];
    match (
        stats["rx"]["packets"].as_u64(),
        stats["tx"]["packets"].as_u64(),
    ) {
        (Some(rx), Some(tx)) => (rx, tx),
        _ => panic!("{interface} has no packet counters: {link}"),
    }
}

fn link_json(netns: Option<&Netns>, interface: &str) -> serde_json::Value {
    let mut args = match netns {
        Some(ns) => vec!["-n", ns.name.as_str()],
        None => vec![],
    };
    args.extend(["-s", "-j", "link", "show", "dev", interface]);
    let out = crate::netns::run_ok("ip", &args);
    let links: serde_json::Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("ip {}: not JSON ({e}): {out}", args.join(" ")));
    links[0].clone()
}
