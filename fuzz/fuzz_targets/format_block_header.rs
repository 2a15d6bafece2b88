//! Block header verification (see `daxfs_format::fuzz::fuzz_block_header`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| daxfs_format::fuzz::fuzz_block_header(data));
