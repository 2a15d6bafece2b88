//! The reverse map's pending changes: commits log a transaction's record
//! changes as intents in the log and keep them in memory, not in the
//! tree's nodes. These tests take the device as a crash would leave it (the
//! file system still mounted, so the tree's nodes on media lack the pending
//! records) and check that fsck and mount see every change, that a damaged
//! copy of the intent area is read from the other, that losing both is a
//! clear error, and that a transaction too large for the area puts
//! everything in the tree.
mod common;
use common::{assert_fsck, pattern};
use daxfs::{Fs, MkfsOptions, MountOptions, OwnerKind};
use daxfs_device::{Device, MemDevice};
use daxfs_format::superblock::{LOG_INTENT_BLOCKS, LOG_INTENTS};
use daxfs_format::{BLOCK_SIZE, Superblock};
use std::sync::Arc;
use zerocopy::FromBytes;

const BS: u64 = BLOCK_SIZE as u64;

fn superblock(dev: &dyn Device) -> Superblock {
    let mut b = vec![0u8; BLOCK_SIZE];
    dev.read(0, &mut b).unwrap();
    Superblock::read_from_bytes(&b[..]).unwrap()
}

/// Files written after a sync: their data records are intents only. Returns
/// the image a crash leaves, and each file's first device block.
fn crashed_image(files: u64) -> (Vec<u8>, Vec<(String, u64)>) {
    crashed_image_with(files, &MkfsOptions::default())
}

fn crashed_image_with(files: u64, opts: &MkfsOptions) -> (Vec<u8>, Vec<(String, u64)>) {
    let dev = Arc::new(MemDevice::new(16 << 20));
    Fs::mkfs(dev.clone(), opts).unwrap();
    let fs = Fs::mount(dev.clone(), &MountOptions::default()).unwrap();
    fs.mkdir("/d", 0o755).unwrap();
    fs.sync().unwrap();
    assert_eq!(superblock(&*dev).rmap_intents.get(), 0, "sync leaves none");
    let mut placed = vec![];
    for i in 0..files {
        let p = format!("/d/f{i}");
        let f = fs.create(&p).unwrap();
        f.write_at(0, &pattern(i, 5000)).unwrap();
        f.fsync().unwrap();
        placed.push((p, f.fiemap().unwrap()[0].physical / BS));
    }
    let img = dev.image();
    std::mem::forget(fs); // a crash: no unmount
    (img, placed)
}

/// Every file's first block is owned by it, by the reverse map.
fn owners_hold(fs: &Fs, placed: &[(String, u64)]) {
    for (p, b) in placed {
        let ino = fs.stat(p).unwrap().ino;
        let owners = fs.owners_by_inode(*b, 1).unwrap();
        assert!(
            owners
                .iter()
                .any(|o| matches!(o.owner, OwnerKind::File { ino: i, .. } if i == ino)),
            "{p} (block {b}) not in the reverse map: {owners:?}"
        );
    }
}

#[test]
fn deferred_changes_survive_a_crash() {
    let (img, placed) = crashed_image(5);
    let dev = Arc::new(MemDevice::from_image(img));
    let sb = superblock(&*dev);
    assert!(
        sb.rmap_intents.get() > 0,
        "the writes were deferred: nothing pending"
    );
    // fsck applies the intents to what the nodes hold, and finds it exact.
    assert_fsck(&*dev);
    let fs = Fs::mount(dev.clone(), &MountOptions::default()).unwrap();
    owners_hold(&fs, &placed);
    // Mount put them into the nodes and logged those.
    assert_eq!(superblock(&*dev).rmap_intents.get(), 0);
    drop(fs);
    assert_fsck(&*dev);
}

#[test]
fn deferred_changes_survive_a_crash_without_replicas() {
    // No replica region: the intents have one copy, in the log.
    let opts = MkfsOptions {
        no_replicas: true,
        ..Default::default()
    };
    let (img, placed) = crashed_image_with(5, &opts);
    let dev = Arc::new(MemDevice::from_image(img));
    assert!(superblock(&*dev).rmap_intents.get() > 0);
    assert_eq!(superblock(&*dev).log_replica.get(), 0);
    assert_fsck(&*dev);
    let fs = Fs::mount(dev.clone(), &MountOptions::default()).unwrap();
    owners_hold(&fs, &placed);
    drop(fs);
    assert_fsck(&*dev);
}

#[test]
fn the_intent_area_fills_and_starts_over() {
    // More changes than the area holds: commits log the nodes when it is
    // full, and the count never passes it. (A log of 600 blocks keeps the
    // whole area's worth pending; a smaller one keeps a quarter of its
    // capacity.)
    let dev = Arc::new(MemDevice::new(16 << 20));
    let opts = MkfsOptions {
        log_blocks: Some(600),
        ..Default::default()
    };
    Fs::mkfs(dev.clone(), &opts).unwrap();
    let fs = Fs::mount(dev.clone(), &MountOptions::default()).unwrap();
    let f = fs.create("/a").unwrap();
    let mut seen_max = 0;
    for i in 0..(3 * LOG_INTENTS as u64) {
        // Appends at a gap: a new record each time, never merged.
        f.write_at(2 * i * BS, &pattern(i, 100)).unwrap();
        f.fsync().unwrap();
        let n = superblock(&*dev).rmap_intents.get() as usize;
        assert!(n <= LOG_INTENTS);
        seen_max = seen_max.max(n);
    }
    assert!(
        seen_max > LOG_INTENTS / 2,
        "the area never filled: {seen_max}"
    );
    let img = dev.image();
    std::mem::forget(fs);
    let dev = Arc::new(MemDevice::from_image(img));
    assert_fsck(&*dev);
    let fs = Fs::mount(dev.clone(), &MountOptions::default()).unwrap();
    let f = fs.open("/a", &daxfs::OpenOptions::read_only()).unwrap();
    for e in f.fiemap().unwrap() {
        assert_eq!(fs.owners_by_inode(e.physical / BS, 1).unwrap().len(), 1);
    }
}

