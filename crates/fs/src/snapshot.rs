//! Reads with no metadata lock: a snapshot of the committed state,
//! published after each commit, read through a cache of immutable nodes.
//!
//! Every commit, once its state is installed in memory, publishes a
//! [`Snapshot`]: a copy of the superblock (the roots of every tree), the
//! metadata reserve and the lazy layer's blocks. A reader takes the newest snapshot (no lock: each thread keeps
//! the one it used last and compares a counter) and reads the trees from
//! its roots through a [`ReadStore`](SnapStore) of its own, never the
//! transaction's node cache, never the metadata lock.
//!
//! Homes are rewritten in place by checkpoints, so a node a reader finds
//! (in the readers' cache, or on media) may be newer than its snapshot, or
//! torn. Every pointer names its child's checksum (format 5): the reader
//! checks each node against its parent's pointer and, on a mismatch, drops
//! what it read and starts again from a newer snapshot; a mismatch on the
//! newest snapshot is a node that is really bad, and the read is done again
//! on the locked path, which reads the replica and queues the repair.
//!
//! See DESIGN.md "Concurrency" for why inode records are read from the
//! snapshot's inode tree and what is taken from memory.
use crate::dir::{self, components};
use crate::error::{FsError, Result};
use crate::fs::{FsInner, lock};
use crate::inode::FileKind;
use crate::namespace::{MAX_SYMLINKS, SYMLINK_MAX, Stat};
use crate::tx::BlockMap;
use daxfs_btree::{NodeBuf, NodeStore, TreeError};
use daxfs_device::Device;
use daxfs_format::records::InodeRecord;
use daxfs_format::{BlockKind, BlockNo, Superblock};
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// The committed state as a commit left it, for readers without the lock.
#[derive(Debug)]
pub(crate) struct Snapshot {
    /// How many snapshots were published before this one.
    pub seq: u64,
    pub sb: Superblock,
    /// Free blocks ordinary allocations leave alone (statfs's view).
    pub reserve: u64,
    /// Blocks lazy transactions committed in memory only.
    pub lazy: Arc<BlockMap<NodeBuf>>,
    /// Reverse-map records committed but not in the tree yet (the pending
    /// intents, `NodeCache::rmap_pending`).
    pub rmap: Arc<crate::space::rmap::Pending>,
}

/// Shards of the readers' node cache (a shard's lock is held for a hash
/// lookup or insert only).
const SHARDS: usize = 64;
/// Blocks kept per shard before the shard starts over (16384 in all).
const SHARD_CAP: usize = 256;

/// Verified nodes as lock-free readers found them. Entries may be older or
/// newer than a reader's snapshot: each is checked against the pointer
/// that led to it, so a stale entry costs a device read, never a wrong
/// answer. Never taken for what media holds (the transaction's own cache
/// is that).
#[derive(Debug)]
pub(crate) struct ReadCache {
    shards: Vec<RwLock<BlockMap<NodeBuf>>>,
}

impl Default for ReadCache {
    fn default() -> Self {
        ReadCache {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
        }
    }
}

impl ReadCache {
    fn shard(&self, b: u64) -> &RwLock<BlockMap<NodeBuf>> {
        &self.shards[(b as usize) % SHARDS]
    }

    fn get(&self, b: u64) -> Option<NodeBuf> {
        let g = self.shard(b).read().unwrap_or_else(|e| e.into_inner());
        g.get(&b).cloned()
    }

    fn put(&self, b: u64, blk: NodeBuf) {
        let mut g = self.shard(b).write().unwrap_or_else(|e| e.into_inner());
        if g.len() >= SHARD_CAP && !g.contains_key(&b) {
            g.clear();
        }
        g.insert(b, blk);
    }

    /// Drops every entry.
    #[cfg(test)]
    pub fn clear(&self) {
        local::clear();
        for s in &self.shards {
            s.write().unwrap_or_else(|e| e.into_inner()).clear();
        }
    }
}

/// Source of distinct ids for [`Published`] (a thread's kept snapshot is
/// only used for the file system it came from).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The snapshot this thread used last, with its file system's id.
    static LOCAL: RefCell<Option<(u64, Arc<Snapshot>)>> = const { RefCell::new(None) };
}

/// A test's hook, called before each node a lock-free reader reads.
#[cfg(test)]
pub(crate) type ReadHook = Box<dyn FnMut(u64, BlockKind, u64) + Send>;

/// Where commits publish their snapshot (shared by `Meta` and the handle).
pub(crate) struct Published {
    id: u64,
    /// The newest snapshot's `seq`.
    seq: AtomicU64,
    cur: Mutex<Arc<Snapshot>>,
    pub cache: ReadCache,
    /// Reads started again from a newer snapshot (a node had changed).
    pub retries: AtomicU64,
    /// Reads done again on the locked path.
    pub fallbacks: AtomicU64,
    #[cfg(test)]
    pub hook: Mutex<Option<ReadHook>>,
}

