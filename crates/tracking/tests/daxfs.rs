//! Every strategy against the truth, with daxfs driving: the small versions
//! of every workload run on a real daxfs file system, the strategies see the
//! mapping events daxfs committed, and the truth is daxfs's reverse map.
//!
//! The reverse map itself is checked against two independent sources: the
//! files' extent maps (fiemap) and the owners rebuilt from daxfs's events.
//! The sharing it describes is checked against the in-memory model running
//! the same workload: page for page, the same groups of `(file, index)`
//! share a physical page, whatever the physical placement.

mod common;

use std::collections::HashMap;

use common::{EventOracle, check_strategies_2_to_7, check_strategy_1, truth};
use daxfs_tracking::strategies::{PerExtentSpace, PerPageSingle, PerPageTree, ShadowPages};
use daxfs_tracking::tracked::RmapStats;
use daxfs_tracking::workloads::{self, Workload};
use daxfs_tracking::{
    BenchOptions, DaxfsTracked, Event, FileId, FsQuery, FsResult, MappingId, ModelFs, OwnerIndex,
    PageOwner, Phys, Strategy, TrackedFs, run_bench_on_daxfs,
};

const SEEDS: [u64; 2] = [1, 7];

/// Device for the small workloads.
const DEVICE: u64 = 64 << 20;

fn run(w: &dyn Workload) -> (DaxfsTracked, Vec<Event>) {
    let mut fs = DaxfsTracked::new(DEVICE).unwrap();
    w.run(&mut fs).unwrap();
    let events = fs.take_events();
    (fs, events)
}

/// Forwards to a file system and remembers the files in creation order, so
/// that two file systems running the same workload can be compared.
struct Numbered<T> {
    fs: T,
    order: HashMap<FileId, usize>,
}

impl<T: TrackedFs> Numbered<T> {
    fn new(fs: T) -> Self {
        Numbered {
            fs,
            order: HashMap::new(),
        }
    }

    fn number(&mut self, f: FileId) -> FileId {
        let n = self.order.len();
        self.order.insert(f, n);
        f
    }

    /// For every owned page, its owners as (creation number, index), sorted;
    /// the pages in sorted order. Physical placement drops out.
    fn sharing(&self) -> Vec<Vec<(usize, u64)>> {
        let mut out = Vec::new();
        let mut v = Vec::new();
        for p in 0..self.fs.device_pages() {
            v.clear();
            self.fs.owners_of(Phys(p), &mut v);
            if v.is_empty() {
                continue;
            }
            let mut g: Vec<(usize, u64)> =
                v.iter().map(|o| (self.order[&o.file], o.index)).collect();
            g.sort_unstable();
            out.push(g);
        }
        out.sort_unstable();
        out
    }
}

impl<T: TrackedFs> FsQuery for Numbered<T> {
    fn owners_of(&self, phys: Phys, out: &mut Vec<PageOwner>) {
        self.fs.owners_of(phys, out)
    }
    fn mappings_of(&self, file: FileId, index: u64, out: &mut Vec<MappingId>) {
        self.fs.mappings_of(file, index, out)
    }
}

impl<T: TrackedFs> TrackedFs for Numbered<T> {
    fn create(&mut self) -> FsResult<FileId> {
        let f = self.fs.create()?;
        Ok(self.number(f))
    }
    fn write(&mut self, file: FileId, index: u64, len: u64) -> FsResult<()> {
        self.fs.write(file, index, len)
    }
    fn clone_range(&mut self, s: FileId, si: u64, d: FileId, di: u64, n: u64) -> FsResult<()> {
        self.fs.clone_range(s, si, d, di, n)
    }
    fn dedupe_range(&mut self, s: FileId, si: u64, d: FileId, di: u64, n: u64) -> FsResult<()> {
        self.fs.dedupe_range(s, si, d, di, n)
    }
    fn punch(&mut self, file: FileId, index: u64, len: u64) -> FsResult<()> {
        self.fs.punch(file, index, len)
    }
    fn delete(&mut self, file: FileId) -> FsResult<()> {
        self.fs.delete(file)
    }
    fn mmap(&mut self, file: FileId, index: u64, len: u64) -> FsResult<MappingId> {
        self.fs.mmap(file, index, len)
    }
    fn munmap(&mut self, m: MappingId) -> FsResult<()> {
        self.fs.munmap(m)
    }
    fn size(&self, file: FileId) -> FsResult<u64> {
        self.fs.size(file)
    }
    fn device_pages(&self) -> u64 {
        self.fs.device_pages()
    }
    fn take_events(&mut self) -> Vec<Event> {
        self.fs.take_events()
    }
    fn reverse_map_stats(&self) -> Option<RmapStats> {
        self.fs.reverse_map_stats()
    }
    fn clone_file(&mut self, src: FileId) -> FsResult<FileId> {
        let f = self.fs.clone_file(src)?;
        Ok(self.number(f))
    }
}

