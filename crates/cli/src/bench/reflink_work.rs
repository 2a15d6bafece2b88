//! The sharing workloads, written once and run against daxfs and against the
//! XFS peer, so both sides do exactly the same work in the same order.
use super::Plan;
use crate::bench::stats::{Rng, Samples};
use anyhow::{Result, bail};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Bytes per block on both sides (daxfs's block size; the XFS peer is made
/// with the same).
pub const BS: u64 = 4096;
/// Sequential writes that build the large files are done in chunks of this.
const CHUNK: u64 = 1 << 20;

/// A file system under test, seen through the operations the workloads need.
/// Paths are relative to the file system's root.
pub trait Side {
    type File;
    /// Creates (or truncates) a regular file, open for reading and writing.
    fn create(&self, path: &str) -> Result<Self::File>;
    fn mkdir(&self, path: &str) -> Result<()>;
    fn remove(&self, path: &str) -> Result<()>;
    /// Writes `data` at `off`; durable only after [`Side::fsync`].
    fn write(&self, f: &Self::File, off: u64, data: &[u8]) -> Result<()>;
    /// Writes `data` at `off` and makes it durable before returning.
    fn write_durable(&self, f: &Self::File, off: u64, data: &[u8]) -> Result<()>;
    fn fsync(&self, f: &Self::File) -> Result<()>;
    /// Makes `dst` (empty) share all of `src`'s blocks, durably.
    fn clone_durable(&self, dst: &Self::File, src: &Self::File) -> Result<()>;
    /// The same clone without asking for durability: for sides whose clone
    /// is durable anyway, the same as [`Side::clone_durable`].
    fn clone_only(&self, dst: &Self::File, src: &Self::File) -> Result<()>;
    /// The file's data extents as (device byte offset, bytes), as the file
    /// system reports them; only used to check the files are what they are
    /// meant to be and to find a block to ask about.
    fn data_extents(&self, f: &Self::File) -> Result<Vec<(u64, u64)>>;
    /// Asks who owns device bytes `[phys, phys + len)` and returns how many
    /// owner records came back. `expect` is how many the caller expects, for
    /// sides that need a buffer sized up front.
    fn owners(&self, phys: u64, len: u64, expect: usize) -> Result<usize>;
    /// The fsmap of the whole device; returns the number of records.
    fn fsmap(&self) -> Result<usize>;
}

/// What one side measured.
pub struct Measured {
    /// Each clone of the contiguous file into a new file.
    pub clone_contig: Samples,
    /// The same, without asking for durability.
    pub clone_contig_nosync: Samples,
    /// Extents of the contiguous file, as the side reports them.
    pub contig_extents: usize,
    /// Each clone of the fragmented file into a new file.
    pub clone_frag: Samples,
    /// Extents of the fragmented file, as the side reports them.
    pub frag_extents: usize,
    /// Durable 4 KiB overwrites per second into a fresh clone (each one
    /// copies a block on write).
    pub cow_ops: f64,
    /// The same overwrites into a file that was never shared.
    pub own_ops: f64,
    /// Owner query of the block shared `plan.owners` ways.
    pub owner_query: Samples,
    /// Owner query of a block with one owner.
    pub single_query: Samples,
    /// fsmap of the whole device.
    pub fsmap: Samples,
    pub fsmap_records: usize,
    /// Untimed preparation steps and how long each took, in seconds: where a
    /// side is slow at building the workload, not only at the figures.
    pub phases: Vec<(&'static str, f64)>,
}

/// Times `f(i)` for `i = 0, 1, ...` until `budget` has passed and at least
/// `min` runs were made, or `max` runs were made: queries whose cost differs
/// by orders of magnitude between the sides get as many samples as fit.
pub fn sample_for<T>(
    budget: Duration,
    min: usize,
    max: usize,
    mut f: impl FnMut(usize) -> Result<T>,
) -> Result<Samples> {
    let start = Instant::now();
    let mut ns = vec![];
    let mut i = 0;
    while i < max && (i < min || start.elapsed() < budget) {
        let t = Instant::now();
        let out = f(i)?;
        ns.push(t.elapsed().as_nanos() as u64);
        drop(out);
        i += 1;
    }
    Ok(Samples::new(ns))
}

/// `k` distinct block numbers below `n`, in random order (a partial
/// Fisher-Yates shuffle): every overwrite of the fresh clone then lands on a
/// block still shared, so each one copies.
pub fn distinct_blocks(seed: u64, n: u64, k: usize) -> Vec<u64> {
    let mut all: Vec<u64> = (0..n).collect();
    let mut rng = Rng::new(seed);
    let k = k.min(all.len());
    for i in 0..k {
        let j = i + (rng.next_u64() % (all.len() - i) as u64) as usize;
        all.swap(i, j);
    }
    all.truncate(k);
    all
}

/// Runs every workload on `s`, which must be an empty file system.
pub fn run<S: Side>(s: &S, plan: &Plan, progress: &dyn Fn(&str)) -> Result<Measured> {
    let mut phases = vec![];
    let mut phase = |name: &'static str, t: Instant| phases.push((name, t.elapsed().as_secs_f64()));
    let mut chunk = vec![0u8; CHUNK as usize];
    for (i, b) in chunk.iter_mut().enumerate() {
        *b = (i % 253) as u8;
    }

    // The contiguous file to clone and copy on write, and a second one that
    // is never shared, both written sequentially in 1 MiB chunks.
    progress("writing the large files");
    let t = Instant::now();
    let src = s.create("src")?;
    let own = s.create("own")?;
    for f in [&src, &own] {
        for c in 0..plan.file_bytes / CHUNK {
            s.write(f, c * CHUNK, &chunk)?;
        }
        s.fsync(f)?;
    }
    phase("write 2 large files", t);
    let contig_extents = s.data_extents(&src)?.len();

    // The fragmented file: every other block written, from the last down.
    // Writing downwards never extends the file after the first write, so no
    // file system gets to preallocate past end of file and fill the holes.
    progress("writing the fragmented file");
    let t = Instant::now();
    let frag = s.create("frag")?;
    let block = vec![0x5au8; BS as usize];
    for i in (0..plan.extents).rev() {
        s.write(&frag, 2 * i * BS, &block)?;
    }
    s.fsync(&frag)?;
    phase("write fragmented file", t);
    let frag_extents = s.data_extents(&frag)?.len();
    if (frag_extents as u64) < plan.extents {
        bail!(
            "the fragmented file has {frag_extents} extents, not the {} written",
            plan.extents
        );
    }

    // Clones into new files. The new file is made and removed outside the
    // clock; one untimed clone first loads the source's mapping.
    progress("cloning");
    let clone_each = |src: &S::File, tag: &str, durable: bool| -> Result<Samples> {
        let mut ns = vec![];
        for i in 0..=plan.clones {
            let name = format!("{tag}{i}");
            let dst = s.create(&name)?;
            let t = Instant::now();
            if durable {
                s.clone_durable(&dst, src)?;
            } else {
                s.clone_only(&dst, src)?;
            }
            let el = t.elapsed().as_nanos() as u64;
            drop(dst);
            s.remove(&name)?;
            if i > 0 {
                ns.push(el);
            }
        }
        Ok(Samples::new(ns))
    };
    let clone_contig = clone_each(&src, "cc", true)?;
    let clone_contig_nosync = clone_each(&src, "cn", false)?;
    let clone_frag = clone_each(&frag, "fc", true)?;

    // Random durable 4 KiB overwrites: into a fresh clone of the contiguous
    // file (copy on write), then at the same places in the unshared file.
    progress("overwriting");
    let offs = distinct_blocks(0x0c0f, plan.file_bytes / BS, plan.cow_ops);
    let small = vec![0x77u8; BS as usize];
    let cow = s.create("cow")?;
    s.clone_durable(&cow, &src)?;
    let ops_per_s = |f: &S::File| -> Result<f64> {
        let t = Instant::now();
        for &b in &offs {
            s.write_durable(f, b * BS, black_box(&small))?;
        }
        Ok(offs.len() as f64 / t.elapsed().as_secs_f64())
    };
    let cow_ops = ops_per_s(&cow)?;
    let own_ops = ops_per_s(&own)?;

    // One block with `plan.owners` owners: a one-block file cloned into
    // `plan.owners - 1` new files.
    progress("making the block shared many ways");
    let t = Instant::now();
    let one = s.create("one")?;
    s.write(&one, 0, &block)?;
    s.fsync(&one)?;
    s.mkdir("o")?;
    for i in 1..plan.owners {
        let c = s.create(&format!("o/c{i:06}"))?;
        s.clone_durable(&c, &one)?;
    }
    phase("clone 1-block file into new files", t);
    let Some(&(shared, _)) = s.data_extents(&one)?.first() else {
        bail!("the one-block file has no extent");
    };
    let Some(&(single, _)) = s.data_extents(&own)?.first() else {
        bail!("the unshared file has no extent");
    };

    progress("querying owners");
    let budget = plan.query_budget;
    let expect = plan.owners as usize;
    let mut owner_records = 0;
    let owner_query = sample_for(budget, 5, 100_000, |_| {
        owner_records = s.owners(shared, BS, expect)?;
        Ok(())
    })?;
    if owner_records < expect {
        bail!("the shared block has {owner_records} owner records, not {expect}");
    }
    let mut single_records = 0;
    let single_query = sample_for(budget, 100, 100_000, |_| {
        single_records = s.owners(single, BS, 1)?;
        Ok(())
    })?;
    if single_records == 0 {
        bail!("the unshared block has no owner record");
    }
    progress("fsmap");
    let mut fsmap_records = 0;
    let fsmap = sample_for(budget, 3, 1_000, |_| {
        fsmap_records = s.fsmap()?;
        Ok(())
    })?;
    Ok(Measured {
        clone_contig,
        clone_contig_nosync,
        contig_extents,
        clone_frag,
        frag_extents,
        cow_ops,
        own_ops,
        owner_query,
        single_query,
        fsmap,
        fsmap_records,
        phases,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_blocks_are_distinct_and_in_range() {
        let mut v = distinct_blocks(3, 1000, 600);
        assert_eq!(v.len(), 600);
        assert!(v.iter().all(|&b| b < 1000));
        v.sort_unstable();
        v.dedup();
        assert_eq!(v.len(), 600);
        assert_eq!(distinct_blocks(3, 10, 50).len(), 10);
    }

    #[test]
    fn sample_for_respects_min_and_max() {
        let s = sample_for(Duration::ZERO, 4, 10, |_| Ok(())).unwrap();
        assert_eq!(s.count(), 4);
        let s = sample_for(Duration::from_secs(60), 1, 7, |_| Ok(())).unwrap();
        assert_eq!(s.count(), 7);
    }
}
