//! Group commit: transactions committed in memory under the metadata lock,
//! made durable together by one journal commit written without it.
//!
//! A grouped operation (see [`crate::fs::FsInner::grouped`]) commits its
//! transactions in memory only, as lazy ones (see [`crate::tx::Tx::begin_lazy`]),
//! and takes a ticket: the sequence number of the durable commit that will
//! hold them. It then drops the metadata lock and waits here until the
//! durable sequence number reaches its ticket. One of the waiters is the
//! leader: under the metadata lock it prepares one journal commit of every
//! transaction committed in memory so far (the "gather": free-space tree,
//! reverse map, seals, the superblock; see [`crate::tx::Tx::commit`]),
//! drops the lock, writes it with its fences, and wakes the others. The
//! changes the fences do not depend on (what reads see) are installed at
//! the gather; what depends on the commit being durable (blocks freed going
//! back to the allocator, the node cache's record of what media holds, the
//! log's head) is installed by the next holder of the metadata lock
//! ([`settle`]). While one group is being written, the next one gathers in
//! memory.
use crate::error::{FsError, Result};
use crate::fs::lock;
use crate::journal::{self, Image, LogGeometry, LogHead};
use crate::tx::Meta;
use daxfs_btree::NodeBuf;
use daxfs_device::Device;
use daxfs_format::records::RmapIntent;
use std::sync::{Condvar, Mutex, MutexGuard};

/// The state of group commit, beside the metadata lock (taken after it,
/// never held while taking it, and never across a device write).
#[derive(Debug, Default)]
pub struct Group {
    st: Mutex<State>,
    cv: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Sequence number of the last durable commit.
    durable: u64,
    /// A leader is writing a group (set under the metadata lock).
    inflight: bool,
    /// The group last written, for [`settle`] to install.
    landed: Option<Landed>,
    /// Writing a group failed: the file system is shut down, and every
    /// transaction not durable gets this error.
    failed: Option<String>,
    /// Threads waiting for their transactions to be durable (test hook).
    waiting: usize,
    /// Test hook: the next leader waits until this many threads wait.
    hold: usize,
}

/// One journal commit prepared under the metadata lock, written by the
/// leader without it.
#[derive(Debug)]
pub(crate) struct Flight {
    pub geo: LogGeometry,
    pub fs_id: u64,
    pub seq: u64,
    pub images: Vec<Image>,
    pub fresh: Vec<bool>,
    /// What each image's home holds on media now (see [`journal::Known`]).
    pub homes: Vec<Option<NodeBuf>>,
    pub same_replica: Vec<bool>,
    pub head: LogHead,
    pub intents_at: usize,
    pub intents: Vec<RmapIntent>,
    /// Blocks free once the commit is durable.
    pub freed: Vec<(u64, u64)>,
}

#[derive(Debug)]
struct Landed {
    ok: bool,
    images: Vec<Image>,
    freed: Vec<(u64, u64)>,
    head: LogHead,
}

impl Group {
    /// The state of a file system whose last durable commit is `durable`.
    pub fn new(durable: u64) -> Group {
        Group {
            st: Mutex::new(State {
                durable,
                ..State::default()
            }),
            cv: Condvar::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.st)
    }

    fn wait<'a>(&self, g: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.cv.wait(g).unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(feature = "testing")]
    /// Test hook: the next leader waits until `n` threads wait for their
    /// transactions (itself included) before it gathers the group.
    pub(crate) fn hold(&self, n: usize) {
        self.state().hold = n;
    }

    #[cfg(feature = "testing")]
    /// Threads waiting now (test hook).
    pub(crate) fn waiting(&self) -> usize {
        self.state().waiting
    }

    /// A commit (of any kind) of sequence number `seq` is durable.
    pub(crate) fn durable(&self, seq: u64) {
        let mut g = self.state();
        g.durable = g.durable.max(seq);
        drop(g);
        self.cv.notify_all();
    }

    /// A commit failed with transactions committed in memory in it: they
    /// can never be durable.
    pub(crate) fn failed(&self, why: &str) {
        self.state().failed.get_or_insert_with(|| why.to_string());
        self.cv.notify_all();
    }
}

/// Under the metadata lock: waits until no group is being written, and
/// installs the last one written. Every journal commit made under the lock
/// comes after this, so the log holds one transaction at a time.
/// An error when writing a group failed: what it held is not durable.
pub(crate) fn quiesce(meta: &mut Meta) -> Result<()> {
    let group = meta.group.clone();
    let mut g = group.state();
    while g.inflight {
        g = group.wait(g);
    }
    let landed = g.landed.take();
    let failed = g.failed.clone();
    drop(g);
    if let Some(l) = landed {
        install(meta, l);
    }
    match failed {
        Some(why) => Err(FsError::Io(format!("committing metadata failed: {why}"))),
        None => Ok(()),
    }
}

/// Under the metadata lock: installs the group last written, if its leader
/// is done (without waiting for one being written).
pub(crate) fn settle(meta: &mut Meta) {
    let group = meta.group.clone();
    let landed = {
        let mut g = group.state();
        if g.inflight {
            return;
        }
        g.landed.take()
    };
    if let Some(l) = landed {
        install(meta, l);
    }
}

