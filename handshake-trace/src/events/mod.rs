//! Decoding ring-buffer records into typed events. Pure: no aya, no I/O.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use handshake_trace_common::{
    kind, tcp, AcceptEvent, EstablishedEvent, EventHeader, IoEvent, SignalEvent, SysEvent, TcpEvent, UnixConnectEvent, NO_FD,
};

mod counters;
mod errno;
mod syscall;

pub use counters::Counters;
pub use errno::{Errno, SyscallResult};
pub use syscall::{Args, Family, Syscall, SyscallKind};

/// A client connection accepted (or an accept that failed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accept {
    pub ts_ns: u64,
    /// Generation of the connection (the accept's timestamp): tells reused fds apart.
    pub conn_gen: u64,
    pub pid: u32,
    pub tid: u32,
    pub listen_fd: i32,
    pub result: SyscallResult,
    /// None when the server passed no address buffer (resolve it another way), or for
    /// a Unix-socket client.
    pub peer: Option<SocketAddr>,
    /// The client came over a Unix socket (no address to find).
    pub unix: bool,
    /// The socket tier saw the connection established on a target's listening port:
    /// no accept, no fd (`fd()` is `NO_FD`), the server's address known (`local`).
    pub established: bool,
    pub local: Option<SocketAddr>,
    /// Socket tier: the connection's socket is outside the cgroup the packet programs
    /// watch (its server moved after it listened): none of its bytes are seen.
    pub packets_unseen: bool,
    /// Syscall tier: how long the connection waited, established, for this accept
    /// (from its TCP handshake); None when that was not seen.
    pub queued_ns: Option<u64>,
    /// A Unix-socket client's process, when the tier saw who connected (the socket
    /// tier: the connecting thread).
    pub client_process: Option<ClientProcess>,
}

/// The process at the other end of a Unix-socket connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientProcess {
    pub pid: u32,
    /// Its `comm` (a thread name any local user can set): escape it wherever shown.
    pub program: String,
}

impl ClientProcess {
    /// From the kernel's pid and NUL-padded comm (empty when unknown).
    pub fn new(pid: u32, comm: &[u8]) -> Option<Self> {
        if pid == 0 {
            return None;
        }
        let end = comm.iter().position(|&c| c == 0).unwrap_or(comm.len());
        Some(ClientProcess { pid, program: String::from_utf8_lossy(&comm[..end]).into_owned() })
    }
}

impl From<UnixConnectEvent> for Accept {
    fn from(e: UnixConnectEvent) -> Self {
        Accept {
            ts_ns: e.header.ts_ns,
            conn_gen: e.conn_gen,
            pid: e.header.pid,
            tid: e.header.tid,
            listen_fd: NO_FD,
            result: SyscallResult::Ok(0),
            peer: None,
            unix: true,
            established: true,
            local: None,
            packets_unseen: false,
            client_process: ClientProcess::new(e.peer_pid, &e.comm),
            queued_ns: None,
        }
    }
}

impl From<AcceptEvent> for Accept {
    fn from(e: AcceptEvent) -> Self {
        let ip = match e.family {
            2 => Some(IpAddr::V4(Ipv4Addr::new(e.addr[0], e.addr[1], e.addr[2], e.addr[3]))),
            10 => Some(ip_of(e.addr)),
            _ => None,
        };
        Accept {
            ts_ns: e.header.ts_ns,
            conn_gen: e.conn_gen,
            pid: e.header.pid,
            tid: e.header.tid,
            listen_fd: e.listen_fd,
            result: SyscallResult::from(e.ret as i64),
            peer: ip.map(|ip| SocketAddr::new(ip, e.port)),
            unix: e.family == 1,
            established: false,
            packets_unseen: false,
            local: None,
            queued_ns: (e.queued_us() != 0).then(|| u64::from(e.queued_us()) * 1000),
            // AF_UNIX: the client's pid, and its name where the address would be.
            client_process: if e.family == AcceptEvent::AF_UNIX { ClientProcess::new(e.peer_pid(), &e.addr) } else { None },
        }
    }
}

/// An IPv6 address as the kernel keeps it; v4-mapped ones (::ffff:127.0.0.1) as plain IPv4.
fn ip_of(addr: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(addr);
    v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6))
}

