//! Conformance suites from outside the project, run on the mount:
//! pjdfstest (POSIX namespace semantics) and fsx (data integrity). They are
//! found in `shared/tools` beside the workspace's folder, copied to a
//! scratch directory and built there; where they (or /dev/fuse, root,
//! prove, a C compiler) are missing the test skips with a printed reason.
mod common;
use common::*;
use daxfs_mount::MountConfig;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The tools' folder, if there is one.
fn tools() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?.parent()?;
    let t = root.parent()?.join("shared/tools");
    t.is_dir().then_some(t)
}

fn have(prog: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {prog}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A scratch directory, removed when dropped (the test failing or not).
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Copies `tool` from the tools' folder to a fresh scratch directory and
/// builds it there; returns the scratch directory and the copy in it.
fn build(tools: &Path, tool: &str) -> (Scratch, PathBuf) {
    let scratch = std::env::temp_dir().join(format!("daxfs-suite-{}-{tool}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap();
    let st = Command::new("cp")
        .arg("-r")
        .arg(tools.join(tool))
        .arg(&scratch)
        .status()
        .unwrap();
    assert!(st.success(), "copying {tool}");
    let dir = scratch.join(tool);
    let scratch = Scratch(scratch);
    let o = Command::new(dir.join("build.sh")).output().unwrap();
    assert!(
        o.status.success(),
        "building {tool}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    (scratch, dir)
}

macro_rules! need_tools {
    ($($prog:expr),*) => {{
        need_fuse!();
        let Some(t) = tools() else {
            eprintln!("SKIPPED: no shared/tools folder beside the workspace");
            return;
        };
        for p in [$($prog),*] {
            if !have(p) {
                eprintln!("SKIPPED: {p} is missing");
                return;
            }
        }
        t
    }};
}

/// "1, 3-5" as numbers.
fn numbers(s: &str) -> BTreeSet<u32> {
    let mut out = BTreeSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => out.extend(a.parse::<u32>().unwrap()..=b.parse().unwrap()),
            None => {
                out.insert(part.parse().unwrap());
            }
        }
    }
    out
}

/// The exclusion list: test file to its excluded numbers (None: all).
fn excluded() -> BTreeMap<String, Option<BTreeSet<u32>>> {
    let text = include_str!("pjdfstest-excluded.txt");
    let mut m = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut w = line.split_whitespace();
        let (file, nums) = (w.next().unwrap(), w.next().expect("numbers"));
        assert!(
            w.next().is_some(),
            "an exclusion without its reason: {line}"
        );
        let set = (nums != "*").then(|| numbers(nums));
        m.insert(file.to_string(), set);
    }
    m
}

/// Failed assertions per test file, from prove's summary report; a file
/// that died or planned wrong counts as wholly failed (None).
fn failures(report: &str, tests: &str) -> BTreeMap<String, Option<BTreeSet<u32>>> {
    let mut m: BTreeMap<String, Option<BTreeSet<u32>>> = BTreeMap::new();
    let mut cur: Option<String> = None;
    let mut in_failed = false;
    let Some(summary) = report.split("Test Summary Report").nth(1) else {
        return m;
    };
    for line in summary.lines() {
        if let Some(rest) = line.strip_prefix(tests) {
            let file = rest
                .trim_start_matches('/')
                .split_whitespace()
                .next()
                .unwrap();
            cur = Some(file.to_string());
            in_failed = false;
            let wstat_bad = !line.contains("Wstat: 0 ");
            m.entry(file.to_string()).or_insert(Some(BTreeSet::new()));
            if wstat_bad {
                m.insert(file.to_string(), None);
            }
            continue;
        }
        let Some(f) = cur.clone() else { continue };
        let t = line.trim();
        if let Some(n) = t
            .strip_prefix("Failed tests:")
            .or_else(|| t.strip_prefix("Failed test:"))
        {
            in_failed = true;
            if let Some(Some(s)) = m.get_mut(&f) {
                s.extend(numbers(n));
            }
        } else if t.starts_with("Parse errors") || t.starts_with("Non-zero") {
            in_failed = false;
            m.insert(f, None);
        } else if t.starts_with("TODO passed") {
            in_failed = false;
        } else if in_failed && t.chars().next().is_some_and(|c| c.is_ascii_digit()) {
            if let Some(Some(s)) = m.get_mut(&f) {
                s.extend(numbers(t));
            }
        } else if t.starts_with("Files=") {
            break;
        }
    }
    // A file with no failed numbers and a good exit is a TODO-only entry.
    m.retain(|_, v| v.as_ref().is_none_or(|s| !s.is_empty()));
    m
}

#[test]
fn pjdfstest_passes_on_the_mount() {
    let tools = need_tools!("prove", "cc");
    let (_scratch, dir) = build(&tools, "pjdfstest");
    let tests = dir.join("tests");
    // Other users reach a FUSE mount only with allow_other.
    let g = mount_new(
        "pjdfstest",
        256,
        MountConfig {
            allow_other: true,
            ..MountConfig::default()
        },
    );
    let work = g.path("work");
    std::fs::create_dir(&work).unwrap();
    let start = std::time::Instant::now();
    let o = Command::new("prove")
        .args(["-r", "-j2"])
        .arg(&tests)
        .current_dir(&work)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let tests_s = tests.to_str().unwrap().to_string();
    let failed = failures(&out, &tests_s);
    let excl = excluded();
    let total: u32 = out
        .lines()
        .find_map(|l| l.strip_prefix("Files="))
        .and_then(|l| l.split("Tests=").nth(1))
        .and_then(|l| l.split(',').next())
        .and_then(|n| n.trim().parse().ok())
        .expect("prove's Files=... Tests=... line");
    let mut unexpected = vec![];
    let (mut n_failed, mut n_excluded) = (0, 0);
    for (file, nums) in &failed {
        match (nums, excl.get(file)) {
            (_, Some(None)) => {}
            (Some(n), Some(Some(e))) if n.is_subset(e) => {
                n_failed += n.len();
                n_excluded += n.len();
            }
            (Some(n), _) => {
                n_failed += n.len();
                unexpected.push(format!("{file}: {n:?}"));
            }
            (None, _) => unexpected.push(format!("{file}: died or planned wrong")),
        }
    }
    eprintln!(
        "pjdfstest on the mount: {} of {total} assertions passed, {n_failed} failed ({n_excluded} of them excluded), in {:?}",
        total as usize - n_failed,
        start.elapsed()
    );
    drop(g);
    assert!(
        unexpected.is_empty(),
        "pjdfstest failures not in pjdfstest-excluded.txt:\n{}\n{out}",
        unexpected.join("\n")
    );
    assert!(o.status.success() || n_failed > 0, "{out}");
}

#[test]
fn fsx_finds_no_corruption() {
    let tools = need_tools!("cc");
    let (_scratch, dir) = build(&tools, "fsx");
    let mut g = mount_new("fsx", 64, MountConfig::default());
    let log = dir.join("log");
    std::fs::create_dir(&log).unwrap();
    for seed in ["1", "2", "3"] {
        let file = g.path(&format!("fsx-{seed}"));
        // Mapped reads and writes, fallocate, punch, zero, copy_range (the
        // default); collapse, insert, clone and dedupe ranges never reach
        // a FUSE file system: off.
        let o = Command::new(dir.join("fsx"))
            .args([
                "-q", "-N", "100000", "-S", seed, "-C", "-I", "-J", "-B", "-P",
            ])
            .arg(&log)
            .arg(&file)
            .output()
            .unwrap();
        let text =
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "fsx seed {seed}:\n{text}");
        // Every operation asked for is in use.
        for off in [
            "fallocate",
            "punch hole",
            "zero range",
            "copy range",
            "mapped",
        ] {
            assert!(
                !text.contains(&format!("does not support {off}")),
                "fsx turned {off} off:\n{text}"
            );
        }
    }
    g.unmount().unmount().expect("unmount");
    let report = daxfs::fsck::fsck(&*g.dev, &mut |_, _, _| {}).expect("fsck");
    assert!(report.is_clean(), "{report:?}");
}
