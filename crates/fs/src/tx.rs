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
use crate::replica::{Committed, Replicas};
use crate::space::alloc::FreeMap;
use crate::space::rmap::{self, Mapping, Owner};
use crate::space::{badblocks, refcount};
use daxfs_btree::{BTree, NodeBuf, NodeStore, TreeError};
use daxfs_device::Device;
use daxfs_format::block::{BlockKind, Expect, verify_block};
use daxfs_format::records::{
    INTENT_PUT, INTENT_REMOVE, InodeRecord, RmapIntent, RmapRecord, TreeRoot,
};
use daxfs_format::superblock::LOG_INTENTS;
use daxfs_format::superblock::{INCOMPAT_RMAP, MAX_ANCHORS, ReplicaPair};
use daxfs_format::{BLOCK_SIZE, BLOCK_SIZE_U64, Block, BlockNo, Superblock, seal_block};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A fast hash for block numbers (maps keyed by them are on every node
/// read and commit; the default hash is made for untrusted keys).
#[derive(Clone, Copy, Debug, Default)]
pub struct BlockHasher(u64);

impl std::hash::Hasher for BlockHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// A map keyed by block number.
pub type BlockMap<V> = HashMap<u64, V, std::hash::BuildHasherDefault<BlockHasher>>;

/// The in-memory inodes, shared with the file system handle (repairs that
/// move the root of a file's tree update its cached record).
pub type InodeCache = Arc<Mutex<HashMap<u64, Arc<crate::inode::Inode>>>>;

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
    /// Replica pairs known in memory, blocks waiting for repair (shared with
    /// readers outside transactions).
    pub reps: Arc<Mutex<Replicas>>,
    /// The file system's inode cache (none while making the file system).
    pub icache: Option<InodeCache>,
    /// Set while repairs run, so that their commits do not start more.
    pub in_repair: bool,
    /// The log's first blocks as the last commit wrote them.
    pub log_head: journal::LogHead,
    /// Lazy transactions (store faults through views) committed in memory
    /// since the last durable commit; their blocks are in the node cache's
    /// lazy layer.
    pub lazy_txs: u64,
    /// Blocks those lazy transactions freed: free once they are durable.
    pub lazy_freed: Vec<(u64, u64)>,
    /// Node -> replica pairs those lazy transactions made.
    pub lazy_pairs: BlockMap<u64>,
    /// The reverse map's record changes that its nodes do not hold yet, in
    /// order: durable in the log's intent area (the superblock's
    /// `rmap_intents` counts them). Reads see them through the node cache's
    /// pending records ([`NodeCache::rmap_pending`]).
    pub intents: Vec<RmapIntent>,
    /// Buffers media-error reports fill, kept for the next report.
    pub(crate) report_bufs: crate::media::ReportBufs,
    /// Inodes whose in-memory record may be ahead of the inode tree (the
    /// times of in-place overwrites): every durable commit writes those
    /// records too (see [`Tx::carry_in_place`]). Shared with the data path,
    /// which adds to it without the metadata lock.
    pub in_place: InPlaceSet,
    /// The superblock's `free_blocks` as found, when loading the free-space
    /// tree found it wrong and corrected it (mount logs the repair).
    pub free_count_fixed: Option<u64>,
    /// Free blocks ordinary allocations leave alone (see
    /// [`crate::space::reserve`]).
    pub reserve: u64,
    /// Where each commit publishes the committed state for readers that
    /// take no lock (see `crate::snapshot`).
    pub(crate) published: Arc<crate::snapshot::Published>,
    /// Group commit (see [`crate::group`]): shared with the threads waiting
    /// for their transactions to be durable.
    pub group: Arc<crate::group::Group>,
    /// Set by a grouped operation while it holds the lock: its
    /// transactions ([`Tx::begin`]) commit in memory, and the operation
    /// waits for them once it drops the lock.
    pub(crate) grouping: bool,
    /// The durable commit the grouped operation's transactions wait for.
    pub(crate) ticket: Option<u64>,
    /// The reverse-map intents of the lazy transactions committed in memory
    /// (their record changes, sealed with the sequence number of the
    /// durable commit that will take them in).
    pub(crate) lazy_intents: Vec<RmapIntent>,
    /// A lazy transaction put the reverse map's pending changes into its
    /// tree: the durable commit logs the tree, not intents.
    pub(crate) lazy_direct: bool,
    /// A lazy transaction changed the reverse map's internal nodes or
    /// root: the durable commit recomputes its anchors.
    pub(crate) lazy_rmap_shape: bool,
    /// Blocks the lazy transactions allocated (free on media: the durable
    /// commit writes the ones that are nodes home without logging them).
    pub(crate) lazy_allocated: Vec<(u64, u64)>,
    /// The group's commit a leader prepared, for it to write.
    pub(crate) flight: Option<crate::group::Flight>,
}

/// See [`Meta::in_place`].
pub type InPlaceSet = Arc<crate::in_place::InPlace>;

impl Meta {
    /// The state of a file system whose superblock is `sb`, before any
    /// transaction.
    pub fn new(sb: Superblock, seq: u64, icache: Option<InodeCache>) -> Meta {
        Meta {
            geo: geometry(&sb),
            fs_id: sb.fs_id(),
            reps: Arc::new(Mutex::new(Replicas::new(&sb))),
            sb,
            free: FreeMap::default(),
            free_loaded: false,
            seq,
            shutdown: None,
            cache: NodeCache::default(),
            events: None,
            icache,
            in_repair: false,
            log_head: vec![],
            lazy_txs: 0,
            lazy_freed: vec![],
            lazy_pairs: BlockMap::default(),
            intents: vec![],
            report_bufs: Default::default(),
            in_place: Default::default(),
            free_count_fixed: None,
            reserve: crate::space::reserve::reserve_blocks(&sb, intent_limit(&sb) as u64),
            published: Arc::new(crate::snapshot::Published::new(sb)),
            group: Arc::new(crate::group::Group::new(seq.saturating_sub(1))),
            grouping: false,
            ticket: None,
            lazy_intents: vec![],
            lazy_direct: false,
            lazy_rmap_shape: false,
            lazy_allocated: vec![],
            flight: None,
        }
    }

    /// True when tree nodes have replicas.
    pub fn replicas(&self) -> bool {
        self.sb.has_replicas()
    }

    /// The most reverse-map intents pending before a commit puts them in
    /// the tree (see [`intent_limit`]).
    pub fn intent_limit(&self) -> usize {
        intent_limit(&self.sb)
    }
}

/// The most reverse-map intents kept pending on the file system of `sb`:
/// the intent area's 128 entries, or a quarter of the log's capacity when
/// that is less. Putting them in the tree changes a leaf each at worst (and
/// the path above it, and the free-space tree), all in the one commit that
/// flushes them, which must fit in the log beside that commit's own blocks.
pub fn intent_limit(sb: &Superblock) -> usize {
    let cap = geometry(sb).capacity();
    LOG_INTENTS.min(cap / 4)
}

