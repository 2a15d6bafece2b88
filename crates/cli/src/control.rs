//! Commands on an image that is in use: the control socket.
//!
//! The process that holds an image open (`daxfs serve`, or the mount
//! daemon) serves a Unix stream socket found from the image's canonical
//! path ([`socket_candidates`]). A command given that IMAGE finds the device
//! lock held, connects, and sends its argv (and its standard input, for
//! `put` and `io` without `-c`); the holder runs the same command code on
//! its open [`Fs`] and streams standard output, standard error and the exit
//! status back ([`forward`]). The server is in `control_server.rs`.
//!
//! A command run for a client finds its client here, in a thread-local
//! session: [`stdout`], [`stderr`], [`read_line`] and [`stdin`] write to and
//! read from the client, [`online_fs`] is the holder's file system, and
//! [`note_events`] / [`note_change`] tell the holder which inodes a command
//! may have changed behind a kernel's cache.
//!
//! Wire format: frames of a tag byte, a 4-byte little-endian length and
//! that many bytes. Client to server: one [`REQUEST`] (JSON `{"argv": [..],
//! "cwd": "..", "stdin": bool}`), then [`STDIN`] frames and one
//! [`STDIN_EOF`] when `stdin` is true. Server to client: [`STDOUT`] and
//! [`STDERR`] frames in the order written, then one [`EXIT`] (an i32 LE).
use anyhow::Result;
use daxfs::{FailureEvent, Fs, OwnerKind};
use daxfs_device::DeviceError;
use std::cell::RefCell;
use std::io::{self, IsTerminal, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

pub const REQUEST: u8 = 1;
pub const STDIN: u8 = 2;
pub const STDIN_EOF: u8 = 3;
pub const STDOUT: u8 = 4;
pub const STDERR: u8 = 5;
pub const EXIT: u8 = 6;

/// The largest frame either side accepts (a request's argv, a chunk).
pub const MAX_FRAME: usize = 16 << 20;

/// The environment variable naming the directory of control sockets
/// (instead of `/run/daxfs` and its fallbacks).
pub const DIR_ENV: &str = "DAXFS_CONTROL_DIR";

/// What a command may have changed behind the cache of a kernel that has
/// the file system mounted, for the mount to invalidate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChangeHint {
    /// Anything: the command wrote through paths it did not name.
    All,
    /// This inode's attributes, and its entries if a directory.
    Inode(u64),
    /// This file's data over bytes `[offset, offset + length)` (lost to a
    /// media error, or written): cached pages over it are stale.
    Data { ino: u64, offset: u64, length: u64 },
}

/// The hints that one media report's handling gives: every owning file's
/// lost range (its data), or the file itself (its extent tree or entries).
pub fn hints_of_events(events: &[FailureEvent]) -> Vec<ChangeHint> {
    let mut v = vec![];
    for e in events {
        if let OwnerKind::File { ino, fork, .. } = &e.owner {
            let h = if *fork == "data" {
                ChangeHint::Data {
                    ino: *ino,
                    offset: e.offset,
                    length: e.length,
                }
            } else {
                ChangeHint::Inode(*ino)
            };
            if !v.contains(&h) {
                v.push(h);
            }
        }
    }
    v
}

// ---- where the socket is ----

/// FNV-1a, 64 bits: a hash of the canonical path that every build computes
/// alike (std's hasher may change between releases).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The directories a control socket may be in, in the order a server tries
/// them: `$DAXFS_CONTROL_DIR` alone when set; else `/run/daxfs`,
/// `$XDG_RUNTIME_DIR/daxfs`, and `$TMPDIR/daxfs-UID`.
pub fn socket_dirs() -> Vec<PathBuf> {
    if let Some(d) = std::env::var_os(DIR_ENV).filter(|d| !d.is_empty()) {
        return vec![PathBuf::from(d)];
    }
    let mut v = vec![PathBuf::from("/run/daxfs")];
    if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from)
        && x.is_absolute()
    {
        v.push(x.join("daxfs"));
    }
    v.push(std::env::temp_dir().join(format!("daxfs-{}", rustix::process::geteuid().as_raw())));
    v
}

