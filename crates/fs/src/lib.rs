//! daxfs: the file system.
