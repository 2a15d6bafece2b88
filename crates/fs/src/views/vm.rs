//! Address-space operations of views: reserving a range, putting device
//! pages, the zero page or nothing into it, and copying through it.
//!
//! # Invariants
//!
//! - A [`Reservation`] owns `[base, base + len)`: the range was mapped
//!   inaccessible by [`Reservation::new`], is only ever replaced in place
//!   (`MAP_FIXED` inside it, `mprotect` of parts of it) and is unmapped once,
//!   by [`Reservation::release`].
//! - A child process gets none of a view's pages (it could not resolve
//!   their faults, and must not store into the file behind daxfs's back):
//!   the reservation is `MADV_DONTFORK` when made, the view's fault
//!   registration maps the whole range inaccessible in a forked child
//!   (`RangeRegistration::keep_out_of_children`), and before that
//!   registration ends the whole range is made `MADV_DONTFORK` again
//!   ([`Reservation::keep_from_children`]), until it is unmapped. Mappings
//!   made inside the range are not advised one by one: that was a system
//!   call per copy-on-write fault.
//! - No Rust reference to view memory is ever formed: applications and
//!   other mappings of the same device pages write it at any time. Bytes move
//!   through relaxed atomic loads and stores ([`copy_out`], [`copy_in`]).
use std::ffi::c_void;
use std::io;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

/// `MAP_SYNC` (the same value on every Linux architecture that has it).
const MAP_SYNC: i32 = 0x080000;

/// What a page run is made accessible as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Prot {
    None,
    Read,
    ReadWrite,
}

impl Prot {
    fn bits(self) -> i32 {
        match self {
            Prot::None => libc::PROT_NONE,
            Prot::Read => libc::PROT_READ,
            Prot::ReadWrite => libc::PROT_READ | libc::PROT_WRITE,
        }
    }
}

/// A reserved range of virtual addresses, inaccessible until parts of it are
/// mapped.
#[derive(Debug)]
pub(crate) struct Reservation {
    base: usize,
    len: usize,
}

impl Reservation {
    /// Reserves `len` bytes (a multiple of the page size) at an address that
    /// is `phase` more than a multiple of `align` (a power of two), so that a
    /// file offset and its address agree modulo `align` (huge-page mappings).
    pub(crate) fn new(len: usize, align: usize, phase: usize) -> io::Result<Reservation> {
        let total = len
            .checked_add(align)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
        // SAFETY: a null hint: the kernel picks unused addresses, so nothing
        // is replaced; the whole region is ours until trimmed below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                total,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: advice on the region just mapped, which is ours.
        unsafe { libc::madvise(p, total, libc::MADV_DONTFORK) };
        let start = p as usize;
        let base = start + ((phase % align).wrapping_sub(start % align) & (align - 1));
        let head = base - start;
        let tail = total - head - len;
        // SAFETY: the head and tail are unused parts of the region mapped
        // above, which nothing references.
        unsafe {
            if head > 0 {
                libc::munmap(p, head);
            }
            if tail > 0 {
                libc::munmap((base + len) as *mut c_void, tail);
            }
        }
        Ok(Reservation { base, len })
    }

    pub(crate) fn base(&self) -> usize {
        self.base
    }

    /// Unmaps the range (once; later calls do nothing).
    pub(crate) fn release(&mut self) {
        if self.len == 0 {
            return;
        }
        // SAFETY: the range is ours (see the module invariants) and nothing
        // references it; after this the reservation is empty.
        unsafe { libc::munmap(self.base as *mut c_void, self.len) };
        self.len = 0;
    }

    fn check(&self, off: usize, len: usize) -> io::Result<*mut c_void> {
        if self.len == 0 || off.checked_add(len).is_none_or(|e| e > self.len) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        Ok((self.base + off) as *mut c_void)
    }

