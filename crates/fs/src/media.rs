//! Media errors: when memory fails, find every owner of the bad range through
//! the reverse map and deal with each.
//!
//! - File data: the lost blocks are recorded durably in the loss tree (keyed by
//!   inode and file block), whether or not the file is open; reads of them
//!   fail with EIO and never return the bad bytes; every open handle of every
//!   owning file is told (a block shared by N files is lost in all N).
//! - Free space: the range is quarantined in the bad-block tree and never
//!   allocated until the error is cleared.
//! - Metadata: repaired from its replica where the file system keeps them,
//!   otherwise the file system shuts down after every owner has been handled
//!   (writes fail with EIO; reads still work where they can).
//! - Every event goes into the persistent error log.
//!
//! A file's loss ends where it overwrites whole lost blocks, punches or zeroes
//! them, truncates past them or is deleted; the physical blocks stay
//! quarantined until the error is cleared.
use crate::error::{FsError, Result};
use crate::fs::{Fs, FsInner, lock};
use crate::reflink::OwnerKind;
use crate::space::badblocks;
use crate::space::rmap::{self, Owner};
use crate::tx::Tx;
use daxfs_btree::{BTree, NodeStore};
use daxfs_format::records::{ErrorLogRecord, TreeRoot, action};
use daxfs_format::superblock::STATE_ERRORS;
use daxfs_format::{BLOCK_SIZE_U64, BlockKind};
use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

const BS: u64 = BLOCK_SIZE_U64;

/// The loss tree: (inode, first lost file block) -> blocks.
pub fn loss_tree() -> BTree<(u64, u64), u64> {
    BTree::new(BlockKind::LossTree, 0)
}

/// The error log: sequence number -> entry.
pub fn error_log() -> BTree<u64, ErrorLogRecord> {
    BTree::new(BlockKind::ErrorLog, 0)
}

/// What a report says about the failure.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FailureFlags {
    /// A reader is waiting on this range (a synchronous fault), as opposed to
    /// an error found in the background.
    pub action_required: bool,
    /// The device is about to be removed.
    pub pre_remove: bool,
}

/// What was done for one owner of a failed range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailureEvent {
    /// Device byte range affected for this owner.
    pub physical: u64,
    pub length: u64,
    pub owner: OwnerKind,
    /// File byte offset (file data).
    pub offset: u64,
    /// "data lost", "repaired", "quarantined", "shut down", "no data".
    pub action: &'static str,
}

/// Told to every open handle of a file whose data was lost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LossNotice {
    pub ino: u64,
    /// File byte range lost.
    pub offset: u64,
    pub length: u64,
    /// A reader was waiting on it.
    pub action_required: bool,
}

/// Callback type for [`crate::File::on_media_error`].
pub type LossCallback = Arc<dyn Fn(&LossNotice) + Send + Sync>;

/// One open handle's view of media errors: the notices it has not taken yet
/// and its callback.
#[derive(Default)]
pub struct HandleNotices {
    pub queue: Mutex<Vec<LossNotice>>,
    pub callback: Mutex<Option<LossCallback>>,
}

impl std::fmt::Debug for HandleNotices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandleNotices").finish_non_exhaustive()
    }
}

/// An error-log entry as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorLogEntry {
    pub seq: u64,
    pub event: u64,
    pub time_sec: u64,
    pub physical: u64,
    pub length: u64,
    pub action: &'static str,
    pub owner: OwnerKind,
    pub offset: u64,
    pub action_required: bool,
    pub pre_remove: bool,
}

pub fn action_name(a: u32) -> &'static str {
    match a {
        action::DATA_LOST => "data lost",
        action::REPAIRED => "repaired",
        action::QUARANTINED => "quarantined",
        action::SHUT_DOWN => "shut down",
        action::CLEARED => "cleared",
        action::LOSS_ENDED => "loss ended",
        action::NO_DATA => "no data",
        _ => "unknown",
    }
}

