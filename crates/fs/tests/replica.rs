//! Metadata replicas: every kind of metadata block damaged (overwritten with
//! garbage while unmounted, or reported bad while mounted), read through its
//! replica, repaired onto a fresh block; both copies bad shuts down without
//! losing committed data; a repair survives a crash at every persist point.
mod common;
use common::*;
use daxfs::{FileKind, Fs, MkfsOptions, MountOptions, OpenOptions, ReplicaPair};
use daxfs_device::{CrashDevice, Device, MemDevice, Subset};
use std::collections::BTreeMap;
use std::sync::Arc;

const BS: u64 = 4096;
const FILES: usize = 160;

/// Every name and its contents (directories as None).
type State = BTreeMap<String, Option<Vec<u8>>>;

fn snapshot(fs: &Fs) -> State {
    let mut out = State::new();
    let mut stack = vec!["/".to_string()];
    while let Some(d) = stack.pop() {
        for e in fs.readdir(&d).expect("readdir") {
            let p = if d == "/" {
                format!("/{}", e.name_lossy())
            } else {
                format!("{d}/{}", e.name_lossy())
            };
            match e.kind {
                FileKind::Dir => {
                    out.insert(p.clone(), None);
                    stack.push(p);
                }
                FileKind::Symlink => {
                    out.insert(p.clone(), Some(fs.readlink(&p).expect("readlink")));
                }
                _ if e.kind.is_special() => {
                    out.insert(p, None);
                }
                _ => {
                    let f = fs.open(&p, &OpenOptions::read_only()).expect("open");
                    let mut buf = vec![0u8; f.stat().size as usize];
                    // A file with lost blocks reads up to them.
                    let n = f.read_at(0, &mut buf).unwrap_or(0);
                    buf.truncate(n);
                    out.insert(p, Some(buf));
                }
            }
        }
    }
    out
}

/// A file system holding every kind of metadata: many files in two
/// directories (multi-level inode table, directory and reverse-map trees),
/// a multi-level extent tree, clones (refcount tree), a media error in a
/// file (data-loss tree, error log, bad-block tree).
fn populated() -> (Arc<MemDevice>, Fs) {
    let (dev, fs) = new_fs(16);
    fs.mkdir("/d", 0o755).unwrap();
    for i in 0..FILES {
        let dir = if i % 2 == 0 { "/d" } else { "" };
        let f = fs.create(format!("{dir}/f{i:03}")).unwrap();
        f.write_at(0, &pattern(i as u64, 100 + i * 37)).unwrap();
    }
    // Every other block written: one extent each, over several leaves.
    let big = fs.create("/big").unwrap();
    for b in 0..400u64 {
        big.write_at(b * 2 * BS, &pattern(1000 + b, 100)).unwrap();
    }
    let src = fs.create("/src").unwrap();
    src.write_at(0, &pattern(7, 5 * BS as usize)).unwrap();
    let cl = fs.create("/clone").unwrap();
    cl.clone_from(&src).unwrap();
    let lost = fs.create("/lost").unwrap();
    lost.write_at(0, &pattern(8, 3 * BS as usize)).unwrap();
    let p = lost.fiemap().unwrap()[0].physical;
    fs.inject_error(p + BS, BS).unwrap();
    fs.sync().unwrap();
    drop((big, src, cl, lost));
    (dev, fs)
}

/// Reads and touches everything: every file and directory, paths, owners,
/// the error log, bad ranges; then a transaction, which runs the repairs the
/// reads queued.
fn exercise(fs: &Fs) -> State {
    let st = snapshot(fs);
    let ino = fs.stat("/d/f000").unwrap().ino;
    assert_eq!(fs.paths(ino).unwrap(), vec!["/d/f000".to_string()]);
    fs.fsmap(0, u64::MAX).unwrap();
    fs.error_log().unwrap();
    fs.bad_ranges().unwrap();
    fs.stat("/").unwrap();
    // Reads take no lock and run no repair: a sync does.
    fs.sync().unwrap();
    st
}

/// New work succeeds: create, write, clone, unlink.
fn new_work(fs: &Fs, tag: u64) {
    let name = format!("/new{tag}");
    let f = fs.create(&name).unwrap();
    f.write_at(0, &pattern(tag, 3 * BS as usize + 5)).unwrap();
    f.fsync().unwrap();
    let c = fs.create(format!("{name}c")).unwrap();
    c.clone_from(&f).unwrap();
    fs.unlink("/d/f002").ok();
    fs.mkdir(format!("{name}d"), 0o755).unwrap();
}

