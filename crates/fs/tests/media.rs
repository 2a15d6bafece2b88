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
    let mut ev = fs.media_failure(bad, BS, bg()).unwrap();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].action, "data lost");
    // Handling names owners by inode; paths come on request.
    assert!(matches!(&ev[0].owner, OwnerKind::File { paths, .. } if paths.is_empty()));
    fs.name_owners(&mut ev).unwrap();
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
        fs.info().free_blocks > before,
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
    let (dev, fs) = new_fs(16);
    let f = file_with(&fs, "/f", &pattern(7, 2 * 4096));
    let p = phys_of(&f, 0);
    // The block before the file's data is a metadata node (mkfs lays them
    // out before the first data): the report covers it, the file's two
    // blocks, then free space.
    let meta = fs.fsmap(p / BS - 1, 1).unwrap();
    assert!(
        meta.len() == 1 && meta[0].metadata,
        "block before the data: {meta:?}"
    );
    let ev = fs.media_failure(p - BS, 64 * BS, bg()).unwrap();
    assert!(ev.iter().any(|e| e.action == "data lost"), "{ev:?}");
    assert!(ev.iter().any(|e| e.action == "quarantined"), "{ev:?}");
    assert!(
        ev.iter()
            .any(|e| e.action == "repaired" && e.physical == p - BS),
        "the metadata node was not rebuilt from its replica: {ev:?}"
    );
    assert!(!ev.iter().any(|e| e.action == "shut down"), "{ev:?}");
    assert_eq!(fs.shutdown_reason(), None);
    // The node lives elsewhere now, nothing metadata is left in the range,
    // and the file system works on.
    assert!(
        fs.fsmap(p / BS - 1, 64)
            .unwrap()
            .iter()
            .all(|r| !r.metadata),
        "metadata left in the bad range"
    );
    let events: std::collections::HashSet<u64> =
        fs.error_log().unwrap().iter().map(|e| e.event).collect();
    assert_eq!(events.len(), 1, "one report is one event");
    drop(f);
    fs.rename("/f", "/g").unwrap();
    drop(file_with(&fs, "/h", b"after"));
    let fs = remount(&dev, fs);
    assert!(fs.stat("/g").is_ok() && fs.stat("/h").is_ok());
    drop(fs);
    assert_fsck(&*dev);
}

// ---- With the device's own poison: reports arrive through the holder. ----

use daxfs::FallocFlags;
use daxfs_device::Device;

#[test]
fn injected_error_reaches_the_file_system_through_the_holder() {
    let (dev, fs) = new_fs(16);
    let f = file_with(&fs, "/f", &pattern(10, 8 * 4096));
    let bad = phys_of(&f, 3 * BS);
    let ev = fs.inject_error(bad, BS).unwrap();
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!((ev[0].action, ev[0].offset), ("data lost", 3 * BS));
    assert_eq!(dev.bad_ranges(), vec![(bad, BS)]);
    // The poisoned page is never read: EIO, not a crash, not stale bytes.
    assert_eq!(
        f.read_at(3 * BS, &mut [0u8; 16]).unwrap_err().errno_name(),
        "EIO"
    );
    // Overwriting the whole block moves it off the poison.
    f.write_at(3 * BS, &[5u8; 4096]).unwrap();
    let mut buf = vec![0u8; 4096];
    f.read_at(3 * BS, &mut buf).unwrap();
    assert!(buf.iter().all(|&x| x == 5));
    assert_eq!(
        dev.bad_ranges(),
        vec![(bad, BS)],
        "the memory stays bad until cleared"
    );
    drop(f);
    assert_fsck(&*dev);
}

#[test]
fn errors_already_on_the_device_are_handled_at_mount() {
    let (dev, fs) = new_fs(16);
    let f = file_with(&fs, "/f", &pattern(11, 4 * 4096));
    let bad = phys_of(&f, BS);
    drop(f);
    drop(fs);
    // The emulated hardware reports it while nothing is mounted.
    dev.inject_error(bad, BS).unwrap();
    let fs = daxfs::Fs::mount(dev.clone(), &daxfs::MountOptions::default()).unwrap();
    let ev = fs.take_failure_events();
    assert!(
        ev.iter().any(|e| e.action == "data lost" && e.offset == BS),
        "{ev:?}"
    );
    let f = fs.open("/f", &OpenOptions::read_only()).unwrap();
    assert_eq!(f.stat().lost_bytes, BS);
    assert_eq!(
        f.read_at(BS, &mut [0u8; 1]).unwrap_err().errno_name(),
        "EIO"
    );
    drop(f);
    assert_fsck(&*dev);
}

