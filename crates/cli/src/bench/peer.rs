//! The peer: the same workloads on a plain file in the benchmark directory
//! (tmpfs for /dev/shm) through system calls, so every daxfs figure has a
//! conventional counterpart measured on the same memory in the same run.
use super::Plan;
use super::stats::{Samples, Scratch, sample};
use super::workload::{self, FileFigures, Subject};
use anyhow::{Context, Result};
use std::fs::File;
use std::hint::black_box;
use std::io::Write;
use std::os::unix::fs::FileExt;

struct PeerFile(File);

impl Subject for PeerFile {
    fn write(&self, off: u64, data: &[u8]) -> Result<()> {
        Ok(self.0.write_all_at(data, off)?)
    }
    fn write_durable(&self, off: u64, data: &[u8]) -> Result<()> {
        self.0.write_all_at(data, off)?;
        Ok(self.0.sync_data()?)
    }
    fn read(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        Ok(self.0.read_exact_at(buf, off)?)
    }
    fn fsync(&self) -> Result<()> {
        Ok(self.0.sync_all()?)
    }
    fn truncate(&self) -> Result<()> {
        Ok(self.0.set_len(0)?)
    }
}

/// The file workloads on a new file in the benchmark directory.
pub fn files(plan: &Plan) -> Result<FileFigures> {
    let scratch = Scratch::new(&plan.dir, "peer.dat");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(scratch.path())
        .with_context(|| format!("creating {}", scratch.path().display()))?;
    workload::run(&PeerFile(f), plan)
}

/// create + write 4 KiB + fsync + close of `plan.files` new files in one
/// new directory.
pub fn small_files(plan: &Plan) -> Result<Samples> {
    let scratch = Scratch::new(&plan.dir, "peer-small");
    std::fs::create_dir(scratch.path())
        .with_context(|| format!("creating {}", scratch.path().display()))?;
    let warm = plan.files / 20;
    let names: Vec<_> = (0..warm + plan.files)
        .map(|i| scratch.path().join(format!("f{i:07}")))
        .collect();
    let data = vec![0x42u8; 4096];
    sample(warm, plan.files, |i| {
        let mut f = File::create_new(&names[i])?;
        f.write_all(black_box(&data))?;
        f.sync_all()?;
        drop(f);
        Ok(())
    })
}
