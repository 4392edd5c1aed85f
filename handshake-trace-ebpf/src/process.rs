//! A target's threads and processes exiting: forget the threads, tell userspace
//! when the whole process is gone (its open handshakes end `incomplete`).
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use handshake_trace_common::{kind, EventHeader};

use crate::{
    emit::{emit, header},
    target::current_target,
    task::forget_task,
};

#[tracepoint]
pub fn sched_process_exit(_ctx: TracePointContext) -> u32 {
    let Some((tgid, tid)) = current_target() else { return 0 };
    forget_task(tid);
    if tid == tgid {
        let h: EventHeader = header(kind::PROCESS_EXIT, tgid, tid);
        emit(h);
    }
    0
}