impl From<EstablishedEvent> for Accept {
    fn from(e: EstablishedEvent) -> Self {
        Accept {
            ts_ns: e.header.ts_ns,
            conn_gen: e.conn_gen,
            pid: e.header.pid,
            tid: e.header.tid,
            listen_fd: NO_FD,
            result: SyscallResult::Ok(0),
            peer: Some(SocketAddr::new(ip_of(e.peer_addr), e.peer_port)),
            unix: false,
            established: true,
            local: Some(SocketAddr::new(ip_of(e.local_addr), e.local_port)),
            packets_unseen: e.flags & handshake_trace_common::ESTABLISHED_PACKETS_UNSEEN != 0,
            queued_ns: None,
            client_process: None,
        }
    }
}

impl Accept {
    /// The new connection's fd, when the accept succeeded.
    pub fn fd(&self) -> Option<i32> {
        if self.established {
            return Some(NO_FD);
        }
        match self.result {
            SyscallResult::Ok(fd) => Some(fd as i32),
            SyscallResult::Err(_) => None,
        }
    }
}

/// A read or write with the bytes captured (a prefix of what was transferred).
/// Its `Debug` shows the payload's length only: the bytes can be a scramble, an auth
/// response or a cleartext password.
#[derive(Clone, PartialEq, Eq)]
pub struct Io {
    pub sys: Syscall,
    pub payload: Payload,
    /// The kernel stopped tracing the connection after this record, and why
    /// (`handshake_trace_common::end`); older recordings carry it as its own record.
    pub tracking_end: Option<u64>,
}

impl std::fmt::Debug for Io {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Io")
            .field("sys", &self.sys)
            .field("payload_len", &self.payload.len())
            .field("tracking_end", &self.tracking_end)
            .finish()
    }
}

impl From<&IoEvent> for Io {
    fn from(e: &IoEvent) -> Self {
        let n = (e.captured as usize).min(e.payload.len());
        Io { sys: e.sys.into(), payload: Payload::new(&e.payload[..n]), tracking_end: (e.tracking_end != 0).then_some(e.tracking_end.into()) }
    }
}

/// The bytes a read or write captured (at most `PAYLOAD_MAX`), kept inline: decoding a
/// record allocates nothing (the live loop decodes every record it reads).
#[derive(Clone, Copy)]
pub struct Payload {
    bytes: [u8; handshake_trace_common::PAYLOAD_MAX],
    len: u16,
}

impl Payload {
    /// The first `PAYLOAD_MAX` bytes of `bytes`.
    pub fn new(bytes: &[u8]) -> Self {
        let mut p = Payload { bytes: [0; handshake_trace_common::PAYLOAD_MAX], len: 0 };
        let n = bytes.len().min(p.bytes.len());
        p.bytes[..n].copy_from_slice(&bytes[..n]);
        p.len = n as u16;
        p
    }
}

impl std::ops::Deref for Payload {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for Payload {}

/// The length only, as [`Io`]'s: the bytes can be a scramble or an auth response.
impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Payload({} bytes)", self.len)
    }
}

/// A signal generated for, or delivered to, a handler thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signal {
    pub ts_ns: u64,
    /// The connection's process.
    pub pid: u32,
    /// The thread the tracepoint ran in: the sender (generated) or the receiver (delivered).
    pub tid: u32,
    pub conn_gen: u64,
    pub fd: i32,
    pub signal: u32,
    pub target_tid: u32,
    pub code: i32,
    pub result: i32,
    pub delivered: bool,
}

