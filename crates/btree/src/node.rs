//! The byte layout of a B+tree node, and the slot operations on it.
//!
//! Every node is one 4 KiB metadata block. Keys and payloads are kept in two
//! separate fixed-capacity arrays, so a binary search touches only the
//! contiguous key bytes, and capacities depend only on the record sizes.
//!
//! ```text
//! byte            size            field
//!    0              64            BlockHeader
//!                                   kind   the tree's BlockKind
//!                                   level  0 = leaf, height - 1 = root
//!                                   count  leaf: records; internal: children
//!                                   owner  the tree's owner (inode or 0)
//!
//! leaf (level 0), KS = K::SIZE, VS = V::SIZE, LCAP = 4032 / (KS + VS):
//!   64         LCAP * KS          keys[LCAP]    strictly increasing
//!   64 + LCAP*KS  LCAP * VS       values[LCAP]  values[i] belongs to keys[i]
//!
//! internal (level >= 1), AS = A::SIZE (0 for trees without summaries),
//! ICAP = 4032 / (KS + 8 + 4 + AS):
//!   64         ICAP * KS          keys[ICAP]    keys[i] = lowest key that
//!                                               child i may hold, for i >= 1;
//!                                               strictly increasing
//!   64 + ICAP*KS  ICAP * 8        children[ICAP] u64 block numbers, never 0
//!   64 + ICAP*(KS+8)  ICAP * 4    crcs[ICAP]    u32: crcs[i] = the header crc
//!                                               child i was sealed with
//!   64 + ICAP*(KS+12) ICAP * AS   sums[ICAP]    sums[i] = the summary of
//!                                               every record under child i
//!                                               (augmented trees only)
//!
//! rest of the block, and every slot at index >= count: zero
//! ```
//!
//! Child `i` of an internal node holds the keys `k` with
//! `keys[i] <= k < keys[i + 1]`; the bounds of child 0 and of the last child
//! are those of the node itself, given by its parent. `keys[0]` is therefore
//! never used for routing: it keeps whatever separator was there when the node
//! was last split or merged (the new root writes `K::MIN`) and readers ignore it.
//!
//! Every node except the root holds at least `max(LCAP / 4, 1)` records
//! (leaves) or `max(ICAP / 4, 2)` children (internal nodes): a quarter, so
//! that the half-full nodes a split leaves never merge straight back. A root leaf holds at least one record
//! (the empty tree has no node at all); an internal root has at least two
//! children.
//!
//! Capacities of the trees daxfs uses, and where their arrays lie:
//!
//! ```text
//! key             value                 LCAP  leaf keys   leaf values  zero tail
//! u64             ExtentRecord (16 B)    168    64..1408  1408..4096   -
//! u64             InodeRecord (256 B)     15    64..184    184..4024   4024..4096
//! u64             DirentRecord (272 B)    14    64..176    176..3984   3984..4096
//! (u64, u64)      ()                     252    64..4096     -         -
//! (u64, u64, u64) ()                     168    64..4096     -         -
//! (u64, u64, u64) RmapRecord (24 B)       84    64..2080   2080..4096   -
//!
//! key size        ICAP  internal keys  children     crcs         zero tail
//! 8 (u64)          201    64..1672     1672..3280   3280..4084   4084..4096
//! 16 (u64, u64)    144    64..2368     2368..3520   3520..4096   -
//! 24 (u64 x 3)     112    64..2752     2752..3648   3648..4096   -
//!
//! with an 8-byte summary (the reverse map: the largest end below):
//! key size        ICAP  internal keys  children     crcs         sums         zero tail
//! 24 (u64 x 3)      91    64..2248     2248..2976   2976..3340   3340..4068   4068..4096
//! ```
//!
//! A node is trusted only through a pointer that names its crc (the
//! parent's `crcs[i]`, or the tree root's `crc`): the store refuses a node
//! that verifies by itself but was sealed with another crc (see
//! [`NodeStore::read_node`](crate::NodeStore::read_node)), so every change
//! to a node rewrites its ancestors up to the root.
#![deny(clippy::indexing_slicing)]

