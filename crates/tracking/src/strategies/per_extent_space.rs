//! Strategy 4: an owner space per shared extent (Wilcox's reply, 2020).
//!
//! Seed 004 (Wilcox, replying to the dax-rmap RFC, Apr 2020): "Do we really
//! want to track all of this on a per-page basis? I would have thought a
//! per-extent basis was more useful. Essentially, create a new address_space
//! for each shared extent. Per page just seems like a huge overhead."
//!
//! The physical space in use is cut into disjoint extents, each with one
//! owner space listing its owners as `(file, index of the extent's first
//! page)`; every page of an extent has the same owners at the same relative
//! offsets. A clone adds one owner to the spaces it covers (one entry per
//! extent, not per page); a copy-on-write or unmap splits the space at the
//! range boundaries, copying its owner list into the new pieces, and drops
//! the owner. Spaces are found by physical address in an ordered index. The
//! answer is exact; the cost is in the splits, which multiply owner lists
//! when writes scatter over a widely shared extent.

use crate::event::{Event, Phys};
use crate::index::{FsQuery, OwnerIndex, Owners, PageOwner};
use crate::treap::{Forest, NIL};

struct Space {
    start: u64,
    len: u64,
    owners: Vec<PageOwner>,
}

/// See the module doc.
pub struct PerExtentSpace {
    index: Forest<u64, u32>,
    root: u32,
    spaces: Vec<Space>,
    free: Vec<u32>,
    owner_bytes: usize,
    scratch: Vec<u32>,
}

impl Default for PerExtentSpace {
    fn default() -> Self {
        Self::new()
    }
}

const OWNER: usize = std::mem::size_of::<PageOwner>();

impl PerExtentSpace {
    /// An empty index.
    pub fn new() -> Self {
        PerExtentSpace {
            index: Forest::new(),
            root: NIL,
            spaces: Vec::new(),
            free: Vec::new(),
            owner_bytes: 0,
            scratch: Vec::new(),
        }
    }

    /// Extents (owner spaces) currently held.
    pub fn spaces(&self) -> usize {
        self.index.live()
    }

    fn add_space(&mut self, s: Space) {
        self.owner_bytes += s.owners.capacity() * OWNER;
        let start = s.start;
        let id = match self.free.pop() {
            Some(id) => {
                self.spaces[id as usize] = s;
                id
            }
            None => {
                self.spaces.push(s);
                u32::try_from(self.spaces.len() - 1).expect("more than 2^32 spaces")
            }
        };
        self.root = self.index.insert(self.root, start, id);
    }

    fn drop_space(&mut self, id: u32) {
        let s = &mut self.spaces[id as usize];
        self.owner_bytes -= s.owners.capacity() * OWNER;
        let owners = std::mem::take(&mut s.owners);
        drop(owners);
        let start = s.start;
        self.root = self.index.remove(self.root, &start).0;
        self.free.push(id);
    }

    /// Makes `at` the start of a space if a space straddles it.
    fn split_at(&mut self, at: u64) {
        let Some((start, id)) = self.index.floor(self.root, &at) else {
            return;
        };
        let s = &mut self.spaces[id as usize];
        if start == at || start + s.len <= at {
            return;
        }
        let off = at - start;
        let owners: Vec<PageOwner> = s
            .owners
            .iter()
            .map(|o| PageOwner {
                file: o.file,
                index: o.index + off,
            })
            .collect();
        let right = Space {
            start: at,
            len: s.len - off,
            owners,
        };
        s.len = off;
        self.add_space(right);
    }

    /// The ids of the spaces inside `[a, b)`, after splitting at both ends.
    fn spaces_in(&mut self, a: u64, b: u64) -> Vec<u32> {
        self.split_at(a);
        self.split_at(b);
        let mut ids = std::mem::take(&mut self.scratch);
        ids.clear();
        self.index
            .range(self.root, &a, &b, &mut |_, &id| ids.push(id));
        ids
    }

    fn map(&mut self, file: crate::event::FileId, index: u64, phys: u64, len: u64) {
        if phys > 0
            && let Some((start, id)) = self.index.floor(self.root, &(phys - 1))
        {
            let s = &mut self.spaces[id as usize];
            if start + s.len == phys
                && let [o] = s.owners.as_slice()
                && o.file == file
                && o.index + s.len == index
            {
                s.len += len;
                return;
            }
        }
        self.add_space(Space {
            start: phys,
            len,
            owners: vec![PageOwner { file, index }],
        });
    }

    fn share(&mut self, file: crate::event::FileId, index: u64, phys: u64, len: u64) {
        let ids = self.spaces_in(phys, phys + len);
        debug_assert_eq!(
            ids.iter()
                .map(|&i| self.spaces[i as usize].len)
                .sum::<u64>(),
            len,
            "share of unowned pages"
        );
        for &id in &ids {
            let s = &mut self.spaces[id as usize];
            let before = s.owners.capacity();
            s.owners.push(PageOwner {
                file,
                index: index + (s.start - phys),
            });
            self.owner_bytes += (s.owners.capacity() - before) * OWNER;
        }
        self.scratch = ids;
    }

    fn unmap(&mut self, file: crate::event::FileId, index: u64, phys: u64, len: u64) {
        let ids = self.spaces_in(phys, phys + len);
        for &id in &ids {
            let s = &mut self.spaces[id as usize];
            let want = PageOwner {
                file,
                index: index + (s.start - phys),
            };
            if let Some(pos) = s.owners.iter().position(|o| *o == want) {
                s.owners.swap_remove(pos);
            } else {
                debug_assert!(false, "unmap of {want:?} which does not own {}", s.start);
            }
            if s.owners.is_empty() {
                self.drop_space(id);
            }
        }
        self.scratch = ids;
    }
}

impl OwnerIndex for PerExtentSpace {
    fn name(&self) -> &'static str {
        "extent-space"
    }

    fn on_event(&mut self, e: &Event) {
        match *e {
            Event::Map {
                file,
                index,
                phys,
                len,
            } => self.map(file, index, phys.0, len),
            Event::Share {
                file,
                index,
                phys,
                len,
                ..
            } => self.share(file, index, phys.0, len),
            Event::Unmap {
                file,
                index,
                phys,
                len,
            } => self.unmap(file, index, phys.0, len),
            Event::Cow {
                file,
                index,
                old,
                new,
                len,
            } => {
                self.unmap(file, index, old.0, len);
                self.map(file, index, new.0, len);
            }
            Event::MmapFile { .. } | Event::MunmapFile { .. } => {}
        }
    }

    fn owners(&self, phys: Phys, fs: &dyn FsQuery) -> Owners {
        let p = phys.0;
        let Some((start, id)) = self.index.floor(self.root, &p) else {
            return Owners::default();
        };
        let s = &self.spaces[id as usize];
        if p >= start + s.len {
            return Owners::default();
        }
        let v = s
            .owners
            .iter()
            .map(|o| PageOwner {
                file: o.file,
                index: o.index + (p - start),
            })
            .collect();
        Owners::resolve(v, fs)
    }

    fn memory_bytes(&self) -> usize {
        self.index.memory_bytes()
            + crate::mem::vec_bytes(&self.spaces)
            + crate::mem::vec_bytes(&self.free)
            + crate::mem::vec_bytes(&self.scratch)
            + self.owner_bytes
    }
}
