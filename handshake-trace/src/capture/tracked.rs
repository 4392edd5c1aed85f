//! The server processes being traced, kept in step with /proc (servers started
//! later are adopted, exited ones dropped), and the addresses of their accepts.
use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    net::SocketAddr,
    sync::Arc,
};

use anyhow::{bail, Result};

use super::{
    probes::Probes,
    targets::{self, Presence, Refusal, RefuseReason, ServerProcess, MAX_PORTS_PER_TARGET},
};
use crate::{
    events::{AcceptAddrs, Event},
    support::escape::Escaped,
};

/// Exited targets remembered so that none is traced again: more than a machine runs servers.
const EXITED_KEPT: usize = 1024;

/// What one refresh changed: targets that exited, servers adopted (pid, name), processes
/// refused (pid, name, why), and targets /proc could not be read for (kept: asked again;
/// listed when that began).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub gone: Vec<u32>,
    pub adopted: Vec<(u32, String)>,
    pub refused: Vec<(u32, String, Refusal)>,
    pub unknown: Vec<(u32, i32)>,
}

/// Processes remembered by pid and start time (a later process may reuse the pid), at
/// most [`EXITED_KEPT`]: targets seen to exit, processes refused.
#[derive(Debug, Default)]
pub struct Exited(VecDeque<(u32, Option<u64>)>);

impl Exited {
    pub fn insert(&mut self, pid: u32, start_time: Option<u64>) {
        if self.0.len() == EXITED_KEPT {
            self.0.pop_front();
        }
        self.0.push_back((pid, start_time));
    }

    pub fn contains(&self, pid: u32, start_time: Option<u64>) -> bool {
        self.0.contains(&(pid, start_time))
    }

    fn has_pid(&self, pid: u32) -> bool {
        self.0.iter().any(|(p, _)| *p == pid)
    }

    fn pids(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().map(|(p, _)| *p)
    }

    fn remove(&mut self, pid: u32) {
        self.0.retain(|(p, _)| *p != pid);
    }
}

/// What a refresh found: the targets gone (only where /proc said so), those /proc could
/// not answer for (errno), and the servers `found` to consider: not traced yet, not seen
/// to exit (a zombie or a lingering /proc entry must not come back as "now tracing"),
/// not refused before.
pub struct Plan {
    pub gone: Vec<u32>,
    pub unknown: Vec<(u32, i32)>,
    pub adopt: Vec<ServerProcess>,
}

pub fn plan(
    live: &BTreeMap<u32, ServerProcess>,
    presence: impl Fn(u32) -> Presence,
    found: Vec<ServerProcess>,
    exited: &Exited,
    refused: &Exited,
) -> Plan {
    let mut gone = Vec::new();
    let mut unknown = Vec::new();
    for &pid in live.keys() {
        match presence(pid) {
            Presence::Alive => {}
            Presence::Gone => gone.push(pid),
            Presence::Unknown(errno) => unknown.push((pid, errno)),
        }
    }
    let adopt = found
        .into_iter()
        .filter(|s| !live.contains_key(&s.pid) && !exited.contains(s.pid, s.start_time) && !refused.contains(s.pid, s.start_time))
        .collect();
    Plan { gone, unknown, adopt }
}

/// What became of an event's process that was no target ([`Targets::consider`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Considered {
    /// A target: its events go on.
    Target,
    /// Adopted now (pid, name): its events go on.
    Adopted(u32, String),
    /// Refused now (pid, name, why): its events are dropped.
    Refused(u32, String, Refusal),
    /// Refused before, gone, or not to be traced: its events are dropped.
    Dropped,
    /// /proc cannot say now (EMFILE…): this event is dropped, the next one asks again.
    Undecided,
}