fn pairs(fs: &Fs) -> Vec<ReplicaPair> {
    fs.replica_pairs().unwrap()
}

fn bad_blocks(fs: &Fs) -> Vec<u64> {
    fs.bad_ranges()
        .unwrap()
        .into_iter()
        .flat_map(|(o, l)| (o / BS)..(o + l) / BS)
        .collect()
}

fn garbage(dev: &dyn Device, b: u64) {
    dev.write(b * BS, &pattern(b ^ 0xbad, BS as usize)).unwrap();
    dev.persist(b * BS, BS);
}

fn remount_mem(dev: &Arc<MemDevice>) -> Fs {
    Fs::mount(dev.clone(), &MountOptions::default()).expect("mount")
}

const KINDS: [&str; 10] = [
    "inode table",
    "directory block",
    "extent-tree block",
    "free-space tree",
    "refcount tree",
    "reverse-map tree",
    "parent-pointer tree",
    "error log",
    "data-loss tree",
    "bad-block tree",
];

/// Every node of every kind (up to `per_kind` of each: the root and leaves
/// at both ends), overwritten with garbage while unmounted: the file system
/// reads through the replica, moves the node to a fresh block, keeps the
/// replica, quarantines the old block; fsck is clean; new work succeeds,
/// also after a remount.
#[test]
fn garbage_in_every_kind_of_node_is_repaired() {
    let (dev, fs) = populated();
    let before = exercise(&fs);
    let all = pairs(&fs);
    drop(fs);
    assert_fsck(&*dev);
    let image = dev.image();
    let mut done = 0;
    for kind in KINDS {
        let nodes: Vec<&ReplicaPair> = all.iter().filter(|p| p.kind == kind).collect();
        assert!(!nodes.is_empty(), "no {kind} node");
        let picks: Vec<&ReplicaPair> = if kind == "reverse-map tree" {
            nodes.clone()
        } else {
            let mut v = vec![nodes[0], nodes[nodes.len() / 2], nodes[nodes.len() - 1]];
            v.dedup();
            v
        };
        for p in picks {
            let dev = Arc::new(MemDevice::from_image(image.clone()));
            garbage(&*dev, p.block);
            eprintln!("damaging {kind} block {} (replica {})", p.block, p.replica);
            let fs = remount_mem(&dev);
            assert_eq!(exercise(&fs), before, "{kind} block {}", p.block);
            let now = pairs(&fs);
            let moved = now
                .iter()
                .find(|q| q.replica == p.replica)
                .unwrap_or_else(|| panic!("{kind} block {}: replica gone", p.block));
            assert_ne!(
                moved.block, p.block,
                "{kind} block {} did not move",
                p.block
            );
            assert_eq!(moved.kind, kind);
            assert!(now.iter().all(|q| q.block != p.block));
            assert!(bad_blocks(&fs).contains(&p.block));
            let owners = fs.owners(moved.block, 1).unwrap();
            assert!(owners.iter().any(|o| o.metadata), "{owners:?}");
            assert!(
                fs.error_log()
                    .unwrap()
                    .iter()
                    .any(|e| e.action == "repaired" && e.physical == p.block * BS)
            );
            drop(fs);
            assert_fsck(&*dev);
            let fs = remount_mem(&dev);
            new_work(&fs, 1);
            drop(fs);
            assert_fsck(&*dev);
            let fs = remount_mem(&dev);
            let st = snapshot(&fs);
            assert_eq!(
                st.get("/new1"),
                Some(&Some(pattern(1, 3 * BS as usize + 5)))
            );
            assert_eq!(st.get("/src"), before.get("/src"));
            drop(fs);
            done += 1;
        }
    }
    assert!(done >= KINDS.len());
}

/// The orphan list's node overwritten with garbage while a file unlinked
/// but open was on it (a crash): mount reads the list through the replica
/// and frees the file.
#[test]
fn garbage_in_the_orphan_list_is_read_through_the_replica() {
    let (dev, fs) = populated();
    let before = exercise(&fs);
    let f = fs.create("/orphan").unwrap();
    f.write_at(0, &pattern(99, 3 * BS as usize)).unwrap();
    fs.unlink("/orphan").unwrap();
    let p = pairs(&fs)
        .into_iter()
        .find(|p| p.kind == "orphan list")
        .unwrap();
    // The device as a power failure would leave it now.
    let img = Arc::new(MemDevice::from_image(dev.image()));
    drop((f, fs));
    garbage(&*img, p.block);
    let fs = remount_mem(&img);
    assert!(fs.stat("/orphan").is_err());
    assert_eq!(exercise(&fs), before);
    assert!(pairs(&fs).iter().all(|q| q.kind != "orphan list"));
    new_work(&fs, 8);
    drop(fs);
    assert_fsck(&*img);
}

