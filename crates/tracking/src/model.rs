//! An in-memory model of a reflink file system: the reference [`TrackedFs`].
//!
//! It keeps what a real reflink file system keeps, at extent granularity:
//!
//! - per file, an extent map (file page → physical page run), merged when
//!   neighbours are contiguous;
//! - per physical page, a reference count (how many file pages use it);
//! - a next-fit allocator over a free-extent map, reusing freed space;
//! - a reverse map of `(physical start, file, file index) → length` records
//!   mirroring every extent, in sorted blocks with interval summaries (like an
//!   overlapping rmap B+tree), which answers [`FsQuery::owners_of`] exactly;
//! - per file, its mappings, which answer [`FsQuery::mappings_of`].
//!
//! Copy-on-write happens on a write to a page whose reference count is above
//! one. The model has no data: content only matters to workloads, which know
//! what they wrote.

use std::collections::BTreeMap;

use crate::event::{Event, FileId, MappingId, Phys};
use crate::index::{FsQuery, PageOwner};
use crate::rmap::{Rmap, RmapKey};
use crate::tracked::{FsResult, RmapStats, TrackedFs};

#[derive(Clone, Copy, Debug)]
struct Ext {
    phys: u64,
    len: u64,
}

#[derive(Default)]
struct ModelFile {
    extents: BTreeMap<u64, Ext>,
    size: u64,
    mappings: Vec<MappingId>,
}

#[derive(Clone, Copy)]
struct MapRec {
    file: FileId,
    index: u64,
    len: u64,
}

#[derive(Clone, Copy, Debug)]
enum Run {
    Hole { index: u64, len: u64 },
    Mapped { index: u64, phys: u64, len: u64 },
}

/// The in-memory reflink file system. See the module doc.
pub struct ModelFs {
    files: Vec<Option<ModelFile>>,
    refs: Vec<u32>,
    free: BTreeMap<u64, u64>,
    top: u64,
    cursor: u64,
    rmap: Rmap,
    mappings: Vec<Option<MapRec>>,
    events: Vec<Event>,
}

impl Default for ModelFs {
    fn default() -> Self {
        Self::new()
    }
}

fn no_file(f: FileId) -> crate::tracked::FsError {
    format!("no such file {}", f.0).into()
}

impl ModelFs {
    /// An empty file system on an empty, growable device.
    pub fn new() -> ModelFs {
        ModelFs {
            files: Vec::new(),
            refs: Vec::new(),
            free: BTreeMap::new(),
            top: 0,
            cursor: 0,
            rmap: Rmap::default(),
            mappings: Vec::new(),
            events: Vec::new(),
        }
    }

    /// How many file pages reference each physical page, indexed by page.
    pub fn page_refs(&self) -> &[u32] {
        &self.refs[..self.top as usize]
    }

    /// Reverse-map records (one per extent of every file).
    pub fn rmap_records(&self) -> usize {
        self.rmap.len()
    }

    /// The live files.
    pub fn files(&self) -> Vec<FileId> {
        (0..self.files.len())
            .filter(|&i| self.files[i].is_some())
            .map(|i| FileId(i as u64))
            .collect()
    }

    /// The owners of every physical page, found by scanning every file's
    /// extent map (not the reverse map): an independent oracle for tests.
    pub fn owners_by_scan(&self) -> Vec<Vec<PageOwner>> {
        let mut out = vec![Vec::new(); self.top as usize];
        for (i, f) in self.files.iter().enumerate() {
            let Some(f) = f else { continue };
            for (&idx, e) in &f.extents {
                for k in 0..e.len {
                    out[(e.phys + k) as usize].push(PageOwner {
                        file: FileId(i as u64),
                        index: idx + k,
                    });
                }
            }
        }
        for o in &mut out {
            o.sort_unstable();
        }
        out
    }

    fn file(&self, f: FileId) -> FsResult<&ModelFile> {
        self.files
            .get(f.0 as usize)
            .and_then(|x| x.as_ref())
            .ok_or_else(|| no_file(f))
    }

    fn file_mut(&mut self, f: FileId) -> FsResult<&mut ModelFile> {
        self.files
            .get_mut(f.0 as usize)
            .and_then(|x| x.as_mut())
            .ok_or_else(|| no_file(f))
    }

    fn rmap_insert(&mut self, phys: u64, file: FileId, index: u64, len: u64) {
        self.rmap.insert(
            RmapKey {
                phys,
                file: file.0,
                index,
            },
            len,
        );
    }

