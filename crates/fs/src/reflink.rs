//! Sharing blocks between files, with Linux's rules: clone (FICLONE,
//! FICLONERANGE), dedupe (FIDEDUPERANGE), copy_file_range; and asking the
//! reverse map who owns a physical range (owners, fsmap).
//!
//! A clone costs in proportion to the number of extents, never to the bytes:
//! it maps the source's device blocks into the destination and adds one owner
//! to each in the refcount tree and the reverse map, in one transaction.
use crate::error::{FsError, Result};
use crate::events::MapEvent;
use crate::extents::{Extent, ExtentMap};
use crate::file::{File, read_mapped};
use crate::fs::{Fs, lock};
use crate::inode::{DataState, FileKind};
use crate::space::rmap::{self, Owner};
use crate::tx::{Tx, free_tree};
use crate::write::{Src, check_space, write_range};
use daxfs_format::BLOCK_SIZE_U64;
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::{Arc, RwLockWriteGuard};

const BS: u64 = BLOCK_SIZE_U64;
/// The most bytes one dedupe call compares and shares.
pub const DEDUPE_MAX: u64 = 1 << 30;

/// Outcome of dedupe for one destination (FILE_DEDUPE_RANGE_*).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DedupeStatus {
    /// The ranges were equal and now share blocks.
    Same,
    /// The ranges differ; nothing changed.
    Differs,
    /// This destination failed with an errno (EINVAL, EISDIR, EBADF, EXDEV).
    Error(i32),
}

/// Result of dedupe for one destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DedupeResult {
    pub status: DedupeStatus,
    pub bytes_deduped: u64,
}

fn same_fs(a: &File, b: &File) -> Result<()> {
    if Arc::ptr_eq(&a.fs, &b.fs) {
        Ok(())
    } else {
        Err(FsError::CrossDevice(
            "the files are on different file systems".into(),
        ))
    }
}

fn regular(f: &File) -> Result<()> {
    match f.node.kind {
        FileKind::File => Ok(()),
        FileKind::Dir => Err(FsError::IsDir(format!("inode {}", f.node.ino))),
        _ => Err(FsError::Invalid(format!(
            "inode {} is not a regular file",
            f.node.ino
        ))),
    }
}

fn aligned(off: u64, what: &str) -> Result<()> {
    if !off.is_multiple_of(BS) {
        return Err(FsError::Invalid(format!(
            "{what} {off} is not a multiple of the block size {BS}"
        )));
    }
    Ok(())
}

/// Both files' data locks, in inode order (one lock when they are the same).
struct Pair<'a> {
    a: RwLockWriteGuard<'a, DataState>,
    b: Option<RwLockWriteGuard<'a, DataState>>,
    a_is_src: bool,
}

fn lock_pair<'a>(src: &'a File, dst: &'a File) -> Pair<'a> {
    if src.node.ino == dst.node.ino {
        return Pair {
            a: src.data_write(),
            b: None,
            a_is_src: true,
        };
    }
    if src.node.ino < dst.node.ino {
        let a = src.data_write();
        Pair {
            a,
            b: Some(dst.data_write()),
            a_is_src: true,
        }
    } else {
        let a = dst.data_write();
        Pair {
            a,
            b: Some(src.data_write()),
            a_is_src: false,
        }
    }
}

/// The pieces of `map` over file blocks `[b0, b0+n)`, moved by `shift`
/// blocks (a clone's source extents as they land in the destination).
fn pieces(map: &ExtentMap, b0: u64, n: u64) -> Vec<Extent> {
    map.overlapping(b0, n)
        .into_iter()
        .map(|e| {
            let s = e.fblock.max(b0);
            let t = e.end().min(b0 + n);
            Extent {
                fblock: s,
                phys: e.phys + (s - e.fblock),
                len: t - s,
                flags: e.flags,
            }
        })
        .collect()
}

