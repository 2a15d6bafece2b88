//! The C API called from Rust as C would: errors are negative errnos with a
//! message naming the problem, NULL pointers are refused, handles behave.
use crate::{
    DAXFS_DEDUPE_DIFFERS, DAXFS_DEDUPE_SAME, daxfs_clone_range, daxfs_close, daxfs_dedupe_dest,
    daxfs_dedupe_range, daxfs_dirent, daxfs_file, daxfs_fs, daxfs_fstat, daxfs_last_error,
    daxfs_mkdir, daxfs_mkfs, daxfs_mount, daxfs_on_media_error, daxfs_open, daxfs_pread,
    daxfs_pwrite, daxfs_readdir, daxfs_readlink, daxfs_rename, daxfs_stat, daxfs_symlink,
    daxfs_unlink, daxfs_unmount,
};
use libc::{c_int, c_void};
use std::ffi::{CStr, CString};
use std::ptr::{null, null_mut};

fn c(s: &str) -> CString {
    CString::new(s).unwrap()
}

fn last_error() -> String {
    // SAFETY: the library returns a NUL-terminated string of this thread.
    unsafe { CStr::from_ptr(daxfs_last_error()) }
        .to_string_lossy()
        .into_owned()
}

struct Image {
    dir: std::path::PathBuf,
    path: CString,
}

