//! The benchmark: every strategy on every workload.
//!
//! For each workload, [`run_bench`] runs the driver on a fresh file system,
//! records its event stream, then for each strategy: replays the stream
//! (timing it and sampling memory), times failure lookups on samples of
//! shared, exclusive and free pages, and checks the owners it finds on every
//! page against the file system's reverse map.
//!
//! ```no_run
//! use daxfs_tracking::{BenchOptions, run_bench, write_outputs};
//! let report = run_bench(&BenchOptions { scale: 1.0 / 64.0, ..BenchOptions::default() });
//! let files = write_outputs(&report, std::path::Path::new("docs")).unwrap();
//! println!("{}", files.message());
//! ```

use std::fmt::Write as _;
use std::time::Instant;

use crate::event::{EventKind, Phys};
use crate::index::{FsQuery, Owners, Tally};
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
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            scale: DEFAULT_SCALE,
            seed: 1,
            strategies: Strategy::ALL.to_vec(),
            workloads: Vec::new(),
            lookup_samples: 500,
            check_pages: 0,
            small: false,
        }
    }
}

/// The scale `daxfs bench tracking` uses unless told otherwise: 1/64, which
/// runs all 28 combinations in about a minute and a few GiB on two cores.
pub const DEFAULT_SCALE: f64 = 1.0 / 64.0;

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

/// Events replayed between two memory samples.
const CHUNK: usize = 1 << 16;

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
    /// One entry per strategy.
    pub results: Vec<StrategyResult>,
}

/// Everything [`run_bench`] measured.
#[derive(Clone, Debug)]
pub struct Report {
    /// The scale the workloads ran at.
    pub scale: f64,
    /// Whether the small test versions ran.
    pub small: bool,
    /// The seed.
    pub seed: u64,
    /// Whether this was an optimised build.
    pub optimized: bool,
    /// One entry per workload.
    pub workloads: Vec<WorkloadReport>,
}

/// Runs the benchmark on the in-memory model file system.
pub fn run_bench(opts: &BenchOptions) -> Report {
    run_bench_with(opts, &mut || Box::new(ModelFs::new()) as Box<dyn TrackedFs>)
        .expect("the model file system does not fail")
}

/// Runs the benchmark on file systems made by `make_fs`, one per workload:
/// the plug-in point for daxfs proper.
pub fn run_bench_with(
    opts: &BenchOptions,
    make_fs: &mut dyn FnMut() -> Box<dyn TrackedFs>,
) -> FsResult<Report> {
    let all = if opts.small {
        workloads::small(opts.seed)
    } else {
        workloads::scaled(opts.scale, opts.seed)
    };
    let mut report = Report {
        scale: opts.scale,
        small: opts.small,
        seed: opts.seed,
        optimized: !cfg!(debug_assertions),
        workloads: Vec::new(),
    };
    for w in all {
        if !opts.workloads.is_empty() && !opts.workloads.iter().any(|n| n == w.name()) {
            continue;
        }
        let mut fs = make_fs();
        report
            .workloads
            .push(bench_workload(w.as_ref(), fs.as_mut(), opts)?);
    }
    Ok(report)
}

fn owners_truth(fs: &dyn FsQuery, p: u64) -> Owners {
    let mut v = Vec::new();
    fs.owners_of(Phys(p), &mut v);
    Owners::resolve(v, fs)
}