/// The socket's file name for the image at `image`: the hash of its
/// canonical path.
pub fn socket_name(image: &Path) -> io::Result<String> {
    let canon = image.canonicalize()?;
    Ok(format!(
        "{:016x}.sock",
        fnv1a(canon.as_os_str().as_encoded_bytes())
    ))
}

/// Every place the socket of `image` may be, in [`socket_dirs`] order.
pub fn socket_candidates(image: &Path) -> io::Result<Vec<PathBuf>> {
    let name = socket_name(image)?;
    Ok(socket_dirs().into_iter().map(|d| d.join(&name)).collect())
}

/// Makes `dir` (owner-only) if missing; whether it is a directory of ours
/// that no one else can write, fit to hold a socket.
pub fn usable_dir(dir: &Path) -> bool {
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => {}
        Err(_) => return false,
    }
    match std::fs::symlink_metadata(dir) {
        Ok(m) => {
            m.is_dir()
                && m.uid() == rustix::process::geteuid().as_raw()
                && m.permissions().mode() & 0o022 == 0
        }
        Err(_) => false,
    }
}

// ---- frames ----

pub fn write_frame(w: &mut impl Write, tag: u8, data: &[u8]) -> io::Result<()> {
    let len = u32::try_from(data.len()).map_err(|_| io::Error::other("frame too long"))?;
    let mut head = [0u8; 5];
    head[0] = tag;
    head[1..].copy_from_slice(&len.to_le_bytes());
    w.write_all(&head)?;
    w.write_all(data)
}

/// Reads one frame; `None` at a clean end of the stream.
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<(u8, Vec<u8>)>> {
    let mut head = [0u8; 5];
    match r.read_exact(&mut head[..1]) {
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        r => r?,
    }
    r.read_exact(&mut head[1..])?;
    let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("control frame of {len} bytes is too long"),
        ));
    }
    let mut data = vec![0u8; len];
    r.read_exact(&mut data)?;
    Ok(Some((head[0], data)))
}

// ---- the session of a command run for a client ----

/// One client's command, as the thread that runs it sees it.
pub struct Session {
    pub fs: Arc<Fs>,
    /// Where the client ran (relative host paths are its).
    pub cwd: PathBuf,
    out: RefCell<Pending>,
    input: RefCell<Input>,
    closed: std::cell::Cell<bool>,
    on_change: Arc<dyn Fn(ChangeHint) + Send + Sync>,
}

/// Output not sent yet: the bytes of one stream (tag), sent as one frame.
struct Pending {
    conn: UnixStream,
    tag: u8,
    buf: Vec<u8>,
}

impl Pending {
    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let r = write_frame(&mut self.conn, self.tag, &self.buf);
        self.buf.clear();
        // Any failure to reach the client is its going away.
        r.map_err(|e| io::Error::new(io::ErrorKind::BrokenPipe, e))
    }
}

struct Input {
    conn: UnixStream,
    buf: Vec<u8>,
    pos: usize,
    eof: bool,
}

impl Input {
    /// Reads the next frame of standard input into `buf`; false at its end.
    fn fill(&mut self) -> io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        match read_frame(&mut self.conn)? {
            Some((STDIN, d)) => {
                self.buf.drain(..self.pos);
                self.pos = 0;
                self.buf.extend_from_slice(&d);
                Ok(true)
            }
            Some((STDIN_EOF, _)) | None => {
                self.eof = true;
                Ok(false)
            }
            Some((t, _)) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unexpected control frame {t} in standard input"),
            )),
        }
    }
}