#[test]
fn poisoned_preallocated_blocks_are_replaced_on_write() {
    let (dev, fs) = new_fs(16);
    let f = fs.create("/f").unwrap();
    f.fallocate(FallocFlags::default(), 0, 8 * BS).unwrap();
    let bad = phys_of(&f, 2 * BS);
    let ev = fs.inject_error(bad, BS).unwrap();
    assert_eq!(ev[0].action, "no data", "an unwritten block held nothing");
    assert_eq!(f.stat().lost_bytes, 0);
    // Reads of unwritten blocks never touch media; writes move to good memory.
    let mut buf = vec![1u8; 4096];
    f.read_at(2 * BS, &mut buf).unwrap();
    assert!(buf.iter().all(|&x| x == 0));
    f.write_at(2 * BS + 100, b"after").unwrap();
    f.read_at(2 * BS, &mut buf).unwrap();
    assert_eq!(&buf[100..105], b"after");
    assert_ne!(phys_of(&f, 2 * BS), bad);
    drop(f);
    assert_fsck(&*dev);
}

#[test]
fn clear_error_makes_memory_good_and_free_again() {
    let (dev, fs) = new_fs(16);
    let free = fs
        .fsmap(0, u64::MAX)
        .unwrap()
        .into_iter()
        .find(|r| r.owner == OwnerKind::Free)
        .unwrap();
    let bad = free.physical + 8 * BS;
    fs.inject_error(bad, 2 * BS).unwrap();
    assert_eq!(fs.bad_ranges().unwrap(), vec![(bad, 2 * BS)]);
    fs.clear_bad_range(bad, 2 * BS).unwrap();
    assert!(
        dev.bad_ranges().is_empty(),
        "the device's poison is cleared"
    );
    assert!(fs.bad_ranges().unwrap().is_empty());
    let mut b = [1u8; 8];
    dev.read(bad, &mut b).unwrap();
    assert_eq!(b, [0u8; 8]);
    assert_fsck(&*dev);
}

#[test]
fn device_removal_stops_writes_without_marking_corrupt() {
    let (dev, fs) = new_fs(16);
    let f = file_with(&fs, "/f", &pattern(12, 4096));
    f.write_at(0, b"last words").unwrap();
    dev.remove().unwrap();
    assert!(fs.shutdown_reason().unwrap().contains("removed"));
    assert_eq!(fs.create("/g").unwrap_err().errno_name(), "EIO");
    let mut buf = [0u8; 10];
    f.read_at(0, &mut buf).unwrap();
    assert_eq!(&buf, b"last words");
    drop(f);
    drop(fs);
    // Everything written is there, and nothing says the file system is corrupt.
    assert_fsck(&*dev);
    let fs = remount(
        &dev,
        daxfs::Fs::mount(dev.clone(), &daxfs::MountOptions::default()).unwrap(),
    );
    let f = fs.open("/f", &OpenOptions::read_only()).unwrap();
    f.read_at(0, &mut buf).unwrap();
    assert_eq!(&buf, b"last words");
    assert!(fs.error_log().unwrap().iter().any(|e| e.pre_remove));
}

