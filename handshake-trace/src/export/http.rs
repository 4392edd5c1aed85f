//! The agent's HTTP endpoints (hyper, on the agent's tokio runtime): /metrics,
//! /healthz, /readyz, /top. /metrics is prometheus-client's OpenMetrics exposition
//! for scrapers that ask for it (Prometheus does); for anyone else (curl, promtool,
//! Prometheus text-format consumers) the same families in the Prometheus text format.
//!
//! Anyone who can reach the port is a client, so nothing a client does may hold the
//! agent's file descriptors or memory: at most `max_connections` are open (past it the
//! oldest connection that never sent a whole request is closed for the new one, else
//! the one idle longest; the new one is closed at once only when every open one had a
//! request within the last second; both counted), a
//! request's head must arrive within `header_timeout`, a connection with no request for
//! `idle_timeout` is closed, request heads are bounded by hyper's buffer and responses
//! by [`MAX_RESPONSE_BYTES`]; /metrics and /top are answered at most `--web-rate`
//! times a second (429 past it: encoding them takes the agent's one thread). With a web config, basic authentication (all endpoints but
//! /healthz and /readyz, which say nothing) and TLS.
use std::{
    collections::VecDeque,
    convert::Infallible,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use anyhow::Result;
use http_body_util::Full;
use hyper::{body::Bytes, header, server::conn::http1, service::service_fn, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
    sync::Notify,
};

use super::{
    abnormal_log::TokenBucket,
    metrics::{HttpClose, Metrics},
    top_clients::TopClients,
    web_config::{Access, Authenticator, WebConfig},
};
use crate::support::clock::monotonic_ns;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The largest response served: the exposition and /top are bounded by design (fixed
/// label sets, at most `MAX_SERVERS` servers, K clients); this catches a bug instead of
/// sending it.
pub const MAX_RESPONSE_BYTES: usize = 8 << 20;
/// A connection that had a request this recently is not closed to make room.
const BUSY_NS: u64 = 1_000_000_000;
/// hyper's read buffer (and so a request head) at most.
const MAX_REQUEST_HEAD: usize = 16 << 10;

/// The server's bounds and access control (docs/agent.md).
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Connections open at once at most.
    pub max_connections: usize,
    /// A request's head (line and headers) must arrive within this.
    pub header_timeout: Duration,
    /// A connection with no new request for this long is closed.
    pub idle_timeout: Duration,
    /// Basic authentication and TLS (`--web-config`).
    pub web: Option<WebConfig>,
}


impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions { max_connections: 64, header_timeout: Duration::from_secs(10), idle_timeout: Duration::from_secs(60), web: None }
    }
}

/// What the endpoints serve.
pub struct State {
    pub registry: Registry,
    /// Set once the programs are attached (/readyz).
    pub ready: AtomicBool,
    pub top: Arc<Mutex<TopClients>>,
    /// The server's own counters (connections closed by its bounds, auth failures).
    pub metrics: Metrics,
    /// /metrics and /top answered a second at most (they cost the agent's one thread).
    pub rate: Mutex<TokenBucket>,
    /// The hosts nearest their server's max_connect_errors (/hosts), as of the last second.
    pub hosts: Mutex<super::hosts::HostsReport>,
}

/// One open connection, as the cap sees it.
struct Conn {
    id: u64,
    /// A whole request head arrived at least once (a real client, not an idle one).
    served: AtomicBool,
    /// When the last request (or the accept) was, on the monotonic clock.
    last_ns: AtomicU64,
    /// Close it (the cap chose it for a newer connection).
    close: Notify,
}

/// The open connections, oldest first.
#[derive(Default)]
struct Conns {
    open: Mutex<VecDeque<Arc<Conn>>>,
    next_id: AtomicU64,
}

impl Conns {
    /// Make room for a new connection and register it; None: refused (there are `max`
    /// open, and every one has had a request within [`BUSY_NS`]).
    fn admit(&self, max: usize, metrics: &Metrics) -> Option<Arc<Conn>> {
        let mut open = self.open.lock().ok()?;
        if open.len() >= max.max(1) {
            // The oldest connection that never sent a request; else the one idle longest,
            // if it has been for a while (a scraper's keep-alive connection reconnects).
            let now = monotonic_ns();
            let never_served = open.iter().position(|c| !c.served.load(Ordering::Relaxed));
            let idle_longest = || {
                let (i, c) = open.iter().enumerate().min_by_key(|(_, c)| c.last_ns.load(Ordering::Relaxed))?;
                (now.saturating_sub(c.last_ns.load(Ordering::Relaxed)) >= BUSY_NS).then_some(i)
            };
            match never_served.or_else(idle_longest) {
                Some(i) => {
                    if let Some(victim) = open.remove(i) {
                        victim.close.notify_one();
                        metrics.http_closed(HttpClose::Evicted);
                    }
                }
                None => {
                    metrics.http_closed(HttpClose::OverCap);
                    return None;
                }
            }
        }
        let conn = Arc::new(Conn {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            served: AtomicBool::new(false),
            last_ns: AtomicU64::new(monotonic_ns()),
            close: Notify::new(),
        });
        open.push_back(Arc::clone(&conn));
        metrics.http_connections.set(open.len() as i64);
        Some(conn)
    }