use crate::{NodeBuf, Result, Summary, TreeError};
use daxfs_format::block::{BlockHeader, HEADER_SIZE, write_header};
use daxfs_format::records::{Key, Record};
use daxfs_format::{BLOCK_SIZE, Block, BlockKind};
use std::cmp::Ordering;
use std::marker::PhantomData;
use std::ops::Range;

/// Bytes of a child pointer in an internal node.
pub(crate) const CHILD_SIZE: usize = 8;
/// Bytes of a child's crc in an internal node.
pub(crate) const CRC_SIZE: usize = 4;

/// Capacities and array offsets for one `(K, V)` pair, computed at compile time.
pub(crate) struct Layout<K, V, A = ()>(PhantomData<(K, V, A)>);

impl<K: Key, V: Record, A: Summary<K, V>> Layout<K, V, A> {
    /// Bytes available for the arrays.
    const AVAIL: usize = BLOCK_SIZE - HEADER_SIZE;
    /// Where the key array starts, in leaves and internal nodes alike.
    pub(crate) const KEYS: usize = HEADER_SIZE;
    /// Records per leaf. The `max(1)` only keeps a zero-size record type from
    /// dividing by zero before [`Self::VALID`] rejects it.
    pub(crate) const LEAF_CAP: usize = Self::AVAIL / max1(K::SIZE + V::SIZE);
    /// Where the value array of a leaf starts.
    pub(crate) const LEAF_VALS: usize = Self::KEYS + Self::LEAF_CAP * K::SIZE;
    /// Children per internal node.
    pub(crate) const INT_CAP: usize = Self::AVAIL / (K::SIZE + CHILD_SIZE + CRC_SIZE + A::SIZE);
    /// Where the child array of an internal node starts.
    pub(crate) const INT_KIDS: usize = Self::KEYS + Self::INT_CAP * K::SIZE;
    /// Where the children's crcs of an internal node start.
    pub(crate) const INT_CRCS: usize = Self::INT_KIDS + Self::INT_CAP * CHILD_SIZE;
    /// Where the summary array of an internal node starts (empty when the
    /// tree keeps no summaries).
    pub(crate) const INT_SUMS: usize = Self::INT_CRCS + Self::INT_CAP * CRC_SIZE;
    /// End of a leaf's value array: a leaf's zero-size third array sits there.
    const LEAF_END: usize = Self::LEAF_VALS + Self::LEAF_CAP * V::SIZE;
    /// Fewest records in a non-root leaf. A quarter, not a half: a split
    /// leaves two half-full nodes, so one insert and one removal at the same
    /// place can never make the tree split and merge back and forth (the
    /// free-space tree would otherwise allocate and free a node per update).
    pub(crate) const LEAF_MIN: usize = if Self::LEAF_CAP / 4 > 1 {
        Self::LEAF_CAP / 4
    } else {
        1
    };
    /// Fewest children of a non-root internal node. At least 2, so that every
    /// non-root internal node has a separator inside its bounds (which is what
    /// lets the readers detect a node reached twice).
    pub(crate) const INT_MIN: usize = if Self::INT_CAP / 4 > 2 {
        Self::INT_CAP / 4
    } else {
        2
    };
    /// Evaluated by `BTree::new`: record types whose nodes cannot hold a
    /// working tree fail to compile instead of misbehaving.
    pub(crate) const VALID: () = assert!(
        K::SIZE >= 1 && Self::LEAF_CAP >= 3 && Self::INT_CAP >= 4,
        "B+tree records too large for a 4 KiB node"
    );

    pub(crate) const fn cap(level: u8) -> usize {
        if level == 0 {
            Self::LEAF_CAP
        } else {
            Self::INT_CAP
        }
    }

    pub(crate) const fn min(level: u8) -> usize {
        if level == 0 {
            Self::LEAF_MIN
        } else {
            Self::INT_MIN
        }
    }

    /// The parallel arrays of a node of `level`: (offset, slot size). A
    /// leaf's third and fourth arrays have slots of size zero.
    const fn arrays(level: u8) -> [(usize, usize); 4] {
        if level == 0 {
            [
                (Self::KEYS, K::SIZE),
                (Self::LEAF_VALS, V::SIZE),
                (Self::LEAF_END, 0),
                (Self::LEAF_END, 0),
            ]
        } else {
            [
                (Self::KEYS, K::SIZE),
                (Self::INT_KIDS, CHILD_SIZE),
                (Self::INT_CRCS, CRC_SIZE),
                (Self::INT_SUMS, A::SIZE),
            ]
        }
    }
}

