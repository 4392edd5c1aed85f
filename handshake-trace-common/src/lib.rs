//! Wire types shared by the kernel programs (`handshake-trace-ebpf`) and the
//! collector (`handshake-trace`).
//!
//! Every struct is `#[repr(C)]` with explicit padding fields so both sides agree
//! byte for byte; flags are `u32`, never `bool`. The collector converts these into
//! rich types with `From` (see `handshake-trace/src/events.rs`).
#![no_std]

pub mod handshake_end;
pub mod packet;

pub use handshake_end::handshake_end;

/// Event kinds, the first field of every record in the `EVENTS` ring buffer.
pub mod kind {
    /// An `accept`/`accept4` by a target process returned: [`AcceptEvent`](super::AcceptEvent).
    pub const ACCEPT: u32 = 1;
    /// A syscall on a connection in its handshake, or a timer/kill by a target: [`SysEvent`](super::SysEvent).
    pub const SYSCALL: u32 = 2;
    /// A read or write on a connection in its handshake, with payload: [`IoEvent`](super::IoEvent).
    pub const IO: u32 = 3;
    /// A signal generated for / delivered to a handler thread: [`SignalEvent`](super::SignalEvent).
    pub const SIGNAL: u32 = 4;
    /// A TCP event (retransmit, reset, state change) of a connection in its handshake: [`TcpEvent`](super::TcpEvent).
    pub const TCP: u32 = 5;
    /// A target process exited: [`EventHeader`](super::EventHeader) alone.
    pub const PROCESS_EXIT: u32 = 6;
    /// Socket tier: a target's listening port gained an established connection
    /// (no accept is seen): [`EstablishedEvent`](super::EstablishedEvent).
    pub const ESTABLISHED: u32 = 7;
    /// Socket tier: a client connected to a target's listening Unix socket (no accept,
    /// no fd): [`UnixConnectEvent`](super::UnixConnectEvent).
    pub const UNIX_CONNECTED: u32 = 8;
}

/// Syscall identifiers in [`SysEvent::syscall`] (ours, not the kernel's numbers).
pub mod sys {
    /// accept and accept4, in [`InFlight::syscall`](super::InFlight::syscall) only: an
    /// accept's exit sends an [`AcceptEvent`](super::AcceptEvent), never a `SysEvent`.
    pub const ACCEPT: u32 = 0;
    pub const READ: u32 = 1;
    pub const READV: u32 = 2;
    pub const RECVFROM: u32 = 3;
    pub const RECVMSG: u32 = 4;
    pub const WRITE: u32 = 5;
    pub const WRITEV: u32 = 6;
    pub const SENDTO: u32 = 7;
    pub const SENDMSG: u32 = 8;
    pub const POLL: u32 = 9;
    pub const PPOLL: u32 = 10;
    pub const SELECT: u32 = 11;
    pub const PSELECT6: u32 = 12;
    pub const FCNTL: u32 = 13;
    pub const SETSOCKOPT: u32 = 14;
    pub const CLOSE: u32 = 15;
    pub const SHUTDOWN: u32 = 16;
    pub const ALARM: u32 = 17;
    pub const SETITIMER: u32 = 18;
    pub const TIMER_SETTIME: u32 = 19;
    pub const KILL: u32 = 20;
    pub const TKILL: u32 = 21;
    pub const TGKILL: u32 = 22;
    /// Socket tier, in [`IoEvent`](super::IoEvent)s with fd [`NO_FD`](super::NO_FD):
    /// a packet of the connection arrived (`cgroup_skb/ingress`) or left
    /// (`cgroup_skb/egress`), `ret` its TCP payload length; a socket read or write
    /// (`sock_recv_length` / `sock_send_length`) that moved nothing, `ret` its result
    /// and `args[1]` its MSG_* flags. Which syscall it was is not seen.
    pub const PACKET_IN: u32 = 23;
    pub const PACKET_OUT: u32 = 24;
    pub const SOCK_RECV: u32 = 25;
    pub const SOCK_SEND: u32 = 26;
}

/// Error numbers (x86-64 Linux, positive) the programs and the collector name: a
/// syscall's return value is `-errno`.
pub mod errno {
    pub const EINTR: i32 = 4;
    pub const EAGAIN: i32 = 11;
    pub const ECONNRESET: i32 = 104;
    pub const ETIMEDOUT: i32 = 110;
    /// The kernel's restart codes, which `sys_exit` tracepoints can see before the
    /// signal code turns them into a restart or EINTR on the way out.
    pub const ERESTARTSYS: i32 = 512;
    pub const ERESTARTNOINTR: i32 = 513;
    pub const ERESTARTNOHAND: i32 = 514;
    pub const ERESTART_RESTARTBLOCK: i32 = 516;

    /// Is `errno` one of the restart codes (512..=516)?
    #[inline(always)]
    pub fn is_restart(errno: i32) -> bool {
        (ERESTARTSYS..=ERESTART_RESTARTBLOCK).contains(&errno)
    }
}