    fn remove(&self, id: u64, metrics: &Metrics) {
        if let Ok(mut open) = self.open.lock() {
            open.retain(|c| c.id != id);
            metrics.http_connections.set(open.len() as i64);
        }
    }
}

/// Completes when `conn` has had no request for `idle`.
async fn idle(conn: &Conn, idle: Duration) {
    let idle_ns = idle.as_nanos().min(u64::MAX as u128) as u64;
    loop {
        let deadline = conn.last_ns.load(Ordering::Relaxed).saturating_add(idle_ns);
        let now = monotonic_ns();
        if now >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_nanos(deadline - now)).await;
    }
}

/// Serve `listener` until the runtime stops (one task per connection).
pub async fn serve(listener: TcpListener, state: Arc<State>, opts: HttpOptions) {
    let conns = Arc::new(Conns::default());
    let auth = Arc::new(Authenticator::new(opts.web.as_ref().map(|w| w.users.clone()).unwrap_or_default()));
    let tls = opts.web.as_ref().and_then(|w| w.tls.clone()).map(tokio_rustls::TlsAcceptor::from);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors, most likely: do not spin.
            state.metrics.http_closed(HttpClose::AcceptFailed);
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        // Refused: closed at once (dropped here).
        let Some(conn) = conns.admit(opts.max_connections, &state.metrics) else { continue };
        let (state, conns, auth, tls, opts) = (Arc::clone(&state), Arc::clone(&conns), Arc::clone(&auth), tls.clone(), opts.clone());
        tokio::spawn(async move {
            let work = async {
                match tls {
                    Some(acceptor) => match tokio::time::timeout(opts.header_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => serve_connection(stream, &state, &conn, &auth, &opts).await,
                        _ => state.metrics.http_closed(HttpClose::TlsFailed),
                    },
                    None => serve_connection(stream, &state, &conn, &auth, &opts).await,
                }
            };
            tokio::select! {
                _ = work => {}
                _ = conn.close.notified() => {}
                _ = idle(&conn, opts.idle_timeout) => state.metrics.http_closed(HttpClose::Idle),
            }
            conns.remove(conn.id, &state.metrics);
        });
    }
}

/// One connection's requests, over TCP or TLS.
async fn serve_connection<I>(io: I, state: &Arc<State>, conn: &Arc<Conn>, auth: &Arc<Authenticator>, opts: &HttpOptions)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (state, conn, auth) = (Arc::clone(state), Arc::clone(conn), Arc::clone(auth));
    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
        conn.served.store(true, Ordering::Relaxed);
        conn.last_ns.store(monotonic_ns(), Ordering::Relaxed);
        let (state, auth) = (Arc::clone(&state), Arc::clone(&auth));
        async move {
            let open = matches!(req.uri().path(), "/healthz" | "/readyz");
            if !open && auth.enabled() {
                let authorization = req.headers().get(header::AUTHORIZATION).map(|v| v.as_bytes().to_vec());
                if auth.check(authorization.as_deref()).await == Access::Denied {
                    state.metrics.http_auth_failures.inc();
                    let mut r = reply(StatusCode::UNAUTHORIZED, "text/plain; charset=utf-8", "Unauthorized\n");
                    r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Basic realm=\"handshake-trace\""));
                    return Ok::<_, Infallible>(r);
                }
            }
            // Encoding the metrics or the top-K takes the agent's one thread: a client
            // asking in a loop must not starve the reader of the kernel's ring buffer.
            let costly = matches!(req.uri().path(), "/metrics" | "/top");
            if costly && !state.rate.lock().is_ok_and(|mut b| b.take(monotonic_ns())) {
                state.metrics.http_rate_limited.inc();
                return Ok::<_, Infallible>(reply(StatusCode::TOO_MANY_REQUESTS, "text/plain; charset=utf-8", "Too many requests\n"));
            }
            Ok::<_, Infallible>(bounded(respond(&req, &state)))
        }
    });
    // A client that goes away mid-request, or is too slow with its head, is its own business.
    let _ = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_timeout)
        .max_buf_size(MAX_REQUEST_HEAD)
        .serve_connection(TokioIo::new(io), service)
        .await;
}

