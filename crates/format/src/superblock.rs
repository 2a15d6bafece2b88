//! The superblock: geometry, feature flags and the roots of the global trees.
//!
//! Kept in two copies: block 0 and the device's last block. Both are written
//! by every checkpoint; a reader takes the first copy that verifies.
//!
//! ```text
//! byte size field
//!    0   64 header         BlockHeader, kind Superblock, owner 0, blockno 0 or last
//!   64    4 magic2         "DAXF": tells a daxfs superblock from other metadata
//!   68    4 version        FORMAT_VERSION (6)
//!   72    8 compat         compatible feature flags (ignored if unknown)
//!   80    8 incompat       incompatible feature flags (refuse to open if unknown)
//!   88   16 uuid
//!  104    8 total_blocks   device blocks covered by the file system
//!  112    8 log_start      first block of the metadata log
//!  120    8 log_blocks     blocks in the log
//!  128    4 anchor_count   pairs used in `anchors` (<= MAX_ANCHORS)
//!  132    4 rmap_intents   reverse-map changes not yet in the reverse map's
//!                          nodes: the first rmap_intents entries of the log's
//!                          intent area (RmapIntent); 0: the nodes hold
//!                          everything. On the cache line of the fields an
//!                          allocating commit changes anyway.
//!  136    8 next_ino       next inode number to hand out
//!  144    8 free_blocks    blocks in the free-space tree
//!  152    8 inodes         live inodes
//!  160   16 inode_tree
//!  176   16 free_tree
//!  192   16 orphan_tree    inodes unlinked while open
//!  208   16 refcount_tree
//!  224   16 rmap_tree
//!  240   16 parent_tree
//!  256   16 error_log      (entry sequence number, part) -> ErrorLogRecord (part 0) or ErrorLogOwners
//!  272   16 badblock_tree
//!  288    4 state          STATE_* flags
//!  292    4 block_size     4096
//!  296    8 mkfs_time      seconds since the epoch
//!  304   32 label          zero-padded
//!  336   16 loss_tree      (inode, file block) -> blocks of file data lost to media errors
//!  352    8 error_seq      next error-log entry sequence number
//!  360    8 log_replica    first block of the log's replica region (0: none),
//!                          log_mirror_blocks(log_blocks) long
//!  368    8 root_ino       inode number of the root directory
//!  376  256 anchors        MAX_ANCHORS x ReplicaPair: the reverse-map nodes on the
//!                          path from its root to key total_blocks / 2, with their
//!                          replicas (see ReplicaPair)
//!  632   16 xattr_tree     (inode, name key, part) -> XattrRecord: extended attributes
//!  648 3448 reserved       0
//! ```
use crate::block::{BLOCK_MAGIC, BlockHeader, BlockKind, HEADER_SIZE};
use crate::records::TreeRoot;
use crate::{BLOCK_SIZE, FormatError};
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

/// "DAXF", the second magic that tells a superblock apart.
pub const SUPERBLOCK_MAGIC: u32 = u32::from_le_bytes(*b"DAXF");
/// The format version this build writes and reads (the only one: see
/// FORMAT.md's version history).
pub const FORMAT_VERSION: u32 = 6;
/// Incompatible feature: every tree node has a replica, recorded in the
/// reverse map, and the log has a replica region (`log_replica`). Needs
/// `INCOMPAT_RMAP`.
pub const INCOMPAT_REPLICAS: u64 = 1 << 0;
/// Incompatible feature: reverse-map and refcount trees are kept.
pub const INCOMPAT_RMAP: u64 = 1 << 1;
/// Every incompatible feature this build understands.
pub const INCOMPAT_KNOWN: u64 = INCOMPAT_REPLICAS | INCOMPAT_RMAP;
/// State flag: the file system met an error it could not repair; fsck it.
pub const STATE_ERRORS: u32 = 1 << 0;
/// Smallest device daxfs will format, in blocks (4 MiB).
pub const MIN_BLOCKS: u64 = 1024;
/// Pairs in [`Superblock::anchors`].
pub const MAX_ANCHORS: usize = 16;
/// (home, replica) entries in one log descriptor block.
pub const LOG_DESC_ENTRIES: u64 = 250;

