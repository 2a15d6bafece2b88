//! libdaxfs: daxfs as a C library.
//!
//! Every function returns 0 (or a count) on success and a negative errno on
//! failure, as the kernel's system calls do inside; `daxfs_last_error`
//! gives the message of the calling thread's last failure. Handles are
//! opaque (`daxfs_fs *`, `daxfs_file *`). A panic never crosses into C: it
//! becomes -EIO with the panic's message as the last error.
//!
//! This file is the whole foreign-function boundary: the only `unsafe` is
//! the handling of the caller's pointers here (and the call of the caller's
//! media-error callback). The header `include/daxfs.h` is generated from it
//! by cbindgen; its comments come from the doc comments below.
#![allow(non_camel_case_types)]

use daxfs_core::{DedupeStatus, File, Fs, FsError, MkfsOptions, MountOptions, OwnerKind};
use daxfs_device::{Device, DeviceError, MmapDevice};
use libc::{c_char, c_int, c_void, ssize_t};
use std::cell::RefCell;
use std::ffi::{CStr, CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// `daxfs_mount` flag: the memory behind the image is persistent (flush CPU
/// caches instead of calling msync), as the command's `--assume-pmem`.
pub const DAXFS_MOUNT_ASSUME_PMEM: u32 = 1;
/// `daxfs_mount` flag: fill the page tables of the whole mapping at mount.
pub const DAXFS_MOUNT_POPULATE: u32 = 2;

/// `daxfs_mkfs_options.flags`: make a file system over an existing one.
pub const DAXFS_MKFS_FORCE: u32 = 1;
/// `daxfs_mkfs_options.flags`: no reverse map (no reflink, no media-error owners).
pub const DAXFS_MKFS_NO_RMAP: u32 = 2;
/// `daxfs_mkfs_options.flags`: no metadata replicas.
pub const DAXFS_MKFS_NO_REPLICAS: u32 = 4;
/// `daxfs_mkfs_options.flags`: as `DAXFS_MOUNT_ASSUME_PMEM`, for the mkfs.
pub const DAXFS_MKFS_ASSUME_PMEM: u32 = 8;

/// `daxfs_owner.kind`: file data or a file's own metadata (`ino`, `what` the fork).
pub const DAXFS_OWNER_FILE: u32 = 1;
/// `daxfs_owner.kind`: a file-system structure (`what` names it).
pub const DAXFS_OWNER_METADATA: u32 = 2;
/// `daxfs_owner.kind`: free space.
pub const DAXFS_OWNER_FREE: u32 = 3;
/// `daxfs_owner.kind`: known-bad memory no file owns, kept out of use.
pub const DAXFS_OWNER_QUARANTINED: u32 = 4;

/// `daxfs_owner.flags`: another file's data shares some of the range.
pub const DAXFS_OWNER_SHARED: u32 = 1;
/// `daxfs_owner.flags`: the range holds metadata.
pub const DAXFS_OWNER_IS_METADATA: u32 = 2;
/// `daxfs_owner.flags`: allocated but unwritten (reads as zeros).
pub const DAXFS_OWNER_UNWRITTEN: u32 = 4;
/// `daxfs_owner.flags`: the range holds known-bad memory.
pub const DAXFS_OWNER_BAD: u32 = 8;

/// `daxfs_dedupe_dest.status`: the ranges were equal and now share blocks
/// (FILE_DEDUPE_RANGE_SAME).
pub const DAXFS_DEDUPE_SAME: i32 = 0;
/// `daxfs_dedupe_dest.status`: the ranges differ, nothing changed
/// (FILE_DEDUPE_RANGE_DIFFERS).
pub const DAXFS_DEDUPE_DIFFERS: i32 = 1;

/// The most bytes one read or write moves (Linux's MAX_RW_COUNT): a larger
/// count gives a short read or write, as the kernel does.
const MAX_RW: usize = 0x7fff_f000;

/// A mounted file system.
pub struct daxfs_fs {
    fs: Fs,
}

/// An open file.
pub struct daxfs_file {
    file: File,
    callback: Arc<Mutex<Option<Callback>>>,
}

/// Options of `daxfs_mkfs`; a NULL pointer means all defaults.
#[repr(C)]
pub struct daxfs_mkfs_options {
    /// `DAXFS_MKFS_*` flags.
    pub flags: u32,
    /// Blocks of the metadata log; 0 picks one from the image size.
    pub log_blocks: u64,
    /// The label (at most 63 bytes), or NULL for none.
    pub label: *const c_char,
}

/// A file's attributes (64-bit fields first: no padding).
#[repr(C)]
pub struct daxfs_stat {
    pub ino: u64,
    pub size: u64,
    /// 512-byte units, as `st_blocks`.
    pub blocks: u64,
    /// Bytes of the file lost to media errors.
    pub lost_bytes: u64,
    pub atime_sec: i64,
    pub mtime_sec: i64,
    pub ctime_sec: i64,
    /// Creation time.
    pub btime_sec: i64,
    /// Type and permission bits, as `st_mode` (S_IFREG, S_IFDIR, S_IFLNK).
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub atime_nsec: u32,
    pub mtime_nsec: u32,
    pub ctime_nsec: u32,
    pub btime_nsec: u32,
}

/// One directory entry.
#[repr(C)]
pub struct daxfs_dirent {
    pub ino: u64,
    /// Pass the last entry's cookie to `daxfs_readdir` to go on after it.
    pub cookie: u64,
    /// DT_REG, DT_DIR, DT_LNK, DT_FIFO, DT_SOCK, DT_CHR or DT_BLK.
    pub type_: u32,
    /// Bytes of `name` before its terminating NUL.
    pub name_len: u32,
    pub name: [c_char; 256],
}

/// One owner of a device range, as `daxfs_fsmap` and `daxfs_owners` give it.
#[repr(C)]
pub struct daxfs_owner {
    /// Device byte offset and length.
    pub physical: u64,
    pub length: u64,
    /// File byte offset of `physical` (file data only).
    pub offset: u64,
    /// The owning file's inode number (`DAXFS_OWNER_FILE` only).
    pub ino: u64,
    /// `DAXFS_OWNER_*` kind.
    pub kind: u32,
    /// `DAXFS_OWNER_SHARED` and the other flags.
    pub flags: u32,
    /// For a file, its fork ("data", "extent tree", "directory"); for
    /// metadata, the structure ("inode table", "log", ...); NUL-terminated.
    pub what: [c_char; 32],
}

/// One destination of `daxfs_dedupe_range`.
#[repr(C)]
pub struct daxfs_dedupe_dest {
    /// In: the destination file (open for writing) and its offset.
    pub file: *mut daxfs_file,
    pub offset: u64,
    /// Out: `DAXFS_DEDUPE_SAME`, `DAXFS_DEDUPE_DIFFERS` or a negative errno.
    pub status: i32,
    /// Out: the bytes now shared.
    pub bytes_deduped: u64,
}

/// Called for each loss of a file's data to a media error: the file's inode
/// number, the file byte range lost, and whether a reader was waiting on it.
pub type daxfs_media_error_fn = Option<
    unsafe extern "C" fn(
        ctx: *mut c_void,
        ino: u64,
        offset: u64,
        length: u64,
        action_required: c_int,
    ),
>;

/// A registered C callback and its context.
#[derive(Clone, Copy)]
struct Callback {
    f: unsafe extern "C" fn(*mut c_void, u64, u64, u64, c_int),
    ctx: *mut c_void,
}

// SAFETY: `daxfs_on_media_error` documents that the callback is called from
// other threads than the one that registered it; the caller guarantees that
// the function and its context may be used from any thread.
unsafe impl Send for Callback {}
// SAFETY: as for `Send`: calls happen from any thread, one at a time per
// file (under the file's callback mutex).
unsafe impl Sync for Callback {}

/// An error to hand back: the errno and a message for `daxfs_last_error`.
struct Error {
    errno: i32,
    msg: String,
}

impl Error {
    fn new(errno: i32, msg: impl Into<String>) -> Error {
        Error {
            errno,
            msg: msg.into(),
        }
    }
}

impl From<FsError> for Error {
    fn from(e: FsError) -> Error {
        Error::new(e.errno(), e.to_string())
    }
}

/// A device error of opening or creating an image: the system's own errno
/// where there is one (ENOENT, EACCES, ...).
fn device_error(path: &Path, e: DeviceError) -> Error {
    let errno = match &e {
        DeviceError::Os { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
        DeviceError::Locked(_) => libc::EBUSY,
        DeviceError::InvalidSize { .. } => libc::EINVAL,
        DeviceError::Unsupported(_) => libc::EOPNOTSUPP,
        _ => libc::EIO,
    };
    Error::new(errno, format!("{}: {e}", path.display()))
}

type Res<T> = Result<T, Error>;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(msg: &str) {
    let c = CString::new(msg.replace('\0', "\\0")).unwrap_or_default();
    LAST_ERROR.with(|l| *l.borrow_mut() = c);
}

/// What a function returns: its value, or the negative errno.
trait Ret {
    fn err(errno: i32) -> Self;
}
impl Ret for c_int {
    fn err(errno: i32) -> Self {
        -errno
    }
}
impl Ret for isize {
    fn err(errno: i32) -> Self {
        -(errno as isize)
    }
}
impl Ret for i64 {
    fn err(errno: i32) -> Self {
        -i64::from(errno)
    }
}

/// Runs `f`: its error becomes the negative errno and the thread's last
/// error; a panic becomes -EIO.
fn run<T: Ret>(f: impl FnOnce() -> Res<T>) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            set_last_error(&e.msg);
            T::err(e.errno)
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown".into());
            set_last_error(&format!("internal error (a panic in daxfs): {what}"));
            T::err(libc::EIO)
        }
    }
}

