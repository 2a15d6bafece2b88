//! Fixed-size records kept in the B+trees, and the codec trait they share.
//!
//! Keys are plain integers or tuples of integers, compared numerically (never
//! as bytes), and encoded little-endian. Values are zerocopy structs.
use crate::FormatError;
use zerocopy::little_endian::{I64, U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// A fixed-size record that can be stored in a B+tree node.
pub trait Record: Sized + Copy + std::fmt::Debug {
    /// Encoded size in bytes.
    const SIZE: usize;
    /// Writes the record into `out` (exactly `SIZE` bytes).
    fn encode(&self, out: &mut [u8]);
    /// Reads a record from `bytes` (exactly `SIZE` bytes). Never panics.
    fn decode(bytes: &[u8]) -> Result<Self, FormatError>;
}

/// A record usable as a B+tree key.
pub trait Key: Record + Ord {
    /// The smallest key.
    const MIN: Self;
    /// The largest key.
    const MAX: Self;
}

fn get_u64(b: &[u8], at: usize) -> Result<u64, FormatError> {
    b.get(at..at + 8)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map(u64::from_le_bytes)
        .ok_or(FormatError::Truncated {
            what: "key",
            have: b.len(),
            need: at + 8,
        })
}

fn put_u64(out: &mut [u8], at: usize, v: u64) {
    if let Some(d) = out.get_mut(at..at + 8) {
        d.copy_from_slice(&v.to_le_bytes());
    }
}

impl Record for u64 {
    const SIZE: usize = 8;
    fn encode(&self, out: &mut [u8]) {
        put_u64(out, 0, *self);
    }
    fn decode(b: &[u8]) -> Result<Self, FormatError> {
        get_u64(b, 0)
    }
}
impl Key for u64 {
    const MIN: Self = 0;
    const MAX: Self = u64::MAX;
}

impl Record for () {
    const SIZE: usize = 0;
    fn encode(&self, _out: &mut [u8]) {}
    fn decode(_b: &[u8]) -> Result<Self, FormatError> {
        Ok(())
    }
}

impl Record for (u64, u64) {
    const SIZE: usize = 16;
    fn encode(&self, out: &mut [u8]) {
        put_u64(out, 0, self.0);
        put_u64(out, 8, self.1);
    }
    fn decode(b: &[u8]) -> Result<Self, FormatError> {
        Ok((get_u64(b, 0)?, get_u64(b, 8)?))
    }
}
impl Key for (u64, u64) {
    const MIN: Self = (0, 0);
    const MAX: Self = (u64::MAX, u64::MAX);
}

impl Record for (u64, u64, u64) {
    const SIZE: usize = 24;
    fn encode(&self, out: &mut [u8]) {
        put_u64(out, 0, self.0);
        put_u64(out, 8, self.1);
        put_u64(out, 16, self.2);
    }
    fn decode(b: &[u8]) -> Result<Self, FormatError> {
        Ok((get_u64(b, 0)?, get_u64(b, 8)?, get_u64(b, 16)?))
    }
}
impl Key for (u64, u64, u64) {
    const MIN: Self = (0, 0, 0);
    const MAX: Self = (u64::MAX, u64::MAX, u64::MAX);
}

/// Implements [`Record`] for a zerocopy struct.
#[macro_export]
macro_rules! zerocopy_record {
    ($t:ty, $what:expr) => {
        impl $crate::records::Record for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            fn encode(&self, out: &mut [u8]) {
                if let Some(d) = out.get_mut(..Self::SIZE) {
                    d.copy_from_slice(zerocopy::IntoBytes::as_bytes(self));
                }
            }
            fn decode(b: &[u8]) -> Result<Self, $crate::FormatError> {
                <$t as zerocopy::FromBytes>::read_from_prefix(b)
                    .map(|(v, _)| v)
                    .map_err(|_| $crate::FormatError::Truncated {
                        what: $what,
                        have: b.len(),
                        need: Self::SIZE,
                    })
            }
        }
    };
}

