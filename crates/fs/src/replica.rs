//! Metadata replicas: every tree node has a copy far from it on the device,
//! and a bad copy is rebuilt from the good one.
//!
//! - Placement: a node's replica is allocated with it, in the other half of
//!   the device (see [`FreeMap::pick_far`](crate::space::alloc::FreeMap::pick_far)).
//!   The pair is durable in the reverse map (the node's record names its
//!   replica, and the replica has a record of its own naming the node) and
//!   known in memory ([`Replicas`]) from allocation or a first lookup, so
//!   commits need no lookups for the nodes they allocate.
//! - Writes: the checkpoint writes every image to its home and to its
//!   replica, identical bytes (the header names the home, so a replica
//!   verifies as a copy of its home); the log's descriptors name both, so
//!   recovery rewrites both.
//! - Reads: a committed node that fails its checks (checksum, place, kind,
//!   owner) or cannot be read is read from its replica ([`Committed::read`])
//!   and queued for repair; the operation goes on with the good copy.
//! - Repair, in one transaction: a fresh block gets the good bytes, the
//!   parent's pointer (or the root in the superblock or the inode) moves to
//!   it, the reverse map follows, the old block goes into the bad-block tree,
//!   and the error log says "repaired". Queued repairs run when the next
//!   transaction begins or the current one has committed; a media-error
//!   report repairs inside its own transaction. A bad replica is replaced
//!   the same way, from the node.
//! - When both copies are bad the file system shuts down: writes fail with
//!   EIO, reads go on where they can.
//!
//! Finding a replica: from memory; else the node's own reverse-map record.
//! A reverse-map node can hold its own record (the root always does), so the
//! superblock names the reverse-map nodes on the path to the middle of the
//! device with their replicas (every other reverse-map node covers keys of
//! one half only), and the record of a reverse-map node's replica is looked
//! for in the other half, without reading the node.
use crate::error::{FsError, Result};
use crate::fs::lock;
use crate::inode::{inode_tree, orphan_tree};
use crate::media::{FailureFlags, error_log, log_event, loss_tree};
use crate::space::rmap::{self, Mapping, Owner};
use crate::space::{badblocks, refcount};
use crate::tx::{Meta, NodeCache, Tx, free_tree, read_verified, read_verified_as};
use daxfs_btree::{BTree, NodeBuf, NodeStore, TreeError};
use daxfs_device::Device;
use daxfs_format::records::{Key, Record, TreeRoot, action};
use daxfs_format::superblock::STATE_ERRORS;
use daxfs_format::{Block, BlockKind, BlockNo, Superblock};
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Mutex;

/// A committed node read through its replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fallback {
    pub block: u64,
    pub replica: u64,
    pub kind: BlockKind,
    pub owner: u64,
    /// Why the node itself did not do.
    pub why: String,
}

/// Replica state shared by transactions and readers.
#[derive(Debug, Default)]
pub struct Replicas {
    enabled: bool,
    total: u64,
    /// Node -> replica, for nodes allocated or looked up since mount.
    pairs: crate::tx::BlockMap<u64>,
    /// The reverse map's root as of the last commit.
    rmap_root: TreeRoot,
    /// The anchors last taken in.
    anchors: [daxfs_format::superblock::ReplicaPair; daxfs_format::superblock::MAX_ANCHORS],
    /// Nodes read through their replica, to be repaired.
    pub pending: Vec<Fallback>,
    /// Nodes whose replica was bad too (`replica` 0: none was found).
    pub failed: Vec<Fallback>,
    /// Queued repairs that have run since a media-error report last looked
    /// (a report names them among the owners it handled).
    pub repaired: Vec<Fallback>,
}

impl Replicas {
    /// Most pairs kept in memory (when full it starts over; the reverse map
    /// has them all).
    pub const CAPACITY: usize = 1 << 20;

    pub fn new(sb: &Superblock) -> Replicas {
        let mut r = Replicas {
            enabled: sb.has_replicas(),
            total: sb.total_blocks.get(),
            ..Default::default()
        };
        r.after_commit(sb);
        r
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn get(&self, node: u64) -> Option<u64> {
        self.pairs.get(&node).copied()
    }

    pub fn insert(&mut self, node: u64, replica: u64) {
        self.pairs.insert(node, replica);
    }

    pub fn remove(&mut self, node: u64) {
        self.pairs.remove(&node);
    }

    /// Takes in a committed superblock: its reverse-map root and anchors.
    pub fn after_commit(&mut self, sb: &Superblock) {
        self.rmap_root = sb.rmap_tree;
        if self.pairs.len() > Self::CAPACITY {
            self.pairs.clear();
        } else if self.anchors == sb.anchors {
            return;
        }
        self.anchors = sb.anchors;
        for a in sb.anchors() {
            if a.replica.get() != 0 {
                self.pairs.insert(a.node.get(), a.replica.get());
            }
        }
    }
}

/// A read-only store over committed metadata, whose reads fall back to
/// replicas: the node cache (when given; the caller holds the metadata
/// lock), else the device, with fsck's overlay of log images on top.
pub struct Committed<'a> {
    pub dev: &'a dyn Device,
    pub fs_id: u64,
    pub cache: Option<&'a mut NodeCache>,
    pub overlay: Option<&'a HashMap<u64, NodeBuf>>,
    pub reps: Option<&'a Mutex<Replicas>>,
    /// Blocks whose replica is being looked for (a lookup that needs one of
    /// them again fails instead of looping).
    resolving: Vec<u64>,
}

/// Deepest nesting of replica lookups (a lookup can meet another bad node).
const MAX_NESTING: usize = 8;

