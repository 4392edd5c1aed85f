//! The cheaper attachment (`--attach raw`): one program on `raw_syscalls:sys_enter` and
//! one on `sys_exit`, dispatching to the same handlers as the per-syscall tracepoints.
//! Raw tracepoints skip building a perf trace record for every call; the price is the
//! x86-64 syscall ABI (numbers and `struct pt_regs`) compiled in.
use core::ffi::c_void;

use aya_ebpf::{
    helpers::bpf_probe_read_kernel, macros::raw_tracepoint, programs::RawTracePointContext,
    EbpfContext,
};
use handshake_trace_common::{sys, InFlight};

use crate::{
    accept, fd, io, live::any_live, maps::live, syscall::Sys, target::current_target, task::take_current, timer,
    wait,
};

/// A syscall seen through its `struct pt_regs` (raw tracepoints and trampolines on
/// `__x64_sys_*`): its arguments (entry) or return value (exit).
pub struct RegsSys {
    ctx: *mut c_void,
    args: [u64; 6],
    ret: i64,
}

impl RegsSys {
    /// At entry: `regs` is the kernel address of the caller's saved registers.
    #[inline(always)]
    pub fn entry(ctx: *mut c_void, regs: u64) -> Self {
        Self { ctx, args: syscall_args(regs), ret: 0 }
    }

    #[inline(always)]
    pub fn exit(ctx: *mut c_void, ret: i64) -> Self {
        Self { ctx, args: [0; 6], ret }
    }
}

impl EbpfContext for RegsSys {
    fn as_ptr(&self) -> *mut c_void {
        self.ctx
    }
}

impl Sys for RegsSys {
    #[inline(always)]
    fn arg(&self, i: u32) -> u64 {
        match i {
            0 => self.args[0],
            1 => self.args[1],
            2 => self.args[2],
            3 => self.args[3],
            4 => self.args[4],
            5 => self.args[5],
            _ => 0,
        }
    }

    #[inline(always)]
    fn ret(&self) -> i64 {
        self.ret
    }
}

/// x86-64 syscall numbers of the syscalls we trace.
pub mod nr {
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

/// The six syscall arguments from `struct pt_regs` (x86-64: di, si, dx, r10, r8, r9),
/// with one read of r10..di (offsets 56..120).
#[inline(always)]
fn syscall_args(regs: u64) -> [u64; 6] {
    // r10, r9, r8, ax, cx, dx, si, di
    let r: [u64; 8] = unsafe { bpf_probe_read_kernel((regs + 56) as *const [u64; 8]) }.unwrap_or([0; 8]);
    [r[7], r[6], r[5], r[0], r[2], r[1]]
}

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn raw_sys_enter(ctx: RawTracePointContext) -> i32 {
    let id: u64 = ctx.arg(1);
    // Every syscall of every process comes here: reject the others before any work.
    if !matches!(
        id,
        nr::READ | nr::WRITE | nr::CLOSE | nr::POLL | nr::READV | nr::WRITEV | nr::SELECT | nr::ALARM
            | nr::SETITIMER | nr::ACCEPT | nr::SENDTO | nr::RECVFROM | nr::SENDMSG | nr::RECVMSG
            | nr::SHUTDOWN | nr::SETSOCKOPT | nr::KILL | nr::FCNTL | nr::TKILL | nr::TIMER_SETTIME
            | nr::TGKILL | nr::PSELECT6 | nr::PPOLL | nr::ACCEPT4
    ) {
        return 0;
    }
    if current_target().is_none() {
        return 0;
    }
    // Syscalls on an fd matter only while some connection is in its handshake: with
    // none open (a server busy with queries only), stop before reading the arguments.
    let on_fd = !matches!(
        id,
        nr::ACCEPT | nr::ACCEPT4 | nr::ALARM | nr::SETITIMER | nr::TIMER_SETTIME | nr::KILL | nr::TKILL | nr::TGKILL
    );
    if on_fd && !any_live(live::CONNS) {
        return 0;
    }
    let s = RegsSys::entry(ctx.as_ptr(), ctx.arg(0));
    on_enter(&s, id);
    0
}

/// A traced syscall's entry, by x86-64 number. Inlined, so a caller with a constant
/// number (a trampoline) keeps only its own arm.
#[inline(always)]
pub fn on_enter<S: Sys>(s: &S, id: u64) {
    match id {
        nr::ACCEPT | nr::ACCEPT4 => accept::on_enter(s),
        nr::READ => io::on_enter(s, sys::READ),
        nr::READV => io::on_enter(s, sys::READV),
        nr::RECVFROM => io::on_enter(s, sys::RECVFROM),
        nr::RECVMSG => io::on_enter(s, sys::RECVMSG),
        nr::WRITE => io::on_enter(s, sys::WRITE),
        nr::WRITEV => io::on_enter(s, sys::WRITEV),
        nr::SENDTO => io::on_enter(s, sys::SENDTO),
        nr::SENDMSG => io::on_enter(s, sys::SENDMSG),
        nr::POLL => {
            wait::sys_enter_poll_impl(s);
        }
        nr::PPOLL => {
            wait::sys_enter_ppoll_impl(s);
        }
        nr::SELECT => {
            wait::sys_enter_select_impl(s);
        }
        nr::PSELECT6 => {
            wait::sys_enter_pselect6_impl(s);
        }
        nr::FCNTL => {
            fd::sys_enter_fcntl_impl(s);
        }
        nr::SETSOCKOPT => {
            fd::sys_enter_setsockopt_impl(s);
        }
        nr::CLOSE => {
            fd::sys_enter_close_impl(s);
        }
        nr::SHUTDOWN => {
            fd::sys_enter_shutdown_impl(s);
        }
        nr::ALARM => {
            timer::sys_enter_alarm_impl(s);
        }
        nr::SETITIMER => {
            timer::sys_enter_setitimer_impl(s);
        }
        nr::TIMER_SETTIME => {
            timer::sys_enter_timer_settime_impl(s);
        }
        nr::KILL => {
            timer::sys_enter_kill_impl(s);
        }
        nr::TKILL => {
            timer::sys_enter_tkill_impl(s);
        }
        nr::TGKILL => {
            timer::sys_enter_tgkill_impl(s);
        }
        _ => {}
    }
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn raw_sys_exit(ctx: RawTracePointContext) -> i32 {
    // Only a target's syscall whose entry saved something has work at its exit: the
    // short target list first (every exit of every process comes here), then, if
    // anything is in flight at all, one lookup; the saved record says which syscall it was.
    let Some((tgid, tid, f)) = take_current() else { return 0 };
    let s = RegsSys::exit(ctx.as_ptr(), ctx.arg(1));
    on_exit(&s, tgid, tid, &f);
    0
}

/// A traced syscall's exit, by the syscall its entry saved (`handshake_trace_common::sys`).
#[inline(always)]
pub fn on_exit<S: Sys>(s: &S, tgid: u32, tid: u32, f: &InFlight) {
    match f.syscall {
        0 => accept::on_exit(s, tgid, tid, f),
        sys::READ..=sys::SENDMSG => io::on_exit(s, tgid, tid, f),
        sys::POLL | sys::PPOLL => wait::on_exit(s, tgid, tid, f, true),
        sys::SELECT | sys::PSELECT6 => wait::on_exit(s, tgid, tid, f, false),
        sys::FCNTL..=sys::SHUTDOWN => fd::on_exit(s, tgid, tid, f),
        sys::ALARM..=sys::TGKILL => timer::on_exit(s, tgid, tid, f),
        _ => {}
    }
}
