//! HTTP/1.1 for `/healthz`, `/readyz` and `/metrics` (hyper, as the Docker plugin's
//! server), on a thread with a runtime of its own: a stuck agent loop, or a busy agent
//! runtime, cannot keep a probe from being answered, and a scrape's map reads never run on
//! the agent's workers.

use std::convert::Infallible;
use std::io;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ACCEPT, ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::oneshot;

use super::Telemetry;
use super::exposition::{Format, Scrape, render};
use super::health::{liveness, readiness};
use super::listen::{Listener, Routes};
use super::sample::Sampler;
use crate::log;

/// A client gets this long to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

const TEXT: &str = "text/plain; charset=utf-8";

/// What every connection's requests are answered from.
struct Shared {
    telemetry: Arc<Telemetry>,
    /// `None` when no listener serves `/metrics`.
    sampler: Mutex<Option<Sampler>>,
}

/// The running server; stopped when dropped.
pub struct TelemetryServer {
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Serves `listeners` on a thread of their own. `sampler` reads the kernel side for
/// `/metrics`.
pub fn start(
    listeners: Vec<Listener>,
    telemetry: Arc<Telemetry>,
    sampler: Option<Sampler>,
) -> io::Result<TelemetryServer> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let shared = Arc::new(Shared {
        telemetry,
        sampler: Mutex::new(sampler),
    });
    let (shutdown, stopped) = oneshot::channel::<()>();
    // Registered with the runtime here, so that errors surface before the thread starts.
    let mut sockets = Vec::new();
    for listener in listeners {
        let socket = {
            let _entered = runtime.enter();
            tokio::net::TcpListener::from_std(listener.socket)?
        };
        let address = socket.local_addr()?;
        let paths = match listener.routes {
            Routes {
                health: true,
                metrics: true,
            } => "/healthz /readyz /metrics",
            Routes { health: true, .. } => "/healthz /readyz",
            _ => "/metrics",
        };
        log::info(
            "serving health and metrics",
            &[("address", &address), ("paths", &paths)],
        );
        sockets.push((socket, listener.routes));
    }
    let thread = std::thread::Builder::new()
        .name("palisade-telemetry".to_string())
        .spawn(move || {
            runtime.block_on(async move {
                for (socket, routes) in sockets {
                    tokio::spawn(accept(socket, routes, Arc::clone(&shared)));
                }
                let _ = stopped.await;
            });
        })?;
    Ok(TelemetryServer {
        shutdown: Some(shutdown),
        thread: Some(thread),
    })
}

