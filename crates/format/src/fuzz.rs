//! Fuzz entry points for every decoder of media bytes in this crate.
//!
//! Each function takes arbitrary bytes, decodes them, and checks what a
//! successful decode promises. None may panic whatever the input, except on a
//! broken promise (which is a bug the fuzzer is meant to find). They depend on
//! nothing but this crate, so unit tests and `cargo fuzz` targets share them.
//!
//! Inputs start with a small prefix of control bytes (described on each
//! function); the rest is the block or record bytes, padded with zeros.
use crate::block::{
    BLOCK_MAGIC, BlockHeader, BlockKind, Expect, header, verify_block, write_header,
};
use crate::records::{
    DirentRecord, ErrorLogOwners, ErrorLogRecord, ExtentRecord, INLINE_EXTENTS, InlineExtent,
    InodeRecord, NAME_MAX, Record, RefcountRecord, RmapRecord, TreeRoot,
};
use crate::superblock::{FORMAT_VERSION, INCOMPAT_KNOWN, MIN_BLOCKS, fs_id_of};
use crate::{BLOCK_SIZE, Block, Superblock, seal_block};
use zerocopy::IntoBytes;

/// Control bytes before the block in a superblock input.
pub const SB_PREFIX: usize = 9;
/// Control bytes before the block in a block-header input.
pub const HEADER_PREFIX: usize = 26;

/// Mode bit: reseal the block so its checksum passes.
pub const MODE_RESEAL: u8 = 1;
/// Superblock mode bit: force the second magic, version and block size, so
/// decoding reaches the geometry checks.
pub const MODE_FIX_FIELDS: u8 = 2;
/// Superblock mode bit: decode as copy B (at the device's last block).
pub const MODE_COPY_B: u8 = 4;
/// Header mode bit: the caller accepts any owner.
pub const MODE_ANY_OWNER: u8 = 2;
/// Header mode bit: stamp the expected identity into the header before
/// resealing, so the kind and owner checks are reached with a valid block.
pub const MODE_STAMP: u8 = 4;

fn u64_at(data: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    if let Some(src) = data.get(at..) {
        let n = src.len().min(8);
        if let (Some(d), Some(s)) = (b.get_mut(..n), src.get(..n)) {
            d.copy_from_slice(s);
        }
    }
    u64::from_le_bytes(b)
}

/// A block made of `bytes`, zero-padded or cut to [`BLOCK_SIZE`].
pub fn block_from(bytes: &[u8]) -> Box<Block> {
    let mut b = Box::new([0u8; BLOCK_SIZE]);
    let n = bytes.len().min(BLOCK_SIZE);
    if let (Some(d), Some(s)) = (b.get_mut(..n), bytes.get(..n)) {
        d.copy_from_slice(s);
    }
    b
}

/// Recomputes a block's checksum, keeping the identity its header claims.
pub fn reseal(block: &mut Block) {
    if let Ok(h) = header(&block[..]) {
        seal_block(block, h.blockno.get(), h.generation.get(), h.fs_id.get());
    }
}

/// A byte of the block picked by `sel`, flipped: a sealed block must then
/// fail verification (CRC32C catches every error burst of up to 32 bits).
fn flip_one(block: &Block, sel: u64) -> Box<Block> {
    let mut b = Box::new(*block);
    let i = (sel % BLOCK_SIZE as u64) as usize;
    if let Some(x) = b.get_mut(i) {
        *x ^= 1 << (sel >> 61);
    }
    b
}

