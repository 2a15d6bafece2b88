//! The `fuser::Filesystem` over daxfs's inode-number API.
use crate::perm::{self, Creds, R, W, X};
use crate::{Invalidator, MountConfig, lock};
use daxfs::{
    FallocFlags, File, FileKind, Fs, FsError, InoHold, OpenOptions, RenameFlags, SetAttr, SetTime,
    Stat,
};
use fuser::{
    AccessFlags, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenAccMode, OpenFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Largest read or write request the kernel is asked to send.
pub const MAX_REQUEST: u32 = 1 << 20;
/// Entries per readdir call into daxfs.
const READDIR_BATCH: usize = 128;

type Res<T> = std::result::Result<T, Errno>;

fn errno(e: FsError) -> Errno {
    Errno::from_i32(e.errno())
}

fn en(e: i32) -> Errno {
    Errno::from_i32(e)
}

/// An open file of the mount.
struct Handle {
    ino: u64,
    file: File,
}

pub struct Daemon {
    fs: Arc<Fs>,
    cfg: MountConfig,
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    next_fh: AtomicU64,
    /// Lookup counts: inode number to the lookups the kernel has not
    /// forgotten.
    known: Arc<Mutex<HashMap<u64, u64>>>,
    /// A hold of each inode in `known`, so that one whose last name is
    /// removed lives until the kernel forgets it. Locked only inside
    /// `known`'s lock, and no engine call is made under either.
    holds: Mutex<HashMap<u64, InoHold>>,
    invalidator: Invalidator,
}

fn kind(k: FileKind) -> FileType {
    match k {
        FileKind::File => FileType::RegularFile,
        FileKind::Dir => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
        FileKind::CharDev => FileType::CharDevice,
        FileKind::BlockDev => FileType::BlockDevice,
    }
}

fn time((sec, nsec): (i64, u32)) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec)
    } else {
        UNIX_EPOCH - Duration::from_secs(sec.unsigned_abs()) + Duration::from_nanos(nsec as u64)
    }
}

fn set_time(t: SystemTime) -> SetTime {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => SetTime::At(d.as_secs() as i64, d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            let (mut s, mut n) = (-(d.as_secs() as i64), d.subsec_nanos());
            if n > 0 {
                s -= 1;
                n = 1_000_000_000 - n;
            }
            SetTime::At(s, n)
        }
    }
}

fn attr(st: &Stat) -> FileAttr {
    FileAttr {
        ino: INodeNo(st.ino),
        size: st.size,
        blocks: st.blocks,
        atime: time(st.atime),
        mtime: time(st.mtime),
        ctime: time(st.ctime),
        crtime: time(st.btime),
        kind: kind(st.kind),
        perm: (st.perm & 0o7777) as u16,
        nlink: st.nlink,
        uid: st.uid,
        gid: st.gid,
        rdev: st.rdev,
        blksize: daxfs_device_block(),
        flags: 0,
    }
}

fn daxfs_device_block() -> u32 {
    4096
}

fn creds(req: &Request) -> Creds {
    Creds::new(req.uid(), req.gid(), req.pid())
}

impl Daemon {
    pub fn new(
        fs: Arc<Fs>,
        cfg: MountConfig,
        known: Arc<Mutex<HashMap<u64, u64>>>,
        invalidator: Invalidator,
    ) -> Daemon {
        assert_eq!(fs.root_ino(), 1, "daxfs's root is FUSE's root, inode 1");
        Daemon {
            fs,
            cfg,
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            known,
            holds: Mutex::new(HashMap::new()),
            invalidator,
        }
    }

    /// Whether daxfs checks permissions (the kernel does with
    /// `default_permissions`).
    fn checks(&self) -> bool {
        !self.cfg.default_permissions
    }

    fn writable(&self) -> Res<()> {
        if self.cfg.read_only {
            return Err(Errno::EROFS);
        }
        Ok(())
    }

    fn stat(&self, ino: u64) -> Res<Stat> {
        match self.fs.getattr(ino) {
            Ok(s) => Ok(s),
            Err(e) => {
                // An unlinked file still open through the mount.
                let h = lock(&self.handles).values().find(|h| h.ino == ino).cloned();
                match h {
                    Some(h) => Ok(h.file.stat()),
                    None => Err(errno(e)),
                }
            }
        }
    }

