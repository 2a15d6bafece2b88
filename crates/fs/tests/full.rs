//! A full device is never a dead one: fill it with each kind of operation
//! until ENOSPC, then sync, unmount, mount again (which must work), check,
//! delete everything and get the space back. The metadata reserve
//! (DESIGN.md, "Allocation") keeps the blocks that flushing the reverse
//! map's pending intents, deleting and handling a media-error report need.
mod common;
use common::*;
use daxfs::{FallocFlags, File, Fs, FsError, MkfsOptions, MountOptions};
use daxfs_device::MemDevice;
use std::sync::Arc;

const BS: u64 = 4096;
/// Bounds every fill loop (a 16 MiB device holds fewer than 4,096 blocks).
const MAX_STEPS: usize = 20_000;

fn mk(mib: u64, log_blocks: Option<u64>) -> (Arc<MemDevice>, Fs, u64) {
    let dev = Arc::new(MemDevice::new(mib << 20));
    let opts = MkfsOptions {
        log_blocks,
        ..Default::default()
    };
    Fs::mkfs(dev.clone(), &opts).expect("mkfs");
    let fs = Fs::mount(dev.clone(), &MountOptions::default()).expect("mount");
    let free = fs.info().free_blocks;
    (dev, fs, free)
}

/// Fails the test unless `r` is Ok or ENOSPC; true for ENOSPC.
fn full<T>(r: Result<T, FsError>, what: &str) -> bool {
    match r {
        Ok(_) => false,
        Err(FsError::NoSpace(_)) => true,
        Err(e) => panic!("{what}: expected ENOSPC, got {e}"),
    }
}

/// After a fill: the device has no room left for ordinary work, and
/// everything the reserve is for works: sync, unmount, mount, fsck, rm of
/// everything, and the space comes back.
fn finish(dev: &Arc<MemDevice>, fs: Fs, free_after_mkfs: u64) {
    let i = fs.info();
    assert!(
        i.available_blocks < 32,
        "the fill stopped with {} blocks available",
        i.available_blocks
    );
    fs.sync().expect("sync on a full device");
    fs.unmount().expect("unmount on a full device");
    let fs = Fs::mount(dev.clone(), &MountOptions::default()).expect("mount of a full device");
    assert_fsck(&**dev);
    let names: Vec<String> = fs
        .readdir("/")
        .expect("readdir")
        .into_iter()
        .map(|e| String::from_utf8(e.name).expect("name"))
        .collect();
    assert!(!names.is_empty());
    for n in &names {
        fs.unlink(format!("/{n}"))
            .unwrap_or_else(|e| panic!("rm /{n} on a full device: {e}"));
    }
    let fs = remount(dev, fs);
    assert_fsck(&**dev);
    let free = fs.info().free_blocks;
    // Trees keep at most a root or two more than after mkfs.
    assert!(
        free + 8 >= free_after_mkfs && free <= free_after_mkfs + 8,
        "{free} blocks free after deleting everything, {free_after_mkfs} after mkfs"
    );
    fs.unmount().expect("unmount");
}

/// Creates `/fN` files with one byte each until ENOSPC, with no sync in
/// between (so the reverse map's intents are pending at the end).
fn fill_one_byte_files(fs: &Fs) -> usize {
    for n in 0..MAX_STEPS {
        let f = match fs.create(format!("/f{n}")) {
            Ok(f) => f,
            Err(e) => {
                assert!(full::<()>(Err(e), "create"));
                return n;
            }
        };
        if full(f.write_at(0, b"x"), "write") {
            return n;
        }
    }
    panic!("the device never filled");
}

#[test]
fn one_byte_files() {
    let (dev, fs, free) = mk(16, None);
    let n = fill_one_byte_files(&fs);
    assert!(n > 1000, "only {n} files");
    finish(&dev, fs, free);
}

#[test]
fn one_byte_files_small_log() {
    let (dev, fs, free) = mk(32, Some(64));
    let n = fill_one_byte_files(&fs);
    assert!(n > 1000, "only {n} files");
    finish(&dev, fs, free);
}

#[test]
fn empty_files() {
    let (dev, fs, free) = mk(16, None);
    let mut n = 0;
    while n < MAX_STEPS && !full(fs.create(format!("/e{n}")), "create") {
        n += 1;
    }
    assert!(n > 1000 && n < MAX_STEPS, "{n} files");
    finish(&dev, fs, free);
}

#[test]
fn one_big_file() {
    let (dev, fs, free) = mk(16, None);
    let f = fs.create("/big").expect("create");
    let mut off = 0;
    for chunk in [1 << 20, BS as usize] {
        let data = pattern(off, chunk);
        for _ in 0..MAX_STEPS {
            if full(f.write_at(off, &data), "write") {
                break;
            }
            off += chunk as u64;
        }
    }
    assert!(off > 8 << 20, "only {off} bytes");
    drop(f);
    finish(&dev, fs, free);
}

#[test]
fn clones_then_copy_on_write() {
    let (dev, fs, free) = mk(16, None);
    let src = fs.create("/src").expect("create");
    src.write_at(0, &pattern(1, 64 * BS as usize))
        .expect("write");
    let mut clones: Vec<File> = vec![];
    // Clones cost metadata only: a bounded number of them.
    for n in 0..200 {
        let c = match fs.create(format!("/c{n}")) {
            Ok(c) => c,
            Err(e) => {
                assert!(full::<()>(Err(e), "create"));
                break;
            }
        };
        if full(c.clone_from(&src), "clone") {
            break;
        }
        clones.push(c);
    }
    assert!(clones.len() > 20);
    // Then each clone's blocks are copied on write, until ENOSPC.
    let data = pattern(2, BS as usize);
    'fill: for b in 0..64 {
        for c in &clones {
            if full(c.write_at(b * BS, &data), "copy-on-write") {
                break 'fill;
            }
        }
    }
    drop(clones);
    drop(src);
    finish(&dev, fs, free);
}

#[test]
fn fallocate() {
    let (dev, fs, free) = mk(16, None);
    let flags = FallocFlags::default();
    let mut files = 0;
    'fill: for n in 0..MAX_STEPS {
        let f = match fs.create(format!("/a{n}")) {
            Ok(f) => f,
            Err(e) => {
                assert!(full::<()>(Err(e), "create"));
                break;
            }
        };
        files += 1;
        // Small pieces, so that the last file takes what is left.
        for k in 0..16 {
            if full(f.fallocate(flags, k * 16 * BS, 16 * BS), "fallocate") {
                break 'fill;
            }
        }
    }
    assert!(files > 1);
    finish(&dev, fs, free);
}

/// A media-error report on a full device is handled: the reserve holds the
/// blocks its error-log entry and loss records need.
#[test]
fn media_report_on_a_full_device() {
    let (dev, fs, _) = mk(16, None);
    fill_one_byte_files(&fs);
    let f = fs
        .open("/f7", &daxfs::OpenOptions::read_only())
        .expect("open");
    let phys = f.fiemap().expect("fiemap")[0].physical;
    let events = fs
        .inject_error(phys, BS)
        .expect("a report on a full device is handled");
    assert!(
        events
            .iter()
            .any(|e| e.action == "data lost" && e.physical == phys),
        "{events:?}"
    );
    let mut b = [0u8; 1];
    assert!(f.read_at(0, &mut b).is_err(), "the lost byte is never read");
    drop(f);
    fs.unmount().expect("unmount");
    let fs = Fs::mount(dev.clone(), &MountOptions::default()).expect("mount");
    assert_fsck(&*dev);
    fs.unlink("/f7").expect("rm of the file that lost data");
    assert_fsck(&*dev);
}
