//! Sharing blocks: clone, dedupe, copy_range and unshare with Linux's rules
//! (one test per rule of the kernel anchor, named after the xfstests case it
//! ports), copy-on-write, and the owner queries of the reverse map.
mod common;
use common::*;
use daxfs::{DedupeStatus, FallocFlags, File, Fs, FsError, OpenOptions, OwnerKind};

const BS: u64 = 4096;

fn errno<T: std::fmt::Debug>(r: Result<T, FsError>) -> &'static str {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.errno_name(),
    }
}

fn file_with(fs: &Fs, path: &str, data: &[u8]) -> File {
    let f = fs.create(path).unwrap();
    f.write_at(0, data).unwrap();
    f
}

fn contents(f: &File) -> Vec<u8> {
    let mut buf = vec![0u8; f.stat().size as usize];
    let n = f.read_at(0, &mut buf).unwrap();
    assert_eq!(n, buf.len());
    buf
}

fn shared_bytes(f: &File) -> u64 {
    f.fiemap()
        .unwrap()
        .iter()
        .filter(|e| e.shared)
        .map(|e| e.length)
        .sum()
}

#[test]
fn generic_157_clone_errors() {
    let (dev, fs) = new_fs(32);
    let a = file_with(&fs, "/a", &pattern(1, 64 * 1024));
    let b = file_with(&fs, "/b", &pattern(2, 64 * 1024));
    // Unaligned offsets and length (37 -> 59, 23 bytes).
    assert_eq!(errno(b.clone_range(&a, 37, 59, 23)), "EINVAL");
    assert_eq!(errno(b.clone_range(&a, 0, 0, 23)), "EINVAL");
    // Overlap inside one file.
    assert_eq!(errno(a.clone_range(&a, 0, 4096, 8192)), "EINVAL");
    // Source offset past EOF, and a length running past it.
    assert_eq!(errno(b.clone_range(&a, 128 * 1024, 0, 4096)), "EINVAL");
    assert_eq!(errno(b.clone_range(&a, 60 * 1024, 0, 8192)), "EINVAL");
    // Directories.
    fs.mkdir("/d", 0o755).unwrap();
    let d = fs.open("/d", &OpenOptions::read_only()).unwrap();
    assert_eq!(errno(b.clone_range(&d, 0, 0, 4096)), "EISDIR");
    // Handle modes: source not readable, destination read-only or append-only.
    let wo = fs.open("/a", &OpenOptions::write_only()).unwrap();
    assert_eq!(errno(b.clone_range(&wo, 0, 0, 4096)), "EBADF");
    let ro = fs.open("/b", &OpenOptions::read_only()).unwrap();
    assert_eq!(errno(ro.clone_range(&a, 0, 0, 4096)), "EBADF");
    let ap = fs
        .open(
            "/b",
            &OpenOptions {
                append: true,
                ..OpenOptions::read_write()
            },
        )
        .unwrap();
    assert_eq!(errno(ap.clone_range(&a, 0, 0, 4096)), "EBADF");
    // Another file system.
    let (_dev2, fs2) = new_fs(8);
    let other = file_with(&fs2, "/x", &[1u8; 4096]);
    assert_eq!(errno(b.clone_range(&other, 0, 0, 4096)), "EXDEV");
    // Nothing changed.
    assert_eq!(contents(&b), pattern(2, 64 * 1024));
    assert_eq!(shared_bytes(&b), 0);
    drop((a, b, d, wo, ro, ap));
    assert_fsck(&*dev);
}

#[test]
fn clone_shares_and_copy_on_write_keeps_files_apart() {
    let (dev, fs) = new_fs(32);
    let data = pattern(3, 256 * 1024);
    let a = file_with(&fs, "/a", &data);
    let b = fs.create("/b").unwrap();
    assert_eq!(b.clone_from(&a).unwrap(), data.len() as u64);
    assert_eq!(contents(&b), data);
    assert_eq!(shared_bytes(&a), 256 * 1024);
    assert_eq!(shared_bytes(&b), 256 * 1024);
    let free_before = fs.info().free_blocks;
    // An unaligned write into the clone copies the touched blocks' edges.
    b.write_at(5000, b"hello world").unwrap();
    let mut want = data.clone();
    want[5000..5011].copy_from_slice(b"hello world");
    assert_eq!(contents(&b), want);
    assert_eq!(contents(&a), data, "the source keeps its bytes");
    assert_eq!(shared_bytes(&b), 256 * 1024 - 4096, "one block was copied");
    assert!(fs.info().free_blocks < free_before);
    // Writing the source too: each file has its own bytes.
    a.write_at(0, &[0xee; 10_000]).unwrap();
    assert_eq!(&contents(&b)[..5000], &data[..5000]);
    assert_eq!(&contents(&a)[..10_000], &[0xee; 10_000][..]);
    drop((a, b));
    let fs = remount(&dev, fs);
    let b = fs.open("/b", &OpenOptions::read_only()).unwrap();
    assert_eq!(contents(&b), want);
    drop(b);
    assert_fsck(&*dev);
}

