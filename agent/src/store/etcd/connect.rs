//! Connecting to etcd (plain or TLS), bounding every call in time, and turning the client's
//! nested errors into one line that says what failed.

use std::future::Future;
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

use super::config::EtcdConfig;
use super::layout;
use crate::store::StoreError;

/// How long one request may take. etcd answers in milliseconds; a request that waits this
/// long is waiting for a connection that does not come.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Responses can hold the whole store (a list); the client's default limit is 4 MiB.
pub const MAX_MESSAGE_BYTES: usize = 256 << 20;

/// Connects and checks that etcd answers (and, with TLS, that both sides accept each
/// other's certificates), so a wrong address or certificate fails here, clearly.
pub async fn connect(config: &EtcdConfig) -> Result<Client, StoreError> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(3))
        .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
        .with_keep_alive_while_idle(true);
    if let Some(tls) = &config.tls {
        let mut tls_options = TlsOptions::new()
            .ca_certificate(Certificate::from_pem(read_pem("--etcd-ca", &tls.ca)?));
        if let Some((cert, key)) = &tls.identity {
            tls_options = tls_options.identity(Identity::from_pem(
                read_pem("--etcd-cert", cert)?,
                read_pem("--etcd-key", key)?,
            ));
        }
        options = options.with_tls(tls_options);
    }
    let client = Client::connect(config.endpoint_urls(), Some(options))
        .await
        .map_err(|e| unavailable(config, "cannot connect", &e))?;
    let mut kv = client.kv_client();
    call(config, "cannot read from it", kv.get(layout::READY, None)).await?;
    Ok(client)
}

fn read_pem(flag: &str, path: &std::path::Path) -> Result<Vec<u8>, StoreError> {
    let pem = std::fs::read(path).map_err(|e| {
        StoreError::Unavailable(format!("{flag} {}: cannot read it: {e}", path.display()))
    })?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN ") {
        return Err(StoreError::Unavailable(format!(
            "{flag} {}: not a PEM file",
            path.display()
        )));
    }
    Ok(pem)
}

/// Runs one etcd request with [`CALL_TIMEOUT`]; errors become [`StoreError::Unavailable`]
/// naming the cluster and `what` was being done.
pub async fn call<T>(
    config: &EtcdConfig,
    what: &str,
    request: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(CALL_TIMEOUT, request).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(e)) => Err(unavailable(config, what, &e)),
        Err(_) => Err(timed_out(config, what)),
    }
}

/// A request that got no answer within [`CALL_TIMEOUT`].
pub fn timed_out(config: &EtcdConfig, what: &str) -> StoreError {
    StoreError::Unavailable(format!(
        "{}: {what}: no answer within {}s{}",
        config.describe(),
        CALL_TIMEOUT.as_secs(),
        reachability_hint(config)
    ))
}

pub fn unavailable(config: &EtcdConfig, what: &str, e: &etcd_client::Error) -> StoreError {
    StoreError::Unavailable(format!(
        "{}: {what}: {}{}",
        config.describe(),
        describe(e),
        tls_hint(config, e)
    ))
}

/// One line for an etcd client error: a gRPC status by its message and causes (its own
/// `Display` prints the causes' debug form), anything else by its chain.
pub fn describe(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(status) => {
            let mut parts = Vec::new();
            if !status.message().is_empty() {
                parts.push(status.message().to_string());
            }
            let mut source = std::error::Error::source(status);
            while let Some(cause) = source {
                parts.push(cause.to_string());
                source = cause.source();
            }
            if parts.is_empty() {
                parts.push(format!("{:?}", status.code()));
            }
            dedup_join(parts)
        }
        other => error_chain(other),
    }
}

fn dedup_join(parts: Vec<String>) -> String {
    let mut kept: Vec<String> = Vec::new();
    for part in parts {
        if !kept.iter().any(|k| k.contains(&part)) {
            kept.push(part);
        }
    }
    kept.join(": ")
}

/// Whether etcd refused a request because the revision it names was compacted away
/// (etcd's `ErrGRPCCompacted`).
pub fn is_compacted(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(status)
        if status.message().contains("required revision has been compacted"))
}

/// The error and its causes, each said once: `transport error: ... : Connection refused`.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut source = e.source();
    while let Some(cause) = source {
        parts.push(cause.to_string());
        source = cause.source();
    }
    dedup_join(parts)
}

fn tls_hint(config: &EtcdConfig, e: &etcd_client::Error) -> &'static str {
    let text = describe(e).to_ascii_lowercase();
    let Some(tls) = &config.tls else {
        let broken = ["broken pipe", "connection closed", "connection reset"]
            .iter()
            .any(|w| text.contains(w));
        return if broken {
            " (etcd closed the connection: if it serves TLS, see --etcd-ca)"
        } else {
            ""
        };
    };
    // With TLS 1.3 a server that rejects the client's certificate (or its absence) only
    // says so after the client thinks the handshake is done: the client sees its first
    // request's connection break, not a certificate error. Only "nobody listens" rules
    // TLS out.
    if text.contains("connection refused") {
        return "";
    }
    let server_certificate = [
        "unknownissuer",
        "invalid peer certificate",
        "certificate verify",
    ]
    .iter()
    .any(|w| text.contains(w));
    match (server_certificate, tls.identity.is_some()) {
        (true, _) => {
            " (TLS failed: --etcd-ca did not sign etcd's certificate, or it is not for this address)"
        }
        (false, false) => {
            " (TLS failed: etcd may require a client certificate, see --etcd-cert and --etcd-key)"
        }
        (false, true) => {
            " (TLS failed: check that --etcd-ca signed etcd's certificate and that etcd trusts the client certificate)"
        }
    }
}

/// Why a request got no answer: a plain TCP connection attempt tells "refused" (nothing
/// listens) from a silent network.
fn reachability_hint(config: &EtcdConfig) -> String {
    let mut problems = Vec::new();
    for endpoint in &config.endpoints {
        let addrs = match std::net::ToSocketAddrs::to_socket_addrs(endpoint.as_str()) {
            Ok(addrs) => addrs.collect::<Vec<_>>(),
            Err(e) => {
                problems.push(format!("{endpoint}: {e}"));
                continue;
            }
        };
        for addr in addrs {
            if let Err(e) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500))
            {
                problems.push(format!("{endpoint}: {e}"));
            }
        }
    }
    if problems.is_empty() {
        String::new()
    } else {
        format!(" ({})", problems.join("; "))
    }
}
