//! Strategy 2: a per-page share count, with the file system asked at failure
//! time: the shape Linux shipped from 6.0 to 6.14.
//!
//! Seed 000 (Ruan, "fsdax: introduce FS query interface to support reflink",
//! Aug 2020): "We introduce page->zone_device_data as reflink counter, to
//! indicate that this page is shared and how many owners now is using this
//! page", and "owner's info is obtained by calling get_shared_files(), which
//! is implemented by FS". Linux 6.0 shipped it as `PAGE_MAPPING_DAX_COW` with
//! the count in `page->index`, 6.2 as `PAGE_MAPPING_DAX_SHARED` with
//! `page->share`.
//!
//! Per page: empty, one owner in the `(mapping, index)` fields, or "shared"
//! with a count. A page gaining a second owner becomes shared; each owner
//! leaving decrements the count and the page is cleared at zero (a page shared
//! once stays marked shared while one owner remains, as in
//! `dax_disassociate_entry`). At failure, an exclusive page is answered from
//! its fields and a shared one by asking the file system's reverse map.

use crate::event::{Event, Phys};
use crate::index::{FsQuery, OwnerIndex, Owners, PageOwner};
use crate::strategies::{PageArray, PerPage, Slot, SlotState, per_page};

/// See the module doc.
pub struct PerPageShareCount {
    slots: PageArray<Slot>,
}

impl PerPageShareCount {
    /// An empty index for a device of `device_pages` pages.
    pub fn new(device_pages: u64) -> Self {
        PerPageShareCount {
            slots: PageArray::new(device_pages, Slot::EMPTY),
        }
    }
}

impl PerPage for PerPageShareCount {
    fn associate(&mut self, phys: u64, owner: PageOwner) {
        let s = self.slots.at(phys);
        *s = match s.state() {
            SlotState::Empty => Slot::owner(owner),
            SlotState::Owner(_) => Slot::mark(2),
            SlotState::Mark(n) => Slot::mark(n + 1),
        };
    }

    fn disassociate(&mut self, phys: u64, _owner: PageOwner) {
        let s = self.slots.at(phys);
        *s = match s.state() {
            SlotState::Mark(n) if n > 1 => Slot::mark(n - 1),
            _ => Slot::EMPTY,
        };
    }
}

impl OwnerIndex for PerPageShareCount {
    fn name(&self) -> &'static str {
        "share-count"
    }

    fn on_event(&mut self, e: &Event) {
        per_page(self, e);
    }

    fn owners(&self, phys: Phys, fs: &dyn FsQuery) -> Owners {
        match self.slots.get(phys.0).state() {
            SlotState::Empty => Owners::default(),
            SlotState::Owner(o) => Owners::resolve(vec![o], fs),
            SlotState::Mark(_) => {
                let mut v = Vec::new();
                fs.owners_of(phys, &mut v);
                Owners::resolve(v, fs)
            }
        }
    }

    fn memory_bytes(&self) -> usize {
        self.slots.bytes()
    }
}
