//! The B+tree algorithms, over the node layout described in `node.rs`.
//!
//! Nothing here recurses: every walk keeps an explicit path or stack whose
//! depth is bounded by the tree height, itself bounded by [`MAX_HEIGHT`]. Every
//! node read is validated (kind, owner, level, count) before its bytes are
//! used, and each level must be exactly one below its parent's, so a child
//! pointer that loops back up the tree is caught on the first step.
#![deny(clippy::indexing_slicing)]

use crate::node::{Layout, Node};
use crate::{MAX_HEIGHT, NodeStore, Result, Summary, TreeError};
use daxfs_format::block::header;
use daxfs_format::records::{Key, Record, TreeRoot};
use daxfs_format::{BlockKind, BlockNo, FormatError};
use std::collections::HashSet;
use std::marker::PhantomData;
use std::ops::ControlFlow;

/// Shape figures returned by [`BTree::check`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TreeStats {
    /// Records in the leaves.
    pub records: u64,
    /// Nodes (leaves and internal nodes).
    pub nodes: u64,
    /// Levels: 0 for the empty tree, 1 when the root is a leaf.
    pub height: u32,
}

/// A B+tree of `K -> V` records whose nodes are of `kind`, owned by `owner`.
///
/// The handle holds no state besides these two: the tree lives in the store
/// and is named by the [`TreeRoot`] passed to every call.
///
/// ```
/// use daxfs_btree::records::TreeRoot;
/// use daxfs_btree::{BTree, MemStore};
/// use daxfs_format::BlockKind;
/// use std::ops::ControlFlow;
///
/// let tree = BTree::<u64, u64>::new(BlockKind::InodeTree, 0);
/// let mut store = MemStore::new();
/// let mut root = TreeRoot::EMPTY;
/// for i in 0..1000 {
///     tree.insert(&mut store, &mut root, i, i * i)?;
/// }
/// assert_eq!(tree.get(&mut store, &root, &12)?, Some(144));
/// assert_eq!(tree.last_le(&mut store, &root, &5000)?, Some((999, 998_001)));
/// let mut sum = 0;
/// tree.range(&mut store, &root, &10, &19, &mut |_, v| {
///     sum += v;
///     ControlFlow::Continue(())
/// })?;
/// assert_eq!(sum, (10..=19).map(|i| i * i).sum());
/// tree.destroy(&mut store, &mut root)?;
/// assert_eq!(store.live_nodes(), 0);
/// # Ok::<(), daxfs_btree::TreeError>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct BTree<K, V, A = ()> {
    /// Kind written to, and expected of, every node.
    pub kind: BlockKind,
    /// Owner written to, and expected of, every node (inode number or 0).
    pub owner: u64,
    _p: PhantomData<(K, V, A)>,
}

/// A node on the way down from the root, and the child slot taken from it.
type Path<K, V, A> = Vec<(Node<K, V, A>, usize)>;

/// Called by the internal walk with each node and the bounds `[lo, hi)` that
/// its parent gives it (`None`: unbounded).
type NodeVisitor<'a, K, V, A> =
    dyn FnMut(&Node<K, V, A>, Option<&K>, Option<&K>) -> Result<()> + 'a;

/// An internal node on the path of a range walk: the child slot being
/// walked, and the node's own bounds.
struct Frame<K, V, A> {
    node: Node<K, V, A>,
    idx: usize,
    lo: Option<K>,
    hi: Option<K>,
}

/// `lo <= k < hi`, where `None` is unbounded.
fn within<K: Ord>(k: &K, lo: Option<&K>, hi: Option<&K>) -> bool {
    lo.is_none_or(|l| l <= k) && hi.is_none_or(|h| k < h)
}

impl<K: Key, V: Record, A: Summary<K, V>> BTree<K, V, A> {
    /// Records per leaf node.
    pub const LEAF_CAPACITY: usize = Layout::<K, V, A>::LEAF_CAP;
    /// Children per internal node.
    pub const INTERNAL_CAPACITY: usize = Layout::<K, V, A>::INT_CAP;

    /// A handle on the tree of `kind` nodes owned by `owner`.
    pub fn new(kind: BlockKind, owner: u64) -> Self {
        // Forces the compile-time capacity checks for this (K, V).
        let () = Layout::<K, V, A>::VALID;
        BTree {
            kind,
            owner,
            _p: PhantomData,
        }
    }

    /// The value of `key`.
    pub fn get(&self, s: &mut dyn NodeStore, root: &TreeRoot, key: &K) -> Result<Option<V>> {
        let height = self.height(root)?;
        if height == 0 {
            return Ok(None);
        }
        let leaf = self.descend(s, root, height, key, None)?;
        match leaf.search(key)? {
            Ok(i) => Ok(Some(leaf.val(i)?)),
            Err(_) => Ok(None),
        }
    }

    /// Inserts or replaces; returns the old value.
    ///
    /// When the insert needs new nodes, all of them are allocated before any
    /// node is changed, so running out of space leaves the tree as it was.
    pub fn insert(
        &self,
        s: &mut dyn NodeStore,
        root: &mut TreeRoot,
        key: K,
        val: V,
    ) -> Result<Option<V>> {
        self.insert_packing(s, root, key, val, false)
    }

