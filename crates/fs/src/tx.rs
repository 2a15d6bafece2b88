//! Transactions: every change to metadata is staged here and committed
//! atomically through the journal.
//!
//! A [`Tx`] is the [`NodeStore`] of every B+tree: it hands out staged copies of
//! nodes, allocates and frees blocks through the in-memory free map, and at
//! commit brings the free-space tree up to date, seals every changed block and
//! writes them through the journal. Dropping a `Tx` without committing aborts
//! it: staged blocks are discarded, the superblock and the free map are put
//! back, and nothing reached media (data written into blocks allocated by the
//! aborted transaction stays in blocks that are still free).
use crate::error::{FsError, Result};
use crate::journal::{self, LogGeometry};
use crate::space::alloc::FreeMap;
use crate::space::rmap::{self, Mapping, Owner};
use crate::space::{badblocks, refcount};
use daxfs_btree::{BTree, NodeStore, TreeError};
use daxfs_device::Device;
use daxfs_format::block::{BlockKind, Expect, verify_block};
use daxfs_format::records::TreeRoot;
use daxfs_format::superblock::INCOMPAT_RMAP;
use daxfs_format::{BLOCK_SIZE, BLOCK_SIZE_U64, Block, BlockNo, Superblock, seal_block};
use std::collections::HashMap;

/// State guarded by the file system's metadata lock.
#[derive(Debug)]
pub struct Meta {
    /// The superblock as of the last commit (plus the running transaction's changes).
    pub sb: Superblock,
    /// Free space as of the last commit, minus the running transaction's allocations.
    pub free: FreeMap,
    /// True once `free` has been read from the free-space tree.
    pub free_loaded: bool,
    /// Sequence number the next commit will carry.
    pub seq: u64,
    /// Set when the file system has shut down after an unrepairable error.
    pub shutdown: Option<String>,
    /// Blocks a commit may never touch again until the log is re-read (none yet).
    pub geo: LogGeometry,
    pub fs_id: u64,
    /// Verified copies of committed metadata blocks.
    pub cache: NodeCache,
    /// Committed mapping events, when recording is on.
    pub events: Option<Vec<crate::events::MapEvent>>,
}

/// Verified copies of committed metadata blocks, so a node read costs a copy
/// instead of a device read and a checksum. Holds only what is on media (or
/// what the last commit put there); freed blocks are dropped. Bounded: when
/// full it starts over.
#[derive(Debug, Default)]
pub struct NodeCache {
    blocks: HashMap<u64, Box<Block>>,
}

impl NodeCache {
    /// Most blocks kept (64 MiB).
    pub const CAPACITY: usize = 16384;

    /// A cached block, if its header says it is what the caller expects.
    pub fn get(&self, b: u64, kind: BlockKind, owner: Option<u64>) -> Option<Box<Block>> {
        let blk = self.blocks.get(&b)?;
        let h = daxfs_format::block::header(&blk[..]).ok()?;
        (h.kind == kind as u8 && owner.is_none_or(|o| h.owner.get() == o)).then(|| blk.clone())
    }

    pub fn put(&mut self, b: u64, blk: Box<Block>) {
        if self.blocks.len() >= Self::CAPACITY && !self.blocks.contains_key(&b) {
            self.blocks.clear();
        }
        self.blocks.insert(b, blk);
    }

    /// Drops blocks `[s, s+l)`.
    pub fn forget(&mut self, s: u64, l: u64) {
        if l as usize > self.blocks.len() {
            self.blocks.retain(|b, _| !(s..s + l).contains(b));
        } else {
            for b in s..s + l {
                self.blocks.remove(&b);
            }
        }
    }

    /// Drops everything (after an error that may have left media and cache apart).
    pub fn clear(&mut self) {
        self.blocks.clear();
    }
}

/// A change to the free-space tree, applied at commit.
#[derive(Clone, Copy, Debug)]
enum Delta {
    Alloc(u64, u64),
    Free(u64, u64),
}

/// A change to the reverse map for a tree node, applied at commit (a node is
/// allocated while some tree, perhaps the reverse map itself, is mid-change).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RmapDelta {
    Add(u64, Owner),
    Remove(u64, Owner),
}

/// A running transaction.
pub struct Tx<'a> {
    dev: &'a dyn Device,
    pub meta: &'a mut Meta,
    sb_before: Superblock,
    dirty: HashMap<u64, Box<Block>>,
    deltas: Vec<Delta>,
    rmap_deltas: Vec<RmapDelta>,
    events: Vec<crate::events::MapEvent>,
    allocated: Vec<(u64, u64)>,
    freed: Vec<(u64, u64)>,
    done: bool,
}

