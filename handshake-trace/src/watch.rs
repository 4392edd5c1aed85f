//! `watch`: attach, follow the target processes, print each handshake as it ends.
use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    io::Write,
    net::SocketAddr,
    time::Duration,
};

use anyhow::{bail, Context, Result};
use tokio::io::{unix::AsyncFd, Interest};

use crate::{
    clock::{monotonic_ns, Clock},
    correlate::{Correlator, Handshake, Verdict},
    events::{decode, Event},
    probes::{Counters, LoadOptions, Probes},
    render_handshake::{handshake_json, handshake_line, handshake_timeline},
    stats::Histogram,
    targets::{self, ServerProcess},
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

/// The processes being traced, kept in step with /proc.
struct Targets {
    explicit: bool,
    live: BTreeMap<u32, ServerProcess>,
    /// (pid, listening fd) → local address, learned from /proc.
    listeners: HashMap<(u32, i32), SocketAddr>,
}

impl Targets {
    fn start(pids: &[u32]) -> Result<Self> {
        let initial = if pids.is_empty() {
            let found = targets::find_servers();
            if found.is_empty() {
                bail!(
                    "no MySQL server process found (looked for {}); start one or pass -p PID",
                    targets::SERVER_NAMES.join(", ")
                );
            }
            found
        } else {
            targets::check_pids(pids)?
        };
        Ok(Self {
            explicit: !pids.is_empty(),
            live: initial.into_iter().map(|s| (s.pid, s)).collect(),
            listeners: HashMap::new(),
        })
    }

    /// Drop exited processes and, in discovery mode, adopt new servers. Returns the exited pids.
    fn refresh(&mut self, probes: &mut Probes, log: &mut dyn Write) -> Result<Vec<u32>> {
        let gone: Vec<u32> =
            self.live.keys().copied().filter(|&p| !targets::process_exists(p)).collect();
        for &pid in &gone {
            probes.remove_target(pid);
            self.live.remove(&pid);
            self.listeners.retain(|(p, _), _| *p != pid);
            writeln!(log, "handshake-trace: pid {pid} exited; still tracing")?;
        }
        if !self.explicit {
            for s in targets::find_servers() {
                if let std::collections::btree_map::Entry::Vacant(e) = self.live.entry(s.pid) {
                    probes.add_target(s.pid)?;
                    writeln!(log, "handshake-trace: now tracing {} (pid {})", s.comm, s.pid)?;
                    e.insert(s);
                }
            }
        }
        Ok(gone)
    }

    fn listener(&mut self, pid: u32, fd: i32) -> Option<SocketAddr> {
        if let Some(a) = self.listeners.get(&(pid, fd)) {
            return Some(*a);
        }
        let found = targets::listening_sockets(pid);
        for (lfd, addr) in &found {
            self.listeners.insert((pid, *lfd), *addr);
        }
        found.get(&fd).copied()
    }
}

/// Prints finished handshakes the way the options ask.
struct Printer<'a> {
    opts: &'a WatchOptions,
    clock: Clock,
    rollup_ok: u64,
    rollup_hist: Histogram,
}

