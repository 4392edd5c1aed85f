//! Socket tier: connections followed by their socket (`struct sock` address) with
//! hooks that never touch the syscall path. `inet_sock_set_state` (a BTF tracepoint;
//! the classic one where that cannot load) starts one when a target's listening port
//! gains an established child and ends it when the server's socket closes; `sock_recv_length` / `sock_send_length` (BTF tracepoints:
//! sk, ret, flags) report the reads and writes that moved nothing (EAGAIN, FIN,
//! resets, interruptions). The bytes themselves come from `packet.rs`.
use aya_ebpf::{
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
    EbpfContext,
};
use handshake_trace_common::{
    counter, kind, sock_slot, sys, tcp, tcp_state, EarlyData, EstablishedEvent, IoEvent, PeerKey, SockConn, SockFields, SockTask, SysEvent, TcpOffsets,
    ESTABLISHED_PACKETS_UNSEEN, PAYLOAD_MAX,
    ThreadConn, CONN_UNIX, LISTEN_SHARED, NO_FD, SET_STATE_LAYOUT, SET_STATE_SADDR_V6, SET_STATE_SKADDR, SET_STATE_SPORT,
};

use crate::{
    cgroup::packets_unseen,
    emit::{count, emit, header, map_full, submit_flags},
    maps::{discover, BPF_NOEXIST, CANDIDATE_PORTS, EARLY_DATA, EVENTS, LISTEN_PORTS, PEERS, SOCK_CONNS, SOCK_SLOT_COUNTS, SOCK_TASKS},
    net::{set_v4_mapped, AF_INET6, IPPROTO_TCP},
    target::{current, is_target},
    tcp::{load, send},
};

/// Offset of `skc_portpair` (skc_dport, skc_num) in `struct sock_common`, the first
/// member of `struct sock`.
const SKC_PORTPAIR: u32 = 12;

/// Could a socket in filter slot `slot` be followed? One array load: most sockets'
/// slot is 0.
#[inline(always)]
fn maybe_followed(slot: u32) -> bool {
    match SOCK_SLOT_COUNTS.get(slot) {
        // SAFETY: a reference into the array map (valid, aligned); volatile so each run
        // reads the count other CPUs update.
        Some(n) => (unsafe { core::ptr::read_volatile(n as *const u64) }) != 0,
        None => true,
    }
}

/// Add `delta` (wrapping) to the count of filter slot `slot`, atomically.
#[inline(always)]
pub(crate) fn slot_add(slot: u32, delta: u64) {
    if let Some(n) = SOCK_SLOT_COUNTS.get_ptr_mut(slot) {
        // SAFETY: a valid, aligned u64 of the array map, changed only by this atomic
        // add (the BPF target has no compare-and-swap, so no `fetch_add`).
        unsafe { core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(n, delta) };
    }
}

/// The followed connection on socket `sk` (in filter slot `slot`), if any.
#[inline(always)]
pub(crate) fn sock_conn(sk: u64, slot: u32) -> Option<*mut SockConn> {
    if !maybe_followed(slot) {
        return None;
    }
    SOCK_CONNS.get_ptr_mut(&sk)
}

/// Follow the connection on `sk`; a stale entry of a freed socket at the same
/// address is replaced (already counted in its slot).
#[inline(always)]
fn follow_sock(sk: u64, c: &SockConn) -> Result<(), i32> {
    if SOCK_CONNS.insert(&sk, c, BPF_NOEXIST).is_ok() {
        slot_add(sock_slot(c.local_port, c.peer.port), 1);
        return Ok(());
    }
    SOCK_CONNS.insert(&sk, c, 0)
}

/// The connection thread `tid` last read or wrote, if it is still in its handshake
/// (for signals to that thread).
#[inline(always)]
pub(crate) fn sock_handler_conn(tid: u32) -> Option<ThreadConn> {
    // SAFETY: copied at once.
    let t = unsafe { SOCK_TASKS.get(&tid) }.copied()?;
    // SAFETY: as above.
    let c = unsafe { SOCK_CONNS.get(&t.sk) }?;
    (c.gen == t.gen).then_some(ThreadConn { tgid: t.tgid, fd: NO_FD, gen: t.gen })
}

