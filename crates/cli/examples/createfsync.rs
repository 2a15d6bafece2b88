//! Measurement aid for the commit path: create + write 4 KiB + fsync (+
//! close) of small files on an image in /dev/shm, from one thread and from
//! two threads in directories of their own and in one directory. Prints
//! the medians, the one-thread mean, and files per second.
//!
//! `cargo run --release -p daxfs-cli --example createfsync -- [FILES]
//! [pmem|msync]` (default 4000 files per thread, msync persistence).
use daxfs::{Fs, MkfsOptions, MountOptions};
use daxfs_device::{MmapDevice, OpenOptions};
use std::sync::Arc;
use std::time::Instant;

fn image(pmem: bool) -> (Fs, String) {
    let path = format!("/dev/shm/daxfs-createfsync-{}.img", std::process::id());
    let _ = std::fs::remove_file(&path);
    let dev = Arc::new(
        MmapDevice::create(
            &path,
            256 << 20,
            OpenOptions::new().assume_persistent(pmem).populate(true),
        )
        .expect("image"),
    );
    Fs::mkfs(dev.clone(), &MkfsOptions::default()).expect("mkfs");
    (
        Fs::mount(dev, &MountOptions::default()).expect("mount"),
        path,
    )
}

/// Creates, writes and fsyncs `n` files in `dir`; returns each one's time
/// in microseconds.
fn run(fs: &Fs, dir: &str, n: usize, tag: &str) -> Vec<f64> {
    let mut t = Vec::with_capacity(n);
    for i in 0..n {
        let s = Instant::now();
        let f = fs.create(format!("{dir}/{tag}{i}")).expect("create");
        f.write_at(0, &[7u8; 4096]).expect("write");
        f.fsync().expect("fsync");
        drop(f);
        t.push(s.elapsed().as_secs_f64() * 1e6);
    }
    t
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(4000);
    let pmem = args.next().as_deref() == Some("pmem");
    // One thread.
    let (fs, path) = image(pmem);
    fs.mkdir("/a", 0o755).expect("mkdir");
    let start = Instant::now();
    let mut t = run(&fs, "/a", n, "x");
    let one = n as f64 / start.elapsed().as_secs_f64();
    t.sort_by(f64::total_cmp);
    let mean = t.iter().sum::<f64>() / n as f64;
    println!(
        "1 thread:  p50 {:.1} us, mean {:.1} us, {:.0} files/s ({})",
        t[n / 2],
        mean,
        one,
        if pmem { "assume-pmem" } else { "msync" }
    );
    drop(fs);
    let _ = std::fs::remove_file(&path);
    // Two threads, each in its own directory, then both in one.
    for shared in [false, true] {
        let (fs, path) = image(pmem);
        fs.mkdir("/a", 0o755).expect("mkdir");
        fs.mkdir("/b", 0o755).expect("mkdir");
        let start = Instant::now();
        let mut t: Vec<f64> = std::thread::scope(|s| {
            let a = s.spawn(|| run(&fs, "/a", n, "x"));
            let b = s.spawn(|| run(&fs, if shared { "/a" } else { "/b" }, n, "y"));
            let mut t = a.join().expect("thread");
            t.extend(b.join().expect("thread"));
            t
        });
        let two = 2.0 * n as f64 / start.elapsed().as_secs_f64();
        t.sort_by(f64::total_cmp);
        println!(
            "2 threads, {}: p50 {:.1} us, {:.0} files/s, {:.2}x one thread",
            if shared {
                "one directory"
            } else {
                "two directories"
            },
            t[n],
            two,
            two / one
        );
        drop(fs);
        let _ = std::fs::remove_file(&path);
    }
}
