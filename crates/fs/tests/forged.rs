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
