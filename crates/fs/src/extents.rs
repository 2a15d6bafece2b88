//! Per-file extent maps: where a file's extents live on media (inline in its
//! inode record, or a B+tree), and the in-memory copy the data path uses.
//!
//! A regular file keeps up to [`INLINE_EXTENTS`] extents in its inode record
//! (FORMAT.md, *InodeRecord*): a small file costs no tree node, no replica of
//! one and no reverse-map records for them. A file that grows past that gets
//! an extent tree, built from its whole map at once, and keeps it until it
//! maps nothing again; then the tree is freed and the file is inline again.
//! Directories never use this; symbolic links always have a tree.
//!
//! Every change is made to the in-memory map first, which records the tree
//! edits it implies; the caller applies those edits (or writes the inline
//! extents) inside its transaction. If the transaction aborts, the caller
//! drops the in-memory map so it is read again from the committed record.
use crate::error::{FsError, Result};
use crate::inode::FileKind;
use crate::space::rmap::Owner;
use crate::tx::Tx;
use daxfs_btree::{BTree, NodeStore};
use daxfs_format::BlockKind;
use daxfs_format::records::{
    EXTENT_UNWRITTEN, ExtentRecord, INLINE_EXTENTS, InlineExtent, InodeRecord, TreeRoot,
};
use std::collections::BTreeMap;
use std::ops::ControlFlow;

/// One mapping: file blocks `[fblock, fblock+len)` live at device blocks
/// `[phys, phys+len)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    pub fblock: u64,
    pub phys: u64,
    pub len: u64,
    pub flags: u32,
}

impl Extent {
    pub fn end(&self) -> u64 {
        self.fblock + self.len
    }
    pub fn unwritten(&self) -> bool {
        self.flags & EXTENT_UNWRITTEN != 0
    }
}

/// The most blocks one extent record holds.
pub const MAX_EXTENT_LEN: u64 = u32::MAX as u64;

/// The extent flags any version writes.
pub const EXTENT_FLAGS_KNOWN: u32 = EXTENT_UNWRITTEN;

/// Why extent `e` of inode `ino` must not be followed, if it must not: it
/// lies outside the area of file data and tree nodes (a superblock copy,
/// the log or its replica region, past the end), on free blocks (`free`:
/// the free map when loaded, else one free-space-tree lookup), or, with
/// the reverse map, where the reverse map does not record it as this
/// file's blocks at this file offset, written or unwritten as the extent
/// says (one record lookup; a walk of the records at the extent only when
/// that record is not there). What a forged or misdirected extent record
/// (checksum resealed) could point at: another file's blocks, metadata,
/// or free space that reads as stale bytes or is reused.
pub(crate) fn refusal(
    rs: &mut crate::tx::ReadStore<'_>,
    sb: &daxfs_format::Superblock,
    free: Option<&crate::space::alloc::FreeMap>,
    ino: u64,
    e: &Extent,
) -> Result<Option<String>> {
    let what = || {
        format!(
            "inode {ino}: extent at file block {} (device blocks {}..{}{})",
            e.fblock,
            e.phys,
            e.phys.saturating_add(e.len),
            if e.unwritten() { ", unwritten" } else { "" }
        )
    };
    if crate::tx::outside_data_area(sb, e.phys, e.len) {
        return Ok(Some(format!(
            "{} points outside the file data area (a superblock, the log, its replica or past the end of the device)",
            what()
        )));
    }
    let is_free = match free {
        Some(f) => !f.overlapping(e.phys, e.len).is_empty(),
        None => crate::tx::free_tree()
            .last_le(rs, &sb.free_tree, &(e.phys + e.len - 1))?
            .is_some_and(|(st, l)| st.saturating_add(l) > e.phys),
    };
    if is_free {
        return Ok(Some(format!("{} points at free blocks", what())));
    }
    if sb.incompat.get() & daxfs_format::superblock::INCOMPAT_RMAP == 0 {
        return Ok(None);
    }
    let root = sb.rmap_tree;
    let mut recs = rs.rmap(root);
    let owner = |fblock| Owner::Data { ino, fblock };
    if let Some(m) = crate::space::rmap::record_at(&mut recs, e.phys, owner(e.fblock), false)?
        && m.len >= e.len
        && m.unwritten == e.unwritten()
    {
        return Ok(None);
    }
    // Records of this file continuing each other are merged: the blocks
    // may lie inside records that start before the extent or end inside it.
    let end = e.phys + e.len;
    let mut at = e.phys;
    while at < end {
        let fb = e.fblock + (at - e.phys);
        let mut next = None;
        for m in crate::space::rmap::query(&mut recs, at, 1)? {
            if let Owner::Data { ino: i, fblock } = m.owner
                && i == ino
                && !m.is_replica
                && m.phys <= at
                && fblock.checked_add(at - m.phys) == Some(fb)
                && m.unwritten == e.unwritten()
            {
                next = Some(m.phys + m.len);
                break;
            }
        }
        match next {
            Some(n) if n > at => at = n,
            _ => {
                return Ok(Some(format!(
                    "{} points at blocks the reverse map does not give this file there{}",
                    what(),
                    if e.unwritten() {
                        " as unwritten"
                    } else {
                        " as written"
                    }
                )));
            }
        }
    }
    Ok(None)
}

