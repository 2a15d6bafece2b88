//! The device layer: byte-addressable memory that daxfs reads and writes with
//! plain loads and stores, and makes durable with explicit persists.
//!
//! Everything above this crate sees only the [`Device`] trait. No caller ever
//! holds a reference into device memory: bytes move by copy in and copy out, so
//! another thread (or a user mapping) writing the same memory is never UB.
//!
//! # Devices
//!
//! - [`MmapDevice`]: an image file, a file on a DAX file system (mapped with
//!   `MAP_SYNC`), or a device-DAX character device, mapped shared.
//! - [`MemDevice`]: volatile process memory, for tests.
//! - [`CrashDevice`]: process memory that records what became durable when,
//!   and rebuilds the image a power failure would leave at any persist point.
//!
//! # Media errors
//!
//! Every device keeps a set of bad 4 KiB pages that cannot be read or
//! written; see the [`media`] module for the model, the [`Holder`] a file
//! system registers to hear of errors, and the reports it receives. Errors
//! are injected ([`Device::inject_error`]), imported from sysfs or ndctl
//! lists ([`Device::import_bad_ranges`], [`parse_bad_block_list`]), read at
//! open (an image's [`sidecar_path`] file, a device-DAX device's sysfs
//! `badblocks`), or met by an access. [`Device::clear_error`] is the recovery
//! write that clears them. The process-wide fault handler behind all this,
//! and its registration API for other clients, is the [`fault`] module.
//!
//! # Invariants
//!
//! - `unsafe` code lives only in the `mmap` module (mappings and raw copies),
//!   the `pmem` module (CPU feature detection and the store fence), the
//!   `mcsafe` module (the machine-check-safe access routines) and the
//!   [`fault`] module (the signal handler).
//! - Device memory is only ever touched through the machine-check-safe
//!   routines on a bounds-checked range ([`check_range`]); no `&`/`&mut` to
//!   it is formed.
//! - Every device is `Send + Sync`; concurrent accesses to disjoint ranges
//!   are fine. Concurrent accesses to overlapping ranges give unspecified
//!   bytes in the overlap (as the hardware would). Only
//!   [`Device::write_u64`] / [`Device::read_u64`] at 8-byte aligned offsets
//!   promise a single, untearable access.
mod badblocks;
mod crash;
pub mod fault;
mod file;
mod mcsafe;
pub mod media;
mod mem;
mod mmap;
mod pmem;
mod raw;
#[cfg(test)]
mod tests_media;

pub use badblocks::{
    SECTOR_SIZE, devdax_badblocks, format_sysfs_badblocks, parse_bad_block_list,
    parse_ndctl_badblocks, parse_sysfs_badblocks, sidecar_path,
};
pub use crash::{CrashDevice, CrashReplay, Subset};
pub use file::{DeviceKind, MapSource, MapSyncPolicy, MmapDevice, OpenOptions, create_image_file};
pub use media::{BAD_BLOCK_SIZE, FailureFlags, Holder, NotifyError, RawFailure};
pub use mem::MemDevice;
pub use pmem::{cache_line_size, detect_flush_instr, flush_instr_supported};
pub use raw::RawMapping;
use std::sync::Arc;

/// Granularity that sizes of image files and devices must be a multiple of.
pub const SIZE_GRANULE: u64 = 4096;

/// How stores become durable on this device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PersistMode {
    /// Cache-line flushes (CLWB, CLFLUSHOPT or CLFLUSH) and a store fence:
    /// the mapping is synchronous (MAP_SYNC, device DAX) or the user said the
    /// memory is persistent.
    CpuFlush(FlushInstr),
    /// `msync` of the touched pages: the mapping is an ordinary shared file
    /// mapping whose page cache must be written back.
    Msync,
    /// Volatile memory for tests: persist is a no-op beyond ordering.
    Volatile,
}

/// Which cache-line flush instruction is used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushInstr {
    /// `CLWB`: writes the line back and may keep it cached.
    Clwb,
    /// `CLFLUSHOPT`: writes back and invalidates, weakly ordered.
    Clflushopt,
    /// `CLFLUSH`: writes back and invalidates, ordered with other stores.
    Clflush,
}

impl std::fmt::Display for PersistMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PersistMode::CpuFlush(i) => write!(
                f,
                "cpu-flush ({})",
                match i {
                    FlushInstr::Clwb => "clwb",
                    FlushInstr::Clflushopt => "clflushopt",
                    FlushInstr::Clflush => "clflush",
                }
            ),
            PersistMode::Msync => write!(f, "msync"),
            PersistMode::Volatile => write!(f, "volatile"),
        }
    }
}

