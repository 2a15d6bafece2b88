//! DAX mmap views: loads and stores straight to the device pages, copy on
//! write through faults, views kept in step with write/clone/dedupe/truncate,
//! media errors reaching every mapper. The xfstests cases they port are
//! named on each test. Tests whose process receives a signal run in a child
//! process (this binary re-run with `DAXFS_VIEWS_CHILD` set).
mod common;
use common::*;
use daxfs::{Access, FallocFlags, File, Fs, OpenOptions, PageState, View};
use daxfs_device::Device;
use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};

const BS: u64 = 4096;
const CHILD_ENV: &str = "DAXFS_VIEWS_CHILD";

fn child_scenario() -> Option<String> {
    std::env::var(CHILD_ENV).ok()
}

/// Re-runs this binary for test `test` with the scenario set; returns the
/// exit status and the output.
fn run_child(test: &str, scenario: &str) -> (std::process::ExitStatus, String) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, scenario)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, text)
}

fn file_with(fs: &Fs, path: &str, data: &[u8]) -> File {
    let f = fs.create(path).unwrap();
    f.write_at(0, data).unwrap();
    f
}

fn read_all(f: &File, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    let n = f.read_at(0, &mut b).unwrap();
    b.truncate(n);
    b
}

fn view_bytes(v: &View, off: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    v.read_at(off, &mut b).unwrap();
    b
}

/// A byte through the view's raw pointer (as an application loads it).
fn load(v: &View, off: u64) -> u8 {
    let p = v.as_ptr().wrapping_add((off - v.offset()) as usize);
    // SAFETY: inside the view, which lives; the fault handler resolves or
    // signals faults.
    unsafe { std::ptr::read_volatile(p) }
}

/// A byte stored through the view's raw pointer.
fn store(v: &View, off: u64, b: u8) {
    let p = v.as_ptr().wrapping_add((off - v.offset()) as usize);
    // SAFETY: as in `load`.
    unsafe { std::ptr::write_volatile(p, b) }
}

fn shared_dev(v: &View, off: u64) -> u64 {
    match v.page_state(off) {
        Some(PageState::ReadOnly { device_offset }) => device_offset,
        s => panic!("page at {off} is {s:?}, not a shared read-only page"),
    }
}

fn own_dev(v: &View, off: u64) -> u64 {
    match v.page_state(off) {
        Some(PageState::Writable { device_offset }) => device_offset,
        s => panic!("page at {off} is {s:?}, not writable"),
    }
}

#[test]
fn loads_and_stores_reach_the_file_and_back() {
    let (dev, fs) = new_fs(32);
    let data = pattern(1, 10 * BS as usize);
    let f = file_with(&fs, "/f", &data);
    let v = f.map(0, 12 * BS, Access::ReadWrite).unwrap();
    assert_eq!(v.len(), 12 * BS as usize);
    assert_eq!(view_bytes(&v, 0, data.len()), data);
    // Each page is the device page of the extent (no copy).
    let fm = f.fiemap().unwrap();
    for p in 0..10 {
        let e = fm
            .iter()
            .find(|e| e.logical <= p * BS && p * BS < e.logical + e.length)
            .unwrap();
        assert_eq!(own_dev(&v, p * BS), e.physical + (p * BS - e.logical));
    }
    // Stores through the view are what read() returns, at once.
    v.write_at(3 * BS + 5, b"through the view").unwrap();
    store(&v, 9 * BS + 4095, 0xee);
    let mut expect = data.clone();
    expect[3 * BS as usize + 5..3 * BS as usize + 21].copy_from_slice(b"through the view");
    expect[9 * BS as usize + 4095] = 0xee;
    assert_eq!(read_all(&f, data.len()), expect);
    // write() is what the view loads, at once.
    f.write_at(100, b"by write").unwrap();
    assert_eq!(view_bytes(&v, 100, 8), b"by write");
    assert_eq!(v.stats().faults, 0, "no fault on owned pages");
    // Pages wholly past end of file are revoked.
    assert_eq!(v.page_state(10 * BS), Some(PageState::PastEof));
    assert_eq!(v.page_state(12 * BS), None);
    v.msync(0, 12 * BS).unwrap();
    drop(v);
    drop(f);
    let fs = remount(&dev, fs);
    let f = fs.open("/f", &OpenOptions::read_only()).unwrap();
    expect[100..108].copy_from_slice(b"by write");
    assert_eq!(read_all(&f, data.len()), expect);
    // Read-only handles give read-only views only.
    assert_eq!(
        f.map(0, BS, Access::ReadWrite).unwrap_err().errno_name(),
        "EACCES"
    );
    let v = f.map(0, BS, Access::Read).unwrap();
    assert_eq!(
        v.page_state(0),
        Some(PageState::ReadOnly {
            device_offset: f.fiemap().unwrap()[0].physical
        })
    );
    assert_eq!(
        f.map(100, BS, Access::Read).unwrap_err().errno_name(),
        "EINVAL"
    );
    assert_eq!(
        f.map(0, 0, Access::Read).unwrap_err().errno_name(),
        "EINVAL"
    );
    drop(v);
    drop(f);
    drop(fs);
    assert_fsck(&*dev);
}

#[test]
fn holes_and_unwritten_extents_read_zero_and_fill_on_store() {
    let (dev, fs) = new_fs(32);
    let f = fs.create("/f").unwrap();
    f.set_len(8 * BS).unwrap();
    f.fallocate(FallocFlags::default(), 4 * BS, 2 * BS).unwrap();
    f.write_at(7 * BS, &[7u8; BS as usize]).unwrap();
    let v = f.map(0, 8 * BS, Access::ReadWrite).unwrap();
    assert_eq!(v.page_state(0), Some(PageState::Zero));
    assert_eq!(v.page_state(4 * BS), Some(PageState::Zero));
    assert!(view_bytes(&v, 0, 7 * BS as usize).iter().all(|&b| b == 0));
    // A store into a hole allocates a zeroed block; into an unwritten
    // extent converts it.
    store(&v, 2 * BS + 10, 1);
    store(&v, 5 * BS + 20, 2);
    own_dev(&v, 2 * BS);
    own_dev(&v, 5 * BS);
    assert_eq!(v.stats().block_faults, 2);
    let got = read_all(&f, 8 * BS as usize);
    let mut expect = vec![0u8; 8 * BS as usize];
    expect[2 * BS as usize + 10] = 1;
    expect[5 * BS as usize + 20] = 2;
    expect[7 * BS as usize..].fill(7);
    assert_eq!(got, expect);
    let fm = f.fiemap().unwrap();
    assert!(
        fm.iter()
            .any(|e| e.logical <= 5 * BS && 5 * BS < e.logical + e.length && !e.unwritten)
    );
    drop(v);
    drop(f);
    drop(fs);
    assert_fsck(&*dev);
}

/// Reflinked files: their views share the device page until one stores; the
/// writer gets its own copy, the other keeps the old bytes.
#[test]
fn reflinked_views_share_pages_until_one_writes() {
    let (dev, fs) = new_fs(32);
    let data = pattern(2, 4 * BS as usize);
    let a = file_with(&fs, "/a", &data);
    let b = fs.create("/b").unwrap();
    b.clone_from(&a).unwrap();
    let va = a.map(0, 4 * BS, Access::ReadWrite).unwrap();
    let vb = b.map(0, 4 * BS, Access::ReadWrite).unwrap();
    for p in 0..4 {
        assert_eq!(shared_dev(&va, p * BS), shared_dev(&vb, p * BS));
    }
    // The page frames are the same too (when this process may see them).
    let pfn_a = pfn(&va, BS);
    let pfn_b = pfn(&vb, BS);
    if let (Some(x), Some(y)) = (pfn_a, pfn_b) {
        assert_eq!(x, y, "reflinked views map one page frame");
        eprintln!("page frames compared: {x:#x}");
    }
    let shared_at = shared_dev(&va, BS);
    store(&va, BS + 1, 0x5a);
    let own = own_dev(&va, BS);
    assert_ne!(own, shared_at);
    assert_eq!(
        shared_dev(&vb, BS),
        shared_at,
        "the other file keeps the page"
    );
    if let (Some(x), Some(y)) = (pfn(&va, BS), pfn(&vb, BS)) {
        assert_ne!(x, y, "the writer has a page of its own now");
    }
    assert_eq!(load(&vb, BS + 1), data[BS as usize + 1]);
    assert_eq!(view_bytes(&vb, 0, data.len()), data);
    let mut expect = data.clone();
    expect[BS as usize + 1] = 0x5a;
    assert_eq!(read_all(&a, data.len()), expect);
    assert_eq!(read_all(&b, data.len()), data);
    // Only that page was copied.
    assert_eq!(shared_dev(&va, 0), shared_dev(&vb, 0));
    // The other file's page is its own now: its store needs no copy.
    store(&vb, BS, 0x11);
    assert_eq!(own_dev(&vb, BS), shared_at);
    assert_eq!(vb.stats().block_faults, 0);
    drop((va, vb, a, b));
    drop(fs);
    assert_fsck(&*dev);
}