/// Where a B+tree starts. `block == 0` is the empty tree.
///
/// ```text
/// byte size field
///    0    8 block   root node's block number, 0 = empty
///    8    4 height  levels (0 when empty, 1 = the root is a leaf)
///   12    4 crc     the root node's header crc as it was sealed (0 when
///                   empty): a root read here that holds another is stale
///                   or forged, and is not used
/// ```
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
    Unaligned,
)]
#[repr(C)]
pub struct TreeRoot {
    pub block: U64,
    pub height: U32,
    pub crc: U32,
}
const _: () = assert!(std::mem::size_of::<TreeRoot>() == 16);
zerocopy_record!(TreeRoot, "tree root");

impl TreeRoot {
    /// The empty tree.
    pub const EMPTY: TreeRoot = TreeRoot {
        block: U64::ZERO,
        height: U32::ZERO,
        crc: U32::ZERO,
    };
    /// The root `block` of a tree of `height` levels, sealed with `crc`.
    pub fn new(block: u64, height: u32, crc: u32) -> Self {
        TreeRoot {
            block: block.into(),
            height: height.into(),
            crc: crc.into(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.block.get() == 0
    }
}

/// A timestamp: seconds and nanoseconds since the epoch.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
    Unaligned,
)]
#[repr(C)]
pub struct Timestamp {
    pub sec: I64,
    pub nsec: U32,
}
const _: () = assert!(std::mem::size_of::<Timestamp>() == 12);

/// File type bits of `mode` (as in `st_mode`).
pub mod mode {
    pub const S_IFMT: u32 = 0o170000;
    pub const S_IFREG: u32 = 0o100000;
    pub const S_IFDIR: u32 = 0o040000;
    pub const S_IFLNK: u32 = 0o120000;
    pub const S_IFIFO: u32 = 0o010000;
    pub const S_IFSOCK: u32 = 0o140000;
    pub const S_IFCHR: u32 = 0o020000;
    pub const S_IFBLK: u32 = 0o060000;
}

/// An inode, the value of the inode tree keyed by inode number.
///
/// ```text
/// byte size field
///    0    8 ino          its own number (checked against the key)
///    8    4 mode         st_mode: type and permission bits
///   12    4 uid
///   16    4 gid
///   20    4 nlink
///   24    8 size         bytes
///   32    8 blocks       4 KiB blocks mapped (st_blocks is blocks * 8)
///   40   12 atime
///   52   12 mtime
///   64   12 ctime
///   76   12 btime        creation time
///   88    8 parent       parent directory (directories; first link for files)
///   96   16 tree         TreeRoot (with its root's crc): extent tree (files,
///                        symlinks) or directory tree (dirs); empty while a
///                        file's extents are inline
///  112   16 loss         tree of byte ranges whose data was lost to media errors
///  128    8 flags        INODE_FLAG_* (bit 0: INODE_FLAG_INLINE_EXTENTS)
///  136    8 generation   the commit generation of the transaction that
///                        made the inode (format 6; 0 for the root): with
///                        the number, names this inode and no later one
///  144    8 lost_bytes   total bytes currently recorded as lost
///  152   96 inline       InlineExtent[4]: a regular file's extents while
///                        INODE_FLAG_INLINE_EXTENTS is set (`tree` is then
///                        empty): the first inline_count, by increasing file
///                        block, not overlapping; unused entries zero
///  248    4 inline_count 0..=4; 0 without INODE_FLAG_INLINE_EXTENTS
///  252    4 rdev         a character or block device's number as Linux's
///                        new_encode_dev: minor bits 0-7, major 8-19,
///                        minor bits 8-19 in 20-31 (format 6); 0 for
///                        every other type
/// ```
///
/// The type in `mode` is one of S_IFREG, S_IFDIR, S_IFLNK, S_IFIFO,
/// S_IFSOCK, S_IFCHR, S_IFBLK (format 6 added the last four). A FIFO,
/// socket or device has no data: size, blocks, tree and inline extents zero.
///
/// A regular file starts with its extents inline and keeps them there while
/// it has at most [`INLINE_EXTENTS`]; past that they move to an extent tree
/// in `tree` (the flag cleared), which the file keeps until it maps nothing
/// again. Directories and symbolic links never set the flag.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct InodeRecord {
    pub ino: U64,
    pub mode: U32,
    pub uid: U32,
    pub gid: U32,
    pub nlink: U32,
    pub size: U64,
    pub blocks: U64,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub btime: Timestamp,
    pub parent: U64,
    pub tree: TreeRoot,
    pub loss: TreeRoot,
    pub flags: U64,
    pub generation: U64,
    pub lost_bytes: U64,
    pub inline: [InlineExtent; INLINE_EXTENTS],
    pub inline_count: U32,
    pub rdev: U32,
}
const _: () = assert!(std::mem::size_of::<InodeRecord>() == 256);
const _: () = assert!(std::mem::offset_of!(InodeRecord, inline) == 152);
const _: () = assert!(std::mem::offset_of!(InodeRecord, inline_count) == 248);
zerocopy_record!(InodeRecord, "inode record");

