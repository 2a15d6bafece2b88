//! The committed header `include/daxfs.h` is what cbindgen makes of
//! src/lib.rs now. To rewrite it after changing the API:
//! `DAXFS_UPDATE_HEADER=1 cargo test -p daxfs-capi --test header`.
use std::path::Path;

#[test]
fn committed_header_matches_the_source() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config =
        cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("reading cbindgen.toml");
    let mut made = Vec::new();
    cbindgen::Builder::new()
        .with_config(config)
        .with_src(dir.join("src/lib.rs"))
        .generate()
        .expect("cbindgen could not generate the header")
        .write(&mut made);
    let path = dir.join("include/daxfs.h");
    if std::env::var_os("DAXFS_UPDATE_HEADER").is_some() {
        std::fs::write(&path, &made).expect("writing include/daxfs.h");
        return;
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == made,
        "include/daxfs.h differs from what cbindgen generates from src/lib.rs: \
         run `DAXFS_UPDATE_HEADER=1 cargo test -p daxfs-capi --test header` and commit it"
    );
}
