//! Trees in and out: `daxfs mkfs IMG --from DIR`, `daxfs import IMG HOSTDIR
//! [DEST]` and `daxfs export IMG [SRC] HOSTDIR`, with modes, owners, times,
//! symlinks, hard links and holes; bad input; a tree larger than the device
//! (ENOSPC, nothing half-imported); a damaged file exported around its lost
//! range.
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_daxfs");

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("daxfs-trees-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self, f: &str) -> PathBuf {
        self.0.join(f)
    }
    fn s(&self, f: &str) -> String {
        self.path(f).display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(args: &[&str]) -> Output {
    let mut child = Command::new(BIN)
        .arg("--assume-pmem")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take();
    child.wait_with_output().unwrap()
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
    assert!(o.status.success(), "daxfs {args:?}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn fails(args: &[&str]) -> String {
    let o = run(args);
    assert!(
        !o.status.success(),
        "daxfs {args:?} succeeded: {}",
        text(&o)
    );
    text(&o)
}

fn io(img: &str, cmds: &[&str]) -> String {
    let mut a = vec!["io", img];
    for c in cmds {
        a.extend(["-c", c]);
    }
    ok(&a)
}

/// A host tree: a file with an old mtime and mode 0600, a sparse file with
/// data in the middle, a hard link pair, a relative symlink, a directory of
/// mode 0751, a FIFO of mode 0640 and a socket; a character device 1:3
/// when the test may make one (returns whether it did).
fn host_tree(root: &Path) -> bool {
    std::fs::create_dir_all(root.join("sub/deep")).unwrap();
    std::fs::write(root.join("a"), b"hello").unwrap();
    std::fs::set_permissions(root.join("a"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let f = std::fs::File::options()
        .write(true)
        .open(root.join("a"))
        .unwrap();
    let t = std::time::UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 250_000_000);
    f.set_times(std::fs::FileTimes::new().set_modified(t).set_accessed(t))
        .unwrap();
    drop(f);
    let mut sp = std::fs::File::create(root.join("sub/sparse")).unwrap();
    sp.set_len(3 << 20).unwrap();
    use std::io::Seek;
    sp.seek(std::io::SeekFrom::Start(1 << 20)).unwrap();
    sp.write_all(&vec![0x5a; 8192]).unwrap();
    drop(sp);
    std::fs::hard_link(root.join("a"), root.join("sub/deep/a-link")).unwrap();
    std::os::unix::fs::symlink("../a", root.join("sub/to-a")).unwrap();
    std::fs::set_permissions(root.join("sub"), std::fs::Permissions::from_mode(0o751)).unwrap();
    let fifo = root.join("fifo");
    assert!(
        Command::new("mkfifo")
            .arg("-m")
            .arg("640")
            .arg(&fifo)
            .status()
            .is_ok_and(|s| s.success())
    );
    // A socket's name stays after its listener closes.
    drop(std::os::unix::net::UnixListener::bind(root.join("sock")).unwrap());
    Command::new("mknod")
        .arg(root.join("null"))
        .args(["c", "1", "3"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Field `name` of `stat` output.
fn field(stat: &str, name: &str) -> String {
    stat.lines()
        .find_map(|l| l.strip_prefix(&format!("stat.{name} = ")))
        .unwrap_or_else(|| panic!("no {name} in {stat}"))
        .to_string()
}

fn check_imported(img: &str, at: &str, dev: bool) {
    let j = |p: &str| format!("{}/{p}", at.trim_end_matches('/'));
    let a = io(img, &[&format!("stat {}", j("a"))]);
    assert_eq!(field(&a, "size"), "5");
    assert_eq!(field(&a, "nlink"), "2");
    assert!(field(&a, "mode").starts_with("0600 "), "{a}");
    assert!(
        field(&a, "mtime").ends_with("(1700000000.250000000)"),
        "{a}"
    );
    let l = io(img, &[&format!("stat {}", j("sub/deep/a-link"))]);
    assert_eq!(
        field(&l, "ino"),
        field(&a, "ino"),
        "a hard link stays one inode"
    );
    let s = io(img, &[&format!("stat {}", j("sub/sparse"))]);
    assert_eq!(field(&s, "size"), (3u64 << 20).to_string());
    assert_eq!(
        field(&s, "blocks"),
        "16",
        "only the data blocks: holes stay holes"
    );
    let d = io(img, &[&format!("stat {}", j("sub"))]);
    assert!(field(&d, "mode").starts_with("0751 "), "{d}");
    assert_eq!(io(img, &[&format!("readlink {}", j("sub/to-a"))]), "../a\n");
    let r = io(
        img,
        &[
            &format!("open -r {}", j("sub/sparse")),
            "pread -v 1048576 16",
            "pread -v 0 16",
        ],
    );
    assert!(r.contains("00100000:  5a 5a"), "{r}");
    assert!(r.contains("00000000:  00 00"), "{r}");
    let f = io(img, &[&format!("stat {}", j("fifo"))]);
    assert_eq!(field(&f, "type"), "fifo", "{f}");
    assert!(field(&f, "mode").starts_with("0640 (prw-r-----)"), "{f}");
    let so = io(img, &[&format!("stat {}", j("sock"))]);
    assert!(field(&so, "mode").contains("(s"), "{so}");
    if dev {
        let n = io(img, &[&format!("stat {}", j("null"))]);
        assert_eq!(field(&n, "rdev"), "1:3", "{n}");
        assert!(field(&n, "mode").contains("(c"), "{n}");
    }
    let ls = io(img, &[&format!("ls {at}")]);
    let want = if dev {
        "a\nfifo\nnull\nsock\nsub\n"
    } else {
        "a\nfifo\nsock\nsub\n"
    };
    assert_eq!(ls, want);
}

#[test]
fn mkfs_from_and_import_keep_the_tree() {
    let d = TempDir::new("in");
    let h = d.path("host");
    let dev = host_tree(&h);
    let as_root = std::os::unix::fs::lchown(h.join("sub/sparse"), Some(1234), Some(567)).is_ok();

    let img = d.s("a.img");
    let o = run(&[
        "mkfs",
        &img,
        "--size",
        "16m",
        "--from",
        &h.display().to_string(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("imported 2 files"), "{t}");
    let special = if dev { 3 } else { 2 };
    assert!(t.contains(&format!(", {special} special files")), "{t}");
    check_imported(&img, "/", dev);
    if as_root {
        let s = io(&img, &["stat /sub/sparse"]);
        assert_eq!(
            (field(&s, "uid"), field(&s, "gid")),
            ("1234".into(), "567".into())
        );
    }
    let fsck = ok(&["fsck", &img]);
    assert!(fsck.starts_with("clean"), "{fsck}");

    // import: into a new DEST, or /NAME by default.
    ok(&["import", &img, &h.display().to_string(), "/copy"]);
    check_imported(&img, "/copy", dev);
    ok(&["import", &img, &h.display().to_string()]);
    check_imported(&img, "/host", dev);
    // Nothing temporary is left beside them.
    let root = io(&img, &["ls /"]);
    assert_eq!(
        root.replace("null\n", ""),
        "a\ncopy\nfifo\nhost\nsock\nsub\n"
    );
}

#[test]
fn bad_input_to_the_tree_commands() {
    let d = TempDir::new("bad");
    let h = d.path("host");
    let _ = host_tree(&h);
    let hs = h.display().to_string();
    let img = d.s("a.img");
    // A missing host directory: no image is made.
    let e = fails(&["mkfs", &img, "--size", "8m", "--from", &d.s("nope")]);
    assert!(e.contains("no such host directory (ENOENT)"), "{e}");
    assert!(!Path::new(&img).exists());
    ok(&["mkfs", &img, "--size", "8m"]);
    let e = fails(&["import", &img, &d.s("nope"), "/x"]);
    assert!(e.contains("no such host directory (ENOENT)"), "{e}");
    let e = fails(&["import", &img, &h.join("a").display().to_string(), "/x"]);
    assert!(e.contains("not a directory (ENOTDIR)"), "{e}");
    io(&img, &["mkdir /x"]);
    let e = fails(&["import", &img, &hs, "/x"]);
    assert!(e.contains("/x: already exists (EEXIST)"), "{e}");
    let e = fails(&["import", &img, &hs, "/missing/x"]);
    assert!(e.contains("ENOENT") || e.contains("no such"), "{e}");
    let e = fails(&["import", &img, &hs, "/"]);
    assert!(e.contains("root directory"), "{e}");
    // export: the host directory must be new, SRC must exist.
    let e = fails(&["export", &img, &hs]);
    assert!(e.contains("already exists (EEXIST)"), "{e}");
    let e = fails(&["export", &img, "/nope", &d.s("out")]);
    assert!(e.contains("(ENOENT)") || e.contains("no such file"), "{e}");
    assert!(!d.path("out").exists() || d.path("out").is_file());
    assert_eq!(io(&img, &["ls /"]), "x\n");
}

#[test]
fn a_tree_larger_than_the_device_leaves_nothing() {
    let d = TempDir::new("big");
    let h = d.path("host");
    std::fs::create_dir_all(h.join("d")).unwrap();
    std::fs::write(h.join("small"), b"x").unwrap();
    // 10 MiB of data: more than an 8 MiB device holds.
    std::fs::write(h.join("d/big"), vec![0xa5u8; 10 << 20]).unwrap();
    let img = d.s("a.img");
    ok(&["mkfs", &img, "--size", "8m"]);
    io(&img, &["touch /keep"]);
    let free = |img: &str| -> String {
        io(img, &["df"])
            .lines()
            .find(|l| l.starts_with("statfs.f_bfree"))
            .unwrap()
            .to_string()
    };
    let before = free(&img);
    let e = fails(&["import", &img, &h.display().to_string(), "/t"]);
    assert!(e.contains("ENOSPC") || e.contains("no space"), "{e}");
    assert_eq!(io(&img, &["ls /"]), "keep\n", "nothing half-imported");
    assert_eq!(free(&img), before, "every block given back");
    assert!(ok(&["fsck", &img]).starts_with("clean"));

    // mkfs --from of a tree too large: an error, and an empty file system.
    let img2 = d.s("b.img");
    let e = fails(&[
        "mkfs",
        &img2,
        "--size",
        "8m",
        "--from",
        &h.display().to_string(),
    ]);
    assert!(e.contains("ENOSPC") || e.contains("no space"), "{e}");
    assert_eq!(io(&img2, &["ls /"]), "");
    assert!(ok(&["fsck", &img2]).starts_with("clean"));
}

#[test]
fn export_copies_out_and_skips_lost_ranges() {
    let d = TempDir::new("out");
    let h = d.path("host");
    let dev = host_tree(&h);
    let img = d.s("a.img");
    ok(&[
        "mkfs",
        &img,
        "--size",
        "16m",
        "--from",
        &h.display().to_string(),
    ]);
    let out = d.path("out");
    let o = ok(&["export", &img, &out.display().to_string()]);
    assert!(o.contains("exported 2 files"), "{o}");
    assert_eq!(std::fs::read(out.join("a")).unwrap(), b"hello");
    let am = std::fs::metadata(out.join("a")).unwrap();
    assert_eq!(am.mode() & 0o7777, 0o600);
    assert_eq!((am.mtime(), am.mtime_nsec()), (1_700_000_000, 250_000_000));
    assert_eq!(am.nlink(), 2, "hard links stay links");
    let sm = std::fs::metadata(out.join("sub/sparse")).unwrap();
    assert_eq!(sm.len(), 3 << 20);
    assert!(
        sm.blocks() * 512 < 1 << 20,
        "holes stay holes: {} blocks",
        sm.blocks()
    );
    assert_eq!(
        std::fs::read(out.join("sub/sparse")).unwrap(),
        std::fs::read(h.join("sub/sparse")).unwrap()
    );
    assert_eq!(
        std::fs::read_link(out.join("sub/to-a")).unwrap(),
        Path::new("../a")
    );
    let dm = std::fs::metadata(out.join("sub")).unwrap();
    assert_eq!(dm.mode() & 0o7777, 0o751);
    // FIFOs, sockets and (with the privilege) devices come out as they went in.
    use std::os::unix::fs::FileTypeExt;
    let fm = std::fs::symlink_metadata(out.join("fifo")).unwrap();
    assert!(fm.file_type().is_fifo());
    assert_eq!(fm.mode() & 0o7777, 0o640);
    let sm = std::fs::symlink_metadata(out.join("sock")).unwrap();
    assert!(sm.file_type().is_socket());
    if dev {
        let nm = std::fs::symlink_metadata(out.join("null")).unwrap();
        assert!(nm.file_type().is_char_device());
        assert_eq!(nm.rdev(), std::fs::metadata("/dev/null").unwrap().rdev());
    }

    // A subtree, and a damaged file: its lost block is skipped and named.
    let fm = io(&img, &["open /sub/sparse", "fiemap"]);
    let phys: u64 = fm
        .lines()
        .find(|l| !l.contains("hole"))
        .and_then(|l| l.split(": ").nth(2))
        .and_then(|r| r.split("..").next())
        .unwrap()
        .parse()
        .unwrap();
    io(&img, &[&format!("inject-error {} 4k", phys * 512)]);
    let o = run(&["export", &img, "/sub", &d.s("out2")]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("lost: /sub/sparse: [1048576, +4096) not copied"),
        "{t}"
    );
    let got = std::fs::read(d.path("out2/sparse")).unwrap();
    assert_eq!(got.len(), 3 << 20);
    assert!(got[(1 << 20)..(1 << 20) + 4096].iter().all(|&b| b == 0));
    assert!(
        got[(1 << 20) + 4096..(1 << 20) + 8192]
            .iter()
            .all(|&b| b == 0x5a)
    );
    assert_eq!(std::fs::read(d.path("out2/deep/a-link")).unwrap(), b"hello");
}

/// Extended attributes go in with `mkfs --from` and out with `export`.
#[test]
fn import_and_export_keep_extended_attributes() {
    let d = TempDir::new("xattr");
    let h = d.path("host");
    std::fs::create_dir_all(h.join("dir")).unwrap();
    std::fs::write(h.join("dir/f"), b"data").unwrap();
    let set = |p: &Path, n: &str, v: &[u8]| {
        rustix::fs::lsetxattr(p, n, v, rustix::fs::XattrFlags::empty())
    };
    if let Err(e) = set(&h.join("dir/f"), "user.color", b"blue") {
        eprintln!("skipped: the host's temporary directory keeps no user xattrs ({e})");
        return;
    }
    set(&h.join("dir"), "user.big", &vec![b'x'; 3000]).unwrap();
    let img = d.s("a.img");
    let o = ok(&[
        "mkfs",
        &img,
        "--size",
        "16m",
        "--from",
        &h.display().to_string(),
    ]);
    assert!(o.contains("2 extended attributes"), "{o}");
    assert_eq!(io(&img, &["getfattr /dir/f user.color"]).trim(), "\"blue\"");
    let big = io(&img, &["getfattr /dir user.big"]);
    assert_eq!(big.trim().len(), 3002, "{big}");

    let out = d.path("out");
    ok(&["export", &img, &out.display().to_string()]);
    let mut buf = vec![0u8; 8192];
    let n = rustix::fs::lgetxattr(out.join("dir/f"), "user.color", &mut buf[..]).unwrap();
    assert_eq!(&buf[..n], b"blue");
    let n = rustix::fs::lgetxattr(out.join("dir"), "user.big", &mut buf[..]).unwrap();
    assert_eq!(&buf[..n], &vec![b'x'; 3000][..]);
}

/// The io shell's `mknod` makes FIFOs, sockets and devices as mknod(1)
/// does, refuses bad input with the errno Linux gives, and export copies
/// them out (devices only with the privilege to make them).
#[test]
fn mknod_in_the_shell_and_out() {
    let d = TempDir::new("mknod");
    let img = d.s("a.img");
    ok(&["mkfs", &img, "--size", "8m"]);
    io(
        &img,
        &[
            "mknod /p p",
            "mknod -m 600 /c c 1 3",
            "mknod /b b 8 1",
            "mknod /s s",
        ],
    );
    let ls = io(&img, &["ls -l /"]);
    for (mode, name) in [
        ("prw-r--r--", " p\n"),
        ("crw-------", " c\n"),
        ("brw-r--r--", " b\n"),
        ("srw-r--r--", " s\n"),
    ] {
        assert!(
            ls.lines()
                .any(|l| l.starts_with(mode) && format!("{l}\n").ends_with(name)),
            "{ls}"
        );
    }
    assert_eq!(field(&io(&img, &["stat /c"]), "rdev"), "1:3");
    assert_eq!(field(&io(&img, &["stat /b"]), "rdev"), "8:1");
    for (cmd, says) in [
        ("mknod /p p", "/p: file exists (EEXIST)"),
        ("mknod /x q", "is none of p, s, c, u, b"),
        ("mknod /x c 1", "a device needs MAJOR and MINOR"),
        ("mknod /x p 1 2", "takes no device numbers"),
        ("mknod /x c 5000 1", "does not fit"),
        ("mknod -m 9 /x p", "not octal"),
        ("mknod /nope/x p", "(ENOENT)"),
    ] {
        let e = fails(&["io", &img, "-c", cmd]);
        assert!(e.contains(says), "{cmd}: {e}");
    }
    let e = fails(&["io", &img, "-r", "-c", "mknod /y p"]);
    assert!(e.contains("(EROFS)"), "{e}");
    // Out: the FIFO and socket always, the devices with the privilege.
    let out = d.path("out");
    let o = run(&["export", &img, &out.display().to_string()]);
    let t = text(&o);
    use std::os::unix::fs::FileTypeExt;
    assert!(
        std::fs::symlink_metadata(out.join("p"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert!(
        std::fs::symlink_metadata(out.join("s"))
            .unwrap()
            .file_type()
            .is_socket()
    );
    match std::fs::symlink_metadata(out.join("c")) {
        Ok(m) => {
            assert!(o.status.success(), "{t}");
            assert!(m.file_type().is_char_device());
            assert_eq!(m.mode() & 0o7777, 0o600);
            assert_eq!(m.rdev(), std::fs::metadata("/dev/null").unwrap().rdev());
            let b = std::fs::symlink_metadata(out.join("b")).unwrap();
            assert!(b.file_type().is_block_device());
            assert!(t.contains(", 4 special files"), "{t}");
        }
        Err(_) => {
            assert!(
                t.contains("/c: character special file not exported (making one needs privilege)"),
                "{t}"
            );
            assert!(t.contains("; 2 skipped"), "{t}");
        }
    }
    // A single special file exported on its own; a host path whose parent is
    // missing is ENOENT naming it.
    ok(&["export", &img, "/p", &d.s("one-fifo")]);
    assert!(
        std::fs::symlink_metadata(d.path("one-fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    let e = fails(&["export", &img, "/p", &d.s("no/such/dir")]);
    assert!(e.contains("no/such/dir") && e.contains("(ENOENT)"), "{e}");
}

/// Runs `daxfs ARGS` with standard error on a pseudo-terminal; returns
/// what the terminal showed and the exit status.
fn on_terminal(args: &[&str]) -> (String, std::process::ExitStatus) {
    use rustix::fs::{Mode, OFlags};
    use std::io::Read;
    let master =
        rustix::pty::openpt(rustix::pty::OpenptFlags::RDWR | rustix::pty::OpenptFlags::NOCTTY)
            .unwrap();
    rustix::pty::grantpt(&master).unwrap();
    rustix::pty::unlockpt(&master).unwrap();
    let name = rustix::pty::ptsname(&master, Vec::new()).unwrap();
    let slave = rustix::fs::open(
        name.as_c_str(),
        OFlags::RDWR | OFlags::NOCTTY,
        Mode::empty(),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::from(slave)))
        .spawn()
        .unwrap();
    let mut master = std::fs::File::from(master);
    let mut term = vec![];
    let mut buf = [0u8; 4096];
    // Until the command's end closes the terminal (EIO).
    while let Ok(n) = master.read(&mut buf) {
        if n == 0 {
            break;
        }
        term.extend_from_slice(&buf[..n]);
    }
    (
        String::from_utf8_lossy(&term).into_owned(),
        child.wait().unwrap(),
    )
}

/// On a terminal, import and export show their progress on standard error,
/// and leave the final count there however short the run; off a terminal
/// (the other tests) they show none.
#[test]
fn import_and_export_show_progress_on_a_terminal() {
    let d = TempDir::new("progress");
    let h = d.path("host");
    std::fs::create_dir_all(h.join("sub")).unwrap();
    std::fs::write(h.join("a"), b"hello").unwrap();
    std::fs::write(h.join("sub/b"), vec![7u8; 10000]).unwrap();
    let img = d.s("p.img");
    ok(&["mkfs", &img, "--size", "16m"]);
    let (term, st) = on_terminal(&["import", &img, &h.display().to_string(), "/in"]);
    assert!(st.success(), "{term}");
    assert!(
        term.contains("import: 2 files, 1 directories, 10005 bytes"),
        "{term:?}"
    );
    let out = d.path("out");
    let (term, st) = on_terminal(&["export", &img, "/in", &out.display().to_string()]);
    assert!(st.success(), "{term}");
    assert!(term.contains("export: 2 files"), "{term:?}");
    assert_eq!(std::fs::read(out.join("sub/b")).unwrap(), vec![7u8; 10000]);
    let o = run(&["import", &img, &h.display().to_string(), "/again"]);
    assert!(
        !text(&o).contains("import: "),
        "progress off a terminal: {}",
        text(&o)
    );
}