    fn rmap_remove(&mut self, phys: u64, file: FileId, index: u64) {
        let v = self.rmap.remove(&RmapKey {
            phys,
            file: file.0,
            index,
        });
        debug_assert!(v.is_some(), "rmap out of step with the extent map");
    }

    /// Bytes the reverse map holds (in memory here; daxfs keeps it on media).
    pub fn rmap_bytes(&self) -> usize {
        self.rmap.memory_bytes()
    }

    /// Splits the extent of `f` that straddles file page `at`, if any.
    fn cut(&mut self, f: FileId, at: u64) -> FsResult<()> {
        let fm = self.file_mut(f)?;
        let Some((&s, &e)) = fm.extents.range(..at).next_back() else {
            return Ok(());
        };
        if s + e.len <= at {
            return Ok(());
        }
        let left = Ext {
            phys: e.phys,
            len: at - s,
        };
        let right = Ext {
            phys: e.phys + (at - s),
            len: s + e.len - at,
        };
        fm.extents.insert(s, left);
        fm.extents.insert(at, right);
        self.rmap_remove(e.phys, f, s);
        self.rmap_insert(left.phys, f, s, left.len);
        self.rmap_insert(right.phys, f, at, right.len);
        Ok(())
    }

    /// Removes pages `[index, index+len)` from `f`'s extent map; returns the
    /// removed pieces as `(index, extent)`.
    fn remove_range(&mut self, f: FileId, index: u64, len: u64) -> FsResult<Vec<(u64, Ext)>> {
        self.cut(f, index)?;
        self.cut(f, index + len)?;
        let fm = self.file_mut(f)?;
        let keys: Vec<u64> = fm
            .extents
            .range(index..index + len)
            .map(|(&k, _)| k)
            .collect();
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            let e = self
                .file_mut(f)?
                .extents
                .remove(&k)
                .expect("key just listed");
            self.rmap_remove(e.phys, f, k);
            out.push((k, e));
        }
        Ok(out)
    }

    /// Adds `[index, index+len) → [phys, phys+len)` to `f` (the range must be
    /// a hole), merging with contiguous neighbours.
    fn insert_range(&mut self, f: FileId, index: u64, phys: u64, len: u64) -> FsResult<()> {
        let fm = self.file_mut(f)?;
        let mut start = index;
        let mut ext = Ext { phys, len };
        let left = fm.extents.range(..index).next_back().map(|(&s, &e)| (s, e));
        let right = fm.extents.get(&(index + len)).copied();
        if let Some((ls, le)) = left
            && ls + le.len == index
            && le.phys + le.len == phys
        {
            fm.extents.remove(&ls);
            start = ls;
            ext = Ext {
                phys: le.phys,
                len: le.len + len,
            };
            self.rmap_remove(le.phys, f, ls);
        }
        if let Some(re) = right
            && phys + len == re.phys
        {
            self.file_mut(f)?.extents.remove(&(index + len));
            ext.len += re.len;
            self.rmap_remove(re.phys, f, index + len);
        }
        self.file_mut(f)?.extents.insert(start, ext);
        self.rmap_insert(ext.phys, f, start, ext.len);
        Ok(())
    }

    /// The holes and mapped pieces of `[index, index+len)` of `f`, in order.
    fn runs(&self, f: FileId, index: u64, len: u64) -> FsResult<Vec<Run>> {
        let fm = self.file(f)?;
        let end = index + len;
        let mut out = Vec::new();
        let mut pos = index;
        let first = fm
            .extents
            .range(..index)
            .next_back()
            .filter(|(s, e)| **s + e.len > index);
        for (&s, e) in first.into_iter().chain(fm.extents.range(index..end)) {
            let a = s.max(index);
            if a > pos {
                out.push(Run::Hole {
                    index: pos,
                    len: a - pos,
                });
            }
            let b = (s + e.len).min(end);
            out.push(Run::Mapped {
                index: a,
                phys: e.phys + (a - s),
                len: b - a,
            });
            pos = b;
        }
        if pos < end {
            out.push(Run::Hole {
                index: pos,
                len: end - pos,
            });
        }
        Ok(out)
    }

    /// Allocates `len` pages, next-fit from the cursor, wrapping once before
    /// growing the device; returns the pieces.
    fn alloc(&mut self, len: u64) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        let mut need = len;
        let mut wrapped = false;
        while need > 0 {
            let next = self.free.range(self.cursor..).next().map(|(&s, &l)| (s, l));
            let (s, take) = match next {
                Some((s, l)) => {
                    let take = l.min(need);
                    self.free.remove(&s);
                    if l > take {
                        self.free.insert(s + take, l - take);
                    }
                    (s, take)
                }
                None if !wrapped && !self.free.is_empty() => {
                    wrapped = true;
                    self.cursor = 0;
                    continue;
                }
                None => {
                    let s = self.top;
                    self.top += need;
                    (s, need)
                }
            };
            need -= take;
            self.cursor = s + take;
            match out.last_mut() {
                Some(last) if last.0 + last.1 == s => last.1 += take,
                _ => out.push((s, take)),
            }
        }
        if self.refs.len() < self.top as usize {
            self.refs.resize(self.top as usize, 0);
        }
        out
    }

    fn free_pages(&mut self, mut s: u64, mut l: u64) {
        if let Some((&ps, &pl)) = self.free.range(..s).next_back()
            && ps + pl == s
        {
            self.free.remove(&ps);
            s = ps;
            l += pl;
        }
        if let Some(nl) = self.free.remove(&(s + l)) {
            l += nl;
        }
        self.free.insert(s, l);
    }

    /// Drops one reference from each page of `[phys, phys+len)`, freeing
    /// pages that reach zero.
    fn unref(&mut self, phys: u64, len: u64) {
        let mut run: Option<(u64, u64)> = None;
        for p in phys..phys + len {
            let r = &mut self.refs[p as usize];
            debug_assert!(*r > 0);
            *r -= 1;
            if *r == 0 {
                match &mut run {
                    Some((s, l)) if *s + *l == p => *l += 1,
                    _ => {
                        if let Some((s, l)) = run.take() {
                            self.free_pages(s, l);
                        }
                        run = Some((p, 1));
                    }
                }
            }
        }
        if let Some((s, l)) = run {
            self.free_pages(s, l);
        }
    }

    fn cow(&mut self, f: FileId, index: u64, old: u64, len: u64) -> FsResult<()> {
        self.remove_range(f, index, len)?;
        let mut at = index;
        for (p, pl) in self.alloc(len) {
            self.insert_range(f, at, p, pl)?;
            let o = old + (at - index);
            for k in 0..pl {
                self.refs[(o + k) as usize] -= 1;
                self.refs[(p + k) as usize] = 1;
            }
            self.events.push(Event::Cow {
                file: f,
                index: at,
                old: Phys(o),
                new: Phys(p),
                len: pl,
            });
            at += pl;
        }
        Ok(())
    }
}

