//! Profiling aid: create+write(4 KiB)+fsync of many small files on /dev/shm.
use daxfs::{Fs, MkfsOptions, MountOptions};
use daxfs_device::{MmapDevice, OpenOptions};
use std::sync::Arc;
fn main() {
    let path = "/dev/shm/daxfs-smallfiles.img";
    let _ = std::fs::remove_file(path);
    let dev = Arc::new(
        MmapDevice::create(path, 512 << 20, OpenOptions::new().assume_persistent(true)).unwrap(),
    );
    Fs::mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
    let fs = Fs::mount(dev, &MountOptions::default()).unwrap();
    let n = 20000;
    let t = std::time::Instant::now();
    for i in 0..n {
        let f = fs.create(format!("/f{i}")).unwrap();
        f.write_at(0, &[7u8; 4096]).unwrap();
        f.fsync().unwrap();
    }
    println!(
        "{:.1} us per file",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );
    drop(fs);
    let _ = std::fs::remove_file(path);
}
