//! `daxfs io`: an xfs_io-style command shell over a mounted file system.
//!
//! Each command acts on the file system or on the open file. A failing command
//! prints `CMD: message (ERRNO)` on stderr; with `-c` the remaining commands
//! do not run and the exit status is non-zero.
use crate::args::parse_size;
use daxfs::{Access, FallocFlags, File, Fs, FsError, OpenOptions, View};
use std::io::Write;

mod xattr;

/// An error of one shell command, with the errno it maps to.
#[derive(Debug)]
pub struct CmdError {
    pub message: String,
    pub errno: &'static str,
}

impl From<FsError> for CmdError {
    fn from(e: FsError) -> Self {
        CmdError {
            errno: e.errno_name(),
            message: e.to_string(),
        }
    }
}

impl From<anyhow::Error> for CmdError {
    fn from(e: anyhow::Error) -> Self {
        CmdError {
            errno: "EINVAL",
            message: e.to_string(),
        }
    }
}

fn usage(msg: &str) -> CmdError {
    CmdError {
        errno: "EINVAL",
        message: msg.to_string(),
    }
}

type CmdResult = Result<(), CmdError>;

/// The shell's state: the file system, the open file and the current view.
pub struct Shell<'a> {
    pub fs: &'a Fs,
    pub file: Option<(String, File)>,
    pub out: Box<dyn Write + 'a>,
    /// The mapping `mmap` made (xfs_io keeps one current mapping too).
    pub view: Option<View>,
    /// `io -r`: commands that would change the file system fail with EROFS.
    pub read_only: bool,
}

/// The commands `io -r` runs: those that change nothing (`open` only with
/// `-r`, `mmap` only with `-r`).
pub(crate) const READ_ONLY_COMMANDS: &[&str] = &[
    "close",
    "pread",
    "stat",
    "fiemap",
    "ls",
    "readlink",
    "fsmap",
    "mread",
    "munmap",
    "help",
    "df",
    "statfs",
    "du",
    "fsync",
    "fdatasync",
    "sync",
];

/// Flags with their values, and the other words, of a command's arguments.
type Parsed<'w> = (Vec<(char, Option<&'w str>)>, Vec<&'w str>);

/// Splits flags from positional words. `spec` lists the flags the command
/// takes, as getopt(3) does: a letter followed by ':' takes a value
/// (`-x VALUE`). Any other flag is an error.
pub(crate) fn getopt<'w>(words: &'w [String], spec: &str) -> Result<Parsed<'w>, CmdError> {
    let mut flags = vec![];
    let mut pos = vec![];
    let mut i = 0;
    while i < words.len() {
        let w = &words[i];
        if w.len() >= 2 && w.starts_with('-') && !w[1..].starts_with(|c: char| c.is_ascii_digit()) {
            for c in w[1..].chars() {
                let Some(at) = spec.find(c).filter(|_| c != ':') else {
                    return Err(usage(&format!("unknown option -{c}")));
                };
                if spec[at + c.len_utf8()..].starts_with(':') {
                    i += 1;
                    let v = words
                        .get(i)
                        .ok_or_else(|| usage(&format!("-{c} needs a value")))?;
                    flags.push((c, Some(v.as_str())));
                } else {
                    flags.push((c, None));
                }
            }
        } else {
            pos.push(w.as_str());
        }
        i += 1;
    }
    Ok((flags, pos))
}

fn num(s: &str) -> Result<u64, CmdError> {
    parse_size(s).map_err(|e| usage(&e.to_string()))
}

fn args<'w, const N: usize>(pos: &[&'w str], what: &str) -> Result<[&'w str; N], CmdError> {
    <[&str; N]>::try_from(pos).map_err(|_| usage(&format!("usage: {what}")))
}

impl<'a> Shell<'a> {
    pub(crate) fn file(&self) -> Result<&File, CmdError> {
        self.file.as_ref().map(|(_, f)| f).ok_or_else(|| CmdError {
            errno: "EBADF",
            message: "no file is open (use open PATH)".into(),
        })
    }

