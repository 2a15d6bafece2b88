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
    #[cfg(test)]
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

    /// A zero-filled shared mapping of `len` bytes of a new anonymous memory
    /// file (memfd), with the file, so that the memory can be mapped again
    /// elsewhere (file-system views of a memory device).
    pub(crate) fn memfd(len: usize) -> rustix::io::Result<(Mapping, rustix::fd::OwnedFd)> {
        let fd = rustix::fs::memfd_create("daxfs-memory", rustix::fs::MemfdFlags::CLOEXEC)?;
        rustix::fs::ftruncate(&fd, round_up(len, page_size()) as u64)?;
        if len == 0 {
            let m = Mapping {
                ptr: NonNull::dangling(),
                len: 0,
            };
            return Ok((m, fd));
        }
        // SAFETY: a null hint lets the kernel pick fresh addresses, so no
        // existing memory is replaced; the new region is owned by the result.
        let p = unsafe {
            mm::mmap(
                ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED | MapFlags::NORESERVE,
                &fd,
                0,
            )?
        };
        let m = Mapping {
            ptr: NonNull::new(p.cast()).expect("mmap returned null"),
            len,
        };
        Ok((m, fd))
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
        if align <= page_size() || sync {
            // SAFETY: a null hint: the kernel picks unused addresses, so no
            // existing memory is replaced; the region is owned by the result.
            let p = unsafe { mm::mmap(ptr::null_mut(), len, prot, flags, fd, offset)? };
            let m = Mapping {
                ptr: NonNull::new(p.cast()).expect("mmap returned null"),
                len,
            };
            // A MAP_SYNC mapping is tried at an address the kernel picks
            // first: the kernel refuses MAP_SYNC (on a file system without
            // DAX) only after a MAP_FIXED mapping has unmapped what was at
            // its address, so trying it inside our reservation would leave
            // a hole another thread's mmap could take, and unmapping the
            // reservation afterwards would unmap that thread's memory.
            if align <= page_size() || (m.as_ptr() as usize).is_multiple_of(align) {
                return Ok(m);
            }
            // Accepted but not aligned: map again, aligned (below), where
            // MAP_FIXED will not be refused for MAP_SYNC.
            drop(m);
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
        // A failed MAP_FIXED may have unmapped part of the reservation
        // already, and another thread's mmap may have been placed in that
        // hole since: unmapping the reservation now could unmap that
        // thread's memory. So on failure it is left (inaccessible,
        // unreserved address space only); this is not expected to happen,
        // as the flags were accepted by a mapping above or need no check.
        mapped?;
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
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Populates the page tables of `[off, off + len)` (clipped to the
    /// mapping) for writing, in one system call (`MADV_POPULATE_WRITE`,
    /// Linux 5.14), so later stores there take no page fault. Best effort:
    /// errors (an older kernel, an inaccessible page) are ignored.
    pub(crate) fn prefault(&self, off: u64, len: u64) {
        let _ = self.populate_range(off, len);
    }

    /// The first byte of the mapping (dangling when the length is zero).
    #[inline]
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The error for a guarded access of this mapping that faulted.
    #[cold]
    #[inline(never)]
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
            // The other side of a copy is a Rust buffer, which faults only
            // when it lies in a registered range (a file's mmap view whose
            // page is revoked): an address fault of the caller's buffer.
            _ if crate::fault::in_registered_range(f.addr) => DeviceError::Os {
                what: format!("copying to or from the buffer at {:#x}", f.addr),
                source: std::io::Error::from_raw_os_error(libc::EFAULT),
            },
            // Anything else is a bug, not a media error.
            _ => panic!(
                "fault at {:#x}, outside the mapping [{base:#x}, +{:#x}), during a guarded copy",
                f.addr, self.len
            ),
        }
    }

    /// Copies `buf.len()` bytes at `off` into `buf`.
    #[inline]
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
    #[inline]
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
    #[inline]
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
    #[inline]
    pub(crate) fn write_u64(&self, off: u64, value: u64) -> Result<()> {
        self.write(off, &value.to_le_bytes())
    }

    /// Loads the little-endian `u64` at `off`: one 8-byte load when `off` is
    /// a multiple of 8, a plain copy otherwise.
    #[inline]
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

    /// Fills the page tables of the whole mapping now, writable
    /// (`MADV_POPULATE_WRITE`), so that no access later pays a first-touch
    /// page fault. On a file with holes this allocates them.
    pub(crate) fn populate(&self) -> rustix::io::Result<()> {
        self.populate_range(0, self.len as u64)
    }

    /// `MADV_POPULATE_WRITE` over the pages overlapping `[off, off + len)`,
    /// clipped to the mapping.
    fn populate_range(&self, off: u64, len: u64) -> rustix::io::Result<()> {
        let Some((off, len)) = self.clamp(off, len) else {
            return Ok(());
        };
        let page = page_size();
        let start = off / page * page;
        let end = round_up(off + len, page);
        // SAFETY: `[start, end)` is page aligned and within the pages of our
        // live mapping; populating page tables changes no byte of memory
        // (the kernel allocates missing file pages zero-filled, as a first
        // store would) and invalidates no Rust reference (none into the
        // mapping exists).
        unsafe {
            mm::madvise(
                self.as_ptr().add(start).cast(),
                end - start,
                mm::Advice::LinuxPopulateWrite,
            )
        }
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

    /// Makes a page of device memory inaccessible behind the device's back,
    /// as an unreported hardware error would.
    fn poison_behind_the_back(ptr: *mut u8, off: u64) {
        // SAFETY: `ptr + off` is a page-aligned page of a live device
        // mapping; no reference into it exists, and the device only accesses
        // it through the guarded routines.
        let r = unsafe { libc::mprotect(ptr.add(off as usize).cast(), 4096, libc::PROT_NONE) };
        assert_eq!(r, 0);
    }

    /// The guarded copy survives a fault the bad set knows nothing about:
    /// the fault path, not a check of the set, produces the error; the page
    /// is recorded and the holder told with action required.
    #[test]
    fn guarded_copy_catches_unreported_poison() {
        use crate::tests_media::Recorder;
        use crate::{DeviceError, FailureFlags};
        let p = TempPath::new("behind");
        let _side = crate::tests_media::TempSidecar(crate::sidecar_path(&p.0));
        let file = MmapDevice::create(&p.0, 16 * 4096, OpenOptions::new()).unwrap();
        let file_ptr = file.as_ptr();
        let mem = MemDevice::new(16 * 4096);
        let mem_ptr = mem.as_ptr();
        let devs: Vec<(Box<dyn Device>, *mut u8)> =
            vec![(Box::new(mem), mem_ptr), (Box::new(file), file_ptr)];
        for (dev, ptr) in devs {
            dev.write(0, &[0x5a; 16 * 4096]).unwrap();
            let h = Recorder::new();
            dev.set_holder(h.clone()).unwrap();
            poison_behind_the_back(ptr, 3 * 4096);
            assert!(dev.bad_ranges().is_empty(), "the set knows nothing yet");
            let mut buf = [0u8; 100];
            // A read that starts on a good page and runs into the bad one.
            match dev.read(3 * 4096 - 50, &mut buf) {
                Err(DeviceError::Media { off, len }) => assert_eq!((off, len), (3 * 4096, 4096)),
                other => panic!("expected a media error, got {other:?}"),
            }
            assert_eq!(h.take(), [(3 * 4096, 4096, FailureFlags::ACTION_REQUIRED)]);
            assert_eq!(dev.bad_ranges(), [(3 * 4096, 4096)]);
            // Known now: the next read fails without a new report.
            assert!(dev.read_u64(3 * 4096 + 8).is_err());
            assert!(h.take().is_empty());
            // A store meeting unreported poison is caught the same way.
            poison_behind_the_back(ptr, 7 * 4096);
            assert!(matches!(
                dev.write_u64(7 * 4096 + 16, 1),
                Err(DeviceError::Media { off: 28672, .. })
            ));
            poison_behind_the_back(ptr, 9 * 4096);
            assert!(matches!(
                dev.fill(8 * 4096, 8192, 1),
                Err(DeviceError::Media { off: 36864, .. })
            ));
            assert_eq!(h.take().len(), 2);
            assert_eq!(dev.bad_ranges().len(), 3);
            // Persisting over bad pages skips them instead of faulting.
            dev.persist(0, 16 * 4096);
            dev.take_persist_error().unwrap();
            // The recovery write clears them all.
            dev.clear_error(0, &[1; 16 * 4096]).unwrap();
            assert!(dev.bad_ranges().is_empty());
            dev.read(3 * 4096 - 50, &mut buf).unwrap();
            assert_eq!(buf, [1; 100]);
            dev.clear_holder();
        }
    }

    /// Whatever path the guarded routines take (bytes, words, 16-byte moves,
    /// `rep`), and however the access is aligned, a fault names the page
    /// that is bad, never its good neighbour. (A bare mapping: no bad set,
    /// every case takes the fault path.)
    #[test]
    fn faults_name_the_right_page_on_every_copy_path() {
        use crate::DeviceError;
        let dev = Mapping::anonymous(8 * 4096).unwrap();
        dev.fill(0, 8 * 4096, 0x33).unwrap();
        poison_behind_the_back(dev.as_ptr(), 5 * 4096);
        let bad = 5 * 4096u64;
        let mut buf = vec![0u8; 3000];
        let data = vec![0x44u8; 3000];
        for len in [
            1u64, 2, 7, 8, 9, 16, 17, 33, 64, 65, 100, 200, 1023, 1024, 1500, 3000,
        ] {
            for start in (bad.saturating_sub(len + 20)..bad + 40).step_by(3) {
                let end = start + len;
                if end <= bad || start >= bad + 4096 || end > 8 * 4096 {
                    continue;
                }
                let b = &mut buf[..len as usize];
                for (what, r) in [
                    ("read", dev.read(start, b)),
                    ("write", dev.write(start, &data[..len as usize])),
                    ("fill", dev.fill(start, len, 1)),
                ] {
                    match r {
                        Err(DeviceError::Media { off, len: 4096 }) if off == bad => {}
                        other => panic!("{what} {len} at {start:#x}: {other:?}"),
                    }
                }
            }
        }
        // The page after the bad one was never reached.
        let mut b = [0u8; 4096];
        dev.read(6 * 4096, &mut b).unwrap();
        assert!(b.iter().all(|&x| x == 0x33));
        assert_eq!(
            dev.read_u64(bad + 8).unwrap_err().to_string(),
            "media error at device offset 0x5000 (+0x1000)"
        );
        assert!(dev.write_u64(bad + 16, 1).is_err());
        dev.protect(bad, 4096, true).unwrap();
        dev.read(bad, &mut b).unwrap();
    }

    /// A SIGBUS inside the guarded copy (here: a file mapping whose file was
    /// truncated under it, `BUS_ADRERR`; on real hardware a machine check,
    /// `BUS_MCEERR_AR`) is recovered like the emulation's SIGSEGV.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn sigbus_in_the_guarded_copy_is_recovered() {
        let p = TempPath::new("sigbus");
        crate::create_image_file(&p.0, 4 * 4096).unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p.0)
            .unwrap();
        let m = Mapping::shared(rustix::fd::AsFd::as_fd(&f), 0, 4 * 4096, false, 4096).unwrap();
        m.write(0, &[7; 4 * 4096]).unwrap();
        f.set_len(2 * 4096).unwrap();
        let mut b = [0u8; 64];
        m.read(4096 - 32, &mut b[..32]).unwrap();
        assert_eq!(b[..32], [7; 32]);
        match m.read(2 * 4096 - 32, &mut b) {
            Err(crate::DeviceError::Media { off, len }) => assert_eq!((off, len), (2 * 4096, 4096)),
            other => panic!("expected a media error, got {other:?}"),
        }
        assert!(m.write(3 * 4096, &[1]).is_err());
        assert!(m.read_u64(3 * 4096 + 8).is_err());
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn cpu_flushes_skip_bad_pages() {
        let p = TempPath::new("flushbad");
        let _side = crate::tests_media::TempSidecar(crate::sidecar_path(&p.0));
        let dev =
            MmapDevice::create(&p.0, 8 * 4096, OpenOptions::new().assume_persistent(true)).unwrap();
        assert!(matches!(dev.mode(), crate::PersistMode::CpuFlush(_)));
        dev.inject_error(4096, 3 * 4096).unwrap();
        dev.inject_error(7 * 4096, 1).unwrap();
        dev.write(5 * 4096 + 3, &[9; 100]).unwrap();
        dev.persist(0, 8 * 4096);
        dev.persist(4096 + 100, 10);
        dev.persist(6 * 4096 - 1, 4097);
        let mut b = [0u8; 100];
        dev.read(5 * 4096 + 3, &mut b).unwrap();
        assert_eq!(b, [9; 100]);
    }

    /// Raw mappings: told and revoked without a holder, left alone with one.
    #[test]
    fn raw_mappings_hear_of_errors_without_a_holder() {
        use crate::tests_media::Recorder;
        use crate::{DeviceError, FailureFlags, RawFailure};
        use std::sync::{Arc, Mutex};
        let p = TempPath::new("raw");
        let _side = crate::tests_media::TempSidecar(crate::sidecar_path(&p.0));
        let dev = MmapDevice::create(&p.0, 64 * 4096, OpenOptions::new()).unwrap();
        dev.write(0, &[0x11; 64 * 4096]).unwrap();
        dev.inject_error(60 * 4096, 1).unwrap();
        let whole = dev.map_raw(0, 64 * 4096).unwrap();
        let part = dev.map_raw(16 * 4096, 16 * 4096).unwrap();
        assert_eq!(part.device_offset(), 16 * 4096);
        assert_eq!(part.len(), 16 * 4096);
        // Pages bad before the mapping was made are revoked from the start.
        assert_eq!(whole.revoked(), [(60 * 4096, 4096)]);
        assert!(part.revoked().is_empty());
        let seen: Arc<Mutex<Vec<(&str, RawFailure)>>> = Arc::default();
        for (name, m) in [("whole", &whole), ("part", &part)] {
            let seen = seen.clone();
            m.set_failure_callback(move |f| seen.lock().unwrap().push((name, *f)));
        }
        // The mappings share the device's memory.
        dev.write(17 * 4096, b"shared").unwrap();
        let mut b = [0u8; 6];
        part.read(4096, &mut b).unwrap();
        assert_eq!(&b, b"shared");
        whole.write(18 * 4096, b"back").unwrap();
        let mut b = [0u8; 4];
        dev.read(18 * 4096, &mut b).unwrap();
        assert_eq!(&b, b"back");

        // No holder: the error goes to the raw owners, whose pages are
        // revoked.
        dev.inject_error(20 * 4096 + 5, 1).unwrap();
        let got = std::mem::take(&mut *seen.lock().unwrap());
        assert_eq!(got.len(), 2, "{got:?}");
        let w = got.iter().find(|g| g.0 == "whole").unwrap().1;
        let pt = got.iter().find(|g| g.0 == "part").unwrap().1;
        assert_eq!(
            (w.offset, w.len, w.map_offset),
            (20 * 4096, 4096, 20 * 4096)
        );
        assert_eq!(
            (pt.offset, pt.len, pt.map_offset),
            (20 * 4096, 4096, 4 * 4096)
        );
        assert_eq!(w.flags, FailureFlags::BACKGROUND);
        assert_eq!(whole.revoked(), [(20 * 4096, 4096), (60 * 4096, 4096)]);
        assert_eq!(part.revoked(), [(4 * 4096, 4096)]);
        assert!(matches!(
            part.read(4 * 4096 + 1, &mut [0; 2]),
            Err(DeviceError::Media {
                off: 81920,
                len: 4096
            })
        ));
        // A fault met by a device read, with no holder: action required.
        poison_behind_the_back(dev.as_ptr(), 40 * 4096);
        assert!(dev.read(40 * 4096, &mut [0]).is_err());
        let got = std::mem::take(&mut *seen.lock().unwrap());
        assert_eq!(got.len(), 1, "only the whole mapping covers it");
        assert_eq!(got[0].1.flags, FailureFlags::ACTION_REQUIRED);
        assert_eq!(got[0].1.offset, 40 * 4096);

        // With a holder: the holder is told, raw mappings are left alone.
        let h = Recorder::new();
        dev.set_holder(h.clone()).unwrap();
        h.take();
        dev.inject_error(24 * 4096, 1).unwrap();
        assert_eq!(h.take(), [(24 * 4096, 4096, FailureFlags::BACKGROUND)]);
        assert!(seen.lock().unwrap().is_empty());
        assert_eq!(part.revoked(), [(4 * 4096, 4096)]);
        part.read(8 * 4096, &mut [0; 8]).unwrap();
        dev.clear_holder();

        // A recovery write gives the pages back to the raw mappings.
        dev.clear_error(20 * 4096, &[0x22; 4096]).unwrap();
        assert!(part.revoked().is_empty());
        let mut b = [0u8; 2];
        part.read(4 * 4096 + 1, &mut b).unwrap();
        assert_eq!(b, [0x22; 2]);

        // Removal without a holder revokes every raw mapping whole.
        drop(part);
        dev.remove().unwrap();
        let got = std::mem::take(&mut *seen.lock().unwrap());
        assert_eq!(got.len(), 1, "dropped mappings are not told");
        assert_eq!(
            (got[0].1.offset, got[0].1.len, got[0].1.flags),
            (0, 64 * 4096, FailureFlags::PRE_REMOVE)
        );
        assert_eq!(whole.revoked(), [(0, 64 * 4096)]);

        // Alignment and range checks.
        assert!(dev.map_raw(100, 4096).is_err());
        assert!(dev.map_raw(0, 0).is_err());
        assert!(dev.map_raw(60 * 4096, 5 * 4096).is_err());
        let tail = dev.map_raw(63 * 4096, 100).unwrap();
        assert_eq!(tail.len(), 4096, "rounded up to a page");
    }

    /// Touching a revoked page of a raw mapping raises SIGBUS with
    /// BUS_MCEERR_AR at the address touched, as the kernel reports consumed
    /// poison; without a handler the process dies of it.
    #[test]
    fn touching_a_revoked_raw_page_raises_sigbus() {
        use crate::fault::tests::{
            FIX_PAGE, SEEN_ADDR, SEEN_CODE, SEEN_LSB, child_scenario, install_test_sigbus_handler,
            run_child,
        };
        use std::os::unix::process::ExitStatusExt;
        let scenario = child_scenario();
        if let Some(s @ ("raw-handled" | "raw-unhandled")) = scenario.as_deref() {
            let p = TempPath::new("rawsigbus");
            let _side = crate::tests_media::TempSidecar(crate::sidecar_path(&p.0));
            let dev = MmapDevice::create(&p.0, 8 * 4096, OpenOptions::new()).unwrap();
            let raw = dev.map_raw(0, 8 * 4096).unwrap();
            dev.inject_error(5 * 4096, 1).unwrap();
            // The child exits without running destructors (exit, or death
            // by SIGBUS): remove its files now; the mappings stay valid.
            let _ = std::fs::remove_file(&p.0);
            let _ = std::fs::remove_file(crate::sidecar_path(&p.0));
            let target = raw.as_ptr() as usize + 5 * 4096 + 123;
            if s == "raw-handled" {
                FIX_PAGE.store(raw.as_ptr() as usize + 5 * 4096, Ordering::SeqCst);
                install_test_sigbus_handler();
            }
            // SAFETY: a load from the raw mapping, which is mapped; the page
            // is revoked, so this raises SIGBUS, which is what is tested
            // (the test handler makes the page accessible again).
            let v = unsafe { ptr::read_volatile(target as *const u8) };
            println!(
                "v={v} code={} addr_ok={} lsb={}",
                SEEN_CODE.load(Ordering::SeqCst),
                SEEN_ADDR.load(Ordering::SeqCst) == target,
                SEEN_LSB.load(Ordering::SeqCst)
            );
            std::process::exit(0);
        }
        let name = "mmap::tests::touching_a_revoked_raw_page_raises_sigbus";
        let (status, out) = run_child(name, "raw-handled");
        assert!(status.success(), "{status:?}\n{out}");
        assert!(
            out.contains(&format!(
                "v=0 code={} addr_ok=true lsb=12",
                crate::fault::BUS_MCEERR_AR
            )),
            "{out}"
        );
        let (status, out) = run_child(name, "raw-unhandled");
        assert_eq!(status.signal(), Some(libc::SIGBUS), "{status:?}\n{out}");
    }
}
