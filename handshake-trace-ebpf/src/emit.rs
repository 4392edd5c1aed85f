//! Records to userspace: headers, submitting to the ring buffer, and the counters
//! of emitted and lost events.
use aya_ebpf::{helpers::bpf_ktime_get_ns, EbpfContext};
use aya_log_ebpf::warn;
use handshake_trace_common::{counter, kind, EventHeader, InFlight, SysEvent};

use crate::maps::{ring_bytes, COUNTERS, EVENTS};

#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: a helper without arguments or preconditions.
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
pub fn header(kind: u32, tgid: u32, tid: u32) -> EventHeader {
    EventHeader { kind, pid: tgid, tid, _pad: 0, ts_ns: now() }
}

#[inline(always)]
pub fn count(index: u32) {
    if let Some(c) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: a valid, aligned pointer to this CPU's slot of a per-CPU array, which
        // only programs on this CPU write.
        unsafe { *c += 1 };
    }
}

#[inline(always)]
pub fn map_full<C: EbpfContext>(ctx: &C, which: &str) {
    count(counter::LOST_MAPFULL);
    // Rare by design (each map holds one entry per thread or per handshake in progress).
    warn!(ctx, "handshake-trace: {} map full: an event is not traced", which);
}

const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;

/// Waking the reader costs about a microsecond per record (irq_work); userspace drains
/// on a short timer instead, and is woken only once a quarter of the ring is filled.
#[inline(always)]
pub fn submit_flags() -> u64 {
    // The ring's size is fixed at load (RING_BYTES): one query per record, not two.
    let size = ring_bytes();
    if EVENTS.query(BPF_RB_AVAIL_DATA) >= size / 4 {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

/// Send a fixed-size record, counting it as emitted or lost.
#[inline(always)]
pub fn emit<T: 'static>(record: T) {
    match EVENTS.reserve::<T>(0) {
        Some(mut entry) => {
            entry.write(record);
            entry.submit(submit_flags());
            count(counter::EMITTED);
        }
        None => count(counter::LOST_RINGBUF),
    }
}

/// Emit a payload-less syscall event from what was saved at entry.
#[inline(always)]
pub fn emit_sys(tgid: u32, tid: u32, f: &InFlight, ret: i64, args: [u64; 4]) {
    let h = header(kind::SYSCALL, tgid, tid);
    let duration_ns = h.ts_ns.saturating_sub(f.enter_ns);
    emit(SysEvent {
        header: h,
        conn_gen: f.conn_gen,
        ret,
        duration_ns,
        args,
        fd: f.fd,
        syscall: f.syscall,
    });
}
