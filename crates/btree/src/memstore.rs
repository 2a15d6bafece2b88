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
    /// Reads refuse a block whose crc is not the one its pointer names (on
    /// by default; the fuzz target turns it off to reach the checks behind
    /// it with blocks it reseals).
    pub check_crcs: bool,
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
            check_crcs: true,
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

    /// Reseals block `b` after its bytes were changed behind the tree's back;
    /// returns its new crc (0 when it holds nothing). The pointer to it still
    /// names the old one: see [`MemStore::reseal_up`].
    pub fn reseal(&mut self, b: u64) -> u32 {
        let (g, id) = (self.generation, self.fs_id);
        match self.blocks.get_mut(&b) {
            Some(x) => {
                let x = NodeBuf::make_mut(x);
                seal_block(x, b, g, id);
                crate::sealed_crc(x)
            }
            None => 0,
        }
    }

    /// [`MemStore::reseal`], then makes every pointer to `b` (in an internal
    /// node of a tree of `K` keys and `A` summaries, or `root`) name its new
    /// crc, resealing the nodes that hold them in turn: a change behind the
    /// tree's back that only the checks past the crc may catch.
    pub fn reseal_up<
        K: daxfs_format::records::Key,
        V: daxfs_format::records::Record,
        A: crate::Summary<K, V>,
    >(
        &mut self,
        root: &mut daxfs_format::records::TreeRoot,
        b: u64,
    ) {
        let mut todo = vec![b];
        let mut rounds = 0;
        while let Some(b) = todo.pop() {
            rounds += 1;
            if rounds > 10_000 {
                return;
            }
            let crc = self.reseal(b);
            if root.block.get() == b {
                root.crc = crc.into();
            }
            let holders: Vec<(u64, usize)> = self
                .blocks
                .iter()
                .filter(|&(&n, _)| n != b)
                .filter_map(|(&n, x)| {
                    let h = daxfs_format::block::header(&x[..]).ok()?;
                    (h.level > 0).then_some((n, h.count.get() as usize))
                })
                .filter_map(|(n, count)| {
                    let x = self.blocks.get(&n)?;
                    let kids = crate::node::Layout::<K, V, A>::INT_KIDS;
                    let crcs = crate::node::Layout::<K, V, A>::INT_CRCS;
                    let mut hit = vec![];
                    for i in 0..count.min(crate::node::Layout::<K, V, A>::INT_CAP) {
                        let c = x.get(kids + 8 * i..kids + 8 * i + 8)?;
                        if u64::from_le_bytes(c.try_into().ok()?) == b {
                            hit.push(crcs + 4 * i);
                        }
                    }
                    (!hit.is_empty()).then_some((n, hit))
                })
                .flat_map(|(n, hit)| hit.into_iter().map(move |at| (n, at)))
                .collect();
            for (n, at) in holders {
                if let Some(x) = self.blocks.get_mut(&n)
                    && let Some(d) = NodeBuf::make_mut(x).get_mut(at..at + 4)
                {
                    d.copy_from_slice(&crc.to_le_bytes());
                    todo.push(n);
                }
            }
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
    fn read_node(&mut self, b: BlockNo, kind: BlockKind, owner: u64, crc: u32) -> Result<NodeBuf> {
        self.reads += 1;
        let Some(x) = self.blocks.get(&b.0).filter(|_| self.live.contains(&b.0)) else {
            return Err(TreeError::Store(format!(
                "read of block {b}, which holds no node"
            )));
        };
        let h = verify_block(
            x,
            &Expect {
                blockno: b.0,
                kind,
                owner: Some(owner),
                fs_id: self.fs_id,
            },
        )?;
        if self.check_crcs && h.crc.get() != crc {
            return Err(daxfs_format::FormatError::StalePointer {
                block: b.0,
                expected: crc,
                found: h.crc.get(),
            }
            .into());
        }
        Ok(x.clone())
    }

    fn write_node(&mut self, b: BlockNo, mut node: NodeBuf) -> Result<u32> {
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
        let crc = crate::sealed_crc(&node);
        self.blocks.insert(b.0, node);
        Ok(crc)
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
