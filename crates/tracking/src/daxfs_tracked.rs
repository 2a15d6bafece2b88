//! daxfs itself as the [`TrackedFs`]: every workload operation is a real
//! daxfs call, the events are the mapping events daxfs records as its
//! transactions commit, and owner queries go to daxfs's reverse map.
//!
//! | workload operation | daxfs call |
//! |---|---|
//! | `create` | [`Fs::create`] of a new name in the root directory |
//! | `write` | [`File::write_at`] of whole pages (zeros) |
//! | `clone_range`, `clone_file` | [`File::clone_range`] (FICLONERANGE), [`File::clone_from`] (FICLONE) |
//! | `dedupe_range` | [`File::dedupe_range`] (FIDEDUPERANGE) |
//! | `punch` | [`File::fallocate`] with punch-hole and keep-size |
//! | `delete` | [`Fs::unlink`], then closing the last handle frees the inode |
//! | `mmap`, `munmap` | a table kept here: daxfs has no mapping views yet |
//!
//! [`FsQuery::owners_of`] asks [`Fs::owners`] for one block: the records of
//! daxfs's reverse map that cover it, of which the file-data ones are the
//! page owners. File ids are daxfs inode numbers; physical pages are device
//! blocks (daxfs blocks are 4 KiB pages).
//!
//! The data written is zeros. Blocks are really allocated, copied on write
//! and compared by dedupe, and the content does not matter to ownership. A
//! device is an in-memory [`MemDevice`]: its memory is reserved lazily, so a
//! generous size costs only what the workload touches.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use daxfs::events::MapEvent;
use daxfs::{
    DedupeStatus, FallocFlags, File, Fs, MkfsOptions, MountOptions, OwnerKind, OwnerRecord,
};
use daxfs_device::MemDevice;

use crate::bench::{BenchOptions, Report, parse_scale, run_bench_with_baseline};
use crate::event::{Event, FileId, MappingId, PAGE_SIZE, Phys};
use crate::index::{FsQuery, PageOwner};
use crate::plot::write_outputs;
use crate::tracked::{FsError, FsResult, RmapStats, TrackedFs};

/// The largest single write buffer, in pages; longer writes are one call per
/// this many pages.
const MAX_WRITE_PAGES: u64 = 4096;

/// Blocks per [`Fs::fsmap`] call when the reverse map is counted.
const SCAN_BLOCKS: u64 = 1024;

struct Open {
    file: File,
    name: String,
    mappings: Vec<MappingId>,
}

#[derive(Clone, Copy)]
struct MapRec {
    file: FileId,
    index: u64,
    len: u64,
}

/// A daxfs file system driven by the workloads. See the module doc.
pub struct DaxfsTracked {
    fs: Fs,
    files: HashMap<FileId, Open>,
    mappings: Vec<Option<MapRec>>,
    events: Vec<Event>,
    /// One past the highest block any event has put data in.
    end: u64,
    zeros: Vec<u8>,
    names: u64,
}

fn err(what: &str, e: daxfs::FsError) -> FsError {
    format!("daxfs {what}: {e}").into()
}

impl DaxfsTracked {
    /// Makes daxfs (with its reverse map) on a fresh in-memory device of
    /// `device_bytes`, mounts it and starts recording its mapping events.
    pub fn new(device_bytes: u64) -> FsResult<DaxfsTracked> {
        Self::with_options(device_bytes, &MkfsOptions::default())
    }

    /// Like [`new`](DaxfsTracked::new), with `opts` for mkfs. With
    /// `no_rmap` the workloads run but owner queries panic: for timing what
    /// keeping the reverse map costs.
    pub fn with_options(device_bytes: u64, opts: &MkfsOptions) -> FsResult<DaxfsTracked> {
        let dev = Arc::new(MemDevice::new(device_bytes));
        Fs::mkfs(dev.clone(), opts).map_err(|e| err("mkfs", e))?;
        let fs = Fs::mount(dev, &MountOptions::default()).map_err(|e| err("mount", e))?;
        Ok(DaxfsTracked::on(fs))
    }

    /// Drives an already mounted daxfs, which must keep a reverse map and
    /// hold no files the workloads would touch. Starts recording events.
    pub fn on(fs: Fs) -> DaxfsTracked {
        fs.record_events(true);
        let _ = fs.take_events();
        DaxfsTracked {
            fs,
            files: HashMap::new(),
            mappings: Vec::new(),
            events: Vec::new(),
            end: 0,
            zeros: Vec::new(),
            names: 0,
        }
    }

