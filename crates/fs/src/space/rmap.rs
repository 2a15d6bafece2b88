//! The reverse map: for every allocated physical block, who owns it.
//!
//! Records are keyed by (first physical block, owner code, offset code) with
//! (length, flags) as value. Owners are file data (inode, file block), a
//! file's extent-tree node, a directory's tree node, or a metadata structure.
//!
//! Segment alignment: any two records cover either the same physical range or
//! disjoint ones. Adding or removing a mapping first splits the records that
//! straddle its ends. So the records covering a block all start at the same
//! place, and finding every owner of a range is one descent to the segment
//! holding its first block plus a scan of the k records that overlap:
//! O(log n + k).
//!
//! Replicas: a metadata block with a replica has its record's `replica` name
//! the replica's first block, and the replica has a record of its own, with
//! the same owner, the replica flag in its offset code, and `replica` naming
//! the block it copies. So the pair can be found from either end.
use crate::error::{FsError, Result};
use daxfs_btree::{BTree, NodeStore};
use daxfs_format::BlockKind;
use daxfs_format::records::{
    RMAP_OFF_DIR_TREE, RMAP_OFF_EXTENT_TREE, RMAP_OFF_REPLICA, RMAP_OWNER_META, RMAP_UNWRITTEN,
    RmapRecord, TreeRoot,
};
use std::ops::ControlFlow;

type Key = (u64, u64, u64);

/// The reverse-map tree.
pub fn tree() -> BTree<Key, RmapRecord> {
    BTree::new(BlockKind::RmapTree, 0)
}

/// Who owns a physical range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Owner {
    /// File data: inode and the file block mapped at the range's first block.
    Data { ino: u64, fblock: u64 },
    /// A node of the inode's extent tree.
    ExtentTree { ino: u64 },
    /// A node of the directory's tree.
    DirTree { ino: u64 },
    /// A file-system-wide metadata structure.
    Meta(BlockKind),
}

impl Owner {
    /// The (owner, offset) codes of the key.
    pub fn codes(self) -> (u64, u64) {
        match self {
            Owner::Data { ino, fblock } => (ino, fblock),
            Owner::ExtentTree { ino } => (ino, RMAP_OFF_EXTENT_TREE),
            Owner::DirTree { ino } => (ino, RMAP_OFF_DIR_TREE),
            Owner::Meta(k) => (RMAP_OWNER_META | k as u64, 0),
        }
    }

    /// Decodes key codes; `None` for codes no version writes.
    pub fn from_codes(owner: u64, off: u64) -> Option<Owner> {
        if owner & RMAP_OWNER_META != 0 {
            let k = BlockKind::from_u8(u8::try_from(owner & !RMAP_OWNER_META).ok()?)?;
            return (off == 0).then_some(Owner::Meta(k));
        }
        match off {
            RMAP_OFF_EXTENT_TREE => Some(Owner::ExtentTree { ino: owner }),
            RMAP_OFF_DIR_TREE => Some(Owner::DirTree { ino: owner }),
            o if o & (RMAP_OFF_EXTENT_TREE | RMAP_OFF_DIR_TREE) == 0 => Some(Owner::Data {
                ino: owner,
                fblock: o,
            }),
            _ => None,
        }
    }

    /// The owner a newly allocated node of a tree of `kind` owned by `owner` gets.
    pub fn of_node(kind: BlockKind, owner: u64) -> Owner {
        match kind {
            BlockKind::ExtentTree => Owner::ExtentTree { ino: owner },
            BlockKind::DirTree => Owner::DirTree { ino: owner },
            k => Owner::Meta(k),
        }
    }

    /// The inode, for owners that belong to one.
    pub fn ino(self) -> Option<u64> {
        match self {
            Owner::Data { ino, .. } | Owner::ExtentTree { ino } | Owner::DirTree { ino } => {
                Some(ino)
            }
            Owner::Meta(_) => None,
        }
    }

    fn shifted(self, by: u64) -> Owner {
        match self {
            Owner::Data { ino, fblock } => Owner::Data {
                ino,
                fblock: fblock + by,
            },
            o => o,
        }
    }
}

