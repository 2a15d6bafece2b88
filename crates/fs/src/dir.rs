//! Directories: a B+tree per directory, keyed by `hash32(name) << 32 | seq`,
//! and path resolution.
use crate::error::{FsError, Result};
use crate::inode::FileKind;
use crate::tx::Tx;
use daxfs_btree::{BTree, NodeStore};
use daxfs_format::BlockKind;
use daxfs_format::records::{DirentRecord, NAME_MAX, TreeRoot};
use std::ops::ControlFlow;
use zerocopy::FromZeros;

/// The directory tree of directory `ino`.
pub fn tree(ino: u64) -> BTree<u64, DirentRecord> {
    BTree::new(BlockKind::DirTree, ino)
}

/// The lowest key an entry has: keys 0..FIRST_KEY are kept for the
/// `readdir` cookies of the start, `.` and `..`.
pub const FIRST_KEY: u64 = 3;

/// The hash half of a directory key.
pub fn name_hash(name: &[u8]) -> u64 {
    u64::from(daxfs_format::checksum(name))
}

/// Checks a single path component.
pub fn check_name(name: &[u8]) -> Result<()> {
    if name.len() > NAME_MAX {
        return Err(FsError::NameTooLong(
            String::from_utf8_lossy(&name[..32]).into_owned() + "...",
        ));
    }
    if name.is_empty() || name.contains(&0) || name.contains(&b'/') {
        return Err(FsError::Invalid(format!(
            "bad file name {:?}",
            String::from_utf8_lossy(name)
        )));
    }
    Ok(())
}

/// One directory entry as found in a tree.
#[derive(Clone, Debug)]
pub struct Found {
    pub key: u64,
    pub ino: u64,
    pub kind: FileKind,
}

/// Finds `name` in a directory.
pub fn lookup(
    s: &mut dyn NodeStore,
    dir: u64,
    root: &TreeRoot,
    name: &[u8],
) -> Result<Option<Found>> {
    let h = name_hash(name);
    let mut found = None;
    let mut bad = None;
    tree(dir).range(
        s,
        root,
        &(h << 32),
        &((h << 32) | 0xffff_ffff),
        &mut |k, d| match d.name() {
            Ok(n) if n == name => {
                match FileKind::of_dtype(d.ftype) {
                    Some(kind) => {
                        found = Some(Found {
                            key: k,
                            ino: d.ino.get(),
                            kind,
                        })
                    }
                    None => bad = Some(k),
                }
                ControlFlow::Break(())
            }
            Ok(_) => ControlFlow::Continue(()),
            Err(_) => {
                bad = Some(k);
                ControlFlow::Break(())
            }
        },
    )?;
    if let Some(k) = bad {
        return Err(FsError::Corrupt(format!(
            "directory {dir}: entry {k:#x} is malformed"
        )));
    }
    Ok(found)
}

/// Adds an entry (the caller has checked that `name` is absent).
pub fn add(
    tx: &mut Tx<'_>,
    dir: u64,
    root: &mut TreeRoot,
    name: &[u8],
    ino: u64,
    kind: FileKind,
) -> Result<u64> {
    check_name(name)?;
    let h = name_hash(name);
    // Next free sequence number for this hash (above the reserved keys).
    let mut seq = if h == 0 { FIRST_KEY } else { 0 };
    tree(dir).range(
        tx,
        root,
        &(h << 32),
        &((h << 32) | 0xffff_ffff),
        &mut |k, _| {
            seq = (k & 0xffff_ffff) + 1;
            ControlFlow::Continue(())
        },
    )?;
    if seq > 0xffff_ffff {
        return Err(FsError::NoSpace(format!(
            "directory {dir}: too many names with one hash"
        )));
    }
    let mut d = DirentRecord::new_zeroed();
    d.ino = ino.into();
    d.ftype = kind.dtype();
    d.name_len = name.len() as u8;
    d.name[..name.len()].copy_from_slice(name);
    let key = (h << 32) | seq;
    tree(dir).insert(tx, root, key, d)?;
    let mut proot = tx.meta.sb.parent_tree;
    parent_tree().insert(tx, &mut proot, (ino, dir, key), ())?;
    tx.meta.sb.parent_tree = proot;
    Ok(key)
}

