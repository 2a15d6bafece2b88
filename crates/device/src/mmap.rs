//! Owned memory mappings and the raw copies in and out of them.
//!
//! # Invariants
//!
//! - A [`Mapping`] owns `[ptr, ptr + len)`: the region was mapped readable
//!   and writable by this module and stays mapped until the `Mapping` is
//!   dropped (then it is unmapped exactly once). `len == 0` means nothing is
//!   mapped and `ptr` is dangling (never dereferenced).
//! - Mapped memory is never borrowed as `&`/`&mut`: it may change under us
//!   (another thread, another mapping of the same file or device), so bytes
//!   move only through the machine-check-safe routines of the `mcsafe`
//!   module, on a range checked with [`check_range`] first. A fault in them
//!   (a page made inaccessible by [`Mapping::protect`], or poison) comes back
//!   as [`DeviceError::Media`] naming the 4 KiB page, as an offset into the
//!   mapping.
//! - For file mappings, the file must not shrink while mapped; the devices
//!   hold an exclusive `flock` so that cooperating openers keep out, but an
//!   uncooperative truncation makes accesses fault (SIGBUS), as for any
//!   mapping.
use crate::mcsafe::{self, Faulted};
use crate::{DeviceError, FlushInstr, Result, check_range, pmem};
use rustix::fd::BorrowedFd;
use rustix::mm::{self, MapFlags, MprotectFlags, MsyncFlags, ProtFlags};
use std::ffi::c_void;
use std::ptr::{self, NonNull};

/// A readable and writable mapping owned by this value.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: `Mapping` owns its region; every access goes through raw copies of
// bounds-checked ranges, never through references, so handing the mapping to
// or sharing it with other threads introduces no aliasing of Rust references.
// Concurrent accesses to overlapping bytes only give unspecified byte values.
unsafe impl Send for Mapping {}
// SAFETY: as for `Send`: `&Mapping` only allows raw copies of checked ranges.
unsafe impl Sync for Mapping {}

/// The granule of emulated media errors.
const BLOCK: u64 = crate::media::BAD_BLOCK_SIZE;

fn page_size() -> usize {
    rustix::param::page_size()
}

fn round_up(x: usize, to: usize) -> usize {
    x.div_ceil(to) * to
}

impl Mapping {
    /// A zero-filled private anonymous mapping of `len` bytes.
    pub(crate) fn anonymous(len: usize) -> rustix::io::Result<Mapping> {
        if len == 0 {
            return Ok(Mapping {
                ptr: NonNull::dangling(),
                len: 0,
            });
        }
        // SAFETY: a null hint lets the kernel pick fresh addresses, so no
        // existing memory is replaced; the new region is owned by the result.
        let p = unsafe {
            mm::mmap_anonymous(
                ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE | MapFlags::NORESERVE,
            )?
        };
        Ok(Mapping {
            ptr: NonNull::new(p.cast()).expect("mmap returned null"),
            len,
        })
    }

