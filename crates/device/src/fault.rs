//! The process-wide SIGSEGV/SIGBUS handler and its dispatch to clients.
//!
//! One handler serves every part of the process that turns memory faults
//! into something other than death:
//!
//! 1. **The machine-check-safe routines** of the device layer (reads, writes,
//!    fills and flushes of device memory). A SIGSEGV or SIGBUS raised by the
//!    kernel while the instruction pointer lies inside them resumes the
//!    routine at its recovery label, which returns "faulted at address A";
//!    the device turns that into [`DeviceError::Media`](crate::DeviceError).
//! 2. **Range handlers** registered with [`register_range_handler`]: a
//!    SIGSEGV raised by the kernel at an address inside a registered range
//!    runs that range's callback, in the signal handler, which answers with
//!    a [`FaultAction`]: retry the instruction (the callback fixed the page,
//!    e.g. made it writable after a copy-on-write), deliver SIGBUS with
//!    `si_code = BUS_MCEERR_AR` at an address (the page is lost, as a real
//!    memory error would report it), deliver SIGBUS with `BUS_ADRERR` (an
//!    access past the end of a mapped file), or not mine.
//! 3. **Everything else** goes to the handler that was installed before this
//!    one (Rust's stack-overflow handler, an application's own handler), or,
//!    when there was none, gets the default action: an unrelated segfault
//!    still kills the process with SIGSEGV.
//!
//! A SIGSEGV at an address inside a registered range goes to its handler
//! first, even while the instruction pointer lies in the device routines
//! (the other side of a device copy may be memory of a range, such as a
//! file's mmap view given to `read`): on retry the copy goes on; when the
//! handler asks for SIGBUS there, the copy fails instead, and the device
//! reports an address fault (`EFAULT`) of the caller's buffer.
//!
//! Only faults raised by the kernel (`si_code > 0`) are considered for 1 and
//! 2; signals sent with `kill`/`tgkill`/`sigqueue` go straight to 3. Only
//! SIGSEGV is offered to range handlers: a SIGBUS outside the device routines
//! (a real memory error in an application's mapping, or one this module
//! delivered on a range handler's request) goes to 3 unchanged.
//!
//! # Rules for range-handler callbacks (async-signal safety)
//!
//! A callback runs inside a signal handler, on the faulting thread, at an
//! arbitrary point of that thread's execution (which may hold the allocator's
//! lock, a mutex, a `RefCell` borrow...), possibly on a small alternate
//! signal stack, and possibly on several threads at once. So a callback:
//!
//! - may read and write atomics, read data that stays unchanged while the
//!   registration lives, and make raw system calls that are safe in signal
//!   handlers on Linux (`mprotect`, `madvise`, `mmap` with `MAP_FIXED` over
//!   its own range, `write`);
//! - must not allocate or free memory, take locks (`Mutex`, `RwLock`,
//!   `OnceLock` initialisation), print (`println!`, `eprintln!`), touch
//!   thread-locals that have destructors or lazy initialisation, call into
//!   the device API, or register or unregister handlers;
//! - must not panic: a panic cannot unwind out of the handler and aborts the
//!   process;
//! - should use little stack, unless [`signal_stack_room`] says there is
//!   room (the handler may run on a thread's ordinary stack, or on an
//!   alternate stack of a few KiB given by someone else);
//! - must make progress: answering [`FaultAction::Retry`] without having
//!   made the access possible faults again at once, forever.
//!
//! Everything a callback captures lives until
//! [`RangeRegistration::unregister`] (or the registration's drop) returns;
//! that call waits for callbacks running on other threads to finish, so it
//! must not be made from a callback or while the thread holds something a
//! callback waits for.
//!
//! # Invariants
//!
//! - The handler is installed once per process ([`install`]), for SIGSEGV
//!   and SIGBUS, with `SA_SIGINFO | SA_ONSTACK` and both signals blocked
//!   while it runs. The actions it replaced are saved first and never change
//!   afterwards.
//! - The registry is a list of fixed-size chunks of slots that are never
//!   freed; the handler walks it without locks. A slot goes FREE → CLAIMED →
//!   LIVE → DYING → FREE; registration and unregistration are serialised by
//!   a mutex. The handler counts itself into a slot (`active`) before
//!   re-checking that it is LIVE, and unregistration marks it DYING before
//!   waiting for `active` to drop to zero (both sequentially consistent), so
//!   a callback is never freed while it runs.
//! - The handler preserves `errno`.
use std::cell::UnsafeCell;
use std::ffi::{c_int, c_void};
use std::mem::MaybeUninit;
use std::sync::Mutex;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, AtomicUsize, Ordering};

/// `si_code` of SIGBUS for a memory error consumed by the thread (action
/// required), as Linux defines it.
pub const BUS_MCEERR_AR: i32 = 4;
/// `si_code` of SIGBUS for a memory error found in the background (action
/// optional).
pub const BUS_MCEERR_AO: i32 = 5;
/// `si_code` of SIGBUS for an access to a nonexistent physical address,
/// such as a page of a file mapping that lies past end of file.
pub const BUS_ADRERR: i32 = 2;

/// A fault offered to a range handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Fault {
    /// The faulting address (`si_addr`).
    pub addr: usize,
    /// The signal (always SIGSEGV for range handlers today).
    pub signal: i32,
    /// The kernel's `si_code` (`SEGV_MAPERR` = 1, `SEGV_ACCERR` = 2, ...).
    pub code: i32,
    /// Whether the access was a write, when the CPU says (x86_64: the page
    /// fault error code); `None` where unknown.
    pub write: Option<bool>,
    /// Whether the faulting code may itself be a signal handler: its stack
    /// pointer lay in the thread's alternate signal stack (x86_64; always
    /// true elsewhere, where the saved stack pointer is not read). Such code
    /// may have interrupted anything, the allocator included.
    pub in_signal_handler: bool,
}

/// What a range handler wants done about a fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultAction {
    /// Handled: re-execute the faulting instruction.
    Retry,
    /// The memory is lost: deliver SIGBUS to the faulting thread with
    /// `si_code = BUS_MCEERR_AR`, `si_addr = addr` and `si_addr_lsb = 12`
    /// (a 4 KiB page), as the kernel does when a thread consumes poison. It
    /// arrives as the handler returns, before the instruction is retried; an
    /// application without a SIGBUS handler dies of it.
    Sigbus {
        /// The address to report.
        addr: usize,
    },
    /// An access outside the object behind the range (e.g. a file mapping
    /// past end of file): deliver SIGBUS with `si_code = BUS_ADRERR` and
    /// `si_addr = addr`, as the kernel does for such an access.
    BusError {
        /// The address to report.
        addr: usize,
    },
    /// Not this handler's fault: treat it as if no handler were registered.
    NotMine,
}