/// The page frame behind a view address, from /proc/self/pagemap (None when
/// this process may not see frame numbers).
fn pfn(v: &View, off: u64) -> Option<u64> {
    use std::io::{Read, Seek, SeekFrom};
    let _ = load(v, off);
    let addr = v.as_ptr() as u64 + (off - v.offset());
    let mut f = std::fs::File::open("/proc/self/pagemap").ok()?;
    f.seek(SeekFrom::Start(addr / 4096 * 8)).ok()?;
    let mut b = [0u8; 8];
    f.read_exact(&mut b).ok()?;
    let e = u64::from_le_bytes(b);
    let frame = e & ((1 << 55) - 1);
    (e >> 63 == 1 && frame != 0).then_some(frame)
}

/// generic/578 with views: stores through views of 8 reflinked files into
/// every copy of a shared block change each file's own bytes and no other
/// file's; the contents hold after remount.
#[test]
fn generic_578_stores_into_every_copy_of_a_shared_block() {
    let (dev, fs) = new_fs(64);
    let n = 8;
    let pages = 6u64;
    let data = pattern(578, (pages * BS) as usize);
    let files: Vec<File> = (0..n)
        .map(|i| {
            let f = fs.create(format!("/f{i}")).unwrap();
            if i == 0 {
                f.write_at(0, &data).unwrap();
            }
            f
        })
        .collect();
    for f in &files[1..] {
        f.clone_from(&files[0]).unwrap();
    }
    let views: Vec<View> = files
        .iter()
        .map(|f| f.map(0, pages * BS, Access::ReadWrite).unwrap())
        .collect();
    let shared = shared_dev(&views[0], 2 * BS);
    let mut expect: Vec<Vec<u8>> = vec![data.clone(); n];
    for (i, v) in views.iter().enumerate() {
        // Every file writes its own marker into the shared block.
        let marker = vec![0x10 + i as u8; 1000];
        v.write_at(2 * BS + 500, &marker).unwrap();
        expect[i][2 * BS as usize + 500..2 * BS as usize + 1500].copy_from_slice(&marker);
        for (j, f) in files.iter().enumerate() {
            assert_eq!(
                read_all(f, data.len()),
                expect[j],
                "file {j} after store {i}"
            );
            assert_eq!(view_bytes(&views[j], 0, data.len()), expect[j]);
        }
    }
    // Each file has a block of its own there now; the last writer may
    // keep the old one (it was its last owner).
    let mut devs: Vec<u64> = views.iter().map(|v| own_dev(v, 2 * BS)).collect();
    devs.sort_unstable();
    devs.dedup();
    assert_eq!(devs.len(), n);
    assert!(devs.contains(&shared));
    for v in &views {
        v.msync(0, pages * BS).unwrap();
    }
    drop(views);
    drop(files);
    let fs = remount(&dev, fs);
    for (i, e) in expect.iter().enumerate() {
        let f = fs
            .open(format!("/f{i}"), &OpenOptions::read_only())
            .unwrap();
        assert_eq!(&read_all(&f, data.len()), e, "file {i} after remount");
        let v = f.map(0, pages * BS, Access::Read).unwrap();
        assert_eq!(&view_bytes(&v, 0, data.len()), e);
    }
    drop(fs);
    assert_fsck(&*dev);
}

/// generic/140 with a view: copy on write at the start, the middle and the
/// end (a partial last page) of a reflinked file.
#[test]
fn generic_140_copy_on_write_at_start_middle_and_end() {
    let (dev, fs) = new_fs(32);
    let size = 16 * BS + 1000;
    let data = pattern(140, size as usize);
    let a = file_with(&fs, "/a", &data);
    let b = fs.create("/b").unwrap();
    b.clone_from(&a).unwrap();
    let v = b.map(0, 17 * BS, Access::ReadWrite).unwrap();
    let mut expect = data.clone();
    for off in [0, 8 * BS + 77, 16 * BS + 999] {
        store(&v, off, !data[off as usize]);
        expect[off as usize] = !data[off as usize];
        own_dev(&v, off);
    }
    assert_eq!(v.stats().block_faults, 3);
    assert_eq!(read_all(&b, size as usize), expect);
    assert_eq!(read_all(&a, size as usize), data);
    // Untouched pages are still shared.
    assert_eq!(
        shared_dev(&v, 4 * BS),
        a.fiemap().unwrap()[0].physical + 4 * BS
    );
    drop(v);
    drop((a, b));
    let fs = remount(&dev, fs);
    let b = fs.open("/b", &OpenOptions::read_only()).unwrap();
    assert_eq!(read_all(&b, size as usize), expect);
    drop(b);
    drop(fs);
    assert_fsck(&*dev);
}

/// generic/657 to 666 with a view: one view spanning a hole, an unwritten
/// extent, a shared extent and a plain one, written everywhere.
#[test]
fn generic_657_666_view_over_every_kind_of_extent() {
    let (dev, fs) = new_fs(32);
    let other = file_with(&fs, "/other", &pattern(9, 4 * BS as usize));
    let f = fs.create("/f").unwrap();
    f.write_at(0, &pattern(8, 4 * BS as usize)).unwrap(); // plain 0..4
    f.fallocate(FallocFlags::default(), 8 * BS, 4 * BS).unwrap(); // unwritten 8..12
    f.clone_range(&other, 0, 12 * BS, 4 * BS).unwrap(); // shared 12..16, hole 4..8
    let v = f.map(0, 16 * BS, Access::ReadWrite).unwrap();
    assert!(matches!(v.page_state(0), Some(PageState::Writable { .. })));
    assert_eq!(v.page_state(5 * BS), Some(PageState::Zero));
    assert_eq!(v.page_state(9 * BS), Some(PageState::Zero));
    assert!(matches!(
        v.page_state(13 * BS),
        Some(PageState::ReadOnly { .. })
    ));
    let mut expect = read_all(&f, 16 * BS as usize);
    for p in 0..16u64 {
        let off = p * BS + (p * 131) % BS;
        let bytes = vec![0xa0 + p as u8; 300.min((BS - off % BS) as usize)];
        v.write_at(off, &bytes).unwrap();
        expect[off as usize..off as usize + bytes.len()].copy_from_slice(&bytes);
    }
    assert_eq!(read_all(&f, 16 * BS as usize), expect);
    assert_eq!(view_bytes(&v, 0, 16 * BS as usize), expect);
    assert_eq!(
        read_all(&other, 4 * BS as usize),
        pattern(9, 4 * BS as usize)
    );
    for e in f.fiemap().unwrap() {
        assert!(!e.unwritten && !e.shared, "{e:?}");
    }
    for p in 0..16 {
        own_dev(&v, p * BS);
    }
    assert_eq!(v.stats().block_faults, 12);
    drop(v);
    drop((f, other));
    drop(fs);
    assert_fsck(&*dev);
}

