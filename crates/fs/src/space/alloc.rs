//! The in-memory view of free space, kept exactly equal to the on-media
//! free-space tree as of the last commit, minus what the running transaction
//! allocated.
//!
//! Blocks freed by a transaction are not put back here until that transaction
//! is durable: a block freed and reused in the same transaction could be
//! overwritten by data before the commit, and a crash would leave the old
//! owner (still valid on media) pointing at someone else's bytes.
use daxfs_format::HUGE_BLOCKS;
use std::collections::{BTreeMap, BTreeSet};

/// Free extents indexed by start and by (length, start).
#[derive(Debug, Default, Clone)]
pub struct FreeMap {
    by_start: BTreeMap<u64, u64>,
    by_len: BTreeSet<(u64, u64)>,
    total: u64,
}

impl FreeMap {
    /// Free blocks in the map.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Number of free extents.
    pub fn extents(&self) -> usize {
        self.by_start.len()
    }

    /// Iterates (start, len) in block order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.by_start.iter().map(|(&s, &l)| (s, l))
    }

    fn put(&mut self, s: u64, l: u64) {
        self.by_start.insert(s, l);
        self.by_len.insert((l, s));
    }

    fn take(&mut self, s: u64) -> Option<u64> {
        let l = self.by_start.remove(&s)?;
        self.by_len.remove(&(l, s));
        Some(l)
    }

    /// Adds `[s, s+l)` to free space, merging with neighbours. The range must
    /// not overlap free space (checked: returns false and changes nothing).
    pub fn insert(&mut self, s: u64, l: u64) -> bool {
        if l == 0 {
            return true;
        }
        if let Some((&ps, &pl)) = self.by_start.range(..=s).next_back()
            && ps + pl > s
        {
            return false;
        }
        if let Some((&ns, _)) = self.by_start.range(s..).next()
            && ns < s + l
        {
            return false;
        }
        let (mut start, mut len) = (s, l);
        if let Some((&ps, &pl)) = self.by_start.range(..s).next_back()
            && ps + pl == s
        {
            self.take(ps);
            start = ps;
            len += pl;
        }
        if let Some(nl) = self.by_start.get(&(s + l)).copied() {
            self.take(s + l);
            len += nl;
        }
        self.put(start, len);
        self.total += l;
        true
    }

    /// Removes `[s, s+l)`, which must lie inside one free extent (checked:
    /// returns false and changes nothing).
    pub fn remove(&mut self, s: u64, l: u64) -> bool {
        let Some((&fs, &fl)) = self.by_start.range(..=s).next_back() else {
            return false;
        };
        if fs + fl < s + l {
            return false;
        }
        self.take(fs);
        if s > fs {
            self.put(fs, s - fs);
        }
        if fs + fl > s + l {
            self.put(s + l, fs + fl - (s + l));
        }
        self.total -= l;
        true
    }

    /// Free pieces of `[p, p+l)`.
    pub fn overlapping(&self, p: u64, l: u64) -> Vec<(u64, u64)> {
        let end = p + l;
        let mut out = vec![];
        if let Some((&s, &len)) = self.by_start.range(..p).next_back()
            && s + len > p
        {
            out.push((p, (s + len).min(end) - p));
        }
        for (&s, &len) in self.by_start.range(p..end) {
            out.push((s, (s + len).min(end) - s));
        }
        out
    }

    /// True when `[s, s+l)` is entirely free.
    pub fn contains(&self, s: u64, l: u64) -> bool {
        matches!(self.by_start.range(..=s).next_back(), Some((&fs, &fl)) if fs + fl >= s + l)
    }

    /// The highest free block in `[lo, hi)`.
    fn highest_in(&self, lo: u64, hi: u64) -> Option<u64> {
        let (&s, &l) = self.by_start.range(..hi).next_back()?;
        let last = (s + l).min(hi) - 1;
        (last >= lo).then_some(last)
    }

    /// The lowest free block in `[lo, hi)`.
    fn lowest_in(&self, lo: u64, hi: u64) -> Option<u64> {
        if let Some((&s, &l)) = self.by_start.range(..=lo).next_back()
            && s + l > lo
        {
            return (lo < hi).then_some(lo);
        }
        let (&s, _) = self.by_start.range(lo..).next()?;
        (s < hi).then_some(s)
    }

    /// Picks one block far from block `from` of a device of `total` blocks,
    /// without removing it: in the other half of the device (the highest
    /// free block of the upper half for a block in the lower half, which
    /// packs replicas at the end of the device away from file data; the
    /// lowest of the lower half otherwise); when that half is full, the free
    /// block farthest from `from` that is not next to it.
    pub fn pick_far(&self, from: u64, total: u64) -> Option<u64> {
        let half = total / 2;
        let far = if from < half {
            self.highest_in(half, total)
        } else {
            self.lowest_in(0, half)
        };
        if far.is_some() {
            return far;
        }
        let hi = self.highest_in(0, u64::MAX);
        let lo = self.lowest_in(0, u64::MAX);
        let dist = |b: u64| b.abs_diff(from);
        [hi, lo]
            .into_iter()
            .flatten()
            .filter(|&b| dist(b) > 1)
            .max_by_key(|&b| dist(b))
    }

    /// The start of the lowest run of `len` free blocks, without removing it.
    pub fn lowest_run(&self, len: u64) -> Option<u64> {
        self.by_start
            .iter()
            .find(|&(_, &l)| l >= len)
            .map(|(&s, _)| s)
    }

    /// The start of the highest run of `len` free blocks, without removing it.
    pub fn highest_run(&self, len: u64) -> Option<u64> {
        self.by_start
            .iter()
            .rev()
            .find(|&(_, &l)| l >= len)
            .map(|(&s, &l)| s + l - len)
    }

    /// Picks up to `want` blocks (at least 1) as one extent, without removing
    /// them. Policy:
    /// - `goal`: if the block at `goal` is free, extend from there (contiguous
    ///   with the file's previous extent);
    /// - large requests (a huge page or more) start 2 MiB aligned when an
    ///   extent allows, so mmap views can use huge pages;
    /// - otherwise best fit: the smallest extent that holds `want`, else the
    ///   largest extent (the caller asks again for the rest).
    pub fn pick(&self, want: u64, goal: Option<u64>) -> Option<(u64, u64)> {
        if want == 0 || self.total == 0 {
            return None;
        }
        if let Some(g) = goal
            && let Some((&fs, &fl)) = self.by_start.range(..=g).next_back()
            && fs + fl > g
        {
            return Some((g, want.min(fs + fl - g)));
        }
        if want >= HUGE_BLOCKS {
            // Smallest extent that holds an aligned run of `want` blocks.
            for &(l, s) in self.by_len.range((want, 0)..) {
                let aligned = s.div_ceil(HUGE_BLOCKS) * HUGE_BLOCKS;
                if aligned + want <= s + l {
                    return Some((aligned, want));
                }
            }
            // Else the largest extent, aligned if that leaves a huge page.
            let &(l, s) = self.by_len.iter().next_back()?;
            let aligned = s.div_ceil(HUGE_BLOCKS) * HUGE_BLOCKS;
            if aligned + HUGE_BLOCKS <= s + l {
                return Some((aligned, want.min(s + l - aligned)));
            }
            return Some((s, want.min(l)));
        }
        if let Some(&(_, s)) = self.by_len.range((want, 0)..).next() {
            return Some((s, want));
        }
        let &(l, s) = self.by_len.iter().next_back()?;
        Some((s, want.min(l)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_merges_and_remove_splits() {
        let mut m = FreeMap::default();
        assert!(m.insert(10, 5));
        assert!(m.insert(20, 5));
        assert!(m.insert(15, 5));
        assert_eq!(m.iter().collect::<Vec<_>>(), vec![(10, 15)]);
        assert!(!m.insert(12, 1), "overlap refused");
        assert!(m.remove(12, 3));
        assert_eq!(m.iter().collect::<Vec<_>>(), vec![(10, 2), (15, 10)]);
        assert!(!m.remove(11, 3), "not free refused");
        assert_eq!(m.total(), 12);
    }

    #[test]
    fn pick_far_takes_the_other_half() {
        let mut m = FreeMap::default();
        m.insert(10, 100);
        m.insert(600, 300);
        assert_eq!(m.pick_far(50, 1000), Some(899));
        assert_eq!(m.pick_far(700, 1000), Some(10));
        // The upper half full: the farthest block not next to `from`.
        let mut m = FreeMap::default();
        m.insert(10, 20);
        assert_eq!(m.pick_far(12, 1000), Some(29));
        let mut m = FreeMap::default();
        m.insert(12, 2);
        assert_eq!(m.pick_far(12, 1000), None);
        assert_eq!(m.highest_run(2), Some(12));
        assert_eq!(m.highest_run(3), None);
        m.insert(100, 10);
        assert_eq!(m.lowest_run(3), Some(100));
        assert_eq!(m.highest_run(1), Some(109));
    }

    #[test]
    fn pick_prefers_goal_then_alignment_then_best_fit() {
        let mut m = FreeMap::default();
        m.insert(3, 2000);
        m.insert(5000, 8);
        assert_eq!(m.pick(4, Some(100)), Some((100, 4)));
        assert_eq!(m.pick(8, None), Some((5000, 8)));
        assert_eq!(m.pick(512, None), Some((512, 512)));
        assert_eq!(m.pick(5000, None), Some((512, 1491)));
    }
}