impl<'a> Committed<'a> {
    pub fn new(
        dev: &'a dyn Device,
        fs_id: u64,
        cache: Option<&'a mut NodeCache>,
        reps: Option<&'a Mutex<Replicas>>,
    ) -> Self {
        Committed {
            dev,
            fs_id,
            cache,
            overlay: None,
            reps,
            resolving: vec![],
        }
    }

    /// Reads block `b` without falling back.
    fn direct(
        &mut self,
        b: u64,
        kind: BlockKind,
        owner: Option<u64>,
        crc: Option<u32>,
    ) -> Result<NodeBuf, TreeError> {
        if let Some(img) = self.overlay.and_then(|o| o.get(&b)) {
            daxfs_format::verify_block(
                img,
                &daxfs_format::block::Expect {
                    blockno: b,
                    kind,
                    owner,
                    fs_id: self.fs_id,
                },
            )?;
            check_crc(b, img, crc)?;
            return Ok(img.clone());
        }
        if let Some(c) = self.cache.as_deref_mut() {
            // A cached copy was verified when read; one that is not the
            // copy the pointer names is not used (media is asked).
            if let Some(blk) = c.get(b, kind, owner)
                && check_crc(b, &blk, crc).is_ok()
            {
                return Ok(blk);
            }
            let blk = NodeBuf::from(read_verified(self.dev, b, kind, owner, self.fs_id)?);
            check_crc(b, &blk, crc)?;
            c.put(b, blk.clone());
            return Ok(blk);
        }
        let blk = read_verified(self.dev, b, kind, owner, self.fs_id)?;
        check_crc(b, &blk, crc)?;
        Ok(blk.into())
    }

    /// Reads committed node `b`, sealed with `crc` when given (the pointer's);
    /// when it fails its checks or cannot be read, reads its replica instead
    /// and queues `b` for repair. When the replica fails too, the node's own
    /// error is returned and the failure queued (the file system shuts
    /// down).
    pub fn read(
        &mut self,
        b: u64,
        kind: BlockKind,
        owner: Option<u64>,
        crc: Option<u32>,
    ) -> Result<NodeBuf, TreeError> {
        let err = match self.direct(b, kind, owner, crc) {
            Ok(blk) => return Ok(blk),
            Err(e) => e,
        };
        if !matches!(err, TreeError::Media { .. } | TreeError::Format(_)) {
            return Err(err);
        }
        let Some(reps) = self.reps else {
            return Err(err);
        };
        if !lock(reps).enabled
            || kind == BlockKind::Superblock
            || kind == BlockKind::LogDescriptor
            || self.resolving.contains(&b)
            || self.resolving.len() >= MAX_NESTING
        {
            return Err(err);
        }
        self.resolving.push(b);
        let r = self.find_replica(b, kind, owner.unwrap_or(0));
        self.resolving.pop();
        let Some(r) = r else {
            return Err(err);
        };
        let fb = Fallback {
            block: b,
            replica: r,
            kind,
            owner: owner.unwrap_or(0),
            why: err.to_string(),
        };
        match read_verified_as(self.dev, r, b, kind, owner, self.fs_id)
            .and_then(|blk| check_crc(b, &blk, crc).map(|()| blk))
        {
            Ok(blk) => {
                let blk = NodeBuf::from(blk);
                if let Some(c) = self.cache.as_deref_mut() {
                    c.put(b, blk.clone());
                }
                let mut g = lock(reps);
                if !g.pending.iter().any(|p| p.block == b) {
                    g.pending.push(fb);
                }
                Ok(blk)
            }
            Err(e2) => {
                let mut g = lock(reps);
                if !g.failed.iter().any(|p| p.block == b) {
                    g.failed.push(Fallback {
                        why: format!("{err}; replica: {e2}"),
                        ..fb
                    });
                }
                Err(err)
            }
        }
    }

