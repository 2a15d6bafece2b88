//! `daxfs bench reflink`: the cost of sharing blocks (clone, copy on write,
//! owner queries, fsmap) in daxfs next to XFS with reflink and the reverse
//! map, in one run.
//!
//! The peer is XFS on a loop device backed by a file in the benchmark
//! directory (memory, for /dev/shm), made and mounted for the run when the
//! machine allows it (root, xfsprogs, a free loop device) and skipped with
//! the reason when it does not. XFS there works through the page cache, not
//! DAX. Every daxfs figure is shown with how many times better it is than
//! XFS's; the targets are informational and never change the exit status.
#[path = "reflink_dax.rs"]
mod dax;
#[path = "reflink_work.rs"]
mod work;
#[path = "reflink_xfs.rs"]
mod xfs;

use super::machine;
use super::report::{Figure, Ratio, Report};
use crate::args::parse_size;
use anyhow::{Result, bail};
use std::path::{Path, PathBuf};
use std::time::Duration;
use work::Measured;

/// Options of `daxfs bench reflink`.
#[derive(clap::Args, Debug)]
pub struct ReflinkArgs {
    /// Directory for the images [default: /dev/shm, else the system's
    /// temporary directory]. The XFS peer's backing file goes here too.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Size of the contiguous file that is cloned and overwritten, and of the
    /// unshared file overwritten beside it: k, m, g suffixes [default: 1g;
    /// 64m with --quick]. Scaled down when the directory or memory is short.
    #[arg(long)]
    size: Option<String>,
    /// Extents of the fragmented file that is cloned [default: 10000; 1000
    /// with --quick].
    #[arg(long)]
    extents: Option<u64>,
    /// Owners of the block whose owners are queried [default: 10000; 500
    /// with --quick].
    #[arg(long)]
    owners: Option<u64>,
    /// Random 4 KiB overwrites of the fresh clone and of the unshared file
    /// [default: 20000; 1000 with --quick].
    #[arg(long)]
    ops: Option<usize>,
    /// Timed clones of each file [default: 15; 5 with --quick].
    #[arg(long)]
    clones: Option<usize>,
    /// Leave out the XFS peer (it needs root, xfsprogs and a loop device).
    #[arg(long)]
    no_peer: bool,
    /// Small sizes and few repetitions: a smoke run of a few seconds.
    #[arg(long)]
    quick: bool,
    /// Print one JSON document instead of a table.
    #[arg(long)]
    json: bool,
}

/// What one run does, from the options.
pub struct Plan {
    pub dir: PathBuf,
    /// Size of the contiguous and the unshared file, a multiple of 1 MiB.
    pub file_bytes: u64,
    pub extents: u64,
    pub owners: u64,
    pub cow_ops: usize,
    pub clones: usize,
    /// How long each query is repeated for (at least a few times).
    pub query_budget: Duration,
    pub memcpy_bytes: usize,
    pub passes: usize,
}

impl Plan {
    fn from_args(a: &ReflinkArgs) -> Result<Plan> {
        let dir = crate::bench::scratch_dir(&a.dir)?;
        let q = a.quick;
        let size = match &a.size {
            Some(s) => parse_size(s)?,
            None if q => 64 << 20,
            None => 1 << 30,
        };
        let file_bytes = size >> 20 << 20;
        if file_bytes == 0 {
            bail!("--size must be at least 1m");
        }
        let plan = Plan {
            dir,
            file_bytes,
            extents: a.extents.unwrap_or(if q { 1_000 } else { 10_000 }),
            owners: a.owners.unwrap_or(if q { 500 } else { 10_000 }),
            cow_ops: a.ops.unwrap_or(if q { 1_000 } else { 20_000 }),
            clones: a.clones.unwrap_or(if q { 5 } else { 15 }),
            query_budget: Duration::from_millis(if q { 100 } else { 2_000 }),
            memcpy_bytes: if q { 32 << 20 } else { 256 << 20 },
            passes: if q { 3 } else { 7 },
        };
        if plan.extents == 0 || plan.owners < 2 || plan.cow_ops == 0 || plan.clones == 0 {
            bail!("--extents, --ops and --clones must be at least 1, --owners at least 2");
        }
        Ok(plan)
    }

    #[cfg(test)]
    pub fn tiny() -> Plan {
        Plan {
            dir: std::env::temp_dir(),
            file_bytes: 1 << 20,
            extents: 4,
            owners: 3,
            cow_ops: 4,
            clones: 1,
            query_budget: Duration::ZERO,
            memcpy_bytes: 1 << 20,
            passes: 1,
        }
    }
}