/// Why a range handler could not be registered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// The range is empty or wraps around the address space.
    #[error("invalid range [{start:#x}, +{len:#x})")]
    InvalidRange {
        /// Start of the refused range.
        start: usize,
        /// Its length.
        len: usize,
    },
    /// The range overlaps one that is registered already.
    #[error("range [{start:#x}, +{len:#x}) overlaps a registered range")]
    Overlap {
        /// Start of the refused range.
        start: usize,
        /// Its length.
        len: usize,
    },
    /// The signal handler could not be installed.
    #[error("installing the fault handler: {0}")]
    Install(std::io::Error),
}

type Callback = Box<dyn Fn(&Fault) -> FaultAction + Send + Sync + 'static>;

const FREE: u8 = 0;
const CLAIMED: u8 = 1;
const LIVE: u8 = 2;
const DYING: u8 = 3;

struct Slot {
    state: AtomicU8,
    active: AtomicUsize,
    start: AtomicUsize,
    end: AtomicUsize,
    /// A `Box<Callback>` turned into a raw pointer while LIVE or DYING.
    callback: AtomicPtr<Callback>,
    /// The range is made inaccessible in child processes (see
    /// [`RangeRegistration::keep_out_of_children`]).
    no_fork: AtomicBool,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            state: AtomicU8::new(FREE),
            active: AtomicUsize::new(0),
            start: AtomicUsize::new(0),
            end: AtomicUsize::new(0),
            callback: AtomicPtr::new(std::ptr::null_mut()),
            no_fork: AtomicBool::new(false),
        }
    }
}

const SLOTS_PER_CHUNK: usize = 32;

struct Chunk {
    slots: [Slot; SLOTS_PER_CHUNK],
    /// The next chunk (leaked, never freed), or null.
    next: AtomicPtr<Chunk>,
}

impl Chunk {
    const fn new() -> Chunk {
        Chunk {
            slots: [const { Slot::new() }; SLOTS_PER_CHUNK],
            next: AtomicPtr::new(std::ptr::null_mut()),
        }
    }
}

static FIRST_CHUNK: Chunk = Chunk::new();
/// Live registrations: [`overlaps_registered_range`] answers at once while
/// there are none.
static LIVE_COUNT: AtomicUsize = AtomicUsize::new(0);
/// Serialises registration and unregistration (never taken by the handler).
static REGISTRY_LOCK: Mutex<()> = Mutex::new(());

/// Visits every slot of the registry (lock-free; usable in the handler).
fn for_each_slot(mut f: impl FnMut(&'static Slot) -> bool) {
    let mut chunk: &'static Chunk = &FIRST_CHUNK;
    loop {
        for s in &chunk.slots {
            if !f(s) {
                return;
            }
        }
        let next = chunk.next.load(Ordering::Acquire);
        if next.is_null() {
            return;
        }
        // SAFETY: chunks are created by `Box::leak`-style leaking in
        // `claim_slot`, fully initialised before being published with a
        // Release store, and never freed, so a non-null `next` points to a
        // live `Chunk` for the rest of the process.
        chunk = unsafe { &*next };
    }
}

/// A registered range handler; unregistered when dropped.
#[must_use = "the handler is unregistered when this is dropped"]
pub struct RangeRegistration {
    slot: &'static Slot,
    start: usize,
    len: usize,
}

impl std::fmt::Debug for RangeRegistration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RangeRegistration")
            .field("start", &self.start)
            .field("len", &self.len)
            .finish()
    }
}

impl RangeRegistration {
    /// Start of the range.
    pub fn start(&self) -> usize {
        self.start
    }

    /// Length of the range.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: ranges are never empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// From now on until the registration ends, a child process made by
    /// `fork` gets the whole range inaccessible (a handler installed with
    /// `pthread_atfork` maps it `PROT_NONE` in the child), whatever the
    /// parent had mapped there: the per-mapping `MADV_DONTFORK` this
    /// replaces costs a system call per mapping. A child made without the
    /// C library's `fork` (a raw `clone` without `CLONE_VM`) is not covered;
    /// `vfork` and `posix_spawn` share the parent's memory and copy nothing.
    pub fn keep_out_of_children(&self) -> std::io::Result<()> {
        install_fork_handler()?;
        self.slot.no_fork.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Unregisters the handler. Waits until no thread runs its callback; after
    /// it returns the callback is dropped and never called again. Must not be
    /// called from a callback.
    pub fn unregister(self) {
        drop(self);
    }
}

impl Drop for RangeRegistration {
    fn drop(&mut self) {
        let cb = {
            let _g = REGISTRY_LOCK.lock().unwrap_or_else(|p| p.into_inner());
            self.slot.state.store(DYING, Ordering::SeqCst);
            LIVE_COUNT.fetch_sub(1, Ordering::SeqCst);
            while self.slot.active.load(Ordering::SeqCst) != 0 {
                std::hint::spin_loop();
                std::thread::yield_now();
            }
            let cb = self
                .slot
                .callback
                .swap(std::ptr::null_mut(), Ordering::AcqRel);
            self.slot.state.store(FREE, Ordering::Release);
            cb
        };
        if !cb.is_null() {
            // SAFETY: `cb` came from `Box::into_raw` in
            // `register_range_handler`, was owned by this registration's slot,
            // and no handler runs it any more (the slot was DYING with
            // `active == 0`, and is FREE now), so it is dropped exactly once.
            drop(unsafe { Box::from_raw(cb) });
        }
    }
}

/// Finds a FREE slot and marks it CLAIMED, growing the registry if needed.
/// Called with `REGISTRY_LOCK` held.
fn claim_slot() -> &'static Slot {
    let mut found = None;
    let mut last: &'static Chunk = &FIRST_CHUNK;
    let mut chunk: &'static Chunk = &FIRST_CHUNK;
    loop {
        for s in &chunk.slots {
            if s.state.load(Ordering::Acquire) == FREE {
                found = Some(s);
                break;
            }
        }
        if found.is_some() {
            break;
        }
        last = chunk;
        let next = chunk.next.load(Ordering::Acquire);
        if next.is_null() {
            break;
        }
        // SAFETY: as in `for_each_slot`: published chunks are never freed.
        chunk = unsafe { &*next };
    }
    let slot = match found {
        Some(s) => s,
        None => {
            let fresh: &'static Chunk = Box::leak(Box::new(Chunk::new()));
            last.next
                .store(fresh as *const Chunk as *mut Chunk, Ordering::Release);
            &fresh.slots[0]
        }
    };
    slot.state.store(CLAIMED, Ordering::Relaxed);
    slot
}

