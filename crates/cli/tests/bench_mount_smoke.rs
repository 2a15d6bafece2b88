//! `daxfs bench mount` runs on tiny sizes, prints every workload on tmpfs
//! and on daxfs with the FUSE requests each cost, and leaves nothing
//! mounted or behind. Timings are never asserted: only the shape. Skips
//! with the reason where FUSE or mounting cannot be used.
use std::path::{Path, PathBuf};
use std::process::Command;

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const LABELS: [&str; 8] = [
    "seq write 1 MiB + fsync",
    "seq read 1 MiB (reopened)",
    "4 KiB random read, p50",
    "4 KiB random write + fdatasync, p50",
    "create + write 4 KiB + fsync, mean",
    "stat, mean",
    "cp of the big file",
    "cp -r of a tree of small files",
];

#[test]
fn every_workload_with_its_requests_and_nothing_left_mounted() {
    if !Path::new("/dev/fuse").exists() {
        eprintln!("SKIPPED: /dev/fuse is missing");
        return;
    }
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIPPED: mounting needs root");
        return;
    }
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = TempDir(base.join(format!("daxfs-mbench-test-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir(&dir.0).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_daxfs"))
        .args(["bench", "mount", "--quick", "--size", "4m", "--files", "20"])
        .args(["--stat-files", "50", "--no-xfs", "--dir"])
        .arg(&dir.0)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "bench mount failed: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let me = format!("daxfs-bench-{}-", std::process::id());
    assert!(
        !mounts
            .lines()
            .any(|l| l.contains("daxfs-bench-") && l.contains(&me)),
        "left mounted: {mounts}"
    );
    let left: Vec<_> = std::fs::read_dir(&dir.0).unwrap().collect();
    assert!(left.is_empty(), "bench mount left files behind: {left:?}");

    assert!(text.contains("memcpy bandwidth"), "{text}");
    assert!(
        text.contains("xfs (reflink, loop device): skipped: --no-xfs"),
        "{text}"
    );
    let dax = text.split("daxfs (FUSE)").nth(1).expect("a daxfs section");
    let tmpfs = text.split("\ntmpfs\n").nth(1).expect("a tmpfs section");
    for l in LABELS {
        assert!(tmpfs.contains(l), "tmpfs has no {l:?}:\n{text}");
        let line = dax
            .lines()
            .find(|x| x.contains(l))
            .unwrap_or_else(|| panic!("daxfs has no {l:?}:\n{text}"));
        assert!(line.contains("x tmpfs_"), "no ratio to tmpfs: {line}");
    }
    // Each workload's requests: the big file's writes reach the daemon
    // as writes, cp's copies as copy_file_range, the stat pass as lookups.
    let fuse: Vec<&str> = dax.lines().filter(|l| l.contains("FUSE:")).collect();
    assert_eq!(fuse.len(), LABELS.len(), "{text}");
    assert!(fuse[0].contains("write "), "{}", fuse[0]);
    assert!(fuse[5].contains("lookup "), "{}", fuse[5]);
    assert!(fuse[6].contains("copy_file_range "), "{}", fuse[6]);
    assert!(fuse[7].contains("copy_file_range "), "{}", fuse[7]);
}