    /// Runs one command line.
    pub fn run(&mut self, line: &str) -> CmdResult {
        let words = crate::args::split_words(line)?;
        let Some((cmd, rest)) = words.split_first() else {
            return Ok(());
        };
        if self.read_only {
            let flagged = |f: &str| rest.iter().any(|w| w.starts_with('-') && w.contains(f));
            let allowed = READ_ONLY_COMMANDS.contains(&cmd.as_str())
                || (cmd == "open" && flagged("r") && !flagged("c") && !flagged("t"))
                || (cmd == "mmap" && flagged("r"));
            if !allowed {
                return Err(CmdError {
                    errno: "EROFS",
                    message: "the image is open read-only (io -r)".into(),
                });
            }
        }
        match cmd.as_str() {
            "open" => self.open(rest),
            "close" => {
                self.file = None;
                Ok(())
            }
            "pwrite" => self.pwrite(rest),
            "pread" => self.pread(rest),
            "truncate" => {
                let (_, pos) = getopt(rest, "")?;
                let [len] = args(&pos, "truncate LEN")?;
                Ok(self.file()?.set_len(num(len)?)?)
            }
            "falloc" => {
                let (flags, pos) = getopt(rest, "k")?;
                let [off, len] = args(&pos, "falloc [-k] OFF LEN")?;
                let keep = flags.iter().any(|f| f.0 == 'k');
                Ok(self.file()?.fallocate(
                    FallocFlags {
                        keep_size: keep,
                        ..Default::default()
                    },
                    num(off)?,
                    num(len)?,
                )?)
            }
            "fpunch" => {
                let (_, pos) = getopt(rest, "")?;
                let [off, len] = args(&pos, "fpunch OFF LEN")?;
                Ok(self.file()?.fallocate(
                    FallocFlags {
                        keep_size: true,
                        punch_hole: true,
                        ..Default::default()
                    },
                    num(off)?,
                    num(len)?,
                )?)
            }
            "fzero" => {
                let (flags, pos) = getopt(rest, "k")?;
                let [off, len] = args(&pos, "fzero [-k] OFF LEN")?;
                let keep = flags.iter().any(|f| f.0 == 'k');
                Ok(self.file()?.fallocate(
                    FallocFlags {
                        keep_size: keep,
                        zero_range: true,
                        ..Default::default()
                    },
                    num(off)?,
                    num(len)?,
                )?)
            }
            "fsync" | "fdatasync" => Ok(self.file()?.fsync()?),
            "sync" => Ok(self.fs.sync()?),
            "stat" => self.stat(rest),
            "fiemap" => self.fiemap(),
            "ls" => self.ls(rest),
            "mkdir" => {
                let [p] = args(&getopt(rest, "")?.1, "mkdir PATH")?;
                Ok(self.fs.mkdir(p, 0o755)?)
            }
            "rm" => self.rm(rest),
            "mknod" => self.mknod(rest),
            "chown" => self.chown(rest),
            "touch" => self.touch(rest),
            "df" | "statfs" => self.df(rest),
            "du" => self.du(rest),
            "rmdir" => {
                let [p] = args(&getopt(rest, "")?.1, "rmdir PATH")?;
                Ok(self.fs.rmdir(p)?)
            }
            "rename" | "mv" => {
                let [a, b] = args(&getopt(rest, "")?.1, "rename FROM TO")?;
                Ok(self.fs.rename(a, b)?)
            }
            "link" => {
                let [a, b] = args(&getopt(rest, "")?.1, "link EXISTING NEW")?;
                Ok(self.fs.link(a, b)?)
            }
            "symlink" => {
                let [a, b] = args(&getopt(rest, "")?.1, "symlink TARGET PATH")?;
                Ok(self.fs.symlink(a, b)?)
            }
            "readlink" => {
                let [p] = args(&getopt(rest, "")?.1, "readlink PATH")?;
                let t = self.fs.readlink(p)?;
                writeln!(self.out, "{}", String::from_utf8_lossy(&t)).ok();
                Ok(())
            }
            "chmod" => {
                let [m, p] = args(&getopt(rest, "")?.1, "chmod MODE PATH")?;
                let mode = u32::from_str_radix(m, 8).map_err(|_| usage("chmod: MODE is octal"))?;
                Ok(self.fs.chmod(p, mode)?)
            }
            "reflink" => self.reflink(rest),
            "dedupe" => self.dedupe(rest),
            "copy_range" => self.copy_range(rest),
            "funshare" => {
                let [off, len] = args(&getopt(rest, "")?.1, "funshare OFF LEN")?;
                let flags = FallocFlags {
                    unshare: true,
                    keep_size: true,
                    ..Default::default()
                };
                Ok(self.file()?.fallocate(flags, num(off)?, num(len)?)?)
            }
            "fsmap" => {
                let (_, pos) = getopt(rest, "")?;
                let (start, end) = match pos.as_slice() {
                    [] => (0, u64::MAX),
                    [a, b] => (num(a)?, num(b)?),
                    _ => return Err(usage("usage: fsmap [START END]")),
                };
                if end <= start {
                    return Err(usage("fsmap: END must be above START"));
                }
                let rows = self.fs.fsmap(start / 4096, (end - start).div_ceil(4096))?;
                for (i, r) in rows.iter().enumerate() {
                    writeln!(self.out, "{}", crate::fsmap::row_text(i, r)).ok();
                }
                Ok(())
            }
            "inject-error" => {
                let [off, len] = args(&getopt(rest, "")?.1, "inject-error OFF LEN")?;
                let (off, len) = (num(off)?, num(len)?);
                let mut ev = self.fs.inject_error(off, len)?;
                crate::control::note_events(&ev);
                if off % 4096 != 0 || len % 4096 != 0 {
                    // Checked by now: inside the device, no overflow.
                    let (a, b) = (off / 4096 * 4096, (off + len).div_ceil(4096) * 4096);
                    writeln!(
                        self.out,
                        "note: [{off:#x}, +{len:#x}) is not 4 KiB aligned: the pages [{a:#x}, +{:#x}) went bad",
                        b - a
                    )
                    .ok();
                }
                self.fs.name_owners(&mut ev)?;
                if ev.is_empty() {
                    writeln!(
                        self.out,
                        "injected [{off:#x}, +{len:#x}): already known bad, nothing new"
                    )
                    .ok();
                }
                for e in &ev {
                    writeln!(
                        self.out,
                        "[{:#x}, +{:#x}): {}: {}",
                        e.physical,
                        e.length,
                        crate::fsmap::event_owner(&e.owner, e.offset),
                        e.action
                    )
                    .ok();
                }
                Ok(())
            }
            "mmap" => self.mmap(rest),
            "mread" => self.mread(rest),
            "mwrite" => self.mwrite(rest),
            "msync" => self.msync(rest),
            "munmap" => {
                self.view_ref()?;
                self.view = None;
                Ok(())
            }
            "help" => {
                writeln!(self.out, "{HELP}\n{}", xattr::HELP).ok();
                Ok(())
            }
            other => self
                .xattr_command(other, rest)
                .unwrap_or_else(|| Err(usage(&format!("unknown command {other:?} (try help)")))),
        }
    }

