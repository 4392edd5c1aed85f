//! One step of a handshake's timeline: what a syscall, signal or TCP event did to
//! the connection, as data. Words for them live in `output`.
use std::net::SocketAddr;

use crate::{
    events::{SyscallKind, SyscallResult, TcpWhat},
    protocol::ErrPacket,
};

/// One step of a timeline. Times are absolute (kernel monotonic ns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub ts_ns: u64,
    pub tid: u32,
    pub what: StepKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepKind {
    Accepted { listen_fd: i32, client: Option<SocketAddr> },
    /// First syscall of a thread other than the accepting one on this connection.
    Handoff { from_tid: u32 },
    Read { syscall: SyscallKind, result: SyscallResult, requested: u64, nonblocking: bool, duration_ns: u64, packets: Vec<PacketSeen> },
    Write { syscall: SyscallKind, result: SyscallResult, packets: Vec<PacketSeen> },
    Wait { syscall: SyscallKind, timeout_ms: Option<u64>, result: SyscallResult, duration_ns: u64 },
    Blocking { nonblocking: bool },
    SocketOption { level: u64, name: u64, value: u64, value2: u64 },
    Timer { syscall: SyscallKind, ms: u64, result: SyscallResult },
    Kill { syscall: SyscallKind, target: u64, signal: u32 },
    Signal { signal: u32, from_tid: u32, to_tid: u32, delivered: bool },
    Tcp(TcpWhat),
    Shutdown { how: u64 },
    Close { result: SyscallResult, linger0: bool },
    TrackingEnd { reason: u64 },
    /// The correlator gave the handshake up: too many open at once.
    Dropped,
    /// The server process exited with the handshake open.
    ProcessExited { pid: u32 },
    /// Steps left out of a long timeline's middle, summed up (boxed: rare, and every
    /// step would otherwise carry its size).
    Omitted(Box<Omitted>),
}

/// The steps of a timeline's middle left out past [`super::handshake::MAX_STEPS`] (a
/// client dribbling its login a byte per write makes one step or three per byte): the
/// counts, and what the verdict and the blame would have looked for among them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Omitted {
    pub steps: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    pub reads: u64,
    /// Reads that brought bytes, and how many.
    pub data_reads: u64,
    pub read_bytes: u64,
    pub writes: u64,
    pub write_bytes: u64,
    pub waits: u64,
    /// MySQL packets (or TLS transfers) seen in those reads and writes.
    pub packets: u64,
    /// TCP retransmits by the server's socket (in all, and after the greeting), and by
    /// the client's.
    pub retransmits: u64,
    pub retransmits_after_greeting: u64,
    pub client_retransmits: u64,
    /// Any other step.
    pub other: u64,
    /// The last read that brought bytes.
    pub last_data_read_ns: Option<u64>,
    /// Of the last read or wait: was it the wait?
    pub wait_after_read: Option<bool>,
    /// Of the last data read or write: was it the read?
    pub read_after_write: Option<bool>,
    /// The last timer armed (ms > 0).
    pub last_timer_ms: Option<u64>,
    /// The first shutdown (when, how), the first read of the client's FIN, and when the
    /// client left first (a reset, CLOSE_WAIT, a FIN read, a read's ECONNRESET; reset?).
    pub first_shutdown: Option<(u64, u64)>,
    pub first_fin_read_ns: Option<u64>,
    pub client_left: Option<(u64, bool)>,
}

impl Omitted {
    /// Sum `s` up. `greeting_ns`: when the greeting was written, if it was.
    pub(crate) fn add(&mut self, s: &Step, greeting_ns: Option<u64>) {
        use crate::events::Errno;
        if self.steps == 0 {
            self.first_ns = s.ts_ns;
        }
        self.steps += 1;
        self.last_ns = self.last_ns.max(s.ts_ns);
        let left = |o: &mut Self, reset: bool| {
            o.client_left.get_or_insert((s.ts_ns, reset));
        };
        match &s.what {
            StepKind::Read { result, packets, .. } => {
                self.reads += 1;
                self.packets += packets.len() as u64;
                self.wait_after_read = Some(false);
                match *result {
                    SyscallResult::Ok(0) => {
                        self.first_fin_read_ns.get_or_insert(s.ts_ns);
                        left(self, false);
                    }
                    SyscallResult::Ok(n) => {
                        self.data_reads += 1;
                        self.read_bytes += n.unsigned_abs();
                        self.last_data_read_ns = Some(s.ts_ns);
                        self.read_after_write = Some(true);
                    }
                    SyscallResult::Err(e) if e == Errno::ECONNRESET => left(self, true),
                    SyscallResult::Err(_) => {}
                }
            }
            StepKind::Write { result, packets, .. } => {
                self.writes += 1;
                self.packets += packets.len() as u64;
                self.write_bytes += result.bytes() as u64;
                self.read_after_write = Some(false);
            }
            StepKind::Wait { .. } => {
                self.waits += 1;
                self.wait_after_read = Some(true);
            }
            StepKind::Timer { ms, .. } if *ms > 0 => self.last_timer_ms = Some(*ms),
            StepKind::Shutdown { how } => {
                self.first_shutdown.get_or_insert((s.ts_ns, *how));
            }
            StepKind::Tcp(TcpWhat::Retransmit) => {
                self.retransmits += 1;
                if greeting_ns.is_some_and(|g| s.ts_ns >= g) {
                    self.retransmits_after_greeting += 1;
                }
            }
            StepKind::Tcp(TcpWhat::ClientRetransmit) => self.client_retransmits += 1,
            StepKind::Tcp(TcpWhat::ReceiveReset) => left(self, true),
            StepKind::Tcp(TcpWhat::State { new, .. }) if *new == handshake_trace_common::tcp_state::CLOSE_WAIT => left(self, false),
            _ => {}
        }
        if !matches!(s.what, StepKind::Read { .. } | StepKind::Write { .. } | StepKind::Wait { .. }) {
            self.other += 1;
        }
    }
}

/// A MySQL packet (or TLS bytes) seen in a read or write, as much as the timeline shows of it.
/// Secrets never get here: a login carries the auth response's length only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PacketSeen {
    // From the client.
    /// A PROXY protocol header (v1 or v2) before the MySQL bytes: the client the proxy
    /// relays (None: a v1 UNKNOWN or a v2 LOCAL header), or a header that is not valid.
    ProxyHeader { version: u8, source: Option<SocketAddr>, malformed: bool },
    /// Bytes of a PROXY header not yet whole (MariaDB reads a v1 header byte by byte).
    ProxyHeaderPart { version: u8 },
    SslRequest,
    Login { user: String, database: Option<String>, plugin: Option<String>, auth_response_len: usize },
    AuthData { len: usize },
    ClientOther { len: u32 },
    /// A command after the login (sequence 0: the command phase), sent before the
    /// reply: `code` its first byte (COM_QUIT 1, COM_PING 14; zeroed in a recording).
    Command { code: Option<u8>, len: u32 },
    TlsClientHello,
    /// Bytes of a TLS connection: lengths only.
    Tls { len: usize },
    // From the server.
    Greeting { protocol: u8, server_version: String, connection_id: u32, auth_plugin: Option<String> },
    Ok,
    Err(ErrPacket),
    AuthSwitch { plugin: String, data_len: usize },
    AuthMoreData { len: usize },
    ServerOther { first_byte: u8, len: u32 },
}
