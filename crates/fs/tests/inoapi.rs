//! The inode-number API: each call's errors (by errno, as Linux gives them;
//! the cases follow pjdfstest's for rename, link, unlink, rmdir and mkdir),
//! open by inode and unlinked-while-open files, readdir cookies, and races
//! of calls on one directory checked against what must hold.
mod common;
use common::*;
use daxfs::{FileKind, Fs, FsError, OpenOptions, RenameFlags, SetAttr, SetTime};
use std::collections::{BTreeMap, BTreeSet};

fn errno<T>(r: Result<T, FsError>) -> &'static str {
    match r {
        Ok(_) => panic!("expected an error, got success"),
        Err(e) => e.errno_name(),
    }
}

fn mkfile(fs: &Fs, dir: u64, name: &str) -> u64 {
    fs.create_at(dir, name, 0o644, &OpenOptions::create_new())
        .unwrap()
        .ino()
}

#[test]
fn lookup_and_getattr() {
    let (_dev, fs) = new_fs(8);
    let root = fs.root_ino();
    let d = fs.mkdir_at(root, "d", 0o750).unwrap();
    assert_eq!((d.kind, d.perm, d.nlink), (FileKind::Dir, 0o750, 2));
    let f = mkfile(&fs, d.ino, "f");
    assert_eq!(fs.lookup(d.ino, "f").unwrap().ino, f);
    assert_eq!(fs.lookup(d.ino, ".").unwrap().ino, d.ino);
    assert_eq!(fs.lookup(d.ino, "..").unwrap().ino, root);
    assert_eq!(fs.lookup(root, "..").unwrap().ino, root);
    assert_eq!(fs.getattr(f).unwrap().kind, FileKind::File);
    assert_eq!(fs.getattr(root).unwrap().nlink, 3);
    assert_eq!(errno(fs.lookup(d.ino, "nope")), "ENOENT");
    assert_eq!(errno(fs.lookup(d.ino, "")), "ENOENT");
    assert_eq!(errno(fs.lookup(f, "x")), "ENOTDIR");
    assert_eq!(errno(fs.lookup(d.ino, "x".repeat(256))), "ENAMETOOLONG");
    assert_eq!(errno(fs.lookup(d.ino, "a/b")), "EINVAL");
    assert_eq!(errno(fs.getattr(999_999)), "ENOENT");
    assert_eq!(errno(fs.getattr(0)), "ENOENT");
}

#[test]
fn generations_tell_inodes_apart_and_persist() {
    let (dev, fs) = new_fs(8);
    let root = fs.root_ino();
    let a = mkfile(&fs, root, "a");
    let ga = fs.getattr(a).unwrap().generation;
    fs.unlink_at(root, "a").unwrap();
    let b = mkfile(&fs, root, "a");
    let gb = fs.getattr(b).unwrap().generation;
    assert!(ga != 0 && gb != 0);
    assert!((a, ga) != (b, gb), "a new inode is told apart from the old");
    assert!(gb > ga);
    let fs = remount(&dev, fs);
    assert_eq!(fs.getattr(b).unwrap().generation, gb);
    assert_eq!(errno(fs.getattr(a)), "ENOENT");
}

#[test]
fn create_opens_atomically_with_excl_and_trunc() {
    let (_dev, fs) = new_fs(8);
    let root = fs.root_ino();
    let f = fs
        .create_at(root, "f", 0o600, &OpenOptions::create())
        .unwrap();
    assert_eq!(fs.getattr(f.ino()).unwrap().perm, 0o600);
    f.write_at(0, b"hello").unwrap();
    // O_CREAT without O_EXCL opens the one there.
    let g = fs
        .create_at(root, "f", 0o777, &OpenOptions::create())
        .unwrap();
    assert_eq!(g.ino(), f.ino());
    assert_eq!(g.stat().size, 5);
    assert_eq!(
        errno(fs.create_at(root, "f", 0o644, &OpenOptions::create_new())),
        "EEXIST"
    );
    let t = fs
        .create_at(
            root,
            "f",
            0o644,
            &OpenOptions {
                truncate: true,
                ..OpenOptions::create()
            },
        )
        .unwrap();
    assert_eq!(t.stat().size, 0);
    fs.mkdir_at(root, "d", 0o755).unwrap();
    assert_eq!(
        errno(fs.create_at(root, "d", 0o644, &OpenOptions::create())),
        "EISDIR"
    );
    assert_eq!(
        errno(fs.create_at(root, "d", 0o644, &OpenOptions::create_new())),
        "EEXIST"
    );
    assert_eq!(
        errno(fs.create_at(root, ".", 0o644, &OpenOptions::create())),
        "EISDIR"
    );
    assert_eq!(
        errno(fs.create_at(f.ino(), "x", 0o644, &OpenOptions::create())),
        "ENOTDIR"
    );
    assert_eq!(
        errno(fs.create_at(root, "", 0o644, &OpenOptions::create())),
        "ENOENT"
    );
    fs.symlink_at("f", root, "l").unwrap();
    assert_eq!(
        errno(fs.create_at(root, "l", 0o644, &OpenOptions::create())),
        "ELOOP"
    );
}

#[test]
fn mkdir_symlink_errnos() {
    let (_dev, fs) = new_fs(8);
    let root = fs.root_ino();
    let d = fs.mkdir_at(root, "d", 0o755).unwrap().ino;
    for n in ["d", ".", ".."] {
        assert_eq!(errno(fs.mkdir_at(root, n, 0o755)), "EEXIST", "{n}");
        assert_eq!(errno(fs.symlink_at("t", root, n)), "EEXIST", "{n}");
    }
    assert_eq!(
        errno(fs.mkdir_at(root, "x".repeat(256), 0o755)),
        "ENAMETOOLONG"
    );
    assert_eq!(errno(fs.symlink_at("", root, "s")), "ENOENT");
    assert_eq!(
        errno(fs.symlink_at("t".repeat(4096), root, "s")),
        "ENAMETOOLONG"
    );
    let s = fs.symlink_at("some/where", root, "s").unwrap();
    assert_eq!(s.kind, FileKind::Symlink);
    assert_eq!(fs.readlink_ino(s.ino).unwrap(), b"some/where");
    assert_eq!(errno(fs.readlink_ino(d)), "EINVAL");
    // A removed directory takes no new entries.
    let gone = fs.mkdir_at(d, "gone", 0o755).unwrap().ino;
    let keep = fs.open_ino(gone, &OpenOptions::read_only()).unwrap();
    fs.rmdir_at(d, "gone").unwrap();
    assert_eq!(errno(fs.mkdir_at(gone, "x", 0o755)), "ENOENT");
    drop(keep);
    assert_eq!(errno(fs.getattr(gone)), "ENOENT");
}

