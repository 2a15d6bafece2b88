//! Namespace operations: path resolution, create, mkdir, unlink, rmdir,
//! rename, link, symlink, readdir, stat and attribute changes.
//!
//! Each operation is one transaction: it resolves paths, locks the records of
//! every inode it changes (in inode-number order), stages the new records and
//! directory entries, commits, and only then installs the new records in
//! memory. An error at any point aborts the transaction and changes nothing.
use crate::dir::{self, DirEntry, check_name, components};
use crate::error::{FsError, Result};
use crate::file::{File, OpenOptions};
use crate::fs::{Fs, FsInner, lock, put_record};
use crate::inode::{self, FileKind, Inode, RecState, orphan_tree};
use crate::ops::RenameFlags;
use crate::tx::Tx;
use daxfs_format::records::{InodeRecord, Timestamp};
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};

/// Symbolic links followed in one lookup before ELOOP.
pub const MAX_SYMLINKS: usize = 40;
/// Longest symbolic-link target.
pub const SYMLINK_MAX: usize = 4095;

/// File attributes, as `stat` returns them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stat {
    pub ino: u64,
    pub kind: FileKind,
    /// Permission bits (the type bits are in `kind`).
    pub perm: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// 512-byte units, as `st_blocks`.
    pub blocks: u64,
    pub atime: (i64, u32),
    pub mtime: (i64, u32),
    pub ctime: (i64, u32),
    pub btime: (i64, u32),
    /// Bytes of this file lost to media errors.
    pub lost_bytes: u64,
    /// Told apart from an earlier inode of the same number.
    pub generation: u64,
    /// A device's number (see [`crate::ops::decode_dev`]); 0 otherwise.
    pub rdev: u32,
}

fn ts(t: &Timestamp) -> (i64, u32) {
    (t.sec.get(), t.nsec.get())
}

impl Stat {
    pub(crate) fn of(rec: &InodeRecord) -> Stat {
        let m = rec.mode.get();
        Stat {
            ino: rec.ino.get(),
            kind: FileKind::of_mode(m).unwrap_or(FileKind::File),
            perm: m & 0o7777,
            nlink: rec.nlink.get(),
            uid: rec.uid.get(),
            gid: rec.gid.get(),
            size: rec.size.get(),
            blocks: rec.blocks.get().saturating_mul(8),
            atime: ts(&rec.atime),
            mtime: ts(&rec.mtime),
            ctime: ts(&rec.ctime),
            btime: ts(&rec.btime),
            lost_bytes: rec.lost_bytes.get(),
            generation: rec.generation.get(),
            rdev: rec.rdev.get(),
        }
    }
}

/// Counts one more link to `r`; a count that cannot grow is corrupt.
pub(crate) fn add_link(r: &mut InodeRecord) -> Result<()> {
    let n = r.nlink.get().checked_add(1).ok_or_else(|| {
        FsError::Corrupt(format!(
            "inode {}: link count {} cannot grow",
            r.ino.get(),
            r.nlink.get()
        ))
    })?;
    r.nlink = n.into();
    Ok(())
}

/// `e`, naming `p` instead of the component the inode-number call named.
fn at_path(e: FsError, p: &[u8]) -> FsError {
    match e {
        FsError::NotFound(_) => FsError::NotFound(show(p)),
        FsError::Exists(_) => FsError::Exists(show(p)),
        FsError::NotDir(_) => FsError::NotDir(show(p)),
        FsError::IsDir(_) => FsError::IsDir(show(p)),
        FsError::NotEmpty(_) => FsError::NotEmpty(show(p)),
        FsError::NameTooLong(_) => FsError::NameTooLong(show(p)),
        other => other,
    }
}

/// The path ends with a slash.
fn trailing_slash(p: &[u8]) -> bool {
    p.last() == Some(&b'/')
}

/// The path can only name a directory: it ends with a slash, `.` or `..`.
fn wants_dir(p: &[u8]) -> bool {
    trailing_slash(p) || matches!(p.rsplit(|&c| c == b'/').next(), Some(b".") | Some(b".."))
}

fn show(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

/// The records of a set of inodes, locked for one operation. Changes are
/// made to copies; `install` puts them in place after the commit.
pub(crate) struct Recs<'a> {
    inodes: Vec<&'a Arc<Inode>>,
    guards: Vec<MutexGuard<'a, RecState>>,
    pub recs: Vec<InodeRecord>,
}

