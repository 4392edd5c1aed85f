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
    sock::{on_sock_io, sock_conn},
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
    let sock: u64 = ctx.arg(0);
    let (flags, ret): (i32, i32) = (ctx.arg(2), ctx.arg(3));
    on_sock_io(sk_of(sock), ret, flags as u32, sys::SOCK_RECV);
    0
}

/// `int sock_sendmsg(struct socket *sock, struct msghdr *msg)`: the flags are the
/// message's, as `sock_send_length` reports them.
#[fexit(function = "sock_sendmsg")]
pub fn sock_sendmsg(ctx: FExitContext) -> i32 {
    let (sock, msg, ret): (u64, u64, i32) = (ctx.arg(0), ctx.arg(1), ctx.arg(2));
    let sk = sk_of(sock);
    // Only a followed connection's failed write needs its flags read.
    if ret > 0 || sock_conn(sk).is_none() {
        on_sock_io(sk, ret, 0, sys::SOCK_SEND);
        return 0;
    }
    let flags = kernel::<u32>(msg + u64::from(offsets().msghdr_flags)).unwrap_or(0);
    on_sock_io(sk, ret, flags, sys::SOCK_SEND);
    0
}