/// write(), clone and dedupe onto a mapped file remap its views.
#[test]
fn write_clone_and_dedupe_remap_the_views() {
    let (dev, fs) = new_fs(32);
    let a = file_with(&fs, "/a", &pattern(1, 4 * BS as usize));
    let b = fs.create("/b").unwrap();
    b.clone_from(&a).unwrap();
    let va = a.map(0, 4 * BS, Access::ReadWrite).unwrap();
    let vb = b.map(0, 4 * BS, Access::Read).unwrap();
    // write() copies A's shared block: A's view follows, B's does not.
    a.write_at(BS, b"written").unwrap();
    assert_eq!(view_bytes(&va, BS, 7), b"written");
    let a_dev = own_dev(&va, BS);
    assert_eq!(
        a_dev,
        a.fiemap()
            .unwrap()
            .iter()
            .find(|e| e.logical == BS)
            .unwrap()
            .physical
    );
    assert_eq!(
        view_bytes(&vb, 0, 4 * BS as usize),
        pattern(1, 4 * BS as usize)
    );
    // A clone onto mapped B: B's view shows the source.
    let c = file_with(&fs, "/c", &pattern(3, 2 * BS as usize));
    b.clone_range(&c, 0, 2 * BS, 2 * BS).unwrap();
    assert_eq!(
        view_bytes(&vb, 2 * BS, 2 * BS as usize),
        pattern(3, 2 * BS as usize)
    );
    let vc = c.map(0, 2 * BS, Access::ReadWrite).unwrap();
    assert_eq!(shared_dev(&vc, 0), shared_dev(&vb, 2 * BS));
    // The clone's source was mapped writable: it is read-only now, and a
    // store copies it.
    store(&vc, 0, 0xff);
    assert_eq!(view_bytes(&vb, 2 * BS, 1), pattern(3, 1));
    // Dedupe: A's page 0 and a copy of it in D; D's view follows.
    let d = file_with(&fs, "/d", &view_bytes(&va, 0, BS as usize));
    let vd = d.map(0, BS, Access::ReadWrite).unwrap();
    let before = own_dev(&vd, 0);
    let r = a.dedupe_range(0, BS, &[(&d, 0)]).unwrap();
    assert_eq!(r[0].status, daxfs::DedupeStatus::Same);
    assert_ne!(shared_dev(&vd, 0), before);
    assert_eq!(shared_dev(&vd, 0), shared_dev(&va, 0));
    // Truncation and growth.
    b.set_len(BS).unwrap();
    assert_eq!(vb.page_state(2 * BS), Some(PageState::PastEof));
    b.set_len(3 * BS).unwrap();
    assert_eq!(vb.page_state(2 * BS), Some(PageState::Zero));
    assert_eq!(
        view_bytes(&vb, BS, 2 * BS as usize),
        vec![0; 2 * BS as usize]
    );
    // Punching a hole.
    let punch = FallocFlags {
        punch_hole: true,
        keep_size: true,
        ..Default::default()
    };
    a.fallocate(punch, 2 * BS, BS).unwrap();
    assert_eq!(va.page_state(2 * BS), Some(PageState::Zero));
    assert_eq!(view_bytes(&va, 2 * BS, 8), vec![0; 8]);
    drop((va, vb, vc, vd));
    drop((a, b, c, d));
    drop(fs);
    assert_fsck(&*dev);
}

/// Two views of one file fault on one shared page at once: it is copied
/// once. Views of two files sharing a page each get their own copy.
#[test]
fn concurrent_faults_resolve_once_per_file() {
    let (dev, fs) = new_fs(32);
    let data = pattern(5, 2 * BS as usize);
    let a = file_with(&fs, "/a", &data);
    let b = fs.create("/b").unwrap();
    b.clone_from(&a).unwrap();
    let c = fs.create("/c").unwrap();
    c.clone_from(&a).unwrap();
    for round in 0..20u64 {
        let off = (round % 2) * BS;
        // Make the page shared again.
        b.clone_range(&a, off, off, BS).unwrap();
        c.clone_range(&a, off, off, BS).unwrap();
        let views: Vec<View> = [&b, &b, &c, &c]
            .iter()
            .map(|f| f.map(0, 2 * BS, Access::ReadWrite).unwrap())
            .collect();
        let old = shared_dev(&views[0], off);
        let barrier = Barrier::new(views.len());
        std::thread::scope(|s| {
            for (i, v) in views.iter().enumerate() {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    store(v, off + 8 * i as u64, i as u8 + 1);
                });
            }
        });
        let copies: u64 = views.iter().map(|v| v.stats().block_faults).sum();
        assert_eq!(copies, 2, "round {round}: one copy per file");
        let (b_dev, c_dev) = (own_dev(&views[0], off), own_dev(&views[2], off));
        assert_eq!(own_dev(&views[1], off), b_dev);
        assert_eq!(own_dev(&views[3], off), c_dev);
        assert!(b_dev != c_dev && b_dev != old && c_dev != old);
        let page = |f: &File| {
            let mut p = vec![0u8; BS as usize];
            f.read_at(off, &mut p).unwrap();
            p
        };
        let (pb, pc) = (page(&b), page(&c));
        assert_eq!(
            (pb[0], pb[8], pb[16], pb[24]),
            (1, 2, data[off as usize + 16], data[off as usize + 24])
        );
        assert_eq!(
            (pc[0], pc[8], pc[16], pc[24]),
            (data[off as usize], data[off as usize + 8], 3, 4)
        );
        assert_eq!(page(&a), data[off as usize..(off + BS) as usize]);
    }
    drop((a, b, c));
    drop(fs);
    assert_fsck(&*dev);
}

/// A store into a 2 MiB shared extent mapped 2 MiB aligned copies the whole
/// huge page in one fault.
#[test]
fn huge_page_copy_on_write() {
    let (dev, fs) = new_fs(64);
    let size = 4u64 << 20;
    let data = pattern(2, size as usize);
    let a = file_with(&fs, "/a", &data);
    let phys = a.fiemap().unwrap()[0].physical;
    assert_eq!(phys % (2 << 20), 0, "large writes start 2 MiB aligned");
    let b = fs.create("/b").unwrap();
    b.clone_from(&a).unwrap();
    let v = b.map(0, size, Access::ReadWrite).unwrap();
    assert_eq!(v.as_ptr() as u64 % (2 << 20), 0);
    store(&v, (2 << 20) + 12345, 0x77);
    assert_eq!(v.stats().block_faults, 1);
    let new = own_dev(&v, 2 << 20);
    assert_eq!(new % (2 << 20), 0, "the copy is huge-page aligned");
    for p in 512..1024u64 {
        assert_eq!(own_dev(&v, p * BS), new + (p - 512) * BS);
    }
    assert_eq!(shared_dev(&v, 0), phys);
    let mut expect = data.clone();
    expect[(2 << 20) + 12345] = 0x77;
    assert_eq!(read_all(&b, size as usize), expect);
    assert_eq!(read_all(&a, size as usize), data);
    // With huge faults off, one page is copied.
    v.set_huge_faults(false);
    store(&v, 4096 * 3, 1);
    assert_eq!(v.stats().block_faults, 2);
    assert!(matches!(
        v.page_state(4 * BS),
        Some(PageState::ReadOnly { .. })
    ));
    drop(v);
    drop((a, b));
    drop(fs);
    assert_fsck(&*dev);
}

/// Views of a file on an image file (the usual device), persisted by msync
/// and fsync: the image as a kill leaves it (no unmount) holds both stores.
#[test]
fn views_of_an_image_file_persist_with_msync() {
    let path = std::env::temp_dir().join(format!("daxfs-views-{}.img", std::process::id()));
    let _ = std::fs::remove_file(&path);
    struct Rm(std::path::PathBuf);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
            let _ = std::fs::remove_file(daxfs_device::sidecar_path(&self.0));
        }
    }
    let _rm = Rm(path.clone());
    let open = || -> Arc<dyn Device> {
        Arc::new(daxfs_device::MmapDevice::open(&path, daxfs_device::OpenOptions::new()).unwrap())
    };
    let (after_msync, killed) = {
        let dev: Arc<dyn Device> = Arc::new(
            daxfs_device::MmapDevice::create(&path, 4 << 20, daxfs_device::OpenOptions::new())
                .unwrap(),
        );
        Fs::mkfs(dev.clone(), &daxfs::MkfsOptions::default()).unwrap();
        let fs = Fs::mount(dev, &daxfs::MountOptions::default()).unwrap();
        let a = file_with(&fs, "/a", &pattern(4, 3 * BS as usize));
        let b = fs.create("/b").unwrap();
        b.clone_from(&a).unwrap();
        let v = b.map(0, 3 * BS, Access::ReadWrite).unwrap();
        v.write_at(BS + 7, b"persisted").unwrap();
        v.msync(BS, BS).unwrap();
        // Killed here: the image holds what the process stored (the file's
        // pages), not what unmounting (or the next transaction, or the
        // resolvers' idle flush 2 ms on) writes.
        let after_msync = std::fs::read(&path).unwrap();
        v.write_at(2 * BS, b"by fsync").unwrap();
        b.fsync().unwrap();
        let killed = std::fs::read(&path).unwrap();
        assert_eq!(shared_dev(&v, 0), a.fiemap().unwrap()[0].physical);
        (after_msync, killed)
    };
    let check = |dev: Arc<dyn Device>, fsynced: bool| {
        let fs = Fs::mount(dev, &daxfs::MountOptions::default()).unwrap();
        let b = fs.open("/b", &OpenOptions::read_only()).unwrap();
        let mut expect = pattern(4, 3 * BS as usize);
        expect[BS as usize + 7..BS as usize + 16].copy_from_slice(b"persisted");
        if fsynced {
            expect[2 * BS as usize..2 * BS as usize + 8].copy_from_slice(b"by fsync");
        }
        assert_eq!(read_all(&b, 3 * BS as usize), expect);
    };
    check(
        Arc::new(daxfs_device::MemDevice::from_image(after_msync)),
        false,
    );
    check(Arc::new(daxfs_device::MemDevice::from_image(killed)), true);
    check(open(), true);
}

