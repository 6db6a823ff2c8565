//! What the agent needs to hear from the kernel's networking: interfaces appearing and
//! going (to attach to a local workload's host veth as soon as it exists, and forget it
//! when it is gone) and the host's own addresses (which the programs must tell apart from
//! workloads and the outside world).
//!
//! Each subscription first reports what exists (a netlink dump), then `Synced`, then
//! changes as they happen. It joins the multicast groups before it asks for the dump, so
//! nothing falls between the two; the price is that a change may be reported twice, so
//! consumers treat every event as a statement of the current state ("ifindex 7 exists and
//! is called palX"), not as a delta.
//!
//! The messages are read with a small parser of our own that looks at the few fields we
//! need and skips the rest: the general-purpose decoder (netlink-packet-route 0.22) fails
//! on some messages of recent kernels (RTM_DELLINK of a veth on 6.18), and a message it
//! cannot decode is silently dropped, which for an interface that went away would mean
//! never detaching from it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{AsyncSocket, AsyncSocketExt, SocketAddr, TokioSocket};
use rtnetlink::constants::{RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR, RTMGRP_LINK};
use tokio::sync::mpsc;

use super::Error;

/// Events are handed on as they come; this many may wait for the consumer.
const CHANNEL_CAPACITY: usize = 256;
/// A burst of changes (many workloads started at once) must not overflow the socket: the
/// kernel drops what does not fit, and the subscription then ends (see [`watch_links`]).
const SOCKET_BUFFER_BYTES: usize = 4 << 20;

/// An interface of the agent's network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// The interface `ifindex` exists and is called `name` (it may have been reported
    /// before: a rename or any other change reports it again).
    Present { ifindex: u32, name: String },
    /// The interface `ifindex`, last called `name`, is gone.
    Removed { ifindex: u32, name: String },
    /// Every interface that existed when the subscription started has been reported.
    Synced,
}

/// An address of the host (IPv4 or IPv6) on one of its interfaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressEvent {
    Added {
        ifindex: u32,
        address: IpAddr,
    },
    Removed {
        ifindex: u32,
        address: IpAddr,
    },
    /// Every address that existed when the subscription started has been reported.
    Synced,
}

/// Subscribes to the interfaces of the calling process's namespace. Needs a tokio runtime.
///
/// The receiver ends if the netlink socket fails or overflows (the caller subscribes again
/// and gets a fresh dump); dropping the receiver ends the subscription.
pub fn watch_links() -> Result<mpsc::Receiver<LinkEvent>, Error> {
    let socket = subscribe(RTMGRP_LINK, "link events")?;
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    tokio::spawn(forward(
        socket,
        tx,
        Feed {
            dump_request: wire::RTM_GETLINK,
            request_body_len: wire::IFINFOMSG_LEN,
            parse: wire::link_event,
            synced: LinkEvent::Synced,
        },
    ));
    Ok(rx)
}

/// Subscribes to the IPv4 and IPv6 addresses of the calling process's namespace. Needs a
/// tokio runtime. Ends as [`watch_links`] does.
pub fn watch_addresses() -> Result<mpsc::Receiver<AddressEvent>, Error> {
    let socket = subscribe(RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR, "address events")?;
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    tokio::spawn(forward(
        socket,
        tx,
        Feed {
            dump_request: wire::RTM_GETADDR,
            request_body_len: wire::IFADDRMSG_LEN,
            parse: wire::address_event,
            synced: AddressEvent::Synced,
        },
    ));
    Ok(rx)
}

/// How one subscription asks for its dump and reads its messages.
struct Feed<E> {
    dump_request: u16,
    request_body_len: usize,
    parse: fn(message_type: u16, body: &[u8]) -> Option<E>,
    synced: E,
}

/// A route-netlink socket that receives the multicast `groups`.
fn subscribe(groups: u32, what: &'static str) -> Result<TokioSocket, Error> {
    let error = |source| Error::Netlink { what, source };
    let mut socket = TokioSocket::new(NETLINK_ROUTE).map_err(error)?;
    socket
        .socket_mut()
        .set_rx_buf_sz(SOCKET_BUFFER_BYTES)
        .map_err(error)?;
    socket
        .socket_mut()
        .bind(&SocketAddr::new(0, groups))
        .map_err(error)?;
    Ok(socket)
}

