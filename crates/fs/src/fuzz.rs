//! Fuzz entry points for everything in the file system that reads media
//! bytes: mounting (superblock, log, every tree) and the operations after it,
//! journal replay, and fsck.
//!
//! Each entry point starts from a small, valid file system built once per
//! process (the [`template`]) and damages it as the input says: bytes of
//! chosen metadata blocks are overwritten or XORed, blocks are copied over
//! others, and optionally the damaged blocks get a fresh checksum so the
//! parsers behind checksum verification are reached. The functions take plain
//! bytes and depend on no fuzzing crate, so unit tests drive them too.
//!
//! Input layout:
//!
//! ```text
//! byte size field
//!    0    1 flags: FLAG_PENDING (start from the image whose log holds a
//!           committed transaction to replay), FLAG_RESEAL (reseal every
//!           damaged block)
//!    1  ... patches, at most MAX_PATCHES, each:
//!           0  1 target: index into the entry point's target blocks (modulo
//!                their number); 0xf0 and above: copy a block (see below)
//!           1  2 offset in the block (little-endian, modulo 4096)
//!           3  1 bits 0-6: payload length - 1; bit 7: XOR (else overwrite)
//!           4  n payload (cut short at the end of the input)
//!         A copy patch copies target `offset & 0xff` over target
//!         `offset >> 8` and has no payload.
//! ```
//!
//! Besides "no panic, no hang", each entry point checks what must hold
//! whatever the damage: fsck and a failed mount write nothing, journal replay
//! is idempotent, and an image that fsck finds clean mounts, works and stays
//! clean.
use crate::error::Result;
use crate::fs::read_superblock;
use crate::fsck::{FsckReport, fsck};
use crate::inode::{FileKind, inode_tree, orphan_tree};
use crate::journal::{self, Recovery};
use crate::tx::{ReadStore, free_tree, geometry};
use crate::{FallocFlags, Fs, MkfsOptions, MountOptions, OpenOptions};
use daxfs_btree::NodeStore;
use daxfs_device::{Device, MemDevice};
use daxfs_format::block::{BLOCK_MAGIC, header};
use daxfs_format::superblock::MIN_BLOCKS;
use daxfs_format::{BLOCK_SIZE, BLOCK_SIZE_U64, Block, BlockKind, seal_block};
use std::collections::BTreeSet;
use std::ops::ControlFlow;
use std::sync::{Arc, OnceLock};

/// Flag: start from the image whose log holds a transaction to replay.
pub const FLAG_PENDING: u8 = 1;
/// Flag: give every damaged block a valid checksum again.
pub const FLAG_RESEAL: u8 = 2;
/// Patches applied from one input at most.
pub const MAX_PATCHES: usize = 32;
/// Target bytes from this value up mean "copy a block".
pub const COPY_PATCH: u8 = 0xf0;
/// File-system id of the template (every block header carries it).
pub const FUZZ_FS_ID: u64 = 0x6461_7866_7a7a_7566;
/// Size of the template, in blocks: the smallest file system.
pub const IMAGE_BLOCKS: u64 = MIN_BLOCKS;
/// Log size of the template, in blocks.
pub const LOG_BLOCKS: u64 = 64;

/// The valid file system every input starts from.
#[derive(Debug)]
pub struct Template {
    /// A snapshot taken while mounted: a file unlinked while still open is
    /// on the orphan list (mount frees it), and the log holds the last
    /// transaction, already checkpointed.
    pub clean: Vec<u8>,
    /// `clean` whose log holds one more committed transaction (a mkdir)
    /// that was not checkpointed: mount replays it.
    pub pending: Vec<u8>,
    /// Every metadata block of both images, and the data of the symlinks
    /// and of some files: what `fuzz_mount` and `fuzz_fsck` aim at.
    pub targets: Vec<u64>,
    /// The superblock copies and the used part of the log, and the home
    /// blocks the pending transaction names: what `fuzz_journal` aims at.
    pub log_targets: Vec<u64>,
}

/// The template, built on first use. Deterministic: the same bytes in every
/// process except the timestamps inside inode records.
pub fn template() -> &'static Template {
    static T: OnceLock<Template> = OnceLock::new();
    T.get_or_init(|| build_template().unwrap_or_else(|e| panic!("building the fuzz template: {e}")))
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Files and directories whose trees have more than one level, and small
/// files whose extents are inline in their inode records.
fn populate(fs: &Fs) -> Result<()> {
    fs.mkdir("/d", 0o755)?;
    for i in 0..20 {
        let f = fs.create(format!("/d/f{i}"))?;
        f.write_at(0, &pattern(i, 100 + 300 * i as usize))?;
    }
    fs.mkdir("/sub", 0o700)?;
    fs.mkdir("/sub/deeper", 0o755)?;
    // One extent per written block: an extent tree of two levels.
    let f = fs.create("/frag")?;
    for i in 0..200u64 {
        f.write_at(2 * i * BLOCK_SIZE_U64, &pattern(1000 + i, 100))?;
    }
    // Four extents: a full inline array.
    let f = fs.create("/four")?;
    for i in 0..4u64 {
        f.write_at(2 * i * BLOCK_SIZE_U64, &pattern(2000 + i, 300))?;
    }
    let f = fs.create("/big")?;
    f.write_at(0, &pattern(7, 100_000))?;
    f.fallocate(
        FallocFlags {
            keep_size: true,
            ..Default::default()
        },
        100_000,
        100_000,
    )?;
    // Shared blocks: a refcount tree.
    let clone = fs.create("/clone")?;
    clone.clone_from(&f)?;
    fs.symlink("d/f1", "/link")?;
    fs.symlink("/sub/deeper", "/sub/up")?;
    fs.link("/d/f0", "/hard")?;
    // Media errors reported in file data and in free space: the error log,
    // the loss tree and the bad-block tree.
    let f5 = fs.open("/d/f5", &OpenOptions::read_only())?;
    if let Some(e) = f5.fiemap()?.first() {
        fs.media_failure(e.physical, BLOCK_SIZE_U64, Default::default())?;
    }
    let last_free = (IMAGE_BLOCKS - 8) * BLOCK_SIZE_U64;
    fs.media_failure(last_free, 2 * BLOCK_SIZE_U64, Default::default())?;
    // A block shared by six files: an error-log entry whose other five
    // owners take two owner records, the second partly used.
    let s = fs.create("/shared")?;
    s.write_at(0, &pattern(3000, 500))?;
    for i in 0..5 {
        fs.create(format!("/shared{i}"))?.clone_from(&s)?;
    }
    if let Some(e) = s.fiemap()?.first() {
        fs.media_failure(e.physical, BLOCK_SIZE_U64, Default::default())?;
    }
    fs.sync()
}

/// The template's UUID: its first 8 bytes are [`FUZZ_FS_ID`].
fn fuzz_uuid() -> [u8; 16] {
    let mut u = [0u8; 16];
    u[..8].copy_from_slice(&FUZZ_FS_ID.to_le_bytes());
    u[8..].copy_from_slice(b"daxfuzz!");
    u
}

/// Clears the mkfs time in the superblocks (and the log's superblock
/// images), resealing each. Nothing else needs it: the template is made
/// with a fixed UUID, and no pointer names a superblock's crc.
fn normalize(img: &mut [u8]) {
    for blk in img.chunks_exact_mut(BLOCK_SIZE) {
        let Ok(b) = <&mut Block>::try_from(blk) else {
            continue;
        };
        let Ok(h) = header(&b[..]) else { continue };
        if h.magic.get() != BLOCK_MAGIC
            || h.fs_id.get() != FUZZ_FS_ID
            || h.kind != BlockKind::Superblock as u8
        {
            continue;
        }
        b[296..304].fill(0);
        seal_block(b, h.blockno.get(), h.generation.get(), FUZZ_FS_ID);
    }
}

