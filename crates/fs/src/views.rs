//! DAX mmap views: a file's pages mapped straight from the device, so loads
//! and stores reach the media with no copy.
//!
//! [`File::map`] reserves a contiguous range of addresses and maps into it,
//! page by page, what the file holds there:
//! - a block the file owns alone: the device page, read-write in a writable
//!   view (runs of them are one mapping, 2 MiB aligned where the extent and
//!   the alignment allow, so the kernel can use huge pages);
//! - a shared block: the device page, read-only;
//! - a hole or an unwritten extent: the kernel's zero page, read-only;
//! - a page wholly past end of file, or lost to a media error: nothing.
//!
//! A store to a read-only page faults. The process-wide fault handler of the
//! device layer calls this module's range callback, which resolves the fault
//! on the faulting thread, in the signal handler, when that is safe (the
//! thread is not inside daxfs, runs the handler on a big enough alternate
//! stack, and finds the file's data lock free), and otherwise hands it to a
//! resolver thread and waits (see [`resolver`] for why resolving in a signal
//! handler is safe here). The resolution gives the block to the file in one
//! lazy transaction (`Tx::begin_lazy`: in memory at
//! once, durable at msync, fsync or later) through the same machinery as
//! `write` (copy a shared block, zero a hole or unwritten block), and the
//! commit maps the new page into every view of the file. Loads or stores to
//! pages past end of file raise SIGBUS `BUS_ADRERR`, to lost pages SIGBUS
//! `BUS_MCEERR_AR` at the page, as Linux does for DAX files.
//!
//! # Keeping views and the file in step
//!
//! Each page has a record (kind and device block) that says what is mapped
//! there. A view maps a block read-write only while the file owns it alone,
//! and maps a block at all only while the file maps it there. Every change
//! of a file's extent map goes through `File::commit_rec`, which calls
//! [`before_commit`] (pages whose block goes away or stops being the file's
//! alone are made inaccessible or read-only before the transaction commits,
//! so no store can reach a block after another file may own it) and then
//! [`Change::finish`] (the new state is mapped). A clone or dedupe shares the
//! source's blocks without changing its map: [`write_protect`] makes them
//! read-only first. Media-error notices revoke the pages of the lost range.
//! All of this runs under the file's data lock, as do the resolvers' changes,
//! so they apply in order. Reads and in-place writes use the same device
//! pages as the views, so they agree with the views' loads and stores at
//! every moment.
//!
//! # Locks
//!
//! A view's mapping lock and an inode's view list are leaves: taken last,
//! nothing is acquired while holding them. daxfs never loads or stores
//! through a view; it only changes mappings (system calls that cannot fault
//! on them). A thread that faults on a view while holding no daxfs lock
//! cannot deadlock. `read` and `write` hold a data lock (and `write` the
//! metadata lock) while copying, so when their buffer overlaps a view they
//! copy through a bounce buffer outside the locks (`File::read_at`,
//! `File::write_at`); while they hold the locks the thread counts as inside
//! daxfs ([`inside`]), so a fault it took anyway would go to a resolver
//! thread rather than be resolved on it, and an in-thread resolution only
//! tries the data lock (a busy one hands the fault off).
mod plan;
mod resolver;
mod vm;

use crate::error::{FsError, Result};
use crate::extents::ExtentMap;
use crate::file::{File, OpenOptions};
use crate::fs::lock;
use crate::inode::{FileKind, Inode};
use crate::media::{LossCallback, LossNotice};
use crate::tx::Tx;
use crate::write::{Src, segments, unshare_range_checked, write_range};
use daxfs_device::fault::{Fault, FaultAction, RangeRegistration, register_range_handler};
use daxfs_device::{Device, MapSource};
use daxfs_format::{BLOCK_SIZE_U64, HUGE_BLOCKS};
use plan::{Run, Want};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use vm::Prot;

const BS: u64 = BLOCK_SIZE_U64;
const PAGE: usize = 4096;
const HUGE: usize = (HUGE_BLOCKS * BLOCK_SIZE_U64) as usize;

/// How a view may be accessed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Loads only (`PROT_READ`); needs a handle open for reading. A store
    /// raises SIGSEGV, as on any read-only mapping.
    Read,
    /// Loads and stores (`PROT_READ | PROT_WRITE`, `MAP_SHARED`); needs a
    /// handle open for reading and writing.
    ReadWrite,
}

/// What a page of a view shows now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageState {
    /// Not mapped yet (or revoked while the file changes): the next access
    /// faults and is resolved.
    Unmapped,
    /// A hole or unwritten extent: the zero page, read-only.
    Zero,
    /// The device page at this offset, read-only (shared, or a read-only
    /// view).
    ReadOnly { device_offset: u64 },
    /// The device page at this offset, read-write.
    Writable { device_offset: u64 },
    /// Wholly past end of file: access raises SIGBUS (`BUS_ADRERR`).
    PastEof,
    /// Lost to a media error: access raises SIGBUS (`BUS_MCEERR_AR`).
    Lost,
}

/// Counters of one view.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ViewStats {
    /// Faults resolved (on the faulting thread or by a resolver thread).
    pub faults: u64,
    /// Of those, faults resolved on the faulting thread, in its signal
    /// handler (the others were handed to a resolver thread).
    pub in_thread: u64,
    /// Of those, faults that gave the file a block (copy-on-write of a
    /// shared block, allocation of a hole, conversion of an unwritten
    /// extent).
    pub block_faults: u64,
    /// Mapping system calls on this view.
    pub remaps: u64,
    /// Mapping system calls that failed (the pages were left inaccessible,
    /// to be resolved on their next access).
    pub errors: u64,
}

// Page records: kind in the low 3 bits, device block above.
const K_NONE: u64 = 0;
const K_ZERO: u64 = 1;
const K_RO: u64 = 2;
const K_RW: u64 = 3;
const K_EOF: u64 = 4;
const K_LOST: u64 = 5;

fn rec(kind: u64, block: u64) -> u64 {
    (block << 3) | kind
}
fn kind(r: u64) -> u64 {
    r & 7
}
fn block(r: u64) -> u64 {
    r >> 3
}
fn is_dev(k: u64) -> bool {
    k == K_RO || k == K_RW
}

