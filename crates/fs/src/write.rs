//! The write machinery shared by write(), zeroing, unsharing and size changes.
//!
//! A file range is split into runs that are holes, unwritten extents, or
//! written extents; written and unwritten runs are split again by owner
//! count. Each piece is then handled by its kind:
//! - a hole gets fresh blocks (when writing data);
//! - a block with one owner is written in place (unwritten ones are filled and
//!   converted);
//! - a block with several owners is copied on write: fresh blocks get the old
//!   bytes outside the written range (zeros where the old extent was
//!   unwritten) and the new bytes inside, then the file is remapped and one
//!   owner is dropped from the old blocks.
//!
//! Data reaches media (flushed; the caller fences) before the transaction that
//! maps it commits, so a crash leaves each file with its old or its new blocks.
use crate::error::{FsError, Result};
use crate::events::MapEvent;
use crate::extents::{Extent, ExtentMap};
use crate::space::refcount::Piece;
use crate::tx::Tx;
use daxfs_device::Device;
use daxfs_format::BLOCK_SIZE_U64;
use daxfs_format::records::EXTENT_UNWRITTEN;

const BS: u64 = BLOCK_SIZE_U64;

/// Where the bytes written into a range come from.
#[derive(Clone, Copy, Debug)]
pub enum Src<'a> {
    /// `data[0]` belongs at file offset `off`.
    Bytes { off: u64, data: &'a [u8] },
    /// Zeros.
    Zeros,
}

impl Src<'_> {
    /// Writes the source bytes for file range `[a, b)` at device offset `at`.
    fn put(&self, dev: &dyn Device, at: u64, a: u64, b: u64) -> Result<()> {
        if a >= b {
            return Ok(());
        }
        match *self {
            Src::Bytes { off, data } => {
                dev.write(at, &data[(a - off) as usize..(b - off) as usize])?
            }
            Src::Zeros => dev.fill(at, b - a, 0)?,
        }
        Ok(())
    }
}

/// Copies `len` device bytes from `from` to `to` (through a small buffer).
pub fn copy_dev(dev: &dyn Device, from: u64, to: u64, len: u64) -> Result<()> {
    let mut buf = vec![0u8; (64 * 1024).min(len as usize)];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        dev.read(from + done, &mut buf[..n])?;
        dev.write(to + done, &buf[..n])?;
        done += n as u64;
    }
    Ok(())
}

/// Fills fresh blocks `[fb, fb+len)` at `phys`: source bytes over
/// `[off, end)`, zeros elsewhere. Flushes them.
pub(crate) fn fill_fresh(
    dev: &dyn Device,
    fb: u64,
    phys: u64,
    len: u64,
    off: u64,
    end: u64,
    src: &Src<'_>,
) -> Result<()> {
    let (bs, be) = (fb * BS, (fb + len) * BS);
    let (a, b) = (off.clamp(bs, be), end.clamp(bs, be));
    if a > bs {
        dev.fill(phys * BS, a - bs, 0)?;
    }
    src.put(dev, phys * BS + (a - bs), a, b)?;
    if be > b.max(a) {
        let from = b.max(a);
        dev.fill(phys * BS + (from - bs), be - from, 0)?;
    }
    dev.flush(phys * BS, len * BS);
    Ok(())
}

/// Splits file blocks `[b0, b1)` into runs that are each wholly inside one
/// extent or wholly a hole: (first block, blocks, extent or None).
pub fn segments(map: &ExtentMap, b0: u64, b1: u64) -> Vec<(u64, u64, Option<Extent>)> {
    let mut out = vec![];
    let mut at = b0;
    for e in map.overlapping(b0, b1 - b0) {
        if e.fblock > at {
            out.push((at, e.fblock - at, None));
            at = e.fblock;
        }
        let stop = e.end().min(b1);
        out.push((at, stop - at, Some(e)));
        at = stop;
    }
    if at < b1 {
        out.push((at, b1 - at, None));
    }
    out
}

