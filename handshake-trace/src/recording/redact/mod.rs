//! Keeping secrets out of trace files. Pure: no aya, no I/O.
//!
//! IO records carry the first bytes of each read and write of a connection in its
//! handshake. Before a record is saved, [`Redactor`] overwrites the secrets in it
//! with zeros: the greeting's scramble, the login's auth response, AuthSwitchRequest
//! plugin data, AuthMoreData, every client packet after the login (auth data), and
//! everything once the connection switched to TLS. Lengths, `captured` and packet
//! headers are kept, so a replay sees the same packets and the decoder
//! (`crate::protocol`) shows the same user, database, plugin, lengths and errors.
//!
//! The redactor follows each direction's byte stream with the decoder's own framing
//! ([`crate::protocol::Framer`]) and finds the secrets with the decoder's own field
//! walk ([`crate::protocol::server_roles`], [`crate::protocol::client_roles`]) over the
//! packet's bytes seen so far: a byte's role depends only on the bytes before it, so a
//! packet split across records anyhow is redacted the same. It tells a login and a
//! greeting from the rest as the correlator does (by decoding them), and fails safe:
//! bytes it cannot place are zeroed.
//!
//! Where the decoder looks at whether a secret byte is NUL (NUL-terminated auth
//! responses, the greeting's scramble part 2 and the AuthSwitch data end, whose last
//! byte may be a terminator), a non-NUL secret byte becomes [`FILLER`] instead of 0.
mod conn;
#[cfg(test)]
mod tests;

use std::mem::{offset_of, size_of};

use handshake_trace_common::{
    kind, sys, tcp, tcp_state, AcceptEvent, EstablishedEvent, EventHeader, IoEvent, SysEvent, TcpEvent, UnixConnectEvent, NO_FD, PAYLOAD_MAX,
    SYS_TRACKING_END,
};

use conn::Conn;

use crate::support::conn_table::ConnTable;

/// Connections followed at once; the oldest is forgotten beyond this (its later
/// payloads are then zeroed whole).
pub const MAX_CONNECTIONS: usize = 16384;

/// Replaces a secret byte that is not NUL where the decoder tells NUL from non-NUL.
pub const FILLER: u8 = b'*';

/// `recv(2)` flag: the bytes stay queued and will be read again.
const MSG_PEEK: u64 = 2;

/// Redacts raw kernel records, following every connection from its accept.
pub struct Redactor {
    conns: ConnTable<Conn>,
}

impl Default for Redactor {
    fn default() -> Self {
        Self::new()
    }
}

// Connection state holds a few bytes of a packet header and the (redacted) start of a packet: nothing shown.
impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor").field("connections", &self.conns.len()).finish()
    }
}

impl Redactor {
    pub fn new() -> Self {
        Redactor { conns: ConnTable::new(MAX_CONNECTIONS) }
    }

    /// Connections currently followed.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Redact one raw kernel record in place (only IO records change; others pass
    /// through, but accept, close, tracking-end and exit records update the state).
    /// Never panics, whatever the bytes.
    pub fn redact(&mut self, raw: &mut [u8]) {
        let Some(k) = rd_u32(raw, offset_of!(EventHeader, kind)) else { return };
        match k {
            kind::ACCEPT => self.on_accept(raw),
            kind::ESTABLISHED => self.on_established(raw),
            kind::UNIX_CONNECTED => self.on_unix_connected(raw),
            kind::TCP => self.on_tcp(raw),
            kind::SYSCALL => self.on_syscall(raw),
            kind::IO => self.on_io(raw),
            kind::PROCESS_EXIT => {
                if let Some(pid) = rd_u32(raw, offset_of!(EventHeader, pid)) {
                    self.conns.remove_process(pid);
                }
            }
            _ => {}
        }
    }