fn install(meta: &mut Meta, l: Landed) {
    meta.cache.land();
    if l.ok {
        for (home, _, img) in l.images {
            if home != 0 {
                meta.cache.put(home, img);
            }
        }
        for (s, l) in l.freed {
            if !meta.free.insert(s, l) {
                meta.free_loaded = false;
            }
        }
        meta.log_head = l.head;
        // The group's blocks are home: readers read them there (the
        // snapshot published at the gather carried them).
        crate::snapshot::publish(meta);
    } else {
        // Part of the group may be on media: what memory knows of it is
        // not sure any more (the next mount replays the commit).
        meta.cache.clear();
        meta.log_head.clear();
        meta.shutdown
            .get_or_insert_with(|| "writing a group of transactions failed".into());
    }
}

/// Waits until the transactions committed in memory with `ticket` are
/// durable, leading the group's commit when no other thread does. Called
/// with no lock held. Every waiter of a group that fails gets an error.
pub(crate) fn wait_durable(
    dev: &dyn Device,
    meta: &Mutex<Meta>,
    group: &Group,
    ticket: u64,
) -> Result<()> {
    let mut g = group.state();
    g.waiting += 1;
    group.cv.notify_all();
    let r = loop {
        if g.durable >= ticket {
            break Ok(());
        }
        if let Some(why) = &g.failed {
            break Err(FsError::Io(format!("committing metadata failed: {why}")));
        }
        if g.inflight {
            g = group.wait(g);
            continue;
        }
        // Lead: claimed under the metadata lock, so that a commit made
        // under the lock (which waits for the group written) never waits
        // for a leader that waits for the lock.
        drop(g);
        let mut m = lock(meta);
        g = group.state();
        if g.inflight || g.durable >= ticket || g.failed.is_some() {
            drop(m);
            continue;
        }
        g.inflight = true;
        // The group written before lands first (settle leaves it while a
        // group is claimed): the cache must say what media holds.
        let landed = g.landed.take();
        if g.hold > 0 {
            drop(m);
            while g.waiting < g.hold {
                g = group.wait(g);
            }
            g.hold = 0;
            drop(g);
            m = lock(meta);
        } else {
            drop(g);
        }
        if let Some(l) = landed {
            install(&mut m, l);
        }
        let flight = gather(dev, &mut m);
        drop(m);
        let (res, landed) = match flight {
            Ok(Some(f)) => write(dev, f),
            Ok(None) => (Ok(None), None),
            Err(e) => (Err(e.to_string()), None),
        };
        g = group.state();
        g.inflight = false;
        g.landed = landed;
        match res {
            Ok(Some(seq)) => g.durable = g.durable.max(seq),
            Ok(None) => {}
            Err(why) => {
                g.failed.get_or_insert(why);
            }
        }
        group.cv.notify_all();
    };
    g.waiting -= 1;
    r
}

/// The leader's part under the metadata lock: one commit of every
/// transaction committed in memory, prepared and installed in memory.
/// None when there is nothing to write (a commit under the lock took them
/// in already).
fn gather(dev: &dyn Device, meta: &mut Meta) -> Result<Option<Flight>> {
    if let Some(why) = &meta.shutdown {
        return Err(FsError::Shutdown(why.clone()));
    }
    if meta.lazy_txs == 0 {
        // Everything committed is durable (a commit under the lock took
        // the group in): its sequence number is one before the next.
        meta.group.durable(meta.seq.saturating_sub(1));
        return Ok(None);
    }
    let r = crate::tx::Tx::open_flight(dev, meta).and_then(|tx| tx.commit());
    match r {
        Ok(()) => Ok(meta.flight.take()),
        Err(e) => {
            // The transactions in memory cannot be made durable.
            let why = format!("committing a group of transactions failed: {e}");
            meta.shutdown.get_or_insert(why);
            Err(e)
        }
    }
}

/// The leader's part without the lock: the journal commit and its fences.
type Written = (std::result::Result<Option<u64>, String>, Option<Landed>);

fn write(dev: &dyn Device, mut f: Flight) -> Written {
    let known = journal::Known {
        homes: f.homes.iter().map(|h| h.as_deref()).collect(),
        same_replica: std::mem::take(&mut f.same_replica),
    };
    let r = journal::commit(
        dev,
        &f.geo,
        f.fs_id,
        f.seq,
        &f.images,
        &f.fresh,
        &known,
        &mut f.head,
        (f.intents_at, &f.intents),
    );
    drop(known);
    let ok = r.is_ok();
    let landed = Landed {
        ok,
        images: std::mem::take(&mut f.images),
        freed: std::mem::take(&mut f.freed),
        head: std::mem::take(&mut f.head),
    };
    let res = match r {
        Ok(()) => Ok(Some(f.seq)),
        Err(e) => Err(format!("writing metadata failed: {e}")),
    };
    (res, Some(landed))
}

/// Hooks for tests that need a group formed deterministically (the
/// `testing` feature; not part of the API).
#[cfg(feature = "testing")]
impl crate::fs::Fs {
    /// The next group commit's leader waits, before it gathers the group,
    /// until `n` threads (itself included) wait for their transactions.
    pub fn test_hold_group_commit(&self, n: usize) {
        lock(&self.inner.meta).group.hold(n);
    }

    /// Lock-free reads done again on the locked path so far.
    pub fn test_snapshot_fallbacks(&self) -> u64 {
        let p = lock(&self.inner.meta).published.clone();
        p.fallbacks.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Threads waiting for a group commit now.
    pub fn test_group_waiting(&self) -> usize {
        let group = lock(&self.inner.meta).group.clone();
        group.waiting()
    }
}
