//! HTTP/1.1 on the plugin socket: each POST `/<Interface>.<Method>` is answered by
//! [`Plugin::handle`].

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::UnixListener;

use super::plugin::Plugin;
use crate::log;

/// Docker's requests are a few hundred bytes; anything near this is not Docker.
const MAX_BODY: usize = 1 << 20;

/// How long requests in flight may take to finish once the plugin is told to stop.
const DRAIN: Duration = Duration::from_secs(10);

/// The content type of the plugin protocol's replies.
const CONTENT_TYPE_PLUGIN: &str = "application/vnd.docker.plugins.v1+json";

/// Serves connections until `shutdown` completes, then lets requests in flight finish.
pub async fn run(listener: &UnixListener, plugin: Arc<Plugin>, shutdown: impl Future<Output = ()>) {
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let plugin = Arc::clone(&plugin);
                    let service = service_fn(move |request| answer(Arc::clone(&plugin), request));
                    let connection = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service);
                    let connection = graceful.watch(connection);
                    tokio::spawn(async move {
                        if let Err(e) = connection.await {
                            log::warn("docker plugin: connection failed", &[("error", &e)]);
                        }
                    });
                }
                Err(e) => {
                    log::warn("docker plugin: accept failed", &[("error", &e)]);
                    // Out of file descriptors and the like: do not spin.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            () = &mut shutdown => break,
        }
    }
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        log::warn(
            "docker plugin: requests still running at shutdown were cut off",
            &[],
        );
    }
}

async fn answer(
    plugin: Arc<Plugin>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.method() != Method::POST {
        return Ok(reply(
            StatusCode::METHOD_NOT_ALLOWED,
            br#"{"Err":"palisade: the plugin protocol uses POST"}"#.to_vec(),
        ));
    }
    let path = request.uri().path().to_string();
    let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            let message =
                serde_json::json!({ "Err": format!("palisade: cannot read the request: {e}") });
            return Ok(reply(
                StatusCode::BAD_REQUEST,
                message.to_string().into_bytes(),
            ));
        }
    };
    let answer = plugin.handle(&path, &body).await;
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    Ok(reply(status, answer.body))
}

fn reply(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(CONTENT_TYPE_PLUGIN),
    );
    response
}
