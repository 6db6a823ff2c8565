//! `--health-address` and `--metrics-address`: `ADDR:PORT`, or `off`. Both listen on
//! loopback by default; reaching them from elsewhere (a Prometheus on another host) takes
//! an explicit address.

use std::fmt;
use std::net::{SocketAddr, TcpListener};
use std::str::FromStr;

pub const DEFAULT_HEALTH_ADDRESS: &str = "127.0.0.1:9099";
pub const DEFAULT_METRICS_ADDRESS: &str = "127.0.0.1:9091";

/// Where an endpoint listens, if at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenAddress {
    Off,
    At(SocketAddr),
}

impl FromStr for ListenAddress {
    type Err = String;

    fn from_str(s: &str) -> Result<ListenAddress, String> {
        if s == "off" {
            return Ok(ListenAddress::Off);
        }
        s.parse().map(ListenAddress::At).map_err(|_| {
            format!(
                "'{s}' is not an address and port (like 127.0.0.1:9099, 0.0.0.0:9099 or \
                 [::1]:9099) nor 'off'"
            )
        })
    }
}

impl fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddress::Off => f.write_str("off"),
            ListenAddress::At(address) => write!(f, "{address}"),
        }
    }
}

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Routes {
    /// `/healthz` and `/readyz`.
    pub health: bool,
    /// `/metrics`.
    pub metrics: bool,
}

/// A bound socket and what it serves.
#[derive(Debug)]
pub struct Listener {
    pub socket: TcpListener,
    pub routes: Routes,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "cannot listen on {address} ({flag}): {source}\nhint: another program (another palisade \
     agent?) may use it; choose another address, or `{flag} off`"
)]
pub struct BindError {
    flag: &'static str,
    address: SocketAddr,
    #[source]
    source: std::io::Error,
}

/// Binds the health and metrics addresses; one address given to both serves both.
pub fn bind(health: ListenAddress, metrics: ListenAddress) -> Result<Vec<Listener>, BindError> {
    let mut wanted: Vec<(&'static str, SocketAddr, Routes)> = Vec::new();
    if let ListenAddress::At(address) = health {
        let routes = Routes {
            health: true,
            metrics: metrics == health,
        };
        wanted.push(("--health-address", address, routes));
    }
    if let ListenAddress::At(address) = metrics
        && metrics != health
    {
        let routes = Routes {
            health: false,
            metrics: true,
        };
        wanted.push(("--metrics-address", address, routes));
    }
    wanted
        .into_iter()
        .map(|(flag, address, routes)| {
            let socket = TcpListener::bind(address)
                .and_then(|s| s.set_nonblocking(true).map(|()| s))
                .map_err(|source| BindError {
                    flag,
                    address,
                    source,
                })?;
            Ok(Listener { socket, routes })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_and_off_disables() {
        assert_eq!("off".parse(), Ok(ListenAddress::Off));
        assert_eq!(
            "127.0.0.1:9099".parse(),
            Ok(ListenAddress::At(SocketAddr::from(([127, 0, 0, 1], 9099))))
        );
        assert!(matches!(
            "[::1]:9091".parse::<ListenAddress>(),
            Ok(ListenAddress::At(a)) if a.is_ipv6() && a.port() == 9091
        ));
        for bad in [
            "",
            "9099",
            "localhost:9099",
            "127.0.0.1",
            "127.0.0.1:99999",
            "Off",
        ] {
            let error = bad.parse::<ListenAddress>().unwrap_err();
            assert!(error.contains("nor 'off'"), "{bad}: {error}");
        }
    }

    #[test]
    fn one_address_for_both_serves_both_and_off_binds_nothing() {
        let at: ListenAddress = "127.0.0.1:0".parse().unwrap();
        let listeners = bind(at, ListenAddress::Off).unwrap();
        assert_eq!(listeners.len(), 1);
        assert_eq!(
            listeners[0].routes,
            Routes {
                health: true,
                metrics: false
            }
        );
        assert!(
            bind(ListenAddress::Off, ListenAddress::Off)
                .unwrap()
                .is_empty()
        );
        // Port 0 twice would be two sockets; a fixed port shows the sharing.
        let port = listeners[0].socket.local_addr().unwrap().port();
        drop(listeners);
        let fixed: ListenAddress = format!("127.0.0.1:{port}").parse().unwrap();
        let shared = bind(fixed, fixed).unwrap();
        assert_eq!(shared.len(), 1);
        assert!(shared[0].routes.health && shared[0].routes.metrics);
    }

    #[test]
    fn an_address_in_use_is_an_error_naming_the_option() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = ListenAddress::At(taken.local_addr().unwrap());
        let error = bind(ListenAddress::Off, address).unwrap_err().to_string();
        assert!(error.contains("--metrics-address"), "{error}");
        assert!(error.contains("--metrics-address off"), "{error}");
    }
}
