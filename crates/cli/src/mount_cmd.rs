//! `daxfs mount`: the FUSE daemon's command, and `mount.fuse.daxfs` (the
//! helper mount(8) runs for `mount -t fuse.daxfs` and fstab lines).
use crate::control::ChangeHint;
use anyhow::{Context, Result, bail};
use daxfs::{Fs, MountOptions};
use daxfs_mount::{MountConfig, Mounted};
use nix::sys::signal::{SigSet, Signal};
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The arguments of `daxfs mount`.
#[derive(clap::Args, Debug, Clone)]
pub struct MountArgs {
    /// The image file or device (/dev/daxX.Y, /dev/pmemX) holding the file system.
    pub image: PathBuf,
    /// An empty directory to mount it on.
    pub mountpoint: PathBuf,
    /// Stay in the foreground (otherwise the daemon goes to the background
    /// once the mount is ready).
    #[arg(short = 'f')]
    pub foreground: bool,
    /// Threads serving requests.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub threads: usize,
    /// Mount options, comma-separated (repeatable): ro, rw, allow_other,
    /// default_permissions, attr_timeout=SECS, entry_timeout=SECS,
    /// assume_pmem, populate; mount(8)'s generic ones (defaults, noauto,
    /// nofail, _netdev, ...) are accepted and ignored.
    #[arg(short = 'o', value_name = "OPTIONS")]
    pub options: Vec<String>,
    /// The background daemon's own run (internal).
    #[arg(long, hide = true)]
    pub daemon_child: bool,
}

/// What the options ask for.
struct Parsed {
    cfg: MountConfig,
    assume_pmem: bool,
    populate: bool,
}

fn secs(opt: &str, v: &str) -> Result<Duration> {
    let s: f64 = v
        .parse()
        .ok()
        .filter(|s: &f64| s.is_finite() && *s >= 0.0)
        .with_context(|| format!("mount option {opt}={v}: not a number of seconds"))?;
    Ok(Duration::from_secs_f64(s))
}

fn parse(a: &MountArgs, assume_pmem: bool, populate: bool) -> Result<Parsed> {
    let mut p = Parsed {
        cfg: MountConfig {
            threads: a.threads,
            // The canonical path: commands given paths on the mount find
            // the image (and its control socket) from it.
            fsname: std::fs::canonicalize(&a.image)
                .unwrap_or_else(|_| a.image.clone())
                .display()
                .to_string(),
            ..MountConfig::default()
        },
        assume_pmem,
        populate,
    };
    if a.threads == 0 || a.threads > 64 {
        bail!("--threads {}: give 1 to 64", a.threads);
    }
    let mut entry_ttl = None;
    for o in a.options.iter().flat_map(|o| o.split(',')) {
        let (k, v) = match o.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (o, None),
        };
        match (k, v) {
            ("", None) => {}
            ("ro", None) => p.cfg.read_only = true,
            ("rw", None) => p.cfg.read_only = false,
            ("allow_other", None) => p.cfg.allow_other = true,
            ("default_permissions", None) => p.cfg.default_permissions = true,
            ("assume_pmem", None) => p.assume_pmem = true,
            ("populate", None) => p.populate = true,
            ("attr_timeout", Some(v)) => p.cfg.attr_ttl = secs(k, v)?,
            ("entry_timeout", Some(v)) => entry_ttl = Some(secs(k, v)?),
            ("threads", Some(v)) => {
                p.cfg.threads = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=64).contains(n))
                    .with_context(|| format!("mount option threads={v}: give 1 to 64"))?
            }
            // mount(8)'s and the kernel's generic options: not daxfs's.
            (
                "defaults" | "auto" | "noauto" | "user" | "nouser" | "users" | "nofail" | "_netdev"
                | "dev" | "nodev" | "suid" | "nosuid" | "exec" | "noexec" | "atime" | "noatime"
                | "relatime" | "async" | "owner" | "group" | "comment",
                _,
            ) => {}
            (k, _) if k.starts_with("x-") => {}
            _ => bail!(
                "unknown mount option {o:?} (daxfs takes ro, rw, allow_other, default_permissions, attr_timeout=SECS, entry_timeout=SECS, threads=N, assume_pmem, populate)"
            ),
        }
    }
    p.cfg.entry_ttl = entry_ttl.unwrap_or(if p.cfg.default_permissions {
        daxfs_mount::ENTRY_TTL_KERNEL_CHECKS
    } else {
        Duration::ZERO
    });
    Ok(p)
}

