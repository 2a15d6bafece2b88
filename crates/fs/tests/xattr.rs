//! Extended attributes: every call's errnos as Linux gives them (the cases
//! of the generic attribute tests of the usual file-system test suites,
//! written for daxfs), values up to 64 KiB, freeing with the inode, fsck.
mod common;
use common::*;
use daxfs::{Fs, XATTR_CREATE, XATTR_REPLACE};

fn errno<T: std::fmt::Debug>(r: daxfs::Result<T>) -> i32 {
    r.expect_err("expected an error").errno()
}

fn names(fs: &Fs, path: &str) -> Vec<String> {
    let mut v: Vec<String> = fs
        .listxattr(path)
        .unwrap()
        .into_iter()
        .map(|n| String::from_utf8(n).unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn set_get_list_remove() {
    let (dev, fs) = new_fs(8);
    fs.create("/f").unwrap();
    fs.setxattr("/f", b"user.a", b"one", 0).unwrap();
    fs.setxattr("/f", b"trusted.b", b"", 0).unwrap();
    fs.setxattr("/f", b"security.c", &[0, 1, 2], 0).unwrap();
    assert_eq!(fs.getxattr("/f", b"user.a").unwrap(), b"one");
    assert_eq!(fs.getxattr("/f", b"trusted.b").unwrap(), b"");
    assert_eq!(fs.getxattr("/f", b"security.c").unwrap(), [0, 1, 2]);
    assert_eq!(names(&fs, "/f"), ["security.c", "trusted.b", "user.a"]);
    // Replacing keeps one attribute of that name.
    fs.setxattr("/f", b"user.a", b"two!", 0).unwrap();
    assert_eq!(fs.getxattr("/f", b"user.a").unwrap(), b"two!");
    assert_eq!(names(&fs, "/f").len(), 3);
    fs.removexattr("/f", b"trusted.b").unwrap();
    assert_eq!(errno(fs.getxattr("/f", b"trusted.b")), libc::ENODATA);
    assert_eq!(names(&fs, "/f"), ["security.c", "user.a"]);
    // Directories have them too; other files' are their own.
    fs.mkdir("/d", 0o755).unwrap();
    fs.setxattr("/d", b"user.a", b"dir", 0).unwrap();
    assert_eq!(fs.getxattr("/f", b"user.a").unwrap(), b"two!");
    let fs = remount(&dev, fs);
    assert_eq!(fs.getxattr("/d", b"user.a").unwrap(), b"dir");
    assert_eq!(fs.getxattr("/f", b"security.c").unwrap(), [0, 1, 2]);
    assert_eq!(names(&fs, "/f"), ["security.c", "user.a"]);
    drop(fs);
    assert_fsck(&*dev);
}

#[test]
fn create_and_replace_flags() {
    let (_dev, fs) = new_fs(8);
    fs.create("/f").unwrap();
    assert_eq!(
        errno(fs.setxattr("/f", b"user.x", b"v", XATTR_REPLACE)),
        libc::ENODATA
    );
    fs.setxattr("/f", b"user.x", b"v", XATTR_CREATE).unwrap();
    assert_eq!(
        errno(fs.setxattr("/f", b"user.x", b"w", XATTR_CREATE)),
        libc::EEXIST
    );
    assert_eq!(fs.getxattr("/f", b"user.x").unwrap(), b"v");
    fs.setxattr("/f", b"user.x", b"w", XATTR_REPLACE).unwrap();
    assert_eq!(fs.getxattr("/f", b"user.x").unwrap(), b"w");
    assert_eq!(errno(fs.setxattr("/f", b"user.x", b"w", 4)), libc::EINVAL);
    // Both flags: the attribute exists, so CREATE fails.
    assert_eq!(
        errno(fs.setxattr("/f", b"user.x", b"w", XATTR_CREATE | XATTR_REPLACE)),
        libc::EEXIST
    );
}

#[test]
fn name_and_value_limits() {
    let (_dev, fs) = new_fs(8);
    fs.create("/f").unwrap();
    let long = |n: usize| {
        let mut v = b"user.".to_vec();
        v.resize(n, b'n');
        v
    };
    fs.setxattr("/f", &long(255), b"v", 0).unwrap();
    assert_eq!(fs.getxattr("/f", &long(255)).unwrap(), b"v");
    for r in [
        fs.setxattr("/f", &long(256), b"v", 0).map(|_| ()),
        fs.getxattr("/f", &long(256)).map(|_| ()),
        fs.removexattr("/f", &long(256)),
        fs.setxattr("/f", b"", b"v", 0),
        fs.getxattr("/f", b"").map(|_| ()),
    ] {
        assert_eq!(errno(r), libc::ERANGE);
    }
    // A namespace with nothing after it, and unknown namespaces.
    assert_eq!(errno(fs.setxattr("/f", b"user.", b"v", 0)), libc::EINVAL);
    assert_eq!(errno(fs.getxattr("/f", b"trusted.")), libc::EINVAL);
    for n in [
        &b"user"[..],
        b"system.posix_acl_access",
        b"foo.bar",
        b"usr.x",
    ] {
        assert_eq!(errno(fs.setxattr("/f", n, b"v", 0)), libc::EOPNOTSUPP);
        assert_eq!(errno(fs.getxattr("/f", n)), libc::EOPNOTSUPP);
        assert_eq!(errno(fs.removexattr("/f", n)), libc::EOPNOTSUPP);
    }
    // Values: 64 KiB is the largest.
    let big = pattern(7, 65536);
    fs.setxattr("/f", b"user.big", &big, 0).unwrap();
    assert_eq!(fs.getxattr("/f", b"user.big").unwrap(), big);
    assert_eq!(
        errno(fs.setxattr("/f", b"user.big", &pattern(8, 65537), 0)),
        libc::E2BIG
    );
    assert_eq!(fs.getxattr("/f", b"user.big").unwrap(), big);
    assert_eq!(errno(fs.getxattr("/nope", b"user.a")), libc::ENOENT);
    assert_eq!(errno(fs.removexattr("/f", b"user.none")), libc::ENODATA);
}

#[test]
fn buffers_too_small() {
    let (_dev, fs) = new_fs(8);
    fs.create("/f").unwrap();
    fs.setxattr("/f", b"user.a", b"12345", 0).unwrap();
    fs.setxattr("/f", b"user.bb", b"", 0).unwrap();
    assert_eq!(fs.getxattr_into("/f", b"user.a", &mut []).unwrap(), 5);
    let mut b = [0u8; 4];
    assert_eq!(
        errno(fs.getxattr_into("/f", b"user.a", &mut b)),
        libc::ERANGE
    );
    let mut b = [0u8; 5];
    assert_eq!(fs.getxattr_into("/f", b"user.a", &mut b).unwrap(), 5);
    assert_eq!(&b, b"12345");
    // "user.a\0user.bb\0" in some order: 15 bytes.
    assert_eq!(fs.listxattr_into("/f", &mut []).unwrap(), 15);
    let mut b = [0u8; 14];
    assert_eq!(errno(fs.listxattr_into("/f", &mut b)), libc::ERANGE);
    let mut b = [0u8; 15];
    assert_eq!(fs.listxattr_into("/f", &mut b).unwrap(), 15);
    let mut got: Vec<&[u8]> = b.split(|&c| c == 0).filter(|s| !s.is_empty()).collect();
    got.sort();
    assert_eq!(got, [&b"user.a"[..], b"user.bb"]);
}

#[test]
fn symlinks_and_user_namespace() {
    let (_dev, fs) = new_fs(8);
    fs.create("/f").unwrap();
    fs.symlink("/f", "/l").unwrap();
    // Through the link: the file's attributes.
    fs.setxattr("/l", b"user.a", b"v", 0).unwrap();
    assert_eq!(fs.getxattr("/f", b"user.a").unwrap(), b"v");
    assert_eq!(
        errno(fs.setxattr("/l", b"user.a", b"v", XATTR_CREATE)),
        libc::EEXIST
    );
    // The link itself: no user attributes, others are fine.
    assert_eq!(errno(fs.lsetxattr("/l", b"user.a", b"v", 0)), libc::EPERM);
    assert_eq!(errno(fs.lremovexattr("/l", b"user.a")), libc::EPERM);
    assert_eq!(errno(fs.lgetxattr("/l", b"user.a")), libc::ENODATA);
    fs.lsetxattr("/l", b"trusted.t", b"link", 0).unwrap();
    assert_eq!(fs.lgetxattr("/l", b"trusted.t").unwrap(), b"link");
    assert_eq!(errno(fs.getxattr("/l", b"trusted.t")), libc::ENODATA);
    assert_eq!(fs.llistxattr("/l").unwrap(), [b"trusted.t".to_vec()]);
    fs.lremovexattr("/l", b"trusted.t").unwrap();
    assert!(fs.llistxattr("/l").unwrap().is_empty());
}

/// Waits until the clock file times come from has moved past `t`. It is
/// the coarse clock, as the kernel's: it moves once a tick (4 ms here, 8 ms
/// and more on a loaded machine), so a fixed sleep of 2 ms often left a
/// change stamped with the same time as the create before it.
fn after_tick(t: (i64, u32)) {
    loop {
        let ts = rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse);
        if (ts.tv_sec, ts.tv_nsec as u32) > t {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

#[test]
fn by_inode_number() {
    let (_dev, fs) = new_fs(8);
    let ino = fs.create("/f").unwrap().ino();
    let before = fs.stat("/f").unwrap().ctime;
    after_tick(before);
    fs.setxattr_ino(ino, b"user.k", b"val", 0).unwrap();
    assert!(
        fs.stat("/f").unwrap().ctime > before,
        "setxattr changes ctime"
    );
    assert_eq!(fs.getxattr_ino(ino, b"user.k").unwrap(), b"val");
    assert_eq!(fs.getxattr("/f", b"user.k").unwrap(), b"val");
    assert_eq!(fs.listxattr_ino(ino).unwrap(), [b"user.k".to_vec()]);
    let mut b = [0u8; 2];
    assert_eq!(
        errno(fs.getxattr_ino_into(ino, b"user.k", &mut b)),
        libc::ERANGE
    );
    assert_eq!(errno(fs.listxattr_ino_into(ino, &mut b)), libc::ERANGE);
    fs.removexattr_ino(ino, b"user.k").unwrap();
    assert_eq!(errno(fs.getxattr_ino(ino, b"user.k")), libc::ENODATA);
    assert_eq!(errno(fs.getxattr_ino(9999, b"user.k")), libc::ENOENT);
    assert_eq!(errno(fs.setxattr_ino(0, b"user.k", b"", 0)), libc::ENOENT);
}

/// Many attributes, with values of every size class, replaced and removed
/// in turn, checked against a model; freed with the file.
#[test]
fn many_attributes_freed_with_the_inode() {
    let (dev, fs) = new_fs(16);
    let free0 = fs.info().free_blocks;
    drop(fs.create("/f").unwrap());
    let mut model = std::collections::BTreeMap::new();
    for i in 0..60u64 {
        let name = format!("user.attr{i}").into_bytes();
        let value = pattern(i, [0, 1, 247, 248, 249, 760, 761, 5000][i as usize % 8]);
        fs.setxattr("/f", &name, &value, 0).unwrap();
        model.insert(name, value);
    }
    for i in (0..60u64).step_by(3) {
        let name = format!("user.attr{i}").into_bytes();
        fs.removexattr("/f", &name).unwrap();
        model.remove(&name);
    }
    for i in (1..60u64).step_by(3) {
        let name = format!("user.attr{i}").into_bytes();
        let value = pattern(i + 100, 300);
        fs.setxattr("/f", &name, &value, XATTR_REPLACE).unwrap();
        model.insert(name, value);
    }
    let fs = remount(&dev, fs);
    let mut listed = fs.listxattr("/f").unwrap();
    listed.sort();
    assert_eq!(listed, model.keys().cloned().collect::<Vec<_>>());
    for (n, v) in &model {
        assert_eq!(&fs.getxattr("/f", n).unwrap(), v);
    }
    drop(fs);
    assert_fsck(&*dev);
    let fs = Fs::mount(dev.clone(), &Default::default()).unwrap();
    assert!(fs.info().free_blocks < free0);
    fs.unlink("/f").unwrap();
    // Every node of the tree is freed with the file's attributes.
    assert_eq!(fs.info().free_blocks, free0, "blocks back after unlink");
    drop(fs);
    assert_fsck(&*dev);
}

/// An unlinked file still open keeps its attributes until the last close;
/// then (or at the next mount, for a crash) they are freed.
#[test]
fn open_unlinked_file_keeps_attributes_until_close() {
    let (dev, fs) = new_fs(8);
    let free0 = fs.info().free_blocks;
    let f = fs.create("/f").unwrap();
    let ino = f.ino();
    fs.setxattr("/f", b"user.big", &pattern(1, 20000), 0)
        .unwrap();
    fs.unlink("/f").unwrap();
    assert_eq!(
        fs.getxattr_ino(ino, b"user.big").unwrap(),
        pattern(1, 20000)
    );
    drop(f);
    assert_eq!(errno(fs.getxattr_ino(ino, b"user.big")), libc::ENOENT);
    assert_eq!(fs.info().free_blocks, free0);
    drop(fs);
    assert_fsck(&*dev);
}

/// The attributes of the files of a crash test, by path (absent files are
/// left out).
type AttrState = std::collections::BTreeMap<String, Vec<(Vec<u8>, Vec<u8>)>>;

fn attr_state(fs: &Fs) -> AttrState {
    let mut out = std::collections::BTreeMap::new();
    for p in ["/a", "/b", "/d"] {
        let Ok(mut ns) = fs.listxattr(p) else {
            continue;
        };
        ns.sort();
        let v = ns
            .into_iter()
            .map(|n| {
                let val = fs.getxattr(p, &n).unwrap();
                (n, val)
            })
            .collect();
        out.insert(p.to_string(), v);
    }
    out
}

/// Each set and removal is one transaction: a crash at every persist point
/// (nothing pending, everything, random subsets of the pending words)
/// leaves a file system that fsck finds clean, with every completed
/// operation and the one in progress all or nothing.
#[test]
fn crash_at_every_persist_point() {
    use daxfs::{MkfsOptions, MountOptions};
    use daxfs_device::{CrashDevice, MemDevice, Subset};
    use std::sync::Arc;
    type Step = Box<dyn Fn(&Fs)>;
    let steps: Vec<Step> = vec![
        Box::new(|fs| fs.setxattr("/a", b"user.small", b"tiny", 0).unwrap()),
        Box::new(|fs| {
            fs.setxattr("/a", b"trusted.big", &pattern(3, 9000), 0)
                .unwrap()
        }),
        Box::new(|fs| {
            fs.setxattr("/d", b"user.dir", &pattern(4, 600), XATTR_CREATE)
                .unwrap()
        }),
        Box::new(|fs| {
            fs.setxattr("/a", b"trusted.big", &pattern(5, 300), XATTR_REPLACE)
                .unwrap()
        }),
        Box::new(|fs| fs.removexattr("/a", b"user.small").unwrap()),
        Box::new(|fs| {
            fs.setxattr("/b", b"security.s", &pattern(6, 5000), 0)
                .unwrap()
        }),
        Box::new(|fs| fs.unlink("/b").unwrap()),
    ];
    let dev = Arc::new(CrashDevice::new(4 << 20));
    Fs::mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
    {
        let fs = Fs::mount(dev.clone(), &MountOptions::default()).unwrap();
        drop(fs.create("/a").unwrap());
        drop(fs.create("/b").unwrap());
        fs.mkdir("/d", 0o755).unwrap();
    }
    dev.reset_recording();
    let fs = Fs::mount(dev.clone(), &MountOptions::default()).unwrap();
    let mut states = vec![attr_state(&fs)];
    let mut ends = vec![dev.fences()];
    for s in &steps {
        s(&fs);
        states.push(attr_state(&fs));
        ends.push(dev.fences());
    }
    drop(fs);
    let mut replay = dev.replay();
    let mut checked = 0;
    for k in 0..dev.fences() {
        replay.seek_after_fence(k);
        let j = ends.iter().rposition(|&e| e <= k + 1).unwrap_or(0);
        for sub in [Subset::None, Subset::All, Subset::Random(k as u64 * 31 + 1)] {
            let img = Arc::new(MemDevice::from_image(replay.image(sub)));
            let fs = Fs::mount(img.clone(), &MountOptions::default())
                .unwrap_or_else(|e| panic!("mount after crash at fence {k} ({sub:?}): {e}"));
            let got = attr_state(&fs);
            drop(fs);
            let rep = daxfs::fsck::fsck(&*img, &mut |_, _, _| {}).unwrap();
            assert!(
                rep.is_clean(),
                "fsck after crash at fence {k} ({sub:?}): {:#?}",
                rep.problems
            );
            assert!(
                got == states[j] || states.get(j + 1) == Some(&got),
                "crash at fence {k} ({sub:?}) after {j} steps: neither state"
            );
            checked += 1;
        }
    }
    assert!(checked > 10);
}

/// On a full device a set fails with ENOSPC and changes nothing: no new
/// attribute, and a replaced one keeps its old value.
#[test]
fn enospc_changes_nothing() {
    let (dev, fs) = new_fs(8);
    let f = fs.create("/fill").unwrap();
    fs.setxattr("/fill", b"user.keep", b"old", 0).unwrap();
    let mut off = 0u64;
    for chunk in [1usize << 20, 4096] {
        while f.write_at(off, &pattern(off, chunk)).is_ok() {
            off += chunk as u64;
        }
    }
    let mut model = vec![b"user.keep".to_vec()];
    let mut failed = None;
    for i in 0..1000 {
        let name = format!("user.v{i}").into_bytes();
        match fs.setxattr("/fill", &name, &pattern(i, 65536), 0) {
            Ok(()) => model.push(name),
            Err(e) => {
                assert_eq!(e.errno(), libc::ENOSPC, "{e}");
                failed = Some(name);
                break;
            }
        }
    }
    let failed = failed.expect("the device never filled");
    assert_eq!(errno(fs.getxattr("/fill", &failed)), libc::ENODATA);
    let r = fs.setxattr("/fill", b"user.keep", &pattern(1, 65536), XATTR_REPLACE);
    assert_eq!(errno(r), libc::ENOSPC);
    assert_eq!(fs.getxattr("/fill", b"user.keep").unwrap(), b"old");
    let mut listed = fs.listxattr("/fill").unwrap();
    listed.sort();
    model.sort();
    assert_eq!(listed, model);
    drop(f);
    drop(fs);
    assert_fsck(&*dev);
}

/// The generic cases not above: special files (no `user.` attributes), a
/// path's errors, attributes going with the inode through a rename and a
/// hard link and a remount, and gone with its last name.
#[test]
fn special_files_paths_renames_links_and_remount() {
    let (dev, fs) = new_fs(8);
    fs.mkdir("/d", 0o755).unwrap();
    fs.create("/d/f").unwrap();
    fs.mknod("/p", libc::S_IFIFO | 0o644, 0).unwrap();
    fs.mknod("/c", libc::S_IFCHR | 0o644, 0x103).unwrap();
    fs.symlink("/loop", "/loop").unwrap();
    for p in ["/p", "/c"] {
        assert_eq!(
            errno(fs.setxattr(p, b"user.a", b"v", 0)),
            libc::EPERM,
            "{p}"
        );
        assert_eq!(errno(fs.getxattr(p, b"user.a")), libc::ENODATA, "{p}");
        assert_eq!(errno(fs.removexattr(p, b"user.a")), libc::EPERM, "{p}");
        fs.setxattr(p, b"trusted.t", b"ok", 0).unwrap();
        assert_eq!(fs.getxattr(p, b"trusted.t").unwrap(), b"ok");
    }
    let long = format!("/{}", "x".repeat(256));
    for (p, e) in [
        ("/nope", libc::ENOENT),
        ("/d/f/x", libc::ENOTDIR),
        ("/loop", libc::ELOOP),
        (long.as_str(), libc::ENAMETOOLONG),
    ] {
        assert_eq!(errno(fs.setxattr(p, b"user.a", b"v", 0)), e, "set {p}");
        assert_eq!(errno(fs.getxattr(p, b"user.a")), e, "get {p}");
        assert_eq!(errno(fs.listxattr(p)), e, "list {p}");
        assert_eq!(errno(fs.removexattr(p, b"user.a")), e, "remove {p}");
    }
    fs.setxattr("/d", b"user.dir", b"on a directory", 0)
        .unwrap();
    fs.setxattr("/d/f", b"user.a", b"1", 0).unwrap();
    fs.setxattr("/d/f", b"trusted.b", &[7; 3000], 0).unwrap();
    let ino = fs.stat("/d/f").unwrap().ino;
    fs.rename("/d/f", "/g").unwrap();
    fs.link("/g", "/d/h").unwrap();
    assert_eq!(fs.getxattr("/d/h", b"user.a").unwrap(), b"1");
    fs.setxattr("/g", b"user.a", b"2", XATTR_REPLACE).unwrap();
    assert_eq!(fs.getxattr("/d/h", b"user.a").unwrap(), b"2");
    fs.unlink("/g").unwrap();
    let fs = remount(&dev, fs);
    assert_eq!(names(&fs, "/d/h"), ["trusted.b", "user.a"]);
    assert_eq!(fs.getxattr("/d/h", b"trusted.b").unwrap(), [7; 3000]);
    assert_eq!(fs.getxattr("/d", b"user.dir").unwrap(), b"on a directory");
    fs.unlink("/d/h").unwrap();
    assert_eq!(errno(fs.getxattr_ino(ino, b"user.a")), libc::ENOENT);
    assert_eq!(errno(fs.listxattr_ino(ino)), libc::ENOENT);
    drop(fs);
    assert_fsck(&*dev);
}
