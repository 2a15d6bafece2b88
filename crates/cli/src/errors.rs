//! How the command reports an error: each thing said once, and the errno
//! name at the end as the io shell gives it (`... (ENOENT)`).
use daxfs::FsError;
use daxfs_device::DeviceError;

/// The symbolic name of an errno value (the file system's names, and the
/// system's that opening an image can give).
pub fn errno_name(e: i32) -> Option<&'static str> {
    let n = daxfs::error::errno_name(e);
    if n != "E?" {
        return Some(n);
    }
    Some(match e {
        libc::EROFS => "EROFS",
        libc::ENODEV => "ENODEV",
        libc::ENXIO => "ENXIO",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::ETXTBSY => "ETXTBSY",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::ENOTTY => "ENOTTY",
        libc::ESPIPE => "ESPIPE",
        libc::EDQUOT => "EDQUOT",
        _ => return None,
    })
}

/// The errno an error (or the first of its causes that has one) stands for.
pub fn errno(e: &anyhow::Error) -> Option<i32> {
    for c in e.chain() {
        if let Some(f) = c.downcast_ref::<FsError>() {
            return Some(f.errno());
        }
        if let Some(d) = c.downcast_ref::<DeviceError>() {
            return match d {
                DeviceError::Os { source, .. } => source.raw_os_error(),
                DeviceError::Locked(_) => Some(libc::EBUSY),
                DeviceError::OutOfRange { .. } | DeviceError::Media { .. } => Some(libc::EIO),
                DeviceError::InvalidSize { .. } => Some(libc::EINVAL),
                _ => None,
            };
        }
        if let Some(i) = c.downcast_ref::<std::io::Error>() {
            return i.raw_os_error();
        }
        if let Some(r) = c.downcast_ref::<rustix::io::Errno>() {
            return Some(r.raw_os_error());
        }
    }
    None
}

/// The system's text of an I/O error without Rust's `(os error N)`, and
/// its errno name: `No such file or directory (ENOENT)`.
pub fn io_text(e: &std::io::Error) -> String {
    let t = strip_all(&e.to_string());
    match e.raw_os_error().and_then(errno_name) {
        Some(n) => format!("{t} ({n})"),
        None => t,
    }
}