/// Lost ranges of inode `ino` as (file block, blocks).
pub fn losses_of(s: &mut dyn NodeStore, root: &TreeRoot, ino: u64) -> Result<BTreeMap<u64, u64>> {
    let mut out = BTreeMap::new();
    if root.is_empty() {
        return Ok(out);
    }
    // Records from media: empty, overlapping or past the largest file
    // would overflow the arithmetic of every caller.
    let max = crate::file::MAX_FILE_SIZE / BS;
    let (mut prev_end, mut bad) = (0u64, None);
    loss_tree().range(s, root, &(ino, 0), &(ino, u64::MAX), &mut |k, l| {
        if l == 0 || k.1 < prev_end || k.1.checked_add(l).is_none_or(|e| e > max) {
            bad = Some(k.1);
            return ControlFlow::Break(());
        }
        prev_end = k.1 + l;
        out.insert(k.1, l);
        ControlFlow::Continue(())
    })?;
    if let Some(fb) = bad {
        return Err(FsError::Corrupt(format!(
            "loss tree: inode {ino}: record at file block {fb} is empty, overlaps or is out of range"
        )));
    }
    Ok(out)
}

/// Records that inode `ino` lost file blocks `[fb, fb+n)`; returns how many
/// blocks were not already recorded.
fn add_loss(tx: &mut Tx<'_>, ino: u64, fb: u64, n: u64) -> Result<u64> {
    let mut root = tx.meta.sb.loss_tree;
    let have = losses_of(tx, &root, ino)?;
    let (mut start, mut end) = (fb, fb + n);
    let mut already = 0;
    let mut merged = vec![];
    for (&k, &l) in have.range(..=end) {
        if k + l >= start {
            already += (k + l).min(fb + n).saturating_sub(k.max(fb));
            start = start.min(k);
            end = end.max(k + l);
            merged.push(k);
        }
    }
    loss_tree().insert(tx, &mut root, (ino, start), end - start)?;
    for k in merged {
        if k != start {
            loss_tree().remove(tx, &mut root, &(ino, k))?;
        }
    }
    tx.meta.sb.loss_tree = root;
    Ok(n - already)
}

/// Ends inode `ino`'s loss over file blocks `[fb, fb+n)`. Returns the blocks
/// whose loss ended.
pub(crate) fn end_loss(tx: &mut Tx<'_>, ino: u64, fb: u64, n: u64) -> Result<u64> {
    let mut root = tx.meta.sb.loss_tree;
    if root.is_empty() {
        return Ok(0);
    }
    let have = losses_of(tx, &root, ino)?;
    let end = fb.saturating_add(n);
    let mut ended = 0;
    for (&k, &l) in have.range(..end) {
        if k + l <= fb {
            continue;
        }
        ended += (k + l).min(end) - k.max(fb);
        if k < fb {
            loss_tree().insert(tx, &mut root, (ino, k), fb - k)?;
        }
        if k + l > end {
            loss_tree().insert(tx, &mut root, (ino, end), k + l - end)?;
        }
        if k >= fb {
            loss_tree().remove(tx, &mut root, &(ino, k))?;
        }
    }
    tx.meta.sb.loss_tree = root;
    Ok(ended)
}

/// Appends an error-log entry.
#[allow(clippy::too_many_arguments)]
pub(crate) fn log_event(
    tx: &mut Tx<'_>,
    event: u64,
    phys: u64,
    len: u64,
    act: u32,
    owner_kind: u32,
    ino: u64,
    file_off: u64,
    flags: FailureFlags,
) -> Result<()> {
    let seq = tx.meta.sb.error_seq.get();
    tx.meta.sb.error_seq = (seq + 1).into();
    let rec = ErrorLogRecord {
        time_sec: (crate::inode::now().sec.get() as u64).into(),
        dev_off: (phys * BS).into(),
        dev_len: (len * BS).into(),
        action: act.into(),
        owner_kind: owner_kind.into(),
        ino: ino.into(),
        file_off: file_off.into(),
        flags: (u64::from(flags.action_required) | (u64::from(flags.pre_remove) << 1)).into(),
        event: event.into(),
    };
    let mut root = tx.meta.sb.error_log;
    error_log().insert(tx, &mut root, seq, rec)?;
    tx.meta.sb.error_log = root;
    Ok(())
}

