//! The event vocabulary: what a DAX file system tells an owner index.
//!
//! Events are emitted at the granularity the file system works at: one event
//! per *extent piece* (a run of file pages backed by a run of contiguous
//! physical pages), not one per page. A clone of a 2-million-page image whose
//! blocks are contiguous is one [`Event::Share`]; a strategy that keeps
//! per-page state pays for the 2 million pages itself. That difference is what
//! the benchmark measures.
//!
//! Every event is self-contained: it carries all a strategy needs, so a
//! recorded stream can be replayed into any strategy without the file system
//! that produced it. Only failure-time lookups ([`crate::OwnerIndex::owners`])
//! may call back into the file system.

/// A file (an inode) of the file system. Stable for the file's lifetime.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileId(pub u64);

/// One address-space view of a file: a file range mapped into some process's
/// address space (a VMA in Linux terms).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MappingId(pub u64);

/// A physical page of the device (device byte offset / [`PAGE_SIZE`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Phys(pub u64);

/// Bytes in a page: the file-system block and the unit of ownership.
pub const PAGE_SIZE: u64 = 4096;

impl Phys {
    /// The page `n` pages after this one.
    pub const fn add(self, n: u64) -> Phys {
        Phys(self.0 + n)
    }
}

/// Something the file system did that changes who owns a physical page, or who
/// can see it.
///
/// A *page owner* is a `(file, index)` pair whose data lives in a physical
/// page. A *mapping owner* is an address-space view of such a file covering
/// that index. The file system emits:
///
/// | event | when | ownership effect |
/// |---|---|---|
/// | [`Map`](Event::Map) | newly allocated blocks enter a file (write into a hole, append) | `(file, index+k)` now owns `phys+k`, which had no owner |
/// | [`Unmap`](Event::Unmap) | blocks leave a file (truncate, punch, delete, the old blocks under a clone destination) | `(file, index+k)` no longer owns `phys+k` |
/// | [`Share`](Event::Share) | clone or dedupe maps existing blocks into another file (or place) | `(file, index+k)` now also owns `phys+k` |
/// | [`Cow`](Event::Cow) | a write to shared blocks moves the file's pages to new blocks | `(file, index+k)` leaves `old+k` and owns `new+k` |
/// | [`MmapFile`](Event::MmapFile) | a file range is mapped into an address space | the mapping can see every page the range owns, now and later |
/// | [`MunmapFile`](Event::MunmapFile) | that mapping goes away | |
///
/// Overwrites of blocks the file owns alone change nothing and emit nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// File pages `[index, index+len)` are now backed by the freshly allocated
    /// physical pages `[phys, phys+len)`.
    Map {
        /// The file receiving the blocks.
        file: FileId,
        /// First file page.
        index: u64,
        /// First physical page.
        phys: Phys,
        /// Pages, at least 1.
        len: u64,
    },
    /// File pages `[index, index+len)` no longer reference physical pages
    /// `[phys, phys+len)`. Other owners of those pages, if any, keep them.
    Unmap {
        /// The file losing the blocks.
        file: FileId,
        /// First file page.
        index: u64,
        /// First physical page.
        phys: Phys,
        /// Pages, at least 1.
        len: u64,
    },
    /// Clone or dedupe: file pages `[index, index+len)` now also reference the
    /// already-owned physical pages `[phys, phys+len)`, taken from
    /// `src` at `src_index` (one of their current owners).
    Share {
        /// The file the blocks were cloned from.
        src: FileId,
        /// First page of the source range.
        src_index: u64,
        /// The file receiving the shared blocks.
        file: FileId,
        /// First file page of the destination range.
        index: u64,
        /// First physical page.
        phys: Phys,
        /// Pages, at least 1.
        len: u64,
    },
    /// Copy-on-write: file pages `[index, index+len)` moved from the shared
    /// physical pages `[old, old+len)` to the fresh pages `[new, new+len)`.
    /// Equivalent to `Unmap(old)` followed by `Map(new)`, emitted as one
    /// operation because it is one in the file system.
    Cow {
        /// The file being written.
        file: FileId,
        /// First file page.
        index: u64,
        /// First physical page given up (still owned by others).
        old: Phys,
        /// First freshly allocated physical page.
        new: Phys,
        /// Pages, at least 1.
        len: u64,
    },
    /// File pages `[index, index+len)` of `file` were mapped into an address
    /// space as `mapping`.
    MmapFile {
        /// The new mapping.
        mapping: MappingId,
        /// The mapped file.
        file: FileId,
        /// First file page of the mapped range.
        index: u64,
        /// Pages mapped.
        len: u64,
    },
    /// `mapping` (of `file`, pages `[index, index+len)`) was unmapped.
    MunmapFile {
        /// The mapping going away.
        mapping: MappingId,
        /// The mapped file.
        file: FileId,
        /// First file page of the mapped range.
        index: u64,
        /// Pages mapped.
        len: u64,
    },
}

/// The kinds of [`Event`], for statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventKind {
    /// [`Event::Map`]
    Map,
    /// [`Event::Unmap`]
    Unmap,
    /// [`Event::Share`]
    Share,
    /// [`Event::Cow`]
    Cow,
    /// [`Event::MmapFile`]
    MmapFile,
    /// [`Event::MunmapFile`]
    MunmapFile,
}

impl EventKind {
    /// Every kind, in display order.
    pub const ALL: [EventKind; 6] = [
        EventKind::Map,
        EventKind::Unmap,
        EventKind::Share,
        EventKind::Cow,
        EventKind::MmapFile,
        EventKind::MunmapFile,
    ];

    /// A short lower-case name.
    pub const fn name(self) -> &'static str {
        match self {
            EventKind::Map => "map",
            EventKind::Unmap => "unmap",
            EventKind::Share => "share",
            EventKind::Cow => "cow",
            EventKind::MmapFile => "mmap",
            EventKind::MunmapFile => "munmap",
        }
    }
}

impl Event {
    /// This event's kind.
    pub const fn kind(&self) -> EventKind {
        match self {
            Event::Map { .. } => EventKind::Map,
            Event::Unmap { .. } => EventKind::Unmap,
            Event::Share { .. } => EventKind::Share,
            Event::Cow { .. } => EventKind::Cow,
            Event::MmapFile { .. } => EventKind::MmapFile,
            Event::MunmapFile { .. } => EventKind::MunmapFile,
        }
    }

    /// Physical pages whose ownership this event changes (0 for mapping
    /// events; a copy-on-write touches `2 * len`).
    pub const fn pages_touched(&self) -> u64 {
        match *self {
            Event::Map { len, .. } | Event::Unmap { len, .. } | Event::Share { len, .. } => len,
            Event::Cow { len, .. } => 2 * len,
            Event::MmapFile { .. } | Event::MunmapFile { .. } => 0,
        }
    }
}
