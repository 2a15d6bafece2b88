//! Allocating writes copy their data with no metadata lock held: other
//! threads' metadata operations go on meanwhile, and a write that runs out
//! of space keeps the chunks it committed.
mod common;
use common::{assert_fsck, new_fs, pattern, remount};
use daxfs::{Fs, MkfsOptions, MountOptions, OpenOptions};
use daxfs_device::{Device, MemDevice, PersistMode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// A memory device whose large writes (a write's data copy) wait at a gate
/// until the test opens it.
#[derive(Debug)]
struct GateDevice {
    mem: MemDevice,
    armed: AtomicBool,
    /// A large write left the gate before the test opened it.
    timed_out: AtomicBool,
    /// (a large write is waiting, the gate is open)
    state: Mutex<(bool, bool)>,
    cv: Condvar,
}

impl GateDevice {
    /// Waits (bounded) until a large write is at the gate.
    fn wait_for_writer(&self) -> bool {
        let g = self.state.lock().unwrap();
        let (g, _) = self
            .cv
            .wait_timeout_while(g, Duration::from_secs(60), |s| !s.0)
            .unwrap();
        g.0
    }

    fn open(&self) {
        self.state.lock().unwrap().1 = true;
        self.cv.notify_all();
    }
}

impl Device for GateDevice {
    fn len(&self) -> u64 {
        self.mem.len()
    }
    fn read(&self, off: u64, buf: &mut [u8]) -> daxfs_device::Result<()> {
        self.mem.read(off, buf)
    }
    fn write(&self, off: u64, data: &[u8]) -> daxfs_device::Result<()> {
        if data.len() >= 1 << 20 && self.armed.load(Ordering::Acquire) {
            let mut g = self.state.lock().unwrap();
            g.0 = true;
            self.cv.notify_all();
            // Bounded, so that a write holding the lock the creates need
            // ends (and the test fails) instead of hanging.
            let (g, _) = self
                .cv
                .wait_timeout_while(g, Duration::from_secs(10), |s| !s.1)
                .unwrap();
            if !g.1 {
                self.timed_out.store(true, Ordering::Release);
            }
        }
        self.mem.write(off, data)
    }
    fn fill(&self, off: u64, len: u64, byte: u8) -> daxfs_device::Result<()> {
        self.mem.fill(off, len, byte)
    }
    fn flush(&self, off: u64, len: u64) {
        self.mem.flush(off, len)
    }
    fn fence(&self) {
        self.mem.fence()
    }
    fn mode(&self) -> PersistMode {
        self.mem.mode()
    }
    fn describe(&self) -> String {
        "gated memory (tests)".into()
    }
}

/// A thread's 64 MiB write is stopped in its data copy until another
/// thread has created its files: the creates do not wait for the write.
#[test]
fn creates_finish_while_a_big_write_copies() {
    let dev = Arc::new(GateDevice {
        mem: MemDevice::new(96 << 20),
        armed: AtomicBool::new(false),
        timed_out: AtomicBool::new(false),
        state: Mutex::new((false, false)),
        cv: Condvar::new(),
    });
    Fs::mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
    let fs = Arc::new(Fs::mount(dev.clone(), &MountOptions::default()).unwrap());
    let big = fs.create("/big").unwrap();
    let data = pattern(7, 64 << 20);
    dev.armed.store(true, Ordering::Release);
    let created = Arc::new(AtomicBool::new(false));
    let writer = {
        let created = created.clone();
        let data = data.clone();
        std::thread::spawn(move || {
            let n = big.write_at(0, &data).unwrap();
            (n, created.load(Ordering::Acquire))
        })
    };
    assert!(dev.wait_for_writer(), "the write never reached its copy");
    for i in 0..20 {
        let f = fs.create(format!("/f{i}")).unwrap();
        f.write_at(0, b"small").unwrap();
    }
    created.store(true, Ordering::Release);
    dev.open();
    let (n, creates_done_first) = writer.join().unwrap();
    assert_eq!(n, data.len());
    assert!(
        creates_done_first && !dev.timed_out.load(Ordering::Acquire),
        "the creates waited for the write's data copy"
    );
    dev.armed.store(false, Ordering::Release);
    let f = fs.open("/big", &OpenOptions::read_only()).unwrap();
    let mut back = vec![0u8; data.len()];
    assert_eq!(f.read_at(0, &mut back).unwrap(), data.len());
    assert!(back == data);
    assert_eq!(fs.readdir("/").unwrap().len(), 21);
    drop(f);
    drop(fs);
    assert_fsck(&*dev);
}

/// A write larger than the free space writes what fits, chunk by chunk,
/// and returns that count (a prefix, as Linux does); the next write gets
/// ENOSPC. The prefix is durable and fsck is clean.
#[test]
fn enospc_mid_write_gives_a_prefix() {
    let (dev, fs) = new_fs(16);
    let f = fs.create("/f").unwrap();
    let data = pattern(3, 32 << 20);
    let n = f.write_at(0, &data).unwrap();
    assert!(n > 0 && n < data.len(), "wrote {n} bytes");
    assert_eq!(n % (4 << 20), 0, "a prefix of whole chunks: {n}");
    assert_eq!(f.stat().size, n as u64);
    let e = f.write_at(n as u64, &data[n..]).unwrap_err();
    assert_eq!(e.errno(), libc::ENOSPC, "{e}");
    assert_eq!(f.stat().size, n as u64);
    drop(f);
    let fs = remount(&dev, fs);
    let f = fs.open("/f", &OpenOptions::read_only()).unwrap();
    let mut back = vec![0u8; n];
    assert_eq!(f.read_at(0, &mut back).unwrap(), n);
    assert!(back[..] == data[..n]);
    drop(f);
    // Nothing the failed write reserved stays taken: the space comes back
    // whole once the file goes.
    fs.unlink("/f").unwrap();
    let g = fs.create("/g").unwrap();
    assert_eq!(g.write_at(0, &data[..n]).unwrap(), n);
    drop(g);
    drop(fs);
    assert_fsck(&*dev);
}
