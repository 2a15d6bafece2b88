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
use std::collections::BTreeMap;
use std::ops::ControlFlow;

pub type Key = (u64, u64, u64);

/// The summary kept beside every child pointer of the reverse map's internal
/// nodes: the largest end (first block + length) of the records below.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct MaxEnd(pub u64);

/// In words, as fsck's problems quote a summary: `largest end 12`.
impl std::fmt::Debug for MaxEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "largest end {}", self.0)
    }
}

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

/// An owner in words, for messages: `the data of inode 5 from file block
/// 0`, `the inode tree`.
impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Owner::Data { ino, fblock } => {
                write!(f, "the data of inode {ino} from file block {fblock}")
            }
            Owner::ExtentTree { ino } => write!(f, "the extent tree of inode {ino}"),
            Owner::DirTree { ino } => write!(f, "the directory tree of inode {ino}"),
            Owner::Meta(k) => write!(f, "the {}", k.name()),
        }
    }
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
        let max = daxfs_format::MAX_FILE_BLOCKS;
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

/// Reverse-map record changes that the tree does not hold yet: key -> the
/// record's new value (`None`: removed). A transaction's own changes, and
/// the committed ones whose only durable copy is the log's intents.
pub type Pending = BTreeMap<Key, Option<RmapRecord>>;

/// Where reverse-map records are read and changed: the tree itself
/// ([`TreeRecords`]), or the tree under layers of pending changes (a
/// transaction, a committed view through the node cache). Every function of
/// this module works on either.
pub trait Records {
    /// The record with key `k`.
    fn get(&mut self, k: &Key) -> Result<Option<RmapRecord>>;
    /// Sets the record with key `k`.
    fn put(&mut self, k: Key, v: RmapRecord) -> Result<()>;
    /// Removes the record with key `k`, if any.
    fn del(&mut self, k: &Key) -> Result<()>;
    /// Calls `f` on the records with `lo <= key <= hi`, in key order, until
    /// it breaks. With `after`, subtrees whose records all end at or before
    /// block `after` may be skipped (`f` still filters what it is offered).
    fn walk(
        &mut self,
        lo: &Key,
        hi: &Key,
        after: Option<u64>,
        f: &mut dyn FnMut(Key, RmapRecord) -> ControlFlow<()>,
    ) -> Result<()>;
    /// Sets every record of `items` (strictly increasing keys); returns how
    /// many keys had a record already.
    fn put_sorted(&mut self, items: &[(Key, RmapRecord)]) -> Result<usize> {
        let mut replaced = 0;
        for &(k, v) in items {
            replaced += usize::from(self.get(&k)?.is_some());
            self.put(k, v)?;
        }
        Ok(replaced)
    }
}

/// The tree itself: changes go straight into its nodes.
pub struct TreeRecords<'a> {
    pub store: &'a mut dyn NodeStore,
    pub root: &'a mut TreeRoot,
}

impl Records for TreeRecords<'_> {
    fn get(&mut self, k: &Key) -> Result<Option<RmapRecord>> {
        Ok(tree().get(self.store, self.root, k)?)
    }
    fn put(&mut self, k: Key, v: RmapRecord) -> Result<()> {
        tree().insert(self.store, self.root, k, v)?;
        Ok(())
    }
    fn del(&mut self, k: &Key) -> Result<()> {
        tree().remove(self.store, self.root, k)?;
        Ok(())
    }
    fn walk(
        &mut self,
        lo: &Key,
        hi: &Key,
        after: Option<u64>,
        f: &mut dyn FnMut(Key, RmapRecord) -> ControlFlow<()>,
    ) -> Result<()> {
        walk_layered(self.store, self.root, &[], lo, hi, after, f)
    }
    fn put_sorted(&mut self, items: &[(Key, RmapRecord)]) -> Result<usize> {
        Ok(tree().insert_sorted(self.store, self.root, items)?)
    }
}

