//! Who arms a timer and who sends a signal in a target process: alarm, setitimer,
//! timer_settime (the old server's `connect_timeout` alarm), kill, tkill, tgkill
//! (its alarm thread interrupting a handler). args: timers [timeout ms, which/flags],
//! kills [target pid or tid, signal, tgid].
use handshake_trace_common::{sys, InFlight};

use crate::{
    dispatch::syscall_programs,
    emit::{emit_sys, now},
    syscall::Sys,
    target::current_target,
    task::{handler_conn, save_in_flight},
    time::{it_value_ms, MS_PER_S, NS_PER_MS, US_PER_MS},
};

syscall_programs! {
    sys_enter_alarm, sys_exit_alarm => sys::ALARM;
    sys_enter_setitimer, sys_exit_setitimer => sys::SETITIMER;
    sys_enter_timer_settime, sys_exit_timer_settime => sys::TIMER_SETTIME;
    sys_enter_kill, sys_exit_kill => sys::KILL;
    sys_enter_tkill, sys_exit_tkill => sys::TKILL;
    sys_enter_tgkill, sys_exit_tgkill => sys::TGKILL;
}

#[inline(always)]
pub(crate) fn enter<S: Sys>(ctx: &S, call: u32) {
    match call {
        sys::ALARM => save(ctx, call, 0, [ctx.arg(0) * MS_PER_S, 0, 0, 0]),
        sys::SETITIMER => save(ctx, call, 0, [it_value_ms(ctx.arg(1), US_PER_MS), ctx.arg(0), 0, 0]),
        sys::TIMER_SETTIME => {
            save(ctx, call, 0, [it_value_ms(ctx.arg(2), NS_PER_MS), ctx.arg(1), ctx.arg(0), 0]);
        }
        sys::KILL => save(ctx, call, 0, [ctx.arg(0), ctx.arg(1), 0, 0]),
        sys::TKILL => {
            let target = ctx.arg(0);
            save(ctx, call, target as u32, [target, ctx.arg(1), 0, 0]);
        }
        sys::TGKILL => {
            let target = ctx.arg(1);
            save(ctx, call, target as u32, [target, ctx.arg(2), ctx.arg(0), 0]);
        }
        _ => {}
    }
}

/// Save a timer or kill for its exit; `about_tid` is the thread whose connection it
/// concerns (the caller for timers, the receiver for tkill/tgkill).
#[inline(always)]
fn save<S: Sys>(ctx: &S, syscall: u32, about_tid: u32, args: [u64; 4]) {
    let Some((_, tid)) = current_target() else { return };
    let (fd, gen) = match handler_conn(if about_tid == 0 { tid } else { about_tid }) {
        Some(tc) => (tc.fd, tc.gen),
        None => (-1, 0),
    };
    save_in_flight(ctx, tid, &InFlight { fd, syscall, ptr: 0, enter_ns: now(), conn_gen: gen, args });
}

#[inline(always)]
pub(crate) fn exit<S: Sys>(ctx: &S, tgid: u32, tid: u32, f: &InFlight) {
    emit_sys(tgid, tid, f, ctx.ret(), f.args);
}