fn fault(what: &str) -> Error {
    Error::new(libc::EFAULT, format!("{what} is NULL"))
}

/// A NUL-terminated string argument.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that lives for `'a`.
unsafe fn c_str<'a>(p: *const c_char, what: &str) -> Res<&'a [u8]> {
    if p.is_null() {
        return Err(fault(what));
    }
    // SAFETY: not NULL, and the caller guarantees a NUL-terminated string.
    Ok(unsafe { CStr::from_ptr(p) }.to_bytes())
}

/// The file system behind a handle.
///
/// # Safety
/// `p` is NULL or a handle from `daxfs_mount` not yet given to `daxfs_unmount`.
unsafe fn fs_of<'a>(p: *const daxfs_fs) -> Res<&'a Fs> {
    // SAFETY: NULL or a live handle, as the caller guarantees.
    match unsafe { p.as_ref() } {
        Some(h) => Ok(&h.fs),
        None => Err(Error::new(libc::EBADF, "the file-system handle is NULL")),
    }
}

/// The file behind a handle.
///
/// # Safety
/// `p` is NULL or a handle from `daxfs_open` not yet given to `daxfs_close`.
unsafe fn file_of<'a>(p: *const daxfs_file) -> Res<&'a daxfs_file> {
    // SAFETY: NULL or a live handle, as the caller guarantees.
    unsafe { p.as_ref() }.ok_or_else(|| Error::new(libc::EBADF, "the file handle is NULL"))
}

/// A buffer the caller gives to read from.
///
/// # Safety
/// With `n > 0`, `p` is NULL or points to `n` readable, initialized `T`s
/// that live for `'a`.
unsafe fn in_slice<'a, T>(p: *const T, n: usize, what: &str) -> Res<&'a [T]> {
    if n == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(fault(what));
    }
    // SAFETY: not NULL, `n` readable elements, as the caller guarantees.
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