/// Each kind of node reported bad while mounted: repaired in the report's
/// transaction, the old block quarantined; fsck clean; work goes on.
#[test]
fn reported_bad_node_of_every_kind_is_repaired() {
    let (dev, fs) = populated();
    let before = exercise(&fs);
    drop(fs);
    let image = dev.image();
    for kind in KINDS.iter().chain(&["orphan list"]) {
        let dev = Arc::new(MemDevice::from_image(image.clone()));
        let fs = remount_mem(&dev);
        // An open, unlinked file keeps an orphan-list node.
        let orphan = fs.create("/orphan").unwrap();
        fs.unlink("/orphan").unwrap();
        let all = pairs(&fs);
        let p = all
            .iter()
            .find(|p| p.kind == *kind)
            .unwrap_or_else(|| panic!("no {kind} node"))
            .clone();
        let ev = fs.inject_error(p.block * BS, BS).unwrap();
        assert!(ev.iter().any(|e| e.action == "repaired"), "{kind}: {ev:?}");
        assert!(fs.shutdown_reason().is_none());
        let now = pairs(&fs);
        let moved = now.iter().find(|q| q.replica == p.replica).unwrap();
        assert_ne!(moved.block, p.block);
        assert!(bad_blocks(&fs).contains(&p.block));
        assert!(dev.bad_ranges().contains(&(p.block * BS, BS)));
        drop(orphan);
        assert_eq!(exercise(&fs), before, "{kind}");
        new_work(&fs, 2);
        drop(fs);
        assert_fsck(&*dev);
        let fs = remount_mem(&dev);
        assert!(snapshot(&fs).contains_key("/new2"));
        drop(fs);
        assert_fsck(&*dev);
    }
}

/// A bad replica is rebuilt from its node (the node stays put).
#[test]
fn reported_bad_replica_is_rebuilt() {
    let (dev, fs) = populated();
    let before = exercise(&fs);
    for kind in KINDS {
        let p = pairs(&fs).into_iter().find(|p| p.kind == kind).unwrap();
        eprintln!("replica of {kind} block {} at {}", p.block, p.replica);
        let ev = fs.inject_error(p.replica * BS, BS).unwrap();
        assert!(ev.iter().any(|e| e.action == "repaired"), "{kind}: {ev:?}");
        let q = pairs(&fs).into_iter().find(|q| q.block == p.block).unwrap();
        assert_ne!(q.replica, p.replica);
    }
    assert_eq!(exercise(&fs), before);
    new_work(&fs, 3);
    drop(fs);
    assert_fsck(&*dev);
}

/// A replica overwritten with garbage is found and rebuilt by a scrub; fsck
/// reports it until then.
#[test]
fn scrub_rebuilds_damaged_replicas_and_nodes() {
    let (dev, fs) = populated();
    let all = pairs(&fs);
    let inode = all.iter().find(|p| p.kind == "inode table").unwrap();
    let dir = all.iter().find(|p| p.kind == "directory block").unwrap();
    garbage(&*dev, inode.replica);
    garbage(&*dev, dir.block);
    drop(fs);
    let rep = daxfs::fsck::fsck(&*dev, &mut |_, _, _| {}).unwrap();
    assert!(
        rep.problems
            .iter()
            .any(|p| p.block == Some(inode.replica) && p.message.contains("scrub")),
        "{:#?}",
        rep.problems
    );
    assert!(
        rep.problems
            .iter()
            .any(|p| p.block == Some(dir.block) && p.message.contains("its replica")),
        "{:#?}",
        rep.problems
    );
    let fs = remount_mem(&dev);
    let s = fs.scrub_replicas().unwrap();
    assert_eq!((s.repaired_nodes, s.repaired_replicas), (1, 1), "{s:?}");
    assert!(s.checked as usize >= all.len() - 1);
    drop(fs);
    assert_fsck(&*dev);
}

