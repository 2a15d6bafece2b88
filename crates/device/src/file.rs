//! Devices backed by a shared mapping of a file or a device-DAX character
//! device.
//!
//! # What is opened, and how it persists
//!
//! | target                         | mapping                               | persist                 |
//! |--------------------------------|---------------------------------------|-------------------------|
//! | regular file on a DAX fs       | `MAP_SHARED_VALIDATE \| MAP_SYNC`     | cache-line flush+SFENCE |
//! | other regular file             | `MAP_SHARED` (MAP_SYNC refused)       | `msync(MS_SYNC)`        |
//! | same, `assume_persistent`      | `MAP_SHARED`                          | cache-line flush+SFENCE |
//! | device DAX `/dev/daxX.Y`       | `MAP_SHARED`, aligned to the device   | cache-line flush+SFENCE |
//!
//! The flush instruction (CLWB, else CLFLUSHOPT, else CLFLUSH) is chosen once
//! at open. Targets other than x86_64 always persist with `msync`.
//!
//! # Invariants
//!
//! - While a [`MmapDevice`] lives, its fd holds an exclusive `flock`; a second
//!   opener (another process, or this one through another fd) gets
//!   [`DeviceError::Locked`]. The lock is advisory.
//! - The mapping covers exactly the device size found at open, which is a
//!   non-zero multiple of [`SIZE_GRANULE`](crate::SIZE_GRANULE).
//! - The mapping is dropped (unmapped) before the fd is closed.
//!
//! # Media errors
//!
//! Bad pages are made inaccessible in the device's mapping (see
//! [`media`](crate::media)). An image file's list of bad blocks is kept in a
//! sidecar file beside it ([`sidecar_path`](crate::sidecar_path)), read at
//! open and rewritten whenever the list changes, so that the emulated
//! hardware remembers its bad blocks across restarts; creating an image
//! removes a stale sidecar. A device-DAX device's list is read from sysfs at
//! open ([`devdax_badblocks`](crate::devdax_badblocks); unreadable lists are
//! ignored).
use crate::media::{Holder, Media, Medium};
use crate::mmap::Mapping;
use crate::{
    Device, DeviceError, FailureFlags, FlushInstr, PersistMode, RawMapping, Result, check_range,
    check_size, pmem,
};
use rustix::fd::{AsFd, AsRawFd, RawFd};
use rustix::fs::{FileType, FlockOperation};
use rustix::io::Errno;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;

/// Default alignment of device-DAX mappings when sysfs does not say.
const DEFAULT_DAX_ALIGN: u64 = 2 << 20;

/// Alignment used for mappings of regular files of at least this size, so
/// that a DAX file system can use huge pages.
const FILE_MAP_ALIGN: u64 = 2 << 20;

/// Whether to map regular files with `MAP_SYNC`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MapSyncPolicy {
    /// Try `MAP_SYNC`; fall back to plain `MAP_SHARED` when the file system
    /// refuses it.
    #[default]
    Try,
    /// Fail with [`DeviceError::Unsupported`] unless `MAP_SYNC` is accepted.
    Require,
    /// Never use `MAP_SYNC`.
    Never,
}

/// How to open or create a [`MmapDevice`].
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct OpenOptions {
    /// The memory behind the mapping is persistent even though the mapping
    /// is not synchronous (e.g. the platform flushes CPU caches and memory
    /// buffers on power loss, or the image is only ever used within one
    /// boot): persist with cache-line flushes and SFENCE instead of `msync`.
    /// Ignored on targets without flush instructions.
    pub assume_persistent: bool,
    /// Whether to try `MAP_SYNC` on regular files.
    pub map_sync: MapSyncPolicy,
    /// Use this flush instruction instead of the best one the CPU has. Opening
    /// fails with [`DeviceError::Unsupported`] if the CPU lacks it.
    pub flush_instr: Option<FlushInstr>,
    /// Fill the page tables of the whole mapping at open
    /// (`MADV_POPULATE_WRITE`, Linux 5.14 or later), as PMDK's
    /// `prefault.at_open` does: no access at run time pays a first-touch page
    /// fault. Costs time at open and page-table memory; on an image file with
    /// holes it allocates them.
    pub populate: bool,
}

impl OpenOptions {
    /// The defaults: try `MAP_SYNC`, do not assume persistence, best flush
    /// instruction.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`OpenOptions::assume_persistent`].
    pub fn assume_persistent(mut self, yes: bool) -> Self {
        self.assume_persistent = yes;
        self
    }

    /// Sets [`OpenOptions::map_sync`].
    pub fn map_sync(mut self, policy: MapSyncPolicy) -> Self {
        self.map_sync = policy;
        self
    }

    /// Sets [`OpenOptions::populate`].
    pub fn populate(mut self, yes: bool) -> Self {
        self.populate = yes;
        self
    }

    /// Sets [`OpenOptions::flush_instr`].
    pub fn flush_instr(mut self, instr: Option<FlushInstr>) -> Self {
        self.flush_instr = instr;
        self
    }
}

/// What kind of target a [`MmapDevice`] maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    /// A regular file (an image file, or a file on a DAX file system).
    File,
    /// A device-DAX character device.
    DevDax,
}

