//! The `daxfs` command, run as a separate process on image files: exit
//! status, standard output and standard error of every subcommand, with good
//! and bad input.
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_daxfs");

/// A directory of its own for one test, removed at the end.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("daxfs-cli-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self, f: &str) -> PathBuf {
        self.0.join(f)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `daxfs ARGS` with `stdin` as standard input.
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

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs and expects success; returns standard output.
fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert!(
        o.status.success(),
        "daxfs {args:?} failed: {}{}",
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// Runs and expects failure; returns standard error.
fn fails(args: &[&str]) -> String {
    let o = run(args);
    assert!(
        !o.status.success(),
        "daxfs {args:?} succeeded: {}",
        stdout(&o)
    );
    stderr(&o)
}

fn mentions(text: &str, words: &[&str]) {
    for w in words {
        assert!(text.contains(w), "{text:?} does not mention {w:?}");
    }
}

/// A fresh 8 MiB image.
fn mkfs(dir: &TempDir, name: &str) -> String {
    let img = dir.path(name).display().to_string();
    let out = ok(&["mkfs", &img, "--size", "8m"]);
    mentions(&out, &["made daxfs on", "2048 blocks of 4096 bytes"]);
    img
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("bad JSON {text:?}: {e}"))
}

#[test]
fn mkfs_creates_and_refuses_to_overwrite() {
    let d = TempDir::new("mkfs");
    let img = mkfs(&d, "a.img");
    assert_eq!(std::fs::metadata(&img).unwrap().len(), 8 << 20);
    let e = fails(&["mkfs", &img]);
    mentions(&e, &["already holds a daxfs file system", "--force"]);
    let e = fails(&["mkfs", &img, "--size", "8m"]);
    mentions(&e, &["already holds a daxfs file system"]);
    // Resizing an image needs --force too.
    let e = fails(&["mkfs", &img, "--size", "16m"]);
    mentions(&e, &["exists with 8388608 bytes, not 16777216", "--force"]);
    ok(&["io", &img, "-c", "mkdir /old"]);
    let out = ok(&["mkfs", &img, "--force", "--label", "fresh"]);
    mentions(&out, &["made daxfs on"]);
    // The old file system is gone.
    let e = fails(&["io", &img, "-c", "stat /old"]);
    mentions(&e, &["ENOENT"]);
    let i = json(&ok(&["info", &img, "--json"]));
    assert_eq!(i["label"], "fresh");
}

#[test]
fn info_text_and_json() {
    let d = TempDir::new("info");
    let img = mkfs(&d, "a.img");
    let out = ok(&["info", &img]);
    mentions(
        &out,
        &[
            "format version: 6",
            "block size:     4096",
            "blocks:         2048 (8388608 bytes)",
            "inodes:         1",
        ],
    );
    let i = json(&ok(&["info", &img, "--json"]));
    assert_eq!(i["format_version"], 6);
    assert_eq!(i["block_size"], 4096);
    assert_eq!(i["total_blocks"], 2048);
    assert_eq!(i["inodes"], 1);
    let (total, free, used) = (
        i["total_blocks"].as_u64().unwrap(),
        i["free_blocks"].as_u64().unwrap(),
        i["used_blocks"].as_u64().unwrap(),
    );
    assert_eq!(free + used, total);
    assert!(free > total * 9 / 10);
    assert!(i["uuid"].as_str().unwrap().len() == 32);
    assert!(i["recovered_transaction"].is_null());
    assert!(i["persistence"].is_string());
}

