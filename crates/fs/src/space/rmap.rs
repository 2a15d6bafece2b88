//! The reverse map: for every allocated physical block, who owns it.
//!
//! Records are keyed by (first physical block, owner code, offset code) with
//! (length, flags, replica) as value. Owners are file data (inode, file
//! block), a file's extent-tree node, a directory's tree node, or a metadata
//! structure.
//!
//! An interval map, like XFS's rmapbt: one record per extent of each owner.
//! Records of different owners overlap freely (no record is split because
//! another owner's changed), and those of one file that continue each other
//! are merged. Internal nodes keep, per child, the largest end of the
//! records below ([`MaxEnd`]), so finding every owner of `[b0, b1)` walks the
//! keys up to `b1` while skipping the subtrees that end at or before `b0`:
//! it reads the paths to the k records found, O((k + 1) log n) nodes.
//!
//! Replicas: a metadata block with a replica has its record's `replica` name
//! the replica's first block, and the replica has a record of its own, with
//! the same owner, the replica flag in its offset code, and `replica` naming
//! the block it copies. So the pair can be found from either end.
use crate::error::{FsError, Result};
use daxfs_btree::{BTree, NodeStore, Summary};
use daxfs_format::BlockKind;
use daxfs_format::records::{
    RMAP_OFF_DIR_TREE, RMAP_OFF_EXTENT_TREE, RMAP_OFF_REPLICA, RMAP_OWNER_META, RMAP_UNWRITTEN,
    Record, RmapRecord, TreeRoot,
};
use std::ops::ControlFlow;

pub type Key = (u64, u64, u64);

/// The summary kept beside every child pointer of the reverse map's internal
/// nodes: the largest end (first block + length) of the records below.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct MaxEnd(pub u64);

impl Record for MaxEnd {
    const SIZE: usize = 8;
    fn encode(&self, out: &mut [u8]) {
        self.0.encode(out);
    }
    fn decode(b: &[u8]) -> std::result::Result<Self, daxfs_format::FormatError> {
        Ok(MaxEnd(u64::decode(b)?))
    }
}

impl Summary<Key, RmapRecord> for MaxEnd {
    fn of(k: &Key, v: &RmapRecord) -> Self {
        // Saturating: a corrupt length must not overflow (fsck reports it).
        MaxEnd(k.0.saturating_add(v.len.get()))
    }
    fn join(self, other: Self) -> Self {
        self.max(other)
    }
}

