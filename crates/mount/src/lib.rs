//! daxfs through FUSE: a `fuser::Filesystem` over a mounted [`daxfs::Fs`],
//! the daemon behind `daxfs mount`.
//!
//! Every FUSE request names inodes by number and is served by daxfs's
//! inode-number API (`crates/fs/src/ops.rs`): daxfs inode numbers are the
//! FUSE node ids (the root is 1 in both). FUSE file handles index a table of
//! open [`daxfs::File`]s. Lookup counts are kept per inode, so the
//! [`Invalidator`] knows which inodes the kernel caches.
//!
//! [`spawn`] mounts (mount(2) as root, no libfuse), answers the kernel's
//! INIT and runs the session on its own threads; it returns once the mount
//! is ready. [`Mounted`] unmounts, or waits for an unmount from outside.
mod counted;
mod daemon;
mod perm;

pub use counted::{KINDS, KindStats, RequestStats};

use daxfs::Fs;
use fuser::{Config, MountOption, Notifier, Session, SessionACL};
use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

/// How to mount.
#[derive(Clone, Debug)]
pub struct MountConfig {
    /// Refuse every change (EROFS), and mount read-only in the kernel.
    pub read_only: bool,
    /// Let users other than the mounter reach the mount (`allow_other`).
    pub allow_other: bool,
    /// Let the kernel check permissions from the mode bits
    /// (`default_permissions`); otherwise daxfs checks them against each
    /// caller's uid, gid and groups.
    pub default_permissions: bool,
    /// Threads serving requests (at least 1).
    pub threads: usize,
    /// How long the kernel may cache attributes.
    pub attr_ttl: Duration,
    /// How long the kernel may cache name lookups. Zero by default: the
    /// kernel walks a cached name without asking daxfs, so without
    /// `default_permissions` a cached name would skip the search
    /// permission check of its directory. With `default_permissions`
    /// (the kernel checks) [`ENTRY_TTL_KERNEL_CHECKS`] is the usual choice.
    pub entry_ttl: Duration,
    /// The source shown in /proc/mounts (the image's path).
    pub fsname: String,
}

/// The name-cache time `daxfs mount` gives with `default_permissions`.
pub const ENTRY_TTL_KERNEL_CHECKS: Duration = Duration::from_secs(1);

impl Default for MountConfig {
    fn default() -> Self {
        MountConfig {
            read_only: false,
            allow_other: false,
            default_permissions: false,
            threads: 2,
            attr_ttl: Duration::from_secs(1),
            entry_ttl: Duration::ZERO,
            fsname: "daxfs".into(),
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Drops the kernel's cached pages and attributes of inodes daxfs changed
/// behind it (dedupe, a media error, an admin command). `Clone + Send +
/// Sync`; calls after the unmount do nothing.
#[derive(Clone)]
pub struct Invalidator {
    notifier: Arc<OnceLock<Notifier>>,
    /// Lookup counts: the inodes the kernel knows.
    known: Arc<Mutex<HashMap<u64, u64>>>,
}

impl std::fmt::Debug for Invalidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invalidator").finish_non_exhaustive()
    }
}

impl Invalidator {
    /// Drops the cached pages and attributes of inode `ino`. An inode the
    /// kernel does not cache is no error. Must not be called from inside a
    /// FUSE request of the same mount (the kernel may wait on that request).
    pub fn inode(&self, ino: u64) -> io::Result<()> {
        let Some(n) = self.notifier.get() else {
            return Ok(());
        };
        match n.inval_inode(fuser::INodeNo(ino), 0, 0) {
            Ok(()) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOENT) | Some(libc::ENOTCONN) | Some(libc::ENODEV)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Drops the cached pages and attributes of every inode the kernel knows.
    pub fn all(&self) -> io::Result<()> {
        let inos: Vec<u64> = lock(&self.known).keys().copied().collect();
        let mut first = Ok(());
        for ino in inos.into_iter().chain(std::iter::once(1)) {
            if let Err(e) = self.inode(ino)
                && first.is_ok()
            {
                first = Err(e);
            }
        }
        first
    }

    /// The inodes the kernel holds now (lookup count above zero), with
    /// their counts.
    pub fn lookup_counts(&self) -> HashMap<u64, u64> {
        lock(&self.known).clone()
    }
}

type Done = Arc<(Mutex<Option<io::Result<()>>>, Condvar)>;

/// A mounted daxfs. Dropping it unmounts (as [`Mounted::unmount`], without
/// the result).
pub struct Mounted {
    thread: Option<std::thread::JoinHandle<()>>,
    done: Done,
    invalidator: Invalidator,
    mountpoint: std::path::PathBuf,
    stats: Arc<RequestStats>,
}

impl std::fmt::Debug for Mounted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mounted")
            .field("mountpoint", &self.mountpoint)
            .finish_non_exhaustive()
    }
}

/// Refuses a mountpoint that is not an empty directory.
pub fn check_mountpoint(p: &Path) -> io::Result<()> {
    let meta = std::fs::metadata(p)
        .map_err(|e| io::Error::new(e.kind(), format!("mountpoint {}: {e}", p.display())))?;
    if !meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotADirectory,
            format!("mountpoint {} is not a directory", p.display()),
        ));
    }
    let mut entries = std::fs::read_dir(p)
        .map_err(|e| io::Error::new(e.kind(), format!("mountpoint {}: {e}", p.display())))?;
    if entries.next().is_some() {
        return Err(io::Error::new(
            io::ErrorKind::DirectoryNotEmpty,
            format!("mountpoint {} is not empty", p.display()),
        ));
    }
    Ok(())
}