#[test]
fn generic_181_clone_length_zero_means_to_eof() {
    let (dev, fs) = new_fs(16);
    let a = file_with(&fs, "/a", &pattern(4, 3 * 4096 + 100));
    let b = fs.create("/b").unwrap();
    assert_eq!(b.clone_range(&a, 4096, 0, 0).unwrap(), 2 * 4096 + 100);
    assert_eq!(contents(&b), pattern(4, 3 * 4096 + 100)[4096..].to_vec());
    // Length 0 at EOF clones nothing.
    assert_eq!(b.clone_range(&a, 4 * 4096, 0, 0).unwrap_or(0), 0);
    drop((a, b));
    assert_fsck(&*dev);
}

#[test]
fn eof_block_rule() {
    let (dev, fs) = new_fs(16);
    let a = file_with(&fs, "/a", &pattern(5, 2 * 4096 + 10));
    let b = file_with(&fs, "/b", &pattern(6, 8 * 4096));
    // The partial last block may not land inside the destination.
    assert_eq!(errno(b.clone_range(&a, 0, 0, 2 * 4096 + 10)), "EINVAL");
    // At or past its end it may.
    assert_eq!(
        b.clone_range(&a, 0, 8 * 4096, 2 * 4096 + 10).unwrap(),
        2 * 4096 + 10
    );
    assert_eq!(b.stat().size, 10 * 4096 + 10);
    assert_eq!(&contents(&b)[8 * 4096..], &pattern(5, 2 * 4096 + 10)[..]);
    drop((a, b));
    assert_fsck(&*dev);
}

#[test]
fn generic_515_clone_far_past_eof_reads_zeros_between() {
    let (dev, fs) = new_fs(16);
    let a = file_with(&fs, "/a", &pattern(7, 4096));
    let b = file_with(&fs, "/b", &[9u8; 100]);
    b.clone_range(&a, 0, 1 << 20, 4096).unwrap();
    let all = contents(&b);
    assert_eq!(all.len(), (1 << 20) + 4096);
    assert!(all[..100].iter().all(|&x| x == 9));
    assert!(
        all[100..1 << 20].iter().all(|&x| x == 0),
        "the gap reads as zeros"
    );
    assert_eq!(&all[1 << 20..], &pattern(7, 4096)[..]);
    drop((a, b));
    assert_fsck(&*dev);
}

#[test]
fn generic_158_dedupe_errors() {
    let (dev, fs) = new_fs(16);
    let a = file_with(&fs, "/a", &pattern(8, 64 * 1024));
    let b = file_with(&fs, "/b", &pattern(8, 32 * 1024));
    // Source range past EOF fails the call.
    assert_eq!(errno(a.dedupe_range(0, 128 * 1024, &[(&b, 0)])), "EINVAL");
    // Unaligned source offset.
    assert_eq!(errno(a.dedupe_range(37, 4096, &[(&b, 0)])), "EINVAL");
    // Per-destination failures are statuses.
    fs.mkdir("/d", 0o755).unwrap();
    let d = fs.open("/d", &OpenOptions::read_only()).unwrap();
    let ro = fs.open("/b", &OpenOptions::read_only()).unwrap();
    let r = a
        .dedupe_range(0, 8192, &[(&b, 59), (&b, 40 * 1024), (&d, 0), (&ro, 0)])
        .unwrap();
    assert_eq!(
        r[0].status,
        DedupeStatus::Error(libc_einval()),
        "unaligned destination"
    );
    assert_eq!(
        r[1].status,
        DedupeStatus::Error(libc_einval()),
        "destination past EOF"
    );
    assert_eq!(r[2].status, DedupeStatus::Error(21), "EISDIR");
    assert_eq!(r[3].status, DedupeStatus::Error(9), "EBADF");
    assert_eq!(shared_bytes(&b), 0);
    drop((a, b, d, ro));
    assert_fsck(&*dev);
}