/// The reverse-map tree: an interval map, augmented with [`MaxEnd`].
pub fn tree() -> BTree<Key, RmapRecord, MaxEnd> {
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

    /// The owner at `by` blocks before (file data: that many file blocks
    /// back); `None` before the file's start.
    fn shifted_back(self, by: u64) -> Option<Owner> {
        match self {
            Owner::Data { ino, fblock } => Some(Owner::Data {
                ino,
                fblock: fblock.checked_sub(by)?,
            }),
            o => Some(o),
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

/// Calls `f` on every record overlapping blocks `[first, last]`, in key
/// order, until it breaks: subtrees whose records all end at or before
/// `first` are skipped by their summary, so the walk reads the paths to the
/// records found, not every record that starts before `last`.
fn overlapping(
    s: &mut dyn NodeStore,
    root: &TreeRoot,
    first: u64,
    last: u64,
    f: &mut dyn FnMut(Mapping) -> ControlFlow<()>,
) -> Result<()> {
    let mut err = None;
    tree().range_pruned(
        s,
        root,
        &(0, 0, 0),
        &(last, u64::MAX, u64::MAX),
        &|a: &MaxEnd| a.0 <= first,
        &mut |k, v| {
            if k.0.saturating_add(v.len.get()) <= first {
                return ControlFlow::Continue(());
            }
            match Mapping::from_kv(k, v) {
                Ok(m) => f(m),
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

/// A data mapping that may merge with its neighbours: no replica fields.
fn mergeable(m: &Mapping) -> bool {
    matches!(m.owner, Owner::Data { .. }) && m.replica == 0 && !m.is_replica
}

/// Records that `m` is mapped. A file-data mapping that continues a record
/// of the same owner (contiguous on the device and in the file, same flags)
/// on either side is merged with it.
pub fn add(s: &mut dyn NodeStore, root: &mut TreeRoot, m: Mapping) -> Result<()> {
    add_with(s, root, m, true, m.phys)
}

/// [`add`] of a data mapping the caller knows its owner maps nothing after
/// (at file blocks from `m`'s end on, once the transaction's changes are
/// all applied): no record can follow it, so the right neighbour is not
/// looked up (one descent less for appends and new files). A record that
/// follows it now is removed whole later in the same transaction, so
/// merging with it or not ends the same. `from` is where the record `m`
/// likely continues starts (the first device block of the extent `m` joined
/// in the file's map): looked up by its key first, which for an append saves
/// the walk over the records covering the block before.
pub fn add_last(s: &mut dyn NodeStore, root: &mut TreeRoot, m: Mapping, from: u64) -> Result<()> {
    add_with(s, root, m, false, from)
}

fn add_with(
    s: &mut dyn NodeStore,
    root: &mut TreeRoot,
    m: Mapping,
    right: bool,
    from: u64,
) -> Result<()> {
    let mut m = m;
    if mergeable(&m) {
        // The right neighbour starts where `m` ends, at a known key.
        if right
            && let Some(end) = m.phys.checked_add(m.len)
            && let Some(r) = record_at(s, root, end, m.owner.shifted(m.len), false)?
            && r.unwritten == m.unwritten
            && r.replica == 0
        {
            tree().remove(s, root, &r.key())?;
            m.len += r.len;
        }
        if let Some(l) = left_neighbour(s, root, &m, from)? {
            let grown = Mapping {
                len: l.len + m.len,
                ..l
            };
            tree().insert(s, root, grown.key(), grown.val())?;
            return Ok(());
        }
    }
    tree().insert(s, root, m.key(), m.val())?;
    Ok(())
}

/// The record that `m` continues: same owner, ending where `m` starts on
/// the device and in the file, same flags. Looks at the records that cover
/// the block before `m` (one per owner of that block).
fn left_neighbour(
    s: &mut dyn NodeStore,
    root: &TreeRoot,
    m: &Mapping,
    from: u64,
) -> Result<Option<Mapping>> {
    let Some(before) = m.phys.checked_sub(1) else {
        return Ok(None);
    };
    // Nothing precedes the start of a file (the common case of a new small
    // file): no walk.
    if let Owner::Data { fblock: 0, .. } = m.owner {
        return Ok(None);
    }
    let continues = |r: &Mapping| {
        r.phys + r.len == m.phys
            && mergeable(r)
            && r.unwritten == m.unwritten
            && r.owner.shifted(r.len) == m.owner
    };
    // The record starting where the caller says, by its key.
    if from < m.phys
        && let Some(o) = m.owner.shifted_back(m.phys - from)
        && let Some(r) = record_at(s, root, from, o, false)?
        && continues(&r)
    {
        return Ok(Some(r));
    }
    let mut found = None;
    overlapping(s, root, before, before, &mut |r| {
        if continues(&r) {
            found = Some(r);
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })?;
    Ok(found)
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

/// [`remove`], where the owner's record covering the range likely starts at
/// block `from` (the start of the file extent the range is cut from): one
/// lookup finds it there, instead of a look at every record covering the
/// range (one per owner of a shared block). Any `from` gives the same result.
pub fn remove_in(
    s: &mut dyn NodeStore,
    root: &mut TreeRoot,
    phys: u64,
    len: u64,
    owner: Owner,
    from: u64,
) -> Result<()> {
    remove_hinted(s, root, phys, len, owner, false, from)
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
    remove_hinted(s, root, phys, len, owner, is_replica, phys)
}

fn remove_hinted(
    s: &mut dyn NodeStore,
    root: &mut TreeRoot,
    phys: u64,
    len: u64,
    owner: Owner,
    is_replica: bool,
    from: u64,
) -> Result<()> {
    let Some(end) = phys.checked_add(len).filter(|_| len > 0) else {
        return Err(FsError::Corrupt(format!(
            "reverse map: removing [{phys}, +{len}) of {owner:?}"
        )));
    };
    // The records of `owner` over the range: those that map block `phys`
    // to the same place as `owner` does (file data: the same file block).
    let mut hits = vec![];
    // Records of one owner never overlap: a record of `owner` at `from` that
    // covers the whole range is the only one.
    if let Some(back) = phys.checked_sub(from)
        && let Some(at_from) = owner.shifted_back(back)
        && let Some(r) = record_at(s, root, from, at_from, is_replica)?
        && r.phys + r.len >= end
    {
        hits.push(r);
    } else {
        overlapping(s, root, phys, end - 1, &mut |r| {
            let same = if r.phys <= phys {
                r.owner.shifted(phys - r.phys) == owner
            } else {
                owner.shifted(r.phys - phys) == r.owner
            };
            if same && r.is_replica == is_replica {
                hits.push(r);
            }
            ControlFlow::Continue(())
        })?;
    }
    let mut removed = 0;
    for r in hits {
        let r_end = r.phys + r.len;
        removed += r_end.min(end) - r.phys.max(phys);
        if r.phys < phys {
            // The part before the range keeps the record's key.
            let left = Mapping {
                len: phys - r.phys,
                ..r
            };
            tree().insert(s, root, left.key(), left.val())?;
        } else {
            tree().remove(s, root, &r.key())?;
        }
        if r_end > end {
            let cut = end - r.phys;
            let right = Mapping {
                phys: end,
                len: r_end - end,
                owner: r.owner.shifted(cut),
                replica: if r.replica == 0 {
                    0
                } else {
                    r.replica.saturating_add(cut)
                },
                ..r
            };
            if tree().insert(s, root, right.key(), right.val())?.is_some() {
                return Err(FsError::Corrupt(format!(
                    "reverse map: records of {:?} overlap at block {end}",
                    r.owner
                )));
            }
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

/// [`add_fresh`] of every mapping of `ms`, in one sorted insert (each leaf
/// read and written once per run of records in it).
pub fn add_fresh_all(s: &mut dyn NodeStore, root: &mut TreeRoot, ms: &[Mapping]) -> Result<()> {
    let mut items: Vec<(Key, RmapRecord)> = ms.iter().map(|m| (m.key(), m.val())).collect();
    items.sort_unstable_by_key(|(k, _)| *k);
    if let Some(w) = items.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(FsError::Corrupt(format!(
            "reverse map: block {} recorded twice as new",
            w[0].0.0
        )));
    }
    let replaced = tree().insert_sorted(s, root, &items)?;
    if replaced > 0 {
        return Err(FsError::Corrupt(format!(
            "reverse map: {replaced} blocks were free but had a record"
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

/// Applies the reverse map's pending record changes (intents read from the
/// log, in order: each sets or removes one key's record) to the tree.
/// Replaying a change already applied is harmless: the last change to each
/// key decides.
pub fn apply_intents(
    s: &mut dyn NodeStore,
    root: &mut TreeRoot,
    intents: &[daxfs_format::records::RmapIntent],
) -> Result<()> {
    use daxfs_format::records::{INTENT_PUT, INTENT_REMOVE};
    for it in intents {
        let key = (it.start.get(), it.owner.get(), it.offset.get());
        match it.op.get() {
            INTENT_PUT => {
                let val = RmapRecord {
                    len: it.len,
                    flags: it.flags,
                    replica: it.replica,
                };
                tree().insert(s, root, key, val)?;
            }
            INTENT_REMOVE => {
                tree().remove(s, root, &key)?;
            }
            op => {
                return Err(FsError::Corrupt(format!(
                    "reverse-map intent for block {} has unknown operation {op}",
                    key.0
                )));
            }
        }
    }
    Ok(())
}

/// Every record overlapping `[p, p+l)`, in key (physical) order. Reads
/// the nodes on the paths to the k records found: O((k + 1) log n).
pub fn query(s: &mut dyn NodeStore, root: &TreeRoot, p: u64, l: u64) -> Result<Vec<Mapping>> {
    let mut out = vec![];
    query_into(s, root, p, l, &mut out)?;
    Ok(out)
}

/// [`query`], appended to `out`.
pub fn query_into(
    s: &mut dyn NodeStore,
    root: &TreeRoot,
    p: u64,
    l: u64,
    out: &mut Vec<Mapping>,
) -> Result<()> {
    if l == 0 {
        return Ok(());
    }
    overlapping(s, root, p, p.saturating_add(l - 1), &mut |m| {
        out.push(m);
        ControlFlow::Continue(())
    })
}

/// Census of the reverse map, by walking every record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Census {
    /// All records.
    pub records: u64,
    /// Records of file data.
    pub data_records: u64,
    /// Tree nodes.
    pub nodes: u64,
}

/// Counts the records (and nodes) of the reverse map.
pub fn census(s: &mut dyn NodeStore, root: &TreeRoot) -> Result<Census> {
    let mut c = Census::default();
    tree().range(
        s,
        root,
        &(0, 0, 0),
        &(u64::MAX, u64::MAX, u64::MAX),
        &mut |k, _| {
            c.records += 1;
            if k.1 & RMAP_OWNER_META == 0 && k.2 & (RMAP_OFF_EXTENT_TREE | RMAP_OFF_DIR_TREE) == 0 {
                c.data_records += 1;
            }
            ControlFlow::Continue(())
        },
    )?;
    tree().visit_nodes(s, root, &mut |_, _| c.nodes += 1)?;
    Ok(c)
}
