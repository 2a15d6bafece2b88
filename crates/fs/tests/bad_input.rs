//! Bad input: corrupt, foreign, truncated and impossible images, and devices
//! too small. Each gives an error whose message names the problem, never a
//! panic, and a failed mount or fsck writes nothing.
mod common;
use common::pattern;
use daxfs::journal::Recovery;
use daxfs::{Fs, FsError, MkfsOptions, MountOptions, OpenOptions};
use daxfs_device::MemDevice;
use daxfs_format::superblock::{INCOMPAT_KNOWN, Superblock};
use daxfs_format::{BLOCK_SIZE, Block};
use std::sync::Arc;
use zerocopy::{FromBytes, IntoBytes};

const BS: usize = BLOCK_SIZE;

/// A file system of `mib` MiB with a few files and a directory, unmounted.
fn image(mib: u64) -> Vec<u8> {
    image_with(mib, &MkfsOptions::default())
}

/// Without metadata replicas, a damaged metadata block cannot be read
/// through a replica (tests/replica.rs covers the repairs).
fn no_replicas() -> MkfsOptions {
    MkfsOptions {
        no_replicas: true,
        ..Default::default()
    }
}

fn image_with(mib: u64, opts: &MkfsOptions) -> Vec<u8> {
    let dev = Arc::new(MemDevice::new(mib << 20));
    Fs::mkfs(dev.clone(), opts).unwrap();
    let fs = Fs::mount(dev.clone(), &MountOptions::default()).unwrap();
    fs.mkdir("/d", 0o755).unwrap();
    for i in 0..5 {
        let f = fs.create(format!("/d/f{i}")).unwrap();
        f.write_at(0, &pattern(i, 3000)).unwrap();
    }
    let f = fs.create("/a").unwrap();
    f.write_at(0, &pattern(9, 20_000)).unwrap();
    drop(f);
    drop(fs);
    dev.image()
}

fn block(img: &mut [u8], b: u64) -> &mut Block {
    let at = b as usize * BS;
    (&mut img[at..at + BS]).try_into().unwrap()
}

fn superblock(img: &[u8]) -> Superblock {
    Superblock::read_from_bytes(&img[..BS]).unwrap()
}

/// Changes both superblock copies and reseals them.
fn edit_superblocks(img: &mut [u8], f: impl Fn(&mut Superblock)) {
    let last = (img.len() / BS - 1) as u64;
    for b in [0, last] {
        let blk = block(img, b);
        let mut sb = Superblock::read_from_bytes(&blk[..]).unwrap();
        f(&mut sb);
        blk.copy_from_slice(sb.as_bytes());
        daxfs_format::fuzz::reseal(blk);
    }
}

/// Mounts `img`, expecting failure; checks that nothing was written and
/// returns the message.
fn mount_fails(img: Vec<u8>) -> String {
    let dev = Arc::new(MemDevice::from_image(img.clone()));
    let e = match Fs::mount(dev.clone(), &MountOptions::default()) {
        Ok(_) => panic!("mount succeeded"),
        Err(e) => e,
    };
    assert!(dev.image() == img, "a failed mount wrote to the device");
    // fsck fails the same way, and writes nothing either.
    let f = daxfs::fsck::fsck(&*dev, &mut |_, _, _| {});
    assert!(f.is_err(), "fsck accepted what mount refused");
    assert!(dev.image() == img, "fsck wrote to the device");
    e.to_string()
}

fn assert_mentions(msg: &str, words: &[&str]) {
    for w in words {
        assert!(msg.contains(w), "message {msg:?} does not mention {w:?}");
    }
}

#[test]
fn truncated_image() {
    let mut img = image(8);
    img.truncate(6 << 20);
    let msg = mount_fails(img);
    assert_mentions(
        &msg,
        &["total_blocks", "smaller than the file system", "2048"],
    );
}

#[test]
fn all_zeros_and_random_bytes() {
    let msg = mount_fails(vec![0; 4 << 20]);
    assert_mentions(&msg, &["not a daxfs file system"]);
    let msg = mount_fails(pattern(77, 4 << 20));
    assert_mentions(&msg, &["not a daxfs file system"]);
}

#[test]
fn foreign_files() {
    // An ext4-like image: superblock at byte 1024, magic 0xEF53 at 1080.
    let mut ext4 = vec![0u8; 8 << 20];
    ext4[1024..1028].copy_from_slice(&2048u32.to_le_bytes());
    ext4[1080..1082].copy_from_slice(&0xef53u16.to_le_bytes());
    let msg = mount_fails(ext4);
    assert_mentions(&msg, &["not a daxfs file system"]);
    // A text file, large and small.
    let text: Vec<u8> = b"daxfs is a file system for byte-addressable memory.\n"
        .iter()
        .copied()
        .cycle()
        .take(4 << 20)
        .collect();
    let msg = mount_fails(text);
    assert_mentions(&msg, &["not a daxfs file system"]);
    let msg = mount_fails(b"hello\n".to_vec());
    assert_mentions(&msg, &["too small", "6 bytes"]);
}