    /// Maps `len` bytes of `fd` from file offset `offset` (a multiple of the
    /// page size) shared, readable and writable, at an address that is a
    /// multiple of `align` (a power of two; at most the page size means no
    /// extra alignment). With `sync`, the flags are
    /// `MAP_SHARED_VALIDATE | MAP_SYNC`, which the kernel refuses with
    /// `EOPNOTSUPP` (or `EINVAL` on old kernels) unless the file is on a DAX
    /// file system.
    pub(crate) fn shared(
        fd: BorrowedFd<'_>,
        offset: u64,
        len: usize,
        sync: bool,
        align: usize,
    ) -> rustix::io::Result<Mapping> {
        assert!(len > 0, "cannot map zero bytes");
        assert!(align.is_power_of_two(), "alignment must be a power of two");
        let flags = if sync {
            MapFlags::SHARED_VALIDATE | MapFlags::SYNC
        } else {
            MapFlags::SHARED
        };
        let prot = ProtFlags::READ | ProtFlags::WRITE;
        if align <= page_size() {
            // SAFETY: a null hint: the kernel picks unused addresses, so no
            // existing memory is replaced; the region is owned by the result.
            let p = unsafe { mm::mmap(ptr::null_mut(), len, prot, flags, fd, offset)? };
            return Ok(Mapping {
                ptr: NonNull::new(p.cast()).expect("mmap returned null"),
                len,
            });
        }
        // Reserve `len + align` inaccessible bytes, place the file mapping at
        // the first aligned address inside with MAP_FIXED, and give back the
        // unused head and tail.
        let map_len = round_up(len, page_size());
        let reserve_len = map_len.checked_add(align).ok_or(rustix::io::Errno::NOMEM)?;
        // SAFETY: a null hint: fresh addresses owned by this function until
        // they are handed to the result or unmapped below.
        let reserve = unsafe {
            mm::mmap_anonymous(
                ptr::null_mut(),
                reserve_len,
                ProtFlags::empty(),
                MapFlags::PRIVATE | MapFlags::NORESERVE,
            )?
        };
        let base = reserve as usize;
        let aligned = round_up(base, align);
        // SAFETY: `[aligned, aligned + len)` lies inside the reservation made
        // above, which this function owns and nothing references, so
        // replacing it with MAP_FIXED clobbers nothing else.
        let mapped = unsafe {
            mm::mmap(
                aligned as *mut c_void,
                len,
                prot,
                flags | MapFlags::FIXED,
                fd,
                offset,
            )
        };
        if let Err(e) = mapped {
            // SAFETY: the whole reservation is ours and unreferenced; parts of
            // it that a failed MAP_FIXED may have unmapped are fine to unmap.
            let _ = unsafe { mm::munmap(reserve, reserve_len) };
            return Err(e);
        }
        let head = aligned - base;
        if head > 0 {
            // SAFETY: `[base, aligned)` is the unused head of our reservation.
            let _ = unsafe { mm::munmap(reserve, head) };
        }
        let tail = reserve_len - head - map_len;
        if tail > 0 {
            // SAFETY: `[aligned + map_len, base + reserve_len)` is the unused,
            // page-aligned tail of our reservation (the file mapping covers
            // whole pages, `map_len` of them).
            let _ = unsafe { mm::munmap((aligned + map_len) as *mut c_void, tail) };
        }
        Ok(Mapping {
            ptr: NonNull::new(aligned as *mut u8).expect("aligned address is null"),
            len,
        })
    }

    /// Length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The first byte of the mapping (dangling when the length is zero).
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The error for a guarded access of this mapping that faulted.
    fn fault_error(&self, f: Faulted) -> DeviceError {
        let base = self.as_ptr() as usize;
        let mapped = round_up(self.len, page_size());
        match f.addr.checked_sub(base) {
            Some(rel) if rel < mapped => {
                let page = rel as u64 / BLOCK * BLOCK;
                DeviceError::Media {
                    off: page,
                    len: BLOCK.min(self.len as u64 - page.min(self.len as u64)),
                }
            }
            // The other side of every copy is a Rust buffer, which cannot
            // fault: this is a bug, not a media error.
            _ => panic!(
                "fault at {:#x}, outside the mapping [{base:#x}, +{:#x}), during a guarded copy",
                f.addr, self.len
            ),
        }
    }

    /// Copies `buf.len()` bytes at `off` into `buf`.
    pub(crate) fn read(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        check_range(off, buf.len() as u64, self.len as u64)?;
        if buf.is_empty() {
            return Ok(());
        }
        // SAFETY: `[off, off + buf.len())` was checked to lie inside the
        // mapping, which stays mapped while `self` lives (its pages may be
        // inaccessible: the copy then reports the fault); `buf` is a distinct
        // Rust allocation, so the ranges do not overlap.
        unsafe { mcsafe::read(buf.as_mut_ptr(), self.as_ptr().add(off as usize), buf.len()) }
            .map_err(|f| self.fault_error(f))
    }

    /// Copies `data` into the mapping at `off`.
    pub(crate) fn write(&self, off: u64, data: &[u8]) -> Result<()> {
        check_range(off, data.len() as u64, self.len as u64)?;
        if data.is_empty() {
            return Ok(());
        }
        // SAFETY: the destination range was checked to lie inside the
        // writable mapping, alive while `self` lives; `data` is a Rust slice
        // and cannot overlap mapped memory, which is never borrowed.
        unsafe { mcsafe::write(self.as_ptr().add(off as usize), data.as_ptr(), data.len()) }
            .map_err(|f| self.fault_error(f))
    }