/// How the device memory is mapped, for code that maps device pages
/// elsewhere (e.g. into other address ranges).
///
/// The fd belongs to the [`MmapDevice`] and stays open (and locked) only as
/// long as the device lives; do not close it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapSource {
    /// The open file or device.
    pub fd: RawFd,
    /// The file offset of device byte 0.
    pub offset: u64,
    /// The device length in bytes.
    pub len: u64,
    /// True when the mapping uses `MAP_SHARED_VALIDATE | MAP_SYNC`; other
    /// mappings of the same range should do the same.
    pub map_sync: bool,
    /// Mappings of this source must start at offsets and addresses that are
    /// multiples of this (device-DAX alignment; the page size for files).
    pub align: u64,
    /// What is mapped.
    pub kind: DeviceKind,
}

/// A device backed by a shared mapping of a file or device-DAX device.
pub struct MmapDevice {
    // Declared before `file` so the mapping goes away before the fd closes.
    map: Mapping,
    file: File,
    path: PathBuf,
    kind: DeviceKind,
    map_sync: bool,
    align: u64,
    assume_persistent: bool,
    mode: PersistMode,
    persist_error: Mutex<Option<std::io::Error>>,
    media: Media,
}

impl std::fmt::Debug for MmapDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmapDevice")
            .field("path", &self.path)
            .field("len", &self.map.len())
            .field("kind", &self.kind)
            .field("map_sync", &self.map_sync)
            .field("mode", &self.mode)
            .finish()
    }
}

fn os(what: String) -> impl FnOnce(std::io::Error) -> DeviceError {
    move |source| DeviceError::Os { what, source }
}

fn errno_os(what: String) -> impl FnOnce(Errno) -> DeviceError {
    move |e| DeviceError::Os {
        what,
        source: e.into(),
    }
}

/// Takes the exclusive lock on `file`.
fn lock(file: &File, path: &Path) -> Result<()> {
    match rustix::fs::flock(file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(()),
        Err(e) if e == Errno::WOULDBLOCK => Err(DeviceError::Locked(path.display().to_string())),
        Err(e) => Err(errno_os(format!("locking {}", path.display()))(e)),
    }
}

/// Creates a new image file of `size` bytes at `path` and returns it open
/// and locked. Refuses to overwrite an existing file.
fn create_locked(path: &Path, size: u64) -> Result<File> {
    check_size(size)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(os(format!("creating {}", path.display())))?;
    let setup = || -> Result<()> {
        lock(&file, path)?;
        // A new image is new hardware: a list left by an earlier image of the
        // same name does not apply.
        let sidecar = crate::sidecar_path(path);
        match std::fs::remove_file(&sidecar) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(os(format!("removing {}", sidecar.display()))(e));
            }
            _ => {}
        }
        file.set_len(size)
            .map_err(os(format!("setting the size of {}", path.display())))?;
        // Allocate the blocks now, so that a store into the mapping cannot
        // hit a hole on a full file system (which would raise SIGBUS).
        match rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, size) {
            Ok(()) => Ok(()),
            Err(e) if e == Errno::OPNOTSUPP || e == Errno::NOSYS => Ok(()),
            Err(e) => Err(errno_os(format!(
                "allocating {size} bytes for {}",
                path.display()
            ))(e)),
        }
    };
    if let Err(e) = setup() {
        drop(file);
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(file)
}

/// Creates a new, zero-filled image file of `size` bytes at `path`.
///
/// `size` must be non-zero and a multiple of [`SIZE_GRANULE`](crate::SIZE_GRANULE)
/// ([`DeviceError::InvalidSize`] otherwise). An existing file is never
/// overwritten (an [`DeviceError::Os`] error of kind `AlreadyExists`). The
/// file's blocks are allocated up front where the file system supports it.
pub fn create_image_file(path: impl AsRef<Path>, size: u64) -> Result<()> {
    create_locked(path.as_ref(), size).map(drop)
}

/// Geometry of a device-DAX device, from sysfs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DaxGeometry {
    pub(crate) size: u64,
    pub(crate) align: u64,
}

fn read_sysfs_u64(path: &Path) -> Result<u64> {
    let text = std::fs::read_to_string(path).map_err(os(format!("reading {}", path.display())))?;
    let t = text.trim();
    let parsed = match t.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => t.parse(),
    };
    parsed.map_err(|_| DeviceError::Unsupported(format!("{}: not a number: {t:?}", path.display())))
}

/// Reads the size and mapping alignment of the device-DAX character device
/// `major:minor` from the sysfs tree at `sys_root` (normally `/sys`):
/// `dev/char/MAJ:MIN/subsystem` must link to the `dax` subsystem (bus or
/// class), `size` gives the size and `align`, else `device/align`, the
/// alignment (2 MiB when neither exists).
pub(crate) fn dax_geometry(sys_root: &Path, major: u32, minor: u32) -> Result<DaxGeometry> {
    let dir = sys_root.join(format!("dev/char/{major}:{minor}"));
    let subsystem = std::fs::read_link(dir.join("subsystem")).ok();
    if subsystem.as_deref().and_then(Path::file_name) != Some("dax".as_ref()) {
        return Err(DeviceError::Unsupported(format!(
            "character device {major}:{minor} is not a device-DAX device"
        )));
    }
    let size = read_sysfs_u64(&dir.join("size"))?;
    // Newer kernels give each device its own `align`; older ones only the
    // region's, reached through `device`.
    let align_paths = [dir.join("align"), dir.join("device/align")];
    let align = match align_paths.iter().find(|p| p.exists()) {
        Some(p) => read_sysfs_u64(p)?,
        None => DEFAULT_DAX_ALIGN,
    };
    if !align.is_power_of_two() || align < crate::SIZE_GRANULE {
        return Err(DeviceError::Unsupported(format!(
            "device DAX {major}:{minor}: unusable alignment {align:#x}"
        )));
    }
    check_size(size)?;
    if !size.is_multiple_of(align) {
        return Err(DeviceError::InvalidSize {
            size,
            reason: format!("not a multiple of the device alignment {align:#x}"),
        });
    }
    Ok(DaxGeometry { size, align })
}

