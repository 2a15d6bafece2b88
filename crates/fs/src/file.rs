//! Open files and the direct-access data path.
//!
//! Reads copy from the device straight into the caller's buffer and writes copy
//! straight from the caller's buffer to the device, then persist: there is no
//! intermediate buffer and no page cache. An overwrite of blocks that are
//! already allocated and written happens in place, under the inode's data lock
//! only. Inside the size, its time changes are kept in memory, and the next
//! durable commit of any transaction carries them (`Tx::carry_in_place`);
//! one that extends the file inside its last block commits the new size
//! before it returns. Everything else (allocation, unwritten conversion,
//! truncation) is one transaction.
//!
//! Invariant: no written block lies wholly past end of file. Bytes past end of
//! file inside the last block may be stale (an in-place write that extended
//! the file, lost in a crash), so every size increase zeroes them first.
use crate::error::{FsError, Result};
use crate::events::MapEvent;
use crate::extents::{Extent, ExtentMap};
use crate::fs::{FsInner, lock};
use crate::inode::{self, DataState, FileKind, Inode};
use crate::namespace::{Recs, Stat};
use crate::tx::Tx;
use crate::write::{Src, blocks_needed, check_space, segments, unshare_range, write_range};
use daxfs_device::Device;
use daxfs_format::BLOCK_SIZE_U64;
use daxfs_format::records::{EXTENT_UNWRITTEN, InodeRecord};
use std::sync::{Arc, RwLockWriteGuard};

/// Largest file size (defined with the on-media limits).
pub use daxfs_format::MAX_FILE_SIZE;
const BS: u64 = BLOCK_SIZE_U64;
const MAX_BLOCKS: u64 = MAX_FILE_SIZE / BS;

/// How a file is opened.
#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    pub read: bool,
    pub write: bool,
    pub create: bool,
    pub excl: bool,
    pub truncate: bool,
    pub append: bool,
    /// Permission bits for a created file.
    pub mode: u32,
}

impl OpenOptions {
    pub fn read_only() -> Self {
        OpenOptions {
            read: true,
            mode: 0o644,
            ..Default::default()
        }
    }
    pub fn write_only() -> Self {
        OpenOptions {
            write: true,
            mode: 0o644,
            ..Default::default()
        }
    }
    pub fn read_write() -> Self {
        OpenOptions {
            read: true,
            write: true,
            mode: 0o644,
            ..Default::default()
        }
    }
    /// Read-write, created if missing.
    pub fn create() -> Self {
        OpenOptions {
            create: true,
            ..Self::read_write()
        }
    }
    /// Read-write, created, failing with EEXIST if it exists.
    pub fn create_new() -> Self {
        OpenOptions {
            excl: true,
            ..Self::create()
        }
    }
}

/// What `fallocate` does (the FALLOC_FL_* modes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FallocFlags {
    pub keep_size: bool,
    pub punch_hole: bool,
    pub zero_range: bool,
    /// Give the range blocks of its own (copying shared ones) and allocate
    /// its holes, so later writes there cannot fail for lack of space.
    pub unshare: bool,
}

/// One row of `fiemap`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FiemapExtent {
    /// File offset, bytes.
    pub logical: u64,
    /// Device offset, bytes.
    pub physical: u64,
    pub length: u64,
    pub unwritten: bool,
    /// The blocks have more than one owner.
    pub shared: bool,
    /// The data here was lost to a media error (reads fail with EIO).
    pub lost: bool,
}

/// An open file. Closing (dropping) the last handle of an unlinked file frees it.
#[derive(Debug)]
pub struct File {
    pub(crate) fs: Arc<FsInner>,
    pub(crate) node: Arc<Inode>,
    pub(crate) opts: OpenOptions,
    /// Media-error notices for this handle.
    notices: Arc<crate::media::HandleNotices>,
}

impl Drop for File {
    fn drop(&mut self) {
        {
            let mut all = lock(&self.fs.notice_handles);
            if let Some(h) = all.get_mut(&self.node.ino) {
                let me = Arc::as_ptr(&self.notices);
                h.retain(|w| w.strong_count() > 0 && w.as_ptr() != me);
                if h.is_empty() {
                    all.remove(&self.node.ino);
                }
            }
        }
        // An error here leaves the inode on the orphan list; mount frees it.
        let _ = self.fs.release(&self.node);
    }
}

