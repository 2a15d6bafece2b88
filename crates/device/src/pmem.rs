//! Cache-line flush and store-fence instructions.
//!
//! The CPU's abilities are read once per process from CPUID and cached. A
//! flush instruction is only ever executed when [`flush_instr_supported`]
//! says the CPU has it, and only on cache lines of a live mapping (the
//! callers in the `mmap` module clamp every range to the mapping first). The
//! flush loops themselves live in the `mcsafe` module, where a flush of an
//! inaccessible page is survived.
//!
//! On targets other than x86_64 no flush instruction exists here:
//! [`detect_flush_instr`] returns `None` and devices persist with `msync`.
use crate::FlushInstr;
use std::sync::OnceLock;

/// What the CPU offers for writing back cache lines.
#[derive(Clone, Copy, Debug)]
struct Caps {
    clwb: bool,
    clflushopt: bool,
    clflush: bool,
    line: usize,
}

fn caps() -> Caps {
    static CAPS: OnceLock<Caps> = OnceLock::new();
    *CAPS.get_or_init(detect)
}

#[cfg(target_arch = "x86_64")]
fn detect() -> Caps {
    use core::arch::x86_64::{__cpuid, __cpuid_count};
    let max_leaf = __cpuid(0).eax;
    let (clwb, clflushopt) = if max_leaf >= 7 {
        let ebx = __cpuid_count(7, 0).ebx;
        (ebx >> 24 & 1 == 1, ebx >> 23 & 1 == 1)
    } else {
        (false, false)
    };
    // CPUID.01H:EBX[15:8] is the CLFLUSH line size in units of 8 bytes.
    let units = (__cpuid(1).ebx >> 8) & 0xff;
    let line = if units == 0 { 64 } else { units as usize * 8 };
    Caps {
        clwb,
        clflushopt,
        clflush: true,
        line,
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> Caps {
    Caps {
        clwb: false,
        clflushopt: false,
        clflush: false,
        line: 64,
    }
}

/// The best cache-line flush instruction this CPU has (CLWB, else
/// CLFLUSHOPT, else CLFLUSH), or `None` on targets without one.
pub fn detect_flush_instr() -> Option<FlushInstr> {
    let c = caps();
    if c.clwb {
        Some(FlushInstr::Clwb)
    } else if c.clflushopt {
        Some(FlushInstr::Clflushopt)
    } else if c.clflush {
        Some(FlushInstr::Clflush)
    } else {
        None
    }
}

/// True when this CPU can execute `instr`.
pub fn flush_instr_supported(instr: FlushInstr) -> bool {
    let c = caps();
    match instr {
        FlushInstr::Clwb => c.clwb,
        FlushInstr::Clflushopt => c.clflushopt,
        FlushInstr::Clflush => c.clflush,
    }
}

/// The cache-line size the flush instructions work on, in bytes.
pub fn cache_line_size() -> usize {
    caps().line
}

/// Waits until earlier flushes and stores of this thread are globally
/// visible (and, after cache-line flushes, durable); later stores are
/// ordered after it.
pub(crate) fn store_fence() {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: SFENCE needs only SSE, which every x86_64 CPU has; it
        // touches no memory operands.
        unsafe { core::arch::x86_64::_mm_sfence() };
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    }
}
