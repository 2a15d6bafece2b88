//! Inodes: records in the inode tree, and their in-memory form.
//!
//! Lock order, outermost first: an inode's `data` lock (several: by inode
//! number), the file system's metadata lock, inode `rec` locks (several: by
//! inode number). Nothing is ever acquired while a `rec` lock is held except
//! another `rec` lock of a higher inode number.
use crate::error::{FsError, Result};
use crate::extents::ExtentMap;
use crate::fs::lock;
use daxfs_btree::{BTree, NodeStore};
use daxfs_format::BlockKind;
use daxfs_format::records::{INODE_FLAG_INLINE_EXTENTS, InodeRecord, Timestamp, TreeRoot, mode};
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use zerocopy::FromZeros;

/// The inode tree (inode number -> record).
pub fn inode_tree() -> BTree<u64, InodeRecord> {
    BTree::new(BlockKind::InodeTree, 0)
}

/// The orphan tree: inodes unlinked while open, freed at last close or mount.
pub fn orphan_tree() -> BTree<u64, ()> {
    BTree::new(BlockKind::OrphanTree, 0)
}

/// What kind of object an inode is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    /// A named pipe (no data; the kernel connects its readers and writers).
    Fifo,
    /// A Unix-domain socket's name.
    Socket,
    /// A character device (its number in `rdev`).
    CharDev,
    /// A block device (its number in `rdev`).
    BlockDev,
}

impl FileKind {
    /// A FIFO, socket or device: an inode with no data of its own.
    pub fn is_special(self) -> bool {
        matches!(
            self,
            FileKind::Fifo | FileKind::Socket | FileKind::CharDev | FileKind::BlockDev
        )
    }

    pub fn of_mode(m: u32) -> Option<FileKind> {
        match m & mode::S_IFMT {
            mode::S_IFREG => Some(FileKind::File),
            mode::S_IFDIR => Some(FileKind::Dir),
            mode::S_IFLNK => Some(FileKind::Symlink),
            mode::S_IFIFO => Some(FileKind::Fifo),
            mode::S_IFSOCK => Some(FileKind::Socket),
            mode::S_IFCHR => Some(FileKind::CharDev),
            mode::S_IFBLK => Some(FileKind::BlockDev),
            _ => None,
        }
    }
    pub fn mode_bits(self) -> u32 {
        match self {
            FileKind::File => mode::S_IFREG,
            FileKind::Dir => mode::S_IFDIR,
            FileKind::Symlink => mode::S_IFLNK,
            FileKind::Fifo => mode::S_IFIFO,
            FileKind::Socket => mode::S_IFSOCK,
            FileKind::CharDev => mode::S_IFCHR,
            FileKind::BlockDev => mode::S_IFBLK,
        }
    }
    /// What it is called in messages.
    pub fn name(self) -> &'static str {
        match self {
            FileKind::File => "regular file",
            FileKind::Dir => "directory",
            FileKind::Symlink => "symbolic link",
            FileKind::Fifo => "fifo",
            FileKind::Socket => "socket",
            FileKind::CharDev => "character special file",
            FileKind::BlockDev => "block special file",
        }
    }
    /// The directory-entry type byte (as DT_REG, DT_DIR, DT_LNK, DT_FIFO,
    /// DT_SOCK, DT_CHR, DT_BLK).
    pub fn dtype(self) -> u8 {
        match self {
            FileKind::File => 8,
            FileKind::Dir => 4,
            FileKind::Symlink => 10,
            FileKind::Fifo => 1,
            FileKind::Socket => 12,
            FileKind::CharDev => 2,
            FileKind::BlockDev => 6,
        }
    }
    pub fn of_dtype(t: u8) -> Option<FileKind> {
        match t {
            8 => Some(FileKind::File),
            4 => Some(FileKind::Dir),
            10 => Some(FileKind::Symlink),
            1 => Some(FileKind::Fifo),
            12 => Some(FileKind::Socket),
            2 => Some(FileKind::CharDev),
            6 => Some(FileKind::BlockDev),
            _ => None,
        }
    }
}

/// The current time as an on-media timestamp.
pub fn now() -> Timestamp {
    // The coarse clock (updated every tick), as the kernel uses for file
    // times: a few nanoseconds instead of a full clock read on every write.
    let t = rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse);
    Timestamp {
        sec: t.tv_sec.into(),
        nsec: (t.tv_nsec as u32).into(),
    }
}

/// A fresh inode record.
pub fn new_record(
    ino: u64,
    kind: FileKind,
    perm: u32,
    uid: u32,
    gid: u32,
    parent: u64,
) -> InodeRecord {
    let mut r = InodeRecord::new_zeroed();
    let t = now();
    r.ino = ino.into();
    r.mode = (kind.mode_bits() | (perm & 0o7777)).into();
    r.uid = uid.into();
    r.gid = gid.into();
    r.nlink = if kind == FileKind::Dir { 2 } else { 1 }.into();
    r.atime = t;
    r.mtime = t;
    r.ctime = t;
    r.btime = t;
    r.parent = parent.into();
    r.tree = TreeRoot::EMPTY;
    r.loss = TreeRoot::EMPTY;
    if kind == FileKind::File {
        // A regular file starts with its (no) extents inline.
        r.flags = INODE_FLAG_INLINE_EXTENTS.into();
    }
    r
}

