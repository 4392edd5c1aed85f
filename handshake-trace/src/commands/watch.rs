//! The live loop of `watch`, `record` and `agent`: attach, follow the target
//! processes, and feed the kernel's events through the [`Pipeline`] and its sinks as
//! they arrive. `watch` gives it the printer; `agent` its exporters and an [`Observer`].
use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
    io::Write,
    time::Duration,
};

use anyhow::{Context, Result};
use tokio::io::{unix::AsyncFd, Interest};

pub use super::options::WatchOptions;
pub use crate::{
    output::summary::{print_summary, print_summary_on},
    pipeline::{Outcome, Summary},
};
use crate::{
    capture::{
        cgroup::{Place, RootWhy},
        probes::{CaptureTier, LoadOptions, Probes},
        targets::{Refusal, RefuseReason},
        tracked::{accept_addrs, Considered, Targets},
    },
    events::{decode, AcceptAddrs, Counters, Event},
    output::{
        notice::{self, Level},
        printer::Printer,
    },
    pipeline::{Pipeline, Sink, Tables},
    recording::{format::TargetInfo, recorder::Recorder},
    support::{
        clock::{monotonic_ns, Clock},
        escape::Escaped,
    },
};

/// How often the ring buffer is drained without a wakeup from the kernel (which wakes
/// us only once a quarter of the ring is filled: see the kernel side's `submit_flags`).
const DRAIN_EVERY: Duration = Duration::from_millis(50);

/// Records read per batch at most (a few hundred handshakes' worth): a ring that filled
/// while the tracer was starved of CPU is handled slice by slice, each slice's handshakes
/// delivered and freed before the next, so memory does not grow with the ring's backlog.
/// Each slice costs one read of the loss counters.
const SLICE_RECORDS: usize = 1024;

/// Slices read before the live loop turns to its other work (and back, at once, when
/// records are left).
const SLICES_PER_DRAIN: usize = 16;

type Ring = AsyncFd<aya::maps::RingBuf<aya::maps::MapData>>;

/// The live side of a trace: the attached programs, their ring buffer, the targets,
/// and the recorder when `record` asked for one.
struct Tracer<'o> {
    opts: &'o WatchOptions,
    probes: Probes,
    targets: Targets,
    recorder: Option<Recorder>,
    undecodable: u64,
    /// The counters when losses were last reported.
    reported_lost: Counters,
    /// Lost records already accounted to a batch.
    lost_seen: u64,
    /// The last batch stopped at its bound.
    last_cut: bool,
    /// The targets' Unix-socket listeners whose clients this tier cannot see.
    unseen_unix: BTreeMap<u32, BTreeSet<String>>,
    /// Socket tier: where the packet programs were last said to be.
    packets_said: Option<Place>,
}

