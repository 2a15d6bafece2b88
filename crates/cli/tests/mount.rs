//! `daxfs mount` as a user runs it: background and foreground, unmount by
//! umount and by signal, mount(8)'s helper, real programs on the mount,
//! several processes at once, and `kill -9` of the daemon during fsyncs.
//! Every test unmounts even when it fails, and skips with a printed reason
//! where FUSE cannot be used.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn daxfs() -> Command {
    Command::new(env!("CARGO_BIN_EXE_daxfs"))
}

fn skip_reason() -> Option<&'static str> {
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse is missing");
    }
    if !rustix::process::geteuid().is_root() {
        return Some("mounting needs root");
    }
    None
}

macro_rules! need_fuse {
    () => {
        if let Some(why) = skip_reason() {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
}

fn have(prog: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {prog}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A scratch directory with an image and a mountpoint; unmounts (lazily if
/// need be) and kills a foreground daemon on drop, even on panic.
struct Scratch {
    dir: PathBuf,
    daemon: Option<Child>,
}

impl Scratch {
    fn new(name: &str, size: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("daxfs-cli-mnt-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("mnt")).unwrap();
        let s = Scratch { dir, daemon: None };
        let o = daxfs()
            .args(["mkfs", "--size", size])
            .arg(s.img())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        s
    }
    fn img(&self) -> PathBuf {
        self.dir.join("img")
    }
    fn mp(&self) -> PathBuf {
        self.dir.join("mnt")
    }
    fn p(&self, rel: &str) -> PathBuf {
        self.mp().join(rel)
    }
    fn mounted(&self) -> bool {
        let mp = self.mp();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(mp.to_str().unwrap()))
    }
    /// `daxfs mount` in the background; returns once it is ready.
    fn mount(&self, extra: &[&str]) {
        // --assume-pmem: the image is in the page cache, which a killed
        // daemon does not lose; msync per write would only make it slow.
        let o = daxfs()
            .arg("--assume-pmem")
            .arg("mount")
            .arg(self.img())
            .arg(self.mp())
            .args(extra)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(self.mounted(), "mounted when daxfs mount returns");
    }
    /// `daxfs mount -f` as a child; returns once the mount is there.
    fn mount_fg(&mut self) {
        let c = daxfs()
            .arg("--assume-pmem")
            .arg("mount")
            .arg("-f")
            .arg(self.img())
            .arg(self.mp())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        self.daemon = Some(c);
        let t = Instant::now();
        while !self.mounted() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "mount -f never became ready"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    fn umount(&self) {
        let st = Command::new("umount").arg(self.mp()).status().unwrap();
        assert!(st.success(), "umount");
    }
    /// Waits until the image is free (the daemon has finished) and checks it.
    fn fsck_clean(&self) {
        let t = Instant::now();
        // While the daemon holds the image, `fsck` would run in it (through
        // the control socket): wait for it to let go, so that this checks
        // the image as the next mount finds it.
        while !self.image_free() {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "the daemon never let go of the image"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        loop {
            let o = daxfs().arg("fsck").arg(self.img()).output().unwrap();
            if o.status.success() {
                return;
            }
            let err = String::from_utf8_lossy(&o.stderr).to_string();
            let busy = err.contains("already open") || err.contains("EBUSY");
            assert!(busy, "fsck: {}{err}", String::from_utf8_lossy(&o.stdout));
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "image still busy: {err}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    /// No process holds the image's device lock.
    fn image_free(&self) -> bool {
        let f = std::fs::File::open(self.img()).unwrap();
        match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => true,
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => false,
            Err(e) => panic!("flock: {e}"),
        }
    }
    fn cat(&self, path: &str) -> Vec<u8> {
        let o = daxfs()
            .arg("cat")
            .arg(self.img())
            .arg(path)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "cat {path}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        o.stdout
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.mounted() {
            let ok = Command::new("umount")
                .arg(self.mp())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                let _ = Command::new("umount").arg("-l").arg(self.mp()).status();
            }
        }
        if let Some(mut c) = self.daemon.take() {
            let t = Instant::now();
            while c.try_wait().ok().flatten().is_none() && t.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn sh(dir: &Path, script: &str) -> String {
    let o = Command::new("sh")
        .args(["-c", script])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{script}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn background_mount_then_umount_leaves_a_clean_image() {
    need_fuse!();
    let s = Scratch::new("bg", "32m");
    s.mount(&[]);
    std::fs::write(s.p("hello"), b"from the mount\n").unwrap();
    std::fs::create_dir(s.p("d")).unwrap();
    s.umount();
    s.fsck_clean();
    assert_eq!(s.cat("/hello"), b"from the mount\n");
}

#[test]
fn sigterm_of_a_foreground_daemon_unmounts_cleanly() {
    need_fuse!();
    let mut s = Scratch::new("term", "32m");
    s.mount_fg();
    std::fs::write(s.p("f"), b"kept").unwrap();
    let pid = s.daemon.as_ref().unwrap().id();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let st = s.daemon.take().unwrap().wait().unwrap();
    assert!(st.success(), "{st}");
    assert!(!s.mounted());
    s.fsck_clean();
    assert_eq!(s.cat("/f"), b"kept");
}

#[test]
fn bad_mountpoints_and_options_are_refused_with_nothing_mounted() {
    need_fuse!();
    let s = Scratch::new("refuse", "32m");
    std::fs::write(s.p("x"), b"").unwrap();
    let o = daxfs()
        .arg("mount")
        .arg(s.img())
        .arg(s.mp())
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("is not empty"), "{err}");
    std::fs::remove_file(s.p("x")).unwrap();
    let o = daxfs()
        .arg("mount")
        .arg(s.img())
        .arg(s.mp())
        .args(["-o", "bogus"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown mount option"));
    let o = daxfs()
        .arg("mount")
        .arg(s.dir.join("none"))
        .arg(s.mp())
        .output()
        .unwrap();
    assert!(!o.status.success());
    // Not a daxfs image: the daemon's error reaches the caller.
    std::fs::write(s.dir.join("zero"), vec![0u8; 1 << 20]).unwrap();
    let o = daxfs()
        .arg("mount")
        .arg(s.dir.join("zero"))
        .arg(s.mp())
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(!String::from_utf8_lossy(&o.stderr).trim().is_empty());
    assert!(!s.mounted());
}

#[test]
fn mount_t_fuse_daxfs_runs_the_helper() {
    need_fuse!();
    let s = Scratch::new("helper", "32m");
    let bin = s.dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_daxfs"), bin.join("mount.fuse.daxfs")).unwrap();
    // mount(8) looks for helpers in /sbin and the PATH's; call the helper as
    // mount(8) would, through its name.
    let o = Command::new(bin.join("mount.fuse.daxfs"))
        .arg(s.img())
        .arg(s.mp())
        .args(["-o", "rw,noatime,default_permissions"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(s.mounted());
    std::fs::write(s.p("via-helper"), b"1").unwrap();
    s.umount();
    s.fsck_clean();
    assert_eq!(s.cat("/via-helper"), b"1");
}

#[test]
fn real_programs_cp_tar_git_sqlite() {
    need_fuse!();
    let s = Scratch::new("progs", "128m");
    s.mount(&[]);
    let src = s.dir.join("src");
    std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
    sh(
        &src,
        "printf hello > a && ln a hard && ln -s a sym && ln -s sub/deeper dirsym \
         && dd if=/dev/urandom of=sub/rand bs=1k count=300 2>/dev/null \
         && truncate -s 5M sparse && printf tail >> sparse && chmod 0640 a",
    );
    let py = have("python3");
    if py {
        sh(
            &src,
            "python3 -c \"import os; os.setxattr('a', 'user.color', b'blue')\"",
        );
    }
    // In, and out again.
    sh(&s.dir, "cp -a src mnt/tree && cp -a mnt/tree back");
    sh(&s.dir, "diff -r src mnt/tree && diff -r src back");
    let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    assert_eq!(
        ino(&s.p("tree/a")),
        ino(&s.p("tree/hard")),
        "hard links kept"
    );
    assert!(
        std::fs::symlink_metadata(s.p("tree/sym"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let blocks =
        std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(s.p("tree/sparse")).unwrap());
    assert!(blocks < 1024, "sparse stays sparse ({blocks} sectors)");
    if py {
        let v = sh(
            &s.dir,
            "python3 -c \"import os; print(os.getxattr('mnt/tree/a', 'user.color').decode(), os.getxattr('back/a', 'user.color').decode())\"",
        );
        assert_eq!(v.trim(), "blue blue");
    } else {
        eprintln!("python3 missing: xattrs not compared");
    }
    // A plain cp on the mount shares blocks (copy_file_range).
    sh(
        &s.dir,
        "cp mnt/tree/sub/rand mnt/rand-copy && cmp mnt/tree/sub/rand mnt/rand-copy",
    );
    // tar create and extract.
    sh(
        &s.dir,
        "tar -C src -cf mnt/t.tar . && mkdir mnt/untar && tar -C mnt/untar -xf mnt/t.tar && diff -r src mnt/untar",
    );
    sh(
        &s.dir,
        "tar -C mnt/tree -cf t2.tar . && mkdir x && tar -C x -xf t2.tar && diff -r src x",
    );
    // git.
    if have("git") {
        sh(
            &s.mp(),
            "mkdir repo && cd repo && git init -q && git config user.email t@e && git config user.name t \
             && cp -r ../tree/sub . && echo one > f && git add -A && git commit -qm one \
             && echo two >> f && git commit -qam two && git gc -q && git fsck --strict",
        );
    } else {
        eprintln!("git missing: not run");
    }
    // SQLite: many transactions, then the integrity check.
    if py {
        let out = sh(
            &s.mp(),
            "python3 -c \"
import sqlite3
c = sqlite3.connect('db.sqlite')
c.execute('create table t(k integer primary key, v text)')
for i in range(300):
    with c:
        c.execute('insert into t(v) values (?)', ('x' * (i % 97),))
        if i % 7 == 0:
            c.execute('delete from t where k = ?', (i // 2,))
print(c.execute('pragma integrity_check').fetchone()[0], c.execute('select count(*) from t').fetchone()[0])
\"",
        );
        assert!(out.starts_with("ok "), "{out}");
    }
    s.umount();
    s.fsck_clean();
    assert_eq!(s.cat("/tree/a"), b"hello");
    // The copy shares its blocks with the original.
    let o = daxfs()
        .arg("io")
        .arg(s.img())
        .args(["-c", "open /rand-copy", "-c", "fiemap"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("shared"), "{text}");
}

#[test]
fn several_processes_write_and_read_at_once() {
    need_fuse!();
    if !have("python3") {
        eprintln!("SKIPPED: python3 is missing");
        return;
    }
    let s = Scratch::new("procs", "64m");
    s.mount(&["-o", "threads=4"]);
    // 4 writers on files of their own, 2 on one file at disjoint offsets;
    // every written chunk is read back by another process at once.
    let writer = |name: &str, slot: usize| {
        Command::new("python3")
            .arg("-c")
            .arg(format!(
                "import os\n\
                 fd = os.open('{name}', os.O_RDWR | os.O_CREAT, 0o644)\n\
                 for i in range(50):\n\
                 \x20   off = (i * 2 + {slot}) * 4096\n\
                 \x20   os.pwrite(fd, bytes([(i + {slot}) % 251 + 1]) * 4096, off)\n\
                 \x20   r = os.open('{name}', os.O_RDONLY)\n\
                 \x20   assert os.pread(r, 4096, off) == bytes([(i + {slot}) % 251 + 1]) * 4096\n\
                 \x20   os.close(r)\n\
                 os.fsync(fd)\n"
            ))
            .current_dir(s.mp())
            .spawn()
            .unwrap()
    };
    let mut kids: Vec<Child> = (0..4).map(|k| writer(&format!("own{k}"), 0)).collect();
    kids.push(writer("shared", 0));
    kids.push(writer("shared", 1));
    for mut k in kids {
        assert!(k.wait().unwrap().success());
    }
    // A reader in another process sees every chunk of both writers.
    let out = sh(
        &s.mp(),
        "python3 -c \"
d = open('shared', 'rb').read()
bad = [i for i in range(100) if d[i*4096:(i+1)*4096] != bytes([(i // 2 + i % 2) % 251 + 1]) * 4096]
print(len(d), bad)
\"",
    );
    assert_eq!(out.trim(), format!("{} []", 100 * 4096));
    s.umount();
    s.fsck_clean();
    assert_eq!(s.cat("/own3").len(), 99 * 4096);
}

#[test]
fn kill_9_during_fsyncs_keeps_every_fsynced_file() {
    need_fuse!();
    if !have("python3") {
        eprintln!("SKIPPED: python3 is missing");
        return;
    }
    let mut s = Scratch::new("kill9", "64m");
    // 20 rounds take a few seconds here; each round is mount, ~0.1 s of
    // fsyncs, kill -9, fsck.
    let rounds = 20;
    let mut fsynced: Vec<String> = vec![];
    let check = |s: &Scratch, names: &[String]| {
        // Every file whose fsync returned, whole, read through the mount.
        let list = names.join(" ");
        let out = sh(
            &s.mp(),
            &format!(
                "python3 -c \"
import sys
bad = [p for p in sys.argv[1:] if open(p).read() != (p + '!') * 500]
print(bad)
\" {list}"
            ),
        );
        assert_eq!(out.trim(), "[]", "fsync'ed files lost or torn");
    };
    for round in 0..rounds {
        s.mount_fg();
        check(&s, &fsynced);
        // Files written and fsync'ed one after another; each name is
        // printed only once its fsync has returned.
        let w = Command::new("python3")
            .arg("-c")
            .arg(format!(
                "import os\n\
                 i = 0\n\
                 while True:\n\
                 \x20   p = 'r{round}-%d' % i\n\
                 \x20   fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)\n\
                 \x20   os.write(fd, ((p + '!') * 500).encode())\n\
                 \x20   os.fsync(fd)\n\
                 \x20   os.close(fd)\n\
                 \x20   print(p, flush=True)\n\
                 \x20   i += 1\n"
            ))
            .current_dir(s.mp())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut w = w;
        let mut out = std::io::BufReader::new(w.stdout.take().unwrap());
        let mut first = String::new();
        std::io::BufRead::read_line(&mut out, &mut first).unwrap();
        // Killed in the middle of the fsyncs, at a different point each round.
        std::thread::sleep(Duration::from_millis(10 + 23 * (round % 5)));
        let mut d = s.daemon.take().unwrap();
        d.kill().unwrap();
        d.wait().unwrap();
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut rest);
        let _ = w.wait();
        let _ = Command::new("umount").arg("-l").arg(s.mp()).status();
        let done: Vec<String> = first
            .lines()
            .chain(rest.lines())
            .map(str::to_string)
            .collect();
        assert!(
            !done.is_empty(),
            "round {round}: no fsync returned before the kill"
        );
        fsynced.extend(done);
        s.fsck_clean();
    }
    s.mount_fg();
    check(&s, &fsynced);
    s.umount();
    s.daemon.take().unwrap().wait().unwrap();
    s.fsck_clean();
}

/// `daxfs` given a mounted image runs in the daemon (the control socket):
/// the sharing operations FUSE cannot carry and a media report, whose
/// effects every process on the mount sees at once (the kernel's cached
/// pages of both sharing files are dropped).
#[test]
fn commands_run_in_the_mounted_daemon() {
    need_fuse!();
    let s = Scratch::new("online", "64m");
    s.mount(&[]);
    let run = |args: &[&str]| -> String {
        let o = daxfs().args(args).output().unwrap();
        assert!(
            o.status.success(),
            "daxfs {args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let img = s.img();
    let img = img.to_str().unwrap();
    let data: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(s.p("a"), &data).unwrap();
    // Read it through the mount, so the kernel caches its pages.
    assert_eq!(std::fs::read(s.p("a")).unwrap(), data);
    // A clone made by the command is on the mount at once.
    run(&["cp", "--reflink", img, "/a", "/b"]);
    assert_eq!(std::fs::read(s.p("b")).unwrap(), data);
    assert!(run(&["info", img]).contains("block"), "info runs online");
    // The block both files share, from the daemon's reverse map.
    let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(s.p("a")).unwrap());
    let rows: serde_json::Value = serde_json::from_str(&run(&["fsmap", img, "--json"])).unwrap();
    let phys = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| {
            r["owner"]["inode"] == ino && r["owner"]["offset"] == 0 && r["owner"]["fork"] == "data"
        })
        .unwrap_or_else(|| panic!("no row for inode {ino} at 0: {rows}"))["physical"]
        .as_u64()
        .unwrap();
    // Open and read before the report: the kernel caches the pages of an
    // open file (an open drops the cache, so a new open would prove
    // nothing).
    use std::os::unix::fs::FileExt;
    let held: Vec<std::fs::File> = ["a", "b"]
        .iter()
        .map(|f| {
            let h = std::fs::File::open(s.p(f)).unwrap();
            let mut buf = vec![0u8; data.len()];
            h.read_exact_at(&mut buf, 0).unwrap();
            assert_eq!(buf, data);
            h
        })
        .collect();
    // A process maps b (the clone) and reads it through the mapping.
    // It has the page mapped (touched) when the report comes.
    let map = MappedRead::new(&held[1], data.len());
    let reader = map.reader();
    let report = run(&["io", img, "-c", &format!("inject-error {phys:#x} 4k")]);
    assert!(report.contains("/a") && report.contains("/b"), "{report}");
    // The lost page's cached copy is gone from the mapping too: touching it
    // again faults it in, the read fails, and the process gets SIGBUS.
    assert_eq!(reader.touch_again(), Some(libc::SIGBUS), "mapped reader");
    drop(map);
    // Both files' reads on the mount fail now, through the handles whose
    // pages the kernel had cached, and through new opens.
    for (f, h) in ["a", "b"].iter().zip(&held) {
        let mut buf = vec![0u8; 4096];
        let e = h
            .read_exact_at(&mut buf, 0)
            .expect_err("a cached lost page read");
        assert_eq!(e.raw_os_error(), Some(libc::EIO), "{f}: {e}");
        let e = std::fs::read(s.p(f)).expect_err("a lost page read");
        assert_eq!(e.raw_os_error(), Some(libc::EIO), "{f}: {e}");
    }
    drop(held);
    // A write by the command to a file held open with cached pages: the
    // holder's next read sees the new bytes (the command's change dropped
    // the kernel's cache of that file).
    std::fs::write(s.p("c"), &data).unwrap();
    let h = std::fs::File::open(s.p("c")).unwrap();
    let mut buf = vec![0u8; 4096];
    h.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(buf[..], data[..4096]);
    run(&["io", img, "-c", "open /c", "-c", "pwrite -S 0x77 0 4k"]);
    h.read_exact_at(&mut buf, 0).unwrap();
    assert!(
        buf.iter().all(|&b| b == 0x77),
        "stale cached bytes after the command's write"
    );
    drop(h);
    let errors = run(&["errors", img]);
    assert!(errors.contains("/a") && errors.contains("/b"), "{errors}");
    run(&["clear-error", img, &format!("{phys:#x}"), "4k"]);
    s.umount();
    s.fsck_clean();
}

#[test]
fn an_unlinked_file_the_kernel_holds_lives_until_forgotten() {
    need_fuse!();
    use rustix::fs::{AtFlags, Mode, OFlags, StatxFlags};
    let s = Scratch::new("held", "32m");
    s.mount(&[]);
    let free = || rustix::fs::statvfs(s.mp()).unwrap().f_bfree;
    let base = free();
    std::fs::write(s.p("f"), vec![5u8; 1 << 20]).unwrap();
    // An O_PATH descriptor: a lookup the kernel holds, no open in daxfs.
    let fd = rustix::fs::open(s.p("f"), OFlags::PATH, Mode::empty()).unwrap();
    std::fs::remove_file(s.p("f")).unwrap();
    // Asked of the daemon (not the kernel's cached attributes).
    let st = rustix::fs::statx(
        &fd,
        "",
        AtFlags::EMPTY_PATH | AtFlags::STATX_FORCE_SYNC,
        StatxFlags::BASIC_STATS,
    )
    .expect("fstat of the unlinked file the kernel still holds");
    assert_eq!((st.stx_nlink, st.stx_size), (0, 1 << 20));
    assert!(free() < base, "its blocks are still in use");
    drop(fd);
    // The kernel forgets the inode once nothing refers to it: its blocks
    // come back.
    let t = Instant::now();
    while free() != base {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "blocks never freed: {} of {base}",
            free()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    s.umount();
    s.fsck_clean();
}

#[test]
fn fsck_while_a_process_writes_through_the_mount_is_clean() {
    need_fuse!();
    let s = Scratch::new("fsckw", "32m");
    s.mount(&[]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, dir) = (stop.clone(), s.mp());
        std::thread::spawn(move || {
            use std::io::Write;
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let p = dir.join(format!("f{}", i % 8));
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&p)
                    .unwrap();
                f.write_all(&vec![i as u8; 5000 + (i as usize % 7) * 3000])
                    .unwrap();
                if i.is_multiple_of(3) {
                    f.set_len(i % 5 * 4096).unwrap();
                }
                drop(f);
                if i.is_multiple_of(4) {
                    std::fs::remove_file(&p).unwrap();
                }
                i += 1;
            }
            i
        })
    };
    for _ in 0..8 {
        let o = daxfs().arg("fsck").arg(s.img()).output().unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success() && out.starts_with("clean"),
            "fsck during writes: {out}{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(writer.join().unwrap() > 0, "the writer ran");
    s.umount();
    s.fsck_clean();
}

/// A shared read-only mapping of a file on the mount.
struct MappedRead {
    ptr: *mut libc::c_void,
    len: usize,
}

impl MappedRead {
    fn new(f: &std::fs::File, len: usize) -> MappedRead {
        use std::os::fd::AsRawFd;
        // SAFETY: a new mapping of `len` bytes of an open file, at an
        // address the kernel picks; only read through volatile loads.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED, "mmap");
        let m = MappedRead { ptr, len };
        // SAFETY: the first byte of the live mapping made above.
        let _ = unsafe { std::ptr::read_volatile(m.ptr as *const u8) };
        m
    }

    /// A child process that reads the mapping's first byte now (so the
    /// page is mapped in it) and again when told.
    fn reader(&self) -> Reader {
        // fds[0..2]: the child's "touched" to us; fds[2..4]: our "again".
        let mut fds = [0; 4];
        // SAFETY: two new pipes into `fds`.
        unsafe {
            assert_eq!(libc::pipe(fds.as_mut_ptr()), 0, "pipe");
            assert_eq!(libc::pipe(fds[2..].as_mut_ptr()), 0, "pipe");
        }
        // SAFETY: the child only loads from the inherited mapping, reads
        // the pipe and exits, all async-signal-safe.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            let p = self.ptr as *const u8;
            let mut b = 0u8;
            // SAFETY: the mapping is live in the child (inherited); `b` is
            // one byte to read into.
            unsafe {
                let _ = std::ptr::read_volatile(p);
                libc::write(fds[1], p.cast(), 1);
                libc::read(fds[2], (&mut b as *mut u8).cast(), 1);
                let _ = std::ptr::read_volatile(p);
                libc::_exit(0)
            }
        }
        let mut b = 0u8;
        // SAFETY: one byte from the pipe into `b`: the child's first touch
        // is done when it comes.
        let n = unsafe { libc::read(fds[0], (&mut b as *mut u8).cast(), 1) };
        assert_eq!(n, 1);
        Reader { pid, fds }
    }
}

struct Reader {
    pid: i32,
    fds: [i32; 4],
}

impl Reader {
    /// Tells the child to touch the page again; the signal that ended it,
    /// if one did.
    fn touch_again(self) -> Option<i32> {
        let mut status = 0;
        // SAFETY: one byte from a local into the pipe, then a wait for the
        // child made in `reader`; the pipe's ends are ours to close.
        unsafe {
            assert_eq!(libc::write(self.fds[3], [1u8].as_ptr().cast(), 1), 1);
            assert_eq!(libc::waitpid(self.pid, &mut status, 0), self.pid);
            for fd in self.fds {
                libc::close(fd);
            }
        }
        if libc::WIFSIGNALED(status) {
            Some(libc::WTERMSIG(status))
        } else {
            assert_eq!(libc::WEXITSTATUS(status), 0);
            None
        }
    }
}

impl Drop for MappedRead {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, not used after this.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

#[test]
fn commands_take_paths_on_the_mount() {
    need_fuse!();
    let s = Scratch::new("mpaths", "64m");
    s.mount(&[]);
    let other = Scratch::new("mpaths-other", "64m");
    other.mount(&[]);
    let run = |args: &[&str]| -> (i32, String, String) {
        let o = daxfs().args(args).output().unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let ok = |args: &[&str]| -> String {
        let (code, out, err) = run(args);
        assert_eq!(code, 0, "daxfs {args:?}: {out}{err}");
        out
    };
    let p = |f: &str| s.p(f).to_str().unwrap().to_string();
    let data: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(s.p("a"), &data).unwrap();
    std::fs::write(s.p("b"), vec![0x11u8; data.len()]).unwrap();
    std::fs::write(s.p("c"), &data).unwrap();
    // b open with its pages cached by the kernel.
    use std::os::unix::fs::FileExt;
    let held = std::fs::File::open(s.p("b")).unwrap();
    let mut buf = vec![0u8; data.len()];
    held.read_exact_at(&mut buf, 0).unwrap();
    assert!(buf.iter().all(|&b| b == 0x11));
    // reflink of a into b, both named by their paths on the mount.
    let out = ok(&["io", &p("b"), "-c", &format!("reflink {} 0 0 64k", p("a"))]);
    assert!(out.contains("linked 65536/65536"), "{out}");
    held.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(buf, data, "the held handle's cached pages were dropped");
    assert_eq!(std::fs::read(s.p("b")).unwrap(), data);
    let fiemap = ok(&["io", &p("b"), "-c", "fiemap"]);
    assert!(fiemap.contains("shared"), "b shares a's blocks: {fiemap}");
    // dedupe of c against a, from inside the mount with relative paths.
    let before = ok(&["io", &p("c"), "-c", "fiemap"]);
    assert!(!before.contains("shared"), "{before}");
    let o = daxfs()
        .current_dir(s.mp())
        .args(["io", "c", "-c", "dedupe a 0 0 64k", "-c", "fiemap"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.contains("deduped 65536/65536") && out.contains("shared"),
        "{out}"
    );
    assert_eq!(std::fs::read(s.p("c")).unwrap(), data);
    // The three files share one set of blocks, as the reverse map says.
    let ino = |f: &str| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(s.p(f)).unwrap());
    let rows: serde_json::Value =
        serde_json::from_str(&ok(&["fsmap", s.mp().to_str().unwrap(), "--json"])).unwrap();
    let phys = |i: u64| -> Vec<u64> {
        let mut v: Vec<u64> = rows
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["owner"]["inode"] == i && r["owner"]["fork"] == "data")
            .map(|r| r["physical"].as_u64().unwrap())
            .collect();
        v.sort();
        v
    };
    assert!(!phys(ino("a")).is_empty(), "{rows}");
    assert_eq!(phys(ino("a")), phys(ino("b")));
    assert_eq!(phys(ino("a")), phys(ino("c")));
    // cp --reflink, cat, put and info with paths on the mount.
    ok(&["cp", "--reflink", &p("a"), &p("d")]);
    assert_eq!(std::fs::read(s.p("d")).unwrap(), data);
    let o = daxfs().args(["cat", &p("d")]).output().unwrap();
    assert!(
        o.status.success() && o.stdout == data,
        "cat of a path on the mount"
    );
    let mut put = daxfs()
        .args(["put", &p("e")])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut put.stdin.take().unwrap(), b"put through the daemon").unwrap();
    assert!(put.wait().unwrap().success());
    assert_eq!(std::fs::read(s.p("e")).unwrap(), b"put through the daemon");
    assert!(ok(&["info", s.mp().to_str().unwrap()]).contains("uuid"));
    // Without -c, the lines from standard input get their paths too.
    let mut io = daxfs()
        .args(["io", &p("e")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let line = format!("stat {}\n", p("a"));
    std::io::Write::write_all(&mut io.stdin.take().unwrap(), line.as_bytes()).unwrap();
    let o = io.wait_with_output().unwrap();
    assert!(o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&format!("stat.ino = {}", ino("a"))),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    // The shell's paths name a symbolic link itself, not its target.
    std::os::unix::fs::symlink("a", s.p("l")).unwrap();
    let out = ok(&[
        "io",
        s.mp().to_str().unwrap(),
        "-c",
        &format!("readlink {}", p("l")),
    ]);
    assert_eq!(out.trim(), "a");
    ok(&[
        "io",
        s.mp().to_str().unwrap(),
        "-c",
        &format!("rm {}", p("l")),
    ]);
    assert!(s.p("a").exists(), "the target stays");
    let (code, _, err) = run(&[
        "io",
        s.mp().to_str().unwrap(),
        "-c",
        &format!("stat {}", p("l")),
    ]);
    assert!(
        code != 0 && err.contains("ENOENT"),
        "the link is gone: {err}"
    );
    // Errors: a path on no daxfs mount, one on another daxfs mount.
    let host = s.dir.join("host");
    std::fs::write(&host, b"x").unwrap();
    let host = host.to_str().unwrap();
    let (code, _, err) = run(&["cp", "--reflink", &p("a"), host]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("{host} is not on a daxfs mount")) && err.contains("SRC DST"),
        "{err}"
    );
    let (code, _, err) = run(&["cat", host]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("{host} is not on a daxfs mount")),
        "{err}"
    );
    let elsewhere = other.p("x");
    std::fs::write(&elsewhere, &data).unwrap();
    let elsewhere = elsewhere.to_str().unwrap();
    let (code, _, err) = run(&["cp", "--reflink", &p("a"), elsewhere]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!(
            "{elsewhere} is on the daxfs mount at {}, not on the one at {}",
            other.mp().display(),
            s.mp().display()
        )),
        "{err}"
    );
    let (code, _, err) = run(&["io", &p("c"), "-c", &format!("dedupe {elsewhere} 0 0 4k")]);
    assert_eq!(code, 1);
    assert!(
        err.contains(elsewhere) && err.contains("`dedupe` takes paths"),
        "{err}"
    );
    let (code, _, err) = run(&["io", &p("c"), "-c", &format!("reflink {host}")]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("{host} is not on a daxfs mount")),
        "{err}"
    );
    drop(held);
    other.umount();
    s.umount();
    s.fsck_clean();
}