    /// The replica of node `h` of a tree of `kind` owned by `owner`: from
    /// memory, else the node's reverse-map record, else (a reverse-map node)
    /// the record of its replica in the other half of the device.
    pub fn find_replica(&mut self, h: u64, kind: BlockKind, owner: u64) -> Option<u64> {
        let reps = self.reps?;
        let (root, total) = {
            let g = lock(reps);
            if let Some(r) = g.get(h) {
                return Some(r);
            }
            (g.rmap_root, g.total)
        };
        let o = Owner::of_node(kind, owner);
        // A replica lies on the device and is not the node itself.
        let usable = |r: u64| r != 0 && r != h && r < total.saturating_sub(1);
        let mut found = match rmap::record_at(&mut self.rmap(root), h, o, false) {
            Ok(Some(m)) if usable(m.replica) => Some(m.replica),
            _ => None,
        };
        if found.is_none() && kind == BlockKind::RmapTree {
            let half = total / 2;
            let (lo, hi) = if h < half {
                (half, u64::MAX)
            } else {
                (0, half.saturating_sub(1))
            };
            let _ = rmap::scan_pairs(&mut self.rmap(root), lo, hi, &mut |m| {
                if m.is_replica && m.owner == o && m.replica == h && usable(m.phys) {
                    found = Some(m.phys);
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            });
        }
        if let Some(r) = found {
            lock(reps).insert(h, r);
        }
        found
    }
}

/// The reverse map as committed, with root `root`: the tree under the node
/// cache's pending changes (when there is a cache). Read only.
pub struct CommittedRecords<'c, 'a> {
    c: &'c mut Committed<'a>,
    root: TreeRoot,
}

impl<'a> Committed<'a> {
    /// The reverse map with root `root`, as committed.
    pub fn rmap(&mut self, root: TreeRoot) -> CommittedRecords<'_, 'a> {
        CommittedRecords { c: self, root }
    }
}

impl rmap::Records for CommittedRecords<'_, '_> {
    fn get(&mut self, k: &rmap::Key) -> Result<Option<daxfs_format::records::RmapRecord>> {
        if let Some(v) = self.c.cache.as_ref().and_then(|c| c.rmap_pending.get(k)) {
            return Ok(*v);
        }
        Ok(rmap::tree().get(self.c, &self.root, k)?)
    }
    fn put(&mut self, k: rmap::Key, _: daxfs_format::records::RmapRecord) -> Result<()> {
        Err(read_only(k))
    }
    fn del(&mut self, k: &rmap::Key) -> Result<()> {
        Err(read_only(*k))
    }
    fn walk(
        &mut self,
        lo: &rmap::Key,
        hi: &rmap::Key,
        after: Option<u64>,
        f: &mut dyn FnMut(rmap::Key, daxfs_format::records::RmapRecord) -> ControlFlow<()>,
    ) -> Result<()> {
        let pending = self.c.cache.as_ref().map(|c| c.rmap_pending.clone());
        let layers: Vec<&rmap::Pending> = pending.iter().map(|p| &**p).collect();
        rmap::walk_layered(self.c, &self.root, &layers, lo, hi, after, f)
    }
}

fn read_only(k: rmap::Key) -> FsError {
    FsError::NotSupported(format!(
        "reverse map: changing the record at block {} through a read-only view",
        k.0
    ))
}

/// Fails unless `blk` (block `b`, verified) was sealed with `crc` (when
/// given): a copy that verifies by itself but is not the one its pointer
/// names is stale (a lost write) or forged.
pub(crate) fn check_crc(b: u64, blk: &Block, crc: Option<u32>) -> Result<(), TreeError> {
    let found = daxfs_btree::sealed_crc(blk);
    match crc {
        Some(expected) if expected != found => Err(daxfs_format::FormatError::StalePointer {
            block: b,
            expected,
            found,
        }
        .into()),
        _ => Ok(()),
    }
}

impl NodeStore for Committed<'_> {
    fn read_node(
        &mut self,
        b: BlockNo,
        kind: BlockKind,
        owner: u64,
        crc: u32,
    ) -> Result<NodeBuf, TreeError> {
        self.read(b.0, kind, Some(owner), Some(crc))
    }
    fn write_node(&mut self, _b: BlockNo, _node: NodeBuf) -> Result<u32, TreeError> {
        Err(TreeError::Store("read-only store".into()))
    }
    fn alloc_node(&mut self, _kind: BlockKind, _owner: u64) -> Result<BlockNo, TreeError> {
        Err(TreeError::Store("read-only store".into()))
    }
    fn free_node(&mut self, _b: BlockNo, _kind: BlockKind, _owner: u64) -> Result<(), TreeError> {
        Err(TreeError::Store("read-only store".into()))
    }
}

/// Runs the repairs queued by reads, each in its own transaction, and shuts
/// the file system down for nodes whose copies are both bad. A repair that
/// cannot run now (the record of the inode whose tree root moves is locked
/// by the caller) stays queued.
pub(crate) fn run_pending(dev: &dyn Device, meta: &mut Meta) {
    if meta.in_repair || meta.shutdown.is_some() {
        return;
    }
    let (pending, failed) = {
        let mut g = lock(&meta.reps);
        if g.pending.is_empty() && g.failed.is_empty() {
            return;
        }
        (
            std::mem::take(&mut g.pending),
            std::mem::take(&mut g.failed),
        )
    };
    meta.in_repair = true;
    let mut again = vec![];
    for f in failed {
        shut_down(dev, meta, &f);
    }
    for p in pending {
        if meta.shutdown.is_some() {
            break;
        }
        let r = Tx::open(dev, meta).and_then(|mut tx| {
            let done = repair_fallback(&mut tx, &p)?;
            if done == Repair::Done {
                tx.commit()?;
            }
            Ok(done)
        });
        match r {
            Ok(Repair::Later) | Err(FsError::NoSpace(_)) => again.push(p),
            Ok(Repair::Done) => {
                let mut g = lock(&meta.reps);
                if g.repaired.len() < 1024 {
                    g.repaired.push(p);
                }
            }
            Ok(Repair::Moot) => {}
            Err(e) => {
                let why = format!("repairing it failed: {e}");
                shut_down(dev, meta, &Fallback { why, ..p });
            }
        }
    }
    lock(&meta.reps).pending.extend(again);
    meta.in_repair = false;
}

/// Records in the error log that node `f.block` could not be repaired and
/// shuts the file system down.
fn shut_down(dev: &dyn Device, meta: &mut Meta, f: &Fallback) {
    let msg = if f.replica == 0 {
        format!(
            "{} block {} is bad and has no replica ({}); run fsck",
            f.kind.name(),
            f.block,
            f.why
        )
    } else {
        format!(
            "{} block {} and its replica {} are both bad ({}); run fsck",
            f.kind.name(),
            f.block,
            f.replica,
            f.why
        )
    };
    if let Ok(mut tx) = Tx::open(dev, meta) {
        let event = tx.meta.sb.error_seq.get();
        let (okind, ino) = owner_codes(f.kind, f.owner);
        let logged = log_event(
            &mut tx,
            event,
            f.block,
            1,
            action::SHUT_DOWN,
            okind,
            ino,
            0,
            FailureFlags::default(),
        );
        tx.meta.sb.state = (tx.meta.sb.state.get() | STATE_ERRORS).into();
        if logged.is_ok() {
            let _ = tx.commit();
        }
    }
    meta.shutdown.get_or_insert(msg);
}