/// What a [`TcpEvent`] reports.
pub mod tcp {
    pub const RETRANSMIT: u32 = 1;
    pub const SEND_RESET: u32 = 2;
    pub const RECEIVE_RESET: u32 = 3;
    pub const STATE: u32 = 4;
    /// A retransmit by the client's socket (found by its source address): a client on
    /// this host whose packet did not reach the server.
    pub const CLIENT_RETRANSMIT: u32 = 5;
    /// Socket tier: the server's end of a Unix-socket connection was found closed (no
    /// tracepoint fires on a Unix socket's close: the tracer looks every few tens of
    /// milliseconds, so this record's time is when it was noticed).
    pub const UNIX_CLOSED: u32 = 6;
}

/// Kernel TCP states (`include/net/tcp_states.h`) the socket tier starts and ends
/// connections on.
pub mod tcp_state {
    pub const ESTABLISHED: u32 = 1;
    pub const SYN_RECV: u32 = 3;
    pub const LISTEN: u32 = 10;
    pub const FIN_WAIT1: u32 = 4;
    pub const CLOSE: u32 = 7;
    pub const CLOSE_WAIT: u32 = 8;
    pub const LAST_ACK: u32 = 9;

    /// Does the server's socket entering `state` end the connection (it sent its FIN,
    /// awaits the last ACK after the client's, or closed: an abort or a reset)?
    #[inline(always)]
    pub fn ends(state: u32) -> bool {
        matches!(state, FIN_WAIT1 | LAST_ACK | CLOSE)
    }
}

/// Indexes of the per-CPU counters in the `COUNTERS` map.
/// `EMITTED + LOST_RINGBUF` is every event the programs tried to send.
pub mod counter {
    /// Records committed to the ring buffer.
    pub const EMITTED: u32 = 0;
    /// Records dropped because the ring buffer was full.
    pub const LOST_RINGBUF: u32 = 1;
    /// Records dropped because a bounded map (syscalls in flight, connections) was full.
    pub const LOST_MAPFULL: u32 = 2;
    /// Accepts on a listener of another port than `--port`'s: neither followed nor emitted.
    pub const FILTERED_PORT: u32 = 3;
    /// Number of counters.
    pub const COUNT: u32 = 4;
}

/// Capacity of the map of target processes (keyed by tgid).
pub const MAX_TARGETS: u32 = 256;
/// Capacity of the map of target threads (one entry per thread that did a traced syscall).
pub const MAX_TASKS: u32 = 16384;
/// Capacity of the maps of connections in their handshake (and their peers).
pub const MAX_CONNS: u32 = 16384;
/// Bytes of each read/write payload copied during the handshake: a greeting, a login
/// header with user and database, an ERR with its message.
pub const PAYLOAD_MAX: usize = 256;
/// Default ring buffer size in bytes (a power of two, a multiple of the page size).
pub const DEFAULT_RINGBUF_BYTES: u32 = 4 << 20;
/// Marks an offset whose tracepoint lacks the field.
pub const NO_FIELD: u32 = u32::MAX;
/// The fd of a socket-tier connection: the socket tier never sees one.
pub const NO_FD: i32 = -1;
/// Capacity of the socket tier's map of target listening ports.
pub const MAX_LISTEN_PORTS: u32 = 256;
/// Capacity of the syscall tier's map of target listening sockets (`--port` in the kernel).
pub const MAX_LISTENERS: u32 = 256;
/// `sock:inet_sock_set_state`'s socket address and local port, at these offsets in the
/// layout [`SET_STATE_LAYOUT`] describes (the socket tier needs both; checked at load).
pub const SET_STATE_SKADDR: u32 = 8;
pub const SET_STATE_SPORT: u32 = 24;
pub const SET_STATE_SADDR_V6: u32 = 40;

/// Offsets of the fields of one TCP tracepoint the programs read.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpOffsets {
    /// `dport` (host order), or NO_FIELD when the address is a sockaddr (`daddr[28]`).
    pub dport: u32,
    /// `daddr_v6` (16 bytes, IPv4 peers v4-mapped), or the sockaddr `daddr`.
    pub daddr: u32,
    /// `oldstate` / `newstate` for inet_sock_set_state; `protocol` (u16); else NO_FIELD.
    pub oldstate: u32,
    pub newstate: u32,
    pub protocol: u32,
    /// 1 when `daddr` is a `struct sockaddr_in6`-sized sockaddr rather than `daddr_v6`.
    pub daddr_is_sockaddr: u32,
    /// The server's end: `sport` (host order) where `dport` is the client's, `dport` on a
    /// client's own socket; the other sockaddr when `daddr_is_sockaddr`; NO_FIELD when
    /// the tracepoint has none (the connection is then found by its client alone).
    pub server_port: u32,
}

/// `sock:inet_sock_set_state` as recent kernels lay it out (6.18 included; checked against the format file at load). It runs
/// about ten times per handshake, mostly for sockets that are not followed, so the
/// program has a fast path compiled for exactly this layout.
pub const SET_STATE_LAYOUT: TcpOffsets =
    TcpOffsets { dport: 26, daddr: 56, oldstate: 16, newstate: 20, protocol: 30, daddr_is_sockaddr: 0, server_port: 24 };

