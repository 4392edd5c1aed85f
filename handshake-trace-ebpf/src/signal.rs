//! Signals to handler threads of connections in their handshake:
//! `signal:signal_generate` runs in the sender's context, `signal:signal_deliver`
//! in the receiver's. Header: pid = the connection's process, tid = the thread the
//! tracepoint ran in (the sender, or the receiver).
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use handshake_trace_common::{kind, SignalEvent, ThreadConn};

use crate::{
    emit::{emit, header},
    maps::offsets,
    read,
    sock::sock_handler_conn,
    target::current,
    task::handler_conn,
};

#[inline(always)]
fn field(ctx: &TracePointContext, off: u32) -> i32 {
    read::field::<i32>(ctx, off).unwrap_or(0)
}

#[tracepoint]
pub fn signal_generate(ctx: TracePointContext) -> u32 {
    on_generate(&ctx, handler_conn)
}

#[tracepoint]
pub fn signal_deliver(ctx: TracePointContext) -> u32 {
    on_deliver(&ctx, handler_conn)
}

/// The socket tier's programs on the same tracepoints: the handler thread is the one
/// that last read or wrote the connection (no syscall is seen).
#[tracepoint]
pub fn socket_signal_generate(ctx: TracePointContext) -> u32 {
    on_generate(&ctx, sock_handler_conn)
}

#[tracepoint]
pub fn socket_signal_deliver(ctx: TracePointContext) -> u32 {
    on_deliver(&ctx, sock_handler_conn)
}

/// A signal generated for thread `receiver`, if `handler` names its connection.
#[inline(always)]
fn on_generate(ctx: &TracePointContext, handler: impl Fn(u32) -> Option<ThreadConn>) -> u32 {
    let o = offsets();
    let receiver = field(ctx, o.gen_pid) as u32;
    let Some(tc) = handler(receiver) else { return 0 };
    let (_, tid) = current();
    emit(SignalEvent {
        header: header(kind::SIGNAL, tc.tgid, tid),
        conn_gen: tc.gen,
        fd: tc.fd,
        signal: field(ctx, o.gen_sig) as u32,
        target_tid: receiver,
        code: field(ctx, o.gen_code),
        result: field(ctx, o.gen_result),
        errno: field(ctx, o.gen_errno),
        delivered: 0,
        _pad: 0,
    });
    0
}

/// A signal delivered to the current thread, if `handler` names its connection.
#[inline(always)]
fn on_deliver(ctx: &TracePointContext, handler: impl Fn(u32) -> Option<ThreadConn>) -> u32 {
    let (_, tid) = current();
    let Some(tc) = handler(tid) else { return 0 };
    let o = offsets();
    emit(SignalEvent {
        header: header(kind::SIGNAL, tc.tgid, tid),
        conn_gen: tc.gen,
        fd: tc.fd,
        signal: field(ctx, o.deliver_sig) as u32,
        target_tid: tid,
        code: field(ctx, o.deliver_code),
        result: 0,
        errno: field(ctx, o.deliver_errno),
        delivered: 1,
        _pad: 0,
    });
    0
}
