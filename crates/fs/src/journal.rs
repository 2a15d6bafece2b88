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
use crate::error::{FsError, Result};
use daxfs_device::Device;
use daxfs_format::block::{BlockHeader, BlockKind, Expect, header, verify_block, write_header};
use daxfs_format::{BLOCK_SIZE, BLOCK_SIZE_U64, Block, seal_block};

/// Entries of home block numbers per descriptor block.
pub const ENTRIES_PER_DESC: usize = (BLOCK_SIZE - DESC_ENTRIES_AT) / 8;
const DESC_ENTRIES_AT: usize = 88;

/// Where the log lives.
#[derive(Clone, Copy, Debug)]
pub struct LogGeometry {
    pub start: u64,
    pub blocks: u64,
    /// The last block of the device, home of superblock copy B.
    pub sb_copy: u64,
}

impl LogGeometry {
    /// Blocks reserved for descriptors at the start of the log.
    pub fn desc_blocks(&self) -> u64 {
        self.blocks.div_ceil(ENTRIES_PER_DESC as u64 + 1).max(1)
    }
    /// The most block images one transaction can hold.
    pub fn capacity(&self) -> usize {
        (self.blocks - self.desc_blocks()) as usize
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

/// Writes, commits and checkpoints one transaction. `images` are (home block,
/// sealed image) pairs sorted by home; block 0 must be among them (the
/// superblock) and is written last, to both of its homes.
pub fn commit(
    dev: &dyn Device,
    geo: &LogGeometry,
    fs_id: u64,
    seq: u64,
    images: &[(u64, Box<Block>)],
) -> Result<()> {
    if images.len() > geo.capacity() {
        return Err(FsError::NoSpace(format!(
            "transaction of {} blocks exceeds the log ({} blocks)",
            images.len(),
            geo.capacity()
        )));
    }
    let d = geo.desc_blocks();
    let ndesc = images.len().div_ceil(ENTRIES_PER_DESC).max(1);
    // Step 1: images and continuation descriptors.
    for (i, (_, img)) in images.iter().enumerate() {
        let at = (geo.start + d + i as u64) * BLOCK_SIZE_U64;
        dev.write(at, &img[..])?;
        dev.flush(at, BLOCK_SIZE_U64);
    }
    let mut desc0 = None;
    for di in 0..ndesc {
        let mut b = Box::new([0u8; BLOCK_SIZE]);
        let chunk = images
            .iter()
            .skip(di * ENTRIES_PER_DESC)
            .take(ENTRIES_PER_DESC);
        let mut h = BlockHeader::fresh(BlockKind::LogDescriptor, 0, 0);
        let mut n = 0u32;
        for (j, (home, _)) in chunk.enumerate() {
            put_u64(&mut b, DESC_ENTRIES_AT + 8 * j, *home);
            n += 1;
        }
        h.count = n.into();
        write_header(&mut b[..], &h);
        put_u64(&mut b, 64, seq);
        put_u64(&mut b, 72, images.len() as u64);
        put_u64(&mut b, 80, di as u64);
        let blockno = geo.start + di as u64;
        seal_block(&mut b, blockno, seq, fs_id);
        if di == 0 {
            desc0 = Some(b);
        } else {
            dev.write(blockno * BLOCK_SIZE_U64, &b[..])?;
            dev.flush(blockno * BLOCK_SIZE_U64, BLOCK_SIZE_U64);
        }
    }
    dev.fence();
    // Step 2: the commit point.
    if let Some(b) = desc0 {
        dev.write(geo.start * BLOCK_SIZE_U64, &b[..])?;
        dev.persist(geo.start * BLOCK_SIZE_U64, BLOCK_SIZE_U64);
    }
    checkpoint(dev, geo, images)
}

/// Steps 3 and 4: copies images home, the superblock last.
fn checkpoint(dev: &dyn Device, geo: &LogGeometry, images: &[(u64, Box<Block>)]) -> Result<()> {
    let mut sb = None;
    for (home, img) in images {
        if *home == 0 {
            sb = Some(img);
            continue;
        }
        dev.write(home * BLOCK_SIZE_U64, &img[..])?;
        dev.flush(home * BLOCK_SIZE_U64, BLOCK_SIZE_U64);
    }
    dev.fence();
    if let Some(sb) = sb {
        dev.write(0, &sb[..])?;
        dev.persist(0, BLOCK_SIZE_U64);
        // Copy B carries its own block number in its header.
        let mut b = sb.clone();
        let h = header(&b[..])?;
        seal_block(&mut b, geo.sb_copy, h.generation.get(), h.fs_id.get());
        dev.write(geo.sb_copy * BLOCK_SIZE_U64, &b[..])?;
        dev.persist(geo.sb_copy * BLOCK_SIZE_U64, BLOCK_SIZE_U64);
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
}

fn read_block(dev: &dyn Device, b: u64) -> Result<Box<Block>> {
    let mut blk = Box::new([0u8; BLOCK_SIZE]);
    dev.read(b * BLOCK_SIZE_U64, &mut blk[..])?;
    Ok(blk)
}

/// Reads the committed transaction in the log, if it is newer than
/// `sb_generation`, and returns its (home, image) pairs without writing.
pub fn pending(
    dev: &dyn Device,
    geo: &LogGeometry,
    fs_id: u64,
    sb_generation: u64,
) -> Result<Option<(u64, Vec<(u64, Box<Block>)>)>> {
    let expect = |blockno| Expect {
        blockno,
        kind: BlockKind::LogDescriptor,
        owner: Some(0),
        fs_id,
    };
    let d0 = read_block(dev, geo.start)?;
    let Ok(h0) = verify_block(&d0, &expect(geo.start)) else {
        return Ok(None); // never written, or torn before its commit point
    };
    let seq = h0.generation.get();
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
        let b = if di == 0 {
            d0.clone()
        } else {
            read_block(dev, blockno)?
        };
        let h = verify_block(&b, &expect(blockno))
            .map_err(|e| FsError::Corrupt(format!("log descriptor block {blockno}: {e}")))?;
        if h.generation.get() != seq || get_u64(&b, 80) != di as u64 {
            return Err(FsError::Corrupt(format!(
                "log descriptor block {blockno} belongs to another transaction"
            )));
        }
        let n = (h.count.get() as usize).min(ENTRIES_PER_DESC);
        for j in 0..n {
            homes.push(get_u64(&b, DESC_ENTRIES_AT + 8 * j));
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
    for (i, home) in homes.into_iter().enumerate() {
        // Home blocks are the superblock or lie between the log and copy B.
        if home != 0 && (home < geo.start + geo.blocks || home >= geo.sb_copy) {
            return Err(FsError::Corrupt(format!(
                "log image {i} names block {home}, outside the metadata area"
            )));
        }
        let img = read_block(dev, geo.start + d + i as u64)?;
        let h = header(&img[..])?;
        let kind = BlockKind::from_u8(h.kind).ok_or_else(|| {
            FsError::Corrupt(format!("log image {i} has unknown kind {}", h.kind))
        })?;
        verify_block(
            &img,
            &Expect {
                blockno: home,
                kind,
                owner: None,
                fs_id,
            },
        )
        .map_err(|e| FsError::Corrupt(format!("log image {i} for block {home}: {e}")))?;
        if h.generation.get() != seq {
            return Err(FsError::Corrupt(format!(
                "log image {i} for block {home} is not from transaction {seq}"
            )));
        }
        images.push((home, img));
    }
    Ok(Some((seq, images)))
}

/// Replays the committed transaction in the log if it was not checkpointed.
pub fn recover(
    dev: &dyn Device,
    geo: &LogGeometry,
    fs_id: u64,
    sb_generation: u64,
) -> Result<Recovery> {
    match pending(dev, geo, fs_id, sb_generation)? {
        None => Ok(Recovery::Clean),
        Some((seq, images)) => {
            checkpoint(dev, geo, &images)?;
            Ok(Recovery::Replayed {
                seq,
                blocks: images.len(),
            })
        }
    }
}
