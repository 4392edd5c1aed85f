//! The Prometheus metrics (names and labels: docs/agent.md): a [`Sink`] counting
//! finished handshakes, and the tracer's own health once a second. Every label value
//! comes from a fixed set; a server's listening address is one of at most
//! [`MAX_SERVERS`], later ones are counted as "unknown".
use std::{
    collections::BTreeSet,
    net::SocketAddr,
};

use anyhow::Result;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};

use crate::{
    commands::watch::Health,
    correlate::Handshake,
    output::names,
    pipeline::{Sink, TableFill},
    protocol::ErrPacket,
    support::int_hash::IntMap,
    verdict::{blame, Blame, Probe, Verdict},
};

/// Distinct `server` label values at most (listening addresses; restarted servers on
/// new ports must not grow the series without bound).
pub const MAX_SERVERS: usize = 32;

/// Phase durations' bucket bounds, in seconds: 100 µs to 30 s.
const PHASE_BUCKETS: [f64; 16] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandshakeLabels {
    pub server: String,
    pub verdict: &'static str,
    pub blame: &'static str,
    pub mechanism: &'static str,
    /// `port_check`, `health_check`, or `none`: probes are counted, never alarmed.
    pub probe: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub server: String,
    pub code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub server: String,
    pub phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerLabel {
    pub server: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabel {
    pub table: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

/// A bounded table's name as a label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    Correlator,
    PortFilter,
    TopClients,
    FlightBuffer,
}

impl Table {
    fn label(self) -> TableLabel {
        let table = match self {
            Table::Correlator => "correlator",
            Table::PortFilter => "port_filter",
            Table::TopClients => "top_clients",
            Table::FlightBuffer => "flight_buffer",
        };
        TableLabel { table }
    }
}

/// Whether a record was written or dropped (abnormal log, flight recorder).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Written,
    Dropped,
}

impl Outcome {
    fn label(self) -> OutcomeLabel {
        OutcomeLabel { outcome: if self == Outcome::Written { "written" } else { "dropped" } }
    }
}

/// Why the HTTP server closed a connection itself (its bounds; docs/agent.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpClose {
    /// A new connection arrived at the cap and every open one had a request within the last second: the new one.
    OverCap,
    /// At the cap, the oldest connection that never sent a whole request (else the one idle longest), for a new one.
    Evicted,
    /// No request for the idle timeout.
    Idle,
    /// The TLS handshake failed or took longer than the header timeout.
    TlsFailed,
    /// accept() failed (out of file descriptors, most likely).
    AcceptFailed,
}

impl HttpClose {
    const ALL: [HttpClose; 5] = [HttpClose::OverCap, HttpClose::Evicted, HttpClose::Idle, HttpClose::TlsFailed, HttpClose::AcceptFailed];

