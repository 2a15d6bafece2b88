//! Each FUSE operation through the kernel, by system call on the mount, and
//! its errors; what reached daxfs is checked after the unmount.
mod common;
use common::*;
use daxfs::OpenOptions;
use daxfs_mount::MountConfig;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};

fn cfg() -> MountConfig {
    MountConfig::default()
}

#[test]
fn files_dirs_links_and_their_errors() {
    need_fuse!();
    let mut g = mount_new("names", 16, cfg());
    let a = g.path("a");
    fs::write(&a, b"hello").unwrap();
    assert_eq!(fs::read(&a).unwrap(), b"hello");
    assert_eq!(fs::metadata(&a).unwrap().len(), 5);
    // O_EXCL on an existing name.
    let e = fs::OpenOptions::new().write(true).create_new(true).open(&a);
    assert_eq!(errno(e), libc::EEXIST);
    // O_TRUNC and O_APPEND.
    let mut f = fs::OpenOptions::new().append(true).open(&a).unwrap();
    f.write_all(b" world").unwrap();
    drop(f);
    assert_eq!(fs::read(&a).unwrap(), b"hello world");
    fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&a)
        .unwrap();
    assert_eq!(fs::metadata(&a).unwrap().len(), 0);
    // Directories.
    fs::create_dir(g.path("d")).unwrap();
    assert_eq!(errno(fs::create_dir(g.path("d"))), libc::EEXIST);
    fs::write(g.path("d/x"), b"x").unwrap();
    assert_eq!(errno(fs::remove_dir(g.path("d"))), libc::ENOTEMPTY);
    assert_eq!(errno(fs::read(g.path("nope"))), libc::ENOENT);
    assert_eq!(errno(fs::read(g.path("a/b"))), libc::ENOTDIR);
    let mut names: Vec<_> = fs::read_dir(&g.mp)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["a", "d"]);
    // Symlinks and hard links.
    std::os::unix::fs::symlink("d/x", g.path("s")).unwrap();
    assert_eq!(fs::read_link(g.path("s")).unwrap().to_str(), Some("d/x"));
    assert_eq!(fs::read(g.path("s")).unwrap(), b"x");
    fs::hard_link(g.path("d/x"), g.path("h")).unwrap();
    assert_eq!(fs::metadata(g.path("h")).unwrap().nlink(), 2);
    assert_eq!(errno(fs::hard_link(g.path("d"), g.path("dl"))), libc::EPERM);
    // Rename, with its flags.
    fs::rename(g.path("h"), g.path("h2")).unwrap();
    let noreplace = rustix::fs::renameat_with(
        rustix::fs::CWD,
        g.path("h2"),
        rustix::fs::CWD,
        g.path("a"),
        rustix::fs::RenameFlags::NOREPLACE,
    );
    assert_eq!(noreplace.unwrap_err().raw_os_error(), libc::EEXIST);
    rustix::fs::renameat_with(
        rustix::fs::CWD,
        g.path("h2"),
        rustix::fs::CWD,
        g.path("a"),
        rustix::fs::RenameFlags::EXCHANGE,
    )
    .unwrap();
    assert_eq!(fs::read(g.path("a")).unwrap(), b"x");
    assert_eq!(fs::metadata(g.path("h2")).unwrap().len(), 0);
    // mknod of a FIFO; chmod, chown, utimes, truncate.
    rustix::fs::mknodat(
        rustix::fs::CWD,
        g.path("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    assert!(
        fs::symlink_metadata(g.path("fifo"))
            .unwrap()
            .file_type()
            .is_fifo_like()
    );
    fs::set_permissions(g.path("a"), fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(g.path("a"), Some(1234), Some(99)).unwrap();
    let t = std::time::UNIX_EPOCH + std::time::Duration::new(1_000_000, 5);
    fs::File::options()
        .write(true)
        .open(g.path("a"))
        .unwrap()
        .set_modified(t)
        .unwrap();
    let m = fs::metadata(g.path("a")).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o640, 1234, 99));
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_000_000, 5));
    fs::File::options()
        .write(true)
        .open(g.path("a"))
        .unwrap()
        .set_len(10000)
        .unwrap();
    assert_eq!(fs::metadata(g.path("a")).unwrap().len(), 10000);
    // Unlinked while open: still readable and statable through its fd.
    fs::write(g.path("d/y"), b"").unwrap();
    let mut f = fs::File::options()
        .read(true)
        .write(true)
        .open(g.path("d/y"))
        .unwrap();
    fs::remove_file(g.path("d/y")).unwrap();
    fs::remove_file(g.path("d/x")).unwrap();
    fs::remove_file(g.path("s")).unwrap();
    f.write_all(b"yz").unwrap();
    assert_eq!(f.metadata().unwrap().len(), 2);
    let mut s = String::new();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.read_to_string(&mut s).unwrap();
    assert_eq!(s, "yz");
    drop(f);
    fs::remove_dir(g.path("d")).unwrap();
    // statfs.
    let st = rustix::fs::statvfs(&g.mp).unwrap();
    assert_eq!(st.f_bsize, 4096);
    assert!(st.f_blocks > 0 && st.f_bfree <= st.f_blocks);
    // xattrs.
    rustix::fs::setxattr(g.path("a"), "user.k", b"v1", rustix::fs::XattrFlags::CREATE).unwrap();
    let e = rustix::fs::setxattr(g.path("a"), "user.k", b"v", rustix::fs::XattrFlags::CREATE);
    assert_eq!(e.unwrap_err().raw_os_error(), libc::EEXIST);
    let mut buf = [0u8; 16];
    let n = rustix::fs::getxattr(g.path("a"), "user.k", &mut buf).unwrap();
    assert_eq!(&buf[..n], b"v1");
    let e = rustix::fs::getxattr(g.path("a"), "user.none", &mut buf);
    assert_eq!(e.unwrap_err().raw_os_error(), libc::ENODATA);
    let e = rustix::fs::getxattr(g.path("a"), "user.k", &mut [0u8; 1][..]);
    assert_eq!(e.unwrap_err().raw_os_error(), libc::ERANGE);
    let mut names = [0u8; 64];
    let n = rustix::fs::listxattr(g.path("a"), &mut names).unwrap();
    assert_eq!(&names[..n], b"user.k\0");
    // What reached daxfs.
    let fs = g.unmount();
    let st = fs.stat("/a").unwrap();
    assert_eq!((st.size, st.uid, st.perm), (10000, 1234, 0o640));
    assert_eq!(fs.getxattr("/a", b"user.k").unwrap(), b"v1");
    assert!(fs.stat("/d").is_err());
    let mut n = Vec::new();
    for e in fs.readdir("/").unwrap() {
        n.push(e.name_lossy());
    }
    n.sort();
    assert_eq!(n, ["a", "fifo", "h2"]);
    fs.unmount().unwrap();
}

