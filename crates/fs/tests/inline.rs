//! Inline extents: a regular file keeps up to four extents in its inode
//! record and has an extent tree only once it maps more (FORMAT.md,
//! *InodeRecord*). Which files have a tree is read from the reverse map (an
//! extent tree's nodes and their replicas are its owner's "extent tree"
//! records).
mod common;
use common::*;
use daxfs::{DedupeStatus, FallocFlags, File, Fs, OpenOptions, OwnerKind};

const BS: u64 = 4096;

/// Blocks of inode `ino`'s extent tree: its nodes and their replicas.
fn tree_blocks(fs: &Fs, ino: u64) -> u64 {
    fs.fsmap(0, u64::MAX)
        .unwrap()
        .iter()
        .filter(|r| matches!(&r.owner, OwnerKind::File { ino: i, fork: "extent tree", .. } if *i == ino))
        .map(|r| r.length / BS)
        .sum()
}

/// Blocks holding metadata of any kind (trees, their replicas, the log).
fn metadata_blocks(fs: &Fs) -> u64 {
    fs.fsmap(0, u64::MAX)
        .unwrap()
        .iter()
        .filter(|r| r.metadata)
        .map(|r| r.length / BS)
        .sum()
}

fn contents(f: &File) -> Vec<u8> {
    let mut v = vec![0u8; f.stat().size as usize];
    assert_eq!(f.read_at(0, &mut v).unwrap(), v.len());
    v
}

fn extents(f: &File) -> usize {
    f.fiemap().unwrap().len()
}

/// Writes one block at file block `fb` into `f` and into `model`.
fn put_block(f: &File, model: &mut Vec<u8>, fb: u64, seed: u64) {
    let data = pattern(seed, BS as usize);
    f.write_at(fb * BS, &data).unwrap();
    let at = (fb * BS) as usize;
    if model.len() < at + data.len() {
        model.resize(at + data.len(), 0);
    }
    model[at..at + data.len()].copy_from_slice(&data);
}