/// Bytes free in `dir` and, when the directory is memory (tmpfs), the
/// memory the kernel says is available: images there are memory too.
fn room(dir: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(dir).ok()?;
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    // TMPFS_MAGIC. The field's integer type differs between architectures.
    #[allow(clippy::unnecessary_cast)]
    let on_tmpfs = rustix::fs::statfs(dir)
        .map(|s| s.f_type as i64 == 0x0102_1994)
        .unwrap_or(false);
    let avail = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find(|l| l.starts_with("MemAvailable:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|k| k.parse::<u64>().ok())
            .map(|k| k * 1024)
    });
    Some(match (on_tmpfs, avail) {
        (true, Some(a)) => free.min(a),
        _ => free,
    })
}

/// Halves the file size until the larger of the two sides' footprints fits
/// in the room there is (never below 64 MiB); returns a message saying so
/// when it had to.
fn fit(plan: &mut Plan, peer: bool) -> Option<String> {
    let room = room(&plan.dir)?;
    // The peer writes as much data as daxfs into its backing file, and the
    // page cache holds the files' pages as well: twice the data in memory.
    let need = |p: &Plan| {
        let d = dax::image_bytes(p);
        let twice = if peer { d * 2 } else { d };
        twice + d / 8
    };
    let asked = plan.file_bytes;
    while need(plan) > room && plan.file_bytes > 64 << 20 {
        plan.file_bytes /= 2;
    }
    (plan.file_bytes != asked).then(|| {
        format!(
            "{} has {} MiB free: files scaled down from {} MiB to {} MiB",
            plan.dir.display(),
            room >> 20,
            asked >> 20,
            plan.file_bytes >> 20
        )
    })
}

/// What the peer turned out to be.
enum Peer {
    Ran(Measured),
    Skipped(String),
}

/// Runs the benchmark; the exit status is 0 unless something failed.
pub fn run(args: &ReflinkArgs) -> Result<i32> {
    let mut plan = Plan::from_args(args)?;
    let json = args.json;
    let tools = if args.no_peer {
        Err("--no-peer".to_string())
    } else {
        xfs::tools()
    };
    let scaled = fit(&mut plan, tools.is_ok());
    let dax_bytes = dax::image_bytes(&plan);
    let xfs_bytes = xfs::image_bytes(&plan, dax_bytes);
    let peer_desc = "XFS (reflink=1, rmapbt=1) on a loop device backed by a file in the \
        benchmark directory; page cache and block layer, not DAX; pwrite + fdatasync, \
        FICLONE + fsync, FS_IOC_GETFSMAP";
    let mut r = Report::new(json, peer_desc.into());
    let say = |s: &str| {
        if !json {
            println!("{s}");
        }
    };
    say(&format!(
        "daxfs bench reflink in {}: {} MiB files, {} extents, {} owners, {} overwrites, {} clones each; cpu {}; persistence {}",
        plan.dir.display(),
        plan.file_bytes >> 20,
        plan.extents,
        plan.owners,
        plan.cow_ops,
        plan.clones,
        super::cpu_model(),
        super::persistence(),
    ));
    if let Some(s) = &scaled {
        if json {
            eprintln!("{s}");
        }
        say(s);
    }
    let progress = |s: &str| {
        if !json {
            println!("  .. {s}");
        }
    };

    // Context: what one thread can copy, and so what copying the file
    // instead of cloning it would cost at best.
    let (src, mut dst) = machine::faulted_buffers(plan.memcpy_bytes);
    let bw = machine::memcpy_bandwidth(&src, &mut dst, plan.passes)?;
    drop((src, dst));

    say(&format!("daxfs: image of {} MiB", dax_bytes >> 20));
    let d = dax::run(&plan, &progress)?;

    let peer = match &tools {
        Err(why) => Peer::Skipped(format!("XFS peer skipped: {why}")),
        Ok(t) => {
            say(&format!(
                "XFS: sparse backing file of {} MiB on a loop device",
                xfs_bytes >> 20
            ));
            match xfs::run(&plan, t, xfs_bytes, &progress) {
                Ok(m) => Peer::Ran(m),
                Err(xfs::PeerError::Setup(e)) => Peer::Skipped(format!(
                    "XFS peer skipped: the machine does not allow it: {e}"
                )),
                Err(xfs::PeerError::Run(e)) => Peer::Skipped(format!("XFS peer failed: {e}")),
            }
        }
    };
    let p = match &peer {
        Peer::Ran(m) => Some(m),
        Peer::Skipped(why) => {
            if json {
                eprintln!("{why}");
            }
            say(why);
            None
        }
    };

    let (met, judged, targets) = figures(&mut r, &plan, bw, &d, p);

    if !json {
        println!();
        for (side, m) in [("daxfs", Some(&d)), ("XFS", p)] {
            if let Some(m) = m {
                let steps: Vec<String> = m
                    .phases
                    .iter()
                    .map(|(n, s)| format!("{n} {:.2} s", s))
                    .collect();
                println!("{side} setup: {}", steps.join("; "));
            }
        }
        println!(
            "overwrites: distinct random 4 KiB blocks, each durable (daxfs: write; XFS: pwrite + fdatasync), ops/s over all of them; clones: into a new empty file, durable (XFS: FICLONE + fsync) unless marked"
        );
        if p.is_some() {
            println!(
                "ratios on daxfs lines: times better than XFS (XFS time / daxfs time, or daxfs ops/s / XFS ops/s)"
            );
            println!(
                "XFS runs on a loop device in memory through the page cache, not DAX: its figures are a conventional file system's best case, not a pmem one"
            );
        }
        println!(
            "targets (informational): {met} of {judged} met{}",
            if judged < targets {
                ", the rest need the XFS peer"
            } else {
                ""
            }
        );
    }

    let config = serde_json::json!({
        "dir": plan.dir.display().to_string(),
        "file_bytes": plan.file_bytes,
        "extents": plan.extents,
        "owners": plan.owners,
        "ops": plan.cow_ops,
        "clones": plan.clones,
        "quick": args.quick,
        "scaled": scaled,
        "cpu": super::cpu_model(),
        "persistence": super::persistence(),
        "daxfs_image_bytes": dax_bytes,
        "peer": match &peer { Peer::Ran(_) => peer_desc.to_string(), Peer::Skipped(w) => w.clone() },
        "peer_ran": p.is_some(),
        "setup_seconds": {
            "daxfs": phases_json(&d),
            "xfs": p.map(phases_json),
        },
    });
    r.finish(&config);
    Ok(0)
}

