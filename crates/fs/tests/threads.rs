//! Many threads against a model: four threads run seeded random operations
//! of every kind by inode number, each in a directory of its own and all of
//! them in one shared directory. Every call's result (success or errno) is
//! checked against a model as it returns; after the threads join, every
//! file's bytes, size, mode, link count and attributes and every directory's
//! entries are compared with the model, then fsck, a remount and the same
//! comparison again.
//!
//! The model is split in parts: one per thread (its own directory and all
//! below it) and one for the shared directory. A thread's own part is
//! touched by that thread alone, so its calls run fully in parallel with the
//! others' and their outcomes are determined: the model is exact. Calls on
//! the shared part are linearised by a lock held around the call and the
//! model's update together, so the order in which they took the lock is an
//! order in which they happened, and the model is exact there too. A file
//! moves between parts only by a rename of its one name made under that
//! lock; hard links stay inside a part, so no inode is ever in two parts.
mod common;
use common::*;
use daxfs::{DedupeStatus, FallocFlags, FileKind, Fs, FsError, OpenOptions, RenameFlags, SetAttr};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Operations run to the end, by kind (the test checks every kind ran).
static RAN: [AtomicUsize; 19] = [const { AtomicUsize::new(0) }; 19];
/// Dedupes that found their ranges equal.
static SAME: AtomicUsize = AtomicUsize::new(0);

const THREADS: usize = 4;
const OPS: usize = 300;
const BS: u64 = 4096;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    File(Vec<u8>),
    Dir {
        entries: BTreeMap<Vec<u8>, u64>,
        parent: u64,
    },
    Sym(Vec<u8>),
    Fifo,
    Chr(u32),
}

#[derive(Clone, Debug)]
struct Node {
    kind: Kind,
    perm: u32,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// One part of the model: a directory of the root and everything below it.
#[derive(Debug)]
struct Part {
    top: u64,
    nodes: BTreeMap<u64, Node>,
}

type Res = Result<(), &'static str>;

fn en<T>(r: Result<T, FsError>) -> Result<T, &'static str> {
    r.map_err(|e| e.errno_name())
}

impl Part {
    fn new(top: u64) -> Part {
        let mut nodes = BTreeMap::new();
        nodes.insert(
            top,
            Node {
                kind: Kind::Dir {
                    entries: BTreeMap::new(),
                    parent: 1,
                },
                perm: 0o755,
                xattrs: BTreeMap::new(),
            },
        );
        Part { top, nodes }
    }

    fn entries(&self, d: u64) -> &BTreeMap<Vec<u8>, u64> {
        match &self.nodes[&d].kind {
            Kind::Dir { entries, .. } => entries,
            _ => unreachable!("inode {d} is not a directory"),
        }
    }

    fn entries_mut(&mut self, d: u64) -> &mut BTreeMap<Vec<u8>, u64> {
        match &mut self.nodes.get_mut(&d).unwrap().kind {
            Kind::Dir { entries, .. } => entries,
            _ => unreachable!("inode {d} is not a directory"),
        }
    }

    fn is_dir(&self, ino: u64) -> bool {
        matches!(self.nodes[&ino].kind, Kind::Dir { .. })
    }

    fn lookup(&self, d: u64, n: &[u8]) -> Option<u64> {
        self.entries(d).get(n).copied()
    }