    fn open(&mut self, rest: &[String]) -> CmdResult {
        let (flags, pos) = getopt(rest, "crtax")?;
        let [p] = args(&pos, "open [-c] [-r] [-t] [-a] [-x] PATH")?;
        let has = |c| flags.iter().any(|f: &(char, Option<&str>)| f.0 == c);
        let mut o = if has('r') {
            OpenOptions::read_only()
        } else {
            OpenOptions::read_write()
        };
        o.create = has('c');
        o.truncate = has('t');
        o.append = has('a');
        o.excl = has('x');
        let f = self.fs.open(p, &o)?;
        crate::errors::name(f.ino(), p);
        self.file = Some((p.to_string(), f));
        Ok(())
    }

    fn pwrite(&mut self, rest: &[String]) -> CmdResult {
        let (flags, pos) = getopt(rest, "S:")?;
        let [off, len] = args(&pos, "pwrite [-S BYTE] OFF LEN")?;
        let (off, len) = (num(off)?, num(len)?);
        let byte = match flags.iter().find(|f| f.0 == 'S') {
            Some((_, Some(v))) => {
                u8::try_from(num(v)?).map_err(|_| usage("-S takes a byte value"))?
            }
            _ => 0xcd,
        };
        let f = self.file()?;
        let chunk = 1u64 << 20;
        let buf = vec![byte; chunk.min(len) as usize];
        let mut done = 0;
        while done < len {
            let n = chunk.min(len - done) as usize;
            if let Err(e) = f.write_at(off + done, &buf[..n]) {
                // As write(2): the prefix written stays; say how much it is.
                writeln!(self.out, "wrote {done}/{len} bytes at offset {off}").ok();
                return Err(e.into());
            }
            done += n as u64;
        }
        writeln!(self.out, "wrote {len}/{len} bytes at offset {off}").ok();
        Ok(())
    }

