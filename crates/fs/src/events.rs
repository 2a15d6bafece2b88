//! Optional recording of mapping events: which device blocks enter and leave
//! which file, as transactions commit. Off by default (no cost); the
//! owner-tracking study turns it on to drive its structures with the real
//! event stream of a daxfs run.

/// A change of the file-to-device mapping, in blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapEvent {
    /// Fresh blocks enter a file.
    Map {
        ino: u64,
        fblock: u64,
        phys: u64,
        len: u64,
    },
    /// Blocks leave a file (truncate, punch, unlink, overwritten by a clone).
    Unmap {
        ino: u64,
        fblock: u64,
        phys: u64,
        len: u64,
    },
    /// A clone or dedupe maps blocks that `src_ino` maps at `src_fblock`.
    Share {
        src_ino: u64,
        src_fblock: u64,
        ino: u64,
        fblock: u64,
        phys: u64,
        len: u64,
    },
    /// Copy-on-write: the file's blocks at `old` are replaced by `new`.
    Cow {
        ino: u64,
        fblock: u64,
        old: u64,
        new: u64,
        len: u64,
    },
}
