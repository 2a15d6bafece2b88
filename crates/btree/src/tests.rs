//! Tests of the tree against a `BTreeMap` model, on the in-memory store.
#![allow(clippy::unwrap_used)]

use crate::fuzz::{
    AugKey, FUZZ_AUGMENTED, FUZZ_RESEAL, MaxEnd, WideKey, fuzz_kind, fuzz_node_bytes,
    input_from_store,
};
use crate::memstore::MemStore;
use crate::node::Layout;
use crate::{BTree, MAX_HEIGHT, NodeStore, Summary, TreeError, TreeStats};
use daxfs_format::block::{BlockHeader, HEADER_SIZE, header, write_header};
use daxfs_format::records::{DirentRecord, ExtentRecord, InodeRecord, Key, Record, TreeRoot};
use daxfs_format::{BLOCK_SIZE, BlockKind, BlockNo, FormatError};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::ops::ControlFlow;

const OWNER: u64 = 42;

/// Keys made from a number; distinct numbers give distinct keys.
trait TestKey: Key + std::hash::Hash {
    fn make(x: u64) -> Self;
}
impl TestKey for u64 {
    fn make(x: u64) -> Self {
        x
    }
}
impl TestKey for (u64, u64) {
    fn make(x: u64) -> Self {
        (x / 3, x % 3)
    }
}
impl TestKey for (u64, u64, u64) {
    fn make(x: u64) -> Self {
        // Varied so that all three components take part in comparisons.
        (x % 7, x / 7, x)
    }
}
impl TestKey for WideKey {
    fn make(x: u64) -> Self {
        WideKey(x)
    }
}
impl TestKey for AugKey {
    fn make(x: u64) -> Self {
        AugKey(x)
    }
}

/// Values made from a number, comparable for the model.
trait TestVal: Record + PartialEq {
    fn make(x: u64) -> Self;
}
impl TestVal for () {
    fn make(_: u64) -> Self {}
}
impl TestVal for u64 {
    fn make(x: u64) -> Self {
        x
    }
}
impl TestVal for ExtentRecord {
    fn make(x: u64) -> Self {
        let mut e = ExtentRecord::decode(&[0u8; 16]).unwrap();
        e.phys = x.into();
        e.len = ((x % 1000) as u32 + 1).into();
        e.flags = ((x >> 40) as u32 & 1).into();
        e
    }
}
impl TestVal for DirentRecord {
    fn make(x: u64) -> Self {
        let mut d = DirentRecord::decode(&[0u8; 272]).unwrap();
        d.ino = x.into();
        d.ftype = 1;
        let name = format!("file-{x}");
        d.name_len = name.len() as u8;
        d.name[..name.len()].copy_from_slice(name.as_bytes());
        d.name[254] = (x % 251) as u8;
        d.reserved[6] = 0;
        d
    }
}

/// A tree, its store and its root.
struct Fixture<K, V, A = ()> {
    t: BTree<K, V, A>,
    s: MemStore,
    root: TreeRoot,
}

impl<K: TestKey, V: TestVal, A: Summary<K, V>> Fixture<K, V, A> {
    fn new(kind: BlockKind) -> Self {
        Fixture {
            t: BTree::new(kind, OWNER),
            s: MemStore::new(),
            root: TreeRoot::EMPTY,
        }
    }
    fn get(&mut self, k: &K) -> Option<V> {
        self.t.get(&mut self.s, &self.root, k).unwrap()
    }
    fn insert(&mut self, k: K, v: V) -> Option<V> {
        self.t.insert(&mut self.s, &mut self.root, k, v).unwrap()
    }
    fn remove(&mut self, k: &K) -> Option<V> {
        self.t.remove(&mut self.s, &mut self.root, k).unwrap()
    }
    fn check(&mut self) -> TreeStats {
        let st = self.t.check(&mut self.s, &self.root).unwrap();
        assert_eq!(st.height, self.root.height.get());
        assert_eq!(
            st.nodes as usize,
            self.s.live_nodes(),
            "leaked or lost nodes"
        );
        st
    }
    fn all(&mut self) -> Vec<(K, V)> {
        self.collect(&K::MIN, &K::MAX)
    }
    fn collect(&mut self, lo: &K, hi: &K) -> Vec<(K, V)> {
        let mut v = Vec::new();
        self.t
            .range(&mut self.s, &self.root, lo, hi, &mut |k, val| {
                v.push((k, val));
                ControlFlow::Continue(())
            })
            .unwrap();
        v
    }
    /// Full comparison with the model.
    fn verify(&mut self, m: &BTreeMap<K, V>) {
        let st = self.check();
        assert_eq!(st.records as usize, m.len());
        let all = self.all();
        assert!(
            all.iter().map(|(k, v)| (k, v)).eq(m.iter()),
            "range differs from the model"
        );
        assert_eq!(
            self.t.len(&mut self.s, &self.root).unwrap() as usize,
            m.len()
        );
    }
}

fn model_last_le<K: Ord + Copy, V: Copy>(m: &BTreeMap<K, V>, k: &K) -> Option<(K, V)> {
    m.range(..=*k).next_back().map(|(k, v)| (*k, *v))
}
fn model_first_ge<K: Ord + Copy, V: Copy>(m: &BTreeMap<K, V>, k: &K) -> Option<(K, V)> {
    m.range(*k..).next().map(|(k, v)| (*k, *v))
}

// ---- basics ----

#[test]
fn capacities_match_the_documented_table() {
    assert_eq!(Layout::<u64, ExtentRecord>::LEAF_CAP, 168);
    assert_eq!(Layout::<u64, ExtentRecord>::INT_CAP, 201);
    assert_eq!(Layout::<u64, InodeRecord>::LEAF_CAP, 15);
    assert_eq!(Layout::<u64, DirentRecord>::LEAF_CAP, 14);
    assert_eq!(Layout::<(u64, u64), ()>::LEAF_CAP, 252);
    assert_eq!(Layout::<(u64, u64), ()>::INT_CAP, 144);
    assert_eq!(Layout::<(u64, u64, u64), ()>::LEAF_CAP, 168);
    assert_eq!(Layout::<(u64, u64, u64), ()>::INT_CAP, 112);
    assert_eq!(Layout::<(u64, u64, u64), DirentRecord>::LEAF_CAP, 13);
    // Each child's crc follows the child array.
    assert_eq!(Layout::<u64, u64>::INT_CRCS, 64 + 201 * 16);
    assert_eq!(Layout::<WideKey, u64>::LEAF_CAP, 4);
    assert_eq!(Layout::<WideKey, u64>::INT_CAP, 4);
    // Array offsets, as documented in the layout table.
    assert_eq!(Layout::<u64, ExtentRecord>::LEAF_VALS, 1408);
    assert_eq!(Layout::<u64, InodeRecord>::LEAF_VALS, 184);
    assert_eq!(Layout::<u64, DirentRecord>::LEAF_VALS, 176);
    assert_eq!(Layout::<u64, DirentRecord>::LEAF_VALS + 14 * 272, 3984);
    assert_eq!(Layout::<u64, ()>::INT_KIDS, 1672);
    assert_eq!(Layout::<(u64, u64), ()>::INT_KIDS, 2368);
    assert_eq!(Layout::<(u64, u64, u64), ()>::INT_KIDS, 2752);
    assert_eq!(BTree::<u64, DirentRecord>::LEAF_CAPACITY, 14);
    assert_eq!(BTree::<u64, DirentRecord>::INTERNAL_CAPACITY, 201);
}

#[test]
fn empty_tree() {
    let mut f = Fixture::<u64, ExtentRecord>::new(BlockKind::ExtentTree);
    assert_eq!(f.get(&0), None);
    assert_eq!(f.get(&u64::MAX), None);
    assert_eq!(f.remove(&7), None);
    assert!(f.all().is_empty());
    assert_eq!(f.t.last_le(&mut f.s, &f.root, &u64::MAX).unwrap(), None);
    assert_eq!(f.t.first_ge(&mut f.s, &f.root, &0).unwrap(), None);
    assert_eq!(
        f.t.check(&mut f.s, &f.root).unwrap(),
        TreeStats {
            records: 0,
            nodes: 0,
            height: 0
        }
    );
    let mut n = 0;
    f.t.visit_nodes(&mut f.s, &f.root, &mut |_, _| n += 1)
        .unwrap();
    assert_eq!(n, 0);
    f.t.destroy(&mut f.s, &mut f.root).unwrap();
    assert_eq!(f.root, TreeRoot::EMPTY);
    assert!(f.t.is_empty(&f.root));
    assert_eq!(f.t.len(&mut f.s, &f.root).unwrap(), 0);
    assert_eq!(
        f.s.allocs + f.s.reads + f.s.writes,
        0,
        "the empty tree needs no store access"
    );
}