/// A buffer of bytes the caller gives to fill: zeroed first, so that no
/// uninitialized memory is ever seen as a slice.
///
/// # Safety
/// With `n > 0`, `p` is NULL or points to `n` writable bytes that live for
/// `'a`, not used elsewhere meanwhile.
unsafe fn out_bytes<'a>(p: *mut u8, n: usize, what: &str) -> Res<&'a mut [u8]> {
    if n == 0 {
        return Ok(&mut []);
    }
    if p.is_null() {
        return Err(fault(what));
    }
    // SAFETY: `n` writable bytes, as the caller guarantees.
    unsafe { p.write_bytes(0, n) };
    // SAFETY: the same bytes, now initialized, used by nothing else.
    Ok(unsafe { std::slice::from_raw_parts_mut(p, n) })
}

/// Writes the `i`-th element of an array the caller gives to fill.
///
/// # Safety
/// `p` is NULL or points to at least `i + 1` writable `T`s.
unsafe fn put<T>(p: *mut T, i: usize, v: T, what: &str) -> Res<()> {
    if p.is_null() {
        return Err(fault(what));
    }
    // SAFETY: inside the caller's array of at least `i + 1` elements; `write`
    // does not read or drop what was there.
    unsafe { p.add(i).write(v) };
    Ok(())
}

fn path_of(bytes: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(bytes))
}

fn dev_opts(assume_pmem: bool, populate: bool) -> daxfs_device::OpenOptions {
    daxfs_device::OpenOptions::new()
        .assume_persistent(assume_pmem)
        .populate(populate)
}

fn check_flags(flags: u32, known: u32, what: &str) -> Res<()> {
    if flags & !known != 0 {
        return Err(Error::new(
            libc::EINVAL,
            format!("{what}: unknown flags {:#x}", flags & !known),
        ));
    }
    Ok(())
}

/// The message of the calling thread's last failed call ("" if none): valid
/// until this thread's next failing daxfs call.
#[unsafe(no_mangle)]
pub extern "C" fn daxfs_last_error() -> *const c_char {
    LAST_ERROR.with(|l| l.borrow().as_ptr())
}

/// Makes a new file system on the image file (or device-DAX device) `image`.
/// With `size` > 0 a missing image file is created of that many bytes, and
/// an existing one of another size is resized only with DAXFS_MKFS_FORCE
/// (-EEXIST otherwise); with `size` 0 the image must exist. `opts` may be
/// NULL. An existing file system is replaced only with DAXFS_MKFS_FORCE.
///
/// # Safety
/// `image` is a NUL-terminated string; `opts` is NULL or points to an
/// initialized `daxfs_mkfs_options` whose `label` is NULL or a NUL-terminated
/// string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn daxfs_mkfs(
    image: *const c_char,
    size: u64,
    opts: *const daxfs_mkfs_options,
) -> c_int {
    run(|| {
        // SAFETY: the caller passes a NUL-terminated string.
        let path = path_of(unsafe { c_str(image, "image") }?);
        // SAFETY: NULL or an initialized options struct, as the caller guarantees.
        let o = unsafe { opts.as_ref() };
        let flags = o.map_or(0, |o| o.flags);
        check_flags(
            flags,
            DAXFS_MKFS_FORCE | DAXFS_MKFS_NO_RMAP | DAXFS_MKFS_NO_REPLICAS | DAXFS_MKFS_ASSUME_PMEM,
            "mkfs",
        )?;
        let label = match o.map(|o| o.label) {
            // SAFETY: NULL or a NUL-terminated string, as the caller guarantees.
            Some(l) if !l.is_null() => unsafe { c_str(l, "label") }?,
            _ => b"",
        };
        let label = std::str::from_utf8(label)
            .map_err(|_| Error::new(libc::EINVAL, "the label is not UTF-8"))?
            .to_string();
        let force = flags & DAXFS_MKFS_FORCE != 0;
        let dopts = dev_opts(flags & DAXFS_MKFS_ASSUME_PMEM != 0, false);
        let exists = path.exists();
        let dev: Arc<dyn Device> = if size > 0 && !exists {
            Arc::new(MmapDevice::create(path, size, dopts).map_err(|e| device_error(path, e))?)
        } else {
            if size > 0 {
                let meta = std::fs::metadata(path).map_err(|e| {
                    device_error(
                        path,
                        DeviceError::Os {
                            what: "reading its size".into(),
                            source: e,
                        },
                    )
                })?;
                if meta.is_file() && meta.len() != size {
                    if !force {
                        return Err(Error::new(
                            libc::EEXIST,
                            format!(
                                "{} exists with {} bytes, not {size}: give DAXFS_MKFS_FORCE to resize it",
                                path.display(),
                                meta.len()
                            ),
                        ));
                    }
                    daxfs_device::create_image_file(path, size)
                        .map_err(|e| device_error(path, e))?;
                }
            }
            Arc::new(MmapDevice::open(path, dopts).map_err(|e| device_error(path, e))?)
        };
        let made = Fs::mkfs(
            dev,
            &MkfsOptions {
                force,
                log_blocks: o.map(|o| o.log_blocks).filter(|&b| b != 0),
                label,
                no_rmap: flags & DAXFS_MKFS_NO_RMAP != 0,
                no_replicas: flags & DAXFS_MKFS_NO_REPLICAS != 0,
                uuid: None,
            },
        );
        if made.is_err() && !exists {
            // Do not leave behind an image file this call created.
            let _ = std::fs::remove_file(path);
        }
        made?;
        Ok(0)
    })
}

