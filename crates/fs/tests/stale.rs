//! Damaged images: every kind of tree node replaced by an older, correctly
//! sealed version of itself (a lost write), or by a copy with a record
//! changed and the checksum resealed (a forgery), in its home, in its
//! replica, and in both. Each must end in a repair (every file reads back
//! as before, fsck is clean) or, with both copies wrong, in a clean error;
//! never in wrong bytes returned with success, never in a panic.
mod common;

use common::pattern;
use daxfs::{Fs, MountOptions, OpenOptions};
use daxfs_device::MemDevice;
use daxfs_format::block::{Expect, header, seal_block, verify_block};
use daxfs_format::{BLOCK_SIZE, Block, BlockKind};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

const BS: u64 = BLOCK_SIZE as u64;

/// What reading a file (or a symlink's target) gave: its bytes, or an error.
type Contents = BTreeMap<String, Option<Vec<u8>>>;

/// Every file's bytes and every symlink's target, by path.
fn read_all(fs: &Fs) -> Contents {
    let mut out = Contents::new();
    let mut dirs = vec!["/".to_string()];
    while let Some(d) = dirs.pop() {
        let Ok(ents) = fs.readdir(&d) else {
            out.insert(d, None);
            continue;
        };
        for e in ents {
            let p = format!("{}{}", d, String::from_utf8_lossy(&e.name));
            match e.kind {
                daxfs::FileKind::Dir => dirs.push(format!("{p}/")),
                daxfs::FileKind::Symlink => {
                    out.insert(p.clone(), fs.readlink(&p).ok());
                }
                _ => {
                    let got = fs.open(&p, &OpenOptions::read_only()).and_then(|f| {
                        let n = f.stat().size as usize;
                        let mut buf = vec![0u8; n];
                        let r = f.read_at(0, &mut buf)?;
                        buf.truncate(r);
                        Ok(buf)
                    });
                    out.insert(p, got.ok());
                }
            }
        }
    }
    out
}

/// The two images: `a`, and `b` after changes that rewrite a node of every
/// kind in place; with the nodes (and replicas) of `b`, by kind.
struct Images {
    a: Vec<u8>,
    b: Vec<u8>,
    pairs: Vec<daxfs::ReplicaPair>,
}

fn build() -> Images {
    let dev = Arc::new(MemDevice::new(1024 * BS));
    Fs::mkfs(dev.clone(), &Default::default()).unwrap();
    let fs = Fs::mount(dev.clone(), &MountOptions::default()).unwrap();
    fs.mkdir("/d", 0o755).unwrap();
    for i in 0..20 {
        let f = fs.create(format!("/d/f{i}")).unwrap();
        f.write_at(0, &pattern(i, 100 + 300 * i as usize)).unwrap();
    }
    // One extent per written block: an extent tree of two levels.
    let frag = fs.create("/frag").unwrap();
    for i in 0..200u64 {
        frag.write_at(2 * i * BS, &pattern(1000 + i, 100)).unwrap();
    }
    let big = fs.create("/big").unwrap();
    big.write_at(0, &pattern(7, 60_000)).unwrap();
    fs.create("/clone").unwrap().clone_from(&big).unwrap();
    fs.symlink("d/f1", "/link").unwrap();
    fs.link("/d/f0", "/hard").unwrap();
    // Unlinked while open: the orphan list.
    let o1 = fs.create("/o1").unwrap();
    o1.write_at(0, &pattern(99, 5000)).unwrap();
    fs.unlink("/o1").unwrap();
    // Media errors in file data and free space: the error log, the loss
    // tree and the bad-block tree.
    let lose = |path: &str| {
        let f = fs.open(path, &OpenOptions::read_only()).unwrap();
        let e = f.fiemap().unwrap()[0].physical;
        fs.media_failure(e, BS, Default::default()).unwrap();
    };
    lose("/d/f5");
    fs.media_failure(1000 * BS, BS, Default::default()).unwrap();
    fs.sync().unwrap();
    let a = dev.image();

    // A change to a node of every kind.
    for i in 0..8u64 {
        frag.write_at((401 + 2 * i) * BS, &pattern(5000 + i, 200))
            .unwrap();
    }
    for i in 0..5 {
        fs.create(format!("/d/g{i}"))
            .unwrap()
            .write_at(0, &pattern(50 + i, 700))
            .unwrap();
    }
    big.write_at(0, &pattern(8, 5000)).unwrap();
    fs.link("/d/f2", "/hard2").unwrap();
    let o2 = fs.create("/o2").unwrap();
    o2.write_at(0, &pattern(98, 3000)).unwrap();
    fs.unlink("/o2").unwrap();
    lose("/d/f7");
    fs.media_failure(1001 * BS, BS, Default::default()).unwrap();
    fs.sync().unwrap();
    let b = dev.image();
    let pairs = fs.replica_pairs().unwrap();
    drop((o1, o2, frag, big));
    Images { a, b, pairs }
}

fn block(img: &[u8], b: u64) -> &Block {
    let at = (b * BS) as usize;
    img[at..at + BLOCK_SIZE].try_into().unwrap()
}

fn put(img: &mut [u8], b: u64, bytes: &Block) {
    let at = (b * BS) as usize;
    img[at..at + BLOCK_SIZE].copy_from_slice(bytes);
}

fn kind_named(name: &str) -> BlockKind {
    (1..=14)
        .filter_map(BlockKind::from_u8)
        .find(|k| k.name() == name)
        .unwrap()
}

/// One damaged node: its block, its replica, and the wrong copy.
struct Case {
    what: String,
    home: u64,
    replica: u64,
    bad: Box<Block>,
}

