//! The file system: making one, mounting it, and the shared state every
//! operation works on.
use crate::error::{FsError, Result};
use crate::inode::{self, FileKind, Inode, inode_tree, orphan_tree};
use crate::journal::{self, Recovery};
use crate::replica::{Committed, Replicas};
use crate::space::alloc::FreeMap;
use crate::space::rmap::{Mapping, Owner};
use crate::tx::{Meta, ReadStore, Tx, geometry};
use daxfs_btree::{BTree, NodeStore};
use daxfs_device::{Device, PersistMode};
use daxfs_format::records::{InodeRecord, TreeRoot, action};
use daxfs_format::superblock::{INCOMPAT_REPLICAS, INCOMPAT_RMAP, MIN_BLOCKS};
use daxfs_format::{BLOCK_SIZE, BLOCK_SIZE_U64, BlockKind, Superblock};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

/// Options for [`Fs::mkfs`].
#[derive(Clone, Debug, Default)]
pub struct MkfsOptions {
    /// Overwrite an existing daxfs file system.
    pub force: bool,
    /// Log size in blocks (default: 1/64 of the device, 64 to 16384 blocks).
    pub log_blocks: Option<u64>,
    /// A label of up to 32 bytes.
    pub label: String,
    /// Do not keep a reverse map (for measuring its cost; owner queries,
    /// fsmap and media-error handling need it). Implies `no_replicas`.
    pub no_rmap: bool,
    /// Do not keep replicas of metadata (for measuring their cost; without
    /// them a bad metadata block shuts the file system down).
    pub no_replicas: bool,
    /// This UUID instead of a random one (reproducible images, such as the
    /// fuzz targets' template: the UUID is in every block's checksum).
    #[doc(hidden)]
    pub uuid: Option<[u8; 16]>,
}

/// Options for [`Fs::mount`].
#[derive(Clone, Debug, Default)]
pub struct MountOptions {}

/// The state shared by the file system handle and every open file.
#[derive(Debug)]
pub(crate) struct FsInner {
    pub dev: Arc<dyn Device>,
    pub meta: Arc<Mutex<Meta>>,
    pub icache: Arc<Mutex<HashMap<u64, Arc<Inode>>>>,
    /// The replica state of `meta`, for readers outside transactions.
    pub reps: Arc<Mutex<Replicas>>,
    pub fs_id: u64,
    pub root_ino: u64,
    pub recovery: Recovery,
    /// Media-error reports waiting to be handled (see `media::FsHolder`).
    pub pending: Mutex<Vec<(u64, u64, crate::media::FailureFlags)>>,
    /// What recent reports did, for the caller that caused them.
    pub recent: Mutex<Vec<crate::media::FailureEvent>>,
    /// Reports that lost file data so far (see [`Inode::maybe_lost`]).
    pub loss_gen: Arc<std::sync::atomic::AtomicU64>,
    /// The open handles of each file with any, to tell of media errors.
    pub notice_handles: Mutex<HashMap<u64, Vec<std::sync::Weak<crate::media::HandleNotices>>>>,
    /// The inodes in-place writes left ahead of the tree (`Meta::in_place`).
    pub in_place: crate::tx::InPlaceSet,
    /// Extents refused since mount (inode, file block): each is logged once.
    pub refused: Mutex<std::collections::HashSet<(u64, u64)>>,
    /// Inodes kept in `icache` before unused ones are dropped.
    pub icache_limit: std::sync::atomic::AtomicUsize,
    /// The committed state for reads that take no lock (`Meta::published`).
    pub(crate) published: Arc<crate::snapshot::Published>,
}

/// A mounted daxfs file system. `Send + Sync`: share it between threads.
#[derive(Debug, Clone)]
pub struct Fs {
    pub(crate) inner: Arc<FsInner>,
}

