//! Which threads are traced: the calling thread, and whether its process is a target.
use aya_ebpf::helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid};
use handshake_trace_common::FAST_TARGETS;

use crate::maps::{discover, port_filter, CANDIDATE_PORTS, REFUSED, TARGETS, TARGET_FILTER};

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

/// Discovery mode: a process that is no target yet starts (or stops) listening on
/// `port`. When its thread is named like a server (and it was not refused), the port
/// is a candidate: its connections are followed from the first one, and their events
/// make userspace adopt or refuse the process before it reads them. True when it
/// became one. Listening is rare: this costs nothing on any hot path.
#[inline(always)]
pub fn candidate_listen(tgid: u32, port: u16, listening: bool) -> bool {
    if !discover() {
        return false;
    }
    if !listening {
        // SAFETY: copied at once.
        if unsafe { CANDIDATE_PORTS.get(&port) }.copied() == Some(tgid) {
            let _ = CANDIDATE_PORTS.remove(&port);
        }
        return false;
    }
    let only = port_filter();
    if only != 0 && u32::from(port) != only {
        return false;
    }
    if !named_like_a_server() {
        return false;
    }
    // SAFETY: only whether the entry exists is used.
    if unsafe { REFUSED.get(&tgid) }.is_some() {
        return false;
    }
    CANDIDATE_PORTS.insert(&port, &tgid, 0).is_ok()
}

/// Syscall tier: trace candidate `tgid`'s syscalls from now on (its accepts), as if
/// userspace had made it a target; userspace keeps it in the filter while it decides
/// (it rewrites the filter with the candidates of CANDIDATE_PORTS) and takes it out if
/// it refuses it. Only into a free slot of the short list: candidates never fill the
/// TARGETS map nor make every process of the host ask it (an overflowed list).
#[inline(always)]
pub fn admit_candidate(tgid: u32) {
    let Some(f) = TARGET_FILTER.get_ptr_mut(0) else { return };
    // SAFETY: a valid, aligned entry of the array map. Another CPU (or userspace)
    // writing at once can lose this addition: the candidate is then adopted by
    // userspace's look at /proc instead, a second later.
    unsafe {
        if (*f).overflow != 0 || (*f).admits(tgid) {
            return;
        }
        let n = (*f).count as usize;
        if n < FAST_TARGETS {
            (*f).tgids[n] = tgid;
            (*f).count = n as u32 + 1;
        }
    }
}

/// Is the calling thread named mysqld or mariadbd (`targets::SERVER_NAMES`)?
#[inline(always)]
fn named_like_a_server() -> bool {
    let Ok(comm) = bpf_get_current_comm() else { return false };
    let is = |name: &[u8]| comm[..name.len()] == *name && comm[name.len()] == 0;
    is(b"mysqld") || is(b"mariadbd")
}
