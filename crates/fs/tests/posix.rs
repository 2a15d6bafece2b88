//! Files and directories: every operation of the core, its errors (by errno),
//! and persistence across remount.
mod common;
use common::*;
use daxfs::{FallocFlags, FileKind, FsError, OpenOptions};

fn errno(r: Result<impl std::fmt::Debug, FsError>) -> &'static str {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.errno_name(),
    }
}

#[test]
fn write_read_and_remount() {
    let (dev, fs) = new_fs(16);
    let f = fs.create("/a").unwrap();
    let data = pattern(1, 10_000);
    assert_eq!(f.write_at(0, &data).unwrap(), data.len());
    let mut buf = vec![0u8; 20_000];
    assert_eq!(f.read_at(0, &mut buf).unwrap(), 10_000);
    assert_eq!(&buf[..10_000], &data[..]);
    // Overwrite in place, then extend within the last block.
    f.write_at(100, b"hello").unwrap();
    f.write_at(10_000, b"tail").unwrap();
    assert_eq!(f.stat().size, 10_004);
    drop(f);
    let fs = remount(&dev, fs);
    let f = fs.open("/a", &OpenOptions::read_only()).unwrap();
    let mut buf = vec![0u8; 10_004];
    assert_eq!(f.read_at(0, &mut buf).unwrap(), 10_004);
    assert_eq!(&buf[100..105], b"hello");
    assert_eq!(&buf[10_000..], b"tail");
    assert_eq!(&buf[..100], &data[..100]);
    drop(f);
    assert_fsck(&*dev);
}

