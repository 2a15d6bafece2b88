//! Several devices of one process, made, used and dropped at once by several
//! threads, half of them with errors injected into their own media: no
//! device ever meets an error it was not given, nor another device's bytes.
//!
//! This once failed one run in two: mapping an image file tries MAP_SYNC,
//! which the kernel refuses (on a file system without DAX) only after a
//! MAP_FIXED mapping has unmapped what was at its address; tried inside the
//! device's aligned reservation, that left a hole where another thread's new
//! mapping could land, and unmapping the reservation afterwards unmapped part
//! of the other device (a "media error" there, or SIGSEGV).
use daxfs_device::{Device, MmapDevice, OpenOptions};
use std::path::PathBuf;
use std::sync::Arc;

const SIZE: u64 = 4 << 20;
const BLOCK: u64 = 4096;
const POISONED: u64 = 4;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("daxfs-side-by-side-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn errors_and_bytes_stay_in_their_own_device() {
    let threads = 6u64;
    let rounds = 60u64;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            std::thread::spawn(move || {
                let dir = scratch(&format!("t{t}"));
                let good = SIZE - POISONED * BLOCK;
                for r in 0..rounds {
                    let path = dir.join(format!("img{r}"));
                    let dev = Arc::new(
                        MmapDevice::create(&path, SIZE, OpenOptions::new()).expect("create"),
                    );
                    let poisoned = t % 2 == 0;
                    if poisoned {
                        dev.inject_error(good, POISONED * BLOCK).expect("inject");
                    }
                    let byte = (t * 16 + r % 16) as u8;
                    let pattern = vec![byte; good as usize];
                    dev.write(0, &pattern).unwrap_or_else(|e| {
                        panic!("thread {t} round {r}: writing {}: {e}", path.display())
                    });
                    let mut back = vec![0u8; good as usize];
                    dev.read(0, &mut back).unwrap_or_else(|e| {
                        panic!("thread {t} round {r}: reading {}: {e}", path.display())
                    });
                    assert!(back == pattern, "thread {t} round {r}: bytes changed");
                    let mut tail = vec![0u8; (POISONED * BLOCK) as usize];
                    assert_eq!(
                        dev.read(good, &mut tail).is_err(),
                        poisoned,
                        "thread {t} round {r}: the last blocks' state"
                    );
                    drop(dev);
                    let _ = std::fs::remove_file(&path);
                    let _ = std::fs::remove_file(daxfs_device::sidecar_path(&path));
                }
                let _ = std::fs::remove_dir_all(&dir);
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}
