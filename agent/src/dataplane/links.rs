//! What the agent needs to hear from the kernel's networking: interfaces appearing and
//! going (to attach to a local workload's host veth as soon as it exists, and forget it
//! when it is gone) and the host's own addresses (which the programs must tell apart from
//! workloads and the outside world).
//!
//! Each subscription first reports what exists (a netlink dump), then [`Synced`], then
//! changes as they happen. It listens before it dumps, so nothing falls between the two;
//! the price is that a change may be reported twice, so consumers treat every event as a
//! statement of the current state ("ifindex 7 is called palX and exists"), not as a delta.
//!
//! [`Synced`]: LinkEvent::Synced

use std::net::IpAddr;

use futures::{StreamExt, TryStreamExt};
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_sys::{AsyncSocket, SocketAddr};
use rtnetlink::constants::{RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR, RTMGRP_LINK};
use tokio::sync::mpsc;

use super::Error;

/// Events are handed on as they come; this many may wait for the consumer.
const CHANNEL_CAPACITY: usize = 256;
/// A burst of link changes (many workloads started at once) must not overflow the socket:
/// the kernel drops what does not fit.
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
/// The receiver ends if the netlink socket fails (the caller subscribes again and gets a
/// fresh dump); dropping it ends the subscription.
pub fn watch_links() -> Result<mpsc::Receiver<LinkEvent>, Error> {
    let (handle, notifications, connection) = subscribe(RTMGRP_LINK, "link events")?;
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    let dump = handle.link().get().execute();
    tokio::spawn(forward(
        connection,
        dump,
        notifications,
        tx,
        Feed {
            dumped: |link| link_event(link, true),
            synced: LinkEvent::Synced,
            notified: |message| match message {
                RouteNetlinkMessage::NewLink(link) => link_event(link, true),
                RouteNetlinkMessage::DelLink(link) => link_event(link, false),
                _ => None,
            },
        },
    ));
    Ok(rx)
}

/// Subscribes to the IPv4 and IPv6 addresses of the calling process's namespace. Needs a
/// tokio runtime. Ends as [`watch_links`] does.
pub fn watch_addresses() -> Result<mpsc::Receiver<AddressEvent>, Error> {
    let (handle, notifications, connection) =
        subscribe(RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR, "address events")?;
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    let dump = handle.address().get().execute();
    tokio::spawn(forward(
        connection,
        dump,
        notifications,
        tx,
        Feed {
            dumped: |address| address_event(&address, true),
            synced: AddressEvent::Synced,
            notified: |message| match message {
                RouteNetlinkMessage::NewAddress(address) => address_event(&address, true),
                RouteNetlinkMessage::DelAddress(address) => address_event(&address, false),
                _ => None,
            },
        },
    ));
    Ok(rx)
}

/// How one subscription turns netlink messages into its events.
struct Feed<D, E> {
    dumped: fn(D) -> Option<E>,
    synced: E,
    notified: fn(RouteNetlinkMessage) -> Option<E>,
}

/// Sends the dump's events, then `Synced`, then the notifications' events, until the
/// receiver is dropped or netlink fails; then stops the connection.
async fn forward<D, E>(
    connection: tokio::task::JoinHandle<()>,
    mut dump: impl futures::TryStream<Ok = D, Error = rtnetlink::Error> + Unpin,
    mut notifications: Notifications,
    tx: mpsc::Sender<E>,
    feed: Feed<D, E>,
) {
    let _connection = AbortOnDrop(connection);
    loop {
        match dump.try_next().await {
            Ok(Some(item)) => {
                if let Some(event) = (feed.dumped)(item) {
                    if tx.send(event).await.is_err() {
                        return;
                    }
                }
            }
            Ok(None) => break,
            // An incomplete dump must not be followed by `Synced`: end, so that the
            // consumer subscribes again.
            Err(_) => return,
        }
    }
    if tx.send(feed.synced).await.is_err() {
        return;
    }
    while let Some((message, _)) = notifications.next().await {
        let Some(event) = route_message(message).and_then(feed.notified) else {
            continue;
        };
        if tx.send(event).await.is_err() {
            return;
        }
    }
}

type Notifications =
    futures::channel::mpsc::UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>;

/// A route-netlink connection that also receives the multicast `groups`.
fn subscribe(
    groups: u32,
    what: &'static str,
) -> Result<
    (
        rtnetlink::Handle,
        Notifications,
        tokio::task::JoinHandle<()>,
    ),
    Error,
> {
    let error = |source| Error::Netlink { what, source };
    let (mut connection, handle, notifications) = rtnetlink::new_connection().map_err(error)?;
    let socket = connection.socket_mut().socket_mut();
    socket.set_rx_buf_sz(SOCKET_BUFFER_BYTES).map_err(error)?;
    socket.bind(&SocketAddr::new(0, groups)).map_err(error)?;
    Ok((handle, notifications, tokio::spawn(connection)))
}

fn route_message(message: NetlinkMessage<RouteNetlinkMessage>) -> Option<RouteNetlinkMessage> {
    match message.payload {
        NetlinkPayload::InnerMessage(inner) => Some(inner),
        _ => None,
    }
}

fn link_event(link: LinkMessage, present: bool) -> Option<LinkEvent> {
    let ifindex = link.header.index;
    let name = link.attributes.into_iter().find_map(|attr| match attr {
        LinkAttribute::IfName(name) => Some(name),
        _ => None,
    })?;
    Some(if present {
        LinkEvent::Present { ifindex, name }
    } else {
        LinkEvent::Removed { ifindex, name }
    })
}

fn address_event(message: &AddressMessage, added: bool) -> Option<AddressEvent> {
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer's on a
    // point-to-point link and the only one IPv6 sends.
    let local = message.attributes.iter().find_map(|attr| match attr {
        AddressAttribute::Local(address) => Some(*address),
        _ => None,
    });
    let address = local.or_else(|| {
        message.attributes.iter().find_map(|attr| match attr {
            AddressAttribute::Address(address) => Some(*address),
            _ => None,
        })
    })?;
    let ifindex = message.header.index;
    Some(if added {
        AddressEvent::Added { ifindex, address }
    } else {
        AddressEvent::Removed { ifindex, address }
    })
}

/// Stops the netlink connection's task when the subscription's task ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
