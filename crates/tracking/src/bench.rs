//! The benchmark: every strategy on every workload.
//!
//! For each workload, [`run_bench_with`] runs the driver on a fresh file
//! system (daxfs for `daxfs bench tracking`, the in-memory model for
//! [`run_bench`]), records its event stream, and takes a census of the end
//! state from the file system's reverse map. Then for each strategy it
//! replays the stream (timing it and sampling memory), times failure lookups
//! on samples of shared, exclusive and free pages, and checks the owners it
//! finds on every page against the census.
//!
//! ```no_run
//! use daxfs_tracking::{BenchOptions, run_bench, write_outputs};
//! let report = run_bench(&BenchOptions { scale: 1.0 / 64.0, ..BenchOptions::default() });
//! let files = write_outputs(&report, std::path::Path::new("docs")).unwrap();
//! println!("{}", files.message());
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Instant;

use crate::event::{EventKind, FileId, MappingId, Phys};
use crate::index::{FsQuery, Owners, PageOwner, Tally};
use crate::model::ModelFs;
use crate::rng::Rng;
use crate::strategies::Strategy;
use crate::tracked::{FsResult, TrackedFs};
use crate::workloads::{self, Workload};

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Size factor applied to the workloads' pages and files (1.0 = full
    /// size: 1,000 clones of an 8 GiB image, which per-page designs cannot
    /// hold in memory). Fan-outs are never scaled.
    pub scale: f64,
    /// Seed of every random choice.
    pub seed: u64,
    /// Strategies to measure.
    pub strategies: Vec<Strategy>,
    /// Workload names to run (`vm-farm`, `container-layers`, `dedup-store`,
    /// `db-snapshots`); empty means all.
    pub workloads: Vec<String>,
    /// Pages timed per class (shared, exclusive) for the failure lookup.
    pub lookup_samples: usize,
    /// Pages checked for accuracy; 0 checks every page of the device.
    pub check_pages: usize,
    /// Runs the small test versions of the workloads instead of `scale`.
    pub small: bool,
    /// Also runs each workload on the in-memory model and compares the two
    /// censuses (how many pages have how many owners). [`run_bench`], which
    /// runs on the model, skips it.
    pub cross_check: bool,
    /// Prints what it is doing to standard error.
    pub progress: bool,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            scale: DEFAULT_SCALE,
            seed: 1,
            strategies: Strategy::ALL.to_vec(),
            workloads: Vec::new(),
            lookup_samples: 200,
            check_pages: 0,
            small: false,
            cross_check: true,
            progress: false,
        }
    }
}

/// The scale `daxfs bench tracking` uses unless told otherwise: 1/128, which
/// runs all 28 combinations on daxfs in a few minutes and a few GiB on two
/// cores.
pub const DEFAULT_SCALE: f64 = 1.0 / 128.0;

/// Parses a scale given as a fraction (`1/64`) or a decimal (`0.015625`).
pub fn parse_scale(s: &str) -> Result<f64, String> {
    let v = match s.split_once('/') {
        Some((a, b)) => {
            let a: f64 = a
                .trim()
                .parse()
                .map_err(|_| format!("bad scale numerator in {s:?}"))?;
            let b: f64 = b
                .trim()
                .parse()
                .map_err(|_| format!("bad scale denominator in {s:?}"))?;
            a / b
        }
        None => s.trim().parse().map_err(|_| format!("bad scale {s:?}"))?,
    };
    if v.is_finite() && v > 0.0 && v <= 1.0 {
        Ok(v)
    } else {
        Err(format!("scale {s:?} is not in (0, 1]"))
    }
}

/// Most replays of one strategy on one workload.
const REPLAYS: u32 = 5;
/// Replaying stops repeating once this much time went into it.
const REPLAY_BUDGET_NS: u64 = 1_500_000_000;
/// Most timed passes over one class of lookup samples.
const LOOKUP_PASSES: u32 = 3;
/// Timed lookup passes stop repeating once this much time went into them.
const LOOKUP_BUDGET_NS: f64 = 4e9;

/// Events replayed between two memory samples.
const CHUNK: usize = 1 << 16;

/// Pages per range query of the census.
const CENSUS_CHUNK: u64 = 256;

/// The measurements of one strategy on one workload.
#[derive(Clone, Debug)]
pub struct StrategyResult {
    /// Which strategy.
    pub strategy: Strategy,
    /// Wall time of replaying every event, in nanoseconds (fastest run).
    pub replay_ns: u64,
    /// `replay_ns / events`.
    pub ns_per_event: f64,
    /// `replay_ns / pages touched`: the cost per page gaining or losing an
    /// owner.
    pub ns_per_page: f64,
    /// Replays run (the fastest is reported).
    pub replays: u32,
    /// Bytes held after the last event.
    pub bytes_final: usize,
    /// Most bytes held at any sample (every 65,536 events and at the end).
    pub bytes_peak: usize,
    /// Mean time of one lookup on a shared page, ns (0 if none).
    pub lookup_shared_ns: f64,
    /// Mean time of one lookup on an exclusively owned page, ns.
    pub lookup_exclusive_ns: f64,
    /// Mean time of one lookup on a free page, ns.
    pub lookup_free_ns: f64,
    /// Slowest single lookup over all timed passes, ns.
    pub lookup_max_ns: f64,
    /// Page owners found against the truth, over the pages checked.
    pub pages: Tally,
    /// Mapping owners found against the truth, over the pages checked.
    pub mappings: Tally,
    /// Pages checked for accuracy.
    pub pages_checked: u64,
}