/// Registers `callback` for SIGSEGV faults at addresses in
/// `[start, start + len)`. Ranges must not overlap. Installs the process-wide
/// handler if needed. See the module documentation for what the callback
/// may do.
pub fn register_range_handler<F>(
    start: usize,
    len: usize,
    callback: F,
) -> Result<RangeRegistration, RegisterError>
where
    F: Fn(&Fault) -> FaultAction + Send + Sync + 'static,
{
    let end = match start.checked_add(len) {
        Some(end) if len > 0 => end,
        _ => return Err(RegisterError::InvalidRange { start, len }),
    };
    install().map_err(RegisterError::Install)?;
    let _ = ensure_alt_stack();
    let cb: Box<Callback> = Box::new(Box::new(callback));
    let _g = REGISTRY_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let mut overlap = false;
    for_each_slot(|s| {
        if s.state.load(Ordering::Acquire) == LIVE {
            let (a, b) = (
                s.start.load(Ordering::Relaxed),
                s.end.load(Ordering::Relaxed),
            );
            if a < end && start < b {
                overlap = true;
                return false;
            }
        }
        true
    });
    if overlap {
        return Err(RegisterError::Overlap { start, len });
    }
    let slot = claim_slot();
    slot.start.store(start, Ordering::Relaxed);
    slot.end.store(end, Ordering::Relaxed);
    slot.callback.store(Box::into_raw(cb), Ordering::Relaxed);
    slot.no_fork.store(false, Ordering::Relaxed);
    slot.state.store(LIVE, Ordering::SeqCst);
    LIVE_COUNT.fetch_add(1, Ordering::SeqCst);
    Ok(RangeRegistration { slot, start, len })
}

/// True when `[start, start + len)` overlaps a registered range (lock-free;
/// one atomic load while nothing is registered). A caller that is about to
/// copy to or from a buffer while holding locks a range handler may need
/// asks this first, and copies through [`copy_guarded`] with no locks held
/// instead.
pub fn overlaps_registered_range(start: usize, len: usize) -> bool {
    if len == 0 || LIVE_COUNT.load(Ordering::SeqCst) == 0 {
        return false;
    }
    let end = start.saturating_add(len);
    let mut found = false;
    for_each_slot(|s| {
        if s.state.load(Ordering::Acquire) == LIVE
            && s.start.load(Ordering::Relaxed) < end
            && start < s.end.load(Ordering::Relaxed)
        {
            found = true;
            return false;
        }
        true
    });
    found
}

/// Copies `len` bytes from `src` to `dst` where either side may be memory
/// of a registered range: a fault there is offered to the range's handler
/// (on retry the copy goes on); when the handler answers SIGBUS, or the
/// page cannot be reached at all, the copy stops and fails with `EFAULT`
/// instead of the thread getting a signal (on x86_64; elsewhere the signal
/// is delivered). Bytes before the faulting one may have been copied.
///
/// # Safety
///
/// - Both ranges must stay mapped into the process for the whole call
///   (their pages may be inaccessible) and must not overlap.
/// - No Rust reference may cover either range other than through the
///   pointers given (memory of a range may change at any time: it is only
///   copied, never borrowed).
pub unsafe fn copy_guarded(dst: *mut u8, src: *const u8, len: usize) -> std::io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    install()?;
    let r = if in_registered_range(src as usize) {
        // SAFETY: the caller's contract is the routine's (the source side,
        // which it aligns, is the one that may fault).
        unsafe { crate::mcsafe::read(dst, src, len) }
    } else {
        // SAFETY: as above (the destination side is the aligned one).
        unsafe { crate::mcsafe::write(dst, src, len) }
    };
    r.map_err(|_| std::io::Error::from_raw_os_error(libc::EFAULT))
}

/// [`copy_guarded`] of `src` into `dst` (of the same length), for a caller
/// that was handed a buffer that may lie in a registered range.
pub fn copy_slice_guarded(dst: &mut [u8], src: &[u8]) -> std::io::Result<()> {
    assert_eq!(dst.len(), src.len(), "copy_slice_guarded: lengths differ");
    // SAFETY: both slices are valid for their length while borrowed here,
    // and a `&mut` and a `&` cannot overlap; they are used only through
    // these pointers during the copy.
    unsafe { copy_guarded(dst.as_mut_ptr(), src.as_ptr(), src.len()) }
}

/// True when `addr` lies in a registered range (lock-free).
pub(crate) fn in_registered_range(addr: usize) -> bool {
    let mut found = false;
    for_each_slot(|s| {
        if s.state.load(Ordering::Acquire) == LIVE
            && s.start.load(Ordering::Relaxed) <= addr
            && addr < s.end.load(Ordering::Relaxed)
        {
            found = true;
            return false;
        }
        true
    });
    found
}

/// Runs the callback of the range holding `fault.addr`, if any.
fn dispatch(fault: &Fault) -> FaultAction {
    let mut action = FaultAction::NotMine;
    for_each_slot(|s| {
        if s.state.load(Ordering::Acquire) != LIVE {
            return true;
        }
        let (a, b) = (
            s.start.load(Ordering::Relaxed),
            s.end.load(Ordering::Relaxed),
        );
        if !(a <= fault.addr && fault.addr < b) {
            return true;
        }
        s.active.fetch_add(1, Ordering::SeqCst);
        if s.state.load(Ordering::SeqCst) == LIVE {
            // Reload under the `active` count: the slot cannot change now.
            let (a, b) = (
                s.start.load(Ordering::Relaxed),
                s.end.load(Ordering::Relaxed),
            );
            let cb = s.callback.load(Ordering::Acquire);
            if a <= fault.addr && fault.addr < b && !cb.is_null() {
                // SAFETY: the slot is LIVE and counted active, so its callback
                // (a leaked `Box<Callback>`) is not freed until `active` drops
                // back (see `RangeRegistration::drop`).
                action = unsafe { (*cb)(fault) };
            }
        }
        s.active.fetch_sub(1, Ordering::SeqCst);
        false
    });
    action
}

/// Installs [`in_forked_child`] as a `pthread_atfork` child handler (once).
fn install_fork_handler() -> std::io::Result<()> {
    static DONE: OnceLock<i32> = OnceLock::new();
    // SAFETY: registers a plain `extern "C" fn()` that lives for the
    // process; no prepare or parent handler.
    let r =
        *DONE.get_or_init(|| unsafe { libc::pthread_atfork(None, None, Some(in_forked_child)) });
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::from_raw_os_error(r))
    }
}

/// In a child just made by `fork` (one thread, no lock usable): maps the
/// ranges kept out of children inaccessible. Walks the registry without
/// locks, as the signal handler does; only system calls.
extern "C" fn in_forked_child() {
    for_each_slot(|s| {
        let st = s.state.load(Ordering::Acquire);
        if (st == LIVE || st == DYING) && s.no_fork.load(Ordering::Acquire) {
            let (a, b) = (
                s.start.load(Ordering::Relaxed),
                s.end.load(Ordering::Relaxed),
            );
            // SAFETY: replaces, in this child only, a range the parent
            // registered (its own reservation of addresses) with an
            // inaccessible anonymous mapping; the child never had
            // references into it (its memory is only reached through raw
            // pointers).
            unsafe {
                libc::mmap(
                    a as *mut c_void,
                    b - a,
                    libc::PROT_NONE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
                    -1,
                    0,
                )
            };
        }
        true
    });
}

/// A saved `sigaction`, written once before the handler is installed.
struct SavedAction {
    ready: AtomicBool,
    action: UnsafeCell<MaybeUninit<libc::sigaction>>,
}

// SAFETY: `action` is written once, before `ready` is set with Release, and
// only read after `ready` is seen with Acquire; it never changes afterwards.
unsafe impl Sync for SavedAction {}

