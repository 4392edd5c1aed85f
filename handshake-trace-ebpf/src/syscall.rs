//! A syscall's arguments (at entry) and return value (at exit), however the program
//! was attached.
use aya_ebpf::{programs::TracePointContext, EbpfContext};

use crate::maps::offsets;

/// A syscall's arguments (at entry) or return value (at exit), however the program
/// was attached: a `syscalls:sys_*` tracepoint, or the raw `sys_enter`/`sys_exit`.
pub trait Sys: EbpfContext {
    fn arg(&self, i: u32) -> u64;
    fn ret(&self) -> i64;
}

impl Sys for TracePointContext {
    #[inline(always)]
    fn arg(&self, i: u32) -> u64 {
        unsafe { self.read_at::<u64>((offsets().syscall_arg0 + 8 * i) as usize) }.unwrap_or(0)
    }

    #[inline(always)]
    fn ret(&self) -> i64 {
        unsafe { self.read_at::<i64>(offsets().exit_ret as usize) }.unwrap_or(0)
    }
}

/// Syscall argument `i` (0-based).
#[inline(always)]
pub fn arg<S: Sys>(ctx: &S, i: u32) -> u64 {
    ctx.arg(i)
}

/// The syscall's return value.
#[inline(always)]
pub fn ret<S: Sys>(ctx: &S) -> i64 {
    ctx.ret()
}
