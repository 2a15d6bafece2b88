//! fsck: reads every metadata structure and cross-checks them.
//!
//! Read-only: when the log holds a committed transaction that mount would
//! replay, fsck reads its block images instead of the home blocks, so it checks
//! exactly what the next mount will see without writing anything.
//!
//! Checks: both superblock copies; every tree node's checksum, place, kind and
//! owner (through the B+tree's own `check`); every block is free or used
//! exactly once (superblocks, log, tree nodes, file data); free space is the
//! exact complement of what is used; link counts equal the directory entries
//! naming each inode; every entry names a live inode of the type it says;
//! directory link counts and parent pointers; inode counts; no written block
//! lies past end of file. With replicas: every tree node has one, identical to
//! it, recorded in the reverse map and used by nothing else; the log has its
//! replica region; the superblock's reverse-map anchors are current. A node
//! that does not verify is read from its replica, so the rest is still
//! checked, and reported with what to do.
use crate::dir;
use crate::error::Result;
use crate::extents;
use crate::fs::read_superblock;
use crate::inode::{FileKind, inode_tree, orphan_tree};
use crate::journal;
use crate::replica::{Committed, Replicas};
use crate::space::refcount;
use crate::space::rmap::{self, Mapping, Owner};
use crate::tx::{free_tree, geometry, read_verified, read_verified_as};
use daxfs_btree::TreeError;
use daxfs_device::Device;
use daxfs_format::records::{EXTENT_UNWRITTEN, INODE_FLAGS_KNOWN, InodeRecord};
use daxfs_format::{BLOCK_SIZE_U64, BlockKind, BlockNo};
use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;

/// One inconsistency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The structure it is in ("inode table", "directory 12", "free space", ...).
    pub structure: String,
    /// The block concerned, when there is one.
    pub block: Option<u64>,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.block {
            Some(b) => write!(f, "{} (block {b}): {}", self.structure, self.message),
            None => write!(f, "{}: {}", self.structure, self.message),
        }
    }
}

/// What fsck found.
#[derive(Clone, Debug, Default)]
pub struct FsckReport {
    pub problems: Vec<Problem>,
    pub inodes: u64,
    pub directories: u64,
    pub files: u64,
    pub symlinks: u64,
    pub data_blocks: u64,
    pub metadata_blocks: u64,
    pub free_blocks: u64,
    pub total_blocks: u64,
    /// Sequence number of a committed transaction mount would replay.
    pub pending_log: Option<u64>,
}

impl FsckReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Reads committed metadata, preferring log images mount would replay, and
/// falling back to replicas.
type CheckStore<'a> = Committed<'a>;

/// Who uses each block, to find blocks used twice or not accounted for.
struct Usage {
    owner: Vec<u32>,
    names: Vec<String>,
    /// What the reverse map must hold: every node and data extent found.
    expected: Vec<Mapping>,
    /// Every file data extent (physical start, length), shared ones repeated.
    data: Vec<(u64, u64)>,
    /// Every tree node found: block, owner, description.
    nodes: Vec<(u64, Owner, String)>,
}

impl Usage {
    fn mark(&mut self, problems: &mut Vec<Problem>, start: u64, len: u64, who: &str) {
        let id = self.names.len() as u32 + 1;
        self.names.push(who.to_string());
        for b in start..start.saturating_add(len) {
            match self.owner.get_mut(b as usize) {
                None => {
                    problems.push(Problem {
                        structure: who.into(),
                        block: Some(b),
                        message: "block is past the end of the file system".into(),
                    });
                    return;
                }
                Some(o) if *o != 0 => {
                    let other = self.names.get(*o as usize - 1).cloned().unwrap_or_default();
                    problems.push(Problem {
                        structure: who.into(),
                        block: Some(b),
                        message: format!("block is also used by {other}"),
                    });
                }
                Some(o) => *o = id,
            }
        }
    }
}

/// Progress callback: (phase, done, total).
pub type Progress<'a> = &'a mut dyn FnMut(&str, u64, u64);