/// Inode flag: the regular file's extents are in the record's `inline`
/// array (`inline_count` of them) and its `tree` is empty.
pub const INODE_FLAG_INLINE_EXTENTS: u64 = 1;
/// Every inode flag this version knows.
pub const INODE_FLAGS_KNOWN: u64 = INODE_FLAG_INLINE_EXTENTS;
/// Extents an inode record holds inline.
pub const INLINE_EXTENTS: usize = 4;

/// An extent kept in an inode record: the extent tree's key (the first file
/// block) and its [`ExtentRecord`] side by side.
///
/// ```text
/// byte size field
///    0    8 fblock  first file block
///    8    8 phys    first device block
///   16    4 len     blocks, >= 1
///   20    4 flags   EXTENT_*
/// ```
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
    Unaligned,
)]
#[repr(C)]
pub struct InlineExtent {
    pub fblock: U64,
    pub phys: U64,
    pub len: U32,
    pub flags: U32,
}
const _: () = assert!(std::mem::size_of::<InlineExtent>() == 24);
zerocopy_record!(InlineExtent, "inline extent");

impl InlineExtent {
    /// The unused entry.
    pub const ZERO: InlineExtent = InlineExtent {
        fblock: U64::ZERO,
        phys: U64::ZERO,
        len: U32::ZERO,
        flags: U32::ZERO,
    };
    pub fn new(fblock: u64, phys: u64, len: u32, flags: u32) -> Self {
        InlineExtent {
            fblock: fblock.into(),
            phys: phys.into(),
            len: len.into(),
            flags: flags.into(),
        }
    }
}

impl InodeRecord {
    /// Whether the record says its extents are inline.
    pub fn extents_inline(&self) -> bool {
        self.flags.get() & INODE_FLAG_INLINE_EXTENTS != 0
    }

    /// The inline extents in use (none without the flag). Refuses a count
    /// above [`INLINE_EXTENTS`], and a count without the flag. The entries
    /// themselves are the caller's to check (lengths, order, ranges).
    pub fn inline_extents(&self) -> Result<&[InlineExtent], FormatError> {
        let n = self.inline_count.get();
        if !self.extents_inline() && n != 0 {
            return Err(FormatError::BadField {
                what: "inode inline_count without INODE_FLAG_INLINE_EXTENTS",
                value: n.into(),
            });
        }
        self.inline.get(..n as usize).ok_or(FormatError::BadField {
            what: "inode inline_count",
            value: n.into(),
        })
    }

