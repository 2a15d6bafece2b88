//! `daxfs import IMG HOSTDIR [DEST]` and `daxfs mkfs IMG --from DIR`: copy a
//! host directory tree in, keeping modes, owners, times, symlinks, hard
//! links and holes.
//!
//! The tree is built under a temporary name beside DEST and renamed into
//! place at the end; on any failure (ENOSPC included) the temporary tree is
//! removed, so nothing half-imported is left.
use anyhow::{Context, Result, bail};
use daxfs::{FileKind, Fs, OpenOptions};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// What an import did.
#[derive(Default)]
pub struct Counts {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hard_links: u64,
    pub bytes: u64,
    pub skipped: u64,
    /// FIFOs, sockets and device files made.
    pub special: u64,
    /// Extended attributes copied.
    pub xattrs: u64,
}

struct Importer<'a> {
    fs: &'a Fs,
    /// (host device, host inode) of files with several links, to the path
    /// of their first copy.
    links: HashMap<(u64, u64), Vec<u8>>,
    counts: Counts,
    progress: Option<std::time::Instant>,
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = dir.to_vec();
    if !p.ends_with(b"/") {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

fn show(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

fn times(m: &std::fs::Metadata) -> ((i64, u32), (i64, u32)) {
    (
        (m.atime(), m.atime_nsec() as u32),
        (m.mtime(), m.mtime_nsec() as u32),
    )
}

/// Copies the extended attributes of host file `host` to `dest` (of a
/// symlink, the link's own). Names daxfs does not keep (namespaces other
/// than `user.`, `trusted.` and `security.`, such as `system.` ACLs) get a
/// note, and the copy goes on without them.
fn copy_xattrs(fs: &Fs, host: &Path, dest: &[u8], counts: &mut Counts) -> Result<()> {
    let mut buf = vec![0u8; 64 << 10];
    let n = match rustix::fs::llistxattr(host, &mut buf[..]) {
        Ok(n) => n,
        // The host file system keeps none.
        Err(e) if e == rustix::io::Errno::NOTSUP => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("listing xattrs of {}", host.display())),
    };
    let mut value = vec![0u8; 64 << 10];
    for name in buf[..n].split(|&b| b == 0).filter(|s| !s.is_empty()) {
        let shown = String::from_utf8_lossy(name);
        let len = match rustix::fs::lgetxattr(host, name, &mut value[..]) {
            Ok(len) => len,
            // Gone since the list, or too big for daxfs (over 64 KiB).
            Err(e) if e == rustix::io::Errno::NODATA => continue,
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("reading xattr {shown} of {}", host.display()));
            }
        };
        match fs.lsetxattr(dest, name, &value[..len], 0) {
            Ok(()) => counts.xattrs += 1,
            Err(e) if e.errno() == libc::EOPNOTSUPP => {
                eprintln!(
                    "note: {}: extended attribute {shown} not copied (daxfs keeps user., trusted. and security. only)",
                    host.display()
                );
                counts.skipped += 1;
            }
            Err(e) => {
                return Err(e).with_context(|| format!("setting xattr {shown} of {}", show(dest)));
            }
        }
    }
    Ok(())
}

