//! `watch`: attach, follow the target processes, feed the kernel's events to a
//! [`Session`] as they arrive. Everything aya- and /proc-specific lives here.
use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    io::Write,
    net::SocketAddr,
    time::Duration,
};

use anyhow::{bail, Context, Result};
use tokio::io::{unix::AsyncFd, Interest};

pub use crate::pipeline::{print_summary, Outcome, Summary, WatchOptions};
use crate::{
    support::clock::{format_rfc3339, monotonic_ns, Clock},
    events::{decode, Event},
    capture::probes::{LoadOptions, Probes},
    events::Counters,
    recording::format::{TargetInfo, TraceEnd, TraceHeader, TraceWriter},
    recording::redact::Redactor,
    output::printer::Printer,
    pipeline::{AcceptAddrs, Pipeline},
    capture::targets::{self, ServerProcess},
};

/// Writes what the pipeline saw to a trace file: events with their secrets zeroed,
/// the addresses used for each accept, exits, and the trailer.
struct Recorder {
    writer: TraceWriter<std::io::BufWriter<std::fs::File>>,
    redactor: Redactor,
}

impl Recorder {
    fn create(path: &std::path::Path, clock: &Clock, targets: &Targets, ringbuf_bytes: u32) -> Result<Self> {
        let file = std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
        let header = TraceHeader {
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string(),
            started: format_rfc3339(std::time::SystemTime::now()),
            clock_offset_ns: clock.offset_ns(),
            targets: targets
                .live
                .values()
                .map(|s| TargetInfo { pid: s.pid, comm: s.comm.clone(), exe: s.exe.as_ref().map(|e| e.display().to_string()) })
                .collect(),
            ringbuf_bytes,
            redacted: true,
        };
        Ok(Recorder { writer: TraceWriter::new(std::io::BufWriter::new(file), &header)?, redactor: Redactor::new() })
    }

    fn event(&mut self, raw: &[u8], ev: Option<&Event>, addrs: AcceptAddrs) -> Result<()> {
        let mut raw = raw.to_vec();
        self.redactor.redact(&mut raw);
        self.writer.event(&raw)?;
        if let Some(Event::Accept(_)) = ev {
            self.writer.addrs(addrs.server, addrs.client)?;
        }
        Ok(())
    }