/// Mounts the file system on `image` and stores its handle in `*out`.
/// `flags`: DAXFS_MOUNT_ASSUME_PMEM, DAXFS_MOUNT_POPULATE. An image another
/// daxfs instance has open gives -EBUSY.
///
/// # Safety
/// `image` is a NUL-terminated string; `out` points to a writable pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn daxfs_mount(
    image: *const c_char,
    flags: u32,
    out: *mut *mut daxfs_fs,
) -> c_int {
    run(|| {
        // SAFETY: the caller passes a NUL-terminated string.
        let path = path_of(unsafe { c_str(image, "image") }?);
        if out.is_null() {
            return Err(fault("out"));
        }
        check_flags(
            flags,
            DAXFS_MOUNT_ASSUME_PMEM | DAXFS_MOUNT_POPULATE,
            "mount",
        )?;
        let opts = dev_opts(
            flags & DAXFS_MOUNT_ASSUME_PMEM != 0,
            flags & DAXFS_MOUNT_POPULATE != 0,
        );
        let dev: Arc<dyn Device> =
            Arc::new(MmapDevice::open(path, opts).map_err(|e| device_error(path, e))?);
        let fs = Fs::mount(dev, &MountOptions::default())?;
        let h = Box::into_raw(Box::new(daxfs_fs { fs }));
        // SAFETY: `out` is not NULL and writable, as the caller guarantees.
        unsafe { put(out, 0, h, "out") }?;
        Ok(0)
    })
}

/// Unmounts: makes every change durable and frees the handle, whatever the
/// result. -EBUSY: files are still open (they stay usable, and the file
/// system stays mounted until the last is closed); -EIO: the changes could
/// not be made durable.
///
/// # Safety
/// `fs` is NULL or a handle from `daxfs_mount`, not used again after this call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn daxfs_unmount(fs: *mut daxfs_fs) -> c_int {
    run(|| {
        if fs.is_null() {
            return Err(Error::new(libc::EBADF, "the file-system handle is NULL"));
        }
        // SAFETY: a handle `daxfs_mount` made with Box::into_raw, given back once.
        let h = unsafe { Box::from_raw(fs) };
        h.fs.unmount()?;
        Ok(0)
    })
}

/// Makes every change of the file system durable.
///
/// # Safety
/// `fs` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn daxfs_sync(fs: *const daxfs_fs) -> c_int {
    run(|| {
        // SAFETY: NULL or a live handle.
        unsafe { fs_of(fs) }?.sync()?;
        Ok(0)
    })
}

/// Opens the file at `path` (absolute, from the file system's root) and
/// stores its handle in `*out`. `flags`: O_RDONLY, O_WRONLY or O_RDWR, with
/// O_CREAT, O_EXCL, O_TRUNC, O_APPEND (and O_CLOEXEC, ignored); `mode` gives
/// the permission bits of a created file.
///
/// # Safety
/// `fs` is NULL or a live handle; `path` a NUL-terminated string; `out`
/// points to a writable pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn daxfs_open(
    fs: *const daxfs_fs,
    path: *const c_char,
    flags: c_int,
    mode: u32,
    out: *mut *mut daxfs_file,
) -> c_int {
    run(|| {
        // SAFETY: NULL or a live handle.
        let fs = unsafe { fs_of(fs) }?;
        // SAFETY: a NUL-terminated string.
        let path = unsafe { c_str(path, "path") }?;
        if out.is_null() {
            return Err(fault("out"));
        }
        let known = libc::O_ACCMODE
            | libc::O_CREAT
            | libc::O_EXCL
            | libc::O_TRUNC
            | libc::O_APPEND
            | libc::O_CLOEXEC;
        if flags & !known != 0 {
            return Err(Error::new(
                libc::EINVAL,
                format!(
                    "open flags {:#o}: only O_RDONLY, O_WRONLY, O_RDWR, O_CREAT, O_EXCL, O_TRUNC, O_APPEND and O_CLOEXEC are supported",
                    flags & !known
                ),
            ));
        }
        let (read, write) = match flags & libc::O_ACCMODE {
            libc::O_RDONLY => (true, false),
            libc::O_WRONLY => (false, true),
            libc::O_RDWR => (true, true),
            _ => {
                return Err(Error::new(
                    libc::EINVAL,
                    "open flags: the access mode is not O_RDONLY, O_WRONLY or O_RDWR",
                ));
            }
        };
        let file = fs.open(
            path,
            &daxfs_core::OpenOptions {
                read,
                write,
                create: flags & libc::O_CREAT != 0,
                excl: flags & libc::O_EXCL != 0,
                truncate: flags & libc::O_TRUNC != 0,
                append: flags & libc::O_APPEND != 0,
                mode: mode & 0o7777,
            },
        )?;
        let callback: Arc<Mutex<Option<Callback>>> = Arc::default();
        let slot = callback.clone();
        file.on_media_error(move |n| {
            let guard = slot.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(cb) = *guard {
                // SAFETY: the function and context the caller registered,
                // valid until replaced or the file is closed: both take this
                // mutex, so neither happens during the call.
                unsafe {
                    (cb.f)(
                        cb.ctx,
                        n.ino,
                        n.offset,
                        n.length,
                        c_int::from(n.action_required),
                    )
                };
            }
        });
        let h = Box::into_raw(Box::new(daxfs_file { file, callback }));
        // SAFETY: `out` is not NULL and writable, as the caller guarantees.
        unsafe { put(out, 0, h, "out") }?;
        Ok(0)
    })
}

/// Closes a file: frees the handle. After it returns, the file's media-error
/// callback is not called again.
///
/// # Safety
/// `file` is NULL or a handle from `daxfs_open`, not used again after this call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn daxfs_close(file: *mut daxfs_file) -> c_int {
    run(|| {
        if file.is_null() {
            return Err(Error::new(libc::EBADF, "the file handle is NULL"));
        }
        // SAFETY: a handle `daxfs_open` made with Box::into_raw, given back once.
        let h = unsafe { Box::from_raw(file) };
        // Waits for a call in progress; none starts after this.
        *h.callback.lock().unwrap_or_else(|p| p.into_inner()) = None;
        drop(h);
        Ok(0)
    })
}

