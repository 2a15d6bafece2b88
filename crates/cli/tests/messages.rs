//! What the command says reads as a user's words: errors name the object
//! by the path the user gave (never `inode 5`), and fsck's problems over a
//! damaged image are sentences without Rust's debug shapes.
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_daxfs");

/// A directory of its own for one test, removed at the end.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("daxfs-msgs-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self, f: &str) -> String {
        self.0.join(f).display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run_with(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(BIN)
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

fn run(args: &[&str]) -> Output {
    run_with(args, b"")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert!(o.status.success(), "daxfs {args:?} failed: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs and expects failure; returns standard error.
fn fails(args: &[&str]) -> String {
    let o = run(args);
    assert!(
        !o.status.success(),
        "daxfs {args:?} succeeded: {}",
        text(&o)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn mentions(text: &str, words: &[&str]) {
    for w in words {
        assert!(text.contains(w), "{text:?} does not mention {w:?}");
    }
}

/// An error line names no inode by number.
fn no_inode_number(text: &str) {
    assert!(
        !text.contains("inode "),
        "{text:?} names an inode by number"
    );
}

/// The device byte offset of the first extent in `fiemap` output
/// (`0: [0..199]: 2120..2319`, in 512-byte units).
fn physical(fiemap: &str) -> u64 {
    let l = fiemap.lines().next().expect("an extent");
    let p = l.rsplit(": ").next().unwrap();
    let start: u64 = p.split("..").next().unwrap().parse().unwrap();
    start * 512
}

/// Errors met while reading or writing a file the user named by path name
/// that path: the library words them by inode number.
#[test]
fn errors_name_paths() {
    let d = TempDir::new("paths");
    let img = d.path("a.img");
    ok(&["mkfs", &img, "--size", "16m"]);
    ok(&[
        "io",
        &img,
        "-c",
        "mkdir /d",
        "-c",
        "open -c /d/f",
        "-c",
        "pwrite 0 64k",
    ]);
    let fm = ok(&["io", &img, "-c", "open -r /d/f", "-c", "fiemap"]);
    let bad = physical(&fm) + 4096;
    ok(&["io", &img, "-c", &format!("inject-error {bad} 4k")]);
    // cat stops at the lost page, naming the file.
    let e = fails(&["cat", &img, "/d/f"]);
    mentions(&e, &["/d/f", "(EIO)"]);
    no_inode_number(&e);
    // cp reading it names the source.
    let e = fails(&["cp", &img, "/d/f", "/g"]);
    mentions(&e, &["/d/f", "(EIO)"]);
    no_inode_number(&e);
    // The io shell: a partial write into the lost block names the open file.
    let e = fails(&["io", &img, "-c", "open /d/f", "-c", "pwrite 4100 10"]);
    mentions(&e, &["/d/f", "(EIO)"]);
    no_inode_number(&e);
    // A put larger than the device names its destination, once.
    let o = run_with(&["put", &img, "/big"], &vec![1u8; 20 << 20]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let e = String::from_utf8_lossy(&o.stderr).into_owned();
    mentions(&e, &["/big", "(ENOSPC)"]);
    no_inode_number(&e);
    assert!(!e.contains("/big: /big"), "{e}");
}

/// Damage in every kind of metadata block (a field changed, the checksum
/// made right so that the block verifies): each problem fsck prints reads
/// as a sentence, with no Rust debug shapes (`Meta(InodeTree)`,
/// `DirTree { ino: 1 }`, `Some(..)`), and a problem about the file names
/// its path.
#[test]
fn fsck_problems_read_as_sentences() {
    let d = TempDir::new("fsck");
    let img = d.path("a.img");
    ok(&["mkfs", &img, "--size", "16m"]);
    ok(&[
        "io",
        &img,
        "-c",
        "mkdir /d",
        "-c",
        "open -c /d/f",
        "-c",
        "pwrite 0 64k",
        "-c",
        "pwrite 1m 4k",
        "-c",
        "link /d/f /d/g",
        "-c",
        "symlink /d/f /s",
    ]);
    ok(&["cp", "--reflink", &img, "/d/f", "/r"]);
    let fsmap: serde_json::Value = serde_json::from_str(&ok(&["fsmap", &img, "--json"])).unwrap();
    // One block of each kind of owner that is not file data or free space.
    let mut seen = std::collections::BTreeMap::new();
    for r in fsmap.as_array().unwrap() {
        let owner = &r["owner"];
        let kind = if let Some(k) = owner.get("metadata") {
            k.to_string()
        } else if owner["fork"] != "data" && owner.get("fork").is_some() {
            owner["fork"].to_string()
        } else {
            continue;
        };
        seen.entry(kind)
            .or_insert(r["physical"].as_u64().unwrap() / 4096);
    }
    assert!(seen.len() >= 5, "too few metadata kinds: {seen:?}");
    let pristine = std::fs::read(&img).unwrap();
    let mut lines = std::collections::BTreeSet::new();
    for &b in seen.values() {
        // Byte 4 is the block's kind: another kind, as a misdirected write.
        for at in [4usize, 40, 72, 100, 140, 300, 2000] {
            let mut bytes = pristine.clone();
            let blk: &mut [u8; 4096] = (&mut bytes[b as usize * 4096..][..4096])
                .try_into()
                .unwrap();
            blk[at] ^= if at == 4 { 1 } else { 0x5a };
            daxfs_format::fuzz::reseal(blk);
            // Every pointer to the block names its new checksum.
            daxfs::fuzz::point_at(&mut bytes, [b]);
            std::fs::write(&img, &bytes).unwrap();
            let o = run(&["fsck", &img]);
            let out = String::from_utf8_lossy(&o.stdout).into_owned();
            lines.extend(
                out.lines()
                    .filter(|l| l.starts_with("problem: "))
                    .map(String::from),
            );
        }
    }
    std::fs::write(&img, &pristine).unwrap();
    assert!(lines.len() >= 10, "too few problems found: {lines:#?}");
    let debug_shape = |l: &str| -> Option<String> {
        if l.contains('{') || l.contains('}') || l.contains('[') {
            return Some("braces".into());
        }
        // A tuple of numbers, as `{:?}` prints a key: "(67, 9223372036854775807".
        let b = l.as_bytes();
        for (i, _) in l.match_indices('(') {
            let rest = &b[i + 1..];
            let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
            if digits > 0 && rest[digits..].starts_with(b", ") {
                return Some("a tuple".into());
            }
        }
        if l.contains(" 1 blocks") || l.starts_with("1 blocks") {
            return Some("1 blocks".into());
        }
        for w in l.split(|c: char| !c.is_ascii_alphanumeric() && c != '_') {
            let caps = w.chars().filter(|c| c.is_ascii_uppercase()).count();
            let camel = w.starts_with(|c: char| c.is_ascii_uppercase())
                && caps >= 2
                && w.chars().any(|c| c.is_ascii_lowercase());
            if camel || ["Some", "None", "Ok", "Err"].contains(&w) {
                return Some(w.to_string());
            }
        }
        None
    };
    let bad: Vec<_> = lines
        .iter()
        .filter_map(|l| debug_shape(l).map(|w| format!("{w}: {l}")))
        .collect();
    assert!(bad.is_empty(), "debug shapes in fsck's problems: {bad:#?}");
    // Problems about a file or directory name its path where fsck can
    // find it (`(inode 5 is /r)`).
    assert!(
        lines
            .iter()
            .any(|l| l.contains(" is /d") || l.contains(" is /r")),
        "no problem names a path: {lines:#?}"
    );
}