    fn pread(&mut self, rest: &[String]) -> CmdResult {
        let (flags, pos) = getopt(rest, "v")?;
        let [off, len] = args(&pos, "pread [-v] OFF LEN")?;
        let (off, len) = (num(off)?, num(len)?);
        let verbose = flags.iter().any(|f| f.0 == 'v');
        let f = self.file.as_ref().map(|(_, f)| f).ok_or_else(|| CmdError {
            errno: "EBADF",
            message: "no file is open (use open PATH)".into(),
        })?;
        let mut buf = vec![0u8; len.min(1 << 20) as usize];
        let mut done = 0u64;
        while done < len {
            let want = (len - done).min(buf.len() as u64) as usize;
            let n = f.read_at(off + done, &mut buf[..want])?;
            if verbose {
                hexdump(&mut self.out, off + done, &buf[..n]);
            }
            done += n as u64;
            if n < want {
                break;
            }
        }
        if done < len {
            // Say why it stopped: the end of the file, or a range it lost.
            let pos = off + done;
            let why = if pos >= f.stat().size {
                "the end of the file".to_string()
            } else {
                match f.read_at(pos, &mut [0u8; 1]) {
                    Err(e) if e.errno() == libc::EIO => "lost to a media error (EIO)".to_string(),
                    Err(e) => format!("{e} ({})", e.errno_name()),
                    Ok(_) => "a short read".to_string(),
                }
            };
            writeln!(
                self.out,
                "read {done}/{len} bytes at offset {off}: stopped at {pos}: {why}"
            )
            .ok();
        } else {
            writeln!(self.out, "read {done}/{len} bytes at offset {off}").ok();
        }
        Ok(())
    }

    fn view_ref(&self) -> Result<&View, CmdError> {
        self.view.as_ref().ok_or_else(|| CmdError {
            errno: "EINVAL",
            message: "no mapping (use mmap OFF LEN)".into(),
        })
    }

    /// The view and the file range `[off, off+len)` of a `mread`/`mwrite`/
    /// `msync` (the whole mapping when no range is given), checked to lie
    /// inside the mapping as xfs_io does.
    fn view_range(&self, pos: &[&str], what: &str) -> Result<(&View, u64, u64), CmdError> {
        let v = self.view_ref()?;
        let (off, len) = match pos {
            [] => (v.offset(), v.len() as u64),
            [o, l] => (num(o)?, num(l)?),
            _ => return Err(usage(&format!("usage: {what}"))),
        };
        let (start, end) = (v.offset(), v.offset() + v.len() as u64);
        if off < start || off.checked_add(len).is_none_or(|e| e > end) {
            return Err(usage(&format!(
                "range [{off}, +{len}) is outside the mapping [{start}, +{})",
                v.len()
            )));
        }
        Ok((v, off, len))
    }

    /// `mmap [-r|-w] OFF LEN`: maps a range of the open file (read-write
    /// by default when the file is open for writing).
    fn mmap(&mut self, rest: &[String]) -> CmdResult {
        let (flags, pos) = getopt(rest, "rw")?;
        let [off, len] = args(&pos, "mmap [-r|-w] OFF LEN")?;
        let has = |c| flags.iter().any(|f: &(char, Option<&str>)| f.0 == c);
        let (off, len) = (num(off)?, num(len)?);
        let f = self.file()?;
        let v = if has('r') {
            f.map(off, len, Access::Read)?
        } else if has('w') {
            f.map(off, len, Access::ReadWrite)?
        } else {
            match f.map(off, len, Access::ReadWrite) {
                Err(e) if e.errno_name() == "EACCES" => f.map(off, len, Access::Read)?,
                r => r?,
            }
        };
        self.view = Some(v);
        Ok(())
    }

    /// `mread [-v] [OFF LEN]`: loads through the mapping.
    fn mread(&mut self, rest: &[String]) -> CmdResult {
        let (flags, pos) = getopt(rest, "v")?;
        let verbose = flags.iter().any(|f| f.0 == 'v');
        let (v, off, len) = self.view_range(&pos, "mread [-v] [OFF LEN]")?;
        let mut buf = vec![0u8; len.min(1 << 20) as usize];
        let mut done = 0u64;
        let mut dump = vec![];
        while done < len {
            let n = (len - done).min(buf.len() as u64) as usize;
            v.read_at(off + done, &mut buf[..n])?;
            if verbose {
                dump.push((off + done, buf[..n].to_vec()));
            }
            done += n as u64;
        }
        for (at, bytes) in dump {
            hexdump(&mut self.out, at, &bytes);
        }
        writeln!(self.out, "read {len}/{len} bytes at offset {off}").ok();
        Ok(())
    }

