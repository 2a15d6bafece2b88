//! Text and JSON forms of fsmap rows and owner reports.
use daxfs::{OwnerKind, OwnerRecord};

/// The owner column of a row: "inode 12 data /a, /b", "free space", ...
pub fn owner_text(r: &OwnerRecord) -> String {
    match &r.owner {
        OwnerKind::Free => "free space".into(),
        OwnerKind::Quarantined => "bad blocks (quarantined)".into(),
        OwnerKind::Metadata(k) => k.to_string(),
        OwnerKind::File { ino, paths, fork } => {
            let p = if paths.is_empty() {
                "(unlinked)".to_string()
            } else {
                paths.join(", ")
            };
            if *fork == "data" {
                format!(
                    "inode {ino} data {}..{} {p}",
                    r.offset / 512,
                    (r.offset + r.length) / 512 - 1
                )
            } else {
                format!("inode {ino} {fork} {p}")
            }
        }
    }
}

/// The flag words of a row.
pub fn flags(r: &OwnerRecord) -> Vec<&'static str> {
    let mut f = vec![];
    if r.shared {
        f.push("shared");
    }
    if r.metadata {
        f.push("metadata");
    }
    if r.unwritten {
        f.push("unwritten");
    }
    if r.bad {
        f.push("bad");
    }
    f
}

/// One row as text: `N: [start..end]: owner length flags` in 512-byte units,
/// as xfs_io prints fsmap.
pub fn row_text(i: usize, r: &OwnerRecord) -> String {
    let f = flags(r);
    format!(
        "{i}: [{}..{}]: {} {}{}{}",
        r.physical / 512,
        (r.physical + r.length) / 512 - 1,
        owner_text(r),
        r.length / 512,
        if f.is_empty() { "" } else { " " },
        f.join(",")
    )
}

/// One row as a JSON object.
pub fn row_json(r: &OwnerRecord) -> serde_json::Value {
    let owner = match &r.owner {
        OwnerKind::Free => serde_json::json!({ "free": true }),
        OwnerKind::Quarantined => serde_json::json!({ "quarantined": true }),
        OwnerKind::Metadata(k) => serde_json::json!({ "metadata": k }),
        OwnerKind::File { ino, paths, fork } => {
            serde_json::json!({ "inode": ino, "paths": paths, "offset": r.offset, "fork": fork })
        }
    };
    serde_json::json!({ "physical": r.physical, "length": r.length, "owner": owner, "flags": flags(r) })
}

/// The owner of a failure event as text.
pub fn event_owner(o: &daxfs::OwnerKind, offset: u64) -> String {
    match o {
        OwnerKind::Free => "free space".into(),
        OwnerKind::Quarantined => "bad blocks (quarantined)".into(),
        OwnerKind::Metadata(k) => k.to_string(),
        OwnerKind::File { ino, paths, fork } => {
            let p = if paths.is_empty() {
                "(no path)".to_string()
            } else {
                paths.join(", ")
            };
            if *fork == "data" {
                format!("inode {ino} {p} offset {offset}")
            } else {
                format!("inode {ino} {p} ({fork})")
            }
        }
    }
}

/// A failure event as JSON.
pub fn event_json(e: &daxfs::FailureEvent) -> serde_json::Value {
    serde_json::json!({
        "physical": e.physical,
        "length": e.length,
        "owner": owner_json(&e.owner, e.offset),
        "action": e.action,
    })
}

/// An owner as JSON (as fsmap rows give it).
pub fn owner_json(o: &daxfs::OwnerKind, offset: u64) -> serde_json::Value {
    match o {
        OwnerKind::Free => serde_json::json!({ "free": true }),
        OwnerKind::Quarantined => serde_json::json!({ "quarantined": true }),
        OwnerKind::Metadata(k) => serde_json::json!({ "metadata": k }),
        OwnerKind::File { ino, paths, fork } => {
            serde_json::json!({ "inode": ino, "paths": paths, "offset": offset, "fork": fork })
        }
    }
}

/// The part of `r` inside the device range `[lo, hi)`: its start, length
/// and (for file data) file offset clipped, so that a report of one bad
/// page names that page of an owner's extent, not the whole extent.
pub fn clip(r: &OwnerRecord, lo: u64, hi: u64) -> OwnerRecord {
    let start = r.physical.max(lo);
    let end = (r.physical + r.length).min(hi).max(start);
    let mut c = r.clone();
    c.physical = start;
    c.length = end - start;
    if matches!(c.owner, OwnerKind::File { .. }) {
        c.offset = r.offset + (start - r.physical);
    }
    c
}
