//! Request counters: how many FUSE requests of each kind the daemon served,
//! the time it spent in them, and the bytes read and written, so a
//! benchmark can say where a workload's time goes.
//!
//! [`Counted`] wraps the daemon's `Filesystem` and forwards every call
//! unchanged, timing it from the call to its return (the daemon replies
//! before it returns, so this is the daemon's whole share of the request;
//! the rest of a request's life is the kernel's and the caller's).
use fuser::{
    AccessFlags, CopyFileRangeFlags, FileHandle, Filesystem, INodeNo, IoctlFlags, KernelConfig,
    LockOwner, OpenFlags, PollEvents, PollFlags, PollNotifier, RenameFlags, ReplyAttr, ReplyBmap,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl,
    ReplyLock, ReplyLseek, ReplyOpen, ReplyPoll, ReplyStatfs, ReplyWrite, ReplyXattr, Request,
    TimeOrNow, WriteFlags,
};
use std::ffi::OsStr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

/// The request kinds counted, in the order [`RequestStats::snapshot`] lists
/// them.
pub const KINDS: [&str; 39] = [
    "lookup",
    "forget",
    "getattr",
    "setattr",
    "readlink",
    "mknod",
    "mkdir",
    "unlink",
    "rmdir",
    "symlink",
    "rename",
    "link",
    "open",
    "read",
    "write",
    "flush",
    "release",
    "fsync",
    "opendir",
    "readdir",
    "readdirplus",
    "releasedir",
    "fsyncdir",
    "statfs",
    "setxattr",
    "getxattr",
    "listxattr",
    "removexattr",
    "access",
    "create",
    "getlk",
    "setlk",
    "bmap",
    "ioctl",
    "poll",
    "fallocate",
    "lseek",
    "copy_file_range",
    "init",
];

fn kind_index(name: &str) -> usize {
    KINDS
        .iter()
        .position(|k| *k == name)
        .expect("every forwarded call has a kind")
}

/// Counters shared by the daemon's threads and whoever reads them.
#[derive(Debug)]
pub struct RequestStats {
    count: [AtomicU64; KINDS.len()],
    nanos: [AtomicU64; KINDS.len()],
    bytes: [AtomicU64; KINDS.len()],
}