fn libc_einval() -> i32 {
    22
}

#[test]
fn generic_122_dedupe_differs_changes_nothing() {
    let (dev, fs) = new_fs(16);
    let a = file_with(&fs, "/a", &pattern(9, 64 * 1024));
    let mut other = pattern(9, 64 * 1024);
    other[40_000] ^= 1;
    let b = file_with(&fs, "/b", &other);
    let r = a.dedupe_range(0, 64 * 1024, &[(&b, 0)]).unwrap();
    assert_eq!(r[0].status, DedupeStatus::Differs);
    assert_eq!(r[0].bytes_deduped, 0);
    assert_eq!(contents(&b), other);
    assert_eq!(shared_bytes(&a) + shared_bytes(&b), 0);
    drop((a, b));
    assert_fsck(&*dev);
}

#[test]
fn generic_121_dedupe_same_shares() {
    let (dev, fs) = new_fs(16);
    let a = file_with(&fs, "/a", &pattern(10, 64 * 1024));
    let b = file_with(&fs, "/b", &pattern(10, 64 * 1024));
    let c = file_with(&fs, "/c", &pattern(10, 64 * 1024));
    let free = fs.info().free_blocks;
    let r = a.dedupe_range(0, 64 * 1024, &[(&b, 0), (&c, 0)]).unwrap();
    assert!(
        r.iter()
            .all(|x| x.status == DedupeStatus::Same && x.bytes_deduped == 64 * 1024)
    );
    assert_eq!(shared_bytes(&b), 64 * 1024);
    assert_eq!(shared_bytes(&c), 64 * 1024);
    assert!(
        fs.info().free_blocks >= free + 2 * 16 - 4,
        "the duplicate blocks were freed"
    );
    assert_eq!(contents(&b), pattern(10, 64 * 1024));
    // Dedupe within one file (generic/137).
    let d = file_with(&fs, "/d", &[pattern(11, 8192), pattern(11, 8192)].concat());
    let r = d.dedupe_range(0, 8192, &[(&d, 8192)]).unwrap();
    assert_eq!(r[0].status, DedupeStatus::Same);
    assert_eq!(shared_bytes(&d), 16384);
    drop((a, b, c, d));
    assert_fsck(&*dev);
}

#[test]
fn generic_136_dedupe_unaligned_last_block_at_both_eofs() {
    let (dev, fs) = new_fs(16);
    let data = pattern(12, 3 * 4096 + 500);
    let a = file_with(&fs, "/a", &data);
    let b = file_with(&fs, "/b", &data);
    let r = a.dedupe_range(0, data.len() as u64, &[(&b, 0)]).unwrap();
    assert_eq!(r[0].status, DedupeStatus::Same);
    assert_eq!(
        shared_bytes(&b),
        4 * 4096,
        "the partial block is shared too"
    );
    assert_eq!(contents(&b), data);
    drop((a, b));
    assert_fsck(&*dev);
}

#[test]
fn generic_517_unaligned_file_into_middle_is_shortened() {
    let (dev, fs) = new_fs(16);
    let small = pattern(13, 2 * 4096 + 77);
    let mut big = pattern(14, 16 * 4096);
    big[4 * 4096..4 * 4096 + small.len()].copy_from_slice(&small);
    let a = file_with(&fs, "/a", &small);
    let b = file_with(&fs, "/b", &big);
    let r = a
        .dedupe_range(0, small.len() as u64, &[(&b, 4 * 4096)])
        .unwrap();
    assert_eq!(r[0].status, DedupeStatus::Same);
    assert_eq!(shared_bytes(&b), 2 * 4096, "shortened to whole blocks");
    assert_eq!(contents(&b), big, "no corruption");
    assert_eq!(contents(&a), small);
    drop((a, b));
    assert_fsck(&*dev);
}

