//! `daxfs bench reflink` runs, reports every figure, and cleans up after
//! itself. The XFS peer is left out (it needs root, xfsprogs and a loop
//! device), and timings are never asserted: only the shape of the output.
use std::path::PathBuf;
use std::process::{Command, Output};

const FIGURES: &[&str] = &[
    "memcpy_bw",
    "memcpy_file",
    "daxfs_clone_contig",
    "daxfs_clone_extents",
    "daxfs_cow_overwrite",
    "daxfs_unshared_overwrite",
    "daxfs_owner_query",
    "daxfs_fsmap",
    "daxfs_clone_contig_nosync",
    "daxfs_owner_query_single",
];

/// An empty directory of its own, so the test can check nothing is left.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let p = base.join(format!("daxfs-rbench-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn bench(dir: &TempDir, extra: &[&str]) -> Output {
    // Smaller than --quick alone, so the test stays fast in a debug build.
    Command::new(env!("CARGO_BIN_EXE_daxfs"))
        .args(["bench", "reflink", "--quick", "--no-peer", "--size", "4m"])
        .args(["--extents", "64", "--owners", "40", "--ops", "64"])
        .args(["--clones", "2", "--dir"])
        .arg(&dir.0)
        .args(extra)
        .output()
        .unwrap()
}

fn ok(dir: &TempDir, out: &Output) -> String {
    assert!(
        out.status.success(),
        "bench reflink failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let left: Vec<_> = std::fs::read_dir(&dir.0).unwrap().collect();
    assert!(left.is_empty(), "bench reflink left files behind: {left:?}");
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn json_has_every_figure_with_positive_values() {
    let dir = TempDir::new("json");
    let out = bench(&dir, &["--json"]);
    let text = ok(&dir, &out);
    let doc: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON document");
    let figs = doc["figures"].as_array().expect("figures array");
    for name in FIGURES {
        let f = figs
            .iter()
            .find(|f| f["name"] == *name)
            .unwrap_or_else(|| panic!("figure {name} missing from {text}"));
        let v = f["value"].as_f64().unwrap_or(-1.0);
        assert!(v.is_finite() && v > 0.0, "{name}: value {v}");
        assert!(f["unit"].is_string(), "{name}: unit");
    }
    assert_eq!(figs.len(), FIGURES.len(), "unexpected figures in {text}");
    // Without the peer only the owner query's absolute target is judged;
    // the others are stated, not judged.
    let owner = figs
        .iter()
        .find(|f| f["name"] == "daxfs_owner_query")
        .unwrap();
    assert!(owner["pass"].is_boolean(), "{owner}");
    let clone = figs
        .iter()
        .find(|f| f["name"] == "daxfs_clone_contig")
        .unwrap();
    assert!(clone["target"].is_string() && clone["pass"].is_null());
    assert_eq!(doc["config"]["peer_ran"], false);
    assert!(
        doc["config"]["peer"]
            .as_str()
            .unwrap()
            .contains("XFS peer skipped: --no-peer")
    );
    assert_eq!(doc["config"]["owners"], 40);
    assert_eq!(doc["config"]["extents"], 64);
    // The reason goes to stderr, keeping stdout one JSON document.
    assert!(String::from_utf8_lossy(&out.stderr).contains("XFS peer skipped"));
}

#[test]
fn text_says_the_peer_was_skipped() {
    let dir = TempDir::new("text");
    let out = bench(&dir, &[]);
    let text = ok(&dir, &out);
    for line in [
        "XFS peer skipped: --no-peer",
        "memcpy bandwidth",
        "clone file of 64 extents",
        "owners (by inode) of a block shared 40 ways",
        "fsmap, whole device",
        "targets (informational)",
    ] {
        assert!(text.contains(line), "no {line:?} in:\n{text}");
    }
}

#[test]
fn bad_options_fail() {
    let dir = TempDir::new("bad");
    for extra in [&["--owners", "1"][..], &["--size", "100k"]] {
        let out = bench(&dir, extra);
        assert!(!out.status.success(), "{extra:?} was accepted");
    }
    // The default benchmark's options do not mix with the sub-mode.
    let out = Command::new(env!("CARGO_BIN_EXE_daxfs"))
        .args(["bench", "--quick", "reflink"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}