impl FsQuery for ModelFs {
    fn owners_of(&self, phys: Phys, out: &mut Vec<PageOwner>) {
        let p = phys.0;
        self.rmap.covering(p, |k, len| {
            debug_assert!(k.phys <= p && p < k.phys + len);
            out.push(PageOwner {
                file: FileId(k.file),
                index: k.index + (p - k.phys),
            });
        });
    }

    fn mappings_of(&self, file: FileId, index: u64, out: &mut Vec<MappingId>) {
        let Ok(f) = self.file(file) else { return };
        for &m in &f.mappings {
            if let Some(Some(r)) = self.mappings.get(m.0 as usize)
                && r.index <= index
                && index < r.index + r.len
            {
                out.push(m);
            }
        }
    }
}

impl TrackedFs for ModelFs {
    fn create(&mut self) -> FsResult<FileId> {
        self.files.push(Some(ModelFile::default()));
        Ok(FileId(self.files.len() as u64 - 1))
    }

    fn write(&mut self, f: FileId, index: u64, len: u64) -> FsResult<()> {
        for run in self.runs(f, index, len)? {
            match run {
                Run::Hole { index: i, len: l } => {
                    let mut at = i;
                    for (p, pl) in self.alloc(l) {
                        self.insert_range(f, at, p, pl)?;
                        self.refs[p as usize..(p + pl) as usize].fill(1);
                        self.events.push(Event::Map {
                            file: f,
                            index: at,
                            phys: Phys(p),
                            len: pl,
                        });
                        at += pl;
                    }
                }
                Run::Mapped {
                    index: i,
                    phys,
                    len: l,
                } => {
                    let mut k = 0;
                    while k < l {
                        let shared = self.refs[(phys + k) as usize] > 1;
                        let mut j = k + 1;
                        while j < l && (self.refs[(phys + j) as usize] > 1) == shared {
                            j += 1;
                        }
                        if shared {
                            self.cow(f, i + k, phys + k, j - k)?;
                        }
                        k = j;
                    }
                }
            }
        }
        let fm = self.file_mut(f)?;
        fm.size = fm.size.max(index + len);
        Ok(())
    }