/// Stop following the connection on `sk` (its handshake is over, or it closed).
#[inline(always)]
pub(crate) fn forget_sock(sk: u64, peer: &PeerKey, local_port: u16) {
    let _ = PEERS.remove(peer);
    if SOCK_CONNS.remove(&sk).is_ok() {
        slot_add(sock_slot(local_port, peer.port), u64::MAX);
    }
}

/// One state change of a TCP socket, as either program sees it.
struct StateChange {
    sk: u64,
    /// The socket's filter slot (from its ports).
    slot: u32,
    old: u32,
    new: u32,
}

/// `tp_btf/inet_sock_set_state` (`const struct sock *sk, int oldstate, int newstate`):
/// the kernel calls it with the socket, builds no trace record. It runs for every
/// state change of every TCP socket of the host, so the cheapest checks come first:
/// the protocol (one load), then the slot filter (one load, one array load) and the
/// state pair. Fields come from the socket by direct loads the verifier checks
/// against the kernel's BTF, at offsets userspace found there (`SOCK_FIELDS`).
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn btf_set_state(ctx: BtfTracePointContext) -> i32 {
    let sk: u64 = ctx.arg(0);
    if sk_load::<u16>(sk, field(|f| &f.protocol)) != IPPROTO_TCP {
        return 0;
    }
    let mut ports = sk_load::<u32>(sk, SKC_PORTPAIR);
    if ports >> 16 == 0 {
        // skc_num is cleared when a socket that did not bind its port is unhashed,
        // before its change to CLOSE (an accepted socket's abortive close, a client's
        // close): its port is still in inet_sport, as the classic tracepoint shows it.
        ports |= u32::from(inet_sport(sk)) << 16;
    }
    let change = StateChange { sk, slot: slot_of_portpair(ports), old: ctx.arg::<i32>(1) as u32, new: ctx.arg::<i32>(2) as u32 };
    on_state_change(&ctx, change, || (ports >> 16) as u16, || btf_conn(sk, ports));
    0
}

/// Offsets in this kernel's `struct sock` (written by userspace before load).
// SAFETY (no_mangle): the loader finds it by this name; no other symbol has it.
#[unsafe(no_mangle)]
static SOCK_FIELDS: SockFields =
    SockFields { protocol: 0, family: 0, daddr: 0, rcv_saddr: 0, v6_daddr: 0, v6_rcv_saddr: 0, inet_sport: 0 };

/// One offset of `SOCK_FIELDS`, loaded where it is used (not all up front).
#[inline(always)]
fn field(pick: impl FnOnce(&SockFields) -> &u32) -> u32 {
    // SAFETY: a reference into a static; volatile so the loader's value is read. The
    // map holding it is frozen: the verifier sees each offset as a constant.
    unsafe { core::ptr::read_volatile(pick(&SOCK_FIELDS)) }
}

/// The `T` at byte `off` of the BTF-typed socket `sk`.
#[inline(always)]
pub(crate) fn sk_load<T: Copy>(sk: u64, off: u32) -> T {
    // SAFETY: `sk` is the tracepoint's socket (BTF-typed) and `off` a constant the
    // verifier checks against `struct sock` (the program is rejected otherwise); a
    // faulting load gives zeros.
    unsafe { core::ptr::read_volatile((sk as *const u8).add(off as usize) as *const T) }
}

/// The socket's family (`skc_family`), a direct load.
#[inline(always)]
pub(crate) fn sk_family(sk: u64) -> u16 {
    sk_load::<u16>(sk, field(|f| &f.family))
}

/// The socket's local port from `inet_sport` (`struct inet_sock`, past `struct sock`:
/// a probe read). Only where `skc_num` is 0.
#[inline(always)]
fn inet_sport(sk: u64) -> u16 {
    u16::from_be(crate::read::kernel::<u16>(sk + u64::from(field(|f| &f.inet_sport))).unwrap_or(0))
}

