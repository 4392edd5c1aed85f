//! One tracing session's logic, shared by the live `watch` and the offline `analyze`:
//! events in, handshakes correlated, filtered, printed and summarised. Pure: no aya,
//! no tokio, no /proc — addresses come from the caller (live: /proc; replay: the file).
use std::{collections::BTreeMap, io::Write, net::SocketAddr};

use anyhow::Result;

use crate::{
    support::clock::Clock,
    correlate::{Correlator, Handshake, Verdict},
    events::{Event, SyscallKind},
    support::int_hash::IntSet,
    capture::probes::Counters,
    output::handshake::{handshake_json, handshake_line, handshake_timeline},
    output::histogram::Histogram,
};

/// Open handshakes kept in memory at most (the kernel tracks at most as many).
const MAX_OPEN: usize = handshake_trace_common::MAX_CONNS as usize;

#[derive(Debug, Clone, Default)]
pub struct WatchOptions {
    /// Explicit targets; empty = every mysqld/mariadbd, including ones started later.
    pub pids: Vec<u32>,
    /// Keep only connections accepted on this local port.
    pub port: Option<u16>,
    pub json: bool,
    pub ringbuf_bytes: Option<u32>,
    /// Print every decoded kernel event too (debugging).
    pub raw_events: bool,
    /// Show the full timeline of successful handshakes slower than this.
    pub slow_ms: Option<f64>,
    /// Instead of a line per successful handshake, a roll-up every this many seconds.
    pub rollup_secs: Option<u64>,
    /// Keep every finished handshake's outcome in the summary (the lab explains them).
    pub keep_outcomes: bool,
    /// Also write the raw (redacted) events to this trace file, for `analyze`.
    pub record: Option<std::path::PathBuf>,
    /// How the syscall programs attach.
    pub attach: crate::capture::probes::AttachMode,
}

/// The gist of a finished handshake.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub pid: u32,
    pub client: Option<SocketAddr>,
    pub verdict: Verdict,
    pub reason: String,
    pub timeout: Option<crate::correlate::TimeoutWait>,
    pub client_error: Option<String>,
    pub total_ns: u64,
}

/// What a trace saw, for the summary at exit.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub by_verdict: BTreeMap<&'static str, u64>,
    pub accept_errors: u64,
    pub filtered_out: u64,
    pub undecodable: u64,
    pub unmatched: u64,
    pub counters: Counters,
    pub to_greeting: Histogram,
    pub to_login: Histogram,
    pub to_reply: Histogram,
    pub total: Histogram,
    pub targets_seen: Vec<u32>,
    pub outcomes: Vec<Outcome>,
}

impl Summary {
    fn record(&mut self, h: &Handshake, keep: bool) {
        if keep {
            self.outcomes.push(Outcome {
                pid: h.pid,
                client: h.client,
                verdict: h.verdict.unwrap_or(Verdict::Incomplete),
                reason: h.reason.clone(),
                timeout: h.timeout.clone(),
                client_error: h.client_error.clone(),
                total_ns: h.total_ns(),
            });
        }
        let v = h.verdict.map(Verdict::as_str).unwrap_or("?");
        *self.by_verdict.entry(v).or_default() += 1;
        let p = h.phases();
        if let Some(v) = p.to_greeting_ns {
            self.to_greeting.record(v);
        }
        if let Some(v) = p.to_login_ns {
            self.to_login.record(v);
        }
        if let Some(v) = p.to_reply_ns {
            self.to_reply.record(v);
        }
        self.total.record(p.total_ns);
    }

    pub fn handshakes(&self) -> u64 {
        self.by_verdict.values().sum()
    }

    pub fn count(&self, v: Verdict) -> u64 {
        self.by_verdict.get(v.as_str()).copied().unwrap_or(0)
    }
}

