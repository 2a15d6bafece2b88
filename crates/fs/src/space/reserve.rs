//! The metadata reserve: free blocks ordinary allocations may not take, so
//! that what must always succeed on a full device still finds blocks for
//! its tree nodes: putting a full intent area into the reverse map (sync,
//! unmount, mount, any commit the area cannot take), deleting (unlink,
//! truncate, punch, the last close of an unlinked file, mount's orphan
//! freeing) and handling a media-error report.
//!
//! Derived from the trees' fan-out and the device's size (DESIGN.md,
//! "Allocation", gives the reasoning): each of these is a batch of record
//! inserts into some trees, and [`growth`] bounds the nodes a batch can add.
use daxfs_format::records::{ErrorLogRecord, RefcountRecord, RmapRecord};
use daxfs_format::superblock::INCOMPAT_RMAP;
use daxfs_format::{BLOCK_SIZE, Superblock};

/// Bytes of a node after its header.
const AVAIL: u64 = BLOCK_SIZE as u64 - 64;

/// A tree's shape, as FORMAT.md's table gives it.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Records per leaf.
    pub leaf: u64,
    /// Children per internal node.
    pub internal: u64,
    /// Most records the tree can hold on the device (`None`: no bound but
    /// the number of blocks, as for the reverse map, whose records overlap).
    pub max_records: Option<u64>,
}

impl Shape {
    const fn new(key: u64, value: u64, summary: u64, max_records: Option<u64>) -> Shape {
        Shape {
            leaf: AVAIL / (key + value),
            internal: AVAIL / (key + 8 + summary),
            max_records,
        }
    }
}

fn size<T>() -> u64 {
    std::mem::size_of::<T>() as u64
}

/// The reverse map: 24-byte keys and records, an 8-byte summary.
pub fn rmap_shape() -> Shape {
    Shape::new(24, size::<RmapRecord>(), 8, None)
}

/// The free-space tree on a device of `total` blocks: free extents are
/// separated by allocated blocks, so there are at most `total / 2`.
pub fn free_shape(total: u64) -> Shape {
    Shape::new(8, 8, 0, Some(total / 2 + 1))
}

/// The refcount tree: records cover disjoint ranges of at least a block.
pub fn refcount_shape(total: u64) -> Shape {
    Shape::new(8, size::<RefcountRecord>(), 0, Some(total))
}

/// Trees keyed by one u64 with small records (orphan list, bad-block tree,
/// data-loss tree); the bound holds for any of them.
pub fn small_shape(total: u64) -> Shape {
    Shape::new(16, 8, 0, Some(total))
}

/// The error log.
pub fn error_log_shape() -> Shape {
    Shape::new(16, size::<ErrorLogRecord>(), 0, None)
}

/// The most nodes inserting a batch of `n` records can add to a tree of
/// `shape` on a device of `total` blocks, whatever the order of the
/// records. At each level a node splits only when full, and a split leaves
/// two nodes that each need at least a half node less one of new entries
/// before they split again (the tree splits in halves, or, appending past
/// its largest key, leaves the right node nearly empty). So the splits at a
/// level are at most the nodes that were full before plus one per half a
/// node of entries inserted there, and never more than those entries (a
/// split needs one); each split puts one entry into the level above, and the
/// root may split once more into a new root. The nodes full before are
/// bounded by what the level can hold: the records the tree can hold (or,
/// for the reverse map, whose records overlap, the device's blocks) over
/// the fan-out.
pub fn growth(n: u64, shape: Shape, total: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    let quarter = |c: u64| (c / 4).max(1);
    let refill = |c: u64| (c / 2).saturating_sub(1).max(1);
    // Entries a level can hold: records for the leaves.
    let (mut below, mut cap) = match shape.max_records {
        Some(r) => (r, shape.leaf),
        None => (total.saturating_mul(shape.leaf), shape.leaf),
    };
    let mut entries = n;
    let mut sum = 0;
    loop {
        let nodes = below.div_ceil(quarter(cap)).min(total);
        let full = (below / cap).min(total);
        let splits = entries.min(full + entries.div_ceil(refill(cap)));
        sum += splits;
        if nodes <= 1 || splits == 0 {
            break;
        }
        entries = splits;
        below = nodes;
        cap = shape.internal;
    }
    sum + 1
}

/// Levels of a tree of `shape` at its largest on a device of `total` blocks.
fn height(shape: Shape, total: u64) -> u64 {
    let quarter = |c: u64| (c / 4).max(1);
    let mut nodes = match shape.max_records {
        Some(r) => r.div_ceil(quarter(shape.leaf)).min(total),
        None => total,
    };
    let mut h = 1;
    while nodes > 1 {
        nodes = nodes.div_ceil(quarter(shape.internal));
        h += 1;
    }
    h
}

