//! Group commit from many threads: threads create, write and fsync files in
//! directories of their own and in one shared directory; every create that
//! returned is there, with its data, in the image as it is before unmount
//! (what a crash would leave: nothing is flushed for it) and after unmount
//! and mount, and fsck is clean on both.
mod common;
use common::{assert_fsck, new_fs, pattern, remount};
use daxfs::{Fs, MountOptions, OpenOptions};
use daxfs_device::MemDevice;
use std::sync::Arc;

fn check(fs: &Fs, made: &[Vec<(String, u64)>], threads: usize, files: usize) {
    for (p, seed) in made.iter().flatten() {
        let f = fs.open(p, &OpenOptions::read_only()).unwrap();
        let mut buf = vec![0u8; 4096];
        assert_eq!(f.read_at(0, &mut buf).unwrap(), 4096, "{p}");
        assert_eq!(buf, pattern(*seed, 4096), "{p}");
    }
    assert_eq!(
        fs.readdir("/shared").unwrap().len(),
        threads * files / 2,
        "entries of the shared directory"
    );
    for t in 0..threads {
        assert_eq!(fs.readdir(format!("/t{t}")).unwrap().len(), files / 2);
    }
}

#[test]
fn threads_create_write_fsync_in_separate_and_shared_directories() {
    let (dev, fs) = new_fs(64);
    const THREADS: usize = 4;
    const FILES: usize = 40;
    fs.mkdir("/shared", 0o755).unwrap();
    for t in 0..THREADS {
        fs.mkdir(format!("/t{t}"), 0o755).unwrap();
    }
    let made: Vec<Vec<(String, u64)>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..THREADS)
            .map(|t| {
                let fs = &fs;
                s.spawn(move || {
                    let mut made = vec![];
                    for i in 0..FILES {
                        let dir = if i % 2 == 0 {
                            format!("/t{t}")
                        } else {
                            "/shared".to_string()
                        };
                        let p = format!("{dir}/f{t}-{i}");
                        let seed = (t * 1000 + i) as u64;
                        let f = fs.create(&p).unwrap();
                        f.write_at(0, &pattern(seed, 4096)).unwrap();
                        f.fsync().unwrap();
                        made.push((p, seed));
                    }
                    made
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // The image as the returned calls left it, before unmount writes
    // anything.
    let crashed = Arc::new(MemDevice::from_image(dev.image()));
    let fs = remount(&dev, fs);
    check(&fs, &made, THREADS, FILES);
    drop(fs);
    assert_fsck(&*dev);
    let fs = Fs::mount(crashed.clone(), &MountOptions::default()).unwrap();
    check(&fs, &made, THREADS, FILES);
    drop(fs);
    assert_fsck(&*crashed);
}

/// Read-your-writes under group commit: each thread's create, write and
/// rename, once returned, is seen by its own lock-free reads (stat, lookup,
/// readdir) and its data read back, while the other threads' groups are
/// being gathered and written (the snapshot carries blocks not yet home).
#[test]
fn snapshot_reads_see_the_group() {
    let (_dev, fs) = new_fs(64);
    const THREADS: usize = 4;
    for t in 0..THREADS {
        fs.mkdir(format!("/t{t}"), 0o755).unwrap();
    }
    fs.test_hold_group_commit(THREADS);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let fs = &fs;
            s.spawn(move || {
                for i in 0..20 {
                    let p = format!("/t{t}/f{i}");
                    let f = fs.create(&p).unwrap();
                    assert_eq!(fs.stat(&p).unwrap().size, 0, "{p}");
                    let seed = (t * 100 + i) as u64;
                    f.write_at(0, &pattern(seed, 4096)).unwrap();
                    assert_eq!(fs.stat(&p).unwrap().size, 4096, "{p}");
                    let q = format!("/t{t}/g{i}");
                    fs.rename(&p, &q).unwrap();
                    assert!(fs.stat(&p).is_err(), "{p} still there");
                    let names: Vec<String> = fs
                        .readdir(format!("/t{t}"))
                        .unwrap()
                        .iter()
                        .map(|e| e.name_lossy())
                        .collect();
                    assert!(names.contains(&format!("g{i}")), "{q} not listed");
                    let mut buf = vec![0u8; 4096];
                    let g = fs.open(&q, &OpenOptions::read_only()).unwrap();
                    assert_eq!(g.read_at(0, &mut buf).unwrap(), 4096);
                    assert_eq!(buf, pattern(seed, 4096), "{q}");
                }
            });
        }
    });
    // No read was done again on the locked path.
    assert_eq!(
        fs.test_snapshot_fallbacks(),
        0,
        "reads done on the locked path"
    );
}
