//! The `daxfs` command never loses data by surprise, and fails as Linux
//! tools do: `cp` onto itself, `mkfs` and `demo` over other data, `put` and
//! `cp` that fail half way, error messages and exit statuses.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_daxfs");

/// A directory of its own for one test, removed at the end.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("daxfs-safety-{}-{name}", std::process::id()));
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

fn run_in(dir: Option<&Path>, args: &[&str], stdin: &[u8]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(d) = dir {
        c.current_dir(d);
    }
    let mut child = c.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    out
}

fn run_with(args: &[&str], stdin: &[u8]) -> Output {
    run_in(None, args, stdin)
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

/// Runs and expects exit status `code`; returns standard error.
fn status(args: &[&str], code: i32) -> String {
    let o = run(args);
    assert_eq!(o.status.code(), Some(code), "daxfs {args:?}: {}", text(&o));
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn mentions(text: &str, words: &[&str]) {
    for w in words {
        assert!(text.contains(w), "{text:?} does not mention {w:?}");
    }
}

fn mkfs(d: &TempDir, name: &str, size: &str) -> String {
    let img = d.path(name);
    ok(&["mkfs", &img, "--size", size]);
    img
}

fn cat(img: &str, path: &str) -> Vec<u8> {
    let o = run(&["cat", img, path]);
    assert!(o.status.success(), "cat {path}: {}", text(&o));
    o.stdout
}

fn names(img: &str, dir: &str) -> String {
    ok(&["io", img, "-c", &format!("ls -l {dir}")])
}

/// `cp` whose source and destination are one inode (the same name, or a
/// hard link) is refused with EINVAL and leaves the file as it was.
#[test]
fn cp_onto_itself_is_refused() {
    let d = TempDir::new("same");
    let img = mkfs(&d, "a.img", "8m");
    let o = run_with(&["put", &img, "/q"], b"keep me");
    assert!(o.status.success(), "{}", text(&o));
    let e = status(&["cp", &img, "/q", "/q"], 1);
    mentions(&e, &["'/q' and '/q' are the same file", "(EINVAL)"]);
    assert_eq!(cat(&img, "/q"), b"keep me");
    ok(&["io", &img, "-c", "link /q /r2"]);
    let e = status(&["cp", "--reflink", &img, "/q", "/r2"], 1);
    mentions(&e, &["'/q' and '/r2' are the same file", "(EINVAL)"]);
    assert_eq!(cat(&img, "/r2"), b"keep me");
    // A different file is still copied.
    ok(&["cp", &img, "/q", "/other"]);
    assert_eq!(cat(&img, "/other"), b"keep me");
}

/// A failing `put` (ENOSPC) or `cp` (a directory) leaves the destination
/// as it was: the old content, or no file at all; no temporary name stays.
#[test]
fn failing_put_and_cp_change_nothing() {
    let d = TempDir::new("atomic");
    let img = mkfs(&d, "a.img", "8m");
    let o = run_with(&["put", &img, "/f"], b"old content");
    assert!(o.status.success(), "{}", text(&o));
    ok(&["io", &img, "-c", "chmod 600 /f"]);
    let big = vec![0x5au8; 16 << 20];
    let o = run_with(&["put", &img, "/f"], &big);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let now = cat(&img, "/f");
    assert!(
        now == b"old content",
        "the failed put left {} bytes",
        now.len()
    );
    mentions(&text(&o), &["(ENOSPC)"]);
    let o = run_with(&["put", &img, "/new"], &big);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let ls = names(&img, "/");
    assert!(!ls.contains("new") && !ls.contains(".daxfs-put"), "{ls}");
    // The space of the failed writes came back.
    let o = run_with(&["put", &img, "/f"], &big[..1 << 20]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(cat(&img, "/f") == big[..1 << 20], "the second put differs");
    // The replacement keeps the permissions of the file it replaced.
    mentions(&names(&img, "/"), &["-rw-------"]);
    // A directory source: EISDIR, and no empty destination.
    ok(&["io", &img, "-c", "mkdir /dir"]);
    for flags in [&["--reflink"][..], &[]] {
        let mut a = vec!["cp"];
        a.extend_from_slice(flags);
        a.extend_from_slice(&[&img, "/dir", "/dir2"]);
        let e = status(&a, 1);
        mentions(&e, &["/dir: is a directory (EISDIR)"]);
        let ls = names(&img, "/");
        assert!(!ls.contains("dir2") && !ls.contains(".daxfs-put"), "{ls}");
    }
    // A directory destination is refused too (the file is not put inside).
    let e = status(&["cp", &img, "/f", "/dir"], 1);
    mentions(&e, &["/dir: is a directory (EISDIR)"]);
    assert_eq!(
        ok(&["fsck", &img]).lines().last().unwrap_or("")[..5],
        *"clean"
    );
}

/// A `put` killed half way (as a crash) leaves no name behind: the
/// new file has none until it is complete, and its blocks come back at the
/// next mount; the destination keeps its old bytes.
#[test]
fn killed_put_leaves_no_name() {
    let d = TempDir::new("killed");
    let img = mkfs(&d, "k.img", "16m");
    let o = run_with(&["put", &img, "/f"], b"old bytes");
    assert!(o.status.success(), "{}", text(&o));
    let free = |img: &str| -> u64 {
        let v: serde_json::Value = serde_json::from_str(&ok(&["info", img, "--json"])).unwrap();
        v["free_blocks"].as_u64().expect("free_blocks")
    };
    let before = free(&img);
    for dst in ["/f", "/new"] {
        let mut child = Command::new(BIN)
            .args(["put", &img, dst])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        input.write_all(&vec![7u8; 2 << 20]).unwrap();
        // Its input still open, the put waits for more: kill it there.
        std::thread::sleep(std::time::Duration::from_millis(300));
        child.kill().unwrap();
        child.wait().unwrap();
        drop(input);
        let ls = names(&img, "/");
        assert!(!ls.contains(".daxfs-put") && !ls.contains("new"), "{ls}");
        assert!(cat(&img, "/f") == b"old bytes");
    }
    assert_eq!(
        free(&img),
        before,
        "the killed puts' blocks did not come back"
    );
    assert_eq!(
        ok(&["fsck", &img]).lines().last().unwrap_or("")[..5],
        *"clean"
    );
}

/// Writes `bytes` at `at` into a zero-filled file of `size` bytes.
fn image_with(path: &str, size: usize, at: usize, bytes: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8; size];
    v[at..at + bytes.len()].copy_from_slice(bytes);
    std::fs::write(path, &v).unwrap();
    v
}

/// `mkfs` over another file system's signature, swap or any data in the
/// first 64 KiB refuses without --force, names what it found and changes
/// no byte; a file of zeros is made without a word; --force overwrites.
#[test]
fn mkfs_refuses_foreign_data() {
    let d = TempDir::new("foreign");
    let p = d.path("x.img");
    let size = 8 << 20;
    let mut ext4 = vec![0u8; 100];
    ext4[56..58].copy_from_slice(&0xef53u16.to_le_bytes());
    ext4[96] = 0x40;
    let cases: [(usize, &[u8], &str); 6] = [
        (1024, &ext4, "an ext4 signature"),
        (0, b"XFSB", "an xfs signature"),
        (0x10040, b"_BHRfS_M", "a btrfs signature"),
        (4086, b"SWAPSPACE2", "a swap signature"),
        (
            0x8000,
            b"hello",
            "holds data (a non-zero byte at offset 0x8000",
        ),
        (
            0,
            b"text file\n",
            "holds data (a non-zero byte at offset 0x0",
        ),
    ];
    for (at, bytes, what) in cases {
        let before = image_with(&p, size, at, bytes);
        let e = status(&["mkfs", &p], 1);
        mentions(&e, &[what, "--force"]);
        assert!(std::fs::read(&p).unwrap() == before, "mkfs changed {what}");
        ok(&["mkfs", &p, "--force"]);
        ok(&["fsck", &p]);
    }
    // A daxfs is named with its label.
    ok(&["mkfs", &p, "--force", "--label", "mine"]);
    let e = status(&["mkfs", &p], 1);
    mentions(&e, &["already holds a daxfs file system (label \"mine\")"]);
    // Zeros (a fresh sparse file) need no --force.
    std::fs::remove_file(&p).unwrap();
    std::fs::File::create(&p)
        .unwrap()
        .set_len(size as u64)
        .unwrap();
    ok(&["mkfs", &p]);
}

/// `demo IMAGE` refuses an existing file that holds anything; without
/// IMAGE it may re-make the daxfs.img it made, but not another file there.
#[test]
fn demo_refuses_to_overwrite() {
    let d = TempDir::new("demo");
    let victim = d.path("victim.img");
    std::fs::write(&victim, b"precious text\n").unwrap();
    let e = status(&["demo", &victim, "--size", "16m"], 1);
    mentions(&e, &["holds data", "--force"]);
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious text\n");
    // A daxfs, even one labelled as the demo labels its own, is refused
    // by name when IMAGE is given.
    ok(&[
        "mkfs", &victim, "--size", "8m", "--force", "--label", "demo",
    ]);
    let e = status(&["demo", &victim, "--size", "16m"], 1);
    mentions(&e, &["already holds a daxfs file system (label \"demo\")"]);
    // The default image: made, then re-made.
    let dir = Path::new(&d.0);
    for _ in 0..2 {
        let o = run_in(Some(dir), &["demo", "--size", "16m"], b"");
        assert!(o.status.success(), "{}", text(&o));
    }
    // A daxfs.img that the demo did not make is refused.
    let own = d.path("daxfs.img");
    ok(&["mkfs", &own, "--force", "--label", "work"]);
    let o = run_in(Some(dir), &["demo", "--size", "16m"], b"");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    mentions(&text(&o), &["label \"work\""]);
}

/// Commands from standard input run on past a failure, but the exit
/// status says one failed; `#` starts a comment.
#[test]
fn io_script_exit_status() {
    let d = TempDir::new("script");
    let img = mkfs(&d, "a.img", "8m");
    let o = run_with(&["io", &img], b"open /nonexist\nopen -c /after\n");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    mentions(
        &text(&o),
        &["open: /nonexist: no such file or directory (ENOENT)"],
    );
    // The command after the failure ran.
    assert_eq!(cat(&img, "/after"), b"");
    let o = run_with(
        &["io", &img],
        b"# make a file\nopen -c /f\n  # indented comment\npwrite 0 4k\n",
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(cat(&img, "/f").len(), 4096);
}

/// fsck's exit status follows e2fsck: 0 clean, 4 problems left, 8 cannot
/// check, 16 usage.
#[test]
fn fsck_exit_status() {
    let d = TempDir::new("fsckexit");
    let img = mkfs(&d, "a.img", "8m");
    status(&["fsck", &img], 0);
    let e = status(&["fsck", &d.path("missing.img")], 8);
    mentions(&e, &["No such file or directory (ENOENT)"]);
    let junk = d.path("junk.img");
    std::fs::write(&junk, vec![7u8; 8 << 20]).unwrap();
    let e = status(&["fsck", &junk], 8);
    mentions(&e, &["not a daxfs file system"]);
    status(&["fsck"], 16);
    status(&["fsck", &img, "--bogus"], 16);
    // Corrupt the superblock's copy B (the last block): a problem left.
    let mut bytes = std::fs::read(&img).unwrap();
    let n = bytes.len();
    bytes[n - 4096 + 200] ^= 0x10;
    std::fs::write(&img, &bytes).unwrap();
    let o = run(&["fsck", &img]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    mentions(&text(&o), &["problem:", "INCONSISTENT"]);
}

/// Top-level errors say each thing once and end with the errno name.
#[test]
fn errors_say_each_thing_once() {
    let d = TempDir::new("msgs");
    let missing = d.path("x.img");
    let e = status(&["info", &missing], 1);
    assert_eq!(
        e,
        format!("daxfs: opening {missing}: No such file or directory (ENOENT)\n")
    );
    let img = mkfs(&d, "a.img", "8m");
    let e = status(&["cat", &img, "/nope"], 1);
    assert_eq!(e, "daxfs: /nope: no such file or directory (ENOENT)\n");
}

/// A short read says where and why it stopped.
#[test]
fn short_read_says_why() {
    let d = TempDir::new("short");
    let img = mkfs(&d, "a.img", "8m");
    ok(&["io", &img, "-c", "open -c /f", "-c", "pwrite 0 100k"]);
    let out = ok(&["io", &img, "-c", "open -r /f", "-c", "pread 0 1m"]);
    mentions(
        &out,
        &["read 102400/1048576 bytes at offset 0: stopped at 102400: the end of the file"],
    );
    // Lose the file's second 4 KiB page: a read from 0 stops there.
    let fm = ok(&["io", &img, "-c", "open -r /f", "-c", "fiemap"]);
    let phys = physical(&fm);
    ok(&[
        "io",
        &img,
        "-c",
        &format!("inject-error {} 4k", phys + 4096),
    ]);
    let out = ok(&["io", &img, "-c", "open -r /f", "-c", "pread 0 1m"]);
    mentions(
        &out,
        &["read 4096/1048576 bytes at offset 0: stopped at 4096: lost to a media error (EIO)"],
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

/// Media-error reports: badblocks names the bad part of each owner's
/// extent, its JSON has sectors and can be fed back to --import, scrub's
/// lost entries carry paths, fiemap marks the lost extent, counts agree in
/// number ("1 owner").
#[test]
fn media_error_output() {
    let d = TempDir::new("media");
    let img = mkfs(&d, "a.img", "16m");
    ok(&["io", &img, "-c", "open -c /a", "-c", "pwrite 0 1m"]);
    let fm = ok(&["io", &img, "-c", "open -r /a", "-c", "fiemap"]);
    let bad = physical(&fm) + 5 * 4096;
    ok(&["io", &img, "-c", &format!("inject-error {bad} 4k")]);
    let out = ok(&["badblocks", &img]);
    let s = bad / 512;
    // The owner row covers the bad page only: 8 sectors, file sectors 40..47.
    mentions(
        &out,
        &[&format!(
            "  0: [{s}..{}]: inode 2 data 40..47 /a 8 bad",
            s + 7
        )],
    );
    let j: serde_json::Value = serde_json::from_str(&ok(&["badblocks", &img, "--json"])).unwrap();
    let e = &j["badblocks"][0];
    assert_eq!(e["offset"].as_u64(), Some(s), "{j}");
    assert_eq!(e["length"].as_u64(), Some(8), "{j}");
    assert_eq!(e["byte_offset"].as_u64(), Some(bad), "{j}");
    assert_eq!(e["byte_length"].as_u64(), Some(4096), "{j}");
    assert_eq!(e["owners"][0]["length"].as_u64(), Some(4096), "{j}");
    assert_eq!(e["owners"][0]["owner"]["offset"].as_u64(), Some(5 * 4096));
    // Fed back, the list names the same range.
    let list = d.path("list.json");
    std::fs::write(&list, ok(&["badblocks", &img, "--json"])).unwrap();
    let out = ok(&["badblocks", &img, "--import", &list]);
    mentions(
        &out,
        &[
            "imported 1 range from",
            &format!("bad [{bad:#x}, +0x1000) (8 sectors at sector {s})"),
        ],
    );
    let o = run(&["scrub", &img, "--json"]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["lost"][0]["paths"][0], "/a", "{j}");
    let out = String::from_utf8_lossy(&run(&["scrub", &img]).stdout).into_owned();
    mentions(&out, &["lost data: /a (inode 2) bytes 20480..24576"]);
    let fm = ok(&["io", &img, "-c", "open -r /a", "-c", "fiemap"]);
    mentions(&fm, &["1: [40..47]: ", " lost\n"]);
    mentions(&ok(&["errors", &img]), &["error log (1 entry, 1 owner):"]);
}

/// info shows the feature flags, usage in readable units and inode counts;
/// --json keeps raw numbers.
#[test]
fn info_shows_features_and_units() {
    let d = TempDir::new("info");
    let img = mkfs(&d, "a.img", "8m");
    let out = ok(&["info", &img]);
    mentions(
        &out,
        &[
            "features:       replicas, reverse map",
            "blocks:         2048 (8388608 bytes), 8.0 MiB",
            "used blocks:    ",
            " MiB, ",
            "inodes:         1 in use, next inode number 2",
        ],
    );
    let j: serde_json::Value = serde_json::from_str(&ok(&["info", &img, "--json"])).unwrap();
    assert_eq!(j["replicas"], true);
    assert_eq!(j["reverse_map"], true);
    assert_eq!(j["next_inode"], 2);
    let bare = d.path("bare.img");
    ok(&["mkfs", &bare, "--size", "8m", "--no-rmap", "--no-replicas"]);
    mentions(&ok(&["info", &bare]), &["features:       none"]);
    let j: serde_json::Value = serde_json::from_str(&ok(&["info", &bare, "--json"])).unwrap();
    assert_eq!(j["reverse_map"], false);
}

/// A pwrite that runs out of space keeps its prefix and says how long it is.
#[test]
fn pwrite_at_enospc_says_what_it_wrote() {
    let d = TempDir::new("enospc");
    let img = mkfs(&d, "a.img", "8m");
    let o = run(&["io", &img, "-c", "open -c /f", "-c", "pwrite 0 16m"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = text(&o);
    mentions(&t, &["(ENOSPC)"]);
    let line = t.lines().find(|l| l.starts_with("wrote ")).expect(&t);
    let n: u64 = line["wrote ".len()..line.find('/').unwrap()]
        .parse()
        .unwrap();
    assert!(n > 0 && n < 16 << 20 && n.is_multiple_of(1 << 20), "{line}");
    assert_eq!(cat(&img, "/f").len() as u64, n);
}

/// Shell completions and manual pages come from the command's own
/// definitions; an unknown shell or command is refused.
#[test]
fn completions_and_man_pages() {
    let bash = ok(&["completions", "bash"]);
    mentions(
        &bash,
        &["_daxfs()", "clear-error", "--reflink", "complete -F _daxfs"],
    );
    mentions(
        &ok(&["completions", "zsh"]),
        &["#compdef daxfs", "badblocks"],
    );
    mentions(
        &ok(&["completions", "fish"]),
        &["complete -c daxfs", "scrub"],
    );
    status(&["completions", "tcsh"], 2);
    let man = ok(&["man"]);
    mentions(&man, &[".TH daxfs 1", ".SH SYNOPSIS", "clear\\-error"]);
    let fsck = ok(&["man", "fsck"]);
    mentions(&fsck, &[".TH daxfs-fsck 1", "16 usage error"]);
    let e = status(&["man", "nope"], 1);
    mentions(&e, &["no command \"nope\"", "(EINVAL)"]);
    // Every option in --help has a description.
    let help = ok(&["cp", "--help"]);
    mentions(
        &help,
        &[
            "--reflink      Share the source's blocks",
            "<DST>    The new file",
        ],
    );
}

/// An image another daxfs has open is refused (EBUSY), naming the holder's
/// process.
#[test]
fn already_open_names_the_holder() {
    let d = TempDir::new("locked");
    let img = mkfs(&d, "a.img", "8m");
    // `io` without -c holds the image while it waits for standard input.
    let hold = || {
        Command::new(BIN)
            .args(["io", &img])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut holder = hold();
    // Until the holder has the image open `info` succeeds; on a loaded
    // machine the holder may take seconds to get there. An `info` that had
    // the image at the moment the holder opened it makes the holder give up
    // (it is refused as this test expects `info` to be): start another.
    let mut e = String::new();
    for _ in 0..1200 {
        if holder.try_wait().unwrap().is_some() {
            holder = hold();
        }
        let o = run(&["info", &img]);
        e = String::from_utf8_lossy(&o.stderr).into_owned();
        if !o.status.success() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    drop(holder.stdin.take());
    holder.wait().unwrap();
    mentions(
        &e,
        &[
            &format!(
                "already open by another daxfs instance (process {})",
                holder.id()
            ),
            "(EBUSY)",
        ],
    );
    ok(&["info", &img]);
}
