//! `daxfs bench mount`: the same workloads through system calls on daxfs
//! mounted through FUSE, on a tmpfs, and on XFS with reflink on a loop
//! device over a file in the benchmark directory, with the FUSE requests
//! each workload cost on daxfs (count, and the daemon's time, by kind).
//!
//! The daxfs mount is served in this process by the same daemon and the
//! same options `daxfs mount` uses by default (2 threads, 1 s attribute and
//! entry timeouts), so its request counters can be read between workloads.
//! Everything mounted is unmounted on the way out, on errors and on
//! SIGINT, SIGTERM or SIGHUP too (the workload in progress stops).
use super::machine;
use super::report::{Figure, Report, Target};
use super::stats::{Rng, Scratch, best_gbps, sample};
use crate::args::parse_size;
use anyhow::{Context, Result, bail};
use daxfs::{Fs, MkfsOptions, MountOptions};
use daxfs_device::{Device, MmapDevice};
use daxfs_mount::{KindStats, MountConfig, Mounted};
use nix::sys::signal::{SigSet, Signal};
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Options of `daxfs bench mount`.
#[derive(clap::Args, Debug)]
pub struct MountBenchArgs {
    /// Directory for the daxfs image and XFS's backing file [default:
    /// /dev/shm, else the system's temporary directory].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Size of the sequentially written, read and copied file: k, m, g
    /// suffixes [default: 1g; 64m with --quick].
    #[arg(long)]
    size: Option<String>,
    /// Files created + fsync'ed, and files in the copied tree [default:
    /// 10000; 300 with --quick].
    #[arg(long)]
    files: Option<usize>,
    /// Files stat'ed [default: 100000; 2000 with --quick].
    #[arg(long)]
    stat_files: Option<usize>,
    /// Small sizes: a smoke run of a few seconds.
    #[arg(long)]
    quick: bool,
    /// Skip the XFS peer.
    #[arg(long)]
    no_xfs: bool,
}

const MIB: u64 = 1 << 20;
const K4: u64 = 4096;

struct Plan {
    dir: PathBuf,
    bytes: u64,
    files: usize,
    stat_files: usize,
    rand_ops: usize,
    memcpy_bytes: usize,
}

static STOP: AtomicBool = AtomicBool::new(false);

fn check() -> Result<()> {
    if STOP.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

/// One workload's result on one file system.
struct Measured {
    value: f64,
    /// The FUSE requests it cost (daxfs only).
    requests: Option<Vec<KindStats>>,
    /// Its wall time, seconds.
    wall: f64,
}

/// The workloads, in the order they run: name, label, unit.
const WORK: [(&str, &str, &str); 8] = [
    ("seq_write", "seq write 1 MiB + fsync", "GB/s"),
    ("seq_read", "seq read 1 MiB (reopened)", "GB/s"),
    ("rand_read_4k", "4 KiB random read, p50", "us"),
    ("rand_write_4k", "4 KiB random write + fdatasync, p50", "us"),
    ("create_fsync", "create + write 4 KiB + fsync, mean", "us"),
    ("stat", "stat, mean", "us"),
    ("cp_file", "cp of the big file", "ms"),
    ("cp_tree", "cp -r of a tree of small files", "ms"),
];

/// A file system under test: its root and, for daxfs, its counters.
struct Side<'a> {
    root: &'a Path,
    stats: Option<Arc<daxfs_mount::RequestStats>>,
}

impl Side<'_> {
    fn measure(&self, f: impl FnOnce() -> Result<f64>) -> Result<Measured> {
        check()?;
        let before = self.stats.as_ref().map(|s| s.snapshot());
        let t = Instant::now();
        let value = f()?;
        let wall = t.elapsed().as_secs_f64();
        let requests = self.stats.as_ref().zip(before).map(|(s, b)| s.since(&b));
        Ok(Measured {
            value,
            requests,
            wall,
        })
    }
}

