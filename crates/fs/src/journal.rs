//! The metadata log: a redo journal of whole metadata block images.
//!
//! A transaction's changed blocks are sealed (generation = the transaction's
//! sequence number) and committed in four ordered steps, each ended by a fence:
//!
//! 1. the images (and any continuation descriptor blocks) go into the log;
//! 2. descriptor 0, naming the sequence number and every image's home block,
//!    goes to the log's first block: this write is the commit point;
//! 3. the images are copied to their home blocks (checkpoint);
//! 4. the superblock is written home, copy A and then copy B, each fenced.
//!
//! Recovery: the superblock's generation says which transaction was last
//! checkpointed completely (step 4 happens last). If descriptor 0 verifies and
//! names the next sequence number, its images are replayed (steps 3 and 4
//! again; replay is idempotent). A descriptor for an older sequence is a
//! transaction already checkpointed and is ignored. Nothing in the log is ever
//! needed once its superblock is home, so the log is rewritten from its start by
//! every transaction.
//!
//! Fresh blocks: a block that the committed state does not reference (a
//! node allocated by this transaction from space free before it, whose
//! replica, if any, is new too) is not logged. Step 1 writes it straight to
//! its home and replica; the fence before the commit record makes it durable
//! before anything names it. A crash before the commit point leaves it in
//! free space, which nothing reads; after it, replay has no need of it.
//!
//! Replicas: when the file system keeps them, every image whose home has a
//! replica is written to the replica before any home (step 3 becomes 3a, the
//! replicas, fenced, then 3b, the homes), and the log's first blocks (the
//! descriptors and the superblock image, which has no replica) are written
//! with identical bytes to the log's replica region as well. So every
//! committed block has a second copy: a log image that cannot be read is
//! taken from its home's replica once that was written, and before that (the
//! 3a fence not yet passed) no home has changed, so recovery can roll the
//! transaction back instead (it was never acknowledged): the replicas are
//! copied back from their homes and the commit record is erased. Of two
//! valid commit records recovery takes the newer (both are written after
//! every image is durable, so either is a commit point).
use crate::error::{FsError, Result};
use daxfs_btree::NodeBuf;
use daxfs_device::Device;
use daxfs_format::block::{BlockHeader, BlockKind, Expect, header, verify_block, write_header};
use daxfs_format::records::{INTENTS_PER_BLOCK, RmapIntent};
use daxfs_format::superblock::{LOG_INTENT_BLOCKS, LOG_INTENTS};
use daxfs_format::{BLOCK_SIZE, BLOCK_SIZE_U64, Block, seal_block};
use zerocopy::FromBytes;

/// Entries (home, replica) per descriptor block.
pub const ENTRIES_PER_DESC: usize = (BLOCK_SIZE - DESC_ENTRIES_AT) / 16;
const DESC_ENTRIES_AT: usize = 88;
const _: () = assert!(ENTRIES_PER_DESC as u64 == daxfs_format::superblock::LOG_DESC_ENTRIES);

/// One block of a transaction: its home, its home's replica (0: none) and
/// the sealed image.
pub type Image = (u64, u64, NodeBuf);

/// Where the log lives.
#[derive(Clone, Copy, Debug)]
pub struct LogGeometry {
    pub start: u64,
    pub blocks: u64,
    /// The last block of the device, home of superblock copy B.
    pub sb_copy: u64,
    /// First block of the log's replica region ([`LogGeometry::mirrored`]
    /// blocks long), 0 for none.
    pub replica: u64,
}