/// The free-space tree (start block -> length).
pub fn free_tree() -> BTree<u64, u64> {
    BTree::new(BlockKind::FreeTree, 0)
}

impl<'a> Tx<'a> {
    /// Starts a transaction. Loads the free map on first use.
    pub fn begin(dev: &'a dyn Device, meta: &'a mut Meta) -> Result<Tx<'a>> {
        if let Some(why) = &meta.shutdown {
            return Err(FsError::Shutdown(why.clone()));
        }
        let sb_before = meta.sb;
        let mut tx = Tx {
            dev,
            meta,
            sb_before,
            dirty: HashMap::new(),
            deltas: vec![],
            rmap_deltas: vec![],
            events: vec![],
            allocated: vec![],
            freed: vec![],
            done: false,
        };
        if !tx.meta.free_loaded {
            let root = tx.meta.sb.free_tree;
            let mut map = FreeMap::default();
            let mut bad = None;
            // Free space lies between the log and superblock copy B.
            let lo = tx.meta.sb.log_start.get() + tx.meta.sb.log_blocks.get();
            let hi = tx.meta.geo.sb_copy;
            free_tree().range(&mut tx, &root, &0, &u64::MAX, &mut |s, l| {
                if s < lo || s.checked_add(l).is_none_or(|e| e > hi) || !map.insert(s, l) {
                    bad = Some(s);
                    return std::ops::ControlFlow::Break(());
                }
                std::ops::ControlFlow::Continue(())
            })?;
            if let Some(s) = bad {
                return Err(FsError::Corrupt(format!(
                    "free-space tree: extent at block {s} is out of range or overlaps another"
                )));
            }
            tx.meta.free = map;
            tx.meta.free_loaded = true;
        }
        Ok(tx)
    }

    pub fn dev(&self) -> &'a dyn Device {
        self.dev
    }

    /// Free blocks available to this transaction.
    pub fn free_blocks(&self) -> u64 {
        self.meta.free.total()
    }

    /// Allocates up to `want` contiguous blocks (at least one); see
    /// [`FreeMap::pick`] for the policy.
    pub fn alloc_extent(&mut self, want: u64, goal: Option<u64>) -> Result<(u64, u64)> {
        let (s, l) = self.meta.free.pick(want, goal).ok_or_else(|| {
            FsError::NoSpace(format!(
                "allocating {want} blocks ({} free in {} extents)",
                self.meta.free.total(),
                self.meta.free.extents()
            ))
        })?;
        if !self.meta.free.remove(s, l) {
            return Err(FsError::Corrupt(format!(
                "free map lost blocks [{s}, +{l})"
            )));
        }
        self.allocated.push((s, l));
        self.deltas.push(Delta::Alloc(s, l));
        Ok((s, l))
    }

    /// Frees `[s, s+l)`: back in the free-space tree at commit, reusable only
    /// after the commit is durable.
    pub fn free_extent(&mut self, s: u64, l: u64) {
        if l as usize > self.dirty.len() {
            self.dirty.retain(|b, _| !(s..s + l).contains(b));
        } else {
            for b in s..s + l {
                self.dirty.remove(&b);
            }
        }
        self.meta.cache.forget(s, l);
        // A block allocated by this transaction whose allocation has not yet
        // reached the free-space tree: cancel both instead of applying both
        // (applying both makes the free-space tree split and merge the same
        // node round after round).
        if let Some(i) = self
            .deltas
            .iter()
            .position(|d| matches!(d, Delta::Alloc(a, b) if *a == s && *b == l))
        {
            self.deltas.swap_remove(i);
            self.freed.push((s, l));
            return;
        }
        self.freed.push((s, l));
        self.deltas.push(Delta::Free(s, l));
    }

    /// Reads a block as it is in this transaction, verified against `expect`.
    pub fn read_meta(
        &mut self,
        b: u64,
        kind: BlockKind,
        owner: Option<u64>,
    ) -> Result<Box<Block>, TreeError> {
        if let Some(blk) = self.dirty.get(&b) {
            return Ok(blk.clone());
        }
        if let Some(blk) = self.meta.cache.get(b, kind, owner) {
            return Ok(blk);
        }
        let blk = read_verified(self.dev, b, kind, owner, self.meta.fs_id)?;
        self.meta.cache.put(b, blk.clone());
        Ok(blk)
    }

    /// Applies one change to the free-space tree. Records are replaced or
    /// added before any is removed, so the tree never empties and regrows
    /// (which would free and allocate its root node on every update).
    fn apply_delta(&mut self, d: Delta) -> Result<()> {
        let mut root = self.meta.sb.free_tree;
        let t = free_tree();
        match d {
            Delta::Alloc(s, l) => {
                let Some((fs, fl)) = t.last_le(self, &root, &s)? else {
                    return Err(FsError::Corrupt(format!(
                        "free-space tree lacks allocated blocks [{s}, +{l})"
                    )));
                };
                if fs + fl < s + l {
                    return Err(FsError::Corrupt(format!(
                        "free-space tree lacks allocated blocks [{s}, +{l})"
                    )));
                }
                if fs + fl > s + l {
                    t.insert(self, &mut root, s + l, fs + fl - (s + l))?;
                }
                if s > fs {
                    t.insert(self, &mut root, fs, s - fs)?;
                } else {
                    t.remove(self, &mut root, &fs)?;
                }
                self.meta.sb.free_blocks = self.meta.sb.free_blocks.get().saturating_sub(l).into();
            }
            Delta::Free(s, l) => {
                let lo = self.meta.sb.log_start.get() + self.meta.sb.log_blocks.get();
                if s < lo || s.checked_add(l).is_none_or(|e| e > self.meta.geo.sb_copy) {
                    return Err(FsError::Corrupt(format!(
                        "freeing blocks [{s}, +{l}), outside the data area"
                    )));
                }
                let prev = t.last_le(self, &root, &s)?;
                if let Some((ps, pl)) = prev
                    && ps + pl > s
                {
                    return Err(FsError::Corrupt(format!(
                        "double free of blocks [{s}, +{l})"
                    )));
                }
                let next = t.first_ge(self, &root, &s)?;
                if let Some((ns, _)) = next
                    && ns < s + l
                {
                    return Err(FsError::Corrupt(format!(
                        "double free of blocks [{s}, +{l})"
                    )));
                }
                let next = next.filter(|&(ns, _)| ns == s + l);
                let extra = next.map_or(0, |(_, nl)| nl);
                match prev {
                    Some((ps, pl)) if ps + pl == s => {
                        t.insert(self, &mut root, ps, pl + l + extra)?;
                    }
                    _ => {
                        t.insert(self, &mut root, s, l + extra)?;
                    }
                }
                if let Some((ns, _)) = next {
                    t.remove(self, &mut root, &ns)?;
                }
                self.meta.sb.free_blocks = self.meta.sb.free_blocks.get().saturating_add(l).into();
            }
        }
        self.meta.sb.free_tree = root;
        Ok(())
    }

    /// Brings the free-space tree up to date. Changing it may allocate or free
    /// its own nodes, which queues more changes: repeat until none are left.
    fn sync_free_tree(&mut self) -> Result<()> {
        for _round in 0..64 {
            if self.deltas.is_empty() && self.rmap_deltas.is_empty() {
                return Ok(());
            }
            let rds = std::mem::take(&mut self.rmap_deltas);
            for d in rds {
                let mut root = self.meta.sb.rmap_tree;
                match d {
                    RmapDelta::Add(b, owner) => rmap::add(
                        self,
                        &mut root,
                        Mapping {
                            phys: b,
                            len: 1,
                            owner,
                            unwritten: false,
                        },
                    )?,
                    RmapDelta::Remove(b, owner) => rmap::remove(self, &mut root, b, 1, owner)?,
                }
                self.meta.sb.rmap_tree = root;
            }
            let ds = std::mem::take(&mut self.deltas);
            for d in ds {
                self.apply_delta(d)?;
            }
        }
        Err(FsError::Corrupt(
            "free-space and reverse-map update does not converge".into(),
        ))
    }

    /// Records a mapping event (kept only if recording is on and the
    /// transaction commits).
    pub fn record(&mut self, e: crate::events::MapEvent) {
        if self.meta.events.is_some() {
            self.events.push(e);
        }
    }

    /// True when the file system keeps a reverse map.
    pub fn rmap_enabled(&self) -> bool {
        self.meta.sb.incompat.get() & INCOMPAT_RMAP != 0
    }

    /// Records in the reverse map that `owner` maps `[phys, phys+len)`.
    pub fn rmap_add(&mut self, phys: u64, len: u64, owner: Owner, unwritten: bool) -> Result<()> {
        if !self.rmap_enabled() {
            return Ok(());
        }
        let mut root = self.meta.sb.rmap_tree;
        rmap::add(
            self,
            &mut root,
            Mapping {
                phys,
                len,
                owner,
                unwritten,
            },
        )?;
        self.meta.sb.rmap_tree = root;
        Ok(())
    }

    /// Records in the reverse map that `owner` no longer maps `[phys, phys+len)`.
    pub fn rmap_remove(&mut self, phys: u64, len: u64, owner: Owner) -> Result<()> {
        if !self.rmap_enabled() {
            return Ok(());
        }
        let mut root = self.meta.sb.rmap_tree;
        rmap::remove(self, &mut root, phys, len, owner)?;
        self.meta.sb.rmap_tree = root;
        Ok(())
    }

    /// Adds one owner to every block of `[p, p+l)` (a clone shares it).
    pub fn share_extent(&mut self, p: u64, l: u64) -> Result<()> {
        let mut root = self.meta.sb.refcount_tree;
        refcount::adjust(self, &mut root, p, l, true)?;
        self.meta.sb.refcount_tree = root;
        Ok(())
    }

    /// Removes one owner from every block of `[p, p+l)`; blocks whose last
    /// owner went are freed, except known-bad ones, which stay quarantined.
    pub fn release_extent(&mut self, p: u64, l: u64) -> Result<()> {
        let mut root = self.meta.sb.refcount_tree;
        let freed = if root.is_empty() {
            vec![(p, l)]
        } else {
            refcount::adjust(self, &mut root, p, l, false)?
        };
        self.meta.sb.refcount_tree = root;
        let broot = self.meta.sb.badblock_tree;
        for (s, len) in freed {
            let bad = badblocks::overlapping(self, &broot, s, len)?;
            let mut at = s;
            for (bs, bl) in bad {
                if bs > at {
                    self.free_extent(at, bs - at);
                }
                self.meta.cache.forget(bs, bl);
                at = bs + bl;
            }
            if at < s + len {
                self.free_extent(at, s + len - at);
            }
        }
        Ok(())
    }

    /// Takes the free parts of `[p, p+l)` out of free space (they are bad).
    /// Returns the pieces taken.
    pub fn quarantine_free(&mut self, p: u64, l: u64) -> Result<Vec<(u64, u64)>> {
        let pieces = self.meta.free.overlapping(p, l);
        for &(s, len) in &pieces {
            if !self.meta.free.remove(s, len) {
                return Err(FsError::Corrupt(format!(
                    "free map lost blocks [{s}, +{len})"
                )));
            }
            self.allocated.push((s, len));
            self.deltas.push(Delta::Alloc(s, len));
        }
        Ok(pieces)
    }

    /// Splits `[p, p+l)` into pieces of uniform owner count.
    pub fn share_counts(&mut self, p: u64, l: u64) -> Result<Vec<refcount::Piece>> {
        let root = self.meta.sb.refcount_tree;
        if root.is_empty() {
            return Ok(vec![refcount::Piece {
                start: p,
                len: l,
                count: 1,
            }]);
        }
        refcount::pieces(self, &root, p, l)
    }

    /// Commits: durable when this returns Ok.
    pub fn commit(mut self) -> Result<()> {
        self.sync_free_tree()?;
        let seq = self.meta.seq;
        let fs_id = self.meta.fs_id;
        let mut sbb = self.meta.sb.to_block();
        seal_block(&mut sbb, 0, seq, fs_id);
        let mut images: Vec<(u64, Box<Block>)> =
            std::mem::take(&mut self.dirty).into_iter().collect();
        for (home, img) in images.iter_mut() {
            seal_block(img, *home, seq, fs_id);
        }
        images.push((0, sbb));
        images.sort_unstable_by_key(|(h, _)| *h);
        journal::commit(self.dev, &self.meta.geo, fs_id, seq, &images)?;
        self.meta.sb.header.generation = seq.into();
        self.meta.seq += 1;
        for (home, img) in images {
            if home != 0 {
                self.meta.cache.put(home, img);
            }
        }
        if let Some(ev) = &mut self.meta.events {
            ev.append(&mut self.events);
        }
        for (s, l) in std::mem::take(&mut self.freed) {
            if !self.meta.free.insert(s, l) {
                // The tree accepted the free, so the map must too; a mismatch
                // means the map is stale: reload it at the next transaction.
                self.meta.free_loaded = false;
            }
        }
        self.done = true;
        Ok(())
    }

    /// Whether anything was changed.
    pub fn is_empty(&self) -> bool {
        self.dirty.is_empty() && self.deltas.is_empty() && self.meta.sb.as_bytes_eq(&self.sb_before)
    }
}

