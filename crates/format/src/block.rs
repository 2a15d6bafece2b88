//! The self-describing header at the start of every metadata block.
//!
//! ```text
//! byte  size  field
//!    0     4  magic        "DXMB" (0x424d5844 little-endian)
//!    4     1  kind         BlockKind
//!    5     1  level        B+tree level (0 = leaf); 0 for other kinds
//!    6     2  flags        reserved, 0
//!    8     4  crc          CRC32C of the whole block with this field zero
//!   12     4  count        records in the block (B+tree nodes) or kind-specific
//!   16     8  owner        inode number, or 0 for file-system-wide structures
//!   24     8  blockno      the block's own number: catches misdirected reads
//!   32     8  generation   transaction sequence that last wrote the block
//!   40     8  fs_id        first 8 bytes of the file system's UUID
//!   48    16  reserved     0
//! ```
use crate::{BLOCK_SIZE, FormatError, checksum};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Magic number of every metadata block: "DXMB".
pub const BLOCK_MAGIC: u32 = u32::from_le_bytes(*b"DXMB");
/// Size of [`BlockHeader`].
pub const HEADER_SIZE: usize = 64;
const CRC_OFFSET: usize = 8;

/// The header at the start of every metadata block.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct BlockHeader {
    pub magic: U32,
    pub kind: u8,
    pub level: u8,
    pub flags: U16,
    pub crc: U32,
    pub count: U32,
    pub owner: U64,
    pub blockno: U64,
    pub generation: U64,
    pub fs_id: U64,
    pub reserved: [u8; 16],
}
const _: () = assert!(std::mem::size_of::<BlockHeader>() == HEADER_SIZE);

/// What a metadata block holds. Stored in [`BlockHeader::kind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum BlockKind {
    Superblock = 1,
    LogDescriptor = 2,
    InodeTree = 3,
    DirTree = 4,
    ExtentTree = 5,
    FreeTree = 6,
    RefcountTree = 7,
    RmapTree = 8,
    OrphanTree = 9,
    ParentTree = 10,
    ErrorLog = 11,
    LossTree = 12,
    BadBlockTree = 13,
    /// A log block holding the reverse map's pending record changes.
    RmapIntents = 14,
    /// A node of the extended-attribute tree.
    XattrTree = 15,
}

impl BlockKind {
    /// Decodes a kind byte.
    pub fn from_u8(v: u8) -> Option<Self> {
        use BlockKind::*;
        Some(match v {
            1 => Superblock,
            2 => LogDescriptor,
            3 => InodeTree,
            4 => DirTree,
            5 => ExtentTree,
            6 => FreeTree,
            7 => RefcountTree,
            8 => RmapTree,
            9 => OrphanTree,
            10 => ParentTree,
            11 => ErrorLog,
            12 => LossTree,
            13 => BadBlockTree,
            14 => RmapIntents,
            15 => XattrTree,
            _ => return None,
        })
    }

    /// A short human name, used by fsck, fsmap and the error log.
    pub fn name(self) -> &'static str {
        use BlockKind::*;
        match self {
            Superblock => "superblock",
            LogDescriptor => "log",
            InodeTree => "inode table",
            DirTree => "directory block",
            ExtentTree => "extent-tree block",
            FreeTree => "free-space tree",
            RefcountTree => "refcount tree",
            RmapTree => "reverse-map tree",
            OrphanTree => "orphan list",
            ParentTree => "parent-pointer tree",
            ErrorLog => "error log",
            LossTree => "data-loss tree",
            BadBlockTree => "bad-block tree",
            RmapIntents => "reverse-map intents",
            XattrTree => "extended-attribute tree",
        }
    }
}

/// What a caller expects of a block it is about to trust.
#[derive(Clone, Copy, Debug)]
pub struct Expect {
    pub blockno: u64,
    pub kind: BlockKind,
    /// `None`: any owner is accepted.
    pub owner: Option<u64>,
    pub fs_id: u64,
}

/// Reads the header of a block (no validation).
pub fn header(block: &[u8]) -> Result<BlockHeader, FormatError> {
    BlockHeader::read_from_prefix(block)
        .map(|(h, _)| h)
        .map_err(|_| FormatError::Truncated {
            what: "block header",
            have: block.len(),
            need: HEADER_SIZE,
        })
}

/// Writes `h` into the first bytes of `block`.
pub fn write_header(block: &mut [u8], h: &BlockHeader) {
    if let Some(dst) = block.get_mut(..HEADER_SIZE) {
        dst.copy_from_slice(h.as_bytes());
    }
}