/// Superblock decoding.
///
/// ```text
/// byte size field
///    0    1 mode: MODE_RESEAL, MODE_FIX_FIELDS, MODE_COPY_B
///    1    8 device size in blocks (little-endian)
///    9  ... the block (zero-padded to 4096 bytes)
/// ```
pub fn fuzz_superblock(data: &[u8]) {
    let mode = data.first().copied().unwrap_or(0);
    let dev_blocks = u64_at(data, 1);
    let mut block = block_from(data.get(SB_PREFIX..).unwrap_or(&[]));
    let blockno = if mode & MODE_COPY_B != 0 {
        dev_blocks.saturating_sub(1)
    } else {
        0
    };
    if mode & MODE_FIX_FIELDS != 0 {
        let mut sb = Superblock::blank();
        if let Ok(s) = zerocopy::FromBytes::read_from_bytes(&block[..]) {
            sb = s;
        }
        let blank = Superblock::blank();
        sb.header.magic = blank.header.magic;
        sb.header.kind = blank.header.kind;
        sb.magic2 = blank.magic2;
        sb.version = blank.version;
        sb.block_size = blank.block_size;
        block.copy_from_slice(sb.as_bytes());
    }
    if mode & MODE_RESEAL != 0 {
        let h =
            header(&block[..]).unwrap_or_else(|_| BlockHeader::fresh(BlockKind::Superblock, 0, 0));
        let mut uuid = [0u8; 16];
        if let Some(u) = block.get(88..104) {
            uuid.copy_from_slice(u);
        }
        seal_block(&mut block, blockno, h.generation.get(), fs_id_of(&uuid));
    }
    let Ok(sb) = Superblock::decode(&block, blockno, dev_blocks) else {
        return;
    };
    // What a decoded superblock promises.
    let total = sb.total_blocks.get();
    assert!(
        total >= MIN_BLOCKS && total <= dev_blocks,
        "total_blocks {total}"
    );
    let (ls, lb) = (sb.log_start.get(), sb.log_blocks.get());
    assert!(
        ls >= 1 && lb >= 8 && ls + lb < total,
        "log {ls}+{lb} of {total}"
    );
    assert_eq!(sb.version.get(), FORMAT_VERSION);
    assert_eq!(sb.incompat.get() & !INCOMPAT_KNOWN, 0);
    assert_eq!(sb.block_size.get() as usize, BLOCK_SIZE);
    assert_eq!(sb.header.blockno.get(), blockno);
    assert_eq!(sb.header.fs_id.get(), sb.fs_id());
    // Decoding is exact: encoding gives the same bytes back.
    assert!(
        sb.to_block()[..] == block[..],
        "superblock does not round-trip"
    );
    // Any damage to a valid superblock is caught.
    let bad = flip_one(&block, u64_at(data, 1) ^ u64_at(data, SB_PREFIX + 100));
    assert!(
        Superblock::decode(&bad, blockno, dev_blocks).is_err(),
        "a flipped bit went unnoticed"
    );
}

/// Block header verification, against an expectation taken from the input.
///
/// ```text
/// byte size field
///    0    1 mode: MODE_RESEAL, MODE_ANY_OWNER, MODE_STAMP
///    1    1 expected kind (any byte; unknown kinds map onto known ones)
///    2    8 expected block number
///   10    8 expected owner
///   18    8 expected file-system id
///   26  ... the block (zero-padded to 4096 bytes)
/// ```
pub fn fuzz_block_header(data: &[u8]) {
    let mode = data.first().copied().unwrap_or(0);
    let kb = data.get(1).copied().unwrap_or(0);
    // Every byte decodes to a kind or to None, and kinds have names.
    let kind = match BlockKind::from_u8(kb) {
        Some(k) => {
            assert_eq!(k as u8, kb);
            k
        }
        None => BlockKind::from_u8(kb % 13 + 1).unwrap_or(BlockKind::InodeTree),
    };
    assert!(!kind.name().is_empty());
    let expect = Expect {
        blockno: u64_at(data, 2),
        kind,
        owner: (mode & MODE_ANY_OWNER == 0).then(|| u64_at(data, 10)),
        fs_id: u64_at(data, 18),
    };
    let body = data.get(HEADER_PREFIX..).unwrap_or(&[]);
    // The raw header parser on the raw (possibly short) bytes.
    match header(body) {
        Ok(h) => {
            assert!(body.len() >= crate::HEADER_SIZE);
            assert_eq!(h.as_bytes(), body.get(..crate::HEADER_SIZE).unwrap_or(&[]));
        }
        Err(_) => assert!(body.len() < crate::HEADER_SIZE),
    }
    let mut block = block_from(body);
    if mode & MODE_STAMP != 0 {
        let mut h = header(&block[..]).unwrap_or_else(|_| BlockHeader::fresh(kind, 0, 0));
        h.kind = kind as u8;
        h.owner = expect.owner.unwrap_or(h.owner.get()).into();
        h.blockno = expect.blockno.into();
        h.fs_id = expect.fs_id.into();
        write_header(&mut block[..], &h);
    }
    if mode & MODE_RESEAL != 0 {
        reseal(&mut block);
    }
    let Ok(h) = verify_block(&block, &expect) else {
        return;
    };
    assert_eq!(h.magic.get(), BLOCK_MAGIC);
    assert_eq!(h.blockno.get(), expect.blockno);
    assert_eq!(h.fs_id.get(), expect.fs_id);
    assert_eq!(h.kind, kind as u8);
    if let Some(o) = expect.owner {
        assert_eq!(h.owner.get(), o);
    }
    let bad = flip_one(&block, u64_at(data, 2) ^ u64_at(data, HEADER_PREFIX + 64));
    assert!(
        verify_block(&bad, &expect).is_err(),
        "a flipped bit went unnoticed"
    );
}