trait FifoLike {
    fn is_fifo_like(&self) -> bool;
}
impl FifoLike for fs::FileType {
    fn is_fifo_like(&self) -> bool {
        use std::os::unix::fs::FileTypeExt;
        self.is_fifo()
    }
}

#[test]
fn mmap_shared_stores_reach_daxfs_at_msync() {
    need_fuse!();
    let mut g = mount_new("mmap", 16, cfg());
    let p = g.path("m");
    let f = fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    f.set_len(3 * 4096).unwrap();
    // SAFETY: a fresh shared mapping of a file of that size, unmapped below
    // before the file is closed; nothing else maps it.
    let ptr = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            3 * 4096,
            rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
            rustix::mm::MapFlags::SHARED,
            &f,
            0,
        )
        .unwrap()
    };
    // SAFETY: the mapping is 3 pages long and writable.
    let mem = unsafe { std::slice::from_raw_parts_mut(ptr.cast::<u8>(), 3 * 4096) };
    mem[0] = b'A';
    mem[4096 + 7] = b'B';
    mem[3 * 4096 - 1] = b'C';
    // SAFETY: the range is the mapping made above.
    unsafe { rustix::mm::msync(ptr, 3 * 4096, rustix::mm::MsyncFlags::SYNC).unwrap() };
    // SAFETY: unmapped once, no reference to it is used after.
    unsafe { rustix::mm::munmap(ptr, 3 * 4096).unwrap() };
    drop(f);
    let fs = g.unmount();
    let file = fs.open("/m", &OpenOptions::read_only()).unwrap();
    let mut b = vec![0u8; 3 * 4096];
    assert_eq!(file.read_at(0, &mut b).unwrap(), 3 * 4096);
    assert_eq!(
        (b[0], b[4096 + 7], b[3 * 4096 - 1], b[1]),
        (b'A', b'B', b'C', 0)
    );
    drop(file);
    fs.unmount().unwrap();
}

