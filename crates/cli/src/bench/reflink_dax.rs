//! The daxfs side of the sharing benchmark: one image in the benchmark
//! directory, the workloads through the public [`daxfs`] API.
use super::Plan;
use super::work::{self, BS, Measured, Side};
use crate::bench::stats::Scratch;
use anyhow::{Context, Result, bail};
use daxfs::{File, Fs, MkfsOptions, MountOptions};
use daxfs_device::{Device, MmapDevice};
use std::sync::Arc;

struct Dax {
    fs: Fs,
}

fn abs(path: &str) -> String {
    format!("/{path}")
}

impl Side for Dax {
    type File = File;

    fn create(&self, path: &str) -> Result<File> {
        Ok(self.fs.create(abs(path))?)
    }
    fn mkdir(&self, path: &str) -> Result<()> {
        Ok(self.fs.mkdir(abs(path), 0o755)?)
    }
    fn remove(&self, path: &str) -> Result<()> {
        Ok(self.fs.unlink(abs(path))?)
    }
    fn write(&self, f: &File, off: u64, data: &[u8]) -> Result<()> {
        let n = f.write_at(off, data)?;
        if n != data.len() {
            bail!("short write: {n} of {} bytes at {off}", data.len());
        }
        Ok(())
    }
    fn write_durable(&self, f: &File, off: u64, data: &[u8]) -> Result<()> {
        // daxfs persists the data of every write before returning.
        self.write(f, off, data)
    }
    fn fsync(&self, f: &File) -> Result<()> {
        Ok(f.fsync()?)
    }
    fn clone_durable(&self, dst: &File, src: &File) -> Result<()> {
        // A clone is one committed transaction: durable when it returns.
        dst.clone_from(src)?;
        Ok(())
    }
    fn clone_only(&self, dst: &File, src: &File) -> Result<()> {
        self.clone_durable(dst, src)
    }
    fn data_extents(&self, f: &File) -> Result<Vec<(u64, u64)>> {
        Ok(f.fiemap()?
            .into_iter()
            .map(|e| (e.physical, e.length))
            .collect())
    }
    fn owners(&self, phys: u64, len: u64, _expect: usize) -> Result<usize> {
        // By inode, as GETFSMAP answers for the XFS side.
        Ok(self.fs.owners_by_inode(phys / BS, len.div_ceil(BS))?.len())
    }
    fn fsmap(&self) -> Result<usize> {
        Ok(self.fs.fsmap(0, u64::MAX)?.len())
    }
}

/// Bytes of /dev/shm (or the benchmark directory) the daxfs image touches:
/// the two large files, the fragmented file, one copied block per
/// copy-on-write overwrite, metadata for every clone of the one-block file
/// (inode, directory entry, parent pointer and reverse-map record, in
/// B+tree leaves that may be half full), and room for the trees, the log
/// (1/64 of the device) and the allocator's slack (1/64).
pub fn image_bytes(plan: &Plan) -> u64 {
    let data = 2 * plan.file_bytes
        + plan.extents * BS
        + plan.cow_ops as u64 * BS
        + plan.owners * 4096
        + (64 << 20);
    let size = data + data / 16;
    size.div_ceil(2 << 20) * (2 << 20)
}

/// Runs the workloads on a new image, removed when done.
pub fn run(plan: &Plan, progress: &dyn Fn(&str)) -> Result<Measured> {
    let scratch = Scratch::new(&plan.dir, "reflink.img");
    let dev: Arc<dyn Device> = Arc::new(
        MmapDevice::create(
            scratch.path(),
            image_bytes(plan),
            // The image stands in for pmem: persistence is by cache-line
            // write-back and fence, as on real persistent memory.
            daxfs_device::OpenOptions::new().assume_persistent(true),
        )
        .with_context(|| format!("creating {}", scratch.path().display()))?,
    );
    Fs::mkfs(dev.clone(), &MkfsOptions::default())?;
    let fs = Fs::mount(dev, &MountOptions::default())?;
    let m = work::run(&Dax { fs }, plan, progress)?;
    Ok(m)
}