/// `daxfs mount`.
pub fn run(a: MountArgs, assume_pmem: bool, populate: bool) -> Result<i32> {
    let p = parse(&a, assume_pmem, populate)?;
    daxfs_mount::check_mountpoint(&a.mountpoint)?;
    if !Path::new("/dev/fuse").exists() {
        bail!("/dev/fuse is missing: load the fuse module (modprobe fuse)");
    }
    if !a.image.exists() {
        bail!("{}: no such file or device", a.image.display());
    }
    if a.foreground {
        return serve(&a, &p, None);
    }
    if a.daemon_child {
        // A session of its own: the terminal's signals are not ours.
        let _ = nix::unistd::setsid();
        return serve(&a, &p, Some(std::io::stdout()));
    }
    background(&a, &p)
}

/// Starts the daemon and returns once its mount is ready (0), or with its
/// error (1).
fn background(a: &MountArgs, p: &Parsed) -> Result<i32> {
    let exe = std::env::current_exe().context("finding the daxfs program")?;
    let mut cmd = std::process::Command::new(exe);
    if p.assume_pmem {
        cmd.arg("--assume-pmem");
    }
    if p.populate {
        cmd.arg("--populate");
    }
    cmd.arg("mount")
        .arg(&a.image)
        .arg(&a.mountpoint)
        .arg("--threads")
        .arg(a.threads.to_string());
    for o in &a.options {
        cmd.arg("-o").arg(o);
    }
    cmd.arg("--daemon-child")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().context("starting the daemon")?;
    let mut out = std::io::BufReader::new(child.stdout.take().expect("piped"));
    let mut line = String::new();
    let _ = out.read_line(&mut line);
    if line.trim() == "ready" {
        return Ok(0);
    }
    let mut err = String::new();
    let _ = child.stderr.take().expect("piped").read_to_string(&mut err);
    let st = child.wait()?;
    let msg = err.trim();
    if msg.is_empty() {
        bail!("the daemon ended before the mount was ready ({st})");
    }
    // The child's message already says "daxfs: ...".
    eprintln!("{msg}");
    Ok(st.code().filter(|&c| c != 0).unwrap_or(1))
}

/// Mounts and serves until unmounted (from outside, or on SIGTERM, SIGINT
/// or SIGHUP); then unmounts the file system cleanly.
fn serve(a: &MountArgs, p: &Parsed, ready: Option<std::io::Stdout>) -> Result<i32> {
    // Blocked before any thread starts, so every thread inherits the mask
    // and the signals wait for the thread that takes them.
    let mut sigs = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        sigs.add(s);
    }
    sigs.thread_block().context("blocking signals")?;
    let opts = daxfs_device::OpenOptions::new()
        .assume_persistent(p.assume_pmem)
        .populate(p.populate);
    let dev = crate::open_device(&a.image, opts)?;
    let fs = Arc::new(
        Fs::mount(dev, &MountOptions::default())
            .with_context(|| format!("mounting {}", a.image.display()))?,
    );
    let mounted = daxfs_mount::spawn(fs.clone(), &a.mountpoint, &p.cfg)
        .with_context(|| format!("FUSE mount on {}", a.mountpoint.display()))?;
    // The other `daxfs` commands given this image run here, through the
    // control socket; what they change behind the kernel's cache is
    // dropped from it (from a thread of the server, never inside a FUSE
    // request).
    let inval = mounted.invalidator();
    let on_change: Arc<dyn Fn(ChangeHint) + Send + Sync> = Arc::new(move |h| {
        let _ = match h {
            ChangeHint::All => inval.all(),
            ChangeHint::Inode(ino) | ChangeHint::Data { ino, .. } => inval.inode(ino),
        };
    });
    let control = crate::control_server::serve(fs.clone(), &a.image, on_change)
        .with_context(|| format!("serving the control socket of {}", a.image.display()))?;
    control.set_mountpoint(&a.mountpoint);
    let daemon = Daemon {
        fs,
        mounted: Arc::new(mounted),
        control: Some(control),
    };
    if let Some(mut out) = ready {
        writeln!(out, "ready")?;
        out.flush()?;
        // The starter has gone: nothing more is written to its pipes.
        if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
            let _ = nix::unistd::dup2_stdout(&null);
            let _ = nix::unistd::dup2_stderr(&null);
        }
    }
    let weak = Arc::downgrade(&daemon.mounted);
    std::thread::Builder::new()
        .name("daxfs-signals".into())
        .spawn(move || {
            while sigs.wait().is_ok() {
                let Some(m) = weak.upgrade() else { return };
                // Busy (files open): detach; the session ends with the last
                // of them.
                if m.stop().is_err() {
                    let _ = m.detach();
                }
            }
        })?;
    daemon.mounted.wait();
    daemon.finish()
}