    /// Keeps `extents` inline: sets the flag and the count, zeroes the
    /// unused entries. More than [`INLINE_EXTENTS`] is refused (the record
    /// is left as it was). `tree` is the caller's to empty.
    pub fn set_inline_extents(&mut self, extents: &[InlineExtent]) -> Result<(), FormatError> {
        if extents.len() > INLINE_EXTENTS {
            return Err(FormatError::BadField {
                what: "inline extents",
                value: extents.len() as u64,
            });
        }
        for (i, slot) in self.inline.iter_mut().enumerate() {
            *slot = extents.get(i).copied().unwrap_or(InlineExtent::ZERO);
        }
        self.inline_count = (extents.len() as u32).into();
        self.flags = (self.flags.get() | INODE_FLAG_INLINE_EXTENTS).into();
        Ok(())
    }

    /// The extents are no longer inline (they moved to `tree`): clears the
    /// flag, the count and every entry.
    pub fn clear_inline_extents(&mut self) {
        self.inline = [InlineExtent::ZERO; INLINE_EXTENTS];
        self.inline_count = 0.into();
        self.flags = (self.flags.get() & !INODE_FLAG_INLINE_EXTENTS).into();
    }

    /// Whether the inline area (entries past the count) holds nothing it
    /// should not: unused entries are zero.
    pub fn inline_tail_clean(&self) -> bool {
        let n = (self.inline_count.get() as usize).min(INLINE_EXTENTS);
        self.inline.iter().skip(n).all(|e| *e == InlineExtent::ZERO)
    }
}

/// Longest name in a directory, in bytes.
pub const NAME_MAX: usize = 255;

/// A directory entry, the value of a directory tree. The key is
/// `hash32(name) << 32 | seq`, where `seq` tells apart names whose hashes collide.
///
/// ```text
/// byte size field
///    0    8 ino
///    8    1 ftype     1 regular, 2 directory, 7 symlink (as DT_* >> 0, see fs)
///    9    1 name_len  1..=255
///   10  255 name      bytes, unused tail zero
///  265    7 reserved  0
/// ```
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct DirentRecord {
    pub ino: U64,
    pub ftype: u8,
    pub name_len: u8,
    pub name: [u8; NAME_MAX],
    pub reserved: [u8; 7],
}
const _: () = assert!(std::mem::size_of::<DirentRecord>() == 272);
zerocopy_record!(DirentRecord, "directory entry");

impl DirentRecord {
    /// The entry's name, or an error when its length field is impossible.
    pub fn name(&self) -> Result<&[u8], FormatError> {
        let n = self.name_len as usize;
        match self.name.get(..n) {
            Some(s) if n > 0 => Ok(s),
            _ => Err(FormatError::BadField {
                what: "dirent name_len",
                value: n as u64,
            }),
        }
    }
}

/// Extent flag: allocated but never written; reads as zeros.
pub const EXTENT_UNWRITTEN: u32 = 1;

/// A mapping of file blocks to device blocks, the value of an extent tree keyed
/// by the first file block.
///
/// ```text
/// byte size field
///    0    8 phys    first device block
///    8    4 len     blocks, >= 1
///   12    4 flags   EXTENT_*
/// ```
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct ExtentRecord {
    pub phys: U64,
    pub len: U32,
    pub flags: U32,
}
const _: () = assert!(std::mem::size_of::<ExtentRecord>() == 16);
zerocopy_record!(ExtentRecord, "extent");

/// A small helper so callers need not import zerocopy's integer types.
pub fn u16le(v: u16) -> U16 {
    v.into()
}

/// A shared physical range, the value of the refcount tree keyed by its first
/// block. Only ranges owned more than once are recorded; an allocated block
/// without a record has one owner.
///
/// ```text
/// byte size field
///    0    8 len     blocks, >= 1
///    8    8 count   owners, >= 2
/// ```
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct RefcountRecord {
    pub len: U64,
    pub count: U64,
}
const _: () = assert!(std::mem::size_of::<RefcountRecord>() == 16);
zerocopy_record!(RefcountRecord, "refcount record");

