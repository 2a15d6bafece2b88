//! Crash consistency: run workloads on a device that records every store,
//! flush and fence; then, at every persist point, build the images a power
//! failure could leave (nothing pending, everything pending, random subsets of
//! the pending 8-byte words), mount each, run fsck, and check that every
//! completed operation is present and the one in progress is all or nothing.
mod common;
use common::pattern;
use daxfs::{FileKind, Fs, MkfsOptions, MountOptions, OpenOptions};
use daxfs_device::{CrashDevice, Device, MemDevice, Subset};
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Obj {
    File(Vec<u8>),
    Dir,
    Link(Vec<u8>),
}

type State = BTreeMap<String, Obj>;

/// Reads the whole tree of a mounted file system.
fn snapshot(fs: &Fs) -> State {
    let mut out = State::new();
    let mut stack = vec!["/".to_string()];
    while let Some(d) = stack.pop() {
        for e in fs.readdir(&d).expect("readdir") {
            let p = format!(
                "{}{}",
                if d == "/" { "/" } else { &d },
                if d == "/" {
                    e.name_lossy()
                } else {
                    format!("/{}", e.name_lossy())
                }
            );
            match e.kind {
                FileKind::Dir => {
                    out.insert(p.clone(), Obj::Dir);
                    stack.push(p);
                }
                FileKind::Symlink => {
                    out.insert(p.clone(), Obj::Link(fs.readlink(&p).expect("readlink")));
                }
                k if k.is_special() => {
                    out.insert(p, Obj::Link(k.name().into()));
                }
                _ => {
                    let f = fs.open(&p, &OpenOptions::read_only()).expect("open");
                    let mut buf = vec![0u8; f.stat().size as usize];
                    let n = f.read_at(0, &mut buf).expect("read");
                    assert_eq!(n, buf.len());
                    out.insert(p, Obj::File(buf));
                }
            }
        }
    }
    out
}