    /// Sets `len` bytes at `off` to `byte`.
    pub(crate) fn fill(&self, off: u64, len: u64, byte: u8) -> Result<()> {
        check_range(off, len, self.len as u64)?;
        if len == 0 {
            return Ok(());
        }
        // SAFETY: the range was checked to lie inside the writable mapping,
        // alive while `self` lives.
        unsafe { mcsafe::fill(self.as_ptr().add(off as usize), byte, len as usize) }
            .map_err(|f| self.fault_error(f))
    }

    /// Stores `value` little-endian at `off`: one 8-byte store when `off` is
    /// a multiple of 8 (the guarded copy does a single aligned `mov` for an
    /// aligned 8-byte copy), a plain copy otherwise.
    pub(crate) fn write_u64(&self, off: u64, value: u64) -> Result<()> {
        self.write(off, &value.to_le_bytes())
    }

    /// Loads the little-endian `u64` at `off`: one 8-byte load when `off` is
    /// a multiple of 8, a plain copy otherwise.
    pub(crate) fn read_u64(&self, off: u64) -> Result<u64> {
        let mut b = [0u8; 8];
        self.read(off, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Makes the pages `[off, off + len)` (multiples of 4 KiB, inside the
    /// mapping's pages) inaccessible, or readable and writable again. Fails
    /// with `NOTSUP` when the system page is not 4 KiB.
    pub(crate) fn protect(&self, off: u64, len: u64, accessible: bool) -> rustix::io::Result<()> {
        if page_size() as u64 != BLOCK {
            return Err(rustix::io::Errno::NOTSUP);
        }
        let mapped = round_up(self.len, page_size()) as u64;
        if !off.is_multiple_of(BLOCK)
            || !len.is_multiple_of(BLOCK)
            || off > mapped
            || len > mapped - off
        {
            return Err(rustix::io::Errno::INVAL);
        }
        if len == 0 {
            return Ok(());
        }
        let prot = if accessible {
            MprotectFlags::READ | MprotectFlags::WRITE
        } else {
            MprotectFlags::empty()
        };
        // SAFETY: `[off, off + len)` is page aligned and inside the pages of
        // our mapping, which is alive. Changing protection invalidates no
        // Rust reference: none into the mapping exists, and every access
        // goes through the guarded routines, which survive inaccessible
        // pages.
        unsafe { mm::mprotect(self.as_ptr().add(off as usize).cast(), len as usize, prot) }
    }

    /// Clamps `[off, off + len)` to the mapping; `None` when nothing is left.
    fn clamp(&self, off: u64, len: u64) -> Option<(usize, usize)> {
        let size = self.len as u64;
        if off >= size || len == 0 {
            return None;
        }
        let end = off.saturating_add(len).min(size);
        Some((off as usize, (end - off) as usize))
    }

    /// `msync(MS_SYNC)` of the pages overlapping `[off, off + len)` (clamped
    /// to the mapping).
    pub(crate) fn msync(&self, off: u64, len: u64) -> rustix::io::Result<()> {
        let Some((off, len)) = self.clamp(off, len) else {
            return Ok(());
        };
        let page = page_size();
        let start = off / page * page;
        let end = round_up(off + len, page).min(round_up(self.len, page));
        // SAFETY: `[start, end)` is page aligned and lies within the pages of
        // our mapping (the kernel maps whole pages), which is alive.
        unsafe {
            mm::msync(
                self.as_ptr().add(start).cast(),
                end - start,
                MsyncFlags::SYNC,
            )
        }
    }

    /// Flushes the cache lines overlapping `[off, off + len)` (clamped to the
    /// mapping) with `instr`.
    ///
    /// Panics if the CPU lacks `instr`; callers choose it with
    /// [`pmem::flush_instr_supported`].
    pub(crate) fn flush_lines(&self, instr: FlushInstr, off: u64, len: u64) {
        assert!(
            pmem::flush_instr_supported(instr),
            "{instr:?} is not supported by this CPU"
        );
        let Some((off, len)) = self.clamp(off, len) else {
            return;
        };
        let end = off + len;
        let mut at = off;
        while at < end {
            // SAFETY: the CPU supports `instr` (asserted above). The range
            // lies inside the mapping, and so do the whole cache lines around
            // it: the mapping starts page aligned and spans whole pages, and
            // cache lines never cross pages. Inaccessible pages fault, which
            // the routine reports.
            let r = unsafe { mcsafe::flush(instr, self.as_ptr().add(at), end - at) };
            match r {
                Ok(()) => break,
                // A bad page has nothing to write back: skip it.
                Err(f) => {
                    let rel = f.addr.wrapping_sub(self.as_ptr() as usize);
                    if rel >= end {
                        break;
                    }
                    at = (rel / BLOCK as usize + 1) * BLOCK as usize;
                }
            }
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if self.len == 0 {
            return;
        }
        // SAFETY: the region was mapped by this module, is owned by `self`,
        // is unmapped only here, and no reference into it exists.
        let _ = unsafe { mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file::tests::TempPath;
    use crate::{Device, MemDevice, MmapDevice, OpenOptions};
    use std::sync::atomic::Ordering;

    #[test]
    fn as_ptr_is_the_device_memory() {
        let p = TempPath::new("asptr");
        let dev = MmapDevice::create(&p.0, 4 << 20, OpenOptions::new()).unwrap();
        // SAFETY: bytes [100, 104) lie inside the 4 MiB mapping, which lives
        // while `dev` does; no reference to mapped memory is formed.
        unsafe { ptr::copy_nonoverlapping(b"abcd".as_ptr(), dev.as_ptr().add(100), 4) };
        let mut buf = [0u8; 4];
        dev.read(100, &mut buf).unwrap();
        assert_eq!(&buf, b"abcd");

        let mem = MemDevice::new(8192);
        mem.write(8000, b"wxyz").unwrap();
        let mut out = [0u8; 4];
        // SAFETY: bytes [8000, 8004) lie inside the 8 KiB mapping of `mem`.
        unsafe { ptr::copy_nonoverlapping(mem.as_ptr().add(8000), out.as_mut_ptr(), 4) };
        assert_eq!(&out, b"wxyz");
    }

    #[test]
    fn aligned_shared_mapping_of_small_and_odd_alignments() {
        let p = TempPath::new("aligned");
        crate::create_image_file(&p.0, 3 * 4096).unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p.0)
            .unwrap();
        for align in [4096usize, 1 << 16, 1 << 21, 1 << 30] {
            let m =
                Mapping::shared(rustix::fd::AsFd::as_fd(&f), 0, 3 * 4096, false, align).unwrap();
            assert_eq!(m.as_ptr() as usize % align, 0);
            m.write(3 * 4096 - 2, &[align as u8 ^ 0x5a, 9]).unwrap();
            m.msync(0, 3 * 4096).unwrap();
        }
        let on_disk = std::fs::read(&p.0).unwrap();
        assert_eq!(on_disk[3 * 4096 - 1], 9);
    }

    #[test]
    fn u64_accesses() {
        let m = Mapping::anonymous(4096).unwrap();
        m.write_u64(8, 0x0102_0304_0506_0708).unwrap();
        let mut b = [0u8; 8];
        m.read(8, &mut b).unwrap();
        assert_eq!(b, [8, 7, 6, 5, 4, 3, 2, 1], "little-endian");
        assert_eq!(m.read_u64(8).unwrap(), 0x0102_0304_0506_0708);
        m.write_u64(4093 - 8, u64::MAX - 1).unwrap();
        assert_eq!(m.read_u64(4093 - 8).unwrap(), u64::MAX - 1);
        assert!(m.write_u64(4089, 1).is_err());
        assert!(m.read_u64(4096).is_err());
        assert!(m.read_u64(u64::MAX - 2).is_err());
    }

    #[test]
    fn aligned_u64_stores_do_not_tear() {
        let dev = std::sync::Arc::new(MemDevice::new(4096));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (dev, stop) = (dev.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    dev.write_u64(64, if i.is_multiple_of(2) { u64::MAX } else { 0 })
                        .unwrap();
                    i += 1;
                }
            })
        };
        for _ in 0..200_000 {
            let v = dev.read_u64(64).unwrap();
            assert!(v == 0 || v == u64::MAX, "torn value {v:#x}");
        }
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
    }

    #[test]
    fn zero_length_anonymous_mapping() {
        let m = Mapping::anonymous(0).unwrap();
        assert_eq!(m.len(), 0);
        m.read(0, &mut []).unwrap();
        assert!(m.write(0, &[1]).is_err());
        m.msync(0, 10).unwrap();
    }
}
