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
    let client = client(config).await?;
    match check(config, &client).await {
        Ok(()) => Ok(client),
        Err(Unanswered::Outage(e) | Unanswered::Refused(e)) => Err(e),
    }
}

/// Like [`connect`], but an etcd that is down (nothing accepts a connection at any
/// endpoint, what does gives no answer in time, or etcd says it cannot serve yet) is not
/// an error: the client is returned
/// with the reason, and it connects by itself once etcd is back. Configuration errors stay
/// errors: unreadable certificate files, and an etcd that answers but refuses the
/// conversation (TLS, client certificates), which retrying would not change.
pub async fn connect_even_if_down(
    config: &EtcdConfig,
) -> Result<(Client, Option<StoreError>), StoreError> {
    let client = client(config).await?;
    match check(config, &client).await {
        Ok(()) => Ok((client, None)),
        Err(Unanswered::Outage(e)) => Ok((client, Some(e))),
        Err(Unanswered::Refused(e)) => Err(e),
    }
}

/// Why etcd did not answer the first request.
enum Unanswered {
    /// Nothing listens, nothing answered in time, or etcd said it cannot serve yet: etcd
    /// is down or not ready.
    Outage(StoreError),
    /// Something listens and broke off the conversation: TLS or certificates disagree, or
    /// it is not etcd.
    Refused(StoreError),
}

/// The client, with TLS when configured. It dials lazily: nothing is sent yet.
async fn client(config: &EtcdConfig) -> Result<Client, StoreError> {
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
    Client::connect(config.endpoint_urls(), Some(options))
        .await
        .map_err(|e| unavailable(config, "cannot connect", &e))
}

/// One read of `/calico/v1/Ready`, which every etcd that serves palisade answers.
async fn check(config: &EtcdConfig, client: &Client) -> Result<(), Unanswered> {
    const WHAT: &str = "cannot read from it";
    // Nobody listening is known at once from TCP; the etcd client would only time out.
    let unreachable = unreachable_endpoints(config);
    if unreachable.len() == config.endpoints.len() {
        return Err(Unanswered::Outage(StoreError::Unavailable(format!(
            "{}: {WHAT}: {}",
            config.describe(),
            unreachable.join("; ")
        ))));
    }
    let mut kv = client.kv_client();
    match tokio::time::timeout(CALL_TIMEOUT, kv.get(layout::READY, None)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e))
            if cluster_not_ready(&e)
                || unreachable_endpoints(config).len() == config.endpoints.len() =>
        {
            // etcd answered that it cannot serve yet (no leader, ...), or it went away
            // between the two looks: both pass.
            Err(Unanswered::Outage(unavailable(config, WHAT, &e)))
        }
        Ok(Err(e)) => Err(Unanswered::Refused(unavailable(config, WHAT, &e))),
        Err(_) => Err(Unanswered::Outage(timed_out(config, WHAT))),
    }
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

/// Whether etcd itself answered that it cannot serve the request now (no leader, too many
/// requests, ...), as opposed to refusing this client (authentication) or something else
/// answering (TLS, not etcd).
fn cluster_not_ready(e: &etcd_client::Error) -> bool {
    let etcd_client::Error::GRpcStatus(status) = e else {
        return false;
    };
    let message = status.message();
    let refuses_client = ["permission denied", "user name", "auth"]
        .iter()
        .any(|w| message.contains(w));
    message.starts_with("etcdserver:") && !refuses_client
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
    let problems = unreachable_endpoints(config);
    if problems.is_empty() {
        String::new()
    } else {
        format!(" ({})", problems.join("; "))
    }
}

/// The endpoints that accept no TCP connection, each with the reason.
fn unreachable_endpoints(config: &EtcdConfig) -> Vec<String> {
    let mut problems = Vec::new();
    for endpoint in &config.endpoints {
        let addrs = match std::net::ToSocketAddrs::to_socket_addrs(endpoint.as_str()) {
            Ok(addrs) => addrs.collect::<Vec<_>>(),
            Err(e) => {
                problems.push(format!("{endpoint}: {e}"));
                continue;
            }
        };
        let mut failures = Vec::new();
        for addr in &addrs {
            match std::net::TcpStream::connect_timeout(addr, Duration::from_millis(500)) {
                Ok(_) => break,
                Err(e) => failures.push(e),
            }
        }
        if failures.len() == addrs.len() {
            let reason = failures
                .first()
                .map_or_else(|| "no address".to_string(), ToString::to_string);
            problems.push(format!("{endpoint}: {reason}"));
        }
    }
    problems
}
