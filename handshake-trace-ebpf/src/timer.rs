//! Who arms a timer and who sends a signal in a target process: alarm, setitimer,
//! timer_settime (the old server's `connect_timeout` alarm), kill, tkill, tgkill
//! (its alarm thread interrupting a handler). args: timers [timeout ms, which/flags],
//! kills [target pid or tid, signal, tgid].
use aya_ebpf::{helpers::bpf_probe_read_user, macros::tracepoint, programs::TracePointContext};
use handshake_trace_common::{sys, InFlight};

use crate::{
    emit::{emit_sys, now},
    syscall::{Sys, arg, ret},
    target::current_target,
    task::{handler_conn, save_in_flight, take_current},
};

/// Save a timer or kill for its exit; `about_tid` is the thread whose connection it
/// concerns (the caller for timers, the receiver for tkill/tgkill).
#[inline(always)]
pub(crate) fn enter<S: Sys>(ctx: &S, syscall: u32, about_tid: u32, args: [u64; 4]) {
    let Some((_, tid)) = current_target() else { return };
    let (fd, gen) = match handler_conn(if about_tid == 0 { tid } else { about_tid }) {
        Some(tc) => (tc.fd, tc.gen),
        None => (-1, 0),
    };
    save_in_flight(ctx, tid, &InFlight { fd, syscall, ptr: 0, enter_ns: now(), conn_gen: gen, args });
}

/// The per-syscall tracepoints' exit.
#[inline(always)]
fn exit<S: Sys>(ctx: &S, syscall: u32) {
    let Some((tgid, tid, f)) = take_current() else { return };
    if f.syscall == syscall {
        on_exit(ctx, tgid, tid, &f);
    }
}

#[inline(always)]
pub(crate) fn on_exit<S: Sys>(ctx: &S, tgid: u32, tid: u32, f: &InFlight) {
    emit_sys(tgid, tid, f, ret(ctx), f.args);
}

/// `{ {interval}, {value} }` with sub-second unit `div` per ms: it_value in ms.
#[inline(always)]
fn it_value_ms(ptr: u64, per_ms: u64) -> u64 {
    match unsafe { bpf_probe_read_user(ptr as *const [i64; 4]) } {
        Ok(v) if ptr != 0 => (v[2] as u64) * 1000 + (v[3] as u64) / per_ms,
        _ => 0,
    }
}

#[tracepoint]
pub fn sys_enter_alarm(ctx: TracePointContext) -> u32 {
    sys_enter_alarm_impl(&ctx)
}

#[inline(always)]
pub(crate) fn sys_enter_alarm_impl<S: Sys>(ctx: &S) -> u32 {
    enter(ctx, sys::ALARM, 0, [arg(ctx, 0) * 1000, 0, 0, 0]);
    0
}

#[tracepoint]
pub fn sys_enter_setitimer(ctx: TracePointContext) -> u32 {
    sys_enter_setitimer_impl(&ctx)
}

#[inline(always)]
pub(crate) fn sys_enter_setitimer_impl<S: Sys>(ctx: &S) -> u32 {
    enter(ctx, sys::SETITIMER, 0, [it_value_ms(arg(ctx, 1), 1000), arg(ctx, 0), 0, 0]);
    0
}

#[tracepoint]
pub fn sys_enter_timer_settime(ctx: TracePointContext) -> u32 {
    sys_enter_timer_settime_impl(&ctx)
}

#[inline(always)]
pub(crate) fn sys_enter_timer_settime_impl<S: Sys>(ctx: &S) -> u32 {
    enter(ctx, sys::TIMER_SETTIME, 0, [it_value_ms(arg(ctx, 2), 1_000_000), arg(ctx, 1), arg(ctx, 0), 0]);
    0
}

#[tracepoint]
pub fn sys_enter_kill(ctx: TracePointContext) -> u32 {
    sys_enter_kill_impl(&ctx)
}

#[inline(always)]
pub(crate) fn sys_enter_kill_impl<S: Sys>(ctx: &S) -> u32 {
    enter(ctx, sys::KILL, 0, [arg(ctx, 0), arg(ctx, 1), 0, 0]);
    0
}

#[tracepoint]
pub fn sys_enter_tkill(ctx: TracePointContext) -> u32 {
    sys_enter_tkill_impl(&ctx)
}

#[inline(always)]
pub(crate) fn sys_enter_tkill_impl<S: Sys>(ctx: &S) -> u32 {
    let target = arg(ctx, 0);
    enter(ctx, sys::TKILL, target as u32, [target, arg(ctx, 1), 0, 0]);
    0
}

#[tracepoint]
pub fn sys_enter_tgkill(ctx: TracePointContext) -> u32 {
    sys_enter_tgkill_impl(&ctx)
}

#[inline(always)]
pub(crate) fn sys_enter_tgkill_impl<S: Sys>(ctx: &S) -> u32 {
    let target = arg(ctx, 1);
    enter(ctx, sys::TGKILL, target as u32, [target, arg(ctx, 2), arg(ctx, 0), 0]);
    0
}

macro_rules! exit_programs {
    ($($exit:ident => $sys:expr),+ $(,)?) => {
        $(
            #[tracepoint]
            pub fn $exit(ctx: TracePointContext) -> u32 {
                exit(&ctx, $sys);
                0
            }
        )+
    };
}

exit_programs!(
    sys_exit_alarm => sys::ALARM,
    sys_exit_setitimer => sys::SETITIMER,
    sys_exit_timer_settime => sys::TIMER_SETTIME,
    sys_exit_kill => sys::KILL,
    sys_exit_tkill => sys::TKILL,
    sys_exit_tgkill => sys::TGKILL,
);
