//! Space management: the free-space allocator, the refcount tree (how many
//! owners share each block) and the reverse map (who they are).
pub mod alloc;
pub mod badblocks;
pub mod refcount;
pub mod reserve;
pub mod rmap;
