//! accept / accept4: a target process takes a new client connection, which is
//! tracked from here until its handshake ends.
use handshake_trace_common::{counter, errno, kind, sys, AcceptEvent, Conn, ConnKey, InFlight, PeerKey, ThreadConn};

use crate::{
    conn::conn_insert,
    dispatch::syscall_programs,
    emit::{count, emit, header, map_full},
    maps::{port_filter, LISTENERS, PEERS},
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
    if ret >= 0 && !port_wanted(tgid, saved.fd) {
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
                event.peer_pid = pid;
                event.addr = comm;
            }
        }
        track(ctx, tgid, &event);
    }
    emit(event);
}

/// `--port`: is the listener `listen_fd` on the port asked for? A listener userspace
/// has not named yet (or an accept whose entry was unseen: fd -1) goes on, and the
/// userspace filter decides.
#[inline(always)]
fn port_wanted(tgid: u32, listen_fd: i32) -> bool {
    let want = port_filter();
    if want == 0 {
        return true;
    }
    // SAFETY: copied at once.
    match unsafe { LISTENERS.get(&ConnKey { tgid, fd: listen_fd }) } {
        Some(port) => *port == want,
        None => true,
    }
}

/// Start following the new connection (keyed by process and fd, with a generation).
#[inline(always)]
pub(crate) fn track<S: Sys>(ctx: &S, tgid: u32, e: &AcceptEvent) {
    let mut peer = PeerKey { port: e.port, ..PeerKey::default() };
    match e.family {
        AF_INET => {
            // v4-mapped, as the TCP tracepoints show IPv4 peers in their v6 fields.
            set_v4_mapped(&mut peer.addr, [e.addr[0], e.addr[1], e.addr[2], e.addr[3]]);
        }
        AF_INET6 => peer.addr = e.addr,
        _ => {}
    }
    let conn = Conn {
        gen: e.conn_gen,
        peer_addr: peer.addr,
        peer_port: peer.port,
        tls_budget: 0,
        flags: 0,
    };
    if conn_insert(&ConnKey { tgid, fd: e.ret }, &conn).is_err() {
        map_full(ctx, "connections");
        return;
    }
    if e.family != 0 {
        let tc = ThreadConn { tgid, fd: e.ret, gen: e.conn_gen };
        if PEERS.insert(&peer, &tc, 0).is_err() {
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