#[test]
fn daxfs_reverse_map_matches_fiemap_events_and_model() {
    for seed in SEEDS {
        for w in workloads::small(seed) {
            let name = w.name();
            let mut fs = Numbered::new(DaxfsTracked::new(DEVICE).unwrap());
            w.run(&mut fs).unwrap();
            let events = fs.take_events();
            let mut oracle = EventOracle::default();
            for e in &events {
                oracle.apply(e);
            }
            let scan = fs.fs.owners_by_fiemap().unwrap();
            let device = fs.device_pages();
            let (mut shared, mut free) = (0, 0);
            let mut range = Vec::new();
            fs.owners_in(Phys(0), device + 8, &mut range);
            range.sort_unstable();
            let mut by_range: Vec<Vec<PageOwner>> = vec![Vec::new(); (device + 8) as usize];
            for (p, o) in range {
                by_range[p.0 as usize].push(o);
            }
            for p in 0..device + 8 {
                let mut got = Vec::new();
                fs.owners_of(Phys(p), &mut got);
                got.sort_unstable();
                let want = scan.get(p as usize).cloned().unwrap_or_default();
                assert_eq!(got, want, "{name} seed {seed}: rmap vs fiemap at page {p}");
                assert_eq!(
                    by_range[p as usize], got,
                    "{name} seed {seed}: range query vs one-page query at page {p}"
                );
                assert_eq!(
                    truth(&fs, p),
                    truth(&oracle, p),
                    "{name} seed {seed}: rmap vs events at page {p}"
                );
                shared += usize::from(want.len() > 1);
                free += usize::from(want.is_empty());
            }
            assert!(shared > 0, "{name}: no shared pages");
            assert!(free > 0, "{name}: no free pages");

            let mut model = Numbered::new(ModelFs::new());
            w.run(&mut model).unwrap();
            assert_eq!(fs.order.len(), model.order.len(), "{name}: files created");
            assert!(
                fs.sharing() == model.sharing(),
                "{name} seed {seed}: daxfs and the model share pages differently"
            );
        }
    }
}

#[test]
fn daxfs_strategies_2_to_7_find_exactly_the_true_owners_throughout() {
    for seed in SEEDS {
        for w in workloads::small(seed) {
            let (fs, events) = run(w.as_ref());
            check_strategies_2_to_7(&fs, fs.device_pages(), &events, w.name(), seed);
        }
    }
}

#[test]
fn daxfs_strategy_1_finds_the_last_claimant_and_misses_the_others() {
    for seed in SEEDS {
        for w in workloads::small(seed) {
            let (fs, events) = run(w.as_ref());
            check_strategy_1(&fs, fs.device_pages(), &events, w.name(), seed);
        }
    }
}