/// The views of one inode (a field of [`Inode`]).
#[derive(Debug, Default)]
pub struct InodeViews {
    count: AtomicUsize,
    list: Mutex<Vec<Weak<ViewShared>>>,
}

impl InodeViews {
    fn add(&self, v: &Arc<ViewShared>) {
        let mut l = lock(&self.list);
        l.retain(|w| w.strong_count() > 0);
        l.push(Arc::downgrade(v));
        self.count.store(l.len(), Ordering::Release);
    }

    fn remove(&self, v: *const ViewShared) {
        let mut l = lock(&self.list);
        l.retain(|w| w.strong_count() > 0 && !std::ptr::eq(w.as_ptr(), v));
        self.count.store(l.len(), Ordering::Release);
    }

    /// True when the inode has no views (one atomic load).
    pub(crate) fn is_empty(&self) -> bool {
        self.count.load(Ordering::Acquire) == 0
    }

    /// The live views overlapping file blocks `[b0, b1)`.
    fn overlapping(&self, b0: u64, b1: u64) -> Vec<Arc<ViewShared>> {
        if self.is_empty() || b0 >= b1 {
            return vec![];
        }
        lock(&self.list)
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|v| v.fb0 < b1 && b0 < v.end())
            .collect()
    }
}

/// The mapping state of a view, under its lock.
#[derive(Debug)]
struct Ops {
    res: vm::Reservation,
    dead: bool,
}

/// The part of a view that the fault handler, the resolvers and the inode's
/// view list reach.
pub(crate) struct ViewShared {
    base: usize,
    npages: usize,
    /// File block of the first page.
    fb0: u64,
    writable: bool,
    huge_faults: AtomicBool,
    /// The process that made the view: in a child (after fork) its range is
    /// unmapped and its faults are not ours.
    pid: i32,
    /// One record per page; read without locks by the fault handler, written
    /// under `ops`.
    pages: Box<[AtomicU64]>,
    src: MapSource,
    dev: Arc<dyn Device>,
    ino: u64,
    ops: Mutex<Ops>,
    /// The view's own handle (held by the [`View`]).
    file: Weak<File>,
    notices: Mutex<Vec<LossNotice>>,
    callback: Mutex<Option<LossCallback>>,
    faults: AtomicU64,
    in_thread: AtomicU64,
    block_faults: AtomicU64,
    remaps: AtomicU64,
    errors: AtomicU64,
}

impl std::fmt::Debug for ViewShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewShared")
            .field("ino", &self.ino)
            .field("base", &format_args!("{:#x}", self.base))
            .field("pages", &self.npages)
            .field("fb0", &self.fb0)
            .field("writable", &self.writable)
            .finish_non_exhaustive()
    }
}

/// When to apply a plan.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before the transaction commits: only take access away.
    Before,
    /// After it committed: map the new state.
    After,
}

/// One mapping change, for a run of pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    /// Map device blocks from `block` on.
    MapDev { block: u64, prot: Prot },
    /// Change the protection of the device pages mapped already.
    Protect { prot: Prot },
    /// Map the zero page read-only.
    MapZero,
    /// Take everything away; the record says why (`K_EOF`, `K_LOST`).
    Revoke { kind: u64 },
    /// Only the record changes (the pages are inaccessible already).
    Record { kind: u64 },
    /// Make inaccessible until resolved (`K_NONE`).
    Invalidate,
}

impl Op {
    fn continues(self, next: Op, n: u64) -> bool {
        match (self, next) {
            (Op::MapDev { block, prot }, Op::MapDev { block: b, prot: p }) => {
                prot == p && block + n == b
            }
            (a, b) => a == b,
        }
    }
}

struct Batch {
    p0: usize,
    n: usize,
    op: Op,
}

impl ViewShared {
    fn end(&self) -> u64 {
        self.fb0 + self.npages as u64
    }

    fn want_rec(&self, w: Want) -> u64 {
        match w {
            Want::Zero => rec(K_ZERO, 0),
            Want::Own(b) if self.writable => rec(K_RW, b),
            Want::Own(b) | Want::Shared(b) => rec(K_RO, b),
            Want::Eof => rec(K_EOF, 0),
            Want::Lost => rec(K_LOST, 0),
        }
    }

    fn decide(&self, cur: u64, want: u64, phase: Phase) -> Option<Op> {
        let (ck, wk) = (kind(cur), kind(want));
        match phase {
            Phase::Before => {
                // Read-only pages (and the zero page) keep showing their
                // block until the new state is mapped: no store can reach
                // it, and until then the committer holds the metadata lock,
                // which anything that could write the block in place (its
                // other owner once alone) or reuse it (once freed) needs.
                if !is_dev(ck) || ck == K_RO {
                    None
                } else if is_dev(wk) && block(want) == block(cur) {
                    (ck == K_RW && wk == K_RO).then_some(Op::Protect { prot: Prot::Read })
                } else {
                    Some(Op::Invalidate)
                }
            }
            Phase::After => {
                if cur == want {
                    return None;
                }
                Some(if is_dev(wk) {
                    let prot = if wk == K_RW {
                        Prot::ReadWrite
                    } else {
                        Prot::Read
                    };
                    if is_dev(ck) && block(cur) == block(want) {
                        Op::Protect { prot }
                    } else {
                        Op::MapDev {
                            block: block(want),
                            prot,
                        }
                    }
                } else if wk == K_ZERO {
                    Op::MapZero
                } else if is_dev(ck) || ck == K_ZERO {
                    Op::Revoke { kind: wk }
                } else {
                    Op::Record { kind: wk }
                })
            }
        }
    }

    /// Applies `runs` (file blocks) to this view's pages.
    fn apply(&self, runs: &[Run], phase: Phase) {
        let ops = lock(&self.ops);
        if ops.dead {
            return;
        }
        let mut batch: Option<Batch> = None;
        for r in runs {
            let s = r.fb.max(self.fb0);
            let e = (r.fb + r.len).min(self.end());
            for fb in s..e {
                let p = (fb - self.fb0) as usize;
                let cur = self.pages[p].load(Ordering::Relaxed);
                let op = self.decide(cur, self.want_rec(r.at(fb)), phase);
                batch = self.extend(&ops, batch, p, op);
            }
        }
        if let Some(b) = batch {
            self.run(&ops, b);
        }
    }

