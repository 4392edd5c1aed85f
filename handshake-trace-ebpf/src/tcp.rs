//! TCP events of connections in their handshake: retransmits, resets sent and
//! received, state changes. These run in whatever context the stack is in, so the
//! connection is found by its client address and port (daddr/dport on the server's
//! socket) and the server's port. The syscall tier also notes here when a connection
//! on a target's port completes its TCP handshake, for its accept (`ESTABLISHED_AT`).
use aya_ebpf::{macros::tracepoint, programs::TracePointContext, EbpfContext};
use handshake_trace_common::{kind, tcp, tcp_state, PeerKey, Queued, TcpEvent, TcpOffsets, ThreadConn, NO_FIELD, SET_STATE_LAYOUT, SET_STATE_SPORT};

use crate::{
    emit::{emit, header, now},
    live::any_live,
    maps::{live, offsets, ESTABLISHED_AT, LISTEN_PORTS, PEERS},
    net::{set_v4_mapped, AF_INET, IPPROTO_TCP, SA_PORT, SIN6_ADDR, SIN_ADDR},
    read::{self, Plain},
    target::current,
};

/// The field at `off` of this tracepoint's record (offsets from the format file).
#[inline(always)]
fn at<T: Plain>(ctx: &TracePointContext, off: u32) -> Option<T> {
    read::field(ctx, off).ok()
}

/// The client's address as this tracepoint shows it, with the server's port.
#[inline(always)]
fn peer(ctx: &TracePointContext, o: &TcpOffsets) -> Option<PeerKey> {
    let mut key = PeerKey::default();
    if o.daddr_is_sockaddr != 0 {
        // struct sockaddr_in / sockaddr_in6 in a 28-byte field.
        let family: u16 = at(ctx, o.daddr)?;
        key.port = u16::from_be(at::<u16>(ctx, o.daddr + SA_PORT)?);
        if o.server_port != NO_FIELD {
            key.server_port = u16::from_be(at::<u16>(ctx, o.server_port + SA_PORT)?);
        }
        if family == AF_INET {
            set_v4_mapped(&mut key.addr, at(ctx, o.daddr + SIN_ADDR)?);
        } else {
            key.addr = at(ctx, o.daddr + SIN6_ADDR)?;
        }
    } else {
        key.port = at(ctx, o.dport)?;
        if o.server_port != NO_FIELD {
            key.server_port = at(ctx, o.server_port)?;
        }
        key.addr = at(ctx, o.daddr)?;
    }
    Some(key)
}

/// The followed connection whose client is at the address `o` reads, if any: the
/// socket tier's, keyed with the server's port too; else the syscall tier's, whose
/// accept does not know its local port (0). These events are rare (retransmits,
/// resets): the second lookup costs little.
#[inline(always)]
fn conn_of(ctx: &TracePointContext, o: &TcpOffsets) -> Option<ThreadConn> {
    conn_by(peer(ctx, o)?)
}

/// The followed connection keyed `key` (client and server's port), else one whose
/// accept did not know its server's port (0), when there is any.
#[inline(always)]
fn conn_by(mut key: PeerKey) -> Option<ThreadConn> {
    // SAFETY: the entry is copied at once; map elements stay valid memory while the
    // program runs, and a concurrent update can only give the newer connection.
    if let Some(tc) = unsafe { PEERS.get(&key) } {
        return Some(*tc);
    }
    if key.server_port == 0 || !any_live(live::UNKEYED_PEERS) {
        return None;
    }
    key.server_port = 0;
    // SAFETY: as above.
    (unsafe { PEERS.get(&key) }).copied()
}

#[inline(always)]
fn on_tcp(ctx: &TracePointContext, o: &TcpOffsets, what: u32) {
    let Some(key) = peer(ctx, o) else { return };
    match conn_by(key) {
        Some(tc) => send(&tc, what, 0, 0),
        // Rare: a reset to a connection not accepted yet is kept for its accept.
        None if what == tcp::RECEIVE_RESET => client_left_queue(&key, tcp::RECEIVE_RESET),
        None => {}
    }
}

/// A state change of the socket whose client is `key`: a followed connection's is
/// sent; a connection on a target's port completing its TCP handshake is noted for
/// its accept, and so is its client's FIN before the accept.
#[inline(always)]
fn on_state(key: PeerKey, old: u32, new: u32) {
    if let Some(tc) = conn_by(key) {
        send(&tc, tcp::STATE, old, new);
        return;
    }
    if (old != tcp_state::ESTABLISHED && old != tcp_state::SYN_RECV) || key.server_port == 0 {
        return;
    }
    match (old, new) {
        (tcp_state::SYN_RECV, tcp_state::ESTABLISHED) => {
            // SAFETY: a presence check; nothing is read from the entry.
            if unsafe { LISTEN_PORTS.get(&key.server_port) }.is_none() {
                return;
            }
            // An LRU map: an entry never accepted (its server stuck, or it exited) makes room.
            let _ = ESTABLISHED_AT.insert(&key, &Queued { established_ns: now(), ..Queued::default() }, 0);
        }
        (tcp_state::ESTABLISHED, tcp_state::CLOSE_WAIT) => client_left_queue(&key, tcp::STATE),
        _ => {}
    }
}

