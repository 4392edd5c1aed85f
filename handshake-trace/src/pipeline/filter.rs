//! `--port`: connections accepted on other ports are dropped before correlation.
use crate::{
    events::{Event, Family},
    support::int_hash::IntMap,
};

/// Connections accepted on another port than the one asked for, whose events are
/// dropped. One entry per (process, fd): a newer accept on the same fd replaces the
/// older one, and an entry goes when its connection ends, so the table never holds
/// more than the server's open sockets.
#[derive(Debug, Default)]
pub struct PortFilter {
    port: Option<u16>,
    /// (pid, fd) → generation of the dropped connection on it.
    dropped: IntMap<(u32, i32), u64>,
    /// Connections dropped so far.
    pub filtered_out: u64,
}

impl PortFilter {
    pub fn new(port: Option<u16>) -> Self {
        PortFilter { port, ..Default::default() }
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
                    self.dropped.remove(&(a.pid, fd));
                    return true;
                }
                self.filtered_out += 1;
                self.dropped.insert((a.pid, fd), a.conn_gen);
                false
            }
            Event::ProcessExit { pid, .. } => {
                self.dropped.retain(|k, _| k.0 != *pid);
                true
            }
            _ => {
                let Some((pid, fd, gen, ends)) = connection_of(ev) else { return true };
                if self.dropped.get(&(pid, fd)) != Some(&gen) {
                    return true;
                }
                if ends {
                    self.dropped.remove(&(pid, fd));
                }
                false
            }
        }
    }
}

/// The connection an event belongs to, and whether the event ends it (close, or the
/// kernel's end of tracing, on its own or riding on an I/O record).
fn connection_of(ev: &Event) -> Option<(u32, i32, u64, bool)> {
    match ev {
        Event::Syscall(s) => {
            let ends = matches!(s.kind.family(), Family::Close | Family::TrackingEnd);
            Some((s.pid, s.fd, s.conn_gen, ends))
        }
        Event::Io(io) => Some((io.sys.pid, io.sys.fd, io.sys.conn_gen, io.tracking_end.is_some())),
        Event::Signal(s) => Some((s.pid, s.fd, s.conn_gen, false)),
        Event::Tcp(t) => Some((t.pid, t.fd, t.conn_gen, false)),
        Event::Accept(_) | Event::ProcessExit { .. } => None,
    }
}