/// The same workload on the in-memory model, for comparison.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelCheck {
    /// Whether both file systems ended with the same number of pages having
    /// each number of owners (1, 2, ...): the same sharing, whatever the
    /// physical placement.
    pub same_census: bool,
    /// The model's events.
    pub events: u64,
    /// The model's device pages (it has no metadata).
    pub device_pages: u64,
}

/// One workload: its event stream, its page census and every strategy's
/// result.
#[derive(Clone, Debug)]
pub struct WorkloadReport {
    /// Workload name.
    pub name: String,
    /// What it models.
    pub what: String,
    /// Its parameters in this run.
    pub params: String,
    /// Events by kind, in [`EventKind::ALL`] order.
    pub events_by_kind: Vec<(EventKind, u64)>,
    /// All events.
    pub events: u64,
    /// Physical pages whose ownership the events changed, counted per event.
    pub pages_touched: u64,
    /// Wall time of running the workload on the file system, ms.
    pub fs_ms: f64,
    /// The same on the file system without its reverse map, when measured.
    pub fs_ms_without_rmap: Option<f64>,
    /// Wall time of the census of every page through the reverse map, ms.
    pub census_ms: f64,
    /// Device pages (the per-page arrays' size).
    pub device_pages: u64,
    /// Pages with at least one owner at the end.
    pub mapped_pages: u64,
    /// Pages with at least two owners at the end.
    pub shared_pages: u64,
    /// Page owners over all pages at the end.
    pub owner_pairs: u64,
    /// Most owners of one page.
    pub max_owners: u64,
    /// The file system's reverse map at the end, when it says.
    pub rmap: Option<crate::tracked::RmapStats>,
    /// Pages whose owners were asked one page at a time (the lookup samples)
    /// and compared with the census, which asks whole ranges.
    pub spot_checked: u64,
    /// Of those, pages where the two answers differed.
    pub spot_mismatched: u64,
    /// The comparison with the in-memory model, when run.
    pub model: Option<ModelCheck>,
    /// One entry per strategy.
    pub results: Vec<StrategyResult>,
}

impl WorkloadReport {
    /// What keeping the reverse map cost per event: the run time with it
    /// minus the run time without it, over the events, in ns.
    pub fn rmap_ns_per_event(&self) -> Option<f64> {
        self.fs_ms_without_rmap
            .map(|b| ((self.fs_ms - b) * 1e6 / self.events.max(1) as f64).max(0.0))
    }

    /// Bytes of the reverse map per mapped page, when known.
    pub fn rmap_bytes_per_page(&self) -> Option<f64> {
        self.rmap
            .map(|r| r.bytes as f64 / self.mapped_pages.max(1) as f64)
    }
}

/// Everything [`run_bench`] measured.
#[derive(Clone, Debug)]
pub struct Report {
    /// The file system the workloads ran on ([`TrackedFs::label`]).
    pub fs: String,
    /// The scale the workloads ran at.
    pub scale: f64,
    /// Pages timed per class for the failure lookup.
    pub lookup_samples: usize,
    /// Whether the small test versions ran.
    pub small: bool,
    /// The seed.
    pub seed: u64,
    /// Whether this was an optimised build.
    pub optimized: bool,
    /// One entry per workload.
    pub workloads: Vec<WorkloadReport>,
}

/// Runs the benchmark on the in-memory model file system (no cross-check:
/// the model is what it would be checked against).
pub fn run_bench(opts: &BenchOptions) -> Report {
    let opts = BenchOptions {
        cross_check: false,
        ..opts.clone()
    };
    run_bench_with(&opts, &mut || {
        Ok(Box::new(ModelFs::new()) as Box<dyn TrackedFs>)
    })
    .expect("the model file system does not fail")
}

/// Makes a fresh file system for one workload.
pub type MakeFs<'a> = &'a mut dyn FnMut() -> FsResult<Box<dyn TrackedFs>>;

/// Runs the benchmark on file systems made by `make_fs`, one per workload:
/// the plug-in point for daxfs ([`crate::DaxfsTracked`]).
pub fn run_bench_with(opts: &BenchOptions, make_fs: MakeFs<'_>) -> FsResult<Report> {
    run_bench_with_baseline(opts, make_fs, None)
}

