//! Reads that change nothing, and the races around creating a file: a
//! plain `O_CREAT` open racing another create, an unlink racing a create.
mod common;
use common::*;
use daxfs::OpenOptions;
use std::sync::{Arc, Barrier};

const THREADS: usize = 4;

/// Plain `O_CREAT` opens of a name that does not exist yet, started
/// together from four threads: all succeed and open the same file (none
/// fails with EEXIST because another created it first).
#[test]
fn plain_create_opens_racing_open_the_same_file() {
    let (dev, fs) = new_fs(16);
    let barrier = Arc::new(Barrier::new(THREADS));
    let rounds = 200;
    let inos: Vec<Vec<u64>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..THREADS)
            .map(|_| {
                let (fs, barrier) = (fs.clone(), barrier.clone());
                s.spawn(move || {
                    (0..rounds)
                        .map(|i| {
                            barrier.wait();
                            let f = fs
                                .open(format!("/f{i}"), &OpenOptions::create())
                                .unwrap_or_else(|e| panic!("round {i}: open failed: {e}"));
                            f.stat().ino
                        })
                        .collect()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, &first) in inos[0].iter().enumerate() {
        for other in &inos[1..] {
            assert_eq!(first, other[i], "round {i}: two files for one name");
        }
        assert_eq!(fs.stat(format!("/f{i}")).unwrap().ino, first);
    }
    drop(fs);
    assert_fsck(&*dev);
}

/// A plain `O_CREAT` open while other threads create (exclusively) and
/// remove the same name in a loop: the open always succeeds, opening the
/// file it found or the one it made, never failing with EEXIST because the
/// other create came between its lookup and its own create.
#[test]
fn plain_create_open_racing_exclusive_creates_succeeds() {
    let (dev, fs) = new_fs(16);
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 1..THREADS {
            let (fs2, stop2) = (fs.clone(), &stop);
            s.spawn(move || {
                while !stop2.load(std::sync::atomic::Ordering::SeqCst) {
                    if let Ok(f) = fs2.create("/x") {
                        drop(f);
                    }
                    let _ = fs2.unlink("/x");
                }
            });
        }
        let res = (0..1000).try_for_each(|i| {
            fs.open("/x", &OpenOptions::create())
                .map(drop)
                .map_err(|e| format!("open {i}: {e}"))
        });
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        res.unwrap();
    });
    drop(fs);
    assert_fsck(&*dev);
}

/// An unlink racing an `O_CREAT` open of the same name: the caller's handle
/// stays a live file (unlinked, kept as an orphan until closed), never a
/// freed inode. Its data is still readable through it, and the file system
/// is consistent after.
#[test]
fn unlink_racing_create_leaves_a_live_handle() {
    let (dev, fs) = new_fs(16);
    let free0 = fs.info().free_blocks;
    let rounds = 150u64;
    std::thread::scope(|s| {
        let fs2 = fs.clone();
        s.spawn(move || {
            for i in 0..rounds {
                let p = format!("/r{i}");
                // Remove it as soon as it exists.
                while fs2.unlink(&p).is_err() {
                    std::hint::spin_loop();
                }
            }
        });
        for i in 0..rounds {
            let p = format!("/r{i}");
            let f = fs.open(&p, &OpenOptions::create()).unwrap();
            let data = pattern(i, 4096);
            f.write_at(0, &data).unwrap();
            let mut back = vec![0u8; 4096];
            assert_eq!(f.read_at(0, &mut back).unwrap(), 4096);
            assert_eq!(back, data, "round {i}: the handle's data changed");
            f.fsync().unwrap();
        }
    });
    assert_eq!(fs.readdir("/").unwrap().len(), 0);
    assert_eq!(fs.info().free_blocks, free0, "blocks leaked or freed twice");
    let fs = remount(&dev, fs);
    assert_eq!(fs.info().free_blocks, free0);
    drop(fs);
    assert_fsck(&*dev);
}

/// `stat`, `lstat`, `readdir` and `readlink` change nothing: with a lazy
/// transaction (a store fault through a view) committed in memory only,
/// they leave it so (no fence, so no commit), and see its state.
#[test]
fn reads_never_commit() {
    use daxfs::{Fs, MkfsOptions, MountOptions};
    use daxfs_device::CrashDevice;
    let dev = Arc::new(CrashDevice::new(4 << 20));
    Fs::mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
    let fs = Fs::mount(dev.clone(), &MountOptions::default()).unwrap();
    fs.mkdir("/d", 0o755).unwrap();
    fs.symlink("/d/f", "/l").unwrap();
    let f = fs.create("/d/f").unwrap();
    f.set_len(2 * 4096).unwrap();
    // The fault gives the hole a block, in a lazy transaction.
    f.store_as_view_for_test(0, &[7u8; 64]).unwrap();
    let fences = dev.fences();
    for _ in 0..3 {
        assert_eq!(fs.stat("/l").unwrap().blocks, 8, "the lazy block is seen");
        assert_eq!(fs.lstat("/l").unwrap().size, 4);
        assert_eq!(fs.readdir("/d").unwrap().len(), 1);
        assert_eq!(fs.readlink("/l").unwrap(), b"/d/f");
        assert!(fs.stat("/d/none").is_err());
    }
    assert_eq!(dev.fences(), fences, "a read committed");
    drop(f);
    drop(fs);
}