/// Checks the file system on `dev` without changing it.
pub fn fsck(dev: &dyn Device, progress: Progress<'_>) -> Result<FsckReport> {
    let sb = read_superblock(dev)?;
    let mut rep = FsckReport::default();
    let p = &mut rep.problems;
    let total = sb.total_blocks.get();
    rep.total_blocks = total;
    let fs_id = sb.fs_id();
    let geo = geometry(&sb);
    let mut sb = sb;
    let mut overlay = HashMap::new();
    match journal::pending(dev, &geo, fs_id, sb.header.generation.get()) {
        Ok(Some(pend)) if pend.complete().is_none() => {
            p.push(Problem {
                structure: "log".into(),
                block: Some(geo.start),
                message: format!(
                    "transaction {} is committed but cannot be replayed ({}){}",
                    pend.seq,
                    pend.why.as_deref().unwrap_or("an image is missing"),
                    if pend.homes_untouched {
                        "; no home was written yet: mount undoes it"
                    } else {
                        ""
                    }
                ),
            });
        }
        Ok(Some(pend)) => {
            rep.pending_log = Some(pend.seq);
            for (home, _, img) in pend.complete().unwrap_or_default() {
                if home == 0 {
                    if let Ok(s) =
                        daxfs_format::Superblock::decode(&img, 0, dev.len() / BLOCK_SIZE_U64)
                    {
                        sb = s;
                    }
                } else {
                    overlay.insert(home, img);
                }
            }
        }
        Ok(None) => {}
        Err(e) => p.push(Problem {
            structure: "log".into(),
            block: Some(geo.start),
            message: e.to_string(),
        }),
    }
    // Superblock copies.
    for b in [0, total - 1] {
        let mut blk = Box::new([0u8; daxfs_format::BLOCK_SIZE]);
        let ok = dev.read(b * BLOCK_SIZE_U64, &mut blk[..]).is_ok()
            && daxfs_format::Superblock::decode(&blk, b, dev.len() / BLOCK_SIZE_U64).is_ok();
        if !ok {
            p.push(Problem {
                structure: "superblock".into(),
                block: Some(b),
                message: if sb.has_replicas() {
                    "copy does not verify; mounting rewrites it from the other copy".into()
                } else {
                    "copy does not verify".into()
                },
            });
        }
    }
    // The reverse map's changes that its nodes do not hold yet.
    let intents = match journal::read_intents(
        dev,
        &geometry(&sb),
        fs_id,
        sb.header.generation.get(),
        sb.rmap_intents.get() as usize,
    ) {
        Ok(v) => v,
        Err(e) => {
            p.push(Problem {
                structure: "log".into(),
                block: Some(geo.start),
                message: e.to_string(),
            });
            vec![]
        }
    };
    let reps = std::sync::Mutex::new(Replicas::new(&sb));
    let mut s = Committed::new(dev, fs_id, None, Some(&reps));
    s.overlay = Some(&overlay);
    let mut usage = Usage {
        owner: vec![0; total as usize],
        names: vec![],
        expected: vec![],
        data: vec![],
        nodes: vec![],
    };
    usage.mark(p, 0, 1, "superblock");
    usage.mark(p, total - 1, 1, "superblock copy");
    // The log and its replica, as the superblock mount will use names them.
    let geo = geometry(&sb);
    usage.mark(p, geo.start, geo.blocks, "log");
    let sbo = Owner::Meta(BlockKind::Superblock);
    usage.expected.push(Mapping::new(0, 1, sbo, false));
    usage.expected.push(Mapping::new(total - 1, 1, sbo, false));
    let lo = Owner::Meta(BlockKind::LogDescriptor);
    usage.expected.push(Mapping {
        replica: geo.replica,
        ..Mapping::new(geo.start, geo.blocks, lo, false)
    });
    if geo.replica != 0 {
        usage.mark(p, geo.replica, geo.mirrored(), "log replica");
        usage.expected.push(Mapping {
            replica: geo.start,
            is_replica: true,
            ..Mapping::new(geo.replica, geo.mirrored(), lo, false)
        });
    }
    if sb.has_replicas() && geo.replica == 0 {
        p.push(Problem {
            structure: "log".into(),
            block: Some(geo.start),
            message: "has no replica region".into(),
        });
    }

    // Free space.
    let froot = sb.free_tree;
    let mut free_sum = 0u64;
    let mut prev_end = 0u64;
    let mut free_extents = vec![];
    let r = free_tree().range(&mut s, &froot, &0, &u64::MAX, &mut |st, l| {
        free_extents.push((st, l));
        ControlFlow::Continue(())
    });
    check_tree(
        p,
        "free-space tree",
        free_tree().check(&mut s, &froot).and(r),
    );
    let free_list = free_extents.clone();
    for (st, l) in free_extents {
        if l == 0 || st < prev_end {
            p.push(Problem {
                structure: "free-space tree".into(),
                block: Some(st),
                message: format!(
                    "an extent of {} is empty or overlaps the previous one",
                    blocks(l)
                ),
            });
        }
        prev_end = st.saturating_add(l);
        free_sum = free_sum.saturating_add(l);
        usage.mark(p, st, l, "free space");
    }
    rep.free_blocks = free_sum;
    if free_sum != sb.free_blocks.get() {
        p.push(Problem {
            structure: "superblock".into(),
            block: Some(0),
            message: format!(
                "free_blocks {} but the free-space tree holds {free_sum}: mounting corrects it",
                sb.free_blocks.get()
            ),
        });
    }
    mark_nodes(
        p,
        &mut s,
        &mut usage,
        "free-space tree node",
        Owner::Meta(BlockKind::FreeTree),
        |s, f| free_tree().visit_nodes(s, &froot, f),
    );

    // Inodes.
    let iroot = sb.inode_tree;
    let mut inodes: BTreeMap<u64, InodeRecord> = BTreeMap::new();
    let r = inode_tree().range(&mut s, &iroot, &0, &u64::MAX, &mut |k, v| {
        inodes.insert(k, v);
        ControlFlow::Continue(())
    });
    check_tree(p, "inode table", inode_tree().check(&mut s, &iroot).and(r));
    mark_nodes(
        p,
        &mut s,
        &mut usage,
        "inode table node",
        Owner::Meta(BlockKind::InodeTree),
        |s, f| inode_tree().visit_nodes(s, &iroot, f),
    );
    let oroot = sb.orphan_tree;
    let mut orphans = vec![];
    let r = orphan_tree().range(&mut s, &oroot, &0, &u64::MAX, &mut |k, ()| {
        orphans.push(k);
        ControlFlow::Continue(())
    });
    check_tree(p, "orphan list", orphan_tree().check(&mut s, &oroot).and(r));
    mark_nodes(
        p,
        &mut s,
        &mut usage,
        "orphan list node",
        Owner::Meta(BlockKind::OrphanTree),
        |s, f| orphan_tree().visit_nodes(s, &oroot, f),
    );
    rep.inodes = inodes.len() as u64;
    if rep.inodes != sb.inodes.get() {
        p.push(Problem {
            structure: "superblock".into(),
            block: Some(0),
            message: format!(
                "inodes {} but the inode table holds {} live inodes",
                sb.inodes.get(),
                rep.inodes
            ),
        });
    }
    let mut links: HashMap<u64, u32> = HashMap::new();
    let mut parent_links: Vec<(u64, u64, u64)> = vec![];
    let mut subdirs: HashMap<u64, u32> = HashMap::new();
    let mut parent_of: HashMap<u64, u64> = HashMap::new();
    // The first entry naming each inode: (directory, name), for paths.
    let mut entry_names: HashMap<u64, (u64, String)> = HashMap::new();
    let n = inodes.len() as u64;
    for (done, (&ino, rec)) in inodes.iter().enumerate() {
        progress("inodes", done as u64, n);
        let who = format!("inode {ino}");
        if rec.ino.get() != ino {
            p.push(Problem {
                structure: "inode table".into(),
                block: None,
                message: format!("key {ino} holds inode {}", rec.ino.get()),
            });
            continue;
        }
        if ino >= sb.next_ino.get() {
            p.push(Problem {
                structure: who.clone(),
                block: None,
                message: format!("number is not below next_ino {}", sb.next_ino.get()),
            });
        }
        let Some(kind) = FileKind::of_mode(rec.mode.get()) else {
            p.push(Problem {
                structure: who,
                block: None,
                message: format!("unknown file type in mode {:#o}", rec.mode.get()),
            });
            continue;
        };
        let troot = rec.tree;
        if rec.flags.get() & !INODE_FLAGS_KNOWN != 0 {
            p.push(Problem {
                structure: who.clone(),
                block: None,
                message: format!("unknown flags {:#x}", rec.flags.get()),
            });
        }
        if !rec.inline_tail_clean() {
            p.push(Problem {
                structure: who.clone(),
                block: None,
                message: format!(
                    "inline extent area holds bytes past its {} extents",
                    rec.inline_count.get()
                ),
            });
        }
        if rec.rdev.get() != 0 && !matches!(kind, FileKind::CharDev | FileKind::BlockDev) {
            p.push(Problem {
                structure: who.clone(),
                block: None,
                message: format!("a {} with device number {:#x}", kind.name(), rec.rdev.get()),
            });
        }
        match kind {
            k @ (FileKind::Fifo | FileKind::Socket | FileKind::CharDev | FileKind::BlockDev) => {
                // No data: nothing mapped, no tree, no size.
                if !troot.is_empty()
                    || rec.extents_inline()
                    || rec.inline_count.get() != 0
                    || rec.size.get() != 0
                    || rec.blocks.get() != 0
                    || !rec.loss.is_empty()
                {
                    p.push(Problem {
                        structure: who.clone(),
                        block: None,
                        message: format!(
                            "a {} has data (size {}, {}, or a tree)",
                            k.name(),
                            rec.size.get(),
                            blocks(rec.blocks.get())
                        ),
                    });
                }
            }
            FileKind::Dir => {
                rep.directories += 1;
                if rec.extents_inline() || rec.inline_count.get() != 0 {
                    p.push(Problem {
                        structure: who.clone(),
                        block: None,
                        message: format!(
                            "directory has inline extents (flags {:#x}, count {})",
                            rec.flags.get(),
                            rec.inline_count.get()
                        ),
                    });
                }
                let t = dir::tree(ino);
                check_tree(p, &format!("directory {ino}"), t.check(&mut s, &troot));
                mark_nodes(
                    p,
                    &mut s,
                    &mut usage,
                    &format!("directory {ino} block"),
                    Owner::DirTree { ino },
                    |s, f| t.visit_nodes(s, &troot, f),
                );
                let mut entries = vec![];
                let r = t.range(&mut s, &troot, &0, &u64::MAX, &mut |k, d| {
                    entries.push((k, d));
                    ControlFlow::Continue(())
                });
                check_tree(p, &format!("directory {ino}"), r);
                for (k, d) in entries {
                    let target = d.ino.get();
                    let name = match d.name() {
                        Ok(nm)
                            if dir::name_hash(nm) == k >> 32
                                && !nm.contains(&b'/')
                                && !nm.contains(&0) =>
                        {
                            String::from_utf8_lossy(nm).into_owned()
                        }
                        _ => {
                            p.push(Problem {
                                structure: format!("directory {ino}"),
                                block: None,
                                message: format!("entry {k:#x} has a bad name"),
                            });
                            continue;
                        }
                    };
                    *links.entry(target).or_default() += 1;
                    parent_links.push((target, ino, k));
                    entry_names.entry(target).or_insert((ino, name.clone()));
                    match inodes.get(&target) {
                        None => p.push(Problem {
                            structure: format!("directory {ino}"),
                            block: None,
                            message: format!(
                                "entry {name:?} names inode {target}, which does not exist"
                            ),
                        }),
                        Some(tr) => {
                            let tk = FileKind::of_mode(tr.mode.get());
                            if tk.map(|k| k.dtype()) != Some(d.ftype) {
                                p.push(Problem {
                                    structure: format!("directory {ino}"),
                                    block: None,
                                    message: format!(
                                        "entry {name:?} says type {} but inode {target} is {}",
                                        d.ftype,
                                        match tk {
                                            Some(FileKind::File) => "a regular file",
                                            Some(FileKind::Dir) => "a directory",
                                            Some(FileKind::Symlink) => "a symbolic link",
                                            Some(FileKind::Fifo) => "a FIFO",
                                            Some(FileKind::Socket) => "a socket",
                                            Some(FileKind::CharDev) => "a character device",
                                            Some(FileKind::BlockDev) => "a block device",
                                            None => "of no known type",
                                        }
                                    ),
                                });
                            }
                            if tk == Some(FileKind::Dir) {
                                *subdirs.entry(ino).or_default() += 1;
                                if parent_of.insert(target, ino).is_some() {
                                    p.push(Problem {
                                        structure: format!("inode {target}"),
                                        block: None,
                                        message: "directory has more than one name".into(),
                                    });
                                }
                            }
                        }
                    }
                }
            }
            FileKind::File | FileKind::Symlink => {
                if kind == FileKind::File {
                    rep.files += 1;
                } else {
                    rep.symlinks += 1;
                }
                if kind == FileKind::File && !rec.extents_inline() && troot.is_empty() {
                    p.push(Problem {
                        structure: who.clone(),
                        block: None,
                        message: "regular file has an empty extent tree but is not marked inline"
                            .into(),
                    });
                }
                // An inline file's tree is empty (load says so otherwise):
                // these find no nodes.
                let t = extents::tree(ino);
                check_tree(
                    p,
                    &format!("extent tree of inode {ino}"),
                    t.check(&mut s, &troot),
                );
                mark_nodes(
                    p,
                    &mut s,
                    &mut usage,
                    &format!("extent tree of inode {ino}"),
                    Owner::ExtentTree { ino },
                    |s, f| t.visit_nodes(s, &troot, f),
                );
                match extents::ExtentMap::load(&mut s, ino, rec) {
                    Err(e) => p.push(Problem {
                        structure: who.clone(),
                        block: None,
                        message: e.to_string(),
                    }),
                    Ok(map) => {
                        let size_blocks = rec.size.get().div_ceil(BLOCK_SIZE_U64);
                        for e in map.iter() {
                            // What a read would refuse (`extents::refusal`),
                            // named by the file.
                            let free_here = free_list
                                .partition_point(|&(st, l)| st.saturating_add(l) <= e.phys);
                            let on_free = free_list
                                .get(free_here)
                                .is_some_and(|&(st, _)| st < e.phys.saturating_add(e.len));
                            if crate::tx::outside_data_area(&sb, e.phys, e.len) || on_free {
                                p.push(Problem {
                                    structure: who.clone(),
                                    block: Some(e.phys),
                                    message: format!(
                                        "extent at file block {} (device blocks {}..{}) points {}: reads refuse it",
                                        e.fblock,
                                        e.phys,
                                        e.phys.saturating_add(e.len),
                                        if on_free {
                                            "at free blocks"
                                        } else {
                                            "outside the file data area (a superblock, the log, its replica or past the end)"
                                        }
                                    ),
                                });
                            }
                            if e.phys + e.len > total {
                                p.push(Problem {
                                    structure: who.clone(),
                                    block: Some(e.phys),
                                    message: format!(
                                        "the extent at file block {} maps {} past the end of the file system",
                                        e.fblock,
                                        blocks(e.len)
                                    ),
                                });
                            }
                            usage.data.push((e.phys, e.len));
                            usage.expected.push(Mapping::new(
                                e.phys,
                                e.len,
                                Owner::Data {
                                    ino,
                                    fblock: e.fblock,
                                },
                                e.unwritten(),
                            ));
                            if e.flags & EXTENT_UNWRITTEN == 0 && e.end() > size_blocks {
                                p.push(Problem { structure: who.clone(), block: Some(e.phys), message: format!("written extent at file block {} lies past end of file ({} bytes)", e.fblock, rec.size.get()) });
                            }
                        }
                        if map.blocks() != rec.blocks.get() {
                            p.push(Problem {
                                structure: who.clone(),
                                block: None,
                                message: format!(
                                    "block count {} but extents map {}",
                                    rec.blocks.get(),
                                    map.blocks()
                                ),
                            });
                        }
                    }
                }
            }
        }
    }
    // Link counts and reachability.
    for (&ino, rec) in &inodes {
        let who = format!("inode {ino}");
        let found = links.get(&ino).copied().unwrap_or(0) + u32::from(ino == sb.root_ino.get());
        let kind = FileKind::of_mode(rec.mode.get());
        let expect = if kind == Some(FileKind::Dir) {
            if found == 0 {
                0
            } else {
                2 + subdirs.get(&ino).copied().unwrap_or(0)
            }
        } else {
            found
        };
        let is_orphan = orphans.contains(&ino);
        if found == 0 && !is_orphan {
            p.push(Problem {
                structure: who.clone(),
                block: None,
                message:
                    "no directory entry names it and it is not on the orphan list (lost inode)"
                        .into(),
            });
        } else if rec.nlink.get() != expect {
            p.push(Problem {
                structure: who.clone(),
                block: None,
                message: format!(
                    "link count {} but {expect} expected from directory entries",
                    rec.nlink.get()
                ),
            });
        }
        if kind == Some(FileKind::Dir)
            && ino != sb.root_ino.get()
            && let Some(&par) = parent_of.get(&ino)
            && rec.parent.get() != par
        {
            p.push(Problem {
                structure: who,
                block: None,
                message: format!(
                    "parent pointer {} but it lives in directory {par}",
                    rec.parent.get()
                ),
            });
        }
    }
    for o in &orphans {
        if !inodes.contains_key(o) {
            p.push(Problem {
                structure: "orphan list".into(),
                block: None,
                message: format!("names inode {o}, which does not exist"),
            });
        }
    }
    // The counters that hand out numbers, and the root (mount checks the
    // same and corrects the counters, or refuses the root).
    match crate::counters::counter_problems(&mut s, &sb) {
        Ok(v) => {
            for c in v {
                p.push(Problem {
                    structure: "superblock".into(),
                    block: Some(0),
                    message: format!("{}: mounting sets it to {}", c.message, c.fixed),
                });
            }
        }
        Err(e) => p.push(Problem {
            structure: "superblock".into(),
            block: Some(0),
            message: format!("next_ino and error_seq cannot be checked: {e}"),
        }),
    }
    match crate::counters::root_problem(&mut s, &sb) {
        Ok(None) => {}
        Ok(Some(m)) => p.push(Problem {
            structure: "superblock".into(),
            block: Some(0),
            message: format!("{m}: the file system cannot be mounted"),
        }),
        Err(e) => p.push(Problem {
            structure: "superblock".into(),
            block: Some(0),
            message: format!("root_ino {} cannot be read: {e}", sb.root_ino.get()),
        }),
    }
    check_parents(p, &mut s, &sb, &mut usage, parent_links);
    check_media_trees(p, &mut s, &sb, &mut usage, &inodes);
    check_xattrs(p, &mut s, &sb, &mut usage, &inodes);
    rep.data_blocks = check_sharing(p, &mut s, &sb, &mut usage, &intents);
    check_quarantine(p, &mut s, &sb, &mut usage);
    if sb.incompat.get() & daxfs_format::superblock::INCOMPAT_RMAP == 0 {
        // No reverse map: the nodes are accounted for above.
        usage.nodes.clear();
    }
    drop(s);
    report_fallbacks(p, &reps);
    // Every block accounted for exactly once.
    progress("blocks", 0, total);
    let mut run: Option<(u64, u64)> = None;
    let flush_run = |p: &mut Vec<Problem>, r: Option<(u64, u64)>| {
        if let Some((s0, l)) = r {
            p.push(Problem {
                structure: "space".into(),
                block: Some(s0),
                message: format!(
                    "{} {} neither free nor used (leaked)",
                    blocks(l),
                    if l == 1 { "is" } else { "are" }
                ),
            });
        }
    };
    for b in 0..total {
        if usage.owner.get(b as usize) == Some(&0) {
            run = match run {
                Some((s0, l)) if s0 + l == b => Some((s0, l + 1)),
                other => {
                    flush_run(p, other);
                    Some((b, 1))
                }
            };
        }
    }
    flush_run(p, run);
    progress("blocks", total, total);
    name_files(p, &sb, &entry_names);
    rep.metadata_blocks = total
        .saturating_sub(rep.free_blocks)
        .saturating_sub(rep.data_blocks);
    Ok(rep)
}