    /// [`BTree::insert`]; with `pack`, a full leaf that `key` would extend
    /// past the largest key of the tree keeps every record and the new leaf
    /// starts with `key` alone, below the minimum fill: the caller
    /// ([`BTree::insert_sorted`]) fills it with the keys that follow.
    pub(crate) fn insert_packing(
        &self,
        s: &mut dyn NodeStore,
        root: &mut TreeRoot,
        key: K,
        val: V,
        pack: bool,
    ) -> Result<Option<V>> {
        let height = self.height(root)?;
        if height == 0 {
            let no = s.alloc_node(self.kind, self.owner)?.0;
            let mut leaf = Node::empty(no, self.kind, self.owner, 0);
            leaf.open_gap(0, 1)?;
            leaf.set_key(0, &key)?;
            leaf.set_val(0, &val)?;
            let crc = self.store(s, leaf)?;
            *root = TreeRoot::new(no, 1, crc);
            return Ok(None);
        }
        let mut path = Vec::with_capacity(height as usize);
        let mut leaf = self.descend(s, root, height, &key, Some(&mut path))?;
        let pos = match leaf.search(&key)? {
            Ok(i) => {
                let old = leaf.val(i)?;
                leaf.set_val(i, &val)?;
                // A record whose summary only grew (old + new = new): the
                // leaf's is its parent's copy plus the new one (see
                // `propagate`); else the leaf is joined again.
                let new = A::of(&key, &val);
                let sum = match path.last() {
                    Some((parent, idx)) if A::of(&key, &old).join(new) == new => {
                        parent.sum(*idx)?.join(new)
                    }
                    _ => leaf.summary()?,
                };
                let crc = self.store(s, leaf)?;
                self.propagate(s, root, &mut path, sum, crc)?;
                return Ok(Some(old));
            }
            Err(pos) => pos,
        };
        if leaf.count < leaf.cap() {
            leaf.open_gap(pos, 1)?;
            leaf.set_key(pos, &key)?;
            leaf.set_val(pos, &val)?;
            // The leaf's summary is the one its parent holds joined with
            // the new record's: no scan of the leaf (a root leaf has none).
            let sum = match path.last() {
                Some((parent, idx)) => parent.sum(*idx)?.join(A::of(&key, &val)),
                None => A::of(&key, &val),
            };
            let crc = self.store(s, leaf)?;
            self.propagate(s, root, &mut path, sum, crc)?;
            return Ok(None);
        }

        // The leaf splits, and so does every full ancestor right above it; when
        // they are all full the root splits too and the tree grows a level.
        let full = path
            .iter()
            .rev()
            .take_while(|(n, _)| n.count >= n.cap())
            .count();
        let grows = full == path.len();
        if grows && height >= MAX_HEIGHT {
            return Err(TreeError::Store(format!(
                "{} would grow past {MAX_HEIGHT} levels",
                self.kind.name()
            )));
        }
        let mut fresh = self
            .alloc_all(s, 1 + full + usize::from(grows))?
            .into_iter();
        let mut next_block = move || {
            fresh
                .next()
                .ok_or_else(|| TreeError::Store("tree split ran out of preallocated blocks".into()))
        };

        // Appending past the largest key (sequence numbers, new inode
        // numbers): the split leaves the left node three-quarters full
        // instead of half, so trees filled in key order end up dense.
        let appending = pos == leaf.count && path.iter().all(|(n, idx)| idx + 1 == n.count);
        let mut right = Node::empty(next_block()?, self.kind, self.owner, 0);
        let mut sep = if pack && appending {
            leaf.split_off(leaf.count, &mut right)?;
            right.open_gap(0, 1)?;
            right.set_key(0, &key)?;
            right.set_val(0, &val)?;
            key
        } else {
            Self::split_insert(&mut leaf, &mut right, pos, appending, |n, i| {
                n.set_key(i, &key)?;
                n.set_val(i, &val)
            })?
        };
        let mut left_no = leaf.no;
        let mut right_no = right.no;
        let mut left_sum = leaf.summary()?;
        let mut right_sum = right.summary()?;
        let mut left_crc = self.store(s, leaf)?;
        let mut right_crc = self.store(s, right)?;

        // Hand the new (separator, right node) pair up until a node has room.
        while let Some((mut parent, idx)) = path.pop() {
            parent.set_sum(idx, &left_sum)?;
            parent.set_crc(idx, left_crc)?;
            if parent.count < parent.cap() {
                parent.open_gap(idx + 1, 1)?;
                parent.set_key(idx + 1, &sep)?;
                parent.set_child(idx + 1, right_no)?;
                parent.set_crc(idx + 1, right_crc)?;
                parent.set_sum(idx + 1, &right_sum)?;
                let sum = parent.summary()?;
                let crc = self.store(s, parent)?;
                self.propagate(s, root, &mut path, sum, crc)?;
                return Ok(None);
            }
            let mut right = Node::empty(next_block()?, self.kind, self.owner, parent.level);
            let (k, c, cc, a) = (sep, right_no, right_crc, right_sum);
            sep = Self::split_insert(&mut parent, &mut right, idx + 1, appending, |n, i| {
                n.set_key(i, &k)?;
                n.set_child(i, c)?;
                n.set_crc(i, cc)?;
                n.set_sum(i, &a)
            })?;
            left_no = parent.no;
            right_no = right.no;
            left_sum = parent.summary()?;
            right_sum = right.summary()?;
            left_crc = self.store(s, parent)?;
            right_crc = self.store(s, right)?;
        }

        // The root itself split: a new root above the two halves. Its level is
        // the old height, which is below MAX_HEIGHT <= u8::MAX.
        let mut top = Node::empty(next_block()?, self.kind, self.owner, height as u8);
        top.open_gap(0, 2)?;
        top.set_key(0, &K::MIN)?;
        top.set_child(0, left_no)?;
        top.set_crc(0, left_crc)?;
        top.set_sum(0, &left_sum)?;
        top.set_key(1, &sep)?;
        top.set_child(1, right_no)?;
        top.set_crc(1, right_crc)?;
        top.set_sum(1, &right_sum)?;
        let top_no = top.no;
        let crc = self.store(s, top)?;
        *root = TreeRoot::new(top_no, height + 1, crc);
        Ok(None)
    }