/// Splits a clone of source blocks `[src_b0, src_b0 + n)` (its mapped
/// `pieces`) to `dst` at `dst_b0` into runs `[c0, c1)` of source blocks,
/// each starting where a source extent or a destination extent it replaces
/// starts, with at most `per_tx` of those extents each: one transaction
/// each.
fn clone_chunks(
    pieces: &[Extent],
    dst: &ExtentMap,
    src_b0: u64,
    n: u64,
    dst_b0: u64,
    per_tx: usize,
) -> Vec<(u64, u64)> {
    let end = src_b0 + n;
    let mut starts: Vec<u64> = pieces.iter().map(|p| p.fblock).collect();
    starts.extend(
        dst.overlapping(dst_b0, n)
            .into_iter()
            .map(|e| e.fblock.max(dst_b0) - dst_b0 + src_b0),
    );
    starts.sort_unstable();
    starts.dedup();
    let mut out = vec![];
    let mut c0 = src_b0;
    for (i, &s) in starts.iter().enumerate() {
        if i > 0 && i % per_tx == 0 && s > c0 {
            out.push((c0, s));
            c0 = s;
        }
    }
    out.push((c0, end));
    out
}

/// Maps `src` pieces (from file block `src_b0`) into `dst` at `dst_b0`,
/// replacing what `dst` had there, and adds an owner to each shared block.
fn remap(
    tx: &mut Tx<'_>,
    src_ino: u64,
    src: Vec<Extent>,
    src_b0: u64,
    n: u64,
    dst: &mut ExtentMap,
    dst_b0: u64,
) -> Result<()> {
    for old in dst.unmap(dst_b0, n) {
        tx.record(MapEvent::Unmap {
            ino: dst.ino,
            fblock: old.fblock,
            phys: old.phys,
            len: old.len,
        });
        tx.release_extent(old.phys, old.len)?;
    }
    for p in src {
        tx.share_extent(p.phys, p.len)?;
        tx.record(MapEvent::Share {
            src_ino,
            src_fblock: p.fblock,
            ino: dst.ino,
            fblock: dst_b0 + (p.fblock - src_b0),
            phys: p.phys,
            len: p.len,
        });
        dst.map(Extent {
            fblock: dst_b0 + (p.fblock - src_b0),
            ..p
        });
    }
    dst.mark_shared();
    Ok(())
}

/// Compares `len` bytes of two files (through their maps); true when equal.
fn equal(
    dev: &dyn daxfs_device::Device,
    a: &ExtentMap,
    a_off: u64,
    b: &ExtentMap,
    b_off: u64,
    len: u64,
) -> Result<bool> {
    let chunk = 256 * 1024u64;
    let mut x = vec![0u8; chunk.min(len) as usize];
    let mut y = vec![0u8; chunk.min(len) as usize];
    let mut done = 0;
    while done < len {
        let n = chunk.min(len - done) as usize;
        read_mapped(dev, a, a_off + done, &mut x[..n])?;
        read_mapped(dev, b, b_off + done, &mut y[..n])?;
        if x[..n] != y[..n] {
            return Ok(false);
        }
        done += n as u64;
    }
    Ok(true)
}