fn punch(f: &File, off: u64, len: u64) {
    f.fallocate(
        FallocFlags {
            punch_hole: true,
            keep_size: true,
            ..Default::default()
        },
        off,
        len,
    )
    .unwrap();
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

fn fsck_now(fs: &Fs, dev: &daxfs_device::MemDevice) {
    fs.sync().unwrap();
    assert_fsck(dev);
}

/// N files of one block each: N data blocks and a few shared metadata
/// blocks (inode-table, directory, reverse-map leaves), no node per file.
/// With a tree per file each would also cost a node and its replica.
#[test]
fn small_files_use_no_extent_tree_node() {
    const N: u64 = 200;
    let (dev, fs) = new_fs(64);
    assert!(fs.info().replicas);
    let free0 = fs.info().free_blocks;
    let meta0 = metadata_blocks(&fs);
    for i in 0..N {
        let f = fs.create(format!("/f{i}")).unwrap();
        f.write_at(0, &pattern(i, BS as usize)).unwrap();
        f.fsync().unwrap();
        assert_eq!(f.stat().blocks, 8);
        assert_eq!(tree_blocks(&fs, f.ino()), 0, "file {i} has an extent tree");
    }
    let used = free0 - fs.info().free_blocks;
    let meta = metadata_blocks(&fs) - meta0;
    assert_eq!(all_tree_blocks(&fs), 0);
    assert_eq!(
        used,
        N + meta,
        "every block the files took is one of their data blocks or shared metadata"
    );
    // About 0.46 blocks per file (inode-table, directory and reverse-map
    // leaves, and their replicas); a tree per file adds 2 (node, replica).
    assert!(
        meta < N,
        "{meta} metadata blocks for {N} one-block files (a tree per file: {} more)",
        2 * N
    );
    fsck_now(&fs, &dev);
    let fs = remount(&dev, fs);
    for i in (0..N).step_by(17) {
        let f = fs
            .open(format!("/f{i}"), &OpenOptions::read_only())
            .unwrap();
        assert_eq!(contents(&f), pattern(i, BS as usize));
    }
    // Unlinking them gives every data block back.
    let free1 = fs.info().free_blocks;
    for i in 0..N {
        fs.unlink(format!("/f{i}")).unwrap();
    }
    assert!(fs.info().free_blocks >= free1 + N);
    drop(fs);
    assert_fsck(&*dev);
}

/// Four discontiguous pieces stay inline; the fifth builds a tree; the
/// tree stays when the file goes back to four (no moving back and forth at
/// the boundary); truncation to 0 frees it and the file is inline again.
/// Punching every block does the same.
#[test]
fn five_pieces_make_a_tree_and_truncate_to_zero_makes_it_inline_again() {
    let (dev, fs) = new_fs(16);
    let f = fs.create("/x").unwrap();
    let ino = f.ino();
    let meta_empty = metadata_blocks(&fs);
    let mut model = vec![];
    for i in 0..4 {
        put_block(&f, &mut model, 2 * i, i);
    }
    f.fsync().unwrap();
    assert_eq!(extents(&f), 4);
    assert_eq!(tree_blocks(&fs, ino), 0);
    assert_eq!(contents(&f), model);
    fsck_now(&fs, &dev);

    put_block(&f, &mut model, 8, 4);
    f.fsync().unwrap();
    assert_eq!(extents(&f), 5);
    assert_eq!(tree_blocks(&fs, ino), 2, "one node and its replica");
    assert_eq!(f.stat().blocks, 5 * 8);
    assert_eq!(contents(&f), model);
    fsck_now(&fs, &dev);
    drop(f);
    let fs = remount(&dev, fs);
    let f = fs.open("/x", &OpenOptions::read_write()).unwrap();
    assert_eq!(contents(&f), model);
    assert_eq!(tree_blocks(&fs, ino), 2);

    // Back to four extents: the tree stays.
    punch(&f, 8 * BS, BS);
    model[(8 * BS) as usize..].fill(0);
    assert_eq!(extents(&f), 4);
    assert_eq!(tree_blocks(&fs, ino), 2);
    assert_eq!(contents(&f), model);
    fsck_now(&fs, &dev);
    put_block(&f, &mut model, 8, 5);
    put_block(&f, &mut model, 12, 6);
    assert_eq!(extents(&f), 6);
    assert_eq!(tree_blocks(&fs, ino), 2);
    assert_eq!(contents(&f), model);
    fsck_now(&fs, &dev);

    // Nothing mapped: the tree is freed, the file is inline again.
    f.set_len(0).unwrap();
    assert_eq!(extents(&f), 0);
    assert_eq!(f.stat().blocks, 0);
    assert_eq!(tree_blocks(&fs, ino), 0);
    fsck_now(&fs, &dev);
    let mut model = vec![];
    put_block(&f, &mut model, 0, 7);
    put_block(&f, &mut model, 3, 8);
    assert_eq!(extents(&f), 2);
    assert_eq!(tree_blocks(&fs, ino), 0);
    assert_eq!(contents(&f), model);
    fsck_now(&fs, &dev);

    // Punching every block of a file with a tree frees the tree too; the
    // size stays (a sparse file mapping nothing).
    let g = fs.create("/y").unwrap();
    let mut gm = vec![];
    for i in 0..6 {
        put_block(&g, &mut gm, 3 * i, 10 + i);
    }
    assert_eq!(tree_blocks(&fs, g.ino()), 2);
    punch(&g, 0, gm.len() as u64);
    assert_eq!(extents(&g), 0);
    assert_eq!(tree_blocks(&fs, g.ino()), 0);
    assert_eq!(contents(&g), vec![0u8; gm.len()]);
    fsck_now(&fs, &dev);

    // Unlinked with a tree, or while open: everything is given back.
    put_block(&g, &mut gm, 1, 20);
    for i in 0..5 {
        put_block(&f, &mut model, 10 + 2 * i, 30 + i);
    }
    assert_eq!(tree_blocks(&fs, ino), 2);
    fs.unlink("/x").unwrap();
    fs.unlink("/y").unwrap();
    drop((f, g));
    assert_eq!(all_tree_blocks(&fs), 0);
    assert!(metadata_blocks(&fs) <= meta_empty + 4);
    let fs = remount(&dev, fs);
    drop(fs);
    assert_fsck(&*dev);
}

/// Clone, CoW writes, dedupe, punch, copy_range and a media error, on
/// files whose extents are inline (and one that grows a tree on the way);
/// contents checked and fsck clean after each step, and after a remount.
#[test]
fn inline_files_share_punch_and_lose_data() {
    let (dev, fs) = new_fs(32);
    let a = fs.create("/a").unwrap();
    let mut am = pattern(1, (3 * BS) as usize);
    a.write_at(0, &am).unwrap();
    put_block(&a, &mut am, 5, 2);
    assert_eq!(extents(&a), 2);

    // Clone: b maps a's blocks, inline.
    let b = fs.create("/b").unwrap();
    b.clone_from(&a).unwrap();
    let mut bm = am.clone();
    assert_eq!(contents(&b), bm);
    assert_eq!(tree_blocks(&fs, b.ino()), 0);
    assert!(b.fiemap().unwrap().iter().all(|e| e.shared));
    fsck_now(&fs, &dev);

    // Copy-on-write into the middle of b's first extent: four extents.
    put_block(&b, &mut bm, 1, 3);
    assert_eq!(extents(&b), 4);
    assert_eq!(tree_blocks(&fs, b.ino()), 0);
    assert_eq!(contents(&a), am);
    assert_eq!(contents(&b), bm);
    fsck_now(&fs, &dev);
    // A fifth: b builds its tree from the whole map, shared pieces and all.
    put_block(&b, &mut bm, 7, 4);
    assert_eq!(extents(&b), 5);
    assert_eq!(tree_blocks(&fs, b.ino()), 2);
    assert_eq!(contents(&b), bm);
    assert_eq!(contents(&a), am);
    fsck_now(&fs, &dev);

    // Clones of a file with a tree: the whole file (a tree), part of it
    // (inline).
    let e = fs.create("/e").unwrap();
    e.clone_from(&b).unwrap();
    assert_eq!(contents(&e), bm);
    assert_eq!(tree_blocks(&fs, e.ino()), 2);
    let g = fs.create("/g").unwrap();
    g.clone_range(&b, 0, 0, 2 * BS).unwrap();
    assert_eq!(contents(&g), bm[..(2 * BS) as usize]);
    assert_eq!(tree_blocks(&fs, g.ino()), 0);
    fsck_now(&fs, &dev);

    // Dedupe: c's copy of a's first three blocks becomes a's blocks.
    let c = fs.create("/c").unwrap();
    let cm = am[..(3 * BS) as usize].to_vec();
    c.write_at(0, &cm).unwrap();
    let r = a.dedupe_range(0, 3 * BS, &[(&c, 0)]).unwrap();
    assert_eq!(r[0].status, DedupeStatus::Same);
    assert_eq!(phys_of(&c, BS), phys_of(&a, BS));
    assert_eq!(contents(&c), cm);
    assert_eq!(tree_blocks(&fs, c.ino()), 0);
    fsck_now(&fs, &dev);

    // Punch a hole in a: three extents, the others keep their blocks.
    punch(&a, BS, BS);
    am[BS as usize..(2 * BS) as usize].fill(0);
    assert_eq!(extents(&a), 3);
    assert_eq!(contents(&a), am);
    assert_eq!(contents(&c), cm);
    fsck_now(&fs, &dev);

    // copy_range into a new file.
    let d = fs.create("/d").unwrap();
    d.copy_range(&a, 0, 0, am.len() as u64).unwrap();
    assert_eq!(contents(&d), am);
    assert_eq!(tree_blocks(&fs, d.ino()), 0);
    fsck_now(&fs, &dev);

    // A media error in c's block 2, which a and b share too.
    let bad = phys_of(&c, 2 * BS);
    assert_eq!(phys_of(&a, 2 * BS), bad);
    let ev = fs.inject_error(bad, BS).unwrap();
    let lost: Vec<u64> = ev
        .iter()
        .filter(|e| e.action == "data lost")
        .filter_map(|e| match e.owner {
            OwnerKind::File { ino, .. } => Some(ino),
            _ => None,
        })
        .collect();
    for f in [&a, &c] {
        assert!(lost.contains(&f.ino()), "{ev:?}");
    }
    let mut buf = vec![0u8; BS as usize];
    assert_eq!(c.read_at(2 * BS, &mut buf).unwrap_err().errno_name(), "EIO");
    assert_eq!(c.stat().lost_bytes, BS);
    fsck_now(&fs, &dev);
    drop((a, b, c, d, e, g));
    let fs = remount(&dev, fs);
    let c = fs.open("/c", &OpenOptions::read_write()).unwrap();
    assert_eq!(c.stat().lost_bytes, BS);
    assert_eq!(c.read_at(2 * BS, &mut buf).unwrap_err().errno_name(), "EIO");
    // Overwriting the whole lost block ends the loss.
    let mut cm = cm;
    put_block(&c, &mut cm, 2, 9);
    assert_eq!(c.stat().lost_bytes, 0);
    assert_eq!(contents(&c), cm);
    assert_eq!(tree_blocks(&fs, c.ino()), 0);
    // b shares the lost block too: its reads stop short of it.
    let b = fs.open("/b", &OpenOptions::read_only()).unwrap();
    let mut head = vec![0u8; bm.len()];
    assert_eq!(b.read_at(0, &mut head).unwrap(), (2 * BS) as usize);
    assert_eq!(head[..(2 * BS) as usize], bm[..(2 * BS) as usize]);
    drop((b, c));
    let fs = remount(&dev, fs);
    drop(fs);
    assert_fsck(&*dev);
}
