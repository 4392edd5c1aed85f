//! Maps and helpers every program uses: the target filter, the connections in
//! their handshake, the syscalls in flight, the ring buffer and the loss counters.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::map,
    maps::{Array, HashMap, PerCpuArray, RingBuf},
    programs::TracePointContext,
    EbpfContext,
};
use aya_log_ebpf::warn;
use handshake_trace_common::{
    counter, kind, Conn, ConnKey, EventHeader, InFlight, PeerKey, SysEvent, TargetFilter, TaskState,
    ThreadConn, TracepointOffsets, DEFAULT_RINGBUF_BYTES, MAX_CONNS, MAX_TARGETS, MAX_TASKS,
};

/// Processes (tgid) to trace. Userspace keeps it current.
#[map]
pub static TARGETS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_TARGETS, 0);

/// The same processes as a short list (one entry), asked first: it costs a few
/// compares where the hash map costs a hash and a bucket walk, and every syscall of
/// every process asks. Userspace rewrites it with TARGETS.
#[map]
pub static TARGET_FILTER: Array<TargetFilter> = Array::with_max_entries(1, 0);

/// Connections in their handshake. A lookup here is also the target filter of the
/// read/write programs: only targets' accepts insert, so one lookup serves both.
#[map]
pub static CONNS: HashMap<ConnKey, Conn> = HashMap::with_max_entries(MAX_CONNS, 0);


/// Connections by client address, for the TCP tracepoints (which run in any context).
#[map]
pub static PEERS: HashMap<PeerKey, ThreadConn> = HashMap::with_max_entries(MAX_CONNS, 0);

/// Per target thread, keyed by thread id: the connection it last worked on and the
/// syscall it is in (arguments saved at entry for the exit). Written in place; an
/// entry goes when its thread exits.
#[map]
pub static TASKS: HashMap<u32, TaskState> = HashMap::with_max_entries(MAX_TASKS, 0);

/// How many connections CONNS holds and how many TASKS are inside a saved syscall
/// (indexes in `live`). Kept exact by the only code that changes them
/// (`conn_insert`, `conn_remove`, `save_in_flight`, `take_in_flight`, `forget_task`):
/// while a count is zero the programs skip the lookups, so a server with no handshake
/// open pays only the target check for its query traffic. Connections removed behind
/// the programs' back (userspace dropping a gone target's) leave the count high, which
/// only costs the lookups, never an event.
#[map]
pub static LIVE: Array<u64> = Array::with_max_entries(2, 0);

pub mod live {
    pub const CONNS: u32 = 0;
    pub const IN_FLIGHT: u32 = 1;
}

/// Events to userspace; userspace may resize it before load.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RINGBUF_BYTES, 0);

/// Emitted / lost counters (see `handshake_trace_common::counter`).
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// The size of EVENTS in bytes, written by userspace with the map's size before load.
#[unsafe(no_mangle)]
static RING_BYTES: u64 = DEFAULT_RINGBUF_BYTES as u64;

/// Tracepoint field offsets, written by userspace from the `format` files before load.
#[unsafe(no_mangle)]
static TP_OFFSETS: TracepointOffsets = TracepointOffsets {
    syscall_arg0: 16,
    exit_ret: 16,
    gen_sig: 8,
    gen_errno: 12,
    gen_code: 16,
    gen_pid: 36,
    gen_result: 44,
    deliver_sig: 8,
    deliver_errno: 12,
    deliver_code: 16,
    exit_pid: 24,
    set_state_fixed: 0,
    retransmit: ZERO_TCP,
    send_reset: ZERO_TCP,
    receive_reset: ZERO_TCP,
    set_state: ZERO_TCP,
};

const ZERO_TCP: handshake_trace_common::TcpOffsets = handshake_trace_common::TcpOffsets {
    dport: 0,
    daddr: 0,
    oldstate: 0,
    newstate: 0,
    protocol: 0,
    daddr_is_sockaddr: 0,
};

#[inline(always)]
pub fn offsets() -> TracepointOffsets {
    // Volatile so the compiler does not fold the defaults; the loader rewrites them.
    unsafe { core::ptr::read_volatile(&TP_OFFSETS) }
}

/// (tgid, tid) of the current thread.
#[inline(always)]
pub fn current() -> (u32, u32) {
    let id = bpf_get_current_pid_tgid();
    ((id >> 32) as u32, id as u32)
}

/// Is `tgid` a target? The short list answers; the TARGETS map only after it overflowed.
#[inline(always)]
pub fn is_target(tgid: u32) -> bool {
    match TARGET_FILTER.get(0) {
        Some(f) if f.overflow == 0 => f.admits(tgid),
        _ => unsafe { TARGETS.get(&tgid) }.is_some(),
    }
}

/// The calling thread, if its process is a target: (tgid, tid).
#[inline(always)]
pub fn current_target() -> Option<(u32, u32)> {
    let (tgid, tid) = current();
    if !is_target(tgid) {
        return None;
    }
    Some((tgid, tid))
}