impl Session {
    /// A session writing to and reading from `conn`; `stdin` false: the
    /// client sends no standard input (reads see its end at once).
    pub fn new(
        fs: Arc<Fs>,
        conn: &UnixStream,
        cwd: PathBuf,
        stdin: bool,
        on_change: Arc<dyn Fn(ChangeHint) + Send + Sync>,
    ) -> io::Result<Session> {
        Ok(Session {
            fs,
            cwd,
            out: RefCell::new(Pending {
                conn: conn.try_clone()?,
                tag: STDOUT,
                buf: vec![],
            }),
            input: RefCell::new(Input {
                conn: conn.try_clone()?,
                buf: vec![],
                pos: 0,
                eof: !stdin,
            }),
            closed: Default::default(),
            on_change,
        })
    }

    fn write(&self, tag: u8, data: &[u8]) -> io::Result<()> {
        if self.closed.get() {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let mut p = self.out.borrow_mut();
        if p.tag != tag {
            p.flush()?;
            p.tag = tag;
        }
        p.buf.extend_from_slice(data);
        // Standard error unbuffered, as a process's is.
        if p.buf.len() >= 64 << 10 || tag == STDERR {
            p.flush()?;
        }
        Ok(())
    }

    /// Sends what is pending, then the exit status.
    pub fn finish(&self, code: i32) -> io::Result<()> {
        let mut p = self.out.borrow_mut();
        p.flush()?;
        write_frame(&mut p.conn, EXIT, &code.to_le_bytes())
    }

    /// Runs `f` with this session as the thread's.
    pub fn enter<R>(self: &Rc<Self>, f: impl FnOnce() -> R) -> R {
        struct Leave;
        impl Drop for Leave {
            fn drop(&mut self) {
                SESSION.with(|s| s.borrow_mut().take());
            }
        }
        SESSION.with(|s| *s.borrow_mut() = Some(self.clone()));
        let _leave = Leave;
        f()
    }
}

thread_local! {
    static SESSION: RefCell<Option<Rc<Session>>> = const { RefCell::new(None) };
}

fn session() -> Option<Rc<Session>> {
    SESSION.with(|s| s.borrow().clone())
}

/// The file system of the holder when running for a client.
pub fn online_fs() -> Option<Arc<Fs>> {
    session().map(|s| s.fs.clone())
}

/// A host path as the client meant it (relative to its working directory).
pub fn host_path(p: &Path) -> PathBuf {
    match session() {
        Some(s) if p.is_relative() => s.cwd.join(p),
        _ => p.to_path_buf(),
    }
}

/// Whether the client being served went away (`None`: no client).
pub fn client_closed() -> Option<bool> {
    session().map(|s| s.closed.get())
}

/// Remembers that the client went away (`None`: no client).
pub fn set_client_closed() -> Option<()> {
    session().map(|s| s.closed.set(true))
}

/// Tells the holder (and so the kernel's cache, if mounted) of a change.
pub fn note_change(h: ChangeHint) {
    if let Some(s) = session() {
        (s.on_change)(h);
    }
}

/// Tells the holder of the owners that media reports found.
pub fn note_events(events: &[FailureEvent]) {
    if let Some(s) = session() {
        for h in hints_of_events(events) {
            (s.on_change)(h);
        }
    }
}

/// Standard output: the client's, or this process's.
pub enum Output {
    Local(Box<dyn Write>),
    Remote(Rc<Session>, u8),
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Output::Local(w) => w.write(buf),
            Output::Remote(s, tag) => s.write(*tag, buf).map(|_| buf.len()),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Output::Local(w) => w.flush(),
            Output::Remote(s, _) => s.out.borrow_mut().flush(),
        }
    }
}

pub fn stdout() -> Output {
    match session() {
        Some(s) => Output::Remote(s, STDOUT),
        None => Output::Local(Box::new(io::stdout().lock())),
    }
}

pub fn stderr() -> Output {
    match session() {
        Some(s) => Output::Remote(s, STDERR),
        None => Output::Local(Box::new(io::stderr().lock())),
    }
}

/// Whether standard error is a terminal (never a client's: no progress
/// lines are sent).
pub fn stderr_is_terminal() -> bool {
    session().is_none() && io::stderr().is_terminal()
}

