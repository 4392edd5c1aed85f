//! Socket tier, reads and writes on kernels without the `sock_recv_length` /
//! `sock_send_length` tracepoints (before Linux 6.3): fexit programs on the functions
//! every socket read and write goes through (read, readv, recv, recvfrom, recvmsg →
//! `sock_recvmsg`; write, writev, send, sendto, sendmsg → `sock_sendmsg`; the
//! tracepoints fire in the `_nosec` helpers these call, which are inlined). They feed
//! `sock::on_sock_io` the same (sk, ret, flags) as the tracepoints, so userspace sees
//! the same records. Trampolines need a kernel without lockdown.
use aya_ebpf::{macros::fexit, programs::FExitContext};
use handshake_trace_common::{sys, SockFnOffsets};

use crate::{
    read::kernel,
    sock::{on_sock_io, probed_sock_slot},
};

/// Field offsets of this kernel's `struct socket` and `struct msghdr`, written by
/// userspace from its BTF before load (the defaults are 6.1's x86-64 layout).
// SAFETY (no_mangle): the loader finds it by this name; no other symbol has it.
#[unsafe(no_mangle)]
static SOCK_FN_OFFSETS: SockFnOffsets = SockFnOffsets { socket_sk: 24, msghdr_flags: 64 };

#[inline(always)]
fn offsets() -> SockFnOffsets {
    // SAFETY: a reference to a static; volatile so the loader's value is read.
    unsafe { core::ptr::read_volatile(&SOCK_FN_OFFSETS) }
}

/// `sock->sk` as a number (0 when unreadable: no connection has that key).
#[inline(always)]
fn sk_of(sock: u64) -> u64 {
    kernel::<u64>(sock + u64::from(offsets().socket_sk)).unwrap_or(0)
}

/// `int sock_recvmsg(struct socket *sock, struct msghdr *msg, int flags)`: the
/// arguments, then the return value.
#[fexit(function = "sock_recvmsg")]
pub fn sock_recvmsg(ctx: FExitContext) -> i32 {
    let sk = sk_of(ctx.arg(0));
    on_sock_io(&ctx, sk, probed_sock_slot(sk), sys::SOCK_RECV, || {
        let (flags, ret): (i32, i32) = (ctx.arg(2), ctx.arg(3));
        (ret, flags as u32)
    });
    0
}

/// `int sock_sendmsg(struct socket *sock, struct msghdr *msg)`: the flags are the
/// message's, as `sock_send_length` reports them (read only for a followed
/// connection's failed write).
#[fexit(function = "sock_sendmsg")]
pub fn sock_sendmsg(ctx: FExitContext) -> i32 {
    let sk = sk_of(ctx.arg(0));
    on_sock_io(&ctx, sk, probed_sock_slot(sk), sys::SOCK_SEND, || {
        let (msg, ret): (u64, i32) = (ctx.arg(1), ctx.arg(2));
        let flags = if ret > 0 { 0 } else { kernel::<u32>(msg + u64::from(offsets().msghdr_flags)).unwrap_or(0) };
        (ret, flags)
    });
    0
}
