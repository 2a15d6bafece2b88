//! `daxfs demo`: the main job on a default image. Makes a file system, uses
//! every core feature, remounts, verifies every byte, and runs fsck.
use crate::out::outln;
use anyhow::{Context, Result, ensure};
use daxfs::{FallocFlags, Fs, MkfsOptions, MountOptions, OpenOptions};
use daxfs_device::{Device, MmapDevice};
use std::path::Path;
use std::sync::Arc;

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn step(what: &str) -> Result<()> {
    outln!("== {what}");
    Ok(())
}

/// Runs the tour on `image` (created, or re-made, with `size` bytes).
pub fn run(image: &Path, size: u64, opts: daxfs_device::OpenOptions) -> Result<()> {
    if image.exists() {
        std::fs::remove_file(image).with_context(|| format!("removing old {}", image.display()))?;
    }
    step(&format!("mkfs {} ({} MiB)", image.display(), size >> 20))?;
    let dev: Arc<dyn Device> = Arc::new(MmapDevice::create(image, size, opts)?);
    Fs::mkfs(
        dev.clone(),
        &MkfsOptions {
            label: "demo".into(),
            ..Default::default()
        },
    )?;
    let fs = Fs::mount(dev.clone(), &MountOptions::default())?;
    outln!("   persistence: {}", fs.info().persistence);

    step("directories, files, links")?;
    fs.mkdir("/projects", 0o755)?;
    fs.mkdir("/projects/alpha", 0o755)?;
    let big = pattern(1, 8 << 20);
    let f = fs.create("/projects/alpha/data.bin")?;
    f.write_at(0, &big)?;
    f.fsync()?;
    outln!(
        "   wrote 8 MiB; extents: {:?}",
        f.fiemap()?
            .iter()
            .map(|e| (e.logical, e.physical, e.length))
            .collect::<Vec<_>>()
    );
    drop(f);
    for i in 0..100 {
        let f = fs.create(format!("/projects/note-{i:03}.txt"))?;
        f.write_at(0, format!("note {i}\n").as_bytes())?;
    }
    fs.link("/projects/note-000.txt", "/projects/alpha/note-link")?;
    fs.symlink("alpha/data.bin", "/projects/latest")?;
    fs.rename("/projects/note-099.txt", "/projects/alpha/moved.txt")?;
    fs.unlink("/projects/note-098.txt")?;
    outln!(
        "   /projects holds {} entries",
        fs.readdir("/projects")?.len()
    );

    step("sparse file, fallocate, punch, truncate")?;
    let s = fs.create("/sparse")?;
    s.write_at(64 << 20, b"end")?;
    s.fallocate(
        FallocFlags {
            keep_size: true,
            ..Default::default()
        },
        0,
        1 << 20,
    )?;
    s.write_at(4096, &[7u8; 8192])?;
    s.fallocate(
        FallocFlags {
            keep_size: true,
            punch_hole: true,
            ..Default::default()
        },
        4096,
        4096,
    )?;
    s.set_len(32 << 20)?;
    let st = s.stat();
    outln!("   size {} bytes, {} KiB allocated", st.size, st.blocks / 2);
    drop(s);

    step("remount and verify")?;
    drop(fs);
    let fs = Fs::mount(dev.clone(), &MountOptions::default())?;
    let f = fs.open("/projects/latest", &OpenOptions::read_only())?;
    let mut buf = vec![0u8; big.len()];
    ensure!(
        f.read_at(0, &mut buf)? == big.len() && buf == big,
        "8 MiB file differs after remount"
    );
    let s = fs.open("/sparse", &OpenOptions::read_only())?;
    let mut b = vec![1u8; 12288];
    s.read_at(4096, &mut b)?;
    ensure!(
        b[..4096].iter().all(|&x| x == 0) && b[4096..8192].iter().all(|&x| x == 7),
        "sparse file differs"
    );
    ensure!(
        fs.stat("/projects/alpha/note-link")?.nlink == 2,
        "hard link count"
    );
    outln!("   every byte verified");
    drop((f, s));

    step("fsck")?;
    drop(fs);
    let rep = daxfs::fsck::fsck(&*dev, &mut |_, _, _| {})?;
    for p in &rep.problems {
        outln!("   problem: {p}");
    }
    ensure!(rep.is_clean(), "fsck found {} problems", rep.problems.len());
    outln!(
        "   clean: {} inodes, {} data blocks, {} metadata blocks, {} free blocks",
        rep.inodes,
        rep.data_blocks,
        rep.metadata_blocks,
        rep.free_blocks
    );
    outln!(
        "demo done: the image stays at {}; try `daxfs io {} -c \"ls /projects\"`",
        image.display(),
        image.display()
    );
    Ok(())
}
