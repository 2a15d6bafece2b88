//! Media errors, file-system side: every owner of a bad range found through
//! the reverse map and dealt with (kernel-anchor section 5 scenarios written
//! for daxfs, open handles standing in for processes).
mod common;
use common::*;
use daxfs::{FailureFlags, File, Fs, OpenOptions, OwnerKind};
use std::sync::{Arc, Mutex};

const BS: u64 = 4096;

fn file_with(fs: &Fs, path: &str, data: &[u8]) -> File {
    let f = fs.create(path).unwrap();
    f.write_at(0, data).unwrap();
    f
}

fn phys_of(f: &File, offset: u64) -> u64 {
    let e = f
        .fiemap()
        .unwrap()
        .into_iter()
        .find(|e| e.logical <= offset && offset < e.logical + e.length)
        .expect("mapped");
    e.physical + (offset - e.logical)
}

fn bg() -> FailureFlags {
    FailureFlags::default()
}

#[test]
fn loss_in_a_file_that_is_not_open_survives_remount() {
    let (dev, fs) = new_fs(16);
    let f = file_with(&fs, "/data", &pattern(1, 16 * 4096));
    let bad = phys_of(&f, 5 * BS);
    drop(f);
    let ev = fs.media_failure(bad, BS, bg()).unwrap();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].action, "data lost");
    assert!(
        matches!(&ev[0].owner, OwnerKind::File { paths, .. } if paths == &vec!["/data".to_string()])
    );
    assert_eq!(ev[0].offset, 5 * BS);
    let fs = remount(&dev, fs);
    let f = fs.open("/data", &OpenOptions::read_only()).unwrap();
    assert_eq!(f.stat().lost_bytes, BS);
    assert_eq!(fs.stat("/data").unwrap().lost_bytes, BS);
    // Reads of the lost block fail; reads before it stop short of it.
    let mut buf = vec![0u8; 4096];
    assert_eq!(
        f.read_at(5 * BS + 100, &mut buf).unwrap_err().errno_name(),
        "EIO"
    );
    let mut buf = vec![0u8; 8 * 4096];
    assert_eq!(f.read_at(2 * BS, &mut buf).unwrap(), 3 * BS as usize);
    assert_eq!(
        &buf[..3 * BS as usize],
        &pattern(1, 16 * 4096)[2 * BS as usize..5 * BS as usize]
    );
    assert_eq!(f.read_at(6 * BS, &mut buf).unwrap(), 8 * BS as usize);
    assert!(
        f.fiemap()
            .unwrap()
            .iter()
            .any(|e| e.lost && e.logical == 5 * BS && e.length == BS)
    );
    let log = fs.error_log().unwrap();
    assert!(
        log.iter()
            .any(|e| e.action == "data lost" && e.offset == 5 * BS && e.physical == bad)
    );
    drop(f);
    assert_fsck(&*dev);
}

#[test]
fn shared_block_loss_reaches_every_owner_and_every_handle() {
    let (dev, fs) = new_fs(16);
    let a = file_with(&fs, "/a", &pattern(2, 4 * 4096));
    let b = fs.create("/b").unwrap();
    b.clone_from(&a).unwrap();
    let c = fs.create("/c").unwrap();
    c.clone_from(&a).unwrap();
    drop(c); // not open: still recorded
    let seen = Arc::new(Mutex::new(vec![]));
    let s2 = seen.clone();
    b.on_media_error(move |n| s2.lock().unwrap().push(n.clone()));
    let a2 = fs.open("/a", &OpenOptions::read_only()).unwrap();
    let bad = phys_of(&a, BS);
    let ev = fs
        .media_failure(
            bad,
            BS,
            FailureFlags {
                action_required: true,
                pre_remove: false,
            },
        )
        .unwrap();
    assert_eq!(
        ev.iter().filter(|e| e.action == "data lost").count(),
        3,
        "{ev:?}"
    );
    // Both handles of /a and the handle of /b were told.
    for h in [&a, &a2] {
        let n = h.take_media_errors();
        assert_eq!(n.len(), 1);
        assert_eq!(
            (n[0].ino, n[0].offset, n[0].length, n[0].action_required),
            (a.ino(), BS, BS, true)
        );
    }
    assert_eq!(b.take_media_errors().len(), 1);
    assert_eq!(seen.lock().unwrap().len(), 1, "the callback ran");
    for p in ["/a", "/b", "/c"] {
        let f = fs.open(p, &OpenOptions::read_only()).unwrap();
        assert_eq!(
            f.read_at(BS, &mut [0u8; 10]).unwrap_err().errno_name(),
            "EIO",
            "{p}"
        );
        assert_eq!(f.stat().lost_bytes, BS);
    }
    drop((a, a2, b));
    assert_fsck(&*dev);
}