    /// Adds page `p` with `op` to the batch, running the batch first when
    /// the page does not continue it.
    fn extend(&self, ops: &Ops, batch: Option<Batch>, p: usize, op: Option<Op>) -> Option<Batch> {
        match (batch, op) {
            (Some(mut b), Some(op)) if b.p0 + b.n == p && b.op.continues(op, b.n as u64) => {
                b.n += 1;
                Some(b)
            }
            (b, op) => {
                if let Some(b) = b {
                    self.run(ops, b);
                }
                op.map(|op| Batch { p0: p, n: 1, op })
            }
        }
    }

    /// Pages whose record is one of `kinds` in file blocks `[b0, b1)` get
    /// `op`.
    fn apply_to_kinds(&self, b0: u64, b1: u64, kinds: &[u64], op: Op) {
        let ops = lock(&self.ops);
        if ops.dead {
            return;
        }
        let (s, e) = (b0.max(self.fb0), b1.min(self.end()));
        let mut batch = None;
        for fb in s..e {
            let p = (fb - self.fb0) as usize;
            let k = kind(self.pages[p].load(Ordering::Relaxed));
            batch = self.extend(&ops, batch, p, kinds.contains(&k).then_some(op));
        }
        if let Some(b) = batch {
            self.run(&ops, b);
        }
    }

    /// Performs one batch. Records of pages that become inaccessible are
    /// set before the system call, the others after, so the fault handler
    /// never answers SIGBUS for a page that is accessible.
    fn run(&self, ops: &Ops, b: Batch) {
        let (off, len) = (b.p0 * PAGE, b.n * PAGE);
        let set = |f: &dyn Fn(usize, u64) -> u64| {
            for i in 0..b.n {
                let slot = &self.pages[b.p0 + i];
                slot.store(f(i, slot.load(Ordering::Relaxed)), Ordering::Release);
            }
        };
        let kind_of = |p: Prot| match p {
            Prot::ReadWrite => K_RW,
            Prot::Read => K_RO,
            Prot::None => K_NONE,
        };
        let res = match b.op {
            Op::MapDev { block, prot } => {
                let r = ops.res.map_file(
                    off,
                    len,
                    self.src.fd,
                    self.src.offset + block * BS,
                    prot,
                    self.src.map_sync,
                );
                if r.is_ok() {
                    set(&|i, _| rec(kind_of(prot), block + i as u64));
                }
                r
            }
            Op::Protect { prot } => {
                if prot != Prot::ReadWrite {
                    set(&|_, cur| (cur & !7) | kind_of(prot));
                }
                let r = ops.res.protect(off, len, prot);
                if r.is_ok() && prot == Prot::ReadWrite {
                    set(&|_, cur| (cur & !7) | K_RW);
                }
                r
            }
            Op::MapZero => {
                let r = ops.res.map_anon(off, len, Prot::Read);
                if r.is_ok() {
                    set(&|_, _| rec(K_ZERO, 0));
                }
                r
            }
            Op::Revoke { kind } => {
                set(&|_, _| rec(kind, 0));
                ops.res.map_anon(off, len, Prot::None)
            }
            Op::Record { kind } => {
                set(&|_, _| rec(kind, 0));
                Ok(())
            }
            Op::Invalidate => {
                set(&|_, cur| (cur & !7) | K_NONE);
                ops.res.protect(off, len, Prot::None)
            }
        };
        self.remaps.fetch_add(1, Ordering::Relaxed);
        if res.is_err() {
            // Leave the pages inaccessible and unresolved: the next access
            // faults and tries again.
            self.errors.fetch_add(1, Ordering::Relaxed);
            if ops.res.map_anon(off, len, Prot::None).is_ok() {
                set(&|_, cur| {
                    if matches!(kind(cur), K_EOF | K_LOST) {
                        cur
                    } else {
                        rec(K_NONE, 0)
                    }
                });
            }
        }
    }

    /// Writes back the device pages mapped at pages `[p0, p1)` (read-only
    /// ones too: they may hold stores made while they were writable). The
    /// caller fences.
    fn flush(&self, p0: usize, p1: usize) {
        let mut run: Option<(u64, u64)> = None;
        for p in p0..p1 {
            let r = self.pages[p].load(Ordering::Acquire);
            let next = is_dev(kind(r)).then(|| block(r) * BS);
            match (run, next) {
                (Some((a, l)), Some(b)) if a + l == b => run = Some((a, l + BS)),
                (cur, next) => {
                    if let Some((a, l)) = cur {
                        self.dev.flush(a, l);
                    }
                    run = next.map(|b| (b, BS));
                }
            }
        }
        if let Some((a, l)) = run {
            self.dev.flush(a, l);
        }
    }

    /// The fault handler's callback (signal context: see
    /// `daxfs_device::fault` and [`resolver`]).
    fn on_fault(&self, f: &Fault) -> FaultAction {
        let Some(rel) = f.addr.checked_sub(self.base) else {
            return FaultAction::NotMine;
        };
        let p = rel / PAGE;
        if p >= self.npages {
            return FaultAction::NotMine;
        }
        // SAFETY: getpid is async-signal-safe and has no preconditions.
        if unsafe { libc::getpid() } != self.pid {
            return FaultAction::NotMine;
        }
        let page_addr = f.addr & !(PAGE - 1);
        let r = self.pages[p].load(Ordering::Acquire);
        match kind(r) {
            K_LOST => return FaultAction::Sigbus { addr: page_addr },
            K_EOF => return FaultAction::BusError { addr: f.addr },
            _ => {}
        }
        // Where the CPU does not say, a fault on a readable page is a store.
        let write = f.write.unwrap_or(kind(r) != K_NONE);
        if write && !self.writable {
            return FaultAction::NotMine;
        }
        let (vp, addr) = (self as *const ViewShared as usize, f.addr);
        let answer =
            resolver::in_thread(f.in_signal_handler, move || resolve_here(vp, addr, write))
                .unwrap_or_else(|| resolver::submit(vp, addr, write));
        match answer {
            resolver::RETRY => FaultAction::Retry,
            resolver::MEMORY_ERROR => FaultAction::Sigbus { addr: page_addr },
            resolver::BUS_ERROR => FaultAction::BusError { addr: f.addr },
            _ => FaultAction::NotMine,
        }
    }