/// The extent tree of inode `ino`.
pub fn tree(ino: u64) -> BTree<u64, ExtentRecord> {
    BTree::new(BlockKind::ExtentTree, ino)
}

/// A record's inline extents, in order, when it keeps them inline (`None`:
/// its extents are in `tree`). Only the inline area's own rules are checked
/// here: the flag only on a regular file and only with an empty tree, a
/// count the array holds. The extents themselves are checked by
/// [`ExtentMap::load`] as a tree's are.
pub fn inline_extents(ino: u64, rec: &InodeRecord) -> Result<Option<Vec<Extent>>> {
    let ex = rec
        .inline_extents()
        .map_err(|e| FsError::Corrupt(format!("inode {ino}: {e}")))?;
    if !rec.extents_inline() {
        return Ok(None);
    }
    let kind = FileKind::of_mode(rec.mode.get());
    if kind != Some(FileKind::File) {
        return Err(FsError::Corrupt(format!(
            "inode {ino}: inline extents on a {}",
            kind.map_or("file of unknown type", |k| k.name())
        )));
    }
    if rec.tree.block.get() != 0 || rec.tree.height.get() != 0 {
        return Err(FsError::Corrupt(format!(
            "inode {ino}: extents marked inline but the extent tree at block {} is not empty",
            rec.tree.block.get()
        )));
    }
    Ok(Some(
        ex.iter()
            .map(|x| Extent {
                fblock: x.fblock.get(),
                phys: x.phys.get(),
                len: x.len.get().into(),
                flags: x.flags.get(),
            })
            .collect(),
    ))
}

/// An extent as an extent-tree value.
fn tree_record(e: &Extent) -> Result<ExtentRecord> {
    let len = u32::try_from(e.len).map_err(|_| FsError::Invalid("extent too long".into()))?;
    Ok(ExtentRecord {
        phys: e.phys.into(),
        len: len.into(),
        flags: e.flags.into(),
    })
}

/// An edit of the on-media tree.
#[derive(Clone, Copy, Debug)]
enum Edit {
    Remove(u64),
    Put(Extent),
}

/// In-memory extent map of one file, with the tree edits not yet applied.
#[derive(Debug, Default, Clone)]
pub struct ExtentMap {
    map: BTreeMap<u64, Extent>,
    edits: Vec<Edit>,
    /// Mapping changes (added or removed pieces) for the reverse map, in
    /// order, each with the first device block of the extent it came from
    /// or joined (where the reverse-map record holding a removed piece, or
    /// continued by an added one, likely starts).
    changes: Vec<(bool, Extent, u64)>,
    /// True when some extent may be shared with another file (set by clones;
    /// computed from the refcount tree when the map is loaded). While false,
    /// writes over written blocks may go in place without a refcount lookup.
    pub maybe_shared: bool,
    /// File-block ranges (start -> end) known to be this file's alone since
    /// sharing last touched the map: written by a transactional write, which
    /// leaves every block it covers private. Writes inside them go in place
    /// even while `maybe_shared` is set.
    private: BTreeMap<u64, u64>,
    /// The file this map belongs to (for event records).
    pub ino: u64,
    /// Blocks mapped (kept up to date, so commits need not count them).
    nblocks: u64,
}

