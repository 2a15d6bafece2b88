//! The model file system's reverse map: records `(physical start, file, file
//! index) → length`, one per extent of every file, answering "which records
//! cover physical page `p`?".
//!
//! Records are kept sorted in blocks of at most [`BLOCK`] (like the leaves of
//! an rmap B+tree); a dense array of block summaries (first start, largest
//! end) plays the part of the interior nodes of an overlapping-interval
//! B-tree: a query walks the summaries of blocks starting at or before `p`,
//! skips every block ending at or before `p`, and scans the rest.

/// Records per block before it splits.
const BLOCK: usize = 256;

/// A reverse-map key: where a record starts, and whose it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct RmapKey {
    pub(crate) phys: u64,
    pub(crate) file: u64,
    pub(crate) index: u64,
}

#[derive(Clone, Copy)]
struct Head {
    first: RmapKey,
    max_end: u64,
}

/// See the module doc.
#[derive(Default)]
pub(crate) struct Rmap {
    heads: Vec<Head>,
    blocks: Vec<Vec<(RmapKey, u64)>>,
    len: usize,
}

impl Rmap {
    /// Records held.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The block that holds, or would hold, `key`.
    fn block_of(&self, key: &RmapKey) -> usize {
        self.heads
            .partition_point(|h| h.first <= *key)
            .saturating_sub(1)
    }

    fn refresh(&mut self, b: usize) {
        let recs = &self.blocks[b];
        self.heads[b] = Head {
            first: recs[0].0,
            max_end: recs.iter().map(|(k, l)| k.phys + l).max().unwrap_or(0),
        };
    }

    /// Adds a record; the key must be new.
    pub(crate) fn insert(&mut self, key: RmapKey, len: u64) {
        self.len += 1;
        if self.blocks.is_empty() {
            self.blocks.push(vec![(key, len)]);
            self.heads.push(Head {
                first: key,
                max_end: key.phys + len,
            });
            return;
        }
        let b = self.block_of(&key);
        let recs = &mut self.blocks[b];
        let at = recs.partition_point(|(k, _)| *k < key);
        debug_assert!(
            recs.get(at).is_none_or(|(k, _)| *k != key),
            "duplicate rmap record"
        );
        recs.insert(at, (key, len));
        if recs.len() > BLOCK {
            let tail = recs.split_off(recs.len() / 2);
            self.blocks.insert(b + 1, tail);
            self.heads.insert(
                b + 1,
                Head {
                    first: key,
                    max_end: 0,
                },
            );
            self.refresh(b + 1);
            self.refresh(b);
        } else {
            let h = &mut self.heads[b];
            h.first = h.first.min(key);
            h.max_end = h.max_end.max(key.phys + len);
        }
    }

    /// Removes a record; returns its length.
    pub(crate) fn remove(&mut self, key: &RmapKey) -> Option<u64> {
        if self.blocks.is_empty() {
            return None;
        }
        let b = self.block_of(key);
        let recs = &mut self.blocks[b];
        let at = recs.binary_search_by(|(k, _)| k.cmp(key)).ok()?;
        let (_, len) = recs.remove(at);
        self.len -= 1;
        if recs.is_empty() {
            self.blocks.remove(b);
            self.heads.remove(b);
        } else if at == 0 || key.phys + len == self.heads[b].max_end {
            self.refresh(b);
        }
        Some(len)
    }

    /// Calls `f(key, len)` for every record covering physical page `p`.
    pub(crate) fn covering(&self, p: u64, mut f: impl FnMut(&RmapKey, u64)) {
        for (h, recs) in self.heads.iter().zip(&self.blocks) {
            if h.first.phys > p {
                break;
            }
            if h.max_end <= p {
                continue;
            }
            for (k, l) in recs {
                if k.phys > p {
                    break;
                }
                if p < k.phys + l {
                    f(k, *l);
                }
            }
        }
    }

    /// Bytes allocated.
    pub(crate) fn memory_bytes(&self) -> usize {
        crate::mem::vec_bytes(&self.heads)
            + crate::mem::vec_bytes(&self.blocks)
            + self.blocks.iter().map(crate::mem::vec_bytes).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn matches_brute_force() {
        let mut r = Rmap::default();
        let mut m: BTreeMap<RmapKey, u64> = BTreeMap::new();
        let mut x = 99u64;
        for step in 0..30_000u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let key = RmapKey {
                phys: (x >> 40) % 3000,
                file: (x >> 20) % 7,
                index: (x >> 10) % 5,
            };
            if let Some(l) = m.remove(&key) {
                assert_eq!(r.remove(&key), Some(l));
            } else {
                let len = 1 + (x >> 3) % if step % 50 == 0 { 2000 } else { 40 };
                r.insert(key, len);
                m.insert(key, len);
            }
            assert_eq!(r.len(), m.len());
            if step % 499 == 0 {
                for p in [0, 1, 17, 1500, 2999, 3100, 5000] {
                    let mut got = Vec::new();
                    r.covering(p, |k, l| got.push((*k, l)));
                    let want: Vec<_> = m
                        .iter()
                        .filter(|(k, l)| k.phys <= p && p < k.phys + **l)
                        .map(|(k, l)| (*k, *l))
                        .collect();
                    assert_eq!(got, want, "page {p}");
                }
            }
        }
        assert!(r.memory_bytes() > 0);
    }
}