trait SbEq {
    fn as_bytes_eq(&self, other: &Self) -> bool;
}
impl SbEq for Superblock {
    fn as_bytes_eq(&self, other: &Self) -> bool {
        zerocopy::IntoBytes::as_bytes(self) == zerocopy::IntoBytes::as_bytes(other)
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // Abort: nothing reached media; put the in-memory state back.
        self.meta.sb = self.sb_before;
        for &(s, l) in &self.allocated {
            if !self.meta.free.insert(s, l) {
                self.meta.free_loaded = false;
            }
        }
    }
}

/// Reads block `b` from the device and verifies it.
pub fn read_verified(
    dev: &dyn Device,
    b: u64,
    kind: BlockKind,
    owner: Option<u64>,
    fs_id: u64,
) -> Result<Box<Block>, TreeError> {
    let mut blk = Box::new([0u8; BLOCK_SIZE]);
    if b > u64::MAX / BLOCK_SIZE_U64 {
        return Err(TreeError::Corrupt {
            kind: kind.name(),
            block: b,
            what: "block number is past the end of the device".into(),
        });
    }
    dev.read(b * BLOCK_SIZE_U64, &mut blk[..])
        .map_err(|e| match e {
            daxfs_device::DeviceError::Media { .. } => TreeError::Media { block: b },
            other => TreeError::Store(other.to_string()),
        })?;
    verify_block(
        &blk,
        &Expect {
            blockno: b,
            kind,
            owner,
            fs_id,
        },
    )?;
    Ok(blk)
}