#[test]
fn single_record_lifecycle() {
    let mut f = Fixture::<u64, u64>::new(BlockKind::InodeTree);
    assert_eq!(f.insert(5, 50), None);
    assert_eq!(f.root.height.get(), 1);
    assert_eq!(f.get(&5), Some(50));
    assert_eq!(f.get(&4), None);
    assert_eq!(
        f.check(),
        TreeStats {
            records: 1,
            nodes: 1,
            height: 1
        }
    );
    assert_eq!(f.remove(&4), None);
    assert_eq!(f.remove(&5), Some(50));
    assert_eq!(f.root, TreeRoot::EMPTY);
    assert_eq!(f.s.live_nodes(), 0);
    assert_eq!(f.remove(&5), None);
}

#[test]
fn replace_returns_the_old_value() {
    let mut f = Fixture::<u64, ExtentRecord>::new(BlockKind::ExtentTree);
    for i in 0..1000u64 {
        assert_eq!(f.insert(i * 3, ExtentRecord::make(i)), None);
    }
    let nodes = f.check().nodes;
    for i in (0..1000u64).rev() {
        assert_eq!(
            f.insert(i * 3, ExtentRecord::make(i + 7)),
            Some(ExtentRecord::make(i))
        );
    }
    for i in 0..1000u64 {
        assert_eq!(f.get(&(i * 3)), Some(ExtentRecord::make(i + 7)));
    }
    let st = f.check();
    assert_eq!(st.records, 1000);
    assert_eq!(st.nodes, nodes, "replacing must not change the shape");
}

#[test]
fn extreme_keys() {
    let mut f = Fixture::<u64, u64>::new(BlockKind::FreeTree);
    for k in [u64::MAX, 0, 1, u64::MAX - 1] {
        f.insert(k, k ^ 1);
    }
    for i in 0..2000u64 {
        f.insert(i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1, i);
    }
    f.check();
    assert_eq!(f.get(&u64::MAX), Some(u64::MAX ^ 1));
    assert_eq!(f.get(&0), Some(1));
    let all = f.all();
    assert_eq!(all.first().unwrap().0, 0);
    assert_eq!(all.last().unwrap().0, u64::MAX);
    assert_eq!(
        f.collect(&u64::MAX, &u64::MAX),
        vec![(u64::MAX, u64::MAX ^ 1)]
    );
    assert_eq!(f.collect(&0, &0), vec![(0, 1)]);
    assert_eq!(
        f.t.last_le(&mut f.s, &f.root, &u64::MAX).unwrap(),
        Some((u64::MAX, u64::MAX ^ 1))
    );
    assert_eq!(
        f.t.first_ge(&mut f.s, &f.root, &u64::MAX).unwrap(),
        Some((u64::MAX, u64::MAX ^ 1))
    );
    assert_eq!(f.t.first_ge(&mut f.s, &f.root, &0).unwrap(), Some((0, 1)));
    assert_eq!(f.t.last_le(&mut f.s, &f.root, &0).unwrap(), Some((0, 1)));
    assert_eq!(f.remove(&u64::MAX), Some(u64::MAX ^ 1));
    assert_eq!(f.remove(&0), Some(1));
    assert_eq!(f.t.last_le(&mut f.s, &f.root, &0).unwrap(), None);
    assert_eq!(f.t.first_ge(&mut f.s, &f.root, &u64::MAX).unwrap(), None);
    f.check();

    let mut g = Fixture::<(u64, u64, u64), ()>::new(BlockKind::RmapTree);
    let max = (u64::MAX, u64::MAX, u64::MAX);
    let min = (0, 0, 0);
    for k in [
        max,
        min,
        (u64::MAX, u64::MAX, u64::MAX - 1),
        (0, 0, 1),
        (u64::MAX, 0, 0),
    ] {
        g.insert(k, ());
    }
    for i in 0..3000u64 {
        g.insert((i % 3, u64::MAX - i, i), ());
    }
    g.check();
    assert_eq!(g.get(&max), Some(()));
    assert_eq!(g.get(&min), Some(()));
    assert_eq!(g.all().last().unwrap().0, max);
    assert_eq!(g.all().first().unwrap().0, min);
    assert_eq!(g.collect(&max, &max).len(), 1);
    assert_eq!(
        g.t.last_le(&mut g.s, &g.root, &max).unwrap(),
        Some((max, ()))
    );
    assert_eq!(
        g.t.first_ge(&mut g.s, &g.root, &(u64::MAX, 0, 1))
            .unwrap()
            .unwrap()
            .0,
        (u64::MAX, u64::MAX, u64::MAX - 1)
    );
    g.t.destroy(&mut g.s, &mut g.root).unwrap();
    assert_eq!(g.s.live_nodes(), 0);
}