/// A syscall's arguments (at entry) or return value (at exit), however the program
/// was attached: a `syscalls:sys_*` tracepoint, or the raw `sys_enter`/`sys_exit`.
pub trait Sys: EbpfContext {
    fn arg(&self, i: u32) -> u64;
    fn ret(&self) -> i64;
}

impl Sys for TracePointContext {
    #[inline(always)]
    fn arg(&self, i: u32) -> u64 {
        unsafe { self.read_at::<u64>((offsets().syscall_arg0 + 8 * i) as usize) }.unwrap_or(0)
    }

    #[inline(always)]
    fn ret(&self) -> i64 {
        unsafe { self.read_at::<i64>(offsets().exit_ret as usize) }.unwrap_or(0)
    }
}

/// Syscall argument `i` (0-based).
#[inline(always)]
pub fn arg<S: Sys>(ctx: &S, i: u32) -> u64 {
    ctx.arg(i)
}

/// The syscall's return value.
#[inline(always)]
pub fn ret<S: Sys>(ctx: &S) -> i64 {
    ctx.ret()
}

#[inline(always)]
pub fn count(index: u32) {
    if let Some(c) = COUNTERS.get_ptr_mut(index) {
        unsafe { *c += 1 };
    }
}

/// Does the map counted at `index` of LIVE hold anything?
#[inline(always)]
pub fn any_live(index: u32) -> bool {
    match LIVE.get(index) {
        Some(n) => (unsafe { core::ptr::read_volatile(n as *const u64) }) != 0,
        None => true,
    }
}

/// Add `delta` (wrapping: -1 as u64::MAX) to a LIVE count, atomically: programs on
/// every CPU update it.
#[inline(always)]
fn live_add(index: u32, delta: u64) {
    if let Some(n) = LIVE.get_ptr_mut(index) {
        // The BPF target has no compare-and-swap, so no `AtomicU64::fetch_add`; the
        // intrinsic compiles to the BPF atomic add.
        unsafe {
            core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(n, delta);
        }
    }
}

const BPF_NOEXIST: u64 = 1;

/// Insert into a counted map: a new entry counts one; a stale one under the same key
/// is removed (uncounted) first, so the count never runs below the entries.
#[inline(always)]
fn counted_insert<K, V>(map: &HashMap<K, V>, index: u32, key: &K, value: &V) -> Result<(), i64> {
    if map.insert(key, value, BPF_NOEXIST).is_ok() {
        live_add(index, 1);
        return Ok(());
    }
    counted_remove(map, index, key);
    map.insert(key, value, BPF_NOEXIST)?;
    live_add(index, 1);
    Ok(())
}

#[inline(always)]
fn counted_remove<K, V>(map: &HashMap<K, V>, index: u32, key: &K) {
    if map.remove(key).is_ok() {
        live_add(index, u64::MAX);
    }
}

/// Start following a connection in its handshake.
#[inline(always)]
pub fn conn_insert(key: &ConnKey, conn: &Conn) -> Result<(), i64> {
    counted_insert(&CONNS, live::CONNS, key, conn)
}

#[inline(always)]
pub fn conn_remove(key: &ConnKey) {
    counted_remove(&CONNS, live::CONNS, key)
}