/// Reads up to `count` bytes at `offset` into `buf`; returns the bytes read
/// (0 at or past the end of the file). A range lost to a media error gives
/// -EIO.
///
/// # Safety
/// `file` is NULL or a live handle; `buf` points to `count` writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn daxfs_pread(
    file: *const daxfs_file,
    buf: *mut c_void,
    count: usize,
    offset: u64,
) -> ssize_t {
    run(|| {
        // SAFETY: NULL or a live handle.
        let f = unsafe { file_of(file) }?;
        // SAFETY: `count` writable bytes (fewer are used past MAX_RW).
        let buf = unsafe { out_bytes(buf.cast(), count.min(MAX_RW), "buf") }?;
        let n = f.file.read_at(offset, buf)?;
        Ok(n as ssize_t)
    })
}

/// Writes `count` bytes of `buf` at `offset` (at the end of the file for a
/// file opened with O_APPEND); returns the bytes written.
///
/// # Safety
/// `file` is NULL or a live handle; `buf` points to `count` readable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn daxfs_pwrite(
    file: *const daxfs_file,
    buf: *const c_void,
    count: usize,
    offset: u64,
) -> ssize_t {
    run(|| {
        // SAFETY: NULL or a live handle.
        let f = unsafe { file_of(file) }?;
        // SAFETY: `count` readable bytes (fewer are used past MAX_RW).
        let data = unsafe { in_slice::<u8>(buf.cast(), count.min(MAX_RW), "buf") }?;
        let n = f.file.write_at(offset, data)?;
        Ok(n as ssize_t)
    })
}

/// Makes the file's data and attributes durable.
///
/// # Safety
/// `file` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn daxfs_fsync(file: *const daxfs_file) -> c_int {
    run(|| {
        // SAFETY: NULL or a live handle.
        unsafe { file_of(file) }?.file.fsync()?;
        Ok(0)
    })
}

/// Sets the size of an open file (opened for writing).
///
/// # Safety
/// `file` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn daxfs_ftruncate(file: *const daxfs_file, length: u64) -> c_int {
    run(|| {
        // SAFETY: NULL or a live handle.
        unsafe { file_of(file) }?.file.set_len(length)?;
        Ok(0)
    })
}

fn to_c_stat(s: &daxfs_core::Stat) -> daxfs_stat {
    let kind = s.kind.mode_bits();
    daxfs_stat {
        ino: s.ino,
        mode: kind | s.perm,
        nlink: s.nlink,
        uid: s.uid,
        gid: s.gid,
        size: s.size,
        blocks: s.blocks,
        atime_sec: s.atime.0,
        atime_nsec: s.atime.1,
        mtime_sec: s.mtime.0,
        mtime_nsec: s.mtime.1,
        ctime_sec: s.ctime.0,
        ctime_nsec: s.ctime.1,
        btime_sec: s.btime.0,
        btime_nsec: s.btime.1,
        lost_bytes: s.lost_bytes,
    }
}

/// The attributes of an open file.
///
/// # Safety
/// `file` is NULL or a live handle; `st` points to a writable `daxfs_stat`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn daxfs_fstat(file: *const daxfs_file, st: *mut daxfs_stat) -> c_int {
    run(|| {
        // SAFETY: NULL or a live handle.
        let s = unsafe { file_of(file) }?.file.stat();
        // SAFETY: a writable daxfs_stat, as the caller guarantees.
        unsafe { put(st, 0, to_c_stat(&s), "st") }?;
        Ok(0)
    })
}

/// The attributes of the file at `path`, following a final symbolic link.
///
/// # Safety
/// `fs` is NULL or a live handle; `path` a NUL-terminated string; `st`
/// points to a writable `daxfs_stat`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn daxfs_stat(
    fs: *const daxfs_fs,
    path: *const c_char,
    st: *mut daxfs_stat,
) -> c_int {
    run(|| {
        // SAFETY: NULL or a live handle; a NUL-terminated string.
        let s = unsafe { fs_of(fs)?.stat(c_str(path, "path")?) }?;
        // SAFETY: a writable daxfs_stat, as the caller guarantees.
        unsafe { put(st, 0, to_c_stat(&s), "st") }?;
        Ok(0)
    })
}

/// As `daxfs_stat`, without following a final symbolic link.
///
/// # Safety
/// As `daxfs_stat`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn daxfs_lstat(
    fs: *const daxfs_fs,
    path: *const c_char,
    st: *mut daxfs_stat,
) -> c_int {
    run(|| {
        // SAFETY: NULL or a live handle; a NUL-terminated string.
        let s = unsafe { fs_of(fs)?.lstat(c_str(path, "path")?) }?;
        // SAFETY: a writable daxfs_stat, as the caller guarantees.
        unsafe { put(st, 0, to_c_stat(&s), "st") }?;
        Ok(0)
    })
}