impl LogGeometry {
    /// Blocks reserved for descriptors at the start of the log.
    pub fn desc_blocks(&self) -> u64 {
        daxfs_format::superblock::log_desc_blocks(self.blocks)
    }
    /// The most block images one transaction can hold (the log's last
    /// blocks hold the reverse map's pending changes).
    pub fn capacity(&self) -> usize {
        (self.blocks - self.desc_blocks() - LOG_INTENT_BLOCKS) as usize
    }
    /// Blocks of the log's replica region: copies of the descriptors, the
    /// first image (the superblock's, which sorts first) and the intent
    /// blocks.
    pub fn mirrored(&self) -> u64 {
        daxfs_format::superblock::log_mirror_blocks(self.blocks)
    }
    /// Where log block `i` (from the log's start) is copied in the replica
    /// region (also its slot in [`LogHead`]), if it is.
    pub fn mirror_slot(&self, i: u64) -> Option<u64> {
        let d = self.desc_blocks();
        let intents = self.blocks - LOG_INTENT_BLOCKS;
        if i <= d {
            Some(i)
        } else if i >= intents && i < self.blocks {
            Some(d + 1 + (i - intents))
        } else {
            None
        }
    }
    /// The first block of the reverse-map intent area ([`LOG_INTENT_BLOCKS`]
    /// long, contiguous in both places) in the log and in the replica region
    /// (0: none).
    pub fn intent_area(&self) -> [u64; 2] {
        log_copies(self, self.blocks - LOG_INTENT_BLOCKS)
    }

    /// The device byte offsets of intent entry `i` in the log and in the
    /// replica region (0: none).
    fn intent_at(&self, i: usize) -> [u64; 2] {
        let within = (i * 64) as u64;
        self.intent_area().map(|b| {
            if b == 0 {
                0
            } else {
                b * BLOCK_SIZE_U64 + within
            }
        })
    }
}

