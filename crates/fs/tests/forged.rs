//! Forged metadata: superblock counters and extent records changed with
//! their checksums resealed, so only a check of what they say can catch
//! them. Each must end in a repair or a clean error (fsck reports it; mount
//! puts it right or refuses naming it), never in wrong data or an error on
//! every later create with success before it.
mod common;
use common::pattern;
use daxfs::{Fs, MkfsOptions, MountOptions, OpenOptions};
use daxfs_device::MemDevice;
use daxfs_format::superblock::Superblock;
use daxfs_format::{BLOCK_SIZE, Block};
use std::sync::Arc;
use zerocopy::{FromBytes, IntoBytes};

const BS: usize = BLOCK_SIZE;

/// The files of [`image`]: path and contents.
fn files() -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| (format!("/d/f{i}"), pattern(i, 3000)))
        .collect();
    v.push(("/a".into(), pattern(9, 20_000)));
    v
}

/// A small file system with a directory, a few files and one error-log
/// entry (superblock copy B repaired at mount), unmounted.
fn image(opts: &MkfsOptions) -> Vec<u8> {
    let dev = Arc::new(MemDevice::new(4 << 20));
    Fs::mkfs(dev.clone(), opts).unwrap();
    let fs = Fs::mount(dev.clone(), &MountOptions::default()).unwrap();
    fs.mkdir("/d", 0o755).unwrap();
    for (p, data) in files() {
        fs.create(&p).unwrap().write_at(0, &data).unwrap();
    }
    drop(fs);
    let mut img = dev.image();
    if !opts.no_replicas {
        let last = img.len() - BS;
        img[last + 200] ^= 1;
        let dev = Arc::new(MemDevice::from_image(img));
        drop(Fs::mount(dev.clone(), &MountOptions::default()).unwrap());
        img = dev.image();
    }
    img
}

fn block(img: &mut [u8], b: u64) -> &mut Block {
    let at = b as usize * BS;
    (&mut img[at..at + BS]).try_into().unwrap()
}

fn superblock(img: &[u8]) -> Superblock {
    Superblock::read_from_bytes(&img[..BS]).unwrap()
}

/// Changes both superblock copies and reseals them.
fn edit_superblocks(img: &mut [u8], f: &dyn Fn(&mut Superblock)) {
    let last = (img.len() / BS - 1) as u64;
    for b in [0, last] {
        let blk = block(img, b);
        let mut sb = Superblock::read_from_bytes(&blk[..]).unwrap();
        f(&mut sb);
        blk.copy_from_slice(sb.as_bytes());
        daxfs_format::fuzz::reseal(blk);
    }
}

fn fsck(dev: &MemDevice) -> daxfs::Result<daxfs::fsck::FsckReport> {
    daxfs::fsck::fsck(dev, &mut |_, _, _| {})
}

/// Every file reads back as written, a new file can be made, written and
/// read, and the error log reads.
fn works(fs: &Fs, what: &str) {
    for (p, data) in files() {
        let f = fs.open(&p, &OpenOptions::read_only()).unwrap();
        let mut buf = vec![0; data.len() + 10];
        let n = f.read_at(0, &mut buf).unwrap();
        assert!(
            n == data.len() && buf[..n] == data[..],
            "{what}: {p} reads wrong"
        );
    }
    let f = fs
        .create("/new")
        .unwrap_or_else(|e| panic!("{what}: create: {e}"));
    f.write_at(0, b"fresh").unwrap();
    let mut buf = [0; 5];
    f.read_at(0, &mut buf).unwrap();
    assert_eq!(&buf, b"fresh", "{what}");
    drop(f);
    fs.mkdir("/new-dir", 0o755)
        .unwrap_or_else(|e| panic!("{what}: mkdir: {e}"));
    fs.error_log()
        .unwrap_or_else(|e| panic!("{what}: error log: {e}"));
}

/// How a forged superblock ended.
#[derive(Debug, PartialEq)]
enum End {
    /// Mount refused it (and fsck reported it or refused it too).
    Refused,
    /// Mount put it right: after it, fsck is clean.
    Repaired,
    /// Mount used it and everything works; fsck still reports it.
    Reported,
}