/// Superblock copy A or B overwritten: mount uses the other and rewrites
/// the bad one; reported bad while mounted: the commit rewrites it.
#[test]
fn superblock_copies_are_repaired() {
    let (dev, fs) = populated();
    let before = exercise(&fs);
    let total = fs.info().total_blocks;
    drop(fs);
    let image = dev.image();
    for b in [0, total - 1] {
        let dev = Arc::new(MemDevice::from_image(image.clone()));
        garbage(&*dev, b);
        let fs = remount_mem(&dev);
        assert!(
            fs.error_log()
                .unwrap()
                .iter()
                .any(|e| e.action == "repaired" && e.physical == b * BS)
        );
        assert_eq!(exercise(&fs), before);
        drop(fs);
        assert_fsck(&*dev);
        let fs = remount_mem(&dev);
        new_work(&fs, 7);
        // Poisoned while mounted: the report's commit rewrites the whole
        // copy through the device's recovery write.
        let ev = fs.inject_error(b * BS, BS).unwrap();
        assert!(ev.iter().any(|e| e.action == "repaired"), "{ev:?}");
        drop(fs);
        assert_fsck(&*dev);
        let fs = remount_mem(&dev);
        new_work(&fs, 4);
        drop(fs);
        assert_fsck(&*dev);
    }
}

/// A bad block in the log or its replica region: the region hit is
/// replaced by a fresh one.
#[test]
fn log_blocks_are_repaired() {
    let (dev, fs) = populated();
    let before = exercise(&fs);
    drop(fs);
    let image = dev.image();
    for replica_side in [false, true] {
        let dev = Arc::new(MemDevice::from_image(image.clone()));
        let fs = remount_mem(&dev);
        let info = fs.info();
        assert!(info.replicas);
        let hit = if replica_side {
            info.log_replica + 1
        } else {
            info.log_start + 1
        };
        let ev = fs.inject_error(hit * BS, BS).unwrap();
        assert!(ev.iter().any(|e| e.action == "repaired"), "{ev:?}");
        let now = fs.info();
        if replica_side {
            assert_eq!(now.log_start, info.log_start);
            assert_ne!(now.log_replica, info.log_replica);
        } else {
            assert_ne!(now.log_start, info.log_start);
            assert_eq!(now.log_replica, info.log_replica);
        }
        assert_ne!(now.log_replica, 0);
        // The replica region copies the descriptors and the first image.
        let mirrored = daxfs_format::superblock::log_mirror_blocks(now.log_blocks);
        assert!(
            !(now.log_start..now.log_start + now.log_blocks).contains(&hit)
                && !(now.log_replica..now.log_replica + mirrored).contains(&hit)
        );
        assert!(bad_blocks(&fs).contains(&hit));
        new_work(&fs, 5);
        assert_eq!(
            snapshot(&fs).get("/src"),
            before.get("/src"),
            "replica side {replica_side}"
        );
        drop(fs);
        assert_fsck(&*dev);
        let fs = remount_mem(&dev);
        assert!(snapshot(&fs).contains_key("/new5"));
        drop(fs);
        assert_fsck(&*dev);
    }
}

/// A garbage log block at mount: harmless when the log holds nothing to
/// replay, and rewritten by the next commit.
#[test]
fn garbage_log_block_is_rewritten() {
    let (dev, fs) = populated();
    let info = fs.info();
    let before = exercise(&fs);
    drop(fs);
    for b in [info.log_start, info.log_start + 2, info.log_replica] {
        garbage(&*dev, b);
    }
    let fs = remount_mem(&dev);
    assert_eq!(exercise(&fs), before);
    new_work(&fs, 6);
    drop(fs);
    assert_fsck(&*dev);
}