    /// Removes `key`; returns its value.
    ///
    /// A node left less than half full borrows from or merges with a sibling;
    /// merges may climb to the root, which collapses when it keeps a single
    /// child. Removing the last record frees the last node and leaves
    /// [`TreeRoot::EMPTY`].
    pub fn remove(&self, s: &mut dyn NodeStore, root: &mut TreeRoot, key: &K) -> Result<Option<V>> {
        let height = self.height(root)?;
        if height == 0 {
            return Ok(None);
        }
        let mut path = Vec::with_capacity(height as usize);
        let mut leaf = self.descend(s, root, height, key, Some(&mut path))?;
        let Ok(pos) = leaf.search(key)? else {
            return Ok(None);
        };
        let old = leaf.val(pos)?;
        leaf.close_gap(pos, 1)?;

        // `node` has lost an entry; fix it up and climb while merges cascade.
        let mut node = leaf;
        loop {
            let Some((mut parent, idx)) = path.pop() else {
                // `node` is the root.
                if node.is_leaf() && node.count == 0 {
                    self.free(s, node.no)?;
                    *root = TreeRoot::EMPTY;
                } else if !node.is_leaf() && node.count == 1 {
                    let (child, crc) = (node.child(0)?, node.crc(0)?);
                    self.free(s, node.no)?;
                    *root = TreeRoot::new(child, root.height.get().saturating_sub(1), crc);
                } else {
                    root.crc = self.store(s, node)?.into();
                }
                return Ok(Some(old));
            };
            if node.count >= Layout::<K, V, A>::min(node.level) {
                let sum = node.summary()?;
                let crc = self.store(s, node)?;
                path.push((parent, idx));
                self.propagate(s, root, &mut path, sum, crc)?;
                return Ok(Some(old));
            }
            if parent.count < 2 {
                return Err(parent.bad("internal node with a single child"));
            }
            // Pair the node with its left sibling, or its right one when it is
            // the first child: `l` and `r` are children `ri - 1` and `ri`.
            let ri = idx.max(1);
            let sib_i = if idx > 0 { idx - 1 } else { 1 };
            let sib_no = parent.child(sib_i)?;
            if sib_no == node.no {
                return Err(parent.bad(format!("children {} and {ri} are the same node", ri - 1)));
            }
            let sib = self.load(s, sib_no, node.level.into(), false, parent.crc(sib_i)?)?;
            let (mut l, mut r) = if idx > 0 { (sib, node) } else { (node, sib) };
            if !l.is_leaf() {
                // The parent's separator is the lower bound of r's first child:
                // with it in r's unused slot 0, r's slots can be appended to
                // l's as they are.
                r.set_key(0, &parent.key(ri)?)?;
            }
            if l.count + r.count <= l.cap() {
                let n = r.count;
                l.take_front(&mut r, n)?;
                self.free(s, r.no)?;
                parent.close_gap(ri, 1)?;
                parent.set_sum(ri - 1, &l.summary()?)?;
                parent.set_crc(ri - 1, self.store(s, l)?)?;
                node = parent;
            } else {
                // Both have more than half the capacity between them: share
                // evenly, and the parent gets r's new first key as separator.
                let want = (l.count + r.count) / 2;
                if l.count > want {
                    let n = l.count - want;
                    l.give_back(&mut r, n)?;
                } else {
                    let n = want - l.count;
                    l.take_front(&mut r, n)?;
                }
                parent.set_key(ri, &r.key(0)?)?;
                parent.set_sum(ri - 1, &l.summary()?)?;
                parent.set_sum(ri, &r.summary()?)?;
                parent.set_crc(ri - 1, self.store(s, l)?)?;
                parent.set_crc(ri, self.store(s, r)?)?;
                let sum = parent.summary()?;
                let crc = self.store(s, parent)?;
                self.propagate(s, root, &mut path, sum, crc)?;
                return Ok(Some(old));
            }
        }
    }

    /// Calls `f` on every record with `lo <= key <= hi`, in key order, until it breaks.
    ///
    /// The keys passed to `f` are strictly increasing even on a corrupt tree:
    /// a key out of order or outside its node's bounds ends the walk with
    /// [`TreeError::Corrupt`].
    pub fn range(
        &self,
        s: &mut dyn NodeStore,
        root: &TreeRoot,
        lo: &K,
        hi: &K,
        f: &mut dyn FnMut(K, V) -> ControlFlow<()>,
    ) -> Result<()> {
        self.range_pruned(s, root, lo, hi, &|_| false, f)
    }