#[test]
fn populate_maps_the_whole_image_at_open() {
    use std::os::unix::fs::MetadataExt;
    let d = TempDir::new("populate");
    // A sparse image: mkfs writes only its metadata.
    let img = d.path("a.img").display().to_string();
    std::fs::File::create(&img)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    ok(&["mkfs", &img]);
    let allocated = |p: &str| std::fs::metadata(p).unwrap().blocks() * 512;
    assert!(allocated(&img) < 4 << 20, "{}", allocated(&img));
    let out = ok(&[
        "--populate",
        "io",
        &img,
        "-c",
        "open -c /f",
        "-c",
        "pwrite 0 4096",
    ]);
    mentions(&out, &["wrote 4096"]);
    // Populating allocated every page of the image.
    assert!(allocated(&img) >= 8 << 20, "{}", allocated(&img));
    let out = ok(&["info", &img, "--populate"]);
    mentions(&out, &["format version: 6"]);
}

#[test]
fn io_commands_and_their_output() {
    let d = TempDir::new("io");
    let img = mkfs(&d, "a.img");
    let out = ok(&[
        "io",
        &img,
        "-c",
        "open -c /f",
        "-c",
        "pwrite -S 0x61 0 8k",
        "-c",
        "pread -v 0 16",
        "-c",
        "stat",
        "-c",
        "fiemap",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "wrote 8192/8192 bytes at offset 0");
    assert_eq!(
        lines[1],
        "00000000:  61 61 61 61 61 61 61 61 61 61 61 61 61 61 61 61  aaaaaaaaaaaaaaaa"
    );
    assert_eq!(lines[2], "read 16/16 bytes at offset 0");
    assert!(lines.contains(&"stat.type = regular file"), "{out}");
    assert!(lines.contains(&"stat.size = 8192"), "{out}");
    assert!(lines.contains(&"stat.blocks = 16"), "{out}");
    assert!(lines.contains(&"stat.nlink = 1"), "{out}");
    let fiemap: Vec<&&str> = lines.iter().filter(|l| l.starts_with("0: ")).collect();
    assert_eq!(fiemap.len(), 1, "{out}");
    assert!(fiemap[0].starts_with("0: [0..15]: "), "{out}");
    // The data is there for the next process.
    let out = ok(&["io", &img, "-c", "open -r /f", "-c", "pread 4090 100"]);
    mentions(&out, &["read 100/100 bytes at offset 4090"]);
    let out = ok(&["io", &img, "-c", "ls -l /"]);
    mentions(&out, &["8192", " f"]);
}

#[test]
fn failing_command_stops_the_rest() {
    let d = TempDir::new("fail");
    let img = mkfs(&d, "a.img");
    let o = run(&["io", &img, "-c", "rmdir /nonexistent", "-c", "mkdir /after"]);
    assert!(!o.status.success());
    assert_eq!(
        stderr(&o).trim(),
        "rmdir: /nonexistent: no such file or directory (ENOENT)"
    );
    // The mkdir after the failing command did not run.
    let e = fails(&["io", &img, "-c", "stat /after"]);
    mentions(&e, &["stat: /after: no such file or directory (ENOENT)"]);
    let o = run(&[
        "io", &img, "-c", "mkdir /x", "-c", "mkdir /x", "-c", "mkdir /y",
    ]);
    assert!(!o.status.success());
    assert_eq!(stderr(&o).trim(), "mkdir: /x: file exists (EEXIST)");
    ok(&["io", &img, "-c", "stat /x"]);
    fails(&["io", &img, "-c", "stat /y"]);
    // Output of the commands before the failure is kept.
    let o = run(&[
        "io",
        &img,
        "-c",
        "open -c /f",
        "-c",
        "pwrite 0 1k",
        "-c",
        "rm /x",
    ]);
    assert!(!o.status.success());
    mentions(&stdout(&o), &["wrote 1024/1024 bytes at offset 0"]);
    mentions(&stderr(&o), &["rm: /x: is a directory (EISDIR)"]);
    let e = fails(&["io", &img, "-c", "pread 0 10"]);
    mentions(&e, &["pread: no file is open (use open PATH) (EBADF)"]);
}

#[test]
fn put_then_cat_returns_the_same_bytes() {
    let d = TempDir::new("putcat");
    let img = mkfs(&d, "a.img");
    let data = pattern(42, 300 * 1024 + 123);
    let o = run_with(&["put", &img, "/dir-less-file"], &data);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&["cat", &img, "/dir-less-file"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(o.stdout == data, "cat returns other bytes than put stored");
    // put truncates: a shorter file replaces the longer one.
    let o = run_with(&["put", &img, "/dir-less-file"], b"short");
    assert!(o.status.success());
    assert_eq!(run(&["cat", &img, "/dir-less-file"]).stdout, b"short");
    let e = fails(&["cat", &img, "/missing"]);
    mentions(&e, &["/missing: no such file or directory"]);
    let e = fails(&["put", &img, "/no/such/dir/f"]);
    mentions(&e, &["no such file or directory"]);
    let out = ok(&["fsck", &img]);
    mentions(&out, &["clean: 2 inodes"]);
}

/// The block number of the inode tree's root, from the superblock.
fn inode_tree_root(img: &Path) -> u64 {
    let mut f = std::fs::File::open(img).unwrap();
    let mut sb = [0u8; 4096];
    f.read_exact(&mut sb).unwrap();
    u64::from_le_bytes(sb[160..168].try_into().unwrap())
}

#[test]
fn fsck_clean_and_corrupt() {
    let d = TempDir::new("fsck");
    let img = mkfs(&d, "a.img");
    ok(&[
        "io",
        &img,
        "-c",
        "mkdir /d",
        "-c",
        "open -c /d/f",
        "-c",
        "pwrite 0 10k",
    ]);
    let out = ok(&["fsck", &img]);
    mentions(
        &out,
        &["clean: 3 inodes (2 directories, 1 files, 0 symlinks)"],
    );
    let j = json(&ok(&["fsck", &img, "--json"]));
    assert_eq!(j["clean"], true);
    assert_eq!(j["problems"].as_array().unwrap().len(), 0);
    assert_eq!(j["files"], 1);
    // Flip a byte in the inode table's root block.
    let b = inode_tree_root(Path::new(&img));
    let mut bytes = std::fs::read(&img).unwrap();
    bytes[b as usize * 4096 + 1000] ^= 0x20;
    std::fs::write(&img, &bytes).unwrap();
    let o = run(&["fsck", &img]);
    assert!(!o.status.success());
    let out = stdout(&o);
    mentions(
        &out,
        &[
            &format!(
                "problem: inode table (block {b}): does not verify (block {b}: checksum mismatch"
            ),
            "its replica",
            "INCONSISTENT",
        ],
    );
    let o = run(&["fsck", &img, "--json"]);
    assert!(!o.status.success());
    let j = json(&stdout(&o));
    assert_eq!(j["clean"], false);
    let probs = j["problems"].as_array().unwrap();
    assert!(
        probs
            .iter()
            .any(|p| p["structure"] == "inode table" && p["block"] == b),
        "{probs:?}"
    );
    // fsck changed nothing; using the file system reads the node from its
    // replica and rebuilds it on a fresh block, after which fsck is clean.
    assert!(std::fs::read(&img).unwrap() == bytes);
    ok(&["io", &img, "-c", "stat /d"]);
    assert_ne!(inode_tree_root(Path::new(&img)), b);
    let out = ok(&["fsck", &img]);
    mentions(&out, &["clean"]);
}

#[test]
fn interactive_mode_reads_commands_from_stdin() {
    let d = TempDir::new("interactive");
    let img = mkfs(&d, "a.img");
    let script = b"open -c /g\npwrite -S 7 0 4k\n\nbogus command\nstat\nrmdir /nope\nmkdir /later\nquit\nmkdir /never\n";
    let o = run_with(&["io", &img], script);
    // Errors are reported and the session goes on, up to quit; the exit
    // status says that some failed.
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = stdout(&o);
    mentions(
        &out,
        &["wrote 4096/4096 bytes at offset 0", "stat.size = 4096"],
    );
    let err = stderr(&o);
    mentions(
        &err,
        &[
            "bogus: unknown command \"bogus\" (try help) (EINVAL)",
            "rmdir: /nope: no such file or directory (ENOENT)",
        ],
    );
    ok(&["io", &img, "-c", "stat /later"]);
    fails(&["io", &img, "-c", "stat /never"]);
    // End of input ends the session too.
    let o = run_with(&["io", &img], b"mkdir /eof");
    assert!(o.status.success());
    ok(&["io", &img, "-c", "stat /eof"]);
}

#[test]
fn size_suffixes() {
    let d = TempDir::new("sizes");
    let img = d.path("a.img").display().to_string();
    ok(&["mkfs", &img, "--size", "4M"]);
    assert_eq!(std::fs::metadata(&img).unwrap().len(), 4 << 20);
    let img2 = d.path("b.img").display().to_string();
    ok(&["mkfs", &img2, "--size", "0x500000"]);
    assert_eq!(std::fs::metadata(&img2).unwrap().len(), 5 << 20);
    let out = ok(&[
        "io",
        &img,
        "-c",
        "open -c /f",
        "-c",
        "pwrite 1k 2k",
        "-c",
        "truncate 3g",
        "-c",
        "stat",
        "-c",
        "pwrite 0x10 16",
    ]);
    mentions(
        &out,
        &[
            "wrote 2048/2048 bytes at offset 1024",
            "stat.size = 3221225472",
            "wrote 16/16 bytes at offset 16",
        ],
    );
    let out = ok(&[
        "io",
        &img,
        "-c",
        "open /f",
        "-c",
        "truncate 1t",
        "-c",
        "stat",
    ]);
    mentions(&out, &["stat.size = 1099511627776"]);
}

#[test]
fn wrong_arguments() {
    let d = TempDir::new("args");
    let img = mkfs(&d, "a.img");
    // The command line itself.
    let e = fails(&["frobnicate"]);
    mentions(&e, &["unrecognized subcommand 'frobnicate'"]);
    let e = fails(&["mkfs"]);
    mentions(&e, &["required", "<IMAGE>"]);
    let e = fails(&["info", &img, "--bogus"]);
    mentions(&e, &["unexpected argument '--bogus'"]);
    let missing = d.path("missing.img").display().to_string();
    let e = fails(&["mkfs", &missing]);
    mentions(&e, &["does not exist: give --size to create it"]);
    let e = fails(&["mkfs", &missing, "--size", "12q"]);
    mentions(&e, &["unknown size suffix 'q' in \"12q\""]);
    let e = fails(&["mkfs", &missing, "--size", "1m"]);
    mentions(&e, &["too small", "4194304"]);
    assert!(
        !Path::new(&missing).exists(),
        "a failed mkfs left its new image behind"
    );
    let e = fails(&["mkfs", &missing, "--size", "4097"]);
    mentions(&e, &["multiple of 4096"]);
    let e = fails(&["info", &missing]);
    mentions(&e, &["opening", "missing.img", "No such file or directory"]);
    // Not a daxfs image.
    let text = d.path("text.img");
    std::fs::write(&text, vec![b'x'; 4 << 20]).unwrap();
    let e = fails(&["info", &text.display().to_string()]);
    mentions(&e, &["not a daxfs file system"]);
    // Shell commands: unknown, missing operands, bad sizes and values.
    for (cmd, msg) in [
        ("frob", "frob: unknown command \"frob\" (try help) (EINVAL)"),
        (
            "pwrite 0",
            "pwrite: usage: pwrite [-S BYTE] OFF LEN (EINVAL)",
        ),
        ("mkdir", "mkdir: usage: mkdir PATH (EINVAL)"),
        ("rename /a", "rename: usage: rename FROM TO (EINVAL)"),
        ("pread 0 12q", "unknown size suffix 'q'"),
        ("pread x 1", "pread: unknown size suffix 'x' in \"x\""),
        ("pread 1.5 1", "pread: bad size \"1.5\" (EINVAL)"),
        ("open -c -S /f", "open: unknown option -S (EINVAL)"),
        ("mkdir -p /a/b", "mkdir: unknown option -p (EINVAL)"),
        ("pwrite -S", "pwrite: -S needs a value (EINVAL)"),
        ("chmod 9z /", "chmod: chmod: MODE is octal (EINVAL)"),
        ("open 'unterminated", "unterminated quote"),
        ("pwrite 0 99999999999999999999999", "pwrite: bad size"),
        ("pwrite 0 99999999999t", "is too large"),
    ] {
        let e = fails(&["io", &img, "-c", cmd]);
        mentions(&e, &[msg]);
    }
    let e = fails(&["io", &img, "-c", "open -c /f", "-c", "pwrite -S 300 0 1"]);
    mentions(&e, &["-S takes a byte value"]);
    let e = fails(&[
        "io",
        &img,
        "-c",
        "open -c /f",
        "-c",
        "pwrite 0x7fffffffffffffff 2",
    ]);
    mentions(&e, &["file too large", "(EFBIG)"]);
    // Nothing changed but the file the last two sessions opened with -c.
    let out = ok(&["fsck", &img]);
    mentions(&out, &["clean: 2 inodes (1 directories, 1 files"]);
    let out = ok(&["io", &img, "-c", "open /f", "-c", "stat"]);
    mentions(&out, &["stat.size = 0"]);
}

#[test]
fn second_process_is_refused() {
    let d = TempDir::new("locked");
    let img = mkfs(&d, "a.img");
    // A shell that holds the image open, waiting for commands on a pipe.
    let mut holder = Command::new(BIN)
        .args(["io", &img])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to_holder = holder.stdin.take().unwrap();
    let mut from_holder = BufReader::new(holder.stdout.take().unwrap());
    // Once it answers a command, it has the image mounted.
    to_holder.write_all(b"stat /\n").unwrap();
    to_holder.flush().unwrap();
    let mut line = String::new();
    from_holder.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "stat.ino = 1");
    for args in [
        vec!["info", img.as_str()],
        vec!["fsck", img.as_str()],
        vec!["io", img.as_str(), "-c", "mkdir /x"],
        vec!["mkfs", img.as_str(), "--force"],
    ] {
        let e = fails(&args);
        mentions(&e, &["already open by another daxfs instance"]);
    }
    // The holder is unaffected and can still work.
    to_holder.write_all(b"mkdir /mine\n").unwrap();
    drop(to_holder);
    let status = holder.wait().unwrap();
    assert!(status.success());
    ok(&["io", &img, "-c", "stat /mine"]);
    fails(&["io", &img, "-c", "stat /x"]);
}

#[test]
fn info_with_impossible_counts() {
    let d = TempDir::new("counts");
    let img = mkfs(&d, "a.img");
    // Both superblock copies claim more free blocks than there are.
    let mut bytes = std::fs::read(&img).unwrap();
    let last = bytes.len() - 4096;
    for at in [0, last] {
        let blk: &mut [u8; 4096] = (&mut bytes[at..at + 4096]).try_into().unwrap();
        blk[144..152].copy_from_slice(&u64::MAX.to_le_bytes());
        daxfs_format::fuzz::reseal(blk);
    }
    std::fs::write(&img, &bytes).unwrap();
    let o = run(&["fsck", &img]);
    assert!(!o.status.success());
    mentions(
        &stdout(&o),
        &[
            "problem: superblock (block 0): free_blocks 18446744073709551615 but the free-space tree holds",
        ],
    );
    // Mounting (info mounts) recounts them from the free-space tree.
    let i = json(&ok(&["info", &img, "--json"]));
    assert!(i["free_blocks"].as_u64().unwrap() < i["total_blocks"].as_u64().unwrap());
    assert!(i["used_blocks"].as_u64().unwrap() > 0);
    ok(&["info", &img]);
    ok(&["fsck", &img]);
}

/// A trailing slash or `/.` after a file: ENOTDIR, EISDIR for a create
/// (`open -c`, `put`), as Linux gives them; directories with one work.
#[test]
fn trailing_slash_after_a_file() {
    let d = TempDir::new("slash");
    let img = mkfs(&d, "a.img");
    ok(&["io", &img, "-c", "open -c /s1", "-c", "pwrite 0 100"]);
    for (cmd, errno) in [
        ("rm /s1/", "ENOTDIR"),
        ("stat /s1/.", "ENOTDIR"),
        ("open /s1/.", "ENOTDIR"),
        ("open -c /new/", "EISDIR"),
        ("rename /s1/ /z", "ENOTDIR"),
        ("rename /s1 /z/", "ENOTDIR"),
        ("link /s1/ /x", "ENOTDIR"),
        ("link /s1 /x/", "ENOENT"),
        ("mkdir /s1/", "EEXIST"),
        ("ls /s1/", "ENOTDIR"),
    ] {
        let e = fails(&["io", &img, "-c", cmd]);
        mentions(&e, &[errno]);
    }
    let o = run_with(&["put", &img, "/p/"], b"data");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    mentions(&stderr(&o), &["/p/", "is a directory"]);
    let o = run(&["cat", &img, "/s1/."]);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());
    mentions(&stderr(&o), &["not a directory"]);
    let out = ok(&[
        "io",
        &img,
        "-c",
        "mkdir /d/",
        "-c",
        "rename /d/ /e/",
        "-c",
        "ls /e/",
        "-c",
        "rmdir /e/",
        "-c",
        "ls /",
    ]);
    assert!(!out.contains("e\n") && out.contains("s1"), "{out}");
    assert_eq!(
        ok(&["io", &img, "-c", "stat /s1"])
            .lines()
            .find(|l| l.starts_with("stat.size"))
            .unwrap(),
        "stat.size = 100"
    );
}