#[test]
fn wrong_magic() {
    let mut img = image(4);
    edit_superblocks(&mut img, |sb| {
        sb.magic2 = u32::from_le_bytes(*b"XFSB").into()
    });
    let msg = mount_fails(img);
    assert_mentions(&msg, &["not a daxfs file system"]);
}

#[test]
fn newer_format_version() {
    let mut img = image(4);
    edit_superblocks(&mut img, |sb| sb.version = 7.into());
    let msg = mount_fails(img);
    assert_mentions(&msg, &["format version 7 is newer", "supports (6)"]);
}

#[test]
fn older_format_version() {
    // Version 1 kept a segment-aligned reverse map without summaries;
    // version 2 kept no extents inline and logged no reverse-map intents;
    // version 3 kept one error-log record per owner; version 4 kept no
    // crcs in the pointers to tree nodes; version 5 had no extended
    // attributes, special files, device numbers or generations.
    for v in [1u32, 2, 3, 4, 5] {
        let mut img = image(4);
        edit_superblocks(&mut img, |sb| sb.version = v.into());
        let msg = mount_fails(img);
        assert_mentions(
            &msg,
            &[&format!("format version {v} is older"), "reads (6)"],
        );
    }
}

#[test]
fn unknown_incompat_features() {
    let mut img = image(4);
    edit_superblocks(&mut img, |sb| {
        sb.incompat = (sb.incompat.get() | 1 << 40).into();
    });
    assert_eq!(INCOMPAT_KNOWN & 1 << 40, 0);
    let msg = mount_fails(img);
    assert_mentions(&msg, &["unknown incompatible feature flags 0x10000000000"]);
}

