//! A database that takes reflink snapshots of its data file while it writes.
//!
//! The database file is loaded, then mapped by the database process. Between
//! snapshots the database writes pages (two-page database pages, 90% of
//! writes to a hot tenth of the file); each snapshot reflinks the whole file,
//! and the oldest snapshot is deleted once more than a day's worth are kept.
//! Every few snapshots a backup process maps the newest one and reads it until
//! the next backup. Full size: a 16 GiB file, 96 snapshots (every 15 minutes
//! for a day) with 24 kept, 1% of the pages written between snapshots.

use std::collections::VecDeque;

use crate::event::{FileId, MappingId};
use crate::rng::Rng;
use crate::tracked::{FsResult, TrackedFs};
use crate::workloads::{Workload, fill, scale_count};

/// See the module doc.
#[derive(Clone, Debug)]
pub struct DbSnapshots {
    /// Database file size, in pages.
    pub db_pages: u64,
    /// Snapshots taken.
    pub snapshots: u64,
    /// Snapshots kept; older ones are deleted.
    pub keep: u64,
    /// Writes between two snapshots.
    pub writes_per_snapshot: u64,
    /// Pages per write (the database page size).
    pub write_pages: u64,
    /// Fraction of the file that is hot.
    pub hot_fraction: f64,
    /// Fraction of writes that go to the hot part.
    pub hot_share: f64,
    /// A backup maps every this-many-th snapshot.
    pub backup_every: u64,
    /// Random seed.
    pub seed: u64,
}

impl DbSnapshots {
    /// A 16 GiB database, 96 snapshots, 24 kept, 1% written between snapshots.
    pub fn full(seed: u64) -> Self {
        DbSnapshots {
            db_pages: 1 << 22,
            snapshots: 96,
            keep: 24,
            writes_per_snapshot: (1 << 22) / 200,
            write_pages: 2,
            hot_fraction: 0.1,
            hot_share: 0.9,
            backup_every: 4,
            seed,
        }
    }

    /// A smaller database and proportionally fewer writes; same snapshots.
    pub fn scaled(scale: f64, seed: u64) -> Self {
        let f = Self::full(seed);
        DbSnapshots {
            db_pages: scale_count(f.db_pages, scale, 1024),
            writes_per_snapshot: scale_count(f.writes_per_snapshot, scale, 1),
            ..f
        }
    }

    /// A 512-page database, 12 snapshots, 4 kept.
    pub fn small(seed: u64) -> Self {
        DbSnapshots {
            db_pages: 512,
            snapshots: 12,
            keep: 4,
            writes_per_snapshot: 20,
            backup_every: 3,
            ..Self::full(seed)
        }
    }
}

impl Workload for DbSnapshots {
    fn name(&self) -> &'static str {
        "db-snapshots"
    }

    fn what(&self) -> &'static str {
        "a mapped database file written while reflink snapshots are taken"
    }

    fn params(&self) -> String {
        format!(
            "{} MiB database, {} snapshots ({} kept), {} {}-page writes between snapshots \
             ({}% of them to the hot {}%), backup maps every {}th snapshot",
            (self.db_pages * crate::PAGE_SIZE) >> 20,
            self.snapshots,
            self.keep,
            self.writes_per_snapshot,
            self.write_pages,
            self.hot_share * 100.0,
            self.hot_fraction * 100.0,
            self.backup_every
        )
    }

    fn run(&self, fs: &mut dyn TrackedFs) -> FsResult<()> {
        let mut rng = Rng::new(self.seed ^ 0x6462);
        let db = fs.create()?;
        fill(fs, db, self.db_pages)?;
        fs.mmap(db, 0, self.db_pages)?;
        let slots = self.db_pages / self.write_pages;
        let hot = ((slots as f64 * self.hot_fraction) as u64).clamp(1, slots);
        let mut snaps: VecDeque<FileId> = VecDeque::new();
        let mut backup: Option<(FileId, MappingId)> = None;
        for s in 0..self.snapshots {
            for _ in 0..self.writes_per_snapshot {
                let slot = if rng.chance(self.hot_share) || hot == slots {
                    rng.below(hot)
                } else {
                    hot + rng.below(slots - hot)
                };
                fs.write(db, slot * self.write_pages, self.write_pages)?;
            }
            let snap = fs.clone_file(db)?;
            snaps.push_back(snap);
            if s % self.backup_every == 0 {
                if let Some((_, m)) = backup.take() {
                    fs.munmap(m)?;
                }
                backup = Some((snap, fs.mmap(snap, 0, self.db_pages)?));
            }
            if snaps.len() as u64 > self.keep
                && let Some(old) = snaps.pop_front()
            {
                if backup.is_some_and(|(f, _)| f == old) {
                    backup = None; // deleting the file unmaps it
                }
                fs.delete(old)?;
            }
        }
        Ok(())
    }
}