/// Random workloads with errors injected at random places, checked against
/// a model: no read ever returns bytes other than what was written, and each
/// loss is reported to exactly the files (and file offsets) that owned the
/// bad block. The owners come from the model: every file block holds a
/// token naming the write that made it (0: a hole); a clone copies tokens,
/// so the blocks holding one token are the ones sharing a device block.
#[test]
fn random_errors_against_a_model() {
    use rand::{Rng, SeedableRng, rngs::SmallRng};
    for seed in 0..3u64 {
        let (dev, fs) = new_fs(32);
        let mut rng = SmallRng::seed_from_u64(seed);
        let names: Vec<String> = (0..8).map(|i| format!("/f{i}")).collect();
        let mut model: Vec<Vec<u8>> = vec![vec![]; names.len()];
        // lost[i]: file blocks of file i whose data is lost.
        let mut lost: Vec<std::collections::BTreeSet<u64>> = vec![Default::default(); names.len()];
        let mut tokens: Vec<Vec<u64>> = vec![vec![]; names.len()];
        let mut next_token = 1u64;
        for n in &names {
            drop(fs.create(n).unwrap());
        }
        let (mut injected, mut shared_hits) = (0u32, 0u32);
        for step in 0..300 {
            let i = rng.random_range(0..names.len());
            let f = fs.open(&names[i], &OpenOptions::read_write()).unwrap();
            match rng.random_range(0..10) {
                0..=3 => {
                    let off = rng.random_range(0..24u64) * BS;
                    let data = pattern(rng.random(), (rng.random_range(1..4u64) * BS) as usize);
                    let blocks = off / BS..(off + data.len() as u64) / BS;
                    f.write_at(off, &data).unwrap();
                    let m = &mut model[i];
                    if m.len() < off as usize + data.len() {
                        m.resize(off as usize + data.len(), 0);
                    }
                    m[off as usize..off as usize + data.len()].copy_from_slice(&data);
                    let t = &mut tokens[i];
                    if t.len() < blocks.end as usize {
                        t.resize(blocks.end as usize, 0);
                    }
                    for b in blocks {
                        lost[i].remove(&b);
                        t[b as usize] = next_token;
                        next_token += 1;
                    }
                }
                4..=5 => {
                    // Clone another file whole into this one.
                    let j = rng.random_range(0..names.len());
                    if j != i && !model[j].is_empty() && lost[j].is_empty() {
                        let s = fs.open(&names[j], &OpenOptions::read_only()).unwrap();
                        f.clone_from(&s).unwrap();
                        let src = model[j].clone();
                        let m = &mut model[i];
                        if m.len() < src.len() {
                            m.resize(src.len(), 0);
                        }
                        m[..src.len()].copy_from_slice(&src);
                        for b in 0..(src.len() as u64).div_ceil(BS) {
                            lost[i].remove(&b);
                        }
                        let st = tokens[j].clone();
                        let t = &mut tokens[i];
                        if t.len() < st.len() {
                            t.resize(st.len(), 0);
                        }
                        t[..st.len()].copy_from_slice(&st);
                    }
                }
                6..=7 => {
                    // A media error under a random written block of this
                    // file (fiemap only finds its device address).
                    let cands: Vec<u64> = (0..tokens[i].len() as u64)
                        .filter(|b| tokens[i][*b as usize] != 0 && !lost[i].contains(b))
                        .collect();
                    if !cands.is_empty() {
                        let blk = cands[rng.random_range(0..cands.len())];
                        let tok = tokens[i][blk as usize];
                        let phys = f
                            .fiemap()
                            .unwrap()
                            .iter()
                            .find(|x| x.logical <= blk * BS && blk * BS < x.logical + x.length)
                            .map(|x| x.physical + (blk * BS - x.logical))
                            .expect("a written block is mapped");
                        // The true owners, by the model: every file block
                        // holding the same token.
                        let mut owners = vec![];
                        for (k, t) in tokens.iter().enumerate() {
                            for (b, &x) in t.iter().enumerate() {
                                if x == tok {
                                    owners.push((k, b as u64));
                                }
                            }
                        }
                        let ev = fs.inject_error(phys, BS).unwrap();
                        injected += 1;
                        shared_hits += u32::from(ev.len() > 1);
                        let mut got: Vec<(u64, u64)> = ev
                            .iter()
                            .filter(|x| x.action == "data lost")
                            .map(|x| match &x.owner {
                                OwnerKind::File { ino, .. } => (*ino, x.offset),
                                _ => (0, x.offset),
                            })
                            .collect();
                        let mut want: Vec<(u64, u64)> = owners
                            .iter()
                            .map(|(k, b)| (fs.stat(&names[*k]).unwrap().ino, b * BS))
                            .collect();
                        got.sort();
                        want.sort();
                        assert_eq!(got, want, "seed {seed} step {step}: owners told");
                        for (k, b) in owners {
                            lost[k].insert(b);
                        }
                    }
                }
                _ => {
                    let len = rng.random_range(0..24u64) * BS;
                    f.set_len(len).unwrap();
                    model[i].resize(len as usize, 0);
                    lost[i].retain(|&b| b < len / BS);
                    tokens[i].resize((len / BS) as usize, 0);
                }
            }
            // Every file: lost blocks fail, every other byte is what was written.
            for (k, n) in names.iter().enumerate() {
                let g = fs.open(n, &OpenOptions::read_only()).unwrap();
                assert_eq!(g.stat().size as usize, model[k].len());
                for b in 0..(model[k].len() as u64).div_ceil(BS) {
                    let mut buf = vec![0u8; BS as usize];
                    let want = &model[k]
                        [(b * BS) as usize..((b + 1) * BS).min(model[k].len() as u64) as usize];
                    match g.read_at(b * BS, &mut buf[..want.len()]) {
                        Ok(nread) => {
                            assert!(
                                !lost[k].contains(&b),
                                "seed {seed} step {step}: {n} block {b} should be lost"
                            );
                            assert_eq!(
                                &buf[..nread],
                                &want[..nread],
                                "seed {seed} step {step}: {n} block {b} wrong bytes"
                            );
                            assert_eq!(nread, want.len());
                        }
                        Err(e) => {
                            assert_eq!(e.errno_name(), "EIO");
                            assert!(
                                lost[k].contains(&b),
                                "seed {seed} step {step}: {n} block {b} unexpectedly lost"
                            );
                        }
                    }
                }
            }
        }
        assert!(
            injected >= 20 && shared_hits >= 2,
            "seed {seed}: {injected} errors, {shared_hits} on shared blocks"
        );
        assert_fsck(&*dev);
    }
}