const fn max1(v: usize) -> usize {
    if v == 0 { 1 } else { v }
}

/// Byte range of `n` slots of `size` bytes starting at slot `i` of the array at
/// `base`. Saturating, so absurd inputs yield a range that `.get()` rejects.
fn slots(base: usize, size: usize, i: usize, n: usize) -> Range<usize> {
    let start = base.saturating_add(i.saturating_mul(size));
    start..start.saturating_add(n.saturating_mul(size))
}

fn out_of_range(kind: BlockKind, no: u64, count: usize, level: u8, what: &str) -> TreeError {
    TreeError::Corrupt {
        kind: kind.name(),
        block: no,
        what: format!("slot out of range in {what} (count {count}, level {level})"),
    }
}

/// One node read from the store, with its header fields decoded. The bytes
/// stay in the block: records are decoded one at a time when needed.
pub(crate) struct Node<K, V, A = ()> {
    pub(crate) no: u64,
    pub(crate) kind: BlockKind,
    pub(crate) owner: u64,
    pub(crate) level: u8,
    pub(crate) count: usize,
    /// Shared with the store until the node changes (copy on write).
    buf: Buf,
    _p: PhantomData<(K, V, A)>,
}

/// A node's bytes: the store's shared block until the first change, then a
/// private copy. Deciding once, rather than asking the `Arc` at every
/// change (`Arc::make_mut` costs atomic operations each time), keeps record
/// updates plain stores: a report that writes 10,000 records makes about
/// 60,000 changes.
enum Buf {
    Shared(NodeBuf),
    Owned(Box<Block>),
}

impl Buf {
    #[inline]
    fn get(&self) -> &Block {
        match self {
            Buf::Shared(a) => a,
            Buf::Owned(b) => b,
        }
    }

    #[inline]
    fn get_mut(&mut self) -> &mut Block {
        if let Buf::Shared(a) = self {
            *self = Buf::Owned(Box::new(**a));
        }
        match self {
            Buf::Owned(b) => b,
            Buf::Shared(_) => unreachable!("made private above"),
        }
    }

    fn into_shared(self) -> NodeBuf {
        match self {
            Buf::Shared(a) => a,
            Buf::Owned(b) => NodeBuf::from(b),
        }
    }
}

impl<K: Key, V: Record, A: Summary<K, V>> Node<K, V, A> {
    /// Wraps a block whose header has already been validated.
    pub(crate) fn from_parts(
        no: u64,
        kind: BlockKind,
        owner: u64,
        level: u8,
        count: usize,
        buf: NodeBuf,
    ) -> Self {
        Node {
            no,
            kind,
            owner,
            level,
            count,
            buf: Buf::Shared(buf),
            _p: PhantomData,
        }
    }

    /// An empty node of `level` to be written at block `no`.
    pub(crate) fn empty(no: u64, kind: BlockKind, owner: u64, level: u8) -> Self {
        Node {
            no,
            kind,
            owner,
            level,
            count: 0,
            buf: Buf::Owned(Box::new([0u8; BLOCK_SIZE])),
            _p: PhantomData,
        }
    }

    pub(crate) fn is_leaf(&self) -> bool {
        self.level == 0
    }

    pub(crate) fn cap(&self) -> usize {
        Layout::<K, V, A>::cap(self.level)
    }

    /// A `Corrupt` error about this node.
    pub(crate) fn bad(&self, what: impl Into<String>) -> TreeError {
        TreeError::Corrupt {
            kind: self.kind.name(),
            block: self.no,
            what: what.into(),
        }
    }

    fn bytes(&self, r: Range<usize>) -> Result<&[u8]> {
        match self.buf.get().get(r) {
            Some(b) => Ok(b),
            None => Err(self.out_of_range("read")),
        }
    }

