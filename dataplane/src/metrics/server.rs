//! The metrics endpoint: `GET /metrics` in Prometheus' text format (OpenMetrics), on
//! `--metrics-address` (localhost by default). A way into the agent, so bounded: at most
//! `MAX_CONNECTIONS` at once (more wait in the listen queue), one request each (no
//! keep-alive), headers of at most `MAX_REQUEST_BYTES` within `HEADER_TIMEOUT`, the
//! whole exchange within `CONNECTION_TIMEOUT`, and one scrape read from the maps at a
//! time. It only reads: nothing a caller sends changes the node.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, Result};
use http_body_util::Full;
use hyper::{body::Bytes, header, server::conn::http1, service::service_fn, Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::sync::Semaphore;

use super::collector::NodeCollector;

pub const MAX_CONNECTIONS: usize = 16;
/// hyper's smallest read buffer: a request line and headers longer than this are refused.
pub const MAX_REQUEST_BYTES: usize = 8192;
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Where the metrics are served (`--metrics-address`): an address, or nowhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricsAddress(pub Option<SocketAddr>);

/// `ADDRESS:PORT` or `off`.
pub fn parse_address(s: &str) -> Result<MetricsAddress, String> {
    if s == "off" {
        return Ok(MetricsAddress(None));
    }
    s.parse().map(|a| MetricsAddress(Some(a))).map_err(|e| format!("{s:?} is neither ADDRESS:PORT nor off: {e}"))
}

/// Binds `address` and serves the agent's metrics and `collector`'s on a thread of its
/// own; returns the address bound (port 0 picks one).
pub fn serve(address: SocketAddr, collector: NodeCollector) -> Result<SocketAddr> {
    let mut registry = Registry::default();
    super::global().register(&mut registry);
    registry.register_collector(Box::new(collector));
    let registry = Arc::new(Mutex::new(registry));
    let listener =
        std::net::TcpListener::bind(address).with_context(|| format!("binding the metrics address {address}"))?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::spawn(move || {
        if let Err(e) = runtime.block_on(accept_loop(listener, registry)) {
            tracing::error!("metrics server stopped: {e:#}");
        }
    });
    tracing::info!(%bound, "serving metrics");
    Ok(bound)
}

async fn accept_loop(listener: std::net::TcpListener, registry: Arc<Mutex<Registry>>) -> Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = slots.clone().acquire_owned().await?;
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("accepting a metrics connection: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| answer(req, registry.clone()));
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_REQUEST_BYTES)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_TIMEOUT, connection).await {
                Ok(Err(e)) => tracing::debug!("metrics connection: {e}"),
                Err(_) => tracing::debug!("metrics connection closed after {CONNECTION_TIMEOUT:?}"),
                Ok(Ok(())) => {}
            }
            drop(permit);
        });
    }
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, content_type.parse().expect("a valid header value"));
    response
}

async fn answer(
    req: Request<hyper::body::Incoming>,
    registry: Arc<Mutex<Registry>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::GET {
        return Ok(reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "only GET\n".into()));
    }
    if req.uri().path() != "/metrics" {
        return Ok(reply(StatusCode::NOT_FOUND, "text/plain", "the metrics are at /metrics\n".into()));
    }
    // Reading the maps blocks; one scrape at a time (the lock).
    let encoded = tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry.lock().unwrap()).map(|()| text)
    })
    .await;
    Ok(match encoded {
        Ok(Ok(text)) => reply(StatusCode::OK, CONTENT_TYPE, text),
        _ => reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", "encoding the metrics failed\n".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_is_an_address_or_off() {
        assert_eq!(parse_address("off"), Ok(MetricsAddress(None)));
        assert_eq!(parse_address("127.0.0.1:9101"), Ok(MetricsAddress(Some("127.0.0.1:9101".parse().unwrap()))));
        assert!(parse_address("localhost").is_err());
    }
}