impl NodeStore for Tx<'_> {
    fn read_node(
        &mut self,
        b: BlockNo,
        kind: BlockKind,
        owner: u64,
    ) -> Result<Box<Block>, TreeError> {
        self.read_meta(b.0, kind, Some(owner))
    }
    fn write_node(&mut self, b: BlockNo, node: Box<Block>) -> Result<(), TreeError> {
        self.dirty.insert(b.0, node);
        Ok(())
    }
    fn alloc_node(&mut self, kind: BlockKind, owner: u64) -> Result<BlockNo, TreeError> {
        match self.alloc_extent(1, None) {
            Ok((s, _)) => {
                if self.rmap_enabled() {
                    self.rmap_deltas
                        .push(RmapDelta::Add(s, Owner::of_node(kind, owner)));
                }
                Ok(BlockNo(s))
            }
            Err(FsError::NoSpace(_)) => Err(TreeError::NoSpace),
            Err(e) => Err(TreeError::Store(e.to_string())),
        }
    }
    fn free_node(&mut self, b: BlockNo, kind: BlockKind, owner: u64) -> Result<(), TreeError> {
        if self.rmap_enabled() {
            let o = Owner::of_node(kind, owner);
            match self
                .rmap_deltas
                .iter()
                .position(|d| *d == RmapDelta::Add(b.0, o))
            {
                Some(i) => {
                    self.rmap_deltas.swap_remove(i);
                }
                None => self.rmap_deltas.push(RmapDelta::Remove(b.0, o)),
            }
        }
        self.free_extent(b.0, 1);
        Ok(())
    }
}