fn put_u64(b: &mut Block, at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn get_u64(b: &Block, at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// Cache lines per block, the unit of partial writes.
const LINES: usize = BLOCK_SIZE / LINE;
const LINE: usize = 64;
const _: () = assert!(LINES == 64);

/// The lines of `new` that differ from `old` (all when `old` is unknown),
/// as a bit mask.
fn changed_lines(new: &Block, old: Option<&Block>) -> u64 {
    let Some(old) = old else {
        return u64::MAX;
    };
    // Word by word over fixed-size words, with no call per line or word:
    // this runs on every image of every commit, twice (home and log), and
    // slice iterators with `copy_from_slice` per word cost 20x as much in a
    // build without full optimization (the test profile's).
    const WORDS: usize = LINE / 8;
    let (n, _) = new.as_chunks::<8>();
    let (o, _) = old.as_chunks::<8>();
    let mut mask = 0u64;
    for i in 0..LINES {
        let mut diff = 0u64;
        for j in i * WORDS..(i + 1) * WORDS {
            diff |= u64::from_le_bytes(n[j]) ^ u64::from_le_bytes(o[j]);
        }
        if diff != 0 {
            mask |= 1 << i;
        }
    }
    mask
}

/// Writes the lines of `new` in `mask` at block `at` (runs of lines as one
/// write each) and starts writing them back.
fn write_lines(dev: &dyn Device, at: u64, new: &Block, mask: u64) -> Result<()> {
    let Some(base) = at.checked_mul(BLOCK_SIZE_U64) else {
        return Err(FsError::Corrupt(format!("block {at} is past any device")));
    };
    const _: () = assert!(LINES == 64, "a line mask is one u64");
    // Runs of set bits, found by counting zeros and ones, not bit by bit.
    let mut rest = mask;
    while rest != 0 {
        let s = rest.trailing_zeros() as usize;
        let i = s + (rest >> s).trailing_ones() as usize;
        rest = if i >= LINES {
            0
        } else {
            rest & (u64::MAX << i)
        };
        let off = base + (s * LINE) as u64;
        match dev.write(off, &new[s * LINE..i * LINE]) {
            Ok(()) => dev.flush(off, ((i - s) * LINE) as u64),
            // A poisoned block (a media error, reported or about to be):
            // the device's recovery write stores the whole block, persists
            // it and makes the memory good again.
            Err(daxfs_device::DeviceError::Media { .. }) => {
                dev.clear_error(base, &new[..])?;
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// What memory knows of the blocks a commit overwrites, so that only the
/// cache lines that change are written: a block's other lines already hold
/// the same bytes.
#[derive(Default)]
pub struct Known<'a> {
    /// For each image (in order): what its home holds now.
    pub homes: Vec<Option<&'a Block>>,
    /// For each image: its replica holds the same as its home (false for a
    /// replica new in this transaction, which is written whole).
    pub same_replica: Vec<bool>,
}

/// The log's first [`LogGeometry::mirrored`] blocks (descriptors, then the
/// superblock's image) as the last commit wrote them, in the log and in its
/// replica region alike; `None` where unknown.
/// Shared with the images and the node cache: remembering a block costs no
/// copy.
pub type LogHead = Vec<Option<NodeBuf>>;

/// Writes log block `i` (from the log's start) to the log and, when it is
/// one the replica region copies, there too (only the lines that differ from
/// what the last commit wrote there, when known); starts writing both back.
fn write_log(
    dev: &dyn Device,
    geo: &LogGeometry,
    i: u64,
    b: &NodeBuf,
    head: &mut LogHead,
) -> Result<()> {
    let m = geo.mirror_slot(i);
    let slot = m.and_then(|m| head.get_mut(m as usize));
    let mask = changed_lines(b, slot.as_ref().and_then(|x| x.as_deref()));
    write_lines(dev, geo.start + i, b, mask)?;
    if let Some(m) = m
        && geo.replica != 0
    {
        write_lines(dev, geo.replica + m, b, mask)?;
    }
    if let Some(slot) = slot {
        *slot = Some(b.clone());
    }
    Ok(())
}

/// Writes, commits and checkpoints one transaction. `images` are sorted by
/// home; block 0 must be among them (the superblock) and is written last, to
/// both of its homes. `fresh[i]` says image `i` is of a block the committed
/// state does not reference, and its replica (if any) neither: it is written
/// home and to its replica before the commit record instead of being
/// logged (missing entries: false). `known` and `head` say what the blocks
/// written hold now (`head` is brought up to date); with neither, whole
/// blocks are written. `intents` are the reverse-map intents this commit
/// appends (sealed), and the index of the first in the intent area: they
/// are written with the images.
#[allow(clippy::too_many_arguments)]
pub fn commit(
    dev: &dyn Device,
    geo: &LogGeometry,
    fs_id: u64,
    seq: u64,
    images: &[Image],
    fresh: &[bool],
    known: &Known<'_>,
    head: &mut LogHead,
    intents: (usize, &[RmapIntent]),
) -> Result<()> {
    let is_fresh = |i: usize| fresh.get(i).copied().unwrap_or(false) && images[i].0 != 0;
    let logged: Vec<&Image> = (0..images.len())
        .filter(|&i| !is_fresh(i))
        .map(|i| &images[i])
        .collect();
    if logged.len() > geo.capacity() {
        return Err(FsError::NoSpace(format!(
            "transaction of {} logged blocks exceeds the log ({} blocks)",
            logged.len(),
            geo.capacity()
        )));
    }
    head.resize(geo.mirrored() as usize, None);
    let d = geo.desc_blocks();
    let ndesc = logged.len().div_ceil(ENTRIES_PER_DESC).max(1);
    // The lines of the superblock that change: its image in the log is what
    // the last checkpoint wrote to copy A.
    let sb_mask = match logged.first() {
        Some((0, _, sb)) => changed_lines(sb, head.get(d as usize).and_then(|x| x.as_deref())),
        _ => u64::MAX,
    };
    // Step 1: images and continuation descriptors; fresh blocks go straight
    // to their replica and home, whole.
    for (i, (_, _, img)) in logged.iter().enumerate() {
        write_log(dev, geo, d + i as u64, img, head)?;
    }
    write_intents(dev, geo, intents.0, intents.1)?;
    for (i, (home, replica, img)) in images.iter().enumerate() {
        if is_fresh(i) {
            if *replica != 0 {
                write_lines(dev, *replica, img, u64::MAX)?;
            }
            write_lines(dev, *home, img, u64::MAX)?;
        }
    }
    let mut desc0 = None;
    for di in 0..ndesc {
        let mut nb = NodeBuf::new([0u8; BLOCK_SIZE]);
        let b = NodeBuf::make_mut(&mut nb);
        let chunk = logged
            .iter()
            .skip(di * ENTRIES_PER_DESC)
            .take(ENTRIES_PER_DESC);
        let mut h = BlockHeader::fresh(BlockKind::LogDescriptor, 0, 0);
        let mut n = 0u32;
        for (j, (home, replica, _)) in chunk.enumerate() {
            put_u64(b, DESC_ENTRIES_AT + 16 * j, *home);
            put_u64(b, DESC_ENTRIES_AT + 16 * j + 8, *replica);
            n += 1;
        }
        h.count = n.into();
        write_header(&mut b[..], &h);
        put_u64(b, 64, seq);
        put_u64(b, 72, logged.len() as u64);
        put_u64(b, 80, di as u64);
        seal_block(b, geo.start + di as u64, seq, fs_id);
        if di == 0 {
            desc0 = Some(nb);
        } else {
            write_log(dev, geo, di as u64, &nb, head)?;
        }
    }
    dev.fence();
    // Step 2: the commit point.
    if let Some(b) = desc0 {
        write_log(dev, geo, 0, &b, head)?;
        dev.fence();
    }
    checkpoint(dev, geo, images, &is_fresh, known, sb_mask)
}

/// Steps 3 and 4: copies images to their replicas (3a), then home (3b), the
/// superblock last. `known` says what the blocks hold now, where known, and
/// `sb_mask` which lines of the superblock change.
fn checkpoint(
    dev: &dyn Device,
    geo: &LogGeometry,
    images: &[Image],
    fresh: &dyn Fn(usize) -> bool,
    known: &Known<'_>,
    sb_mask: u64,
) -> Result<()> {
    let mut sb = None;
    let mut replicas = false;
    let home_of = |i: usize| known.homes.get(i).copied().flatten();
    // The lines each home needs; its replica needs the same unless new.
    let masks: Vec<u64> = images
        .iter()
        .enumerate()
        .map(|(i, (_, _, img))| changed_lines(img, home_of(i)))
        .collect();
    for (i, (home, replica, img)) in images.iter().enumerate() {
        if *home != 0 && *replica != 0 && !fresh(i) {
            let same = known.same_replica.get(i).copied().unwrap_or(false);
            let mask = if same {
                masks.get(i).copied().unwrap_or(u64::MAX)
            } else {
                u64::MAX
            };
            write_lines(dev, *replica, img, mask)?;
            replicas = true;
        }
    }
    if replicas {
        dev.fence();
    }
    for (i, (home, _, img)) in images.iter().enumerate() {
        if *home == 0 {
            sb = Some(img);
            continue;
        }
        if fresh(i) {
            continue;
        }
        write_lines(dev, *home, img, masks.get(i).copied().unwrap_or(u64::MAX))?;
    }
    dev.fence();
    if let Some(sb) = sb {
        let mask = sb_mask;
        write_lines(dev, 0, sb, mask)?;
        dev.fence();
        // Copy B carries its own block number in its header (line 0); its
        // other lines are copy A's.
        let mut b: Box<Block> = Box::new(**sb);
        let h = header(&b[..])?;
        seal_block(&mut b, geo.sb_copy, h.generation.get(), h.fs_id.get());
        write_lines(dev, geo.sb_copy, &b, mask | 1)?;
        dev.fence();
    }
    Ok(())
}

/// What recovery found in the log.
#[derive(Debug, PartialEq, Eq)]
pub enum Recovery {
    /// The log holds nothing newer than the superblock.
    Clean,
    /// Transaction `seq` was committed but not fully checkpointed; it was replayed.
    Replayed { seq: u64, blocks: usize },
    /// Transaction `seq` was committed, but a log image could not be read
    /// and its home's replica was not yet written; no home was: the
    /// transaction was undone (it had not been acknowledged).
    RolledBack { seq: u64 },
}

fn read_block(dev: &dyn Device, b: u64) -> Option<Box<Block>> {
    let mut blk = Box::new([0u8; BLOCK_SIZE]);
    dev.read(b.checked_mul(BLOCK_SIZE_U64)?, &mut blk[..])
        .ok()?;
    Some(blk)
}

/// The first of `copies` (block numbers, 0 skipped) that passes `good`.
/// With none, the first copy's error.
fn first_good<T>(
    dev: &dyn Device,
    copies: &[u64],
    good: &dyn Fn(&Block) -> Result<T>,
) -> Result<(Box<Block>, T)> {
    let mut first_err = None;
    for &at in copies.iter().filter(|&&b| b != 0) {
        let Some(b) = read_block(dev, at) else {
            first_err.get_or_insert_with(|| FsError::Io(format!("media error reading block {at}")));
            continue;
        };
        match good(&b) {
            Ok(t) => return Ok((b, t)),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    Err(first_err.unwrap_or_else(|| FsError::Corrupt("no copy to read".into())))
}

/// A committed transaction found in the log.
#[derive(Debug)]
pub struct Pending {
    pub seq: u64,
    /// (home, replica, image); the image is `None` when neither the log nor
    /// the home's replica has it.
    pub images: Vec<(u64, u64, Option<Box<Block>>)>,
    /// Some home's replica does not hold its new image yet: the checkpoint
    /// had not passed step 3a, so no home was written.
    pub homes_untouched: bool,
    /// Why the first missing image could not be read from the log.
    pub why: Option<String>,
}

impl Pending {
    /// The images, when every one was found.
    pub fn complete(&self) -> Option<Vec<Image>> {
        self.images
            .iter()
            .map(|(h, r, i)| {
                i.as_ref()
                    .map(|i| (*h, *r, daxfs_btree::NodeBuf::from(i.clone())))
            })
            .collect()
    }
}

/// Reads the committed transaction in the log, if it is newer than
/// `sb_generation`, and returns its images without writing.
pub fn pending(
    dev: &dyn Device,
    geo: &LogGeometry,
    fs_id: u64,
    sb_generation: u64,
) -> Result<Option<Pending>> {
    let expect = |blockno| Expect {
        blockno,
        kind: BlockKind::LogDescriptor,
        owner: Some(0),
        fs_id,
    };
    let log_copies = |i: u64| log_copies(geo, i);
    // The commit record: the newer of the valid copies.
    let mut d0: Option<(Box<Block>, u64)> = None;
    for at in log_copies(0).into_iter().filter(|&b| b != 0) {
        let Some(b) = read_block(dev, at) else {
            continue;
        };
        if let Ok(h) = verify_block(&b, &expect(geo.start)) {
            let seq = h.generation.get();
            if d0.as_ref().is_none_or(|(_, s)| seq > *s) {
                d0 = Some((b, seq));
            }
        }
    }
    let Some((d0, seq)) = d0 else {
        return Ok(None); // never written, or torn before its commit point
    };
    if seq <= sb_generation {
        return Ok(None);
    }
    if seq != sb_generation + 1 {
        return Err(FsError::Corrupt(format!(
            "log holds transaction {seq} but the superblock is at {sb_generation}: a transaction is missing"
        )));
    }
    let total = get_u64(&d0, 72) as usize;
    if total > geo.capacity() {
        return Err(FsError::Corrupt(format!(
            "log descriptor names {total} blocks, more than the log holds"
        )));
    }
    let mut homes = Vec::with_capacity(total);
    let ndesc = total.div_ceil(ENTRIES_PER_DESC).max(1);
    for di in 0..ndesc {
        let blockno = geo.start + di as u64;
        let (b, h) = if di == 0 {
            let h = header(&d0[..])?;
            (d0.clone(), h)
        } else {
            first_good(dev, &log_copies(di as u64), &|b| {
                let h = verify_block(b, &expect(blockno))?;
                if h.generation.get() != seq || get_u64(b, 80) != di as u64 {
                    return Err(FsError::Corrupt(format!(
                        "log descriptor block {blockno} belongs to another transaction"
                    )));
                }
                Ok(h)
            })?
        };
        let n = (h.count.get() as usize).min(ENTRIES_PER_DESC);
        for j in 0..n {
            let (home, replica) = (
                get_u64(&b, DESC_ENTRIES_AT + 16 * j),
                get_u64(&b, DESC_ENTRIES_AT + 16 * j + 8),
            );
            // Both are written at replay: a home is the superblock or lies
            // outside the log, and so does a replica.
            let in_log = |b: u64| {
                (b >= geo.start && b < geo.start + geo.blocks)
                    || (geo.replica != 0 && b >= geo.replica && b < geo.replica + geo.mirrored())
            };
            if home >= geo.sb_copy
                || replica >= geo.sb_copy
                || (home != 0 && in_log(home))
                || (replica != 0 && (replica == home || in_log(replica)))
            {
                return Err(FsError::Corrupt(format!(
                    "log descriptor block {blockno} names block {home} (replica {replica}), outside the metadata area"
                )));
            }
            homes.push((home, replica));
        }
    }
    if homes.len() != total {
        return Err(FsError::Corrupt(format!(
            "log descriptors list {} of {total} blocks",
            homes.len()
        )));
    }
    let d = geo.desc_blocks();
    let mut images = Vec::with_capacity(total);
    let mut homes_untouched = false;
    let mut why = None;
    // An image of this transaction for `home`, wherever it was read.
    let is_image = |home: u64, i: usize| {
        move |img: &Block| -> Result<()> {
            let h = header(&img[..])?;
            let kind = BlockKind::from_u8(h.kind).ok_or_else(|| {
                FsError::Corrupt(format!("log image {i} has unknown kind {}", h.kind))
            })?;
            verify_block(
                img,
                &Expect {
                    blockno: home,
                    kind,
                    owner: None,
                    fs_id,
                },
            )?;
            if h.generation.get() != seq {
                return Err(FsError::Corrupt(format!(
                    "log image {i} for block {home} is not from transaction {seq}"
                )));
            }
            Ok(())
        }
    };
    for (i, (home, replica)) in homes.into_iter().enumerate() {
        let check = is_image(home, i);
        let at = d + i as u64;
        let mut copies = log_copies(at).to_vec();
        copies.push(replica);
        let img = match first_good(dev, &copies, &check) {
            Ok((b, ())) => Some(b),
            Err(e) => {
                why.get_or_insert_with(|| format!("log image {i} for block {home}: {e}"));
                None
            }
        };
        if replica != 0 && home != 0 {
            let written = read_block(dev, replica).is_some_and(|r| check(&r).is_ok());
            homes_untouched |= !written;
        }
        images.push((home, replica, img));
    }
    Ok(Some(Pending {
        seq,
        images,
        homes_untouched,
        why,
    }))
}

/// Where log block `i` is: in the log, and in the replica region (0: not
/// copied there).
fn log_copies(geo: &LogGeometry, i: u64) -> [u64; 2] {
    let mirror = match geo.mirror_slot(i) {
        Some(m) if geo.replica != 0 => geo.replica + m,
        _ => 0,
    };
    [geo.start + i, mirror]
}

/// Writes sealed intents `v` at entries `from..` of the intent area (and of
/// its copy in the replica region), and starts writing them back.
fn write_intents(dev: &dyn Device, geo: &LogGeometry, from: usize, v: &[RmapIntent]) -> Result<()> {
    if from + v.len() > LOG_INTENTS {
        return Err(FsError::Corrupt(format!(
            "{} reverse-map intents past the log's {LOG_INTENTS}",
            from + v.len()
        )));
    }
    // Runs of entries within one block are one write.
    let mut i = 0;
    while i < v.len() {
        let at = from + i;
        let n = (INTENTS_PER_BLOCK - at % INTENTS_PER_BLOCK).min(v.len() - i);
        let bytes = zerocopy::IntoBytes::as_bytes(v.get(i..i + n).unwrap_or(&[]));
        for off in geo.intent_at(at).into_iter().filter(|&o| o != 0) {
            dev.write(off, bytes)?;
            dev.flush(off, bytes.len() as u64);
        }
        i += n;
    }
    Ok(())
}

/// The reverse map's pending changes as of the commit of generation `seq`:
/// the first `n` entries of the log's intent area (each from the log, else
/// from the log's replica region).
pub fn read_intents(
    dev: &dyn Device,
    geo: &LogGeometry,
    fs_id: u64,
    seq: u64,
    n: usize,
) -> Result<Vec<RmapIntent>> {
    if n > LOG_INTENTS {
        return Err(FsError::Corrupt(format!(
            "the superblock counts {n} reverse-map intents, more than the log's {LOG_INTENTS}"
        )));
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let mut found = None;
        for off in geo.intent_at(i).into_iter().filter(|&o| o != 0) {
            let mut b = [0u8; 64];
            if dev.read(off, &mut b).is_err() {
                continue;
            }
            if let Ok(e) = RmapIntent::read_from_bytes(&b[..])
                && e.verifies(fs_id)
                && e.seq.get() <= seq
            {
                found = Some(e);
                break;
            }
        }
        let Some(e) = found else {
            return Err(FsError::Corrupt(format!(
                "the reverse map's pending changes cannot be read: intent {i} of {n} in the log \
                 (block {}) is damaged in both copies",
                geo.intent_area()[0] + (i / INTENTS_PER_BLOCK) as u64
            )));
        };
        out.push(e);
    }
    Ok(out)
}

/// Replays the committed transaction in the log if it was not checkpointed
/// (or undoes it, see [`Recovery::RolledBack`]).
pub fn recover(
    dev: &dyn Device,
    geo: &LogGeometry,
    fs_id: u64,
    sb_generation: u64,
) -> Result<Recovery> {
    let Some(p) = pending(dev, geo, fs_id, sb_generation)? else {
        return Ok(Recovery::Clean);
    };
    if let Some(images) = p.complete() {
        checkpoint(dev, geo, &images, &|_| false, &Known::default(), u64::MAX)?;
        return Ok(Recovery::Replayed {
            seq: p.seq,
            blocks: images.len(),
        });
    }
    if !p.homes_untouched {
        return Err(FsError::Corrupt(format!(
            "transaction {} is committed but cannot be replayed: {}",
            p.seq,
            p.why.as_deref().unwrap_or("an image is missing")
        )));
    }
    // No home was written: put the replicas back as their homes are, then
    // erase the commit record (both copies).
    for (home, replica, _) in &p.images {
        if *home == 0 || *replica == 0 {
            continue;
        }
        if let Some(b) = read_block(dev, *home) {
            dev.write(replica * BLOCK_SIZE_U64, &b[..])?;
            dev.flush(replica * BLOCK_SIZE_U64, BLOCK_SIZE_U64);
        }
    }
    dev.fence();
    let zero = NodeBuf::new([0u8; BLOCK_SIZE]);
    write_log(dev, geo, 0, &zero, &mut vec![])?;
    dev.fence();
    Ok(Recovery::RolledBack { seq: p.seq })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_lines_finds_each_line() {
        let a = Box::new([0u8; BLOCK_SIZE]);
        let mut b = a.clone();
        assert_eq!(changed_lines(&b, Some(&a)), 0);
        assert_eq!(changed_lines(&b, None), u64::MAX);
        b[0] = 1;
        b[64 * 5 + 63] = 1;
        b[BLOCK_SIZE - 1] = 1;
        assert_eq!(changed_lines(&b, Some(&a)), 1 | 1 << 5 | 1 << 63);
    }

    #[test]
    fn changed_lines_maps_every_byte_to_its_line() {
        let a = Box::new([0u8; BLOCK_SIZE]);
        let mut b = a.clone();
        for at in 0..BLOCK_SIZE {
            b[at] = 0x80;
            assert_eq!(changed_lines(&b, Some(&a)), 1 << (at / LINE), "byte {at}");
            b[at] = 0;
        }
    }

    #[test]
    fn write_lines_writes_every_run_of_the_mask() {
        let b = Box::new([7u8; BLOCK_SIZE]);
        for mask in [u64::MAX, 1, 1 << 63, 1 | 0b1110 << 10 | 1 << 62 | 1 << 63] {
            let dev = daxfs_device::MemDevice::new(64 * 1024);
            write_lines(&dev, 1, &b, mask).unwrap();
            let mut got = vec![0u8; BLOCK_SIZE];
            dev.read(BLOCK_SIZE_U64, &mut got).unwrap();
            for (i, line) in got.chunks_exact(LINE).enumerate() {
                let want = if mask & (1 << i) != 0 { 7 } else { 0 };
                assert!(line.iter().all(|&x| x == want), "mask {mask:#x} line {i}");
            }
        }
    }

    #[test]
    fn write_lines_writes_only_the_mask() {
        let dev = daxfs_device::MemDevice::new(64 * 1024);
        let mut b = Box::new([7u8; BLOCK_SIZE]);
        b[64] = 9;
        write_lines(&dev, 2, &b, 0b110).unwrap();
        let mut got = vec![0u8; BLOCK_SIZE];
        dev.read(2 * BLOCK_SIZE_U64, &mut got).unwrap();
        assert!(got[..64].iter().all(|&x| x == 0));
        assert_eq!(&got[64..192], &b[64..192]);
        assert!(got[192..].iter().all(|&x| x == 0));
    }
}
