//! Extended attributes: one tree for the whole file system, rooted in the
//! superblock (`xattr_tree`), keyed by `(inode, hash32(name) << 32 | seq,
//! part)`.
//!
//! An attribute is a head record (part 0: its name and first 248 value
//! bytes) and, for a value longer than that, parts `1..` of 512 value bytes
//! each (see [`XattrRecord`]): an attribute of up to 248 bytes is one
//! record, a 64 KiB one 129. The tree's nodes are metadata like every other
//! tree's: replicas, reverse-map records (owner: the extended-attribute
//! tree), fsck. Each set or removal is one transaction. An inode's
//! attributes are freed with it.
//!
//! Names are whole (`user.x`), 1..=255 bytes, in the `user.`, `trusted.`
//! and `security.` namespaces; values up to 64 KiB. Errors follow Linux
//! (fs/xattr.c): ERANGE for an empty name or one over 255 bytes, E2BIG
//! for a value over 64 KiB, EINVAL for unknown flags or a namespace prefix
//! with nothing after it, EOPNOTSUPP for another namespace, ENODATA for a
//! missing attribute (and for `XATTR_REPLACE` of one), EEXIST for
//! `XATTR_CREATE` of an existing one, ERANGE for a buffer too small, and
//! `user.` attributes only on regular files and directories (EPERM to set
//! or remove one elsewhere, ENODATA to read one). There is no permission
//! model for `trusted.` and `security.`: whoever mounts decides.
use crate::error::{FsError, Result};
use crate::fs::{Fs, FsInner, lock};
use crate::inode::{FileKind, Inode};
use crate::namespace::Recs;
use crate::tx::Tx;
use daxfs_btree::{BTree, NodeStore};
use daxfs_format::BlockKind;
use daxfs_format::records::{
    TreeRoot, XATTR_HEAD_BYTES, XATTR_NAME_MAX, XATTR_PART_BYTES, XATTR_SIZE_MAX, XattrRecord,
};
use std::ops::ControlFlow;
use std::sync::Arc;
use zerocopy::FromZeros;

/// Fail if the attribute exists (Linux's value).
pub const XATTR_CREATE: u32 = 1;
/// Fail if the attribute does not exist (Linux's value).
pub const XATTR_REPLACE: u32 = 2;
/// Largest list of names `listxattr` returns (Linux's XATTR_LIST_MAX).
pub const XATTR_LIST_MAX: usize = 65536;

/// The namespaces daxfs keeps.
pub const NAMESPACES: [&[u8]; 3] = [b"user.", b"trusted.", b"security."];

/// The extended-attribute tree.
pub fn tree() -> BTree<(u64, u64, u64), XattrRecord> {
    BTree::new(BlockKind::XattrTree, 0)
}

fn show(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

/// Checks a name as the system calls do before they look at the file:
/// ERANGE for an empty name or one over 255 bytes, EINVAL for a NUL in it.
pub fn check_name_len(name: &[u8]) -> Result<()> {
    if name.is_empty() || name.len() > XATTR_NAME_MAX {
        return Err(FsError::Range(format!(
            "attribute name of {} bytes (1..={XATTR_NAME_MAX})",
            name.len()
        )));
    }
    if name.contains(&0) {
        return Err(FsError::Invalid(format!(
            "attribute name {:?} contains NUL",
            show(name)
        )));
    }
    Ok(())
}

/// The namespace prefix of `name`: EOPNOTSUPP for one daxfs does not keep,
/// EINVAL for a prefix with nothing after it.
pub fn namespace_of(name: &[u8]) -> Result<&'static [u8]> {
    for ns in NAMESPACES {
        if let Some(rest) = name.strip_prefix(ns) {
            if rest.is_empty() {
                return Err(FsError::Invalid(format!(
                    "attribute name {:?} has nothing after its namespace",
                    show(name)
                )));
            }
            return Ok(ns);
        }
    }
    Err(FsError::NotSupported(format!(
        "attribute {:?}: namespace not supported (user., trusted., security.)",
        show(name)
    )))
}

/// Whether a stored name is one a set could have made.
pub fn valid_stored_name(name: &[u8]) -> bool {
    check_name_len(name).is_ok() && namespace_of(name).is_ok()
}

