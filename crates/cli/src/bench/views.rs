//! `daxfs bench views`: mmap views of daxfs files. Load and store bandwidth
//! through a view next to memcpy of the same pages through the device's own
//! mapping (the target's reference: the same memory, so only what the view
//! adds shows) and next to memcpy between ordinary buffers; the cost of the store faults daxfs
//! resolves (copy on write of a shared 4 KiB page and of a 2 MiB extent,
//! filling a hole, and the round trip of a fault that needs no copy); and
//! the same copy-on-write store on XFS with reflink (an mmap of a cloned
//! file on a loop device, through the page cache) where the machine allows
//! it. The targets are informational and never change the exit status.
use super::fault_floor::{self, Floor};
use super::machine::{faulted_buffers, memcpy_bandwidth};
use super::report::{Figure, Report, Target};
use super::stats::{Samples, Scratch, best_gbps};
use crate::args::parse_size;
use anyhow::{Context, Result, bail};
use daxfs::{Access, File, Fs, MkfsOptions, MountOptions, View};
use daxfs_device::{Device, MmapDevice};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

const BS: u64 = 4096;
const HUGE: u64 = 2 << 20;

/// Options of `daxfs bench views`.
#[derive(clap::Args, Debug)]
pub struct ViewsArgs {
    /// Directory for the images [default: /dev/shm, else the system's
    /// temporary directory]. The XFS peer's backing file goes here too.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Bytes copied through the view per bandwidth pass: k, m, g suffixes
    /// [default: 256m; 32m with --quick].
    #[arg(long)]
    size: Option<String>,
    /// Timed 4 KiB store faults of each kind [default: 4096; 512 with
    /// --quick].
    #[arg(long)]
    faults: Option<usize>,
    /// Timed 2 MiB copy-on-write faults [default: 64; 8 with --quick].
    #[arg(long)]
    huge_faults: Option<usize>,
    /// Leave out the XFS peer (it needs root, xfsprogs and a loop device).
    #[arg(long)]
    no_peer: bool,
    /// Small sizes and few repetitions: a smoke run of a few seconds.
    #[arg(long)]
    quick: bool,
    /// Print one JSON document instead of a table.
    #[arg(long)]
    json: bool,
    /// Hand every fault to daxfs's resolver threads instead of resolving it
    /// on the faulting thread (for comparison).
    #[arg(long)]
    hand_off: bool,
}

struct Plan {
    dir: PathBuf,
    bytes: u64,
    faults: usize,
    huge: usize,
    passes: usize,
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// The application's memcpy out of a view.
fn copy_from(v: &View, dst: &mut [u8]) {
    // SAFETY: the view is at least `dst.len()` bytes and lives; its pages
    // are the file's (loads of shared memory, as an application makes them).
    unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), dst.as_mut_ptr(), dst.len()) };
}

/// The application's memcpy into a view.
fn copy_into(v: &View, src: &[u8]) {
    // SAFETY: as in `copy_from`; no reference to view memory is formed.
    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), v.as_ptr(), src.len()) };
}

fn load(p: *const u8) -> u8 {
    // SAFETY: callers pass addresses inside a live mapping.
    unsafe { std::ptr::read_volatile(p) }
}

fn store(p: *mut u8, b: u8) {
    // SAFETY: as in `load`.
    unsafe { std::ptr::write_volatile(p, b) }
}

/// Times one store into the first byte of each of `n` units of `unit` bytes
/// from `base`, after loading each (so the page tables are populated and
/// only the store fault is timed).
pub(super) fn time_stores(base: *mut u8, n: usize, unit: u64) -> Samples {
    for i in 0..n {
        black_box(load(base.wrapping_add(i * to_usize(unit))));
    }
    let mut ns = Vec::with_capacity(n);
    for i in 0..n {
        let p = base.wrapping_add(i * to_usize(unit) + 64);
        let t = Instant::now();
        store(p, i as u8 | 1);
        ns.push(t.elapsed().as_nanos() as u64);
    }
    Samples::new(ns)
}