impl Image {
    fn new(name: &str) -> Image {
        let dir =
            std::env::temp_dir().join(format!("daxfs-capi-api-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = c(dir.join("img").to_str().unwrap());
        Image { dir, path }
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn mounted(name: &str) -> (Image, *mut daxfs_fs) {
    let img = Image::new(name);
    let mut fs = null_mut();
    // SAFETY: valid strings and out-pointer; NULL options.
    unsafe {
        assert_eq!(
            daxfs_mkfs(img.path.as_ptr(), 16 << 20, null()),
            0,
            "{}",
            last_error()
        );
        assert_eq!(
            daxfs_mount(img.path.as_ptr(), 0, &mut fs),
            0,
            "{}",
            last_error()
        );
    }
    (img, fs)
}

fn open(fs: *mut daxfs_fs, path: &str, flags: c_int) -> *mut daxfs_file {
    let mut f = null_mut();
    let p = c(path);
    // SAFETY: a live handle, a valid string and out-pointer.
    let rc = unsafe { daxfs_open(fs, p.as_ptr(), flags, 0o644, &mut f) };
    assert_eq!(rc, 0, "open {path}: {}", last_error());
    f
}

#[test]
fn errors_are_negative_errnos_naming_the_problem() {
    let (img, fs) = mounted("errors");
    let mut f = null_mut();
    // SAFETY: every pointer is valid or deliberately NULL.
    unsafe {
        let missing = c("/missing");
        assert_eq!(
            daxfs_open(fs, missing.as_ptr(), libc::O_RDONLY, 0, &mut f),
            -libc::ENOENT
        );
        assert!(last_error().contains("/missing"), "{}", last_error());
        assert_eq!(
            daxfs_open(null(), missing.as_ptr(), libc::O_RDONLY, 0, &mut f),
            -libc::EBADF
        );
        assert_eq!(
            daxfs_open(fs, null(), libc::O_RDONLY, 0, &mut f),
            -libc::EFAULT
        );
        assert!(last_error().contains("path"), "{}", last_error());
        assert_eq!(
            daxfs_open(
                fs,
                missing.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECT,
                0,
                &mut f
            ),
            -libc::EINVAL
        );
        assert!(last_error().contains("open flags"), "{}", last_error());
        assert_eq!(
            daxfs_open(fs, missing.as_ptr(), 3, 0, &mut f),
            -libc::EINVAL
        );
        let file = open(fs, "/f", libc::O_RDWR | libc::O_CREAT | libc::O_EXCL);
        let again = c("/f");
        assert_eq!(
            daxfs_open(
                fs,
                again.as_ptr(),
                libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
                0,
                &mut f
            ),
            -libc::EEXIST
        );
        assert_eq!(daxfs_pwrite(file, null(), 10, 0), -libc::EFAULT as isize);
        assert_eq!(
            daxfs_pread(null(), null_mut(), 10, 0),
            -libc::EBADF as isize
        );
        assert_eq!(daxfs_mkdir(fs, again.as_ptr(), 0o755), -libc::EEXIST);
        let dir = c("/d");
        assert_eq!(daxfs_mkdir(fs, dir.as_ptr(), 0o755), 0);
        assert_eq!(daxfs_unlink(fs, dir.as_ptr()), -libc::EISDIR);
        assert_eq!(daxfs_close(file), 0);
        assert_eq!(daxfs_close(null_mut()), -libc::EBADF);
        assert_eq!(daxfs_unmount(fs), 0);

        // Mounting: a missing image is ENOENT, unknown flags EINVAL, an image
        // already mounted EBUSY.
        let nowhere = c(img.dir.join("none").to_str().unwrap());
        let mut fs2 = null_mut();
        assert_eq!(daxfs_mount(nowhere.as_ptr(), 0, &mut fs2), -libc::ENOENT);
        assert!(last_error().contains("none"), "{}", last_error());
        assert_eq!(
            daxfs_mount(img.path.as_ptr(), 0x100, &mut fs2),
            -libc::EINVAL
        );
        assert_eq!(
            daxfs_mount(img.path.as_ptr(), 0, &mut fs2),
            0,
            "{}",
            last_error()
        );
        let mut fs3 = null_mut();
        assert_eq!(daxfs_mount(img.path.as_ptr(), 0, &mut fs3), -libc::EBUSY);
        // An image of another size is not resized without FORCE.
        assert_eq!(daxfs_unmount(fs2), 0);
        assert_eq!(
            daxfs_mkfs(img.path.as_ptr(), 32 << 20, null()),
            -libc::EEXIST
        );
        assert!(
            last_error().contains("DAXFS_MKFS_FORCE"),
            "{}",
            last_error()
        );
    }
}

#[test]
fn unmount_with_open_files_is_busy_and_the_files_stay_usable() {
    let (_img, fs) = mounted("busy");
    let f = open(fs, "/f", libc::O_RDWR | libc::O_CREAT);
    // SAFETY: live handles; the buffers are valid.
    unsafe {
        assert_eq!(daxfs_unmount(fs), -libc::EBUSY);
        assert_eq!(daxfs_pwrite(f, b"hello".as_ptr().cast(), 5, 0), 5);
        let mut buf = [0u8; 8];
        assert_eq!(daxfs_pread(f, buf.as_mut_ptr().cast(), 8, 0), 5);
        assert_eq!(&buf[..5], b"hello");
        assert_eq!(daxfs_close(f), 0);
    }
}

#[test]
fn readdir_pages_with_cookies_and_namespace_calls_work() {
    let (_img, fs) = mounted("readdir");
    // SAFETY: a live handle; valid strings and buffers.
    unsafe {
        let d = c("/d");
        assert_eq!(daxfs_mkdir(fs, d.as_ptr(), 0o755), 0);
        let mut names = std::collections::BTreeSet::new();
        for i in 0..7 {
            let p = format!("/d/file{i}");
            daxfs_close(open(fs, &p, libc::O_WRONLY | libc::O_CREAT));
            names.insert(format!("file{i}"));
        }
        let (from, to) = (c("/d/file0"), c("/d/renamed"));
        assert_eq!(daxfs_rename(fs, from.as_ptr(), to.as_ptr()), 0);
        names.remove("file0");
        names.insert("renamed".into());
        let (target, link) = (c("/d/file1"), c("/d/link"));
        assert_eq!(daxfs_symlink(fs, target.as_ptr(), link.as_ptr()), 0);
        names.insert("link".into());
        let mut buf = [0 as libc::c_char; 4];
        // Cut to the buffer, no NUL, as readlink(2).
        assert_eq!(daxfs_readlink(fs, link.as_ptr(), buf.as_mut_ptr(), 4), 4);
        assert_eq!(buf.map(|b| b as u8), *b"/d/f");

        // Three at a time, each call after the last cookie.
        let mut seen = std::collections::BTreeSet::new();
        let mut after = 0;
        let mut ents: Vec<daxfs_dirent> = Vec::with_capacity(3);
        loop {
            let n = daxfs_readdir(fs, d.as_ptr(), after, ents.as_mut_ptr(), 3);
            assert!((0..=3).contains(&n), "readdir gave {n}: {}", last_error());
            if n == 0 {
                break;
            }
            ents.set_len(n as usize);
            for e in &ents {
                let name = CStr::from_ptr(e.name.as_ptr())
                    .to_str()
                    .unwrap()
                    .to_string();
                assert_eq!(name.len(), e.name_len as usize);
                let want = if name == "link" {
                    libc::DT_LNK
                } else {
                    libc::DT_REG
                };
                assert_eq!(e.type_, u32::from(want), "{name}");
                assert!(seen.insert(name), "listed twice");
            }
            after = ents.last().unwrap().cookie;
            ents.set_len(0);
        }
        assert_eq!(seen, names);
        let mut st = std::mem::zeroed();
        assert_eq!(daxfs_stat(fs, to.as_ptr(), &mut st), 0);
        assert_eq!(st.mode, libc::S_IFREG | 0o644);
        assert_eq!(daxfs_stat(fs, d.as_ptr(), &mut st), 0);
        assert_eq!(st.mode & libc::S_IFMT, libc::S_IFDIR);
        assert_eq!(
            daxfs_readdir(fs, to.as_ptr(), 0, ents.as_mut_ptr(), 3),
            -libc::ENOTDIR as isize
        );
        assert_eq!(daxfs_unmount(fs), 0);
    }
}

#[test]
fn clone_and_dedupe_share_blocks() {
    let (_img, fs) = mounted("dedupe");
    let data: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8).collect();
    let a = open(fs, "/a", libc::O_RDWR | libc::O_CREAT);
    let b = open(fs, "/b", libc::O_RDWR | libc::O_CREAT);
    let other = open(fs, "/other", libc::O_RDWR | libc::O_CREAT);
    // SAFETY: live handles; valid buffers and array.
    unsafe {
        for f in [a, b] {
            assert_eq!(daxfs_pwrite(f, data.as_ptr().cast(), data.len(), 0), 8192);
        }
        let mut diff = data.clone();
        diff[100] ^= 1;
        assert_eq!(
            daxfs_pwrite(other, diff.as_ptr().cast(), diff.len(), 0),
            8192
        );
        let mut dests = [
            daxfs_dedupe_dest {
                file: b,
                offset: 0,
                status: -1,
                bytes_deduped: 0,
            },
            daxfs_dedupe_dest {
                file: other,
                offset: 0,
                status: -1,
                bytes_deduped: 0,
            },
        ];
        assert_eq!(
            daxfs_dedupe_range(a, 0, 8192, dests.as_mut_ptr(), 2),
            0,
            "{}",
            last_error()
        );
        assert_eq!(
            (dests[0].status, dests[0].bytes_deduped),
            (DAXFS_DEDUPE_SAME, 8192)
        );
        assert_eq!(
            (dests[1].status, dests[1].bytes_deduped),
            (DAXFS_DEDUPE_DIFFERS, 0)
        );
        // A clone of a misaligned range is EINVAL, as FICLONERANGE.
        assert_eq!(
            daxfs_clone_range(other, a, 1, 0, 4096),
            -i64::from(libc::EINVAL)
        );
        assert_eq!(daxfs_clone_range(other, a, 0, 0, 8192), 8192);
        let mut st = std::mem::zeroed();
        assert_eq!(daxfs_fstat(other, &mut st), 0);
        assert_eq!(st.size, 8192);
        let mut back = vec![0u8; 8192];
        assert_eq!(daxfs_pread(other, back.as_mut_ptr().cast(), 8192, 0), 8192);
        assert_eq!(back, data);
        for f in [a, b, other] {
            daxfs_close(f);
        }
        assert_eq!(daxfs_unmount(fs), 0);
    }
}

unsafe extern "C" fn count_calls(ctx: *mut c_void, _ino: u64, _off: u64, _len: u64, _ar: c_int) {
    // SAFETY: the test passes a pointer to an AtomicUsize that outlives the file.
    let n = unsafe { &*(ctx as *const std::sync::atomic::AtomicUsize) };
    n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

#[test]
fn media_error_callback_is_not_called_after_it_is_removed() {
    let (_img, fs) = mounted("callback");
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let ctx = &calls as *const _ as *mut c_void;
    let a = open(fs, "/a", libc::O_RDWR | libc::O_CREAT);
    // SAFETY: live handles; `calls` outlives the file.
    unsafe {
        let data = vec![7u8; 16384];
        assert_eq!(daxfs_pwrite(a, data.as_ptr().cast(), data.len(), 0), 16384);
        let mut owners: Vec<crate::daxfs_owner> = (0..256).map(|_| std::mem::zeroed()).collect();
        let mut st = std::mem::zeroed();
        assert_eq!(daxfs_fstat(a, &mut st), 0);
        let n = crate::daxfs_owners(fs, 0, 4096, owners.as_mut_ptr(), owners.len());
        assert!(n > 0 && n <= 256, "{n}");
        let rec = owners[..n as usize]
            .iter()
            .find(|o| o.kind == crate::DAXFS_OWNER_FILE && o.ino == st.ino && o.offset == 0)
            .expect("the file's data in the owners");
        assert_eq!(daxfs_on_media_error(a, Some(count_calls), ctx), 0);
        assert_eq!(crate::daxfs_inject_error(fs, rec.physical, 4096), 1);
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(daxfs_on_media_error(a, None, null_mut()), 0);
        assert_eq!(crate::daxfs_inject_error(fs, rec.physical + 4096, 4096), 1);
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        let mut st2 = std::mem::zeroed();
        assert_eq!(daxfs_fstat(a, &mut st2), 0);
        assert_eq!(st2.lost_bytes, 8192);
        // The range must be inside the device.
        assert_eq!(
            crate::daxfs_inject_error(fs, 1 << 40, 4096),
            -(libc::EINVAL as isize)
        );
        daxfs_close(a);
        assert_eq!(daxfs_unmount(fs), 0);
    }
}
