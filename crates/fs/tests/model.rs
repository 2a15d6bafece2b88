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
        if dst.is_some() && a.starts_with(&format!("{b}/")) {
            // Onto a directory above the source: Linux checks this first.
            return Err("ENOTEMPTY");
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

const BS: u64 = 4096;

impl Model {
    fn file(&self, p: &str) -> Option<(u64, Vec<u8>)> {
        let ino = *self.paths.get(p)?;
        match self.nodes.get(&ino) {
            Some(Node::File(d)) => Some((ino, d.clone())),
            _ => None,
        }
    }
    fn set(&mut self, ino: u64, d: Vec<u8>) {
        self.nodes.insert(ino, Node::File(d));
    }
    /// FICLONERANGE's rules.
    fn clone_range(
        &mut self,
        src: &str,
        dst: &str,
        so: u64,
        doff: u64,
        len: u64,
    ) -> Result<u64, &'static str> {
        let (si, sd) = self.file(src).ok_or("skip")?;
        let (di, mut dd) = self.file(dst).ok_or("skip")?;
        if !so.is_multiple_of(BS) || !doff.is_multiple_of(BS) {
            return Err("EINVAL");
        }
        let (ss, ds) = (sd.len() as u64, dd.len() as u64);
        let len = if len == 0 {
            if so > ss {
                return Err("EINVAL");
            }
            ss - so
        } else {
            len
        };
        if len == 0 {
            return Ok(0);
        }
        if so >= ss || so + len > ss {
            return Err("EINVAL");
        }
        let bcount = if so + len == ss {
            if len % BS != 0 && doff + len < ds {
                return Err("EINVAL");
            }
            ss.div_ceil(BS) * BS - so
        } else {
            if len % BS != 0 {
                return Err("EINVAL");
            }
            len
        };
        if si == di && doff < so + bcount && so < doff + bcount {
            return Err("EINVAL");
        }
        let end = (doff + len) as usize;
        if dd.len() < end {
            dd.resize(end, 0);
        }
        dd[doff as usize..end].copy_from_slice(&sd[so as usize..(so + len) as usize]);
        self.set(di, dd);
        Ok(len)
    }
    /// FIDEDUPERANGE's rules for one destination: Ok(true) same, Ok(false) differs.
    fn dedupe(
        &self,
        src: &str,
        dst: &str,
        so: u64,
        len: u64,
        doff: u64,
    ) -> Result<Result<bool, i32>, &'static str> {
        let (si, sd) = self.file(src).ok_or("skip")?;
        let (di, dd) = self.file(dst).ok_or("skip")?;
        if len == 0 {
            return Ok(Ok(true));
        }
        if !so.is_multiple_of(BS) || so + len > sd.len() as u64 {
            return Err("EINVAL");
        }
        if !doff.is_multiple_of(BS) || doff + len > dd.len() as u64 {
            return Ok(Err(22));
        }
        let count = if so + len == sd.len() as u64 && doff + len == dd.len() as u64 {
            len
        } else {
            len / BS * BS
        };
        if count == 0 {
            return Ok(Ok(true));
        }
        let bcount = if count % BS != 0 {
            count.div_ceil(BS) * BS
        } else {
            count
        };
        if si == di && doff < so + bcount && so < doff + bcount {
            return Ok(Err(22));
        }
        Ok(Ok(
            sd[so as usize..(so + count) as usize] == dd[doff as usize..(doff + count) as usize]
        ))
    }
    /// copy_file_range's rules.
    fn copy_range(
        &mut self,
        src: &str,
        dst: &str,
        so: u64,
        doff: u64,
        len: u64,
    ) -> Result<u64, &'static str> {
        let (si, sd) = self.file(src).ok_or("skip")?;
        let (di, mut dd) = self.file(dst).ok_or("skip")?;
        let ss = sd.len() as u64;
        if so >= ss || len == 0 {
            return Ok(0);
        }
        let count = len.min(ss - so);
        if si == di && doff < so + count && so < doff + count {
            return Err("EINVAL");
        }
        let end = (doff + count) as usize;
        if dd.len() < end {
            dd.resize(end, 0);
        }
        dd[doff as usize..end].copy_from_slice(&sd[so as usize..(so + count) as usize]);
        self.set(di, dd);
        Ok(count)
    }
}

/// A length for a sharing operation: 0 (to EOF), whole blocks, or odd bytes.
fn share_len(rng: &mut SmallRng) -> u64 {
    match rng.random_range(0..4) {
        0 => 0,
        1 => rng.random_range(1..40u64) * BS,
        2 => rng.random_range(1..200_000u64),
        _ => rng.random_range(1..8u64) * BS,
    }
}

