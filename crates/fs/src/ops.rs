//! The inode-number API: what a VFS or a FUSE daemon calls. Every call names
//! a directory by inode number and an entry by one name component, and is one
//! transaction (changes) or one read under the metadata lock (lookups).
//! Errors are the errno values Linux gives for the same call.
//!
//! The path API (`Fs::mkdir`, `Fs::unlink`, `Fs::rename`, ...) resolves the
//! parent directory and calls the same code (`FsInner::*_in`) inside its own
//! transaction.
use crate::dir::{self, DirEntry, check_name};
use crate::error::{FsError, Result};
use crate::file::{File, OpenOptions};
use crate::fs::{Fs, FsInner, lock, put_record};
use crate::inode::{self, FileKind, Inode, orphan_tree};
use crate::namespace::{Recs, SYMLINK_MAX, Stat, add_link};
use crate::tx::Tx;
use daxfs_format::records::{InodeRecord, NAME_MAX, Timestamp};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// An inode number.
pub type Ino = u64;

/// The most hard links a file (other than a directory) may have: a link
/// past it is EMLINK, as in ext4 (whose limit this is). Directories count
/// their subdirectories in their link count with no such limit.
pub const LINK_MAX: u32 = 65_000;

/// `rename` flags (as `renameat2`'s).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RenameFlags {
    /// RENAME_NOREPLACE: fail with EEXIST if the new name exists.
    pub noreplace: bool,
    /// RENAME_EXCHANGE: swap the two names (both must exist).
    pub exchange: bool,
}

impl RenameFlags {
    pub const NOREPLACE: RenameFlags = RenameFlags {
        noreplace: true,
        exchange: false,
    };
    pub const EXCHANGE: RenameFlags = RenameFlags {
        noreplace: false,
        exchange: true,
    };
    /// From `renameat2`'s flag bits; unknown bits are EINVAL.
    pub fn from_bits(bits: u32) -> Result<RenameFlags> {
        let known = libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE;
        if bits & !known != 0 {
            return Err(FsError::Invalid(format!(
                "unknown rename flags {:#x}",
                bits & !known
            )));
        }
        Ok(RenameFlags {
            noreplace: bits & libc::RENAME_NOREPLACE != 0,
            exchange: bits & libc::RENAME_EXCHANGE != 0,
        })
    }
}

/// A time to set: now, or a given time. `None` in [`SetAttr`] leaves it
/// (UTIME_OMIT).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetTime {
    /// UTIME_NOW.
    Now,
    /// Seconds and nanoseconds (below 10^9).
    At(i64, u32),
}

impl SetTime {
    /// From a `utimensat` timespec: UTIME_OMIT gives `None`, UTIME_NOW
    /// [`SetTime::Now`]; other nanoseconds outside 0..10^9 are EINVAL.
    pub fn from_timespec(sec: i64, nsec: i64) -> Result<Option<SetTime>> {
        match nsec {
            libc::UTIME_OMIT => Ok(None),
            libc::UTIME_NOW => Ok(Some(SetTime::Now)),
            0..=999_999_999 => Ok(Some(SetTime::At(sec, nsec as u32))),
            _ => Err(FsError::Invalid(format!("nanoseconds {nsec} out of range"))),
        }
    }
}

/// The attributes `setattr` changes (`None`: left as it is).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetAttr {
    /// Permission bits (the type bits are kept).
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// New size (regular files only).
    pub size: Option<u64>,
    pub atime: Option<SetTime>,
    pub mtime: Option<SetTime>,
    /// An explicit change time (a FUSE daemon may set one); otherwise the
    /// change time becomes now, as any attribute change makes it.
    pub ctime: Option<SetTime>,
}

/// File-system usage, as `statfs` returns it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatFs {
    /// Bytes per block.
    pub block_size: u64,
    pub blocks: u64,
    pub free_blocks: u64,
    /// Free blocks an unprivileged user may use (the metadata reserve is
    /// kept back).
    pub available_blocks: u64,
    /// Inodes in use plus those that can still be made.
    pub files: u64,
    pub free_files: u64,
    /// Longest name component.
    pub name_max: u64,
}

thread_local! {
    /// The owner of inodes this thread makes (see [`Fs::as_creator`]).
    static CREATOR: std::cell::Cell<Option<(u32, u32)>> = const { std::cell::Cell::new(None) };
}

/// Cookie `readdir_ino` gives `.`; `..` has [`COOKIE_DOTDOT`]. Entries have
/// their directory keys as cookies, which are never below
/// [`dir::FIRST_KEY`].
pub const COOKIE_DOT: u64 = 1;
/// Cookie `readdir_ino` gives `..`.
pub const COOKIE_DOTDOT: u64 = 2;

/// One name component as the inode-number calls take it.
enum Name<'a> {
    Dot,
    DotDot,
    Normal(&'a [u8]),
}

fn show(n: &[u8]) -> String {
    String::from_utf8_lossy(n).into_owned()
}

fn parse_name(name: &[u8]) -> Result<Name<'_>> {
    match name {
        b"" => Err(FsError::NotFound("empty name".into())),
        b"." => Ok(Name::Dot),
        b".." => Ok(Name::DotDot),
        n => {
            check_name(n).map_err(|e| match e {
                FsError::NameTooLong(_) => FsError::NameTooLong(show(n)),
                other => other,
            })?;
            Ok(Name::Normal(n))
        }
    }
}

