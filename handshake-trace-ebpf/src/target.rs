//! Which threads are traced: the calling thread, and whether its process is a target.
use aya_ebpf::helpers::bpf_get_current_pid_tgid;

use crate::maps::{TARGETS, TARGET_FILTER};

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
        // SAFETY: only whether the entry exists is used; no reference is kept.
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
