//! The peer of the sharing benchmark: XFS with reflink and the reverse-map
//! btree, on a loop device whose backing file sits in the benchmark directory
//! (memory, for /dev/shm), driven through system calls: pwrite/fdatasync,
//! FICLONE, and FS_IOC_GETFSMAP for owner queries and fsmap.
//!
//! XFS here goes through the page cache and a loop device: it is not DAX.
//! Setting it up needs root, xfsprogs and a free loop device; when any of
//! them is missing the peer is skipped with the reason, never installed.
use super::Plan;
use super::work::{self, BS, Measured, Side};
use crate::bench::stats::Scratch;
use anyhow::{Context, Result, anyhow, bail};
use rustix::ioctl::{Opcode, Updater, opcode};
use std::cell::RefCell;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// `struct fsmap` of linux/fsmap.h: one record, or a query key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct Fsmap {
    device: u32,
    flags: u32,
    /// Device offset, bytes.
    physical: u64,
    /// Inode number, or a special owner code when flags has FMR_OF_SPECIAL_OWNER.
    owner: u64,
    /// File offset, bytes.
    offset: u64,
    length: u64,
    reserved: [u64; 3],
}

/// `struct fsmap_head` of linux/fsmap.h, without its flexible array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct FsmapHead {
    iflags: u32,
    oflags: u32,
    /// Records the array after the head has room for.
    count: u32,
    /// Records the kernel filled in.
    entries: u32,
    reserved: [u64; 6],
    /// Low and high key of the query.
    keys: [Fsmap; 2],
}

/// Records asked for per call. XFS copies at most 128 KiB of records per
/// call internally, which is this many.
const BATCH: usize = 2048;

/// A head followed by room for [`BATCH`] records: what the ioctl reads and
/// writes, in one allocation reused by every query.
#[repr(C)]
struct FsmapBuf {
    head: FsmapHead,
    recs: [Fsmap; BATCH],
}

const FS_IOC_GETFSMAP: Opcode = opcode::read_write::<FsmapHead>(b'X', 59);
const FMR_OF_EXTENT_MAP: u32 = 0x4;
const FMR_OF_SPECIAL_OWNER: u32 = 0x10;
const FMR_OF_LAST: u32 = 0x20;

/// Runs FS_IOC_GETFSMAP from key `lo` to key `hi`, `count` records per
/// call, handing each record to `each` until the kernel marks the last.
fn getfsmap(
    fd: &File,
    buf: &mut FsmapBuf,
    lo: Fsmap,
    hi: Fsmap,
    count: usize,
    mut each: impl FnMut(&Fsmap),
) -> Result<()> {
    buf.head = FsmapHead {
        keys: [lo, hi],
        ..FsmapHead::default()
    };
    loop {
        buf.head.count = count.clamp(1, BATCH) as u32;
        // SAFETY: the opcode is FS_IOC_GETFSMAP, whose argument is a
        // `struct fsmap_head` followed by `fmh_count` records; `FsmapBuf`
        // has that layout (repr(C), sizes checked by the tests) and room
        // for `BATCH >= count` records, so the kernel writes only inside it.
        let ctl = unsafe { Updater::<FS_IOC_GETFSMAP, FsmapBuf>::new(buf) };
        // SAFETY: `ctl` was built for this opcode and argument type above;
        // the borrow of `buf` it holds lasts for the call.
        unsafe { rustix::ioctl::ioctl(fd, ctl) }.context("FS_IOC_GETFSMAP")?;
        let n = (buf.head.entries as usize).min(BATCH);
        if n == 0 {
            return Ok(());
        }
        for r in &buf.recs[..n] {
            each(r);
        }
        let last = buf.recs[n - 1];
        if last.flags & FMR_OF_LAST != 0 {
            return Ok(());
        }
        // The ABI's way to continue: the last record becomes the low key.
        buf.head.keys[0] = last;
    }
}

/// The high key that matches everything.
fn max_key() -> Fsmap {
    Fsmap {
        device: u32::MAX,
        flags: u32::MAX,
        physical: u64::MAX,
        owner: u64::MAX,
        offset: u64::MAX,
        length: 0,
        reserved: [0; 3],
    }
}

struct Xfs {
    root: PathBuf,
    /// Any descriptor on the file system, for GETFSMAP.
    root_fd: File,
    buf: RefCell<Box<FsmapBuf>>,
    /// The data device's number as GETFSMAP reports it: a query limited to
    /// a physical range must name its device in both keys.
    dev: std::cell::Cell<Option<u32>>,
}

impl Xfs {
    fn new(root: &Path) -> Result<Xfs> {
        Ok(Xfs {
            root: root.to_path_buf(),
            root_fd: File::open(root).with_context(|| format!("opening {}", root.display()))?,
            buf: RefCell::new(Box::new(FsmapBuf {
                head: FsmapHead::default(),
                recs: [Fsmap::default(); BATCH],
            })),
            dev: std::cell::Cell::new(None),
        })
    }