/// Copies file bytes `[off, off+buf.len())` through `map` into `buf`; holes and
/// unwritten extents read as zeros.
pub(crate) fn read_mapped(
    dev: &dyn Device,
    map: &ExtentMap,
    off: u64,
    buf: &mut [u8],
) -> Result<()> {
    let mut done = 0usize;
    while done < buf.len() {
        let pos = off + done as u64;
        let fb = pos / BS;
        let (chunk, src) = match map.find(fb) {
            Some(e) => {
                let avail = e.end() * BS - pos;
                let n = avail.min((buf.len() - done) as u64) as usize;
                (
                    n,
                    (!e.unwritten()).then(|| e.phys * BS + (pos - e.fblock * BS)),
                )
            }
            None => {
                let next = map
                    .first_after(fb)
                    .map(|e| e.fblock * BS)
                    .unwrap_or(u64::MAX);
                let n = (next - pos).min((buf.len() - done) as u64) as usize;
                (n, None)
            }
        };
        let dst = &mut buf[done..done + chunk];
        match src {
            Some(dev_off) => dev.read(dev_off, dst)?,
            None => dst.fill(0),
        }
        done += chunk;
    }
    Ok(())
}

/// Writes the first data of a new inode (a symlink target) into fresh blocks.
pub(crate) fn write_new_data(
    tx: &mut Tx<'_>,
    ino: u64,
    rec: &mut InodeRecord,
    data: &[u8],
) -> Result<()> {
    let dev = tx.dev();
    let mut map = ExtentMap::default();
    map.ino = ino;
    let nblocks = (data.len() as u64).div_ceil(BS);
    let mut fb = 0;
    while fb < nblocks {
        let (p, l) = tx.alloc_extent(nblocks - fb, None)?;
        let from = (fb * BS) as usize;
        let to = (((fb + l) * BS) as usize).min(data.len());
        dev.write(p * BS, &data[from..to])?;
        dev.fill(p * BS + (to - from) as u64, l * BS - (to - from) as u64, 0)?;
        dev.flush(p * BS, l * BS);
        tx.record(MapEvent::Map {
            ino,
            fblock: fb,
            phys: p,
            len: l,
        });
        map.map(Extent {
            fblock: fb,
            phys: p,
            len: l,
            flags: 0,
        });
        fb += l;
    }
    dev.fence();
    map.apply(tx, rec)?;
    rec.size = (data.len() as u64).into();
    rec.blocks = nblocks.into();
    Ok(())
}

fn check_range(off: u64, len: u64) -> Result<u64> {
    match off.checked_add(len) {
        Some(end) if end <= MAX_FILE_SIZE => Ok(end),
        _ => Err(FsError::TooBig(format!(
            "range [{off}, +{len}) passes the largest file size"
        ))),
    }
}

impl File {
    pub(crate) fn new(fs: Arc<FsInner>, node: Arc<Inode>, opts: OpenOptions) -> File {
        let notices = Arc::new(crate::media::HandleNotices::default());
        {
            let mut all = lock(&fs.notice_handles);
            let h = all.entry(node.ino).or_default();
            h.retain(|w| w.strong_count() > 0);
            h.push(Arc::downgrade(&notices));
        }
        File {
            fs,
            node,
            opts,
            notices,
        }
    }

    /// Calls `f` (from the thread that handles the report) whenever a media
    /// error destroys data of this file: which file, offset and length, and
    /// whether a reader was waiting on it.
    pub fn on_media_error(&self, f: impl Fn(&crate::media::LossNotice) + Send + Sync + 'static) {
        *lock(&self.notices.callback) = Some(Arc::new(f));
    }

    /// The media-error notices for this file since the last call.
    pub fn take_media_errors(&self) -> Vec<crate::media::LossNotice> {
        std::mem::take(&mut *lock(&self.notices.queue))
    }

    /// The file's lost byte ranges (offset, length).
    pub fn lost_ranges(&self) -> Result<Vec<(u64, u64)>> {
        Ok(self
            .lost_map()?
            .map(|m| m.iter().map(|(&k, &l)| (k * BS, l * BS)).collect())
            .unwrap_or_default())
    }

    pub(crate) fn inode(&self) -> &Arc<Inode> {
        &self.node
    }

    /// The inode number.
    pub fn ino(&self) -> u64 {
        self.node.ino
    }

    pub(crate) fn dev(&self) -> &dyn Device {
        &*self.fs.dev
    }

    pub(crate) fn size(&self) -> u64 {
        self.node.rec().rec.size.get()
    }

    pub(crate) fn check_write(&self) -> Result<()> {
        if !self.opts.write {
            return Err(FsError::BadHandle("file not open for writing".into()));
        }
        if self.node.kind != FileKind::File {
            return Err(FsError::IsDir(format!("inode {}", self.node.ino)));
        }
        Ok(())
    }