/// A name for a call that makes an entry: `.` and `..` exist (EEXIST).
fn new_name(name: &[u8]) -> Result<&[u8]> {
    match parse_name(name)? {
        Name::Normal(n) => Ok(n),
        _ => Err(FsError::Exists(show(name))),
    }
}

fn set_time(t: SetTime, now: Timestamp) -> Timestamp {
    match t {
        SetTime::Now => now,
        SetTime::At(s, n) => Timestamp {
            sec: s.into(),
            nsec: n.into(),
        },
    }
}

impl FsInner {
    /// Inode `ino` if it exists (ENOENT otherwise: a stale number).
    pub(crate) fn live(&self, tx: &mut Tx<'_>, ino: Ino) -> Result<Arc<Inode>> {
        if let Some(i) = lock(&self.icache).get(&ino) {
            return Ok(i.clone());
        }
        let root = tx.meta.sb.inode_tree;
        if ino == 0 || inode::read_record(tx, &root, ino)?.is_none() {
            return Err(FsError::NotFound(format!("inode {ino}")));
        }
        self.inode_tx(tx, ino)
    }

    /// Directory `ino` (ENOTDIR if it is something else).
    pub(crate) fn live_dir(&self, tx: &mut Tx<'_>, ino: Ino) -> Result<Arc<Inode>> {
        let d = self.live(tx, ino)?;
        if d.kind != FileKind::Dir {
            return Err(FsError::NotDir(format!("inode {ino}")));
        }
        if d.rec().rec.nlink.get() == 0 {
            // Removed while someone still refers to it: no entry can be made.
            return Err(FsError::NotFound(format!("directory {ino} was removed")));
        }
        Ok(d)
    }

    /// The entry `name` of directory `dir`, if any.
    pub(crate) fn entry_in(
        &self,
        tx: &mut Tx<'_>,
        dir: &Arc<Inode>,
        name: &[u8],
    ) -> Result<Option<(dir::Found, Arc<Inode>)>> {
        let root = dir.rec().rec.tree;
        match dir::lookup(tx, dir.ino, &root, name)? {
            Some(f) => {
                let i = self.inode_tx(tx, f.ino)?;
                Ok(Some((f, i)))
            }
            None => Ok(None),
        }
    }