/// True when blocks `[s, s+l)` are not all in the area of tree nodes, their
/// replicas and file data: they touch a superblock copy, the log or its
/// replica region, or pass the end.
pub fn outside_data_area(sb: &Superblock, s: u64, l: u64) -> bool {
    let Some(end) = s.checked_add(l) else {
        return true;
    };
    let overlaps = |a: u64, n: u64| n != 0 && s < a.saturating_add(n) && a < end;
    let (ls, lb, lr) = (
        sb.log_start.get(),
        sb.log_blocks.get(),
        sb.log_replica.get(),
    );
    let mirror = if lr == 0 {
        0
    } else {
        daxfs_format::superblock::log_mirror_blocks(lb)
    };
    s == 0 || end >= sb.total_blocks.get() || overlaps(ls, lb) || overlaps(lr, mirror)
}

/// The log's place, from the superblock.
pub fn geometry(sb: &Superblock) -> LogGeometry {
    LogGeometry {
        start: sb.log_start.get(),
        blocks: sb.log_blocks.get(),
        sb_copy: sb.total_blocks.get() - 1,
        replica: sb.log_replica.get(),
    }
}

/// Verified copies of committed metadata blocks, so a node read costs a hash
/// lookup (the block is shared, not copied) instead of a device read and a
/// checksum. Holds only what is on media (or
/// what the last commit put there); freed blocks are dropped. Bounded: when
/// full it starts over.
///
/// On top of it, the lazy layer holds the blocks that lazy transactions
/// committed in memory and that are not durable yet (see [`Tx::begin_lazy`]),
/// and reads see them first; [`NodeCache::peek`] (what media holds) does not.
///
/// Beside the blocks, the reverse map's committed record changes that its
/// nodes do not hold yet (see [`Tx::commit`]): every reverse-map read looks
/// at them before the tree.
#[derive(Debug, Default)]
pub struct NodeCache {
    blocks: BlockMap<NodeBuf>,
    lazy: BlockMap<NodeBuf>,
    /// The blocks of the group commit being written (see [`crate::group`]):
    /// not on media for sure until the group lands, seen by reads after
    /// the lazy layer.
    flying: BlockMap<NodeBuf>,
    /// Reverse-map record changes committed but not in the tree's nodes:
    /// durable as the log's intents, or (after lazy transactions) in memory
    /// only until the next durable commit puts them in the tree.
    pub rmap_pending: Arc<rmap::Pending>,
}

impl NodeCache {
    /// Most blocks kept (64 MiB).
    pub const CAPACITY: usize = 16384;

    /// A cached block, if its header says it is what the caller expects.
    pub fn get(&self, b: u64, kind: BlockKind, owner: Option<u64>) -> Option<NodeBuf> {
        let blk = self
            .lazy
            .get(&b)
            .or_else(|| self.flying.get(&b))
            .or_else(|| self.blocks.get(&b))?;
        let h = daxfs_format::block::header(&blk[..]).ok()?;
        (h.kind == kind as u8 && owner.is_none_or(|o| h.owner.get() == o)).then(|| blk.clone())
    }

    pub fn put(&mut self, b: u64, blk: NodeBuf) {
        if self.blocks.len() >= Self::CAPACITY && !self.blocks.contains_key(&b) {
            self.blocks.clear();
        }
        self.blocks.insert(b, blk);
    }

    /// A cached block, as media holds it (not the lazy layer).
    pub fn peek(&self, b: u64) -> Option<&Block> {
        self.blocks.get(&b).map(|x| &**x)
    }

    /// As [`NodeCache::peek`], shared.
    pub(crate) fn peek_buf(&self, b: u64) -> Option<NodeBuf> {
        self.blocks.get(&b).cloned()
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

    /// The group written has landed: its blocks are in the cache (or, when
    /// writing failed, not known).
    pub(crate) fn land(&mut self) {
        self.flying.clear();
    }

    /// Blocks in the lazy layer.
    pub fn lazy_len(&self) -> usize {
        self.lazy.len()
    }

    /// The blocks committed but not surely home on media, for a snapshot:
    /// the lazy layer's over the group being written's (whose homes its
    /// leader writes without the lock, so a reader must never read them
    /// there). Shared, not copied, when there are none.
    pub(crate) fn lazy_blocks(&self) -> Arc<BlockMap<NodeBuf>> {
        if self.lazy.is_empty() && self.flying.is_empty() {
            Arc::default()
        } else if self.flying.is_empty() {
            Arc::new(self.lazy.clone())
        } else {
            let mut m = self.flying.clone();
            m.extend(self.lazy.iter().map(|(b, n)| (*b, n.clone())));
            Arc::new(m)
        }
    }

    /// Reverse-map record changes the tree's nodes do not hold yet.
    pub fn rmap_pending_len(&self) -> usize {
        self.rmap_pending.len()
    }
}

/// A change to the free-space tree, applied at commit.
#[derive(Clone, Copy, Debug)]
enum Delta {
    Alloc(u64, u64),
    Free(u64, u64),
}

/// A change to the reverse map for a tree node and its replica (0: none),
/// applied at commit (a node is allocated while some tree, perhaps the
/// reverse map itself, is mid-change).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RmapDelta {
    Add(u64, Owner, u64),
    Remove(u64, Owner, u64),
}

/// A running transaction.
pub struct Tx<'a> {
    dev: &'a dyn Device,
    pub meta: &'a mut Meta,
    sb_before: Superblock,
    dirty: BlockMap<NodeBuf>,
    deltas: Vec<Delta>,
    rmap_deltas: Vec<RmapDelta>,
    events: Vec<crate::events::MapEvent>,
    allocated: Vec<(u64, u64)>,
    freed: Vec<(u64, u64)>,
    /// The reverse map's internal nodes changed: its anchors are recomputed
    /// at commit.
    pub(crate) rmap_shape: bool,
    /// Cached inodes whose tree root this transaction moves or reseals (old
    /// root block, new root): their in-memory record follows once the
    /// commit is durable.
    pub(crate) root_moves: Vec<(Arc<crate::inode::Inode>, u64, TreeRoot)>,
    /// Node -> replica pairs this transaction made (allocations, repairs):
    /// known in memory only once committed, as the shared map holds
    /// committed pairs only.
    pub(crate) new_pairs: BlockMap<u64>,
    /// Committed in memory only (see [`Tx::begin_lazy`]).
    lazy: bool,
    /// Committed in memory only by a grouped operation, which waits for
    /// the group's durable commit (see [`crate::group`]).
    grouped: bool,
    /// The commit of a group, written by its leader without the lock.
    flight: bool,
    /// The commit may log the reverse map's record changes as intents
    /// instead of putting them in its nodes (ordinary transactions; not
    /// repairs).
    may_defer: bool,
    /// This transaction's reverse-map record changes, not in the tree (see
    /// [`rmap::Records`] for `Tx`): reads see them first.
    rmap_top: rmap::Pending,
    /// Reverse-map changes go straight into the tree (set once the commit
    /// has put the pending ones there).
    rmap_direct: bool,
    /// Inodes whose records this transaction wrote (or whose records a
    /// caller holds locked and writes itself): not carried at commit.
    pub(crate) staged_inos: Vec<u64>,
    /// May allocate from the metadata reserve (work that must succeed on a
    /// full device: deleting, flushing, repairs, media-error reports, and
    /// every commit's own bookkeeping).
    use_reserve: bool,
    done: bool,
}

/// The free-space tree (start block -> length).
pub fn free_tree() -> BTree<u64, u64> {
    BTree::new(BlockKind::FreeTree, 0)
}

