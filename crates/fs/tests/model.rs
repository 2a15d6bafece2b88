//! Seeded model-based test: random operations of every kind applied both to
//! daxfs and to an in-memory model, compared after every step (result, errno
//! and the touched file), with full comparisons, fsck and remounts between.
mod common;
use common::*;
use daxfs::{FallocFlags, FileKind, Fs, FsError, OpenOptions};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap};

#[derive(Clone, Debug)]
enum Node {
    File(Vec<u8>),
    Dir,
    Sym(Vec<u8>),
}

#[derive(Default)]
struct Model {
    paths: BTreeMap<String, u64>,
    nodes: HashMap<u64, Node>,
    next: u64,
}

impl Model {
    fn new() -> Model {
        let mut m = Model {
            next: 2,
            ..Default::default()
        };
        m.paths.insert("/".into(), 1);
        m.nodes.insert(1, Node::Dir);
        m
    }
    fn kind(&self, p: &str) -> Option<&Node> {
        self.paths.get(p).and_then(|i| self.nodes.get(i))
    }
    fn is_dir(&self, p: &str) -> bool {
        matches!(self.kind(p), Some(Node::Dir))
    }
    /// Errors of resolving the parent of `p`.
    fn parent_err(&self, p: &str) -> Option<&'static str> {
        // Walk every ancestor: a missing one is ENOENT, a non-directory ENOTDIR.
        let mut acc = String::new();
        let comps: Vec<&str> = p.split('/').filter(|c| !c.is_empty()).collect();
        for c in &comps[..comps.len() - 1] {
            acc.push('/');
            acc.push_str(c);
            match self.kind(&acc) {
                None => return Some("ENOENT"),
                Some(Node::Dir) => {}
                Some(_) => return Some("ENOTDIR"),
            }
        }
        None
    }
    fn children(&self, p: &str) -> usize {
        let pre = if p == "/" {
            "/".to_string()
        } else {
            format!("{p}/")
        };
        self.paths
            .keys()
            .filter(|k| k.starts_with(&pre) && k.len() > pre.len() && !k[pre.len()..].contains('/'))
            .count()
    }
    fn nlink(&self, ino: u64) -> u32 {
        match self.nodes.get(&ino) {
            Some(Node::Dir) => {
                let p = self
                    .paths
                    .iter()
                    .find(|(_, i)| **i == ino)
                    .map(|(p, _)| p.clone())
                    .unwrap_or_default();
                let pre = if p == "/" {
                    "/".to_string()
                } else {
                    format!("{p}/")
                };
                2 + self
                    .paths
                    .iter()
                    .filter(|(k, i)| {
                        k.starts_with(&pre)
                            && !k[pre.len()..].contains('/')
                            && k.len() > pre.len()
                            && matches!(self.nodes.get(i), Some(Node::Dir))
                    })
                    .count() as u32
            }
            _ => self.paths.values().filter(|&&i| i == ino).count() as u32,
        }
    }
    fn add(&mut self, p: &str, n: Node) -> Result<(), &'static str> {
        if let Some(e) = self.parent_err(p) {
            return Err(e);
        }
        if self.paths.contains_key(p) {
            return Err("EEXIST");
        }
        let ino = self.next;
        self.next += 1;
        self.paths.insert(p.into(), ino);
        self.nodes.insert(ino, n);
        Ok(())
    }
    fn remove_name(&mut self, p: &str) {
        if let Some(ino) = self.paths.remove(p)
            && !self.paths.values().any(|&i| i == ino)
        {
            self.nodes.remove(&ino);
        }
    }
    fn unlink(&mut self, p: &str) -> Result<(), &'static str> {
        if let Some(e) = self.parent_err(p) {
            return Err(e);
        }
        match self.kind(p) {
            None => Err("ENOENT"),
            Some(Node::Dir) => Err("EISDIR"),
            _ => {
                self.remove_name(p);
                Ok(())
            }
        }
    }
    fn rmdir(&mut self, p: &str) -> Result<(), &'static str> {
        if let Some(e) = self.parent_err(p) {
            return Err(e);
        }
        match self.kind(p) {
            None => Err("ENOENT"),
            Some(Node::Dir) if self.children(p) > 0 => Err("ENOTEMPTY"),
            Some(Node::Dir) => {
                self.remove_name(p);
                Ok(())
            }
            _ => Err("ENOTDIR"),
        }
    }
    fn link(&mut self, a: &str, b: &str) -> Result<(), &'static str> {
        if let Some(e) = self.parent_err(a) {
            return Err(e);
        }
        let Some(&ino) = self.paths.get(a) else {
            return Err("ENOENT");
        };
        if self.is_dir(a) {
            return Err("EPERM");
        }
        if let Some(e) = self.parent_err(b) {
            return Err(e);
        }
        if self.paths.contains_key(b) {
            return Err("EEXIST");
        }
        self.paths.insert(b.into(), ino);
        Ok(())
    }
    fn rename(&mut self, a: &str, b: &str) -> Result<(), &'static str> {
        if let Some(e) = self.parent_err(a) {
            return Err(e);
        }
        if let Some(e) = self.parent_err(b) {
            return Err(e);
        }
        let Some(&src) = self.paths.get(a) else {
            return Err("ENOENT");
        };
        let dst = self.paths.get(b).copied();
        if dst == Some(src) {
            return Ok(());
        }
        let src_dir = self.is_dir(a);
        if src_dir && (b.starts_with(&format!("{a}/"))) {
            return Err("EINVAL");
        }
        if dst.is_some() {
            match (src_dir, self.is_dir(b)) {
                (true, false) => return Err("ENOTDIR"),
                (false, true) => return Err("EISDIR"),
                (true, true) if self.children(b) > 0 => return Err("ENOTEMPTY"),
                _ => {}
            }
            self.remove_name(b);
        }
        // Move `a` and everything below it.
        let pre = format!("{a}/");
        let moved: Vec<(String, u64)> = self
            .paths
            .iter()
            .filter(|(k, _)| *k == a || k.starts_with(&pre))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        for (k, _) in &moved {
            self.paths.remove(k);
        }
        for (k, v) in moved {
            self.paths.insert(format!("{b}{}", &k[a.len()..]), v);
        }
        Ok(())
    }
}