impl Importer<'_> {
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
            "\rimport: {} files, {} directories, {} bytes   ",
            c.files, c.dirs, c.bytes
        );
    }

    /// Copies the entries of host directory `host` into the daxfs directory
    /// `dest` (which exists), then sets `dest`'s attributes from `host`.
    fn dir(&mut self, host: &Path, dest: &[u8]) -> Result<()> {
        let mut ents: Vec<_> = std::fs::read_dir(host)
            .with_context(|| format!("reading {}", host.display()))?
            .collect::<std::io::Result<_>>()
            .with_context(|| format!("reading {}", host.display()))?;
        ents.sort_by_key(|e| e.file_name());
        for e in ents {
            let hp = e.path();
            let d = join(dest, e.file_name().as_bytes());
            self.entry(&hp, &d)?;
            self.tick();
        }
        let m = std::fs::symlink_metadata(host)?;
        self.attrs(host, dest, &m)
    }

    fn attrs(&mut self, host: &Path, dest: &[u8], m: &std::fs::Metadata) -> Result<()> {
        let fs = self.fs;
        fs.chmod(dest, m.mode() & 0o7777)?;
        fs.chown(dest, Some(m.uid()), Some(m.gid()))?;
        let (a, t) = times(m);
        fs.utimens(dest, Some(a), Some(t))?;
        copy_xattrs(self.fs, host, dest, &mut self.counts)
    }

    fn entry(&mut self, host: &Path, dest: &[u8]) -> Result<()> {
        let m = std::fs::symlink_metadata(host)
            .with_context(|| format!("reading {}", host.display()))?;
        let ft = m.file_type();
        let fs = self.fs;
        if ft.is_dir() {
            fs.mkdir(dest, 0o700)
                .with_context(|| format!("mkdir {}", show(dest)))?;
            self.counts.dirs += 1;
            return self.dir(host, dest);
        }
        if ft.is_symlink() {
            let t = std::fs::read_link(host)?;
            fs.symlink(t.as_os_str().as_bytes(), dest)
                .with_context(|| format!("symlink {}", show(dest)))?;
            // chown and utimens follow a final symlink: a link keeps
            // daxfs's own owner and times.
            self.counts.symlinks += 1;
            return Ok(());
        }
        if ft.is_fifo() || ft.is_socket() || ft.is_char_device() || ft.is_block_device() {
            use daxfs_format::records::mode as t;
            let (kind, rdev) = if ft.is_fifo() {
                (t::S_IFIFO, 0)
            } else if ft.is_socket() {
                (t::S_IFSOCK, 0)
            } else {
                let dev = m.rdev();
                let (major, minor) = (rustix::fs::major(dev), rustix::fs::minor(dev));
                let rdev = daxfs::encode_dev(major, minor)
                    .with_context(|| format!("reading {}", host.display()))?;
                let k = if ft.is_char_device() {
                    t::S_IFCHR
                } else {
                    t::S_IFBLK
                };
                (k, rdev)
            };
            fs.mknod(dest, kind | (m.mode() & 0o7777), rdev)
                .with_context(|| format!("mknod {}", show(dest)))?;
            self.counts.special += 1;
            return self.attrs(host, dest, &m);
        }
        if !ft.is_file() {
            eprintln!("note: {}: special file skipped", host.display());
            self.counts.skipped += 1;
            return Ok(());
        }
        if m.nlink() > 1 {
            if let Some(first) = self.links.get(&(m.dev(), m.ino())) {
                fs.link(first.as_slice(), dest)
                    .with_context(|| format!("link {}", show(dest)))?;
                self.counts.hard_links += 1;
                return Ok(());
            }
            self.links.insert((m.dev(), m.ino()), dest.to_vec());
        }
        self.file(host, dest, &m)?;
        self.attrs(host, dest, &m)
    }

    /// Copies a regular file's data ranges (SEEK_DATA/SEEK_HOLE), leaving
    /// its holes holes.
    fn file(&mut self, host: &Path, dest: &[u8], m: &std::fs::Metadata) -> Result<()> {
        use rustix::fs::{SeekFrom, seek};
        let src =
            std::fs::File::open(host).with_context(|| format!("opening {}", host.display()))?;
        let f = self
            .fs
            .open(dest, &OpenOptions::create_new())
            .with_context(|| format!("creating {}", show(dest)))?;
        self.counts.files += 1;
        let size = m.len();
        let mut buf = vec![0u8; 1 << 20];
        let mut at = 0u64;
        while at < size {
            let data = match seek(&src, SeekFrom::Data(at)) {
                Ok(d) => d,
                // ENXIO: no data at or after `at`.
                Err(e) if e == rustix::io::Errno::NXIO => break,
                Err(e) => return Err(e).with_context(|| format!("reading {}", host.display())),
            };
            let hole = seek(&src, SeekFrom::Hole(data))
                .with_context(|| format!("reading {}", host.display()))?
                .min(size);
            let mut off = data;
            while off < hole {
                let want = (hole - off).min(buf.len() as u64) as usize;
                let n = rustix::io::pread(&src, &mut buf[..want], off)
                    .with_context(|| format!("reading {}", host.display()))?;
                if n == 0 {
                    break;
                }
                f.write_at(off, &buf[..n])
                    .with_context(|| format!("writing {}", show(dest)))?;
                off += n as u64;
                self.counts.bytes += n as u64;
            }
            at = hole;
        }
        f.set_len(size)
            .with_context(|| format!("sizing {}", show(dest)))?;
        Ok(())
    }
}

/// Removes a daxfs tree (the temporary tree of a failed import).
pub fn remove_tree(fs: &Fs, path: &[u8]) -> daxfs::Result<()> {
    for e in fs.readdir(path)? {
        let p = join(path, &e.name);
        if e.kind == FileKind::Dir {
            remove_tree(fs, &p)?;
        } else {
            fs.unlink(&p)?;
        }
    }
    fs.rmdir(path)
}

