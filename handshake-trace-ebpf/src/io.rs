//! Reads and writes on a connection in its handshake: read, readv, recvfrom,
//! recvmsg, write, writev, sendto, sendmsg. The payload's first bytes are copied
//! at exit with the length the syscall returned. A server OK or ERR ends the
//! handshake; from then on the connection costs one map lookup per syscall.
use core::ffi::c_void;

use aya_ebpf::helpers::generated;
use handshake_trace_common::{counter, handshake_end, kind, sys, InFlight, IoEvent, SysEvent, PAYLOAD_MAX};

use crate::{
    conn::{conn, enter_on_conn, forget_conn},
    dispatch::syscall_programs,
    emit::{count, header, submit_flags},
    maps::EVENTS,
    read,
    syscall::Sys,
};

/// `struct user_msghdr`: msg_name (8), msg_namelen (4, padded to 8), then msg_iov.
const MSGHDR_IOV: u64 = 16;

syscall_programs! {
    sys_enter_read, sys_exit_read => sys::READ;
    sys_enter_readv, sys_exit_readv => sys::READV;
    sys_enter_recvfrom, sys_exit_recvfrom => sys::RECVFROM;
    sys_enter_recvmsg, sys_exit_recvmsg => sys::RECVMSG;
    sys_enter_write, sys_exit_write => sys::WRITE;
    sys_enter_writev, sys_exit_writev => sys::WRITEV;
    sys_enter_sendto, sys_exit_sendto => sys::SENDTO;
    sys_enter_sendmsg, sys_exit_sendmsg => sys::SENDMSG;
}

#[inline(always)]
fn is_write(syscall: u32) -> bool {
    matches!(syscall, sys::WRITE | sys::WRITEV | sys::SENDTO | sys::SENDMSG)
}

#[inline(always)]
pub(crate) fn enter<S: Sys>(ctx: &S, call: u32) {
    // All eight take (fd, buffer or iovec or msghdr, ...).
    enter_on_conn(ctx, ctx.arg(0) as i32, call, ctx.arg(1), [ctx.arg(2), ctx.arg(3), 0, 0]);
}

/// The user buffer the bytes went to or came from, and its size limit.
#[inline(always)]
fn buffer(f: &InFlight) -> (u64, u64) {
    let iov = match f.syscall {
        sys::READV | sys::WRITEV => f.ptr,
        sys::RECVMSG | sys::SENDMSG => {
            read::user::<u64>(f.ptr + MSGHDR_IOV).unwrap_or(0)
        }
        _ => return (f.ptr, u64::MAX),
    };
    if iov == 0 {
        return (0, 0);
    }
    // First iovec only: { iov_base, iov_len }.
    match read::user::<[u64; 2]>(iov) {
        Ok([base, len]) => (base, len),
        Err(_) => (0, 0),
    }
}

#[inline(always)]
pub(crate) fn exit<S: Sys>(ctx: &S, tgid: u32, tid: u32, f: &InFlight) {
    let ret = ctx.ret();
    let Some(mut entry) = EVENTS.reserve::<IoEvent>(0) else {
        count(counter::LOST_RINGBUF);
        return;
    };
    let e = entry.as_mut_ptr();
    let h = header(kind::IO, tgid, tid);
    let mut captured: u32 = 0;
    // SAFETY: `e` points to the reserved record, ours alone and writable until it is
    // submitted; the payload copy is at most PAYLOAD_MAX bytes (checked just before, as
    // the verifier also requires) into the record's payload, and the helper reads the
    // user address `src` without faulting.
    unsafe {
        (*e).sys = SysEvent {
            header: h,
            conn_gen: f.conn_gen,
            ret,
            duration_ns: h.ts_ns.saturating_sub(f.enter_ns),
            args: f.args,
            fd: f.fd,
            syscall: f.syscall,
        };
        if ret > 0 {
            let (src, limit) = buffer(f);
            let mut n = ret as u64;
            if n > limit {
                n = limit;
            }
            if n > PAYLOAD_MAX as u64 {
                n = PAYLOAD_MAX as u64;
            }
            let n = (n as u32) & (2 * PAYLOAD_MAX as u32 - 1);
            if src != 0 && n > 0 && n <= PAYLOAD_MAX as u32 {
                let dst = (*e).payload.as_mut_ptr() as *mut c_void;
                if generated::bpf_probe_read_user(dst, n, src as *const c_void) == 0 {
                    captured = n;
                }
            }
        }
        (*e).captured = captured;
    }
    // The handshake state moves on with the record's first bytes; an end rides on the
    // record (one record fewer per handshake than an end record of its own).
    // SAFETY: the reserved record (see above); bytes past `captured` hold whatever the
    // ring held before, and `after_io` looks only at those `captured` covers.
    let p = unsafe { &(*e).payload };
    let first = [p[0], p[1], p[2], p[3], p[4], p[5]];
    let end = if ret > 0 { after_io(tgid, f, captured, first) } else { 0 };
    // SAFETY: the reserved record, not yet submitted.
    unsafe { (*e).tracking_end = end as u32 };
    entry.submit(submit_flags());
    count(counter::EMITTED);
    if end != 0 {
        forget_conn(tgid, f.fd);
    }
}

/// Update the connection's handshake state after a successful read or write; returns
/// 0, or why its tracing ends here (an `end` code).
#[inline(always)]
fn after_io(tgid: u32, f: &InFlight, captured: u32, first: [u8; 6]) -> u64 {
    let Some(c) = conn(tgid, f.fd) else { return 0 };
    // SAFETY: valid and aligned (a successful lookup) during this run; the entry is
    // changed only here, by the exits of the reads and writes on this connection.
    let c = unsafe { &mut *c };
    if c.gen != f.conn_gen {
        return 0;
    }
    handshake_end(&mut c.flags, &mut c.tls_budget, is_write(f.syscall), captured, first)
}