/// Reverse-map owner codes for metadata: `RMAP_OWNER_META | BlockKind`.
pub const RMAP_OWNER_META: u64 = 1 << 63;
/// Reverse-map offset flag: the block is a node of the owner's extent tree.
pub const RMAP_OFF_EXTENT_TREE: u64 = 1 << 63;
/// Reverse-map offset flag: the block is a node of the owner's directory tree.
pub const RMAP_OFF_DIR_TREE: u64 = 1 << 62;
/// Reverse-map offset flag: the block is the replica of a metadata block of
/// this owner (combined with the other offset codes; file data never has it,
/// as file blocks stay below 2^51).
pub const RMAP_OFF_REPLICA: u64 = 1 << 61;
/// Reverse-map value flag: the mapped extent is unwritten.
pub const RMAP_UNWRITTEN: u64 = 1;

/// The value of a reverse-map record, keyed by (first physical block, owner,
/// offset). For file data the owner is the inode number and the offset the
/// file block; for a file's extent-tree or directory-tree nodes the offset is
/// a flag; for other metadata the owner is `RMAP_OWNER_META | kind`. A
/// replica's record has `RMAP_OFF_REPLICA` in its offset.
///
/// ```text
/// byte size field
///    0    8 len      blocks, >= 1
///    8    8 flags    RMAP_UNWRITTEN
///   16    8 replica  a metadata block's record: the first block of its
///                    replica (0: none); a replica's record: the first block
///                    of the metadata it copies; otherwise 0
/// ```
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct RmapRecord {
    pub len: U64,
    pub flags: U64,
    pub replica: U64,
}
const _: () = assert!(std::mem::size_of::<RmapRecord>() == 24);
zerocopy_record!(RmapRecord, "reverse-map record");

/// One pending change to the reverse map, kept in the log's intent area
/// (its last `LOG_INTENT_BLOCKS` blocks, 64 entries a block, appended in
/// order from the area's start): commits that change only reverse-map
/// records (no node split, merged or moved) append these instead of
/// logging the nodes, which are logged later, whole, by a commit that then
/// starts the area over. Each entry checks itself, so appending one never
/// puts the entries before it at risk.
///
/// ```text
/// byte size field
///    0    4 op       INTENT_PUT (the key's record is set to the value) or
///                    INTENT_REMOVE (the key has no record)
///    4    4 crc      CRC32C, seeded with the file-system id, of bytes 0..4
///                    and 8..64
///    8    8 start    the record's key: first device block,
///   16    8 owner    owner code,
///   24    8 offset   and offset code (as in the reverse map's keys)
///   32    8 len      the record's value (INTENT_PUT; 0 otherwise)
///   40    8 flags
///   48    8 replica
///   56    8 seq      the commit that made the change
/// ```
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct RmapIntent {
    pub op: U32,
    pub crc: U32,
    pub start: U64,
    pub owner: U64,
    pub offset: U64,
    pub len: U64,
    pub flags: U64,
    pub replica: U64,
    pub seq: U64,
}
const _: () = assert!(std::mem::size_of::<RmapIntent>() == 64);

impl RmapIntent {
    /// The checksum this entry should carry in a file system whose id is
    /// `fs_id`.
    pub fn checksum(&self, fs_id: u64) -> u32 {
        let b = self.as_bytes();
        let crc = crate::checksum_append(
            fs_id as u32 ^ (fs_id >> 32) as u32,
            b.get(..4).unwrap_or(&[]),
        );
        crate::checksum_append(crc, b.get(8..).unwrap_or(&[]))
    }

    /// Sets the checksum.
    pub fn seal(&mut self, fs_id: u64) {
        self.crc = self.checksum(fs_id).into();
    }

