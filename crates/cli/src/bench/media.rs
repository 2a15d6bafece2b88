//! `daxfs bench media`: what media-error handling costs. In one run:
//!
//! - the time from a report of a bad block to every owner handled (the loss
//!   recorded durably in each file, the error log written, open handles
//!   told), for a block shared by 1, 100 and 10,000 files;
//! - the cost of keeping the reverse map and the metadata replicas, which
//!   make that handling possible, on the allocating-write and the
//!   create + write + fsync workloads: the same workloads on images made
//!   with everything, without replicas, and without the reverse map (which
//!   implies no replicas), the three mounted side by side and the workloads
//!   run on each in turn in batches of a few operations, round after round,
//!   so that the machine's drift hits each alike.
//!
//! The targets (10,000 owners in 5 ms; reverse map 3% or less; replicas 10%
//! or less) are informational and never change the exit status.
use super::report::{Figure, Report, Target};
use super::stats::{Samples, Scratch, interleaved};
use anyhow::{Context, Result, bail};
use daxfs::{Fs, MkfsOptions, MountOptions};
use daxfs_device::{Device, MmapDevice};
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

const BS: u64 = 4096;
const MIB: u64 = 1 << 20;

/// Options of `daxfs bench media`.
#[derive(clap::Args, Debug)]
pub struct MediaArgs {
    /// Directory for the images [default: /dev/shm, else the system's
    /// temporary directory].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Numbers of files sharing the bad block, comma-separated [default:
    /// 1,100,10000].
    #[arg(long, value_delimiter = ',')]
    owners: Option<Vec<usize>>,
    /// Reports timed for each number of owners, each on a block of its own
    /// [default: 9; 3 with --quick].
    #[arg(long)]
    reports: Option<usize>,
    /// Rounds of the cost workloads (each round runs every configuration
    /// once) [default: 5; 1 with --quick].
    #[arg(long)]
    rounds: Option<usize>,
    /// Bytes written sequentially into a new file per pass of the
    /// allocating-write workload: k, m, g suffixes [default: 256m; 32m with
    /// --quick].
    #[arg(long)]
    size: Option<String>,
    /// Files created, written and fsynced per round [default: 2000; 200
    /// with --quick].
    #[arg(long)]
    files: Option<usize>,
    /// Leave the image mappings unpopulated, so that the first access to
    /// each page pays a page fault (by default the mappings are populated at
    /// open, as `--populate` does for every command).
    #[arg(long)]
    no_populate: bool,
    /// Small sizes and few repetitions: a smoke run of a few seconds.
    #[arg(long)]
    quick: bool,
    /// Print one JSON document instead of a table.
    #[arg(long)]
    json: bool,
    /// Run only the cost workloads (reverse map, replicas), not the
    /// report-handling ones.
    #[arg(long)]
    costs_only: bool,
}

struct Plan {
    dir: PathBuf,
    owners: Vec<usize>,
    reports: usize,
    rounds: usize,
    bytes: u64,
    files: usize,
    populate: bool,
}

/// An image configuration the cost workloads run on.
#[derive(Clone, Copy)]
struct Config {
    name: &'static str,
    label: &'static str,
    no_rmap: bool,
    no_replicas: bool,
}

const CONFIGS: [Config; 3] = [
    Config {
        name: "full",
        label: "reverse map and replicas",
        no_rmap: false,
        no_replicas: false,
    },
    Config {
        name: "no_replicas",
        label: "reverse map, no replicas",
        no_rmap: false,
        no_replicas: true,
    },
    Config {
        name: "no_rmap",
        label: "neither",
        no_rmap: true,
        no_replicas: true,
    },
];

fn make(plan: &Plan, scratch: &Scratch, bytes: u64, c: Config) -> Result<Fs> {
    let size = bytes.div_ceil(2 * MIB) * (2 * MIB);
    // Every page of the image is allocated before the run (written with
    // zeros), as the memory of a real device is: otherwise the first store
    // to each page pays for the kernel allocating and clearing it. Unless
    // told not to, the mapping is populated too, so that the first access to
    // a page does not pay a page fault either.
    {
        use std::io::Write;
        let mut f = std::fs::File::create_new(scratch.path())
            .with_context(|| format!("creating {}", scratch.path().display()))?;
        let zeros = vec![0u8; MIB as usize];
        for _ in 0..size / MIB {
            f.write_all(&zeros)?;
        }
    }
    let dev: Arc<dyn Device> = Arc::new(
        MmapDevice::open(
            scratch.path(),
            super::dax::dev_opts().populate(plan.populate),
        )
        .with_context(|| format!("opening {}", scratch.path().display()))?,
    );
    let opts = MkfsOptions {
        no_rmap: c.no_rmap,
        no_replicas: c.no_replicas,
        ..Default::default()
    };
    Fs::mkfs(dev.clone(), &opts)?;
    Ok(Fs::mount(dev, &MountOptions::default())?)
}