#[test]
fn sparse_files_read_zeros() {
    let (dev, fs) = new_fs(16);
    let f = fs.create("/s").unwrap();
    f.write_at(1 << 20, b"x").unwrap();
    let st = f.stat();
    assert_eq!(st.size, (1 << 20) + 1);
    assert_eq!(st.blocks, 8, "one 4 KiB block is allocated");
    let mut buf = vec![1u8; 8192];
    f.read_at(4096, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
    // Growing with truncate leaves a hole; the bytes past the old end read as zero.
    f.set_len(10).unwrap();
    f.set_len(5000).unwrap();
    let mut buf = vec![1u8; 5000];
    assert_eq!(f.read_at(0, &mut buf).unwrap(), 5000);
    assert!(buf.iter().all(|&b| b == 0));
    drop(f);
    assert_fsck(&*dev);
}

#[test]
fn stale_tail_is_zeroed_on_extend() {
    let (dev, fs) = new_fs(16);
    let f = fs.create("/t").unwrap();
    f.write_at(0, &[7u8; 4096]).unwrap();
    f.set_len(100).unwrap();
    f.set_len(4096).unwrap();
    let mut buf = vec![0u8; 4096];
    f.read_at(0, &mut buf).unwrap();
    assert!(buf[..100].iter().all(|&b| b == 7));
    assert!(
        buf[100..].iter().all(|&b| b == 0),
        "bytes past the old end must read as zero"
    );
    // Writing past EOF with a gap also zeroes the gap inside the last block.
    f.set_len(50).unwrap();
    f.write_at(200, b"z").unwrap();
    let mut buf = vec![9u8; 201];
    f.read_at(0, &mut buf).unwrap();
    assert!(buf[50..200].iter().all(|&b| b == 0));
    drop(f);
    assert_fsck(&*dev);
}

#[test]
fn directories_and_errors() {
    let (dev, fs) = new_fs(16);
    fs.mkdir("/d", 0o755).unwrap();
    fs.mkdir("/d/e", 0o700).unwrap();
    drop(fs.create("/d/f").unwrap());
    assert_eq!(errno(fs.mkdir("/d", 0o755)), "EEXIST");
    assert_eq!(errno(fs.create("/d/f")), "EEXIST");
    assert_eq!(errno(fs.mkdir("/nope/x", 0o755)), "ENOENT");
    assert_eq!(errno(fs.mkdir("/d/f/x", 0o755)), "ENOTDIR");
    assert_eq!(errno(fs.rmdir("/d")), "ENOTEMPTY");
    assert_eq!(errno(fs.rmdir("/d/f")), "ENOTDIR");
    assert_eq!(errno(fs.unlink("/d/e")), "EISDIR");
    assert_eq!(errno(fs.unlink("/d/zz")), "ENOENT");
    assert_eq!(errno(fs.open("/d", &OpenOptions::read_write())), "EISDIR");
    let long = "n".repeat(256);
    assert_eq!(errno(fs.create(format!("/d/{long}"))), "ENAMETOOLONG");
    let ok = "n".repeat(255);
    drop(fs.create(format!("/d/{ok}")).unwrap());
    let names: Vec<String> = fs
        .readdir("/d")
        .unwrap()
        .iter()
        .map(|e| e.name_lossy())
        .collect();
    assert_eq!(names.len(), 3);
    assert!(
        names.contains(&"e".to_string()) && names.contains(&"f".to_string()) && names.contains(&ok)
    );
    assert_eq!(fs.stat("/d").unwrap().nlink, 3);
    assert_eq!(fs.stat("/").unwrap().nlink, 3);
    fs.rmdir("/d/e").unwrap();
    assert_eq!(fs.stat("/d").unwrap().nlink, 2);
    // Any byte but '/' and NUL is a valid name.
    let weird = [0xffu8, b' ', b'\n', 0x80];
    drop(fs.create([b"/d/".as_slice(), &weird].concat()).unwrap());
    assert!(fs.readdir("/d").unwrap().iter().any(|e| e.name == weird));
    assert_fsck(&*dev);
}

#[test]
fn rename_rules() {
    let (dev, fs) = new_fs(16);
    fs.mkdir("/a", 0o755).unwrap();
    fs.mkdir("/a/b", 0o755).unwrap();
    fs.mkdir("/c", 0o755).unwrap();
    let f = fs.create("/x").unwrap();
    f.write_at(0, b"xx").unwrap();
    drop(f);
    let g = fs.create("/y").unwrap();
    g.write_at(0, b"yyyy").unwrap();
    drop(g);
    // Replace a file atomically.
    fs.rename("/x", "/y").unwrap();
    assert_eq!(errno(fs.stat("/x")), "ENOENT");
    assert_eq!(fs.stat("/y").unwrap().size, 2);
    // Directory rules.
    assert_eq!(errno(fs.rename("/a", "/a/b/z")), "EINVAL");
    assert_eq!(errno(fs.rename("/a", "/y")), "ENOTDIR");
    assert_eq!(errno(fs.rename("/y", "/a")), "EISDIR");
    assert_eq!(errno(fs.rename("/c", "/a")), "ENOTEMPTY");
    fs.rename("/a/b", "/c/b2").unwrap();
    assert_eq!(fs.stat("/a").unwrap().nlink, 2);
    assert_eq!(fs.stat("/c").unwrap().nlink, 3);
    fs.rename("/a", "/c/b2").unwrap(); // replaces an empty directory
    assert_eq!(fs.stat("/c").unwrap().nlink, 3);
    assert_eq!(fs.readdir("/").unwrap().len(), 2);
    // ".." follows the new parent.
    fs.mkdir("/c/b2/deep", 0o755).unwrap();
    assert_eq!(
        fs.stat("/c/b2/deep/../..").unwrap().ino,
        fs.stat("/c").unwrap().ino
    );
    fs.rename("/y", "/y").unwrap();
    assert_eq!(errno(fs.rename("/nope", "/z")), "ENOENT");
    let fs = remount(&dev, fs);
    assert_eq!(fs.stat("/y").unwrap().size, 2);
    assert_fsck(&*dev);
}

#[test]
fn hard_links_and_unlink_while_open() {
    let (dev, fs) = new_fs(16);
    let f = fs.create("/a").unwrap();
    f.write_at(0, &pattern(3, 50_000)).unwrap();
    fs.link("/a", "/b").unwrap();
    assert_eq!(fs.stat("/a").unwrap().nlink, 2);
    assert_eq!(errno(fs.link("/a", "/b")), "EEXIST");
    fs.mkdir("/d", 0o755).unwrap();
    assert_eq!(errno(fs.link("/d", "/d2")), "EPERM");
    fs.unlink("/a").unwrap();
    assert_eq!(fs.stat("/b").unwrap().nlink, 1);
    let free_before = fs.info().free_blocks;
    fs.unlink("/b").unwrap();
    // Still open: data readable, space not yet freed.
    let mut buf = vec![0u8; 50_000];
    assert_eq!(f.read_at(0, &mut buf).unwrap(), 50_000);
    assert_eq!(buf, pattern(3, 50_000));
    assert!(
        fs.info().free_blocks <= free_before,
        "data of an open file is not freed"
    );
    assert_fsck(&*dev);
    drop(f);
    assert!(
        fs.info().free_blocks > free_before,
        "last close frees the space"
    );
    assert_fsck(&*dev);
}

#[test]
fn orphan_freed_at_mount() {
    let (dev, fs) = new_fs(16);
    let f = fs.create("/a").unwrap();
    f.write_at(0, &[1u8; 100_000]).unwrap();
    let free_empty = fs.info().free_blocks + 25;
    fs.unlink("/a").unwrap();
    // Simulate a crash with the file still open: forget the handle.
    std::mem::forget(f);
    let image = dev.image();
    drop(fs);
    let dev2 = std::sync::Arc::new(daxfs_device::MemDevice::from_image(image));
    let fs2 = daxfs::Fs::mount(dev2.clone(), &daxfs::MountOptions::default()).unwrap();
    assert!(fs2.info().free_blocks >= free_empty);
    assert_fsck(&*dev2);
}

#[test]
fn symlinks() {
    let (dev, fs) = new_fs(16);
    fs.mkdir("/d", 0o755).unwrap();
    let f = fs.create("/d/t").unwrap();
    f.write_at(0, b"target").unwrap();
    drop(f);
    fs.symlink("d/t", "/l").unwrap();
    fs.symlink("/d", "/ld").unwrap();
    assert_eq!(fs.readlink("/l").unwrap(), b"d/t");
    assert_eq!(fs.stat("/l").unwrap().size, 6);
    assert_eq!(fs.lstat("/l").unwrap().kind, FileKind::Symlink);
    assert_eq!(fs.stat("/ld/t").unwrap().size, 6);
    fs.symlink("/loop", "/loop").unwrap();
    assert_eq!(errno(fs.stat("/loop")), "ELOOP");
    assert_eq!(errno(fs.readlink("/d")), "EINVAL");
    let long = "x".repeat(5000);
    assert_eq!(errno(fs.symlink(&long, "/big")), "ENAMETOOLONG");
    fs.unlink("/l").unwrap();
    assert_fsck(&*dev);
}

#[test]
fn attributes() {
    let (_dev, fs) = new_fs(16);
    drop(fs.create("/a").unwrap());
    fs.chmod("/a", 0o600).unwrap();
    fs.chown("/a", Some(7), None).unwrap();
    fs.utimens("/a", Some((5, 6)), Some((1000, 999))).unwrap();
    let st = fs.stat("/a").unwrap();
    assert_eq!((st.perm, st.uid, st.gid), (0o600, 7, 0));
    assert_eq!(st.atime, (5, 6));
    assert_eq!(st.mtime, (1000, 999));
    assert_eq!(
        errno(fs.utimens("/a", Some((1, 1_000_000_000)), None)),
        "EINVAL"
    );
}

#[test]
fn fallocate_modes() {
    let (dev, fs) = new_fs(32);
    let f = fs.create("/f").unwrap();
    // Plain allocate extends the size and reads as zeros.
    f.fallocate(FallocFlags::default(), 0, 1 << 20).unwrap();
    assert_eq!(f.stat().size, 1 << 20);
    let ext = f.fiemap().unwrap();
    assert!(ext.iter().all(|e| e.unwritten));
    let mut buf = vec![1u8; 4096];
    f.read_at(8192, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
    // KEEP_SIZE allocates past EOF without changing the size.
    f.fallocate(
        FallocFlags {
            keep_size: true,
            ..Default::default()
        },
        2 << 20,
        1 << 20,
    )
    .unwrap();
    assert_eq!(f.stat().size, 1 << 20);
    assert_eq!(f.stat().blocks, 2 * 256 * 8);
    // Write into unwritten space; the rest of the block stays zero.
    f.write_at(5000, b"abc").unwrap();
    let mut buf = vec![1u8; 8192];
    f.read_at(4096, &mut buf).unwrap();
    assert_eq!(&buf[904..907], b"abc");
    assert!(buf[..904].iter().all(|&b| b == 0) && buf[907..].iter().all(|&b| b == 0));
    // Punch a hole in written data.
    f.write_at(0, &[9u8; 65536]).unwrap();
    f.fallocate(
        FallocFlags {
            keep_size: true,
            punch_hole: true,
            ..Default::default()
        },
        1000,
        20_000,
    )
    .unwrap();
    let mut buf = vec![1u8; 65536];
    f.read_at(0, &mut buf).unwrap();
    assert!(buf[..1000].iter().all(|&b| b == 9));
    assert!(buf[1000..21_000].iter().all(|&b| b == 0));
    assert!(buf[21_000..].iter().all(|&b| b == 9));
    // Zero range.
    f.fallocate(
        FallocFlags {
            zero_range: true,
            ..Default::default()
        },
        30_000,
        10_000,
    )
    .unwrap();
    f.read_at(0, &mut buf).unwrap();
    assert!(buf[30_000..40_000].iter().all(|&b| b == 0));
    assert!(buf[40_000..].iter().all(|&b| b == 9));
    // Errors.
    assert_eq!(
        errno(f.fallocate(
            FallocFlags {
                punch_hole: true,
                ..Default::default()
            },
            0,
            1
        )),
        "EOPNOTSUPP"
    );
    assert_eq!(errno(f.fallocate(FallocFlags::default(), 0, 0)), "EINVAL");
    assert_eq!(
        errno(f.fallocate(FallocFlags::default(), u64::MAX - 10, 100)),
        "EFBIG"
    );
    drop(f);
    assert_fsck(&*dev);
}

#[test]
fn efbig_and_bad_handles() {
    let (_dev, fs) = new_fs(16);
    let f = fs.create("/a").unwrap();
    assert_eq!(errno(f.write_at(i64::MAX as u64, b"x")), "EFBIG");
    assert_eq!(errno(f.set_len(u64::MAX)), "EFBIG");
    drop(f);
    let r = fs.open("/a", &OpenOptions::read_only()).unwrap();
    assert_eq!(errno(r.write_at(0, b"x")), "EBADF");
    let w = fs.open("/a", &OpenOptions::write_only()).unwrap();
    assert_eq!(errno(w.read_at(0, &mut [0u8; 4])), "EBADF");
}

#[test]
fn enospc_is_clean_and_space_comes_back() {
    let (dev, fs) = new_fs(8);
    let free0 = fs.info().free_blocks;
    let mut files = vec![];
    let mut i = 0;
    loop {
        let name = format!("/f{i}");
        let f = match fs.create(&name) {
            Ok(f) => f,
            Err(e) => {
                assert_eq!(e.errno_name(), "ENOSPC");
                break;
            }
        };
        match f.write_at(0, &pattern(i, 256 * 1024)) {
            Ok(_) => files.push(name),
            Err(e) => {
                assert_eq!(e.errno_name(), "ENOSPC");
                assert_eq!(f.stat().size, 0, "a failed write changes nothing");
                break;
            }
        }
        i += 1;
    }
    assert!(files.len() > 10);
    assert_fsck(&*dev);
    // Every file written before ENOSPC is intact.
    for (i, name) in files.iter().enumerate() {
        let f = fs.open(name, &OpenOptions::read_only()).unwrap();
        let mut buf = vec![0u8; 256 * 1024];
        f.read_at(0, &mut buf).unwrap();
        assert_eq!(buf, pattern(i as u64, 256 * 1024));
    }
    for name in &files {
        fs.unlink(name).unwrap();
    }
    let _ = fs.unlink(format!("/f{}", files.len()));
    let fs = remount(&dev, fs);
    assert!(
        fs.info().free_blocks + 64 >= free0,
        "space of deleted files is usable again"
    );
    let f = fs.create("/big").unwrap();
    f.write_at(0, &vec![1u8; 4 << 20]).unwrap();
    drop(f);
    assert_fsck(&*dev);
}

#[test]
fn large_files_get_aligned_extents() {
    let (_dev, fs) = new_fs(64);
    let f = fs.create("/big").unwrap();
    f.write_at(0, &vec![3u8; 8 << 20]).unwrap();
    let ext = f.fiemap().unwrap();
    assert_eq!(
        ext[0].physical % (2 << 20),
        0,
        "large allocations start 2 MiB aligned"
    );
    assert!(
        ext.len() <= 2,
        "one write of 8 MiB gives few extents: {ext:?}"
    );
}

#[test]
fn many_files_in_one_directory() {
    let (dev, fs) = new_fs(64);
    for i in 0..2000 {
        drop(fs.create(format!("/file-{i:05}")).unwrap());
    }
    assert_eq!(fs.readdir("/").unwrap().len(), 2000);
    for i in (0..2000).step_by(2) {
        fs.unlink(format!("/file-{i:05}")).unwrap();
    }
    let fs = remount(&dev, fs);
    let names = fs.readdir("/").unwrap();
    assert_eq!(names.len(), 1000);
    assert!(fs.stat("/file-00001").is_ok());
    assert_fsck(&*dev);
}

#[test]
fn unmount_reports_busy_while_files_are_open() {
    let (dev, fs) = new_fs(16);
    let f = fs.create("/f").unwrap();
    f.write_at(0, b"kept").unwrap();
    let other = fs.clone();
    let e = fs.unmount().unwrap_err();
    assert_eq!(e.errno_name(), "EBUSY", "{e}");
    assert!(e.to_string().contains("2 open files"), "{e}");
    // Still mounted through the other handles.
    f.write_at(4, b" too").unwrap();
    drop(f);
    other.unmount().unwrap();
    let fs = daxfs::Fs::mount(dev.clone(), &daxfs::MountOptions::default()).unwrap();
    let mut buf = [0u8; 8];
    let g = fs.open("/f", &OpenOptions::read_only()).unwrap();
    assert_eq!(g.read_at(0, &mut buf).unwrap(), 8);
    assert_eq!(&buf, b"kept too");
    drop(g);
    fs.unmount().unwrap();
    assert_fsck(&*dev);
}

/// A trailing slash or `/.` asks for a directory: after a regular file (or
/// a symlink to one) it is ENOTDIR, and a create with a trailing slash is
/// EISDIR (O_CREAT) or ENOENT (link, symlink), as Linux gives them;
/// directories with a trailing slash work as without.
#[test]
fn trailing_slash_and_dot_after_a_file() {
    let (dev, fs) = new_fs(16);
    drop(fs.create("/s1").unwrap());
    fs.mkdir("/d", 0o755).unwrap();
    fs.symlink("/s1", "/ls").unwrap();
    let rw = OpenOptions::read_write();
    let ro = OpenOptions::read_only();
    // Remove.
    assert_eq!(errno(fs.unlink("/s1/")), "ENOTDIR");
    assert_eq!(errno(fs.unlink("/s1/.")), "ENOTDIR");
    assert_eq!(errno(fs.unlink("/ls/")), "ENOTDIR");
    assert_eq!(errno(fs.unlink("/d/")), "EISDIR");
    assert_eq!(errno(fs.unlink("/d/.")), "EISDIR");
    assert_eq!(errno(fs.unlink("/nx/")), "ENOENT");
    assert_eq!(errno(fs.rmdir("/s1/")), "ENOTDIR");
    assert_eq!(errno(fs.rmdir("/s1/.")), "ENOTDIR");
    assert_eq!(errno(fs.rmdir("/d/.")), "EINVAL");
    // Look up.
    for p in ["/s1/", "/s1/.", "/s1/..", "/s1//", "/ls/", "/s1/./"] {
        assert_eq!(errno(fs.stat(p)), "ENOTDIR", "stat {p}");
        assert_eq!(errno(fs.open(p, &ro)), "ENOTDIR", "open {p}");
    }
    assert_eq!(errno(fs.lstat("/s1/")), "ENOTDIR");
    assert_eq!(errno(fs.readlink("/s1/")), "ENOTDIR");
    assert_eq!(errno(fs.truncate("/s1/", 0)), "ENOTDIR");
    assert_eq!(errno(fs.chmod("/s1/", 0o600)), "ENOTDIR");
    assert_eq!(errno(fs.readdir("/s1/")), "ENOTDIR");
    // Create.
    for opts in [OpenOptions::create(), OpenOptions::create_new()] {
        assert_eq!(errno(fs.open("/new/", &opts)), "EISDIR");
        assert_eq!(errno(fs.open("/s1/", &opts)), "EISDIR");
        assert_eq!(errno(fs.open("/s1/.", &opts)), "ENOTDIR");
        assert_eq!(errno(fs.open("/new/.", &opts)), "ENOENT");
    }
    let trunc = OpenOptions {
        truncate: true,
        ..OpenOptions::create()
    };
    assert_eq!(errno(fs.open("/p/", &trunc)), "EISDIR");
    assert_eq!(errno(fs.mkdir("/s1/", 0o755)), "EEXIST");
    assert_eq!(errno(fs.mkdir("/s1/.", 0o755)), "ENOTDIR");
    assert_eq!(errno(fs.mkdir("/s1/x", 0o755)), "ENOTDIR");
    assert_eq!(errno(fs.symlink("/s1", "/y/")), "ENOENT");
    // Rename, both sides.
    assert_eq!(errno(fs.rename("/s1/", "/z")), "ENOTDIR");
    assert_eq!(errno(fs.rename("/s1/.", "/z")), "ENOTDIR");
    assert_eq!(errno(fs.rename("/s1", "/z/")), "ENOTDIR");
    assert_eq!(errno(fs.rename("/s1", "/z/.")), "ENOENT");
    assert_eq!(errno(fs.rename("/ls/", "/z")), "ENOTDIR");
    // Link, both sides.
    assert_eq!(errno(fs.link("/s1/", "/x")), "ENOTDIR");
    assert_eq!(errno(fs.link("/s1/.", "/x")), "ENOTDIR");
    assert_eq!(errno(fs.link("/s1", "/x/")), "ENOENT");
    assert_eq!(errno(fs.link("/s1", "/d/")), "EEXIST");
    // Nothing of that changed anything.
    let names: Vec<_> = fs
        .readdir("/")
        .unwrap()
        .iter()
        .map(|e| e.name_lossy())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(fs.open("/s1", &rw).is_ok());
    // Directories with a trailing slash.
    fs.mkdir("/e/", 0o755).unwrap();
    assert_eq!(fs.stat("/e/").unwrap().kind, FileKind::Dir);
    assert_eq!(fs.stat("/e/.").unwrap().kind, FileKind::Dir);
    fs.rename("/e/", "/f/").unwrap();
    assert!(fs.readdir("/f/").unwrap().is_empty());
    drop(fs.create("/f/g").unwrap());
    fs.rename("/f/g", "/f/h").unwrap();
    assert_eq!(fs.readdir("/f/").unwrap().len(), 1);
    fs.unlink("/f/h").unwrap();
    fs.rmdir("/f/").unwrap();
    fs.rmdir("/d//").unwrap();
    assert_eq!(errno(fs.stat("/f")), "ENOENT");
    assert_fsck(&*dev);
}

/// In-place overwrites (whose times every later commit carries) racing
/// commits of other files, fsync and sync: no deadlock, and after a remount
/// the file has its last bytes and the namespace every change.
#[test]
fn in_place_writes_race_other_commits() {
    let (dev, fs) = new_fs(16);
    let f = std::sync::Arc::new(fs.create("/f").unwrap());
    f.write_at(0, &pattern(1, 8192)).unwrap();
    f.fsync().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let mut threads = vec![];
    for t in 0..2u64 {
        let f = f.clone();
        let tx = tx.clone();
        threads.push(std::thread::spawn(move || {
            for i in 0..300u64 {
                f.write_at((t * 4096 + i * 8) % 8000, &[i as u8; 16])
                    .unwrap();
                if i % 50 == 0 {
                    f.fsync().unwrap();
                }
            }
            tx.send(()).unwrap();
        }));
    }
    {
        let fs = fs.clone();
        let tx = tx.clone();
        threads.push(std::thread::spawn(move || {
            for i in 0..60 {
                fs.mkdir(format!("/d{i}"), 0o755).unwrap();
                if i % 20 == 0 {
                    fs.sync().unwrap();
                }
            }
            tx.send(()).unwrap();
        }));
    }
    for _ in 0..3 {
        rx.recv_timeout(std::time::Duration::from_secs(120))
            .expect("the writers and committers deadlocked");
    }
    for t in threads {
        t.join().unwrap();
    }
    let mut want = vec![0u8; 8192];
    assert_eq!(f.read_at(0, &mut want).unwrap(), 8192);
    drop(f);
    let fs = remount(&dev, fs);
    let f = fs.open("/f", &OpenOptions::read_only()).unwrap();
    let mut got = vec![0u8; 8192];
    assert_eq!(f.read_at(0, &mut got).unwrap(), 8192);
    assert_eq!(got, want);
    assert_eq!(fs.readdir("/").unwrap().len(), 61);
    drop(f);
    assert_fsck(&*dev);
}
