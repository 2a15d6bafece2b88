//! The seven owner-tracking designs from the DAX + reflink debate.
//!
//! | # | module | design | proposed in |
//! |---|---|---|---|
//! | 1 | [`per_page_single`] | one `(mapping, index)` per page | Linux before 6.0 |
//! | 2 | [`per_page_share_count`] | per-page share count, file system asked at failure | Ruan, Aug 2020 (seed 000); Linux 6.0–6.14 |
//! | 3 | [`per_page_tree`] | per-page tree of `(mapping, index)` | Ruan's dax-rmap RFC, Apr 2020 (seed 004) |
//! | 4 | [`per_extent_space`] | an owner space per shared extent | Wilcox's reply (seed 004) |
//! | 5 | [`shadow_pages`] | per-mapping shadow pages over a master page | Chinner, Oct 2019 (seed 001) |
//! | 6 | [`refcount_only`] | page reference counts only, file system asked at failure | Popple, Apr 2024 (seed 003) |
//! | 7 | [`rmap_callout`] | no per-page state: reverse-map callout | Chinner, Mar and Apr 2020 (seeds 002, 004) |
//!
//! Strategies 1, 2, 3, 5 and 6 keep dense per-physical-page state, the way
//! Linux keeps fields in `struct page` for every page of the device; they are
//! sized for the device when built. In a user-space file system nothing
//! provides that array for free, so its bytes are counted.

use crate::event::{Event, FileId};
use crate::index::{OwnerIndex, PageOwner};

pub mod per_extent_space;
pub mod per_page_share_count;
pub mod per_page_single;
pub mod per_page_tree;
pub mod refcount_only;
pub mod rmap_callout;
pub mod shadow_pages;

pub use per_extent_space::PerExtentSpace;
pub use per_page_share_count::PerPageShareCount;
pub use per_page_single::PerPageSingle;
pub use per_page_tree::PerPageTree;
pub use refcount_only::RefcountOnly;
pub use rmap_callout::RmapCallout;
pub use shadow_pages::ShadowPages;

/// The seven designs, for building and labelling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Strategy {
    /// 1: [`PerPageSingle`].
    PerPageSingle,
    /// 2: [`PerPageShareCount`].
    PerPageShareCount,
    /// 3: [`PerPageTree`].
    PerPageTree,
    /// 4: [`PerExtentSpace`].
    PerExtentSpace,
    /// 5: [`ShadowPages`].
    ShadowPages,
    /// 6: [`RefcountOnly`].
    RefcountOnly,
    /// 7: [`RmapCallout`].
    RmapCallout,
}

impl Strategy {
    /// All seven, in order.
    pub const ALL: [Strategy; 7] = [
        Strategy::PerPageSingle,
        Strategy::PerPageShareCount,
        Strategy::PerPageTree,
        Strategy::PerExtentSpace,
        Strategy::ShadowPages,
        Strategy::RefcountOnly,
        Strategy::RmapCallout,
    ];

    /// The design's number, 1 to 7.
    pub const fn number(self) -> u8 {
        match self {
            Strategy::PerPageSingle => 1,
            Strategy::PerPageShareCount => 2,
            Strategy::PerPageTree => 3,
            Strategy::PerExtentSpace => 4,
            Strategy::ShadowPages => 5,
            Strategy::RefcountOnly => 6,
            Strategy::RmapCallout => 7,
        }
    }

    /// The short name its [`OwnerIndex::name`] returns.
    pub const fn name(self) -> &'static str {
        match self {
            Strategy::PerPageSingle => "single",
            Strategy::PerPageShareCount => "share-count",
            Strategy::PerPageTree => "page-tree",
            Strategy::PerExtentSpace => "extent-space",
            Strategy::ShadowPages => "shadow",
            Strategy::RefcountOnly => "refcount",
            Strategy::RmapCallout => "rmap-callout",
        }
    }

    /// One line: what it is and where it comes from.
    pub const fn title(self) -> &'static str {
        match self {
            Strategy::PerPageSingle => "one (mapping, index) per page (Linux < 6.0)",
            Strategy::PerPageShareCount => "share count, fs asked at failure (Linux 6.0-6.14)",
            Strategy::PerPageTree => "per-page tree of owners (dax-rmap RFC 2020)",
            Strategy::PerExtentSpace => "owner space per shared extent (Wilcox 2020)",
            Strategy::ShadowPages => "shadow pages over a master page (Chinner 2019)",
            Strategy::RefcountOnly => "page refcounts only, fs asked at failure (Popple 2024)",
            Strategy::RmapCallout => "no state, reverse-map callout (Chinner 2020)",
        }
    }

    /// Builds an empty index for a device of `device_pages` pages.
    pub fn build(self, device_pages: u64) -> Box<dyn OwnerIndex> {
        match self {
            Strategy::PerPageSingle => Box::new(PerPageSingle::new(device_pages)),
            Strategy::PerPageShareCount => Box::new(PerPageShareCount::new(device_pages)),
            Strategy::PerPageTree => Box::new(PerPageTree::new(device_pages)),
            Strategy::PerExtentSpace => Box::new(PerExtentSpace::new()),
            Strategy::ShadowPages => Box::new(ShadowPages::new(device_pages)),
            Strategy::RefcountOnly => Box::new(RefcountOnly::new(device_pages)),
            Strategy::RmapCallout => Box::new(RmapCallout::new()),
        }
    }
}