/// Device ranges of `clear-error` and `inject-error`: outside the device
/// or overflowing are EINVAL, an unaligned clear is EINVAL, an unaligned
/// injection is rounded out to pages with a note, and a clear of memory
/// that was not bad says so.
#[test]
fn error_ranges_are_checked() {
    let d = TempDir::new("ranges");
    let img = mkfs(&d, "a.img");
    for (off, len) in [
        ("0xfffffffffffff000", "4096"),
        ("1g", "4k"),
        ("8m", "4k"),
        ("0", "0"),
    ] {
        let e = fails(&["io", &img, "-c", &format!("inject-error {off} {len}")]);
        mentions(&e, &["EINVAL"]);
        let e = fails(&["clear-error", &img, off, len]);
        mentions(&e, &["invalid argument"]);
        assert!(!e.contains("cleared"), "{e}");
    }
    let e = fails(&["clear-error", &img, "1g", "4k"]);
    mentions(&e, &["the device ends at 0x800000"]);
    assert!(ok(&["badblocks", &img]).contains("no bad ranges"));
    let out = ok(&["io", &img, "-c", "inject-error 0x600100 10"]);
    mentions(
        &out,
        &["note: [0x600100, +0xa) is not 4 KiB aligned: the pages [0x600000, +0x1000) went bad"],
    );
    let e = fails(&["clear-error", &img, "0x600100", "4k"]);
    mentions(&e, &["multiples of 4096"]);
    let out = ok(&["clear-error", &img, "0x600000", "4k"]);
    mentions(&out, &["cleared [0x600000, +0x1000): 4096 bytes were bad"]);
    let out = ok(&["clear-error", &img, "0x600000", "4k"]);
    mentions(&out, &["nothing to clear"]);
    assert!(ok(&["badblocks", &img]).contains("no bad ranges"));
}