/// A run of a file range, by what writing it needs.
#[derive(Clone, Copy, Debug)]
enum Run {
    Hole {
        fb: u64,
        len: u64,
    },
    /// Mapped with one owner (or, for unshare, anything not shared).
    Own {
        fb: u64,
        len: u64,
        phys: u64,
        unwritten: bool,
    },
    /// Mapped and shared with other owners.
    Shared {
        fb: u64,
        len: u64,
        phys: u64,
        unwritten: bool,
    },
}

/// Classifies file blocks `[b0, b1)`.
fn runs(tx: &mut Tx<'_>, map: &ExtentMap, b0: u64, b1: u64) -> Result<Vec<Run>> {
    let mut out = vec![];
    for (fb, len, ext) in segments(map, b0, b1) {
        let Some(e) = ext else {
            out.push(Run::Hole { fb, len });
            continue;
        };
        let phys0 = e.phys + (fb - e.fblock);
        let mut pieces = if map.maybe_shared {
            tx.share_counts(phys0, len)?
        } else {
            vec![Piece {
                start: phys0,
                len,
                count: 1,
            }]
        };
        // Known-bad blocks are never written: treating them as shared makes
        // the write move them to fresh blocks (unwritten ones read as zeros;
        // written ones are lost and were unmapped before).
        let broot = tx.meta.sb.badblock_tree;
        if !broot.is_empty() {
            let mut split = vec![];
            for pc in pieces {
                let mut at = pc.start;
                for (bs, bl) in crate::space::badblocks::overlapping(tx, &broot, pc.start, pc.len)?
                {
                    if bs > at {
                        split.push(Piece {
                            start: at,
                            len: bs - at,
                            count: pc.count,
                        });
                    }
                    split.push(Piece {
                        start: bs,
                        len: bl,
                        count: pc.count.max(2),
                    });
                    at = bs + bl;
                }
                if at < pc.start + pc.len {
                    split.push(Piece {
                        start: at,
                        len: pc.start + pc.len - at,
                        count: pc.count,
                    });
                }
            }
            pieces = split;
        }
        for pc in pieces {
            let sfb = fb + (pc.start - phys0);
            let (unwritten, phys, len) = (e.unwritten(), pc.start, pc.len);
            out.push(if pc.count >= 2 {
                Run::Shared {
                    fb: sfb,
                    len,
                    phys,
                    unwritten,
                }
            } else {
                Run::Own {
                    fb: sfb,
                    len,
                    phys,
                    unwritten,
                }
            });
        }
    }
    Ok(out)
}