// ---- Signals (in child processes) ----

/// The address the next SIGBUS must report.
static EXPECT_ADDR: AtomicUsize = AtomicUsize::new(0);

/// SIGBUS handler of the child scenarios: exits with 100 + si_code when
/// si_addr is the expected address, 200 + si_code otherwise.
extern "C" fn exit_on_sigbus(_sig: i32, info: *mut libc::siginfo_t, _ctx: *mut std::ffi::c_void) {
    // SAFETY: the kernel's (or the dispatcher's) siginfo for a SA_SIGINFO
    // handler; `_exit` is async-signal-safe.
    unsafe {
        let code = (*info).si_code;
        let ok = (*info).si_addr() as usize == EXPECT_ADDR.load(Ordering::SeqCst);
        libc::_exit(if ok { 100 + code } else { 200 + code });
    }
}

fn install_sigbus_handler() {
    // SAFETY: installs a SA_SIGINFO handler with the matching signature.
    unsafe {
        let mut a: libc::sigaction = std::mem::zeroed();
        a.sa_sigaction = exit_on_sigbus as *const () as usize;
        a.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut a.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGBUS, &a, std::ptr::null_mut()), 0);
    }
}

fn addr_of(v: &View, off: u64) -> usize {
    v.as_ptr() as usize + (off - v.offset()) as usize
}

const BUS_ADRERR: i32 = 2;
const BUS_MCEERR_AR: i32 = 4;

/// Truncation revokes the pages past the new end: touching one is SIGBUS
/// (BUS_ADRERR), as on Linux; the page holding the new end stays.
#[test]
fn truncation_revokes_pages_past_the_end() {
    if child_scenario().as_deref() == Some("truncate") {
        let (_dev, fs) = new_fs(16);
        let data = pattern(3, 4 * BS as usize);
        let f = file_with(&fs, "/t", &data);
        let v = f.map(0, 4 * BS, Access::ReadWrite).unwrap();
        f.set_len(BS + 100).unwrap();
        assert!(matches!(v.page_state(BS), Some(PageState::Writable { .. })));
        assert_eq!(v.page_state(2 * BS), Some(PageState::PastEof));
        assert_eq!(load(&v, BS + 50), data[BS as usize + 50]);
        // The freed blocks go to another file; the view cannot reach them.
        let g = file_with(&fs, "/g", &[0x99; 3 * BS as usize]);
        assert_eq!(v.page_state(3 * BS), Some(PageState::PastEof));
        drop(g);
        println!("checks ok");
        install_sigbus_handler();
        EXPECT_ADDR.store(addr_of(&v, 2 * BS + 8), Ordering::SeqCst);
        let x = load(&v, 2 * BS + 8);
        println!("unreachable {x}");
        std::process::exit(0);
    }
    let (status, out) = run_child("truncation_revokes_pages_past_the_end", "truncate");
    assert!(out.contains("checks ok"), "{out}");
    assert_eq!(status.code(), Some(100 + BUS_ADRERR), "{status:?}\n{out}");
}

/// A store fault that needs a block (a hole, or a shared page) on a full
/// device cannot get one: SIGBUS (BUS_ADRERR at the address), as Linux
/// gives for a DAX mapping it cannot allocate for.
#[test]
fn store_fault_on_a_full_device_is_sigbus() {
    if child_scenario().as_deref() == Some("full") {
        let (_dev, fs) = new_fs(16);
        let data = pattern(4, BS as usize);
        let s = file_with(&fs, "/s", &data);
        let c = fs.create("/c").unwrap();
        c.clone_from(&s).unwrap();
        let v = c.map(0, BS, Access::ReadWrite).unwrap();
        let mut n = 0;
        loop {
            let Ok(f) = fs.create(format!("/f{n}")) else {
                break;
            };
            if f.write_at(0, b"x").is_err() {
                break;
            }
            n += 1;
        }
        assert!(n > 100, "{n} files");
        assert!(c.write_at(0, b"y").is_err(), "the device is full");
        let h = fs.create("/h").unwrap();
        h.set_len(1 << 20).unwrap();
        let w = h.map(0, 1 << 20, Access::ReadWrite).unwrap();
        println!("checks ok");
        install_sigbus_handler();
        // Writes keep headroom; store faults into holes take what is left
        // above the reserve, and the first that finds none is SIGBUS.
        for page in 0..256 {
            EXPECT_ADDR.store(addr_of(&w, page * BS), Ordering::SeqCst);
            store(&w, page * BS, 1);
        }
        EXPECT_ADDR.store(addr_of(&v, 8), Ordering::SeqCst);
        store(&v, 8, 0x55);
        println!("unreachable");
        std::process::exit(0);
    }
    let (status, out) = run_child("store_fault_on_a_full_device_is_sigbus", "full");
    assert!(out.contains("checks ok"), "{out}");
    assert_eq!(status.code(), Some(100 + BUS_ADRERR), "{status:?}\n{out}");
}

/// xfs/550, 551 and 552 with two views standing in for two processes: a
/// page shared by two files goes bad. Both views have it revoked and are
/// told; the view whose load (550) or store (551) hits it gets SIGBUS
/// BUS_MCEERR_AR at the page, as does the other file's view (552);
/// unshared neighbouring pages keep working.
#[test]
fn xfs_550_551_552_media_error_in_a_shared_page() {
    if let Some(s @ ("550" | "551" | "552")) = child_scenario().as_deref() {
        let (_dev, fs) = new_fs(16);
        let data = pattern(550, 3 * BS as usize);
        let a = file_with(&fs, "/a", &data);
        let b = fs.create("/b").unwrap();
        b.clone_from(&a).unwrap();
        // Only the middle page stays shared.
        b.write_at(0, &[1; BS as usize]).unwrap();
        b.write_at(2 * BS, &[2; BS as usize]).unwrap();
        let va = a.map(0, 3 * BS, Access::ReadWrite).unwrap();
        let vb = b.map(0, 3 * BS, Access::ReadWrite).unwrap();
        let told = Arc::new(Mutex::new(vec![]));
        for (name, v) in [("a", &va), ("b", &vb)] {
            let t = told.clone();
            v.on_media_error(move |n| t.lock().unwrap().push((name, n.clone())));
        }
        let bad = shared_dev(&va, BS);
        assert_eq!(shared_dev(&vb, BS), bad);
        fs.inject_error(bad, BS).unwrap();
        let mut t = told.lock().unwrap().clone();
        t.sort_by_key(|x| x.0);
        assert_eq!(t.len(), 2, "{t:?}");
        for ((name, n), f) in t.iter().zip([&a, &b]) {
            assert_eq!((n.ino, n.offset, n.length), (f.ino(), BS, BS), "{name}");
            assert!(!n.action_required);
        }
        assert_eq!(va.take_media_errors().len(), 1);
        for v in [&va, &vb] {
            assert!(!matches!(
                v.page_state(BS),
                Some(PageState::ReadOnly { .. } | PageState::Writable { .. })
            ));
            // Neighbours keep working.
            assert_eq!(load(v, 10), if v.ino() == a.ino() { data[10] } else { 1 });
            store(v, 2 * BS + 5, 0x42);
            assert_eq!(load(v, 2 * BS + 5), 0x42);
        }
        println!("checks ok");
        install_sigbus_handler();
        let (v, write) = match s {
            "550" => (&va, false),
            "551" => (&va, true),
            _ => (&vb, false),
        };
        EXPECT_ADDR.store(addr_of(v, BS), Ordering::SeqCst);
        if write {
            store(v, BS + 100, 1);
        } else {
            let x = load(v, BS + 100);
            println!("unreachable {x}");
        }
        println!("unreachable");
        std::process::exit(0);
    }
    for s in ["550", "551", "552"] {
        let (status, out) = run_child("xfs_550_551_552_media_error_in_a_shared_page", s);
        assert!(out.contains("checks ok"), "{s}: {out}");
        assert_eq!(
            status.code(),
            Some(100 + BUS_MCEERR_AR),
            "{s}: {status:?}\n{out}"
        );
    }
}