/// Whether standard input is a terminal (a client's reads as plain lines).
pub fn stdin_is_terminal() -> bool {
    session().is_none() && io::stdin().is_terminal()
}

/// `read_line` of standard input.
pub fn read_line(line: &mut String) -> io::Result<usize> {
    let Some(s) = session() else {
        return io::stdin().read_line(line);
    };
    // Before waiting on the client, what it should have seen.
    s.out.borrow_mut().flush()?;
    let mut inp = s.input.borrow_mut();
    loop {
        let rest = &inp.buf[inp.pos..];
        if let Some(n) = rest.iter().position(|&b| b == b'\n') {
            let l = String::from_utf8_lossy(&rest[..=n]).into_owned();
            inp.pos += n + 1;
            line.push_str(&l);
            return Ok(l.len());
        }
        if !inp.fill()? {
            let l = String::from_utf8_lossy(&inp.buf[inp.pos..]).into_owned();
            inp.pos = inp.buf.len();
            line.push_str(&l);
            return Ok(l.len());
        }
    }
}

/// Standard input as a reader: the client's, or this process's.
pub fn stdin() -> Box<dyn Read> {
    struct Remote(Rc<Session>);
    impl Read for Remote {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.0.out.borrow_mut().flush()?;
            let mut inp = self.0.input.borrow_mut();
            while inp.pos == inp.buf.len() {
                if !inp.fill()? {
                    return Ok(0);
                }
            }
            let n = buf.len().min(inp.buf.len() - inp.pos);
            buf[..n].copy_from_slice(&inp.buf[inp.pos..inp.pos + n]);
            inp.pos += n;
            Ok(n)
        }
    }
    match session() {
        Some(s) => Box::new(Remote(s)),
        None => Box::new(io::stdin().lock()),
    }
}

/// After one `io` shell command run for a client: one that may have
/// changed files tells the holder that anything may have changed (the
/// shell's commands name files by open handle and path alike).
pub fn after_shell_command(line: &str) {
    if session().is_none() {
        return;
    }
    let cmd = line.split_whitespace().next().unwrap_or("");
    if !cmd.is_empty() && !crate::io::READ_ONLY_COMMANDS.contains(&cmd) {
        note_change(ChangeHint::All);
    }
}

// ---- the client ----

/// Whether `e` is the device lock being held by another process.
pub fn is_locked(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<DeviceError>(),
            Some(DeviceError::Locked(_))
        )
    })
}

/// What a command that found its IMAGE locked forwards.
pub struct Forward {
    pub image: PathBuf,
    /// The command reads standard input (`put`, `io` without `-c`).
    pub stdin: bool,
    /// The command line to send (`None`: this process's).
    pub argv: Option<Vec<String>>,
    /// Standard input to send instead of this process's.
    pub stdin_data: Option<Vec<u8>>,
}

/// The IMAGE of a command, and whether it reads standard input.
pub fn forward_of(cli: &crate::Cli) -> Option<Forward> {
    use crate::Cmd::*;
    let (image, stdin) = match &cli.cmd {
        Mkfs { image, .. }
        | Import { image, .. }
        | Export { image, .. }
        | Info { image, .. }
        | Fsck { image, .. }
        | Cat { image, .. }
        | Fsmap { image, .. }
        | Cp { image, .. }
        | Badblocks { image, .. }
        | Errors { image, .. }
        | ClearError { image, .. }
        | Scrub { image, .. }
        | Serve { image } => (image, false),
        Put { image, .. } => (image, true),
        Io {
            image, commands, ..
        } => (image, commands.is_empty()),
        // A mount of an image in use fails on the device lock, naming the holder.
        Demo { .. } | Completions { .. } | Man { .. } | Bench { .. } | Mount(_) => return None,
    };
    Some(Forward {
        image: image.clone(),
        stdin,
        argv: None,
        stdin_data: None,
    })
}