/// What the owner-handling measurement found for one number of owners.
struct Handling {
    owners: usize,
    /// Time of each report, from the report to every owner handled.
    times: Samples,
    /// CPU time the reporting thread spent on each report (the whole report
    /// runs on it): less disturbed than wall time by other work on the
    /// machine.
    cpu: Samples,
    /// Time to name every owner by path, once, after a report.
    paths_ms: f64,
}

/// Makes a file of `plan.reports` blocks shared by `owners` files, then
/// reports each block bad in turn and times the handling; checks that every
/// report handled exactly `owners` owners.
fn handling(plan: &Plan, owners: usize, progress: &dyn Fn(&str)) -> Result<Handling> {
    let scratch = Scratch::new(&plan.dir, &format!("media-{owners}.img"));
    // The device remembers its bad blocks beside the image.
    let _sidecar = Scratch::new(&plan.dir, &format!("media-{owners}.img.badblocks"));
    // Each clone takes an inode, a directory entry and an extent-tree block
    // with its replica and their share of the trees above them; each report
    // an error-log and a loss record per owner.
    let bytes = 64 * MIB + owners as u64 * 6 * BS * (1 + plan.reports as u64 / 4);
    let fs = make(plan, &scratch, bytes, CONFIGS[0])?;
    let blocks = plan.reports as u64;
    let src = fs.create("/src")?;
    src.write_at(0, &vec![0x5a; (blocks * BS) as usize])?;
    fs.mkdir("/o", 0o755)?;
    for i in 1..owners {
        if i % 1000 == 0 {
            progress(&format!("{owners} owners: {i} clones"));
        }
        let c = fs.create(format!("/o/c{i:06}"))?;
        c.clone_from(&src)?;
    }
    let ext = src.fiemap()?;
    let phys = |fb: u64| -> Result<u64> {
        ext.iter()
            .find(|e| e.logical <= fb * BS && fb * BS < e.logical + e.length)
            .map(|e| e.physical + fb * BS - e.logical)
            .context("the shared file has a hole")
    };
    drop(src);
    fs.sync()?;
    let mut ns = vec![];
    let mut cpu_ns = vec![];
    for fb in 0..blocks {
        let p = phys(fb)?;
        let c = thread_cpu_ns();
        let t = Instant::now();
        let ev = fs.inject_error(p, BS)?;
        ns.push(t.elapsed().as_nanos() as u64);
        cpu_ns.push(thread_cpu_ns().saturating_sub(c));
        let lost = ev.iter().filter(|e| e.action == "data lost").count();
        if lost != owners || ev.len() != owners {
            bail!(
                "a block shared by {owners} files: the report handled {lost} losses in {} events",
                ev.len()
            );
        }
    }
    // Naming the owners by path is for people and comes after the handling.
    let t = Instant::now();
    let named = fs.owners(phys(0)? / BS, 1)?;
    let paths_ms = t.elapsed().as_secs_f64() * 1e3;
    black_box(&named);
    Ok(Handling {
        owners,
        times: Samples::new(ns),
        cpu: Samples::new(cpu_ns),
        paths_ms,
    })
}

/// The cost workloads' figures on one configuration, one round.
struct Cost {
    /// Sequential 1 MiB writes into a new file, then fsync: GB/s.
    alloc_write: f64,
    /// 4 KiB appends, each with fsync: median, us.
    append_4k: f64,
    /// create + write 4 KiB + fsync + close: median, us.
    create_fsync: f64,
    /// The same, mean, us: with the work that comes every few dozen
    /// operations (a reverse-map leaf split, the intents put into the tree).
    create_fsync_mean: f64,
    /// The appends' mean, us.
    append_4k_mean: f64,
}

/// Passes of the allocating-write workload per round, the first a warm-up.
const ALLOC_PASSES: usize = 6;

/// Operations of one workload run on each configuration in turn before the
/// next batch: the machine's speed drifts within a round, and batches this
/// small spread the drift over the three configurations alike.
const BATCH: usize = 25;