impl FsInner {
    /// The owner kind of a reverse-map owner, with paths.
    fn owner_kind(
        &self,
        s: &mut dyn NodeStore,
        sb: &daxfs_format::Superblock,
        o: Owner,
    ) -> OwnerKind {
        match o {
            Owner::Meta(k) => OwnerKind::Metadata(k.name()),
            o => {
                let ino = o.ino().unwrap_or(0);
                let paths = crate::dir::paths(s, sb, ino).unwrap_or_default();
                let fork = match o {
                    Owner::Data { .. } => "data",
                    Owner::ExtentTree { .. } => "extent tree",
                    _ => "directory",
                };
                OwnerKind::File { ino, paths, fork }
            }
        }
    }

    /// Handles a report of bad memory at device bytes `[off, off+len)`.
    pub(crate) fn media_failure(
        &self,
        off: u64,
        len: u64,
        flags: FailureFlags,
    ) -> Result<Vec<FailureEvent>> {
        let mut meta = lock(&self.meta);
        let total = meta.sb.total_blocks.get();
        let b0 = off / BS;
        let b1 = off.saturating_add(len).div_ceil(BS).min(total);
        if b0 >= b1 {
            return Err(FsError::Invalid(format!(
                "range [{off:#x}, +{len:#x}) is outside the device"
            )));
        }
        if meta.sb.incompat.get() & daxfs_format::superblock::INCOMPAT_RMAP == 0 {
            return Err(FsError::NotSupported(
                "media errors need the reverse map (made with --no-rmap)".into(),
            ));
        }
        // Ranges already known bad were handled when first reported (the
        // device replays its list to every new holder): nothing to do again.
        {
            let broot = meta.sb.badblock_tree;
            let known: u64 =
                badblocks::overlapping(&mut self.cached_reader(&mut meta), &broot, b0, b1 - b0)?
                    .iter()
                    .map(|r| r.1)
                    .sum();
            if known == b1 - b0 {
                return Ok(vec![]);
            }
        }
        // A shut-down file system still records what it can.
        let was_shut = meta.shutdown.take();
        let mut tx = Tx::begin(&*self.dev, &mut meta)?;
        let event = tx.meta.sb.error_seq.get();
        let sb = tx.meta.sb;
        let recs = rmap::query(&mut tx, &sb.rmap_tree, b0, b1 - b0)?;
        let mut events = vec![];
        // Nodes in the range that a read met bad (before this report was
        // handled) were repaired when the transaction began.
        let repaired = std::mem::take(&mut lock(&tx.meta.reps).repaired);
        for f in repaired {
            if (b0..b1).contains(&f.block) {
                let o = Owner::of_node(f.kind, f.owner);
                events.push(FailureEvent {
                    physical: f.block * BS,
                    length: BS,
                    owner: self.owner_kind(&mut tx, &sb, o),
                    offset: 0,
                    action: "repaired",
                });
            }
        }
        let mut notices: Vec<LossNotice> = vec![];
        let mut touched = vec![];
        let mut shutdown = None;
        for m in recs {
            let s = b0.max(m.phys);
            let t = b1.min(m.phys + m.len);
            let owner = self.owner_kind(&mut tx, &sb, m.owner);
            match m.owner {
                Owner::Data { ino, fblock } => {
                    let fb = fblock + (s - m.phys);
                    if m.unwritten {
                        log_event(
                            &mut tx,
                            event,
                            s,
                            t - s,
                            action::NO_DATA,
                            1,
                            ino,
                            fb * BS,
                            flags,
                        )?;
                        events.push(FailureEvent {
                            physical: s * BS,
                            length: (t - s) * BS,
                            owner,
                            offset: fb * BS,
                            action: "no data",
                        });
                        continue;
                    }
                    add_loss(&mut tx, ino, fb, t - s)?;
                    log_event(
                        &mut tx,
                        event,
                        s,
                        t - s,
                        action::DATA_LOST,
                        1,
                        ino,
                        fb * BS,
                        flags,
                    )?;
                    notices.push(LossNotice {
                        ino,
                        offset: fb * BS,
                        length: (t - s) * BS,
                        action_required: flags.action_required,
                    });
                    touched.push(ino);
                    events.push(FailureEvent {
                        physical: s * BS,
                        length: (t - s) * BS,
                        owner,
                        offset: fb * BS,
                        action: "data lost",
                    });
                }
                o => {
                    let (kind, ino) = match o {
                        Owner::Meta(k) => (3, k as u64),
                        o => (2, o.ino().unwrap_or(0)),
                    };
                    // Rebuilt from its replica onto fresh blocks.
                    if crate::replica::repair_hit(&mut tx, &m, (b0, b1 - b0))? {
                        log_event(
                            &mut tx,
                            event,
                            s,
                            t - s,
                            action::REPAIRED,
                            kind,
                            ino,
                            0,
                            flags,
                        )?;
                        events.push(FailureEvent {
                            physical: s * BS,
                            length: (t - s) * BS,
                            owner,
                            offset: 0,
                            action: "repaired",
                        });
                        continue;
                    }
                    // Metadata without a usable replica: shut down, but only
                    // after every owner in the range has been handled.
                    log_event(
                        &mut tx,
                        event,
                        s,
                        t - s,
                        action::SHUT_DOWN,
                        kind,
                        ino,
                        0,
                        flags,
                    )?;
                    shutdown.get_or_insert_with(|| {
                        format!(
                            "metadata block {s} ({owner:?}) is bad and has no good replica; run fsck"
                        )
                    });
                    events.push(FailureEvent {
                        physical: s * BS,
                        length: (t - s) * BS,
                        owner,
                        offset: 0,
                        action: "shut down",
                    });
                }
            }
        }
        // Free space in the range goes into quarantine.
        for (s, l) in tx.quarantine_free(b0, b1 - b0)? {
            log_event(&mut tx, event, s, l, action::QUARANTINED, 4, 0, 0, flags)?;
            events.push(FailureEvent {
                physical: s * BS,
                length: l * BS,
                owner: OwnerKind::Free,
                offset: 0,
                action: "quarantined",
            });
        }
        let mut broot = tx.meta.sb.badblock_tree;
        badblocks::add(&mut tx, &mut broot, b0, b1 - b0)?;
        tx.meta.sb.badblock_tree = broot;
        if shutdown.is_some() {
            tx.meta.sb.state = (tx.meta.sb.state.get() | STATE_ERRORS).into();
        }
        tx.commit()?;
        meta.shutdown = shutdown.or(was_shut);
        drop(meta);
        self.deliver(&touched, &notices);
        Ok(events)
    }