/// The in-memory record of an inode, and whether it has changes (size and
/// times of in-place writes) not yet in the inode tree.
#[derive(Debug)]
pub struct RecState {
    pub rec: InodeRecord,
    pub dirty: bool,
}

/// What the data path needs, under the inode's data lock.
#[derive(Debug, Default)]
pub struct DataState {
    /// The file's extents, read from its tree on first use.
    pub extents: Option<ExtentMap>,
}

/// An inode in memory. Shared by every handle and path lookup.
#[derive(Debug)]
pub struct Inode {
    pub ino: u64,
    pub kind: FileKind,
    pub rec: Mutex<RecState>,
    pub data: RwLock<DataState>,
    /// Open handles. Changed only under the metadata lock.
    pub opens: AtomicU32,
    /// False once the inode is known to have no lost data (as of media-error
    /// report `loss_seen`; reads skip the check).
    pub has_losses: std::sync::atomic::AtomicBool,
    /// Lost file blocks (first block -> blocks), loaded on first need, valid
    /// as of report `loss_seen`.
    pub lost: Mutex<Option<std::collections::BTreeMap<u64, u64>>>,
    /// The report count (`loss_gen`) when `has_losses` and `lost` were
    /// found; 0: not yet, or forgotten.
    pub loss_seen: std::sync::atomic::AtomicU64,
    /// The file system's count of media-error reports that lost data: a
    /// report moves it on instead of visiting each owner in memory.
    pub loss_gen: Arc<std::sync::atomic::AtomicU64>,
    /// Mapped views of the file (see `crate::views`).
    pub views: crate::views::InodeViews,
    /// Set when a lazy transaction (a store fault through a view) changed
    /// the file: an in-place write makes it durable first.
    pub lazy: std::sync::atomic::AtomicBool,
    /// An unnamed temporary file (O_TMPFILE) not yet given a name: the one
    /// kind of inode without links that `link` may name.
    pub tmpfile: std::sync::atomic::AtomicBool,
}

impl Inode {
    /// Whether the file may have lost data: false only when it was found to
    /// have none since the last report that lost data anywhere.
    pub fn maybe_lost(&self) -> bool {
        use std::sync::atomic::Ordering::Acquire;
        self.has_losses.load(Acquire) || self.loss_seen.load(Acquire) != self.loss_gen.load(Acquire)
    }

    /// The loss map found earlier, if no report has happened since.
    pub fn cached_losses(&self) -> Option<std::collections::BTreeMap<u64, u64>> {
        use std::sync::atomic::Ordering::Acquire;
        let g = lock(&self.lost);
        (self.loss_seen.load(Acquire) == self.loss_gen.load(Acquire))
            .then(|| g.clone())
            .flatten()
    }

    /// Remembers the loss map `m` read from the loss tree when the report
    /// count was `seen`.
    pub fn set_losses(&self, seen: u64, m: &std::collections::BTreeMap<u64, u64>) {
        use std::sync::atomic::Ordering::Release;
        let mut g = lock(&self.lost);
        *g = Some(m.clone());
        self.has_losses.store(!m.is_empty(), Release);
        self.loss_seen.store(seen, Release);
    }

    /// Forgets the loss map (this file's losses changed).
    pub fn forget_losses(&self) {
        let mut g = lock(&self.lost);
        *g = None;
        self.has_losses
            .store(true, std::sync::atomic::Ordering::Release);
        self.loss_seen
            .store(0, std::sync::atomic::Ordering::Release);
    }

    pub fn new(rec: InodeRecord, loss_gen: Arc<std::sync::atomic::AtomicU64>) -> Result<Inode> {
        let kind = FileKind::of_mode(rec.mode.get()).ok_or_else(|| {
            FsError::Corrupt(format!(
                "inode {}: unknown file type in mode {:#o}",
                rec.ino.get(),
                rec.mode.get()
            ))
        })?;
        Ok(Inode {
            ino: rec.ino.get(),
            kind,
            rec: Mutex::new(RecState { rec, dirty: false }),
            data: RwLock::new(DataState::default()),
            opens: AtomicU32::new(0),
            has_losses: std::sync::atomic::AtomicBool::new(true),
            lost: Mutex::new(None),
            loss_seen: std::sync::atomic::AtomicU64::new(0),
            loss_gen,
            views: Default::default(),
            lazy: Default::default(),
            tmpfile: Default::default(),
        })
    }

    /// Locks the record.
    pub fn rec(&self) -> MutexGuard<'_, RecState> {
        self.rec.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Reads inode `ino`'s record from the tree.
pub fn read_record(
    s: &mut dyn NodeStore,
    root: &TreeRoot,
    ino: u64,
) -> Result<Option<InodeRecord>> {
    let r = inode_tree().get(s, root, &ino)?;
    if let Some(r) = &r
        && r.ino.get() != ino
    {
        return Err(FsError::Corrupt(format!(
            "inode tree: key {ino} holds the record of inode {}",
            r.ino.get()
        )));
    }
    Ok(r)
}