impl std::fmt::Debug for Published {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Published")
            .field("seq", &self.seq.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Published {
    pub fn new(sb: Superblock) -> Published {
        Published {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            seq: AtomicU64::new(0),
            cur: Mutex::new(Arc::new(Snapshot {
                seq: 0,
                sb,
                reserve: 0,
                lazy: Arc::default(),
                rmap: Arc::default(),
            })),
            cache: ReadCache::default(),
            retries: AtomicU64::new(0),
            fallbacks: AtomicU64::new(0),
            #[cfg(test)]
            hook: Mutex::new(None),
        }
    }

    /// The newest snapshot's number.
    pub fn current_seq(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }

    /// Runs `f` on the newest snapshot (or one published a moment before).
    pub fn with<R>(&self, f: impl FnOnce(&Snapshot) -> R) -> R {
        let seq = self.seq.load(Ordering::Acquire);
        LOCAL.with(|l| {
            // The kept snapshot is used in place: no count of it changes,
            // so threads reading the same snapshot share no written line.
            if let Ok(g) = l.try_borrow()
                && let Some((id, s)) = &*g
                && *id == self.id
                && s.seq == seq
            {
                return f(s);
            }
            let s = lock(&self.cur).clone();
            if let Ok(mut g) = l.try_borrow_mut() {
                *g = Some((self.id, s.clone()));
            }
            f(&s)
        })
    }
}

/// Publishes the state `meta` holds as the committed one: called once a
/// commit is installed in memory (and at mount), with the metadata lock.
pub(crate) fn publish(meta: &crate::tx::Meta) {
    let p = &meta.published;
    let mut g = lock(&p.cur);
    let seq = g.seq + 1;
    *g = Arc::new(Snapshot {
        seq,
        sb: meta.sb,
        reserve: meta.reserve,
        lazy: meta.cache.lazy_blocks(),
        rmap: meta.cache.rmap_pending.clone(),
    });
    p.seq.store(seq, Ordering::Release);
}

/// A read-only store over one snapshot, for a reader without the lock. A
/// node that is not the one its pointer names (or does not verify, or
/// cannot be read) is not used: the store notes the mismatch and fails the
/// read, and the caller starts again (see the module's documentation).
pub(crate) struct SnapStore<'a> {
    dev: &'a dyn Device,
    fs_id: u64,
    snap: &'a Snapshot,
    published: &'a Published,
    /// Set at the first node that did not match its pointer.
    pub mismatch: Option<String>,
}

impl<'a> SnapStore<'a> {
    pub fn new(
        dev: &'a dyn Device,
        fs_id: u64,
        snap: &'a Snapshot,
        published: &'a Published,
    ) -> Self {
        SnapStore {
            dev,
            fs_id,
            snap,
            published,
            mismatch: None,
        }
    }

    fn refuse(&mut self, e: TreeError) -> TreeError {
        if self.mismatch.is_none() {
            self.mismatch = Some(e.to_string());
        }
        e
    }
}

/// Whether `blk` is a `kind` block of `owner` sealed with `crc`.
fn matches(blk: &daxfs_format::Block, kind: BlockKind, owner: u64, crc: u32) -> bool {
    match daxfs_format::block::header(&blk[..]) {
        Ok(h) => h.kind == kind as u8 && h.owner.get() == owner && h.crc.get() == crc,
        Err(_) => false,
    }
}

/// Each reader thread's own slots of the nodes it met last, in front of
/// the shared readers' cache: a node every read passes (a tree's root, the
/// leaf of a directory's record) found there costs no lock and no change of
/// a count other threads share. A node is copied into a block of the
/// thread's own when it is an inner node, or a leaf met a few times running
/// in its slot; until then the slot holds the shared block. Entries are
/// checked against the pointer that led to them like the shared cache's.
/// At most `SLOTS` blocks per thread stay alive (nodes of a file system
/// gone included, until their slots are taken).
mod local {
    use super::matches;
    use daxfs_btree::NodeBuf;
    use daxfs_format::BlockKind;
    use std::cell::RefCell;

    /// Slots per thread (direct mapped by block number).
    const SLOTS: usize = 64;
    /// Reads of a leaf from its slot before the thread copies it.
    const COPY_AFTER: u32 = 3;

    struct Slot {
        /// The file system's [`super::Published`] id and the block number.
        id: u64,
        b: u64,
        blk: NodeBuf,
        own: bool,
        hits: u32,
    }

    thread_local! {
        static SLOTS_OF: RefCell<Vec<Option<Slot>>> = RefCell::new((0..SLOTS).map(|_| None).collect());
    }

    fn own_copy(blk: &NodeBuf) -> NodeBuf {
        NodeBuf::new(**blk)
    }

    fn inner(blk: &NodeBuf) -> bool {
        daxfs_format::block::header(&blk[..]).is_ok_and(|h| h.level > 0)
    }

    /// The node in this thread's slot for block `b`, when it is the one
    /// named (`kind`, `owner`, sealed with `crc`).
    pub(super) fn get(id: u64, b: u64, kind: BlockKind, owner: u64, crc: u32) -> Option<NodeBuf> {
        SLOTS_OF
            .try_with(|s| {
                let mut s = s.try_borrow_mut().ok()?;
                let slot = s[(b as usize) % SLOTS].as_mut()?;
                if slot.id != id || slot.b != b || !matches(&slot.blk, kind, owner, crc) {
                    return None;
                }
                if !slot.own {
                    slot.hits += 1;
                    if slot.hits >= COPY_AFTER {
                        slot.blk = own_copy(&slot.blk);
                        slot.own = true;
                    }
                }
                Some(slot.blk.clone())
            })
            .ok()
            .flatten()
    }