/// Metadata blocks of an image, and the data blocks of symlinks and of the
/// first extents of files.
fn blocks_of(img: &[u8]) -> Result<BTreeSet<u64>> {
    let dev = MemDevice::from_image(img.to_vec());
    let sb = read_superblock(&dev)?;
    let mut s = ReadStore::new(&dev, sb.fs_id(), None, None);
    let mut out = BTreeSet::new();
    out.insert(0);
    out.insert(sb.total_blocks.get() - 1);
    let mut add = |b: daxfs_format::BlockNo, _| {
        out.insert(b.0);
    };
    free_tree().visit_nodes(&mut s, &sb.free_tree, &mut add)?;
    inode_tree().visit_nodes(&mut s, &sb.inode_tree, &mut add)?;
    orphan_tree().visit_nodes(&mut s, &sb.orphan_tree, &mut add)?;
    crate::dir::parent_tree().visit_nodes(&mut s, &sb.parent_tree, &mut add)?;
    crate::space::rmap::tree().visit_nodes(&mut s, &sb.rmap_tree, &mut add)?;
    crate::space::refcount::tree().visit_nodes(&mut s, &sb.refcount_tree, &mut add)?;
    crate::space::badblocks::tree().visit_nodes(&mut s, &sb.badblock_tree, &mut add)?;
    crate::media::loss_tree().visit_nodes(&mut s, &sb.loss_tree, &mut add)?;
    crate::media::error_log().visit_nodes(&mut s, &sb.error_log, &mut add)?;
    crate::xattr::tree().visit_nodes(&mut s, &sb.xattr_tree, &mut add)?;
    let mut recs = vec![];
    inode_tree().range(&mut s, &sb.inode_tree, &0, &u64::MAX, &mut |_, r| {
        recs.push(r);
        ControlFlow::Continue(())
    })?;
    for r in recs {
        let ino = r.ino.get();
        match FileKind::of_mode(r.mode.get()) {
            Some(FileKind::Dir) => crate::dir::tree(ino).visit_nodes(&mut s, &r.tree, &mut add)?,
            Some(kind) => {
                crate::extents::tree(ino).visit_nodes(&mut s, &r.tree, &mut add)?;
                let map = crate::extents::ExtentMap::load(&mut s as &mut dyn NodeStore, ino, &r)?;
                let n = if kind == FileKind::Symlink {
                    usize::MAX
                } else {
                    2
                };
                for e in map.iter().take(n) {
                    add(daxfs_format::BlockNo(e.phys), 0);
                }
            }
            None => {}
        }
    }
    Ok(out)
}

