//! The extended-attribute commands of `daxfs io`, run as a separate process
//! on an image file.
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_daxfs");

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn setfattr_getfattr_rmfattr() {
    let dir = std::env::temp_dir().join(format!("daxfs-cli-xattr-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let img = dir.join("a.img").display().to_string();
    assert!(run(&["mkfs", &img, "--size", "8m"]).status.success());
    let io = |cmds: &[&str]| {
        let mut a = vec!["io", img.as_str()];
        for c in cmds {
            a.extend(["-c", c]);
        }
        run(&a)
    };
    let o = io(&[
        "open -c /f",
        "setfattr /f user.color blue",
        "setfattr /f trusted.raw 0x00ff",
        "getfattr /f user.color",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "\"blue\"\n");
    // Kept on the image; every attribute printed by name.
    let o = io(&["getfattr /f"]);
    assert_eq!(text(&o.stdout), "trusted.raw=0x00ff\nuser.color=\"blue\"\n");
    // Linux's errnos, on standard error.
    let o = io(&["setfattr -c /f user.color red"]);
    assert!(!o.status.success());
    assert_eq!(
        text(&o.stderr).trim(),
        "setfattr: user.color: file exists (EEXIST)"
    );
    let o = io(&["getfattr /f user.none"]);
    assert_eq!(
        text(&o.stderr).trim(),
        "getfattr: user.none: no such attribute (ENODATA)"
    );
    let o = io(&["setfattr /f other.x v"]);
    assert!(
        text(&o.stderr).contains("(EOPNOTSUPP)"),
        "{}",
        text(&o.stderr)
    );
    let o = io(&["rmfattr /f user.color", "getfattr /f"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "trusted.raw=0x00ff\n");
    let o = io(&["rmfattr /f user.color"]);
    assert!(text(&o.stderr).contains("(ENODATA)"), "{}", text(&o.stderr));
    assert!(run(&["fsck", &img]).status.success());
    let _ = std::fs::remove_dir_all(&dir);
}