/// Forges `field` = `value` in both copies; fsck must not call it clean,
/// and mount either refuses naming `field` or gives a file system on which
/// everything works.
fn forge_counter(clean: &[u8], field: &str, value: u64, f: &dyn Fn(&mut Superblock)) -> End {
    let what = format!("{field} = {value}");
    let mut img = clean.to_vec();
    edit_superblocks(&mut img, f);
    let dev = Arc::new(MemDevice::from_image(img.clone()));
    match fsck(&dev) {
        Err(e) => assert!(e.to_string().contains(field), "{what}: fsck error {e}"),
        Ok(r) => assert!(
            r.problems.iter().any(|p| p.to_string().contains(field)),
            "{what}: fsck does not name {field}: {:#?}",
            r.problems
        ),
    }
    assert!(dev.image() == img, "{what}: fsck wrote");
    let fs = match Fs::mount(dev.clone(), &MountOptions::default()) {
        Err(e) => {
            let m = e.to_string();
            assert!(
                m.contains(field),
                "{what}: mount error {m:?} does not name it"
            );
            assert!(dev.image() == img, "{what}: a refused mount wrote");
            return End::Refused;
        }
        Ok(fs) => fs,
    };
    works(&fs, &what);
    drop(fs);
    let r = fsck(&dev).unwrap();
    if r.is_clean() {
        // A repair says so in the error log.
        let fs = Fs::mount(dev.clone(), &MountOptions::default()).unwrap();
        let log = fs.error_log().unwrap();
        assert!(
            log.iter()
                .any(|e| e.action == "repaired" && e.physical == 0),
            "{what}: no repair logged: {log:#?}"
        );
        return End::Repaired;
    }
    assert!(
        r.problems.iter().all(|p| p.to_string().contains(field)),
        "{what}: after mount fsck finds more: {:#?}",
        r.problems
    );
    End::Reported
}

#[test]
fn forged_superblock_counters() {
    let clean = image(&MkfsOptions::default());
    let sb = superblock(&clean);
    let (next, seq, free, inodes) = (
        sb.next_ino.get(),
        sb.error_seq.get(),
        sb.free_blocks.get(),
        sb.inodes.get(),
    );
    assert!(seq >= 1, "the image has an error-log entry");
    let top = [
        1u64 << 62 | 1,
        (1 << 63) - 1,
        1 << 63,
        u64::MAX - 1,
        u64::MAX,
    ];
    let mut cases: Vec<(&str, u64, End)> = vec![];
    let mut run = |field: &'static str, v: u64, f: &dyn Fn(&mut Superblock)| {
        let end = forge_counter(&clean, field, v, f);
        cases.push((field, v, end));
    };
    for v in [0, 1, next - 1].into_iter().chain(top) {
        run("next_ino", v, &|sb| sb.next_ino = v.into());
    }
    for v in [0, seq - 1].into_iter().chain(top) {
        run("error_seq", v, &|sb| sb.error_seq = v.into());
    }
    for v in [0, free - 1, free + 1, u64::MAX] {
        run("free_blocks", v, &|sb| sb.free_blocks = v.into());
    }
    for v in [0, inodes - 1, inodes + 1, u64::MAX] {
        run("inodes", v, &|sb| sb.inodes = v.into());
    }
    // 2 is /d (a directory, not the root), 3 a regular file, 1000 nothing.
    for v in [0, 2, 3, 1000, u64::MAX] {
        run("root_ino", v, &|sb| sb.root_ino = v.into());
    }
    for v in [129u32, u32::MAX] {
        run("rmap_intents", v.into(), &|sb| sb.rmap_intents = v.into());
    }
    for v in [17u32, u32::MAX] {
        run("anchor_count", v.into(), &|sb| sb.anchor_count = v.into());
    }
    let (ls, lb) = (sb.log_start.get(), sb.log_blocks.get());
    for v in [0, u64::MAX] {
        run("log geometry", v, &|sb| sb.log_start = v.into());
    }
    for v in [0, u64::MAX - ls] {
        run("log geometry", v, &|sb| sb.log_blocks = v.into());
    }
    for v in [ls, ls + lb - 1, u64::MAX] {
        run("log replica", v, &|sb| sb.log_replica = v.into());
    }
    for v in [0, sb.total_blocks.get() + 1, u64::MAX] {
        run("total_blocks", v, &|sb| sb.total_blocks = v.into());
    }
    let ended = |field: &str, want: End| {
        for (f, v, e) in &cases {
            if *f == field {
                assert_eq!(*e, want, "{f} = {v}");
            }
        }
    };
    // Counters mount can recompute are put right; a root that is none is
    // refused; the rest of the impossible values the superblock refuses.
    ended("next_ino", End::Repaired);
    ended("error_seq", End::Repaired);
    ended("free_blocks", End::Repaired);
    ended("root_ino", End::Refused);
    ended("inodes", End::Reported);
    for f in [
        "rmap_intents",
        "anchor_count",
        "log geometry",
        "log replica",
        "total_blocks",
    ] {
        ended(f, End::Refused);
    }
}

