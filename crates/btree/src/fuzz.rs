//! A fuzz entry point: trees built from arbitrary bytes must never make the
//! B+tree panic or hang, whatever the operation.
//!
//! Input layout:
//!
//! ```text
//! byte  size   field
//!    0     1   mode: bits 0-1 record types (see below); bit 2 set: force the
//!              kind and owner of every block and reseal it, so checksums pass
//!              and the node parsing itself is exercised; bit 3 set: a tree
//!              with [`MaxEnd`] summaries (see below)
//!    1     1   root height
//!    2     8   root block number (little-endian)
//!   10   ...   blocks 1, 2, 3, ... of 4096 bytes each (the last one padded
//!              with zeros), at most FUZZ_MAX_BLOCKS
//! ```
//!
//! Record types by mode: 0 `u64 -> ExtentRecord`, 1 `u64 -> DirentRecord`,
//! 2 `(u64, u64, u64) -> ()`, 3 a 996-byte key `-> u64` (fanout 4, so small
//! inputs still make deep trees). With bit 3, bit 0 alone chooses:
//! 0 `(u64, u64, u64) -> u64` (the reverse map's shape: a start, two more
//! key fields, a length), 1 a 900-byte key `-> u64` (fanout 4), both with
//! [`MaxEnd`] summaries, and the walks also run pruned by them.
#![deny(clippy::indexing_slicing)]

use crate::memstore::MemStore;
use crate::{BTree, NodeStore, Summary};
use daxfs_format::block::{BlockHeader, HEADER_SIZE, header, seal_block, write_header};
use daxfs_format::records::{DirentRecord, ExtentRecord, Key, Record, TreeRoot};
use daxfs_format::{BLOCK_SIZE, BlockKind, FormatError};
use std::ops::ControlFlow;

/// Blocks taken from one input at most; the rest is ignored.
pub const FUZZ_MAX_BLOCKS: usize = 256;
/// Owner of the fuzzed trees.
pub const FUZZ_OWNER: u64 = 77;
/// Bytes before the first block in a fuzz input.
pub const FUZZ_PREFIX: usize = 10;
/// Mode bit: force kind and owner and reseal every block.
pub const FUZZ_RESEAL: u8 = 4;

/// A test key of 996 bytes (a u64 and zero padding), giving nodes of four
/// entries: deep trees from few records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WideKey(pub u64);

impl Record for WideKey {
    const SIZE: usize = 996;
    fn encode(&self, out: &mut [u8]) {
        if let Some(d) = out.get_mut(..Self::SIZE) {
            d.fill(0);
        }
        self.0.encode(out);
    }
    fn decode(b: &[u8]) -> Result<Self, FormatError> {
        if b.len() < Self::SIZE {
            return Err(FormatError::Truncated {
                what: "wide key",
                have: b.len(),
                need: Self::SIZE,
            });
        }
        Ok(WideKey(u64::decode(b)?))
    }
}

impl Key for WideKey {
    const MIN: Self = WideKey(0);
    const MAX: Self = WideKey(u64::MAX);
}

/// Mode bit: a tree with [`MaxEnd`] summaries.
pub const FUZZ_AUGMENTED: u8 = 8;

/// A 900-byte key (a u64 and zero padding): with 8-byte summaries, internal
/// nodes of four entries, like [`WideKey`] without summaries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AugKey(pub u64);

impl Record for AugKey {
    const SIZE: usize = 900;
    fn encode(&self, out: &mut [u8]) {
        if let Some(d) = out.get_mut(..Self::SIZE) {
            d.fill(0);
        }
        self.0.encode(out);
    }
    fn decode(b: &[u8]) -> Result<Self, FormatError> {
        if b.len() < Self::SIZE {
            return Err(FormatError::Truncated {
                what: "aug key",
                have: b.len(),
                need: Self::SIZE,
            });
        }
        Ok(AugKey(u64::decode(b)?))
    }
}

impl Key for AugKey {
    const MIN: Self = AugKey(0);
    const MAX: Self = AugKey(u64::MAX);
}

