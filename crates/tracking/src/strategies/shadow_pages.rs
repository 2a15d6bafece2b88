//! Strategy 5: shadow pages, one per `(mapping, index)` of a shared page,
//! pointing at one master page indexed by physical block (Chinner, 2019).
//!
//! Seed 001 (Chinner, Oct 2019): "I've proposed shadow pages (based on a
//! concept from Matthew Wilcox) for each read-only reflink mapping with the
//! real physical page being owned by the filesystem and indexed by LBA in the
//! filesystem buffer cache. [...] When a new page mapping occurs in a shared
//! extent, we add the page to the buffer cache [...] if it isn't already
//! present, then allocate a shadow page, point it at the master, set it up
//! with the new mapping,index tuple and add it to the mapping tree. [...] When
//! the page get's COWed, we toss away the shadow page and the master can be
//! reclaimed with the reference count goes to zero or the extent is no longer
//! shared."
//!
//! Per page: the `(mapping, index)` fields of an exclusive page, or a pointer
//! to its master once shared. A master heads a list of shadows, one per owner
//! (so the failure path can walk them); each shadow sits in its file's mapping
//! tree, here a hash table keyed by `(file, index)`, so a copy-on-write finds
//! and tosses it directly. When one owner remains, its shadow and the master
//! are freed and the page goes back to plain fields. The answer is exact.

use std::collections::HashMap;

use crate::event::{Event, FileId, Phys};
use crate::index::{FsQuery, OwnerIndex, Owners, PageOwner};
use crate::mem::IntBuild;
use crate::strategies::{PageArray, PerPage, Slot, SlotState, per_page};

const NIL: u32 = u32::MAX;

#[derive(Clone, Copy)]
struct Master {
    head: u32,
    count: u32,
}

#[derive(Clone, Copy)]
struct Shadow {
    file: u64,
    index: u64,
    master: u32,
    prev: u32,
    next: u32,
}

/// See the module doc.
pub struct ShadowPages {
    slots: PageArray<Slot>,
    masters: Vec<Master>,
    free_master: u32,
    shadows: Vec<Shadow>,
    free_shadow: u32,
    mapping_tree: HashMap<(u64, u64), u32, IntBuild>,
    live: usize,
}

impl ShadowPages {
    /// An empty index for a device of `device_pages` pages.
    pub fn new(device_pages: u64) -> Self {
        ShadowPages {
            slots: PageArray::new(device_pages, Slot::EMPTY),
            masters: Vec::new(),
            free_master: NIL,
            shadows: Vec::new(),
            free_shadow: NIL,
            mapping_tree: HashMap::default(),
            live: 0,
        }
    }

    /// Shadow pages alive.
    pub fn shadows(&self) -> usize {
        self.live
    }

    fn new_master(&mut self) -> u32 {
        let m = Master {
            head: NIL,
            count: 0,
        };
        if self.free_master != NIL {
            let id = self.free_master;
            self.free_master = self.masters[id as usize].head;
            self.masters[id as usize] = m;
            id
        } else {
            self.masters.push(m);
            (self.masters.len() - 1) as u32
        }
    }

    fn add_shadow(&mut self, m: u32, o: PageOwner) {
        let head = self.masters[m as usize].head;
        let s = Shadow {
            file: o.file.0,
            index: o.index,
            master: m,
            prev: NIL,
            next: head,
        };
        let id = if self.free_shadow != NIL {
            let id = self.free_shadow;
            self.free_shadow = self.shadows[id as usize].next;
            self.shadows[id as usize] = s;
            id
        } else {
            self.shadows.push(s);
            (self.shadows.len() - 1) as u32
        };
        if head != NIL {
            self.shadows[head as usize].prev = id;
        }
        let master = &mut self.masters[m as usize];
        master.head = id;
        master.count += 1;
        self.live += 1;
        self.mapping_tree.insert((o.file.0, o.index), id);
    }

    /// Unlinks and frees shadow `id`; returns its master.
    fn toss(&mut self, id: u32) -> u32 {
        let s = self.shadows[id as usize];
        if s.prev != NIL {
            self.shadows[s.prev as usize].next = s.next;
        } else {
            self.masters[s.master as usize].head = s.next;
        }
        if s.next != NIL {
            self.shadows[s.next as usize].prev = s.prev;
        }
        self.masters[s.master as usize].count -= 1;
        self.live -= 1;
        self.shadows[id as usize].next = self.free_shadow;
        self.free_shadow = id;
        s.master
    }
}

impl PerPage for ShadowPages {
    fn associate(&mut self, phys: u64, owner: PageOwner) {
        match self.slots.get(phys).state() {
            SlotState::Empty => *self.slots.at(phys) = Slot::owner(owner),
            SlotState::Owner(first) => {
                // The page becomes shared: it turns into a master in the
                // buffer cache, and both owners get shadows.
                let m = self.new_master();
                self.add_shadow(m, first);
                self.add_shadow(m, owner);
                *self.slots.at(phys) = Slot::mark(u64::from(m));
            }
            SlotState::Mark(m) => self.add_shadow(m as u32, owner),
        }
    }

    fn disassociate(&mut self, phys: u64, owner: PageOwner) {
        match self.slots.get(phys).state() {
            SlotState::Empty => {}
            SlotState::Owner(o) => {
                debug_assert_eq!(o, owner, "page {phys} released by a non-owner");
                *self.slots.at(phys) = Slot::EMPTY;
            }
            SlotState::Mark(_) => {
                let Some(id) = self.mapping_tree.remove(&(owner.file.0, owner.index)) else {
                    debug_assert!(false, "page {phys} released by a non-owner");
                    return;
                };
                let m = self.toss(id);
                let master = self.masters[m as usize];
                if master.count <= 1 {
                    // No longer shared: the last shadow folds back into the page.
                    let slot = if master.head != NIL {
                        let last = self.shadows[master.head as usize];
                        self.mapping_tree.remove(&(last.file, last.index));
                        self.toss(master.head);
                        Slot::owner(PageOwner {
                            file: FileId(last.file),
                            index: last.index,
                        })
                    } else {
                        Slot::EMPTY
                    };
                    self.masters[m as usize].head = self.free_master;
                    self.free_master = m;
                    *self.slots.at(phys) = slot;
                }
            }
        }
    }
}

impl OwnerIndex for ShadowPages {
    fn name(&self) -> &'static str {
        "shadow"
    }

    fn on_event(&mut self, e: &Event) {
        per_page(self, e);
    }

    fn owners(&self, phys: Phys, fs: &dyn FsQuery) -> Owners {
        match self.slots.get(phys.0).state() {
            SlotState::Empty => Owners::default(),
            SlotState::Owner(o) => Owners::resolve(vec![o], fs),
            SlotState::Mark(m) => {
                let mut v = Vec::new();
                let mut s = self.masters[m as usize].head;
                while s != NIL {
                    let sh = &self.shadows[s as usize];
                    v.push(PageOwner {
                        file: FileId(sh.file),
                        index: sh.index,
                    });
                    s = sh.next;
                }
                Owners::resolve(v, fs)
            }
        }
    }

    fn memory_bytes(&self) -> usize {
        self.slots.bytes()
            + crate::mem::vec_bytes(&self.masters)
            + crate::mem::vec_bytes(&self.shadows)
            + crate::mem::map_bytes(&self.mapping_tree)
    }
}
