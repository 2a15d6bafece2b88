//! B+tree nodes from arbitrary bytes (see `daxfs_btree::fuzz::fuzz_node_bytes`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| daxfs_btree::fuzz::fuzz_node_bytes(data));