/// Byte offsets of the tracepoint fields the programs read. The collector fills
/// this from each tracepoint's `format` file at load time and writes it into the
/// object's read-only global `TP_OFFSETS` before loading, so a kernel that lays
/// fields out differently is still read correctly.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TracepointOffsets {
    /// `sys_enter_*`: the first argument; the others follow 8 bytes apart (checked).
    pub syscall_arg0: u32,
    /// `sys_exit_*`: the return value.
    pub exit_ret: u32,
    /// `signal:signal_generate`.
    pub gen_sig: u32,
    pub gen_errno: u32,
    pub gen_code: u32,
    pub gen_pid: u32,
    pub gen_result: u32,
    /// `signal:signal_deliver`.
    pub deliver_sig: u32,
    pub deliver_errno: u32,
    pub deliver_code: u32,
    /// `sched:sched_process_exit`: the exiting task's pid (tid).
    pub exit_pid: u32,
    /// 1 when `set_state` equals [`SET_STATE_LAYOUT`]: the program then reads the fields
    /// straight from its context (constant offsets, no helper call) instead of through
    /// `bpf_probe_read` at offsets known only at load time.
    pub set_state_fixed: u32,
    pub retransmit: TcpOffsets,
    pub send_reset: TcpOffsets,
    pub receive_reset: TcpOffsets,
    pub set_state: TcpOffsets,
    /// `tcp_retransmit_skb`'s source end (`sport`, `saddr_v6`) in the `dport`/`daddr`
    /// fields: a client's own socket retransmitting is found by its source address.
    pub retransmit_source: TcpOffsets,
}

/// Fields common to every record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// One of [`kind`].
    pub kind: u32,
    /// Process (tgid) of the thread that made the syscall.
    pub pid: u32,
    /// Thread (kernel tid) that made the syscall.
    pub tid: u32,
    pub _pad: u32,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) at the syscall's exit.
    pub ts_ns: u64,
}

/// An accept by a target process: which listening fd, which new fd, and the peer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AcceptEvent {
    pub header: EventHeader,
    /// The listening socket passed to accept.
    pub listen_fd: i32,
    /// The syscall's return: the new fd, or a negative errno.
    pub ret: i32,
    /// `sa_family` of the peer address (AF_INET = 2, AF_INET6 = 10, AF_UNIX = 1), 0 when
    /// the caller passed no address buffer or it could not be read.
    pub family: u16,
    /// Peer port in host byte order.
    pub port: u16,
    /// By family, so a TCP accept and a Unix one share the place: AF_INET/AF_INET6, the
    /// microseconds the connection waited, established, for this accept (from its TCP
    /// handshake: an accept-queue wait is the server's; 0 when that was not seen);
    /// AF_UNIX, the client's process (the new socket's `sk_peer_pid`, what SO_PEERCRED
    /// gives the server; 0 when unknown). Recordings from before either hold 0. Read it
    /// through [`AcceptEvent::queued_us`] and [`AcceptEvent::peer_pid`].
    pub by_family: u32,
    /// Peer address: 4 bytes for AF_INET, 16 for AF_INET6, network order. AF_UNIX: the
    /// client process's name (its `comm`, NUL-padded), zeros when unknown.
    pub addr: [u8; 16],
    /// Generation of the connection: tells a reused fd's connections apart.
    pub conn_gen: u64,
}

impl AcceptEvent {
    /// `sa_family` of a Unix-socket peer.
    pub const AF_UNIX: u16 = 1;

    /// TCP: microseconds the connection waited in the accept queue (0: not seen).
    pub fn queued_us(&self) -> u32 {
        if self.family == Self::AF_UNIX { 0 } else { self.by_family }
    }

    /// Unix socket: the client's pid (0: unknown).
    pub fn peer_pid(&self) -> u32 {
        if self.family == Self::AF_UNIX { self.by_family } else { 0 }
    }
}

/// A syscall without payload: waits, socket options, fcntl, close, timers, kills.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SysEvent {
    pub header: EventHeader,
    /// Generation of the connection (0 for timers and kills, which name no connection).
    pub conn_gen: u64,
    /// The raw return value (negative errno, kernel restart codes included).
    pub ret: i64,
    /// Time between the syscall's entry and exit.
    pub duration_ns: u64,
    /// Syscall-specific arguments, see `docs/` and `events.rs` (timeouts, option values).
    pub args: [u64; 4],
    /// The connection's fd (-1 for none).
    pub fd: i32,
    /// One of [`sys`].
    pub syscall: u32,
}

/// A read or write with the first [`PAYLOAD_MAX`] bytes transferred.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoEvent {
    pub sys: SysEvent,
    /// Bytes copied into `payload` (≤ PAYLOAD_MAX and ≤ the bytes transferred).
    pub captured: u32,
    /// 0, or why the kernel stopped tracing the connection right after this read or
    /// write (an [`end`] code): the end rides on the record that caused it.
    pub tracking_end: u32,
    pub payload: [u8; PAYLOAD_MAX],
}

