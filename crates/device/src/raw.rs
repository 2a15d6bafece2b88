//! Raw mappings of device ranges, for device-DAX style users that map the
//! device directly, with no file system in between.
//!
//! The owner of a [`RawMapping`] is told about media errors in its range
//! when the device has no [`Holder`](crate::Holder): the device revokes the
//! bad pages in the mapping (they become inaccessible; touching one raises
//! SIGBUS with `si_code = BUS_MCEERR_AR` and `si_addr` the address touched,
//! as the kernel reports consumed poison) and runs the owner's callback.
//! Pages already bad when the mapping is made are revoked from the start;
//! pages cleared by a recovery write become accessible again.
//!
//! # Invariants
//!
//! - The revoked bit of a page is set before the page is made inaccessible
//!   and cleared after it is made accessible again, so the fault handler
//!   (which reads only the bits) never turns a fault on a page it does not
//!   know into SIGBUS, and never misses a revoked one.
//! - The range handler is unregistered before the mapping is unmapped
//!   (field order of [`RawMapping`]).
use crate::fault::{Fault, FaultAction, RangeRegistration};
use crate::media::{BAD_BLOCK_SIZE, FailureFlags, RawFailure};
use crate::mmap::Mapping;
use crate::{DeviceError, Result};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

type RawCallback = Arc<dyn Fn(&RawFailure) + Send + Sync>;

/// The part of a raw mapping the device keeps a (weak) reference to.
pub(crate) struct RawShared {
    map: Mapping,
    dev_off: u64,
    revoked: Box<[AtomicU64]>,
    callback: Mutex<Option<RawCallback>>,
}

impl RawShared {
    fn pages(&self) -> u64 {
        (self.map.len() as u64).div_ceil(BAD_BLOCK_SIZE)
    }

    fn is_revoked(&self, page: u64) -> bool {
        page < self.pages()
            && self.revoked[(page / 64) as usize].load(Ordering::Acquire) >> (page % 64) & 1 == 1
    }

    fn set_bits(&self, first: u64, end: u64, on: bool) {
        for p in first..end {
            let (w, bit) = ((p / 64) as usize, 1u64 << (p % 64));
            if on {
                self.revoked[w].fetch_or(bit, Ordering::AcqRel);
            } else {
                self.revoked[w].fetch_and(!bit, Ordering::AcqRel);
            }
        }
    }

    /// The pages of the mapping overlapping device range `[off, off + len)`,
    /// as mapping page indexes `[first, end)`.
    fn overlap(&self, off: u64, len: u64) -> Option<(u64, u64)> {
        let map_end = self.dev_off + self.map.len() as u64;
        let a = off.max(self.dev_off);
        let b = off.saturating_add(len).min(map_end);
        if a >= b {
            return None;
        }
        Some((
            (a - self.dev_off) / BAD_BLOCK_SIZE,
            (b - self.dev_off).div_ceil(BAD_BLOCK_SIZE),
        ))
    }

    /// Revokes the overlap with `[off, off + len)`; returns it.
    fn revoke_pages(&self, off: u64, len: u64) -> Option<(u64, u64)> {
        let (first, end) = self.overlap(off, len)?;
        self.set_bits(first, end, true);
        // A mapping that cannot change protection (e.g. a device-DAX
        // alignment larger than a page) keeps the pages accessible; the
        // callback is still told.
        let _ = self.map.protect(
            first * BAD_BLOCK_SIZE,
            (end - first) * BAD_BLOCK_SIZE,
            false,
        );
        Some((first, end))
    }

    /// Revokes the pages overlapping `[off, off + len)` and tells the owner.
    pub(crate) fn revoke(&self, off: u64, len: u64, flags: FailureFlags) {
        let Some((first, end)) = self.revoke_pages(off, len) else {
            return;
        };
        let cb = self
            .callback
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(cb) = cb {
            let map_len = self.map.len() as u64;
            let map_off = first * BAD_BLOCK_SIZE;
            let map_end = (end * BAD_BLOCK_SIZE).min(map_len);
            cb(&RawFailure {
                offset: self.dev_off + map_off,
                len: map_end - map_off,
                map_offset: map_off as usize,
                flags,
            });
        }
    }

    /// Revokes without telling the owner (pages bad before it mapped them).
    pub(crate) fn revoke_silently(&self, off: u64, len: u64) {
        self.revoke_pages(off, len);
    }

    /// Makes the pages overlapping `[off, off + len)` accessible again.
    pub(crate) fn restore(&self, off: u64, len: u64) {
        let Some((first, end)) = self.overlap(off, len) else {
            return;
        };
        let _ = self
            .map
            .protect(first * BAD_BLOCK_SIZE, (end - first) * BAD_BLOCK_SIZE, true);
        self.set_bits(first, end, false);
    }

    fn on_fault(&self, f: &Fault) -> FaultAction {
        let base = self.map.as_ptr() as usize;
        let Some(rel) = f.addr.checked_sub(base) else {
            return FaultAction::NotMine;
        };
        if self.is_revoked(rel as u64 / BAD_BLOCK_SIZE) {
            FaultAction::Sigbus { addr: f.addr }
        } else {
            FaultAction::NotMine
        }
    }
}