/// Past the inode-number space a create is ENOSPC, as Linux gives when a
/// file system is out of inodes, and nothing changes.
#[test]
fn create_past_the_inode_numbers_is_enospc() {
    // The counters' limit, 2^62 (FORMAT.md, superblock).
    let limit = 1u64 << 62;
    let mut img = image(&MkfsOptions::default());
    edit_superblocks(&mut img, &|sb| sb.next_ino = (limit - 1).into());
    let dev = Arc::new(MemDevice::from_image(img));
    // limit - 1 is a usable next_ino: mount keeps it, and one create gets it.
    let fs = Fs::mount(dev.clone(), &MountOptions::default()).unwrap();
    assert_eq!(fs.create("/last").unwrap().ino(), limit - 1);
    let before = fs.stat("/").unwrap();
    for e in [
        fs.create("/one-more").unwrap_err(),
        fs.mkdir("/one-more", 0o755).unwrap_err(),
        fs.symlink("/a", "/one-more").unwrap_err(),
    ] {
        assert_eq!(e.errno_name(), "ENOSPC", "{e}");
    }
    assert_eq!(fs.stat("/").unwrap(), before, "a failed create changed /");
    drop(fs);
    // Used up is consistent: fsck is clean, and the next mount keeps it.
    common::assert_fsck(&*dev);
    let fs = Fs::mount(dev.clone(), &MountOptions::default()).unwrap();
    assert_eq!(fs.create("/x").unwrap_err().errno_name(), "ENOSPC");
}

// Forged extents. The forge helpers change one extent of one file where it
// lives (its inode record's inline area, or its extent tree's leaf) and
// reseal that block; [`reseal`] is the one place that makes a changed
// block valid again. Every pointer to a node names its checksum, so it
// also reseals the path up to the root (the parents' child checksums, the
// tree root in the inode record, both superblock copies): the forgery is
// then consistent all the way down, and only a check of what the extent
// says can catch it. (A forgery of the leaf alone is a node its pointer
// does not name: it is read from the replica, as `stale.rs` tests.)

/// Makes block `b` of `img` valid again after a change, and every pointer
/// to it (and to the blocks holding those) name its new checksum.
fn reseal(img: &mut [u8], b: u64) {
    daxfs_format::fuzz::reseal(block(img, b));
    daxfs::fuzz::point_at(img, [b]);
}

/// The leaf holding `key` in a one-leaf tree of u64 keys rooted at `root`
/// (the small images here have one), the byte offset of its value, given
/// the leaf's capacity and value size.
fn leaf_value(img: &mut [u8], root: u64, key: u64, lcap: usize, vsize: usize) -> (u64, usize) {
    let blk = block(img, root);
    assert_eq!(blk[5], 0, "tree of more than one level");
    let count = u32::from_le_bytes(blk[12..16].try_into().unwrap()) as usize;
    let i = (0..count)
        .find(|&i| {
            let at = 64 + i * 8;
            u64::from_le_bytes(blk[at..at + 8].try_into().unwrap()) == key
        })
        .unwrap_or_else(|| panic!("no key {key} in block {root}"));
    (root, 64 + lcap * 8 + i * vsize)
}

/// Where extent `n` of inode `ino` lives: (block, byte offset of phys,
/// of len (u32), of flags (u32)), inline or in the extent tree.
fn extent_at(img: &mut [u8], ino: u64, fblock: u64) -> (u64, usize, usize, usize) {
    let sb = superblock(img);
    let (b, rec) = leaf_value(img, sb.inode_tree.block.get(), ino, 15, 256);
    let r = block(img, b)[rec..rec + 256].to_vec();
    let inline = u64::from_le_bytes(r[128..136].try_into().unwrap()) & 1 != 0;
    if inline {
        let n = u32::from_le_bytes(r[248..252].try_into().unwrap()) as usize;
        let i = (0..n)
            .find(|&i| {
                u64::from_le_bytes(r[152 + i * 24..160 + i * 24].try_into().unwrap()) == fblock
            })
            .unwrap_or_else(|| panic!("inode {ino} has no inline extent at {fblock}"));
        let at = rec + 152 + i * 24;
        (b, at + 8, at + 16, at + 20)
    } else {
        let root = u64::from_le_bytes(r[96..104].try_into().unwrap());
        let (leaf, at) = leaf_value(img, root, fblock, 168, 16);
        (leaf, at, at + 8, at + 12)
    }
}