impl ExtentMap {
    /// Reads a file's whole extent map: its inline extents or its tree.
    /// A record whose inline area or extents are impossible is
    /// [`FsError::Corrupt`], naming the inode.
    pub fn load(s: &mut dyn NodeStore, ino: u64, rec: &InodeRecord) -> Result<ExtentMap> {
        let mut map = BTreeMap::new();
        let mut bad = None;
        let mut prev_end = 0u64;
        // Ends past the largest file or device overflow byte offsets.
        let max = daxfs_format::MAX_FILE_BLOCKS;
        let mut add = |e: Extent| {
            let past = |a: u64| a.checked_add(e.len).is_none_or(|end| end > max);
            if e.len == 0
                || e.fblock < prev_end
                || e.phys == 0
                || past(e.fblock)
                || past(e.phys)
                || e.flags & !EXTENT_FLAGS_KNOWN != 0
            {
                bad = Some(e.fblock);
                return ControlFlow::Break(());
            }
            prev_end = e.end();
            map.insert(e.fblock, e);
            ControlFlow::Continue(())
        };
        match inline_extents(ino, rec)? {
            Some(ex) => {
                for e in ex {
                    if add(e).is_break() {
                        break;
                    }
                }
            }
            None => {
                tree(ino).range(s, &rec.tree, &0, &u64::MAX, &mut |fb, r| {
                    add(Extent {
                        fblock: fb,
                        phys: r.phys.get(),
                        len: r.len.get().into(),
                        flags: r.flags.get(),
                    })
                })?;
            }
        }
        if let Some(fb) = bad {
            return Err(FsError::Corrupt(format!(
                "inode {ino}: extent at file block {fb} is empty, overlaps, is out of range or has unknown flags"
            )));
        }
        let nblocks = map.values().map(|e: &Extent| e.len).sum();
        Ok(ExtentMap {
            map,
            edits: vec![],
            changes: vec![],
            maybe_shared: false,
            private: BTreeMap::new(),
            ino,
            nblocks,
        })
    }

    /// Some extent may now be shared (a clone or dedupe touched the file):
    /// no range is known private any more.
    pub fn mark_shared(&mut self) {
        self.maybe_shared = true;
        self.private.clear();
    }

    /// File blocks `[b0, b1)` are known to be this file's alone.
    pub fn note_private(&mut self, b0: u64, b1: u64) {
        if !self.maybe_shared || b0 >= b1 {
            return;
        }
        let (mut s, mut e) = (b0, b1);
        let touching: Vec<(u64, u64)> = self
            .private
            .range(..=b1)
            .filter(|(_, end)| **end >= b0)
            .map(|(a, b)| (*a, *b))
            .collect();
        for (a, b) in touching {
            self.private.remove(&a);
            s = s.min(a);
            e = e.max(b);
        }
        self.private.insert(s, e);
    }

    /// Whether writes over file blocks `[b0, b1)` cannot reach a block
    /// another file shares.
    pub fn is_private(&self, b0: u64, b1: u64) -> bool {
        !self.maybe_shared
            || self
                .private
                .range(..=b0)
                .next_back()
                .is_some_and(|(_, e)| *e >= b1)
    }

    /// Extents overlapping `[fb, fb+len)`, in order.
    pub fn overlapping(&self, fb: u64, len: u64) -> Vec<Extent> {
        let end = fb.saturating_add(len);
        let mut out = vec![];
        if let Some((_, e)) = self.map.range(..fb).next_back()
            && e.end() > fb
        {
            out.push(*e);
        }
        out.extend(self.map.range(fb..end).map(|(_, e)| *e));
        out
    }