impl Default for RequestStats {
    fn default() -> Self {
        RequestStats {
            count: std::array::from_fn(|_| AtomicU64::new(0)),
            nanos: std::array::from_fn(|_| AtomicU64::new(0)),
            bytes: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// One kind's counters at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KindStats {
    /// The request kind (`lookup`, `read`, ...).
    pub kind: &'static str,
    /// Requests served.
    pub count: u64,
    /// Time spent serving them in the daemon, nanoseconds.
    pub nanos: u64,
    /// Bytes asked for (read) or carried (write, copy_file_range).
    pub bytes: u64,
}

impl RequestStats {
    fn add(&self, i: usize, t: Instant, bytes: u64) {
        let ns = t.elapsed().as_nanos() as u64;
        self.count[i].fetch_add(1, Ordering::Relaxed);
        self.nanos[i].fetch_add(ns, Ordering::Relaxed);
        if bytes > 0 {
            self.bytes[i].fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// The kinds served at least once so far.
    pub fn snapshot(&self) -> Vec<KindStats> {
        (0..KINDS.len())
            .map(|i| KindStats {
                kind: KINDS[i],
                count: self.count[i].load(Ordering::Relaxed),
                nanos: self.nanos[i].load(Ordering::Relaxed),
                bytes: self.bytes[i].load(Ordering::Relaxed),
            })
            .filter(|k| k.count > 0)
            .collect()
    }

    /// What was served between snapshot `before` and now.
    pub fn since(&self, before: &[KindStats]) -> Vec<KindStats> {
        self.snapshot()
            .into_iter()
            .map(|mut k| {
                if let Some(b) = before.iter().find(|b| b.kind == k.kind) {
                    k.count -= b.count.min(k.count);
                    k.nanos -= b.nanos.min(k.nanos);
                    k.bytes -= b.bytes.min(k.bytes);
                }
                k
            })
            .filter(|k| k.count > 0)
            .collect()
    }
}

/// A `Filesystem` that counts and times every call into `inner`.
pub struct Counted<F> {
    pub inner: F,
    pub stats: std::sync::Arc<RequestStats>,
}

/// Forwards `fn name(&self, args...)` to the inner file system, counted
/// under its own name; `bytes` is what the call moves.
macro_rules! forward {
    ($( fn $name:ident(&self, $($arg:ident: $ty:ty),* $(,)?) $(bytes $bytes:expr)?; )*) => {
        $(
            fn $name(&self, $($arg: $ty),*) {
                let t = Instant::now();
                #[allow(unused_mut, unused_assignments)]
                let mut b: u64 = 0;
                $( b = $bytes; )?
                self.inner.$name($($arg),*);
                self.stats.add(kind_index(stringify!($name)), t, b);
            }
        )*
    };
}

impl<F: Filesystem> Filesystem for Counted<F> {
    fn init(&mut self, req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let t = Instant::now();
        let r = self.inner.init(req, config);
        self.stats.add(kind_index("init"), t, 0);
        r
    }

    fn destroy(&mut self) {
        self.inner.destroy()
    }

    forward! {
        fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry);
        fn forget(&self, req: &Request, ino: INodeNo, nlookup: u64);
        fn getattr(&self, req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr);
        fn setattr(
            &self,
            req: &Request,
            ino: INodeNo,
            mode: Option<u32>,
            uid: Option<u32>,
            gid: Option<u32>,
            size: Option<u64>,
            atime: Option<TimeOrNow>,
            mtime: Option<TimeOrNow>,
            ctime: Option<SystemTime>,
            fh: Option<FileHandle>,
            crtime: Option<SystemTime>,
            chgtime: Option<SystemTime>,
            bkuptime: Option<SystemTime>,
            flags: Option<fuser::BsdFileFlags>,
            reply: ReplyAttr,
        );
        fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData);
        fn mknod(
            &self,
            req: &Request,
            parent: INodeNo,
            name: &OsStr,
            mode: u32,
            umask: u32,
            rdev: u32,
            reply: ReplyEntry,
        );
        fn mkdir(
            &self,
            req: &Request,
            parent: INodeNo,
            name: &OsStr,
            mode: u32,
            umask: u32,
            reply: ReplyEntry,
        );
        fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty);
        fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty);
        fn symlink(
            &self,
            req: &Request,
            parent: INodeNo,
            link_name: &OsStr,
            target: &Path,
            reply: ReplyEntry,
        );
        fn rename(
            &self,
            req: &Request,
            parent: INodeNo,
            name: &OsStr,
            newparent: INodeNo,
            newname: &OsStr,
            flags: RenameFlags,
            reply: ReplyEmpty,
        );
        fn link(
            &self,
            req: &Request,
            ino: INodeNo,
            newparent: INodeNo,
            newname: &OsStr,
            reply: ReplyEntry,
        );
        fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen);
        fn read(
            &self,
            req: &Request,
            ino: INodeNo,
            fh: FileHandle,
            offset: u64,
            size: u32,
            flags: OpenFlags,
            lock_owner: Option<LockOwner>,
            reply: ReplyData,
        ) bytes size as u64;
        fn write(
            &self,
            req: &Request,
            ino: INodeNo,
            fh: FileHandle,
            offset: u64,
            data: &[u8],
            write_flags: WriteFlags,
            flags: OpenFlags,
            lock_owner: Option<LockOwner>,
            reply: ReplyWrite,
        ) bytes data.len() as u64;
        fn flush(
            &self,
            req: &Request,
            ino: INodeNo,
            fh: FileHandle,
            lock_owner: LockOwner,
            reply: ReplyEmpty,
        );
        fn release(
            &self,
            req: &Request,
            ino: INodeNo,
            fh: FileHandle,
            flags: OpenFlags,
            lock_owner: Option<LockOwner>,
            flush: bool,
            reply: ReplyEmpty,
        );
        fn fsync(&self, req: &Request, ino: INodeNo, fh: FileHandle, datasync: bool, reply: ReplyEmpty);
        fn opendir(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen);
        fn readdir(
            &self,
            req: &Request,
            ino: INodeNo,
            fh: FileHandle,
            offset: u64,
            reply: ReplyDirectory,
        );
        fn readdirplus(
            &self,
            req: &Request,
            ino: INodeNo,
            fh: FileHandle,
            offset: u64,
            reply: ReplyDirectoryPlus,
        );
        fn releasedir(
            &self,
            req: &Request,
            ino: INodeNo,
            fh: FileHandle,
            flags: OpenFlags,
            reply: ReplyEmpty,
        );
        fn fsyncdir(
            &self,
            req: &Request,
            ino: INodeNo,
            fh: FileHandle,
            datasync: bool,
            reply: ReplyEmpty,
        );
        fn statfs(&self, req: &Request, ino: INodeNo, reply: ReplyStatfs);
        fn setxattr(
            &self,
            req: &Request,
            ino: INodeNo,
            name: &OsStr,
            value: &[u8],
            flags: i32,
            position: u32,
            reply: ReplyEmpty,
        );
        fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr);
        fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr);
        fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty);
        fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty);
        fn create(
            &self,
            req: &Request,
            parent: INodeNo,
            name: &OsStr,
            mode: u32,
            umask: u32,
            flags: i32,
            reply: ReplyCreate,
        );
        fn getlk(
            &self,
            req: &Request,
            ino: INodeNo,
            fh: FileHandle,
            lock_owner: LockOwner,
            start: u64,
            end: u64,
            typ: i32,
            pid: u32,
            reply: ReplyLock,
        );
        fn setlk(
            &self,
            req: &Request,
            ino: INodeNo,
            fh: FileHandle,
            lock_owner: LockOwner,
            start: u64,
            end: u64,
            typ: i32,
            pid: u32,
            sleep: bool,
            reply: ReplyEmpty,
        );
        fn bmap(&self, req: &Request, ino: INodeNo, blocksize: u32, idx: u64, reply: ReplyBmap);
        fn ioctl(
            &self,
            req: &Request,
            ino: INodeNo,
            fh: FileHandle,
            flags: IoctlFlags,
            cmd: u32,
            in_data: &[u8],
            out_size: u32,
            reply: ReplyIoctl,
        );
        fn poll(
            &self,
            req: &Request,
            ino: INodeNo,
            fh: FileHandle,
            ph: PollNotifier,
            events: PollEvents,
            flags: PollFlags,
            reply: ReplyPoll,
        );
        fn fallocate(
            &self,
            req: &Request,
            ino: INodeNo,
            fh: FileHandle,
            offset: u64,
            length: u64,
            mode: i32,
            reply: ReplyEmpty,
        );
        fn lseek(
            &self,
            req: &Request,
            ino: INodeNo,
            fh: FileHandle,
            offset: i64,
            whence: i32,
            reply: ReplyLseek,
        );
        fn copy_file_range(
            &self,
            req: &Request,
            ino_in: INodeNo,
            fh_in: FileHandle,
            offset_in: u64,
            ino_out: INodeNo,
            fh_out: FileHandle,
            offset_out: u64,
            len: u64,
            flags: CopyFileRangeFlags,
            reply: ReplyWrite,
        ) bytes len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_named_once() {
        for (i, k) in KINDS.iter().enumerate() {
            assert_eq!(kind_index(k), i, "{k}");
        }
    }

    #[test]
    fn since_subtracts_an_earlier_snapshot() {
        let s = RequestStats::default();
        s.add(kind_index("read"), Instant::now(), 4096);
        let before = s.snapshot();
        s.add(kind_index("read"), Instant::now(), 8192);
        s.add(kind_index("write"), Instant::now(), 10);
        let d = s.since(&before);
        assert_eq!(d.len(), 2);
        let r = d.iter().find(|k| k.kind == "read").unwrap();
        assert_eq!((r.count, r.bytes), (1, 8192));
        let w = d.iter().find(|k| k.kind == "write").unwrap();
        assert_eq!((w.count, w.bytes), (1, 10));
    }
}
