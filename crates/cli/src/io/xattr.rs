//! The extended-attribute commands of `daxfs io`: `setfattr`, `getfattr`
//! and `rmfattr`, after the attr tools' setfattr and getfattr.
use super::{CmdError, CmdResult, Shell, args, getopt, usage};
use std::io::Write;

/// Their lines of `help`.
pub const HELP: &str = "\
setfattr [-c|-r] [-h] PATH NAME VALUE  set an extended attribute (-c: must not exist, -r: must
                                       exist, -h: of a symlink itself); VALUE is text or 0x hex
getfattr [-h] PATH [NAME]              print one attribute's value, or every NAME=\"VALUE\"
rmfattr [-h] PATH NAME                 remove an extended attribute";

/// A value as typed: text, or hexadecimal after `0x`.
fn parse_value(v: &str) -> Result<Vec<u8>, CmdError> {
    let Some(hex) = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) else {
        return Ok(v.as_bytes().to_vec());
    };
    if hex.len() % 2 != 0 {
        return Err(usage(&format!("value {v:?}: odd number of hex digits")));
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|d| u8::from_str_radix(d, 16).ok())
                .ok_or_else(|| usage(&format!("value {v:?}: not hexadecimal")))
        })
        .collect()
}

/// A value as printed: quoted text when it is printable, else 0x hex.
fn show_value(v: &[u8]) -> String {
    let text = v.strip_suffix(b"\0").unwrap_or(v);
    if !text.is_empty()
        && text
            .iter()
            .all(|&c| (0x20..0x7f).contains(&c) && c != b'"' && c != b'\\')
    {
        format!("\"{}\"", String::from_utf8_lossy(text))
    } else if v.is_empty() {
        "\"\"".into()
    } else {
        let mut s = String::from("0x");
        for b in v {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }
}

impl Shell<'_> {
    /// Runs `cmd` if it is one of these commands.
    pub(super) fn xattr_command(&mut self, cmd: &str, rest: &[String]) -> Option<CmdResult> {
        Some(match cmd {
            "setfattr" => self.setfattr(rest),
            "getfattr" => self.getfattr(rest),
            "rmfattr" => self.rmfattr(rest),
            _ => return None,
        })
    }

    fn setfattr(&mut self, rest: &[String]) -> CmdResult {
        let (flags, pos) = getopt(rest, "crh")?;
        let [p, n, v] = args(&pos, "setfattr [-c|-r] [-h] PATH NAME VALUE")?;
        let mut f = 0;
        for (c, _) in &flags {
            match c {
                'c' => f |= daxfs::XATTR_CREATE,
                'r' => f |= daxfs::XATTR_REPLACE,
                _ => {}
            }
        }
        let value = parse_value(v)?;
        if flags.iter().any(|(c, _)| *c == 'h') {
            Ok(self.fs.lsetxattr(p, n.as_bytes(), &value, f)?)
        } else {
            Ok(self.fs.setxattr(p, n.as_bytes(), &value, f)?)
        }
    }

    fn getfattr(&mut self, rest: &[String]) -> CmdResult {
        let (flags, pos) = getopt(rest, "h")?;
        let nofollow = !flags.is_empty();
        let get = |n: &[u8], p: &str| {
            if nofollow {
                self.fs.lgetxattr(p, n)
            } else {
                self.fs.getxattr(p, n)
            }
        };
        match pos.as_slice() {
            [p, n] => {
                let v = get(n.as_bytes(), p)?;
                writeln!(self.out, "{}", show_value(&v)).ok();
            }
            [p] => {
                let mut names = if nofollow {
                    self.fs.llistxattr(p)?
                } else {
                    self.fs.listxattr(p)?
                };
                names.sort();
                let mut lines = vec![];
                for n in names {
                    let v = get(&n, p)?;
                    lines.push(format!(
                        "{}={}",
                        String::from_utf8_lossy(&n),
                        show_value(&v)
                    ));
                }
                for l in lines {
                    writeln!(self.out, "{l}").ok();
                }
            }
            _ => return Err(usage("usage: getfattr [-h] PATH [NAME]")),
        }
        Ok(())
    }

    fn rmfattr(&mut self, rest: &[String]) -> CmdResult {
        let (flags, pos) = getopt(rest, "h")?;
        let [p, n] = args(&pos, "rmfattr [-h] PATH NAME")?;
        if flags.is_empty() {
            Ok(self.fs.removexattr(p, n.as_bytes())?)
        } else {
            Ok(self.fs.lremovexattr(p, n.as_bytes())?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_and_print() {
        assert_eq!(parse_value("abc").unwrap(), b"abc");
        assert_eq!(parse_value("0x00ff").unwrap(), [0, 0xff]);
        assert!(parse_value("0x0").is_err());
        assert!(parse_value("0xzz").is_err());
        assert_eq!(show_value(b"abc"), "\"abc\"");
        assert_eq!(show_value(b""), "\"\"");
        assert_eq!(show_value(&[0, 0xff]), "0x00ff");
    }
}