/// [`Records::walk`] over the tree under `layers` (newest first): the
/// pending changes in `[lo, hi]` are merged into the tree's records in key
/// order, a pending value hiding the tree's record of its key.
pub fn walk_layered(
    s: &mut dyn NodeStore,
    root: &TreeRoot,
    layers: &[&Pending],
    lo: &Key,
    hi: &Key,
    after: Option<u64>,
    f: &mut dyn FnMut(Key, RmapRecord) -> ControlFlow<()>,
) -> Result<()> {
    if lo > hi {
        return Ok(());
    }
    // The pending changes in range, newest winning (few: at most what the
    // log's intent area holds, plus one transaction's).
    let mut over: Vec<(Key, Option<RmapRecord>)> = vec![];
    for (i, l) in layers.iter().enumerate() {
        for (k, v) in l.range(*lo..=*hi) {
            if !layers[..i].iter().any(|n| n.contains_key(k)) {
                over.push((*k, *v));
            }
        }
    }
    if layers.len() > 1 {
        over.sort_unstable_by_key(|(k, _)| *k);
    }
    let mut next = 0;
    let mut stopped = false;
    let first = after.unwrap_or(0);
    let skip = |a: &MaxEnd| after.is_some() && a.0 <= first;
    tree().range_pruned(s, root, lo, hi, &skip, &mut |k, v| {
        while next < over.len() && over[next].0 < k {
            let (ok, ov) = over[next];
            next += 1;
            if let Some(ov) = ov
                && f(ok, ov).is_break()
            {
                stopped = true;
                return ControlFlow::Break(());
            }
        }
        if next < over.len() && over[next].0 == k {
            let ov = over[next].1;
            next += 1;
            return match ov {
                Some(ov) => {
                    let r = f(k, ov);
                    stopped = r.is_break();
                    r
                }
                None => ControlFlow::Continue(()),
            };
        }
        let r = f(k, v);
        stopped = r.is_break();
        r
    })?;
    if !stopped {
        for &(k, v) in &over[next..] {
            if let Some(v) = v
                && f(k, v).is_break()
            {
                break;
            }
        }
    }
    Ok(())
}

