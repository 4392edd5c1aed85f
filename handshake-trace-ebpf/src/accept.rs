//! accept / accept4: a target process takes a new client connection, which is
//! tracked from here until its handshake ends.
use handshake_trace_common::{counter, errno, kind, sys, tcp, tcp_state, AcceptEvent, Conn, ConnKey, InFlight, PeerKey, Queued, TcpEvent, ThreadConn};

use crate::{
    conn::conn_insert,
    dispatch::syscall_programs,
    emit::{count, emit, header, map_full},
    live::counted_insert,
    maps::{live, port_filter, ESTABLISHED_AT, LISTENERS, PEERS},
    net::{set_v4_mapped, AF_INET, AF_INET6, AF_UNIX, SA_PORT, SIN6_ADDR, SIN_ADDR},
    read,
    syscall::Sys,
    target::current_target,
    task::save_in_flight,
};

syscall_programs! {
    sys_enter_accept4, sys_exit_accept4 => sys::ACCEPT;
    sys_enter_accept, sys_exit_accept => sys::ACCEPT;
}

/// What an accept's exit goes on when its entry was not seen.
pub(crate) const UNSEEN: InFlight = InFlight { fd: -1, syscall: sys::ACCEPT, ptr: 0, enter_ns: 0, conn_gen: 0, args: [0; 4] };

/// accept and accept4 take the same first arguments: the listening fd, the peer's buffer.
#[inline(always)]
pub(crate) fn enter<S: Sys>(ctx: &S, call: u32) {
    let Some((_, tid)) = current_target() else { return };
    let saved = InFlight { fd: ctx.arg(0) as i32, syscall: call, ptr: ctx.arg(1), ..InFlight::default() };
    save_in_flight(ctx, tid, &saved);
}

#[inline(always)]
pub(crate) fn exit<S: Sys>(ctx: &S, tgid: u32, tid: u32, saved: &InFlight) {
    let ret = ctx.ret();
    // Servers accept from non-blocking listeners until EAGAIN: that is no event.
    if ret == -(errno::EAGAIN as i64) {
        return;
    }
    // The listener's port, when userspace named it (0: not known).
    // SAFETY: copied at once.
    let server_port = unsafe { LISTENERS.get(&ConnKey { tgid, fd: saved.fd }) }.copied().unwrap_or(0);
    if ret >= 0 && !port_wanted(server_port) {
        count(counter::FILTERED_PORT);
        return;
    }
    let h = header(kind::ACCEPT, tgid, tid);
    let mut event = AcceptEvent {
        header: h,
        listen_fd: saved.fd,
        ret: ret as i32,
        conn_gen: h.ts_ns,
        ..AcceptEvent::default()
    };
    if ret >= 0 {
        if saved.ptr != 0 {
            read_peer(saved.ptr, &mut event);
        }
        // A Unix-socket client: named by its process (no address to show).
        if event.family == AF_UNIX {
            if let Some((pid, comm)) = crate::unix::accepted_peer(event.ret) {
                event.by_family = pid;
                event.addr = comm;
            }
        }
        let peer = peer_key(&event, server_port as u16);
        // A TCP client's wait in the accept queue (a Unix one has no TCP handshake).
        let queued = if event.family == AF_UNIX { Queued::default() } else { take_queued(&peer) };
        if event.family != AF_UNIX {
            event.by_family = queued_us(&queued, h.ts_ns);
        }
        track(ctx, tgid, &event, &peer);
        emit(event);
        if queued.left != 0 && event.queued_us() != 0 {
            send_left(tgid, tid, &event, &queued);
        }
        return;
    }
    emit(event);
}

/// The client left while the connection waited for this accept: its FIN or reset,
/// stamped when it came, sent after the accept that opens the timeline.
#[inline(always)]
fn send_left(tgid: u32, tid: u32, e: &AcceptEvent, q: &Queued) {
    let mut h = header(kind::TCP, tgid, tid);
    h.ts_ns = q.left_ns;
    let (old, new) = if q.left == tcp::STATE { (tcp_state::ESTABLISHED, tcp_state::CLOSE_WAIT) } else { (0, 0) };
    emit(TcpEvent { header: h, conn_gen: e.conn_gen, fd: e.ret, what: q.left, oldstate: old, newstate: new });
}

