//! End-to-end tests of the mapping commands of `daxfs io` (mmap, mread,
//! mwrite, msync, munmap).
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, Output};

struct Scratch(PathBuf);
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(name: &str) -> Scratch {
    let d = std::env::temp_dir().join(format!("daxfs-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    Scratch(d)
}

fn daxfs(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_daxfs"))
        .args(args)
        .output()
        .expect("run daxfs")
}

fn ok(args: &[&str]) -> String {
    let o = daxfs(args);
    assert!(
        o.status.success(),
        "daxfs {args:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn io(image: &str, cmds: &[&str]) -> Output {
    let mut args = vec!["io", image];
    for c in cmds {
        args.push("-c");
        args.push(c);
    }
    daxfs(&args)
}

#[test]
fn mmap_mread_mwrite_msync_munmap() {
    let d = scratch("views");
    let im = d.0.join("pool.img");
    let im = im.to_str().unwrap();
    ok(&["mkfs", im, "--size", "64m"]);
    let out = ok(&[
        "io",
        im,
        "-c",
        "open -c /a",
        "-c",
        "pwrite -S 0x61 0 16k",
        "-c",
        "open -c /b",
        "-c",
        "reflink /a",
        "-c",
        "mmap 0 16k",
        "-c",
        "mread -v 4096 16",
        "-c",
        "mwrite -S 0x62 4096 10",
        "-c",
        "msync",
        "-c",
        "mread 0 16k",
        "-c",
        "munmap",
        "-c",
        "pread -v 4096 16",
        "-c",
        "fiemap",
    ]);
    assert!(out.contains("00001000:  61 61 61 61"), "{out}");
    assert!(out.contains("wrote 10/10 bytes at offset 4096"), "{out}");
    assert!(out.contains("read 16384/16384 bytes at offset 0"), "{out}");
    assert!(
        out.contains("00001000:  62 62 62 62 62 62 62 62 62 62 61 61"),
        "{out}"
    );
    // The store copied one block: /b has a block of its own in the middle.
    assert!(out.contains("shared"), "{out}");
    // /a kept its bytes; the store persisted across runs.
    let out = ok(&[
        "io",
        im,
        "-c",
        "open -r /a",
        "-c",
        "mmap 0 16k",
        "-c",
        "mread -v 4096 4",
        "-c",
        "open -r /b",
        "-c",
        "mmap -r 4k 4k",
        "-c",
        "mread -v 4096 4",
    ]);
    assert!(out.contains("00001000:  61 61 61 61"), "{out}");
    assert!(out.contains("00001000:  62 62 62 62"), "{out}");
    // Errors: no mapping, ranges outside it, read-only mappings.
    let o = io(im, &["open /a", "mread 0 1"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("EINVAL"));
    let o = io(im, &["open /a", "mmap 4k 4k", "mread 0 4k"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("outside the mapping"));
    let o = io(im, &["open -r /a", "mmap -w 0 4k"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("EACCES"));
    let o = io(im, &["open /a", "mmap -r 0 4k", "mwrite 0 1"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("EACCES"));
    // A load past end of file is SIGBUS, as for xfs_io on Linux.
    let o = io(im, &["open /a", "mmap 0 32k", "mread 16k 1"]);
    assert_eq!(o.status.signal(), Some(SIGBUS), "{o:?}");
}

/// SIGBUS on Linux (x86_64, aarch64).
const SIGBUS: i32 = 7;

#[test]
fn bench_views_smoke() {
    let d = scratch("bench-views");
    let out = ok(&[
        "bench",
        "views",
        "--quick",
        "--no-peer",
        "--json",
        "--size",
        "4m",
        "--faults",
        "16",
        "--huge-faults",
        "1",
        "--dir",
        d.0.to_str().unwrap(),
    ]);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    let names: Vec<&str> = doc["figures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    for n in [
        "memcpy",
        "view_load",
        "view_store",
        "cow_fault_4k_p50",
        "cow_fault_2m_p50",
        "hole_fault_4k_p50",
        "round_trip_p50",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    assert_eq!(
        std::fs::read_dir(&d.0).unwrap().count(),
        0,
        "scratch files left"
    );
}
