//! Media errors: when memory fails, find every owner of the bad range through
//! the reverse map and deal with each.
//!
//! - File data: the lost blocks are recorded durably in the loss tree (keyed by
//!   inode and file block), whether or not the file is open; reads of them
//!   fail with EIO and never return the bad bytes; every open handle of every
//!   owning file is told (a block shared by N files is lost in all N).
//! - Free space: the range is quarantined in the bad-block tree and never
//!   allocated until the error is cleared. This comes first, before the
//!   report allocates anything: no node it makes lands in the range.
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
use daxfs_format::records::{
    ERROR_LOG_OWNERS_PER_RECORD, ErrorLogOwner, ErrorLogOwners, ErrorLogRecord, TreeRoot, action,
};
use daxfs_format::superblock::STATE_ERRORS;
use daxfs_format::{BLOCK_SIZE_U64, BlockKind};
use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use zerocopy::FromZeros;

const BS: u64 = BLOCK_SIZE_U64;

/// The loss tree: (inode, first lost file block) -> blocks.
pub fn loss_tree() -> BTree<(u64, u64), u64> {
    BTree::new(BlockKind::LossTree, 0)
}

/// The error log: (entry sequence number, part) -> the entry's head (part
/// 0) or a record of its further owners ([`ErrorLogOwners`], parts 1..).
pub fn error_log() -> BTree<(u64, u64), ErrorLogRecord> {
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
    /// The owner; a file is named by inode, with `paths` left empty until
    /// [`Fs::name_owners`](crate::Fs::name_owners) fills them in.
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

/// One owner of an error-log entry, as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorLogEntry {
    /// The entry's sequence number: one entry names one device range,
    /// action and owner kind, and every owner they apply to, so the owners
    /// of one entry share it.
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
        action::REFUSED => "refused",
        _ => "unknown",
    }
}

/// Lost ranges of inode `ino` as (file block, blocks).
pub fn losses_of(s: &mut dyn NodeStore, root: &TreeRoot, ino: u64) -> Result<BTreeMap<u64, u64>> {
    Ok(loss_records(s, root, ino, ino)?
        .into_iter()
        .map(|((_, fb), l)| (fb, l))
        .collect())
}

/// The loss records of inodes `first..=last`, in key order, checked: a
/// record from media that is empty, overlaps the one before it (same
/// inode) or reaches past the largest file would overflow the arithmetic of
/// every caller.
fn loss_records(
    s: &mut dyn NodeStore,
    root: &TreeRoot,
    first: u64,
    last: u64,
) -> Result<Vec<((u64, u64), u64)>> {
    let mut out = vec![];
    loss_records_into(s, root, first, last, &mut out)?;
    Ok(out)
}

/// [`loss_records`], appended to `out`.
fn loss_records_into(
    s: &mut dyn NodeStore,
    root: &TreeRoot,
    first: u64,
    last: u64,
    out: &mut Vec<((u64, u64), u64)>,
) -> Result<()> {
    if root.is_empty() {
        return Ok(());
    }
    let max = daxfs_format::MAX_FILE_BLOCKS;
    let mut bad = None;
    let mut prev = (0u64, 0u64);
    loss_tree().range(s, root, &(first, 0), &(last, u64::MAX), &mut |k, l| {
        let prev_end = if prev.0 == k.0 { prev.1 } else { 0 };
        if l == 0 || k.1 < prev_end || k.1.checked_add(l).is_none_or(|e| e > max) {
            bad = Some(k);
            return ControlFlow::Break(());
        }
        prev = (k.0, k.1 + l);
        out.push((k, l));
        ControlFlow::Continue(())
    })?;
    if let Some((ino, fb)) = bad {
        return Err(FsError::Corrupt(format!(
            "loss tree: inode {ino}: record at file block {fb} is empty, overlaps or is out of range"
        )));
    }
    Ok(())
}

/// Records that each `(ino, fb, n)` of `lost` lost file blocks
/// `[fb, fb+n)`, merged with what each inode had lost before. The records of
/// all the inodes go in at once (a block shared by thousands of files gives
/// thousands of records): one scan of the loss tree over the inodes' span,
/// one sorted insert.
fn add_losses(tx: &mut Tx<'_>, lost: &mut [(u64, u64, u64)], bufs: &mut LossBufs) -> Result<()> {
    if lost.is_empty() {
        return Ok(());
    }
    // The reverse map gives one block's owners in inode order already.
    if !lost.is_sorted() {
        lost.sort_unstable();
    }
    let mut root = tx.meta.sb.loss_tree;
    let (first, last) = (lost[0].0, lost[lost.len() - 1].0);
    // What the inodes had lost already, in key order: per inode when they
    // are few, else one walk over the span of their numbers.
    let LossBufs {
        have,
        inserts,
        removes,
        now,
    } = bufs;
    have.clear();
    if lost.len() <= 16 {
        let mut prev = None;
        for &(ino, _, _) in lost.iter() {
            if prev != Some(ino) {
                loss_records_into(tx, &root, ino, ino, have)?;
                prev = Some(ino);
            }
        }
    } else {
        loss_records_into(tx, &root, first, last, have)?;
    }
    // Merge, per inode, the old records with the new ranges: both sorted.
    inserts.clear();
    inserts.reserve(lost.len());
    removes.clear();
    let (mut i, mut h) = (0, 0);
    while i < lost.len() {
        let ino = lost[i].0;
        while h < have.len() && have[h].0.0 < ino {
            h += 1;
        }
        let h0 = h;
        while h < have.len() && have[h].0.0 == ino {
            h += 1;
        }
        let old = &have[h0..h];
        // Old and new ranges together, sorted by start (the old ones are;
        // the new ones are when the report found them in order), joined
        // where they touch or overlap.
        now.clear();
        now.extend(old.iter().map(|((_, k), l)| (*k, k + l)));
        let i0 = i;
        while i < lost.len() && lost[i].0 == ino {
            i += 1;
        }
        let new = &lost[i0..i];
        // The common case of a file losing one more range next to or away
        // from the one it had: no buffer.
        if let ([((_, k), l)], [(_, fb, n)]) = (old, new) {
            let (k, e, fb, fe) = (*k, k + l, *fb, fb + n);
            if fb <= e && k <= fe {
                let (s, t) = (k.min(fb), e.max(fe));
                if (s, t) != (k, e) {
                    if s != k {
                        removes.push((ino, k));
                    }
                    inserts.push(((ino, s), t - s));
                }
            } else {
                inserts.push(((ino, fb), fe - fb));
            }
            continue;
        }
        if old.is_empty() {
            now.extend(new.iter().map(|&(_, fb, n)| (fb, fb + n)));
        } else {
            // A merge of the two sorted runs (a file's old records are
            // few, its new ranges fewer).
            let at = now.len();
            now.extend(new.iter().map(|&(_, fb, n)| (fb, fb + n)));
            if !now[..at].is_empty() && now[at - 1].0 > now[at].0 || !now[at..].is_sorted() {
                now.sort_unstable();
            }
        }
        // Join in place: `w` ranges kept so far.
        let mut w = 0;
        for r in 0..now.len() {
            let (s, e) = now[r];
            if w > 0 && s <= now[w - 1].1 {
                now[w - 1].1 = now[w - 1].1.max(e);
            } else {
                now[w] = (s, e);
                w += 1;
            }
        }
        let joined = &now[..w];
        // Records to write: the joined ranges that are not already there;
        // records to remove: old ones no joined range starts at. Both lists
        // are sorted, so one pass each.
        let mut o = 0;
        for &(s, e) in joined {
            while o < old.len() && old[o].0.1 < s {
                o += 1;
            }
            if !old.get(o).is_some_and(|((_, k), l)| *k == s && *l == e - s) {
                inserts.push(((ino, s), e - s));
            }
        }
        let mut j = 0;
        for ((_, k), _) in old {
            while j < joined.len() && joined[j].0 < *k {
                j += 1;
            }
            if joined.get(j).is_none_or(|(s, _)| s != k) {
                removes.push((ino, *k));
            }
        }
    }
    for k in removes.iter() {
        loss_tree().remove(tx, &mut root, k)?;
    }
    loss_tree().insert_sorted(tx, &mut root, inserts)?;
    tx.meta.sb.loss_tree = root;
    Ok(())
}