#[test]
fn range_bounds_are_inclusive_and_break_stops() {
    let mut f = Fixture::<u64, u64>::new(BlockKind::InodeTree);
    for i in 0..5000u64 {
        f.insert(i * 2, i);
    }
    assert!(f.root.height.get() >= 2);
    let r = f.collect(&100, &200);
    assert_eq!(r.first().unwrap().0, 100);
    assert_eq!(r.last().unwrap().0, 200);
    assert_eq!(r.len(), 51);
    let r = f.collect(&101, &199);
    assert_eq!(
        (r.first().unwrap().0, r.last().unwrap().0, r.len()),
        (102, 198, 49)
    );
    assert!(f.collect(&101, &101).is_empty());
    assert_eq!(f.collect(&9998, &u64::MAX), vec![(9998, 4999)]);
    assert!(f.collect(&9999, &u64::MAX).is_empty());
    assert!(
        f.collect(&300, &200).is_empty(),
        "lo > hi is an empty range"
    );
    // Crossing many leaves.
    assert_eq!(f.collect(&0, &u64::MAX).len(), 5000);

    // Early break after exactly n records, also across a leaf boundary.
    for n in [1usize, 2, 100, 169, 170, 1000] {
        let mut got = Vec::new();
        f.t.range(&mut f.s, &f.root, &1, &u64::MAX, &mut |k, _| {
            got.push(k);
            if got.len() == n {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
        assert_eq!(got, (1..=n as u64).map(|i| i * 2).collect::<Vec<_>>());
    }
}

#[test]
fn last_le_and_first_ge_at_every_boundary() {
    let mut f = Fixture::<u64, DirentRecord>::new(BlockKind::DirTree);
    let mut m = BTreeMap::new();
    for i in 1..=600u64 {
        f.insert(i * 10, DirentRecord::make(i));
        m.insert(i * 10, DirentRecord::make(i));
    }
    // Remove the first keys of some leaves, so that separators are below the
    // leaves' smallest keys (the case where last_le must step left).
    let mut rng = SmallRng::seed_from_u64(3);
    for _ in 0..150 {
        let k = rng.random_range(1..=600u64) * 10;
        assert_eq!(f.remove(&k), m.remove(&k));
    }
    f.verify(&m);
    assert!(f.root.height.get() >= 2);
    for k in 0..=6020u64 {
        assert_eq!(
            f.t.last_le(&mut f.s, &f.root, &k).unwrap(),
            model_last_le(&m, &k),
            "last_le({k})"
        );
        assert_eq!(
            f.t.first_ge(&mut f.s, &f.root, &k).unwrap(),
            model_first_ge(&m, &k),
            "first_ge({k})"
        );
    }
    for k in [u64::MAX, u64::MAX - 1] {
        assert_eq!(
            f.t.last_le(&mut f.s, &f.root, &k).unwrap(),
            model_last_le(&m, &k)
        );
        assert_eq!(f.t.first_ge(&mut f.s, &f.root, &k).unwrap(), None);
    }
}

#[test]
fn zero_size_values() {
    let mut f = Fixture::<(u64, u64, u64), ()>::new(BlockKind::RmapTree);
    let mut m = BTreeMap::new();
    let mut rng = SmallRng::seed_from_u64(9);
    for _ in 0..40_000 {
        let k = <(u64, u64, u64)>::make(rng.random_range(0..30_000));
        assert_eq!(f.insert(k, ()), m.insert(k, ()));
    }
    f.verify(&m);
    assert!(f.root.height.get() >= 2);
    let keys: Vec<_> = m.keys().copied().collect();
    for k in &keys {
        assert_eq!(f.get(k), Some(()));
        assert_eq!(f.remove(k), Some(()));
    }
    assert_eq!(f.root, TreeRoot::EMPTY);
    assert_eq!(f.s.live_nodes(), 0);
}

#[test]
fn appends_fill_nodes_three_quarters() {
    // In key order, splits at the right edge keep three quarters in the
    // left node: fewer nodes than half-full splits would leave.
    let mut f = Fixture::<u64, u64>::new(BlockKind::FreeTree);
    let n = 20_000u64;
    for i in 0..n {
        f.insert(i, i);
    }
    let st = f.check();
    let cap = BTree::<u64, u64>::LEAF_CAPACITY as u64;
    // Half-full leaves would take 2n/cap nodes; three-quarters, 4n/3cap.
    assert!(
        st.nodes * cap * 7 / 10 <= n + cap * 8,
        "{} nodes of {cap} records for {n} appended records",
        st.nodes
    );
    // The same records in descending order split in halves.
    let mut g = Fixture::<u64, u64>::new(BlockKind::FreeTree);
    for i in (0..n).rev() {
        g.insert(i, i);
    }
    assert!(g.check().nodes > st.nodes * 13 / 10);
}

#[test]
fn deep_tree_with_large_values() {
    // 272-byte values and 24-byte keys: 13 records per leaf, 126 children per
    // internal node. Descending inserts leave nodes half full, which makes
    // the tree as deep as these records allow.
    let mut f = Fixture::<(u64, u64, u64), DirentRecord>::new(BlockKind::DirTree);
    let n = 70_000u64;
    let key = |i: u64| (i >> 20, i, !i);
    for i in (0..n).rev() {
        assert_eq!(f.insert(key(i), DirentRecord::make(i)), None);
    }
    let st = f.check();
    assert_eq!(st.records, n);
    assert!(st.height >= 4, "height {}", st.height);
    for i in (0..n).step_by(97) {
        let reads = f.s.reads;
        assert_eq!(f.get(&key(i)), Some(DirentRecord::make(i)));
        assert_eq!(
            f.s.reads - reads,
            u64::from(st.height),
            "a lookup reads one node per level"
        );
    }
    let mut levels = vec![0u64; st.height as usize];
    f.t.visit_nodes(&mut f.s, &f.root, &mut |_, l| levels[l as usize] += 1)
        .unwrap();
    assert_eq!(levels.iter().sum::<u64>(), st.nodes);
    assert_eq!(levels[st.height as usize - 1], 1, "one root");

    // Remove everything in random order: merges at every level, root collapses.
    let mut order: Vec<u64> = (0..n).collect();
    order.shuffle(&mut SmallRng::seed_from_u64(1));
    let mut left = n;
    for (j, i) in order.into_iter().enumerate() {
        assert_eq!(f.remove(&key(i)), Some(DirentRecord::make(i)));
        left -= 1;
        if j % 10_000 == 0 {
            assert_eq!(f.check().records, left);
        }
    }
    assert_eq!(f.root, TreeRoot::EMPTY);
    assert_eq!(f.s.live_nodes(), 0);
}

#[test]
fn destroy_frees_every_node() {
    let mut f = Fixture::<u64, DirentRecord>::new(BlockKind::DirTree);
    for i in 0..5000u64 {
        f.insert(i.wrapping_mul(2654435761), DirentRecord::make(i));
    }
    let st = f.check();
    assert!(st.height >= 3);
    let mut seen = Vec::new();
    f.t.visit_nodes(&mut f.s, &f.root, &mut |b, _| seen.push(b.0))
        .unwrap();
    seen.sort_unstable();
    assert_eq!(seen, f.s.live_blocks());
    f.t.destroy(&mut f.s, &mut f.root).unwrap();
    assert_eq!(f.root, TreeRoot::EMPTY);
    assert_eq!(f.s.live_nodes(), 0);
    assert_eq!(f.s.frees, st.nodes);
}

#[test]
fn remove_range_removes_inclusive_span() {
    let mut f = Fixture::<u64, u64>::new(BlockKind::ExtentTree);
    let mut m = BTreeMap::new();
    for i in 0..3000u64 {
        f.insert(i, i + 1);
        m.insert(i, i + 1);
    }
    let mut seen = Vec::new();
    let n =
        f.t.remove_range(&mut f.s, &mut f.root, &100, &2500, &mut |k, _| seen.push(k))
            .unwrap();
    assert_eq!(n, 2401);
    assert_eq!(seen, (100..=2500).collect::<Vec<_>>());
    m.retain(|k, _| !(100..=2500).contains(k));
    f.verify(&m);
    let n =
        f.t.remove_range(&mut f.s, &mut f.root, &0, &u64::MAX, &mut |_, _| {})
            .unwrap();
    assert_eq!(n as usize, m.len());
    assert_eq!(f.root, TreeRoot::EMPTY);
    assert_eq!(f.s.live_nodes(), 0);
}

// ---- random operations against the model ----

/// Random inserts and removes, alternating between growing and shrinking
/// phases so that splits and merges both happen at every level. Compared with
/// the model after every few operations and fully checked after each batch.
fn model_run<K: TestKey, V: TestVal, A: Summary<K, V>>(
    kind: BlockKind,
    seed: u64,
    ops: usize,
    key_space: u64,
    batch: usize,
    min_height: u32,
) {
    let mut f = Fixture::<K, V, A>::new(kind);
    let mut m: BTreeMap<K, V> = BTreeMap::new();
    let mut rng = SmallRng::seed_from_u64(seed);
    let phase = ops / 6;
    let mut max_height = 0;
    for op in 0..ops {
        let p_insert = if (op / phase.max(1)).is_multiple_of(2) {
            0.75
        } else {
            0.25
        };
        let k = K::make(rng.random_range(0..key_space));
        if rng.random_bool(p_insert) {
            let v = V::make(rng.random());
            assert_eq!(f.insert(k, v), m.insert(k, v), "insert {k:?} (op {op})");
        } else {
            assert_eq!(f.remove(&k), m.remove(&k), "remove {k:?} (op {op})");
        }
        if op % 4 == 0 {
            let q = K::make(rng.random_range(0..key_space));
            assert_eq!(f.get(&q), m.get(&q).copied());
            assert_eq!(
                f.t.last_le(&mut f.s, &f.root, &q).unwrap(),
                model_last_le(&m, &q)
            );
            assert_eq!(
                f.t.first_ge(&mut f.s, &f.root, &q).unwrap(),
                model_first_ge(&m, &q)
            );
        }
        if op % batch == batch - 1 {
            f.verify(&m);
            max_height = max_height.max(f.root.height.get());
        }
    }
    f.verify(&m);
    assert!(
        max_height >= min_height,
        "the run should reach height {min_height} (got {max_height})"
    );
    let mut keys: Vec<K> = m.keys().copied().collect();
    keys.shuffle(&mut rng);
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(f.remove(k), m.remove(k));
        if i % (batch * 4) == 0 {
            f.verify(&m);
        }
    }
    assert_eq!(f.root, TreeRoot::EMPTY);
    assert_eq!(f.s.live_nodes(), 0, "every node freed");
}

#[test]
fn model_small_fanout() {
    // Four entries per node: every few operations split or merge something.
    for seed in 0..4 {
        model_run::<WideKey, u64, ()>(BlockKind::FreeTree, seed, 12_000, 600, 200, 4);
    }
}

#[test]
fn model_dirents() {
    model_run::<u64, DirentRecord, ()>(BlockKind::DirTree, 11, 40_000, 6_000, 2_000, 3);
}

#[test]
fn model_extents() {
    model_run::<u64, ExtentRecord, ()>(BlockKind::ExtentTree, 12, 120_000, 150_000, 20_000, 3);
}

#[test]
fn model_rmap_unit_values() {
    model_run::<(u64, u64, u64), (), ()>(BlockKind::RmapTree, 13, 120_000, 150_000, 20_000, 3);
}

// ---- summaries (augmented trees) ----

#[test]
fn summaries_take_room_only_when_kept() {
    // Internal nodes give each child a summary slot after the crc array.
    assert_eq!(Layout::<(u64, u64, u64), u64, MaxEnd>::INT_CAP, 91);
    assert_eq!(
        Layout::<(u64, u64, u64), u64, MaxEnd>::INT_KIDS,
        64 + 91 * 24
    );
    assert_eq!(
        Layout::<(u64, u64, u64), u64, MaxEnd>::INT_SUMS,
        64 + 91 * 36
    );
    assert_eq!(Layout::<(u64, u64, u64), u64, MaxEnd>::LEAF_CAP, 126);
    assert_eq!(Layout::<AugKey, u64, MaxEnd>::INT_CAP, 4);
    assert_eq!(Layout::<AugKey, u64, MaxEnd>::LEAF_CAP, 4);
    // Without summaries nothing moves.
    assert_eq!(Layout::<(u64, u64, u64), u64>::INT_CAP, 112);
}

#[test]
fn model_augmented_small_fanout() {
    // check() after every batch verifies every summary against its child.
    for seed in 0..3 {
        model_run::<AugKey, u64, MaxEnd>(BlockKind::FreeTree, seed, 10_000, 600, 100, 4);
    }
}

#[test]
fn model_augmented_rmap_shape() {
    model_run::<(u64, u64, u64), u64, MaxEnd>(BlockKind::RmapTree, 14, 60_000, 80_000, 10_000, 3);
}

/// Intervals in an augmented tree, keyed by `make(x)` for random `x` below
/// `space` and starting at `start(key)`. Overlap queries by `range_pruned`
/// (keys up to `upto(last block)`, subtrees skipped by their largest end)
/// must return exactly what a scan of the model returns, and read no more
/// nodes than the paths to the records found and the two boundary paths.
fn interval_queries<K: Key + std::hash::Hash>(
    seed: u64,
    n: u64,
    space: u64,
    make: impl Fn(u64) -> K,
    start: impl Fn(&K) -> u64,
    upto: impl Fn(u64) -> K,
) where
    MaxEnd: Summary<K, u64>,
{
    let t = BTree::<K, u64, MaxEnd>::new(BlockKind::RmapTree, OWNER);
    let mut s = MemStore::new();
    let mut root = TreeRoot::EMPTY;
    let mut m: BTreeMap<K, u64> = BTreeMap::new();
    let mut rng = SmallRng::seed_from_u64(seed);
    let reach = space / 8;
    for round in 0..6 {
        for _ in 0..n {
            let k = make(rng.random_range(0..space));
            // Mostly short intervals, a few very long ones.
            let len = if rng.random_bool(0.02) {
                rng.random_range(1..reach)
            } else {
                rng.random_range(1..20)
            };
            if round % 2 == 1 && rng.random_bool(0.5) {
                assert_eq!(t.remove(&mut s, &mut root, &k).unwrap(), m.remove(&k));
            } else {
                assert_eq!(
                    t.insert(&mut s, &mut root, k, len).unwrap(),
                    m.insert(k, len)
                );
            }
        }
        let st = t.check(&mut s, &root).unwrap();
        assert_eq!(st.records as usize, m.len());
        let h = u64::from(root.height.get());
        assert!(h >= 2, "the tree should have internal nodes");
        for _ in 0..200 {
            let p = rng.random_range(0..reach);
            let l = rng.random_range(1..50);
            let want: Vec<(K, u64)> = m
                .iter()
                .filter(|(k, len)| start(k) < p + l && start(k) + **len > p)
                .map(|(k, v)| (*k, *v))
                .collect();
            let before = s.reads;
            let mut got = vec![];
            t.range_pruned(
                &mut s,
                &root,
                &K::MIN,
                &upto(p + l - 1),
                &|a| a.0 <= p,
                &mut |k, v| {
                    if start(&k) + v > p {
                        got.push((k, v));
                    }
                    ControlFlow::Continue(())
                },
            )
            .unwrap();
            let reads = s.reads - before;
            assert_eq!(got, want, "records overlapping [{p}, +{l})");
            assert!(
                reads <= h * (want.len() as u64 + 2),
                "{reads} nodes read for {} records in a tree of height {h}",
                want.len()
            );
        }
    }
}

#[test]
fn interval_queries_match_a_scan() {
    interval_queries(21, 400, 8_000, AugKey, |k| k.0, AugKey);
}

#[test]
fn interval_queries_match_a_scan_rmap_shape() {
    // Eight owners can start at each block, as in the reverse map.
    interval_queries(
        22,
        4_000,
        80_000,
        |x| (x / 8, x % 8, 0),
        |k| k.0,
        |b| (b, u64::MAX, u64::MAX),
    );
}

#[test]
fn a_wrong_summary_is_reported() {
    let mut f = Fixture::<AugKey, u64, MaxEnd>::new(BlockKind::FreeTree);
    for i in 0..40u64 {
        f.insert(AugKey(i * 10), 5);
    }
    assert!(f.root.height.get() >= 3);
    f.check();
    // The check behind the crc: the changed node's pointer is not updated.
    f.s.check_crcs = false;
    let mut internal = vec![];
    f.t.visit_nodes(&mut f.s, &f.root, &mut |b, level| {
        if level > 0 {
            internal.push(b.0)
        }
    })
    .unwrap();
    for b in internal {
        let saved = *f.s.raw(b).unwrap();
        let at = Layout::<AugKey, u64, MaxEnd>::INT_SUMS + 8;
        f.s.raw_mut(b).unwrap()[at] ^= 0x40;
        f.s.reseal(b);
        let e = f.t.check(&mut f.s, &f.root).unwrap_err();
        assert!(
            matches!(&e, TreeError::Corrupt { what, .. } if what.contains("summary")),
            "{e:?}"
        );
        *f.s.raw_mut(b).unwrap() = saved;
    }
    f.check();
}

/// Sorted batches (appends at the end, runs inside existing ranges,
/// replacements) give the same tree as one insert each (summaries included:
/// `check` verifies each against its child).
fn bulk_run<K: TestKey, V: TestVal, A: Summary<K, V>>(
    kind: BlockKind,
    seed: u64,
    rounds: usize,
    key_space: u64,
) {
    let mut f = Fixture::<K, V, A>::new(kind);
    let mut m: BTreeMap<K, V> = BTreeMap::new();
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut next = 0u64;
    for round in 0..rounds {
        let n = rng.random_range(1..600usize);
        let mut batch: BTreeMap<K, V> = BTreeMap::new();
        for _ in 0..n {
            let x = match round % 3 {
                // Appends past every key so far (the error log's shape).
                0 => {
                    next += rng.random_range(1..3);
                    key_space + next
                }
                // A narrow run inside the existing keys.
                1 => {
                    let base = rng.random_range(0..key_space);
                    base + rng.random_range(0..64)
                }
                _ => rng.random_range(0..key_space),
            };
            batch.insert(K::make(x), V::make(rng.random()));
        }
        // Keys made from numbers are distinct but not ordered like the
        // numbers: the batch map sorts them by key.
        let items: Vec<(K, V)> = batch.iter().map(|(k, v)| (*k, *v)).collect();
        let replaced = f.t.insert_sorted(&mut f.s, &mut f.root, &items).unwrap();
        assert_eq!(replaced, batch.keys().filter(|k| m.contains_key(k)).count());
        m.extend(batch);
        if round % 5 == 4 {
            f.verify(&m);
        }
        // Removals between batches, so leaves are not all full or all fresh.
        if round % 4 == 3 {
            let keys: Vec<K> = m.keys().copied().collect();
            for k in keys.iter().step_by(3) {
                assert_eq!(f.remove(k), m.remove(k));
            }
        }
    }
    f.verify(&m);
    assert!(f.root.height.get() >= 2, "the run should split leaves");
}

#[test]
fn insert_sorted_matches_one_insert_each() {
    for seed in 0..3 {
        bulk_run::<WideKey, u64, ()>(BlockKind::FreeTree, seed, 60, 5_000);
        bulk_run::<(u64, u64, u64), (), ()>(BlockKind::RmapTree, seed, 60, 50_000);
        bulk_run::<u64, ExtentRecord, ()>(BlockKind::ExtentTree, seed, 60, 50_000);
        bulk_run::<AugKey, u64, MaxEnd>(BlockKind::FreeTree, seed, 40, 5_000);
        bulk_run::<(u64, u64, u64), u64, MaxEnd>(BlockKind::RmapTree, seed, 60, 50_000);
    }
}

#[test]
fn insert_sorted_replaces_runs_and_fills_gaps() {
    // Every record replaced in one batch (a loss tree whose every file lost
    // one more block), then batches that replace some and insert others
    // between them, splitting leaves: as one insert each.
    let mut f = Fixture::<(u64, u64), u64>::new(BlockKind::LossTree);
    let mut m = BTreeMap::new();
    let evens: Vec<((u64, u64), u64)> = (0..3000u64).map(|i| ((i * 2, 0), i)).collect();
    assert_eq!(f.t.insert_sorted(&mut f.s, &mut f.root, &evens).unwrap(), 0);
    m.extend(evens.iter().copied());
    for round in 1..4u64 {
        let all: Vec<((u64, u64), u64)> = m.keys().map(|k| (*k, k.0 + round)).collect();
        assert_eq!(
            f.t.insert_sorted(&mut f.s, &mut f.root, &all).unwrap(),
            all.len()
        );
        m.extend(all);
        f.verify(&m);
        // Odd keys and a second record per key, among the old ones.
        let mixed: Vec<((u64, u64), u64)> = (0..6000u64 / round)
            .map(|k| ((k, round % 2), k * 7 + round))
            .collect();
        let had = mixed.iter().filter(|(k, _)| m.contains_key(k)).count();
        assert_eq!(
            f.t.insert_sorted(&mut f.s, &mut f.root, &mixed).unwrap(),
            had
        );
        m.extend(mixed);
        f.verify(&m);
    }
}

#[test]
fn search_from_finds_what_search_finds() {
    use crate::node::Node;
    let mut n = Node::<u64, u64>::empty(9, BlockKind::FreeTree, 0, 0);
    let items: Vec<(u64, u64)> = (0..40u64).map(|i| (10 + 3 * i, i)).collect();
    n.append(&items[..25]).unwrap();
    n.append(&items[25..]).unwrap();
    assert_eq!(n.count, 40);
    for (i, (k, v)) in items.iter().enumerate() {
        assert_eq!((n.key(i).unwrap(), n.val(i).unwrap()), (*k, *v));
    }
    // A full leaf takes no more.
    let cap = Layout::<u64, u64>::LEAF_CAP;
    let more: Vec<(u64, u64)> = (0..cap as u64 - 39).map(|i| (1000 + i, 0)).collect();
    assert!(n.append(&more).is_err());
    assert_eq!(n.count, 40);
    for key in 0..140u64 {
        let want = n.search(&key).unwrap();
        // Any start whose slots before it hold smaller keys.
        let below = items.iter().take_while(|(k, _)| *k < key).count();
        for from in 0..=below {
            assert_eq!(
                n.search_from(from, &key).unwrap(),
                want,
                "{key} from {from}"
            );
        }
    }
}

#[test]
fn insert_sorted_refuses_unsorted_keys() {
    let mut f = Fixture::<u64, u64>::new(BlockKind::FreeTree);
    let e =
        f.t.insert_sorted(&mut f.s, &mut f.root, &[(2, 0), (1, 0)])
            .unwrap_err();
    assert!(e.to_string().contains("strictly increasing"), "{e}");
    let e =
        f.t.insert_sorted(&mut f.s, &mut f.root, &[(1, 0), (1, 0)])
            .unwrap_err();
    assert!(e.to_string().contains("strictly increasing"), "{e}");
    assert_eq!(f.root, TreeRoot::EMPTY);
}

// ---- running out of space ----

#[test]
fn no_space_mid_insert_leaves_tree_intact() {
    let mut f = Fixture::<WideKey, u64>::new(BlockKind::FreeTree);
    let mut m = BTreeMap::new();
    let mut rng = SmallRng::seed_from_u64(77);
    let mut failures = 0;
    for i in 0..3000u64 {
        let k = WideKey(rng.random_range(0..100_000));
        // Often allow too few allocations for the splits this insert needs.
        f.s.set_alloc_limit(rng.random_bool(0.5).then(|| rng.random_range(0..4)));
        let live = f.s.live_nodes();
        match f.t.insert(&mut f.s, &mut f.root, k, i) {
            Ok(old) => assert_eq!(old, m.insert(k, i)),
            Err(TreeError::NoSpace) => {
                failures += 1;
                assert_eq!(
                    f.s.live_nodes(),
                    live,
                    "blocks of a failed insert are given back"
                );
                assert_eq!(f.get(&k), m.get(&k).copied());
            }
            Err(e) => panic!("unexpected error {e}"),
        }
        f.s.set_alloc_limit(None);
        if i % 100 == 0 {
            f.verify(&m);
        }
    }
    assert!(failures > 100);
    f.verify(&m);
    assert!(f.root.height.get() >= 4, "height {}", f.root.height.get());
    // An empty tree cannot even get its first leaf.
    let mut g = Fixture::<u64, u64>::new(BlockKind::InodeTree);
    g.s.set_alloc_limit(Some(0));
    assert_eq!(
        g.t.insert(&mut g.s, &mut g.root, 1, 1),
        Err(TreeError::NoSpace)
    );
    assert_eq!(g.root, TreeRoot::EMPTY);
}

/// A store whose allocations fail after a while and whose free fails too:
/// the errors must surface, never a panic.
struct FailingStore {
    inner: MemStore,
    fail_free: bool,
}

impl NodeStore for FailingStore {
    fn read_node(
        &mut self,
        b: BlockNo,
        kind: BlockKind,
        owner: u64,
        crc: u32,
    ) -> crate::Result<crate::NodeBuf> {
        self.inner.read_node(b, kind, owner, crc)
    }
    fn write_node(&mut self, b: BlockNo, node: crate::NodeBuf) -> crate::Result<u32> {
        self.inner.write_node(b, node)
    }
    fn alloc_node(&mut self, kind: BlockKind, owner: u64) -> crate::Result<BlockNo> {
        self.inner.alloc_node(kind, owner)
    }
    fn free_node(&mut self, b: BlockNo, kind: BlockKind, owner: u64) -> crate::Result<()> {
        if self.fail_free {
            return Err(TreeError::Media { block: b.0 });
        }
        self.inner.free_node(b, kind, owner)
    }
}

#[test]
fn store_errors_propagate() {
    let t = BTree::<u64, u64>::new(BlockKind::InodeTree, OWNER);
    let mut s = FailingStore {
        inner: MemStore::new(),
        fail_free: false,
    };
    let mut root = TreeRoot::EMPTY;
    for i in 0..2000 {
        t.insert(&mut s, &mut root, i, i).unwrap();
    }
    s.fail_free = true;
    s.inner.set_alloc_limit(Some(0));
    let mut saw_no_space = false;
    for i in 2000..4000 {
        match t.insert(&mut s, &mut root, i, i) {
            Ok(_) => {}
            Err(TreeError::NoSpace) => saw_no_space = true,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(saw_no_space);
    let mut saw_media = false;
    for i in 0..2000 {
        match t.remove(&mut s, &mut root, &i) {
            Ok(_) => {}
            Err(TreeError::Media { .. }) => {
                saw_media = true;
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(saw_media);
}

// ---- corruption ----

/// A three-level tree of small nodes for corruption tests.
fn corruptible() -> (Fixture<WideKey, u64>, BTreeMap<WideKey, u64>) {
    let mut f = Fixture::<WideKey, u64>::new(BlockKind::FreeTree);
    let mut m = BTreeMap::new();
    // Inserted out of order (7 is prime to 40), so nodes split in halves
    // rather than as appends, and every node has keys on both sides of its
    // second one.
    for j in 0..40u64 {
        let i = j * 7 % 40;
        f.insert(WideKey(i * 10), i);
        m.insert(WideKey(i * 10), i);
    }
    assert!(f.root.height.get() >= 3);
    // The tests that damage this tree reach the checks behind the crc
    // (their changes are resealed, the pointers to them are not):
    // `stale_and_forged_nodes_are_refused` tests the crc itself.
    f.s.check_crcs = false;
    (f, m)
}

/// Rewrites a header field of block `b` and reseals it.
fn edit_header(f: &mut Fixture<WideKey, u64>, b: u64, edit: impl FnOnce(&mut BlockHeader)) {
    let raw = f.s.raw_mut(b).unwrap();
    let mut h = header(&raw[..]).unwrap();
    edit(&mut h);
    write_header(&mut raw[..], &h);
    f.s.reseal(b);
}

/// Where child `i` of an internal node of the corruption-test tree is stored.
fn child_slot(i: usize) -> usize {
    Layout::<WideKey, u64>::INT_KIDS + i * 8
}

/// Every read-side operation must fail with a `Corrupt` or `Format` error (or
/// be unaffected) — never panic. Returns the errors of `check` and of a full
/// range.
fn assert_reported(f: &mut Fixture<WideKey, u64>) -> (TreeError, TreeError) {
    let c = f.t.check(&mut f.s, &f.root).unwrap_err();
    assert!(
        matches!(c, TreeError::Corrupt { .. } | TreeError::Format(_)),
        "{c:?}"
    );
    let r =
        f.t.range(
            &mut f.s,
            &f.root,
            &WideKey::MIN,
            &WideKey::MAX,
            &mut |_, _| ControlFlow::Continue(()),
        )
        .unwrap_err();
    assert!(
        matches!(r, TreeError::Corrupt { .. } | TreeError::Format(_)),
        "{r:?}"
    );
    for k in 0..45 {
        let _ = f.t.get(&mut f.s, &f.root, &WideKey(k * 10));
        let _ = f.t.last_le(&mut f.s, &f.root, &WideKey(k * 10));
        let _ = f.t.first_ge(&mut f.s, &f.root, &WideKey(k * 10));
    }
    let _ = f.t.visit_nodes(&mut f.s, &f.root, &mut |_, _| {});
    (c, r)
}

fn root_no(f: &Fixture<WideKey, u64>) -> u64 {
    f.root.block.get()
}

/// A node that verifies by itself but is not the one its pointer names (an
/// older sealed copy: a lost write; or a record changed and resealed) is
/// refused by every read, and the tree changes nothing through it. Once
/// the pointers above are made to name the forgery, the crc lets it pass.
#[test]
fn stale_and_forged_nodes_are_refused() {
    let mut f = Fixture::<WideKey, u64>::new(BlockKind::FreeTree);
    for j in 0..40u64 {
        f.insert(WideKey(j * 7 % 40 * 10), j);
    }
    assert!(f.root.height.get() >= 3);
    let leaf = first_leaf(&mut f);
    let old = *f.s.raw(leaf).unwrap();
    let r0 = f.root;
    // A later change to the leaf: its pointers now name the new crc.
    f.insert(WideKey(1), 99);
    assert_ne!(f.root.crc, r0.crc, "the root's crc follows a change below");
    let new = *f.s.raw(leaf).unwrap();
    assert_ne!(old[..], new[..]);
    for (what, blk) in [
        ("stale", old),
        ("forged", {
            let mut b = new;
            b[HEADER_SIZE + WideKey::SIZE * 4 + 3] ^= 1;
            b
        }),
    ] {
        *f.s.raw_mut(leaf).unwrap() = blk;
        f.s.reseal(leaf);
        assert!(
            daxfs_format::verify_block(
                f.s.raw(leaf).unwrap(),
                &daxfs_format::block::Expect {
                    blockno: leaf,
                    kind: BlockKind::FreeTree,
                    owner: Some(OWNER),
                    fs_id: f.s.fs_id,
                }
            )
            .is_ok(),
            "{what}: the copy verifies by itself"
        );
        let stale = |e: &TreeError| matches!(e, TreeError::Format(FormatError::StalePointer { block, .. }) if *block == leaf);
        let e = f.t.get(&mut f.s, &f.root, &WideKey(1)).unwrap_err();
        assert!(stale(&e), "{what}: {e:?}");
        let e = f.t.check(&mut f.s, &f.root).unwrap_err();
        assert!(stale(&e), "{what}: {e:?}");
        let mut root = f.root;
        let e = f.t.insert(&mut f.s, &mut root, WideKey(2), 1).unwrap_err();
        assert!(stale(&e), "{what}: {e:?}");
        assert_eq!(root, f.root, "{what}: nothing changed");
        *f.s.raw_mut(leaf).unwrap() = new;
    }
    f.check();
    // The same forgery with every pointer above resealed to name it: the
    // crc cannot tell (only the other checks may).
    f.s.raw_mut(leaf).unwrap()[HEADER_SIZE + WideKey::SIZE * 4 + 3] ^= 2;
    let mut root = f.root;
    f.s.reseal_up::<WideKey, u64, ()>(&mut root, leaf);
    assert_ne!(root.crc, f.root.crc);
    f.t.check(&mut f.s, &root).unwrap();
}

#[test]
fn flipped_byte_is_a_checksum_error() {
    let (mut f, _) = corruptible();
    let r = root_no(&f);
    f.s.raw_mut(r).unwrap()[HEADER_SIZE + 3] ^= 0x10;
    let e = f.t.get(&mut f.s, &f.root, &WideKey(10)).unwrap_err();
    assert!(
        matches!(e, TreeError::Format(FormatError::ChecksumMismatch { .. })),
        "{e:?}"
    );
    assert_reported(&mut f);
}

#[test]
fn flipped_key_byte_resealed_breaks_order() {
    let (mut f, _) = corruptible();
    // Corrupt each node's second key in turn; check() must notice every time.
    for b in f.s.live_blocks() {
        let saved = *f.s.raw(b).unwrap();
        f.s.raw_mut(b).unwrap()[HEADER_SIZE + WideKey::SIZE + 7] ^= 0x80;
        f.s.reseal(b);
        let (c, _) = assert_reported(&mut f);
        assert!(
            matches!(c, TreeError::Corrupt { block, .. } if block == b),
            "{c:?}"
        );
        *f.s.raw_mut(b).unwrap() = saved;
    }
    f.check();
}

#[test]
fn count_beyond_capacity() {
    let (mut f, _) = corruptible();
    let r = root_no(&f);
    edit_header(&mut f, r, |h| h.count = 5.into());
    let e = f.t.get(&mut f.s, &f.root, &WideKey(10)).unwrap_err();
    assert!(
        matches!(&e, TreeError::Corrupt { what, block, .. } if what.contains("capacity") && *block == r),
        "{e:?}"
    );
    assert_reported(&mut f);
    edit_header(&mut f, r, |h| h.count = u32::MAX.into());
    assert_reported(&mut f);
    // Also on a leaf, through insert and remove.
    let (mut f, _) = corruptible();
    let leaf = first_leaf(&mut f);
    edit_header(&mut f, leaf, |h| h.count = 1000.into());
    assert_reported(&mut f);
    assert!(f.t.insert(&mut f.s, &mut f.root, WideKey(1), 1).is_err());
    assert!(f.t.remove(&mut f.s, &mut f.root, &WideKey(0)).is_err());
}

fn first_leaf(f: &mut Fixture<WideKey, u64>) -> u64 {
    let mut leaf = 0;
    f.t.visit_nodes(&mut f.s, &f.root, &mut |b, l| {
        if l == 0 && leaf == 0 {
            leaf = b.0;
        }
    })
    .unwrap();
    leaf
}

#[test]
fn child_pointing_at_its_parent_or_itself_or_zero() {
    for (what, target) in [("parent", 1), ("self", 2), ("zero", 3)] {
        let (mut f, _) = corruptible();
        let r = root_no(&f);
        // The root's second child (an internal node) gets a bad first child.
        let kid = u64::from_le_bytes(
            f.s.raw(r).unwrap()[child_slot(1)..child_slot(1) + 8]
                .try_into()
                .unwrap(),
        );
        let bad = match target {
            1 => r,
            2 => kid,
            _ => 0,
        };
        f.s.raw_mut(kid).unwrap()[child_slot(0)..child_slot(0) + 8]
            .copy_from_slice(&bad.to_le_bytes());
        f.s.reseal(kid);
        let (c, _) = assert_reported(&mut f);
        assert!(matches!(c, TreeError::Corrupt { .. }), "{what}: {c:?}");
        // A lookup routed through the bad pointer names it.
        let sep = WideKey::decode(&f.s.raw(r).unwrap()[HEADER_SIZE + WideKey::SIZE..]).unwrap();
        let e = f.t.get(&mut f.s, &f.root, &sep).unwrap_err();
        let expect = ["level", "own node", "block 0"][target - 1];
        assert!(
            matches!(&e, TreeError::Corrupt { what: w, block, .. } if w.contains(expect) && (*block == kid || *block == r)),
            "{what}: {e:?}"
        );
        // Mutations through the damaged node fail cleanly too.
        for k in 0..40 {
            let _ = f.t.insert(&mut f.s, &mut f.root, WideKey(k * 10 + 5), k);
            let _ = f.t.remove(&mut f.s, &mut f.root, &WideKey(k * 10));
        }
        let mut root = f.root;
        let live = f.s.live_nodes();
        assert!(f.t.destroy(&mut f.s, &mut root).is_err());
        assert_eq!(
            f.s.live_nodes(),
            live,
            "destroy of a corrupt tree frees nothing"
        );
    }
}

#[test]
fn shared_child_is_detected() {
    let (mut f, _) = corruptible();
    let r = root_no(&f);
    // Both of the root's first two children point at the same subtree.
    let kid0: [u8; 8] = f.s.raw(r).unwrap()[child_slot(0)..child_slot(0) + 8]
        .try_into()
        .unwrap();
    f.s.raw_mut(r).unwrap()[child_slot(1)..child_slot(1) + 8].copy_from_slice(&kid0);
    f.s.reseal(r);
    let (c, rg) = assert_reported(&mut f);
    assert!(matches!(c, TreeError::Corrupt { .. }), "{c:?}");
    assert!(matches!(rg, TreeError::Corrupt { .. }), "{rg:?}");
    let live = f.s.live_nodes();
    let mut root = f.root;
    assert!(f.t.destroy(&mut f.s, &mut root).is_err());
    assert_eq!(f.s.live_nodes(), live);
    assert!(f.t.visit_nodes(&mut f.s, &f.root, &mut |_, _| {}).is_err());
}

#[test]
fn wrong_levels_and_heights() {
    // A leaf claiming to be internal, and an internal node claiming level 0.
    let (mut f, _) = corruptible();
    let leaf = first_leaf(&mut f);
    edit_header(&mut f, leaf, |h| h.level = 1);
    assert_reported(&mut f);
    let (mut f, _) = corruptible();
    let r = root_no(&f);
    let kid = u64::from_le_bytes(
        f.s.raw(r).unwrap()[child_slot(0)..child_slot(0) + 8]
            .try_into()
            .unwrap(),
    );
    edit_header(&mut f, kid, |h| h.level = 0);
    let (c, _) = assert_reported(&mut f);
    assert!(
        matches!(&c, TreeError::Corrupt { what, .. } if what.contains("level")),
        "{c:?}"
    );

    // Root pointers that disagree with the tree.
    let (mut f, _) = corruptible();
    let h = f.root.height.get();
    for bad in [
        TreeRoot::new(root_no(&f), h + 1, f.root.crc.get()),
        TreeRoot::new(root_no(&f), h - 1, f.root.crc.get()),
        TreeRoot::new(root_no(&f), 0, f.root.crc.get()),
    ] {
        let e = f.t.get(&mut f.s, &bad, &WideKey(10)).unwrap_err();
        assert!(matches!(e, TreeError::Corrupt { .. }), "{e:?}");
        assert!(f.t.check(&mut f.s, &bad).is_err());
    }
    let too_high = TreeRoot::new(root_no(&f), MAX_HEIGHT + 1, f.root.crc.get());
    let e = f.t.check(&mut f.s, &too_high).unwrap_err();
    assert!(
        matches!(&e, TreeError::Corrupt { what, .. } if what.contains("maximum")),
        "{e:?}"
    );
    assert!(
        f.t.get(&mut f.s, &TreeRoot::new(0, 3, 0), &WideKey(1))
            .is_err()
    );
    assert!(
        f.t.get(&mut f.s, &TreeRoot::new(999_999, 2, 0), &WideKey(1))
            .is_err()
    );
}

#[test]
fn wrong_kind_or_owner() {
    let (mut f, _) = corruptible();
    let other = BTree::<WideKey, u64>::new(BlockKind::FreeTree, OWNER + 1);
    let e = other.get(&mut f.s, &f.root, &WideKey(0)).unwrap_err();
    assert!(
        matches!(e, TreeError::Format(FormatError::WrongOwner { .. })),
        "{e:?}"
    );
    let other = BTree::<WideKey, u64>::new(BlockKind::ExtentTree, OWNER);
    let e = other.get(&mut f.s, &f.root, &WideKey(0)).unwrap_err();
    assert!(
        matches!(e, TreeError::Format(FormatError::WrongKind { .. })),
        "{e:?}"
    );
}

#[test]
fn underfull_and_stale_nodes_fail_check() {
    let (mut f, _) = corruptible();
    let leaf = first_leaf(&mut f);
    // Drop the leaf to one record (below the minimum of two).
    let n = header(&f.s.raw(leaf).unwrap()[..]).unwrap().count.get();
    assert!(n >= 2);
    edit_header(&mut f, leaf, |h| h.count = 1.into());
    let e = f.t.check(&mut f.s, &f.root).unwrap_err();
    assert!(matches!(e, TreeError::Corrupt { .. }), "{e:?}");
    // get still works on the record that is left: reading is lenient.
    assert!(f.t.get(&mut f.s, &f.root, &WideKey(0)).is_ok());

    let (mut f, _) = corruptible();
    let leaf = first_leaf(&mut f);
    f.s.raw_mut(leaf).unwrap()[BLOCK_SIZE - 1] = 1;
    f.s.reseal(leaf);
    let e = f.t.check(&mut f.s, &f.root).unwrap_err();
    assert!(
        matches!(&e, TreeError::Corrupt { what, .. } if what.contains("stale")),
        "{e:?}"
    );
}

#[test]
fn keys_outside_parent_bounds() {
    let (mut f, _) = corruptible();
    let r = root_no(&f);
    // Swap the root's first two children: each subtree is now outside the
    // bounds its separator promises.
    let raw = f.s.raw_mut(r).unwrap();
    let a: [u8; 8] = raw[child_slot(0)..child_slot(0) + 8].try_into().unwrap();
    let b: [u8; 8] = raw[child_slot(1)..child_slot(1) + 8].try_into().unwrap();
    raw[child_slot(0)..child_slot(0) + 8].copy_from_slice(&b);
    raw[child_slot(1)..child_slot(1) + 8].copy_from_slice(&a);
    f.s.reseal(r);
    let (c, rg) = assert_reported(&mut f);
    assert!(
        matches!(&c, TreeError::Corrupt { what, .. } if what.contains("bounds")),
        "{c:?}"
    );
    assert!(matches!(rg, TreeError::Corrupt { .. }));
}

// ---- fuzzing ----

/// Valid trees of every fuzz mode, sized to stay within the input's block cap.
fn valid_input(rng: &mut SmallRng, mode: u8) -> Vec<u8> {
    let kind = fuzz_kind(mode);
    let n = rng.random_range(0..120u64);
    let mut s = MemStore::new();
    let mut root = TreeRoot::EMPTY;
    macro_rules! fill {
        ($k:ty, $v:ty, $a:ty) => {{
            let t = BTree::<$k, $v, $a>::new(kind, crate::fuzz::FUZZ_OWNER);
            for i in 0..n {
                let x = rng.random_range(0..1000u64);
                t.insert(
                    &mut s,
                    &mut root,
                    <$k as TestKey>::make(x),
                    <$v as TestVal>::make(i),
                )
                .unwrap();
            }
            for _ in 0..n / 3 {
                let x = rng.random_range(0..1000u64);
                t.remove(&mut s, &mut root, &<$k as TestKey>::make(x))
                    .unwrap();
            }
        }};
    }
    match (mode & FUZZ_AUGMENTED != 0, mode & 3) {
        (false, 0) => fill!(u64, ExtentRecord, ()),
        (false, 1) => fill!(u64, DirentRecord, ()),
        (false, 2) => fill!((u64, u64, u64), (), ()),
        (false, _) => fill!(WideKey, u64, ()),
        (true, 0 | 2) => fill!((u64, u64, u64), u64, MaxEnd),
        (true, _) => fill!(AugKey, u64, MaxEnd),
    }
    input_from_store(mode, &root, &s)
}

/// Overwrites a few bytes of a valid input, aimed at the fields that matter.
fn mutate(rng: &mut SmallRng, data: &mut [u8]) {
    let blocks = (data.len().saturating_sub(crate::fuzz::FUZZ_PREFIX)) / BLOCK_SIZE;
    for _ in 0..rng.random_range(1..5) {
        if data.is_empty() {
            return;
        }
        let at = match rng.random_range(0..6) {
            // A header field: level (5) or count (12..16) of some block.
            0 | 1 if blocks > 0 => {
                let b = rng.random_range(0..blocks);
                crate::fuzz::FUZZ_PREFIX + b * BLOCK_SIZE + [5, 12, 13, 14][rng.random_range(0..4)]
            }
            // The root pointer.
            2 => rng.random_range(1..crate::fuzz::FUZZ_PREFIX),
            // Near the start of some block's arrays.
            3 if blocks > 0 => {
                let b = rng.random_range(0..blocks);
                crate::fuzz::FUZZ_PREFIX + b * BLOCK_SIZE + HEADER_SIZE + rng.random_range(0..512)
            }
            _ => rng.random_range(0..data.len()),
        };
        if let Some(x) = data.get_mut(at) {
            *x = match rng.random_range(0..4) {
                0 => 0,
                1 => 0xff,
                2 => *x ^ (1 << rng.random_range(0..8)),
                _ => rng.random(),
            };
        }
    }
    // Splice a child pointer into some block's child array now and then.
    if blocks > 0 && rng.random_bool(0.3) {
        let b = rng.random_range(0..blocks);
        let off = crate::fuzz::FUZZ_PREFIX
            + b * BLOCK_SIZE
            + rng.random_range(HEADER_SIZE..BLOCK_SIZE - 8);
        let v = rng.random_range(0..blocks as u64 + 2);
        if let Some(d) = data.get_mut(off..off + 8) {
            d.copy_from_slice(&v.to_le_bytes());
        }
    }
}

#[test]
fn fuzz_valid_inputs_pass_through() {
    // Unmutated inputs are whole trees: the harness must run them cleanly too.
    let mut rng = SmallRng::seed_from_u64(5);
    for mode in 0..16u8 {
        let data = valid_input(&mut rng, mode);
        fuzz_node_bytes(&data);
    }
}

#[test]
fn fuzz_does_not_panic() {
    // Longer runs: BTREE_FUZZ_ITERS=1000000 BTREE_FUZZ_SEED=7 cargo test --release fuzz_does
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let mut rng = SmallRng::seed_from_u64(env("BTREE_FUZZ_SEED", 0xf022));
    for i in 0..env("BTREE_FUZZ_ITERS", 3000) {
        let mode = (rng.random_range(0..16u8) & !FUZZ_RESEAL)
            | if rng.random_bool(0.8) { FUZZ_RESEAL } else { 0 };
        let data = match i % 4 {
            // Pure noise, a few blocks long.
            0 => {
                let len = rng.random_range(0..3 * BLOCK_SIZE);
                let mut d: Vec<u8> = (0..len).map(|_| rng.random()).collect();
                if let Some(x) = d.first_mut() {
                    *x = mode;
                }
                if let Some(x) = d.get_mut(1) {
                    *x %= 6;
                }
                if let Some(x) = d.get_mut(2..10) {
                    x.copy_from_slice(&rng.random_range(0..4u64).to_le_bytes());
                }
                d
            }
            // Noise shaped like nodes: sane headers, random arrays.
            1 => {
                let blocks = rng.random_range(1..6);
                let mut d = vec![mode, rng.random_range(0..5)];
                d.extend_from_slice(&rng.random_range(1..=blocks as u64).to_le_bytes());
                for _ in 0..blocks {
                    let mut blk = vec![0u8; BLOCK_SIZE];
                    let h = BlockHeader::fresh(
                        fuzz_kind(mode),
                        crate::fuzz::FUZZ_OWNER,
                        rng.random_range(0..4),
                    );
                    write_header(&mut blk, &h);
                    blk[12..16].copy_from_slice(&rng.random_range(0..300u32).to_le_bytes());
                    for x in blk[HEADER_SIZE..]
                        .iter_mut()
                        .take(rng.random_range(0..BLOCK_SIZE - HEADER_SIZE))
                    {
                        *x = if rng.random_bool(0.7) {
                            rng.random_range(0..4)
                        } else {
                            rng.random()
                        };
                    }
                    d.extend_from_slice(&blk);
                }
                d
            }
            // Mutated valid trees.
            _ => {
                let mut d = valid_input(&mut rng, mode);
                mutate(&mut rng, &mut d);
                if let Some(x) = d.first_mut() {
                    *x = mode;
                }
                d
            }
        };
        fuzz_node_bytes(&data);
    }
}

/// Every node of a three-level tree moved, one at a time, to a fresh block:
/// lookups still find every record, the old blocks are never read, and the
/// tree checks clean.
#[test]
fn relocate_moves_every_node() {
    let t = BTree::<u64, u64>::new(BlockKind::InodeTree, OWNER);
    let mut s = MemStore::new();
    let mut root = TreeRoot::EMPTY;
    let n = (BTree::<u64, u64>::LEAF_CAPACITY * 300) as u64;
    for i in 0..n {
        t.insert(&mut s, &mut root, i * 3, i).unwrap();
    }
    assert_eq!(t.check(&mut s, &root).unwrap().height, 3);
    let mut nodes = vec![];
    t.visit_nodes(&mut s, &root, &mut |b, _| nodes.push(b.0))
        .unwrap();
    for old in nodes {
        let crc = crate::sealed_crc(s.raw(old).unwrap());
        let blk = s.read_node(BlockNo(old), t.kind, OWNER, crc).unwrap();
        let (key, level) = t.node_key(&blk).unwrap();
        let new = s.alloc_node(t.kind, OWNER).unwrap().0;
        let new_crc = s.write_node(BlockNo(new), blk).unwrap();
        // A key of another node does not lead here: nothing changes.
        if level == 0 && old != root.block.get() {
            let other = key.map(|k| if k >= 3 * n / 2 { 0 } else { 3 * n - 3 });
            assert!(
                !t.relocate(&mut s, &mut root, old, new, new_crc, other.as_ref(), level)
                    .unwrap()
            );
        }
        assert!(
            t.relocate(&mut s, &mut root, old, new, new_crc, key.as_ref(), level)
                .unwrap()
        );
        s.free_node(BlockNo(old), t.kind, OWNER).unwrap();
    }
    t.check(&mut s, &root).unwrap();
    for i in (0..n).step_by(97) {
        assert_eq!(t.get(&mut s, &root, &(i * 3)).unwrap(), Some(i));
    }
    assert_eq!(t.len(&mut s, &root).unwrap(), n);
}

#[test]
fn insert_sorted_appends_fill_leaves() {
    // Appends past the largest key fill every leaf but the last: a log
    // written in batches is as dense as one built in one go.
    let mut f = Fixture::<u64, u64>::new(BlockKind::ErrorLog);
    let cap = Layout::<u64, u64>::LEAF_CAP as u64;
    let mut m = BTreeMap::new();
    let mut next = 0;
    for batch in [1u64, 5, 3000, 700, 20_000] {
        let items: Vec<(u64, u64)> = (next..next + batch).map(|k| (k, k * 3)).collect();
        next += batch;
        assert_eq!(f.t.insert_sorted(&mut f.s, &mut f.root, &items).unwrap(), 0);
        m.extend(items);
        f.verify(&m);
    }
    let mut leaves = 0u64;
    f.t.visit_nodes(&mut f.s, &f.root, &mut |_, level| {
        if level == 0 {
            leaves += 1;
        }
    })
    .unwrap();
    assert!(
        leaves <= next.div_ceil(cap) + 5,
        "{leaves} leaves for {next} records"
    );
}

/// Reads share the store's bytes and the tree copies a node before changing
/// it: a block handed out by `read_node` keeps its bytes whatever the tree
/// does afterwards, and a walk that changes nothing writes nothing.
#[test]
fn reads_share_and_changes_copy() {
    let t = BTree::<u64, u64>::new(BlockKind::InodeTree, OWNER);
    let mut s = MemStore::new();
    let mut root = TreeRoot::EMPTY;
    for i in 0..2000u64 {
        t.insert(&mut s, &mut root, i * 2, i).unwrap();
    }
    let held: Vec<(u64, crate::NodeBuf)> = s
        .live_blocks()
        .into_iter()
        .map(|b| {
            let buf = s
                .read_node(
                    BlockNo(b),
                    BlockKind::InodeTree,
                    OWNER,
                    crate::sealed_crc(s.raw(b).unwrap()),
                )
                .unwrap();
            (b, buf)
        })
        .collect();
    let before: Vec<Vec<u8>> = held.iter().map(|(_, b)| b.to_vec()).collect();
    // Read-only walks: no writes, and the store's blocks are the ones held.
    let writes = s.writes;
    for i in 0..2000u64 {
        assert_eq!(t.get(&mut s, &root, &(i * 2)).unwrap(), Some(i));
    }
    assert_eq!(s.writes, writes);
    for (b, buf) in &held {
        assert!(std::ptr::eq(s.raw(*b).unwrap(), &**buf), "block {b} copied");
    }
    // Changes everywhere (inserts that split, removals that merge): what
    // was handed out before is untouched.
    for i in 0..2000u64 {
        t.insert(&mut s, &mut root, i * 2 + 1, i).unwrap();
        if i % 3 == 0 {
            t.remove(&mut s, &mut root, &(i * 2)).unwrap();
        }
    }
    for ((b, buf), old) in held.iter().zip(&before) {
        assert_eq!(&buf[..], &old[..], "block {b} changed under a reader");
    }
    t.check(&mut s, &root).unwrap();
}