    fn dirs(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|(_, n)| matches!(n.kind, Kind::Dir { .. }))
            .map(|(i, _)| *i)
            .collect()
    }

    fn files(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|(_, n)| matches!(n.kind, Kind::File(_)))
            .map(|(i, _)| *i)
            .collect()
    }

    fn data(&mut self, f: u64) -> &mut Vec<u8> {
        match &mut self.nodes.get_mut(&f).unwrap().kind {
            Kind::File(d) => d,
            _ => unreachable!(),
        }
    }

    /// Links to `ino` the model implies: names of it, or for a directory
    /// 2 and one per subdirectory.
    fn nlink(&self, ino: u64) -> u32 {
        match &self.nodes[&ino].kind {
            Kind::Dir { entries, .. } => {
                2 + entries.values().filter(|i| self.is_dir(**i)).count() as u32
            }
            _ => self
                .nodes
                .values()
                .filter_map(|n| match &n.kind {
                    Kind::Dir { entries, .. } => {
                        Some(entries.values().filter(|i| **i == ino).count())
                    }
                    _ => None,
                })
                .sum::<usize>() as u32,
        }
    }

    /// Directory `moving` is `into` or above it.
    fn below(&self, moving: u64, into: u64) -> bool {
        if !self.is_dir(moving) {
            return false;
        }
        let mut cur = into;
        loop {
            if cur == moving {
                return true;
            }
            if cur == self.top {
                return false;
            }
            cur = match &self.nodes[&cur].kind {
                Kind::Dir { parent, .. } => *parent,
                _ => unreachable!(),
            };
        }
    }

    /// Drops the name `n` of `d`; frees its inode when no link is left.
    fn drop_name(&mut self, d: u64, n: &[u8]) {
        let ino = self.entries_mut(d).remove(n).unwrap();
        if self.is_dir(ino) || self.nlink(ino) == 0 {
            self.nodes.remove(&ino);
        }
    }

    fn add(&mut self, d: u64, n: &[u8], ino: u64, kind: Kind, perm: u32) {
        assert!(
            !self.nodes.contains_key(&ino),
            "inode {ino} given out twice"
        );
        self.entries_mut(d).insert(n.to_vec(), ino);
        self.nodes.insert(
            ino,
            Node {
                kind,
                perm,
                xattrs: BTreeMap::new(),
            },
        );
    }
}

fn pick<T: Copy>(rng: &mut SmallRng, v: &[T]) -> T {
    v[rng.random_range(0..v.len())]
}

fn name(rng: &mut SmallRng) -> Vec<u8> {
    format!("n{}", rng.random_range(0..6)).into_bytes()
}

fn offset(rng: &mut SmallRng, size: u64) -> u64 {
    match rng.random_range(0..3) {
        0 => rng.random_range(0..=size / BS + 1) * BS,
        1 => rng.random_range(0..size + 2 * BS),
        _ => size,
    }
}

fn rw(fs: &Fs, ino: u64) -> daxfs::File {
    fs.open_ino(ino, &OpenOptions::read_write()).unwrap()
}

/// Writes `src` into `data` at `off`, growing it as a write does.
fn put(data: &mut Vec<u8>, off: u64, src: &[u8]) {
    let end = off as usize + src.len();
    if data.len() < end {
        data.resize(end, 0);
    }
    data[off as usize..end].copy_from_slice(src);
}

