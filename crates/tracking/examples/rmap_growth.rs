//! How daxfs's reverse map grows when clones of one image are written, and
//! what one owner query costs: the two findings of the owner-tracking study
//! about the map strategy 7 asks.
//!
//! ```text
//! cargo run --release -p daxfs-tracking --example rmap_growth -- [CLONES] [PAGES]
//! ```
//! Writes a `PAGES`-page image, clones it `CLONES` times, then lets each
//! clone write one page (a different page each, round robin). After each
//! step it prints the reverse map's file-data records: an interval map
//! (one record per extent of every file) needs `1 + CLONES` records after the
//! clones and 2 more per written page (the writer's extent becomes three
//! pieces). daxfs's reverse map is such an interval map (format version 2);
//! version 1 kept its records segment-aligned, so every boundary a write
//! created split the records of every owner of the image (10,201 records
//! where 301 do). The counts come from owner queries over the whole device,
//! each record counted once, and agree with the reverse map's own census,
//! also printed (all records, file data or not, and its nodes).

use std::time::Instant;

use daxfs::{Fs, OwnerKind};
use daxfs_tracking::{DaxfsTracked, FsQuery, PAGE_SIZE, Phys, TrackedFs};

fn data_records(fs: &Fs) -> u64 {
    let total = fs.info().total_blocks;
    let (mut n, mut b) = (0, 0);
    while b < total {
        let len = 1024.min(total - b);
        for r in fs.owners(b, len).expect("owner query") {
            let first = r.physical / PAGE_SIZE;
            if matches!(r.owner, OwnerKind::File { fork: "data", .. }) && (first >= b || b == 0) {
                n += 1;
            }
        }
        b += len;
    }
    n
}

fn main() {
    let mut args = std::env::args().skip(1);
    let clones: u64 = args.next().map_or(100, |a| a.parse().expect("CLONES"));
    let pages: u64 = args.next().map_or(256, |a| a.parse().expect("PAGES"));
    let mut fs = DaxfsTracked::new(1 << 30).expect("mkfs");
    let image = fs.create().expect("create");
    fs.write(image, 0, pages).expect("write");
    let mut files = Vec::new();
    for _ in 0..clones {
        files.push(fs.clone_file(image).expect("clone"));
    }
    println!(
        "image of {pages} pages + {clones} clones: {} data records (an interval map needs {})",
        data_records(fs.fs()),
        1 + clones
    );
    let t = Instant::now();
    for (i, &f) in files.iter().enumerate() {
        fs.write(f, i as u64 % pages, 1).expect("write");
    }
    let spent = t.elapsed();
    println!(
        "after each clone wrote one page: {} data records (an interval map needs {}); {:.0} µs per write",
        data_records(fs.fs()),
        1 + 3 * clones,
        spent.as_secs_f64() * 1e6 / clones as f64
    );
    let c = fs.fs().rmap_census().expect("census");
    println!(
        "reverse map: {} records ({} of file data) in {} nodes",
        c.records, c.data_records, c.nodes
    );
    let base = fs.fs().owners(0, fs.device_pages()).expect("owner query");
    let shared = base
        .iter()
        .find(|r| r.shared && matches!(r.owner, OwnerKind::File { .. }))
        .map(|r| r.physical / PAGE_SIZE)
        .expect("a shared page");
    let mut v = Vec::new();
    let t = Instant::now();
    fs.owners_of(Phys(shared), &mut v);
    let one = t.elapsed();
    println!(
        "owners of one shared page: {} in {:.0} µs ({:.2} µs per owner, paths included)",
        v.len(),
        one.as_secs_f64() * 1e6,
        one.as_secs_f64() * 1e6 / v.len().max(1) as f64
    );
}