/// Standard output whose reader has gone (`daxfs info IMG | true`): every
/// command stops quietly, with status 141 (128 + SIGPIPE, as a shell
/// reports for coreutils), no panic and no message.
#[test]
fn closed_stdout_stops_quietly() {
    let d = TempDir::new("epipe");
    let img = mkfs(&d, "a.img");
    ok(&["io", &img, "-c", "open -c /f", "-c", "pwrite 0 64k"]);
    let demo = d.path("demo.img").display().to_string();
    let other = mkfs(&d, "b.img");
    let cases: Vec<Vec<&str>> = vec![
        vec!["info", &img],
        vec!["info", &img, "--json"],
        vec!["fsck", &img],
        vec!["fsmap", &img],
        vec!["errors", &img],
        vec!["badblocks", &img],
        vec!["scrub", &img],
        vec!["mkfs", &other, "--force"],
        vec!["demo", &demo, "--size", "16m"],
        vec!["cat", &img, "/f"],
        vec!["io", &img, "-c", "stat /f", "-c", "mkdir /later"],
    ];
    for args in &cases {
        let (r, w) = std::io::pipe().unwrap();
        drop(r);
        let o = Command::new(BIN)
            .args(args)
            .stdin(Stdio::null())
            .stdout(w)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(141), "{args:?}: {:?} {err}", o.status);
        assert!(err.is_empty(), "{args:?}: {err}");
    }
    // The io shell stopped at the first command whose output was lost.
    let e = fails(&["io", &img, "-c", "stat /later"]);
    mentions(&e, &["ENOENT"]);
    assert!(ok(&["fsck", &img]).starts_with("clean"));
}

