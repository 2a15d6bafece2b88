//! Helpers shared by the integration tests.
#![allow(dead_code)]
use daxfs::{Fs, MkfsOptions, MountOptions};
use daxfs_device::{Device, MemDevice};
use std::sync::Arc;

/// A fresh file system on a volatile device of `mib` MiB.
pub fn new_fs(mib: u64) -> (Arc<MemDevice>, Fs) {
    let dev = Arc::new(MemDevice::new(mib << 20));
    Fs::mkfs(dev.clone(), &MkfsOptions::default()).expect("mkfs");
    let fs = Fs::mount(dev.clone(), &MountOptions::default()).expect("mount");
    (dev, fs)
}

/// Unmounts and mounts again on the same device.
pub fn remount(dev: &Arc<MemDevice>, fs: Fs) -> Fs {
    drop(fs);
    Fs::mount(dev.clone(), &MountOptions::default()).expect("remount")
}

/// Runs fsck and panics with its problems unless clean.
pub fn assert_fsck(dev: &dyn Device) {
    let rep = daxfs::fsck::fsck(dev, &mut |_, _, _| {}).expect("fsck runs");
    assert!(rep.is_clean(), "fsck problems: {:#?}", rep.problems);
}

/// A deterministic pseudo-random byte pattern.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Blocks of every extent tree (nodes and replicas), by fsmap.
pub fn all_tree_blocks(fs: &Fs) -> u64 {
    fs.fsmap(0, u64::MAX)
        .expect("fsmap")
        .iter()
        .filter(|r| {
            matches!(
                &r.owner,
                daxfs::OwnerKind::File {
                    fork: "extent tree",
                    ..
                }
            )
        })
        .map(|r| r.length / 4096)
        .sum()
}
