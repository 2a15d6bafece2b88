//! The floor of a user-space store fault on this machine, measured on the
//! device file the views bench uses: what any file system that resolves
//! faults in a SIGSEGV handler (as daxfs's views do) cannot go below.
//!
//! - **signal round trip**: `tgkill` of SIGUSR2 to the calling thread with an
//!   empty handler (entry, delivery, `sigreturn`);
//! - **fault + mprotect**: a store to a read-only page of the device file,
//!   whose handler makes it writable (`mprotect`) and retries: the least a
//!   fault that changes a mapping costs;
//! - **copy-on-write floor**: a store to a read-only page of the device
//!   file, whose handler maps another device page over it (`mmap`
//!   `MAP_FIXED`, read-write, shared), copies the 4 KiB page into it through
//!   the device's own mapping, and retries; the retried store takes the
//!   kernel's first-touch fault of the new page. That is the copy-on-write
//!   fault of daxfs with no allocation, no metadata and no hand-off.
//!
//! The two fault figures go through the device layer's process-wide handler
//! (a range handler of `daxfs_device::fault`), like daxfs's own faults.
use super::stats::Samples;
use anyhow::{Context, Result, bail};
use daxfs_device::MapSource;
use daxfs_device::fault::{FaultAction, register_range_handler};
use std::ffi::c_int;
use std::time::Instant;

const PAGE: usize = 4096;

/// The three floor figures.
pub struct Floor {
    pub signal: Samples,
    pub protect: Samples,
    pub cow: Samples,
}

extern "C" fn empty_handler(_sig: c_int) {}

/// Times `n` signals sent by the thread to itself, each handled by an empty
/// handler.
fn signal_round_trips(n: usize) -> Result<Samples> {
    // SAFETY: a zeroed sigaction is valid (empty mask, no flags); the handler
    // is a plain `extern "C" fn(c_int)` that does nothing. The old action is
    // restored below.
    let old = unsafe {
        let mut a: libc::sigaction = std::mem::zeroed();
        a.sa_sigaction = empty_handler as *const () as usize;
        libc::sigemptyset(&mut a.sa_mask);
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGUSR2, &a, &mut old) != 0 {
            bail!("sigaction: {}", std::io::Error::last_os_error());
        }
        old
    };
    // SAFETY: plain system calls without memory arguments.
    let (pid, tid) = unsafe { (libc::getpid(), libc::syscall(libc::SYS_gettid)) };
    let mut ns = Vec::with_capacity(n);
    for i in 0..n + n / 8 {
        let t = Instant::now();
        // SAFETY: signals this thread; the handler installed above runs.
        unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, libc::SIGUSR2) };
        let e = t.elapsed().as_nanos() as u64;
        if i >= n / 8 {
            ns.push(e);
        }
    }
    // SAFETY: restores the action saved above.
    unsafe { libc::sigaction(libc::SIGUSR2, &old, std::ptr::null_mut()) };
    Ok(Samples::new(ns))
}

/// A shared mapping of device pages, unmapped when dropped.
struct Region {
    base: *mut u8,
    len: usize,
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: our own mapping; nothing refers to it any more (its range
        // handler is unregistered before the region is dropped).
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

/// Maps the device pages at offsets `at` side by side, read-only, and loads
/// each (so only the store fault is timed).
fn map_read_only(src: &MapSource, at: &[u64]) -> Result<Region> {
    let len = at.len() * PAGE;
    // SAFETY: a fresh reservation at an address the kernel picks.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        bail!("reserving addresses: {}", std::io::Error::last_os_error());
    }
    let r = Region {
        base: p.cast(),
        len,
    };
    for (i, &off) in at.iter().enumerate() {
        // SAFETY: replaces a page of our own reservation with a shared
        // mapping of the device page.
        let q = unsafe {
            libc::mmap(
                r.base.add(i * PAGE).cast(),
                PAGE,
                libc::PROT_READ,
                libc::MAP_SHARED | libc::MAP_FIXED,
                src.fd,
                (src.offset + off) as libc::off_t,
            )
        };
        if q == libc::MAP_FAILED {
            bail!("mmap of the device: {}", std::io::Error::last_os_error());
        }
        // SAFETY: inside the readable mapping just made.
        std::hint::black_box(unsafe { std::ptr::read_volatile(r.base.add(i * PAGE)) });
    }
    Ok(r)
}

/// Measures the floor with one fault per page of `from`. `from` holds the
/// device offsets of the copy-on-write sources (and of the mprotect pages),
/// `to` those of the copies (as many); `dev` is the device's own mapping,
/// for the copy. Both must be pages nobody else uses during the call (a file
/// the bench owns); `to` is overwritten with `from`.
pub fn measure(
    src: &MapSource,
    dev: *mut u8,
    from: Vec<u64>,
    to: Vec<u64>,
    time_stores: fn(*mut u8, usize, u64) -> Samples,
) -> Result<Floor> {
    let n = from.len();
    if n == 0 || to.len() != n {
        bail!("the floor needs as many copies as sources");
    }
    let signal = signal_round_trips(n)?;

    let protect = {
        let r = map_read_only(src, &from).context("fault + mprotect")?;
        let base = r.base as usize;
        let reg = register_range_handler(base, r.len, move |f| {
            let page = f.addr & !(PAGE - 1);
            // SAFETY: the page lies in the region, which stays mapped while
            // registered; mprotect is async-signal-safe.
            let ok = unsafe {
                libc::mprotect(
                    page as *mut libc::c_void,
                    PAGE,
                    libc::PROT_READ | libc::PROT_WRITE,
                )
            } == 0;
            if ok {
                FaultAction::Retry
            } else {
                FaultAction::NotMine
            }
        })?;
        let s = time_stores(r.base, n, PAGE as u64);
        drop(reg);
        drop(r);
        s
    };

    let cow = {
        let r = map_read_only(src, &from).context("copy-on-write floor")?;
        let base = r.base as usize;
        let (fd, off, dev) = (src.fd, src.offset, dev as usize);
        // Read-only in the handler (no allocation there).
        let (from, to) = (from.clone(), to);
        let reg = register_range_handler(base, r.len, move |f| {
            let page = f.addr & !(PAGE - 1);
            let i = (page - base) / PAGE;
            let (Some(&a), Some(&b)) = (from.get(i), to.get(i)) else {
                return FaultAction::NotMine;
            };
            // SAFETY: maps the device page of the copy over the page of the
            // region (ours, registered, so nothing else maps there); mmap
            // with MAP_FIXED is async-signal-safe.
            let p = unsafe {
                libc::mmap(
                    page as *mut libc::c_void,
                    PAGE,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_FIXED,
                    fd,
                    (off + b) as libc::off_t,
                )
            };
            if p == libc::MAP_FAILED {
                return FaultAction::NotMine;
            }
            // SAFETY: both pages lie in the device mapping (the caller's
            // ranges) and do not overlap; raw copy, no references.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    (dev + a as usize) as *const u8,
                    (dev + b as usize) as *mut u8,
                    PAGE,
                )
            };
            FaultAction::Retry
        })?;
        let s = time_stores(r.base, n, PAGE as u64);
        drop(reg);
        drop(r);
        s
    };
    Ok(Floor {
        signal,
        protect,
        cow,
    })
}
