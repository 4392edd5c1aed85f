//! The cheaper attachment (`--attach raw`): one program on `raw_syscalls:sys_enter` and
//! one on `sys_exit`, going through the same dispatch as the per-syscall tracepoints.
//! Raw tracepoints skip building a perf trace record for every call; the price is the
//! x86-64 syscall ABI (numbers and `struct pt_regs`) compiled in.
use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext, EbpfContext};
use handshake_trace_common::sys;

use crate::{
    dispatch,
    live::any_live,
    maps::live,
    syscall::RegsSys,
    target::current_target,
    task::take_current,
};

/// x86-64 syscall numbers of the syscalls we trace.
mod nr {
    pub const READ: u64 = 0;
    pub const WRITE: u64 = 1;
    pub const CLOSE: u64 = 3;
    pub const POLL: u64 = 7;
    pub const READV: u64 = 19;
    pub const WRITEV: u64 = 20;
    pub const SELECT: u64 = 23;
    pub const ALARM: u64 = 37;
    pub const SETITIMER: u64 = 38;
    pub const ACCEPT: u64 = 43;
    pub const SENDTO: u64 = 44;
    pub const RECVFROM: u64 = 45;
    pub const SENDMSG: u64 = 46;
    pub const RECVMSG: u64 = 47;
    pub const SHUTDOWN: u64 = 48;
    pub const SETSOCKOPT: u64 = 54;
    pub const KILL: u64 = 62;
    pub const FCNTL: u64 = 72;
    pub const TKILL: u64 = 200;
    pub const TIMER_SETTIME: u64 = 223;
    pub const TGKILL: u64 = 234;
    pub const PSELECT6: u64 = 270;
    pub const PPOLL: u64 = 271;
    pub const ACCEPT4: u64 = 288;
}

/// The traced syscalls, written once: x86-64 number (`nr`) => our id (`sys`).
macro_rules! traced {
    ($($nr:ident => $call:ident,)+) => {
        /// Is `id` a syscall we trace? Asked first, for every syscall of every process:
        /// for most numbers one bit test.
        #[inline(always)]
        fn is_traced(id: u64) -> bool {
            matches!(id, $(nr::$nr)|+)
        }

        /// Our id of a traced syscall.
        #[inline(always)]
        fn call_of(id: u64) -> Option<u32> {
            match id {
                $(nr::$nr => Some(sys::$call),)+
                _ => None,
            }
        }
    };
}

traced! {
    ACCEPT => ACCEPT,
    ACCEPT4 => ACCEPT,
    READ => READ,
    READV => READV,
    RECVFROM => RECVFROM,
    RECVMSG => RECVMSG,
    WRITE => WRITE,
    WRITEV => WRITEV,
    SENDTO => SENDTO,
    SENDMSG => SENDMSG,
    POLL => POLL,
    PPOLL => PPOLL,
    SELECT => SELECT,
    PSELECT6 => PSELECT6,
    FCNTL => FCNTL,
    SETSOCKOPT => SETSOCKOPT,
    CLOSE => CLOSE,
    SHUTDOWN => SHUTDOWN,
    ALARM => ALARM,
    SETITIMER => SETITIMER,
    TIMER_SETTIME => TIMER_SETTIME,
    KILL => KILL,
    TKILL => TKILL,
    TGKILL => TGKILL,
}

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn raw_sys_enter(ctx: RawTracePointContext) -> i32 {
    // Every syscall of every process comes here: reject the others before any work.
    // The raw sys_enter's arguments: (struct pt_regs *regs, long id).
    let id: u64 = ctx.arg(1);
    if !is_traced(id) || current_target().is_none() {
        return 0;
    }
    let Some(call) = call_of(id) else { return 0 };
    // Syscalls on an fd matter only while some connection is in its handshake: with
    // none open (a server busy with queries only), stop before reading the arguments.
    if dispatch::needs_conn(call) && !any_live(live::CONNS) {
        return 0;
    }
    dispatch::enter(&RegsSys::entry(ctx.as_ptr(), ctx.arg(0)), call);
    0
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn raw_sys_exit(ctx: RawTracePointContext) -> i32 {
    // Only a target's syscall whose entry saved something has work at its exit: the
    // short target list first (every exit of every process comes here), then, if
    // anything is in flight at all, one lookup; the saved record says which syscall it was.
    let Some((tgid, tid, f)) = take_current() else { return 0 };
    // The raw sys_exit's arguments: (struct pt_regs *regs, long ret).
    dispatch::exit(&RegsSys::exit(ctx.as_ptr(), ctx.arg(1)), tgid, tid, &f);
    0
}
