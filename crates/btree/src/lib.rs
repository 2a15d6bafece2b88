//! The one B+tree implementation of daxfs.
//!
//! Every persistent index (inode table, directories, per-file extent maps, free
//! space, and later refcounts and the reverse map) is a `BTree<K, V>` of
//! fixed-size records in 4 KiB nodes. The tree does not touch the device: it
//! reads and stages nodes through a [`NodeStore`], which the file system's
//! transaction implements (journaling, sealing and checksums live there).
//!
//! A tree is identified by its root ([`TreeRoot`](records::TreeRoot)), which the caller stores
//! (in the superblock or an inode) and which the mutating calls update.
#![deny(clippy::unwrap_used)]

use daxfs_format::records::{Key, Record};
use daxfs_format::{Block, BlockKind, BlockNo, FormatError};
use std::sync::Arc;

mod bulk;
#[cfg(any(test, feature = "fuzz"))]
pub mod fuzz;
pub mod memstore;
mod node;
mod tree;
pub use memstore::MemStore;
pub use tree::{BTree, TreeStats};

#[cfg(test)]
mod tests;

/// Deepest tree accepted. A corrupted (cyclic) tree is caught by this bound
/// instead of overflowing the stack.
pub const MAX_HEIGHT: u32 = 16;

/// Errors of tree operations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TreeError {
    /// A node failed verification (checksum, place, kind, owner).
    #[error(transparent)]
    Format(#[from] FormatError),
    /// A node is well formed but its contents break a tree invariant.
    #[error("{kind} block {block}: {what}")]
    Corrupt {
        kind: &'static str,
        block: u64,
        what: String,
    },
    /// No free block for a new node.
    #[error("no space left for a new tree node")]
    NoSpace,
    /// The store cannot read a node because of a media error.
    #[error("media error reading block {block}")]
    Media { block: u64 },
    /// Any other failure of the store, with its message.
    #[error("{0}")]
    Store(String),
}

pub type Result<T, E = TreeError> = std::result::Result<T, E>;

/// A node's bytes as the store hands them out and takes them in: shared, so
/// a read borrows the store's copy (its node cache, its staged blocks)
/// instead of copying 4 KiB. The tree copies a node only when it changes it
/// (copy on write, [`Arc::make_mut`]), so a descent that changes nothing
/// copies nothing.
pub type NodeBuf = Arc<Block>;

/// Where a tree's nodes come from and go to.
///
/// Implemented by the file system's transaction. The tree calls `read_node` for
/// every node it visits and `write_node` for every node it changes (a read
/// shares the store's bytes; the tree copies them before changing them, so
/// the store's copy never changes under it); the store
/// decides when and how the bytes reach media. The tree fills in the block
/// header's `kind`, `owner`, `level` and `count`; the store seals the rest
/// (block number, generation, file-system id, checksum) when the node is
/// written, and returns the checksum, which the tree keeps in the pointer
/// to the node (the parent's `crcs[i]`, or the root's `crc`).
pub trait NodeStore {
    /// Returns the current contents of node `b`, verified by the store to be a
    /// sealed block of `kind` owned by `owner` whose header crc is `crc` (the
    /// one the pointer to it names), or staged earlier in this transaction
    /// with that crc. A block that verifies by itself but holds another crc
    /// (an older copy left by a lost write, a forged one) is not returned:
    /// the store may find the right copy elsewhere (a replica), else fails
    /// with [`FormatError::StalePointer`].
    fn read_node(&mut self, b: BlockNo, kind: BlockKind, owner: u64, crc: u32) -> Result<NodeBuf>;
    /// Seals and stages new contents for node `b`; returns the crc it was
    /// sealed with.
    fn write_node(&mut self, b: BlockNo, node: NodeBuf) -> Result<u32>;
    /// Allocates a block for a new node of `kind` owned by `owner`.
    fn alloc_node(&mut self, kind: BlockKind, owner: u64) -> Result<BlockNo>;
    /// Releases a node's block.
    fn free_node(&mut self, b: BlockNo, kind: BlockKind, owner: u64) -> Result<()>;
}

/// The crc in a sealed block's header.
pub fn sealed_crc(block: &Block) -> u32 {
    daxfs_format::block::header(&block[..]).map_or(0, |h| h.crc.get())
}

/// A summary of a subtree, kept beside every child pointer of an internal
/// node (an augmented B+tree), so that a walk can skip the subtrees whose
/// summary shows they hold nothing of interest ([`BTree::range_pruned`]).
///
/// `of` summarizes one record and `join` two summaries; `join` must be
/// associative and commutative (a node's summary is the join of its
/// entries', in key order). The tree keeps every summary equal to that of
/// the child's records through every insert, removal, split, merge and
/// borrow, and [`BTree::check`] verifies it. `()` is the summary of trees
/// that keep none: it takes no bytes and changes no layout.
pub trait Summary<K, V>: Record + PartialEq {
    /// The summary of one record.
    fn of(key: &K, val: &V) -> Self;
    /// The summary of two summaries.
    fn join(self, other: Self) -> Self;
}

impl<K, V> Summary<K, V> for () {
    fn of(_: &K, _: &V) -> Self {}
    fn join(self, _: Self) -> Self {}
}

// Re-exported so users of the tree need one import.
pub use daxfs_format::records;
#[doc(hidden)]
pub fn _assert_types<K: Key, V: Record>() {}
