//! The owner-index interface and what it answers.

use crate::event::{Event, FileId, MappingId, Phys};

/// A page owner: file page `index` of `file`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PageOwner {
    /// The owning file.
    pub file: FileId,
    /// The file page (byte offset / page size).
    pub index: u64,
}

/// A mapping owner: address-space view `mapping` of `file` covers page `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MappedOwner {
    /// The mapping (address-space view).
    pub mapping: MappingId,
    /// The mapped file.
    pub file: FileId,
    /// The file page the mapping covers.
    pub index: u64,
}

/// What the file system answers at failure time ("ask the file system").
///
/// A real file system implements this over its reverse map (physical extent →
/// owning inode and offset) and its table of mappings. Strategies that keep no
/// or partial state call it from [`OwnerIndex::owners`]; the benchmark also uses
/// it as the ground truth.
pub trait FsQuery {
    /// Appends to `out` every `(file, index)` whose data lives in physical page
    /// `phys`, in any order. A free page has no owners.
    fn owners_of(&self, phys: Phys, out: &mut Vec<PageOwner>);

    /// Appends to `out` every mapping of `file` whose range covers file page
    /// `index`, in any order. This is the `i_mmap` walk of Linux: the same step
    /// for every strategy, because no strategy tracks address spaces per page.
    fn mappings_of(&self, file: FileId, index: u64, out: &mut Vec<MappingId>);

    /// Appends `(page, owner)` for every page owner of the physical pages
    /// `[first, first+pages)`, in any order: the census of a whole range,
    /// which a reverse map answers in one query. The default asks
    /// [`owners_of`](FsQuery::owners_of) page by page.
    fn owners_in(&self, first: Phys, pages: u64, out: &mut Vec<(Phys, PageOwner)>) {
        let mut v = Vec::new();
        for p in first.0..first.0 + pages {
            v.clear();
            self.owners_of(Phys(p), &mut v);
            out.extend(v.iter().map(|&o| (Phys(p), o)));
        }
    }
}

/// The answer to "who owns this physical page?".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Owners {
    /// Page owners, sorted, without duplicates.
    pub pages: Vec<PageOwner>,
    /// Mapping owners, sorted, without duplicates.
    pub mappings: Vec<MappedOwner>,
}

impl Owners {
    /// Builds the answer from page owners, finding the mappings of each owner
    /// through `fs`.
    pub fn resolve(mut pages: Vec<PageOwner>, fs: &dyn FsQuery) -> Owners {
        pages.sort_unstable();
        pages.dedup();
        let mut mappings = Vec::new();
        let mut ids = Vec::new();
        for p in &pages {
            ids.clear();
            fs.mappings_of(p.file, p.index, &mut ids);
            mappings.extend(ids.iter().map(|&mapping| MappedOwner {
                mapping,
                file: p.file,
                index: p.index,
            }));
        }
        mappings.sort_unstable();
        mappings.dedup();
        Owners { pages, mappings }
    }

    /// No owners at all.
    pub fn is_empty(&self) -> bool {
        self.pages.is_empty() && self.mappings.is_empty()
    }
}

/// One design for finding every owner of a physical page.
///
/// The file system feeds it every [`Event`] as it happens (the runtime cost
/// when no error ever occurs) and asks [`owners`](OwnerIndex::owners) when a
/// media error hits a physical page.
pub trait OwnerIndex {
    /// A short stable identifier, e.g. `"per-page-tree"`.
    fn name(&self) -> &'static str;

    /// Updates the index for one event.
    fn on_event(&mut self, e: &Event);

    /// Every owner of `phys` as this design knows it. `fs` is the file system,
    /// for designs that ask it at failure time.
    fn owners(&self, phys: Phys, fs: &dyn FsQuery) -> Owners;

    /// Bytes of memory the index holds now, counted from the capacities of
    /// what it allocated.
    fn memory_bytes(&self) -> usize;
}

/// Feeds every event of `events` to `index`.
pub fn replay(index: &mut dyn OwnerIndex, events: &[Event]) {
    for e in events {
        index.on_event(e);
    }
}

/// Counts of an answer against the truth.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Owners in the truth.
    pub truth: u64,
    /// Owners in both the answer and the truth.
    pub found: u64,
    /// Owners in the truth but not in the answer.
    pub missed: u64,
    /// Owners in the answer but not in the truth.
    pub spurious: u64,
}

impl Tally {
    /// Compares two sorted, duplicate-free slices.
    pub fn of<T: Ord>(answer: &[T], truth: &[T]) -> Tally {
        let (mut i, mut j) = (0, 0);
        let mut t = Tally {
            truth: truth.len() as u64,
            ..Tally::default()
        };
        while i < answer.len() && j < truth.len() {
            match answer[i].cmp(&truth[j]) {
                std::cmp::Ordering::Equal => {
                    t.found += 1;
                    i += 1;
                    j += 1;
                }
                std::cmp::Ordering::Less => {
                    t.spurious += 1;
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    t.missed += 1;
                    j += 1;
                }
            }
        }
        t.spurious += (answer.len() - i) as u64;
        t.missed += (truth.len() - j) as u64;
        t
    }

    /// Adds another tally to this one.
    pub fn add(&mut self, o: Tally) {
        self.truth += o.truth;
        self.found += o.found;
        self.missed += o.missed;
        self.spurious += o.spurious;
    }

    /// True when the answer was exactly the truth.
    pub fn exact(&self) -> bool {
        self.missed == 0 && self.spurious == 0
    }
}