/// One reverse-map record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub phys: u64,
    pub len: u64,
    pub owner: Owner,
    pub unwritten: bool,
    /// The other block of a replicated pair (see the module docs), or 0.
    pub replica: u64,
    /// This is the replica of the metadata at `replica`.
    pub is_replica: bool,
}

impl Mapping {
    /// A record of `owner` mapping `[phys, phys+len)`, without a replica.
    pub fn new(phys: u64, len: u64, owner: Owner, unwritten: bool) -> Mapping {
        Mapping {
            phys,
            len,
            owner,
            unwritten,
            replica: 0,
            is_replica: false,
        }
    }

    pub fn key(&self) -> Key {
        let (o, f) = self.owner.codes();
        (
            self.phys,
            o,
            if self.is_replica {
                f | RMAP_OFF_REPLICA
            } else {
                f
            },
        )
    }
    fn val(&self) -> RmapRecord {
        RmapRecord {
            len: self.len.into(),
            flags: (if self.unwritten { RMAP_UNWRITTEN } else { 0 }).into(),
            replica: self.replica.into(),
        }
    }
    pub fn from_kv(k: Key, v: RmapRecord) -> Result<Mapping> {
        let is_replica = k.2 & RMAP_OFF_REPLICA != 0;
        let owner = Owner::from_codes(k.1, k.2 & !RMAP_OFF_REPLICA)
            .filter(|o| !is_replica || !matches!(o, Owner::Data { .. }))
            .ok_or_else(|| {
                FsError::Corrupt(format!(
                    "reverse map: record at block {} has unknown owner {:#x}/{:#x}",
                    k.0, k.1, k.2
                ))
            })?;
        let len = v.len.get();
        // Ends past the largest device or file overflow byte offsets.
        let max = crate::file::MAX_FILE_SIZE / daxfs_format::BLOCK_SIZE_U64;
        let past = |a: u64| a.checked_add(len).is_none_or(|e| e > max);
        if len == 0 || past(k.0) || matches!(owner, Owner::Data { fblock, .. } if past(fblock)) {
            return Err(FsError::Corrupt(format!(
                "reverse map: record at block {} has length {len}",
                k.0
            )));
        }
        Ok(Mapping {
            phys: k.0,
            len,
            owner,
            unwritten: v.flags.get() & RMAP_UNWRITTEN != 0,
            replica: v.replica.get(),
            is_replica,
        })
    }
}