    /// The mounted file system.
    pub fn fs(&self) -> &Fs {
        &self.fs
    }

    /// The open handle of `file`.
    pub fn file(&self, file: FileId) -> FsResult<&File> {
        self.open(file).map(|o| &o.file)
    }

    /// The live files.
    pub fn files(&self) -> Vec<FileId> {
        let mut v: Vec<FileId> = self.files.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// The owners of every block in `[0, device_pages())` from the files'
    /// own extent maps ([`File::fiemap`]), not from the reverse map: an
    /// independent oracle for tests.
    pub fn owners_by_fiemap(&self) -> FsResult<Vec<Vec<PageOwner>>> {
        let mut out = vec![Vec::new(); self.end as usize];
        for (&id, o) in &self.files {
            for e in o.file.fiemap().map_err(|e| err("fiemap", e))? {
                let (idx, phys) = (e.logical / PAGE_SIZE, e.physical / PAGE_SIZE);
                for k in 0..e.length / PAGE_SIZE {
                    out[(phys + k) as usize].push(PageOwner {
                        file: id,
                        index: idx + k,
                    });
                }
            }
        }
        for o in &mut out {
            o.sort_unstable();
        }
        Ok(out)
    }

    fn open(&self, f: FileId) -> FsResult<&Open> {
        self.files
            .get(&f)
            .ok_or_else(|| format!("no such file {}", f.0).into())
    }

    /// Moves daxfs's committed events into the stream, in order.
    fn sync_events(&mut self) {
        for e in self.fs.take_events() {
            let e = match e {
                MapEvent::Map {
                    ino,
                    fblock,
                    phys,
                    len,
                } => Event::Map {
                    file: FileId(ino),
                    index: fblock,
                    phys: Phys(phys),
                    len,
                },
                MapEvent::Unmap {
                    ino,
                    fblock,
                    phys,
                    len,
                } => Event::Unmap {
                    file: FileId(ino),
                    index: fblock,
                    phys: Phys(phys),
                    len,
                },
                MapEvent::Share {
                    src_ino,
                    src_fblock,
                    ino,
                    fblock,
                    phys,
                    len,
                } => Event::Share {
                    src: FileId(src_ino),
                    src_index: src_fblock,
                    file: FileId(ino),
                    index: fblock,
                    phys: Phys(phys),
                    len,
                },
                MapEvent::Cow {
                    ino,
                    fblock,
                    old,
                    new,
                    len,
                } => Event::Cow {
                    file: FileId(ino),
                    index: fblock,
                    old: Phys(old),
                    new: Phys(new),
                    len,
                },
            };
            let top = match e {
                Event::Map { phys, len, .. } | Event::Share { phys, len, .. } => phys.0 + len,
                Event::Cow { new, len, .. } => new.0 + len,
                _ => 0,
            };
            self.end = self.end.max(top);
            self.events.push(e);
        }
    }

    /// [`Fs::owners`] of blocks `[block, block+blocks)`. [`FsQuery`] has no
    /// error path, and a failing reverse map is a daxfs bug: it panics.
    fn query(&self, block: u64, blocks: u64) -> Vec<OwnerRecord> {
        self.fs.owners(block, blocks).unwrap_or_else(|e| {
            panic!("daxfs reverse map: owners of blocks [{block}, +{blocks}): {e}")
        })
    }

    /// Counts the reverse map: its file-data records, and the bytes of the
    /// reverse-map tree's blocks.
    fn count_rmap(&self) -> daxfs::Result<RmapStats> {
        let total = self.fs.info().total_blocks;
        let mut stats = RmapStats::default();
        let mut b = 0;
        while b < total {
            let n = SCAN_BLOCKS.min(total - b);
            for r in self.fs.owners(b, n)? {
                // Records reaching back into an earlier chunk were counted there.
                if r.physical / PAGE_SIZE < b && b > 0 {
                    continue;
                }
                match r.owner {
                    OwnerKind::Metadata("reverse-map tree") => stats.bytes += r.length,
                    OwnerKind::File { fork: "data", .. } => stats.records += 1,
                    _ => {}
                }
            }
            b += n;
        }
        Ok(stats)
    }
}

/// The page owner a reverse-map record gives for block `block`, if it is file
/// data.
fn data_owner(r: &OwnerRecord, block: u64) -> Option<PageOwner> {
    match r.owner {
        OwnerKind::File {
            ino, fork: "data", ..
        } => Some(PageOwner {
            file: FileId(ino),
            index: (r.offset + block * PAGE_SIZE - r.physical) / PAGE_SIZE,
        }),
        _ => None,
    }
}

impl FsQuery for DaxfsTracked {
    fn owners_of(&self, phys: Phys, out: &mut Vec<PageOwner>) {
        out.extend(
            self.query(phys.0, 1)
                .iter()
                .filter_map(|r| data_owner(r, phys.0)),
        );
    }

