//! What a server does to a connection's socket during the handshake: fcntl
//! (O_NONBLOCK on/off), setsockopt (timeouts, SO_LINGER), close, shutdown.
use aya_ebpf::{helpers::bpf_probe_read_user, macros::tracepoint, programs::TracePointContext};
use handshake_trace_common::{sockopt, sys, InFlight, PeerKey};

use crate::{
    conn::{conn_at_enter, conn_entry_at_enter, conn_remove, enter_on, enter_on_conn},
    emit::{emit_sys, now},
    maps::PEERS,
    syscall::{Sys, arg, ret},
    task::{save_in_flight, take_current},
};

const F_SETFL: u64 = 4;

macro_rules! exit_program {
    ($exit:ident, $($sys:expr),+) => {
        #[tracepoint]
        pub fn $exit(ctx: TracePointContext) -> u32 {
            if let Some((tgid, tid, f)) = take_current() {
                if $(f.syscall == $sys)||+ {
                    on_exit(&ctx, tgid, tid, &f);
                }
            }
            0
        }
    };
}

exit_program!(sys_exit_fcntl, sys::FCNTL);
exit_program!(sys_exit_setsockopt, sys::SETSOCKOPT);
exit_program!(sys_exit_close, sys::CLOSE);
exit_program!(sys_exit_shutdown, sys::SHUTDOWN);

/// Save the syscall for its exit when `fd` is a connection in its handshake.
#[inline(always)]
pub(crate) fn enter<S: Sys>(ctx: &S, syscall: u32, fd: i32, args: [u64; 4]) {
    enter_on_conn(ctx, fd, syscall, 0, args);
}

#[tracepoint]
pub fn sys_enter_fcntl(ctx: TracePointContext) -> u32 {
    sys_enter_fcntl_impl(&ctx)
}

#[inline(always)]
pub(crate) fn sys_enter_fcntl_impl<S: Sys>(ctx: &S) -> u32 {
    // Only F_SETFL matters (blocking mode); the cmd check is cheaper than the lookup.
    let cmd = arg(ctx, 1);
    if cmd == F_SETFL {
        enter(ctx, sys::FCNTL, arg(ctx, 0) as i32, [cmd, arg(ctx, 2), 0, 0]);
    }
    0
}

#[tracepoint]
pub fn sys_enter_setsockopt(ctx: TracePointContext) -> u32 {
    sys_enter_setsockopt_impl(&ctx)
}

#[inline(always)]
pub(crate) fn sys_enter_setsockopt_impl<S: Sys>(ctx: &S) -> u32 {
    // Only the options that change how a handshake can end: the socket's timeouts and
    // linger (a reset on close). TCP_NODELAY, SO_KEEPALIVE, IP_TOS and the like are
    // turned away before the lookup.
    let (level, optname) = (arg(ctx, 1), arg(ctx, 2));
    if !sockopt::followed(level, optname) {
        return 0;
    }
    let Some(at) = conn_at_enter(arg(ctx, 0) as i32) else { return 0 };
    let (optval, optlen) = (arg(ctx, 3), arg(ctx, 4));
    // The option's value: an int, a struct linger {onoff, linger} or a struct timeval.
    let value = unsafe { bpf_probe_read_user(optval as *const [u64; 2]) }.unwrap_or([0, 0]);
    let len = optlen & 0xffff_ffff;
    let v0 = if len >= 8 { value[0] } else { value[0] & 0xffff_ffff };
    let v1 = if len > 8 { value[1] } else { 0 };
    enter_on(ctx, &at, sys::SETSOCKOPT, 0, [level, optname | (len << 32), v0, v1]);
    0
}

#[tracepoint]
pub fn sys_enter_close(ctx: TracePointContext) -> u32 {
    sys_enter_close_impl(&ctx)
}

#[inline(always)]
pub(crate) fn sys_enter_close_impl<S: Sys>(ctx: &S) -> u32 {
    let fd = arg(ctx, 0) as i32;
    let Some((key, c, tid)) = conn_entry_at_enter(fd) else { return 0 };
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
        args: [peer_lo, peer_hi, c.peer_port as u64, 0],
    };
    save_in_flight(ctx, tid, &saved);
    0
}

#[tracepoint]
pub fn sys_enter_shutdown(ctx: TracePointContext) -> u32 {
    sys_enter_shutdown_impl(&ctx)
}

#[inline(always)]
pub(crate) fn sys_enter_shutdown_impl<S: Sys>(ctx: &S) -> u32 {
    enter(ctx, sys::SHUTDOWN, arg(ctx, 0) as i32, [arg(ctx, 1), 0, 0, 0]);
    0
}

#[inline(always)]
pub(crate) fn on_exit<S: Sys>(ctx: &S, tgid: u32, tid: u32, f: &InFlight) {
    let mut args = f.args;
    if f.syscall == sys::CLOSE {
        let lo = f.args[0].to_ne_bytes();
        let hi = f.args[1].to_ne_bytes();
        let mut addr = [0u8; 16];
        addr[..8].copy_from_slice(&lo);
        addr[8..].copy_from_slice(&hi);
        let _ = PEERS.remove(&PeerKey { addr, port: f.args[2] as u16, _pad: 0, _pad2: 0 });
        args = [0; 4];
    }
    emit_sys(tgid, tid, f, ret(ctx), args);
}

