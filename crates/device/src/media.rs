//! Media errors: the set of bad ranges of a device, and who hears of them.
//!
//! # The model
//!
//! A device's media may go bad in units of [`BAD_BLOCK_SIZE`] (4 KiB pages).
//! A bad page cannot be read through any path of the device layer: the
//! emulated devices make it inaccessible in their own mapping (`PROT_NONE`),
//! and every access of device memory goes through the machine-check-safe
//! routines, which turn the resulting fault (or, on real persistent memory,
//! the SIGBUS of a machine check) into [`DeviceError::Media`] naming the
//! page. Stores into a bad page fail with the same error. The only way to
//! make a bad page good again is the recovery write,
//! [`Device::clear_error`](crate::Device::clear_error): writing whole bad
//! pages stores the data, persists it and clears them, as the pmem driver's
//! recovery write does.
//!
//! Media errors arrive in four ways, and every arrival is a *report*:
//!
//! | arrival                                                  | flags            |
//! |----------------------------------------------------------|------------------|
//! | [`Device::inject_error`](crate::Device::inject_error)    | background       |
//! | [`Device::import_bad_ranges`](crate::Device::import_bad_ranges) | background |
//! | the device's list at open (sidecar file, sysfs)          | background, delivered by [`Device::set_holder`](crate::Device::set_holder) |
//! | a fault met by a read or write                           | action required  |
//! | [`Device::remove`](crate::Device::remove)                | pre-remove, `(0, u64::MAX)` |
//!
//! Only pages that were not bad already are reported (a read of a page
//! known to be bad just fails).
//!
//! # Who is told
//!
//! A device has at most one [`Holder`] (the mounted file system). With a
//! holder, every report goes to [`Holder::notify_failure`] and nowhere
//! else. Without one, the device tells the owners of its raw mappings
//! ([`RawMapping`](crate::RawMapping), the device-DAX style users): the
//! overlapping pages are revoked in their mappings (touching them raises
//! SIGBUS `BUS_MCEERR_AR`) and their callbacks run. The two paths stay
//! separate: a holder is never bypassed in favour of raw mappings, and raw
//! mappings are never revoked on a holder's behalf.
//!
//! # Locking rule
//!
//! Reports are delivered with no lock of the device held, so a holder or a
//! raw-mapping callback may call back into the device (read, write,
//! `clear_error`, `bad_ranges`, even `inject_error`). In exchange:
//! notifications may arrive concurrently from several threads, possibly for
//! overlapping ranges, and a report that started before
//! [`Device::clear_holder`](crate::Device::clear_holder) returned may still
//! reach the old holder afterwards.
//!
//! # Invariants
//!
//! - The bad set holds page-aligned ranges, merged and sorted, never past
//!   the device's last page; reports and listings clamp them to the device
//!   length.
//! - A page is added to the set *before* it is made inaccessible and made
//!   accessible *before* it leaves the set, so a fault on a page of an
//!   emulated device always finds it in the set (unless it was made
//!   inaccessible behind the device's back, which then counts as a newly
//!   found error).
//! - `checked` is set once a bad page could not be made inaccessible (a
//!   device without the means, or a failed `mprotect`); from then on reads
//!   consult the set before copying.
//! - Lock order: `state` may be held while the device writes, persists or
//!   changes page protection; `holder` and `raw` are only held to clone or
//!   update their contents.
use crate::raw::RawShared;
use crate::{DeviceError, Result, check_range};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

/// The unit of media errors: a bad range always covers whole 4 KiB pages.
pub const BAD_BLOCK_SIZE: u64 = 4096;

/// What kind of report a [`Holder`] receives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FailureFlags {
    /// A reader or writer met the error and waits on it (the access failed
    /// with [`DeviceError::Media`]); false for errors found in the
    /// background (injected, imported, listed at open).
    pub action_required: bool,
    /// The device is about to be removed; the range is the whole device,
    /// `(0, u64::MAX)`.
    pub pre_remove: bool,
}

impl FailureFlags {
    /// Found in the background.
    pub const BACKGROUND: FailureFlags = FailureFlags {
        action_required: false,
        pre_remove: false,
    };
    /// Met by an access.
    pub const ACTION_REQUIRED: FailureFlags = FailureFlags {
        action_required: true,
        pre_remove: false,
    };
    /// The device is going away.
    pub const PRE_REMOVE: FailureFlags = FailureFlags {
        action_required: false,
        pre_remove: true,
    };
}