    /// As [`BTree::range`], but skips every subtree whose summary `skip`
    /// accepts (without reading it): `f` sees the records with
    /// `lo <= key <= hi` that lie in no skipped subtree. Records of a leaf
    /// reached are all offered, so `f` filters them too.
    ///
    /// With summaries that bound what a subtree holds (the largest end of
    /// an interval, say), a walk reads the two paths to `lo` and `hi` and
    /// the subtrees that hold a wanted record: O(log n) nodes for each
    /// record found, instead of every node between `lo` and `hi`.
    pub fn range_pruned(
        &self,
        s: &mut dyn NodeStore,
        root: &TreeRoot,
        lo: &K,
        hi: &K,
        skip: &dyn Fn(&A) -> bool,
        f: &mut dyn FnMut(K, V) -> ControlFlow<()>,
    ) -> Result<()> {
        let height = self.height(root)?;
        if height == 0 || lo > hi {
            return Ok(());
        }
        let mut stack: Vec<Frame<K, V, A>> = Vec::with_capacity(height as usize);
        let mut no = root.block.get();
        let mut crc = root.crc.get();
        let (mut b_lo, mut b_hi): (Option<K>, Option<K>) = (None, None);
        let mut first_leaf = true;
        let mut last: Option<K> = None;
        loop {
            // Down to a leaf: following `lo` the first time, leftmost after.
            let level = (height - 1).saturating_sub(stack.len() as u32);
            let node = self.load(s, no, level, stack.is_empty(), crc)?;
            if !node.is_leaf() {
                let idx = if first_leaf { node.route(lo)? } else { 0 };
                let skipped = A::SIZE > 0 && skip(&node.sum(idx)?);
                let (c_lo, c_hi) = Self::child_bounds(&node, idx, b_lo, b_hi)?;
                let (child, child_crc) = (node.child(idx)?, node.crc(idx)?);
                stack.push(Frame {
                    node,
                    idx,
                    lo: b_lo,
                    hi: b_hi,
                });
                if skipped {
                    first_leaf = false;
                    match Self::next_child(&mut stack, hi, skip)? {
                        Some((c, cc, l, h)) => (no, crc, b_lo, b_hi) = (c, cc, l, h),
                        None => return Ok(()),
                    }
                } else {
                    (no, crc) = (child, child_crc);
                    (b_lo, b_hi) = (c_lo, c_hi);
                }
                continue;
            }

            // A leaf whose ends lie outside its bounds is reached through a
            // wrong pointer. Checking both ends also means no leaf can be
            // walked twice through two parents, as sibling bounds are disjoint.
            if node.count > 0 {
                let (a, z) = (node.key(0)?, node.key(node.count - 1)?);
                if !within(&a, b_lo.as_ref(), b_hi.as_ref())
                    || !within(&z, b_lo.as_ref(), b_hi.as_ref())
                {
                    return Err(node.bad(format!(
                        "keys {a:?}..={z:?} outside the bounds given by the parent"
                    )));
                }
            }
            let start = if first_leaf {
                node.search(lo)?.unwrap_or_else(|i| i)
            } else {
                0
            };
            first_leaf = false;
            for i in start..node.count {
                let k = node.key(i)?;
                if k > *hi {
                    return Ok(());
                }
                if k < *lo {
                    continue;
                }
                if last.is_some_and(|l| k <= l) || !within(&k, b_lo.as_ref(), b_hi.as_ref()) {
                    return Err(node.bad(format!(
                        "its keys are out of order (entry {} of {})",
                        i + 1,
                        node.count
                    )));
                }
                last = Some(k);
                if f(k, node.val(i)?).is_break() {
                    return Ok(());
                }
            }

            // Up to the nearest ancestor with a child left, then down again.
            match Self::next_child(&mut stack, hi, skip)? {
                Some((c, cc, l, h)) => (no, crc, b_lo, b_hi) = (c, cc, l, h),
                None => return Ok(()),
            }
        }
    }

    /// The next child to walk after the one the top of `stack` is on: its
    /// block, crc and bounds, climbing as needed and passing over the children
    /// that `skip` accepts. `None` when no child left can hold a key `<= hi`.
    #[allow(clippy::type_complexity)]
    fn next_child(
        stack: &mut Vec<Frame<K, V, A>>,
        hi: &K,
        skip: &dyn Fn(&A) -> bool,
    ) -> Result<Option<(u64, u32, Option<K>, Option<K>)>> {
        loop {
            let Some(fr) = stack.last_mut() else {
                return Ok(None);
            };
            fr.idx += 1;
            if fr.idx < fr.node.count {
                let (c_lo, c_hi) = Self::child_bounds(&fr.node, fr.idx, fr.lo, fr.hi)?;
                if c_lo.is_some_and(|c| c > *hi) {
                    return Ok(None);
                }
                if A::SIZE > 0 && skip(&fr.node.sum(fr.idx)?) {
                    continue;
                }
                return Ok(Some((
                    fr.node.child(fr.idx)?,
                    fr.node.crc(fr.idx)?,
                    c_lo,
                    c_hi,
                )));
            }
            stack.pop();
        }
    }