/// [`run_bench_with`], also timing each workload on a file system made by
/// `baseline`: the same one without its reverse map, to measure what keeping
/// that map costs (strategy 7 relies on it).
pub fn run_bench_with_baseline(
    opts: &BenchOptions,
    make_fs: MakeFs<'_>,
    mut baseline: Option<MakeFs<'_>>,
) -> FsResult<Report> {
    let all = if opts.small {
        workloads::small(opts.seed)
    } else {
        workloads::scaled(opts.scale, opts.seed)
    };
    let mut report = Report {
        fs: String::new(),
        scale: opts.scale,
        lookup_samples: opts.lookup_samples,
        small: opts.small,
        seed: opts.seed,
        optimized: !cfg!(debug_assertions),
        workloads: Vec::new(),
    };
    for w in all {
        if !opts.workloads.is_empty() && !opts.workloads.iter().any(|n| n == w.name()) {
            continue;
        }
        let base_ms = match baseline.as_mut() {
            Some(make) => {
                let mut b = make()?;
                let t = Instant::now();
                w.run(b.as_mut())?;
                let ms = t.elapsed().as_secs_f64() * 1e3;
                if opts.progress {
                    eprintln!(
                        "{}: ran without the reverse map in {:.1} s",
                        w.name(),
                        ms / 1e3
                    );
                }
                Some(ms)
            }
            None => None,
        };
        let mut fs = make_fs()?;
        report.fs = fs.label();
        let mut r = bench_workload(w.as_ref(), fs.as_mut(), opts)?;
        r.fs_ms_without_rmap = base_ms;
        report.workloads.push(r);
    }
    Ok(report)
}

/// The page owners of every page of a device, from one pass of range queries
/// over the reverse map.
struct Census {
    /// `owners[start[p]..start[p+1]]` are the owners of page `p`, sorted.
    start: Vec<usize>,
    owners: Vec<PageOwner>,
}

impl Census {
    fn take(fs: &dyn FsQuery, device: u64) -> Census {
        let mut start = Vec::with_capacity(device as usize + 1);
        let mut owners = Vec::new();
        let mut buf = Vec::new();
        let mut b = 0;
        while b < device {
            let n = CENSUS_CHUNK.min(device - b);
            buf.clear();
            fs.owners_in(Phys(b), n, &mut buf);
            buf.sort_unstable();
            buf.dedup();
            let mut i = 0;
            for p in b..b + n {
                start.push(owners.len());
                while i < buf.len() && buf[i].0.0 == p {
                    owners.push(buf[i].1);
                    i += 1;
                }
            }
            b += n;
        }
        start.push(owners.len());
        Census { start, owners }
    }

    fn pages(&self) -> u64 {
        (self.start.len() - 1) as u64
    }

    fn of(&self, p: u64) -> &[PageOwner] {
        if p >= self.pages() {
            return &[];
        }
        &self.owners[self.start[p as usize]..self.start[p as usize + 1]]
    }
}

/// Pages by number of owners (0 excluded).
fn histogram(fs: &dyn FsQuery, device: u64) -> BTreeMap<usize, u64> {
    let mut h = BTreeMap::new();
    let mut buf = Vec::new();
    let mut b = 0;
    let mut per_page: Vec<usize> = Vec::new();
    while b < device {
        let n = CENSUS_CHUNK.min(device - b);
        buf.clear();
        fs.owners_in(Phys(b), n, &mut buf);
        per_page.clear();
        per_page.resize(n as usize, 0);
        for (p, _) in &buf {
            per_page[(p.0 - b) as usize] += 1;
        }
        for &k in per_page.iter().filter(|&&k| k > 0) {
            *h.entry(k).or_insert(0) += 1;
        }
        b += n;
    }
    h
}

/// The reverse map's answers, memoized from the census; mappings still come
/// from the file system. The accuracy check runs on it, so that every page of
/// the device can be checked for every strategy in reasonable time.
struct Memo<'a> {
    census: &'a Census,
    fs: &'a dyn FsQuery,
}

impl FsQuery for Memo<'_> {
    fn owners_of(&self, phys: Phys, out: &mut Vec<PageOwner>) {
        out.extend_from_slice(self.census.of(phys.0));
    }

    fn mappings_of(&self, file: FileId, index: u64, out: &mut Vec<MappingId>) {
        self.fs.mappings_of(file, index, out);
    }
}

fn note(opts: &BenchOptions, w: &dyn Workload, what: &str, t: Instant) {
    if opts.progress {
        eprintln!(
            "  {}: {what} ({:.1} s)",
            w.name(),
            t.elapsed().as_secs_f64()
        );
    }
}