/// One random operation on part `p`, checked against it: the call's result
/// must be the model's.
fn step(fs: &Fs, p: &mut Part, rng: &mut SmallRng, what: &mut String) {
    let dirs = p.dirs();
    let files = p.files();
    let d = pick(rng, &dirs);
    let n = name(rng);
    let op = rng.random_range(0..19);
    *what = format!("op {op} in dir {d} name {}", String::from_utf8_lossy(&n));
    let exists = p.lookup(d, &n);
    match op {
        0..=1 => {
            let perm = 0o600 | rng.random_range(0..0o100);
            let got = en(fs
                .create_at(d, &n, perm, &OpenOptions::create_new())
                .map(|f| f.ino()));
            match exists {
                Some(_) => assert_eq!(got, Err("EEXIST"), "{what}"),
                None => p.add(d, &n, got.expect(what), Kind::File(vec![]), perm),
            }
        }
        2 => {
            let got = en(fs.mkdir_at(d, &n, 0o750).map(|s| s.ino));
            match exists {
                Some(_) => assert_eq!(got, Err("EEXIST"), "{what}"),
                None => {
                    let k = Kind::Dir {
                        entries: BTreeMap::new(),
                        parent: d,
                    };
                    p.add(d, &n, got.expect(what), k, 0o750)
                }
            }
        }
        3 => {
            let t = format!("target{}", rng.random_range(0..100)).into_bytes();
            let got = en(fs.symlink_at(&t, d, &n).map(|s| s.ino));
            match exists {
                Some(_) => assert_eq!(got, Err("EEXIST"), "{what}"),
                None => p.add(d, &n, got.expect(what), Kind::Sym(t), 0o777),
            }
        }
        4 => {
            let chr = rng.random_bool(0.5);
            let rdev = if chr { 0x0103 } else { 0 };
            let mode = if chr { libc::S_IFCHR } else { libc::S_IFIFO } | 0o640;
            let got = en(fs.mknod_at(d, &n, mode, rdev).map(|s| s.ino));
            match exists {
                Some(_) => assert_eq!(got, Err("EEXIST"), "{what}"),
                None => {
                    let k = if chr { Kind::Chr(rdev) } else { Kind::Fifo };
                    p.add(d, &n, got.expect(what), k, 0o640)
                }
            }
        }
        5 => {
            let non_dirs: Vec<u64> = p
                .nodes
                .iter()
                .filter(|(_, x)| !matches!(x.kind, Kind::Dir { .. }))
                .map(|(i, _)| *i)
                .collect();
            if non_dirs.is_empty() {
                return;
            }
            let f = pick(rng, &non_dirs);
            let got = en(fs.link_at(f, d, &n).map(|s| s.nlink));
            match exists {
                Some(_) => assert_eq!(got, Err("EEXIST"), "{what}: link of {f}"),
                None => {
                    p.entries_mut(d).insert(n.clone(), f);
                    assert_eq!(got, Ok(p.nlink(f)), "{what}: link of {f}");
                }
            }
        }
        6 => {
            let got = en(fs.unlink_at(d, &n));
            let want: Res = match exists {
                None => Err("ENOENT"),
                Some(i) if p.is_dir(i) => Err("EISDIR"),
                Some(_) => Ok(()),
            };
            assert_eq!(got, want, "{what}");
            if want.is_ok() {
                p.drop_name(d, &n);
            }
        }
        7 => {
            let got = en(fs.rmdir_at(d, &n));
            let want: Res = match exists {
                None => Err("ENOENT"),
                Some(i) if !p.is_dir(i) => Err("ENOTDIR"),
                Some(i) if !p.entries(i).is_empty() => Err("ENOTEMPTY"),
                Some(_) => Ok(()),
            };
            assert_eq!(got, want, "{what}");
            if want.is_ok() {
                p.drop_name(d, &n);
            }
        }
        8..=9 => {
            let d2 = pick(rng, &dirs);
            let n2 = name(rng);
            let flags = match rng.random_range(0..4) {
                0 => RenameFlags::NOREPLACE,
                1 => RenameFlags::EXCHANGE,
                _ => RenameFlags::default(),
            };
            *what = format!(
                "{what}: rename to dir {d2} name {} {flags:?}",
                String::from_utf8_lossy(&n2)
            );
            let got = en(fs.rename_at(d, &n, d2, &n2, flags));
            let want = rename_model(p, d, &n, d2, &n2, flags);
            assert_eq!(got, want, "{what}");
        }
        10 => {
            let all: Vec<u64> = p.nodes.keys().copied().collect();
            let ino = pick(rng, &all);
            let perm = rng.random_range(0..0o1000);
            let st = fs
                .setattr(
                    ino,
                    &SetAttr {
                        mode: Some(perm),
                        ..Default::default()
                    },
                )
                .expect(what);
            assert_eq!(st.perm, perm, "{what}");
            p.nodes.get_mut(&ino).unwrap().perm = perm;
        }
        11 => {
            if files.is_empty() {
                return;
            }
            let f = pick(rng, &files);
            let size = rng.random_range(0..5 * BS);
            let mode = rng.random_bool(0.5).then(|| rng.random_range(0..0o1000));
            let st = fs
                .setattr(
                    f,
                    &SetAttr {
                        size: Some(size),
                        mode,
                        ..Default::default()
                    },
                )
                .expect(what);
            p.data(f).resize(size as usize, 0);
            if let Some(m) = mode {
                p.nodes.get_mut(&f).unwrap().perm = m;
            }
            assert_eq!((st.size, st.perm), (size, p.nodes[&f].perm), "{what}");
        }
        12 => {
            // Attributes on regular files and directories (user. names).
            let mut targets = files.clone();
            targets.extend(&dirs);
            let ino = pick(rng, &targets);
            let xn = format!("user.x{}", rng.random_range(0..3)).into_bytes();
            if rng.random_bool(0.6) {
                let v = pattern(rng.random(), rng.random_range(0..600));
                fs.setxattr_ino(ino, &xn, &v, 0).expect(what);
                p.nodes.get_mut(&ino).unwrap().xattrs.insert(xn, v);
            } else {
                let got = en(fs.removexattr_ino(ino, &xn));
                let had = p.nodes.get_mut(&ino).unwrap().xattrs.remove(&xn);
                assert_eq!(got, had.map(|_| ()).ok_or("ENODATA"), "{what}");
            }
        }
        13..=14 => {
            if files.is_empty() {
                return;
            }
            let f = pick(rng, &files);
            let size = p.data(f).len() as u64;
            let off = offset(rng, size).min(6 * BS);
            let buf = pattern(rng.random(), rng.random_range(1..2 * BS as usize));
            assert_eq!(rw(fs, f).write_at(off, &buf).expect(what), buf.len());
            put(p.data(f), off, &buf);
        }
        15 => {
            if files.is_empty() {
                return;
            }
            let f = pick(rng, &files);
            let size = p.data(f).len() as u64;
            let file = rw(fs, f);
            if rng.random_bool(0.5) {
                let len = offset(rng, size).min(6 * BS);
                file.set_len(len).expect(what);
                p.data(f).resize(len as usize, 0);
            } else {
                let off = offset(rng, size);
                let len = rng.random_range(1..3 * BS);
                let flags = FallocFlags {
                    punch_hole: true,
                    keep_size: true,
                    ..Default::default()
                };
                file.fallocate(flags, off, len).expect(what);
                let data = p.data(f);
                let end = ((off + len) as usize).min(data.len());
                if (off as usize) < end {
                    data[off as usize..end].fill(0);
                }
            }
        }
        16..=18 => {
            if files.len() < 2 {
                return;
            }
            let s = pick(rng, &files);
            let t = pick(rng, &files);
            if s == t {
                return;
            }
            if !data_sharing(fs, p, rng, op, s, t, what) {
                return;
            }
        }
        _ => unreachable!(),
    }
    RAN[op as usize].fetch_add(1, Ordering::Relaxed);
}

