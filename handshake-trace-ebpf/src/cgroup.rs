//! Socket tier: is a new connection's socket inside the cgroup the packet programs are
//! attached to? A `cgroup_skb` program sees a packet by its socket's cgroup (set when
//! the socket is created; an accepted socket inherits its listener's), so a server moved
//! to another cgroup after it opened its listening socket has connections whose packets
//! the programs never see. Checked once per connection, at its start: is the attached
//! cgroup among the socket's cgroup's ancestors (probe reads, offsets from BTF)?
use handshake_trace_common::{CgroupOffsets, CGROUP_DEPTH_MAX};

use crate::{maps::SKB_CGROUP, read::kernel};

/// Where this kernel keeps a socket's cgroup and a cgroup's ancestors, written by
/// userspace from its BTF before load (`check` in SKB_CGROUP stays 0 without them).
// SAFETY (no_mangle): the loader finds it by this name; no other symbol has it.
#[unsafe(no_mangle)]
static CGROUP_OFFSETS: CgroupOffsets = CgroupOffsets { sock_cgroup: 0, level: 0, ancestors: 0, kn: 0, kn_id: 0, _pad: 0 };

#[inline(always)]
fn offsets() -> CgroupOffsets {
    // SAFETY: a reference to a static; volatile so the loader's value is read.
    unsafe { core::ptr::read_volatile(&CGROUP_OFFSETS) }
}

/// True when the packets of socket `sk` (a `struct sock` address) miss the attached
/// programs, or when that cannot be read (never judged on bytes that may be missing).
#[inline(always)]
pub(crate) fn packets_unseen(sk: u64) -> bool {
    let Some(at) = SKB_CGROUP.get(0).copied() else { return false };
    if at.check == 0 {
        return false;
    }
    !under(sk, at.id, &offsets()).unwrap_or(false)
}

/// Is cgroup `id` the socket's cgroup or one of its ancestors? None when a read fails.
#[inline(always)]
fn under(sk: u64, id: u64, o: &CgroupOffsets) -> Option<bool> {
    let cgroup: u64 = kernel(sk + u64::from(o.sock_cgroup)).ok()?;
    let level: i32 = kernel(cgroup + u64::from(o.level)).ok()?;
    // `ancestors[0..=level]`: the root first, the cgroup itself last.
    for i in 0..CGROUP_DEPTH_MAX {
        if i as i32 > level {
            return Some(false);
        }
        let ancestor: u64 = kernel(cgroup + u64::from(o.ancestors) + 8 * u64::from(i)).ok()?;
        let kn: u64 = kernel(ancestor + u64::from(o.kn)).ok()?;
        if kernel::<u64>(kn + u64::from(o.kn_id)).ok()? == id {
            return Some(true);
        }
    }
    Some(false)
}