/// A test summary: the largest end (first key field + value, saturating)
/// of the records below, as an interval tree keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct MaxEnd(pub u64);

impl Record for MaxEnd {
    const SIZE: usize = 8;
    fn encode(&self, out: &mut [u8]) {
        self.0.encode(out);
    }
    fn decode(b: &[u8]) -> Result<Self, FormatError> {
        Ok(MaxEnd(u64::decode(b)?))
    }
}

impl Summary<(u64, u64, u64), u64> for MaxEnd {
    fn of(k: &(u64, u64, u64), len: &u64) -> Self {
        MaxEnd(k.0.saturating_add(*len))
    }
    fn join(self, o: Self) -> Self {
        self.max(o)
    }
}

impl Summary<AugKey, u64> for MaxEnd {
    fn of(k: &AugKey, len: &u64) -> Self {
        MaxEnd(k.0.saturating_add(*len))
    }
    fn join(self, o: Self) -> Self {
        self.max(o)
    }
}

/// The block kind used for each fuzz mode.
pub fn fuzz_kind(mode: u8) -> BlockKind {
    match mode & 3 {
        0 => BlockKind::ExtentTree,
        1 => BlockKind::DirTree,
        2 => BlockKind::RmapTree,
        _ => BlockKind::FreeTree,
    }
}

/// Builds a fuzz input from a tree held in `store` (blocks 1..=last live
/// block; missing ones are zero), for seeding corpora with valid trees.
pub fn input_from_store(mode: u8, root: &TreeRoot, store: &MemStore) -> Vec<u8> {
    let last = store
        .live_blocks()
        .last()
        .copied()
        .unwrap_or(0)
        .min(FUZZ_MAX_BLOCKS as u64);
    let mut out = Vec::with_capacity(FUZZ_PREFIX + last as usize * BLOCK_SIZE);
    out.push(mode);
    out.push(root.height.get().min(255) as u8);
    out.extend_from_slice(&root.block.get().to_le_bytes());
    for b in 1..=last {
        match store.raw(b) {
            Some(x) => out.extend_from_slice(&x[..]),
            None => out.extend(std::iter::repeat_n(0u8, BLOCK_SIZE)),
        }
    }
    out
}

/// Runs every tree operation on a tree decoded from `data`, ignoring errors.
/// Must never panic, whatever `data` holds.
pub fn fuzz_node_bytes(data: &[u8]) {
    let mode = data.first().copied().unwrap_or(0);
    let height = data.get(1).copied().unwrap_or(0);
    let root_no = data
        .get(2..FUZZ_PREFIX)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0);
    let kind = fuzz_kind(mode);
    let mut store = MemStore::new();
    // Resealed blocks keep the crcs their pointers had: the checks past the
    // crc are the ones to reach.
    store.check_crcs = mode & FUZZ_RESEAL == 0;
    let body = data.get(FUZZ_PREFIX..).unwrap_or(&[]);
    for (i, chunk) in body.chunks(BLOCK_SIZE).take(FUZZ_MAX_BLOCKS).enumerate() {
        let b = i as u64 + 1;
        let mut block = Box::new([0u8; BLOCK_SIZE]);
        if let Some(d) = block.get_mut(..chunk.len()) {
            d.copy_from_slice(chunk);
        }
        if mode & FUZZ_RESEAL != 0 {
            let mut h =
                header(&block[..]).unwrap_or_else(|_| BlockHeader::fresh(kind, FUZZ_OWNER, 0));
            h.kind = kind as u8;
            h.owner = FUZZ_OWNER.into();
            write_header(&mut block[..], &h);
            seal_block(&mut block, b, store.generation, store.fs_id);
        }
        store.put_raw(b, block);
    }
    // The prefix names the root, not its crc: the root block's own is taken.
    let root_crc = store.raw(root_no).map_or(0, crate::sealed_crc);
    let root = TreeRoot::new(root_no, u32::from(height), root_crc);
    // The pruned walks skip subtrees ending at or before a point taken
    // from the input.
    let at = sample::<u64>(body, BLOCK_SIZE - 8).unwrap_or(0);
    let skip = move |a: &MaxEnd| a.0 <= at;
    match (mode & FUZZ_AUGMENTED != 0, mode & 3) {
        (false, 0) => exercise::<u64, ExtentRecord, ()>(kind, body, root, &mut store, &|_| false),
        (false, 1) => exercise::<u64, DirentRecord, ()>(kind, body, root, &mut store, &|_| false),
        (false, 2) => exercise::<(u64, u64, u64), (), ()>(kind, body, root, &mut store, &|_| false),
        (false, _) => exercise::<WideKey, u64, ()>(kind, body, root, &mut store, &|_| false),
        (true, 0 | 2) => {
            exercise::<(u64, u64, u64), u64, MaxEnd>(kind, body, root, &mut store, &skip)
        }
        (true, _) => exercise::<AugKey, u64, MaxEnd>(kind, body, root, &mut store, &skip),
    }
}