/// Both copies of a directory block bad: the read fails with EIO, the file
/// system shuts down (writes fail with EIO), files elsewhere still read,
/// nothing committed is lost, and fsck names the block and says what to do.
#[test]
fn both_copies_bad_shuts_down_without_losing_committed_data() {
    let (dev, fs) = populated();
    let before = exercise(&fs);
    let dir_ino = fs.stat("/d").unwrap().ino;
    let p = pairs(&fs)
        .into_iter()
        .find(|p| p.kind == "directory block" && p.ino == dir_ino)
        .unwrap();
    drop(fs);
    garbage(&*dev, p.block);
    garbage(&*dev, p.replica);
    let fs = remount_mem(&dev);
    // Files outside /d read as before.
    let f = fs.open("/f001", &OpenOptions::read_only()).unwrap();
    let mut buf = vec![0u8; 200];
    let n = f.read_at(0, &mut buf).unwrap();
    assert_eq!(
        Some(&buf[..n].to_vec()),
        before.get("/f001").unwrap().as_ref()
    );
    let e = fs.readdir("/d").unwrap_err();
    assert_eq!(e.errno_name(), "EIO");
    assert_eq!(fs.create("/x").unwrap_err().errno_name(), "EIO");
    assert!(fs.shutdown_reason().unwrap().contains("both bad"));
    assert_eq!(fs.mkdir("/y", 0o755).unwrap_err().errno_name(), "EIO");
    // Reads go on.
    for (k, v) in &before {
        if k.starts_with("/d/") || k == "/d" {
            continue;
        }
        if let Some(data) = v {
            let f = fs.open(k, &OpenOptions::read_only()).unwrap();
            let mut buf = vec![0u8; data.len()];
            let n = f.read_at(0, &mut buf).unwrap_or(0);
            assert_eq!(&buf[..n], &data[..n.min(data.len())], "{k}");
            assert!(n == data.len() || k == "/lost", "{k}");
        }
    }
    assert!(
        fs.error_log()
            .unwrap()
            .iter()
            .any(|e| e.action == "shut down" && e.physical == p.block * BS)
    );
    drop((f, fs));
    let rep = daxfs::fsck::fsck(&*dev, &mut |_, _, _| {}).unwrap();
    let pr = rep
        .problems
        .iter()
        .find(|x| x.block == Some(p.block) && x.message.contains("both bad"))
        .unwrap_or_else(|| panic!("{:#?}", rep.problems));
    assert!(pr.message.contains("copy them off"), "{pr}");
    // A remount still reads what it can.
    let fs = remount_mem(&dev);
    let f = fs.open("/src", &OpenOptions::read_only()).unwrap();
    let mut buf = vec![0u8; 5 * BS as usize];
    assert_eq!(f.read_at(0, &mut buf).unwrap(), buf.len());
    assert_eq!(Some(&buf), before.get("/src").unwrap().as_ref());
}

/// Made without replicas: no pairs, no log replica; a damaged node is an
/// error, and everything else works as before.
#[test]
fn no_replicas_works() {
    let dev = Arc::new(MemDevice::new(16 << 20));
    let opts = MkfsOptions {
        no_replicas: true,
        ..Default::default()
    };
    Fs::mkfs(dev.clone(), &opts).unwrap();
    let fs = remount_mem(&dev);
    assert!(!fs.info().replicas);
    assert_eq!(fs.info().log_replica, 0);
    for i in 0..40 {
        let f = fs.create(format!("/f{i}")).unwrap();
        f.write_at(0, &pattern(i, 5000)).unwrap();
    }
    let c = fs.create("/c").unwrap();
    c.clone_from(&fs.open("/f1", &OpenOptions::read_only()).unwrap())
        .unwrap();
    assert!(pairs(&fs).is_empty());
    assert_eq!(fs.scrub_replicas().unwrap(), Default::default());
    drop((c, fs));
    assert_fsck(&*dev);
}

/// Allocation keeps nodes and replicas in opposite halves of the device.
#[test]
fn replicas_lie_in_the_other_half() {
    let (_dev, fs) = populated();
    let half = fs.info().total_blocks / 2;
    let all = pairs(&fs);
    assert!(all.len() > 30);
    for p in &all {
        assert_ne!(p.block < half, p.replica < half, "{p:?}");
    }
}

/// A crash at every persist point of a repair (a node read through its
/// replica and moved): every image mounts, checks clean after the repair is
/// redone or finished, and holds every file.
#[test]
fn crash_during_repair() {
    let dev = Arc::new(CrashDevice::new(8 << 20));
    Fs::mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
    let target;
    {
        let fs = Fs::mount(dev.clone(), &MountOptions::default()).unwrap();
        fs.mkdir("/d", 0o755).unwrap();
        for i in 0..40u64 {
            let f = fs.create(format!("/d/f{i}")).unwrap();
            f.write_at(0, &pattern(i, 300)).unwrap();
        }
        target = fs
            .replica_pairs()
            .unwrap()
            .into_iter()
            .find(|p| p.kind == "inode table")
            .unwrap();
    }
    garbage(&*dev, target.block);
    dev.reset_recording();
    let want = {
        let fs = Fs::mount(dev.clone(), &MountOptions::default()).unwrap();
        let st = snapshot(&fs);
        fs.stat("/").unwrap();
        assert!(
            fs.replica_pairs()
                .unwrap()
                .iter()
                .all(|p| p.block != target.block)
        );
        st
    };
    let total = dev.fences();
    assert!(total > 4, "the repair persisted in {total} fences");
    let mut replay = dev.replay();
    for k in 0..total {
        replay.seek_after_fence(k);
        for sub in [Subset::None, Subset::All, Subset::Random(k as u64)] {
            let img = Arc::new(MemDevice::from_image(replay.image(sub)));
            let fs = Fs::mount(img.clone(), &MountOptions::default())
                .unwrap_or_else(|e| panic!("mount after crash at fence {k} ({sub:?}): {e}"));
            assert_eq!(snapshot(&fs), want, "crash at fence {k} ({sub:?})");
            fs.stat("/").unwrap();
            drop(fs);
            let rep = daxfs::fsck::fsck(&*img, &mut |_, _, _| {}).unwrap();
            assert!(
                rep.is_clean(),
                "fsck after crash at fence {k} ({sub:?}): {:#?}",
                rep.problems
            );
        }
    }
}

