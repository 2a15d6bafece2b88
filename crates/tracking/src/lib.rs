//! Owner tracking for DAX file systems with reflink: seven designs from the
//! Linux debate (2019–2024), driven by the events a reflink file system
//! produces, and measured against each other.
//!
//! When a media error hits a physical page of byte-addressable memory, the
//! file system must find every owner of that page: each `(file, index)` whose
//! data lives there, and each address-space mapping of those files that can
//! load from it. With reflink one page can have thousands of owners. This
//! crate answers "what does it cost to always know them?".
//!
//! # The boundary
//!
//! ```text
//!  workload driver ──ops──▶ TrackedFs ──Event stream──▶ OwnerIndex (strategy 1..7)
//!                              │                          │ at a media error:
//!                              └──────── FsQuery ◀────────┘ owners(phys, fs)
//! ```
//!
//! - [`Event`] is the vocabulary: map, unmap, share (clone/dedupe),
//!   copy-on-write, mmap, munmap, at extent granularity.
//! - [`OwnerIndex`] is one design: it sees every event and answers
//!   [`OwnerIndex::owners`].
//! - [`FsQuery`] is what the file system answers at failure time: owners of a
//!   physical page from its reverse map, and mappings of a file page.
//! - [`TrackedFs`] is a reflink file system the workloads drive; it emits the
//!   events and implements [`FsQuery`]. [`DaxfsTracked`] is daxfs itself:
//!   every operation is a daxfs call, the events are the mapping events daxfs
//!   commits, and owner queries go to daxfs's reverse map, which is what
//!   strategy 7 ([`strategies::RmapCallout`]) asks. [`ModelFs`] is an
//!   in-memory model of a reflink file system, kept as a second
//!   implementation and a cross-check.
//!
//! # The benchmark
//!
//! [`run_bench_on_daxfs`] runs every [`workloads`] driver on a fresh daxfs,
//! replays the recorded event stream into every strategy, and measures time
//! per event, memory, failure-lookup time, and owners found against daxfs's
//! reverse map; it also times each workload on daxfs without a reverse map
//! and compares the sharing with the model's. [`bench::Report::to_markdown`]
//! and [`plot::write_outputs`] produce the table and the plots. `daxfs bench
//! tracking` is [`bench_tracking_command`]:
//!
//! ```no_run
//! use daxfs_tracking::{BenchOptions, parse_scale, run_bench_on_daxfs, write_outputs};
//! # fn main() -> Result<(), daxfs_tracking::FsError> {
//! let opts = BenchOptions { scale: parse_scale("1/128")?, ..BenchOptions::default() };
//! let report = run_bench_on_daxfs(&opts)?;
//! let files = write_outputs(&report, std::path::Path::new("docs"))?;
//! println!("{}", files.message()); // docs/tracking.md, tracking.svg, tracking.png
//! println!("{}", report.conclusion());
//! # Ok(())
//! # }
//! ```
//!
//! [`bench::run_bench_with`] does the same on any [`TrackedFs`];
//! [`bench::run_bench`] runs on the model.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bench;
pub mod daxfs_tracked;
pub mod event;
pub mod index;
pub mod mem;
pub mod model;
pub mod plot;
mod rmap;
pub mod rng;
pub mod strategies;
pub mod tracked;
mod treap;
pub mod workloads;

pub use bench::{
    BenchOptions, DEFAULT_SCALE, MakeFs, ModelCheck, Report, parse_scale, run_bench,
    run_bench_with, run_bench_with_baseline,
};
pub use daxfs_tracked::{DaxfsTracked, bench_tracking_command, run_bench_on_daxfs};
pub use event::{Event, EventKind, FileId, MappingId, PAGE_SIZE, Phys};
pub use index::{FsQuery, MappedOwner, OwnerIndex, Owners, PageOwner, Tally, replay};
pub use model::ModelFs;
pub use plot::{OutputFiles, PlotFiles, write_outputs, write_plots};
pub use strategies::Strategy;
pub use tracked::{FsError, FsResult, RmapStats, TrackedFs};
