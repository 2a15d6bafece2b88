//! The namespace commands of the `daxfs io` shell: `ls`, `stat`, `rm -r`,
//! `chown`, `touch`, `df`, `du`; and the text forms they print (mode
//! strings, readable times).
use crate::io::{CmdError, Shell};
use daxfs::{FileKind, Stat};
use std::collections::HashSet;
use std::io::Write;

type CmdResult = Result<(), CmdError>;

fn usage(msg: &str) -> CmdError {
    CmdError {
        errno: "EINVAL",
        message: msg.to_string(),
    }
}

/// `path/name` without a doubled slash.
pub fn join(dir: &str, name: &str) -> String {
    format!("{}/{name}", dir.trim_end_matches('/'))
}

/// The mode as `ls -l` shows it: type letter and nine permission letters,
/// with setuid, setgid and sticky bits as `s`/`S` and `t`/`T`.
pub fn mode_string(kind: FileKind, perm: u32) -> String {
    let mut s = String::with_capacity(10);
    s.push(match kind {
        FileKind::Dir => 'd',
        FileKind::Symlink => 'l',
        FileKind::File => '-',
        FileKind::Fifo => 'p',
        FileKind::Socket => 's',
        FileKind::CharDev => 'c',
        FileKind::BlockDev => 'b',
    });
    let special = [(0o4000, 's'), (0o2000, 's'), (0o1000, 't')];
    for (i, (bit, letter)) in special.iter().enumerate() {
        let shift = 6 - 3 * i;
        let p = (perm >> shift) & 7;
        s.push(if p & 4 != 0 { 'r' } else { '-' });
        s.push(if p & 2 != 0 { 'w' } else { '-' });
        let x = p & 1 != 0;
        s.push(match (perm & bit != 0, x) {
            (true, true) => *letter,
            (true, false) => letter.to_ascii_uppercase(),
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    s
}

/// Days since 1970-01-01 as (year, month, day) in the proleptic Gregorian
/// calendar.
fn civil(days: i64) -> (i64, u32, u32) {
    // Eras of 400 years (146097 days) starting on 0000-03-01.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A time as `YYYY-MM-DD HH:MM:SS.NNNNNNNNN +0000` (UTC, as `stat` prints it).
pub fn time_text(t: (i64, u32)) -> String {
    let (y, mo, d) = civil(t.0.div_euclid(86_400));
    let s = t.0.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02} {:02}:{:02}:{:02}.{:09} +0000",
        s / 3600,
        s / 60 % 60,
        s % 60,
        t.1
    )
}

/// A time as `ls -l` shows it: `YYYY-MM-DD HH:MM` (UTC).
fn short_time(t: (i64, u32)) -> String {
    time_text(t)[..16].to_string()
}

fn now() -> (i64, u32) {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs() as i64, d.subsec_nanos())
}

fn has(flags: &[(char, Option<&str>)], c: char) -> bool {
    flags.iter().any(|f| f.0 == c)
}

impl<'a> Shell<'a> {
    /// `ls [-l] [-R] [PATH...]`: names sorted by bytes; `-l` adds mode,
    /// links, owner, group, size and mtime; `-R` lists subdirectories too.
    pub(crate) fn ls(&mut self, rest: &[String]) -> CmdResult {
        let (flags, pos) = crate::io::getopt(rest, "lR")?;
        let (long, recurse) = (has(&flags, 'l'), has(&flags, 'R'));
        let paths: Vec<&str> = if pos.is_empty() { vec!["/"] } else { pos };
        let header = paths.len() > 1 || recurse;
        let mut first = true;
        for p in paths {
            let st = self.fs.lstat(p)?;
            if st.kind != FileKind::Dir {
                self.ls_row(long, p, &st)?;
                continue;
            }
            self.ls_dir(p, long, recurse, header, &mut first)?;
        }
        Ok(())
    }

    fn ls_dir(
        &mut self,
        dir: &str,
        long: bool,
        recurse: bool,
        header: bool,
        first: &mut bool,
    ) -> CmdResult {
        let mut ents = self.fs.readdir(dir)?;
        ents.sort_by(|a, b| a.name.cmp(&b.name));
        if header {
            if !*first {
                writeln!(self.out).ok();
            }
            writeln!(self.out, "{dir}:").ok();
        }
        *first = false;
        let mut subdirs = vec![];
        for e in &ents {
            let name = e.name_lossy();
            let path = join(dir, &name);
            if long {
                let st = self.fs.lstat(&path)?;
                self.ls_row(true, &name, &st)?;
            } else {
                writeln!(self.out, "{name}").ok();
            }
            if recurse && e.kind == FileKind::Dir {
                subdirs.push(path);
            }
        }
        for s in subdirs {
            self.ls_dir(&s, long, recurse, header, first)?;
        }
        Ok(())
    }

    fn ls_row(&mut self, long: bool, name: &str, st: &Stat) -> CmdResult {
        if !long {
            writeln!(self.out, "{name}").ok();
            return Ok(());
        }
        writeln!(
            self.out,
            "{} {:>3} {:>5} {:>5} {:>12} {} {name}",
            mode_string(st.kind, st.perm),
            st.nlink,
            st.uid,
            st.gid,
            st.size,
            short_time(st.mtime)
        )
        .ok();
        Ok(())
    }

    /// `stat [PATH...]`: attributes of the open file, or of each PATH
    /// (headed by `PATH:` when there are several).
    pub(crate) fn stat(&mut self, rest: &[String]) -> CmdResult {
        let (_, pos) = crate::io::getopt(rest, "")?;
        if pos.is_empty() {
            let st = self.file()?.stat();
            self.stat_lines(&st);
            return Ok(());
        }
        let many = pos.len() > 1;
        for (i, p) in pos.iter().enumerate() {
            let st = self.fs.lstat(p)?;
            if many {
                if i > 0 {
                    writeln!(self.out).ok();
                }
                writeln!(self.out, "{p}:").ok();
            }
            self.stat_lines(&st);
        }
        Ok(())
    }

    fn stat_lines(&mut self, st: &Stat) {
        let kind = match st.kind {
            FileKind::File => "regular file",
            FileKind::Dir => "directory",
            FileKind::Symlink => "symbolic link",
            k => k.name(),
        };
        let o = &mut self.out;
        writeln!(o, "stat.ino = {}", st.ino).ok();
        writeln!(o, "stat.type = {kind}").ok();
        writeln!(o, "stat.size = {}", st.size).ok();
        writeln!(o, "stat.blocks = {}", st.blocks).ok();
        writeln!(o, "stat.nlink = {}", st.nlink).ok();
        writeln!(
            o,
            "stat.mode = 0{:o} ({})",
            st.perm,
            mode_string(st.kind, st.perm)
        )
        .ok();
        writeln!(o, "stat.uid = {}", st.uid).ok();
        writeln!(o, "stat.gid = {}", st.gid).ok();
        for (name, t) in [
            ("atime", st.atime),
            ("mtime", st.mtime),
            ("ctime", st.ctime),
            ("btime", st.btime),
        ] {
            writeln!(o, "stat.{name} = {} ({}.{:09})", time_text(t), t.0, t.1).ok();
        }
        writeln!(o, "stat.lost_bytes = {}", st.lost_bytes).ok();
        if matches!(st.kind, FileKind::CharDev | FileKind::BlockDev) {
            let (major, minor) = daxfs::decode_dev(st.rdev);
            writeln!(o, "stat.rdev = {major}:{minor}").ok();
        }
    }

    /// `mknod [-m MODE] PATH TYPE [MAJOR MINOR]`, as mknod(1): TYPE `p`
    /// (FIFO, no numbers), `s` (socket), `c`/`u` or `b` (character or block
    /// device, with its numbers).
    pub(crate) fn mknod(&mut self, rest: &[String]) -> CmdResult {
        use daxfs_format::records::mode as t;
        const USE: &str = "mknod [-m MODE] PATH TYPE [MAJOR MINOR]";
        let (flags, pos) = crate::io::getopt(rest, "m:")?;
        let mut perm = 0o644;
        for (_, v) in flags {
            let v = v.unwrap_or_default();
            perm = u32::from_str_radix(v, 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .ok_or_else(|| usage(&format!("MODE {v:?} is not octal permission bits")))?;
        }
        let number = |s: &str| {
            s.parse::<u32>()
                .map_err(|_| usage(&format!("{s:?} is not a device number")))
        };
        let (path, kind, rdev) = match pos.as_slice() {
            [p, "p"] => (*p, t::S_IFIFO, 0),
            [p, "s"] => (*p, t::S_IFSOCK, 0),
            [p, k @ ("c" | "u" | "b"), major, minor] => {
                let rdev = daxfs::encode_dev(number(major)?, number(minor)?)?;
                let kind = if *k == "b" { t::S_IFBLK } else { t::S_IFCHR };
                (*p, kind, rdev)
            }
            [_, "p" | "s", ..] => {
                return Err(usage("a FIFO or socket takes no device numbers"));
            }
            [_, "c" | "u" | "b", ..] => {
                return Err(usage("a device needs MAJOR and MINOR"));
            }
            [_, k, ..] => {
                return Err(usage(&format!(
                    "mknod: TYPE {k:?} is none of p, s, c, u, b (usage: {USE})"
                )));
            }
            _ => return Err(usage(&format!("usage: {USE}"))),
        };
        Ok(self.fs.mknod(path, kind | perm, rdev)?)
    }

    /// `rm [-r] [-f] PATH...`: removes files; `-r` removes directories with
    /// everything under them; `-f` ignores missing paths.
    pub(crate) fn rm(&mut self, rest: &[String]) -> CmdResult {
        let (flags, pos) = crate::io::getopt(rest, "rRf")?;
        if pos.is_empty() {
            return Err(usage("usage: rm [-r] [-f] PATH..."));
        }
        let recurse = has(&flags, 'r') || has(&flags, 'R');
        let force = has(&flags, 'f');
        for p in pos {
            let st = match self.fs.lstat(p) {
                Err(e) if force && e.errno_name() == "ENOENT" => continue,
                r => r?,
            };
            if st.kind == FileKind::Dir && recurse {
                self.remove_tree(p)?;
            } else {
                self.fs.unlink(p)?;
            }
        }
        Ok(())
    }

    fn remove_tree(&mut self, dir: &str) -> CmdResult {
        for e in self.fs.readdir(dir)? {
            let path = join(dir, &e.name_lossy());
            if e.kind == FileKind::Dir {
                self.remove_tree(&path)?;
            } else {
                self.fs.unlink(&path)?;
            }
        }
        Ok(self.fs.rmdir(dir)?)
    }

    /// `chown [-h] UID[:GID] PATH` or `chown :GID PATH` (numbers).
    pub(crate) fn chown(&mut self, rest: &[String]) -> CmdResult {
        let (_, pos) = crate::io::getopt(rest, "h")?;
        let [owner, p] = <[&str; 2]>::try_from(pos.as_slice())
            .map_err(|_| usage("usage: chown UID[:GID] PATH"))?;
        let (u, g) = match owner.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (owner, None),
        };
        let id = |s: &str| -> Result<Option<u32>, CmdError> {
            if s.is_empty() {
                return Ok(None);
            }
            s.parse::<u32>()
                .map(Some)
                .map_err(|_| usage(&format!("chown: {s:?} is not a numeric user or group id")))
        };
        let (uid, gid) = (id(u)?, g.map(id).transpose()?.flatten());
        if uid.is_none() && gid.is_none() {
            return Err(usage("usage: chown UID[:GID] PATH"));
        }
        Ok(self.fs.chown(p, uid, gid)?)
    }

    /// `touch [-a] [-m] [-d SECONDS[.NANOS]] PATH...`: creates missing
    /// files and sets access and modification times (now by default).
    pub(crate) fn touch(&mut self, rest: &[String]) -> CmdResult {
        let (flags, pos) = crate::io::getopt(rest, "amd:")?;
        if pos.is_empty() {
            return Err(usage("usage: touch [-a] [-m] [-d SECONDS[.NANOS]] PATH..."));
        }
        let t = match flags.iter().find(|f| f.0 == 'd') {
            Some((_, Some(v))) => parse_time(v)?,
            _ => now(),
        };
        let (a, m) = (has(&flags, 'a'), has(&flags, 'm'));
        let (a, m) = if !a && !m { (true, true) } else { (a, m) };
        for p in pos {
            match self.fs.lstat(p) {
                Err(e) if e.errno_name() == "ENOENT" => {
                    drop(self.fs.open(p, &daxfs::OpenOptions::create())?);
                }
                r => {
                    r?;
                }
            }
            self.fs.utimens(p, a.then_some(t), m.then_some(t))?;
        }
        Ok(())
    }

    /// `df` / `statfs`: the device's size, use and inodes.
    pub(crate) fn df(&mut self, rest: &[String]) -> CmdResult {
        let (_, pos) = crate::io::getopt(rest, "")?;
        if !pos.is_empty() {
            return Err(usage("usage: df"));
        }
        let i = self.fs.info();
        let bs = i.block_size;
        let o = &mut self.out;
        writeln!(o, "statfs.f_bsize = {bs}").ok();
        writeln!(o, "statfs.f_blocks = {}", i.total_blocks).ok();
        writeln!(o, "statfs.f_bfree = {}", i.free_blocks).ok();
        writeln!(o, "statfs.f_bavail = {}", i.available_blocks).ok();
        writeln!(o, "statfs.f_files = {}", i.inodes).ok();
        writeln!(o, "statfs.f_namelen = 255").ok();
        let used = i.total_blocks.saturating_sub(i.free_blocks);
        writeln!(
            o,
            "{} bytes, {} used, {} available ({:.1}% used)",
            i.total_blocks * bs,
            used * bs,
            i.available_blocks * bs,
            100.0 * used as f64 / i.total_blocks.max(1) as f64
        )
        .ok();
        Ok(())
    }

    /// `du [-s] [PATH...]`: bytes of blocks held under each path (a file
    /// with several links counted once), as `du -B1`.
    pub(crate) fn du(&mut self, rest: &[String]) -> CmdResult {
        let (flags, pos) = crate::io::getopt(rest, "s")?;
        let summary = has(&flags, 's');
        let paths: Vec<&str> = if pos.is_empty() { vec!["/"] } else { pos };
        let mut seen = HashSet::new();
        for p in paths {
            self.du_at(p, summary, true, &mut seen)?;
        }
        Ok(())
    }

    fn du_at(
        &mut self,
        path: &str,
        summary: bool,
        top: bool,
        seen: &mut HashSet<u64>,
    ) -> Result<u64, CmdError> {
        let st = self.fs.lstat(path)?;
        let mut total = if seen.insert(st.ino) {
            st.blocks * 512
        } else {
            0
        };
        if st.kind == FileKind::Dir {
            let mut ents = self.fs.readdir(path)?;
            ents.sort_by(|a, b| a.name.cmp(&b.name));
            for e in ents {
                total += self.du_at(&join(path, &e.name_lossy()), summary, false, seen)?;
            }
        }
        if top || (!summary && st.kind == FileKind::Dir) {
            writeln!(self.out, "{total}\t{path}").ok();
        }
        Ok(total)
    }
}

/// `SECONDS` or `SECONDS.NANOS` since the epoch.
fn parse_time(s: &str) -> Result<(i64, u32), CmdError> {
    let bad = || usage(&format!("touch: {s:?} is not SECONDS[.NANOS] since 1970"));
    let (sec, frac) = s.split_once('.').unwrap_or((s, ""));
    let sec: i64 = sec.parse().map_err(|_| bad())?;
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let nsec = if frac.is_empty() {
        0
    } else {
        frac.parse::<u32>().map_err(|_| bad())? * 10u32.pow(9 - frac.len() as u32)
    };
    Ok((sec, nsec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(mode_string(FileKind::File, 0o644), "-rw-r--r--");
        assert_eq!(mode_string(FileKind::Dir, 0o755), "drwxr-xr-x");
        assert_eq!(mode_string(FileKind::Dir, 0o1777), "drwxrwxrwt");
        assert_eq!(mode_string(FileKind::File, 0o4644), "-rwSr--r--");
        assert_eq!(mode_string(FileKind::File, 0o2755), "-rwxr-sr-x");
        assert_eq!(mode_string(FileKind::Symlink, 0o777), "lrwxrwxrwx");
    }

    #[test]
    fn times() {
        assert_eq!(time_text((0, 0)), "1970-01-01 00:00:00.000000000 +0000");
        assert_eq!(
            time_text((951_782_400, 5)),
            "2000-02-29 00:00:00.000000005 +0000"
        );
        assert_eq!(
            time_text((1_700_000_000, 123_000_000)),
            "2023-11-14 22:13:20.123000000 +0000"
        );
        assert_eq!(time_text((-1, 0)), "1969-12-31 23:59:59.000000000 +0000");
        assert_eq!(parse_time("12.5").unwrap(), (12, 500_000_000));
        assert!(parse_time("x").is_err());
    }
}