/// `signal_generate` (in the sender's context) or `signal_deliver` (in the receiver's).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SignalEvent {
    pub header: EventHeader,
    pub conn_gen: u64,
    pub fd: i32,
    pub signal: u32,
    /// The receiving thread.
    pub target_tid: u32,
    pub code: i32,
    /// signal_generate's result (0 delivered, 1 ignored, 2 already pending, ...).
    pub result: i32,
    pub errno: i32,
    /// 0 = generated, 1 = delivered.
    pub delivered: u32,
    pub _pad: u32,
}

/// A TCP event of a connection in its handshake.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpEvent {
    pub header: EventHeader,
    pub conn_gen: u64,
    pub fd: i32,
    /// One of [`tcp`].
    pub what: u32,
    pub oldstate: u32,
    pub newstate: u32,
}

/// Socket tier: a target's listening port gained an established connection (the
/// server's socket went SYN_RECV → ESTABLISHED). Runs in softirq: `header.tid` is 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EstablishedEvent {
    pub header: EventHeader,
    pub conn_gen: u64,
    /// The client: IPv6, IPv4 v4-mapped.
    pub peer_addr: [u8; 16],
    /// The server's local address, in the same form.
    pub local_addr: [u8; 16],
    /// Host order.
    pub peer_port: u16,
    pub local_port: u16,
    /// [`ESTABLISHED_PACKETS_UNSEEN`] or 0 (recordings before it hold 0 here).
    pub flags: u32,
}

/// Socket tier: a client connected to a target's listening Unix socket. Runs in the
/// connecting (client's) thread, inside its `connect`; `header.pid` is the server's
/// process, `header.tid` 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnixConnectEvent {
    pub header: EventHeader,
    pub conn_gen: u64,
    /// The connecting process (what SO_PEERCRED gives the server: the socket's
    /// `sk_peer_pid` is set from this same task).
    pub peer_pid: u32,
    /// 0 (reserved).
    pub flags: u32,
    /// The connecting process's name (its main thread's `comm`, as /proc/PID/comm
    /// shows it): untrusted bytes, escaped wherever shown.
    pub comm: [u8; 16],
    /// The inode number of the listening socket (as in /proc/net/unix).
    pub listener_ino: u64,
}

/// `SockConn::flags`: a Unix-socket connection (its bytes come from the server's
/// reads and writes, not from packets). A bit of its own: the handshake state
/// ([`CONN_TLS`], [`CONN_SSL_HEADER`], [`CONN_SSL_REQUESTED`]) shares the field.
pub const CONN_UNIX: u32 = 16;

/// Socket tier: filter slots for Unix sockets (which have no ports) after the
/// [`SOCK_SLOTS`] slots of TCP, by the socket's `sk_hash` (for an unbound or accepted
/// Unix socket, a hash of its address below 256).
pub const UNIX_SLOTS: u32 = 256;

/// The filter slot of a socket with no ports (a Unix socket) whose `sk_hash` is `hash`.
#[inline(always)]
pub fn unix_slot(hash: u32) -> u32 {
    SOCK_SLOTS + (hash & (UNIX_SLOTS - 1))
}

/// Capacity of the socket tier's map of the targets' listening Unix sockets.
pub const MAX_UNIX_LISTENERS: u32 = 256;
/// Unix-socket connections the sweep program checks per run (the arguments of one
/// `BPF_PROG_TEST_RUN` of a raw tracepoint program).
pub const UNIX_SWEEP_BATCH: usize = 12;

/// Where this kernel keeps what the socket tier reads of Unix sockets and of the
/// connecting task, from its BTF (written by userspace before load; `ok` 0 when one is
/// missing: no Unix client is then followed). Byte offsets.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnixOffsets {
    pub ok: u32,
    /// `sock_common.skc_hash` (u32), `skc_state` (u8), `sock.sk_socket`.
    pub sk_hash: u32,
    pub sk_state: u32,
    pub sk_socket: u32,
    /// `socket_alloc.vfs_inode` (the inode right after the `struct socket`), `inode.i_ino`.
    pub socket_inode: u32,
    pub inode_ino: u32,
    /// The connecting socket from the connect's fd: `task_struct.files`,
    /// `files_struct.fdt`, `fdtable.fd`, `file.private_data`, `socket.sk`, then its
    /// peer (the server's new socket): `unix_sock.peer`.
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdt_fd: u32,
    pub file_private_data: u32,
    pub socket_sk: u32,
    pub unix_peer: u32,
    /// The connecting process's name: `task_struct.group_leader`, `task_struct.comm`.
    pub task_group_leader: u32,
    pub task_comm: u32,
    /// Syscall tier, an accepted socket's client: `sock.sk_peer_pid`, `pid.numbers`
    /// (its first `upid.nr`), `pid.tasks` (the thread group leader in
    /// `tasks[PIDTYPE_TGID]`), `task_struct.pid_links`.
    pub sk_peer_pid: u32,
    pub pid_numbers: u32,
    pub pid_tasks: u32,
    pub task_pid_links: u32,
}

