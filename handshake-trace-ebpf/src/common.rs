//! Maps and helpers every program uses: the target filter, the syscalls in
//! flight, the ring buffer and the loss counters.
use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::map,
    maps::{HashMap, PerCpuArray, RingBuf},
};
use aya_log_ebpf::warn;
use handshake_trace_common::{
    counter, EventHeader, InFlight, TracepointOffsets, DEFAULT_RINGBUF_BYTES, MAX_IN_FLIGHT,
    MAX_TARGETS,
};

/// Processes (tgid) to trace. Userspace keeps it current.
#[map]
pub static TARGETS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_TARGETS, 0);

/// Arguments saved at a syscall's entry for its exit, keyed by thread id.
#[map]
pub static IN_FLIGHT: HashMap<u32, InFlight> = HashMap::with_max_entries(MAX_IN_FLIGHT, 0);

/// Events to userspace; userspace may resize it before load.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RINGBUF_BYTES, 0);

/// Emitted / lost counters (see `handshake_trace_common::counter`).
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Tracepoint field offsets, written by userspace from the `format` files before load.
#[unsafe(no_mangle)]
static TP_OFFSETS: TracepointOffsets = TracepointOffsets {
    accept_fd: 16,
    accept_addr: 24,
    exit_ret: 16,
    _pad: 0,
};

#[inline(always)]
pub fn offsets() -> TracepointOffsets {
    // Volatile so the compiler does not fold the defaults; the loader rewrites them.
    unsafe { core::ptr::read_volatile(&TP_OFFSETS) }
}

/// The calling thread, if its process is a target: (tgid, tid).
/// This is the first check of every program, so untargeted processes pay one lookup.
#[inline(always)]
pub fn current_target() -> Option<(u32, u32)> {
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    if unsafe { TARGETS.get(&tgid) }.is_none() {
        return None;
    }
    Some((tgid, id as u32))
}

#[inline(always)]
pub fn count(index: u32) {
    if let Some(c) = COUNTERS.get_ptr_mut(index) {
        unsafe { *c += 1 };
    }
}

#[inline(always)]
pub fn header(kind: u32, tgid: u32, tid: u32) -> EventHeader {
    EventHeader {
        kind,
        pid: tgid,
        tid,
        _pad: 0,
        ts_ns: unsafe { bpf_ktime_get_ns() },
    }
}

/// Remember a syscall's arguments until its exit; a full map is counted, not silent.
#[inline(always)]
pub fn save_in_flight<C: EbpfContext>(ctx: &C, tid: u32, value: &InFlight) {
    if IN_FLIGHT.insert(&tid, value, 0).is_err() {
        count(counter::LOST_MAPFULL);
        // Rare by design (the map holds one entry per thread inside a traced syscall).
        warn!(ctx, "in-flight map full: a syscall of thread {} is not traced", tid);
    }
}

/// Take the arguments saved at entry (the exit of a syscall whose entry we did not see gives None).
#[inline(always)]
pub fn take_in_flight(tid: u32) -> Option<InFlight> {
    let value = unsafe { IN_FLIGHT.get(&tid) }.copied();
    if value.is_some() {
        let _ = IN_FLIGHT.remove(&tid);
    }
    value
}

/// Send a fixed-size record, counting it as emitted or lost.
#[inline(always)]
pub fn emit<T: 'static>(record: T) {
    match EVENTS.reserve::<T>(0) {
        Some(mut entry) => {
            entry.write(record);
            entry.submit(0);
            count(counter::EMITTED);
        }
        None => count(counter::LOST_RINGBUF),
    }
}
