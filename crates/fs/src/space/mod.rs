//! Space management: the free-space allocator (and, with sharing, refcounts
//! and the reverse map).
pub mod alloc;
