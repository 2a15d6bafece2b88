//! Machine-check-safe accesses to device memory.
//!
//! Every access of device memory that may meet poison goes through the small
//! routines of this module: [`read`] (the one copy out of device memory),
//! [`write()`], [`fill`] and [`flush`]. On x86_64 they are written in assembly
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
//!   the failure status in `rax` (zero on success) and the fault address in
//!   `rdx`. They are called from inline assembly with a direct `call`, with
//!   every register they may change declared clobbered.
//! - Only instructions between `daxfs_device_mc_begin` and
//!   `daxfs_device_mc_end` are recoverable; nothing else lives there.
//! - [`read`] aligns the source (device) side and [`write()`] and [`fill`] the
//!   destination (device) side to 16 bytes (with byte and 8-byte moves)
//!   before their 16-byte moves, so no device access ever straddles two
//!   pages and the fault address always lies in the page that faulted; an
//!   8-byte access at an 8-byte aligned device address is a single (atomic)
//!   `mov`. Long copies and fills use `rep movsb`/`rep stosb`, which fault
//!   at the exact byte. The routines use only `rax`, `rcx`, `rdx`, `rsi`,
//!   `rdi`, `r8` and `xmm0`-`xmm3` (all caller-saved) and SSE2, which every
//!   x86_64 CPU has.
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

