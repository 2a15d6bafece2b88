//! The superblock's counters checked against what the trees hold.
//!
//! `next_ino` and `error_seq` hand out numbers: a value at or below a number
//! in use makes the next create (or error-log entry) collide with it, and a
//! value near the top of its range makes every later create or report fail.
//! Both are found from one path down their tree (the largest key), so mount
//! checks them every time and puts a bad one right (fsck reports it first);
//! see [`counter_problems`]. `free_blocks` is corrected when the free-space
//! tree is first read whole (`Tx::open`), `root_ino` must name a directory or
//! mount refuses, and `inodes` (shown by `info`, used by nothing) is only
//! reported by fsck.
use crate::error::{FsError, Result};
use crate::inode::{FileKind, inode_tree};
use crate::media::error_log;
use daxfs_btree::NodeStore;
use daxfs_format::Superblock;

/// The largest value `next_ino` and `error_seq` may hold. Each create (each
/// error-log entry) moves its counter on by one, so even a million a second
/// takes over 140,000 years to get here: a value above it is damage, not use.
/// Inode numbers are below it (so below the reverse map's metadata-owner
/// bit, 2^63): with `next_ino` at the limit the inode-number space is used
/// up and a create fails with ENOSPC.
pub const COUNTER_LIMIT: u64 = 1 << 62;

/// A counter that cannot be used as it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CounterProblem {
    /// The superblock field.
    pub field: &'static str,
    /// Its value.
    pub value: u64,
    /// The value the trees call for (what mount sets it to).
    pub fixed: u64,
    /// What is wrong, as a sentence naming the field, its value and what
    /// the trees hold.
    pub message: String,
}

/// Checks `next_ino` and `error_seq` against the largest inode number in
/// use and the newest error-log entry: each must be above it and at most
/// [`COUNTER_LIMIT`]. Reads one path of the inode tree and one of the error
/// log.
pub fn counter_problems(s: &mut dyn NodeStore, sb: &Superblock) -> Result<Vec<CounterProblem>> {
    let mut out = vec![];
    // Inode 1 (the root) always exists; the largest number in use is the
    // inode tree's last key.
    let max_ino = inode_tree()
        .last_le(s, &sb.inode_tree, &u64::MAX)?
        .map_or(0, |(k, _)| k);
    let next = sb.next_ino.get();
    let want = max_ino.saturating_add(1).max(2);
    if next <= max_ino {
        out.push(CounterProblem {
            field: "next_ino",
            value: next,
            fixed: want,
            message: format!(
                "next_ino {next} is not above the largest inode number in use, {max_ino}: a create would reuse a number"
            ),
        });
    } else if next > COUNTER_LIMIT {
        out.push(CounterProblem {
            field: "next_ino",
            value: next,
            fixed: want,
            message: format!(
                "next_ino {next} is past {COUNTER_LIMIT} (2^62), more numbers than creating files can use up; the largest inode number in use is {max_ino}"
            ),
        });
    }
    let newest = error_log()
        .last_le(s, &sb.error_log, &(u64::MAX, u64::MAX))?
        .map(|((seq, _), _)| seq);
    let seq = sb.error_seq.get();
    let want = newest.map_or(0, |n| n.saturating_add(1));
    let held = newest.map_or("the error log is empty".to_string(), |n| {
        format!("the newest error-log entry is {n}")
    });
    if newest.is_some_and(|n| seq <= n) {
        out.push(CounterProblem {
            field: "error_seq",
            value: seq,
            fixed: want,
            message: format!(
                "error_seq {seq} is not above the newest error-log entry ({held}): a new entry would collide"
            ),
        });
    } else if seq > COUNTER_LIMIT {
        out.push(CounterProblem {
            field: "error_seq",
            value: seq,
            fixed: want,
            message: format!(
                "error_seq {seq} is past {COUNTER_LIMIT} (2^62), more entries than reports can make; {held}"
            ),
        });
    }
    Ok(out)
}

/// Why `root_ino` cannot be the root directory, if it cannot.
pub fn root_problem(s: &mut dyn NodeStore, sb: &Superblock) -> Result<Option<String>> {
    let root = sb.root_ino.get();
    let rec = if root == 0 {
        None
    } else {
        crate::inode::read_record(s, &sb.inode_tree, root)?
    };
    Ok(match rec {
        None => Some(format!("root_ino {root} names no inode in the inode table")),
        Some(r) => match FileKind::of_mode(r.mode.get()) {
            // The root is its own parent; any other directory has another.
            Some(FileKind::Dir) if r.parent.get() == root => None,
            Some(FileKind::Dir) => Some(format!(
                "root_ino {root} names a directory inside directory {}, not the root",
                r.parent.get()
            )),
            k => Some(format!(
                "root_ino {root} names a {}, not a directory",
                k.map_or("file of unknown type", |k| k.name())
            )),
        },
    })
}

/// [`root_problem`] as mount's error; an inode tree that cannot be read is
/// not one (the operations that read it fail naming the block).
pub(crate) fn check_root(s: &mut dyn NodeStore, sb: &Superblock) -> Result<()> {
    match root_problem(s, sb) {
        Ok(Some(m)) => Err(FsError::Corrupt(format!("superblock: {m}"))),
        Ok(None) | Err(_) => Ok(()),
    }
}
