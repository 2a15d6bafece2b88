//! What each page of a view should show, from the file's extent map, size,
//! sharing and lost blocks.
use crate::error::Result;
use crate::extents::ExtentMap;
use crate::space::refcount::Piece;
use crate::write::segments;
use daxfs_format::BLOCK_SIZE_U64;
use std::collections::BTreeMap;

const BS: u64 = BLOCK_SIZE_U64;

/// What a file block looks like through a view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Want {
    /// A hole or an unwritten extent: reads as zeros; a store allocates.
    Zero,
    /// Device block `.0`, owned by this file alone: a writable view may
    /// store into it directly.
    Own(u64),
    /// Device block `.0`, shared with other owners: read-only until a store
    /// copies it.
    Shared(u64),
    /// Wholly past end of file: any access is SIGBUS (`BUS_ADRERR`).
    Eof,
    /// Lost to a media error: any access is SIGBUS (`BUS_MCEERR_AR`).
    Lost,
}

impl Want {
    /// The same state `n` blocks further on.
    fn advance(self, n: u64) -> Want {
        match self {
            Want::Own(b) => Want::Own(b + n),
            Want::Shared(b) => Want::Shared(b + n),
            w => w,
        }
    }

    fn continues(self, next: Want, n: u64) -> bool {
        self.advance(n) == next
    }
}

/// File blocks `[fb, fb + len)` and what they should be (`want` is the
/// state of `fb`; device blocks follow on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Run {
    pub fb: u64,
    pub len: u64,
    pub want: Want,
}

impl Run {
    /// The state of file block `b` inside the run.
    pub fn at(&self, b: u64) -> Want {
        self.want.advance(b - self.fb)
    }
}

fn push(out: &mut Vec<Run>, r: Run) {
    if r.len == 0 {
        return;
    }
    if let Some(last) = out.last_mut()
        && last.fb + last.len == r.fb
        && last.want.continues(r.want, last.len)
    {
        last.len += r.len;
        return;
    }
    out.push(r);
}

/// The desired state of file blocks `[b0, b1)`. `counts(phys, len)` gives
/// the owner counts of a device range (asked only when the map may share).
pub(crate) fn plan(
    map: &ExtentMap,
    size: u64,
    lost: Option<&BTreeMap<u64, u64>>,
    counts: &mut dyn FnMut(u64, u64) -> Result<Vec<Piece>>,
    b0: u64,
    b1: u64,
) -> Result<Vec<Run>> {
    let mut out = vec![];
    if b0 >= b1 {
        return Ok(out);
    }
    let eof = size.div_ceil(BS).clamp(b0, b1);
    if b0 < eof {
        for (fb, len, e) in segments(map, b0, eof) {
            let e = match e {
                Some(e) if !e.unwritten() => e,
                _ => {
                    push(
                        &mut out,
                        Run {
                            fb,
                            len,
                            want: Want::Zero,
                        },
                    );
                    continue;
                }
            };
            let phys0 = e.phys + (fb - e.fblock);
            let pieces = if map.maybe_shared {
                counts(phys0, len)?
            } else {
                vec![Piece {
                    start: phys0,
                    len,
                    count: 1,
                }]
            };
            for pc in pieces {
                let want = if pc.count > 1 {
                    Want::Shared(pc.start)
                } else {
                    Want::Own(pc.start)
                };
                push(
                    &mut out,
                    Run {
                        fb: fb + (pc.start - phys0),
                        len: pc.len,
                        want,
                    },
                );
            }
        }
    }
    push(
        &mut out,
        Run {
            fb: eof,
            len: b1 - eof,
            want: Want::Eof,
        },
    );
    match lost {
        Some(lost) if !lost.is_empty() => Ok(with_losses(out, lost)),
        _ => Ok(out),
    }
}

/// Marks the lost blocks (first block -> blocks) of `runs` (not past end of
/// file, which loses nothing).
fn with_losses(runs: Vec<Run>, lost: &BTreeMap<u64, u64>) -> Vec<Run> {
    let mut out = vec![];
    for r in runs {
        if r.want == Want::Eof {
            push(&mut out, r);
            continue;
        }
        let end = r.fb + r.len;
        let mut at = r.fb;
        let first = lost
            .range(..=r.fb)
            .next_back()
            .map(|(&k, _)| k)
            .unwrap_or(r.fb);
        for (&k, &l) in lost.range(first..end) {
            let (s, t) = (k.max(at), (k + l).min(end));
            if s >= t {
                continue;
            }
            push(
                &mut out,
                Run {
                    fb: at,
                    len: s - at,
                    want: r.at(at),
                },
            );
            push(
                &mut out,
                Run {
                    fb: s,
                    len: t - s,
                    want: Want::Lost,
                },
            );
            at = t;
        }
        push(
            &mut out,
            Run {
                fb: at,
                len: end - at,
                want: r.at(at),
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extents::Extent;

    fn own(_: u64, _: u64) -> Result<Vec<Piece>> {
        unreachable!("not shared")
    }

    #[test]
    fn holes_extents_eof_and_losses() {
        let mut m = ExtentMap::default();
        m.map(Extent {
            fblock: 2,
            phys: 100,
            len: 4,
            flags: 0,
        });
        m.map(Extent {
            fblock: 8,
            phys: 200,
            len: 2,
            flags: daxfs_format::records::EXTENT_UNWRITTEN,
        });
        let runs = plan(&m, 9 * BS + 1, None, &mut own, 0, 12).unwrap();
        let w: Vec<_> = runs.iter().map(|r| (r.fb, r.len, r.want)).collect();
        assert_eq!(
            w,
            vec![
                (0, 2, Want::Zero),
                (2, 4, Want::Own(100)),
                (6, 4, Want::Zero),
                (10, 2, Want::Eof)
            ]
        );
        let lost = BTreeMap::from([(3, 1), (9, 5)]);
        let runs = plan(&m, 9 * BS + 1, Some(&lost), &mut own, 1, 12).unwrap();
        let w: Vec<_> = runs.iter().map(|r| (r.fb, r.len, r.want)).collect();
        assert_eq!(
            w,
            vec![
                (1, 1, Want::Zero),
                (2, 1, Want::Own(100)),
                (3, 1, Want::Lost),
                (4, 2, Want::Own(102)),
                (6, 3, Want::Zero),
                (9, 1, Want::Lost),
                (10, 2, Want::Eof)
            ]
        );
        let mut m2 = m.clone();
        m2.mark_shared();
        let mut counts = |p: u64, l: u64| -> Result<Vec<Piece>> {
            assert_eq!((p, l), (100, 4));
            Ok(vec![
                Piece {
                    start: 100,
                    len: 1,
                    count: 1,
                },
                Piece {
                    start: 101,
                    len: 3,
                    count: 2,
                },
            ])
        };
        let runs = plan(&m2, 6 * BS, None, &mut counts, 2, 6).unwrap();
        let w: Vec<_> = runs.iter().map(|r| (r.fb, r.len, r.want)).collect();
        assert_eq!(w, vec![(2, 1, Want::Own(100)), (3, 3, Want::Shared(101))]);
    }
}