/// The error log's owner kind and inode (or BlockKind) of a tree node.
fn owner_codes(kind: BlockKind, owner: u64) -> (u32, u64) {
    match kind {
        BlockKind::ExtentTree | BlockKind::DirTree => (2, owner),
        k => (3, k as u64),
    }
}

/// What became of a repair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Repair {
    Done,
    /// Nothing to do (the node was freed or moved since).
    Moot,
    /// Cannot run now; try again later.
    Later,
}

/// Repairs a node that a read found bad (its replica was good then).
fn repair_fallback(tx: &mut Tx<'_>, p: &Fallback) -> Result<Repair> {
    let o = Owner::of_node(p.kind, p.owner);
    match rmap::record_at(tx, p.block, o, false)? {
        Some(m) if m.replica == p.replica => {}
        _ => return Ok(Repair::Moot),
    }
    let good = read_verified_as(
        tx.dev(),
        p.replica,
        p.block,
        p.kind,
        Some(p.owner),
        tx.meta.fs_id,
    )?;
    let moved = move_node(tx, p.block, p.replica, p.kind, p.owner, good.into(), None)?;
    if moved != Repair::Done {
        return Ok(moved);
    }
    let mut broot = tx.meta.sb.badblock_tree;
    badblocks::add(tx, &mut broot, p.block, 1)?;
    tx.meta.sb.badblock_tree = broot;
    let event = tx.meta.sb.error_seq.get();
    let (okind, ino) = owner_codes(p.kind, p.owner);
    log_event(
        tx,
        event,
        p.block,
        1,
        action::REPAIRED,
        okind,
        ino,
        0,
        FailureFlags::default(),
    )?;
    Ok(Repair::Done)
}

/// Moves node `h` (replica `r`) of a tree of `kind` owned by `owner` to a
/// fresh block holding `good` (its verified contents): the reference to it,
/// the reverse map and the pair in memory follow. `h` is neither freed nor
/// read again. A blocked region `avoid` (a reported bad range) is not
/// allocated from; a repair with none runs between other transactions,
/// where the caller may hold the record of the inode whose tree root moves:
/// it then waits ([`Repair::Later`]).
fn move_node(
    tx: &mut Tx<'_>,
    h: u64,
    r: u64,
    kind: BlockKind,
    owner: u64,
    good: NodeBuf,
    avoid: Option<(u64, u64)>,
) -> Result<Repair> {
    let Some(target) = Repoint::prepare(tx, h, kind, owner, avoid)? else {
        return Ok(Repair::Later);
    };
    let new = tx.alloc_far(r, avoid)?;
    // Changed earlier in this transaction: the staged contents are the
    // newest, and the bad block is not written.
    let good = tx.unstage(h).unwrap_or(good);
    target.finish(tx, new, good)?;
    let o = Owner::of_node(kind, owner);
    rmap::remove(tx, h, 1, o)?;
    rmap::add(
        tx,
        Mapping {
            replica: r,
            ..Mapping::new(new, 1, o, false)
        },
    )?;
    match rmap::record_at(tx, r, o, true)? {
        Some(m) => rmap::set_replica(tx, &m, new)?,
        None => rmap::add(
            tx,
            Mapping {
                replica: new,
                is_replica: true,
                ..Mapping::new(r, 1, o, false)
            },
        )?,
    }
    if kind == BlockKind::RmapTree {
        tx.rmap_shape = true;
    }
    tx.new_pairs.insert(new, r);
    tx.meta.cache.forget(h, 1);
    Ok(Repair::Done)
}

/// Moving the pointer to node `h` (of a tree of `kind` owned by `owner`):
/// the inode record that holds the tree's root, for a file's or
/// directory's tree, and that inode in memory (the root's crc changes
/// whichever node of the tree moves).
struct Repoint {
    h: u64,
    kind: BlockKind,
    owner: u64,
    inode: Option<daxfs_format::records::InodeRecord>,
    cached: Option<std::sync::Arc<crate::inode::Inode>>,
}

impl Repoint {
    /// `None` when the inode whose tree root is `h` is locked by the caller
    /// (a repair between transactions, `avoid` none): the repair waits.
    fn prepare(
        tx: &mut Tx<'_>,
        h: u64,
        kind: BlockKind,
        owner: u64,
        avoid: Option<(u64, u64)>,
    ) -> Result<Option<Repoint>> {
        // The record of an inode whose tree root moves must be free to update.
        let inode = match kind {
            BlockKind::ExtentTree | BlockKind::DirTree => {
                let iroot = tx.meta.sb.inode_tree;
                let rec = crate::inode::read_record(tx, &iroot, owner)?.ok_or_else(|| {
                    FsError::Corrupt(format!("{} block {h}: no inode {owner}", kind.name()))
                })?;
                Some(rec)
            }
            _ => None,
        };
        let cached = match (&inode, &tx.meta.icache) {
            (Some(_), Some(ic)) => lock(ic).get(&owner).cloned(),
            _ => None,
        };
        if let Some(node) = &cached
            && avoid.is_none()
            && matches!(
                node.rec.try_lock(),
                Err(std::sync::TryLockError::WouldBlock)
            )
        {
            return Ok(None);
        }
        Ok(Some(Repoint {
            h,
            kind,
            owner,
            inode,
            cached,
        }))
    }

