//! The maps every program shares (the target filter, the connections in their
//! handshake, the threads and their syscalls in flight, the ring buffer, the
//! counters) and the read-only globals userspace writes before load.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use handshake_trace_common::{
    counter, Conn, ConnKey, EarlyData, PeerKey, Queued, SkbCgroup, SockConn, SockTask, TargetFilter, TaskState, ThreadConn, TracepointOffsets,
    DEFAULT_RINGBUF_BYTES, MAX_CONNS, MAX_EARLY_DATA, MAX_LISTENERS, MAX_LISTEN_PORTS, MAX_TARGETS, MAX_TASKS, MAX_UNIX_LISTENERS, SOCK_SLOTS,
    UNIX_SLOTS,
};

/// Processes (tgid) to trace. Userspace keeps it current.
#[map]
pub static TARGETS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_TARGETS, 0);

/// The same processes as a short list (one entry), asked first: it costs a few
/// compares where the hash map costs a hash and a bucket walk, and every syscall of
/// every process asks. Userspace rewrites it with TARGETS.
#[map]
pub static TARGET_FILTER: Array<TargetFilter> = Array::with_max_entries(1, 0);

/// Connections in their handshake. A lookup here is also the target filter of the
/// read/write programs: only targets' accepts insert, so one lookup serves both.
#[map]
pub static CONNS: HashMap<ConnKey, Conn> = HashMap::with_max_entries(MAX_CONNS, 0);

/// Connections by client address, for the TCP tracepoints (which run in any context).
/// LRU: an entry whose connection ended unseen (its target removed, a record lost)
/// makes room for new ones instead of filling the map for good.
#[map]
pub static PEERS: LruHashMap<PeerKey, ThreadConn> = LruHashMap::with_max_entries(MAX_CONNS, 0);

/// Per target thread, keyed by thread id: the connection it last worked on and the
/// syscall it is in (arguments saved at entry for the exit). Written in place; an
/// entry goes when its thread exits.
#[map]
pub static TASKS: HashMap<u32, TaskState> = HashMap::with_max_entries(MAX_TASKS, 0);

/// How many connections CONNS holds, how many TASKS are inside a saved syscall and
/// how many PEERS entries lack the server's port (indexes in `live`). Kept exact by the only code that changes them
/// (`conn_insert`, `conn_remove`, `save_in_flight`, `take_in_flight`, `forget_task`):
/// while a count is zero the programs skip the lookups, so a server with no handshake
/// open pays only the target check for its query traffic. Connections removed behind
/// the programs' back (userspace dropping a gone target's) leave the count high, which
/// only costs the lookups, never an event.
#[map]
pub static LIVE: Array<u64> = Array::with_max_entries(3, 0);

pub mod live {
    pub const CONNS: u32 = 0;
    pub const IN_FLIGHT: u32 = 1;
    /// PEERS entries keyed without the server's port (a syscall-tier accept on a
    /// listener userspace had not named): while 0, the TCP programs look up once.
    pub const UNKEYED_PEERS: u32 = 2;
}

/// Events to userspace; userspace may resize it before load.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RINGBUF_BYTES, 0);

/// Emitted / lost counters (see `handshake_trace_common::counter`).
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// `bpf_map_update_elem` flag: insert only, fail if the key exists.
pub const BPF_NOEXIST: u64 = 1;

/// The size of EVENTS in bytes, written by userspace with the map's size before load.
// SAFETY (no_mangle): the loader finds it by this name; no other symbol has it.
#[unsafe(no_mangle)]
static RING_BYTES: u64 = DEFAULT_RINGBUF_BYTES as u64;

/// Tracepoint field offsets, written by userspace from the `format` files before load.
// SAFETY (no_mangle): the loader finds it by this name; no other symbol has it.
#[unsafe(no_mangle)]
static TP_OFFSETS: TracepointOffsets = TracepointOffsets {
    syscall_arg0: 16,
    exit_ret: 16,
    gen_sig: 8,
    gen_errno: 12,
    gen_code: 16,
    gen_pid: 36,
    gen_result: 44,
    deliver_sig: 8,
    deliver_errno: 12,
    deliver_code: 16,
    exit_pid: 24,
    set_state_fixed: 0,
    retransmit: ZERO_TCP,
    send_reset: ZERO_TCP,
    receive_reset: ZERO_TCP,
    set_state: ZERO_TCP,
    retransmit_source: ZERO_TCP,
};

const ZERO_TCP: handshake_trace_common::TcpOffsets =
    handshake_trace_common::TcpOffsets { dport: 0, daddr: 0, oldstate: 0, newstate: 0, protocol: 0, daddr_is_sockaddr: 0, server_port: 0 };

#[inline(always)]
pub fn offsets() -> TracepointOffsets {
    // Volatile so the compiler does not fold the defaults; the loader rewrites them.
    // SAFETY: a reference to a static: valid and aligned.
    unsafe { core::ptr::read_volatile(&TP_OFFSETS) }
}

/// The size of EVENTS in bytes (fixed at load).
#[inline(always)]
pub fn ring_bytes() -> u64 {
    // SAFETY: as in `offsets`.
    unsafe { core::ptr::read_volatile(&RING_BYTES) }
}

/// The listening ports of the targets (host order) → their process, or
/// LISTEN_SHARED when several targets listen on it. Userspace fills it from /proc
/// with TARGETS; in the socket tier a target's `listen` after that adds its port at
/// once (`inet_sock_set_state` CLOSE → LISTEN runs in the listening thread). The
/// syscall tier asks it only at a connection's TCP handshake (`ESTABLISHED_AT`).
#[map]
pub static LISTEN_PORTS: HashMap<u16, u32> = HashMap::with_max_entries(MAX_LISTEN_PORTS, 0);

