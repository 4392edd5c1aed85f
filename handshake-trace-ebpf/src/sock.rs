//! Socket tier: connections followed by their socket (`struct sock` address) with
//! hooks that never touch the syscall path. `sock:inet_sock_set_state` starts one
//! when a target's listening port gains an established child and ends it when the
//! server's socket closes; `sock_recv_length` / `sock_send_length` (BTF tracepoints:
//! sk, ret, flags) report the reads and writes that moved nothing (EAGAIN, FIN,
//! resets, interruptions). The bytes themselves come from `packet.rs`.
use aya_ebpf::{
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use handshake_trace_common::{
    counter, kind, sys, tcp, tcp_state, EstablishedEvent, IoEvent, PeerKey, SockConn, SockTask, SysEvent, TcpOffsets, ThreadConn, NO_FD,
    SET_STATE_LAYOUT, SET_STATE_SADDR_V6, SET_STATE_SKADDR, SET_STATE_SPORT,
};

use crate::{
    emit::{count, emit, header, map_full, submit_flags},
    maps::{EVENTS, LISTEN_PORTS, PEERS, SOCK_CONNS, SOCK_TASKS},
    net::IPPROTO_TCP,
    target::current,
    tcp::{load, send},
};

/// The followed connection on socket `sk`, if any.
#[inline(always)]
pub(crate) fn sock_conn(sk: u64) -> Option<*mut SockConn> {
    SOCK_CONNS.get_ptr_mut(&sk)
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
pub(crate) fn forget_sock(sk: u64, peer: &PeerKey) {
    let _ = PEERS.remove(peer);
    let _ = SOCK_CONNS.remove(&sk);
}

/// The layout is checked by userspace before it attaches this program
/// (`TracepointOffsets::set_state_fixed`), so every field is a plain load.
#[tracepoint]
pub fn socket_inet_sock_set_state(ctx: TracePointContext) -> u32 {
    const L: TcpOffsets = SET_STATE_LAYOUT;
    if load::<u16>(&ctx, L.protocol as usize) != IPPROTO_TCP {
        return 0;
    }
    let sk: u64 = load(&ctx, SET_STATE_SKADDR as usize);
    let old = load::<i32>(&ctx, L.oldstate as usize) as u32;
    let new = load::<i32>(&ctx, L.newstate as usize) as u32;
    // SAFETY: the entry is copied at once.
    if let Some(c) = unsafe { SOCK_CONNS.get(&sk) }.copied() {
        send(&ThreadConn { tgid: c.tgid, fd: NO_FD, gen: c.gen }, tcp::STATE, old, new);
        if tcp_state::ends(new) {
            forget_sock(sk, &c.peer);
        }
        return 0;
    }
    // The server side of a new connection: its child socket completes the handshake.
    if old != tcp_state::SYN_RECV || new != tcp_state::ESTABLISHED {
        return 0;
    }
    let local_port: u16 = load(&ctx, SET_STATE_SPORT as usize);
    // SAFETY: copied at once.
    let Some(tgid) = (unsafe { LISTEN_PORTS.get(&local_port) }).copied() else { return 0 };
    let mut peer = PeerKey { port: load(&ctx, L.dport as usize), ..PeerKey::default() };
    let mut local = [0u8; 16];
    // daddr_v6 / saddr_v6 (IPv4 v4-mapped) in two aligned loads each.
    peer.addr[..8].copy_from_slice(&load::<u64>(&ctx, L.daddr as usize).to_ne_bytes());
    peer.addr[8..].copy_from_slice(&load::<u64>(&ctx, L.daddr as usize + 8).to_ne_bytes());
    local[..8].copy_from_slice(&load::<u64>(&ctx, SET_STATE_SADDR_V6 as usize).to_ne_bytes());
    local[8..].copy_from_slice(&load::<u64>(&ctx, SET_STATE_SADDR_V6 as usize + 8).to_ne_bytes());
    // Softirq: no thread of the server runs this.
    let h = header(kind::ESTABLISHED, tgid, 0);
    let c = SockConn { gen: h.ts_ns, tgid, peer, ..SockConn::default() };
    // Flags 0: a stale entry of a freed socket at the same address is replaced.
    if SOCK_CONNS.insert(&sk, &c, 0).is_err() {
        map_full(&ctx, "socket connections");
        return 0;
    }
    if PEERS.insert(&peer, &ThreadConn { tgid, fd: NO_FD, gen: h.ts_ns }, 0).is_err() {
        map_full(&ctx, "peers");
    }
    emit(EstablishedEvent {
        header: h,
        conn_gen: h.ts_ns,
        peer_addr: peer.addr,
        local_addr: local,
        peer_port: peer.port,
        local_port,
        _pad: 0,
    });
    0
}

#[btf_tracepoint(function = "sock_recv_length")]
pub fn sock_recv_length(ctx: BtfTracePointContext) -> i32 {
    on_sock_io(ctx.arg(0), ctx.arg(1), ctx.arg(2), sys::SOCK_RECV);
    0
}

#[btf_tracepoint(function = "sock_send_length")]
pub fn sock_send_length(ctx: BtfTracePointContext) -> i32 {
    on_sock_io(ctx.arg(0), ctx.arg(1), ctx.arg(2), sys::SOCK_SEND);
    0
}

/// A read or write on a socket: one lookup for any socket not followed. One that
/// moved bytes sends nothing (its packets carry them); one that moved none sends its
/// result and flags (MSG_DONTWAIT: it could not block). `sk` is the socket's
/// `struct sock` address as a number: a map key, never dereferenced. Shared by the
/// BTF tracepoints and the fexit programs of kernels without them (`sock_fexit.rs`).
#[inline(always)]
pub(crate) fn on_sock_io(sk: u64, ret: i32, flags: u32, call: u32) {
    let Some(c) = sock_conn(sk) else { return };
    // SAFETY: `c` comes from a successful lookup: valid and aligned during this run.
    let (tgid, gen) = unsafe { ((*c).tgid, (*c).gen) };
    // The caller handles the connection: signals to it are the connection's.
    let (_, tid) = current();
    if SOCK_TASKS.insert(&tid, &SockTask { sk, gen, tgid, _pad: 0 }, 0).is_err() {
        count(counter::LOST_MAPFULL);
    }
    if ret > 0 {
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