/// The processes being traced, kept in step with /proc.
pub struct Targets {
    explicit: bool,
    pub live: BTreeMap<u32, ServerProcess>,
    /// (pid, listening fd) → local address, learned from /proc.
    listeners: HashMap<(u32, i32), SocketAddr>,
    /// Listeners learned since the last refresh, for the kernel (server ports, `--port`).
    fresh_listeners: Vec<(u32, HashMap<i32, SocketAddr>)>,
    /// (pid, listening fd) → path of a Unix socket, learned from /proc; None: not one
    /// (asked once, not at every accept).
    unix_listeners: HashMap<(u32, i32), Option<Arc<str>>>,
    exited: Exited,
    /// Processes refused (discovery), never considered again while they live.
    refused: Exited,
    /// Refusals so far, by reason (the agent's metric).
    pub refusals: BTreeMap<RefuseReason, u64>,
    /// Times /proc could not say whether a target lives (it was kept).
    pub proc_unknown: u64,
    /// Processes whose events were dropped since the last refresh (no /proc read per event).
    dropped: std::collections::HashSet<u32>,
    /// Processes refused because a map was full: tried again at each refresh, said once.
    map_full: std::collections::HashSet<u32>,
    /// Targets /proc could not answer for at the last refresh (said once).
    unknown_said: std::collections::HashSet<u32>,
}

/// Pids remembered as dropped between two refreshes, at most.
const DROPPED_KEPT: usize = 4096;

impl Targets {
    /// The targets to start with: `-p`'s processes as given, or (discovery) the servers
    /// running whose executable checks out ([`targets::verify_executable`]); the others
    /// found are refused, with why.
    pub fn start(pids: &[u32]) -> Result<(Self, Vec<(u32, String, Refusal)>)> {
        let mut refused = Vec::new();
        let initial = if pids.is_empty() {
            let found = targets::find_servers();
            if found.is_empty() {
                bail!(
                    "no MySQL server process found (looked for {}); start one or pass -p PID",
                    targets::SERVER_NAMES.join(", ")
                );
            }
            let mut ok = Vec::new();
            for s in found {
                match targets::verify_executable(s.pid) {
                    Ok(_) => ok.push(s),
                    Err(why) => refused.push((s.pid, Escaped(&s.comm).to_string(), Refusal::new(RefuseReason::Unverified, why))),
                }
            }
            if ok.is_empty() {
                let why: Vec<String> = refused.iter().map(|(pid, name, r)| format!("{name} (pid {pid}): {}", r.detail)).collect();
                bail!(
                    "no MySQL server to trace: processes named {} were found, but not one runs a root-installed \
                     mysqld or mariadbd ({}); pass -p PID to trace one anyway",
                    targets::SERVER_NAMES.join(" or "),
                    why.join("; ")
                );
            }
            ok
        } else {
            targets::check_pids(pids)?
        };
        let mut t = Self {
            explicit: !pids.is_empty(),
            live: initial.into_iter().map(|s| (s.pid, s)).collect(),
            listeners: HashMap::new(),
            fresh_listeners: Vec::new(),
            unix_listeners: HashMap::new(),
            exited: Exited::default(),
            refused: Exited::default(),
            refusals: BTreeMap::new(),
            proc_unknown: 0,
            dropped: Default::default(),
            map_full: Default::default(),
            unknown_said: Default::default(),
        };
        for (pid, _, r) in &refused {
            t.note_refused(*pid, targets::start_time(*pid), r.reason);
        }
        Ok((t, refused))
    }

    /// Discovery mode (no `-p`).
    pub fn discovering(&self) -> bool {
        !self.explicit
    }

    /// Count a refusal (once per process) and remember it: for good when the process
    /// is at fault, for a retry at the next refresh when a map was full (room may come).
    /// False when this process was refused for a full map before (nothing new to say).
    fn note_refused(&mut self, pid: u32, start_time: Option<u64>, reason: RefuseReason) -> bool {
        if reason == RefuseReason::MapFull {
            if !self.map_full.insert(pid) {
                return false;
            }
        } else {
            self.refused.insert(pid, start_time);
        }
        *self.refusals.entry(reason).or_insert(0) += 1;
        true
    }

    /// Put the starting targets into the kernel's maps; those that do not fit are
    /// refused (and dropped), the others go on. Fails only when none is left.
    pub fn attach(&mut self, probes: &mut Probes) -> Result<Vec<(u32, String, Refusal)>> {
        let mut refused = Vec::new();
        for pid in self.live.keys().copied().collect::<Vec<_>>() {
            if let Err(r) = probes.add_target(pid) {
                let s = self.live.remove(&pid).expect("a live target");
                self.note_refused(pid, s.start_time, r.reason);
                if r.reason != RefuseReason::MapFull {
                    probes.refuse_candidate(pid);
                }
                refused.push((pid, Escaped(&s.comm).to_string(), r));
            }
        }
        if self.live.is_empty() {
            let why: Vec<String> = refused.iter().map(|(pid, name, r)| format!("{name} (pid {pid}): {}", r.detail)).collect();
            bail!("no target could be traced: {}", why.join("; "));
        }
        Ok(refused)
    }

