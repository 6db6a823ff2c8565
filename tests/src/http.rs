//! Plain HTTP/1.1 GETs, through hyper's client: the agent's health and metrics endpoints,
//! Prometheus' HTTP API.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;

/// An answer, its body as text.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// How long one request may take; a bound for a broken server, not a speed requirement.
const REQUEST_PATIENCE: Duration = Duration::from_secs(20);

/// GET `path` (with its query) from `address`, with `headers`; `Err` if there is no answer
/// (nothing listens yet, say).
pub fn try_get(
    address: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Response, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        tokio::time::timeout(REQUEST_PATIENCE, exchange(address, path, headers))
            .await
            .map_err(|_| format!("GET {path} from {address}: no answer in {REQUEST_PATIENCE:?}"))?
    })
}

/// [`try_get`], panicking if there is no answer.
pub fn get(address: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Response {
    try_get(address, path, headers).unwrap_or_else(|e| panic!("{e}"))
}

async fn exchange(
    address: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Response, String> {
    let failed =
        |what: &str, e: &dyn std::fmt::Display| format!("GET {path} from {address}: {what}: {e}");
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| failed("connect", &e))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| failed("handshake", &e))?;
    tokio::spawn(connection);
    let mut request = Request::get(path).header(HOST, address.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|e| failed("request", &e))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| failed("send", &e))?;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| failed("body", &e))?
        .to_bytes();
    Ok(Response {
        status,
        content_type,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}