fn res<T>(r: Result<T, FsError>) -> Result<T, &'static str> {
    r.map_err(|e| {
        if std::env::var_os("MODEL_DEBUG").is_some() {
            eprintln!("error: {e}");
        }
        e.errno_name()
    })
}

const PATHS: &[&str] = &[
    "/a", "/a/b", "/c", "/x", "/y", "/a/x", "/a/y", "/a/b/x", "/c/x", "/c/z", "/a/b/c", "/x/q",
];
const SYMS: &[&str] = &["/s0", "/s1"];

fn file_data(fs: &Fs, p: &str) -> Vec<u8> {
    let f = fs.open(p, &OpenOptions::read_only()).unwrap();
    let size = f.stat().size as usize;
    let mut buf = vec![0u8; size];
    assert_eq!(f.read_at(0, &mut buf).unwrap(), size);
    buf
}

fn check_path(fs: &Fs, m: &Model, p: &str, step: usize) {
    match m.kind(p) {
        None => assert!(fs.lstat(p).is_err(), "step {step}: {p} should not exist"),
        Some(n) => {
            let st = fs
                .lstat(p)
                .unwrap_or_else(|e| panic!("step {step}: {p}: {e}"));
            let ino = m.paths[p];
            assert_eq!(st.nlink, m.nlink(ino), "step {step}: nlink of {p}");
            match n {
                Node::Dir => assert_eq!(st.kind, FileKind::Dir),
                Node::Sym(t) => assert_eq!(&fs.readlink(p).unwrap(), t),
                Node::File(d) => {
                    assert_eq!(st.kind, FileKind::File);
                    assert_eq!(st.size, d.len() as u64, "step {step}: size of {p}");
                    assert!(
                        file_data(fs, p) == *d,
                        "step {step}: contents of {p} differ"
                    );
                }
            }
        }
    }
}

fn check_all(fs: &Fs, m: &Model, step: usize) {
    for p in PATHS.iter().chain(SYMS) {
        check_path(fs, m, p, step);
    }
    // Directory listings match.
    for (p, ino) in &m.paths {
        if matches!(m.nodes.get(ino), Some(Node::Dir)) {
            let mut got: Vec<String> = fs
                .readdir(p)
                .unwrap()
                .iter()
                .map(|e| e.name_lossy())
                .collect();
            got.sort();
            let pre = if p == "/" {
                "/".to_string()
            } else {
                format!("{p}/")
            };
            let mut want: Vec<String> = m
                .paths
                .keys()
                .filter(|k| {
                    k.starts_with(&pre) && k.len() > pre.len() && !k[pre.len()..].contains('/')
                })
                .map(|k| k[pre.len()..].to_string())
                .collect();
            want.sort();
            assert_eq!(got, want, "step {step}: listing of {p}");
        }
    }
}

