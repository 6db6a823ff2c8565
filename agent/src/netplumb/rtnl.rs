//! A route-netlink connection in the host namespace or in another one.

use futures::TryStreamExt;
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::Handle;

use super::namespace::NetnsHandle;
use super::{Error, netlink_errno};

/// A route-netlink connection, bound to the network namespace it was opened in.
///
/// A netlink socket talks to the namespace it was created in for its whole life, so a
/// connection into a workload's namespace is opened on a short-lived thread that enters the
/// namespace, and then used from anywhere.
pub struct Rtnl {
    handle: Handle,
    connection: tokio::task::JoinHandle<()>,
}

impl Rtnl {
    /// A connection in the calling process's namespace. Needs a tokio runtime.
    pub fn host() -> Result<Self, Error> {
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|source| Error::NetlinkSocket {
                context: String::new(),
                source,
            })?;
        Ok(Self {
            handle,
            connection: tokio::spawn(connection),
        })
    }

    /// A connection in the namespace `netns`. Needs a tokio runtime.
    pub fn in_namespace(netns: &NetnsHandle) -> Result<Self, Error> {
        let context = format!(" in {}", netns.path().display());
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| Error::NetlinkSocket {
            context: context.clone(),
            source: std::io::Error::other(e),
        })?;
        let opened = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    netns.enter_on_this_thread()?;
                    // The socket registers with the runtime's reactor as it is created.
                    let _runtime = runtime.enter();
                    rtnetlink::new_connection().map_err(|source| Error::NetlinkSocket {
                        context: context.clone(),
                        source,
                    })
                })
                .join()
        });
        let (connection, handle, _) = match opened {
            Ok(result) => result?,
            Err(_) => {
                return Err(Error::NetlinkSocket {
                    context,
                    source: std::io::Error::other("the namespace thread panicked"),
                });
            }
        };
        Ok(Self {
            handle,
            connection: runtime.spawn(connection),
        })
    }

    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// The interface called `name`, if there is one.
    pub async fn link_by_name(&self, name: &str) -> Result<Option<LinkMessage>, Error> {
        let request = self
            .handle
            .clone()
            .link()
            .get()
            .match_name(name.to_string());
        match request.execute().try_next().await {
            Ok(link) => Ok(link),
            Err(e) if netlink_errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(source) => Err(Error::Netlink {
                step: format!("look up interface {name}"),
                source,
            }),
        }
    }
}

impl Drop for Rtnl {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

/// The MAC address of a link, as `aa:bb:cc:dd:ee:ff`.
pub fn link_mac(link: &LinkMessage) -> Option<String> {
    link.attributes.iter().find_map(|attr| match attr {
        LinkAttribute::Address(bytes) => Some(
            bytes
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":"),
        ),
        _ => None,
    })
}