    fn owners_in(&self, first: Phys, pages: u64, out: &mut Vec<(Phys, PageOwner)>) {
        let (a, b) = (first.0, first.0 + pages);
        for r in self.query(first.0, pages) {
            let (s, e) = (r.physical / PAGE_SIZE, (r.physical + r.length) / PAGE_SIZE);
            for p in s.max(a)..e.min(b) {
                if let Some(o) = data_owner(&r, p) {
                    out.push((Phys(p), o));
                }
            }
        }
    }

    fn mappings_of(&self, file: FileId, index: u64, out: &mut Vec<MappingId>) {
        let Some(o) = self.files.get(&file) else {
            return;
        };
        for &m in &o.mappings {
            if let Some(Some(r)) = self.mappings.get(m.0 as usize)
                && r.index <= index
                && index < r.index + r.len
            {
                out.push(m);
            }
        }
    }
}

impl TrackedFs for DaxfsTracked {
    fn create(&mut self) -> FsResult<FileId> {
        self.names += 1;
        let name = format!("/f{}", self.names);
        let file = self.fs.create(&name).map_err(|e| err("create", e))?;
        let id = FileId(file.ino());
        self.files.insert(
            id,
            Open {
                file,
                name,
                mappings: Vec::new(),
            },
        );
        Ok(id)
    }

    fn write(&mut self, file: FileId, index: u64, len: u64) -> FsResult<()> {
        let mut at = index;
        while at < index + len {
            let n = (index + len - at).min(MAX_WRITE_PAGES);
            let bytes = (n * PAGE_SIZE) as usize;
            if self.zeros.len() < bytes {
                self.zeros.resize(bytes, 0);
            }
            let f = &self.open(file)?.file;
            f.write_at(at * PAGE_SIZE, &self.zeros[..bytes])
                .map_err(|e| err("write", e))?;
            at += n;
        }
        self.sync_events();
        Ok(())
    }

    fn clone_range(
        &mut self,
        src: FileId,
        src_index: u64,
        dst: FileId,
        dst_index: u64,
        len: u64,
    ) -> FsResult<()> {
        let (s, d) = (&self.open(src)?.file, &self.open(dst)?.file);
        d.clone_range(
            s,
            src_index * PAGE_SIZE,
            dst_index * PAGE_SIZE,
            len * PAGE_SIZE,
        )
        .map_err(|e| err("clone_range", e))?;
        self.sync_events();
        Ok(())
    }

    fn dedupe_range(
        &mut self,
        src: FileId,
        src_index: u64,
        dst: FileId,
        dst_index: u64,
        len: u64,
    ) -> FsResult<()> {
        let (s, d) = (&self.open(src)?.file, &self.open(dst)?.file);
        let r = s
            .dedupe_range(
                src_index * PAGE_SIZE,
                len * PAGE_SIZE,
                &[(d, dst_index * PAGE_SIZE)],
            )
            .map_err(|e| err("dedupe_range", e))?;
        match r.first().map(|r| &r.status) {
            Some(DedupeStatus::Same) => {}
            other => return Err(format!("daxfs dedupe_range: {other:?}").into()),
        }
        self.sync_events();
        Ok(())
    }

    fn punch(&mut self, file: FileId, index: u64, len: u64) -> FsResult<()> {
        if len == 0 {
            return Ok(());
        }
        let flags = FallocFlags {
            punch_hole: true,
            keep_size: true,
            ..FallocFlags::default()
        };
        self.open(file)?
            .file
            .fallocate(flags, index * PAGE_SIZE, len * PAGE_SIZE)
            .map_err(|e| err("punch", e))?;
        self.sync_events();
        Ok(())
    }