fn bench_workload(
    w: &dyn Workload,
    fs: &mut dyn TrackedFs,
    opts: &BenchOptions,
) -> FsResult<WorkloadReport> {
    let t = Instant::now();
    w.run(fs)?;
    let fs_ms = t.elapsed().as_secs_f64() * 1e3;
    let events = fs.take_events();
    let device = fs.device_pages();

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
    let mut shared = Vec::new();
    let mut exclusive = Vec::new();
    let mut free = Vec::new();
    let (mut pairs, mut max_owners) = (0u64, 0u64);
    let mut v = Vec::new();
    for p in 0..device {
        v.clear();
        fs.owners_of(Phys(p), &mut v);
        let n = v.len() as u64;
        pairs += n;
        max_owners = max_owners.max(n);
        match n {
            0 => free.push(p),
            1 => exclusive.push(p),
            _ => shared.push(p),
        }
    }
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
        let q: &dyn FsQuery = fs;
        let mut max_ns = 0f64;
        let mut time = |pages: &[u64]| -> f64 {
            if pages.is_empty() {
                return 0.0;
            }
            // One untimed pass to warm caches and the allocator, then the
            // fastest of three timed passes.
            for &p in pages {
                std::hint::black_box(idx.owners(Phys(p), q));
            }
            let mut best = f64::INFINITY;
            for _ in 0..3 {
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
            }
            best
        };
        let lookup_shared_ns = time(&s_shared);
        let lookup_exclusive_ns = time(&s_excl);
        let lookup_free_ns = time(&s_free);
        let mut pages = Tally::default();
        let mut mappings = Tally::default();
        for &p in &check {
            let truth = owners_truth(q, p);
            let got = idx.owners(Phys(p), q);
            pages.add(Tally::of(&got.pages, &truth.pages));
            mappings.add(Tally::of(&got.mappings, &truth.mappings));
        }
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
        device_pages: device,
        mapped_pages: (exclusive.len() + shared.len()) as u64,
        shared_pages: shared.len() as u64,
        owner_pairs: pairs,
        max_owners,
        rmap,
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

    /// Memory a strategy would need at full size: its measured bytes per
    /// mapped page times the full-size page count.
    pub fn full_size_bytes(&self, r: &StrategyResult) -> f64 {
        if self.small || self.scale <= 0.0 {
            r.bytes_final as f64
        } else {
            r.bytes_final as f64 / self.scale
        }
    }

    /// The report as a markdown document: what ran, the table, and how it was
    /// measured.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# Owner tracking under DAX + reflink: measurements\n");
        let _ = writeln!(
            s,
            "Generated by `daxfs bench tracking` (scale {}, seed {}{}). Sizes (pages, files) are scaled; \
             fan-outs (clones, layers, containers, snapshots, sharing degrees) and fractions are not, so the \
             per-event and per-page figures hold at full size. The *at full size* column scales memory back up.\n",
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
            "- The workload runs on the in-memory reflink model; its event stream (extent granularity) is recorded, \
             then replayed into each strategy. **ns / event** is the replay wall time over the number of events, \
             the fastest of up to 5 replays (fewer when a replay is slow); **ns / page touched** divides the same \
             time by the pages whose ownership the events changed. Strategy 7 shows only the cost of the call."
        );
        let _ = writeln!(
            s,
            "- **Memory** is the bytes the strategy's structures allocated, from their capacities. Per-page arrays \
             cover the whole device (as `struct page` does), so free pages count too. *Bytes / mapped page* and \
             *bytes / shared page* divide the end total by the pages with at least one, or two, owners."
        );
        let _ = writeln!(
            s,
            "- **Lookup** is the mean wall time of one `owners()` call, resolving mappings included, over up to \
             500 shared and 500 exclusive pages (after one untimed pass over the same pages). Strategies 2, 6 and 7 spend it in the file system's reverse map."
        );
        let _ = writeln!(
            s,
            "- **Owners found / true** compares, for every page of the device and 16 past its end, the strategy's \
             answer with the reverse map's; a mapping owner is a mapping of an owning file covering the page."
        );
        for w in &self.workloads {
            if let Some(r) = w.rmap {
                let _ = writeln!(
                    s,
                    "- {}: the workload produced its {} events in {} ms on the model; the file system's reverse \
                     map, which it keeps anyway, held {} records ({}) at the end.",
                    w.name,
                    group(w.events),
                    num(w.fs_ms),
                    group(r.records),
                    bytes(r.bytes as f64)
                );
            }
        }
        s
    }
}