/// Lists the directory at `path`: fills up to `max` entries after the one
/// whose cookie is `after` (0: from the start) and returns how many
/// (0: no more). "." and ".." are not listed.
///
/// # Safety
/// `fs` is NULL or a live handle; `path` a NUL-terminated string; `ents`
/// points to `max` writable `daxfs_dirent`s.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn daxfs_readdir(
    fs: *const daxfs_fs,
    path: *const c_char,
    after: u64,
    ents: *mut daxfs_dirent,
    max: usize,
) -> ssize_t {
    run(|| {
        // SAFETY: NULL or a live handle; a NUL-terminated string.
        let (fs, path) = unsafe { (fs_of(fs)?, c_str(path, "path")?) };
        if max == 0 {
            return Ok(0);
        }
        let list = fs.readdir_from(path, after, max.min(isize::MAX as usize))?;
        for (i, e) in list.iter().enumerate() {
            let mut name = [0 as c_char; 256];
            let n = e.name.len().min(255);
            for (d, &s) in name.iter_mut().zip(&e.name[..n]) {
                *d = s as c_char;
            }
            let d = daxfs_dirent {
                ino: e.ino,
                cookie: e.cookie,
                type_: u32::from(e.kind.dtype()),
                name_len: n as u32,
                name,
            };
            // SAFETY: `i < max`, inside the caller's array.
            unsafe { put(ents, i, d, "ents") }?;
        }
        Ok(list.len() as ssize_t)
    })
}

/// Runs a namespace call on one path.
///
/// # Safety
/// `fs` is NULL or a live handle; `path` a NUL-terminated string.
unsafe fn on_path(
    fs: *const daxfs_fs,
    path: *const c_char,
    f: impl FnOnce(&Fs, &[u8]) -> daxfs_core::Result<()>,
) -> c_int {
    run(|| {
        // SAFETY: NULL or a live handle; a NUL-terminated string.
        let (fs, path) = unsafe { (fs_of(fs)?, c_str(path, "path")?) };
        f(fs, path)?;
        Ok(0)
    })
}

/// Runs a namespace call on two paths.
///
/// # Safety
/// `fs` is NULL or a live handle; `a` and `b` NUL-terminated strings.
unsafe fn on_paths(
    fs: *const daxfs_fs,
    a: *const c_char,
    b: *const c_char,
    f: impl FnOnce(&Fs, &[u8], &[u8]) -> daxfs_core::Result<()>,
) -> c_int {
    run(|| {
        // SAFETY: NULL or a live handle; NUL-terminated strings.
        let (fs, a, b) = unsafe { (fs_of(fs)?, c_str(a, "path")?, c_str(b, "path")?) };
        f(fs, a, b)?;
        Ok(0)
    })
}

/// Creates a directory.
///
/// # Safety
/// `fs` is NULL or a live handle; `path` a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn daxfs_mkdir(fs: *const daxfs_fs, path: *const c_char, mode: u32) -> c_int {
    // SAFETY: as this function's own contract.
    unsafe { on_path(fs, path, |fs, p| fs.mkdir(p, mode & 0o7777)) }
}

/// Removes an empty directory.
///
/// # Safety
/// `fs` is NULL or a live handle; `path` a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn daxfs_rmdir(fs: *const daxfs_fs, path: *const c_char) -> c_int {
    // SAFETY: as this function's own contract.
    unsafe { on_path(fs, path, |fs, p| fs.rmdir(p)) }
}

/// Removes a name of a file (not a directory).
///
/// # Safety
/// `fs` is NULL or a live handle; `path` a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn daxfs_unlink(fs: *const daxfs_fs, path: *const c_char) -> c_int {
    // SAFETY: as this function's own contract.
    unsafe { on_path(fs, path, |fs, p| fs.unlink(p)) }
}

/// Renames `from` to `to`, replacing `to` as rename(2) does.
///
/// # Safety
/// `fs` is NULL or a live handle; `from` and `to` NUL-terminated strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn daxfs_rename(
    fs: *const daxfs_fs,
    from: *const c_char,
    to: *const c_char,
) -> c_int {
    // SAFETY: as this function's own contract.
    unsafe { on_paths(fs, from, to, |fs, a, b| fs.rename(a, b)) }
}

/// Makes `newpath` another name of the file `existing`.
///
/// # Safety
/// `fs` is NULL or a live handle; `existing` and `newpath` NUL-terminated strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn daxfs_link(
    fs: *const daxfs_fs,
    existing: *const c_char,
    newpath: *const c_char,
) -> c_int {
    // SAFETY: as this function's own contract.
    unsafe { on_paths(fs, existing, newpath, |fs, a, b| fs.link(a, b)) }
}

/// Creates a symbolic link at `path` pointing at `target`.
///
/// # Safety
/// `fs` is NULL or a live handle; `target` and `path` NUL-terminated strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn daxfs_symlink(
    fs: *const daxfs_fs,
    target: *const c_char,
    path: *const c_char,
) -> c_int {
    // SAFETY: as this function's own contract.
    unsafe { on_paths(fs, target, path, |fs, t, p| fs.symlink(t, p)) }
}

/// Reads a symbolic link's target into `buf`, as readlink(2): no NUL is
/// added, a longer target is cut to `size` bytes; returns the bytes placed.
///
/// # Safety
/// `fs` is NULL or a live handle; `path` a NUL-terminated string; `buf`
/// points to `size` writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn daxfs_readlink(
    fs: *const daxfs_fs,
    path: *const c_char,
    buf: *mut c_char,
    size: usize,
) -> ssize_t {
    run(|| {
        // SAFETY: NULL or a live handle; a NUL-terminated string.
        let (fs, path) = unsafe { (fs_of(fs)?, c_str(path, "path")?) };
        if size == 0 {
            return Err(Error::new(libc::EINVAL, "readlink: the buffer size is 0"));
        }
        let t = fs.readlink(path)?;
        let n = t.len().min(size);
        // SAFETY: `size` writable bytes, as the caller guarantees.
        let out = unsafe { out_bytes(buf.cast(), n, "buf") }?;
        out.copy_from_slice(&t[..n]);
        Ok(n as ssize_t)
    })
}

/// Changes the permission bits of the file at `path`.
///
/// # Safety
/// `fs` is NULL or a live handle; `path` a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn daxfs_chmod(fs: *const daxfs_fs, path: *const c_char, mode: u32) -> c_int {
    // SAFETY: as this function's own contract.
    unsafe { on_path(fs, path, |fs, p| fs.chmod(p, mode)) }
}