/// The connection on a socket just established: ports from `skc_portpair`,
/// addresses as the classic tracepoint shows them (IPv4 v4-mapped).
#[inline(always)]
fn btf_conn(sk: u64, ports: u32) -> SockConn {
    let mut c = SockConn { local_port: (ports >> 16) as u16, ..SockConn::default() };
    c.peer.port = u16::from_be(ports as u16);
    if sk_load::<u16>(sk, field(|f| &f.family)) == AF_INET6 {
        let (peer, local) = (field(|f| &f.v6_daddr), field(|f| &f.v6_rcv_saddr));
        c.peer.addr[..8].copy_from_slice(&sk_load::<u64>(sk, peer).to_ne_bytes());
        c.peer.addr[8..].copy_from_slice(&sk_load::<u64>(sk, peer + 8).to_ne_bytes());
        c.local_addr[..8].copy_from_slice(&sk_load::<u64>(sk, local).to_ne_bytes());
        c.local_addr[8..].copy_from_slice(&sk_load::<u64>(sk, local + 8).to_ne_bytes());
    } else {
        set_v4_mapped(&mut c.peer.addr, sk_load::<[u8; 4]>(sk, field(|f| &f.daddr)));
        set_v4_mapped(&mut c.local_addr, sk_load::<[u8; 4]>(sk, field(|f| &f.rcv_saddr)));
    }
    c
}

/// The classic tracepoint `sock:inet_sock_set_state`, where the BTF one cannot load.
/// The layout is checked by userspace before it attaches this program
/// (`socket_set_state_layout_ok`), so every field is a plain load.
#[tracepoint]
pub fn socket_inet_sock_set_state(ctx: TracePointContext) -> u32 {
    const L: TcpOffsets = SET_STATE_LAYOUT;
    if load::<u16>(&ctx, L.protocol as usize) != IPPROTO_TCP {
        return 0;
    }
    let sk: u64 = load(&ctx, SET_STATE_SKADDR as usize);
    // sport and dport are in host order in this tracepoint.
    let sport: u16 = load(&ctx, SET_STATE_SPORT as usize);
    let slot = sock_slot(sport, load(&ctx, L.dport as usize));
    let change = StateChange { sk, slot, old: load::<i32>(&ctx, L.oldstate as usize) as u32, new: load::<i32>(&ctx, L.newstate as usize) as u32 };
    on_state_change(&ctx, change, || sport, || record_conn(&ctx, sport));
    0
}

/// The connection on a socket just established, from the classic tracepoint's record.
#[inline(always)]
fn record_conn(ctx: &TracePointContext, local_port: u16) -> SockConn {
    const L: TcpOffsets = SET_STATE_LAYOUT;
    let mut c = SockConn { local_port, peer: PeerKey { port: load(ctx, L.dport as usize), ..PeerKey::default() }, ..SockConn::default() };
    // daddr_v6 / saddr_v6 (IPv4 v4-mapped) in two aligned loads each.
    c.peer.addr[..8].copy_from_slice(&load::<u64>(ctx, L.daddr as usize).to_ne_bytes());
    c.peer.addr[8..].copy_from_slice(&load::<u64>(ctx, L.daddr as usize + 8).to_ne_bytes());
    c.local_addr[..8].copy_from_slice(&load::<u64>(ctx, SET_STATE_SADDR_V6 as usize).to_ne_bytes());
    c.local_addr[8..].copy_from_slice(&load::<u64>(ctx, SET_STATE_SADDR_V6 as usize + 8).to_ne_bytes());
    c
}