    /// Makes a new inode of `kind` named `name` in `dir` (which the caller
    /// checked has no such name), or with `tmpfile` an unnamed regular file
    /// on the orphan list, and commits.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn make_in(
        &self,
        mut tx: Tx<'_>,
        dir: &Arc<Inode>,
        name: Option<&[u8]>,
        kind: FileKind,
        perm: u32,
        target: Option<&[u8]>,
        rdev: u32,
    ) -> Result<Arc<Inode>> {
        let ino = FsInner::next_ino(&mut tx)?;
        let (uid, mut gid) = CREATOR.with(|c| c.get()).unwrap_or((0, 0));
        let mut perm = perm;
        {
            // A set-group-ID directory gives its group to what is made in
            // it, and its set-group-ID bit to directories, as Linux does.
            let d = &dir.rec().rec;
            if d.mode.get() & libc::S_ISGID != 0 {
                gid = d.gid.get();
                if kind == FileKind::Dir {
                    perm |= libc::S_ISGID;
                }
            }
        }
        let mut rec = inode::new_record(ino, kind, perm, uid, gid, dir.ino);
        if matches!(kind, FileKind::CharDev | FileKind::BlockDev) {
            rec.rdev = rdev.into();
        }
        // A number is never given twice (next_ino only grows); the
        // generation tells a reused number apart should that change: the
        // commit generation of the creating transaction, which only grows.
        rec.generation = (tx.meta.sb.header.generation.get() + 1).into();
        if let Some(t) = target {
            crate::file::write_new_data(&mut tx, ino, &mut rec, t)?;
        }
        let mut recs = Recs::lock(&[dir]);
        match name {
            Some(name) => {
                let d = recs.get(dir.ino)?;
                let mut root = d.tree;
                dir::add(&mut tx, dir.ino, &mut root, name, ino, kind)?;
                d.tree = root;
                let t = inode::now();
                d.mtime = t;
                d.ctime = t;
                if kind == FileKind::Dir {
                    add_link(d)?;
                }
                recs.stage(&mut tx)?;
            }
            None => {
                rec.nlink = 0.into();
                let mut root = tx.meta.sb.orphan_tree;
                orphan_tree().insert(&mut tx, &mut root, ino, ())?;
                tx.meta.sb.orphan_tree = root;
            }
        }
        put_record(&mut tx, &rec)?;
        tx.commit()?;
        recs.install();
        let node = Arc::new(Inode::new(rec, self.loss_gen.clone())?);
        if name.is_none() {
            node.tmpfile.store(true, Ordering::SeqCst);
            // Open from birth: its handle is made under the same lock.
            node.opens.fetch_add(1, Ordering::SeqCst);
        }
        Ok(self.cache_inode(node))
    }

    /// `unlink(dir, name)` (`rmdir` with `dir_only`), committing.
    pub(crate) fn remove_in(
        &self,
        mut tx: Tx<'_>,
        dir: &Arc<Inode>,
        name: &[u8],
        rmdir: bool,
    ) -> Result<()> {
        let n = match parse_name(name)? {
            Name::Normal(n) => n,
            Name::Dot if rmdir => {
                return Err(FsError::Invalid(format!("{}: rmdir of .", show(name))));
            }
            Name::DotDot if rmdir => return Err(FsError::NotEmpty(show(name))),
            _ => return Err(FsError::IsDir(show(name))),
        };
        tx.use_reserve();
        let Some((f, child)) = self.entry_in(&mut tx, dir, n)? else {
            return Err(FsError::NotFound(show(n)));
        };
        match (rmdir, child.kind == FileKind::Dir) {
            (false, true) => return Err(FsError::IsDir(show(n))),
            (true, false) => return Err(FsError::NotDir(show(n))),
            (true, true) if !child.rec().rec.tree.is_empty() => {
                return Err(FsError::NotEmpty(show(n)));
            }
            _ => {}
        }
        let mut recs = Recs::lock(&[dir, &child]);
        let d = recs.get(dir.ino)?;
        let mut root = d.tree;
        dir::remove(&mut tx, dir.ino, &mut root, f.key)?;
        d.tree = root;
        if rmdir {
            d.nlink = d.nlink.get().saturating_sub(1).into();
        }
        d.mtime = inode::now();
        d.ctime = d.mtime;
        let mut c = *recs.get(child.ino)?;
        self.drop_link(&mut tx, &child, &mut c)?;
        *recs.get(child.ino)? = c;
        recs.stage(&mut tx)?;
        tx.commit()?;
        recs.install();
        Ok(())
    }

    /// `link(child, dir, name)`, committing. An unnamed temporary file gets
    /// its first name (and leaves the orphan list).
    pub(crate) fn link_in(
        &self,
        mut tx: Tx<'_>,
        child: &Arc<Inode>,
        dir: &Arc<Inode>,
        name: &[u8],
    ) -> Result<()> {
        if child.kind == FileKind::Dir {
            return Err(FsError::NotPermitted(format!(
                "inode {}: hard link to a directory",
                child.ino
            )));
        }
        let name = new_name(name)?;
        if self.entry_in(&mut tx, dir, name)?.is_some() {
            return Err(FsError::Exists(show(name)));
        }
        let tmp = child.tmpfile.load(Ordering::SeqCst);
        if child.rec().rec.nlink.get() >= LINK_MAX {
            return Err(FsError::TooManyLinks(format!(
                "inode {} has {LINK_MAX} links, the most a file may have",
                child.ino
            )));
        }
        if child.rec().rec.nlink.get() == 0 && !tmp {
            return Err(FsError::NotFound(format!(
                "inode {}: unlinked, it cannot get a name again",
                child.ino
            )));
        }
        let mut recs = Recs::lock(&[dir, child]);
        let d = recs.get(dir.ino)?;
        let mut root = d.tree;
        dir::add(&mut tx, dir.ino, &mut root, name, child.ino, child.kind)?;
        d.tree = root;
        d.mtime = inode::now();
        d.ctime = d.mtime;
        let c = recs.get(child.ino)?;
        let first = c.nlink.get() == 0;
        add_link(c)?;
        c.ctime = inode::now();
        if first {
            c.parent = dir.ino.into();
            let mut root = tx.meta.sb.orphan_tree;
            orphan_tree().remove(&mut tx, &mut root, &child.ino)?;
            tx.meta.sb.orphan_tree = root;
        }
        recs.stage(&mut tx)?;
        tx.commit()?;
        recs.install();
        if first {
            child.tmpfile.store(false, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Fails with EINVAL if directory `moving` is `into` or above it.
    fn check_not_below(&self, tx: &mut Tx<'_>, moving: &Arc<Inode>, into: u64) -> Result<()> {
        if moving.kind != FileKind::Dir {
            return Ok(());
        }
        let mut cur = into;
        for _ in 0..=(1 << 16) {
            if cur == moving.ino {
                return Err(FsError::Invalid(format!(
                    "cannot move directory {} into its own subtree",
                    moving.ino
                )));
            }
            if cur == self.root_ino {
                return Ok(());
            }
            cur = self.inode_tx(tx, cur)?.rec().rec.parent.get();
        }
        Err(FsError::Corrupt(format!(
            "parent pointers above directory {into} loop"
        )))
    }

    /// `rename(sdir, sname, ddir, dname, flags)`, committing.
    pub(crate) fn rename_in(
        &self,
        mut tx: Tx<'_>,
        sdir: &Arc<Inode>,
        sname: &[u8],
        ddir: &Arc<Inode>,
        dname: &[u8],
        flags: RenameFlags,
    ) -> Result<()> {
        if flags.noreplace && flags.exchange {
            return Err(FsError::Invalid(
                "RENAME_NOREPLACE and RENAME_EXCHANGE together".into(),
            ));
        }
        let sname = match parse_name(sname)? {
            Name::Normal(n) => n,
            _ => return Err(FsError::Busy(format!("rename of {}", show(sname)))),
        };
        let dname = match parse_name(dname)? {
            Name::Normal(n) => n,
            _ if flags.noreplace => return Err(FsError::Exists(show(dname))),
            _ => return Err(FsError::Busy(format!("rename onto {}", show(dname)))),
        };
        let Some((sf, src)) = self.entry_in(&mut tx, sdir, sname)? else {
            return Err(FsError::NotFound(show(sname)));
        };
        let dst = self.entry_in(&mut tx, ddir, dname)?;
        if flags.exchange && dst.is_none() {
            return Err(FsError::NotFound(show(dname)));
        }
        if flags.noreplace && dst.is_some() {
            return Err(FsError::Exists(show(dname)));
        }
        if dst.as_ref().is_some_and(|(_, d)| d.ino == src.ino) {
            return Ok(()); // two names of one file: nothing to do
        }
        self.check_not_below(&mut tx, &src, ddir.ino)?;
        if let Some((_, d)) = &dst {
            // The new name may not be above the old one.
            self.check_not_below(&mut tx, d, sdir.ino)
                .map_err(|e| match e {
                    FsError::Invalid(m) if !flags.exchange => FsError::NotEmpty(m),
                    other => other,
                })?;
        }
        if !flags.exchange
            && let Some((_, dst)) = &dst
        {
            match (src.kind == FileKind::Dir, dst.kind == FileKind::Dir) {
                (true, false) => return Err(FsError::NotDir(show(dname))),
                (false, true) => return Err(FsError::IsDir(show(dname))),
                (true, true) if !dst.rec().rec.tree.is_empty() => {
                    return Err(FsError::NotEmpty(show(dname)));
                }
                _ => {}
            }
        }
        let mut list = vec![sdir, ddir, &src];
        if let Some((_, d)) = &dst {
            list.push(d);
        }
        let mut recs = Recs::lock(&list);
        let t = inode::now();
        // Both old names go first (a name keeps its key's slot free).
        {
            let s = recs.get(sdir.ino)?;
            let mut root = s.tree;
            dir::remove(&mut tx, sdir.ino, &mut root, sf.key)?;
            s.tree = root;
            s.mtime = t;
            s.ctime = t;
        }
        if let Some((df, d)) = &dst {
            {
                let dd = recs.get(ddir.ino)?;
                let mut root = dd.tree;
                dir::remove(&mut tx, ddir.ino, &mut root, df.key)?;
                dd.tree = root;
            }
            if flags.exchange {
                // The destination's inode takes the source's name.
                let s = recs.get(sdir.ino)?;
                let mut root = s.tree;
                dir::add(&mut tx, sdir.ino, &mut root, sname, d.ino, d.kind)?;
                s.tree = root;
                let c = recs.get(d.ino)?;
                c.ctime = t;
                if d.kind == FileKind::Dir {
                    c.parent = sdir.ino.into();
                }
            } else {
                if d.kind == FileKind::Dir {
                    let dd = recs.get(ddir.ino)?;
                    dd.nlink = dd.nlink.get().saturating_sub(1).into();
                }
                let mut c = *recs.get(d.ino)?;
                self.drop_link(&mut tx, d, &mut c)?;
                *recs.get(d.ino)? = c;
            }
        }
        {
            let d = recs.get(ddir.ino)?;
            let mut root = d.tree;
            dir::add(&mut tx, ddir.ino, &mut root, dname, src.ino, src.kind)?;
            d.tree = root;
            d.mtime = t;
            d.ctime = t;
        }
        if sdir.ino != ddir.ino {
            // A directory moving between parents moves its `..` link.
            let moved_dirs_in = usize::from(src.kind == FileKind::Dir);
            let moved_dirs_out = usize::from(
                flags.exchange && dst.as_ref().is_some_and(|(_, d)| d.kind == FileKind::Dir),
            );
            for _ in 0..moved_dirs_in {
                let s = recs.get(sdir.ino)?;
                s.nlink = s.nlink.get().saturating_sub(1).into();
                add_link(recs.get(ddir.ino)?)?;
            }
            for _ in 0..moved_dirs_out {
                let d = recs.get(ddir.ino)?;
                d.nlink = d.nlink.get().saturating_sub(1).into();
                add_link(recs.get(sdir.ino)?)?;
            }
        }
        let c = recs.get(src.ino)?;
        c.ctime = t;
        if src.kind == FileKind::Dir {
            c.parent = ddir.ino.into();
        }
        recs.stage(&mut tx)?;
        tx.commit()?;
        recs.install();
        Ok(())
    }

    /// `setattr(node, attrs)` without the size, committing.
    pub(crate) fn setattr_in(&self, mut tx: Tx<'_>, node: &Arc<Inode>, a: &SetAttr) -> Result<()> {
        check_times(a)?;
        let mut recs = Recs::lock(&[node]);
        let r = recs.get(node.ino)?;
        apply_attrs(r, node.kind, a);
        recs.stage(&mut tx)?;
        tx.commit()?;
        recs.install();
        Ok(())
    }
}

/// EINVAL for a time in `a` whose nanoseconds are out of range.
fn check_times(a: &SetAttr) -> Result<()> {
    for t in [a.atime, a.mtime, a.ctime].into_iter().flatten() {
        if let SetTime::At(_, n) = t
            && n >= 1_000_000_000
        {
            return Err(FsError::Invalid(format!("nanoseconds {n} out of range")));
        }
    }
    Ok(())
}

/// Applies the attributes of `a` but the size to record `r` of a `kind`.
fn apply_attrs(r: &mut InodeRecord, kind: FileKind, a: &SetAttr) {
    let now = inode::now();
    if let Some(m) = a.mode {
        r.mode = ((r.mode.get() & !0o7777) | (m & 0o7777)).into();
    }
    if a.uid.is_some() || a.gid.is_some() {
        if let Some(u) = a.uid {
            r.uid = u.into();
        }
        if let Some(g) = a.gid {
            r.gid = g.into();
        }
        // A change of owner drops set-user-ID, and set-group-ID of a
        // group-executable file, as Linux does (directories keep both).
        if kind != FileKind::Dir && a.mode.is_none() {
            let m = r.mode.get();
            let mut drop = 0o4000;
            if m & 0o010 != 0 {
                drop |= 0o2000;
            }
            r.mode = (m & !drop).into();
        }
    }
    if let Some(t) = a.atime {
        r.atime = set_time(t, now);
    }
    if let Some(t) = a.mtime {
        r.mtime = set_time(t, now);
    }
    r.ctime = a.ctime.map_or(now, |t| set_time(t, now));
}

/// An inode held by [`Fs::hold_ino`]: counts as an open of it until
/// dropped.
pub struct InoHold {
    fs: Arc<FsInner>,
    node: Arc<Inode>,
}

impl InoHold {
    /// The inode held.
    pub fn ino(&self) -> Ino {
        self.node.ino
    }
}

impl std::fmt::Debug for InoHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InoHold")
            .field("ino", &self.node.ino)
            .finish()
    }
}