    /// The record with the largest key `<= key`.
    pub fn last_le(
        &self,
        s: &mut dyn NodeStore,
        root: &TreeRoot,
        key: &K,
    ) -> Result<Option<(K, V)>> {
        let height = self.height(root)?;
        if height == 0 {
            return Ok(None);
        }
        let mut path = Vec::with_capacity(height as usize);
        let leaf = self.descend(s, root, height, key, Some(&mut path))?;
        let n = leaf.upper_bound(0, key)?;
        let found = if n > 0 {
            Some((leaf.key(n - 1)?, leaf.val(n - 1)?, leaf.no))
        } else {
            // Every key here is above `key` (the leaf's smallest keys were
            // removed since its separator was set): the answer is the last
            // record of the previous leaf, under the nearest ancestor that has
            // a child left of the path.
            let mut found = None;
            while let Some((node, idx)) = path.pop() {
                if idx == 0 {
                    continue;
                }
                let mut no = node.child(idx - 1)?;
                let mut crc = node.crc(idx - 1)?;
                let mut level = u32::from(node.level).saturating_sub(1);
                loop {
                    let n = self.load(s, no, level, false, crc)?;
                    let Some(i) = n.count.checked_sub(1) else {
                        break;
                    };
                    if n.is_leaf() {
                        found = Some((n.key(i)?, n.val(i)?, n.no));
                        break;
                    }
                    (no, crc) = (n.child(i)?, n.crc(i)?);
                    level = level.saturating_sub(1);
                }
                break;
            }
            found
        };
        match found {
            Some((k, _, no)) if k > *key => Err(TreeError::Corrupt {
                kind: self.kind.name(),
                block: no,
                what: "a key is out of order".into(),
            }),
            Some((k, v, _)) => Ok(Some((k, v))),
            None => Ok(None),
        }
    }

    /// The record with the smallest key `>= key`.
    pub fn first_ge(
        &self,
        s: &mut dyn NodeStore,
        root: &TreeRoot,
        key: &K,
    ) -> Result<Option<(K, V)>> {
        let mut found = None;
        self.range(s, root, key, &K::MAX, &mut |k, v| {
            found = Some((k, v));
            ControlFlow::Break(())
        })?;
        Ok(found)
    }

    /// Frees every node; the root becomes empty.
    ///
    /// The whole tree is walked and validated before the first node is freed,
    /// so a corrupt tree is reported without freeing anything (and never frees
    /// a block twice or one reached through a wild pointer).
    pub fn destroy(&self, s: &mut dyn NodeStore, root: &mut TreeRoot) -> Result<()> {
        let mut blocks = Vec::new();
        self.walk(s, root, &mut |n, _, _| {
            blocks.push(n.no);
            Ok(())
        })?;
        for b in blocks {
            self.free(s, b)?;
        }
        *root = TreeRoot::EMPTY;
        Ok(())
    }

    /// Calls `f(block, level)` for every node (for fsck and the reverse map).
    ///
    /// Nodes come parent first, children in key order. A node reached twice
    /// (a shared child or a cycle) is an error.
    pub fn visit_nodes(
        &self,
        s: &mut dyn NodeStore,
        root: &TreeRoot,
        f: &mut dyn FnMut(daxfs_format::BlockNo, u32),
    ) -> Result<()> {
        self.walk(s, root, &mut |n, _, _| {
            f(BlockNo(n.no), u32::from(n.level));
            Ok(())
        })?;
        Ok(())
    }

    /// [`BTree::visit_nodes`], with each node's crc (the one its pointer
    /// names, which the node was read with).
    pub fn visit_sealed(
        &self,
        s: &mut dyn NodeStore,
        root: &TreeRoot,
        f: &mut dyn FnMut(daxfs_format::BlockNo, u32, u32),
    ) -> Result<()> {
        self.walk(s, root, &mut |n, _, _| {
            f(BlockNo(n.no), u32::from(n.level), n.sealed_crc());
            Ok(())
        })?;
        Ok(())
    }

    /// The nodes from the root down to the leaf whose range holds `key`,
    /// root first.
    pub fn path(&self, s: &mut dyn NodeStore, root: &TreeRoot, key: &K) -> Result<Vec<u64>> {
        let height = self.height(root)?;
        if height == 0 {
            return Ok(vec![]);
        }
        let mut path = Vec::with_capacity(height as usize);
        let leaf = self.descend(s, root, height, key, Some(&mut path))?;
        let mut out: Vec<u64> = path.iter().map(|(n, _)| n.no).collect();
        out.push(leaf.no);
        Ok(out)
    }

    /// A key that leads from the root to the node in `block` (a sealed node of
    /// this tree, perhaps read from a copy elsewhere), and the node's level.
    ///
    /// A leaf's first key lies in its bounds; so does an internal node's
    /// second key (its first is not kept up to date). `None` for a node that
    /// holds no such key (an empty root leaf, or a root with one child):
    /// only a root can be such a node.
    pub fn node_key(&self, block: &daxfs_format::Block) -> Result<(Option<K>, u32)> {
        let h = header(&block[..])?;
        if h.kind != self.kind as u8 {
            return Err(FormatError::WrongKind {
                block: h.blockno.get(),
                expected: self.kind,
                found: h.kind,
            }
            .into());
        }
        let count = h.count.get() as usize;
        let cap = Layout::<K, V, A>::cap(h.level);
        if count > cap {
            return Err(self.corrupt(
                h.blockno.get(),
                format!("count {count} exceeds the node capacity {cap}"),
            ));
        }
        let node: Node<K, V, A> = Node::from_parts(
            h.blockno.get(),
            self.kind,
            self.owner,
            h.level,
            count,
            crate::NodeBuf::new(*block),
        );
        let i = if h.level == 0 { 0 } else { 1 };
        let key = if count > i { Some(node.key(i)?) } else { None };
        Ok((key, u32::from(h.level)))
    }

