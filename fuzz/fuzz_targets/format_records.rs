//! Record and key decoding (see `daxfs_format::fuzz::fuzz_records`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| daxfs_format::fuzz::fuzz_records(data));
