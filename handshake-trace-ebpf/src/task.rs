//! Per target thread (map TASKS): the connection it last worked on and the syscall
//! it is in, saved at entry for the exit.
use aya_ebpf::EbpfContext;
use handshake_trace_common::{InFlight, TaskState, ThreadConn};

use crate::{
    conn::conn,
    emit::map_full,
    live::{any_live, live_add},
    maps::{live, BPF_NOEXIST, TASKS},
    target::current_target,
};

/// The connection thread `tid` works on, if it is still in its handshake.
#[inline(always)]
pub fn handler_conn(tid: u32) -> Option<ThreadConn> {
    // SAFETY: copied at once. Another thread's entry may be written meanwhile (signals
    // look at the receiver's): a torn copy names a connection whose generation does not
    // match below, so it is turned away like a stale one.
    let tc = unsafe { TASKS.get(&tid) }?.conn;
    if tc.gen == 0 {
        return None;
    }
    let c = conn(tc.tgid, tc.fd)?;
    // SAFETY: `c` comes from a successful lookup: valid and aligned during this run.
    if unsafe { (*c).gen } != tc.gen {
        return None;
    }
    Some(tc)
}

/// Remember a syscall's arguments until its exit, and (`handler`) the connection the
/// thread works on. The thread's entry is written in place; only a thread's first
/// traced syscall inserts one. A full map is counted, not silent.
#[inline(always)]
pub fn task_enter<C: EbpfContext>(ctx: &C, tid: u32, handler: Option<ThreadConn>, value: &InFlight) {
    if let Some(t) = TASKS.get_ptr_mut(&tid) {
        // SAFETY: valid and aligned (a successful lookup); only this thread's programs
        // write its entry, one syscall at a time (and its exit removes it).
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
    // SAFETY: `busy` is copied out before the entry is removed.
    let Some(t) = (unsafe { TASKS.get(&tid) }) else { return };
    let busy = t.busy;
    if TASKS.remove(&tid).is_ok() && busy != 0 {
        live_add(live::IN_FLIGHT, u64::MAX);
    }
}

/// Take the arguments saved at entry (the exit of a syscall whose entry we did not see gives None).
#[inline(always)]
pub fn take_in_flight(tid: u32) -> Option<InFlight> {
    if !any_live(live::IN_FLIGHT) {
        return None;
    }
    // SAFETY: as in `task_enter`: this thread's own entry, valid during this run.
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