/// One round of the cost workloads on every configuration (in [`CONFIGS`]
/// order), the three file systems mounted side by side and the workloads
/// interleaved in batches of [`BATCH`] operations.
fn costs(plan: &Plan) -> Result<Vec<Cost>> {
    let appends = plan.files;
    let bytes = 2 * plan.bytes + (plan.files + appends) as u64 * 8 * BS + 64 * MIB;
    let scratch: Vec<Scratch> = CONFIGS
        .iter()
        .map(|c| Scratch::new(&plan.dir, &format!("media-cost-{}.img", c.name)))
        .collect();
    let fss = CONFIGS
        .iter()
        .zip(&scratch)
        .map(|(c, s)| make(plan, s, bytes, *c))
        .collect::<Result<Vec<Fs>>>()?;
    let chunk = vec![0x33u8; MIB as usize];
    let chunks = plan.bytes / MIB;
    // The first pass only warms the mapping; the best of the others counts
    // (a pass takes tens of milliseconds: several, so that a burst of other
    // work on the machine does not decide the ratio).
    let mut best = vec![f64::MAX; fss.len()];
    for pass in 0..ALLOC_PASSES {
        for (fs, best) in fss.iter().zip(&mut best) {
            let f = fs.create(format!("/seq{pass}"))?;
            let t = Instant::now();
            for i in 0..chunks {
                f.write_at(i * MIB, black_box(&chunk))?;
            }
            f.fsync()?;
            let s = t.elapsed().as_secs_f64();
            if pass > 0 {
                *best = best.min(s);
            }
            drop(f);
            fs.unlink(format!("/seq{pass}"))?;
        }
    }
    let small = vec![0x42u8; BS as usize];
    let warm = appends / 10;
    let files = fss
        .iter()
        .map(|fs| Ok(fs.create("/append")?))
        .collect::<Result<Vec<_>>>()?;
    let app = interleaved(warm, appends, fss.len(), BATCH, |k, i| {
        files[k].write_at(i as u64 * BS, black_box(&small))?;
        files[k].fsync()?;
        Ok(())
    })?;
    drop(files);
    for fs in &fss {
        fs.mkdir("/small", 0o755)?;
    }
    let names: Vec<String> = (0..warm + plan.files)
        .map(|i| format!("/small/f{i:07}"))
        .collect();
    let cr = interleaved(warm, plan.files, fss.len(), BATCH, |k, i| {
        let f = fss[k].create(&names[i])?;
        f.write_at(0, black_box(&small))?;
        f.fsync()?;
        Ok(())
    })?;
    Ok((0..fss.len())
        .map(|k| Cost {
            alloc_write: (chunks * MIB) as f64 / best[k] / 1e9,
            append_4k: app[k].p50(),
            create_fsync: cr[k].p50(),
            create_fsync_mean: cr[k].mean_us(),
            append_4k_mean: app[k].mean_us(),
        })
        .collect())
}