impl SavedAction {
    const fn new() -> SavedAction {
        SavedAction {
            ready: AtomicBool::new(false),
            action: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }

    fn get(&self) -> Option<libc::sigaction> {
        if self.ready.load(Ordering::Acquire) {
            // SAFETY: initialised before `ready` was set, never written again.
            Some(unsafe { (*self.action.get()).assume_init() })
        } else {
            None
        }
    }
}

static OLD_SEGV: SavedAction = SavedAction::new();
static OLD_BUS: SavedAction = SavedAction::new();
static INSTALLED: AtomicBool = AtomicBool::new(false);
static INSTALL: OnceLock<Result<(), i32>> = OnceLock::new();

/// True once [`install`] has succeeded.
#[inline]
pub(crate) fn is_installed() -> bool {
    INSTALLED.load(Ordering::Acquire)
}

/// Installs the process-wide SIGSEGV/SIGBUS handler (once; later calls do
/// nothing). The device layer calls it before its first guarded access;
/// range registration calls it too.
///
/// If something replaces the handler afterwards, faults in device memory
/// kill the process again and range handlers stop working.
pub fn install() -> std::io::Result<()> {
    if is_installed() {
        return Ok(());
    }
    let r = *INSTALL.get_or_init(|| {
        // SAFETY: runs once (OnceLock); see `install_handlers`.
        let r = unsafe { install_handlers() };
        if r.is_ok() {
            let _ = ensure_alt_stack();
        }
        r
    });
    match r {
        Ok(()) => {
            INSTALLED.store(true, Ordering::Release);
            Ok(())
        }
        Err(errno) => Err(std::io::Error::from_raw_os_error(errno)),
    }
}

/// Saves the current actions of SIGSEGV and SIGBUS and installs ours.
///
/// # Safety
///
/// Must run at most once (it writes the saved actions).
unsafe fn install_handlers() -> Result<(), i32> {
    for (sig, saved) in [(libc::SIGSEGV, &OLD_SEGV), (libc::SIGBUS, &OLD_BUS)] {
        // SAFETY: an all-zero `sigaction` is a valid value (SIG_DFL, empty
        // flags); the mask is then set with the libc functions.
        let mut new: libc::sigaction = unsafe { std::mem::zeroed() };
        new.sa_sigaction = on_signal as *const () as usize;
        new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        // SAFETY: `new.sa_mask` is a valid, exclusively borrowed sigset_t.
        unsafe {
            libc::sigemptyset(&mut new.sa_mask);
            libc::sigaddset(&mut new.sa_mask, libc::SIGSEGV);
            libc::sigaddset(&mut new.sa_mask, libc::SIGBUS);
        }
        let mut old = MaybeUninit::<libc::sigaction>::uninit();
        // SAFETY: querying the current action into a local buffer.
        if unsafe { libc::sigaction(sig, std::ptr::null(), old.as_mut_ptr()) } != 0 {
            return Err(errno());
        }
        // SAFETY: `saved` is written only here, once (the caller's
        // contract), before `ready` publishes it; `sigaction` initialised
        // `old`.
        unsafe { (*saved.action.get()).write(old.assume_init()) };
        saved.ready.store(true, Ordering::Release);
        // SAFETY: `new` is a valid action whose handler is `on_signal`,
        // which has the SA_SIGINFO signature.
        if unsafe { libc::sigaction(sig, &new, std::ptr::null_mut()) } != 0 {
            return Err(errno());
        }
    }
    Ok(())
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The signal handler.
extern "C" fn on_signal(sig: c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    // SAFETY: `__errno_location` returns this thread's errno slot, valid
    // for the thread's life.
    let errno_slot = unsafe { libc::__errno_location() };
    // SAFETY: as above.
    let saved_errno = unsafe { *errno_slot };
    // SAFETY: the kernel passes a valid siginfo and ucontext for a handler
    // installed with SA_SIGINFO.
    unsafe { handle(sig, info, ctx) };
    // SAFETY: as above.
    unsafe { *errno_slot = saved_errno };
}

/// # Safety
///
/// Only for `on_signal`: `info` and `ctx` are what the kernel passed.
unsafe fn handle(sig: c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    // SAFETY: the kernel's siginfo is valid for reads.
    let code = unsafe { (*info).si_code };
    if code > 0 {
        // SAFETY: for kernel-generated SIGSEGV/SIGBUS the fault union member
        // is the one filled in.
        let addr = unsafe { (*info).si_addr() } as usize;
        // A registered range hears of its faults first, even inside the
        // guarded routines: the other side of a device copy may be memory
        // of a range (a read() into a buffer that is a file's mmap view).
        if sig == libc::SIGSEGV {
            let fault = Fault {
                addr,
                signal: sig,
                code,
                // SAFETY: as above.
                write: unsafe { write_access(ctx) },
                // SAFETY: as above.
                in_signal_handler: unsafe { interrupted_on_alt_stack(ctx) },
            };
            let signal = match dispatch(&fault) {
                FaultAction::Retry => return,
                FaultAction::Sigbus { addr } => Some((addr, BUS_MCEERR_AR, 12)),
                FaultAction::BusError { addr } => Some((addr, BUS_ADRERR, 0)),
                FaultAction::NotMine => None,
            };
            if let Some((at, code, lsb)) = signal {
                // Inside a guarded copy the copy fails (the device reports
                // an address fault) instead of the thread getting SIGBUS.
                // SAFETY: `ctx` is the kernel's ucontext for this signal;
                // then async-signal-safe system calls only.
                if unsafe { recover_guarded_access(ctx, addr) || raise_sigbus(at, code, lsb) } {
                    return;
                }
            }
        }
        // SAFETY: `ctx` is the kernel's ucontext for this signal.
        if unsafe { recover_guarded_access(ctx, addr) } {
            return;
        }
    }
    // SAFETY: same arguments as ours.
    unsafe { chain(sig, info, ctx) };
}

/// If the fault was raised inside the machine-check-safe routines, resumes
/// them at their recovery label with "faulted at `addr`" and returns true.
///
/// # Safety
///
/// `ctx` must be the ucontext the kernel passed to the handler.
#[cfg(target_arch = "x86_64")]
unsafe fn recover_guarded_access(ctx: *mut c_void, addr: usize) -> bool {
    let (begin, end) = crate::mcsafe::recoverable_range();
    let uc = ctx.cast::<libc::ucontext_t>();
    // SAFETY: the saved registers live in the kernel-built signal frame on
    // this thread's stack, valid and exclusively ours while the handler
    // runs; the kernel reloads them from there on return.
    let gregs = unsafe { &raw mut (*uc).uc_mcontext.gregs };
    // SAFETY: as above; REG_RIP indexes the 23-entry register array.
    let rip = unsafe { (*gregs)[libc::REG_RIP as usize] } as usize;
    if !(begin <= rip && rip < end) {
        return false;
    }
    // SAFETY: as above. The routines never move the stack pointer, so the
    // recovery label's `ret` returns to their caller with rax:rdx as the
    // result.
    unsafe {
        (*gregs)[libc::REG_RAX as usize] = 1;
        (*gregs)[libc::REG_RDX as usize] = addr as i64;
        (*gregs)[libc::REG_RIP as usize] = crate::mcsafe::recovery_address() as i64;
    }
    true
}

/// Without recoverable routines there is nothing to resume.
///
/// # Safety
///
/// None.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn recover_guarded_access(_ctx: *mut c_void, _addr: usize) -> bool {
    false
}

/// Whether the faulting access was a write (x86_64 page-fault error code,
/// bit 1).
///
/// # Safety
///
/// `ctx` must be the ucontext the kernel passed to the handler.
#[cfg(target_arch = "x86_64")]
unsafe fn write_access(ctx: *mut c_void) -> Option<bool> {
    let uc = ctx.cast::<libc::ucontext_t>();
    // SAFETY: reading the saved error code from the kernel's signal frame.
    let err = unsafe { (*uc).uc_mcontext.gregs[libc::REG_ERR as usize] };
    Some(err & 2 != 0)
}

/// Unknown elsewhere.
///
/// # Safety
///
/// None.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn write_access(_ctx: *mut c_void) -> Option<bool> {
    None
}

