//! Journal replay of a damaged log (see `daxfs::fuzz::fuzz_journal`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| daxfs::fuzz::fuzz_journal(data));