    /// Stages `good` (the node's contents) at `new` (`h` itself, resealed,
    /// or a fresh block) and makes the pointer to `h` name it with its new
    /// crc, and every pointer above (the root in the superblock or the
    /// inode, and the inode in memory once committed).
    fn finish(self, tx: &mut Tx<'_>, new: u64, good: NodeBuf) -> Result<()> {
        let Repoint {
            h,
            kind,
            owner,
            inode,
            cached,
        } = self;
        let crc = tx.stage(new, good.clone());
        let moved = match inode {
            Some(mut rec) => {
                let mut root = rec.tree;
                let old_root = root.block.get();
                let ok = if kind == BlockKind::DirTree {
                    reloc(tx, crate::dir::tree(owner), &mut root, h, new, crc, &good)?
                } else {
                    reloc(
                        tx,
                        crate::extents::tree(owner),
                        &mut root,
                        h,
                        new,
                        crc,
                        &good,
                    )?
                };
                if root != rec.tree {
                    rec.tree = root;
                    crate::fs::put_record(tx, &rec)?;
                }
                if let Some(node) = cached {
                    tx.root_moves.push((node, old_root, root));
                }
                ok
            }
            None => relocate_global(tx, kind, h, new, crc, &good)?,
        };
        if !moved {
            return Err(FsError::Corrupt(format!(
                "{} block {h}: no pointer to it was found (owner {owner})",
                kind.name()
            )));
        }
        Ok(())
    }
}

/// Points the reference to node `old` (contents `blk`) at `new`, sealed
/// with `crc`.
fn reloc<K: Key, V: Record, A: daxfs_btree::Summary<K, V>>(
    tx: &mut Tx<'_>,
    t: BTree<K, V, A>,
    root: &mut TreeRoot,
    old: u64,
    new: u64,
    crc: u32,
    blk: &Block,
) -> Result<bool> {
    let (key, level) = t.node_key(blk)?;
    Ok(t.relocate(tx, root, old, new, crc, key.as_ref(), level)?)
}

/// [`reloc`] for the trees whose root is in the superblock.
fn relocate_global(
    tx: &mut Tx<'_>,
    kind: BlockKind,
    old: u64,
    new: u64,
    crc: u32,
    blk: &Block,
) -> Result<bool> {
    macro_rules! sb_tree {
        ($field:ident, $tree:expr) => {{
            let mut root = tx.meta.sb.$field;
            let ok = reloc(tx, $tree, &mut root, old, new, crc, blk)?;
            tx.meta.sb.$field = root;
            ok
        }};
    }
    Ok(match kind {
        BlockKind::InodeTree => sb_tree!(inode_tree, inode_tree()),
        BlockKind::FreeTree => sb_tree!(free_tree, free_tree()),
        BlockKind::OrphanTree => sb_tree!(orphan_tree, orphan_tree()),
        BlockKind::RefcountTree => sb_tree!(refcount_tree, refcount::tree()),
        BlockKind::RmapTree => sb_tree!(rmap_tree, rmap::tree()),
        BlockKind::ParentTree => sb_tree!(parent_tree, crate::dir::parent_tree()),
        BlockKind::ErrorLog => sb_tree!(error_log, error_log()),
        BlockKind::LossTree => sb_tree!(loss_tree, loss_tree()),
        BlockKind::BadBlockTree => sb_tree!(badblock_tree, badblocks::tree()),
        BlockKind::XattrTree => sb_tree!(xattr_tree, crate::xattr::tree()),
        k => {
            return Err(FsError::Corrupt(format!(
                "block {old}: a {} block is not a tree node",
                k.name()
            )));
        }
    })
}

/// Gives node `h` a fresh replica in place of `r` (bad), written from `good`
/// (the node's verified contents, the ones its pointer names). False,
/// changing nothing, when the inode whose tree root is `h` is locked by
/// the caller (see [`Repoint::prepare`]).
fn replace_replica(
    tx: &mut Tx<'_>,
    h: u64,
    r: u64,
    kind: BlockKind,
    owner: u64,
    good: NodeBuf,
    avoid: Option<(u64, u64)>,
) -> Result<bool> {
    // Staged (first, so that the changes below apply to it), so the
    // checkpoint writes it to the new replica. Sealed again for this
    // transaction, its crc changes: the pointers above follow.
    if !tx.is_staged(h) {
        let Some(target) = Repoint::prepare(tx, h, kind, owner, avoid)? else {
            return Ok(false);
        };
        target.finish(tx, h, good)?;
    }
    let r2 = tx.alloc_far(h, avoid)?;
    let o = Owner::of_node(kind, owner);
    rmap::remove_as(tx, r, 1, o, true)?;
    rmap::add(
        tx,
        Mapping {
            replica: h,
            is_replica: true,
            ..Mapping::new(r2, 1, o, false)
        },
    )?;
    if let Some(m) = rmap::record_at(tx, h, o, false)? {
        rmap::set_replica(tx, &m, r2)?;
    }
    tx.new_pairs.insert(h, r2);
    // The old replica is never used again.
    let mut broot = tx.meta.sb.badblock_tree;
    badblocks::add(tx, &mut broot, r, 1)?;
    tx.meta.sb.badblock_tree = broot;
    if kind == BlockKind::RmapTree {
        tx.rmap_shape = true;
    }
    Ok(true)
}

/// The verified contents of node `at` read as a copy of node `h`: the node
/// cache first (it holds only what was committed), then the device.
fn good_copy(tx: &mut Tx<'_>, at: u64, h: u64, kind: BlockKind, owner: u64) -> Option<NodeBuf> {
    if at == h
        && let Some(b) = tx.meta.cache.get(h, kind, Some(owner))
    {
        return Some(b);
    }
    read_verified_as(tx.dev(), at, h, kind, Some(owner), tx.meta.fs_id)
        .ok()
        .map(NodeBuf::from)
}