    /// True when the checksum matches.
    pub fn verifies(&self, fs_id: u64) -> bool {
        self.crc.get() == self.checksum(fs_id)
    }
}

/// [`RmapIntent::op`]: the key's record is set.
pub const INTENT_PUT: u32 = 1;
/// [`RmapIntent::op`]: the key's record is removed.
pub const INTENT_REMOVE: u32 = 2;
/// Entries in one block of the intent area.
pub const INTENTS_PER_BLOCK: usize = crate::BLOCK_SIZE / 64;

/// Actions recorded in the error log.
pub mod action {
    /// File data in the range is lost; the file records it and reads fail.
    pub const DATA_LOST: u32 = 1;
    /// Metadata was rebuilt from its replica onto a fresh block.
    pub const REPAIRED: u32 = 2;
    /// Free space was taken out of use until the error is cleared.
    pub const QUARANTINED: u32 = 3;
    /// Both copies of metadata were bad: the file system shut down.
    pub const SHUT_DOWN: u32 = 4;
    /// The error was cleared: the range is usable again.
    pub const CLEARED: u32 = 5;
    /// A file's loss ended: its lost blocks were overwritten or removed.
    pub const LOSS_ENDED: u32 = 6;
    /// No data was at risk (an unwritten or already-lost mapping).
    pub const NO_DATA: u32 = 7;
    /// A file's extent record pointed where no extent of it can (metadata,
    /// past the device, free blocks, blocks the reverse map gives to no
    /// such extent): it was refused, not followed.
    pub const REFUSED: u32 = 8;
}

/// The head of an entry of the persistent error log: the record at key
/// `(seq, 0)`. One entry names one device range, one action and one owner
/// kind, and every owner they apply to: the first here, the others in the
/// [`ErrorLogOwners`] records at keys `(seq, 1)`, `(seq, 2)`, ... (four to
/// a record). A report of a block shared by 10,000 files is one entry.
///
/// ```text
/// byte size field
///    0    8 time_sec    when it happened (seconds since the epoch)
///    8    8 dev_off     device byte offset of the affected range
///   16    8 dev_len     bytes
///   24    4 action      1 data lost, 2 repaired (rebuilt from its replica),
///                       3 quarantined, 4 shut down (both copies bad, or no
///                       replica), 5 cleared, 6 loss ended, 7 no data
///   28    4 owner_kind  0 none, 1 file data, 2 file metadata, 3 file-system metadata, 4 free space
///   32    8 ino         the first owner: file inode (owner_kind 1 or 2), or the BlockKind (3)
///   40    8 file_off    the first owner's byte offset in the file (owner_kind 1)
///   48    4 flags       bit 0: a reader was waiting (action required); bit 1: device removal
///   52    4 owners      owners the entry names (>= 1): this record's, then (owners - 1)
///                       in ceil((owners - 1) / 4) ErrorLogOwners records
///   56    8 event       sequence number of the report's first entry (entries of one report share it)
/// ```
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct ErrorLogRecord {
    pub time_sec: U64,
    pub dev_off: U64,
    pub dev_len: U64,
    pub action: U32,
    pub owner_kind: U32,
    pub ino: U64,
    pub file_off: U64,
    pub flags: U32,
    pub owners: U32,
    pub event: U64,
}
const _: () = assert!(std::mem::size_of::<ErrorLogRecord>() == 64);
zerocopy_record!(ErrorLogRecord, "error log record");

/// Owners an [`ErrorLogOwners`] record holds.
pub const ERROR_LOG_OWNERS_PER_RECORD: usize = 4;

/// One owner of an error-log entry.
///
/// ```text
/// byte size field
///    0    8 ino         as ErrorLogRecord.ino
///    8    8 file_off    as ErrorLogRecord.file_off
/// ```
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
    Unaligned,
)]
#[repr(C)]
pub struct ErrorLogOwner {
    pub ino: U64,
    pub file_off: U64,
}
const _: () = assert!(std::mem::size_of::<ErrorLogOwner>() == 16);