    /// `mwrite [-S BYTE] [OFF LEN]`: stores through the mapping (BYTE
    /// defaults to 0x58, 'X', as in xfs_io).
    fn mwrite(&mut self, rest: &[String]) -> CmdResult {
        let (flags, pos) = getopt(rest, "S:")?;
        let byte = match flags.iter().find(|f| f.0 == 'S') {
            Some((_, Some(v))) => {
                u8::try_from(num(v)?).map_err(|_| usage("-S takes a byte value"))?
            }
            _ => 0x58,
        };
        let (v, off, len) = self.view_range(&pos, "mwrite [-S BYTE] [OFF LEN]")?;
        let chunk = 1u64 << 20;
        let buf = vec![byte; chunk.min(len) as usize];
        let mut done = 0;
        while done < len {
            let n = chunk.min(len - done) as usize;
            v.write_at(off + done, &buf[..n])?;
            done += n as u64;
        }
        writeln!(self.out, "wrote {len}/{len} bytes at offset {off}").ok();
        Ok(())
    }

    /// `msync [OFF LEN]`: makes the mapping's stores durable.
    fn msync(&mut self, rest: &[String]) -> CmdResult {
        let (_, pos) = getopt(rest, "")?;
        let (v, off, len) = self.view_range(&pos, "msync [OFF LEN]")?;
        Ok(v.msync(off, len)?)
    }

    /// `reflink SRC [SRC_OFF DST_OFF LEN]`: clone into the open file.
    fn reflink(&mut self, rest: &[String]) -> CmdResult {
        let (_, pos) = getopt(rest, "")?;
        let (src, so, doff, len) = match pos.as_slice() {
            [src] => (*src, 0, 0, 0),
            [src, a, b, c] => (*src, num(a)?, num(b)?, num(c)?),
            _ => return Err(usage("usage: reflink SRC [SRC_OFF DST_OFF LEN]")),
        };
        let s = self.fs.open(src, &OpenOptions::read_only())?;
        let n = self.file()?.clone_range(&s, so, doff, len)?;
        writeln!(self.out, "linked {n}/{n} bytes at offset {doff}").ok();
        Ok(())
    }

    /// `dedupe SRC SRC_OFF DST_OFF LEN`: share equal ranges of SRC and the open file.
    fn dedupe(&mut self, rest: &[String]) -> CmdResult {
        let [src, a, b, c] = args(&getopt(rest, "")?.1, "dedupe SRC SRC_OFF DST_OFF LEN")?;
        let (so, doff, len) = (num(a)?, num(b)?, num(c)?);
        let s = self.fs.open(src, &OpenOptions::read_only())?;
        let r = s.dedupe_range(so, len, &[(self.file()?, doff)])?;
        match &r[0].status {
            daxfs::DedupeStatus::Same => {
                let n = r[0].bytes_deduped;
                writeln!(self.out, "deduped {n}/{len} bytes at offset {doff}").ok();
                Ok(())
            }
            daxfs::DedupeStatus::Differs => {
                writeln!(self.out, "Extents did not match.").ok();
                Ok(())
            }
            daxfs::DedupeStatus::Error(e) => Err(CmdError {
                errno: daxfs::error::errno_name(*e),
                message: "dedupe failed for the open file".into(),
            }),
        }
    }

    /// `copy_range SRC [SRC_OFF DST_OFF LEN]`: copy (sharing whole blocks) into the open file.
    fn copy_range(&mut self, rest: &[String]) -> CmdResult {
        let (_, pos) = getopt(rest, "")?;
        let s;
        let (so, doff, len) = match pos.as_slice() {
            [src] => {
                s = self.fs.open(src, &OpenOptions::read_only())?;
                (0, 0, s.stat().size)
            }
            [src, a, b, c] => {
                s = self.fs.open(src, &OpenOptions::read_only())?;
                (num(a)?, num(b)?, num(c)?)
            }
            _ => return Err(usage("usage: copy_range SRC [SRC_OFF DST_OFF LEN]")),
        };
        let n = self.file()?.copy_range(&s, so, doff, len)?;
        writeln!(self.out, "copied {n}/{len} bytes at offset {doff}").ok();
        Ok(())
    }