/// Geometry and usage, as `daxfs info` shows them.
#[derive(Clone, Debug)]
pub struct FsInfo {
    pub uuid: String,
    pub label: String,
    pub format_version: u32,
    pub block_size: u64,
    pub total_blocks: u64,
    pub free_blocks: u64,
    /// Free blocks kept for metadata work that must succeed on a full
    /// device (deleting, flushing, media-error reports): ordinary writes
    /// and creates cannot take them.
    pub reserved_blocks: u64,
    /// Free blocks ordinary writes and creates can take: `free_blocks`
    /// less the reserve (as statfs's `f_bavail`).
    pub available_blocks: u64,
    pub inodes: u64,
    pub log_start: u64,
    pub log_blocks: u64,
    /// First block of the log's replica (0: none).
    pub log_replica: u64,
    /// Tree nodes and the log have replicas.
    pub replicas: bool,
    pub generation: u64,
    pub persistence: String,
    pub device: String,
    pub recovered: Option<u64>,
}

fn random_uuid() -> [u8; 16] {
    let mut u = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        if f.read_exact(&mut u).is_ok() {
            return u;
        }
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let a = daxfs_format::checksum(&t.as_nanos().to_le_bytes());
    let b = daxfs_format::checksum(&std::process::id().to_le_bytes());
    u[..4].copy_from_slice(&a.to_le_bytes());
    u[4..8].copy_from_slice(&b.to_le_bytes());
    u
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reads and validates both superblock copies; returns the newest valid one.
pub fn read_superblock(dev: &dyn Device) -> Result<Superblock> {
    read_superblocks(dev).map(|(sb, _)| sb)
}

/// Reads both superblock copies; returns the newest valid one and the
/// blocks of the copies that do not verify.
pub fn read_superblocks(dev: &dyn Device) -> Result<(Superblock, Vec<u64>)> {
    let dev_blocks = dev.len() / BLOCK_SIZE_U64;
    if dev_blocks < MIN_BLOCKS {
        return Err(FsError::Invalid(format!(
            "device of {} bytes is too small for daxfs (at least {} bytes)",
            dev.len(),
            MIN_BLOCKS * BLOCK_SIZE_U64
        )));
    }
    let mut first_err = None;
    let mut best: Option<Superblock> = None;
    let mut bad = vec![];
    let a = read_sb_at(dev, 0, dev_blocks);
    // Copy B lives at the last block of the file system, which copy A names.
    let b_at = match &a {
        Ok(sb) => sb.total_blocks.get() - 1,
        Err(_) => dev_blocks - 1,
    };
    let b = read_sb_at(dev, b_at, dev_blocks);
    match a {
        Ok(sb) => best = Some(sb),
        Err(e) => {
            bad.push(0);
            first_err = Some(e);
        }
    }
    match b {
        Ok(sb) => {
            if best.is_none_or(|x| sb.header.generation.get() > x.header.generation.get()) {
                best = Some(sb);
            }
        }
        Err(_) => bad.push(b_at),
    }
    match (best, first_err) {
        (Some(sb), _) => Ok((sb, bad)),
        (None, Some(e)) => Err(e),
        (None, None) => Err(FsError::Corrupt("no valid superblock".into())),
    }
}

fn read_sb_at(dev: &dyn Device, b: u64, dev_blocks: u64) -> Result<Superblock> {
    let mut blk = Box::new([0u8; BLOCK_SIZE]);
    dev.read(b * BLOCK_SIZE_U64, &mut blk[..])?;
    Superblock::decode(&blk, b, dev_blocks).map_err(|e| match e {
        daxfs_format::FormatError::BadMagic { .. } => FsError::Invalid(format!(
            "not a daxfs file system (no daxfs superblock at block {b})"
        )),
        other => FsError::Corrupt(format!("superblock at block {b}: {other}")),
    })
}

impl Fs {
    /// Makes a new, empty file system on `dev`. Refuses to overwrite an
    /// existing daxfs file system unless `opts.force`.
    pub fn mkfs(dev: Arc<dyn Device>, opts: &MkfsOptions) -> Result<()> {
        let total = dev.len() / BLOCK_SIZE_U64;
        if total < MIN_BLOCKS {
            return Err(FsError::Invalid(format!(
                "device of {} bytes is too small: daxfs needs at least {} bytes",
                dev.len(),
                MIN_BLOCKS * BLOCK_SIZE_U64
            )));
        }
        if !opts.force && read_superblock(&*dev).is_ok() {
            return Err(FsError::Exists(
                "device already holds a daxfs file system (use --force to overwrite)".into(),
            ));
        }
        if opts.label.len() > 32 {
            return Err(FsError::Invalid("label longer than 32 bytes".into()));
        }
        let log_blocks = opts.log_blocks.unwrap_or((total / 64).clamp(64, 16384));
        let replicas = !opts.no_replicas && !opts.no_rmap;
        let mirror = if replicas {
            daxfs_format::superblock::log_mirror_blocks(log_blocks)
        } else {
            0
        };
        if log_blocks < 16 || 1 + log_blocks + mirror + 64 > total {
            return Err(FsError::Invalid(format!(
                "log of {log_blocks} blocks does not fit a device of {total} blocks"
            )));
        }
        // The log's replica region ends just before superblock copy B: far
        // from the log, at the other end of the device.
        let log_replica = if replicas { total - 1 - mirror } else { 0 };
        let uuid = opts.uuid.unwrap_or_else(random_uuid);
        // Invalidate old superblocks and the old logs' commit blocks first.
        for b in [0, 1, total - 1, log_replica] {
            dev.fill(b * BLOCK_SIZE_U64, BLOCK_SIZE_U64, 0)?;
            dev.flush(b * BLOCK_SIZE_U64, BLOCK_SIZE_U64);
        }
        dev.fence();
        let mut sb = Superblock::blank();
        sb.uuid = uuid;
        sb.total_blocks = total.into();
        sb.log_start = 1.into();
        sb.log_blocks = log_blocks.into();
        sb.log_replica = log_replica.into();
        sb.root_ino = 1.into();
        sb.next_ino = 2.into();
        let mut label = [0u8; 32];
        label[..opts.label.len()].copy_from_slice(opts.label.as_bytes());
        sb.label = label;
        let now = inode::now();
        sb.mkfs_time = (now.sec.get() as u64).into();
        if !opts.no_rmap {
            sb.incompat = (sb.incompat.get() | INCOMPAT_RMAP).into();
        }
        if replicas {
            sb.incompat = (sb.incompat.get() | INCOMPAT_REPLICAS).into();
        }
        let data_start = 1 + log_blocks;
        let data_end = if replicas { log_replica } else { total - 1 };
        let data_len = data_end - data_start;
        let mut free = FreeMap::default();
        free.insert(data_start, data_len);
        let mut meta = Meta::new(sb, 1, None);
        meta.free = free;
        meta.free_loaded = true;
        // Not deferring: the new image's reverse map holds every record.
        let mut tx = Tx::open(&*dev, &mut meta)?;
        let mut root = TreeRoot::EMPTY;
        BTree::<u64, u64>::new(BlockKind::FreeTree, 0)
            .insert(&mut tx, &mut root, data_start, data_len)?;
        tx.meta.sb.free_tree = root;
        tx.meta.sb.free_blocks = data_len.into();
        let rec = inode::new_record(1, FileKind::Dir, 0o755, 0, 0, 1);
        put_record(&mut tx, &rec)?;
        tx.meta.sb.inodes = 1.into();
        let sb_owner = Owner::Meta(BlockKind::Superblock);
        tx.rmap_add(0, 1, sb_owner, false)?;
        tx.rmap_add(total - 1, 1, sb_owner, false)?;
        let log_owner = Owner::Meta(BlockKind::LogDescriptor);
        if tx.rmap_enabled() {
            crate::space::rmap::add(
                &mut tx,
                Mapping {
                    replica: log_replica,
                    ..Mapping::new(1, log_blocks, log_owner, false)
                },
            )?;
            if replicas {
                crate::space::rmap::add(
                    &mut tx,
                    Mapping {
                        replica: 1,
                        is_replica: true,
                        ..Mapping::new(log_replica, mirror, log_owner, false)
                    },
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Unmounts: makes every pending change durable and says whether that
    /// worked (dropping the last handle does the same, but cannot report a
    /// failure). With files, views or other `Fs` handles still open it
    /// fails with EBUSY; the file system then stays mounted until the last
    /// of them goes.
    pub fn unmount(self) -> Result<()> {
        let others = Arc::strong_count(&self.inner) - 1;
        if others > 0 {
            return Err(FsError::Busy(format!(
                "{others} open files, views or file-system handles remain"
            )));
        }
        self.inner.sync()
    }

    /// Mounts the file system on `dev`: reads the superblock, replays the log
    /// if a transaction was committed but not checkpointed, and frees inodes
    /// left orphaned by a crash. Costs the same whatever the number of files.
    pub fn mount(dev: Arc<dyn Device>, _opts: &MountOptions) -> Result<Fs> {
        let (sb, bad_copies) = read_superblocks(&*dev)?;
        let geo = geometry(&sb);
        let fs_id = sb.fs_id();
        let recovery = journal::recover(&*dev, &geo, fs_id, sb.header.generation.get())?;
        // Replay rewrites both copies (a copy torn by the crash is not bad).
        let (sb, bad_copies) = if recovery == Recovery::Clean {
            (sb, bad_copies)
        } else {
            read_superblocks(&*dev)?
        };
        let seq = sb.header.generation.get() + 1;
        // The reverse map's changes that its nodes did not hold yet.
        let intents = journal::read_intents(
            &*dev,
            &geometry(&sb),
            fs_id,
            sb.header.generation.get(),
            sb.rmap_intents.get() as usize,
        )?;
        let root_ino = sb.root_ino.get();
        let icache: Arc<Mutex<HashMap<u64, Arc<Inode>>>> = Default::default();
        let mut meta = Meta::new(sb, seq, Some(icache.clone()));
        // Memory holds them as the commit that logged them left them: reads
        // see them at once; the first commit that cannot log more puts them
        // in the tree.
        meta.cache.rmap_pending = Arc::new(crate::space::rmap::pending_of(&intents)?);
        meta.intents = intents;
        let reps = meta.reps.clone();
        let in_place = meta.in_place.clone();
        crate::snapshot::publish(&meta);
        let published = meta.published.clone();
        let fs = Fs {
            inner: Arc::new(FsInner {
                dev,
                meta: Arc::new(Mutex::new(meta)),
                icache,
                reps,
                fs_id,
                root_ino,
                recovery,
                pending: Mutex::new(vec![]),
                recent: Mutex::new(vec![]),
                loss_gen: Arc::new(std::sync::atomic::AtomicU64::new(1)),
                notice_handles: Mutex::new(HashMap::new()),
                in_place,
                refused: Mutex::new(Default::default()),
                icache_limit: crate::icache::DEFAULT_LIMIT.into(),
                published,
            }),
        };
        // A root that is no directory: refused before anything is written.
        // (A tree that cannot be read is left to the operations that need
        // it, which fail naming the block, and to fsck.)
        let root_ok = {
            let mut meta = lock(&fs.inner.meta);
            let sb = meta.sb;
            crate::counters::check_root(&mut fs.inner.cached_reader(&mut meta), &sb)
        };
        let early = root_ok
            .and_then(|()| fs.replay_intents())
            .and_then(|()| fs.repair_counters())
            .and_then(|()| fs.free_orphans());
        if let Err(e) = early {
            // A mount that fails writes nothing (but a replay): the repairs
            // and the shut-down its reads queued are not run when the file
            // system is dropped; fsck and the next mount meet them again.
            let meta = lock(&fs.inner.meta);
            let mut g = lock(&meta.reps);
            g.pending.clear();
            g.failed.clear();
            return Err(e);
        }
        // After anything that can fail: a mount that fails writes nothing
        // (but a replay). A repair that fails leaves the copy to fsck.
        if !bad_copies.is_empty() && sb.has_replicas() {
            let _ = fs.repair_superblock(&bad_copies);
        }
        // Become the device's holder: from now on every media-error report
        // comes to the file system (and the device replays the bad ranges it
        // already knows, handled here as background reports).
        let holder = Arc::new(crate::media::FsHolder {
            fs: Arc::downgrade(&fs.inner),
        });
        match fs.inner.dev.set_holder(holder) {
            Ok(())
            | Err(daxfs_device::DeviceError::Unsupported(_))
            | Err(daxfs_device::DeviceError::Notify { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        fs.inner.process_pending();
        Ok(fs)
    }

    /// Rewrites superblock copies that do not verify from the one that
    /// does (every commit writes both), and says so in the error log.
    fn repair_superblock(&self, bad: &[u64]) -> Result<()> {
        let inner = &*self.inner;
        let mut meta = lock(&inner.meta);
        let mut tx = Tx::begin(&*inner.dev, &mut meta)?;
        let event = tx.meta.sb.error_seq.get();
        for &b in bad {
            log_superblock_repaired(&mut tx, event, b)?;
        }
        tx.commit()
    }

    /// Puts right the superblock counters the trees contradict (see
    /// [`crate::counters`]): `next_ino` and `error_seq` from the largest
    /// inode number and the newest error-log entry, `free_blocks` from the
    /// free-space tree (corrected when the tree is first read); logs one
    /// "repaired" entry for the superblock. Writes nothing when they agree.
    fn repair_counters(&self) -> Result<()> {
        let inner = &*self.inner;
        let mut meta = lock(&inner.meta);
        // A file system that cannot start a transaction (shut down, or a
        // free-space tree that cannot be read) is left to the operations
        // that need one, which fail saying why, and to fsck; so are trees
        // that cannot be read.
        let Ok(mut tx) = Tx::begin(&*inner.dev, &mut meta) else {
            return Ok(());
        };
        let sb = tx.meta.sb;
        let problems = crate::counters::counter_problems(&mut tx, &sb).unwrap_or_default();
        let free_was = tx.meta.free_count_fixed.take();
        if problems.is_empty() && free_was.is_none() {
            return Ok(()); // dropped: nothing written
        }
        for p in &problems {
            match p.field {
                "next_ino" => tx.meta.sb.next_ino = p.fixed.into(),
                _ => tx.meta.sb.error_seq = p.fixed.into(),
            }
        }
        let event = tx.meta.sb.error_seq.get();
        log_superblock_repaired(&mut tx, event, 0)?;
        tx.commit()
    }

    /// Puts the reverse map's pending changes (from the log's intent area)
    /// into its nodes, and logs them: one transaction.
    /// On a device too full for that (an image filled by a build without
    /// the metadata reserve) they stay pending, as the commit that logged
    /// them left them: the log keeps them, reads see them, and the first
    /// commit that cannot log more (once deletions made room) puts them in.
    fn replay_intents(&self) -> Result<()> {
        match crate::tx::flush_intents(&*self.inner.dev, &mut lock(&self.inner.meta)) {
            Err(FsError::NoSpace(_)) => Ok(()),
            r => r,
        }
    }

    /// Frees every inode on the orphan list (unlinked while open before a crash).
    fn free_orphans(&self) -> Result<()> {
        let inner = &*self.inner;
        let mut meta = lock(&inner.meta);
        if meta.sb.orphan_tree.is_empty() {
            return Ok(());
        }
        let mut tx = Tx::begin(&*inner.dev, &mut meta)?;
        tx.use_reserve();
        let root = tx.meta.sb.orphan_tree;
        let mut orphans = vec![];
        orphan_tree().range(&mut tx, &root, &0, &u64::MAX, &mut |k, ()| {
            orphans.push(k);
            std::ops::ControlFlow::Continue(())
        })?;
        for ino in orphans {
            inner.free_inode(&mut tx, ino)?;
        }
        tx.commit()
    }

    /// The device this file system lives on.
    pub fn device(&self) -> &Arc<dyn Device> {
        &self.inner.dev
    }

    /// What mount found in the log.
    pub fn recovery(&self) -> &Recovery {
        &self.inner.recovery
    }

    /// Geometry, usage and persistence mode.
    pub fn info(&self) -> FsInfo {
        let meta = lock(&self.inner.meta);
        let sb = &meta.sb;
        let label = String::from_utf8_lossy(&sb.label)
            .trim_end_matches('\0')
            .to_string();
        FsInfo {
            uuid: sb.uuid.iter().map(|b| format!("{b:02x}")).collect(),
            label,
            format_version: sb.version.get(),
            block_size: BLOCK_SIZE_U64,
            total_blocks: sb.total_blocks.get(),
            free_blocks: sb.free_blocks.get(),
            reserved_blocks: meta.reserve,
            available_blocks: sb.free_blocks.get().saturating_sub(meta.reserve),
            inodes: sb.inodes.get(),
            log_start: sb.log_start.get(),
            log_blocks: sb.log_blocks.get(),
            log_replica: sb.log_replica.get(),
            replicas: sb.has_replicas(),
            generation: sb.header.generation.get(),
            persistence: self.inner.dev.mode().to_string(),
            device: self.inner.dev.describe(),
            recovered: match self.inner.recovery {
                Recovery::Replayed { seq, .. } => Some(seq),
                Recovery::Clean | Recovery::RolledBack { .. } => None,
            },
        }
    }

    /// Starts (or stops) recording mapping events; see [`crate::events`].
    pub fn record_events(&self, on: bool) {
        lock(&self.inner.meta).events = on.then(Vec::new);
    }

    /// The mapping events committed since the last call.
    pub fn take_events(&self) -> Vec<crate::events::MapEvent> {
        lock(&self.inner.meta)
            .events
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// The persistence mode of the device.
    pub fn persist_mode(&self) -> PersistMode {
        self.inner.dev.mode()
    }

    /// Writes every inode's pending size and time changes. Data is durable as
    /// soon as each write returns; this makes metadata durable too.
    pub fn sync(&self) -> Result<()> {
        self.inner.sync()
    }
}

impl Drop for FsInner {
    /// Unmount: pending size and time changes are written.
    fn drop(&mut self) {
        crate::views::forget_fs(self);
        let _ = self.sync();
        let _ = self.dev.clear_holder();
    }
}

impl FsInner {
    pub(crate) fn sync(&self) -> Result<()> {
        // Nodes that reads found bad are rebuilt from their replicas now,
        // not left for the next change.
        crate::replica::run_pending(&*self.dev, &mut lock(&self.meta));
        self.flush_lazy()?;
        // The reverse map's pending changes go into its nodes too: after a
        // sync, its nodes on media hold every record (and an unmounted image
        // has no intents). On a device too full even for that (made full by
        // a build without the metadata reserve) they stay in the log, which
        // keeps them durable.
        match crate::tx::flush_intents(&*self.dev, &mut lock(&self.meta)) {
            Err(FsError::NoSpace(_)) | Ok(()) => {}
            Err(e) => return Err(e),
        }
        let inodes: Vec<Arc<Inode>> = lock(&self.icache).values().cloned().collect();
        let mut dirty: Vec<Arc<Inode>> = inodes.into_iter().filter(|i| i.rec().dirty).collect();
        if dirty.is_empty() {
            return Ok(());
        }
        dirty.sort_by_key(|i| i.ino);
        let mut meta = lock(&self.meta);
        // An inode freed since it was collected must not be written back.
        dirty.retain(|i| lock(&self.icache).contains_key(&i.ino));
        let mut tx = Tx::begin(&*self.dev, &mut meta)?;
        tx.use_reserve();
        let mut guards: Vec<_> = dirty.iter().map(|i| i.rec()).collect();
        for g in guards.iter_mut() {
            put_record(&mut tx, &g.rec)?;
        }
        tx.commit()?;
        for g in guards.iter_mut() {
            g.dirty = false;
        }
        Ok(())
    }
}

/// Logs, as part of error-log entry `event`, that superblock copy `b` was
/// repaired (owner kind 3: a metadata structure, the superblock).
fn log_superblock_repaired(tx: &mut Tx<'_>, event: u64, b: u64) -> Result<()> {
    crate::media::log_event(
        tx,
        event,
        b,
        1,
        action::REPAIRED,
        3,
        BlockKind::Superblock as u64,
        0,
        Default::default(),
    )
}

/// Writes an inode record into the inode tree.
pub(crate) fn put_record(tx: &mut Tx<'_>, rec: &InodeRecord) -> Result<()> {
    tx.staged_inos.push(rec.ino.get());
    let mut root = tx.meta.sb.inode_tree;
    inode_tree().insert(tx, &mut root, rec.ino.get(), *rec)?;
    tx.meta.sb.inode_tree = root;
    Ok(())
}

impl FsInner {
    /// The in-memory inode `ino`, read through `s` on first use.
    pub(crate) fn inode(
        &self,
        s: &mut dyn NodeStore,
        inode_root: &TreeRoot,
        ino: u64,
    ) -> Result<Arc<Inode>> {
        if let Some(i) = lock(&self.icache).get(&ino) {
            return Ok(i.clone());
        }
        let rec = inode::read_record(s, inode_root, ino)?.ok_or_else(|| {
            FsError::Corrupt(format!(
                "inode {ino} is referenced but not in the inode table"
            ))
        })?;
        let i = Arc::new(Inode::new(rec, self.loss_gen.clone())?);
        Ok(self.cache_inode(i))
    }

    /// Puts inode `i` in the cache (unless one is there already: that one
    /// is returned), dropping unused inodes beyond the cache's limit.
    pub(crate) fn cache_inode(&self, i: Arc<Inode>) -> Arc<Inode> {
        let mut c = lock(&self.icache);
        let i = c.entry(i.ino).or_insert(i).clone();
        let limit = self.icache_limit.load(Ordering::Relaxed);
        crate::icache::trim(&mut c, limit, self.root_ino, &self.in_place);
        i
    }

    /// The inode for a lookup made inside a transaction.
    pub(crate) fn inode_tx(&self, tx: &mut Tx<'_>, ino: u64) -> Result<Arc<Inode>> {
        let root = tx.meta.sb.inode_tree;
        self.inode(tx, &root, ino)
    }

    /// Runs `f` under the metadata lock as a grouped operation: the
    /// transactions it begins ([`Tx::begin`]) commit in memory, and once
    /// the lock is dropped this waits until they are durable, committed
    /// with those of other threads in one journal commit (see
    /// [`crate::group`]). An error of that commit is this operation's.
    pub(crate) fn grouped<T>(&self, f: impl FnOnce(&mut Meta) -> Result<T>) -> Result<T> {
        let mut meta = lock(&self.meta);
        meta.grouping = true;
        let r = f(&mut meta);
        meta.grouping = false;
        let ticket = meta.ticket.take();
        let group = meta.group.clone();
        drop(meta);
        let Some(t) = ticket else { return r };
        let w = crate::group::wait_durable(&*self.dev, &self.meta, &group, t);
        let v = r?;
        w.map(|_| v)
    }

    /// Makes the lazy transactions (store faults through views) durable.
    pub(crate) fn flush_lazy(&self) -> Result<()> {
        crate::tx::flush_lazy(&*self.dev, &mut lock(&self.meta))
    }

    /// A read-only store through the node cache of `meta` (whose lock the
    /// caller holds).
    pub(crate) fn cached_reader<'a>(&'a self, meta: &'a mut crate::tx::Meta) -> ReadStore<'a> {
        Committed::new(
            &*self.dev,
            self.fs_id,
            Some(&mut meta.cache),
            Some(&*self.reps),
        )
    }

    /// Frees an inode whose last link and last handle are gone: its blocks,
    /// its trees, its record and its orphan entry.
    pub(crate) fn free_inode(&self, tx: &mut Tx<'_>, ino: u64) -> Result<()> {
        let iroot = tx.meta.sb.inode_tree;
        let Some(rec) = inode::read_record(tx, &iroot, ino)? else {
            return Err(FsError::Corrupt(format!(
                "orphan inode {ino} has no record"
            )));
        };
        let kind = FileKind::of_mode(rec.mode.get());
        let mut troot = rec.tree;
        if kind == Some(FileKind::Dir) {
            crate::dir::tree(ino).destroy(tx, &mut troot)?;
        } else {
            // Inline extents or a tree: every extent's blocks are released,
            // then the tree, if any, is freed.
            let map = crate::extents::ExtentMap::load(tx, ino, &rec)?;
            for e in map.iter() {
                tx.record(crate::events::MapEvent::Unmap {
                    ino,
                    fblock: e.fblock,
                    phys: e.phys,
                    len: e.len,
                });
                tx.rmap_remove(
                    e.phys,
                    e.len,
                    crate::space::rmap::Owner::Data {
                        ino,
                        fblock: e.fblock,
                    },
                )?;
                tx.release_extent(e.phys, e.len)?;
            }
            crate::extents::tree(ino).destroy(tx, &mut troot)?;
            crate::media::end_loss(tx, ino, 0, u64::MAX)?;
        }
        crate::xattr::free_all(tx, ino)?;
        let mut root = tx.meta.sb.inode_tree;
        inode_tree().remove(tx, &mut root, &ino)?;
        tx.meta.sb.inode_tree = root;
        let mut oroot = tx.meta.sb.orphan_tree;
        orphan_tree().remove(tx, &mut oroot, &ino)?;
        tx.meta.sb.orphan_tree = oroot;
        tx.meta.sb.inodes = tx.meta.sb.inodes.get().saturating_sub(1).into();
        lock(&self.icache).remove(&ino);
        Ok(())
    }

    /// Puts a refused extent (see `extents::refusal`) in the error log,
    /// once per mount: action "refused", the extent's device range, the file
    /// and its offset (an extent of file block `u64::MAX` and no blocks: the
    /// record's extents as a whole, range and offset 0). Best effort: the
    /// refusal itself is the caller's error.
    pub(crate) fn log_refusal(
        &self,
        meta: &mut crate::tx::Meta,
        ino: u64,
        e: &crate::extents::Extent,
    ) {
        if !lock(&self.refused).insert((ino, e.fblock)) {
            return;
        }
        let Ok(mut tx) = Tx::begin(&*self.dev, meta) else {
            return;
        };
        let event = tx.meta.sb.error_seq.get();
        let logged = crate::media::log_event(
            &mut tx,
            event,
            e.phys,
            e.len,
            action::REFUSED,
            1,
            ino,
            e.fblock.checked_mul(BLOCK_SIZE_U64).unwrap_or(0),
            Default::default(),
        );
        if logged.is_ok() {
            let _ = tx.commit();
        }
    }

    /// Called when a handle closes: frees the inode if it was the last
    /// handle of an unlinked file.
    pub(crate) fn release(&self, ino: &Arc<Inode>) -> Result<()> {
        let mut meta = lock(&self.meta);
        let left = ino.opens.fetch_sub(1, Ordering::SeqCst) - 1;
        if left > 0 || ino.rec().rec.nlink.get() > 0 {
            return Ok(());
        }
        let mut tx = Tx::begin(&*self.dev, &mut meta)?;
        tx.use_reserve();
        self.free_inode(&mut tx, ino.ino)?;
        tx.commit()
    }
}