/// A state change, whichever program saw it: a followed connection's is sent (and
/// its end forgets it); otherwise only a new server-side connection or a listener
/// starting or stopping matters. `listen_port` and `conn` are read only then.
#[inline(always)]
fn on_state_change<C: EbpfContext>(ctx: &C, ch: StateChange, listen_port: impl FnOnce() -> u16, conn: impl FnOnce() -> SockConn) {
    if let Some(c) = sock_conn(ch.sk, ch.slot) {
        // SAFETY: copied at once from a successful lookup.
        let c = unsafe { *c };
        // A connection whose process is not known yet (shared port) says nothing.
        if c.tgid != 0 {
            send(&ThreadConn { tgid: c.tgid, fd: NO_FD, gen: c.gen }, tcp::STATE, ch.old, ch.new);
        }
        if tcp_state::ends(ch.new) {
            forget_sock(ch.sk, &c.peer, c.local_port);
        }
        return;
    }
    match (ch.old, ch.new) {
        // The server side of a new connection: its child socket completes the handshake.
        (tcp_state::SYN_RECV, tcp_state::ESTABLISHED) => on_established(ctx, ch.sk, conn()),
        (_, tcp_state::LISTEN) | (tcp_state::LISTEN, _) => on_listen(ctx, listen_port(), ch.new == tcp_state::LISTEN),
        _ => {}
    }
}

/// A socket starts or stops listening on `port`, in the thread that called
/// `listen`/`close`: a target's port joins LISTEN_PORTS at once (a server that listens
/// late, or on one more port), shared when another target already listens there; it
/// leaves when its only listener closes.
#[inline(always)]
fn on_listen<C: EbpfContext>(_ctx: &C, port: u16, listening: bool) {
    let (tgid, _) = current();
    if !is_target(tgid) {
        crate::target::candidate_listen(tgid, port, listening);
        return;
    }
    // SAFETY: copied at once.
    let known = unsafe { LISTEN_PORTS.get(&port) }.copied();
    if !listening {
        if known == Some(tgid) {
            let _ = LISTEN_PORTS.remove(&port);
        }
        return;
    }
    let owner = match known {
        None => tgid,
        Some(t) if t == tgid => return,
        Some(_) => LISTEN_SHARED,
    };
    // A full map is not an event lost: userspace refuses a target that holds more
    // ports than a server does (it counts them each second).
    let _ = LISTEN_PORTS.insert(&port, &owner, 0);
}

/// A connection `c` (ports and addresses filled) established on a target's listening
/// port: follow it, and tell userspace (at once, or once its process is known on a
/// shared port).
#[inline(always)]
fn on_established<C: EbpfContext>(ctx: &C, sk: u64, mut c: SockConn) {
    // SAFETY: copied at once (either map).
    let Some(owner) = (unsafe { LISTEN_PORTS.get(&c.local_port) })
        .or_else(|| discover().then(|| unsafe { CANDIDATE_PORTS.get(&c.local_port) }).flatten())
        .copied()
    else {
        return;
    };
    // Softirq: no thread of the server runs this. The generation is this moment.
    c.gen = header(kind::ESTABLISHED, 0, 0).ts_ns;
    // The TCP tracepoints find it by its client and this port (`tcp::conn_of`).
    c.peer.server_port = c.local_port;
    c.tgid = if owner == LISTEN_SHARED { 0 } else { owner };
    // Its first bytes came with the ACK that established it: sent with its start, and
    // a retransmitted copy of them later is not new.
    if let Some(d) = early_of(&c) {
        c.next_seq_in = d.seq.wrapping_add(d.len);
    }
    // Followed all the same (state changes, resets): userspace judges none of its bytes.
    if packets_unseen(sk) {
        c.flags = ESTABLISHED_PACKETS_UNSEEN;
    }
    if follow_sock(sk, &c).is_err() {
        map_full(ctx, "socket connections");
        return;
    }
    if c.tgid != 0 {
        announce(ctx, &c);
    }
}

/// The connection's start, to userspace, stamped with its generation (the moment it
/// was established), and its client address for the TCP tracepoints.
#[inline(always)]
fn announce<C: EbpfContext>(ctx: &C, c: &SockConn) {
    if PEERS.insert(&c.peer, &ThreadConn { tgid: c.tgid, fd: NO_FD, gen: c.gen }, 0).is_err() {
        map_full(ctx, "peers");
    }
    let mut h = header(kind::ESTABLISHED, c.tgid, 0);
    h.ts_ns = c.gen;
    emit(EstablishedEvent {
        header: h,
        conn_gen: c.gen,
        peer_addr: c.peer.addr,
        local_addr: c.local_addr,
        peer_port: c.peer.port,
        local_port: c.local_port,
        flags: c.flags & ESTABLISHED_PACKETS_UNSEEN,
    });
    send_early(c);
}