/// `EstablishedEvent::flags` (and `SockConn::flags`): the connection's socket belongs to
/// a cgroup outside the one the packet programs are attached to (a server moved to
/// another cgroup after it opened its listening socket): its bytes are not seen.
pub const ESTABLISHED_PACKETS_UNSEEN: u32 = 2;

/// Socket tier: where the packet programs are attached, for the check at each
/// connection's start (an array map of one entry, rewritten by userspace on re-attach).
/// `check` 0 (attached to the root, or this kernel's offsets unknown): every socket is
/// taken as seen.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SkbCgroup {
    /// The cgroup's id (its directory's inode number in the cgroup2 file system).
    pub id: u64,
    pub check: u32,
    pub _pad: u32,
}

/// Socket tier: the deepest cgroup level the check at a connection's start walks: a
/// socket in a cgroup nested deeper below the attached one is taken as unseen.
pub const CGROUP_DEPTH_MAX: u32 = 32;

/// Socket tier: where the kernel keeps a socket's cgroup v2 and a cgroup's ancestors,
/// from its BTF (`sock.sk_cgrp_data.cgroup`, `cgroup.level`, `cgroup.ancestors[]`,
/// `cgroup.kn`, `kernfs_node.id`), written by userspace before load.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupOffsets {
    pub sock_cgroup: u32,
    pub level: u32,
    pub ancestors: u32,
    pub kn: u32,
    pub kn_id: u32,
    pub _pad: u32,
}

/// Socket tier: a connection in its handshake, keyed by its `struct sock` address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockConn {
    pub gen: u64,
    pub tgid: u32,
    /// [`CONN_TLS`] once the client started TLS.
    pub flags: u32,
    /// The TCP sequence number expected next, each way (0: none seen yet): a packet
    /// before it is a retransmitted copy, not new bytes.
    pub next_seq_in: u32,
    pub next_seq_out: u32,
    pub peer: PeerKey,
    /// The server's address (IPv4 v4-mapped), kept while the owner is unknown
    /// (`tgid` 0: a port several targets listen on) for the established record
    /// sent once the owner first touches the connection.
    /// A Unix connection ([`CONN_UNIX`]) has no address: the first 8 bytes hold its
    /// socket's inode number once the server touched it (a socket at the same address
    /// with another inode is another connection).
    pub local_addr: [u8; 16],
    /// Packets left before a TLS connection stops being traced.
    pub tls_budget: u16,
    pub local_port: u16,
    pub _pad: [u16; 2],
}

/// Socket tier: a data segment that arrived on a target's listening socket, before
/// the connection it opens exists (a client that sends its first bytes with the last
/// ACK of the TCP handshake, as HAProxy's `mysql-check` and `send-proxy` do: the
/// segment establishes the connection and is queued to it, but the packet program ran
/// for the listener). Kept by the client's address until the connection is
/// established, then sent as its first packet.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EarlyData {
    pub ts_ns: u64,
    /// The segment's sequence number and payload length (the connection's next
    /// expected sequence number is their sum).
    pub seq: u32,
    pub len: u32,
    /// Bytes of `payload` copied (≤ PAYLOAD_MAX, ≤ len).
    pub captured: u32,
    pub _pad: u32,
    pub payload: [u8; PAYLOAD_MAX],
}

/// Socket tier: early data segments kept at once (an LRU map: a connection that
/// never establishes leaves its entry to be evicted).
pub const MAX_EARLY_DATA: u32 = 256;

/// Socket tier: the value of a LISTEN_PORTS entry for a port several target
/// processes listen on (SO_REUSEPORT): the kernel picks the listener, so the
/// connection's process is learnt from the first target thread that touches it.
pub const LISTEN_SHARED: u32 = u32::MAX;

/// Socket tier: slots of the filter asked before the connection map (a count of the
/// followed sockets whose port pair hashes to each slot; 0 = surely not followed).
/// Keyed by ports, not by the socket's address: the verifier lets no program do
/// arithmetic on a typed socket pointer, while every hook reads the ports as numbers.
pub const SOCK_SLOTS: u32 = 4096;

/// The filter slot of a socket with local port `local` and remote port `remote`
/// (host order; the server's side: its listening port and the client's port).
#[inline(always)]
pub fn sock_slot(local: u16, remote: u16) -> u32 {
    let key = ((local as u64) << 16) | remote as u64;
    (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 52) as u32 & (SOCK_SLOTS - 1)
}

/// Socket tier: the connection a server thread last read or wrote in its handshake
/// (for the signals sent to that thread), keyed by thread id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockTask {
    /// The socket's `struct sock` address (the key of the connection).
    pub sk: u64,
    pub gen: u64,
    pub tgid: u32,
    pub _pad: u32,
}

/// Socket tier on kernels without `sock_recv_length`/`sock_send_length` (before 6.3):
/// the fexit programs on `sock_recvmsg`/`sock_sendmsg` get a `struct socket *` and a
/// `struct msghdr *`; where those structs keep `sk` and `msg_flags` on the running
/// kernel comes from its BTF, written by userspace before load.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockFnOffsets {
    pub socket_sk: u32,
    pub msghdr_flags: u32,
}