/// Removes the entry with `key`.
pub fn remove(tx: &mut Tx<'_>, dir: u64, root: &mut TreeRoot, key: u64) -> Result<()> {
    if let Some(d) = tree(dir).remove(tx, root, &key)? {
        let mut proot = tx.meta.sb.parent_tree;
        parent_tree().remove(tx, &mut proot, &(d.ino.get(), dir, key))?;
        tx.meta.sb.parent_tree = proot;
    }
    Ok(())
}

/// The parent-pointer tree: (child inode, parent directory, entry key). Every
/// directory entry has one record, so an inode's names (several for hard
/// links) are found from the inode itself.
pub fn parent_tree() -> BTree<(u64, u64, u64), ()> {
    BTree::new(BlockKind::ParentTree, 0)
}

/// Every path of inode `ino`, read through `s`.
pub fn paths(
    s: &mut dyn NodeStore,
    sb: &daxfs_format::Superblock,
    ino: u64,
) -> Result<Vec<String>> {
    let mut out = vec![];
    path_walk(s, sb, ino, String::new(), &mut out, 0)?;
    out.sort();
    Ok(out)
}

fn path_walk(
    s: &mut dyn NodeStore,
    sb: &daxfs_format::Superblock,
    ino: u64,
    suffix: String,
    out: &mut Vec<String>,
    depth: usize,
) -> Result<()> {
    if ino == sb.root_ino.get() {
        out.push(if suffix.is_empty() {
            "/".into()
        } else {
            suffix
        });
        return Ok(());
    }
    if depth > 4096 || out.len() > 1024 {
        return Err(FsError::Corrupt(format!(
            "parent pointers of inode {ino} loop"
        )));
    }
    let mut links = vec![];
    parent_tree().range(
        s,
        &sb.parent_tree,
        &(ino, 0, 0),
        &(ino, u64::MAX, u64::MAX),
        &mut |k, ()| {
            links.push((k.1, k.2));
            ControlFlow::Continue(())
        },
    )?;
    for (parent, key) in links {
        let Some(prec) = crate::inode::read_record(s, &sb.inode_tree, parent)? else {
            return Err(FsError::Corrupt(format!(
                "inode {ino}: parent {parent} does not exist"
            )));
        };
        let Some(d) = tree(parent).get(s, &prec.tree, &key)? else {
            return Err(FsError::Corrupt(format!(
                "inode {ino}: parent {parent} has no entry {key:#x}"
            )));
        };
        let name = String::from_utf8_lossy(d.name()?).into_owned();
        path_walk(s, sb, parent, format!("/{name}{suffix}"), out, depth + 1)?;
    }
    Ok(())
}

/// A directory entry as `readdir` returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub name: Vec<u8>,
    pub ino: u64,
    pub kind: FileKind,
    /// Pass as `after` to continue listing after this entry.
    pub cookie: u64,
}

impl DirEntry {
    /// The name as text (lossy for names that are not UTF-8).
    pub fn name_lossy(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

/// Lists up to `max` entries with keys after `after` (0 = from the start).
pub fn list(
    s: &mut dyn NodeStore,
    dir: u64,
    root: &TreeRoot,
    after: u64,
    max: usize,
) -> Result<Vec<DirEntry>> {
    let mut out = vec![];
    let mut bad = None;
    let lo = if after == 0 {
        0
    } else {
        after.saturating_add(1)
    };
    tree(dir).range(s, root, &lo, &u64::MAX, &mut |k, d| {
        let (Ok(name), Some(kind)) = (d.name(), FileKind::of_dtype(d.ftype)) else {
            bad = Some(k);
            return ControlFlow::Break(());
        };
        out.push(DirEntry {
            name: name.to_vec(),
            ino: d.ino.get(),
            kind,
            cookie: k,
        });
        if out.len() >= max {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })?;
    if let Some(k) = bad {
        return Err(FsError::Corrupt(format!(
            "directory {dir}: entry {k:#x} is malformed"
        )));
    }
    Ok(out)
}

/// Splits a path into its components, dropping empty ones and ".".
pub fn components(path: &[u8]) -> Vec<&[u8]> {
    path.split(|&c| c == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect()
}