/// Chooses how to persist.
fn choose_mode(synchronous: bool, opts: &OpenOptions) -> Result<PersistMode> {
    if let Some(i) = opts.flush_instr
        && !pmem::flush_instr_supported(i)
    {
        return Err(DeviceError::Unsupported(format!(
            "this CPU has no {i:?} instruction"
        )));
    }
    if !(synchronous || opts.assume_persistent) {
        return Ok(PersistMode::Msync);
    }
    Ok(match opts.flush_instr.or_else(pmem::detect_flush_instr) {
        Some(i) => PersistMode::CpuFlush(i),
        None => PersistMode::Msync,
    })
}

fn to_usize(size: u64) -> Result<usize> {
    usize::try_from(size).map_err(|_| DeviceError::InvalidSize {
        size,
        reason: "larger than the address space".into(),
    })
}

impl MmapDevice {
    /// Opens an existing image file, DAX file or device-DAX device for
    /// reading and writing, locks it and maps all of it.
    pub fn open(path: impl AsRef<Path>, opts: OpenOptions) -> Result<MmapDevice> {
        let path = path.as_ref();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(os(format!("opening {}", path.display())))?;
        lock(&file, path)?;
        Self::from_locked(file, path, opts, Path::new("/sys"))
    }

    /// Creates a new image file of `size` bytes (see [`create_image_file`])
    /// and opens it. The file is removed again if opening fails.
    pub fn create(path: impl AsRef<Path>, size: u64, opts: OpenOptions) -> Result<MmapDevice> {
        let path = path.as_ref();
        let file = create_locked(path, size)?;
        Self::from_locked(file, path, opts, Path::new("/sys")).inspect_err(|_| {
            let _ = std::fs::remove_file(path);
        })
    }