/// A read-only store over committed metadata (for lookups outside a
/// transaction, fsck and tools), optionally through the node cache (the
/// caller then holds the metadata lock). Writes are refused.
pub struct ReadStore<'a> {
    pub dev: &'a dyn Device,
    pub fs_id: u64,
    pub cache: Option<&'a mut NodeCache>,
}

impl NodeStore for ReadStore<'_> {
    fn read_node(
        &mut self,
        b: BlockNo,
        kind: BlockKind,
        owner: u64,
    ) -> Result<Box<Block>, TreeError> {
        if let Some(c) = self.cache.as_deref_mut() {
            if let Some(blk) = c.get(b.0, kind, Some(owner)) {
                return Ok(blk);
            }
            let blk = read_verified(self.dev, b.0, kind, Some(owner), self.fs_id)?;
            c.put(b.0, blk.clone());
            return Ok(blk);
        }
        read_verified(self.dev, b.0, kind, Some(owner), self.fs_id)
    }
    fn write_node(&mut self, _b: BlockNo, _node: Box<Block>) -> Result<(), TreeError> {
        Err(TreeError::Store("read-only store".into()))
    }
    fn alloc_node(&mut self, _kind: BlockKind, _owner: u64) -> Result<BlockNo, TreeError> {
        Err(TreeError::Store("read-only store".into()))
    }
    fn free_node(&mut self, _b: BlockNo, _kind: BlockKind, _owner: u64) -> Result<(), TreeError> {
        Err(TreeError::Store("read-only store".into()))
    }
}

/// Keeps `TreeRoot` in scope for users of this module.
pub type Root = TreeRoot;