/// A transaction committed but not checkpointed when the power failed, with
/// a block of the log damaged: the commit record and the superblock's image
/// are read from the log's replica region, a node's image from the node's
/// replica once the checkpoint wrote it; before that no home was written and
/// the transaction is undone. Each crash image mounts and checks clean.
#[test]
fn recovery_reads_the_log_replica() {
    let dev = Arc::new(CrashDevice::new(8 << 20));
    Fs::mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
    let (log_start, log_replica) = {
        let fs = Fs::mount(dev.clone(), &MountOptions::default()).unwrap();
        let i = fs.info();
        (i.log_start, i.log_replica)
    };
    dev.reset_recording();
    // The mkdir's commit (the unmount may put the reverse map's pending
    // records in its nodes in one more).
    let made = {
        let fs = Fs::mount(dev.clone(), &MountOptions::default()).unwrap();
        fs.mkdir("/made", 0o755).unwrap();
        fs.info().generation
    };
    let total = dev.fences();
    let mut replay = dev.replay();
    let (mut replayed, mut undone) = ([0; 4], [0; 4]);
    for k in 0..total {
        replay.seek_after_fence(k);
        for (damage, sub) in (0..4).flat_map(|d| {
            [Subset::None, Subset::All, Subset::Random(k as u64)].map(move |s| (d, s))
        }) {
            let img = Arc::new(MemDevice::from_image(replay.image(sub)));
            // The commit record, the superblock's image, the replica
            // region's commit record, a node's image.
            let b = [log_start, log_start + 1, log_replica, log_start + 2][damage];
            garbage(&*img, b);
            let fs = Fs::mount(img.clone(), &MountOptions::default())
                .unwrap_or_else(|e| panic!("mount at fence {k} ({sub:?}), damage {damage}: {e}"));
            match fs.recovery() {
                daxfs::journal::Recovery::Replayed { .. } => {
                    replayed[damage] += 1;
                    assert!(fs.stat("/made").is_ok(), "fence {k}, damage {damage}");
                }
                daxfs::journal::Recovery::RolledBack { seq } => {
                    undone[damage] += 1;
                    assert_eq!(
                        fs.stat("/made").is_err(),
                        *seq <= made,
                        "fence {k}, damage {damage}, transaction {seq} undone"
                    );
                }
                daxfs::journal::Recovery::Clean => {}
            }
            drop(fs);
            assert_fsck(&*img);
        }
    }
    assert!(replayed.iter().all(|&n| n > 0), "replayed {replayed:?}");
    assert_eq!(undone[..3], [0, 0, 0]);
    assert!(undone[3] > 0, "undone {undone:?}");
}