/// CPU time of the calling thread, in nanoseconds.
fn thread_cpu_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn run(a: &MediaArgs) -> Result<i32> {
    let dir = crate::bench::scratch_dir(&a.dir)?;
    let q = a.quick;
    let bytes = match &a.size {
        Some(s) => crate::args::parse_size(s)?,
        None if q => 32 * MIB,
        None => 256 * MIB,
    } / MIB
        * MIB;
    if bytes == 0 {
        bail!("--size must be at least 1m (the writes are 1 MiB each)");
    }
    let owners = if a.costs_only {
        vec![]
    } else {
        a.owners.clone().unwrap_or(vec![1, 100, 10_000])
    };
    if owners.contains(&0) {
        bail!("--owners: every number of owners must be at least 1");
    }
    let plan = Plan {
        dir,
        owners,
        reports: a.reports.unwrap_or(if q { 3 } else { 9 }).max(1),
        rounds: a.rounds.unwrap_or(if q { 1 } else { 5 }).max(1),
        bytes,
        files: a.files.unwrap_or(if q { 200 } else { 2000 }).max(10),
        populate: !a.no_populate,
    };
    let json = a.json;
    let progress = |s: &str| {
        if !json {
            eprintln!("  ... {s}");
        }
    };
    let mut rep = Report::new(json, String::new());
    rep.note(&format!(
        "daxfs bench media in {} (mappings {}): {} reports per sharing degree; {} rounds of {} MiB allocating writes, {} 4 KiB appends and {} small files per configuration",
        plan.dir.display(),
        if plan.populate { "populated at open" } else { "not populated" },
        plan.reports,
        plan.rounds,
        plan.bytes / MIB,
        plan.files,
        plan.files
    ));
    for &n in &plan.owners {
        progress(&format!("a block shared by {n} files"));
        let h = handling(&plan, n, &progress)?;
        let mut f = Figure::new(
            format!("handle_{n}_owners_p50"),
            "daxfs",
            format!("report to every owner handled, {n} owners, median"),
            h.times.p50_ms(),
            "ms",
        );
        if n >= 10_000 {
            f = f.target(Target::AtMost(5.0));
        }
        rep.add(f);
        rep.add(Figure::new(
            format!("handle_{n}_owners_cpu_p50"),
            "daxfs",
            "  the same, CPU time of the reporting thread, median".to_string(),
            h.cpu.p50_ms(),
            "ms",
        ));
        rep.add(Figure::new(
            format!("handle_{n}_owners_max"),
            "daxfs",
            format!("report to every owner handled, {n} owners, worst"),
            h.times.pct_us(1.0) / 1e3,
            "ms",
        ));
        rep.add(Figure::new(
            format!("paths_{n}_owners"),
            "daxfs",
            format!("then naming the {n} owners by path"),
            h.paths_ms,
            "ms",
        ));
        let _ = h.owners;
    }
    // Cost workloads: every configuration in every round, interleaved.
    let mut runs: Vec<Vec<Cost>> = CONFIGS.iter().map(|_| vec![]).collect();
    for r in 0..plan.rounds {
        progress(&format!("round {} of {}", r + 1, plan.rounds));
        for (run, c) in runs.iter_mut().zip(costs(&plan)?) {
            run.push(c);
        }
    }
    let med = |i: usize, f: fn(&Cost) -> f64| median(runs[i].iter().map(f).collect());
    type Pick = fn(&Cost) -> f64;
    // (name, label, figure, unit, higher is better, held to the targets):
    // the means are shown beside the medians the targets apply to.
    let workloads: [(&str, &str, Pick, &'static str, bool, bool); 5] = [
        (
            "alloc_write",
            "allocating write, 1 MiB chunks + fsync",
            |c| c.alloc_write,
            "GB/s",
            true,
            true,
        ),
        (
            "create_fsync_p50",
            "create + write 4 KiB + fsync, median",
            |c| c.create_fsync,
            "us",
            false,
            true,
        ),
        (
            "create_fsync_mean",
            "create + write 4 KiB + fsync, mean",
            |c| c.create_fsync_mean,
            "us",
            false,
            false,
        ),
        (
            "append_4k_p50",
            "append 4 KiB + fsync, median",
            |c| c.append_4k,
            "us",
            false,
            true,
        ),
        (
            "append_4k_mean",
            "append 4 KiB + fsync, mean",
            |c| c.append_4k_mean,
            "us",
            false,
            false,
        ),
    ];
    for (name, label, pick, unit, higher_better, targeted) in workloads {
        let idx: Vec<usize> = CONFIGS
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let f = Figure::new(
                    format!("{name}_{}", c.name),
                    "daxfs",
                    format!("{label} ({})", c.label),
                    med(i, pick),
                    unit,
                );
                if i == 1 {
                    // Reverse-map cost: with it (no replicas) against without.
                    let f = f.ratio(&Figure::new(
                        format!("{name}_no_rmap"),
                        "daxfs",
                        "",
                        med(2, pick),
                        unit,
                    ));
                    if !targeted {
                        f
                    } else if higher_better {
                        f.target(Target::RatioAtLeast(0.97))
                    } else {
                        f.target(Target::RatioAtMost(1.03))
                    }
                } else if i == 0 {
                    // Replica cost: with them against the same without.
                    let f = f.ratio(&Figure::new(
                        format!("{name}_no_replicas"),
                        "daxfs",
                        "",
                        med(1, pick),
                        unit,
                    ));
                    if !targeted {
                        f
                    } else if higher_better {
                        f.target(Target::RatioAtLeast(0.90))
                    } else {
                        f.target(Target::RatioAtMost(1.10))
                    }
                } else {
                    f
                }
            })
            .map(|f| rep.add(f))
            .collect();
        black_box(idx);
    }
    rep.finish(&serde_json::json!({
        "dir": plan.dir.display().to_string(),
        "owners": plan.owners,
        "reports": plan.reports,
        "rounds": plan.rounds,
        "alloc_write_bytes": plan.bytes,
        "files": plan.files,
        "quick": q,
    }));
    Ok(0)
}
