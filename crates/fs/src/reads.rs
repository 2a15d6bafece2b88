//! Reads that change nothing: path resolution, `lookup`, `getattr`,
//! `readdir` and `readlink`, by path or by inode number.
//!
//! They read the committed state (the superblock in memory and the trees
//! through the node cache, which already holds the lazy layer's nodes and
//! the reverse map's pending records) under the metadata lock, held only
//! for the read, and never start a transaction: no repair is run, no lazy
//! transaction is flushed, nothing is committed. Since every transaction
//! holds the metadata lock from its first read to its install, a read sees
//! the state before or after each transaction, never a mix.
//!
//! A node read found bad is repaired by the next transaction, as with any
//! read outside one (the replica store queues it).
use crate::dir::{self, DirEntry, components};
use crate::error::{FsError, Result};
use crate::fs::{FsInner, lock};
use crate::inode::{FileKind, Inode};
use crate::namespace::{MAX_SYMLINKS, SYMLINK_MAX, Stat};
use daxfs_btree::NodeStore;
use daxfs_format::Superblock;
use daxfs_format::records::TreeRoot;
use std::sync::Arc;

fn show(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

/// The path can only name a directory: it ends with a slash, `.` or `..`.
pub(crate) fn wants_dir(p: &[u8]) -> bool {
    p.last() == Some(&b'/') || matches!(p.rsplit(|&c| c == b'/').next(), Some(b".") | Some(b".."))
}

/// Reads a symbolic link's target through `s`.
pub(crate) fn link_target(
    fs: &FsInner,
    s: &mut dyn NodeStore,
    ino: &Arc<Inode>,
) -> Result<Vec<u8>> {
    let rec = ino.rec().rec;
    let size = rec.size.get() as usize;
    if size > SYMLINK_MAX {
        return Err(FsError::Corrupt(format!(
            "symlink inode {}: target of {size} bytes",
            ino.ino
        )));
    }
    let map = crate::extents::ExtentMap::load(s, ino.ino, &rec)?;
    let mut buf = vec![0u8; size];
    crate::file::read_mapped(&*fs.dev, &map, 0, &mut buf)?;
    Ok(buf)
}

/// Resolves `path` from directory `start` through `s`, whose inode tree is
/// `iroot`. `follow_last`: follow a symlink in the last component; every
/// intermediate symlink is followed, up to `budget` in all.
pub(crate) fn resolve_from(
    fs: &FsInner,
    s: &mut dyn NodeStore,
    iroot: &TreeRoot,
    start: u64,
    path: &[u8],
    follow_last: bool,
    budget: &mut usize,
) -> Result<Arc<Inode>> {
    let first = if path.first() == Some(&b'/') {
        fs.root_ino
    } else {
        start
    };
    let mut cur = fs.inode(s, iroot, first)?;
    let comps = components(path);
    let must_be_dir = wants_dir(path);
    for (i, c) in comps.iter().enumerate() {
        let last = i + 1 == comps.len();
        if cur.kind != FileKind::Dir {
            return Err(FsError::NotDir(show(path)));
        }
        if *c == b".." {
            let parent = cur.rec().rec.parent.get();
            cur = fs.inode(s, iroot, parent)?;
            continue;
        }
        if c.len() > daxfs_format::records::NAME_MAX {
            return Err(FsError::NameTooLong(show(path)));
        }
        let root = cur.rec().rec.tree;
        let Some(f) = dir::lookup(s, cur.ino, &root, c)? else {
            return Err(FsError::NotFound(show(path)));
        };
        let next = fs.inode(s, iroot, f.ino)?;
        if next.kind == FileKind::Symlink && (!last || follow_last || must_be_dir) {
            if *budget == 0 {
                return Err(FsError::Loop(show(path)));
            }
            *budget -= 1;
            let target = link_target(fs, s, &next)?;
            cur = resolve_from(fs, s, iroot, cur.ino, &target, true, budget)?;
        } else {
            cur = next;
        }
    }
    if must_be_dir && cur.kind != FileKind::Dir {
        return Err(FsError::NotDir(show(path)));
    }
    Ok(cur)
}

/// An inode's attributes, with the bytes it lost to media errors.
pub(crate) fn stat_of(s: &mut dyn NodeStore, sb: &Superblock, node: &Inode) -> Result<Stat> {
    let mut st = Stat::of(&node.rec().rec);
    let root = sb.loss_tree;
    if !root.is_empty() {
        st.lost_bytes = crate::media::losses_of(s, &root, node.ino)?
            .values()
            .sum::<u64>()
            * daxfs_format::BLOCK_SIZE_U64;
    }
    Ok(st)
}

impl FsInner {
    /// Runs `f` on the committed state: the superblock and a read-only
    /// store through the node cache, under the metadata lock, without a
    /// transaction.
    pub(crate) fn read_only<R>(
        &self,
        f: impl FnOnce(&FsInner, &mut dyn NodeStore, &Superblock) -> Result<R>,
    ) -> Result<R> {
        let mut meta = lock(&self.meta);
        let sb = meta.sb;
        let mut s = self.cached_reader(&mut meta);
        let r = f(self, &mut s, &sb);
        drop(s);
        // A node the read found bad (and read from its replica) is rebuilt
        // now, not left for the next change: this costs a lock and an
        // empty check when nothing was found, fences only when something was.
        crate::replica::run_pending(&*self.dev, &mut meta);
        r
    }

    /// Resolves `path` in the committed state (see [`FsInner::read_only`]).
    pub(crate) fn resolve_ro(
        &self,
        s: &mut dyn NodeStore,
        sb: &Superblock,
        path: &[u8],
        follow_last: bool,
    ) -> Result<Arc<Inode>> {
        let mut budget = MAX_SYMLINKS;
        let iroot = sb.inode_tree;
        resolve_from(
            self,
            s,
            &iroot,
            self.root_ino,
            path,
            follow_last,
            &mut budget,
        )
    }
}

// The reads by inode number, for the inode-number API.
#[cfg_attr(not(test), allow(dead_code))]
impl FsInner {
    /// The directory `dir`, or ENOTDIR.
    pub(crate) fn dir_ro(
        &self,
        s: &mut dyn NodeStore,
        sb: &Superblock,
        dir: u64,
    ) -> Result<Arc<Inode>> {
        let d = self.inode(s, &sb.inode_tree, dir)?;
        if d.kind != FileKind::Dir {
            return Err(FsError::NotDir(format!("inode {dir}")));
        }
        Ok(d)
    }

    /// The entry `name` of directory `dir`: its inode number and kind
    /// (ENOENT when there is none, ENOTDIR when `dir` is no directory).
    /// `.` and `..` are the directory itself and its parent.
    pub(crate) fn lookup_ino(&self, dir: u64, name: &[u8]) -> Result<(u64, FileKind)> {
        if let Some(r) = self.lockless(|r| r.lookup(dir, name)) {
            return r;
        }
        self.read_only(|fs, s, sb| {
            let d = fs.dir_ro(s, sb, dir)?;
            match name {
                b"." => return Ok((d.ino, FileKind::Dir)),
                b".." => return Ok((d.rec().rec.parent.get(), FileKind::Dir)),
                _ => {}
            }
            if name.is_empty() {
                // As Linux's lookup of an empty name.
                return Err(FsError::NotFound("empty name".into()));
            }
            dir::check_name(name)?;
            let root = d.rec().rec.tree;
            match dir::lookup(s, d.ino, &root, name)? {
                Some(f) => Ok((f.ino, f.kind)),
                None => Err(FsError::NotFound(show(name))),
            }
        })
    }

    /// The attributes of inode `ino` (ENOENT when it does not exist).
    pub(crate) fn getattr_ino(&self, ino: u64) -> Result<Stat> {
        if let Some(r) = self.lockless(|r| {
            let (rec, _) = r.existing(ino)?;
            r.stat(&rec)
        }) {
            return r;
        }
        self.read_only(|fs, s, sb| {
            let node = fs.existing_inode(s, sb, ino)?;
            stat_of(s, sb, &node)
        })
    }

    /// Up to `max` entries of directory `dir` after the one whose cookie is
    /// `cookie` (0: from the start), without `.` and `..`.
    pub(crate) fn readdir_ino(&self, dir: u64, cookie: u64, max: usize) -> Result<Vec<DirEntry>> {
        if let Some(r) = self.lockless(|r| {
            let d = r.dir(dir)?;
            dir::list(&mut r.s, dir, &d.tree, cookie, max)
        }) {
            return r;
        }
        self.read_only(|fs, s, sb| {
            let d = fs.dir_ro(s, sb, dir)?;
            let root = d.rec().rec.tree;
            dir::list(s, d.ino, &root, cookie, max)
        })
    }

    /// The target of symbolic link `ino` (EINVAL when it is none).
    pub(crate) fn readlink_ino(&self, ino: u64) -> Result<Vec<u8>> {
        if let Some(r) = self.lockless(|r| {
            let (rec, kind) = r.existing(ino)?;
            if kind != FileKind::Symlink {
                return Err(FsError::Invalid(format!(
                    "inode {ino}: not a symbolic link"
                )));
            }
            r.link_target(&rec)
        }) {
            return r;
        }
        self.read_only(|fs, s, sb| {
            let node = fs.existing_inode(s, sb, ino)?;
            if node.kind != FileKind::Symlink {
                return Err(FsError::Invalid(format!(
                    "inode {ino}: not a symbolic link"
                )));
            }
            link_target(fs, s, &node)
        })
    }

    /// Inode `ino` when it exists (in memory or in the inode tree).
    fn existing_inode(
        &self,
        s: &mut dyn NodeStore,
        sb: &Superblock,
        ino: u64,
    ) -> Result<Arc<Inode>> {
        if let Some(i) = lock(&self.icache).get(&ino) {
            return Ok(i.clone());
        }
        if ino == 0 || crate::inode::read_record(s, &sb.inode_tree, ino)?.is_none() {
            return Err(FsError::NotFound(format!("inode {ino}")));
        }
        self.inode(s, &sb.inode_tree, ino)
    }
}

#[cfg(test)]
mod tests {
    use crate::namespace::Recs;
    use crate::{FileKind, FsError};
    use daxfs_device::MemDevice;
    use std::sync::Arc;

    fn fs() -> crate::Fs {
        let dev = Arc::new(MemDevice::new(8 << 20));
        crate::Fs::mkfs(dev.clone(), &Default::default()).unwrap();
        crate::Fs::mount(dev, &Default::default()).unwrap()
    }

    #[test]
    fn reads_by_inode_number() {
        let fs = fs();
        fs.mkdir("/d", 0o750).unwrap();
        drop(fs.create("/d/f").unwrap());
        fs.symlink("f", "/d/l").unwrap();
        let inner = &*fs.inner;
        let root = inner.root_ino;
        let (d, kind) = inner.lookup_ino(root, b"d").unwrap();
        assert_eq!(kind, FileKind::Dir);
        assert_eq!(inner.lookup_ino(d, b"..").unwrap(), (root, FileKind::Dir));
        assert_eq!(inner.lookup_ino(d, b".").unwrap(), (d, FileKind::Dir));
        let (f, _) = inner.lookup_ino(d, b"f").unwrap();
        let (l, lk) = inner.lookup_ino(d, b"l").unwrap();
        assert_eq!(lk, FileKind::Symlink);
        assert!(matches!(
            inner.lookup_ino(d, b"none"),
            Err(FsError::NotFound(_))
        ));
        assert!(matches!(inner.lookup_ino(f, b"x"), Err(FsError::NotDir(_))));
        assert_eq!(inner.getattr_ino(d).unwrap().perm, 0o750);
        assert_eq!(inner.getattr_ino(f).unwrap(), fs.stat("/d/f").unwrap());
        assert!(matches!(inner.getattr_ino(9999), Err(FsError::NotFound(_))));
        assert!(matches!(inner.getattr_ino(0), Err(FsError::NotFound(_))));
        let all = inner.readdir_ino(d, 0, usize::MAX).unwrap();
        assert_eq!(all.len(), 2);
        let rest = inner.readdir_ino(d, all[0].cookie, 10).unwrap();
        assert_eq!(rest, all[1..]);
        assert_eq!(inner.readlink_ino(l).unwrap(), b"f");
        assert!(matches!(inner.readlink_ino(f), Err(FsError::Invalid(_))));
        fs.unlink("/d/f").unwrap();
        assert!(matches!(inner.getattr_ino(f), Err(FsError::NotFound(_))));
    }

    /// Asking a record set for an inode it does not hold is an error, not
    /// the first inode's record.
    #[test]
    fn recs_get_refuses_an_inode_not_locked() {
        let fs = fs();
        drop(fs.create("/f").unwrap());
        let (f, _) = fs.inner.lookup_ino(fs.inner.root_ino, b"f").unwrap();
        let node = fs.inner.icache.lock().unwrap().get(&f).cloned().unwrap();
        let mut recs = Recs::lock(&[&node]);
        assert_eq!(recs.get(f).unwrap().ino.get(), f);
        assert!(matches!(recs.get(f + 1), Err(FsError::Corrupt(_))));
    }
}
