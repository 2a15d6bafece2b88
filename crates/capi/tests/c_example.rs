//! The C example `examples/roundtrip.c`, compiled with `cc` against the
//! static library (libdaxfs.a, built by cargo from this test) and the
//! committed header, then run on a fresh image: it writes, clones, reads back and
//! checks a file, and checks the media-error callback.
use std::path::{Path, PathBuf};
use std::process::Command;

/// The static library, built now by cargo into the target directory this
/// test runs from (an integration test does not get a staticlib built).
fn static_lib() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/c_example-HASH
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let target_dir = profile_dir.parent().expect("the target directory");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args([
            "build",
            "--profile",
            "test",
            "-p",
            "daxfs-capi",
            "--target-dir",
        ])
        .arg(target_dir)
        .status()
        .unwrap_or_else(|e| panic!("cannot run `{cargo} build -p daxfs-capi`: {e}"));
    assert!(status.success(), "`cargo build -p daxfs-capi` failed");
    let lib = target_dir.join("debug/libdaxfs.a");
    assert!(lib.is_file(), "cargo built no {}", lib.display());
    lib
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("daxfs-capi-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("making a scratch directory");
    d
}

#[test]
fn roundtrip_c_example_compiles_and_runs() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = scratch("roundtrip");
    let exe = tmp.join("roundtrip");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .arg("-std=c11")
        .arg("-Wall")
        .arg("-Wextra")
        .arg("-Werror")
        .arg("-I")
        .arg(dir.join("include"))
        .arg(dir.join("examples/roundtrip.c"))
        .arg(static_lib())
        .args(["-lpthread", "-ldl", "-lm", "-o"])
        .arg(&exe)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run the C compiler `{cc}` ({e}): install one (e.g. apt-get install gcc)")
        });
    assert!(
        out.status.success(),
        "compiling examples/roundtrip.c failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let image = tmp.join("roundtrip.img");
    let run = Command::new(&exe)
        .arg(&image)
        .output()
        .expect("running roundtrip");
    let _ = std::fs::remove_dir_all(&tmp);
    assert!(
        run.status.success(),
        "roundtrip failed ({}):\n{}{}",
        run.status,
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&run.stdout), "roundtrip: ok\n");
}
