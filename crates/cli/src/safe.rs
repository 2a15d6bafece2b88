//! Guards of the commands that write: a target that holds something else
//! (`mkfs`, `demo`), a copy onto itself (`cp`), and files replaced whole
//! (`put`, `cp`), which leave the destination as it was when they fail.
use anyhow::{Result, bail};
use daxfs::{File, Fs, FsError};
use std::io::Read;
use std::path::Path;

/// How far into a target `mkfs` and `demo` look for data before they
/// overwrite it without `--force` (as mkfs.xfs does).
pub const PROBE_BYTES: usize = 64 << 10;

/// What a probe found at the start of a device or image.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    /// Nothing: only zero bytes (or an empty file).
    Nothing,
    /// A daxfs file system, with its label.
    Daxfs(String),
    /// Another file system's (or swap's) signature, by name.
    Signature(&'static str),
    /// A non-zero byte at this offset, and no signature.
    Data(u64),
}

fn le16(b: &[u8], at: usize) -> u16 {
    b.get(at..at + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .unwrap_or(0)
}

fn le32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .unwrap_or(0)
}

/// Names what `head` (the first bytes of a target, up to [`PROBE_BYTES`])
/// and `btrfs` (the 8 bytes at 0x10040, where btrfs keeps its magic) hold.
pub fn identify(head: &[u8], btrfs: &[u8]) -> Found {
    if head.get(0..4) == Some(b"DXMB") && head.get(64..68) == Some(b"DAXF") {
        let label = head.get(304..336).unwrap_or(&[]);
        let end = label.iter().position(|&c| c == 0).unwrap_or(label.len());
        return Found::Daxfs(String::from_utf8_lossy(&label[..end]).into_owned());
    }
    if head.get(0..4) == Some(b"XFSB") {
        return Found::Signature("xfs");
    }
    if btrfs == b"_BHRfS_M" {
        return Found::Signature("btrfs");
    }
    // The ext2/3/4 superblock is at byte 1024; its magic at +56.
    if le16(head, 1024 + 56) == 0xef53 {
        let compat = le32(head, 1024 + 92);
        let incompat = le32(head, 1024 + 96);
        // Extents or flexible block groups make ext4; a journal ext3.
        return Found::Signature(if incompat & (0x40 | 0x200) != 0 {
            "ext4"
        } else if compat & 0x4 != 0 {
            "ext3"
        } else {
            "ext2"
        });
    }
    // Swap keeps its signature in the last 10 bytes of its first page.
    for page in [4096usize, 8192, 16384, 65536] {
        let sig = head.get(page - 10..page);
        if sig == Some(b"SWAPSPACE2") || sig == Some(b"SWAP-SPACE") {
            return Found::Signature("swap");
        }
    }
    match head.iter().position(|&b| b != 0) {
        Some(i) => Found::Data(i as u64),
        None => Found::Nothing,
    }
}

/// Reads the start of `path` and names what it holds.
pub fn probe(path: &Path) -> Result<Found> {
    let f = std::fs::File::open(path)
        .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), crate::errors::io_text(&e)))?;
    let mut head = Vec::with_capacity(PROBE_BYTES);
    (&f).take(PROBE_BYTES as u64)
        .read_to_end(&mut head)
        .map_err(|e| {
            anyhow::anyhow!("reading {}: {}", path.display(), crate::errors::io_text(&e))
        })?;
    let mut btrfs = [0u8; 8];
    let got = rustix::io::pread(&f, &mut btrfs, 0x10040).unwrap_or(0);
    Ok(identify(&head, &btrfs[..got]))
}

/// Refuses (without `force`) a target that holds a file system, swap or
/// any data in its first 64 KiB, naming what it found.
pub fn refuse_to_overwrite(path: &Path, found: &Found) -> Result<()> {
    let p = path.display();
    match found {
        Found::Nothing => Ok(()),
        Found::Daxfs(l) if l.is_empty() => {
            bail!("{p} already holds a daxfs file system: use --force to overwrite it")
        }
        Found::Daxfs(l) => bail!(
            "{p} already holds a daxfs file system (label {l:?}): use --force to overwrite it"
        ),
        Found::Signature(s) => {
            bail!(
                "{p} already holds {} {s} signature: use --force to overwrite it",
                article(s)
            )
        }
        Found::Data(at) => bail!(
            "{p} holds data (a non-zero byte at offset {at:#x} of its first 64 KiB): use --force to overwrite it"
        ),
    }
}

fn article(s: &str) -> &'static str {
    if s.starts_with(['a', 'e', 'i', 'o', 'u', 'x']) {
        "an"
    } else {
        "a"
    }
}

/// Refuses a copy whose source and destination are the same inode, as
/// coreutils' cp does (it would empty the file): EINVAL.
pub fn refuse_same_file(fs: &Fs, src: &File, src_path: &str, dst_path: &str) -> Result<()> {
    match fs.stat(dst_path) {
        Ok(st) if st.ino == src.ino() => {
            Err(FsError::Invalid(format!("'{src_path}' and '{dst_path}' are the same file")).into())
        }
        _ => Ok(()),
    }
}

