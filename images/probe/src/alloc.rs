//! A bump allocator over the probe's free memory (identity-mapped, so an address is both the
//! pointer and the DMA address a device sees). Nothing is ever freed: workloads are short.

use core::sync::atomic::{AtomicU64, Ordering};

use probe_abi::layout::HEAP;

/// Calibration uses the first MiB of the heap for its samples; allocations start above it.
const START: u64 = HEAP + (1 << 20);

static NEXT: AtomicU64 = AtomicU64::new(START);
static LIMIT: AtomicU64 = AtomicU64::new(0);

/// Sets the end of usable RAM (from the boot information).
pub fn init(mem_size: u64) {
    // Stay below the 32-bit MMIO hole; the probe never needs more.
    LIMIT.store(mem_size.min(0xC000_0000), Ordering::Relaxed);
}

/// `len` zeroed bytes aligned to `align` (a power of two); None when memory runs out.
pub fn alloc(len: u64, align: u64) -> Option<u64> {
    let mut cur = NEXT.load(Ordering::Relaxed);
    loop {
        let base = cur.next_multiple_of(align);
        let end = base.checked_add(len)?;
        if end > LIMIT.load(Ordering::Relaxed) {
            return None;
        }
        match NEXT.compare_exchange(cur, end, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => {
                // SAFETY: [base, end) is identity-mapped RAM below LIMIT that no one else owns
                // (the bump pointer moved past it atomically).
                unsafe { core::ptr::write_bytes(base as *mut u8, 0, len as usize) };
                return Some(base);
            }
            Err(now) => cur = now,
        }
    }
}

/// A typed view of probe memory at `addr` (as returned by `alloc`).
///
/// # Safety
/// `addr..addr + len * size_of::<T>()` must be memory this caller allocated and owns.
pub unsafe fn slice<T>(addr: u64, len: usize) -> &'static mut [T] {
    // SAFETY: the caller guarantees the range is owned, allocated memory.
    unsafe { core::slice::from_raw_parts_mut(addr as *mut T, len) }
}