/// Mounts `fs` on `mountpoint` through FUSE and serves it on
/// `cfg.threads` threads. The mount is ready (the kernel's INIT answered)
/// when this returns. `mountpoint` must be an empty directory.
pub fn spawn(fs: Arc<Fs>, mountpoint: &Path, cfg: &MountConfig) -> io::Result<Mounted> {
    check_mountpoint(mountpoint)?;
    if !Path::new("/dev/fuse").exists() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "/dev/fuse is missing (load the fuse module: modprobe fuse)",
        ));
    }
    let known = Arc::new(Mutex::new(HashMap::new()));
    let notifier = Arc::new(OnceLock::new());
    let invalidator = Invalidator {
        notifier: notifier.clone(),
        known: known.clone(),
    };
    let daemon = daemon::Daemon::new(fs, cfg.clone(), known, invalidator.clone());
    let mut opts = vec![
        MountOption::FSName(cfg.fsname.clone()),
        MountOption::Subtype("daxfs".into()),
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    if cfg.read_only {
        opts.push(MountOption::RO);
    }
    if cfg.default_permissions {
        opts.push(MountOption::DefaultPermissions);
    }
    let mut config = Config::default();
    config.mount_options = opts;
    config.acl = if cfg.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(cfg.threads.max(1));
    config.clone_fd = cfg.threads > 1;
    let stats = Arc::new(RequestStats::default());
    let counted = counted::Counted {
        inner: daemon,
        stats: stats.clone(),
    };
    let session = Session::new(counted, mountpoint, &config)?;
    let _ = notifier.set(session.notifier());
    let done: Done = Arc::new((Mutex::new(None), Condvar::new()));
    let d2 = done.clone();
    let thread = std::thread::Builder::new()
        .name("daxfs-fuse".into())
        .spawn(move || {
            let r = session.run();
            *lock(&d2.0) = Some(r);
            d2.1.notify_all();
        })?;
    Ok(Mounted {
        thread: Some(thread),
        done,
        invalidator,
        mountpoint: mountpoint.to_path_buf(),
        stats,
    })
}

impl Mounted {
    /// Unmounts and waits for the session to end; every open daxfs file of
    /// the mount is closed when this returns.
    pub fn unmount(mut self) -> io::Result<()> {
        self.unmount_inner()
    }

    fn unmount_inner(&mut self) -> io::Result<()> {
        let Some(t) = self.thread.take() else {
            return Ok(());
        };
        let r = self.stop();
        if let Err(e) = &r {
            // Still mounted (busy): keep the session, so a later unmount
            // or drop can try again.
            if lock(&self.done.0).is_none() {
                self.thread = Some(t);
                return Err(io::Error::new(
                    e.kind(),
                    format!("unmounting {}: {e}", self.mountpoint.display()),
                ));
            }
        }
        let _ = t.join();
        match lock(&self.done.0).take() {
            Some(Err(e)) => Err(e),
            _ => r,
        }
    }

    /// Asks for the unmount from any thread (as `umount` would); the
    /// session then ends and [`Mounted::wait`] returns. EBUSY while files
    /// of the mount are open.
    pub fn stop(&self) -> io::Result<()> {
        if self.ended() {
            return Ok(());
        }
        match nix::mount::umount2(&self.mountpoint, nix::mount::MntFlags::empty()) {
            Ok(()) => Ok(()),
            // Already gone (unmounted from outside meanwhile).
            Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) if self.ended_soon() => {
                Ok(())
            }
            Err(e) => Err(io::Error::from(e)),
        }
    }

    /// Detaches the mount (`umount -l`): it leaves the namespace now, and
    /// the session ends when the last open file of it is closed.
    pub fn detach(&self) -> io::Result<()> {
        if self.ended() {
            return Ok(());
        }
        nix::mount::umount2(&self.mountpoint, nix::mount::MntFlags::MNT_DETACH)
            .map_err(io::Error::from)
    }

    /// Returns when the session has ended: unmounted from outside
    /// (`umount`, `fusermount -u`) or by another thread's `unmount`.
    pub fn wait(&self) {
        let mut g = lock(&self.done.0);
        while g.is_none() {
            g = self.done.1.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Whether the session ends within a second.
    fn ended_soon(&self) -> bool {
        let g = lock(&self.done.0);
        let (g, _) = self
            .done
            .1
            .wait_timeout_while(g, Duration::from_secs(1), |d| d.is_none())
            .unwrap_or_else(|e| e.into_inner());
        g.is_some()
    }

    /// Whether the session has ended.
    pub fn ended(&self) -> bool {
        lock(&self.done.0).is_some()
    }

    /// What drops the kernel's caches of inodes daxfs changed.
    pub fn invalidator(&self) -> Invalidator {
        self.invalidator.clone()
    }

    /// The requests served so far, by kind, with the daemon's time in
    /// them.
    pub fn request_stats(&self) -> Arc<RequestStats> {
        self.stats.clone()
    }

    /// Where it is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.unmount_inner().is_err() {
            // Busy: detach it, so the session ends with the last user.
            let _ = self.detach();
            // The session ends when its last user goes; do not wait.
            self.thread.take();
        }
    }
}