    /// Extents overlapping `[fb, fb+len)`, in order, without allocating.
    pub fn overlapping_iter(&self, fb: u64, len: u64) -> impl Iterator<Item = Extent> + '_ {
        let end = fb.saturating_add(len);
        let first = self
            .map
            .range(..fb)
            .next_back()
            .map(|(_, e)| *e)
            .filter(|e| e.end() > fb);
        first
            .into_iter()
            .chain(self.map.range(fb..end).map(|(_, e)| *e))
    }

    /// The extent containing file block `fb`.
    pub fn find(&self, fb: u64) -> Option<Extent> {
        self.map
            .range(..=fb)
            .next_back()
            .map(|(_, e)| *e)
            .filter(|e| e.end() > fb)
    }

    /// Every extent in order.
    pub fn iter(&self) -> std::collections::btree_map::Values<'_, u64, Extent> {
        self.map.values()
    }

    /// The last extent starting before file block `fb`.
    pub fn last_before(&self, fb: u64) -> Option<Extent> {
        self.map.range(..fb).next_back().map(|(_, e)| *e)
    }

    /// The first extent starting after file block `fb`.
    pub fn first_after(&self, fb: u64) -> Option<Extent> {
        self.map
            .range(fb.saturating_add(1)..)
            .next()
            .map(|(_, e)| *e)
    }

    /// Blocks mapped.
    pub fn blocks(&self) -> u64 {
        self.nblocks
    }

    fn remove_key(&mut self, fb: u64) {
        if let Some(e) = self.map.remove(&fb) {
            self.nblocks -= e.len;
        }
        self.edits.push(Edit::Remove(fb));
    }

    fn put(&mut self, e: Extent) {
        if let Some(old) = self.map.insert(e.fblock, e) {
            self.nblocks -= old.len;
        }
        self.nblocks += e.len;
        self.edits.push(Edit::Put(e));
    }

    /// Removes the mappings of `[fb, fb+len)`, splitting extents at the edges.
    /// Returns the removed pieces.
    pub fn unmap(&mut self, fb: u64, len: u64) -> Vec<Extent> {
        let end = fb.saturating_add(len);
        let mut removed = vec![];
        for e in self.overlapping(fb, len) {
            self.remove_key(e.fblock);
            if e.fblock < fb {
                self.put(Extent {
                    len: fb - e.fblock,
                    ..e
                });
            }
            if e.end() > end {
                let cut = end - e.fblock;
                self.put(Extent {
                    fblock: end,
                    phys: e.phys + cut,
                    len: e.end() - end,
                    flags: e.flags,
                });
            }
            let s = e.fblock.max(fb);
            let t = e.end().min(end);
            let piece = Extent {
                fblock: s,
                phys: e.phys + (s - e.fblock),
                len: t - s,
                flags: e.flags,
            };
            self.changes.push((false, piece, e.phys));
            removed.push(piece);
        }
        removed
    }

    /// Maps `[fb, fb+len)` (which must be unmapped) to `phys`, merging with a
    /// neighbour that continues both the file and the device range.
    pub fn map(&mut self, mut e: Extent) {
        let at = self.changes.len();
        self.changes.push((true, e, e.phys));
        if let Some((_, l)) = self.map.range(..e.fblock).next_back()
            && l.end() == e.fblock
            && l.phys + l.len == e.phys
            && l.flags == e.flags
            && l.len + e.len <= MAX_EXTENT_LEN
        {
            let l = *l;
            if let Some(c) = self.changes.get_mut(at) {
                c.2 = l.phys;
            }
            self.remove_key(l.fblock);
            e = Extent {
                fblock: l.fblock,
                phys: l.phys,
                len: l.len + e.len,
                flags: e.flags,
            };
        }
        if let Some(r) = self.map.get(&e.end()).copied()
            && e.phys + e.len == r.phys
            && r.flags == e.flags
            && r.len + e.len <= MAX_EXTENT_LEN
        {
            self.remove_key(r.fblock);
            e.len += r.len;
        }
        self.put(e);
    }

    /// Sets `flags` on every mapped block of `[fb, fb+len)`.
    pub fn set_flags(&mut self, fb: u64, len: u64, flags: u32) {
        for piece in self.unmap(fb, len) {
            self.map(Extent { flags, ..piece });
        }
    }

    /// The file blocks `[first, end)` that the mapping changes waiting to be
    /// applied touch, if any.
    pub fn changed_span(&self) -> Option<(u64, u64)> {
        let mut it = self.changes.iter().map(|(_, e, _)| (e.fblock, e.end()));
        let first = it.next()?;
        Some(it.fold(first, |(a, b), (s, t)| (a.min(s), b.max(t))))
    }

    /// True when edits are waiting to be applied.
    pub fn has_edits(&self) -> bool {
        !self.edits.is_empty()
    }

    /// Writes the map to the file's record (`rec`, the committed record the
    /// map was loaded from, changed by earlier applies of this map): inline
    /// while the file is inline and the map has at most [`INLINE_EXTENTS`];
    /// a tree built from the whole map when an inline file grows past that;
    /// the pending edits applied to the tree of a file that has one, except
    /// that a regular file left mapping nothing frees its tree and is inline
    /// again. Then applies the mapping changes to the reverse map.
    pub fn apply(&mut self, s: &mut Tx<'_>, rec: &mut InodeRecord) -> Result<()> {
        let ino = rec.ino.get();
        let t = tree(ino);
        let regular = FileKind::of_mode(rec.mode.get()) == Some(FileKind::File);
        if rec.extents_inline() && self.map.len() <= INLINE_EXTENTS {
            self.edits.clear();
            let ex = self
                .map
                .values()
                .map(|e| {
                    let r = tree_record(e)?;
                    Ok(InlineExtent::new(
                        e.fblock,
                        e.phys,
                        r.len.get(),
                        r.flags.get(),
                    ))
                })
                .collect::<Result<Vec<_>>>()?;
            rec.set_inline_extents(&ex)
                .map_err(|e| FsError::Invalid(format!("inode {ino}: {e}")))?;
        } else if rec.extents_inline() {
            // Grown past the record: the whole map goes into a new tree.
            self.edits.clear();
            let items = self
                .map
                .values()
                .map(|e| Ok((e.fblock, tree_record(e)?)))
                .collect::<Result<Vec<_>>>()?;
            let mut root = TreeRoot::EMPTY;
            t.insert_sorted(s, &mut root, &items)?;
            rec.tree = root;
            rec.clear_inline_extents();
        } else if regular && self.map.is_empty() {
            // Maps nothing: the tree's nodes are freed (their reverse-map
            // records and replicas go with them) and the file is inline.
            self.edits.clear();
            let mut root = rec.tree;
            t.destroy(s, &mut root)?;
            rec.tree = root;
            rec.set_inline_extents(&[])
                .map_err(|e| FsError::Invalid(format!("inode {ino}: {e}")))?;
        } else {
            let mut root = rec.tree;
            // Collapse to the final state of each touched key, so an extent
            // put and later removed costs nothing.
            let mut last: BTreeMap<u64, Option<Extent>> = BTreeMap::new();
            for ed in self.edits.drain(..) {
                match ed {
                    Edit::Remove(k) => last.insert(k, None),
                    Edit::Put(e) => last.insert(e.fblock, Some(e)),
                };
            }
            for (k, v) in last {
                match v {
                    None => {
                        t.remove(s, &mut root, &k)?;
                    }
                    Some(e) => {
                        t.insert(s, &mut root, k, tree_record(&e)?)?;
                    }
                }
            }
            rec.tree = root;
        }
        // The end of the last extent: a piece added there has nothing after
        // it in the reverse map once every change is applied.
        let end = self.map.last_key_value().map_or(0, |(_, x)| x.end());
        for (added, e, from) in std::mem::take(&mut self.changes) {
            let owner = Owner::Data {
                ino,
                fblock: e.fblock,
            };
            if added && e.end() >= end {
                s.rmap_add_last(e.phys, e.len, owner, e.unwritten(), from)?;
            } else if added {
                s.rmap_add(e.phys, e.len, owner, e.unwritten())?;
            } else {
                s.rmap_remove_in(e.phys, e.len, owner, from)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(fblock: u64, phys: u64, len: u64) -> Extent {
        Extent {
            fblock,
            phys,
            len,
            flags: 0,
        }
    }

    #[test]
    fn map_merges_and_unmap_splits() {
        let mut m = ExtentMap::default();
        m.map(ext(0, 100, 4));
        m.map(ext(4, 104, 4));
        assert_eq!(m.iter().copied().collect::<Vec<_>>(), vec![ext(0, 100, 8)]);
        let removed = m.unmap(2, 3);
        assert_eq!(removed, vec![ext(2, 102, 3)]);
        assert_eq!(
            m.iter().copied().collect::<Vec<_>>(),
            vec![ext(0, 100, 2), ext(5, 105, 3)]
        );
        assert_eq!(m.find(6), Some(ext(5, 105, 3)));
        assert_eq!(m.find(3), None);
    }

    fn inline_record(ino: u64, ex: &[InlineExtent]) -> InodeRecord {
        let mut r = crate::inode::new_record(ino, FileKind::File, 0o644, 0, 0, 1);
        assert!(r.extents_inline(), "a new regular file is inline");
        r.set_inline_extents(ex).unwrap();
        r
    }

    fn loaded(r: &InodeRecord) -> Result<Vec<Extent>> {
        let mut s = daxfs_btree::MemStore::new();
        Ok(ExtentMap::load(&mut s, r.ino.get(), r)?
            .iter()
            .copied()
            .collect())
    }

    #[test]
    fn inline_extents_load_as_a_map() {
        let ex = [
            InlineExtent::new(0, 100, 2, 0),
            InlineExtent::new(2, 300, 1, EXTENT_UNWRITTEN),
            InlineExtent::new(10, 50, 5, 0),
        ];
        let r = inline_record(7, &ex);
        let m = loaded(&r).unwrap();
        assert_eq!(
            m,
            vec![
                ext(0, 100, 2),
                Extent {
                    flags: EXTENT_UNWRITTEN,
                    ..ext(2, 300, 1)
                },
                ext(10, 50, 5)
            ]
        );
        let mut s = daxfs_btree::MemStore::new();
        assert_eq!(ExtentMap::load(&mut s, 7, &r).unwrap().blocks(), 8);
        // No extents at all: an empty map.
        assert!(loaded(&inline_record(7, &[])).unwrap().is_empty());
        // Without the flag the tree is read (here: empty).
        let mut r = r;
        r.clear_inline_extents();
        assert!(loaded(&r).unwrap().is_empty());
        assert_eq!(inline_extents(7, &r).unwrap(), None);
    }

    #[test]
    fn bad_inline_areas_are_corrupt_naming_the_inode() {
        let ok = [
            InlineExtent::new(0, 100, 2, 0),
            InlineExtent::new(4, 200, 1, 0),
        ];
        let mut cases: Vec<(&str, InodeRecord)> = vec![];
        let mut r = inline_record(9, &ok);
        r.inline_count = 5.into();
        cases.push(("count 5", r));
        let mut r = inline_record(9, &ok);
        r.inline_count = u32::MAX.into();
        cases.push(("count 2^32 - 1", r));
        let mut r = inline_record(9, &ok);
        r.flags = 0.into();
        cases.push(("a count without the flag", r));
        let mut r = inline_record(9, &ok);
        r.inline[1].len = 0.into();
        cases.push(("zero length", r));
        let mut r = inline_record(9, &ok);
        r.inline[1].fblock = 1.into();
        cases.push(("overlapping", r));
        let mut r = inline_record(9, &ok);
        r.inline = [ok[1], ok[0], InlineExtent::ZERO, InlineExtent::ZERO];
        cases.push(("out of order", r));
        let mut r = inline_record(9, &ok);
        r.inline[0].phys = 0.into();
        cases.push(("device block 0", r));
        let mut r = inline_record(9, &ok);
        r.inline[1].phys = (u64::MAX - 1).into();
        cases.push(("past the largest device", r));
        let mut r = inline_record(9, &ok);
        r.inline[1].fblock = daxfs_format::MAX_FILE_BLOCKS.into();
        cases.push(("past the largest file", r));
        let mut r = inline_record(9, &ok);
        r.tree = TreeRoot::new(77, 1, 0);
        cases.push(("with a tree", r));
        for kind in [FileKind::Dir, FileKind::Symlink] {
            let mut r = inline_record(9, &ok);
            r.mode = (kind.mode_bits() | 0o755).into();
            cases.push((kind.name(), r));
        }
        for (what, r) in cases {
            let e = loaded(&r).unwrap_err();
            assert!(
                matches!(&e, FsError::Corrupt(m) if m.starts_with("inode 9:")),
                "{what}: {e:?}"
            );
        }
    }

    #[test]
    fn set_flags_converts_middle() {
        let mut m = ExtentMap::default();
        m.map(Extent {
            fblock: 0,
            phys: 10,
            len: 10,
            flags: EXTENT_UNWRITTEN,
        });
        m.set_flags(3, 2, 0);
        let v: Vec<_> = m.iter().map(|e| (e.fblock, e.len, e.flags)).collect();
        assert_eq!(v, vec![(0, 3, 1), (3, 2, 0), (5, 5, 1)]);
    }
}
