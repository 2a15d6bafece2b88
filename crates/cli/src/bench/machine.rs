//! The physical limits every daxfs figure is compared with: what one thread
//! can copy, and what a 4 KiB store made durable costs without a file system.
use super::Plan;
use super::stats::{Rng, Samples, Scratch, best_gbps, sample};
use super::workload::CHUNK;
use anyhow::{Context, Result};
use daxfs_device::{Device, MmapDevice};
use std::hint::black_box;

/// Single-thread memcpy bandwidth in GB/s from `src` to `dst`, two
/// pre-faulted buffers of the same size.
pub fn memcpy_bandwidth(src: &[u8], dst: &mut [u8], passes: usize) -> Result<f64> {
    // One untimed copy first, so the timed ones start with the TLB and the
    // memory controller in the steady state the file system sees.
    dst.copy_from_slice(src);
    black_box(&mut *dst);
    best_gbps(passes, src.len() as u64, |_| {
        dst.copy_from_slice(black_box(src));
        black_box(&mut *dst);
        Ok(())
    })
}

/// Bandwidth in GB/s of copying `src` 1 MiB at a time into one 1 MiB
/// buffer: the copy a sequential 1 MiB file read makes (the destination
/// stays in cache, so only the source streams from memory).
pub fn memcpy_read_1m(src: &[u8], passes: usize) -> Result<f64> {
    let mut dst = vec![0u8; CHUNK as usize];
    let chunks = src.len() / dst.len();
    best_gbps(passes, (chunks * dst.len()) as u64, |_| {
        for c in src.chunks_exact(dst.len()) {
            dst.copy_from_slice(black_box(c));
            black_box(&mut dst);
        }
        Ok(())
    })
}

/// Latency of one 4 KiB memcpy from a random 4 KiB-aligned place of `src`
/// into one small buffer: the access pattern of a random 4 KiB read (cold
/// source, destination hot in cache), so the source's cache misses are part
/// of the floor just as they are part of the read.
pub fn memcpy_4k(src: &[u8], plan: &Plan) -> Result<Samples> {
    const K4: usize = 4096;
    let n = plan.warm + plan.ops;
    let from = Rng::new(0x4b).offsets(n, src.len() as u64, K4 as u64);
    let mut dst = vec![0u8; K4];
    sample(plan.warm, plan.ops, |i| {
        let s = from[i] as usize;
        dst.copy_from_slice(black_box(&src[s..s + K4]));
        // Forces the copy to happen before the clock is read again.
        black_box(&mut dst);
        Ok(())
    })
}

/// What storing straight into device memory costs, with no file system.
pub struct DeviceFloor {
    /// 1 MiB writes from one buffer, each persisted, sequentially over the
    /// image: the write pattern of a sequential file write. GB/s.
    pub write_1m: f64,
    /// 4 KiB writes from one small buffer to random 4 KiB-aligned places,
    /// each persisted: the floor of a durable random 4 KiB overwrite.
    pub write_4k: Samples,
}

/// Measures [`DeviceFloor`] on a memory-mapped image written through the
/// `Device` trait, persisted as the file system persists (cache-line
/// write-back of every line written, then a store fence).
pub fn device_floor(plan: &Plan) -> Result<DeviceFloor> {
    const K4: u64 = 4096;
    let size = plan.floor_bytes;
    let scratch = Scratch::new(&plan.dir, "floor.img");
    let dev = MmapDevice::create(
        scratch.path(),
        size,
        daxfs_device::OpenOptions::new().assume_persistent(true),
    )
    .with_context(|| format!("creating {}", scratch.path().display()))?;
    // Touch every page first: the file system's figures are measured on an
    // image whose pages are already mapped, and so must the floor be.
    dev.fill(0, size, 0x5a)?;
    dev.persist(0, size);

    let chunk = vec![0x96u8; CHUNK as usize];
    let write_1m = best_gbps(plan.passes, size / CHUNK * CHUNK, |_| {
        for c in 0..size / CHUNK {
            dev.write(c * CHUNK, black_box(&chunk))?;
            dev.persist(c * CHUNK, CHUNK);
        }
        Ok(())
    })?;

    let n = plan.warm + plan.ops;
    let offs = Rng::new(0xf1).offsets(n, size, K4);
    let buf = vec![0xa5u8; K4 as usize];
    let write_4k = sample(plan.warm, plan.ops, |i| {
        dev.write(offs[i], black_box(&buf))?;
        dev.persist(offs[i], K4);
        Ok(())
    })?;
    Ok(DeviceFloor { write_1m, write_4k })
}

/// Two buffers of `bytes`, every page faulted in: a fresh `vec![0; n]` is
/// backed by the shared zero page until written, which would make the first
/// copy measure page faults instead of memory.
pub fn faulted_buffers(bytes: usize) -> (Vec<u8>, Vec<u8>) {
    let mut a = vec![0u8; bytes];
    let mut b = vec![0u8; bytes];
    a.fill(0x3c);
    b.fill(0xc3);
    (black_box(a), black_box(b))
}