/// Mounts `img` and uses it; with `repair`, everything must read as in
/// `want` and fsck must be clean at the end, else every file that reads
/// must read as in `want` (and the damage must not go unnoticed).
fn run(img: Vec<u8>, want: &Contents, repair: bool, what: &str) {
    let dev = Arc::new(MemDevice::from_image(img));
    let fs = match Fs::mount(dev.clone(), &MountOptions::default()) {
        Ok(fs) => fs,
        Err(e) => {
            assert!(!repair, "{what}: mount failed: {e}");
            return;
        }
    };
    let scrubbed = fs.scrub_replicas();
    if repair {
        scrubbed.unwrap_or_else(|e| panic!("{what}: scrub: {e}"));
    }
    let got = read_all(&fs);
    for (p, g) in &got {
        if let Some(bytes) = g {
            let w = want.get(p).and_then(|w| w.as_ref());
            assert!(
                w == Some(bytes),
                "{what}: {p} read {} bytes that are not its own",
                bytes.len()
            );
        }
    }
    if repair {
        assert_eq!(&got, want, "{what}: files differ after the repair");
    }
    let wrote = fs.create("/after").and_then(|f| {
        f.write_at(0, &pattern(77, 9000))?;
        f.fsync()?;
        let mut buf = vec![0u8; 9000];
        f.read_at(0, &mut buf)?;
        Ok(buf)
    });
    match wrote {
        Ok(buf) => assert!(buf == pattern(77, 9000), "{what}: new file reads wrong"),
        Err(e) => assert!(!repair, "{what}: writing after the repair: {e}"),
    }
    let shut = fs.shutdown_reason();
    drop(fs);
    let rep = daxfs::fsck::fsck(&*dev, &mut |_, _, _| {}).unwrap();
    if repair {
        assert!(
            rep.is_clean() && shut.is_none(),
            "{what}: fsck after the repair: {:#?} (shut down: {shut:?})",
            rep.problems
        );
    } else {
        assert!(
            !rep.is_clean() || shut.is_some(),
            "{what}: both copies wrong, and nothing noticed"
        );
    }
}

#[test]
fn stale_and_forged_nodes_of_every_kind() {
    let im = build();
    {
        let dev = MemDevice::from_image(im.b.clone());
        let rep = daxfs::fsck::fsck(&dev, &mut |_, _, _| {}).unwrap();
        assert!(rep.is_clean(), "B: {:#?}", rep.problems);
        let dev = MemDevice::from_image(im.a.clone());
        let rep = daxfs::fsck::fsck(&dev, &mut |_, _, _| {}).unwrap();
        assert!(rep.is_clean(), "A: {:#?}", rep.problems);
    }
    let fs_id = daxfs::fs::read_superblock(&MemDevice::from_image(im.b.clone()))
        .unwrap()
        .fs_id();
    // For each kind, a leaf and an internal node (where there is one) that
    // the second round of changes rewrote in place.
    let mut cases = vec![];
    let mut seen = BTreeSet::new();
    for p in &im.pairs {
        if p.blocks != 1 {
            continue;
        }
        let kind = kind_named(p.kind);
        let (old, new) = (block(&im.a, p.block), block(&im.b, p.block));
        let expect = Expect {
            blockno: p.block,
            kind,
            owner: None,
            fs_id,
        };
        if old == new || verify_block(old, &expect).is_err() {
            continue;
        }
        let level = header(&new[..]).unwrap().level.min(1);
        if !seen.insert((p.kind, level)) {
            continue;
        }
        let what = format!("{} block {} (level {})", p.kind, p.block, level);
        cases.push(Case {
            what: format!("stale {what}"),
            home: p.block,
            replica: p.replica,
            bad: Box::new(*old),
        });
        // A record changed (its first key's second byte) and resealed.
        let mut forged = Box::new(*new);
        forged[65] ^= 1;
        let h = header(&forged[..]).unwrap();
        seal_block(&mut forged, p.block, h.generation.get(), fs_id);
        assert!(verify_block(&forged, &expect).is_ok());
        cases.push(Case {
            what: format!("forged {what}"),
            home: p.block,
            replica: p.replica,
            bad: forged,
        });
    }
    let kinds: BTreeSet<&str> = seen.iter().map(|(k, _)| *k).collect();
    for k in [
        BlockKind::InodeTree,
        BlockKind::DirTree,
        BlockKind::ExtentTree,
        BlockKind::FreeTree,
        BlockKind::RefcountTree,
        BlockKind::RmapTree,
        BlockKind::OrphanTree,
        BlockKind::ParentTree,
        BlockKind::ErrorLog,
        BlockKind::LossTree,
        BlockKind::BadBlockTree,
    ] {
        assert!(
            kinds.contains(k.name()),
            "no {} node was rewritten",
            k.name()
        );
    }
    assert!(
        seen.iter().any(|(_, l)| *l > 0),
        "no internal node was rewritten"
    );
    let want = {
        let dev = Arc::new(MemDevice::from_image(im.b.clone()));
        read_all(&Fs::mount(dev, &MountOptions::default()).unwrap())
    };
    assert!(want.values().filter(|v| v.is_some()).count() > 20);
    for c in &cases {
        for (place, home, replica) in [
            ("home", true, false),
            ("replica", false, true),
            ("both", true, true),
        ] {
            let mut img = im.b.clone();
            if home {
                put(&mut img, c.home, &c.bad);
            }
            if replica {
                put(&mut img, c.replica, &c.bad);
            }
            run(
                img,
                &want,
                place != "both",
                &format!("{} in its {place}", c.what),
            );
        }
    }
}