fn bench_workload(
    w: &dyn Workload,
    fs: &mut dyn TrackedFs,
    opts: &BenchOptions,
) -> FsResult<WorkloadReport> {
    let t0 = Instant::now();
    if opts.progress {
        eprintln!("{}: {}", w.name(), w.params());
    }
    let t = Instant::now();
    w.run(fs)?;
    let fs_ms = t.elapsed().as_secs_f64() * 1e3;
    let events = fs.take_events();
    let device = fs.device_pages();
    note(
        opts,
        w,
        &format!(
            "ran on {}: {} events, {} device pages",
            fs.label(),
            group(events.len() as u64),
            group(device)
        ),
        t0,
    );

    let mut by_kind: Vec<(EventKind, u64)> = EventKind::ALL.iter().map(|&k| (k, 0)).collect();
    let mut pages_touched = 0;
    for e in &events {
        by_kind[EventKind::ALL
            .iter()
            .position(|&k| k == e.kind())
            .unwrap_or(0)]
        .1 += 1;
        pages_touched += e.pages_touched();
    }

    // Census of the end state, from the file system's reverse map.
    let t = Instant::now();
    let census = Census::take(fs, device);
    let census_ms = t.elapsed().as_secs_f64() * 1e3;
    let mut shared = Vec::new();
    let mut exclusive = Vec::new();
    let mut free = Vec::new();
    let (mut pairs, mut max_owners) = (0u64, 0u64);
    let mut hist: BTreeMap<usize, u64> = BTreeMap::new();
    for p in 0..device {
        let n = census.of(p).len();
        pairs += n as u64;
        max_owners = max_owners.max(n as u64);
        if n > 0 {
            *hist.entry(n).or_insert(0) += 1;
        }
        match n {
            0 => free.push(p),
            1 => exclusive.push(p),
            _ => shared.push(p),
        }
    }
    note(
        opts,
        w,
        &format!(
            "census: {} mapped pages, {} shared, {} owners",
            group(device - free.len() as u64),
            group(shared.len() as u64),
            group(pairs)
        ),
        t0,
    );

    let model = if opts.cross_check {
        let mut m = ModelFs::new();
        w.run(&mut m)?;
        let m_events = m.take_events().len() as u64;
        let same_census = histogram(&m, m.device_pages()) == hist;
        note(
            opts,
            w,
            &format!(
                "same on the in-memory model: {}",
                if same_census {
                    "same census"
                } else {
                    "CENSUS DIFFERS"
                }
            ),
            t0,
        );
        Some(ModelCheck {
            same_census,
            events: m_events,
            device_pages: m.device_pages(),
        })
    } else {
        None
    };

    let mut rng = Rng::new(opts.seed ^ 0x6c6f_6f6b);
    let pick = |rng: &mut Rng, v: &[u64], k: usize| -> Vec<u64> {
        rng.sample(v.len() as u64, k as u64)
            .into_iter()
            .map(|i| v[i as usize])
            .collect()
    };
    let s_shared = pick(&mut rng, &shared, opts.lookup_samples);
    let s_excl = pick(&mut rng, &exclusive, opts.lookup_samples);
    let mut s_free = pick(&mut rng, &free, opts.lookup_samples / 4);
    s_free.extend(device..device + 4);
    let mut check: Vec<u64> = if opts.check_pages == 0 || opts.check_pages as u64 >= device {
        (0..device).collect()
    } else {
        let mut c = pick(&mut rng, &shared, opts.check_pages / 2);
        let rest: Vec<u64> = (0..device).collect();
        c.extend(pick(&mut rng, &rest, opts.check_pages / 2));
        c.sort_unstable();
        c.dedup();
        c
    };
    check.extend(device..device + 16);

    // The census asked whole ranges; ask the sampled pages one at a time,
    // as a failure would, and compare.
    let (mut spot_checked, mut spot_mismatched) = (0, 0);
    let mut v = Vec::new();
    for &p in s_shared.iter().chain(&s_excl).chain(&s_free) {
        v.clear();
        fs.owners_of(Phys(p), &mut v);
        v.sort_unstable();
        spot_checked += 1;
        spot_mismatched += u64::from(v.as_slice() != census.of(p));
    }

    let q: &dyn FsQuery = fs;
    let memo = Memo {
        census: &census,
        fs: q,
    };
    let mut results = Vec::new();
    for &s in &opts.strategies {
        // Replay into a fresh index, repeating cheap replays (up to REPLAYS
        // runs or REPLAY_BUDGET_NS of replaying) and keeping the fastest run.
        let mut replay_ns = u64::MAX;
        let mut spent = 0u64;
        let mut runs = 0;
        let (idx, peak) = loop {
            let mut idx = s.build(device);
            let mut ns = 0u64;
            let mut peak = idx.memory_bytes();
            for chunk in events.chunks(CHUNK) {
                let t = Instant::now();
                for e in chunk {
                    idx.on_event(e);
                }
                ns += t.elapsed().as_nanos() as u64;
                peak = peak.max(idx.memory_bytes());
            }
            replay_ns = replay_ns.min(ns);
            spent += ns;
            runs += 1;
            if runs >= REPLAYS || spent >= REPLAY_BUDGET_NS {
                break (idx, peak);
            }
        };
        let bytes_final = idx.memory_bytes();
        let mut max_ns = 0f64;
        // Lookups go to the file system itself: strategies 2, 6 and 7 ask
        // its reverse map one page at a time, as at a real failure.
        let mut time = |pages: &[u64]| -> f64 {
            if pages.is_empty() {
                return 0.0;
            }
            // One untimed pass to warm caches and the allocator, then the
            // fastest of up to LOOKUP_PASSES timed passes (fewer when slow).
            for &p in pages {
                std::hint::black_box(idx.owners(Phys(p), q));
            }
            let mut best = f64::INFINITY;
            let (mut passes, mut spent) = (0, 0f64);
            while passes < LOOKUP_PASSES && spent < LOOKUP_BUDGET_NS {
                let mut total = 0f64;
                for &p in pages {
                    let t = Instant::now();
                    let o = idx.owners(Phys(p), q);
                    let ns = t.elapsed().as_nanos() as f64;
                    std::hint::black_box(o);
                    total += ns;
                    max_ns = max_ns.max(ns);
                }
                best = best.min(total / pages.len() as f64);
                spent += total;
                passes += 1;
            }
            best
        };
        let lookup_shared_ns = time(&s_shared);
        let lookup_exclusive_ns = time(&s_excl);
        let lookup_free_ns = time(&s_free);
        let mut pages = Tally::default();
        let mut mappings = Tally::default();
        for &p in &check {
            let truth = Owners::resolve(census.of(p).to_vec(), &memo);
            let got = idx.owners(Phys(p), &memo);
            pages.add(Tally::of(&got.pages, &truth.pages));
            mappings.add(Tally::of(&got.mappings, &truth.mappings));
        }
        note(
            opts,
            w,
            &format!(
                "{} {}: {} ns/event, {} found of {} page owners",
                s.number(),
                s.name(),
                num(replay_ns as f64 / events.len().max(1) as f64),
                group(pages.found),
                group(pages.truth)
            ),
            t0,
        );
        results.push(StrategyResult {
            strategy: s,
            replay_ns,
            ns_per_event: replay_ns as f64 / events.len().max(1) as f64,
            ns_per_page: replay_ns as f64 / pages_touched.max(1) as f64,
            replays: runs,
            bytes_final,
            bytes_peak: peak.max(bytes_final),
            lookup_shared_ns,
            lookup_exclusive_ns,
            lookup_free_ns,
            lookup_max_ns: max_ns,
            pages,
            mappings,
            pages_checked: check.len() as u64,
        });
    }
    let rmap = fs.reverse_map_stats();
    Ok(WorkloadReport {
        name: w.name().to_string(),
        what: w.what().to_string(),
        params: w.params(),
        events_by_kind: by_kind,
        events: events.len() as u64,
        pages_touched,
        fs_ms,
        fs_ms_without_rmap: None,
        census_ms,
        device_pages: device,
        mapped_pages: (exclusive.len() + shared.len()) as u64,
        shared_pages: shared.len() as u64,
        owner_pairs: pairs,
        max_owners,
        rmap,
        spot_checked,
        spot_mismatched,
        model,
        results,
    })
}