/// Calls `f` on every record overlapping blocks `[first, last]`, in key
/// order, until it breaks: subtrees whose records all end at or before
/// `first` are skipped by their summary, so the walk reads the paths to the
/// records found, not every record that starts before `last`.
fn overlapping(
    r: &mut dyn Records,
    first: u64,
    last: u64,
    f: &mut dyn FnMut(Mapping) -> ControlFlow<()>,
) -> Result<()> {
    let mut err = None;
    r.walk(
        &(0, 0, 0),
        &(last, u64::MAX, u64::MAX),
        Some(first),
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
pub fn add(rs: &mut dyn Records, m: Mapping) -> Result<()> {
    add_with(rs, m, true, m.phys)
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
pub fn add_last(rs: &mut dyn Records, m: Mapping, from: u64) -> Result<()> {
    add_with(rs, m, false, from)
}

fn add_with(rs: &mut dyn Records, m: Mapping, right: bool, from: u64) -> Result<()> {
    let mut m = m;
    if mergeable(&m) {
        // The right neighbour starts where `m` ends, at a known key.
        if right
            && let Some(end) = m.phys.checked_add(m.len)
            && let Some(r) = record_at(rs, end, m.owner.shifted(m.len), false)?
            && r.unwritten == m.unwritten
            && r.replica == 0
        {
            rs.del(&r.key())?;
            m.len += r.len;
        }
        if let Some(l) = left_neighbour(rs, &m, from)? {
            let grown = Mapping {
                len: l.len + m.len,
                ..l
            };
            rs.put(grown.key(), grown.val())?;
            return Ok(());
        }
    }
    rs.put(m.key(), m.val())?;
    Ok(())
}

/// The record that `m` continues: same owner, ending where `m` starts on
/// the device and in the file, same flags. Looks at the records that cover
/// the block before `m` (one per owner of that block).
fn left_neighbour(rs: &mut dyn Records, m: &Mapping, from: u64) -> Result<Option<Mapping>> {
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
        && let Some(r) = record_at(rs, from, o, false)?
        && continues(&r)
    {
        return Ok(Some(r));
    }
    let mut found = None;
    overlapping(rs, before, before, &mut |r| {
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
pub fn remove(rs: &mut dyn Records, phys: u64, len: u64, owner: Owner) -> Result<()> {
    remove_as(rs, phys, len, owner, false)
}

/// [`remove`], where the owner's record covering the range likely starts at
/// block `from` (the start of the file extent the range is cut from): one
/// lookup finds it there, instead of a look at every record covering the
/// range (one per owner of a shared block). Any `from` gives the same result.
pub fn remove_in(rs: &mut dyn Records, phys: u64, len: u64, owner: Owner, from: u64) -> Result<()> {
    remove_hinted(rs, phys, len, owner, false, from)
}

/// Removes the records of `owner` over `[phys, phys+len)` that are
/// replicas (`is_replica`) or not.
pub fn remove_as(
    rs: &mut dyn Records,
    phys: u64,
    len: u64,
    owner: Owner,
    is_replica: bool,
) -> Result<()> {
    remove_hinted(rs, phys, len, owner, is_replica, phys)
}

fn remove_hinted(
    rs: &mut dyn Records,
    phys: u64,
    len: u64,
    owner: Owner,
    is_replica: bool,
    from: u64,
) -> Result<()> {
    let Some(end) = phys.checked_add(len).filter(|_| len > 0) else {
        return Err(FsError::Corrupt(format!(
            "reverse map: removing [{phys}, +{len}) of {owner}"
        )));
    };
    // The records of `owner` over the range: those that map block `phys`
    // to the same place as `owner` does (file data: the same file block).
    let mut hits = vec![];
    // Records of one owner never overlap: a record of `owner` at `from` that
    // covers the whole range is the only one.
    if let Some(back) = phys.checked_sub(from)
        && let Some(at_from) = owner.shifted_back(back)
        && let Some(r) = record_at(rs, from, at_from, is_replica)?
        && r.phys + r.len >= end
    {
        hits.push(r);
    } else {
        overlapping(rs, phys, end - 1, &mut |r| {
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
            rs.put(left.key(), left.val())?;
        } else {
            rs.del(&r.key())?;
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
            if rs.get(&right.key())?.is_some() {
                return Err(FsError::Corrupt(format!(
                    "reverse map: records of {} overlap at block {end}",
                    r.owner
                )));
            }
            rs.put(right.key(), right.val())?;
        }
    }
    if removed != len {
        return Err(FsError::Corrupt(format!(
            "reverse map: {owner} maps {removed} of blocks [{phys}, +{len}) it is said to own"
        )));
    }
    Ok(())
}

/// Records `m`, a mapping of blocks that were free: no record can overlap
/// them, so nothing is split or merged (one descent, where [`add`] makes
/// several).
pub fn add_fresh(rs: &mut dyn Records, m: Mapping) -> Result<()> {
    if rs.get(&m.key())?.is_some() {
        return Err(FsError::Corrupt(format!(
            "reverse map: block {} was free but has a record of {}",
            m.phys, m.owner
        )));
    }
    rs.put(m.key(), m.val())?;
    Ok(())
}

/// [`add_fresh`] of every mapping of `ms`, in one sorted insert (each leaf
/// read and written once per run of records in it).
pub fn add_fresh_all(rs: &mut dyn Records, ms: &[Mapping]) -> Result<()> {
    let mut items: Vec<(Key, RmapRecord)> = ms.iter().map(|m| (m.key(), m.val())).collect();
    items.sort_unstable_by_key(|(k, _)| *k);
    if let Some(w) = items.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(FsError::Corrupt(format!(
            "reverse map: block {} recorded twice as new",
            w[0].0.0
        )));
    }
    let replaced = rs.put_sorted(&items)?;
    if replaced > 0 {
        return Err(FsError::Corrupt(format!(
            "reverse map: {replaced} blocks were free but had a record"
        )));
    }
    Ok(())
}

/// Removes the record of `owner` (a replica's or not) that starts at
/// `phys`, as [`add_fresh`] made it.
pub fn remove_exact(rs: &mut dyn Records, phys: u64, owner: Owner, is_replica: bool) -> Result<()> {
    let key = Mapping {
        is_replica,
        ..Mapping::new(phys, 1, owner, false)
    }
    .key();
    match rs.get(&key)? {
        Some(v) if v.len.get() == 1 => rs.del(&key),
        _ => Err(FsError::Corrupt(format!(
            "reverse map: no one-block record of {owner} at block {phys}"
        ))),
    }
}

/// The record of `owner` (a replica's or not) starting at `phys`.
pub fn record_at(
    rs: &mut dyn Records,
    phys: u64,
    owner: Owner,
    is_replica: bool,
) -> Result<Option<Mapping>> {
    let probe = Mapping {
        is_replica,
        ..Mapping::new(phys, 1, owner, false)
    };
    match rs.get(&probe.key())? {
        Some(v) => Ok(Some(Mapping::from_kv(probe.key(), v)?)),
        None => Ok(None),
    }
}

/// Rewrites the `replica` field of an existing record.
pub fn set_replica(rs: &mut dyn Records, m: &Mapping, replica: u64) -> Result<()> {
    let m = Mapping { replica, ..*m };
    rs.put(m.key(), m.val())
}

/// Every record of a replicated pair, in key order from `lo` to `hi`
/// (physical blocks, inclusive): `f` sees each and may stop the walk.
pub fn scan_pairs(
    rs: &mut dyn Records,
    lo: u64,
    hi: u64,
    f: &mut dyn FnMut(&Mapping) -> ControlFlow<()>,
) -> Result<()> {
    let mut err = None;
    rs.walk(&(lo, 0, 0), &(hi, u64::MAX, u64::MAX), None, &mut |k, v| {
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
    })?;
    match err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Applies `layers` of pending changes (newest first) to `rs`: the removals,
/// then every set in one sorted insert (each leaf changed once for all the
/// records it gains).
pub fn apply_pending(rs: &mut dyn Records, layers: &[&Pending]) -> Result<()> {
    let mut puts = vec![];
    for (i, l) in layers.iter().enumerate().rev() {
        for (k, v) in l.iter() {
            // A newer layer's change to the key decides.
            if layers[..i].iter().any(|n| n.contains_key(k)) {
                continue;
            }
            match v {
                Some(v) => puts.push((*k, *v)),
                None => rs.del(k)?,
            }
        }
    }
    puts.sort_unstable_by_key(|(k, _)| *k);
    rs.put_sorted(&puts)?;
    Ok(())
}

/// The reverse map's pending record changes that intents read from the log
/// make (in order: each sets or removes one key's record; the last change
/// to a key decides).
pub fn pending_of(intents: &[daxfs_format::records::RmapIntent]) -> Result<Pending> {
    use daxfs_format::records::{INTENT_PUT, INTENT_REMOVE};
    let mut p = Pending::new();
    for it in intents {
        let key = (it.start.get(), it.owner.get(), it.offset.get());
        let v = match it.op.get() {
            INTENT_PUT => Some(RmapRecord {
                len: it.len,
                flags: it.flags,
                replica: it.replica,
            }),
            INTENT_REMOVE => None,
            op => {
                return Err(FsError::Corrupt(format!(
                    "reverse-map intent for block {} has unknown operation {op}",
                    key.0
                )));
            }
        };
        p.insert(key, v);
    }
    Ok(p)
}

/// Every record overlapping `[p, p+l)`, in key (physical) order. Reads
/// the nodes on the paths to the k records found: O((k + 1) log n).
pub fn query(rs: &mut dyn Records, p: u64, l: u64) -> Result<Vec<Mapping>> {
    let mut out = vec![];
    query_into(rs, p, l, &mut out)?;
    Ok(out)
}

/// [`query`], appended to `out`.
pub fn query_into(rs: &mut dyn Records, p: u64, l: u64, out: &mut Vec<Mapping>) -> Result<()> {
    if l == 0 {
        return Ok(());
    }
    overlapping(rs, p, p.saturating_add(l - 1), &mut |m| {
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

/// Counts the records (and nodes) of the reverse map: the tree's under
/// `layers` of pending changes (newest first).
pub fn census(s: &mut dyn NodeStore, root: &TreeRoot, layers: &[&Pending]) -> Result<Census> {
    let mut c = Census::default();
    walk_layered(
        s,
        root,
        layers,
        &(0, 0, 0),
        &(u64::MAX, u64::MAX, u64::MAX),
        None,
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

#[cfg(test)]
mod tests {
    use super::*;
    use daxfs_btree::MemStore;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    /// The record with key `k` in `layers` (newest first), else in the tree
    /// (what `Records::get` of a transaction or a committed view does).
    fn get_layered(
        s: &mut dyn NodeStore,
        root: &TreeRoot,
        layers: &[&Pending],
        k: &Key,
    ) -> Result<Option<RmapRecord>> {
        for l in layers {
            if let Some(v) = l.get(k) {
                return Ok(*v);
            }
        }
        Ok(tree().get(s, root, k)?)
    }

    fn rec(len: u64) -> RmapRecord {
        RmapRecord {
            len: len.into(),
            flags: 0.into(),
            replica: 0.into(),
        }
    }

    /// Reads through layers of pending changes over a tree see what applying
    /// the layers, oldest first, to the tree's records gives: random trees,
    /// random layers, random gets and walks (with and without pruning, with
    /// early stops); and `apply_pending` makes the tree hold just that.
    #[test]
    fn layered_reads_and_application_match_the_layers_applied() {
        let mut rng = SmallRng::seed_from_u64(7);
        for round in 0..40 {
            let mut s = MemStore::new();
            let mut root = TreeRoot::EMPTY;
            let mut model: BTreeMap<Key, u64> = BTreeMap::new();
            let key =
                |rng: &mut SmallRng| (rng.random_range(0..400u64), rng.random_range(0..3u64), 0);
            for _ in 0..rng.random_range(0..600) {
                let (k, l) = (key(&mut rng), rng.random_range(1..20u64));
                tree().insert(&mut s, &mut root, k, rec(l)).unwrap();
                model.insert(k, l);
            }
            // Two layers (older, newer) of sets and removals, some of keys
            // the tree holds.
            let mut layers = [Pending::new(), Pending::new()];
            for layer in &mut layers {
                for _ in 0..rng.random_range(0..60) {
                    let k = if rng.random_bool(0.5) && !model.is_empty() {
                        *model.keys().nth(rng.random_range(0..model.len())).unwrap()
                    } else {
                        key(&mut rng)
                    };
                    let v = rng
                        .random_bool(0.6)
                        .then(|| rec(rng.random_range(1..20u64)));
                    layer.insert(k, v);
                }
            }
            let mut want = model.clone();
            for layer in &layers {
                for (k, v) in layer {
                    match v {
                        Some(v) => want.insert(*k, v.len.get()),
                        None => want.remove(k),
                    };
                }
            }
            let newest_first = [&layers[1], &layers[0]];
            // Applied to a copy of the tree, the layers give the same records.
            {
                let (mut s2, mut root2) = (s.clone(), root);
                let mut tr = TreeRecords {
                    store: &mut s2,
                    root: &mut root2,
                };
                apply_pending(&mut tr, &newest_first).unwrap();
                let mut got = BTreeMap::new();
                tree()
                    .range(
                        &mut s2,
                        &root2,
                        &(0, 0, 0),
                        &(u64::MAX, u64::MAX, u64::MAX),
                        &mut |k, v| {
                            got.insert(k, v.len.get());
                            ControlFlow::Continue(())
                        },
                    )
                    .unwrap();
                assert_eq!(got, want, "round {round}: layers applied");
                tree().check(&mut s2, &root2).unwrap();
            }
            for _ in 0..50 {
                let k = key(&mut rng);
                let got = get_layered(&mut s, &root, &newest_first, &k).unwrap();
                assert_eq!(
                    got.map(|v| v.len.get()),
                    want.get(&k).copied(),
                    "round {round} key {k:?}"
                );
                let (a, b) = (rng.random_range(0..420u64), rng.random_range(0..420u64));
                let (lo, hi) = ((a.min(b), 0, 0), (a.max(b), u64::MAX, u64::MAX));
                let after = rng.random_bool(0.5).then(|| rng.random_range(0..420u64));
                let stop = rng.random_range(1..40usize);
                let mut seen = vec![];
                walk_layered(
                    &mut s,
                    &root,
                    &newest_first,
                    &lo,
                    &hi,
                    after,
                    &mut |k, v| {
                        seen.push((k, v.len.get()));
                        if seen.len() == stop {
                            ControlFlow::Break(())
                        } else {
                            ControlFlow::Continue(())
                        }
                    },
                )
                .unwrap();
                // Pruning may leave out records that end at or before
                // `after`; compare the ones that end after it.
                let keep = |&(k, l): &(Key, u64)| after.is_none_or(|f| k.0 + l > f);
                let all: Vec<(Key, u64)> = want
                    .range(lo..=hi)
                    .map(|(k, l)| (*k, *l))
                    .filter(keep)
                    .collect();
                let seen_kept: Vec<(Key, u64)> = seen.iter().copied().filter(keep).collect();
                assert!(
                    seen.windows(2).all(|w| w[0].0 < w[1].0),
                    "round {round}: out of order"
                );
                if seen.len() < stop {
                    assert_eq!(
                        seen_kept, all,
                        "round {round} {lo:?}..={hi:?} after {after:?}"
                    );
                } else {
                    // Stopped early: what was seen is a prefix.
                    assert_eq!(seen_kept[..], all[..seen_kept.len()], "round {round}");
                }
            }
        }
    }
}