/// Replaces shared file blocks `[fb, fb+len)` (old device blocks at `old`) by
/// fresh blocks holding the old bytes, with `src` over `[off, end)` when given.
#[allow(clippy::too_many_arguments)]
fn cow(
    tx: &mut Tx<'_>,
    map: &mut ExtentMap,
    fb: u64,
    len: u64,
    old: u64,
    unwritten: bool,
    range: Option<(u64, u64, &Src<'_>)>,
    goal: &mut Option<u64>,
) -> Result<()> {
    let dev = tx.dev();
    let mut at = fb;
    while at < fb + len {
        let (p, l) = tx.alloc_extent(fb + len - at, *goal)?;
        let from = old + (at - fb);
        let flags = match (unwritten, range) {
            (true, None) => EXTENT_UNWRITTEN,
            (true, Some((off, end, src))) => {
                fill_fresh(dev, at, p, l, off, end, src)?;
                0
            }
            (false, range) => {
                let (bs, be) = (at * BS, (at + l) * BS);
                let (a, b) = match range {
                    Some((off, end, _)) => (off.clamp(bs, be), end.clamp(bs, be)),
                    None => (bs, bs),
                };
                if a >= b {
                    copy_dev(dev, from * BS, p * BS, be - bs)?;
                } else {
                    copy_dev(dev, from * BS, p * BS, a - bs)?;
                    if let Some((_, _, src)) = range {
                        src.put(dev, p * BS + (a - bs), a, b)?;
                    }
                    copy_dev(dev, from * BS + (b - bs), p * BS + (b - bs), be - b)?;
                }
                dev.flush(p * BS, l * BS);
                0
            }
        };
        tx.record(MapEvent::Cow {
            ino: map.ino,
            fblock: at,
            old: from,
            new: p,
            len: l,
        });
        for piece in map.unmap(at, l) {
            tx.release_extent(piece.phys, piece.len)?;
        }
        map.map(Extent {
            fblock: at,
            phys: p,
            len: l,
            flags,
        });
        *goal = Some(p + l);
        at += l;
    }
    Ok(())
}

/// Blocks that writing `src` over `[off, end)` would allocate.
pub fn blocks_needed(
    tx: &mut Tx<'_>,
    map: &ExtentMap,
    off: u64,
    end: u64,
    src: &Src<'_>,
    fill_holes: bool,
) -> Result<u64> {
    let zeros = matches!(src, Src::Zeros);
    let mut n = 0;
    for r in runs(tx, map, off / BS, end.div_ceil(BS))? {
        n += match r {
            Run::Hole { len, .. } if fill_holes => len,
            Run::Shared { unwritten, len, .. } if !(unwritten && zeros) => len,
            _ => 0,
        };
    }
    Ok(n)
}

/// Writes `src` over file range `[off, end)`: holes get fresh blocks when
/// `fill_holes`, owned blocks are written in place, shared blocks are copied
/// on write. Unwritten blocks written with zeros stay as they are. Flushes
/// every byte written; the caller fences and commits.
pub fn write_range(
    tx: &mut Tx<'_>,
    map: &mut ExtentMap,
    off: u64,
    end: u64,
    src: &Src<'_>,
    fill_holes: bool,
) -> Result<()> {
    if off >= end {
        return Ok(());
    }
    let dev = tx.dev();
    let zeros = matches!(src, Src::Zeros);
    let (b0, b1) = (off / BS, end.div_ceil(BS));
    let mut goal = map
        .last_before(b0)
        .or_else(|| map.iter().next_back().copied())
        .map(|e| e.phys + e.len);
    if b1 - b0 >= daxfs_format::HUGE_BLOCKS {
        goal = None; // let large runs start huge-page aligned
    }
    for r in runs(tx, map, b0, b1)? {
        match r {
            Run::Hole { fb, len } => {
                if !fill_holes {
                    continue;
                }
                let mut at = fb;
                while at < fb + len {
                    let (p, l) = tx.alloc_extent(fb + len - at, goal)?;
                    fill_fresh(dev, at, p, l, off, end, src)?;
                    tx.record(MapEvent::Map {
                        ino: map.ino,
                        fblock: at,
                        phys: p,
                        len: l,
                    });
                    map.map(Extent {
                        fblock: at,
                        phys: p,
                        len: l,
                        flags: 0,
                    });
                    goal = Some(p + l);
                    at += l;
                }
            }
            Run::Own {
                unwritten: true, ..
            }
            | Run::Shared {
                unwritten: true, ..
            } if zeros => {}
            Run::Own {
                fb,
                len,
                phys,
                unwritten: false,
            } => {
                let (a, b) = (off.max(fb * BS), end.min((fb + len) * BS));
                let at = phys * BS + (a - fb * BS);
                src.put(dev, at, a, b)?;
                dev.flush(at, b - a);
            }
            Run::Own {
                fb,
                len,
                phys,
                unwritten: true,
            } => {
                fill_fresh(dev, fb, phys, len, off, end, src)?;
                map.set_flags(fb, len, 0);
            }
            Run::Shared {
                fb,
                len,
                phys,
                unwritten,
            } => {
                cow(
                    tx,
                    map,
                    fb,
                    len,
                    phys,
                    unwritten,
                    Some((off, end, src)),
                    &mut goal,
                )?;
            }
        }
    }
    Ok(())
}

/// Zeroes file range `[off, end)` in fresh blocks: every written block it
/// touches is copied (the old bytes outside the range, zeros inside) and
/// remapped, so the zeros appear with the transaction's commit, not before.
/// Holes and unwritten blocks read as zeros already and stay. Flushes; the
/// caller fences and commits.
pub fn zero_by_copy(tx: &mut Tx<'_>, map: &mut ExtentMap, off: u64, end: u64) -> Result<()> {
    if off >= end {
        return Ok(());
    }
    let mut goal = None;
    for r in runs(tx, map, off / BS, end.div_ceil(BS))? {
        if let Run::Own {
            fb,
            len,
            phys,
            unwritten: false,
        }
        | Run::Shared {
            fb,
            len,
            phys,
            unwritten: false,
        } = r
        {
            cow(
                tx,
                map,
                fb,
                len,
                phys,
                false,
                Some((off, end, &Src::Zeros)),
                &mut goal,
            )?;
        }
    }
    Ok(())
}

/// Blocks [`zero_by_copy`] would allocate: the written ones it touches.
pub fn written_blocks(tx: &mut Tx<'_>, map: &ExtentMap, off: u64, end: u64) -> Result<u64> {
    if off >= end {
        return Ok(0);
    }
    Ok(runs(tx, map, off / BS, end.div_ceil(BS))?
        .iter()
        .map(|r| match *r {
            Run::Own {
                len,
                unwritten: false,
                ..
            }
            | Run::Shared {
                len,
                unwritten: false,
                ..
            } => len,
            _ => 0,
        })
        .sum())
}

/// Gives file blocks `[b0, b1)` blocks of their own: every shared block is
/// copied (unwritten ones re-allocated unwritten); holes stay holes. After
/// this, writes to the range need no allocation.
pub fn unshare_range(tx: &mut Tx<'_>, map: &mut ExtentMap, b0: u64, b1: u64) -> Result<()> {
    let runs = runs(tx, map, b0, b1)?;
    copy_shared(tx, map, runs)
}

/// Copies the shared runs of `runs` to blocks of the file's own.
fn copy_shared(tx: &mut Tx<'_>, map: &mut ExtentMap, runs: Vec<Run>) -> Result<()> {
    let mut goal = None;
    for r in runs {
        if let Run::Shared {
            fb,
            len,
            phys,
            unwritten,
        } = r
        {
            cow(tx, map, fb, len, phys, unwritten, None, &mut goal)?;
        }
    }
    Ok(())
}

/// [`unshare_range`] that first checks there is room for the shared blocks
/// it copies plus `extra` more (one look at the refcount tree instead of
/// [`shared_blocks`] then [`unshare_range`]); returns how many blocks it
/// copied.
pub fn unshare_range_checked(
    tx: &mut Tx<'_>,
    map: &mut ExtentMap,
    b0: u64,
    b1: u64,
    extra: u64,
    what: &str,
) -> Result<u64> {
    let runs = runs(tx, map, b0, b1)?;
    let shared: u64 = runs
        .iter()
        .map(|r| {
            if let Run::Shared { len, .. } = r {
                *len
            } else {
                0
            }
        })
        .sum();
    if shared + extra == 0 {
        return Ok(0);
    }
    check_space(tx, shared + extra, what)?;
    copy_shared(tx, map, runs)?;
    Ok(shared)
}

/// Checks there is room for `need` more blocks plus tree headroom.
pub fn check_space(tx: &Tx<'_>, need: u64, what: &str) -> Result<()> {
    if need + need / 64 + 16 > tx.free_blocks() {
        return Err(FsError::NoSpace(format!("{what} needs {need} blocks")));
    }
    Ok(())
}

/// Shared blocks among file blocks `[b0, b1)`.
pub fn shared_blocks(tx: &mut Tx<'_>, map: &ExtentMap, b0: u64, b1: u64) -> Result<u64> {
    Ok(runs(tx, map, b0, b1)?
        .iter()
        .map(|r| {
            if let Run::Shared { len, .. } = r {
                *len
            } else {
                0
            }
        })
        .sum())
}