/// A new file of `bytes` bytes, written in 2 MiB writes (each allocated 2 MiB
/// aligned, so that its extents allow huge mappings and huge faults).
fn write_file(fs: &Fs, path: &str, bytes: u64) -> Result<File> {
    let f = fs.create(path)?;
    let chunk = vec![0x5au8; to_usize(HUGE.min(bytes))];
    let mut at = 0;
    while at < bytes {
        let n = (bytes - at).min(chunk.len() as u64);
        f.write_at(at, &chunk[..to_usize(n)])?;
        at += n;
    }
    Ok(f)
}

/// Bytes of `[start, start + len)` the kernel maps with 2 MiB page-table
/// entries (the `*PmdMapped` lines of `/proc/self/smaps`), if readable.
fn pmd_mapped_bytes(start: usize, len: usize) -> Option<u64> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    let mut inside = false;
    let mut kb = 0u64;
    for l in smaps.lines() {
        let first = l.split_whitespace().next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-')
            && let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
        {
            inside = a < start + len && start < b;
            continue;
        }
        if inside && l.contains("PmdMapped:") {
            kb += l
                .split_whitespace()
                .nth(1)
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Some(kb << 10)
}

/// The daxfs figures.
struct Dax {
    /// Bytes of the bandwidth view mapped with 2 MiB pages.
    huge_mapped: Option<u64>,
    load: f64,
    store: f64,
    /// The same copies through the device's own mapping of the same pages.
    dev_load: f64,
    dev_store: f64,
    cow: Samples,
    cow_huge: Samples,
    hole: Samples,
    round_trip: Samples,
    /// The floor of a user-space fault on the same device file.
    floor: Floor,
}

/// The device offset of each of the first `n` pages of `f`.
fn device_pages(f: &File, n: usize) -> Result<Vec<u64>> {
    let mut pages = Vec::with_capacity(n);
    for e in f.fiemap()? {
        let mut at = 0;
        while at < e.length && pages.len() < n {
            pages.push(e.physical + at);
            at += BS;
        }
    }
    if pages.len() < n {
        bail!("the floor's file has {} of {n} pages", pages.len());
    }
    Ok(pages)
}

fn run_dax(plan: &Plan, progress: &dyn Fn(&str)) -> Result<Dax> {
    let cow_bytes = plan.faults as u64 * BS;
    let huge_bytes = plan.huge as u64 * HUGE;
    let data = plan.bytes + 4 * cow_bytes + 2 * huge_bytes + cow_bytes;
    let img = (data + data / 8 + (64 << 20)).div_ceil(HUGE) * HUGE;
    let scratch = Scratch::new(&plan.dir, "views.img");
    let mdev = Arc::new(
        MmapDevice::create(
            scratch.path(),
            img,
            // The image stands in for pmem: cache-line write-back and fence.
            daxfs_device::OpenOptions::new().assume_persistent(true),
        )
        .with_context(|| format!("creating {}", scratch.path().display()))?,
    );
    let dev: Arc<dyn Device> = mdev.clone();
    Fs::mkfs(dev.clone(), &MkfsOptions::default())?;
    let fs = Fs::mount(dev, &MountOptions::default())?;

    progress("bandwidth through a view");
    let f = write_file(&fs, "/bw", plan.bytes)?;
    let v = f.map(0, plan.bytes, Access::ReadWrite)?;
    let (src, mut dst) = faulted_buffers(to_usize(plan.bytes));
    copy_into(&v, &src);
    copy_from(&v, &mut dst);
    let huge_mapped = pmd_mapped_bytes(v.as_ptr() as usize, to_usize(plan.bytes));
    let load = best_gbps(plan.passes, plan.bytes, |_| {
        copy_from(&v, black_box(&mut dst));
        Ok(())
    })?;
    let store = best_gbps(plan.passes, plan.bytes, |_| {
        copy_into(&v, black_box(&src));
        Ok(())
    })?;
    if v.stats().faults != 0 {
        bail!("the bandwidth passes faulted on owned pages");
    }
    // The same pages through the device's own mapping (what read() and
    // write() copy from and to), when the file is one extent.
    let extents: Vec<(usize, usize, usize)> = f
        .fiemap()?
        .iter()
        .map(|e| {
            (
                to_usize(e.logical),
                to_usize(e.physical),
                to_usize(e.length.min(plan.bytes - e.logical)),
            )
        })
        .collect();
    let base = mdev.as_ptr();
    let dev_load = best_gbps(plan.passes, plan.bytes, |_| {
        for &(l, p, n) in &extents {
            // SAFETY: each extent lies inside the device mapping, which
            // lives, and inside `dst`; raw copies, no references.
            unsafe { std::ptr::copy_nonoverlapping(base.add(p), dst.as_mut_ptr().add(l), n) };
        }
        black_box(&mut dst);
        Ok(())
    })?;
    let dev_store = best_gbps(plan.passes, plan.bytes, |_| {
        for &(l, p, n) in &extents {
            // SAFETY: as above.
            unsafe {
                std::ptr::copy_nonoverlapping(black_box(&src).as_ptr().add(l), base.add(p), n)
            };
        }
        Ok(())
    })?;
    drop((v, f, src, dst));

    progress("floor of a user-space fault on this device file");
    let fl = write_file(&fs, "/floor", 2 * cow_bytes)?;
    let mut pages = device_pages(&fl, 2 * plan.faults)?;
    let to = pages.split_off(plan.faults);
    let vsrc = mdev
        .view_source()
        .context("the device file cannot be mapped twice")?;
    let floor = fault_floor::measure(&vsrc, mdev.as_ptr(), pages, to, time_stores)?;
    drop(fl);

    progress("copy-on-write faults, 4 KiB");
    let a = write_file(&fs, "/a", cow_bytes)?;
    let b = fs.create("/b")?;
    b.clone_from(&a)?;
    let va = a.map(0, cow_bytes, Access::ReadWrite)?;
    let vb = b.map(0, cow_bytes, Access::ReadWrite)?;
    vb.set_huge_faults(false);
    let cow = time_stores(vb.as_ptr(), plan.faults, BS);
    if vb.stats().block_faults != plan.faults as u64 {
        bail!("expected one copy per 4 KiB store fault");
    }
    // A's blocks are its own again: its stores fault once, for nothing but
    // the round trip to a resolver and a protection change.
    progress("fault round trips");
    va.set_huge_faults(false);
    let round_trip = time_stores(va.as_ptr(), plan.faults, BS);
    if va.stats().block_faults != 0 || va.stats().faults != plan.faults as u64 {
        bail!("expected one fault and no copy per round-trip store");
    }
    drop((va, vb, a, b));

    progress("copy-on-write faults, 2 MiB");
    let a = write_file(&fs, "/huge", huge_bytes)?;
    let b = fs.create("/huge2")?;
    b.clone_from(&a)?;
    let vb = b.map(0, huge_bytes, Access::ReadWrite)?;
    let cow_huge = time_stores(vb.as_ptr(), plan.huge, HUGE);
    if vb.stats().block_faults != plan.huge as u64
        || !matches!(
            vb.page_state(HUGE - BS),
            Some(daxfs::PageState::Writable { .. })
        )
    {
        bail!("expected one 2 MiB copy per store fault");
    }
    drop((vb, a, b));

    progress("hole faults, 4 KiB");
    let h = fs.create("/hole")?;
    h.set_len(cow_bytes)?;
    let vh = h.map(0, cow_bytes, Access::ReadWrite)?;
    vh.set_huge_faults(false);
    let hole = time_stores(vh.as_ptr(), plan.faults, BS);
    drop((vh, h));
    Ok(Dax {
        huge_mapped,
        load,
        store,
        dev_load,
        dev_store,
        cow,
        cow_huge,
        hole,
        round_trip,
        floor,
    })
}

// ---- The XFS peer ----

fn find_tool(name: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

fn run_tool(prog: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(prog)
        .args(args)
        .output()
        .with_context(|| format!("running {}", prog.display()))?;
    if !out.status.success() {
        bail!(
            "{} {}: {}",
            prog.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Cleanup actions run in reverse order of registration.
struct Undo(Vec<Box<dyn FnOnce()>>);

impl Drop for Undo {
    fn drop(&mut self) {
        while let Some(f) = self.0.pop() {
            f();
        }
    }
}

/// A shared read-write mapping of a file, unmapped when dropped.
struct Mmap {
    ptr: *mut std::ffi::c_void,
    len: usize,
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: our own mapping, not referenced any more.
        let _ = unsafe { rustix::mm::munmap(self.ptr, self.len) };
    }
}

/// The copy-on-write store faults on XFS: a cloned file mapped shared, one
/// store into each loaded page. Err tells why the peer cannot run here.
fn run_xfs(plan: &Plan) -> std::result::Result<Samples, String> {
    let mkfs = find_tool("mkfs.xfs").ok_or("mkfs.xfs not installed (xfsprogs)")?;
    if !rustix::process::geteuid().is_root() {
        return Err("needs root to attach a loop device and mount it".into());
    }
    let tool = |n: &str| find_tool(n).ok_or(format!("{n} not found"));
    let (losetup, mount, umount) = (tool("losetup")?, tool("mount")?, tool("umount")?);
    let e = |e: anyhow::Error| format!("{e:#}");
    let mut undo = Undo(vec![]);
    let image = Scratch::new(&plan.dir, "views-xfs.img");
    let bytes = plan.faults as u64 * BS;
    std::fs::File::create_new(image.path())
        .and_then(|f| f.set_len((bytes * 4 + (512 << 20)).max(1 << 30)))
        .map_err(|x| format!("creating {}: {x}", image.path().display()))?;
    let img = image.path().to_string_lossy().into_owned();
    undo.0.push(Box::new(move || drop(image)));
    let lo = run_tool(&losetup, &["-f", "--show", &img]).map_err(e)?;
    {
        let (losetup, lo) = (losetup.clone(), lo.clone());
        undo.0.push(Box::new(move || {
            let _ = run_tool(&losetup, &["-d", &lo]);
        }));
    }
    run_tool(&mkfs, &["-q", "-f", "-K", "-m", "reflink=1", &lo]).map_err(e)?;
    let mnt = std::env::temp_dir().join(format!("daxfs-bench-{}-views-mnt", std::process::id()));
    std::fs::create_dir(&mnt).map_err(|x| format!("creating {}: {x}", mnt.display()))?;
    let at = mnt.to_string_lossy().into_owned();
    {
        let mnt = mnt.clone();
        undo.0.push(Box::new(move || {
            let _ = std::fs::remove_dir(&mnt);
        }));
    }
    run_tool(&mount, &["-t", "xfs", &lo, &at]).map_err(e)?;
    {
        let at = at.clone();
        undo.0.push(Box::new(move || {
            for _ in 0..20 {
                if run_tool(&umount, &[&at]).is_ok() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            let _ = run_tool(&umount, &["-l", &at]);
        }));
    }
    let run = || -> Result<Samples> {
        use std::io::Write;
        let a_path = mnt.join("a");
        let mut a = std::fs::File::create_new(&a_path)?;
        let chunk = vec![0x5au8; (1 << 20).min(to_usize(bytes))];
        let mut at = 0;
        while at < bytes {
            let n = (bytes - at).min(chunk.len() as u64);
            a.write_all(&chunk[..to_usize(n)])?;
            at += n;
        }
        a.sync_all()?;
        let b = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(mnt.join("b"))?;
        rustix::fs::ioctl_ficlone(&b, &a).context("FICLONE")?;
        b.sync_all()?;
        // SAFETY: a fresh shared mapping of our own file at an address the
        // kernel picks; accessed only through raw pointers below.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                to_usize(bytes),
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::SHARED,
                &b,
                0,
            )?
        };
        let m = Mmap {
            ptr,
            len: to_usize(bytes),
        };
        let s = time_stores(m.ptr.cast(), plan.faults, BS);
        drop(m);
        Ok(s)
    };
    let s = run().map_err(e);
    drop(undo);
    s
}

/// Runs `daxfs bench views`.
pub fn run(a: &ViewsArgs) -> Result<i32> {
    let dir = crate::bench::scratch_dir(&a.dir)?;
    let q = a.quick;
    View::set_in_thread_faults(!a.hand_off);
    let bytes = match &a.size {
        Some(s) => parse_size(s)?,
        None if q => 32 << 20,
        None => 256 << 20,
    }
    .div_ceil(HUGE)
        * HUGE;
    let plan = Plan {
        dir,
        bytes,
        faults: a.faults.unwrap_or(if q { 512 } else { 4096 }).max(1),
        huge: a.huge_faults.unwrap_or(if q { 8 } else { 64 }).max(1),
        passes: if q { 2 } else { 5 },
    };
    let json = a.json;
    let progress = |s: &str| {
        if !json {
            eprintln!("  ... {s}");
        }
    };
    let mut rep = Report::new(
        a.json,
        "XFS with reflink on a loop device (page cache), a cloned file mapped shared".into(),
    );
    rep.note(&format!(
        "daxfs bench views: {} MiB per bandwidth pass, {} faults of each kind, {} 2 MiB faults, in {}, faults resolved {}",
        plan.bytes >> 20,
        plan.faults,
        plan.huge,
        plan.dir.display(),
        if a.hand_off {
            "by resolver threads (--hand-off)"
        } else {
            "on the faulting thread"
        }
    ));
    let (src, mut dst) = faulted_buffers(to_usize(plan.bytes));
    let mc = memcpy_bandwidth(&src, &mut dst, plan.passes)?;
    drop((src, dst));
    let i_mc = rep.add(Figure::new(
        "memcpy",
        "machine",
        "memcpy, same size",
        mc,
        "GB/s",
    ));
    let d = run_dax(&plan, &progress)?;
    let i_dl = rep.add(Figure::new(
        "device_load",
        "machine",
        "memcpy out of the device mapping, same pages",
        d.dev_load,
        "GB/s",
    ));
    let i_ds = rep.add(Figure::new(
        "device_store",
        "machine",
        "memcpy into the device mapping, same pages",
        d.dev_store,
        "GB/s",
    ));
    let fl = Figure::new(
        "view_load",
        "daxfs",
        "load through a view (memcpy out)",
        d.load,
        "GB/s",
    )
    .ratio(rep.get(i_dl))
    .ratio(rep.get(i_mc))
    .target(Target::RatioAtLeast(0.95));
    let fs_ = Figure::new(
        "view_store",
        "daxfs",
        "store through a view (memcpy in)",
        d.store,
        "GB/s",
    )
    .ratio(rep.get(i_ds))
    .ratio(rep.get(i_mc))
    .target(Target::RatioAtLeast(0.95));
    rep.add(fl);
    rep.add(fs_);
    if let Some(h) = d.huge_mapped {
        rep.add(Figure::new(
            "view_huge_mapped",
            "daxfs",
            "bandwidth view mapped with 2 MiB pages",
            (h >> 20) as f64,
            "MiB",
        ));
    }
    rep.add(Figure::new(
        "floor_signal_p50",
        "machine",
        "floor: signal to self, empty handler, median",
        d.floor.signal.p50(),
        "us",
    ));
    rep.add(Figure::new(
        "floor_fault_mprotect_p50",
        "machine",
        "floor: fault, handler mprotects, median",
        d.floor.protect.p50(),
        "us",
    ));
    let i_floor = rep.add(Figure::new(
        "floor_cow_fault_4k_p50",
        "machine",
        "floor: fault, mmap + 4 KiB copy, median",
        d.floor.cow.p50(),
        "us",
    ));
    let i_cow = rep.add(
        Figure::new(
            "cow_fault_4k_p50",
            "daxfs",
            "copy-on-write store fault, 4 KiB, median",
            d.cow.p50(),
            "us",
        )
        .ratio(rep.get(i_floor))
        .target(Target::AtMost(5.0)),
    );
    rep.add(Figure::new(
        "cow_fault_4k_p99",
        "daxfs",
        "copy-on-write store fault, 4 KiB, p99",
        d.cow.p99(),
        "us",
    ));
    rep.add(Figure::new(
        "cow_fault_2m_p50",
        "daxfs",
        "copy-on-write store fault, 2 MiB, median",
        d.cow_huge.p50(),
        "us",
    ));
    rep.add(
        Figure::new(
            "hole_fault_4k_p50",
            "daxfs",
            "store fault filling a hole, 4 KiB, median",
            d.hole.p50(),
            "us",
        )
        .ratio(rep.get(i_floor)),
    );
    rep.add(
        Figure::new(
            "round_trip_p50",
            "daxfs",
            "store fault needing no copy (round trip), median",
            d.round_trip.p50(),
            "us",
        )
        .ratio(rep.get(i_floor)),
    );
    let mut peer = serde_json::Value::Null;
    if a.no_peer {
        rep.note("\npeer: left out (--no-peer)");
    } else {
        progress("XFS with reflink");
        match run_xfs(&plan) {
            Ok(s) => {
                let x = rep.add(Figure::new(
                    "xfs_cow_fault_4k_p50",
                    "peer",
                    "copy-on-write store fault, 4 KiB, median",
                    s.p50(),
                    "us",
                ));
                rep.add(Figure::new(
                    "xfs_cow_fault_4k_p99",
                    "peer",
                    "copy-on-write store fault, 4 KiB, p99",
                    s.p99(),
                    "us",
                ));
                let xv = rep.get(x).value;
                let dv = rep.get(i_cow).value;
                let fv = rep.get(i_floor).value;
                let faster = dv < xv;
                rep.note(&format!(
                    "\n  daxfs's 4 KiB copy-on-write fault is {:.2}x XFS's ({}); XFS copies the page in the page cache and allocates at writeback",
                    if xv > 0.0 { dv / xv } else { 0.0 },
                    if faster { "faster: PASS" } else { "slower: MISS" }
                ));
                rep.note(&format!(
                    "  the floor of a user-space copy-on-write fault here is {:.2}x XFS's: no file system resolving faults in a signal handler can be faster than XFS on this machine{}",
                    if xv > 0.0 { fv / xv } else { 0.0 },
                    if fv < xv { " (the floor is below XFS here)" } else { "" }
                ));
                peer = serde_json::json!({
                    "xfs_faster_than_daxfs": !faster,
                    "cow_fault_over_xfs": if xv > 0.0 { dv / xv } else { 0.0 },
                    "floor_over_xfs": if xv > 0.0 { fv / xv } else { 0.0 },
                });
            }
            Err(why) => rep.note(&format!("\npeer: not run: {why}")),
        }
    }
    rep.finish(&serde_json::json!({
        "bytes": plan.bytes,
        "faults": plan.faults,
        "huge_faults": plan.huge,
        "passes": plan.passes,
        "dir": plan.dir.display().to_string(),
        "in_thread_faults": !a.hand_off,
        "peer": peer,
        "cow_fault_over_floor": if d.floor.cow.p50() > 0.0 { d.cow.p50() / d.floor.cow.p50() } else { 0.0 },
    }));
    Ok(0)
}