/// `--port`: is the listener (on `port`, 0 when userspace has not named it yet, or an
/// accept whose entry was unseen: fd -1) on the port asked for? An unnamed one goes
/// on, and the userspace filter decides.
#[inline(always)]
fn port_wanted(port: u32) -> bool {
    let want = port_filter();
    want == 0 || port == 0 || port == want
}

/// The connection's client (IPv4 v4-mapped, as the TCP tracepoints show IPv4 peers in
/// their v6 fields) and its server's port (0: not known).
#[inline(always)]
fn peer_key(e: &AcceptEvent, server_port: u16) -> PeerKey {
    let mut peer = PeerKey { port: e.port, server_port, ..PeerKey::default() };
    match e.family {
        AF_INET => set_v4_mapped(&mut peer.addr, [e.addr[0], e.addr[1], e.addr[2], e.addr[3]]),
        AF_INET6 => peer.addr = e.addr,
        _ => {}
    }
    peer
}

/// The connection `peer`'s TCP handshake and what came before this accept (all 0 when
/// not seen). Its entry is taken: the next connection from the same client port is another.
#[inline(always)]
fn take_queued(peer: &PeerKey) -> Queued {
    if peer.server_port == 0 {
        return Queued::default();
    }
    // SAFETY: copied at once.
    let Some(q) = unsafe { ESTABLISHED_AT.get(peer) }.copied() else { return Queued::default() };
    let _ = ESTABLISHED_AT.remove(peer);
    q
}

/// How long the connection waited, established, for this accept at `now_ns`
/// (microseconds, at most u32::MAX - 1; 0 when its TCP handshake was not seen).
#[inline(always)]
fn queued_us(q: &Queued, now_ns: u64) -> u32 {
    if q.established_ns == 0 || q.established_ns > now_ns {
        return 0;
    }
    // At least 1: 0 means "not seen".
    ((now_ns - q.established_ns) / 1000).clamp(1, u64::from(u32::MAX - 1)) as u32
}

/// Start following the new connection (keyed by process and fd, with a generation;
/// its TCP events by `peer`).
#[inline(always)]
pub(crate) fn track<S: Sys>(ctx: &S, tgid: u32, e: &AcceptEvent, peer: &PeerKey) {
    let conn = Conn {
        gen: e.conn_gen,
        peer_addr: peer.addr,
        peer_port: peer.port,
        tls_budget: 0,
        flags: 0,
        server_port: peer.server_port,
        _pad: [0; 3],
    };
    if conn_insert(&ConnKey { tgid, fd: e.ret }, &conn).is_err() {
        map_full(ctx, "connections");
        return;
    }
    // TCP clients only: a Unix-socket client has no address the TCP tracepoints show.
    if e.family == AF_INET || e.family == AF_INET6 {
        let tc = ThreadConn { tgid, fd: e.ret, gen: e.conn_gen };
        let inserted = if peer.server_port == 0 {
            counted_insert(&PEERS, live::UNKEYED_PEERS, peer, &tc).is_ok()
        } else {
            PEERS.insert(peer, &tc, 0).is_ok()
        };
        if !inserted {
            map_full(ctx, "peers");
        }
    }
}

/// Copy the peer address the kernel wrote into the caller's buffer.
#[inline(always)]
fn read_peer(ptr: u64, event: &mut AcceptEvent) {
    let family: u16 = read::user::<u16>(ptr).unwrap_or(0);
    let port: u16 = read::user::<u16>(ptr + SA_PORT as u64).unwrap_or(0);
    match family {
        AF_INET => {
            if let Ok(a) = read::user::<[u8; 4]>(ptr + SIN_ADDR as u64) {
                event.addr[..4].copy_from_slice(&a);
                event.family = family;
            }
        }
        AF_INET6 => {
            if let Ok(a) = read::user::<[u8; 16]>(ptr + SIN6_ADDR as u64) {
                event.addr = a;
                event.family = family;
            }
        }
        // AF_UNIX and others: say which, so userspace does not go looking for an address.
        other => {
            event.family = other;
            return;
        }
    }
    event.port = u16::from_be(port);
}