impl Printer<'_> {
    fn handshake(&mut self, h: &Handshake, out: &mut dyn Write) -> Result<()> {
        if self.opts.json {
            writeln!(out, "{}", handshake_json(h, &self.clock))?;
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
                crate::clock::format_time_of_day(std::time::SystemTime::now()),
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

/// Everything the event loop updates.
struct State<'a> {
    targets: Targets,
    correlator: Correlator,
    printer: Printer<'a>,
    summary: Summary,
    /// Connections dropped by --port, by (pid, fd, generation): their events are ignored.
    filtered: std::collections::HashSet<(u32, i32, u64)>,
}

/// Trace until `stop` completes; write handshakes to `out`, notices to `log`.
pub async fn run(
    opts: &WatchOptions,
    out: &mut dyn Write,
    log: &mut dyn Write,
    stop: impl Future<Output = ()>,
) -> Result<Summary> {
    let targets = Targets::start(&opts.pids)?;
    let load = LoadOptions {
        ringbuf_bytes: opts.ringbuf_bytes.unwrap_or(LoadOptions::default().ringbuf_bytes),
    };
    let mut probes = Probes::load(&load)?;
    for w in &probes.warnings {
        writeln!(log, "WARNING: {w}")?;
    }
    for &pid in targets.live.keys() {
        probes.add_target(pid)?;
    }
    let ring = probes.take_events().context("event ring buffer")?;
    // SAFETY: the RingBuf owns its map fd, which stays open and unchanged for as long
    // as the AsyncFd holds it.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(std::io::Error::from)
        .context("poll the ring buffer")?;
    let names: Vec<String> =
        targets.live.values().map(|s| format!("{} (pid {})", s.comm, s.pid)).collect();
    let mut st = State {
        targets,
        correlator: Correlator::new(MAX_OPEN),
        printer: Printer { opts, clock: Clock::now(), rollup_ok: 0, rollup_hist: Histogram::default() },
        summary: Summary::default(),
        filtered: Default::default(),
    };
    writeln!(
        log,
        "Tracing MySQL handshakes of {}{}... Hit Ctrl-C to end.",
        names.join(", "),
        opts.port.map(|p| format!(" on port {p}")).unwrap_or_default()
    )?;
    out.flush()?;

    tokio::pin!(stop);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut rollup = tokio::time::interval(Duration::from_secs(opts.rollup_secs.unwrap_or(3600).max(1)));
    rollup.tick().await;
    let mut reported_lost = 0;
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                drain(guard.get_inner_mut(), &mut st, out, log)?;
                guard.clear_ready();
            }
            _ = tick.tick() => {
                let gone = st.targets.refresh(&mut probes, log)?;
                // Without sched_process_exit the refresh is how exits are noticed.
                for pid in gone {
                    let ev = Event::ProcessExit { ts_ns: monotonic_ns(), pid };
                    handle(&ev, &mut st, out)?;
                }
                probes.flush_logs();
                reported_lost = warn_new_losses(&probes, reported_lost, log)?;
            }
            _ = rollup.tick(), if opts.rollup_secs.is_some() => st.printer.rollup(out)?,
            _ = &mut stop => break,
        }
    }
    // Events already in the ring when we were told to stop still count.
    drain(ring.get_mut(), &mut st, out, log)?;
    for h in st.correlator.finish_all(monotonic_ns()) {
        st.summary.record(&h, opts.keep_outcomes);
        st.printer.handshake(&h, out)?;
    }
    if opts.rollup_secs.is_some() {
        st.printer.rollup(out)?;
    }
    out.flush()?;
    st.summary.counters = probes.counters()?;
    st.summary.unmatched = st.correlator.unmatched;
    st.summary.targets_seen = st.targets.live.keys().copied().collect();
    Ok(st.summary)
}

fn warn_new_losses(probes: &Probes, reported: u64, log: &mut dyn Write) -> Result<u64> {
    let c = probes.counters()?;
    if c.lost() > reported {
        writeln!(
            log,
            "WARNING: {} events lost so far ({} ring buffer full, {} map full); raise --ringbuf-kb",
            c.lost(),
            c.lost_ringbuf,
            c.lost_mapfull
        )?;
    }
    Ok(c.lost())
}

fn drain(
    ring: &mut aya::maps::RingBuf<aya::maps::MapData>,
    st: &mut State,
    out: &mut dyn Write,
    log: &mut dyn Write,
) -> Result<()> {
    while let Some(item) = ring.next() {
        let decoded = decode(&item);
        drop(item);
        if st.printer.opts.raw_events {
            writeln!(out, "# {decoded:?}")?;
        }
        match decoded {
            Ok(ev) => handle(&ev, st, out)?,
            Err(e) => {
                st.summary.undecodable += 1;
                writeln!(log, "WARNING: undecodable event: {e}")?;
            }
        }
    }
    out.flush()?;
    Ok(())
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

fn handle(ev: &Event, st: &mut State, out: &mut dyn Write) -> Result<()> {
    let mut server = None;
    let mut ev = std::borrow::Cow::Borrowed(ev);
    if let Event::Accept(a) = ev.as_ref() {
        if a.fd().is_none() {
            st.summary.accept_errors += 1;
            return Ok(());
        }
        server = st.targets.listener(a.pid, a.listen_fd);
        // Missing pieces (an accept already blocking when tracing began, or a server that
        // passes no address buffer): ask /proc about the new socket while the fd is fresh.
        let from_proc = if server.is_none() || a.peer.is_none() { a.fd().and_then(|fd| targets::socket_addrs(a.pid, fd)) } else { None };
        if server.is_none() {
            server = from_proc.map(|(local, _)| local);
        }
        if let Some(port) = st.printer.opts.port {
            if server.map(|s| s.port()) != Some(port) {
                st.summary.filtered_out += 1;
                st.filtered.extend(conn_key(&ev));
                return Ok(());
            }
        }
        if a.peer.is_none() {
            let mut a = a.clone();
            a.peer = from_proc.map(|(_, remote)| remote);
            ev = std::borrow::Cow::Owned(Event::Accept(a));
        }
    } else if let Event::ProcessExit { pid, .. } = ev.as_ref() {
        st.filtered.retain(|k| k.0 != *pid);
    } else if let Some(k) = conn_key(&ev) {
        if st.filtered.contains(&k) {
            if matches!(ev.as_ref(), Event::Syscall(s) if s.kind == crate::events::SyscallKind::TrackingEnd || s.kind == crate::events::SyscallKind::Close) {
                st.filtered.remove(&k);
            }
            return Ok(());
        }
    }
    for h in st.correlator.push(&ev, server) {
        st.summary.record(&h, st.printer.opts.keep_outcomes);
        st.printer.handshake(&h, out)?;
    }
    Ok(())
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