/// `1234567` as `1,234,567`.
pub(crate) fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A measurement with three significant digits or so.
pub(crate) fn num(x: f64) -> String {
    if x == 0.0 {
        "0".into()
    } else if x < 10.0 {
        format!("{x:.2}")
    } else if x < 100.0 {
        format!("{x:.1}")
    } else {
        group(x.round() as u64)
    }
}

/// Bytes in B, KiB, MiB or GiB.
pub(crate) fn bytes(b: f64) -> String {
    const K: f64 = 1024.0;
    if b < K {
        format!("{} B", num(b))
    } else if b < K * K {
        format!("{} KiB", num(b / K))
    } else if b < K * K * K {
        format!("{} MiB", num(b / K / K))
    } else {
        format!("{} GiB", num(b / K / K / K))
    }
}

fn found(t: &Tally) -> String {
    if t.truth == 0 {
        return format!("{} / 0", group(t.found));
    }
    format!(
        "{} / {} ({:.1}%)",
        group(t.found),
        group(t.truth),
        100.0 * t.found as f64 / t.truth as f64
    )
}

impl Report {
    /// The scale as a fraction, e.g. `1/64`.
    pub fn scale_label(&self) -> String {
        if self.small {
            return "small test sizes".into();
        }
        if self.scale > 0.0 && self.scale < 1.0 && (1.0 / self.scale).fract().abs() < 1e-9 {
            format!("1/{}", (1.0 / self.scale).round() as u64)
        } else {
            format!("{}", self.scale)
        }
    }

    /// The results of strategy `st` over the workloads.
    fn of_strategy(&self, st: Strategy) -> Vec<(&WorkloadReport, &StrategyResult)> {
        self.workloads
            .iter()
            .flat_map(|w| w.results.iter().map(move |r| (w, r)))
            .filter(|(_, r)| r.strategy == st)
            .collect()
    }

