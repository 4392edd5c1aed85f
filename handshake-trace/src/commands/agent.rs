//! `agent`: the continuous tracer. The live loop of `watch` with the exporters as its
//! sinks (metrics, top-K, abnormal log), an HTTP server for /metrics, /healthz, /readyz
//! and /top, systemd's readiness protocol, and SIGHUP to reopen the log file.
use std::{
    cell::RefCell,
    io::Write,
    rc::Rc,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
};

use anyhow::{Context, Result};

use super::watch::{self, Health, Observer, Summary, WatchOptions};
pub use crate::export::{flight::FlightOptions, http::HttpOptions, otlp::OtlpOptions, web_config::WebConfig};
use crate::{
    export::{
        abnormal_log::{AbnormalLog, LogTarget},
        flight::FlightRecorder,
        http,
        otlp::{Exporter, OtlpMetrics},
        metrics::{HealthExport, Metrics, MetricsSink, Table},
        process,
        top_clients::TopClients,
        AgentProbes, FlightSink, TopSink, WithoutProbes,
    },
    events::{AcceptAddrs, Event},
    pipeline::Sink,
    support::clock::{monotonic_ns, Clock},
};

/// The agent's options (docs/agent.md).
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// Targets, --port, attach mode, ring buffer size.
    pub watch: WatchOptions,
    pub listen: SocketAddr,
    pub log: LogTarget,
    /// Abnormal-log records a second at most.
    pub log_rate: f64,
    pub top_k: usize,
    pub top_window_s: u64,
    /// The flight recorder, when --flight-dir asks for it.
    pub flight: Option<FlightOptions>,
    /// OTLP export, when --otlp-endpoint or OTEL_EXPORTER_OTLP_* ask for it.
    pub otlp: Option<OtlpOptions>,
    /// Scheduling niceness to take at start (0: as started).
    pub nice: i32,
    /// The HTTP server's bounds, authentication and TLS.
    pub http: http::HttpOptions,
    /// /top follows and serves user names (`--top-users`).
    pub top_users: bool,
    /// /metrics and /top requests answered a second at most (`--web-rate`).
    pub web_rate: f64,
    /// Probes in /top, the flight recorder and the abnormal log, or not (the metrics
    /// count them either way, with their `probe` label).
    pub probes: AgentProbes,
}

/// Tell systemd (when it started us with NOTIFY_SOCKET); failures are not fatal.
fn sd_notify(state: sd_notify::NotifyState, log: &mut dyn Write) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(false, &[state]) {
        let _ = writeln!(log, "WARNING: sd_notify: {e}");
    }
}

/// Readiness, health metrics and the top-K's own fill, once attached and each second.
struct AgentObserver {
    metrics: Metrics,
    health: HealthExport,
    top: Arc<Mutex<TopClients>>,
    top_evictions: u64,
    flight: Option<Rc<RefCell<FlightRecorder>>>,
    flight_evictions: u64,
    http: Arc<http::State>,
    /// For /hosts' times, and how many hosts it lists.
    clock: Clock,
    hosts_k: usize,
}

impl AgentObserver {
    fn export(&mut self, h: &Health) {
        self.health.update(&self.metrics, h, process::read());
        if let Ok(mut top) = self.top.lock() {
            top.expire(monotonic_ns());
            self.metrics.table(Table::TopClients, top.len(), top.capacity(), top.evictions.saturating_sub(self.top_evictions));
            self.top_evictions = top.evictions;
        }
        match &self.flight {
            Some(f) => {
                let f = f.borrow();
                self.metrics.table(Table::FlightBuffer, f.len(), f.capacity(), f.evictions.saturating_sub(self.flight_evictions));
                self.metrics.flight_window.set(f.window().map_or(0.0, |w| w.seconds()));
                self.flight_evictions = f.evictions;
            }
            None => self.metrics.table(Table::FlightBuffer, 0, 0, 0),
        }
        if let Ok(mut hosts) = self.http.hosts.lock() {
            *hosts = crate::export::hosts::report(&h.hosts, self.hosts_k, &self.clock);
        }
    }
}

impl Observer for AgentObserver {
    fn attached(&mut self, h: &Health) -> Result<()> {
        self.export(h);
        self.http.ready.store(true, Ordering::Relaxed);
        sd_notify(sd_notify::NotifyState::Ready, &mut std::io::stderr());
        Ok(())
    }

    fn tick(&mut self, h: &Health) -> Result<()> {
        process::release_free_memory();
        self.export(h);
        Ok(())
    }

    fn servers(&mut self, listening: &[SocketAddr], unix: bool) {
        self.metrics.announce_servers(listening, unix);
    }

    fn targets(&mut self, targets: &[crate::recording::format::TargetInfo]) {
        if let Some(f) = &self.flight {
            f.borrow_mut().set_targets(targets.to_vec());
        }
    }

    fn raw(&mut self, raw: &[u8], ev: Option<&Event>, addrs: AcceptAddrs) {
        if let Some(f) = &self.flight {
            f.borrow_mut().record(raw, ev, addrs);
        }
    }
}