    /// Adopt `s` (discovery): its executable must check out and the maps must hold it.
    /// Refused: (pid, name, why, whether this is news).
    fn adopt(&mut self, s: ServerProcess, probes: &mut Probes) -> std::result::Result<(u32, String), (u32, String, Refusal, bool)> {
        let name = Escaped(&s.comm).to_string();
        let checked = targets::verify_executable(s.pid)
            .map_err(|why| Refusal::new(RefuseReason::Unverified, why))
            .and_then(|_| probes.add_target(s.pid));
        match checked {
            Ok(()) => {
                let pid = s.pid;
                self.map_full.remove(&pid);
                self.live.insert(pid, s);
                Ok((pid, name))
            }
            Err(r) => {
                let new = self.note_refused(s.pid, s.start_time, r.reason);
                if r.reason != RefuseReason::MapFull {
                    probes.refuse_candidate(s.pid);
                }
                Err((s.pid, name, r, new))
            }
        }
    }

    /// An event came from `pid`, which may be no target yet: in discovery mode the
    /// kernel follows a process named like a server from its first `listen`, before it
    /// was adopted. Decide now, before its events are read: adopt it (its events go on)
    /// or refuse it (they are dropped).
    pub fn consider(&mut self, pid: u32, probes: &mut Probes) -> Considered {
        if self.live.contains_key(&pid) {
            return Considered::Target;
        }
        // A target that exited since: its last records, read after the refresh saw it
        // go, are still its own (a login just before a restart).
        if self.exited.has_pid(pid) && targets::presence(pid) == Presence::Gone {
            return Considered::Target;
        }
        if self.explicit || self.dropped.contains(&pid) {
            return Considered::Dropped;
        }
        let decided = self.decide(pid, probes);
        if matches!(decided, Considered::Refused(..) | Considered::Dropped) && self.dropped.len() < DROPPED_KEPT {
            self.dropped.insert(pid);
        }
        decided
    }

    fn decide(&mut self, pid: u32, probes: &mut Probes) -> Considered {
        match targets::presence(pid) {
            Presence::Alive => {}
            // /proc cannot say (EMFILE…): nothing is confirmed, nothing is remembered.
            Presence::Unknown(_) => return Considered::Undecided,
            Presence::Gone => {
                probes.forget_refused(pid);
                return Considered::Dropped;
            }
        }
        let start_time = targets::start_time(pid);
        if self.refused.contains(pid, start_time) || self.exited.contains(pid, start_time) {
            return Considered::Dropped;
        }
        let Some(comm) = targets::comm(pid) else {
            // Gone already: nothing of it can be confirmed.
            probes.forget_refused(pid);
            return Considered::Dropped;
        };
        if !targets::SERVER_NAMES.contains(&comm.as_str()) {
            self.note_refused(pid, start_time, RefuseReason::Unverified);
            probes.refuse_candidate(pid);
            let r = Refusal::new(RefuseReason::Unverified, "it is not named mysqld or mariadbd (any more)");
            return Considered::Refused(pid, Escaped(&comm).to_string(), r);
        }
        match self.adopt(targets::describe(pid, comm), probes) {
            Ok((pid, name)) => Considered::Adopted(pid, name),
            Err((pid, name, r, true)) => Considered::Refused(pid, name, r),
            Err(_) => Considered::Dropped,
        }
    }

