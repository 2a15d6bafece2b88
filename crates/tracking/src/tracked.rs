//! The file-system side of the boundary: operations a workload performs, and
//! the events they produce.
//!
//! A file system plugs into this crate by implementing [`TrackedFs`] (which
//! includes [`FsQuery`]): the workload drivers call its operations, it emits
//! [`Event`]s wherever its extent maps change, and it answers owner queries
//! from its reverse map. [`crate::DaxfsTracked`] is daxfs;
//! [`crate::ModelFs`] is an in-memory model kept as a cross-check.

use crate::event::{Event, FileId, MappingId};
use crate::index::FsQuery;

/// The error type of [`TrackedFs`] operations.
pub type FsError = Box<dyn std::error::Error + Send + Sync>;

/// Result of a [`TrackedFs`] operation.
pub type FsResult<T> = Result<T, FsError>;

/// Size of a file system's reverse map.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RmapStats {
    /// Records (one per extent of every file).
    pub records: u64,
    /// Bytes they occupy.
    pub bytes: u64,
}

/// A reflink file system whose extent-map changes are observable as events.
///
/// Sizes and offsets are in pages. Implementations must emit, for every
/// operation, exactly the events that describe its effect on the extent maps
/// (see [`Event`]): one per extent piece, in the order the changes happen.
pub trait TrackedFs: FsQuery {
    /// Creates an empty file.
    fn create(&mut self) -> FsResult<FileId>;

    /// Writes pages `[index, index+len)` of `file`: allocates blocks for holes
    /// ([`Event::Map`]), copies shared blocks on write ([`Event::Cow`]), and
    /// overwrites exclusively owned blocks in place (no event). Extends the
    /// file if needed.
    fn write(&mut self, file: FileId, index: u64, len: u64) -> FsResult<()>;

    /// Reflinks pages `[src_index, src_index+len)` of `src` into `dst` at
    /// `dst_index` (FICLONERANGE, or FIDEDUPERANGE once the data compared
    /// equal): the destination's old blocks are released ([`Event::Unmap`]),
    /// then the source blocks are shared ([`Event::Share`]). Holes stay holes.
    fn clone_range(
        &mut self,
        src: FileId,
        src_index: u64,
        dst: FileId,
        dst_index: u64,
        len: u64,
    ) -> FsResult<()>;

    /// Deduplicates: pages `[dst_index, dst_index+len)` of `dst` hold the
    /// same bytes as `[src_index, src_index+len)` of `src` and are to share
    /// its blocks (FIDEDUPERANGE). The extent changes are a clone's; a file
    /// system that compares data fails the call when the bytes differ. The
    /// default is [`clone_range`](TrackedFs::clone_range).
    fn dedupe_range(
        &mut self,
        src: FileId,
        src_index: u64,
        dst: FileId,
        dst_index: u64,
        len: u64,
    ) -> FsResult<()> {
        self.clone_range(src, src_index, dst, dst_index, len)
    }

    /// Releases pages `[index, index+len)` of `file` ([`Event::Unmap`]),
    /// leaving a hole; the size does not change.
    fn punch(&mut self, file: FileId, index: u64, len: u64) -> FsResult<()>;

    /// Unmaps every mapping of `file` ([`Event::MunmapFile`]), releases all its
    /// blocks ([`Event::Unmap`]) and removes it.
    fn delete(&mut self, file: FileId) -> FsResult<()>;

    /// Maps pages `[index, index+len)` of `file` into an address space
    /// ([`Event::MmapFile`]).
    fn mmap(&mut self, file: FileId, index: u64, len: u64) -> FsResult<MappingId>;

    /// Removes a mapping ([`Event::MunmapFile`]).
    fn munmap(&mut self, mapping: MappingId) -> FsResult<()>;

    /// The size of `file`, in pages.
    fn size(&self, file: FileId) -> FsResult<u64>;

    /// Pages of the device (one past the highest physical page ever used).
    fn device_pages(&self) -> u64;

    /// Moves out the events emitted since the last call.
    fn take_events(&mut self) -> Vec<Event>;

    /// What the file system is, for reports (e.g. `"daxfs"`).
    fn label(&self) -> String {
        "a reflink file system".into()
    }

    /// Size of the file system's reverse map, if it says (reported for
    /// context: the map a file system keeps anyway, which strategy 7 uses).
    fn reverse_map_stats(&self) -> Option<RmapStats> {
        None
    }

    /// Creates a new file sharing all of `src` (`cp --reflink`).
    fn clone_file(&mut self, src: FileId) -> FsResult<FileId> {
        let dst = self.create()?;
        let n = self.size(src)?;
        if n > 0 {
            self.clone_range(src, 0, dst, 0, n)?;
        }
        Ok(dst)
    }
}
