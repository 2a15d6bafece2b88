//! The set of inodes whose record in memory is ahead of the inode tree (the
//! times of in-place overwrites; see `Meta::in_place`), with a test that
//! takes no lock for the lock-free readers.
//!
//! Each change of the set (made under its mutex) leaves, before the mutex
//! is let go, a bitmap of the inode numbers it holds, hashed to 512 bits:
//! a reader whose inode's bit is clear knows the inode is not in the set
//! (as of a moment ago, which is all the mutex told it too) without writing
//! a shared cache line; only a set bit sends it to the mutex.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Words of the bitmap (one cache line).
const WORDS: usize = 8;

/// The bit of `ino`: its word and its mask.
fn bit(ino: u64) -> (usize, u64) {
    let b = ino % (WORDS as u64 * 64);
    ((b / 64) as usize, 1 << (b % 64))
}

/// See the module's documentation.
#[derive(Debug, Default)]
pub struct InPlace {
    set: Mutex<Vec<u64>>,
    bits: [AtomicU64; WORDS],
}

impl InPlace {
    /// The set, to read or change (the bitmap follows when the guard goes).
    pub fn lock(&self) -> InPlaceGuard<'_> {
        InPlaceGuard {
            of: self,
            g: crate::fs::lock(&self.set),
        }
    }

    /// False when `ino` is surely not in the set; true when it may be.
    /// Takes no lock and writes nothing.
    pub fn may_hold(&self, ino: u64) -> bool {
        let (w, m) = bit(ino);
        self.bits[w].load(Ordering::Acquire) & m != 0
    }
}

/// The set held under its mutex.
pub struct InPlaceGuard<'a> {
    of: &'a InPlace,
    g: MutexGuard<'a, Vec<u64>>,
}

impl std::ops::Deref for InPlaceGuard<'_> {
    type Target = Vec<u64>;
    fn deref(&self) -> &Vec<u64> {
        &self.g
    }
}

impl std::ops::DerefMut for InPlaceGuard<'_> {
    fn deref_mut(&mut self) -> &mut Vec<u64> {
        &mut self.g
    }
}

impl Drop for InPlaceGuard<'_> {
    fn drop(&mut self) {
        // Still under the mutex (the guard's fields go after this). Word by
        // word: an inode in the set before and after keeps its bit set in
        // every value a reader may load.
        let mut bits = [0u64; WORDS];
        for &ino in self.g.iter() {
            let (w, m) = bit(ino);
            bits[w] |= m;
        }
        for (a, v) in self.of.bits.iter().zip(bits) {
            if a.load(Ordering::Relaxed) != v {
                a.store(v, Ordering::Release);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bitmap_follows_the_set() {
        let s = InPlace::default();
        assert!(!s.may_hold(5));
        s.lock().push(5);
        assert!(s.may_hold(5));
        assert!(!s.may_hold(6));
        s.lock().extend([6, 5 + 512]);
        let taken = std::mem::take(&mut *s.lock());
        assert_eq!(taken, [5, 6, 517]);
        assert!(!s.may_hold(5) && !s.may_hold(6));
        s.lock().push(517);
        // Hashed: 5 shares 517's bit (a false positive, never a false negative).
        assert!(s.may_hold(5) && s.may_hold(517));
    }
}
