//! Tests of media errors across the device types.
use crate::file::tests::TempPath;
use crate::{
    CrashDevice, Device, DeviceError, FailureFlags, Holder, MemDevice, MmapDevice, NotifyError,
    OpenOptions, Subset, sidecar_path,
};
use std::sync::{Arc, Mutex, Weak};

const PAGE: u64 = 4096;

/// A holder that records every report, and may act on the device from
/// inside the notification.
#[derive(Default)]
pub(crate) struct Recorder {
    pub(crate) seen: Mutex<Vec<(u64, u64, FailureFlags)>>,
    pub(crate) fail: Mutex<Option<String>>,
    /// When set, the notification reads around the range and clears it with
    /// zeros (a holder that repairs at once).
    pub(crate) repair: Mutex<Option<Weak<dyn Device>>>,
}

impl Recorder {
    pub(crate) fn new() -> Arc<Recorder> {
        Arc::new(Recorder::default())
    }

    pub(crate) fn take(&self) -> Vec<(u64, u64, FailureFlags)> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

impl Holder for Recorder {
    fn notify_failure(&self, off: u64, len: u64, flags: FailureFlags) -> Result<(), NotifyError> {
        self.seen.lock().unwrap().push((off, len, flags));
        let dev = self.repair.lock().unwrap().as_ref().and_then(Weak::upgrade);
        if let Some(dev) = dev {
            // Re-enter the device: no lock of it may be held here.
            assert!(
                dev.bad_ranges()
                    .iter()
                    .any(|&(o, l)| o <= off && off < o + l)
            );
            assert!(matches!(
                dev.read(off, &mut [0u8; 1]),
                Err(DeviceError::Media { .. })
            ));
            if off >= PAGE {
                dev.read(off - PAGE, &mut [0u8; 16]).unwrap();
            }
            dev.clear_error(off, &vec![0; len as usize]).unwrap();
        }
        match &*self.fail.lock().unwrap() {
            Some(m) => Err(NotifyError(m.clone())),
            None => Ok(()),
        }
    }
}

fn media_err(r: crate::Result<impl std::fmt::Debug>) -> (u64, u64) {
    match r {
        Err(DeviceError::Media { off, len }) => (off, len),
        other => panic!("expected a media error, got {other:?}"),
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 + 1).collect()
}

/// Every device type, 64 KiB, filled with `pattern`.
fn devices(tag: &str) -> Vec<(Arc<dyn Device>, Option<TempPath>)> {
    let size = 64 * 1024;
    let p = TempPath::new(tag);
    let file = MmapDevice::create(&p.0, size, OpenOptions::new()).unwrap();
    let out: Vec<(Arc<dyn Device>, Option<TempPath>)> = vec![
        (Arc::new(MemDevice::new(size)), None),
        (Arc::new(CrashDevice::new(size)), None),
        (Arc::new(file), Some(p)),
    ];
    for (d, _) in &out {
        d.write(0, &pattern(size as usize)).unwrap();
    }
    out
}

impl Drop for TempSidecar {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Removes an image's sidecar when dropped.
pub(crate) struct TempSidecar(pub(crate) std::path::PathBuf);

#[test]
fn poisoned_pages_on_every_device_type() {
    for (dev, path) in devices("poison") {
        let _side = path.as_ref().map(|p| TempSidecar(sidecar_path(&p.0)));
        let what = dev.describe();
        let pat = pattern(64 * 1024);
        dev.inject_error(2 * PAGE + 100, 10).unwrap();
        assert_eq!(dev.bad_ranges(), [(2 * PAGE, PAGE)], "{what}");
        // Reads touching the page fail naming it; reads next to it work.
        assert_eq!(media_err(dev.read(2 * PAGE, &mut [0; 1])), (2 * PAGE, PAGE));
        assert_eq!(
            media_err(dev.read(PAGE + 5, &mut [0; 8000])),
            (2 * PAGE, PAGE)
        );
        assert_eq!(media_err(dev.read_u64(2 * PAGE + 8)), (2 * PAGE, PAGE));
        let mut buf = vec![0; PAGE as usize];
        dev.read(PAGE, &mut buf).unwrap();
        assert_eq!(buf, pat[PAGE as usize..2 * PAGE as usize], "{what}");
        dev.read(3 * PAGE, &mut buf).unwrap();
        assert_eq!(buf, pat[3 * PAGE as usize..4 * PAGE as usize], "{what}");
        assert_eq!(
            dev.read_u64(3 * PAGE).unwrap().to_le_bytes(),
            pat[3 * 4096..3 * 4096 + 8]
        );
        // Stores into it fail, and change nothing around it.
        assert_eq!(
            media_err(dev.write(2 * PAGE - 2, &[9; 4])),
            (2 * PAGE, PAGE)
        );
        assert_eq!(media_err(dev.fill(3 * PAGE - 1, 2, 9)), (2 * PAGE, PAGE));
        assert_eq!(media_err(dev.write_u64(2 * PAGE + 16, 1)), (2 * PAGE, PAGE));
        dev.read(2 * PAGE - 2, &mut buf[..2]).unwrap();
        assert_eq!(buf[..2], pat[2 * 4096 - 2..2 * 4096], "{what}");
        dev.write(2 * PAGE - 8, &[1; 8]).unwrap();
        dev.fill(3 * PAGE, 8, 2).unwrap();
        dev.write_u64(3 * PAGE + 8, 3).unwrap();
        dev.persist(0, 64 * 1024);
        // A recovery write must cover the bad page whole.
        assert_eq!(
            media_err(dev.clear_error(2 * PAGE, &[0; 4095])),
            (2 * PAGE, PAGE)
        );
        assert_eq!(
            media_err(dev.clear_error(2 * PAGE + 1, &[0; 4096])),
            (2 * PAGE, PAGE)
        );
        assert_eq!(dev.bad_ranges(), [(2 * PAGE, PAGE)], "{what}");
        dev.read(2 * PAGE - 8, &mut buf[..8]).unwrap();
        assert_eq!(buf[..8], [1; 8], "a refused recovery write writes nothing");
        // A whole-page recovery write (with good pages around) clears it.
        dev.clear_error(PAGE + 10, &vec![7; 3 * PAGE as usize - 20])
            .unwrap();
        assert!(dev.bad_ranges().is_empty(), "{what}");
        dev.read(2 * PAGE, &mut buf).unwrap();
        assert_eq!(buf, vec![7; 4096], "{what}");
        dev.write(2 * PAGE, &[5]).unwrap();
        // Several ranges merge and sort.
        dev.inject_error(5 * PAGE, 2 * PAGE).unwrap();
        dev.inject_error(0, 1).unwrap();
        dev.inject_error(PAGE, 1).unwrap();
        dev.inject_error(8 * PAGE - 1, 1).unwrap();
        dev.inject_error(9 * PAGE, 0).unwrap();
        assert_eq!(
            dev.bad_ranges(),
            [(0, 2 * PAGE), (5 * PAGE, 3 * PAGE)],
            "{what}"
        );
        assert!(matches!(
            dev.inject_error(64 * 1024 - 1, 2),
            Err(DeviceError::OutOfRange { .. })
        ));
        assert!(matches!(
            dev.import_bad_ranges(&[(10 * PAGE, 1), (1 << 40, 1)]),
            Err(DeviceError::OutOfRange { .. })
        ));
        assert_eq!(
            dev.bad_ranges().len(),
            2,
            "a refused import changes nothing"
        );
        // One recovery write over several bad ranges.
        dev.clear_error(0, &vec![3; 8 * PAGE as usize]).unwrap();
        assert!(dev.bad_ranges().is_empty());
        dev.read(6 * PAGE, &mut buf).unwrap();
        assert_eq!(buf, vec![3; 4096]);
        // Without bad pages, a recovery write is a durable write.
        dev.clear_error(100, b"xyz").unwrap();
    }
}

#[test]
fn image_and_odd_sizes() {
    let dev = MemDevice::from_image(pattern(3 * PAGE as usize + 100));
    dev.inject_error(3 * PAGE + 50, 1).unwrap();
    assert_eq!(dev.bad_ranges(), [(3 * PAGE, 100)], "clamped to the device");
    assert_eq!(
        media_err(dev.read(3 * PAGE + 99, &mut [0])),
        (3 * PAGE, 100)
    );
    dev.inject_error(PAGE, 1).unwrap();
    let img = dev.image();
    assert!(
        img[PAGE as usize..2 * PAGE as usize]
            .iter()
            .all(|&b| b == 0)
    );
    assert!(img[3 * PAGE as usize..].iter().all(|&b| b == 0));
    assert_eq!(img[..PAGE as usize], pattern(PAGE as usize)[..]);
    assert_eq!(
        media_err(dev.clear_error(3 * PAGE, &[1; 99])),
        (3 * PAGE, 100)
    );
    dev.clear_error(3 * PAGE, &[1; 100]).unwrap();
    assert_eq!(dev.bad_ranges(), [(PAGE, PAGE)]);

    let crash = CrashDevice::from_image(pattern(2 * PAGE as usize));
    crash.inject_error(PAGE, 1).unwrap();
    let img = crash.image();
    assert!(img[PAGE as usize..].iter().all(|&b| b == 0));
    assert_eq!(img[..PAGE as usize], pattern(PAGE as usize)[..]);
}

#[test]
fn holder_hears_every_report() {
    let dev = Arc::new(MemDevice::new(16 * PAGE));
    let h = Recorder::new();
    dev.set_holder(h.clone()).unwrap();
    assert!(h.take().is_empty(), "nothing bad yet");
    // Only one holder.
    let other = Recorder::new();
    assert!(matches!(
        dev.set_holder(other.clone()),
        Err(DeviceError::HolderBusy)
    ));
    dev.inject_error(PAGE, 1).unwrap();
    assert_eq!(h.take(), [(PAGE, PAGE, FailureFlags::BACKGROUND)]);
    // Pages already bad are not news.
    dev.inject_error(PAGE + 10, 100).unwrap();
    assert!(h.take().is_empty());
    dev.inject_error(0, 3 * PAGE).unwrap();
    assert_eq!(
        h.take(),
        [
            (0, PAGE, FailureFlags::BACKGROUND),
            (2 * PAGE, PAGE, FailureFlags::BACKGROUND)
        ]
    );
    // An import: each merged new range once.
    dev.import_bad_ranges(&[(5 * PAGE, 10), (6 * PAGE, PAGE), (9 * PAGE, 1)])
        .unwrap();
    assert_eq!(
        h.take(),
        [
            (5 * PAGE, 2 * PAGE, FailureFlags::BACKGROUND),
            (9 * PAGE, PAGE, FailureFlags::BACKGROUND)
        ]
    );
    let text = "80 8\n";
    assert_eq!(
        dev.import_bad_block_list(text, "list").unwrap(),
        [(80 * 512, 4096)]
    );
    assert_eq!(h.take(), [(10 * PAGE, PAGE, FailureFlags::BACKGROUND)]);
    // A read of a known bad page fails without a new report.
    assert!(dev.read(PAGE, &mut [0]).is_err());
    assert!(h.take().is_empty());
    // Removal: the whole device, pre_remove.
    dev.remove().unwrap();
    assert_eq!(h.take(), [(0, u64::MAX, FailureFlags::PRE_REMOVE)]);
    // Without a holder nobody hears; a new holder first hears what is bad.
    let old = dev.clear_holder().expect("a holder was set");
    assert!(Arc::ptr_eq(
        &(old as Arc<dyn Holder>),
        &(h.clone() as Arc<dyn Holder>)
    ));
    assert!(dev.clear_holder().is_none());
    dev.inject_error(12 * PAGE, 1).unwrap();
    assert!(h.take().is_empty());
    dev.set_holder(other.clone()).unwrap();
    let want: Vec<_> = dev
        .bad_ranges()
        .into_iter()
        .map(|(o, l)| (o, l, FailureFlags::BACKGROUND))
        .collect();
    assert_eq!(other.take(), want);
    assert_eq!(want.len(), 4);
}

#[test]
fn holder_may_call_back_into_the_device() {
    for (dev, path) in devices("reenter") {
        let _side = path.as_ref().map(|p| TempSidecar(sidecar_path(&p.0)));
        let h = Recorder::new();
        *h.repair.lock().unwrap() = Some(Arc::downgrade(&dev));
        dev.set_holder(h.clone()).unwrap();
        dev.inject_error(3 * PAGE, 2 * PAGE).unwrap();
        assert_eq!(h.take(), [(3 * PAGE, 2 * PAGE, FailureFlags::BACKGROUND)]);
        // The holder cleared the range while being told about it.
        assert!(dev.bad_ranges().is_empty(), "{}", dev.describe());
        let mut b = [1u8; 8];
        dev.read(4 * PAGE, &mut b).unwrap();
        assert_eq!(b, [0; 8]);
        dev.clear_holder();
    }
}

#[test]
fn holder_failures_come_back_to_the_reporter() {
    let dev = CrashDevice::new(8 * PAGE);
    let h = Recorder::new();
    *h.fail.lock().unwrap() = Some("cannot cope".into());
    dev.set_holder(h.clone()).unwrap();
    let e = dev.inject_error(PAGE, 1).unwrap_err();
    assert!(
        matches!(e, DeviceError::Notify { off: 4096, len: 4096, ref reason } if reason == "cannot cope"),
        "{e}"
    );
    assert!(e.to_string().contains("cannot cope"), "{e}");
    assert_eq!(dev.bad_ranges(), [(PAGE, PAGE)], "bad all the same");
    dev.clear_holder();
    // Replaying the list to a new holder that fails: installed anyway.
    let e = dev.set_holder(h.clone()).unwrap_err();
    assert!(matches!(e, DeviceError::Notify { .. }), "{e}");
    assert!(matches!(
        dev.set_holder(Recorder::new()),
        Err(DeviceError::HolderBusy)
    ));
    assert_eq!(h.take().len(), 2);
}

#[test]
fn sidecar_keeps_the_list_across_restarts() {
    let p = TempPath::new("sidecar");
    let side = sidecar_path(&p.0);
    let _clean = TempSidecar(side.clone());
    std::fs::write(&side, "0 8\n").unwrap();
    {
        let dev = MmapDevice::create(&p.0, 64 * PAGE, OpenOptions::new()).unwrap();
        assert!(dev.bad_ranges().is_empty(), "a new image has no stale list");
        assert!(!side.exists());
        dev.write(0, &pattern(64 * PAGE as usize)).unwrap();
        dev.persist(0, 64 * PAGE);
        dev.inject_error(5 * PAGE + 7, 1).unwrap();
        dev.inject_error(9 * PAGE, 2 * PAGE).unwrap();
        assert_eq!(std::fs::read_to_string(&side).unwrap(), "40 8\n72 16\n");
    }
    {
        let dev = MmapDevice::open(&p.0, OpenOptions::new()).unwrap();
        assert_eq!(dev.bad_ranges(), [(5 * PAGE, PAGE), (9 * PAGE, 2 * PAGE)]);
        assert_eq!(
            media_err(dev.read(10 * PAGE, &mut [0; 3])),
            (10 * PAGE, PAGE)
        );
        let mut b = [0u8; 3];
        dev.read(11 * PAGE, &mut b).unwrap();
        assert_eq!(b[..], pattern(64 * PAGE as usize)[11 * 4096..11 * 4096 + 3]);
        // The list read at open reaches the holder when it registers.
        let h = Recorder::new();
        dev.set_holder(h.clone()).unwrap();
        assert_eq!(
            h.take(),
            [
                (5 * PAGE, PAGE, FailureFlags::BACKGROUND),
                (9 * PAGE, 2 * PAGE, FailureFlags::BACKGROUND)
            ]
        );
        dev.clear_error(5 * PAGE, &[4; 4096]).unwrap();
        assert_eq!(std::fs::read_to_string(&side).unwrap(), "72 16\n");
        dev.clear_error(9 * PAGE, &[4; 2 * 4096]).unwrap();
        assert!(!side.exists(), "an empty list removes the sidecar");
    }
    {
        let dev = MmapDevice::open(&p.0, OpenOptions::new()).unwrap();
        assert!(dev.bad_ranges().is_empty());
        let mut b = [0u8; 4];
        dev.read(10 * PAGE, &mut b).unwrap();
        assert_eq!(b, [4; 4], "the recovery write reached the image");
    }
    // A malformed or mismatched list refuses the open, naming the problem.
    std::fs::write(&side, "8 8\n16 eight\n").unwrap();
    let e = MmapDevice::open(&p.0, OpenOptions::new()).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains(".badblocks: line 2:"), "{msg}");
    std::fs::write(&side, "8 8\n4000 8\n").unwrap();
    let e = MmapDevice::open(&p.0, OpenOptions::new()).unwrap_err();
    assert!(e.to_string().contains("past the end"), "{e}");
    // Hand-written lists in sectors round out to pages.
    std::fs::write(&side, "9 1\n").unwrap();
    let dev = MmapDevice::open(&p.0, OpenOptions::new()).unwrap();
    assert_eq!(dev.bad_ranges(), [(PAGE, PAGE)]);
}

#[test]
fn imports_of_both_formats() {
    let dev = MemDevice::new(256 * PAGE);
    let json = r#"{"dev":"namespace0.0","badblock_count":2,
        "badblocks":[{"offset":8,"length":8,"dimms":["nmem0"]},{"offset":100,"length":1}]}"#;
    assert_eq!(
        dev.import_bad_block_list(json, "ndctl").unwrap(),
        [(4096, 4096), (51200, 512)]
    );
    assert_eq!(dev.bad_ranges(), [(PAGE, PAGE), (12 * PAGE, PAGE)]);
    dev.import_bad_block_list("[{\"offset\":800,\"length\":16}]", "x")
        .unwrap();
    dev.import_bad_block_list("1600 8\n", "x").unwrap();
    assert_eq!(dev.bad_ranges().len(), 4);
    let e = dev
        .import_bad_block_list("1 1\n2\n", "my list")
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "my list: line 2: expected `START COUNT` (in 512-byte sectors), found \"2\""
    );
    let e = dev
        .import_bad_block_list("[{\"offset\":1}]", "j")
        .unwrap_err();
    assert!(e.to_string().contains("[0]: missing `length`"), "{e}");
    assert!(matches!(
        dev.import_bad_block_list("9999999 1\n", "x"),
        Err(DeviceError::OutOfRange { .. })
    ));
    assert_eq!(dev.bad_ranges().len(), 4, "failed imports change nothing");
}