/// Fails unless `host` is a host directory, naming the problem.
pub fn check_host_dir(host: &Path) -> Result<()> {
    match std::fs::metadata(host) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => bail!("{}: not a directory (ENOTDIR)", host.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("{}: no such host directory (ENOENT)", host.display())
        }
        Err(e) => Err(e).with_context(|| format!("{}", host.display())),
    }
}

/// Imports host directory `host` as the new daxfs directory `dest` (which
/// must not exist). Nothing is left at `dest` or beside it on failure.
pub fn import(fs: &Fs, host: &Path, dest: &str) -> Result<Counts> {
    check_host_dir(host)?;
    let dest = dest.trim_end_matches('/');
    if dest.is_empty() {
        bail!("DEST is the root directory: import into a new directory (or use mkfs --from)");
    }
    match fs.lstat(dest) {
        Ok(_) => bail!("{dest}: already exists (EEXIST): import makes a new directory"),
        Err(e) if e.errno_name() == "ENOENT" => {}
        Err(e) => return Err(e).with_context(|| dest.to_string()),
    }
    let (parent, name) = dest.rsplit_once('/').unwrap_or(("", dest));
    let parent = if parent.is_empty() { "/" } else { parent };
    let tmp = join(
        parent.as_bytes(),
        format!(".{name}.importing-{}", std::process::id()).as_bytes(),
    );
    fs.mkdir(&tmp, 0o700)
        .with_context(|| format!("mkdir {}", show(&tmp)))?;
    let mut im = Importer {
        fs,
        links: HashMap::new(),
        counts: Counts::default(),
        progress: std::io::stderr()
            .is_terminal()
            .then(std::time::Instant::now),
    };
    let r = im
        .dir(host, &tmp)
        .and_then(|()| Ok(fs.rename(tmp.as_slice(), dest)?));
    if im.progress.is_some() {
        // The last count stays on the terminal, however short the run.
        im.show_progress();
        eprintln!();
    }
    if let Err(e) = r {
        if let Err(e2) = remove_tree(fs, &tmp) {
            eprintln!(
                "daxfs: removing the partial import {} failed: {e2}",
                show(&tmp)
            );
        }
        return Err(e.context(format!("importing {} into {dest}", host.display())));
    }
    Ok(im.counts)
}

/// Imports the entries of `host` into the root directory of a fresh file
/// system (`mkfs --from`); the root takes `host`'s attributes. On failure
/// the root is left empty.
pub fn import_root(fs: &Fs, host: &Path) -> Result<Counts> {
    check_host_dir(host)?;
    let tmp = format!("/.daxfs-from.importing-{}", std::process::id());
    let c = import(fs, host, &tmp)?;
    let moved = (|| -> Result<()> {
        for e in fs.readdir(&tmp)? {
            let from = join(tmp.as_bytes(), &e.name);
            fs.rename(from.as_slice(), join(b"/", &e.name).as_slice())?;
        }
        let st = fs.lstat(&tmp)?;
        fs.rmdir(&tmp)?;
        fs.chmod("/", st.perm)?;
        fs.chown("/", Some(st.uid), Some(st.gid))?;
        fs.utimens("/", Some(st.atime), Some(st.mtime))?;
        Ok(())
    })();
    if let Err(e) = moved {
        for e in fs.readdir("/").unwrap_or_default() {
            let p = join(b"/", &e.name);
            let _ = if e.kind == FileKind::Dir {
                remove_tree(fs, &p)
            } else {
                fs.unlink(&p)
            };
        }
        return Err(e.context(format!("importing {}", host.display())));
    }
    Ok(c)
}

/// The one-line summary both commands print.
pub fn summary(c: &Counts) -> String {
    format!(
        "imported {} files ({} bytes), {} directories, {} symlinks, {} hard links{}{}{}",
        c.files,
        c.bytes,
        c.dirs,
        c.symlinks,
        c.hard_links,
        if c.special > 0 {
            format!(", {} special files", c.special)
        } else {
            String::new()
        },
        if c.xattrs > 0 {
            format!(", {} extended attributes", c.xattrs)
        } else {
            String::new()
        },
        if c.skipped > 0 {
            format!(", {} skipped (see the notes above)", c.skipped)
        } else {
            String::new()
        }
    )
}