impl From<SignalEvent> for Signal {
    fn from(e: SignalEvent) -> Self {
        Signal {
            ts_ns: e.header.ts_ns,
            pid: e.header.pid,
            tid: e.header.tid,
            conn_gen: e.conn_gen,
            fd: e.fd,
            signal: e.signal,
            target_tid: e.target_tid,
            code: e.code,
            result: e.result,
            delivered: e.delivered != 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpWhat {
    /// The server's socket retransmitted.
    Retransmit,
    /// The client's own socket retransmitted toward the server (a client on this host).
    ClientRetransmit,
    SendReset,
    ReceiveReset,
    State { old: u32, new: u32 },
    /// The server's end of a Unix-socket connection found closed (no tracepoint fires
    /// on that close: the time is when the tracer noticed, within tens of milliseconds).
    UnixClosed,
}

/// A TCP event of a connection in its handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tcp {
    pub ts_ns: u64,
    pub pid: u32,
    pub conn_gen: u64,
    pub fd: i32,
    pub what: TcpWhat,
}

impl From<TcpEvent> for Tcp {
    fn from(e: TcpEvent) -> Self {
        let what = match e.what {
            tcp::RETRANSMIT => TcpWhat::Retransmit,
            tcp::CLIENT_RETRANSMIT => TcpWhat::ClientRetransmit,
            tcp::SEND_RESET => TcpWhat::SendReset,
            tcp::RECEIVE_RESET => TcpWhat::ReceiveReset,
            tcp::UNIX_CLOSED => TcpWhat::UnixClosed,
            _ => TcpWhat::State { old: e.oldstate, new: e.newstate },
        };
        Tcp { ts_ns: e.header.ts_ns, pid: e.header.pid, conn_gen: e.conn_gen, fd: e.fd, what }
    }
}

/// Name of a kernel TCP state (`include/net/tcp_states.h`).
pub fn tcp_state_name(state: u32) -> &'static str {
    match state {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        12 => "NEW_SYN_RECV",
        _ => "?",
    }
}

/// Signal names for display.
pub fn signal_name(sig: u32) -> String {
    let known = match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        6 => "SIGABRT",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        17 => "SIGCHLD",
        19 => "SIGSTOP",
        18 => "SIGCONT",
        _ => "",
    };
    if known.is_empty() { format!("signal {sig}") } else { known.to_string() }
}

/// Addresses of an accepted connection, as the caller learned them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AcceptAddrs {
    /// The listening socket's local address.
    pub server: Option<SocketAddr>,
    /// The client, when the kernel event had none.
    pub client: Option<SocketAddr>,
}

/// Every event the kernel programs send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Accept(Accept),
    Syscall(Syscall),
    Io(Io),
    Signal(Signal),
    Tcp(Tcp),
    ProcessExit { ts_ns: u64, pid: u32 },
}

impl Event {
    pub fn ts_ns(&self) -> u64 {
        match self {
            Event::Accept(a) => a.ts_ns,
            Event::Syscall(s) => s.ts_ns,
            Event::Io(io) => io.sys.ts_ns,
            Event::Signal(s) => s.ts_ns,
            Event::Tcp(t) => t.ts_ns,
            Event::ProcessExit { ts_ns, .. } => *ts_ns,
        }
    }
}

/// Why a record could not be decoded (a version mismatch between the embedded
/// object and the collector, or a truncated record): reported, never dropped silently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    TooShort { kind: Option<u32>, len: usize, need: usize },
    UnknownKind(u32),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::TooShort { kind, len, need } => {
                write!(f, "record of kind {kind:?} is {len} bytes, needs {need}")
            }
            DecodeError::UnknownKind(k) => write!(f, "unknown record kind {k}"),
        }
    }
}

impl std::error::Error for DecodeError {}

fn read<T: Copy>(bytes: &[u8], kind: Option<u32>) -> Result<T, DecodeError> {
    let need = std::mem::size_of::<T>();
    if bytes.len() < need {
        return Err(DecodeError::TooShort { kind, len: bytes.len(), need });
    }
    // SAFETY: length checked; T is a plain-old-data wire struct; read_unaligned
    // because ring-buffer records are only 8-byte aligned.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Decode one ring-buffer record.
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    let header: EventHeader = read(bytes, None)?;
    let k = Some(header.kind);
    Ok(match header.kind {
        kind::ACCEPT => Event::Accept(read::<AcceptEvent>(bytes, k)?.into()),
        kind::SYSCALL => Event::Syscall(read::<SysEvent>(bytes, k)?.into()),
        kind::IO => Event::Io((&read::<IoEvent>(bytes, k)?).into()),
        kind::SIGNAL => Event::Signal(read::<SignalEvent>(bytes, k)?.into()),
        kind::TCP => Event::Tcp(read::<TcpEvent>(bytes, k)?.into()),
        kind::PROCESS_EXIT => Event::ProcessExit { ts_ns: header.ts_ns, pid: header.pid },
        kind::ESTABLISHED => Event::Accept(read::<EstablishedEvent>(bytes, k)?.into()),
        kind::UNIX_CONNECTED => Event::Accept(read::<UnixConnectEvent>(bytes, k)?.into()),
        other => return Err(DecodeError::UnknownKind(other)),
    })
}