/// Whether the interrupted code's stack pointer lies in this thread's
/// alternate signal stack (then it was running a signal handler). Known only
/// for a stack of [`ensure_alt_stack`]'s size (its range is in a `const`
/// thread-local: no system call); true (unknown) otherwise.
///
/// # Safety
///
/// `ctx` must be the ucontext the kernel passed to the handler.
#[cfg(target_arch = "x86_64")]
unsafe fn interrupted_on_alt_stack(ctx: *mut c_void) -> bool {
    let uc = ctx.cast::<libc::ucontext_t>();
    // SAFETY: reading the saved stack pointer from the kernel's signal frame.
    let sp = unsafe { (*uc).uc_mcontext.gregs[libc::REG_RSP as usize] } as usize;
    let (lo, hi) = BIG_ALT_STACK.with(|b| b.get());
    lo == 0 || (lo <= sp && sp <= hi)
}

/// Unknown elsewhere: assumed.
///
/// # Safety
///
/// None.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn interrupted_on_alt_stack(_ctx: *mut c_void) -> bool {
    true
}

/// The leading part of Linux's `siginfo_t` for a memory-error SIGBUS.
#[repr(C)]
struct MemoryErrorInfo {
    signo: c_int,
    errno: c_int,
    code: c_int,
    _pad: c_int,
    addr: usize,
    addr_lsb: i16,
    _rest: [u8; 128 - 26],
}

const _: () = assert!(std::mem::size_of::<MemoryErrorInfo>() == 128);
const _: () = assert!(std::mem::size_of::<libc::siginfo_t>() == 128);

/// Queues SIGBUS with `code` at `addr` to the calling thread (`addr_lsb`
/// is 12 for memory errors, 0 otherwise). The signal is blocked while the
/// handler runs, so it arrives when the handler returns. Returns false if
/// the kernel refused.
///
/// # Safety
///
/// Async-signal-safe; no requirement beyond being called on the faulting
/// thread.
unsafe fn raise_sigbus(addr: usize, code: c_int, addr_lsb: i16) -> bool {
    let info = MemoryErrorInfo {
        signo: libc::SIGBUS,
        errno: 0,
        code,
        _pad: 0,
        addr,
        addr_lsb,
        _rest: [0; 128 - 26],
    };
    // SAFETY: plain system calls; `info` is a valid 128-byte siginfo that
    // outlives the call. The kernel accepts a positive si_code because the
    // target is the calling thread itself.
    unsafe {
        libc::syscall(
            libc::SYS_rt_tgsigqueueinfo,
            libc::getpid(),
            libc::syscall(libc::SYS_gettid),
            libc::SIGBUS,
            &info as *const MemoryErrorInfo,
        ) == 0
    }
}

/// Passes the signal to the action installed before ours, or performs the
/// default action (terminate, with the signal as the cause).
///
/// # Safety
///
/// `info` and `ctx` are what the kernel passed to the handler.
unsafe fn chain(sig: c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    let saved = if sig == libc::SIGSEGV {
        &OLD_SEGV
    } else {
        &OLD_BUS
    };
    let (handler, flags) = match saved.get() {
        Some(a) => (a.sa_sigaction, a.sa_flags),
        None => (libc::SIG_DFL, 0),
    };
    // SAFETY: the kernel's siginfo is valid for reads.
    let code = unsafe { (*info).si_code };
    if handler == libc::SIG_IGN && code <= 0 {
        // A signal sent by a process to be ignored: ignore it.
        return;
    }
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        // Restore the default action and send the signal again; it stays
        // pending (blocked in this handler) and kills the process on return.
        // A hardware fault that cannot be ignored gets the same treatment.
        // SAFETY: a zeroed sigaction is SIG_DFL with an empty mask; plain
        // system calls on valid arguments.
        unsafe {
            let mut dfl: libc::sigaction = std::mem::zeroed();
            dfl.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(sig, &dfl, std::ptr::null_mut());
            libc::syscall(
                libc::SYS_rt_tgsigqueueinfo,
                libc::getpid(),
                libc::syscall(libc::SYS_gettid),
                sig,
                info,
            );
        }
        return;
    }
    if flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the saved action was installed with SA_SIGINFO, so its
        // handler has this signature; it gets the arguments it would have
        // got from the kernel.
        let f: extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) =
            unsafe { std::mem::transmute(handler) };
        f(sig, info, ctx);
    } else {
        // SAFETY: a plain `sa_handler`.
        let f: extern "C" fn(c_int) = unsafe { std::mem::transmute(handler) };
        f(sig);
    }
}

/// Size of the alternate signal stacks this module allocates, and the least
/// a thread's alternate stack must have for [`signal_stack_room`] to count
/// it: enough for a range handler that runs a file system transaction on
/// the faulting thread (daxfs's views resolve faults there).
pub const ALT_STACK_SIZE: usize = 256 * 1024;

/// An alternate signal stack allocated for this thread, released when the
/// thread exits.
struct AltStack {
    /// The mapping (guard page first), or null when the thread already had a
    /// stack of its own.
    base: *mut c_void,
    len: usize,
}

impl Drop for AltStack {
    fn drop(&mut self) {
        BIG_ALT_STACK.with(|b| b.set((0, 0)));
        if self.base.is_null() {
            return;
        }
        // SAFETY: disabling this thread's alternate stack (ours), then
        // unmapping the region allocated for it in `ensure_alt_stack`, which
        // nothing else uses once it is disabled.
        unsafe {
            let ss = libc::stack_t {
                ss_sp: std::ptr::null_mut(),
                ss_flags: libc::SS_DISABLE,
                ss_size: 0,
            };
            libc::sigaltstack(&ss, std::ptr::null_mut());
            libc::munmap(self.base, self.len);
        }
    }
}

