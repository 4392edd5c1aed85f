//! `--port`: connections accepted on other ports are dropped before correlation.
use crate::{
    events::{Event, Family},
    support::conn_table::{ConnKey, ConnTable},
};

/// Connections accepted on another port than the one asked for, whose events are
/// dropped. An entry goes when its connection ends or a newer accept reuses its fd,
/// so the table holds no more than the server's open sockets (and never more than
/// the kernel follows).
#[derive(Debug)]
pub struct PortFilter {
    port: Option<u16>,
    dropped: ConnTable<()>,
    /// Connections dropped so far.
    pub filtered_out: u64,
    /// Entries pushed out by the bound (oldest first).
    pub evicted: u64,
}

impl PortFilter {
    /// Connections remembered at most.
    pub const CAPACITY: usize = handshake_trace_common::MAX_CONNS as usize;

    pub fn new(port: Option<u16>) -> Self {
        PortFilter { port, dropped: ConnTable::new(Self::CAPACITY), filtered_out: 0, evicted: 0 }
    }

    /// Connections currently remembered as dropped.
    pub fn len(&self) -> usize {
        self.dropped.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dropped.is_empty()
    }

    /// Should this event go on? `server_port` is the local port of an accept's listener.
    pub fn pass(&mut self, ev: &Event, server_port: Option<u16>) -> bool {
        let Some(port) = self.port else { return true };
        match ev {
            Event::Accept(a) => {
                let Some(fd) = a.fd() else { return true };
                if server_port == Some(port) {
                    return true;
                }
                self.filtered_out += 1;
                let inserted = self.dropped.insert((a.pid, fd, a.conn_gen), ());
                self.evicted += inserted.evicted.len() as u64;
                if let Some(older) = inserted.reused_fd_of {
                    self.dropped.remove(&older);
                }
                false
            }
            Event::ProcessExit { pid, .. } => {
                self.dropped.remove_process(*pid);
                true
            }
            _ => {
                let Some((key, ends)) = connection_of(ev) else { return true };
                if !self.dropped.contains(&key) {
                    return true;
                }
                if ends {
                    self.dropped.remove(&key);
                }
                false
            }
        }
    }
}

/// The connection an event belongs to, and whether the event ends it (close, or the
/// kernel's end of tracing, on its own or riding on an I/O record).
fn connection_of(ev: &Event) -> Option<(ConnKey, bool)> {
    match ev {
        Event::Syscall(s) => {
            let ends = matches!(s.kind.family(), Family::Close | Family::TrackingEnd);
            Some(((s.pid, s.fd, s.conn_gen), ends))
        }
        Event::Io(io) => Some(((io.sys.pid, io.sys.fd, io.sys.conn_gen), io.tracking_end.is_some())),
        Event::Signal(s) => Some(((s.pid, s.fd, s.conn_gen), false)),
        Event::Tcp(t) => Some(((t.pid, t.fd, t.conn_gen), false)),
        Event::Accept(_) | Event::ProcessExit { .. } => None,
    }
}