impl Drop for InoHold {
    fn drop(&mut self) {
        // An error here leaves the inode on the orphan list; mount frees it.
        let _ = self.fs.release(&self.node);
    }
}

impl Fs {
    /// Runs `f` with every inode this thread makes in it (create, mkdir,
    /// mknod, symlink, tmpfile) owned by `uid` and group `gid` from birth,
    /// in the same transaction, as a FUSE daemon makes them for its caller
    /// (otherwise they belong to 0:0). A set-group-ID directory still gives
    /// its group.
    pub fn as_creator<R>(uid: u32, gid: u32, f: impl FnOnce() -> R) -> R {
        struct Restore(Option<(u32, u32)>);
        impl Drop for Restore {
            fn drop(&mut self) {
                CREATOR.with(|c| c.set(self.0));
            }
        }
        let _restore = Restore(CREATOR.with(|c| c.replace(Some((uid, gid)))));
        f()
    }

    /// The root directory's inode number.
    pub fn root_ino(&self) -> Ino {
        self.inner.root_ino
    }

    fn with_tx<R>(&self, f: impl FnOnce(&FsInner, Tx<'_>) -> Result<R>) -> Result<R> {
        let inner = &*self.inner;
        let mut meta = lock(&inner.meta);
        let tx = Tx::begin(&*inner.dev, &mut meta)?;
        f(inner, tx)
    }

    /// The attributes of the inode `name` names in directory `dir` (`.` is
    /// `dir`, `..` its parent).
    pub fn lookup(&self, dir: Ino, name: impl AsRef<[u8]>) -> Result<Stat> {
        // Reads of the committed state: no transaction, no commit, no
        // lock; the entry and its inode from one snapshot.
        if let Some(r) = self.inner.lockless(|r| {
            let (ino, _) = r.lookup(dir, name.as_ref())?;
            let (rec, _) = r.existing(ino)?;
            r.stat(&rec)
        }) {
            return r;
        }
        let (ino, _) = self.inner.lookup_ino(dir, name.as_ref())?;
        self.inner.getattr_ino(ino)
    }

    /// The attributes of inode `ino` (ENOENT if it does not exist).
    pub fn getattr(&self, ino: Ino) -> Result<Stat> {
        self.inner.getattr_ino(ino)
    }

    /// The attributes of the inode a file handle names: inode `ino` made
    /// with generation `generation` ([`Stat::generation`]). ESTALE when no
    /// inode has that number any more, or the number now belongs to another
    /// inode (another generation), as a handle an NFS server or a FUSE
    /// daemon gave out before the file was removed.
    pub fn getattr_gen(&self, ino: Ino, generation: u64) -> Result<Stat> {
        let st = self.inner.getattr_ino(ino).map_err(|e| stale(e, ino))?;
        if st.generation != generation {
            return Err(stale_gen(ino, generation, st.generation));
        }
        Ok(st)
    }

    /// Changes attributes of inode `ino` as `chmod`, `chown`, `truncate` and
    /// `utimensat` do; returns the new attributes. A size change of anything
    /// but a regular file is EISDIR (directory) or EINVAL.
    pub fn setattr(&self, ino: Ino, a: &SetAttr) -> Result<Stat> {
        check_times(a)?;
        if let Some(size) = a.size {
            let f = self
                .open_ino(ino, &OpenOptions::write_only())
                .map_err(|e| match e {
                    FsError::Loop(m) => {
                        FsError::Invalid(format!("{m}: size of a non-regular file"))
                    }
                    other => other,
                })?;
            // The size and the other attributes are one transaction.
            let kind = f.inode().kind;
            f.set_len_and(size, |r| apply_attrs(r, kind, a))?;
        } else {
            self.with_tx(|inner, mut tx| {
                let n = inner.live(&mut tx, ino)?;
                inner.setattr_in(tx, &n, a)
            })?;
        }
        self.getattr(ino)
    }

    /// Usage of the whole file system.
    pub fn statfs(&self) -> StatFs {
        // The newest committed state (no lock).
        let (sb, reserve) = self.inner.published.with(|s| (s.sb, s.reserve));
        let sb = &sb;
        let free = sb.free_blocks.get();
        let avail = free.saturating_sub(reserve);
        // A new inode needs at most one inode-tree block of 16 records'
        // room, so free blocks bound new inodes, as the number space does.
        let numbers = crate::counters::COUNTER_LIMIT.saturating_sub(sb.next_ino.get());
        let free_files = numbers.min(avail.saturating_mul(
            (daxfs_format::BLOCK_SIZE / std::mem::size_of::<daxfs_format::records::InodeRecord>())
                as u64,
        ));
        StatFs {
            block_size: daxfs_format::BLOCK_SIZE_U64,
            blocks: sb.total_blocks.get(),
            free_blocks: free,
            available_blocks: avail,
            files: sb.inodes.get().saturating_add(free_files),
            free_files,
            name_max: NAME_MAX as u64,
        }
    }

    /// Opens inode `ino` (a regular file, or a directory read-only).
    pub fn open_ino(&self, ino: Ino, opts: &OpenOptions) -> Result<File> {
        self.open_ino_as(ino, None, opts)
    }

    /// Opens the inode a file handle names, as [`Fs::open_ino`]: inode
    /// `ino` of generation `generation`, ESTALE when it is gone or its
    /// number belongs to another inode (see [`Fs::getattr_gen`]). The check
    /// and the open are one hold of the metadata lock.
    pub fn open_ino_gen(&self, ino: Ino, generation: u64, opts: &OpenOptions) -> Result<File> {
        self.open_ino_as(ino, Some(generation), opts)
    }

    fn open_ino_as(&self, ino: Ino, generation: Option<u64>, opts: &OpenOptions) -> Result<File> {
        if !opts.read && !opts.write {
            return Err(FsError::Invalid("open needs read or write access".into()));
        }
        let node = self.with_tx(|inner, mut tx| {
            let n = match (inner.live(&mut tx, ino), generation) {
                (Ok(n), Some(g)) if n.rec().rec.generation.get() != g => {
                    return Err(stale_gen(ino, g, n.rec().rec.generation.get()));
                }
                (Ok(n), _) => n,
                (Err(e), Some(_)) => return Err(stale(e, ino)),
                (Err(e), None) => return Err(e),
            };
            match n.kind {
                FileKind::Dir if opts.write => Err(FsError::IsDir(format!("inode {ino}"))),
                FileKind::Symlink => Err(FsError::Loop(format!("inode {ino}: symbolic link"))),
                k if k.is_special() => Err(special_open(k)),
                _ => {
                    n.opens.fetch_add(1, Ordering::SeqCst);
                    Ok(n)
                }
            }
        })?;
        let file = File::new(self.inner.clone(), node, opts.clone());
        if opts.truncate && opts.write {
            file.set_len(0)?;
        }
        Ok(file)
    }

    /// Holds inode `ino` of any kind as an open does, without a file
    /// handle: while the [`InoHold`] lives, an inode whose last name is
    /// removed stays (nlink 0, on the orphan list, reachable by number);
    /// dropping the last hold or handle frees it, and after a crash the next
    /// mount does. A FUSE daemon holds each inode the kernel has looked up
    /// until the kernel forgets it. ENOENT when `ino` does not exist; ESTALE
    /// when `generation` is given and the number now names another inode.
    pub fn hold_ino(&self, ino: Ino, generation: Option<u64>) -> Result<InoHold> {
        let node = self.with_tx(|inner, mut tx| {
            let n = match (inner.live(&mut tx, ino), generation) {
                (Ok(n), Some(g)) if n.rec().rec.generation.get() != g => {
                    return Err(stale_gen(ino, g, n.rec().rec.generation.get()));
                }
                (Ok(n), _) => n,
                (Err(e), Some(_)) => return Err(stale(e, ino)),
                (Err(e), None) => return Err(e),
            };
            n.opens.fetch_add(1, Ordering::SeqCst);
            Ok(n)
        })?;
        Ok(InoHold {
            fs: self.inner.clone(),
            node,
        })
    }

    /// Creates and opens, or opens, regular file `name` in directory `dir`
    /// as `openat(O_CREAT)` does: atomically (one lookup and create under
    /// the metadata lock), EEXIST with `opts.excl` when it exists, and
    /// emptied with `opts.truncate`. `perm`: the new file's permission bits.
    pub fn create_at(
        &self,
        dir: Ino,
        name: impl AsRef<[u8]>,
        perm: u32,
        opts: &OpenOptions,
    ) -> Result<File> {
        if !opts.read && !opts.write {
            return Err(FsError::Invalid("open needs read or write access".into()));
        }
        let name = name.as_ref();
        let node = self.with_tx(|inner, mut tx| {
            let d = inner.live_dir(&mut tx, dir)?;
            let n = match parse_name(name)? {
                Name::Normal(n) => n,
                _ => return Err(FsError::IsDir(show(name))),
            };
            match inner.entry_in(&mut tx, &d, n)? {
                Some(_) if opts.excl => Err(FsError::Exists(show(n))),
                Some((_, i)) => {
                    match i.kind {
                        FileKind::Dir if opts.write => {
                            return Err(FsError::IsDir(show(n)));
                        }
                        FileKind::Symlink => return Err(FsError::Loop(show(n))),
                        k if k.is_special() => return Err(special_open(k)),
                        _ => {}
                    }
                    i.opens.fetch_add(1, Ordering::SeqCst);
                    Ok(i)
                }
                None => {
                    let i = inner.make_in(tx, &d, Some(n), FileKind::File, perm, None, 0)?;
                    i.opens.fetch_add(1, Ordering::SeqCst);
                    Ok(i)
                }
            }
        })?;
        let file = File::new(self.inner.clone(), node, opts.clone());
        if opts.truncate && opts.write && file.inode().kind == FileKind::File {
            file.set_len(0)?;
        }
        Ok(file)
    }

    /// An unnamed regular file in directory `dir` (O_TMPFILE), opened read-
    /// write: freed at its last close unless `link_at` gives it a name.
    pub fn tmpfile_at(&self, dir: Ino, perm: u32) -> Result<File> {
        let node = self.with_tx(|inner, mut tx| {
            let d = inner.live_dir(&mut tx, dir)?;
            inner.make_in(tx, &d, None, FileKind::File, perm, None, 0)
        })?;
        Ok(File::new(
            self.inner.clone(),
            node,
            OpenOptions::read_write(),
        ))
    }

    fn make_at(
        &self,
        dir: Ino,
        name: &[u8],
        kind: FileKind,
        perm: u32,
        target: Option<&[u8]>,
        rdev: u32,
    ) -> Result<Stat> {
        let node = self.with_tx(|inner, mut tx| {
            let d = inner.live_dir(&mut tx, dir)?;
            let n = new_name(name)?;
            if inner.entry_in(&mut tx, &d, n)?.is_some() {
                return Err(FsError::Exists(show(n)));
            }
            inner.make_in(tx, &d, Some(n), kind, perm, target, rdev)
        })?;
        Ok(Stat::of(&node.rec().rec))
    }

    /// Makes directory `name` in `dir`.
    pub fn mkdir_at(&self, dir: Ino, name: impl AsRef<[u8]>, perm: u32) -> Result<Stat> {
        self.make_at(dir, name.as_ref(), FileKind::Dir, perm, None, 0)
    }

    /// Makes symbolic link `name` in `dir` pointing at `target`.
    pub fn symlink_at(
        &self,
        target: impl AsRef<[u8]>,
        dir: Ino,
        name: impl AsRef<[u8]>,
    ) -> Result<Stat> {
        let t = target.as_ref();
        check_target(t)?;
        self.make_at(dir, name.as_ref(), FileKind::Symlink, 0o777, Some(t), 0)
    }

    /// Makes `name` in `dir` as `mknod` does: the type bits of `mode` ask
    /// for a FIFO, a socket, a character or block device (whose number is
    /// `rdev`, see [`encode_dev`]) or, with no type or S_IFREG, a regular
    /// file. A directory is EPERM (use `mkdir_at`), a symlink or an unknown
    /// type EINVAL.
    pub fn mknod_at(&self, dir: Ino, name: impl AsRef<[u8]>, mode: u32, rdev: u32) -> Result<Stat> {
        let kind = mknod_kind(mode)?;
        self.make_at(dir, name.as_ref(), kind, mode & 0o7777, None, rdev)
    }

    /// The target of symbolic link `ino` (EINVAL for anything else).
    pub fn readlink_ino(&self, ino: Ino) -> Result<Vec<u8>> {
        self.inner.readlink_ino(ino)
    }

    /// Gives inode `ino` the new name `name` in `dir` (EPERM for a
    /// directory); an unnamed temporary file gets its first name.
    pub fn link_at(&self, ino: Ino, dir: Ino, name: impl AsRef<[u8]>) -> Result<Stat> {
        self.with_tx(|inner, mut tx| {
            let child = inner.live(&mut tx, ino)?;
            let d = inner.live_dir(&mut tx, dir)?;
            inner.link_in(tx, &child, &d, name.as_ref())?;
            Ok(Stat::of(&child.rec().rec))
        })
    }

    /// Removes name `name` (not a directory) from `dir`.
    pub fn unlink_at(&self, dir: Ino, name: impl AsRef<[u8]>) -> Result<()> {
        self.with_tx(|inner, mut tx| {
            let d = inner.live_dir(&mut tx, dir)?;
            inner.remove_in(tx, &d, name.as_ref(), false)
        })
    }

    /// Removes empty directory `name` from `dir`.
    pub fn rmdir_at(&self, dir: Ino, name: impl AsRef<[u8]>) -> Result<()> {
        self.with_tx(|inner, mut tx| {
            let d = inner.live_dir(&mut tx, dir)?;
            inner.remove_in(tx, &d, name.as_ref(), true)
        })
    }

    /// Renames `sname` in `sdir` to `dname` in `ddir` as `renameat2` does.
    pub fn rename_at(
        &self,
        sdir: Ino,
        sname: impl AsRef<[u8]>,
        ddir: Ino,
        dname: impl AsRef<[u8]>,
        flags: RenameFlags,
    ) -> Result<()> {
        self.with_tx(|inner, mut tx| {
            let s = inner.live_dir(&mut tx, sdir)?;
            let d = inner.live_dir(&mut tx, ddir)?;
            inner.rename_in(tx, &s, sname.as_ref(), &d, dname.as_ref(), flags)
        })
    }

    /// Up to `max` entries of directory `dir` after `cookie` (0: from the
    /// start), `.` and `..` first. An entry's cookie is its directory key,
    /// which does not change while it exists: listing on from a cookie
    /// while the directory changes returns no entry twice and skips none
    /// that existed throughout.
    pub fn readdir_ino(&self, dir: Ino, cookie: u64, max: usize) -> Result<Vec<DirEntry>> {
        if let Some(r) = self.inner.lockless(|r| {
            let d = r.dir(dir)?;
            let mut out = vec![];
            if cookie < COOKIE_DOT && out.len() < max {
                out.push(DirEntry {
                    name: b".".to_vec(),
                    ino: dir,
                    kind: FileKind::Dir,
                    cookie: COOKIE_DOT,
                });
            }
            if cookie < COOKIE_DOTDOT && out.len() < max {
                out.push(DirEntry {
                    name: b"..".to_vec(),
                    ino: d.parent.get(),
                    kind: FileKind::Dir,
                    cookie: COOKIE_DOTDOT,
                });
            }
            if out.len() < max {
                let after = cookie.max(dir::FIRST_KEY - 1);
                out.extend(dir::list(&mut r.s, dir, &d.tree, after, max - out.len())?);
            }
            Ok(out)
        }) {
            return r;
        }
        self.inner.read_only(|inner, s, sb| {
            let d = inner.dir_ro(s, sb, dir)?;
            let mut out = vec![];
            if cookie < COOKIE_DOT && out.len() < max {
                out.push(DirEntry {
                    name: b".".to_vec(),
                    ino: d.ino,
                    kind: FileKind::Dir,
                    cookie: COOKIE_DOT,
                });
            }
            if cookie < COOKIE_DOTDOT && out.len() < max {
                out.push(DirEntry {
                    name: b"..".to_vec(),
                    ino: d.rec().rec.parent.get(),
                    kind: FileKind::Dir,
                    cookie: COOKIE_DOTDOT,
                });
            }
            if out.len() < max {
                let root = d.rec().rec.tree;
                let after = cookie.max(dir::FIRST_KEY - 1);
                out.extend(dir::list(s, d.ino, &root, after, max - out.len())?);
            }
            Ok(out)
        })
    }
}

/// ENOENT of inode `ino` as a stale file handle.
fn stale(e: FsError, ino: Ino) -> FsError {
    match e {
        FsError::NotFound(_) => FsError::Stale(format!("inode {ino} no longer exists")),
        other => other,
    }
}

fn stale_gen(ino: Ino, want: u64, have: u64) -> FsError {
    FsError::Stale(format!(
        "inode {ino} of generation {want} no longer exists (the number is now generation {have}'s)"
    ))
}

/// Opening a FIFO, socket or device is the kernel's job, not daxfs's.
pub(crate) fn special_open(k: FileKind) -> FsError {
    FsError::NotSupported(format!(
        "a {} has no data to open in daxfs (the kernel opens it)",
        k.name()
    ))
}

/// The kind `mknod` makes for `mode`'s type bits.
pub(crate) fn mknod_kind(mode: u32) -> Result<FileKind> {
    use daxfs_format::records::mode as m;
    match mode & m::S_IFMT {
        0 | m::S_IFREG => Ok(FileKind::File),
        m::S_IFDIR => Err(FsError::NotPermitted(
            "mknod of a directory (use mkdir)".into(),
        )),
        t => match FileKind::of_mode(t) {
            Some(k) if k.is_special() => Ok(k),
            _ => Err(FsError::Invalid(format!("mknod of file type {t:#o}"))),
        },
    }
}

/// A device number from major and minor, as Linux's `new_encode_dev`
/// packs them into 32 bits (EINVAL past 12 bits of major, 20 of minor).
pub fn encode_dev(major: u32, minor: u32) -> Result<u32> {
    if major >= 1 << 12 || minor >= 1 << 20 {
        return Err(FsError::Invalid(format!(
            "device number {major}:{minor} does not fit 32 bits"
        )));
    }
    Ok((minor & 0xff) | (major << 8) | ((minor & !0xff) << 12))
}

/// Major and minor of a device number made by [`encode_dev`].
pub fn decode_dev(rdev: u32) -> (u32, u32) {
    (
        (rdev >> 8) & 0xfff,
        (rdev & 0xff) | ((rdev >> 12) & 0xfff00),
    )
}

/// Checks a symbolic-link target.
pub(crate) fn check_target(t: &[u8]) -> Result<()> {
    if t.is_empty() {
        return Err(FsError::NotFound("empty symlink target".into()));
    }
    if t.len() > SYMLINK_MAX || t.contains(&0) {
        return Err(FsError::NameTooLong(format!(
            "symlink target of {} bytes",
            t.len()
        )));
    }
    Ok(())
}
