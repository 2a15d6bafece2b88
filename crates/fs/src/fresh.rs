//! Allocating writes into holes, with the data copied outside the metadata
//! lock.
//!
//! A write whose blocks are all holes (an append, a file written for the
//! first time, a write past end of file) goes in chunks of at most
//! [`CHUNK_BLOCKS`]. Each chunk:
//! 1. reserves its blocks under the metadata lock: they leave the in-memory
//!    free map and no transaction records them, so nothing durable refers to
//!    them (on media they are still free, and a crash leaves them free);
//! 2. drops the lock, copies the data into the blocks and persists it; other
//!    threads' transactions run meanwhile, and no reader can reach the
//!    blocks;
//! 3. takes the lock again and commits, in one transaction, the blocks'
//!    allocation (their free-space change), the mapping and the new size.
//!
//! A failure before the commit gives the blocks back to the free map. A
//! failure in a later chunk leaves the chunks committed before it: the
//! write returns how many bytes it wrote, as Linux gives a prefix. The
//! file's data lock is held throughout, so no other operation on the file
//! (write, truncate, clone, dedupe, fallocate) sees the chunk half done.
use crate::error::{FsError, Result};
use crate::events::MapEvent;
use crate::extents::{Extent, ExtentMap};
use crate::file::File;
use crate::fs::lock;
use crate::tx::{Meta, Tx};
use crate::write::{Src, fill_fresh};
use daxfs_device::{Device, DeviceError};
use daxfs_format::BLOCK_SIZE_U64;

const BS: u64 = BLOCK_SIZE_U64;

/// Most blocks one chunk reserves (4 MiB).
pub const CHUNK_BLOCKS: u64 = 1024;

/// Writes of fewer blocks keep the metadata lock while they copy (one lock
/// round instead of two; their copy is short).
pub const MIN_BLOCKS: u64 = 16;

/// Blocks a chunk holds: (file block, device block, length).
type Pieces = Vec<(u64, u64, u64)>;

/// Takes blocks for file blocks `[fb, fb+n)` out of the free map, leaving
/// the metadata reserve and headroom for the trees as an ordinary write
/// does. No transaction records them.
fn reserve(
    dev: &dyn Device,
    meta: &mut Meta,
    fb: u64,
    n: u64,
    goal: Option<u64>,
    what: &dyn Fn() -> String,
) -> Result<Pieces> {
    if let Some(why) = &meta.shutdown {
        return Err(FsError::Shutdown(why.clone()));
    }
    let tx = Tx::begin(dev, meta)?;
    crate::write::check_space(&tx, n + 1, &what())?;
    drop(tx);
    let mut out = vec![];
    let mut goal = goal;
    let mut at = fb;
    while at < fb + n {
        let Some((s, l)) = meta.free.pick(fb + n - at, goal) else {
            give_back(meta, &out);
            return Err(FsError::NoSpace(what()));
        };
        if !meta.free.remove(s, l) {
            give_back(meta, &out);
            return Err(FsError::Corrupt(format!(
                "free map lost blocks [{s}, +{l})"
            )));
        }
        out.push((at, s, l));
        goal = Some(s + l);
        at += l;
    }
    Ok(out)
}

/// Returns reserved blocks to the free map.
fn give_back(meta: &mut Meta, pieces: &[(u64, u64, u64)]) {
    for &(_, s, l) in pieces {
        if !meta.free.insert(s, l) {
            // Overlaps free space: the map is stale; reload it.
            meta.free_loaded = false;
        }
    }
}

/// Records the reserved blocks as allocated by `tx` (an abort of `tx`
/// frees them again). Blocks a media report made known-bad meanwhile stay
/// out of free space, and the other blocks go back: returns false then,
/// and the chunk is redone.
fn adopt(tx: &mut Tx<'_>, pieces: &[(u64, u64, u64)]) -> Result<bool> {
    // Back in the free map first: from here on an abort leaves everything
    // free, as media has it.
    give_back(tx.meta, pieces);
    let broot = tx.meta.sb.badblock_tree;
    let mut bad = vec![];
    for &(_, s, l) in pieces {
        bad.extend(crate::space::badblocks::overlapping(tx, &broot, s, l)?);
    }
    if !bad.is_empty() {
        for (s, l) in bad {
            tx.quarantine_free(s, l)?;
        }
        return Ok(false);
    }
    for &(_, s, l) in pieces {
        let took: u64 = tx.quarantine_free(s, l)?.iter().map(|p| p.1).sum();
        if took != l {
            return Err(FsError::Corrupt(format!(
                "reserved blocks [{s}, +{l}) were not free"
            )));
        }
    }
    Ok(true)
}