/// An unrelated segmentation fault still kills the process with SIGSEGV
/// once views exist; so does a store to a read-only view.
#[test]
fn unrelated_segfaults_still_kill() {
    if let Some(s @ ("stray" | "readonly")) = child_scenario().as_deref() {
        let (_dev, fs) = new_fs(16);
        let f = file_with(&fs, "/f", &pattern(1, 2 * BS as usize));
        let ro = fs.open("/f", &OpenOptions::read_only()).unwrap();
        let v = f.map(0, 2 * BS, Access::ReadWrite).unwrap();
        let r = ro.map(0, 2 * BS, Access::Read).unwrap();
        store(&v, 0, 1);
        assert_eq!(load(&r, 0), 1);
        println!("views work");
        if s == "stray" {
            // SAFETY: a fresh inaccessible anonymous page.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_NONE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            // SAFETY: deliberately faults: the test checks the process
            // dies of SIGSEGV.
            let x = unsafe { std::ptr::read_volatile(p.cast::<u8>()) };
            println!("unreachable {x}");
        } else {
            store(&r, 5, 1);
            println!("unreachable");
        }
        std::process::exit(0);
    }
    for s in ["stray", "readonly"] {
        let (status, out) = run_child("unrelated_segfaults_still_kill", s);
        assert!(out.contains("views work"), "{s}: {out}");
        assert_eq!(
            status.signal(),
            Some(libc::SIGSEGV),
            "{s}: {status:?}\n{out}"
        );
    }
}

// ---- Races ----

fn word(round: u64, page: u64, w: u64) -> u64 {
    (round << 32) | (page << 16) | w
}

fn atomic_at(v: &View, off: u64) -> &std::sync::atomic::AtomicU64 {
    let p = v.as_ptr().wrapping_add((off - v.offset()) as usize);
    // SAFETY: 8-aligned, inside the view, which outlives the borrow;
    // every access to view memory in these tests is atomic.
    unsafe { std::sync::atomic::AtomicU64::from_ptr(p.cast::<u64>()) }
}

/// Checks that `bytes` (file offset 0) hold well-formed words of rounds up
/// to `max_round`.
fn check_words(bytes: &[u8], max_round: u64, what: &str) {
    for (i, c) in bytes.chunks_exact(8).enumerate() {
        let x = u64::from_le_bytes(c.try_into().unwrap());
        let (page, w) = (i as u64 / 512, i as u64 % 512);
        assert!(
            x & 0xffff_ffff == word(0, page, w) && x >> 32 <= max_round,
            "{what}: word {i} is {x:#x}"
        );
    }
}

/// generic/670 to 672 and 630 with views: threads storing through a view
/// and loading through another race clones and dedupes of the file. No
/// store is lost (loads never go back to an older round, the file ends
/// with the last round), no store leaks into a block another file shares
/// (clones and dedupe targets keep the bytes they got), nothing is torn
/// (every word is whole).
#[test]
fn generic_670_672_630_clone_and_dedupe_race_view_stores() {
    let (dev, fs) = new_fs(64);
    let pages = 16u64;
    let len = pages * BS;
    let init: Vec<u8> = (0..len / 8)
        .flat_map(|i| word(0, i / 512, i % 512).to_le_bytes())
        .collect();
    let a = file_with(&fs, "/a", &init);
    let ro = fs.open("/a", &OpenOptions::read_only()).unwrap();
    let targets: Vec<File> = (0..3)
        .map(|i| fs.create(format!("/b{i}")).unwrap())
        .collect();
    let dd = fs.create("/dd").unwrap();
    let va = a.map(0, len, Access::ReadWrite).unwrap();
    let vr = ro.map(0, len, Access::Read).unwrap();
    let done_round = AtomicU64::new(0);
    let started_round = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let snapshots: Mutex<Vec<(String, Vec<u8>)>> = Mutex::new(vec![]);
    let deduped = AtomicU64::new(0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(1500);
    std::thread::scope(|s| {
        // The writer: whole rounds of words through the view.
        s.spawn(|| {
            let mut r = 0;
            while !stop.load(Ordering::SeqCst) {
                r += 1;
                started_round.store(r, Ordering::SeqCst);
                for p in 0..pages {
                    for w in 0..512 {
                        atomic_at(&va, p * BS + w * 8).store(word(r, p, w), Ordering::Relaxed);
                    }
                }
                done_round.store(r, Ordering::SeqCst);
            }
        });
        // The reader: loads through a read-only view never go back.
        s.spawn(|| {
            while !stop.load(Ordering::SeqCst) {
                let floor = done_round.load(Ordering::SeqCst);
                for p in 0..pages {
                    for w in (0..512).step_by(37) {
                        let x = atomic_at(&vr, p * BS + w * 8).load(Ordering::Relaxed);
                        let ceil = started_round.load(Ordering::SeqCst);
                        assert_eq!(x & 0xffff_ffff, word(0, p, w), "torn word {x:#x}");
                        assert!(
                            floor <= x >> 32 && x >> 32 <= ceil,
                            "page {p} word {w}: round {} outside [{floor}, {ceil}]",
                            x >> 32
                        );
                    }
                }
            }
        });
        // Clones and dedupes of the file being stored into.
        s.spawn(|| {
            let mut i = 0;
            while std::time::Instant::now() < deadline {
                let t = &targets[i % targets.len()];
                t.clone_range(&a, 0, 0, len).unwrap();
                let mut got = vec![0u8; len as usize];
                t.read_at(0, &mut got).unwrap();
                check_words(&got, started_round.load(Ordering::SeqCst), "clone");
                snapshots
                    .lock()
                    .unwrap()
                    .push((format!("/b{}", i % targets.len()), got));
                // Dedupe against a copy: shares only if nothing changed.
                let mut copy = vec![0u8; len as usize];
                a.read_at(0, &mut copy).unwrap();
                dd.write_at(0, &copy).unwrap();
                let r = a.dedupe_range(0, len, &[(&dd, 0)]).unwrap();
                let mut after = vec![0u8; len as usize];
                dd.read_at(0, &mut after).unwrap();
                assert_eq!(after, copy, "dedupe changed the target's bytes");
                if r[0].status == daxfs::DedupeStatus::Same {
                    deduped.fetch_add(1, Ordering::SeqCst);
                }
                snapshots.lock().unwrap().push(("/dd".into(), after));
                i += 1;
            }
            stop.store(true, Ordering::SeqCst);
        });
        // Every shared copy keeps its bytes while the writer stores on.
        s.spawn(|| {
            while !stop.load(Ordering::SeqCst) {
                let snaps = snapshots.lock().unwrap().clone();
                let mut latest = std::collections::HashMap::new();
                for (p, b) in snaps {
                    latest.insert(p, b);
                }
                for (p, b) in latest {
                    let f = fs.open(&p, &OpenOptions::read_only()).unwrap();
                    let mut got = vec![0u8; len as usize];
                    f.read_at(0, &mut got).unwrap();
                    // A target may have been cloned again since the
                    // snapshot was taken: only check that it is whole.
                    check_words(&got, started_round.load(Ordering::SeqCst), &p);
                    let _ = b;
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        });
    });
    let last = done_round.load(Ordering::SeqCst);
    assert!(last > 2, "the writer made progress ({last} rounds)");
    let expect: Vec<u8> = (0..len / 8)
        .flat_map(|i| word(last, i / 512, i % 512).to_le_bytes())
        .collect();
    assert_eq!(read_all(&a, len as usize), expect, "no store lost");
    // The last snapshot of each copy is what it holds now.
    let snaps = snapshots.into_inner().unwrap();
    let mut latest = std::collections::HashMap::new();
    for (p, b) in snaps {
        latest.insert(p, b);
    }
    assert!(!latest.is_empty());
    for (p, b) in latest {
        let f = fs.open(&p, &OpenOptions::read_only()).unwrap();
        assert!(
            read_all(&f, len as usize) == b,
            "{p} changed after it was shared"
        );
    }
    eprintln!(
        "{last} rounds, {} stores faulted, {} dedupes shared",
        va.stats().faults,
        deduped.load(Ordering::SeqCst)
    );
    drop((va, vr));
    drop((a, ro, targets, dd));
    drop(fs);
    assert_fsck(&*dev);
}

/// A child process (fork) gets none of a view's pages: touching the range
/// there is an ordinary SIGSEGV, never a hang waiting for a resolver that
/// only the parent has. The parent's view keeps working.
#[test]
fn views_are_not_inherited_by_forked_children() {
    if child_scenario().as_deref() == Some("fork") {
        let (_dev, fs) = new_fs(16);
        let f = file_with(&fs, "/f", &pattern(1, 2 * BS as usize));
        let v = f.map(0, 2 * BS, Access::ReadWrite).unwrap();
        let addr = v.as_ptr();
        // SAFETY: fork; the child only loads (faulting) and exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: deliberately faults in the child.
            let x = unsafe { std::ptr::read_volatile(addr) };
            // SAFETY: async-signal-safe exit from a forked child.
            unsafe { libc::_exit(i32::from(x) + 10) };
        }
        let mut status = 0;
        // SAFETY: waits for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        let killed = libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSEGV;
        store(&v, 5, 9);
        assert_eq!(load(&v, 5), 9);
        println!("child killed by SIGSEGV: {killed}");
        std::process::exit(0);
    }
    let (status, out) = run_child("views_are_not_inherited_by_forked_children", "fork");
    assert!(status.success(), "{status:?}\n{out}");
    assert!(out.contains("child killed by SIGSEGV: true"), "{out}");
}

/// read() of file F into a buffer that is a view of file G, while other
/// threads' store faults on F's views wait for F's data lock (held by the
/// read): the read's own fault on G still finds a resolver (the pool grows
/// while every resolver is busy), so everything completes.
#[test]
fn read_into_a_view_while_resolvers_wait_for_the_file() {
    let (dev, fs) = new_fs(64);
    let pages = 16u64;
    let len = pages * BS;
    let base = file_with(&fs, "/base", &pattern(7, len as usize));
    let f = fs.create("/f").unwrap();
    let g = fs.create("/g").unwrap();
    g.set_len(len).unwrap();
    let vg = g.map(0, len, Access::ReadWrite).unwrap();
    let vfs: Vec<View> = (0..3)
        .map(|_| f.map(0, len, Access::ReadWrite).unwrap())
        .collect();
    let punch = FallocFlags {
        punch_hole: true,
        keep_size: true,
        ..Default::default()
    };
    for round in 0..30u8 {
        f.clone_range(&base, 0, 0, len).unwrap();
        g.fallocate(punch, 0, len).unwrap();
        let barrier = Barrier::new(vfs.len() + 1);
        std::thread::scope(|s| {
            for (i, v) in vfs.iter().enumerate() {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    for p in 0..pages {
                        store(v, p * BS + 8 * i as u64, round);
                    }
                });
            }
            barrier.wait();
            // SAFETY: this thread alone touches G's view while the slice
            // lives (a test of what an application may do with read()).
            let buf = unsafe { std::slice::from_raw_parts_mut(vg.as_ptr(), len as usize) };
            let n = f.read_at(0, buf).unwrap();
            assert_eq!(n, len as usize);
        });
        for p in 0..pages {
            for i in 0..vfs.len() as u64 {
                assert_eq!(load(&vfs[0], p * BS + 8 * i), round);
            }
        }
    }
    // A buffer in a page the view revoked (past G's end): read() fails with
    // EFAULT, as on Linux, instead of a signal.
    g.set_len(BS).unwrap();
    // SAFETY: as above; the bytes past G's end cannot be reached.
    let buf = unsafe { std::slice::from_raw_parts_mut(vg.as_ptr(), 2 * BS as usize) };
    assert_eq!(f.read_at(0, buf).unwrap_err().errno_name(), "EFAULT");
    drop((vg, vfs));
    drop((base, f, g));
    drop(fs);
    assert_fsck(&*dev);
}

