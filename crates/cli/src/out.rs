//! Standard output of every command. A reader that went away (EPIPE, as in
//! `daxfs info IMG | true` or `daxfs demo | head -1`) ends the command
//! quietly, as coreutils does, instead of a panic: the write fails with
//! [`Closed`], which the command returns like any error (closing the file
//! system on the way out), and `main` exits with status 141 (128 + SIGPIPE,
//! what a shell reports for a coreutils command stopped by the closed pipe)
//! without a message.
//!
//! A command run for a client of the control socket (see [`crate::control`])
//! writes to that client instead: [`crate::control::stdout`] and
//! [`crate::control::stderr`] choose.
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// Standard output was closed by its reader.
#[derive(Debug)]
pub struct Closed;

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("standard output was closed")
    }
}

impl std::error::Error for Closed {}

/// The exit status for a closed standard output.
pub const EXIT_CLOSED: i32 = 128 + libc::SIGPIPE;

static CLOSED: AtomicBool = AtomicBool::new(false);

/// Whether a write to standard output has met a closed reader.
pub fn closed() -> bool {
    crate::control::client_closed().unwrap_or_else(|| CLOSED.load(Ordering::Relaxed))
}

/// Remembers that the reader went away (of the control client being served,
/// if any, else of this process's standard output).
fn set_closed() {
    if crate::control::set_client_closed().is_none() {
        CLOSED.store(true, Ordering::Relaxed);
    }
}

/// Whether `e` is (or was caused by) a closed standard output.
pub fn is_closed(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<Closed>())
}

/// Turns a write error into [`Closed`] when the reader went away.
pub fn map(e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        set_closed();
        anyhow::Error::new(Closed)
    } else {
        anyhow::Error::new(e).context("writing to standard output")
    }
}

/// Writes one line (`args` and a newline) to standard output.
pub fn line(args: std::fmt::Arguments<'_>) -> anyhow::Result<()> {
    let mut o = crate::control::stdout();
    o.write_fmt(args)
        .and_then(|_| o.write_all(b"\n"))
        .map_err(map)
}

/// Writes `bytes` to standard output.
pub fn bytes(b: &[u8]) -> anyhow::Result<()> {
    crate::control::stdout().write_all(b).map_err(map)
}

/// Standard output for code that writes through `Write` and goes on after
/// an error (the `io` shell): a closed reader is remembered, for the
/// caller to stop at ([`closed`]).
pub struct Stdout;

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        crate::control::stdout().write(buf).inspect_err(note)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        crate::control::stdout().flush().inspect_err(note)
    }
}

fn note(e: &std::io::Error) {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        set_closed();
    }
}

/// Writes one line to standard error (of the control client being served,
/// if any); a failure to write it is ignored, as `eprintln!` cannot report one.
pub fn err_line(args: std::fmt::Arguments<'_>) {
    let mut e = crate::control::stderr();
    let _ = e.write_fmt(args).and_then(|_| e.write_all(b"\n"));
}

/// `eprintln!` for commands that can run for a control client.
macro_rules! errln {
    ($($t:tt)*) => {
        $crate::out::err_line(format_args!($($t)*))
    };
}
pub(crate) use errln;

/// `println!` for commands: returns [`Closed`] from the enclosing function
/// (which returns `anyhow::Result`) when the reader went away.
macro_rules! outln {
    ($($t:tt)*) => {
        $crate::out::line(format_args!($($t)*))?
    };
}
pub(crate) use outln;

/// Runs `f` (the line editor) with file descriptor 1 pointing at standard
/// error, and puts standard output back after it: the editor writes its
/// prompt and echo to descriptor 1, and the prompt belongs on standard
/// error, so that output redirected to a file or pipe never holds it.
pub fn on_stderr<R>(f: impl FnOnce() -> R) -> std::io::Result<R> {
    std::io::stdout().flush()?;
    let saved = rustix::io::dup(std::io::stdout())?;
    rustix::stdio::dup2_stdout(std::io::stderr())?;
    let r = f();
    rustix::stdio::dup2_stdout(&saved)?;
    Ok(r)
}
