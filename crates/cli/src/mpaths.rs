//! Commands given paths on a daxfs mount instead of IMAGE.
//!
//! `daxfs io /mnt/pool/x -c "dedupe /mnt/pool/y 0 0 1m"`, `daxfs cp
//! --reflink /mnt/pool/a /mnt/pool/b`, `daxfs cat /mnt/pool/a`, `daxfs info
//! /mnt/pool`: the mount holding a path is found in /proc/self/mountinfo
//! (type `fuse.daxfs`, whose source is the image), the command line is
//! rewritten to name the image and paths inside it, and the command runs in
//! the mount's daemon over the control socket.
use anyhow::{Result, bail};
use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// One mount of /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// The directory of the file system's tree at the mount point.
    pub root: String,
    pub point: PathBuf,
    pub fstype: String,
    pub source: String,
}

/// Undoes mountinfo's octal escapes (`\040` a space, `\134` a backslash).
pub fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = b[i + 1..i + 4]
                .iter()
                .fold(0u32, |a, c| a * 8 + u32::from(c - b'0'));
            if let Ok(v) = u8::try_from(v) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo's text; lines it cannot read are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    let mut v = vec![];
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let Some(sep) = f.iter().position(|w| *w == "-") else {
            continue;
        };
        if sep < 6 || f.len() < sep + 3 {
            continue;
        }
        v.push(MountEntry {
            root: unescape(f[3]),
            point: PathBuf::from(unescape(f[4])),
            fstype: unescape(f[sep + 1]),
            source: unescape(f[sep + 2]),
        });
    }
    v
}

/// A path on a daxfs mount: the image and the path inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnMount {
    pub image: String,
    pub point: PathBuf,
    pub inner: String,
}

/// The host path `p` made absolute (from the working directory) and
/// canonical; a last component that does not exist yet is kept as given,
/// and so is a symbolic link unless `follow` (the shell's `rm`, `readlink`,
/// `rename` work on the link itself).
fn canonical(p: &Path, follow: bool) -> Result<PathBuf> {
    let abs = std::path::absolute(p)?;
    if (follow || abs.file_name().is_none())
        && let Ok(c) = abs.canonicalize()
    {
        return Ok(c);
    }
    match (abs.parent(), abs.file_name()) {
        (Some(dir), Some(name)) => Ok(dir
            .canonicalize()
            .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
            .join(name)),
        _ => bail!("{}: no such file or directory", p.display()),
    }
}

/// The daxfs mount holding the canonical path `c` among `mounts`: the
/// longest mount point that contains it (the last one mounted of equal
/// ones). `Err` names the mount of another type it is on.
fn find(
    mounts: &[MountEntry],
    c: &Path,
    is_daxfs: &dyn Fn(&MountEntry) -> bool,
) -> std::result::Result<OnMount, Option<MountEntry>> {
    let mut best: Option<&MountEntry> = None;
    for m in mounts {
        if c.starts_with(&m.point)
            && best.is_none_or(|b| m.point.as_os_str().len() >= b.point.as_os_str().len())
        {
            best = Some(m);
        }
    }
    let Some(m) = best else { return Err(None) };
    if !is_daxfs(m) {
        return Err(Some(m.clone()));
    }
    let rest = c.strip_prefix(&m.point).unwrap_or(Path::new(""));
    let mut inner = PathBuf::from(if m.root.is_empty() { "/" } else { &m.root });
    for comp in rest.components() {
        if let Component::Normal(n) = comp {
            inner.push(n);
        }
    }
    Ok(OnMount {
        image: m.source.clone(),
        point: m.point.clone(),
        inner: inner.to_string_lossy().into_owned(),
    })
}

/// Whether a mount is daxfs's: type `fuse.daxfs`, or a plain `fuse` (as a
/// mount made by mount(2) without the helper shows) whose source is an
/// image with a control socket.
fn is_daxfs(m: &MountEntry) -> bool {
    m.fstype == "fuse.daxfs"
        || (m.fstype == "fuse"
            && crate::control::socket_candidates(Path::new(&m.source))
                .is_ok_and(|v| v.iter().any(|p| p.exists())))
}