    /// A media-error notice for this view's file: revokes the pages of the
    /// lost range (the next access finds them lost) and tells the owner.
    fn media_lost(&self, n: &LossNotice) {
        let (b0, b1) = (n.offset / BS, (n.offset + n.length).div_ceil(BS));
        if b1 <= self.fb0 || b0 >= self.end() {
            return;
        }
        self.apply_to_kinds(b0, b1, &[K_RO, K_RW], Op::Invalidate);
        lock(&self.notices).push(n.clone());
        let cb = lock(&self.callback).clone();
        if let Some(cb) = cb {
            cb(n);
        }
    }

    /// The blocks a store fault at `fb` gives the file: the 2 MiB-aligned
    /// group around it when it lies in the view, below end of file, inside
    /// one written extent on a 2 MiB-aligned device range (a huge-page copy
    /// on write); otherwise the one block.
    fn granule(&self, map: &ExtentMap, size: u64, fb: u64) -> (u64, u64) {
        let g = fb - fb % HUGE_BLOCKS;
        if self.huge_faults.load(Ordering::Relaxed)
            && g >= self.fb0
            && g + HUGE_BLOCKS <= self.end()
            && (g + HUGE_BLOCKS) * BS <= size
            && let Some(e) = map.find(g)
            && !e.unwritten()
            && e.end() >= g + HUGE_BLOCKS
            && (e.phys + (g - e.fblock)).is_multiple_of(HUGE_BLOCKS)
        {
            return (g, g + HUGE_BLOCKS);
        }
        (fb, fb + 1)
    }

    /// Resolves a fault on file block `fb`: on a resolver thread, or on the
    /// faulting thread (`here`), where a busy data lock hands the fault to
    /// the resolvers instead of waiting (the thread might hold it).
    fn resolve(&self, file: &File, fb: u64, write: bool, here: bool) -> u32 {
        let mut d = if here {
            match file.node.data.try_write() {
                Ok(d) => d,
                Err(std::sync::TryLockError::WouldBlock) => return resolver::HAND_OFF,
                Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            }
        } else {
            file.data_write()
        };
        self.faults.fetch_add(1, Ordering::Relaxed);
        if here {
            self.in_thread.fetch_add(1, Ordering::Relaxed);
        }
        let map = match file.loaded(&mut d) {
            Ok(m) => m,
            Err(e) => return answer_for(&e),
        };
        let size = file.size();
        let lost = match file.lost_map() {
            Ok(l) => l,
            Err(e) => return answer_for(&e),
        };
        let is_lost = lost
            .as_ref()
            .is_some_and(|l| l.range(..=fb).next_back().is_some_and(|(k, n)| k + n > fb));
        let idx = (fb - self.fb0) as usize;
        let (g0, g1) = if write && fb * BS < size && !is_lost {
            let g = self.granule(map, size, fb);
            match give_blocks(file, map, g.0, g.1) {
                Ok(true) => {
                    self.block_faults.fetch_add(1, Ordering::Relaxed);
                    // The commit mapped the new state into every view.
                    if kind(self.pages[idx].load(Ordering::Acquire)) == K_RW {
                        return resolver::RETRY;
                    }
                }
                Ok(false) => {}
                Err(e) => {
                    d.extents = None;
                    return answer_for(&e);
                }
            }
            g
        } else {
            // Re-map the 2 MiB group around the page (within the view).
            let g = fb - fb % HUGE_BLOCKS;
            (g.max(self.fb0), (g + HUGE_BLOCKS).min(self.end()))
        };
        if let Err(e) = refresh(file, map, size, lost.as_ref(), g0, g1) {
            return answer_for(&e);
        }
        // Read the record under the data lock: once it is released, another
        // change (a clone write-protecting the page) may come first, and the
        // access simply faults again.
        let r = self.pages[idx].load(Ordering::Acquire);
        drop(d);
        match kind(r) {
            K_EOF => resolver::BUS_ERROR,
            K_LOST => resolver::MEMORY_ERROR,
            K_NONE => resolver::BUS_ERROR,
            K_ZERO | K_RO if write => resolver::BUS_ERROR,
            _ => resolver::RETRY,
        }
    }
}

/// The resolver's answer for an error.
fn answer_for(e: &FsError) -> u32 {
    match e {
        FsError::Io(_) | FsError::Device(daxfs_device::DeviceError::Media { .. }) => {
            resolver::MEMORY_ERROR
        }
        _ => resolver::BUS_ERROR,
    }
}

/// The resolvers' entry point.
fn resolve_fault(view: usize, addr: usize, write: bool) -> u32 {
    resolve_at(view, addr, write, false)
}

/// The faulting thread's entry point (in its signal handler: see
/// [`resolver::in_thread`]).
fn resolve_here(view: usize, addr: usize, write: bool) -> u32 {
    resolve_at(view, addr, write, true)
}

fn resolve_at(view: usize, addr: usize, write: bool, here: bool) -> u32 {
    // SAFETY: `view` is the `ViewShared` of a live registration: its fault
    // callback is running (on this thread, or waiting for this answer), and
    // a view unregisters (waiting for running callbacks) before its
    // `ViewShared` can go away.
    let v = unsafe { &*(view as *const ViewShared) };
    let Some(file) = v.file.upgrade() else {
        return resolver::NOT_MINE;
    };
    let fb = v.fb0 + ((addr - v.base) / PAGE) as u64;
    let answer = v.resolve(&file, fb, write, here);
    drop(file);
    answer
}

/// While alive, a fault the thread takes goes to the resolver threads
/// instead of being resolved on it: held by daxfs code that copies a
/// caller's buffer (which may hold locks a resolution needs).
pub(crate) fn inside() -> resolver::Inside {
    resolver::Inside::enter()
}

/// What the resolvers need to make a file system's lazy commits durable when
/// idle: its metadata and device, not the file system itself (a resolver
/// holding the last reference would drop the file system late, closing its
/// device after its owner expects). A file system leaves the list first
/// thing when dropped, which waits while the lock is held; an idle flush
/// drops what it upgraded before it releases the lock.
type LazyEntry = (Weak<Mutex<crate::tx::Meta>>, Weak<dyn Device>);
static LAZY: Mutex<Vec<LazyEntry>> = Mutex::new(Vec::new());