/// Calls routine `$f` of the recoverable section with three arguments in
/// `rdi`, `rsi`, `rdx`; evaluates to `Result<(), Faulted>`. Must be used
/// inside an `unsafe` block whose SAFETY comment covers the routine's
/// requirements.
#[cfg(target_arch = "x86_64")]
macro_rules! mc_call {
    ($f:path, $a:expr, $b:expr, $c:expr) => {{
        let faulted: u64;
        let addr: usize;
        core::arch::asm!(
            "call {f}",
            f = sym $f,
            inout("rdi") $a => _,
            inout("rsi") $b => _,
            inout("rdx") $c => addr,
            out("rax") faulted,
            out("rcx") _,
            out("r8") _,
            out("xmm0") _,
            out("xmm1") _,
            out("xmm2") _,
            out("xmm3") _,
        );
        if faulted == 0 {
            Ok(())
        } else {
            Err(Faulted { addr })
        }
    }};
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
    // daxfs_device_mc_read(dst: rdi, src: rsi (device), len: rdx)
    ".balign 16",
    ".globl daxfs_device_mc_read",
    ".hidden daxfs_device_mc_read",
    ".type daxfs_device_mc_read,@function",
    "daxfs_device_mc_read:",
    // The common aligned word first: a single 8-byte load.
    "    cmp rdx, 8",
    "    jne .Ldaxfs_mc_read_any",
    "    test sil, 7",
    "    jnz .Ldaxfs_mc_read_any",
    "    mov rax, qword ptr [rsi]",
    "    mov qword ptr [rdi], rax",
    "    xor eax, eax",
    "    ret",
    ".Ldaxfs_mc_read_any:",
    "    mov rcx, rdx",
    "    cmp rcx, {rep}",
    "    jae .Ldaxfs_mc_rep",
    // Align the device side to 16: whole words where aligned, else bytes.
    ".Ldaxfs_mc_read_head:",
    "    test sil, 15",
    "    jz .Ldaxfs_mc_mid",
    "    test rcx, rcx",
    "    jz .Ldaxfs_mc_ok",
    "    test sil, 7",
    "    jnz .Ldaxfs_mc_read_byte",
    "    cmp rcx, 8",
    "    jb .Ldaxfs_mc_read_byte",
    "    mov rax, qword ptr [rsi]",
    "    mov qword ptr [rdi], rax",
    "    add rsi, 8",
    "    add rdi, 8",
    "    sub rcx, 8",
    "    jmp .Ldaxfs_mc_read_head",
    ".Ldaxfs_mc_read_byte:",
    "    mov al, byte ptr [rsi]",
    "    mov byte ptr [rdi], al",
    "    inc rsi",
    "    inc rdi",
    "    dec rcx",
    "    jmp .Ldaxfs_mc_read_head",
    ".size daxfs_device_mc_read, . - daxfs_device_mc_read",
    // daxfs_device_mc_write(dst: rdi (device), src: rsi, len: rdx)
    ".balign 16",
    ".globl daxfs_device_mc_write",
    ".hidden daxfs_device_mc_write",
    ".type daxfs_device_mc_write,@function",
    "daxfs_device_mc_write:",
    // The common aligned word first: a single 8-byte store.
    "    cmp rdx, 8",
    "    jne .Ldaxfs_mc_write_any",
    "    test dil, 7",
    "    jnz .Ldaxfs_mc_write_any",
    "    mov rax, qword ptr [rsi]",
    "    mov qword ptr [rdi], rax",
    "    xor eax, eax",
    "    ret",
    ".Ldaxfs_mc_write_any:",
    "    mov rcx, rdx",
    "    cmp rcx, {rep}",
    "    jae .Ldaxfs_mc_rep",
    ".Ldaxfs_mc_write_head:",
    "    test dil, 15",
    "    jz .Ldaxfs_mc_mid",
    "    test rcx, rcx",
    "    jz .Ldaxfs_mc_ok",
    "    test dil, 7",
    "    jnz .Ldaxfs_mc_write_byte",
    "    cmp rcx, 8",
    "    jb .Ldaxfs_mc_write_byte",
    "    mov rax, qword ptr [rsi]",
    "    mov qword ptr [rdi], rax",
    "    add rsi, 8",
    "    add rdi, 8",
    "    sub rcx, 8",
    "    jmp .Ldaxfs_mc_write_head",
    ".Ldaxfs_mc_write_byte:",
    "    mov al, byte ptr [rsi]",
    "    mov byte ptr [rdi], al",
    "    inc rsi",
    "    inc rdi",
    "    dec rcx",
    "    jmp .Ldaxfs_mc_write_head",
    // Shared body of read and write, the device side 16-byte aligned: every
    // device access below is aligned to its size, so none spans two pages.
    ".Ldaxfs_mc_mid:",
    "    cmp rcx, 64",
    "    jb .Ldaxfs_mc_16",
    "    movdqu xmm0, xmmword ptr [rsi]",
    "    movdqu xmm1, xmmword ptr [rsi + 16]",
    "    movdqu xmm2, xmmword ptr [rsi + 32]",
    "    movdqu xmm3, xmmword ptr [rsi + 48]",
    "    movdqu xmmword ptr [rdi], xmm0",
    "    movdqu xmmword ptr [rdi + 16], xmm1",
    "    movdqu xmmword ptr [rdi + 32], xmm2",
    "    movdqu xmmword ptr [rdi + 48], xmm3",
    "    add rsi, 64",
    "    add rdi, 64",
    "    sub rcx, 64",
    "    jmp .Ldaxfs_mc_mid",
    ".Ldaxfs_mc_16:",
    "    cmp rcx, 16",
    "    jb .Ldaxfs_mc_8",
    "    movdqu xmm0, xmmword ptr [rsi]",
    "    movdqu xmmword ptr [rdi], xmm0",
    "    add rsi, 16",
    "    add rdi, 16",
    "    sub rcx, 16",
    "    jmp .Ldaxfs_mc_16",
    ".Ldaxfs_mc_8:",
    "    cmp rcx, 8",
    "    jb .Ldaxfs_mc_tail",
    "    mov rax, qword ptr [rsi]",
    "    mov qword ptr [rdi], rax",
    "    add rsi, 8",
    "    add rdi, 8",
    "    sub rcx, 8",
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
    // daxfs_device_mc_fill(dst: rdi (device), byte: esi, len: rdx)
    ".balign 16",
    ".globl daxfs_device_mc_fill",
    ".hidden daxfs_device_mc_fill",
    ".type daxfs_device_mc_fill,@function",
    "daxfs_device_mc_fill:",
    "    movzx eax, sil",
    "    mov r8, 0x0101010101010101",
    "    imul rax, r8",
    "    mov rcx, rdx",
    "    cmp rcx, {rep}",
    "    jae .Ldaxfs_mc_fill_rep",
    ".Ldaxfs_mc_fill_head:",
    "    test dil, 15",
    "    jz .Ldaxfs_mc_fill_mid",
    "    test rcx, rcx",
    "    jz .Ldaxfs_mc_ok",
    "    mov byte ptr [rdi], al",
    "    inc rdi",
    "    dec rcx",
    "    jmp .Ldaxfs_mc_fill_head",
    ".Ldaxfs_mc_fill_mid:",
    "    movq xmm0, rax",
    "    punpcklqdq xmm0, xmm0",
    ".Ldaxfs_mc_fill_64:",
    "    cmp rcx, 64",
    "    jb .Ldaxfs_mc_fill_16",
    "    movdqa xmmword ptr [rdi], xmm0",
    "    movdqa xmmword ptr [rdi + 16], xmm0",
    "    movdqa xmmword ptr [rdi + 32], xmm0",
    "    movdqa xmmword ptr [rdi + 48], xmm0",
    "    add rdi, 64",
    "    sub rcx, 64",
    "    jmp .Ldaxfs_mc_fill_64",
    ".Ldaxfs_mc_fill_16:",
    "    cmp rcx, 16",
    "    jb .Ldaxfs_mc_fill_8",
    "    movdqa xmmword ptr [rdi], xmm0",
    "    add rdi, 16",
    "    sub rcx, 16",
    "    jmp .Ldaxfs_mc_fill_16",
    ".Ldaxfs_mc_fill_8:",
    "    cmp rcx, 8",
    "    jb .Ldaxfs_mc_fill_tail",
    "    mov qword ptr [rdi], rax",
    "    add rdi, 8",
    "    sub rcx, 8",
    ".Ldaxfs_mc_fill_tail:",
    "    test rcx, rcx",
    "    jz .Ldaxfs_mc_ok",
    "    mov byte ptr [rdi], al",
    "    inc rdi",
    "    dec rcx",
    "    jmp .Ldaxfs_mc_fill_tail",
    ".Ldaxfs_mc_fill_rep:",
    "    rep stosb",
    "    jmp .Ldaxfs_mc_ok",
    ".size daxfs_device_mc_fill, . - daxfs_device_mc_fill",
    // daxfs_device_mc_clwb(start: rdi (line aligned), end: rsi, line: rdx)
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
    rep = const REP_THRESHOLD,
);