/// Blocks at the start of a log of `log_blocks` that hold descriptors.
pub fn log_desc_blocks(log_blocks: u64) -> u64 {
    log_blocks.div_ceil(LOG_DESC_ENTRIES + 1).max(1)
}

/// Blocks at the end of the log that hold the reverse map's pending record
/// changes (its intent area; see `RmapIntent`).
pub const LOG_INTENT_BLOCKS: u64 = 2;

/// Entries the intent area holds.
pub const LOG_INTENTS: usize = LOG_INTENT_BLOCKS as usize * crate::records::INTENTS_PER_BLOCK;

/// Blocks of the log's replica region: it copies the descriptors, the
/// first image (the superblock's) and the two intent blocks, in that order.
pub fn log_mirror_blocks(log_blocks: u64) -> u64 {
    log_desc_blocks(log_blocks) + 1 + LOG_INTENT_BLOCKS
}

/// A metadata block and its replica.
///
/// The replica of a reverse-map node is found through the reverse map, which
/// cannot work for a node whose own record lies under it (the root always,
/// and the nodes whose key range holds both halves of the device). The
/// superblock names those: the nodes on the path from the reverse map's root
/// to the key `total_blocks / 2`. Every other reverse-map node covers keys of
/// one half only, and its replica lies in the other half, where its record
/// can be found without reading the node.
///
/// ```text
/// byte size field
///    0    8 node
///    8    8 replica
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
pub struct ReplicaPair {
    pub node: U64,
    pub replica: U64,
}
const _: () = assert!(std::mem::size_of::<ReplicaPair>() == 16);

/// The superblock (see the module docs for the byte map).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct Superblock {
    pub header: BlockHeader,
    pub magic2: U32,
    pub version: U32,
    pub compat: U64,
    pub incompat: U64,
    pub uuid: [u8; 16],
    pub total_blocks: U64,
    pub log_start: U64,
    pub log_blocks: U64,
    pub anchor_count: U32,
    pub rmap_intents: U32,
    pub next_ino: U64,
    pub free_blocks: U64,
    pub inodes: U64,
    pub inode_tree: TreeRoot,
    pub free_tree: TreeRoot,
    pub orphan_tree: TreeRoot,
    pub refcount_tree: TreeRoot,
    pub rmap_tree: TreeRoot,
    pub parent_tree: TreeRoot,
    pub error_log: TreeRoot,
    pub badblock_tree: TreeRoot,
    pub state: U32,
    pub block_size: U32,
    pub mkfs_time: U64,
    pub label: [u8; 32],
    pub loss_tree: TreeRoot,
    pub error_seq: U64,
    pub log_replica: U64,
    pub root_ino: U64,
    pub anchors: [ReplicaPair; MAX_ANCHORS],
    pub xattr_tree: TreeRoot,
    pub reserved: [u8; 3448],
}
const _: () = assert!(std::mem::size_of::<Superblock>() == BLOCK_SIZE);
const _: () = assert!(HEADER_SIZE == 64);

impl Superblock {
    /// The file-system id stamped into every block header: the UUID's first 8 bytes.
    pub fn fs_id(&self) -> u64 {
        fs_id_of(&self.uuid)
    }

    /// Encodes into a block (header checksum not yet sealed).
    pub fn to_block(&self) -> Box<[u8; BLOCK_SIZE]> {
        let mut b = Box::new([0u8; BLOCK_SIZE]);
        b.copy_from_slice(self.as_bytes());
        b
    }

