//! The pipeline of one trace, shared by `watch`, `record`, `analyze` and the lab:
//! typed events in → `--port` filter → correlator (handshakes, judged as they end) →
//! selection (`--failed`, `--verdict`, `--user`, `--client`) → summary and sinks (the printer; later metrics). Pure: no aya, no tokio, no /proc —
//! addresses come from the caller (live: /proc; replay: the trace file).
mod filter;
pub mod groups;
pub mod host_errors;
pub mod select;
mod summary;
#[cfg(test)]
mod tests;

use anyhow::Result;

pub use filter::PortFilter;
pub use groups::Groups;
pub use host_errors::{HostErrors, HostNote, HostStanding, HostWarning};
pub use select::{ClientMatch, Selection};
pub use summary::{Outcome, Summary};

use crate::{
    config::ServerConfig,
    correlate::{Correlator, Handshake},
    events::{AcceptAddrs, Counters, Event},
};

/// Open handshakes kept in memory at most (the kernel tracks at most as many).
const MAX_OPEN: usize = handshake_trace_common::MAX_CONNS as usize;
/// Finished handshakes a batch's buffer keeps room for between batches.
const PENDING_KEPT: usize = 256;

/// Unix listening sockets named at most (a server has one or two).
const MAX_UNIX_PATHS: usize = 256;

/// Where finished handshakes go.
pub trait Sink {
    fn handshake(&mut self, h: &Handshake) -> Result<()>;
    /// A periodic roll-up is due (`--rollup`).
    fn rollup(&mut self) -> Result<()> {
        Ok(())
    }
    /// The trace ended: write what is pending.
    fn finish(&mut self) -> Result<()> {
        self.flush()
    }
    /// A batch of events was handled: make what was written visible.
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

/// What the pipeline itself applies.
#[derive(Debug, Clone, Default)]
pub struct PipelineOptions {
    /// Keep only connections accepted on this local port.
    pub port: Option<u16>,
    /// Which finished handshakes go on to the summary and the sinks.
    pub select: Selection,
    /// Keep every finished handshake's outcome in the summary (the lab explains them).
    pub keep_outcomes: bool,
}

/// One bounded table's fill: entries now, the bound, entries pushed out by it so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableFill {
    pub entries: usize,
    pub capacity: usize,
    pub evictions: u64,
}

/// The pipeline's bounded tables.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tables {
    /// Open handshakes.
    pub correlator: TableFill,
    /// Connections the --port filter drops.
    pub port_filter: TableFill,
}

/// One trace's pipeline.
pub struct Pipeline<'a> {
    filter: PortFilter,
    correlator: Correlator,
    keep_outcomes: bool,
    select: Selection,
    summary: Summary,
    sinks: Vec<Box<dyn Sink + 'a>>,
    /// Handshakes finished in the current batch, held until its end.
    pending: Vec<Handshake>,
    batches: bool,
    /// A loss was counted while records written before the count may still be unread
    /// (batches cut at a bound, the ring not yet emptied).
    loss_unread: bool,
    /// (pid, listening fd) → path of the Unix socket, as the caller learned it.
    unix_paths: UnixPaths,
    /// Each server's configuration, as the caller read it (live: /proc).
    configs: std::collections::HashMap<u32, std::sync::Arc<ServerConfig>>,
    /// For servers whose configuration was not read (a replay: the defaults, or the flags).
    assumed_config: Option<std::sync::Arc<ServerConfig>>,
    /// Each host's errors toward max_connect_errors.
    hosts: HostErrors,
}

type UnixPaths = std::collections::HashMap<(u32, i32), std::sync::Arc<str>>;

fn name_unix_socket(paths: &UnixPaths, h: &mut Handshake) {
    if h.unix {
        h.server_path = paths.get(&(h.pid, h.listen_fd)).cloned();
    }
}

