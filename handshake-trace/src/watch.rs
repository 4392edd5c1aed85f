//! `watch`: attach, follow the target processes, print what they accept.
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
    clock::Clock,
    events::{decode, Accept, Event},
    probes::{Counters, LoadOptions, Probes},
    render::{self, AcceptView},
    targets::{self, ServerProcess},
};

#[derive(Debug, Clone, Default)]
pub struct WatchOptions {
    /// Explicit targets; empty = every mysqld/mariadbd, including ones started later.
    pub pids: Vec<u32>,
    /// Keep only connections accepted on this local port.
    pub port: Option<u16>,
    pub json: bool,
    pub ringbuf_bytes: Option<u32>,
}

/// What a trace saw, for the summary at exit.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Summary {
    pub accepted: u64,
    pub accept_errors: u64,
    pub filtered_out: u64,
    pub undecodable: u64,
    pub counters: Counters,
    pub targets_seen: Vec<u32>,
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

    /// Drop exited processes and, in discovery mode, adopt new servers.
    fn refresh(&mut self, probes: &mut Probes, log: &mut dyn Write) -> Result<()> {
        let gone: Vec<u32> =
            self.live.keys().copied().filter(|&p| !targets::process_exists(p)).collect();
        for pid in gone {
            probes.remove_target(pid);
            self.live.remove(&pid);
            self.listeners.retain(|(p, _), _| *p != pid);
            writeln!(log, "handshake-trace: pid {pid} exited; still tracing")?;
        }
        if !self.explicit {
            for s in targets::find_servers() {
                if !self.live.contains_key(&s.pid) {
                    probes.add_target(s.pid)?;
                    writeln!(log, "handshake-trace: now tracing {} (pid {})", s.comm, s.pid)?;
                    self.live.insert(s.pid, s);
                }
            }
        }
        Ok(())
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

/// Trace until `stop` completes; write events to `out`, notices to `log`.
pub async fn run(
    opts: &WatchOptions,
    out: &mut dyn Write,
    log: &mut dyn Write,
    stop: impl Future<Output = ()>,
) -> Result<Summary> {
    let mut targets = Targets::start(&opts.pids)?;
    let load = LoadOptions {
        ringbuf_bytes: opts.ringbuf_bytes.unwrap_or(LoadOptions::default().ringbuf_bytes),
    };
    let mut probes = Probes::load(&load)?;
    for &pid in targets.live.keys() {
        probes.add_target(pid)?;
    }
    let ring = probes.take_events().context("event ring buffer")?;
    // SAFETY: the RingBuf owns its map fd, which stays open and unchanged for as long
    // as the AsyncFd holds it.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(std::io::Error::from)
        .context("poll the ring buffer")?;
    let clock = Clock::now();
    let mut summary = Summary::default();

    let names: Vec<String> =
        targets.live.values().map(|s| format!("{} (pid {})", s.comm, s.pid)).collect();
    writeln!(
        log,
        "Tracing accepted connections of {}{}... Hit Ctrl-C to end.",
        names.join(", "),
        opts.port.map(|p| format!(" on port {p}")).unwrap_or_default()
    )?;
    if !opts.json {
        writeln!(out, "{}", render::ACCEPT_HEADER)?;
    }
    out.flush()?;

    tokio::pin!(stop);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut reported_lost = 0;
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                drain(guard.get_inner_mut(), &mut targets, opts, &clock, out, log, &mut summary)?;
                guard.clear_ready();
            }
            _ = tick.tick() => {
                targets.refresh(&mut probes, log)?;
                probes.flush_logs();
                reported_lost = warn_new_losses(&probes, reported_lost, log)?;
            }
            _ = &mut stop => break,
        }
    }
    // Events already in the ring when we were told to stop still count.
    drain(ring.get_mut(), &mut targets, opts, &clock, out, log, &mut summary)?;
    summary.counters = probes.counters()?;
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
    targets: &mut Targets,
    opts: &WatchOptions,
    clock: &Clock,
    out: &mut dyn Write,
    log: &mut dyn Write,
    summary: &mut Summary,
) -> Result<()> {
    while let Some(item) = ring.next() {
        match decode(&item) {
            Ok(Event::Accept(a)) => on_accept(&a, targets, opts, clock, out, summary)?,
            Ok(_) => {}
            Err(e) => {
                summary.undecodable += 1;
                writeln!(log, "WARNING: undecodable event: {e}")?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

fn on_accept(
    a: &Accept,
    targets: &mut Targets,
    opts: &WatchOptions,
    clock: &Clock,
    out: &mut dyn Write,
    summary: &mut Summary,
) -> Result<()> {
    let server = targets.listener(a.pid, a.listen_fd);
    if let Some(port) = opts.port {
        if server.map(|s| s.port()) != Some(port) {
            summary.filtered_out += 1;
            return Ok(());
        }
    }
    // A server that passes no address buffer to accept: ask /proc while the fd is fresh.
    let client = a.peer.or_else(|| a.fd().and_then(|fd| targets::socket_addrs(a.pid, fd)).map(|(_, r)| r));
    match a.fd() {
        Some(_) => summary.accepted += 1,
        None => summary.accept_errors += 1,
    }
    let view = AcceptView { accept: a, server, client };
    if opts.json {
        writeln!(out, "{}", render::accept_json(&view, clock))?;
    } else {
        writeln!(out, "{}", render::accept_line(&view, clock))?;
    }
    Ok(())
}

/// The summary printed at exit.
pub fn print_summary(s: &Summary, log: &mut dyn Write) -> Result<()> {
    writeln!(log)?;
    writeln!(
        log,
        "Summary: {} connections accepted, {} failed accepts{}",
        s.accepted,
        s.accept_errors,
        if s.filtered_out > 0 { format!(", {} on other ports", s.filtered_out) } else { String::new() }
    )?;
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
