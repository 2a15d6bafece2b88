//! The daxfs side: images made for the run, the file workloads through
//! [`daxfs::File`], small files, and mounting a file system with many files.
use super::Plan;
use super::stats::{Samples, Scratch, sample};
use super::workload::{self, FileFigures, Subject};
use anyhow::{Context, Result, bail};
use daxfs::{File, Fs, MkfsOptions, MountOptions};
use daxfs_device::{Device, MmapDevice};
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

/// The options every benchmark image is opened with: the image in /dev/shm
/// stands in for pmem, so persistence is by cache-line write-back and fence,
/// as on real persistent memory, not by msync.
pub(super) fn dev_opts() -> daxfs_device::OpenOptions {
    daxfs_device::OpenOptions::new().assume_persistent(true)
}

/// Creates an image of at least `bytes` at the scratch path and makes a file
/// system on it. Sizes are rounded up to 2 MiB, the mapping alignment.
fn make_image(plan: &Plan, scratch: &Scratch, bytes: u64) -> Result<Arc<dyn Device>> {
    let size = bytes.div_ceil(2 << 20) * (2 << 20);
    let dev: Arc<dyn Device> = Arc::new(
        MmapDevice::create(scratch.path(), size, dev_opts())
            .with_context(|| format!("creating {}", scratch.path().display()))?,
    );
    let opts = MkfsOptions {
        no_replicas: plan.no_replicas,
        ..Default::default()
    };
    Fs::mkfs(dev.clone(), &opts)?;
    Ok(dev)
}

struct DaxFile(File);

impl Subject for DaxFile {
    fn write(&self, off: u64, data: &[u8]) -> Result<()> {
        self.0.write_at(off, data)?;
        Ok(())
    }
    fn write_durable(&self, off: u64, data: &[u8]) -> Result<()> {
        // daxfs persists the data of every write before returning.
        self.write(off, data)
    }
    fn read(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        let n = self.0.read_at(off, buf)?;
        if n != buf.len() {
            bail!("short read: {n} of {} bytes at {off}", buf.len());
        }
        Ok(())
    }
    fn fsync(&self) -> Result<()> {
        Ok(self.0.fsync()?)
    }
    fn truncate(&self) -> Result<()> {
        Ok(self.0.set_len(0)?)
    }
}

/// The file workloads and the small-file workload, on one image.
pub fn files(plan: &Plan) -> Result<(FileFigures, Samples)> {
    let scratch = Scratch::new(&plan.dir, "files.img");
    // Room for the file, its blocks' slack (the allocator keeps 1/64 spare),
    // the log (1/64 of the device) and the small files, each of which takes
    // a data block plus its share of inode, directory and extent-tree blocks.
    let bytes = plan.file_bytes + plan.file_bytes / 16 + plan.files as u64 * 16384 + (64 << 20);
    let dev = make_image(plan, &scratch, bytes)?;
    let fs = Fs::mount(dev, &MountOptions::default())?;
    let f = DaxFile(fs.create("/seq")?);
    let figures = workload::run(&f, plan)?;
    drop(f);
    let small = small_files(&fs, plan)?;
    Ok((figures, small))
}

/// create + write 4 KiB + fsync + close of `plan.files` new files in one
/// directory, each timed on its own.
fn small_files(fs: &Fs, plan: &Plan) -> Result<Samples> {
    fs.mkdir("/small", 0o755)?;
    let warm = plan.files / 20;
    let names: Vec<String> = (0..warm + plan.files)
        .map(|i| format!("/small/f{i:07}"))
        .collect();
    let data = vec![0x42u8; 4096];
    sample(warm, plan.files, |i| {
        let f = fs.create(&names[i])?;
        f.write_at(0, black_box(&data))?;
        f.fsync()?;
        drop(f);
        Ok(())
    })
}

/// What the mount benchmark measured.
pub struct MountFigures {
    /// Creating each empty file while filling the file system.
    pub create_empty: Samples,
    /// `Fs::mount` alone.
    pub mount: Samples,
    /// `Fs::mount` and the stat of one file.
    pub mount_stat: Samples,
    /// Opening (mapping) the image, `Fs::mount` and the stat of one file.
    pub open_mount_stat: Samples,
}

/// Fills a file system with `plan.mount_files` empty files, unmounts it, and
/// times mounting it again.
pub fn mount(plan: &Plan) -> Result<MountFigures> {
    let scratch = Scratch::new(&plan.dir, "mount.img");
    // An empty file costs an inode record (256 bytes) and a directory entry
    // (272 bytes) in B+tree leaves that may be half full: 3 KiB is ample.
    let dev = make_image(plan, &scratch, plan.mount_files as u64 * 3072 + (64 << 20))?;
    let n = plan.mount_files;
    let name = |i: usize| format!("/m/f{i:07}");
    let create_empty = {
        let fs = Fs::mount(dev.clone(), &MountOptions::default())?;
        fs.mkdir("/m", 0o755)?;
        let names: Vec<String> = (0..n).map(name).collect();
        let s = sample(0, n, |i| {
            drop(fs.create(&names[i])?);
            Ok(())
        })?;
        fs.sync()?;
        s
    };
    let opts = MountOptions::default();
    let rounds = plan.mounts;
    // The file looked up differs each round, spread over the directory.
    let pick = |r: usize| name((r * 7919 + 13) % n.max(1));
    // Each closure hands the mounted file system back to `sample`, which
    // drops (unmounts) it after reading the clock.
    let mount = sample(1, rounds, |_| Ok(Fs::mount(dev.clone(), &opts)?))?;
    let mount_stat = sample(1, rounds, |r| {
        let fs = Fs::mount(dev.clone(), &opts)?;
        black_box(fs.stat(pick(r))?);
        Ok(fs)
    })?;
    // The image must be unmapped and unlocked before it can be opened again.
    drop(dev);
    let path = scratch.path();
    let open_mount_stat = sample(1, rounds, |r| open_mount_stat(path, &pick(r)))?;
    Ok(MountFigures {
        create_empty,
        mount,
        mount_stat,
        open_mount_stat,
    })
}

/// Maps the image, mounts it and stats `file`; the file system is returned
/// so that unmounting and unmapping happen outside the timed part.
fn open_mount_stat(path: &Path, file: &str) -> Result<Fs> {
    let dev: Arc<dyn Device> = Arc::new(MmapDevice::open(path, dev_opts())?);
    let fs = Fs::mount(dev, &MountOptions::default())?;
    black_box(fs.stat(file)?);
    Ok(fs)
}