    fn on_accept(&mut self, raw: &[u8]) {
        if raw.len() < size_of::<AcceptEvent>() {
            return;
        }
        let h = offset_of!(AcceptEvent, header);
        let (Some(pid), Some(fd), Some(gen)) = (
            rd_u32(raw, h + offset_of!(EventHeader, pid)),
            rd_i32(raw, offset_of!(AcceptEvent, ret)),
            rd_u64(raw, offset_of!(AcceptEvent, conn_gen)),
        ) else {
            return;
        };
        if fd < 0 {
            return;
        }
        // A reused fd: the old connection ended unseen. Past the bound the oldest is
        // forgotten (its later payloads are then zeroed whole).
        if let Some(old) = self.conns.insert((pid, fd, gen), Conn::new()).reused_fd_of {
            self.conns.remove(&old);
        }
    }

    /// The socket tier's start of a connection: keyed like an accept, with no fd.
    fn on_established(&mut self, raw: &[u8]) {
        if raw.len() < size_of::<EstablishedEvent>() {
            return;
        }
        let h = offset_of!(EstablishedEvent, header);
        let (Some(pid), Some(gen)) =
            (rd_u32(raw, h + offset_of!(EventHeader, pid)), rd_u64(raw, offset_of!(EstablishedEvent, conn_gen)))
        else {
            return;
        };
        self.conns.insert((pid, NO_FD, gen), Conn::new());
    }

    /// The socket tier's start of a Unix-socket connection: keyed like an accept, no fd.
    fn on_unix_connected(&mut self, raw: &[u8]) {
        if raw.len() < size_of::<UnixConnectEvent>() {
            return;
        }
        let h = offset_of!(UnixConnectEvent, header);
        let (Some(pid), Some(gen)) =
            (rd_u32(raw, h + offset_of!(EventHeader, pid)), rd_u64(raw, offset_of!(UnixConnectEvent, conn_gen)))
        else {
            return;
        };
        self.conns.insert((pid, NO_FD, gen), Conn::new());
    }

    /// The socket tier's end of a connection: the server's socket closing (FIN_WAIT1,
    /// LAST_ACK, CLOSE), as the correlator ends it.
    fn on_tcp(&mut self, raw: &[u8]) {
        if raw.len() < size_of::<TcpEvent>() {
            return;
        }
        let (Some(pid), Some(gen), Some(fd), Some(what), Some(new)) = (
            rd_u32(raw, offset_of!(TcpEvent, header) + offset_of!(EventHeader, pid)),
            rd_u64(raw, offset_of!(TcpEvent, conn_gen)),
            rd_i32(raw, offset_of!(TcpEvent, fd)),
            rd_u32(raw, offset_of!(TcpEvent, what)),
            rd_u32(raw, offset_of!(TcpEvent, newstate)),
        ) else {
            return;
        };
        if fd == NO_FD && ((what == tcp::STATE && tcp_state::ends(new)) || what == tcp::UNIX_CLOSED) {
            self.conns.remove(&(pid, fd, gen));
        }
    }

    fn on_syscall(&mut self, raw: &[u8]) {
        if raw.len() < size_of::<SysEvent>() {
            return;
        }
        let (Some(pid), Some(gen), Some(fd), Some(syscall)) = (
            rd_u32(raw, offset_of!(SysEvent, header) + offset_of!(EventHeader, pid)),
            rd_u64(raw, offset_of!(SysEvent, conn_gen)),
            rd_i32(raw, offset_of!(SysEvent, fd)),
            rd_u32(raw, offset_of!(SysEvent, syscall)),
        ) else {
            return;
        };
        if syscall == sys::CLOSE || syscall == SYS_TRACKING_END {
            self.conns.remove(&(pid, fd, gen));
        }
    }