/// Asks the resolvers to make `fs`'s lazy commits durable when idle.
fn flush_when_idle(fs: &crate::fs::FsInner) {
    {
        let mut l = lock(&LAZY);
        if !l
            .iter()
            .any(|(m, _)| std::ptr::eq(m.as_ptr(), Arc::as_ptr(&fs.meta)))
        {
            l.push((Arc::downgrade(&fs.meta), Arc::downgrade(&fs.dev)));
        }
    }
    resolver::want_idle_work();
}

/// Called first thing when `fs` is dropped: takes it off the list (waiting
/// while an idle flush runs).
pub(crate) fn forget_fs(fs: &crate::fs::FsInner) {
    lock(&LAZY).retain(|(m, _)| !std::ptr::eq(m.as_ptr(), Arc::as_ptr(&fs.meta)));
}

/// The resolvers' idle work: makes the lazy commits of store faults durable.
fn flush_idle() {
    let mut l = lock(&LAZY);
    for (m, d) in std::mem::take(&mut *l) {
        if let (Some(m), Some(d)) = (m.upgrade(), d.upgrade()) {
            // A failure shuts the file system down; the next operation
            // reports it.
            let _ = crate::tx::flush_lazy(&*d, &mut lock(&m));
        }
    }
}

/// Zeros for filling holes and unwritten blocks, one 2 MiB group long.
fn zeros() -> &'static [u8] {
    static Z: OnceLock<Box<[u8]>> = OnceLock::new();
    Z.get_or_init(|| vec![0u8; HUGE].into_boxed_slice())
}

/// Gives `file` blocks of its own, written, over file blocks `[g0, g1)`
/// (below end of file): shared blocks are copied, holes allocated and
/// zeroed, unwritten blocks zeroed; one transaction, whose commit maps the
/// result into every view. False when there was nothing to do.
fn give_blocks(file: &File, map: &mut ExtentMap, g0: u64, g1: u64) -> Result<bool> {
    let fs = &*file.fs;
    let mut meta = lock(&fs.meta);
    // Committed in memory at once, durable at msync, fsync, sync, the next
    // ordinary transaction or when the resolvers go idle.
    let mut tx = Tx::begin_lazy(&*fs.dev, &mut meta)?;
    let fill: u64 = segments(map, g0, g1)
        .iter()
        .filter(|s| s.2.is_none_or(|e| e.unwritten()))
        .map(|s| s.1)
        .sum();
    let shared = unshare_range_checked(&mut tx, map, g0, g1, fill, "a store through a view")?;
    if shared == 0 && fill == 0 {
        return Ok(false);
    }
    let z = zeros();
    for (s, l, e) in segments(map, g0, g1) {
        if e.is_none_or(|e| e.unwritten()) {
            let src = Src::Bytes {
                off: s * BS,
                data: &z[..(l * BS) as usize],
            };
            write_range(&mut tx, map, s * BS, (s + l) * BS, &src, true)?;
        }
    }
    fs.dev.fence();
    file.commit_rec(tx, map, |_| {})?;
    drop(meta);
    prefault_around(&*fs.dev, map, g0, g1);
    flush_when_idle(&file.fs);
    Ok(true)
}

/// The 2 MiB device groups whose page tables in the device's own mapping
/// were populated, by device (its address) and group.
static PREFAULTED: Mutex<Option<std::collections::HashSet<(usize, u64)>>> = Mutex::new(None);

/// After a store fault gave the file blocks: populates, once per 2 MiB
/// device group, the device mapping's page tables around them
/// (`Device::prefault`), so the copies and fills of the next faults, whose
/// blocks the allocator takes nearby, take no page fault of their own on
/// the device mapping (3-4 µs each on an image in `/dev/shm`). The first
/// fault in a group pays one system call instead.
fn prefault_around(dev: &dyn Device, map: &ExtentMap, g0: u64, g1: u64) {
    let key = dev as *const dyn Device as *const u8 as usize;
    let mut groups = vec![];
    for (s, l, e) in segments(map, g0, g1) {
        if let Some(e) = e {
            let p = e.phys + (s - e.fblock);
            groups.extend(p / HUGE_BLOCKS..=(p + l - 1) / HUGE_BLOCKS);
        }
    }
    let mut todo = vec![];
    {
        let mut set = lock(&PREFAULTED);
        let set = set.get_or_insert_with(Default::default);
        for g in groups {
            if set.insert((key, g)) {
                todo.push(g);
            }
        }
    }
    for g in todo {
        dev.prefault(g * HUGE_BLOCKS * BS, HUGE_BLOCKS * BS);
    }
}

/// Maps the current state of file blocks `[b0, b1)` into every view of the
/// file (under its data lock, not the metadata lock).
fn refresh(
    file: &File,
    map: &ExtentMap,
    size: u64,
    lost: Option<&BTreeMap<u64, u64>>,
    b0: u64,
    b1: u64,
) -> Result<()> {
    let runs = {
        let mut meta = lock(&file.fs.meta);
        let rroot = meta.sb.refcount_tree;
        let mut rs = file.fs.cached_reader(&mut meta);
        plan::plan(
            map,
            size,
            lost,
            &mut |p, l| {
                if rroot.is_empty() {
                    Ok(vec![crate::space::refcount::Piece {
                        start: p,
                        len: l,
                        count: 1,
                    }])
                } else {
                    crate::space::refcount::pieces(&mut rs, &rroot, p, l)
                }
            },
            b0,
            b1,
        )?
    };
    for v in file.node.views.overlapping(b0, b1) {
        v.apply(&runs, Phase::After);
    }
    Ok(())
}

/// What a commit of a file with views must re-map (see [`before_commit`]).
#[derive(Default)]
#[must_use = "finish() maps the new state"]
pub(crate) struct Change {
    views: Vec<Arc<ViewShared>>,
    runs: Vec<Run>,
}

/// Before a file's map changes are applied: the file blocks they touch and
/// the old size, or None when the file has no views.
pub(crate) fn span(node: &Inode, map: &ExtentMap, old_size: u64) -> Option<(u64, u64, u64)> {
    if node.views.is_empty() {
        return None;
    }
    let (b0, b1) = map.changed_span().unwrap_or((u64::MAX, 0));
    Some((b0, b1, old_size))
}