/// Where this kernel keeps what the socket tier's `tp_btf/inet_sock_set_state`
/// program reads from the socket it gets (`const struct sock *sk`), from its BTF,
/// written by userspace before load (the program loads only when every one is found).
/// Byte offsets from `sk`; all but `inet_sport` lie in `struct sock` (direct loads the
/// verifier checks against the BTF), `inet_sport` in `struct inet_sock` (a probe read).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockFields {
    /// `sk_protocol` (u16).
    pub protocol: u32,
    /// `skc_family` (u16).
    pub family: u32,
    /// `skc_daddr`, `skc_rcv_saddr` (IPv4, network order).
    pub daddr: u32,
    pub rcv_saddr: u32,
    /// `skc_v6_daddr`, `skc_v6_rcv_saddr` (struct in6_addr).
    pub v6_daddr: u32,
    pub v6_rcv_saddr: u32,
    /// `inet_sport` of `struct inet_sock` (network order): the local port where the
    /// kernel cleared `skc_num` before the change (unhashing a socket on close).
    pub inet_sport: u32,
}

/// A connection in its handshake, keyed by [`ConnKey`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Conn {
    pub gen: u64,
    /// Peer, for the TCP tracepoints: v4-mapped IPv6 and host-order port.
    pub peer_addr: [u8; 16],
    pub peer_port: u16,
    /// I/O events left before a TLS connection stops being traced (its OK is encrypted).
    pub tls_budget: u16,
    /// [`CONN_TLS`] once the client started TLS.
    pub flags: u32,
    /// The server's port (host order) when its accept knew it, else 0: with the peer,
    /// the connection's key in `PEERS`.
    pub server_port: u16,
    pub _pad: [u16; 3],
}

/// `Conn::flags`: the client switched to TLS; payloads are no longer MySQL packets.
pub const CONN_TLS: u32 = 1;
/// `Conn::flags` (and `SockConn::flags`): the client's last bytes were an SSLRequest's
/// header; its body, with the capability flags, comes next ([`handshake_end`]).
pub const CONN_SSL_HEADER: u32 = 4;
/// `Conn::flags` (and `SockConn::flags`): the client sent an SSLRequest: a TLS
/// ClientHello may follow (and only then, [`handshake_end`]).
pub const CONN_SSL_REQUESTED: u32 = 8;
/// I/O events a TLS connection is traced for after its ClientHello: the TLS handshake
/// and the encrypted login and its reply fit; query traffic after it is not traced.
pub const TLS_BUDGET: u16 = 32;

/// Pseudo-syscall of the [`SysEvent`] that said the kernel stopped tracing a
/// connection (`args[0]` one of [`end`]). Recordings made before the end rode on
/// [`IoEvent::tracking_end`] carry it; the programs no longer send it.
pub const SYS_TRACKING_END: u32 = 100;
/// The socket options the programs follow (x86-64 values): the ones that change how a
/// handshake can end. Shared so that the kernel's filter and the verdicts agree.
pub mod sockopt {
    pub const SOL_SOCKET: u64 = 1;
    pub const SO_LINGER: u64 = 13;
    pub const SO_RCVTIMEO_OLD: u64 = 20;
    pub const SO_SNDTIMEO_OLD: u64 = 21;
    pub const SO_RCVTIMEO_NEW: u64 = 66;
    pub const SO_SNDTIMEO_NEW: u64 = 67;

    /// Is setsockopt(`level`, `name`) one the programs follow?
    #[inline(always)]
    pub fn followed(level: u64, name: u64) -> bool {
        level == SOL_SOCKET && matches!(name, SO_LINGER | SO_RCVTIMEO_OLD | SO_SNDTIMEO_OLD | SO_RCVTIMEO_NEW | SO_SNDTIMEO_NEW)
    }
}

pub mod end {
    /// The server wrote OK (after the login) or ERR: the handshake is over.
    pub const REPLY: u64 = 1;
    /// A TLS connection used up its budget of traced I/O.
    pub const TLS_BUDGET: u64 = 2;
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub tgid: u32,
    pub fd: i32,
}

/// The connection a handler thread last worked on (for signals and select).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadConn {
    pub tgid: u32,
    pub fd: i32,
    pub gen: u64,
}

/// A client's address as the TCP tracepoints show it on the server's socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PeerKey {
    /// IPv6, IPv4 peers v4-mapped.
    pub addr: [u8; 16],
    /// Host order.
    pub port: u16,
    /// The server's port (host order) when the tier knows it at the connection's start
    /// (the socket tier), else 0: another process's traffic from the same client address
    /// and port (a reset for its SYN to a closed port) then does not match.
    pub server_port: u16,
    pub _pad2: u32,
}