std::thread_local! {
    /// The paths of the inodes this command opened by path, so that an
    /// error the library words by inode number (`inode 5: ...`) names the
    /// path the user gave.
    static NAMES: std::cell::RefCell<Vec<(u64, String)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Tells the error reports that inode `ino` is `path`.
pub fn name(ino: u64, path: &str) {
    NAMES.with(|n| {
        let mut n = n.borrow_mut();
        n.retain(|(i, _)| *i != ino);
        n.push((ino, path.to_string()));
    });
}

/// `text` with each `inode N` of an inode named by [`name`] replaced by its
/// path (`inode 50` is not `inode 5`).
pub fn name_inodes(text: &str) -> String {
    NAMES.with(|n| {
        let mut t = text.to_string();
        for (ino, path) in n.borrow().iter() {
            t = replace_inode(&t, *ino, path);
        }
        t
    })
}

fn replace_inode(text: &str, ino: u64, path: &str) -> String {
    let pat = format!("inode {ino}");
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(&pat) {
        let after = &rest[i + pat.len()..];
        out.push_str(&rest[..i]);
        if after.starts_with(|c: char| c.is_ascii_digit()) {
            out.push_str(&pat);
        } else {
            out.push_str(path);
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// One line for an error and its causes: a cause that repeats what is
/// already said is left out, and the errno name ends the line.
pub fn report(e: &anyhow::Error) -> String {
    let parts: Vec<String> = e
        .chain()
        .map(|c| name_inodes(&strip_all(&c.to_string())))
        .collect();
    let mut kept: Vec<&str> = vec![];
    for (i, p) in parts.iter().enumerate() {
        if p.is_empty() {
            continue;
        }
        // The next cause says this and more: keep only that one.
        if parts.get(i + 1).is_some_and(|n| n.contains(p.as_str())) {
            continue;
        }
        // Already said by what is kept.
        if kept.iter().any(|k| k.contains(p.as_str())) {
            continue;
        }
        kept.push(p);
    }
    let mut line = kept.join(": ");
    // Who holds a device that is already open.
    let locked = e
        .chain()
        .find_map(|c| match c.downcast_ref::<DeviceError>() {
            Some(DeviceError::Locked(p)) => Some(p.clone()),
            _ => None,
        });
    if let Some(pid) = locked.and_then(|p| lock_holder(std::path::Path::new(&p))) {
        let said = "already open by another daxfs instance";
        line = line.replacen(said, &format!("{said} (process {pid})"), 1);
    }
    if let Some(n) = errno(e).and_then(errno_name) {
        let tag = format!("({n})");
        if !line.ends_with(&tag) {
            line.push(' ');
            line.push_str(&tag);
        }
    }
    line
}

/// The process holding the `flock` on `path`, from /proc/locks (where
/// Linux lists each lock with its holder's PID and the file's device and
/// inode); `None` when it cannot be told.
pub fn lock_holder(path: &std::path::Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(path).ok()?;
    let id = lock_id(md.dev(), md.ino());
    holder_in(&std::fs::read_to_string("/proc/locks").ok()?, &id)
}

/// The `MAJOR:MINOR:INODE` form /proc/locks names a file by (major and
/// minor in hexadecimal, as glibc splits a `dev_t`).
fn lock_id(dev: u64, ino: u64) -> String {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    format!("{major:02x}:{minor:02x}:{ino}")
}

/// The PID of the FLOCK line for `id` in the text of /proc/locks
/// (`1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF`); lines of waiters
/// (`1: -> FLOCK ...`) do not count.
fn holder_in(locks: &str, id: &str) -> Option<u32> {
    locks.lines().find_map(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        if w.get(1) != Some(&"FLOCK") || w.get(5) != Some(&id) {
            return None;
        }
        w.get(4)?.parse().ok()
    })
}

/// Removes every ` (os error N)` from a message.
fn strip_all(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(" (os error ") {
        let after = &rest[i + " (os error ".len()..];
        let digits = after.bytes().take_while(|b| b.is_ascii_digit()).count();
        if digits > 0 && after[digits..].starts_with(')') {
            out.push_str(&rest[..i]);
            rest = &after[digits + 1..];
        } else {
            out.push_str(&rest[..i + 1]);
            rest = &rest[i + 1..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn says_each_thing_once() {
        let io = std::io::Error::from_raw_os_error(libc::ENOENT);
        let d = DeviceError::Os {
            what: "opening /x.img".into(),
            source: io,
        };
        let e = Err::<(), _>(d).context("opening /x.img").unwrap_err();
        assert_eq!(
            report(&e),
            "opening /x.img: No such file or directory (ENOENT)"
        );
        let e = anyhow::Error::new(FsError::NotFound("/a".into()));
        assert_eq!(report(&e), "/a: no such file or directory (ENOENT)");
        assert_eq!(strip_all("x (os error 2): y (os error 13)"), "x: y");
        assert_eq!(
            replace_inode("inode 5: bad; inode 50; inode 5", 5, "/f"),
            "/f: bad; inode 50; /f"
        );
        assert_eq!(strip_all("odd (os error x)"), "odd (os error x)");
        let locks = "1: FLOCK  ADVISORY  WRITE 4321 00:2a:77 0 EOF\n\
                     1: -> FLOCK  ADVISORY  WRITE 99 00:2a:88 0 EOF\n\
                     2: POSIX  ADVISORY  WRITE 55 00:2a:88 0 EOF\n";
        assert_eq!(holder_in(locks, "00:2a:77"), Some(4321));
        assert_eq!(holder_in(locks, "00:2a:88"), None);
        assert_eq!(lock_id(0x2a, 77), "00:2a:77");
        assert_eq!(lock_id(0x801, 5), "08:01:5");
        let io = std::io::Error::from_raw_os_error(libc::EACCES);
        assert_eq!(io_text(&io), "Permission denied (EACCES)");
    }
}
