//! OpenTelemetry (OTLP/HTTP, protobuf) export from the agent: /metrics' own families
//! every interval, and every abnormal handshake as a log record. A thread of its own
//! does the network work; the live loop only hands records to a bounded queue (a full
//! queue drops the record and counts it), so a slow or dead collector never holds the
//! tracer. What is sent and what failed is counted in the agent's own metrics.
pub mod attrs;
pub mod logs;
pub mod metrics;
pub mod options;
pub mod post;
pub mod text;

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        mpsc::{self, Receiver, RecvTimeoutError, SyncSender},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime},
};

use anyhow::Result;
use opentelemetry_proto::tonic::{common::v1::KeyValue, logs::v1::LogRecord};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};
use prost::Message;

pub use options::OtlpOptions;

use crate::{correlate::Handshake, pipeline::Sink, support::clock::Clock, verdict::Verdict};

/// Log records waiting for the exporter at most.
pub const QUEUE: usize = 4096;
/// Log records in one request at most.
const BATCH: usize = 512;
/// Log records wait this long at most before they are sent.
const LOG_DELAY: Duration = Duration::from_secs(1);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExportLabels {
    signal: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RecordLabel {
    outcome: &'static str,
}

/// The exporter's own counters (docs/agent.md).
#[derive(Clone, Debug, Default)]
pub struct OtlpMetrics {
    exports: Family<ExportLabels, Counter>,
    records: Family<RecordLabel, Counter>,
}

impl OtlpMetrics {
    /// Registered beside the agent's metrics, every series at 0 from the start.
    pub fn register(registry: &mut Registry) -> OtlpMetrics {
        let m = OtlpMetrics::default();
        let r = registry.sub_registry_with_prefix("handshake_trace_otlp");
        r.register("exports", "OTLP export requests, by signal (metrics, logs) and outcome (sent, failed)", m.exports.clone());
        r.register(
            "log_records",
            "Abnormal handshakes for OTLP log export: sent, failed (their request failed) or dropped (the queue was full)",
            m.records.clone(),
        );
        for signal in ["metrics", "logs"] {
            for outcome in ["sent", "failed"] {
                m.exports.get_or_create(&ExportLabels { signal, outcome }).inc_by(0);
            }
        }
        for outcome in ["sent", "failed", "dropped"] {
            m.records.get_or_create(&RecordLabel { outcome }).inc_by(0);
        }
        m
    }

    fn export(&self, signal: &'static str, ok: bool) {
        self.exports.get_or_create(&ExportLabels { signal, outcome: if ok { "sent" } else { "failed" } }).inc();
    }

    fn records(&self, outcome: &'static str, n: usize) {
        self.records.get_or_create(&RecordLabel { outcome }).inc_by(n as u64);
    }
}

/// The running exporter: its queue's sending end, and the thread.
pub struct Exporter {
    tx: Option<SyncSender<LogRecord>>,
    queued: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    metrics: OtlpMetrics,
}

/// What the exporter thread owns.
struct Worker {
    opts: OtlpOptions,
    resource: Vec<KeyValue>,
    snapshot: Box<dyn Fn() -> String + Send>,
    metrics: OtlpMetrics,
    queued: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    start_unix_ns: u64,
    /// Each signal's last failure was reported on stderr (once, until an export of
    /// that signal works again): metrics, logs.
    failing: [bool; 2],
}

fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl Exporter {
    /// Start the thread; `snapshot` gives /metrics' text at each metrics export.
    pub fn start(opts: OtlpOptions, snapshot: Box<dyn Fn() -> String + Send>, metrics: OtlpMetrics) -> Result<Exporter> {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let queued = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let worker = Worker {
            resource: attrs::resource(|k| std::env::var(k).ok(), attrs::host_name()),
            opts,
            snapshot,
            metrics: metrics.clone(),
            queued: Arc::clone(&queued),
            stop: Arc::clone(&stop),
            start_unix_ns: unix_ns(SystemTime::now()),
            failing: [false; 2],
        };
        let thread = std::thread::Builder::new().name("otlp-export".into()).spawn(move || worker.run(rx))?;
        Ok(Exporter { tx: Some(tx), queued, stop, thread: Some(thread), metrics })
    }

    /// The sink that hands abnormal handshakes to this exporter.
    pub fn sink(&self, clock: Clock) -> OtlpSink {
        OtlpSink { tx: self.tx.clone(), queued: Arc::clone(&self.queued), clock, metrics: self.metrics.clone() }
    }

    /// Send what is queued and the metrics once more, then end the thread (each
    /// request is bounded by the export timeout).
    pub fn shutdown(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Worker {
    fn run(mut self, rx: Receiver<LogRecord>) {
        let mut batch: Vec<LogRecord> = Vec::new();
        let mut oldest: Option<Instant> = None;
        let mut next_metrics = Instant::now() + self.opts.interval;
        loop {
            let now = Instant::now();
            // At least once a second, so a stop is seen even while a sender lives.
            let wake = [Some(next_metrics), oldest.map(|o| o + LOG_DELAY), Some(now + Duration::from_secs(1))].into_iter().flatten().min().unwrap_or(next_metrics);
            let stopping = match rx.recv_timeout(wake.saturating_duration_since(now)) {
                Ok(r) => {
                    self.queued.fetch_sub(1, Ordering::Relaxed);
                    oldest.get_or_insert_with(Instant::now);
                    batch.push(r);
                    self.stop.load(Ordering::Relaxed)
                }
                Err(RecvTimeoutError::Timeout) => self.stop.load(Ordering::Relaxed),
                Err(RecvTimeoutError::Disconnected) => true,
            };
            if stopping {
                // One last request of each kind: what is still queued beyond a batch is
                // dropped (and counted), so a dead collector holds the agent's exit for
                // two timeouts at most.
                while let Ok(r) = rx.try_recv() {
                    self.queued.fetch_sub(1, Ordering::Relaxed);
                    batch.push(r);
                }
                if batch.len() > BATCH {
                    self.metrics.records("dropped", batch.len() - BATCH);
                    batch.truncate(BATCH);
                }
                if !batch.is_empty() {
                    self.send_logs(std::mem::take(&mut batch));
                }
                self.send_metrics();
                return;
            }
            let due = oldest.is_some_and(|o| o.elapsed() >= LOG_DELAY);
            if batch.len() >= BATCH || (!batch.is_empty() && due) {
                self.send_logs(std::mem::take(&mut batch));
                oldest = None;
            }
            if Instant::now() >= next_metrics {
                self.send_metrics();
                next_metrics = Instant::now() + self.opts.interval;
            }
        }
    }

    fn report(&mut self, what: &'static str, result: &Result<(), post::PostError>) {
        let failing = &mut self.failing[usize::from(what == "logs")];
        match result {
            Ok(()) => *failing = false,
            Err(e) => {
                if !*failing {
                    eprintln!("WARNING: OTLP {what} export failed: {e}; the agent goes on, failures are counted (handshake_trace_otlp_exports_total)");
                }
                *failing = true;
            }
        }
    }

    fn send_logs(&mut self, records: Vec<LogRecord>) {
        let n = records.len();
        let Some(ep) = self.opts.logs.clone() else { return };
        let body = logs::request(records, &self.resource).encode_to_vec();
        let result = post::post(&ep, &self.opts.headers, &body, self.opts.timeout);
        self.metrics.export("logs", result.is_ok());
        self.metrics.records(if result.is_ok() { "sent" } else { "failed" }, n);
        self.report("logs", &result);
    }

    fn send_metrics(&mut self) {
        let Some(ep) = self.opts.metrics.clone() else { return };
        let families = match text::parse(&(self.snapshot)()) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("WARNING: OTLP metrics: {e}");
                self.metrics.export("metrics", false);
                return;
            }
        };
        let times = metrics::Times { start_unix_ns: self.start_unix_ns, now_unix_ns: unix_ns(SystemTime::now()) };
        let body = metrics::request(&families, &self.resource, times).encode_to_vec();
        let result = post::post(&ep, &self.opts.headers, &body, self.opts.timeout);
        self.metrics.export("metrics", result.is_ok());
        self.report("metrics", &result);
    }
}

/// Hands each abnormal handshake (not `ok`; probes are kept out by the agent's
/// `--probes hide`, as for the abnormal log) to the exporter's queue.
pub struct OtlpSink {
    tx: Option<SyncSender<LogRecord>>,
    queued: Arc<AtomicUsize>,
    clock: Clock,
    metrics: OtlpMetrics,
}

impl Sink for OtlpSink {
    fn handshake(&mut self, h: &Handshake) -> Result<()> {
        let Some(tx) = &self.tx else { return Ok(()) };
        if h.verdict() == Some(Verdict::Ok) {
            return Ok(());
        }
        // Full: dropped before the record is even built.
        if self.queued.load(Ordering::Relaxed) >= QUEUE {
            self.metrics.records("dropped", 1);
            return Ok(());
        }
        self.queued.fetch_add(1, Ordering::Relaxed);
        if tx.try_send(logs::record(h, &self.clock, SystemTime::now())).is_err() {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            self.metrics.records("dropped", 1);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    fn exporter_to(addr: std::net::SocketAddr, timeout: Duration) -> (Exporter, OtlpMetrics, Registry) {
        let mut registry = Registry::default();
        let m = OtlpMetrics::register(&mut registry);
        let opts = OtlpOptions::resolve(Some(&format!("http://{addr}")), |k| (k == "OTEL_EXPORTER_OTLP_TIMEOUT").then(|| timeout.as_millis().to_string()))
            .unwrap()
            .unwrap();
        (Exporter::start(opts, Box::new(String::new), m.clone()).unwrap(), m, registry)
    }

    fn count(m: &OtlpMetrics, outcome: &'static str) -> u64 {
        m.records.get_or_create(&RecordLabel { outcome }).get()
    }

    #[test]
    fn a_silent_collector_fills_the_queue_and_the_rest_is_dropped_and_counted() {
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        // The first request would wait its whole timeout (60 s: longer than the hand-over
        // takes however slow this machine is); meanwhile the queue fills.
        let timeout = Duration::from_secs(60);
        let (e, m, _registry) = exporter_to(silent.local_addr().unwrap(), timeout);
        let mut sink = e.sink(Clock::with_offset(0));
        let h = testing::handshakes_of(&testing::wrong_password_events()).remove(0);
        let sent = QUEUE + BATCH + 1000;
        let t = Instant::now();
        for _ in 0..sent {
            sink.handshake(&h).unwrap();
        }
        // Had a hand-over waited for the exporter, it would have waited for that request.
        assert!(t.elapsed() < timeout, "handing over never blocks: {:?}", t.elapsed());
        // At most a batch in the exporter's hands and a full queue: the rest dropped.
        let dropped = count(&m, "dropped");
        assert!(dropped >= (sent - QUEUE - BATCH) as u64, "{dropped} dropped of {sent}");
        // The collector goes away: its pending connection is reset, the request fails.
        drop(silent);
        drop(sink);
        let t = Instant::now();
        e.shutdown();
        assert!(t.elapsed() < Duration::from_secs(12), "shutdown took {:?}: one more request of each kind at most", t.elapsed());
        // Every record is accounted for: sent, failed with its request, or dropped.
        let (failed, sent_ok, dropped) = (count(&m, "failed"), count(&m, "sent"), count(&m, "dropped"));
        assert_eq!(sent_ok, 0);
        assert_eq!(failed + dropped, sent as u64, "failed {failed} dropped {dropped}");
    }

    #[test]
    fn ok_handshakes_are_not_exported() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (e, m, _registry) = exporter_to(l.local_addr().unwrap(), Duration::from_millis(100));
        let mut sink = e.sink(Clock::with_offset(0));
        for h in testing::handshakes_of(&testing::ok_login_events()) {
            sink.handshake(&h).unwrap();
        }
        assert_eq!(e.queued.load(Ordering::Relaxed), 0);
        drop(sink);
        e.shutdown();
        assert_eq!(count(&m, "failed") + count(&m, "dropped") + count(&m, "sent"), 0);
    }
}