    fn access(&self, c: &Creds, ino: u64, mask: u32) -> Res<Stat> {
        let st = self.stat(ino)?;
        if self.checks() {
            perm::check(c, &st, mask).map_err(en)?;
        }
        Ok(st)
    }

    fn handle(&self, fh: FileHandle) -> Res<Arc<Handle>> {
        lock(&self.handles).get(&fh.0).cloned().ok_or(Errno::EBADF)
    }

    fn add_handle(&self, file: File) -> FileHandle {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let ino = file.ino();
        let inv = self.invalidator.clone();
        // A media error met through this handle changed the file behind
        // the kernel's cache: drop it, from another thread (the kernel may
        // be waiting on the request that met the error).
        file.on_media_error(move |_| {
            let inv = inv.clone();
            let _ = std::thread::Builder::new()
                .name("daxfs-inval".into())
                .spawn(move || inv.inode(ino));
        });
        lock(&self.handles).insert(fh, Arc::new(Handle { ino, file }));
        FileHandle(fh)
    }

    /// Counts a lookup of inode `ino` (generation `generation`) the kernel
    /// is told of, holding the inode from its first lookup on. ENOENT when
    /// the inode is gone (removed since it was looked up).
    fn remember(&self, ino: u64, generation: u64) -> Res<()> {
        loop {
            let fresh = if lock(&self.holds).contains_key(&ino) {
                None
            } else {
                Some(
                    self.fs
                        .hold_ino(ino, Some(generation))
                        .map_err(|_| Errno::ENOENT)?,
                )
            };
            let mut k = lock(&self.known);
            let mut holds = lock(&self.holds);
            let spare = match fresh {
                Some(h) if holds.contains_key(&ino) => Some(h),
                Some(h) => {
                    holds.insert(ino, h);
                    None
                }
                // Forgotten since: take a hold again.
                None if !holds.contains_key(&ino) => continue,
                None => None,
            };
            *k.entry(ino).or_insert(0) += 1;
            drop((holds, k));
            // A hold another request took first: released with no lock held.
            drop(spare);
            return Ok(());
        }
    }

    /// Drops `n` lookups of inode `ino`; the last releases its hold.
    fn forget_n(&self, ino: u64, n: u64) {
        let released = {
            let mut k = lock(&self.known);
            let Some(c) = k.get_mut(&ino) else {
                return;
            };
            *c = c.saturating_sub(n);
            if *c > 0 {
                return;
            }
            k.remove(&ino);
            lock(&self.holds).remove(&ino)
        };
        // Frees an inode with no name left: outside the locks.
        drop(released);
    }

    fn entry(&self, st: &Stat, reply: ReplyEntry) {
        if let Err(e) = self.remember(st.ino, st.generation) {
            return reply.error(e);
        }
        reply.entry_with_ttls(
            &self.cfg.attr_ttl,
            &self.cfg.entry_ttl,
            &attr(st),
            Generation(st.generation),
        );
    }

    /// A name to make in `dir`: write and search permission on it.
    fn may_make(&self, c: &Creds, dir: u64) -> Res<Stat> {
        self.writable()?;
        let d = self.stat(dir)?;
        if d.kind != FileKind::Dir {
            return Err(Errno::ENOTDIR);
        }
        if self.checks() {
            perm::check(c, &d, W | X).map_err(en)?;
        }
        Ok(d)
    }

    /// A name to remove from `dir`: as `may_make`, and the sticky rule.
    fn may_remove(&self, c: &Creds, dir: u64, name: &OsStr) -> Res<()> {
        let d = self.may_make(c, dir)?;
        if self.checks() && d.perm & libc::S_ISVTX != 0 {
            let v = self.fs.lookup(dir, name.as_bytes()).map_err(errno)?;
            perm::check_sticky(c, &d, &v).map_err(en)?;
        }
        Ok(())
    }

    /// Makes as the caller: new inodes are theirs from birth.
    fn as_caller<T>(&self, c: &Creds, f: impl FnOnce() -> T) -> T {
        Fs::as_creator(c.uid, c.gid, f)
    }