/// Buffers a report fills, kept from one report to the next: a block
/// shared 10,000 ways fills about 2 MB of them, and fresh memory costs the
/// kernel clearing each page at its first touch.
#[derive(Debug, Default)]
pub(crate) struct ReportBufs {
    recs: Vec<rmap::Mapping>,
    lost: Vec<(u64, u64, u64)>,
    lost_log: Vec<PendingLog>,
    log_items: Vec<((u64, u64), ErrorLogRecord)>,
    loss: LossBufs,
}

/// The loss tree's part of [`ReportBufs`].
#[derive(Debug, Default)]
pub(crate) struct LossBufs {
    /// The owners' records before the report.
    have: Vec<((u64, u64), u64)>,
    /// Records to write and keys to remove.
    inserts: Vec<((u64, u64), u64)>,
    removes: Vec<(u64, u64)>,
    /// One inode's ranges, old and new, as they are joined.
    now: Vec<(u64, u64)>,
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
    let entry = PendingLog {
        event,
        phys,
        len,
        act,
        owner_kind,
        ino,
        file_off,
    };
    log_events(tx, &[entry], flags)
}

/// An error-log entry waiting to be appended by [`log_events`].
#[derive(Debug)]
pub(crate) struct PendingLog {
    pub event: u64,
    pub phys: u64,
    pub len: u64,
    pub act: u32,
    pub owner_kind: u32,
    pub ino: u64,
    pub file_off: u64,
}

/// Appends error-log entries, in order, in one sorted insert.
pub(crate) fn log_events(tx: &mut Tx<'_>, logs: &[PendingLog], flags: FailureFlags) -> Result<()> {
    log_events_with(tx, logs, flags, &mut vec![])
}

/// [`log_events`], building the records in `items` (a buffer kept by the
/// caller). Consecutive `logs` of one report, device range, action and
/// owner kind make one entry: a head naming the first owner, then the
/// others four to a record (a block shared by 10,000 files is one entry of
/// 2,501 records).
fn log_events_with(
    tx: &mut Tx<'_>,
    logs: &[PendingLog],
    flags: FailureFlags,
    items: &mut Vec<((u64, u64), ErrorLogRecord)>,
) -> Result<()> {
    if logs.is_empty() {
        return Ok(());
    }
    let mut seq = tx.meta.sb.error_seq.get();
    let time = (crate::inode::now().sec.get() as u64).into();
    let flags = (u32::from(flags.action_required) | (u32::from(flags.pre_remove) << 1)).into();
    items.clear();
    items.reserve(1 + logs.len() / ERROR_LOG_OWNERS_PER_RECORD + logs.len() / 64);
    let same = |a: &PendingLog, b: &PendingLog| {
        (a.event, a.phys, a.len, a.act, a.owner_kind)
            == (b.event, b.phys, b.len, b.act, b.owner_kind)
    };
    let mut at = 0;
    while let Some(l) = logs.get(at) {
        let n = logs[at..]
            .iter()
            .take(u32::MAX as usize)
            .take_while(|m| same(l, m))
            .count();
        let head = ErrorLogRecord {
            time_sec: time,
            dev_off: (l.phys * BS).into(),
            dev_len: (l.len * BS).into(),
            action: l.act.into(),
            owner_kind: l.owner_kind.into(),
            ino: l.ino.into(),
            file_off: l.file_off.into(),
            flags,
            owners: (n as u32).into(),
            event: l.event.into(),
        };
        items.push(((seq, 0), head));
        for (part, chunk) in logs[at + 1..at + n]
            .chunks(ERROR_LOG_OWNERS_PER_RECORD)
            .enumerate()
        {
            let mut o = ErrorLogOwners::new_zeroed();
            for (slot, m) in o.owners.iter_mut().zip(chunk) {
                *slot = ErrorLogOwner {
                    ino: m.ino.into(),
                    file_off: m.file_off.into(),
                };
            }
            items.push(((seq, part as u64 + 1), o.into_record()));
        }
        at += n;
        seq = seq.checked_add(1).ok_or_else(|| {
            FsError::Corrupt("superblock: error-log sequence number overflows".into())
        })?;
    }
    tx.meta.sb.error_seq = seq.into();
    let mut root = tx.meta.sb.error_log;
    error_log().insert_sorted(tx, &mut root, items)?;
    tx.meta.sb.error_log = root;
    Ok(())
}