/// Sets the size of the file at `path`.
///
/// # Safety
/// `fs` is NULL or a live handle; `path` a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn daxfs_truncate(
    fs: *const daxfs_fs,
    path: *const c_char,
    length: u64,
) -> c_int {
    // SAFETY: as this function's own contract.
    unsafe { on_path(fs, path, |fs, p| fs.truncate(p, length)) }
}

/// A pair of live, distinct-or-equal file handles.
///
/// # Safety
/// `dst` and `src` are NULL or live handles.
unsafe fn two_files<'a>(
    dst: *const daxfs_file,
    src: *const daxfs_file,
) -> Res<(&'a File, &'a File)> {
    // SAFETY: NULL or live handles.
    unsafe { Ok((&file_of(dst)?.file, &file_of(src)?.file)) }
}

fn count(n: u64) -> Res<i64> {
    i64::try_from(n).map_err(|_| Error::new(libc::EOVERFLOW, "the byte count passes INT64_MAX"))
}

/// Clones `length` bytes of `src` at `src_offset` into `dst` at
/// `dst_offset` (FICLONERANGE; `length` 0: to the end of `src`): the two
/// share the blocks until either is written. Offsets and length must be
/// 4096-aligned, except a range ending at the source's end of file.
/// Returns the bytes cloned.
///
/// # Safety
/// `dst` and `src` are NULL or live handles.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn daxfs_clone_range(
    dst: *const daxfs_file,
    src: *const daxfs_file,
    src_offset: u64,
    dst_offset: u64,
    length: u64,
) -> i64 {
    run(|| {
        // SAFETY: NULL or live handles.
        let (d, s) = unsafe { two_files(dst, src) }?;
        count(d.clone_range(s, src_offset, dst_offset, length)?)
    })
}

/// Makes `dst` a clone of all of `src` (FICLONE). Returns the bytes cloned.
///
/// # Safety
/// `dst` and `src` are NULL or live handles.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn daxfs_clone(dst: *const daxfs_file, src: *const daxfs_file) -> i64 {
    run(|| {
        // SAFETY: NULL or live handles.
        let (d, s) = unsafe { two_files(dst, src) }?;
        count(d.clone_from(s)?)
    })
}

/// Copies `length` bytes of `src` at `src_offset` into `dst` at
/// `dst_offset` (copy_file_range): whole blocks at matching alignment are
/// shared, the rest copied. Returns the bytes copied (fewer at the source's
/// end of file).
///
/// # Safety
/// `dst` and `src` are NULL or live handles.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn daxfs_copy_range(
    dst: *const daxfs_file,
    src: *const daxfs_file,
    src_offset: u64,
    dst_offset: u64,
    length: u64,
) -> i64 {
    run(|| {
        // SAFETY: NULL or live handles.
        let (d, s) = unsafe { two_files(dst, src) }?;
        count(d.copy_range(s, src_offset, dst_offset, length)?)
    })
}

/// Dedupes `length` bytes of `src` at `src_offset` against each of the
/// `count` destinations (FIDEDUPERANGE): where the bytes are equal the
/// destination shares the source's blocks. Each destination's `status` and
/// `bytes_deduped` are filled in; an error of the source fails the call.
///
/// # Safety
/// `src` is NULL or a live handle; `dests` points to `count` initialized
/// `daxfs_dedupe_dest`s whose `file` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn daxfs_dedupe_range(
    src: *const daxfs_file,
    src_offset: u64,
    length: u64,
    dests: *mut daxfs_dedupe_dest,
    count: usize,
) -> c_int {
    run(|| {
        // SAFETY: NULL or a live handle.
        let s = &unsafe { file_of(src) }?.file;
        // SAFETY: `count` initialized elements, as the caller guarantees.
        let list = unsafe { in_slice(dests, count, "dests") }?;
        let mut files = Vec::with_capacity(count);
        for d in list {
            // SAFETY: each `file` is NULL or a live handle.
            files.push((&unsafe { file_of(d.file) }?.file, d.offset));
        }
        let results = s.dedupe_range(src_offset, length, &files)?;
        for (i, r) in results.iter().enumerate() {
            let out = daxfs_dedupe_dest {
                file: list[i].file,
                offset: list[i].offset,
                status: match r.status {
                    DedupeStatus::Same => DAXFS_DEDUPE_SAME,
                    DedupeStatus::Differs => DAXFS_DEDUPE_DIFFERS,
                    DedupeStatus::Error(e) => -e,
                },
                bytes_deduped: r.bytes_deduped,
            };
            // SAFETY: `i < count`, inside the caller's array.
            unsafe { put(dests, i, out, "dests") }?;
        }
        Ok(0)
    })
}

/// Copies `s` into a fixed NUL-terminated field, cut if needed.
fn fixed<const N: usize>(s: &str) -> [c_char; N] {
    let mut out = [0 as c_char; N];
    for (d, &b) in out.iter_mut().zip(s.as_bytes().iter().take(N - 1)) {
        *d = b as c_char;
    }
    out
}

