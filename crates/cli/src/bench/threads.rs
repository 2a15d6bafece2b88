//! `daxfs bench threads`: how the engine's throughput grows with threads.
//!
//! Each workload runs with 1 thread, 2 threads and as many threads as the
//! machine has cores, all on one mounted image, every thread for the same
//! time; the figure is the operations per second of all threads together,
//! and each is shown as a ratio to the one-thread figure of its workload:
//!
//! - `getattr` of random existing files (by inode number);
//! - `lookup` of random names in directories of files;
//! - create + write 4 KiB + fsync, each thread in a directory of its own;
//! - the same, every thread in one shared directory;
//! - 4 KiB overwrites at random places, each thread in a file of its own.
//!
//! First, the same thread counts run a loop over memory of each thread's
//! own (a 32 KiB buffer, no file system): how far the machine lets work
//! that shares nothing grow with threads (a shared VM's other tenants and
//! CPU frequency limits show there). Its ratio is printed beside those of
//! getattr and lookup: the honest yardstick for them.
//!
//! The targets (getattr and lookup with 2 threads at least 1.8 times one)
//! are informational and never change the exit status.
use super::report::{Figure, Report, Target};
use super::stats::Scratch;
use anyhow::{Context, Result, bail};
use daxfs::{Fs, MkfsOptions, MountOptions};
use daxfs_device::{Device, MmapDevice};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
const BS: usize = 4096;

/// Options of `daxfs bench threads`.
#[derive(clap::Args, Debug)]
pub struct ThreadsArgs {
    /// Directory for the image [default: /dev/shm, else the system's
    /// temporary directory].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Files the getattr and lookup workloads pick from [default: 20000;
    /// 1000 with --quick].
    #[arg(long)]
    files: Option<usize>,
    /// Milliseconds each workload runs for each thread count [default:
    /// 1000; 150 with --quick].
    #[arg(long)]
    ms: Option<u64>,
    /// Largest thread count [default: the machine's core count].
    #[arg(long)]
    threads: Option<usize>,
    /// Small sizes and short runs: a smoke run of a few seconds.
    #[arg(long)]
    quick: bool,
    /// Print one JSON document instead of a table.
    #[arg(long)]
    json: bool,
}

/// Files per directory of the read workloads.
const PER_DIR: usize = 500;

/// A small fast random number generator (xorshift), one per thread.
struct Rng(u64);

impl Rng {
    /// A number in `0..n`.
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
}

thread_local! {
    /// The ceiling workload's memory, each thread's own.
    static OWN: std::cell::RefCell<Vec<u64>> = std::cell::RefCell::new(vec![1; 4096]);
}

/// The ceiling workload's step: 64 random reads and writes of the calling
/// thread's own 32 KiB.
fn own_memory_step(rng: &mut Rng) {
    OWN.with(|b| {
        let mut b = b.borrow_mut();
        let mut acc = 0u64;
        for _ in 0..64 {
            let i = rng.below(b.len());
            acc = acc.wrapping_add(b[i]);
            b[i] = acc;
        }
        std::hint::black_box(acc);
    });
}

/// A workload: what thread `t` does the `n`th time.
type Op<'a> = dyn Fn(usize, u64, &mut Rng) -> Result<()> + Sync + 'a;

/// Runs `op` on `threads` threads for `dur` each, started together; returns
/// the operations per second of all of them.
fn run_threads(threads: usize, dur: Duration, op: &Op<'_>) -> Result<f64> {
    let barrier = Barrier::new(threads + 1);
    let stop = AtomicBool::new(false);
    let (counts, elapsed) = std::thread::scope(|s| -> Result<(Vec<u64>, f64)> {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let (barrier, stop) = (&barrier, &stop);
                s.spawn(move || -> Result<u64> {
                    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (t as u64 + 1));
                    barrier.wait();
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        op(t, n, &mut rng)?;
                        n += 1;
                    }
                    Ok(n)
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        std::thread::sleep(dur);
        stop.store(true, Ordering::Relaxed);
        let mut counts = vec![];
        for h in hs {
            counts.push(
                h.join()
                    .map_err(|_| anyhow::anyhow!("a thread panicked"))??,
            );
        }
        Ok((counts, start.elapsed().as_secs_f64()))
    })?;
    Ok(counts.iter().sum::<u64>() as f64 / elapsed)
}