/// The daemon's state: the file system and its mount, in one place (online
/// commands reach both).
struct Daemon {
    fs: Arc<Fs>,
    mounted: Arc<Mounted>,
    control: Option<crate::control_server::ControlServer>,
}

impl Daemon {
    /// After the session ended: every FUSE handle closed, the file system
    /// made durable and marked clean.
    fn finish(mut self) -> Result<i32> {
        // No command runs on the file system once the mount is gone.
        if let Some(c) = self.control.take() {
            c.stop();
        }
        drop(self.mounted);
        let fs = match Arc::try_unwrap(self.fs) {
            Ok(fs) => fs,
            Err(_) => bail!("the file system is still in use after the unmount"),
        };
        fs.unmount().context("unmounting the file system")?;
        Ok(0)
    }
}

/// Whether this program runs as mount(8)'s helper `mount.fuse.daxfs`.
pub fn called_as_helper() -> bool {
    std::env::args_os()
        .next()
        .and_then(|a| {
            Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().ends_with("mount.fuse.daxfs"))
        })
        .unwrap_or(false)
}

/// `mount.fuse.daxfs IMAGE MOUNTPOINT [-o OPTIONS] [-n] [-s] [-v] [-f]`, as
/// mount(8) calls it (`-f`: pretend; the others are mount(8)'s and need
/// nothing here).
pub fn helper_main() -> i32 {
    match helper(std::env::args().skip(1).collect()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mount.fuse.daxfs: {}", crate::errors::report(&e));
            1
        }
    }
}

fn helper(args: Vec<String>) -> Result<i32> {
    let mut pos = vec![];
    let mut options = vec![];
    let mut fake = false;
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-o" => options.push(it.next().context("-o needs options")?),
            "-n" | "-s" | "-v" => {}
            "-f" => fake = true,
            s if s.starts_with("-o") => options.push(s[2..].to_string()),
            s if s.starts_with('-') => bail!("unknown argument {s}"),
            _ => pos.push(a),
        }
    }
    let [image, mountpoint]: [String; 2] = pos
        .try_into()
        .map_err(|_| anyhow::anyhow!("usage: mount.fuse.daxfs IMAGE MOUNTPOINT [-o OPTIONS]"))?;
    let a = MountArgs {
        image: image.into(),
        mountpoint: mountpoint.into(),
        foreground: false,
        threads: 2,
        options,
        daemon_child: false,
    };
    let p = parse(&a, false, false)?;
    if fake {
        return Ok(0);
    }
    drop(p);
    run(a, false, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(opts: &[&str]) -> MountArgs {
        MountArgs {
            image: "img".into(),
            mountpoint: "mp".into(),
            foreground: false,
            threads: 2,
            options: opts.iter().map(|s| s.to_string()).collect(),
            daemon_child: false,
        }
    }

    #[test]
    fn options() {
        let p = parse(
            &args(&["ro,allow_other", "attr_timeout=0.5,defaults,x-systemd.foo"]),
            false,
            false,
        )
        .unwrap();
        assert!(p.cfg.read_only && p.cfg.allow_other && !p.cfg.default_permissions);
        assert_eq!(p.cfg.attr_ttl, Duration::from_millis(500));
        let p = parse(
            &args(&["default_permissions,assume_pmem,threads=4"]),
            false,
            false,
        )
        .unwrap();
        assert!(p.cfg.default_permissions && p.assume_pmem);
        assert_eq!(p.cfg.threads, 4);
        let e = parse(&args(&["bogus"]), false, false).err().unwrap();
        assert!(
            e.to_string().contains("unknown mount option \"bogus\""),
            "{e}"
        );
        assert!(parse(&args(&["attr_timeout=x"]), false, false).is_err());
        assert!(parse(&args(&["threads=0"]), false, false).is_err());
    }
}
