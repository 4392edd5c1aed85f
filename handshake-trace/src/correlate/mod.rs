//! Correlation: kernel events → one [`Handshake`] per accepted connection, from
//! accept to OK/ERR/close, with its timeline. The [`Correlator`] is the one table of
//! connections (bounded, oldest evicted); each [`Handshake`] is a state machine, and
//! the verdict is judged (`crate::verdict`) when it ends. Pure: no aya, no tokio, no I/O.
mod handshake;
mod step;

use std::{collections::VecDeque, net::SocketAddr};

pub use handshake::{Alarm, ArmedTimer, Evidence, Handshake, LastRead, LastWait, Phases, Reply, MAX_STEPS};
pub use step::{Omitted, PacketSeen, Step, StepKind};

use crate::{
    events::{Accept, Args, Event},
    support::{
        conn_table::{ConnKey, ConnTable},
        int_hash::IntMap,
    },
};

/// Follows every connection; hands back finished handshakes.
#[derive(Debug)]
pub struct Correlator {
    /// Open handshakes; the oldest is concluded `incomplete` past the bound.
    open: ConnTable<Handshake>,
    /// Events for connections accepted before tracing started (counted, not timed).
    pub unmatched: u64,
    /// Open handshakes concluded early because the table was full.
    pub evicted: u64,
    /// Accepts of a connection already open (announced twice, or two connections with
    /// one generation): the open handshake goes on; not an eviction.
    pub duplicate_accepts: u64,
    /// Timers armed by threads with no connection (an alarm thread), per process.
    process_timers: IntMap<u32, VecDeque<ArmedTimer>>,
    /// Open connections whose fd number a newer accept reused, oldest first: (when, key).
    /// The kernel frees the number inside close(), before close's record is written, so
    /// the new accept's record can come first; each waits `FD_REUSE_GRACE_NS` for its close.
    fd_reused: VecDeque<(u64, ConnKey)>,
    /// Handshakes accepted from now on may miss events (see [`Correlator::accepts_may_be_lossy`]).
    new_accepts_lossy: bool,
}

/// How long a connection whose fd was reused may still get its close (trace time).
const FD_REUSE_GRACE_NS: u64 = 200_000_000;

/// Timers remembered per process for `alarm_eintr` (the last few are enough).
const TIMERS_KEPT: usize = 16;

impl Correlator {
    /// A correlator keeping at most `max_open` handshakes open.
    pub fn new(max_open: usize) -> Self {
        Correlator {
            open: ConnTable::new(max_open),
            unmatched: 0,
            evicted: 0,
            duplicate_accepts: 0,
            process_timers: IntMap::default(),
            fd_reused: VecDeque::new(),
            new_accepts_lossy: false,
        }
    }

    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// Feed one event; returns the handshakes it finished. `server` is the listening
    /// address of an accept, when the caller knows it.
    pub fn push(&mut self, event: &Event, server: Option<SocketAddr>) -> Vec<Handshake> {
        let mut done = Vec::new();
        self.push_into(event, server, &mut done);
        done
    }

    /// [`Correlator::push`], appending the finished handshakes to `done`: the live loop's
    /// batch buffer takes them in place, with no Vec allocated (and a large Handshake
    /// moved once more) per finished handshake.
    pub fn push_into(&mut self, event: &Event, server: Option<SocketAddr>, done: &mut Vec<Handshake>) {
        self.expire_reused(event.ts_ns(), done);
        match event {
            Event::Accept(a) => self.on_accept(a, server, done),
            Event::Syscall(s) if s.fd < 0 => {
                // A timer or kill by a thread with no connection of its own.
                if let Args::Timer { ms, .. } = s.args {
                    self.remember_timer(s.pid, ArmedTimer { ts_ns: s.ts_ns, tid: s.tid, ms });
                }
            }
            Event::Syscall(s) => {
                let key = (s.pid, s.fd, s.conn_gen);
                if let Some(h) = self.get(&key) {
                    h.on_syscall(s);
                }
                self.collect_finished(&key, done);
            }
            Event::Io(io) => {
                let key = (io.sys.pid, io.sys.fd, io.sys.conn_gen);
                if let Some(h) = self.get(&key) {
                    h.on_io(io);
                }
                self.collect_finished(&key, done);
            }
            Event::Signal(sig) => {
                if let Some(h) = self.get(&(sig.pid, sig.fd, sig.conn_gen)) {
                    h.on_signal(sig);
                }
            }
            Event::Tcp(t) => {
                let key = (t.pid, t.fd, t.conn_gen);
                if let Some(h) = self.get(&key) {
                    h.on_tcp(t);
                }
                // The socket tier's connections end on a state change.
                self.collect_finished(&key, done);
            }
            Event::ProcessExit { ts_ns, pid } => {
                self.process_timers.remove(pid);
                for (_, mut h) in self.open.remove_process(*pid) {
                    h.step(*ts_ns, 0, StepKind::ProcessExited { pid: *pid });
                    h.conclude(true, *ts_ns);
                    done.push(h);
                }
            }
        }
    }

