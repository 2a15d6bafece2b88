//! Resolving faults: on the faulting thread when that is safe, else by
//! resolver threads.
//!
//! A fault on a view that the handler cannot answer from the page's record
//! alone (a store to a read-only page, any access to a page not mapped yet)
//! needs a transaction, locks and allocation.
//!
//! # On the faulting thread ([`in_thread`])
//!
//! The handler runs the resolution itself, in the signal handler, when:
//! - the thread is not inside daxfs ([`Inside`]: set while daxfs code that
//!   may hold its locks or touch a caller's buffer runs, and while the thread
//!   resolves a fault itself, so a fault there never recurses);
//! - the handler runs on an alternate signal stack of 256 KiB
//!   (`daxfs_device::fault::signal_stack_room`: the standard library gives
//!   its threads a few KiB, too little for a transaction; `File::map` and
//!   `View::prepare_thread` give the thread a big one);
//! - the faulting code was not itself running on the alternate stack
//!   (`Fault::in_signal_handler`: a signal handler, which may have
//!   interrupted the allocator);
//! - it is not a resolver thread, and in-thread resolution is on
//!   ([`set_enabled`]).
//!
//! Why this is safe although it allocates and takes locks in a signal
//! handler: the interrupted instruction is a load or store of view memory.
//! daxfs never touches view memory while holding a lock (buffers that
//! overlap a view go through bounce buffers outside the locks), so the
//! thread holds no daxfs lock; the [`Inside`] count makes sure of it where
//! daxfs copies a caller's buffer, and the resolution only *tries* the
//! file's data lock (a busy lock hands the fault to the resolvers, which
//! wait for it as before). The global allocator is not interrupted either:
//! neither the standard allocator nor daxfs touch view memory while inside
//! it. (An application whose own allocator keeps its heap in a view, that
//! faults on a view while holding a lock the resolution needs, or that
//! touches views from its own signal handlers running on the ordinary stack
//! (which may have interrupted the allocator), must turn this off with
//! [`set_enabled`]; its faults then go to the resolvers as before.) SIGSEGV and SIGBUS are blocked inside the handler, and the
//! resolution's device copies are machine-check safe, which relies on
//! catching a fault: it runs with both unblocked
//! (`daxfs_device::fault::with_faults_unblocked`; the dispatcher is
//! reentrant). A panic is caught (`catch_unwind`) and answers SIGBUS, never
//! unwinding through the signal frame.
//!
//! # Handed to the resolver threads ([`submit`])
//!
//! Otherwise the handler, on the faulting thread, puts the fault into a slot
//! of a fixed table, wakes the resolver threads, and waits on the slot until
//! a resolver writes the answer (retry, SIGBUS with a memory error, SIGBUS
//! with an address error, or not a view fault).
//!
//! # Async-signal safety of the hand-off
//!
//! The handler side ([`submit`]) touches only statics (atomics in a fixed
//! table), a `const`-initialised thread-local without destructor, and the
//! `futex` and `sched_yield` system calls. It never allocates or locks.
//!
//! # Invariants
//!
//! - A slot goes FREE → CLAIMED (the handler fills it) → QUEUED → TAKEN (one
//!   resolver owns it) → ANSWERED → FREE (the handler read the answer). Only
//!   the handler that claimed a slot moves it out of CLAIMED and ANSWERED;
//!   only the resolver that took it writes its answer.
//! - `WORK` is bumped after every QUEUED store, and a resolver reads it before
//!   scanning the table and sleeps only while it is unchanged, so no queued
//!   fault waits for a later one to wake a resolver.
//! - Resolver threads never touch view memory, and a fault raised on one of
//!   them is not queued (it would wait for itself).
use std::cell::Cell;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Re-execute the faulting instruction.
pub(crate) const RETRY: u32 = 1;
/// Deliver SIGBUS `BUS_MCEERR_AR` (the page's data was lost).
pub(crate) const MEMORY_ERROR: u32 = 2;
/// Deliver SIGBUS `BUS_ADRERR` (past end of file, or the fault could not be
/// resolved: no space, file system shut down).
pub(crate) const BUS_ERROR: u32 = 3;
/// Not a fault daxfs resolves (a store to a read-only view): the handler
/// installed before ours gets it.
pub(crate) const NOT_MINE: u32 = 4;
/// An in-thread resolution could not start (the file's data lock is busy):
/// hand the fault to the resolvers.
pub(crate) const HAND_OFF: u32 = 5;

