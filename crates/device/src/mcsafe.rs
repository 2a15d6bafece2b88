//! Machine-check-safe accesses to device memory.
//!
//! Every access of device memory that may meet poison goes through the small
//! routines of this module: [`read`] (the one copy out of device memory),
//! [`write`], [`fill`] and [`flush`]. On x86_64 they are written in assembly
//! and placed together in one section bracketed by two symbols, so that the
//! process-wide fault handler of the [`fault`](crate::fault) module can tell
//! that a SIGSEGV or SIGBUS was raised inside one of them: it then resumes the
//! thread at a recovery label that makes the routine return "faulted at
//! address A" instead of letting the signal kill the process.
//!
//! That is what a real machine check needs: poison consumed by a load raises
//! SIGBUS with `BUS_MCEERR_AR` at the moment of the load, whatever the device
//! layer's bookkeeping said an instant before. The emulation makes bad pages
//! `PROT_NONE`, so a load raises SIGSEGV at the same spot, and takes the same
//! path.
//!
//! # Invariants
//!
//! - The routines are leaf functions that never touch the stack between entry
//!   and return, so at any instruction inside them the stack pointer points at
//!   the return address. The recovery label is a bare `ret`; the handler puts
//!   the failure status in `rax` and the fault address in `rdx` (the two
//!   registers that return a 16-byte `repr(C)` struct in the System V ABI).
//! - Only instructions between `daxfs_device_mc_begin` and
//!   `daxfs_device_mc_end` are recoverable; nothing else lives there.
//! - [`read`] aligns the source (device) side to 8 bytes and [`write`] the
//!   destination (device) side before their 8-byte loops, so a word access
//!   never straddles two pages and the fault address always lies in the page
//!   that faulted; an 8-byte access at an 8-byte aligned device address is a
//!   single (atomic) `mov`. Copies of 256 bytes or more use `rep movsb`,
//!   which faults at the exact byte.
//! - The fault handler is installed ([`crate::fault::install`]) before any of
//!   these routines runs.
//!
//! On other targets the routines are plain copies that cannot recover from a
//! fault: devices there never make pages inaccessible and check their set of
//! bad ranges before every access instead (which cannot catch a real machine
//! check).
use crate::FlushInstr;

/// A guarded access faulted at this address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Faulted {
    /// The address the signal reported (`si_addr`).
    pub(crate) addr: usize,
}

/// What the assembly routines return in `rax:rdx`.
#[cfg(target_arch = "x86_64")]
#[repr(C)]
struct McResult {
    faulted: u64,
    addr: u64,
}

#[cfg(target_arch = "x86_64")]
impl McResult {
    fn into_result(self) -> Result<(), Faulted> {
        if self.faulted == 0 {
            Ok(())
        } else {
            Err(Faulted {
                addr: self.addr as usize,
            })
        }
    }
}

