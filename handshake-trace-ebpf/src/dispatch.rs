//! One way into each syscall family, whichever attachment runs it. The per-syscall
//! tracepoint programs (made by `syscall_programs!` in each family's file) and the
//! raw `sys_enter`/`sys_exit` programs (`raw.rs`) both call `enter` with our id of
//! the syscall (`handshake_trace_common::sys`) and `exit` with what the entry saved.
//! Everything is inlined, so a program with a constant id keeps only its own arm.
use handshake_trace_common::{sys, InFlight};

use crate::{
    accept, fd, io, syscall::Sys, target::current_target, task::take_in_flight, timer, wait,
};

/// A traced syscall's entry, by our id.
#[inline(always)]
pub fn enter<S: Sys>(s: &S, call: u32) {
    match call {
        sys::ACCEPT => accept::enter(s, call),
        sys::READ..=sys::SENDMSG => io::enter(s, call),
        sys::POLL..=sys::PSELECT6 => wait::enter(s, call),
        sys::FCNTL..=sys::SHUTDOWN => fd::enter(s, call),
        sys::ALARM..=sys::TGKILL => timer::enter(s, call),
        _ => {}
    }
}

/// A traced syscall's exit, by the syscall its entry saved (`f.syscall`).
#[inline(always)]
pub fn exit<S: Sys>(s: &S, tgid: u32, tid: u32, f: &InFlight) {
    exit_as(s, f.syscall, tgid, tid, f);
}

/// The exit of syscall `call` (`f.syscall`, or a constant that equals it).
#[inline(always)]
fn exit_as<S: Sys>(s: &S, call: u32, tgid: u32, tid: u32, f: &InFlight) {
    match call {
        sys::ACCEPT => accept::exit(s, tgid, tid, f),
        sys::READ..=sys::SENDMSG => io::exit(s, tgid, tid, f),
        sys::POLL..=sys::PSELECT6 => wait::exit(s, tgid, tid, f),
        sys::FCNTL..=sys::SHUTDOWN => fd::exit(s, tgid, tid, f),
        sys::ALARM..=sys::TGKILL => timer::exit(s, tgid, tid, f),
        _ => {}
    }
}

/// Syscalls that matter only while some connection is in its handshake (all but
/// accept and the timers and kills): with none open, their entry has nothing to do.
#[inline(always)]
pub fn needs_conn(call: u32) -> bool {
    !matches!(call, sys::ACCEPT | sys::ALARM..=sys::TGKILL)
}

/// The exit of syscall `call` in a program that knows which syscall it runs for (a
/// `syscalls:sys_exit_*` tracepoint): what `call`'s entry saved goes to `exit`; a
/// record another syscall left (its exit unseen) is dropped. An accept whose entry
/// was not seen (it was already blocking when tracing started) is still followed,
/// with the listening fd and the peer unknown (userspace asks /proc).
#[inline(always)]
pub fn exit_of<S: Sys>(s: &S, call: u32) {
    let Some((tgid, tid)) = current_target() else { return };
    let taken = take_in_flight(tid);
    if call == sys::ACCEPT {
        let mut f = taken.unwrap_or(accept::UNSEEN);
        if f.syscall != call {
            f = accept::UNSEEN;
        }
        exit_as(s, call, tgid, tid, &f);
    } else if let Some(f) = taken {
        if f.syscall == call {
            exit_as(s, call, tgid, tid, &f);
        }
    }
}

/// The `syscalls:sys_enter_*` / `sys_exit_*` programs of syscalls, each pair named
/// after its tracepoints, going through `enter` and `exit_of` with our id.
macro_rules! syscall_programs {
    ($($enter:ident, $exit:ident => $call:expr;)+) => {
        $(
            #[aya_ebpf::macros::tracepoint]
            pub fn $enter(ctx: aya_ebpf::programs::TracePointContext) -> u32 {
                $crate::dispatch::enter(&ctx, $call);
                0
            }

            #[aya_ebpf::macros::tracepoint]
            pub fn $exit(ctx: aya_ebpf::programs::TracePointContext) -> u32 {
                $crate::dispatch::exit_of(&ctx, $call);
                0
            }
        )+
    };
}
pub(crate) use syscall_programs;