    /// Marks the in-memory loss maps of `inos` stale and tells their handles.
    fn deliver(&self, inos: &[u64], notices: &[LossNotice]) {
        let cached: Vec<Arc<crate::inode::Inode>> = {
            let c = lock(&self.icache);
            inos.iter().filter_map(|i| c.get(i).cloned()).collect()
        };
        for node in &cached {
            *lock(&node.lost) = None;
            node.has_losses.store(true, Ordering::Release);
        }
        for n in notices {
            let Some(node) = cached.iter().find(|x| x.ino == n.ino) else {
                continue;
            };
            let handles: Vec<Arc<HandleNotices>> = lock(&node.handles)
                .iter()
                .filter_map(|w| w.upgrade())
                .collect();
            for h in handles {
                lock(&h.queue).push(n.clone());
                let cb = lock(&h.callback).clone();
                if let Some(cb) = cb {
                    cb(n);
                }
            }
        }
    }
}

/// The file system as the device's holder: every media-error report comes
/// here. Background and removal reports are handled at once; a report made
/// while a reader waits (from inside a failing device call, when the caller
/// may hold file-system locks) is queued and handled by a worker thread as
/// soon as those locks are free (the reader's own error path also drains
/// the queue).
pub(crate) struct FsHolder {
    pub fs: std::sync::Weak<FsInner>,
}