/// Adds the path of each file a problem names ("inode N", or a reverse-map
/// owner "... of inode N"), from the directory entries found.
fn name_files(
    p: &mut [Problem],
    sb: &daxfs_format::Superblock,
    names: &HashMap<u64, (u64, String)>,
) {
    let root = sb.root_ino.get();
    let path = |ino: u64| -> Option<String> {
        let mut parts = vec![];
        let mut at = ino;
        // A cycle or a lost parent gives no path.
        for _ in 0..4096 {
            if at == root {
                parts.reverse();
                return Some(format!("/{}", parts.join("/")));
            }
            let (dir, name) = names.get(&at)?;
            parts.push(name.clone());
            at = *dir;
        }
        None
    };
    let ino_after = |text: &str, tag: &str| -> Option<u64> {
        let at = text.find(tag)? + tag.len();
        let digits: String = text[at..]
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        digits.parse().ok()
    };
    for x in p.iter_mut() {
        if let Some(ino) = x
            .structure
            .strip_prefix("inode ")
            .and_then(|n| n.parse().ok())
            && ino != root
            && let Some(path) = path(ino)
        {
            x.structure = format!("inode {ino} ({path})");
        } else if let Some(ino) =
            ino_after(&x.message, "of inode ").or_else(|| ino_after(&x.message, "ino: "))
            && ino != root
            && let Some(path) = path(ino)
        {
            x.message = format!("{} (inode {ino} is {path})", x.message);
        }
    }
}