/// Copies and fills of at least this many bytes use `rep movsb`/`rep stosb`
/// (fast for large sizes, slow to start); shorter ones use 16-byte moves.
#[cfg(target_arch = "x86_64")]
const REP_THRESHOLD: usize = 1024;

#[cfg(target_arch = "x86_64")]
unsafe extern "C" {
    fn daxfs_device_mc_begin();
    fn daxfs_device_mc_end();
    fn daxfs_device_mc_recover();
    // Not Rust-ABI functions: called only through `mc_call!`.
    fn daxfs_device_mc_read();
    fn daxfs_device_mc_write();
    fn daxfs_device_mc_fill();
    fn daxfs_device_mc_clwb();
    fn daxfs_device_mc_clflushopt();
    fn daxfs_device_mc_clflush();
}

/// The address range `[begin, end)` of the recoverable routines.
#[cfg(target_arch = "x86_64")]
pub(crate) fn recoverable_range() -> (usize, usize) {
    (
        daxfs_device_mc_begin as *const () as usize,
        daxfs_device_mc_end as *const () as usize,
    )
}

/// Where the fault handler resumes a faulted routine.
#[cfg(target_arch = "x86_64")]
pub(crate) fn recovery_address() -> usize {
    daxfs_device_mc_recover as *const () as usize
}

/// True when faults inside the routines of this module are turned into
/// errors (x86_64); elsewhere a fault kills the process.
pub(crate) const RECOVERS: bool = cfg!(target_arch = "x86_64");

#[inline]
fn installed() {
    if !crate::fault::is_installed() {
        install_now();
    }
}

#[cold]
#[inline(never)]
fn install_now() {
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
#[inline]
pub(crate) unsafe fn read(dst: *mut u8, src: *const u8, len: usize) -> Result<(), Faulted> {
    if len == 0 {
        return Ok(());
    }
    installed();
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: the caller guarantees both ranges are mapped (device pages
        // may fault, which the installed handler turns into an error return)
        // and that they do not overlap. The routine changes only the
        // registers declared in `mc_call!`.
        unsafe { mc_call!(daxfs_device_mc_read, dst, src, len) }
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
#[inline]
pub(crate) unsafe fn write(dst: *mut u8, src: *const u8, len: usize) -> Result<(), Faulted> {
    if len == 0 {
        return Ok(());
    }
    installed();
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: the caller guarantees both ranges are mapped and distinct;
        // faults on device pages become an error return. The routine changes
        // only the registers declared in `mc_call!`.
        unsafe { mc_call!(daxfs_device_mc_write, dst, src, len) }
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
#[inline]
pub(crate) unsafe fn fill(dst: *mut u8, byte: u8, len: usize) -> Result<(), Faulted> {
    if len == 0 {
        return Ok(());
    }
    installed();
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: the caller guarantees the range is mapped; faults become an
        // error return. The routine changes only the registers declared in
        // `mc_call!`.
        unsafe { mc_call!(daxfs_device_mc_fill, dst, usize::from(byte), len) }
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
        // SAFETY: the CPU supports `instr` and the lines from `start` (the
        // line holding `ptr`) up to `end` are mapped, per the caller;
        // `start < end` because `len > 0`; faults become an error return.
        // The routines change only the registers declared in `mc_call!`.
        unsafe {
            match instr {
                FlushInstr::Clwb => mc_call!(daxfs_device_mc_clwb, start, end, line),
                FlushInstr::Clflushopt => mc_call!(daxfs_device_mc_clflushopt, start, end, line),
                FlushInstr::Clflush => mc_call!(daxfs_device_mc_clflush, start, end, line),
            }
        }
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
        let src: Vec<u8> = (0..3100u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in [
            0usize, 1, 7, 8, 9, 15, 16, 17, 31, 63, 64, 65, 100, 255, 256, 257, 600, 1023, 1024,
            2047, 3000,
        ] {
            for so in 0..17 {
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
        for len in [
            0usize, 1, 5, 8, 15, 16, 17, 40, 64, 100, 990, 1023, 1024, 2500,
        ] {
            for at in 0..17 {
                let mut buf = vec![1u8; 2600];
                // SAFETY: inside the live vector.
                unsafe { fill(buf.as_mut_ptr().add(at), 0xa7, len) }.unwrap();
                assert!(buf[..at].iter().all(|&b| b == 1), "fill {len} at {at}");
                assert!(
                    buf[at..at + len].iter().all(|&b| b == 0xa7),
                    "fill {len} at {at}"
                );
                assert!(
                    buf[at + len..].iter().all(|&b| b == 1),
                    "fill {len} at {at}"
                );
            }
        }
        let mut d = [0u8; 5];
        read_slice(&mut d, b"hello");
        assert_eq!(&d, b"hello");
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn recoverable_range_brackets_the_routines() {
        {
            let (b, e) = recoverable_range();
            assert!(b < e);
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
