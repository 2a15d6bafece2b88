//! Placeholder: the B+tree algorithms (see the crate docs for the contract).
use crate::{NodeStore, Result};
use daxfs_format::BlockKind;
use daxfs_format::records::{Key, Record, TreeRoot};
use std::marker::PhantomData;
use std::ops::ControlFlow;

/// Shape figures returned by [`BTree::check`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TreeStats {
    pub records: u64,
    pub nodes: u64,
    pub height: u32,
}

/// A B+tree of `K -> V` records whose nodes are of `kind`, owned by `owner`.
#[derive(Clone, Copy, Debug)]
pub struct BTree<K, V> {
    pub kind: BlockKind,
    pub owner: u64,
    _p: PhantomData<(K, V)>,
}

impl<K: Key, V: Record> BTree<K, V> {
    pub fn new(kind: BlockKind, owner: u64) -> Self {
        BTree { kind, owner, _p: PhantomData }
    }
    /// The value of `key`.
    pub fn get(&self, s: &mut dyn NodeStore, root: &TreeRoot, key: &K) -> Result<Option<V>> {
        let _ = (s, root, key);
        todo!()
    }
    /// Inserts or replaces; returns the old value.
    pub fn insert(&self, s: &mut dyn NodeStore, root: &mut TreeRoot, key: K, val: V) -> Result<Option<V>> {
        let _ = (s, root, key, val);
        todo!()
    }
    /// Removes `key`; returns its value.
    pub fn remove(&self, s: &mut dyn NodeStore, root: &mut TreeRoot, key: &K) -> Result<Option<V>> {
        let _ = (s, root, key);
        todo!()
    }
    /// Calls `f` on every record with `lo <= key <= hi`, in key order, until it breaks.
    pub fn range(&self, s: &mut dyn NodeStore, root: &TreeRoot, lo: &K, hi: &K, f: &mut dyn FnMut(K, V) -> ControlFlow<()>) -> Result<()> {
        let _ = (s, root, lo, hi, f);
        todo!()
    }
    /// The record with the largest key `<= key`.
    pub fn last_le(&self, s: &mut dyn NodeStore, root: &TreeRoot, key: &K) -> Result<Option<(K, V)>> {
        let _ = (s, root, key);
        todo!()
    }
    /// The record with the smallest key `>= key`.
    pub fn first_ge(&self, s: &mut dyn NodeStore, root: &TreeRoot, key: &K) -> Result<Option<(K, V)>> {
        let _ = (s, root, key);
        todo!()
    }
    /// Frees every node; the root becomes empty.
    pub fn destroy(&self, s: &mut dyn NodeStore, root: &mut TreeRoot) -> Result<()> {
        let _ = (s, root);
        todo!()
    }
    /// Calls `f(block, level)` for every node (for fsck and the reverse map).
    pub fn visit_nodes(&self, s: &mut dyn NodeStore, root: &TreeRoot, f: &mut dyn FnMut(daxfs_format::BlockNo, u32)) -> Result<()> {
        let _ = (s, root, f);
        todo!()
    }
    /// Verifies every invariant (order, separator bounds, uniform depth, counts,
    /// fill) and returns the tree's shape.
    pub fn check(&self, s: &mut dyn NodeStore, root: &TreeRoot) -> Result<TreeStats> {
        let _ = (s, root);
        todo!()
    }
}