impl File {
    /// Clones `len` bytes of `src` at `src_off` into this file at `dst_off`
    /// (FICLONERANGE; `len == 0` means to the end of `src`). The destination
    /// shares the source's blocks until one of them is written. Returns the
    /// bytes cloned.
    pub fn clone_range(&self, src: &File, src_off: u64, dst_off: u64, len: u64) -> Result<u64> {
        same_fs(src, self)?;
        regular(src)?;
        regular(self)?;
        if !src.opts.read {
            return Err(FsError::BadHandle(
                "clone source is not open for reading".into(),
            ));
        }
        if !self.opts.write || self.opts.append {
            return Err(FsError::BadHandle(
                "clone destination is not open for writing, or is append-only".into(),
            ));
        }
        aligned(src_off, "source offset")?;
        aligned(dst_off, "destination offset")?;
        let mut pair = lock_pair(src, self);
        let src_size = src.size();
        let dst_size = self.size();
        let len = if len == 0 {
            if src_off > src_size {
                return Err(FsError::Invalid(format!(
                    "source offset {src_off} is past end of file ({src_size})"
                )));
            }
            src_size - src_off
        } else {
            len
        };
        if len == 0 {
            return Ok(0);
        }
        if src_off.checked_add(len).is_none()
            || dst_off
                .checked_add(len)
                .is_none_or(|e| e > daxfs_format::MAX_FILE_SIZE)
        {
            return Err(FsError::Invalid(
                "range wraps or passes the largest file size".into(),
            ));
        }
        if src_off >= src_size {
            return Err(FsError::Invalid(format!(
                "source offset {src_off} is not below end of file ({src_size})"
            )));
        }
        if src_off + len > src_size {
            return Err(FsError::Invalid(format!(
                "source range [{src_off}, +{len}) runs past end of file ({src_size}); clone cannot shorten"
            )));
        }
        let bcount = if src_off + len == src_size {
            if len % BS != 0 && dst_off + len < dst_size {
                return Err(FsError::Invalid("a partial end-of-file block can only be cloned to or past the destination's end of file".into()));
            }
            src_size.div_ceil(BS) * BS - src_off
        } else {
            if len % BS != 0 {
                return Err(FsError::Invalid(format!(
                    "length {len} is not a multiple of the block size and does not end at the source's end of file"
                )));
            }
            len
        };
        if src.node.ino == self.node.ino && dst_off < src_off + bcount && src_off < dst_off + bcount
        {
            return Err(FsError::Invalid(
                "source and destination ranges overlap in one file".into(),
            ));
        }
        let (src_b0, dst_b0, n) = (src_off / BS, dst_off / BS, bcount / BS);
        crate::views::write_protect(&src.node, src_b0, n); // views: the source becomes shared
        let res = (|| {
            let (dst_map, src_pieces) = {
                let (a, b) = (&mut pair.a, &mut pair.b);
                match b {
                    None => {
                        let m = self.loaded(a)?;
                        let p = pieces(m, src_b0, n);
                        m.mark_shared();
                        (m, p)
                    }
                    Some(b) => {
                        let (sg, dg) = if pair.a_is_src { (a, b) } else { (b, a) };
                        let sm = src.loaded(sg)?;
                        sm.mark_shared();
                        let p = pieces(sm, src_b0, n);
                        (self.loaded(dg)?, p)
                    }
                }
            };
            if src
                .lost_map()?
                .is_some_and(|l| l.range(..src_b0 + n).any(|(&k, &len)| k + len > src_b0))
            {
                return Err(FsError::Io(format!(
                    "inode {}: the source range holds data lost to a media error",
                    src.node.ino
                )));
            }
            let dst_lost = self.lost_map()?.is_some();
            let fs = &*self.fs;
            // A clone too large for one transaction (the log's capacity) is
            // made in several, each cloning the next run of the source's
            // range (in whole extents) and growing the size over it: after
            // a crash between them, the destination holds a prefix of the
            // clone.
            let per_tx = (lock(&fs.meta).geo.capacity() / 4).max(1);
            let chunks = clone_chunks(&src_pieces, dst_map, src_b0, n, dst_b0, per_tx);
            let mut first = true;
            for (c0, c1) in chunks {
                let mut meta = lock(&fs.meta);
                let mut tx = Tx::begin(&*fs.dev, &mut meta)?;
                check_space(&tx, 8, "cloning")?;
                let (d0, cn) = (dst_b0 + (c0 - src_b0), c1 - c0);
                if dst_lost {
                    crate::media::end_loss(&mut tx, self.node.ino, d0, cn)?;
                }
                if first && dst_off > dst_size {
                    let end = (dst_size.div_ceil(BS) * BS).min(dst_off);
                    write_range(&mut tx, dst_map, dst_size, end, &Src::Zeros, false)?;
                }
                first = false;
                let part: Vec<_> = src_pieces
                    .iter()
                    .filter(|p| p.fblock >= c0 && p.fblock < c1)
                    .copied()
                    .collect();
                remap(&mut tx, src.node.ino, part, c0, cn, dst_map, d0)?;
                fs.dev.fence();
                let cloned = if c1 == src_b0 + n {
                    len
                } else {
                    (c1 - src_b0) * BS
                };
                let new_size = dst_size.max(dst_off + cloned);
                self.commit_rec(tx, dst_map, |r| r.size = new_size.into())?;
            }
            if dst_lost {
                self.node.forget_losses();
            }
            Ok(())
        })();
        if res.is_err() {
            pair.a.extents = None;
            if let Some(b) = &mut pair.b {
                b.extents = None;
            }
        }
        res.map(|_| len)
    }