    fn from_locked(
        file: File,
        path: &Path,
        opts: OpenOptions,
        sys_root: &Path,
    ) -> Result<MmapDevice> {
        let st =
            rustix::fs::fstat(&file).map_err(errno_os(format!("examining {}", path.display())))?;
        let mut devdax_id = None;
        let (kind, size, align, map, map_sync) = match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => {
                let size = st.st_size as u64;
                check_size(size)?;
                let align = if size >= FILE_MAP_ALIGN {
                    FILE_MAP_ALIGN
                } else {
                    crate::SIZE_GRANULE
                };
                let len = to_usize(size)?;
                let what = || format!("mapping {}", path.display());
                let sync_attempt = match opts.map_sync {
                    MapSyncPolicy::Never => None,
                    MapSyncPolicy::Try | MapSyncPolicy::Require => {
                        match Mapping::shared(file.as_fd(), 0, len, true, align as usize) {
                            Ok(m) => Some(m),
                            // EOPNOTSUPP: not DAX; EINVAL: kernel predates
                            // MAP_SHARED_VALIDATE.
                            Err(e) if e == Errno::OPNOTSUPP || e == Errno::INVAL => {
                                if opts.map_sync == MapSyncPolicy::Require {
                                    return Err(DeviceError::Unsupported(format!(
                                        "{}: MAP_SYNC refused (not on a DAX file system): {e}",
                                        path.display()
                                    )));
                                }
                                None
                            }
                            Err(e) => return Err(errno_os(what())(e)),
                        }
                    }
                };
                match sync_attempt {
                    Some(m) => (DeviceKind::File, size, align, m, true),
                    None => {
                        let m = Mapping::shared(file.as_fd(), 0, len, false, align as usize)
                            .map_err(errno_os(what()))?;
                        (DeviceKind::File, size, align, m, false)
                    }
                }
            }
            FileType::CharacterDevice => {
                let (major, minor) = (rustix::fs::major(st.st_rdev), rustix::fs::minor(st.st_rdev));
                devdax_id = Some((major, minor));
                let geo = dax_geometry(sys_root, major, minor).map_err(|e| match e {
                    DeviceError::Unsupported(m) => {
                        DeviceError::Unsupported(format!("{}: {m}", path.display()))
                    }
                    e => e,
                })?;
                // Device DAX is synchronous by nature (even for
                // `MapSyncPolicy::Require`): it is mapped with MAP_SHARED.
                let m = Mapping::shared(
                    file.as_fd(),
                    0,
                    to_usize(geo.size)?,
                    false,
                    to_usize(geo.align)?,
                )
                .map_err(errno_os(format!("mapping {}", path.display())))?;
                (DeviceKind::DevDax, geo.size, geo.align, m, false)
            }
            other => {
                return Err(DeviceError::Unsupported(format!(
                    "{}: a {other:?} is neither a regular file nor a device-DAX character device",
                    path.display()
                )));
            }
        };
        debug_assert_eq!(map.len() as u64, size);
        // Before any page is revoked for a known bad range below.
        if opts.populate {
            map.populate().map_err(|e| {
                DeviceError::Unsupported(format!(
                    "{}: populating the mapping (MADV_POPULATE_WRITE): {e}",
                    path.display()
                ))
            })?;
        }
        let synchronous = map_sync || kind == DeviceKind::DevDax;
        // Without flush instructions (non-x86_64) this gives `Msync`.
        let mode = choose_mode(synchronous, &opts)?;
        let sidecar = (kind == DeviceKind::File).then(|| crate::sidecar_path(path));
        let initial = match (&sidecar, devdax_id) {
            (Some(p), _) => crate::badblocks::read_sidecar(p)?.unwrap_or_default(),
            (None, Some((major, minor))) => {
                crate::devdax_badblocks(sys_root, major, minor, size).unwrap_or_default()
            }
            (None, None) => Vec::new(),
        };
        if let Some(&(off, len)) = initial
            .iter()
            .find(|&&(o, l)| check_range(o, l, size).is_err())
        {
            let origin = match &sidecar {
                Some(p) => p.display().to_string(),
                None => format!("{} (sysfs badblocks)", path.display()),
            };
            return Err(DeviceError::BadBlockList {
                origin,
                at: format!("sectors {}+{}", off / 512, len / 512),
                reason: format!("the range lies past the end of the device ({size:#x} bytes)"),
            });
        }
        let dev = MmapDevice {
            map,
            file,
            path: path.to_path_buf(),
            kind,
            map_sync,
            align,
            assume_persistent: opts.assume_persistent,
            mode,
            persist_error: Mutex::new(None),
            media: Media::new(size, sidecar),
        };
        dev.media.load(&dev, &initial)?;
        Ok(dev)
    }

    /// Maps device bytes `[off, off + len)` a second time, readable and
    /// writable, for a user that accesses the device directly (device-DAX
    /// style). `off` must be a multiple of [`MapSource::align`]; so must `len`
    /// on device DAX (on files it is rounded up to whole pages, within the
    /// device). Pages already bad are revoked in the new mapping; while the
    /// device has no holder, new errors revoke the pages in it and run its
    /// [failure callback](RawMapping::set_failure_callback).
    pub fn map_raw(&self, off: u64, len: u64) -> Result<RawMapping> {
        let size = self.len();
        check_range(off, len, size)?;
        let src = self.map_source();
        let page = rustix::param::page_size() as u64;
        let unaligned = |what: &str, v: u64, a: u64| {
            DeviceError::Unsupported(format!(
                "raw mapping of {}: the {what} {v:#x} is not a multiple of {a:#x}",
                self.path.display()
            ))
        };
        if len == 0 {
            return Err(DeviceError::Unsupported("raw mapping of zero bytes".into()));
        }
        if !off.is_multiple_of(src.align) {
            return Err(unaligned("offset", off, src.align));
        }
        if self.kind == DeviceKind::DevDax && !len.is_multiple_of(src.align) {
            return Err(unaligned("length", len, src.align));
        }
        let len = len.div_ceil(page).saturating_mul(page).min(size - off);
        let map = Mapping::shared(
            self.file.as_fd(),
            off,
            to_usize(len)?,
            self.map_sync,
            to_usize(src.align)?,
        )
        .map_err(errno_os(format!("mapping {} again", self.path.display())))?;
        let (raw, shared) = RawMapping::new(map, off)?;
        self.media.add_raw(&shared);
        Ok(raw)
    }

    /// The first byte of the mapping. Valid for [`Device::len`] bytes while
    /// the device lives. Never form `&`/`&mut` to it: other threads and other
    /// mappings may write the memory; copy with raw pointers.
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.as_ptr()
    }

    /// The fd and mapping parameters, for mapping device pages elsewhere.
    pub fn map_source(&self) -> MapSource {
        MapSource {
            fd: self.file.as_raw_fd(),
            offset: 0,
            len: self.map.len() as u64,
            map_sync: self.map_sync,
            align: if self.kind == DeviceKind::DevDax {
                self.align
            } else {
                rustix::param::page_size() as u64
            },
            kind: self.kind,
        }
    }

    /// What is mapped.
    pub fn kind(&self) -> DeviceKind {
        self.kind
    }

    /// The path the device was opened with.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True when stores through the mapping need no page-cache writeback to
    /// be durable (`MAP_SYNC` accepted, or device DAX).
    pub fn is_synchronous(&self) -> bool {
        self.map_sync || self.kind == DeviceKind::DevDax
    }

    fn record_error(&self, e: std::io::Error) {
        let mut slot = self.persist_error.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(e);
        }
    }
}

impl Medium for MmapDevice {
    fn set_access(&self, off: u64, len: u64, accessible: bool) -> bool {
        self.map.protect(off, len, accessible).is_ok()
    }
    fn write_through(&self, off: u64, data: &[u8]) -> Result<()> {
        self.map.write(off, data)
    }
    fn persist_range(&self, off: u64, len: u64) {
        self.persist(off, len);
    }
}

impl Device for MmapDevice {
    fn len(&self) -> u64 {
        self.map.len() as u64
    }

    fn read(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        self.media.check_read(off, buf.len() as u64)?;
        self.map
            .read(off, buf)
            .map_err(|e| self.media.access_error(self, e))
    }

