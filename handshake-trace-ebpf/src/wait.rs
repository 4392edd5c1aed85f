//! Waits for a connection to become readable: poll, ppoll (the modern server's
//! `connect_timeout`), select, pselect6. args: [nfds, timeout ms (u64::MAX = none), events, revents].
use handshake_trace_common::{sys, InFlight};

use crate::{
    conn::enter_on_conn,
    dispatch::syscall_programs,
    emit::{emit_sys, now},
    read,
    syscall::Sys,
    target::current_target,
    task::{handler_conn, save_in_flight},
    time::{timeout_ms, NO_TIMEOUT, NS_PER_MS, US_PER_MS},
};

syscall_programs! {
    sys_enter_poll, sys_exit_poll => sys::POLL;
    sys_enter_ppoll, sys_exit_ppoll => sys::PPOLL;
    sys_enter_select, sys_exit_select => sys::SELECT;
    sys_enter_pselect6, sys_exit_pselect6 => sys::PSELECT6;
}

#[inline(always)]
pub(crate) fn enter<S: Sys>(ctx: &S, call: u32) {
    match call {
        sys::POLL => {
            let timeout = ctx.arg(2) as i32;
            enter_poll(ctx, call, if timeout < 0 { NO_TIMEOUT } else { timeout as u64 });
        }
        sys::PPOLL => enter_poll(ctx, call, timeout_ms(ctx.arg(2), NS_PER_MS)),
        sys::SELECT => enter_select(ctx, call, timeout_ms(ctx.arg(4), US_PER_MS)),
        sys::PSELECT6 => enter_select(ctx, call, timeout_ms(ctx.arg(4), NS_PER_MS)),
        _ => {}
    }
}

#[inline(always)]
fn enter_poll<S: Sys>(ctx: &S, syscall: u32, timeout_ms: u64) {
    if current_target().is_none() {
        return;
    }
    let ufds = ctx.arg(0);
    let nfds = ctx.arg(1);
    // struct pollfd { int fd; short events; short revents; }: the first entry names the
    // connection (servers wait on one socket per handler thread).
    let Ok(first) = read::user::<[i16; 4]>(ufds) else { return };
    let fd = (first[0] as u16 as i32) | ((first[1] as u16 as i32) << 16);
    enter_on_conn(ctx, fd, syscall, ufds, [nfds, timeout_ms, first[2] as u16 as u64, 0]);
}

#[inline(always)]
fn enter_select<S: Sys>(ctx: &S, syscall: u32, timeout_ms: u64) {
    let Some((_, tid)) = current_target() else { return };
    // select names no single fd: use the connection this handler thread works on.
    let Some(tc) = handler_conn(tid) else { return };
    let nfds = ctx.arg(0);
    if (tc.fd as u64) >= nfds {
        return;
    }
    let saved = InFlight {
        fd: tc.fd,
        syscall,
        ptr: 0,
        enter_ns: now(),
        conn_gen: tc.gen,
        args: [nfds, timeout_ms, 0, 0],
    };
    save_in_flight(ctx, tid, &saved);
}

#[inline(always)]
pub(crate) fn exit<S: Sys>(ctx: &S, tgid: u32, tid: u32, f: &InFlight) {
    let mut args = f.args;
    // poll and ppoll: the connection's revents, from the first struct pollfd.
    if matches!(f.syscall, sys::POLL | sys::PPOLL) {
        if let Ok(p) = read::user::<[i16; 4]>(f.ptr) {
            args[3] = p[3] as u16 as u64;
        }
    }
    emit_sys(tgid, tid, f, ctx.ret(), args);
}