const FREE: u32 = 0;
const CLAIMED: u32 = 1;
const QUEUED: u32 = 2;
const TAKEN: u32 = 3;
const ANSWERED: u32 = 4;

const NSLOTS: usize = 64;

struct Slot {
    state: AtomicU32,
    view: AtomicUsize,
    addr: AtomicUsize,
    write: AtomicU32,
    answer: AtomicU32,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            state: AtomicU32::new(FREE),
            view: AtomicUsize::new(0),
            addr: AtomicUsize::new(0),
            write: AtomicU32::new(0),
            answer: AtomicU32::new(0),
        }
    }
}

static SLOTS: [Slot; NSLOTS] = [const { Slot::new() }; NSLOTS];
/// Bumped for every queued fault; resolvers sleep on it.
static WORK: AtomicU32 = AtomicU32::new(0);
/// Resolver threads asleep on `WORK` (wakes are skipped when none sleeps).
static SLEEPING: AtomicU32 = AtomicU32::new(0);
/// Set when resolved faults left work for idle time (lazy commits to make
/// durable): the next resolver to find no fault for a while runs the idle
/// work.
static IDLE_WORK: AtomicBool = AtomicBool::new(false);
/// How long the resolvers wait for another fault before the idle work.
const IDLE_DELAY_NS: i64 = 2_000_000;
/// Resolver threads started, and those working on a fault now.
static THREADS: AtomicU32 = AtomicU32::new(0);
static BUSY: AtomicU32 = AtomicU32::new(0);
/// The most resolver threads: the pool grows while every resolver is busy
/// (each may wait for a file's data lock), so that a fault taken by a thread
/// holding that lock still finds a resolver.
const MAX_THREADS: u32 = 64;

/// Bumped by every fault resolved on its own thread: such faults do not
/// pass through `WORK`, yet they postpone the idle work like queued ones.
static ACTIVITY: AtomicU32 = AtomicU32::new(0);
/// Whether faults may be resolved on the faulting thread.
static IN_THREAD: AtomicBool = AtomicBool::new(true);
/// Faults resolved on their own thread and faults handed to the resolvers,
/// process-wide.
static RESOLVED_IN_THREAD: AtomicU64 = AtomicU64::new(0);
static HANDED_OFF: AtomicU64 = AtomicU64::new(0);
/// The least stack an in-thread resolution starts with.
const MIN_STACK: usize = 160 * 1024;

thread_local! {
    static IS_RESOLVER: Cell<bool> = const { Cell::new(false) };
    /// How deep the thread is inside daxfs code that must not be
    /// interrupted by an in-thread resolution (see [`Inside`]).
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// While alive, the thread counts as inside daxfs: a fault it takes is
/// handed to the resolver threads instead of being resolved on it.
pub(crate) struct Inside(());

impl Inside {
    pub(crate) fn enter() -> Inside {
        DEPTH.with(|d| d.set(d.get() + 1));
        Inside(())
    }
}

impl Drop for Inside {
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get() - 1));
    }
}

/// Turns resolution on the faulting thread on or off (process-wide; on by
/// default).
pub(crate) fn set_enabled(on: bool) {
    IN_THREAD.store(on, Ordering::SeqCst);
}

/// Faults resolved on their own thread and faults handed to resolver
/// threads since the process started.
pub(crate) fn counts() -> (u64, u64) {
    (
        RESOLVED_IN_THREAD.load(Ordering::Relaxed),
        HANDED_OFF.load(Ordering::Relaxed),
    )
}