    /// Keeps `blk` (block `b`, verified) in this thread's slot; returns
    /// the block to use (the thread's own copy when one was made).
    pub(super) fn put(id: u64, b: u64, blk: NodeBuf) -> NodeBuf {
        SLOTS_OF
            .try_with(|s| {
                let Ok(mut s) = s.try_borrow_mut() else {
                    return blk.clone();
                };
                let own = inner(&blk);
                let blk = if own { own_copy(&blk) } else { blk.clone() };
                s[(b as usize) % SLOTS] = Some(Slot {
                    id,
                    b,
                    blk: blk.clone(),
                    own,
                    hits: 0,
                });
                blk
            })
            .unwrap_or(blk)
    }

    /// Empties this thread's slots.
    #[cfg(test)]
    pub(super) fn clear() {
        SLOTS_OF.with(|s| s.borrow_mut().iter_mut().for_each(|x| *x = None));
    }
}

impl NodeStore for SnapStore<'_> {
    fn read_node(
        &mut self,
        b: BlockNo,
        kind: BlockKind,
        owner: u64,
        crc: u32,
    ) -> Result<NodeBuf, TreeError> {
        let b = b.0;
        #[cfg(test)]
        if let Some(h) = lock(&self.published.hook).as_mut() {
            h(b, kind, owner);
        }
        if let Some(blk) = self.snap.lazy.get(&b) {
            if matches(blk, kind, owner, crc) {
                return Ok(blk.clone());
            }
            let e = crate::replica::check_crc(b, blk, Some(crc))
                .err()
                .unwrap_or_else(|| TreeError::Store(format!("lazy block {b} is not a {kind:?}")));
            return Err(self.refuse(e));
        }
        let id = self.published.id;
        if let Some(blk) = local::get(id, b, kind, owner, crc) {
            return Ok(blk);
        }
        if let Some(blk) = self.published.cache.get(b)
            && matches(&blk, kind, owner, crc)
        {
            return Ok(local::put(id, b, blk));
        }
        let blk = match crate::tx::read_verified(self.dev, b, kind, Some(owner), self.fs_id) {
            Ok(blk) => NodeBuf::from(blk),
            Err(e) => return Err(self.refuse(e)),
        };
        if let Err(e) = crate::replica::check_crc(b, &blk, Some(crc)) {
            return Err(self.refuse(e));
        }
        self.published.cache.put(b, blk.clone());
        Ok(local::put(id, b, blk))
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

/// Tries of a lock-free read before it is done on the locked path.
const MAX_TRIES: usize = 8;
/// Yields a reader waits for a commit to be published after a node did
/// not match the newest snapshot.
const PUBLISH_WAITS: usize = 64;

/// A lock-free read in progress: one snapshot and a store over it.
pub(crate) struct Reader<'a> {
    pub fs: &'a FsInner,
    pub snap: &'a Snapshot,
    pub s: SnapStore<'a>,
    /// The answer depends on data blocks (a symbolic link's target): it
    /// stands only if no commit was published meanwhile (one could have
    /// freed them, and a later one reused them).
    pub reads_data: bool,
}

fn kind_of(rec: &InodeRecord) -> Result<FileKind> {
    FileKind::of_mode(rec.mode.get()).ok_or_else(|| {
        FsError::Corrupt(format!(
            "inode {}: unknown file type in mode {:#o}",
            rec.ino.get(),
            rec.mode.get()
        ))
    })
}

impl Reader<'_> {
    /// Inode `ino`'s record in the snapshot, with the times in-place writes
    /// left ahead of the tree (see DESIGN.md "Concurrency").
    pub fn record(&mut self, ino: u64) -> Result<Option<(InodeRecord, FileKind)>> {
        let iroot = self.snap.sb.inode_tree;
        let Some(mut rec) = crate::inode::read_record(&mut self.s, &iroot, ino)? else {
            return Ok(None);
        };
        let kind = kind_of(&rec)?;
        if kind == FileKind::File {
            self.ahead(&mut rec);
        }
        Ok(Some((rec, kind)))
    }

    /// Takes the times of in-place overwrites that the tree lacks, when the
    /// record in memory is the snapshot's but for them.
    fn ahead(&self, rec: &mut InodeRecord) {
        let ino = rec.ino.get();
        if !self.fs.in_place.may_hold(ino) || !self.fs.in_place.lock().contains(&ino) {
            return;
        }
        let Some(node) = lock(&self.fs.icache).get(&ino).cloned() else {
            return;
        };
        for _ in 0..16 {
            let g = match node.rec.try_lock() {
                Ok(g) => g,
                Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => {
                    std::thread::yield_now();
                    continue;
                }
            };
            if g.dirty {
                let mut m = g.rec;
                m.mtime = rec.mtime;
                m.ctime = rec.ctime;
                if zerocopy::IntoBytes::as_bytes(&m) == zerocopy::IntoBytes::as_bytes(&*rec) {
                    rec.mtime = g.rec.mtime;
                    rec.ctime = g.rec.ctime;
                }
            }
            return;
        }
    }

    /// Inode `ino` when it exists, else ENOENT.
    pub fn existing(&mut self, ino: u64) -> Result<(InodeRecord, FileKind)> {
        if ino == 0 {
            return Err(FsError::NotFound(format!("inode {ino}")));
        }
        self.record(ino)?
            .ok_or_else(|| FsError::NotFound(format!("inode {ino}")))
    }

