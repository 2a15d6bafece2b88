//! `daxfs bench`: the file system's speed next to the machine's physical
//! limits and next to a conventional peer, in one run.
//!
//! Every figure is printed with its ratio to the matching machine limit:
//! sequential bandwidth to single-thread memcpy bandwidth, a 4 KiB read to a
//! 4 KiB memcpy, and a durable 4 KiB write to a 4 KiB store made durable
//! directly on the device (write, cache-line write-back, fence). The targets
//! are informational: the command succeeds whether they are met or not.
mod dax;
mod fault_floor;
mod machine;
mod media;
mod mount;
mod peer;
mod reflink;
mod report;
mod stats;
mod threads;
mod views;
mod workload;

use crate::args::parse_size;
use anyhow::{Result, bail};
use report::{Figure, Report, Target};
use std::path::{Path, PathBuf};

/// Options of `daxfs bench`.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    mode: Option<BenchMode>,
    /// Directory for the images and peer files [default: /dev/shm, else the
    /// system's temporary directory]. Memory-backed is what the figures are
    /// meant for: on a disk the peer's fdatasync calls reach the disk and the
    /// run takes far longer.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Size of the sequentially written and read file: k, m, g suffixes
    /// [default: 1g; 64m with --quick].
    #[arg(long)]
    size: Option<String>,
    /// Number of small files to create, write and fsync [default: 10000; 500
    /// with --quick].
    #[arg(long)]
    files: Option<usize>,
    /// Number of files in the file system whose mount is timed [default:
    /// 100000; 2000 with --quick].
    #[arg(long)]
    mount_files: Option<usize>,
    /// Small sizes and few repetitions: a smoke run of a few seconds.
    #[arg(long)]
    quick: bool,
    /// Print one JSON document instead of a table.
    #[arg(long)]
    json: bool,
    /// Make the daxfs images without metadata replicas (to measure their
    /// cost against a run without this option).
    #[arg(long)]
    no_replicas: bool,
}

/// Benchmarks other than the default one.
#[derive(clap::Subcommand, Debug)]
enum BenchMode {
    /// Sharing blocks: clone, copy on write, owner query and fsmap, beside
    /// XFS with reflink and rmapbt when the machine allows mounting it.
    Reflink(reflink::ReflinkArgs),
    /// mmap views: bandwidth through a view beside memcpy, and the cost of
    /// copy-on-write store faults beside XFS with reflink when the machine
    /// allows mounting it.
    Views(views::ViewsArgs),
    /// Media errors: the time from a report to every owner handled, for a
    /// block shared by 1, 100 and 10,000 files, and what the reverse map and
    /// the metadata replicas cost on allocating writes and create + fsync.
    Media(media::MediaArgs),
    /// Many threads: getattr, lookup, create + write + fsync and 4 KiB
    /// overwrites with 1, 2 and all cores' threads, each figure beside the
    /// one-thread figure.
    Threads(threads::ThreadsArgs),
    /// daxfs mounted through FUSE beside tmpfs and XFS (reflink, loop
    /// device): the same workloads through system calls, and the FUSE
    /// requests each cost.
    Mount(mount::MountBenchArgs),
}

/// What one run does, from the options.
pub struct Plan {
    pub dir: PathBuf,
    /// Size of the sequential file, a multiple of 1 MiB.
    pub file_bytes: u64,
    pub files: usize,
    pub mount_files: usize,
    /// Untimed operations before each latency measurement.
    pub warm: usize,
    /// Timed operations of each latency measurement.
    pub ops: usize,
    /// Passes of each bandwidth measurement (the best is reported).
    pub passes: usize,
    /// Size of each memcpy buffer.
    pub memcpy_bytes: usize,
    /// Size of the image the device floor is measured on.
    pub floor_bytes: u64,
    /// Timed mounts.
    pub mounts: usize,
    /// daxfs images are made without metadata replicas.
    pub no_replicas: bool,
}