fn run(seed: u64, steps: usize) {
    let (dev, mut fs) = new_fs(64);
    let mut m = Model::new();
    let mut rng = SmallRng::seed_from_u64(seed);
    for step in 0..steps {
        let p = PATHS[rng.random_range(0..PATHS.len())];
        let q = PATHS[rng.random_range(0..PATHS.len())];
        let op = rng.random_range(0..100);
        let touched: Vec<&str> = match op {
            0..=9 => {
                assert_eq!(
                    res(fs.create(p).map(drop)),
                    m.add(p, Node::File(vec![])),
                    "step {step}: create {p}"
                );
                vec![p]
            }
            10..=16 => {
                assert_eq!(
                    res(fs.mkdir(p, 0o755)),
                    m.add(p, Node::Dir),
                    "step {step}: mkdir {p}"
                );
                vec![p]
            }
            17..=40 => {
                // write
                let off = rng.random_range(0..300_000u64);
                let len = rng.random_range(1..70_000usize);
                let data = pattern(rng.random(), len);
                let want = match m.kind(p) {
                    Some(Node::File(_)) => Ok(()),
                    Some(Node::Dir) => Err("EISDIR"),
                    _ => Err("skip"),
                };
                if want != Err("skip") {
                    let got = res(fs
                        .open(p, &OpenOptions::read_write())
                        .and_then(|f| f.write_at(off, &data).map(drop)));
                    assert_eq!(got, want, "step {step}: write {p}");
                    if let Some(&ino) = m.paths.get(p)
                        && let Some(Node::File(d)) = m.nodes.get_mut(&ino)
                    {
                        let end = off as usize + len;
                        if d.len() < end {
                            d.resize(end, 0);
                        }
                        d[off as usize..end].copy_from_slice(&data);
                    }
                }
                vec![p]
            }
            41..=47 => {
                let len = rng.random_range(0..350_000u64);
                if let Some(Node::File(_)) = m.kind(p) {
                    fs.truncate(p, len).unwrap();
                    let ino = m.paths[p];
                    if let Some(Node::File(d)) = m.nodes.get_mut(&ino) {
                        d.resize(len as usize, 0);
                    }
                }
                vec![p]
            }
            48..=53 => {
                if let Some(Node::File(_)) = m.kind(p) {
                    let off = rng.random_range(0..300_000u64);
                    let len = rng.random_range(1..100_000u64);
                    let mode = rng.random_range(0..4);
                    let flags = match mode {
                        0 => FallocFlags::default(),
                        1 => FallocFlags {
                            keep_size: true,
                            ..Default::default()
                        },
                        2 => FallocFlags {
                            keep_size: true,
                            punch_hole: true,
                            ..Default::default()
                        },
                        _ => FallocFlags {
                            zero_range: true,
                            keep_size: rng.random(),
                            ..Default::default()
                        },
                    };
                    let f = fs.open(p, &OpenOptions::read_write()).unwrap();
                    f.fallocate(flags, off, len).unwrap();
                    let ino = m.paths[p];
                    if let Some(Node::File(d)) = m.nodes.get_mut(&ino) {
                        let end = (off + len) as usize;
                        if !flags.keep_size && d.len() < end {
                            d.resize(end, 0);
                        }
                        if flags.punch_hole || flags.zero_range {
                            let s = (off as usize).min(d.len());
                            let t = end.min(d.len());
                            d[s..t].fill(0);
                        }
                    }
                }
                vec![p]
            }
            54..=62 => {
                assert_eq!(res(fs.unlink(p)), m.unlink(p), "step {step}: unlink {p}");
                vec![p]
            }
            63..=68 => {
                assert_eq!(res(fs.rmdir(p)), m.rmdir(p), "step {step}: rmdir {p}");
                vec![p]
            }
            69..=80 => {
                assert_eq!(
                    res(fs.rename(p, q)),
                    m.rename(p, q),
                    "step {step}: rename {p} {q}"
                );
                PATHS.to_vec()
            }
            81..=87 => {
                assert_eq!(
                    res(fs.link(p, q)),
                    m.link(p, q),
                    "step {step}: link {p} {q}"
                );
                vec![p, q]
            }
            88..=91 => {
                let s = SYMS[rng.random_range(0..SYMS.len())];
                let target = PATHS[rng.random_range(0..PATHS.len())].as_bytes().to_vec();
                if rng.random_bool(0.5) {
                    assert_eq!(
                        res(fs.symlink(&target, s)),
                        m.add(s, Node::Sym(target)),
                        "step {step}: symlink {s}"
                    );
                } else {
                    assert_eq!(res(fs.unlink(s)), m.unlink(s), "step {step}: unlink {s}");
                }
                vec![s]
            }
            92..=95 => {
                if let Some(Node::File(_)) = m.kind(p) {
                    fs.open(p, &OpenOptions::read_only())
                        .unwrap()
                        .fsync()
                        .unwrap();
                }
                vec![p]
            }
            _ => {
                fs = remount(&dev, fs);
                check_all(&fs, &m, step);
                vec![]
            }
        };
        for t in touched {
            check_path(&fs, &m, t, step);
        }
        if step % 100 == 99 {
            check_all(&fs, &m, step);
            assert_fsck(&*dev);
        }
    }
    fs = remount(&dev, fs);
    check_all(&fs, &m, steps);
    assert_fsck(&*dev);
    // The run must have built a non-trivial tree, or it tested nothing.
    let files = m
        .nodes
        .values()
        .filter(|n| matches!(n, Node::File(d) if !d.is_empty()))
        .count();
    let dirs = m.nodes.values().filter(|n| matches!(n, Node::Dir)).count();
    eprintln!(
        "seed {seed}: {} names, {files} non-empty files, {dirs} directories at the end",
        m.paths.len()
    );
    assert!(
        m.paths.len() >= 4 && files >= 1,
        "the random run ended nearly empty"
    );
}

#[test]
fn model_seed_1() {
    run(1, 3000);
}

#[test]
fn model_seed_2() {
    run(2, 3000);
}

#[test]
fn model_seed_3() {
    run(3, 3000);
}

#[test]
fn model_seed_4() {
    run(4, 3000);
}
