//! Waits for a connection to become readable: poll, ppoll (the modern server's
//! `connect_timeout`), select, pselect6. args: [nfds, timeout ms (u64::MAX = none), events, revents].
use aya_ebpf::{helpers::bpf_probe_read_user, macros::tracepoint, programs::TracePointContext};
use handshake_trace_common::{sys, InFlight};

use crate::{
    conn::enter_on_conn,
    emit::{emit_sys, now},
    syscall::{Sys, arg, ret},
    target::current_target,
    task::{handler_conn, save_in_flight, take_current},
};

const NO_TIMEOUT: u64 = u64::MAX;

#[tracepoint]
pub fn sys_enter_poll(ctx: TracePointContext) -> u32 {
    sys_enter_poll_impl(&ctx)
}

#[inline(always)]
pub(crate) fn sys_enter_poll_impl<S: Sys>(ctx: &S) -> u32 {
    let timeout = arg(ctx, 2) as i32;
    enter_poll(ctx, sys::POLL, if timeout < 0 { NO_TIMEOUT } else { timeout as u64 });
    0
}

#[tracepoint]
pub fn sys_enter_ppoll(ctx: TracePointContext) -> u32 {
    sys_enter_ppoll_impl(&ctx)
}

#[inline(always)]
pub(crate) fn sys_enter_ppoll_impl<S: Sys>(ctx: &S) -> u32 {
    enter_poll(ctx, sys::PPOLL, timespec_ms(arg(ctx, 2)));
    0
}

#[tracepoint]
pub fn sys_exit_poll(ctx: TracePointContext) -> u32 {
    sys_exit_poll_impl(&ctx)
}

#[inline(always)]
pub(crate) fn sys_exit_poll_impl<S: Sys>(ctx: &S) -> u32 {
    exit_wait(ctx, true);
    0
}

#[tracepoint]
pub fn sys_exit_ppoll(ctx: TracePointContext) -> u32 {
    sys_exit_ppoll_impl(&ctx)
}

#[inline(always)]
pub(crate) fn sys_exit_ppoll_impl<S: Sys>(ctx: &S) -> u32 {
    exit_wait(ctx, true);
    0
}

#[tracepoint]
pub fn sys_enter_select(ctx: TracePointContext) -> u32 {
    sys_enter_select_impl(&ctx)
}

#[inline(always)]
pub(crate) fn sys_enter_select_impl<S: Sys>(ctx: &S) -> u32 {
    // struct __kernel_old_timeval { tv_sec, tv_usec }
    let tvp = arg(ctx, 4);
    let ms = match unsafe { bpf_probe_read_user(tvp as *const [i64; 2]) } {
        Ok([s, us]) if tvp != 0 => (s as u64) * 1000 + (us as u64) / 1000,
        _ => NO_TIMEOUT,
    };
    enter_select(ctx, sys::SELECT, ms);
    0
}

#[tracepoint]
pub fn sys_enter_pselect6(ctx: TracePointContext) -> u32 {
    sys_enter_pselect6_impl(&ctx)
}

#[inline(always)]
pub(crate) fn sys_enter_pselect6_impl<S: Sys>(ctx: &S) -> u32 {
    enter_select(ctx, sys::PSELECT6, timespec_ms(arg(ctx, 4)));
    0
}

#[tracepoint]
pub fn sys_exit_select(ctx: TracePointContext) -> u32 {
    sys_exit_select_impl(&ctx)
}

#[inline(always)]
pub(crate) fn sys_exit_select_impl<S: Sys>(ctx: &S) -> u32 {
    exit_wait(ctx, false);
    0
}

#[tracepoint]
pub fn sys_exit_pselect6(ctx: TracePointContext) -> u32 {
    sys_exit_pselect6_impl(&ctx)
}

#[inline(always)]
pub(crate) fn sys_exit_pselect6_impl<S: Sys>(ctx: &S) -> u32 {
    exit_wait(ctx, false);
    0
}

/// A `struct __kernel_timespec *` as milliseconds (NULL = wait forever).
#[inline(always)]
fn timespec_ms(ptr: u64) -> u64 {
    if ptr == 0 {
        return NO_TIMEOUT;
    }
    match unsafe { bpf_probe_read_user(ptr as *const [i64; 2]) } {
        Ok([s, ns]) => (s as u64) * 1000 + (ns as u64) / 1_000_000,
        Err(_) => NO_TIMEOUT,
    }
}

#[inline(always)]
pub(crate) fn enter_poll<S: Sys>(ctx: &S, syscall: u32, timeout_ms: u64) {
    if current_target().is_none() {
        return;
    }
    let ufds = arg(ctx, 0);
    let nfds = arg(ctx, 1);
    // struct pollfd { int fd; short events; short revents; }: the first entry names the
    // connection (servers wait on one socket per handler thread).
    let Ok(first) = (unsafe { bpf_probe_read_user(ufds as *const [i16; 4]) }) else { return };
    let fd = (first[0] as u16 as i32) | ((first[1] as u16 as i32) << 16);
    enter_on_conn(ctx, fd, syscall, ufds, [nfds, timeout_ms, first[2] as u16 as u64, 0]);
}

#[inline(always)]
pub(crate) fn enter_select<S: Sys>(ctx: &S, syscall: u32, timeout_ms: u64) {
    let Some((_, tid)) = current_target() else { return };
    // select names no single fd: use the connection this handler thread works on.
    let Some(tc) = handler_conn(tid) else { return };
    let nfds = arg(ctx, 0);
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

/// The per-syscall tracepoints' exit.
#[inline(always)]
fn exit_wait<S: Sys>(ctx: &S, is_poll: bool) {
    let Some((tgid, tid, f)) = take_current() else { return };
    if matches!(f.syscall, sys::POLL | sys::PPOLL | sys::SELECT | sys::PSELECT6) {
        on_exit(ctx, tgid, tid, &f, is_poll);
    }
}

#[inline(always)]
pub(crate) fn on_exit<S: Sys>(ctx: &S, tgid: u32, tid: u32, f: &InFlight, is_poll: bool) {
    let mut args = f.args;
    if is_poll {
        if let Ok(p) = unsafe { bpf_probe_read_user(f.ptr as *const [i16; 4]) } {
            args[3] = p[3] as u16 as u64;
        }
    }
    emit_sys(tgid, tid, f, ret(ctx), args);
}
