//! The server processes being traced, kept in step with /proc (servers started
//! later are adopted, exited ones dropped), and the addresses of their accepts.
use std::{
    collections::{BTreeMap, HashMap},
    io::Write,
    net::SocketAddr,
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

/// The processes being traced, kept in step with /proc.
pub struct Targets {
    explicit: bool,
    pub live: BTreeMap<u32, ServerProcess>,
    /// (pid, listening fd) → local address, learned from /proc.
    listeners: HashMap<(u32, i32), SocketAddr>,
    /// Listeners learned since the last refresh, for the kernel's `--port` filter.
    fresh_listeners: Vec<(u32, HashMap<i32, SocketAddr>)>,
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
        })
    }

    /// Drop exited processes and, in discovery mode, adopt new servers. Returns the exited pids.
    pub fn refresh(&mut self, probes: &mut Probes, log: &mut dyn Write) -> Result<Vec<u32>> {
        for (pid, listening) in self.fresh_listeners.drain(..) {
            probes.add_listeners(pid, &listening);
        }
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
                    writeln!(log, "handshake-trace: now tracing {} (pid {})", Escaped(&s.comm), s.pid)?;
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