/// Right before `tx` commits the file's new map and size: takes away what
/// the views must no longer reach (pages whose block leaves the file or
/// stops being its own alone), and returns the change to map after the
/// commit. Never fails: if the new state cannot be worked out, the touched
/// pages are left inaccessible, to be resolved on their next access.
pub(crate) fn before_commit(
    node: &Inode,
    tx: &mut Tx<'_>,
    map: &ExtentMap,
    span: Option<(u64, u64, u64)>,
    size: u64,
) -> Change {
    let Some((mut b0, mut b1, old)) = span else {
        return Change::default();
    };
    if old != size {
        b0 = b0.min(old.min(size) / BS);
        b1 = b1.max(old.max(size).div_ceil(BS));
    }
    let views = node.views.overlapping(b0, b1);
    if views.is_empty() {
        return Change::default();
    }
    let lo = views.iter().map(|v| v.fb0).min().unwrap_or(b0).max(b0);
    let hi = views.iter().map(|v| v.end()).max().unwrap_or(b1).min(b1);
    let lost = if node.maybe_lost() {
        let root = tx.meta.sb.loss_tree;
        match crate::media::losses_of(tx, &root, node.ino) {
            Ok(l) => Some(l),
            Err(_) => {
                return invalidate_all(views, lo, hi);
            }
        }
    } else {
        None
    };
    match plan::plan(
        map,
        size,
        lost.as_ref(),
        &mut |p, l| tx.share_counts(p, l),
        lo,
        hi,
    ) {
        Ok(runs) => {
            for v in &views {
                v.apply(&runs, Phase::Before);
            }
            Change { views, runs }
        }
        Err(_) => invalidate_all(views, lo, hi),
    }
}

fn invalidate_all(views: Vec<Arc<ViewShared>>, b0: u64, b1: u64) -> Change {
    for v in &views {
        v.apply_to_kinds(b0, b1, &[K_RO, K_RW, K_ZERO], Op::Invalidate);
    }
    Change::default()
}

impl Change {
    /// After the commit: maps the new state into the views.
    pub(crate) fn finish(self) {
        for v in &self.views {
            v.apply(&self.runs, Phase::After);
        }
    }
}

/// Before file blocks `[b0, b0 + n)` become shared (the source of a clone
/// or dedupe, under its data lock): the views stop writing them directly.
pub(crate) fn write_protect(node: &Inode, b0: u64, n: u64) {
    let b1 = b0.saturating_add(n);
    for v in node.views.overlapping(b0, b1) {
        v.apply_to_kinds(b0, b1, &[K_RW], Op::Protect { prot: Prot::Read });
    }
}

/// Makes the stores through every view of the file durable (for `fsync`).
pub(crate) fn persist(node: &Inode) -> Result<()> {
    let views = node.views.overlapping(0, u64::MAX);
    if views.is_empty() {
        return Ok(());
    }
    for v in &views {
        v.flush(0, v.npages);
    }
    let dev = &*views[0].dev;
    dev.fence();
    dev.take_persist_error()?;
    Ok(())
}

/// A view of a file: a contiguous range of addresses in which each page of
/// the file is the device's page, so loads and stores reach the media with
/// no copy. Unmapped when dropped.
///
/// Access the memory through [`View::as_ptr`] with raw pointers (other
/// threads, other views and `write` change it at any time: never form
/// `&`/`&mut` to it), or copy with [`View::read_at`] and [`View::write_at`].
/// A store to a shared block, a hole or an unwritten extent faults once and
/// is resolved (the file gets a block of its own). Access to a page wholly
/// past end of file raises SIGBUS (`BUS_ADRERR`); to a page lost to a media
/// error, SIGBUS (`BUS_MCEERR_AR`, `si_addr` at the page).
///
/// Stores are durable after [`View::msync`] (or `fsync`); the blocks a store
/// fault gives the file are the file's before the store goes on, in a lazy
/// transaction made durable by msync, fsync, sync, the next ordinary
/// transaction, a pause of the faults or unmount.
pub struct View {
    reg: Option<RangeRegistration>,
    shared: Arc<ViewShared>,
    file: Arc<File>,
    offset: u64,
    len: usize,
}

impl std::fmt::Debug for View {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("View")
            .field("ino", &self.shared.ino)
            .field("offset", &self.offset)
            .field("len", &self.len)
            .field("writable", &self.shared.writable)
            .finish()
    }
}

impl Drop for View {
    fn drop(&mut self) {
        // No mapping changes from now on, and the pages stay out of child
        // processes until unmapped (the registration kept them out so far).
        // A fault meanwhile (a use of the view while it is dropped) gets
        // SIGBUS.
        {
            let mut ops = lock(&self.shared.ops);
            ops.dead = true;
            ops.res.keep_from_children();
        }
        // Unregistering waits for faults being resolved on this view.
        if let Some(r) = self.reg.take() {
            r.unregister();
        }
        self.file.node.views.remove(Arc::as_ptr(&self.shared));
        let mut ops = lock(&self.shared.ops);
        ops.dead = true;
        ops.res.release();
    }
}

impl File {
    /// What a store through a view does at file offset `off`, on a device
    /// that cannot be mapped (the crash tests' recording device): the store
    /// fault's lazy transaction (the block becomes the file's own), then
    /// `data` stored into the block as a store through a view leaves it (not
    /// flushed). Not part of the API.
    #[doc(hidden)]
    #[cfg(any(test, feature = "testing"))]
    pub fn store_as_view_for_test(&self, off: u64, data: &[u8]) -> Result<()> {
        let fb = off / BS;
        if (off % BS) + data.len() as u64 > BS || (fb + 1) * BS > self.size() {
            return Err(FsError::Invalid("one block below end of file".into()));
        }
        let mut d = self.data_write();
        let map = self.loaded(&mut d)?;
        if let Err(e) = give_blocks(self, map, fb, fb + 1) {
            d.extents = None;
            return Err(e);
        }
        let e = map
            .find(fb)
            .ok_or_else(|| FsError::Corrupt("the store fault left no block".into()))?;
        let at = (e.phys + (fb - e.fblock)) * BS + off % BS;
        self.fs.dev.write(at, data)?;
        Ok(())
    }