fn cp(args: &[&Path]) -> Result<()> {
    let out = Command::new("cp")
        .args(args)
        .output()
        .context("running cp")?;
    if !out.status.success() {
        bail!(
            "cp failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs every workload of [`WORK`] on `side`, in order.
fn workloads(plan: &Plan, side: &Side, ttl: Duration) -> Result<Vec<Measured>> {
    let root = side.root;
    let big = root.join("big");
    let chunk = vec![0x5au8; MIB as usize];
    let mut out = vec![];
    out.push(side.measure(|| {
        let mut f = File::create_new(&big)?;
        best_gbps(1, plan.bytes, |_| {
            for _ in 0..plan.bytes / MIB {
                check()?;
                f.write_all(&chunk)?;
            }
            f.sync_all()?;
            Ok(())
        })
    })?);
    out.push(side.measure(|| {
        let mut f = File::open(&big)?;
        let mut buf = vec![0u8; MIB as usize];
        best_gbps(1, plan.bytes, |_| {
            for _ in 0..plan.bytes / MIB {
                check()?;
                f.read_exact(&mut buf)?;
            }
            Ok(())
        })
    })?);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&big)?;
    let per = plan.rand_ops / 10 + plan.rand_ops;
    let offs = Rng::new(0x44).offsets(per * 2, plan.bytes, K4);
    let mut buf = vec![0u8; K4 as usize];
    out.push(side.measure(|| {
        let s = sample(plan.rand_ops / 10, plan.rand_ops, |i| {
            Ok(f.read_exact_at(&mut buf, offs[i])?)
        })?;
        Ok(s.p50())
    })?);
    let data = vec![0xa5u8; K4 as usize];
    out.push(side.measure(|| {
        let s = sample(plan.rand_ops / 10, plan.rand_ops, |i| {
            check()?;
            f.write_all_at(&data, offs[per + i])?;
            Ok(f.sync_data()?)
        })?;
        Ok(s.p50())
    })?);
    drop(f);
    let small = root.join("small");
    std::fs::create_dir(&small)?;
    out.push(side.measure(|| {
        let s = sample(0, plan.files, |i| {
            check()?;
            let mut f = File::create_new(small.join(format!("f{i:06}")))?;
            f.write_all(&data)?;
            Ok(f.sync_all()?)
        })?;
        Ok(s.mean_us())
    })?);
    // Files to stat, made untimed; the stat pass starts once the kernel's
    // cached names and attributes of them have expired, so on daxfs every
    // stat reaches the daemon.
    let many = root.join("many");
    std::fs::create_dir(&many)?;
    for i in 0..plan.stat_files {
        check()?;
        File::create_new(many.join(format!("s{i:07}")))?;
    }
    std::thread::sleep(ttl + Duration::from_millis(100));
    out.push(side.measure(|| {
        let names: Vec<_> = (0..plan.stat_files)
            .map(|i| many.join(format!("s{i:07}")))
            .collect();
        let t = Instant::now();
        for n in &names {
            check()?;
            std::fs::metadata(n)?;
        }
        Ok(t.elapsed().as_secs_f64() * 1e6 / plan.stat_files as f64)
    })?);
    out.push(side.measure(|| {
        let t = Instant::now();
        cp(&[&big, &root.join("big.cp")])?;
        Ok(t.elapsed().as_secs_f64() * 1e3)
    })?);
    let tree = root.join("tree");
    std::fs::create_dir(&tree)?;
    let per_dir = 100;
    for i in 0..plan.files {
        check()?;
        let d = tree.join(format!("d{:04}", i / per_dir));
        if i % per_dir == 0 {
            std::fs::create_dir(&d)?;
        }
        std::fs::write(d.join(format!("f{i:06}")), &data)?;
    }
    out.push(side.measure(|| {
        let t = Instant::now();
        cp(&[Path::new("-r"), &tree, &root.join("tree.cp")])?;
        Ok(t.elapsed().as_secs_f64() * 1e3)
    })?);
    Ok(out)
}

/// Runs a program; an error with its stderr when it fails.
fn run_tool(prog: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(prog)
        .args(args)
        .output()
        .with_context(|| format!("running {prog}"))?;
    if !out.status.success() {
        bail!(
            "{prog} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A mount point made for the run: unmounted (if mounted) and removed when
/// dropped, never recursively.
struct MountDir {
    dir: PathBuf,
    mounted: bool,
}

impl MountDir {
    fn new(what: &str) -> Result<MountDir> {
        let dir = std::env::temp_dir().join(format!("daxfs-bench-{}-{what}", std::process::id()));
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(MountDir {
            dir,
            mounted: false,
        })
    }
}

impl Drop for MountDir {
    fn drop(&mut self) {
        if self.mounted {
            let d = self.dir.to_string_lossy().into_owned();
            let mut ok = false;
            for _ in 0..20 {
                if run_tool("umount", &[&d]).is_ok() {
                    ok = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if !ok && let Err(e) = run_tool("umount", &["-l", &d]) {
                eprintln!("warning: could not unmount {d}: {e}");
            }
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// An attached loop device, detached when dropped.
struct Loop(String);

impl Drop for Loop {
    fn drop(&mut self) {
        if let Err(e) = run_tool("losetup", &["-d", &self.0]) {
            eprintln!("warning: could not detach {}: {e}", self.0);
        }
    }
}

fn on_tmpfs(plan: &Plan) -> Result<Vec<Measured>> {
    let mut m = MountDir::new("tmpfs")?;
    let d = m.dir.to_string_lossy().into_owned();
    let size = format!("size={}", plan.bytes * 3 + (1 << 30));
    run_tool("mount", &["-t", "tmpfs", "-o", &size, "tmpfs", &d])?;
    m.mounted = true;
    workloads(
        plan,
        &Side {
            root: &m.dir,
            stats: None,
        },
        Duration::ZERO,
    )
}

/// XFS with reflink on a loop device, or why the machine does not allow it.
fn on_xfs(plan: &Plan) -> std::result::Result<Result<Vec<Measured>>, String> {
    if !rustix::process::geteuid().is_root() {
        return Err("needs root to attach a loop device and mount it".into());
    }
    if Command::new("mkfs.xfs").arg("-V").output().is_err() {
        return Err("mkfs.xfs not installed (apt-get install xfsprogs)".into());
    }
    let image = Scratch::new(&plan.dir, "mount-xfs.img");
    let setup = |e: anyhow::Error| format!("{e:#}");
    File::create_new(image.path())
        .and_then(|f| f.set_len((plan.bytes * 3 + (1 << 30)).max(4 << 30)))
        .with_context(|| format!("creating {}", image.path().display()))
        .map_err(setup)?;
    let img = image.path().to_string_lossy().into_owned();
    let lo = Loop(run_tool("losetup", &["-f", "--show", &img]).map_err(setup)?);
    run_tool("mkfs.xfs", &["-q", "-f", "-K", "-m", "reflink=1", &lo.0]).map_err(setup)?;
    let mut m = MountDir::new("xfs").map_err(setup)?;
    let d = m.dir.to_string_lossy().into_owned();
    run_tool("mount", &["-t", "xfs", &lo.0, &d]).map_err(setup)?;
    m.mounted = true;
    let r = workloads(
        plan,
        &Side {
            root: &m.dir,
            stats: None,
        },
        Duration::ZERO,
    );
    drop(m);
    drop(lo);
    drop(image);
    Ok(r)
}

fn on_daxfs(plan: &Plan) -> Result<Vec<Measured>> {
    if !Path::new("/dev/fuse").exists() {
        bail!("/dev/fuse is missing: load the fuse module (modprobe fuse)");
    }
    let image = Scratch::new(&plan.dir, "mount.img");
    // The big file, its copy (shared blocks), the random writes' copies,
    // and the small files, with room to spare.
    let size = (plan.bytes * 2 + (plan.files as u64 * 3 + plan.stat_files as u64) * 8192)
        .max(256 * MIB)
        .div_ceil(2 * MIB)
        * (2 * MIB)
        + (512 * MIB);
    let dev: Arc<dyn Device> = Arc::new(
        MmapDevice::create(image.path(), size, super::dax::dev_opts())
            .with_context(|| format!("creating {}", image.path().display()))?,
    );
    Fs::mkfs(dev.clone(), &MkfsOptions::default())?;
    let fs = Arc::new(Fs::mount(dev, &MountOptions::default())?);
    let m = MountDir::new("daxfs")?;
    let cfg = MountConfig {
        fsname: image.path().display().to_string(),
        ..MountConfig::default()
    };
    let ttl = cfg.attr_ttl.max(cfg.entry_ttl);
    let mounted: Mounted = daxfs_mount::spawn(fs.clone(), &m.dir, &cfg)
        .with_context(|| format!("FUSE mount on {}", m.dir.display()))?;
    let r = workloads(
        plan,
        &Side {
            root: &m.dir,
            stats: Some(mounted.request_stats()),
        },
        ttl,
    );
    let u = mounted.unmount();
    drop(m);
    let r = r?;
    u.context("unmounting the FUSE mount")?;
    match Arc::try_unwrap(fs) {
        Ok(fs) => fs.unmount().context("unmounting daxfs")?,
        Err(_) => bail!("the file system is still in use after the unmount"),
    }
    Ok(r)
}

/// Where a workload's time went in FUSE requests, one line.
fn requests_line(m: &Measured) -> Option<String> {
    let reqs = m.requests.as_ref()?;
    let mut reqs = reqs.clone();
    reqs.sort_by_key(|k| std::cmp::Reverse(k.nanos));
    let daemon: u64 = reqs.iter().map(|k| k.nanos).sum();
    let parts: Vec<String> = reqs
        .iter()
        .take(5)
        .map(|k| {
            let each = k.nanos as f64 / k.count as f64 / 1e3;
            let size = if k.bytes > 0 {
                format!(", {:.0} KiB each", k.bytes as f64 / k.count as f64 / 1024.0)
            } else {
                String::new()
            };
            format!("{} {} x {each:.1} µs{size}", k.kind, k.count)
        })
        .collect();
    Some(format!(
        "      FUSE: {}; daemon {:.0}% of {:.3} s",
        parts.join(", "),
        daemon as f64 / 1e9 / m.wall.max(1e-9) * 100.0,
        m.wall
    ))
}

/// Runs the benchmark.
pub fn run(a: &MountBenchArgs) -> Result<i32> {
    let dir = crate::bench::scratch_dir(&a.dir)?;
    let q = a.quick;
    let bytes = match &a.size {
        Some(s) => parse_size(s)?,
        None if q => 64 * MIB,
        None => 1 << 30,
    } / MIB
        * MIB;
    if bytes == 0 {
        bail!("--size must be at least 1m (sequential I/O is in 1 MiB chunks)");
    }
    let files = a.files.unwrap_or(if q { 300 } else { 10_000 });
    let stat_files = a.stat_files.unwrap_or(if q { 2_000 } else { 100_000 });
    if files == 0 || stat_files == 0 {
        bail!("--files and --stat-files must be at least 1");
    }
    if !rustix::process::geteuid().is_root() {
        bail!("needs root: it mounts daxfs, a tmpfs and XFS");
    }
    let plan = Plan {
        dir,
        bytes,
        files,
        stat_files,
        rand_ops: if q { 2_000 } else { 20_000 },
        memcpy_bytes: if q { 32 << 20 } else { 256 << 20 },
    };
    // Signals wait for this thread; the mounts' threads inherit the mask.
    let mut sigs = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        sigs.add(s);
    }
    sigs.thread_block().context("blocking signals")?;
    std::thread::Builder::new()
        .name("bench-signals".into())
        .spawn(move || {
            if sigs.wait().is_ok() {
                STOP.store(true, Ordering::Relaxed);
            }
        })?;

    let mut r = Report::new(false, String::new());
    r.note(&format!(
        "daxfs bench mount in {}: {} MiB file, {} files created + fsync'ed and copied, {} stat'ed; cpu {}; load {}",
        plan.dir.display(),
        plan.bytes >> 20,
        plan.files,
        plan.stat_files,
        super::cpu_model(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    ));
    let (src, mut dst) = machine::faulted_buffers(plan.memcpy_bytes);
    let bw = machine::memcpy_bandwidth(&src, &mut dst, 4)?;
    drop((src, dst));
    let memcpy = r.add(Figure::new(
        "memcpy_bw",
        "machine",
        "memcpy bandwidth",
        bw,
        "GB/s",
    ));

    let tmpfs = on_tmpfs(&plan).context("tmpfs")?;
    let tmpfs_ix: Vec<usize> = WORK
        .iter()
        .zip(&tmpfs)
        .map(|((n, l, u), m)| r.add(Figure::new(format!("tmpfs_{n}"), "tmpfs", *l, m.value, u)))
        .collect();
    let xfs = if a.no_xfs {
        Err("--no-xfs".to_string())
    } else {
        on_xfs(&plan)
    };
    let xfs_ix: Option<Vec<usize>> = match xfs {
        Ok(m) => {
            let m = m.context("XFS")?;
            Some(
                WORK.iter()
                    .zip(&m)
                    .map(|((n, l, u), m)| {
                        r.add(Figure::new(format!("xfs_{n}"), "xfs", *l, m.value, u))
                    })
                    .collect(),
            )
        }
        Err(why) => {
            println!("\nxfs (reflink, loop device): skipped: {why}");
            None
        }
    };
    let dax = on_daxfs(&plan).context("daxfs")?;
    for (i, ((n, l, u), m)) in WORK.iter().zip(&dax).enumerate() {
        let mut f = Figure::new(format!("daxfs_{n}"), "daxfs (FUSE)", *l, m.value, u);
        let ahead_of_xfs = matches!(*n, "create_fsync" | "rand_write_4k" | "cp_file" | "cp_tree");
        let to_t = r.get(tmpfs_ix[i]);
        let to_x = xfs_ix.as_ref().map(|x| r.get(x[i]));
        if ahead_of_xfs && let Some(x) = to_x {
            f = f.ratio(x).ratio(to_t).target(Target::RatioAtMost(1.0));
        } else {
            f = f.ratio(to_t);
            if let Some(x) = to_x {
                f = f.ratio(x);
            }
            if *u == "GB/s" {
                f = f.ratio(r.get(memcpy)).target(Target::RatioAtLeast(0.5));
            }
        }
        let line = requests_line(m);
        r.add(f);
        if let Some(line) = line {
            println!("{line}");
        }
    }
    println!(
        "\nratios of times (µs, ms): below 1 is faster; of bandwidth (GB/s): above 1 is faster"
    );
    Ok(0)
}