/// An early segment that established it needs this long at most to reach
/// `on_established` (the same softirq run, in fact).
const EARLY_MAX_AGE_NS: u64 = 1_000_000_000;

/// The data segment that established connection `c` (kept by the packet program for
/// its listener), if any: from its client, to its port, just before.
#[inline(always)]
fn early_of(c: &SockConn) -> Option<EarlyData> {
    // SAFETY: copied at once.
    let d = unsafe { EARLY_DATA.get(&c.peer) }.copied()?;
    (c.gen.wrapping_sub(d.ts_ns) < EARLY_MAX_AGE_NS).then_some(d)
}

/// The connection's early segment, as its first packet from the client (stamped with
/// the connection's start, which it caused), then forgotten.
#[inline(always)]
fn send_early(c: &SockConn) {
    if c.next_seq_in == 0 {
        return;
    }
    let Some(d) = EARLY_DATA.get_ptr(&c.peer) else { return };
    // SAFETY: valid and aligned during this run (a successful lookup).
    let (seq, len, captured, ts) = unsafe { ((*d).seq, (*d).len, (*d).captured, (*d).ts_ns) };
    if seq.wrapping_add(len) != c.next_seq_in || c.gen.wrapping_sub(ts) >= EARLY_MAX_AGE_NS {
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<IoEvent>(0) else {
        count(counter::LOST_RINGBUF);
        return;
    };
    let e = entry.as_mut_ptr();
    let mut h = header(kind::IO, c.tgid, 0);
    h.ts_ns = c.gen;
    // SAFETY: `e` points to the reserved record, ours alone until it is submitted; `d`
    // as above (an LRU entry may be replaced meanwhile: its bytes are still some
    // segment's, bounded by `captured` ≤ PAYLOAD_MAX).
    unsafe {
        (*e).sys = SysEvent { header: h, conn_gen: c.gen, ret: len as i64, duration_ns: 0, args: [0; 4], fd: NO_FD, syscall: sys::PACKET_IN };
        (*e).payload = (*d).payload;
        (*e).captured = if captured > PAYLOAD_MAX as u32 { PAYLOAD_MAX as u32 } else { captured };
        (*e).tracking_end = 0;
    }
    entry.submit(submit_flags());
    count(counter::EMITTED);
    let _ = EARLY_DATA.remove(&c.peer);
}

/// The process of connection `c`: known, or (shared port) the target whose thread
/// touches it first in process context, which is the one that accepted it.
/// `None` while it is unknown: nothing of the connection is sent yet.
#[inline(always)]
pub(crate) fn owner<C: EbpfContext>(ctx: &C, c: *mut SockConn, process_context: bool) -> Option<u32> {
    // SAFETY: `c` comes from a successful lookup: valid and aligned during this run.
    let tgid = unsafe { (*c).tgid };
    if tgid != 0 {
        return Some(tgid);
    }
    if !process_context {
        return None;
    }
    let (tgid, _) = current();
    if !is_target(tgid) {
        return None;
    }
    // SAFETY: as above. Two threads claiming at once both see the same owner (only
    // the accepting process holds the socket).
    unsafe { (*c).tgid = tgid };
    // SAFETY: as above; a copy.
    announce(ctx, &unsafe { *c });
    Some(tgid)
}

#[btf_tracepoint(function = "sock_recv_length")]
pub fn sock_recv_length(ctx: BtfTracePointContext) -> i32 {
    let sk: u64 = ctx.arg(0);
    on_sock_io(&ctx, sk, btf_sock_slot(sk), sys::SOCK_RECV, || (ctx.arg(1), ctx.arg(2)));
    0
}

#[btf_tracepoint(function = "sock_send_length")]
pub fn sock_send_length(ctx: BtfTracePointContext) -> i32 {
    let sk: u64 = ctx.arg(0);
    on_sock_io(&ctx, sk, btf_sock_slot(sk), sys::SOCK_SEND, || (ctx.arg(1), ctx.arg(2)));
    0
}

/// The filter slot of a socket from its port pair (`skc_portpair`: skc_dport in
/// network order, skc_num in host order, at offset 12 of `struct sock_common` on
/// every kernel since 2.6).
#[inline(always)]
pub(crate) fn slot_of_portpair(ports: u32) -> u32 {
    sock_slot((ports >> 16) as u16, u16::from_be(ports as u16))
}

/// The filter slot of a BTF-typed socket argument: a direct load the verifier checks
/// against the kernel's BTF. The address itself stays a map key. A socket without
/// ports (a Unix socket) has a slot of its own by its `sk_hash` (one more load).
#[inline(always)]
fn btf_sock_slot(sk: u64) -> u32 {
    let ports = sk_load::<u32>(sk, SKC_PORTPAIR);
    if ports == 0 {
        return crate::unix::btf_unix_slot(sk);
    }
    slot_of_portpair(ports)
}

/// The filter slot of a socket known only as an address (fexit, `sock->sk`): a probe
/// read (0 ports when unreadable: no followed connection has that address anyway).
#[inline(always)]
pub(crate) fn probed_sock_slot(sk: u64) -> u32 {
    slot_of_portpair(crate::read::kernel::<u32>(sk + u64::from(SKC_PORTPAIR)).unwrap_or(0))
}

/// A read or write on a socket: one array load (the slot filter) for almost any socket
/// not followed. One that moved bytes sends nothing (its packets carry them); one that
/// moved none sends its result and flags (MSG_DONTWAIT: it could not block). `sk` is
/// the socket's `struct sock` address as a number: a map key, never dereferenced.
/// `result` gives (return value, flags), read only for a followed connection. Shared
/// by the BTF tracepoints and the fexit programs of kernels without them
/// (`sock_fexit.rs`).
#[inline(always)]
pub(crate) fn on_sock_io<C: EbpfContext>(ctx: &C, sk: u64, slot: u32, call: u32, result: impl FnOnce() -> (i32, u32)) {
    let Some(c) = sock_conn(sk, slot) else { return };
    // A Unix connection's socket may be another by now (freed, its memory reused).
    // SAFETY: `c` comes from a successful lookup: valid and aligned during this run.
    if unsafe { (*c).flags } & CONN_UNIX != 0 && !crate::unix::same_socket(sk, c) {
        return;
    }
    let Some(tgid) = owner(ctx, c, true) else { return };
    // SAFETY: `c` comes from a successful lookup: valid and aligned during this run.
    let gen = unsafe { (*c).gen };
    // The caller handles the connection: signals to it are the connection's.
    let (_, tid) = current();
    if SOCK_TASKS.insert(&tid, &SockTask { sk, gen, tgid, _pad: 0 }, 0).is_err() {
        count(counter::LOST_MAPFULL);
    }
    let (ret, flags) = result();
    if ret > 0 {
        // A Unix connection's bytes come from here (no packet carries them).
        // SAFETY: as above.
        if unsafe { (*c).flags } & CONN_UNIX != 0 {
            crate::unix::on_unix_bytes(sk, c, tid, call, ret, flags);
        }
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<IoEvent>(0) else {
        count(counter::LOST_RINGBUF);
        return;
    };
    let e = entry.as_mut_ptr();
    // SAFETY: `e` points to the reserved record, ours alone and writable until it is
    // submitted; `captured` 0 says no payload byte is meaningful.
    unsafe {
        (*e).sys = SysEvent {
            header: header(kind::IO, tgid, tid),
            conn_gen: gen,
            ret: ret as i64,
            duration_ns: 0,
            args: [0, flags as u64, 0, 0],
            fd: NO_FD,
            syscall: call,
        };
        (*e).captured = 0;
        (*e).tracking_end = 0;
    }
    entry.submit(submit_flags());
    count(counter::EMITTED);
}