/// Deals with a report of bad memory over `bad` (first block, blocks) that
/// hits metadata record `m`, inside the report's transaction. Returns false
/// when the metadata cannot be repaired (no replica, or both copies bad);
/// nothing was changed then.
pub(crate) fn repair_hit(tx: &mut Tx<'_>, m: &Mapping, bad: (u64, u64)) -> Result<bool> {
    if !tx.meta.replicas() {
        return Ok(false);
    }
    let in_bad = |b: u64| b >= bad.0 && b < bad.0 + bad.1;
    match m.owner {
        // Both copies are rewritten from memory by this transaction's
        // commit, whole (not only the lines that change).
        Owner::Meta(BlockKind::Superblock) => {
            let total = tx.meta.sb.total_blocks.get();
            tx.meta.log_head.clear();
            Ok(!(in_bad(0) && in_bad(total - 1)))
        }
        Owner::Meta(BlockKind::LogDescriptor) => move_log(tx, m, bad),
        o => {
            let (kind, owner) = match o {
                Owner::Meta(k) => (k, 0),
                Owner::ExtentTree { ino } => (BlockKind::ExtentTree, ino),
                Owner::DirTree { ino } => (BlockKind::DirTree, ino),
                Owner::Data { .. } => return Ok(false),
            };
            let (h, r) = if m.is_replica {
                (m.replica, m.phys)
            } else {
                (m.phys, m.replica)
            };
            if h == 0 || r == 0 {
                return Ok(false);
            }
            let good_at = if m.is_replica { h } else { r };
            if in_bad(good_at) {
                return Ok(false);
            }
            let Some(good) = good_copy(tx, good_at, h, kind, owner) else {
                return Ok(false);
            };
            if m.is_replica {
                replace_replica(tx, h, r, kind, owner, good, Some(bad))?;
            } else {
                match move_node(tx, h, r, kind, owner, good, Some(bad))? {
                    Repair::Done => {}
                    _ => return Ok(false),
                }
            }
            Ok(true)
        }
    }
}

/// A bad block in the log or its replica region: that region is replaced by
/// a fresh one far from the other, and its good blocks are freed. A log
/// with no room for a fresh replica region goes on without one; a log with
/// no room to move cannot be repaired.
fn move_log(tx: &mut Tx<'_>, m: &Mapping, bad: (u64, u64)) -> Result<bool> {
    let (start, len, rep) = (
        tx.meta.sb.log_start.get(),
        tx.meta.sb.log_blocks.get(),
        tx.meta.sb.log_replica.get(),
    );
    let mlen = daxfs_format::superblock::log_mirror_blocks(len);
    if rep == 0 {
        return Ok(false);
    }
    let overlaps = |a: u64, l: u64| a < bad.0 + bad.1 && bad.0 < a + l;
    if overlaps(start, len) && overlaps(rep, mlen) {
        return Ok(false);
    }
    let o = Owner::Meta(BlockKind::LogDescriptor);
    let (old, old_len, new_start, new_rep) = if m.is_replica {
        let fresh = tx.alloc_run_far(mlen, start, bad)?;
        (rep, mlen, start, fresh.unwrap_or(0))
    } else {
        let Some(fresh) = tx.alloc_run_far(len, rep, bad)? else {
            return Ok(false);
        };
        (start, len, fresh, rep)
    };
    rmap::remove_as(tx, start, len, o, false)?;
    rmap::remove_as(tx, rep, mlen, o, true)?;
    rmap::add(
        tx,
        Mapping {
            replica: new_rep,
            ..Mapping::new(new_start, len, o, false)
        },
    )?;
    if new_rep != 0 {
        rmap::add(
            tx,
            Mapping {
                replica: new_start,
                is_replica: true,
                ..Mapping::new(new_rep, mlen, o, false)
            },
        )?;
    }
    tx.meta.sb.log_start = new_start.into();
    tx.meta.sb.log_replica = new_rep.into();
    // The old region's good blocks go back to free space (once this
    // transaction, which still writes through the old region, is durable).
    let (bs, be) = (
        bad.0.clamp(old, old + old_len),
        (bad.0 + bad.1).clamp(old, old + old_len),
    );
    if bs > old {
        tx.free_extent(old, bs - old);
    }
    if be < old + old_len {
        tx.free_extent(be, old + old_len - be);
    }
    Ok(true)
}

/// The crc every pointer to a tree node names (the superblock's trees, and
/// every file's and directory's), by the node's block. A tree that cannot
/// be walked leaves its nodes out.
fn pointer_crcs(rs: &mut Committed<'_>, sb: &Superblock) -> crate::tx::BlockMap<u32> {
    let mut out = crate::tx::BlockMap::default();
    let mut add = |b: BlockNo, _, crc| {
        out.insert(b.0, crc);
    };
    let _ = free_tree().visit_sealed(rs, &sb.free_tree, &mut add);
    let _ = inode_tree().visit_sealed(rs, &sb.inode_tree, &mut add);
    let _ = orphan_tree().visit_sealed(rs, &sb.orphan_tree, &mut add);
    let _ = refcount::tree().visit_sealed(rs, &sb.refcount_tree, &mut add);
    let _ = rmap::tree().visit_sealed(rs, &sb.rmap_tree, &mut add);
    let _ = crate::dir::parent_tree().visit_sealed(rs, &sb.parent_tree, &mut add);
    let _ = error_log().visit_sealed(rs, &sb.error_log, &mut add);
    let _ = loss_tree().visit_sealed(rs, &sb.loss_tree, &mut add);
    let _ = badblocks::tree().visit_sealed(rs, &sb.badblock_tree, &mut add);
    let _ = crate::xattr::tree().visit_sealed(rs, &sb.xattr_tree, &mut add);
    let mut recs = vec![];
    let _ = inode_tree().range(rs, &sb.inode_tree, &0, &u64::MAX, &mut |_, r| {
        if !r.tree.is_empty() {
            recs.push((r.ino.get(), r.mode.get(), r.tree));
        }
        ControlFlow::Continue(())
    });
    for (ino, mode, root) in recs {
        let _ = if crate::inode::FileKind::of_mode(mode) == Some(crate::inode::FileKind::Dir) {
            crate::dir::tree(ino).visit_sealed(rs, &root, &mut add)
        } else {
            crate::extents::tree(ino).visit_sealed(rs, &root, &mut add)
        };
    }
    out
}

