//! A deduplicated store: files written whole, then deduplicated chunk by chunk
//! against earlier copies, as an offline deduplication daemon does.
//!
//! The stored content is drawn so that most chunks recur 2 to 50 times
//! (log-uniform), some occur once, and a few (zero blocks, common libraries)
//! recur 51 to 1,000 times; the chunks are shuffled over the files. Files
//! arrive in batches; after each batch the daemon replaces every chunk whose
//! content is already stored by a reference to the first copy (FIDEDUPERANGE,
//! the same extent changes as a clone), merging neighbouring chunks into one
//! call. At the end a fraction of the files expire and readers map some of the
//! rest. Full size: 64 GiB of logical data in 1 MiB files, 16 KiB chunks.

use crate::event::FileId;
use crate::rng::Rng;
use crate::tracked::{FsResult, TrackedFs};
use crate::workloads::{Workload, scale_count};

/// See the module doc.
#[derive(Clone, Debug)]
pub struct DedupStore {
    /// Logical pages written, over all files.
    pub logical_pages: u64,
    /// Pages per file.
    pub file_pages: u64,
    /// Pages per deduplication chunk.
    pub chunk_pages: u64,
    /// Fraction of distinct chunks stored once.
    pub unique_fraction: f64,
    /// Fraction of distinct chunks recurring 51 to 1,000 times.
    pub heavy_fraction: f64,
    /// Files per batch between deduplication passes.
    pub batch_files: u64,
    /// Fraction of files deleted at the end.
    pub delete_fraction: f64,
    /// Fraction of the remaining files mapped by readers.
    pub mmap_fraction: f64,
    /// Random seed.
    pub seed: u64,
}

impl DedupStore {
    /// 64 GiB of 1 MiB files in 16 KiB chunks.
    pub fn full(seed: u64) -> Self {
        DedupStore {
            logical_pages: 1 << 24,
            file_pages: 256,
            chunk_pages: 4,
            unique_fraction: 0.15,
            heavy_fraction: 0.02,
            batch_files: 64,
            delete_fraction: 0.1,
            mmap_fraction: 0.05,
            seed,
        }
    }

    /// Less logical data; the same sharing distribution.
    pub fn scaled(scale: f64, seed: u64) -> Self {
        let f = Self::full(seed);
        DedupStore {
            logical_pages: scale_count(f.logical_pages, scale, 4 * f.file_pages),
            ..f
        }
    }

    /// 32 MiB of 256 KiB files.
    pub fn small(seed: u64) -> Self {
        DedupStore {
            logical_pages: 8192,
            file_pages: 64,
            batch_files: 16,
            mmap_fraction: 0.2,
            ..Self::full(seed)
        }
    }

    /// The content id of every logical chunk.
    fn contents(&self, rng: &mut Rng) -> Vec<u32> {
        let chunks = (self.logical_pages / self.chunk_pages) as usize;
        let mut v = Vec::with_capacity(chunks + 1000);
        let mut c = 0u32;
        while v.len() < chunks {
            let u = rng.unit();
            let k = if u < self.unique_fraction {
                1
            } else if u < self.unique_fraction + self.heavy_fraction {
                rng.log_uniform(51, 1000)
            } else {
                rng.log_uniform(2, 50)
            };
            v.extend(std::iter::repeat_n(c, k as usize));
            c += 1;
        }
        v.truncate(chunks);
        rng.shuffle(&mut v);
        v
    }
}

impl Workload for DedupStore {
    fn name(&self) -> &'static str {
        "dedup-store"
    }

    fn what(&self) -> &'static str {
        "files deduplicated chunk by chunk; most chunks shared 2 to 50 ways"
    }

    fn params(&self) -> String {
        format!(
            "{} MiB logical in {}-page files, {}-page chunks ({}% unique, {}% shared 51-1000 ways, rest 2-50), \
             dedupe every {} files, {}% deleted, {}% mapped",
            (self.logical_pages * crate::PAGE_SIZE) >> 20,
            self.file_pages,
            self.chunk_pages,
            self.unique_fraction * 100.0,
            self.heavy_fraction * 100.0,
            self.batch_files,
            self.delete_fraction * 100.0,
            self.mmap_fraction * 100.0
        )
    }

    fn run(&self, fs: &mut dyn TrackedFs) -> FsResult<()> {
        let mut rng = Rng::new(self.seed ^ 0x6465_6475);
        let contents = self.contents(&mut rng);
        let cpf = (self.file_pages / self.chunk_pages) as usize;
        let nfiles = contents.len() / cpf;
        let mut canonical: Vec<Option<(FileId, u64)>> = vec![None; contents.len()];
        let mut files = Vec::with_capacity(nfiles);
        for batch in (0..nfiles)
            .collect::<Vec<_>>()
            .chunks(self.batch_files as usize)
        {
            let first = files.len();
            for _ in batch {
                let f = fs.create()?;
                fs.write(f, 0, self.file_pages)?;
                files.push(f);
            }
            for (k, &fi) in batch.iter().enumerate() {
                let f = files[first + k];
                // A pending dedupe run: (source file, source page, destination page, pages).
                let mut run: Option<(FileId, u64, u64, u64)> = None;
                for j in 0..cpf {
                    let c = contents[fi * cpf + j] as usize;
                    let at = j as u64 * self.chunk_pages;
                    match canonical[c] {
                        None => {
                            canonical[c] = Some((f, at));
                            if let Some((sf, si, di, n)) = run.take() {
                                fs.dedupe_range(sf, si, f, di, n)?;
                            }
                        }
                        Some((sf, si)) => match &mut run {
                            Some((rf, rsi, rdi, n))
                                if *rf == sf && *rsi + *n == si && *rdi + *n == at =>
                            {
                                *n += self.chunk_pages;
                            }
                            _ => {
                                if let Some((pf, psi, pdi, n)) =
                                    run.replace((sf, si, at, self.chunk_pages))
                                {
                                    fs.dedupe_range(pf, psi, f, pdi, n)?;
                                }
                            }
                        },
                    }
                }
                if let Some((sf, si, di, n)) = run.take() {
                    fs.dedupe_range(sf, si, f, di, n)?;
                }
            }
        }
        let n = files.len() as u64;
        let gone = rng.sample(n, (n as f64 * self.delete_fraction).round() as u64);
        let mut alive = vec![true; files.len()];
        for i in gone {
            fs.delete(files[i as usize])?;
            alive[i as usize] = false;
        }
        for (i, &f) in files.iter().enumerate() {
            if alive[i] && rng.chance(self.mmap_fraction) {
                fs.mmap(f, 0, self.file_pages)?;
            }
        }
        Ok(())
    }
}
