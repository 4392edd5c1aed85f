//! Signals to handler threads of connections in their handshake:
//! `signal:signal_generate` runs in the sender's context, `signal:signal_deliver`
//! in the receiver's. Header: pid = the connection's process, tid = the thread the
//! tracepoint ran in (the sender, or the receiver).
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use handshake_trace_common::{kind, SignalEvent};

use crate::{
    emit::{emit, header},
    maps::offsets,
    read,
    target::current,
    task::handler_conn,
};

#[inline(always)]
fn field(ctx: &TracePointContext, off: u32) -> i32 {
    read::field::<i32>(ctx, off).unwrap_or(0)
}

#[tracepoint]
pub fn signal_generate(ctx: TracePointContext) -> u32 {
    let o = offsets();
    let receiver = field(&ctx, o.gen_pid) as u32;
    let Some(tc) = handler_conn(receiver) else { return 0 };
    let (_, tid) = current();
    emit(SignalEvent {
        header: header(kind::SIGNAL, tc.tgid, tid),
        conn_gen: tc.gen,
        fd: tc.fd,
        signal: field(&ctx, o.gen_sig) as u32,
        target_tid: receiver,
        code: field(&ctx, o.gen_code),
        result: field(&ctx, o.gen_result),
        errno: field(&ctx, o.gen_errno),
        delivered: 0,
        _pad: 0,
    });
    0
}

#[tracepoint]
pub fn signal_deliver(ctx: TracePointContext) -> u32 {
    let (_, tid) = current();
    let Some(tc) = handler_conn(tid) else { return 0 };
    let o = offsets();
    emit(SignalEvent {
        header: header(kind::SIGNAL, tc.tgid, tid),
        conn_gen: tc.gen,
        fd: tc.fd,
        signal: field(&ctx, o.deliver_sig) as u32,
        target_tid: tid,
        code: field(&ctx, o.deliver_code),
        result: 0,
        errno: field(&ctx, o.deliver_errno),
        delivered: 1,
        _pad: 0,
    });
    0
}