    /// Moves the reference to node `old` (at `level`, holding `key` within
    /// its bounds: see [`BTree::node_key`]) over to `new`: its parent's child
    /// pointer, or the root when `old` is the root, with the crc `new_crc`
    /// the caller sealed `new` with (the pointers above follow, up to the
    /// root). The caller has staged `new` with `old`'s contents (`new` may
    /// be `old`, resealed). `old` itself is never read, so this works
    /// when it is unreadable. Returns false, changing nothing, when the path
    /// that `key` takes does not lead to `old` at `level`.
    #[allow(clippy::too_many_arguments)]
    pub fn relocate(
        &self,
        s: &mut dyn NodeStore,
        root: &mut TreeRoot,
        old: u64,
        new: u64,
        new_crc: u32,
        key: Option<&K>,
        level: u32,
    ) -> Result<bool> {
        let height = self.height(root)?;
        if height == 0 {
            return Ok(false);
        }
        if root.block.get() == old {
            if height - 1 != level {
                return Ok(false);
            }
            *root = TreeRoot::new(new, height, new_crc);
            return Ok(true);
        }
        let Some(key) = key else {
            return Ok(false);
        };
        let mut no = root.block.get();
        let mut crc = root.crc.get();
        let mut lvl = height - 1;
        let mut path = Vec::with_capacity(height as usize);
        while lvl > level {
            let node = self.load(s, no, lvl, lvl == height - 1, crc)?;
            let idx = node.route(key)?;
            let (child, child_crc) = (node.child(idx)?, node.crc(idx)?);
            path.push((node, idx));
            if lvl == level + 1 {
                if child != old {
                    return Ok(false);
                }
                let Some((parent, _)) = path.last_mut() else {
                    return Ok(false);
                };
                parent.set_child(idx, new)?;
                // The moved node's records are the same: so is its summary.
                let sum = parent.sum(idx)?;
                self.propagate(s, root, &mut path, sum, new_crc)?;
                return Ok(true);
            }
            (no, crc) = (child, child_crc);
            lvl -= 1;
        }
        Ok(false)
    }

    /// Verifies every invariant (order, separator bounds, uniform depth, counts,
    /// fill, and the summaries of augmented trees) and returns the tree's shape.
    pub fn check(&self, s: &mut dyn NodeStore, root: &TreeRoot) -> Result<TreeStats> {
        let mut st = TreeStats::default();
        let root_no = root.block.get();
        // The summary each parent holds for its children, checked when the
        // child is visited (parents come first).
        let mut sums: std::collections::HashMap<u64, A> = Default::default();
        let height = self.walk(s, root, &mut |n, lo, hi| {
            st.nodes += 1;
            if A::SIZE > 0 {
                if let Some(want) = sums.remove(&n.no)
                    && n.count > 0
                    && n.summary()? != want
                {
                    return Err(
                        n.bad("its summary differs from the one its parent holds".to_string())
                    );
                }
                if !n.is_leaf() {
                    for i in 0..n.count {
                        sums.insert(n.child(i)?, n.sum(i)?);
                    }
                }
            }
            let is_root = n.no == root_no;
            let least = match (is_root, n.is_leaf()) {
                (true, true) => 1,
                (true, false) => 2,
                (false, _) => Layout::<K, V, A>::min(n.level),
            };
            if n.count < least {
                return Err(n.bad(format!(
                    "{} entries, fewer than the minimum {least}",
                    n.count
                )));
            }
            // Leaves: every key, in [lo, hi). Internal nodes: separators
            // 1..count, in (lo, hi), as the first child must not be empty.
            let first = if n.is_leaf() { 0 } else { 1 };
            let mut prev: Option<K> = None;
            for i in first..n.count {
                let k = n.key(i)?;
                if prev.is_some_and(|p| k <= p) {
                    return Err(n.bad(format!("its key {i} is not above the key before it")));
                }
                let above_lo = match lo {
                    Some(l) if n.is_leaf() => *l <= k,
                    Some(l) => *l < k,
                    None => true,
                };
                if !above_lo || hi.is_some_and(|h| k >= *h) {
                    return Err(n.bad(format!(
                        "its key {i} is outside the bounds its parent gives"
                    )));
                }
                if n.is_leaf() {
                    n.val(i)?;
                }
                prev = Some(k);
            }
            if n.is_leaf() {
                st.records += n.count as u64;
            }
            if !n.tail_is_zero() {
                return Err(n.bad("stale bytes past the last entry"));
            }
            Ok(())
        })?;
        st.height = height;
        Ok(st)
    }

    /// Number of records, by walking every node.
    pub fn len(&self, s: &mut dyn NodeStore, root: &TreeRoot) -> Result<u64> {
        let mut n = 0u64;
        self.walk(s, root, &mut |node, _, _| {
            if node.is_leaf() {
                n += node.count as u64;
            }
            Ok(())
        })?;
        Ok(n)
    }

    /// True when the tree has no record (needs no store access).
    pub fn is_empty(&self, root: &TreeRoot) -> bool {
        root.is_empty()
    }