#[test]
fn copy_file_range_shares_blocks() {
    need_fuse!();
    let mut g = mount_new("copy", 32, cfg());
    let data: Vec<u8> = (0..256 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(g.path("src"), &data).unwrap();
    let src = fs::File::open(g.path("src")).unwrap();
    let dst = fs::File::create(g.path("dst")).unwrap();
    let mut done = 0usize;
    while done < data.len() {
        let n = rustix::fs::copy_file_range(&src, None, &dst, None, data.len() - done).unwrap();
        assert!(n > 0);
        done += n;
    }
    drop((src, dst));
    assert_eq!(fs::read(g.path("dst")).unwrap(), data);
    let fs = g.unmount();
    let d = fs.open("/dst", &OpenOptions::read_only()).unwrap();
    let ext = d.fiemap().unwrap();
    assert!(!ext.is_empty() && ext.iter().all(|e| e.shared), "{ext:?}");
    drop(d);
    fs.unmount().unwrap();
}

#[test]
fn seek_data_hole_and_fallocate_modes() {
    need_fuse!();
    let g = mount_new("seek", 16, cfg());
    let f = fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(g.path("sparse"))
        .unwrap();
    f.write_all_at(&[1u8; 4096], 0).unwrap();
    f.write_all_at(&[2u8; 4096], 64 * 1024).unwrap();
    use rustix::fs::SeekFrom as S;
    assert_eq!(rustix::fs::seek(&f, S::Hole(0)).unwrap(), 4096);
    assert_eq!(rustix::fs::seek(&f, S::Data(4096)).unwrap(), 64 * 1024);
    assert_eq!(rustix::fs::seek(&f, S::Hole(64 * 1024)).unwrap(), 68 * 1024);
    let e = rustix::fs::seek(&f, S::Data(68 * 1024)).unwrap_err();
    assert_eq!(e.raw_os_error(), libc::ENXIO);
    // Keep-size preallocation leaves the size.
    rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::KEEP_SIZE, 68 * 1024, 8192).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 68 * 1024);
    // Punch a hole: zeros, and a hole to SEEK_HOLE.
    rustix::fs::fallocate(
        &f,
        rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
        64 * 1024,
        4096,
    )
    .unwrap();
    let mut b = [9u8; 4096];
    f.read_exact_at(&mut b, 64 * 1024).unwrap();
    assert!(b.iter().all(|&x| x == 0));
    assert_eq!(rustix::fs::seek(&f, S::Hole(0)).unwrap(), 4096);
    let e = rustix::fs::seek(&f, S::Data(4096)).unwrap_err();
    assert_eq!(e.raw_os_error(), libc::ENXIO);
    // Zero range grows the file.
    rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::ZERO_RANGE, 0, 100 * 1024).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 100 * 1024);
    f.read_exact_at(&mut b, 0).unwrap();
    assert!(b.iter().all(|&x| x == 0));
    // Punch without keep-size is refused, as Linux does.
    let e = rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::PUNCH_HOLE, 0, 4096);
    assert_eq!(e.unwrap_err().raw_os_error(), libc::EOPNOTSUPP);
}

#[test]
fn a_media_error_fails_the_read_with_eio() {
    need_fuse!();
    let dev: std::sync::Arc<dyn daxfs_device::Device> =
        std::sync::Arc::new(daxfs_device::MemDevice::new(16 << 20));
    daxfs::Fs::mkfs(dev.clone(), &daxfs::MkfsOptions::default()).unwrap();
    let off = {
        let fs = daxfs::Fs::mount(dev.clone(), &daxfs::MountOptions::default()).unwrap();
        let f = fs.create("/bad").unwrap();
        f.write_at(0, &[7u8; 8192]).unwrap();
        let phys = f.fiemap().unwrap()[0].physical;
        drop(f);
        fs.unmount().unwrap();
        phys
    };
    dev.inject_error(off + 4096, 4096).unwrap();
    let g = mount_dev("media", dev, cfg());
    let f = fs::File::open(g.path("bad")).unwrap();
    let mut b = [0u8; 4096];
    f.read_exact_at(&mut b, 0).unwrap();
    assert_eq!(b, [7u8; 4096]);
    assert_eq!(errno(f.read_exact_at(&mut b, 4096)), libc::EIO);
}