    /// Clones all of `src` into this file from offset 0 (FICLONE).
    pub fn clone_from(&self, src: &File) -> Result<u64> {
        self.clone_range(src, 0, 0, 0)
    }

    /// Dedupes `len` bytes of this file at `src_off` against each destination
    /// (FIDEDUPERANGE): where the bytes are equal, the destination's blocks are
    /// replaced by shared ones. Errors of the source range fail the call;
    /// errors of a destination are its status.
    pub fn dedupe_range(
        &self,
        src_off: u64,
        len: u64,
        dests: &[(&File, u64)],
    ) -> Result<Vec<DedupeResult>> {
        regular(self)?;
        if !self.opts.read {
            return Err(FsError::BadHandle(
                "dedupe source is not open for reading".into(),
            ));
        }
        let len = len.min(DEDUPE_MAX);
        if len == 0 {
            return Ok(dests
                .iter()
                .map(|_| DedupeResult {
                    status: DedupeStatus::Same,
                    bytes_deduped: 0,
                })
                .collect());
        }
        aligned(src_off, "source offset")?;
        let src_size = self.size();
        if src_off.checked_add(len).is_none_or(|e| e > src_size) {
            return Err(FsError::Invalid(format!(
                "source range [{src_off}, +{len}) is not inside the file ({src_size} bytes)"
            )));
        }
        Ok(dests
            .iter()
            .map(|(d, off)| match self.dedupe_one(src_off, len, d, *off) {
                Ok(true) => DedupeResult {
                    status: DedupeStatus::Same,
                    bytes_deduped: len,
                },
                Ok(false) => DedupeResult {
                    status: DedupeStatus::Differs,
                    bytes_deduped: 0,
                },
                Err(e) => DedupeResult {
                    status: DedupeStatus::Error(e.errno()),
                    bytes_deduped: 0,
                },
            })
            .collect())
    }