    fn finish(self, counters: &Counters, undecodable: u64, stop_ns: u64) -> Result<()> {
        let end = TraceEnd {
            ended: format_rfc3339(std::time::SystemTime::now()),
            emitted: counters.emitted,
            lost_ringbuf: counters.lost_ringbuf,
            lost_mapfull: counters.lost_mapfull,
            undecodable,
            stop_ns,
        };
        self.writer.end(&end)?;
        Ok(())
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

/// Addresses of an accept from /proc: the listener's (cached), else the new socket's own.
fn accept_addrs(ev: &Event, targets: &mut Targets) -> AcceptAddrs {
    let Event::Accept(a) = ev else { return AcceptAddrs::default() };
    let Some(fd) = a.fd() else { return AcceptAddrs::default() };
    // A Unix-socket client has no address; /proc by fd could name a later TCP socket.
    if a.unix {
        return AcceptAddrs::default();
    }
    let mut server = targets.listener(a.pid, a.listen_fd);
    let mut client = None;
    // An accept already blocking when tracing began, or a server that passes no address
    // buffer: ask /proc about the new socket while the fd is fresh.
    if server.is_none() || a.peer.is_none() {
        if let Some((local, remote)) = targets::socket_addrs(a.pid, fd) {
            server = server.or(Some(local));
            client = Some(remote);
        }
    }
    AcceptAddrs { server, client }
}

/// How often the ring buffer is drained without a wakeup from the kernel.
const DRAIN_EVERY: Duration = Duration::from_millis(50);

/// Trace until `stop` completes; write handshakes to `out`, notices to `log`.
pub async fn run(
    opts: &WatchOptions,
    out: &mut dyn Write,
    log: &mut dyn Write,
    stop: impl Future<Output = ()>,
) -> Result<Summary> {
    let mut targets = Targets::start(&opts.pids)?;
    let load = LoadOptions {
        ringbuf_bytes: opts.ringbuf_bytes.unwrap_or(LoadOptions::default().ringbuf_bytes),
        attach: opts.attach,
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
    let clock = Clock::now();
    let mut recorder = match &opts.record {
        Some(path) => Some(Recorder::create(path, &clock, &targets, load.ringbuf_bytes)?),
        None => None,
    };
    let mut pipeline = Pipeline::new(opts).with_sink(Printer::new(opts.print(), clock, &mut *out));
    let mut undecodable = 0;
    writeln!(
        log,
        "Tracing MySQL handshakes of {}{}... Hit Ctrl-C to end.",
        names.join(", "),
        opts.port.map(|p| format!(" on port {p}")).unwrap_or_default()
    )?;

    tokio::pin!(stop);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // The kernel wakes us only when the ring fills up; otherwise we drain on this timer.
    let mut drain_tick = tokio::time::interval(DRAIN_EVERY);
    let mut rollup = tokio::time::interval(Duration::from_secs(opts.rollup_secs.unwrap_or(3600).max(1)));
    rollup.tick().await;
    let mut reported_lost = 0;
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                drain(guard.get_inner_mut(), opts, &mut targets, &mut pipeline, &mut recorder, &mut undecodable, log)?;
                guard.clear_ready();
            }
            _ = drain_tick.tick() => {
                drain(ring.get_mut(), opts, &mut targets, &mut pipeline, &mut recorder, &mut undecodable, log)?;
            }
            _ = tick.tick() => {
                let gone = targets.refresh(&mut probes, log)?;
                // Without sched_process_exit the refresh is how exits are noticed.
                for pid in gone {
                    let ts_ns = monotonic_ns();
                    if let Some(r) = recorder.as_mut() {
                        r.writer.exit(pid, ts_ns)?;
                    }
                    pipeline.push(&Event::ProcessExit { ts_ns, pid }, AcceptAddrs::default())?;
                }
                probes.flush_logs();
                reported_lost = warn_new_losses(&probes, reported_lost, log)?;
            }
            _ = rollup.tick(), if opts.rollup_secs.is_some() => pipeline.rollup()?,
            _ = &mut stop => break,
        }
    }
    // Events already in the ring when we were told to stop still count.
    drain(ring.get_mut(), opts, &mut targets, &mut pipeline, &mut recorder, &mut undecodable, log)?;
    let stop_ns = monotonic_ns();
    let counters = probes.counters()?;
    if let Some(r) = recorder {
        r.finish(&counters, undecodable, stop_ns)?;
    }
    let mut summary = pipeline.finish(stop_ns, counters)?;
    summary.undecodable = undecodable;
    summary.targets_seen = targets.live.keys().copied().collect();
    Ok(summary)
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
    opts: &WatchOptions,
    targets: &mut Targets,
    pipeline: &mut Pipeline,
    recorder: &mut Option<Recorder>,
    undecodable: &mut u64,
    log: &mut dyn Write,
) -> Result<()> {
    while let Some(item) = ring.next() {
        let decoded = decode(&item);
        let addrs = decoded.as_ref().map(|ev| accept_addrs(ev, targets)).unwrap_or_default();
        if let Some(r) = recorder.as_mut() {
            r.event(&item, decoded.as_ref().ok(), addrs)?;
        }
        drop(item);
        if opts.raw_events {
            writeln!(log, "# {decoded:?}")?;
        }
        match decoded {
            Ok(ev) => pipeline.push(&ev, addrs)?,
            Err(e) => {
                *undecodable += 1;
                writeln!(log, "WARNING: undecodable event: {e}")?;
            }
        }
    }
    pipeline.flush()
}