/// A crash at every persist point of repairs made for media-error reports:
/// a reverse-map node, a replica, and a log block (the log moving to its
/// replica region). Every image mounts, checks clean and holds every file.
#[test]
fn crash_during_reported_repairs() {
    let dev = Arc::new(CrashDevice::new(8 << 20));
    Fs::mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
    {
        let fs = Fs::mount(dev.clone(), &MountOptions::default()).unwrap();
        for i in 0..120u64 {
            let f = fs.create(format!("/f{i}")).unwrap();
            f.write_at(0, &pattern(i, 200)).unwrap();
        }
    }
    dev.reset_recording();
    let want = {
        let fs = Fs::mount(dev.clone(), &MountOptions::default()).unwrap();
        let all = fs.replica_pairs().unwrap();
        let rm: Vec<&ReplicaPair> = all
            .iter()
            .filter(|p| p.kind == "reverse-map tree")
            .collect();
        assert!(rm.len() > 1, "one reverse-map node");
        let leaf = rm[rm.len() - 1];
        let ev = fs.inject_error(leaf.block * BS, BS).unwrap();
        assert!(ev.iter().any(|e| e.action == "repaired"));
        let ev = fs.inject_error(rm[0].replica * BS, BS).unwrap();
        assert!(ev.iter().any(|e| e.action == "repaired"));
        let log = fs.info().log_start + 1;
        let ev = fs.inject_error(log * BS, BS).unwrap();
        assert!(ev.iter().any(|e| e.action == "repaired"));
        snapshot(&fs)
    };
    let total = dev.fences();
    let mut replay = dev.replay();
    for k in 0..total {
        replay.seek_after_fence(k);
        for sub in [Subset::None, Subset::All, Subset::Random(k as u64 * 31)] {
            let img = Arc::new(MemDevice::from_image(replay.image(sub)));
            let fs = Fs::mount(img.clone(), &MountOptions::default())
                .unwrap_or_else(|e| panic!("mount after crash at fence {k} ({sub:?}): {e}"));
            assert_eq!(snapshot(&fs), want, "crash at fence {k} ({sub:?})");
            drop(fs);
            let rep = daxfs::fsck::fsck(&*img, &mut |_, _, _| {}).unwrap();
            assert!(
                rep.is_clean(),
                "fsck after crash at fence {k} ({sub:?}): {:#?}",
                rep.problems
            );
        }
    }
}

/// A file system of 600 small files in two directories: about 150 tree
/// nodes with replicas. `log_blocks`: the log's size (None: the default).
fn many_nodes(log_blocks: Option<u64>) -> (Arc<MemDevice>, Fs) {
    let dev = Arc::new(MemDevice::new(16 << 20));
    let opts = MkfsOptions {
        log_blocks,
        ..Default::default()
    };
    Fs::mkfs(dev.clone(), &opts).unwrap();
    let fs = remount_mem(&dev);
    fs.mkdir("/d", 0o755).unwrap();
    for i in 0..600 {
        let dir = if i % 2 == 0 { "/d" } else { "" };
        let f = fs.create(format!("{dir}/f{i:03}")).unwrap();
        f.write_at(0, &pattern(i as u64, 100 + i * 37)).unwrap();
    }
    fs.sync().unwrap();
    (dev, fs)
}

/// Overwrites the replicas of the first `n` replicated tree nodes (the
/// nodes stay intact) while unmounted; returns how many it damaged.
fn damage_replicas(dev: &Arc<MemDevice>, fs: Fs, n: usize) -> usize {
    let all: Vec<ReplicaPair> = pairs(&fs).into_iter().filter(|p| p.kind != "log").collect();
    drop(fs);
    for p in all.iter().take(n) {
        garbage(&**dev, p.replica);
    }
    n.min(all.len())
}

/// fsck's problems other than replicas a scrub rebuilds.
fn problems_but_replicas(dev: &dyn Device) -> Vec<String> {
    daxfs::fsck::fsck(dev, &mut |_, _, _| {})
        .unwrap()
        .problems
        .into_iter()
        .filter(|p| !p.message.contains("a scrub rebuilds it"))
        .map(|p| format!("{}: {:?}: {}", p.structure, p.block, p.message))
        .collect()
}

/// 100, 150 and every replica of about 150 tree nodes damaged (nodes
/// intact), with the default log and with one of 64 blocks: scrub rebuilds
/// them in steps (each a transaction of its own, each pair looked up
/// afresh, as every repair changes the trees), fsck is clean, every file
/// reads as before, and a second scrub finds nothing to do.
#[test]
fn scrub_rebuilds_any_number_of_damaged_replicas() {
    for log in [None, Some(64)] {
        for n in [100, 150, usize::MAX] {
            let (dev, fs) = many_nodes(log);
            let before = snapshot(&fs);
            let damaged = damage_replicas(&dev, fs, n);
            assert!(damaged >= 100, "{damaged} pairs");
            let fs = remount_mem(&dev);
            let rep = fs.scrub(false, &mut |_, _, _| {}).unwrap();
            assert!(rep.clean(), "log {log:?}, {n} damaged: {:#?}", rep.problems);
            let again = fs.scrub_replicas().unwrap();
            assert_eq!(
                (again.repaired_nodes, again.repaired_replicas),
                (0, 0),
                "log {log:?}, {n} damaged"
            );
            assert!(
                snapshot(&fs) == before,
                "log {log:?}, {n} damaged: contents changed"
            );
            drop(fs);
            assert_fsck(&*dev);
            let fs = remount_mem(&dev);
            assert!(
                snapshot(&fs) == before,
                "log {log:?}, {n} damaged: contents changed"
            );
        }
    }
}