/// Decodes `R` from `bytes`; a decode succeeds exactly when there are enough
/// bytes, and re-encodes to the same bytes.
fn roundtrip<R: Record + PartialEq>(bytes: &[u8]) -> Option<R> {
    let r = R::decode(bytes);
    assert_eq!(
        r.is_ok(),
        bytes.len() >= R::SIZE,
        "decode of {} bytes",
        bytes.len()
    );
    let r = r.ok()?;
    let mut out = vec![0u8; R::SIZE];
    r.encode(&mut out);
    assert_eq!(
        Some(out.as_slice()),
        bytes.get(..R::SIZE),
        "record does not round-trip"
    );
    assert!(R::decode(&out).ok() == Some(r));
    Some(r)
}

/// Every record and key decoder (inode and its inline extents, dirent and
/// its name, extent,
/// refcount, reverse map, error log, tree root, integer and tuple keys),
/// over windows of the input of every size around the record sizes.
///
/// ```text
/// byte size field
///    0    1 start of the window into the rest (modulo its length + 1)
///    1  ... record bytes
/// ```
pub fn fuzz_records(data: &[u8]) {
    let body = data.get(1..).unwrap_or(&[]);
    let skip = data.first().map_or(0, |&s| s as usize % (body.len() + 1));
    let w = body.get(skip..).unwrap_or(&[]);
    for end in [
        0,
        1,
        7,
        8,
        15,
        16,
        23,
        24,
        63,
        64,
        255,
        256,
        271,
        272,
        w.len(),
    ] {
        let s = w.get(..end.min(w.len())).unwrap_or(&[]);
        roundtrip::<u64>(s);
        roundtrip::<(u64, u64)>(s);
        roundtrip::<(u64, u64, u64)>(s);
        let _ = <() as Record>::decode(s);
        if let Some(t) = roundtrip::<TreeRoot>(s) {
            assert_eq!(t.is_empty(), t.block.get() == 0);
        }
        if let Some(e) = roundtrip::<ExtentRecord>(s) {
            let _ = (e.phys.get(), e.len.get(), e.flags.get());
        }
        if let Some(i) = roundtrip::<InodeRecord>(s) {
            let _ = (i.ino.get(), i.tree.is_empty(), i.loss.is_empty());
            // The inline area: a count past the array, or one without the
            // flag, is an error; otherwise the entries in use.
            match i.inline_extents() {
                Ok(ex) => {
                    assert!(ex.len() <= INLINE_EXTENTS);
                    assert!(i.extents_inline() || ex.is_empty());
                    assert_eq!(ex.len(), i.inline_count.get() as usize);
                    let _ = i.inline_tail_clean();
                }
                Err(_) => assert!(
                    i.inline_count.get() as usize > INLINE_EXTENTS
                        || (!i.extents_inline() && i.inline_count.get() != 0)
                ),
            }
        }
        if let Some(e) = roundtrip::<InlineExtent>(s) {
            let _ = (e.fblock.get(), e.phys.get(), e.len.get(), e.flags.get());
        }
        if let Some(r) = roundtrip::<RefcountRecord>(s) {
            let _ = (r.len.get(), r.count.get());
        }
        if let Some(r) = roundtrip::<RmapRecord>(s) {
            let _ = (r.len.get(), r.flags.get());
        }
        if let Some(r) = roundtrip::<ErrorLogRecord>(s) {
            let _ = (r.dev_off.get(), r.action.get(), r.owner_kind.get());
            let _ = (r.flags.get(), r.owners.get());
            // The same 64 bytes read as an owners record, and back.
            let o = ErrorLogOwners::from_record(r);
            assert_eq!(o.into_record(), r);
            assert_eq!(o.owners[0].ino, r.time_sec);
        }
        if let Some(d) = roundtrip::<DirentRecord>(s) {
            match d.name() {
                Ok(n) => {
                    assert!(!n.is_empty() && n.len() <= NAME_MAX);
                    assert_eq!(n.len(), d.name_len as usize);
                }
                Err(e) => assert!(d.name_len == 0, "name() refused length {}: {e}", d.name_len),
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// xorshift64*: a tiny deterministic generator, so this crate needs no
    /// random-number dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
        /// Changes a few bytes: zero, 0xff, a flipped bit or a random byte.
        fn mutate(&mut self, d: &mut [u8], from: usize) {
            if d.len() <= from {
                return;
            }
            for _ in 0..1 + self.below(4) {
                let i = from + self.below((d.len() - from) as u64) as usize;
                d[i] = match self.below(4) {
                    0 => 0,
                    1 => 0xff,
                    2 => d[i] ^ (1 << self.below(8)),
                    _ => self.next() as u8,
                };
            }
        }
    }

    /// A valid superblock input for a device of `dev` blocks.
    fn valid_sb(rng: &mut Rng, dev: u64) -> Vec<u8> {
        let mut sb = Superblock::blank();
        sb.uuid = rng.bytes(16).try_into().unwrap();
        sb.total_blocks = (MIN_BLOCKS + rng.below(dev - MIN_BLOCKS + 1)).into();
        sb.log_start = 1.into();
        sb.log_blocks = (8 + rng.below(200)).into();
        sb.incompat = (rng.next() & INCOMPAT_KNOWN).into();
        sb.inode_tree = TreeRoot::new(
            rng.below(5000),
            rng.below(4) as u32,
            rng.below(1 << 32) as u32,
        );
        let mut b = sb.to_block();
        seal_block(&mut b, 0, rng.below(1000), sb.fs_id());
        assert!(Superblock::decode(&b, 0, dev).is_ok());
        let mut d = vec![0u8];
        d.extend_from_slice(&dev.to_le_bytes());
        d.extend_from_slice(&b[..]);
        d
    }

    #[test]
    fn superblock_inputs() {
        let mut rng = Rng(0x5b_0001);
        for i in 0..3000 {
            let dev = MIN_BLOCKS + rng.below(10_000);
            let mut d = match i % 3 {
                0 => {
                    let n = rng.below(2 * BLOCK_SIZE as u64) as usize;
                    rng.bytes(n)
                }
                _ => {
                    let mut d = valid_sb(&mut rng, dev);
                    // Aim half the mutations at the fields before the reserved tail.
                    let from = if rng.below(2) == 0 {
                        SB_PREFIX
                    } else {
                        SB_PREFIX + 64
                    };
                    let to = (SB_PREFIX + 340).min(d.len());
                    rng.mutate(&mut d[..to], from);
                    d
                }
            };
            if !d.is_empty() && i % 3 != 0 {
                d[0] = rng.below(8) as u8;
            }
            fuzz_superblock(&d);
        }
        // Unmutated valid inputs decode.
        let d = valid_sb(&mut rng, 5000);
        fuzz_superblock(&d);
    }

    #[test]
    fn block_header_inputs() {
        let mut rng = Rng(0xb10c_0002);
        for i in 0..3000 {
            let kind = BlockKind::from_u8(1 + rng.below(13) as u8).unwrap();
            let mut d = vec![rng.below(8) as u8, kind as u8];
            let (no, owner, fs) = (rng.below(1 << 20), rng.below(100), rng.next());
            for v in [no, owner, fs] {
                d.extend_from_slice(&v.to_le_bytes());
            }
            match i % 3 {
                0 => {
                    let n = rng.below(BLOCK_SIZE as u64 + 100) as usize;
                    d.extend(rng.bytes(n));
                }
                _ => {
                    let mut b = Box::new([0u8; BLOCK_SIZE]);
                    write_header(&mut b[..], &BlockHeader::fresh(kind, owner, 0));
                    let n = rng.below(200) as usize;
                    b[64..64 + n].copy_from_slice(&rng.bytes(n));
                    seal_block(&mut b, no, rng.below(99), fs);
                    d.extend_from_slice(&b[..]);
                    if i % 3 == 2 {
                        rng.mutate(&mut d, 0);
                    }
                }
            }
            fuzz_block_header(&d);
        }
    }

    #[test]
    fn record_inputs() {
        let mut rng = Rng(0x7ec_0003);
        for i in 0..3000 {
            let n = rng.below(600) as usize;
            let mut d = rng.bytes(n);
            if i % 2 == 0 && d.len() > 20 {
                // Plausible dirents: a name length in range, at the right place.
                let at = 1 + 9;
                d[at] = rng.below(260) as u8;
            }
            if i % 4 == 1 && d.len() > 1 + 256 {
                // Plausible inodes: the inline flag and a count around the
                // array's length, in a window from the start.
                d[0] = 0;
                d[1 + 128] = rng.below(4) as u8;
                d[1 + 248..1 + 252].copy_from_slice(&(rng.below(7) as u32).to_le_bytes());
            }
            fuzz_records(&d);
        }
        fuzz_records(&[]);
    }
}