/// Fills the header's identity fields and its checksum. Call last, after every
/// other byte of the block is final.
pub fn seal_block(block: &mut [u8; BLOCK_SIZE], blockno: u64, generation: u64, fs_id: u64) {
    let mut h = header(block).unwrap_or_else(|_| BlockHeader::new_zeroed());
    h.magic = BLOCK_MAGIC.into();
    h.blockno = blockno.into();
    h.generation = generation.into();
    h.fs_id = fs_id.into();
    h.crc = 0.into();
    write_header(block, &h);
    let crc = checksum(block);
    block[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Checks a block's magic, checksum, place, kind, owner and file system.
/// Returns its header when every check passes.
pub fn verify_block(block: &[u8; BLOCK_SIZE], expect: &Expect) -> Result<BlockHeader, FormatError> {
    let b = expect.blockno;
    let h = header(block)?;
    if h.magic.get() != BLOCK_MAGIC {
        return Err(FormatError::BadMagic {
            block: b,
            found: h.magic.get(),
        });
    }
    let stored = h.crc.get();
    let computed = {
        let crc = checksum(&block[..CRC_OFFSET]);
        let crc = crate::checksum_append(crc, &[0u8; 4]);
        crate::checksum_append(crc, &block[CRC_OFFSET + 4..])
    };
    if stored != computed {
        return Err(FormatError::ChecksumMismatch {
            block: b,
            stored,
            computed,
        });
    }
    if h.blockno.get() != b || h.fs_id.get() != expect.fs_id {
        return Err(FormatError::Misplaced {
            block: b,
            found: h.blockno.get(),
        });
    }
    if h.kind != expect.kind as u8 {
        return Err(FormatError::WrongKind {
            block: b,
            expected: expect.kind,
            found: h.kind,
        });
    }
    if let Some(owner) = expect.owner
        && h.owner.get() != owner
    {
        return Err(FormatError::WrongOwner {
            block: b,
            expected: owner,
            found: h.owner.get(),
        });
    }
    Ok(h)
}

impl BlockHeader {
    /// A header for a fresh block of `kind` owned by `owner`.
    pub fn fresh(kind: BlockKind, owner: u64, level: u8) -> Self {
        let mut h = BlockHeader::new_zeroed();
        h.magic = BLOCK_MAGIC.into();
        h.kind = kind as u8;
        h.owner = owner.into();
        h.level = level;
        h
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn sealed() -> Box<[u8; BLOCK_SIZE]> {
        let mut b = Box::new([0u8; BLOCK_SIZE]);
        write_header(&mut b[..], &BlockHeader::fresh(BlockKind::InodeTree, 0, 0));
        b[100] = 7;
        seal_block(&mut b, 42, 9, 0xabc);
        b
    }

    fn expect() -> Expect {
        Expect {
            blockno: 42,
            kind: BlockKind::InodeTree,
            owner: Some(0),
            fs_id: 0xabc,
        }
    }

    #[test]
    fn sealed_block_verifies() {
        let h = verify_block(&sealed(), &expect()).expect("valid");
        assert_eq!(h.generation.get(), 9);
    }

    #[test]
    fn torn_block_is_rejected() {
        let mut b = sealed();
        b[2000] ^= 1;
        assert!(matches!(
            verify_block(&b, &expect()),
            Err(FormatError::ChecksumMismatch { .. })
        ));
    }

    #[test]
    fn misplaced_block_is_rejected() {
        let b = sealed();
        let e = Expect {
            blockno: 43,
            ..expect()
        };
        assert!(matches!(
            verify_block(&b, &e),
            Err(FormatError::Misplaced { .. })
        ));
        let e = Expect {
            fs_id: 1,
            ..expect()
        };
        assert!(matches!(
            verify_block(&b, &e),
            Err(FormatError::Misplaced { .. })
        ));
    }

    #[test]
    fn wrong_kind_and_owner_are_rejected() {
        let b = sealed();
        let e = Expect {
            kind: BlockKind::DirTree,
            ..expect()
        };
        assert!(matches!(
            verify_block(&b, &e),
            Err(FormatError::WrongKind { .. })
        ));
        let e = Expect {
            owner: Some(5),
            ..expect()
        };
        assert!(matches!(
            verify_block(&b, &e),
            Err(FormatError::WrongOwner { .. })
        ));
    }

    #[test]
    fn zero_block_is_bad_magic() {
        let b = Box::new([0u8; BLOCK_SIZE]);
        assert!(matches!(
            verify_block(&b, &expect()),
            Err(FormatError::BadMagic { .. })
        ));
    }
}
