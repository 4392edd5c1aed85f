//! What a server does to a connection's socket during the handshake: fcntl
//! (O_NONBLOCK on/off), setsockopt (timeouts, SO_LINGER), close, shutdown.
use handshake_trace_common::{sockopt, sys, InFlight, PeerKey};

use crate::{
    conn::{conn_at_enter, conn_entry_at_enter, conn_remove, enter_on, enter_on_conn, forget_peer},
    dispatch::syscall_programs,
    emit::{emit_sys, now},
    read,
    syscall::Sys,
    task::save_in_flight,
};

const F_SETFL: u64 = 4;

syscall_programs! {
    sys_enter_fcntl, sys_exit_fcntl => sys::FCNTL;
    sys_enter_setsockopt, sys_exit_setsockopt => sys::SETSOCKOPT;
    sys_enter_close, sys_exit_close => sys::CLOSE;
    sys_enter_shutdown, sys_exit_shutdown => sys::SHUTDOWN;
}

#[inline(always)]
pub(crate) fn enter<S: Sys>(ctx: &S, call: u32) {
    match call {
        sys::FCNTL => enter_fcntl(ctx),
        sys::SETSOCKOPT => enter_setsockopt(ctx),
        sys::CLOSE => enter_close(ctx),
        sys::SHUTDOWN => {
            enter_on_conn(ctx, ctx.arg(0) as i32, sys::SHUTDOWN, 0, [ctx.arg(1), 0, 0, 0]);
        }
        _ => {}
    }
}

#[inline(always)]
fn enter_fcntl<S: Sys>(ctx: &S) {
    // Only F_SETFL matters (blocking mode); the cmd check is cheaper than the lookup.
    let cmd = ctx.arg(1);
    if cmd == F_SETFL {
        enter_on_conn(ctx, ctx.arg(0) as i32, sys::FCNTL, 0, [cmd, ctx.arg(2), 0, 0]);
    }
}

#[inline(always)]
fn enter_setsockopt<S: Sys>(ctx: &S) {
    // Only the options that change how a handshake can end: the socket's timeouts and
    // linger (a reset on close). TCP_NODELAY, SO_KEEPALIVE, IP_TOS and the like are
    // turned away before the lookup.
    let (level, optname) = (ctx.arg(1), ctx.arg(2));
    if !sockopt::followed(level, optname) {
        return;
    }
    let Some(at) = conn_at_enter(ctx.arg(0) as i32) else { return };
    let (optval, optlen) = (ctx.arg(3), ctx.arg(4));
    // The option's value: an int, a struct linger {onoff, linger} or a struct timeval.
    let value = read::user::<[u64; 2]>(optval).unwrap_or([0, 0]);
    let len = optlen & 0xffff_ffff;
    let v0 = if len >= 8 { value[0] } else { value[0] & 0xffff_ffff };
    let v1 = if len > 8 { value[1] } else { 0 };
    enter_on(ctx, &at, sys::SETSOCKOPT, 0, [level, optname | (len << 32), v0, v1]);
}

#[inline(always)]
fn enter_close<S: Sys>(ctx: &S) {
    let fd = ctx.arg(0) as i32;
    let Some((key, c, tid)) = conn_entry_at_enter(fd) else { return };
    // SAFETY: `c` comes from a successful lookup (valid and aligned during this run);
    // it is copied here, before the entry is removed.
    let c = unsafe { *c };
    // Forget the fd now: once close runs, another thread may accept a new connection
    // on the same number. The peer stays until exit so the close's own RST/FIN is seen.
    conn_remove(&key);
    let peer_lo = u64::from_ne_bytes([
        c.peer_addr[0], c.peer_addr[1], c.peer_addr[2], c.peer_addr[3],
        c.peer_addr[4], c.peer_addr[5], c.peer_addr[6], c.peer_addr[7],
    ]);
    let peer_hi = u64::from_ne_bytes([
        c.peer_addr[8], c.peer_addr[9], c.peer_addr[10], c.peer_addr[11],
        c.peer_addr[12], c.peer_addr[13], c.peer_addr[14], c.peer_addr[15],
    ]);
    let saved = InFlight {
        fd,
        syscall: sys::CLOSE,
        ptr: 0,
        enter_ns: now(),
        conn_gen: c.gen,
        args: [peer_lo, peer_hi, c.peer_port as u64, c.server_port as u64],
    };
    save_in_flight(ctx, tid, &saved);
}

#[inline(always)]
pub(crate) fn exit<S: Sys>(ctx: &S, tgid: u32, tid: u32, f: &InFlight) {
    let mut args = f.args;
    if f.syscall == sys::CLOSE {
        let lo = f.args[0].to_ne_bytes();
        let hi = f.args[1].to_ne_bytes();
        let mut addr = [0u8; 16];
        addr[..8].copy_from_slice(&lo);
        addr[8..].copy_from_slice(&hi);
        forget_peer(&PeerKey { addr, port: f.args[2] as u16, server_port: f.args[3] as u16, _pad2: 0 });
        args = [0; 4];
    }
    emit_sys(tgid, tid, f, ctx.ret(), args);
}