/// A readable and writable mapping of a device range, for users that map
/// the device directly (device-DAX style); unmapped when dropped. It does not
/// borrow the device and may outlive it (the memory stays mapped).
///
/// Access the memory through [`RawMapping::as_ptr`] with raw pointers (never
/// `&`/`&mut`: the device and other mappings change it), or with the guarded
/// [`RawMapping::read`] and [`RawMapping::write`], which return
/// [`DeviceError::Media`] instead of raising SIGBUS on revoked pages.
pub struct RawMapping {
    // Declared first: unregistered before `shared` (the mapping) can go.
    registration: Option<RangeRegistration>,
    shared: Arc<RawShared>,
}

impl std::fmt::Debug for RawMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawMapping")
            .field("ptr", &self.shared.map.as_ptr())
            .field("len", &self.shared.map.len())
            .field("device_offset", &self.shared.dev_off)
            .finish()
    }
}

impl RawMapping {
    /// Wraps `map`, which maps device bytes from `dev_off`, and registers the
    /// fault handler that turns touches of revoked pages into SIGBUS.
    pub(crate) fn new(map: Mapping, dev_off: u64) -> Result<(RawMapping, Arc<RawShared>)> {
        let words = (map.len() as u64).div_ceil(BAD_BLOCK_SIZE).div_ceil(64) as usize;
        let shared = Arc::new(RawShared {
            map,
            dev_off,
            revoked: (0..words).map(|_| AtomicU64::new(0)).collect(),
            callback: Mutex::new(None),
        });
        let for_handler = shared.clone();
        let registration = crate::fault::register_range_handler(
            shared.map.as_ptr() as usize,
            shared.map.len(),
            move |f: &Fault| for_handler.on_fault(f),
        )
        .map_err(|e| DeviceError::Unsupported(format!("raw mapping: {e}")))?;
        Ok((
            RawMapping {
                registration: Some(registration),
                shared: shared.clone(),
            },
            shared,
        ))
    }

    /// The first byte of the mapping. Valid for [`RawMapping::len`] bytes
    /// while the mapping lives.
    pub fn as_ptr(&self) -> *mut u8 {
        self.shared.map.as_ptr()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.shared.map.len()
    }

    /// True for an empty mapping (never: mappings are not empty).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The device offset of the first byte.
    pub fn device_offset(&self) -> u64 {
        self.shared.dev_off
    }

    /// Sets the function told about revocations (replacing any earlier one).
    /// It runs on the thread that caused the report, in ordinary context
    /// (not in a signal handler), with no device lock held.
    pub fn set_failure_callback(&self, callback: impl Fn(&RawFailure) + Send + Sync + 'static) {
        *self
            .shared
            .callback
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(callback));
    }

    /// The revoked ranges as `(map_offset, len)`, merged and sorted.
    pub fn revoked(&self) -> Vec<(usize, usize)> {
        let mut out: Vec<(usize, usize)> = Vec::new();
        let page = BAD_BLOCK_SIZE as usize;
        for p in 0..self.shared.pages() {
            if self.shared.is_revoked(p) {
                let at = p as usize * page;
                let len = page.min(self.len() - at);
                match out.last_mut() {
                    Some((s, l)) if *s + *l == at => *l += len,
                    _ => out.push((at, len)),
                }
            }
        }
        out
    }

    /// Copies `buf.len()` bytes at mapping offset `off` into `buf`, through
    /// the machine-check-safe copy: a revoked page gives
    /// [`DeviceError::Media`] with the *device* offset of the page.
    pub fn read(&self, off: usize, buf: &mut [u8]) -> Result<()> {
        self.check_revoked(off, buf.len())?;
        self.shared
            .map
            .read(off as u64, buf)
            .map_err(|e| self.to_device(e))
    }

    /// Copies `data` to mapping offset `off`, guarded like
    /// [`RawMapping::read`].
    pub fn write(&self, off: usize, data: &[u8]) -> Result<()> {
        self.check_revoked(off, data.len())?;
        self.shared
            .map
            .write(off as u64, data)
            .map_err(|e| self.to_device(e))
    }

    /// Where faults are not recovered (targets other than x86_64), revoked
    /// pages are refused before the copy; elsewhere the copy's fault does it.
    fn check_revoked(&self, off: usize, len: usize) -> Result<()> {
        if crate::mcsafe::RECOVERS || len == 0 {
            return Ok(());
        }
        let first = off as u64 / BAD_BLOCK_SIZE;
        let end = (off as u64)
            .saturating_add(len as u64)
            .div_ceil(BAD_BLOCK_SIZE);
        match (first..end).find(|&p| self.shared.is_revoked(p)) {
            Some(p) => Err(DeviceError::Media {
                off: self.shared.dev_off + p * BAD_BLOCK_SIZE,
                len: BAD_BLOCK_SIZE.min(self.len() as u64 - p * BAD_BLOCK_SIZE),
            }),
            None => Ok(()),
        }
    }

    fn to_device(&self, e: DeviceError) -> DeviceError {
        match e {
            DeviceError::Media { off, len } => DeviceError::Media {
                off: off + self.shared.dev_off,
                len,
            },
            e => e,
        }
    }
}

impl Drop for RawMapping {
    fn drop(&mut self) {
        // Explicitly first, whatever the field order says.
        drop(self.registration.take());
    }
}
