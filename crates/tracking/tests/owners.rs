//! Every strategy against the truth on small versions of every workload, on
//! the in-memory model (`tests/daxfs.rs` does the same with daxfs driving).
//!
//! Two independent truths are used: the model file system's own reverse map
//! (checked against a scan of every file's extent map), and an oracle rebuilt
//! from the event stream alone, which lets the strategies be checked at many
//! points in the middle of a run, not only at the end.

mod common;

use common::{EventOracle, check_strategies_2_to_7, check_strategy_1, truth};
use daxfs_tracking::strategies::{PerExtentSpace, PerPageSingle, PerPageTree, ShadowPages};
use daxfs_tracking::workloads::{self, Workload};
use daxfs_tracking::{Event, FsQuery, ModelFs, OwnerIndex, PageOwner, Phys, Strategy, TrackedFs};

fn run(w: &dyn Workload) -> (ModelFs, Vec<Event>) {
    let mut fs = ModelFs::new();
    w.run(&mut fs).unwrap();
    let events = fs.take_events();
    (fs, events)
}

const SEEDS: [u64; 2] = [1, 7];

#[test]
fn model_reverse_map_matches_extent_scan_and_event_stream() {
    for seed in SEEDS {
        for w in workloads::small(seed) {
            let (fs, events) = run(w.as_ref());
            let scan = fs.owners_by_scan();
            let mut oracle = EventOracle::default();
            for e in &events {
                oracle.apply(e);
            }
            let (mut shared, mut free) = (0, 0);
            for p in 0..fs.device_pages() + 8 {
                let mut got = Vec::new();
                fs.owners_of(Phys(p), &mut got);
                got.sort();
                let want = scan.get(p as usize).cloned().unwrap_or_default();
                assert_eq!(got, want, "{}: rmap vs scan at page {p}", w.name());
                assert_eq!(
                    truth(&fs, p),
                    truth(&oracle, p),
                    "{}: model vs events at page {p}",
                    w.name()
                );
                shared += usize::from(want.len() > 1);
                free += usize::from(want.is_empty());
            }
            assert!(shared > 0, "{}: no shared pages", w.name());
            assert!(free > 0, "{}: no free pages", w.name());
        }
    }
}

#[test]
fn strategies_2_to_7_find_exactly_the_true_owners_throughout() {
    for seed in SEEDS {
        for w in workloads::small(seed) {
            let (fs, events) = run(w.as_ref());
            check_strategies_2_to_7(&fs, fs.device_pages(), &events, w.name(), seed);
        }
    }
}

#[test]
fn strategy_1_finds_the_last_claimant_and_misses_the_others() {
    for seed in SEEDS {
        for w in workloads::small(seed) {
            let (fs, events) = run(w.as_ref());
            check_strategy_1(&fs, fs.device_pages(), &events, w.name(), seed);
        }
    }
}

/// A scenario small enough to state its answers literally.
#[test]
fn strategy_1_on_a_hand_made_scenario() {
    let mut fs = ModelFs::new();
    let a = fs.create().unwrap();
    fs.write(a, 0, 4).unwrap(); // A: pages 0..4 -> phys 0..4
    let b = fs.clone_file(a).unwrap();
    let c = fs.clone_file(a).unwrap();
    let ma = fs.mmap(a, 0, 4).unwrap();
    let mc = fs.mmap(c, 0, 4).unwrap();
    fs.write(b, 1, 1).unwrap(); // B copies page 1 to phys 4
    let events = fs.take_events();
    assert_eq!(
        events[5],
        Event::Cow {
            file: b,
            index: 1,
            old: Phys(1),
            new: Phys(4),
            len: 1
        }
    );

    let mut single = PerPageSingle::new(fs.device_pages());
    for e in &events {
        single.on_event(e);
    }
    let po = |f, i| PageOwner { file: f, index: i };
    let mo = |m, f, i| daxfs_tracking::MappedOwner {
        mapping: m,
        file: f,
        index: i,
    };

    // Phys 0: owned by A, B and C; C claimed it last, nobody let go.
    let t0 = truth(&fs, 0);
    assert_eq!(t0.pages, vec![po(a, 0), po(b, 0), po(c, 0)]);
    assert_eq!(t0.mappings, vec![mo(ma, a, 0), mo(mc, c, 0)]);
    let got = single.owners(Phys(0), &fs);
    assert_eq!(got.pages, vec![po(c, 0)]);
    assert_eq!(got.mappings, vec![mo(mc, c, 0)]);

    // Phys 1: owned by A and C; B's copy-on-write cleared the record.
    let t1 = truth(&fs, 1);
    assert_eq!(t1.pages, vec![po(a, 1), po(c, 1)]);
    assert!(single.owners(Phys(1), &fs).is_empty());

    // Phys 4: B's private copy, recorded exactly; B is not mapped.
    assert_eq!(single.owners(Phys(4), &fs), truth(&fs, 4));
    assert_eq!(single.owners(Phys(4), &fs).pages, vec![po(b, 1)]);

    // Every other strategy gets all of them.
    for s in Strategy::ALL.into_iter().skip(1) {
        let mut idx = s.build(fs.device_pages());
        for e in &events {
            idx.on_event(e);
        }
        for p in 0..6 {
            assert_eq!(
                idx.owners(Phys(p), &fs),
                truth(&fs, p),
                "{} page {p}",
                s.name()
            );
        }
    }
}

#[test]
fn memory_is_counted_and_released() {
    let (fs, events) = run(&workloads::VmFarm::small(3));
    for s in Strategy::ALL {
        let mut idx: Box<dyn OwnerIndex> = s.build(fs.device_pages());
        let empty = idx.memory_bytes();
        for e in &events {
            idx.on_event(e);
        }
        let full = idx.memory_bytes();
        match s.number() {
            7 => assert_eq!(full, 0),
            1 | 2 | 6 => assert_eq!(full, empty, "{}: dense state only", s.name()),
            _ => assert!(full > empty, "{}: sharing costs nothing?", s.name()),
        }
    }
}

#[test]
fn per_owner_structures_hold_one_entry_per_owner_of_a_shared_page() {
    for w in workloads::small(5) {
        let (fs, events) = run(w.as_ref());
        let device = fs.device_pages();
        let (mut tree, mut shadow, mut spaces) = (
            PerPageTree::new(device),
            ShadowPages::new(device),
            PerExtentSpace::new(),
        );
        for e in &events {
            tree.on_event(e);
            shadow.on_event(e);
            spaces.on_event(e);
        }
        let shared_pairs: usize = fs
            .page_refs()
            .iter()
            .filter(|&&r| r > 1)
            .map(|&r| r as usize)
            .sum();
        assert_eq!(tree.nodes(), shared_pairs, "{}", w.name());
        assert_eq!(shadow.shadows(), shared_pairs, "{}", w.name());
        let owned = fs.page_refs().iter().filter(|&&r| r > 0).count();
        assert!(
            spaces.spaces() <= owned && spaces.spaces() > 0,
            "{}",
            w.name()
        );
    }
}