/// Decodes a record from `data` at `at`, or from zeros past its end.
fn sample<R: Record>(data: &[u8], at: usize) -> Option<R> {
    let mut buf = vec![0u8; R::SIZE];
    if let Some(src) = data.get(at..) {
        let n = src.len().min(R::SIZE);
        if let (Some(d), Some(s)) = (buf.get_mut(..n), src.get(..n)) {
            d.copy_from_slice(s);
        }
    }
    R::decode(&buf).ok()
}

fn exercise<K: Key, V: Record, A: Summary<K, V>>(
    kind: BlockKind,
    body: &[u8],
    root: TreeRoot,
    s: &mut MemStore,
    skip: &dyn Fn(&A) -> bool,
) {
    let t = BTree::<K, V, A>::new(kind, FUZZ_OWNER);
    // Keys from the first block's key array (the real keys of a valid tree),
    // from further in, and the extremes.
    let mut keys = vec![K::MIN, K::MAX];
    for j in 0..6 {
        keys.extend(sample::<K>(body, HEADER_SIZE + j * K::SIZE));
        keys.extend(sample::<K>(
            body,
            BLOCK_SIZE + HEADER_SIZE + j * 7 * K::SIZE,
        ));
    }
    let val = sample::<V>(body, 2 * BLOCK_SIZE + HEADER_SIZE);
    let s: &mut dyn NodeStore = s;

    let _ = t.check(s, &root);
    let mut n = 0u32;
    let _ = t.range(s, &root, &K::MIN, &K::MAX, &mut |_, _| {
        n += 1;
        if n > 100_000 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    for k in &keys {
        let _ = t.get(s, &root, k);
        let _ = t.last_le(s, &root, k);
        let _ = t.first_ge(s, &root, k);
    }
    if let [.., a, b] = keys.as_slice() {
        let _ = t.range(s, &root, a.min(b), a.max(b), &mut |_, _| {
            ControlFlow::Continue(())
        });
        let _ = t.range_pruned(s, &root, a.min(b), a.max(b), skip, &mut |_, _| {
            ControlFlow::Continue(())
        });
    }
    let _ = t.range_pruned(s, &root, &K::MIN, &K::MAX, skip, &mut |_, _| {
        ControlFlow::Continue(())
    });
    let _ = t.visit_nodes(s, &root, &mut |_, _| {});
    let _ = t.visit_sealed(s, &root, &mut |_, _, _| {});
    let _ = t.len(s, &root);

    let mut r = root;
    if let Some(v) = val {
        for k in &keys {
            let _ = t.insert(s, &mut r, *k, v);
        }
    }
    for k in keys.iter().rev() {
        let _ = t.remove(s, &mut r, k);
    }
    let _ = t.check(s, &r);
    let _ = t.remove_range(s, &mut r, &K::MIN, &K::MAX, &mut |_, _| {});
    let _ = t.destroy(s, &mut r);
}
