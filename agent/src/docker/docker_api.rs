//! A small client of the Docker Engine API on its unix socket: the few read-only calls
//! the plugin needs, because libnetwork's requests name networks and endpoints only by
//! ID (the network's name and the container's labels are not in them).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

/// Docker's default API socket.
pub const DEFAULT_DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// How long one API call may take. Docker waits for the plugin's reply while the plugin
/// asks Docker, so a stuck call must fail the request rather than hang the `docker`
/// command.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct DockerApi {
    socket: PathBuf,
}

/// A failed API call, with the socket it went to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Docker API at {socket}: {message}")]
pub struct DockerApiError {
    pub socket: String,
    pub message: String,
}

/// `GET /networks/{id}`: the parts the plugin reads.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Network {
    pub name: String,
    #[serde(rename = "Id")]
    pub id: String,
    /// The network's endpoints, keyed by container ID (or `ep-<EndpointID>` while a
    /// container is still being connected).
    pub containers: Option<BTreeMap<String, NetworkContainer>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NetworkContainer {
    /// The container's name (without the leading `/`).
    pub name: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
}

/// One entry of `GET /containers/json`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerSummary {
    #[serde(rename = "Id")]
    pub id: String,
    /// `/name` forms.
    pub names: Vec<String>,
    pub labels: Option<BTreeMap<String, String>>,
    pub network_settings: Option<ContainerNetworks>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerNetworks {
    pub networks: Option<BTreeMap<String, ContainerNetwork>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerNetwork {
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
}

impl DockerApi {
    pub fn new(socket: &Path) -> DockerApi {
        DockerApi {
            socket: socket.to_path_buf(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The network with this ID, or `None` if Docker does not know it (yet).
    pub async fn network(&self, id: &str) -> Result<Option<Network>, DockerApiError> {
        self.get_json(&format!("/networks/{}", encode_component(id)))
            .await
    }

    /// Every container, running or not, whose name matches `name` exactly.
    pub async fn containers_named(
        &self,
        name: &str,
    ) -> Result<Vec<ContainerSummary>, DockerApiError> {
        // The name filter is a regular expression; the exact match is checked below.
        let filters = serde_json::json!({ "name": [format!("^/{name}$")] }).to_string();
        let path = format!(
            "/containers/json?all=1&filters={}",
            encode_component(&filters)
        );
        let listed: Vec<ContainerSummary> = self.get_json(&path).await?.unwrap_or_default();
        let wanted = format!("/{name}");
        Ok(listed
            .into_iter()
            .filter(|c| c.names.contains(&wanted))
            .collect())
    }

    /// Every container, running or not.
    pub async fn all_containers(&self) -> Result<Vec<ContainerSummary>, DockerApiError> {
        Ok(self
            .get_json("/containers/json?all=1")
            .await?
            .unwrap_or_default())
    }

    /// `GET path` as JSON; `None` on 404.
    async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<Option<T>, DockerApiError> {
        let (status, body) = tokio::time::timeout(CALL_TIMEOUT, self.get(path))
            .await
            .map_err(|_| self.error(format!("GET {path}: no answer within {CALL_TIMEOUT:?}")))??;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            return Err(self.error(format!("GET {path}: {status}: {}", text.trim())));
        }
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| self.error(format!("GET {path}: unexpected answer: {e}")))
    }

    async fn get(&self, path: &str) -> Result<(StatusCode, Bytes), DockerApiError> {
        let stream = UnixStream::connect(&self.socket).await.map_err(|e| {
            self.error(format!(
                "cannot connect: {e} (is dockerd running? the socket is set by --docker-socket)"
            ))
        })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.error(format!("HTTP handshake failed: {e}")))?;
        // Drives the connection until the response is read; it ends with the sender.
        tokio::spawn(connection);
        let request = Request::get(path)
            .header(hyper::header::HOST, "docker")
            .body(Empty::<Bytes>::new())
            .map_err(|e| self.error(format!("GET {path}: {e}")))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| self.error(format!("GET {path}: {e}")))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| self.error(format!("GET {path}: reading the answer: {e}")))?
            .to_bytes();
        Ok((status, body))
    }

    fn error(&self, message: String) -> DockerApiError {
        DockerApiError {
            socket: self.socket.display().to_string(),
            message,
        }
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_are_percent_encoded() {
        assert_eq!(encode_component("abc-1._~"), "abc-1._~");
        assert_eq!(
            encode_component(r#"{"name":["^/x$"]}"#),
            "%7B%22name%22%3A%5B%22%5E%2Fx%24%22%5D%7D"
        );
    }

    #[test]
    fn network_inspect_parses() {
        let json = r#"{"Name":"spynet","Id":"d38e","Containers":{"ep-7113":{"Name":"eager","EndpointID":"7113","MacAddress":"","IPv4Address":"10.250.0.1/32","IPv6Address":""}},"Options":{}}"#;
        let network: Network = serde_json::from_str(json).unwrap();
        assert_eq!(network.name, "spynet");
        let containers = network.containers.unwrap();
        assert_eq!(containers["ep-7113"].name, "eager");
        assert_eq!(containers["ep-7113"].endpoint_id, "7113");
    }
}