/// Files read clean before a report (their "no losses" is cached) see the
/// loss after it, open or not, without being visited by the report.
#[test]
fn files_found_clean_before_a_report_see_the_loss_after_it() {
    let (dev, fs) = new_fs(16);
    let a = file_with(&fs, "/a", &pattern(3, 4 * 4096));
    let b = fs.create("/b").unwrap();
    b.clone_from(&a).unwrap();
    let mut buf = vec![0u8; 4 * 4096];
    // Both read clean: the clean state is cached in the inodes.
    assert_eq!(a.read_at(0, &mut buf).unwrap(), buf.len());
    assert_eq!(b.read_at(0, &mut buf).unwrap(), buf.len());
    let ino_b = b.ino();
    drop(b); // closed, but its inode stays in memory
    fs.media_failure(phys_of(&a, 2 * BS), BS, bg()).unwrap();
    // The open handle's next read stops at the lost block.
    assert_eq!(
        a.read_at(2 * BS, &mut [0u8; 8]).unwrap_err().errno_name(),
        "EIO"
    );
    assert_eq!(a.read_at(0, &mut buf).unwrap(), 2 * BS as usize);
    let b = fs.open("/b", &OpenOptions::read_only()).unwrap();
    assert_eq!(b.ino(), ino_b);
    assert_eq!(
        b.read_at(2 * BS, &mut [0u8; 8]).unwrap_err().errno_name(),
        "EIO"
    );
    assert_eq!(b.stat().lost_bytes, BS);
    // A file that owns none of it reads on, clean.
    let c = file_with(&fs, "/c", &pattern(4, 4096));
    assert_eq!(c.read_at(0, &mut [0u8; 4096]).unwrap(), 4096);
    drop((a, b, c));
    assert_fsck(&*dev);
}

