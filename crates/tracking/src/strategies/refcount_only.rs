//! Strategy 6: page reference counts only, with the file system asked at
//! failure time (Popple, 2024).
//!
//! Seed 003 (Popple, "fs/dax: Don't track page mapping/index", Apr 2024): "FS
//! DAX implements it's own kind of page cache and rmap look ups so these
//! fields are unnecessary", and "A future change will change the way shared
//! mappings are detected by doing normal page reference counting instead".
//!
//! Per page: a 32-bit count of the file pages referencing it (the share count
//! folded into the page reference count), no `(mapping, index)` at all. The
//! count tells a free page (no owners, no question asked) from an owned one;
//! every owned page is resolved by the file system's reverse map, as the
//! `dax_holder_operations` callout does.

use crate::event::{Event, Phys};
use crate::index::{FsQuery, OwnerIndex, Owners, PageOwner};
use crate::strategies::{PageArray, PerPage, per_page};

/// See the module doc.
pub struct RefcountOnly {
    counts: PageArray<u32>,
}

impl RefcountOnly {
    /// An empty index for a device of `device_pages` pages.
    pub fn new(device_pages: u64) -> Self {
        RefcountOnly {
            counts: PageArray::new(device_pages, 0),
        }
    }
}

impl PerPage for RefcountOnly {
    fn associate(&mut self, phys: u64, _owner: PageOwner) {
        *self.counts.at(phys) += 1;
    }

    fn disassociate(&mut self, phys: u64, _owner: PageOwner) {
        let c = self.counts.at(phys);
        *c = c.saturating_sub(1);
    }
}

impl OwnerIndex for RefcountOnly {
    fn name(&self) -> &'static str {
        "refcount"
    }

    fn on_event(&mut self, e: &Event) {
        per_page(self, e);
    }

    fn owners(&self, phys: Phys, fs: &dyn FsQuery) -> Owners {
        if self.counts.get(phys.0) == 0 {
            return Owners::default();
        }
        let mut v = Vec::new();
        fs.owners_of(phys, &mut v);
        Owners::resolve(v, fs)
    }

    fn memory_bytes(&self) -> usize {
        self.counts.bytes()
    }
}