#[test]
fn generic_182_dedupe_length_zero_is_a_no_op() {
    let (_dev, fs) = new_fs(16);
    let a = file_with(&fs, "/a", &pattern(15, 8192));
    let b = file_with(&fs, "/b", &pattern(16, 8192));
    let r = a.dedupe_range(0, 0, &[(&b, 0)]).unwrap();
    assert_eq!(r[0].status, DedupeStatus::Same);
    assert_eq!(r[0].bytes_deduped, 0);
    assert_eq!(contents(&b), pattern(16, 8192));
}

#[test]
fn copy_range_shares_aligned_blocks_and_copies_the_rest() {
    let (dev, fs) = new_fs(32);
    let data = pattern(17, 10 * 4096 + 123);
    let a = file_with(&fs, "/a", &data);
    let b = fs.create("/b").unwrap();
    // Same alignment: the whole blocks in the middle are shared.
    assert_eq!(b.copy_range(&a, 100, 100, 9 * 4096).unwrap(), 9 * 4096);
    assert_eq!(
        &contents(&b)[100..100 + 9 * 4096],
        &data[100..100 + 9 * 4096]
    );
    assert_eq!(shared_bytes(&b), 8 * 4096);
    // Different alignment: copied.
    let c = fs.create("/c").unwrap();
    assert_eq!(c.copy_range(&a, 1, 0, 20_000).unwrap(), 20_000);
    assert_eq!(contents(&c), data[1..20_001].to_vec());
    assert_eq!(shared_bytes(&c), 0);
    // Short at EOF, 0 past it.
    let d = fs.create("/d").unwrap();
    assert_eq!(
        d.copy_range(&a, data.len() as u64 - 50, 0, 4096).unwrap(),
        50
    );
    assert_eq!(
        d.copy_range(&a, data.len() as u64 + 10, 0, 4096).unwrap(),
        0
    );
    // Overlap in one file.
    assert_eq!(errno(a.copy_range(&a, 0, 100, 4096)), "EINVAL");
    drop((a, b, c, d));
    assert_fsck(&*dev);
}

#[test]
fn unshare_then_fill_the_device_writes_still_succeed() {
    let (dev, fs) = new_fs(16);
    let a = file_with(&fs, "/a", &pattern(18, 1 << 20));
    let b = fs.create("/b").unwrap();
    b.clone_from(&a).unwrap();
    b.fallocate(
        FallocFlags {
            unshare: true,
            keep_size: true,
            ..Default::default()
        },
        0,
        1 << 20,
    )
    .unwrap();
    assert_eq!(shared_bytes(&b), 0);
    assert_eq!(shared_bytes(&a), 0);
    assert_eq!(contents(&b), pattern(18, 1 << 20));
    // Fill the device.
    let filler = fs.create("/filler").unwrap();
    let chunk = vec![7u8; 256 * 1024];
    let mut off = 0;
    while filler.write_at(off, &chunk).is_ok() {
        off += chunk.len() as u64;
    }
    let small = vec![1u8; 4096];
    while filler.write_at(off, &small).is_ok() {
        off += 4096;
    }
    // Overwrites of the unshared range need no space.
    b.write_at(0, &vec![0xab; 1 << 20]).unwrap();
    assert!(contents(&b).iter().all(|&x| x == 0xab));
    assert_eq!(contents(&a), pattern(18, 1 << 20));
    drop((a, b, filler));
    assert_fsck(&*dev);
}

#[test]
fn fsmap_after_clone_shows_both_owners_shared() {
    let (dev, fs) = new_fs(16);
    let a = file_with(&fs, "/a", &pattern(19, 8 * 4096));
    fs.mkdir("/dir", 0o755).unwrap();
    let b = fs.create("/dir/b").unwrap();
    b.clone_from(&a).unwrap();
    fs.link("/dir/b", "/b2").unwrap();
    let phys = a.fiemap().unwrap()[0].physical / BS;
    let owners = fs.owners(phys, 1).unwrap();
    assert_eq!(owners.len(), 2, "{owners:?}");
    for o in &owners {
        assert!(o.shared && !o.metadata);
        let OwnerKind::File { ino, paths, fork } = &o.owner else {
            panic!("{o:?}")
        };
        assert_eq!(*fork, "data");
        if *ino == a.ino() {
            assert_eq!(paths, &vec!["/a".to_string()]);
        } else {
            assert_eq!(*ino, b.ino());
            assert_eq!(paths, &vec!["/b2".to_string(), "/dir/b".to_string()]);
        }
    }
    // The whole-device map covers every block exactly, metadata and free too.
    let map = fs.fsmap(0, u64::MAX).unwrap();
    assert!(
        map.iter()
            .any(|r| matches!(r.owner, OwnerKind::Metadata("superblock")))
    );
    assert!(
        map.iter()
            .any(|r| matches!(r.owner, OwnerKind::Metadata("log")))
    );
    assert!(map.iter().any(|r| r.owner == OwnerKind::Free));
    let mut covered = 0;
    let mut last_end = 0;
    for r in map.iter() {
        if r.physical >= last_end {
            covered += r.length;
            last_end = r.physical + r.length;
        }
    }
    assert_eq!(covered, fs.info().total_blocks * BS);
    drop((a, b));
    assert_fsck(&*dev);
}