/// Syscall tier: a connection on a target's port between its TCP handshake and its
/// accept (`ESTABLISHED_AT`), and how the client left meanwhile, if it did: the accept
/// finds no timeline before it, so it sends that then.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Queued {
    /// When the server's socket became ESTABLISHED.
    pub established_ns: u64,
    /// When the client's FIN or RST arrived (0: it did not).
    pub left_ns: u64,
    /// [`tcp::STATE`] (its FIN: ESTABLISHED → CLOSE_WAIT), [`tcp::RECEIVE_RESET`], or 0.
    pub left: u32,
    pub _pad: u32,
}

/// What the enter program of a traced syscall keeps for its exit program.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InFlight {
    /// The fd argument.
    pub fd: i32,
    /// One of [`sys`] ([`sys::ACCEPT`] for accept).
    pub syscall: u32,
    /// A user pointer argument (accept: the sockaddr buffer; reads/writes: the buffer).
    pub ptr: u64,
    pub enter_ns: u64,
    pub conn_gen: u64,
    pub args: [u64; 4],
}

/// What the programs keep per thread of a target: the connection it last worked on
/// (signals and select name no fd) and the syscall it is in. One entry per thread,
/// written in place from syscall to syscall and removed when the thread exits: a hash
/// insert and delete per syscall cost more than the rest of the program.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskState {
    /// `gen` 0: no connection yet.
    pub conn: ThreadConn,
    /// Valid while `busy` is 1.
    pub in_flight: InFlight,
    /// 1 from a traced syscall's entry to its exit.
    pub busy: u32,
    pub _pad: u32,
}

/// How many target processes the programs can recognise without a hash lookup.
pub const FAST_TARGETS: usize = 14;

/// The target processes as a short list: every syscall of every process asks "is this a
/// target?", and a scan of a few words in an array map costs far less than a hash lookup.
/// More targets than fit set `overflow`, and the programs then ask the TARGETS map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TargetFilter {
    /// How many entries of `tgids` are in use.
    pub count: u32,
    /// Nonzero when the targets do not fit in `tgids`.
    pub overflow: u32,
    pub tgids: [u32; FAST_TARGETS],
}

impl TargetFilter {
    /// The filter for these target processes.
    pub fn of(targets: &[u32]) -> Self {
        let mut f = TargetFilter::default();
        if targets.len() > FAST_TARGETS {
            f.overflow = 1;
            return f;
        }
        for (slot, tgid) in f.tgids.iter_mut().zip(targets) {
            *slot = *tgid;
        }
        f.count = targets.len() as u32;
        f
    }

    /// False when `tgid` is certainly not a target; true when it is one (or may be,
    /// after an overflow).
    #[inline(always)]
    pub fn admits(&self, tgid: u32) -> bool {
        if self.overflow != 0 {
            return true;
        }
        let mut i = 0;
        while i < FAST_TARGETS {
            if i as u32 >= self.count {
                return false;
            }
            if self.tgids[i] == tgid {
                return true;
            }
            i += 1;
        }
        false
    }
}

#[cfg(feature = "user")]
mod pod {
    /// Marks wire structs as plain old data for aya's map access.
    macro_rules! pod {
        ($($t:ty),* $(,)?) => {
            // SAFETY: each is `#[repr(C)]` plain old data without implicit padding (sizes
            // checked by this crate's tests), and every bit pattern is a valid value.
            $(unsafe impl aya::Pod for $t {})*
        };
    }

