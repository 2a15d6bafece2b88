//! fsck of a damaged image (see `daxfs::fuzz::fuzz_fsck`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| daxfs::fuzz::fuzz_fsck(data));