#[test]
fn thousand_clones_give_thousand_and_one_owners() {
    let (dev, fs) = new_fs(64);
    let a = file_with(&fs, "/src", &pattern(20, 4 * 4096));
    for i in 0..1000 {
        let c = fs.create(format!("/c{i}")).unwrap();
        c.clone_from(&a).unwrap();
    }
    let ext = a.fiemap().unwrap();
    for e in &ext {
        for blk in 0..e.length / BS {
            let owners = fs.owners(e.physical / BS + blk, 1).unwrap();
            assert_eq!(owners.len(), 1001);
            assert!(owners.iter().all(|o| o.shared));
        }
    }
    // Rewriting one clone moves exactly that clone's records.
    let c7 = fs.open("/c7", &OpenOptions::read_write()).unwrap();
    c7.write_at(0, &[1u8; 4096]).unwrap();
    let p0 = ext[0].physical / BS;
    let owners = fs.owners(p0, 1).unwrap();
    assert_eq!(owners.len(), 1000);
    assert!(
        !owners
            .iter()
            .any(|o| matches!(&o.owner, OwnerKind::File { ino, .. } if *ino == c7.ino()))
    );
    let new_phys = c7.fiemap().unwrap()[0].physical / BS;
    let mine = fs.owners(new_phys, 1).unwrap();
    assert_eq!(mine.len(), 1);
    assert!(
        matches!(&mine[0].owner, OwnerKind::File { ino, paths, .. } if *ino == c7.ino() && paths == &vec!["/c7".to_string()])
    );
    assert!(!mine[0].shared);
    assert_eq!(
        fs.owners(p0 + 1, 1).unwrap().len(),
        1001,
        "the other blocks keep every owner"
    );
    // By inode: the same records, without paths.
    let named = fs.owners(p0 + 1, 1).unwrap();
    let bare = fs.owners_by_inode(p0 + 1, 1).unwrap();
    assert_eq!(bare.len(), named.len());
    for (b, n) in bare.iter().zip(&named) {
        let (
            OwnerKind::File {
                ino: bi, paths: bp, ..
            },
            OwnerKind::File {
                ino: ni, paths: np, ..
            },
        ) = (&b.owner, &n.owner)
        else {
            panic!("{b:?} / {n:?}");
        };
        assert_eq!(
            (bi, b.physical, b.offset, b.shared),
            (ni, n.physical, n.offset, n.shared)
        );
        assert!(bp.is_empty() && np.len() == 1);
    }
    drop((a, c7));
    assert_fsck(&*dev);
}

#[test]
fn deleting_clones_frees_blocks_only_with_the_last_owner() {
    let (dev, fs) = new_fs(16);
    let data = pattern(21, 1 << 20);
    let a = file_with(&fs, "/a", &data);
    drop(a);
    let free0 = fs.info().free_blocks;
    for i in 0..3 {
        let c = fs.create(format!("/c{i}")).unwrap();
        c.clone_from(&fs.open("/a", &OpenOptions::read_only()).unwrap())
            .unwrap();
    }
    fs.unlink("/a").unwrap();
    fs.unlink("/c0").unwrap();
    fs.unlink("/c1").unwrap();
    let c2 = fs.open("/c2", &OpenOptions::read_only()).unwrap();
    assert_eq!(contents(&c2), data);
    assert!(fs.info().free_blocks < free0 + 100);
    drop(c2);
    fs.unlink("/c2").unwrap();
    assert!(
        fs.info().free_blocks >= free0 + 256,
        "the last owner's going frees the data"
    );
    assert_fsck(&*dev);
}

