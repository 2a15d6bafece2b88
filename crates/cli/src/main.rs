//! The `daxfs` command.
mod args;
mod bench;
mod control;
mod control_server;
mod demo;
mod errors;
mod export;
mod fsmap;
mod import;
mod io;
mod mount_cmd;
mod mpaths;
mod out;
mod safe;
mod shellcmds;

use anyhow::{Context, Result, bail};
use clap::{CommandFactory, Parser, Subcommand};
use daxfs::{Fs, MkfsOptions, MountOptions, OpenOptions};
use daxfs_device::{Device, MmapDevice};
use out::{errln, outln};
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "daxfs",
    version,
    about = "A file system for byte-addressable memory (pmem, CXL, or an image file)"
)]
struct Cli {
    /// Treat the mapped memory as persistent: persist with cache-line flushes
    /// and fences instead of msync (for pmem, CXL or /dev/shm test images).
    #[arg(long, global = true)]
    assume_pmem: bool,
    /// Fill the page tables of the whole image when opening it
    /// (MADV_POPULATE_WRITE, as PMDK's prefault at open), so that no access
    /// pays a first-touch page fault. Allocates the holes of a sparse image.
    #[arg(long, global = true)]
    populate: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Make a new file system (creating IMAGE if it does not exist).
    Mkfs {
        /// The image file or device to make the file system on.
        image: PathBuf,
        /// Size of a new image file: k, m, g, t suffixes.
        #[arg(long)]
        size: Option<String>,
        /// Overwrite what IMAGE holds: a file system (daxfs, ext2/3/4, XFS,
        /// btrfs), swap, or any non-zero byte in its first 64 KiB, which
        /// mkfs otherwise refuses.
        #[arg(long)]
        force: bool,
        /// Metadata log size in 4 KiB blocks.
        #[arg(long)]
        log_blocks: Option<u64>,
        /// A name for the file system, up to 32 bytes.
        #[arg(long, default_value = "")]
        label: String,
        /// Do not keep a reverse map (owner queries, fsmap and media-error
        /// handling need it; this exists to measure its cost).
        #[arg(long)]
        no_rmap: bool,
        /// Do not keep replicas of metadata (a bad metadata block then shuts
        /// the file system down; this exists to measure their cost).
        #[arg(long)]
        no_replicas: bool,
        /// Copy this host directory tree in (as mke2fs -d).
        #[arg(long, value_name = "DIR")]
        from: Option<PathBuf>,
    },
    /// Copy a host directory tree in as the new directory DEST (default
    /// /NAME, NAME the host directory's), keeping modes, owners, times,
    /// symlinks, hard links and holes; on failure nothing is left.
    Import {
        /// The image file or device (/dev/daxX.Y, /dev/pmemX) holding the file system.
        image: PathBuf,
        /// The host directory to copy in.
        hostdir: PathBuf,
        /// The new daxfs directory to make (default: /NAME of HOSTDIR); must not exist.
        dest: Option<String>,
    },
    /// Copy the tree at SRC (default /) out to the new host directory
    /// HOSTDIR; ranges lost to media errors are skipped and reported
    /// (exit status 1 when any was).
    Export {
        /// The image file or device (/dev/daxX.Y, /dev/pmemX) holding the file system.
        image: PathBuf,
        /// [SRC] HOSTDIR
        #[arg(num_args = 1..=2, required = true, value_name = "[SRC] HOSTDIR")]
        paths: Vec<String>,
    },
    /// Show geometry, features, usage, format version and persistence mode.
    Info {
        /// The image file or device (/dev/daxX.Y, /dev/pmemX) holding the file system.
        image: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check every metadata structure, changing nothing. Exit status: 0
    /// clean, 4 problems found, 8 could not check, 16 usage error.
    Fsck {
        /// The image file or device (/dev/daxX.Y, /dev/pmemX) holding the file system.
        image: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run xfs_io-style commands (-c CMD, repeatable); without -c, read
    /// them from standard input (`#` starts a comment; exit 1 if any failed).
    #[command(after_help = format!("Commands:\n{}", io::HELP))]
    Io {
        /// The image file or device (/dev/daxX.Y, /dev/pmemX) holding the file system.
        image: PathBuf,
        /// A command to run (repeatable; `-c help` lists them).
        #[arg(short = 'c', value_name = "CMD")]
        commands: Vec<String>,
        /// Read-only: commands that would change the file system fail with EROFS.
        #[arg(short = 'r')]
        read_only: bool,
    },
    /// Copy standard input into a file (created, or replaced whole only
    /// once complete).
    Put {
        /// The image file or device (/dev/daxX.Y, /dev/pmemX) holding the file system.
        image: PathBuf,
        /// The file to write, a path inside the file system.
        path: String,
    },
    /// Write a file to standard output.
    Cat {
        /// The image file or device (/dev/daxX.Y, /dev/pmemX) holding the file system.
        image: PathBuf,
        /// The file to read, a path inside the file system.
        path: String,
    },
    /// The main job: make a file system on IMAGE (default daxfs.img), use
    /// every feature, remount, verify, fsck.
    Demo {
        /// The image to make [default: daxfs.img, which a later demo may
        /// re-make]. An existing IMAGE that holds a file system or data is
        /// refused without --force.
        image: Option<PathBuf>,
        /// Size of the image: k, m, g, t suffixes.
        #[arg(long, default_value = "256m")]
        size: String,
        /// Overwrite IMAGE whatever it holds.
        #[arg(long)]
        force: bool,
    },
    /// Every owner of a device range (default: the whole device): files by
    /// inode and path, metadata by kind, free space. START and END are device
    /// byte offsets.
    Fsmap {
        /// The image file or device (/dev/daxX.Y, /dev/pmemX) holding the file system.
        image: PathBuf,
        /// First device byte of the range [default: 0].
        start: Option<String>,
        /// Device byte after the range [default: the end of the device].
        end: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Copy a file inside the file system; with --reflink the copy shares
    /// the source's blocks until either is written. The destination is
    /// replaced only once the copy is complete.
    Cp {
        /// Share the source's blocks instead of copying them (FICLONE).
        #[arg(long)]
        reflink: bool,
        /// The image file or device (/dev/daxX.Y, /dev/pmemX) holding the file system.
        image: PathBuf,
        /// The file to copy.
        src: String,
        /// The new file (a file there is replaced; not a directory).
        dst: String,
    },
    /// The device's bad ranges and their owners; --import reads a list in
    /// the sysfs badblocks format or ndctl's JSON and reports it.
    Badblocks {
        /// The image file or device (/dev/daxX.Y, /dev/pmemX) holding the file system.
        image: PathBuf,
        /// A bad-block list to report: sysfs "sector count" lines, or
        /// ndctl's JSON (as `--json` prints it).
        #[arg(long, value_name = "FILE")]
        import: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The persistent error log; the files that lost data first.
    Errors {
        /// The image file or device (/dev/daxX.Y, /dev/pmemX) holding the file system.
        image: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Clear a media error: the recovery write makes the memory good again
    /// and unowned blocks return to free space. OFF and LEN are device bytes.
    ClearError {
        /// The image file or device (/dev/daxX.Y, /dev/pmemX) holding the file system.
        image: PathBuf,
        /// First device byte to clear, a multiple of 4096.
        off: String,
        /// Bytes to clear, a multiple of 4096.
        len: String,
    },
    /// Verify every metadata block; with --data also read every data block to
    /// find latent errors. Exit non-zero if anything is left unrepaired.
    Scrub {
        /// The image file or device (/dev/daxX.Y, /dev/pmemX) holding the file system.
        image: PathBuf,
        /// Also read every data block.
        #[arg(long)]
        data: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish or
    /// powershell) for the daxfs command to standard output.
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) of the daxfs command, or of one of its
    /// commands, to standard output.
    Man {
        /// The command whose page to print [default: the daxfs command].
        command: Option<String>,
    },
    /// Mount the file system through FUSE on MOUNTPOINT, an empty
    /// directory. The daemon goes to the background once the mount is
    /// ready; `umount MOUNTPOINT`, SIGTERM or SIGINT unmount it cleanly.
    Mount(mount_cmd::MountArgs),
    /// Measure daxfs against memcpy and tmpfs, on pmem-like images it creates and removes.
    ///
    /// `daxfs bench tracking [--scale S] [--out DIR]` instead measures the
    /// owner-tracking designs on daxfs and writes DIR/tracking.{md,svg,png}.
    Bench {
        /// `tracking`: the owner-tracking study (only --scale and --out apply).
        #[arg(value_parser = ["tracking"])]
        mode: Option<String>,
        /// tracking: workload scale, a fraction [default: 1/128].
        #[arg(long)]
        scale: Option<String>,
        /// tracking: output directory [default: docs].
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        args: bench::BenchArgs,
    },
    /// Hold IMAGE open and serve its control socket until SIGTERM, SIGINT
    /// or SIGHUP: meanwhile the commands given IMAGE run in this process.
    Serve {
        /// The image file or device (/dev/daxX.Y, /dev/pmemX) holding the file system.
        image: PathBuf,
    },
}

fn open_device(path: &Path, opts: daxfs_device::OpenOptions) -> Result<Arc<dyn Device>> {
    let dev =
        MmapDevice::open(path, opts).with_context(|| format!("opening {}", path.display()))?;
    Ok(Arc::new(dev))
}

/// The file system on `path`; for a client of the control socket, the one
/// its holder has open.
fn mount(path: &Path, pmem: daxfs_device::OpenOptions) -> Result<Arc<Fs>> {
    if let Some(fs) = control::online_fs() {
        return Ok(fs);
    }
    let dev = open_device(path, pmem)?;
    let fs = Fs::mount(dev, &MountOptions::default())
        .with_context(|| format!("mounting {}", path.display()))?;
    Ok(Arc::new(fs))
}

/// A byte count in binary units, one decimal: `8.0 MiB`.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// fsck's exit status when it found problems and left them (as e2fsck's 4).
const FSCK_PROBLEMS: i32 = 4;
/// fsck's exit status when it could not check (cannot open, not a daxfs).
const FSCK_FAILED: i32 = 8;
/// fsck's exit status for a usage error.
const FSCK_USAGE: i32 = 16;

fn main() {
    if mount_cmd::called_as_helper() {
        std::process::exit(mount_cmd::helper_main());
    }
    // Paths on a daxfs mount in the place of IMAGE: run in its daemon.
    let argv: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    match mpaths::rewrite(&argv) {
        Ok(Some(r)) => std::process::exit(on_mount(r)),
        Ok(None) => {}
        Err(e) => {
            eprintln!("daxfs: {e:#}");
            std::process::exit(1);
        }
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let usage = !matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            );
            // fsck's usage errors exit 16, as e2fsck's do.
            let fsck = std::env::args()
                .skip(1)
                .find(|a| !a.starts_with('-'))
                .is_some_and(|a| a == "fsck");
            if usage && fsck {
                e.print().ok();
                std::process::exit(FSCK_USAGE);
            }
            e.exit();
        }
    };
    let forward = control::forward_of(&cli);
    let fsck = matches!(cli.cmd, Cmd::Fsck { .. });
    let code = match run(cli) {
        Ok(code) => code,
        // The reader of standard output went away: stop quietly.
        Err(e) if out::is_closed(&e) => out::EXIT_CLOSED,
        Err(e) => {
            // IMAGE is in use: the command runs in the process that holds it.
            let online = match &forward {
                Some(f) if control::is_locked(&e) => control::forward(f),
                _ => Ok(None),
            };
            match online {
                Ok(Some(code)) => code,
                Err(e2) if out::is_closed(&e2) => out::EXIT_CLOSED,
                r => {
                    match r {
                        Err(e2) => eprintln!("daxfs: {}; {e2:#}", errors::report(&e)),
                        _ => eprintln!("daxfs: {}", errors::report(&e)),
                    }
                    if fsck { FSCK_FAILED } else { 1 }
                }
            }
        }
    };
    std::process::exit(code);
}

/// Runs a command given paths on a daxfs mount, rewritten to name its
/// image, in the mount's daemon.
fn on_mount(r: mpaths::Rewritten) -> i32 {
    if let Err(e) = Cli::try_parse_from(&r.argv) {
        e.exit();
    }
    let f = control::Forward {
        image: r.image.clone(),
        stdin: r.stream_stdin || r.stdin.is_some(),
        argv: Some(r.argv),
        stdin_data: r.stdin,
    };
    match control::forward(&f) {
        Ok(Some(code)) => code,
        Err(e) if out::is_closed(&e) => out::EXIT_CLOSED,
        Ok(None) => {
            eprintln!(
                "daxfs: the daxfs mount at {} ({}) has no daemon answering on its control socket",
                r.point.display(),
                r.image.display()
            );
            1
        }
        Err(e) => {
            eprintln!("daxfs: {e:#}");
            1
        }
    }
}

fn run(cli: Cli) -> Result<i32> {
    // How every command opens the device.
    let pmem = daxfs_device::OpenOptions::new()
        .assume_persistent(cli.assume_pmem)
        .populate(cli.populate);
    match cli.cmd {
        Cmd::Mount(a) => mount_cmd::run(a, cli.assume_pmem, cli.populate),
        Cmd::Mkfs {
            image,
            size,
            force,
            log_blocks,
            label,
            no_rmap,
            no_replicas,
            from,
        } => {
            if let Some(d) = &from {
                import::check_host_dir(d).context("mkfs --from")?;
            }
            let progress = std::io::stderr().is_terminal();
            let exists = image.exists();
            let dev: Arc<dyn Device> = match (&size, exists) {
                (Some(s), false) => {
                    let bytes = args::parse_size(s)?;
                    if progress {
                        eprintln!("creating image {} of {bytes} bytes", image.display());
                    }
                    let d = MmapDevice::create(&image, bytes, pmem)
                        .with_context(|| format!("creating {}", image.display()))?;
                    Arc::new(d)
                }
                (Some(s), true) => {
                    let bytes = args::parse_size(s)?;
                    let meta = std::fs::metadata(&image)?;
                    if meta.is_file() && meta.len() != bytes {
                        if !force {
                            bail!(
                                "{} exists with {} bytes, not {bytes}: use --force to resize it",
                                image.display(),
                                meta.len()
                            );
                        }
                        daxfs_device::create_image_file(&image, bytes).or_else(
                            |_| -> Result<()> {
                                std::fs::OpenOptions::new()
                                    .write(true)
                                    .open(&image)?
                                    .set_len(bytes)?;
                                Ok(())
                            },
                        )?;
                    }
                    open_device(&image, pmem)?
                }
                (None, true) => open_device(&image, pmem)?,
                (None, false) => bail!(
                    "{} does not exist: give --size to create it",
                    image.display()
                ),
            };
            if exists && !force {
                // Not over another file system, swap or data without --force.
                safe::refuse_to_overwrite(&image, &safe::probe(&image)?)?;
            }
            if progress {
                eprintln!("writing superblocks, log and root directory");
            }
            let made = Fs::mkfs(
                dev.clone(),
                &MkfsOptions {
                    force,
                    log_blocks,
                    label,
                    no_rmap,
                    no_replicas,
                    uuid: None,
                },
            );
            if made.is_err() && !exists {
                // Do not leave behind an image file this command created.
                let _ = std::fs::remove_file(&image);
            }
            made.with_context(|| format!("mkfs {}", image.display()))?;
            let fs = Fs::mount(dev, &MountOptions::default())?;
            if let Some(d) = &from {
                let c = import::import_root(&fs, d)?;
                fs.sync()?;
                outln!("{}", import::summary(&c));
            }
            let i = fs.info();
            outln!(
                "made daxfs on {}: {} blocks of {} bytes, log {} blocks, uuid {}, persistence {}",
                image.display(),
                i.total_blocks,
                i.block_size,
                i.log_blocks,
                i.uuid,
                i.persistence
            );
            Ok(0)
        }
        Cmd::Info { image, json } => {
            let fs = mount(&image, pmem)?;
            let i = fs.info();
            let sb = daxfs::fs::read_superblock(&**fs.device())?;
            let rmap = sb.incompat.get() & daxfs_format::superblock::INCOMPAT_RMAP != 0;
            let next_ino = sb.next_ino.get();
            let bs = i.block_size;
            if json {
                outln!(
                    "{{\"uuid\":{},\"replicas\":{},\"reverse_map\":{},\"next_inode\":{next_ino},\"label\":{},\"format_version\":{},\"block_size\":{},\"total_blocks\":{},\"free_blocks\":{},\"available_blocks\":{},\"reserved_blocks\":{},\"used_blocks\":{},\"inodes\":{},\"log_start\":{},\"log_blocks\":{},\"generation\":{},\"persistence\":{},\"device\":{},\"recovered_transaction\":{}}}",
                    json_str(&i.uuid),
                    i.replicas,
                    rmap,
                    json_str(&i.label),
                    i.format_version,
                    i.block_size,
                    i.total_blocks,
                    i.free_blocks,
                    i.available_blocks,
                    i.reserved_blocks,
                    i.total_blocks.saturating_sub(i.free_blocks),
                    i.inodes,
                    i.log_start,
                    i.log_blocks,
                    i.generation,
                    json_str(&i.persistence),
                    json_str(&i.device),
                    i.recovered
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "null".into())
                );
            } else {
                outln!("device:         {}", i.device);
                outln!("persistence:    {}", i.persistence);
                outln!("uuid:           {}", i.uuid);
                outln!("label:          {}", i.label);
                outln!("format version: {}", i.format_version);
                let features: Vec<&str> = [(i.replicas, "replicas"), (rmap, "reverse map")]
                    .iter()
                    .filter(|f| f.0)
                    .map(|f| f.1)
                    .collect();
                outln!(
                    "features:       {}",
                    if features.is_empty() {
                        "none".to_string()
                    } else {
                        features.join(", ")
                    }
                );
                outln!("block size:     {}", i.block_size);
                outln!(
                    "blocks:         {} ({} bytes), {}",
                    i.total_blocks,
                    i.total_blocks * bs,
                    human(i.total_blocks * bs)
                );
                let used = i.total_blocks.saturating_sub(i.free_blocks);
                let pct = |n: u64| 100.0 * n as f64 / i.total_blocks.max(1) as f64;
                outln!(
                    "used blocks:    {used} ({}, {:.1}%)",
                    human(used * bs),
                    pct(used)
                );
                outln!(
                    "free blocks:    {} ({}, {:.1}%)",
                    i.free_blocks,
                    human(i.free_blocks * bs),
                    pct(i.free_blocks)
                );
                outln!(
                    "available:      {} ({}: free less {} reserved for metadata)",
                    i.available_blocks,
                    human(i.available_blocks * bs),
                    i.reserved_blocks
                );
                outln!(
                    "inodes:         {} in use, next inode number {next_ino}",
                    i.inodes
                );
                outln!(
                    "log:            blocks {}..{}",
                    i.log_start,
                    i.log_start + i.log_blocks
                );
                outln!("generation:     {}", i.generation);
                if let Some(s) = i.recovered {
                    outln!("recovered:      replayed transaction {s} from the log");
                }
            }
            Ok(0)
        }
        Cmd::Fsck { image, json } => {
            // Exit status as e2fsck and xfs_repair -n: 0 clean, 4 problems
            // found and left, 8 could not check, 16 usage (in main).
            let check = || -> Result<i32> {
                // A client's check: of the holder's file system, in a
                // consistent state (changes wait for it), while no other
                // client's command runs.
                let online = control::online_fs();
                let dev = match &online {
                    Some(fs) => fs.device().clone(),
                    None => open_device(&image, pmem)?,
                };
                let tty = control::stderr_is_terminal() && !json;
                let mut last = std::time::Instant::now();
                let mut progress = |phase: &str, done: u64, total: u64| {
                    if tty && (last.elapsed().as_millis() > 200 || done == total) {
                        eprint!("\rfsck: {phase} {done}/{total}   ");
                        last = std::time::Instant::now();
                    }
                };
                let rep = match &online {
                    Some(fs) => fs.fsck_online(&mut progress)?,
                    None => daxfs::fsck::fsck(&*dev, &mut progress)?,
                };
                if tty {
                    eprintln!();
                }
                if json {
                    let probs: Vec<String> = rep
                        .problems
                        .iter()
                        .map(|p| {
                            format!(
                                "{{\"structure\":{},\"block\":{},\"message\":{}}}",
                                json_str(&p.structure),
                                p.block
                                    .map(|b| b.to_string())
                                    .unwrap_or_else(|| "null".into()),
                                json_str(&p.message)
                            )
                        })
                        .collect();
                    outln!(
                        "{{\"clean\":{},\"inodes\":{},\"directories\":{},\"files\":{},\"symlinks\":{},\"data_blocks\":{},\"metadata_blocks\":{},\"free_blocks\":{},\"pending_log\":{},\"problems\":[{}]}}",
                        rep.is_clean(),
                        rep.inodes,
                        rep.directories,
                        rep.files,
                        rep.symlinks,
                        rep.data_blocks,
                        rep.metadata_blocks,
                        rep.free_blocks,
                        rep.pending_log
                            .map(|s| s.to_string())
                            .unwrap_or_else(|| "null".into()),
                        probs.join(",")
                    );
                } else {
                    for p in &rep.problems {
                        outln!("problem: {p}");
                    }
                    if let Some(s) = rep.pending_log {
                        outln!(
                            "note: the log holds committed transaction {s}; the next mount replays it"
                        );
                    }
                    outln!(
                        "{}: {} inodes ({} directories, {} files, {} symlinks), {} data blocks, {} metadata blocks, {} free blocks",
                        if rep.is_clean() {
                            "clean"
                        } else {
                            "INCONSISTENT"
                        },
                        rep.inodes,
                        rep.directories,
                        rep.files,
                        rep.symlinks,
                        rep.data_blocks,
                        rep.metadata_blocks,
                        rep.free_blocks
                    );
                }
                Ok(if rep.is_clean() { 0 } else { FSCK_PROBLEMS })
            };
            match check() {
                Err(e) if !out::is_closed(&e) && !control::is_locked(&e) => {
                    errln!("daxfs: {}", errors::report(&e));
                    Ok(FSCK_FAILED)
                }
                r => r,
            }
        }
        Cmd::Io {
            image,
            commands,
            read_only,
        } => {
            let fs = mount(&image, pmem)?;
            let mut shell = io::Shell {
                fs: &fs,
                file: None,
                out: Box::new(out::Stdout),
                view: None,
                read_only,
            };
            if commands.is_empty() {
                // As xfs_io: a failed command does not stop the ones after
                // it, but the exit status tells that one failed.
                let mut failed = false;
                // On a terminal: line editing and history, the prompt on
                // standard error (never in standard output, which may be
                // a file); from a pipe or file: plain lines, no prompt.
                let stdin_tty = control::stdin_is_terminal();
                let mut editor = if stdin_tty && std::io::stderr().is_terminal() {
                    let cfg = rustyline::Config::builder().auto_add_history(true).build();
                    Some(out::on_stderr(|| {
                        rustyline::DefaultEditor::with_config(cfg)
                    })??)
                } else {
                    None
                };
                let mut line = String::new();
                loop {
                    line.clear();
                    if let Some(ed) = &mut editor {
                        shell.out.flush().ok();
                        match out::on_stderr(|| ed.readline("daxfs> "))? {
                            Ok(l) => line = l,
                            // Ctrl-C drops the line, as a shell does.
                            Err(rustyline::error::ReadlineError::Interrupted) => continue,
                            Err(rustyline::error::ReadlineError::Eof) => break,
                            Err(e) => return Err(e.into()),
                        }
                    } else {
                        if stdin_tty {
                            shell.out.flush().ok();
                            eprint!("daxfs> ");
                        }
                        if control::read_line(&mut line)? == 0 {
                            break;
                        }
                    }
                    let l = line.trim();
                    if l.starts_with('#') {
                        continue;
                    }
                    if l == "quit" || l == "exit" {
                        break;
                    }
                    let r = shell.run(l);
                    control::after_shell_command(l);
                    if let Err(e) = r {
                        failed = true;
                        shell.out.flush().ok();
                        let name = l.split_whitespace().next().unwrap_or("");
                        errln!("{name}: {} ({})", errors::name_inodes(&e.message), e.errno);
                    }
                    if out::closed() {
                        break;
                    }
                }
                drop(shell);
                fs.sync()?;
                return if out::closed() {
                    Err(out::Closed.into())
                } else {
                    Ok(i32::from(failed))
                };
            }
            for c in &commands {
                if matches!(c.trim(), "quit" | "exit") {
                    break;
                }
                let r = shell.run(c);
                control::after_shell_command(c);
                if out::closed() {
                    // The reader went away: the rest do not run.
                    drop(shell);
                    fs.sync().ok();
                    return Err(out::Closed.into());
                }
                if let Err(e) = r {
                    shell.out.flush().ok();
                    let name = c.split_whitespace().next().unwrap_or("");
                    errln!("{name}: {} ({})", errors::name_inodes(&e.message), e.errno);
                    drop(shell);
                    fs.sync().ok();
                    return Ok(1);
                }
            }
            drop(shell);
            fs.sync()?;
            Ok(0)
        }
        Cmd::Import {
            image,
            hostdir,
            dest,
        } => {
            import::check_host_dir(&hostdir)?;
            let fs = mount(&image, pmem)?;
            let dest = match dest {
                Some(d) => d,
                None => match hostdir.canonicalize()?.file_name() {
                    Some(n) => format!("/{}", n.to_string_lossy()),
                    None => bail!("{}: give DEST", hostdir.display()),
                },
            };
            let c = import::import(&fs, &hostdir, &dest)?;
            fs.sync()?;
            outln!("{} into {dest}", import::summary(&c));
            Ok(0)
        }
        Cmd::Export { image, paths } => {
            let fs = mount(&image, pmem)?;
            let (src, host) = match paths.as_slice() {
                [h] => ("/", h),
                [s, h] => (s.as_str(), h),
                _ => bail!("usage: export IMAGE [SRC] HOSTDIR"),
            };
            let c = export::export(&fs, src, Path::new(host))?;
            for (p, off, len) in &c.lost {
                outln!("lost: {p}: [{off}, +{len}) not copied (left as a hole)");
            }
            outln!(
                "exported {} files ({} bytes), {} directories, {} symlinks, {} hard links{} to {host}{}{}",
                c.files,
                c.bytes,
                c.dirs,
                c.symlinks,
                c.hard_links,
                if c.special > 0 {
                    format!(", {} special files", c.special)
                } else {
                    String::new()
                },
                if c.skipped > 0 {
                    format!("; {} skipped (see the notes above)", c.skipped)
                } else {
                    String::new()
                },
                if c.lost.is_empty() {
                    String::new()
                } else {
                    format!("; {} damaged ranges skipped", c.lost.len())
                }
            );
            Ok(if c.lost.is_empty() { 0 } else { 1 })
        }
        Cmd::Put { image, path } => {
            let fs = mount(&image, pmem)?;
            safe::replace_file(&fs, &path, |f| {
                let mut buf = vec![0u8; 1 << 20];
                let mut off = 0u64;
                let mut stdin = control::stdin();
                loop {
                    let n = stdin.read(&mut buf).context("reading standard input")?;
                    if n == 0 {
                        break;
                    }
                    f.write_at(off, &buf[..n])
                        .with_context(|| format!("writing {path}"))?;
                    off += n as u64;
                }
                Ok(())
            })?;
            Ok(0)
        }
        Cmd::Demo { image, size, force } => {
            let size = args::parse_size(&size)?;
            let given = image.is_some();
            let image = image.unwrap_or_else(|| PathBuf::from("daxfs.img"));
            if image.exists() && !force {
                let found = safe::probe(&image)?;
                // Without IMAGE the demo may re-make the image it made.
                let own = !given && found == safe::Found::Daxfs("demo".into());
                if !own {
                    safe::refuse_to_overwrite(&image, &found)?;
                }
            }
            demo::run(&image, size, pmem)?;
            Ok(0)
        }
        Cmd::Fsmap {
            image,
            start,
            end,
            json,
        } => {
            let fs = mount(&image, pmem)?;
            let start = start
                .as_deref()
                .map(args::parse_size)
                .transpose()?
                .unwrap_or(0);
            let end = end
                .as_deref()
                .map(args::parse_size)
                .transpose()?
                .unwrap_or(u64::MAX);
            if end <= start {
                bail!("fsmap: END ({end}) must be above START ({start})");
            }
            let rows = fs.fsmap(start / 4096, (end - start).div_ceil(4096))?;
            if json {
                let v: Vec<serde_json::Value> = rows.iter().map(fsmap::row_json).collect();
                outln!("{}", serde_json::Value::Array(v));
            } else {
                for (i, r) in rows.iter().enumerate() {
                    outln!("{}", fsmap::row_text(i, r));
                }
            }
            Ok(0)
        }
        Cmd::Cp {
            reflink,
            image,
            src,
            dst,
        } => {
            let fs = mount(&image, pmem)?;
            let s = fs.open(&src, &OpenOptions::read_only())?;
            if s.stat().kind == daxfs::FileKind::Dir {
                return Err(daxfs::FsError::IsDir(src).into());
            }
            safe::refuse_same_file(&fs, &s, &src, &dst)?;
            errors::name(s.ino(), &src);
            safe::replace_file(&fs, &dst, |d| {
                if reflink {
                    d.clone_from(&s)
                        .with_context(|| format!("cp --reflink {src} {dst}"))?;
                } else {
                    let mut buf = vec![0u8; 1 << 20];
                    let mut off = 0u64;
                    loop {
                        let n = s
                            .read_at(off, &mut buf)
                            .with_context(|| format!("reading {src}"))?;
                        if n == 0 {
                            break;
                        }
                        d.write_at(off, &buf[..n])
                            .with_context(|| format!("writing {dst}"))?;
                        off += n as u64;
                    }
                }
                Ok(())
            })?;
            Ok(0)
        }
        Cmd::Badblocks {
            image,
            import,
            json,
        } => {
            let fs = mount(&image, pmem)?;
            let mut events = fs.take_failure_events();
            if let Some(path) = import {
                let path = control::host_path(&path);
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let (ranges, ev) = fs.import_bad_blocks(&text, &path.display().to_string())?;
                if !json {
                    outln!(
                        "imported {} {} from {}",
                        ranges.len(),
                        if ranges.len() == 1 { "range" } else { "ranges" },
                        path.display()
                    );
                }
                control::note_events(&ev);
                events.extend(ev);
            }
            fs.name_owners(&mut events)?;
            let bad = fs.device().bad_ranges();
            let mut rows = vec![];
            for &(off, len) in &bad {
                // Each owner's part of its extent that is bad.
                let owners: Vec<_> = fs
                    .fsmap(off / 4096, len.div_ceil(4096))?
                    .iter()
                    .map(|r| fsmap::clip(r, off, off + len))
                    .filter(|r| r.length > 0)
                    .collect();
                rows.push((off, len, owners));
            }
            if json {
                let v: Vec<serde_json::Value> = rows
                    .iter()
                    .map(|(off, len, owners)| {
                        // offset and length in 512-byte sectors, as ndctl
                        // gives them (so the list can be fed to --import),
                        // and in bytes.
                        serde_json::json!({
                            "offset": off / 512, "length": len.div_ceil(512),
                            "byte_offset": off, "byte_length": len,
                            "owners": owners.iter().map(fsmap::row_json).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                outln!(
                    "{}",
                    serde_json::json!({ "badblocks": v, "handled": events.iter().map(fsmap::event_json).collect::<Vec<_>>() })
                );
            } else {
                for e in &events {
                    outln!(
                        "handled [{:#x}, +{:#x}): {}: {}",
                        e.physical,
                        e.length,
                        fsmap::event_owner(&e.owner, e.offset),
                        e.action
                    );
                }
                if rows.is_empty() {
                    outln!("no bad ranges");
                }
                for (off, len, owners) in &rows {
                    outln!(
                        "bad [{off:#x}, +{len:#x}) ({} sectors at sector {}):",
                        len / 512,
                        off / 512
                    );
                    for (i, r) in owners.iter().enumerate() {
                        outln!("  {}", fsmap::row_text(i, r));
                    }
                }
            }
            Ok(0)
        }
        Cmd::Errors { image, json } => {
            let fs = mount(&image, pmem)?;
            let losses = fs.all_losses()?;
            let log = fs.error_log()?;
            if json {
                let l: Vec<serde_json::Value> = losses
                    .iter()
                    .map(|(ino, off, len)| serde_json::json!({ "inode": ino, "paths": fs.paths(*ino).unwrap_or_default(), "offset": off, "length": len }))
                    .collect();
                let e: Vec<serde_json::Value> = log
                    .iter()
                    .map(|e| {
                        serde_json::json!({
                            "seq": e.seq, "event": e.event, "time": e.time_sec, "physical": e.physical, "length": e.length,
                            "action": e.action, "owner": fsmap::owner_json(&e.owner, e.offset),
                            "action_required": e.action_required, "device_removal": e.pre_remove,
                        })
                    })
                    .collect();
                outln!("{}", serde_json::json!({ "lost": l, "log": e }));
            } else {
                if losses.is_empty() {
                    outln!("no file has lost data");
                } else {
                    outln!("files that lost data:");
                    for (ino, off, len) in &losses {
                        let p = fs.paths(*ino).unwrap_or_default();
                        outln!(
                            "  {} (inode {ino}): bytes {off}..{} ({len} bytes)",
                            if p.is_empty() {
                                "(no path)".into()
                            } else {
                                p.join(", ")
                            },
                            off + len
                        );
                    }
                }
                // One entry names every owner of one range and action: its
                // owners share its sequence number, one line each.
                let entries = 1 + log.windows(2).filter(|w| w[0].seq != w[1].seq).count();
                let entries = if log.is_empty() { 0 } else { entries };
                outln!(
                    "error log ({entries} {}, {} {}):",
                    if entries == 1 { "entry" } else { "entries" },
                    log.len(),
                    if log.len() == 1 { "owner" } else { "owners" }
                );
                for e in &log {
                    outln!(
                        "  #{} event {} at {}: device [{:#x}, +{:#x}) {}: {}{}",
                        e.seq,
                        e.event,
                        e.time_sec,
                        e.physical,
                        e.length,
                        fsmap::event_owner(&e.owner, e.offset),
                        e.action,
                        if e.action_required {
                            " (reader waiting)"
                        } else if e.pre_remove {
                            " (device removal)"
                        } else {
                            ""
                        }
                    );
                }
            }
            Ok(0)
        }
        Cmd::ClearError { image, off, len } => {
            let fs = mount(&image, pmem)?;
            let (off, len) = (args::parse_size(&off)?, args::parse_size(&len)?);
            let n = fs.clear_bad_range(off, len)?;
            if n == 0 {
                outln!("nothing to clear: no bad blocks in [{off:#x}, +{len:#x})");
            } else {
                outln!("cleared [{off:#x}, +{len:#x}): {n} bytes were bad");
            }
            Ok(0)
        }
        Cmd::Scrub { image, data, json } => {
            let fs = mount(&image, pmem)?;
            let tty = control::stderr_is_terminal() && !json;
            let mut last = std::time::Instant::now();
            let mut progress = |phase: &str, done: u64, total: u64| {
                if tty && (last.elapsed().as_millis() > 200 || done == total) {
                    eprint!("\rscrub: {phase} {done}/{total}   ");
                    last = std::time::Instant::now();
                }
            };
            let rep = fs.scrub(data, &mut progress)?;
            control::note_events(&rep.events);
            if tty {
                eprintln!();
            }
            if json {
                outln!(
                    "{}",
                    serde_json::json!({
                        "clean": rep.clean(), "metadata_blocks": rep.metadata_blocks, "data_blocks": rep.data_blocks,
                        "problems": rep.problems.iter().map(|p| serde_json::json!({"structure": p.structure, "block": p.block, "message": p.message})).collect::<Vec<_>>(),
                        "errors": rep.events.iter().map(fsmap::event_json).collect::<Vec<_>>(),
                        "lost": rep.lost.iter().map(|(i, o, l)| serde_json::json!({"inode": i, "paths": fs.paths(*i).unwrap_or_default(), "offset": o, "length": l})).collect::<Vec<_>>(),
                    })
                );
            } else {
                for p in &rep.problems {
                    outln!("problem: {p}");
                }
                for e in &rep.events {
                    outln!(
                        "media error [{:#x}, +{:#x}): {}: {}",
                        e.physical,
                        e.length,
                        fsmap::event_owner(&e.owner, e.offset),
                        e.action
                    );
                }
                for (ino, off, len) in &rep.lost {
                    let p = fs.paths(*ino).unwrap_or_default();
                    outln!(
                        "lost data: {} (inode {ino}) bytes {off}..{}",
                        if p.is_empty() {
                            "(no path)".into()
                        } else {
                            p.join(", ")
                        },
                        off + len
                    );
                }
                outln!(
                    "{}: {} metadata blocks verified, {} data blocks read, {} media errors",
                    if rep.clean() { "clean" } else { "NOT CLEAN" },
                    rep.metadata_blocks,
                    rep.data_blocks,
                    rep.events.len()
                );
            }
            Ok(if rep.clean() { 0 } else { 1 })
        }
        Cmd::Cat { image, path } => {
            let fs = mount(&image, pmem)?;
            let f = fs.open(&path, &OpenOptions::read_only())?;
            errors::name(f.ino(), &path);
            let mut buf = vec![0u8; 1 << 20];
            let mut off = 0u64;
            loop {
                let n = f.read_at(off, &mut buf)?;
                if n == 0 {
                    break;
                }
                out::bytes(&buf[..n])?;
                off += n as u64;
            }
            Ok(0)
        }
        Cmd::Completions { shell } => {
            let mut buf = vec![];
            clap_complete::generate(shell, &mut Cli::command(), "daxfs", &mut buf);
            out::bytes(&buf)?;
            Ok(0)
        }
        Cmd::Man { command } => {
            let top = Cli::command();
            let page = match &command {
                None => top,
                Some(name) => {
                    let Some(sub) = top.find_subcommand(name) else {
                        return Err(daxfs::FsError::Invalid(format!(
                            "no command {name:?} (the commands: {})",
                            top.get_subcommands()
                                .map(|c| c.get_name())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ))
                        .into());
                    };
                    // The page of `daxfs NAME` is daxfs-NAME(1), as git's.
                    // (clap names are static; the process ends soon after.)
                    let title: &'static str = Box::leak(format!("daxfs-{name}").into_boxed_str());
                    sub.clone().name(title).version(env!("CARGO_PKG_VERSION"))
                }
            };
            let mut buf = vec![];
            clap_mangen::Man::new(page)
                .render(&mut buf)
                .context("rendering the manual page")?;
            out::bytes(&buf)?;
            Ok(0)
        }
        Cmd::Bench {
            mode: Some(m),
            scale,
            out,
            ..
        } if m == "tracking" => {
            let out = out.unwrap_or_else(|| PathBuf::from("docs"));
            let msg = daxfs_tracking::bench_tracking_command(scale.as_deref(), &out)
                .map_err(|e| anyhow::anyhow!("bench tracking: {e}"))?;
            outln!("{msg}");
            Ok(0)
        }
        Cmd::Bench {
            mode: None,
            scale: None,
            out: None,
            args,
        } => bench::run(&args),
        Cmd::Bench { .. } => bail!("--scale and --out belong to `daxfs bench tracking`"),
        Cmd::Serve { image } => {
            // Before any thread starts (the file system's too).
            control_server::block_stop_signals()?;
            let dev = open_device(&image, pmem)?;
            let fs = Fs::mount(dev, &MountOptions::default())
                .with_context(|| format!("mounting {}", image.display()))?;
            control_server::serve_command(&image, fs)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every option and argument of every command says what it is in
    /// `--help`.
    #[test]
    fn every_argument_has_help() {
        fn walk(c: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in c.get_arguments() {
                let id = a.get_id().as_str();
                if id != "help" && id != "version" && a.get_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for s in c.get_subcommands() {
                walk(s, &format!("{path} {}", s.get_name()), missing);
            }
        }
        let mut missing = vec![];
        walk(&Cli::command(), "daxfs", &mut missing);
        assert!(missing.is_empty(), "no help for: {missing:?}");
        assert_eq!(human(512), "512 bytes");
        assert_eq!(human(8 << 20), "8.0 MiB");
        assert_eq!(human(1536), "1.5 KiB");
    }
}