/// Prints finished handshakes the way the options ask.
struct Printer<'a> {
    opts: &'a WatchOptions,
    clock: Clock,
    rollup_ok: u64,
    rollup_hist: Histogram,
    /// One JSON record is built here, then written whole: serde's many small writes
    /// stay in a Vec instead of each going through `dyn Write`.
    json_buf: Vec<u8>,
}

impl Printer<'_> {
    fn handshake(&mut self, h: &Handshake, out: &mut dyn Write) -> Result<()> {
        if self.opts.json {
            self.json_buf.clear();
            serde_json::to_writer(&mut self.json_buf, &handshake_json(h, &self.clock))?;
            self.json_buf.push(b'\n');
            out.write_all(&self.json_buf)?;
            return Ok(());
        }
        let ok = h.verdict == Some(Verdict::Ok);
        let slow = self.opts.slow_ms.is_some_and(|s| h.total_ns() as f64 / 1e6 >= s);
        if !ok || slow {
            writeln!(out, "{}", handshake_timeline(h, &self.clock))?;
        } else if self.opts.rollup_secs.is_some() {
            self.rollup_ok += 1;
            self.rollup_hist.record(h.total_ns());
        } else {
            writeln!(out, "{}", handshake_line(h, &self.clock))?;
        }
        Ok(())
    }

    fn rollup(&mut self, out: &mut dyn Write) -> Result<()> {
        if self.rollup_ok > 0 {
            writeln!(
                out,
                "{} {} successful handshakes (p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms)",
                crate::support::clock::format_time_of_day(std::time::SystemTime::now()),
                self.rollup_ok,
                self.rollup_hist.quantile_ms(0.5).unwrap_or(0.0),
                self.rollup_hist.quantile_ms(0.99).unwrap_or(0.0),
                self.rollup_hist.max_ms().unwrap_or(0.0),
            )?;
        }
        self.rollup_ok = 0;
        self.rollup_hist = Histogram::default();
        Ok(())
    }
}

/// Addresses of an accepted connection, as the caller learned them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AcceptAddrs {
    /// The listening socket's local address.
    pub server: Option<SocketAddr>,
    /// The client, when the kernel event had none.
    pub client: Option<SocketAddr>,
}

/// Correlation, filtering, printing and the summary of one trace.
pub struct Session<'a> {
    correlator: Correlator,
    printer: Printer<'a>,
    pub summary: Summary,
    /// Connections dropped by --port, by (pid, fd, generation): their events are ignored.
    filtered: IntSet<(u32, i32, u64)>,
}

impl<'a> Session<'a> {
    pub fn new(opts: &'a WatchOptions, clock: Clock) -> Self {
        Session {
            correlator: Correlator::new(MAX_OPEN),
            printer: Printer { opts, clock, rollup_ok: 0, rollup_hist: Histogram::default(), json_buf: Vec::new() },
            summary: Summary::default(),
            filtered: IntSet::default(),
        }
    }

    /// Feed one event. For an accept, `addrs` says what the caller knows of its addresses.
    pub fn handle(&mut self, ev: &Event, addrs: AcceptAddrs, out: &mut dyn Write) -> Result<()> {
        let mut ev = std::borrow::Cow::Borrowed(ev);
        if let Event::Accept(a) = ev.as_ref() {
            if a.fd().is_none() {
                self.summary.accept_errors += 1;
                return Ok(());
            }
            if let Some(port) = self.printer.opts.port {
                if addrs.server.map(|s| s.port()) != Some(port) {
                    self.summary.filtered_out += 1;
                    self.filtered.extend(conn_key(&ev));
                    return Ok(());
                }
            }
            if a.peer.is_none() && addrs.client.is_some() {
                let mut a = a.clone();
                a.peer = addrs.client;
                ev = std::borrow::Cow::Owned(Event::Accept(a));
            }
        } else if let Event::ProcessExit { pid, .. } = ev.as_ref() {
            self.filtered.retain(|k| k.0 != *pid);
        } else if let Some(k) = conn_key(&ev) {
            if self.filtered.contains(&k) {
                if matches!(ev.as_ref(), Event::Syscall(s) if s.kind == SyscallKind::TrackingEnd || s.kind == SyscallKind::Close) {
                    self.filtered.remove(&k);
                }
                return Ok(());
            }
        }
        for h in self.correlator.push(&ev, addrs.server) {
            self.summary.record(&h, self.printer.opts.keep_outcomes);
            self.printer.handshake(&h, out)?;
        }
        Ok(())
    }