fn to_c_owner(r: &daxfs_core::OwnerRecord) -> daxfs_owner {
    let (kind, ino, what) = match &r.owner {
        OwnerKind::File { ino, fork, .. } => (DAXFS_OWNER_FILE, *ino, *fork),
        OwnerKind::Metadata(name) => (DAXFS_OWNER_METADATA, 0, *name),
        OwnerKind::Free => (DAXFS_OWNER_FREE, 0, "free"),
        OwnerKind::Quarantined => (DAXFS_OWNER_QUARANTINED, 0, "quarantined"),
    };
    let flags = [
        (r.shared, DAXFS_OWNER_SHARED),
        (r.metadata, DAXFS_OWNER_IS_METADATA),
        (r.unwritten, DAXFS_OWNER_UNWRITTEN),
        (r.bad, DAXFS_OWNER_BAD),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .fold(0, |a, (_, f)| a | f);
    daxfs_owner {
        physical: r.physical,
        length: r.length,
        offset: r.offset,
        ino,
        kind,
        flags,
        what: fixed(what),
    }
}

/// Fills `out` with up to `max` records and returns how many there are in
/// all (more than `max`: call again with a larger array).
///
/// # Safety
/// `out` points to `max` writable `daxfs_owner`s (may be NULL when `max` is 0).
unsafe fn fill_owners(
    recs: &[daxfs_core::OwnerRecord],
    out: *mut daxfs_owner,
    max: usize,
) -> Res<ssize_t> {
    for (i, r) in recs.iter().take(max).enumerate() {
        // SAFETY: `i < max`, inside the caller's array.
        unsafe { put(out, i, to_c_owner(r), "out") }?;
    }
    Ok(recs.len() as ssize_t)
}

/// The fsmap of device blocks `[block, block + blocks)` (4096-byte blocks):
/// every owner record and every free extent, in device order. Fills up to
/// `max` records and returns how many there are in all.
///
/// # Safety
/// `fs` is NULL or a live handle; `out` points to `max` writable
/// `daxfs_owner`s (may be NULL when `max` is 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn daxfs_fsmap(
    fs: *const daxfs_fs,
    block: u64,
    blocks: u64,
    out: *mut daxfs_owner,
    max: usize,
) -> ssize_t {
    run(|| {
        // SAFETY: NULL or a live handle.
        let recs = unsafe { fs_of(fs) }?.fsmap(block, blocks)?;
        // SAFETY: `max` writable records, as the caller guarantees.
        unsafe { fill_owners(&recs, out, max) }
    })
}

/// Every owner of device blocks `[block, block + blocks)` (without free
/// extents), files named by inode. Fills up to `max` records and returns
/// how many there are in all.
///
/// # Safety
/// As `daxfs_fsmap`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn daxfs_owners(
    fs: *const daxfs_fs,
    block: u64,
    blocks: u64,
    out: *mut daxfs_owner,
    max: usize,
) -> ssize_t {
    run(|| {
        // SAFETY: NULL or a live handle.
        let recs = unsafe { fs_of(fs) }?.owners_by_inode(block, blocks)?;
        // SAFETY: `max` writable records, as the caller guarantees.
        unsafe { fill_owners(&recs, out, max) }
    })
}

/// Injects a media error at device bytes `[offset, offset + length)` (the
/// emulation's stand-in for a hardware report; the 4 KiB pages touched go
/// bad) and handles it as a report: files lose the data there (their
/// callbacks are called before this returns), free space is quarantined,
/// metadata repaired from its replica. Returns the number of owners handled.
///
/// # Safety
/// `fs` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn daxfs_inject_error(
    fs: *const daxfs_fs,
    offset: u64,
    length: u64,
) -> ssize_t {
    run(|| {
        // SAFETY: NULL or a live handle.
        let ev = unsafe { fs_of(fs) }?.inject_error(offset, length)?;
        Ok(ev.len() as ssize_t)
    })
}

/// Marks device bytes `[offset, offset + length)` good again (4096-aligned)
/// after the device's error was cleared: they leave the bad-block list and,
/// where no file owns them, return to free space (files keep their recorded
/// losses). Returns the bytes that were bad and are now good.
///
/// # Safety
/// `fs` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn daxfs_clear_error(fs: *const daxfs_fs, offset: u64, length: u64) -> i64 {
    run(|| {
        // SAFETY: NULL or a live handle.
        count(unsafe { fs_of(fs) }?.clear_bad_range(offset, length)?)
    })
}

/// Registers `cb` (NULL: none) to be called with `ctx` for each loss of this
/// file's data to a media error. It is called from the thread that handles
/// the report: the caller of `daxfs_inject_error`, or for an error a read
/// runs into, the reading thread or a daxfs worker thread ("daxfs-media").
/// Calls for one file come one at a time; the callback must return quickly
/// and must not call daxfs functions. After `daxfs_close` or another
/// registration returns, the old callback is not called again.
///
/// # Safety
/// `file` is NULL or a live handle; `cb` and `ctx` stay usable, from any
/// thread, until replaced or the file is closed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn daxfs_on_media_error(
    file: *const daxfs_file,
    cb: daxfs_media_error_fn,
    ctx: *mut c_void,
) -> c_int {
    run(|| {
        // SAFETY: NULL or a live handle.
        let f = unsafe { file_of(file) }?;
        *f.callback.lock().unwrap_or_else(|p| p.into_inner()) = cb.map(|f| Callback { f, ctx });
        Ok(0)
    })
}

#[cfg(test)]
mod api_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_eio_with_its_message() {
        let rc: c_int = run(|| -> Res<c_int> { panic!("boom in a test") });
        assert_eq!(rc, -libc::EIO);
        // SAFETY: the library's own NUL-terminated string of this thread.
        let msg = unsafe { CStr::from_ptr(daxfs_last_error()) };
        assert!(msg.to_string_lossy().contains("boom in a test"), "{msg:?}");
    }

    #[test]
    fn the_message_of_an_error_is_kept_without_its_nul_bytes() {
        let rc: isize = run(|| -> Res<isize> { Err(Error::new(libc::ENOENT, "a\0b")) });
        assert_eq!(rc, -(libc::ENOENT as isize));
        // SAFETY: the library's own NUL-terminated string of this thread.
        let msg = unsafe { CStr::from_ptr(daxfs_last_error()) };
        assert_eq!(msg.to_str().unwrap(), "a\\0b");
    }
}