fn read_u64(img: &mut [u8], b: u64, at: usize) -> u64 {
    u64::from_le_bytes(block(img, b)[at..at + 8].try_into().unwrap())
}

/// A forgery of one extent: what it does to (phys, len, flags).
type Forge = Box<dyn Fn(u64, u32, u32) -> (u64, u32, u32)>;

/// Changes the extent of `ino` at `fblock` and reseals its block.
fn forge_extent(img: &mut [u8], ino: u64, fblock: u64, f: &Forge) {
    let (b, p, l, fl) = extent_at(img, ino, fblock);
    let blk = block(img, b);
    let phys = u64::from_le_bytes(blk[p..p + 8].try_into().unwrap());
    let len = u32::from_le_bytes(blk[l..l + 4].try_into().unwrap());
    let flags = u32::from_le_bytes(blk[fl..fl + 4].try_into().unwrap());
    let (np, nl, nf) = f(phys, len, flags);
    blk[p..p + 8].copy_from_slice(&np.to_le_bytes());
    blk[l..l + 4].copy_from_slice(&nl.to_le_bytes());
    blk[fl..fl + 4].copy_from_slice(&nf.to_le_bytes());
    reseal(img, b);
}

/// The image for the extent forgeries: `/a` (inline, one written extent of
/// 5 blocks), `/t` (an extent tree: 6 one-block extents at file blocks 0,
/// 2, ..., 10), `/u` (inline, an unwritten extent then a written one),
/// `/v` (the victim, one block whose bytes must never be read as another
/// file's).
struct Forged {
    img: Vec<u8>,
    ino: std::collections::HashMap<&'static str, u64>,
    data: std::collections::HashMap<&'static str, Vec<u8>>,
}

fn extent_image() -> Forged {
    let dev = Arc::new(MemDevice::new(4 << 20));
    Fs::mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
    let fs = Fs::mount(dev.clone(), &MountOptions::default()).unwrap();
    let mut ino = std::collections::HashMap::new();
    let mut data = std::collections::HashMap::new();
    let a = fs.create("/a").unwrap();
    a.write_at(0, &pattern(1, 20_000)).unwrap();
    data.insert("/a", pattern(1, 20_000));
    let t = fs.create("/t").unwrap();
    let mut td = vec![0u8; 11 * 4096];
    for i in 0..6u64 {
        let p = pattern(10 + i, 4096);
        t.write_at(i * 2 * 4096, &p).unwrap();
        td[(i * 2 * 4096) as usize..(i * 2 * 4096 + 4096) as usize].copy_from_slice(&p);
    }
    data.insert("/t", td);
    let u = fs.create("/u").unwrap();
    u.fallocate(daxfs::FallocFlags::default(), 0, 8192).unwrap();
    u.write_at(8192, &pattern(3, 4096)).unwrap();
    let mut ud = vec![0u8; 8192];
    ud.extend(pattern(3, 4096));
    data.insert("/u", ud);
    let v = fs.create("/v").unwrap();
    v.write_at(0, &pattern(4, 4096)).unwrap();
    data.insert("/v", pattern(4, 4096));
    for (p, f) in [("/a", &a), ("/t", &t), ("/u", &u), ("/v", &v)] {
        ino.insert(p, f.ino());
    }
    drop((a, t, u, v));
    drop(fs);
    common::assert_fsck(&*dev);
    Forged {
        img: dev.image(),
        ino,
        data,
    }
}

