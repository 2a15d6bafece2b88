//! Several threads reading and writing disjoint ranges of each kind of
//! device at once, through the public API only.
use daxfs_device::{CrashDevice, Device, MemDevice, MmapDevice, OpenOptions, Subset};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::path::PathBuf;
use std::sync::Arc;

const THREADS: u64 = 8;
const REGION: u64 = 64 * 1024;

/// Each thread owns one region and repeatedly writes random-length runs of a
/// thread- and round-specific byte, persists them and checks what it reads
/// back, including bytes it wrote earlier.
fn hammer(dev: Arc<dyn Device>) {
    assert!(dev.len() >= THREADS * REGION);
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let dev = Arc::clone(&dev);
            std::thread::spawn(move || {
                let base = t * REGION;
                let mut mirror = vec![0u8; REGION as usize];
                let mut rng = SmallRng::seed_from_u64(t);
                for round in 0..300u32 {
                    let off = rng.random_range(0..REGION - 1);
                    let len = rng.random_range(1..=(REGION - off).min(3000));
                    let byte = (t as u8) << 4 | (round % 16) as u8;
                    if round % 3 == 0 {
                        dev.fill(base + off, len, byte).unwrap();
                    } else {
                        dev.write(base + off, &vec![byte; len as usize]).unwrap();
                    }
                    dev.persist(base + off, len);
                    mirror[off as usize..(off + len) as usize].fill(byte);
                    let check = rng.random_range(0..REGION - 512);
                    let mut buf = [0u8; 512];
                    dev.read(base + check, &mut buf).unwrap();
                    assert_eq!(buf[..], mirror[check as usize..check as usize + 512]);
                }
                let mut all = vec![0u8; REGION as usize];
                dev.read(base, &mut all).unwrap();
                assert_eq!(all, mirror, "thread {t}");
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn mem_device_concurrent_disjoint_ranges() {
    hammer(Arc::new(MemDevice::new(THREADS * REGION)));
}

#[test]
fn crash_device_concurrent_disjoint_ranges() {
    let dev = Arc::new(CrashDevice::new(THREADS * REGION));
    hammer(dev.clone());
    assert_eq!(dev.fences(), (THREADS * 300) as usize);
    // Every write was persisted right away, so the last crash image is the
    // live image whatever the subset.
    let last = dev.fences() - 1;
    assert_eq!(dev.crash_image(last, Subset::None), dev.image());
}

struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn mmap_device_concurrent_disjoint_ranges() {
    for assume_persistent in [false, true] {
        let p = TempFile(std::env::temp_dir().join(format!(
            "daxfs-device-concurrency-{}-{assume_persistent}",
            std::process::id()
        )));
        let opts = OpenOptions::new().assume_persistent(assume_persistent);
        let dev = Arc::new(MmapDevice::create(&p.0, THREADS * REGION, opts).unwrap());
        hammer(dev.clone());
        dev.take_persist_error().unwrap();
    }
}

#[test]
fn devices_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<MemDevice>();
    check::<MmapDevice>();
    check::<CrashDevice>();
}

/// A crash-test run of a few thousand fences on a 4 MiB device stays cheap
/// to record and to replay, fence by fence.
#[test]
fn crash_device_many_fences() {
    let dev = CrashDevice::new(4 << 20);
    let mut rng = SmallRng::seed_from_u64(7);
    // A "commit" protocol: data words first, persisted; then a commit word
    // naming the fence, persisted. A third word is written but never flushed.
    let mut commits = Vec::new();
    for i in 1..=1500u64 {
        let data = rng.random_range(1..(4u64 << 20) / 8 - 1) * 8;
        dev.write(data, &i.to_le_bytes()).unwrap();
        dev.persist(data, 8);
        dev.write(0, &i.to_le_bytes()).unwrap();
        dev.persist(0, 8);
        let junk = rng.random_range(1..(4u64 << 20) / 8) * 8;
        dev.write(junk, &u64::MAX.to_le_bytes()).unwrap();
        commits.push(data);
    }
    assert_eq!(dev.fences(), 3000);
    assert!(
        dev.log_bytes() < 1 << 20,
        "log of {} bytes",
        dev.log_bytes()
    );
    let mut r = dev.replay();
    while let Some(k) = r.next_fence() {
        if k % 2 == 1 {
            // After a commit fence: the commit word and its data are durable.
            let i = (k as u64).div_ceil(2);
            let img = r.image(Subset::Random(k as u64));
            let word =
                |o: u64| u64::from_le_bytes(img[o as usize..o as usize + 8].try_into().unwrap());
            assert_eq!(word(0), i);
            let data = commits[i as usize - 1];
            assert_eq!(word(data), i, "fence {k}");
        }
    }
}