/// The model's hand-made scenario on daxfs, where the physical pages are
/// whatever daxfs allocated: read from its events.
#[test]
fn daxfs_strategy_1_on_a_hand_made_scenario() {
    let mut fs = DaxfsTracked::new(DEVICE).unwrap();
    let a = fs.create().unwrap();
    fs.write(a, 0, 4).unwrap();
    let b = fs.clone_file(a).unwrap();
    let c = fs.clone_file(a).unwrap();
    let ma = fs.mmap(a, 0, 4).unwrap();
    let mc = fs.mmap(c, 0, 4).unwrap();
    fs.write(b, 1, 1).unwrap(); // B copies page 1 on write
    let events = fs.take_events();
    let Event::Map {
        file,
        index: 0,
        phys: Phys(base),
        len: 4,
    } = events[0]
    else {
        panic!("A's 4 pages are one fresh extent: {:?}", events[0]);
    };
    assert_eq!(file, a);
    let cow = events
        .iter()
        .find_map(|e| match *e {
            Event::Cow {
                file,
                index: 1,
                old,
                new,
                len: 1,
            } if file == b && old == Phys(base + 1) => Some(new),
            _ => None,
        })
        .expect("B's write is a copy-on-write of page 1");

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

    // Page 0 of the image: A, B and C own it; C claimed it last.
    let t0 = truth(&fs, base);
    assert_eq!(t0.pages, vec![po(a, 0), po(b, 0), po(c, 0)]);
    assert_eq!(t0.mappings, vec![mo(ma, a, 0), mo(mc, c, 0)]);
    let got = single.owners(Phys(base), &fs);
    assert_eq!(got.pages, vec![po(c, 0)]);
    assert_eq!(got.mappings, vec![mo(mc, c, 0)]);

    // Page 1: A and C; B's copy-on-write cleared the record.
    assert_eq!(truth(&fs, base + 1).pages, vec![po(a, 1), po(c, 1)]);
    assert!(single.owners(Phys(base + 1), &fs).is_empty());

    // B's private copy, recorded exactly; B is not mapped.
    assert_eq!(single.owners(cow, &fs).pages, vec![po(b, 1)]);
    assert_eq!(single.owners(cow, &fs), truth(&fs, cow.0));

    for s in Strategy::ALL.into_iter().skip(1) {
        let mut idx = s.build(fs.device_pages());
        for e in &events {
            idx.on_event(e);
        }
        for p in [base, base + 1, base + 2, base + 3, cow.0] {
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
fn daxfs_per_owner_structures_hold_one_entry_per_owner_of_a_shared_page() {
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
        let (mut shared_pairs, mut owned) = (0, 0);
        let mut v = Vec::new();
        for p in 0..device {
            v.clear();
            fs.owners_of(Phys(p), &mut v);
            if v.len() > 1 {
                shared_pairs += v.len();
            }
            owned += usize::from(!v.is_empty());
        }
        assert_eq!(tree.nodes(), shared_pairs, "{}", w.name());
        assert_eq!(shadow.shadows(), shared_pairs, "{}", w.name());
        assert!(
            spaces.spaces() <= owned && spaces.spaces() > 0,
            "{}",
            w.name()
        );
    }
}

/// The benchmark itself, driven by daxfs: every strategy but the first is
/// exact on every workload, the first is not, the one-page queries agree
/// with the range census, and the model shares pages the same way.
#[test]
fn daxfs_small_bench_is_exact_for_all_but_strategy_1() {
    let report = run_bench_on_daxfs(&BenchOptions {
        small: true,
        lookup_samples: 20,
        ..BenchOptions::default()
    })
    .unwrap();
    assert_eq!(report.fs, "daxfs");
    assert_eq!(report.workloads.len(), 4);
    for w in &report.workloads {
        assert_eq!(w.results.len(), 7);
        assert!(w.events > 0 && w.shared_pages > 0 && w.mapped_pages > w.shared_pages);
        assert!(w.spot_checked > 0);
        assert_eq!(w.spot_mismatched, 0, "{}", w.name);
        let m = w.model.as_ref().expect("cross-checked against the model");
        assert!(m.same_census, "{}: census differs from the model", w.name);
        let rmap = w.rmap.expect("daxfs counts its reverse map");
        assert!(rmap.records > 0 && rmap.bytes > 0);
        for r in &w.results {
            let exact = r.pages.exact() && r.mappings.exact();
            assert_eq!(
                exact,
                r.strategy != Strategy::PerPageSingle,
                "{} {}",
                w.name,
                r.strategy.name()
            );
            assert!(r.pages.truth > 0 && r.pages.found > 0);
        }
    }
    assert!(report.to_markdown().contains("the workloads ran on daxfs"));
    assert!(report.conclusion().contains("strategies 2, 3, 4, 5, 6, 7"));
}