    fn whole(&self, each: impl FnMut(&Fsmap)) -> Result<()> {
        let mut buf = self.buf.borrow_mut();
        getfsmap(
            &self.root_fd,
            &mut buf,
            Fsmap::default(),
            max_key(),
            BATCH,
            each,
        )
    }
}

impl Side for Xfs {
    type File = File;

    fn create(&self, path: &str) -> Result<File> {
        let p = self.root.join(path);
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p)
            .with_context(|| format!("creating {}", p.display()))
    }
    fn mkdir(&self, path: &str) -> Result<()> {
        Ok(std::fs::create_dir(self.root.join(path))?)
    }
    fn remove(&self, path: &str) -> Result<()> {
        Ok(std::fs::remove_file(self.root.join(path))?)
    }
    fn write(&self, f: &File, off: u64, data: &[u8]) -> Result<()> {
        Ok(f.write_all_at(data, off)?)
    }
    fn write_durable(&self, f: &File, off: u64, data: &[u8]) -> Result<()> {
        f.write_all_at(data, off)?;
        Ok(f.sync_data()?)
    }
    fn fsync(&self, f: &File) -> Result<()> {
        Ok(f.sync_all()?)
    }
    fn clone_durable(&self, dst: &File, src: &File) -> Result<()> {
        // FICLONE returns before the log is forced; the fsync makes the
        // clone as durable as a daxfs clone is when it returns.
        self.clone_only(dst, src)?;
        Ok(dst.sync_all()?)
    }
    fn clone_only(&self, dst: &File, src: &File) -> Result<()> {
        rustix::fs::ioctl_ficlone(dst, src).context("FICLONE")
    }
    fn data_extents(&self, f: &File) -> Result<Vec<(u64, u64)>> {
        // The reverse map's records of this inode's data fork: the file's
        // extents as XFS allocated them (delayed allocation resolved by the
        // fsync that precedes every call).
        let ino = f.metadata()?.ino();
        let mut out = vec![];
        let mut dev = None;
        self.whole(|r| {
            dev.get_or_insert(r.device);
            let data = r.flags & (FMR_OF_SPECIAL_OWNER | FMR_OF_EXTENT_MAP) == 0;
            if data && r.owner == ino {
                out.push((r.offset, r.physical, r.length));
            }
        })?;
        if self.dev.get().is_none() {
            self.dev.set(dev);
        }
        out.sort_unstable();
        Ok(out.into_iter().map(|(_, p, l)| (p, l)).collect())
    }
    fn owners(&self, phys: u64, len: u64, expect: usize) -> Result<usize> {
        let dev = self
            .dev
            .get()
            .ok_or_else(|| anyhow!("device number not known yet"))?;
        let lo = Fsmap {
            device: dev,
            physical: phys,
            ..Fsmap::default()
        };
        let hi = Fsmap {
            device: dev,
            physical: phys + len - 1,
            ..max_key()
        };
        let mut n = 0;
        let mut buf = self.buf.borrow_mut();
        // Room for the expected owners and a few neighbours: what a caller
        // asking about one block would size its buffer for.
        getfsmap(&self.root_fd, &mut buf, lo, hi, expect + 8, |r| {
            if r.flags & FMR_OF_SPECIAL_OWNER == 0 {
                n += 1;
            }
        })?;
        Ok(n)
    }
    fn fsmap(&self) -> Result<usize> {
        let mut n = 0;
        self.whole(|_| n += 1)?;
        Ok(n)
    }
}

/// Where a program is: the search path, then the system directories root's
/// path has but other users' may not.
fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Runs a program; its stdout on success, an error with its stderr otherwise.
fn run_tool(prog: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(prog)
        .args(args)
        .output()
        .with_context(|| format!("running {}", prog.display()))?;
    if !out.status.success() {
        bail!(
            "{} {} failed ({}): {}",
            prog.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The tools the peer needs.
pub struct Tools {
    mkfs: PathBuf,
    losetup: PathBuf,
    mount: PathBuf,
    umount: PathBuf,
}

/// The tools, or why the peer cannot run on this machine.
pub fn tools() -> std::result::Result<Tools, String> {
    let mkfs = find_tool("mkfs.xfs")
        .ok_or("mkfs.xfs not installed (apt-get install xfsprogs)".to_string())?;
    if !rustix::process::geteuid().is_root() {
        return Err("needs root to attach a loop device and mount it".into());
    }
    let get = |n: &str| find_tool(n).ok_or(format!("{n} not found"));
    Ok(Tools {
        mkfs,
        losetup: get("losetup")?,
        mount: get("mount")?,
        umount: get("umount")?,
    })
}

/// An attached loop device, detached when dropped.
struct Loop<'a> {
    dev: String,
    tools: &'a Tools,
}

impl Drop for Loop<'_> {
    fn drop(&mut self) {
        if let Err(e) = run_tool(&self.tools.losetup, &["-d", &self.dev]) {
            eprintln!("warning: could not detach {}: {e}", self.dev);
        }
    }
}

/// A mount point made for the run: unmounted (if mounted) and removed when
/// dropped. Never removed recursively, so a failed unmount cannot delete
/// anything below it.
struct Mount<'a> {
    dir: PathBuf,
    mounted: bool,
    tools: &'a Tools,
}