#[cfg(target_arch = "x86_64")]
core::arch::global_asm!(
    ".pushsection .text.daxfs_device_mc,\"ax\",@progbits",
    ".balign 64",
    ".globl daxfs_device_mc_begin",
    ".hidden daxfs_device_mc_begin",
    ".type daxfs_device_mc_begin,@function",
    "daxfs_device_mc_begin:",
    "    ud2",
    ".size daxfs_device_mc_begin, . - daxfs_device_mc_begin",
    // McResult daxfs_device_mc_read(dst: rdi, src: rsi (device), len: rdx)
    ".balign 16",
    ".globl daxfs_device_mc_read",
    ".hidden daxfs_device_mc_read",
    ".type daxfs_device_mc_read,@function",
    "daxfs_device_mc_read:",
    "    mov rcx, rdx",
    "    cmp rcx, 256",
    "    jae .Ldaxfs_mc_rep",
    ".Ldaxfs_mc_read_head:",
    "    test rcx, rcx",
    "    jz .Ldaxfs_mc_ok",
    "    test sil, 7",
    "    jz .Ldaxfs_mc_words",
    "    mov al, byte ptr [rsi]",
    "    mov byte ptr [rdi], al",
    "    inc rsi",
    "    inc rdi",
    "    dec rcx",
    "    jmp .Ldaxfs_mc_read_head",
    ".size daxfs_device_mc_read, . - daxfs_device_mc_read",
    // McResult daxfs_device_mc_write(dst: rdi (device), src: rsi, len: rdx)
    ".balign 16",
    ".globl daxfs_device_mc_write",
    ".hidden daxfs_device_mc_write",
    ".type daxfs_device_mc_write,@function",
    "daxfs_device_mc_write:",
    "    mov rcx, rdx",
    "    cmp rcx, 256",
    "    jae .Ldaxfs_mc_rep",
    ".Ldaxfs_mc_write_head:",
    "    test rcx, rcx",
    "    jz .Ldaxfs_mc_ok",
    "    test dil, 7",
    "    jz .Ldaxfs_mc_words",
    "    mov al, byte ptr [rsi]",
    "    mov byte ptr [rdi], al",
    "    inc rsi",
    "    inc rdi",
    "    dec rcx",
    "    jmp .Ldaxfs_mc_write_head",
    // Shared tail of read and write: whole words, then the last bytes.
    ".Ldaxfs_mc_words:",
    "    cmp rcx, 8",
    "    jb .Ldaxfs_mc_tail",
    "    mov rax, qword ptr [rsi]",
    "    mov qword ptr [rdi], rax",
    "    add rsi, 8",
    "    add rdi, 8",
    "    sub rcx, 8",
    "    jmp .Ldaxfs_mc_words",
    ".Ldaxfs_mc_tail:",
    "    test rcx, rcx",
    "    jz .Ldaxfs_mc_ok",
    "    mov al, byte ptr [rsi]",
    "    mov byte ptr [rdi], al",
    "    inc rsi",
    "    inc rdi",
    "    dec rcx",
    "    jmp .Ldaxfs_mc_tail",
    ".Ldaxfs_mc_rep:",
    "    rep movsb",
    ".Ldaxfs_mc_ok:",
    "    xor eax, eax",
    "    xor edx, edx",
    "    ret",
    ".size daxfs_device_mc_write, . - daxfs_device_mc_write",
    // McResult daxfs_device_mc_fill(dst: rdi (device), byte: esi, len: rdx)
    ".balign 16",
    ".globl daxfs_device_mc_fill",
    ".hidden daxfs_device_mc_fill",
    ".type daxfs_device_mc_fill,@function",
    "daxfs_device_mc_fill:",
    "    mov eax, esi",
    "    mov rcx, rdx",
    "    rep stosb",
    "    xor eax, eax",
    "    xor edx, edx",
    "    ret",
    ".size daxfs_device_mc_fill, . - daxfs_device_mc_fill",
    // McResult daxfs_device_mc_clwb(start: rdi (line aligned), end: rsi, line: rdx)
    // and the same for CLFLUSHOPT and CLFLUSH. `start < end`.
    ".balign 16",
    ".globl daxfs_device_mc_clwb",
    ".hidden daxfs_device_mc_clwb",
    ".type daxfs_device_mc_clwb,@function",
    "daxfs_device_mc_clwb:",
    "    clwb [rdi]",
    "    add rdi, rdx",
    "    cmp rdi, rsi",
    "    jb daxfs_device_mc_clwb",
    "    xor eax, eax",
    "    xor edx, edx",
    "    ret",
    ".size daxfs_device_mc_clwb, . - daxfs_device_mc_clwb",
    ".balign 16",
    ".globl daxfs_device_mc_clflushopt",
    ".hidden daxfs_device_mc_clflushopt",
    ".type daxfs_device_mc_clflushopt,@function",
    "daxfs_device_mc_clflushopt:",
    "    clflushopt [rdi]",
    "    add rdi, rdx",
    "    cmp rdi, rsi",
    "    jb daxfs_device_mc_clflushopt",
    "    xor eax, eax",
    "    xor edx, edx",
    "    ret",
    ".size daxfs_device_mc_clflushopt, . - daxfs_device_mc_clflushopt",
    ".balign 16",
    ".globl daxfs_device_mc_clflush",
    ".hidden daxfs_device_mc_clflush",
    ".type daxfs_device_mc_clflush,@function",
    "daxfs_device_mc_clflush:",
    "    clflush [rdi]",
    "    add rdi, rdx",
    "    cmp rdi, rsi",
    "    jb daxfs_device_mc_clflush",
    "    xor eax, eax",
    "    xor edx, edx",
    "    ret",
    ".size daxfs_device_mc_clflush, . - daxfs_device_mc_clflush",
    // The fault handler resumes here with rax = 1 and rdx = fault address.
    ".balign 16",
    ".globl daxfs_device_mc_recover",
    ".hidden daxfs_device_mc_recover",
    ".type daxfs_device_mc_recover,@function",
    "daxfs_device_mc_recover:",
    "    ret",
    ".size daxfs_device_mc_recover, . - daxfs_device_mc_recover",
    ".globl daxfs_device_mc_end",
    ".hidden daxfs_device_mc_end",
    ".type daxfs_device_mc_end,@function",
    "daxfs_device_mc_end:",
    "    ud2",
    ".size daxfs_device_mc_end, . - daxfs_device_mc_end",
    ".popsection",
);