    fn on_io(&mut self, raw: &mut [u8]) {
        let p0 = offset_of!(IoEvent, payload);
        if raw.len() < size_of::<IoEvent>() {
            // Undecodable, but it may still hold payload bytes.
            if raw.len() > p0 {
                raw[p0..].fill(0);
            }
            return;
        }
        // Bytes past the struct are ignored by the decoder: they carry nothing.
        raw[size_of::<IoEvent>()..].fill(0);
        let s = offset_of!(IoEvent, sys);
        let args = s + offset_of!(SysEvent, args);
        let field = |off: usize| rd_u64(raw, off).unwrap_or(0);
        let pid = rd_u32(raw, s + offset_of!(SysEvent, header) + offset_of!(EventHeader, pid)).unwrap_or(0);
        let gen = field(s + offset_of!(SysEvent, conn_gen));
        let ret = rd_i64(raw, s + offset_of!(SysEvent, ret)).unwrap_or(0);
        let (arg0, arg1) = (field(args), field(args + 8));
        let fd = rd_i32(raw, s + offset_of!(SysEvent, fd)).unwrap_or(-1);
        let syscall = rd_u32(raw, s + offset_of!(SysEvent, syscall)).unwrap_or(0);
        let captured = rd_u32(raw, offset_of!(IoEvent, captured)).unwrap_or(0);
        let ends_tracking = rd_u32(raw, offset_of!(IoEvent, tracking_end)).unwrap_or(0) != 0;

        // What the stream really moved: the captured prefix, then uncaptured bytes.
        let total = u64::try_from(ret).unwrap_or(0);
        let known = u64::from(captured).min(PAYLOAD_MAX as u64).min(total) as usize;
        let gap = total - known as u64;
        let payload = &mut raw[p0..p0 + PAYLOAD_MAX];
        // The ring buffer does not clear a record: bytes past `captured` are left
        // over from earlier records (other payloads) and must not reach a file.
        payload[known..].fill(0);
        let data = &mut payload[..known];

        let from_client = match syscall {
            // SOCK_RECV / SOCK_SEND carry bytes for Unix-socket connections (socket tier).
            sys::READ | sys::READV | sys::RECVFROM | sys::RECVMSG | sys::PACKET_IN | sys::SOCK_RECV => true,
            sys::WRITE | sys::WRITEV | sys::SENDTO | sys::SENDMSG | sys::PACKET_OUT | sys::SOCK_SEND => false,
            _ => {
                data.fill(0);
                return;
            }
        };
        let Some(conn) = self.conns.get_mut(&(pid, fd, gen)) else {
            // Its accept was not seen (lost, or forgotten): no way to place secrets.
            data.fill(0);
            return;
        };
        // recvfrom(fd, buf, len, flags): args [len, flags]; recvmsg(fd, msg, flags): args [flags, ..].
        let peek = match syscall {
            sys::RECVFROM => arg1 & MSG_PEEK != 0,
            sys::RECVMSG => arg0 & MSG_PEEK != 0,
            _ => false,
        };
        // read(fd, buf, count) and recvfrom: args[0] is the size asked for.
        let requested = matches!(syscall, sys::READ | sys::RECVFROM).then_some(arg0);
        if peek {
            // The same bytes will be read again: redact them as they will be then,
            // without consuming them.
            conn.clone().io(from_client, data, gap, requested);
        } else {
            conn.io(from_client, data, gap, requested);
        }
        // The kernel stopped tracing the connection with this record: nothing more comes.
        if ends_tracking {
            self.conns.remove(&(pid, fd, gen));
        }
    }
}

fn rd<const N: usize>(raw: &[u8], off: usize) -> Option<[u8; N]> {
    raw.get(off..off.checked_add(N)?)?.try_into().ok()
}

// Records are in the machine's byte order (they come from its kernel).
fn rd_u32(raw: &[u8], off: usize) -> Option<u32> {
    rd(raw, off).map(u32::from_ne_bytes)
}

fn rd_i32(raw: &[u8], off: usize) -> Option<i32> {
    rd(raw, off).map(i32::from_ne_bytes)
}

fn rd_u64(raw: &[u8], off: usize) -> Option<u64> {
    rd(raw, off).map(u64::from_ne_bytes)
}

fn rd_i64(raw: &[u8], off: usize) -> Option<i64> {
    rd(raw, off).map(i64::from_ne_bytes)
}