impl Drop for Mount<'_> {
    fn drop(&mut self) {
        if self.mounted {
            let d = self.dir.to_string_lossy().into_owned();
            // Descriptors closed just before may still be releasing; retry
            // briefly, then detach lazily so the loop device can go.
            let mut ok = false;
            for _ in 0..20 {
                if run_tool(&self.tools.umount, &[&d]).is_ok() {
                    ok = true;
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            if !ok && let Err(e) = run_tool(&self.tools.umount, &["-l", &d]) {
                eprintln!("warning: could not unmount {d}: {e}");
            }
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Size of the sparse backing file: the daxfs image's worth of data with
/// room for XFS's metadata, plus its copy-on-write staging. XFS reserves a
/// copy-on-write extent of 32 blocks (the default extent size hint) around
/// each block first written in a shared file and frees the unused part only
/// later, so the random overwrites need far more free space than they
/// write. Blocks never written cost no memory in a sparse file.
pub fn image_bytes(plan: &Plan, dax_bytes: u64) -> u64 {
    let size = (dax_bytes * 3 / 2 + plan.cow_ops as u64 * 32 * BS * 2).max(4 << 30);
    size.div_ceil(1 << 20) << 20
}

/// Sets up XFS on a loop device, runs the workloads, and tears it all down.
/// An error before the workloads start means the machine does not allow the
/// peer; the caller reports it and carries on.
pub fn run(
    plan: &Plan,
    tools: &Tools,
    image_size: u64,
    progress: &dyn Fn(&str),
) -> std::result::Result<Measured, PeerError> {
    let setup = |e: anyhow::Error| PeerError::Setup(format!("{e:#}"));
    // Declared first, dropped last: the image outlives the loop device,
    // which outlives the mount.
    let image = Scratch::new(&plan.dir, "xfs.img");
    File::create_new(image.path())
        .and_then(|f| f.set_len(image_size))
        .with_context(|| format!("creating {}", image.path().display()))
        .map_err(setup)?;
    let img = image.path().to_string_lossy().into_owned();
    let dev = run_tool(&tools.losetup, &["-f", "--show", &img]).map_err(setup)?;
    let lo = Loop { dev, tools };
    // -K: discarding a sparse file in memory only costs time.
    run_tool(
        &tools.mkfs,
        &["-q", "-f", "-K", "-m", "reflink=1,rmapbt=1", &lo.dev],
    )
    .map_err(setup)?;
    let mut mnt = Mount {
        dir: std::env::temp_dir().join(format!("daxfs-bench-{}-xfs-mnt", std::process::id())),
        mounted: false,
        tools,
    };
    std::fs::create_dir(&mnt.dir)
        .with_context(|| format!("creating {}", mnt.dir.display()))
        .map_err(setup)?;
    let at = mnt.dir.to_string_lossy().into_owned();
    run_tool(&tools.mount, &["-t", "xfs", &lo.dev, &at]).map_err(setup)?;
    mnt.mounted = true;
    let side = Xfs::new(&mnt.dir).map_err(setup)?;
    let m = work::run(&side, plan, progress).map_err(|e| PeerError::Run(format!("{e:#}")));
    // Every descriptor on the file system is closed before the guards
    // unmount it.
    drop(side);
    drop(mnt);
    drop(lo);
    drop(image);
    m
}

/// Why the peer has no figures.
pub enum PeerError {
    /// The loop device, mkfs or mount failed: the machine does not allow it.
    Setup(String),
    /// A workload failed on XFS.
    Run(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_linux_fsmap_h() {
        assert_eq!(std::mem::size_of::<Fsmap>(), 64);
        assert_eq!(std::mem::size_of::<FsmapHead>(), 192);
        assert_eq!(std::mem::offset_of!(FsmapHead, keys), 64);
        assert_eq!(std::mem::offset_of!(FsmapBuf, recs), 192);
        // _IOWR('X', 59, struct fsmap_head), as the kernel headers spell it.
        assert_eq!(FS_IOC_GETFSMAP as u64, 0xc0c0_583b);
    }

    #[test]
    fn image_is_at_least_four_gib() {
        let plan = Plan::tiny();
        assert!(image_bytes(&plan, 1 << 20) >= 4 << 30);
    }
}
