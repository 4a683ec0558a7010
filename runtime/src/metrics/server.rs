//! The HTTP server of `/metrics`, `/healthz` and `/readyz`: hyper on a
//! tokio runtime of its own thread, every connection its own task, so
//! idle or slow clients never hold up the kubelet's probes.
//!
//! Contract:
//! - one request per connection (hyper answers `Connection: close`): a
//!   connection costs a task only while its request is being read;
//! - a request's head must arrive within [`HEADER_TIMEOUT`] and the whole
//!   exchange end within [`CONNECTION_TIMEOUT`], else the connection is
//!   closed; at most [`MAX_CONNECTIONS`] connections are
//!   served at once, further ones wait in the kernel's accept queue;
//! - `/metrics` is rendered on tokio's blocking pool (it reads pinned
//!   maps), `/healthz` and `/readyz` on the connection's task;
//! - nothing a client sends makes it panic.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};

use super::Telemetry;

/// How long a client has to send a request's head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection may last at all (a client that never sends a
/// byte included).
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 1024;

const TEXT: &str = "text/plain; charset=utf-8";

/// The answer to `method path` with the request's `Accept` header: status,
/// content type, body.
async fn respond(
    telemetry: &Arc<Telemetry>,
    method: &Method,
    path: &str,
    accept: &str,
) -> (StatusCode, &'static str, String) {
    if method != Method::GET && method != Method::HEAD {
        return (StatusCode::METHOD_NOT_ALLOWED, TEXT, "only GET and HEAD\n".into());
    }
    match path {
        "/metrics" => {
            let openmetrics = accept.contains("application/openmetrics-text");
            let t = telemetry.clone();
            match tokio::task::spawn_blocking(move || t.render(openmetrics)).await {
                Ok(body) => {
                    let content_type = if openmetrics {
                        "application/openmetrics-text; version=1.0.0; charset=utf-8"
                    } else {
                        prometheus_client::encoding::prometheus_text::CONTENT_TYPE
                    };
                    (StatusCode::OK, content_type, body)
                }
                Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, TEXT, format!("rendering the metrics failed: {e}\n")),
            }
        }
        "/healthz" if telemetry.healthy() => (StatusCode::OK, TEXT, "ok\n".into()),
        "/healthz" => (StatusCode::SERVICE_UNAVAILABLE, TEXT, "the agent loop is stuck\n".into()),
        "/readyz" => match telemetry.readiness() {
            Ok(()) => (StatusCode::OK, TEXT, "ok\n".into()),
            Err(why) => (StatusCode::SERVICE_UNAVAILABLE, TEXT, format!("{why}\n")),
        },
        _ => (StatusCode::NOT_FOUND, TEXT, "not found\n".into()),
    }
}

async fn handle(
    telemetry: Arc<Telemetry>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let accept = req.headers().get(ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let (status, content_type, body) = respond(&telemetry, req.method(), req.uri().path(), accept).await;
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(response)
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` from a thread of
/// its own (bound in the caller's network namespace, which the thread
/// inherits). Returns the bound address (port 0 picks one) and the thread.
///
/// # Errors
/// The address cannot be bound, or the thread's runtime cannot start.
pub fn serve(addr: SocketAddr, telemetry: Arc<Telemetry>) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let thread = std::thread::Builder::new().name("egret-metrics".into()).spawn(move || {
        rt.block_on(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
            let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
            loop {
                let Ok(permit) = slots.clone().acquire_owned().await else { return };
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    // out of file descriptors and the like: back off, go on
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let telemetry = telemetry.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| handle(telemetry.clone(), req));
                    let connection = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(HEADER_TIMEOUT)
                        .keep_alive(false)
                        .serve_connection(TokioIo::new(stream), service);
                    let _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection).await;
                    drop(permit);
                });
            }
        });
    })?;
    Ok((bound, thread))
}