/// Every record whose physical start is in `[lo, hi]`.
fn records_from(s: &mut dyn NodeStore, root: &TreeRoot, lo: u64, hi: u64) -> Result<Vec<Mapping>> {
    let mut out = vec![];
    let mut err = None;
    tree().range(
        s,
        root,
        &(lo, 0, 0),
        &(hi, u64::MAX, u64::MAX),
        &mut |k, v| match Mapping::from_kv(k, v) {
            Ok(m) => {
                out.push(m);
                ControlFlow::Continue(())
            }
            Err(e) => {
                err = Some(e);
                ControlFlow::Break(())
            }
        },
    )?;
    match err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// The start of the segment holding block `x`, if any record covers it.
fn segment_of(s: &mut dyn NodeStore, root: &TreeRoot, x: u64) -> Result<Option<(u64, u64)>> {
    match tree().last_le(s, root, &(x, u64::MAX, u64::MAX))? {
        Some((k, v)) => {
            let m = Mapping::from_kv(k, v)?;
            Ok((m.phys + m.len > x).then_some((m.phys, m.len)))
        }
        None => Ok(None),
    }
}

/// Splits every record that covers both `x - 1` and `x`.
fn split_at(s: &mut dyn NodeStore, root: &mut TreeRoot, x: u64) -> Result<()> {
    let Some((start, _)) = segment_of(s, root, x)? else {
        return Ok(());
    };
    if start == x {
        return Ok(());
    }
    for m in records_from(s, root, start, start)? {
        if m.phys + m.len <= x {
            continue;
        }
        let cut = x - m.phys;
        let left = Mapping { len: cut, ..m };
        let right = Mapping {
            phys: x,
            len: m.len - cut,
            owner: m.owner.shifted(cut),
            replica: if m.replica == 0 {
                0
            } else {
                m.replica.saturating_add(cut)
            },
            ..m
        };
        tree().insert(s, root, left.key(), left.val())?;
        tree().insert(s, root, right.key(), right.val())?;
    }
    Ok(())
}

/// The segments (start, length) starting in `[p, end)`: one descent per
/// segment, however many owners each has.
fn segments_in(
    s: &mut dyn NodeStore,
    root: &TreeRoot,
    p: u64,
    end: u64,
) -> Result<Vec<(u64, u64)>> {
    let mut out = vec![];
    let mut at = (p, 0, 0);
    while let Some((k, v)) = tree().first_ge(s, root, &at)? {
        if k.0 >= end {
            break;
        }
        let m = Mapping::from_kv(k, v)?;
        out.push((m.phys, m.len));
        match k.0.checked_add(1) {
            Some(next) => at = (next, 0, 0),
            None => break,
        }
    }
    Ok(out)
}

/// Records that `m` is mapped.
pub fn add(s: &mut dyn NodeStore, root: &mut TreeRoot, m: Mapping) -> Result<()> {
    let end = m.phys + m.len;
    split_at(s, root, m.phys)?;
    split_at(s, root, end)?;
    // Cut the new mapping at the segments already inside its range.
    let segs = segments_in(s, root, m.phys, end)?;
    let mut cuts: Vec<(u64, u64, bool)> = vec![];
    let mut at = m.phys;
    for (sp, sl) in segs {
        if sp > at {
            cuts.push((at, sp - at, false));
        }
        cuts.push((sp, sl, true));
        at = sp + sl;
    }
    if at < end {
        cuts.push((at, end - at, false));
    }
    for (p, l, shared) in cuts {
        let piece = Mapping {
            phys: p,
            len: l,
            owner: m.owner.shifted(p - m.phys),
            replica: if m.replica == 0 {
                0
            } else {
                m.replica.saturating_add(p - m.phys)
            },
            ..m
        };
        if !shared && let Some(left) = mergeable_left(s, root, &piece)? {
            tree().insert(
                s,
                root,
                left.key(),
                Mapping {
                    len: left.len + l,
                    ..left
                }
                .val(),
            )?;
            continue;
        }
        tree().insert(s, root, piece.key(), piece.val())?;
    }
    Ok(())
}

/// The record just left of `piece` if `piece` can extend it: same owner,
/// contiguous on both the device and in the file, same flags, and alone in
/// its segment (so the longer record stays segment-aligned).
fn mergeable_left(
    s: &mut dyn NodeStore,
    root: &TreeRoot,
    piece: &Mapping,
) -> Result<Option<Mapping>> {
    if piece.phys == 0 || !matches!(piece.owner, Owner::Data { .. }) || piece.replica != 0 {
        return Ok(None);
    }
    let Some((start, len)) = segment_of(s, root, piece.phys - 1)? else {
        return Ok(None);
    };
    if start + len != piece.phys {
        return Ok(None);
    }
    // Alone in its segment? Look at no more than two records.
    let mut recs = vec![];
    let mut err = None;
    tree().range(
        s,
        root,
        &(start, 0, 0),
        &(start, u64::MAX, u64::MAX),
        &mut |k, v| {
            match Mapping::from_kv(k, v) {
                Ok(m) => recs.push(m),
                Err(e) => err = Some(e),
            }
            if recs.len() >= 2 || err.is_some() {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        },
    )?;
    if let Some(e) = err {
        return Err(e);
    }
    let [left] = recs.as_slice() else {
        return Ok(None);
    };
    Ok((left.owner.shifted(left.len) == piece.owner
        && left.unwritten == piece.unwritten
        && left.replica == 0
        && !left.is_replica)
        .then_some(*left))
}

/// Records that `owner` no longer maps `[phys, phys+len)` (its own records,
/// not those of replicas it has).
pub fn remove(
    s: &mut dyn NodeStore,
    root: &mut TreeRoot,
    phys: u64,
    len: u64,
    owner: Owner,
) -> Result<()> {
    remove_as(s, root, phys, len, owner, false)
}

/// Removes the records of `owner` over `[phys, phys+len)` that are
/// replicas (`is_replica`) or not.
pub fn remove_as(
    s: &mut dyn NodeStore,
    root: &mut TreeRoot,
    phys: u64,
    len: u64,
    owner: Owner,
    is_replica: bool,
) -> Result<()> {
    let end = phys + len;
    split_at(s, root, phys)?;
    split_at(s, root, end)?;
    let mut removed = 0;
    for m in records_from(s, root, phys, end - 1)? {
        if m.owner == owner.shifted(m.phys - phys) && m.is_replica == is_replica {
            tree().remove(s, root, &m.key())?;
            removed += m.len;
        }
    }
    if removed != len {
        return Err(FsError::Corrupt(format!(
            "reverse map: {owner:?} maps {removed} of blocks [{phys}, +{len}) it is said to own"
        )));
    }
    Ok(())
}

/// Records `m`, a mapping of blocks that were free: no record can overlap
/// them, so nothing is split or merged (one descent, where [`add`] makes
/// several).
pub fn add_fresh(s: &mut dyn NodeStore, root: &mut TreeRoot, m: Mapping) -> Result<()> {
    if tree().insert(s, root, m.key(), m.val())?.is_some() {
        return Err(FsError::Corrupt(format!(
            "reverse map: block {} was free but has a record of {:?}",
            m.phys, m.owner
        )));
    }
    Ok(())
}

/// Removes the record of `owner` (a replica's or not) that starts at
/// `phys`, as [`add_fresh`] made it.
pub fn remove_exact(
    s: &mut dyn NodeStore,
    root: &mut TreeRoot,
    phys: u64,
    owner: Owner,
    is_replica: bool,
) -> Result<()> {
    let key = Mapping {
        is_replica,
        ..Mapping::new(phys, 1, owner, false)
    }
    .key();
    match tree().remove(s, root, &key)? {
        Some(v) if v.len.get() == 1 => Ok(()),
        _ => Err(FsError::Corrupt(format!(
            "reverse map: no one-block record of {owner:?} at block {phys}"
        ))),
    }
}

/// The record of `owner` (a replica's or not) starting at `phys`.
pub fn record_at(
    s: &mut dyn NodeStore,
    root: &TreeRoot,
    phys: u64,
    owner: Owner,
    is_replica: bool,
) -> Result<Option<Mapping>> {
    let probe = Mapping {
        is_replica,
        ..Mapping::new(phys, 1, owner, false)
    };
    match tree().get(s, root, &probe.key())? {
        Some(v) => Ok(Some(Mapping::from_kv(probe.key(), v)?)),
        None => Ok(None),
    }
}

/// Rewrites the `replica` field of an existing record.
pub fn set_replica(
    s: &mut dyn NodeStore,
    root: &mut TreeRoot,
    m: &Mapping,
    replica: u64,
) -> Result<()> {
    let m = Mapping { replica, ..*m };
    tree().insert(s, root, m.key(), m.val())?;
    Ok(())
}

/// Every record of a replicated pair, in key order from `lo` to `hi`
/// (physical blocks, inclusive): `f` sees each and may stop the walk.
pub fn scan_pairs(
    s: &mut dyn NodeStore,
    root: &TreeRoot,
    lo: u64,
    hi: u64,
    f: &mut dyn FnMut(&Mapping) -> ControlFlow<()>,
) -> Result<()> {
    let mut err = None;
    tree().range(
        s,
        root,
        &(lo, 0, 0),
        &(hi, u64::MAX, u64::MAX),
        &mut |k, v| {
            if v.replica.get() == 0 {
                return ControlFlow::Continue(());
            }
            match Mapping::from_kv(k, v) {
                Ok(m) => f(&m),
                Err(e) => {
                    err = Some(e);
                    ControlFlow::Break(())
                }
            }
        },
    )?;
    match err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Every record overlapping `[p, p+l)`, in physical order. O(log n + k).
pub fn query(s: &mut dyn NodeStore, root: &TreeRoot, p: u64, l: u64) -> Result<Vec<Mapping>> {
    if l == 0 {
        return Ok(vec![]);
    }
    let from = segment_of(s, root, p)?.map_or(p, |(start, _)| start);
    let mut v = records_from(s, root, from, p + l - 1)?;
    v.retain(|m| m.phys + m.len > p);
    Ok(v)
}
