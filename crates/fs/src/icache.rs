//! Bounding the inode cache: inodes nobody uses are dropped from memory
//! (and read from the inode tree again on next use).
//!
//! An inode may go when nothing but the cache holds it (no open handle, no
//! view, no operation under way: each of those holds the `Arc`), its record
//! has no changes the inode tree lacks (`dirty`, or an in-place write's
//! times in `Meta::in_place`), no lazy transaction changed it since it was
//! last made durable, and it is not the root. Its record in memory then
//! equals the one the trees (through the node cache) give, so reading it
//! again gives the same inode. Checked under the cache's lock, through which
//! alone a new holder can appear.
use crate::inode::Inode;
use crate::tx::InPlaceSet;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Inodes kept in memory by default before unused ones are dropped.
pub(crate) const DEFAULT_LIMIT: usize = 1 << 16;

/// Whether inode `i`, held by `map` only, may be dropped.
fn unused(i: &Arc<Inode>, root: u64, in_place: &[u64]) -> bool {
    if Arc::strong_count(i) != 1 || i.ino == root || i.opens.load(Ordering::SeqCst) != 0 {
        return false;
    }
    if i.lazy.load(Ordering::SeqCst) || !i.views.is_empty() || in_place.contains(&i.ino) {
        return false;
    }
    match i.rec.try_lock() {
        Ok(g) => !g.dirty,
        Err(_) => false,
    }
}

/// With more than `limit` inodes in `map`, drops unused ones until a
/// quarter of the limit is free again (so that the scan, which visits every
/// inode, runs once per a quarter of `limit` inodes read, not once per
/// inode); an inode in use stays however many there are.
pub(crate) fn trim(
    map: &mut HashMap<u64, Arc<Inode>>,
    limit: usize,
    root: u64,
    in_place: &InPlaceSet,
) {
    if map.len() <= limit {
        return;
    }
    let target = limit - limit / 4;
    let in_place = in_place.lock().clone();
    let mut excess = map.len() - target;
    map.retain(|_, i| {
        if excess == 0 || !unused(i, root, &in_place) {
            return true;
        }
        excess -= 1;
        false
    });
}

impl crate::Fs {
    /// How many inodes are in memory. Not part of the API.
    #[doc(hidden)]
    pub fn cached_inodes(&self) -> usize {
        crate::fs::lock(&self.inner.icache).len()
    }

    /// Sets how many inodes are kept in memory before unused ones are
    /// dropped (at least 4). Not part of the API.
    #[doc(hidden)]
    pub fn set_inode_cache_limit(&self, n: usize) {
        self.inner.icache_limit.store(n.max(4), Ordering::Relaxed);
    }
}