    fn delete(&mut self, file: FileId) -> FsResult<()> {
        let maps = self.open(file)?.mappings.clone();
        for m in maps {
            self.munmap(m)?;
        }
        let o = self
            .files
            .remove(&file)
            .ok_or_else(|| format!("no such file {}", file.0))?;
        self.fs.unlink(&o.name).map_err(|e| err("unlink", e))?;
        // Closing the last handle of the unlinked file frees its blocks.
        drop(o);
        self.sync_events();
        Ok(())
    }

    fn mmap(&mut self, file: FileId, index: u64, len: u64) -> FsResult<MappingId> {
        self.sync_events();
        let m = MappingId(self.mappings.len() as u64);
        self.files
            .get_mut(&file)
            .ok_or_else(|| format!("no such file {}", file.0))?
            .mappings
            .push(m);
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
        self.sync_events();
        let r = self
            .mappings
            .get_mut(m.0 as usize)
            .and_then(Option::take)
            .ok_or_else(|| format!("no such mapping {}", m.0))?;
        if let Some(o) = self.files.get_mut(&r.file) {
            o.mappings.retain(|&x| x != m);
        }
        self.events.push(Event::MunmapFile {
            mapping: m,
            file: r.file,
            index: r.index,
            len: r.len,
        });
        Ok(())
    }

    fn size(&self, file: FileId) -> FsResult<u64> {
        Ok(self.open(file)?.file.stat().size.div_ceil(PAGE_SIZE))
    }

    fn device_pages(&self) -> u64 {
        self.end
    }

    fn take_events(&mut self) -> Vec<Event> {
        self.sync_events();
        std::mem::take(&mut self.events)
    }

    fn label(&self) -> String {
        "daxfs".into()
    }

    fn reverse_map_stats(&self) -> Option<RmapStats> {
        self.count_rmap().ok()
    }