#[test]
fn free_space_is_quarantined_and_never_allocated() {
    let (dev, fs) = new_fs(8);
    let free_map = fs.fsmap(0, u64::MAX).unwrap();
    let free = free_map
        .iter()
        .find(|r| r.owner == OwnerKind::Free)
        .unwrap()
        .clone();
    let bad = free.physical + 16 * BS;
    let ev = fs.media_failure(bad, 2 * BS, bg()).unwrap();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].action, "quarantined");
    assert_eq!(fs.bad_ranges().unwrap(), vec![(bad, 2 * BS)]);
    // Fill the device: no file may get the bad blocks.
    let f = fs.create("/fill").unwrap();
    let mut off = 0;
    while f.write_at(off, &[1u8; 65536]).is_ok() {
        off += 65536;
    }
    for e in f.fiemap().unwrap() {
        assert!(
            e.physical + e.length <= bad || e.physical >= bad + 2 * BS,
            "allocated a bad block: {e:?}"
        );
    }
    drop(f);
    assert_fsck(&*dev);
    // Clearing returns them to free space.
    fs.unlink("/fill").unwrap();
    let before = fs.info().free_blocks;
    fs.clear_bad_range(bad, 2 * BS).unwrap();
    assert!(
        fs.info().free_blocks >= before + 1,
        "{} -> {}",
        before,
        fs.info().free_blocks
    );
    let map = fs.fsmap(bad / BS, 2).unwrap();
    assert!(
        map.iter().all(|r| r.owner == OwnerKind::Free),
        "cleared blocks are free again: {map:?}"
    );
    assert!(fs.bad_ranges().unwrap().is_empty());
    assert!(
        fs.error_log()
            .unwrap()
            .iter()
            .any(|e| e.action == "cleared")
    );
    assert_fsck(&*dev);
}

#[test]
fn overwriting_whole_lost_blocks_ends_the_loss_partial_writes_fail() {
    let (dev, fs) = new_fs(16);
    let f = file_with(&fs, "/f", &pattern(3, 8 * 4096));
    let bad = phys_of(&f, 2 * BS);
    fs.media_failure(bad, 2 * BS, bg()).unwrap();
    assert_eq!(f.stat().lost_bytes, 2 * BS);
    // A partial write into a lost block fails and changes nothing.
    assert_eq!(
        f.write_at(2 * BS + 10, b"x").unwrap_err().errno_name(),
        "EIO"
    );
    assert_eq!(
        f.write_at(BS, &vec![0u8; BS as usize + 10])
            .unwrap_err()
            .errno_name(),
        "EIO"
    );
    // A write covering block 2 whole ends its loss; block 3 stays lost.
    f.write_at(2 * BS, &[7u8; 4096]).unwrap();
    assert_eq!(f.stat().lost_bytes, BS);
    let mut buf = vec![0u8; 4096];
    f.read_at(2 * BS, &mut buf).unwrap();
    assert!(buf.iter().all(|&x| x == 7));
    assert_ne!(phys_of(&f, 2 * BS), bad, "the data moved off the bad block");
    // The bad physical blocks stay quarantined.
    assert_eq!(fs.bad_ranges().unwrap(), vec![(bad, 2 * BS)]);
    // fzero over the remaining lost block ends it too.
    f.fallocate(
        daxfs::FallocFlags {
            zero_range: true,
            keep_size: true,
            ..Default::default()
        },
        3 * BS,
        BS,
    )
    .unwrap();
    assert_eq!(f.stat().lost_bytes, 0);
    f.read_at(3 * BS, &mut buf).unwrap();
    assert!(buf.iter().all(|&x| x == 0));
    f.write_at(3 * BS, &[9u8; 100]).unwrap();
    assert!(
        fs.error_log()
            .unwrap()
            .iter()
            .any(|e| e.action == "loss ended")
    );
    drop(f);
    assert_fsck(&*dev);
}