/// Errors of the device layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// An access past the end of the device.
    #[error("device access [{off:#x}, +{len:#x}) is past the end of the device ({size:#x} bytes)")]
    OutOfRange {
        /// Start of the access.
        off: u64,
        /// Length of the access.
        len: u64,
        /// Size of the device.
        size: u64,
    },
    /// The range holds poisoned memory: the bytes cannot be read.
    #[error("media error at device offset {off:#x} (+{len:#x})")]
    Media {
        /// Start of the bad range.
        off: u64,
        /// Length of the bad range.
        len: u64,
    },
    /// Another process or handle has the device open.
    #[error("{0} is already open by another daxfs instance")]
    Locked(String),
    /// An operating-system error, with what was being done.
    #[error("{what}: {source}")]
    Os {
        /// What was being done.
        what: String,
        /// The error the system reported.
        source: std::io::Error,
    },
    /// A device or image size that daxfs cannot use.
    #[error("invalid device size {size:#x}: {reason}")]
    InvalidSize {
        /// The refused size.
        size: u64,
        /// Why it is refused.
        reason: String,
    },
    /// The file or the platform lacks something that was asked for or needed.
    #[error("{0}")]
    Unsupported(String),
    /// [`Device::set_holder`] on a device that has a holder already.
    #[error("the device already has a holder")]
    HolderBusy,
    /// The holder failed to handle a media-error report (the range is bad
    /// either way).
    #[error("the holder could not handle the media error at {off:#x} (+{len:#x}): {reason}")]
    Notify {
        /// Start of the reported range.
        off: u64,
        /// Its length.
        len: u64,
        /// What the holder said.
        reason: String,
    },
    /// A malformed bad-block list.
    #[error("{origin}: {at}: {reason}")]
    BadBlockList {
        /// The file or source of the list.
        origin: String,
        /// Where in it: `line N`, `line N column M`, or a JSON element such
        /// as `[1].badblocks[0]`.
        at: String,
        /// What is wrong.
        reason: String,
    },
}

/// Results of the device layer.
pub type Result<T, E = DeviceError> = std::result::Result<T, E>;

/// Byte-addressable memory holding a daxfs file system.
///
/// Reads and writes copy between the caller's buffer and device memory; a
/// write is not durable until a [`Device::persist`] (or [`Device::flush`] then
/// [`Device::fence`]) that covers it returns.
pub trait Device: Send + Sync + std::fmt::Debug {
    /// Size in bytes.
    fn len(&self) -> u64;

    /// True when the device has no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies `buf.len()` bytes at `off` into `buf`. A poisoned byte in the
    /// range gives [`DeviceError::Media`] naming the bad range; no poisoned
    /// byte is ever copied.
    fn read(&self, off: u64, buf: &mut [u8]) -> Result<()>;

    /// Copies `data` to the device at `off`. Not durable until persisted.
    fn write(&self, off: u64, data: &[u8]) -> Result<()>;

    /// Sets `len` bytes at `off` to `byte`. Not durable until persisted.
    fn fill(&self, off: u64, len: u64, byte: u8) -> Result<()>;

    /// Stores `value` little-endian at `off`. When `off` is a multiple of 8
    /// the mapped devices make it one 8-byte atomic store, so a crash or a
    /// concurrent reader sees the old or the new value, never a mix (use it
    /// for commit words). Not durable until persisted.
    fn write_u64(&self, off: u64, value: u64) -> Result<()> {
        self.write(off, &value.to_le_bytes())
    }