#[test]
fn permissions_are_checked_against_the_caller() {
    need_fuse!();
    if !std::path::Path::new("/usr/bin/setpriv").exists() {
        eprintln!("SKIPPED: setpriv is missing");
        return;
    }
    // Other users reach a FUSE mount only with allow_other.
    let g = mount_new(
        "perm",
        16,
        MountConfig {
            allow_other: true,
            ..cfg()
        },
    );
    fs::write(g.path("secret"), b"s").unwrap();
    fs::set_permissions(g.path("secret"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::create_dir(g.path("pub")).unwrap();
    fs::set_permissions(g.path("pub"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::set_permissions(&g.mp, fs::Permissions::from_mode(0o755)).unwrap();
    let as_user = |script: &str| {
        std::process::Command::new("setpriv")
            .args([
                "--reuid=1000",
                "--regid=1000",
                "--clear-groups",
                "sh",
                "-c",
                script,
            ])
            .current_dir(&g.mp)
            .output()
            .unwrap()
    };
    // Not readable by another user.
    let o = as_user("cat secret");
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("Permission denied"));
    // Not writable in the root (0755, root's).
    assert!(!as_user("touch newfile").status.success());
    // A file made in the sticky directory is the caller's.
    assert!(as_user("echo hi > pub/mine").status.success());
    let m = fs::metadata(g.path("pub/mine")).unwrap();
    assert_eq!((m.uid(), m.gid()), (1000, 1000));
    // Another user's file in a sticky directory cannot be removed.
    fs::write(g.path("pub/roots"), b"r").unwrap();
    let o = as_user("rm -f pub/roots");
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not permitted"));
    // chown to someone else is root's.
    assert!(!as_user("chown 0 pub/mine").status.success());
}

/// What pjdfstest found: a cached name skipped its directory's search
/// check, a non-owner's chown to the same owner passed, a non-owner's
/// write kept set-user-ID, and a non-member's new file in a set-group-ID
/// directory kept set-group-ID.
#[test]
fn posix_rules_for_other_users() {
    need_fuse!();
    // The caller's programs must be reachable by the other user.
    let python = "/usr/bin/python3";
    if !std::path::Path::new("/usr/bin/setpriv").exists() || !std::path::Path::new(python).exists()
    {
        eprintln!("SKIPPED: setpriv or {python} is missing");
        return;
    }
    let g = mount_new(
        "posix",
        16,
        MountConfig {
            allow_other: true,
            ..cfg()
        },
    );
    fs::set_permissions(&g.mp, fs::Permissions::from_mode(0o755)).unwrap();
    let as_user = |py: &str| {
        std::process::Command::new("setpriv")
            .args([
                "--reuid=1000",
                "--regid=1000",
                "--clear-groups",
                python,
                "-c",
                &format!("import os\nos.umask(0)\n{py}"),
            ])
            .current_dir(&g.mp)
            .output()
            .unwrap()
    };
    // Search permission, with the name cached by the first open.
    fs::create_dir(g.path("d")).unwrap();
    fs::write(g.path("d/f"), b"x").unwrap();
    let o = as_user("open('d/f').read()");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    fs::set_permissions(g.path("d"), fs::Permissions::from_mode(0o644)).unwrap();
    let o = as_user("open('d/f').read()");
    assert!(!o.status.success(), "no search permission on d");
    assert!(String::from_utf8_lossy(&o.stderr).contains("PermissionError"));
    // chown by a non-owner, even to the owner it has.
    fs::write(g.path("theirs"), b"t").unwrap();
    std::os::unix::fs::chown(g.path("theirs"), Some(1001), Some(1001)).unwrap();
    let o = as_user("os.chown('theirs', 1001, -1)");
    assert!(String::from_utf8_lossy(&o.stderr).contains("PermissionError"));
    let o = as_user("os.chown('theirs', -1, 1001)");
    assert!(String::from_utf8_lossy(&o.stderr).contains("PermissionError"));
    // A write by a non-owner drops set-user-ID and set-group-ID.
    fs::write(g.path("suid"), b"s").unwrap();
    fs::set_permissions(g.path("suid"), fs::Permissions::from_mode(0o6777)).unwrap();
    let o = as_user("f = open('suid', 'r+')\nf.write('w')\nf.close()");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(fs::metadata(g.path("suid")).unwrap().mode() & 0o7777, 0o777);
    // A truncate by a non-owner does too.
    fs::set_permissions(g.path("suid"), fs::Permissions::from_mode(0o4777)).unwrap();
    assert!(as_user("os.truncate('suid', 0)").status.success());
    assert_eq!(fs::metadata(g.path("suid")).unwrap().mode() & 0o7777, 0o777);
    // A new file in a set-group-ID directory of a group the caller is not
    // in: the directory's group, without set-group-ID.
    fs::create_dir(g.path("sg")).unwrap();
    std::os::unix::fs::chown(g.path("sg"), None, Some(1001)).unwrap();
    fs::set_permissions(g.path("sg"), fs::Permissions::from_mode(0o2777)).unwrap();
    let o = as_user("os.close(os.open('sg/n', os.O_CREAT | os.O_WRONLY, 0o2775))");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m = fs::metadata(g.path("sg/n")).unwrap();
    assert_eq!((m.gid(), m.mode() & 0o7777), (1001, 0o775));
    let o = as_user("os.mkdir('sg/sub', 0o755)");
    assert!(o.status.success());
    let m = fs::metadata(g.path("sg/sub")).unwrap();
    assert_eq!((m.gid(), m.mode() & 0o7777), (1001, 0o2755));
}