    fn do_setattr(&self, c: &Creds, ino: u64, a: SetAttr, fh: Option<FileHandle>) -> Res<Stat> {
        self.writable()?;
        let st = self.stat(ino)?;
        let mut a = a;
        if self.checks() {
            if a.mode.is_some() {
                if !perm::owner_or_root(c, &st) {
                    return Err(Errno::EPERM);
                }
                // Not in the file's group: set-group-ID cannot be set.
                let gid = a.gid.unwrap_or(st.gid);
                if !c.root() && !c.in_group(gid) {
                    a.mode = a.mode.map(|m| m & !libc::S_ISGID);
                }
            }
            // Linux's chown_ok and chgrp_ok: only the owner may give the
            // file to itself or to a group it is in (or keep its group);
            // anyone else needs root, even for no change.
            if let Some(uid) = a.uid
                && !(c.root() || (c.uid == st.uid && uid == st.uid))
            {
                return Err(Errno::EPERM);
            }
            if let Some(gid) = a.gid
                && !(c.root() || (c.uid == st.uid && (gid == st.gid || c.in_group(gid))))
            {
                return Err(Errno::EPERM);
            }
            if a.size.is_some() && fh.is_none() {
                perm::check(c, &st, W).map_err(en)?;
            }
            let explicit = |t: &Option<SetTime>| matches!(t, Some(SetTime::At(..)));
            if explicit(&a.atime) || explicit(&a.mtime) {
                if !perm::owner_or_root(c, &st) {
                    return Err(Errno::EPERM);
                }
            } else if (a.atime.is_some() || a.mtime.is_some())
                && !perm::owner_or_root(c, &st)
                && perm::check(c, &st, W).is_err()
            {
                return Err(Errno::EACCES);
            }
        }
        if a.size.is_some() && !c.root() && a.mode.is_none() {
            self.kill_suid(ino, &st)?;
        }
        if let (Some(size), Some(fh)) = (a.size, fh) {
            let h = self.handle(fh)?;
            h.file.set_len(size).map_err(errno)?;
            a.size = None;
        }
        if a == SetAttr::default() {
            return self.stat(ino);
        }
        match self.fs.setattr(ino, &a) {
            Ok(s) => Ok(s),
            Err(FsError::NotFound(_)) if a.size.is_none() => {
                // Unlinked but open: only its handle reaches it.
                Err(Errno::ENOENT)
            }
            Err(e) => Err(errno(e)),
        }
    }

    /// Drops set-user-ID, and set-group-ID of a group-executable file, as
    /// Linux's `file_remove_privs` does for a write or truncate by a
    /// caller without CAP_FSETID. An unlinked file keeps its bits (no name
    /// reaches it, and it is never executed again).
    fn kill_suid(&self, ino: u64, st: &Stat) -> Res<()> {
        let mut drop = st.perm & libc::S_ISUID;
        if st.perm & (libc::S_ISGID | libc::S_IXGRP) == libc::S_ISGID | libc::S_IXGRP {
            drop |= libc::S_ISGID;
        }
        if drop == 0 || st.kind != FileKind::File {
            return Ok(());
        }
        let a = SetAttr {
            mode: Some(st.perm & 0o7777 & !drop),
            ..SetAttr::default()
        };
        match self.fs.setattr(ino, &a) {
            Ok(_) | Err(FsError::NotFound(_)) => Ok(()),
            Err(e) => Err(errno(e)),
        }
    }

    fn seek_data_hole(&self, fh: FileHandle, offset: i64, whence: i32) -> Res<i64> {
        let h = self.handle(fh)?;
        if offset < 0 {
            return Err(Errno::EINVAL);
        }
        let off = offset as u64;
        let size = h.file.stat().size;
        if off >= size {
            return Err(Errno::ENXIO);
        }
        let mut ext: Vec<(u64, u64)> = h
            .file
            .fiemap()
            .map_err(errno)?
            .into_iter()
            .filter(|e| !e.unwritten)
            .map(|e| (e.logical, e.logical + e.length))
            .collect();
        ext.sort_unstable();
        if whence == libc::SEEK_DATA {
            for (s, e) in ext {
                if e > off {
                    let at = s.max(off);
                    return if at < size {
                        Ok(at as i64)
                    } else {
                        Err(Errno::ENXIO)
                    };
                }
            }
            Err(Errno::ENXIO)
        } else {
            let mut pos = off;
            for (s, e) in ext {
                if s > pos {
                    break;
                }
                if e > pos {
                    pos = e;
                }
            }
            Ok(pos.min(size) as i64)
        }
    }
}

