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