/// Resolves a fault on the faulting thread (in its signal handler) with
/// `work` when that is safe (see the module documentation); None when the
/// fault must go to the resolvers ([`submit`]).
pub(crate) fn in_thread(
    nested: bool,
    work: impl FnOnce() -> u32 + std::panic::UnwindSafe,
) -> Option<u32> {
    if nested
        || !IN_THREAD.load(Ordering::Relaxed)
        || IS_RESOLVER.with(Cell::get)
        || DEPTH.with(Cell::get) != 0
        || daxfs_device::fault::signal_stack_room() < MIN_STACK
    {
        return None;
    }
    let _inside = Inside::enter();
    let answer = daxfs_device::fault::with_faults_unblocked(|| {
        // A panic must not unwind through the signal frame.
        std::panic::catch_unwind(work).unwrap_or(BUS_ERROR)
    });
    if answer == HAND_OFF {
        return None;
    }
    RESOLVED_IN_THREAD.fetch_add(1, Ordering::Relaxed);
    ACTIVITY.fetch_add(1, Ordering::SeqCst);
    Some(answer)
}

const FUTEX_WAIT_PRIVATE: i32 = 128;
const FUTEX_WAKE_PRIVATE: i32 = 129;

fn futex_wait(word: &AtomicU32, expected: u32) {
    // SAFETY: the futex system call on a live, aligned 32-bit atomic; a
    // null timeout waits until woken (or a spurious return, which every
    // caller handles by re-checking).
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            FUTEX_WAIT_PRIVATE,
            expected,
            std::ptr::null::<libc::timespec>(),
        );
    }
}

/// Waits on `word` while it holds `expected`, for at most `ns` nanoseconds.
fn futex_wait_for(word: &AtomicU32, expected: u32, ns: i64) {
    let t = libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: as in `futex_wait`; the timeout is a live timespec (relative,
    // as FUTEX_WAIT takes it).
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            FUTEX_WAIT_PRIVATE,
            expected,
            &t as *const libc::timespec,
        );
    }
}

/// Asks the resolvers to run the idle work once no fault has come for a
/// short while. Faults resolved on their own threads never wake a resolver,
/// so the first request after idle work wakes one, to time the pause.
pub(crate) fn want_idle_work() {
    if !IDLE_WORK.swap(true, Ordering::SeqCst) && SLEEPING.load(Ordering::SeqCst) > 0 {
        WORK.fetch_add(1, Ordering::SeqCst);
        futex_wake(&WORK, 1);
    }
}

fn futex_wake(word: &AtomicU32, n: i32) {
    // SAFETY: as above; waking never touches memory.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), FUTEX_WAKE_PRIVATE, n);
    }
}

/// Queues a fault at `addr` on the view at `view` and waits for the answer.
/// Async-signal-safe (see the module documentation).
pub(crate) fn submit(view: usize, addr: usize, write: bool) -> u32 {
    if IS_RESOLVER.with(Cell::get) {
        return NOT_MINE;
    }
    HANDED_OFF.fetch_add(1, Ordering::Relaxed);
    let slot = 'claim: loop {
        for s in &SLOTS {
            if s.state.load(Ordering::Relaxed) == FREE
                && s.state
                    .compare_exchange(FREE, CLAIMED, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                break 'claim s;
            }
        }
        // Every slot is busy: let a resolver run.
        // SAFETY: a plain system call.
        unsafe { libc::sched_yield() };
    };
    slot.view.store(view, Ordering::Relaxed);
    slot.addr.store(addr, Ordering::Relaxed);
    slot.write.store(u32::from(write), Ordering::Relaxed);
    slot.state.store(QUEUED, Ordering::SeqCst);
    WORK.fetch_add(1, Ordering::SeqCst);
    if SLEEPING.load(Ordering::SeqCst) > 0 {
        futex_wake(&WORK, 1);
    }
    // A short spin first: a fault needing no transaction is answered in a
    // few microseconds. Longer spins cost more than they save when the
    // faulting thread and the resolver share a CPU.
    let mut spins = 0u32;
    loop {
        let s = slot.state.load(Ordering::Acquire);
        if s == ANSWERED {
            break;
        }
        if spins < 200 {
            spins += 1;
            std::hint::spin_loop();
            continue;
        }
        futex_wait(&slot.state, s);
    }
    let answer = slot.answer.load(Ordering::Relaxed);
    slot.state.store(FREE, Ordering::Release);
    answer
}

