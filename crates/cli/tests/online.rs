//! Commands on an image in use: `daxfs serve` holds it, and the commands
//! given it run in that process over its control socket.
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

struct Scratch(PathBuf);
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(name: &str) -> Scratch {
    let d = std::env::temp_dir().join(format!("daxfs-online-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(d.join("ctl")).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(d.join("ctl"), std::fs::Permissions::from_mode(0o755)).unwrap();
    Scratch(d)
}

impl Scratch {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_daxfs"));
        c.args(args).env("DAXFS_CONTROL_DIR", self.0.join("ctl"));
        c
    }
    fn run_in(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut c = self.cmd(args);
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut ch = c.spawn().expect("run daxfs");
        ch.stdin.take().unwrap().write_all(stdin).unwrap();
        ch.wait_with_output().unwrap()
    }
    fn run(&self, args: &[&str]) -> Output {
        self.run_in(args, b"")
    }
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "daxfs {args:?} failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }
    fn image(&self) -> String {
        let p = self.0.join("pool.img");
        if !p.exists() {
            self.ok(&["mkfs", p.to_str().unwrap(), "--size", "32m"]);
        }
        p.to_str().unwrap().to_string()
    }
    /// Starts `daxfs serve IMAGE` and waits until it listens.
    fn hold(&self, image: &str) -> Holder {
        let mut c = self.cmd(&["serve", image]);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().expect("start daxfs serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let mut h = Holder {
            child,
            socket: PathBuf::new(),
        };
        let at = line
            .split(" at ")
            .nth(1)
            .and_then(|r| r.split(" (pid").next())
            .unwrap_or_else(|| panic!("serve said {line:?}"));
        h.socket = PathBuf::from(at);
        assert!(h.socket.starts_with(self.0.join("ctl")), "{line}");
        h
    }
}

/// The holder process, killed when the test ends (even by a failure).
struct Holder {
    child: Child,
    socket: PathBuf,
}

impl Holder {
    /// SIGTERM, then its exit status.
    fn stop(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        self.child.wait().unwrap()
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The device offset of `path`'s first data block.
fn physical_of(fsmap_json: &str, path: &str) -> u64 {
    let rows: serde_json::Value = serde_json::from_str(fsmap_json).unwrap();
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| {
            r["owner"]["paths"]
                .as_array()
                .is_some_and(|p| p.iter().any(|x| x == path))
                && r["owner"]["fork"] == "data"
        })
        .expect("a data row")["physical"]
        .as_u64()
        .unwrap()
}

/// The read-only views give, online, what they give offline.
#[test]
fn views_online_equal_offline() {
    let s = scratch("views");
    let im = s.image();
    s.ok(&["io", &im, "-c", "open -c /a", "-c", "pwrite -S 0x61 0 64k"]);
    s.ok(&[
        "io",
        &im,
        "-c",
        "mkdir /d",
        "-c",
        "open -c /d/b",
        "-c",
        "pwrite -S 0x62 0 5k",
    ]);
    let views: &[&[&str]] = &[
        &["info", &im],
        &["info", &im, "--json"],
        &["fsmap", &im],
        &["fsmap", &im, "--json"],
        &["errors", &im],
        &["errors", &im, "--json"],
        &["badblocks", &im],
        &["fsck", &im],
        &["fsck", &im, "--json"],
        &["cat", &im, "/d/b"],
        &["io", &im, "-r", "-c", "ls /", "-c", "stat /a"],
    ];
    let offline: Vec<String> = views.iter().map(|v| s.ok(v)).collect();
    let mut h = s.hold(&im);
    assert!(h.socket.exists());
    let m = std::fs::metadata(&h.socket).unwrap();
    assert_eq!(m.permissions().mode() & 0o777, 0o600, "owner only");
    // Offline these would fail: the image is locked.
    for (v, want) in views.iter().zip(&offline) {
        assert_eq!(&s.ok(v), want, "daxfs {v:?} online");
    }
    // A usage error is the same too (fsck's exits 16).
    let o = s.run(&["fsck", &im, "--nope"]);
    assert_eq!(o.status.code(), Some(16), "{}", text(&o.stderr));
    assert!(h.stop().success());
    assert!(!h.socket.exists(), "the socket is removed at stop");
    assert_eq!(s.ok(&["fsck", &im]), offline[7]);
}

/// Writes, sharing and media errors online; what they leave is what a
/// later offline look finds.
#[test]
fn changes_and_media_errors_online() {
    let s = scratch("changes");
    let im = s.image();
    let h = s.hold(&im);
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let o = s.run_in(&["put", &im, "/p"], &data);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = s.run(&["cat", &im, "/p"]);
    assert!(o.status.success());
    assert_eq!(o.stdout, data, "cat returns what put wrote");
    s.ok(&["io", &im, "-c", "open -c /a", "-c", "pwrite -S 0x61 0 64k"]);
    s.ok(&["cp", "--reflink", &im, "/a", "/b"]);
    // Dedupe through the command: /c's equal block becomes /a's.
    let out = s.ok(&[
        "io",
        &im,
        "-c",
        "open -c /c",
        "-c",
        "pwrite -S 0x61 0 64k",
        "-c",
        "dedupe /a 0 0 64k",
    ]);
    assert!(out.contains("deduped 65536/65536"), "{out}");
    let p = physical_of(&s.ok(&["fsmap", &im, "--json"]), "/a");
    assert_eq!(p, physical_of(&s.ok(&["fsmap", &im, "--json"]), "/c"));
    // One report on the block the three share: every owner is handled.
    let out = s.ok(&[
        "io",
        &im,
        "-c",
        &format!("inject-error {p} 4096"),
        "-c",
        "stat /b",
    ]);
    for f in ["/a", "/b", "/c"] {
        assert!(out.contains(f), "{f} not named: {out}");
    }
    assert!(out.contains("data lost"), "{out}");
    let errs = s.ok(&["errors", &im]);
    for f in ["/a", "/b", "/c"] {
        assert!(errs.contains(&format!("  {f} (inode")), "{f}: {errs}");
    }
    let o = s.run(&["scrub", &im]);
    assert_eq!(o.status.code(), Some(1), "lost data is not clean");
    assert!(text(&o.stdout).contains("NOT CLEAN"), "{}", text(&o.stdout));
    let out = s.ok(&["clear-error", &im, &p.to_string(), "4096"]);
    assert!(out.contains("cleared"), "{out}");
    // The data stays lost (the files say so until rewritten).
    let scrub_online = s.run(&["scrub", &im, "--data"]);
    assert_eq!(scrub_online.status.code(), Some(1));
    let errors_online = s.ok(&["errors", &im, "--json"]);
    drop(h);
    // Killed: the next command opens the image itself, and finds the same.
    assert_eq!(s.ok(&["errors", &im, "--json"]), errors_online);
    let scrub = s.run(&["scrub", &im, "--data"]);
    assert_eq!(text(&scrub.stdout), text(&scrub_online.stdout));
    assert_eq!(scrub.status.code(), Some(1));
    assert!(s.ok(&["fsck", &im]).starts_with("clean"));
    let o = s.run(&["cat", &im, "/p"]);
    assert_eq!(o.stdout, data);
}

/// `badblocks --import FILE` online: FILE relative to the command's working
/// directory; the report names the owner, and `errors` lists it.
#[test]
fn badblocks_import_online() {
    let s = scratch("badblocks");
    let im = s.image();
    s.ok(&["io", &im, "-c", "open -c /f", "-c", "pwrite -S 0x66 0 8k"]);
    let p = physical_of(&s.ok(&["fsmap", &im, "--json"]), "/f");
    std::fs::write(s.0.join("bb.txt"), format!("{} 8\n", p / 512)).unwrap();
    let _h = s.hold(&im);
    let o = s
        .cmd(&["badblocks", &im, "--import", "bb.txt"])
        .current_dir(&s.0)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.contains("imported 1 range from"), "{out}");
    assert!(out.contains("/f") && out.contains("data lost"), "{out}");
    assert!(s.ok(&["errors", &im]).contains("  /f (inode"));
}

/// `io` without -c reads the client's standard input; a failing command
/// gives exit status 1 and its message on the client's standard error.
#[test]
fn interactive_io_online() {
    let s = scratch("interactive");
    let im = s.image();
    let _h = s.hold(&im);
    let o = s.run_in(
        &["io", &im],
        b"open -c /x\npwrite -S 0x41 0 4k\n# a comment\nopen /nothing\npread -v 0 4\n",
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("open: ") && text(&o.stderr).contains("(ENOENT)"));
    assert!(
        text(&o.stdout).contains("41 41 41 41"),
        "{}",
        text(&o.stdout)
    );
}

/// A command that cannot run while the image is in use says so.
#[test]
fn commands_refused_online_say_so() {
    let s = scratch("refused");
    let im = s.image();
    let mut h = s.hold(&im);
    let pid = h.child.id();
    let host = s.0.join("host");
    std::fs::create_dir_all(&host).unwrap();
    for (args, name) in [
        (vec!["mkfs", &im, "--force"], "mkfs"),
        (vec!["import", &im, host.to_str().unwrap()], "import"),
        (vec!["serve", &im], "serve"),
    ] {
        let o = s.run(&args);
        assert_eq!(o.status.code(), Some(1));
        let e = text(&o.stderr);
        assert!(
            e.contains(&format!("is in use by PID {pid}"))
                && e.contains(&format!("'{name}' cannot run while it is in use")),
            "{e}"
        );
    }
    // Nothing was changed.
    assert!(s.ok(&["fsck", &im]).starts_with("clean"));
    assert!(h.stop().success());
}

/// A holder killed by SIGKILL leaves its socket; the next command opens the
/// image itself, the next holder replaces the socket, and a client that
/// finds the image locked but no one listening removes it.
#[test]
fn stale_sockets_are_removed() {
    let s = scratch("stale");
    let im = s.image();
    let mut h = s.hold(&im);
    let sock = h.socket.clone();
    h.child.kill().unwrap();
    h.child.wait().unwrap();
    assert!(sock.exists(), "SIGKILL leaves the socket");
    assert!(s.ok(&["info", &im]).contains("uuid:"));
    let mut h = s.hold(&im);
    assert_eq!(h.socket, sock);
    assert!(s.ok(&["info", &im]).contains("uuid:"));
    h.child.kill().unwrap();
    h.child.wait().unwrap();
    // Locked (by flock(1)), with the dead holder's socket left.
    let mut lock = Command::new("flock")
        .args(["-x", &im, "sleep", "30"])
        .spawn()
        .expect("flock");
    struct Kill<'a>(&'a mut Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let lock = Kill(&mut lock);
    let t = std::time::Instant::now();
    let o = loop {
        let o = s.run(&["info", &im]);
        if !o.status.success() || t.elapsed().as_secs() > 10 {
            break o;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(
        text(&o.stderr).contains("already open"),
        "{}",
        text(&o.stderr)
    );
    assert!(!sock.exists(), "the stale socket is removed");
    drop(lock);
}

/// Another user reaches neither the socket (its mode) nor, were the mode
/// wrong, the commands (the peer's credentials). Needs root.
#[test]
fn other_users_are_refused() {
    if euid() != 0 {
        eprintln!("skipped: needs root to run a command as another user");
        return;
    }
    let s = scratch("users");
    let im = s.image();
    std::fs::set_permissions(&im, std::fs::Permissions::from_mode(0o666)).unwrap();
    let h = s.hold(&im);
    let as_nobody = |args: &[&str]| {
        let mut c = s.cmd(args);
        c.uid(65534).gid(65534);
        c.output().unwrap()
    };
    let o = as_nobody(&["info", &im]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("Permission denied"),
        "{}",
        text(&o.stderr)
    );
    assert!(o.stdout.is_empty());
    std::fs::set_permissions(&h.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let o = as_nobody(&["info", &im]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("serves only its owner (uid 0), not uid 65534"),
        "{}",
        text(&o.stderr)
    );
    assert!(o.stdout.is_empty());
    // The owner is still served.
    assert!(s.ok(&["info", &im]).contains("uuid:"));
}

fn euid() -> u32 {
    // The tests have no system-call crate: ask id(1).
    let o = Command::new("id").arg("-u").output().unwrap();
    text(&o.stdout).trim().parse().unwrap()
}