impl daxfs_device::Holder for FsHolder {
    fn notify_failure(
        &self,
        off: u64,
        len: u64,
        flags: daxfs_device::FailureFlags,
    ) -> std::result::Result<(), daxfs_device::NotifyError> {
        let Some(fs) = self.fs.upgrade() else {
            return Ok(());
        };
        let f = FailureFlags {
            action_required: flags.action_required,
            pre_remove: flags.pre_remove,
        };
        if f.pre_remove {
            fs.device_removed();
            return Ok(());
        }
        if f.action_required {
            lock(&fs.pending).push((off, len, f));
            let weak = self.fs.clone();
            let _ = std::thread::Builder::new()
                .name("daxfs-media".into())
                .spawn(move || {
                    if let Some(fs) = weak.upgrade() {
                        fs.process_pending();
                    }
                });
            return Ok(());
        }
        fs.media_failure(off, len, f)
            .map(|ev| lock(&fs.recent).extend(ev))
            .map_err(|e| daxfs_device::NotifyError(e.to_string()))
    }
}

impl FsInner {
    /// Handles queued reports (see [`FsHolder`]).
    pub(crate) fn process_pending(&self) {
        let work = std::mem::take(&mut *lock(&self.pending));
        for (off, len, f) in work {
            if let Ok(ev) = self.media_failure(off, len, f) {
                lock(&self.recent).extend(ev);
            }
        }
    }

    /// The device is about to go: make everything durable, stop writes, and
    /// record it. The file system is not marked corrupt.
    pub(crate) fn device_removed(&self) {
        let _ = self.sync();
        let mut meta = lock(&self.meta);
        if meta.shutdown.is_none() {
            if let Ok(mut tx) = Tx::begin(&*self.dev, &mut meta) {
                let ev = tx.meta.sb.error_seq.get();
                let total = tx.meta.sb.total_blocks.get();
                let flags = FailureFlags {
                    action_required: false,
                    pre_remove: true,
                };
                if log_event(&mut tx, ev, 0, total, action::SHUT_DOWN, 0, 0, 0, flags).is_ok() {
                    let _ = tx.commit();
                }
            }
            meta.shutdown = Some("the device is being removed".into());
        }
    }
}

impl Fs {
    /// Injects a media error into the device (the emulation's stand-in for a
    /// hardware report) and returns what the file system did for each owner.
    pub fn inject_error(&self, off: u64, len: u64) -> Result<Vec<FailureEvent>> {
        lock(&self.inner.recent).clear();
        self.inner.dev.inject_error(off, len)?;
        self.inner.process_pending();
        Ok(std::mem::take(&mut *lock(&self.inner.recent)))
    }

    /// Imports a bad-block list (sysfs `badblocks` text or ndctl JSON) into
    /// the device; returns the ranges read and what was done.
    pub fn import_bad_blocks(
        &self,
        text: &str,
        origin: &str,
    ) -> Result<(Vec<(u64, u64)>, Vec<FailureEvent>)> {
        lock(&self.inner.recent).clear();
        let ranges = self.inner.dev.import_bad_block_list(text, origin)?;
        Ok((ranges, std::mem::take(&mut *lock(&self.inner.recent))))
    }

    /// Reports handled since the last call (for example those the device
    /// delivered when the file system was mounted).
    pub fn take_failure_events(&self) -> Vec<FailureEvent> {
        self.inner.process_pending();
        std::mem::take(&mut *lock(&self.inner.recent))
    }

    /// Handles a report of bad memory at device bytes `[off, off+len)`:
    /// every owner found through the reverse map is dealt with (see the
    /// module docs). Returns what was done for each.
    pub fn media_failure(
        &self,
        off: u64,
        len: u64,
        flags: FailureFlags,
    ) -> Result<Vec<FailureEvent>> {
        self.inner.media_failure(off, len, flags)
    }