/// One step of a workload.
#[derive(Clone, Debug)]
enum Op {
    Create(&'static str),
    Mkdir(&'static str),
    /// Write then fsync.
    Write(&'static str, u64, usize, u64),
    /// Write with no fsync: durable when the call returns all the same.
    WriteOnly(&'static str, u64, usize, u64),
    Truncate(&'static str, u64),
    Rename(&'static str, &'static str),
    Unlink(&'static str),
    Link(&'static str, &'static str),
    Symlink(&'static str, &'static str),
    /// Clone all of the first file into the second.
    Clone(&'static str, &'static str),
    /// Clone a block range: src, dst, src_off, dst_off, len.
    CloneRange(&'static str, &'static str, u64, u64, u64),
    /// Dedupe: src, dst, offset (both), len.
    Dedupe(&'static str, &'static str, u64, u64),
    /// RENAME_EXCHANGE of two names in the root directory.
    Exchange(&'static str, &'static str),
    /// An unnamed temporary file (O_TMPFILE) in the root, written (len,
    /// seed) and synced, then given a name by `link_at`.
    TmpLink(&'static str, usize, u64),
    /// A temporary file written and closed without a name.
    TmpDrop(usize),
    /// Unshare (and allocate) a range: path, offset, len.
    Unshare(&'static str, u64, u64),
    /// Punch a hole, keeping the size: path, offset, len.
    Punch(&'static str, u64, u64),
    /// Zero a range (FALLOC_FL_ZERO_RANGE): path, offset, len, keep size.
    Zero(&'static str, u64, u64, bool),
}

fn apply(fs: &Fs, op: &Op) {
    match op {
        Op::Create(p) => drop(fs.create(p).unwrap()),
        Op::Mkdir(p) => fs.mkdir(p, 0o755).unwrap(),
        Op::Write(p, off, len, seed) => {
            let f = fs.open(p, &OpenOptions::read_write()).unwrap();
            f.write_at(*off, &pattern(*seed, *len)).unwrap();
            f.fsync().unwrap();
        }
        Op::WriteOnly(p, off, len, seed) => {
            let f = fs.open(p, &OpenOptions::read_write()).unwrap();
            f.write_at(*off, &pattern(*seed, *len)).unwrap();
        }
        Op::Truncate(p, len) => fs.truncate(p, *len).unwrap(),
        Op::Rename(a, b) => fs.rename(a, b).unwrap(),
        Op::Unlink(p) => fs.unlink(p).unwrap(),
        Op::Link(a, b) => fs.link(a, b).unwrap(),
        Op::Symlink(t, p) => fs.symlink(t, p).unwrap(),
        Op::Exchange(a, b) => {
            let r = fs.root_ino();
            fs.rename_at(r, a, r, b, daxfs::RenameFlags::EXCHANGE)
                .unwrap()
        }
        Op::TmpLink(name, len, seed) => {
            let t = fs.tmpfile_at(fs.root_ino(), 0o644).unwrap();
            t.write_at(0, &pattern(*seed, *len)).unwrap();
            t.fsync().unwrap();
            fs.link_at(t.ino(), fs.root_ino(), name).unwrap();
        }
        Op::TmpDrop(len) => {
            let t = fs.tmpfile_at(fs.root_ino(), 0o644).unwrap();
            t.write_at(0, &pattern(5, *len)).unwrap();
        }
        Op::Clone(a, b) => {
            let s = fs.open(a, &OpenOptions::read_only()).unwrap();
            let d = fs.open(b, &OpenOptions::read_write()).unwrap();
            d.clone_from(&s).unwrap();
        }
        Op::CloneRange(a, b, so, doff, len) => {
            let s = fs.open(a, &OpenOptions::read_only()).unwrap();
            let d = fs.open(b, &OpenOptions::read_write()).unwrap();
            d.clone_range(&s, *so, *doff, *len).unwrap();
        }
        Op::Dedupe(a, b, off, len) => {
            let s = fs.open(a, &OpenOptions::read_only()).unwrap();
            let d = fs.open(b, &OpenOptions::read_write()).unwrap();
            let r = s.dedupe_range(*off, *len, &[(&d, *off)]).unwrap();
            assert_eq!(r[0].status, daxfs::DedupeStatus::Same);
        }
        Op::Punch(p, off, len) => {
            let f = fs.open(p, &OpenOptions::read_write()).unwrap();
            f.fallocate(
                daxfs::FallocFlags {
                    punch_hole: true,
                    keep_size: true,
                    ..Default::default()
                },
                *off,
                *len,
            )
            .unwrap();
        }
        Op::Zero(p, off, len, keep_size) => {
            let f = fs.open(p, &OpenOptions::read_write()).unwrap();
            f.fallocate(
                daxfs::FallocFlags {
                    zero_range: true,
                    keep_size: *keep_size,
                    ..Default::default()
                },
                *off,
                *len,
            )
            .unwrap();
        }
        Op::Unshare(p, off, len) => {
            let f = fs.open(p, &OpenOptions::read_write()).unwrap();
            f.fallocate(
                daxfs::FallocFlags {
                    unshare: true,
                    keep_size: true,
                    ..Default::default()
                },
                *off,
                *len,
            )
            .unwrap();
        }
    }
}

/// Which writes of `ops` (after `setup`) are overwrites in place: they
/// start inside the old size, and every block they touch there holds data
/// the file alone owns (written by an earlier write and not shared, punched, zeroed or
/// truncated away since). Only those may be seen torn after a crash; any
/// other write allocates or copies, and commits after its data is durable.
/// A model of the workload, not daxfs's own view of its blocks; it is
/// conservative (a block it does not know to be owned and written is not).
fn in_place_writes(setup: &[Op], ops: &[Op]) -> Vec<bool> {
    use std::collections::BTreeSet;
    const BS: u64 = 4096;
    // path -> inode; inode -> (size, blocks written and owned alone)
    let mut paths: BTreeMap<&str, usize> = BTreeMap::new();
    let mut inodes: Vec<(u64, BTreeSet<u64>)> = vec![];
    let mut out = vec![];
    let forget = |set: &mut BTreeSet<u64>, off: u64, len: u64, whole: bool| {
        let (a, b) = if whole {
            (off.div_ceil(BS), (off + len) / BS)
        } else {
            (off / BS, (off + len).div_ceil(BS))
        };
        set.retain(|x| !(a..b).contains(x));
    };
    for (n, op) in setup.iter().chain(ops).enumerate() {
        let mut in_place = false;
        match *op {
            Op::Create(p) => {
                paths.insert(p, inodes.len());
                inodes.push((0, BTreeSet::new()));
            }
            Op::Write(p, off, len, _) | Op::WriteOnly(p, off, len, _) => {
                let (size, set) = &mut inodes[paths[p]];
                let end = off + len as u64;
                // The part inside the old size (the only part a torn
                // write shows: the size commits after the data past it).
                let inside = end.min(*size);
                in_place =
                    off < inside && (off / BS..inside.div_ceil(BS)).all(|b| set.contains(&b));
                set.extend(off / BS..end.div_ceil(BS));
                *size = (*size).max(end);
            }
            Op::Truncate(p, len) => {
                let (size, set) = &mut inodes[paths[p]];
                set.retain(|&b| b < len.div_ceil(BS));
                *size = len;
            }
            Op::Rename(a, b) => {
                // (Directories are not in the model.)
                if let Some(i) = paths.remove(a) {
                    paths.insert(b, i);
                }
            }
            Op::Unlink(p) => {
                paths.remove(p);
            }
            Op::Link(a, b) => {
                let i = paths[a];
                paths.insert(b, i);
            }
            Op::Mkdir(_) | Op::Symlink(..) | Op::TmpDrop(_) => {}
            Op::Exchange(a, b) => {
                let (ia, ib) = (paths.remove(a), paths.remove(b));
                if let Some(i) = ia {
                    paths.insert(b, i);
                }
                if let Some(i) = ib {
                    paths.insert(a, i);
                }
            }
            Op::TmpLink(p, len, _) => {
                // Written while unnamed (fresh blocks), then named.
                let len = len as u64;
                paths.insert(p, inodes.len());
                inodes.push((len, (0..len.div_ceil(BS)).collect()));
            }
            Op::Clone(a, b) => {
                let (ia, ib) = (paths[a], paths[b]);
                let sa = inodes[ia].0;
                forget(&mut inodes[ia].1, 0, sa, false);
                forget(&mut inodes[ib].1, 0, sa, false);
                inodes[ib].0 = inodes[ib].0.max(sa);
            }
            Op::CloneRange(a, b, so, doff, len) => {
                let (ia, ib) = (paths[a], paths[b]);
                forget(&mut inodes[ia].1, so, len, false);
                forget(&mut inodes[ib].1, doff, len, false);
                inodes[ib].0 = inodes[ib].0.max(doff + len);
            }
            Op::Dedupe(a, b, off, len) => {
                forget(&mut inodes[paths[a]].1, off, len, false);
                forget(&mut inodes[paths[b]].1, off, len, false);
            }
            Op::Unshare(p, off, len) => forget(&mut inodes[paths[p]].1, off, len, false),
            Op::Punch(p, off, len) => forget(&mut inodes[paths[p]].1, off, len, true),
            Op::Zero(p, off, len, keep) => {
                let (size, set) = &mut inodes[paths[p]];
                forget(set, off, len, true);
                if !keep {
                    *size = (*size).max(off + len);
                }
            }
        }
        if n >= setup.len() {
            out.push(in_place);
        }
    }
    out
}

/// True when `got` could be `before` with the in-place part of a write to
/// `path` partly done: every byte of the file is from `before` or `after`,
/// and the size is still the old one. Only bytes inside the old size are ever
/// written in place; a size increase commits after the bytes it exposes are
/// durable, so a file with the new size must be `after` exactly.
fn torn_overwrite_ok(got: &State, before: &State, after: &State, path: &str) -> bool {
    let (Some(Obj::File(g)), Some(Obj::File(b)), Some(Obj::File(a))) =
        (got.get(path), before.get(path), after.get(path))
    else {
        return false;
    };
    let same_rest = got
        .iter()
        .filter(|(k, _)| *k != path)
        .eq(before.iter().filter(|(k, _)| *k != path));
    same_rest
        && g.len() == b.len()
        && g.iter()
            .enumerate()
            .all(|(i, x)| b.get(i) == Some(x) || a.get(i) == Some(x))
}

fn run_workload(name: &str, setup: &[Op], ops: &[Op], random_subsets: u64) {
    let dev = Arc::new(CrashDevice::new(4 << 20));
    Fs::mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
    {
        let fs = Fs::mount(dev.clone(), &MountOptions::default()).unwrap();
        for op in setup {
            apply(&fs, op);
        }
    }
    dev.reset_recording();
    let fs = Fs::mount(dev.clone(), &MountOptions::default()).unwrap();
    let in_place = in_place_writes(setup, ops);
    let mut states = vec![snapshot(&fs)];
    let mut ends = vec![dev.fences()];
    for op in ops {
        apply(&fs, op);
        states.push(snapshot(&fs));
        ends.push(dev.fences());
    }
    drop(fs);
    let total = dev.fences();
    let mut checked = 0;
    let mut replay = dev.replay();
    for k in 0..total {
        replay.seek_after_fence(k);
        // Operations complete (durable) by fence k, and the one in progress.
        let j = ends.iter().rposition(|&e| e <= k + 1).unwrap_or(0);
        let mut subsets = vec![Subset::None, Subset::All];
        subsets.extend((0..random_subsets).map(|s| Subset::Random(s * 7919 + k as u64)));
        for sub in subsets {
            let img = Arc::new(MemDevice::from_image(replay.image(sub)));
            let fs = Fs::mount(img.clone(), &MountOptions::default()).unwrap_or_else(|e| {
                panic!("{name}: mount after crash at fence {k} ({sub:?}): {e}")
            });
            let got = snapshot(&fs);
            drop(fs);
            let rep = daxfs::fsck::fsck(&*img, &mut |_, _, _| {}).unwrap();
            assert!(
                rep.is_clean(),
                "{name}: fsck after crash at fence {k} ({sub:?}): {:#?}",
                rep.problems
            );
            let ok = got == states[j]
                || states.get(j + 1).is_some_and(|s| *s == got)
                || matches!(ops.get(j), Some(Op::Write(p, ..) | Op::WriteOnly(p, ..)) if in_place[j] && states.get(j + 1).is_some_and(|a| torn_overwrite_ok(&got, &states[j], a, p)));
            assert!(
                ok,
                "{name}: crash at fence {k} ({sub:?}) after {j} complete ops ({:?} in progress): state matches neither\n got: {:?}\n before: {:?}",
                ops.get(j),
                keys(&got),
                keys(&states[j])
            );
            checked += 1;
        }
    }
    assert!(checked > 0);
    let _ = Device::len(&*dev);
}

fn keys(s: &State) -> Vec<(String, usize)> {
    s.iter()
        .map(|(k, v)| (k.clone(), if let Obj::File(d) = v { d.len() } else { 0 }))
        .collect()
}

#[test]
fn crash_namespace_workload() {
    let ops = [
        Op::Mkdir("/d"),
        Op::Create("/d/a"),
        Op::Write("/d/a", 0, 10_000, 1),
        Op::Create("/b"),
        Op::Link("/d/a", "/c"),
        Op::Rename("/d/a", "/b"),
        Op::Symlink("/b", "/l"),
        Op::Mkdir("/d/e"),
        Op::Rename("/d/e", "/e2"),
        Op::Unlink("/c"),
        Op::Unlink("/b"),
        Op::Create("/f"),
    ];
    run_workload("namespace", &[], &ops, 2);
}

#[test]
fn crash_inode_api_workload() {
    let setup = [
        Op::Mkdir("/d"),
        Op::Create("/d/in"),
        Op::Create("/f"),
        Op::Write("/f", 0, 5000, 1),
    ];
    let ops = [
        Op::Exchange("f", "d"),
        Op::TmpLink("t", 9000, 2),
        Op::TmpDrop(6000),
        Op::Exchange("t", "f"),
    ];
    run_workload("inode api", &setup, &ops, 2);
}

#[test]
fn crash_data_workload() {
    let setup = [Op::Create("/x"), Op::Write("/x", 0, 20_000, 9)];
    let ops = [
        Op::Write("/x", 20_000, 50_000, 2),
        Op::Write("/x", 100, 3000, 3),
        Op::Truncate("/x", 5000),
        Op::Write("/x", 200_000, 8192, 4),
        Op::Truncate("/x", 300_000),
        Op::Create("/y"),
        Op::Write("/y", 0, 600_000, 5),
        Op::Unlink("/x"),
        Op::Rename("/y", "/x"),
    ];
    run_workload("data", &setup, &ops, 2);
}

#[test]
fn crash_many_small_files() {
    static NAMES: [&str; 12] = [
        "/f0", "/f1", "/f2", "/f3", "/f4", "/f5", "/f6", "/f7", "/f8", "/f9", "/f10", "/f11",
    ];
    let mut ops = vec![];
    for (i, n) in NAMES.iter().enumerate() {
        ops.push(Op::Create(n));
        ops.push(Op::Write(n, 0, 4096, i as u64));
    }
    for n in NAMES.iter().step_by(3) {
        ops.push(Op::Unlink(n));
    }
    run_workload("small files", &[], &ops, 1);
}

#[test]
fn crash_clone_dedupe_and_copy_on_write() {
    let setup = [
        Op::Create("/a"),
        Op::Write("/a", 0, 40_000, 11),
        Op::Create("/b"),
        Op::Write("/b", 0, 40_000, 11),
    ];
    let ops = [
        Op::Create("/c"),
        Op::Clone("/a", "/c"),
        // Copy-on-write writes into the clone: unaligned, spanning blocks.
        Op::Write("/c", 5000, 3000, 12),
        Op::Write("/a", 0, 100, 13),
        Op::CloneRange("/a", "/c", 8192, 65536, 8192),
        Op::Dedupe("/a", "/b", 16384, 16384),
        Op::Write("/b", 20_000, 10, 14),
        Op::Unshare("/c", 0, 80_000),
        Op::Truncate("/c", 10_000),
        Op::Unlink("/a"),
    ];
    run_workload("sharing", &setup, &ops, 2);
}

/// Writes that return without fsync are durable all the same: writes that
/// extend a file inside its last block (in place, into written blocks), an
/// overwrite inside the size, then metadata changes of other files. Every
/// image after a write returned holds its size and bytes.
#[test]
fn crash_extending_write_without_fsync() {
    let setup = [Op::Create("/f"), Op::Write("/f", 0, 100, 1)];
    let ops = [
        Op::WriteOnly("/f", 100, 100, 2),
        Op::Mkdir("/after"),
        Op::WriteOnly("/f", 150, 3000, 3),
        Op::WriteOnly("/f", 10, 20, 4),
        Op::Create("/g"),
        Op::WriteOnly("/f", 3150, 2000, 5),
        Op::Rename("/g", "/after/g"),
    ];
    run_workload("extending write without fsync", &setup, &ops, 2);
}

/// A process killed after a write that extended a file and a later
/// metadata change (the device persists nothing more, and no unmount
/// runs): the next mount has the write's size and bytes. An in-place
/// overwrite keeps its times in memory, and the next commit, of any file,
/// carries them: a later commit never makes durable a state without an
/// earlier write's changes.
#[test]
fn killed_after_extending_write_and_mkdir() {
    let dev = Arc::new(CrashDevice::new(4 << 20));
    Fs::mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
    {
        let fs = Fs::mount(dev.clone(), &MountOptions::default()).unwrap();
        let f = fs.create("/f").unwrap();
        f.write_at(0, &[0xcd; 100]).unwrap();
        f.fsync().unwrap();
    }
    let fs = Fs::mount(dev.clone(), &MountOptions::default()).unwrap();
    let f = fs.open("/f", &OpenOptions::read_write()).unwrap();
    f.write_at(100, &[0x42; 100]).unwrap();
    fs.mkdir("/after", 0o755).unwrap();
    let killed = dev.persisted_image();
    // An overwrite inside the size, with a time that differs (the clock
    // is coarse), then a commit of another file.
    let before = f.stat().mtime;
    std::thread::sleep(std::time::Duration::from_millis(30));
    f.write_at(0, &[0x11; 10]).unwrap();
    let written = f.stat().mtime;
    assert_ne!(written, before, "the clock did not move");
    fs.create("/g").unwrap();
    let killed2 = dev.persisted_image();
    // Unmounting now writes everything, too late for the images taken.
    drop((f, fs));

    let img = Arc::new(MemDevice::from_image(killed));
    let fs = Fs::mount(img, &MountOptions::default()).unwrap();
    assert!(fs.stat("/after").is_ok());
    let st = fs.stat("/f").unwrap();
    assert_eq!(st.size, 200, "the extending write's size was lost");
    let g = fs.open("/f", &OpenOptions::read_only()).unwrap();
    let mut buf = [0u8; 200];
    assert_eq!(g.read_at(0, &mut buf).unwrap(), 200);
    assert!(buf[..100].iter().all(|&b| b == 0xcd));
    assert!(buf[100..].iter().all(|&b| b == 0x42));
    drop((g, fs));

    let img = Arc::new(MemDevice::from_image(killed2));
    let fs = Fs::mount(img, &MountOptions::default()).unwrap();
    assert!(fs.stat("/g").is_ok());
    let st = fs.stat("/f").unwrap();
    assert_eq!(st.size, 200);
    assert_eq!(
        st.mtime, written,
        "the commit of /g left out the overwrite's time"
    );
    let g = fs.open("/f", &OpenOptions::read_only()).unwrap();
    let mut buf = [0u8; 10];
    g.read_at(0, &mut buf).unwrap();
    assert_eq!(buf, [0x11; 10]);
}

/// Zeroing and punching unaligned ranges of written blocks: the partial
/// edge blocks and the whole blocks between change in one transaction, so
/// every crash shows the file before or after, never a zeroed edge with
/// the whole blocks still holding data; also on a clone (shared blocks),
/// and past the end of file. (Zeroing inside one block, changing nothing
/// else, is a write of zeros in place.)
#[test]
fn crash_unaligned_zero_and_punch() {
    let setup = [
        Op::Create("/x"),
        Op::Write("/x", 0, 10 * B as usize, 1),
        Op::Create("/y"),
        Op::Clone("/x", "/y"),
    ];
    let ops = [
        Op::Zero("/x", 1000, 3 * B + 500, true),
        Op::Punch("/x", 5 * B + 7, 2 * B),
        Op::Zero("/y", 100, 4 * B, true),
        Op::Zero("/x", 9 * B + 10, 2 * B, false),
    ];
    run_workload("unaligned zero and punch", &setup, &ops, 2);
}

/// Store faults through views commit lazily: the fault's transaction is in
/// memory at once and durable at msync, at the next ordinary transaction or
/// at unmount. Views cannot map the recording device, so the test runs what
/// a store through a view does (the fault's transaction, then the store)
/// through `File::store_as_view_for_test`. Crashes at every fence (during the
/// faults' data copies, between the faults and the msync, during the
/// deferred commits): mount and fsck are clean, the source of the clone
/// never changes, every 8-byte word of a faulted page is the old or the new
/// one (mmap stores are durable only after msync), and what an msync or a
/// later commit made durable is there.
#[test]
fn crash_lazy_store_faults() {
    const B: usize = 4096;
    let dev = Arc::new(CrashDevice::new(4 << 20));
    Fs::mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
    let a_data = pattern(21, 6 * B);
    {
        let fs = Fs::mount(dev.clone(), &MountOptions::default()).unwrap();
        let a = fs.create("/a").unwrap();
        a.write_at(0, &a_data).unwrap();
        a.fsync().unwrap();
        let b = fs.create("/b").unwrap();
        b.clone_from(&a).unwrap();
        let h = fs.create("/h").unwrap();
        h.set_len(4 * B as u64).unwrap();
    }
    dev.reset_recording();
    let fs = Fs::mount(dev.clone(), &MountOptions::default()).unwrap();
    let rw = OpenOptions::read_write();
    let b = fs.open("/b", &rw).unwrap();
    let h = fs.open("/h", &rw).unwrap();
    let page = |seed: u64| pattern(seed, B);
    // (file, page, new contents); the fence count once each is durable.
    let mut stores: Vec<(&str, usize, Vec<u8>)> = vec![];
    let mut durable_at: Vec<usize> = vec![];
    let store = |stores: &mut Vec<(&str, usize, Vec<u8>)>,
                 f: &daxfs::File,
                 name: &'static str,
                 p: usize,
                 seed: u64| {
        f.store_as_view_for_test((p * B) as u64, &page(seed))
            .unwrap();
        stores.push((name, p, page(seed)));
    };
    store(&mut stores, &b, "/b", 1, 31);
    store(&mut stores, &b, "/b", 3, 32);
    store(&mut stores, &h, "/h", 0, 33);
    b.msync_for_test().unwrap();
    h.msync_for_test().unwrap();
    durable_at.resize(stores.len(), dev.fences());
    store(&mut stores, &b, "/b", 2, 34);
    store(&mut stores, &b, "/b", 1, 35);
    b.msync_for_test().unwrap();
    durable_at.resize(stores.len(), dev.fences());
    store(&mut stores, &h, "/h", 3, 36);
    // An ordinary transaction makes the lazy one durable first (the data
    // store itself is not flushed: its words may be old or new).
    drop(fs.create("/c").unwrap());
    let after_create = dev.fences();
    store(&mut stores, &b, "/b", 5, 37);
    drop((b, h));
    drop(fs);
    let total = dev.fences();
    assert!(
        total > after_create,
        "unmount made the last lazy transaction durable"
    );
    let old = |name: &str, p: usize| -> Vec<u8> {
        if name == "/h" {
            vec![0; B]
        } else {
            a_data[p * B..(p + 1) * B].to_vec()
        }
    };
    let mut replay = dev.replay();
    let mut checked = 0;
    for k in 0..total {
        replay.seek_after_fence(k);
        for sub in [Subset::None, Subset::All, Subset::Random(k as u64 * 31 + 1)] {
            let img = Arc::new(MemDevice::from_image(replay.image(sub)));
            let fs = Fs::mount(img.clone(), &MountOptions::default())
                .unwrap_or_else(|e| panic!("mount after crash at fence {k} ({sub:?}): {e}"));
            let read = |p: &str| {
                let f = fs.open(p, &OpenOptions::read_only()).unwrap();
                let mut v = vec![0u8; f.stat().size as usize];
                assert_eq!(f.read_at(0, &mut v).unwrap(), v.len());
                v
            };
            assert_eq!(
                read("/a"),
                a_data,
                "crash at fence {k} ({sub:?}): /a changed"
            );
            let files = [("/b", read("/b")), ("/h", read("/h"))];
            for (name, got) in &files {
                for p in 0..got.len() / B {
                    let got = &got[p * B..(p + 1) * B];
                    // Every version this page may show: the old one, and each
                    // store to it; one made durable by fence k must be there
                    // (unless a later store to the page may show instead).
                    let mut allowed = vec![old(name, p)];
                    let mut must: Option<usize> = None;
                    for (i, (n, q, data)) in stores.iter().enumerate() {
                        if n == name && *q == p {
                            allowed.push(data.clone());
                            if durable_at.get(i).is_some_and(|&d| d <= k) {
                                must = Some(allowed.len() - 1);
                            }
                        }
                    }
                    for w in (0..B).step_by(8) {
                        let word = &got[w..w + 8];
                        let from = must.unwrap_or(0);
                        assert!(
                            allowed[from..].iter().any(|v| &v[w..w + 8] == word),
                            "crash at fence {k} ({sub:?}): {name} page {p} word {w} is garbage or lost a durable store"
                        );
                    }
                }
            }
            drop(fs);
            let rep = daxfs::fsck::fsck(&*img, &mut |_, _, _| {}).unwrap();
            assert!(
                rep.is_clean(),
                "fsck after crash at fence {k} ({sub:?}): {:#?}",
                rep.problems
            );
            checked += 1;
        }
    }
    assert!(checked > 0);
    // After the last fence everything is durable.
    let img = Arc::new(MemDevice::from_image(dev.persisted_image()));
    let fs = Fs::mount(img.clone(), &MountOptions::default()).unwrap();
    let f = fs.open("/b", &OpenOptions::read_only()).unwrap();
    let mut v = vec![0u8; 6 * B];
    f.read_at(0, &mut v).unwrap();
    assert_eq!(&v[B..2 * B], &page(35)[..]);
    assert_eq!(&v[2 * B..3 * B], &page(34)[..]);
    assert_eq!(&v[0..B], &a_data[..B]);
}

/// A media-error report on a block shared by hundreds of files: one
/// transaction whose loss-tree and error-log nodes are mostly new, written
/// home (and to their replicas) before the commit record instead of through
/// the log. A crash at every persist point: mount and fsck are clean, and
/// the report is there for every owner or for none.
#[test]
fn crash_large_media_report() {
    const OWNERS: usize = 300;
    let dev = Arc::new(CrashDevice::new(8 << 20));
    Fs::mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
    let bad;
    {
        let fs = Fs::mount(dev.clone(), &MountOptions::default()).unwrap();
        let src = fs.create("/src").unwrap();
        src.write_at(0, &pattern(3, 4 * 4096)).unwrap();
        for i in 1..OWNERS {
            let c = fs.create(format!("/c{i}")).unwrap();
            c.clone_from(&src).unwrap();
        }
        let e = src.fiemap().unwrap();
        bad = e[0].physical + 4096;
    }
    dev.reset_recording();
    let pairs_before;
    {
        let fs = Fs::mount(dev.clone(), &MountOptions::default()).unwrap();
        pairs_before = fs.replica_pairs().unwrap().len();
        let ev = fs.inject_error(bad, 4096).unwrap();
        assert_eq!(
            ev.iter().filter(|e| e.action == "data lost").count(),
            OWNERS
        );
        let grown = fs.replica_pairs().unwrap().len() - pairs_before;
        assert!(grown >= 4, "the report made {grown} new nodes");
    }
    let total = dev.fences();
    let mut replay = dev.replay();
    let (mut before, mut after) = (0, 0);
    for k in 0..total {
        replay.seek_after_fence(k);
        for sub in [Subset::None, Subset::All, Subset::Random(k as u64 * 13)] {
            let img = Arc::new(MemDevice::from_image(replay.image(sub)));
            let fs = Fs::mount(img.clone(), &MountOptions::default())
                .unwrap_or_else(|e| panic!("mount after crash at fence {k} ({sub:?}): {e}"));
            let losses = fs.all_losses().unwrap().len();
            let log = fs.error_log().unwrap();
            let logged = log.iter().filter(|e| e.action == "data lost").count();
            // One entry names every owner: whole or absent.
            assert!(
                log.iter().all(|e| e.seq == log[0].seq),
                "crash at fence {k} ({sub:?}): the report's owners in several entries"
            );
            match (losses, logged) {
                (0, 0) => before += 1,
                (OWNERS, OWNERS) => after += 1,
                other => panic!("crash at fence {k} ({sub:?}): losses and log entries {other:?}"),
            }
            drop(fs);
            let rep = daxfs::fsck::fsck(&*img, &mut |_, _, _| {}).unwrap();
            assert!(
                rep.is_clean(),
                "fsck after crash at fence {k} ({sub:?}): {:#?}",
                rep.problems
            );
        }
    }
    assert!(before > 0 && after > 0, "before {before}, after {after}");
}

/// Blocks of every extent tree (nodes and replicas) once `ops` have run on
/// a fresh file system: tells the workloads below do what they say.
fn tree_blocks_after(ops: &[Op]) -> u64 {
    let dev = Arc::new(MemDevice::new(4 << 20));
    Fs::mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
    let fs = Fs::mount(dev, &MountOptions::default()).unwrap();
    for op in ops {
        apply(&fs, op);
    }
    common::all_tree_blocks(&fs)
}

const B: u64 = 4096;

/// Files created and written whose extents go into their inode records:
/// one block, two extents, a full inline array of four, several blocks in
/// one extent; no extent tree anywhere.
#[test]
fn crash_inline_create_and_write() {
    let ops = [
        Op::Create("/a"),
        Op::Write("/a", 0, 4096, 1),
        Op::Create("/b"),
        Op::Write("/b", 0, 100, 2),
        Op::Write("/b", 2 * B, 5000, 3),
        Op::Write("/b", 5 * B, 10, 4),
        Op::Write("/b", 7 * B, 4096, 5),
        Op::Create("/c"),
        Op::Write("/c", 0, 50_000, 6),
        Op::Write("/a", 100, 200, 7),
    ];
    assert_eq!(tree_blocks_after(&ops), 0);
    run_workload("inline create and write", &[], &ops, 2);
}

/// A file with four inline extents gets a fifth: the tree is built from
/// the whole map and the inline area cleared in one transaction. Then the
/// tree takes ordinary edits, and a clone of it gets a tree of its own.
#[test]
fn crash_inline_to_tree() {
    let setup = [
        Op::Create("/x"),
        Op::Write("/x", 0, 4096, 1),
        Op::Write("/x", 2 * B, 4096, 2),
        Op::Write("/x", 4 * B, 4096, 3),
        Op::Write("/x", 6 * B, 4096, 4),
        Op::Create("/y"),
    ];
    let ops = [
        Op::Write("/x", 8 * B, 4096, 5),
        Op::Write("/x", 10 * B, 300, 6),
        Op::Write("/x", 3 * B, 10, 7),
        Op::Clone("/x", "/y"),
    ];
    assert_eq!(tree_blocks_after(&setup), 0);
    let all: Vec<Op> = setup.iter().chain(ops.iter()).cloned().collect();
    assert_eq!(
        tree_blocks_after(&all),
        4,
        "two trees of one node, with replicas"
    );
    run_workload("inline to tree", &setup, &ops, 2);
}

/// A file with an extent tree truncated to nothing: the tree's nodes are
/// freed and the file is inline again, in one transaction; then it is
/// written inline. A shorter file that still maps a block keeps its tree;
/// punching every block of a tree file frees the tree too.
#[test]
fn crash_tree_to_inline_on_truncate() {
    let mut setup = vec![Op::Create("/x"), Op::Create("/z")];
    for i in 0..6 {
        setup.push(Op::Write("/x", 2 * i * B, 4096, i));
        setup.push(Op::Write("/z", 3 * i * B, 4096, 10 + i));
    }
    let ops = [
        Op::Truncate("/x", 0),
        Op::Write("/x", B, 4096, 20),
        Op::Truncate("/z", 2 * B),
        Op::Truncate("/z", 0),
        Op::Truncate("/z", 3 * B),
        Op::Create("/p"),
        Op::Write("/p", 0, 4096, 30),
        Op::Write("/p", 2 * B, 4096, 31),
        Op::Write("/p", 4 * B, 4096, 32),
        Op::Write("/p", 6 * B, 4096, 33),
        Op::Write("/p", 8 * B, 4096, 34),
        Op::Punch("/p", 0, 9 * B),
    ];
    assert_eq!(tree_blocks_after(&setup), 4);
    let all: Vec<Op> = setup.iter().chain(ops.iter()).cloned().collect();
    assert_eq!(tree_blocks_after(&all), 0);
    run_workload("tree to inline", &setup, &ops, 2);
}

/// Reverse-map intents across their whole life: one-block writes at gaps
/// make a record each, so the commits append intents and keep the records
/// pending until the area fills (a commit that puts them all in the tree,
/// logs its leaves and starts the intent area over), then append again;
/// unlinks remove records. A crash at every persist point mounts (replaying the intents)
/// and checks clean.
#[test]
fn crash_reverse_map_intents() {
    let mut ops = vec![Op::Create("/p"), Op::Create("/q")];
    for i in 0..48u64 {
        ops.push(Op::Write("/p", 2 * i * B, 100, i));
        ops.push(Op::Write("/q", 2 * i * B, 100, 100 + i));
    }
    ops.push(Op::Unlink("/p"));
    // On a plain device first: the workload defers (intents pending after
    // some operation) and logs the leaves again mid-way (none pending after
    // a later one, before the unmount).
    {
        let dev = Arc::new(MemDevice::new(4 << 20));
        Fs::mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
        let fs = Fs::mount(dev.clone(), &MountOptions::default()).unwrap();
        let pending = || {
            let mut b = vec![0u8; 4096];
            dev.read(0, &mut b).unwrap();
            <daxfs_format::Superblock as zerocopy::FromBytes>::read_from_bytes(&b[..])
                .unwrap()
                .rmap_intents
                .get()
        };
        let (mut deferred, mut restarted) = (false, false);
        for op in &ops {
            apply(&fs, op);
            let n = pending();
            restarted |= deferred && n == 0;
            deferred |= n > 0;
        }
        assert!(
            deferred && restarted,
            "deferred {deferred}, restarted {restarted}"
        );
    }
    run_workload("reverse-map intents", &[], &ops, 0);
}

/// Mount's repair of superblock counters the trees contradict (a forged
/// `next_ino`, `error_seq` and `free_blocks`, both copies resealed),
/// crashed at every persist point: the next mount finds the forged values
/// (and repairs them) or the repaired ones; the files are intact, a create
/// works and fsck is clean after.
#[test]
fn crash_counter_repair_at_mount() {
    use zerocopy::{FromBytes, IntoBytes};
    let setup = [
        Op::Mkdir("/d"),
        Op::Create("/d/a"),
        Op::Write("/d/a", 0, 9000, 1),
        Op::Create("/b"),
        Op::Write("/b", 0, 3000, 2),
    ];
    let dev = Arc::new(MemDevice::new(4 << 20));
    Fs::mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
    let want = {
        let fs = Fs::mount(dev.clone(), &MountOptions::default()).unwrap();
        for op in &setup {
            apply(&fs, op);
        }
        snapshot(&fs)
    };
    let mut img = dev.image();
    let last = img.len() / 4096 - 1;
    for b in [0, last] {
        let blk: &mut [u8; 4096] = (&mut img[b * 4096..(b + 1) * 4096]).try_into().unwrap();
        let mut sb = daxfs_format::Superblock::read_from_bytes(&blk[..]).unwrap();
        sb.next_ino = u64::MAX.into();
        sb.error_seq = u64::MAX.into();
        sb.free_blocks = 0.into();
        blk.copy_from_slice(sb.as_bytes());
        daxfs_format::fuzz::reseal(blk);
    }
    let dev = Arc::new(CrashDevice::from_image(img));
    dev.reset_recording();
    drop(Fs::mount(dev.clone(), &MountOptions::default()).unwrap());
    let total = dev.fences();
    assert!(total > 0, "the repair wrote nothing");
    let mut replay = dev.replay();
    for k in 0..total {
        replay.seek_after_fence(k);
        for sub in [Subset::None, Subset::All, Subset::Random(k as u64 * 31)] {
            let img = Arc::new(MemDevice::from_image(replay.image(sub)));
            let fs = Fs::mount(img.clone(), &MountOptions::default())
                .unwrap_or_else(|e| panic!("mount after crash at fence {k} ({sub:?}): {e}"));
            assert_eq!(snapshot(&fs), want, "crash at fence {k} ({sub:?})");
            fs.create("/new")
                .unwrap_or_else(|e| panic!("create after crash at fence {k} ({sub:?}): {e}"));
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

/// Every pointer to a node names its crc, so a change to a leaf of a deep
/// tree rewrites each ancestor, the root's pointer in the inode record, and
/// that record's own ancestors in the inode tree up to the superblock: a
/// file whose extent tree has two levels, in a directory whose tree has two
/// levels, among enough inodes for an inode tree of two levels, takes
/// writes, a punch, a create and an unlink; each is crashed at every
/// persist point.
#[test]
fn crash_deep_tree_ancestor_crcs() {
    const NAMES: [&str; 20] = [
        "/d/f0", "/d/f1", "/d/f2", "/d/f3", "/d/f4", "/d/f5", "/d/f6", "/d/f7", "/d/f8", "/d/f9",
        "/d/f10", "/d/f11", "/d/f12", "/d/f13", "/d/f14", "/d/f15", "/d/f16", "/d/f17", "/d/f18",
        "/d/f19",
    ];
    let mut setup = vec![Op::Mkdir("/d"), Op::Create("/frag")];
    setup.extend(NAMES.iter().map(|n| Op::Create(n)));
    // One extent per written block: 180 extents, more than a leaf holds.
    setup.extend((0..180u64).map(|i| Op::Write("/frag", 2 * i * B, 100, i)));
    let ops = [
        Op::Write("/frag", 401 * B, 4096, 1000),
        Op::Punch("/frag", 10 * B, 4 * B),
        Op::Create("/d/new"),
        Op::Unlink("/d/f3"),
    ];
    // Two leaves and a root, each with its replica.
    assert!(tree_blocks_after(&setup) >= 6);
    run_workload("deep tree ancestor crcs", &setup, &ops, 1);
}

/// A clone too large for one transaction (40 extents where the 64-block log
/// takes 15 a transaction) is made in several: a crash at any persist point
/// leaves the destination with its old bytes and a prefix of the clone
/// applied in whole extents, never anything else; mount and fsck are clean.
#[test]
fn crash_split_clone() {
    const B: usize = 4096;
    const N: usize = 40;
    let dev = Arc::new(CrashDevice::new(4 << 20));
    Fs::mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
    let old = pattern(31, (N + 8) * B);
    let mut src = vec![0u8; N * B];
    {
        let fs = Fs::mount(dev.clone(), &MountOptions::default()).unwrap();
        let s = fs.create("/s").unwrap();
        let t = fs.create("/t").unwrap();
        for i in 0..N {
            // The files' blocks alternate on the device: 40 extents.
            let data = pattern(100 + i as u64, B);
            s.write_at((i * B) as u64, &data).unwrap();
            t.write_at((i * B) as u64, &data).unwrap();
            src[i * B..(i + 1) * B].copy_from_slice(&data);
        }
        assert_eq!(s.fiemap().unwrap().len(), N);
        let d = fs.create("/d").unwrap();
        d.write_at(0, &old).unwrap();
    }
    dev.reset_recording();
    {
        let fs = Fs::mount(dev.clone(), &MountOptions::default()).unwrap();
        let s = fs.open("/s", &OpenOptions::read_only()).unwrap();
        let d = fs.open("/d", &OpenOptions::read_write()).unwrap();
        d.clone_from(&s).unwrap();
    }
    // Every prefix of whole extents (here: blocks) of the clone.
    let prefix = |k: usize| {
        let mut v = old.clone();
        v[..k * B].copy_from_slice(&src[..k * B]);
        v
    };
    let total = dev.fences();
    let mut replay = dev.replay();
    let mut partial = 0;
    for k in 0..total {
        replay.seek_after_fence(k);
        for sub in [Subset::None, Subset::All, Subset::Random(k as u64 * 31 + 7)] {
            let img = Arc::new(MemDevice::from_image(replay.image(sub)));
            let fs = Fs::mount(img.clone(), &MountOptions::default())
                .unwrap_or_else(|e| panic!("mount after crash at fence {k} ({sub:?}): {e}"));
            let d = fs.open("/d", &OpenOptions::read_only()).unwrap();
            let mut got = vec![0u8; d.stat().size as usize];
            assert_eq!(d.read_at(0, &mut got).unwrap(), got.len());
            drop(d);
            drop(fs);
            let rep = daxfs::fsck::fsck(&*img, &mut |_, _, _| {}).unwrap();
            assert!(
                rep.is_clean(),
                "fsck after crash at fence {k} ({sub:?}): {:#?}",
                rep.problems
            );
            let Some(n) = (0..=N).find(|&n| got == prefix(n)) else {
                panic!("crash at fence {k} ({sub:?}): the destination is no prefix of the clone");
            };
            if n > 0 && n < N {
                partial += 1;
            }
        }
    }
    assert!(partial > 0, "the clone was never seen part done");
}

/// Allocating writes into holes copy their data outside the metadata lock
/// and commit the blocks, mapping and size after: a crash at any point
/// leaves the old file or the new one (the blocks free when the commit did
/// not land). Covers a write past an unaligned end of file (the old last
/// block's tail zeroed in the commit), an append, and a new file.
#[test]
fn crash_allocating_write_outside_the_lock() {
    let setup = [Op::Create("/a"), Op::Write("/a", 0, 5000, 1)];
    let ops = [
        Op::Write("/a", 9000, 120_000, 2),
        Op::WriteOnly("/a", 131_072, 100_000, 3),
        Op::Create("/b"),
        Op::WriteOnly("/b", 0, 300_000, 4),
        // Into holes inside the size: a commit before the data would show
        // zeros, which the old bytes (a hole) are too.
        Op::Truncate("/b", 1_000_000),
        Op::Write("/b", 400_000, 200_000, 5),
        Op::Write("/b", 700_000, 8192, 6),
        Op::Unlink("/a"),
    ];
    run_workload("allocating write", &setup, &ops, 2);
}

/// `setattr` with a size and a mode: after a crash at any persist point the
/// file has both the old size and mode or both the new ones, never one
/// half (a shrink, then a growth).
#[test]
fn crash_setattr_size_with_mode() {
    let dev = Arc::new(CrashDevice::new(4 << 20));
    Fs::mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
    {
        let fs = Fs::mount(dev.clone(), &MountOptions::default()).unwrap();
        apply(&fs, &Op::Create("/f"));
        apply(&fs, &Op::Write("/f", 0, 20_000, 3));
    }
    dev.reset_recording();
    let fs = Fs::mount(dev.clone(), &MountOptions::default()).unwrap();
    let ino = fs.stat("/f").unwrap().ino;
    let seen = |fs: &Fs| {
        let st = fs.stat("/f").unwrap();
        (st.size, st.perm)
    };
    let mut states = vec![seen(&fs)];
    let mut ends = vec![dev.fences()];
    for (size, mode) in [(5_000, 0o600), (30_000, 0o640)] {
        let a = daxfs::SetAttr {
            size: Some(size),
            mode: Some(mode),
            ..Default::default()
        };
        fs.setattr(ino, &a).unwrap();
        states.push(seen(&fs));
        ends.push(dev.fences());
    }
    assert_eq!(states[1..], [(5_000, 0o600), (30_000, 0o640)]);
    drop(fs);
    let mut replay = dev.replay();
    for k in 0..dev.fences() {
        replay.seek_after_fence(k);
        let j = ends.iter().rposition(|&e| e <= k + 1).unwrap_or(0);
        for sub in [Subset::None, Subset::All, Subset::Random(k as u64 * 13)] {
            let img = Arc::new(MemDevice::from_image(replay.image(sub)));
            let fs = Fs::mount(img.clone(), &MountOptions::default()).unwrap();
            let got = seen(&fs);
            drop(fs);
            assert!(
                got == states[j] || states.get(j + 1) == Some(&got),
                "crash at fence {k} ({sub:?}): {got:?}, neither {:?} nor {:?}",
                states[j],
                states.get(j + 1)
            );
            let rep = daxfs::fsck::fsck(&*img, &mut |_, _, _| {}).unwrap();
            assert!(rep.is_clean(), "fence {k}: {:#?}", rep.problems);
        }
    }
}

/// Group commit: five threads' transactions (creates in two directories, an
/// allocating write, a rename, an unlink) committed in memory and made
/// durable by one journal commit (the test hook holds its leader until all
/// five wait). A crash at every persist point shows each transaction all
/// there or not at all (one commit: all of them or none), every operation
/// whose call had returned there, and fsck clean.
#[test]
fn crash_group_commit_of_several_threads() {
    let dev = Arc::new(CrashDevice::new(4 << 20));
    Fs::mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
    let setup = [
        Op::Mkdir("/d1"),
        Op::Mkdir("/d2"),
        Op::Mkdir("/d3"),
        Op::Create("/w"),
        Op::Write("/w", 0, 4096, 1),
        Op::Create("/r"),
        Op::Create("/u"),
        Op::Write("/u", 0, 8192, 2),
    ];
    {
        let fs = Fs::mount(dev.clone(), &MountOptions::default()).unwrap();
        for op in &setup {
            apply(&fs, op);
        }
    }
    dev.reset_recording();
    let fs = Fs::mount(dev.clone(), &MountOptions::default()).unwrap();
    let before = snapshot(&fs);
    let w = fs.open("/w", &OpenOptions::read_write()).unwrap();
    let ops: [&(dyn Fn() + Sync); 5] = [
        &|| drop(fs.create("/d1/a").unwrap()),
        &|| drop(fs.create("/d2/b").unwrap()),
        // Past the end: allocates, and commits the new size.
        &|| assert_eq!(w.write_at(8192, &pattern(3, 4096)).unwrap(), 4096),
        &|| fs.rename("/r", "/d3/r2").unwrap(),
        &|| fs.unlink("/u").unwrap(),
    ];
    fs.test_hold_group_commit(ops.len());
    let start = dev.fences();
    // Fences recorded when each call returned.
    let returned: Vec<usize> = std::thread::scope(|s| {
        let hs: Vec<_> = ops
            .iter()
            .map(|op| {
                s.spawn(|| {
                    op();
                    dev.fences()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    drop(w);
    let after = snapshot(&fs);
    drop(fs);
    // Each operation's effect on the tree, to build every combination.
    type Edit = Box<dyn Fn(&mut State)>;
    let mut edits: Vec<Edit> = vec![
        Box::new(|s| drop(s.insert("/d1/a".into(), Obj::File(vec![])))),
        Box::new(|s| drop(s.insert("/d2/b".into(), Obj::File(vec![])))),
        Box::new(|s| {
            let mut d = pattern(1, 4096);
            d.resize(8192, 0);
            d.extend(pattern(3, 4096));
            s.insert("/w".into(), Obj::File(d));
        }),
        Box::new(|s| {
            let r = s.remove("/r").unwrap();
            s.insert("/d3/r2".into(), r);
        }),
        Box::new(|s| drop(s.remove("/u"))),
    ];
    let combos: Vec<State> = (0..1u32 << edits.len())
        .map(|m| {
            let mut st = before.clone();
            for (i, e) in edits.iter_mut().enumerate() {
                if m & (1 << i) != 0 {
                    e(&mut st);
                }
            }
            st
        })
        .collect();
    assert_eq!(
        combos[combos.len() - 1],
        after,
        "the model of the five operations"
    );
    let total = dev.fences();
    let mut replay = dev.replay();
    for k in start..total {
        replay.seek_after_fence(k);
        for sub in [
            Subset::None,
            Subset::All,
            Subset::Random(k as u64),
            Subset::Random(k as u64 * 31 + 7),
        ] {
            let img = Arc::new(MemDevice::from_image(replay.image(sub)));
            let fs = Fs::mount(img.clone(), &MountOptions::default())
                .unwrap_or_else(|e| panic!("group: mount after crash at fence {k} ({sub:?}): {e}"));
            let got = snapshot(&fs);
            drop(fs);
            let rep = daxfs::fsck::fsck(&*img, &mut |_, _, _| {}).unwrap();
            assert!(
                rep.is_clean(),
                "group: fsck after crash at fence {k} ({sub:?}): {:#?}",
                rep.problems
            );
            let Some(m) = combos.iter().position(|c| *c == got) else {
                panic!(
                    "group: crash at fence {k} ({sub:?}): not a combination of whole operations\n got: {:?}",
                    keys(&got)
                );
            };
            // One commit holds them all: none or all.
            assert!(
                m == 0 || m == combos.len() - 1,
                "group: crash at fence {k} ({sub:?}): operations {m:#b} only, of one commit"
            );
            for (i, &r) in returned.iter().enumerate() {
                assert!(
                    r > k + 1 || m & (1 << i) != 0,
                    "group: crash at fence {k} ({sub:?}): operation {i} had returned (at fence {r}) but is missing"
                );
            }
        }
    }
}
