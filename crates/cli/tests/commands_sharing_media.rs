//! End-to-end tests of the sharing and media-error commands of `daxfs`.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Scratch(PathBuf);
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(name: &str) -> Scratch {
    let d = std::env::temp_dir().join(format!("daxfs-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    Scratch(d)
}

fn daxfs(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_daxfs"))
        .args(args)
        .output()
        .expect("run daxfs")
}

fn ok(args: &[&str]) -> String {
    let o = daxfs(args);
    assert!(
        o.status.success(),
        "daxfs {args:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn img(d: &Path) -> String {
    let p = d.join("pool.img");
    ok(&["mkfs", p.to_str().unwrap(), "--size", "64m"]);
    p.to_str().unwrap().to_string()
}

fn physical_of(image: &str, path: &str) -> u64 {
    let rows: serde_json::Value = serde_json::from_str(&ok(&["fsmap", image, "--json"])).unwrap();
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| {
            r["owner"]["paths"]
                .as_array()
                .is_some_and(|p| p.iter().any(|x| x == path))
                && r["owner"]["fork"] == "data"
        })
        .expect("a data row")["physical"]
        .as_u64()
        .unwrap()
}

#[test]
fn reflink_dedupe_copy_range_funshare_and_fsmap() {
    let d = scratch("share");
    let im = img(&d.0);
    let out = ok(&[
        "io",
        &im,
        "-c",
        "open -c /a",
        "-c",
        "pwrite -S 0x61 0 64k",
        "-c",
        "open -c /b",
        "-c",
        "reflink /a",
        "-c",
        "fiemap",
    ]);
    assert!(
        out.contains("linked 65536/65536 bytes at offset 0"),
        "{out}"
    );
    assert!(out.contains("shared"), "{out}");
    let out = ok(&[
        "io",
        &im,
        "-c",
        "open -c /c",
        "-c",
        "pwrite -S 0x61 0 64k",
        "-c",
        "dedupe /a 0 0 64k",
    ]);
    assert!(out.contains("deduped 65536/65536"), "{out}");
    let out = ok(&[
        "io",
        &im,
        "-c",
        "open -c /e",
        "-c",
        "pwrite -S 0x62 0 64k",
        "-c",
        "dedupe /a 0 0 64k",
    ]);
    assert!(out.contains("Extents did not match."), "{out}");
    let out = ok(&[
        "io",
        &im,
        "-c",
        "open -c /d",
        "-c",
        "copy_range /a",
        "-c",
        "open /b",
        "-c",
        "funshare 0 64k",
        "-c",
        "fiemap",
    ]);
    assert!(out.contains("copied 65536/65536"), "{out}");
    assert!(!out.lines().last().unwrap().contains("shared"), "{out}");
    // cp --reflink, then fsmap: /a, /c, /d and /f share the block.
    ok(&["cp", "--reflink", &im, "/a", "/f"]);
    let p = physical_of(&im, "/a");
    let rows: serde_json::Value = serde_json::from_str(&ok(&[
        "fsmap",
        &im,
        &p.to_string(),
        &(p + 4096).to_string(),
        "--json",
    ]))
    .unwrap();
    let owners: Vec<String> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["owner"]["paths"][0].as_str().unwrap_or("").to_string())
        .collect();
    for want in ["/a", "/c", "/d", "/f"] {
        assert!(
            owners.iter().any(|o| o == want),
            "{want} missing from {owners:?}"
        );
    }
    assert!(
        rows.as_array().unwrap().iter().all(|r| r["flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "shared"))
    );
    let text = ok(&["fsmap", &im]);
    assert!(
        text.contains("superblock")
            && text.contains("free space")
            && text.contains("reverse-map tree"),
        "{text}"
    );
    assert!(ok(&["fsck", &im]).starts_with("clean"));
    // Errors keep Linux's errno.
    let o = daxfs(&[
        "io",
        &im,
        "-c",
        "open /b",
        "-c",
        "reflink /a 37 59 23",
        "-c",
        "stat",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("reflink:") && err.contains("(EINVAL)"),
        "{err}"
    );
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("stat.ino"),
        "later commands must not run"
    );
}

#[test]
fn media_errors_from_injection_to_clearing() {
    let d = scratch("media");
    let im = img(&d.0);
    ok(&[
        "io",
        &im,
        "-c",
        "open -c /a",
        "-c",
        "pwrite -S 0x61 0 64k",
        "-c",
        "open -c /b",
        "-c",
        "reflink /a",
    ]);
    let p = physical_of(&im, "/a");
    // inject-error prints every owner and the action for each.
    let out = ok(&["io", &im, "-c", &format!("inject-error {p} 4k")]);
    assert!(
        out.contains("/a") && out.contains("/b") && out.matches("data lost").count() == 2,
        "{out}"
    );
    // The emulated hardware remembers it (sidecar in sysfs format).
    let sidecar = std::fs::read_to_string(format!("{im}.badblocks")).unwrap();
    assert_eq!(sidecar.trim(), format!("{} 8", p / 512));
    // Reads of the lost range fail with EIO, in both files, after remount.
    for f in ["/a", "/b"] {
        let o = daxfs(&["io", &im, "-c", &format!("open -r {f}"), "-c", "pread 0 4k"]);
        assert!(String::from_utf8_lossy(&o.stderr).contains("(EIO)"), "{f}");
    }
    // errors: the files that lost data first, then the log.
    let out = ok(&["errors", &im]);
    let first = out.lines().next().unwrap();
    assert_eq!(first, "files that lost data:", "{out}");
    assert!(
        out.contains("/a (inode") && out.contains("/b (inode"),
        "{out}"
    );
    // The block's two owners are one entry of the log, a line each.
    assert!(out.contains("error log (1 entry, 2 owners):"), "{out}");
    assert_eq!(out.matches("  #0 event 0 ").count(), 2, "{out}");
    let j: serde_json::Value = serde_json::from_str(&ok(&["errors", &im, "--json"])).unwrap();
    assert_eq!(j["lost"].as_array().unwrap().len(), 2);
    let log = j["log"].as_array().unwrap();
    assert_eq!(log.len(), 2, "remounts do not repeat the event");
    assert!(log.iter().all(|e| e["seq"] == 0), "{log:?}");
    // badblocks lists the range with its owners.
    let j: serde_json::Value = serde_json::from_str(&ok(&["badblocks", &im, "--json"])).unwrap();
    assert_eq!(j["badblocks"][0]["byte_offset"].as_u64().unwrap(), p);
    assert_eq!(j["badblocks"][0]["offset"].as_u64().unwrap(), p / 512);
    assert_eq!(j["badblocks"][0]["owners"].as_array().unwrap().len(), 2);
    // scrub reports the data still lost and exits non-zero.
    let o = daxfs(&["scrub", &im, "--data"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("lost data"));
    // Overwriting the whole block in each file ends the losses; scrub is clean.
    ok(&[
        "io",
        &im,
        "-c",
        "open /a",
        "-c",
        "pwrite -S 0x63 0 4k",
        "-c",
        "open /b",
        "-c",
        "pwrite -S 0x64 0 4k",
    ]);
    assert!(ok(&["scrub", &im, "--data"]).starts_with("clean"));
    // The bad memory stays quarantined until cleared.
    let out = ok(&["fsmap", &im, &p.to_string(), &(p + 4096).to_string()]);
    assert!(out.contains("quarantined"), "{out}");
    ok(&["clear-error", &im, &p.to_string(), "4k"]);
    assert!(ok(&["badblocks", &im]).contains("no bad ranges"));
    assert!(
        !Path::new(&format!("{im}.badblocks")).exists(),
        "the sidecar goes with the last bad range"
    );
    assert!(ok(&["fsck", &im]).starts_with("clean"));
}

#[test]
fn badblocks_import_of_sysfs_and_ndctl_lists() {
    let d = scratch("import");
    let im = img(&d.0);
    ok(&["io", &im, "-c", "open -c /a", "-c", "pwrite -S 0x61 0 64k"]);
    let p = physical_of(&im, "/a");
    let list = d.0.join("list.txt");
    std::fs::write(&list, format!("{} 8\n", p / 512 + 8)).unwrap();
    let out = ok(&["badblocks", &im, "--import", list.to_str().unwrap()]);
    assert!(
        out.contains("imported 1 range from") && out.contains("data lost"),
        "{out}"
    );
    let json = d.0.join("list.json");
    std::fs::write(&json, format!(r#"{{"dev":"namespace0.0","badblock_count":8,"badblocks":[{{"offset":{},"length":8,"dimms":["nmem0"]}}]}}"#, p / 512 + 24)).unwrap();
    let j: serde_json::Value = serde_json::from_str(&ok(&[
        "badblocks",
        &im,
        "--import",
        json.to_str().unwrap(),
        "--json",
    ]))
    .unwrap();
    assert_eq!(j["badblocks"].as_array().unwrap().len(), 2);
    let o = daxfs(&["badblocks", &im, "--import", "/nonexistent-list"]);
    assert!(!o.status.success());
    std::fs::write(&list, "12 not-a-number\n").unwrap();
    let o = daxfs(&["badblocks", &im, "--import", list.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("line 1"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `put` of a 100 KB file, then a report of the 1 MiB at 0x100000 (the
/// log's last block, the first tree nodes, the file, free space): fsmap of
/// the range shows no metadata (nothing the report made landed there, what
/// was there moved), scrub moves nothing more, and clear-error of the range
/// succeeds; fsck is clean.
#[test]
fn a_reported_range_holds_no_metadata_and_clears() {
    use std::io::Write;
    use std::process::Stdio;
    let d = scratch("range");
    let im = img(&d.0);
    let mut put = Command::new(env!("CARGO_BIN_EXE_daxfs"))
        .args(["put", &im, "/f"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    put.stdin
        .take()
        .unwrap()
        .write_all(&[7u8; 100 * 1024])
        .unwrap();
    assert!(put.wait().unwrap().success());
    let range = ["0x100000", "0x200000"];
    let before = ok(&["fsmap", &im, range[0], range[1]]);
    assert!(before.contains("metadata"), "{before}");
    ok(&["io", &im, "-c", "inject-error 0x100000 1m"]);
    let after = ok(&["fsmap", &im, range[0], range[1]]);
    assert!(!after.contains("metadata"), "{after}");
    // The file lost its data: scrub says so (exit 1) and moves nothing.
    let o = daxfs(&["scrub", &im]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("lost data"));
    ok(&["clear-error", &im, "0x100000", "1m"]);
    assert!(ok(&["badblocks", &im]).contains("no bad ranges"));
    assert!(ok(&["fsck", &im]).starts_with("clean"));
}
