//! The on-media format of daxfs.
//!
//! This crate does no I/O and contains no `unsafe`. It defines the address-space
//! newtypes, the self-describing header every metadata block starts with, the
//! superblock, and the fixed-size records kept in the B+trees. Every struct is
//! little-endian, alignment 1, and its size is asserted at compile time.
//! FORMAT.md documents each byte.
//!
//! Code here parses bytes that came from media: it never panics on bad input and
//! returns a [`FormatError`] naming what is wrong.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

pub mod block;
#[cfg(any(test, feature = "fuzz"))]
pub mod fuzz;
pub mod records;
pub mod superblock;

pub use block::{BlockHeader, BlockKind, HEADER_SIZE, seal_block, verify_block};
pub use superblock::{SUPERBLOCK_MAGIC, Superblock};

/// Size of a file-system block, in bytes. Fixed for format version 1.
pub const BLOCK_SIZE: usize = 4096;
/// `BLOCK_SIZE` as u64, for offset arithmetic.
pub const BLOCK_SIZE_U64: u64 = BLOCK_SIZE as u64;
/// log2(BLOCK_SIZE).
pub const BLOCK_SHIFT: u32 = 12;
/// Blocks in a 2 MiB huge page.
pub const HUGE_BLOCKS: u64 = 512;
/// Largest file size: offsets are signed 64-bit in the POSIX interface, and
/// a file block number (an extent's, a reverse-map record's) stays below
/// [`MAX_FILE_BLOCKS`].
pub const MAX_FILE_SIZE: u64 = (i64::MAX as u64) & !(BLOCK_SIZE_U64 - 1);
/// [`MAX_FILE_SIZE`] in blocks.
pub const MAX_FILE_BLOCKS: u64 = MAX_FILE_SIZE / BLOCK_SIZE_U64;

/// One block's bytes.
pub type Block = [u8; BLOCK_SIZE];

/// The checksum used everywhere on media: CRC32C (Castagnoli).
pub fn checksum(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

/// Continues a CRC32C over more bytes.
pub fn checksum_append(crc: u32, bytes: &[u8]) -> u32 {
    crc32c::crc32c_append(crc, bytes)
}

macro_rules! address_newtype {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub u64);
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

address_newtype!(
    /// A block number on the device (device offset / BLOCK_SIZE).
    BlockNo
);
address_newtype!(
    /// A byte offset on the device.
    DevOff
);
address_newtype!(
    /// An inode number. 0 is never used; 1 is the root directory.
    InodeNo
);
address_newtype!(
    /// A byte offset inside a file.
    FileOff
);

impl BlockNo {
    /// The device byte offset of this block.
    pub const fn dev_off(self) -> DevOff {
        DevOff(self.0 << BLOCK_SHIFT)
    }
}

impl DevOff {
    /// The block containing this offset.
    pub const fn block(self) -> BlockNo {
        BlockNo(self.0 >> BLOCK_SHIFT)
    }
}

/// Errors found while decoding media bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// The block's magic number is not daxfs's.
    #[error("block {block}: bad magic {found:#x} (not a daxfs metadata block)")]
    BadMagic { block: u64, found: u32 },
    /// The block's checksum does not match its contents (torn or corrupt).
    #[error("block {block}: checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    ChecksumMismatch {
        block: u64,
        stored: u32,
        computed: u32,
    },
    /// The block says it lives somewhere else: read from the wrong place.
    #[error("block {block}: header names block {found} (misplaced or stale block)")]
    Misplaced { block: u64, found: u64 },
    /// The block verifies by itself, but the pointer it was reached through
    /// names another checksum: an older copy (a lost write) or a forged one.
    #[error(
        "block {block}: sealed with checksum {found:#010x}, but the pointer to it names {expected:#010x} (stale or forged copy)"
    )]
    StalePointer {
        block: u64,
        expected: u32,
        found: u32,
    },
    /// The block is of another kind than the structure expects.
    #[error("block {block}: of kind {found}, where the structure expects kind {} ({})", *expected as u8, expected.name())]
    WrongKind {
        block: u64,
        expected: BlockKind,
        found: u8,
    },
    /// The block belongs to another owner than the structure expects.
    #[error("block {block}: owned by {found}, expected owner {expected}")]
    WrongOwner {
        block: u64,
        expected: u64,
        found: u64,
    },
    /// A field holds a value outside its range.
    #[error("{what}: invalid value {value}")]
    BadField { what: &'static str, value: u64 },
    /// The bytes are shorter than the structure.
    #[error("{what}: truncated ({have} of {need} bytes)")]
    Truncated {
        what: &'static str,
        have: usize,
        need: usize,
    },
    /// Format version newer than this build understands.
    #[error("format version {found} is newer than this daxfs supports ({supported})")]
    NewerVersion { found: u32, supported: u32 },
    /// Format version older than this build reads: the layout changed
    /// since (see FORMAT.md's version history).
    #[error(
        "format version {found} is older than this daxfs reads ({supported}): make a new file system and copy the files over"
    )]
    OlderVersion { found: u32, supported: u32 },
    /// Feature flags this build does not understand.
    #[error("unknown incompatible feature flags {0:#x}")]
    UnknownFeatures(u64),
}