thread_local! {
    static ALT_STACK: std::cell::RefCell<Option<AltStack>> = const { std::cell::RefCell::new(None) };
    /// The range `[low, high)` of this thread's alternate signal stack when
    /// it has at least [`ALT_STACK_SIZE`] bytes, else `(0, 0)`. `const`,
    /// without destructor: read by the signal handler.
    static BIG_ALT_STACK: std::cell::Cell<(usize, usize)> = const { std::cell::Cell::new((0, 0)) };
}

/// Gives the calling thread an alternate signal stack of at least
/// [`ALT_STACK_SIZE`] bytes if it has a smaller one or none (the standard
/// library's threads get a few KiB, for its stack-overflow report), so that
/// the handler can run even when the fault is a stack overflow, and range
/// handlers get room to work on the faulting thread. A smaller stack the
/// thread had is left allocated (its owner frees it) but no longer used.
/// File::map calls it for the mapping thread; call it from other threads
/// that may fault on a registered range.
pub fn ensure_alt_stack() -> std::io::Result<()> {
    ALT_STACK.with(|slot| {
        let mut slot = slot.borrow_mut();
        if slot.is_some() {
            return Ok(());
        }
        let mut cur = MaybeUninit::<libc::stack_t>::uninit();
        // SAFETY: querying this thread's alternate stack into a local buffer.
        if unsafe { libc::sigaltstack(std::ptr::null(), cur.as_mut_ptr()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: initialised by the successful call above.
        let cur = unsafe { cur.assume_init() };
        if cur.ss_flags & libc::SS_ONSTACK != 0
            || (cur.ss_flags & libc::SS_DISABLE == 0 && cur.ss_size >= ALT_STACK_SIZE)
        {
            // Running on it (it cannot be changed now), or big enough.
            if cur.ss_flags & libc::SS_ONSTACK == 0 {
                let lo = cur.ss_sp as usize;
                BIG_ALT_STACK.with(|b| b.set((lo, lo + cur.ss_size)));
            }
            *slot = Some(AltStack {
                base: std::ptr::null_mut(),
                len: 0,
            });
            return Ok(());
        }
        let page = rustix::param::page_size();
        let len = ALT_STACK_SIZE + page;
        // SAFETY: a fresh private anonymous mapping at a kernel-chosen
        // address replaces nothing.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the first page of our own fresh mapping becomes a guard
        // page; the rest is handed to the kernel as this thread's signal
        // stack and stays mapped until `AltStack::drop` disables it first.
        // The thread is not running on its old alternate stack (checked
        // above), so the kernel lets it be replaced.
        let ok = unsafe {
            libc::mprotect(base, page, libc::PROT_NONE);
            let ss = libc::stack_t {
                ss_sp: base.cast::<u8>().add(page).cast(),
                ss_flags: 0,
                ss_size: ALT_STACK_SIZE,
            };
            libc::sigaltstack(&ss, std::ptr::null_mut()) == 0
        };
        if !ok {
            let e = std::io::Error::last_os_error();
            // SAFETY: our own mapping, not in use.
            unsafe { libc::munmap(base, len) };
            return Err(e);
        }
        let lo = base as usize + page;
        BIG_ALT_STACK.with(|b| b.set((lo, lo + ALT_STACK_SIZE)));
        *slot = Some(AltStack { base, len });
        Ok(())
    })
}

/// In a signal handler: the bytes of stack left below the caller when it
/// runs on this thread's alternate stack of at least [`ALT_STACK_SIZE`]
/// bytes (see [`ensure_alt_stack`]), else 0 (no such stack, or the handler
/// runs on the thread's ordinary stack, whose room is unknown).
/// Async-signal-safe: one `const` thread-local read.
#[inline(never)]
pub fn signal_stack_room() -> usize {
    let here = 0u8;
    let sp = std::hint::black_box(&here) as *const u8 as usize;
    let (lo, hi) = BIG_ALT_STACK.with(|b| b.get());
    if lo < sp && sp < hi { sp - lo } else { 0 }
}

/// How many bytes of this thread's alternate signal stack (the one
/// [`ensure_alt_stack`] allocated) have ever been touched: the deepest a
/// handler went on it (pages the kernel has not backed yet were never
/// used). None when the thread has no such stack of ours. For tests.
#[doc(hidden)]
pub fn alt_stack_high_water() -> Option<usize> {
    let (lo, hi) = BIG_ALT_STACK.with(|b| b.get());
    if lo == 0 {
        return None;
    }
    let page = rustix::param::page_size();
    let n = (hi - lo) / page;
    let mut vec = vec![0u8; n];
    // SAFETY: `[lo, hi)` is this thread's alternate stack, mapped while
    // the thread lives; `vec` has one byte per page.
    if unsafe { libc::mincore(lo as *mut c_void, hi - lo, vec.as_mut_ptr()) } != 0 {
        return None;
    }
    let first = vec.iter().position(|b| b & 1 != 0)?;
    Some((n - first) * page)
}

/// Runs `f` with SIGSEGV and SIGBUS unblocked on the calling thread, then
/// blocks them again as they were. For a range handler that does work on
/// the faulting thread which itself relies on this module catching faults
/// (the machine-check-safe device copies): inside the handler both signals
/// are blocked, and a fault raised while they are blocked kills the process.
/// The dispatcher is reentrant (lock-free), so the nested fault is handled
/// like any other, on the alternate stack below the running handler.
///
/// Async-signal-safe apart from what `f` does (two `pthread_sigmask` calls).
pub fn with_faults_unblocked<R>(f: impl FnOnce() -> R) -> R {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    let mut old = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: `set` is initialised by sigemptyset before it is read; the
    // mask calls take valid sets and write the old mask into `old`.
    let restore = unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        libc::sigaddset(set.as_mut_ptr(), libc::SIGSEGV);
        libc::sigaddset(set.as_mut_ptr(), libc::SIGBUS);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, set.as_ptr(), old.as_mut_ptr()) == 0
    };
    struct Restore(Option<libc::sigset_t>);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Some(old) = &self.0 {
                // SAFETY: puts back the mask read when unblocking.
                unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, old, std::ptr::null_mut()) };
            }
        }
    }
    // SAFETY: written by the successful pthread_sigmask above.
    let _r = Restore(restore.then(|| unsafe { old.assume_init() }));
    f()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::process::Command;

    /// The environment variable that tells a re-run test binary which child
    /// scenario to play.
    pub(crate) const CHILD_ENV: &str = "DAXFS_DEVICE_FAULT_CHILD";

    /// Re-runs this test binary for the single test `test` with
    /// `CHILD_ENV=scenario`, and returns its status and output.
    pub(crate) fn run_child(test: &str, scenario: &str) -> (std::process::ExitStatus, String) {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([test, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, scenario)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status, text)
    }

    /// The child scenario this process should play, if it is a child.
    pub(crate) fn child_scenario() -> Option<String> {
        std::env::var(CHILD_ENV).ok()
    }

    /// A private anonymous mapping for the tests, with the given protection.
    pub(crate) fn test_map(len: usize, prot: c_int) -> *mut u8 {
        // SAFETY: a fresh anonymous mapping replaces nothing. It is leaked:
        // the child processes that use it exit soon.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        p.cast()
    }

    #[test]
    fn unrelated_segfault_still_kills_with_sigsegv() {
        if child_scenario().as_deref() == Some("segv") {
            install().unwrap();
            // Prove the handler is live: a guarded read of a PROT_NONE page
            // is survived...
            let p = test_map(4096, libc::PROT_NONE);
            let mut b = [0u8; 4];
            // SAFETY: `p` is a mapped (inaccessible) page.
            let r = unsafe { crate::mcsafe::read(b.as_mut_ptr(), p, 4) };
            if crate::mcsafe::RECOVERS {
                assert_eq!(r, Err(crate::mcsafe::Faulted { addr: p as usize }));
            }
            println!("guarded read survived");
            // ...and then an ordinary stray load is not.
            // SAFETY: deliberately not safe: this load faults, which is
            // what the test checks (the process must die of SIGSEGV).
            let v = unsafe { std::ptr::read_volatile(p.add(8)) };
            println!("unreachable {v}");
            std::process::exit(0);
        }
        let (status, out) = run_child(
            "fault::tests::unrelated_segfault_still_kills_with_sigsegv",
            "segv",
        );
        assert!(out.contains("guarded read survived"), "{out}");
        assert_eq!(status.signal(), Some(libc::SIGSEGV), "{status:?}\n{out}");
    }

    /// Rust's stack-overflow report still works through the chain: the
    /// handler runs on the alternate stack and passes the guard-page fault on.
    #[test]
    fn stack_overflow_is_still_reported() {
        if child_scenario().as_deref() == Some("overflow") {
            install().unwrap();
            fn recurse(n: u64) -> u64 {
                let buf = std::hint::black_box([n; 64]);
                if n == u64::MAX {
                    return 0;
                }
                recurse(n + 1).wrapping_add(buf[7])
            }
            let t = std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(|| recurse(0))
                .unwrap();
            println!("unreachable {:?}", t.join());
            std::process::exit(0);
        }
        let (status, out) = run_child("fault::tests::stack_overflow_is_still_reported", "overflow");
        assert!(
            out.contains("has overflowed its stack"),
            "{status:?}\n{out}"
        );
        assert_eq!(status.signal(), Some(libc::SIGABRT), "{status:?}\n{out}");
    }

    static APP_SEGV_CODE: AtomicUsize = AtomicUsize::new(0);
    static APP_SEGV_CALLS: AtomicUsize = AtomicUsize::new(0);

    extern "C" fn app_segv(_sig: c_int, info: *mut libc::siginfo_t, _ctx: *mut c_void) {
        // SAFETY: the siginfo passed along by the chain (the kernel's).
        let code = unsafe { (*info).si_code };
        APP_SEGV_CODE.store(code as isize as usize, Ordering::SeqCst);
        APP_SEGV_CALLS.fetch_add(1, Ordering::SeqCst);
    }

    /// A SIGSEGV sent by `raise` is not a fault: it goes to the handler that
    /// was there before ours, with its siginfo.
    #[test]
    fn user_sent_sigsegv_goes_to_the_previous_handler() {
        if child_scenario().as_deref() == Some("kill") {
            // SAFETY: installs a SA_SIGINFO handler with the matching
            // signature before ours.
            unsafe {
                let mut a: libc::sigaction = std::mem::zeroed();
                a.sa_sigaction = app_segv as *const () as usize;
                a.sa_flags = libc::SA_SIGINFO;
                libc::sigemptyset(&mut a.sa_mask);
                assert_eq!(libc::sigaction(libc::SIGSEGV, &a, std::ptr::null_mut()), 0);
            }
            install().unwrap();
            // SAFETY: sends a signal to this thread.
            unsafe { libc::raise(libc::SIGSEGV) };
            println!(
                "calls={} code={}",
                APP_SEGV_CALLS.load(Ordering::SeqCst),
                APP_SEGV_CODE.load(Ordering::SeqCst) as isize
            );
            std::process::exit(0);
        }
        let (status, out) = run_child(
            "fault::tests::user_sent_sigsegv_goes_to_the_previous_handler",
            "kill",
        );
        assert!(status.success(), "{status:?}\n{out}");
        assert!(
            out.contains(&format!("calls=1 code={}", libc::SI_TKILL)),
            "{out}"
        );
    }

    /// A copy-on-write style view: the range is mapped read-only; a write
    /// faults, the callback makes the page writable and asks for a retry.
    #[test]
    fn range_handler_retry_after_fixing_the_page() {
        if child_scenario().as_deref() == Some("retry") {
            static CALLS: AtomicUsize = AtomicUsize::new(0);
            static WRITES: AtomicUsize = AtomicUsize::new(0);
            let len = 4 * 4096;
            let p = test_map(len, libc::PROT_READ);
            let base = p as usize;
            let reg = register_range_handler(base, len, move |f: &Fault| {
                CALLS.fetch_add(1, Ordering::SeqCst);
                if f.write == Some(true) {
                    WRITES.fetch_add(1, Ordering::SeqCst);
                }
                let page = f.addr & !4095;
                // SAFETY: `page` is one of the pages of the test mapping,
                // which stays mapped; mprotect is async-signal-safe.
                let r = unsafe {
                    libc::mprotect(
                        page as *mut c_void,
                        4096,
                        libc::PROT_READ | libc::PROT_WRITE,
                    )
                };
                if r == 0 {
                    FaultAction::Retry
                } else {
                    FaultAction::NotMine
                }
            })
            .unwrap();
            // Reads are allowed and do not fault.
            // SAFETY: reading the readable test mapping.
            assert_eq!(unsafe { std::ptr::read_volatile(p.add(5)) }, 0);
            assert_eq!(CALLS.load(Ordering::SeqCst), 0);
            // SAFETY: writing the test mapping: the first store faults, the
            // callback makes the page writable and the store is retried.
            unsafe {
                std::ptr::write_volatile(p.add(4096 + 7), 42);
                std::ptr::write_volatile(p.add(4096 + 8), 43);
                std::ptr::write_volatile(p.add(3 * 4096), 44);
            }
            // SAFETY: reading back.
            let got = unsafe {
                [
                    std::ptr::read_volatile(p.add(4096 + 7)),
                    std::ptr::read_volatile(p.add(4096 + 8)),
                    std::ptr::read_volatile(p.add(3 * 4096)),
                ]
            };
            assert_eq!(got, [42, 43, 44]);
            assert_eq!(CALLS.load(Ordering::SeqCst), 2, "one fault per page");
            if cfg!(target_arch = "x86_64") {
                assert_eq!(WRITES.load(Ordering::SeqCst), 2);
            }
            // Overlapping registrations are refused; adjacent ones are fine.
            assert!(matches!(
                register_range_handler(base + 4096, 10, |_: &Fault| FaultAction::NotMine),
                Err(RegisterError::Overlap { .. })
            ));
            let next =
                register_range_handler(base + len, 4096, |_: &Fault| FaultAction::NotMine).unwrap();
            next.unregister();
            reg.unregister();
            println!("retry ok");
            std::process::exit(0);
        }
        let (status, out) = run_child(
            "fault::tests::range_handler_retry_after_fixing_the_page",
            "retry",
        );
        assert!(
            status.success() && out.contains("retry ok"),
            "{status:?}\n{out}"
        );
    }

    pub(crate) static SEEN_CODE: AtomicUsize = AtomicUsize::new(0);
    pub(crate) static SEEN_ADDR: AtomicUsize = AtomicUsize::new(0);
    pub(crate) static SEEN_LSB: AtomicUsize = AtomicUsize::new(0);
    pub(crate) static FIX_PAGE: AtomicUsize = AtomicUsize::new(0);
    static REVOKED: AtomicBool = AtomicBool::new(false);

    extern "C" fn test_sigbus(_sig: c_int, info: *mut libc::siginfo_t, _ctx: *mut c_void) {
        // SAFETY: the kernel's siginfo for a SA_SIGINFO handler; the memory
        // error layout has si_addr_lsb right after si_addr.
        unsafe {
            SEEN_CODE.store((*info).si_code as usize, Ordering::SeqCst);
            SEEN_ADDR.store((*info).si_addr() as usize, Ordering::SeqCst);
            let lsb = *(info.cast::<u8>().add(24).cast::<i16>());
            SEEN_LSB.store(lsb as usize, Ordering::SeqCst);
            // Repair, so that the retried access succeeds.
            REVOKED.store(false, Ordering::SeqCst);
            let page = FIX_PAGE.load(Ordering::SeqCst);
            libc::mprotect(
                page as *mut c_void,
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
            );
        }
    }

    pub(crate) fn install_test_sigbus_handler() {
        // SAFETY: installs a SA_SIGINFO handler with the matching signature.
        unsafe {
            let mut a: libc::sigaction = std::mem::zeroed();
            a.sa_sigaction = test_sigbus as *const () as usize;
            a.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut a.sa_mask);
            assert_eq!(libc::sigaction(libc::SIGBUS, &a, std::ptr::null_mut()), 0);
        }
    }

    /// A revoked page: the callback asks for SIGBUS, which the application's
    /// own handler receives with BUS_MCEERR_AR and the address.
    #[test]
    fn range_handler_delivers_memory_error_sigbus() {
        match child_scenario().as_deref() {
            Some(s @ ("sigbus-before" | "sigbus-after")) => {
                // The application's handler is installed before or after ours:
                // both must work.
                if s == "sigbus-before" {
                    install_test_sigbus_handler();
                    install().unwrap();
                } else {
                    install().unwrap();
                    install_test_sigbus_handler();
                }
                let p = test_map(2 * 4096, libc::PROT_NONE);
                let target = p as usize + 4096 + 100;
                FIX_PAGE.store(p as usize + 4096, Ordering::SeqCst);
                REVOKED.store(true, Ordering::SeqCst);
                let _reg = register_range_handler(p as usize, 2 * 4096, |f: &Fault| {
                    if REVOKED.load(Ordering::SeqCst) {
                        FaultAction::Sigbus { addr: f.addr }
                    } else {
                        FaultAction::NotMine
                    }
                })
                .unwrap();
                // SAFETY: the load faults, SIGBUS is delivered, the test
                // handler repairs the page and the load is retried.
                let v = unsafe { std::ptr::read_volatile(target as *const u8) };
                assert_eq!(v, 0);
                println!(
                    "code={} addr_ok={} lsb={}",
                    SEEN_CODE.load(Ordering::SeqCst),
                    SEEN_ADDR.load(Ordering::SeqCst) == target,
                    SEEN_LSB.load(Ordering::SeqCst)
                );
                std::process::exit(0);
            }
            Some("sigbus-unhandled") => {
                let p = test_map(4096, libc::PROT_NONE);
                let _reg = register_range_handler(p as usize, 4096, |f: &Fault| {
                    FaultAction::Sigbus { addr: f.addr }
                })
                .unwrap();
                // SAFETY: deliberately faults; the process must die of SIGBUS.
                let v = unsafe { std::ptr::read_volatile(p) };
                println!("unreachable {v}");
                std::process::exit(0);
            }
            Some("not-mine") => {
                let p = test_map(4096, libc::PROT_NONE);
                let _reg =
                    register_range_handler(p as usize, 4096, |_: &Fault| FaultAction::NotMine)
                        .unwrap();
                // SAFETY: deliberately faults; NotMine means the default
                // action: death by SIGSEGV.
                let v = unsafe { std::ptr::read_volatile(p) };
                println!("unreachable {v}");
                std::process::exit(0);
            }
            _ => {}
        }
        let name = "fault::tests::range_handler_delivers_memory_error_sigbus";
        for s in ["sigbus-before", "sigbus-after"] {
            let (status, out) = run_child(name, s);
            assert!(status.success(), "{s}: {status:?}\n{out}");
            assert!(
                out.contains(&format!("code={BUS_MCEERR_AR} addr_ok=true lsb=12")),
                "{s}: {out}"
            );
        }
        let (status, out) = run_child(name, "sigbus-unhandled");
        assert_eq!(status.signal(), Some(libc::SIGBUS), "{status:?}\n{out}");
        let (status, out) = run_child(name, "not-mine");
        assert_eq!(status.signal(), Some(libc::SIGSEGV), "{status:?}\n{out}");
    }

    #[test]
    fn registration_bookkeeping() {
        assert!(matches!(
            register_range_handler(100, 0, |_: &Fault| FaultAction::NotMine),
            Err(RegisterError::InvalidRange { .. })
        ));
        assert!(matches!(
            register_range_handler(usize::MAX - 5, 10, |_: &Fault| FaultAction::NotMine),
            Err(RegisterError::InvalidRange { .. })
        ));
        // More registrations than one chunk holds; ranges far away from any
        // real mapping (never faulted on). Slots are reused after drop.
        let base = 0x7000_0000_0000usize;
        let regs: Vec<_> = (0..SLOTS_PER_CHUNK * 2 + 3)
            .map(|i| {
                register_range_handler(base + i * 8192, 4096, |_: &Fault| FaultAction::NotMine)
                    .unwrap()
            })
            .collect();
        let r = &regs[SLOTS_PER_CHUNK + 1];
        assert_eq!(
            (r.start(), r.len()),
            (base + (SLOTS_PER_CHUNK + 1) * 8192, 4096)
        );
        let f = Fault {
            addr: base + 5 * 8192 + 10,
            signal: libc::SIGSEGV,
            code: 2,
            write: None,
            in_signal_handler: false,
        };
        assert_eq!(dispatch(&f), FaultAction::NotMine);
        drop(regs);
        let hit =
            register_range_handler(base, 4096, |f: &Fault| FaultAction::Sigbus { addr: f.addr })
                .unwrap();
        let f = Fault {
            addr: base + 1,
            ..f
        };
        assert_eq!(dispatch(&f), FaultAction::Sigbus { addr: base + 1 });
        drop(hit);
        assert_eq!(dispatch(&f), FaultAction::NotMine);
        ensure_alt_stack().unwrap();
        std::thread::spawn(|| ensure_alt_stack().unwrap())
            .join()
            .unwrap();
    }
}
