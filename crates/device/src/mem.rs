//! A volatile in-memory device for tests.
//!
//! The bytes live in a private anonymous mapping owned by the device and are
//! accessed only through the raw copies of the `mmap` module, so there is no
//! lock: concurrent accesses to disjoint ranges proceed in parallel.
use crate::mmap::Mapping;
use crate::{Device, PersistMode, Result};

/// A device held in process memory. Persist is a no-op beyond ordering.
#[derive(Debug)]
pub struct MemDevice {
    map: Mapping,
}

impl MemDevice {
    /// A zero-filled device of `size` bytes.
    ///
    /// Panics when the memory cannot be mapped (like a failed allocation).
    pub fn new(size: u64) -> Self {
        let len = usize::try_from(size).expect("device size exceeds the address space");
        let map = Mapping::anonymous(len)
            .unwrap_or_else(|e| panic!("cannot map {size} bytes of memory: {e}"));
        MemDevice { map }
    }

    /// A device holding a copy of `image`.
    pub fn from_image(image: Vec<u8>) -> Self {
        let dev = MemDevice::new(image.len() as u64);
        dev.map
            .write(0, &image)
            .expect("image fits the device made for it");
        dev
    }

    /// A copy of every byte.
    pub fn image(&self) -> Vec<u8> {
        let mut out = vec![0; self.map.len()];
        self.map
            .read(0, &mut out)
            .expect("whole-device read is in range");
        out
    }

    /// The first byte of the device memory. Valid for [`Device::len`] bytes
    /// while the device lives; never form references to it.
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.as_ptr()
    }
}

impl Device for MemDevice {
    fn len(&self) -> u64 {
        self.map.len() as u64
    }
    fn read(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        self.map.read(off, buf)
    }
    fn write(&self, off: u64, data: &[u8]) -> Result<()> {
        self.map.write(off, data)
    }
    fn fill(&self, off: u64, len: u64, byte: u8) -> Result<()> {
        self.map.fill(off, len, byte)
    }

    fn write_u64(&self, off: u64, value: u64) -> Result<()> {
        self.map.write_u64(off, value)
    }

    fn read_u64(&self, off: u64) -> Result<u64> {
        self.map.read_u64(off)
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