/// Runs `f` on a thread of its own and returns its result. If `f` has not
/// returned after a minute (a deadlock) the test process exits with a
/// failure instead of hanging (a panic would unwind into dropping views,
/// which waits for the stuck fault).
fn finishes<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(std::time::Duration::from_secs(60)) {
        Ok(r) => r,
        Err(_) => {
            eprintln!("{what}: no answer after a minute (deadlock)");
            std::process::exit(1);
        }
    }
}

/// read() of a file into a view of the same file: the destination pages
/// (a hole, a shared block) take store faults whose resolution needs the
/// file's data lock, which the read holds while copying; the read goes
/// through a bounce buffer instead and completes.
#[test]
fn read_into_a_view_of_the_same_file() {
    let (dev, fs) = new_fs(16);
    let data = pattern(31, 2 * BS as usize);
    let f = Arc::new(file_with(&fs, "/f", &data));
    f.set_len(4 * BS).unwrap();
    let g = fs.create("/g").unwrap();
    g.clone_from(&f).unwrap();
    let v = Arc::new(f.map(0, 4 * BS, Access::ReadWrite).unwrap());
    assert!(matches!(v.page_state(0), Some(PageState::ReadOnly { .. })));
    assert_eq!(v.page_state(2 * BS), Some(PageState::Zero));
    // Pages 0 and 1 into the hole at 2 and 3.
    let (f2, v2) = (f.clone(), v.clone());
    let n = finishes("read into the hole of a view of the same file", move || {
        let p = v2.as_ptr().wrapping_add(2 * BS as usize);
        // SAFETY: inside the view, which lives; no other thread touches
        // these pages while the slice lives.
        let buf = unsafe { std::slice::from_raw_parts_mut(p, 2 * BS as usize) };
        f2.read_at(0, buf)
    })
    .unwrap();
    assert_eq!(n, 2 * BS as usize);
    // Page 1 into the shared page 0 (a copy on write).
    let (f2, v2) = (f.clone(), v.clone());
    let n = finishes(
        "read into a shared page of a view of the same file",
        move || {
            // SAFETY: as above.
            let buf = unsafe { std::slice::from_raw_parts_mut(v2.as_ptr(), BS as usize) };
            f2.read_at(BS, buf)
        },
    )
    .unwrap();
    assert_eq!(n, BS as usize);
    let b = BS as usize;
    let mut expect = data.clone();
    expect[..b].copy_from_slice(&data[b..]);
    expect.extend_from_slice(&data);
    assert_eq!(read_all(&f, 4 * b), expect);
    assert_eq!(view_bytes(&v, 0, 4 * b), expect);
    let mut g_expect = data.clone();
    g_expect.resize(4 * b, 0);
    assert_eq!(read_all(&g, 4 * b), g_expect);
    drop(v);
    drop((f, g));
    drop(fs);
    assert_fsck(&*dev);
}

