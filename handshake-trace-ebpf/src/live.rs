//! The LIVE counts (connections in their handshake, threads inside a saved
//! syscall), kept exact by the code that inserts and removes their entries.
use aya_ebpf::maps::{HashMap, LruHashMap};

use crate::maps::{BPF_NOEXIST, LIVE};

/// Does the map counted at `index` of LIVE hold anything?
#[inline(always)]
pub fn any_live(index: u32) -> bool {
    match LIVE.get(index) {
        // SAFETY: `n` is a reference into the array map (valid, aligned); volatile so
        // each run reads the count that other CPUs update.
        Some(n) => (unsafe { core::ptr::read_volatile(n as *const u64) }) != 0,
        None => true,
    }
}

/// Add `delta` (wrapping: -1 as u64::MAX) to a LIVE count, atomically: programs on
/// every CPU update it.
#[inline(always)]
pub fn live_add(index: u32, delta: u64) {
    if let Some(n) = LIVE.get_ptr_mut(index) {
        // The BPF target has no compare-and-swap, so no `AtomicU64::fetch_add`; the
        // intrinsic compiles to the BPF atomic add.
        // SAFETY: `n` points to a valid, aligned u64 in the array map, which every
        // writer changes only through this atomic add.
        unsafe {
            core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(n, delta);
        }
    }
}

/// The hash maps a LIVE count may follow: plain, or LRU (whose evictions go uncounted,
/// so its count may run above its entries: a lookup too many, never one too few).
pub trait Keyed<K, V> {
    fn put(&self, key: &K, value: &V, flags: u64) -> Result<(), i32>;
    fn take(&self, key: &K) -> Result<(), i32>;
}

impl<K, V> Keyed<K, V> for HashMap<K, V> {
    #[inline(always)]
    fn put(&self, key: &K, value: &V, flags: u64) -> Result<(), i32> {
        self.insert(key, value, flags)
    }
    #[inline(always)]
    fn take(&self, key: &K) -> Result<(), i32> {
        self.remove(key)
    }
}

impl<K, V> Keyed<K, V> for LruHashMap<K, V> {
    #[inline(always)]
    fn put(&self, key: &K, value: &V, flags: u64) -> Result<(), i32> {
        self.insert(key, value, flags)
    }
    #[inline(always)]
    fn take(&self, key: &K) -> Result<(), i32> {
        self.remove(key)
    }
}

/// Insert into a counted map: a new entry counts one; a stale one under the same key
/// is removed (uncounted) first, so the count never runs below the entries.
#[inline(always)]
pub fn counted_insert<K, V>(map: &impl Keyed<K, V>, index: u32, key: &K, value: &V) -> Result<(), i64> {
    if map.put(key, value, BPF_NOEXIST).is_ok() {
        live_add(index, 1);
        return Ok(());
    }
    counted_remove(map, index, key);
    map.put(key, value, BPF_NOEXIST)?;
    live_add(index, 1);
    Ok(())
}

#[inline(always)]
pub fn counted_remove<K, V>(map: &impl Keyed<K, V>, index: u32, key: &K) {
    if map.take(key).is_ok() {
        live_add(index, u64::MAX);
    }
}