/// What the resolver threads run: `work(view, addr, write)` resolves one
/// fault and returns the answer; `idle()` runs when [`want_idle_work`] was
/// called and no fault has come for a short while.
#[derive(Clone, Copy)]
pub(crate) struct Jobs {
    pub work: fn(usize, usize, bool) -> u32,
    pub idle: fn(),
}

/// Starts the resolver threads (once per process).
pub(crate) fn start(work: Jobs) -> std::io::Result<()> {
    static STARTED: OnceLock<Result<(), String>> = OnceLock::new();
    let r = STARTED.get_or_init(|| {
        let n = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .clamp(2, 8);
        for _ in 0..n {
            spawn(work).map_err(|e| e.to_string())?;
        }
        Ok(())
    });
    r.clone().map_err(std::io::Error::other)
}

fn spawn(work: Jobs) -> std::io::Result<()> {
    let i = THREADS.fetch_add(1, Ordering::SeqCst);
    let r = std::thread::Builder::new()
        .name(format!("daxfs-views-{i}"))
        .spawn(move || run(work));
    if r.is_err() {
        THREADS.fetch_sub(1, Ordering::SeqCst);
    }
    r.map(drop)
}

/// One resolver thread: takes queued faults until the process ends.
fn run(jobs: Jobs) {
    let work = jobs.work;
    IS_RESOLVER.with(|r| r.set(true));
    loop {
        let seen = WORK.load(Ordering::SeqCst);
        let mut did = false;
        for s in &SLOTS {
            if s.state.load(Ordering::Acquire) != QUEUED
                || s.state
                    .compare_exchange(QUEUED, TAKEN, Ordering::Acquire, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            did = true;
            // The last idle resolver starts another before it may block.
            let busy = BUSY.fetch_add(1, Ordering::SeqCst) + 1;
            let threads = THREADS.load(Ordering::SeqCst);
            if busy >= threads && threads < MAX_THREADS {
                let _ = spawn(jobs);
            }
            let (view, addr) = (
                s.view.load(Ordering::Relaxed),
                s.addr.load(Ordering::Relaxed),
            );
            let write = s.write.load(Ordering::Relaxed) != 0;
            // A panic must still answer, or the faulting thread waits forever.
            let answer = std::panic::catch_unwind(|| work(view, addr, write)).unwrap_or(BUS_ERROR);
            BUSY.fetch_sub(1, Ordering::SeqCst);
            s.answer.store(answer, Ordering::Relaxed);
            s.state.store(ANSWERED, Ordering::Release);
            futex_wake(&s.state, 1);
        }
        if !did {
            SLEEPING.fetch_add(1, Ordering::SeqCst);
            if IDLE_WORK.load(Ordering::SeqCst) {
                // Idle work waits for a pause in the faults (queued or
                // resolved on their own threads), so that a run of faults
                // shares it.
                let act = ACTIVITY.load(Ordering::SeqCst);
                if WORK.load(Ordering::SeqCst) == seen {
                    futex_wait_for(&WORK, seen, IDLE_DELAY_NS);
                }
                if WORK.load(Ordering::SeqCst) == seen
                    && ACTIVITY.load(Ordering::SeqCst) == act
                    && IDLE_WORK.swap(false, Ordering::SeqCst)
                {
                    SLEEPING.fetch_sub(1, Ordering::SeqCst);
                    let _ = std::panic::catch_unwind(jobs.idle);
                    continue;
                }
            } else if WORK.load(Ordering::SeqCst) == seen {
                futex_wait(&WORK, seen);
            }
            SLEEPING.fetch_sub(1, Ordering::SeqCst);
        }
    }
}
