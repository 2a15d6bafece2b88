//! The `daxfs io` shell as xfs_io users expect it: `ls` (sorted, `-l`,
//! `-R`), `stat` of several paths with readable times, `rm -r`, `chown`,
//! `touch`, `df`, `du`, `quit`, `-r`, the prompt on standard error,
//! `io --help`, and xfs_io's size suffixes.
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_daxfs");

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("daxfs-shell-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

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

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `daxfs io IMG -c C...`, expected to succeed; its standard output.
fn io(img: &str, cmds: &[&str]) -> String {
    let mut a = vec!["io", img];
    for c in cmds {
        a.extend(["-c", c]);
    }
    let o = run_with(&a, b"");
    assert!(o.status.success(), "{cmds:?}: {}{}", out(&o), err(&o));
    out(&o)
}

/// `daxfs io IMG -c C...`, expected to fail; its standard error.
fn io_fails(img: &str, cmds: &[&str]) -> String {
    let mut a = vec!["io", img];
    for c in cmds {
        a.extend(["-c", c]);
    }
    let o = run_with(&a, b"");
    assert!(!o.status.success(), "{cmds:?} succeeded: {}", out(&o));
    err(&o)
}

fn mkfs(d: &TempDir) -> String {
    let img = d.0.join("a.img").display().to_string();
    let o = run_with(&["mkfs", &img, "--size", "8m"], b"");
    assert!(o.status.success(), "{}", err(&o));
    img
}

#[test]
fn ls_sorts_and_long_lists_and_recurses() {
    let d = TempDir::new("ls");
    let img = mkfs(&d);
    io(
        &img,
        &[
            "mkdir /d",
            "mkdir /d/sub",
            "touch /d/zeta /d/alpha /d/Mid /d/sub/x",
            "open -c /d/beta",
            "pwrite 0 10",
            "chmod 4750 /d/beta",
            "symlink /d/beta /d/link",
            "touch -m -d 1700000000 /d/beta",
            "chown 1000:100 /d/beta",
        ],
    );
    assert_eq!(
        io(&img, &["ls /d"]),
        "Mid\nalpha\nbeta\nlink\nsub\nzeta\n",
        "names sorted by bytes"
    );
    let long = io(&img, &["ls -l /d"]);
    let beta = long.lines().find(|l| l.ends_with(" beta")).unwrap();
    let f: Vec<&str> = beta.split_whitespace().collect();
    assert_eq!(
        f,
        [
            "-rwsr-x---",
            "1",
            "1000",
            "100",
            "10",
            "2023-11-14",
            "22:13",
            "beta"
        ],
        "{long}"
    );
    assert!(long.contains("lrwxrwxrwx "), "{long}");
    assert!(
        long.lines()
            .any(|l| l.starts_with("drwxr-xr-x ") && l.ends_with(" sub"))
    );
    let rec = io(&img, &["ls -R /d"]);
    assert_eq!(
        rec, "/d:\nMid\nalpha\nbeta\nlink\nsub\nzeta\n\n/d/sub:\nx\n",
        "{rec}"
    );
    let e = io_fails(&img, &["ls /nope"]);
    assert!(e.contains("(ENOENT)"), "{e}");
    let e = io_fails(&img, &["ls -x /"]);
    assert!(e.contains("unknown option -x (EINVAL)"), "{e}");
}

#[test]
fn stat_of_several_paths_with_readable_times() {
    let d = TempDir::new("stat");
    let img = mkfs(&d);
    io(
        &img,
        &[
            "touch /a /b",
            "touch -d 951782400.25 /a",
            "touch -a -d 0 /b",
        ],
    );
    let s = io(&img, &["stat /a /b"]);
    assert!(s.starts_with("/a:\nstat.ino = "), "{s}");
    assert!(s.contains("\n\n/b:\nstat.ino = "), "{s}");
    assert!(
        s.contains("stat.mtime = 2000-02-29 00:00:00.250000000 +0000 (951782400.250000000)"),
        "{s}"
    );
    assert!(
        s.contains("stat.atime = 1970-01-01 00:00:00.000000000 +0000 (0.000000000)"),
        "{s}"
    );
    assert!(s.contains("stat.mode = 0644 (-rw-r--r--)"), "{s}");
    // One path: no header.
    assert!(io(&img, &["stat /a"]).starts_with("stat.ino = "));
    let e = io_fails(&img, &["stat /a /missing"]);
    assert!(e.contains("(ENOENT)"), "{e}");
    let e = io_fails(&img, &["touch -d soon /a"]);
    assert!(e.contains("not SECONDS[.NANOS]"), "{e}");
}

#[test]
fn rm_r_chown_df_du() {
    let d = TempDir::new("rm");
    let img = mkfs(&d);
    io(
        &img,
        &[
            "mkdir /t",
            "mkdir /t/a",
            "mkdir /t/a/b",
            "open -c /t/a/b/f",
            "pwrite 0 2b",
            "open -c /t/g",
            "pwrite 0 1b",
            "link /t/g /t/a/g2",
            "symlink /t/g /t/s",
        ],
    );
    let du = io(&img, &["du /t"]);
    assert!(du.starts_with("8192\t/t/a/b\n12288\t/t/a\n"), "{du}");
    assert!(du.ends_with("\t/t\n") && du.lines().count() == 3, "{du}");
    // A file of two links is counted once, where it is met first.
    assert_eq!(io(&img, &["du -s /t/g /t/a"]), "4096\t/t/g\n8192\t/t/a\n");
    let df = io(&img, &["df"]);
    assert!(
        df.contains("statfs.f_bsize = 4096\nstatfs.f_blocks = 2048\n"),
        "{df}"
    );
    let free_before: u64 = df
        .lines()
        .find_map(|l| l.strip_prefix("statfs.f_bfree = "))
        .unwrap()
        .parse()
        .unwrap();
    let e = io_fails(&img, &["rm /t"]);
    assert!(e.contains("(EISDIR)"), "{e}");
    io(&img, &["rm -r /t", "rm -f /never"]);
    assert_eq!(io(&img, &["ls /"]), "");
    let df = io(&img, &["statfs"]);
    let free_after: u64 = df
        .lines()
        .find_map(|l| l.strip_prefix("statfs.f_bfree = "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        free_after >= free_before + 3,
        "{free_before} -> {free_after}"
    );
    let e = io_fails(&img, &["rm /never"]);
    assert!(e.contains("(ENOENT)"), "{e}");

    io(&img, &["touch /o", "chown 7 /o", "chown :9 /o"]);
    let s = io(&img, &["stat /o"]);
    assert!(s.contains("stat.uid = 7\nstat.gid = 9\n"), "{s}");
    let e = io_fails(&img, &["chown bob /o"]);
    assert!(e.contains("not a numeric user or group id (EINVAL)"), "{e}");
    let e = io_fails(&img, &["chown 1 /none"]);
    assert!(e.contains("(ENOENT)"), "{e}");
}

#[test]
fn read_only_quit_prompt_and_help() {
    let d = TempDir::new("ro");
    let img = mkfs(&d);
    io(&img, &["open -c /f", "pwrite 0 4k"]);
    let ro = |cmds: &[&str]| {
        let mut a = vec!["io", "-r", &img];
        for c in cmds {
            a.extend(["-c", c]);
        }
        run_with(&a, b"")
    };
    let o = ro(&["ls -l", "open -r /f", "pread 0 4k", "stat /f", "df"]);
    assert!(o.status.success(), "{}", err(&o));
    for bad in [
        "mkdir /x",
        "open /f",
        "open -c -r /n",
        "rm /f",
        "touch /f",
        "chown 1 /f",
    ] {
        let o = ro(&[bad]);
        assert!(!o.status.success(), "{bad}");
        assert!(
            err(&o).contains("read-only (io -r) (EROFS)"),
            "{bad}: {}",
            err(&o)
        );
    }
    assert_eq!(io(&img, &["ls"]), "f\n");

    // quit ends a -c list: later commands do not run.
    io(&img, &["mkdir /a", "quit", "mkdir /b"]);
    assert_eq!(io(&img, &["ls"]), "a\nf\n");

    // Nothing but command output on standard output when reading a pipe.
    let o = run_with(&["io", &img], b"ls\nhelp\nquit\n");
    assert!(o.status.success());
    assert!(out(&o).starts_with("a\nf\nopen "), "{}", out(&o));
    assert!(!out(&o).contains("daxfs>"));
    assert!(!err(&o).contains("daxfs>"), "no prompt without a terminal");

    let o = run_with(&["io", "--help"], b"");
    let h = out(&o);
    for c in [
        "ls [-l] [-R]",
        "rm [-r]",
        "chown",
        "touch",
        "df",
        "du",
        "pwrite",
        "quit",
    ] {
        assert!(h.contains(c), "io --help lacks {c}: {h}");
    }
}

#[test]
fn sizes_as_xfs_io_reads_them() {
    let d = TempDir::new("sizes");
    let img = mkfs(&d);
    let o = io(
        &img,
        &[
            "open -c /f",
            "pwrite 1b 2b",
            "pwrite 3s 1s",
            "pwrite 0 1KiB",
            "truncate 1MiB",
            "stat",
        ],
    );
    assert!(o.contains("wrote 8192/8192 bytes at offset 4096"), "{o}");
    assert!(o.contains("wrote 512/512 bytes at offset 1536"), "{o}");
    assert!(o.contains("wrote 1024/1024 bytes at offset 0"), "{o}");
    assert!(o.contains("stat.size = 1048576"), "{o}");
    let e = io_fails(&img, &["open /f", "pwrite 0 4kb"]);
    assert!(e.contains("unknown size suffix \"kb\""), "{e}");
}

/// On a terminal (a pseudo-terminal as standard input and standard error)
/// the shell prompts there, with line editing, while standard output
/// (here a pipe) gets the commands' output and never the prompt.
#[test]
fn the_prompt_goes_to_the_terminal_on_standard_error() {
    use rustix::fs::{Mode, OFlags};
    use std::io::Read;
    let d = TempDir::new("pty");
    let img = mkfs(&d);
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
    let slave = std::fs::File::from(slave);
    let mut master = std::fs::File::from(master);
    let child = Command::new(BIN)
        .args(["--assume-pmem", "io", &img])
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let child = std::sync::Arc::new(std::sync::Mutex::new(child));
    let mut stdout = child.lock().unwrap().stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut v = vec![];
        let _ = stdout.read_to_end(&mut v);
        v
    });
    // A watchdog: a shell that hangs is killed, and the test fails.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (c, dn) = (child.clone(), done.clone());
    let watchdog = std::thread::spawn(move || {
        let t0 = std::time::Instant::now();
        while !dn.load(std::sync::atomic::Ordering::SeqCst) {
            if t0.elapsed() > std::time::Duration::from_secs(60) {
                let _ = c.lock().unwrap().kill();
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        false
    });
    // Act as a terminal and a user: answer the editor's cursor-position
    // query, and type each line once the prompt for it is shown.
    let lines: &[&[u8]] = &[b"mkdir /typed\r", b"stat /typed\r", b"quit\r"];
    let mut term = vec![];
    let (mut sent, mut answered) = (0, 0);
    let mut buf = [0u8; 4096];
    // Until the shell's end closes the terminal (EIO).
    while let Ok(n) = master.read(&mut buf) {
        if n == 0 {
            break;
        }
        term.extend_from_slice(&buf[..n]);
        let t = String::from_utf8_lossy(&term).into_owned();
        while answered < t.matches("\x1b[6n").count() {
            master.write_all(b"\x1b[1;1R").unwrap();
            answered += 1;
        }
        if sent < lines.len() && t.matches("daxfs> ").count() > sent {
            master.write_all(lines[sent]).unwrap();
            sent += 1;
        }
    }
    let status = child.lock().unwrap().wait().unwrap();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(!watchdog.join().unwrap(), "the shell hung on a terminal");
    assert!(status.success(), "{status:?}");
    let term = String::from_utf8_lossy(&term).into_owned();
    let stdout = String::from_utf8_lossy(&reader.join().unwrap()).into_owned();
    assert!(stdout.contains("stat.type = directory"), "{stdout:?}");
    assert!(
        !stdout.contains("daxfs>"),
        "the prompt in standard output: {stdout:?}"
    );
    assert!(
        term.contains("daxfs> "),
        "no prompt on the terminal: {term:?}"
    );
    assert!(
        !term.contains("stat.type"),
        "output on the terminal: {term:?}"
    );
    assert_eq!(io(&img, &["ls"]), "typed\n");
}
