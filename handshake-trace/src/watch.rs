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

pub use crate::session::{print_summary, Outcome, Summary, WatchOptions};
use crate::{
    clock::{monotonic_ns, Clock},
    events::{decode, Event},
    probes::{LoadOptions, Probes},
    session::{AcceptAddrs, Session},
    targets::{self, ServerProcess},
};

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
    let mut session = Session::new(opts, Clock::now());
    let mut undecodable = 0;
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
                drain(guard.get_inner_mut(), &mut targets, &mut session, &mut undecodable, out, log)?;
                guard.clear_ready();
            }
            _ = tick.tick() => {
                let gone = targets.refresh(&mut probes, log)?;
                // Without sched_process_exit the refresh is how exits are noticed.
                for pid in gone {
                    let ev = Event::ProcessExit { ts_ns: monotonic_ns(), pid };
                    session.handle(&ev, AcceptAddrs::default(), out)?;
                }
                probes.flush_logs();
                reported_lost = warn_new_losses(&probes, reported_lost, log)?;
            }
            _ = rollup.tick(), if opts.rollup_secs.is_some() => session.rollup(out)?,
            _ = &mut stop => break,
        }
    }
    // Events already in the ring when we were told to stop still count.
    drain(ring.get_mut(), &mut targets, &mut session, &mut undecodable, out, log)?;
    let mut summary = session.finish(monotonic_ns(), probes.counters()?, out)?;
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
    targets: &mut Targets,
    session: &mut Session,
    undecodable: &mut u64,
    out: &mut dyn Write,
    log: &mut dyn Write,
) -> Result<()> {
    while let Some(item) = ring.next() {
        let decoded = decode(&item);
        drop(item);
        if session.opts().raw_events {
            writeln!(out, "# {decoded:?}")?;
        }
        match decoded {
            Ok(ev) => {
                let addrs = accept_addrs(&ev, targets);
                session.handle(&ev, addrs, out)?;
            }
            Err(e) => {
                *undecodable += 1;
                writeln!(log, "WARNING: undecodable event: {e}")?;
            }
        }
    }
    out.flush()?;
    Ok(())
}