    fn dedupe_one(&self, src_off: u64, len: u64, dst: &File, dst_off: u64) -> Result<bool> {
        same_fs(self, dst)?;
        regular(dst)?;
        if !dst.opts.write {
            return Err(FsError::BadHandle(
                "dedupe destination is not open for writing".into(),
            ));
        }
        aligned(dst_off, "destination offset")?;
        let mut pair = lock_pair(self, dst);
        let (src_size, dst_size) = (self.size(), dst.size());
        if dst_off.checked_add(len).is_none_or(|e| e > dst_size) {
            return Err(FsError::Invalid(format!(
                "destination range [{dst_off}, +{len}) is not inside the file ({dst_size} bytes)"
            )));
        }
        // A partial last block only when the range ends at both ends of file;
        // otherwise the length is shortened to whole blocks.
        let (count, bcount) = if src_off + len == src_size && dst_off + len == dst_size {
            (len, src_size.div_ceil(BS) * BS - src_off)
        } else {
            let c = len / BS * BS;
            (c, c)
        };
        if count == 0 {
            return Ok(true);
        }
        if self.node.ino == dst.node.ino && dst_off < src_off + bcount && src_off < dst_off + bcount
        {
            return Err(FsError::Invalid(
                "source and destination ranges overlap in one file".into(),
            ));
        }
        let (src_b0, dst_b0, n) = (src_off / BS, dst_off / BS, bcount / BS);
        for (f, b0) in [(self, src_b0), (dst, dst_b0)] {
            if f.lost_map()?
                .is_some_and(|l| l.range(..b0 + n).any(|(&k, &len)| k + len > b0))
            {
                return Err(FsError::Io(format!(
                    "inode {}: the range holds data lost to a media error",
                    f.node.ino
                )));
            }
        }
        let dev = &*self.fs.dev;
        // views: no store may change either range between compare and share
        crate::views::write_protect(&self.node, src_b0, n);
        crate::views::write_protect(&dst.node, dst_b0, n);
        let res = (|| {
            let (a, b) = (&mut pair.a, &mut pair.b);
            let (dst_map, src_pieces) = match b {
                None => {
                    let m = self.loaded(a)?;
                    if !equal(dev, m, src_off, m, dst_off, count)? {
                        return Ok(false);
                    }
                    let p = pieces(m, src_b0, n);
                    m.mark_shared();
                    (m, p)
                }
                Some(b) => {
                    let (sg, dg) = if pair.a_is_src { (a, b) } else { (b, a) };
                    let sm = self.loaded(sg)?;
                    let dm = dst.loaded(dg)?;
                    if !equal(dev, sm, src_off, dm, dst_off, count)? {
                        return Ok(false);
                    }
                    sm.mark_shared();
                    (dm, pieces(sm, src_b0, n))
                }
            };
            let fs = &*self.fs;
            let mut meta = lock(&fs.meta);
            let mut tx = Tx::begin(&*fs.dev, &mut meta)?;
            check_space(&tx, 8, "deduping")?;
            remap(
                &mut tx,
                self.node.ino,
                src_pieces,
                src_b0,
                n,
                dst_map,
                dst_b0,
            )?;
            dst.commit_rec(tx, dst_map, |_| {})?;
            Ok(true)
        })();
        if res.is_err() {
            pair.a.extents = None;
            if let Some(b) = &mut pair.b {
                b.extents = None;
            }
        }
        res
    }

    /// Copies `len` bytes of `src` at `src_off` into this file at `dst_off`
    /// (copy_file_range): whole blocks at matching alignment are shared, the
    /// rest is copied. Returns the bytes copied: fewer at the source's end of
    /// file, 0 past it.
    pub fn copy_range(&self, src: &File, src_off: u64, dst_off: u64, len: u64) -> Result<u64> {
        same_fs(src, self)?;
        regular(src)?;
        regular(self)?;
        if !src.opts.read {
            return Err(FsError::BadHandle(
                "copy source is not open for reading".into(),
            ));
        }
        if !self.opts.write || self.opts.append {
            return Err(FsError::BadHandle(
                "copy destination is not open for writing, or is append-only".into(),
            ));
        }
        if src_off.checked_add(len).is_none()
            || dst_off
                .checked_add(len)
                .is_none_or(|e| e > daxfs_format::MAX_FILE_SIZE)
        {
            return Err(FsError::TooBig(
                "copy range passes the largest file size".into(),
            ));
        }
        let src_size = src.size();
        if src_off >= src_size || len == 0 {
            return Ok(0);
        }
        let count = len.min(src_size - src_off);
        if src.node.ino == self.node.ino && dst_off < src_off + count && src_off < dst_off + count {
            return Err(FsError::Invalid(
                "source and destination ranges overlap in one file".into(),
            ));
        }
        // Head and tail are copied; whole blocks between them are cloned when
        // both offsets sit at the same place in a block.
        let (head, mid) = if src_off % BS == dst_off % BS {
            let h = ((BS - src_off % BS) % BS).min(count);
            let m = (count - h) / BS * BS;
            (h, m)
        } else {
            (count, 0)
        };
        let mut done = 0;
        if head > 0 {
            done += self.copy_bytes(src, src_off, dst_off, head)?;
        }
        if mid > 0 {
            done += self.clone_range(src, src_off + head, dst_off + head, mid)?;
        }
        let tail = count - head - mid;
        if tail > 0 {
            done += self.copy_bytes(src, src_off + head + mid, dst_off + head + mid, tail)?;
        }
        Ok(done)
    }