#[test]
fn punch_and_truncate_of_shared_blocks() {
    let (dev, fs) = new_fs(16);
    let data = pattern(22, 16 * 4096);
    let a = file_with(&fs, "/a", &data);
    let b = fs.create("/b").unwrap();
    b.clone_from(&a).unwrap();
    // Zeroing a partial block of the clone copies it first.
    b.fallocate(
        FallocFlags {
            keep_size: true,
            punch_hole: true,
            ..Default::default()
        },
        100,
        3 * 4096,
    )
    .unwrap();
    b.fallocate(
        FallocFlags {
            zero_range: true,
            keep_size: true,
            ..Default::default()
        },
        8 * 4096 + 10,
        4096,
    )
    .unwrap();
    b.set_len(10 * 4096 + 5).unwrap();
    b.set_len(12 * 4096).unwrap();
    let mut want = data.clone();
    want[100..100 + 3 * 4096].fill(0);
    want[8 * 4096 + 10..9 * 4096 + 10].fill(0);
    want.truncate(10 * 4096 + 5);
    want.resize(12 * 4096, 0);
    assert_eq!(contents(&b), want);
    assert_eq!(contents(&a), data, "the source is untouched");
    drop((a, b));
    assert_fsck(&*dev);
}

#[test]
fn mapping_events_are_recorded_when_asked() {
    use daxfs::events::MapEvent;
    let (_dev, fs) = new_fs(16);
    let a = file_with(&fs, "/a", &pattern(30, 8192));
    assert!(fs.take_events().is_empty(), "off by default");
    fs.record_events(true);
    let b = fs.create("/b").unwrap();
    b.clone_from(&a).unwrap();
    b.write_at(0, b"x").unwrap();
    b.set_len(4096).unwrap();
    let ev = fs.take_events();
    let pa = a.fiemap().unwrap()[0].physical / BS;
    assert!(
        ev.contains(&MapEvent::Share {
            src_ino: a.ino(),
            src_fblock: 0,
            ino: b.ino(),
            fblock: 0,
            phys: pa,
            len: 2
        }),
        "{ev:?}"
    );
    assert!(ev.iter().any(|e| matches!(*e, MapEvent::Cow { ino, fblock: 0, old, len: 1, .. } if ino == b.ino() && old == pa)));
    assert!(ev.iter().any(|e| matches!(*e, MapEvent::Unmap { ino, fblock: 1, phys, len: 1 } if ino == b.ino() && phys == pa + 1)));
    // An aborted transaction records nothing.
    assert!(b.clone_range(&a, 1, 0, 4096).is_err());
    assert!(fs.take_events().is_empty());
}

/// Every (device block, inode, file block) that the files map, from their
/// extent maps: the truth the reverse map must invert.
fn mapped_blocks(files: &[File]) -> std::collections::BTreeSet<(u64, u64, u64)> {
    let mut out = std::collections::BTreeSet::new();
    for f in files {
        for e in f.fiemap().unwrap() {
            for i in 0..e.length / BS {
                out.insert((e.physical / BS + i, f.ino(), e.logical / BS + i));
            }
        }
    }
    out
}