impl Plan {
    fn from_args(a: &BenchArgs) -> Result<Plan> {
        let dir = crate::bench::scratch_dir(&a.dir)?;
        let q = a.quick;
        let size = match &a.size {
            Some(s) => parse_size(s)?,
            None if q => 64 << 20,
            None => 1 << 30,
        };
        let file_bytes = size / workload::CHUNK * workload::CHUNK;
        if file_bytes == 0 {
            bail!("--size must be at least 1m (sequential I/O is in 1 MiB chunks)");
        }
        let files = a.files.unwrap_or(if q { 500 } else { 10_000 });
        let mount_files = a.mount_files.unwrap_or(if q { 2_000 } else { 100_000 });
        if files == 0 || mount_files == 0 {
            bail!("--files and --mount-files must be at least 1");
        }
        Ok(Plan {
            dir,
            file_bytes,
            files,
            mount_files,
            warm: if q { 500 } else { 10_000 },
            ops: if q { 5_000 } else { 100_000 },
            passes: if q { 2 } else { 5 },
            memcpy_bytes: if q { 32 << 20 } else { 256 << 20 },
            floor_bytes: if q { 32 << 20 } else { 256 << 20 },
            mounts: if q { 5 } else { 50 },
            no_replicas: a.no_replicas,
        })
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn persistence() -> String {
    match daxfs_device::detect_flush_instr() {
        Some(i) => daxfs_device::PersistMode::CpuFlush(i).to_string(),
        None => daxfs_device::PersistMode::Msync.to_string(),
    }
}

fn mib(b: u64) -> String {
    format!("{} MiB", b >> 20)
}

/// Runs the benchmark; the exit status is 0 unless something failed.
pub fn run(args: &BenchArgs) -> Result<i32> {
    if let Some(BenchMode::Reflink(a)) = &args.mode {
        return reflink::run(a);
    }
    if let Some(BenchMode::Views(a)) = &args.mode {
        return views::run(a);
    }
    if let Some(BenchMode::Mount(a)) = &args.mode {
        return mount::run(a);
    }
    if let Some(BenchMode::Media(a)) = &args.mode {
        return media::run(a);
    }
    if let Some(BenchMode::Threads(a)) = &args.mode {
        return threads::run(a);
    }
    let plan = Plan::from_args(args)?;
    // The peer is tmpfs in the default directory; elsewhere, whatever file
    // system holds the directory.
    let peer = if plan.dir.starts_with("/dev/shm") {
        "tmpfs via syscalls (pread/pwrite + fdatasync)".to_string()
    } else {
        format!(
            "files in {} via syscalls (pread/pwrite + fdatasync)",
            plan.dir.display()
        )
    };
    let mut r = Report::new(args.json, peer.clone());
    let config = serde_json::json!({
        "dir": plan.dir.display().to_string(),
        "file_bytes": plan.file_bytes,
        "files": plan.files,
        "mount_files": plan.mount_files,
        "quick": args.quick,
        "no_replicas": plan.no_replicas,
        "latency_ops": plan.ops,
        "bandwidth_passes": plan.passes,
        "memcpy_bytes": plan.memcpy_bytes,
        "cpu": cpu_model(),
        "persistence": persistence(),
        "peer": peer,
    });
    r.note(&format!(
        "daxfs bench in {}: {} file, {} small files, {} files for mount; cpu {}; persistence {}{}",
        plan.dir.display(),
        mib(plan.file_bytes),
        plan.files,
        plan.mount_files,
        cpu_model(),
        persistence(),
        if plan.no_replicas {
            "; daxfs without metadata replicas"
        } else {
            ""
        }
    ));
    r.note(&format!(
        "bandwidth: best of {} passes, GB/s = 10^9 bytes/s; latency: {} timed ops after {} untimed",
        plan.passes, plan.ops, plan.warm
    ));

    // Machine limits.
    let m = "machine";
    let (src, mut dst) = machine::faulted_buffers(plan.memcpy_bytes);
    let bw = machine::memcpy_bandwidth(&src, &mut dst, plan.passes + 2)?;
    drop(dst);
    let read_1m = machine::memcpy_read_1m(&src, plan.passes + 2)?;
    let mc = machine::memcpy_4k(&src, &plan)?;
    drop(src);
    let memcpy_bw = r.add(Figure::new(
        "memcpy_bw",
        m,
        format!(
            "memcpy bandwidth ({} buffers)",
            mib(plan.memcpy_bytes as u64)
        ),
        bw,
        "GB/s",
    ));
    let memcpy_read_1m = r.add(
        Figure::new(
            "memcpy_read_1m_bw",
            m,
            "memcpy 1 MiB chunks into one buffer",
            read_1m,
            "GB/s",
        )
        .ratio(r.get(memcpy_bw)),
    );
    let fl = machine::device_floor(&plan)?;
    let persist_write_1m = r.add(
        Figure::new(
            "persist_write_1m_bw",
            m,
            "device write 1 MiB chunks + persist",
            fl.write_1m,
            "GB/s",
        )
        .ratio(r.get(memcpy_bw)),
    );
    let memcpy_p50 = r.add(Figure::new(
        "memcpy_4k_p50",
        m,
        "memcpy 4 KiB from random offsets, p50",
        mc.p50(),
        "us",
    ));
    let memcpy_p99 = r.add(Figure::new(
        "memcpy_4k_p99",
        m,
        "memcpy 4 KiB from random offsets, p99",
        mc.p99(),
        "us",
    ));
    let persist_p50 = r.add(Figure::new(
        "persist_4k_p50",
        m,
        "device write 4 KiB + persist, p50",
        fl.write_4k.p50(),
        "us",
    ));
    let persist_p99 = r.add(Figure::new(
        "persist_4k_p99",
        m,
        "device write 4 KiB + persist, p99",
        fl.write_4k.p99(),
        "us",
    ));

    // daxfs.
    let d = "daxfs";
    let refs = Refs {
        memcpy_bw,
        memcpy_read_1m,
        persist_write_1m,
        memcpy_p50,
        memcpy_p99,
        persist_p50,
        persist_p99,
    };
    let (ff, small) = dax::files(&plan)?;
    file_figures(&mut r, d, &ff, refs, true);
    small_figures(&mut r, d, &small, refs);
    let mf = dax::mount(&plan)?;
    let n = plan.mount_files;
    r.add(Figure::new(
        "daxfs_create_empty_p50",
        d,
        "create empty file (filling for mount), p50",
        mf.create_empty.p50(),
        "us",
    ));
    r.add(
        Figure::new(
            "daxfs_mount",
            d,
            format!("mount, {n} files, p50"),
            mf.mount.p50_ms(),
            "ms",
        )
        .target(Target::AtMost(10.0)),
    );
    r.add(Figure::new(
        "daxfs_mount_stat",
        d,
        format!("mount + first stat, {n} files, p50"),
        mf.mount_stat.p50_ms(),
        "ms",
    ));
    r.add(Figure::new(
        "daxfs_open_mount_stat",
        d,
        "map image + mount + first stat, p50",
        mf.open_mount_stat.p50_ms(),
        "ms",
    ));

    // The peer.
    let p = "peer";
    let pf = peer::files(&plan)?;
    file_figures(&mut r, p, &pf, refs, false);
    let ps = peer::small_files(&plan)?;
    small_figures(&mut r, p, &ps, refs);

    r.finish(&config);
    Ok(0)
}

/// Indexes (in the report) of the machine limits other figures are
/// compared with.
#[derive(Clone, Copy)]
struct Refs {
    memcpy_bw: usize,
    memcpy_read_1m: usize,
    persist_write_1m: usize,
    memcpy_p50: usize,
    memcpy_p99: usize,
    persist_p50: usize,
    persist_p99: usize,
}

/// The figures of the file workloads, with their targets when `targets`.
fn file_figures(
    r: &mut Report,
    group: &'static str,
    f: &workload::FileFigures,
    refs: Refs,
    targets: bool,
) {
    let size = mib(f.bytes);
    let rows = [
        (
            "seq_write",
            format!("seq write 1 MiB, new {size} file + fsync"),
            f.write,
            "GB/s",
            refs.persist_write_1m,
            None,
        ),
        (
            "seq_overwrite",
            format!("seq overwrite 1 MiB, {size} file + fsync"),
            f.overwrite,
            "GB/s",
            refs.persist_write_1m,
            None,
        ),
        (
            "seq_read",
            format!("seq read 1 MiB, {size} file"),
            f.read,
            "GB/s",
            refs.memcpy_read_1m,
            Some(Target::RatioAtLeast(0.80)),
        ),
        (
            "rand_overwrite_4k_p50",
            "4 KiB random overwrite, durable, p50".into(),
            f.rand_overwrite.p50(),
            "us",
            refs.persist_p50,
            Some(Target::AtMost(1.0)),
        ),
        (
            "rand_overwrite_4k_p99",
            "4 KiB random overwrite, durable, p99".into(),
            f.rand_overwrite.p99(),
            "us",
            refs.persist_p99,
            None,
        ),
        (
            "rand_read_4k_p50",
            "4 KiB random read, p50".into(),
            f.rand_read.p50(),
            "us",
            refs.memcpy_p50,
            None,
        ),
        (
            "rand_read_4k_p99",
            "4 KiB random read, p99".into(),
            f.rand_read.p99(),
            "us",
            refs.memcpy_p99,
            None,
        ),
    ];
    for (name, label, value, unit, pattern, target) in rows {
        let mut fig = Figure::new(format!("{group}_{name}"), group, label, value, unit);
        // Bandwidth is compared with whole-buffer memcpy first (the limit
        // the targets are stated against), then with the copy of the same
        // pattern; latency only with its pattern.
        if unit == "GB/s" {
            fig = fig.ratio(r.get(refs.memcpy_bw));
        }
        fig = fig.ratio(r.get(pattern));
        if let (true, Some(t)) = (targets, target) {
            fig = fig.target(t);
        }
        r.add(fig);
    }
}

/// The small-file figures: each file's latency compared with a durable
/// 4 KiB device write, and the time for all of them.
fn small_figures(r: &mut Report, group: &'static str, s: &stats::Samples, refs: Refs) {
    let what = "create+write 4 KiB+fsync+close";
    for (name, pct, value, to) in [
        ("small_file_p50", "p50", s.p50(), refs.persist_p50),
        ("small_file_p99", "p99", s.p99(), refs.persist_p99),
    ] {
        let fig = Figure::new(
            format!("{group}_{name}"),
            group,
            format!("{what}, {pct}"),
            value,
            "us",
        )
        .ratio(r.get(to));
        r.add(fig);
    }
    r.add(Figure::new(
        format!("{group}_small_files_total"),
        group,
        format!("{what}, {} files", s.count()),
        s.total_ms(),
        "ms",
    ));
}

/// The directory a benchmark makes its images in: the one given, else
/// /dev/shm where the machine has it, else the system's temporary directory.
pub(crate) fn scratch_dir(given: &Option<PathBuf>) -> Result<PathBuf> {
    let dir = match given {
        Some(d) => d.clone(),
        None if Path::new("/dev/shm").is_dir() => PathBuf::from("/dev/shm"),
        None => std::env::temp_dir(),
    };
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    Ok(dir)
}