    /// Whether handshakes accepted from now on may miss events: a loss counted after a
    /// drain may belong to a connection whose accept was written after the drain's last
    /// record and before the count, so it is read in the next batch.
    pub fn accepts_may_be_lossy(&mut self, lossy: bool) {
        self.new_accepts_lossy = lossy;
    }

    /// The kernel lost records while the handshakes open now were open: any of them
    /// may miss events.
    pub fn mark_open_lossy(&mut self) {
        for h in self.open.values_mut() {
            h.evidence.events_may_be_lost = true;
        }
    }

    /// A new connection: open its handshake; evict the oldest past the bound.
    fn on_accept(&mut self, a: &Accept, server: Option<SocketAddr>, done: &mut Vec<Handshake>) {
        let Some(fd) = a.fd() else { return };
        let key = (a.pid, fd, a.conn_gen);
        if let Some(open) = self.open.get_mut(&key) {
            // The same key again. From another client: two connections share it, and
            // the events of both land in this one handshake, which no longer shows one
            // connection for sure.
            if open.client != a.peer {
                open.evidence.events_may_be_lost = true;
            }
            self.duplicate_accepts += 1;
            return;
        }
        let mut h = Handshake::new(a, server);
        h.evidence.events_may_be_lost = self.new_accepts_lossy;
        let inserted = self.open.insert(key, h);
        // The fd number is reused: the connection that had it is closing (its close
        // record may still come) or ended unseen.
        if let Some(old) = inserted.reused_fd_of {
            self.fd_reused.push_back((a.ts_ns, old));
        }
        for (_, mut h) in inserted.evicted {
            self.evicted += 1;
            h.step(a.ts_ns, 0, StepKind::Dropped);
            h.conclude(true, a.ts_ns);
            done.push(h);
        }
    }

    fn remember_timer(&mut self, pid: u32, timer: ArmedTimer) {
        if timer.ms == 0 {
            return;
        }
        let q = self.process_timers.entry(pid).or_default();
        q.push_back(timer);
        if q.len() > TIMERS_KEPT {
            q.pop_front();
        }
    }

    fn get(&mut self, key: &ConnKey) -> Option<&mut Handshake> {
        let h = self.open.get_mut(key);
        if h.is_none() {
            self.unmatched += 1;
        }
        h
    }

    /// Conclude the connections whose fd was reused and whose close did not come in time.
    fn expire_reused(&mut self, now_ns: u64, done: &mut Vec<Handshake>) {
        while let Some(&(at, key)) = self.fd_reused.front() {
            if now_ns.saturating_sub(at) < FD_REUSE_GRACE_NS {
                break;
            }
            self.fd_reused.pop_front();
            if let Some(mut h) = self.open.remove(&key) {
                h.conclude(false, at);
                done.push(h);
            }
        }
    }

    fn collect_finished(&mut self, key: &ConnKey, done: &mut Vec<Handshake>) {
        if !self.open.get(key).is_some_and(|h| h.finished()) {
            return;
        }
        let mut h = self.open.remove(key).expect("present");
        if let Some(t) = self.process_timers.get(&key.0) {
            h.evidence.process_timers = t.iter().copied().collect();
        }
        let end = h.steps.last().map(|s| s.ts_ns).unwrap_or(h.accept_ns);
        h.conclude(false, end);
        done.push(h);
    }

    /// Tracing stops: every open handshake ends `incomplete`.
    pub fn finish_all(&mut self, now_ns: u64) -> Vec<Handshake> {
        let mut done: Vec<Handshake> = self
            .open
            .drain()
            .into_iter()
            .map(|(_, mut h)| {
                h.conclude(true, now_ns);
                h
            })
            .collect();
        done.sort_by_key(|h| h.accept_ns);
        self.fd_reused.clear();
        done
    }
}

#[cfg(test)]
mod tests;
