//! Container image layers and the containers started from them.
//!
//! A base layer of small files is written. Each further layer reflinks every
//! file of the layer below (dropping a few, as whiteouts do), rewrites part of
//! some files and adds new ones. Containers then start from one of the top
//! image layers: each reflinks the whole image as its root file system, maps
//! some files (binaries, libraries), and writes to a few; when too many run,
//! the oldest is stopped and its files deleted. Full size: a 20,000-file base
//! (mean 12 pages), 10 layers, 400 containers started with 200 running.

use std::collections::VecDeque;

use crate::event::{FileId, MappingId};
use crate::rng::Rng;
use crate::tracked::{FsResult, TrackedFs};
use crate::workloads::{Workload, scale_count};

/// See the module doc.
#[derive(Clone, Debug)]
pub struct ContainerLayers {
    /// Files in the base layer.
    pub base_files: u64,
    /// Mean file size, in pages (sizes are 1 + exponential, capped at 4096).
    pub mean_file_pages: u64,
    /// Layers, including the base.
    pub layers: u64,
    /// Fraction of files partly rewritten in each new layer.
    pub change_fraction: f64,
    /// New files per layer, as a fraction of the layer's files.
    pub add_fraction: f64,
    /// Fraction of files each new layer drops.
    pub delete_fraction: f64,
    /// Containers started.
    pub containers: u64,
    /// Containers running at once; older ones are stopped and deleted.
    pub running: u64,
    /// Containers pick their image among this many top layers.
    pub image_choices: u64,
    /// Fraction of a container's files it maps.
    pub mmap_fraction: f64,
    /// Fraction of a container's files it writes to (1 to 4 pages each).
    pub write_fraction: f64,
    /// Random seed.
    pub seed: u64,
}

impl ContainerLayers {
    /// 20,000 base files, 10 layers, 400 containers with 200 running.
    pub fn full(seed: u64) -> Self {
        ContainerLayers {
            base_files: 20_000,
            mean_file_pages: 12,
            layers: 10,
            change_fraction: 0.05,
            add_fraction: 0.02,
            delete_fraction: 0.01,
            containers: 400,
            running: 200,
            image_choices: 3,
            mmap_fraction: 0.05,
            write_fraction: 0.01,
            seed,
        }
    }

    /// The full set-up with fewer files per layer; same layers and containers.
    pub fn scaled(scale: f64, seed: u64) -> Self {
        let f = Self::full(seed);
        ContainerLayers {
            base_files: scale_count(f.base_files, scale, 20),
            ..f
        }
    }

    /// 40 base files, 4 layers, 12 containers with 6 running.
    pub fn small(seed: u64) -> Self {
        ContainerLayers {
            base_files: 40,
            mean_file_pages: 6,
            layers: 4,
            containers: 12,
            running: 6,
            change_fraction: 0.2,
            add_fraction: 0.1,
            delete_fraction: 0.05,
            mmap_fraction: 0.2,
            write_fraction: 0.2,
            ..Self::full(seed)
        }
    }

    fn file_pages(&self, rng: &mut Rng) -> u64 {
        let mean = (self.mean_file_pages.max(1) - 1) as f64;
        let x = -(1.0 - rng.unit()).ln() * mean;
        (1 + x as u64).min(4096)
    }

    /// Rewrites a random run of up to `max` pages inside `f`.
    fn touch(fs: &mut dyn TrackedFs, rng: &mut Rng, f: FileId, max: u64) -> FsResult<()> {
        let size = fs.size(f)?;
        if size == 0 {
            return Ok(());
        }
        let len = rng.between(1, max.clamp(1, size));
        let at = rng.below(size - len + 1);
        fs.write(f, at, len)
    }
}

impl Workload for ContainerLayers {
    fn name(&self) -> &'static str {
        "container-layers"
    }

    fn what(&self) -> &'static str {
        "image layers reflinked from one another, containers reflinking an image"
    }

    fn params(&self) -> String {
        format!(
            "{} base files (mean {} pages), {} layers ({}% changed, {}% added, {}% dropped each), \
             {} containers ({} running) mapping {}% and writing {}% of their files",
            self.base_files,
            self.mean_file_pages,
            self.layers,
            self.change_fraction * 100.0,
            self.add_fraction * 100.0,
            self.delete_fraction * 100.0,
            self.containers,
            self.running,
            self.mmap_fraction * 100.0,
            self.write_fraction * 100.0
        )
    }

    fn run(&self, fs: &mut dyn TrackedFs) -> FsResult<()> {
        let mut rng = Rng::new(self.seed ^ 0x636f6e74);
        let mut layers: Vec<Vec<FileId>> = Vec::new();
        let mut base = Vec::new();
        for _ in 0..self.base_files {
            let f = fs.create()?;
            let n = self.file_pages(&mut rng);
            fs.write(f, 0, n)?;
            base.push(f);
        }
        layers.push(base);
        for _ in 1..self.layers {
            let below = layers.last().cloned().unwrap_or_default();
            let mut cur = Vec::with_capacity(below.len());
            for f in below {
                if rng.chance(self.delete_fraction) {
                    continue;
                }
                let g = fs.clone_file(f)?;
                if rng.chance(self.change_fraction) {
                    let size = fs.size(g)?;
                    Self::touch(fs, &mut rng, g, size.div_ceil(4))?;
                }
                cur.push(g);
            }
            let added = (cur.len() as f64 * self.add_fraction).round() as u64;
            for _ in 0..added {
                let g = fs.create()?;
                let n = self.file_pages(&mut rng);
                fs.write(g, 0, n)?;
                cur.push(g);
            }
            layers.push(cur);
        }
        let mut running: VecDeque<(Vec<FileId>, Vec<MappingId>)> = VecDeque::new();
        for _ in 0..self.containers {
            let pick = rng.below(self.image_choices.min(layers.len() as u64)) as usize;
            let image = &layers[layers.len() - 1 - pick];
            let mut files = Vec::with_capacity(image.len());
            let mut maps = Vec::new();
            for &f in image {
                let g = fs.clone_file(f)?;
                if rng.chance(self.mmap_fraction) {
                    let size = fs.size(g)?;
                    maps.push(fs.mmap(g, 0, size)?);
                }
                if rng.chance(self.write_fraction) {
                    Self::touch(fs, &mut rng, g, 4)?;
                }
                files.push(g);
            }
            running.push_back((files, maps));
            if running.len() as u64 > self.running
                && let Some((files, maps)) = running.pop_front()
            {
                for m in maps {
                    fs.munmap(m)?;
                }
                for f in files {
                    fs.delete(f)?;
                }
            }
        }
        Ok(())
    }
}
