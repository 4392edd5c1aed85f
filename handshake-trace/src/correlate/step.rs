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
}

/// A MySQL packet (or TLS bytes) seen in a read or write, as much as the timeline shows of it.
/// Secrets never get here: a login carries the auth response's length only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PacketSeen {
    // From the client.
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