    /// Decodes and validates a superblock read from `blockno`. Checks the block
    /// header (magic, checksum, place), the second magic, the version, the
    /// features and that the geometry is possible for a device of `dev_blocks`.
    pub fn decode(
        block: &[u8; BLOCK_SIZE],
        blockno: u64,
        dev_blocks: u64,
    ) -> Result<Superblock, FormatError> {
        let sb =
            Superblock::read_from_bytes(block.as_slice()).map_err(|_| FormatError::Truncated {
                what: "superblock",
                have: block.len(),
                need: BLOCK_SIZE,
            })?;
        if sb.header.magic.get() != BLOCK_MAGIC || sb.magic2.get() != SUPERBLOCK_MAGIC {
            return Err(FormatError::BadMagic {
                block: blockno,
                found: sb.magic2.get(),
            });
        }
        let expect = crate::block::Expect {
            blockno,
            kind: BlockKind::Superblock,
            owner: Some(0),
            fs_id: sb.fs_id(),
        };
        crate::block::verify_block(block, &expect)?;
        let v = sb.version.get();
        if v > FORMAT_VERSION {
            return Err(FormatError::NewerVersion {
                found: v,
                supported: FORMAT_VERSION,
            });
        }
        if v == 0 {
            return Err(FormatError::BadField {
                what: "superblock version",
                value: 0,
            });
        }
        if v < FORMAT_VERSION {
            return Err(FormatError::OlderVersion {
                found: v,
                supported: FORMAT_VERSION,
            });
        }
        let unknown = sb.incompat.get() & !INCOMPAT_KNOWN;
        if unknown != 0 {
            return Err(FormatError::UnknownFeatures(unknown));
        }
        if sb.block_size.get() as usize != BLOCK_SIZE {
            return Err(FormatError::BadField {
                what: "superblock block_size",
                value: sb.block_size.get().into(),
            });
        }
        let total = sb.total_blocks.get();
        if total < MIN_BLOCKS || total > dev_blocks {
            return Err(FormatError::BadField {
                what: "superblock total_blocks (device smaller than the file system?)",
                value: total,
            });
        }
        let (ls, lb) = (sb.log_start.get(), sb.log_blocks.get());
        if ls == 0 || lb < 8 || ls.checked_add(lb).is_none_or(|end| end >= total) {
            return Err(FormatError::BadField {
                what: "superblock log geometry",
                value: ls,
            });
        }
        let lr = sb.log_replica.get();
        let lm = log_mirror_blocks(lb);
        if lr != 0
            && (lr.checked_add(lm).is_none_or(|end| end >= total) || (lr < ls + lb && ls < lr + lm))
        {
            return Err(FormatError::BadField {
                what: "superblock log replica",
                value: lr,
            });
        }
        if sb.rmap_intents.get() as usize > LOG_INTENTS
            || (sb.rmap_intents.get() != 0 && sb.incompat.get() & INCOMPAT_RMAP == 0)
        {
            return Err(FormatError::BadField {
                what: "superblock rmap_intents",
                value: sb.rmap_intents.get().into(),
            });
        }
        if sb.anchor_count.get() as usize > MAX_ANCHORS {
            return Err(FormatError::BadField {
                what: "superblock anchor_count",
                value: sb.anchor_count.get().into(),
            });
        }
        Ok(sb)
    }

    /// The reverse-map anchors in use.
    pub fn anchors(&self) -> &[ReplicaPair] {
        let n = (self.anchor_count.get() as usize).min(MAX_ANCHORS);
        self.anchors.get(..n).unwrap_or(&[])
    }

    /// True when tree nodes and the log have replicas.
    pub fn has_replicas(&self) -> bool {
        self.incompat.get() & INCOMPAT_REPLICAS != 0
    }

    /// A zeroed superblock with the fixed fields set.
    pub fn blank() -> Superblock {
        let mut sb = Superblock::new_zeroed();
        sb.header = BlockHeader::fresh(BlockKind::Superblock, 0, 0);
        sb.magic2 = SUPERBLOCK_MAGIC.into();
        sb.version = FORMAT_VERSION.into();
        sb.block_size = (BLOCK_SIZE as u32).into();
        sb
    }
}