impl<'a> Tx<'a> {
    /// Starts a transaction, after repairing the metadata blocks that reads
    /// found bad since the last one. Loads the free map on first use.
    ///
    /// A shut-down file system still runs transactions that only read; a
    /// commit that would change anything fails.
    ///
    /// In a grouped operation (see [`crate::group`]) the transaction builds
    /// on the state committed in memory and its commit stays in memory: the
    /// operation waits for the group's durable commit after it drops the
    /// lock.
    pub fn begin(dev: &'a dyn Device, meta: &'a mut Meta) -> Result<Tx<'a>> {
        crate::replica::run_pending(dev, meta);
        if meta.grouping {
            crate::group::settle(meta);
            // The group must fit the log with any one transaction: one that
            // grew large is made durable first.
            let quarter = meta.geo.capacity() / 4;
            if meta.shutdown.is_none()
                && (meta.cache.lazy.len() >= quarter || meta.cache.rmap_pending.len() >= quarter)
            {
                flush_lazy(dev, meta)?;
            }
            let mut tx = Tx::open_inner(dev, meta, true)?;
            tx.grouped = true;
            tx.may_defer = true;
            return Ok(tx);
        }
        if meta.shutdown.is_none() {
            flush_lazy(dev, meta)?;
        }
        let mut tx = Tx::open_inner(dev, meta, false)?;
        tx.may_defer = true;
        Ok(tx)
    }

    /// The commit of every transaction committed in memory, prepared by
    /// the leader of a group (see [`crate::group`]): its journal write is
    /// left in [`Meta::flight`].
    pub(crate) fn open_flight(dev: &'a dyn Device, meta: &'a mut Meta) -> Result<Tx<'a>> {
        let mut tx = Tx::open_inner(dev, meta, false)?;
        tx.flight = true;
        tx.may_defer = !tx.meta.in_repair;
        Ok(tx)
    }

    /// Starts a lazy transaction: its commit makes its changes visible in
    /// memory at once (reads, later transactions) and durable later, with
    /// the next ordinary transaction, [`flush_lazy`] (msync, fsync, sync,
    /// unmount, the resolvers when idle) or when the lazy blocks fill a
    /// quarter of the log. Until then media holds the state before it, which
    /// is consistent by itself: blocks it allocated are free there, blocks it
    /// freed are not reused before they are durably free. Only store faults
    /// through views use it (mmap stores are durable after msync or fsync).
    pub fn begin_lazy(dev: &'a dyn Device, meta: &'a mut Meta) -> Result<Tx<'a>> {
        crate::replica::run_pending(dev, meta);
        Tx::open_inner(dev, meta, true)
    }

    /// Starts a transaction without running repairs first (repairs use
    /// it). Lazy transactions committed before are made durable first, so
    /// ordinary transactions (and repairs) only ever build on durable state;
    /// and the reverse map's pending changes are put into its nodes and
    /// logged, so a repair only ever meets reverse-map nodes that hold
    /// every record.
    pub(crate) fn open(dev: &'a dyn Device, meta: &'a mut Meta) -> Result<Tx<'a>> {
        // A shut-down file system cannot flush; its transactions that only
        // read see the lazy state in memory, and any commit fails.
        if meta.shutdown.is_none() {
            flush_lazy(dev, meta)?;
            flush_intents(dev, meta)?;
        }
        let mut tx = Tx::open_inner(dev, meta, false)?;
        tx.use_reserve = true;
        Ok(tx)
    }

    fn open_inner(dev: &'a dyn Device, meta: &'a mut Meta, lazy: bool) -> Result<Tx<'a>> {
        crate::group::settle(meta);
        let sb_before = meta.sb;
        let shut = meta.shutdown.is_some();
        let mut tx = Tx {
            dev,
            meta,
            sb_before,
            dirty: BlockMap::default(),
            deltas: vec![],
            rmap_deltas: vec![],
            events: vec![],
            allocated: vec![],
            freed: vec![],
            rmap_shape: false,
            root_moves: vec![],
            new_pairs: BlockMap::default(),
            lazy,
            grouped: false,
            flight: false,
            may_defer: false,
            rmap_top: rmap::Pending::new(),
            rmap_direct: false,
            staged_inos: vec![],
            use_reserve: false,
            done: false,
        };
        if !tx.meta.free_loaded && !shut {
            let root = tx.meta.sb.free_tree;
            let mut map = FreeMap::default();
            let mut bad = None;
            // Free space is neither a superblock nor the log.
            let sb = tx.meta.sb;
            free_tree().range(&mut tx, &root, &0, &u64::MAX, &mut |s, l| {
                if outside_data_area(&sb, s, l) || !map.insert(s, l) {
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
            // The superblock's count of free blocks is the tree's total; a
            // wrong one (damage) is put right here, where the whole tree is
            // read anyway, and the first commit writes it (mount logs it).
            // Kept through an abort of this transaction.
            let total = map.total();
            if total != tx.meta.sb.free_blocks.get()
                && tx.meta.lazy_txs == 0
                && tx.meta.lazy_freed.is_empty()
            {
                tx.meta.free_count_fixed = Some(tx.meta.sb.free_blocks.get());
                tx.meta.sb.free_blocks = total.into();
                tx.sb_before.free_blocks = total.into();
            }
            // Blocks lazy transactions freed are not free until durable.
            for &(s, l) in &tx.meta.lazy_freed {
                for (fs, fl) in map.overlapping(s, l) {
                    map.remove(fs, fl);
                }
            }
            tx.meta.free = map;
            tx.meta.free_loaded = true;
        }
        Ok(tx)
    }

    pub fn dev(&self) -> &'a dyn Device {
        self.dev
    }

    /// Free blocks available to this transaction: all of them for one that
    /// may use the metadata reserve, else those above it.
    pub fn free_blocks(&self) -> u64 {
        self.meta.free.total().saturating_sub(self.floor())
    }

    /// Free blocks this transaction's allocations must leave.
    fn floor(&self) -> u64 {
        if self.use_reserve {
            0
        } else {
            self.meta.reserve
        }
    }

    /// Lets this transaction allocate from the metadata reserve: for work
    /// that frees space or must succeed on a full device (see
    /// [`crate::space::reserve`]).
    pub fn use_reserve(&mut self) {
        self.use_reserve = true;
    }

    /// Fails with ENOSPC when allocating `l` blocks would leave fewer than
    /// this transaction must leave free.
    fn check_floor(&self, l: u64, what: &dyn Fn() -> String) -> Result<()> {
        let free = self.meta.free.total();
        if free < l.saturating_add(self.floor()) {
            return Err(FsError::NoSpace(format!(
                "{} ({free} free, {} of them reserved for metadata)",
                what(),
                self.meta.reserve.min(free)
            )));
        }
        Ok(())
    }

    /// Allocates up to `want` contiguous blocks (at least one); see
    /// [`FreeMap::pick`] for the policy. A transaction that may not use the
    /// metadata reserve gets at most what lies above it.
    pub fn alloc_extent(&mut self, want: u64, goal: Option<u64>) -> Result<(u64, u64)> {
        let room = self.meta.free.total().saturating_sub(self.floor());
        let (s, l) = self.meta.free.pick(want.min(room), goal).ok_or_else(|| {
            FsError::NoSpace(format!(
                "allocating {want} blocks ({} free in {} extents, {} reserved for metadata)",
                self.meta.free.total(),
                self.meta.free.extents(),
                self.meta.reserve.min(self.meta.free.total())
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

    /// Allocates one block far from block `from` (in the other half of the
    /// device when it has room; else anywhere not next to `from`), never in
    /// `avoid` (a range known to be bad).
    pub(crate) fn alloc_far(&mut self, from: u64, avoid: Option<(u64, u64)>) -> Result<u64> {
        self.check_floor(1, &|| format!("no block for a replica of block {from}"))?;
        let total = self.meta.sb.total_blocks.get();
        let hidden = match avoid {
            Some((a, l)) => self.meta.free.overlapping(a, l),
            None => vec![],
        };
        for &(s, l) in &hidden {
            self.meta.free.remove(s, l);
        }
        let pick = self.meta.free.pick_far(from, total);
        for &(s, l) in &hidden {
            self.meta.free.insert(s, l);
        }
        let Some(b) = pick else {
            return Err(FsError::NoSpace(format!(
                "no block for a replica of block {from}"
            )));
        };
        if !self.meta.free.remove(b, 1) {
            return Err(FsError::Corrupt(format!("free map lost block {b}")));
        }
        self.allocated.push((b, 1));
        self.deltas.push(Delta::Alloc(b, 1));
        Ok(b)
    }

    /// Allocates `len` contiguous blocks far from block `from`: as low on the
    /// device as they fit when `from` is in its upper half, as high as they
    /// fit otherwise; never in `avoid` (a range known to be bad). `None`
    /// when no run is free.
    pub(crate) fn alloc_run_far(
        &mut self,
        len: u64,
        from: u64,
        avoid: (u64, u64),
    ) -> Result<Option<u64>> {
        self.check_floor(len, &|| {
            format!("allocating {len} blocks far from block {from}")
        })?;
        let hidden = self.meta.free.overlapping(avoid.0, avoid.1);
        for &(s, l) in &hidden {
            self.meta.free.remove(s, l);
        }
        let pick = if from >= self.meta.sb.total_blocks.get() / 2 {
            self.meta.free.lowest_run(len)
        } else {
            self.meta.free.highest_run(len)
        };
        for &(s, l) in &hidden {
            self.meta.free.insert(s, l);
        }
        let Some(b) = pick else {
            return Ok(None);
        };
        if !self.meta.free.remove(b, len) {
            return Err(FsError::Corrupt(format!(
                "free map lost blocks [{b}, +{len})"
            )));
        }
        self.allocated.push((b, len));
        self.deltas.push(Delta::Alloc(b, len));
        Ok(Some(b))
    }

    /// The replica of tree node `b` (0 when nodes have none), from memory or
    /// else the committed reverse map.
    pub(crate) fn replica_of(&mut self, b: u64, kind: BlockKind, owner: u64) -> Result<u64> {
        if !self.meta.replicas() {
            return Ok(0);
        }
        if let Some(&r) = self.new_pairs.get(&b) {
            return Ok(r);
        }
        if let Some(&r) = self.meta.lazy_pairs.get(&b) {
            return Ok(r);
        }
        if let Some(r) = crate::fs::lock(&self.meta.reps).get(b) {
            return Ok(r);
        }
        let m = &mut *self.meta;
        let mut c = Committed::new(self.dev, m.fs_id, Some(&mut m.cache), Some(&*m.reps));
        c.find_replica(b, kind, owner).ok_or_else(|| {
            FsError::Corrupt(format!(
                "{} block {b} has no replica in the reverse map",
                kind.name()
            ))
        })
    }

    /// Seals `blk` for block `b` with this transaction's sequence number and
    /// stages it as the block's new contents (a tree node); returns the crc
    /// it was sealed with, which the pointer to it must name. Sealing here,
    /// not at commit, is what lets the tree put the crc in the parent.
    pub(crate) fn stage(&mut self, b: u64, mut blk: NodeBuf) -> u32 {
        // The tree hands over its own copy (nothing else holds it once its
        // call returns): no copy here.
        let img = NodeBuf::make_mut(&mut blk);
        seal_block(img, b, self.meta.seq, self.meta.fs_id);
        let crc = daxfs_btree::sealed_crc(img);
        self.dirty.insert(b, blk);
        crc
    }

    /// Takes block `b`'s staged contents out of this transaction.
    pub(crate) fn unstage(&mut self, b: u64) -> Option<NodeBuf> {
        self.dirty.remove(&b)
    }

    /// True when this transaction has staged block `b`.
    pub(crate) fn is_staged(&self, b: u64) -> bool {
        self.dirty.contains_key(&b)
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

    /// Reads a block as it is in this transaction, verified against `expect`
    /// and, when `crc` is given, sealed with that crc (the one the pointer
    /// to it names); a committed block that fails either is read from its
    /// replica (and queued for repair).
    pub fn read_meta(
        &mut self,
        b: u64,
        kind: BlockKind,
        owner: Option<u64>,
        crc: Option<u32>,
    ) -> Result<NodeBuf, TreeError> {
        if let Some(blk) = self.dirty.get(&b) {
            // Staged by this transaction, which also set the pointer.
            crate::replica::check_crc(b, blk, crc)?;
            return Ok(blk.clone());
        }
        if let Some(blk) = self.meta.cache.get(b, kind, owner)
            && crate::replica::check_crc(b, &blk, crc).is_ok()
        {
            return Ok(blk);
        }
        let m = &mut *self.meta;
        let reps = m.replicas().then_some(&*m.reps);
        Committed::new(self.dev, m.fs_id, Some(&mut m.cache), reps).read(b, kind, owner, crc)
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
                if outside_data_area(&self.meta.sb, s, l) {
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
            self.keep_bad_out()?;
            let rds = std::mem::take(&mut self.rmap_deltas);
            // Tree nodes are single fresh blocks: their records need no
            // splitting or merging, and go in with one sorted insert (the
            // records of different blocks are independent, and a block is
            // not freed and allocated again within a transaction).
            let mut adds = vec![];
            for d in &rds {
                if let RmapDelta::Add(b, owner, r) = *d {
                    adds.push(Mapping {
                        replica: r,
                        ..Mapping::new(b, 1, owner, false)
                    });
                    if r != 0 {
                        adds.push(Mapping {
                            replica: b,
                            is_replica: true,
                            ..Mapping::new(r, 1, owner, false)
                        });
                    }
                }
            }
            if !adds.is_empty() {
                rmap::add_fresh_all(self, &adds)?;
            }
            for d in rds {
                if let RmapDelta::Remove(b, owner, r) = d {
                    rmap::remove_exact(self, b, owner, false)?;
                    if r != 0 {
                        rmap::remove_exact(self, r, owner, true)?;
                    }
                }
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

    /// Keeps known-bad blocks out of free space: the parts of this
    /// transaction's frees that lie in a range of the bad-block tree (a
    /// tree node freed there before a scrub moved it, one freed by the
    /// report that marks its range) stay quarantined, owned by nobody,
    /// until the range is cleared. Runs between tree changes (at the start
    /// of each round of [`Tx::sync_free_tree`]), where reading the
    /// bad-block tree meets no node half changed.
    fn keep_bad_out(&mut self) -> Result<()> {
        let broot = self.meta.sb.badblock_tree;
        if broot.is_empty() || !self.deltas.iter().any(|d| matches!(d, Delta::Free(..))) {
            return Ok(());
        }
        let ds = std::mem::take(&mut self.deltas);
        let mut out = Vec::with_capacity(ds.len());
        for d in ds {
            let Delta::Free(s, l) = d else {
                out.push(d);
                continue;
            };
            // A free outside the data area is refused when it is applied.
            if outside_data_area(&self.meta.sb, s, l) {
                out.push(d);
                continue;
            }
            let bad = badblocks::overlapping(self, &broot, s, l)?;
            if bad.is_empty() {
                out.push(d);
                continue;
            }
            if let Some(i) = self.freed.iter().position(|&f| f == (s, l)) {
                self.freed.swap_remove(i);
            }
            let mut at = s;
            for (bs, bl) in bad.into_iter().chain([(s + l, 0)]) {
                if bs > at {
                    self.freed.push((at, bs - at));
                    out.push(Delta::Free(at, bs - at));
                }
                at = at.max(bs + bl);
            }
        }
        self.deltas = out;
        Ok(())
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
        rmap::add(self, Mapping::new(phys, len, owner, unwritten))
    }

    /// [`Tx::rmap_add`] of a mapping `owner` maps nothing after once the
    /// transaction's changes are applied (see [`rmap::add_last`]).
    /// `from`: where the record it likely continues starts (the device
    /// block of the extent it joined; `phys` for none).
    pub fn rmap_add_last(
        &mut self,
        phys: u64,
        len: u64,
        owner: Owner,
        unwritten: bool,
        from: u64,
    ) -> Result<()> {
        if !self.rmap_enabled() {
            return Ok(());
        }
        rmap::add_last(self, Mapping::new(phys, len, owner, unwritten), from)
    }

    /// Records in the reverse map that `owner` no longer maps `[phys, phys+len)`.
    pub fn rmap_remove(&mut self, phys: u64, len: u64, owner: Owner) -> Result<()> {
        self.rmap_remove_in(phys, len, owner, phys)
    }

    /// [`Tx::rmap_remove`] of a piece of an extent that starts at device
    /// block `from`: where the owner's record likely starts.
    pub fn rmap_remove_in(&mut self, phys: u64, len: u64, owner: Owner, from: u64) -> Result<()> {
        if !self.rmap_enabled() {
            return Ok(());
        }
        rmap::remove_in(self, phys, len, owner, from)
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

    /// Commits: durable when this returns Ok. Then repairs what reads found
    /// bad meanwhile, each in a transaction of its own.
    pub fn commit(mut self) -> Result<()> {
        if let Some(why) = &self.meta.shutdown
            && (!self.is_empty() || self.meta.lazy_txs > 0)
        {
            return Err(FsError::Shutdown(why.clone()));
        }
        // The commit's own bookkeeping (free-space and reverse-map nodes,
        // and putting the pending intents in the tree, which the reserve is
        // sized for) may use the reserve: the transaction's work passed its
        // checks, and failing now would fail it for what follows from it.
        self.use_reserve = true;
        if self.lazy {
            self.sync_free_tree()?;
            return self.commit_in_memory();
        }
        let set = self.meta.in_place.clone();
        // Repairs run inside other commits, whose callers may hold records.
        let carried = if self.meta.shutdown.is_none() && !self.meta.in_repair {
            self.carry_in_place()?
        } else {
            vec![]
        };
        let r = self.commit_durable();
        // A record carried is clean once durable, unless an in-place write
        // changed it again meanwhile.
        let mut again = vec![];
        for (node, rec) in carried {
            let mut g = node.rec();
            if r.is_ok()
                && zerocopy::IntoBytes::as_bytes(&g.rec) == zerocopy::IntoBytes::as_bytes(&rec)
            {
                g.dirty = false;
            } else if g.dirty {
                again.push(node.ino);
            }
        }
        if !again.is_empty() {
            set.lock().extend(again);
        }
        r
    }

    /// Stages the records of the inodes in [`Meta::in_place`] that are
    /// still ahead of the tree, so that this commit never makes durable a
    /// state without an earlier in-place write's changes. Inodes this
    /// transaction wrote itself stay in the set (the commit's owner clears
    /// their dirty state; a record written from the tree may leave it).
    /// Returns the records staged.
    fn carry_in_place(&mut self) -> Result<Vec<(Arc<crate::inode::Inode>, InodeRecord)>> {
        let set = self.meta.in_place.clone();
        let inos = std::mem::take(&mut *set.lock());
        if inos.is_empty() {
            return Ok(vec![]);
        }
        let mut keep = vec![];
        let mut out = vec![];
        let mut res = Ok(());
        for ino in inos {
            if res.is_err() || self.staged_inos.contains(&ino) {
                keep.push(ino);
                continue;
            }
            // An inode freed (in this transaction or before) is gone from
            // the cache, and its record must not come back.
            let node = match &self.meta.icache {
                Some(c) => crate::fs::lock(c).get(&ino).cloned(),
                None => None,
            };
            let Some(node) = node else { continue };
            // Lock order: the metadata lock (held), then records. A record
            // held elsewhere is either this thread's (a commit inside an
            // operation that writes the record itself later) or an in-place
            // write's for a moment: wait a little, then leave it for the
            // next commit.
            // Some(dirty record or None when clean), None when not had.
            let mut got = None;
            for _ in 0..64 {
                let g = match node.rec.try_lock() {
                    Ok(g) => g,
                    Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
                    Err(std::sync::TryLockError::WouldBlock) => {
                        std::thread::yield_now();
                        continue;
                    }
                };
                got = Some(g.dirty.then_some(g.rec));
                break;
            }
            let rec = match got {
                None => {
                    keep.push(ino);
                    continue;
                }
                Some(None) => continue,
                Some(Some(rec)) => rec,
            };
            res = crate::fs::put_record(self, &rec);
            if res.is_err() {
                keep.push(ino);
            } else {
                out.push((node, rec));
            }
        }
        if !keep.is_empty() || res.is_err() {
            let mut g = set.lock();
            g.extend(keep);
            if res.is_err() {
                g.extend(out.iter().map(|(n, _)| n.ino));
            }
        }
        res.map(|_| out)
    }

    fn commit_durable(mut self) -> Result<()> {
        if !self.flight {
            // The log holds one commit: the group being written lands first.
            crate::group::quiesce(self.meta)?;
        }
        self.sync_free_tree()?;
        let seq = self.meta.seq;
        let fs_id = self.meta.fs_id;
        let had_lazy = self.meta.lazy_txs > 0;
        // The reverse map: this transaction's record changes are logged as
        // intents, and join the pending ones that reads see in memory; the
        // tree's nodes are not touched. A commit that cannot (a repair, lazy
        // transactions to take in, the log moving, the intent area full)
        // puts every pending change into the tree and logs its nodes, and
        // the intents start over.
        let intents_before = self.meta.intents.len();
        let lazy_intents = std::mem::take(&mut self.meta.lazy_intents);
        let lazy_direct = std::mem::take(&mut self.meta.lazy_direct);
        let defer = self.may_defer
            && !self.rmap_direct
            && !lazy_direct
            && self.rmap_enabled()
            // The intents live in the log: a commit that moves it logs
            // the nodes instead.
            && self.meta.sb.log_start == self.sb_before.log_start
            && self.meta.sb.log_replica == self.sb_before.log_replica
            && intents_before + lazy_intents.len() + self.rmap_top.len()
                <= self.meta.intent_limit();
        if defer {
            // The lazy transactions' intents first: later changes win.
            self.meta.intents.extend(lazy_intents);
            let new = self.rmap_intents(seq);
            self.meta.intents.extend(new);
        } else {
            self.flush_rmap()?;
        }
        let lazy_shape = std::mem::take(&mut self.meta.lazy_rmap_shape);
        if self.meta.replicas()
            && (self.rmap_shape || lazy_shape || self.meta.sb.rmap_tree != self.sb_before.rmap_tree)
        {
            self.set_anchors()?;
        }
        let pending = if defer { self.meta.intents.len() } else { 0 };
        self.meta.sb.rmap_intents = (pending as u32).into();
        let mut sbb = self.meta.sb.to_block();
        seal_block(&mut sbb, 0, seq, fs_id);
        // The lazy transactions before this one commit with it (the blocks
        // this one freed are left out; its own images win).
        if had_lazy {
            let freed = std::mem::take(&mut self.freed);
            let mut lazy = std::mem::take(&mut self.meta.cache.lazy);
            drop_freed(&mut lazy, &freed);
            self.freed = freed;
            for (b, img) in lazy {
                self.dirty.entry(b).or_insert(img);
            }
            self.freed.append(&mut self.meta.lazy_freed);
            for (b, r) in std::mem::take(&mut self.meta.lazy_pairs) {
                self.new_pairs.entry(b).or_insert(r);
            }
            self.meta.lazy_txs = 0;
        }
        let dirty: Vec<(u64, NodeBuf)> = std::mem::take(&mut self.dirty).into_iter().collect();
        let mut images: Vec<journal::Image> = Vec::with_capacity(dirty.len() + 1);
        let replicas = self.meta.replicas();
        for (home, img) in dirty {
            let known = if replicas {
                match self.new_pairs.get(&home) {
                    Some(&r) => Some(r),
                    None => crate::fs::lock(&self.meta.reps).get(home),
                }
            } else {
                Some(0)
            };
            let r = match known {
                Some(r) => r,
                None => {
                    let h = daxfs_format::block::header(&img[..])?;
                    let kind = BlockKind::from_u8(h.kind).ok_or_else(|| {
                        FsError::Corrupt(format!("staged block {home} has kind {}", h.kind))
                    })?;
                    self.replica_of(home, kind, h.owner.get())?
                }
            };
            // Staged blocks were sealed when staged (their crcs are in the
            // pointers to them), lazy ones with this same sequence number
            // (it moves only with a durable commit).
            let h = daxfs_format::block::header(&img[..])?;
            if h.blockno.get() != home || h.generation.get() != seq || h.fs_id.get() != fs_id {
                return Err(FsError::Corrupt(format!(
                    "staged block {home} is not sealed for transaction {seq}"
                )));
            }
            images.push((home, r, img));
        }
        images.push((0, 0, sbb.into()));
        images.sort_unstable_by_key(|(h, _, _)| *h);
        // Blocks this transaction allocated (with their replicas) are free
        // in the committed state: nothing there references them, so they
        // need not be logged. Blocks it freed go back to the allocator only
        // once it is durable, and so do blocks lazy transactions freed; the
        // lazy transactions' own blocks are logged.
        let fresh: Vec<bool> = {
            let mut alloc = self.allocated.clone();
            if had_lazy {
                alloc.append(&mut self.meta.lazy_allocated);
            }
            alloc.sort_unstable();
            let new = |b: u64| {
                let i = alloc.partition_point(|&(s, _)| s <= b);
                i > 0 && alloc[i - 1].0 + alloc[i - 1].1 > b
            };
            images
                .iter()
                .map(|&(h, r, _)| h != 0 && new(h) && (r == 0 || new(r)))
                .collect()
        };
        if self.flight {
            // The group's leader writes it without the lock; what reads
            // see is installed now, what needs it durable when it lands.
            let m = &mut *self.meta;
            let new_intents = if defer {
                m.intents.get(intents_before..).unwrap_or(&[]).to_vec()
            } else {
                vec![]
            };
            m.flight = Some(crate::group::Flight {
                geo: m.geo,
                fs_id,
                seq,
                homes: images
                    .iter()
                    .map(|(h, _, _)| m.cache.peek_buf(*h))
                    .collect(),
                same_replica: images
                    .iter()
                    .map(|(h, _, _)| !self.new_pairs.contains_key(h))
                    .collect(),
                images: images.clone(),
                fresh,
                head: std::mem::take(&mut m.log_head),
                intents_at: intents_before,
                intents: new_intents,
                freed: std::mem::take(&mut self.freed),
            });
        } else {
            // Only the lines that change are written where memory knows
            // what a block holds: the node cache holds what is on media.
            let m = &mut *self.meta;
            let known = journal::Known {
                homes: images.iter().map(|(h, _, _)| m.cache.peek(*h)).collect(),
                same_replica: images
                    .iter()
                    .map(|(h, _, _)| !self.new_pairs.contains_key(h))
                    .collect(),
            };
            let r = journal::commit(
                self.dev,
                &m.geo,
                fs_id,
                seq,
                &images,
                &fresh,
                &known,
                &mut m.log_head,
                (
                    intents_before,
                    if defer {
                        m.intents.get(intents_before..).unwrap_or(&[])
                    } else {
                        &[]
                    },
                ),
            );
            if let Err(e) = r {
                // The reverse map's intents stay as they were (and its
                // pending changes, when the transaction is dropped): this
                // transaction's changes are gone.
                m.intents.truncate(intents_before);
                // Lazy transactions taken into this one cannot become
                // durable: shut down, whatever the error.
                if had_lazy || !matches!(e, FsError::NoSpace(_)) {
                    // Part of the transaction may be on media: what memory
                    // knows of media is no longer sure, and the transaction
                    // is replayed at the next mount.
                    m.cache.clear();
                    m.log_head.clear();
                    m.shutdown
                        .get_or_insert_with(|| format!("writing metadata failed: {e}"));
                }
                if had_lazy {
                    // The operations waiting for them get the error.
                    m.group.failed(&e.to_string());
                    // Reads go on seeing the state memory has (the aborted
                    // transaction keeps the superblock of the lazy ones).
                    for (home, _, img) in images {
                        if home != 0 {
                            m.cache.lazy.insert(home, img);
                        }
                    }
                    m.lazy_txs = 1;
                }
                return Err(e);
            }
        }
        self.meta.sb.header.generation = seq.into();
        self.meta.seq += 1;
        if defer {
            let top = std::mem::take(&mut self.rmap_top);
            if !top.is_empty() {
                Arc::make_mut(&mut self.meta.cache.rmap_pending).extend(top);
            }
        } else {
            self.meta.intents.clear();
            self.meta.cache.rmap_pending = Arc::default();
        }
        if self.meta.sb.log_start != self.sb_before.log_start
            || self.meta.sb.log_replica != self.sb_before.log_replica
        {
            self.meta.geo = geometry(&self.meta.sb);
            self.meta.log_head.clear();
        }
        {
            let mut reps = crate::fs::lock(&self.meta.reps);
            for (b, r) in self.new_pairs.drain() {
                reps.insert(b, r);
            }
            reps.after_commit(&self.meta.sb);
        }
        if self.flight {
            for (home, _, img) in images {
                if home != 0 {
                    self.meta.cache.flying.insert(home, img);
                }
            }
        } else {
            for (home, _, img) in images {
                if home != 0 {
                    self.meta.cache.put(home, img);
                }
            }
            self.meta.group.durable(seq);
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
        for (node, old, new) in std::mem::take(&mut self.root_moves) {
            let mut g = node.rec();
            if g.rec.tree.block.get() == old {
                g.rec.tree = new;
            }
        }
        crate::snapshot::publish(self.meta);
        if !self.flight {
            crate::replica::run_pending(self.dev, &mut *self.meta);
        }
        Ok(())
    }

    /// The end of a lazy transaction's commit: its blocks join the node
    /// cache's lazy layer, its frees and replica pairs wait for the durable
    /// commit, everything else is in memory already. When the lazy blocks
    /// (or the reverse-map changes pending) fill a quarter of the log they
    /// are made durable now.
    fn commit_in_memory(mut self) -> Result<()> {
        let freed = std::mem::take(&mut self.freed);
        let m = &mut *self.meta;
        drop_freed(&mut m.cache.lazy, &freed);
        for (b, img) in std::mem::take(&mut self.dirty) {
            m.cache.lazy.insert(b, img);
        }
        m.lazy_freed.extend(freed);
        m.lazy_pairs.extend(self.new_pairs.drain());
        m.lazy_allocated.append(&mut self.allocated);
        m.lazy_txs += 1;
        if self.rmap_shape || m.sb.rmap_tree != self.sb_before.rmap_tree {
            m.lazy_rmap_shape = true;
        }
        if self.rmap_direct {
            // Its tree holds every pending change now.
            m.cache.rmap_pending = Arc::default();
            m.lazy_intents.clear();
            m.lazy_direct = true;
        } else {
            // Sealed with the sequence number of the durable commit that
            // will take this transaction in (it moves only with one).
            let new = self.rmap_intents(self.meta.seq);
            let m = &mut *self.meta;
            m.lazy_intents.extend(new);
        }
        let m = &mut *self.meta;
        let top = std::mem::take(&mut self.rmap_top);
        if !top.is_empty() {
            Arc::make_mut(&mut m.cache.rmap_pending).extend(top);
        }
        if self.grouped {
            m.ticket = Some(m.seq);
        }
        if let Some(ev) = &mut m.events {
            ev.append(&mut self.events);
        }
        self.done = true;
        for (node, old, new) in std::mem::take(&mut self.root_moves) {
            let mut g = node.rec();
            if g.rec.tree.block.get() == old {
                g.rec.tree = new;
            }
        }
        crate::snapshot::publish(m);
        // The reverse-map changes they made are pending in memory only, and
        // the durable commit puts them in the tree: each may change a leaf.
        let quarter = m.geo.capacity() / 4;
        if m.cache.lazy.len() >= quarter || m.cache.rmap_pending.len() >= quarter {
            flush_lazy(self.dev, m)?;
        }
        Ok(())
    }

    /// This transaction's reverse-map record changes, as intents of commit
    /// `seq` (one per key: the last change to it).
    fn rmap_intents(&self, seq: u64) -> Vec<RmapIntent> {
        let fs_id = self.meta.fs_id;
        let none = RmapRecord {
            len: 0.into(),
            flags: 0.into(),
            replica: 0.into(),
        };
        self.rmap_top
            .iter()
            .map(|(k, v)| {
                let (op, v) = match v {
                    Some(v) => (INTENT_PUT, *v),
                    None => (INTENT_REMOVE, none),
                };
                let mut e = RmapIntent {
                    op: op.into(),
                    crc: 0.into(),
                    start: k.0.into(),
                    owner: k.1.into(),
                    offset: k.2.into(),
                    len: v.len,
                    flags: v.flags,
                    replica: v.replica,
                    seq: seq.into(),
                };
                e.seal(fs_id);
                e
            })
            .collect()
    }

    /// Puts the reverse map's pending record changes (the committed ones,
    /// then this transaction's) into its tree; reads and changes after go
    /// straight to the tree. The committed ones stay in the node cache until
    /// the commit is durable: committed reads (replica lookups) see them.
    fn flush_rmap(&mut self) -> Result<()> {
        self.rmap_go_direct()?;
        // The records of nodes the tree gained or lost go straight in.
        self.sync_free_tree()
    }

    /// The first half of [`Tx::flush_rmap`]: the pending changes into the
    /// tree, and this transaction's reverse-map reads and changes straight
    /// to it from now on. Done as soon as this transaction's changes could
    /// not be logged as intents any more (see [`Tx::rmap_overflows`]), so
    /// that a large transaction does not first collect them all in memory.
    fn rmap_go_direct(&mut self) -> Result<()> {
        if self.rmap_direct {
            return Ok(());
        }
        self.rmap_direct = true;
        let top = std::mem::take(&mut self.rmap_top);
        let pending = self.meta.cache.rmap_pending.clone();
        if !pending.is_empty() || !top.is_empty() {
            let mut root = self.meta.sb.rmap_tree;
            let mut tr = rmap::TreeRecords {
                store: self,
                root: &mut root,
            };
            rmap::apply_pending(&mut tr, &[&top, &pending])?;
            self.meta.sb.rmap_tree = root;
        }
        Ok(())
    }

    /// True when this transaction's reverse-map changes, with `more`
    /// others, could not be logged as intents: its commit puts them in the
    /// tree. (Lazy transactions never do before their durable commit.)
    fn rmap_overflows(&self, more: usize) -> bool {
        (!self.lazy || self.grouped)
            && self.meta.intents.len() + self.rmap_top.len() + more > self.meta.intent_limit()
    }

    /// Whether this transaction is lazy (see [`Tx::begin_lazy`]).
    pub(crate) fn is_lazy(&self) -> bool {
        self.lazy && !self.grouped
    }

    /// Records in the superblock the reverse-map nodes on the path from its
    /// root to the middle of the device, with their replicas (see
    /// [`ReplicaPair`]).
    fn set_anchors(&mut self) -> Result<()> {
        let root = self.meta.sb.rmap_tree;
        let mid = self.meta.sb.total_blocks.get() / 2;
        let path = rmap::tree().path(self, &root, &(mid, 0, 0))?;
        let mut anchors = [ReplicaPair::default(); MAX_ANCHORS];
        let mut n = 0;
        for (slot, &b) in anchors.iter_mut().zip(path.iter()) {
            let r = self.replica_of(b, BlockKind::RmapTree, 0)?;
            *slot = ReplicaPair {
                node: b.into(),
                replica: r.into(),
            };
            n += 1;
        }
        self.meta.sb.anchors = anchors;
        self.meta.sb.anchor_count = (n as u32).into();
        Ok(())
    }

    /// Whether anything was changed.
    pub fn is_empty(&self) -> bool {
        self.dirty.is_empty()
            && self.deltas.is_empty()
            && self.rmap_deltas.is_empty()
            && self.rmap_top.is_empty()
            && self.meta.sb.as_bytes_eq(&self.sb_before)
    }
}

/// Drops the blocks of `freed` ranges from `blocks`.
fn drop_freed(blocks: &mut BlockMap<NodeBuf>, freed: &[(u64, u64)]) {
    if blocks.is_empty() || freed.is_empty() {
        return;
    }
    blocks.retain(|b, _| !freed.iter().any(|&(s, l)| (s..s + l).contains(b)));
}

/// Makes the lazy transactions committed so far durable, in one journal
/// commit (nothing to do when there are none).
pub fn flush_lazy(dev: &dyn Device, meta: &mut Meta) -> Result<()> {
    // A group being written is durable first (or its error is this one's).
    crate::group::quiesce(meta)?;
    if meta.lazy_txs == 0 {
        return Ok(());
    }
    Tx::open_inner(dev, meta, false)?.commit()
}

/// Puts the reverse map's pending changes into its nodes and logs them (one
/// journal commit; nothing to do when there are none), so that its nodes
/// on media hold every record and the log no intents.
pub fn flush_intents(dev: &dyn Device, meta: &mut Meta) -> Result<()> {
    crate::group::quiesce(meta)?;
    if meta.cache.rmap_pending.is_empty() && meta.intents.is_empty() {
        return Ok(());
    }
    Tx::open_inner(dev, meta, false)?.commit()
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
    read_verified_as(dev, b, b, kind, owner, fs_id)
}

/// Reads block `at` from the device and verifies it as a copy of block `b`
/// (`at` is `b` or its replica).
pub fn read_verified_as(
    dev: &dyn Device,
    at: u64,
    b: u64,
    kind: BlockKind,
    owner: Option<u64>,
    fs_id: u64,
) -> Result<Box<Block>, TreeError> {
    let mut blk = Box::new([0u8; BLOCK_SIZE]);
    if at > u64::MAX / BLOCK_SIZE_U64 {
        return Err(TreeError::Corrupt {
            kind: kind.name(),
            block: at,
            what: "block number is past the end of the device".into(),
        });
    }
    dev.read(at * BLOCK_SIZE_U64, &mut blk[..])
        .map_err(|e| match e {
            daxfs_device::DeviceError::Media { .. } => TreeError::Media { block: at },
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
        crc: u32,
    ) -> Result<NodeBuf, TreeError> {
        self.read_meta(b.0, kind, Some(owner), Some(crc))
    }
    fn write_node(&mut self, b: BlockNo, node: NodeBuf) -> Result<u32, TreeError> {
        // An internal node of the reverse map: its routing may have changed.
        if node[4] == BlockKind::RmapTree as u8 && node[5] > 0 {
            self.rmap_shape = true;
        }
        Ok(self.stage(b.0, node))
    }
    fn alloc_node(&mut self, kind: BlockKind, owner: u64) -> Result<BlockNo, TreeError> {
        let fail = |e: FsError| match e {
            FsError::NoSpace(_) => TreeError::NoSpace,
            e => TreeError::Store(e.to_string()),
        };
        let (s, _) = self.alloc_extent(1, None).map_err(fail)?;
        let mut r = 0;
        if self.meta.replicas() {
            r = match self.alloc_far(s, None) {
                Ok(r) => r,
                Err(e) => {
                    self.free_extent(s, 1);
                    return Err(fail(e));
                }
            };
            self.new_pairs.insert(s, r);
        }
        if kind == BlockKind::RmapTree {
            self.rmap_shape = true;
        }
        if self.rmap_enabled() {
            self.rmap_deltas
                .push(RmapDelta::Add(s, Owner::of_node(kind, owner), r));
        }
        Ok(BlockNo(s))
    }
    fn free_node(&mut self, b: BlockNo, kind: BlockKind, owner: u64) -> Result<(), TreeError> {
        let r = self
            .replica_of(b.0, kind, owner)
            .map_err(|e| TreeError::Store(e.to_string()))?;
        if kind == BlockKind::RmapTree {
            self.rmap_shape = true;
        }
        if self.rmap_enabled() {
            let o = Owner::of_node(kind, owner);
            match self
                .rmap_deltas
                .iter()
                .position(|d| *d == RmapDelta::Add(b.0, o, r))
            {
                Some(i) => {
                    self.rmap_deltas.swap_remove(i);
                }
                None => self.rmap_deltas.push(RmapDelta::Remove(b.0, o, r)),
            }
        }
        self.free_extent(b.0, 1);
        if r != 0 {
            self.free_extent(r, 1);
        }
        Ok(())
    }
}

/// A read-only store over committed metadata (for lookups outside a
/// transaction, and tools), optionally through the node cache (the caller
/// then holds the metadata lock). Reads fall back to replicas.
pub type ReadStore<'a> = Committed<'a>;

/// Keeps `TreeRoot` in scope for users of this module.
pub type Root = TreeRoot;

/// A transaction's reverse map: its own changes, over the committed pending
/// ones, over the tree (see [`Tx::commit`]). Changes stay in the
/// transaction until its commit, unless the commit is putting them in the
/// tree.
impl rmap::Records for Tx<'_> {
    fn get(&mut self, k: &rmap::Key) -> Result<Option<RmapRecord>> {
        if !self.rmap_direct {
            if let Some(v) = self.rmap_top.get(k) {
                return Ok(*v);
            }
            if let Some(v) = self.meta.cache.rmap_pending.get(k) {
                return Ok(*v);
            }
        }
        let root = self.meta.sb.rmap_tree;
        Ok(rmap::tree().get(self, &root, k)?)
    }
    fn put(&mut self, k: rmap::Key, v: RmapRecord) -> Result<()> {
        if self.rmap_direct {
            let mut root = self.meta.sb.rmap_tree;
            rmap::tree().insert(self, &mut root, k, v)?;
            self.meta.sb.rmap_tree = root;
        } else {
            self.rmap_top.insert(k, Some(v));
            if self.rmap_overflows(0) {
                self.rmap_go_direct()?;
            }
        }
        Ok(())
    }
    fn del(&mut self, k: &rmap::Key) -> Result<()> {
        if self.rmap_direct {
            let mut root = self.meta.sb.rmap_tree;
            rmap::tree().remove(self, &mut root, k)?;
            self.meta.sb.rmap_tree = root;
        } else {
            self.rmap_top.insert(*k, None);
            if self.rmap_overflows(0) {
                self.rmap_go_direct()?;
            }
        }
        Ok(())
    }
    fn walk(
        &mut self,
        lo: &rmap::Key,
        hi: &rmap::Key,
        after: Option<u64>,
        f: &mut dyn FnMut(rmap::Key, RmapRecord) -> std::ops::ControlFlow<()>,
    ) -> Result<()> {
        let root = self.meta.sb.rmap_tree;
        if self.rmap_direct {
            return rmap::walk_layered(self, &root, &[], lo, hi, after, f);
        }
        let top = std::mem::take(&mut self.rmap_top);
        let pending = self.meta.cache.rmap_pending.clone();
        let r = rmap::walk_layered(self, &root, &[&top, &pending], lo, hi, after, f);
        self.rmap_top = top;
        r
    }
    fn put_sorted(&mut self, items: &[(rmap::Key, RmapRecord)]) -> Result<usize> {
        if !self.rmap_direct && self.rmap_overflows(items.len()) {
            self.rmap_go_direct()?;
        }
        if self.rmap_direct {
            let mut root = self.meta.sb.rmap_tree;
            let n = rmap::tree().insert_sorted(self, &mut root, items)?;
            self.meta.sb.rmap_tree = root;
            return Ok(n);
        }
        let mut replaced = 0;
        for &(k, v) in items {
            replaced += usize::from(self.get(&k)?.is_some());
            self.rmap_top.insert(k, Some(v));
        }
        Ok(replaced)
    }
}