#[cfg(target_arch = "x86_64")]
unsafe extern "C" {
    fn daxfs_device_mc_begin();
    fn daxfs_device_mc_end();
    fn daxfs_device_mc_recover();
    fn daxfs_device_mc_read(dst: *mut u8, src: *const u8, len: usize) -> McResult;
    fn daxfs_device_mc_write(dst: *mut u8, src: *const u8, len: usize) -> McResult;
    fn daxfs_device_mc_fill(dst: *mut u8, byte: u32, len: usize) -> McResult;
    fn daxfs_device_mc_clwb(start: *const u8, end: *const u8, line: usize) -> McResult;
    fn daxfs_device_mc_clflushopt(start: *const u8, end: *const u8, line: usize) -> McResult;
    fn daxfs_device_mc_clflush(start: *const u8, end: *const u8, line: usize) -> McResult;
}

/// The address range `[begin, end)` of the recoverable routines, or `None`
/// on targets without them.
pub(crate) fn recoverable_range() -> Option<(usize, usize)> {
    #[cfg(target_arch = "x86_64")]
    {
        Some((
            daxfs_device_mc_begin as *const () as usize,
            daxfs_device_mc_end as *const () as usize,
        ))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

/// Where the fault handler resumes a faulted routine.
#[cfg(target_arch = "x86_64")]
pub(crate) fn recovery_address() -> usize {
    daxfs_device_mc_recover as *const () as usize
}

/// True when faults inside the routines of this module are turned into
/// errors (x86_64); elsewhere a fault kills the process.
pub(crate) const RECOVERS: bool = cfg!(target_arch = "x86_64");

fn installed() {
    if let Err(e) = crate::fault::install() {
        panic!("cannot install the media-error fault handler: {e}");
    }
}

/// Copies `len` bytes from device memory at `src` to `dst`: the one routine
/// through which device memory is read. An 8-byte copy from an 8-byte
/// aligned `src` is a single load.
///
/// # Safety
///
/// - `[src, src + len)` must lie in memory mapped into this process for the
///   whole call; its pages may be inaccessible or poisoned (that gives
///   `Err`), but must not be unmapped.
/// - `[dst, dst + len)` must be valid for writes, not overlap the source, and
///   not be covered by any live Rust reference other than through `dst`.
pub(crate) unsafe fn read(dst: *mut u8, src: *const u8, len: usize) -> Result<(), Faulted> {
    if len == 0 {
        return Ok(());
    }
    installed();
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: the caller guarantees both ranges are mapped (device pages
        // may fault, which the installed handler turns into an error return)
        // and that they do not overlap. The routine is a leaf that follows
        // the System V ABI.
        unsafe { daxfs_device_mc_read(dst, src, len) }.into_result()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        // SAFETY: as above; without recovery the caller's set check is the
        // only protection.
        unsafe { core::ptr::copy_nonoverlapping(src, dst, len) };
        Ok(())
    }
}

/// Copies `len` bytes from `src` into device memory at `dst`. An 8-byte
/// copy to an 8-byte aligned `dst` is a single store.
///
/// # Safety
///
/// - `[dst, dst + len)` must lie in writable memory mapped into this process
///   for the whole call (pages may be inaccessible or poisoned: `Err`).
/// - `[src, src + len)` must be valid for reads and not overlap `dst`.
pub(crate) unsafe fn write(dst: *mut u8, src: *const u8, len: usize) -> Result<(), Faulted> {
    if len == 0 {
        return Ok(());
    }
    installed();
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: the caller guarantees both ranges are mapped and distinct;
        // faults on device pages become an error return.
        unsafe { daxfs_device_mc_write(dst, src, len) }.into_result()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        // SAFETY: as above.
        unsafe { core::ptr::copy_nonoverlapping(src, dst, len) };
        Ok(())
    }
}

/// Sets `len` bytes of device memory at `dst` to `byte`.
///
/// # Safety
///
/// `[dst, dst + len)` must lie in writable memory mapped into this process
/// for the whole call (pages may be inaccessible or poisoned: `Err`).
pub(crate) unsafe fn fill(dst: *mut u8, byte: u8, len: usize) -> Result<(), Faulted> {
    if len == 0 {
        return Ok(());
    }
    installed();
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: the caller guarantees the range is mapped; faults become an
        // error return.
        unsafe { daxfs_device_mc_fill(dst, u32::from(byte), len) }.into_result()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        // SAFETY: as above.
        unsafe { core::ptr::write_bytes(dst, byte, len) };
        Ok(())
    }
}