fn open_options(flags: i32, writable_mount: bool) -> Res<OpenOptions> {
    let acc = flags & libc::O_ACCMODE;
    let write = acc == libc::O_WRONLY || acc == libc::O_RDWR;
    if write && !writable_mount {
        return Err(Errno::EROFS);
    }
    Ok(OpenOptions {
        // Always readable inside: the kernel reads pages through any
        // handle of the inode (mmap, read-modify-write); it checks the
        // descriptor's own mode.
        read: true,
        write,
        // The kernel gives appends their offset (the end of file, under
        // its inode lock); writeback of mapped pages through this handle
        // must land where the page is.
        append: false,
        truncate: flags & libc::O_TRUNC != 0 && write,
        create: flags & libc::O_CREAT != 0,
        excl: flags & libc::O_EXCL != 0,
        mode: 0o644,
    })
}

/// The permission bits of a new non-directory in `dir`, as Linux's
/// `inode_init_owner`: in a set-group-ID directory it takes the
/// directory's group, and then keeps its own set-group-ID bit (when group
/// executable) only for a caller in that group or root.
fn new_mode(c: &Creds, dir: &Stat, perm: u32) -> u32 {
    let sgid_x = libc::S_ISGID | libc::S_IXGRP;
    if dir.perm & libc::S_ISGID != 0 && perm & sgid_x == sgid_x && !c.root() && !c.in_group(dir.gid)
    {
        return perm & !libc::S_ISGID;
    }
    perm
}

fn acc_mask(flags: i32) -> u32 {
    match flags & libc::O_ACCMODE {
        libc::O_RDONLY => R,
        libc::O_WRONLY => W,
        _ => R | W,
    }
}

