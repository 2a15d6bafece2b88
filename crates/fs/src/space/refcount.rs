//! The refcount tree: how many owners share each physical block.
//!
//! Only ranges with two or more owners have a record (first block -> length,
//! count); an allocated block without a record has exactly one owner. A block
//! goes back to free space only when its last owner lets go.
use crate::error::{FsError, Result};
use daxfs_btree::{BTree, NodeStore};
use daxfs_format::BlockKind;
use daxfs_format::records::{RefcountRecord, TreeRoot};
use std::collections::BTreeMap;
use std::ops::ControlFlow;

/// The refcount tree.
pub fn tree() -> BTree<u64, RefcountRecord> {
    BTree::new(BlockKind::RefcountTree, 0)
}

/// A physical range and its number of owners.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    pub start: u64,
    pub len: u64,
    pub count: u64,
}

/// A record from media that cannot be a range of blocks (its byte offsets
/// would overflow): the tree is corrupt.
fn check(k: u64, v: &RefcountRecord) -> Result<()> {
    let max = daxfs_format::MAX_FILE_BLOCKS;
    let len = v.len.get();
    if len == 0 || k.checked_add(len).is_none_or(|e| e > max) {
        return Err(FsError::Corrupt(format!(
            "refcount tree: record at block {k} has length {len}"
        )));
    }
    Ok(())
}

/// The records overlapping `[p, p+l)`, as (start, len, count).
fn overlapping(s: &mut dyn NodeStore, root: &TreeRoot, p: u64, l: u64) -> Result<Vec<Piece>> {
    let mut out = vec![];
    let last = tree().last_le(s, root, &p)?;
    if let Some((k, v)) = &last {
        check(*k, v)?;
    }
    if let Some((k, v)) = last
        && k + v.len.get() > p
    {
        out.push(Piece {
            start: k,
            len: v.len.get(),
            count: v.count.get(),
        });
    }
    if l > 1 {
        let mut bad = None;
        tree().range(s, root, &(p + 1), &(p + l - 1), &mut |k, v| {
            if let Err(e) = check(k, &v) {
                bad = Some(e);
                return ControlFlow::Break(());
            }
            out.push(Piece {
                start: k,
                len: v.len.get(),
                count: v.count.get(),
            });
            ControlFlow::Continue(())
        })?;
        if let Some(e) = bad {
            return Err(e);
        }
    }
    Ok(out)
}

/// Splits `[p, p+l)` into pieces of uniform owner count (1 where no record).
pub fn pieces(s: &mut dyn NodeStore, root: &TreeRoot, p: u64, l: u64) -> Result<Vec<Piece>> {
    let mut out = vec![];
    let mut at = p;
    let end = p + l;
    for r in overlapping(s, root, p, l)? {
        let rs = r.start.max(p);
        let re = (r.start + r.len).min(end);
        if rs > at {
            out.push(Piece {
                start: at,
                len: rs - at,
                count: 1,
            });
        }
        if re > rs {
            out.push(Piece {
                start: rs,
                len: re - rs,
                count: r.count,
            });
        }
        at = at.max(re);
    }
    if at < end {
        out.push(Piece {
            start: at,
            len: end - at,
            count: 1,
        });
    }
    Ok(out)
}

/// True when any block of `[p, p+l)` has more than one owner.
pub fn any_shared(s: &mut dyn NodeStore, root: &TreeRoot, p: u64, l: u64) -> Result<bool> {
    Ok(!overlapping(s, root, p, l)?.is_empty())
}

/// Adds one owner to every block of `[p, p+l)` (`inc`), or removes one.
/// Returns the ranges whose last owner went (to be freed).
pub fn adjust(
    s: &mut dyn NodeStore,
    root: &mut TreeRoot,
    p: u64,
    l: u64,
    inc: bool,
) -> Result<Vec<(u64, u64)>> {
    let old = overlapping(s, root, p, l)?;
    let mut new: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    // Parts of old records outside the range keep their count.
    for r in &old {
        if r.start < p {
            new.insert(r.start, (p - r.start, r.count));
        }
        if r.start + r.len > p + l {
            new.insert(p + l, (r.start + r.len - (p + l), r.count));
        }
    }
    let mut freed = vec![];
    for pc in pieces(s, root, p, l)? {
        let c = if inc {
            pc.count + 1
        } else {
            pc.count.checked_sub(1).ok_or_else(|| {
                FsError::Corrupt(format!(
                    "refcount of blocks [{}, +{}) below zero",
                    pc.start, pc.len
                ))
            })?
        };
        match c {
            0 => freed.push((pc.start, pc.len)),
            1 => {}
            _ => {
                new.insert(pc.start, (pc.len, c));
            }
        }
    }
    // Merge neighbours of equal count, so records do not fragment.
    let mut merged: Vec<(u64, u64, u64)> = vec![];
    for (k, (len, c)) in new {
        match merged.last_mut() {
            Some(last) if last.0 + last.1 == k && last.2 == c => last.1 += len,
            _ => merged.push((k, len, c)),
        }
    }
    // Replace and add first, remove last: the tree never empties and regrows.
    let t = tree();
    for &(k, len, c) in &merged {
        t.insert(
            s,
            root,
            k,
            RefcountRecord {
                len: len.into(),
                count: c.into(),
            },
        )?;
    }
    for r in old {
        if !merged.iter().any(|m| m.0 == r.start) {
            t.remove(s, root, &r.start)?;
        }
    }
    Ok(freed)
}