fn phases_json(m: &Measured) -> serde_json::Value {
    m.phases
        .iter()
        .map(|(n, s)| ((*n).to_string(), serde_json::json!(s)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// One figure of both sides: its name without the side's prefix, label,
/// value on each side, unit, and whether more is better.
struct Row {
    name: &'static str,
    label: String,
    peer_label: String,
    dax: f64,
    peer: Option<f64>,
    unit: &'static str,
    higher_is_better: bool,
    /// Also checked against this value (in `unit`), beside the 2x target.
    at_most: Option<f64>,
}

/// The factor XFS needs to lose by for a target to pass.
const BETTER_BY: f64 = 2.0;

/// Adds every figure; returns how many targets were met, how many could be
/// judged, and how many there are.
fn figures(
    r: &mut Report,
    plan: &Plan,
    bw: f64,
    d: &Measured,
    p: Option<&Measured>,
) -> (usize, usize, usize) {
    r.add(Figure::new(
        "memcpy_bw",
        "machine",
        "memcpy bandwidth, single thread",
        bw,
        "GB/s",
    ));
    let copy_ms = plan.file_bytes as f64 / (bw * 1e9) * 1e3;
    let size = format!("{} MiB", plan.file_bytes >> 20);
    r.add(Figure::new(
        "memcpy_file",
        "machine",
        format!("copying {size} at that bandwidth (not a clone)"),
        copy_ms,
        "ms",
    ));

    let peer_n = |f: fn(&Measured) -> usize| p.map(f).unwrap_or(0);
    // The same label on both sides, except where the side's own count of
    // what it was given is worth seeing.
    let row = |name, label: String, dax, peer, unit, higher_is_better, at_most| Row {
        name,
        peer_label: label.clone(),
        label,
        dax,
        peer,
        unit,
        higher_is_better,
        at_most,
    };
    let rows = [
        Row {
            peer_label: format!(
                "clone {size} file ({} extents), p50",
                peer_n(|m| m.contig_extents)
            ),
            ..row(
                "clone_contig",
                format!("clone {size} file ({} extents), p50", d.contig_extents),
                d.clone_contig.p50_ms(),
                p.map(|m| m.clone_contig.p50_ms()),
                "ms",
                false,
                None,
            )
        },
        Row {
            peer_label: format!("clone file of {} extents, p50", peer_n(|m| m.frag_extents)),
            ..row(
                "clone_extents",
                format!("clone file of {} extents, p50", d.frag_extents),
                d.clone_frag.p50_ms(),
                p.map(|m| m.clone_frag.p50_ms()),
                "ms",
                false,
                None,
            )
        },
        row(
            "cow_overwrite",
            format!("4 KiB overwrite, fresh {size} clone (CoW)"),
            d.cow_ops,
            p.map(|m| m.cow_ops),
            "ops/s",
            true,
            None,
        ),
        row(
            "unshared_overwrite",
            format!("4 KiB overwrite, unshared {size} file"),
            d.own_ops,
            p.map(|m| m.own_ops),
            "ops/s",
            true,
            None,
        ),
        // Both sides were checked to return a record per owner.
        row(
            "owner_query",
            format!(
                "owners (by inode) of a block shared {} ways, p50",
                plan.owners
            ),
            d.owner_query.p50(),
            p.map(|m| m.owner_query.p50()),
            "us",
            false,
            Some(10.0),
        ),
        Row {
            peer_label: format!(
                "fsmap, whole device ({} records), p50",
                peer_n(|m| m.fsmap_records)
            ),
            ..row(
                "fsmap",
                format!("fsmap, whole device ({} records), p50", d.fsmap_records),
                d.fsmap.p50_ms(),
                p.map(|m| m.fsmap.p50_ms()),
                "ms",
                false,
                None,
            )
        },
    ];
    // Not among the targets: the clone without fsync (a daxfs clone is
    // durable either way; XFS's FICLONE alone reaches the log only later),
    // and the owners of a block with one owner, so the shared-block query
    // can be read as a fixed cost plus a cost per owner.
    let nosync = Row {
        peer_label: format!("clone {size} file, FICLONE only, p50"),
        ..row(
            "clone_contig_nosync",
            format!("clone {size} file, no fsync, p50"),
            d.clone_contig_nosync.p50_ms(),
            p.map(|m| m.clone_contig_nosync.p50_ms()),
            "ms",
            false,
            None,
        )
    };
    let single = row(
        "owner_query_single",
        "owners of an unshared block, p50".into(),
        d.single_query.p50(),
        p.map(|m| m.single_query.p50()),
        "us",
        false,
        None,
    );

    let (mut met, mut judged) = (0, 0);
    for row in rows.iter() {
        let f = dax_figure(row, true);
        met += usize::from(f.pass == Some(true));
        judged += usize::from(f.pass.is_some());
        r.add(f);
    }
    r.add(dax_figure(&nosync, false));
    r.add(dax_figure(&single, false));
    if p.is_some() {
        for row in rows.iter().chain([&nosync, &single]) {
            if let Some(v) = row.peer {
                r.add(Figure::new(
                    format!("xfs_{}", row.name),
                    "peer",
                    row.peer_label.clone(),
                    v,
                    row.unit,
                ));
            }
        }
    }
    (met, judged, rows.len())
}

/// The daxfs figure of `row`, with how many times better than XFS it is
/// and, when `targets`, the 2x target (and the absolute one, if any).
fn dax_figure(row: &Row, targets: bool) -> Figure {
    let mut f = Figure::new(
        format!("daxfs_{}", row.name),
        "daxfs",
        row.label.clone(),
        row.dax,
        row.unit,
    );
    let peer_name = format!("xfs_{}", row.name);
    let better = row.peer.filter(|v| *v > 0.0 && row.dax > 0.0).map(|v| {
        if row.higher_is_better {
            row.dax / v
        } else {
            v / row.dax
        }
    });
    if let Some(b) = better {
        f.ratio = Some(b);
        f.ratio_to = Some(peer_name.clone());
        f.ratios = vec![Ratio {
            to: peer_name.clone(),
            value: b,
        }];
    }
    if !targets {
        return f;
    }
    let mut text = vec![format!(">= {BETTER_BY:.2}x {peer_name}")];
    let mut pass = better.map(|b| b >= BETTER_BY);
    if let Some(max) = row.at_most {
        text.push(format!(
            "<= {max} {}",
            if row.unit == "us" { "µs" } else { row.unit }
        ));
        let ok = row.dax <= max;
        pass = Some(pass.unwrap_or(true) && ok);
        if better.is_none() {
            // Without the peer only the absolute target can be judged.
            text.remove(0);
        }
    }
    f.target = Some(text.join(", "));
    f.pass = pass;
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(dax: f64, peer: Option<f64>, higher: bool, at_most: Option<f64>) -> Row {
        Row {
            name: "x",
            label: "x".into(),
            peer_label: "x".into(),
            dax,
            peer,
            unit: "us",
            higher_is_better: higher,
            at_most,
        }
    }

    #[test]
    fn better_by_follows_the_direction_of_the_unit() {
        let f = dax_figure(&row(1.0, Some(3.0), false, None), true);
        assert_eq!(f.ratio, Some(3.0));
        assert_eq!(f.pass, Some(true));
        let f = dax_figure(&row(1.0, Some(3.0), true, None), true);
        assert_eq!(f.ratio, Some(1.0 / 3.0));
        assert_eq!(f.pass, Some(false));
    }

    #[test]
    fn absolute_target_is_judged_without_the_peer() {
        let f = dax_figure(&row(5.0, None, false, Some(10.0)), true);
        assert_eq!(f.pass, Some(true));
        assert_eq!(f.target.as_deref(), Some("<= 10 µs"));
        let f = dax_figure(&row(5.0, None, false, None), true);
        assert_eq!(f.pass, None);
        let f = dax_figure(&row(5.0, Some(6.0), false, Some(10.0)), true);
        assert_eq!(f.pass, Some(false));
    }
}
