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
    targets::{self, ServerProcess},
};
use crate::{
    events::{AcceptAddrs, Event},
    support::escape::Escaped,
};

/// Exited targets remembered so that none is traced again: more than a machine runs servers.
const EXITED_KEPT: usize = 1024;

/// What one refresh changed: targets that exited, servers adopted (pid, name).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub gone: Vec<u32>,
    pub adopted: Vec<(u32, String)>,
}

/// Targets seen to exit, by pid and start time (a later process may reuse the pid).
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
}

/// Which targets are gone (`alive` says no) and which of the servers `found` to adopt:
/// not traced yet and not one seen to exit (a zombie or a lingering /proc entry must not
/// come back as "now tracing").
pub fn plan(live: &BTreeMap<u32, ServerProcess>, alive: impl Fn(u32) -> bool, found: Vec<ServerProcess>, exited: &Exited) -> (Vec<u32>, Vec<ServerProcess>) {
    let gone: Vec<u32> = live.keys().copied().filter(|&p| !alive(p)).collect();
    let adopt = found
        .into_iter()
        .filter(|s| !live.contains_key(&s.pid) && !exited.contains(s.pid, s.start_time))
        .collect();
    (gone, adopt)
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
}

impl Targets {
    pub fn start(pids: &[u32]) -> Result<Self> {
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
            fresh_listeners: Vec::new(),
            unix_listeners: HashMap::new(),
            exited: Exited::default(),
        })
    }

    /// Drop exited processes and, in discovery mode, adopt new servers (never one seen to exit).
    pub fn refresh(&mut self, probes: &mut Probes) -> Result<Changes> {
        for (pid, listening) in self.fresh_listeners.drain(..) {
            probes.add_listeners(pid, &listening);
        }
        let found = if self.explicit { Vec::new() } else { targets::find_servers() };
        let (gone, adopt) = plan(&self.live, targets::process_exists, found, &self.exited);
        for &pid in &gone {
            probes.remove_target(pid);
            if let Some(s) = self.live.remove(&pid) {
                self.exited.insert(pid, s.start_time);
            }
            self.listeners.retain(|(p, _), _| *p != pid);
            self.unix_listeners.retain(|(p, _), _| *p != pid);
        }
        let mut adopted = Vec::new();
        for s in adopt {
            probes.add_target(s.pid)?;
            adopted.push((s.pid, Escaped(&s.comm).to_string()));
            self.live.insert(s.pid, s);
        }
        Ok(Changes { gone, adopted })
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

    #[test]
    fn a_dead_pid_is_never_traced_again() {
        let mut live: BTreeMap<u32, ServerProcess> = [(5624, server(5624, 100))].into();
        let mut exited = Exited::default();
        // The server was killed: its /proc entry lingers as a zombie, still named mariadbd.
        let (gone, adopt) = plan(&live, |_| false, vec![server(5624, 100)], &exited);
        assert_eq!(gone, vec![5624]);
        assert!(adopt.is_empty(), "a target found while it exits is not adopted again");
        let s = live.remove(&5624).unwrap();
        exited.insert(s.pid, s.start_time);
        // The next refreshes still see the lingering entry: no flapping.
        for _ in 0..3 {
            let (gone, adopt) = plan(&live, |_| false, vec![server(5624, 100)], &exited);
            assert!(gone.is_empty() && adopt.is_empty(), "{gone:?} {adopt:?}");
        }
        // A new server that got the same pid later started at another time: adopted.
        let (_, adopt) = plan(&live, |_| true, vec![server(5624, 900), server(7000, 950)], &exited);
        assert_eq!(adopt.iter().map(|s| (s.pid, s.start_time)).collect::<Vec<_>>(), vec![(5624, Some(900)), (7000, Some(950))]);
    }

    #[test]
    fn live_targets_stay_and_the_memory_is_bounded() {
        let live: BTreeMap<u32, ServerProcess> = [(10, server(10, 1))].into();
        let (gone, adopt) = plan(&live, |_| true, vec![server(10, 1)], &Exited::default());
        assert!(gone.is_empty() && adopt.is_empty());
        let mut exited = Exited::default();
        for pid in 0..(EXITED_KEPT as u32 + 10) {
            exited.insert(pid, Some(1));
        }
        assert_eq!(exited.0.len(), EXITED_KEPT);
        assert!(!exited.contains(0, Some(1)) && exited.contains(EXITED_KEPT as u32 + 9, Some(1)));
    }
}