/// One node and its replica, as [`crate::Fs::replica_pairs`] lists them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaPair {
    /// The node's block.
    pub block: u64,
    /// Its replica's block.
    pub replica: u64,
    /// The tree it belongs to ("inode table", "directory block", ...).
    pub kind: &'static str,
    /// The inode owning the tree (directory and extent trees), else 0.
    pub ino: u64,
    /// Blocks (more than one for the log).
    pub blocks: u64,
}

/// What [`crate::Fs::scrub_replicas`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaScrub {
    /// Pairs checked.
    pub checked: u64,
    /// Nodes rebuilt from their replica.
    pub repaired_nodes: u64,
    /// Replicas rebuilt from their node.
    pub repaired_replicas: u64,
}

impl crate::Fs {
    /// Every metadata block that has a replica (tree nodes and the log), in
    /// device order. Empty without replicas.
    pub fn replica_pairs(&self) -> Result<Vec<ReplicaPair>> {
        let inner = &*self.inner;
        let mut meta = lock(&inner.meta);
        let root = meta.sb.rmap_tree;
        let mut rs = inner.cached_reader(&mut meta);
        let mut out = vec![];
        rmap::scan_pairs(&mut rs.rmap(root), 0, u64::MAX, &mut |m| {
            if !m.is_replica {
                let (kind, ino) = match m.owner {
                    Owner::Meta(k) => (k.name(), 0),
                    Owner::ExtentTree { ino } => (BlockKind::ExtentTree.name(), ino),
                    Owner::DirTree { ino } => (BlockKind::DirTree.name(), ino),
                    Owner::Data { ino, .. } => ("data", ino),
                };
                out.push(ReplicaPair {
                    block: m.phys,
                    replica: m.replica,
                    kind,
                    ino,
                    blocks: m.len,
                });
            }
            ControlFlow::Continue(())
        })?;
        Ok(out)
    }

    /// Reads every replicated tree node and its replica and rebuilds the
    /// copies that are bad, differ from their node or are not the one the
    /// pointer to the node names (a node that fails or is stale is rebuilt
    /// from its replica and moves; a replica that fails or differs is
    /// rebuilt from its node), and moves the copies that lie in a range
    /// known bad. Costs a read of all metadata.
    ///
    /// It goes in steps, one pair at a time in device order, each looked up
    /// afresh in the reverse map and repaired in a transaction of its own:
    /// a repair moves blocks, and the trees it changes may gain, lose or
    /// move nodes, so a list of pairs taken before the first repair would
    /// not hold after it. However many copies need rebuilding, no
    /// transaction outgrows the log; one that fails (no space, a bad read)
    /// is dropped whole, the steps before it stay, and a later scrub goes
    /// on from there.
    pub fn scrub_replicas(&self) -> Result<ReplicaScrub> {
        let inner = &*self.inner;
        let mut rep = ReplicaScrub::default();
        let mut meta = lock(&inner.meta);
        if !meta.replicas() {
            return Ok(rep);
        }
        // The steps start from nodes that hold every change: none is made
        // by the commits that open their transactions.
        if meta.shutdown.is_none() {
            crate::tx::flush_lazy(&*inner.dev, &mut meta)?;
            crate::tx::flush_intents(&*inner.dev, &mut meta)?;
        }
        // What every pointer names: of two copies that differ, the one it
        // names is the good one (the other may verify by itself and still
        // be stale, or forged). Taken again after each commit (a repair
        // changes the crcs of the nodes above the ones it rewrites).
        let mut named: Option<(u64, crate::tx::BlockMap<u32>)> = None;
        let mut from = 0;
        loop {
            if named.as_ref().is_none_or(|(seq, _)| *seq != meta.seq) {
                let sb = meta.sb;
                let seq = meta.seq;
                // Nodes the walk reads through their replica are queued
                // for repair; the steps repair them themselves (and count
                // them) when they reach them.
                let queued = lock(&inner.reps).pending.len();
                let mut rs = inner.cached_reader(&mut meta);
                named = Some((seq, pointer_crcs(&mut rs, &sb)));
                lock(&inner.reps).pending.truncate(queued);
            }
            let names = named.as_ref().map(|(_, n)| n);
            match scrub_step(&*inner.dev, &mut meta, from, names, &mut rep)? {
                Some(next) => from = next,
                None => break,
            }
        }
        Ok(rep)
    }
}