fn share_off(rng: &mut SmallRng) -> u64 {
    if rng.random_range(0..10) == 0 {
        rng.random_range(0..300_000u64)
    } else {
        rng.random_range(0..80u64) * BS
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
    // Successful clones, dedupes that shared, copies.
    let mut stats = (0u32, 0u32, 0u32);
    for step in 0..steps {
        let p = PATHS[rng.random_range(0..PATHS.len())];
        let q = PATHS[rng.random_range(0..PATHS.len())];
        let op = rng.random_range(0..130);
        // Sharing operations act on two existing files (often the same one).
        let files: Vec<&'static str> = PATHS
            .iter()
            .copied()
            .filter(|x| matches!(m.kind(x), Some(Node::File(_))))
            .collect();
        let (p, q) = if (100..=126).contains(&op) && !files.is_empty() {
            let a = files[rng.random_range(0..files.len())];
            let b = if rng.random_bool(0.2) {
                a
            } else {
                files[rng.random_range(0..files.len())]
            };
            (a, b)
        } else {
            (p, q)
        };
        let fsize = |x: &str| m.file(x).map_or(0, |f| f.1.len() as u64);
        let (psz, qsz) = (fsize(p), fsize(q));
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
            100..=109 => {
                // clone q <- p, mostly from inside p into or just past q
                let so = if rng.random_bool(0.8) {
                    rng.random_range(0..=psz / BS) * BS
                } else {
                    share_off(&mut rng)
                };
                let doff = if rng.random_bool(0.8) {
                    rng.random_range(0..=qsz / BS + 2) * BS
                } else {
                    share_off(&mut rng)
                };
                let len = if rng.random_bool(0.5) && psz > so {
                    [0, psz - so, ((psz - so) / BS).max(1) * BS][rng.random_range(0..3)]
                } else {
                    share_len(&mut rng)
                };
                let want = m.clone_range(p, q, so, doff, len);
                if want != Err("skip") {
                    let got = res((|| {
                        let s = fs.open(p, &OpenOptions::read_write())?;
                        let d = fs.open(q, &OpenOptions::read_write())?;
                        d.clone_range(&s, so, doff, len)
                    })());
                    assert_eq!(
                        got, want,
                        "step {step}: clone {p} -> {q} ({so}, {doff}, {len})"
                    );
                    stats.0 += u32::from(matches!(got, Ok(n) if n > 0));
                }
                vec![p, q]
            }
            110..=115 => {
                let so = rng.random_range(0..=psz / BS) * BS;
                let doff = rng.random_range(0..=qsz / BS) * BS;
                let mut len = if psz > so {
                    rng.random_range(1..=psz - so)
                } else {
                    share_len(&mut rng)
                };
                // Half the time make the ranges equal first (by a clone), so dedupe shares.
                if rng.random_bool(0.5) && psz > so && qsz > doff {
                    len = len.min(qsz - doff) / BS * BS;
                    if len > 0 && m.clone_range(p, q, so, doff, len).is_ok() {
                        let s = fs.open(p, &OpenOptions::read_write()).unwrap();
                        let d = fs.open(q, &OpenOptions::read_write()).unwrap();
                        d.clone_range(&s, so, doff, len).unwrap();
                        // Now overwrite q's range with the same bytes so it is
                        // equal but not shared.
                        let bytes =
                            m.file(q).unwrap().1[doff as usize..(doff + len) as usize].to_vec();
                        d.write_at(doff, &bytes).unwrap();
                    }
                }
                let want = m.dedupe(p, q, so, len, doff);
                if want != Err("skip") {
                    let got = (|| {
                        let s = fs.open(p, &OpenOptions::read_write())?;
                        let d = fs.open(q, &OpenOptions::read_write())?;
                        s.dedupe_range(so, len, &[(&d, doff)])
                    })();
                    let got = match got {
                        Err(e) => Err(e.errno_name()),
                        Ok(r) => Ok(match &r[0].status {
                            daxfs::DedupeStatus::Same => Ok(true),
                            daxfs::DedupeStatus::Differs => Ok(false),
                            daxfs::DedupeStatus::Error(e) => Err(*e),
                        }),
                    };
                    assert_eq!(
                        got, want,
                        "step {step}: dedupe {p} -> {q} ({so}, {len}, {doff})"
                    );
                    stats.1 += u32::from(got == Ok(Ok(true)) && len > 0);
                }
                vec![p, q]
            }
            116..=122 => {
                let so = rng.random_range(0..=psz + 100);
                let doff = rng.random_range(0..=qsz + 100);
                let len = rng.random_range(0..100_000u64);
                let (so, doff) = if rng.random_bool(0.5) {
                    (so / BS * BS + 7, doff / BS * BS + 7)
                } else {
                    (so, doff)
                };
                let want = m.copy_range(p, q, so, doff, len);
                if want != Err("skip") {
                    let got = res((|| {
                        let s = fs.open(p, &OpenOptions::read_write())?;
                        let d = fs.open(q, &OpenOptions::read_write())?;
                        d.copy_range(&s, so, doff, len)
                    })());
                    assert_eq!(
                        got, want,
                        "step {step}: copy_range {p} -> {q} ({so}, {doff}, {len})"
                    );
                    stats.2 += u32::from(matches!(got, Ok(n) if n > 0));
                }
                vec![p, q]
            }
            123..=126 => {
                if let Some(Node::File(_)) = m.kind(p) {
                    let off = rng.random_range(0..300_000u64);
                    let len = rng.random_range(1..200_000u64);
                    let f = fs.open(p, &OpenOptions::read_write()).unwrap();
                    f.fallocate(
                        FallocFlags {
                            unshare: true,
                            keep_size: true,
                            ..Default::default()
                        },
                        off,
                        len,
                    )
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
        // fsck's cross-checks (refcounts, reverse map, free space) hold
        // after every step.
        assert_fsck(&*dev);
        if step % 100 == 99 {
            check_all(&fs, &m, step);
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
        "seed {seed}: {} names, {files} non-empty files, {dirs} directories at the end; {} clones, {} dedupes, {} copies",
        m.paths.len(),
        stats.0,
        stats.1,
        stats.2
    );
    assert!(
        stats.0 > 5 && stats.2 > 5,
        "sharing operations must succeed often enough to test anything"
    );
    assert!(
        m.paths.len() >= 4 && files >= 1,
        "the random run ended nearly empty"
    );
}

#[test]
fn model_seed_1() {
    run(1, 2000);
}

#[test]
fn model_seed_2() {
    run(2, 2000);
}

#[test]
fn model_seed_3() {
    run(3, 2000);
}

#[test]
fn model_seed_4() {
    run(4, 2000);
}