/// A holder's refusal or failure to handle a report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotifyError(pub String);

/// The one owner of a device that is told about its media errors (the
/// mounted file system).
///
/// See the [module documentation](self) for when it is called and the
/// locking rule: it is called with no device lock held and may call back
/// into the device.
pub trait Holder: Send + Sync {
    /// Bytes `[off, off + len)` of the device are bad (page aligned, clamped
    /// to the device; `(0, u64::MAX)` with `pre_remove`). An error is handed
    /// back to whoever caused the report as [`DeviceError::Notify`] (the
    /// range stays bad either way).
    fn notify_failure(
        &self,
        off: u64,
        len: u64,
        flags: FailureFlags,
    ) -> std::result::Result<(), NotifyError>;
}

/// What the owner of a [`RawMapping`](crate::RawMapping) is told when part of
/// its mapping was revoked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RawFailure {
    /// Device offset of the revoked range.
    pub offset: u64,
    /// Its length in bytes.
    pub len: u64,
    /// The same range as an offset into the mapping.
    pub map_offset: usize,
    /// The kind of report.
    pub flags: FailureFlags,
}

/// A set of disjoint half-open ranges `[start, end)`, merged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RangeSet {
    map: BTreeMap<u64, u64>,
}

impl RangeSet {
    /// Adds `[a, b)`; returns the parts that were not in the set before.
    pub(crate) fn insert(&mut self, a: u64, b: u64) -> Vec<(u64, u64)> {
        if a >= b {
            return Vec::new();
        }
        let mut fresh = Vec::new();
        let mut cur = a;
        for (s, e) in self.overlapping(a, b) {
            if s > cur {
                fresh.push((cur, s));
            }
            cur = cur.max(e);
        }
        if cur < b {
            fresh.push((cur, b));
        }
        // Merge with everything overlapping or touching [a, b).
        let mut lo = a;
        let mut hi = b;
        let touching: Vec<(u64, u64)> = self
            .map
            .range(..=b)
            .rev()
            .take_while(|&(_, &e)| e >= a)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in touching {
            lo = lo.min(s);
            hi = hi.max(e);
            self.map.remove(&s);
        }
        self.map.insert(lo, hi);
        fresh
    }

    /// Removes `[a, b)`.
    pub(crate) fn remove(&mut self, a: u64, b: u64) {
        if a >= b {
            return;
        }
        for (s, e) in self.overlapping(a, b) {
            self.map.remove(&s);
            if s < a {
                self.map.insert(s, a);
            }
            if e > b {
                self.map.insert(b, e);
            }
        }
    }

    /// The ranges of the set overlapping `[a, b)`, whole, in order.
    pub(crate) fn overlapping(&self, a: u64, b: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        if a >= b {
            return out;
        }
        if let Some((&s, &e)) = self.map.range(..a).next_back()
            && e > a
        {
            out.push((s, e));
        }
        out.extend(self.map.range(a..b).map(|(&s, &e)| (s, e)));
        out
    }

    /// The first range that overlaps `[a, b)`, without collecting the rest
    /// (every store checks this while the device has bad pages).
    pub(crate) fn first_overlapping(&self, a: u64, b: u64) -> Option<(u64, u64)> {
        if a >= b {
            return None;
        }
        if let Some((&s, &e)) = self.map.range(..a).next_back()
            && e > a
        {
            return Some((s, e));
        }
        self.map.range(a..b).next().map(|(&s, &e)| (s, e))
    }