impl<'a> Pipeline<'a> {
    pub fn new(opts: PipelineOptions) -> Self {
        Pipeline {
            filter: PortFilter::new(opts.port),
            correlator: Correlator::new(MAX_OPEN),
            keep_outcomes: opts.keep_outcomes,
            select: opts.select,
            summary: Summary::default(),
            sinks: Vec::new(),
            pending: Vec::new(),
            batches: false,
            loss_unread: false,
            unix_paths: Default::default(),
            configs: Default::default(),
            assumed_config: None,
            hosts: HostErrors::default(),
        }
    }

    pub fn with_sink(self, sink: impl Sink + 'a) -> Self {
        self.with_boxed_sink(Box::new(sink))
    }

    pub fn with_boxed_sink(mut self, sink: Box<dyn Sink + 'a>) -> Self {
        self.sinks.push(sink);
        self
    }

    /// Feed one event. For an accept, `addrs` says what the caller knows of its addresses.
    pub fn push(&mut self, ev: &Event, mut addrs: AcceptAddrs) -> Result<()> {
        let mut ev = std::borrow::Cow::Borrowed(ev);
        if let Event::Accept(a) = ev.as_ref() {
            addrs.server = addrs.server.or(a.local);
            if a.fd().is_none() {
                self.summary.accept_errors += 1;
                return Ok(());
            }
            if a.peer.is_none() && addrs.client.is_some() {
                let mut a = a.clone();
                a.peer = addrs.client;
                ev = std::borrow::Cow::Owned(Event::Accept(a));
            }
        }
        if !self.filter.pass(&ev, addrs.server.map(|s| s.port())) {
            return Ok(());
        }
        // Finished handshakes go straight into the batch's buffer (no Vec per event).
        let first = self.pending.len();
        self.correlator.push_into(&ev, addrs.server, &mut self.pending);
        for h in &mut self.pending[first..] {
            name_unix_socket(&self.unix_paths, h);
        }
        if let Event::ProcessExit { pid, .. } = ev.as_ref() {
            // Its host cache went with it (a restarted server counts from 0).
            self.hosts.forget_server(*pid);
        }
        if !self.batches {
            let mut done = std::mem::take(&mut self.pending);
            done.drain(..).try_for_each(|mut h| self.deliver(&mut h))?;
            self.pending = done;
        }
        Ok(())
    }

    /// The path of a target's listening Unix socket (live: from /proc), shown for the
    /// handshakes accepted on it.
    pub fn unix_listener(&mut self, pid: u32, listen_fd: i32, path: std::sync::Arc<str>) {
        if self.unix_paths.len() >= MAX_UNIX_PATHS && !self.unix_paths.contains_key(&(pid, listen_fd)) {
            self.unix_paths.clear();
        }
        self.unix_paths.insert((pid, listen_fd), path);
    }


    /// A server's configuration (live: read from /proc when it was adopted), shown
    /// with its handshakes and used to count its hosts' errors.
    pub fn server_config(&mut self, pid: u32, cfg: std::sync::Arc<ServerConfig>) {
        if self.configs.len() >= MAX_UNIX_PATHS && !self.configs.contains_key(&pid) {
            self.configs.clear();
        }
        self.configs.insert(pid, cfg);
    }

    /// The configuration assumed for servers whose own was not read (a replay).
    pub fn assume_config(&mut self, cfg: std::sync::Arc<ServerConfig>) {
        self.assumed_config = Some(cfg);
    }

    /// Hosts that neared or reached their server's max_connect_errors since last asked.
    pub fn host_warnings(&mut self) -> Vec<HostWarning> {
        self.hosts.take_warnings()
    }

    /// The `k` hosts nearest their server's max_connect_errors.
    pub fn hosts_nearest(&self, k: usize) -> Vec<HostStanding> {
        let fallback = self.assumed_config.as_ref().map_or(crate::config::DEFAULT_MAX_CONNECT_ERRORS, |c| c.max_connect_errors.value);
        self.hosts.nearest(k, |pid| self.configs.get(&pid).map_or(fallback, |c| c.max_connect_errors.value))
    }

