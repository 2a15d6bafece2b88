//! The control server: runs the commands of clients of an image's control
//! socket on the open file system (see `control.rs` for the protocol and
//! README "Commands while an image is in use" for what a user sees).
use crate::control::{self, ChangeHint, Session};
use anyhow::{Context, Result};
use daxfs::Fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

/// The commands a client may run on the image in use.
pub const ONLINE: &[&str] = &[
    "info",
    "fsck",
    "io",
    "put",
    "cat",
    "fsmap",
    "cp",
    "badblocks",
    "errors",
    "clear-error",
    "scrub",
];

/// How long an online fsck waits for the other clients' commands to end.
const FSCK_WAIT: Duration = Duration::from_secs(10);

struct Shared {
    fs: Arc<Fs>,
    image: PathBuf,
    on_change: Arc<dyn Fn(ChangeHint) + Send + Sync>,
    mountpoint: Mutex<Option<PathBuf>>,
    /// Sessions running (a clone of each connection, to end it at stop).
    sessions: Mutex<Vec<(UnixStream, JoinHandle<()>)>>,
    /// Held shared by every client's command, exclusive by fsck: its check
    /// sees no other command's changes half done.
    commands: RwLock<()>,
    stop: AtomicBool,
}

/// A running control server: [`ControlServer::stop`] (or dropping it) ends
/// it and removes its socket.
pub struct ControlServer {
    path: PathBuf,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

/// Serves the control socket of `image` (open as `fs`) on a thread of its
/// own. `on_change` is told what each client's command may have changed
/// behind a kernel's cache.
pub fn serve(
    fs: Arc<Fs>,
    image: &Path,
    on_change: Arc<dyn Fn(ChangeHint) + Send + Sync>,
) -> io::Result<ControlServer> {
    serve_in(control::socket_dirs(), fs, image, on_change)
}

/// [`serve`], with the socket in the first of `dirs` that can hold it.
fn serve_in(
    dirs: Vec<PathBuf>,
    fs: Arc<Fs>,
    image: &Path,
    on_change: Arc<dyn Fn(ChangeHint) + Send + Sync>,
) -> io::Result<ControlServer> {
    let name = control::socket_name(image)?;
    let mut last = io::Error::other("no directory for the control socket");
    let mut bound = None;
    for dir in dirs {
        if !control::usable_dir(&dir) {
            last = io::Error::other(format!(
                "{}: not a directory of this user's that only it can write",
                dir.display()
            ));
            continue;
        }
        let path = dir.join(&name);
        match bind(&path) {
            Ok(l) => {
                bound = Some((path, l));
                break;
            }
            Err(e) => last = io::Error::new(e.kind(), format!("{}: {e}", path.display())),
        }
    }
    let Some((path, listener)) = bound else {
        return Err(last);
    };
    let shared = Arc::new(Shared {
        fs,
        image: image.canonicalize()?,
        on_change,
        mountpoint: Mutex::new(None),
        sessions: Mutex::new(vec![]),
        commands: RwLock::new(()),
        stop: AtomicBool::new(false),
    });
    let s = shared.clone();
    let accept = std::thread::Builder::new()
        .name("daxfs-control".into())
        .spawn(move || accept_loop(&s, &listener))?;
    Ok(ControlServer {
        path,
        shared,
        accept: Some(accept),
    })
}

/// Binds the socket at `path`, owner-only; a socket there that no one
/// listens on (its server died) is removed first.
fn bind(path: &Path) -> io::Result<UnixListener> {
    match UnixStream::connect(path) {
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                "another server listens there",
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => std::fs::remove_file(path)?,
        Err(_) => {}
    }
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

impl ControlServer {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Names the mount point, for the messages of commands refused online
    /// (the mount daemon calls it).
    pub fn set_mountpoint(&self, mnt: &Path) {
        *self
            .shared
            .mountpoint
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(mnt.into());
    }

    /// Stops accepting, ends the clients' connections, waits for their
    /// commands to end, and removes the socket.
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        let Some(accept) = self.accept.take() else {
            return;
        };
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept.
        let _ = UnixStream::connect(&self.path);
        let _ = accept.join();
        let _ = std::fs::remove_file(&self.path);
        let sessions = std::mem::take(
            &mut *self
                .shared
                .sessions
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for (conn, t) in sessions {
            let _ = conn.shutdown(std::net::Shutdown::Both);
            let _ = t.join();
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop_now();
    }
}

fn accept_loop(shared: &Arc<Shared>, listener: &UnixListener) {
    let me = rustix::process::geteuid().as_raw();
    for conn in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(mut conn) = conn else { continue };
        // Owner only (root too): the socket's mode says so, the peer's
        // credentials make sure.
        let peer = nix::sys::socket::getsockopt(&conn, nix::sys::socket::sockopt::PeerCredentials);
        let uid = peer.map(|c| c.uid()).ok();
        if uid != Some(me) && uid != Some(0) {
            // Read the request (unused) first, so that the refusal is not
            // lost to a client still sending it.
            let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
            let _ = control::read_frame(&mut conn);
            let msg = format!(
                "daxfs: the control socket of {} serves only its owner (uid {me}), not uid {}\n",
                shared.image.display(),
                uid.map(|u| u.to_string())
                    .unwrap_or_else(|| "unknown".into())
            );
            let _ = control::write_frame(&mut conn, control::STDERR, msg.as_bytes());
            let _ = control::write_frame(&mut conn, control::EXIT, &1i32.to_le_bytes());
            continue;
        }
        let Ok(clone) = conn.try_clone() else {
            continue;
        };
        let s = shared.clone();
        let Ok(t) = std::thread::Builder::new()
            .name("daxfs-client".into())
            .spawn(move || session(&s, conn))
        else {
            continue;
        };
        let mut v = shared.sessions.lock().unwrap_or_else(|e| e.into_inner());
        v.retain(|(_, t)| !t.is_finished());
        v.push((clone, t));
    }
}

/// One client: its request, its command, its exit status.
fn session(shared: &Shared, mut conn: UnixStream) {
    let req = match control::read_frame(&mut conn) {
        Ok(Some((control::REQUEST, d))) => d,
        _ => return,
    };
    let Ok(req) = serde_json::from_slice::<serde_json::Value>(&req) else {
        return;
    };
    let argv: Vec<String> = req["argv"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let cwd = PathBuf::from(req["cwd"].as_str().unwrap_or("/"));
    let stdin = req["stdin"].as_bool().unwrap_or(false);
    let Ok(sess) = Session::new(
        shared.fs.clone(),
        &conn,
        cwd,
        stdin,
        shared.on_change.clone(),
    ) else {
        return;
    };
    let sess = Rc::new(sess);
    let code = sess.enter(|| run(shared, argv));
    let _ = sess.finish(code);
}

/// Runs one client's command line; its exit status.
fn run(shared: &Shared, argv: Vec<String>) -> i32 {
    use clap::Parser;
    let cli = match crate::Cli::try_parse_from(&argv) {
        Ok(c) => c,
        Err(e) => {
            let code = e.exit_code();
            let _ = write!(control::stderr(), "{}", e.render());
            return code;
        }
    };
    let name = control::command_name(&cli.cmd);
    if !ONLINE.contains(&name) {
        let mnt = shared
            .mountpoint
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|m| format!(" (mounted at {})", m.display()))
            .unwrap_or_default();
        crate::out::errln!(
            "daxfs: {} is in use by PID {}{mnt}; '{name}' cannot run while it is in use",
            shared.image.display(),
            std::process::id()
        );
        return 1;
    }
    // What the kernel's cache must learn after a put or cp: the new file
    // and its directory.
    let written = match &cli.cmd {
        crate::Cmd::Put { path, .. } => Some(path.clone()),
        crate::Cmd::Cp { dst, .. } => Some(dst.clone()),
        _ => None,
    };
    let _guard = if name == "fsck" {
        let t = std::time::Instant::now();
        loop {
            if let Ok(g) = shared.commands.try_write() {
                break Guard::Write(g);
            }
            if t.elapsed() > FSCK_WAIT {
                crate::out::errln!(
                    "daxfs: fsck: other commands are running on {}: try again when they end",
                    shared.image.display()
                );
                return crate::FSCK_FAILED;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    } else {
        Guard::Read(shared.commands.read().unwrap_or_else(|e| e.into_inner()))
    };
    let code = match crate::run(cli) {
        Ok(code) => code,
        Err(e) if crate::out::is_closed(&e) => crate::out::EXIT_CLOSED,
        Err(e) => {
            crate::out::errln!("daxfs: {}", crate::errors::report(&e));
            1
        }
    };
    if let Some(p) = written {
        note_written(&shared.fs, &p);
    }
    code
}

enum Guard<'a> {
    Read(#[allow(dead_code)] std::sync::RwLockReadGuard<'a, ()>),
    Write(#[allow(dead_code)] std::sync::RwLockWriteGuard<'a, ()>),
}

/// Hints for a file `put` or `cp` wrote at `path`: its inode and its
/// directory's.
fn note_written(fs: &Fs, path: &str) {
    let parent = match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    };
    for p in [path, parent] {
        if let Ok(st) = fs.stat(p) {
            control::note_change(ChangeHint::Inode(st.ino));
        }
    }
}

/// `daxfs serve IMAGE`: holds IMAGE open and serves its control socket
/// until SIGTERM, SIGINT or SIGHUP; then stops, syncs and closes.
pub fn serve_command(image: &Path, fs: Fs) -> Result<i32> {
    let fs = Arc::new(fs);
    let server = serve(fs.clone(), image, Arc::new(|_| {}))
        .with_context(|| format!("serving the control socket of {}", image.display()))?;
    crate::out::outln!(
        "serving {} at {} (pid {}); stop with SIGTERM",
        image.display(),
        server.path().display(),
        std::process::id()
    );
    crate::control::stdout().flush().map_err(crate::out::map)?;
    let sig = wait_signal(&STOP_SIGNALS);
    server.stop();
    fs.sync()?;
    drop(fs);
    crate::out::errln!("daxfs: serve: stopped by {sig}");
    Ok(0)
}

/// The signals that stop `serve`.
const STOP_SIGNALS: [nix::sys::signal::Signal; 3] = [
    nix::sys::signal::Signal::SIGTERM,
    nix::sys::signal::Signal::SIGINT,
    nix::sys::signal::Signal::SIGHUP,
];

/// Blocks `sigs` in this thread (and the threads it starts after); call
/// before starting any thread, so that none of them dies of one.
pub fn block_signals(sigs: &[nix::sys::signal::Signal]) -> Result<()> {
    let mut set = nix::sys::signal::SigSet::empty();
    for &s in sigs {
        set.add(s);
    }
    set.thread_block().context("blocking signals")?;
    Ok(())
}

/// Blocks the signals that stop `serve` (see [`block_signals`]).
pub fn block_stop_signals() -> Result<()> {
    block_signals(&STOP_SIGNALS)
}

fn wait_signal(sigs: &[nix::sys::signal::Signal]) -> String {
    let mut set = nix::sys::signal::SigSet::empty();
    for &s in sigs {
        set.add(s);
    }
    match set.wait() {
        Ok(s) => s.as_str().to_string(),
        Err(e) => format!("an error waiting for a signal ({e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use daxfs::{MkfsOptions, MountOptions, OpenOptions};

    /// Runs `argv` as a client of `server`: (stdout, stderr, exit status).
    fn client(server: &ControlServer, argv: &[&str]) -> (String, String, i32) {
        let mut c = UnixStream::connect(server.path()).unwrap();
        let req = serde_json::json!({"argv": argv, "cwd": "/", "stdin": false});
        control::write_frame(&mut c, control::REQUEST, req.to_string().as_bytes()).unwrap();
        let (mut out, mut err) = (vec![], vec![]);
        loop {
            match control::read_frame(&mut c).unwrap() {
                Some((control::STDOUT, d)) => out.extend(d),
                Some((control::STDERR, d)) => err.extend(d),
                Some((control::EXIT, d)) => {
                    let code = i32::from_le_bytes(d.try_into().unwrap());
                    return (
                        String::from_utf8(out).unwrap(),
                        String::from_utf8(err).unwrap(),
                        code,
                    );
                }
                f => panic!("unexpected frame {f:?}"),
            }
        }
    }

    /// A media report handled for a client tells `on_change` every file
    /// that owned the lost block, with the lost range; a write tells it
    /// that anything may have changed; a read-only command tells nothing.
    #[test]
    fn media_reports_and_writes_notify_the_owners() {
        let dir = std::env::temp_dir().join(format!("daxfs-control-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let image = dir.join("image");
        std::fs::write(&image, b"").unwrap();
        let dev: Arc<dyn daxfs_device::Device> = Arc::new(daxfs_device::MemDevice::new(16 << 20));
        Fs::mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
        let fs = Arc::new(Fs::mount(dev, &MountOptions::default()).unwrap());
        let a = fs.open("/a", &OpenOptions::create()).unwrap();
        a.write_at(0, &[7u8; 8192]).unwrap();
        let b = fs.open("/b", &OpenOptions::create()).unwrap();
        b.clone_from(&a).unwrap();
        let (ia, ib) = (a.stat().ino, b.stat().ino);
        fs.open("/e", &OpenOptions::create())
            .unwrap()
            .write_at(0, b"e")
            .unwrap();
        let phys = fs
            .fsmap(0, fs.info().total_blocks)
            .unwrap()
            .into_iter()
            .find(|r| matches!(&r.owner, daxfs::OwnerKind::File { ino, fork, .. } if *ino == ia && *fork == "data"))
            .unwrap()
            .physical;
        let seen = Arc::new(Mutex::new(vec![]));
        let s2 = seen.clone();
        let server = serve_in(
            vec![dir.join("ctl")],
            fs.clone(),
            &image,
            Arc::new(move |h| s2.lock().unwrap().push(h)),
        )
        .unwrap();
        let img = image.to_str().unwrap();
        let (_, err, code) = client(&server, &["daxfs", "info", img]);
        assert_eq!(code, 0, "{err}");
        assert!(seen.lock().unwrap().is_empty(), "info changes nothing");
        let (out, err, code) = client(
            &server,
            &[
                "daxfs",
                "io",
                img,
                "-c",
                &format!("inject-error {} 4096", phys + 4096),
            ],
        );
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("data lost"), "{out}");
        let got = std::mem::take(&mut *seen.lock().unwrap());
        for ino in [ia, ib] {
            let lost = ChangeHint::Data {
                ino,
                offset: 4096,
                length: 4096,
            };
            assert!(got.contains(&lost), "{lost:?} not in {got:?}");
        }
        // inject-error is a command that changes the file system.
        assert_eq!(got.last(), Some(&ChangeHint::All));
        let (_, err, code) = client(&server, &["daxfs", "io", img, "-r", "-c", "stat /a"]);
        assert_eq!(code, 0, "{err}");
        assert!(seen.lock().unwrap().is_empty(), "stat changes nothing");
        let (_, err, code) = client(&server, &["daxfs", "cp", img, "/e", "/d"]);
        assert_eq!(code, 0, "{err}");
        let ino_d = fs.stat("/d").unwrap().ino;
        let got = std::mem::take(&mut *seen.lock().unwrap());
        assert!(got.contains(&ChangeHint::Inode(ino_d)), "{got:?}");
        assert!(
            got.contains(&ChangeHint::Inode(fs.stat("/").unwrap().ino)),
            "{got:?}"
        );
        let path = server.path().to_path_buf();
        server.stop();
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