fn mounts() -> Vec<MountEntry> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| parse_mountinfo(&t))
        .unwrap_or_default()
}

/// The daxfs mount holding host path `p`, `None` if it is on none.
pub fn on_mount(p: &Path) -> Option<OnMount> {
    let c = canonical(p, true).ok()?;
    find(&mounts(), &c, &is_daxfs).ok()
}

/// Like [`on_mount`], an error naming the path when it is on no daxfs mount
/// (`what` says what was expected of it), or on another mount than `same`.
pub fn require(p: &Path, follow: bool, what: &str, same: Option<&OnMount>) -> Result<OnMount> {
    let c = canonical(p, follow)?;
    let m = match find(&mounts(), &c, &is_daxfs) {
        Ok(m) => m,
        Err(other) => {
            let on = match other {
                Some(m) => format!(
                    " (it is on the {} mount at {})",
                    m.fstype,
                    m.point.display()
                ),
                None => String::new(),
            };
            bail!("{} is not on a daxfs mount{on}; {what}", p.display())
        }
    };
    if let Some(s) = same
        && (s.image != m.image || s.point != m.point)
    {
        bail!(
            "{} is on the daxfs mount at {}, not on the one at {}; {what}",
            p.display(),
            m.point.display(),
            s.point.display()
        );
    }
    Ok(m)
}

/// Quotes a word for the io shell's word splitter.
fn quote(w: &str) -> String {
    if !w.is_empty() && !w.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"') {
        return w.to_string();
    }
    if w.contains('\'') {
        format!("\"{w}\"")
    } else {
        format!("'{w}'")
    }
}

/// The io shell's commands that take paths: their flags (as getopt(3):
/// a letter followed by ':' takes a value), and which positional words are
/// paths (`None`: every one).
fn shell_paths(cmd: &str) -> Option<(&'static str, Option<&'static [usize]>)> {
    Some(match cmd {
        "open" => ("crtax", None),
        "stat" | "mkdir" | "rmdir" | "readlink" => ("", None),
        "ls" => ("lR", None),
        "rm" => ("rf", None),
        "du" => ("s", None),
        "touch" => ("amd:", None),
        "rename" | "mv" | "link" => ("", None),
        "symlink" | "chmod" | "chown" => ("", Some(&[1])),
        "mknod" => ("m:", Some(&[0])),
        "reflink" | "dedupe" | "copy_range" => ("", Some(&[0])),
        "setfattr" => ("crh", Some(&[0])),
        "getfattr" | "rmfattr" => ("h", Some(&[0])),
        _ => return None,
    })
}

/// One io shell line with its host path words (on the mount `m`) made
/// paths inside the image.
pub fn shell_line(line: &str, m: &OnMount) -> Result<String> {
    let words = crate::args::split_words(line)?;
    let Some((cmd, rest)) = words.split_first() else {
        return Ok(line.to_string());
    };
    let Some((spec, which)) = shell_paths(cmd) else {
        return Ok(line.to_string());
    };
    let what = format!(
        "`{cmd}` takes paths on the daxfs mount at {} when io is given a path on it",
        m.point.display()
    );
    let mut out = vec![quote(cmd)];
    let mut pos = 0usize;
    let mut i = 0;
    while i < rest.len() {
        let w = &rest[i];
        let flag =
            w.len() >= 2 && w.starts_with('-') && !w[1..].starts_with(|c: char| c.is_ascii_digit());
        if flag {
            out.push(quote(w));
            // A flag that takes a value: the next word is the value.
            if w[1..].chars().any(|c| spec.contains(&format!("{c}:"))) {
                if let Some(v) = rest.get(i + 1) {
                    out.push(quote(v));
                }
                i += 1;
            }
        } else {
            let is_path = which.is_none_or(|ix| ix.contains(&pos));
            if is_path {
                let on = require(Path::new(w), false, &what, Some(m))?;
                out.push(quote(&on.inner));
            } else {
                out.push(quote(w));
            }
            pos += 1;
        }
        i += 1;
    }
    Ok(out.join(" "))
}