    fn clone_file(&mut self, src: FileId) -> FsResult<FileId> {
        let dst = self.create()?;
        let (s, d) = (&self.open(src)?.file, &self.open(dst)?.file);
        d.clone_from(s).map_err(|e| err("clone", e))?;
        self.sync_events();
        Ok(dst)
    }
}

/// The device for one workload: lazily reserved memory, 16 GiB at scale 1/64
/// (the VM farm, the largest, uses about a quarter of it), in proportion
/// above and below, and 64 MiB for the small test workloads.
pub fn device_bytes(opts: &BenchOptions) -> u64 {
    const GIB: f64 = (1u64 << 30) as f64;
    if opts.small {
        64 << 20
    } else {
        ((opts.scale * 1024.0 * GIB).clamp(GIB, 1024.0 * GIB) as u64) >> 20 << 20
    }
}

/// Runs the benchmark on daxfs: a fresh file system on a fresh in-memory
/// device for each workload, with the in-memory model run alongside as a
/// cross-check when `opts.cross_check` is set. Each workload also runs once
/// on daxfs made without its reverse map, to time what keeping it costs.
pub fn run_bench_on_daxfs(opts: &BenchOptions) -> FsResult<Report> {
    let bytes = device_bytes(opts);
    let plain = MkfsOptions {
        no_rmap: true,
        ..MkfsOptions::default()
    };
    run_bench_with_baseline(
        opts,
        &mut || Ok(Box::new(DaxfsTracked::new(bytes)?) as Box<dyn TrackedFs>),
        Some(
            &mut || Ok(Box::new(DaxfsTracked::with_options(bytes, &plain)?) as Box<dyn TrackedFs>),
        ),
    )
}

/// `daxfs bench tracking [--scale S] [--out DIR]`: runs the benchmark on
/// daxfs at `scale` (default [`DEFAULT_SCALE`](crate::DEFAULT_SCALE)),
/// writes `tracking.md`, `tracking.svg` and `tracking.png` into `out`, and
/// returns what it wrote and the conclusion, for printing. Progress goes to
/// standard error.
pub fn bench_tracking_command(scale: Option<&str>, out: &Path) -> FsResult<String> {
    let scale = match scale {
        Some(s) => parse_scale(s)?,
        None => crate::DEFAULT_SCALE,
    };
    let opts = BenchOptions {
        scale,
        progress: true,
        ..BenchOptions::default()
    };
    let t = Instant::now();
    let report = run_bench_on_daxfs(&opts)?;
    let files = write_outputs(&report, out)?;
    Ok(format!(
        "{} in {:.0} s\n\n{}",
        files.message(),
        t.elapsed().as_secs_f64(),
        report.conclusion()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owners(fs: &DaxfsTracked, p: u64) -> Vec<PageOwner> {
        let mut v = Vec::new();
        fs.owners_of(Phys(p), &mut v);
        v.sort_unstable();
        v
    }

    #[test]
    fn operations_are_daxfs_calls_and_their_events() {
        let mut fs = DaxfsTracked::new(64 << 20).unwrap();
        let a = fs.create().unwrap();
        fs.write(a, 0, 8).unwrap();
        let ev = fs.take_events();
        let [
            Event::Map {
                file,
                index: 0,
                phys,
                len: 8,
            },
        ] = ev[..]
        else {
            panic!("one fresh extent: {ev:?}");
        };
        assert_eq!(file, a);
        assert_eq!(fs.size(a).unwrap(), 8);
        let po = |f, index| PageOwner { file: f, index };
        assert_eq!(owners(&fs, phys.0 + 3), vec![po(a, 3)]);

        let b = fs.clone_file(a).unwrap();
        assert_eq!(
            fs.take_events(),
            vec![Event::Share {
                src: a,
                src_index: 0,
                file: b,
                index: 0,
                phys,
                len: 8
            }]
        );
        assert_eq!(owners(&fs, phys.0 + 3), vec![po(a, 3), po(b, 3)]);

        fs.write(b, 2, 3).unwrap();
        let ev = fs.take_events();
        let [
            Event::Cow {
                file,
                index: 2,
                old,
                new,
                len: 3,
            },
        ] = ev[..]
        else {
            panic!("one copy-on-write: {ev:?}");
        };
        assert_eq!((file, old), (b, phys.add(2)));
        assert_eq!(owners(&fs, new.0), vec![po(b, 2)]);
        assert_eq!(owners(&fs, phys.0 + 2), vec![po(a, 2)]);
        fs.write(b, 2, 3).unwrap(); // now b's own: in place
        assert!(fs.take_events().is_empty());

        fs.punch(a, 0, 4).unwrap();
        assert_eq!(
            fs.take_events(),
            vec![Event::Unmap {
                file: a,
                index: 0,
                phys,
                len: 4
            }]
        );
        assert_eq!(fs.size(a).unwrap(), 8, "punching keeps the size");
        assert_eq!(owners(&fs, phys.0), vec![po(b, 0)]);

        // Zeros everywhere: the dedupe compares equal and shares b's blocks.
        fs.dedupe_range(b, 5, a, 0, 2).unwrap();
        assert_eq!(
            fs.take_events(),
            vec![Event::Share {
                src: b,
                src_index: 5,
                file: a,
                index: 0,
                phys: phys.add(5),
                len: 2
            }]
        );
        assert_eq!(owners(&fs, phys.0 + 5), vec![po(a, 0), po(a, 5), po(b, 5)]);

        let m = fs.mmap(b, 0, 8).unwrap();
        let mut maps = Vec::new();
        fs.mappings_of(b, 7, &mut maps);
        assert_eq!(maps, vec![m]);
        assert_eq!(
            fs.take_events(),
            vec![Event::MmapFile {
                mapping: m,
                file: b,
                index: 0,
                len: 8
            }]
        );
        fs.delete(b).unwrap();
        let ev = fs.take_events();
        assert_eq!(
            ev[0],
            Event::MunmapFile {
                mapping: m,
                file: b,
                index: 0,
                len: 8
            }
        );
        let freed: u64 = ev[1..]
            .iter()
            .map(|e| match *e {
                Event::Unmap { file, len, .. } if file == b => len,
                _ => panic!("only b's blocks leave: {e:?}"),
            })
            .sum();
        assert_eq!(freed, 8);
        assert!(owners(&fs, new.0).is_empty());
        assert_eq!(owners(&fs, phys.0 + 5), vec![po(a, 0), po(a, 5)]);
        assert_eq!(fs.files(), vec![a]);
        assert!(fs.device_pages() > new.0);
        let rmap = fs.reverse_map_stats().unwrap();
        // One record per extent of a: its pages 0-1 (shared with its own
        // page 5) and 4-7. A segment-aligned map would cut 4-7 at 5 and 7.
        assert!(rmap.records == 2 && rmap.bytes >= 4096, "{rmap:?}");
    }
}
