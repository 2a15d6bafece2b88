//! Mount of a damaged image, then use and fsck (see `daxfs::fuzz::fuzz_mount`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| daxfs::fuzz::fuzz_mount(data));