/// Reads the error log, checking how its records make entries: each entry
/// is a head at `(seq, 0)` and exactly the owner records its count needs at
/// `(seq, 1..)`, unused owner slots zero, its fields and owners in range,
/// and `seq` below `next_seq` (the superblock's `error_seq`). `f` gets
/// every owner of every entry, in order: `(seq, head, ino, file offset)`.
pub(crate) fn read_error_log(
    s: &mut dyn NodeStore,
    root: &TreeRoot,
    next_seq: u64,
    f: &mut dyn FnMut(u64, &ErrorLogRecord, u64, u64),
) -> Result<()> {
    // The entry being read: its sequence number, head, owners read so far,
    // and the part that holds the next of them.
    let mut cur: Option<(u64, ErrorLogRecord, u64, u64)> = None;
    let mut bad: Option<String> = None;
    let missing = |c: u64, h: &ErrorLogRecord, done: u64| {
        let owners = u64::from(h.owners.get());
        (done < owners).then(|| {
            format!(
                "entry {c} names {owners} owners but {} have no record",
                owners - done
            )
        })
    };
    error_log().range(s, root, &(0, 0), &(u64::MAX, u64::MAX), &mut |(seq, part), r| {
        let problem = if part == 0 {
            match cur.as_ref().and_then(|(c, h, done, _)| missing(*c, h, *done)) {
                Some(p) => Some(p),
                None => match check_head(seq, &r, next_seq) {
                    Ok(()) => {
                        f(seq, &r, r.ino.get(), r.file_off.get());
                        cur = Some((seq, r, 1, 1));
                        None
                    }
                    Err(p) => Some(p),
                },
            }
        } else {
            match &mut cur {
                Some((c, h, done, next))
                    if *c == seq && *next == part && *done < u64::from(h.owners.get()) =>
                {
                    let o = ErrorLogOwners::from_record(r);
                    let left = u64::from(h.owners.get()) - *done;
                    let n = left.min(ERROR_LOG_OWNERS_PER_RECORD as u64) as usize;
                    let (used, unused) = o.owners.split_at(n);
                    let mut problem = None;
                    if unused.iter().any(|x| *x != ErrorLogOwner::default()) {
                        problem = Some(format!(
                            "entry {seq}: owner record {part} has data past the entry's last owner"
                        ));
                    }
                    for x in used {
                        if problem.is_some() {
                            break;
                        }
                        problem = check_owner(seq, *done, h, x.ino.get(), x.file_off.get()).err();
                        if problem.is_none() {
                            f(seq, h, x.ino.get(), x.file_off.get());
                            *done += 1;
                        }
                    }
                    *next += 1;
                    problem
                }
                _ => Some(format!(
                    "owner record ({seq}, {part}) belongs to no entry (or is past its last owner)"
                )),
            }
        };
        match problem {
            Some(p) => {
                bad = Some(p);
                ControlFlow::Break(())
            }
            None => ControlFlow::Continue(()),
        }
    })?;
    if bad.is_none() {
        bad = cur.and_then(|(c, h, done, _)| missing(c, &h, done));
    }
    match bad {
        Some(p) => Err(FsError::Corrupt(format!("error log: {p}"))),
        None => Ok(()),
    }
}

/// The fields of an error-log entry's head that must be in range, and its
/// first owner.
fn check_head(seq: u64, r: &ErrorLogRecord, next_seq: u64) -> std::result::Result<(), String> {
    let what = if seq >= next_seq {
        format!("is at or past the next sequence number {next_seq}")
    } else if r.owners.get() == 0 {
        "names no owner".into()
    } else if r.event.get() > seq {
        format!("belongs to a later report ({})", r.event.get())
    } else if !(action::DATA_LOST..=action::REFUSED).contains(&r.action.get()) {
        format!("has action {}", r.action.get())
    } else if r.owner_kind.get() > 4 {
        format!("has owner kind {}", r.owner_kind.get())
    } else if r.flags.get() & !3 != 0 {
        format!("has flags {:#x}", r.flags.get())
    } else {
        return check_owner(seq, 0, r, r.ino.get(), r.file_off.get());
    };
    Err(format!("entry {seq} {what}"))
}

/// Owner `i` of entry `seq` (head `h`) is one its owner kind can name: a
/// file by a nonzero inode (file data at a block-aligned offset), a
/// metadata structure by its block kind, nothing by zeros.
fn check_owner(
    seq: u64,
    i: u64,
    h: &ErrorLogRecord,
    ino: u64,
    off: u64,
) -> std::result::Result<(), String> {
    let kind = h.owner_kind.get();
    let ok = match kind {
        1 => ino != 0 && off.is_multiple_of(BS),
        2 => ino != 0 && off == 0,
        3 => {
            u8::try_from(ino)
                .ok()
                .and_then(BlockKind::from_u8)
                .is_some()
                && off == 0
        }
        _ => ino == 0 && off == 0,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "entry {seq}: owner {i} (inode {ino}, offset {off}) is not one owner kind {kind} names"
        ))
    }
}