    /// Copies bytes through a buffer, in chunks, each chunk one transaction.
    fn copy_bytes(&self, src: &File, src_off: u64, dst_off: u64, len: u64) -> Result<u64> {
        let chunk = 4u64 << 20;
        let mut buf = vec![0u8; chunk.min(len) as usize];
        let mut done = 0;
        while done < len {
            let n = chunk.min(len - done) as usize;
            let got = src.read_at(src_off + done, &mut buf[..n])?;
            if got == 0 {
                break;
            }
            self.write_at(dst_off + done, &buf[..got])?;
            done += got as u64;
        }
        Ok(done)
    }
}

/// What a reverse-map record says of its owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OwnerKind {
    /// A file: its inode, every path naming it, and which fork of it
    /// ("data", "extent tree", "directory").
    File {
        ino: u64,
        paths: Vec<String>,
        fork: &'static str,
    },
    /// A file-system structure ("inode table", "log", ...).
    Metadata(&'static str),
    /// Free space.
    Free,
    /// Known-bad memory no file owns, kept out of use until cleared.
    Quarantined,
}

/// In words: `the data of /a/b (inode 5)`, `the inode table`.
impl std::fmt::Display for OwnerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OwnerKind::File { ino, paths, fork } if paths.is_empty() => {
                write!(f, "the {fork} of inode {ino}")
            }
            OwnerKind::File { ino, paths, fork } => {
                write!(f, "the {fork} of {} (inode {ino})", paths.join(", "))
            }
            OwnerKind::Metadata(k) => write!(f, "the {k}"),
            OwnerKind::Free => write!(f, "free space"),
            OwnerKind::Quarantined => write!(f, "quarantined bad blocks"),
        }
    }
}

/// One owner of a physical range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerRecord {
    /// Device offset, bytes.
    pub physical: u64,
    pub length: u64,
    pub owner: OwnerKind,
    /// File offset of `physical`, bytes (file data only).
    pub offset: u64,
    /// Another file-data record overlaps some of this range (within the
    /// range asked about).
    pub shared: bool,
    pub metadata: bool,
    pub unwritten: bool,
    /// The range holds known-bad memory.
    pub bad: bool,
}

/// For each of `recs` (in key order), whether another file-data record
/// overlaps it inside `[lo, hi)`: records overlap freely, so a record is
/// shared when any of its blocks in the window has another owner.
fn shared_in(recs: &[rmap::Mapping], lo: u64, hi: u64) -> Vec<bool> {
    let mut out = vec![false; recs.len()];
    // (start, end, index) of the data records, clipped to the window.
    let mut iv: Vec<(u64, u64, usize)> = recs
        .iter()
        .enumerate()
        .filter(|(_, m)| matches!(m.owner, Owner::Data { .. }))
        .map(|(i, m)| (m.phys.max(lo), (m.phys + m.len).min(hi), i))
        .filter(|(a, b, _)| a < b)
        .collect();
    iv.sort_unstable();
    // Overlaps an earlier one (the largest end so far passes its start) or
    // the next one (which starts before it ends).
    let mut reach = 0;
    for j in 0..iv.len() {
        let (a, b, i) = iv[j];
        let next = iv.get(j + 1).is_some_and(|n| n.0 < b);
        if (j > 0 && reach > a) || next {
            out[i] = true;
        }
        reach = reach.max(b);
    }
    out
}

impl Fs {
    /// Counts the records and nodes of the reverse map (walks all of it).
    pub fn rmap_census(&self) -> Result<rmap::Census> {
        let mut meta = lock(&self.inner.meta);
        let sb = meta.sb;
        let pending = meta.cache.rmap_pending.clone();
        let mut rs = self.inner.cached_reader(&mut meta);
        rmap::census(&mut rs, &sb.rmap_tree, &[&pending])
    }