/// A response past [`MAX_RESPONSE_BYTES`] is not sent.
fn bounded(r: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    use hyper::body::Body;
    match r.body().size_hint().exact() {
        Some(n) if n as usize > MAX_RESPONSE_BYTES => reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain; charset=utf-8", "response over its size bound\n"),
        _ => r,
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
            match crate::support::escape::json_to_vec(&report) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_the_cap_an_idle_connection_makes_room_and_busy_ones_are_kept() {
        let (m, registry) = Metrics::new();
        let conns = Conns::default();
        let a = conns.admit(2, &m).unwrap();
        let b = conns.admit(2, &m).unwrap();
        a.served.store(true, Ordering::Relaxed);
        // Full: b never sent a request, so it goes for c.
        let c = conns.admit(2, &m).unwrap();
        assert_eq!(conns.open.lock().unwrap().iter().map(|c| c.id).collect::<Vec<_>>(), [a.id, c.id]);
        // b's task is told to close (a permit is stored for it).
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
            tokio::time::timeout(Duration::from_secs(1), b.close.notified()).await.expect("b told to close");
        });
        c.served.store(true, Ordering::Relaxed);
        // Full of connections that had a request just now: the new one is refused.
        assert!(conns.admit(2, &m).is_none());
        // One of them idle for a while: it makes room (a scraper reconnects).
        a.last_ns.store(monotonic_ns() - 5 * BUSY_NS, Ordering::Relaxed);
        let d = conns.admit(2, &m).unwrap();
        assert_eq!(conns.open.lock().unwrap().iter().map(|c| c.id).collect::<Vec<_>>(), [c.id, d.id]);
        d.served.store(true, Ordering::Relaxed);
        assert!(conns.admit(2, &m).is_none());
        conns.remove(c.id, &m);
        assert!(conns.admit(2, &m).is_some(), "room again once one closed");
        let text = exposition(&registry, false).unwrap();
        let sample = |reason: &str| {
            text.lines().find_map(|l| l.strip_prefix(&format!("handshake_trace_http_connections_closed_total{{reason=\"{reason}\"}} "))).map(|v| v.to_string())
        };
        assert_eq!(sample("evicted_idle").as_deref(), Some("2"), "{text}");
        assert_eq!(sample("over_cap").as_deref(), Some("2"), "{text}");
        assert!(text.contains("handshake_trace_http_connections 2"), "{text}");
    }

    /// A server on 127.0.0.1 (its own thread and runtime) answering `rate` a second.
    fn server(rate: f64) -> (std::net::SocketAddr, Metrics, Registry) {
        let (metrics, registry) = Metrics::new();
        let m2 = metrics.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                let (_, registry) = Metrics::new();
                let state = Arc::new(State {
                    registry,
                    ready: AtomicBool::new(true),
                    top: Arc::new(Mutex::new(TopClients::new(3, 60, false))),
                    metrics: m2,
                    rate: Mutex::new(TokenBucket::new(rate)),
                    hosts: Default::default(),
                });
                serve(listener, state, HttpOptions::default()).await;
            });
        });
        (rx.recv().unwrap(), metrics, registry)
    }

    fn status(addr: std::net::SocketAddr, path: &str) -> u16 {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
    }

    #[test]
    fn a_client_asking_in_a_loop_gets_429_past_the_rate_and_health_checks_are_not_limited() {
        let (addr, _, registry) = server(5.0);
        let codes: Vec<u16> = (0..8).map(|_| status(addr, "/metrics")).collect();
        assert_eq!(codes.iter().filter(|&&c| c == 200).count(), 5, "{codes:?}");
        assert_eq!(codes.iter().filter(|&&c| c == 429).count(), 3, "{codes:?}");
        assert_eq!(status(addr, "/top"), 429);
        assert_eq!(status(addr, "/healthz"), 200);
        assert_eq!(status(addr, "/readyz"), 200);
        let text = exposition(&registry, false).unwrap();
        assert!(text.contains("handshake_trace_http_rate_limited_total 4"), "{text}");
        std::thread::sleep(Duration::from_millis(450));
        assert_eq!(status(addr, "/metrics"), 200, "tokens come back at the rate");
    }

    #[test]
    fn a_connection_is_idle_once_no_request_came_for_the_timeout() {
        let conn = Conn { id: 0, served: AtomicBool::new(false), last_ns: AtomicU64::new(monotonic_ns()), close: Notify::new() };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let started = std::time::Instant::now();
        rt.block_on(idle(&conn, Duration::from_millis(50)));
        assert!(started.elapsed() >= Duration::from_millis(50));
        // A request pushes the deadline on.
        conn.last_ns.store(monotonic_ns() + 200_000_000, Ordering::Relaxed);
        let started = std::time::Instant::now();
        rt.block_on(idle(&conn, Duration::from_millis(50)));
        assert!(started.elapsed() >= Duration::from_millis(200), "{:?}", started.elapsed());
    }
}