    fn bytes_mut(&mut self, r: Range<usize>) -> Result<&mut [u8]> {
        let (kind, no, count, level) = (self.kind, self.no, self.count, self.level);
        self.buf
            .get_mut()
            .get_mut(r)
            .ok_or_else(|| out_of_range(kind, no, count, level, "write"))
    }

    /// An error for slot arithmetic that left the block: only reachable through
    /// a bug, but reported rather than panicking.
    fn out_of_range(&self, what: &str) -> TreeError {
        out_of_range(self.kind, self.no, self.count, self.level, what)
    }

    /// The key in slot `i`.
    #[inline]
    pub(crate) fn key(&self, i: usize) -> Result<K> {
        let b = self.bytes(slots(Layout::<K, V, A>::KEYS, K::SIZE, i, 1))?;
        Ok(K::decode(b)?)
    }

    /// The value in slot `i` of a leaf.
    pub(crate) fn val(&self, i: usize) -> Result<V> {
        let b = self.bytes(slots(Layout::<K, V, A>::LEAF_VALS, V::SIZE, i, 1))?;
        Ok(V::decode(b)?)
    }

    /// The child block number in slot `i` of an internal node, refusing the
    /// pointers that can never be right.
    pub(crate) fn child(&self, i: usize) -> Result<u64> {
        let b = self.bytes(slots(Layout::<K, V, A>::INT_KIDS, CHILD_SIZE, i, 1))?;
        let c = u64::decode(b)?;
        if c == 0 {
            return Err(self.bad(format!("child {i} is block 0")));
        }
        if c == self.no {
            return Err(self.bad(format!("child {i} points at its own node")));
        }
        Ok(c)
    }

    /// The crc child `i` of an internal node was sealed with.
    pub(crate) fn crc(&self, i: usize) -> Result<u32> {
        let b = self.bytes(slots(Layout::<K, V, A>::INT_CRCS, CRC_SIZE, i, 1))?;
        let b: [u8; CRC_SIZE] = b.try_into().map_err(|_| self.out_of_range("read"))?;
        Ok(u32::from_le_bytes(b))
    }

    pub(crate) fn set_crc(&mut self, i: usize, c: u32) -> Result<()> {
        let b = self.bytes_mut(slots(Layout::<K, V, A>::INT_CRCS, CRC_SIZE, i, 1))?;
        b.copy_from_slice(&c.to_le_bytes());
        Ok(())
    }

    /// The summary of child `i` of an internal node.
    pub(crate) fn sum(&self, i: usize) -> Result<A> {
        let b = self.bytes(slots(Layout::<K, V, A>::INT_SUMS, A::SIZE, i, 1))?;
        Ok(A::decode(b)?)
    }

    pub(crate) fn set_sum(&mut self, i: usize, a: &A) -> Result<()> {
        if A::SIZE > 0 {
            a.encode(self.bytes_mut(slots(Layout::<K, V, A>::INT_SUMS, A::SIZE, i, 1))?);
        }
        Ok(())
    }

    /// The summary of the whole node: of its records (leaf) or of its
    /// children's summaries (internal node). Trees without summaries get
    /// `()` for nothing.
    pub(crate) fn summary(&self) -> Result<A> {
        if A::SIZE == 0 {
            return Ok(A::decode(&[])?);
        }
        let mut acc: Option<A> = None;
        for i in 0..self.count {
            let a = if self.is_leaf() {
                A::of(&self.key(i)?, &self.val(i)?)
            } else {
                self.sum(i)?
            };
            acc = Some(match acc {
                Some(x) => x.join(a),
                None => a,
            });
        }
        acc.ok_or_else(|| self.bad("an empty node has no summary"))
    }

    pub(crate) fn set_key(&mut self, i: usize, k: &K) -> Result<()> {
        k.encode(self.bytes_mut(slots(Layout::<K, V, A>::KEYS, K::SIZE, i, 1))?);
        Ok(())
    }

    pub(crate) fn set_val(&mut self, i: usize, v: &V) -> Result<()> {
        v.encode(self.bytes_mut(slots(Layout::<K, V, A>::LEAF_VALS, V::SIZE, i, 1))?);
        Ok(())
    }

