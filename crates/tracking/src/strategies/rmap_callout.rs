//! Strategy 7: no per-page state at all; the file system's reverse map is
//! asked at failure time (Chinner, 2020).
//!
//! Seed 002 (Chinner, Mar 2020): "the dax_associate_page() related
//! functionality probably needs to be a filesystem callout", and "XFS can then
//! make use of rmapbt to find the owners on a bad page notification, and run
//! the 'kill userspace dead dead dead' lookup on each mapping/index tuple".
//! Seed 004 (Chinner, Apr 2020): "The filesystem can do an efficient,
//! on-demand reverse mapping lookup from it's own extent tracking
//! infrastructure, and there's zero runtime overhead when there are no errors
//! present."
//!
//! Events are ignored; every lookup goes through [`FsQuery::owners_of`]. With
//! the in-memory model that is the model's interval-tree reverse map; with
//! daxfs it is daxfs's own reverse map ([`crate::DaxfsTracked`] asks
//! `Fs::owners`), which the file system keeps anyway (for repair, scrub and
//! reporting lost data), so this design adds nothing of its own. What that
//! map costs is measured beside it: see the crate README.

use crate::event::{Event, Phys};
use crate::index::{FsQuery, OwnerIndex, Owners};

/// See the module doc.
#[derive(Default)]
pub struct RmapCallout;

impl RmapCallout {
    /// The (stateless) index.
    pub fn new() -> Self {
        RmapCallout
    }
}

impl OwnerIndex for RmapCallout {
    fn name(&self) -> &'static str {
        "rmap-callout"
    }

    fn on_event(&mut self, _e: &Event) {}

    fn owners(&self, phys: Phys, fs: &dyn FsQuery) -> Owners {
        let mut v = Vec::new();
        fs.owners_of(phys, &mut v);
        Owners::resolve(v, fs)
    }

    fn memory_bytes(&self) -> usize {
        0
    }
}