/// Clone, dedupe or copy between files `s` and `t` of one part.
fn data_sharing(
    fs: &Fs,
    p: &mut Part,
    rng: &mut SmallRng,
    op: u32,
    s: u64,
    t: u64,
    what: &mut String,
) -> bool {
    let (src, dst) = (rw(fs, s), rw(fs, t));
    let ssize = p.data(s).len() as u64;
    let tsize = p.data(t).len() as u64;
    if ssize == 0 {
        return false;
    }
    let so = rng.random_range(0..ssize.div_ceil(BS)) * BS;
    match op {
        16 => {
            // Whole blocks, or up to the source's end of file (then only to
            // or past the destination's end).
            let doff = rng.random_range(0..=tsize / BS + 1) * BS;
            let mut len = rng.random_range(1..4) * BS;
            if so + len >= ssize {
                len = ssize - so;
                if !len.is_multiple_of(BS) && doff + len < tsize {
                    return false;
                }
            }
            *what = format!("{what}: clone {s}@{so} -> {t}@{doff} len {len}");
            assert_eq!(dst.clone_range(&src, so, doff, len).expect(what), len);
            let bytes = p.data(s)[so as usize..(so + len) as usize].to_vec();
            put(p.data(t), doff, &bytes);
        }
        17 => {
            if tsize < BS {
                return false;
            }
            let doff = rng.random_range(0..tsize / BS) * BS;
            let len = (rng.random_range(1..3) * BS)
                .min((ssize - so) / BS * BS)
                .min((tsize - doff) / BS * BS);
            if len == 0 {
                return false;
            }
            *what = format!("{what}: dedupe {s}@{so} -> {t}@{doff} len {len}");
            let r = src.dedupe_range(so, len, &[(&dst, doff)]).expect(what);
            let a = p.data(s)[so as usize..(so + len) as usize].to_vec();
            let same = a == p.data(t)[doff as usize..(doff + len) as usize];
            let want = if same {
                SAME.fetch_add(1, Ordering::Relaxed);
                DedupeStatus::Same
            } else {
                DedupeStatus::Differs
            };
            assert_eq!(r[0].status, want, "{what}");
        }
        _ => {
            let so = rng.random_range(0..ssize + BS);
            let doff = offset(rng, tsize).min(6 * BS);
            let len = rng.random_range(1..3 * BS);
            *what = format!("{what}: copy {s}@{so} -> {t}@{doff} len {len}");
            let got = dst.copy_range(&src, so, doff, len).expect(what);
            let n = len.min(ssize.saturating_sub(so));
            assert_eq!(got, n, "{what}");
            if n > 0 {
                let bytes = p.data(s)[so as usize..(so + n) as usize].to_vec();
                put(p.data(t), doff, &bytes);
            }
        }
    }
    true
}

