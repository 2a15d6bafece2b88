//! `daxfs export IMG [SRC] HOSTDIR`: copy a daxfs tree out to a new host
//! directory, keeping modes, owners (when the host lets us), times,
//! symlinks, hard links and holes. Ranges a file lost to media errors (and
//! ranges that fail to read) are skipped, left as holes, and reported: the
//! salvage path when both copies of a metadata node are bad and the file
//! system is shut down (reads still work).
use anyhow::{Context, Result, bail};
use daxfs::{FileKind, Fs, OpenOptions, Stat};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// What an export did.
#[derive(Default)]
pub struct Counts {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hard_links: u64,
    pub bytes: u64,
    /// (path, offset, length) of every range not copied.
    pub lost: Vec<(String, u64, u64)>,
    pub owner_kept: bool,
    /// FIFOs, sockets and device files made.
    pub special: u64,
    /// Entries not exported (see the notes printed).
    pub skipped: u64,
}

struct Exporter<'a> {
    fs: &'a Fs,
    links: HashMap<u64, PathBuf>,
    counts: Counts,
    owner_note: bool,
    progress: Option<std::time::Instant>,
}

fn join(dir: &str, name: &str) -> String {
    format!("{}/{name}", dir.trim_end_matches('/'))
}

impl Exporter<'_> {
    fn tick(&mut self) {
        if let Some(last) = &mut self.progress
            && last.elapsed().as_millis() > 200
        {
            self.show_progress();
            if let Some(last) = &mut self.progress {
                *last = std::time::Instant::now();
            }
        }
    }

    /// The progress line, rewritten in place (on a terminal only).
    fn show_progress(&self) {
        let c = &self.counts;
        eprint!(
            "\rexport: {} files, {} directories, {} bytes   ",
            c.files, c.dirs, c.bytes
        );
    }

    fn attrs(&mut self, host: &Path, st: &Stat) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        match std::os::unix::fs::lchown(host, Some(st.uid), Some(st.gid)) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                if !self.owner_note {
                    eprintln!(
                        "note: owners not kept (changing them needs privilege): files belong to the user running export"
                    );
                    self.owner_note = true;
                }
                self.counts.owner_kept = false;
            }
            Err(e) => return Err(e).with_context(|| format!("chown {}", host.display())),
        }
        std::fs::set_permissions(host, std::fs::Permissions::from_mode(st.perm))
            .with_context(|| format!("chmod {}", host.display()))?;
        self.xattrs(host, st)?;
        // Set by name, never by opening: a FIFO's open waits for a writer.
        let ts = |t: (i64, u32)| rustix::fs::Timespec {
            tv_sec: t.0,
            tv_nsec: i64::from(t.1),
        };
        let times = rustix::fs::Timestamps {
            last_access: ts(st.atime),
            last_modification: ts(st.mtime),
        };
        rustix::fs::utimensat(
            rustix::fs::CWD,
            host,
            &times,
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .with_context(|| format!("setting times of {}", host.display()))
    }

    /// Copies the file's extended attributes out. A host file system that
    /// keeps none (or refuses a namespace) gets a note, once per name.
    fn xattrs(&mut self, host: &Path, st: &Stat) -> Result<()> {
        let names = self
            .fs
            .listxattr_ino(st.ino)
            .with_context(|| format!("listing xattrs for {}", host.display()))?;
        for name in names {
            let shown = String::from_utf8_lossy(&name).into_owned();
            let value = self
                .fs
                .getxattr_ino(st.ino, &name)
                .with_context(|| format!("reading xattr {shown} for {}", host.display()))?;
            match rustix::fs::lsetxattr(host, &name[..], &value, rustix::fs::XattrFlags::empty()) {
                Ok(()) => {}
                Err(e) if e == rustix::io::Errno::NOTSUP || e == rustix::io::Errno::PERM => {
                    eprintln!(
                        "note: {}: extended attribute {shown} not kept by the host ({e})",
                        host.display()
                    );
                }
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("setting xattr {shown} of {}", host.display()));
                }
            }
        }
        Ok(())
    }

    fn dir(&mut self, src: &str, host: &Path) -> Result<()> {
        let mut ents = self.fs.readdir(src).with_context(|| src.to_string())?;
        ents.sort_by(|a, b| a.name.cmp(&b.name));
        for e in ents {
            let name = std::ffi::OsStr::from_bytes(&e.name);
            let s = join(src, &e.name_lossy());
            let mut sp = src.trim_end_matches('/').as_bytes().to_vec();
            sp.push(b'/');
            sp.extend_from_slice(&e.name);
            self.entry(&sp, &s, &host.join(name))?;
            self.tick();
        }
        Ok(())
    }

    /// `path` is the daxfs path as bytes; `shown` its text for messages.
    fn entry(&mut self, path: &[u8], shown: &str, host: &Path) -> Result<()> {
        let st = self.fs.lstat(path).with_context(|| shown.to_string())?;
        match st.kind {
            FileKind::Dir => {
                std::fs::create_dir(host).with_context(|| format!("mkdir {}", host.display()))?;
                self.counts.dirs += 1;
                self.dir(shown, host)?;
                self.attrs(host, &st)
            }
            FileKind::Symlink => {
                let t = self.fs.readlink(path).with_context(|| shown.to_string())?;
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&t), host)
                    .with_context(|| format!("symlink {}", host.display()))?;
                self.counts.symlinks += 1;
                Ok(())
            }
            FileKind::File => {
                if st.nlink > 1 {
                    if let Some(first) = self.links.get(&st.ino) {
                        std::fs::hard_link(first, host)
                            .with_context(|| format!("link {}", host.display()))?;
                        self.counts.hard_links += 1;
                        return Ok(());
                    }
                    self.links.insert(st.ino, host.to_path_buf());
                }
                self.file(path, shown, host, &st)?;
                self.attrs(host, &st)
            }
            other => {
                use rustix::fs::FileType as T;
                let (ft, dev) = match other {
                    FileKind::Fifo => (T::Fifo, 0),
                    FileKind::Socket => (T::Socket, 0),
                    FileKind::CharDev | FileKind::BlockDev => {
                        let (major, minor) = daxfs::decode_dev(st.rdev);
                        let t = if other == FileKind::CharDev {
                            T::CharacterDevice
                        } else {
                            T::BlockDevice
                        };
                        (t, rustix::fs::makedev(major, minor))
                    }
                    _ => {
                        eprintln!("note: {shown}: a {} is not exported", other.name());
                        self.counts.skipped += 1;
                        return Ok(());
                    }
                };
                let mode = rustix::fs::Mode::from_bits_truncate(st.perm);
                match rustix::fs::mknodat(rustix::fs::CWD, host, ft, mode, dev) {
                    Ok(()) => {}
                    // Device files need privilege (CAP_MKNOD).
                    Err(e) if e == rustix::io::Errno::PERM => {
                        eprintln!(
                            "note: {shown}: {} not exported (making one needs privilege)",
                            other.name()
                        );
                        self.counts.skipped += 1;
                        return Ok(());
                    }
                    Err(e) => {
                        return Err(e).with_context(|| format!("mknod {}", host.display()));
                    }
                }
                self.counts.special += 1;
                self.attrs(host, &st)
            }
        }
    }

    fn file(&mut self, path: &[u8], shown: &str, host: &Path, st: &Stat) -> Result<()> {
        let f = self
            .fs
            .open(path, &OpenOptions::read_only())
            .with_context(|| shown.to_string())?;
        let out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(host)
            .with_context(|| format!("creating {}", host.display()))?;
        self.counts.files += 1;
        let mut buf = vec![0u8; 64 << 10];
        let ext = f.fiemap().with_context(|| shown.to_string())?;
        for e in ext {
            let end = (e.logical + e.length).min(st.size);
            if e.logical >= end || e.unwritten {
                continue;
            }
            if e.lost {
                self.counts
                    .lost
                    .push((shown.to_string(), e.logical, end - e.logical));
                continue;
            }
            let mut off = e.logical;
            while off < end {
                let want = (end - off).min(buf.len() as u64) as usize;
                match f.read_at(off, &mut buf[..want]) {
                    Ok(n) if n == want => {
                        rustix::io::pwrite(&out, &buf[..n], off)
                            .with_context(|| format!("writing {}", host.display()))?;
                        self.counts.bytes += n as u64;
                        off += n as u64;
                    }
                    // A short read or an error: salvage block by block.
                    _ => {
                        let stop = off + want as u64;
                        while off < stop {
                            let n = (stop - off).min(4096) as usize;
                            match f.read_at(off, &mut buf[..n]) {
                                Ok(k) if k == n => {
                                    rustix::io::pwrite(&out, &buf[..n], off)
                                        .with_context(|| format!("writing {}", host.display()))?;
                                    self.counts.bytes += n as u64;
                                }
                                _ => self.counts.lost.push((shown.to_string(), off, n as u64)),
                            }
                            off += n as u64;
                        }
                    }
                }
            }
        }
        out.set_len(st.size)
            .with_context(|| format!("sizing {}", host.display()))?;
        Ok(())
    }
}

/// Exports daxfs directory `src` (or a single file) to `host`, which must
/// not exist (its parent must).
pub fn export(fs: &Fs, src: &str, host: &Path) -> Result<Counts> {
    if host.symlink_metadata().is_ok() {
        bail!(
            "{}: already exists (EEXIST): export makes a new directory",
            host.display()
        );
    }
    let st = fs.lstat(src).with_context(|| src.to_string())?;
    let mut ex = Exporter {
        fs,
        links: HashMap::new(),
        counts: Counts {
            owner_kept: true,
            ..Counts::default()
        },
        owner_note: false,
        progress: std::io::stderr()
            .is_terminal()
            .then(std::time::Instant::now),
    };
    let r = if st.kind == FileKind::Dir {
        std::fs::create_dir(host)
            .with_context(|| format!("mkdir {}", host.display()))
            .and_then(|()| ex.dir(src, host))
            .and_then(|()| ex.attrs(host, &st))
    } else {
        ex.entry(src.as_bytes(), src, host)
    };
    if ex.progress.is_some() {
        // The last count stays on the terminal, however short the run.
        ex.show_progress();
        eprintln!();
    }
    r.with_context(|| format!("exporting {src} to {}", host.display()))?;
    Ok(ex.counts)
}