impl File {
    /// Writes `data` at `[off, end)`, whose blocks are all holes, chunk by
    /// chunk (see the module text). Returns the bytes written: all of
    /// them, or the chunks committed before a failure (an error when the
    /// first chunk fails, or on a media error, which the caller handles and
    /// retries).
    pub(crate) fn write_fresh(
        &self,
        map: &mut ExtentMap,
        off: u64,
        end: u64,
        data: &[u8],
    ) -> Result<usize> {
        let (b0, b1) = (off / BS, end.div_ceil(BS));
        let mut goal = map
            .last_before(b0)
            .or_else(|| map.iter().next_back().copied())
            .map(|e| e.phys + e.len);
        if b1 - b0 >= daxfs_format::HUGE_BLOCKS {
            goal = None; // let large runs start huge-page aligned
        }
        let mut cb = b0;
        let mut redo = 0;
        while cb < b1 {
            let ce = (cb + CHUNK_BLOCKS).min(b1);
            match self.write_chunk(map, off, end, data, cb, ce, goal) {
                Ok(Some(g)) => {
                    goal = Some(g);
                    cb = ce;
                }
                Ok(None) if redo < 4 => redo += 1,
                Ok(None) => {
                    return Err(FsError::Device(DeviceError::Media {
                        off: cb * BS,
                        len: (ce - cb) * BS,
                    }));
                }
                Err(e) => {
                    let media = matches!(e, FsError::Device(DeviceError::Media { .. }));
                    if cb == b0 || media {
                        return Err(e);
                    }
                    return Ok((cb * BS - off) as usize);
                }
            }
        }
        Ok(data.len())
    }

    /// One chunk: file blocks `[cb, ce)`. Returns the device block after
    /// its last one, or None when its blocks went bad meanwhile.
    #[allow(clippy::too_many_arguments)]
    fn write_chunk(
        &self,
        map: &mut ExtentMap,
        off: u64,
        end: u64,
        data: &[u8],
        cb: u64,
        ce: u64,
        goal: Option<u64>,
    ) -> Result<Option<u64>> {
        let fs = &*self.fs;
        let dev = &*fs.dev;
        let src = Src::Bytes { off, data };
        let what = || format!("writing {} bytes", data.len());
        let pieces = reserve(dev, &mut lock(&fs.meta), cb, ce - cb, goal, &what)?;
        // No metadata lock held: the blocks are this write's alone.
        let copied = pieces
            .iter()
            .try_for_each(|&(fb, p, l)| fill_fresh(dev, fb, p, l, off, end, &src));
        dev.fence();
        let mut meta = lock(&fs.meta);
        if let Err(e) = copied {
            give_back(&mut meta, &pieces);
            return Err(e);
        }
        let mut back = false;
        let r = self.commit_chunk(&mut meta, map, &pieces, (off, end, cb, ce), &mut back);
        if r.is_err() && !back {
            give_back(&mut meta, &pieces);
        }
        r
    }

    /// Commits a chunk's reserved blocks, mapping and size; sets `back`
    /// once the blocks are the transaction's (an abort frees them).
    fn commit_chunk(
        &self,
        meta: &mut Meta,
        map: &mut ExtentMap,
        pieces: &[(u64, u64, u64)],
        (off, end, cb, ce): (u64, u64, u64, u64),
        back: &mut bool,
    ) -> Result<Option<u64>> {
        let dev = &*self.fs.dev;
        let mut tx = Tx::begin(dev, meta)?;
        *back = true;
        if !adopt(&mut tx, pieces)? {
            tx.commit()?;
            return Ok(None);
        }
        let size = self.size();
        let coff = off.max(cb * BS);
        if coff > size {
            self.zero_past_eof(&mut tx, map, size, coff)?;
            dev.fence();
        }
        for &(fb, p, l) in pieces {
            tx.record(MapEvent::Map {
                ino: map.ino,
                fblock: fb,
                phys: p,
                len: l,
            });
            map.map(Extent {
                fblock: fb,
                phys: p,
                len: l,
                flags: 0,
            });
        }
        let cend = end.min(ce * BS);
        self.commit_rec(tx, map, |r| {
            if cend > r.size.get() {
                r.size = cend.into();
            }
        })?;
        map.note_private(cb, ce);
        Ok(pieces.last().map(|&(_, p, l)| p + l))
    }
}