/// A write that returned is not lost when the process is killed: a session
/// extends a file with `pwrite` (no fsync), makes a directory, and is
/// killed (SIGKILL, so nothing runs at exit); the next session sees both
/// the directory and the file's new size and bytes.
#[test]
fn killed_session_keeps_its_returned_writes() {
    let d = TempDir::new("killed");
    let img = mkfs(&d, "a.img");
    ok(&[
        "io",
        &img,
        "-c",
        "open -c /f",
        "-c",
        "pwrite 0 100",
        "-c",
        "fsync",
    ]);
    let mut child = Command::new(BIN)
        .args(["io", &img])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input
        .write_all(b"open /f\npwrite -S 0x42 100 100\nmkdir /after\nstat /after\n")
        .unwrap();
    input.flush().unwrap();
    // Wait until the session has done all of it, then kill it.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = vec![];
    loop {
        let l = lines
            .next()
            .unwrap_or_else(|| panic!("the session ended early: {seen:?}"))
            .unwrap();
        let done = l == "stat.type = directory";
        seen.push(l);
        if done {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    drop(input);
    let out = ok(&[
        "io",
        &img,
        "-c",
        "stat /after",
        "-c",
        "stat /f",
        "-c",
        "open /f",
        "-c",
        "pread -v 96 8",
    ]);
    mentions(&out, &["stat.size = 200", "cd cd cd cd 42 42 42 42"]);
    assert!(ok(&["fsck", &img]).starts_with("clean"));
}

/// The error log names who owned a cleared block: a block a file still owns
/// is logged as that file's, never as "free space: cleared".
#[test]
fn a_cleared_file_block_is_logged_as_the_files() {
    let d = TempDir::new("clearlog");
    let img = mkfs(&d, "a.img");
    ok(&["io", &img, "-c", "open -c /f", "-c", "pwrite 0 64k"]);
    let rows: serde_json::Value = serde_json::from_str(&ok(&["fsmap", &img, "--json"])).unwrap();
    let phys = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["owner"]["fork"] == "data")
        .expect("the file's data in fsmap")["physical"]
        .as_u64()
        .unwrap();
    ok(&["io", &img, "-c", &format!("inject-error {phys:#x} 4k")]);
    ok(&["clear-error", &img, &format!("{phys:#x}"), "4k"]);
    let log = ok(&["errors", &img]);
    let cleared: Vec<&str> = log.lines().filter(|l| l.contains("cleared")).collect();
    assert_eq!(cleared.len(), 1, "{log}");
    assert!(cleared[0].contains("/f offset 0: cleared"), "{log}");
    assert!(!log.contains("free space: cleared"), "{log}");
}