/// Writes back the cache lines overlapping `[ptr, ptr + len)` with `instr`.
/// Stops at the first line that faults (an inaccessible or poisoned page)
/// and returns its address; the caller may continue past that page.
///
/// # Safety
///
/// - `instr` must be supported by this CPU
///   ([`flush_instr_supported`](crate::flush_instr_supported)).
/// - Every cache line overlapping the range must lie in memory mapped into
///   this process for the whole call (pages may be inaccessible: `Err`).
pub(crate) unsafe fn flush(instr: FlushInstr, ptr: *const u8, len: usize) -> Result<(), Faulted> {
    if len == 0 {
        return Ok(());
    }
    installed();
    #[cfg(target_arch = "x86_64")]
    {
        let line = crate::cache_line_size();
        let start = (ptr as usize & !(line - 1)) as *const u8;
        let end = ptr.wrapping_add(len);
        let f = match instr {
            FlushInstr::Clwb => daxfs_device_mc_clwb,
            FlushInstr::Clflushopt => daxfs_device_mc_clflushopt,
            FlushInstr::Clflush => daxfs_device_mc_clflush,
        };
        // SAFETY: the CPU supports `instr` and the lines from `start` (the
        // line holding `ptr`) up to `end` are mapped, per the caller;
        // `start < end` because `len > 0`; faults become an error return.
        unsafe { f(start, end, line) }.into_result()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (instr, ptr);
        Ok(())
    }
}

/// Copies `src` into `dst` (equal lengths) through [`read`]: for device
/// memory that is an ordinary Rust buffer ([`CrashDevice`](crate::CrashDevice)),
/// so that every device read takes the same path. Such memory cannot fault.
pub(crate) fn read_slice(dst: &mut [u8], src: &[u8]) {
    assert_eq!(dst.len(), src.len(), "copy of unequal lengths");
    // SAFETY: both are live Rust slices of `dst.len()` bytes; `dst` is
    // borrowed mutably, so they cannot overlap and nothing else refers to it.
    let r = unsafe { read(dst.as_mut_ptr(), src.as_ptr(), dst.len()) };
    r.expect("a copy between Rust buffers cannot fault");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_of_every_length_and_alignment() {
        let src: Vec<u8> = (0..700u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in [0usize, 1, 7, 8, 9, 15, 16, 63, 255, 256, 257, 600] {
            for so in 0..9 {
                for d in 0..9 {
                    if so + len > src.len() {
                        continue;
                    }
                    let mut dst = vec![0xeeu8; len + 20];
                    // SAFETY: both ranges are inside live, distinct vectors.
                    unsafe { read(dst.as_mut_ptr().add(d), src.as_ptr().add(so), len) }.unwrap();
                    assert_eq!(&dst[d..d + len], &src[so..so + len], "read {len} {so} {d}");
                    assert!(dst[..d].iter().all(|&b| b == 0xee));
                    assert!(dst[d + len..].iter().all(|&b| b == 0xee));
                    let mut dst = vec![0xeeu8; len + 20];
                    // SAFETY: as above.
                    unsafe { write(dst.as_mut_ptr().add(d), src.as_ptr().add(so), len) }.unwrap();
                    assert_eq!(&dst[d..d + len], &src[so..so + len], "write {len} {so} {d}");
                    assert!(dst[d + len..].iter().all(|&b| b == 0xee));
                }
            }
        }
        let mut buf = vec![1u8; 1000];
        // SAFETY: inside the live vector.
        unsafe { fill(buf.as_mut_ptr().add(3), 9, 990) }.unwrap();
        assert_eq!(buf[2..4], [1, 9]);
        assert_eq!(buf[992..994], [9, 1]);
        let mut d = [0u8; 5];
        read_slice(&mut d, b"hello");
        assert_eq!(&d, b"hello");
    }

    #[test]
    fn recoverable_range_brackets_the_routines() {
        if let Some((b, e)) = recoverable_range() {
            assert!(b < e);
            #[cfg(target_arch = "x86_64")]
            for f in [
                daxfs_device_mc_read as *const () as usize,
                daxfs_device_mc_write as *const () as usize,
                daxfs_device_mc_fill as *const () as usize,
                daxfs_device_mc_clwb as *const () as usize,
                recovery_address(),
            ] {
                assert!(b < f && f < e);
            }
        }
    }
}