    /// The persistent error log, oldest first.
    pub fn error_log(&self) -> Result<Vec<ErrorLogEntry>> {
        let mut meta = lock(&self.inner.meta);
        let sb = meta.sb;
        let mut rs = self.inner.cached_reader(&mut meta);
        let mut recs = vec![];
        error_log().range(&mut rs, &sb.error_log, &0, &u64::MAX, &mut |k, r| {
            recs.push((k, r));
            ControlFlow::Continue(())
        })?;
        let mut out = vec![];
        for (seq, r) in recs {
            let owner = match r.owner_kind.get() {
                1 | 2 => OwnerKind::File {
                    ino: r.ino.get(),
                    paths: crate::dir::paths(&mut rs, &sb, r.ino.get()).unwrap_or_default(),
                    fork: if r.owner_kind.get() == 1 {
                        "data"
                    } else {
                        "metadata"
                    },
                },
                3 => OwnerKind::Metadata(
                    u8::try_from(r.ino.get())
                        .ok()
                        .and_then(BlockKind::from_u8)
                        .map_or("metadata", |k| k.name()),
                ),
                _ => OwnerKind::Free,
            };
            let f = r.flags.get();
            out.push(ErrorLogEntry {
                seq,
                event: r.event.get(),
                time_sec: r.time_sec.get(),
                physical: r.dev_off.get(),
                length: r.dev_len.get(),
                action: action_name(r.action.get()),
                owner,
                offset: r.file_off.get(),
                action_required: f & 1 != 0,
                pre_remove: f & 2 != 0,
            });
        }
        Ok(out)
    }

    /// Known-bad device ranges (bytes), merged.
    pub fn bad_ranges(&self) -> Result<Vec<(u64, u64)>> {
        let mut meta = lock(&self.inner.meta);
        let root = meta.sb.badblock_tree;
        Ok(
            badblocks::all(&mut self.inner.cached_reader(&mut meta), &root)?
                .into_iter()
                .map(|(s, l)| (s * BS, l * BS))
                .collect(),
        )
    }

    /// Every file's lost ranges: (inode, file byte offset, bytes).
    pub fn all_losses(&self) -> Result<Vec<(u64, u64, u64)>> {
        let mut meta = lock(&self.inner.meta);
        let root = meta.sb.loss_tree;
        let mut out = vec![];
        loss_tree().range(
            &mut self.inner.cached_reader(&mut meta),
            &root,
            &(0, 0),
            &(u64::MAX, u64::MAX),
            &mut |k, l| {
                out.push((k.0, k.1.saturating_mul(BS), l.saturating_mul(BS)));
                ControlFlow::Continue(())
            },
        )?;
        Ok(out)
    }

    /// The reason the file system shut down, if it did.
    pub fn shutdown_reason(&self) -> Option<String> {
        lock(&self.inner.meta).shutdown.clone()
    }

    /// Marks device bytes `[off, off+len)` good again (after the device's
    /// error was cleared): they leave the bad-block tree and, where no file
    /// owns them, return to free space. Files keep their recorded losses.
    pub fn clear_bad_range(&self, off: u64, len: u64) -> Result<()> {
        let inner = &*self.inner;
        let mut meta = lock(&inner.meta);
        let mut tx = Tx::begin(&*inner.dev, &mut meta)?;
        let (b0, b1) = (off / BS, off.saturating_add(len).div_ceil(BS));
        let broot = tx.meta.sb.badblock_tree;
        let bad = badblocks::overlapping(&mut tx, &broot, b0, b1 - b0)?;
        if bad.is_empty() {
            return Ok(());
        }
        let event = tx.meta.sb.error_seq.get();
        let rroot = tx.meta.sb.rmap_tree;
        for &(s, l) in &bad {
            if let Some(m) = rmap::query(&mut tx, &rroot, s, l)?
                .into_iter()
                .find(|m| !matches!(m.owner, Owner::Data { .. }))
            {
                return Err(FsError::NotPermitted(format!(
                    "block {} holds metadata ({:?}); repair it (scrub) or run fsck before clearing",
                    m.phys, m.owner
                )));
            }
        }
        // The recovery write: whole pages of zeros make the memory good again.
        for &(s, l) in &bad {
            let zeros = vec![0u8; (l * BS) as usize];
            inner.dev.clear_error(s * BS, &zeros)?;
        }
        for (s, l) in bad {
            let owned = rmap::query(&mut tx, &rroot, s, l)?;
            let mut at = s;
            let mut covered: Vec<(u64, u64)> = owned
                .iter()
                .map(|m| (m.phys.max(s), (m.phys + m.len).min(s + l)))
                .collect();
            covered.sort_unstable();
            for (cs, ce) in covered {
                if cs > at {
                    tx.free_extent(at, cs - at);
                }
                at = at.max(ce);
            }
            if at < s + l {
                tx.free_extent(at, s + l - at);
            }
            log_event(
                &mut tx,
                event,
                s,
                l,
                action::CLEARED,
                0,
                0,
                0,
                FailureFlags::default(),
            )?;
        }
        let mut broot = tx.meta.sb.badblock_tree;
        badblocks::remove(&mut tx, &mut broot, b0, b1 - b0)?;
        tx.meta.sb.badblock_tree = broot;
        tx.commit()
    }
}