    /// Every owner record overlapping device blocks `[block, block+blocks)`,
    /// with paths: one per reverse-map record, which may start before the
    /// range, end after it and overlap other owners' records. O((k + 1)
    /// log n) in the reverse map.
    pub fn owners(&self, block: u64, blocks: u64) -> Result<Vec<OwnerRecord>> {
        self.map_range(block, blocks, false, true)
    }

    /// [`Fs::owners`] naming files by inode only (`paths` empty), as
    /// GETFSMAP does: no walk up the parent pointers, so a block shared by
    /// thousands of files is answered from the reverse map alone.
    pub fn owners_by_inode(&self, block: u64, blocks: u64) -> Result<Vec<OwnerRecord>> {
        self.map_range(block, blocks, false, false)
    }

    /// The fsmap of device blocks `[block, block+blocks)`: every owner record
    /// and every free extent, in device order.
    pub fn fsmap(&self, block: u64, blocks: u64) -> Result<Vec<OwnerRecord>> {
        self.map_range(block, blocks, true, true)
    }

    /// Every path naming inode `ino`.
    pub fn paths(&self, ino: u64) -> Result<Vec<String>> {
        // From a snapshot, with no lock (see `crate::snapshot`).
        if let Some(r) = self
            .inner
            .lockless(|r| crate::dir::paths(&mut r.s, &r.snap.sb, ino))
        {
            return r;
        }
        let mut meta = lock(&self.inner.meta);
        let sb = meta.sb;
        crate::dir::paths(&mut self.inner.cached_reader(&mut meta), &sb, ino)
    }

    fn map_range(
        &self,
        block: u64,
        blocks: u64,
        with_free: bool,
        with_paths: bool,
    ) -> Result<Vec<OwnerRecord>> {
        // From a snapshot, with no lock: the tree under the snapshot's
        // pending records, every path and free extent of the same state.
        if let Some(r) = self.inner.lockless(|r| {
            let sb = r.snap.sb;
            let blocks = rmap_range(&sb, block, blocks)?;
            let recs = rmap::query(&mut r.rmap(), block, blocks)?;
            owner_records(&mut r.s, &sb, recs, block, blocks, with_free, with_paths)
        }) {
            return r;
        }
        // A node did not match the newest snapshot: the locked path reads
        // its replica and queues the repair.
        let mut meta = lock(&self.inner.meta);
        let sb = meta.sb;
        let blocks = rmap_range(&sb, block, blocks)?;
        let mut rs = self.inner.cached_reader(&mut meta);
        let recs = rmap::query(&mut rs.rmap(sb.rmap_tree), block, blocks)?;
        let out = owner_records(&mut rs, &sb, recs, block, blocks, with_free, with_paths);
        drop(rs);
        crate::replica::run_pending(&*self.inner.dev, &mut meta);
        out
    }
}

/// The blocks of `[block, block+blocks)` on the device of `sb`; fails when
/// it has no reverse map.
fn rmap_range(sb: &daxfs_format::Superblock, block: u64, blocks: u64) -> Result<u64> {
    if sb.incompat.get() & daxfs_format::superblock::INCOMPAT_RMAP == 0 {
        return Err(FsError::NotSupported(
            "this file system was made without a reverse map".into(),
        ));
    }
    let total = sb.total_blocks.get();
    Ok(blocks.min(total.saturating_sub(block)))
}