    pub(crate) fn set_child(&mut self, i: usize, c: u64) -> Result<()> {
        c.encode(self.bytes_mut(slots(Layout::<K, V, A>::INT_KIDS, CHILD_SIZE, i, 1))?);
        Ok(())
    }

    /// Binary search of a leaf: `Ok(i)` when slot `i` holds `key`, else
    /// `Err(i)` with the slot where it would go.
    #[inline]
    pub(crate) fn search(&self, key: &K) -> Result<Result<usize, usize>> {
        self.search_in(0, self.count, key)
    }

    /// [`Node::search`] among slots `lo..hi`.
    #[inline]
    fn search_in(&self, lo: usize, hi: usize, key: &K) -> Result<Result<usize, usize>> {
        let (mut lo, mut hi) = (lo, hi);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.key(mid)?.cmp(key) {
                Ordering::Less => lo = mid + 1,
                Ordering::Greater => hi = mid,
                Ordering::Equal => return Ok(Ok(mid)),
            }
        }
        Ok(Err(lo))
    }

    /// Number of slots in `from..count` whose key is `<= key`, by binary
    /// search. For a leaf from 0 this is where `last_le` looks; for an internal
    /// node from 1 it is the child that covers `key`.
    #[inline]
    pub(crate) fn upper_bound(&self, from: usize, key: &K) -> Result<usize> {
        let (mut lo, mut hi) = (from, self.count.max(from));
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.key(mid)? <= *key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// [`Node::search`] among slots `from..count`, for a caller that knows
    /// every key before `from` is below `key`. The slot at `from` is tried
    /// first: a run of sorted keys that replace records, or go in one after
    /// another, finds each there without a search.
    #[inline]
    pub(crate) fn search_from(&self, from: usize, key: &K) -> Result<Result<usize, usize>> {
        let from = from.min(self.count);
        if from < self.count {
            match self.key(from)?.cmp(key) {
                Ordering::Equal => return Ok(Ok(from)),
                Ordering::Greater => return Ok(Err(from)),
                Ordering::Less => {}
            }
        }
        self.search_in((from + 1).min(self.count), self.count, key)
    }

    /// Appends `items` to a leaf after its last slot (their keys in order,
    /// above every key it holds: the caller's to ensure), keys and values
    /// each written in one pass.
    pub(crate) fn append(&mut self, items: &[(K, V)]) -> Result<()> {
        let (at, n) = (self.count, items.len());
        if !self.is_leaf() || at + n > self.cap() {
            return Err(self.out_of_range("append"));
        }
        let keys = self.bytes_mut(slots(Layout::<K, V, A>::KEYS, K::SIZE, at, n))?;
        for ((k, _), out) in items.iter().zip(keys.chunks_exact_mut(K::SIZE.max(1))) {
            k.encode(out);
        }
        if V::SIZE > 0 {
            let vals = self.bytes_mut(slots(Layout::<K, V, A>::LEAF_VALS, V::SIZE, at, n))?;
            for ((_, v), out) in items.iter().zip(vals.chunks_exact_mut(V::SIZE)) {
                v.encode(out);
            }
        }
        self.count += n;
        Ok(())
    }

    /// The child slot of an internal node whose range holds `key`.
    #[inline]
    pub(crate) fn route(&self, key: &K) -> Result<usize> {
        Ok(self.upper_bound(1, key)?.saturating_sub(1))
    }

    /// Opens `n` empty slots at `at`, moving slots `at..count` up.
    pub(crate) fn open_gap(&mut self, at: usize, n: usize) -> Result<()> {
        if at > self.count || self.count + n > self.cap() {
            return Err(self.out_of_range("open_gap"));
        }
        for (base, size) in Layout::<K, V, A>::arrays(self.level) {
            let src = slots(base, size, at, self.count - at);
            let dst = src.start + n * size;
            if self.buf.get().get(src.start..dst + src.len()).is_none() {
                return Err(self.out_of_range("open_gap"));
            }
            self.buf.get_mut().copy_within(src, dst);
        }
        self.count += n;
        Ok(())
    }

    /// Removes slots `at..at + n`, moving the later slots down and zeroing the
    /// vacated tail (so deleted records, e.g. file names, do not linger).
    pub(crate) fn close_gap(&mut self, at: usize, n: usize) -> Result<()> {
        if at.checked_add(n).is_none_or(|end| end > self.count) {
            return Err(self.out_of_range("close_gap"));
        }
        let keep = self.count - at - n;
        for (base, size) in Layout::<K, V, A>::arrays(self.level) {
            let src = slots(base, size, at + n, keep);
            let dst = slots(base, size, at, 0).start;
            if self.buf.get().get(dst..src.end).is_none() {
                return Err(self.out_of_range("close_gap"));
            }
            self.buf.get_mut().copy_within(src, dst);
            self.bytes_mut(slots(base, size, at + keep, n))?.fill(0);
        }
        self.count -= n;
        Ok(())
    }

    /// Copies slots `from..from + n` of `src` over slots `to..to + n` of `self`
    /// (both nodes of the same level; counts are the caller's business).
    fn copy_from(&mut self, to: usize, src: &Node<K, V, A>, from: usize, n: usize) -> Result<()> {
        for (base, size) in Layout::<K, V, A>::arrays(self.level) {
            let s = src.bytes(slots(base, size, from, n))?;
            let d = self.bytes_mut(slots(base, size, to, n))?;
            if d.len() != s.len() {
                return Err(TreeError::Store("node slot lengths differ".into()));
            }
            d.copy_from_slice(s);
        }
        Ok(())
    }

    /// Moves slots `at..count` into the empty node `right`.
    pub(crate) fn split_off(&mut self, at: usize, right: &mut Node<K, V, A>) -> Result<()> {
        if at > self.count || right.count != 0 || right.level != self.level {
            return Err(self.out_of_range("split_off"));
        }
        let n = self.count - at;
        right.copy_from(0, self, at, n)?;
        right.count = n;
        self.close_gap(at, n)
    }

    /// Moves the first `n` slots of `right` to the end of `self`, its left
    /// neighbour. With `n == right.count` this is a merge.
    pub(crate) fn take_front(&mut self, right: &mut Node<K, V, A>, n: usize) -> Result<()> {
        if n > right.count || self.count + n > self.cap() || right.level != self.level {
            return Err(self.out_of_range("take_front"));
        }
        self.copy_from(self.count, right, 0, n)?;
        self.count += n;
        right.close_gap(0, n)
    }

    /// Moves the last `n` slots of `self` to the front of `right`, its right
    /// neighbour.
    pub(crate) fn give_back(&mut self, right: &mut Node<K, V, A>, n: usize) -> Result<()> {
        if n > self.count || right.level != self.level {
            return Err(self.out_of_range("give_back"));
        }
        right.open_gap(0, n)?;
        let from = self.count - n;
        right.copy_from(0, self, from, n)?;
        self.close_gap(from, n)
    }

    /// Writes the header the tree owns (kind, owner, level, count) and hands
    /// the block over for writing; the store seals the rest.
    pub(crate) fn into_block(mut self) -> (u64, NodeBuf) {
        let mut h = BlockHeader::fresh(self.kind, self.owner, self.level);
        // count <= capacity <= 4032, so it always fits.
        h.count = (self.count as u32).into();
        write_header(&mut self.buf.get_mut()[..], &h);
        (self.no, self.buf.into_shared())
    }

    /// The crc in the node's header (what it was sealed with when read).
    pub(crate) fn sealed_crc(&self) -> u32 {
        crate::sealed_crc(self.buf.get())
    }

    /// Checks that every byte past the used slots is zero.
    pub(crate) fn tail_is_zero(&self) -> bool {
        let cap = self.cap();
        let [(b0, s0), (b1, s1), (b2, s2), (b3, s3)] = Layout::<K, V, A>::arrays(self.level);
        let unused = |b, s| slots(b, s, self.count, cap.saturating_sub(self.count));
        let end = slots(b3, s3, cap, 0).start;
        [
            unused(b0, s0),
            unused(b1, s1),
            unused(b2, s2),
            unused(b3, s3),
            end..BLOCK_SIZE,
        ]
        .into_iter()
        .all(|r| {
            self.buf
                .get()
                .get(r)
                .is_some_and(|b| b.iter().all(|&x| x == 0))
        })
    }
}
