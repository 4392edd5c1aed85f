//! A fast hasher for the tracer's own maps, keyed by small integers (pid, fd,
//! generation) that come from the kernel, not from a network peer: SipHash's
//! protection against chosen keys buys nothing here and costs on every event.
use std::{
    collections::{HashMap, HashSet},
    hash::{BuildHasherDefault, Hasher},
};

/// Multiply-rotate mixing of each integer written (the scheme of rustc's FxHasher).
#[derive(Debug, Default, Clone, Copy)]
pub struct IntHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl IntHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for IntHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }
    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.add(n as u64);
    }
    #[inline]
    fn write_i32(&mut self, n: i32) {
        self.add(n as u32 as u64);
    }
    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }
    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

pub type IntMap<K, V> = HashMap<K, V, BuildHasherDefault<IntHasher>>;
pub type IntSet<K> = HashSet<K, BuildHasherDefault<IntHasher>>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{BuildHasher, Hash};

    fn hash<T: Hash>(v: T) -> u64 {
        BuildHasherDefault::<IntHasher>::default().hash_one(v)
    }

    #[test]
    fn neighbouring_keys_hash_apart_and_the_map_finds_them() {
        // fds and generations differ by one between neighbouring connections.
        let keys: Vec<(u32, i32, u64)> = (0..1000).map(|i| (4242, 10 + (i % 50), i as u64 / 50)).collect();
        let hashes: IntSet<u64> = keys.iter().map(hash).collect();
        assert_eq!(hashes.len(), keys.len(), "distinct keys must not collide");
        let map: IntMap<(u32, i32, u64), usize> = keys.iter().enumerate().map(|(i, k)| (*k, i)).collect();
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(map.get(k), Some(&i));
        }
        assert_ne!(hash((1u32, 2i32, 3u64)), hash((2u32, 1i32, 3u64)), "field order matters");
    }
}
