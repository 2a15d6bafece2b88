//! The bad-block tree: physical ranges known to hold poisoned memory.
//!
//! A bad block is never free: when a media error hits free space the range
//! moves from the free-space tree to this one, and when the last owner of a
//! bad block lets go it comes here instead of going back to free space. A
//! bad block may still be owned (a file whose data there is lost, until the
//! file overwrites, truncates or deletes it). Clearing the error (the
//! device's recovery write) removes the range; unowned parts become free.
use crate::error::Result;
use daxfs_btree::{BTree, NodeStore};
use daxfs_format::BlockKind;
use daxfs_format::records::TreeRoot;
use std::ops::ControlFlow;

/// The bad-block tree (first block -> length).
pub fn tree() -> BTree<u64, u64> {
    BTree::new(BlockKind::BadBlockTree, 0)
}

/// A record that cannot be a range of blocks (its byte offsets would
/// overflow): the tree is corrupt.
fn check(k: u64, len: u64) -> Result<(u64, u64)> {
    let max = daxfs_format::MAX_FILE_BLOCKS;
    if len == 0 || k.checked_add(len).is_none_or(|e| e > max) {
        return Err(crate::error::FsError::Corrupt(format!(
            "bad-block tree: record at block {k} has length {len}"
        )));
    }
    Ok((k, len))
}

/// The record with the largest start `<= p`, checked.
fn last_le(s: &mut dyn NodeStore, root: &TreeRoot, p: u64) -> Result<Option<(u64, u64)>> {
    match tree().last_le(s, root, &p)? {
        Some((k, len)) => check(k, len).map(Some),
        None => Ok(None),
    }
}

/// The records with starts in `[lo, hi]`, each checked before `f` sees it.
fn range(
    s: &mut dyn NodeStore,
    root: &TreeRoot,
    lo: &u64,
    hi: &u64,
    f: &mut dyn FnMut(u64, u64) -> ControlFlow<()>,
) -> Result<()> {
    let mut err = None;
    tree().range(s, root, lo, hi, &mut |k, len| match check(k, len) {
        Ok(_) => f(k, len),
        Err(e) => {
            err = Some(e);
            ControlFlow::Break(())
        }
    })?;
    err.map_or(Ok(()), Err)
}

/// Known-bad ranges overlapping `[p, p+l)`, clipped to it.
pub fn overlapping(
    s: &mut dyn NodeStore,
    root: &TreeRoot,
    p: u64,
    l: u64,
) -> Result<Vec<(u64, u64)>> {
    let mut out = vec![];
    if root.is_empty() || l == 0 {
        return Ok(out);
    }
    let end = p + l;
    if let Some((k, len)) = last_le(s, root, p)?
        && k + len > p
    {
        out.push((p, (k + len).min(end) - p));
    }
    if l > 1 {
        range(s, root, &(p + 1), &(end - 1), &mut |k, len| {
            out.push((k, (k + len).min(end) - k));
            ControlFlow::Continue(())
        })?;
    }
    Ok(out)
}

/// Every known-bad range.
pub fn all(s: &mut dyn NodeStore, root: &TreeRoot) -> Result<Vec<(u64, u64)>> {
    let mut out = vec![];
    range(s, root, &0, &u64::MAX, &mut |k, l| {
        out.push((k, l));
        ControlFlow::Continue(())
    })?;
    Ok(out)
}

/// Marks `[p, p+l)` bad (merging with known ranges it touches or overlaps).
pub fn add(s: &mut dyn NodeStore, root: &mut TreeRoot, p: u64, l: u64) -> Result<()> {
    let (mut start, mut end) = (p, p + l);
    let mut old = vec![];
    if let Some((k, len)) = last_le(s, root, p)?
        && k + len >= p
    {
        start = k;
        end = end.max(k + len);
        old.push(k);
    }
    let hi = p + l;
    range(s, root, &(p + 1).min(hi), &hi, &mut |k, len| {
        end = end.max(k + len);
        old.push(k);
        ControlFlow::Continue(())
    })?;
    tree().insert(s, root, start, end - start)?;
    for k in old {
        if k != start {
            tree().remove(s, root, &k)?;
        }
    }
    Ok(())
}

/// Marks `[p, p+l)` good again.
pub fn remove(s: &mut dyn NodeStore, root: &mut TreeRoot, p: u64, l: u64) -> Result<()> {
    let end = p + l;
    let mut touched = vec![];
    if let Some((k, len)) = last_le(s, root, p)?
        && k + len > p
    {
        touched.push((k, len));
    }
    if l > 1 {
        range(s, root, &(p + 1), &(end - 1), &mut |k, len| {
            touched.push((k, len));
            ControlFlow::Continue(())
        })?;
    }
    for (k, len) in touched {
        if k < p {
            tree().insert(s, root, k, p - k)?;
        }
        if k + len > end {
            tree().insert(s, root, end, k + len - end)?;
        }
        if k >= p {
            tree().remove(s, root, &k)?;
        }
    }
    Ok(())
}
