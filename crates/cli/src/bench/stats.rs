//! Timing, sampling and scratch-file helpers shared by the benchmarks.
use anyhow::Result;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Latency samples in nanoseconds, sorted once for percentile queries.
pub struct Samples(Vec<u64>);

impl Samples {
    pub fn new(mut ns: Vec<u64>) -> Samples {
        ns.sort_unstable();
        Samples(ns)
    }

    /// The nearest-rank percentile `p` (0 < p <= 1), in microseconds.
    pub fn pct_us(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        let rank = (p * self.0.len() as f64).ceil() as usize;
        self.0[rank.clamp(1, self.0.len()) - 1] as f64 / 1e3
    }

    /// The median in microseconds.
    pub fn p50(&self) -> f64 {
        self.pct_us(0.50)
    }

    /// The 99th percentile in microseconds.
    pub fn p99(&self) -> f64 {
        self.pct_us(0.99)
    }

    /// The mean in microseconds.
    pub fn mean_us(&self) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        self.0.iter().sum::<u64>() as f64 / self.0.len() as f64 / 1e3
    }

    /// The sum of all samples in milliseconds.
    pub fn total_ms(&self) -> f64 {
        self.0.iter().sum::<u64>() as f64 / 1e6
    }

    /// The number of samples.
    pub fn count(&self) -> usize {
        self.0.len()
    }

    /// The median in milliseconds.
    pub fn p50_ms(&self) -> f64 {
        self.p50() / 1e3
    }
}

/// Runs `f(0..warm)` untimed, so that page faults, first-touch allocation and
/// lazily loaded metadata do not land in the samples, then times each of
/// `f(warm..warm + n)` on its own. What `f` returns is dropped after the clock
/// is read, so tearing down (unmounting, unmapping) is not counted.
pub fn sample<T>(warm: usize, n: usize, mut f: impl FnMut(usize) -> Result<T>) -> Result<Samples> {
    let mut s = interleaved(warm, n, 1, n.max(1), |_, i| f(i))?;
    Ok(s.pop().unwrap_or_else(|| Samples::new(vec![])))
}

/// Runs `f(k, i)` for operations `i` in `0..warm + n` on each of `configs`
/// configurations `k`, in batches of `batch` operations per configuration,
/// timing each operation after the first `warm` (what `f` returns is
/// dropped after the clock is read): one configuration's samples per entry.
pub fn interleaved<T>(
    warm: usize,
    n: usize,
    configs: usize,
    batch: usize,
    mut f: impl FnMut(usize, usize) -> Result<T>,
) -> Result<Vec<Samples>> {
    let mut ns: Vec<Vec<u64>> = vec![Vec::with_capacity(n); configs];
    let mut i = 0;
    while i < warm + n {
        let end = (i + batch.max(1)).min(warm + n);
        for (k, ns) in ns.iter_mut().enumerate() {
            for op in i..end {
                let t = Instant::now();
                let out = f(k, op)?;
                if op >= warm {
                    ns.push(t.elapsed().as_nanos() as u64);
                }
                drop(out);
            }
        }
        i = end;
    }
    Ok(ns.into_iter().map(Samples::new).collect())
}

/// The best bandwidth in GB/s (10^9 bytes per second) over `passes` runs of
/// `f`, each moving `bytes`. The best rather than the mean: on a shared
/// machine noise only ever slows a pass down, so the fastest pass is the
/// closest to what the code can do, and the memcpy limit it is compared
/// with is taken the same way.
pub fn best_gbps(passes: usize, bytes: u64, mut f: impl FnMut(usize) -> Result<()>) -> Result<f64> {
    let mut best = f64::MAX;
    for i in 0..passes {
        let t = Instant::now();
        f(i)?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(bytes as f64 / best / 1e9)
}

/// A small, fast, seedable generator (splitmix64): the offsets only need to
/// defeat prefetching and be the same from run to run.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// `n` offsets, multiples of `unit`, with `[off, off + unit)` inside `[0, len)`.
    pub fn offsets(&mut self, n: usize, len: u64, unit: u64) -> Vec<u64> {
        let slots = (len / unit).max(1);
        (0..n).map(|_| self.next_u64() % slots * unit).collect()
    }
}

/// A file or directory the benchmark made, removed when the guard drops:
/// on success, on error and on panic alike.
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    /// A guard for `dir/daxfs-bench-PID-what`. The process id keeps two
    /// concurrent runs in the same directory apart.
    pub fn new(dir: &Path, what: &str) -> Scratch {
        Scratch {
            path: dir.join(format!("daxfs-bench-{}-{what}", std::process::id())),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) if m.is_dir() => {
                let _ = std::fs::remove_dir_all(&self.path);
            }
            Ok(_) => {
                let _ = std::fs::remove_file(&self.path);
            }
            Err(_) => {}
        }
        // An image's bad-block list, written beside it when a bench injects
        // media errors.
        let _ = std::fs::remove_file(daxfs_device::sidecar_path(&self.path));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let s = Samples::new((1..=100).rev().map(|x| x * 1000).collect());
        assert_eq!(s.p50(), 50.0);
        assert_eq!(s.p99(), 99.0);
        assert_eq!(s.pct_us(1.0), 100.0);
        assert_eq!(Samples::new(vec![]).p50(), 0.0);
    }

    #[test]
    fn offsets_stay_in_range() {
        let mut r = Rng::new(7);
        for o in r.offsets(1000, 10 * 4096, 4096) {
            assert_eq!(o % 4096, 0);
            assert!(o + 4096 <= 10 * 4096);
        }
    }

    #[test]
    fn scratch_is_removed() {
        let dir = std::env::temp_dir();
        let p;
        {
            let s = Scratch::new(&dir, "guard-test");
            std::fs::create_dir(s.path()).unwrap();
            std::fs::write(s.path().join("x"), b"x").unwrap();
            p = s.path().to_path_buf();
        }
        assert!(!p.exists());
    }

    #[test]
    fn scratch_image_goes_with_its_bad_block_list() {
        let dir = std::env::temp_dir();
        let (img, side);
        {
            let s = Scratch::new(&dir, "guard-test.img");
            std::fs::write(s.path(), b"image").unwrap();
            side = daxfs_device::sidecar_path(s.path());
            std::fs::write(&side, b"8 8\n").unwrap();
            img = s.path().to_path_buf();
        }
        assert!(!img.exists());
        assert!(!side.exists());
    }

    #[test]
    fn mean_of_samples() {
        assert_eq!(Samples::new(vec![1000, 2000, 6000]).mean_us(), 3.0);
        assert_eq!(Samples::new(vec![]).mean_us(), 0.0);
    }
}