/// The first pair of a replicated tree node (not the superblock or the
/// log) whose node lies at or after block `from`, as `rs` has it.
fn next_pair(rs: &mut dyn rmap::Records, from: u64) -> Result<Option<Mapping>> {
    let mut found = None;
    rmap::scan_pairs(rs, from, u64::MAX, &mut |m| {
        let node = match m.owner {
            Owner::Meta(k) => k != BlockKind::Superblock && k != BlockKind::LogDescriptor,
            Owner::Data { .. } => false,
            _ => true,
        };
        if node && !m.is_replica {
            found = Some(*m);
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })?;
    Ok(found)
}

/// True when block `b` lies in a range the bad-block tree holds.
fn known_bad(tx: &mut Tx<'_>, b: u64) -> Result<bool> {
    let root = tx.meta.sb.badblock_tree;
    Ok(!badblocks::overlapping(tx, &root, b, 1)?.is_empty())
}

/// One step of [`crate::Fs::scrub_replicas`]: the first pair at or after
/// block `from`, checked, and repaired in one transaction when it needs it.
/// Returns where the next step starts (the same node again when it still
/// has to move), or `None` past the last pair.
fn scrub_step(
    dev: &dyn Device,
    meta: &mut Meta,
    from: u64,
    named: Option<&crate::tx::BlockMap<u32>>,
    rep: &mut ReplicaScrub,
) -> Result<Option<u64>> {
    // Opening the transaction first makes lazy and pending changes durable,
    // so the pair and the bytes read below are what media holds.
    let mut tx = Tx::open(dev, meta)?;
    let Some(m) = next_pair(&mut tx, from)? else {
        return Ok(None);
    };
    let (kind, owner) = match m.owner {
        Owner::Meta(k) => (k, 0),
        Owner::ExtentTree { ino } => (BlockKind::ExtentTree, ino),
        Owner::DirTree { ino } => (BlockKind::DirTree, ino),
        Owner::Data { .. } => return Ok(Some(m.phys + 1)),
    };
    rep.checked += 1;
    let fs_id = tx.meta.fs_id;
    // A copy in a range known bad moves even when it reads well (the
    // range cannot be cleared while metadata lives there).
    let node_in_bad = known_bad(&mut tx, m.phys)?;
    let copy_in_bad = known_bad(&mut tx, m.replica)?;
    let node = read_verified(dev, m.phys, kind, Some(owner), fs_id);
    let copy = read_verified_as(dev, m.replica, m.phys, kind, Some(owner), fs_id);
    let want = named.and_then(|n| n.get(&m.phys).copied());
    // Both verify and differ, and no pointer was found to say which is
    // right (its tree could not be walked): neither is chosen.
    if want.is_none()
        && let (Ok(a), Ok(b)) = (&node, &copy)
        && a[..] != b[..]
    {
        return Ok(Some(m.phys + 1));
    }
    // A copy that verifies but holds another crc than the pointer's is as
    // bad as one that does not verify.
    let as_named =
        |r: Result<Box<Block>, TreeError>| r.and_then(|b| check_crc(m.phys, &b, want).map(|()| b));
    match (as_named(node), as_named(copy)) {
        (Ok(a), Ok(b)) if a[..] == b[..] && !node_in_bad && !copy_in_bad => {}
        (Ok(a), Ok(b)) if a[..] == b[..] && !copy_in_bad => {
            // Only the node must go: moved onto a fresh block from its
            // (equal) replica.
            let p = Fallback {
                block: m.phys,
                replica: m.replica,
                kind,
                owner,
                why: "in a range known bad".into(),
            };
            if repair_fallback(&mut tx, &p)? == Repair::Done {
                tx.commit()?;
                rep.repaired_nodes += 1;
            } else {
                drop(tx);
                lock(&meta.reps).pending.push(p);
            }
        }
        (Ok(a), _) => {
            replace_replica(&mut tx, m.phys, m.replica, kind, owner, a.into(), None)?;
            let event = tx.meta.sb.error_seq.get();
            let (okind, ino) = owner_codes(kind, owner);
            log_event(
                &mut tx,
                event,
                m.replica,
                1,
                action::REPAIRED,
                okind,
                ino,
                0,
                FailureFlags::default(),
            )?;
            tx.commit()?;
            rep.repaired_replicas += 1;
            // A node in a range known bad moves next, from its new replica.
            if node_in_bad {
                return Ok(Some(m.phys));
            }
        }
        (Err(e), Ok(_)) => {
            let p = Fallback {
                block: m.phys,
                replica: m.replica,
                kind,
                owner,
                why: e.to_string(),
            };
            if repair_fallback(&mut tx, &p)? == Repair::Done {
                // A replica in a range known bad is replaced too, from the
                // moved node (the moved node may lie before `from`).
                if copy_in_bad {
                    let new = tx.new_pairs.iter().find(|(_, r)| **r == m.replica);
                    if let Some((&new, _)) = new {
                        let good = tx.read_meta(new, kind, Some(owner), None)?;
                        replace_replica(&mut tx, new, m.replica, kind, owner, good, None)?;
                        rep.repaired_replicas += 1;
                    }
                }
                tx.commit()?;
                rep.repaired_nodes += 1;
            } else {
                drop(tx);
                lock(&meta.reps).pending.push(p);
            }
        }
        (Err(e), Err(e2)) => {
            drop(tx);
            let f = Fallback {
                block: m.phys,
                replica: m.replica,
                kind,
                owner,
                why: format!("{e}; replica: {e2}"),
            };
            shut_down(dev, meta, &f);
            return Err(FsError::Shutdown(meta.shutdown.clone().unwrap_or_default()));
        }
    }
    Ok(Some(m.phys + 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use daxfs_format::superblock::INCOMPAT_REPLICAS;

    #[test]
    fn anchors_fill_the_pair_map() {
        let mut sb = Superblock::blank();
        sb.incompat = INCOMPAT_REPLICAS.into();
        sb.total_blocks = 4096.into();
        sb.anchor_count = 1.into();
        sb.anchors[0].node = 70.into();
        sb.anchors[0].replica = 4000.into();
        let r = Replicas::new(&sb);
        assert!(r.enabled());
        assert_eq!(r.get(70), Some(4000));
        assert_eq!(r.get(71), None);
    }
}