    /// Maps `len` bytes of `fd` at file offset `file_off` shared over the
    /// reservation's bytes `[off, off + len)`.
    pub(crate) fn map_file(
        &self,
        off: usize,
        len: usize,
        fd: i32,
        file_off: u64,
        prot: Prot,
        sync: bool,
    ) -> io::Result<()> {
        let at = self.check(off, len)?;
        let flags = if sync {
            libc::MAP_SHARED_VALIDATE | MAP_SYNC
        } else {
            libc::MAP_SHARED
        };
        // SAFETY: `[at, at + len)` lies inside our reservation (checked), so
        // MAP_FIXED replaces only pages of this view, which no reference
        // points into.
        let p = unsafe {
            libc::mmap(
                at,
                len,
                prot.bits(),
                flags | libc::MAP_FIXED,
                fd,
                file_off as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Maps private anonymous memory over `[off, off + len)`: read-only it
    /// reads as zeros (the kernel's zero page); with `Prot::None` nothing
    /// is accessible.
    pub(crate) fn map_anon(&self, off: usize, len: usize, prot: Prot) -> io::Result<()> {
        let at = self.check(off, len)?;
        // SAFETY: as in `map_file`.
        let p = unsafe {
            libc::mmap(
                at,
                len,
                prot.bits(),
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Keeps every mapping in the reservation out of child processes
    /// (`MADV_DONTFORK` over the whole range), for while the view's fault
    /// registration, which does that in children, ends.
    pub(crate) fn keep_from_children(&self) {
        if self.len == 0 {
            return;
        }
        // SAFETY: advice on our own reservation; it changes nothing in this
        // process.
        unsafe { libc::madvise(self.base as *mut c_void, self.len, libc::MADV_DONTFORK) };
    }

    /// Changes the protection of `[off, off + len)`.
    pub(crate) fn protect(&self, off: usize, len: usize, prot: Prot) -> io::Result<()> {
        let at = self.check(off, len)?;
        // SAFETY: changes the protection of pages of our own reservation only.
        if unsafe { libc::mprotect(at, len, prot.bits()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.release();
    }
}

/// Copies `dst.len()` bytes from view memory at `src`.
///
/// # Safety
///
/// `[src, src + dst.len())` must be mapped view memory (an access may still
/// fault; the fault handler resolves it or raises SIGBUS).
pub(crate) unsafe fn copy_out(src: *const u8, dst: &mut [u8]) {
    let n = dst.len();
    let mut i = 0;
    let d = dst.as_mut_ptr();
    while i < n && !(src as usize + i).is_multiple_of(8) {
        // SAFETY: in range (the caller's contract); atomic byte loads of
        // shared memory are never a data race.
        dst[i] = unsafe { AtomicU8::from_ptr(src.add(i).cast_mut()) }.load(Ordering::Relaxed);
        i += 1;
    }
    while i + 8 <= n {
        // SAFETY: 8-aligned and in range; the store goes to our own buffer.
        unsafe {
            let w =
                AtomicU64::from_ptr(src.add(i).cast_mut().cast::<u64>()).load(Ordering::Relaxed);
            d.add(i).cast::<u64>().write_unaligned(w);
        }
        i += 8;
    }
    while i < n {
        // SAFETY: as for the head.
        dst[i] = unsafe { AtomicU8::from_ptr(src.add(i).cast_mut()) }.load(Ordering::Relaxed);
        i += 1;
    }
}

/// Copies `src` into view memory at `dst`.
///
/// # Safety
///
/// As for [`copy_out`], for `[dst, dst + src.len())`.
pub(crate) unsafe fn copy_in(dst: *mut u8, src: &[u8]) {
    let n = src.len();
    let mut i = 0;
    let s = src.as_ptr();
    while i < n && !(dst as usize + i).is_multiple_of(8) {
        // SAFETY: in range; atomic stores to shared memory.
        unsafe { AtomicU8::from_ptr(dst.add(i)) }.store(src[i], Ordering::Relaxed);
        i += 1;
    }
    while i + 8 <= n {
        // SAFETY: 8-aligned and in range; the load reads our own buffer.
        unsafe {
            let w = s.add(i).cast::<u64>().read_unaligned();
            AtomicU64::from_ptr(dst.add(i).cast::<u64>()).store(w, Ordering::Relaxed);
        }
        i += 8;
    }
    while i < n {
        // SAFETY: as for the head.
        unsafe { AtomicU8::from_ptr(dst.add(i)) }.store(src[i], Ordering::Relaxed);
        i += 1;
    }
}