/// The owner records of the reverse-map records `recs` of device blocks
/// `[block, block+blocks)`, with paths, free extents and bad ranges as
/// asked, all read through `rs` in the state whose superblock is `sb`.
fn owner_records(
    rs: &mut dyn daxfs_btree::NodeStore,
    sb: &daxfs_format::Superblock,
    recs: Vec<rmap::Mapping>,
    block: u64,
    blocks: u64,
    with_free: bool,
    with_paths: bool,
) -> Result<Vec<OwnerRecord>> {
    {
        let sb = *sb;
        let shared_recs = shared_in(&recs, block, block.saturating_add(blocks));
        let mut paths: HashMap<u64, Vec<String>> = HashMap::new();
        let mut out = vec![];
        for (i, m) in recs.into_iter().enumerate() {
            let (owner, offset, metadata) = match m.owner {
                Owner::Meta(k) => (OwnerKind::Metadata(k.name()), 0, true),
                o => {
                    let ino = o.ino().unwrap_or(0);
                    if with_paths && !paths.contains_key(&ino) {
                        let p = crate::dir::paths(rs, &sb, ino).unwrap_or_default();
                        paths.insert(ino, p);
                    }
                    let p = paths.get(&ino).cloned().unwrap_or_default();
                    match o {
                        Owner::Data { fblock, .. } => (
                            OwnerKind::File {
                                ino,
                                paths: p,
                                fork: "data",
                            },
                            fblock * BS,
                            false,
                        ),
                        Owner::ExtentTree { .. } => (
                            OwnerKind::File {
                                ino,
                                paths: p,
                                fork: "extent tree",
                            },
                            0,
                            true,
                        ),
                        _ => (
                            OwnerKind::File {
                                ino,
                                paths: p,
                                fork: "directory",
                            },
                            0,
                            true,
                        ),
                    }
                }
            };
            let shared = shared_recs.get(i).copied().unwrap_or(false);
            out.push(OwnerRecord {
                physical: m.phys * BS,
                length: m.len * BS,
                owner,
                offset,
                shared,
                metadata,
                unwritten: m.unwritten,
                bad: false,
            });
        }
        if with_free && blocks > 0 {
            let t = free_tree();
            let mut free = vec![];
            if let Some((s, l)) = t.last_le(rs, &sb.free_tree, &block)?
                && s + l > block
            {
                free.push((s, l));
            }
            t.range(
                rs,
                &sb.free_tree,
                &(block + 1),
                &(block + blocks - 1).max(block + 1),
                &mut |s, l| {
                    if s < block + blocks {
                        free.push((s, l));
                    }
                    ControlFlow::Continue(())
                },
            )?;
            for (s, l) in free {
                out.push(OwnerRecord {
                    physical: s * BS,
                    length: l * BS,
                    owner: OwnerKind::Free,
                    offset: 0,
                    shared: false,
                    metadata: false,
                    unwritten: false,
                    bad: false,
                });
            }
            // Bad ranges no record covers are quarantined.
            for (s, l) in
                crate::space::badblocks::overlapping(rs, &sb.badblock_tree, block, blocks)?
            {
                let mut owned: Vec<(u64, u64)> = out
                    .iter()
                    .filter(|r| r.owner != OwnerKind::Free)
                    .map(|r| (r.physical / BS, (r.physical + r.length) / BS))
                    .filter(|&(a, b)| a < s + l && b > s)
                    .collect();
                owned.sort_unstable();
                let mut at = s;
                let q = |from: u64, to: u64| OwnerRecord {
                    physical: from * BS,
                    length: (to - from) * BS,
                    owner: OwnerKind::Quarantined,
                    offset: 0,
                    shared: false,
                    metadata: false,
                    unwritten: false,
                    bad: true,
                };
                let mut add = vec![];
                for (a, b) in owned {
                    if a > at {
                        add.push(q(at, a));
                    }
                    at = at.max(b);
                }
                if at < s + l {
                    add.push(q(at, s + l));
                }
                out.extend(add);
            }
            out.sort_by_key(|r| (r.physical, r.owner == OwnerKind::Free));
        }
        if !sb.badblock_tree.is_empty() {
            let bad = crate::space::badblocks::overlapping(rs, &sb.badblock_tree, block, blocks)?;
            for r in out.iter_mut() {
                let (a, b) = (r.physical / BS, (r.physical + r.length) / BS);
                if bad.iter().any(|&(s, l)| s < b && s + l > a) {
                    r.bad = true;
                }
            }
        }
        Ok(out)
    }
}