/// The file-system id derived from a UUID.
pub fn fs_id_of(uuid: &[u8; 16]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&uuid[..8]);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seal_block;

    fn good() -> Box<[u8; BLOCK_SIZE]> {
        let mut sb = Superblock::blank();
        sb.uuid = [3; 16];
        sb.total_blocks = 4096.into();
        sb.log_start = 1.into();
        sb.log_blocks = 64.into();
        let mut b = sb.to_block();
        seal_block(&mut b, 0, 1, sb.fs_id());
        b
    }

    #[test]
    fn roundtrip() {
        let sb = Superblock::decode(&good(), 0, 4096).expect("valid");
        assert_eq!(sb.log_blocks.get(), 64);
    }

    #[test]
    fn rejects_device_too_small() {
        assert!(matches!(
            Superblock::decode(&good(), 0, 2048),
            Err(FormatError::BadField { .. })
        ));
    }

    #[test]
    fn rejects_newer_version() {
        let mut b = good();
        let mut sb = Superblock::read_from_bytes(b.as_slice()).expect("size");
        sb.version = (FORMAT_VERSION + 1).into();
        b.copy_from_slice(sb.as_bytes());
        seal_block(&mut b, 0, 1, sb.fs_id());
        assert!(matches!(
            Superblock::decode(&b, 0, 4096),
            Err(FormatError::NewerVersion { found, .. }) if found == FORMAT_VERSION + 1
        ));
    }

    #[test]
    fn rejects_older_versions() {
        // Version 1 kept a segment-aligned reverse map without summaries;
        // version 2 kept every file's extents in a tree, none inline, and
        // logged every changed reverse-map node (no intents); version 3 kept
        // one error-log record per owner, keyed by a plain sequence number;
        // version 4 kept no crcs in the pointers to tree nodes; version 5 had
        // no special files, device numbers or generations.
        for v in [1u32, 2, 3, 4, 5] {
            let mut b = good();
            let mut sb = Superblock::read_from_bytes(b.as_slice()).expect("size");
            sb.version = v.into();
            b.copy_from_slice(sb.as_bytes());
            seal_block(&mut b, 0, 1, sb.fs_id());
            assert!(matches!(
                Superblock::decode(&b, 0, 4096),
                Err(FormatError::OlderVersion {
                    found,
                    supported: 6
                }) if found == v
            ));
        }
    }

    #[test]
    fn checks_the_log_replica_region() {
        let mut sb = Superblock::read_from_bytes(good().as_slice()).expect("size");
        for (lr, ok) in [(4091, true), (4092, false), (64, false), (65, true)] {
            sb.log_replica = lr.into();
            let mut b = sb.to_block();
            seal_block(&mut b, 0, 1, sb.fs_id());
            assert_eq!(
                Superblock::decode(&b, 0, 4096).is_ok(),
                ok,
                "log replica at {lr}"
            );
        }
        assert_eq!(log_mirror_blocks(64), 4);
        assert_eq!(log_mirror_blocks(16384), 69);
    }

    #[test]
    fn checks_the_count_of_reverse_map_intents() {
        let mut sb = Superblock::read_from_bytes(good().as_slice()).expect("size");
        for (n, rmap, ok) in [
            (0, false, true),
            (LOG_INTENTS as u32, true, true),
            (LOG_INTENTS as u32 + 1, true, false),
            (1, false, false),
        ] {
            sb.rmap_intents = n.into();
            sb.incompat = if rmap { INCOMPAT_RMAP } else { 0 }.into();
            let mut b = sb.to_block();
            seal_block(&mut b, 0, 1, sb.fs_id());
            assert_eq!(
                Superblock::decode(&b, 0, 4096).is_ok(),
                ok,
                "{n} intents, reverse map {rmap}"
            );
        }
    }

    #[test]
    fn rejects_garbage() {
        let b = Box::new([0x5au8; BLOCK_SIZE]);
        assert!(Superblock::decode(&b, 0, 4096).is_err());
    }
}