impl Drop for TelemetryServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept(socket: tokio::net::TcpListener, routes: Routes, shared: Arc<Shared>) {
    loop {
        match socket.accept().await {
            Ok((stream, _)) => {
                let shared = Arc::clone(&shared);
                let service = service_fn(move |request| {
                    let shared = Arc::clone(&shared);
                    async move { Ok::<_, Infallible>(answer(&request, routes, shared).await) }
                });
                let connection = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service);
                tokio::spawn(async move {
                    // A client that goes away mid-request is its own business.
                    let _ = connection.await;
                });
            }
            Err(e) => {
                log::warn("health and metrics: accept failed", &[("error", &e)]);
                // Out of file descriptors and the like: do not spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn answer(
    request: &Request<Incoming>,
    routes: Routes,
    shared: Arc<Shared>,
) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT,
            "only GET and HEAD\n".into(),
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match request.uri().path() {
        "/healthz" if routes.health => {
            let (live, why) = liveness(shared.telemetry.heartbeat());
            reply(judged(live), TEXT, why + "\n")
        }
        "/readyz" if routes.health => {
            let (ready, why) = readiness(&shared.telemetry.status());
            reply(judged(ready), TEXT, why.join("\n") + "\n")
        }
        "/metrics" if routes.metrics => {
            let accept = request.headers().get(ACCEPT).and_then(|a| a.to_str().ok());
            let format = Format::negotiate(accept);
            // Off the server's thread: a census or a large exposition must not hold up a
            // health probe.
            tokio::task::spawn_blocking(move || metrics(&shared, format))
                .await
                .unwrap_or_else(|e| {
                    let body = format!("cannot collect the metrics: {e}\n");
                    reply(StatusCode::INTERNAL_SERVER_ERROR, TEXT, body)
                })
        }
        _ => {
            let mut paths = Vec::new();
            if routes.health {
                paths.extend(["/healthz", "/readyz"]);
            }
            if routes.metrics {
                paths.push("/metrics");
            }
            let body = format!("not found; this address serves {}\n", paths.join(" "));
            reply(StatusCode::NOT_FOUND, TEXT, body)
        }
    }
}

fn judged(good: bool) -> StatusCode {
    if good {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

fn metrics(shared: &Shared, format: Format) -> Response<Full<Bytes>> {
    let status = shared.telemetry.status();
    let mut sampler = shared.sampler.lock().unwrap_or_else(|p| p.into_inner());
    let Some(sampler) = sampler.as_mut() else {
        return reply(StatusCode::NOT_FOUND, TEXT, "metrics are off\n".into());
    };
    let rules = status.enforcement.rules.iter().map(|r| r.index);
    let kernel = match sampler.sample(rules) {
        Ok(kernel) => kernel,
        Err(e) => {
            log::warn("cannot read the counters for /metrics", &[("error", &e)]);
            let body = format!("cannot read the counters: {e}\n");
            return reply(StatusCode::INTERNAL_SERVER_ERROR, TEXT, body);
        }
    };
    let scrape = Scrape { status, kernel };
    match render(format, scrape, shared.telemetry.latencies()) {
        Ok(body) => reply(StatusCode::OK, format.content_type(), body),
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            TEXT,
            format!("cannot encode the metrics: {e}\n"),
        ),
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream};

    use std::time::Instant;

    use super::*;
    use crate::telemetry::health::Heartbeat;
    use crate::telemetry::listen::{ListenAddress, bind};

    /// One request over a fresh connection: the status code and the body.
    fn request(address: SocketAddr, method: &str, path: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(address).unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: palisade\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let status = response[9..12].parse().unwrap();
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }

    /// A server whose agent loop last beat `silent` ago, with a 30 s timeout.
    fn serve(silent: Duration, metrics: bool) -> (TelemetryServer, SocketAddr, Arc<Telemetry>) {
        let at: ListenAddress = "127.0.0.1:0".parse().unwrap();
        let listeners = bind(at, if metrics { at } else { ListenAddress::Off }).unwrap();
        let address = listeners[0].socket.local_addr().unwrap();
        let heartbeat = Heartbeat::beaten_at(Instant::now() - silent, Duration::from_secs(30));
        let telemetry = Arc::new(Telemetry::with_heartbeat(heartbeat));
        let server = start(listeners, Arc::clone(&telemetry), None).unwrap();
        (server, address, telemetry)
    }

    #[test]
    fn healthz_is_503_while_the_loop_is_silent_and_200_once_it_beats() {
        let (_server, address, telemetry) = serve(Duration::from_secs(60), false);
        let (status, body) = request(address, "GET", "/healthz");
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("has not run for"), "{body}");
        telemetry.beat();
        let (status, body) = request(address, "GET", "/healthz");
        assert_eq!(status, 200, "{body}");
        assert!(body.starts_with("ok: "), "{body}");
    }

    #[test]
    fn readyz_is_503_until_the_view_is_in_force() {
        let (_server, address, telemetry) = serve(Duration::ZERO, false);
        let (status, body) = request(address, "GET", "/readyz");
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("no view of the datastore yet"), "{body}");
        telemetry.datastore_in_sync(4);
        assert_eq!(request(address, "GET", "/readyz").0, 503);
        telemetry.enforcement(crate::telemetry::status::Enforcement {
            policy_revision: Some(4),
            ..Default::default()
        });
        let (status, body) = request(address, "GET", "/readyz");
        assert_eq!(status, 200, "{body}");
        assert_eq!(request(address, "HEAD", "/readyz").0, 200);
    }

    #[test]
    fn other_paths_methods_and_routes_are_refused() {
        let (_server, address, _telemetry) = serve(Duration::ZERO, false);
        let (status, body) = request(address, "GET", "/metrics");
        assert_eq!(status, 404, "{body}");
        assert!(body.contains("serves /healthz /readyz"), "{body}");
        assert_eq!(request(address, "POST", "/healthz").0, 405);
        assert_eq!(request(address, "GET", "/").0, 404);
    }

    #[test]
    fn a_server_without_counters_says_metrics_are_off() {
        let (_server, address, _telemetry) = serve(Duration::ZERO, true);
        assert_eq!(request(address, "GET", "/healthz").0, 200);
        let (status, body) = request(address, "GET", "/metrics");
        assert_eq!(status, 404, "{body}");
    }
}