    /// Its server's configuration, and how its host counted it, go with the handshake.
    fn annotate(&mut self, h: &mut Handshake) {
        h.server_config = self.configs.get(&h.pid).or(self.assumed_config.as_ref()).cloned();
        // Only a server known to be MariaDB or MySQL (its configuration read) has a host cache.
        if let Some(cfg) = h.server_config.clone() {
            h.host_errors = self.hosts.record(h, &cfg).map(Box::new);
        }
    }

    fn deliver(&mut self, h: &mut Handshake) -> Result<()> {
        // Every handshake counts toward its host's errors, shown or not.
        self.annotate(h);
        if !self.select.admits(h) {
            self.summary.not_selected += 1;
            return Ok(());
        }
        self.summary.record(h, self.keep_outcomes);
        self.sinks.iter_mut().try_for_each(|s| s.handshake(h))
    }

    /// Work in batches (one drain of the ring buffer each): the handshakes a batch
    /// finishes are held until [`Pipeline::batch_end`] says whether the kernel lost
    /// records meanwhile. Without batches (old trace files) each goes out at once.
    pub fn in_batches(mut self) -> Self {
        self.batches = true;
        self
    }

    /// A batch is over and the ring was emptied. `lost`: the kernel lost records during
    /// it, so every handshake open in it (still open, or finished in it) may miss events:
    /// those finished are judged again before they go out, the open ones when they finish.
    pub fn batch_end(&mut self, lost: bool) -> Result<()> {
        self.end_batch(lost, true)
    }

    /// A batch cut at its bound (the live loop reads the ring in slices): the ring may
    /// still hold records written before this loss count, so accepts keep counting as
    /// possibly lossy until a batch empties the ring with no new loss.
    pub fn slice_end(&mut self, lost: bool) -> Result<()> {
        self.end_batch(lost, false)
    }

    fn end_batch(&mut self, lost: bool, emptied: bool) -> Result<()> {
        if lost {
            self.correlator.mark_open_lossy();
        }
        // The count came after the batch's last record: connections accepted before it
        // and read in a later batch may own these lost records.
        self.loss_unread = lost || (self.loss_unread && !emptied);
        self.correlator.accepts_may_be_lossy(self.loss_unread);
        // Reused from batch to batch (no allocation per batch); a burst's batch must not
        // pin its memory, so only room for a usual one is kept.
        let mut pending = std::mem::take(&mut self.pending);
        for mut h in pending.drain(..) {
            if lost {
                h.judge_again_with_losses();
            }
            self.deliver(&mut h)?;
        }
        pending.shrink_to(PENDING_KEPT);
        self.pending = pending;
        Ok(())
    }

    /// The periodic roll-up (--rollup).
    pub fn rollup(&mut self) -> Result<()> {
        self.sinks.iter_mut().try_for_each(|s| s.rollup())
    }

    /// A batch of events was handled.
    pub fn flush(&mut self) -> Result<()> {
        self.sinks.iter_mut().try_for_each(|s| s.flush())
    }

    /// Connections the --port filter remembers (bounded by the server's open sockets).
    pub fn filtered_open(&self) -> usize {
        self.filter.len()
    }

    /// How full the pipeline's tables are (the agent's health metrics).
    pub fn tables(&self) -> Tables {
        Tables {
            correlator: TableFill { entries: self.correlator.open_count(), capacity: MAX_OPEN, evictions: self.correlator.evicted },
            port_filter: TableFill { entries: self.filter.len(), capacity: PortFilter::CAPACITY, evictions: self.filter.evicted },
        }
    }

    /// Tracing stopped at `now_ns`: every open handshake ends `incomplete`.
    pub fn finish(mut self, now_ns: u64, counters: Counters) -> Result<Summary> {
        self.batch_end(false)?;
        for mut h in self.correlator.finish_all(now_ns) {
            name_unix_socket(&self.unix_paths, &mut h);
            self.deliver(&mut h)?;
        }
        self.sinks.iter_mut().try_for_each(|s| s.finish())?;
        self.summary.counters = counters;
        self.summary.unmatched = self.correlator.unmatched;
        self.summary.filtered_out = self.filter.filtered_out;
        Ok(self.summary)
    }
}