/// Two machine words of per-page state, like `page->mapping` and
/// `page->index`: empty, one owner, or a marker with a payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    a: u64,
    b: u64,
}

const A_EMPTY: u64 = u64::MAX;
const A_MARK: u64 = u64::MAX - 1;

/// What a [`Slot`] holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SlotState {
    Empty,
    Owner(PageOwner),
    Mark(u64),
}

impl Slot {
    pub(crate) const EMPTY: Slot = Slot { a: A_EMPTY, b: 0 };

    pub(crate) fn owner(o: PageOwner) -> Slot {
        debug_assert!(o.file.0 < A_MARK, "file id collides with a slot marker");
        Slot {
            a: o.file.0,
            b: o.index,
        }
    }

    pub(crate) fn mark(payload: u64) -> Slot {
        Slot {
            a: A_MARK,
            b: payload,
        }
    }

    pub(crate) fn state(self) -> SlotState {
        match self.a {
            A_EMPTY => SlotState::Empty,
            A_MARK => SlotState::Mark(self.b),
            f => SlotState::Owner(PageOwner {
                file: FileId(f),
                index: self.b,
            }),
        }
    }
}

/// Dense per-page state covering the device, grown if an event goes past it.
pub(crate) struct PageArray<T: Copy> {
    pub(crate) v: Vec<T>,
    fill: T,
}

impl<T: Copy> PageArray<T> {
    pub(crate) fn new(pages: u64, fill: T) -> Self {
        PageArray {
            v: vec![fill; pages as usize],
            fill,
        }
    }

    pub(crate) fn get(&self, p: u64) -> T {
        self.v.get(p as usize).copied().unwrap_or(self.fill)
    }

    pub(crate) fn at(&mut self, p: u64) -> &mut T {
        let i = p as usize;
        if i >= self.v.len() {
            self.v.resize(i + 1, self.fill);
        }
        &mut self.v[i]
    }

    pub(crate) fn bytes(&self) -> usize {
        crate::mem::vec_bytes(&self.v)
    }
}

/// A design that reacts to each page gaining or losing an owner.
pub(crate) trait PerPage {
    fn associate(&mut self, phys: u64, owner: PageOwner);
    fn disassociate(&mut self, phys: u64, owner: PageOwner);
}

/// Breaks an extent event into per-page associations, the way the DAX layer
/// does it page by page (`dax_associate_entry` / `dax_disassociate_entry`).
pub(crate) fn per_page(s: &mut impl PerPage, e: &Event) {
    match *e {
        Event::Map {
            file,
            index,
            phys,
            len,
        }
        | Event::Share {
            file,
            index,
            phys,
            len,
            ..
        } => {
            for k in 0..len {
                s.associate(
                    phys.0 + k,
                    PageOwner {
                        file,
                        index: index + k,
                    },
                );
            }
        }
        Event::Unmap {
            file,
            index,
            phys,
            len,
        } => {
            for k in 0..len {
                s.disassociate(
                    phys.0 + k,
                    PageOwner {
                        file,
                        index: index + k,
                    },
                );
            }
        }
        Event::Cow {
            file,
            index,
            old,
            new,
            len,
        } => {
            for k in 0..len {
                s.disassociate(
                    old.0 + k,
                    PageOwner {
                        file,
                        index: index + k,
                    },
                );
                s.associate(
                    new.0 + k,
                    PageOwner {
                        file,
                        index: index + k,
                    },
                );
            }
        }
        Event::MmapFile { .. } | Event::MunmapFile { .. } => {}
    }
}