/// `rename(d, n, d2, n2, flags)` in the model, in the order daxfs and
/// Linux check; applied when it succeeds.
fn rename_model(p: &mut Part, d: u64, n: &[u8], d2: u64, n2: &[u8], flags: RenameFlags) -> Res {
    let Some(src) = p.lookup(d, n) else {
        return Err("ENOENT");
    };
    let dst = p.lookup(d2, n2);
    if flags.exchange && dst.is_none() {
        return Err("ENOENT");
    }
    if flags.noreplace && dst.is_some() {
        return Err("EEXIST");
    }
    if dst == Some(src) {
        return Ok(());
    }
    if p.below(src, d2) {
        return Err("EINVAL");
    }
    if let Some(t) = dst {
        if p.below(t, d) {
            return Err(if flags.exchange {
                "EINVAL"
            } else {
                "ENOTEMPTY"
            });
        }
        if !flags.exchange {
            match (p.is_dir(src), p.is_dir(t)) {
                (true, false) => return Err("ENOTDIR"),
                (false, true) => return Err("EISDIR"),
                (true, true) if !p.entries(t).is_empty() => return Err("ENOTEMPTY"),
                _ => {}
            }
        }
    }
    let set_parent = |p: &mut Part, ino: u64, to: u64| {
        if let Kind::Dir { parent, .. } = &mut p.nodes.get_mut(&ino).unwrap().kind {
            *parent = to;
        }
    };
    if flags.exchange {
        let t = dst.unwrap();
        p.entries_mut(d).insert(n.to_vec(), t);
        p.entries_mut(d2).insert(n2.to_vec(), src);
        set_parent(p, t, d);
        set_parent(p, src, d2);
    } else {
        p.entries_mut(d).remove(n);
        if dst.is_some() {
            p.drop_name(d2, n2);
        }
        p.entries_mut(d2).insert(n2.to_vec(), src);
        set_parent(p, src, d2);
    }
    Ok(())
}