/// Linux's rule for `user.` attributes: only regular files and directories
/// have them. Writing elsewhere is EPERM, reading ENODATA.
fn check_user_ns(kind: FileKind, ns: &[u8], name: &[u8], write: bool) -> Result<()> {
    if ns == b"user." && !matches!(kind, FileKind::File | FileKind::Dir) {
        return Err(if write {
            FsError::NotPermitted(format!(
                "{:?}: user attributes only on regular files and directories",
                show(name)
            ))
        } else {
            FsError::NoData(show(name))
        });
    }
    Ok(())
}

fn hash_of(name: &[u8]) -> u64 {
    u64::from(daxfs_format::checksum(name))
}

/// The head of attribute `name` of `ino`: its name key and record.
fn find(
    s: &mut dyn NodeStore,
    root: &TreeRoot,
    ino: u64,
    name: &[u8],
) -> Result<Option<(u64, XattrRecord)>> {
    if root.is_empty() {
        return Ok(None);
    }
    let h = hash_of(name) << 32;
    let mut found = None;
    tree().range(
        s,
        root,
        &(ino, h, 0),
        &(ino, h | u64::from(u32::MAX), u64::MAX),
        &mut |(_, nk, part), r| {
            if part == 0 && r.name_bytes() == Some(name) {
                found = Some((nk, r));
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        },
    )?;
    Ok(found)
}

/// The value of an attribute whose head is `head`, at name key `nk`.
fn read_value(
    s: &mut dyn NodeStore,
    root: &TreeRoot,
    ino: u64,
    nk: u64,
    head: &XattrRecord,
) -> Result<Vec<u8>> {
    let len = head.value_len.get() as usize;
    if len > XATTR_SIZE_MAX {
        return Err(FsError::Corrupt(format!(
            "inode {ino}: extended attribute of {len} bytes"
        )));
    }
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(head.value.get(..len.min(XATTR_HEAD_BYTES)).unwrap_or(&[]));
    let parts = XattrRecord::parts_for(len);
    let mut next = 1u64;
    if parts > 0 {
        tree().range(
            s,
            root,
            &(ino, nk, 1),
            &(ino, nk, parts),
            &mut |(_, _, p), r| {
                if p != next {
                    return ControlFlow::Break(());
                }
                let want = (len - v.len()).min(XATTR_PART_BYTES);
                v.extend_from_slice(r.part_bytes().get(..want).unwrap_or(&[]));
                next += 1;
                ControlFlow::Continue(())
            },
        )?;
    }
    if v.len() != len {
        return Err(FsError::Corrupt(format!(
            "inode {ino}: extended attribute {:?} is missing part {next}",
            show(head.name_bytes().unwrap_or(b"?"))
        )));
    }
    Ok(v)
}

/// The names of `ino`'s attributes, in key order.
fn names(s: &mut dyn NodeStore, root: &TreeRoot, ino: u64) -> Result<Vec<Vec<u8>>> {
    let mut out = vec![];
    if root.is_empty() {
        return Ok(out);
    }
    tree().range(
        s,
        root,
        &(ino, 0, 0),
        &(ino, u64::MAX, u64::MAX),
        &mut |(_, _, part), r| {
            if part == 0 {
                out.push(r.name_bytes().unwrap_or(b"").to_vec());
            }
            ControlFlow::Continue(())
        },
    )?;
    if out.iter().any(|n| !valid_stored_name(n)) {
        return Err(FsError::Corrupt(format!(
            "inode {ino}: an extended attribute has a bad name"
        )));
    }
    Ok(out)
}

/// The records of attribute `name` with value `value`, at name key `nk`.
fn records_of(ino: u64, nk: u64, name: &[u8], value: &[u8]) -> Vec<((u64, u64, u64), XattrRecord)> {
    let mut head = XattrRecord::new_zeroed();
    head.value_len = (value.len() as u32).into();
    head.name_len = name.len() as u8;
    for (d, s) in head.name.iter_mut().zip(name) {
        *d = *s;
    }
    let (first, rest) = value.split_at(value.len().min(XATTR_HEAD_BYTES));
    for (d, s) in head.value.iter_mut().zip(first) {
        *d = *s;
    }
    let mut out = vec![((ino, nk, 0), head)];
    for (i, c) in rest.chunks(XATTR_PART_BYTES).enumerate() {
        out.push(((ino, nk, i as u64 + 1), XattrRecord::from_part_bytes(c)));
    }
    out
}

/// Removes every record of `ino` with name key `nk`.
fn remove_all(tx: &mut Tx<'_>, root: &mut TreeRoot, ino: u64, nk: u64) -> Result<()> {
    tree().remove_range(
        tx,
        root,
        &(ino, nk, 0),
        &(ino, nk, u64::MAX),
        &mut |_, _| {},
    )?;
    Ok(())
}

/// Frees every attribute of `ino` (the inode is being freed).
pub(crate) fn free_all(tx: &mut Tx<'_>, ino: u64) -> Result<()> {
    let mut root = tx.meta.sb.xattr_tree;
    if root.is_empty() {
        return Ok(());
    }
    tree().remove_range(
        tx,
        &mut root,
        &(ino, 0, 0),
        &(ino, u64::MAX, u64::MAX),
        &mut |_, _| {},
    )?;
    tx.meta.sb.xattr_tree = root;
    Ok(())
}

/// Sets (or replaces) attribute `name` of `ino` in `tx`.
fn set_in(tx: &mut Tx<'_>, ino: u64, name: &[u8], value: &[u8], flags: u32) -> Result<()> {
    let mut root = tx.meta.sb.xattr_tree;
    let nk = match find(tx, &root, ino, name)? {
        Some(_) if flags & XATTR_CREATE != 0 => return Err(FsError::Exists(show(name))),
        Some((nk, _)) => {
            remove_all(tx, &mut root, ino, nk)?;
            nk
        }
        None if flags & XATTR_REPLACE != 0 => return Err(FsError::NoData(show(name))),
        None => {
            // The lowest seq no other name of this hash holds.
            let h = hash_of(name) << 32;
            let mut used = vec![];
            if !root.is_empty() {
                tree().range(
                    tx,
                    &root,
                    &(ino, h, 0),
                    &(ino, h | u64::from(u32::MAX), u64::MAX),
                    &mut |(_, nk, part), _| {
                        if part == 0 {
                            used.push(nk & u64::from(u32::MAX));
                        }
                        ControlFlow::Continue(())
                    },
                )?;
            }
            let seq = (0..=u64::from(u32::MAX))
                .find(|s| !used.contains(s))
                .unwrap_or(u64::from(u32::MAX));
            h | seq
        }
    };
    tree().insert_sorted(tx, &mut root, &records_of(ino, nk, name, value))?;
    tx.meta.sb.xattr_tree = root;
    Ok(())
}

/// The inode `ino`, or ENOENT.
fn inode_by_number(inner: &FsInner, tx: &mut Tx<'_>, ino: u64) -> Result<Arc<Inode>> {
    let root = tx.meta.sb.inode_tree;
    if ino == 0 || crate::inode::read_record(tx, &root, ino)?.is_none() {
        return Err(FsError::NotFound(format!("inode {ino}")));
    }
    inner.inode(tx, &root, ino)
}

/// How to find the inode an operation is on.
#[derive(Clone, Copy)]
enum Target<'a> {
    Ino(u64),
    Path { path: &'a [u8], follow: bool },
}

impl FsInner {
    fn xattr_target(&self, tx: &mut Tx<'_>, t: Target<'_>) -> Result<Arc<Inode>> {
        match t {
            Target::Ino(ino) => inode_by_number(self, tx, ino),
            Target::Path { path, follow } => self.resolve(tx, path, follow),
        }
    }
}

/// The inode an operation is on, read without the lock.
fn lockless_target(
    r: &mut crate::snapshot::Reader<'_>,
    t: Target<'_>,
) -> Result<(daxfs_format::records::InodeRecord, FileKind)> {
    match t {
        Target::Ino(ino) => r.existing(ino),
        Target::Path { path, follow } => r.resolve(path, follow),
    }
}

/// Copies `v` into `buf` as getxattr does: its length when `buf` is empty,
/// ERANGE when it is too small.
fn into_buf(v: &[u8], buf: &mut [u8], what: &str) -> Result<usize> {
    if buf.is_empty() {
        return Ok(v.len());
    }
    let Some(d) = buf.get_mut(..v.len()) else {
        return Err(FsError::Range(format!(
            "{what}: {} bytes do not fit a buffer of {}",
            v.len(),
            buf.len()
        )));
    };
    d.copy_from_slice(v);
    Ok(v.len())
}

impl Fs {
    fn xattr_get(&self, t: Target<'_>, name: &[u8]) -> Result<Vec<u8>> {
        check_name_len(name)?;
        if let Some(r) = self.inner.lockless(|r| {
            let (rec, kind) = lockless_target(r, t)?;
            if name.starts_with(b"user.") {
                check_user_ns(kind, b"user.", name, false)?;
            }
            namespace_of(name)?;
            let ino = rec.ino.get();
            let root = r.snap.sb.xattr_tree;
            let Some((nk, head)) = find(&mut r.s, &root, ino, name)? else {
                return Err(FsError::NoData(show(name)));
            };
            read_value(&mut r.s, &root, ino, nk, &head)
        }) {
            return r;
        }
        let inner = &*self.inner;
        let mut meta = lock(&inner.meta);
        let mut tx = Tx::begin(&*inner.dev, &mut meta)?;
        let node = inner.xattr_target(&mut tx, t)?;
        // Linux checks the user. rule first, then the namespace.
        if name.starts_with(b"user.") {
            check_user_ns(node.kind, b"user.", name, false)?;
        }
        namespace_of(name)?;
        let root = tx.meta.sb.xattr_tree;
        let Some((nk, head)) = find(&mut tx, &root, node.ino, name)? else {
            return Err(FsError::NoData(show(name)));
        };
        read_value(&mut tx, &root, node.ino, nk, &head)
    }

    fn xattr_set(&self, t: Target<'_>, name: &[u8], value: &[u8], flags: u32) -> Result<()> {
        if flags & !(XATTR_CREATE | XATTR_REPLACE) != 0 {
            return Err(FsError::Invalid(format!(
                "unknown setxattr flags {flags:#x}"
            )));
        }
        check_name_len(name)?;
        if value.len() > XATTR_SIZE_MAX {
            return Err(FsError::ArgListTooBig(format!(
                "attribute value of {} bytes (at most {XATTR_SIZE_MAX})",
                value.len()
            )));
        }
        self.xattr_change(t, name, |tx, ino| set_in(tx, ino, name, value, flags))
    }

    fn xattr_remove(&self, t: Target<'_>, name: &[u8]) -> Result<()> {
        check_name_len(name)?;
        self.xattr_change(t, name, |tx, ino| {
            let mut root = tx.meta.sb.xattr_tree;
            let Some((nk, _)) = find(tx, &root, ino, name)? else {
                return Err(FsError::NoData(show(name)));
            };
            remove_all(tx, &mut root, ino, nk)?;
            tx.meta.sb.xattr_tree = root;
            Ok(())
        })
    }

    /// One transaction that changes attribute `name` of the target with
    /// `f` and its ctime.
    fn xattr_change(
        &self,
        t: Target<'_>,
        name: &[u8],
        f: impl FnOnce(&mut Tx<'_>, u64) -> Result<()>,
    ) -> Result<()> {
        let inner = &*self.inner;
        let mut meta = lock(&inner.meta);
        let mut tx = Tx::begin(&*inner.dev, &mut meta)?;
        let node = inner.xattr_target(&mut tx, t)?;
        if name.starts_with(b"user.") {
            check_user_ns(node.kind, b"user.", name, true)?;
        }
        namespace_of(name)?;
        let mut recs = Recs::lock(&[&node]);
        f(&mut tx, node.ino)?;
        recs.get(node.ino)?.ctime = crate::inode::now();
        recs.stage(&mut tx)?;
        tx.commit()?;
        recs.install();
        Ok(())
    }

    fn xattr_list(&self, t: Target<'_>) -> Result<Vec<Vec<u8>>> {
        if let Some(r) = self.inner.lockless(|r| {
            let (rec, _) = lockless_target(r, t)?;
            let root = r.snap.sb.xattr_tree;
            names(&mut r.s, &root, rec.ino.get())
        }) {
            return r;
        }
        let inner = &*self.inner;
        let mut meta = lock(&inner.meta);
        let mut tx = Tx::begin(&*inner.dev, &mut meta)?;
        let node = inner.xattr_target(&mut tx, t)?;
        let root = tx.meta.sb.xattr_tree;
        names(&mut tx, &root, node.ino)
    }

    // ---- by inode number ----

    /// The value of attribute `name` of inode `ino`: ENODATA when it has none.
    pub fn getxattr_ino(&self, ino: u64, name: &[u8]) -> Result<Vec<u8>> {
        self.xattr_get(Target::Ino(ino), name)
    }

    /// As [`Fs::getxattr_ino`], into `buf`: returns the value's length (with
    /// an empty `buf`, only the length); ERANGE when `buf` is too small.
    pub fn getxattr_ino_into(&self, ino: u64, name: &[u8], buf: &mut [u8]) -> Result<usize> {
        into_buf(&self.getxattr_ino(ino, name)?, buf, &show(name))
    }

    /// Sets attribute `name` of inode `ino` to `value`; `flags` as Linux's:
    /// [`XATTR_CREATE`] (EEXIST if it exists), [`XATTR_REPLACE`] (ENODATA if
    /// it does not).
    pub fn setxattr_ino(&self, ino: u64, name: &[u8], value: &[u8], flags: u32) -> Result<()> {
        self.xattr_set(Target::Ino(ino), name, value, flags)
    }

    /// The names of inode `ino`'s attributes.
    pub fn listxattr_ino(&self, ino: u64) -> Result<Vec<Vec<u8>>> {
        self.xattr_list(Target::Ino(ino))
    }

    /// As listxattr(2): the names, each followed by a NUL, into `buf`;
    /// returns the bytes they take (with an empty `buf`, only that); ERANGE
    /// when `buf` is too small (E2BIG when the list is over 64 KiB).
    pub fn listxattr_ino_into(&self, ino: u64, buf: &mut [u8]) -> Result<usize> {
        list_into(&self.listxattr_ino(ino)?, buf)
    }

    /// Removes attribute `name` of inode `ino`: ENODATA when it has none.
    pub fn removexattr_ino(&self, ino: u64, name: &[u8]) -> Result<()> {
        self.xattr_remove(Target::Ino(ino), name)
    }

    // ---- by path (following a final symlink; the l- forms do not) ----

    /// The value of attribute `name` of the file at `path`.
    pub fn getxattr(&self, path: impl AsRef<[u8]>, name: &[u8]) -> Result<Vec<u8>> {
        self.xattr_get(
            Target::Path {
                path: path.as_ref(),
                follow: true,
            },
            name,
        )
    }

    /// As [`Fs::getxattr`], of a symlink itself.
    pub fn lgetxattr(&self, path: impl AsRef<[u8]>, name: &[u8]) -> Result<Vec<u8>> {
        self.xattr_get(
            Target::Path {
                path: path.as_ref(),
                follow: false,
            },
            name,
        )
    }

    /// As [`Fs::getxattr`], into `buf` (see [`Fs::getxattr_ino_into`]).
    pub fn getxattr_into(
        &self,
        path: impl AsRef<[u8]>,
        name: &[u8],
        buf: &mut [u8],
    ) -> Result<usize> {
        into_buf(&self.getxattr(path, name)?, buf, &show(name))
    }

    /// Sets attribute `name` of the file at `path` (see [`Fs::setxattr_ino`]).
    pub fn setxattr(
        &self,
        path: impl AsRef<[u8]>,
        name: &[u8],
        value: &[u8],
        flags: u32,
    ) -> Result<()> {
        self.xattr_set(
            Target::Path {
                path: path.as_ref(),
                follow: true,
            },
            name,
            value,
            flags,
        )
    }

    /// As [`Fs::setxattr`], of a symlink itself.
    pub fn lsetxattr(
        &self,
        path: impl AsRef<[u8]>,
        name: &[u8],
        value: &[u8],
        flags: u32,
    ) -> Result<()> {
        self.xattr_set(
            Target::Path {
                path: path.as_ref(),
                follow: false,
            },
            name,
            value,
            flags,
        )
    }

    /// The names of the attributes of the file at `path`.
    pub fn listxattr(&self, path: impl AsRef<[u8]>) -> Result<Vec<Vec<u8>>> {
        self.xattr_list(Target::Path {
            path: path.as_ref(),
            follow: true,
        })
    }

    /// As [`Fs::listxattr`], of a symlink itself.
    pub fn llistxattr(&self, path: impl AsRef<[u8]>) -> Result<Vec<Vec<u8>>> {
        self.xattr_list(Target::Path {
            path: path.as_ref(),
            follow: false,
        })
    }

    /// As [`Fs::listxattr`], into `buf` (see [`Fs::listxattr_ino_into`]).
    pub fn listxattr_into(&self, path: impl AsRef<[u8]>, buf: &mut [u8]) -> Result<usize> {
        list_into(&self.listxattr(path)?, buf)
    }

    /// Removes attribute `name` of the file at `path`.
    pub fn removexattr(&self, path: impl AsRef<[u8]>, name: &[u8]) -> Result<()> {
        self.xattr_remove(
            Target::Path {
                path: path.as_ref(),
                follow: true,
            },
            name,
        )
    }

    /// As [`Fs::removexattr`], of a symlink itself.
    pub fn lremovexattr(&self, path: impl AsRef<[u8]>, name: &[u8]) -> Result<()> {
        self.xattr_remove(
            Target::Path {
                path: path.as_ref(),
                follow: false,
            },
            name,
        )
    }
}

/// The names as listxattr(2) returns them.
fn list_into(names: &[Vec<u8>], buf: &mut [u8]) -> Result<usize> {
    let mut all = vec![];
    for n in names {
        all.extend_from_slice(n);
        all.push(0);
    }
    // Linux looks at no more than XATTR_LIST_MAX bytes of the buffer.
    let room = buf.len().min(XATTR_LIST_MAX);
    if !buf.is_empty() && all.len() > room {
        if room == XATTR_LIST_MAX {
            return Err(FsError::ArgListTooBig(format!(
                "attribute names take {} bytes (at most {XATTR_LIST_MAX})",
                all.len()
            )));
        }
        return Err(FsError::Range(format!(
            "attribute names take {} bytes, the buffer {}",
            all.len(),
            buf.len()
        )));
    }
    into_buf(&all, buf, "attribute names")
}

/// What is wrong with the records of the extended-attribute tree (all of
/// them, in key order), one message each: records of inodes `live` says do
/// not exist, heads with a bad name (length, namespace, a hash that is not
/// the name's), a bad value length or nonzero reserved or unused bytes,
/// parts without a head, missing or beyond the value.
pub fn check_records(
    recs: &[((u64, u64, u64), XattrRecord)],
    live: impl Fn(u64) -> bool,
) -> Vec<String> {
    let mut out = vec![];
    let mut dead_reported = None;
    // The attribute being read: (ino, name key, parts it needs, value_len),
    // and the next part expected.
    let mut cur: Option<(u64, u64, u64, usize)> = None;
    let mut next = 0u64;
    let close = |cur: Option<(u64, u64, u64, usize)>, next: u64, out: &mut Vec<String>| {
        if let Some((ino, nk, parts, _)) = cur
            && next <= parts
        {
            out.push(format!(
                "inode {ino}: attribute {nk:#x} has {} of its {parts} value parts",
                next - 1
            ));
        }
    };
    for &((ino, nk, part), r) in recs {
        if !live(ino) && dead_reported != Some(ino) {
            out.push(format!("attributes of inode {ino}, which does not exist"));
            dead_reported = Some(ino);
        }
        if part == 0 {
            close(cur, next, &mut out);
            cur = None;
            let len = r.value_len.get() as usize;
            let name = r.name_bytes();
            let shown = show(name.unwrap_or(b""));
            let zero_tail = name.map_or(&r.name[..], |n| r.name.get(n.len()..).unwrap_or(&[]));
            match name {
                Some(n)
                    if valid_stored_name(n) && (hash_of(n) << 32) == nk & !u64::from(u32::MAX) => {}
                Some(n) if valid_stored_name(n) => out.push(format!(
                    "inode {ino}: attribute {shown:?} at key {nk:#x}, not its name's hash"
                )),
                _ => out.push(format!(
                    "inode {ino}: attribute {nk:#x} has a bad name {shown:?}"
                )),
            }
            if len > XATTR_SIZE_MAX {
                out.push(format!("inode {ino}: attribute {shown:?} of {len} bytes"));
                continue;
            }
            let value_tail = r.value.get(len.min(XATTR_HEAD_BYTES)..).unwrap_or(&[]);
            if r.reserved != [0; 3]
                || r.reserved2 != 0
                || zero_tail.iter().any(|&b| b != 0)
                || value_tail.iter().any(|&b| b != 0)
            {
                out.push(format!(
                    "inode {ino}: attribute {shown:?} has nonzero unused bytes"
                ));
            }
            cur = Some((ino, nk, XattrRecord::parts_for(len), len));
            next = 1;
            continue;
        }
        match cur {
            Some((ci, cn, parts, len))
                if ci == ino && cn == nk && part == next && part <= parts =>
            {
                let used = len - XATTR_HEAD_BYTES - XATTR_PART_BYTES * (part as usize - 1);
                if r.part_bytes()
                    .get(used.min(XATTR_PART_BYTES)..)
                    .is_some_and(|t| t.iter().any(|&b| b != 0))
                {
                    out.push(format!(
                        "inode {ino}: attribute {nk:#x} part {part} has bytes past the value"
                    ));
                }
                next += 1;
            }
            _ => out.push(format!(
                "inode {ino}: attribute {nk:#x} part {part} belongs to no attribute"
            )),
        }
    }
    close(cur, next, &mut out);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn attr(ino: u64, seq: u64, name: &[u8], len: usize) -> Vec<((u64, u64, u64), XattrRecord)> {
        let nk = hash_of(name) << 32 | seq;
        records_of(ino, nk, name, &vec![7u8; len])
    }

    #[test]
    fn well_formed_records_pass() {
        let mut r = attr(2, 0, b"user.a", 0);
        r.extend(attr(2, 0, b"user.b", 248));
        r.extend(attr(2, 1, b"trusted.c", 249));
        r.extend(attr(3, 0, b"security.d", XATTR_SIZE_MAX));
        r.sort_by_key(|x| x.0);
        assert_eq!(XattrRecord::parts_for(249), 1);
        assert_eq!(XattrRecord::parts_for(XATTR_SIZE_MAX), 128);
        assert!(check_records(&r, |_| true).is_empty());
    }

    #[test]
    fn every_kind_of_bad_record_is_named() {
        let live = |i| i != 9;
        let one = |r: Vec<_>| check_records(&r, live);
        assert_eq!(one(attr(9, 0, b"user.a", 3)).len(), 1, "dead inode");
        let mut r = attr(2, 0, b"user.a", 3);
        r[0].1.name_len = 0;
        assert!(one(r)[0].contains("bad name"));
        let mut r = attr(2, 0, b"bogus.a", 3);
        r[0].0.1 = hash_of(b"bogus.a") << 32;
        assert!(one(r)[0].contains("bad name"));
        let mut r = attr(2, 0, b"user.a", 3);
        r[0].0.1 = hash_of(b"user.b") << 32;
        assert!(one(r)[0].contains("hash"));
        let mut r = attr(2, 0, b"user.a", 3);
        r[0].1.value_len = (XATTR_SIZE_MAX as u32 + 1).into();
        assert!(one(r)[0].contains("bytes"));
        let mut r = attr(2, 0, b"user.a", 3);
        r[0].1.value[10] = 1;
        assert!(one(r)[0].contains("nonzero"));
        let mut r = attr(2, 0, b"user.a", 1000);
        r.pop();
        assert!(one(r)[0].contains("value parts"), "missing part");
        let mut r = attr(2, 0, b"user.a", 300);
        r.remove(0);
        assert!(one(r)[0].contains("belongs to no attribute"));
        let mut r = attr(2, 0, b"user.a", 300);
        let mut p = r[1].1.part_bytes();
        p[100] = 1;
        r[1].1 = XattrRecord::from_part_bytes(&p);
        assert!(one(r)[0].contains("past the value"));
    }
}
