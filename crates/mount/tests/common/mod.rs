//! Mounting for tests: a guard that unmounts even when the test panics, and
//! a skip (printed, not a pass) where FUSE cannot be used.
#![allow(dead_code)]
use daxfs::{Fs, MkfsOptions, MountOptions};
use daxfs_device::{Device, MemDevice};
use daxfs_mount::{MountConfig, Mounted};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why FUSE tests cannot run here, if they cannot.
pub fn fuse_unavailable() -> Option<&'static str> {
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse is missing");
    }
    if !rustix::process::geteuid().is_root() {
        return Some("mounting needs root");
    }
    None
}

/// Skips the test (returning from it) with a printed reason.
#[macro_export]
macro_rules! need_fuse {
    () => {
        if let Some(why) = common::fuse_unavailable() {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
}

pub struct Guard {
    pub dev: Arc<dyn Device>,
    pub fs: Option<Arc<Fs>>,
    pub mounted: Option<Mounted>,
    pub mp: PathBuf,
}

impl Guard {
    pub fn path(&self, p: &str) -> PathBuf {
        self.mp.join(p)
    }

    /// Unmounts and returns the daxfs, every FUSE handle closed.
    pub fn unmount(&mut self) -> Fs {
        self.mounted.take().unwrap().unmount().expect("unmount");
        let fs = self.fs.take().unwrap();
        Arc::try_unwrap(fs).expect("no other holder of the Fs")
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(m) = self.mounted.take()
            && m.unmount().is_err()
        {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.mp)
                .status();
        }
        let _ = std::fs::remove_dir(&self.mp);
    }
}

fn scratch(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("daxfs-mnt-{}-{name}", std::process::id()));
    let _ = std::fs::create_dir_all(&p);
    p
}

/// A fresh daxfs of `mib` MiB in memory, mounted.
pub fn mount_new(name: &str, mib: u64, cfg: MountConfig) -> Guard {
    let dev: Arc<dyn Device> = Arc::new(MemDevice::new(mib << 20));
    Fs::mkfs(dev.clone(), &MkfsOptions::default()).expect("mkfs");
    mount_dev(name, dev, cfg)
}

/// Mounts the daxfs on `dev`.
pub fn mount_dev(name: &str, dev: Arc<dyn Device>, cfg: MountConfig) -> Guard {
    let fs = Arc::new(Fs::mount(dev.clone(), &MountOptions::default()).expect("mount"));
    let mp = scratch(name);
    let mounted = daxfs_mount::spawn(fs.clone(), &mp, &cfg).expect("FUSE mount");
    Guard {
        dev,
        fs: Some(fs),
        mounted: Some(mounted),
        mp,
    }
}

pub fn errno<T>(r: std::io::Result<T>) -> i32 {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.raw_os_error().expect("an OS error"),
    }
}