impl Tracer<'_> {
    /// The records in the ring, through the recorder and the pipeline, in slices of at
    /// most [`SLICE_RECORDS`]: each slice's finished handshakes go out (and their memory
    /// is freed) before the next is read, so a full ring never becomes one big batch.
    /// Stops after [`SLICES_PER_DRAIN`] slices so the loop's other work (the second's
    /// tick, the metrics' HTTP server) runs during a flood; whether the ring was emptied.
    fn drain(
        &mut self,
        ring: &mut aya::maps::RingBuf<aya::maps::MapData>,
        pipeline: &mut Pipeline,
        observer: &mut dyn Observer,
        log: &mut dyn Write,
    ) -> Result<bool> {
        for _ in 0..SLICES_PER_DRAIN {
            if self.slice(ring, pipeline, observer, log)? < SLICE_RECORDS {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Read up to [`SLICE_RECORDS`] records, then end the batch; the number read.
    fn slice(
        &mut self,
        ring: &mut aya::maps::RingBuf<aya::maps::MapData>,
        pipeline: &mut Pipeline,
        observer: &mut dyn Observer,
        log: &mut dyn Write,
    ) -> Result<usize> {
        let mut records = 0;
        while records < SLICE_RECORDS {
            let Some(item) = ring.next() else { break };
            records += 1;
            // Discovery: the kernel follows a process named like a server from its first
            // listen; decide on it before anything of it is recorded or judged.
            if let Some(pid) = record_pid(&item) {
                match self.targets.consider(pid, &mut self.probes) {
                    Considered::Target => {}
                    Considered::Adopted(pid, name) => {
                        notice::say(log, &self.opts.notices, Level::Notice, &notice::adopted(pid, &name))?;
                        self.after_adoption(log, &[pid])?;
                    }
                    Considered::Refused(pid, name, why) => {
                        notice::say(log, &self.opts.notices, Level::Warning, &refused_notice(pid, &name, &why))?;
                        continue;
                    }
                    Considered::Dropped | Considered::Undecided => continue,
                }
            }
            let decoded = decode(&item);
            let addrs = decoded.as_ref().map(|ev| accept_addrs(ev, &mut self.targets)).unwrap_or_default();
            if let Some(r) = self.recorder.as_mut() {
                r.event(&item, decoded.as_ref().ok(), addrs)?;
            }
            observer.raw(&item, decoded.as_ref().ok(), addrs);
            if let Ok(Event::Accept(a)) = &decoded {
                if a.packets_unseen {
                    self.probes.packets_to_root()?;
                }
                if let Some(path) = (a.unix && !a.established).then(|| self.targets.unix_path(a.pid, a.listen_fd)).flatten() {
                    pipeline.unix_listener(a.pid, a.listen_fd, path);
                }
            }
            drop(item);
            if self.opts.raw_events {
                writeln!(log, "# {decoded:?}")?;
            }
            match decoded {
                Ok(ev) => pipeline.push(&ev, addrs)?,
                Err(e) => {
                    self.undecodable += 1;
                    notice::say(log, &self.opts.notices, Level::Warning, &format!("undecodable event: {e}"))?;
                }
            }
        }
        // Records lost since the last count were lost while the handshakes of this batch
        // (finished in it, or still open) were open: none may be judged from what is left.
        let lost = self.probes.counters()?.lost();
        let lost_now = lost.saturating_sub(self.lost_seen);
        self.lost_seen = lost;
        let cut = records == SLICE_RECORDS;
        // An empty batch after a cut one still ends the loss it carried: the replay must see it.
        let after_cut = std::mem::replace(&mut self.last_cut, cut);
        if records > 0 || lost_now > 0 || after_cut {
            if let Some(r) = self.recorder.as_mut() {
                r.writer.drained(lost_now, cut)?;
            }
        }
        if cut {
            pipeline.slice_end(lost_now > 0)?;
        } else {
            pipeline.batch_end(lost_now > 0)?;
        }
        pipeline.flush()?;
        super::server_facts::warn_hosts(pipeline, self.opts, log)?;
        Ok(records)
    }

    /// Socket tier: say where the packet programs are when that changed.
    fn say_packets_place(&mut self, log: &mut dyn Write) -> Result<()> {
        let Some(place) = self.probes.packets_at().cloned() else { return Ok(()) };
        if self.packets_said.as_ref() == Some(&place) {
            return Ok(());
        }
        let level = if matches!(place, Place::Root(RootWhy::Moved)) { Level::Warning } else { Level::Notice };
        notice::say(log, &self.opts.notices, level, &notice::packets_at(&place))?;
        self.packets_said = Some(place);
        Ok(())
    }

    /// New targets `pids`: the Unix-socket listeners this tier cannot see.
    fn after_adoption(&mut self, log: &mut dyn Write, pids: &[u32]) -> Result<()> {
        self.unseen_unix = unseen_unix_listeners(&self.targets, self.opts, &self.probes);
        warn_unix_listeners(&self.targets, &self.unseen_unix, pids.iter().copied(), &self.probes, self.opts, log)
    }

    /// Once a second: targets that came and went, the programs' log, new losses. A
    /// process that cannot be traced is refused with a warning; the trace goes on.
    /// Whether a target was adopted.
    fn tick(&mut self, pipeline: &mut Pipeline, log: &mut dyn Write) -> Result<bool> {
        let changes = self.targets.refresh(&mut self.probes);
        let adopted = !changes.adopted.is_empty();
        for (pid, name) in &changes.adopted {
            notice::say(log, &self.opts.notices, Level::Notice, &notice::adopted(*pid, name))?;
            if let Some(s) = self.targets.live.get(pid) {
                super::server_facts::adopt(s, self.opts, pipeline, log)?;
            }
        }
        for (pid, name, why) in &changes.refused {
            notice::say(log, &self.opts.notices, Level::Warning, &refused_notice(*pid, name, why))?;
        }
        for (pid, errno) in &changes.unknown {
            let text = format!(
                "cannot read /proc/{pid}/stat ({}): pid {pid} is still traced, asked again in a second",
                std::io::Error::from_raw_os_error(*errno)
            );
            notice::say(log, &self.opts.notices, Level::Warning, &text)?;
        }
        if !changes.adopted.is_empty() || !changes.gone.is_empty() || !changes.refused.is_empty() {
            let adopted: Vec<u32> = changes.adopted.iter().map(|a| a.0).collect();
            self.after_adoption(log, &adopted)?;
        }
        // Dropped for too many ports: its open handshakes end like an exit's.
        for (pid, _, _) in changes.refused.iter().filter(|(_, _, r)| r.reason == RefuseReason::TooManyPorts) {
            pipeline.push(&Event::ProcessExit { ts_ns: monotonic_ns(), pid: *pid }, AcceptAddrs::default())?;
        }
        // Without sched_process_exit the refresh is how exits are noticed.
        for pid in changes.gone {
            notice::say(log, &self.opts.notices, Level::Notice, &notice::exited(pid))?;
            let ts_ns = monotonic_ns();
            if let Some(r) = self.recorder.as_mut() {
                r.writer.exit(pid, ts_ns)?;
            }
            pipeline.push(&Event::ProcessExit { ts_ns, pid }, AcceptAddrs::default())?;
        }
        self.say_packets_place(log)?;
        if let Err(e) = self.probes.rescan_unix_listeners() {
            notice::say(log, &self.opts.notices, Level::Warning, &format!("{e:#}"))?;
        }
        self.probes.flush_logs();
        let c = self.probes.counters()?;
        if c.lost() > self.reported_lost.lost() {
            notice::say(log, &self.opts.notices, Level::Warning, &notice::events_lost(&c, &self.reported_lost))?;
        }
        self.reported_lost = c;
        Ok(adopted)
    }
}

/// What the live loop knows of itself: the agent's health metrics.
#[derive(Debug, Clone, Default)]
pub struct Health {
    /// The kernel's counters (events emitted, lost by reason).
    pub counters: Counters,
    /// Records that did not decode.
    pub undecodable: u64,
    /// Programs attached.
    pub programs: usize,
    /// Server processes traced.
    pub targets: usize,
    /// The targets' Unix-socket listeners whose clients the capture tier cannot see.
    pub unseen_unix_listeners: usize,
    pub tables: Tables,
    /// Processes refused so far, by reason (never traced, or dropped).
    pub refused: BTreeMap<RefuseReason, u64>,
    /// Times /proc could not say whether a target lives (it was kept, and asked again).
    pub proc_unknown: u64,
    /// The client hosts nearest their server's max_connect_errors (at most [`HOSTS_REPORTED`]).
    pub hosts: Vec<crate::pipeline::HostStanding>,
}

/// Hosts near their server's max_connect_errors reported in [`Health`] at most.
pub const HOSTS_REPORTED: usize = 100;

/// Told of the live loop's progress; `watch` has nothing to tell (`()`).
pub trait Observer {
    /// The programs are attached: tracing has begun.
    fn attached(&mut self, _health: &Health) -> Result<()> {
        Ok(())
    }
    /// Once a second.
    fn tick(&mut self, _health: &Health) -> Result<()> {
        Ok(())
    }
    /// Each raw record as it arrives, before the pipeline sees it (the flight recorder).
    fn raw(&mut self, _raw: &[u8], _ev: Option<&Event>, _addrs: AcceptAddrs) {}
    /// The targets' TCP listening addresses, and whether one has a Unix socket: at
    /// start and when the targets change (the metrics' zero series).
    fn servers(&mut self, _listening: &[std::net::SocketAddr], _unix: bool) {}
    /// The targets (pid, program): at start and when they change (the flight recorder's
    /// file headers).
    fn targets(&mut self, _targets: &[TargetInfo]) {}
}

impl Observer for () {}

impl Tracer<'_> {
    /// The targets' TCP listening addresses, and whether any has a Unix socket (/proc).
    fn listening(&self) -> (Vec<std::net::SocketAddr>, bool) {
        let pids = self.targets.live.keys();
        let tcp: BTreeSet<std::net::SocketAddr> = pids.clone().flat_map(|p| crate::capture::targets::listening_sockets(*p).into_values()).collect();
        let unix = pids.into_iter().any(|p| !crate::capture::targets::unix_listeners(*p).is_empty());
        (tcp.into_iter().collect(), unix)
    }

    fn health(&self, pipeline: &Pipeline) -> Result<Health> {
        Ok(Health {
            counters: self.probes.counters()?,
            undecodable: self.undecodable,
            programs: self.probes.attached,
            targets: self.targets.live.len(),
            unseen_unix_listeners: self.unseen_unix.values().map(BTreeSet::len).sum(),
            tables: pipeline.tables(),
            refused: self.targets.refusals.clone(),
            proc_unknown: self.targets.proc_unknown,
            hosts: pipeline.hosts_nearest(HOSTS_REPORTED),
        })
    }
}

/// The warning for a process refused (never traced, or dropped).
fn refused_notice(pid: u32, name: &str, why: &Refusal) -> String {
    format!("not tracing {name} (pid {pid}): {} [{}]", why.detail, why.reason.name())
}

/// The pid in a record's header (before it is decoded).
fn record_pid(raw: &[u8]) -> Option<u32> {
    let at = std::mem::offset_of!(handshake_trace_common::EventHeader, pid);
    Some(u32::from_ne_bytes(raw.get(at..at + 4)?.try_into().ok()?))
}

/// Load and attach the programs for the targets; the ring buffer to read. A starting
/// target the kernel's maps cannot hold is refused with a warning.
fn attach(opts: &WatchOptions, targets: &mut Targets, log: &mut dyn Write) -> Result<(Probes, Ring, u32)> {
    let load = LoadOptions {
        ringbuf_bytes: opts.ringbuf_bytes.unwrap_or(LoadOptions::default().ringbuf_bytes),
        attach: opts.attach,
        capture: opts.capture,
        port: opts.port,
        discover: targets.discovering(),
    };
    let mut probes = Probes::load(&load)?;
    if let Some(why) = &probes.fallback {
        writeln!(log, "{}", opts.notices.fold(&crate::capture::probes::fallback_notice(why), 4))?;
    }
    for w in &probes.warnings {
        notice::say(log, &opts.notices, Level::Warning, w)?;
    }
    for (pid, name, why) in targets.attach(&mut probes)? {
        notice::say(log, &opts.notices, Level::Warning, &refused_notice(pid, &name, &why))?;
    }
    let ring = probes.take_events().context("event ring buffer")?;
    // SAFETY: the RingBuf owns its map fd, which stays open and unchanged for as long
    // as the AsyncFd holds it.
    let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(std::io::Error::from)
        .context("poll the ring buffer")?;
    Ok((probes, ring, load.ringbuf_bytes))
}

/// The Unix-socket listening paths of each target whose clients this tracer cannot
/// see: on the socket tier of a kernel without its Unix-socket hooks, all of them;
/// none on the syscall tier, on the socket tier that follows them, or with `--port`
/// (which follows one TCP port by choice).
fn unseen_unix_listeners(targets: &Targets, opts: &WatchOptions, probes: &Probes) -> BTreeMap<u32, BTreeSet<String>> {
    if probes.capture != CaptureTier::Socket || probes.unix_clients.is_ok() || opts.port.is_some() {
        return BTreeMap::new();
    }
    targets
        .live
        .values()
        .map(|s| (s.pid, crate::capture::targets::unix_listeners(s.pid).into_values().collect::<BTreeSet<String>>()))
        .filter(|(_, paths)| !paths.is_empty())
        .collect()
}

/// Warn of the Unix-socket listeners of `pids` (new targets) that this tracer cannot see.
fn warn_unix_listeners(
    targets: &Targets,
    unseen: &BTreeMap<u32, BTreeSet<String>>,
    pids: impl Iterator<Item = u32>,
    probes: &Probes,
    opts: &WatchOptions,
    log: &mut dyn Write,
) -> Result<()> {
    let why = probes.unix_clients.as_ref().err().map(String::as_str).unwrap_or("");
    for pid in pids {
        let (Some(s), Some(paths)) = (targets.live.get(&pid), unseen.get(&pid)) else { continue };
        let paths: Vec<String> = paths.iter().map(|p| Escaped(p).to_string()).collect();
        let text = format!(
            "{} (pid {}) also listens on {}: the socket capture tier cannot follow its Unix-socket clients on \
             this kernel ({}) and will not show them (--capture syscalls does)",
            Escaped(&s.comm),
            s.pid,
            paths.join(", "),
            why
        );
        notice::say(log, &opts.notices, Level::Warning, &text)?;
    }
    Ok(())
}

/// Trace until `stop` completes; write handshakes to `out`, notices to `log`.
pub async fn run<'o>(
    opts: &WatchOptions,
    out: &'o mut dyn Write,
    log: &mut dyn Write,
    stop: impl Future<Output = ()>,
) -> Result<Summary> {
    let print = opts.print();
    let printer = move |clock: &Clock| -> Vec<Box<dyn Sink + 'o>> { vec![Box::new(Printer::new(print, *clock, out).with_now(monotonic_ns))] };
    live(opts, printer, &mut (), log, stop).await
}