    /// Loads the extent map under the data lock if needed.
    pub(crate) fn loaded<'g>(
        &self,
        d: &'g mut RwLockWriteGuard<'_, DataState>,
    ) -> Result<&'g mut ExtentMap> {
        if d.extents.is_none() {
            // Under the metadata lock, so the refcount tree is read whole.
            let mut guard = lock(&self.fs.meta);
            let meta = &mut *guard;
            let sb = meta.sb;
            let rroot = sb.refcount_tree;
            let rec = self.node.rec().rec;
            let free = meta.free_loaded.then_some(&meta.free);
            let mut rs = crate::replica::Committed::new(
                &*self.fs.dev,
                self.fs.fs_id,
                Some(&mut meta.cache),
                Some(&*self.fs.reps),
            );
            let ino = self.node.ino;
            let mut map = match ExtentMap::load(&mut rs, ino, &rec) {
                Ok(m) => m,
                // The record's own extents are impossible (not a tree that
                // cannot be read): refused as a whole.
                Err(FsError::Corrupt(m)) if m.starts_with(&format!("inode {ino}:")) => {
                    drop(rs);
                    let none = Extent {
                        fblock: u64::MAX,
                        phys: 0,
                        len: 0,
                        flags: 0,
                    };
                    self.fs.log_refusal(&mut guard, ino, &none);
                    return Err(FsError::Corrupt(format!("{m}: refused")));
                }
                Err(e) => return Err(e),
            };
            // Every extent is checked once per load, before anything
            // follows it (see `extents::refusal`).
            let mut refused = None;
            for e in map.iter() {
                if let Some(why) = crate::extents::refusal(&mut rs, &sb, free, ino, e)? {
                    refused = Some((*e, why));
                    break;
                }
            }
            if let Some((e, why)) = refused {
                drop(rs);
                self.fs.log_refusal(&mut guard, ino, &e);
                return Err(FsError::Corrupt(format!("{why}: refused")));
            }
            let mut shared = false;
            if !rroot.is_empty() {
                for e in map.iter() {
                    if crate::space::refcount::any_shared(&mut rs, &rroot, e.phys, e.len)? {
                        shared = true;
                        break;
                    }
                }
            }
            if shared {
                map.mark_shared();
            }
            drop(rs);
            drop(guard);
            d.extents = Some(map);
        }
        d.extents
            .as_mut()
            .ok_or_else(|| FsError::Corrupt("extent map vanished".into()))
    }

    pub(crate) fn data_write(&self) -> RwLockWriteGuard<'_, DataState> {
        self.node.data.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads up to `buf.len()` bytes at `off`; returns how many (0 at or past
    /// end of file). A buffer in a view (of any file) may take store faults
    /// whose resolution needs locks the read holds: the bytes go through a
    /// bounce buffer, copied into the view with no lock held (a page of the
    /// view that cannot be reached fails the read with EFAULT).
    pub fn read_at(&self, off: u64, buf: &mut [u8]) -> Result<usize> {
        if !daxfs_device::fault::overlaps_registered_range(buf.as_ptr() as usize, buf.len()) {
            return self.read_locked(off, buf);
        }
        let mut bounce = vec![0u8; buf.len()];
        let n = self.read_locked(off, &mut bounce)?;
        daxfs_device::fault::copy_slice_guarded(&mut buf[..n], &bounce[..n])
            .map_err(buffer_fault)?;
        Ok(n)
    }

    fn read_locked(&self, off: u64, buf: &mut [u8]) -> Result<usize> {
        // Holds locks while copying into `buf`: a fault meanwhile is never
        // resolved on this thread (see `views::inside`).
        let _inside = crate::views::inside();
        if !self.opts.read {
            return Err(FsError::BadHandle("file not open for reading".into()));
        }
        if self.node.kind == FileKind::Dir {
            return Err(FsError::IsDir(format!("inode {}", self.node.ino)));
        }
        loop {
            {
                let d = self.node.data.read().unwrap_or_else(|e| e.into_inner());
                if let Some(map) = &d.extents {
                    let size = self.size();
                    if off >= size || buf.is_empty() {
                        return Ok(0);
                    }
                    let mut n = (size - off).min(buf.len() as u64) as usize;
                    if let Some(lost) = self.lost_map()? {
                        // Never return lost bytes: stop short of the first lost
                        // block, or fail when the read starts in one.
                        if let Some(first) = first_lost(&lost, off, off + n as u64) {
                            if first <= off {
                                return Err(FsError::Io(format!(
                                    "inode {}: bytes at {off} were lost to a media error",
                                    self.node.ino
                                )));
                            }
                            n = (first - off) as usize;
                        }
                    }
                    if let Err(e) = read_mapped(self.dev(), map, off, &mut buf[..n]) {
                        return Err(self.sync_fault(e));
                    }
                    return Ok(n);
                }
            }
            let mut d = self.data_write();
            self.loaded(&mut d)?;
        }
    }

    /// The file's lost blocks, or None when it has none (the common case
    /// costs one atomic load).
    pub(crate) fn lost_map(&self) -> Result<Option<std::collections::BTreeMap<u64, u64>>> {
        if !self.node.maybe_lost() {
            return Ok(None);
        }
        if let Some(m) = self.node.cached_losses() {
            return Ok((!m.is_empty()).then_some(m));
        }
        let m = {
            let mut meta = lock(&self.fs.meta);
            // Read under the metadata lock, which a report holds from its
            // commit until it has moved the count on.
            let seen = self.fs.loss_gen.load(std::sync::atomic::Ordering::Acquire);
            let root = meta.sb.loss_tree;
            let m = crate::media::losses_of(
                &mut self.fs.cached_reader(&mut meta),
                &root,
                self.node.ino,
            )?;
            self.node.set_losses(seen, &m);
            m
        };
        Ok((!m.is_empty()).then_some(m))
    }

    /// [`Self::lost_map`] for callers inside a transaction (which holds the
    /// metadata lock `lost_map` would take).
    pub(crate) fn lost_map_tx(
        &self,
        tx: &mut Tx<'_>,
    ) -> Result<Option<std::collections::BTreeMap<u64, u64>>> {
        if !self.node.maybe_lost() {
            return Ok(None);
        }
        if let Some(m) = self.node.cached_losses() {
            return Ok((!m.is_empty()).then_some(m));
        }
        let root = tx.meta.sb.loss_tree;
        let m = crate::media::losses_of(tx, &root, self.node.ino)?;
        Ok((!m.is_empty()).then_some(m))
    }

    /// Turns a media error met while reading into a report (a reader is
    /// waiting: action required) and EIO.
    fn sync_fault(&self, e: FsError) -> FsError {
        if let FsError::Device(daxfs_device::DeviceError::Media { off, .. }) = e {
            // The device reported the fault to us (queued, as we may hold
            // locks the handling needs); handle it before answering.
            self.fs.process_pending();
            return FsError::Io(format!(
                "inode {}: media error at device offset {off:#x}",
                self.node.ino
            ));
        }
        e
    }

    /// Before writing `[off, end)`: fails with EIO if the write covers part of
    /// a lost block; whole lost blocks it covers are unmapped (their bad
    /// physical blocks stay quarantined) and the file's loss there ends.
    fn take_lost(
        &self,
        tx: &mut Tx<'_>,
        map: &mut ExtentMap,
        off: u64,
        end: u64,
        whole_only: bool,
    ) -> Result<bool> {
        let Some(lost) = self.lost_map_tx(tx)? else {
            return Ok(false);
        };
        let (b0, b1) = (off / BS, end.div_ceil(BS));
        let mut ended = false;
        for (&k, &l) in lost.range(..b1) {
            let (s, t) = (k.max(b0), (k + l).min(b1));
            if s >= t {
                continue;
            }
            let (fs_, ft) = (s.max(off.div_ceil(BS)), t.min(end / BS));
            if !whole_only && (fs_ > s || ft < t) {
                return Err(FsError::Io(format!(
                    "inode {}: a write into part of a block lost to a media error (file block {})",
                    self.node.ino,
                    if fs_ > s { s } else { ft }
                )));
            }
            if fs_ < ft {
                for e in map.unmap(fs_, ft - fs_) {
                    tx.record(MapEvent::Unmap {
                        ino: map.ino,
                        fblock: e.fblock,
                        phys: e.phys,
                        len: e.len,
                    });
                    tx.release_extent(e.phys, e.len)?;
                }
                crate::media::end_loss(tx, self.node.ino, fs_, ft - fs_)?;
                let ev = tx.meta.sb.error_seq.get();
                crate::media::log_event(
                    tx,
                    ev,
                    0,
                    0,
                    daxfs_format::records::action::LOSS_ENDED,
                    1,
                    self.node.ino,
                    fs_ * BS,
                    Default::default(),
                )?;
                ended = true;
            }
        }
        Ok(ended)
    }

    /// Writes `data` at `off` (at end of file when opened for append). Data
    /// is durable when this returns. Data in a view (of any file) may take
    /// faults whose resolution needs locks the write holds: it is copied
    /// into a bounce buffer first, with no lock held (a page of the view that
    /// cannot be reached fails the write with EFAULT, writing nothing).
    pub fn write_at(&self, off: u64, data: &[u8]) -> Result<usize> {
        if !daxfs_device::fault::overlaps_registered_range(data.as_ptr() as usize, data.len()) {
            return self.write_locked(off, data);
        }
        let mut bounce = vec![0u8; data.len()];
        daxfs_device::fault::copy_slice_guarded(&mut bounce, data).map_err(buffer_fault)?;
        self.write_locked(off, &bounce)
    }

    fn write_locked(&self, off: u64, data: &[u8]) -> Result<usize> {
        // As in `read_locked`.
        let _inside = crate::views::inside();
        self.check_write()?;
        if data.is_empty() {
            return Ok(0);
        }
        let mut d = self.data_write();
        // A media error met while writing (a block being staged for the
        // write, or one of the file's own blocks, found bad) is handled as
        // the report it is; then the write is redone: a staging block is
        // quarantined by then and the redo gets another, and a whole lost
        // block of the file is replaced. Only a write that keeps meeting new
        // bad blocks gives up, with EIO.
        let mut tries = 0;
        loop {
            match self.write_once(&mut d, off, data) {
                Err(FsError::Device(daxfs_device::DeviceError::Media { off: bad, .. }))
                    if tries < 4 =>
                {
                    tries += 1;
                    d.extents = None;
                    // Handled here and now (the device's own report may be
                    // with the worker still): a range already handled is
                    // not handled twice.
                    let flags = crate::media::FailureFlags {
                        action_required: true,
                        pre_remove: false,
                    };
                    let _ = self.fs.media_failure(bad / BS * BS, BS, flags);
                    self.fs.process_pending();
                }
                Err(e) => return Err(self.sync_fault(e)),
                Ok(n) => return Ok(n),
            }
        }
    }

    fn write_once(
        &self,
        d: &mut RwLockWriteGuard<'_, DataState>,
        off: u64,
        data: &[u8],
    ) -> Result<usize> {
        let size = self.size();
        let off = if self.opts.append { size } else { off };
        let end = check_range(off, data.len() as u64)?;
        let map = self.loaded(d)?;
        let (b0, b1) = (off / BS, end.div_ceil(BS));
        // Fast path: an overwrite of written blocks with no gap after EOF.
        let written = |map: &ExtentMap| {
            let mut at = b0;
            for e in map.overlapping_iter(b0, b1 - b0) {
                if e.fblock > at || e.unwritten() {
                    return false;
                }
                at = e.end();
            }
            at >= b1
        };
        let lost_here = self
            .lost_map()?
            .is_some_and(|l| first_lost(&l, off, end).is_some());
        if off <= size && map.is_private(b0, b1) && !lost_here && written(map) {
            // The blocks may be mapped by a lazy transaction only: make it
            // durable before the data, which is durable on return.
            if self
                .node
                .lazy
                .swap(false, std::sync::atomic::Ordering::AcqRel)
            {
                self.fs.flush_lazy()?;
            }
            self.copy_in(map, off, data)?;
            if end > size {
                // The write extends the file inside its last block: the data
                // is in place, and the new size is durable before the write
                // returns (one commit of the inode record). A crash before it
                // leaves the old size; the bytes past it are not visible.
                return self.commit_size(map, end).map(|_| data.len());
            }
            let mut r = self.node.rec();
            let t = inode::now();
            r.rec.mtime = t;
            r.rec.ctime = t;
            if !r.dirty {
                r.dirty = true;
                // Every later commit carries the record until it is clean.
                self.fs.in_place.lock().push(self.node.ino);
            }
            return Ok(data.len());
        }
        // An allocating write into holes only copies its data with no
        // metadata lock held (see `fresh`).
        if b1 - b0 >= crate::fresh::MIN_BLOCKS
            && !lost_here
            && map.overlapping_iter(b0, b1 - b0).next().is_none()
        {
            let res = self.write_fresh(map, off, end, data);
            if res.as_ref().map_or(true, |&n| n < data.len()) {
                d.extents = None;
            }
            return res;
        }
        let res = self.write_slow(map, size, off, end, data);
        if res.is_err() {
            d.extents = None;
        }
        res.map(|_| data.len())
    }

    /// Commits the inode record with size `end` (if larger) and new times:
    /// the durable end of an in-place write that extended the file.
    fn commit_size(&self, map: &mut ExtentMap, end: u64) -> Result<()> {
        let fs = &*self.fs;
        let mut meta = lock(&fs.meta);
        let tx = Tx::begin(&*fs.dev, &mut meta)?;
        self.commit_rec(tx, map, |r| {
            if end > r.size.get() {
                r.size = end.into();
            }
        })
    }

    /// Copies `data` to the written blocks mapping `[off, off+len)` and persists.
    fn copy_in(&self, map: &ExtentMap, off: u64, data: &[u8]) -> Result<()> {
        let dev = self.dev();
        let end = off + data.len() as u64;
        for e in map.overlapping_iter(off / BS, end.div_ceil(BS) - off / BS) {
            let s = off.max(e.fblock * BS);
            let t = end.min(e.end() * BS);
            let at = e.phys * BS + (s - e.fblock * BS);
            dev.write(at, &data[(s - off) as usize..(t - off) as usize])?;
            dev.flush(at, t - s);
        }
        dev.fence();
        Ok(())
    }

    /// Zeroes the stale bytes past end of file in the last block, before a
    /// size increase makes them visible (copying the block first if shared).
    pub(crate) fn zero_past_eof(
        &self,
        tx: &mut Tx<'_>,
        map: &mut ExtentMap,
        size: u64,
        new_size: u64,
    ) -> Result<()> {
        if size.is_multiple_of(BS) || new_size <= size {
            return Ok(());
        }
        let end = (size - size % BS + BS).min(new_size);
        if self
            .lost_map_tx(tx)?
            .is_some_and(|l| first_lost(&l, size, end).is_some())
        {
            return Ok(()); // a lost block reads as EIO; there is nothing to zero
        }
        write_range(tx, map, size, end, &Src::Zeros, false)
    }

    fn write_slow(
        &self,
        map: &mut ExtentMap,
        size: u64,
        off: u64,
        end: u64,
        data: &[u8],
    ) -> Result<()> {
        let fs = &*self.fs;
        let ended = fs.grouped(|meta| {
            let mut tx = Tx::begin(&*fs.dev, meta)?;
            let src = Src::Bytes { off, data };
            let need = blocks_needed(&mut tx, map, off, end, &src, true)?;
            check_space(&tx, need + 1, &format!("writing {} bytes", data.len()))?;
            let ended = self.take_lost(&mut tx, map, off, end, false)?;
            if off > size {
                self.zero_past_eof(&mut tx, map, size, off)?;
            }
            write_range(&mut tx, map, off, end, &src, true)?;
            self.dev().fence();
            self.commit_rec(tx, map, |r| {
                if end > r.size.get() {
                    r.size = end.into();
                }
            })?;
            Ok(ended)
        })?;
        // Every block the write covered is now the file's alone (shared ones
        // were copied): later writes there may go in place.
        map.note_private(off / BS, end.div_ceil(BS));
        if ended {
            self.node.forget_losses();
        }
        Ok(())
    }

    /// Sets the file's size: shrinking frees the blocks past the new end,
    /// growing leaves a hole that reads as zeros.
    pub fn set_len(&self, len: u64) -> Result<()> {
        self.set_len_and(len, |_| {})
    }

    /// [`File::set_len`], with `then` applied to the inode record in the
    /// same transaction, after the size and the times (`setattr` with a
    /// size and other attributes: all of them or none after a crash).
    pub(crate) fn set_len_and(&self, len: u64, then: impl FnOnce(&mut InodeRecord)) -> Result<()> {
        self.check_write()?;
        check_range(len, 0)?;
        let mut d = self.data_write();
        let map = self.loaded(&mut d)?;
        let res = self.set_len_locked(map, len, then);
        if res.is_err() {
            d.extents = None;
        }
        res
    }

    fn set_len_locked(
        &self,
        map: &mut ExtentMap,
        len: u64,
        then: impl FnOnce(&mut InodeRecord),
    ) -> Result<()> {
        let fs = &*self.fs;
        let mut meta = lock(&fs.meta);
        let mut tx = Tx::begin(&*fs.dev, &mut meta)?;
        let size = self.size();
        if len < size {
            // Shrinking frees space: it may use the metadata reserve.
            tx.use_reserve();
            let first = len.div_ceil(BS);
            for e in map.unmap(first, MAX_BLOCKS - first) {
                tx.record(MapEvent::Unmap {
                    ino: map.ino,
                    fblock: e.fblock,
                    phys: e.phys,
                    len: e.len,
                });
                tx.release_extent(e.phys, e.len)?;
            }
            if self.lost_map_tx(&mut tx)?.is_some() {
                crate::media::end_loss(&mut tx, self.node.ino, first, MAX_BLOCKS - first)?;
            }
        } else if len > size {
            self.zero_past_eof(&mut tx, map, size, len)?;
            self.dev().fence();
        }
        self.commit_rec_then(tx, map, |r| r.size = len.into(), then)?;
        self.node.forget_losses();
        Ok(())
    }

    /// Applies the map's edits and `f` to the inode record, and commits.
    pub(crate) fn commit_rec(
        &self,
        tx: Tx<'_>,
        map: &mut ExtentMap,
        f: impl FnOnce(&mut InodeRecord),
    ) -> Result<()> {
        self.commit_rec_then(tx, map, f, |_| {})
    }

    /// [`File::commit_rec`], with `then` applied after the new times.
    fn commit_rec_then(
        &self,
        mut tx: Tx<'_>,
        map: &mut ExtentMap,
        f: impl FnOnce(&mut InodeRecord),
        then: impl FnOnce(&mut InodeRecord),
    ) -> Result<()> {
        let mut recs = Recs::lock(&[&self.node]);
        let r = recs.get(self.node.ino)?;
        let view_span = crate::views::span(&self.node, map, r.size.get()); // views
        map.apply(&mut tx, r)?;
        r.blocks = map.blocks().into();
        f(r);
        let t = inode::now();
        r.mtime = t;
        r.ctime = t;
        then(r);
        let size = r.size.get();
        let views = crate::views::before_commit(&self.node, &mut tx, map, view_span, size); // views
        recs.stage(&mut tx)?;
        let lazy = tx.is_lazy();
        tx.commit()?;
        if lazy {
            self.node
                .lazy
                .store(true, std::sync::atomic::Ordering::Release);
        }
        recs.install();
        views.finish(); // views: map the committed state
        Ok(())
    }

    /// Preallocates, punches or zeroes a range (see [`FallocFlags`]).
    pub fn fallocate(&self, flags: FallocFlags, off: u64, len: u64) -> Result<()> {
        self.check_write()?;
        if len == 0 {
            return Err(FsError::Invalid("fallocate length is zero".into()));
        }
        if flags.punch_hole && flags.zero_range {
            return Err(FsError::NotSupported("punch-hole with zero-range".into()));
        }
        if flags.unshare && (flags.punch_hole || flags.zero_range) {
            return Err(FsError::Invalid(
                "unshare with punch-hole or zero-range".into(),
            ));
        }
        if flags.punch_hole && !flags.keep_size {
            return Err(FsError::NotSupported("punch-hole needs keep-size".into()));
        }
        let end = check_range(off, len)?;
        let mut d = self.data_write();
        let map = self.loaded(&mut d)?;
        let res = self.fallocate_locked(map, flags, off, end);
        if res.is_err() {
            d.extents = None;
        }
        if self.node.maybe_lost() {
            self.node.forget_losses();
        }
        res
    }

    fn fallocate_locked(
        &self,
        map: &mut ExtentMap,
        flags: FallocFlags,
        off: u64,
        end: u64,
    ) -> Result<()> {
        let fs = &*self.fs;
        let mut meta = lock(&fs.meta);
        let mut tx = Tx::begin(&*fs.dev, &mut meta)?;
        if flags.punch_hole {
            // Punching frees space: it may use the metadata reserve.
            tx.use_reserve();
        }
        let size = self.size();
        // Whole blocks inside the range, and the partial edges.
        let (w0, w1) = (off.div_ceil(BS), end / BS);
        if flags.punch_hole || flags.zero_range {
            // Partial lost blocks cannot be zeroed (EIO); whole ones are
            // unmapped and their loss ends.
            self.take_lost(&mut tx, map, off, end, false)?;
            // Edges are zeroed as data. When the operation changes more
            // than the edges' bytes (whole blocks between, or the size),
            // they are zeroed in fresh blocks that the commit maps, so the
            // whole change lands at once; else in place (copied first where
            // shared), as a write of zeros.
            let edges = if w0 >= w1 {
                vec![(off, end)]
            } else {
                vec![(off, w0 * BS), (w1 * BS, end)]
            };
            let by_copy = w0 < w1 || (!flags.keep_size && end > size);
            let mut need = 0;
            for &(a, b) in &edges {
                if a < b {
                    need += if by_copy {
                        crate::write::written_blocks(&mut tx, map, a, b)?
                    } else {
                        blocks_needed(&mut tx, map, a, b, &Src::Zeros, false)?
                    };
                }
            }
            check_space(&tx, need, "zeroing partial blocks")?;
            for (a, b) in edges {
                if by_copy {
                    crate::write::zero_by_copy(&mut tx, map, a, b)?;
                } else {
                    write_range(&mut tx, map, a, b, &Src::Zeros, false)?;
                }
            }
        }
        if flags.punch_hole {
            if w0 < w1 {
                for e in map.unmap(w0, w1 - w0) {
                    tx.record(MapEvent::Unmap {
                        ino: map.ino,
                        fblock: e.fblock,
                        phys: e.phys,
                        len: e.len,
                    });
                    tx.release_extent(e.phys, e.len)?;
                }
            }
            self.dev().fence();
            return self.commit_rec(tx, map, |_| {});
        }
        let (b0, b1) = (off / BS, end.div_ceil(BS));
        if flags.unshare {
            let need = crate::write::shared_blocks(&mut tx, map, b0, b1)?;
            check_space(&tx, need, "unsharing")?;
            unshare_range(&mut tx, map, b0, b1)?;
        }
        if flags.zero_range && w0 < w1 {
            map.set_flags(w0, w1 - w0, EXTENT_UNWRITTEN);
        }
        // Allocate unwritten blocks for the holes of the range.
        let holes: Vec<(u64, u64)> = segments(map, b0, b1)
            .into_iter()
            .filter(|s| s.2.is_none())
            .map(|s| (s.0, s.1))
            .collect();
        let need: u64 = holes.iter().map(|h| h.1).sum();
        check_space(&tx, need, "preallocating")?;
        let mut goal = None;
        for (fb, len) in holes {
            let mut at = fb;
            while at < fb + len {
                let (p, l) = tx.alloc_extent(fb + len - at, goal)?;
                tx.record(MapEvent::Map {
                    ino: map.ino,
                    fblock: at,
                    phys: p,
                    len: l,
                });
                map.map(Extent {
                    fblock: at,
                    phys: p,
                    len: l,
                    flags: EXTENT_UNWRITTEN,
                });
                goal = Some(p + l);
                at += l;
            }
        }
        let new_size = if flags.keep_size { size } else { size.max(end) };
        if new_size > size {
            self.zero_past_eof(&mut tx, map, size, new_size)?;
        }
        self.dev().fence();
        self.commit_rec(tx, map, |r| r.size = new_size.into())
    }

    /// Makes the file's data and metadata durable.
    pub fn fsync(&self) -> Result<()> {
        crate::views::persist(&self.node)?; // views: stores through mappings
        let mut r = self.node.rec();
        if !r.dirty {
            drop(r);
            // Every change to the file was durable when its call returned,
            // but for store faults through views, which commit lazily.
            // (Not waiting here for other threads' groups lets their
            // commits overlap this thread's next operation.)
            if !self.node.lazy.load(std::sync::atomic::Ordering::Acquire) {
                return Ok(());
            }
            return self.fs.flush_lazy();
        }
        drop(r);
        let fs = &*self.fs;
        let mut meta = lock(&fs.meta);
        let mut tx = Tx::begin(&*fs.dev, &mut meta)?;
        // Writing back a size must work on a full device.
        tx.use_reserve();
        r = self.node.rec();
        crate::fs::put_record(&mut tx, &r.rec)?;
        tx.commit()?;
        r.dirty = false;
        Ok(())
    }

    /// The file's attributes.
    pub fn stat(&self) -> Stat {
        let mut st = Stat::of(&self.node.rec().rec);
        st.lost_bytes = self
            .lost_map()
            .ok()
            .flatten()
            .map_or(0, |m| m.values().sum::<u64>() * BS);
        st
    }

    /// The file's extents, split where sharing changes; each says whether
    /// its blocks are shared with another file (or another place in this one).
    ///
    /// The extent map is the one in memory, under the data lock (no change
    /// of the file's mapping runs meanwhile); the sharing comes from a
    /// snapshot taken after the lock, with no metadata lock (see
    /// `crate::snapshot`): the state of one moment. Only the first use of
    /// the map after the inode is loaded reads it under the metadata lock.
    pub fn fiemap(&self) -> Result<Vec<FiemapExtent>> {
        let mut d = self.data_write();
        let map = &*self.loaded(&mut d)?;
        let out = match self.fs.lockless(|r| {
            let rroot = r.snap.sb.refcount_tree;
            fiemap_rows(&mut r.s, &rroot, map)
        }) {
            Some(r) => r?,
            // A node did not match the newest snapshot: the locked path
            // reads its replica and queues the repair.
            None => self
                .fs
                .read_only(|_, s, sb| fiemap_rows(s, &sb.refcount_tree, map))?,
        };
        drop(d);
        // Split rows where lost data starts or ends, and mark the lost parts.
        let Some(lost) = self.lost_map()? else {
            return Ok(out);
        };
        let mut rows = vec![];
        for r in out {
            let (mut at, end) = (r.logical, r.logical + r.length);
            let mut cuts: Vec<(u64, u64)> = lost
                .iter()
                .map(|(&k, &l)| (k * BS, (k + l) * BS))
                .filter(|&(a, b)| a < end && b > at)
                .collect();
            cuts.sort_unstable();
            for (a, b) in cuts {
                let (a, b) = (a.max(at), b.min(end));
                if a > at {
                    rows.push(FiemapExtent {
                        logical: at,
                        physical: r.physical + (at - r.logical),
                        length: a - at,
                        ..r.clone()
                    });
                }
                rows.push(FiemapExtent {
                    logical: a,
                    physical: r.physical + (a - r.logical),
                    length: b - a,
                    lost: true,
                    ..r.clone()
                });
                at = b;
            }
            if at < end {
                rows.push(FiemapExtent {
                    logical: at,
                    physical: r.physical + (at - r.logical),
                    length: end - at,
                    ..r
                });
            }
        }
        Ok(rows)
    }
}