    /// Inode `ino`, which an entry or a parent pointer names.
    fn referenced(&mut self, ino: u64) -> Result<(InodeRecord, FileKind)> {
        self.record(ino)?.ok_or_else(|| {
            FsError::Corrupt(format!(
                "inode {ino} is referenced but not in the inode table"
            ))
        })
    }

    /// The directory `dir`, or ENOTDIR (ENOENT when there is none).
    pub fn dir(&mut self, dir: u64) -> Result<InodeRecord> {
        let (d, kind) = self.existing(dir)?;
        if kind != FileKind::Dir {
            return Err(FsError::NotDir(format!("inode {dir}")));
        }
        Ok(d)
    }

    /// The entry `name` of directory `dir`, as `FsInner::lookup_ino`.
    pub fn lookup(&mut self, dir: u64, name: &[u8]) -> Result<(u64, FileKind)> {
        let d = self.dir(dir)?;
        match name {
            b"." => return Ok((dir, FileKind::Dir)),
            b".." => return Ok((d.parent.get(), FileKind::Dir)),
            _ => {}
        }
        if name.is_empty() {
            // As Linux's lookup of an empty name.
            return Err(FsError::NotFound("empty name".into()));
        }
        dir::check_name(name)?;
        match dir::lookup(&mut self.s, dir, &d.tree, name)? {
            Some(f) => Ok((f.ino, f.kind)),
            None => Err(FsError::NotFound(show(name))),
        }
    }

    /// Resolves `path` from the root, as `reads::resolve_from` does.
    pub fn resolve(&mut self, path: &[u8], follow_last: bool) -> Result<(InodeRecord, FileKind)> {
        let mut budget = MAX_SYMLINKS;
        let root = self.fs.root_ino;
        self.resolve_from(root, path, follow_last, &mut budget)
    }

    fn resolve_from(
        &mut self,
        start: u64,
        path: &[u8],
        follow_last: bool,
        budget: &mut usize,
    ) -> Result<(InodeRecord, FileKind)> {
        let first = if path.first() == Some(&b'/') {
            self.fs.root_ino
        } else {
            start
        };
        let mut cur = self.referenced(first)?;
        let comps = components(path);
        let must_be_dir = crate::reads::wants_dir(path);
        for (i, c) in comps.iter().enumerate() {
            let last = i + 1 == comps.len();
            if cur.1 != FileKind::Dir {
                return Err(FsError::NotDir(show(path)));
            }
            if *c == b".." {
                cur = self.referenced(cur.0.parent.get())?;
                continue;
            }
            if c.len() > daxfs_format::records::NAME_MAX {
                return Err(FsError::NameTooLong(show(path)));
            }
            let ino = cur.0.ino.get();
            let root = cur.0.tree;
            let Some(f) = dir::lookup(&mut self.s, ino, &root, c)? else {
                return Err(FsError::NotFound(show(path)));
            };
            let next = self.referenced(f.ino)?;
            if next.1 == FileKind::Symlink && (!last || follow_last || must_be_dir) {
                if *budget == 0 {
                    return Err(FsError::Loop(show(path)));
                }
                *budget -= 1;
                let target = self.link_target(&next.0)?;
                cur = self.resolve_from(ino, &target, true, budget)?;
            } else {
                cur = next;
            }
        }
        if must_be_dir && cur.1 != FileKind::Dir {
            return Err(FsError::NotDir(show(path)));
        }
        Ok(cur)
    }

    /// A symbolic link's target.
    pub fn link_target(&mut self, rec: &InodeRecord) -> Result<Vec<u8>> {
        self.reads_data = true;
        let size = rec.size.get() as usize;
        if size > SYMLINK_MAX {
            return Err(FsError::Corrupt(format!(
                "symlink inode {}: target of {size} bytes",
                rec.ino.get()
            )));
        }
        let map = crate::extents::ExtentMap::load(&mut self.s, rec.ino.get(), rec)?;
        let mut buf = vec![0u8; size];
        crate::file::read_mapped(&*self.fs.dev, &map, 0, &mut buf)?;
        Ok(buf)
    }

    /// An inode's attributes, with the bytes it lost to media errors.
    pub fn stat(&mut self, rec: &InodeRecord) -> Result<Stat> {
        let mut st = Stat::of(rec);
        let root = self.snap.sb.loss_tree;
        if !root.is_empty() {
            st.lost_bytes = crate::media::losses_of(&mut self.s, &root, rec.ino.get())?
                .values()
                .sum::<u64>()
                * daxfs_format::BLOCK_SIZE_U64;
        }
        Ok(st)
    }
}

/// The reverse map of a snapshot: its tree under its pending records.
/// Read only.
pub(crate) struct SnapRecords<'r, 'a> {
    pub s: &'r mut SnapStore<'a>,
    pub snap: &'a Snapshot,
}

impl<'a> Reader<'a> {
    /// The snapshot's reverse map.
    pub fn rmap(&mut self) -> SnapRecords<'_, 'a> {
        SnapRecords {
            s: &mut self.s,
            snap: self.snap,
        }
    }
}