#[test]
fn unlink_rmdir_errnos() {
    let (dev, fs) = new_fs(8);
    let root = fs.root_ino();
    let d = fs.mkdir_at(root, "d", 0o755).unwrap().ino;
    let f = mkfile(&fs, d, "f");
    assert_eq!(errno(fs.unlink_at(root, "d")), "EISDIR");
    assert_eq!(errno(fs.unlink_at(d, ".")), "EISDIR");
    assert_eq!(errno(fs.unlink_at(d, "..")), "EISDIR");
    assert_eq!(errno(fs.unlink_at(d, "nope")), "ENOENT");
    assert_eq!(errno(fs.unlink_at(f, "x")), "ENOTDIR");
    assert_eq!(errno(fs.rmdir_at(d, "f")), "ENOTDIR");
    assert_eq!(errno(fs.rmdir_at(root, "d")), "ENOTEMPTY");
    assert_eq!(errno(fs.rmdir_at(d, ".")), "EINVAL");
    assert_eq!(errno(fs.rmdir_at(d, "..")), "ENOTEMPTY");
    assert_eq!(errno(fs.rmdir_at(d, "nope")), "ENOENT");
    assert_eq!(errno(fs.rmdir_at(d, "x".repeat(256))), "ENAMETOOLONG");
    fs.unlink_at(d, "f").unwrap();
    assert_eq!(errno(fs.getattr(f)), "ENOENT");
    assert_eq!(fs.getattr(root).unwrap().nlink, 3);
    fs.rmdir_at(root, "d").unwrap();
    assert_eq!(fs.getattr(root).unwrap().nlink, 2);
    assert_eq!(errno(fs.getattr(d)), "ENOENT");
    drop(fs);
    assert_fsck(&*dev);
}

#[test]
fn link_errnos_and_counts() {
    let (dev, fs) = new_fs(8);
    let root = fs.root_ino();
    let d = fs.mkdir_at(root, "d", 0o755).unwrap().ino;
    let f = mkfile(&fs, root, "f");
    assert_eq!(errno(fs.link_at(d, root, "d2")), "EPERM");
    assert_eq!(errno(fs.link_at(f, root, "f")), "EEXIST");
    assert_eq!(errno(fs.link_at(f, root, "d")), "EEXIST");
    assert_eq!(errno(fs.link_at(f, root, ".")), "EEXIST");
    assert_eq!(errno(fs.link_at(f, f, "x")), "ENOTDIR");
    assert_eq!(errno(fs.link_at(f, root, "x".repeat(256))), "ENAMETOOLONG");
    assert_eq!(errno(fs.link_at(12345, root, "x")), "ENOENT");
    assert_eq!(fs.link_at(f, d, "g").unwrap().nlink, 2);
    assert_eq!(fs.getattr(f).unwrap().nlink, 2);
    fs.unlink_at(root, "f").unwrap();
    assert_eq!(fs.getattr(f).unwrap().nlink, 1);
    // A file unlinked while open cannot be named again.
    let h = fs.open_ino(f, &OpenOptions::read_write()).unwrap();
    fs.unlink_at(d, "g").unwrap();
    assert_eq!(errno(fs.link_at(f, root, "back")), "ENOENT");
    drop(h);
    drop(fs);
    assert_fsck(&*dev);
}

#[test]
fn rename_errnos() {
    let (dev, fs) = new_fs(8);
    let root = fs.root_ino();
    let a = fs.mkdir_at(root, "a", 0o755).unwrap().ino;
    let b = fs.mkdir_at(a, "b", 0o755).unwrap().ino;
    let f = mkfile(&fs, root, "f");
    mkfile(&fs, b, "inner");
    let none = RenameFlags::default();
    // A directory into its own subtree (and onto itself from below).
    assert_eq!(errno(fs.rename_at(root, "a", b, "x", none)), "EINVAL");
    assert_eq!(errno(fs.rename_at(root, "a", a, "x", none)), "EINVAL");
    assert_eq!(errno(fs.rename_at(a, "b", root, "a", none)), "ENOTEMPTY");
    assert_eq!(errno(fs.rename_at(root, "f", root, "a", none)), "EISDIR");
    assert_eq!(errno(fs.rename_at(root, "a", root, "f", none)), "ENOTDIR");
    assert_eq!(errno(fs.rename_at(root, "nope", root, "x", none)), "ENOENT");
    assert_eq!(errno(fs.rename_at(root, ".", root, "x", none)), "EBUSY");
    assert_eq!(errno(fs.rename_at(root, "f", root, "..", none)), "EBUSY");
    assert_eq!(errno(fs.rename_at(root, "f", root, "", none)), "ENOENT");
    assert_eq!(errno(fs.rename_at(root, "f", f, "x", none)), "ENOTDIR");
    assert_eq!(
        errno(fs.rename_at(root, "f", root, "x".repeat(256), none)),
        "ENAMETOOLONG"
    );
    let g = mkfile(&fs, root, "g");
    assert_eq!(
        errno(fs.rename_at(root, "f", root, "g", RenameFlags::NOREPLACE)),
        "EEXIST"
    );
    assert_eq!(
        errno(fs.rename_at(root, "f", root, ".", RenameFlags::NOREPLACE)),
        "EEXIST"
    );
    let both = RenameFlags {
        noreplace: true,
        exchange: true,
    };
    assert_eq!(errno(fs.rename_at(root, "f", root, "g", both)), "EINVAL");
    assert_eq!(errno(RenameFlags::from_bits(8)), "EINVAL");
    assert_eq!(
        RenameFlags::from_bits(libc::RENAME_EXCHANGE).unwrap(),
        RenameFlags::EXCHANGE
    );
    assert_eq!(
        errno(fs.rename_at(root, "f", root, "none", RenameFlags::EXCHANGE)),
        "ENOENT"
    );
    // The exchange of a directory with a name below it would make a cycle.
    assert_eq!(
        errno(fs.rename_at(root, "a", b, "inner", RenameFlags::EXCHANGE)),
        "EINVAL"
    );
    assert_eq!(
        errno(fs.rename_at(b, "inner", root, "a", RenameFlags::EXCHANGE)),
        "EINVAL"
    );
    // Nothing changed.
    assert_eq!(fs.lookup(root, "f").unwrap().ino, f);
    assert_eq!(fs.lookup(root, "g").unwrap().ino, g);
    assert_eq!(fs.lookup(a, "b").unwrap().ino, b);
    // Two names of one file: success, nothing done.
    fs.link_at(f, root, "f2").unwrap();
    fs.rename_at(root, "f", root, "f2", none).unwrap();
    assert_eq!(fs.lookup(root, "f").unwrap().ino, f);
    // NOREPLACE to a free name works.
    fs.rename_at(root, "g", a, "g", RenameFlags::NOREPLACE)
        .unwrap();
    assert_eq!(fs.lookup(a, "g").unwrap().ino, g);
    drop(fs);
    assert_fsck(&*dev);
}