/// The prefix of the hidden name a finished replacement holds for the
/// moment between its link into the directory and its rename over the file
/// it replaces.
pub const TEMP_PREFIX: &str = ".daxfs-put.";

/// Writes a whole new file at `dst` with `fill`, so that a failure leaves
/// `dst` as it was: `fill` writes into an unnamed file (O_TMPFILE) in
/// `dst`'s directory, which gets its name only once complete and synced:
/// linked straight to `dst` when there was none, otherwise linked under a
/// hidden name (`.daxfs-put.PID.N`) and renamed over `dst`. A failure or
/// a crash before that leaves no name; the unnamed file's blocks come back
/// at its close, or from the orphan list at the next mount. The new file
/// takes the permissions and owner of the one it replaces; other hard links
/// to that one keep its old content (as with `install` or `rsync`).
pub fn replace_file(fs: &Fs, dst: &str, fill: impl FnOnce(&File) -> Result<()>) -> Result<()> {
    // The destination must be something a file can replace: a directory
    // (or a path through a missing directory) fails here, before any file
    // is made.
    let old = match fs.stat(dst) {
        Ok(st) if st.kind == daxfs::FileKind::Dir => {
            return Err(FsError::IsDir(dst.to_string()).into());
        }
        Ok(st) => Some(st),
        Err(FsError::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let dir_end = dst.rfind('/').map(|i| i + 1).unwrap_or(0);
    let (dir, name) = dst.split_at(dir_end);
    if name.is_empty() || name == "." || name == ".." {
        return Err(FsError::IsDir(dst.to_string()).into());
    }
    let dir_path = if dir.is_empty() { "/" } else { dir };
    let d = fs.stat(dir_path)?;
    if d.kind != daxfs::FileKind::Dir {
        return Err(FsError::NotDir(dir_path.to_string()).into());
    }
    let f = fs.tmpfile_at(d.ino, old.as_ref().map_or(0o644, |st| st.perm))?;
    crate::errors::name(f.ino(), dst);
    // The new file keeps the owner of the one it replaces.
    if let Some(st) = &old {
        let a = daxfs::SetAttr {
            uid: Some(st.uid),
            gid: Some(st.gid),
            ..Default::default()
        };
        fs.setattr(f.ino(), &a)?;
    }
    fill(&f)?;
    f.fsync()?;
    if old.is_none() {
        match fs.link_at(f.ino(), d.ino, name) {
            Ok(_) => return Ok(()),
            // Made meanwhile by someone else: replaced as any old file.
            Err(FsError::Exists(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let mut n = 0u32;
    let tmp = loop {
        let tmp = format!("{TEMP_PREFIX}{}.{n}", std::process::id());
        match fs.link_at(f.ino(), d.ino, &tmp) {
            Ok(_) => break tmp,
            Err(FsError::Exists(_)) if n < 1000 => n += 1,
            Err(e) => return Err(e.into()),
        }
    };
    let r = fs.rename_at(d.ino, &tmp, d.ino, name, daxfs::RenameFlags::default());
    if r.is_err() {
        let _ = fs.unlink_at(d.ino, &tmp);
    }
    Ok(r?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_signatures() {
        let mut b = vec![0u8; 8192];
        assert_eq!(identify(&b, &[]), Found::Nothing);
        b[1024 + 56..1024 + 58].copy_from_slice(&0xef53u16.to_le_bytes());
        assert_eq!(identify(&b, &[]), Found::Signature("ext2"));
        b[1024 + 92] = 0x4;
        assert_eq!(identify(&b, &[]), Found::Signature("ext3"));
        b[1024 + 96] = 0x40;
        assert_eq!(identify(&b, &[]), Found::Signature("ext4"));
        let mut b = vec![0u8; 8192];
        b[4086..4096].copy_from_slice(b"SWAPSPACE2");
        assert_eq!(identify(&b, &[]), Found::Signature("swap"));
        assert_eq!(identify(&[0u8; 16], b"_BHRfS_M"), Found::Signature("btrfs"));
        assert_eq!(identify(b"XFSB", &[]), Found::Signature("xfs"));
        let mut b = vec![0u8; 400];
        b[..4].copy_from_slice(b"DXMB");
        b[64..68].copy_from_slice(b"DAXF");
        b[304..308].copy_from_slice(b"demo");
        assert_eq!(identify(&b, &[]), Found::Daxfs("demo".into()));
        let mut b = vec![0u8; 100];
        b[77] = 1;
        assert_eq!(identify(&b, &[]), Found::Data(77));
        // Short or odd input never panics.
        assert_eq!(identify(&[], &[1, 2]), Found::Nothing);
    }
}