/// Socket tier: a data segment that reached a target's listening socket (the client
/// sent it with the ACK that completes the TCP handshake), by the client's address and
/// the server's port, until the connection it establishes is followed
/// (`sock::on_established`) and announced (`sock::announce`, which sends it and
/// removes it). LRU: a segment whose connection never comes is evicted.
#[map]
pub static EARLY_DATA: LruHashMap<PeerKey, EarlyData> = LruHashMap::with_max_entries(MAX_EARLY_DATA, 0);

/// Room to build an EARLY_DATA value (too large for the stack), one per CPU.
#[map]
pub static EARLY_SCRATCH: PerCpuArray<EarlyData> = PerCpuArray::with_max_entries(1, 0);

/// Socket tier: connections in their handshake, keyed by their `struct sock` address
/// (the same in the socket tracepoints and in `__sk_buff.sk`). A lookup here is the
/// whole filter of the socket and packet programs.
#[map]
pub static SOCK_CONNS: HashMap<u64, SockConn> = HashMap::with_max_entries(MAX_CONNS, 0);

/// Socket tier: the filter in front of SOCK_CONNS, one count per slot
/// (`sock_slot`): how many followed sockets hash there. Every socket call and packet
/// of the host asks it first, an array load instead of a hash lookup; a slot at 0
/// means the socket is surely not followed. Kept by `follow_sock` / `forget_sock`;
/// entries userspace removes behind their back leave a count high, which only costs
/// the lookup, never an event.
#[map]
pub static SOCK_SLOT_COUNTS: Array<u64> = Array::with_max_entries(SOCK_SLOTS + UNIX_SLOTS, 0);

/// Socket tier: the targets' listening Unix sockets, by inode number → their process.
/// Userspace fills it from /proc with TARGETS.
#[map]
pub static UNIX_LISTENERS: HashMap<u64, u32> = HashMap::with_max_entries(MAX_UNIX_LISTENERS, 0);

/// Socket tier: the Unix-socket connections followed (socket address → generation),
/// for userspace to hand to the sweep program: no tracepoint fires when a Unix socket
/// closes.
#[map]
pub static UNIX_SOCKS: HashMap<u64, u64> = HashMap::with_max_entries(MAX_CONNS, 0);

/// Socket tier: the cgroup the packet programs are attached to (one entry, rewritten
/// by userspace when it re-attaches them), checked at each connection's start.
#[map]
pub static SKB_CGROUP: Array<SkbCgroup> = Array::with_max_entries(1, 0);

/// Socket tier: per server thread, the connection it last read or wrote in its
/// handshake, for signals to that thread. Least recently used entries make room (a
/// thread's exit is not seen here); a stale one is told by its generation.
#[map]
pub static SOCK_TASKS: LruHashMap<u32, SockTask> = LruHashMap::with_max_entries(MAX_TASKS, 0);

/// Syscall tier: the targets' listening sockets (process, fd) → their local port,
/// filled by userspace from /proc. An accept learns its server's port here (its TCP
/// events are found by both ends); with `--port`, an accept on a listener found here
/// with another port is neither followed nor emitted; one not found goes on (userspace
/// filters it, and its TCP events are found by the client's address and port alone).
#[map]
pub static LISTENERS: HashMap<ConnKey, u32> = HashMap::with_max_entries(MAX_LISTENERS, 0);

/// Syscall tier: when each connection on a target's listening port completed its TCP
/// handshake (by client address and port and the server's port), and whether the
/// client left before the accept, for the accept to time the handshake from there: an
/// accept-queue wait is the server's. The accept takes its entry; least recently used
/// entries make room for the ones never accepted.
#[map]
pub static ESTABLISHED_AT: LruHashMap<PeerKey, Queued> = LruHashMap::with_max_entries(MAX_CONNS, 0);

/// `--port` (0: every port), written by userspace before load.
// SAFETY (no_mangle): the loader finds it by this name; no other symbol has it.
#[unsafe(no_mangle)]
static PORT_FILTER: u32 = 0;

/// The port `--port` keeps, or 0.
#[inline(always)]
pub fn port_filter() -> u32 {
    // SAFETY: as in `offsets`.
    unsafe { core::ptr::read_volatile(&PORT_FILTER) }
}

/// Socket tier, discovery mode: ports that a process named like a server (not a
/// target yet) began to listen on → its process, written by the kernel at its
/// `listen`, so connections from its first one on are followed while userspace
/// confirms (adopts: the port moves to LISTEN_PORTS) or refuses it (the entries go,
/// the process joins REFUSED). Least recently used entries make room: a process
/// listening on many ports cannot fill a map anything else needs.
#[map]
pub static CANDIDATE_PORTS: LruHashMap<u16, u32> = LruHashMap::with_max_entries(MAX_CANDIDATE_PORTS, 0);

/// Processes userspace refused (tgid → 1): their `listen`s are no candidates.
#[map]
pub static REFUSED: LruHashMap<u32, u32> = LruHashMap::with_max_entries(MAX_REFUSED, 0);

const MAX_CANDIDATE_PORTS: u32 = 64;
const MAX_REFUSED: u32 = 256;

/// 1 in discovery mode (no `-p`), written by userspace before load.
// SAFETY (no_mangle): the loader finds it by this name; no other symbol has it.
#[unsafe(no_mangle)]
static DISCOVER: u32 = 0;

/// Are processes named like a server followed from their first `listen`?
#[inline(always)]
pub fn discover() -> bool {
    // SAFETY: as in `offsets`.
    unsafe { core::ptr::read_volatile(&DISCOVER) != 0 }
}
