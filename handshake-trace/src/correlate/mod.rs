//! Correlation: kernel events → one [`Handshake`] per accepted connection, from
//! accept to OK/ERR/close, with its timeline. The [`Correlator`] is the one table of
//! connections (bounded, oldest evicted); each [`Handshake`] is a state machine, and
//! the verdict is judged (`crate::verdict`) when it ends. Pure: no aya, no tokio, no I/O.
mod handshake;
mod step;

use std::{collections::VecDeque, net::SocketAddr};

pub use handshake::{Alarm, ArmedTimer, Evidence, Handshake, LastRead, LastWait, Phases, Reply};
pub use step::{PacketSeen, Step, StepKind};

use crate::{
    events::{Accept, Args, Event},
    support::int_hash::IntMap,
};

/// Key of a connection: process, fd, generation.
type Key = (u32, i32, u64);

/// Follows every connection; hands back finished handshakes.
#[derive(Debug, Default)]
pub struct Correlator {
    open: IntMap<Key, Handshake>,
    /// Open connections in accept order, for evicting the oldest past `max_open`. Keys of
    /// handshakes that already ended stay until eviction or compaction skips them.
    order: VecDeque<Key>,
    /// Events for connections accepted before tracing started (counted, not timed).
    pub unmatched: u64,
    /// Bound on open handshakes kept in memory; the oldest is concluded `incomplete` past it.
    pub max_open: usize,
    /// Timers armed by threads with no connection (an alarm thread), per process.
    process_timers: IntMap<u32, VecDeque<ArmedTimer>>,
    /// Generation of the newest connection accepted on each (process, fd).
    newest_on_fd: IntMap<(u32, i32), u64>,
    /// Open connections whose fd number a newer accept reused, oldest first: (when, key).
    /// The kernel frees the number inside close(), before close's record is written, so
    /// the new accept's record can come first; each waits `FD_REUSE_GRACE_NS` for its close.
    fd_reused: VecDeque<(u64, Key)>,
}

/// How long a connection whose fd was reused may still get its close (trace time).
const FD_REUSE_GRACE_NS: u64 = 200_000_000;

/// Timers remembered per process for `alarm_eintr` (the last few are enough).
const TIMERS_KEPT: usize = 16;

impl Correlator {
    pub fn new(max_open: usize) -> Self {
        Correlator { max_open, ..Default::default() }
    }

    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// Feed one event; returns the handshakes it finished. `server` is the listening
    /// address of an accept, when the caller knows it.
    pub fn push(&mut self, event: &Event, server: Option<SocketAddr>) -> Vec<Handshake> {
        let mut done = Vec::new();
        self.expire_reused(event.ts_ns(), &mut done);
        match event {
            Event::Accept(a) => self.on_accept(a, server, &mut done),
            Event::Syscall(s) if s.fd < 0 => {
                // A timer or kill by a thread with no connection of its own.
                match s.args {
                    Args::Timer { ms, .. } if ms > 0 => {
                        let q = self.process_timers.entry(s.pid).or_default();
                        q.push_back(ArmedTimer { ts_ns: s.ts_ns, tid: s.tid, ms });
                        if q.len() > TIMERS_KEPT {
                            q.pop_front();
                        }
                    }
                    _ => {}
                }
            }
            Event::Syscall(s) => {
                if let Some(h) = self.get(s.pid, s.fd, s.conn_gen) {
                    h.on_syscall(s);
                }
                self.collect_finished(s.pid, s.fd, s.conn_gen, &mut done);
            }
            Event::Io(io) => {
                let s = &io.sys;
                if let Some(h) = self.get(s.pid, s.fd, s.conn_gen) {
                    h.on_io(io);
                }
                self.collect_finished(s.pid, s.fd, s.conn_gen, &mut done);
            }
            Event::Signal(sig) => {
                if let Some(h) = self.get(sig.pid, sig.fd, sig.conn_gen) {
                    h.on_signal(sig);
                }
            }
            Event::Tcp(t) => {
                if let Some(h) = self.get(t.pid, t.fd, t.conn_gen) {
                    h.on_tcp(t);
                }
            }
            Event::ProcessExit { ts_ns, pid } => {
                self.process_timers.remove(pid);
                self.newest_on_fd.retain(|k, _| k.0 != *pid);
                let keys: Vec<Key> = self.open.keys().filter(|k| k.0 == *pid).copied().collect();
                for k in keys {
                    if let Some(mut h) = self.open.remove(&k) {
                        h.step(*ts_ns, 0, StepKind::ProcessExited { pid: *pid });
                        h.conclude(true, *ts_ns);
                        done.push(h);
                    }
                }
            }
        }
        done
    }

    /// A new connection: open its handshake; evict the oldest past the bound.
    fn on_accept(&mut self, a: &Accept, server: Option<SocketAddr>, done: &mut Vec<Handshake>) {
        let Some(fd) = a.fd() else { return };
        let key = (a.pid, fd, a.conn_gen);
        // The fd number is reused: the connection that had it is closing (its
        // close record may still come) or ended unseen.
        if let Some(old) = self.newest_on_fd.insert((a.pid, fd), a.conn_gen) {
            if old != a.conn_gen && self.open.contains_key(&(a.pid, fd, old)) {
                self.fd_reused.push_back((a.ts_ns, (a.pid, fd, old)));
            }
        }
        self.open.insert(key, Handshake::new(a, server));
        self.order.push_back(key);
        // Drop the keys of ended handshakes now and then, not once per handshake.
        if self.order.len() > 2 * self.max_open.max(1) {
            let open = &self.open;
            self.order.retain(|k| open.contains_key(k));
        }
        while self.open.len() > self.max_open.max(1) {
            let Some(oldest) = self.order.pop_front() else { break };
            if let Some(mut h) = self.open.remove(&oldest) {
                h.step(a.ts_ns, 0, StepKind::Dropped);
                h.conclude(true, a.ts_ns);
                done.push(h);
            }
        }
    }

    fn get(&mut self, pid: u32, fd: i32, gen: u64) -> Option<&mut Handshake> {
        let h = self.open.get_mut(&(pid, fd, gen));
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

    fn collect_finished(&mut self, pid: u32, fd: i32, gen: u64, done: &mut Vec<Handshake>) {
        let key = (pid, fd, gen);
        if self.open.get(&key).is_some_and(|h| h.finished()) {
            let mut h = self.open.remove(&key).expect("present");
            if let Some(t) = self.process_timers.get(&pid) {
                h.evidence.process_timers = t.iter().copied().collect();
            }
            let end = h.steps.last().map(|s| s.ts_ns).unwrap_or(h.accept_ns);
            h.conclude(false, end);
            done.push(h);
        }
    }

    /// Tracing stops: every open handshake ends `incomplete`.
    pub fn finish_all(&mut self, now_ns: u64) -> Vec<Handshake> {
        let mut done: Vec<Handshake> = self
            .open
            .drain()
            .map(|(_, mut h)| {
                h.conclude(true, now_ns);
                h
            })
            .collect();
        done.sort_by_key(|h| h.accept_ns);
        self.order.clear();
        self.fd_reused.clear();
        self.newest_on_fd.clear();
        done
    }
}

#[cfg(test)]
mod tests;
