//! A syscall's arguments (at entry) and return value (at exit), however the program
//! was attached: a `syscalls:sys_*` tracepoint reads them from its record, a raw
//! `sys_enter`/`sys_exit` from the caller's saved registers.
use core::ffi::c_void;

use aya_ebpf::{programs::TracePointContext, EbpfContext};

use crate::{maps::offsets, read};

/// A syscall's arguments (at entry) or return value (at exit).
pub trait Sys: EbpfContext {
    /// Argument `i` (0-based).
    fn arg(&self, i: u32) -> u64;
    /// The return value.
    fn ret(&self) -> i64;
}

impl Sys for TracePointContext {
    #[inline(always)]
    fn arg(&self, i: u32) -> u64 {
        read::field::<u64>(self, offsets().syscall_arg0 + 8 * i).unwrap_or(0)
    }

    #[inline(always)]
    fn ret(&self) -> i64 {
        read::field::<i64>(self, offsets().exit_ret).unwrap_or(0)
    }
}

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

/// Offset of r10 in x86-64 `struct pt_regs`; r9, r8, ax, cx, dx, si and di follow it.
const PT_REGS_R10: u64 = 56;

/// The six syscall arguments from `struct pt_regs` (x86-64: di, si, dx, r10, r8, r9),
/// with one read of r10..di.
#[inline(always)]
fn syscall_args(regs: u64) -> [u64; 6] {
    // r10, r9, r8, ax, cx, dx, si, di
    let r: [u64; 8] = read::kernel::<[u64; 8]>(regs + PT_REGS_R10).unwrap_or([0; 8]);
    [r[7], r[6], r[5], r[0], r[2], r[1]]
}