    pub fn opts(&self) -> &WatchOptions {
        self.printer.opts
    }

    /// The periodic roll-up line (--rollup).
    pub fn rollup(&mut self, out: &mut dyn Write) -> Result<()> {
        self.printer.rollup(out)
    }

    /// Tracing stopped at `now_ns`: every open handshake ends `incomplete`.
    pub fn finish(mut self, now_ns: u64, counters: Counters, out: &mut dyn Write) -> Result<Summary> {
        for h in self.correlator.finish_all(now_ns) {
            self.summary.record(&h, self.printer.opts.keep_outcomes);
            self.printer.handshake(&h, out)?;
        }
        if self.printer.opts.rollup_secs.is_some() {
            self.printer.rollup(out)?;
        }
        out.flush()?;
        self.summary.counters = counters;
        self.summary.unmatched = self.correlator.unmatched;
        Ok(self.summary)
    }
}

/// The connection an event belongs to, for the --port filter.
fn conn_key(ev: &Event) -> Option<(u32, i32, u64)> {
    match ev {
        Event::Accept(a) => a.fd().map(|fd| (a.pid, fd, a.conn_gen)),
        Event::Syscall(s) => Some((s.pid, s.fd, s.conn_gen)),
        Event::Io(io) => Some((io.sys.pid, io.sys.fd, io.sys.conn_gen)),
        Event::Signal(s) => Some((s.pid, s.fd, s.conn_gen)),
        Event::Tcp(t) => Some((t.pid, t.fd, t.conn_gen)),
        Event::ProcessExit { .. } => None,
    }
}

/// The summary printed at exit.
pub fn print_summary(s: &Summary, log: &mut dyn Write) -> Result<()> {
    writeln!(log)?;
    let verdicts: Vec<String> = Verdict::ALL
        .iter()
        .filter_map(|v| {
            let n = s.count(*v);
            (n > 0).then(|| format!("{} {n}", v.as_str()))
        })
        .collect();
    writeln!(
        log,
        "Summary: {} handshakes{}{}{}",
        s.handshakes(),
        if verdicts.is_empty() { String::new() } else { format!(" ({})", verdicts.join(", ")) },
        if s.accept_errors > 0 { format!(", {} failed accepts", s.accept_errors) } else { String::new() },
        if s.filtered_out > 0 { format!(", {} on other ports", s.filtered_out) } else { String::new() },
    )?;
    for (name, h) in [
        ("accept → greeting", &s.to_greeting),
        ("greeting → login", &s.to_login),
        ("login → reply", &s.to_reply),
        ("total", &s.total),
    ] {
        if h.count() > 0 {
            writeln!(
                log,
                "  {name:<18} p50 {:>9.3} ms  p90 {:>9.3} ms  p99 {:>9.3} ms  max {:>9.3} ms  (n={})",
                h.quantile_ms(0.5).unwrap_or(0.0),
                h.quantile_ms(0.9).unwrap_or(0.0),
                h.quantile_ms(0.99).unwrap_or(0.0),
                h.max_ms().unwrap_or(0.0),
                h.count()
            )?;
        }
    }
    let c = &s.counters;
    writeln!(
        log,
        "Events: {} emitted by the kernel, {} lost (ring buffer full: {}, map full: {}), {} undecodable",
        c.emitted,
        c.lost(),
        c.lost_ringbuf,
        c.lost_mapfull,
        s.undecodable
    )?;
    if c.lost() > 0 {
        writeln!(log, "WARNING: {} events were lost; the output above is incomplete", c.lost())?;
    }
    Ok(())
}
