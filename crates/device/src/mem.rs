//! A volatile in-memory device for tests.
use crate::{Device, PersistMode, Result, check_range};
use std::sync::Mutex;

/// A device held in process memory. Persist is a no-op.
#[derive(Debug)]
pub struct MemDevice {
    bytes: Mutex<Vec<u8>>,
}

impl MemDevice {
    /// A zero-filled device of `size` bytes.
    pub fn new(size: u64) -> Self {
        MemDevice { bytes: Mutex::new(vec![0; size as usize]) }
    }

    /// A device holding a copy of `image`.
    pub fn from_image(image: Vec<u8>) -> Self {
        MemDevice { bytes: Mutex::new(image) }
    }

    /// A copy of every byte.
    pub fn image(&self) -> Vec<u8> {
        self.bytes.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Device for MemDevice {
    fn len(&self) -> u64 {
        self.bytes.lock().unwrap_or_else(|e| e.into_inner()).len() as u64
    }
    fn read(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        let b = self.bytes.lock().unwrap_or_else(|e| e.into_inner());
        check_range(off, buf.len() as u64, b.len() as u64)?;
        buf.copy_from_slice(&b[off as usize..off as usize + buf.len()]);
        Ok(())
    }
    fn write(&self, off: u64, data: &[u8]) -> Result<()> {
        let mut b = self.bytes.lock().unwrap_or_else(|e| e.into_inner());
        check_range(off, data.len() as u64, b.len() as u64)?;
        b[off as usize..off as usize + data.len()].copy_from_slice(data);
        Ok(())
    }
    fn fill(&self, off: u64, len: u64, byte: u8) -> Result<()> {
        let mut b = self.bytes.lock().unwrap_or_else(|e| e.into_inner());
        check_range(off, len, b.len() as u64)?;
        b[off as usize..(off + len) as usize].fill(byte);
        Ok(())
    }
    fn flush(&self, _off: u64, _len: u64) {}
    fn fence(&self) {}
    fn mode(&self) -> PersistMode {
        PersistMode::Volatile
    }
    fn describe(&self) -> String {
        "memory (volatile, for tests)".into()
    }
}