    /// Removes every record with `lo <= key <= hi`, passing each to `f` in key
    /// order first; returns how many were removed.
    pub fn remove_range(
        &self,
        s: &mut dyn NodeStore,
        root: &mut TreeRoot,
        lo: &K,
        hi: &K,
        f: &mut dyn FnMut(K, V),
    ) -> Result<u64> {
        let mut removed = 0u64;
        let mut from = *lo;
        while let Some((k, v)) = self.first_ge(s, root, &from)? {
            if k > *hi {
                break;
            }
            f(k, v);
            if self.remove(s, root, &k)?.is_none() {
                return Err(TreeError::Corrupt {
                    kind: self.kind.name(),
                    block: root.block.get(),
                    what: "a key found by a walk is not found by a lookup".into(),
                });
            }
            removed += 1;
            from = k;
        }
        Ok(removed)
    }

    // ---- internals ----

    /// The child at the end of `path` (the root when the path is empty)
    /// was stored with crc `crc` and now has summary `sum`: brings the
    /// crcs and summaries of the path's nodes up to date, bottom up, and
    /// the root's crc in `root`. Every ancestor is stored again (its
    /// pointer's crc changed), but summaries are recomputed only where
    /// they changed.
    pub(crate) fn propagate(
        &self,
        s: &mut dyn NodeStore,
        root: &mut TreeRoot,
        path: &mut Path<K, V, A>,
        sum: A,
        crc: u32,
    ) -> Result<()> {
        let (mut sum, mut crc) = (sum, crc);
        while let Some((mut parent, idx)) = path.pop() {
            parent.set_crc(idx, crc)?;
            let old = parent.sum(idx)?;
            parent.set_sum(idx, &sum)?;
            // Unchanged: the parent's summary is the one its own parent
            // holds. A child whose summary only grew (old + new = new)
            // makes the parent's the one its own parent holds plus the new
            // one, by associativity: the rest + old + new = the rest + new.
            // Else (or at the root, whose summary nobody keeps) the
            // children are joined again.
            if let Some((gp, gi)) = path.last() {
                sum = if old == sum {
                    gp.sum(*gi)?
                } else if old.join(sum) == sum {
                    gp.sum(*gi)?.join(sum)
                } else {
                    parent.summary()?
                };
            }
            crc = self.store(s, parent)?;
        }
        root.crc = crc.into();
        Ok(())
    }

    fn corrupt(&self, block: u64, what: impl Into<String>) -> TreeError {
        TreeError::Corrupt {
            kind: self.kind.name(),
            block,
            what: what.into(),
        }
    }

    /// Validates the root pointer and returns the height (0 = empty).
    pub(crate) fn height(&self, root: &TreeRoot) -> Result<u32> {
        let (b, h) = (root.block.get(), root.height.get());
        if b == 0 {
            return if h == 0 {
                Ok(0)
            } else {
                Err(self.corrupt(0, format!("empty tree with height {h}")))
            };
        }
        if h == 0 {
            return Err(self.corrupt(b, "tree root with height 0"));
        }
        if h > MAX_HEIGHT {
            return Err(self.corrupt(
                b,
                format!("tree height {h} exceeds the maximum {MAX_HEIGHT}"),
            ));
        }
        Ok(h)
    }

    /// Reads node `no`, expected at `level` and sealed with `crc` (the
    /// pointer's), and validates its header.
    fn load(
        &self,
        s: &mut dyn NodeStore,
        no: u64,
        level: u32,
        is_root: bool,
        crc: u32,
    ) -> Result<Node<K, V, A>> {
        let buf = s.read_node(BlockNo(no), self.kind, self.owner, crc)?;
        // The store verified kind and owner; checking again costs nothing and
        // keeps the tree safe with a store that does not.
        let h = header(&buf[..])?;
        if h.kind != self.kind as u8 {
            return Err(FormatError::WrongKind {
                block: no,
                expected: self.kind,
                found: h.kind,
            }
            .into());
        }
        if h.owner.get() != self.owner {
            return Err(FormatError::WrongOwner {
                block: no,
                expected: self.owner,
                found: h.owner.get(),
            }
            .into());
        }
        if u32::from(h.level) != level {
            return Err(self.corrupt(
                no,
                format!("node of level {} where level {level} was expected (levels must fall by one from root to leaves)", h.level),
            ));
        }
        let count = h.count.get() as usize;
        let cap = Layout::<K, V, A>::cap(h.level);
        if count > cap {
            return Err(self.corrupt(no, format!("count {count} exceeds the node capacity {cap}")));
        }
        if h.level > 0 {
            let least = if is_root { 1 } else { 2 };
            if count < least {
                return Err(self.corrupt(no, format!("internal node with {count} children")));
            }
        } else if count == 0 && !is_root {
            return Err(self.corrupt(no, "empty leaf below the root"));
        }
        Ok(Node::from_parts(
            no, self.kind, self.owner, h.level, count, buf,
        ))
    }

    /// Walks from the root down to the leaf whose range holds `key`,
    /// recording the internal nodes and the slots taken when `path` is given.
    pub(crate) fn descend(
        &self,
        s: &mut dyn NodeStore,
        root: &TreeRoot,
        height: u32,
        key: &K,
        mut path: Option<&mut Path<K, V, A>>,
    ) -> Result<Node<K, V, A>> {
        let mut no = root.block.get();
        let mut crc = root.crc.get();
        let mut level = height - 1;
        loop {
            let node = self.load(s, no, level, level == height - 1, crc)?;
            if level == 0 {
                return Ok(node);
            }
            let idx = node.route(key)?;
            (no, crc) = (node.child(idx)?, node.crc(idx)?);
            if let Some(p) = path.as_deref_mut() {
                p.push((node, idx));
            }
            level -= 1;
        }
    }

