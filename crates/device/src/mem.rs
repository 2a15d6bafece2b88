//! A volatile in-memory device for tests.
//!
//! The bytes live in a shared mapping of an anonymous memory file (memfd)
//! owned by the device, so that file-system views can map its pages again;
//! they are
//! accessed only through the raw copies of the `mmap` module, so there is no
//! lock: concurrent accesses to disjoint ranges proceed in parallel.
//!
//! Media errors are emulated as on mapped devices: bad pages are made
//! inaccessible in the mapping, and reads meet them as faults.
use crate::media::{BAD_BLOCK_SIZE, Holder, Media, Medium};
use crate::mmap::Mapping;
use crate::{Device, DeviceError, PersistMode, Result};
use std::sync::Arc;

/// A device held in process memory. Persist is a no-op beyond ordering.
#[derive(Debug)]
pub struct MemDevice {
    map: Mapping,
    /// The memory file behind `map` (declared after it: unmapped first).
    fd: rustix::fd::OwnedFd,
    media: Media,
}

impl MemDevice {
    /// A zero-filled device of `size` bytes.
    ///
    /// Panics when the memory cannot be mapped (like a failed allocation).
    pub fn new(size: u64) -> Self {
        let len = usize::try_from(size).expect("device size exceeds the address space");
        let (map, fd) = Mapping::memfd(len)
            .unwrap_or_else(|e| panic!("cannot map {size} bytes of memory: {e}"));
        MemDevice {
            media: Media::new(size, None),
            map,
            fd,
        }
    }

    /// A device holding a copy of `image`.
    pub fn from_image(image: Vec<u8>) -> Self {
        let dev = MemDevice::new(image.len() as u64);
        dev.map
            .write(0, &image)
            .expect("image fits the device made for it");
        dev
    }

    /// A copy of every byte; bad pages (which cannot be read) come back as
    /// zeros.
    pub fn image(&self) -> Vec<u8> {
        let mut out = vec![0; self.map.len()];
        match self.map.read(0, &mut out) {
            Ok(()) => {}
            Err(DeviceError::Media { .. }) => {
                for (i, chunk) in out.chunks_mut(BAD_BLOCK_SIZE as usize).enumerate() {
                    if self.map.read(i as u64 * BAD_BLOCK_SIZE, chunk).is_err() {
                        chunk.fill(0);
                    }
                }
            }
            Err(e) => panic!("whole-device read failed: {e}"),
        }
        out
    }

    /// The first byte of the device memory. Valid for [`Device::len`] bytes
    /// while the device lives; never form references to it.
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.as_ptr()
    }
}

impl Medium for MemDevice {
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

impl Device for MemDevice {
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
    fn flush(&self, _off: u64, _len: u64) {}
    fn fence(&self) {
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    }
    fn mode(&self) -> PersistMode {
        PersistMode::Volatile
    }
    fn describe(&self) -> String {
        "memory (volatile, for tests)".into()
    }

    fn inject_error(&self, off: u64, len: u64) -> Result<()> {
        self.media
            .add(self, &[(off, len)], crate::FailureFlags::BACKGROUND)
    }
    fn inject_latent_error(&self, off: u64, len: u64) -> Result<()> {
        self.media.add_latent(self, off, len)
    }
    fn import_bad_ranges(&self, ranges: &[(u64, u64)]) -> Result<()> {
        self.media
            .add(self, ranges, crate::FailureFlags::BACKGROUND)
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

    fn view_source(&self) -> Option<crate::MapSource> {
        use rustix::fd::AsRawFd;
        Some(crate::MapSource {
            fd: self.fd.as_raw_fd(),
            offset: 0,
            len: self.map.len() as u64,
            map_sync: false,
            align: rustix::param::page_size() as u64,
            kind: crate::DeviceKind::File,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_from_image_and_image() {
        let dev = MemDevice::new(10000);
        assert_eq!(dev.len(), 10000);
        assert!(dev.image().iter().all(|&b| b == 0));
        dev.write(9990, &[5; 10]).unwrap();
        dev.fill(0, 3, 9).unwrap();
        let img = dev.image();
        assert_eq!(img[..4], [9, 9, 9, 0]);
        assert_eq!(img[9990..], [5; 10]);
        let copy = MemDevice::from_image(img.clone());
        assert_eq!(copy.image(), img);
        copy.write(0, &[1]).unwrap();
        assert_eq!(dev.image()[0], 9, "from_image copies");
        assert_eq!(dev.mode(), PersistMode::Volatile);
        dev.persist(0, 10000);
    }

    #[test]
    fn empty_device_and_ranges() {
        let dev = MemDevice::new(0);
        assert!(dev.is_empty());
        assert!(dev.image().is_empty());
        assert!(dev.write(0, &[1]).is_err());
        dev.write(0, &[]).unwrap();
        let dev = MemDevice::from_image(vec![1, 2, 3]);
        let mut b = [0u8; 2];
        dev.read(1, &mut b).unwrap();
        assert_eq!(b, [2, 3]);
        assert!(matches!(
            dev.read(2, &mut b),
            Err(crate::DeviceError::OutOfRange { .. })
        ));
        assert!(dev.fill(u64::MAX, 2, 0).is_err());
    }
}