/// Asks for the dump, then sends every event until the receiver is dropped or the socket
/// fails; `Synced` goes out when the dump's end arrives.
async fn forward<E>(socket: TokioSocket, tx: mpsc::Sender<E>, feed: Feed<E>) {
    let request = wire::dump_request(feed.dump_request, feed.request_body_len);
    if socket.send(&request).await.is_err() {
        return;
    }
    let mut synced = Some(feed.synced);
    loop {
        let Ok((datagram, _)) = socket.recv_from_full().await else {
            // ENOBUFS (events were lost) or a dead socket: end, so that the consumer
            // subscribes again and gets a fresh dump.
            return;
        };
        for message in wire::messages(&datagram) {
            let event = match message.kind {
                wire::NLMSG_DONE if message.sequence == wire::DUMP_SEQUENCE => synced.take(),
                // The dump request failed: without its answer nothing is ever synced.
                wire::NLMSG_ERROR if message.sequence == wire::DUMP_SEQUENCE => return,
                kind => (feed.parse)(kind, message.body),
            };
            if let Some(event) = event
                && tx.send(event).await.is_err()
            {
                return;
            }
        }
    }
}

/// The few bytes of route-netlink this module reads (see `linux/netlink.h`,
/// `linux/rtnetlink.h`, `linux/if_link.h`, `linux/if_addr.h`); all host byte order. The
/// framing (`messages`, `attributes`) is shared with the TC requests of `attach::clsact`.
pub(super) mod wire {
    use super::*;

    pub const NLMSG_ERROR: u16 = 2;
    pub const NLMSG_DONE: u16 = 3;
    const RTM_NEWLINK: u16 = 16;
    const RTM_DELLINK: u16 = 17;
    pub const RTM_GETLINK: u16 = 18;
    const RTM_NEWADDR: u16 = 20;
    const RTM_DELADDR: u16 = 21;
    pub const RTM_GETADDR: u16 = 22;
    const NLM_F_REQUEST: u16 = 0x1;
    const NLM_F_DUMP: u16 = 0x300;
    const IFLA_IFNAME: u16 = 3;
    const IFA_ADDRESS: u16 = 1;
    const IFA_LOCAL: u16 = 2;
    pub const NLMSGHDR_LEN: usize = 16;
    pub const IFINFOMSG_LEN: usize = 16;
    pub const IFADDRMSG_LEN: usize = 8;
    /// The sequence number of our dump request; notifications carry others (or 0).
    pub const DUMP_SEQUENCE: u32 = 1;

    /// A dump request of `kind` with an all-zero body of `body_len` bytes (any family, any
    /// interface).
    pub fn dump_request(kind: u16, body_len: usize) -> Vec<u8> {
        let len = NLMSGHDR_LEN + body_len;
        let mut request = Vec::with_capacity(len);
        request.extend_from_slice(&(len as u32).to_ne_bytes());
        request.extend_from_slice(&kind.to_ne_bytes());
        request.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        request.extend_from_slice(&DUMP_SEQUENCE.to_ne_bytes());
        request.extend_from_slice(&0u32.to_ne_bytes());
        request.resize(len, 0);
        request
    }