#[test]
fn crash_device_records_the_recovery_write() {
    let dev = CrashDevice::new(4 * PAGE);
    dev.write(PAGE, &[1; 4096]).unwrap();
    dev.persist(PAGE, PAGE);
    let fences = dev.fences();
    dev.inject_error(PAGE, 1).unwrap();
    assert_eq!(dev.fences(), fences, "injection is no store");
    assert_eq!(media_err(dev.read(PAGE, &mut [0; 4])), (PAGE, PAGE));
    dev.clear_error(PAGE, &[2; 4096]).unwrap();
    assert_eq!(dev.fences(), fences + 1, "the recovery write persists");
    let img = dev.crash_image(fences, Subset::None);
    assert!(
        img[PAGE as usize..2 * PAGE as usize]
            .iter()
            .all(|&b| b == 2)
    );
    let before = dev.crash_image_before_fence(fences, Subset::None);
    assert!(
        before[PAGE as usize..2 * PAGE as usize]
            .iter()
            .all(|&b| b == 1)
    );
}

#[test]
fn devices_without_media_support_say_so() {
    #[derive(Debug)]
    struct Plain(MemDevice);
    impl Device for Plain {
        fn len(&self) -> u64 {
            self.0.len()
        }
        fn read(&self, off: u64, buf: &mut [u8]) -> crate::Result<()> {
            self.0.read(off, buf)
        }
        fn write(&self, off: u64, data: &[u8]) -> crate::Result<()> {
            self.0.write(off, data)
        }
        fn fill(&self, off: u64, len: u64, byte: u8) -> crate::Result<()> {
            self.0.fill(off, len, byte)
        }
        fn flush(&self, _: u64, _: u64) {}
        fn fence(&self) {}
        fn mode(&self) -> crate::PersistMode {
            crate::PersistMode::Volatile
        }
        fn describe(&self) -> String {
            "plain".into()
        }
    }
    let d = Plain(MemDevice::new(PAGE));
    assert!(matches!(
        d.inject_error(0, 1),
        Err(DeviceError::Unsupported(_))
    ));
    assert!(matches!(
        d.set_holder(Recorder::new()),
        Err(DeviceError::Unsupported(_))
    ));
    assert!(d.bad_ranges().is_empty());
    d.clear_error(0, b"ok").unwrap();
    d.remove().unwrap();
    assert!(d.clear_holder().is_none());
}