/// The client of a connection waiting for its accept left (`how`: its FIN, a
/// [`tcp::STATE`] change to CLOSE_WAIT, or [`tcp::RECEIVE_RESET`]); the first is kept.
#[inline(always)]
fn client_left_queue(key: &PeerKey, how: u32) {
    let Some(q) = ESTABLISHED_AT.get_ptr_mut(key) else { return };
    // SAFETY: a valid, aligned entry of the map during this run; a concurrent writer
    // can only be this connection's other TCP event, either of which is true.
    unsafe {
        if (*q).left == 0 {
            (*q).left_ns = now();
            (*q).left = how;
        }
    }
}

#[inline(always)]
pub(crate) fn send(tc: &ThreadConn, what: u32, oldstate: u32, newstate: u32) {
    let (_, tid) = current();
    emit(TcpEvent { header: header(kind::TCP, tc.tgid, tid), conn_gen: tc.gen, fd: tc.fd, what, oldstate, newstate });
}

#[tracepoint]
pub fn tcp_retransmit_skb(ctx: TracePointContext) -> u32 {
    let all = offsets();
    if let Some(tc) = conn_of(&ctx, &all.retransmit) {
        send(&tc, tcp::RETRANSMIT, 0, 0);
    } else if let Some(tc) = conn_of(&ctx, &all.retransmit_source) {
        // Not the server's socket: a client on this host whose source is a followed
        // client address, retransmitting what the server never got. One more lookup,
        // for retransmits only.
        send(&tc, tcp::CLIENT_RETRANSMIT, 0, 0);
    }
    0
}

#[tracepoint]
pub fn tcp_send_reset(ctx: TracePointContext) -> u32 {
    on_tcp(&ctx, &offsets().send_reset, tcp::SEND_RESET);
    0
}

#[tracepoint]
pub fn tcp_receive_reset(ctx: TracePointContext) -> u32 {
    on_tcp(&ctx, &offsets().receive_reset, tcp::RECEIVE_RESET);
    0
}

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    let all = offsets();
    if all.set_state_fixed != 0 {
        set_state_fixed(&ctx);
        return 0;
    }
    let o = all.set_state;
    if at::<u16>(&ctx, o.protocol) != Some(IPPROTO_TCP) {
        return 0;
    }
    let Some(key) = peer(&ctx, &o) else { return 0 };
    on_state(key, at::<i32>(&ctx, o.oldstate).unwrap_or(0) as u32, at::<i32>(&ctx, o.newstate).unwrap_or(0) as u32);
    0
}

/// A field of this tracepoint's record at a constant offset: a plain load the verifier
/// checks (tracepoint contexts are readable), where `at` calls `bpf_probe_read`.
#[inline(always)]
pub(crate) fn load<T: Plain>(ctx: &TracePointContext, off: usize) -> T {
    // SAFETY: the verifier checks every load from a tracepoint's context against the
    // record's size (the program is rejected at load otherwise), and `off` comes from
    // SET_STATE_LAYOUT, used only when userspace found it in the format file; any
    // bytes are a valid `T` (Plain).
    unsafe { *((ctx.as_ptr() as *const u8).add(off) as *const T) }
}

/// inet_sock_set_state at `SET_STATE_LAYOUT`: most runs are for sockets nobody follows
/// (the clients' ends, other services), turned away after four loads and one lookup
/// (two while a connection is keyed without its server's port; one more for a change
/// SYN_RECV → ESTABLISHED, of the port, or ESTABLISHED → CLOSE_WAIT, of a connection
/// not accepted yet).
#[inline(always)]
fn set_state_fixed(ctx: &TracePointContext) {
    const L: TcpOffsets = SET_STATE_LAYOUT;
    if load::<u16>(ctx, L.protocol as usize) != IPPROTO_TCP {
        return;
    }
    // Discovery: a process named like a server starts listening (in its own thread).
    if load::<i32>(ctx, L.newstate as usize) as u32 == tcp_state::LISTEN {
        let (tgid, _) = current();
        if !crate::target::is_target(tgid) && crate::target::candidate_listen(tgid, load::<u16>(ctx, SET_STATE_SPORT as usize), true) {
            crate::target::admit_candidate(tgid);
        }
        return;
    }
    // daddr_v6 (IPv4 peers v4-mapped) in two aligned loads.
    let first: u64 = load(ctx, L.daddr as usize);
    let second: u64 = load(ctx, L.daddr as usize + 8);
    let mut key = PeerKey { port: load(ctx, L.dport as usize), server_port: load(ctx, L.server_port as usize), ..PeerKey::default() };
    key.addr[..8].copy_from_slice(&first.to_ne_bytes());
    key.addr[8..].copy_from_slice(&second.to_ne_bytes());
    on_state(key, load::<i32>(ctx, L.oldstate as usize) as u32, load::<i32>(ctx, L.newstate as usize) as u32);
}
