//! daxfs: a crash-consistent file system for byte-addressable memory.
//!
//! Layers, bottom up (each a module or crate of its own):
//! - `daxfs-device`: the mapped device, persistence, emulated media errors;
//! - `daxfs-format`: on-media structs and checksums;
//! - `daxfs-btree`: the one B+tree all indexes use;
//! - [`journal`] and [`tx`]: atomic, durable metadata transactions;
//! - [`space`]: the free-space allocator;
//! - [`inode`], [`extents`], [`dir`], [`namespace`], [`file`]: files and directories;
//! - [`ops`]: the inode-number API (lookup, getattr, create, rename, ... by
//!   directory inode and name), which the path API in [`namespace`] calls;
//! - [`replica`]: metadata replicas and their repair;
//! - [`views`]: mmap views, file pages mapped straight from the device;
//! - [`fsck`]: the consistency checker ([`counters`]: the superblock's counters
//!   against the trees, for fsck and mount).
pub mod counters;
pub mod dir;
pub mod error;
pub mod events;
pub mod extents;
pub mod file;
mod fresh;
pub mod fs;
pub mod fsck;
#[cfg(any(test, feature = "fuzz"))]
pub mod fuzz;
pub(crate) mod group;
pub(crate) mod icache;
mod in_place;
pub mod inode;
pub mod journal;
pub mod media;
pub mod namespace;
pub mod ops;
pub mod reads;
pub mod reflink;
pub mod replica;
mod snapshot;
pub mod space;
pub mod tx;
pub mod views;
pub mod write;
pub mod xattr;

pub use dir::DirEntry;
pub use error::{FsError, Result};
pub use file::{FallocFlags, FiemapExtent, File, OpenOptions};
pub use fs::{Fs, FsInfo, MkfsOptions, MountOptions};
pub use inode::FileKind;
pub use media::{ErrorLogEntry, FailureEvent, FailureFlags, Imported, LossNotice};
pub use namespace::Stat;
pub use ops::{
    Ino, InoHold, LINK_MAX, RenameFlags, SetAttr, SetTime, StatFs, decode_dev, encode_dev,
};
pub use reflink::{DedupeResult, DedupeStatus, OwnerKind, OwnerRecord};
pub use replica::{ReplicaPair, ReplicaScrub};
pub use views::{Access, PageState, View, ViewStats};
pub use xattr::{XATTR_CREATE, XATTR_REPLACE};