    /// The conclusion in a few lines, with this run's numbers.
    pub fn conclusion(&self) -> String {
        let span = |v: &[f64]| -> String {
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(0.0, f64::max);
            if v.is_empty() {
                "-".into()
            } else if num(lo) == num(hi) {
                num(lo)
            } else {
                format!("{}-{}", num(lo), num(hi))
            }
        };
        let mut s = format!(
            "Conclusion ({}, scale {}, {} workloads):\n",
            self.fs,
            self.scale_label(),
            self.workloads.len()
        );
        let (mut exact, mut lossy) = (Vec::new(), Vec::new());
        for st in Strategy::ALL {
            let rs = self.of_strategy(st);
            if rs.is_empty() {
                continue;
            }
            let (mut p, mut m) = (Tally::default(), Tally::default());
            for (_, r) in &rs {
                p.add(r.pages);
                m.add(r.mappings);
            }
            if p.exact() && m.exact() {
                exact.push(st.number().to_string());
            } else {
                lossy.push(format!(
                    "strategy {} found {} of {} page owners ({:.1}%) and {} of {} mapping owners",
                    st.number(),
                    group(p.found),
                    group(p.truth),
                    100.0 * p.found as f64 / p.truth.max(1) as f64,
                    group(m.found),
                    group(m.truth)
                ));
            }
        }
        let _ = writeln!(
            s,
            "- exact owners on every page: strategies {}{}",
            exact.join(", "),
            lossy.iter().map(|l| format!("; {l}")).collect::<String>()
        );
        for st in Strategy::ALL {
            let rs = self.of_strategy(st);
            if rs.is_empty() {
                continue;
            }
            let ns: Vec<f64> = rs.iter().map(|(_, r)| r.ns_per_event).collect();
            let per: Vec<f64> = rs
                .iter()
                .map(|(w, r)| r.bytes_final as f64 / w.mapped_pages.max(1) as f64)
                .collect();
            let look: Vec<f64> = rs.iter().map(|(_, r)| r.lookup_shared_ns / 1e3).collect();
            let worst = rs
                .iter()
                .map(|(_, r)| self.full_size_bytes(r))
                .fold(0.0, f64::max);
            let _ = writeln!(
                s,
                "- {} {}: {} ns/event, {} bytes/mapped page (up to {} at full size), shared-page lookup {} us",
                st.number(),
                st.name(),
                span(&ns),
                span(&per),
                bytes(worst),
                span(&look)
            );
        }
        let rm: Vec<f64> = self
            .workloads
            .iter()
            .filter_map(|w| w.rmap_bytes_per_page())
            .collect();
        if !rm.is_empty() {
            let worst = self
                .workloads
                .iter()
                .filter_map(|w| w.rmap.map(|r| self.full_size(r.bytes as f64)))
                .fold(0.0, f64::max);
            let ns: Vec<f64> = self
                .workloads
                .iter()
                .filter_map(|w| w.rmap_ns_per_event())
                .collect();
            let _ = writeln!(
                s,
                "- {}'s own reverse map (what 7 asks): {} bytes/mapped page (up to {} at full size), {} ns/event to keep",
                self.fs,
                span(&rm),
                bytes(worst),
                span(&ns)
            );
        }
        s
    }

    /// Memory a strategy would need at full size: its measured bytes per
    /// mapped page times the full-size page count.
    pub fn full_size_bytes(&self, r: &StrategyResult) -> f64 {
        self.full_size(r.bytes_final as f64)
    }

    /// `b` bytes measured at this run's scale, scaled to full size.
    pub fn full_size(&self, b: f64) -> f64 {
        if self.small || self.scale <= 0.0 {
            b
        } else {
            b / self.scale
        }
    }

