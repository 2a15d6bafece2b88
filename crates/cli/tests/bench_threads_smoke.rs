//! `daxfs bench threads` runs, reports every workload at every thread
//! count with its ratio to one thread, and cleans up after itself. Timings
//! are never asserted: only the shape.
use std::path::PathBuf;
use std::process::Command;

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn json_has_every_workload_and_leaves_nothing() {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = TempDir(base.join(format!("daxfs-tbench-test-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir(&dir.0).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_daxfs"))
        .args(["bench", "threads", "--quick", "--json", "--files", "100"])
        .args(["--ms", "20", "--threads", "3", "--dir"])
        .arg(&dir.0)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bench threads failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let left: Vec<_> = std::fs::read_dir(&dir.0).unwrap().collect();
    assert!(left.is_empty(), "bench threads left files behind: {left:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let doc: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON document");
    assert!(doc["config"]["cores"].as_u64().unwrap() >= 1);
    assert_eq!(doc["config"]["threads"], serde_json::json!([1, 2, 3]));
    let figs = doc["figures"].as_array().expect("figures array");
    // The machine's ceiling, beside which the read ratios are printed.
    assert!(doc["config"]["ceiling_ratio_2t"].as_f64().unwrap() > 0.0);
    for w in [
        "ceiling",
        "getattr",
        "lookup",
        "create_own_dir",
        "create_shared_dir",
        "overwrite_4k",
    ] {
        for t in [1, 2, 3] {
            let name = format!("{w}_{t}t");
            let f = figs
                .iter()
                .find(|f| f["name"] == name.as_str())
                .unwrap_or_else(|| panic!("no figure {name}"));
            assert!(f["value"].as_f64().unwrap() > 0.0, "{name}: {f}");
            if t > 1 {
                assert_eq!(f["ratio_to"], format!("{w}_1t").as_str(), "{name}");
            }
        }
    }
}