impl crate::space::rmap::Records for SnapRecords<'_, '_> {
    fn get(
        &mut self,
        k: &crate::space::rmap::Key,
    ) -> Result<Option<daxfs_format::records::RmapRecord>> {
        if let Some(v) = self.snap.rmap.get(k) {
            return Ok(*v);
        }
        let root = self.snap.sb.rmap_tree;
        Ok(crate::space::rmap::tree().get(self.s, &root, k)?)
    }
    fn put(
        &mut self,
        k: crate::space::rmap::Key,
        _: daxfs_format::records::RmapRecord,
    ) -> Result<()> {
        Err(FsError::NotSupported(format!(
            "reverse map: changing the record at block {} in a snapshot",
            k.0
        )))
    }
    fn del(&mut self, k: &crate::space::rmap::Key) -> Result<()> {
        Err(FsError::NotSupported(format!(
            "reverse map: removing the record at block {} in a snapshot",
            k.0
        )))
    }
    fn walk(
        &mut self,
        lo: &crate::space::rmap::Key,
        hi: &crate::space::rmap::Key,
        after: Option<u64>,
        f: &mut dyn FnMut(
            crate::space::rmap::Key,
            daxfs_format::records::RmapRecord,
        ) -> std::ops::ControlFlow<()>,
    ) -> Result<()> {
        let root = self.snap.sb.rmap_tree;
        let layers: [&crate::space::rmap::Pending; 1] = [&self.snap.rmap];
        crate::space::rmap::walk_layered(self.s, &root, &layers, lo, hi, after, f)
    }
}