/// The owners after the first of an error-log entry: the record at key
/// `(seq, i)`, `i >= 1`, holds owners `1 + 4(i-1) ..` of entry `seq` (the
/// tree's value type is [`ErrorLogRecord`]; these are its 64 bytes read
/// another way: [`ErrorLogOwners::from_record`]).
///
/// ```text
/// byte size field
///    0   16 owner 0     ErrorLogOwner
///   16   16 owner 1
///   32   16 owner 2
///   48   16 owner 3     slots past the entry's last owner: zero
/// ```
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct ErrorLogOwners {
    pub owners: [ErrorLogOwner; ERROR_LOG_OWNERS_PER_RECORD],
}
const _: () = assert!(std::mem::size_of::<ErrorLogOwners>() == 64);

impl ErrorLogOwners {
    /// The owners record stored in the tree's value `r`.
    pub fn from_record(r: ErrorLogRecord) -> Self {
        zerocopy::transmute!(r)
    }

    /// This record as the tree's value type.
    pub fn into_record(self) -> ErrorLogRecord {
        zerocopy::transmute!(self)
    }
}

/// Longest extended-attribute name, prefix included (Linux's XATTR_NAME_MAX).
pub const XATTR_NAME_MAX: usize = 255;
/// Largest extended-attribute value (Linux's XATTR_SIZE_MAX).
pub const XATTR_SIZE_MAX: usize = 65536;
/// Value bytes an attribute's head record holds.
pub const XATTR_HEAD_BYTES: usize = 248;
/// Value bytes each further part holds.
pub const XATTR_PART_BYTES: usize = 512;

/// One record of the extended-attribute tree, keyed by
/// `(inode, hash32(name) << 32 | seq, part)`. Part 0, the head, names the
/// attribute and holds its first value bytes; parts `1..` hold the rest,
/// 512 bytes each (the tree's value type is this struct; a further part is
/// its 512 bytes read as value bytes: [`XattrRecord::part_bytes`]).
///
/// ```text
/// head (part 0)
/// byte size field
///    0    4 value_len  0..=65536
///    4    1 name_len   1..=255, the whole name ("user.x")
///    5    3 reserved   0
///    8  255 name       unused tail zero
///  263    1 reserved   0
///  264  248 value      bytes 0 .. min(value_len, 248); unused tail zero
///
/// part i >= 1
///    0  512 value      bytes 248 + 512 (i - 1) ..; past value_len zero
/// ```
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct XattrRecord {
    pub value_len: U32,
    pub name_len: u8,
    pub reserved: [u8; 3],
    pub name: [u8; XATTR_NAME_MAX],
    pub reserved2: u8,
    pub value: [u8; XATTR_HEAD_BYTES],
}
const _: () = assert!(std::mem::size_of::<XattrRecord>() == XATTR_PART_BYTES);
zerocopy_record!(XattrRecord, "extended-attribute record");

impl XattrRecord {
    /// The parts an attribute of `value_len` bytes needs after its head.
    pub fn parts_for(value_len: usize) -> u64 {
        value_len
            .saturating_sub(XATTR_HEAD_BYTES)
            .div_ceil(XATTR_PART_BYTES) as u64
    }

    /// A further part's bytes.
    pub fn part_bytes(&self) -> [u8; XATTR_PART_BYTES] {
        zerocopy::transmute!(*self)
    }

    /// A further part holding `bytes` (at most 512; the rest zero).
    pub fn from_part_bytes(bytes: &[u8]) -> Self {
        let mut b = [0u8; XATTR_PART_BYTES];
        for (d, s) in b.iter_mut().zip(bytes) {
            *d = *s;
        }
        zerocopy::transmute!(b)
    }

