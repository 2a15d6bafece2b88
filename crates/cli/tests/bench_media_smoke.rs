//! `daxfs bench media` runs, reports every figure, checks that each report
//! handled exactly the owners of the shared block (it fails otherwise), and
//! cleans up after itself. Timings are never asserted: only the shape.
use std::path::PathBuf;
use std::process::Command;

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let p = base.join(format!("daxfs-mbench-test-{tag}-{}", std::process::id()));
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

#[test]
fn json_has_every_figure_and_leaves_nothing() {
    let dir = TempDir::new("json");
    let out = Command::new(env!("CARGO_BIN_EXE_daxfs"))
        .args(["bench", "media", "--quick", "--json", "--owners", "1,30"])
        .args(["--reports", "2", "--files", "20", "--size", "2m", "--dir"])
        .arg(&dir.0)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bench media failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let left: Vec<_> = std::fs::read_dir(&dir.0).unwrap().collect();
    assert!(left.is_empty(), "bench media left files behind: {left:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let doc: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON document");
    let figs = doc["figures"].as_array().expect("figures array");
    let mut names = vec![];
    for n in [1, 30] {
        names.push(format!("handle_{n}_owners_p50"));
        names.push(format!("paths_{n}_owners"));
    }
    for w in ["alloc_write", "create_fsync_p50", "append_4k_p50"] {
        for c in ["full", "no_replicas", "no_rmap"] {
            names.push(format!("{w}_{c}"));
        }
    }
    for name in &names {
        let f = figs
            .iter()
            .find(|f| f["name"] == name.as_str())
            .unwrap_or_else(|| panic!("figure {name} missing from {text}"));
        let v = f["value"].as_f64().unwrap_or(-1.0);
        assert!(v.is_finite() && v > 0.0, "{name}: value {v}");
    }
    // The costs are given as ratios to the configuration without the part.
    for (name, to) in [
        ("create_fsync_p50_full", "create_fsync_p50_no_replicas"),
        ("create_fsync_p50_no_replicas", "create_fsync_p50_no_rmap"),
    ] {
        let f = figs.iter().find(|f| f["name"] == name).unwrap();
        assert_eq!(f["ratio_to"], to, "{name}");
        assert!(f["pass"].is_boolean(), "{name}: target checked");
    }
}

#[test]
fn bad_arguments_are_named() {
    let out = Command::new(env!("CARGO_BIN_EXE_daxfs"))
        .args(["bench", "media", "--owners", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--owners"), "{err}");
}