/// The live loop: trace until `stop` completes, handing finished handshakes to the
/// sinks `sinks` makes (given the trace's clock), notices to `log`, progress to `observer`.
pub async fn live<'s>(
    opts: &WatchOptions,
    sinks: impl FnOnce(&Clock) -> Vec<Box<dyn Sink + 's>>,
    observer: &mut dyn Observer,
    log: &mut dyn Write,
    stop: impl Future<Output = ()>,
) -> Result<Summary> {
    let (mut targets, refused) = Targets::start(&opts.pids)?;
    for (pid, name, why) in &refused {
        notice::say(log, &opts.notices, Level::Warning, &refused_notice(*pid, name, why))?;
    }
    let (probes, mut ring, ringbuf_bytes) = attach(opts, &mut targets, log)?;
    let clock = Clock::now();
    let recorder = match &opts.record {
        Some(path) => Some(Recorder::create(path, opts.overwrite, &clock, target_infos(&targets), ringbuf_bytes)?),
        None => None,
    };
    let names = targets.names();
    for s in targets.live.values().filter(|s| !s.named_like_a_server()) {
        let text = format!(
            "pid {} ({}) is not named mysqld or mariadbd: its connections are decoded as MySQL handshakes anyway",
            s.pid,
            Escaped(&s.comm)
        );
        notice::say(log, &opts.notices, Level::Warning, &text)?;
    }
    let unseen_unix = unseen_unix_listeners(&targets, opts, &probes);
    let mut tracer = Tracer {
        opts,
        probes,
        targets,
        recorder,
        undecodable: 0,
        reported_lost: Counters::default(),
        lost_seen: 0,
        last_cut: false,
        unseen_unix,
        packets_said: None,
    };
    let mut pipeline = sinks(&clock).into_iter().fold(Pipeline::new(opts.pipeline()).in_batches(), Pipeline::with_boxed_sink);
    for s in tracer.targets.live.values() {
        super::server_facts::adopt(s, opts, &mut pipeline, log)?;
    }
    let on_port = opts.port.map(|p| format!(" on port {p}")).unwrap_or_default();
    if let Some(notice) = crate::output::text::capture_notice(tracer.probes.capture) {
        writeln!(log, "{}", opts.notices.fold(notice, 4))?;
        let pids: Vec<u32> = tracer.unseen_unix.keys().copied().collect();
        warn_unix_listeners(&tracer.targets, &tracer.unseen_unix, pids.into_iter(), &tracer.probes, opts, log)?;
    }
    tracer.say_packets_place(log)?;
    writeln!(log, "Tracing MySQL handshakes of {names}{on_port}... Hit Ctrl-C to end.")?;
    let (listening, unix) = tracer.listening();
    observer.servers(&listening, unix);
    observer.targets(&target_infos(&tracer.targets));
    observer.attached(&tracer.health(&pipeline)?)?;

    tokio::pin!(stop);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // The kernel wakes us only when the ring fills up; otherwise we drain on this timer.
    let mut drain_tick = tokio::time::interval(DRAIN_EVERY);
    let mut rollup = tokio::time::interval(Duration::from_secs(opts.rollup_secs.unwrap_or(3600).max(1)));
    rollup.tick().await;
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                // Records left: stay ready, so the loop comes back for them.
                if tracer.drain(guard.get_inner_mut(), &mut pipeline, observer, log)? {
                    guard.clear_ready();
                }
            }
            _ = drain_tick.tick() => {
                // Unix-socket connections whose server closed them: records for this drain.
                if let Err(e) = tracer.probes.sweep_unix() {
                    notice::say(log, &opts.notices, Level::Warning, &format!("{e:#}"))?;
                }
                tracer.drain(ring.get_mut(), &mut pipeline, observer, log)?;
            }
            _ = tick.tick() => {
                if tracer.tick(&mut pipeline, log)? {
                    let (listening, unix) = tracer.listening();
                    observer.servers(&listening, unix);
                    observer.targets(&target_infos(&tracer.targets));
                }
                observer.tick(&tracer.health(&pipeline)?)?;
            }
            _ = rollup.tick(), if opts.rollup_secs.is_some() => pipeline.rollup()?,
            _ = &mut stop => break,
        }
    }
    // Events already in the ring when we were told to stop still count (more than a ring's
    // worth at most: the servers may keep writing).
    for _ in 0..8 {
        if tracer.drain(ring.get_mut(), &mut pipeline, observer, log)? {
            break;
        }
    }
    let stop_ns = monotonic_ns();
    let counters = tracer.probes.counters()?;
    if let Some(r) = tracer.recorder {
        r.finish(&counters, tracer.undecodable, stop_ns)?;
    }
    let mut summary = pipeline.finish(stop_ns, counters)?;
    summary.undecodable = tracer.undecodable;
    summary.targets_seen = tracer.targets.live.keys().copied().collect();
    Ok(summary)
}

