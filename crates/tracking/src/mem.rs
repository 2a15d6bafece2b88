//! Memory accounting from capacities.
//!
//! Every strategy reports the bytes its containers allocated, computed from
//! their capacities: `Vec` holds `capacity * size_of::<T>()` bytes, and the
//! standard `HashMap` (hashbrown's SwissTable) holds, for `b` buckets,
//! `b` entries, `b` control bytes and one trailing group of 16 control bytes.

use std::collections::{HashMap, HashSet};

/// Heap bytes of a `Vec<T>`'s buffer.
pub fn vec_bytes<T>(v: &Vec<T>) -> usize {
    v.capacity() * std::mem::size_of::<T>()
}

/// Heap bytes of a SwissTable that reports `capacity` (as returned by
/// `HashMap::capacity`) for entries of `entry` bytes.
pub fn table_bytes(capacity: usize, entry: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    // capacity() is buckets - 1 below 8 buckets and buckets * 7 / 8 above.
    let buckets = if capacity < 8 {
        capacity + 1
    } else {
        capacity / 7 * 8
    };
    let data = (buckets * entry).next_multiple_of(16);
    data + buckets + 16
}

/// Heap bytes of a `HashMap<K, V>`'s table.
pub fn map_bytes<K, V, S>(m: &HashMap<K, V, S>) -> usize {
    table_bytes(m.capacity(), std::mem::size_of::<(K, V)>())
}

/// Heap bytes of a `HashSet<T>`'s table.
pub fn set_bytes<T, S>(m: &HashSet<T, S>) -> usize {
    table_bytes(m.capacity(), std::mem::size_of::<T>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_counts_invert_capacity() {
        // Capacities hashbrown reports for 4, 8, 16, 32 buckets.
        assert_eq!(table_bytes(3, 8), 32 + 4 + 16);
        assert_eq!(table_bytes(7, 8), 64 + 8 + 16);
        assert_eq!(table_bytes(14, 8), 128 + 16 + 16);
        assert_eq!(table_bytes(28, 8), 256 + 32 + 16);
        let mut m: HashMap<u64, u64> = HashMap::new();
        for i in 0..1000 {
            m.insert(i, i);
        }
        let b = map_bytes(&m);
        assert!((1000 * 16..=4 * 1000 * 17).contains(&b), "{b}");
    }
}

/// A fast multiplicative hasher for integer keys (the kernel indexes the same
/// things with xarrays and hash tables keyed by integers, not SipHash).
#[derive(Clone, Copy, Default)]
pub(crate) struct IntHasher(u64);

impl std::hash::Hasher for IntHasher {
    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 29)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(23) ^ x).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// `BuildHasher` for [`IntHasher`].
pub(crate) type IntBuild = std::hash::BuildHasherDefault<IntHasher>;