/// The VM farm of the owner-tracking study, small: one image reflinked into
/// many files, each copying-on-write scattered single pages. An interval
/// map holds one record per extent of each file: the image's extents once
/// per owner, plus at most two per written page (the new page, and the
/// piece of the image after it). A segment-aligned map would hold one
/// record per (segment, owner): thousands here.
#[test]
fn vm_farm_reverse_map_grows_with_owners_plus_writes() {
    use rand::{Rng, SeedableRng};
    let (dev, fs) = new_fs(64);
    let pages = 256u64;
    let image = file_with(&fs, "/image", &pattern(31, (pages * BS) as usize));
    let extents = image.fiemap().unwrap().len() as u64;
    let before = fs.rmap_census().unwrap().data_records;
    let (clones, writes) = (40u64, 8u64);
    let mut rng = rand::rngs::SmallRng::seed_from_u64(9);
    let mut files = vec![];
    for c in 0..clones {
        let f = fs.create(format!("/vm{c}")).unwrap();
        f.clone_from(&image).unwrap();
        for _ in 0..writes {
            let p = rng.random_range(0..pages);
            f.write_at(p * BS, &[c as u8 + 1; BS as usize]).unwrap();
        }
        files.push(f);
    }
    let census = fs.rmap_census().unwrap();
    let data = census.data_records - before;
    // Each clone: its copies of the image's extents, cut by up to `writes`
    // pages (each cut adds at most one piece), plus the new pages.
    let bound = clones * (extents + 2 * writes);
    assert!(
        data <= bound,
        "{data} file-data records for {clones} clones writing {writes} pages each (bound {bound})"
    );
    // The owners of every image page, from the reverse map, are exactly
    // the files that still map it.
    files.push(image);
    let truth = mapped_blocks(&files);
    let img = files.last().unwrap().fiemap().unwrap();
    for e in &img {
        for b in (e.physical / BS)..(e.physical + e.length) / BS {
            let mut got: Vec<(u64, u64)> = fs
                .owners(b, 1)
                .unwrap()
                .iter()
                .filter_map(|o| match o.owner {
                    OwnerKind::File {
                        ino, fork: "data", ..
                    } => Some((ino, (o.offset / BS) + b - o.physical / BS)),
                    _ => None,
                })
                .collect();
            got.sort_unstable();
            let want: Vec<(u64, u64)> = truth
                .range((b, 0, 0)..(b + 1, 0, 0))
                .map(|&(_, ino, fb)| (ino, fb))
                .collect();
            assert_eq!(got, want, "owners of block {b}");
        }
    }
    drop(files);
    assert_fsck(&*dev);
}

/// Random clones of ranges, overwrites, punches and unlinks over a few
/// files; after each step, owner queries of random device ranges return
/// exactly the (block, file, file block) triples the extent maps give.
#[test]
fn owner_queries_match_the_extent_maps() {
    use rand::{Rng, SeedableRng};
    let (dev, fs) = new_fs(64);
    let mut rng = rand::rngs::SmallRng::seed_from_u64(77);
    let pages = 64u64;
    let mut files: Vec<File> = (0..6)
        .map(|i| file_with(&fs, &format!("/f{i}"), &pattern(i, (pages * BS) as usize)))
        .collect();
    let total = fs.info().total_blocks;
    for step in 0..150 {
        let n = files.len();
        let (a, b) = (rng.random_range(0..n), rng.random_range(0..n));
        let off = rng.random_range(0..pages - 1);
        let len = rng.random_range(1..(pages - off).min(24));
        match rng.random_range(0..10) {
            0..4 if a != b => {
                let dst = rng.random_range(0..pages - len);
                let (src, dst_f) = (&files[a], &files[b]);
                dst_f
                    .clone_range(src, off * BS, dst * BS, len * BS)
                    .unwrap();
            }
            4..7 => {
                files[a]
                    .write_at(off * BS, &vec![step as u8; (len * BS) as usize])
                    .unwrap();
            }
            7 | 8 => {
                let punch = FallocFlags {
                    punch_hole: true,
                    keep_size: true,
                    ..Default::default()
                };
                files[a].fallocate(punch, off * BS, len * BS).unwrap();
            }
            _ => {
                let name = format!("/g{step}");
                let f = fs.create(&name).unwrap();
                f.clone_from(&files[a]).unwrap();
                files.push(f);
                if files.len() > 10 {
                    files.remove(0);
                }
            }
        }
        let truth = mapped_blocks(&files);
        for _ in 0..4 {
            let b0 = rng.random_range(0..total);
            let l = rng.random_range(1..200u64).min(total - b0);
            let mut got = std::collections::BTreeSet::new();
            for o in fs.owners(b0, l).unwrap() {
                if let OwnerKind::File {
                    ino, fork: "data", ..
                } = o.owner
                {
                    let p = o.physical / BS;
                    for i in 0..o.length / BS {
                        if (b0..b0 + l).contains(&(p + i)) {
                            assert!(got.insert((p + i, ino, o.offset / BS + i)), "twice");
                        }
                    }
                }
            }
            let live: std::collections::BTreeSet<u64> = files.iter().map(|f| f.ino()).collect();
            // Files dropped from the list still exist and own blocks: keep
            // to the listed ones on both sides.
            got.retain(|t| live.contains(&t.1));
            let want: std::collections::BTreeSet<_> =
                truth.range((b0, 0, 0)..(b0 + l, 0, 0)).copied().collect();
            assert_eq!(got, want, "step {step}: owners of [{b0}, +{l})");
        }
    }
    drop(files);
    assert_fsck(&*dev);
}