/// Moves a file of one name between part `a` (directory `d`) and part `b`
/// (directory `d2`) by a plain or NOREPLACE rename; the caller holds the
/// shared part's lock.
fn cross_rename(fs: &Fs, a: &mut Part, b: &mut Part, rng: &mut SmallRng, what: &mut String) {
    let d = pick(rng, &a.dirs());
    let d2 = pick(rng, &b.dirs());
    let (n, n2) = (name(rng), name(rng));
    let src = a.lookup(d, &n);
    let dst = b.lookup(d2, &n2);
    // Only a non-directory of one name, onto nothing or a non-directory.
    let Some(src) = src else { return };
    if a.is_dir(src) || a.nlink(src) != 1 || dst.is_some_and(|t| b.is_dir(t)) {
        return;
    }
    let flags = if rng.random_bool(0.3) {
        RenameFlags::NOREPLACE
    } else {
        RenameFlags::default()
    };
    *what = format!(
        "cross rename {d}/{} -> {d2}/{} {flags:?}",
        String::from_utf8_lossy(&n),
        String::from_utf8_lossy(&n2)
    );
    let got = en(fs.rename_at(d, &n, d2, &n2, flags));
    if flags.noreplace && dst.is_some() {
        assert_eq!(got, Err("EEXIST"), "{what}");
        return;
    }
    assert_eq!(got, Ok(()), "{what}");
    a.entries_mut(d).remove(&n);
    let node = a.nodes.remove(&src).unwrap();
    if dst.is_some() {
        b.drop_name(d2, &n2);
    }
    b.entries_mut(d2).insert(n2, src);
    b.nodes.insert(src, node);
}

/// Compares part `p` with the file system: every directory's entries,
/// every inode's attributes, bytes and extended attributes.
fn compare(fs: &Fs, p: &Part, label: &str) {
    for (&ino, node) in &p.nodes {
        let st = fs
            .getattr(ino)
            .unwrap_or_else(|e| panic!("{label}: inode {ino}: {e}"));
        let kind = match &node.kind {
            Kind::File(_) => FileKind::File,
            Kind::Dir { .. } => FileKind::Dir,
            Kind::Sym(_) => FileKind::Symlink,
            Kind::Fifo => FileKind::Fifo,
            Kind::Chr(_) => FileKind::CharDev,
        };
        assert_eq!(
            (st.kind, st.perm, st.nlink),
            (kind, node.perm, p.nlink(ino)),
            "{label}: inode {ino} kind, mode, links"
        );
        match &node.kind {
            Kind::File(data) => {
                assert_eq!(st.size, data.len() as u64, "{label}: size of {ino}");
                let f = fs.open_ino(ino, &OpenOptions::read_only()).unwrap();
                let mut buf = vec![0xaa; data.len()];
                assert_eq!(f.read_at(0, &mut buf).unwrap(), data.len());
                assert!(buf == *data, "{label}: bytes of inode {ino} differ");
            }
            Kind::Dir { entries, parent } => {
                let got: BTreeMap<Vec<u8>, (u64, FileKind)> = fs
                    .readdir_ino(ino, 0, usize::MAX)
                    .unwrap()
                    .into_iter()
                    .map(|e| (e.name, (e.ino, e.kind)))
                    .collect();
                let mut want: BTreeMap<Vec<u8>, (u64, FileKind)> = entries
                    .iter()
                    .map(|(n, i)| (n.clone(), (*i, fs.getattr(*i).unwrap().kind)))
                    .collect();
                want.insert(b".".to_vec(), (ino, FileKind::Dir));
                want.insert(b"..".to_vec(), (*parent, FileKind::Dir));
                assert_eq!(got, want, "{label}: entries of directory {ino}");
            }
            Kind::Sym(t) => assert_eq!(&fs.readlink_ino(ino).unwrap(), t, "{label}"),
            Kind::Fifo => assert_eq!(st.rdev, 0),
            Kind::Chr(r) => assert_eq!(st.rdev, *r),
        }
        let mut names = fs.listxattr_ino(ino).unwrap();
        names.sort();
        let want: Vec<Vec<u8>> = node.xattrs.keys().cloned().collect();
        assert_eq!(names, want, "{label}: attribute names of {ino}");
        for (n, v) in &node.xattrs {
            assert_eq!(&fs.getxattr_ino(ino, n).unwrap(), v, "{label}: {ino}");
        }
    }
}