#[inline(always)]
pub fn now() -> u64 {
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
pub fn header(kind: u32, tgid: u32, tid: u32) -> EventHeader {
    EventHeader { kind, pid: tgid, tid, _pad: 0, ts_ns: now() }
}

/// The connection in its handshake on (tgid, fd), if any.
#[inline(always)]
pub fn conn(tgid: u32, fd: i32) -> Option<*mut Conn> {
    CONNS.get_ptr_mut(&ConnKey { tgid, fd })
}

/// The connection thread `tid` works on, if it is still in its handshake.
#[inline(always)]
pub fn handler_conn(tid: u32) -> Option<ThreadConn> {
    let tc = unsafe { TASKS.get(&tid) }?.conn;
    if tc.gen == 0 {
        return None;
    }
    let c = conn(tc.tgid, tc.fd)?;
    if unsafe { (*c).gen } != tc.gen {
        return None;
    }
    Some(tc)
}

#[inline(always)]
pub fn map_full<C: EbpfContext>(ctx: &C, which: &str) {
    count(counter::LOST_MAPFULL);
    // Rare by design (each map holds one entry per thread or per handshake in progress).
    warn!(ctx, "handshake-trace: {} map full: an event is not traced", which);
}

/// Remember a syscall's arguments until its exit, and (`handler`) the connection the
/// thread works on. The thread's entry is written in place; only a thread's first
/// traced syscall inserts one. A full map is counted, not silent.
#[inline(always)]
fn task_enter<C: EbpfContext>(ctx: &C, tid: u32, handler: Option<ThreadConn>, value: &InFlight) {
    if let Some(t) = TASKS.get_ptr_mut(&tid) {
        // Only this thread's programs write its entry (and its exit removes it).
        let t = unsafe { &mut *t };
        if let Some(tc) = handler {
            t.conn = tc;
        }
        t.in_flight = *value;
        if t.busy == 0 {
            t.busy = 1;
            live_add(live::IN_FLIGHT, 1);
        }
        return;
    }
    let t = TaskState { conn: handler.unwrap_or_default(), in_flight: *value, busy: 1, _pad: 0 };
    if TASKS.insert(&tid, &t, BPF_NOEXIST).is_ok() {
        live_add(live::IN_FLIGHT, 1);
    } else {
        map_full(ctx, "tasks");
    }
}

/// Remember a syscall's arguments until its exit.
#[inline(always)]
pub fn save_in_flight<C: EbpfContext>(ctx: &C, tid: u32, value: &InFlight) {
    task_enter(ctx, tid, None, value);
}

/// A target thread exits: forget it (and its syscall, if it never returned).
#[inline(always)]
pub fn forget_task(tid: u32) {
    let Some(t) = (unsafe { TASKS.get(&tid) }) else { return };
    let busy = t.busy;
    if TASKS.remove(&tid).is_ok() && busy != 0 {
        live_add(live::IN_FLIGHT, u64::MAX);
    }
}

/// At a syscall's entry on `fd`: if it is a connection in its handshake, note this
/// thread as its handler and save the syscall for its exit. The lookup is also the
/// target filter (only targets' accepts insert connections).
#[inline(always)]
pub fn enter_on_conn<C: EbpfContext>(ctx: &C, fd: i32, syscall: u32, ptr: u64, args: [u64; 4]) -> bool {
    let Some(tc) = conn_at_enter(fd) else { return false };
    enter_on(ctx, &tc, syscall, ptr, args);
    true
}

/// At a syscall's entry: the connection in its handshake on `fd` of the calling
/// target, as (tgid, fd, generation), with the caller's tid.
#[inline(always)]
pub fn conn_at_enter(fd: i32) -> Option<(ThreadConn, u32)> {
    let (key, c, tid) = conn_entry_at_enter(fd)?;
    Some((ThreadConn { tgid: key.tgid, fd, gen: unsafe { (*c).gen } }, tid))
}

/// At a syscall's entry on `fd`: the calling target's connection in its handshake
/// there (key and entry), with the caller's tid.
#[inline(always)]
pub fn conn_entry_at_enter(fd: i32) -> Option<(ConnKey, *mut Conn, u32)> {
    let (tgid, tid) = current_target()?;
    if !any_live(live::CONNS) {
        return None;
    }
    Some((ConnKey { tgid, fd }, conn(tgid, fd)?, tid))
}

/// Note the caller as the connection's handler and save the syscall for its exit.
#[inline(always)]
pub fn enter_on<C: EbpfContext>(ctx: &C, at: &(ThreadConn, u32), syscall: u32, ptr: u64, args: [u64; 4]) {
    let (tc, tid) = *at;
    let saved = InFlight { fd: tc.fd, syscall, ptr, enter_ns: now(), conn_gen: tc.gen, args };
    task_enter(ctx, tid, Some(tc), &saved);
}

/// Take the arguments saved at entry (the exit of a syscall whose entry we did not see gives None).
#[inline(always)]
pub fn take_in_flight(tid: u32) -> Option<InFlight> {
    if !any_live(live::IN_FLIGHT) {
        return None;
    }
    let t = unsafe { &mut *TASKS.get_ptr_mut(&tid)? };
    if t.busy == 0 {
        return None;
    }
    t.busy = 0;
    live_add(live::IN_FLIGHT, u64::MAX);
    Some(t.in_flight)
}

/// At a syscall's exit: the calling target thread (tgid, tid) and what its entry saved.
#[inline(always)]
pub fn take_current() -> Option<(u32, u32, InFlight)> {
    let (tgid, tid) = current_target()?;
    Some((tgid, tid, take_in_flight(tid)?))
}

const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;

/// Waking the reader costs about a microsecond per record (irq_work); userspace drains
/// on a short timer instead, and is woken only once a quarter of the ring is filled.
#[inline(always)]
pub fn submit_flags() -> u64 {
    // The ring's size is fixed at load (RING_BYTES): one query per record, not two.
    let size = unsafe { core::ptr::read_volatile(&RING_BYTES) };
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

/// Stop tracing a connection: its handshake is over (or it is closed).
#[inline(always)]
pub fn forget_conn(tgid: u32, fd: i32) {
    let key = ConnKey { tgid, fd };
    if let Some(c) = unsafe { CONNS.get(&key) } {
        let peer = PeerKey { addr: c.peer_addr, port: c.peer_port, _pad: 0, _pad2: 0 };
        let _ = PEERS.remove(&peer);
    }
    conn_remove(&key);
}