/// Readers race injections and recovery writes: every read either sees the
/// right bytes or fails naming a page of its range; nothing crashes.
#[test]
fn concurrent_reads_injections_and_clears() {
    let size = 256 * PAGE;
    let pat = Arc::new(pattern(size as usize));
    let devs: Vec<Arc<dyn Device>> = vec![
        Arc::new(MemDevice::from_image(pat.to_vec())),
        Arc::new(CrashDevice::from_image(pat.to_vec())),
    ];
    for dev in devs {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readers: Vec<_> = (0..3u64)
            .map(|t| {
                let (dev, stop, pat) = (dev.clone(), stop.clone(), pat.clone());
                std::thread::spawn(move || {
                    let mut x = t * 7919 + 1;
                    let (mut ok, mut bad) = (0, 0);
                    let mut buf = vec![0u8; 3 * PAGE as usize];
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        x = x
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        let off = (x >> 20) % (size - 3 * PAGE);
                        let len = (x >> 44) % (3 * PAGE) + 1;
                        let b = &mut buf[..len as usize];
                        match dev.read(off, b) {
                            Ok(()) => {
                                assert_eq!(b, &pat[off as usize..(off + len) as usize]);
                                ok += 1;
                            }
                            Err(DeviceError::Media { off: p, len: l }) => {
                                assert!(p % PAGE == 0 && l == PAGE);
                                assert!(p + PAGE > off && p < off + len, "{p} vs {off}+{len}");
                                bad += 1;
                            }
                            Err(e) => panic!("{e}"),
                        }
                    }
                    (ok, bad)
                })
            })
            .collect();
        for i in 0..300u64 {
            let page = (i * 37 % 256) * PAGE;
            dev.inject_error(page, 1).unwrap();
            if i % 3 == 0 {
                std::thread::yield_now();
            }
            let p = page as usize;
            dev.clear_error(page, &pat[p..p + PAGE as usize]).unwrap();
        }
        dev.inject_error(10 * PAGE, 50 * PAGE).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (mut ok, mut bad) = (0, 0);
        for r in readers {
            let (o, b) = r.join().unwrap();
            ok += o;
            bad += b;
        }
        assert!(ok > 0 && bad > 0, "{}: ok {ok} bad {bad}", dev.describe());
    }
}