/// What a scrub found.
#[derive(Clone, Debug, Default)]
pub struct ScrubReport {
    /// Problems in metadata (from the checker), each naming block and structure.
    pub problems: Vec<crate::fsck::Problem>,
    /// Metadata blocks in use that were read and verified.
    pub metadata_blocks: u64,
    /// Data blocks read (with `data`).
    pub data_blocks: u64,
    /// Media errors found and what was done for each owner.
    pub events: Vec<FailureEvent>,
    /// Data lost earlier and still lost: (inode, file offset, bytes).
    pub lost: Vec<(u64, u64, u64)>,
}

impl ScrubReport {
    /// Nothing is left unrepaired: metadata is consistent and no data was
    /// found lost.
    pub fn clean(&self) -> bool {
        self.problems.is_empty()
            && self.lost.is_empty()
            && !self.events.iter().any(|e| e.action == "shut down")
    }
}

impl Fs {
    /// Verifies every metadata block (checksums, structure, cross-checks);
    /// with `data`, also reads every allocated data block through the
    /// machine-check-safe path, so latent media errors are found and handled
    /// like any other report (every owner told). `progress(phase, done, total)`.
    pub fn scrub(
        &self,
        data: bool,
        progress: &mut dyn FnMut(&str, u64, u64),
    ) -> Result<ScrubReport> {
        self.sync()?;
        let _ = self.take_failure_events();
        // Bad or differing copies of replicated metadata are rebuilt first.
        self.scrub_replicas()?;
        let rep = crate::fsck::fsck(&*self.inner.dev, progress)?;
        let mut out = ScrubReport {
            problems: rep.problems,
            metadata_blocks: rep.metadata_blocks,
            ..Default::default()
        };
        if data {
            // Distinct physical data ranges, from the reverse map.
            let ranges: Vec<(u64, u64)> = {
                let mut meta = lock(&self.inner.meta);
                let sb = meta.sb;
                let mut rs = self.inner.cached_reader(&mut meta);
                let mut v: Vec<(u64, u64)> =
                    rmap::query(&mut rs, &sb.rmap_tree, 0, sb.total_blocks.get())?
                        .into_iter()
                        .filter(|m| matches!(m.owner, Owner::Data { .. }) && !m.unwritten)
                        .map(|m| (m.phys, m.len))
                        .collect();
                v.sort_unstable();
                v.dedup();
                v
            };
            let total: u64 = ranges.iter().map(|r| r.1).sum();
            let mut buf = vec![0u8; 256 * 1024];
            let mut done = 0;
            for (p, l) in ranges {
                let mut at = 0;
                while at < l {
                    let n = (l - at).min(buf.len() as u64 / BS);
                    if self
                        .inner
                        .dev
                        .read((p + at) * BS, &mut buf[..(n * BS) as usize])
                        .is_err()
                    {
                        // Read block by block to find each bad page (the
                        // device reports each unknown one to us).
                        for b in 0..n {
                            let _ = self
                                .inner
                                .dev
                                .read((p + at + b) * BS, &mut buf[..BS as usize]);
                        }
                    }
                    at += n;
                    done += n;
                    progress("data", done, total);
                }
            }
            out.data_blocks = done;
        }
        out.events = self.take_failure_events();
        out.lost = self.all_losses()?;
        Ok(out)
    }
}