    /// Drop exited processes and, in discovery mode, adopt new servers (never one seen
    /// to exit, never one refused). A target /proc cannot answer for (EMFILE…) stays.
    /// Nothing here ends the trace: a process that cannot be traced is refused.
    pub fn refresh(&mut self, probes: &mut Probes) -> Changes {
        for (pid, listening) in self.fresh_listeners.drain(..) {
            probes.add_listeners(pid, &listening);
        }
        self.dropped.clear();
        let found = if self.explicit { Vec::new() } else { targets::find_servers() };
        let Plan { gone, mut unknown, adopt } = plan(&self.live, targets::presence, found, &self.exited, &self.refused);
        self.proc_unknown += unknown.len() as u64;
        // Said once per spell (an fd shortage lasts): a target known again may be said again.
        let now: std::collections::HashSet<u32> = unknown.iter().map(|(p, _)| *p).collect();
        unknown.retain(|(p, _)| !self.unknown_said.contains(p));
        self.unknown_said = now;
        for &pid in &gone {
            self.drop_target(pid, probes);
        }
        let mut refused = Vec::new();
        // A target that listens on more ports than a server does (its own listens go
        // into the port map from the kernel side) is dropped.
        for (pid, ports) in probes.ports_by_owner() {
            if ports > MAX_PORTS_PER_TARGET && self.live.contains_key(&pid) {
                let s = self.live.get(&pid).cloned().expect("a live target");
                self.drop_target(pid, probes);
                self.exited.remove(pid);
                self.note_refused(pid, s.start_time, RefuseReason::TooManyPorts);
                probes.refuse_candidate(pid);
                let detail = format!("it listens on {ports} TCP ports (a server listens on a few; {MAX_PORTS_PER_TARGET} at most)");
                refused.push((pid, Escaped(&s.comm).to_string(), Refusal::new(RefuseReason::TooManyPorts, detail)));
            }
        }
        let mut adopted = Vec::new();
        for s in adopt {
            match self.adopt(s, probes) {
                Ok(a) => adopted.push(a),
                Err((pid, name, r, true)) => refused.push((pid, name, r)),
                Err(_) => {}
            }
        }
        self.map_full.retain(|&pid| targets::presence(pid) != Presence::Gone);
        // Refused processes that are gone: their pid may come back as a server.
        let left: Vec<u32> = self.refused.pids().filter(|&p| targets::presence(p) == Presence::Gone).collect();
        for pid in left {
            self.refused.remove(pid);
            probes.forget_refused(pid);
        }
        Changes { gone, adopted, refused, unknown }
    }

    /// Stop tracing `pid` and forget its listeners.
    fn drop_target(&mut self, pid: u32, probes: &mut Probes) {
        probes.remove_target(pid);
        if let Some(s) = self.live.remove(&pid) {
            self.exited.insert(pid, s.start_time);
        }
        self.listeners.retain(|(p, _), _| *p != pid);
        self.unix_listeners.retain(|(p, _), _| *p != pid);
    }

    /// The path of a listening Unix socket of a target, from /proc (cached).
    pub fn unix_path(&mut self, pid: u32, fd: i32) -> Option<Arc<str>> {
        if let Some(p) = self.unix_listeners.get(&(pid, fd)) {
            return p.clone();
        }
        for (lfd, path) in targets::unix_listeners(pid) {
            self.unix_listeners.insert((pid, lfd), Some(Arc::from(path)));
        }
        self.unix_listeners.entry((pid, fd)).or_insert(None).clone()
    }

    fn listener(&mut self, pid: u32, fd: i32) -> Option<SocketAddr> {
        if let Some(a) = self.listeners.get(&(pid, fd)) {
            return Some(*a);
        }
        let found = targets::listening_sockets(pid);
        for (lfd, addr) in &found {
            self.listeners.insert((pid, *lfd), *addr);
        }
        let addr = found.get(&fd).copied();
        // Bounded: drained each second; an fd that is no listener (an accept whose entry
        // was unseen) misses every time.
        if self.fresh_listeners.len() < 64 {
            self.fresh_listeners.push((pid, found));
        }
        addr
    }
}