/// Reports on a block shared by more files than the per-inode path handles
/// (the batched path): losses merge with each file's earlier ones exactly.
#[test]
fn many_owners_losses_merge_with_earlier_ones() {
    let (dev, fs) = new_fs(32);
    let src = file_with(&fs, "/src", &pattern(5, 6 * 4096));
    let mut inos = vec![src.ino()];
    for i in 0..40 {
        let c = fs.create(format!("/c{i}")).unwrap();
        c.clone_from(&src).unwrap();
        inos.push(c.ino());
    }
    // Blocks 3, then 1, then 2 (joining 1 and 3), then 5.
    for fb in [3, 1, 2, 5] {
        let ev = fs.media_failure(phys_of(&src, fb * BS), BS, bg()).unwrap();
        assert_eq!(
            ev.iter().filter(|e| e.action == "data lost").count(),
            inos.len()
        );
    }
    let mut want: Vec<(u64, u64, u64)> = inos
        .iter()
        .flat_map(|&i| [(i, BS, 3 * BS), (i, 5 * BS, BS)])
        .collect();
    want.sort_unstable();
    let mut got = fs.all_losses().unwrap();
    got.sort_unstable();
    assert_eq!(got, want);
    // The error log names every owner of every report once, and each
    // report's owners make one entry (they share its sequence number), in
    // the reverse map's order (by inode), before and after a remount.
    let check = |fs: &Fs| {
        let log = fs.error_log().unwrap();
        assert!(log.iter().all(|e| e.action == "data lost"), "{log:?}");
        assert_eq!(log.len(), 4 * inos.len());
        for (r, (entry, fb)) in log.chunks(inos.len()).zip([3, 1, 2, 5]).enumerate() {
            assert!(
                entry
                    .iter()
                    .all(|e| e.seq == r as u64 && e.event == r as u64)
            );
            assert!(entry.iter().all(|e| e.offset == fb * BS && e.length == BS));
            let owners: Vec<u64> = entry
                .iter()
                .map(|e| match e.owner {
                    OwnerKind::File { ino, .. } => ino,
                    _ => panic!("{e:?}"),
                })
                .collect();
            assert_eq!(owners, inos);
        }
    };
    check(&fs);
    drop(src);
    let fs = remount(&dev, fs);
    check(&fs);
    drop(fs);
    assert_fsck(&*dev);
}

/// A block being staged for a copy-on-write turns out bad (a latent error,
/// found when the write stores into it): the staging is dropped and the write
/// redone on another block; the bad block is quarantined, nothing shuts down.
#[test]
fn bad_staging_block_is_dropped_and_the_write_redone() {
    use daxfs_device::Device;
    let (dev, fs) = new_fs(16);
    let a = file_with(&fs, "/a", &pattern(6, 4 * 4096));
    let b = fs.create("/b").unwrap();
    b.clone_from(&a).unwrap();
    // A first copy-on-write shows where the allocator is; the next one
    // takes the block after it.
    b.write_at(0, &pattern(7, 4096)).unwrap();
    let p0 = phys_of(&b, 0);
    let next = p0 + BS;
    assert!(
        fs.owners(next / BS, 1).unwrap().is_empty(),
        "next block free"
    );
    dev.inject_latent_error(next, BS).unwrap();
    assert!(dev.bad_ranges().is_empty(), "latent: nobody knows yet");
    let new = pattern(8, 4096);
    assert_eq!(b.write_at(BS, &new).unwrap(), 4096);
    // The write met the bad block, which is now known and quarantined.
    assert_eq!(dev.bad_ranges(), vec![(next, BS)]);
    assert!(
        fs.error_log()
            .unwrap()
            .iter()
            .any(|e| e.physical == next && e.action == "quarantined"),
        "{:?}",
        fs.error_log().unwrap()
    );
    assert_ne!(phys_of(&b, BS), next);
    assert!(fs.shutdown_reason().is_none());
    let mut got = vec![0u8; 4096];
    b.read_at(BS, &mut got).unwrap();
    assert_eq!(got, new);
    a.read_at(BS, &mut got).unwrap();
    assert_eq!(got, pattern(6, 4 * 4096)[4096..8192]);
    drop((a, b));
    assert_fsck(&*dev);
}