impl FsInner {
    /// The owner kind of a reverse-map owner (paths are left to
    /// [`Fs::name_owners`]).
    fn owner_kind(&self, o: Owner) -> OwnerKind {
        match o {
            Owner::Meta(k) => OwnerKind::Metadata(k.name()),
            o => {
                let ino = o.ino().unwrap_or(0);
                let fork = match o {
                    Owner::Data { .. } => "data",
                    Owner::ExtentTree { .. } => "extent tree",
                    _ => "directory",
                };
                OwnerKind::File {
                    ino,
                    paths: vec![],
                    fork,
                }
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
        // Handling a report must work on a full device.
        tx.use_reserve();
        let event = tx.meta.sb.error_seq.get();
        // Before anything is allocated (error-log, loss and bad-block
        // nodes, moved nodes, replicas, the free-space and reverse-map
        // trees' own nodes at commit), the range's free blocks leave the
        // allocator and the range joins the bad-block tree: nothing this
        // report makes lands in it.
        let quarantined = tx.quarantine_free(b0, b1 - b0)?;
        let mut broot = tx.meta.sb.badblock_tree;
        badblocks::add(&mut tx, &mut broot, b0, b1 - b0)?;
        tx.meta.sb.badblock_tree = broot;
        let mut bufs = std::mem::take(&mut tx.meta.report_bufs);
        bufs.recs.clear();
        rmap::query_into(&mut tx, b0, b1 - b0, &mut bufs.recs)?;
        let recs = std::mem::take(&mut bufs.recs);
        // Sized once: a block shared 10,000 ways makes 10,000 of each.
        let mut events = Vec::with_capacity(recs.len());
        // Nodes in the range that a read met bad (before this report was
        // handled) were repaired when the transaction began.
        let repaired = std::mem::take(&mut lock(&tx.meta.reps).repaired);
        for f in repaired {
            if (b0..b1).contains(&f.block) {
                let o = Owner::of_node(f.kind, f.owner);
                events.push(FailureEvent {
                    physical: f.block * BS,
                    length: BS,
                    owner: self.owner_kind(o),
                    offset: 0,
                    action: "repaired",
                });
            }
        }
        let mut notices: Vec<LossNotice> = Vec::with_capacity(recs.len());
        let mut shutdown = None;
        let mut lost = std::mem::take(&mut bufs.lost);
        let mut lost_log = std::mem::take(&mut bufs.lost_log);
        lost.clear();
        lost_log.clear();
        lost.reserve(recs.len());
        lost_log.reserve(recs.len());
        for &m in &recs {
            let s = b0.max(m.phys);
            let t = b1.min(m.phys + m.len);
            let owner = self.owner_kind(m.owner);
            match m.owner {
                Owner::Data { ino, fblock } => {
                    let fb = fblock + (s - m.phys);
                    if m.unwritten {
                        // Logged with the losses, in one insert: owners of
                        // one range and action make one entry.
                        lost_log.push(PendingLog {
                            event,
                            phys: s,
                            len: t - s,
                            act: action::NO_DATA,
                            owner_kind: 1,
                            ino,
                            file_off: fb * BS,
                        });
                        events.push(FailureEvent {
                            physical: s * BS,
                            length: (t - s) * BS,
                            owner,
                            offset: fb * BS,
                            action: "no data",
                        });
                        continue;
                    }
                    lost.push((ino, fb, t - s));
                    lost_log.push(PendingLog {
                        event,
                        phys: s,
                        len: t - s,
                        act: action::DATA_LOST,
                        owner_kind: 1,
                        ino,
                        file_off: fb * BS,
                    });
                    notices.push(LossNotice {
                        ino,
                        offset: fb * BS,
                        length: (t - s) * BS,
                        action_required: flags.action_required,
                    });
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
                            "metadata block {s} ({owner}) is bad and has no good replica; run fsck"
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
        add_losses(&mut tx, &mut lost, &mut bufs.loss)?;
        log_events_with(&mut tx, &lost_log, flags, &mut bufs.log_items)?;
        bufs.recs = recs;
        bufs.lost = lost;
        bufs.lost_log = lost_log;
        // Free space in the range went into quarantine first.
        for (s, l) in quarantined {
            log_event(&mut tx, event, s, l, action::QUARANTINED, 4, 0, 0, flags)?;
            events.push(FailureEvent {
                physical: s * BS,
                length: l * BS,
                owner: OwnerKind::Free,
                offset: 0,
                action: "quarantined",
            });
        }
        if shutdown.is_some() {
            tx.meta.sb.state = (tx.meta.sb.state.get() | STATE_ERRORS).into();
        }
        tx.commit()?;
        meta.report_bufs = bufs;
        if !notices.is_empty() {
            // Under the metadata lock, so that a reader that sees the new
            // count reads the committed loss tree.
            self.loss_gen.fetch_add(1, Ordering::AcqRel);
        }
        meta.shutdown = shutdown.or(was_shut);
        drop(meta);
        self.deliver(&notices);
        Ok(events)
    }

    /// Marks the in-memory loss maps of `inos` stale and tells their handles.
    /// Tells the open handles (and so the views) of the files in
    /// `notices`. Files not open are not visited: the report count that
    /// `media_failure` moved on makes their cached loss maps stale.
    fn deliver(&self, notices: &[LossNotice]) {
        let targets: Vec<(Arc<HandleNotices>, &LossNotice)> = {
            let all = lock(&self.notice_handles);
            if all.is_empty() {
                return;
            }
            notices
                .iter()
                .filter_map(|n| all.get(&n.ino).map(|h| (h, n)))
                .flat_map(|(h, n)| h.iter().filter_map(|w| w.upgrade()).map(move |h| (h, n)))
                .collect()
        };
        for (h, n) in targets {
            lock(&h.queue).push(n.clone());
            let cb = lock(&h.callback).clone();
            if let Some(cb) = cb {
                cb(n);
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
            .map(|ev| fs.keep_recent(ev))
            .map_err(|e| daxfs_device::NotifyError(e.to_string()))
    }
}

/// What [`Fs::import_bad_blocks`] did: the device ranges `(offset, length)`
/// the list named, and the events of handling them.
pub type Imported = (Vec<(u64, u64)>, Vec<FailureEvent>);

impl FsInner {
    /// Handles queued reports (see [`FsHolder`]).
    pub(crate) fn process_pending(&self) {
        let work = std::mem::take(&mut *lock(&self.pending));
        for (off, len, f) in work {
            if let Ok(ev) = self.media_failure(off, len, f) {
                self.keep_recent(ev);
            }
        }
    }

    /// Keeps a report's events for the caller that caused it. The first
    /// report's list is kept as it is, not copied: a block shared 10,000
    /// ways makes about a megabyte of events.
    fn keep_recent(&self, ev: Vec<FailureEvent>) {
        let mut recent = lock(&self.recent);
        if recent.is_empty() {
            *recent = ev;
        } else {
            recent.extend(ev);
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
    ///
    /// The range must be inside the device (EINVAL); the 4 KiB pages it
    /// touches go bad, as a report of any sectors does.
    pub fn inject_error(&self, off: u64, len: u64) -> Result<Vec<FailureEvent>> {
        self.check_device_range("injecting an error", off, len, false)?;
        lock(&self.inner.recent).clear();
        self.inner.dev.inject_error(off, len)?;
        self.inner.process_pending();
        Ok(std::mem::take(&mut *lock(&self.inner.recent)))
    }

    /// Imports a bad-block list (sysfs `badblocks` text or ndctl JSON) into
    /// the device; returns the ranges read and what was done.
    pub fn import_bad_blocks(&self, text: &str, origin: &str) -> Result<Imported> {
        lock(&self.inner.recent).clear();
        let ranges = self.inner.dev.import_bad_block_list(text, origin)?;
        Ok((ranges, std::mem::take(&mut *lock(&self.inner.recent))))
    }

    /// Fills in the paths of the files among `events`' owners. Handling a
    /// report names owners by inode only, so that a block shared by
    /// thousands of files is handled without walking thousands of paths.
    pub fn name_owners(&self, events: &mut [FailureEvent]) -> Result<()> {
        let mut meta = lock(&self.inner.meta);
        let sb = meta.sb;
        let mut rs = self.inner.cached_reader(&mut meta);
        let mut known: HashMap<u64, Vec<String>> = HashMap::new();
        for e in events {
            if let OwnerKind::File { ino, paths, .. } = &mut e.owner {
                if !known.contains_key(ino) {
                    let p = crate::dir::paths(&mut rs, &sb, *ino)?;
                    known.insert(*ino, p);
                }
                paths.clone_from(&known[ino]);
            }
        }
        Ok(())
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

    /// The persistent error log, oldest first: one item per owner of each
    /// entry (the owners of one entry share its sequence number).
    pub fn error_log(&self) -> Result<Vec<ErrorLogEntry>> {
        let mut meta = lock(&self.inner.meta);
        let sb = meta.sb;
        let mut rs = self.inner.cached_reader(&mut meta);
        let mut recs = vec![];
        read_error_log(
            &mut rs,
            &sb.error_log,
            sb.error_seq.get(),
            &mut |seq, h, ino, off| recs.push((seq, *h, ino, off)),
        )?;
        let mut paths: HashMap<u64, Vec<String>> = HashMap::new();
        let mut out = Vec::with_capacity(recs.len());
        for (seq, r, ino, file_off) in recs {
            let owner = match r.owner_kind.get() {
                1 | 2 => OwnerKind::File {
                    ino,
                    paths: paths
                        .entry(ino)
                        .or_insert_with(|| crate::dir::paths(&mut rs, &sb, ino).unwrap_or_default())
                        .clone(),
                    fork: if r.owner_kind.get() == 1 {
                        "data"
                    } else {
                        "metadata"
                    },
                },
                3 => OwnerKind::Metadata(
                    u8::try_from(ino)
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
                offset: file_off,
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

    /// Checks a device byte range a caller gave: not empty, no overflow,
    /// inside the device, and with `aligned` on 4 KiB boundaries (EINVAL
    /// naming the problem otherwise).
    fn check_device_range(&self, what: &str, off: u64, len: u64, aligned: bool) -> Result<()> {
        let size = self.inner.dev.len();
        let bad = |why: String| {
            Err(FsError::Invalid(format!(
                "{what} [{off:#x}, +{len:#x}): {why}"
            )))
        };
        if len == 0 {
            return bad("the length is zero".into());
        }
        let Some(end) = off.checked_add(len) else {
            return bad("the range passes the largest offset".into());
        };
        if end > size {
            return bad(format!("the device ends at {size:#x}"));
        }
        if aligned && (!off.is_multiple_of(BS) || !len.is_multiple_of(BS)) {
            return bad("offset and length must be multiples of 4096".into());
        }
        Ok(())
    }

    /// Marks device bytes `[off, off+len)` good again (after the device's
    /// error was cleared): they leave the bad-block tree and, where no file
    /// owns them, return to free space. Files keep their recorded losses.
    /// The range must be inside the device and 4 KiB aligned (EINVAL).
    /// Returns the bytes that were bad and are now good (0: none were bad).
    pub fn clear_bad_range(&self, off: u64, len: u64) -> Result<u64> {
        self.check_device_range("clearing errors", off, len, true)?;
        let inner = &*self.inner;
        let mut meta = lock(&inner.meta);
        let mut tx = Tx::begin(&*inner.dev, &mut meta)?;
        let (b0, b1) = (off / BS, (off + len) / BS);
        let broot = tx.meta.sb.badblock_tree;
        let bad = badblocks::overlapping(&mut tx, &broot, b0, b1 - b0)?;
        if bad.is_empty() {
            return Ok(0);
        }
        let cleared: u64 = bad.iter().map(|&(_, l)| l * BS).sum();
        let event = tx.meta.sb.error_seq.get();
        for &(s, l) in &bad {
            if let Some(m) = rmap::query(&mut tx, s, l)?
                .into_iter()
                .find(|m| !matches!(m.owner, Owner::Data { .. }))
            {
                return Err(FsError::NotPermitted(format!(
                    "block {} holds metadata ({}); repair it (scrub) or run fsck before clearing",
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
            let owned = rmap::query(&mut tx, s, l)?;
            let mut at = s;
            // Each piece is logged with its owners: the files that still own
            // it (their data there stays lost), or free space.
            let mut covered: Vec<(u64, u64, u64, u64)> = owned
                .iter()
                .filter_map(|m| match m.owner {
                    Owner::Data { ino, fblock } => {
                        let (cs, ce) = (m.phys.max(s), (m.phys + m.len).min(s + l));
                        Some((cs, ce, ino, (fblock + (cs - m.phys)) * BS))
                    }
                    _ => None,
                })
                .collect();
            covered.sort_unstable();
            let mut logs = vec![];
            let free = |a: u64, b: u64| PendingLog {
                event,
                phys: a,
                len: b - a,
                act: action::CLEARED,
                owner_kind: 4,
                ino: 0,
                file_off: 0,
            };
            for (cs, ce, ino, file_off) in covered {
                if cs > at {
                    tx.free_extent(at, cs - at);
                    logs.push(free(at, cs));
                }
                logs.push(PendingLog {
                    event,
                    phys: cs,
                    len: ce - cs,
                    act: action::CLEARED,
                    owner_kind: 1,
                    ino,
                    file_off,
                });
                at = at.max(ce);
            }
            if at < s + l {
                tx.free_extent(at, s + l - at);
                logs.push(free(at, s + l));
            }
            log_events(&mut tx, &logs, FailureFlags::default())?;
        }
        let mut broot = tx.meta.sb.badblock_tree;
        badblocks::remove(&mut tx, &mut broot, b0, b1 - b0)?;
        tx.meta.sb.badblock_tree = broot;
        tx.commit()?;
        Ok(cleared)
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
                    rmap::query(&mut rs.rmap(sb.rmap_tree), 0, sb.total_blocks.get())?
                        .into_iter()
                        .filter(|m| matches!(m.owner, Owner::Data { .. }) && !m.unwritten)
                        .map(|m| (m.phys, m.len))
                        .collect();
                // Records of several owners overlap: their union.
                v.sort_unstable();
                let mut union: Vec<(u64, u64)> = vec![];
                for (p, l) in v {
                    match union.last_mut() {
                        Some((q, n)) if *q + *n >= p => *n = (*n).max(p + l - *q),
                        _ => union.push((p, l)),
                    }
                }
                union
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::{MkfsOptions, MountOptions};
    use daxfs_device::MemDevice;

    fn new_fs() -> (Arc<MemDevice>, Fs) {
        let dev = Arc::new(MemDevice::new(16 << 20));
        Fs::mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
        let fs = Fs::mount(dev.clone(), &MountOptions::default()).unwrap();
        (dev, fs)
    }

    /// A block of `/src` shared by `n` files: its device offset and the
    /// owners' inodes, in order.
    fn shared(fs: &Fs, n: usize) -> (u64, Vec<u64>) {
        let src = fs.create("/src").unwrap();
        src.write_at(0, &[7u8; 8192]).unwrap();
        let mut inos = vec![src.ino()];
        for i in 1..n {
            let c = fs.create(format!("/c{i}")).unwrap();
            c.clone_from(&src).unwrap();
            inos.push(c.ino());
        }
        (src.fiemap().unwrap()[0].physical, inos)
    }

    /// The error log's records as stored.
    fn records(fs: &Fs) -> Vec<((u64, u64), ErrorLogRecord)> {
        let mut meta = lock(&fs.inner.meta);
        let root = meta.sb.error_log;
        let mut out = vec![];
        error_log()
            .range(
                &mut fs.inner.cached_reader(&mut meta),
                &root,
                &(0, 0),
                &(u64::MAX, u64::MAX),
                &mut |k, r| {
                    out.push((k, r));
                    ControlFlow::Continue(())
                },
            )
            .unwrap();
        out
    }

    /// Applies `change` to the error log's records in one committed
    /// transaction, as a damaged (but well-formed) tree would hold them.
    fn rewrite(fs: &Fs, change: impl FnOnce(&mut Vec<((u64, u64), ErrorLogRecord)>)) {
        let mut recs = records(fs);
        change(&mut recs);
        let inner = &*fs.inner;
        let mut meta = lock(&inner.meta);
        let mut tx = Tx::begin(&*inner.dev, &mut meta).unwrap();
        let mut root = tx.meta.sb.error_log;
        error_log().destroy(&mut tx, &mut root).unwrap();
        recs.sort_unstable_by_key(|r| r.0);
        error_log()
            .insert_sorted(&mut tx, &mut root, &recs)
            .unwrap();
        tx.meta.sb.error_log = root;
        tx.commit().unwrap();
    }

    fn fsck_problems(dev: &MemDevice) -> Vec<String> {
        crate::fsck::fsck(dev, &mut |_, _, _| {})
            .unwrap()
            .problems
            .into_iter()
            .map(|p| format!("{}: {}", p.structure, p.message))
            .collect()
    }

    #[test]
    fn one_entry_per_report_owners_four_to_a_record() {
        for n in [1, 2, 4, 5, 6, 9, 13] {
            let (dev, fs) = new_fs();
            let (bad, inos) = shared(&fs, n);
            let seq = lock(&fs.inner.meta).sb.error_seq.get();
            let ev = fs.media_failure(bad, BS, FailureFlags::default()).unwrap();
            assert_eq!(ev.len(), n);
            let recs = records(&fs);
            // A head, then ceil((n - 1) / 4) owner records.
            assert_eq!(recs.len(), 1 + (n - 1).div_ceil(4), "{n} owners");
            let keys: Vec<(u64, u64)> = recs.iter().map(|r| r.0).collect();
            let want: Vec<(u64, u64)> = (0..recs.len() as u64).map(|p| (seq, p)).collect();
            assert_eq!(keys, want);
            let head = recs[0].1;
            assert_eq!(head.owners.get() as usize, n);
            assert_eq!(
                (head.action.get(), head.owner_kind.get(), head.ino.get()),
                (action::DATA_LOST, 1, inos[0])
            );
            assert_eq!((head.dev_off.get(), head.dev_len.get()), (bad, BS));
            let mut stored = vec![head.ino.get()];
            for (_, r) in &recs[1..] {
                let o = ErrorLogOwners::from_record(*r);
                for x in o.owners {
                    if x != ErrorLogOwner::default() {
                        stored.push(x.ino.get());
                    }
                }
            }
            assert_eq!(stored, inos, "{n} owners");
            assert_eq!(lock(&fs.inner.meta).sb.error_seq.get(), seq + 1);
            // Read back: one item per owner, all of the one entry.
            let log = fs.error_log().unwrap();
            assert_eq!(log.len(), n);
            assert!(log.iter().all(|e| e.seq == seq && e.action == "data lost"));
            drop(fs);
            assert_eq!(fsck_problems(&dev), Vec::<String>::new());
        }
    }

    #[test]
    fn entries_split_where_range_action_or_kind_changes() {
        let (_dev, fs) = new_fs();
        let inner = &*fs.inner;
        let mut meta = lock(&inner.meta);
        let seq = meta.sb.error_seq.get();
        let mut tx = Tx::begin(&*inner.dev, &mut meta).unwrap();
        let log = |act, phys, owner_kind, ino| PendingLog {
            event: seq,
            phys,
            len: 1,
            act,
            owner_kind,
            ino,
            file_off: if owner_kind == 1 { ino * BS } else { 0 },
        };
        let logs = [
            log(action::DATA_LOST, 100, 1, 20),
            log(action::DATA_LOST, 100, 1, 21),
            log(action::NO_DATA, 100, 1, 22),
            log(action::DATA_LOST, 100, 1, 23),
            log(action::DATA_LOST, 101, 1, 24),
            log(action::REPAIRED, 101, 2, 25),
        ];
        log_events(&mut tx, &logs, FailureFlags::default()).unwrap();
        tx.commit().unwrap();
        assert_eq!(meta.sb.error_seq.get(), seq + 5);
        drop(meta);
        let got: Vec<(u64, u64, u64, &str, u64)> = fs
            .error_log()
            .unwrap()
            .iter()
            .map(|e| {
                let ino = match e.owner {
                    OwnerKind::File { ino, .. } => ino,
                    _ => 0,
                };
                (e.seq, e.physical / BS, ino, e.action, e.offset / BS)
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (seq, 100, 20, "data lost", 20),
                (seq, 100, 21, "data lost", 21),
                (seq + 1, 100, 22, "no data", 22),
                (seq + 2, 100, 23, "data lost", 23),
                (seq + 3, 101, 24, "data lost", 24),
                (seq + 4, 101, 25, "repaired", 0),
            ]
        );
    }

    /// Losses added in batches of every shape (few owners or many, several
    /// ranges per file, out of order, overlapping, bridging or touching
    /// earlier ones) leave the loss tree holding each file's lost blocks as
    /// maximal runs, as a model of lost block sets says.
    #[test]
    fn added_losses_match_a_model() {
        use rand::rngs::SmallRng;
        use rand::{Rng, SeedableRng};
        use std::collections::BTreeSet;
        let (_dev, fs) = new_fs();
        let mut rng = SmallRng::seed_from_u64(11);
        let mut model: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
        let mut bufs = LossBufs::default();
        // First a range (10, +4), then one touching it from below or above,
        // overlapping, inside, around, before or after it: for 21 files at
        // once (a walk over their span) and for 7 (file by file).
        let second = [(6, 4), (14, 2), (8, 4), (11, 1), (9, 6), (2, 3), (20, 1)];
        let mut fixed = vec![];
        for (base, copies) in [(100u64, 3u64), (200, 1)] {
            let inos = || (0..7 * copies).map(move |j| base + j);
            fixed.push(inos().map(|ino| (ino, 10, 4)).collect::<Vec<_>>());
            fixed.push(
                inos()
                    .map(|ino| {
                        let (fb, n) = second[((ino - base) % 7) as usize];
                        (ino, fb, n)
                    })
                    .collect(),
            );
        }
        for round in 0..300 {
            let n = if round % 3 == 0 {
                rng.random_range(17..200)
            } else {
                rng.random_range(1..17)
            };
            let mut lost: Vec<(u64, u64, u64)> = match fixed.get(round) {
                Some(l) => l.clone(),
                None => (0..n)
                    .map(|_| {
                        let ino = rng.random_range(2..40u64);
                        (ino, rng.random_range(0..80u64), rng.random_range(1..5u64))
                    })
                    .collect(),
            };
            for &(ino, fb, l) in &lost {
                model.entry(ino).or_default().extend(fb..fb + l);
            }
            let inner = &*fs.inner;
            let mut meta = lock(&inner.meta);
            let mut tx = Tx::begin(&*inner.dev, &mut meta).unwrap();
            add_losses(&mut tx, &mut lost, &mut bufs).unwrap();
            tx.commit().unwrap();
            drop(meta);
            let mut want = vec![];
            for (&ino, blocks) in &model {
                let mut run: Option<(u64, u64)> = None;
                for &b in blocks {
                    run = match run {
                        Some((s, e)) if e == b => Some((s, b + 1)),
                        Some((s, e)) => {
                            want.push((ino, s * BS, (e - s) * BS));
                            Some((b, b + 1))
                        }
                        None => Some((b, b + 1)),
                    };
                }
                if let Some((s, e)) = run {
                    want.push((ino, s * BS, (e - s) * BS));
                }
            }
            assert_eq!(fs.all_losses().unwrap(), want, "round {round}");
        }
    }

    /// Metadata left inside ranges known bad (as a report that allocated
    /// before quarantining could leave it): clearing them is refused until
    /// a scrub has moved every node and replica out; then it succeeds, and
    /// the files read as before.
    #[test]
    fn scrub_moves_metadata_out_of_bad_ranges() {
        let (dev, fs) = new_fs();
        fs.mkdir("/d", 0o755).unwrap();
        for i in 0..200u64 {
            let f = fs.create(format!("/d/f{i}")).unwrap();
            f.write_at(0, &[i as u8; 3000]).unwrap();
        }
        fs.sync().unwrap();
        let pairs = fs.replica_pairs().unwrap();
        let pairs: Vec<_> = pairs.iter().filter(|p| p.kind != "log").collect();
        assert!(pairs.len() > 8, "{} pairs", pairs.len());
        // Four nodes and four other nodes' replicas, marked bad where they
        // are (the device's memory itself is fine).
        let mut bad: Vec<u64> = pairs[..4].iter().map(|p| p.block).collect();
        bad.extend(pairs[4..8].iter().map(|p| p.replica));
        {
            let inner = &*fs.inner;
            let mut meta = lock(&inner.meta);
            let mut tx = Tx::begin(&*inner.dev, &mut meta).unwrap();
            let mut root = tx.meta.sb.badblock_tree;
            for &b in &bad {
                badblocks::add(&mut tx, &mut root, b, 1).unwrap();
            }
            tx.meta.sb.badblock_tree = root;
            tx.commit().unwrap();
        }
        let metadata_in = |fs: &Fs, b: u64| fs.fsmap(b, 1).unwrap().iter().any(|r| r.metadata);
        for &b in &bad {
            assert!(metadata_in(&fs, b), "block {b}");
            let e = fs.clear_bad_range(b * BS, BS).unwrap_err();
            assert_eq!(e.errno(), libc::EPERM, "{e}");
        }
        let rep = fs.scrub(false, &mut |_, _, _| {}).unwrap();
        assert!(rep.problems.is_empty(), "{:#?}", rep.problems);
        for &b in &bad {
            assert!(!metadata_in(&fs, b), "block {b} still holds metadata");
            fs.clear_bad_range(b * BS, BS).unwrap();
        }
        assert!(fs.bad_ranges().unwrap().is_empty());
        let fs = {
            drop(fs);
            assert_eq!(fsck_problems(&dev), Vec::<String>::new());
            Fs::mount(dev.clone(), &MountOptions::default()).unwrap()
        };
        for i in 0..200u64 {
            let f = fs
                .open(format!("/d/f{i}"), &crate::OpenOptions::read_only())
                .unwrap();
            let mut buf = vec![0u8; 3000];
            f.read_at(0, &mut buf).unwrap();
            assert!(buf.iter().all(|&x| x == i as u8), "/d/f{i}");
        }
    }

    /// A tree node freed while it lies in a range known bad (a file
    /// deleted before a scrub moved its extent tree out) stays out of free
    /// space until the range is cleared.
    #[test]
    fn node_freed_in_a_bad_range_stays_quarantined() {
        let (dev, fs) = new_fs();
        let f = fs.create("/f").unwrap();
        // Every other block: one extent each, more than an inode holds.
        for b in 0..300u64 {
            f.write_at(b * 2 * BS, &[1u8; 16]).unwrap();
        }
        drop(f);
        fs.sync().unwrap();
        let node = fs
            .fsmap(0, u64::MAX)
            .unwrap()
            .into_iter()
            .find(|r| {
                matches!(
                    r.owner,
                    OwnerKind::File {
                        fork: "extent tree",
                        ..
                    }
                )
            })
            .expect("an extent-tree node")
            .physical
            / BS;
        {
            let inner = &*fs.inner;
            let mut meta = lock(&inner.meta);
            let mut tx = Tx::begin(&*inner.dev, &mut meta).unwrap();
            let mut root = tx.meta.sb.badblock_tree;
            badblocks::add(&mut tx, &mut root, node, 1).unwrap();
            tx.meta.sb.badblock_tree = root;
            tx.commit().unwrap();
        }
        fs.unlink("/f").unwrap();
        fs.sync().unwrap();
        let owner = |fs: &Fs| fs.fsmap(node, 1).unwrap()[0].owner.clone();
        assert_eq!(owner(&fs), OwnerKind::Quarantined);
        // Nothing allocates it.
        for i in 0..50u64 {
            let g = fs.create(format!("/g{i}")).unwrap();
            g.write_at(0, &[2u8; 8192]).unwrap();
        }
        assert_eq!(owner(&fs), OwnerKind::Quarantined);
        let fs = {
            drop(fs);
            assert_eq!(fsck_problems(&dev), Vec::<String>::new());
            Fs::mount(dev.clone(), &MountOptions::default()).unwrap()
        };
        fs.clear_bad_range(node * BS, BS).unwrap();
        assert_eq!(owner(&fs), OwnerKind::Free);
        drop(fs);
        assert_eq!(fsck_problems(&dev), Vec::<String>::new());
    }

    /// An unwritten block (preallocated) loses nothing: its owner is
    /// logged "no data", with the report's other entries.
    #[test]
    fn unwritten_owner_is_logged_no_data() {
        let (dev, fs) = new_fs();
        let src = fs.create("/src").unwrap();
        let keep = crate::FallocFlags {
            keep_size: true,
            ..Default::default()
        };
        src.fallocate(keep, 0, 2 * BS).unwrap();
        let bad = src.fiemap().unwrap()[0].physical;
        let ev = fs.media_failure(bad, BS, FailureFlags::default()).unwrap();
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].action, "no data");
        assert!(fs.all_losses().unwrap().is_empty());
        let recs = records(&fs);
        assert_eq!(recs.len(), 1);
        assert_eq!(
            (recs[0].1.owners.get(), recs[0].1.ino.get()),
            (1, src.ino())
        );
        let log = fs.error_log().unwrap();
        assert_eq!(log.len(), 1);
        assert_eq!((log[0].action, log[0].offset), ("no data", 0));
        drop((src, fs));
        assert_eq!(fsck_problems(&dev), Vec::<String>::new());
    }

    /// Records that do not make whole entries are refused by the reader
    /// and reported by fsck, each naming what is wrong.
    #[test]
    fn records_that_do_not_make_entries_are_refused() {
        type Damage = fn(&mut Vec<((u64, u64), ErrorLogRecord)>);
        let cases: [(Damage, &str); 10] = [
            // An owner record missing: the head names more owners.
            (
                |r| {
                    r.pop();
                },
                "have no record",
            ),
            // The head missing.
            (
                |r| {
                    r.remove(0);
                },
                "belongs to no entry",
            ),
            // An owner record past the entry's last.
            (
                |r| {
                    let (k, v) = *r.last().unwrap();
                    r.push(((k.0, k.1 + 1), v));
                },
                "belongs to no entry",
            ),
            // A gap in the parts.
            (
                |r| {
                    let last = r.last_mut().unwrap();
                    last.0.1 += 1;
                },
                "belongs to no entry",
            ),
            // Data in an unused owner slot (6 owners: the second owner
            // record holds one).
            (
                |r| {
                    let mut o = ErrorLogOwners::from_record(r[2].1);
                    o.owners[3].ino = 99.into();
                    r[2].1 = o.into_record();
                },
                "past the entry's last owner",
            ),
            (|r| r[0].1.owners = 0.into(), "names no owner"),
            (|r| r[0].1.action = 99.into(), "has action 99"),
            (|r| r[0].1.flags = 4.into(), "has flags 0x4"),
            (|r| r[0].1.ino = 0.into(), "owner 0 (inode 0, offset 0)"),
            // A sequence number the next report would take.
            (
                |r| {
                    for x in r.iter_mut() {
                        x.0.0 += 1;
                    }
                },
                "past the next sequence number",
            ),
        ];
        for (damage, want) in cases {
            let (dev, fs) = new_fs();
            let (bad, _) = shared(&fs, 6);
            fs.media_failure(bad, BS, FailureFlags::default()).unwrap();
            rewrite(&fs, damage);
            let e = fs.error_log().unwrap_err().to_string();
            assert!(e.contains("error log") && e.contains(want), "{want}: {e}");
            drop(fs);
            let p = fsck_problems(&dev);
            assert!(
                p.iter()
                    .any(|p| p.starts_with("error log:") && p.contains(want)),
                "{want}: {p:?}"
            );
        }
    }
}
