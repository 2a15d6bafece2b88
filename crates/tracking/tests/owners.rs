//! Every strategy against the truth on small versions of every workload.
//!
//! Two independent truths are used: the model file system's own reverse map
//! (checked against a scan of every file's extent map), and an oracle rebuilt
//! from the event stream alone, which lets the strategies be checked at many
//! points in the middle of a run, not only at the end.

use std::collections::{BTreeSet, HashMap};

use daxfs_tracking::strategies::{PerExtentSpace, PerPageSingle, PerPageTree, ShadowPages};
use daxfs_tracking::workloads::{self, Workload};
use daxfs_tracking::{
    Event, FileId, FsQuery, MappingId, ModelFs, OwnerIndex, Owners, PageOwner, Phys, Strategy,
    Tally, TrackedFs,
};

/// Page and mapping owners derived from events only.
#[derive(Default)]
struct EventOracle {
    pages: HashMap<u64, BTreeSet<PageOwner>>,
    maps: HashMap<MappingId, (FileId, u64, u64)>,
}

impl EventOracle {
    fn apply(&mut self, e: &Event) {
        let mut add = |p: u64, o: PageOwner| assert!(self.pages.entry(p).or_default().insert(o));
        match *e {
            Event::Map {
                file,
                index,
                phys,
                len,
            }
            | Event::Share {
                file,
                index,
                phys,
                len,
                ..
            } => {
                for k in 0..len {
                    add(
                        phys.0 + k,
                        PageOwner {
                            file,
                            index: index + k,
                        },
                    );
                }
            }
            Event::Unmap {
                file,
                index,
                phys,
                len,
            } => {
                for k in 0..len {
                    assert!(
                        self.pages
                            .entry(phys.0 + k)
                            .or_default()
                            .remove(&PageOwner {
                                file,
                                index: index + k
                            })
                    );
                }
            }
            Event::Cow {
                file,
                index,
                old,
                new,
                len,
            } => {
                for k in 0..len {
                    let o = PageOwner {
                        file,
                        index: index + k,
                    };
                    assert!(self.pages.entry(old.0 + k).or_default().remove(&o));
                    assert!(self.pages.entry(new.0 + k).or_default().insert(o));
                }
            }
            Event::MmapFile {
                mapping,
                file,
                index,
                len,
            } => {
                self.maps.insert(mapping, (file, index, len));
            }
            Event::MunmapFile { mapping, .. } => {
                self.maps.remove(&mapping);
            }
        }
    }
}

impl FsQuery for EventOracle {
    fn owners_of(&self, phys: Phys, out: &mut Vec<PageOwner>) {
        if let Some(s) = self.pages.get(&phys.0) {
            out.extend(s.iter().copied());
        }
    }

    fn mappings_of(&self, file: FileId, index: u64, out: &mut Vec<MappingId>) {
        for (&m, &(f, i, l)) in &self.maps {
            if f == file && i <= index && index < i + l {
                out.push(m);
            }
        }
    }
}

fn truth(fs: &dyn FsQuery, p: u64) -> Owners {
    let mut v = Vec::new();
    fs.owners_of(Phys(p), &mut v);
    Owners::resolve(v, fs)
}

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
            let device = fs.device_pages();
            let checkpoints: Vec<usize> = (1..=8).map(|k| events.len() * k / 8).collect();
            for s in Strategy::ALL.into_iter().filter(|s| s.number() != 1) {
                let mut idx = s.build(device);
                let mut oracle = EventOracle::default();
                let mut done = 0;
                let mut checked_shared = 0;
                for &cp in &checkpoints {
                    for e in &events[done..cp] {
                        idx.on_event(e);
                        oracle.apply(e);
                    }
                    done = cp;
                    for p in 0..device + 8 {
                        let want = truth(&oracle, p);
                        checked_shared += usize::from(want.pages.len() > 1);
                        assert_eq!(
                            idx.owners(Phys(p), &oracle),
                            want,
                            "{} {} seed {seed}: page {p} after {cp} events",
                            w.name(),
                            s.name()
                        );
                    }
                }
                assert!(checked_shared > 0);
                // And at the end against the model's own reverse map.
                for p in 0..device + 8 {
                    assert_eq!(
                        idx.owners(Phys(p), &fs),
                        truth(&fs, p),
                        "{} {}: page {p} at end",
                        w.name(),
                        s.name()
                    );
                }
            }
        }
    }
}

/// What pre-6.0 Linux would have recorded for each page, derived from the
/// events: the last `(file, index)` associated with it, unless any owner has
/// let go of it since.
fn last_claimant(events: &[Event]) -> HashMap<u64, PageOwner> {
    let mut m = HashMap::new();
    for e in events {
        match *e {
            Event::Map {
                file,
                index,
                phys,
                len,
            }
            | Event::Share {
                file,
                index,
                phys,
                len,
                ..
            } => {
                for k in 0..len {
                    m.insert(
                        phys.0 + k,
                        PageOwner {
                            file,
                            index: index + k,
                        },
                    );
                }
            }
            Event::Unmap { phys, len, .. } => {
                for k in 0..len {
                    m.remove(&(phys.0 + k));
                }
            }
            Event::Cow {
                file,
                index,
                old,
                new,
                len,
            } => {
                for k in 0..len {
                    m.remove(&(old.0 + k));
                    m.insert(
                        new.0 + k,
                        PageOwner {
                            file,
                            index: index + k,
                        },
                    );
                }
            }
            Event::MmapFile { .. } | Event::MunmapFile { .. } => {}
        }
    }
    m
}

#[test]
fn strategy_1_finds_the_last_claimant_and_misses_the_others() {
    for seed in SEEDS {
        for w in workloads::small(seed) {
            let (fs, events) = run(w.as_ref());
            let mut idx = PerPageSingle::new(fs.device_pages());
            for e in &events {
                idx.on_event(e);
            }
            let expected = last_claimant(&events);
            let (mut total, mut missed_shared) = (Tally::default(), 0);
            for p in 0..fs.device_pages() + 8 {
                let t = truth(&fs, p);
                let got = idx.owners(Phys(p), &fs);
                let want_found: Vec<PageOwner> = expected.get(&p).copied().into_iter().collect();
                let want_missed: Vec<PageOwner> = t
                    .pages
                    .iter()
                    .copied()
                    .filter(|o| !want_found.contains(o))
                    .collect();
                // Found: exactly the recorded owner, which always is a true owner.
                assert_eq!(got.pages, want_found, "{}: page {p}", w.name());
                assert!(
                    want_found.iter().all(|o| t.pages.contains(o)),
                    "{}: page {p} records a non-owner",
                    w.name()
                );
                // Missed: exactly the other true owners.
                let tally = Tally::of(&got.pages, &t.pages);
                assert_eq!(tally.missed as usize, want_missed.len());
                assert_eq!(tally.spurious, 0);
                // Mappings: those of the recorded owner, no more, no less.
                assert_eq!(
                    got,
                    Owners::resolve(want_found.clone(), &fs),
                    "{}: page {p}",
                    w.name()
                );
                if t.pages.len() > 1 {
                    missed_shared += want_missed.len();
                }
                total.add(tally);
            }
            assert!(missed_shared > 0, "{}: strategy 1 lost nothing", w.name());
            assert!(total.found > 0, "{}: strategy 1 found nothing", w.name());
            assert!(
                idx.overwrites() > 0,
                "{}: no association ever overwrote another",
                w.name()
            );
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