/// After a copy-on-write, the blocks the write covered are the file's alone:
/// writing them again goes in place (no transaction), while blocks still
/// shared keep copying, and a new clone makes every block shared again.
#[test]
fn rewrites_after_copy_on_write_go_in_place() {
    let (dev, fs) = new_fs(16);
    let orig = pattern(30, 8 * 4096);
    let a = file_with(&fs, "/a", &orig);
    let b = fs.create("/b").unwrap();
    b.clone_from(&a).unwrap();
    b.write_at(BS, &[1u8; 4096]).unwrap(); // copy on write
    let g = fs.info().generation;
    b.write_at(BS + 10, &[2u8; 100]).unwrap();
    b.write_at(BS, &[3u8; 10]).unwrap();
    assert_eq!(
        fs.info().generation,
        g,
        "rewrites of a private block commit nothing"
    );
    let p1 = b
        .fiemap()
        .unwrap()
        .iter()
        .find(|e| e.logical <= BS && BS < e.logical + e.length)
        .unwrap()
        .physical;
    // A block still shared copies (a transaction), and leaves /a alone.
    b.write_at(3 * BS, &[4u8; 4096]).unwrap();
    assert!(fs.info().generation > g);
    let mut got = vec![0u8; 8 * 4096];
    a.read_at(0, &mut got).unwrap();
    assert_eq!(got, orig, "the source never changes");
    // Cloning /b again shares its private block: the next write copies.
    let c = fs.create("/c").unwrap();
    c.clone_from(&b).unwrap();
    let g = fs.info().generation;
    b.write_at(BS, &[5u8; 4096]).unwrap();
    assert!(
        fs.info().generation > g,
        "a shared block again: copy on write"
    );
    let mut one = vec![0u8; 4096];
    c.read_at(BS, &mut one).unwrap();
    let mut want = vec![1u8; 4096];
    want[..10].fill(3);
    want[10..110].fill(2);
    assert_eq!(one, want, "the new clone keeps what /b had");
    assert_ne!(
        b.fiemap()
            .unwrap()
            .iter()
            .find(|e| e.logical <= BS && BS < e.logical + e.length)
            .unwrap()
            .physical,
        p1
    );
    drop((a, b, c));
    assert_fsck(&*dev);
}

/// A clone of 2,000 extents on a file system with a 64-block log does not
/// fit in one transaction: it is made in several, and the destination ends
/// up with every extent.
#[test]
fn clone_too_large_for_one_transaction_is_split() {
    use daxfs::{MkfsOptions, MountOptions};
    let dev = std::sync::Arc::new(daxfs_device::MemDevice::new(32 << 20));
    let opts = MkfsOptions {
        log_blocks: Some(64),
        ..Default::default()
    };
    Fs::mkfs(dev.clone(), &opts).unwrap();
    let fs = Fs::mount(dev.clone(), &MountOptions::default()).unwrap();
    let s = fs.create("/s").unwrap();
    let t = fs.create("/t").unwrap();
    for i in 0..2000u64 {
        // The two files' blocks alternate on the device: no two extents
        // merge, and the clone's records fall among the others'.
        s.write_at(i * BS, &pattern(i, BS as usize)).unwrap();
        t.write_at(i * BS, &pattern(i, BS as usize)).unwrap();
    }
    assert_eq!(s.fiemap().unwrap().len(), 2000);
    let d = fs.create("/d").unwrap();
    assert_eq!(d.clone_from(&s).unwrap(), s.stat().size);
    let (fs_, fd) = (s.fiemap().unwrap(), d.fiemap().unwrap());
    assert_eq!(fd.len(), 2000);
    for (a, b) in fs_.iter().zip(&fd) {
        assert_eq!(
            (a.logical, a.physical, a.length),
            (b.logical, b.physical, b.length)
        );
        assert!(b.shared);
    }
    assert_eq!(d.stat().size, s.stat().size);
    let mut x = vec![0u8; s.stat().size as usize];
    let mut y = vec![0u8; x.len()];
    s.read_at(0, &mut x).unwrap();
    d.read_at(0, &mut y).unwrap();
    assert!(x == y);
    drop((s, t, d));
    fs.unmount().unwrap();
    assert_fsck(&*dev);
}