fn check_tree<T>(p: &mut Vec<Problem>, what: &str, r: Result<T, TreeError>) {
    if let Err(e) = r {
        let block = match &e {
            TreeError::Corrupt { block, .. } | TreeError::Media { block } => Some(*block),
            TreeError::Format(f) => format_block(f),
            _ => None,
        };
        p.push(Problem {
            structure: what.into(),
            block,
            message: e.to_string(),
        });
    }
}

fn format_block(f: &daxfs_format::FormatError) -> Option<u64> {
    use daxfs_format::FormatError::*;
    match f {
        BadMagic { block, .. }
        | ChecksumMismatch { block, .. }
        | Misplaced { block, .. }
        | WrongKind { block, .. }
        | WrongOwner { block, .. } => Some(*block),
        _ => None,
    }
}

fn mark_nodes(
    p: &mut Vec<Problem>,
    s: &mut CheckStore<'_>,
    usage: &mut Usage,
    who: &str,
    owner: Owner,
    visit: impl FnOnce(&mut CheckStore<'_>, &mut dyn FnMut(BlockNo, u32)) -> Result<(), TreeError>,
) {
    let mut nodes = vec![];
    let r = visit(s, &mut |b, _| nodes.push(b.0));
    check_tree(p, who, r);
    for b in nodes {
        usage.mark(p, b, 1, who);
        usage.nodes.push((b, owner, who.to_string()));
    }
}

/// Refcounts against the number of file mappings of each block, and the
/// reverse map against the inverse of every extent map plus all metadata.
fn check_sharing(
    p: &mut Vec<Problem>,
    s: &mut CheckStore<'_>,
    sb: &daxfs_format::Superblock,
    usage: &mut Usage,
    intents: &[daxfs_format::records::RmapIntent],
) -> u64 {
    let rroot = sb.refcount_tree;
    let r = refcount::tree().check(s, &rroot);
    check_tree(p, "refcount tree", r);
    mark_nodes(
        p,
        s,
        usage,
        "refcount tree node",
        Owner::Meta(BlockKind::RefcountTree),
        |s, f| refcount::tree().visit_nodes(s, &rroot, f),
    );
    let mroot = sb.rmap_tree;
    let r = rmap::tree().check(s, &mroot);
    check_tree(p, "reverse-map tree", r);
    mark_nodes(
        p,
        s,
        usage,
        "reverse-map tree node",
        Owner::Meta(BlockKind::RmapTree),
        |s, f| rmap::tree().visit_nodes(s, &mroot, f),
    );

    // Data coverage counts, as intervals: a sweep over extent starts and ends.
    let mut ev: Vec<(u64, i64)> = usage
        .data
        .iter()
        .flat_map(|&(ph, l)| [(ph, 1), (ph + l, -1)])
        .collect();
    ev.sort_unstable();
    let mut runs: Vec<(u64, u64, u64)> = vec![];
    let mut depth = 0i64;
    let mut at = 0u64;
    for (x, d) in ev {
        if depth > 0 && x > at {
            runs.push((at, x - at, depth as u64));
        }
        depth += d;
        at = x;
    }
    for &(st, l, _) in &runs {
        usage.mark(p, st, l, "file data");
    }
    // Every refcount record must match the coverage, and every covered run
    // with more than one owner must have a record.
    let mut recs = vec![];
    let r = refcount::tree().range(s, &rroot, &0, &u64::MAX, &mut |k, v| {
        recs.push((k, v.len.get(), v.count.get()));
        ControlFlow::Continue(())
    });
    check_tree(p, "refcount tree", r);
    let count_at = |b: u64| -> u64 {
        match runs.binary_search_by(|r| {
            if r.0 + r.1 <= b {
                std::cmp::Ordering::Less
            } else if r.0 > b {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        }) {
            Ok(i) => runs[i].2,
            Err(_) => 0,
        }
    };
    let mut covered = 0u64;
    for &(k, l, c) in &recs {
        if c < 2 || l == 0 || k.checked_add(l).is_none_or(|e| e > sb.total_blocks.get()) {
            p.push(Problem {
                structure: "refcount tree".into(),
                block: Some(k),
                message: format!("a record of {} has count {c}", blocks(l)),
            });
            continue;
        }
        // Compare at each run boundary inside the record.
        let mut b = k;
        while b < k + l {
            let have = count_at(b);
            if have != c {
                p.push(Problem {
                    structure: "refcount tree".into(),
                    block: Some(b),
                    message: format!("refcount {c} but {have} file mappings"),
                });
                break;
            }
            let next = runs
                .iter()
                .find(|r| r.0 <= b && r.0 + r.1 > b)
                .map_or(k + l, |r| r.0 + r.1);
            b = next.min(k + l);
        }
        covered += l;
    }
    let shared: u64 = runs.iter().filter(|r| r.2 >= 2).map(|r| r.1).sum();
    if shared != covered {
        p.push(Problem {
            structure: "refcount tree".into(),
            block: None,
            message: format!(
                "{} {} several owners but the refcount tree covers {covered}",
                blocks(shared),
                if shared == 1 { "has" } else { "have" }
            ),
        });
    }

    let distinct: u64 = runs.iter().map(|r| r.1).sum();
    if sb.incompat.get() & daxfs_format::superblock::INCOMPAT_RMAP == 0 {
        return distinct;
    }
    // The reverse map must be exactly the inverse of everything found: its
    // records, with the changes its nodes do not hold yet (the log's
    // intents) applied.
    let mut records = std::collections::BTreeMap::new();
    let r = rmap::tree().range(
        s,
        &mroot,
        &(0, 0, 0),
        &(u64::MAX, u64::MAX, u64::MAX),
        &mut |k, v| {
            records.insert(k, v);
            ControlFlow::Continue(())
        },
    );
    for it in intents {
        let k = (it.start.get(), it.owner.get(), it.offset.get());
        match it.op.get() {
            daxfs_format::records::INTENT_PUT => {
                records.insert(
                    k,
                    daxfs_format::records::RmapRecord {
                        len: it.len,
                        flags: it.flags,
                        replica: it.replica,
                    },
                );
            }
            daxfs_format::records::INTENT_REMOVE => {
                records.remove(&k);
            }
            op => p.push(Problem {
                structure: "log".into(),
                block: Some(k.0),
                message: format!("reverse-map intent with unknown operation {op}"),
            }),
        }
    }
    let mut actual = vec![];
    let mut err = None;
    let mut bad_len = vec![];
    let total = sb.total_blocks.get();
    for (k, v) in records {
        let len = v.len.get();
        if len == 0 || k.0.checked_add(len).is_none_or(|e| e > total) {
            bad_len.push((k.0, len));
            continue;
        }
        match Mapping::from_kv(k, v) {
            Ok(m) => actual.push(m),
            Err(_) => err = Some(k.0),
        }
    }
    check_tree(p, "reverse-map tree", r);
    for (b, len) in bad_len {
        p.push(Problem {
            structure: "reverse-map tree".into(),
            block: Some(b),
            message: format!("a record of {} is empty or passes the end", blocks(len)),
        });
    }
    if let Some(b) = err {
        p.push(Problem {
            structure: "reverse-map tree".into(),
            block: Some(b),
            message: "record with an unknown owner".into(),
        });
    }
    check_replicas(p, s, sb, usage, &actual);
    // Records of one owner never overlap (file data: on the same block and
    // file block, or a file would map one of its blocks twice), and ones that
    // continue each other are merged. Overlaps also show as a difference from
    // the extent maps below; this names them.
    let mut by_owner: Vec<&Mapping> = actual.iter().collect();
    by_owner.sort_by_key(|m| match m.owner {
        Owner::Data { ino, fblock } => (0, ino, fblock, m.phys),
        o => (1 + u8::from(m.is_replica), o.codes().0, o.codes().1, m.phys),
    });
    for w in by_owner.windows(2) {
        let (a, b) = (w[0], w[1]);
        let (same, cont) = match (a.owner, b.owner) {
            (Owner::Data { ino: x, fblock: fa }, Owner::Data { ino: y, fblock: fb }) => (
                x == y && fa + a.len > fb,
                x == y && fa + a.len == fb && a.phys + a.len == b.phys,
            ),
            (x, y) => (
                x == y && a.is_replica == b.is_replica && a.phys + a.len > b.phys,
                false,
            ),
        };
        if same {
            p.push(Problem {
                structure: "reverse-map tree".into(),
                block: Some(b.phys),
                message: format!("records of {} overlap", owner_text(b.owner)),
            });
        } else if cont && a.unwritten == b.unwritten {
            p.push(Problem {
                structure: "reverse-map tree".into(),
                block: Some(b.phys),
                message: format!(
                    "records of {} continue each other unmerged",
                    owner_text(b.owner)
                ),
            });
        }
    }
    let want = normalize(std::mem::take(&mut usage.expected));
    let got = normalize(actual);
    if want != got {
        let missing: Vec<&Mapping> = want.iter().filter(|m| !got.contains(m)).take(5).collect();
        let extra: Vec<&Mapping> = got.iter().filter(|m| !want.contains(m)).take(5).collect();
        for m in missing {
            p.push(Problem {
                structure: "reverse-map tree".into(),
                block: Some(m.phys),
                message: format!(
                    "lacks {} owned by {}{}",
                    blocks(m.len),
                    owner_text(m.owner),
                    if m.unwritten { " (unwritten)" } else { "" }
                ),
            });
        }
        for m in extra {
            p.push(Problem {
                structure: "reverse-map tree".into(),
                block: Some(m.phys),
                message: format!(
                    "says {} owns {}{} it does not",
                    owner_text(m.owner),
                    blocks(m.len),
                    if m.unwritten { " (unwritten)" } else { "" }
                ),
            });
        }
        if p.last().is_none_or(|x| x.structure != "reverse-map tree") {
            p.push(Problem {
                structure: "reverse-map tree".into(),
                block: None,
                message: "differs from the extent maps and metadata".into(),
            });
        }
    }
    distinct
}

/// Merges mappings that continue each other, so two descriptions of the same
/// ownership compare equal however they are cut.
fn normalize(mut v: Vec<Mapping>) -> Vec<Mapping> {
    // File data in file order (a file maps each of its blocks once, though
    // it may map one device block twice); everything else in device order.
    v.sort_by_key(|m| match m.owner {
        Owner::Data { ino, fblock } => (0, ino, fblock, m.phys),
        o => (1 + u8::from(m.is_replica), o.codes().0, o.codes().1, m.phys),
    });
    let mut out: Vec<Mapping> = vec![];
    for m in v {
        if let Some(last) = out.last_mut() {
            let cont_owner = match (last.owner, m.owner) {
                (Owner::Data { ino: a, fblock: fa }, Owner::Data { ino: b, fblock: fb }) => {
                    a == b && fa + last.len == fb
                }
                (x, y) => x == y,
            };
            if cont_owner
                && last.phys + last.len == m.phys
                && last.unwritten == m.unwritten
                && last.replica == 0
                && m.replica == 0
                && !last.is_replica
                && !m.is_replica
            {
                last.len += m.len;
                continue;
            }
        }
        out.push(m);
    }
    out.sort_by_key(|m| (m.phys, m.owner, m.is_replica));
    out
}

/// Every tree node has a replica: recorded in the reverse map from both
/// ends, used by nothing else, holding the node's bytes. Adds what the
/// reverse map must hold for nodes and replicas to `usage.expected`.
fn check_replicas(
    p: &mut Vec<Problem>,
    s: &mut CheckStore<'_>,
    sb: &daxfs_format::Superblock,
    usage: &mut Usage,
    actual: &[Mapping],
) {
    let nodes = std::mem::take(&mut usage.nodes);
    if !sb.has_replicas() {
        for (b, owner, _) in nodes {
            usage.expected.push(Mapping::new(b, 1, owner, false));
        }
        return;
    }
    let mut primary: HashMap<(u64, Owner), u64> = HashMap::new();
    let mut copies: HashMap<(u64, Owner), u64> = HashMap::new();
    for m in actual {
        if m.is_replica {
            copies.insert((m.phys, m.owner), m.replica);
        } else {
            primary.insert((m.phys, m.owner), m.replica);
        }
    }
    for (b, owner, who) in nodes {
        let r = primary.get(&(b, owner)).copied().unwrap_or(0);
        usage.expected.push(Mapping {
            replica: r,
            ..Mapping::new(b, 1, owner, false)
        });
        if r == 0 {
            p.push(Problem {
                structure: who,
                block: Some(b),
                message: "node has no replica in the reverse map".into(),
            });
            continue;
        }
        usage.mark(p, r, 1, &format!("replica of {who} {b}"));
        usage.expected.push(Mapping {
            replica: b,
            is_replica: true,
            ..Mapping::new(r, 1, owner, false)
        });
        if copies.get(&(r, owner)) != Some(&b) {
            p.push(Problem {
                structure: who.clone(),
                block: Some(r),
                message: format!("replica of block {b} is not recorded as its replica"),
            });
        }
        // A node the log will rewrite (with its replica) is not compared.
        if s.overlay.is_some_and(|o| o.contains_key(&b)) {
            continue;
        }
        let (kind, o) = match owner {
            Owner::Meta(k) => (k, 0),
            Owner::ExtentTree { ino } => (BlockKind::ExtentTree, ino),
            Owner::DirTree { ino } => (BlockKind::DirTree, ino),
            Owner::Data { .. } => continue,
        };
        let Ok(node) = read_verified(s.dev, b, kind, Some(o), s.fs_id) else {
            continue; // reported with the fallbacks
        };
        let same =
            read_verified_as(s.dev, r, b, kind, Some(o), s.fs_id).is_ok_and(|c| c[..] == node[..]);
        if !same {
            p.push(Problem {
                structure: who,
                block: Some(r),
                message: format!(
                    "replica of block {b} does not verify or differs from it: a scrub rebuilds it"
                ),
            });
        }
    }
    // The anchors are the reverse-map nodes on the path to the middle.
    let mid = sb.total_blocks.get() / 2;
    match rmap::tree().path(s, &sb.rmap_tree, &(mid, 0, 0)) {
        Ok(path) => {
            let have: Vec<(u64, u64)> = sb
                .anchors()
                .iter()
                .map(|a| (a.node.get(), a.replica.get()))
                .collect();
            let want: Vec<(u64, u64)> = path
                .iter()
                .take(daxfs_format::superblock::MAX_ANCHORS)
                .map(|&b| {
                    let r = primary
                        .get(&(b, Owner::Meta(BlockKind::RmapTree)))
                        .copied()
                        .unwrap_or(0);
                    (b, r)
                })
                .collect();
            if have != want {
                p.push(Problem {
                    structure: "superblock".into(),
                    block: Some(0),
                    message: format!(
                        "the reverse-map anchors (blocks {}) are not the path to the middle of the tree ({})",
                        block_list(&have),
                        block_list(&want)
                    ),
                });
            }
        }
        Err(e) => check_tree(p, "reverse-map tree", Err::<(), _>(e)),
    }
}

/// Nodes read through their replica, and nodes with both copies bad.
fn report_fallbacks(p: &mut Vec<Problem>, reps: &std::sync::Mutex<Replicas>) {
    let g = reps.lock().unwrap_or_else(|e| e.into_inner());
    for f in &g.pending {
        p.push(Problem {
            structure: f.kind.name().into(),
            block: Some(f.block),
            message: format!(
                "does not verify ({}); its replica {} does: the file system rebuilds the node from it when it next reads it (or run a scrub)",
                f.why, f.replica
            ),
        });
    }
    for f in &g.failed {
        p.push(Problem {
            structure: f.kind.name().into(),
            block: Some(f.block),
            message: format!(
                "this block and its replica {} are both bad ({}): the file system shuts down when it reads it; files not reached through it can still be read: copy them off, make a new file system and copy them back",
                f.replica, f.why
            ),
        });
    }
}

/// The parent-pointer tree must hold exactly one record per directory entry.
fn check_parents(
    p: &mut Vec<Problem>,
    s: &mut CheckStore<'_>,
    sb: &daxfs_format::Superblock,
    usage: &mut Usage,
    mut want: Vec<(u64, u64, u64)>,
) {
    let root = sb.parent_tree;
    let t = crate::dir::parent_tree();
    check_tree(p, "parent-pointer tree", t.check(s, &root));
    mark_nodes(
        p,
        s,
        usage,
        "parent-pointer tree node",
        Owner::Meta(BlockKind::ParentTree),
        |s, f| t.visit_nodes(s, &root, f),
    );
    let mut got = vec![];
    let r = t.range(
        s,
        &root,
        &(0, 0, 0),
        &(u64::MAX, u64::MAX, u64::MAX),
        &mut |k, ()| {
            got.push(k);
            ControlFlow::Continue(())
        },
    );
    check_tree(p, "parent-pointer tree", r);
    want.sort_unstable();
    if got != want {
        let missing = want.iter().find(|k| !got.contains(k));
        let extra = got.iter().find(|k| !want.contains(k));
        let message = match (missing, extra) {
            (Some(m), _) => format!(
                "no record for the entry of inode {} in directory {}",
                m.0, m.1
            ),
            (None, Some(x)) => format!(
                "record names inode {} in directory {}, which has no such entry",
                x.0, x.1
            ),
            _ => "differs from the directory entries".into(),
        };
        p.push(Problem {
            structure: "parent-pointer tree".into(),
            block: None,
            message,
        });
    }
}

/// The loss tree names live files; the error log and the bad-block tree are
/// well formed, and the error log's records make whole entries.
/// The extended-attribute tree: its nodes, and every record against the
/// inodes (see [`crate::xattr::check_records`]).
fn check_xattrs(
    p: &mut Vec<Problem>,
    s: &mut CheckStore<'_>,
    sb: &daxfs_format::Superblock,
    usage: &mut Usage,
    inodes: &BTreeMap<u64, InodeRecord>,
) {
    let t = crate::xattr::tree();
    let root = sb.xattr_tree;
    check_tree(p, "extended-attribute tree", t.check(s, &root));
    mark_nodes(
        p,
        s,
        usage,
        "extended-attribute tree node",
        Owner::Meta(BlockKind::XattrTree),
        |s, f| t.visit_nodes(s, &root, f),
    );
    let mut recs = vec![];
    let r = t.range(
        s,
        &root,
        &(0, 0, 0),
        &(u64::MAX, u64::MAX, u64::MAX),
        &mut |k, v| {
            recs.push((k, v));
            ControlFlow::Continue(())
        },
    );
    check_tree(p, "extended-attribute tree", r);
    for message in crate::xattr::check_records(&recs, |ino| inodes.contains_key(&ino)) {
        p.push(Problem {
            structure: "extended-attribute tree".into(),
            block: None,
            message,
        });
    }
}

fn check_media_trees(
    p: &mut Vec<Problem>,
    s: &mut CheckStore<'_>,
    sb: &daxfs_format::Superblock,
    usage: &mut Usage,
    inodes: &BTreeMap<u64, InodeRecord>,
) {
    use crate::media::{error_log, loss_tree};
    use crate::space::badblocks;
    let lroot = sb.loss_tree;
    check_tree(p, "data-loss tree", loss_tree().check(s, &lroot));
    mark_nodes(
        p,
        s,
        usage,
        "data-loss tree node",
        Owner::Meta(BlockKind::LossTree),
        |s, f| loss_tree().visit_nodes(s, &lroot, f),
    );
    let mut losses = vec![];
    let r = loss_tree().range(s, &lroot, &(0, 0), &(u64::MAX, u64::MAX), &mut |k, l| {
        losses.push((k, l));
        ControlFlow::Continue(())
    });
    check_tree(p, "data-loss tree", r);
    for ((ino, fb), l) in losses {
        if l == 0 || !inodes.contains_key(&ino) {
            p.push(Problem {
                structure: "data-loss tree".into(),
                block: None,
                message: format!("record for inode {ino} block {fb} (+{l}) names no live file"),
            });
        }
    }
    let eroot = sb.error_log;
    check_tree(p, "error log", error_log().check(s, &eroot));
    mark_nodes(
        p,
        s,
        usage,
        "error log node",
        Owner::Meta(BlockKind::ErrorLog),
        |s, f| error_log().visit_nodes(s, &eroot, f),
    );
    // How the records make entries (a tree the check above refused is not
    // read again).
    if !p.iter().any(|x| x.structure == "error log")
        && let Err(e) =
            crate::media::read_error_log(s, &eroot, sb.error_seq.get(), &mut |_, _, _, _| {})
    {
        p.push(Problem {
            structure: "error log".into(),
            block: None,
            message: e.to_string(),
        });
    }
    let broot = sb.badblock_tree;
    check_tree(p, "bad-block tree", badblocks::tree().check(s, &broot));
    mark_nodes(
        p,
        s,
        usage,
        "bad-block tree node",
        Owner::Meta(BlockKind::BadBlockTree),
        |s, f| badblocks::tree().visit_nodes(s, &broot, f),
    );
}

/// Bad blocks no file owns are quarantined, never free.
fn check_quarantine(
    p: &mut Vec<Problem>,
    s: &mut CheckStore<'_>,
    sb: &daxfs_format::Superblock,
    usage: &mut Usage,
) {
    use crate::space::badblocks;
    let broot = sb.badblock_tree;
    let bad = badblocks::all(s, &broot).unwrap_or_default();
    for (st, l) in bad {
        for b in st..st.saturating_add(l) {
            let Some(&o) = usage.owner.get(b as usize) else {
                break;
            };
            if o == 0 {
                usage.mark(p, b, 1, "quarantined bad block");
            } else if usage
                .names
                .get(o as usize - 1)
                .is_some_and(|n| n == "free space")
            {
                p.push(Problem {
                    structure: "free-space tree".into(),
                    block: Some(b),
                    message: "a known-bad block is in free space".into(),
                });
            }
        }
    }
}

/// A reverse-map owner in words, for fsck's problems.
fn owner_text(o: Owner) -> String {
    o.to_string()
}

/// "1 block", "N blocks".
fn blocks(n: u64) -> String {
    if n == 1 {
        "1 block".into()
    } else {
        format!("{n} blocks")
    }
}

/// Anchors as "67 (replica 4088), 70 (replica 4091)".
fn block_list(anchors: &[(u64, u64)]) -> String {
    if anchors.is_empty() {
        return "none".into();
    }
    anchors
        .iter()
        .map(|(n, r)| format!("{n} (replica {r})"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl crate::Fs {
    /// Checks this mounted file system as [`fsck`] does the device, over a
    /// consistent state while it is in use: pending commits, reverse-map
    /// changes and inode write-backs are made durable and the check runs
    /// with the metadata lock held, so no change lands while it reads
    /// (changes wait for it; reads that take no lock go on). Data writes
    /// that allocate nothing change no metadata and go on too.
    pub fn fsck_online(&self, progress: Progress<'_>) -> Result<FsckReport> {
        let inner = &*self.inner;
        inner.sync()?;
        let mut meta = crate::fs::lock(&inner.meta);
        let dev = &*inner.dev;
        crate::tx::flush_lazy(dev, &mut meta)?;
        match crate::tx::flush_intents(dev, &mut meta) {
            Err(crate::FsError::NoSpace(_)) | Ok(()) => {}
            Err(e) => return Err(e),
        }
        // Inode records changed since the sync (sizes and times are written
        // back lazily) go in now, under the lock.
        let mut dirty: Vec<_> = crate::fs::lock(&inner.icache)
            .values()
            .filter(|i| i.rec().dirty)
            .cloned()
            .collect();
        if !dirty.is_empty() {
            dirty.sort_by_key(|i| i.ino);
            let mut tx = crate::tx::Tx::begin(dev, &mut meta)?;
            tx.use_reserve();
            let mut guards: Vec<_> = dirty.iter().map(|i| i.rec()).collect();
            for g in guards.iter_mut() {
                crate::fs::put_record(&mut tx, &g.rec)?;
            }
            tx.commit()?;
            for g in guards.iter_mut() {
                g.dirty = false;
            }
            crate::tx::flush_lazy(dev, &mut meta)?;
        }
        fsck(dev, progress)
    }
}
