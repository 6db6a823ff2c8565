//! The TTL (IPv4) or hop limit (IPv6) a UDP datagram arrives with, as the receiving socket
//! reports it (`IP_RECVTTL`, `IPV6_RECVHOPLIMIT`): what every router on the way took off.

use std::io;
use std::mem::size_of_val;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::time::Duration;

use super::{TOKEN_LEN, new_token, setsockopt, spawn_in_netns, token_of, unspecified};

/// Sends one datagram from `sender` (a namespace) to `receiver_addr`, an address of the
/// namespace `receiver` and a port nothing else listens on there, with TTL or hop limit
/// `sent`; returns the one it arrived with, or `None` when it did not arrive within
/// `timeout`.
pub fn arrival_hop_limit(
    sender: &str,
    receiver: &str,
    receiver_addr: SocketAddr,
    sent: u8,
    timeout: Duration,
) -> Option<u8> {
    let token = new_token();
    let (bound, ready) = mpsc::channel();
    let receiving = spawn_in_netns(receiver, move || {
        let socket = UdpSocket::bind(receiver_addr)
            .unwrap_or_else(|e| panic!("bind a UDP socket to {receiver_addr}: {e}"));
        let (level, option) = if receiver_addr.is_ipv4() {
            (libc::IPPROTO_IP, libc::IP_RECVTTL)
        } else {
            (libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT)
        };
        setsockopt(&socket, level, option, &1i32.to_ne_bytes());
        socket
            .set_read_timeout(Some(timeout))
            .unwrap_or_else(|e| panic!("SO_RCVTIMEO: {e}"));
        // The receiver's end of `ready` lives until `recv` returns below.
        let _ = bound.send(());
        receive_hop_limit(&socket, token)
    });
    ready
        .recv()
        .unwrap_or_else(|_| panic!("the receiver in {receiver} did not bind"));
    let sending = spawn_in_netns(sender, move || {
        let socket = UdpSocket::bind(unspecified(receiver_addr.ip()))
            .unwrap_or_else(|e| panic!("bind a UDP socket: {e}"));
        let (level, option) = if receiver_addr.is_ipv4() {
            (libc::IPPROTO_IP, libc::IP_TTL)
        } else {
            (libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS)
        };
        setsockopt(&socket, level, option, &i32::from(sent).to_ne_bytes());
        socket
            .send_to(&token.to_be_bytes(), receiver_addr)
            .unwrap_or_else(|e| panic!("send to {receiver_addr}: {e}"));
    });
    sending
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    receiving
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// The hop limit of the datagram carrying `token`, skipping any other; `None` on the
/// socket's read timeout.
fn receive_hop_limit(socket: &UdpSocket, token: u64) -> Option<u8> {
    loop {
        let mut payload = [0u8; 64];
        // u64s: control messages must be aligned like `cmsghdr`.
        let mut control = [0u64; 16];
        let mut iov = libc::iovec {
            iov_base: payload.as_mut_ptr().cast(),
            iov_len: payload.len(),
        };
        // SAFETY: plain data; zero is a valid value.
        let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
        message.msg_iov = &mut iov;
        message.msg_iovlen = 1;
        message.msg_control = control.as_mut_ptr().cast();
        message.msg_controllen = size_of_val(&control);
        // SAFETY: every buffer the message points to is valid for writes of its length.
        let len = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut message, 0) };
        if len < 0 {
            let error = io::Error::last_os_error();
            match error.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => return None,
                io::ErrorKind::Interrupted => continue,
                _ => panic!("recvmsg: {error}"),
            }
        }
        let len = usize::try_from(len).unwrap_or(0);
        if len < TOKEN_LEN || token_of(&payload[..len]) != Some(token) {
            continue;
        }
        return Some(hop_limit_of(&message).expect("no TTL or hop limit control message"));
    }
}

/// The `IP_TTL` or `IPV6_HOPLIMIT` control message of a received `message`.
fn hop_limit_of(message: &libc::msghdr) -> Option<u8> {
    // SAFETY: `message` was filled in by recvmsg; the CMSG macros walk its control buffer
    // within `msg_controllen`, and each message's data is read as the int it is.
    unsafe {
        let mut header = libc::CMSG_FIRSTHDR(message);
        while !header.is_null() {
            let (level, kind) = ((*header).cmsg_level, (*header).cmsg_type);
            if (level == libc::IPPROTO_IP && kind == libc::IP_TTL)
                || (level == libc::IPPROTO_IPV6 && kind == libc::IPV6_HOPLIMIT)
            {
                let value: libc::c_int = std::ptr::read_unaligned(libc::CMSG_DATA(header).cast());
                return u8::try_from(value).ok();
            }
            header = libc::CMSG_NXTHDR(message, header);
        }
    }
    None
}