#[test]
fn truncate_and_delete_end_losses_blocks_stay_quarantined() {
    let (dev, fs) = new_fs(16);
    let f = file_with(&fs, "/f", &pattern(4, 8 * 4096));
    let g = file_with(&fs, "/g", &pattern(5, 8 * 4096));
    let (bf, bg_) = (phys_of(&f, 6 * BS), phys_of(&g, 0));
    fs.media_failure(bf, BS, bg()).unwrap();
    fs.media_failure(bg_, BS, bg()).unwrap();
    f.set_len(6 * BS).unwrap();
    assert_eq!(f.stat().lost_bytes, 0);
    drop(g);
    let free = fs.info().free_blocks;
    fs.unlink("/g").unwrap();
    assert!(
        fs.info().free_blocks >= free + 7,
        "the good blocks are freed"
    );
    let map = fs.fsmap(bg_ / BS, 1).unwrap();
    assert!(
        map.iter().all(|r| r.owner != OwnerKind::Free && r.bad),
        "the bad block is not freed: {map:?}"
    );
    assert!(map.iter().any(|r| r.owner == OwnerKind::Quarantined));
    assert_eq!(fs.all_losses().unwrap(), vec![]);
    let bad = fs.bad_ranges().unwrap();
    assert!(bad.contains(&(bf, BS)) && bad.contains(&(bg_, BS)));
    drop(f);
    assert_fsck(&*dev);
    let fs = remount(&dev, fs);
    assert_eq!(fs.bad_ranges().unwrap().len(), 2);
    assert_fsck(&*dev);
}

#[test]
fn metadata_without_replica_shuts_down_after_every_owner_is_handled() {
    let dev = Arc::new(daxfs_device::MemDevice::new(16 << 20));
    let opts = daxfs::MkfsOptions {
        no_replicas: true,
        ..Default::default()
    };
    Fs::mkfs(dev.clone(), &opts).unwrap();
    let fs = Fs::mount(dev.clone(), &Default::default()).unwrap();
    let f = file_with(&fs, "/keep", &pattern(6, 3 * 4096));
    f.fsync().unwrap();
    // The inode table's node and a data block in one report.
    let map = fs.fsmap(0, u64::MAX).unwrap();
    let inode_node = map
        .iter()
        .find(|r| r.owner == OwnerKind::Metadata("inode table"))
        .unwrap()
        .physical;
    let ev = fs.media_failure(inode_node, BS, bg()).unwrap();
    assert!(ev.iter().any(|e| e.action == "shut down"));
    assert!(fs.shutdown_reason().is_some());
    // Writes fail with EIO; reads still work; committed data is not lost.
    assert_eq!(fs.create("/new").unwrap_err().errno_name(), "EIO");
    assert_eq!(fs.mkdir("/d", 0o755).unwrap_err().errno_name(), "EIO");
    let mut buf = vec![0u8; 3 * 4096];
    assert_eq!(f.read_at(0, &mut buf).unwrap(), buf.len());
    assert_eq!(buf, pattern(6, 3 * 4096));
    assert!(
        fs.error_log()
            .unwrap()
            .iter()
            .any(|e| e.action == "shut down")
    );
    drop(f);
}

#[test]
fn a_report_covering_data_metadata_and_free_space_handles_each() {
    let (_dev, fs) = new_fs(16);
    let f = file_with(&fs, "/f", &pattern(7, 2 * 4096));
    let p = phys_of(&f, 0);
    // Three blocks from the file's first: data, data, then whatever follows.
    let ev = fs.media_failure(p, 64 * BS, bg()).unwrap();
    assert!(ev.iter().any(|e| e.action == "data lost"));
    assert!(
        ev.iter().any(|e| e.action == "quarantined") || ev.iter().any(|e| e.action == "shut down")
    );
    let events: std::collections::HashSet<u64> =
        fs.error_log().unwrap().iter().map(|e| e.event).collect();
    assert_eq!(events.len(), 1, "one report is one event");
    drop(f);
}