/// A latent error in a file's own block, found by an in-place overwrite:
/// a write covering the whole block replaces it; a partial one fails with
/// EIO and so does a read, from then on.
#[test]
fn latent_error_in_a_files_block_found_by_writing() {
    use daxfs_device::Device;
    let (dev, fs) = new_fs(16);
    let f = file_with(&fs, "/f", &pattern(9, 4 * 4096));
    let g = file_with(&fs, "/g", &pattern(10, 2 * 4096));
    let p1 = phys_of(&f, BS);
    let q0 = phys_of(&g, 0);
    dev.inject_latent_error(p1, BS).unwrap();
    dev.inject_latent_error(q0, BS).unwrap();
    let whole = pattern(11, 4096);
    assert_eq!(f.write_at(BS, &whole).unwrap(), 4096);
    assert_ne!(phys_of(&f, BS), p1);
    let mut got = vec![0u8; 4096];
    f.read_at(BS, &mut got).unwrap();
    assert_eq!(got, whole);
    assert_eq!(f.stat().lost_bytes, 0, "the whole block was rewritten");
    // Part of a block: the rest of it is gone, so the write fails.
    assert_eq!(g.write_at(100, b"part").unwrap_err().errno_name(), "EIO");
    assert_eq!(g.read_at(0, &mut [0u8; 8]).unwrap_err().errno_name(), "EIO");
    assert_eq!(g.stat().lost_bytes, BS);
    assert!(fs.shutdown_reason().is_none());
    drop((f, g));
    assert_fsck(&*dev);
}

/// A report over the 1 MiB after the start of a 64 MiB device (the log's
/// last block, the first tree nodes, a 100 KB file, a larger file's first
/// blocks, free space), as `daxfs io -c "inject-error 0x100000 1m"` after
/// `daxfs put` makes it: the range leaves the allocator before the report
/// allocates anything, so the nodes it makes (error log, loss tree,
/// bad-block tree, the moved nodes, the free-space and reverse-map trees'
/// own) all lie outside, and the nodes that were inside moved. A scrub
/// finds nothing left to do, the range can be cleared, and file data
/// outside it reads as before.
#[test]
fn a_report_leaves_no_metadata_in_its_range() {
    let (dev, fs) = new_fs(64);
    let (b0, n) = (256u64, 256u64);
    let small = file_with(&fs, "/small", &pattern(3, 100 * 1024));
    // Free space inside the range, where a report's first allocations
    // would go, and a file from inside to past it.
    drop(file_with(&fs, "/gap", &pattern(5, 150 * BS as usize)));
    let big_data = pattern(4, 200 * BS as usize);
    let big = file_with(&fs, "/big", &big_data);
    fs.unlink("/gap").unwrap();
    fs.sync().unwrap();
    let owned = |fs: &Fs| {
        fs.fsmap(b0, n)
            .unwrap()
            .into_iter()
            .filter(|r| r.metadata)
            .map(|r| format!("{:#x} {:?}", r.physical, r.owner))
            .collect::<Vec<_>>()
    };
    assert!(!owned(&fs).is_empty(), "the range holds metadata before");
    let inside = |f: &File, off: u64| (b0 * BS..(b0 + n) * BS).contains(&phys_of(f, off));
    assert!(inside(&small, 0) && inside(&big, 0) && !inside(&big, 199 * BS));
    fs.inject_error(b0 * BS, n * BS).unwrap();
    assert_eq!(owned(&fs), Vec::<String>::new());
    assert_eq!(fs.bad_ranges().unwrap(), vec![(b0 * BS, n * BS)]);
    // The blocks of /big past the range read as written.
    let check_outside = |fs: &Fs| {
        let big = fs.open("/big", &OpenOptions::read_only()).unwrap();
        let mut outside = 0;
        for b in 0..200 {
            if inside(&big, b * BS) {
                continue;
            }
            let mut buf = vec![0u8; BS as usize];
            big.read_at(b * BS, &mut buf).unwrap();
            let at = (b * BS) as usize;
            assert!(buf == big_data[at..at + BS as usize], "block {b}");
            outside += 1;
        }
        assert!(outside > 100, "{outside} blocks outside");
    };
    check_outside(&fs);
    let rep = fs.scrub(false, &mut |_, _, _| {}).unwrap();
    assert!(rep.problems.is_empty(), "{:#?}", rep.problems);
    fs.clear_bad_range(b0 * BS, n * BS).unwrap();
    assert!(fs.bad_ranges().unwrap().is_empty());
    assert!(dev.bad_ranges().is_empty());
    check_outside(&fs);
    drop((small, big));
    let fs = remount(&dev, fs);
    check_outside(&fs);
    drop(fs);
    assert_fsck(&*dev);
}