    /// The bounds `[lo, hi)` of child `i`, given the node's own bounds.
    /// Fails unless they are non-empty and nested in the node's, which keeps
    /// the bounds of siblings disjoint and increasing.
    fn child_bounds(
        node: &Node<K, V, A>,
        i: usize,
        lo: Option<K>,
        hi: Option<K>,
    ) -> Result<(Option<K>, Option<K>)> {
        let c_lo = if i == 0 { lo } else { Some(node.key(i)?) };
        let c_hi = if i + 1 >= node.count {
            hi
        } else {
            Some(node.key(i + 1)?)
        };
        let nested = |k: &Option<K>| {
            k.as_ref()
                .is_none_or(|k| within(k, lo.as_ref(), hi.as_ref()))
        };
        let non_empty = match (&c_lo, &c_hi) {
            (Some(a), Some(b)) => a < b,
            _ => true,
        };
        if (i > 0 && !nested(&c_lo)) || (i + 1 < node.count && !nested(&c_hi)) || !non_empty {
            return Err(node.bad(format!(
                "separators of child {i} out of order or outside the node's bounds"
            )));
        }
        Ok((c_lo, c_hi))
    }

    /// Inserts an entry at `pos` of the full node `left`, moving its upper half
    /// to the empty node `right`; `put` writes the entry into the slot opened
    /// for it. Returns the separator for `right`: its first key.
    fn split_insert(
        left: &mut Node<K, V, A>,
        right: &mut Node<K, V, A>,
        pos: usize,
        appending: bool,
        put: impl FnOnce(&mut Node<K, V, A>, usize) -> Result<()>,
    ) -> Result<K> {
        // Of the cap + 1 entries, the left keeps the smaller half,
        // floor((cap + 1) / 2) = ceil(cap / 2): both halves hold at least
        // floor(cap / 2), above the minimum fill. An append at the right
        // edge (`pos` is the end) leaves the right node the minimum fill
        // plus the new entry, and the left node the rest.
        let keep = if appending && pos == left.count {
            left.count - Layout::<K, V, A>::min(left.level).min(left.count / 2)
        } else {
            left.count.div_ceil(2)
        };
        if pos < keep {
            left.split_off(keep - 1, right)?;
            left.open_gap(pos, 1)?;
            put(left, pos)?;
        } else {
            left.split_off(keep, right)?;
            right.open_gap(pos - keep, 1)?;
            put(right, pos - keep)?;
        }
        right.key(0)
    }

    /// Allocates `n` blocks, or none: on failure the ones already obtained
    /// are released again.
    fn alloc_all(&self, s: &mut dyn NodeStore, n: usize) -> Result<Vec<u64>> {
        let mut got = Vec::with_capacity(n);
        for _ in 0..n {
            match s.alloc_node(self.kind, self.owner) {
                Ok(b) => got.push(b.0),
                Err(e) => {
                    for b in got {
                        // The allocation error is the one to report; a failure
                        // to give back a block we never used only leaks it
                        // within a transaction the caller discards anyway.
                        let _ = s.free_node(BlockNo(b), self.kind, self.owner);
                    }
                    return Err(e);
                }
            }
        }
        Ok(got)
    }

    /// Writes `node`; returns the crc the store sealed it with.
    pub(crate) fn store(&self, s: &mut dyn NodeStore, node: Node<K, V, A>) -> Result<u32> {
        let (no, buf) = node.into_block();
        s.write_node(BlockNo(no), buf)
    }

    fn free(&self, s: &mut dyn NodeStore, no: u64) -> Result<()> {
        s.free_node(BlockNo(no), self.kind, self.owner)
    }

    /// Visits every node once, parent before children and children in key
    /// order, calling `f(node, lo, hi)` with the bounds `[lo, hi)` its parent
    /// gives it. Returns the height. Work and memory are bounded by the number
    /// of distinct nodes: a node reached twice is an error.
    fn walk(
        &self,
        s: &mut dyn NodeStore,
        root: &TreeRoot,
        f: &mut NodeVisitor<'_, K, V, A>,
    ) -> Result<u32> {
        struct Pending<K> {
            no: u64,
            crc: u32,
            level: u32,
            lo: Option<K>,
            hi: Option<K>,
        }
        let height = self.height(root)?;
        if height == 0 {
            return Ok(0);
        }
        let mut seen = HashSet::new();
        let mut stack = vec![Pending {
            no: root.block.get(),
            crc: root.crc.get(),
            level: height - 1,
            lo: None,
            hi: None,
        }];
        while let Some(p) = stack.pop() {
            let is_root = seen.is_empty();
            if !seen.insert(p.no) {
                return Err(self.corrupt(p.no, "node reached twice (shared child or cycle)"));
            }
            let node = self.load(s, p.no, p.level, is_root, p.crc)?;
            f(&node, p.lo.as_ref(), p.hi.as_ref())?;
            if node.is_leaf() {
                continue;
            }
            // Pushed last to first, so that children come off in key order.
            for i in (0..node.count).rev() {
                let lo = if i == 0 { p.lo } else { Some(node.key(i)?) };
                let hi = if i + 1 == node.count {
                    p.hi
                } else {
                    Some(node.key(i + 1)?)
                };
                stack.push(Pending {
                    no: node.child(i)?,
                    crc: node.crc(i)?,
                    level: p.level - 1,
                    lo,
                    hi,
                });
            }
        }
        Ok(height)
    }
}