/// The rows of `map` split where sharing changes, with the sharing read
/// through `rs` from the refcount tree `rroot`.
fn fiemap_rows(
    rs: &mut dyn daxfs_btree::NodeStore,
    rroot: &daxfs_format::records::TreeRoot,
    map: &ExtentMap,
) -> Result<Vec<FiemapExtent>> {
    let mut out = vec![];
    for e in map.iter() {
        let pieces = if rroot.is_empty() {
            vec![crate::space::refcount::Piece {
                start: e.phys,
                len: e.len,
                count: 1,
            }]
        } else {
            crate::space::refcount::pieces(rs, rroot, e.phys, e.len)?
        };
        for p in pieces {
            let fb = e.fblock + (p.start - e.phys);
            out.push(FiemapExtent {
                logical: fb * BS,
                physical: p.start * BS,
                length: p.len * BS,
                unwritten: e.unwritten(),
                shared: p.count > 1,
                lost: false,
            });
        }
    }
    Ok(out)
}

/// The first lost byte in file range `[off, end)`, if any.
fn first_lost(lost: &std::collections::BTreeMap<u64, u64>, off: u64, end: u64) -> Option<u64> {
    let (b0, b1) = (off / BS, end.div_ceil(BS));
    if let Some((&k, &l)) = lost.range(..=b0).next_back()
        && k + l > b0
    {
        return Some(off);
    }
    lost.range(b0..b1).next().map(|(&k, _)| k * BS)
}

/// A caller's buffer that could not be reached (EFAULT).
fn buffer_fault(e: std::io::Error) -> FsError {
    FsError::Device(daxfs_device::DeviceError::Os {
        what: "copying to or from the caller's buffer".into(),
        source: e,
    })
}
