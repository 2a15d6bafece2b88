//! Every `daxfs io` and `daxfs cp` example of README.md runs as written, in
//! order, on one scratch image, and succeeds; where the README shows what a
//! command prints (lines under it in the same block), the output must match
//! (`[..]` in a shown line matches any text, a line `...` any lines).
use std::path::PathBuf;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_daxfs");

/// (command, shown output lines) of every example, in README order.
fn examples(readme: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = vec![];
    let mut in_sh = false;
    let mut collecting = false;
    for line in readme.lines() {
        if line.starts_with("```") {
            in_sh = line == "```sh" && !in_sh;
            collecting = false;
            continue;
        }
        if !in_sh {
            continue;
        }
        if line.starts_with("daxfs io ") || line.starts_with("daxfs cp ") {
            out.push((line.to_string(), vec![]));
            collecting = true;
        } else if line.starts_with("daxfs ") {
            collecting = false;
        } else if collecting && let Some(last) = out.last_mut() {
            last.1.push(line.to_string());
        }
    }
    out
}

/// Does `got` match the shown line `want` (`[..]` matches any text)?
fn line_matches(want: &str, got: &str) -> bool {
    let parts: Vec<&str> = want.split("[..]").collect();
    if parts.len() == 1 {
        return want == got;
    }
    let Some(mut rest) = got.strip_prefix(parts[0]) else {
        return false;
    };
    let last = parts[parts.len() - 1];
    for p in &parts[1..parts.len() - 1] {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

fn output_matches(want: &[String], got: &[&str]) -> bool {
    match want.split_first() {
        None => got.is_empty(),
        Some((w, more)) if w == "..." => (0..=got.len()).any(|k| output_matches(more, &got[k..])),
        Some((w, more)) => {
            !got.is_empty() && line_matches(w, got[0]) && output_matches(more, &got[1..])
        }
    }
}

#[test]
fn readme_examples_run_as_written() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let ex = examples(&readme);
    assert!(ex.len() >= 10, "found only {} examples", ex.len());
    let dir: PathBuf = std::env::temp_dir().join(format!("daxfs-readme-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    // `daxfs` on PATH is the binary under test, with cache-line flushes
    // instead of msync so that the examples run fast.
    let wrapper = dir.join("bin/daxfs");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nexec '{BIN}' --assume-pmem \"$@\"\n"),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        dir.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let sh = |line: &str| {
        Command::new("sh")
            .arg("-c")
            .arg(line)
            .current_dir(&dir)
            .env("PATH", &path)
            .output()
            .unwrap()
    };
    let o = sh("daxfs mkfs pool.img --size 32m");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for (cmd, want) in &ex {
        let o = sh(cmd);
        let (out, err) = (
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
        );
        assert!(
            o.status.success(),
            "README example failed: {cmd}\nstdout:\n{out}\nstderr:\n{err}"
        );
        if !want.is_empty() {
            let got: Vec<&str> = out.lines().collect();
            assert!(
                output_matches(want, &got),
                "README example {cmd}\nshows:\n{}\nprints:\n{out}",
                want.join("\n")
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn shown_output_wildcards() {
    assert!(line_matches("a [..] b", "a xyz b"));
    assert!(line_matches("[..]", ""));
    assert!(!line_matches("a [..] b", "a xyz c"));
    assert!(!line_matches("ab[..]ba", "aba"));
    let w = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert!(output_matches(
        &w(&["x", "...", "z"]),
        &["x", "y", "y", "z"]
    ));
    assert!(!output_matches(&w(&["x", "z"]), &["x", "y", "z"]));
}
