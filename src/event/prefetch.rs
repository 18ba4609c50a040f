//! Cache hints: asking the CPU to start loading memory that code is about to read or write.
//! A hint changes nothing the code does (a prefetch never faults, whatever the address), only
//! when the loads are paid; on other architectures these do nothing.
//!
//! Why: a plugin worker handles events an HTTP thread made on the other core. Their ids,
//! data and the data's reference count are then in the other core's cache, and the worker met
//! each miss one at a time, at the plugin's `data()`, at the `done` record and at the final
//! drop. Asked for a whole run at once, the misses overlap.

/// Bytes per cache line on the CPUs the router runs on (x86-64).
const LINE: usize = 64;

/// Starts loading the lines of `bytes`, at most `max` bytes of it, for reading.
#[inline]
pub fn read(bytes: &[u8], max: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let len = bytes.len().min(max);
        let start = bytes.as_ptr();
        let mut at = 0;
        while at < len {
            // SAFETY: a prefetch reads nothing the program sees and never faults.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(at).cast()) };
            at += LINE;
        }
        if len > 0 {
            // The last line, when the range starts mid-line and spills into one more.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(len - 1).cast()) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (bytes, max);
}

/// Starts loading the line at `p` to be written (a reference count about to drop): taken
/// from the other core's cache for this one's own, so the write later does not wait.
#[inline]
pub fn write(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    if has_prefetchw() {
        // SAFETY: `prefetchw` is a hint (it never faults, whatever the address); the CPU has it.
        unsafe { std::arch::asm!("prefetchw [{0}]", in(reg) p, options(nostack, preserves_flags, readonly)) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Whether the CPU has `prefetchw` (CPUID 8000_0001h, ECX bit 8), asked once.
#[cfg(target_arch = "x86_64")]
fn has_prefetchw() -> bool {
    use std::sync::atomic::{AtomicU8, Ordering};
    static KNOWN: AtomicU8 = AtomicU8::new(0);
    match KNOWN.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            let has = std::arch::x86_64::__cpuid(0x8000_0000).eax >= 0x8000_0001
                && std::arch::x86_64::__cpuid(0x8000_0001).ecx & (1 << 8) != 0;
            KNOWN.store(1 + u8::from(has), Ordering::Relaxed);
            has
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hints_on_any_memory_change_nothing() {
        let text = "x".repeat(1000);
        super::read(text.as_bytes(), 512);
        super::read(b"", 512);
        super::write(text.as_ptr());
        // Even an address that is not the program's: a prefetch never faults.
        super::write(std::ptr::null());
        assert_eq!(text.len(), 1000);
    }
}
