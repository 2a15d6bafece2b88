//! The file workloads, written once and run against daxfs and against the
//! peer (a tmpfs file through system calls), so both do exactly the same work.
use super::Plan;
use super::stats::{Rng, Samples, best_gbps, sample};
use anyhow::{Result, bail};
use std::hint::black_box;
use std::time::Instant;

/// Sequential I/O is done in chunks of this size.
pub const CHUNK: u64 = 1 << 20;
const K4: u64 = 4096;

/// A file under test.
pub trait Subject {
    /// Writes `data` at `off`.
    fn write(&self, off: u64, data: &[u8]) -> Result<()>;
    /// Writes `data` at `off` and makes it durable before returning (daxfs
    /// persists every write; the peer needs an fdatasync).
    fn write_durable(&self, off: u64, data: &[u8]) -> Result<()>;
    /// Fills `buf` from `off`; the range must lie inside the file.
    fn read(&self, off: u64, buf: &mut [u8]) -> Result<()>;
    /// Makes data and metadata durable.
    fn fsync(&self) -> Result<()>;
    /// Cuts the file to zero bytes, freeing its blocks.
    fn truncate(&self) -> Result<()>;
}

/// What the file workloads measured.
pub struct FileFigures {
    /// Size of the file.
    pub bytes: u64,
    /// Sequential writes into a new (empty) file, ending with fsync: GB/s.
    pub write: f64,
    /// Sequential overwrites of the whole file in place: GB/s.
    pub overwrite: f64,
    /// Sequential reads of the whole file: GB/s.
    pub read: f64,
    /// 4 KiB durable overwrites at random aligned offsets.
    pub rand_overwrite: Samples,
    /// 4 KiB reads at random aligned offsets.
    pub rand_read: Samples,
}

/// Runs every file workload on `s`, which must be empty; `plan.file_bytes`
/// is a multiple of [`CHUNK`].
pub fn run(s: &dyn Subject, plan: &Plan) -> Result<FileFigures> {
    let size = plan.file_bytes;
    let chunks = size / CHUNK;
    let mut buf = vec![0u8; CHUNK as usize];
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }

    // Each pass writes a new file: the first one the empty file, the later
    // ones the file cut back to zero (untimed), so every pass allocates.
    let mut best = f64::MAX;
    for pass in 0..plan.passes {
        if pass > 0 {
            s.truncate()?;
        }
        let t = Instant::now();
        for c in 0..chunks {
            s.write(c * CHUNK, black_box(&buf))?;
        }
        s.fsync()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    let write = size as f64 / best / 1e9;

    let overwrite = best_gbps(plan.passes, size, |_| {
        for c in 0..chunks {
            s.write(c * CHUNK, black_box(&buf))?;
        }
        s.fsync()
    })?;

    let mut rbuf = vec![0u8; CHUNK as usize];
    let read = best_gbps(plan.passes, size, |_| {
        for c in 0..chunks {
            s.read(c * CHUNK, &mut rbuf)?;
            black_box(&mut rbuf);
        }
        Ok(())
    })?;
    // The last chunk read must be what was written, or the figure is of
    // something other than reading the file.
    if rbuf != buf {
        bail!("sequential read returned bytes that were not written");
    }

    let n = plan.warm + plan.ops;
    let offs = Rng::new(0x0b).offsets(n, size, K4);
    let small = vec![0x77u8; K4 as usize];
    let rand_overwrite = sample(plan.warm, plan.ops, |i| {
        s.write_durable(offs[i], black_box(&small))
    })?;

    let offs = Rng::new(0x0c).offsets(n, size, K4);
    let mut sbuf = vec![0u8; K4 as usize];
    let rand_read = sample(plan.warm, plan.ops, |i| {
        s.read(offs[i], &mut sbuf)?;
        black_box(&mut sbuf);
        Ok(())
    })?;
    s.fsync()?;
    Ok(FileFigures {
        bytes: size,
        write,
        overwrite,
        read,
        rand_overwrite,
        rand_read,
    })
}