fn build_template() -> Result<Template> {
    let dev = Arc::new(MemDevice::new(IMAGE_BLOCKS * BLOCK_SIZE_U64));
    Fs::mkfs(
        dev.clone(),
        &MkfsOptions {
            log_blocks: Some(LOG_BLOCKS),
            label: "fuzz".into(),
            uuid: Some(fuzz_uuid()),
            ..Default::default()
        },
    )?;
    let fs = Fs::mount(dev.clone(), &MountOptions::default())?;
    populate(&fs)?;
    let orphan = fs.create("/orphan")?;
    orphan.write_at(0, &pattern(99, 5000))?;
    fs.unlink("/orphan")?;
    let mut clean = dev.image();
    fs.mkdir("/pending", 0o755)?;
    let mut after = dev.image();
    drop(orphan);
    drop(fs);
    let log_start = read_superblock(&*dev)?.log_start.get();
    let log =
        (log_start * BLOCK_SIZE_U64) as usize..((log_start + LOG_BLOCKS) * BLOCK_SIZE_U64) as usize;
    let mut pending = clean.clone();
    pending[log.clone()].copy_from_slice(&after[log.clone()]);
    // New nodes are not logged: they were written home (and to their
    // replicas) before the commit record, so they are there too.
    {
        let dev = MemDevice::from_image(pending.clone());
        let sb = read_superblock(&dev)?;
        let geo = geometry(&sb);
        let generation = sb.header.generation.get();
        if let Ok(Some(p)) = journal::pending(&dev, &geo, sb.fs_id(), generation) {
            let mut keep: BTreeSet<u64> = [0, sb.total_blocks.get() - 1].into();
            for (h, r, _) in &p.images {
                keep.extend([*h, *r]);
            }
            if geo.replica != 0 {
                keep.extend(geo.replica..geo.replica + geo.mirrored());
            }
            let bs = BLOCK_SIZE_U64 as usize;
            for b in 0..(after.len() / bs) as u64 {
                let r = b as usize * bs..(b as usize + 1) * bs;
                if !keep.contains(&b)
                    && !log.contains(&r.start)
                    && clean[r.clone()] != after[r.clone()]
                {
                    pending[r.clone()].copy_from_slice(&after[r]);
                }
            }
        }
    }
    normalize(&mut clean);
    normalize(&mut pending);
    normalize(&mut after);
    let mut targets = blocks_of(&clean)?;
    targets.extend(blocks_of(&after)?);
    // The used part of the log: descriptors, then the images of the last
    // transaction of either image.
    let dev = MemDevice::from_image(pending.clone());
    let sb = read_superblock(&dev)?;
    let geo = geometry(&sb);
    let used = |img: &[u8]| -> u64 {
        let at = (log_start * BLOCK_SIZE_U64) as usize + 72;
        img.get(at..at + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map_or(0, u64::from_le_bytes)
    };
    let n = used(&clean).max(used(&pending));
    let mut log_targets: BTreeSet<u64> = (log_start..log_start + geo.desc_blocks() + n).collect();
    log_targets.extend([0, sb.total_blocks.get() - 1]);
    if geo.replica != 0 {
        log_targets.extend(geo.replica..geo.replica + geo.mirrored());
    }
    if let Ok(Some(p)) = journal::pending(&dev, &geo, sb.fs_id(), sb.header.generation.get()) {
        for (h, r, _) in &p.images {
            log_targets.insert(*h);
            if *r != 0 {
                log_targets.insert(*r);
            }
        }
    }
    targets.extend(log_targets.iter().copied());
    Ok(Template {
        clean,
        pending,
        targets: targets.into_iter().collect(),
        log_targets: log_targets.into_iter().collect(),
    })
}

/// The template image damaged as `data` says (see the module docs), with
/// `targets` as the blocks patches aim at. Returns the flags and the image.
pub fn damaged_image(data: &[u8], targets: &[u64]) -> (u8, Vec<u8>) {
    let mut img = vec![];
    let flags = damage_into(data, targets, &mut img);
    (flags, img)
}

/// As [`damaged_image`], into `img` (whose allocation is reused).
pub fn damage_into(data: &[u8], targets: &[u64], img: &mut Vec<u8>) -> u8 {
    let t = template();
    let flags = data.first().copied().unwrap_or(0);
    img.clear();
    img.extend_from_slice(if flags & FLAG_PENDING != 0 {
        &t.pending
    } else {
        &t.clean
    });
    let pick = |i: u8| -> u64 {
        targets
            .get(usize::from(i) % targets.len().max(1))
            .copied()
            .unwrap_or(0)
    };
    let range = |b: u64| (b * BLOCK_SIZE_U64) as usize..((b + 1) * BLOCK_SIZE_U64) as usize;
    let mut touched = BTreeSet::new();
    let mut rest = data.get(1..).unwrap_or(&[]);
    for _ in 0..MAX_PATCHES {
        let [sel, o0, o1, lb, ..] = *rest else { break };
        rest = &rest[4..];
        let off = u16::from_le_bytes([o0, o1]);
        if sel >= COPY_PATCH {
            let (src, dst) = (pick(o0), pick(o1));
            img.copy_within(range(src), range(dst).start);
            touched.insert(dst);
            continue;
        }
        let n = usize::from(lb & 0x7f) + 1;
        let payload = &rest[..n.min(rest.len())];
        rest = &rest[payload.len()..];
        let b = pick(sel);
        let block = &mut img[range(b)];
        let off = usize::from(off) % BLOCK_SIZE;
        for (x, p) in block[off..].iter_mut().zip(payload) {
            if lb & 0x80 != 0 {
                *x ^= p;
            } else {
                *x = *p;
            }
        }
        touched.insert(b);
    }
    if flags & FLAG_RESEAL != 0 {
        for &b in &touched {
            if let Ok(blk) = <&mut Block>::try_from(&mut img[range(b)]) {
                daxfs_format::fuzz::reseal(blk);
            }
        }
        point_at(img, touched);
    }
    flags
}

/// Where the children's block numbers and crcs of an internal node of
/// `kind` lie, and how many it holds at most; `None` for a kind that is
/// not a tree's.
fn internal_layout(kind: u8) -> Option<(usize, usize, usize)> {
    use daxfs_btree::BTree;
    use daxfs_format::records::{DirentRecord, ExtentRecord, InodeRecord};
    type Wide = (u64, u64, u64);
    let (key, cap) = match BlockKind::from_u8(kind)? {
        BlockKind::InodeTree => (8, BTree::<u64, InodeRecord>::INTERNAL_CAPACITY),
        BlockKind::DirTree => (8, BTree::<u64, DirentRecord>::INTERNAL_CAPACITY),
        BlockKind::ExtentTree => (8, BTree::<u64, ExtentRecord>::INTERNAL_CAPACITY),
        BlockKind::FreeTree
        | BlockKind::RefcountTree
        | BlockKind::OrphanTree
        | BlockKind::BadBlockTree => (8, BTree::<u64, u64>::INTERNAL_CAPACITY),
        BlockKind::ParentTree => (24, BTree::<Wide, ()>::INTERNAL_CAPACITY),
        BlockKind::RmapTree => (
            24,
            BTree::<Wide, daxfs_format::records::RmapRecord, crate::space::rmap::MaxEnd>::INTERNAL_CAPACITY,
        ),
        BlockKind::ErrorLog | BlockKind::LossTree => {
            (16, BTree::<(u64, u64), u64>::INTERNAL_CAPACITY)
        }
        BlockKind::XattrTree => (24, BTree::<Wide, ()>::INTERNAL_CAPACITY),
        _ => return None,
    };
    let kids = daxfs_format::HEADER_SIZE + cap * key;
    Some((kids, kids + cap * 8, cap))
}

/// Makes every pointer to the blocks of `changed` (already resealed) name
/// their crcs, resealing the blocks that hold the pointers in turn: the
/// parents' child crcs, the tree roots in inode records and in both
/// superblock copies. So a resealed change reaches the checks past the
/// crc. Bounded: an image whose pointers loop stops after a while.
pub fn point_at(img: &mut [u8], changed: impl IntoIterator<Item = u64>) {
    let nblocks = (img.len() / BLOCK_SIZE) as u64;
    let range = |b: u64| (b as usize * BLOCK_SIZE)..((b as usize + 1) * BLOCK_SIZE);
    // Who points at whom: (target, holder, offset of the crc in holder).
    let mut holders: std::collections::HashMap<u64, Vec<(u64, usize)>> = Default::default();
    let u64_at = |blk: &[u8], at: usize| {
        blk.get(at..at + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map_or(0, u64::from_le_bytes)
    };
    for b in 0..nblocks {
        let blk = &img[range(b)];
        let Ok(h) = header(blk) else { continue };
        if h.magic.get() != BLOCK_MAGIC {
            continue;
        }
        if h.kind == BlockKind::Superblock as u8 {
            for at in [160, 176, 192, 208, 224, 240, 256, 272, 336] {
                holders
                    .entry(u64_at(blk, at))
                    .or_default()
                    .push((b, at + 12));
            }
        } else if h.level > 0 {
            let Some((kids, crcs, cap)) = internal_layout(h.kind) else {
                continue;
            };
            for i in 0..(h.count.get() as usize).min(cap) {
                holders
                    .entry(u64_at(blk, kids + 8 * i))
                    .or_default()
                    .push((b, crcs + 4 * i));
            }
        } else if h.kind == BlockKind::InodeTree as u8 {
            let cap = daxfs_btree::BTree::<u64, daxfs_format::records::InodeRecord>::LEAF_CAPACITY;
            let vals = daxfs_format::HEADER_SIZE + cap * 8;
            for i in 0..(h.count.get() as usize).min(cap) {
                let at = vals + 256 * i + 96;
                holders
                    .entry(u64_at(blk, at))
                    .or_default()
                    .push((b, at + 12));
            }
        }
    }
    let mut todo: Vec<u64> = changed.into_iter().collect();
    let mut steps = 0;
    while let Some(b) = todo.pop() {
        steps += 1;
        if steps > 4096 || b == 0 || b >= nblocks {
            continue;
        }
        let crc =
            daxfs_btree::sealed_crc(<&Block>::try_from(&img[range(b)]).unwrap_or(&[0; BLOCK_SIZE]));
        for &(hb, at) in holders.get(&b).map_or(&[][..], |v| &v[..]) {
            let blk = &mut img[range(hb)];
            if let Some(d) = blk.get_mut(at..at + 4) {
                d.copy_from_slice(&crc.to_le_bytes());
            }
            if let Ok(blk) = <&mut Block>::try_from(blk) {
                daxfs_format::fuzz::reseal(blk);
            }
            if hb != 0 && hb != nblocks - 1 {
                todo.push(hb);
            }
        }
    }
}

/// Buffers and a device reused from one input to the next: allocating and
/// faulting in a fresh image each time costs more than the work itself.
struct Scratch {
    dev: Arc<MemDevice>,
    img: Vec<u8>,
    check: Vec<u8>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Option<Scratch>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` with the damaged image loaded on a device, and the image.
fn with_damaged(
    data: &[u8],
    targets: &[u64],
    f: impl FnOnce(&Arc<MemDevice>, &[u8], &mut Vec<u8>),
) {
    let mut sc = SCRATCH
        .with(|s| s.borrow_mut().take())
        .unwrap_or_else(|| Scratch {
            dev: Arc::new(MemDevice::new(IMAGE_BLOCKS * BLOCK_SIZE_U64)),
            img: vec![],
            check: vec![],
        });
    damage_into(data, targets, &mut sc.img);
    if sc.dev.write(0, &sc.img).is_err() || Arc::strong_count(&sc.dev) != 1 {
        // Cannot happen: the device is the image's size and nothing keeps it.
        sc.dev = Arc::new(MemDevice::from_image(sc.img.clone()));
    }
    f(&sc.dev, &sc.img, &mut sc.check);
    SCRATCH.with(|s| *s.borrow_mut() = Some(sc));
}

/// True when the device holds exactly `img` (`buf` is scratch space).
fn holds(dev: &MemDevice, img: &[u8], buf: &mut Vec<u8>) -> bool {
    buf.resize(img.len(), 0);
    dev.len() == img.len() as u64 && dev.read(0, buf).is_ok() && buf[..] == img[..]
}

fn run_fsck(dev: &dyn Device) -> Result<FsckReport> {
    fsck(dev, &mut |_, _, _| {})
}

fn is_clean(r: &Result<FsckReport>) -> bool {
    matches!(r, Ok(rep) if rep.is_clean())
}

fn problems(r: &Result<FsckReport>) -> String {
    match r {
        Ok(rep) => rep
            .problems
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("; "),
        Err(e) => format!("fsck failed: {e}"),
    }
}

/// Reads everything reachable from the root, within a budget of entries and
/// a depth limit (a corrupt directory may name its own ancestor).
fn walk(fs: &Fs, dir: &str, depth: u32, budget: &mut u32) {
    let Ok(entries) = fs.readdir_from(dir, 0, 64) else {
        return;
    };
    for e in entries {
        if *budget == 0 {
            return;
        }
        *budget -= 1;
        let path = format!("{}/{}", dir.trim_end_matches('/'), e.name_lossy());
        let _ = fs.lstat(&path);
        let _ = fs.stat(&path);
        match e.kind {
            FileKind::Dir if depth < 6 => walk(fs, &path, depth + 1, budget),
            FileKind::Dir => {}
            FileKind::Symlink => {
                let _ = fs.readlink(&path);
            }
            _ if e.kind.is_special() => {}
            _ => {
                if let Ok(f) = fs.open(&path, &OpenOptions::read_only()) {
                    let mut buf = vec![0u8; 64 << 10];
                    let _ = f.read_at(0, &mut buf);
                    let _ = f.read_at(f.stat().size.saturating_sub(100), &mut buf);
                    let _ = f.fiemap();
                }
            }
        }
    }
}

/// Reads and changes a mounted file system, ignoring every error.
fn exercise(fs: &Fs) {
    let _ = fs.info();
    let mut budget = 200;
    walk(fs, "/", 0, &mut budget);
    for p in ["/d/f3", "/link", "/sub/up", "/sub/deeper/..", "/pending"] {
        let _ = fs.stat(p);
    }
    let bs = BLOCK_SIZE_U64;
    if let Ok(f) = fs.open("/frag", &OpenOptions::read_write()) {
        let _ = f.write_at(3 * bs + 10, &[1u8; 100]);
        let _ = f.write_at(bs, &[2u8; 5000]);
        let _ = f.write_at(1 << 21, &[3u8; 9000]);
        let _ = f.set_len(50 * bs + 7);
        let _ = f.fallocate(
            FallocFlags {
                keep_size: true,
                punch_hole: true,
                ..Default::default()
            },
            0,
            16 * bs,
        );
        let _ = f.fsync();
    }
    if let Ok(f) = fs.open("/big", &OpenOptions::read_write()) {
        let _ = f.write_at(5, &[4u8; 4096]);
        let _ = f.fallocate(
            FallocFlags {
                zero_range: true,
                ..Default::default()
            },
            4096,
            3 * bs,
        );
        let _ = f.write_at(120_000, &[5u8; 100]);
        let _ = f.fsync();
    }
    if let Ok(f) = fs.create("/new") {
        let _ = f.write_at(0, &[6u8; 10_000]);
    }
    // Inline extents: past four (a tree), then nothing (inline again).
    if let Ok(f) = fs.open("/four", &OpenOptions::read_write()) {
        let _ = f.write_at(9 * bs, &[8u8; 10]);
        let _ = f.fsync();
        let _ = f.set_len(0);
        let _ = f.write_at(bs, &[9u8; 10]);
    }
    if let (Ok(a), Ok(b)) = (
        fs.open("/big", &OpenOptions::read_only()),
        fs.open("/clone", &OpenOptions::read_write()),
    ) {
        let _ = b.clone_range(&a, 0, 8 * bs, 4 * bs);
        let _ = b.copy_range(&a, 100, 3, 5000);
        let _ = b.write_at(bs, &[7u8; 100]);
    }
    let _ = fs.owners(0, IMAGE_BLOCKS);
    let _ = fs.fsmap(0, IMAGE_BLOCKS);
    let _ = fs.error_log();
    let _ = fs.bad_ranges();
    let _ = fs.all_losses();
    let _ = fs.paths(3);
    let _ = fs.clear_bad_range((IMAGE_BLOCKS - 8) * bs, bs);
    let _ = fs.mkdir("/newdir", 0o755);
    let _ = fs.rename("/d/f2", "/newdir/g");
    let _ = fs.rename("/sub", "/newdir/sub");
    let _ = fs.link("/big", "/d/big2");
    let _ = fs.unlink("/d/f4");
    let _ = fs.unlink("/hard");
    let _ = fs.rmdir("/newdir/sub/deeper");
    let _ = fs.symlink("/big", "/s2");
    let _ = fs.chmod("/d", 0o700);
    let _ = fs.truncate("/big", 5000);
    let _ = fs.readdir("/d");
    let _ = fs.sync();
}

/// Mounts a damaged image, uses it, unmounts it and checks it.
///
/// Checks: a mount that fails without replaying the log writes nothing; an
/// image fsck finds clean mounts and is still clean after the operations.
pub fn fuzz_mount(data: &[u8]) {
    with_damaged(data, &template().targets, |dev, img, buf| {
        let before = run_fsck(&**dev);
        // Recovery writes: replaying the log's transaction, or the reverse
        // map's pending changes (intents).
        let replays = read_superblock(&**dev).is_ok_and(|sb| {
            sb.rmap_intents.get() > 0
                || journal::pending(
                    &**dev,
                    &geometry(&sb),
                    sb.fs_id(),
                    sb.header.generation.get(),
                )
                .is_ok_and(|p| p.is_some())
        });
        match Fs::mount(dev.clone(), &MountOptions::default()) {
            Ok(fs) => {
                exercise(&fs);
                drop(fs);
                if is_clean(&before) {
                    let after = run_fsck(&**dev);
                    assert!(
                        is_clean(&after),
                        "a clean file system is inconsistent after use: {}",
                        problems(&after)
                    );
                }
            }
            Err(e) => {
                assert!(!e.to_string().is_empty());
                assert!(
                    !is_clean(&before),
                    "mount fails on an image fsck finds clean: {e}"
                );
                if !replays {
                    assert!(
                        holds(dev, img, buf),
                        "a failed mount wrote to the device: {e}"
                    );
                }
            }
        }
    });
}

/// Reads and replays the log of a damaged image.
///
/// Checks: reading the log writes nothing; what it returns is a transaction
/// that fits the log and names blocks of the file system; a failed replay
/// writes nothing; replay is idempotent.
pub fn fuzz_journal(data: &[u8]) {
    with_damaged(data, &template().log_targets, |dev, img, buf| {
        let dev = &**dev;
        let Ok(sb) = read_superblock(dev) else {
            return;
        };
        let geo = geometry(&sb);
        let (fs_id, generation) = (sb.fs_id(), sb.header.generation.get());
        let p = journal::pending(dev, &geo, fs_id, generation);
        assert!(holds(dev, img, buf), "reading the log wrote to the device");
        if let Ok(Some(pend)) = &p {
            assert_eq!(pend.seq, generation + 1);
            assert!(pend.images.len() <= geo.capacity());
            for (home, _, img) in &pend.images {
                let h = img.as_ref().and_then(|img| header(&img[..]).ok());
                assert!(
                    img.is_none()
                        || h.is_some_and(
                            |h| h.blockno.get() == *home && h.generation.get() == pend.seq
                        )
                );
            }
        }
        // A transaction whose image is found nowhere, once a home may have
        // been written, can be neither replayed nor undone.
        let stuck = matches!(&p, Ok(Some(x)) if x.complete().is_none() && !x.homes_untouched);
        let r = journal::recover(dev, &geo, fs_id, generation);
        match (&p, &r) {
            (Ok(_), Err(_)) if stuck => {}
            (Err(_), Ok(_)) | (Ok(_), Err(_)) => {
                panic!("reading and replaying the log disagree: {p:?} vs {r:?}")
            }
            (Ok(None), Ok(rec)) => assert_eq!(*rec, Recovery::Clean),
            _ => {}
        }
        if r.is_err() || matches!(r, Ok(Recovery::Clean)) {
            assert!(
                holds(dev, img, buf),
                "a replay that did nothing wrote to the device"
            );
        }
        if matches!(r, Ok(Recovery::Replayed { .. })) {
            let once = dev.image();
            let _ = journal::recover(dev, &geo, fs_id, generation);
            assert!(
                holds(dev, &once, buf),
                "replaying twice differs from replaying once"
            );
        }
    });
    // Mount and fsck see the same damage.
    with_damaged(data, &template().log_targets, |dev, _, _| {
        if let Ok(fs) = Fs::mount(dev.clone(), &MountOptions::default()) {
            let _ = fs.readdir("/");
            let _ = fs.stat("/pending");
        }
        let _ = run_fsck(&**dev);
    });
}

/// Checks a damaged image.
///
/// Checks: fsck writes nothing and gives the same answer twice; every
/// problem names its structure; an image it finds clean mounts and lists.
pub fn fuzz_fsck(data: &[u8]) {
    with_damaged(data, &template().targets, |dev, img, buf| {
        let r = run_fsck(&**dev);
        assert!(holds(dev, img, buf), "fsck wrote to the device");
        if let Ok(rep) = &r {
            for p in &rep.problems {
                assert!(!p.structure.is_empty() && !p.message.is_empty(), "{p:?}");
            }
            let again = run_fsck(&**dev);
            assert_eq!(
                problems(&r),
                problems(&again),
                "fsck gives different answers on the same image"
            );
        }
        if is_clean(&r) {
            let fs = Fs::mount(dev.clone(), &MountOptions::default())
                .unwrap_or_else(|e| panic!("mount fails on an image fsck finds clean: {e}"));
            if let Err(e) = fs.readdir("/") {
                panic!("readdir / fails on an image fsck finds clean: {e}");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    /// A random input: flags, then patches aimed at header fields, tree
    /// arrays, anywhere, or block copies.
    fn input(rng: &mut SmallRng, targets: usize) -> Vec<u8> {
        let mut d = vec![rng.random_range(0..4u8)];
        for _ in 0..rng.random_range(1..4) {
            let sel = if rng.random_bool(0.05) {
                COPY_PATCH
            } else {
                rng.random_range(0..targets.min(240)) as u8
            };
            let off: u16 = match rng.random_range(0..4) {
                0 => rng.random_range(0..64),
                1 => rng.random_range(64..400),
                2 => rng.random_range(0..4096),
                _ => u16::from_le_bytes([
                    rng.random_range(0..targets.min(256)) as u8,
                    rng.random_range(0..targets.min(256)) as u8,
                ]),
            };
            let n = rng.random_range(1..9u8);
            let xor = if rng.random_bool(0.5) { 0x80 } else { 0 };
            d.extend_from_slice(&[sel, off as u8, (off >> 8) as u8, (n - 1) | xor]);
            for _ in 0..n {
                d.push(match rng.random_range(0..4) {
                    0 => 0,
                    1 => 0xff,
                    2 => 1 << rng.random_range(0..8),
                    _ => rng.random(),
                });
            }
        }
        d
    }

    /// Runs `f` on `data`; on a panic, fails naming the input in hex so it
    /// can be frozen as a regression test.
    fn run(f: fn(&[u8]), data: &[u8]) {
        if std::panic::catch_unwind(|| f(data)).is_err() {
            let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
            panic!("failing input: {hex}");
        }
    }

    #[test]
    fn template_is_valid_and_deterministic() {
        let t = template();
        for img in [&t.clean, &t.pending] {
            let dev = MemDevice::from_image(img.clone());
            let r = run_fsck(&dev);
            assert!(is_clean(&r), "{}", problems(&r));
        }
        assert!(t.targets.len() > 20, "{:?}", t.targets);
        assert!(t.log_targets.len() > 4, "{:?}", t.log_targets);
        // Unpatched inputs run every check on valid images.
        for flags in 0..4 {
            fuzz_mount(&[flags]);
            fuzz_journal(&[flags]);
            fuzz_fsck(&[flags]);
        }
    }

    #[test]
    fn mount_inputs() {
        let t = template();
        let mut rng = SmallRng::seed_from_u64(0x6d6f_756e);
        for _ in 0..1000 {
            run(fuzz_mount, &input(&mut rng, t.targets.len()));
        }
    }

    #[test]
    fn journal_inputs() {
        let t = template();
        let mut rng = SmallRng::seed_from_u64(0x006a_6e6c);
        for _ in 0..1000 {
            let mut d = input(&mut rng, t.log_targets.len());
            d[0] |= FLAG_PENDING;
            run(fuzz_journal, &d);
        }
    }

    #[test]
    fn fsck_inputs() {
        let t = template();
        let mut rng = SmallRng::seed_from_u64(0x6673_636b);
        for _ in 0..1000 {
            run(fuzz_fsck, &input(&mut rng, t.targets.len()));
        }
    }

    #[test]
    fn noise_inputs() {
        let mut rng = SmallRng::seed_from_u64(0x6e6f_6973);
        for i in 0..300 {
            let n = rng.random_range(0..400);
            let d: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            match i % 3 {
                0 => run(fuzz_mount, &d),
                1 => run(fuzz_journal, &d),
                _ => run(fuzz_fsck, &d),
            }
        }
    }

    // ---- regressions: inputs that crashed or hung before their fix ----

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Found by fuzzing fs_journal (the seeded `journal_inputs` run): a
    /// resealed log image whose tree node names a child past block 2^52
    /// overflowed the node's byte offset in `tx::read_verified`.
    #[test]
    fn regress_node_number_overflow() {
        fuzz_journal(&hex("0302040380ec051f010020"));
        let dev = MemDevice::new(IMAGE_BLOCKS * BLOCK_SIZE_U64);
        let e = crate::tx::read_verified(&dev, u64::MAX, BlockKind::InodeTree, Some(0), 1);
        assert!(
            matches!(e, Err(daxfs_btree::TreeError::Corrupt { .. })),
            "{e:?}"
        );
    }

    /// Found by fuzzing fs_mount (the seeded `mount_inputs` run): free and
    /// data blocks counted more than once made fsck's metadata-block count
    /// underflow.
    #[test]
    fn regress_fsck_count_underflow() {
        fuzz_mount(&hex("02409805832020ff001a492f873f00ffff02ff8000"));
    }

    /// Found by fuzzing fs_mount (minimized): an extent whose device block is
    /// near 2^64 overflowed the byte offset of a read (`file::read_mapped`);
    /// `ExtentMap::load` now refuses extents past the largest file or device.
    #[test]
    fn regress_extent_offset_overflow() {
        fuzz_mount(&hex("2ba342305f4272a50142"));
        let mut s = daxfs_btree::MemStore::new();
        let mut root = daxfs_format::records::TreeRoot::EMPTY;
        let rec = daxfs_format::records::ExtentRecord {
            phys: (u64::MAX / 2).into(),
            len: 1.into(),
            flags: 0.into(),
        };
        crate::extents::tree(5)
            .insert(&mut s, &mut root, 0, rec)
            .unwrap();
        let mut r = crate::inode::new_record(5, FileKind::Symlink, 0o777, 0, 0, 1);
        r.tree = root;
        let e = crate::extents::ExtentMap::load(&mut s, 5, &r).unwrap_err();
        assert!(e.to_string().contains("out of range"), "{e}");
    }

    /// Found by fuzzing fs_journal (minimized): a replayed inode record with a
    /// huge block count overflowed `st_blocks` in `Stat::of`.
    #[test]
    fn regress_stat_blocks_overflow() {
        fuzz_journal(&hex("c741dc5db9f9f80026"));
        let mut rec = crate::inode::new_record(7, FileKind::File, 0o644, 0, 0, 1);
        rec.blocks = u64::MAX.into();
        assert_eq!(crate::namespace::Stat::of(&rec).blocks, u64::MAX);
    }

    /// Found by fuzzing fs_mount (a timeout): the orphan freed at mount had an
    /// extent of 0x30000000 blocks, and `Tx::free_extent` looped over every
    /// block of it; such a free is now refused as outside the data area.
    #[test]
    fn regress_huge_free_hangs() {
        fuzz_mount(&hex("7a4784850c0000010000000030000000007a4700"));
        let dev = Arc::new(MemDevice::from_image(template().clean.clone()));
        let fs = Fs::mount(dev, &MountOptions::default()).unwrap();
        let mut meta = crate::fs::lock(&fs.inner.meta);
        let mut tx = crate::tx::Tx::begin(&*fs.inner.dev, &mut meta).unwrap();
        let t = std::time::Instant::now();
        tx.free_extent(100, u64::from(u32::MAX));
        assert!(t.elapsed().as_secs() < 1);
        let e = tx.commit().unwrap_err();
        assert!(e.to_string().contains("outside the data area"), "{e}");
    }

    // ---- inputs built by hand for bugs found by reading the code ----

    /// An input that overwrites `bytes` at `off` in each of the `edits`'
    /// blocks (which must be among `targets`).
    fn patches(flags: u8, targets: &[u64], edits: &[(u64, u16, &[u8])]) -> Vec<u8> {
        let mut d = vec![flags];
        for &(b, off, bytes) in edits {
            let i = targets
                .iter()
                .position(|&t| t == b)
                .expect("a target block");
            assert!(i < usize::from(COPY_PATCH) && !bytes.is_empty() && bytes.len() <= 128);
            let [o0, o1] = off.to_le_bytes();
            d.extend_from_slice(&[i as u8, o0, o1, (bytes.len() - 1) as u8]);
            d.extend_from_slice(bytes);
        }
        d
    }

    fn template_sb(img: &[u8]) -> daxfs_format::Superblock {
        let dev = MemDevice::from_image(img.to_vec());
        read_superblock(&dev).unwrap()
    }

    /// The leftmost leaf of the inode tree: it holds the root directory.
    fn first_inode_leaf(img: &[u8]) -> u64 {
        inode_leaves(img)[0]
    }

    /// Every leaf of the inode tree.
    fn inode_leaves(img: &[u8]) -> Vec<u64> {
        let dev = MemDevice::from_image(img.to_vec());
        let sb = read_superblock(&dev).unwrap();
        let mut s = ReadStore::new(&dev, sb.fs_id(), None, None);
        let mut leaves = vec![];
        inode_tree()
            .visit_nodes(&mut s, &sb.inode_tree, &mut |b, level| {
                if level == 0 {
                    leaves.push(b.0)
                }
            })
            .unwrap();
        leaves
    }

    /// The inode-tree leaf holding inode `ino`'s record, and the record's
    /// byte offset in it (15 keys of 8 bytes, then the 256-byte records).
    fn record_at(img: &[u8], ino: u64) -> (u64, u16) {
        for leaf in inode_leaves(img) {
            let blk = &img[leaf as usize * BLOCK_SIZE..][..BLOCK_SIZE];
            let count = header(blk).unwrap().count.get() as usize;
            for i in 0..count {
                let at = 64 + 8 * i;
                if u64::from_le_bytes(blk[at..at + 8].try_into().unwrap()) == ino {
                    return (leaf, (64 + 15 * 8 + 256 * i) as u16);
                }
            }
        }
        panic!("inode {ino} not found");
    }

    /// The template's inode numbers of `paths`.
    fn inos(paths: &[&str]) -> Vec<u64> {
        let dev = Arc::new(MemDevice::from_image(template().clean.clone()));
        let fs = Fs::mount(dev, &MountOptions::default()).unwrap();
        paths.iter().map(|p| fs.lstat(p).unwrap().ino).collect()
    }

    /// Damage to an inode record's inline extent area: each impossible
    /// value is a problem fsck names the inode for, and an error, never a
    /// panic, for mount and the file's users (a file whose map cannot be
    /// read fails its reads).
    #[test]
    fn inline_area_damage_is_reported() {
        let t = template();
        let [f3, four, frag, dir, link] = inos(&["/d/f3", "/four", "/frag", "/d", "/link"])[..]
        else {
            unreachable!()
        };
        // Record fields: flags at 128, entry i at 152 + 24 i (fblock, phys,
        // len, flags), inline_count at 248.
        let e = |i: u16, field: u16| 152 + 24 * i + field;
        let past = IMAGE_BLOCKS + 10;
        // (what, inode, field, bytes written there, what fsck says, whether
        // the file's reads fail)
        type Case<'a> = (&'a str, u64, u16, Vec<u8>, &'a str, bool);
        let cases: Vec<Case> = vec![
            (
                "count past the array",
                four,
                248,
                5u32.to_le_bytes().into(),
                "inline_count",
                true,
            ),
            (
                "count of 255",
                f3,
                248,
                255u32.to_le_bytes().into(),
                "inline_count",
                true,
            ),
            (
                "count without the flag",
                four,
                128,
                vec![0],
                "without",
                true,
            ),
            (
                "zero length",
                four,
                e(2, 16),
                0u32.to_le_bytes().into(),
                "empty, overlaps",
                true,
            ),
            (
                "overlapping",
                four,
                e(1, 16),
                3u32.to_le_bytes().into(),
                "overlaps",
                true,
            ),
            (
                "out of order",
                four,
                e(3, 0),
                1u64.to_le_bytes().into(),
                "overlaps",
                true,
            ),
            (
                "device block 0",
                f3,
                e(0, 8),
                0u64.to_le_bytes().into(),
                "out of range",
                true,
            ),
            (
                "past the largest file",
                four,
                e(1, 8),
                (u64::MAX / 2).to_le_bytes().into(),
                "out of range",
                true,
            ),
            (
                "past the device",
                four,
                e(3, 8),
                past.to_le_bytes().into(),
                "past the end of the file system",
                false,
            ),
            (
                "flag on a directory",
                dir,
                128,
                vec![1],
                "directory has inline extents",
                false,
            ),
            (
                "flag on a symlink",
                link,
                128,
                vec![1],
                "inline extents on a symbolic link",
                true,
            ),
            ("flag with a tree", frag, 128, vec![1], "is not empty", true),
            (
                "bytes past the count",
                f3,
                e(2, 16),
                vec![1],
                "past its 1 extents",
                false,
            ),
            ("an unknown flag", f3, 129, vec![4], "unknown flags", false),
        ];
        // A regular file with neither inline extents nor a tree (flag, count
        // and its one entry cleared): its data block is leaked.
        let (leaf, rec) = record_at(&t.clean, f3);
        let d = patches(
            FLAG_RESEAL,
            &t.targets,
            &[
                (leaf, rec + 128, &[0]),
                (leaf, rec + 248, &[0]),
                (leaf, rec + e(0, 0), &[0; 24]),
            ],
        );
        run(fuzz_fsck, &d);
        run(fuzz_mount, &d);
        let (_, img) = damaged_image(&d, &t.targets);
        let all = problems(&run_fsck(&MemDevice::from_image(img)));
        assert!(
            all.contains(&format!(
                "inode {f3} (/d/f3): regular file has an empty extent tree but is not marked inline"
            )),
            "{all}"
        );
        for (what, ino, field, bytes, says, unreadable) in cases {
            let (leaf, rec) = record_at(&t.clean, ino);
            let d = patches(FLAG_RESEAL, &t.targets, &[(leaf, rec + field, &bytes)]);
            run(fuzz_fsck, &d);
            run(fuzz_mount, &d);
            let (_, img) = damaged_image(&d, &t.targets);
            let r = run_fsck(&MemDevice::from_image(img.clone()));
            let all = problems(&r);
            assert!(
                r.as_ref().is_ok_and(|rep| rep.problems.iter().any(|p| {
                    p.to_string().contains(says)
                        && (p.structure == format!("inode {ino}")
                            || p.structure.starts_with(&format!("inode {ino} ("))
                            || p.message.contains(&format!("inode {ino}")))
                })),
                "{what}: fsck does not say {says:?} for inode {ino}: {all}"
            );
            let fs = Fs::mount(
                Arc::new(MemDevice::from_image(img)),
                &MountOptions::default(),
            )
            .unwrap();
            if unreadable {
                let path = [
                    (f3, "/d/f3"),
                    (four, "/four"),
                    (frag, "/frag"),
                    (link, "/link"),
                ]
                .iter()
                .find(|(i, _)| *i == ino)
                .unwrap()
                .1;
                let e = match fs.open(path, &OpenOptions::read_only()) {
                    Ok(f) => f.read_at(0, &mut [0u8; 100]).unwrap_err(),
                    Err(e) => e,
                };
                let e = if ino == link {
                    fs.readlink(path).unwrap_err()
                } else {
                    e
                };
                assert_eq!(e.errno_name(), "EIO", "{what}: {e}");
                assert!(
                    e.to_string().contains(&format!("inode {ino}")),
                    "{what}: {e}"
                );
            }
        }
    }

    /// Random damage aimed at the inline extent areas (and flags) of inode
    /// records, resealed so the record decoders are reached.
    #[test]
    fn inline_area_inputs() {
        let t = template();
        let leaves = inode_leaves(&t.clean);
        let mut rng = SmallRng::seed_from_u64(0x696e_6c6e);
        for _ in 0..300 {
            let leaf = leaves[rng.random_range(0..leaves.len())];
            let rec = 64 + 15 * 8 + 256 * rng.random_range(0..15u16);
            let field = match rng.random_range(0..4) {
                0 => 128,
                1 => 248,
                _ => rng.random_range(152..248),
            };
            let n = rng.random_range(1..9);
            let bytes: Vec<u8> = (0..n)
                .map(|_| match rng.random_range(0..4) {
                    0 => 0,
                    1 => rng.random_range(1..6),
                    2 => 1 << rng.random_range(0..8),
                    _ => rng.random(),
                })
                .collect();
            let d = patches(FLAG_RESEAL, &t.targets, &[(leaf, rec + field, &bytes)]);
            run(fuzz_mount, &d);
            run(fuzz_fsck, &d);
        }
    }

    /// Found by reading fsck: a free-space extent of 2^64 - 1 blocks
    /// overflowed the end of the previous extent.
    #[test]
    fn regress_fsck_free_extent_overflow() {
        let t = template();
        let b = template_sb(&t.clean).free_tree.block.get();
        // The first value of a u64 -> u64 leaf: 64 + 252 keys of 8 bytes.
        let d = patches(FLAG_RESEAL, &t.targets, &[(b, 64 + 252 * 8, &[0xff; 8])]);
        run(fuzz_fsck, &d);
        run(fuzz_mount, &d);
    }

    /// Found by reading the journal: a log image naming a home block past
    /// the device overflowed its byte offset in the replay, after the replay
    /// had already written the images before it.
    #[test]
    fn regress_log_home_past_device() {
        let t = template();
        let start = template_sb(&t.pending).log_start.get();
        let d0 = &t.pending[(start * BLOCK_SIZE_U64) as usize..][..BLOCK_SIZE];
        let n = u64::from_le_bytes(d0[72..80].try_into().unwrap());
        let last = n - 1;
        for home in [
            1u64 << 60,
            start + 3,
            t.pending.len() as u64 / BLOCK_SIZE_U64 - 1,
        ] {
            let d = patches(
                FLAG_PENDING | FLAG_RESEAL,
                &t.log_targets,
                &[
                    (start, 88 + 8 * last as u16, &home.to_le_bytes()),
                    (start + 1 + last, 24, &home.to_le_bytes()),
                ],
            );
            run(fuzz_journal, &d);
            let (_, img) = damaged_image(&d, &t.log_targets);
            let dev = Arc::new(MemDevice::from_image(img.clone()));
            let e = Fs::mount(dev.clone(), &MountOptions::default()).unwrap_err();
            assert!(e.to_string().contains(&format!("block {home}")), "{e}");
            assert!(dev.image() == img, "a refused replay wrote to the device");
        }
    }

    /// Found by reading namespace: a superblock whose next inode number is
    /// 2^64 - 1 overflowed on create; one naming a live inode made create
    /// overwrite that inode's record. Mount now sets it above the largest
    /// inode in use: the create gets a fresh number and `/d` is untouched.
    #[test]
    fn regress_next_ino() {
        let t = template();
        for next in [u64::MAX, 3] {
            let d = patches(FLAG_RESEAL, &t.targets, &[(0, 136, &next.to_le_bytes())]);
            run(fuzz_mount, &d);
            let (_, img) = damaged_image(&d, &t.targets);
            let dev = Arc::new(MemDevice::from_image(img));
            let fs = Fs::mount(dev.clone(), &MountOptions::default()).unwrap();
            let before = fs.stat("/d").unwrap();
            let f = fs.create("/new").unwrap();
            assert!(f.ino() > before.ino, "{next}: got inode {}", f.ino());
            assert_eq!(fs.stat("/d").unwrap(), before);
        }
    }

    /// Found by reading namespace: a link count of 2^32 - 1 overflowed on
    /// mkdir (of the parent), link and rename.
    #[test]
    fn regress_nlink_overflow() {
        let t = template();
        let leaf = first_inode_leaf(&t.clean);
        // Inode 1 is the first record of the leftmost leaf: 64 + 15 keys of
        // 8 bytes, then the record, whose nlink is at byte 20.
        let d = patches(
            FLAG_RESEAL,
            &t.targets,
            &[(leaf, 64 + 15 * 8 + 20, &[0xff; 4])],
        );
        run(fuzz_mount, &d);
        let (_, img) = damaged_image(&d, &t.targets);
        let dev = Arc::new(MemDevice::from_image(img));
        let fs = Fs::mount(dev, &MountOptions::default()).unwrap();
        assert_eq!(fs.stat("/").unwrap().nlink, u32::MAX);
        for e in [
            fs.mkdir("/x", 0o755).unwrap_err(),
            fs.rename("/sub/deeper", "/deeper").unwrap_err(),
        ] {
            assert!(e.to_string().contains("link count"), "{e}");
        }
    }

    /// Found by fuzzing fs_mount (the seeded `mount_inputs` run): a
    /// reverse-map record with a huge length or file block overflowed the
    /// byte offsets fsmap reports.
    #[test]
    fn regress_rmap_record_overflow() {
        run(fuzz_mount, &hex("0241d10b0740ff009bff00a800"));
    }

    /// Found by fuzzing fs_mount (the seeded `noise_inputs` run), rebuilt by
    /// hand: a bad-block record of 2^64 - 1 blocks overflowed in
    /// `bad_ranges` and in the range arithmetic of the bad-block tree.
    #[test]
    fn regress_badblock_record_overflow() {
        let t = template();
        let b = template_sb(&t.clean).badblock_tree.block.get();
        // The first value of a u64 -> u64 leaf.
        let d = patches(FLAG_RESEAL, &t.targets, &[(b, 64 + 252 * 8, &[0xff; 8])]);
        run(fuzz_mount, &d);
        run(fuzz_fsck, &d);
    }

    /// The template's error log: its leaf, and the slot of the head of the
    /// entry with six owners.
    fn error_log_head(img: &[u8]) -> (u64, usize) {
        let b = template_sb(img).error_log.block.get();
        let leaf = &img[(b * BLOCK_SIZE_U64) as usize..][..BLOCK_SIZE];
        assert_eq!(leaf[5], 0, "the error log is one leaf");
        let count = u32::from_le_bytes(leaf[12..16].try_into().unwrap()) as usize;
        // (u64, u64) keys, 50 to a leaf, then the 64-byte values.
        let slot = (0..count)
            .find(|&i| {
                let v = 64 + 50 * 16 + i * 64;
                leaf[64 + i * 16 + 8] == 0 && leaf[v + 52] == 6
            })
            .expect("an entry of six owners");
        (b, slot)
    }

    /// An error-log entry whose head names more or fewer owners than its
    /// records hold, or whose owner record has data past its last owner:
    /// mount and fsck refuse it with a clear error, nothing panics.
    #[test]
    fn error_log_entries_that_do_not_add_up_are_refused() {
        let t = template();
        let (b, slot) = error_log_head(&t.clean);
        let head = 64 + 50 * 16 + slot * 64;
        // The second owner record holds one owner: slot 1 must be zero.
        let spare = head + 2 * 64 + 16;
        for (off, bytes, want) in [
            // Zeros read as owners name no file.
            (
                head + 52,
                9u32.to_le_bytes(),
                "is not one owner kind 1 names",
            ),
            (
                head + 52,
                14u32.to_le_bytes(),
                "is not one owner kind 1 names",
            ),
            (head + 52, 5u32.to_le_bytes(), "belongs to no entry"),
            (head + 52, 2u32.to_le_bytes(), "past the entry's last owner"),
            (head + 52, 0u32.to_le_bytes(), "names no owner"),
            (spare, 5u32.to_le_bytes(), "past the entry's last owner"),
        ] {
            let d = patches(FLAG_RESEAL, &t.targets, &[(b, off as u16, &bytes)]);
            run(fuzz_mount, &d);
            run(fuzz_fsck, &d);
            let (_, img) = damaged_image(&d, &t.targets);
            let dev = MemDevice::from_image(img);
            let r = run_fsck(&dev);
            assert!(problems(&r).contains(want), "{want}: {}", problems(&r));
            let fs = Fs::mount(Arc::new(dev), &MountOptions::default()).unwrap();
            let e = fs.error_log().unwrap_err().to_string();
            assert!(e.contains("error log") && e.contains(want), "{e}");
        }
    }

    /// Found by reading media (the fuzzer found the neighbouring bad-block
    /// case): a loss record of 2^64 - 1 blocks overflowed in `all_losses`,
    /// in stat's lost-byte sum and when a write ends the loss.
    #[test]
    fn regress_loss_record_overflow() {
        let t = template();
        let b = template_sb(&t.clean).loss_tree.block.get();
        // The first value of a (u64, u64) -> u64 leaf: 168 keys of 16 bytes.
        let d = patches(FLAG_RESEAL, &t.targets, &[(b, 64 + 168 * 16, &[0xff; 8])]);
        run(fuzz_mount, &d);
        run(fuzz_fsck, &d);
        let (_, img) = damaged_image(&d, &t.targets);
        let fs = Fs::mount(
            Arc::new(MemDevice::from_image(img)),
            &MountOptions::default(),
        )
        .unwrap();
        assert!(fs.all_losses().is_ok());
        let e = fs.stat("/d/f5").unwrap_err();
        assert!(e.to_string().contains("loss tree"), "{e}");
        let f = fs.open("/d/f5", &OpenOptions::read_write()).unwrap();
        assert!(f.write_at(0, b"new data").is_err());
    }

    /// Found by fuzzing fs_mount (the cargo-fuzz run; its "clean stays
    /// clean" check): a next inode number past 2^63 gave new inodes numbers
    /// that the reverse map reads as metadata owners.
    #[test]
    fn regress_next_ino_past_rmap_owner_flag() {
        run(fuzz_mount, &hex("0200880088ffffff00ffffffff"));
    }

    /// Found by fuzzing fs_fsck (the cargo-fuzz run, minimized): a
    /// reverse-map record of 2^64 - 1 blocks overflowed fsck's segment check.
    #[test]
    fn regress_fsck_rmap_record_overflow() {
        run(fuzz_fsck, &hex("0e0c000affffffffffffffffff"));
    }

    /// Found by reading fsck (next to the case above): a refcount record of
    /// 2^64 - 1 blocks overflowed the end of the record.
    #[test]
    fn regress_fsck_refcount_record_overflow() {
        let t = template();
        let b = template_sb(&t.clean).refcount_tree.block.get();
        // The first value of a u64 -> RefcountRecord leaf: 168 keys of 8
        // bytes, then (len, count).
        let d = patches(FLAG_RESEAL, &t.targets, &[(b, 64 + 168 * 8, &[0xff; 8])]);
        run(fuzz_fsck, &d);
        run(fuzz_mount, &d);
    }

    /// fsck catches a reverse-map record that lies about its length or its
    /// owner, and an internal node whose largest-end summary is wrong (which
    /// would make owner queries skip owners).
    #[test]
    fn fsck_reports_bad_reverse_map_records_and_summaries() {
        use daxfs_format::records::{RMAP_OFF_DIR_TREE, RMAP_OFF_EXTENT_TREE, RMAP_OWNER_META};
        let img = &template().clean;
        let dev = MemDevice::from_image(img.clone());
        let sb = read_superblock(&dev).unwrap();
        let mut s = ReadStore::new(&dev, sb.fs_id(), None, None);
        let (mut leaves, mut internal) = (vec![], vec![]);
        crate::space::rmap::tree()
            .visit_nodes(&mut s, &sb.rmap_tree, &mut |b, level| {
                if level == 0 {
                    leaves.push(b.0)
                } else {
                    internal.push(b.0)
                }
            })
            .unwrap();
        assert!(!internal.is_empty(), "a reverse map of one level");
        let u64_at = |b: u64, off: usize| {
            let at = b as usize * BLOCK_SIZE + off;
            u64::from_le_bytes(img[at..at + 8].try_into().unwrap())
        };
        // Rewrites the u64 at `off` of block `b` and reseals the block.
        let edited = |b: u64, off: usize, v: u64| {
            let mut img = img.clone();
            let at = b as usize * BLOCK_SIZE;
            let blk: &mut Block = (&mut img[at..at + BLOCK_SIZE]).try_into().unwrap();
            blk[off..off + 8].copy_from_slice(&v.to_le_bytes());
            let g = header(&blk[..]).unwrap().generation.get();
            seal_block(blk, b, g, sb.fs_id());
            point_at(&mut img, [b]);
            run_fsck(&MemDevice::from_image(img))
        };
        // A file-data record: key (phys, ino, file block) at 64 + 24 i, its
        // value (len, flags, replica) at 2080 + 24 i.
        let (leaf, i) = leaves
            .iter()
            .flat_map(|&b| {
                let count = header(&img[b as usize * BLOCK_SIZE..]).unwrap().count.get();
                (0..count as usize).map(move |i| (b, i))
            })
            .find(|&(b, i)| {
                u64_at(b, 64 + 24 * i + 8) & RMAP_OWNER_META == 0
                    && u64_at(b, 64 + 24 * i + 16) & (RMAP_OFF_EXTENT_TREE | RMAP_OFF_DIR_TREE) == 0
            })
            .expect("a file-data record");
        let len = u64_at(leaf, 2080 + 24 * i);
        let r = edited(leaf, 2080 + 24 * i, len + 1);
        assert!(problems(&r).contains("it does not"), "{}", problems(&r));
        let ino = u64_at(leaf, 64 + 24 * i + 8);
        let r = edited(leaf, 64 + 24 * i + 8, ino + 1000);
        assert!(problems(&r).contains("it does not"), "{}", problems(&r));
        // The summary of child 1 of an internal node: max_end at 3340 + 8.
        let r = edited(internal[0], 3340 + 8, 0);
        assert!(problems(&r).contains("summary"), "{}", problems(&r));
        assert!(problems(&edited(leaf, 2080 + 24 * i, len)).is_empty());
    }

    /// Found by fuzzing fs_mount (the cargo-fuzz run, minimized): a
    /// reverse-map record of 2^64 - 1 blocks overflowed in
    /// `rmap::segment_of` (of the segment-aligned map of format version 1)
    /// when the next allocation updated the map.
    #[test]
    fn regress_rmap_segment_overflow() {
        run(fuzz_mount, &hex("4747ff5bee4fffffffffffffffff"));
    }
}