/// Completes on SIGTERM or SIGINT.
async fn stop_signal(mut term: tokio::signal::unix::Signal, mut int: tokio::signal::unix::Signal) {
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Run the agent until SIGTERM or SIGINT; notices go to `log`.
pub async fn run(opts: &AgentOptions, log: &mut dyn Write) -> Result<Summary> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    let reopen = Arc::new(AtomicBool::new(false));
    let on_hup = Arc::clone(&reopen);
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            on_hup.store(true, Ordering::Relaxed);
        }
    });

    process::tune_allocator();
    if opts.nice != 0 {
        if let Err(e) = process::set_nice(opts.nice) {
            writeln!(log, "WARNING: cannot set niceness {}: {e} (running as started)", opts.nice)?;
        }
    }
    // Room for the kernel programs' fds, /proc reads and the HTTP connections; the
    // server's connection cap stays well below what is left.
    let mut http_opts = opts.http.clone();
    match process::raise_open_files_limit() {
        Ok(limit) => {
            let cap = (limit / 4).max(1) as usize;
            if http_opts.max_connections > cap {
                writeln!(log, "WARNING: --web-max-connections {} lowered to {cap} (a quarter of the open-files limit {limit})", http_opts.max_connections)?;
                http_opts.max_connections = cap;
            }
        }
        Err(e) => writeln!(log, "WARNING: cannot raise the open-files limit: {e}")?,
    }
    let (metrics, mut registry) = Metrics::new();
    let otlp_metrics = opts.otlp.as_ref().map(|_| OtlpMetrics::register(&mut registry));
    let top = Arc::new(Mutex::new(TopClients::new(opts.top_k, opts.top_window_s, opts.top_users)));
    let state = Arc::new(http::State { registry, ready: AtomicBool::new(false), top: Arc::clone(&top),
        metrics: metrics.clone(),
        rate: Mutex::new(crate::export::abnormal_log::TokenBucket::new(opts.web_rate)),
        hosts: Default::default(),
    });
    let listener = tokio::net::TcpListener::bind(opts.listen).await.with_context(|| format!("listen on {}", opts.listen))?;
    let web = opts.http.web.as_ref();
    let scheme = if web.is_some_and(|w| w.tls.is_some()) { "https" } else { "http" };
    let auth = if web.is_some_and(|w| !w.users.is_empty()) { " (basic authentication)" } else { "" };
    writeln!(log, "Serving /metrics /healthz /readyz /top /hosts on {scheme}://{}{auth}", listener.local_addr()?)?;
    if !auth.is_empty() && scheme == "http" {
        writeln!(log, "WARNING: basic authentication without TLS: passwords cross the network in clear (add tls_server_config to the web config)")?;
    }
    let server = tokio::spawn(http::serve(listener, Arc::clone(&state), http_opts));
    let exporter = match (&opts.otlp, otlp_metrics) {
        (Some(o), Some(m)) => {
            let snapshot_of = Arc::clone(&state);
            let snapshot = Box::new(move || http::exposition(&snapshot_of.registry, true).unwrap_or_default());
            let e = Exporter::start(o.clone(), snapshot, m).context("start the OTLP exporter")?;
            let to = |e: &Option<crate::export::otlp::options::Endpoint>| e.as_ref().map_or("-".to_string(), |e| format!("{}{}", e.authority, e.path));
            writeln!(log, "Exporting OTLP/HTTP: metrics to {} every {} ms, abnormal handshakes to {}", to(&o.metrics), o.interval.as_millis(), to(&o.logs))?;
            Some(e)
        }
        _ => None,
    };

    // Made before attaching, so a log file that cannot be opened fails at once; the
    // clock's offset from wall time is the same as the live loop's own.
    let clock = Clock::now();
    let log_sink = AbnormalLog::new(&opts.log, opts.log_rate, clock, metrics.clone(), Arc::clone(&reopen))?.with_top(Arc::clone(&top));
    let hide = opts.probes == AgentProbes::Hide;
    // Probes are counted (the metrics), never alarmed: the rest does not see them.
    let unless_probe = |s: Box<dyn Sink>| -> Box<dyn Sink> { if hide { Box::new(WithoutProbes(s)) } else { s } };
    let mut sinks: Vec<Box<dyn Sink>> = vec![
        Box::new(MetricsSink::new(metrics.clone())),
        unless_probe(Box::new(TopSink(Arc::clone(&top)))),
        unless_probe(Box::new(log_sink)),
    ];
    let ringbuf_bytes = opts.watch.ringbuf_bytes.unwrap_or(crate::capture::probes::LoadOptions::default().ringbuf_bytes);
    let flight = match &opts.flight {
        Some(f) => Some(Rc::new(RefCell::new(FlightRecorder::new(f.clone(), clock, ringbuf_bytes, metrics.clone())?))),
        None => None,
    };
    if let Some(f) = &flight {
        // Its own --flight-probes decides (a file per probe is a cost of its own).
        sinks.push(Box::new(FlightSink(Rc::clone(f))));
    }
    if let Some(e) = &exporter {
        sinks.push(unless_probe(Box::new(e.sink(clock))));
    }
    let mut observer = AgentObserver {
        metrics,
        health: HealthExport::default(),
        top,
        top_evictions: 0,
        flight,
        flight_evictions: 0,
        http: Arc::clone(&state),
        clock,
        hosts_k: opts.top_k,
    };
    // The roll-up is the top-K's summary in the log, once a window.
    let watch_opts = WatchOptions { rollup_secs: Some(opts.top_window_s.max(1)), ..opts.watch.clone() };
    let summary = watch::live(
        &watch_opts,
        move |_| sinks,
        &mut observer,
        log,
        stop_signal(term, int),
    )
    .await;
    sd_notify(sd_notify::NotifyState::Stopping, log);
    state.ready.store(false, Ordering::Relaxed);
    server.abort();
    // The last metrics and queued records, each request bounded by the export timeout.
    if let Some(e) = exporter {
        e.shutdown();
    }
    summary
}