#[test]
fn device_too_small_to_format() {
    let dev = Arc::new(MemDevice::new(1 << 20));
    let e = Fs::mkfs(dev.clone(), &MkfsOptions::default()).unwrap_err();
    assert!(matches!(e, FsError::Invalid(_)), "{e:?}");
    assert_mentions(&e.to_string(), &["too small", "1048576 bytes", "4194304"]);
    assert!(
        dev.image().iter().all(|&b| b == 0),
        "mkfs wrote to the device"
    );
    // A log that does not fit is refused too, before anything is written.
    let dev = Arc::new(MemDevice::new(4 << 20));
    let e = Fs::mkfs(
        dev.clone(),
        &MkfsOptions {
            log_blocks: Some(5000),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert_mentions(&e.to_string(), &["log of 5000 blocks does not fit"]);
    assert!(
        dev.image().iter().all(|&b| b == 0),
        "mkfs wrote to the device"
    );
}

#[test]
fn bad_copy_a_good_copy_b() {
    let mut img = image(4);
    img[BS / 2] ^= 0x40;
    let dev = Arc::new(MemDevice::from_image(img.clone()));
    let rep = daxfs::fsck::fsck(&*dev, &mut |_, _, _| {}).unwrap();
    assert!(
        rep.problems
            .iter()
            .any(|p| p.structure == "superblock" && p.block == Some(0)),
        "{:?}",
        rep.problems
    );
    assert!(dev.image() == img, "fsck wrote to the device");
    let fs = Fs::mount(dev.clone(), &MountOptions::default()).unwrap();
    assert_eq!(fs.readdir("/d").unwrap().len(), 5);
    let f = fs.open("/a", &OpenOptions::read_only()).unwrap();
    let mut buf = vec![0u8; 20_000];
    assert_eq!(f.read_at(0, &mut buf).unwrap(), 20_000);
    assert_eq!(buf, pattern(9, 20_000));
    // The next commit writes both copies again.
    drop(f);
    fs.mkdir("/e", 0o755).unwrap();
    drop(fs);
    let rep = daxfs::fsck::fsck(&*dev, &mut |_, _, _| {}).unwrap();
    assert!(rep.is_clean(), "{:?}", rep.problems);
}

#[test]
fn both_superblock_copies_bad() {
    let mut img = image(4);
    let last = img.len() - BS;
    img[100] ^= 1;
    img[last + 100] ^= 1;
    let msg = mount_fails(img);
    assert_mentions(&msg, &["superblock at block 0", "checksum mismatch"]);
}

/// Checks a corrupted metadata block: fsck names the block and the
/// structure, and every access through it is an EIO error; nothing is written.
fn corrupt_block_is_reported(
    img: Vec<u8>,
    b: u64,
    structure: &str,
    access: impl Fn(&Fs) -> Vec<FsError>,
) {
    let dev = Arc::new(MemDevice::from_image(img.clone()));
    let rep = daxfs::fsck::fsck(&*dev, &mut |_, _, _| {}).unwrap();
    assert!(
        rep.problems.iter().any(|p| p.block == Some(b)
            && p.structure == structure
            && p.message.contains("checksum")),
        "no problem names {structure} block {b}: {:#?}",
        rep.problems
    );
    assert!(dev.image() == img, "fsck wrote to the device");
    let fs = Fs::mount(dev.clone(), &MountOptions::default()).unwrap();
    for e in access(&fs) {
        assert_eq!(e.errno_name(), "EIO", "{e}");
        assert_mentions(
            &e.to_string(),
            &["corrupt metadata", &format!("block {b}"), "checksum"],
        );
    }
    drop(fs);
    assert!(dev.image() == img, "failed accesses wrote to the device");
}

#[test]
fn corrupted_inode_table() {
    let mut img = image_with(4, &no_replicas());
    let b = superblock(&img).inode_tree.block.get();
    block(&mut img, b)[300] ^= 0x10;
    corrupt_block_is_reported(img, b, "inode table", |fs| {
        vec![
            fs.stat("/").unwrap_err(),
            fs.readdir("/d").unwrap_err(),
            fs.open("/a", &OpenOptions::read_only()).unwrap_err(),
            fs.mkdir("/x", 0o755).unwrap_err(),
            fs.unlink("/a").unwrap_err(),
        ]
    });
}

#[test]
fn corrupted_directory_block() {
    let img = image_with(4, &no_replicas());
    // The directory tree of /d, found through a mounted copy.
    let (ino, b) = {
        let dev = Arc::new(MemDevice::from_image(img.clone()));
        let fs = Fs::mount(dev, &MountOptions::default()).unwrap();
        let ino = fs.stat("/d").unwrap().ino;
        drop(fs);
        let mut found = None;
        // The directory's tree root is in its inode record: scan for a
        // directory block owned by `ino` (block header: kind 4, owner ino).
        for (i, blk) in img.chunks_exact(BS).enumerate() {
            if &blk[..4] == b"DXMB"
                && blk[4] == 4
                && blk[16..24] == ino.to_le_bytes()
                && blk[24..32] == (i as u64).to_le_bytes()
            {
                found = Some(i as u64);
            }
        }
        (ino, found.expect("a block of /d's directory tree"))
    };
    let mut img = img;
    block(&mut img, b)[200] ^= 0x01;
    corrupt_block_is_reported(img, b, &format!("directory {ino}"), |fs| {
        vec![
            fs.readdir("/d").unwrap_err(),
            fs.stat("/d/f1").unwrap_err(),
            fs.create("/d/new").unwrap_err(),
            fs.rename("/d/f1", "/d/f9").unwrap_err(),
        ]
    });
}

/// An image whose log holds a committed transaction (mkdir /pending) that
/// was not checkpointed, and the image before that transaction.
fn pending_log_image() -> (Vec<u8>, Vec<u8>) {
    pending_log_image_with(&MkfsOptions::default())
}

fn pending_log_image_with(opts: &MkfsOptions) -> (Vec<u8>, Vec<u8>) {
    let dev = Arc::new(MemDevice::new(4 << 20));
    Fs::mkfs(dev.clone(), opts).unwrap();
    let fs = Fs::mount(dev.clone(), &MountOptions::default()).unwrap();
    fs.mkdir("/d", 0o755).unwrap();
    // Every change in its home (the reverse map's too: no intents pending).
    fs.sync().unwrap();
    let before = dev.image();
    fs.mkdir("/pending", 0o755).unwrap();
    let after = dev.image();
    drop(fs);
    let sb = superblock(&before);
    let log =
        sb.log_start.get() as usize * BS..(sb.log_start.get() + sb.log_blocks.get()) as usize * BS;
    let mut img = before.clone();
    img[log.clone()].copy_from_slice(&after[log]);
    (img, before)
}

#[test]
fn pending_log_replays() {
    let (img, _) = pending_log_image();
    let dev = Arc::new(MemDevice::from_image(img));
    let rep = daxfs::fsck::fsck(&*dev, &mut |_, _, _| {}).unwrap();
    assert!(rep.is_clean() && rep.pending_log.is_some(), "{rep:?}");
    let fs = Fs::mount(dev.clone(), &MountOptions::default()).unwrap();
    assert!(matches!(fs.recovery(), Recovery::Replayed { .. }));
    fs.stat("/pending").unwrap();
}

#[test]
fn torn_log_descriptor() {
    let (mut img, before) = pending_log_image();
    let start = superblock(&img).log_start.get() as usize;
    // Torn: the new header reached media, the rest of the block is still
    // the previous transaction's descriptor.
    img[start * BS + 64..(start + 1) * BS]
        .copy_from_slice(&before[start * BS + 64..(start + 1) * BS]);
    let dev = Arc::new(MemDevice::from_image(img.clone()));
    let rep = daxfs::fsck::fsck(&*dev, &mut |_, _, _| {}).unwrap();
    assert!(rep.is_clean() && rep.pending_log.is_none(), "{rep:?}");
    // Not committed: mount ignores it and writes nothing; the mkdir is gone.
    let fs = Fs::mount(dev.clone(), &MountOptions::default()).unwrap();
    assert_eq!(*fs.recovery(), Recovery::Clean);
    assert_eq!(fs.stat("/pending").unwrap_err().errno_name(), "ENOENT");
    fs.stat("/d").unwrap();
    drop(fs);
    assert!(
        dev.image() == img,
        "mount of a clean image wrote to the device"
    );
}

#[test]
fn torn_log_image() {
    // With replicas the image is read from the log's replica region or the
    // home's replica, or the transaction is undone (tests/replica.rs).
    let (mut img, _) = pending_log_image_with(&no_replicas());
    let start = superblock(&img).log_start.get();
    // The descriptor is whole but the first block image it names is torn:
    // the transaction cannot be replayed, and mount says so.
    block(&mut img, start + 1)[BS - 8..].fill(0xee);
    let dev = Arc::new(MemDevice::from_image(img.clone()));
    let e = Fs::mount(dev.clone(), &MountOptions::default()).unwrap_err();
    assert_mentions(&e.to_string(), &["log", "checksum mismatch"]);
    assert!(dev.image() == img, "a failed mount wrote to the device");
    let rep = daxfs::fsck::fsck(&*dev, &mut |_, _, _| {}).unwrap();
    assert!(
        rep.problems
            .iter()
            .any(|p| p.structure == "log" && p.message.contains("checksum mismatch")),
        "{:?}",
        rep.problems
    );
    assert!(dev.image() == img, "fsck wrote to the device");
}

#[test]
fn full_device_for_data_then_metadata() {
    let dev = Arc::new(MemDevice::new(4 << 20));
    Fs::mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
    let fs = Fs::mount(dev.clone(), &MountOptions::default()).unwrap();
    let keep = pattern(5, 10_000);
    fs.create("/keep").unwrap().write_at(0, &keep).unwrap();
    // Data until the device is full.
    let f = fs.create("/fill").unwrap();
    let mut off = 0u64;
    let e = loop {
        match f.write_at(off, &[0x5a; 64 << 10]) {
            Ok(n) => off += n as u64,
            Err(e) => break e,
        }
    };
    assert_eq!(e.errno_name(), "ENOSPC", "{e}");
    assert_mentions(&e.to_string(), &["no space left on device"]);
    assert_eq!(f.stat().size, off, "a failed write changes nothing");
    drop(f);
    // Then names until the metadata has no room either.
    let e = (0..20_000)
        .find_map(|i| fs.create(format!("/n{i}")).err())
        .expect("the device fills up");
    assert_eq!(e.errno_name(), "ENOSPC", "{e}");
    assert_mentions(&e.to_string(), &["no space left on device"]);
    drop(fs);
    let rep = daxfs::fsck::fsck(&*dev, &mut |_, _, _| {}).unwrap();
    assert!(rep.is_clean(), "{:?}", rep.problems);
    // Nothing was lost, and freeing space makes room again.
    let fs = Fs::mount(dev.clone(), &MountOptions::default()).unwrap();
    let mut buf = vec![0u8; keep.len()];
    let k = fs.open("/keep", &OpenOptions::read_only()).unwrap();
    assert_eq!(k.read_at(0, &mut buf).unwrap(), keep.len());
    assert_eq!(buf, keep);
    fs.unlink("/fill").unwrap();
    fs.create("/after")
        .unwrap()
        .write_at(0, &[1; 100_000])
        .unwrap();
}

#[test]
fn impossible_ranges() {
    let dev = Arc::new(MemDevice::new(4 << 20));
    Fs::mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
    let fs = Fs::mount(dev.clone(), &MountOptions::default()).unwrap();
    let f = fs.create("/f").unwrap();
    f.write_at(0, b"data").unwrap();
    let e = f.write_at(u64::MAX - 2, b"xyz").unwrap_err();
    assert_eq!(e.errno_name(), "EFBIG");
    assert_mentions(&e.to_string(), &["file too large", "largest file size"]);
    let e = f.set_len(u64::MAX).unwrap_err();
    assert_eq!(e.errno_name(), "EFBIG");
    let e = f
        .fallocate(
            daxfs::FallocFlags::default(),
            u64::MAX / 2,
            u64::MAX / 2 + 10,
        )
        .unwrap_err();
    assert_eq!(e.errno_name(), "EFBIG");
    let e = f
        .fallocate(daxfs::FallocFlags::default(), 0, 0)
        .unwrap_err();
    assert_eq!(e.errno_name(), "EINVAL");
    assert_mentions(&e.to_string(), &["length is zero"]);
    // Reading far past the end is not an error: it reads nothing.
    assert_eq!(f.read_at(u64::MAX - 1, &mut [0u8; 10]).unwrap(), 0);
    assert_eq!(f.stat().size, 4);
    drop(f);
    drop(fs);
    let rep = daxfs::fsck::fsck(&*dev, &mut |_, _, _| {}).unwrap();
    assert!(rep.is_clean(), "{:?}", rep.problems);
}

/// Device ranges given to `inject_error` and `clear_bad_range`: empty,
/// overflowing or past the end of the device are EINVAL (nothing changes);
/// a clear must cover whole 4 KiB pages (EINVAL otherwise). Clearing a
/// block a file still owns logs the file as its owner, not free space.
#[test]
fn error_ranges_outside_the_device_or_unaligned() {
    let (dev, fs) = common::new_fs(16);
    let size = 16u64 << 20;
    let einval = |r: Result<_, FsError>, what: &str| match r {
        Err(e) => {
            assert_eq!(e.errno_name(), "EINVAL", "{what}: {e}");
            e.to_string()
        }
        Ok(_) => panic!("{what}: accepted"),
    };
    for (off, len) in [
        (0xffff_ffff_ffff_f000, 4096),
        (u64::MAX, 1),
        (size, 4096),
        (size - 4096, 8192),
        (1 << 30, 4096),
        (0, 0),
    ] {
        let m = einval(fs.inject_error(off, len).map(|_| ()), "inject");
        assert!(
            m.contains("device ends") || m.contains("largest") || m.contains("zero"),
            "{m}"
        );
        einval(fs.clear_bad_range(off, len).map(|_| ()), "clear");
    }
    assert!(fs.bad_ranges().unwrap().is_empty());
    // A file's block, and a free one, go bad.
    let f = fs.create("/f").unwrap();
    f.write_at(0, &pattern(1, 8192)).unwrap();
    let owned = f.fiemap().unwrap()[0].physical;
    let free_block = size / 2 + 64 * 4096;
    assert!(
        fs.fsmap(free_block / 4096, 1)
            .unwrap()
            .iter()
            .all(|r| r.owner == daxfs::OwnerKind::Free)
    );
    fs.inject_error(owned + 100, 10).unwrap(); // rounded out to its page
    fs.inject_error(free_block, 4096).unwrap();
    for (off, len) in [(owned + 100, 4096), (owned, 100), (owned, 4097)] {
        let m = einval(fs.clear_bad_range(off, len).map(|_| ()), "unaligned clear");
        assert!(m.contains("multiples of 4096"), "{m}");
    }
    assert_eq!(fs.bad_ranges().unwrap().len(), 2, "nothing cleared");
    assert_eq!(fs.clear_bad_range(owned, 4096).unwrap(), 4096);
    assert_eq!(fs.clear_bad_range(free_block, 4096).unwrap(), 4096);
    assert_eq!(fs.clear_bad_range(owned, 4096).unwrap(), 0, "not bad now");
    let log = fs.error_log().unwrap();
    let cleared: Vec<_> = log.iter().filter(|e| e.action == "cleared").collect();
    assert_eq!(cleared.len(), 2, "{log:#?}");
    assert!(
        matches!(&cleared[0].owner, daxfs::OwnerKind::File { ino, .. } if *ino == f.ino())
            && cleared[0].physical == owned
            && cleared[0].offset == 0,
        "the file's block is logged with its owner: {:?}",
        cleared[0]
    );
    assert!(
        cleared[1].owner == daxfs::OwnerKind::Free && cleared[1].physical == free_block,
        "{:?}",
        cleared[1]
    );
    drop(f);
    drop(fs);
    common::assert_fsck(&*dev);
}