    fn write(&self, off: u64, data: &[u8]) -> Result<()> {
        self.media.check_write(off, data.len() as u64)?;
        self.map
            .write(off, data)
            .map_err(|e| self.media.access_error(self, e))
    }

    fn fill(&self, off: u64, len: u64, byte: u8) -> Result<()> {
        self.media.check_write(off, len)?;
        self.map
            .fill(off, len, byte)
            .map_err(|e| self.media.access_error(self, e))
    }

    fn write_u64(&self, off: u64, value: u64) -> Result<()> {
        self.media.check_write(off, 8)?;
        self.map
            .write_u64(off, value)
            .map_err(|e| self.media.access_error(self, e))
    }

    fn read_u64(&self, off: u64) -> Result<u64> {
        self.media.check_read(off, 8)?;
        self.map
            .read_u64(off)
            .map_err(|e| self.media.access_error(self, e))
    }

    /// With cache-line flushes: flushes the lines of the range. With `msync`:
    /// writes the pages of the range back and waits (the range is durable
    /// when this returns). Ranges are clamped to the device.
    fn flush(&self, off: u64, len: u64) {
        match self.mode {
            PersistMode::CpuFlush(i) => self.map.flush_lines(i, off, len),
            PersistMode::Msync | PersistMode::Volatile => {
                if let Err(e) = self.map.msync(off, len) {
                    self.record_error(e.into());
                }
            }
        }
    }

    fn fence(&self) {
        match self.mode {
            PersistMode::CpuFlush(_) => pmem::store_fence(),
            PersistMode::Msync | PersistMode::Volatile => {
                std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst)
            }
        }
    }

    fn mode(&self) -> PersistMode {
        self.mode
    }

    fn describe(&self) -> String {
        let path = self.path.display();
        match self.kind {
            DeviceKind::DevDax => {
                format!(
                    "device DAX {path} (align {}, {})",
                    fmt_size(self.align),
                    self.mode
                )
            }
            DeviceKind::File if self.map_sync => {
                format!("DAX file {path} (MAP_SYNC, {})", self.mode)
            }
            DeviceKind::File => {
                let assumed =
                    if self.assume_persistent && matches!(self.mode, PersistMode::CpuFlush(_)) {
                        ", assumed persistent"
                    } else {
                        ""
                    };
                format!("image file {path} (MAP_SHARED, {}{assumed})", self.mode)
            }
        }
    }

    fn take_persist_error(&self) -> Result<()> {
        let taken = self
            .persist_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match taken {
            None => Ok(()),
            Some(source) => Err(DeviceError::Os {
                what: format!("writing back {}", self.path.display()),
                source,
            }),
        }
    }

    fn inject_error(&self, off: u64, len: u64) -> Result<()> {
        self.media
            .add(self, &[(off, len)], FailureFlags::BACKGROUND)
    }
    fn inject_latent_error(&self, off: u64, len: u64) -> Result<()> {
        self.media.add_latent(self, off, len)
    }

    fn import_bad_ranges(&self, ranges: &[(u64, u64)]) -> Result<()> {
        self.media.add(self, ranges, FailureFlags::BACKGROUND)
    }

    fn bad_ranges(&self) -> Vec<(u64, u64)> {
        self.media.bad_ranges()
    }

    fn clear_error(&self, off: u64, data: &[u8]) -> Result<()> {
        self.media.clear(self, off, data)
    }

    fn set_holder(&self, holder: Arc<dyn Holder>) -> Result<()> {
        self.media.set_holder(holder)
    }

    fn clear_holder(&self) -> Option<Arc<dyn Holder>> {
        self.media.clear_holder()
    }

    fn remove(&self) -> Result<()> {
        self.media.remove()
    }

    fn prefault(&self, off: u64, len: u64) {
        self.map.prefault(off, len);
    }

    fn view_source(&self) -> Option<MapSource> {
        Some(self.map_source())
    }
}