/// Readers stat, list and read links in a loop while writers rename,
/// create and unlink: every result is a state that existed. A file renamed
/// back and forth between two names is always seen under exactly one; a
/// symbolic link replaced by rename always reads a whole target; a file
/// made and removed is seen with its attributes whole or not at all.
#[test]
fn reads_see_whole_transactions() {
    let (dev, fs) = new_fs(16);
    fs.mkdir("/d", 0o755).unwrap();
    drop(fs.create("/d/a").unwrap());
    let a_ino = fs.stat("/d/a").unwrap().ino;
    fs.symlink("target-one", "/l").unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let rounds = 300;
    std::thread::scope(|s| {
        // Writer: /d/a <-> /d/b, and /l replaced by a link to another target.
        let w = {
            let (fs, stop) = (fs.clone(), &stop);
            s.spawn(move || {
                for i in 0..rounds {
                    let (from, to) = if i % 2 == 0 {
                        ("/d/a", "/d/b")
                    } else {
                        ("/d/b", "/d/a")
                    };
                    fs.rename(from, to).unwrap();
                    let t = if i % 2 == 0 {
                        "target-two-longer"
                    } else {
                        "target-one"
                    };
                    fs.symlink(t, "/l.new").unwrap();
                    fs.rename("/l.new", "/l").unwrap();
                    let f = fs.create(format!("/d/t{i}")).unwrap();
                    f.set_len(4096 * 3).unwrap();
                    drop(f);
                    fs.unlink(format!("/d/t{i}")).unwrap();
                }
                stop.store(true, std::sync::atomic::Ordering::SeqCst);
            })
        };
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (fs, stop) = (fs.clone(), &stop);
                s.spawn(move || {
                    let mut seen = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                        let names: Vec<Vec<u8>> = fs
                            .readdir("/d")
                            .unwrap()
                            .into_iter()
                            .map(|e| e.name)
                            .collect();
                        let ab = names.iter().filter(|n| *n == b"a" || *n == b"b").count();
                        assert_eq!(ab, 1, "a rename seen as both names or neither: {names:?}");
                        assert!(names.len() <= 2, "more than one temporary file: {names:?}");
                        for n in &names {
                            let p = format!("/d/{}", String::from_utf8_lossy(n));
                            match fs.stat(&p) {
                                Ok(st) if n == b"a" || n == b"b" => assert_eq!(st.ino, a_ino),
                                // A temporary is seen made or sized, never torn.
                                Ok(st) => assert!(st.size == 0 || st.size == 4096 * 3),
                                Err(daxfs::FsError::NotFound(_)) => {}
                                Err(e) => panic!("stat {p}: {e}"),
                            }
                        }
                        let t = fs.readlink("/l").unwrap();
                        assert!(
                            t == b"target-one" || t == b"target-two-longer",
                            "a link target never written: {t:?}"
                        );
                        seen += 1;
                    }
                    seen
                })
            })
            .collect();
        w.join().unwrap();
        for r in readers {
            assert!(r.join().unwrap() > 0);
        }
    });
    drop(fs);
    assert_fsck(&*dev);
}

/// The inode cache stays bounded: stat'ing many more files than its limit
/// keeps it at the limit, while open files, whose inodes are in use, stay
/// cached (and correct) however many others pass through.
#[test]
fn inode_cache_stays_bounded() {
    let (dev, fs) = new_fs(32);
    let limit = 64;
    fs.set_inode_cache_limit(limit);
    let n = 600;
    fs.mkdir("/d", 0o755).unwrap();
    for i in 0..n {
        drop(fs.create(format!("/d/f{i}")).unwrap());
    }
    assert!(fs.cached_inodes() <= limit, "{} cached", fs.cached_inodes());
    // Held open: kept, and its size (ahead of nothing) still right.
    let held = fs.open("/d/f7", &OpenOptions::read_write()).unwrap();
    held.write_at(0, &pattern(3, 5000)).unwrap();
    fs.chmod("/d/f9", 0o600).unwrap();
    for round in 0..3 {
        for i in 0..n {
            let st = fs.stat(format!("/d/f{i}")).unwrap();
            let want = if i == 7 { 5000 } else { 0 };
            assert_eq!(st.size, want, "round {round}: size of f{i}");
            assert_eq!(st.perm, if i == 9 { 0o600 } else { 0o644 });
            assert!(fs.cached_inodes() <= limit, "{} cached", fs.cached_inodes());
        }
    }
    assert_eq!(fs.readdir("/d").unwrap().len(), n);
    assert_eq!(held.stat().size, 5000);
    drop(held);
    let fs = remount(&dev, fs);
    assert_eq!(fs.stat("/d/f7").unwrap().size, 5000);
    drop(fs);
    assert_fsck(&*dev);
}

/// A measurement, not a check: `stat` calls per second from one and from
/// two threads (run with `--ignored --nocapture`).
#[test]
#[ignore]
fn stat_throughput() {
    let (_dev, fs) = new_fs(32);
    fs.mkdir("/d", 0o755).unwrap();
    for i in 0..256 {
        drop(fs.create(format!("/d/f{i}")).unwrap());
    }
    for threads in [1usize, 2] {
        let t0 = std::time::Instant::now();
        let per = 200_000 / threads;
        std::thread::scope(|s| {
            for t in 0..threads {
                let fs = fs.clone();
                s.spawn(move || {
                    for i in 0..per {
                        fs.stat(format!("/d/f{}", (i + t * 7) % 256)).unwrap();
                    }
                });
            }
        });
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "stat, {threads} thread(s): {:.0} calls/s",
            (per * threads) as f64 / secs
        );
    }
}