    fn fiemap(&mut self) -> CmdResult {
        let ext = self.file()?.fiemap()?;
        let size = self.file()?.stat().size;
        let mut at = 0u64;
        let mut i = 0;
        let o = &mut self.out;
        let mut row = |o: &mut Box<dyn Write + 'a>, lo: u64, hi: u64, what: String| {
            writeln!(o, "{i}: [{}..{}]: {what}", lo / 512, hi / 512 - 1).ok();
            i += 1;
        };
        for e in &ext {
            if e.logical > at {
                row(o, at, e.logical, "hole".into());
            }
            let flags: String = [
                (e.unwritten, " unwritten"),
                (e.shared, " shared"),
                (e.lost, " lost"),
            ]
            .iter()
            .filter(|f| f.0)
            .map(|f| f.1)
            .collect();
            row(
                o,
                e.logical,
                e.logical + e.length,
                format!(
                    "{}..{}{flags}",
                    e.physical / 512,
                    (e.physical + e.length) / 512 - 1
                ),
            );
            at = e.logical + e.length;
        }
        let end = size.div_ceil(4096).saturating_mul(4096);
        if at < end {
            row(o, at, end, "hole".into());
        }
        Ok(())
    }
}

fn hexdump(o: &mut Box<dyn Write + '_>, base: u64, data: &[u8]) {
    for (i, chunk) in data.chunks(16).enumerate() {
        let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
        let txt: String = chunk
            .iter()
            .map(|&b| {
                if (0x20..0x7f).contains(&b) {
                    b as char
                } else {
                    '.'
                }
            })
            .collect();
        writeln!(
            o,
            "{:08x}:  {:<47}  {txt}",
            base + 16 * i as u64,
            hex.join(" ")
        )
        .ok();
    }
}

/// The command list shown by `help`.
pub const HELP: &str = "\
open [-c] [-r] [-t] [-a] [-x] PATH   open (create, read-only, truncate, append, exclusive)
close                                 close the open file
pwrite [-S BYTE] OFF LEN              write LEN bytes of BYTE (default 0xcd) at OFF
pread [-v] OFF LEN                    read (and with -v dump) LEN bytes at OFF
truncate LEN                          set the open file's size
falloc [-k] OFF LEN                   preallocate (keep size with -k)
fpunch OFF LEN                        punch a hole
fzero [-k] OFF LEN                    zero a range (keep size with -k)
fsync                                 make the open file durable
sync                                  make every file durable
stat [PATH...]                        attributes of the open file or of each PATH
fiemap                                extents of the open file (512-byte units)
ls [-l] [-R] [PATH...]                list directories, sorted (-l: mode, links, owner, group, size, mtime; -R: recursive)
mkdir PATH | rmdir PATH               create, remove an empty directory
mknod [-m MODE] PATH TYPE [MAJOR MINOR] make a FIFO (p), socket (s), character (c) or block (b) device
rm [-r] [-f] PATH...                  remove files (-r: directories and all under them; -f: missing is fine)
rename FROM TO | link OLD NEW | symlink TARGET PATH | readlink PATH | chmod MODE PATH
chown UID[:GID] PATH                  change owner and group (numeric ids)
touch [-a] [-m] [-d SEC[.NSEC]] PATH... create if missing; set atime and mtime (now, or -d)
df | statfs                           size, use and inodes of the file system
du [-s] [PATH...]                     bytes held under each directory (-s: totals only)
reflink SRC [SRC_OFF DST_OFF LEN]      clone SRC (or a block range of it) into the open file
dedupe SRC SRC_OFF DST_OFF LEN         share the range with SRC where the bytes are equal
copy_range SRC [SRC_OFF DST_OFF LEN]   copy SRC into the open file, sharing whole blocks
funshare OFF LEN                       give the range blocks of its own
fsmap [START END]                      owners of device bytes START..END (512-byte units)
inject-error OFF LEN                   emulate a hardware report of bad memory at device bytes OFF..OFF+LEN
mmap [-r|-w] OFF LEN                   map the open file's range (read-only, read-write) straight from the device
mread [-v] [OFF LEN]                   load (and with -v dump) bytes through the mapping (file offsets)
mwrite [-S BYTE] [OFF LEN]             store BYTE (default 0x58) through the mapping
msync [OFF LEN]                        make the mapping's stores durable
munmap                                 remove the mapping
help | quit                            this list | end the session
Sizes and offsets take b (4 KiB block), s (512-byte sector), k, m, g, t (or KiB, MiB, GiB) suffixes or 0x hexadecimal.";