/// Addresses of an accept from /proc: the listener's (cached), else the new socket's own.
pub fn accept_addrs(ev: &Event, targets: &mut Targets) -> AcceptAddrs {
    let Event::Accept(a) = ev else { return AcceptAddrs::default() };
    let Some(fd) = a.fd() else { return AcceptAddrs::default() };
    // A Unix-socket client has no address; /proc by fd could name a later TCP socket.
    // The socket tier's record carries both addresses and names no fd.
    if a.unix || a.established {
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


impl Targets {
    /// "mariadbd (pid 123), mysqld (pid 456)", for the startup line.
    pub fn names(&self) -> String {
        self.live.values().map(|s| format!("{} (pid {})", Escaped(&s.comm), s.pid)).collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(pid: u32, start_time: u64) -> ServerProcess {
        ServerProcess { pid, comm: "mariadbd".into(), exe: None, listening: Vec::new(), start_time: Some(start_time) }
    }

    fn pids(adopt: &[ServerProcess]) -> Vec<(u32, Option<u64>)> {
        adopt.iter().map(|s| (s.pid, s.start_time)).collect()
    }

    #[test]
    fn a_dead_pid_is_never_traced_again() {
        let mut live: BTreeMap<u32, ServerProcess> = [(5624, server(5624, 100))].into();
        let mut exited = Exited::default();
        let none = Exited::default();
        // The server was killed: its /proc entry lingers as a zombie, still named mariadbd.
        let p = plan(&live, |_| Presence::Gone, vec![server(5624, 100)], &exited, &none);
        assert_eq!(p.gone, vec![5624]);
        assert!(p.adopt.is_empty(), "a target found while it exits is not adopted again");
        let s = live.remove(&5624).unwrap();
        exited.insert(s.pid, s.start_time);
        // The next refreshes still see the lingering entry: no flapping.
        for _ in 0..3 {
            let p = plan(&live, |_| Presence::Gone, vec![server(5624, 100)], &exited, &none);
            assert!(p.gone.is_empty() && p.adopt.is_empty(), "{:?} {:?}", p.gone, pids(&p.adopt));
        }
        // A new server that got the same pid later started at another time: adopted.
        let p = plan(&live, |_| Presence::Alive, vec![server(5624, 900), server(7000, 950)], &exited, &none);
        assert_eq!(pids(&p.adopt), vec![(5624, Some(900)), (7000, Some(950))]);
    }

    #[test]
    fn live_targets_stay_and_the_memory_is_bounded() {
        let live: BTreeMap<u32, ServerProcess> = [(10, server(10, 1))].into();
        let p = plan(&live, |_| Presence::Alive, vec![server(10, 1)], &Exited::default(), &Exited::default());
        assert!(p.gone.is_empty() && p.adopt.is_empty());
        let mut exited = Exited::default();
        for pid in 0..(EXITED_KEPT as u32 + 10) {
            exited.insert(pid, Some(1));
        }
        assert_eq!(exited.0.len(), EXITED_KEPT);
        assert!(!exited.contains(0, Some(1)) && exited.contains(EXITED_KEPT as u32 + 9, Some(1)));
    }

    #[test]
    fn a_target_proc_cannot_answer_for_is_kept_not_gone() {
        let live: BTreeMap<u32, ServerProcess> = [(10, server(10, 1)), (11, server(11, 1)), (12, server(12, 1))].into();
        // /proc/10/stat: EMFILE (the tracer is out of fds); 11: EACCES; 12: gone.
        let presence = |pid: u32| match pid {
            10 => targets::presence_of(Err(std::io::Error::from_raw_os_error(libc::EMFILE))),
            11 => targets::presence_of(Err(std::io::Error::from_raw_os_error(libc::EACCES))),
            _ => targets::presence_of(Err(std::io::Error::from_raw_os_error(libc::ENOENT))),
        };
        let p = plan(&live, presence, Vec::new(), &Exited::default(), &Exited::default());
        assert_eq!(p.gone, vec![12]);
        assert_eq!(p.unknown, vec![(10, libc::EMFILE), (11, libc::EACCES)]);
    }

    #[test]
    fn a_refused_process_is_not_considered_again_until_its_pid_is_reused() {
        let live = BTreeMap::new();
        let mut refused = Exited::default();
        refused.insert(300, Some(5));
        let p = plan(&live, |_| Presence::Alive, vec![server(300, 5), server(301, 5)], &Exited::default(), &refused);
        assert_eq!(pids(&p.adopt), vec![(301, Some(5))]);
        let p = plan(&live, |_| Presence::Alive, vec![server(300, 9)], &Exited::default(), &refused);
        assert_eq!(pids(&p.adopt), vec![(300, Some(9))]);
    }
}