    /// Loads the little-endian `u64` at `off`; one 8-byte atomic load when
    /// `off` is a multiple of 8 on the mapped devices.
    fn read_u64(&self, off: u64) -> Result<u64> {
        let mut b = [0u8; 8];
        self.read(off, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Starts writing back the cache lines of a range (no ordering promise).
    fn flush(&self, off: u64, len: u64);

    /// A hint that the range is about to be written: devices that reach
    /// their memory through a mapping populate its page tables now, in one
    /// system call, instead of taking a page fault at the first store to
    /// each page. Best effort; the default does nothing.
    fn prefault(&self, _off: u64, _len: u64) {}

    /// Waits until every flushed store is durable; orders later stores after.
    fn fence(&self);

    /// Makes a range durable: flush then fence.
    fn persist(&self, off: u64, len: u64) {
        self.flush(off, len);
        self.fence();
    }

    /// How persistence is achieved on this device.
    fn mode(&self) -> PersistMode;

    /// A short description for `daxfs info` (kind and path).
    fn describe(&self) -> String;

    /// Reports, once, a failure of an earlier [`Device::flush`] or
    /// [`Device::fence`] (which cannot return errors themselves), e.g. an
    /// `msync` that failed with `EIO`. After such a failure the device cannot
    /// promise that persisted data is durable.
    fn take_persist_error(&self) -> Result<()> {
        Ok(())
    }

    /// Emulates a media error: the 4 KiB pages overlapping `[off, off + len)`
    /// go bad (unreadable, unwritable except by [`Device::clear_error`]) and
    /// the pages that were not bad already are reported as found in the
    /// background: to the holder if there is one, else to the owners of raw
    /// mappings (see [`media`]). On image files the list is saved in the
    /// sidecar file. A holder's failure comes back as
    /// [`DeviceError::Notify`] (the pages are bad all the same).
    fn inject_error(&self, off: u64, len: u64) -> Result<()> {
        let _ = (off, len);
        Err(DeviceError::Unsupported(format!(
            "{} does not handle media errors",
            self.describe()
        )))
    }

    /// Emulates a latent error: the pages of `[off, off + len)` go bad
    /// without anyone being told, as poison that nothing has consumed yet.
    /// The first access through the device finds it: the page is recorded
    /// and reported with action required, and the access fails with
    /// [`DeviceError::Media`]. (Tests use it to hit a block between its
    /// allocation and its first write.)
    fn inject_latent_error(&self, off: u64, len: u64) -> Result<()> {
        let _ = (off, len);
        Err(DeviceError::Unsupported(format!(
            "{} does not handle media errors",
            self.describe()
        )))
    }

    /// Imports a list of bad byte ranges (e.g. from
    /// [`parse_bad_block_list`]): like [`Device::inject_error`] for each, but
    /// every range is checked against the device first (nothing changes if
    /// one is out of range) and each merged new range is reported once.
    fn import_bad_ranges(&self, ranges: &[(u64, u64)]) -> Result<()> {
        let _ = ranges;
        Err(DeviceError::Unsupported(format!(
            "{} does not handle media errors",
            self.describe()
        )))
    }

    /// Parses a bad-block list in the sysfs or ndctl JSON format (see
    /// [`parse_bad_block_list`]) and imports it; returns the byte ranges
    /// read. `origin` names the list in errors.
    fn import_bad_block_list(&self, text: &str, origin: &str) -> Result<Vec<(u64, u64)>> {
        let ranges = parse_bad_block_list(text, origin)?;
        self.import_bad_ranges(&ranges)?;
        Ok(ranges)
    }

    /// The bad ranges, in bytes: merged, sorted, 4 KiB aligned (the last
    /// clamped to the device).
    fn bad_ranges(&self) -> Vec<(u64, u64)> {
        Vec::new()
    }

    /// The recovery write: stores `data` at `off` and persists it (durable on
    /// return). Every bad 4 KiB page overlapping the range must be covered
    /// whole by it, and becomes good; a bad page covered only in part fails
    /// with [`DeviceError::Media`] naming it, and nothing is written. Good
    /// pages in the range are simply written.
    fn clear_error(&self, off: u64, data: &[u8]) -> Result<()> {
        self.write(off, data)?;
        self.persist(off, data.len() as u64);
        Ok(())
    }

    /// Makes `holder` the one owner told about media errors, and tells it at
    /// once about the ranges already bad (the device's list at open,
    /// earlier injections) as background reports. Fails with
    /// [`DeviceError::HolderBusy`] if there is a holder already. If the
    /// holder fails one of those first reports, it stays installed and the
    /// first failure is returned as [`DeviceError::Notify`].
    fn set_holder(&self, holder: Arc<dyn Holder>) -> Result<()> {
        let _ = holder;
        Err(DeviceError::Unsupported(format!(
            "{} does not handle media errors",
            self.describe()
        )))
    }

    /// Removes the holder and returns it. A report that started before may
    /// still reach it.
    fn clear_holder(&self) -> Option<Arc<dyn Holder>> {
        None
    }

    /// How to map device pages elsewhere (file-system mmap views), or None
    /// when the device memory cannot be mapped a second time.
    fn view_source(&self) -> Option<MapSource> {
        None
    }

    /// The device is about to be removed: the holder is told with
    /// [`FailureFlags::pre_remove`] over `(0, u64::MAX)`; without a holder,
    /// every raw mapping is revoked whole and its owner told. The device
    /// itself keeps working until dropped.
    fn remove(&self) -> Result<()> {
        Ok(())
    }
}

/// Checks that `[off, off+len)` lies inside a device of `size` bytes.
#[inline]
pub fn check_range(off: u64, len: u64, size: u64) -> Result<()> {
    match off.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(out_of_range(off, len, size)),
    }
}

#[cold]
#[inline(never)]
fn out_of_range(off: u64, len: u64, size: u64) -> DeviceError {
    DeviceError::OutOfRange { off, len, size }
}

/// Checks that `size` is usable as the size of a device: non-zero and a
/// multiple of [`SIZE_GRANULE`].
pub fn check_size(size: u64) -> Result<()> {
    if size == 0 {
        return Err(DeviceError::InvalidSize {
            size,
            reason: "the size must not be zero".into(),
        });
    }
    if !size.is_multiple_of(SIZE_GRANULE) {
        return Err(DeviceError::InvalidSize {
            size,
            reason: format!("the size must be a multiple of {SIZE_GRANULE} bytes"),
        });
    }
    Ok(())
}