/// The most nodes inserting `n` records with neighbouring keys can add:
/// they fill new leaves half full at worst, and split one path up to a new
/// root.
pub fn clustered_growth(n: u64, shape: Shape, total: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    n.div_ceil((shape.leaf / 2).max(1)) + height(shape, total) + 1
}

/// Record changes a deletion that always fits in the reserve may make:
/// the extents of a file with up to one extent-tree leaf of them (168).
pub const DELETE_EXTENTS: u64 = 168;

/// Owners a media-error report that always fits in the reserve may name
/// (a block shared by up to 8 files; one with more uses what the reserve
/// has, and it has more than that needs in all but the worst case).
pub const REPORT_OWNERS: u64 = 8;

/// Blocks kept back from ordinary allocations on the file system of `sb`,
/// which keeps at most `intents` reverse-map intents pending.
pub fn reserve_blocks(sb: &Superblock, intents: u64) -> u64 {
    let total = sb.total_blocks.get();
    let rmap = sb.incompat.get() & INCOMPAT_RMAP != 0;
    // Nodes (not counting replicas) each kind of work can add.
    let flush = if rmap {
        growth(intents, rmap_shape(), total)
    } else {
        0
    };
    // A deletion: each extent freed is a free-space record and may split a
    // refcount record in two; an unlinked open file is an orphan record;
    // a loss ended in the middle splits a data-loss record.
    let delete = growth(DELETE_EXTENTS, free_shape(total), total)
        + growth(2 * DELETE_EXTENTS, refcount_shape(total), total)
        + 2 * growth(1, small_shape(total), total);
    // A report: the error-log entry and its owners, a data-loss record per
    // owner, the bad range, and a metadata node moved (a new node and its
    // reverse-map records).
    // The error log's keys are sequence numbers: new records go past the
    // largest.
    let report = clustered_growth(1 + REPORT_OWNERS, error_log_shape(), total)
        + growth(REPORT_OWNERS, small_shape(total), total)
        + growth(1, small_shape(total), total)
        + 1;
    let mut nodes = flush + delete + report;
    // Every block allocated is itself a free-space change (taking a block
    // out of a free extent splits it at most in two), and with the reverse
    // map each node and its replica are records. Blocks come from the free
    // extents in order (best fit, replicas from the top of the other half),
    // so those records have neighbouring keys. One more round of both, and
    // of the nodes that round makes, until a round adds nothing.
    let copies = if sb.has_replicas() { 2 } else { 1 };
    let mut round = nodes;
    for _ in 0..8 {
        let blocks = round * copies;
        let mut more = clustered_growth(blocks, free_shape(total), total);
        if rmap {
            more += clustered_growth(blocks, rmap_shape(), total);
        }
        if more >= round {
            // Small rounds are bounded by the paths they split.
            nodes += more;
            break;
        }
        round = more;
        nodes += more;
    }
    (nodes * copies).min(total / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_bounds_follow_the_fan_out() {
        let total = 4096;
        // One insert into a tree: at most one split per level and a root.
        let g1 = growth(1, rmap_shape(), total);
        assert!((2..=5).contains(&g1), "{g1}");
        // A batch can split no more leaves than it has records.
        let g = growth(128, rmap_shape(), total);
        assert!((129..128 * 2).contains(&g), "{g}");
        // A bigger device has room for more full internal nodes.
        assert!(growth(128, rmap_shape(), 1 << 20) > g);
        assert_eq!(growth(0, rmap_shape(), total), 0);
    }
}
#[cfg(test)]
mod figures {
    use super::*;
    use zerocopy::FromZeros;

    /// The reserve of a default file system (replicas, reverse map, log of
    /// 1/64 of the device) of `total` blocks.
    fn reserve_of(total: u64) -> u64 {
        let mut sb = Superblock::new_zeroed();
        sb.total_blocks = total.into();
        sb.incompat = (INCOMPAT_RMAP | daxfs_format::superblock::INCOMPAT_REPLICAS).into();
        sb.log_blocks = (total / 64).clamp(64, 16384).into();
        reserve_blocks(&sb, crate::tx::intent_limit(&sb) as u64)
    }

    /// The figures DESIGN.md gives ("Allocation").
    #[test]
    fn reserve_figures() {
        let got: Vec<u64> = [4096, 16384, 65536, 262144, 1 << 22]
            .into_iter()
            .map(reserve_of)
            .collect();
        assert_eq!(got, [288, 758, 1822, 2144, 3322]);
    }
}