    pub struct Message<'a> {
        pub kind: u16,
        pub flags: u16,
        pub sequence: u32,
        pub body: &'a [u8],
    }

    /// The messages of one datagram; a truncated one ends the list.
    pub fn messages(datagram: &[u8]) -> Vec<Message<'_>> {
        let mut found = Vec::new();
        let mut rest = datagram;
        while rest.len() >= NLMSGHDR_LEN {
            let len = u32_at(rest, 0) as usize;
            if len < NLMSGHDR_LEN || len > rest.len() {
                break;
            }
            found.push(Message {
                kind: u16_at(rest, 4),
                flags: u16_at(rest, 6),
                sequence: u32_at(rest, 8),
                body: &rest[NLMSGHDR_LEN..len],
            });
            rest = &rest[align(len).min(rest.len())..];
        }
        found
    }

    /// RTM_NEWLINK / RTM_DELLINK: `struct ifinfomsg` (index at byte 4), then attributes.
    pub fn link_event(kind: u16, body: &[u8]) -> Option<LinkEvent> {
        if !matches!(kind, RTM_NEWLINK | RTM_DELLINK) || body.len() < IFINFOMSG_LEN {
            return None;
        }
        let ifindex = u32_at(body, 4);
        let name = attributes(&body[IFINFOMSG_LEN..])
            .find(|(kind, _)| *kind == IFLA_IFNAME)
            .map(|(_, value)| {
                let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
                String::from_utf8_lossy(&value[..end]).into_owned()
            })?;
        Some(if kind == RTM_NEWLINK {
            LinkEvent::Present { ifindex, name }
        } else {
            LinkEvent::Removed { ifindex, name }
        })
    }

    /// RTM_NEWADDR / RTM_DELADDR: `struct ifaddrmsg` (index at byte 4), then attributes.
    /// IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer's on a
    /// point-to-point link, and the only one IPv6 sends.
    pub fn address_event(kind: u16, body: &[u8]) -> Option<AddressEvent> {
        if !matches!(kind, RTM_NEWADDR | RTM_DELADDR) || body.len() < IFADDRMSG_LEN {
            return None;
        }
        let ifindex = u32_at(body, 4);
        let mut local = None;
        let mut address = None;
        for (attribute, value) in attributes(&body[IFADDRMSG_LEN..]) {
            let ip = match value.len() {
                4 => <[u8; 4]>::try_from(value)
                    .ok()
                    .map(|b| IpAddr::V4(Ipv4Addr::from(b))),
                16 => <[u8; 16]>::try_from(value)
                    .ok()
                    .map(|b| IpAddr::V6(Ipv6Addr::from(b))),
                _ => None,
            };
            match attribute {
                IFA_LOCAL => local = ip,
                IFA_ADDRESS => address = ip,
                _ => {}
            }
        }
        let address = local.or(address)?;
        Some(if kind == RTM_NEWADDR {
            AddressEvent::Added { ifindex, address }
        } else {
            AddressEvent::Removed { ifindex, address }
        })
    }

    /// The `struct rtattr` list: (type without flag bits, value).
    pub fn attributes(mut rest: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
        std::iter::from_fn(move || {
            if rest.len() < 4 {
                return None;
            }
            let len = usize::from(u16_at(rest, 0));
            if len < 4 || len > rest.len() {
                return None;
            }
            let attribute = (u16_at(rest, 2) & 0x3fff, &rest[4..len]);
            rest = &rest[align(len).min(rest.len())..];
            Some(attribute)
        })
    }

    pub fn align(len: usize) -> usize {
        (len + 3) & !3
    }

    pub fn u16_at(bytes: &[u8], at: usize) -> u16 {
        u16::from_ne_bytes([bytes[at], bytes[at + 1]])
    }

    pub fn u32_at(bytes: &[u8], at: usize) -> u32 {
        u32::from_ne_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn attribute(kind: u16, value: &[u8]) -> Vec<u8> {
            let mut out = ((4 + value.len()) as u16).to_ne_bytes().to_vec();
            out.extend_from_slice(&kind.to_ne_bytes());
            out.extend_from_slice(value);
            out.resize(align(out.len()), 0);
            out
        }

        fn message(kind: u16, body: &[u8]) -> Vec<u8> {
            let mut out = dump_request(kind, 0);
            out.extend_from_slice(body);
            let len = out.len() as u32;
            out[..4].copy_from_slice(&len.to_ne_bytes());
            out.resize(align(out.len()), 0);
            out
        }

        #[test]
        fn reads_link_messages_and_skips_unknown_attributes() {
            let mut body = vec![0u8; IFINFOMSG_LEN];
            body[4..8].copy_from_slice(&7u32.to_ne_bytes());
            body.extend(attribute(0x7fff, &[1, 2, 3]));
            body.extend(attribute(IFLA_IFNAME, b"pal0123\0"));
            let mut datagram = message(RTM_DELLINK, &body);
            datagram.extend(message(NLMSG_DONE, &[0; 4]));
            let found = messages(&datagram);
            assert_eq!(found.len(), 2);
            assert_eq!(
                link_event(found[0].kind, found[0].body),
                Some(LinkEvent::Removed {
                    ifindex: 7,
                    name: "pal0123".into()
                })
            );
            assert_eq!(
                (found[1].kind, found[1].sequence),
                (NLMSG_DONE, DUMP_SEQUENCE)
            );
        }

        #[test]
        fn prefers_the_local_address() {
            let mut body = vec![0u8; IFADDRMSG_LEN];
            body[4..8].copy_from_slice(&3u32.to_ne_bytes());
            body.extend(attribute(IFA_ADDRESS, &[10, 0, 0, 2]));
            body.extend(attribute(IFA_LOCAL, &[10, 0, 0, 1]));
            assert_eq!(
                address_event(RTM_NEWADDR, &body),
                Some(AddressEvent::Added {
                    ifindex: 3,
                    address: "10.0.0.1".parse().unwrap()
                })
            );
            assert_eq!(address_event(RTM_NEWLINK, &body), None);
            assert_eq!(address_event(RTM_DELADDR, &body[..4]), None);
        }
    }
}