/// write() whose source lies in views: pages that are mapped (owned, shared,
/// the zero page of a hole) are copied; a page revoked by a media error
/// (its resolution needs the data lock of the view's file and the metadata
/// lock, which a write holds while copying) fails the write with EFAULT
/// instead of deadlocking, whether the view is of the written file or of
/// another.
#[test]
fn write_from_a_view_never_deadlocks() {
    let (dev, fs) = new_fs(16);
    let b = BS as usize;
    let data = pattern(32, 3 * b);
    let f = Arc::new(file_with(&fs, "/f", &data));
    let g = Arc::new(file_with(&fs, "/g", &pattern(33, 3 * b)));
    g.set_len(4 * BS).unwrap();
    let h = fs.create("/h").unwrap();
    h.clone_from(&g).unwrap();
    let vf = Arc::new(f.map(0, 3 * BS, Access::ReadWrite).unwrap());
    let vg = Arc::new(g.map(0, 4 * BS, Access::Read).unwrap());
    // From a shared page and from the zero page of a hole.
    assert!(matches!(vg.page_state(0), Some(PageState::ReadOnly { .. })));
    assert_eq!(vg.page_state(3 * BS), Some(PageState::Zero));
    let src = vg.as_ptr() as usize;
    let f2 = f.clone();
    finishes("write from shared and hole pages", move || {
        // SAFETY: inside the view, which lives (`vg` is held below).
        let buf = unsafe { std::slice::from_raw_parts(src as *const u8, 4 * b) };
        f2.write_at(0, buf)
    })
    .unwrap();
    let mut expect = pattern(33, 3 * b);
    expect.resize(4 * b, 0);
    assert_eq!(read_all(&f, 4 * b), expect);
    // From f's own view, to another place in f.
    let (f2, vf2) = (f.clone(), vf.clone());
    finishes("write from the file's own view", move || {
        // SAFETY: as above.
        let buf = unsafe { std::slice::from_raw_parts(vf2.as_ptr(), b) };
        f2.write_at(4 * BS, buf)
    })
    .unwrap();
    expect.extend_from_within(..b);
    assert_eq!(read_all(&f, 5 * b), expect);
    // Revoked pages: a media error in f's page 1 and in g's page 2.
    fs.inject_error(own_dev(&vf, BS), BS).unwrap();
    assert_eq!(vf.page_state(BS), Some(PageState::Unmapped));
    let gdev = vg.device_offset(2 * BS).unwrap();
    fs.inject_error(gdev, BS).unwrap();
    assert_eq!(vg.page_state(2 * BS), Some(PageState::Unmapped));
    for (what, view, page, to) in [
        ("the file's own revoked page", vf.clone(), 1, 0),
        ("another file's revoked page, in place", vg.clone(), 2, 0),
        (
            "another file's revoked page, allocating",
            vg.clone(),
            2,
            8 * BS,
        ),
    ] {
        let f2 = f.clone();
        let src = view.as_ptr() as usize + page * b;
        let r = finishes(what, move || {
            // SAFETY: as above (`view` lives until the end of the test).
            let buf = unsafe { std::slice::from_raw_parts(src as *const u8, b) };
            f2.write_at(to, buf)
        });
        assert_eq!(r.unwrap_err().errno_name(), "EFAULT", "{what}");
    }
    assert_eq!(read_all(&f, 5 * b)[..b], expect[..b]);
    drop((vf, vg));
    drop((f, g, h));
    drop(fs);
    assert_fsck(&*dev);
}

/// The kernel's own accesses to a view (a system call given a view address):
/// pages that are mapped (owned, shared, the zero page of a hole) read like
/// any memory; a page wholly past end of file gives EFAULT, as on Linux.
#[test]
fn system_calls_read_mapped_view_pages() {
    let (_dev, fs) = new_fs(16);
    let b = BS as usize;
    let data = pattern(34, 2 * b);
    let f = file_with(&fs, "/f", &data);
    f.set_len(3 * BS).unwrap();
    let g = fs.create("/g").unwrap();
    g.clone_range(&f, BS, BS, BS).unwrap();
    let v = f.map(0, 4 * BS, Access::ReadWrite).unwrap();
    assert!(matches!(v.page_state(0), Some(PageState::Writable { .. })));
    assert!(matches!(v.page_state(BS), Some(PageState::ReadOnly { .. })));
    assert_eq!(v.page_state(2 * BS), Some(PageState::Zero));
    assert_eq!(v.page_state(3 * BS), Some(PageState::PastEof));
    let mut fds = [0i32; 2];
    // SAFETY: a pipe into a two-int array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let mut expect = data.clone();
    expect.resize(3 * b, 0);
    for p in 0..3usize {
        let src = v.as_ptr().wrapping_add(p * b);
        // SAFETY: the kernel reads the view's page (mapped) into the pipe.
        let n = unsafe { libc::write(fds[1], src.cast(), b) };
        assert_eq!(n, b as isize, "page {p}");
        let mut back = vec![0u8; b];
        // SAFETY: reads into a buffer of ours.
        let n = unsafe { libc::read(fds[0], back.as_mut_ptr().cast(), b) };
        assert_eq!(n, b as isize);
        assert_eq!(back, expect[p * b..(p + 1) * b], "page {p}");
    }
    let src = v.as_ptr().wrapping_add(3 * b);
    // SAFETY: the kernel is asked to read a page past end of file.
    let n = unsafe { libc::write(fds[1], src.cast(), b) };
    assert_eq!(n, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EFAULT)
    );
    // SAFETY: closing our descriptors.
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    assert_eq!(v.stats().faults, 0);
}

/// A store fault's transaction commits lazily: at once in memory, durable
/// without msync once the faults pause (the resolvers' idle work); a copy
/// of the device then mounts with the new block in the file.
#[test]
fn store_fault_commits_become_durable_when_faults_pause() {
    let (dev, fs) = new_fs(16);
    let data = pattern(41, 2 * BS as usize);
    let a = file_with(&fs, "/a", &data);
    let b = fs.create("/b").unwrap();
    b.clone_from(&a).unwrap();
    b.fsync().unwrap();
    let v = b.map(0, 2 * BS, Access::ReadWrite).unwrap();
    let before = fs.info().generation;
    store(&v, BS + 3, 0x77);
    assert_eq!(v.stats().block_faults, 1);
    // Wait (a minute at most) for the idle work to commit.
    let mut waited = 0;
    while fs.info().generation == before {
        assert!(waited < 60_000, "the lazy commit never became durable");
        std::thread::sleep(std::time::Duration::from_millis(1));
        waited += 1;
    }
    let mut img = vec![0u8; dev.len() as usize];
    dev.read(0, &mut img).unwrap();
    let copy = Arc::new(daxfs_device::MemDevice::from_image(img));
    let fs2 = Fs::mount(copy.clone(), &daxfs::MountOptions::default()).unwrap();
    let b2 = fs2.open("/b", &OpenOptions::read_only()).unwrap();
    let mut expect = data.clone();
    expect[BS as usize + 3] = 0x77;
    assert_eq!(read_all(&b2, 2 * BS as usize), expect);
    let phys = |f: &File, off: u64| {
        let m = f.fiemap().unwrap();
        let e = m
            .iter()
            .find(|e| e.logical <= off && off < e.logical + e.length)
            .unwrap();
        e.physical + (off - e.logical)
    };
    assert_ne!(
        phys(&b2, BS),
        phys(&a, BS),
        "the copy of the device maps b's second page to a block of its own"
    );
    assert_eq!(phys(&b2, 0), phys(&a, 0));
    drop((b2, fs2));
    assert_fsck(&*copy);
    drop(v);
}

/// A media error in a block a store fault gave the file, before its lazy
/// commit is durable: the error handling commits it first, so the reverse
/// map names the file, whose view has the page revoked and is told; the
/// other file keeps its block.
#[test]
fn media_error_in_a_block_given_by_a_lazy_fault() {
    let (dev, fs) = new_fs(16);
    let data = pattern(42, 2 * BS as usize);
    let a = file_with(&fs, "/a", &data);
    let b = fs.create("/b").unwrap();
    b.clone_from(&a).unwrap();
    let vb = b.map(0, 2 * BS, Access::ReadWrite).unwrap();
    let before = fs.info().generation;
    store(&vb, BS + 1, 0x55);
    let new = own_dev(&vb, BS);
    assert_ne!(new, shared_dev(&vb, 0) + BS);
    // Whether or not the resolvers' idle work came first, the error is
    // handled against the durable state.
    fs.inject_error(new, BS).unwrap();
    assert!(fs.info().generation > before);
    let told = vb.take_media_errors();
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(
        (told[0].ino, told[0].offset, told[0].length),
        (b.ino(), BS, BS)
    );
    assert!(!matches!(
        vb.page_state(BS),
        Some(PageState::Writable { .. } | PageState::ReadOnly { .. })
    ));
    assert_eq!(read_all(&a, 2 * BS as usize), data);
    drop(vb);
    drop((a, b));
    drop(fs);
    assert_fsck(&*dev);
}

