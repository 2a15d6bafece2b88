//! Strategy 1: one `(mapping, index)` per page, as Linux did before 6.0.
//!
//! Every DAX page carried a single owner in `page->mapping` and `page->index`.
//! Seed 001 (Hellwig, quoted by Chinner, Oct 2019): "page->mapping and
//! page->index can point back to exactly one file", and Chinner:
//! "dax_associate_entry/dax_disassociate_entry can only work for a 1:1
//! page:mapping,index relationship". Seed 000 (Ruan, Aug 2020) describes the
//! non-reflink case: "page->mapping,->index stores the file's mapping, offset
//! in file. A dax page is not shared by other files. dax_associate_entry() is
//! called only once."
//!
//! This is a faithful model of what that code did when a page *was* shared
//! (XFS refused DAX with reflink then, so nobody relied on it):
//! `dax_associate_entry` warned (`WARN_ON_ONCE(page->mapping)`) and then
//! overwrote the fields, so the **last** `(file, index)` to claim the page
//! wins; `dax_disassociate_entry` cleared the fields unconditionally, so
//! **any** owner letting go (a copy-on-write, a delete) leaves the page with no
//! recorded owner even though others still use it. Unshared pages are
//! answered exactly; shared ones lose owners. Memory-failure then walks the
//! one recorded file's mappings.

use crate::event::{Event, Phys};
use crate::index::{FsQuery, OwnerIndex, Owners, PageOwner};
use crate::strategies::{PageArray, PerPage, Slot, SlotState, per_page};

/// See the module doc.
pub struct PerPageSingle {
    slots: PageArray<Slot>,
    overwrites: u64,
}

impl PerPageSingle {
    /// An empty index for a device of `device_pages` pages.
    pub fn new(device_pages: u64) -> Self {
        PerPageSingle {
            slots: PageArray::new(device_pages, Slot::EMPTY),
            overwrites: 0,
        }
    }

    /// How often an association overwrote another owner (the kernel's
    /// `WARN_ON_ONCE` would have fired).
    pub fn overwrites(&self) -> u64 {
        self.overwrites
    }

    /// The owner recorded for `phys`, if any.
    pub fn recorded(&self, phys: Phys) -> Option<PageOwner> {
        match self.slots.get(phys.0).state() {
            SlotState::Owner(o) => Some(o),
            _ => None,
        }
    }
}

impl PerPage for PerPageSingle {
    fn associate(&mut self, phys: u64, owner: PageOwner) {
        let s = self.slots.at(phys);
        if *s != Slot::EMPTY {
            self.overwrites += 1;
        }
        *s = Slot::owner(owner);
    }

    fn disassociate(&mut self, phys: u64, _owner: PageOwner) {
        *self.slots.at(phys) = Slot::EMPTY;
    }
}

impl OwnerIndex for PerPageSingle {
    fn name(&self) -> &'static str {
        "single"
    }

    fn on_event(&mut self, e: &Event) {
        per_page(self, e);
    }

    fn owners(&self, phys: Phys, fs: &dyn FsQuery) -> Owners {
        match self.recorded(phys) {
            Some(o) => Owners::resolve(vec![o], fs),
            None => Owners::default(),
        }
    }

    fn memory_bytes(&self) -> usize {
        self.slots.bytes()
    }
}