impl Filesystem for Daemon {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(MAX_REQUEST);
        let _ = config.set_max_readahead(MAX_REQUEST);
        let want = InitFlags::FUSE_EXPORT_SUPPORT
            | InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_CACHE_SYMLINKS
            // daxfs drops set-user-ID and set-group-ID on a write,
            // truncate or O_TRUNC by a caller without CAP_FSETID (the
            // kernel's own way sends a chmod as that caller, which a
            // non-owner may not make).
            | InitFlags::FUSE_HANDLE_KILLPRIV_V2;
        let _ = config.add_capabilities(want & config.capabilities());
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let c = creds(req);
        let r = (|| {
            self.access(&c, parent.0, X)?;
            self.fs.lookup(parent.0, name.as_bytes()).map_err(errno)
        })();
        match r {
            Ok(st) => self.entry(&st, reply),
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.forget_n(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let r = match fh.and_then(|fh| self.handle(fh).ok()) {
            Some(h) => Ok(h.file.stat()),
            None => self.stat(ino.0),
        };
        match r {
            Ok(st) => reply.attr(&self.cfg.attr_ttl, &attr(&st)),
            Err(e) => reply.error(e),
        }
    }

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
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let t = |t: Option<TimeOrNow>| {
            t.map(|t| match t {
                TimeOrNow::Now => SetTime::Now,
                TimeOrNow::SpecificTime(s) => set_time(s),
            })
        };
        let a = SetAttr {
            mode: mode.map(|m| m & 0o7777),
            uid,
            gid,
            size,
            atime: t(atime),
            mtime: t(mtime),
            ctime: ctime.map(set_time),
        };
        match self.do_setattr(&creds(req), ino.0, a, fh) {
            Ok(st) => reply.attr(&self.cfg.attr_ttl, &attr(&st)),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.fs.readlink_ino(ino.0) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let c = creds(req);
        let r = self.may_make(&c, parent.0).and_then(|d| {
            let mode = (mode & !0o7777) | new_mode(&c, &d, mode & 0o7777);
            self.as_caller(&c, || {
                self.fs.mknod_at(parent.0, name.as_bytes(), mode, rdev)
            })
            .map_err(errno)
        });
        match r {
            Ok(st) => self.entry(&st, reply),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let c = creds(req);
        let r = self.may_make(&c, parent.0).and_then(|_| {
            self.as_caller(&c, || {
                self.fs.mkdir_at(parent.0, name.as_bytes(), mode & 0o7777)
            })
            .map_err(errno)
        });
        match r {
            Ok(st) => self.entry(&st, reply),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let c = creds(req);
        let r = self
            .may_remove(&c, parent.0, name)
            .and_then(|_| self.fs.unlink_at(parent.0, name.as_bytes()).map_err(errno));
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let c = creds(req);
        let r = self
            .may_remove(&c, parent.0, name)
            .and_then(|_| self.fs.rmdir_at(parent.0, name.as_bytes()).map_err(errno));
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let c = creds(req);
        let r = self.may_make(&c, parent.0).and_then(|_| {
            self.as_caller(&c, || {
                self.fs.symlink_at(
                    target.as_os_str().as_bytes(),
                    parent.0,
                    link_name.as_bytes(),
                )
            })
            .map_err(errno)
        });
        match r {
            Ok(st) => self.entry(&st, reply),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        let c = creds(req);
        let r = (|| {
            let fl = RenameFlags::from_bits(flags.bits()).map_err(errno)?;
            self.may_remove(&c, parent.0, name)?;
            let nd = self.may_make(&c, newparent.0)?;
            if self.checks() {
                let src = self.fs.lookup(parent.0, name.as_bytes()).map_err(errno)?;
                if let Ok(v) = self.fs.lookup(newparent.0, newname.as_bytes()) {
                    perm::check_sticky(&c, &nd, &v).map_err(en)?;
                    if fl.exchange && v.kind == FileKind::Dir && parent != newparent {
                        perm::check(&c, &v, W).map_err(en)?;
                    }
                }
                // A directory moving to another parent rewrites its `..`.
                if src.kind == FileKind::Dir && parent != newparent {
                    perm::check(&c, &src, W).map_err(en)?;
                }
            }
            self.fs
                .rename_at(
                    parent.0,
                    name.as_bytes(),
                    newparent.0,
                    newname.as_bytes(),
                    fl,
                )
                .map_err(errno)
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let c = creds(req);
        let r = self.may_make(&c, newparent.0).and_then(|_| {
            self.fs
                .link_at(ino.0, newparent.0, newname.as_bytes())
                .map_err(errno)
        });
        match r {
            Ok(st) => self.entry(&st, reply),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let c = creds(req);
        let r = (|| {
            let opts = open_options(flags.0, !self.cfg.read_only)?;
            let mut mask = acc_mask(flags.0);
            if flags.0 & libc::O_TRUNC != 0 {
                mask |= W;
            }
            let st = self.access(&c, ino.0, mask)?;
            if opts.truncate && !c.root() {
                self.kill_suid(ino.0, &st)?;
            }
            let f = self.fs.open_ino(ino.0, &opts).map_err(errno)?;
            Ok(self.add_handle(f))
        })();
        let _ = flags.acc_mode() == OpenAccMode::O_RDONLY;
        match r {
            Ok(fh) => reply.opened(fh, FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let r = self.handle(fh).and_then(|h| {
            let mut buf = vec![0u8; size.min(MAX_REQUEST) as usize];
            // A short reply is end of file to the kernel: read on until
            // the request is full, end of file or an error, and fail the
            // whole request on an error (a media error mid-way must not
            // look like the end of the file).
            let mut n = 0;
            while n < buf.len() {
                match h
                    .file
                    .read_at(offset + n as u64, &mut buf[n..])
                    .map_err(errno)?
                {
                    0 => break,
                    k => n += k,
                }
            }
            buf.truncate(n);
            Ok(buf)
        });
        match r {
            Ok(b) => reply.data(&b),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let r = self.writable().and_then(|_| {
            let h = self.handle(fh)?;
            // The kernel asks this of a write by a caller without
            // CAP_FSETID to a set-user-ID or set-group-ID file.
            if write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID) {
                self.kill_suid(h.ino, &h.file.stat())?;
            }
            let mut n = 0;
            while n < data.len() {
                match h.file.write_at(offset + n as u64, &data[n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if n == 0 => return Err(errno(e)),
                    Err(_) => break,
                }
            }
            Ok(n)
        });
        match r {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Writes are durable when they return; nothing is buffered here.
        match self.handle(fh) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let h = lock(&self.handles).remove(&fh.0);
        // The last close of an unlinked file frees it (daxfs::File's drop).
        drop(h);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let r = self.handle(fh).and_then(|h| h.file.fsync().map_err(errno));
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let c = creds(req);
        let r = (|| {
            let st = self.access(&c, ino.0, acc_mask(flags.0) & R)?;
            if st.kind != FileKind::Dir {
                return Err(Errno::ENOTDIR);
            }
            Ok(())
        })();
        match r {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let mut cookie = offset;
        loop {
            let batch = match self.fs.readdir_ino(ino.0, cookie, READDIR_BATCH) {
                Ok(b) => b,
                Err(e) => return reply.error(errno(e)),
            };
            if batch.is_empty() {
                break;
            }
            for e in &batch {
                if reply.add(
                    INodeNo(e.ino),
                    e.cookie,
                    kind(e.kind),
                    OsStr::from_bytes(&e.name),
                ) {
                    return reply.ok();
                }
                cookie = e.cookie;
            }
        }
        reply.ok()
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let mut cookie = offset;
        loop {
            let batch = match self.fs.readdir_ino(ino.0, cookie, READDIR_BATCH) {
                Ok(b) => b,
                Err(e) => return reply.error(errno(e)),
            };
            if batch.is_empty() {
                break;
            }
            for e in &batch {
                let dots = e.name == b"." || e.name == b"..";
                let st = match self.fs.getattr(e.ino) {
                    Ok(s) => s,
                    // Gone since the listing: skip it.
                    Err(_) => {
                        cookie = e.cookie;
                        continue;
                    }
                };
                // The kernel counts a lookup for each entry but . and ..
                if !dots && self.remember(e.ino, st.generation).is_err() {
                    // Gone since the listing: skip it.
                    cookie = e.cookie;
                    continue;
                }
                if reply.add(
                    INodeNo(e.ino),
                    e.cookie,
                    OsStr::from_bytes(&e.name),
                    &self.cfg.entry_ttl,
                    &attr(&st),
                    Generation(st.generation),
                ) {
                    // Not sent: not counted.
                    if !dots {
                        self.forget_n(e.ino, 1);
                    }
                    return reply.ok();
                }
                cookie = e.cookie;
            }
        }
        reply.ok()
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.fs.sync() {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = self.fs.statfs();
        reply.statfs(
            s.blocks,
            s.free_blocks,
            s.available_blocks,
            s.files,
            s.free_files,
            s.block_size as u32,
            s.name_max as u32,
            s.block_size as u32,
        );
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let c = creds(req);
        let r = self.writable().and_then(|_| {
            self.xattr_permission(&c, ino.0, name.as_bytes(), true)?;
            self.fs
                .setxattr_ino(ino.0, name.as_bytes(), value, flags as u32)
                .map_err(errno)
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let c = creds(req);
        let r = self
            .xattr_permission(&c, ino.0, name.as_bytes(), false)
            .and_then(|_| self.fs.getxattr_ino(ino.0, name.as_bytes()).map_err(errno));
        match r {
            Ok(v) => xattr_reply(&v, size, reply),
            Err(e) => reply.error(e),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.fs.listxattr_ino(ino.0) {
            Ok(names) => {
                let mut buf = vec![];
                for n in names {
                    buf.extend_from_slice(&n);
                    buf.push(0);
                }
                xattr_reply(&buf, size, reply)
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let c = creds(req);
        let r = self.writable().and_then(|_| {
            self.xattr_permission(&c, ino.0, name.as_bytes(), true)?;
            self.fs
                .removexattr_ino(ino.0, name.as_bytes())
                .map_err(errno)
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let c = creds(req);
        let m = mask.bits() as u32 & 7;
        let r = self.stat(ino.0).and_then(|st| {
            if m & W != 0 && self.cfg.read_only {
                return Err(Errno::EROFS);
            }
            if self.checks() {
                perm::check(&c, &st, m).map_err(en)?;
            }
            Ok(())
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let c = creds(req);
        let r = (|| {
            let opts = open_options(flags, !self.cfg.read_only)?;
            let d = self.stat(parent.0)?;
            if self.checks() {
                perm::check(&c, &d, X).map_err(en)?;
            }
            // An existing file is opened with its own permission check.
            let existing = self.fs.lookup(parent.0, name.as_bytes()).ok();
            let f = match existing {
                Some(st) if flags & libc::O_EXCL == 0 => {
                    if self.checks() {
                        let mut mask = acc_mask(flags);
                        if flags & libc::O_TRUNC != 0 {
                            mask |= W;
                        }
                        perm::check(&c, &st, mask).map_err(en)?;
                    }
                    if opts.truncate && !c.root() {
                        self.kill_suid(st.ino, &st)?;
                    }
                    self.fs
                        .create_at(parent.0, name.as_bytes(), mode & 0o7777, &opts)
                        .map_err(errno)?
                }
                Some(_) => return Err(Errno::EEXIST),
                None => {
                    let d = self.may_make(&c, parent.0)?;
                    let mode = new_mode(&c, &d, mode & 0o7777);
                    self.as_caller(&c, || {
                        self.fs.create_at(parent.0, name.as_bytes(), mode, &opts)
                    })
                    .map_err(errno)?
                }
            };
            let st = f.stat();
            let fh = self.add_handle(f);
            Ok((st, fh))
        })();
        match r {
            Ok((st, fh)) => {
                // The new file is open here: it cannot be gone.
                let _ = self.remember(st.ino, st.generation);
                reply.created(
                    &self.cfg.entry_ttl,
                    &attr(&st),
                    Generation(st.generation),
                    fh,
                    FopenFlags::empty(),
                )
            }
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let known = libc::FALLOC_FL_KEEP_SIZE
            | libc::FALLOC_FL_PUNCH_HOLE
            | libc::FALLOC_FL_ZERO_RANGE
            | libc::FALLOC_FL_UNSHARE_RANGE;
        let r = (|| {
            self.writable()?;
            if mode & !known != 0 {
                return Err(Errno::EOPNOTSUPP);
            }
            let fl = FallocFlags {
                keep_size: mode & libc::FALLOC_FL_KEEP_SIZE != 0,
                punch_hole: mode & libc::FALLOC_FL_PUNCH_HOLE != 0,
                zero_range: mode & libc::FALLOC_FL_ZERO_RANGE != 0,
                unshare: mode & libc::FALLOC_FL_UNSHARE_RANGE != 0,
            };
            let h = self.handle(fh)?;
            h.file.fallocate(fl, offset, length).map_err(errno)
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        if whence != libc::SEEK_DATA && whence != libc::SEEK_HOLE {
            return reply.error(Errno::EINVAL);
        }
        match self.seek_data_hole(fh, offset, whence) {
            Ok(o) => reply.offset(o),
            Err(e) => reply.error(e),
        }
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        let r = (|| {
            self.writable()?;
            if flags.bits() != 0 {
                return Err(Errno::EINVAL);
            }
            let src = self.handle(fh_in)?;
            let dst = self.handle(fh_out)?;
            // The reply carries 32 bits: at most 1 GiB a call (the caller
            // loops, as for a short write).
            let len = len.min(1 << 30);
            dst.file
                .copy_range(&src.file, offset_in, offset_out, len)
                .map_err(errno)
        })();
        match r {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(e),
        }
    }
}

impl Daemon {
    /// Linux's `xattr_permission`: trusted.* is root's (EPERM to set,
    /// ENODATA to read for others); user.* needs read or write permission
    /// on a regular file or directory (EPERM on others when setting).
    fn xattr_permission(&self, c: &Creds, ino: u64, name: &[u8], set: bool) -> Res<()> {
        if !self.checks() && !name.starts_with(b"trusted.") {
            return Ok(());
        }
        if name.starts_with(b"trusted.") {
            if c.root() {
                return Ok(());
            }
            return Err(if set { Errno::EPERM } else { Errno::ENODATA });
        }
        if name.starts_with(b"user.") {
            let st = self.stat(ino)?;
            if !matches!(st.kind, FileKind::File | FileKind::Dir) {
                return Err(if set { Errno::EPERM } else { Errno::ENODATA });
            }
            if set
                && st.kind == FileKind::Dir
                && st.perm & libc::S_ISVTX != 0
                && !perm::owner_or_root(c, &st)
            {
                return Err(Errno::EPERM);
            }
            return perm::check(c, &st, if set { W } else { R }).map_err(en);
        }
        Ok(())
    }
}

fn xattr_reply(v: &[u8], size: u32, reply: ReplyXattr) {
    if size == 0 {
        reply.size(v.len() as u32)
    } else if v.len() > size as usize {
        reply.error(Errno::ERANGE)
    } else {
        reply.data(v)
    }
}
