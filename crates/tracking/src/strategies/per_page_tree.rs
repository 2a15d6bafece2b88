//! Strategy 3: a per-page tree of `(mapping, index)` pairs, the 2020 dax-rmap
//! patch set.
//!
//! Seed 004 (Ruan, quoted by Wilcox, Apr 2020): "In order to track multiple
//! mappings and indexes on one page, I introduced a dax-rmap rb-tree to manage
//! the relationship. A dax entry will be associated more than once if is
//! shared. At the second time we associate this entry, we create this rb-tree
//! and store its root in page->private (not used in fsdax). Insert
//! (->mapping, ->index) when dax_associate_entry() and delete it when
//! dax_disassociate_entry()."
//!
//! Per page: empty, one owner in the `(mapping, index)` fields, or the root of
//! a balanced tree holding every owner once a second one arrives. The tree is
//! dissolved back into the fields when one owner remains. Tree nodes are
//! fixed-size slots of one arena (the kernel would `kmalloc` a node of an
//! `rb_node` plus two words per owner); the answer is exact.

use crate::event::{Event, FileId, Phys};
use crate::index::{FsQuery, OwnerIndex, Owners, PageOwner};
use crate::strategies::{PageArray, PerPage, Slot, SlotState, per_page};
use crate::treap::{Forest, NIL};

/// See the module doc.
pub struct PerPageTree {
    slots: PageArray<Slot>,
    trees: Forest<(u64, u64), ()>,
}

impl PerPageTree {
    /// An empty index for a device of `device_pages` pages.
    pub fn new(device_pages: u64) -> Self {
        PerPageTree {
            slots: PageArray::new(device_pages, Slot::EMPTY),
            trees: Forest::new(),
        }
    }

    /// Tree nodes alive (one per owner of each shared page).
    pub fn nodes(&self) -> usize {
        self.trees.live()
    }

    /// Bytes of one tree node.
    pub fn node_bytes() -> usize {
        Forest::<(u64, u64), ()>::node_bytes()
    }
}

fn key(o: PageOwner) -> (u64, u64) {
    (o.file.0, o.index)
}

impl PerPage for PerPageTree {
    fn associate(&mut self, phys: u64, owner: PageOwner) {
        let s = *self.slots.at(phys);
        let new = match s.state() {
            SlotState::Empty => Slot::owner(owner),
            SlotState::Owner(first) => {
                let r = self.trees.insert(NIL, key(first), ());
                Slot::mark(u64::from(self.trees.insert(r, key(owner), ())))
            }
            SlotState::Mark(root) => {
                Slot::mark(u64::from(self.trees.insert(root as u32, key(owner), ())))
            }
        };
        *self.slots.at(phys) = new;
    }

    fn disassociate(&mut self, phys: u64, owner: PageOwner) {
        let s = *self.slots.at(phys);
        let new = match s.state() {
            SlotState::Empty => Slot::EMPTY,
            SlotState::Owner(o) => {
                debug_assert_eq!(o, owner, "page {phys} released by a non-owner");
                Slot::EMPTY
            }
            SlotState::Mark(root) => {
                let (r, v) = self.trees.remove(root as u32, &key(owner));
                debug_assert!(v.is_some(), "page {phys} released by a non-owner");
                match self.trees.only(r) {
                    Some((f, i)) => {
                        self.trees.clear(r);
                        Slot::owner(PageOwner {
                            file: FileId(f),
                            index: i,
                        })
                    }
                    None if r == NIL => Slot::EMPTY,
                    None => Slot::mark(u64::from(r)),
                }
            }
        };
        *self.slots.at(phys) = new;
    }
}

impl OwnerIndex for PerPageTree {
    fn name(&self) -> &'static str {
        "page-tree"
    }

    fn on_event(&mut self, e: &Event) {
        per_page(self, e);
    }

    fn owners(&self, phys: Phys, fs: &dyn FsQuery) -> Owners {
        match self.slots.get(phys.0).state() {
            SlotState::Empty => Owners::default(),
            SlotState::Owner(o) => Owners::resolve(vec![o], fs),
            SlotState::Mark(root) => {
                let mut v = Vec::new();
                self.trees.for_each(root as u32, &mut |&(f, i), _| {
                    v.push(PageOwner {
                        file: FileId(f),
                        index: i,
                    })
                });
                Owners::resolve(v, fs)
            }
        }
    }

    fn memory_bytes(&self) -> usize {
        self.slots.bytes() + self.trees.memory_bytes()
    }
}
