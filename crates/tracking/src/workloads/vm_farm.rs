//! A farm of virtual machines cloned from one golden image.
//!
//! One image file is written, then reflinked once per VM (`cp --reflink`);
//! each clone is mapped whole by its hypervisor process. The VMs then run
//! concurrently: each writes a fraction of its disk in small random writes,
//! copying those pages out of the shared image. Full size: 1,000 clones of an
//! 8 GiB image (2,097,152 pages), 1% of each written in 4 KiB writes. Every
//! image page ends up shared up to 1,000 ways, minus the clones that wrote it.

use crate::rng::Rng;
use crate::tracked::{FsResult, TrackedFs};
use crate::workloads::{Workload, fill, scale_count};

/// See the module doc.
#[derive(Clone, Debug)]
pub struct VmFarm {
    /// Number of VMs (clones of the image).
    pub clones: u64,
    /// Image size in pages.
    pub image_pages: u64,
    /// Fraction of its pages each VM writes.
    pub write_fraction: f64,
    /// Pages per write.
    pub write_pages: u64,
    /// Random seed.
    pub seed: u64,
}

impl VmFarm {
    /// 1,000 clones of an 8 GiB image, 1% written in 4 KiB writes.
    pub fn full(seed: u64) -> Self {
        VmFarm {
            clones: 1000,
            image_pages: 1 << 21,
            write_fraction: 0.01,
            write_pages: 1,
            seed,
        }
    }

    /// The full farm with the image shrunk by `scale`; still 1,000 clones.
    pub fn scaled(scale: f64, seed: u64) -> Self {
        let f = Self::full(seed);
        VmFarm {
            image_pages: scale_count(f.image_pages, scale, 64),
            ..f
        }
    }

    /// 40 clones of a 256-page image, 5% written.
    pub fn small(seed: u64) -> Self {
        VmFarm {
            clones: 40,
            image_pages: 256,
            write_fraction: 0.05,
            write_pages: 1,
            seed,
        }
    }
}

impl Workload for VmFarm {
    fn name(&self) -> &'static str {
        "vm-farm"
    }

    fn what(&self) -> &'static str {
        "clones of one VM image, each mapped, each writing a little"
    }

    fn params(&self) -> String {
        format!(
            "{} clones of a {}-page image ({} MiB), {}% of each written in {}-page writes",
            self.clones,
            self.image_pages,
            (self.image_pages * crate::PAGE_SIZE) >> 20,
            self.write_fraction * 100.0,
            self.write_pages
        )
    }

    fn run(&self, fs: &mut dyn TrackedFs) -> FsResult<()> {
        let mut rng = Rng::new(self.seed ^ 0x766d);
        let base = fs.create()?;
        fill(fs, base, self.image_pages)?;
        let mut vms = Vec::with_capacity(self.clones as usize);
        for _ in 0..self.clones {
            let f = fs.clone_file(base)?;
            fs.mmap(f, 0, self.image_pages)?;
            vms.push(f);
        }
        let slots = self.image_pages / self.write_pages;
        let per_vm = ((self.image_pages as f64 * self.write_fraction) / self.write_pages as f64)
            .round() as u64;
        let mut writes = Vec::with_capacity((per_vm * self.clones) as usize);
        for &vm in &vms {
            for s in rng.sample(slots, per_vm) {
                writes.push((vm, s * self.write_pages));
            }
        }
        rng.shuffle(&mut writes);
        for (vm, at) in writes {
            fs.write(vm, at, self.write_pages)?;
        }
        Ok(())
    }
}