    fn label(self) -> ReasonLabel {
        let reason = match self {
            HttpClose::OverCap => "over_cap",
            HttpClose::Evicted => "evicted_idle",
            HttpClose::Idle => "idle_timeout",
            HttpClose::TlsFailed => "tls_failed",
            HttpClose::AcceptFailed => "accept_failed",
        };
        ReasonLabel { reason }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FileLabel {
    pub file: &'static str,
}

/// Every metric the agent exports. Clones share the same series (the handles are
/// reference-counted): the sink, the health ticker and the log each hold one.
#[derive(Clone, Debug)]
pub struct Metrics {
    pub handshakes: Family<HandshakeLabels, Counter>,
    pub errors: Family<ErrorLabels, Counter>,
    pub phases: Family<PhaseLabels, Histogram, fn() -> Histogram>,
    pub retransmits: Family<ServerLabel, Counter>,
    pub port_checks: Family<ServerLabel, Counter>,
    pub emitted: Counter,
    pub lost: Family<ReasonLabel, Counter>,
    pub undecodable: Counter,
    pub programs: Gauge,
    pub targets: Gauge,
    pub unseen_unix_listeners: Gauge,
    /// Processes refused as targets, by reason (`RefuseReason`: a fixed set).
    pub targets_refused: Family<ReasonLabel, Counter>,
    /// Times /proc could not say whether a target lives (kept, asked again).
    pub proc_unknown: Counter,
    pub table_entries: Family<TableLabel, Gauge>,
    pub table_capacity: Family<TableLabel, Gauge>,
    pub table_evictions: Family<TableLabel, Counter>,
    pub log_records: Family<OutcomeLabel, Counter>,
    pub flight_recordings: Family<OutcomeLabel, Counter>,
    /// Seconds the flight recorder's ring covers now (oldest record to newest).
    pub flight_window: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub cpu_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    pub rss_bytes: Gauge,
    /// HTTP connections open now, closed by the server's bounds, refused credentials.
    pub http_connections: Gauge,
    pub http_closed: Family<ReasonLabel, Counter>,
    pub http_auth_failures: Counter,
    pub http_rate_limited: Counter,
    /// Files the agent refused to open (a symbolic link, not a regular file, not its own).
    pub file_refusals: Family<FileLabel, Counter>,
    /// Servers announced so far ([`Metrics::announce_servers`]).
    announced: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

fn phase_histogram() -> Histogram {
    Histogram::new(PHASE_BUCKETS)
}

impl Metrics {
    /// The metrics, registered in a new registry (what /metrics encodes).
    pub fn new() -> (Metrics, Registry) {
        let m = Metrics {
            handshakes: Family::default(),
            errors: Family::default(),
            phases: Family::new_with_constructor(phase_histogram),
            retransmits: Family::default(),
            port_checks: Family::default(),
            emitted: Counter::default(),
            lost: Family::default(),
            undecodable: Counter::default(),
            programs: Gauge::default(),
            targets: Gauge::default(),
            unseen_unix_listeners: Gauge::default(),
            targets_refused: Family::default(),
            proc_unknown: Counter::default(),
            table_entries: Family::default(),
            table_capacity: Family::default(),
            table_evictions: Family::default(),
            log_records: Family::default(),
            flight_recordings: Family::default(),
            flight_window: Gauge::default(),
            cpu_seconds: Counter::default(),
            rss_bytes: Gauge::default(),
            http_connections: Gauge::default(),
            http_closed: Family::default(),
            http_auth_failures: Counter::default(),
            http_rate_limited: Counter::default(),
            file_refusals: Family::default(),
            announced: Default::default(),
        };
        let mut root = Registry::default();
        let r = root.sub_registry_with_prefix("handshake_trace");
        r.register(
            "handshakes",
            "Finished handshakes by listening address, verdict, whose side, the server's wait when it timed out, and probe kind (port_check, health_check, none)",
            m.handshakes.clone(),
        );
        r.register("handshake_errors", "ERR packets sent during handshakes, by code (connection-setup codes, others as \"other\")", m.errors.clone());
        r.register_with_unit("handshake_phase", "Handshake phase durations: accept to greeting, greeting to login, login to reply, accept to end", Unit::Seconds, m.phases.clone());
        r.register("handshake_retransmits", "TCP retransmits seen during handshakes", m.retransmits.clone());
        r.register("handshake_port_checks", "Handshakes the client closed or reset without sending a byte (port checks), also counted in handshakes as client_closed/client_reset", m.port_checks.clone());
        r.register("events_emitted", "Events the kernel programs emitted", m.emitted.clone());
        r.register("events_lost", "Events the kernel programs lost, by reason", m.lost.clone());
        r.register("events_undecodable", "Records that did not decode", m.undecodable.clone());
        r.register("programs_attached", "Kernel programs attached", m.programs.clone());
        r.register("targets", "Server processes traced", m.targets.clone());
        r.register(
            "unseen_unix_listeners",
            "Unix-socket listeners of the traced servers whose clients this capture tier cannot see (the socket tier follows them only where the kernel has the tp_btf sk_data_ready hook; --capture syscalls sees them)",
            m.unseen_unix_listeners.clone(),
        );
        r.register(
            "targets_refused",
            "Processes not traced, or dropped, by reason: unverified (named mysqld/mariadbd but not a root-installed server executable), too_many_ports, map_full",
            m.targets_refused.clone(),
        );
        r.register("target_proc_unknown", "Times /proc could not say whether a target lives (EMFILE, EACCES…): it was kept and asked again", m.proc_unknown.clone());
        r.register("table_entries", "Entries in each bounded table", m.table_entries.clone());
        r.register("table_capacity", "The bound of each table", m.table_capacity.clone());
        r.register("table_evictions", "Entries pushed out of each table by its bound", m.table_evictions.clone());
        r.register("abnormal_log_records", "Abnormal-handshake log records, written or dropped by the rate limit or a write error", m.log_records.clone());
        r.register("flight_recordings", "Flight-recorder trace files, written or dropped", m.flight_recordings.clone());
        r.register_with_unit(
            "flight_window",
            "Seconds of events the flight recorder's ring covers now (less than --flight-seconds when its size bound is reached first; 0 without --flight-dir)",
            Unit::Seconds,
            m.flight_window.clone(),
        );
        r.register("http_connections", "Connections open to the agent's HTTP server", m.http_connections.clone());
        r.register(
            "http_connections_closed",
            "Connections the HTTP server closed by its bounds: over_cap (new one refused), evicted_idle (an idle one closed for a new one), idle_timeout, tls_failed, accept_failed",
            m.http_closed.clone(),
        );
        r.register("http_auth_failures", "Requests refused for missing or wrong credentials (--web-config basic_auth_users)", m.http_auth_failures.clone());
        r.register("http_rate_limited", "Requests for /metrics or /top answered 429, over --web-rate", m.http_rate_limited.clone());
        r.register(
            "file_open_refusals",
            "Files the agent refused to open for writing: a symbolic link, not a regular file, or not owned by the agent (abnormal_log, flight)",
            m.file_refusals.clone(),
        );
        root.register_with_unit("process_cpu", "CPU time of the agent (user and system)", Unit::Seconds, m.cpu_seconds.clone());
        root.register_with_unit("process_resident_memory", "Resident memory of the agent", Unit::Bytes, m.rss_bytes.clone());
        // Series that exist from the start, so a rate() has its zero.
        for reason in ["ringbuf_full", "map_full"] {
            m.lost.get_or_create(&ReasonLabel { reason }).inc_by(0);
        }
        for r in crate::capture::targets::RefuseReason::ALL {
            m.targets_refused.get_or_create(&ReasonLabel { reason: r.name() }).inc_by(0);
        }
        for o in [Outcome::Written, Outcome::Dropped] {
            m.log_records.get_or_create(&o.label()).inc_by(0);
            m.flight_recordings.get_or_create(&o.label()).inc_by(0);
        }
        for c in HttpClose::ALL {
            m.http_closed.get_or_create(&c.label()).inc_by(0);
        }
        for file in ["abnormal_log", "flight"] {
            m.file_refusals.get_or_create(&FileLabel { file }).inc_by(0);
        }
        for t in [Table::Correlator, Table::PortFilter, Table::TopClients, Table::FlightBuffer] {
            m.table(t, 0, 0, 0);
        }
        (m, root)
    }

    /// The HTTP server closed a connection by its bounds.
    pub fn http_closed(&self, why: HttpClose) {
        self.http_closed.get_or_create(&why.label()).inc();
    }

    /// A file was refused (`file`: abnormal_log or flight).
    pub fn file_refused(&self, file: &'static str) {
        self.file_refusals.get_or_create(&FileLabel { file }).inc();
    }

    /// Every series of `server` with a fixed label set, at 0: handshakes by each
    /// (verdict, blame, mechanism, probe) a judgement can give, ERR codes of the fixed
    /// set. Done before the server's first handshake, so an alert's `increase()` sees the
    /// first event (a series born at 1 has no increase).
    pub fn zero_server(&self, server: &str) {
        for labels in handshake_label_sets() {
            let (verdict, blame, mechanism, probe) = labels;
            self.handshakes.get_or_create(&HandshakeLabels { server: server.to_string(), verdict, blame, mechanism, probe }).inc_by(0);
        }
        for code in names::ERROR_CODE_LABELS {
            self.errors.get_or_create(&ErrorLabels { server: server.to_string(), code }).inc_by(0);
        }
        self.retransmits.get_or_create(&ServerLabel { server: server.to_string() }).inc_by(0);
        self.port_checks.get_or_create(&ServerLabel { server: server.to_string() }).inc_by(0);
    }

    /// The traced servers' listening addresses (and `unix`), told at start and when
    /// targets change: each gets its zero series ([`Metrics::zero_server`]); at most
    /// [`MAX_SERVERS`] announced in all, as the sink bounds its own.
    pub fn announce_servers(&self, listening: &[SocketAddr], unix: bool) {
        let labels = listening.iter().map(|a| a.to_string()).chain(unix.then(|| "unix".to_string()));
        for label in labels {
            let known = self.handshakes.get(&HandshakeLabels {
                server: label.clone(),
                verdict: names::verdict(Verdict::Ok),
                blame: names::blame(Blame::None),
                mechanism: "none",
                probe: names::probe(None),
            });
            if known.is_some() {
                continue;
            }
            if self.announced.fetch_add(1, std::sync::atomic::Ordering::Relaxed) >= MAX_SERVERS {
                return;
            }
            self.zero_server(&label);
        }
    }

    /// One abnormal-log or flight record's outcome.
    pub fn record_outcome(family: &Family<OutcomeLabel, Counter>, outcome: Outcome) {
        family.get_or_create(&outcome.label()).inc();
    }

    /// A table's fill; `evictions_new` = evictions since the last call.
    pub fn table(&self, table: Table, entries: usize, capacity: usize, evictions_new: u64) {
        self.table_entries.get_or_create(&table.label()).set(entries as i64);
        self.table_capacity.get_or_create(&table.label()).set(capacity as i64);
        self.table_evictions.get_or_create(&table.label()).inc_by(evictions_new);
    }
}

/// The (verdict, blame, mechanism, probe) label sets a judgement can give: `ok` is
/// blamed on no one; every failure on one of the four parties; a `server_timeout` has
/// one of the wait mechanisms, the rest `none`; port checks are client_closed or
/// client_reset on the client's side, health checks `ok`.
pub fn handshake_label_sets() -> Vec<(&'static str, &'static str, &'static str, &'static str)> {
    use crate::verdict::WaitMechanism as M;
    let mechanisms = [M::Poll, M::AlarmEintr, M::SocketTimeout, M::NotSeen { read_error: crate::events::Errno(0) }].map(names::mechanism);
    let none = names::probe(None);
    let mut sets = vec![(names::verdict(Verdict::Ok), names::blame(Blame::None), "none", none)];
    for v in Verdict::ALL.into_iter().filter(|v| *v != Verdict::Ok) {
        for b in Blame::ALL.into_iter().filter(|b| *b != Blame::None) {
            if v == Verdict::ServerTimeout {
                sets.extend(mechanisms.iter().map(|m| (names::verdict(v), names::blame(b), *m, none)));
            } else {
                sets.push((names::verdict(v), names::blame(b), "none", none));
            }
        }
    }
    for v in [Verdict::ClientClosed, Verdict::ClientReset] {
        sets.push((names::verdict(v), names::blame(Blame::Client), "none", names::probe(Some(Probe::PortCheck))));
    }
    sets.push((names::verdict(Verdict::Ok), names::blame(Blame::None), "none", names::probe(Some(Probe::HealthCheck))));
    sets
}

/// Raise a counter that mirrors an absolute count kept elsewhere (the kernel's).
fn mirror(counter: &Counter, last: &mut u64, now: u64) {
    counter.inc_by(now.saturating_sub(*last));
    *last = (*last).max(now);
}

/// The health metrics, fed once a second from the live loop's [`Health`] and /proc/self:
/// remembers the absolute counts already exported.
#[derive(Debug, Default)]
pub struct HealthExport {
    last: Health,
    cpu_s: f64,
}

impl HealthExport {
    pub fn update(&mut self, m: &Metrics, h: &Health, process: Option<super::process::Usage>) {
        let last = &mut self.last;
        mirror(&m.emitted, &mut last.counters.emitted, h.counters.emitted);
        mirror(&m.lost.get_or_create(&ReasonLabel { reason: "ringbuf_full" }), &mut last.counters.lost_ringbuf, h.counters.lost_ringbuf);
        mirror(&m.lost.get_or_create(&ReasonLabel { reason: "map_full" }), &mut last.counters.lost_mapfull, h.counters.lost_mapfull);
        mirror(&m.undecodable, &mut last.undecodable, h.undecodable);
        m.programs.set(h.programs as i64);
        m.targets.set(h.targets as i64);
        m.unseen_unix_listeners.set(h.unseen_unix_listeners as i64);
        for r in crate::capture::targets::RefuseReason::ALL {
            let (now, before) = (h.refused.get(&r).copied().unwrap_or(0), last.refused.get(&r).copied().unwrap_or(0));
            m.targets_refused.get_or_create(&ReasonLabel { reason: r.name() }).inc_by(now.saturating_sub(before));
        }
        last.refused = h.refused.clone();
        mirror(&m.proc_unknown, &mut last.proc_unknown, h.proc_unknown);
        let table = |t: Table, fill: &TableFill, last: &mut TableFill| {
            m.table(t, fill.entries, fill.capacity, fill.evictions.saturating_sub(last.evictions));
            *last = *fill;
        };
        table(Table::Correlator, &h.tables.correlator, &mut last.tables.correlator);
        table(Table::PortFilter, &h.tables.port_filter, &mut last.tables.port_filter);
        if let Some(u) = process {
            m.cpu_seconds.inc_by((u.cpu_seconds - self.cpu_s).max(0.0));
            self.cpu_s = self.cpu_s.max(u.cpu_seconds);
            m.rss_bytes.set(u.rss_bytes as i64);
        }
    }
}

/// The phases, in the order of [`ServerSeries::phases`].
const PHASES: [&str; 4] = ["to_greeting", "to_login", "to_reply", "total"];

/// One `server` label value's series, looked up once (a handshake then counts without
/// formatting, cloning or hashing label sets).
struct ServerSeries {
    label: String,
    phases: [Histogram; 4],
    retransmits: Counter,
    port_checks: Counter,
    /// By (verdict, blame, mechanism, probe): a fixed set of label values (the tool's
    /// own words: no chosen keys to fear, so the fast hasher).
    handshakes: IntMap<(&'static str, &'static str, &'static str, &'static str), Counter>,
}

/// A handshake's server as the sink tells servers apart: Unix socket, or the address.
type ServerKey = (bool, Option<SocketAddr>);

/// The sink: each finished handshake into the handshake metrics.
pub struct MetricsSink {
    metrics: Metrics,
    /// `server` label values given out so far (at most [`MAX_SERVERS`]).
    servers: BTreeSet<String>,
    /// Series by server: at most [`MAX_SERVERS`] addresses, plus `unix` and `unknown`
    /// (addresses past the bound are not kept: they count as `unknown` each time).
    /// Keys are the servers' own listening addresses, looked up per handshake.
    series: IntMap<ServerKey, ServerSeries>,
}

impl MetricsSink {
    pub fn new(metrics: Metrics) -> Self {
        MetricsSink { metrics, servers: BTreeSet::new(), series: IntMap::default() }
    }

    /// The `server` label: the listening address, "unix", or "unknown" (not known, or
    /// past the bound).
    fn server(&mut self, h: &Handshake) -> String {
        let addr = match (h.unix, h.server) {
            (true, _) => return "unix".into(),
            (false, None) => return "unknown".into(),
            (false, Some(a)) => a.to_string(),
        };
        if self.servers.contains(&addr) {
            return addr;
        }
        if self.servers.len() >= MAX_SERVERS {
            return "unknown".into();
        }
        self.servers.insert(addr.clone());
        addr
    }

    /// The handshake's server's series.
    fn series(&mut self, h: &Handshake) -> &mut ServerSeries {
        let mut key = (h.unix, if h.unix { None } else { h.server });
        if !self.series.contains_key(&key) {
            let label = self.server(h);
            // Every `unknown` (not known, or past the bound) shares one entry: the map
            // holds at most MAX_SERVERS addresses, `unix` and `unknown`.
            if label == "unknown" {
                key = (false, None);
            }
            let m = &self.metrics;
            // A server first seen now (not announced at start): its other series at 0
            // from here on.
            m.zero_server(&label);
            self.series.entry(key).or_insert_with(|| ServerSeries {
                phases: PHASES.map(|phase| m.phases.get_or_create(&PhaseLabels { server: label.clone(), phase }).clone()),
                retransmits: m.retransmits.get_or_create(&ServerLabel { server: label.clone() }).clone(),
                port_checks: m.port_checks.get_or_create(&ServerLabel { server: label.clone() }).clone(),
                handshakes: IntMap::default(),
                label,
            });
        }
        self.series.get_mut(&key).expect("inserted above")
    }
}

impl Sink for MetricsSink {
    fn handshake(&mut self, h: &Handshake) -> Result<()> {
        let retransmits = blame::retransmits(h);
        let (verdict, blame, mechanism) = match &h.judgement {
            Some(j) => (j.verdict, j.blame.party(), j.timeout().map(|t| names::mechanism(t.mechanism))),
            None => (Verdict::Incomplete, crate::verdict::Blame::Unknown, None),
        };
        let labels = (names::verdict(verdict), names::blame(blame), mechanism.unwrap_or("none"), names::probe(h.probe()));
        let (family, errors) = (self.metrics.handshakes.clone(), self.metrics.errors.clone());
        let s = self.series(h);
        s.handshakes
            .entry(labels)
            .or_insert_with(|| {
                let (verdict, blame, mechanism, probe) = labels;
                family.get_or_create(&HandshakeLabels { server: s.label.clone(), verdict, blame, mechanism, probe }).clone()
            })
            .inc();
        if let Some(crate::correlate::Reply::Err(ErrPacket { code, .. })) = &h.reply {
            let labels = ErrorLabels { server: s.label.clone(), code: names::error_code_label(*code) };
            errors.get_or_create(&labels).inc();
        }
        let p = h.phases();
        for (histogram, ns) in s.phases.iter().zip([p.to_greeting_ns, p.to_login_ns, p.to_reply_ns, Some(p.total_ns)]) {
            if let Some(ns) = ns {
                histogram.observe(ns as f64 / 1e9);
            }
        }
        if h.probe() == Some(crate::verdict::Probe::PortCheck) {
            s.port_checks.inc();
        }
        s.retransmits.inc_by(retransmits);
        Ok(())
    }
}