/// What a trace file's header says of the targets.
fn target_infos(targets: &Targets) -> Vec<TargetInfo> {
    targets
        .live
        .values()
        .map(|s| TargetInfo { pid: s.pid, comm: s.comm.clone(), exe: s.exe.as_ref().map(|e| e.display().to_string()) })
        .collect()
}

#[cfg(test)]
mod tests {
    use handshake_trace_common::{kind, EstablishedEvent, EventHeader};

    use super::*;

    #[test]
    fn a_records_pid_is_read_before_it_is_decoded() {
        let e = EstablishedEvent { header: EventHeader { kind: kind::ESTABLISHED, pid: 4242, tid: 0, _pad: 0, ts_ns: 9 }, ..Default::default() };
        // SAFETY: a #[repr(C)] struct without padding, viewed as its bytes.
        let raw = unsafe { std::slice::from_raw_parts((&e as *const EstablishedEvent).cast::<u8>(), std::mem::size_of_val(&e)) };
        assert_eq!(record_pid(raw), Some(4242));
        assert_eq!(record_pid(&raw[..6]), None, "a record too short for its header");
    }

    #[test]
    fn a_refusal_says_who_why_and_the_metric_reason() {
        let why = Refusal::new(RefuseReason::TooManyPorts, "it listens on 300 TCP ports");
        assert_eq!(refused_notice(7, "mysqld", &why), "not tracing mysqld (pid 7): it listens on 300 TCP ports [too_many_ports]");
    }
}