fn show(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

impl FsInner {
    /// Runs `f` on the newest snapshot with no lock; starts again from a
    /// newer snapshot when a node was not the one its pointer named. None
    /// when the read must be done on the locked path (a node does not match
    /// the newest snapshot: it is bad, and the locked path repairs it).
    pub(crate) fn lockless<R>(
        &self,
        mut f: impl FnMut(&mut Reader<'_>) -> Result<R>,
    ) -> Option<Result<R>> {
        let p = &*self.published;
        for _ in 0..MAX_TRIES {
            let (res, mismatch, data, seq) = p.with(|snap| {
                let mut r = Reader {
                    fs: self,
                    snap,
                    s: SnapStore::new(&*self.dev, self.fs_id, snap, p),
                    reads_data: false,
                };
                let res = f(&mut r);
                (res, r.s.mismatch.take(), r.reads_data, snap.seq)
            });
            let mut moved = p.current_seq() != seq;
            if mismatch.is_none() && !(data && moved) {
                return Some(res);
            }
            // A checkpoint may be rewriting the node for a commit not
            // published yet: give it a moment (a node really bad costs this
            // wait once, then the locked path repairs it).
            for _ in 0..PUBLISH_WAITS {
                if moved {
                    break;
                }
                std::thread::yield_now();
                moved = p.current_seq() != seq;
            }
            if !moved {
                break;
            }
            p.retries.fetch_add(1, Ordering::Relaxed);
        }
        p.fallbacks.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OpenOptions;
    use daxfs_device::{CrashDevice, MemDevice};
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    fn fs_on(dev: Arc<dyn Device>) -> crate::Fs {
        crate::Fs::mkfs(dev.clone(), &Default::default()).unwrap();
        crate::Fs::mount(dev, &Default::default()).unwrap()
    }

    fn fs() -> crate::Fs {
        fs_on(Arc::new(MemDevice::new(16 << 20)))
    }

    /// Every read of the list, by path and by inode number.
    fn read_everything(fs: &crate::Fs) -> usize {
        let inner = &*fs.inner;
        let root = inner.root_ino;
        let (d, _) = inner.lookup_ino(root, b"d").unwrap();
        let (f, _) = inner.lookup_ino(d, b"f").unwrap();
        let (l, _) = inner.lookup_ino(d, b"l").unwrap();
        assert_eq!(inner.getattr_ino(f).unwrap().size, 5);
        assert_eq!(inner.readdir_ino(d, 0, 100).unwrap().len(), 2);
        assert_eq!(fs.readdir_ino(d, 0, 100).unwrap().len(), 4);
        assert_eq!(inner.readlink_ino(l).unwrap(), b"f");
        assert_eq!(fs.readlink("/d/l").unwrap(), b"f");
        assert_eq!(fs.stat("/d/l").unwrap().ino, f);
        assert_eq!(fs.lstat("/d/l").unwrap().ino, l);
        assert_eq!(fs.readdir("/d").unwrap().len(), 2);
        assert_eq!(fs.getxattr("/d/f", b"user.a").unwrap(), b"value");
        assert_eq!(fs.getxattr_ino(f, b"user.a").unwrap(), b"value");
        assert_eq!(fs.listxattr("/d/f").unwrap(), vec![b"user.a".to_vec()]);
        assert_eq!(fs.listxattr_ino(f).unwrap().len(), 1);
        assert!(fs.statfs().free_blocks > 0);
        13
    }

    fn populate(fs: &crate::Fs) {
        fs.mkdir("/d", 0o755).unwrap();
        let f = fs.create("/d/f").unwrap();
        f.write_at(0, b"hello").unwrap();
        fs.symlink("f", "/d/l").unwrap();
        fs.setxattr("/d/f", b"user.a", b"value", 0).unwrap();
    }

    /// With the metadata lock held by another thread (as a transaction
    /// holds it through its fences), every read of the list completes.
    #[test]
    fn reads_complete_while_the_metadata_lock_is_held() {
        let fs = fs();
        populate(&fs);
        let meta = fs.inner.meta.clone();
        let held = lock(&meta);
        let (tx, rx) = std::sync::mpsc::channel();
        let fs2 = fs.clone();
        let t = std::thread::spawn(move || {
            let n = read_everything(&fs2);
            tx.send(n).unwrap();
        });
        let got = rx.recv_timeout(Duration::from_secs(20));
        drop(held);
        t.join().unwrap();
        assert_eq!(got, Ok(13), "the reads waited for the metadata lock");
    }

    /// A getattr of a file no in-place write left ahead of the tree tests
    /// the in-place set without its mutex: it completes while another
    /// thread holds the mutex.
    #[test]
    fn getattr_passes_the_in_place_set_without_its_lock() {
        let fs = fs();
        populate(&fs);
        // An in-place overwrite of another file: the set is not empty.
        drop(fs.create("/g").unwrap());
        let g = fs.open("/g", &OpenOptions::read_write()).unwrap();
        g.write_at(0, &[1u8; 8192]).unwrap();
        g.fsync().unwrap();
        g.write_at(0, &[2u8; 16]).unwrap();
        let gi = fs.stat("/g").unwrap().ino;
        let set = fs.inner.in_place.clone();
        assert!(set.lock().contains(&gi));
        let f = fs.stat("/d/f").unwrap().ino;
        let held = set.lock();
        let (tx, rx) = std::sync::mpsc::channel();
        let fs2 = fs.clone();
        let t = std::thread::spawn(move || tx.send(fs2.getattr(f).unwrap().size).unwrap());
        let got = rx.recv_timeout(Duration::from_secs(20));
        drop(held);
        t.join().unwrap();
        assert_eq!(got, Ok(5), "the read waited for the in-place set's mutex");
        // The file in the set still shows its in-place write's times.
        assert_eq!(fs.getattr(gi).unwrap().mtime, g.stat().mtime);
    }

    /// The nodes a thread reads again and again come from its own slots:
    /// with every shard of the shared readers' cache locked by another
    /// thread, a read the thread made before completes.
    #[test]
    fn hot_nodes_are_read_from_the_threads_own_slots() {
        let fs = fs();
        populate(&fs);
        let f = fs.stat("/d/f").unwrap().ino;
        let d = fs.stat("/d").unwrap().ino;
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let (tx, rx) = std::sync::mpsc::channel();
        let fs2 = fs.clone();
        let t = std::thread::spawn(move || {
            for _ in 0..4 {
                fs2.getattr(f).unwrap();
                fs2.lookup(d, "f").unwrap();
            }
            tx.send(None).unwrap();
            go_rx.recv().unwrap();
            let st = fs2.lookup(d, "f").unwrap();
            tx.send(Some(fs2.getattr(f).unwrap().ino == st.ino))
                .unwrap();
        });
        assert_eq!(rx.recv().unwrap(), None);
        let p = &fs.inner.published;
        let held: Vec<_> = p.cache.shards.iter().map(|s| s.write().unwrap()).collect();
        go_tx.send(()).unwrap();
        let got = rx.recv_timeout(Duration::from_secs(20));
        drop(held);
        t.join().unwrap();
        assert_eq!(got, Ok(Some(true)), "the reads waited for the shared cache");
    }

    /// A thread's slot holding a node a commit has since replaced is not
    /// used for the newer snapshot: the thread sees the new entry.
    #[test]
    fn a_threads_slot_is_checked_against_the_pointer() {
        let fs = fs();
        fs.mkdir("/d", 0o755).unwrap();
        drop(fs.create("/d/a").unwrap());
        let d = fs.stat("/d").unwrap().ino;
        for _ in 0..4 {
            assert_eq!(fs.readdir_ino(d, 0, 100).unwrap().len(), 3);
        }
        std::thread::scope(|s| {
            s.spawn(|| drop(fs.create("/d/b").unwrap()));
        });
        // Only this thread's slots and the device: the shared cache is empty.
        for s in &fs.inner.published.cache.shards {
            s.write().unwrap().clear();
        }
        assert_eq!(fs.readdir_ino(d, 0, 100).unwrap().len(), 4);
        assert_eq!(fs.lookup(d, "b").unwrap().ino, fs.stat("/d/b").unwrap().ino);
    }

    /// Inodes an owner record names, in order.
    fn owner_inos(recs: &[crate::OwnerRecord]) -> Vec<u64> {
        recs.iter()
            .filter_map(|r| match &r.owner {
                crate::OwnerKind::File { ino, .. } => Some(*ino),
                _ => None,
            })
            .collect()
    }

    /// Owner queries, fsmap, paths and fiemap complete while another
    /// thread holds the metadata lock, and see the reverse map's pending
    /// records (a clone's, not in the tree yet).
    #[test]
    fn owner_queries_complete_while_the_metadata_lock_is_held() {
        let fs = fs();
        fs.mkdir("/d", 0o755).unwrap();
        let a = fs.create("/d/a").unwrap();
        a.write_at(0, &[3u8; 4 * 4096]).unwrap();
        let b = fs.create("/d/b").unwrap();
        b.clone_from(&a).unwrap();
        let (ai, bi) = (a.stat().ino, b.stat().ino);
        let phys = a.fiemap().unwrap()[0].physical / 4096;
        assert!(lock(&fs.inner.meta).cache.rmap_pending_len() > 0);
        let held = lock(&fs.inner.meta);
        let (tx, rx) = std::sync::mpsc::channel();
        let fs2 = fs.clone();
        let t = std::thread::spawn(move || {
            let owners = fs2.owners(phys, 4).unwrap();
            let by_ino = fs2.owners_by_inode(phys, 4).unwrap();
            let map = fs2.fsmap(0, u64::MAX).unwrap();
            let paths = fs2.paths(bi).unwrap();
            let rows = a.fiemap().unwrap();
            tx.send((owners, by_ino, map, paths, rows)).unwrap();
        });
        let got = rx.recv_timeout(Duration::from_secs(20));
        drop(held);
        t.join().unwrap();
        let (owners, by_ino, map, paths, rows) =
            got.expect("the owner queries waited for the metadata lock");
        let mut inos = owner_inos(&owners);
        inos.sort();
        assert_eq!(inos, [ai, bi]);
        assert!(owners.iter().all(|r| r.shared));
        assert!(owners.iter().any(|r| matches!(&r.owner,
            crate::OwnerKind::File { ino, paths, .. } if *ino == bi && paths == &["/d/b"])));
        assert_eq!(owner_inos(&by_ino).len(), 2);
        assert!(owner_inos(&map).contains(&bi));
        assert!(map.iter().any(|r| r.owner == crate::OwnerKind::Free));
        assert_eq!(paths, ["/d/b"]);
        assert_eq!(rows.len(), 1);
        assert!(rows[0].shared);
    }

    /// Owner queries, paths and fiemap racing clones and unlinks see only
    /// states that existed: the source's blocks owned by it alone, or by
    /// it and the whole clone, which has its path.
    #[test]
    fn owner_queries_see_only_states_that_existed() {
        let fs = fs();
        let a = fs.create("/a").unwrap();
        a.write_at(0, &[5u8; 3 * 4096]).unwrap();
        let ai = a.stat().ino;
        let phys = a.fiemap().unwrap()[0].physical / 4096;
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            let w = s.spawn(|| {
                for _ in 0..60 {
                    let b = fs.create("/b").unwrap();
                    b.clone_from(&a).unwrap();
                    drop(b);
                    fs.unlink("/b").unwrap();
                }
            });
            let r = s.spawn(|| {
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let owners = fs.owners(phys, 3).unwrap();
                    let inos = owner_inos(&owners);
                    let others: Vec<_> = owners
                        .iter()
                        .filter(|r| owner_inos(std::slice::from_ref(r)) != [ai])
                        .collect();
                    assert!(inos.contains(&ai), "{owners:?}");
                    if others.is_empty() {
                        assert!(owners.iter().all(|r| !r.shared), "{owners:?}");
                    } else {
                        // The whole clone, named by its path, all shared.
                        let len: u64 = others.iter().map(|r| r.length).sum();
                        assert_eq!(len, 3 * 4096, "{owners:?}");
                        assert!(owners.iter().all(|r| r.shared), "{owners:?}");
                        for r in others {
                            assert!(
                                matches!(&r.owner, crate::OwnerKind::File { paths, .. }
                                    if paths == &["/b"]),
                                "{owners:?}"
                            );
                        }
                    }
                    let rows = a.fiemap().unwrap();
                    assert!(rows.iter().all(|r| r.shared == rows[0].shared), "{rows:?}");
                    assert_eq!(fs.paths(ai).unwrap(), ["/a"]);
                }
                n
            });
            w.join().unwrap();
            stop.store(true, Ordering::SeqCst);
            assert!(r.join().unwrap() > 0);
        });
    }

    /// Reads start no transaction and commit nothing: no fence.
    #[test]
    fn reads_never_fence() {
        let dev = Arc::new(CrashDevice::new(16 << 20));
        let fs = fs_on(dev.clone());
        populate(&fs);
        fs.sync().unwrap();
        let before = dev.fences();
        for _ in 0..3 {
            read_everything(&fs);
        }
        assert_eq!(dev.fences(), before);
        assert_eq!(fs.inner.published.fallbacks.load(Ordering::Relaxed), 0);
    }

    /// A directory's only leaf split by a commit while a reader, holding
    /// the snapshot before it, is about to read the leaf: the reader finds
    /// the leaf rewritten (its crc is not the one its snapshot's pointer
    /// names), starts again from the newer snapshot and lists the state
    /// after; never the half left in the old leaf.
    #[test]
    fn a_node_rewritten_under_a_reader_is_read_again() {
        let fs = fs();
        fs.mkdir("/d", 0o755).unwrap();
        let before: Vec<String> = (0..8).map(|i| format!("a{i}")).collect();
        for n in &before {
            drop(fs.create(format!("/d/{n}")).unwrap());
        }
        // The last group lands: the snapshot no longer carries its blocks,
        // and the reader reads the leaf from the device.
        fs.sync().unwrap();
        let d = fs.stat("/d").unwrap().ino;
        let mut after = before.clone();
        after.extend((0..400).map(|i| format!("b{i:03}")));
        after.sort();
        let armed = Arc::new(AtomicBool::new(true));
        let (fs2, armed2, names) = (fs.clone(), armed.clone(), after.clone());
        *lock(&fs.inner.published.hook) = Some(Box::new(move |_b, kind, owner| {
            if kind == BlockKind::DirTree && owner == d && armed2.swap(false, Ordering::SeqCst) {
                let fs3 = fs2.clone();
                let names = names.clone();
                std::thread::spawn(move || {
                    for n in names.iter().filter(|n| n.starts_with('b')) {
                        drop(fs3.create(format!("/d/{n}")).unwrap());
                    }
                })
                .join()
                .unwrap();
                // Nothing of the old leaf is left in memory.
                fs2.inner.published.cache.clear();
            }
        }));
        let retries = fs.inner.published.retries.load(Ordering::Relaxed);
        let mut got: Vec<String> = fs
            .readdir("/d")
            .unwrap()
            .iter()
            .map(|e| e.name_lossy())
            .collect();
        got.sort();
        *lock(&fs.inner.published.hook) = None;
        assert!(!armed.load(Ordering::SeqCst), "the hook never ran");
        assert_eq!(got.len(), after.len(), "a listing of neither state");
        assert_eq!(got, after);
        assert!(fs.inner.published.retries.load(Ordering::Relaxed) > retries);
    }

    /// Readers in loops while writers rename, link and unlink, create and
    /// remove, and set attributes: every read is of a state that existed.
    #[test]
    fn readers_see_only_states_that_existed() {
        let fs = fs();
        for d in ["/r", "/e", "/c"] {
            fs.mkdir(d, 0o755).unwrap();
        }
        drop(fs.create("/r/x").unwrap());
        drop(fs.create("/e/f").unwrap());
        fs.setxattr("/e/f", b"user.v", &[0u8; 300], 0).unwrap();
        let f_ino = fs.stat("/e/f").unwrap().ino;
        let (r_ino, e_ino, c_ino) = (
            fs.stat("/r").unwrap().ino,
            fs.stat("/e").unwrap().ino,
            fs.stat("/c").unwrap().ino,
        );
        let stop = AtomicBool::new(false);
        let rounds = 150;
        std::thread::scope(|s| {
            let writers = [
                s.spawn(|| {
                    for _ in 0..rounds {
                        fs.rename("/r/x", "/r/y").unwrap();
                        fs.rename("/r/y", "/r/x").unwrap();
                    }
                }),
                s.spawn(|| {
                    for i in 0..rounds {
                        fs.link("/e/f", format!("/e/h{}", i % 3)).unwrap();
                        if i % 3 == 2 {
                            for k in 0..3 {
                                fs.unlink(format!("/e/h{k}")).unwrap();
                            }
                        }
                        let v = vec![(i % 250) as u8 + 1; 300];
                        fs.setxattr("/e/f", b"user.v", &v, 0).unwrap();
                    }
                }),
                s.spawn(|| {
                    for i in 0..rounds {
                        let f = fs.open(format!("/c/n{i}"), &OpenOptions::create()).unwrap();
                        f.write_at(0, b"x").unwrap();
                        drop(f);
                        if i >= 3 {
                            fs.unlink(format!("/c/n{}", i - 3)).unwrap();
                        }
                    }
                }),
            ];
            let readers: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        let mut n = 0u64;
                        while !stop.load(Ordering::SeqCst) {
                            n += 1;
                            // A rename is seen as one name, never both or neither.
                            let names: Vec<Vec<u8>> = fs
                                .readdir("/r")
                                .unwrap()
                                .into_iter()
                                .map(|e| e.name)
                                .collect();
                            assert!(
                                names == [b"x".to_vec()] || names == [b"y".to_vec()],
                                "{names:?}"
                            );
                            // By inode number, in one snapshot: one of the two.
                            let one = fs
                                .inner
                                .lockless(|r| {
                                    let d = r.dir(r_ino)?;
                                    let x = dir::lookup(&mut r.s, r_ino, &d.tree, b"x")?;
                                    let y = dir::lookup(&mut r.s, r_ino, &d.tree, b"y")?;
                                    Ok(x.is_some() != y.is_some())
                                })
                                .map(|r| r.unwrap())
                                .unwrap_or(true);
                            assert!(one, "a rename seen as both names or neither");
                            // An attribute is one value, never parts of two.
                            let v = fs.getxattr("/e/f", b"user.v").unwrap();
                            assert_eq!(v.len(), 300);
                            assert!(v.iter().all(|&b| b == v[0]), "mixed value");
                            // In one snapshot: link count and entries agree;
                            // every entry names an inode that exists.
                            let (links, nlink) = fs
                                .inner
                                .lockless(|r| {
                                    let e = r.dir(e_ino)?;
                                    let list = dir::list(&mut r.s, e_ino, &e.tree, 0, 100)?;
                                    let links = list.iter().filter(|x| x.ino == f_ino).count();
                                    let (rec, _) = r.existing(f_ino)?;
                                    let c = r.dir(c_ino)?;
                                    for ent in dir::list(&mut r.s, c_ino, &c.tree, 0, 100)? {
                                        let (rec, _) = r.existing(ent.ino)?;
                                        assert_eq!(rec.nlink.get(), 1);
                                    }
                                    Ok((links, rec.nlink.get() as usize))
                                })
                                .map(|r| r.unwrap())
                                .unwrap_or((0, 0));
                            assert_eq!(links, nlink);
                        }
                        n
                    })
                })
                .collect();
            for w in writers {
                w.join().unwrap();
            }
            stop.store(true, Ordering::SeqCst);
            for r in readers {
                assert!(r.join().unwrap() > 0);
            }
        });
        // A read that fell back (to the locked path, or here skipped) is
        // one that met a node a commit was checkpointing; most did not.
        let p = &fs.inner.published;
        eprintln!(
            "retries {}, fallbacks {}",
            p.retries.load(Ordering::Relaxed),
            p.fallbacks.load(Ordering::Relaxed)
        );
    }
}