fn fmt_size(n: u64) -> String {
    if n >= 1 << 30 && n.is_multiple_of(1 << 30) {
        format!("{} GiB", n >> 30)
    } else if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} B")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A unique path in the temporary directory, removed on drop.
    pub(crate) struct TempPath(pub(crate) PathBuf);

    impl TempPath {
        pub(crate) fn new(name: &str) -> TempPath {
            static N: AtomicU32 = AtomicU32::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            TempPath(std::env::temp_dir().join(format!(
                "daxfs-device-test-{}-{n}-{name}",
                std::process::id()
            )))
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const MIB: u64 = 1 << 20;

    #[test]
    fn create_write_persist_reopen() {
        let p = TempPath::new("reopen");
        {
            let dev = MmapDevice::create(&p.0, 4 * MIB, OpenOptions::new()).unwrap();
            assert_eq!(dev.len(), 4 * MIB);
            assert_eq!(dev.kind(), DeviceKind::File);
            dev.write(4090, b"hello, persistent world").unwrap();
            dev.fill(MIB, 100, 0xab).unwrap();
            dev.persist(4090, 23);
            dev.persist(MIB, 100);
            dev.take_persist_error().unwrap();
            let mut buf = [0u8; 23];
            dev.read(4090, &mut buf).unwrap();
            assert_eq!(&buf, b"hello, persistent world");
        }
        let on_disk = std::fs::read(&p.0).unwrap();
        assert_eq!(on_disk.len() as u64, 4 * MIB);
        assert_eq!(&on_disk[4090..4113], b"hello, persistent world");
        assert!(
            on_disk[MIB as usize..MIB as usize + 100]
                .iter()
                .all(|&b| b == 0xab)
        );
        assert!(on_disk[..4090].iter().all(|&b| b == 0));

        let dev = MmapDevice::open(&p.0, OpenOptions::new()).unwrap();
        let mut buf = [0u8; 23];
        dev.read(4090, &mut buf).unwrap();
        assert_eq!(&buf, b"hello, persistent world");
        let mut b = [0u8; 1];
        dev.read(MIB + 99, &mut b).unwrap();
        assert_eq!(b[0], 0xab);
        dev.read(MIB + 100, &mut b).unwrap();
        assert_eq!(b[0], 0);
    }

    /// Resident (page-table mapped) KiB of the mapping at `addr`, from
    /// /proc/self/smaps.
    fn rss_kib(addr: *mut u8) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let start = format!("{:x}-", addr as usize);
        let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&start));
        assert!(lines.next().is_some(), "mapping {start} not in smaps");
        let rss = lines.find(|l| l.starts_with("Rss:")).unwrap();
        rss.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    #[test]
    fn populate_maps_every_page_at_open() {
        let p = TempPath::new("populate");
        let dev = MmapDevice::create(&p.0, 4 * MIB, OpenOptions::new()).unwrap();
        // A new image is all holes: nothing is mapped until touched.
        assert!(rss_kib(dev.as_ptr()) < 4 * MIB / 1024 / 2);
        drop(dev);
        let dev = MmapDevice::open(&p.0, OpenOptions::new().populate(true)).unwrap();
        assert_eq!(rss_kib(dev.as_ptr()), 4 * MIB / 1024);
        // The bytes are unchanged, and the device works as before.
        let mut buf = [1u8; 64];
        dev.read(MIB, &mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == 0));
        dev.write(MIB, b"populated").unwrap();
        dev.read(MIB, &mut buf[..9]).unwrap();
        assert_eq!(&buf[..9], b"populated");
    }

    #[test]
    fn map_sync_probe_falls_back_to_msync() {
        let p = TempPath::new("msync");
        let dev = MmapDevice::create(&p.0, 64 * 1024, OpenOptions::new()).unwrap();
        if dev.is_synchronous() {
            // The temporary directory is on a DAX file system.
            assert!(matches!(dev.mode(), PersistMode::CpuFlush(_)));
            assert!(dev.describe().starts_with("DAX file"));
        } else {
            assert_eq!(dev.mode(), PersistMode::Msync);
            assert!(!dev.map_source().map_sync);
            let d = dev.describe();
            assert!(d.starts_with("image file "), "{d}");
            assert!(d.contains(&p.0.display().to_string()), "{d}");
            assert!(d.contains("(MAP_SHARED, msync)"), "{d}");
            drop(dev);
            // Requiring MAP_SYNC then fails cleanly.
            let err = MmapDevice::open(&p.0, OpenOptions::new().map_sync(MapSyncPolicy::Require))
                .unwrap_err();
            assert!(matches!(err, DeviceError::Unsupported(_)), "{err}");
        }
    }

    #[test]
    fn map_sync_refused_on_tmpfs() {
        // tmpfs is not DAX: MAP_SYNC is refused and the device falls back.
        let shm = Path::new("/dev/shm");
        if !shm.is_dir() {
            return;
        }
        let p = TempPath(shm.join(format!("daxfs-device-test-{}-tmpfs", std::process::id())));
        let Ok(dev) = MmapDevice::create(&p.0, 8192, OpenOptions::new()) else {
            return;
        };
        assert!(!dev.is_synchronous());
        assert_eq!(dev.mode(), PersistMode::Msync);
        dev.write(0, b"x").unwrap();
        dev.persist(0, 1);
        dev.take_persist_error().unwrap();
    }

    #[test]
    fn never_map_sync_uses_msync() {
        let p = TempPath::new("never");
        let dev = MmapDevice::create(
            &p.0,
            8192,
            OpenOptions::new().map_sync(MapSyncPolicy::Never),
        )
        .unwrap();
        assert!(!dev.is_synchronous());
        assert_eq!(dev.mode(), PersistMode::Msync);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn assume_persistent_flushes_with_cpu_instructions() {
        let p = TempPath::new("assume");
        let dev =
            MmapDevice::create(&p.0, 3 * MIB, OpenOptions::new().assume_persistent(true)).unwrap();
        let best = crate::detect_flush_instr().expect("x86_64 always has CLFLUSH");
        assert_eq!(dev.mode(), PersistMode::CpuFlush(best));
        let d = dev.describe();
        assert!(
            d.contains("cpu-flush") && d.contains("assumed persistent"),
            "{d}"
        );
        // Unaligned ranges, ranges spanning lines and pages, clamped ranges.
        dev.write(63, &[7; 130]).unwrap();
        dev.persist(63, 130);
        dev.persist(0, 3 * MIB);
        dev.persist(3 * MIB - 1, 1000);
        dev.persist(10 * MIB, 10);
        dev.persist(5, 0);
        dev.take_persist_error().unwrap();
        let mut buf = [0u8; 130];
        dev.read(63, &mut buf).unwrap();
        assert_eq!(buf, [7; 130]);
        drop(dev);

        // Every instruction this CPU has can be forced and works.
        for instr in [
            FlushInstr::Clwb,
            FlushInstr::Clflushopt,
            FlushInstr::Clflush,
        ] {
            let opts = OpenOptions::new()
                .assume_persistent(true)
                .flush_instr(Some(instr));
            if !crate::flush_instr_supported(instr) {
                let err = MmapDevice::open(&p.0, opts).unwrap_err();
                assert!(matches!(err, DeviceError::Unsupported(_)));
                continue;
            }
            let dev = MmapDevice::open(&p.0, opts)
                .unwrap_or_else(|e| panic!("opening with {instr:?}: {e}"));
            assert_eq!(dev.mode(), PersistMode::CpuFlush(instr));
            dev.write(4096 * 3 + 17, &[instr as u8 + 1; 300]).unwrap();
            dev.persist(4096 * 3 + 17, 300);
            let mut buf = [0u8; 300];
            dev.read(4096 * 3 + 17, &mut buf).unwrap();
            assert_eq!(buf, [instr as u8 + 1; 300]);
        }
        // What was written through the flushed mapping reached the file.
        let on_disk = std::fs::read(&p.0).unwrap();
        assert_eq!(on_disk[63..193], [7; 130]);
    }

    #[test]
    fn second_opener_is_refused() {
        let p = TempPath::new("lock");
        let dev = MmapDevice::create(&p.0, 8192, OpenOptions::new()).unwrap();
        let err = MmapDevice::open(&p.0, OpenOptions::new()).unwrap_err();
        match err {
            DeviceError::Locked(ref s) => assert_eq!(s, &p.0.display().to_string()),
            ref e => panic!("expected Locked, got {e}"),
        }
        assert!(err.to_string().contains("already open"));
        drop(dev);
        let dev = MmapDevice::open(&p.0, OpenOptions::new()).unwrap();
        assert!(matches!(
            MmapDevice::open(&p.0, OpenOptions::new()),
            Err(DeviceError::Locked(_))
        ));
        drop(dev);
    }

    #[test]
    fn create_refuses_existing_file() {
        let p = TempPath::new("exists");
        create_image_file(&p.0, 8192).unwrap();
        assert_eq!(std::fs::metadata(&p.0).unwrap().len(), 8192);
        match create_image_file(&p.0, 8192) {
            Err(DeviceError::Os { source, .. }) => {
                assert_eq!(source.kind(), std::io::ErrorKind::AlreadyExists)
            }
            other => panic!("expected AlreadyExists, got {other:?}"),
        }
        assert!(MmapDevice::create(&p.0, 8192, OpenOptions::new()).is_err());
        // The existing file was left alone.
        assert_eq!(std::fs::metadata(&p.0).unwrap().len(), 8192);
    }

    #[test]
    fn bad_sizes_are_rejected() {
        for size in [0, 1, 4095, 4097, 3 * 4096 + 8] {
            let p = TempPath::new("badsize");
            let err = create_image_file(&p.0, size).unwrap_err();
            assert!(
                matches!(err, DeviceError::InvalidSize { size: s, .. } if s == size),
                "{err}"
            );
            let err = MmapDevice::create(&p.0, size, OpenOptions::new()).unwrap_err();
            assert!(matches!(err, DeviceError::InvalidSize { .. }), "{err}");
            assert!(!p.0.exists(), "a refused create must not leave a file");
        }
        // Opening an existing file of an unusable size is refused too.
        let p = TempPath::new("oddfile");
        std::fs::write(&p.0, vec![0u8; 5000]).unwrap();
        let err = MmapDevice::open(&p.0, OpenOptions::new()).unwrap_err();
        assert!(
            matches!(err, DeviceError::InvalidSize { size: 5000, .. }),
            "{err}"
        );
        std::fs::write(&p.0, b"").unwrap();
        let err = MmapDevice::open(&p.0, OpenOptions::new()).unwrap_err();
        assert!(
            matches!(err, DeviceError::InvalidSize { size: 0, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("zero"));
    }

    #[test]
    fn out_of_range_accesses_fail() {
        let p = TempPath::new("range");
        let dev = MmapDevice::create(&p.0, 8192, OpenOptions::new()).unwrap();
        let mut buf = [0u8; 16];
        assert!(matches!(
            dev.read(8190, &mut buf),
            Err(DeviceError::OutOfRange { .. })
        ));
        assert!(matches!(
            dev.read(u64::MAX - 3, &mut buf),
            Err(DeviceError::OutOfRange { .. })
        ));
        assert!(matches!(
            dev.write(8192, &[1]),
            Err(DeviceError::OutOfRange { .. })
        ));
        assert!(matches!(
            dev.fill(1, 8192, 0),
            Err(DeviceError::OutOfRange { .. })
        ));
        assert!(matches!(
            dev.fill(u64::MAX, 2, 0),
            Err(DeviceError::OutOfRange { .. })
        ));
        // Edge accesses are fine, including empty ones at the end.
        dev.read(8176, &mut buf).unwrap();
        dev.write(8192, &[]).unwrap();
        dev.fill(8192, 0, 1).unwrap();
        // Out-of-range flushes are clamped, not faults.
        dev.persist(8000, u64::MAX);
        dev.persist(u64::MAX, u64::MAX);
        dev.take_persist_error().unwrap();
    }

    #[test]
    fn map_source_and_alignment() {
        let p = TempPath::new("source");
        let dev = MmapDevice::create(&p.0, 4 * MIB, OpenOptions::new()).unwrap();
        let src = dev.map_source();
        assert_eq!(src.offset, 0);
        assert_eq!(src.len, 4 * MIB);
        assert_eq!(src.kind, DeviceKind::File);
        assert_eq!(src.align, rustix::param::page_size() as u64);
        assert_eq!(src.fd, dev.file.as_raw_fd());
        // Large files are mapped 2 MiB aligned (huge pages on DAX).
        assert_eq!(dev.as_ptr() as usize % (2 << 20), 0);
        drop(dev);
        // Small files are mapped page aligned.
        let p = TempPath::new("small");
        let dev = MmapDevice::create(&p.0, 8192, OpenOptions::new()).unwrap();
        assert_eq!(dev.as_ptr() as usize % rustix::param::page_size(), 0);
    }

    #[test]
    fn other_file_types_are_refused() {
        // /dev/null: a character device, but not device DAX.
        if let Ok(f) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
        {
            let path = Path::new("/dev/null");
            let err = MmapDevice::from_locked(f, path, OpenOptions::new(), Path::new("/sys"))
                .unwrap_err();
            assert!(matches!(err, DeviceError::Unsupported(_)), "{err}");
            assert!(err.to_string().contains("not a device-DAX"), "{err}");
        }
        // A directory cannot even be opened for writing.
        assert!(MmapDevice::open(std::env::temp_dir(), OpenOptions::new()).is_err());
        // A missing file.
        let p = TempPath::new("missing");
        assert!(matches!(
            MmapDevice::open(&p.0, OpenOptions::new()),
            Err(DeviceError::Os { .. })
        ));
    }

    /// Builds `root/dev/char/MAJ:MIN` like sysfs for a device-DAX device.
    fn fake_dax(root: &Path, dev: &str, subsystem: &str, size: &str, align: Option<&str>) {
        let dir = root.join("dev/char").join(dev);
        std::fs::create_dir_all(dir.join("device")).unwrap();
        std::os::unix::fs::symlink(
            format!("../../../../class/{subsystem}"),
            dir.join("subsystem"),
        )
        .unwrap();
        std::fs::write(dir.join("size"), size).unwrap();
        if let Some(a) = align {
            std::fs::write(dir.join("device/align"), a).unwrap();
        }
    }

    #[test]
    fn devdax_sysfs_parsing() {
        let root = TempPath::new("sysfs");
        let r = &root.0;
        fake_dax(r, "252:0", "dax", "17179869184\n", Some("1073741824\n"));
        fake_dax(r, "252:1", "dax", "4194304\n", None);
        fake_dax(r, "252:2", "mem", "4194304\n", None);
        fake_dax(r, "252:3", "dax", "banana\n", None);
        fake_dax(r, "252:4", "dax", "3145728\n", Some("2097152\n"));
        fake_dax(r, "252:5", "dax", "4194304\n", Some("12345\n"));
        fake_dax(r, "252:6", "dax", "0\n", None);
        fake_dax(r, "252:7", "dax", "0x400000\n", Some("4096"));
        fake_dax(r, "252:8", "dax", "4194304\n", Some("2097152"));
        std::fs::write(r.join("dev/char/252:8/align"), "4096\n").unwrap();

        assert_eq!(
            dax_geometry(r, 252, 0).unwrap(),
            DaxGeometry {
                size: 16 << 30,
                align: 1 << 30
            }
        );
        // No align attribute: 2 MiB.
        assert_eq!(
            dax_geometry(r, 252, 1).unwrap(),
            DaxGeometry {
                size: 4 << 20,
                align: 2 << 20
            }
        );
        // Not the dax subsystem.
        let e = dax_geometry(r, 252, 2).unwrap_err();
        assert!(
            matches!(e, DeviceError::Unsupported(_)) && e.to_string().contains("252:2"),
            "{e}"
        );
        // Garbage size.
        assert!(matches!(
            dax_geometry(r, 252, 3),
            Err(DeviceError::Unsupported(_))
        ));
        // Size not a multiple of the alignment.
        assert!(matches!(
            dax_geometry(r, 252, 4),
            Err(DeviceError::InvalidSize { .. })
        ));
        // Alignment not a power of two.
        assert!(matches!(
            dax_geometry(r, 252, 5),
            Err(DeviceError::Unsupported(_))
        ));
        // Zero size.
        assert!(matches!(
            dax_geometry(r, 252, 6),
            Err(DeviceError::InvalidSize { size: 0, .. })
        ));
        // Hexadecimal values are accepted.
        assert_eq!(
            dax_geometry(r, 252, 7).unwrap(),
            DaxGeometry {
                size: 4 << 20,
                align: 4096
            }
        );
        // The device's own alignment wins over its region's.
        assert_eq!(
            dax_geometry(r, 252, 8).unwrap(),
            DaxGeometry {
                size: 4 << 20,
                align: 4096
            }
        );
        // No such device at all.
        assert!(matches!(
            dax_geometry(r, 9, 9),
            Err(DeviceError::Unsupported(_))
        ));
    }

    #[test]
    fn fmt_sizes() {
        assert_eq!(fmt_size(2 << 20), "2 MiB");
        assert_eq!(fmt_size(1 << 30), "1 GiB");
        assert_eq!(fmt_size(4096), "4 KiB");
        assert_eq!(fmt_size(100), "100 B");
    }
}
