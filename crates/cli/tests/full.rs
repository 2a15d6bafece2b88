//! A device filled to ENOSPC by the command stays usable: the session's
//! final sync works, the image mounts again, fsck is clean, a media-error
//! report in a file's block is handled and `rm` frees space.
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_daxfs");

/// Runs `daxfs ARGS` with `stdin` as standard input. The image is in the
/// temporary directory, flushed with cache-line write-back instead of an
/// msync per commit (`--assume-pmem`), to keep thousands of commits fast.
fn run_with(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(BIN)
        .arg("--assume-pmem")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    out
}

fn text(o: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn free_blocks(img: &str) -> u64 {
    let o = run_with(&["info", img], b"");
    assert!(o.status.success(), "info: {}", text(&o));
    let s = String::from_utf8_lossy(&o.stdout).into_owned();
    let line = s
        .lines()
        .find(|l| l.starts_with("free blocks:"))
        .expect("free blocks line");
    line.split_whitespace().nth(2).unwrap().parse().unwrap()
}

/// The scenario: a 16 MiB image, `open -c /fN` and `pwrite 0 1`
/// for N = 0..5000 in one session on standard input.
#[test]
fn one_byte_files_fill_a_16m_image_and_it_stays_usable() {
    let dir = std::env::temp_dir().join(format!("daxfs-cli-full-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let img_path: PathBuf = dir.join("f.img");
    let img = img_path.to_str().unwrap();
    let o = run_with(&["mkfs", img, "--size", "16m"], b"");
    assert!(o.status.success(), "mkfs: {}", text(&o));
    let after_mkfs = free_blocks(img);
    let mut cmds = String::new();
    for n in 0..=5000 {
        cmds.push_str(&format!("open -c /f{n}\npwrite 0 1\n"));
    }
    let o = run_with(&["io", img], cmds.as_bytes());
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(err.contains("(ENOSPC)"), "the image filled: {}", text(&o));
    // Only the commands that met ENOSPC failed; the session's final sync
    // did not.
    assert!(err.lines().all(|l| l.ends_with("(ENOSPC)")), "{}", text(&o));
    assert!(!err.contains("daxfs:"), "final sync: {}", text(&o));
    let o = run_with(&["fsck", img], b"");
    assert!(o.status.success(), "fsck: {}", text(&o));
    // It mounts, handles a media error in a file's block, and deletes.
    let o = run_with(&["io", img, "-c", "open /f7", "-c", "fiemap"], b"");
    assert!(o.status.success(), "fiemap: {}", text(&o));
    // "0: [0..7]: S..E" in 512-byte units.
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let sector: u64 = out
        .split(": ")
        .nth(2)
        .and_then(|r| r.split("..").next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("fiemap output: {out}"));
    let at = format!("{:#x}", sector * 512);
    let o = run_with(&["io", img, "-c", &format!("inject-error {at} 4k")], b"");
    assert!(o.status.success(), "inject-error: {}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("data lost"),
        "{}",
        text(&o)
    );
    let o = run_with(&["io", img, "-c", "open /f7", "-c", "pread 0 1"], b"");
    assert!(
        !o.status.success(),
        "the lost byte is not read: {}",
        text(&o)
    );
    let o = run_with(&["io", img, "-c", "rm /f7"], b"");
    assert!(o.status.success(), "rm: {}", text(&o));
    let o = run_with(&["io", img, "-c", "rm /f1", "-c", "rm /f2"], b"");
    assert!(o.status.success(), "rm: {}", text(&o));
    let before = free_blocks(img);
    let mut rm = String::new();
    for n in (3..=5000).filter(|&n| n != 7) {
        rm.push_str(&format!("rm /f{n}\n"));
    }
    let o = run_with(&["io", img], rm.as_bytes());
    // Names the fill never created are ENOENT; nothing else fails.
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        err.lines().all(|l| l.ends_with("(ENOENT)")),
        "rm: {}",
        text(&o)
    );
    let after = free_blocks(img);
    assert!(after > before + 1000, "{before} -> {after} free blocks");
    // Less the bad block (quarantined until cleared) and the nodes of the
    // error log, the bad-block and data-loss trees, with their replicas.
    assert!(
        after + 16 >= after_mkfs,
        "{after} free, {after_mkfs} after mkfs"
    );
    let o = run_with(&["fsck", img], b"");
    assert!(o.status.success(), "fsck: {}", text(&o));
    let _ = std::fs::remove_dir_all(&dir);
}