/// The bytes of a wire struct, as the kernel would send them (tests and recorded traces).
pub fn as_bytes<T: Copy>(value: &T) -> Vec<u8> {
    // SAFETY: wire structs have no implicit padding, so every byte is initialised.
    unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
        .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use handshake_trace_common::sys;

    fn accept_record(family: u16, addr: [u8; 16], port: u16, ret: i32) -> AcceptEvent {
        AcceptEvent {
            header: EventHeader { kind: kind::ACCEPT, pid: 100, tid: 101, _pad: 0, ts_ns: 5_000 },
            listen_fd: 7,
            ret,
            family,
            port,
            by_family: 0,
            addr,
            conn_gen: 5_000,
        }
    }

    fn accept_of(bytes: &[u8]) -> Accept {
        match decode(bytes).unwrap() {
            Event::Accept(a) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_accept_says_how_long_its_connection_waited_in_the_accept_queue() {
        let mut record = accept_record(2, [0; 16], 51234, 35);
        assert_eq!(accept_of(&as_bytes(&record)).queued_ns, None, "0: its TCP handshake was not seen");
        record.by_family = 2_000_123;
        assert_eq!(accept_of(&as_bytes(&record)).queued_ns, Some(2_000_123_000));
        // The same place holds a Unix client's pid: never a queue wait.
        record.family = AcceptEvent::AF_UNIX;
        assert_eq!(accept_of(&as_bytes(&record)).queued_ns, None);
    }

    #[test]
    fn decodes_an_ipv4_accept() {
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        let bytes = as_bytes(&accept_record(2, addr, 51234, 35));
        let a = accept_of(&bytes);
        assert_eq!(a.peer, Some("127.0.0.1:51234".parse().unwrap()));
        assert_eq!(a.fd(), Some(35));
        assert_eq!((a.pid, a.tid, a.listen_fd, a.ts_ns), (100, 101, 7, 5_000));
    }

    #[test]
    fn v4_mapped_ipv6_peer_shows_as_ipv4() {
        let mut addr = [0u8; 16];
        addr[10] = 0xff;
        addr[11] = 0xff;
        addr[12..].copy_from_slice(&[10, 1, 2, 3]);
        let a = accept_of(&as_bytes(&accept_record(10, addr, 3306, 4)));
        assert_eq!(a.peer, Some("10.1.2.3:3306".parse().unwrap()));
    }

    #[test]
    fn ipv6_peer() {
        let addr = Ipv6Addr::LOCALHOST.octets();
        let a = accept_of(&as_bytes(&accept_record(10, addr, 40000, 4)));
        assert_eq!(a.peer, Some("[::1]:40000".parse().unwrap()));
    }

    #[test]
    fn unix_socket_clients_are_marked_not_unknown() {
        let a = accept_of(&as_bytes(&accept_record(1, [0; 16], 0, 44)));
        assert!(a.unix);
        assert_eq!(a.peer, None);
        assert!(!accept_of(&as_bytes(&accept_record(0, [0; 16], 0, 44))).unix);
    }

    #[test]
    fn failed_accept_has_errno_and_no_fd() {
        let a = accept_of(&as_bytes(&accept_record(0, [0; 16], 0, -24)));
        assert_eq!(a.result, SyscallResult::Err(Errno(24)));
        assert_eq!(a.fd(), None);
        assert_eq!(a.peer, None);
    }

    #[test]
    fn restart_codes_are_signal_interruptions() {
        let e = match SyscallResult::from(-512) {
            SyscallResult::Err(e) => e,
            other => panic!("{other:?}"),
        };
        assert!(e.is_restart() && e.is_interrupt());
        assert_eq!(e.symbol(), Some("ERESTARTSYS"));
        assert_eq!(Errno(11), Errno::EAGAIN);
        assert!(!Errno::EINTR.is_restart() && Errno::EINTR.is_interrupt());
    }

    #[test]
    fn truncated_and_unknown_records_are_errors() {
        let bytes = as_bytes(&accept_record(2, [0; 16], 1, 1));
        assert!(matches!(decode(&bytes[..10]), Err(DecodeError::TooShort { kind: None, .. })));
        assert!(matches!(
            decode(&bytes[..30]),
            Err(DecodeError::TooShort { kind: Some(kind::ACCEPT), .. })
        ));
        let mut unknown = bytes.clone();
        unknown[0] = 99;
        assert_eq!(decode(&unknown), Err(DecodeError::UnknownKind(99)));
    }

    #[test]
    fn a_unix_socket_connection_decodes_with_its_client_process() {
        let mut comm = [0u8; 16];
        comm[..7].copy_from_slice(b"mariadb");
        let e = UnixConnectEvent {
            header: EventHeader { kind: kind::UNIX_CONNECTED, pid: 100, tid: 0, _pad: 0, ts_ns: 7_000 },
            conn_gen: 7_000,
            peer_pid: 4242,
            flags: 0,
            comm,
            listener_ino: 123,
        };
        let Event::Accept(a) = decode(&as_bytes(&e)).unwrap() else { panic!("not an accept") };
        assert!(a.unix && a.established && a.peer.is_none() && a.local.is_none());
        assert_eq!((a.pid, a.conn_gen, a.fd()), (100, 7_000, Some(NO_FD)));
        assert_eq!(a.client_process, Some(ClientProcess { pid: 4242, program: "mariadb".into() }));
        // A full 16-byte name has no NUL; pid 0 (unread) names no process.
        assert_eq!(ClientProcess::new(1, &[b'x'; 16]).unwrap().program.len(), 16);
        assert_eq!(ClientProcess::new(0, b"x\0"), None);
        let closed = TcpEvent { header: EventHeader { kind: kind::TCP, pid: 100, tid: 0, _pad: 0, ts_ns: 8_000 }, conn_gen: 7_000, fd: NO_FD, what: tcp::UNIX_CLOSED, oldstate: 0, newstate: 0 };
        assert!(matches!(decode(&as_bytes(&closed)).unwrap(), Event::Tcp(Tcp { what: TcpWhat::UnixClosed, .. })));
    }

    #[test]
    fn a_socket_tier_connection_decodes_as_an_accept_without_fd() {
        let mut peer = [0u8; 16];
        peer[10..12].copy_from_slice(&[0xff, 0xff]);
        let mut local = peer;
        peer[12..].copy_from_slice(&[127, 0, 0, 1]);
        local[12..].copy_from_slice(&[127, 0, 0, 2]);
        let e = EstablishedEvent {
            header: EventHeader { kind: kind::ESTABLISHED, pid: 100, tid: 0, _pad: 0, ts_ns: 9_000 },
            conn_gen: 9_000,
            peer_addr: peer,
            local_addr: local,
            peer_port: 51234,
            local_port: 3306,
            flags: 0,
        };
        let a = accept_of(&as_bytes(&e));
        assert!(a.established && !a.unix && !a.packets_unseen);
        assert_eq!(a.fd(), Some(NO_FD));
        assert_eq!(a.peer, Some("127.0.0.1:51234".parse().unwrap()));
        assert_eq!(a.local, Some("127.0.0.2:3306".parse().unwrap()));
        assert_eq!((a.pid, a.tid, a.conn_gen, a.listen_fd), (100, 0, 9_000, NO_FD));
        let outside = EstablishedEvent { flags: handshake_trace_common::ESTABLISHED_PACKETS_UNSEEN, ..e };
        assert!(accept_of(&as_bytes(&outside)).packets_unseen);
    }

    #[test]
    fn socket_tier_reads_and_packets_decode_with_their_flags() {
        let mut rec = IoEvent { sys: sys_record(sys::SOCK_RECV, -11), captured: 0, tracking_end: 0, payload: [0; 256] };
        rec.sys.header.kind = kind::IO;
        rec.sys.fd = NO_FD;
        rec.sys.args = [0, 0x40, 0, 0];
        match decode(&as_bytes(&rec)).unwrap() {
            Event::Io(io) => {
                assert_eq!(io.sys.kind, SyscallKind::SockRecv);
                assert!(io.sys.kind.is_read() && io.sys.kind.is_socket_tier());
                assert_eq!(io.sys.result, SyscallResult::Err(Errno::EAGAIN));
                assert_eq!(io.sys.args, Args::Transfer { requested: 0, flags: 0x40 });
                assert!(io.payload.is_empty());
            }
            other => panic!("{other:?}"),
        }
        rec.sys.syscall = sys::PACKET_OUT;
        rec.sys.ret = 95;
        rec.captured = 95;
        rec.tracking_end = 1;
        match decode(&as_bytes(&rec)).unwrap() {
            Event::Io(io) => {
                assert!(io.sys.kind.is_write() && io.sys.kind.is_socket_tier());
                assert_eq!((io.payload.len(), io.tracking_end), (95, Some(1)));
            }
            other => panic!("{other:?}"),
        }
    }

    fn sys_record(syscall: u32, ret: i64) -> SysEvent {
        SysEvent {
            header: EventHeader { kind: kind::SYSCALL, pid: 1, tid: 2, _pad: 0, ts_ns: 10 },
            conn_gen: 7,
            ret,
            duration_ns: 2_002_000_000,
            args: [1, 2000, 1, 0],
            fd: 43,
            syscall,
        }
    }

    #[test]
    fn decodes_a_poll_that_timed_out() {
        match decode(&as_bytes(&sys_record(sys::POLL, 0))).unwrap() {
            Event::Syscall(s) => {
                assert_eq!(s.kind, SyscallKind::Poll);
                assert!(s.kind.is_wait());
                assert_eq!(s.result, SyscallResult::Ok(0));
                assert_eq!((s.fd, s.conn_gen), (43, 7));
                assert_eq!(s.args, Args::Wait { nfds: 1, timeout_ms: Some(2000), events: 1, revents: 0 });
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn io_payload_is_cut_to_what_was_captured() {
        let mut rec = IoEvent { sys: sys_record(sys::RECVFROM, 4), captured: 4, tracking_end: 0, payload: [0xAA; 256] };
        rec.sys.header.kind = kind::IO;
        rec.payload[..4].copy_from_slice(&[1, 2, 3, 4]);
        match decode(&as_bytes(&rec)).unwrap() {
            Event::Io(io) => {
                assert_eq!(&*io.payload, &[1, 2, 3, 4]);
                assert!(io.sys.kind.is_read());
            }
            other => panic!("{other:?}"),
        }
        // A lying `captured` cannot read past the payload.
        rec.captured = 9999;
        match decode(&as_bytes(&rec)).unwrap() {
            Event::Io(io) => assert_eq!(io.payload.len(), 256),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_io_event_never_shows_its_bytes_in_debug_output() {
        let mut rec = IoEvent { sys: sys_record(sys::RECVFROM, 9), captured: 9, tracking_end: 0, payload: [0; 256] };
        rec.sys.header.kind = kind::IO;
        rec.payload[..9].copy_from_slice(b"hunter2!!");
        let shown = format!("{:?}", decode(&as_bytes(&rec)).unwrap());
        assert!(shown.contains("payload_len: 9"), "{shown}");
        assert!(!shown.contains("104, 117") && !shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn decodes_signals_tcp_and_exits() {
        let sig = SignalEvent {
            header: EventHeader { kind: kind::SIGNAL, pid: 1, tid: 9, _pad: 0, ts_ns: 3 },
            conn_gen: 7,
            fd: 43,
            signal: 14,
            target_tid: 5,
            code: -6,
            result: 0,
            errno: 0,
            delivered: 0,
            _pad: 0,
        };
        match decode(&as_bytes(&sig)).unwrap() {
            Event::Signal(s) => {
                assert_eq!((s.tid, s.target_tid, s.delivered), (9, 5, false));
                assert_eq!(signal_name(s.signal), "SIGALRM");
            }
            other => panic!("{other:?}"),
        }
        let t = TcpEvent {
            header: EventHeader { kind: kind::TCP, pid: 1, tid: 0, _pad: 0, ts_ns: 4 },
            conn_gen: 7,
            fd: 43,
            what: tcp::STATE,
            oldstate: 1,
            newstate: 7,
        };
        match decode(&as_bytes(&t)).unwrap() {
            Event::Tcp(t) => assert_eq!(t.what, TcpWhat::State { old: 1, new: 7 }),
            other => panic!("{other:?}"),
        }
        let h = EventHeader { kind: kind::PROCESS_EXIT, pid: 77, tid: 77, _pad: 0, ts_ns: 5 };
        assert_eq!(decode(&as_bytes(&h)).unwrap(), Event::ProcessExit { ts_ns: 5, pid: 77 });
    }
}