    /// All ranges, in order.
    pub(crate) fn ranges(&self) -> Vec<(u64, u64)> {
        self.map.iter().map(|(&s, &e)| (s, e)).collect()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// What a device lends its [`Media`] to act on its memory.
pub(crate) trait Medium {
    /// Makes the whole pages `[off, off + len)` inaccessible in the device's
    /// own memory, or accessible again. Returns false when the device cannot
    /// (then reads check the set instead).
    fn set_access(&self, off: u64, len: u64, accessible: bool) -> bool;
    /// Stores `data` at `off` without consulting the bad set (the pages were
    /// made accessible first).
    fn write_through(&self, off: u64, data: &[u8]) -> Result<()>;
    /// Makes `[off, off + len)` durable.
    fn persist_range(&self, off: u64, len: u64);
}

struct State {
    bad: RangeSet,
}

/// One bit per page of the device, set while the page is bad: the check
/// before every access tests a few bits instead of taking the lock and
/// searching the set. Made at the first bad page; bits change only with
/// `state` locked (a stale set bit only sends a check to the set).
struct PageBits(Box<[AtomicU64]>);

impl PageBits {
    fn new(len: u64) -> PageBits {
        let pages = len.div_ceil(BAD_BLOCK_SIZE);
        PageBits((0..pages.div_ceil(64)).map(|_| AtomicU64::new(0)).collect())
    }

    /// Sets (or clears) the bits of pages `[a, b)` (byte offsets, page aligned).
    fn set(&self, a: u64, b: u64, bad: bool) {
        for p in a / BAD_BLOCK_SIZE..b.div_ceil(BAD_BLOCK_SIZE) {
            if let Some(w) = self.0.get((p / 64) as usize) {
                let bit = 1u64 << (p % 64);
                if bad {
                    w.fetch_or(bit, Ordering::Release);
                } else {
                    w.fetch_and(!bit, Ordering::Release);
                }
            }
        }
    }

    /// True when a page of `[a, b)` (byte offsets, page aligned) may be bad.
    fn any(&self, a: u64, b: u64) -> bool {
        let (p0, p1) = (a / BAD_BLOCK_SIZE, b.div_ceil(BAD_BLOCK_SIZE));
        if p0 >= p1 {
            return false;
        }
        let (w0, w1) = (p0 / 64, (p1 - 1) / 64);
        (w0..=w1).any(|w| {
            let lo = if w == w0 { p0 % 64 } else { 0 };
            let hi = if w == w1 { (p1 - 1) % 64 } else { 63 };
            let mask = (u64::MAX >> (63 - hi)) & (u64::MAX << lo);
            self.0
                .get(w as usize)
                .is_some_and(|x| x.load(Ordering::Acquire) & mask != 0)
        })
    }
}

/// The media-error state of one device. See the module documentation.
pub(crate) struct Media {
    len: u64,
    state: Mutex<State>,
    any_bad: AtomicBool,
    bits: std::sync::OnceLock<PageBits>,
    checked: AtomicBool,
    holder: Mutex<Option<Arc<dyn Holder>>>,
    raw: Mutex<Vec<Weak<RawShared>>>,
    sidecar: Option<PathBuf>,
}

impl std::fmt::Debug for Media {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Media")
            .field("bad", &self.bad_ranges())
            .field("holder", &lock(&self.holder).is_some())
            .field("sidecar", &self.sidecar)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn round_out(off: u64, len: u64) -> (u64, u64) {
    let a = off / BAD_BLOCK_SIZE * BAD_BLOCK_SIZE;
    let b = off.saturating_add(len).div_ceil(BAD_BLOCK_SIZE) * BAD_BLOCK_SIZE;
    (a, b)
}

impl Media {
    /// No bad pages. `sidecar` is the file the list is kept in, if any.
    pub(crate) fn new(len: u64, sidecar: Option<PathBuf>) -> Media {
        Media {
            len,
            state: Mutex::new(State {
                bad: RangeSet::default(),
            }),
            any_bad: AtomicBool::new(false),
            bits: std::sync::OnceLock::new(),
            checked: AtomicBool::new(!crate::mcsafe::RECOVERS),
            holder: Mutex::new(None),
            raw: Mutex::new(Vec::new()),
            sidecar,
        }
    }

    /// `[a, b)` clamped to the device.
    fn clamp(&self, a: u64, b: u64) -> (u64, u64) {
        (a, b.min(self.len).max(a))
    }

    /// The error for the bad page at `page`.
    pub(crate) fn page_error(&self, page: u64) -> DeviceError {
        let (off, end) = self.clamp(page, page + BAD_BLOCK_SIZE);
        DeviceError::Media {
            off,
            len: end - off,
        }
    }

    /// Page-rounded `[off, off + len)`, checked to lie in the device.
    fn pages(&self, off: u64, len: u64) -> Result<(u64, u64)> {
        check_range(off, len, self.len)?;
        Ok(round_out(off, len))
    }

    /// The first bad page overlapping `[off, off + len)`, as an error.
    fn first_bad(&self, off: u64, len: u64) -> Result<()> {
        let (a, b) = round_out(off, len);
        let s = lock(&self.state);
        match s.bad.first_overlapping(a, b) {
            Some((s0, _)) => Err(self.page_error(s0.max(a))),
            None => Ok(()),
        }
    }

    /// Before a read: fails with [`DeviceError::Media`] if the range holds a
    /// bad page and the device relies on the set (pages it could not make
    /// inaccessible). Otherwise the copy's fault does the job.
    #[inline]
    pub(crate) fn check_read(&self, off: u64, len: u64) -> Result<()> {
        if len == 0
            || !self.any_bad.load(Ordering::Acquire)
            || !self.checked.load(Ordering::Acquire)
        {
            return Ok(());
        }
        self.check_slow(off, len)
    }

    #[cold]
    #[inline(never)]
    fn check_slow(&self, off: u64, len: u64) -> Result<()> {
        check_range(off, len, self.len)?;
        let (a, b) = round_out(off, len);
        if self.bits.get().is_some_and(|bits| !bits.any(a, b)) {
            return Ok(());
        }
        self.first_bad(off, len)
    }

    /// Before a store: fails with [`DeviceError::Media`] if the range holds
    /// a bad page, so that a refused store changes nothing.
    #[inline]
    pub(crate) fn check_write(&self, off: u64, len: u64) -> Result<()> {
        if len == 0 || !self.any_bad.load(Ordering::Acquire) {
            return Ok(());
        }
        self.check_slow(off, len)
    }

    /// Merged, sorted bad ranges in bytes, clamped to the device.
    pub(crate) fn bad_ranges(&self) -> Vec<(u64, u64)> {
        let s = lock(&self.state);
        s.bad
            .ranges()
            .into_iter()
            .map(|(a, b)| {
                let (a, b) = self.clamp(a, b);
                (a, b - a)
            })
            .collect()
    }

    /// Marks `[a, b)` (page aligned) bad: adds it to the set, then makes the
    /// new pages inaccessible. Returns the new pieces. Called with `state`
    /// locked.
    fn mark(&self, s: &mut State, m: &dyn Medium, a: u64, b: u64) -> Vec<(u64, u64)> {
        let fresh = s.bad.insert(a, b);
        let bits = self.bits.get_or_init(|| PageBits::new(self.len));
        for &(x, y) in &fresh {
            bits.set(x, y, true);
        }
        self.any_bad.store(true, Ordering::Release);
        for &(x, y) in &fresh {
            if !crate::mcsafe::RECOVERS || !m.set_access(x, y - x, false) {
                self.checked.store(true, Ordering::Release);
            }
        }
        fresh
    }

    /// Rewrites the sidecar file, if any. Called with `state` locked.
    fn save(&self, s: &State) -> Result<()> {
        match &self.sidecar {
            None => Ok(()),
            Some(p) => {
                let ranges: Vec<_> = s
                    .bad
                    .ranges()
                    .into_iter()
                    .map(|(a, b)| {
                        let (a, b) = self.clamp(a, b);
                        (a, b - a)
                    })
                    .collect();
                crate::badblocks::write_sidecar(p, &ranges)
            }
        }
    }

    /// The device's list at open: marks the ranges bad without reporting
    /// them (nobody is listening yet; [`Media::set_holder`] delivers them).
    /// Ranges must lie in the device.
    pub(crate) fn load(&self, m: &dyn Medium, ranges: &[(u64, u64)]) -> Result<()> {
        for &(off, len) in ranges {
            self.pages(off, len)?;
        }
        let mut s = lock(&self.state);
        for &(off, len) in ranges {
            let (a, b) = round_out(off, len);
            self.mark(&mut s, m, a, b);
        }
        Ok(())
    }

    /// Marks the ranges bad (all are checked first) and reports the pages
    /// that were not bad already, with `flags`.
    pub(crate) fn add(
        &self,
        m: &dyn Medium,
        ranges: &[(u64, u64)],
        flags: FailureFlags,
    ) -> Result<()> {
        let mut pages = Vec::with_capacity(ranges.len());
        for &(off, len) in ranges {
            if len > 0 {
                pages.push(self.pages(off, len)?);
            }
        }
        if pages.is_empty() {
            return Ok(());
        }
        let (fresh, saved) = {
            let mut s = lock(&self.state);
            let mut fresh = RangeSet::default();
            for (a, b) in pages {
                for (x, y) in self.mark(&mut s, m, a, b) {
                    fresh.insert(x, y);
                }
            }
            let saved = if fresh.is_empty() {
                Ok(())
            } else {
                self.save(&s)
            };
            (fresh, saved)
        };
        let mut result = Ok(());
        for (a, b) in fresh.ranges() {
            let (a, b) = self.clamp(a, b);
            let r = self.report(a, b - a, flags);
            if result.is_ok() {
                result = r;
            }
        }
        saved.and(result)
    }

    /// A latent error: the pages go bad in the device's own memory but are
    /// neither recorded nor reported, as poison nobody has touched yet. The
    /// first access finds them ([`Media::fault`]).
    pub(crate) fn add_latent(&self, m: &dyn Medium, off: u64, len: u64) -> Result<()> {
        let (a, b) = self.pages(off, len)?;
        if !crate::mcsafe::RECOVERS || !m.set_access(a, b - a, false) {
            return Err(DeviceError::Unsupported(
                "this device cannot hide pages, so it cannot hold latent errors".into(),
            ));
        }
        Ok(())
    }

    /// A guarded access of the device faulted at device offset `off`: the
    /// page is bad. If it was not known, it is recorded (and made
    /// inaccessible) and reported with action required before this returns.
    /// Returns the error for the access.
    pub(crate) fn fault(&self, m: &dyn Medium, off: u64) -> DeviceError {
        let page = off / BAD_BLOCK_SIZE * BAD_BLOCK_SIZE;
        debug_assert!(page < self.len, "fault past the end of the device");
        let fresh = {
            let mut s = lock(&self.state);
            let fresh = self.mark(&mut s, m, page, page + BAD_BLOCK_SIZE);
            if !fresh.is_empty() {
                // The access fails with a media error whatever the sidecar
                // write gives; the next write or open repeats it.
                let _ = self.save(&s);
            }
            !fresh.is_empty()
        };
        if fresh {
            let (a, b) = self.clamp(page, page + BAD_BLOCK_SIZE);
            let _ = self.report(a, b - a, FailureFlags::ACTION_REQUIRED);
        }
        self.page_error(page)
    }

    /// Turns an error of a guarded access into the device's answer: a
    /// [`DeviceError::Media`] fault goes through [`Media::fault`].
    #[cold]
    #[inline(never)]
    pub(crate) fn access_error(&self, m: &dyn Medium, e: DeviceError) -> DeviceError {
        match e {
            DeviceError::Media { off, .. } => self.fault(m, off),
            e => e,
        }
    }

    /// The recovery write: stores `data` at `off` and persists it; bad pages
    /// inside the range must be covered whole and become good.
    pub(crate) fn clear(&self, m: &dyn Medium, off: u64, data: &[u8]) -> Result<()> {
        let len = data.len() as u64;
        check_range(off, len, self.len)?;
        if len == 0 {
            return Ok(());
        }
        let end = off + len;
        let (a, b) = round_out(off, len);
        let cleared = {
            let mut s = lock(&self.state);
            let mut cleared = Vec::new();
            for (x, y) in s.bad.overlapping(a, b) {
                let (x, y) = (x.max(a), y.min(b));
                let mut p = x;
                while p < y {
                    let page_end = (p + BAD_BLOCK_SIZE).min(self.len);
                    if p < off || page_end > end {
                        return Err(self.page_error(p));
                    }
                    p += BAD_BLOCK_SIZE;
                }
                cleared.push((x, y));
            }
            for &(x, y) in &cleared {
                if crate::mcsafe::RECOVERS {
                    m.set_access(x, y - x, true);
                }
            }
            let written = m.write_through(off, data);
            if let Err(e) = written {
                // Put the protection back: the pages are still bad.
                for &(x, y) in &cleared {
                    if crate::mcsafe::RECOVERS {
                        m.set_access(x, y - x, false);
                    }
                }
                return Err(e);
            }
            m.persist_range(off, len);
            for &(x, y) in &cleared {
                s.bad.remove(x, y);
                if let Some(bits) = self.bits.get() {
                    bits.set(x, y, false);
                }
            }
            self.any_bad.store(!s.bad.is_empty(), Ordering::Release);
            if !cleared.is_empty() {
                self.save(&s)?;
            }
            cleared
        };
        for (x, y) in cleared {
            for r in self.raw_mappings() {
                r.restore(x, y - x);
            }
        }
        Ok(())
    }

    /// Installs `holder` (at most one) and delivers the ranges already bad
    /// to it, as background reports.
    pub(crate) fn set_holder(&self, holder: Arc<dyn Holder>) -> Result<()> {
        {
            let mut h = lock(&self.holder);
            if h.is_some() {
                return Err(DeviceError::HolderBusy);
            }
            *h = Some(holder.clone());
        }
        let mut result = Ok(());
        for (off, len) in self.bad_ranges() {
            if let Err(e) = holder.notify_failure(off, len, FailureFlags::BACKGROUND)
                && result.is_ok()
            {
                result = Err(DeviceError::Notify {
                    off,
                    len,
                    reason: e.0,
                });
            }
        }
        result
    }

    /// Removes and returns the holder.
    pub(crate) fn clear_holder(&self) -> Option<Arc<dyn Holder>> {
        lock(&self.holder).take()
    }

    /// The device is about to go away.
    pub(crate) fn remove(&self) -> Result<()> {
        self.report(0, u64::MAX, FailureFlags::PRE_REMOVE)
    }

    /// Delivers one report: to the holder if there is one, else to the raw
    /// mappings. No lock is held during the calls.
    fn report(&self, off: u64, len: u64, flags: FailureFlags) -> Result<()> {
        let holder = lock(&self.holder).clone();
        match holder {
            Some(h) => h
                .notify_failure(off, len, flags)
                .map_err(|e| DeviceError::Notify {
                    off,
                    len,
                    reason: e.0,
                }),
            None => {
                for r in self.raw_mappings() {
                    r.revoke(off, len, flags);
                }
                Ok(())
            }
        }
    }

    /// The live raw mappings (dropping the dead ones from the list).
    fn raw_mappings(&self) -> Vec<Arc<RawShared>> {
        let mut list = lock(&self.raw);
        list.retain(|w| w.strong_count() > 0);
        list.iter().filter_map(Weak::upgrade).collect()
    }

    /// Adds a raw mapping to those told about errors when there is no holder,
    /// and revokes its pages that are bad already.
    pub(crate) fn add_raw(&self, r: &Arc<RawShared>) {
        lock(&self.raw).push(Arc::downgrade(r));
        for (off, len) in self.bad_ranges() {
            r.revoke_silently(off, len);
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn page_bits_match_a_model() {
        let pages = 300u64;
        let bits = PageBits::new(pages * BAD_BLOCK_SIZE);
        let mut model = vec![false; pages as usize];
        let mut x = 12345u64;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let a = x % pages;
            let b = (a + 1 + (x >> 20) % 70).min(pages);
            if x & (1 << 40) != 0 {
                let bad = x & (1 << 41) != 0;
                bits.set(a * BAD_BLOCK_SIZE, b * BAD_BLOCK_SIZE, bad);
                model[a as usize..b as usize].fill(bad);
            } else {
                let want = model[a as usize..b as usize].iter().any(|&m| m);
                assert_eq!(
                    bits.any(a * BAD_BLOCK_SIZE, b * BAD_BLOCK_SIZE),
                    want,
                    "[{a}, {b})"
                );
            }
        }
        assert!(!bits.any(5 * BAD_BLOCK_SIZE, 5 * BAD_BLOCK_SIZE));
    }

    use super::*;

    #[test]
    fn range_set() {
        let mut s = RangeSet::default();
        assert_eq!(s.insert(10, 20), [(10, 20)]);
        assert_eq!(s.insert(30, 40), [(30, 40)]);
        assert_eq!(s.insert(15, 35), [(20, 30)]);
        assert_eq!(s.ranges(), [(10, 40)]);
        assert_eq!(s.insert(40, 50), [(40, 50)]);
        assert_eq!(s.ranges(), [(10, 50)], "touching ranges merge");
        assert!(s.insert(12, 13).is_empty());
        assert_eq!(s.insert(0, 60), [(0, 10), (50, 60)]);
        s.remove(20, 30);
        assert_eq!(s.ranges(), [(0, 20), (30, 60)]);
        assert_eq!(s.overlapping(19, 31), [(0, 20), (30, 60)]);
        assert_eq!(s.overlapping(20, 30), []);
        s.remove(0, 100);
        assert!(s.is_empty());
        assert!(s.insert(5, 5).is_empty());
        s.insert(100, 200);
        s.insert(300, 400);
        s.insert(500, 600);
        assert_eq!(s.insert(150, 550), [(200, 300), (400, 500)]);
        assert_eq!(s.ranges(), [(100, 600)]);
    }

    #[test]
    fn rounding() {
        assert_eq!(round_out(0, 1), (0, 4096));
        assert_eq!(round_out(4095, 2), (0, 8192));
        assert_eq!(round_out(4096, 4096), (4096, 8192));
        assert_eq!(round_out(5000, 0), (4096, 8192));
    }
}