    /// What `View::msync` over the whole file does, on a device that cannot
    /// be mapped (see [`File::store_as_view_for_test`]). Not part of the API.
    #[doc(hidden)]
    #[cfg(any(test, feature = "testing"))]
    pub fn msync_for_test(&self) -> Result<()> {
        let mut d = self.data_write();
        let map = self.loaded(&mut d)?;
        for e in map.iter() {
            self.fs.dev.flush(e.phys * BS, e.len * BS);
        }
        drop(d);
        self.fs.dev.fence();
        self.fs.dev.take_persist_error()?;
        self.fs.flush_lazy()
    }

    /// Maps `length` bytes of the file from `offset` (a multiple of the page
    /// size) into memory: see [`View`]. The view may extend past end of file
    /// (those pages raise SIGBUS until the file grows). The view keeps the
    /// file open.
    pub fn map(&self, offset: u64, length: u64, access: Access) -> Result<View> {
        map_file(self, offset, length, access)
    }
}

/// A second handle on `f`'s inode for a view (it keeps the file open and
/// hears of media errors).
fn view_handle(f: &File, write: bool) -> File {
    {
        let _meta = lock(&f.fs.meta);
        f.node.opens.fetch_add(1, Ordering::SeqCst);
    }
    let opts = OpenOptions {
        read: true,
        write,
        ..Default::default()
    };
    File::new(f.fs.clone(), f.node.clone(), opts)
}

fn map_file(f: &File, offset: u64, length: u64, access: Access) -> Result<View> {
    if f.node.kind != FileKind::File {
        return Err(match f.node.kind {
            FileKind::Dir => FsError::IsDir(format!("inode {}", f.node.ino)),
            _ => FsError::Invalid(format!("inode {} is not a regular file", f.node.ino)),
        });
    }
    if !f.opts.read || (access == Access::ReadWrite && !f.opts.write) {
        return Err(FsError::PermissionDenied(format!(
            "inode {}: a {} view needs a handle open for {}",
            f.node.ino,
            if access == Access::ReadWrite {
                "writable"
            } else {
                "read-only"
            },
            if access == Access::ReadWrite {
                "reading and writing"
            } else {
                "reading"
            }
        )));
    }
    if length == 0 || !offset.is_multiple_of(PAGE as u64) {
        return Err(FsError::Invalid(format!(
            "view of {length} bytes at {offset}: the length must not be zero and the offset must be a multiple of {PAGE}"
        )));
    }
    if offset
        .checked_add(length)
        .is_none_or(|e| e > daxfs_format::MAX_FILE_SIZE)
    {
        return Err(FsError::TooBig(format!(
            "view [{offset}, +{length}) passes the largest file size"
        )));
    }
    if rustix::param::page_size() != PAGE {
        return Err(FsError::NotSupported(
            "views need 4 KiB pages (the block size)".into(),
        ));
    }
    let src = f.fs.dev.view_source().ok_or_else(|| {
        FsError::NotSupported(format!("{} cannot be mapped twice", f.fs.dev.describe()))
    })?;
    if src.align > PAGE as u64 {
        return Err(FsError::NotSupported(format!(
            "{} maps only in units of {} bytes",
            f.fs.dev.describe(),
            src.align
        )));
    }
    resolver::start(resolver::Jobs {
        work: resolve_fault,
        idle: flush_idle,
    })
    .map_err(|e| FsError::Io(format!("starting resolvers: {e}")))?;
    let npages = usize::try_from(length.div_ceil(PAGE as u64))
        .map_err(|_| FsError::TooBig("view larger than the address space".into()))?;
    let len = npages
        .checked_mul(PAGE)
        .ok_or_else(|| FsError::TooBig("view larger than the address space".into()))?;
    let res = vm::Reservation::new(len, HUGE, (offset % HUGE as u64) as usize)
        .map_err(|e| FsError::Io(format!("reserving {len} bytes of addresses: {e}")))?;
    let base = res.base();
    let file = Arc::new(view_handle(f, access == Access::ReadWrite));
    let shared = Arc::new(ViewShared {
        base,
        npages,
        fb0: offset / BS,
        writable: access == Access::ReadWrite,
        huge_faults: AtomicBool::new(true),
        pid: std::process::id() as i32,
        pages: (0..npages)
            .map(|_| AtomicU64::new(rec(K_NONE, 0)))
            .collect(),
        src,
        dev: f.fs.dev.clone(),
        ino: f.node.ino,
        ops: Mutex::new(Ops { res, dead: false }),
        file: Arc::downgrade(&file),
        notices: Mutex::new(vec![]),
        callback: Mutex::new(None),
        faults: AtomicU64::new(0),
        in_thread: AtomicU64::new(0),
        block_faults: AtomicU64::new(0),
        remaps: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });
    let weak = Arc::downgrade(&shared);
    file.on_media_error(move |n| {
        if let Some(v) = weak.upgrade() {
            v.media_lost(n);
        }
    });
    let vp = Arc::as_ptr(&shared) as usize;
    let reg = register_range_handler(base, len, move |fault: &Fault| {
        // SAFETY: the registration is dropped (waiting for running
        // callbacks) before the `ViewShared` it points to (see `View`).
        let v = unsafe { &*(vp as *const ViewShared) };
        v.on_fault(fault)
    })
    .map_err(|e| FsError::Io(format!("registering the view's fault handler: {e}")))?;
    reg.keep_out_of_children()
        .map_err(|e| FsError::Io(format!("keeping the view out of child processes: {e}")))?;
    f.node.views.add(&shared);
    let view = View {
        reg: Some(reg),
        shared,
        file,
        offset,
        len,
    };
    // The first mapping, under the data lock like every later change.
    {
        let file = &view.file;
        let mut d = file.data_write();
        let map = file.loaded(&mut d)?;
        let lost = file.lost_map()?;
        let (b0, b1) = (view.shared.fb0, view.shared.end());
        refresh(file, map, file.size(), lost.as_ref(), b0, b1)?;
    }
    Ok(view)
}

impl View {
    /// The first byte of the view (file offset [`View::offset`]). Valid for
    /// [`View::len`] bytes while the view lives; never form references to it.
    pub fn as_ptr(&self) -> *mut u8 {
        self.shared.base as *mut u8
    }

