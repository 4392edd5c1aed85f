//! Reading memory the programs may not load from directly: the caller's (user)
//! memory, the kernel's, and tracepoint record fields at offsets known only at load.
//! Each goes through a probe-read helper, which fails on a bad address instead of
//! faulting, into plain data only: so these readers are safe to call.
use aya_ebpf::{
    helpers::{bpf_probe_read_kernel, bpf_probe_read_user},
    programs::TracePointContext,
};

/// Plain data: any bytes make a valid value (integers and arrays of them).
///
/// # Safety
/// Implement only for types with no invalid bit patterns (no `bool`, enum, reference
/// or pointer inside).
pub unsafe trait Plain: Copy {}

macro_rules! plain {
    ($($t:ty),+ $(,)?) => {
        $(
            // SAFETY: an integer or an array of integers: every bit pattern is a value.
            unsafe impl Plain for $t {}
        )+
    };
}

plain!(u16, u32, i32, u64, i64, [u8; 4], [u8; 16], [i16; 4], [i64; 2], [i64; 4], [u64; 2], [u64; 4], [u64; 8]);

/// A `T` at user address `addr` (an error for NULL or an unmapped address).
#[inline(always)]
pub fn user<T: Plain>(addr: u64) -> Result<T, i32> {
    // SAFETY: bpf_probe_read_user copies with the kernel's fault handling (any address
    // gives the bytes or an error, never a fault) into a value the helper returns; any
    // bytes are a valid `T` (Plain).
    unsafe { bpf_probe_read_user(addr as *const T) }
}

/// A `T` at kernel address `addr` (an error for an unmapped address).
#[inline(always)]
pub fn kernel<T: Plain>(addr: u64) -> Result<T, i32> {
    // SAFETY: as in `user`, with bpf_probe_read_kernel.
    unsafe { bpf_probe_read_kernel(addr as *const T) }
}

/// The field at byte `off` of a tracepoint's record (an error past its end).
#[inline(always)]
pub fn field<T: Plain>(ctx: &TracePointContext, off: u32) -> Result<T, i32> {
    // SAFETY: read_at copies with bpf_probe_read from the record's address plus `off`,
    // which fails rather than faults when `off` is wrong; any bytes are a valid `T`.
    unsafe { ctx.read_at::<T>(off as usize) }
}