#[test]
fn rename_exchange_swaps_across_directories() {
    let (dev, fs) = new_fs(8);
    let root = fs.root_ino();
    let a = fs.mkdir_at(root, "a", 0o755).unwrap().ino;
    let b = fs.mkdir_at(root, "b", 0o755).unwrap().ino;
    let sub = fs.mkdir_at(a, "sub", 0o755).unwrap().ino;
    mkfile(&fs, sub, "x");
    let f = mkfile(&fs, b, "f");
    // A directory and a file swap between two directories.
    fs.rename_at(a, "sub", b, "f", RenameFlags::EXCHANGE)
        .unwrap();
    assert_eq!(fs.lookup(a, "sub").unwrap().ino, f);
    assert_eq!(fs.lookup(b, "f").unwrap().ino, sub);
    assert_eq!(fs.lookup(sub, "..").unwrap().ino, b);
    assert_eq!(fs.getattr(a).unwrap().nlink, 2);
    assert_eq!(fs.getattr(b).unwrap().nlink, 3);
    // Two directories swap; their contents go along.
    fs.rename_at(root, "a", b, "f", RenameFlags::EXCHANGE)
        .unwrap();
    assert_eq!(fs.lookup(root, "a").unwrap().ino, sub);
    assert_eq!(fs.lookup(sub, "x").unwrap().kind, FileKind::File);
    assert_eq!(fs.lookup(b, "f").unwrap().ino, a);
    assert_eq!(fs.lookup(a, "..").unwrap().ino, b);
    assert_eq!(fs.lookup(sub, "..").unwrap().ino, root);
    let dev2 = dev.clone();
    let fs = remount(&dev2, fs);
    assert_eq!(fs.stat("/b/f/sub").unwrap().ino, f);
    assert_eq!(fs.stat("/a/x").unwrap().kind, FileKind::File);
    drop(fs);
    assert_fsck(&*dev);
}