    /// The report as a markdown document: what ran, the table, and how it was
    /// measured.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# Owner tracking under DAX + reflink: measurements\n");
        let _ = writeln!(
            s,
            "Generated by `daxfs bench tracking`: the workloads ran on {} (scale {}, seed {}{}). Sizes (pages, files) are scaled; \
             fan-outs (clones, layers, containers, snapshots, sharing degrees) and fractions are not, so the \
             per-event and per-page figures hold at full size. The *at full size* column scales memory back up.\n",
            self.fs,
            self.scale_label(),
            self.seed,
            if self.optimized {
                ""
            } else {
                ", **unoptimised build: timings are not meaningful**"
            }
        );
        let _ = writeln!(
            s,
            "![time per event, memory per page, failure lookup](tracking.svg)\n"
        );
        let _ = writeln!(s, "## Strategies\n");
        let _ = writeln!(s, "| # | name | design |\n|---|---|---|");
        for st in Strategy::ALL {
            let _ = writeln!(s, "| {} | `{}` | {} |", st.number(), st.name(), st.title());
        }
        let _ = writeln!(s, "\n## Summary over the workloads\n");
        let _ = writeln!(
            s,
            "| strategy | owners found | ns / event | bytes / mapped page | most memory at full size | lookup µs, shared page |"
        );
        let _ = writeln!(s, "|---|---|---:|---:|---:|---:|");
        for st in Strategy::ALL {
            let rs: Vec<(&WorkloadReport, &StrategyResult)> = self
                .workloads
                .iter()
                .flat_map(|w| w.results.iter().map(move |r| (w, r)))
                .filter(|(_, r)| r.strategy == st)
                .collect();
            if rs.is_empty() {
                continue;
            }
            let range = |f: &dyn Fn(&WorkloadReport, &StrategyResult) -> f64| {
                let v: Vec<f64> = rs.iter().map(|(w, r)| f(w, r)).collect();
                let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = v.iter().copied().fold(0.0, f64::max);
                if num(lo) == num(hi) {
                    num(lo)
                } else {
                    format!("{} – {}", num(lo), num(hi))
                }
            };
            let mut pages = Tally::default();
            let mut maps = Tally::default();
            for (_, r) in &rs {
                pages.add(r.pages);
                maps.add(r.mappings);
            }
            let exact = if pages.exact() && maps.exact() {
                "all, exactly".to_string()
            } else {
                format!(
                    "{:.1}% of page owners, {:.1}% of mapping owners",
                    100.0 * pages.found as f64 / pages.truth.max(1) as f64,
                    100.0 * maps.found as f64 / maps.truth.max(1) as f64
                )
            };
            let worst = rs
                .iter()
                .map(|(_, r)| self.full_size_bytes(r))
                .fold(0.0, f64::max);
            let _ = writeln!(
                s,
                "| {} `{}` | {} | {} | {} | {} | {} |",
                st.number(),
                st.name(),
                exact,
                range(&|_, r| r.ns_per_event),
                range(&|w, r| r.bytes_final as f64 / w.mapped_pages.max(1) as f64),
                bytes(worst),
                range(&|_, r| r.lookup_shared_ns / 1e3)
            );
        }
        let rm: Vec<&WorkloadReport> = self.workloads.iter().filter(|w| w.rmap.is_some()).collect();
        if !rm.is_empty() {
            let span = |v: Vec<f64>| -> String {
                let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = v.iter().copied().fold(0.0, f64::max);
                if v.is_empty() {
                    "-".into()
                } else if num(lo) == num(hi) {
                    num(lo)
                } else {
                    format!("{} – {}", num(lo), num(hi))
                }
            };
            let worst = rm
                .iter()
                .filter_map(|w| w.rmap.map(|r| self.full_size(r.bytes as f64)))
                .fold(0.0, f64::max);
            let _ = writeln!(
                s,
                "| for comparison: {}'s reverse map, which 7 asks | the truth here | {} | {} | {} | - |",
                self.fs,
                span(rm.iter().filter_map(|w| w.rmap_ns_per_event()).collect()),
                span(rm.iter().filter_map(|w| w.rmap_bytes_per_page()).collect()),
                bytes(worst)
            );
        }
        let _ = writeln!(s, "\n## Workloads (this run)\n");
        let _ = writeln!(
            s,
            "| workload | models | parameters | events (map / unmap / share / cow / mmap / munmap) | device pages | mapped | shared (2+ owners) | owners per mapped page (mean / max) |"
        );
        let _ = writeln!(s, "|---|---|---|---|---:|---:|---:|---:|");
        for w in &self.workloads {
            let kinds: Vec<String> = w.events_by_kind.iter().map(|(_, n)| group(*n)).collect();
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} = {} | {} | {} | {} | {} / {} |",
                w.name,
                w.what,
                w.params,
                group(w.events),
                kinds.join(" / "),
                group(w.device_pages),
                group(w.mapped_pages),
                group(w.shared_pages),
                num(w.owner_pairs as f64 / w.mapped_pages.max(1) as f64),
                group(w.max_owners)
            );
        }
        if self.workloads.iter().any(|w| w.rmap.is_some()) {
            let _ = writeln!(s, "\n## The reverse map strategy 7 asks\n");
            let _ = writeln!(
                s,
                "Strategy 7 keeps nothing because the file system keeps a reverse map anyway (for repair, \
                 fsmap and reporting lost data). What that map costs in {}: its size at the end, and the \
                 workload's run time with it and without it (made without a reverse map).\n",
                self.fs
            );
            let _ = writeln!(
                s,
                "| workload | file-data records | tree size | bytes / mapped page | at full size | run time with / without it | its cost per event |"
            );
            let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|");
            for w in &self.workloads {
                let Some(r) = w.rmap else { continue };
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} s / {} | {} |",
                    w.name,
                    group(r.records),
                    bytes(r.bytes as f64),
                    num(r.bytes as f64 / w.mapped_pages.max(1) as f64),
                    bytes(self.full_size(r.bytes as f64)),
                    num(w.fs_ms / 1e3),
                    w.fs_ms_without_rmap
                        .map_or("-".to_string(), |b| format!("{} s", num(b / 1e3))),
                    w.rmap_ns_per_event()
                        .map_or("-".to_string(), |ns| format!("{} µs", num(ns / 1e3)))
                );
            }
        }
        let _ = writeln!(s, "\n## Cost when no error happens\n");
        let _ = writeln!(
            s,
            "| workload | strategy | ns / event | ns / page touched | bytes / mapped page | bytes / shared page | memory at end (peak) | at full size |"
        );
        let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|");
        for w in &self.workloads {
            for r in &w.results {
                let per_shared = if w.shared_pages == 0 {
                    "-".to_string()
                } else {
                    num(r.bytes_final as f64 / w.shared_pages as f64)
                };
                let _ = writeln!(
                    s,
                    "| {} | {} `{}` | {} | {} | {} | {} | {} ({}) | {} |",
                    w.name,
                    r.strategy.number(),
                    r.strategy.name(),
                    num(r.ns_per_event),
                    num(r.ns_per_page),
                    num(r.bytes_final as f64 / w.mapped_pages.max(1) as f64),
                    per_shared,
                    bytes(r.bytes_final as f64),
                    bytes(r.bytes_peak as f64),
                    bytes(self.full_size_bytes(r)),
                );
            }
        }
        let _ = writeln!(s, "\n## At a media error\n");
        let _ = writeln!(
            s,
            "| workload | strategy | lookup µs: shared / exclusive / free page | page owners found / true | missed | spurious | mapping owners found / true | missed | spurious |"
        );
        let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
        for w in &self.workloads {
            for r in &w.results {
                let _ = writeln!(
                    s,
                    "| {} | {} `{}` | {} / {} / {} | {} | {} | {} | {} | {} | {} |",
                    w.name,
                    r.strategy.number(),
                    r.strategy.name(),
                    num(r.lookup_shared_ns / 1e3),
                    num(r.lookup_exclusive_ns / 1e3),
                    num(r.lookup_free_ns / 1e3),
                    found(&r.pages),
                    group(r.pages.missed),
                    group(r.pages.spurious),
                    found(&r.mappings),
                    group(r.mappings.missed),
                    group(r.mappings.spurious)
                );
            }
        }
        let _ = writeln!(s, "\n## How it was measured\n");
        let _ = writeln!(
            s,
            "- Each workload runs on {}: every operation is the file system's own call (write, clone, dedupe, \
             punch, unlink), and the mapping events it commits (extent granularity) are recorded. The stream \
             is then replayed into each strategy. **ns / event** is the replay wall time over the number of \
             events, the fastest of up to 5 replays (fewer when a replay is slow); **ns / page touched** divides \
             the same time by the pages whose ownership the events changed. Strategy 7 shows only the cost of \
             the call; what the file system pays to keep the reverse map it asks is in its own section above.",
            self.fs
        );
        let _ = writeln!(
            s,
            "- **Memory** is the bytes the strategy's structures allocated, from their capacities. Per-page arrays \
             cover the whole device (as `struct page` does): every block up to the highest the file system \
             used, so free blocks and the file system's own metadata blocks count too. *Bytes / mapped page* and *bytes / shared page* divide the end total by the pages \
             with at least one, or two, owners."
        );
        let _ = writeln!(
            s,
            "- **Lookup** is the mean wall time of one `owners()` call, resolving mappings included, over up to \
             {} shared and {} exclusive pages, the fastest of up to 3 timed passes after one untimed pass. \
             Strategies 2, 6 and 7 spend it in the file system's reverse map, asked one page at a time as at a \
             real failure.",
            self.lookup_samples, self.lookup_samples
        );
        let _ = writeln!(
            s,
            "- **Owners found / true** compares, for every page of the device and 16 past its end, the strategy's \
             answer with the truth: the file system's reverse map, read once for the whole device by range \
             queries (the *census*). A mapping owner is a mapping of an owning file covering the page. For this \
             check the reverse map's answers that strategies 2, 6 and 7 ask for come from the census, so that \
             every page can be checked; the timed lookups above ask the file system itself, and their pages were \
             asked one at a time and compared with the census (below)."
        );
        for w in &self.workloads {
            let mut line = format!(
                "- {}: {} produced its {} events in {} s; the census took {} s",
                w.name,
                self.fs,
                group(w.events),
                num(w.fs_ms / 1e3),
                num(w.census_ms / 1e3)
            );
            if let Some(r) = w.rmap {
                let _ = write!(
                    line,
                    "; the reverse map, which the file system keeps anyway, held {} file-data records in {} \
                     ({} per mapped page) at the end",
                    group(r.records),
                    bytes(r.bytes as f64),
                    bytes(r.bytes as f64 / w.mapped_pages.max(1) as f64)
                );
            }
            let _ = write!(
                line,
                ". Pages asked one at a time: {}, differing from the census: {}",
                group(w.spot_checked),
                group(w.spot_mismatched)
            );
            if let Some(m) = &w.model {
                let _ = write!(
                    line,
                    ". On the in-memory model the same workload gave {} events and {}",
                    group(m.events),
                    if m.same_census {
                        "the same census (pages by number of owners)"
                    } else {
                        "**a different census** (pages by number of owners)"
                    }
                );
            }
            let _ = writeln!(s, "{line}.");
        }
        s
    }
}