/// Mounts a forged image: reading `path` fails with EIO (so does writing
/// and cloning from it) and logs one "refused" entry naming it; the other
/// files read as written; fsck names `path`.
fn refused(f: &Forged, img: Vec<u8>, path: &str, what: &str) {
    let ino = f.ino[path];
    let dev = Arc::new(MemDevice::from_image(img));
    let rep = fsck(&dev).unwrap();
    assert!(
        rep.problems.iter().any(|p| p.to_string().contains(path)),
        "{what}: fsck does not name {path}: {:#?}",
        rep.problems
    );
    let fs = Fs::mount(dev.clone(), &MountOptions::default()).unwrap();
    let file = fs.open(path, &OpenOptions::read_write()).unwrap();
    let mut buf = vec![0u8; f.data[path].len()];
    for _ in 0..2 {
        let e = file.read_at(0, &mut buf).unwrap_err();
        assert_eq!(e.errno_name(), "EIO", "{what}: {e}");
    }
    let e = file.write_at(0, b"x").unwrap_err();
    assert_eq!(e.errno_name(), "EIO", "{what}: write: {e}");
    let e = file.map(0, 4096, daxfs::Access::Read).unwrap_err();
    assert_eq!(e.errno_name(), "EIO", "{what}: map: {e}");
    let dst = fs.create("/clone").unwrap();
    let e = dst.clone_from(&file).unwrap_err();
    assert_eq!(e.errno_name(), "EIO", "{what}: clone: {e}");
    let log = fs.error_log().unwrap();
    let mine: Vec<_> = log.iter().filter(|e| e.action == "refused").collect();
    assert_eq!(mine.len(), 1, "{what}: one refusal logged once: {log:#?}");
    assert!(
        matches!(&mine[0].owner, daxfs::OwnerKind::File { ino: i, .. } if *i == ino),
        "{what}: {:#?}",
        mine[0]
    );
    for (p, want) in &f.data {
        if *p == path {
            continue;
        }
        let g = fs.open(p, &OpenOptions::read_only()).unwrap();
        let mut got = vec![0u8; want.len()];
        assert_eq!(g.read_at(0, &mut got).unwrap(), want.len(), "{what}: {p}");
        assert!(got == *want, "{what}: {p} reads wrong");
    }
}

#[test]
fn forged_extents_are_refused() {
    let f = extent_image();
    let sb = superblock(&f.img);
    let total = sb.total_blocks.get();
    let mut img0 = f.img.clone();
    let victim = {
        let (b, p, _, _) = extent_at(&mut img0, f.ino["/v"], 0);
        read_u64(&mut img0, b, p)
    };
    // A free block: the free-space tree's first extent (one leaf).
    let free = read_u64(&mut img0, sb.free_tree.block.get(), 64);
    let log = sb.log_start.get() + 2;
    let log_replica = sb.log_replica.get();
    let cases: Vec<(&str, &str, u64, Forge)> = vec![
        (
            "/a",
            "into the log",
            0,
            Box::new(move |_, l, fl| (log, l, fl)),
        ),
        (
            "/a",
            "into the log's replica",
            0,
            Box::new(move |_, l, fl| (log_replica, l, fl)),
        ),
        (
            "/a",
            "onto superblock copy B",
            0,
            Box::new(move |_, _, fl| (total - 1, 1, fl)),
        ),
        (
            "/a",
            "past the device",
            0,
            Box::new(move |_, l, fl| (total + 10, l, fl)),
        ),
        (
            "/a",
            "onto free space",
            0,
            Box::new(move |_, _, fl| (free, 1, fl)),
        ),
        (
            "/a",
            "onto another file",
            0,
            Box::new(move |_, _, fl| (victim, 1, fl)),
        ),
        (
            "/a",
            "length past the device",
            0,
            Box::new(|p, _, fl| (p, u32::MAX, fl)),
        ),
        (
            "/a",
            "length into free space",
            0,
            Box::new(|p, l, fl| (p, l + 1, fl)),
        ),
        (
            "/a",
            "unwritten bit set",
            0,
            Box::new(|p, l, fl| (p, l, fl | 1)),
        ),
        ("/a", "unknown flag", 0, Box::new(|p, l, fl| (p, l, fl | 2))),
        (
            "/u",
            "unwritten bit cleared",
            0,
            Box::new(|p, l, fl| (p, l, fl & !1)),
        ),
        (
            "/t",
            "tree: into the log",
            4,
            Box::new(move |_, l, fl| (log, l, fl)),
        ),
        (
            "/t",
            "tree: onto another file",
            4,
            Box::new(move |_, _, fl| (victim, 1, fl)),
        ),
        (
            "/t",
            "tree: onto free space",
            4,
            Box::new(move |_, _, fl| (free, 1, fl)),
        ),
        (
            "/t",
            "tree: past the device",
            4,
            Box::new(move |_, l, fl| (total + 10, l, fl)),
        ),
        (
            "/t",
            "tree: length past the device",
            4,
            Box::new(|p, _, fl| (p, u32::MAX, fl)),
        ),
        (
            "/t",
            "tree: unwritten bit set",
            4,
            Box::new(|p, l, fl| (p, l, fl | 1)),
        ),
        (
            "/t",
            "tree: unknown flag",
            4,
            Box::new(|p, l, fl| (p, l, fl | 0x80)),
        ),
    ];
    for (path, what, fblock, forge) in cases {
        let mut img = f.img.clone();
        forge_extent(&mut img, f.ino[path], fblock, &forge);
        refused(&f, img, path, what);
    }
}