#[test]
fn setattr_as_chmod_chown_truncate_utimensat() {
    let (_dev, fs) = new_fs(8);
    let root = fs.root_ino();
    let f = fs
        .create_at(root, "f", 0o644, &OpenOptions::create())
        .unwrap();
    f.write_at(0, &[7u8; 10_000]).unwrap();
    let ino = f.ino();
    let before = fs.getattr(ino).unwrap();
    let st = fs
        .setattr(
            ino,
            &SetAttr {
                mode: Some(0o6755),
                atime: Some(SetTime::At(1_000, 5)),
                mtime: None,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(st.perm, 0o6755);
    assert_eq!(st.atime, (1_000, 5));
    assert_eq!(st.mtime, before.mtime, "UTIME_OMIT leaves it");
    assert!(st.ctime >= before.ctime);
    // chown drops set-user-ID, and set-group-ID of a group-executable file.
    let st = fs
        .setattr(
            ino,
            &SetAttr {
                uid: Some(7),
                gid: Some(8),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!((st.uid, st.gid, st.perm), (7, 8, 0o755));
    let st = fs
        .setattr(
            ino,
            &SetAttr {
                size: Some(100),
                mtime: Some(SetTime::Now),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(st.size, 100);
    assert!(st.mtime >= before.mtime);
    assert_eq!(errno(SetTime::from_timespec(0, 1_000_000_000)), "EINVAL");
    assert_eq!(SetTime::from_timespec(5, libc::UTIME_OMIT).unwrap(), None);
    assert_eq!(
        SetTime::from_timespec(5, libc::UTIME_NOW).unwrap(),
        Some(SetTime::Now)
    );
    assert_eq!(
        errno(fs.setattr(
            ino,
            &SetAttr {
                atime: Some(SetTime::At(0, 1_000_000_000)),
                ..Default::default()
            }
        )),
        "EINVAL"
    );
    let d = fs.mkdir_at(root, "d", 0o755).unwrap().ino;
    let size = |n| SetAttr {
        size: Some(n),
        ..Default::default()
    };
    assert_eq!(errno(fs.setattr(d, &size(0))), "EISDIR");
    let l = fs.symlink_at("f", root, "l").unwrap().ino;
    assert_eq!(errno(fs.setattr(l, &size(0))), "EINVAL");
    assert_eq!(errno(fs.setattr(4242, &SetAttr::default())), "ENOENT");
    // A directory keeps its set-group-ID bit through chown.
    fs.setattr(
        d,
        &SetAttr {
            mode: Some(0o2775),
            ..Default::default()
        },
    )
    .unwrap();
    let st = fs
        .setattr(
            d,
            &SetAttr {
                gid: Some(3),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(st.perm, 0o2775);
}

#[test]
fn statfs_counts_blocks_and_files() {
    let (_dev, fs) = new_fs(8);
    let root = fs.root_ino();
    let s0 = fs.statfs();
    assert_eq!(s0.block_size, 4096);
    assert_eq!(s0.name_max, 255);
    assert!(s0.available_blocks <= s0.free_blocks && s0.free_blocks < s0.blocks);
    let f = fs
        .create_at(root, "f", 0o644, &OpenOptions::create())
        .unwrap();
    f.write_at(0, &[1u8; 64 << 10]).unwrap();
    let s1 = fs.statfs();
    assert!(s1.free_blocks + 16 <= s0.free_blocks);
    assert_eq!(s1.files - s1.free_files, s0.files - s0.free_files + 1);
}

#[test]
fn open_by_inode_and_unlinked_while_open() {
    let (dev, fs) = new_fs(8);
    let root = fs.root_ino();
    let ino = mkfile(&fs, root, "f");
    let h = fs.open_ino(ino, &OpenOptions::read_write()).unwrap();
    h.write_at(0, b"still here").unwrap();
    fs.unlink_at(root, "f").unwrap();
    assert_eq!(errno(fs.lookup(root, "f")), "ENOENT");
    // Unlinked, the open file keeps working and is reachable by number.
    h.write_at(10, b"!").unwrap();
    let again = fs.open_ino(ino, &OpenOptions::read_only()).unwrap();
    let mut buf = [0u8; 11];
    assert_eq!(again.read_at(0, &mut buf).unwrap(), 11);
    assert_eq!(&buf, b"still here!");
    assert_eq!(fs.getattr(ino).unwrap().nlink, 0);
    drop(h);
    assert_eq!(fs.getattr(ino).unwrap().nlink, 0, "one handle left");
    drop(again);
    assert_eq!(errno(fs.getattr(ino)), "ENOENT", "freed at the last close");
    assert_eq!(errno(fs.open_ino(ino, &OpenOptions::read_only())), "ENOENT");
    let d = fs.mkdir_at(root, "d", 0o755).unwrap().ino;
    assert_eq!(errno(fs.open_ino(d, &OpenOptions::read_write())), "EISDIR");
    fs.open_ino(d, &OpenOptions::read_only()).unwrap();
    let l = fs.symlink_at("d", root, "l").unwrap().ino;
    assert_eq!(errno(fs.open_ino(l, &OpenOptions::read_only())), "ELOOP");
    drop(fs);
    assert_fsck(&*dev);
}

#[test]
fn a_held_inode_outlives_its_last_name_until_released() {
    let (dev, fs) = new_fs(8);
    let root = fs.root_ino();
    let free = |fs: &Fs| fs.statfs().free_blocks;
    let base = free(&fs);
    let ino = mkfile(&fs, root, "f");
    let g = fs.getattr(ino).unwrap().generation;
    fs.open_ino(ino, &OpenOptions::read_write())
        .unwrap()
        .write_at(0, &[7u8; 40_000])
        .unwrap();
    let hold = fs.hold_ino(ino, Some(g)).unwrap();
    assert_eq!(hold.ino(), ino);
    let both = fs.hold_ino(ino, None).unwrap();
    assert_eq!(errno(fs.hold_ino(ino, Some(g + 1))), "ESTALE");
    assert_eq!(errno(fs.hold_ino(999_999, None)), "ENOENT");
    assert_eq!(errno(fs.hold_ino(999_999, Some(1))), "ESTALE");
    fs.unlink_at(root, "f").unwrap();
    let st = fs.getattr(ino).unwrap();
    assert_eq!((st.nlink, st.size), (0, 40_000), "held: still there");
    assert!(free(&fs) < base, "its blocks are still in use");
    drop(hold);
    assert_eq!(fs.getattr(ino).unwrap().nlink, 0, "one hold left");
    // Directories, symbolic links and special files are held too.
    let d = fs.mkdir_at(root, "d", 0o755).unwrap().ino;
    let l = fs.symlink_at("d", root, "l").unwrap().ino;
    let (hd, hl) = (fs.hold_ino(d, None).unwrap(), fs.hold_ino(l, None).unwrap());
    fs.rmdir_at(root, "d").unwrap();
    fs.unlink_at(root, "l").unwrap();
    assert_eq!(fs.getattr(d).unwrap().nlink, 0);
    assert_eq!(errno(fs.mkdir_at(d, "x", 0o755)), "ENOENT");
    assert_eq!(fs.readlink_ino(l).unwrap(), b"d");
    drop((hd, hl));
    assert_eq!(errno(fs.getattr(d)), "ENOENT");
    assert_eq!(errno(fs.getattr(l)), "ENOENT");
    drop(both);
    assert_eq!(
        errno(fs.getattr(ino)),
        "ENOENT",
        "freed at the last release"
    );
    assert_eq!(free(&fs), base);
    // A crash while held (here: a hold never released) leaves the inode on
    // the orphan list: the next mount frees it.
    let ino = mkfile(&fs, root, "g");
    fs.open_ino(ino, &OpenOptions::read_write())
        .unwrap()
        .write_at(0, &[1u8; 8192])
        .unwrap();
    let hold = fs.hold_ino(ino, None).unwrap();
    fs.unlink_at(root, "g").unwrap();
    let image = std::sync::Arc::new(daxfs_device::MemDevice::from_image(dev.image()));
    drop(hold);
    drop(fs);
    assert_fsck(&*dev);
    let fs = Fs::mount(image.clone(), &daxfs::MountOptions::default()).unwrap();
    assert_eq!(errno(fs.getattr(ino)), "ENOENT");
    assert_eq!(free(&fs), base);
    drop(fs);
    assert_fsck(&*image);
}

#[test]
fn tmpfile_is_freed_at_close_or_named_by_link() {
    let (dev, fs) = new_fs(8);
    let root = fs.root_ino();
    let used = |fs: &Fs| {
        let s = fs.statfs();
        s.files - s.free_files
    };
    let base = used(&fs);
    let t = fs.tmpfile_at(root, 0o600).unwrap();
    t.write_at(0, &[9u8; 20_000]).unwrap();
    assert_eq!(used(&fs), base + 1);
    assert!(fs.readdir_ino(root, 0, 100).unwrap().len() == 2, "no name");
    assert_eq!(fs.getattr(t.ino()).unwrap().nlink, 0);
    drop(t);
    assert_eq!(used(&fs), base, "freed at close");
    let t = fs.tmpfile_at(root, 0o600).unwrap();
    t.write_at(0, b"named later").unwrap();
    let st = fs.link_at(t.ino(), root, "named").unwrap();
    assert_eq!(st.nlink, 1);
    drop(t);
    let fs = remount(&dev, fs);
    let f = fs.open("/named", &OpenOptions::read_only()).unwrap();
    let mut buf = [0u8; 11];
    assert_eq!(f.read_at(0, &mut buf).unwrap(), 11);
    assert_eq!(&buf, b"named later");
    drop(f);
    // A crash (here: a handle that is never closed) leaves it on the orphan
    // list: the next mount frees it.
    let mib8 = dev.clone();
    let t = fs.tmpfile_at(fs.root_ino(), 0o600).unwrap();
    t.write_at(0, &[1u8; 8192]).unwrap();
    let ino = t.ino();
    let image = daxfs_device::MemDevice::from_image(mib8.image());
    drop(t);
    drop(fs);
    let img = std::sync::Arc::new(image);
    let fs = Fs::mount(img.clone(), &daxfs::MountOptions::default()).unwrap();
    assert_eq!(errno(fs.getattr(ino)), "ENOENT");
    drop(fs);
    assert_fsck(&*img);
    assert_fsck(&*dev);
}

#[test]
fn readdir_ino_lists_dot_dotdot_and_pages_by_cookie() {
    let (_dev, fs) = new_fs(8);
    let root = fs.root_ino();
    let d = fs.mkdir_at(root, "d", 0o755).unwrap().ino;
    for i in 0..20 {
        mkfile(&fs, d, &format!("n{i}"));
    }
    let all = fs.readdir_ino(d, 0, usize::MAX).unwrap();
    assert_eq!(all.len(), 22);
    assert_eq!((all[0].name.as_slice(), all[0].ino), (&b"."[..], d));
    assert_eq!((all[1].name.as_slice(), all[1].ino), (&b".."[..], root));
    let mut paged = vec![];
    let mut cookie = 0;
    loop {
        let page = fs.readdir_ino(d, cookie, 3).unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 3);
        cookie = page.last().unwrap().cookie;
        paged.extend(page);
    }
    assert_eq!(paged, all);
    assert_eq!(
        errno(fs.readdir_ino(mkfile(&fs, root, "f"), 0, 10)),
        "ENOTDIR"
    );
}

/// The cookie rule, one step at a time: pages read between creates and
/// removals return no name twice and miss none that existed throughout.
#[test]
fn readdir_cookies_hold_while_the_directory_changes() {
    let (_dev, fs) = new_fs(16);
    let root = fs.root_ino();
    let d = fs.mkdir_at(root, "d", 0o755).unwrap().ino;
    let mut live: BTreeSet<String> = BTreeSet::new();
    for i in 0..60 {
        let n = format!("s{i}");
        mkfile(&fs, d, &n);
        live.insert(n);
    }
    let stable: BTreeSet<String> = live.iter().filter(|n| n.len() % 2 == 0).cloned().collect();
    let mut seen = BTreeMap::<String, u32>::new();
    let mut cookie = 0;
    let mut step = 0u64;
    loop {
        let page = fs.readdir_ino(d, cookie, 4).unwrap();
        if page.is_empty() {
            break;
        }
        cookie = page.last().unwrap().cookie;
        for e in page {
            *seen.entry(e.name_lossy()).or_default() += 1;
        }
        // Remove a name that is not stable, add two new ones.
        if let Some(n) = live.iter().find(|n| !stable.contains(*n)).cloned() {
            fs.unlink_at(d, &n).unwrap();
            live.remove(&n);
        }
        for _ in 0..2 {
            step += 1;
            let n = format!("new{step}");
            mkfile(&fs, d, &n);
            live.insert(n);
        }
    }
    for (n, c) in &seen {
        assert_eq!(*c, 1, "{n} returned {c} times");
    }
    for n in &stable {
        assert!(
            seen.contains_key(n),
            "{n} existed throughout but was skipped"
        );
    }
}

mod races {
    use super::*;
    use std::sync::{Arc, Barrier};
    use std::thread;

    const THREADS: usize = 4;

    fn run<T: Send + 'static>(
        fs: &Arc<Fs>,
        f: impl Fn(&Fs, usize) -> T + Send + Sync + 'static,
    ) -> Vec<T> {
        let f = Arc::new(f);
        let bar = Arc::new(Barrier::new(THREADS));
        let hs: Vec<_> = (0..THREADS)
            .map(|t| {
                let (fs, f, bar) = (fs.clone(), f.clone(), bar.clone());
                thread::spawn(move || {
                    bar.wait();
                    f(&fs, t)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    }

    fn setup() -> (Arc<daxfs_device::MemDevice>, Arc<Fs>, u64) {
        let (dev, fs) = new_fs(16);
        let d = fs.mkdir_at(fs.root_ino(), "d", 0o755).unwrap().ino;
        (dev, Arc::new(fs), d)
    }

    fn finish(dev: Arc<daxfs_device::MemDevice>, fs: Arc<Fs>) {
        assert!(Arc::strong_count(&fs) == 1, "threads are done");
        drop(fs);
        assert_fsck(&*dev);
    }

    #[test]
    fn create_create_one_name() {
        let (dev, fs, d) = setup();
        for round in 0..10 {
            let name = format!("c{round}");
            let n2 = name.clone();
            let excl = run(&fs, move |fs, _| {
                fs.create_at(d, &n2, 0o644, &OpenOptions::create_new())
                    .map(|f| f.ino())
                    .map_err(|e| e.errno_name())
            });
            let ok: Vec<_> = excl.iter().filter_map(|r| r.as_ref().ok()).collect();
            assert_eq!(ok.len(), 1, "exactly one O_EXCL create wins: {excl:?}");
            assert!(
                excl.iter()
                    .filter(|r| r.is_err())
                    .all(|r| *r == Err("EEXIST"))
            );
            // Without O_EXCL every caller opens the same inode.
            let name3 = format!("o{round}");
            let open = run(&fs, move |fs, _| {
                fs.create_at(d, &name3, 0o644, &OpenOptions::create())
                    .unwrap()
                    .ino()
            });
            assert!(open.iter().all(|i| *i == open[0]), "{open:?}");
        }
        assert_eq!(fs.readdir_ino(d, 0, usize::MAX).unwrap().len(), 22);
        finish(dev, fs);
    }

    #[test]
    fn create_unlink_one_name() {
        let (dev, fs, d) = setup();
        let r = run(&fs, move |fs, t| {
            let mut made = 0u32;
            let mut removed = 0u32;
            for _ in 0..50 {
                if t % 2 == 0 {
                    match fs.create_at(d, "x", 0o644, &OpenOptions::create_new()) {
                        Ok(_) => made += 1,
                        Err(e) => assert_eq!(e.errno_name(), "EEXIST"),
                    }
                } else {
                    match fs.unlink_at(d, "x") {
                        Ok(()) => removed += 1,
                        Err(e) => assert_eq!(e.errno_name(), "ENOENT"),
                    }
                }
            }
            (made, removed)
        });
        let made: u32 = r.iter().map(|x| x.0).sum();
        let removed: u32 = r.iter().map(|x| x.1).sum();
        let left = u32::from(fs.lookup(d, "x").is_ok());
        assert_eq!(made, removed + left, "every create is removed once or left");
        finish(dev, fs);
    }

    #[test]
    fn rename_rename_cycle_attempt() {
        let (dev, fs, d) = setup();
        for round in 0..20 {
            let a = fs.mkdir_at(d, format!("a{round}"), 0o755).unwrap().ino;
            let b = fs.mkdir_at(d, format!("b{round}"), 0o755).unwrap().ino;
            // Two threads move a into b and b into a at once: one may win,
            // never both (that would be a cycle cut off from the root).
            let r = run(&fs, move |fs, t| match t {
                0 => fs
                    .rename_at(d, format!("a{round}"), b, "in", RenameFlags::default())
                    .map_err(|e| e.errno_name()),
                1 => fs
                    .rename_at(d, format!("b{round}"), a, "in", RenameFlags::default())
                    .map_err(|e| e.errno_name()),
                _ => Ok(()),
            });
            let wins = r[..2].iter().filter(|x| x.is_ok()).count();
            assert_eq!(wins, 1, "{r:?}");
            for x in &r[..2] {
                if let Err(e) = x {
                    assert!(*e == "EINVAL" || *e == "ENOENT", "{e}");
                }
            }
            // Both are reachable from the root.
            for ino in [a, b] {
                let mut cur = ino;
                for _ in 0..10 {
                    cur = fs.lookup(cur, "..").unwrap().ino;
                }
                assert_eq!(cur, fs.root_ino());
            }
        }
        finish(dev, fs);
    }

    #[test]
    fn rename_rename_one_name() {
        let (dev, fs, d) = setup();
        for _ in 0..20 {
            // One source, four targets: one rename wins, the rest find no
            // source.
            let f = mkfile(&fs, d, "src");
            let r = run(&fs, move |fs, t| {
                fs.rename_at(d, "src", d, format!("dst{t}"), RenameFlags::default())
                    .map_err(|e| e.errno_name())
            });
            assert_eq!(r.iter().filter(|x| x.is_ok()).count(), 1, "{r:?}");
            assert!(r.iter().all(|x| x.is_ok() || *x == Err("ENOENT")), "{r:?}");
            let names: Vec<(String, u64)> = fs
                .readdir_ino(d, 0, usize::MAX)
                .unwrap()
                .into_iter()
                .skip(2)
                .map(|e| (e.name_lossy(), e.ino))
                .collect();
            let won = r.iter().position(|x| x.is_ok()).unwrap();
            assert_eq!(names, [(format!("dst{won}"), f)]);
            fs.unlink_at(d, format!("dst{won}")).unwrap();
            // Four sources onto one target with NOREPLACE: one wins, the
            // rest see EEXIST and keep their names.
            let inos: Vec<u64> = (0..THREADS)
                .map(|t| mkfile(&fs, d, &format!("s{t}")))
                .collect();
            let r = run(&fs, move |fs, t| {
                fs.rename_at(d, format!("s{t}"), d, "target", RenameFlags::NOREPLACE)
                    .map_err(|e| e.errno_name())
            });
            assert_eq!(r.iter().filter(|x| x.is_ok()).count(), 1, "{r:?}");
            assert!(r.iter().all(|x| x.is_ok() || *x == Err("EEXIST")), "{r:?}");
            let won = r.iter().position(|x| x.is_ok()).unwrap();
            assert_eq!(fs.lookup(d, "target").unwrap().ino, inos[won]);
            for t in (0..THREADS).filter(|&t| t != won) {
                assert_eq!(fs.lookup(d, format!("s{t}")).unwrap().ino, inos[t]);
                fs.unlink_at(d, format!("s{t}")).unwrap();
            }
            fs.unlink_at(d, "target").unwrap();
            assert_eq!(fs.readdir_ino(d, 0, 10).unwrap().len(), 2);
        }
        finish(dev, fs);
    }

    #[test]
    fn rename_rmdir() {
        let (dev, fs, d) = setup();
        for round in 0..20 {
            fs.mkdir_at(d, "src", 0o755).unwrap();
            let t = fs.mkdir_at(d, "target", 0o755).unwrap().ino;
            let r = run(&fs, move |fs, t2| match t2 {
                0 => fs.rename_at(d, "src", t, "moved", RenameFlags::default()),
                1 => fs.rmdir_at(d, "target"),
                2 => fs.rmdir_at(d, "src"),
                _ => Ok(()),
            });
            let errs: Vec<_> = r
                .iter()
                .map(|x| x.as_ref().err().map(|e| e.errno_name()))
                .collect();
            match (r[0].is_ok(), r[1].is_ok(), r[2].is_ok()) {
                // The move won: target was not empty for rmdir, src gone.
                (true, false, false) => {
                    assert_eq!(errs[1], Some("ENOTEMPTY"));
                    assert_eq!(errs[2], Some("ENOENT"));
                    fs.rmdir_at(t, "moved").unwrap();
                    fs.rmdir_at(d, "target").unwrap();
                }
                // Target removed first: the move found no directory.
                (false, true, true) | (false, true, false) => {
                    assert_eq!(errs[0], Some("ENOENT"), "round {round}: {errs:?}");
                    if r[2].is_err() {
                        fs.rmdir_at(d, "src").unwrap();
                    }
                }
                // src removed, then target.
                (false, false, true) => panic!("round {round}: {errs:?}"),
                other => panic!("round {round}: {other:?} {errs:?}"),
            }
            assert_eq!(fs.readdir_ino(d, 0, 10).unwrap().len(), 2, "round {round}");
        }
        finish(dev, fs);
    }

    #[test]
    fn link_unlink() {
        let (dev, fs, d) = setup();
        let f = mkfile(&fs, d, "f");
        let r = run(&fs, move |fs, t| {
            let name = format!("l{t}");
            let mut n = 0;
            for _ in 0..40 {
                if fs.link_at(f, d, &name).is_ok() {
                    n += 1;
                }
                fs.unlink_at(d, &name).unwrap();
            }
            n
        });
        assert_eq!(r.iter().sum::<u32>(), 40 * THREADS as u32);
        assert_eq!(fs.getattr(f).unwrap().nlink, 1);
        finish(dev, fs);
    }

    #[test]
    fn readdir_during_creates_and_removals() {
        let (dev, fs, d) = setup();
        for i in 0..40 {
            mkfile(&fs, d, &format!("keep{i}"));
        }
        let r = run(&fs, move |fs, t| {
            if t == 0 {
                // Readers page through the directory while it changes.
                let mut rounds = vec![];
                for _ in 0..5 {
                    let mut seen = BTreeMap::<Vec<u8>, u32>::new();
                    let mut cookie = 0;
                    loop {
                        let page = fs.readdir_ino(d, cookie, 5).unwrap();
                        let Some(last) = page.last() else { break };
                        cookie = last.cookie;
                        for e in page {
                            *seen.entry(e.name).or_default() += 1;
                        }
                    }
                    rounds.push(seen);
                }
                rounds
            } else {
                for i in 0..30 {
                    let n = format!("tmp{t}_{i}");
                    mkfile(fs, d, &n);
                    if i % 2 == 0 {
                        fs.unlink_at(d, &n).unwrap();
                    }
                }
                vec![]
            }
        });
        for seen in &r[0] {
            for (n, c) in seen {
                assert_eq!(*c, 1, "{} twice", String::from_utf8_lossy(n));
            }
            for i in 0..40 {
                assert!(
                    seen.contains_key(format!("keep{i}").as_bytes()),
                    "keep{i} skipped"
                );
            }
        }
        finish(dev, fs);
    }
}

#[test]
fn mknod_keeps_type_and_device_number() {
    let (dev, fs) = new_fs(8);
    let root = fs.root_ino();
    let chr = daxfs::encode_dev(4095, 0xabcde).unwrap();
    assert_eq!(daxfs::decode_dev(chr), (4095, 0xabcde));
    assert_eq!(daxfs::encode_dev(1, 3).unwrap(), 0x103, "as new_encode_dev");
    assert_eq!(errno(daxfs::encode_dev(4096, 0)), "EINVAL");
    let cases = [
        ("fifo", libc::S_IFIFO | 0o640, 0, FileKind::Fifo),
        ("sock", libc::S_IFSOCK | 0o600, 0, FileKind::Socket),
        ("chr", libc::S_IFCHR | 0o660, chr, FileKind::CharDev),
        ("blk", libc::S_IFBLK | 0o660, 0x801, FileKind::BlockDev),
        ("reg", 0o644, 0, FileKind::File),
    ];
    for (n, mode, rdev, kind) in cases {
        let st = fs.mknod_at(root, n, mode, rdev).unwrap();
        assert_eq!(
            (st.kind, st.perm, st.rdev),
            (kind, mode & 0o7777, rdev),
            "{n}"
        );
    }
    // A FIFO's device number is not kept.
    let st = fs
        .mknod_at(root, "fifo2", libc::S_IFIFO | 0o644, 77)
        .unwrap();
    assert_eq!(st.rdev, 0);
    assert_eq!(
        errno(fs.mknod_at(root, "d", libc::S_IFDIR | 0o755, 0)),
        "EPERM"
    );
    assert_eq!(
        errno(fs.mknod_at(root, "l", libc::S_IFLNK | 0o777, 0)),
        "EINVAL"
    );
    assert_eq!(errno(fs.mknod_at(root, "x", 0o170000, 0)), "EINVAL");
    assert_eq!(errno(fs.mknod_at(root, "fifo", libc::S_IFIFO, 0)), "EEXIST");
    assert_eq!(errno(fs.mknod_at(root, "..", libc::S_IFIFO, 0)), "EEXIST");
    let fifo = fs.lookup(root, "fifo").unwrap().ino;
    assert_eq!(
        errno(fs.open_ino(fifo, &OpenOptions::read_only())),
        "EOPNOTSUPP"
    );
    assert_eq!(
        errno(fs.open("/chr", &OpenOptions::read_only())),
        "EOPNOTSUPP"
    );
    // Special files are linked, renamed and removed like any file.
    fs.link_at(fifo, root, "fifo-link").unwrap();
    fs.rename_at(root, "sock", root, "sock2", RenameFlags::default())
        .unwrap();
    fs.unlink_at(root, "fifo2").unwrap();
    fs.mknod("/p", libc::S_IFIFO | 0o600, 0).unwrap();
    let fs = remount(&dev, fs);
    let kinds: BTreeMap<String, FileKind> = fs
        .readdir_ino(fs.root_ino(), 0, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|e| (e.name_lossy(), e.kind))
        .collect();
    assert_eq!(kinds["fifo-link"], FileKind::Fifo);
    assert_eq!(kinds["sock2"], FileKind::Socket);
    assert_eq!(kinds["p"], FileKind::Fifo);
    assert_eq!(fs.stat("/chr").unwrap().rdev, chr);
    assert_eq!(fs.stat("/blk").unwrap().kind, FileKind::BlockDev);
    assert_eq!(fs.stat("/fifo").unwrap().nlink, 2);
    drop(fs);
    assert_fsck(&*dev);
}

#[test]
fn creator_owns_what_it_makes_and_setgid_dirs_give_their_group() {
    let (dev, fs) = new_fs(8);
    let root = fs.root_ino();
    let (f, d, l) = Fs::as_creator(1000, 100, || {
        let f = mkfile(&fs, root, "f");
        let d = fs.mkdir_at(root, "d", 0o755).unwrap();
        let l = fs.symlink_at("f", root, "l").unwrap();
        (f, d, l)
    });
    assert_eq!(
        (fs.getattr(f).unwrap().uid, fs.getattr(f).unwrap().gid),
        (1000, 100)
    );
    assert_eq!((d.uid, d.gid, l.uid, l.gid), (1000, 100, 1000, 100));
    // Outside the closure, 0:0 again.
    let g = mkfile(&fs, root, "g");
    assert_eq!(fs.getattr(g).unwrap().uid, 0);
    // A set-group-ID directory gives its group, and its bit to directories.
    let sg = fs.mkdir_at(root, "sg", 0o2775).unwrap();
    fs.setattr(
        sg.ino,
        &SetAttr {
            gid: Some(50),
            ..Default::default()
        },
    )
    .unwrap();
    let (sf, sd) = Fs::as_creator(1000, 100, || {
        (
            mkfile(&fs, sg.ino, "f"),
            fs.mkdir_at(sg.ino, "d", 0o755).unwrap(),
        )
    });
    assert_eq!(fs.getattr(sf).unwrap().gid, 50);
    assert_eq!(fs.getattr(sf).unwrap().perm & 0o2000, 0);
    assert_eq!((sd.uid, sd.gid, sd.perm), (1000, 50, 0o2755));
    // Durable: the owners are in the committed records.
    let fs = remount(&dev, fs);
    assert_eq!(fs.getattr(sd.ino).unwrap().gid, 50);
    assert_eq!(fs.getattr(f).unwrap().uid, 1000);
}

#[test]
fn link_past_the_limit_is_emlink() {
    // 65,000 names take about 40 MiB of directory blocks.
    let (dev, fs) = new_fs(96);
    let root = fs.root_ino();
    let f = mkfile(&fs, root, "f");
    let max = daxfs::LINK_MAX;
    let dirs: Vec<u64> = (0..8)
        .map(|i| fs.mkdir_at(root, format!("d{i}"), 0o755).unwrap().ino)
        .collect();
    for i in 1..max {
        let d = dirs[i as usize % dirs.len()];
        fs.link_at(f, d, format!("{i}")).unwrap();
    }
    assert_eq!(fs.getattr(f).unwrap().nlink, max);
    assert_eq!(errno(fs.link_at(f, root, "one-more")), "EMLINK");
    assert_eq!(errno(fs.link("/f", "/one-more")), "EMLINK");
    assert_eq!(errno(fs.lookup(root, "one-more")), "ENOENT");
    // One name fewer, and a link fits again.
    fs.unlink_at(dirs[1], "1").unwrap();
    fs.link_at(f, root, "again").unwrap();
    assert_eq!(fs.getattr(f).unwrap().nlink, max);
    drop(fs);
    assert_fsck(&*dev);
}

/// Sets `next_ino` in both superblocks of the image of `dev` past its
/// limit, as a corrupt superblock may hold it: the next mount puts it right
/// from the largest inode number in use, so numbers freed above that one
/// are given again.
fn forge_next_ino(dev: &daxfs_device::MemDevice) -> std::sync::Arc<daxfs_device::MemDevice> {
    use zerocopy::{FromBytes, IntoBytes};
    let mut img = dev.image();
    let last = img.len() / 4096 - 1;
    for b in [0, last] {
        let blk: &mut [u8; 4096] = (&mut img[b * 4096..(b + 1) * 4096]).try_into().unwrap();
        let mut sb = daxfs_format::Superblock::read_from_bytes(&blk[..]).unwrap();
        sb.next_ino = u64::MAX.into();
        blk.copy_from_slice(sb.as_bytes());
        daxfs_format::fuzz::reseal(blk);
    }
    std::sync::Arc::new(daxfs_device::MemDevice::from_image(img))
}

#[test]
fn stale_handles_are_estale() {
    let (dev, fs) = new_fs(8);
    let root = fs.root_ino();
    let a = mkfile(&fs, root, "a");
    let ga = fs.getattr(a).unwrap().generation;
    assert_eq!(fs.getattr_gen(a, ga).unwrap().ino, a);
    assert_eq!(
        fs.open_ino_gen(a, ga, &OpenOptions::read_only())
            .unwrap()
            .ino(),
        a
    );
    assert_eq!(errno(fs.getattr_gen(a, ga + 1)), "ESTALE");
    assert_eq!(
        errno(fs.open_ino_gen(a, ga + 1, &OpenOptions::read_only())),
        "ESTALE"
    );
    assert_eq!(errno(fs.getattr_gen(999_999, ga)), "ESTALE");
    // Other errors stay what they are.
    assert_eq!(
        errno(fs.open_ino_gen(
            root,
            fs.getattr(root).unwrap().generation,
            &OpenOptions::write_only()
        )),
        "EISDIR"
    );
    // Open while it is removed: the handle still names a live inode.
    let h = fs.open_ino(a, &OpenOptions::read_write()).unwrap();
    fs.unlink_at(root, "a").unwrap();
    assert_eq!(fs.getattr_gen(a, ga).unwrap().nlink, 0);
    drop(h);
    assert_eq!(errno(fs.getattr_gen(a, ga)), "ESTALE");
    assert_eq!(
        errno(fs.open_ino_gen(a, ga, &OpenOptions::read_only())),
        "ESTALE"
    );
    assert_eq!(
        errno(fs.getattr(a)),
        "ENOENT",
        "the plain call is unchanged"
    );
    // The number is given again (next_ino put right at mount from the
    // largest number in use): the new inode has a new generation, and the
    // old handle stays stale, also across a remount.
    drop(fs);
    let dev2 = forge_next_ino(&dev);
    let fs = Fs::mount(dev2.clone(), &daxfs::MountOptions::default()).unwrap();
    let b = mkfile(&fs, root, "b");
    assert_eq!(b, a, "the freed number is reused");
    let gb = fs.getattr(b).unwrap().generation;
    assert_ne!(gb, ga);
    assert_eq!(errno(fs.getattr_gen(a, ga)), "ESTALE");
    assert_eq!(
        errno(fs.open_ino_gen(a, ga, &OpenOptions::read_only())),
        "ESTALE"
    );
    assert_eq!(fs.getattr_gen(b, gb).unwrap().ino, b);
    let fs = remount(&dev2, fs);
    assert_eq!(fs.getattr_gen(b, gb).unwrap().generation, gb);
    assert_eq!(errno(fs.getattr_gen(a, ga)), "ESTALE");
    drop(fs);
    assert_fsck(&*dev2);
}

#[test]
fn setattr_with_a_size_and_a_mode_is_one_change() {
    let (_dev, fs) = new_fs(8);
    let root = fs.root_ino();
    let f = mkfile(&fs, root, "f");
    let a = SetAttr {
        size: Some(10_000),
        mode: Some(0o600),
        mtime: Some(SetTime::At(1_000, 5)),
        ..Default::default()
    };
    let st = fs.setattr(f, &a).unwrap();
    // The given mtime wins over the truncate's own.
    assert_eq!((st.size, st.perm, st.mtime), (10_000, 0o600, (1_000, 5)));
    // A bad time fails before the size changes.
    let bad = SetAttr {
        size: Some(1),
        atime: Some(SetTime::At(0, 1_000_000_000)),
        ..Default::default()
    };
    assert_eq!(errno(fs.setattr(f, &bad)), "EINVAL");
    assert_eq!(fs.getattr(f).unwrap().size, 10_000);
}

/// Path calls' errnos, the cases of pjdfstest's rename, link, mknod,
/// unlink and rmdir tests written for daxfs: a component that is not a
/// directory, too long, missing or a symlink loop; existing names of every
/// type; moves into themselves; no EXDEV inside one file system.
#[test]
fn path_errnos_of_rename_link_mknod_unlink_rmdir() {
    let (dev, fs) = new_fs(8);
    fs.mkdir("/d", 0o755).unwrap();
    fs.mkdir("/d/sub", 0o755).unwrap();
    fs.mkdir("/e", 0o755).unwrap();
    drop(fs.create("/d/f").unwrap());
    fs.symlink("/loop2", "/loop1").unwrap();
    fs.symlink("/loop1", "/loop2").unwrap();
    fs.symlink("/nowhere", "/dangling").unwrap();
    fs.symlink("/d", "/dlink").unwrap();
    fs.mknod("/fifo", libc::S_IFIFO | 0o644, 0).unwrap();
    let long = format!("/{}", "x".repeat(256));
    let long_dir = format!("{long}/x");
    let fifo = libc::S_IFIFO | 0o644;
    for (bad, e) in [
        ("/d/f/x", "ENOTDIR"),
        ("/nope/x", "ENOENT"),
        ("/loop1/x", "ELOOP"),
        (long.as_str(), "ENAMETOOLONG"),
        (long_dir.as_str(), "ENAMETOOLONG"),
    ] {
        // As the source and as the target of each call.
        assert_eq!(errno(fs.rename(bad, "/y")), e, "rename from {bad}");
        assert_eq!(errno(fs.rename("/d/f", bad)), e, "rename to {bad}");
        assert_eq!(errno(fs.link(bad, "/y")), e, "link from {bad}");
        assert_eq!(errno(fs.link("/d/f", bad)), e, "link to {bad}");
        assert_eq!(errno(fs.mknod(bad, fifo, 0)), e, "mknod {bad}");
        assert_eq!(errno(fs.unlink(bad)), e, "unlink {bad}");
        assert_eq!(errno(fs.rmdir(bad)), e, "rmdir {bad}");
    }
    // Existing names of every type, a dangling symlink too.
    for p in ["/d/f", "/d", "/dangling", "/fifo", "/dlink"] {
        assert_eq!(errno(fs.mknod(p, fifo, 0)), "EEXIST", "mknod {p}");
        assert_eq!(errno(fs.link("/d/f", p)), "EEXIST", "link to {p}");
        assert_eq!(errno(fs.mkdir(p, 0o755)), "EEXIST", "mkdir {p}");
    }
    assert_eq!(errno(fs.link("/d", "/d2")), "EPERM");
    assert_eq!(errno(fs.link("/nope", "/y")), "ENOENT");
    // rename: kinds that do not match, a non-empty target, into itself.
    assert_eq!(errno(fs.rename("/d/f", "/e")), "EISDIR");
    assert_eq!(errno(fs.rename("/e", "/d/f")), "ENOTDIR");
    assert_eq!(errno(fs.rename("/e", "/d")), "ENOTEMPTY");
    assert_eq!(errno(fs.rename("/d", "/d/sub/x")), "EINVAL");
    assert_eq!(errno(fs.rename("/d", "/d/x")), "EINVAL");
    assert_eq!(errno(fs.rename("/d/sub", "/d/sub/x")), "EINVAL");
    assert_eq!(errno(fs.rename("/d/f/", "/y")), "ENOTDIR");
    assert_eq!(errno(fs.rename("/d/f", "/y/")), "ENOTDIR");
    // unlink and rmdir: the wrong kind, non-empty, `.` and `..`.
    assert_eq!(errno(fs.unlink("/d")), "EISDIR");
    assert_eq!(errno(fs.rmdir("/d/f")), "ENOTDIR");
    assert_eq!(errno(fs.rmdir("/dlink")), "ENOTDIR");
    assert_eq!(errno(fs.rmdir("/fifo")), "ENOTDIR");
    assert_eq!(errno(fs.rmdir("/d")), "ENOTEMPTY");
    assert_eq!(errno(fs.rmdir("/d/sub/.")), "EINVAL");
    assert_eq!(errno(fs.rmdir("/d/sub/..")), "ENOTEMPTY");
    // Nothing above changed anything.
    assert_eq!(fs.stat("/d/f").unwrap().nlink, 1);
    assert_eq!(fs.readdir("/").unwrap().len(), 7);
    // What succeeds: moves and links between directories (never EXDEV),
    // a symlink removed (not its target), a directory onto an empty one.
    fs.rename("/d/f", "/e/f").unwrap();
    fs.link("/e/f", "/d/f2").unwrap();
    assert_eq!(fs.stat("/d/f2").unwrap().nlink, 2);
    fs.unlink("/dlink").unwrap();
    assert!(fs.stat("/d").is_ok());
    fs.mkdir("/empty", 0o755).unwrap();
    fs.rename("/d/sub", "/empty").unwrap();
    assert_eq!(errno(fs.stat("/d/sub")), "ENOENT");
    fs.rename("/loop1", "/d/loop1").unwrap();
    assert_eq!(fs.readlink("/d/loop1").unwrap(), b"/loop2");
    drop(fs);
    assert_fsck(&*dev);
}