    /// The head's name, or `None` when its length is out of range.
    pub fn name_bytes(&self) -> Option<&[u8]> {
        let n = usize::from(self.name_len);
        if n == 0 {
            return None;
        }
        self.name.get(..n)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use zerocopy::FromZeros;

    fn file_record() -> InodeRecord {
        let mut r = InodeRecord::new_zeroed();
        r.ino = 9.into();
        r.mode = (mode::S_IFREG | 0o644).into();
        r
    }

    #[test]
    fn inline_extents_round_trip_at_their_bytes() {
        let mut r = file_record();
        assert_eq!(r.inline_extents().unwrap(), &[]);
        let ex = [
            InlineExtent::new(0, 100, 3, 0),
            InlineExtent::new(7, 0x0102_0304_0506, 1, EXTENT_UNWRITTEN),
            InlineExtent::new(u64::from(u32::MAX), 200, u32::MAX, 0),
        ];
        r.set_inline_extents(&ex).unwrap();
        assert!(r.extents_inline());
        let mut bytes = [0u8; 256];
        r.encode(&mut bytes);
        // The flag, the count, and the second entry where the byte map says.
        assert_eq!(u64::from_le_bytes(bytes[128..136].try_into().unwrap()), 1);
        assert_eq!(u32::from_le_bytes(bytes[248..252].try_into().unwrap()), 3);
        assert_eq!(
            u64::from_le_bytes(bytes[176..184].try_into().unwrap()),
            7,
            "entry 1's fblock"
        );
        assert_eq!(
            u64::from_le_bytes(bytes[184..192].try_into().unwrap()),
            0x0102_0304_0506
        );
        assert_eq!(u32::from_le_bytes(bytes[192..196].try_into().unwrap()), 1);
        assert_eq!(u32::from_le_bytes(bytes[196..200].try_into().unwrap()), 1);
        assert!(bytes[224..248].iter().all(|&b| b == 0), "unused entry");
        let back = InodeRecord::decode(&bytes).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.inline_extents().unwrap(), &ex);
        assert!(back.inline_tail_clean());
        // Fewer extents zero the entries no longer used.
        r.set_inline_extents(&ex[..1]).unwrap();
        assert_eq!(r.inline_extents().unwrap(), &ex[..1]);
        assert_eq!(r.inline[1], InlineExtent::ZERO);
        r.set_inline_extents(&[]).unwrap();
        assert!(r.extents_inline() && r.inline_extents().unwrap().is_empty());
        // Clearing keeps other flags and leaves nothing inline.
        r.set_inline_extents(&ex).unwrap();
        r.flags = (r.flags.get() | 0x80).into();
        r.clear_inline_extents();
        assert_eq!(r.flags.get(), 0x80);
        assert_eq!(r.inline_count.get(), 0);
        assert!(r.inline.iter().all(|e| *e == InlineExtent::ZERO));
        assert_eq!(r.inline_extents().unwrap(), &[]);
    }

    #[test]
    fn inline_extents_bad_counts_are_errors() {
        let mut r = file_record();
        let five = [InlineExtent::new(0, 1, 1, 0); 5];
        let before = r;
        assert!(r.set_inline_extents(&five).is_err());
        assert_eq!(r, before, "a refused set changes nothing");
        r.set_inline_extents(&five[..4]).unwrap();
        for n in [5u32, 6, 255, u32::MAX] {
            r.inline_count = n.into();
            let e = r.inline_extents().unwrap_err();
            assert!(e.to_string().contains("inline_count"), "{e}");
        }
        // A count without the flag.
        r.inline_count = 2.into();
        r.flags = 0.into();
        let e = r.inline_extents().unwrap_err();
        assert!(e.to_string().contains("without"), "{e}");
        // Bytes past the count are not clean.
        let mut r = file_record();
        r.set_inline_extents(&five[..2]).unwrap();
        assert!(r.inline_tail_clean());
        r.inline[3].len = 1.into();
        assert!(!r.inline_tail_clean());
    }
}