    fn clone_range(
        &mut self,
        src: FileId,
        si: u64,
        dst: FileId,
        di: u64,
        len: u64,
    ) -> FsResult<()> {
        if src == dst && si < di + len && di < si + len {
            return Err("overlapping clone within one file".into());
        }
        let runs = self.runs(src, si, len)?;
        self.punch(dst, di, len)?;
        for run in runs {
            if let Run::Mapped {
                index,
                phys,
                len: l,
            } = run
            {
                let d = di + (index - si);
                self.insert_range(dst, d, phys, l)?;
                for r in &mut self.refs[phys as usize..(phys + l) as usize] {
                    *r += 1;
                }
                self.events.push(Event::Share {
                    src,
                    src_index: index,
                    file: dst,
                    index: d,
                    phys: Phys(phys),
                    len: l,
                });
            }
        }
        let fm = self.file_mut(dst)?;
        fm.size = fm.size.max(di + len);
        Ok(())
    }

    fn punch(&mut self, f: FileId, index: u64, len: u64) -> FsResult<()> {
        for (i, e) in self.remove_range(f, index, len)? {
            self.events.push(Event::Unmap {
                file: f,
                index: i,
                phys: Phys(e.phys),
                len: e.len,
            });
            self.unref(e.phys, e.len);
        }
        Ok(())
    }

    fn delete(&mut self, f: FileId) -> FsResult<()> {
        let maps = self.file(f)?.mappings.clone();
        for m in maps {
            self.munmap(m)?;
        }
        let end = self
            .file(f)?
            .extents
            .iter()
            .next_back()
            .map_or(0, |(&s, e)| s + e.len);
        self.punch(f, 0, end)?;
        self.files[f.0 as usize] = None;
        Ok(())
    }

    fn mmap(&mut self, file: FileId, index: u64, len: u64) -> FsResult<MappingId> {
        let m = MappingId(self.mappings.len() as u64);
        self.file_mut(file)?.mappings.push(m);
        self.mappings.push(Some(MapRec { file, index, len }));
        self.events.push(Event::MmapFile {
            mapping: m,
            file,
            index,
            len,
        });
        Ok(m)
    }

    fn munmap(&mut self, m: MappingId) -> FsResult<()> {
        let r = self
            .mappings
            .get_mut(m.0 as usize)
            .and_then(Option::take)
            .ok_or_else(|| format!("no such mapping {}", m.0))?;
        self.file_mut(r.file)?.mappings.retain(|&x| x != m);
        self.events.push(Event::MunmapFile {
            mapping: m,
            file: r.file,
            index: r.index,
            len: r.len,
        });
        Ok(())
    }

    fn size(&self, file: FileId) -> FsResult<u64> {
        Ok(self.file(file)?.size)
    }

    fn device_pages(&self) -> u64 {
        self.top
    }

    fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    fn label(&self) -> String {
        "the in-memory reflink model".into()
    }

    fn reverse_map_stats(&self) -> Option<RmapStats> {
        Some(RmapStats {
            records: self.rmap.len() as u64,
            bytes: self.rmap.memory_bytes() as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(fs: &ModelFs) {
        let scan = fs.owners_by_scan();
        for (p, want) in scan.iter().enumerate() {
            let mut got = Vec::new();
            fs.owners_of(Phys(p as u64), &mut got);
            got.sort_unstable();
            assert_eq!(&got, want, "page {p}");
            assert_eq!(fs.refs[p] as usize, want.len(), "refs of page {p}");
        }
        let free: u64 = fs.free.values().sum();
        let used = fs.refs.iter().filter(|&&r| r > 0).count() as u64;
        assert_eq!(free + used, fs.top);
    }

    #[test]
    fn write_clone_cow_punch() {
        let mut fs = ModelFs::new();
        let a = fs.create().unwrap();
        fs.write(a, 0, 8).unwrap();
        let b = fs.clone_file(a).unwrap();
        check(&fs);
        fs.write(b, 2, 3).unwrap();
        check(&fs);
        fs.write(b, 2, 3).unwrap(); // now exclusive: in place
        let ev = fs.take_events();
        assert!(matches!(ev[0], Event::Map { len: 8, .. }));
        assert!(matches!(ev[1], Event::Share { len: 8, .. }));
        assert!(matches!(
            ev[2],
            Event::Cow {
                len: 3,
                index: 2,
                old: Phys(2),
                ..
            }
        ));
        assert_eq!(ev.len(), 3);
        fs.punch(a, 0, 4).unwrap();
        check(&fs);
        fs.delete(b).unwrap();
        check(&fs);
        let c = fs.create().unwrap();
        fs.write(c, 0, 20).unwrap(); // reuses freed pages first
        check(&fs);
        fs.clone_range(c, 0, a, 2, 10).unwrap();
        check(&fs);
    }
}
