//! The device layer: byte-addressable memory that daxfs reads and writes with
//! plain loads and stores, and makes durable with explicit persists.
//!
//! Everything above this crate sees only the [`Device`] trait. No caller ever
//! holds a reference into device memory: bytes move by copy in and copy out, so
//! another thread (or a user mapping) writing the same memory is never UB.
mod mem;

pub use mem::MemDevice;

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
    Clwb,
    Clflushopt,
    Clflush,
}

impl std::fmt::Display for PersistMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PersistMode::CpuFlush(i) => write!(f, "cpu-flush ({})", match i {
                FlushInstr::Clwb => "clwb",
                FlushInstr::Clflushopt => "clflushopt",
                FlushInstr::Clflush => "clflush",
            }),
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
    OutOfRange { off: u64, len: u64, size: u64 },
    /// The range holds poisoned memory: the bytes cannot be read.
    #[error("media error at device offset {off:#x} (+{len:#x})")]
    Media { off: u64, len: u64 },
    /// Another process or handle has the device open.
    #[error("{0} is already open by another daxfs instance")]
    Locked(String),
    /// An operating-system error, with what was being done.
    #[error("{what}: {source}")]
    Os { what: String, source: std::io::Error },
}

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

    /// Starts writing back the cache lines of a range (no ordering promise).
    fn flush(&self, off: u64, len: u64);

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
}

/// Checks that `[off, off+len)` lies inside a device of `size` bytes.
pub fn check_range(off: u64, len: u64, size: u64) -> Result<()> {
    match off.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(DeviceError::OutOfRange { off, len, size }),
    }
}