fn make(dir: &Path, scratch: &Scratch, bytes: u64) -> Result<Fs> {
    {
        use std::io::Write;
        let mut f = std::fs::File::create_new(scratch.path())
            .with_context(|| format!("creating {}", scratch.path().display()))?;
        let zeros = vec![0u8; MIB as usize];
        for _ in 0..bytes / MIB {
            f.write_all(&zeros)?;
        }
    }
    let _ = dir;
    let dev: Arc<dyn Device> = Arc::new(
        MmapDevice::open(scratch.path(), super::dax::dev_opts().populate(true))
            .with_context(|| format!("opening {}", scratch.path().display()))?,
    );
    Fs::mkfs(dev.clone(), &MkfsOptions::default())?;
    Ok(Fs::mount(dev, &MountOptions::default())?)
}

pub fn run(a: &ThreadsArgs) -> Result<i32> {
    let dir = crate::bench::scratch_dir(&a.dir)?;
    let q = a.quick;
    let files = a.files.unwrap_or(if q { 1000 } else { 20_000 });
    if files == 0 {
        bail!("--files must be at least 1");
    }
    let dur = Duration::from_millis(a.ms.unwrap_or(if q { 150 } else { 1000 }).max(1));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let most = a.threads.unwrap_or(cores);
    if most == 0 {
        bail!("--threads must be at least 1");
    }
    let mut counts = vec![1, 2.min(most), most];
    counts.dedup();
    let json = a.json;
    let mut rep = Report::new(json, String::new());
    rep.note(&format!(
        "daxfs bench threads in {}: {cores} cores; threads {counts:?}; {} ms per workload and thread count; {files} files to read",
        dir.display(),
        dur.as_millis()
    ));
    let scratch = Scratch::new(&dir, "threads");
    // Room for the files read, the files created (each run removes its
    // own) and the files overwritten.
    let bytes = (((files as u64) * 2 * BS as u64 + 64 * MIB) * 2).div_ceil(MIB) * MIB
        + (most as u64) * 4 * MIB
        + if q { 0 } else { 512 * MIB };
    let fs = make(&dir, &scratch, bytes)?;
    let root = fs.root_ino();
    // The files the read workloads pick from.
    let mut dirs = vec![];
    let mut inos = vec![];
    for i in 0..files {
        if i % PER_DIR == 0 {
            dirs.push(fs.mkdir_at(root, format!("r{}", i / PER_DIR), 0o755)?.ino);
        }
        let d = dirs[i / PER_DIR];
        let f = fs.create_at(d, format!("f{i}"), 0o644, &daxfs::OpenOptions::create())?;
        inos.push(f.stat().ino);
    }
    fs.sync()?;
    // The files the overwrite workload writes, one per thread.
    let block = vec![0x5au8; BS];
    let file_blocks = if q { 256 } else { 1024 };
    let mut owned = vec![];
    for t in 0..most {
        let f = fs.create(format!("/w{t}"))?;
        for b in 0..file_blocks {
            f.write_at((b * BS) as u64, &block)?;
        }
        f.fsync()?;
        owned.push(f);
    }
    type Workload<'a> = (&'a str, &'a str, Option<f64>, Box<Op<'a>>);
    let shared = fs.mkdir("/shared", 0o755).map(|_| fs.stat("/shared"))??.ino;
    let mut own_dirs = vec![];
    for t in 0..most {
        fs.mkdir(format!("/own{t}"), 0o755)?;
        own_dirs.push(fs.stat(format!("/own{t}"))?.ino);
    }
    let (fs_r, inos_r, dirs_r) = (&fs, &inos, &dirs);
    let create = move |d: u64, t: usize, n: u64| -> Result<()> {
        let f = fs_r.create_at(d, format!("c{t}_{n}"), 0o644, &daxfs::OpenOptions::create())?;
        f.write_at(0, &[7u8; BS])?;
        f.fsync()?;
        Ok(())
    };
    let own_r = &own_dirs;
    let owned_r = &owned;
    let workloads: Vec<Workload<'_>> = vec![
        (
            "ceiling",
            "memory of each thread's own, no file system (the machine's ceiling)",
            None,
            Box::new(move |_, _, rng| {
                own_memory_step(rng);
                Ok(())
            }),
        ),
        (
            "getattr",
            "getattr of a random file",
            Some(1.8),
            Box::new(move |_, _, rng| {
                let ino = inos_r[rng.below(inos_r.len())];
                std::hint::black_box(fs_r.getattr(ino)?);
                Ok(())
            }),
        ),
        (
            "lookup",
            "lookup of a random name",
            Some(1.8),
            Box::new(move |_, _, rng| {
                let i = rng.below(inos_r.len());
                let d = dirs_r[i / PER_DIR];
                std::hint::black_box(fs_r.lookup(d, format!("f{i}"))?);
                Ok(())
            }),
        ),
        (
            "create_own_dir",
            "create + write 4 KiB + fsync, a directory each",
            None,
            Box::new(move |t, n, _| create(own_r[t], t, n)),
        ),
        (
            "create_shared_dir",
            "create + write 4 KiB + fsync, one directory",
            None,
            Box::new(move |t, n, _| create(shared, t, n)),
        ),
        (
            "overwrite_4k",
            "4 KiB overwrite at random, a file each",
            None,
            Box::new(move |t, _, rng| {
                let b = rng.below(file_blocks);
                owned_r[t].write_at((b * BS) as u64, &block)?;
                Ok(())
            }),
        ),
    ];
    let mut config_figs = vec![];
    // Each workload's ratio of 2 threads to 1.
    let mut twos: Vec<(String, f64)> = vec![];
    for (name, label, target, op) in &workloads {
        let mut one: Option<Figure> = None;
        for &t in &counts {
            let rate = run_threads(t, dur, &**op)?;
            // The files a create run made go before the next run.
            if name.starts_with("create") {
                for d in std::iter::once(shared).chain(own_dirs.iter().copied()) {
                    for e in fs.readdir_ino(d, 0, usize::MAX)? {
                        if e.name != b"." && e.name != b".." {
                            fs.unlink_at(d, &e.name)?;
                        }
                    }
                }
            }
            let mut f = Figure::new(
                format!("{name}_{t}t"),
                "daxfs",
                format!("{label}, {t} thread{}", if t == 1 { "" } else { "s" }),
                rate / 1e3,
                "kop/s",
            );
            match &one {
                None => {
                    one = Some(Figure::new(
                        format!("{name}_1t"),
                        "daxfs",
                        "",
                        f.value,
                        "kop/s",
                    ))
                }
                Some(o) => {
                    f = f.ratio(o);
                    if t == 2 {
                        twos.push((name.to_string(), f.value / o.value.max(f64::MIN_POSITIVE)));
                    }
                    if t == 2
                        && let Some(r) = target
                    {
                        f = f.target(Target::RatioAtLeast(*r));
                    }
                }
            }
            rep.add(f);
        }
        config_figs.push(name.to_string());
    }
    drop(workloads);
    let two = |n: &str| twos.iter().find(|(w, _)| w == n).map(|&(_, r)| r);
    let ceiling = two("ceiling");
    if let Some(c) = ceiling {
        let of = |n: &str| {
            two(n).map_or("-".to_string(), |r| {
                format!("{r:.2}x ({:.0}% of the ceiling)", 100.0 * r / c)
            })
        };
        rep.note(&format!(
            "\n2 threads against 1: the machine's ceiling {c:.2}x; getattr {}; lookup {}",
            of("getattr"),
            of("lookup")
        ));
    }
    drop(owned);
    drop(fs);
    rep.finish(&serde_json::json!({
        "dir": dir.display().to_string(),
        "cores": cores,
        "threads": counts,
        "ms": dur.as_millis() as u64,
        "files": files,
        "quick": q,
        "workloads": config_figs,
        "ceiling_ratio_2t": ceiling,
    }));
    Ok(0)
}