/// Overwrites the intent area's log copy (or its replica-region copy).
fn garbage_intents(dev: &dyn Device, replica: bool) {
    let first = daxfs::tx::geometry(&superblock(dev)).intent_area()[usize::from(replica)];
    assert_ne!(first, 0);
    dev.write(first * BS, &vec![0x5a; (LOG_INTENT_BLOCKS * BS) as usize])
        .unwrap();
}

#[test]
fn a_damaged_copy_of_the_intents_is_read_from_the_other() {
    for replica in [false, true] {
        let (img, placed) = crashed_image(4);
        let dev = Arc::new(MemDevice::from_image(img));
        garbage_intents(&*dev, replica);
        assert_fsck(&*dev);
        let fs = Fs::mount(dev.clone(), &MountOptions::default()).unwrap();
        owners_hold(&fs, &placed);
    }
}

#[test]
fn both_copies_of_the_intents_damaged_is_a_clear_error() {
    let (img, _) = crashed_image(4);
    let dev = Arc::new(MemDevice::from_image(img));
    garbage_intents(&*dev, false);
    garbage_intents(&*dev, true);
    let before = dev.image();
    let e = Fs::mount(dev.clone(), &MountOptions::default()).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("the reverse map's pending changes cannot be read"),
        "{msg}"
    );
    assert!(dev.image() == before, "a failed mount wrote to the device");
    let rep = daxfs::fsck::fsck(&*dev, &mut |_, _, _| {}).unwrap();
    assert!(
        rep.problems
            .iter()
            .any(|p| p.message.contains("pending changes cannot be read")),
        "{:#?}",
        rep.problems
    );
}

#[test]
fn a_media_error_finds_owners_known_only_by_intents() {
    // The records are in memory (pending) and in the log, not in the nodes
    // on media: the report still finds the owner.
    let dev = Arc::new(MemDevice::new(16 << 20));
    Fs::mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
    let fs = Fs::mount(dev.clone(), &MountOptions::default()).unwrap();
    fs.sync().unwrap();
    let f = fs.create("/x").unwrap();
    f.write_at(0, &pattern(1, 4096)).unwrap();
    f.fsync().unwrap();
    assert!(superblock(&*dev).rmap_intents.get() > 0);
    let b = f.fiemap().unwrap()[0].physical;
    let ev = fs.inject_error(b, BS).unwrap();
    assert!(ev.iter().any(|e| e.action == "data lost"), "{ev:?}");
    drop(f);
    drop(fs);
    assert_fsck(&*dev);
}

/// One transaction with more reverse-map changes than the intent area
/// holds (removing a file of 300 extents, with changes of earlier commits
/// still pending) puts them all in the tree as it goes and logs its nodes:
/// the count of intents goes back to 0, the other file keeps every record,
/// the removed file's blocks have no owner left, and both a crash image and
/// the unmounted image check clean.
#[test]
fn a_transaction_larger_than_the_intent_area() {
    let dev = Arc::new(MemDevice::new(16 << 20));
    Fs::mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
    let fs = Fs::mount(dev.clone(), &MountOptions::default()).unwrap();
    let (a, b) = (fs.create("/a").unwrap(), fs.create("/b").unwrap());
    // Interleaved allocations: every block of each file is an extent.
    for i in 0..300u64 {
        a.write_at(2 * i * BS, &pattern(i, 100)).unwrap();
        b.write_at(2 * i * BS, &pattern(1000 + i, 100)).unwrap();
    }
    a.fsync().unwrap();
    b.fsync().unwrap();
    let a_blocks: Vec<u64> = a
        .fiemap()
        .unwrap()
        .iter()
        .map(|e| e.physical / BS)
        .collect();
    let b_blocks: Vec<u64> = b
        .fiemap()
        .unwrap()
        .iter()
        .map(|e| e.physical / BS)
        .collect();
    assert_eq!(a_blocks.len(), 300, "one extent per block");
    assert!(
        superblock(&*dev).rmap_intents.get() > 0,
        "changes pending before"
    );
    drop(a);
    fs.unlink("/a").unwrap();
    assert_eq!(superblock(&*dev).rmap_intents.get(), 0, "all in the tree");
    let b_ino = fs.stat("/b").unwrap().ino;
    let check = |fs: &Fs| {
        for &p in &b_blocks {
            let o = fs.owners_by_inode(p, 1).unwrap();
            assert!(
                o.iter()
                    .any(|o| matches!(o.owner, OwnerKind::File { ino, .. } if ino == b_ino)),
                "block {p} of /b lost its owner: {o:?}"
            );
        }
        for &p in &a_blocks {
            let o = fs.owners_by_inode(p, 1).unwrap();
            assert!(
                o.is_empty(),
                "block {p} of the removed /a still owned: {o:?}"
            );
        }
    };
    check(&fs);
    let img = dev.image();
    drop(b);
    drop(fs);
    assert_fsck(&*dev);
    let crashed = Arc::new(MemDevice::from_image(img));
    assert_fsck(&*crashed);
    let fs = Fs::mount(crashed.clone(), &MountOptions::default()).unwrap();
    check(&fs);
    drop(fs);
    assert_fsck(&*crashed);
}
