//! Helpers shared by the integration tests: an owner oracle rebuilt from
//! events alone, the truth of a page, and what strategy 1 should remember.
#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap};

use daxfs_tracking::strategies::PerPageSingle;
use daxfs_tracking::{
    Event, FileId, FsQuery, MappingId, OwnerIndex, Owners, PageOwner, Phys, Strategy, Tally,
};

/// Page and mapping owners derived from events only.
#[derive(Default)]
pub struct EventOracle {
    pages: HashMap<u64, BTreeSet<PageOwner>>,
    maps: HashMap<MappingId, (FileId, u64, u64)>,
}

impl EventOracle {
    pub fn apply(&mut self, e: &Event) {
        let mut add = |p: u64, o: PageOwner| assert!(self.pages.entry(p).or_default().insert(o));
        match *e {
            Event::Map {
                file,
                index,
                phys,
                len,
            }
            | Event::Share {
                file,
                index,
                phys,
                len,
                ..
            } => {
                for k in 0..len {
                    add(
                        phys.0 + k,
                        PageOwner {
                            file,
                            index: index + k,
                        },
                    );
                }
            }
            Event::Unmap {
                file,
                index,
                phys,
                len,
            } => {
                for k in 0..len {
                    assert!(
                        self.pages
                            .entry(phys.0 + k)
                            .or_default()
                            .remove(&PageOwner {
                                file,
                                index: index + k
                            })
                    );
                }
            }
            Event::Cow {
                file,
                index,
                old,
                new,
                len,
            } => {
                for k in 0..len {
                    let o = PageOwner {
                        file,
                        index: index + k,
                    };
                    assert!(self.pages.entry(old.0 + k).or_default().remove(&o));
                    assert!(self.pages.entry(new.0 + k).or_default().insert(o));
                }
            }
            Event::MmapFile {
                mapping,
                file,
                index,
                len,
            } => {
                self.maps.insert(mapping, (file, index, len));
            }
            Event::MunmapFile { mapping, .. } => {
                self.maps.remove(&mapping);
            }
        }
    }
}

impl FsQuery for EventOracle {
    fn owners_of(&self, phys: Phys, out: &mut Vec<PageOwner>) {
        if let Some(s) = self.pages.get(&phys.0) {
            out.extend(s.iter().copied());
        }
    }

    fn mappings_of(&self, file: FileId, index: u64, out: &mut Vec<MappingId>) {
        for (&m, &(f, i, l)) in &self.maps {
            if f == file && i <= index && index < i + l {
                out.push(m);
            }
        }
    }
}

pub fn truth(fs: &dyn FsQuery, p: u64) -> Owners {
    let mut v = Vec::new();
    fs.owners_of(Phys(p), &mut v);
    Owners::resolve(v, fs)
}

/// What pre-6.0 Linux would have recorded for each page, derived from the
/// events: the last `(file, index)` associated with it, unless any owner has
/// let go of it since.
pub fn last_claimant(events: &[Event]) -> HashMap<u64, PageOwner> {
    let mut m = HashMap::new();
    for e in events {
        match *e {
            Event::Map {
                file,
                index,
                phys,
                len,
            }
            | Event::Share {
                file,
                index,
                phys,
                len,
                ..
            } => {
                for k in 0..len {
                    m.insert(
                        phys.0 + k,
                        PageOwner {
                            file,
                            index: index + k,
                        },
                    );
                }
            }
            Event::Unmap { phys, len, .. } => {
                for k in 0..len {
                    m.remove(&(phys.0 + k));
                }
            }
            Event::Cow {
                file,
                index,
                old,
                new,
                len,
            } => {
                for k in 0..len {
                    m.remove(&(old.0 + k));
                    m.insert(
                        new.0 + k,
                        PageOwner {
                            file,
                            index: index + k,
                        },
                    );
                }
            }
            Event::MmapFile { .. } | Event::MunmapFile { .. } => {}
        }
    }
    m
}

/// Strategies 2 to 7 find exactly the true owners of every page (and of 8
/// pages past the device): at 8 points of the run against the owners rebuilt
/// from the events, and at the end against `fs`'s reverse map, which
/// strategies 2, 6 and 7 also ask.
pub fn check_strategies_2_to_7(
    fs: &dyn FsQuery,
    device: u64,
    events: &[Event],
    name: &str,
    seed: u64,
) {
    let checkpoints: Vec<usize> = (1..=8).map(|k| events.len() * k / 8).collect();
    for s in Strategy::ALL.into_iter().filter(|s| s.number() != 1) {
        let mut idx = s.build(device);
        let mut oracle = EventOracle::default();
        let mut done = 0;
        let mut checked_shared = 0;
        for &cp in &checkpoints {
            for e in &events[done..cp] {
                idx.on_event(e);
                oracle.apply(e);
            }
            done = cp;
            for p in 0..device + 8 {
                let want = truth(&oracle, p);
                checked_shared += usize::from(want.pages.len() > 1);
                assert_eq!(
                    idx.owners(Phys(p), &oracle),
                    want,
                    "{name} {} seed {seed}: page {p} after {cp} events",
                    s.name()
                );
            }
        }
        assert!(checked_shared > 0, "{name}: no shared page checked");
        // And at the end against the file system's own reverse map.
        for p in 0..device + 8 {
            assert_eq!(
                idx.owners(Phys(p), fs),
                truth(fs, p),
                "{name} {} seed {seed}: page {p} at end",
                s.name()
            );
        }
    }
}

/// Strategy 1 finds exactly the last claimant of each page (what pre-6.0
/// Linux would have recorded) and misses exactly the other true owners.
pub fn check_strategy_1(fs: &dyn FsQuery, device: u64, events: &[Event], name: &str, seed: u64) {
    let mut idx = PerPageSingle::new(device);
    for e in events {
        idx.on_event(e);
    }
    let expected = last_claimant(events);
    let (mut total, mut missed_shared) = (Tally::default(), 0);
    for p in 0..device + 8 {
        let t = truth(fs, p);
        let got = idx.owners(Phys(p), fs);
        let want_found: Vec<PageOwner> = expected.get(&p).copied().into_iter().collect();
        let want_missed: Vec<PageOwner> = t
            .pages
            .iter()
            .copied()
            .filter(|o| !want_found.contains(o))
            .collect();
        // Found: exactly the recorded owner, which always is a true owner.
        assert_eq!(got.pages, want_found, "{name} seed {seed}: page {p}");
        assert!(
            want_found.iter().all(|o| t.pages.contains(o)),
            "{name} seed {seed}: page {p} records a non-owner"
        );
        // Missed: exactly the other true owners.
        let tally = Tally::of(&got.pages, &t.pages);
        assert_eq!(tally.missed as usize, want_missed.len());
        assert_eq!(tally.spurious, 0);
        // Mappings: those of the recorded owner, no more, no less.
        assert_eq!(
            got,
            Owners::resolve(want_found.clone(), fs),
            "{name} seed {seed}: page {p}"
        );
        if t.pages.len() > 1 {
            missed_shared += want_missed.len();
        }
        total.add(tally);
    }
    assert!(missed_shared > 0, "{name}: strategy 1 lost nothing");
    assert!(total.found > 0, "{name}: strategy 1 found nothing");
    assert!(
        idx.overwrites() > 0,
        "{name}: no association ever overwrote another"
    );
}
