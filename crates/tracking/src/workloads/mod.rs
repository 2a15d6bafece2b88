//! The workloads: drivers that perform file-system operations against a
//! [`TrackedFs`], whose event stream then drives the strategies.
//!
//! Each workload has full-size parameters ([`VmFarm::full`] and so on), a
//! scaled version that shrinks sizes (pages, files) but keeps fan-outs
//! (clones, layers, containers, snapshots, sharing degrees) and fractions, so
//! per-event and per-page figures carry over to full size, and a small
//! version for tests.

use crate::tracked::{FsResult, TrackedFs};

pub mod container_layers;
pub mod db_snapshots;
pub mod dedup_store;
pub mod vm_farm;

pub use container_layers::ContainerLayers;
pub use db_snapshots::DbSnapshots;
pub use dedup_store::DedupStore;
pub use vm_farm::VmFarm;

/// A parameterised workload.
pub trait Workload {
    /// Short identifier, e.g. `"vm-farm"`.
    fn name(&self) -> &'static str;
    /// What it models, in one line.
    fn what(&self) -> &'static str;
    /// Its parameters, in one line.
    fn params(&self) -> String;
    /// Performs the workload's operations on `fs`.
    fn run(&self, fs: &mut dyn TrackedFs) -> FsResult<()>;
}

/// The four workloads at `scale` (1.0 = full size), seeded with `seed`.
pub fn scaled(scale: f64, seed: u64) -> Vec<Box<dyn Workload>> {
    vec![
        Box::new(VmFarm::scaled(scale, seed)),
        Box::new(ContainerLayers::scaled(scale, seed)),
        Box::new(DedupStore::scaled(scale, seed)),
        Box::new(DbSnapshots::scaled(scale, seed)),
    ]
}

/// Small versions of the four workloads, for tests.
pub fn small(seed: u64) -> Vec<Box<dyn Workload>> {
    vec![
        Box::new(VmFarm::small(seed)),
        Box::new(ContainerLayers::small(seed)),
        Box::new(DedupStore::small(seed)),
        Box::new(DbSnapshots::small(seed)),
    ]
}

/// `n * scale`, rounded, at least `min`.
pub(crate) fn scale_count(n: u64, scale: f64, min: u64) -> u64 {
    ((n as f64 * scale).round() as u64).max(min)
}

/// Writes pages `[0, pages)` of `file` in 2 MiB writes, as a copy-in does.
pub(crate) fn fill(fs: &mut dyn TrackedFs, file: crate::FileId, pages: u64) -> FsResult<()> {
    let mut at = 0;
    while at < pages {
        let n = (pages - at).min(512);
        fs.write(file, at, n)?;
        at += n;
    }
    Ok(())
}