/// A store fault is resolved on the faulting thread, in its signal handler,
/// when the thread has a big enough alternate signal stack (the mapping
/// thread gets one; others call `View::prepare_thread`), and handed to the
/// resolver threads otherwise; both give the same result.
#[test]
fn faults_resolve_on_the_faulting_thread() {
    let (dev, fs) = new_fs(16);
    let data = pattern(77, 4 * BS as usize);
    let a = file_with(&fs, "/a", &data);
    let b = fs.create("/b").unwrap();
    b.clone_from(&a).unwrap();
    let h = fs.create("/h").unwrap();
    h.set_len(4 * BS).unwrap();
    let vb = b.map(0, 4 * BS, Access::ReadWrite).unwrap();
    let vh = h.map(0, 4 * BS, Access::ReadWrite).unwrap();
    vb.set_huge_faults(false);
    // On the mapping thread: a copy on write and a hole, each once.
    store(&vb, 10, 0xa1);
    store(&vh, 20, 0xa2);
    for v in [&vb, &vh] {
        let s = v.stats();
        assert_eq!((s.faults, s.in_thread, s.block_faults), (1, 1, 1), "{s:?}");
    }
    // The deepest an in-thread resolution went stays well inside the
    // alternate stack.
    let used = daxfs_device::fault::alt_stack_high_water().expect("an alternate stack of ours");
    assert!(
        used <= daxfs_device::fault::ALT_STACK_SIZE / 2,
        "{used} bytes of signal stack"
    );
    // A thread without a big alternate stack hands its fault off; one that
    // prepared itself resolves it in place.
    std::thread::scope(|s| {
        s.spawn(|| store(&vb, BS + 10, 0xb1)).join().unwrap();
        s.spawn(|| {
            View::prepare_thread().unwrap();
            store(&vb, 2 * BS + 10, 0xb2);
        })
        .join()
        .unwrap();
    });
    let s = vb.stats();
    assert_eq!((s.faults, s.in_thread, s.block_faults), (3, 2, 3), "{s:?}");
    // A fault taken while the thread is inside daxfs goes to the resolvers
    // (it never deadlocks on locks the thread might hold).
    let handed = View::fault_counts().1;
    View::as_if_inside_daxfs_for_test(|| store(&vb, 3 * BS + 10, 0xb3));
    assert!(View::fault_counts().1 > handed);
    let s = vb.stats();
    assert_eq!((s.faults, s.in_thread, s.block_faults), (4, 2, 4), "{s:?}");
    let mut want = data.clone();
    for (off, v) in [
        (10, 0xa1),
        (BS + 10, 0xb1),
        (2 * BS + 10, 0xb2),
        (3 * BS + 10, 0xb3),
    ] {
        want[off as usize] = v;
        assert_eq!(load(&vb, off), v);
    }
    assert_eq!(read_all(&b, 4 * BS as usize), want);
    assert_eq!(read_all(&a, 4 * BS as usize), data);
    let mut hw = vec![0u8; 4 * BS as usize];
    hw[20] = 0xa2;
    assert_eq!(read_all(&h, 4 * BS as usize), hw);
    drop((vb, vh));
    drop((a, b, h));
    drop(fs);
    assert_fsck(&*dev);
}

/// Several threads, each resolving in place, store into the same shared
/// page: one copy, every store kept.
#[test]
fn concurrent_in_thread_faults_on_one_page_copy_once() {
    let (dev, fs) = new_fs(16);
    let data = pattern(78, BS as usize);
    let a = file_with(&fs, "/a", &data);
    let b = fs.create("/b").unwrap();
    let vb = b.map(0, BS, Access::ReadWrite).unwrap();
    let threads = 4;
    let mut in_thread = 0;
    for round in 0..20u8 {
        b.clone_range(&a, 0, 0, BS).unwrap();
        let before = vb.stats();
        let barrier = Barrier::new(threads);
        std::thread::scope(|s| {
            for i in 0..threads {
                let (barrier, vb) = (&barrier, &vb);
                s.spawn(move || {
                    View::prepare_thread().unwrap();
                    barrier.wait();
                    store(vb, 8 * i as u64, round + 1);
                });
            }
        });
        let after = vb.stats();
        assert_eq!(after.block_faults - before.block_faults, 1, "round {round}");
        in_thread += after.in_thread - before.in_thread;
        let page = read_all(&b, BS as usize);
        for i in 0..threads {
            assert_eq!(page[8 * i], round + 1, "round {round}, thread {i}");
        }
        assert_eq!(page[8 * threads..], data[8 * threads..]);
    }
    // Whoever finds the file's data lock free resolves in place.
    assert!(in_thread >= 1);
    assert_eq!(read_all(&a, BS as usize), data);
    drop(vb);
    drop((a, b));
    drop(fs);
    assert_fsck(&*dev);
}

/// Makes a page of the device's memory inaccessible behind the device's
/// back, as an unreported hardware error would: the first guarded copy that
/// touches it faults.
fn poison_behind_the_back(dev: &daxfs_device::MemDevice, off: u64) {
    // SAFETY: a page-aligned page of the device's live mapping; nothing
    // holds a reference into it (the device copies through guarded
    // routines only).
    let r = unsafe { libc::mprotect(dev.as_ptr().add(off as usize).cast(), 4096, libc::PROT_NONE) };
    assert_eq!(r, 0);
}

/// A copy on write resolved on the faulting thread meets poison in the
/// shared source page: the device copy faults inside the signal handler
/// (SIGSEGV is unblocked for the resolution), and the store gets SIGBUS
/// `BUS_MCEERR_AR`; a read() into the view gets EFAULT instead.
#[test]
fn poison_met_by_an_in_thread_copy_on_write() {
    let setup = || {
        let (dev, fs) = new_fs(16);
        let data = pattern(79, 2 * BS as usize);
        let a = file_with(&fs, "/a", &data);
        let b = fs.create("/b").unwrap();
        b.clone_from(&a).unwrap();
        let vb = b.map(0, 2 * BS, Access::ReadWrite).unwrap();
        vb.set_huge_faults(false);
        let bad = shared_dev(&vb, BS);
        poison_behind_the_back(&dev, bad);
        (dev, fs, a, b, vb)
    };
    if child_scenario().as_deref() == Some("store") {
        let (_dev, _fs, _a, _b, vb) = setup();
        install_sigbus_handler();
        EXPECT_ADDR.store(addr_of(&vb, BS), Ordering::SeqCst);
        store(&vb, BS + 100, 1);
        println!("unreachable");
        std::process::exit(0);
    }
    let (_dev, fs, a, _b, vb) = setup();
    // SAFETY: only this thread touches the view's second page while the
    // slice lives.
    let buf = unsafe { std::slice::from_raw_parts_mut(vb.as_ptr().add(BS as usize), 64) };
    let e = a.read_at(0, buf).unwrap_err();
    assert_eq!(e.errno_name(), "EFAULT", "{e:?}");
    let s = vb.stats();
    assert!(s.in_thread >= 1 && s.block_faults == 0, "{s:?}");
    // The other page still copies on write.
    store(&vb, 5, 0x77);
    assert_eq!(load(&vb, 5), 0x77);
    drop(vb);
    drop(fs);
    let (status, out) = run_child("poison_met_by_an_in_thread_copy_on_write", "store");
    assert_eq!(
        status.code(),
        Some(100 + BUS_MCEERR_AR),
        "{status:?}\n{out}"
    );
}

static USR1_STORE_AT: AtomicUsize = AtomicUsize::new(0);

extern "C" fn usr1_stores(_sig: libc::c_int) {
    let p = USR1_STORE_AT.load(Ordering::SeqCst) as *mut u8;
    // SAFETY: the address of a live view's page, set before the signal.
    unsafe { std::ptr::write_volatile(p, 0x99) };
}

/// A fault taken inside the application's own signal handler (running on
/// the alternate stack) is not resolved on the thread, whose interrupted
/// code may hold the allocator's lock: a resolver thread resolves it.
#[test]
fn a_fault_inside_another_signal_handler_is_handed_off() {
    let (dev, fs) = new_fs(16);
    let data = pattern(80, BS as usize);
    let a = file_with(&fs, "/a", &data);
    let b = fs.create("/b").unwrap();
    b.clone_from(&a).unwrap();
    let vb = b.map(0, BS, Access::ReadWrite).unwrap();
    USR1_STORE_AT.store(addr_of(&vb, 7), Ordering::SeqCst);
    // SAFETY: installs a handler on the alternate stack for SIGUSR1 (sent
    // only by this test, to its own thread), then sends it.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = usr1_stores as *const () as usize;
        act.sa_flags = libc::SA_ONSTACK;
        libc::sigemptyset(&mut act.sa_mask);
        assert_eq!(
            libc::sigaction(libc::SIGUSR1, &act, std::ptr::null_mut()),
            0
        );
        libc::syscall(
            libc::SYS_tgkill,
            libc::getpid(),
            libc::syscall(libc::SYS_gettid),
            libc::SIGUSR1,
        );
    }
    let s = vb.stats();
    assert_eq!((s.faults, s.in_thread, s.block_faults), (1, 0, 1), "{s:?}");
    assert_eq!(load(&vb, 7), 0x99);
    let mut want = data.clone();
    want[7] = 0x99;
    assert_eq!(read_all(&b, BS as usize), want);
    assert_eq!(read_all(&a, BS as usize), data);
    drop(vb);
    drop((a, b));
    drop(fs);
    assert_fsck(&*dev);
}