/// Connects to the holder of `image`. `Ok(None)`: no holder listens (a
/// socket left by one that died is removed).
pub fn connect(image: &Path) -> io::Result<Option<(PathBuf, UnixStream)>> {
    let mut denied = None;
    for path in socket_candidates(image)? {
        match UnixStream::connect(&path) {
            Ok(c) => return Ok(Some((path, c))),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                // No listener: a holder that died left it.
                let _ = std::fs::remove_file(&path);
            }
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                denied = Some(io::Error::new(
                    e.kind(),
                    format!("the control socket {}: {e}", path.display()),
                ));
            }
            Err(_) => {}
        }
    }
    match denied {
        Some(e) => Err(e),
        None => Ok(None),
    }
}

/// Runs the command of this process (its argv) on the holder of the locked
/// IMAGE: `None` when no holder listens (the lock error stands).
pub fn forward(f: &Forward) -> Result<Option<i32>> {
    let Some((path, conn)) = connect(&f.image)? else {
        return Ok(None);
    };
    let argv: Vec<String> = f.argv.clone().unwrap_or_else(|| {
        std::env::args_os()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    });
    let data = f.stdin_data.clone();
    let cwd = std::env::current_dir().unwrap_or_default();
    let req = serde_json::json!({
        "argv": argv, "cwd": cwd.to_string_lossy(), "stdin": f.stdin,
    });
    let mut w = conn.try_clone()?;
    // A server that refuses the client answers, then closes: its answer is
    // read even when the request could not be sent whole.
    let sent = write_frame(&mut w, REQUEST, req.to_string().as_bytes()).is_ok();
    let feeder = (sent && f.stdin).then(|| {
        std::thread::spawn(move || -> io::Result<()> {
            if let Some(d) = data {
                for c in d.chunks(256 << 10) {
                    write_frame(&mut w, STDIN, c)?;
                }
                return write_frame(&mut w, STDIN_EOF, &[]);
            }
            let mut inp = io::stdin().lock();
            let mut buf = vec![0u8; 256 << 10];
            loop {
                let n = match inp.read(&mut buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                if n == 0 {
                    return write_frame(&mut w, STDIN_EOF, &[]);
                }
                write_frame(&mut w, STDIN, &buf[..n])?;
            }
        })
    });
    // The feeder is left to the process's end: it may wait on a terminal.
    drop(feeder);
    let mut r = conn;
    loop {
        match read_frame(&mut r) {
            Ok(Some((STDOUT, d))) => crate::out::bytes(&d)?,
            Ok(Some((STDERR, d))) => {
                let mut e = io::stderr().lock();
                let _ = e.write_all(&d);
            }
            Ok(Some((EXIT, d))) if d.len() == 4 => {
                return Ok(Some(i32::from_le_bytes([d[0], d[1], d[2], d[3]])));
            }
            Ok(Some((t, _))) => anyhow::bail!(
                "the holder of {} sent an unknown control frame {t}",
                f.image.display()
            ),
            Ok(None) | Err(_) => anyhow::bail!(
                "the holder of {} ended the command without an exit status ({})",
                f.image.display(),
                path.display()
            ),
        }
    }
}

/// A command's name, as typed.
pub fn command_name(cmd: &crate::Cmd) -> &'static str {
    use crate::Cmd::*;
    match cmd {
        Mkfs { .. } => "mkfs",
        Import { .. } => "import",
        Export { .. } => "export",
        Info { .. } => "info",
        Fsck { .. } => "fsck",
        Io { .. } => "io",
        Put { .. } => "put",
        Cat { .. } => "cat",
        Demo { .. } => "demo",
        Fsmap { .. } => "fsmap",
        Cp { .. } => "cp",
        Badblocks { .. } => "badblocks",
        Errors { .. } => "errors",
        ClearError { .. } => "clear-error",
        Scrub { .. } => "scrub",
        Serve { .. } => "serve",
        Completions { .. } => "completions",
        Man { .. } => "man",
        Bench { .. } => "bench",
        Mount(_) => "mount",
    }
}