/// A command line rewritten to name the image: the new argv, the image,
/// and what standard input to send (for io without -c).
pub struct Rewritten {
    pub argv: Vec<String>,
    pub image: PathBuf,
    pub point: PathBuf,
    pub stdin: Option<Vec<u8>>,
    /// The command reads standard input as it comes (`put`).
    pub stream_stdin: bool,
}

/// The words of argv: the index of the command's name, and the positional
/// words after it (index into argv); `value_flags` take the next word.
fn positionals(argv: &[String], from: usize, value_short: &str) -> Vec<usize> {
    let mut v = vec![];
    let mut i = from;
    let mut rest_positional = false;
    while i < argv.len() {
        let w = &argv[i];
        if rest_positional || w == "-" || !w.starts_with('-') {
            v.push(i);
        } else if w == "--" {
            rest_positional = true;
        } else if !w.starts_with("--") {
            // A cluster of short flags; one taking a value ends it.
            let cs: Vec<char> = w[1..].chars().collect();
            if let Some(k) = cs.iter().position(|c| value_short.contains(*c))
                && k == cs.len() - 1
            {
                i += 1;
            }
        }
        i += 1;
    }
    v
}

/// When argv (this process's) gives a path on a daxfs mount where the
/// command takes IMAGE, the command line that names the image instead.
/// `Ok(None)`: the command line names an image (or nothing to rewrite).
pub fn rewrite(argv: &[String]) -> Result<Option<Rewritten>> {
    // The command's name: the first word not a global flag.
    let Some(ci) = argv
        .iter()
        .enumerate()
        .skip(1)
        .find(|(_, a)| !a.starts_with('-'))
        .map(|(i, _)| i)
    else {
        return Ok(None);
    };
    let cmd = argv[ci].as_str();
    let value_short = if cmd == "io" { "c" } else { "" };
    let pos = positionals(argv, ci + 1, value_short);
    let arg = |k: usize| Path::new(&argv[pos[k]]);
    let mut out = argv.to_vec();
    let mut stdin = None;
    let m = match cmd {
        // Counted: a path on the mount stands for IMAGE and the path in it.
        "cp" | "cat" | "put" => {
            let (full, usage) = match cmd {
                "cp" => (
                    3,
                    "cp [--reflink] SRC DST given two paths takes both on one daxfs mount (or give IMAGE SRC DST)",
                ),
                "cat" => (
                    2,
                    "cat PATH given one path takes a file on a daxfs mount (or give IMAGE PATH)",
                ),
                _ => (
                    2,
                    "put PATH given one path takes a file on a daxfs mount (or give IMAGE PATH)",
                ),
            };
            if pos.len() != full - 1 {
                return Ok(None);
            }
            let first = require(arg(0), true, usage, None)?;
            let mut inner = vec![first.inner.clone()];
            for k in 1..pos.len() {
                inner.push(require(arg(k), true, usage, Some(&first))?.inner);
            }
            // IMAGE and the paths inside it in the place of the paths.
            out = vec![];
            for (i, w) in argv.iter().enumerate() {
                if i == pos[0] {
                    out.push(first.image.clone());
                    out.extend(inner.iter().cloned());
                } else if !pos.contains(&i) {
                    out.push(w.clone());
                }
            }
            first
        }
        "io" => {
            let Some(&p0) = pos.first() else {
                return Ok(None);
            };
            let Some(m) = on_mount(Path::new(&argv[p0])) else {
                return Ok(None);
            };
            out[p0] = m.image.clone();
            // Each -c's paths, inside the image.
            let mut i = ci + 1;
            let mut has_c = false;
            let mut read_only = false;
            while i < out.len() {
                let w = out[i].clone();
                if i != p0 && w.len() >= 2 && w.starts_with('-') && !w.starts_with("--") {
                    for (k, c) in w.char_indices().skip(1) {
                        if c == 'r' {
                            read_only = true;
                        }
                        if c == 'c' {
                            has_c = true;
                            if k + 1 < w.len() {
                                let line = shell_line(&w[k + 1..], &m)?;
                                out[i] = format!("{}{line}", &w[..=k]);
                            } else if i + 1 < out.len() {
                                out[i + 1] = shell_line(&out[i + 1], &m)?;
                                i += 1;
                            }
                            break;
                        }
                    }
                }
                i += 1;
            }
            // A file given: the shell starts with it open.
            let is_dir = std::fs::metadata(&argv[p0]).is_ok_and(|md| md.is_dir());
            let open = (!is_dir).then(|| {
                let flags = if read_only { "open -r " } else { "open " };
                format!("{flags}{}", quote(&m.inner))
            });
            if has_c {
                if let Some(o) = open {
                    out.splice(p0 + 1..p0 + 1, ["-c".to_string(), o]);
                }
            } else {
                // Without -c the lines come from standard input: read them
                // all, and send them with their paths inside the image.
                let mut text = String::new();
                std::io::stdin().read_to_string(&mut text)?;
                let mut s = String::new();
                if let Some(o) = open {
                    s.push_str(&o);
                    s.push('\n');
                }
                for l in text.lines() {
                    let body = l.trim_start();
                    if body.starts_with('#') {
                        s.push_str(l);
                    } else {
                        s.push_str(&shell_line(l, &m)?);
                    }
                    s.push('\n');
                }
                stdin = Some(s.into_bytes());
            }
            m
        }
        // IMAGE alone: a path on a mount names its image.
        "info" | "fsck" | "fsmap" | "errors" | "badblocks" | "clear-error" | "scrub" => {
            let Some(&p0) = pos.first() else {
                return Ok(None);
            };
            let Some(m) = on_mount(Path::new(&argv[p0])) else {
                return Ok(None);
            };
            out[p0] = m.image.clone();
            m
        }
        _ => return Ok(None),
    };
    Ok(Some(Rewritten {
        argv: out,
        image: PathBuf::from(&m.image),
        point: m.point,
        stdin,
        stream_stdin: cmd == "put",
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:50 / /mnt/pool rw,nosuid,nodev shared:20 - fuse.daxfs /pmem/pool.img rw,user_id=0
41 40 0:51 / /mnt/pool/tmp rw - tmpfs tmpfs rw
42 22 0:52 / /mnt/my\\040pool rw - fuse.daxfs /pmem/my\\040pool.img rw
43 22 0:53 /sub /mnt/bind rw - fuse.daxfs /pmem/pool.img rw
";

    #[test]
    fn mountinfo_unescaped_and_the_longest_wins() {
        let m = parse_mountinfo(INFO);
        let daxfs = |m: &MountEntry| m.fstype == "fuse.daxfs";
        assert_eq!(m.len(), 5);
        assert_eq!(m[3].point, Path::new("/mnt/my pool"));
        assert_eq!(m[3].source, "/pmem/my pool.img");
        assert_eq!(unescape("a\\134b\\011"), "a\\b\t");
        let f = find(&m, Path::new("/mnt/pool/a/b"), &daxfs).unwrap();
        assert_eq!(
            (f.image.as_str(), f.inner.as_str()),
            ("/pmem/pool.img", "/a/b")
        );
        assert_eq!(find(&m, Path::new("/mnt/pool"), &daxfs).unwrap().inner, "/");
        assert_eq!(
            find(&m, Path::new("/mnt/my pool/x"), &daxfs).unwrap().inner,
            "/x"
        );
        assert_eq!(
            find(&m, Path::new("/mnt/bind/x"), &daxfs).unwrap().inner,
            "/sub/x"
        );
        // Under a tmpfs mounted inside the daxfs mount: not daxfs.
        let e = find(&m, Path::new("/mnt/pool/tmp/x"), &daxfs).unwrap_err();
        assert_eq!(e.unwrap().fstype, "tmpfs");
        // Not a prefix by bytes: /mnt/poolx is not under /mnt/pool.
        assert_eq!(
            find(&m, Path::new("/mnt/poolx"), &daxfs)
                .unwrap_err()
                .unwrap()
                .fstype,
            "ext4"
        );
    }

    #[test]
    fn shell_words_quoted_back() {
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), "\"it's\"");
        assert_eq!(quote("/x"), "/x");
    }
}