    /// The file offset of the first byte.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Length in bytes (whole pages).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: views are never empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether stores are allowed.
    pub fn writable(&self) -> bool {
        self.shared.writable
    }

    /// The mapped file's inode number.
    pub fn ino(&self) -> u64 {
        self.shared.ino
    }

    /// The view's address of file offset `off`, checking that
    /// `[off, off + len)` lies inside the view.
    fn addr(&self, off: u64, len: usize) -> Result<*mut u8> {
        let rel = off.checked_sub(self.offset);
        match rel {
            Some(r)
                if r.checked_add(len as u64)
                    .is_some_and(|e| e <= self.len as u64) =>
            {
                Ok(self.as_ptr().wrapping_add(r as usize))
            }
            _ => Err(FsError::Invalid(format!(
                "[{off}, +{len}) is not inside the view [{}, +{})",
                self.offset, self.len
            ))),
        }
    }

    /// Loads `buf.len()` bytes at file offset `off` through the view (as an
    /// application would: a lost page raises SIGBUS).
    pub fn read_at(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        let p = self.addr(off, buf.len())?;
        // SAFETY: the range lies inside the view, which stays mapped while
        // `self` lives; faults are resolved by the handler.
        unsafe { vm::copy_out(p, buf) };
        Ok(())
    }

    /// Stores `data` at file offset `off` through the view.
    pub fn write_at(&self, off: u64, data: &[u8]) -> Result<()> {
        if !self.shared.writable {
            return Err(FsError::PermissionDenied("the view is read-only".into()));
        }
        let p = self.addr(off, data.len())?;
        // SAFETY: as in `read_at`.
        unsafe { vm::copy_in(p, data) };
        Ok(())
    }

    /// Makes the stores to file range `[off, off + len)` durable (msync).
    pub fn msync(&self, off: u64, len: u64) -> Result<()> {
        let len = usize::try_from(len).map_err(|_| FsError::Invalid("length".into()))?;
        self.addr(off, len)?;
        let p0 = ((off - self.offset) / PAGE as u64) as usize;
        let p1 = ((off - self.offset) + len as u64).div_ceil(PAGE as u64) as usize;
        self.shared.flush(p0, p1.min(self.shared.npages));
        let dev = &*self.shared.dev;
        dev.fence();
        dev.take_persist_error()?;
        // The blocks store faults gave the file, committed lazily.
        self.file.fs.flush_lazy()
    }

    /// What the page holding file offset `off` shows now (None outside the
    /// view).
    pub fn page_state(&self, off: u64) -> Option<PageState> {
        self.addr(off, 1).ok()?;
        let p = ((off - self.offset) / PAGE as u64) as usize;
        let r = self.shared.pages[p].load(Ordering::Acquire);
        let in_page = off % PAGE as u64;
        Some(match kind(r) {
            K_ZERO => PageState::Zero,
            K_RO => PageState::ReadOnly {
                device_offset: block(r) * BS + in_page,
            },
            K_RW => PageState::Writable {
                device_offset: block(r) * BS + in_page,
            },
            K_EOF => PageState::PastEof,
            K_LOST => PageState::Lost,
            _ => PageState::Unmapped,
        })
    }

    /// The device offset the view maps file offset `off` to now (None for
    /// zero pages and pages not mapped).
    pub fn device_offset(&self, off: u64) -> Option<u64> {
        match self.page_state(off)? {
            PageState::ReadOnly { device_offset } | PageState::Writable { device_offset } => {
                Some(device_offset)
            }
            _ => None,
        }
    }

    /// Calls `f` (from the thread that handles the report) when a media
    /// error destroys data this view maps, after its pages are revoked.
    pub fn on_media_error(&self, f: impl Fn(&LossNotice) + Send + Sync + 'static) {
        *lock(&self.shared.callback) = Some(Arc::new(f));
    }

    /// The media-error notices for this view since the last call.
    pub fn take_media_errors(&self) -> Vec<LossNotice> {
        std::mem::take(&mut *lock(&self.shared.notices))
    }

    /// Whether a store fault may give the file a whole 2 MiB group (a copy
    /// on write of a huge page) where the extent allows; on by default.
    pub fn set_huge_faults(&self, on: bool) {
        self.shared.huge_faults.store(on, Ordering::Relaxed);
    }

    /// Gives the calling thread what resolving its faults on views in the
    /// thread itself needs (an alternate signal stack of 256 KiB). The
    /// thread that maps a view gets it; other threads that fault on views
    /// should call this first, or their faults go to resolver threads (a
    /// few times slower).
    pub fn prepare_thread() -> Result<()> {
        daxfs_device::fault::ensure_alt_stack()
            .map_err(|e| FsError::Io(format!("alternate signal stack: {e}")))
    }

    /// Whether faults on views may be resolved on the faulting thread, in
    /// its signal handler (process-wide; on by default). Turn it off when the
    /// application may fault on a view while holding a lock that resolving
    /// needs: a global allocator keeping its heap in a view, or views
    /// touched from the application's own signal handlers running on the
    /// ordinary stack (which may have interrupted the allocator); faults
    /// then all go to resolver threads.
    pub fn set_in_thread_faults(on: bool) {
        resolver::set_enabled(on);
    }

    /// Faults resolved on their own thread and faults handed to resolver
    /// threads since the process started (all views).
    pub fn fault_counts() -> (u64, u64) {
        resolver::counts()
    }

    /// Runs `f` as if the thread were inside daxfs (holding its locks): the
    /// faults it takes go to the resolver threads. Not part of the API.
    #[doc(hidden)]
    #[cfg(any(test, feature = "testing"))]
    pub fn as_if_inside_daxfs_for_test<R>(f: impl FnOnce() -> R) -> R {
        let _inside = inside();
        f()
    }

    /// The view's counters.
    pub fn stats(&self) -> ViewStats {
        let s = &*self.shared;
        ViewStats {
            faults: s.faults.load(Ordering::Relaxed),
            in_thread: s.in_thread.load(Ordering::Relaxed),
            block_faults: s.block_faults.load(Ordering::Relaxed),
            remaps: s.remaps.load(Ordering::Relaxed),
            errors: s.errors.load(Ordering::Relaxed),
        }
    }
}