impl<'a> Recs<'a> {
    /// Locks the distinct inodes of `list` (duplicates are merged).
    pub fn lock(list: &[&'a Arc<Inode>]) -> Recs<'a> {
        let mut inodes: Vec<&'a Arc<Inode>> = list.to_vec();
        inodes.sort_by_key(|i| i.ino);
        inodes.dedup_by_key(|i| i.ino);
        let guards: Vec<MutexGuard<'a, RecState>> = inodes.iter().map(|i| i.rec()).collect();
        let recs = guards.iter().map(|g| g.rec).collect();
        Recs {
            inodes,
            guards,
            recs,
        }
    }

    /// The record copy of inode `ino`; an inode not in the set is a bug of
    /// the caller, reported as an error rather than another inode's record.
    pub fn get(&mut self, ino: u64) -> Result<&mut InodeRecord> {
        match self.inodes.iter().position(|x| x.ino == ino) {
            Some(i) => Ok(&mut self.recs[i]),
            None => Err(FsError::Corrupt(format!(
                "inode {ino} is not among the records locked for this operation"
            ))),
        }
    }

    /// Stages every record still alive (ino != 0) into the inode tree.
    pub fn stage(&self, tx: &mut Tx<'_>) -> Result<()> {
        // Their records are this set's to write (and locked by it).
        tx.staged_inos.extend(self.inodes.iter().map(|i| i.ino));
        for r in &self.recs {
            if r.ino.get() != 0 {
                put_record(tx, r)?;
            }
        }
        Ok(())
    }

    /// Installs the copies in memory after a successful commit.
    pub fn install(mut self) {
        for (g, r) in self.guards.iter_mut().zip(self.recs.iter()) {
            if r.ino.get() != 0 {
                g.rec = *r;
                g.dirty = false;
            } else {
                g.rec.nlink = 0.into();
            }
        }
    }
}

impl FsInner {
    /// Resolves `path` to an inode. `follow_last`: follow a symlink in the last
    /// component. Every intermediate symlink is followed.
    pub(crate) fn resolve(
        &self,
        tx: &mut Tx<'_>,
        path: &[u8],
        follow_last: bool,
    ) -> Result<Arc<Inode>> {
        let mut budget = MAX_SYMLINKS;
        self.resolve_from(tx, self.root_ino, path, follow_last, &mut budget)
    }

    fn resolve_from(
        &self,
        tx: &mut Tx<'_>,
        start: u64,
        path: &[u8],
        follow_last: bool,
        budget: &mut usize,
    ) -> Result<Arc<Inode>> {
        let iroot = tx.meta.sb.inode_tree;
        crate::reads::resolve_from(self, tx, &iroot, start, path, follow_last, budget)
    }

    /// Resolves everything but the last component: (parent directory, name).
    pub(crate) fn resolve_parent(
        &self,
        tx: &mut Tx<'_>,
        path: &[u8],
    ) -> Result<(Arc<Inode>, Vec<u8>)> {
        let trimmed: &[u8] = {
            let mut p = path;
            while p.len() > 1 && p.last() == Some(&b'/') {
                p = &p[..p.len() - 1];
            }
            p
        };
        let (dir_path, name): (&[u8], &[u8]) = match trimmed.iter().rposition(|&c| c == b'/') {
            Some(i) => (&trimmed[..i + 1], &trimmed[i + 1..]),
            None => (b".", trimmed),
        };
        if name == b"." || name == b".." {
            // What goes before must be a directory (ENOTDIR, ENOENT first).
            let dir = self.resolve(tx, dir_path, true)?;
            if dir.kind != FileKind::Dir {
                return Err(FsError::NotDir(show(path)));
            }
        }
        if name.is_empty() || name == b"." || name == b".." {
            return Err(FsError::Invalid(format!(
                "{}: names no entry that can be changed",
                show(path)
            )));
        }
        check_name(name).map_err(|e| match e {
            FsError::NameTooLong(_) => FsError::NameTooLong(show(path)),
            other => other,
        })?;
        let dir = self.resolve(tx, dir_path, true)?;
        if dir.kind != FileKind::Dir {
            return Err(FsError::NotDir(show(path)));
        }
        Ok((dir, name.to_vec()))
    }

    pub(crate) fn next_ino(tx: &mut Tx<'_>) -> Result<u64> {
        let ino = tx.meta.sb.next_ino.get();
        // A corrupt superblock must not make a create reuse a live inode.
        let root = tx.meta.sb.inode_tree;
        // Inode numbers stay below the counters' limit (itself below the
        // reverse map's metadata-owner flag): there the inode-number space
        // is used up, which is ENOSPC, as when Linux runs out of inodes.
        let max = crate::counters::COUNTER_LIMIT;
        if ino >= max {
            return Err(FsError::NoSpace(format!(
                "no inode number left: next_ino {ino} reached the limit {max}"
            )));
        }
        if ino == 0 || inode::read_record(tx, &root, ino)?.is_some() {
            return Err(FsError::Corrupt(format!(
                "superblock: next inode number {ino} is invalid or in use"
            )));
        }
        tx.meta.sb.next_ino = (ino + 1).into();
        tx.meta.sb.inodes = tx.meta.sb.inodes.get().saturating_add(1).into();
        Ok(ino)
    }

    /// Drops a link to `child`; frees it, or puts it on the orphan list when
    /// open, once no link is left. Marks the record dead (ino 0) when freed.
    pub(crate) fn drop_link(
        &self,
        tx: &mut Tx<'_>,
        child: &Arc<Inode>,
        rec: &mut InodeRecord,
    ) -> Result<()> {
        let n = if child.kind == FileKind::Dir {
            0
        } else {
            rec.nlink.get().saturating_sub(1)
        };
        rec.nlink = n.into();
        rec.ctime = inode::now();
        if n == 0 {
            if child.opens.load(Ordering::SeqCst) > 0 {
                put_record(tx, rec)?;
                let mut root = tx.meta.sb.orphan_tree;
                orphan_tree().insert(tx, &mut root, child.ino, ())?;
                tx.meta.sb.orphan_tree = root;
            } else {
                put_record(tx, rec)?;
                self.free_inode(tx, child.ino)?;
                rec.ino = 0.into();
            }
        }
        Ok(())
    }
}

impl Fs {
    /// Creates a node of `kind` at `path`; returns its inode.
    fn make_node(
        &self,
        path: &[u8],
        kind: FileKind,
        perm: u32,
        symlink_target: Option<&[u8]>,
        rdev: u32,
    ) -> Result<Arc<Inode>> {
        let inner = &*self.inner;
        inner.grouped(|meta| {
            let tx = Tx::begin(&*inner.dev, meta)?;
            inner.make_node_in(tx, path, kind, perm, symlink_target, rdev)
        })
    }
}

impl FsInner {
    /// Creates a node of `kind` at `path` in transaction `tx`, and commits.
    fn make_node_in(
        &self,
        mut tx: Tx<'_>,
        path: &[u8],
        kind: FileKind,
        perm: u32,
        symlink_target: Option<&[u8]>,
        rdev: u32,
    ) -> Result<Arc<Inode>> {
        let inner = self;
        let (dir, name) = inner.resolve_parent(&mut tx, path)?;
        let droot = dir.rec().rec.tree;
        if dir::lookup(&mut tx, dir.ino, &droot, &name)?.is_some() {
            return Err(FsError::Exists(show(path)));
        }
        if kind != FileKind::Dir && trailing_slash(path) {
            // A name that asks for a directory, for something else.
            return Err(FsError::NotFound(format!(
                "{}: a trailing slash names a directory",
                show(path)
            )));
        }
        inner.make_in(tx, &dir, Some(&name), kind, perm, symlink_target, rdev)
    }
}

impl Fs {
    /// Creates a directory.
    pub fn mkdir(&self, path: impl AsRef<[u8]>, perm: u32) -> Result<()> {
        self.make_node(path.as_ref(), FileKind::Dir, perm, None, 0)
            .map(|_| ())
    }

    /// Creates a symbolic link at `path` pointing at `target`.
    pub fn symlink(&self, target: impl AsRef<[u8]>, path: impl AsRef<[u8]>) -> Result<()> {
        let t = target.as_ref();
        if t.is_empty() {
            return Err(FsError::NotFound("empty symlink target".into()));
        }
        if t.len() > SYMLINK_MAX || t.contains(&0) {
            return Err(FsError::NameTooLong(format!(
                "symlink target of {} bytes",
                t.len()
            )));
        }
        self.make_node(path.as_ref(), FileKind::Symlink, 0o777, Some(t), 0)
            .map(|_| ())
    }

    /// Makes a FIFO, socket, device or regular file at `path` as `mknod`
    /// does (see [`Fs::mknod_at`]).
    pub fn mknod(&self, path: impl AsRef<[u8]>, mode: u32, rdev: u32) -> Result<()> {
        let kind = crate::ops::mknod_kind(mode)?;
        self.make_node(path.as_ref(), kind, mode & 0o7777, None, rdev)
            .map(|_| ())
    }

    /// Reads a symbolic link's target.
    pub fn readlink(&self, path: impl AsRef<[u8]>) -> Result<Vec<u8>> {
        if let Some(r) = self.inner.lockless(|r| {
            let (rec, kind) = r.resolve(path.as_ref(), false)?;
            if kind != FileKind::Symlink {
                return Err(FsError::Invalid(format!(
                    "{}: not a symbolic link",
                    show(path.as_ref())
                )));
            }
            r.link_target(&rec)
        }) {
            return r;
        }
        self.inner.read_only(|inner, s, sb| {
            let i = inner.resolve_ro(s, sb, path.as_ref(), false)?;
            if i.kind != FileKind::Symlink {
                return Err(FsError::Invalid(format!(
                    "{}: not a symbolic link",
                    show(path.as_ref())
                )));
            }
            crate::reads::link_target(inner, s, &i)
        })
    }

    /// Opens (and with `opts.create`, creates) a file.
    pub fn open(&self, path: impl AsRef<[u8]>, opts: &OpenOptions) -> Result<File> {
        let path = path.as_ref();
        if !opts.read && !opts.write {
            return Err(FsError::Invalid("open needs read or write access".into()));
        }
        if opts.create && trailing_slash(path) {
            return Err(FsError::IsDir(format!(
                "{}: cannot create a file with a trailing slash",
                show(path)
            )));
        }
        let inner = &*self.inner;
        let node = inner.grouped(|meta| {
            let mut tx = Tx::begin(&*inner.dev, meta)?;
            Ok(match inner.resolve(&mut tx, path, true) {
                Ok(n) => {
                    if opts.create && opts.excl {
                        return Err(FsError::Exists(show(path)));
                    }
                    n.opens.fetch_add(1, Ordering::SeqCst);
                    n
                }
                Err(FsError::NotFound(_)) if opts.create => {
                    // Created in the same transaction, and counted open
                    // under the same lock: no other create can come between
                    // the lookup and this one, nor an unlink free the new
                    // inode before its handle counts.
                    let n = inner.make_node_in(tx, path, FileKind::File, opts.mode, None, 0)?;
                    n.opens.fetch_add(1, Ordering::SeqCst);
                    n
                }
                Err(e) => return Err(e),
            })
        })?;
        let file = File::new(self.inner.clone(), node, opts.clone());
        if file.inode().kind == FileKind::Dir && opts.write {
            return Err(FsError::IsDir(show(path)));
        }
        if file.inode().kind == FileKind::Symlink {
            return Err(FsError::Loop(show(path)));
        }
        if file.inode().kind.is_special() {
            return Err(crate::ops::special_open(file.inode().kind));
        }
        if opts.truncate && opts.write {
            file.set_len(0)?;
        }
        Ok(file)
    }

    /// Creates a new regular file (fails with EEXIST if it exists) and opens it
    /// for reading and writing.
    pub fn create(&self, path: impl AsRef<[u8]>) -> Result<File> {
        self.open(path, &OpenOptions::create_new())
    }

    /// Removes a name of a file (not a directory).
    pub fn unlink(&self, path: impl AsRef<[u8]>) -> Result<()> {
        let path = path.as_ref();
        let inner = &*self.inner;
        inner.grouped(|meta| {
            let mut tx = Tx::begin(&*inner.dev, meta)?;
            if wants_dir(path) {
                // Names a directory (EISDIR) or fails to (ENOTDIR, ENOENT).
                inner.resolve(&mut tx, path, true)?;
                return Err(FsError::IsDir(show(path)));
            }
            // Deleting frees space, so it may use the metadata reserve.
            tx.use_reserve();
            let (dir, name) = inner.resolve_parent(&mut tx, path)?;
            inner
                .remove_in(tx, &dir, &name, false)
                .map_err(|e| at_path(e, path))
        })
    }

    /// Removes an empty directory.
    pub fn rmdir(&self, path: impl AsRef<[u8]>) -> Result<()> {
        let path = path.as_ref();
        if components(path).last() == Some(&&b".."[..]) {
            return Err(FsError::NotEmpty(show(path)));
        }
        let inner = &*self.inner;
        let mut meta = lock(&inner.meta);
        let mut tx = Tx::begin(&*inner.dev, &mut meta)?;
        tx.use_reserve();
        if components(path).is_empty() {
            return Err(FsError::Invalid("cannot remove the root directory".into()));
        }
        let (dir, name) = inner.resolve_parent(&mut tx, path)?;
        inner
            .remove_in(tx, &dir, &name, true)
            .map_err(|e| at_path(e, path))
    }

    /// Adds a hard link `new` to the file at `existing`.
    pub fn link(&self, existing: impl AsRef<[u8]>, new: impl AsRef<[u8]>) -> Result<()> {
        let (existing, new) = (existing.as_ref(), new.as_ref());
        let inner = &*self.inner;
        let mut meta = lock(&inner.meta);
        let mut tx = Tx::begin(&*inner.dev, &mut meta)?;
        let child = inner.resolve(&mut tx, existing, false)?;
        if child.kind == FileKind::Dir {
            return Err(FsError::NotPermitted(format!(
                "{}: hard link to a directory",
                show(existing)
            )));
        }
        let (dir, name) = inner.resolve_parent(&mut tx, new)?;
        let droot = dir.rec().rec.tree;
        if dir::lookup(&mut tx, dir.ino, &droot, &name)?.is_some() {
            return Err(FsError::Exists(show(new)));
        }
        if trailing_slash(new) {
            return Err(FsError::NotFound(format!(
                "{}: a trailing slash names a directory",
                show(new)
            )));
        }
        if child.rec().rec.nlink.get() == 0 {
            return Err(FsError::NotFound(show(existing)));
        }
        inner
            .link_in(tx, &child, &dir, &name)
            .map_err(|e| at_path(e, new))
    }

    /// Renames `from` to `to`, atomically replacing `to` if it exists (a
    /// directory only by an empty directory, a file only by a non-directory).
    pub fn rename(&self, from: impl AsRef<[u8]>, to: impl AsRef<[u8]>) -> Result<()> {
        let (from, to) = (from.as_ref(), to.as_ref());
        let inner = &*self.inner;
        inner.grouped(|meta| {
            let mut tx = Tx::begin(&*inner.dev, meta)?;
            let (sdir, sname) = inner.resolve_parent(&mut tx, from)?;
            let (ddir, dname) = inner.resolve_parent(&mut tx, to)?;
            let sroot = sdir.rec().rec.tree;
            let Some(sf) = dir::lookup(&mut tx, sdir.ino, &sroot, &sname)? else {
                return Err(FsError::NotFound(show(from)));
            };
            let src = inner.inode_tx(&mut tx, sf.ino)?;
            if src.kind != FileKind::Dir && (trailing_slash(from) || trailing_slash(to)) {
                return Err(FsError::NotDir(format!(
                    "{}: not a directory, named with a trailing slash",
                    show(if trailing_slash(from) { from } else { to })
                )));
            }
            inner
                .rename_in(tx, &sdir, &sname, &ddir, &dname, RenameFlags::default())
                .map_err(|e| match e {
                    FsError::NotFound(_) => FsError::NotFound(show(from)),
                    other => at_path(other, to),
                })
        })
    }

    /// Lists a directory (without "." and "..").
    pub fn readdir(&self, path: impl AsRef<[u8]>) -> Result<Vec<DirEntry>> {
        self.readdir_from(path, 0, usize::MAX)
    }

    /// Lists up to `max` entries after the one whose cookie is `after`.
    pub fn readdir_from(
        &self,
        path: impl AsRef<[u8]>,
        after: u64,
        max: usize,
    ) -> Result<Vec<DirEntry>> {
        if let Some(r) = self.inner.lockless(|r| {
            let (d, kind) = r.resolve(path.as_ref(), true)?;
            if kind != FileKind::Dir {
                return Err(FsError::NotDir(show(path.as_ref())));
            }
            dir::list(&mut r.s, d.ino.get(), &d.tree, after, max)
        }) {
            return r;
        }
        self.inner.read_only(|inner, s, sb| {
            let d = inner.resolve_ro(s, sb, path.as_ref(), true)?;
            if d.kind != FileKind::Dir {
                return Err(FsError::NotDir(show(path.as_ref())));
            }
            let root = d.rec().rec.tree;
            dir::list(s, d.ino, &root, after, max)
        })
    }

    /// Attributes of the file at `path`, following a final symlink.
    pub fn stat(&self, path: impl AsRef<[u8]>) -> Result<Stat> {
        if let Some(r) = self.inner.lockless(|r| {
            let (rec, _) = r.resolve(path.as_ref(), true)?;
            r.stat(&rec)
        }) {
            return r;
        }
        self.inner.read_only(|inner, s, sb| {
            let node = inner.resolve_ro(s, sb, path.as_ref(), true)?;
            crate::reads::stat_of(s, sb, &node)
        })
    }

    /// Attributes of `path` itself (a final symlink is not followed).
    pub fn lstat(&self, path: impl AsRef<[u8]>) -> Result<Stat> {
        if let Some(r) = self.inner.lockless(|r| {
            let (rec, _) = r.resolve(path.as_ref(), false)?;
            r.stat(&rec)
        }) {
            return r;
        }
        self.inner.read_only(|inner, s, sb| {
            let node = inner.resolve_ro(s, sb, path.as_ref(), false)?;
            crate::reads::stat_of(s, sb, &node)
        })
    }

    fn set_attr(&self, path: &[u8], f: impl FnOnce(&mut InodeRecord)) -> Result<()> {
        let inner = &*self.inner;
        let mut meta = lock(&inner.meta);
        let mut tx = Tx::begin(&*inner.dev, &mut meta)?;
        let node = inner.resolve(&mut tx, path, true)?;
        let mut recs = Recs::lock(&[&node]);
        let r = recs.get(node.ino)?;
        f(r);
        r.ctime = inode::now();
        recs.stage(&mut tx)?;
        tx.commit()?;
        recs.install();
        Ok(())
    }

    /// Changes permission bits.
    pub fn chmod(&self, path: impl AsRef<[u8]>, perm: u32) -> Result<()> {
        self.set_attr(path.as_ref(), |r| {
            r.mode = ((r.mode.get() & !0o7777) | (perm & 0o7777)).into()
        })
    }

    /// Changes owner and group (`None` leaves one as it is).
    pub fn chown(&self, path: impl AsRef<[u8]>, uid: Option<u32>, gid: Option<u32>) -> Result<()> {
        self.set_attr(path.as_ref(), |r| {
            if let Some(u) = uid {
                r.uid = u.into();
            }
            if let Some(g) = gid {
                r.gid = g.into();
            }
        })
    }

    /// Sets access and modification times (seconds, nanoseconds); `None` leaves one.
    pub fn utimens(
        &self,
        path: impl AsRef<[u8]>,
        atime: Option<(i64, u32)>,
        mtime: Option<(i64, u32)>,
    ) -> Result<()> {
        for t in [atime, mtime].into_iter().flatten() {
            if t.1 >= 1_000_000_000 {
                return Err(FsError::Invalid(format!(
                    "nanoseconds {} out of range",
                    t.1
                )));
            }
        }
        self.set_attr(path.as_ref(), |r| {
            if let Some((s, n)) = atime {
                r.atime = Timestamp {
                    sec: s.into(),
                    nsec: n.into(),
                };
            }
            if let Some((s, n)) = mtime {
                r.mtime = Timestamp {
                    sec: s.into(),
                    nsec: n.into(),
                };
            }
        })
    }

    /// Sets the size of the file at `path`.
    pub fn truncate(&self, path: impl AsRef<[u8]>, len: u64) -> Result<()> {
        let f = self.open(path, &OpenOptions::write_only())?;
        f.set_len(len)
    }
}
