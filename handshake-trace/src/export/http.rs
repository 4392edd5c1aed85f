//! The agent's HTTP endpoints (hyper, on the agent's tokio runtime): /metrics,
//! /healthz, /readyz, /top. /metrics is prometheus-client's OpenMetrics exposition
//! for scrapers that ask for it (Prometheus does); for anyone else (curl, promtool,
//! Prometheus text-format consumers) the same families in the Prometheus text format.
use std::{
    convert::Infallible,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
};

use anyhow::Result;
use http_body_util::Full;
use hyper::{body::Bytes, header, server::conn::http1, service::service_fn, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use super::top_clients::TopClients;
use crate::support::clock::monotonic_ns;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the endpoints serve.
pub struct State {
    pub registry: Registry,
    /// Set once the programs are attached (/readyz).
    pub ready: AtomicBool,
    pub top: Arc<Mutex<TopClients>>,
    /// The hosts nearest their server's max_connect_errors (/hosts), as of the last second.
    pub hosts: Mutex<super::hosts::HostsReport>,
}

/// Serve `listener` until the runtime stops (one task per connection).
pub async fn serve(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors, most likely: do not spin.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(respond(&req, &state)) }
            });
            // A client that goes away mid-request is its own business.
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

fn respond<B>(req: &Request<B>, state: &State) -> Response<Full<Bytes>> {
    const TEXT: &str = "text/plain; charset=utf-8";
    if req.method() != hyper::Method::GET {
        return reply(StatusCode::METHOD_NOT_ALLOWED, TEXT, "GET only\n");
    }
    match req.uri().path() {
        "/metrics" => {
            let openmetrics = req
                .headers()
                .get_all(header::ACCEPT)
                .iter()
                .any(|v| v.to_str().is_ok_and(|v| v.contains("application/openmetrics-text")));
            match exposition(&state.registry, openmetrics) {
                Ok(body) => reply(StatusCode::OK, if openmetrics { OPENMETRICS } else { PROMETHEUS_TEXT }, body),
                Err(_) => reply(StatusCode::INTERNAL_SERVER_ERROR, TEXT, "encoding failed\n"),
            }
        }
        "/healthz" => reply(StatusCode::OK, TEXT, "ok\n"),
        "/readyz" if state.ready.load(Ordering::Relaxed) => reply(StatusCode::OK, TEXT, "ready\n"),
        "/readyz" => reply(StatusCode::SERVICE_UNAVAILABLE, TEXT, "not attached yet\n"),
        "/top" => {
            let report = match state.top.lock() {
                Ok(mut top) => top.report(monotonic_ns()),
                Err(_) => return reply(StatusCode::INTERNAL_SERVER_ERROR, TEXT, "top-K unavailable\n"),
            };
            match serde_json::to_vec(&report) {
                Ok(body) => reply(StatusCode::OK, "application/json", body),
                Err(_) => reply(StatusCode::INTERNAL_SERVER_ERROR, TEXT, "encoding failed\n"),
            }
        }
        "/hosts" => hosts_reply(state),
        _ => reply(StatusCode::NOT_FOUND, TEXT, "endpoints: /metrics /healthz /readyz /top /hosts\n"),
    }
}

/// /hosts: the client hosts nearest their server's max_connect_errors, as JSON.
fn hosts_reply(state: &State) -> Response<Full<Bytes>> {
    const TEXT: &str = "text/plain; charset=utf-8";
    let body = match state.hosts.lock() {
        Ok(report) => serde_json::to_vec(&*report),
        Err(_) => return reply(StatusCode::INTERNAL_SERVER_ERROR, TEXT, "hosts unavailable\n"),
    };
    match body {
        Ok(body) => reply(StatusCode::OK, "application/json", body),
        Err(_) => reply(StatusCode::INTERNAL_SERVER_ERROR, TEXT, "encoding failed\n"),
    }
}

/// The registry's exposition: OpenMetrics as prometheus-client encodes it, or the
/// Prometheus text format (0.0.4), which differs only in three ways: a counter's HELP
/// and TYPE lines name it with its `_total` suffix, and there are no `# UNIT` and
/// `# EOF` lines. Every sample line is prometheus-client's own.
pub fn exposition(registry: &Registry, openmetrics: bool) -> Result<String> {
    let mut om = String::new();
    prometheus_client::encoding::text::encode(&mut om, registry)?;
    if openmetrics {
        return Ok(om);
    }
    let counters: std::collections::HashSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(om.len());
    for line in om.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "].into_iter().find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta.and_then(|(p, rest)| rest.split_once(' ').map(|(name, tail)| (p, name, tail))) {
            Some((p, name, tail)) if counters.contains(name) => {
                text.push_str(p);
                text.push_str(name);
                text.push_str("_total ");
                text.push_str(tail);
            }
            _ => text.push_str(line),
        }
        text.push('\n');
    }
    Ok(text)
}