/// A scrub on a full device (nothing left to ordinary allocations) still
/// rebuilds every damaged copy: repairs take their blocks from the metadata
/// reserve. (That each step is whole or not at all, whatever stops it, is
/// `crash_during_a_scrub_in_steps`.)
#[test]
fn scrub_on_a_full_device_rebuilds_from_the_reserve() {
    let (dev, fs) = many_nodes(Some(64));
    let fill = fs.create("/fill").unwrap();
    let keep = daxfs::FallocFlags {
        keep_size: true,
        ..Default::default()
    };
    // Fill until not even one block more can be preallocated.
    let mut at = 0;
    let mut n = 512;
    while n > 0 {
        match fill.fallocate(keep, at * BS, n * BS) {
            Ok(()) => at += n,
            Err(e) => {
                assert_eq!(e.errno(), libc::ENOSPC, "{e}");
                n /= 2;
            }
        }
    }
    assert!(fs.info().available_blocks <= 16, "{:?}", fs.info());
    drop(fill);
    fs.sync().unwrap();
    let before = snapshot(&fs);
    let damaged = damage_replicas(&dev, fs, usize::MAX);
    assert!(damaged > 100, "{damaged} damaged");
    let fs = remount_mem(&dev);
    let s = fs.scrub_replicas().unwrap();
    // (Some damaged replicas belong to nodes the repairs free or move.)
    assert!(s.repaired_replicas > 100, "{s:?} of {damaged}");
    assert_eq!(fs.scrub_replicas().unwrap().repaired_replicas, 0);
    assert!(snapshot(&fs) == before, "contents changed");
    drop(fs);
    assert_fsck(&*dev);
    let fs = remount_mem(&dev);
    fs.unlink("/fill").unwrap();
    let rep = fs.scrub(false, &mut |_, _, _| {}).unwrap();
    assert!(rep.clean(), "{:#?}", rep.problems);
    drop(fs);
    assert_fsck(&*dev);
}

/// A crash at every persist point of a scrub that rebuilds five replicas
/// in five steps: every image mounts with every file as it was, fsck finds
/// nothing wrong but the replicas still to rebuild (each step whole or not
/// at all), and a scrub of the image then finishes, fsck clean.
#[test]
fn crash_during_a_scrub_in_steps() {
    let dev = Arc::new(CrashDevice::new(8 << 20));
    Fs::mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
    let (want, damaged) = {
        let fs = Fs::mount(dev.clone(), &MountOptions::default()).unwrap();
        fs.mkdir("/d", 0o755).unwrap();
        for i in 0..60u64 {
            let f = fs.create(format!("/d/f{i}")).unwrap();
            f.write_at(0, &pattern(i, 300)).unwrap();
        }
        let all: Vec<ReplicaPair> = pairs(&fs).into_iter().filter(|p| p.kind != "log").collect();
        (snapshot(&fs), all.into_iter().take(5).collect::<Vec<_>>())
    };
    assert_eq!(damaged.len(), 5);
    for p in &damaged {
        garbage(&*dev, p.replica);
    }
    {
        let fs = Fs::mount(dev.clone(), &MountOptions::default()).unwrap();
        dev.reset_recording();
        let s = fs.scrub_replicas().unwrap();
        assert_eq!(s.repaired_replicas, 5, "{s:?}");
    }
    let total = dev.fences();
    assert!(total > 20, "the scrub persisted in {total} fences");
    let mut replay = dev.replay();
    for k in 0..total {
        replay.seek_after_fence(k);
        for sub in [Subset::None, Subset::All, Subset::Random(k as u64)] {
            let img = Arc::new(MemDevice::from_image(replay.image(sub)));
            let at = format!("crash at fence {k} ({sub:?})");
            assert_eq!(problems_but_replicas(&*img), Vec::<String>::new(), "{at}");
            let fs = Fs::mount(img.clone(), &MountOptions::default())
                .unwrap_or_else(|e| panic!("mount after {at}: {e}"));
            assert!(snapshot(&fs) == want, "{at}: contents changed");
            let rep = fs.scrub(false, &mut |_, _, _| {}).unwrap();
            assert!(rep.clean(), "scrub after {at}: {:#?}", rep.problems);
            drop(fs);
            let rep = daxfs::fsck::fsck(&*img, &mut |_, _, _| {}).unwrap();
            assert!(rep.is_clean(), "fsck after {at}: {:#?}", rep.problems);
        }
    }
}