    pod!(
        super::TargetFilter,
        super::TracepointOffsets,
        super::EventHeader,
        super::AcceptEvent,
        super::InFlight,
        super::Conn,
        super::ConnKey,
        super::ThreadConn,
        super::TaskState,
        super::PeerKey,
        super::SockConn,
        super::SockFnOffsets,
        super::SkbCgroup,
        super::CgroupOffsets,
        super::SockFields,
        super::EarlyData,
        super::UnixOffsets,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn restart_codes_are_512_to_516() {
        assert!((512..=516).all(errno::is_restart));
        assert!(!errno::is_restart(errno::EINTR) && !errno::is_restart(511) && !errno::is_restart(517));
    }

    #[test]
    fn only_the_socket_options_that_end_handshakes_are_followed() {
        for name in [13, 20, 21, 66, 67] {
            assert!(sockopt::followed(sockopt::SOL_SOCKET, name), "SOL_SOCKET option {name}");
        }
        // SO_KEEPALIVE, SO_SNDBUF; TCP_NODELAY; IP_TOS; an SO_LINGER number at another level.
        for (level, name) in [(1, 9), (1, 7), (6, 1), (0, 1), (6, 13)] {
            assert!(!sockopt::followed(level, name), "level {level} option {name}");
        }
    }

    // The sum of the field sizes equals the struct size: no implicit padding.
    #[test]
    fn wire_structs_have_no_implicit_padding() {
        assert_eq!(size_of::<EventHeader>(), 4 * 4 + 8);
        assert_eq!(size_of::<AcceptEvent>(), size_of::<EventHeader>() + 4 + 4 + 2 + 2 + 4 + 16 + 8);
        assert_eq!(size_of::<SysEvent>(), size_of::<EventHeader>() + 8 * 3 + 8 * 4 + 4 + 4);
        assert_eq!(size_of::<IoEvent>(), size_of::<SysEvent>() + 4 + 4 + PAYLOAD_MAX);
        assert_eq!(size_of::<SignalEvent>(), size_of::<EventHeader>() + 8 + 4 * 8);
        assert_eq!(size_of::<TcpEvent>(), size_of::<EventHeader>() + 8 + 4 * 4);
        assert_eq!(size_of::<InFlight>(), 4 + 4 + 8 * 3 + 8 * 4);
        assert_eq!(size_of::<Conn>(), 8 + 16 + 2 + 2 + 4 + 2 + 3 * 2);
        assert_eq!(size_of::<ConnKey>(), 8);
        assert_eq!(size_of::<TargetFilter>(), 8 + 4 * FAST_TARGETS);
        assert_eq!(size_of::<ThreadConn>(), 16);
        assert_eq!(size_of::<TaskState>(), size_of::<ThreadConn>() + size_of::<InFlight>() + 4 + 4);
        assert_eq!(size_of::<PeerKey>(), 16 + 2 + 2 + 4);
        assert_eq!(size_of::<Queued>(), 8 + 8 + 4 + 4);
        assert_eq!(size_of::<TcpOffsets>(), 7 * 4);
        assert_eq!(size_of::<EstablishedEvent>(), size_of::<EventHeader>() + 8 + 16 + 16 + 2 + 2 + 4);
        assert_eq!(size_of::<SockTask>(), 8 + 8 + 4 + 4);
        assert_eq!(size_of::<SkbCgroup>(), 8 + 4 + 4);
        assert_eq!(size_of::<CgroupOffsets>(), 6 * 4);
        assert_eq!(size_of::<SockConn>(), 8 + 4 * 4 + size_of::<PeerKey>() + 16 + 2 + 2 + 2 * 2);
        assert_eq!(size_of::<TracepointOffsets>(), 12 * 4 + 5 * size_of::<TcpOffsets>());
        assert_eq!(size_of::<EarlyData>(), 8 + 4 * 4 + PAYLOAD_MAX);
        assert_eq!(size_of::<UnixConnectEvent>(), size_of::<EventHeader>() + 8 + 4 + 4 + 16 + 8);
        assert_eq!(size_of::<UnixOffsets>(), 18 * 4);
    }

    #[test]
    fn the_connection_flags_are_distinct_bits() {
        // CONN_UNIX once shared SSL_HEADER's bit: a Unix login's header cleared it and
        // the connection's later bytes went unseen.
        let flags = [CONN_TLS, CONN_SSL_HEADER, CONN_SSL_REQUESTED, CONN_UNIX];
        for (i, a) in flags.iter().enumerate() {
            assert_eq!(a.count_ones(), 1);
            for b in &flags[i + 1..] {
                assert_eq!(a & b, 0, "{a:#x} and {b:#x} overlap");
            }
        }
    }

    #[test]
    fn unix_sockets_have_slots_of_their_own() {
        assert_eq!(unix_slot(0), SOCK_SLOTS);
        assert_eq!(unix_slot(255), SOCK_SLOTS + 255);
        // A bound socket's hash (256..511) still lands in the Unix slots.
        assert_eq!(unix_slot(300), SOCK_SLOTS + 44);
        assert!((0..5000u16).all(|p| sock_slot(p, p ^ 0x5a5a) < SOCK_SLOTS));
    }

    #[test]
    fn socket_slots_spread_the_clients_of_one_port() {
        // Clients of port 3306 from consecutive ephemeral ports: few share a slot, and
        // the client's own end (ports swapped) is another slot.
        let mut seen = [false; SOCK_SLOTS as usize];
        let distinct = (0..256u16).filter(|i| !core::mem::replace(&mut seen[sock_slot(3306, 40000 + i) as usize], true)).count();
        assert!(distinct >= 240, "{distinct} distinct slots of 256");
        assert_ne!(sock_slot(3306, 40000), sock_slot(40000, 3306));
        assert!((0..1000u16).all(|i| sock_slot(i, 65535 - i) < SOCK_SLOTS));
    }

    #[test]
    fn the_target_filter_admits_exactly_its_targets() {
        let f = TargetFilter::of(&[4242, 7]);
        assert!(f.admits(4242) && f.admits(7));
        assert!(!f.admits(8) && !f.admits(0), "an unused slot (0) must not admit pid 0");
        assert!(!TargetFilter::of(&[]).admits(0));
        let mut full = [0u32; FAST_TARGETS];
        for (i, p) in full.iter_mut().enumerate() {
            *p = 100 + i as u32;
        }
        let f = TargetFilter::of(&full);
        assert!(full.iter().all(|p| f.admits(*p)) && !f.admits(99) && f.overflow == 0);
    }

    #[test]
    fn more_targets_than_fit_admit_everyone_for_the_map_to_decide() {
        let mut many = [0u32; FAST_TARGETS + 1];
        for (i, p) in many.iter_mut().enumerate() {
            *p = 1 + i as u32;
        }
        let f = TargetFilter::of(&many);
        assert_eq!(f.overflow, 1);
        assert!(f.admits(123_456));
    }
}
