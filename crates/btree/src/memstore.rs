//! An in-memory [`NodeStore`] for tests and fuzzing.
//!
//! It behaves like the real store in the ways that matter to the tree: nodes
//! are sealed (checksum, block number, file-system id) when written and
//! verified when read, allocation can run out, and it refuses reads, writes and
//! frees of blocks that are not allocated, so a leaked, double-freed or
//! dangling node shows up as an error or in [`MemStore::live_nodes`].
#![deny(clippy::indexing_slicing)]

use crate::{NodeBuf, NodeStore, Result, TreeError};
use daxfs_format::block::{Expect, seal_block, verify_block};
use daxfs_format::{Block, BlockKind, BlockNo};
use std::collections::{HashMap, HashSet};

/// File-system id the store seals with, unless told otherwise.
pub const MEM_FS_ID: u64 = 0x0d47_f5f5_0000_0001;

/// Block contents and allocation state, kept in hash maps.
#[derive(Clone, Debug)]
pub struct MemStore {
    /// Sealed contents of every written block.
    blocks: HashMap<u64, NodeBuf>,
    /// Blocks allocated and not freed (written or not).
    live: HashSet<u64>,
    /// Next block number to hand out; numbers are never reused.
    next: u64,
    /// Allocations left before `alloc_node` reports `NoSpace`; `None` = no limit.
    alloc_budget: Option<u64>,
    /// File-system id sealed into and expected of every block.
    pub fs_id: u64,
    /// Generation sealed into written blocks.
    pub generation: u64,
    /// Counters, for tests that look at the tree's access pattern.
    pub reads: u64,
    /// See `reads`.
    pub writes: u64,
    /// See `reads`.
    pub allocs: u64,
    /// See `reads`.
    pub frees: u64,
}

impl Default for MemStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemStore {
    /// An empty store; block numbers start at 1.
    pub fn new() -> Self {
        MemStore {
            blocks: HashMap::new(),
            live: HashSet::new(),
            next: 1,
            alloc_budget: None,
            fs_id: MEM_FS_ID,
            generation: 1,
            reads: 0,
            writes: 0,
            allocs: 0,
            frees: 0,
        }
    }

    /// Makes `alloc_node` fail with `NoSpace` after `n` more allocations
    /// (`None`: never).
    pub fn set_alloc_limit(&mut self, n: Option<u64>) {
        self.alloc_budget = n;
    }

    /// Blocks allocated and not yet freed.
    pub fn live_nodes(&self) -> usize {
        self.live.len()
    }

    /// Numbers of the blocks allocated and not yet freed, ascending.
    pub fn live_blocks(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.live.iter().copied().collect();
        v.sort_unstable();
        v
    }

    /// The stored (sealed) bytes of block `b`.
    pub fn raw(&self, b: u64) -> Option<&Block> {
        self.blocks.get(&b).map(|x| &**x)
    }

    /// Mutable stored bytes of block `b`, for corrupting it in tests; call
    /// [`MemStore::reseal`] afterwards to make the checksum pass again.
    pub fn raw_mut(&mut self, b: u64) -> Option<&mut Block> {
        self.blocks.get_mut(&b).map(NodeBuf::make_mut)
    }

    /// Reseals block `b` after its bytes were changed behind the tree's back.
    pub fn reseal(&mut self, b: u64) {
        let (g, id) = (self.generation, self.fs_id);
        if let Some(x) = self.blocks.get_mut(&b) {
            seal_block(NodeBuf::make_mut(x), b, g, id);
        }
    }

    /// Puts raw bytes in as block `b`, allocated, without sealing them.
    pub fn put_raw(&mut self, b: u64, bytes: Box<Block>) {
        self.blocks.insert(b, NodeBuf::from(bytes));
        self.live.insert(b);
        self.next = self.next.max(b.saturating_add(1));
    }
}

impl NodeStore for MemStore {
    fn read_node(&mut self, b: BlockNo, kind: BlockKind, owner: u64) -> Result<NodeBuf> {
        self.reads += 1;
        let Some(x) = self.blocks.get(&b.0).filter(|_| self.live.contains(&b.0)) else {
            return Err(TreeError::Store(format!(
                "read of block {b}, which holds no node"
            )));
        };
        verify_block(
            x,
            &Expect {
                blockno: b.0,
                kind,
                owner: Some(owner),
                fs_id: self.fs_id,
            },
        )?;
        Ok(x.clone())
    }

    fn write_node(&mut self, b: BlockNo, mut node: NodeBuf) -> Result<()> {
        self.writes += 1;
        if !self.live.contains(&b.0) {
            return Err(TreeError::Store(format!(
                "write of block {b}, which is not allocated"
            )));
        }
        seal_block(
            NodeBuf::make_mut(&mut node),
            b.0,
            self.generation,
            self.fs_id,
        );
        self.blocks.insert(b.0, node);
        Ok(())
    }

    fn alloc_node(&mut self, _kind: BlockKind, _owner: u64) -> Result<BlockNo> {
        if let Some(n) = self.alloc_budget.as_mut() {
            if *n == 0 {
                return Err(TreeError::NoSpace);
            }
            *n -= 1;
        }
        self.allocs += 1;
        let b = self.next;
        self.next += 1;
        self.live.insert(b);
        Ok(BlockNo(b))
    }

    fn free_node(&mut self, b: BlockNo, kind: BlockKind, owner: u64) -> Result<()> {
        self.frees += 1;
        if !self.live.remove(&b.0) {
            return Err(TreeError::Store(format!(
                "free of block {b}, which is not allocated (double free?)"
            )));
        }
        // A written node must be one of the tree's: freeing anything else
        // would hand someone else's block to the allocator.
        if let Some(x) = self.blocks.remove(&b.0) {
            verify_block(
                &x,
                &Expect {
                    blockno: b.0,
                    kind,
                    owner: Some(owner),
                    fs_id: self.fs_id,
                },
            )?;
        }
        Ok(())
    }
}