fn compare_all(fs: &Fs, parts: &[Part], label: &str) {
    let root = fs.root_ino();
    let top: BTreeMap<Vec<u8>, u64> = fs
        .readdir_ino(root, 0, usize::MAX)
        .unwrap()
        .into_iter()
        .filter(|e| e.name != b"." && e.name != b"..")
        .map(|e| (e.name, e.ino))
        .collect();
    assert_eq!(
        top.values().copied().collect::<Vec<_>>(),
        parts.iter().map(|p| p.top).collect::<Vec<_>>(),
        "{label}: the root's entries"
    );
    for p in parts {
        compare(fs, p, label);
    }
    // No inode the model does not know of (none leaked, none kept).
    let model: usize = parts.iter().map(|p| p.nodes.len()).sum();
    assert_eq!(fs.info().inodes, model as u64 + 1, "{label}: inodes in use");
}

fn run(seed: u64) {
    let (dev, fs) = new_fs(16);
    let root = fs.root_ino();
    let mut parts = vec![];
    for t in 0..THREADS {
        parts.push(Part::new(
            fs.mkdir_at(root, format!("t{t}"), 0o755).unwrap().ino,
        ));
    }
    let shared = Arc::new(Mutex::new(Part::new(
        fs.mkdir_at(root, "zshared", 0o755).unwrap().ino,
    )));
    let fs = Arc::new(fs);
    let hs: Vec<_> = parts
        .into_iter()
        .enumerate()
        .map(|(t, mut own)| {
            let (fs, shared) = (fs.clone(), shared.clone());
            std::thread::spawn(move || {
                let mut rng = SmallRng::seed_from_u64(seed * 1000 + t as u64);
                let mut what = String::new();
                for i in 0..OPS {
                    let r = rng.random_range(0..10);
                    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        if r < 6 {
                            step(&fs, &mut own, &mut rng, &mut what);
                        } else {
                            let mut sh = shared.lock().unwrap();
                            if r == 9 {
                                if rng.random_bool(0.5) {
                                    cross_rename(&fs, &mut own, &mut sh, &mut rng, &mut what);
                                } else {
                                    cross_rename(&fs, &mut sh, &mut own, &mut rng, &mut what);
                                }
                            } else {
                                step(&fs, &mut sh, &mut rng, &mut what);
                            }
                        }
                    }));
                    if let Err(e) = res {
                        eprintln!("seed {seed} thread {t} step {i}: {what}");
                        std::panic::resume_unwind(e);
                    }
                }
                own
            })
        })
        .collect();
    let mut parts: Vec<Part> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    let fs = Arc::try_unwrap(fs).unwrap_or_else(|_| panic!("threads are done"));
    parts.push(Arc::try_unwrap(shared).unwrap().into_inner().unwrap());
    compare_all(&fs, &parts, &format!("seed {seed}"));
    drop(fs);
    assert_fsck(&*dev);
    let fs = daxfs::Fs::mount(dev.clone(), &daxfs::MountOptions::default()).unwrap();
    compare_all(&fs, &parts, &format!("seed {seed} after remount"));
    drop(fs);
    assert_fsck(&*dev);
}

#[test]
fn four_threads_against_the_model() {
    let seeds: Vec<u64> = match std::env::var("DAXFS_THREADS_SEED") {
        Ok(s) => vec![s.parse().expect("DAXFS_THREADS_SEED: a number")],
        Err(_) => vec![1, 2, 3, 4],
    };
    for seed in seeds {
        run(seed);
    }
    let ran: Vec<usize> = RAN.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    let same = SAME.load(Ordering::Relaxed);
    eprintln!("operations run, by kind: {ran:?}; dedupes of equal ranges: {same}");
    assert!(
        ran.iter().all(|&n| n > 0),
        "a kind of operation never ran: {ran:?}"
    );
}
