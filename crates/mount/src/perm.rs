//! Permission checks as Linux makes them (`generic_permission`), for a
//! mount without `default_permissions`: against the caller's uid, gid and
//! supplementary groups (read from /proc/PID/status when a check needs
//! them).
use daxfs::{FileKind, Stat};

pub const R: u32 = 4;
pub const W: u32 = 2;
pub const X: u32 = 1;

/// Who asks.
#[derive(Debug)]
pub struct Creds {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
    groups: std::cell::OnceCell<Vec<u32>>,
}

impl Creds {
    pub fn new(uid: u32, gid: u32, pid: u32) -> Creds {
        Creds {
            uid,
            gid,
            pid,
            groups: std::cell::OnceCell::new(),
        }
    }

    pub fn root(&self) -> bool {
        self.uid == 0
    }

    /// Whether the caller is in group `g` (its own or a supplementary one).
    pub fn in_group(&self, g: u32) -> bool {
        if g == self.gid {
            return true;
        }
        self.groups
            .get_or_init(|| supplementary_groups(self.pid))
            .contains(&g)
    }
}

/// The supplementary groups of process `pid` (none if it cannot be read,
/// e.g. it has exited).
fn supplementary_groups(pid: u32) -> Vec<u32> {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return vec![];
    };
    s.lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| {
            g.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// May `c` access `st` for `mask` (R, W, X bits)? EACCES if not.
pub fn check(c: &Creds, st: &Stat, mask: u32) -> Result<(), i32> {
    if c.root() {
        // Root passes everything but executing a file with no x bit.
        if mask & X != 0 && st.kind != FileKind::Dir && st.perm & 0o111 == 0 {
            return Err(libc::EACCES);
        }
        return Ok(());
    }
    let bits = if c.uid == st.uid {
        (st.perm >> 6) & 7
    } else if c.in_group(st.gid) {
        (st.perm >> 3) & 7
    } else {
        st.perm & 7
    };
    if mask & !bits != 0 {
        return Err(libc::EACCES);
    }
    Ok(())
}

/// The sticky-directory rule: in a sticky directory only the owner of the
/// entry, the owner of the directory or root may remove or rename it.
pub fn check_sticky(c: &Creds, dir: &Stat, victim: &Stat) -> Result<(), i32> {
    if dir.perm & libc::S_ISVTX == 0 || c.root() || c.uid == dir.uid || c.uid == victim.uid {
        return Ok(());
    }
    Err(libc::EPERM)
}

/// Whether `c` owns `st` or is root.
pub fn owner_or_root(c: &Creds, st: &Stat) -> bool {
    c.root() || c.uid == st.uid
}
