//! A bump allocator that starts over whenever nothing it gave out is still in use.
//!
//! Why: a call of the echo handler allocates a handful of short-lived values per request (the
//! request's data the host copies in, the answer, its type and list, the list the answers are
//! returned in) and frees every one of them by the end of the call (the last ones in the
//! component model's post-return). Through the system allocator (wasi-libc's dlmalloc) that
//! bookkeeping was a quarter of the guest's time in the end-to-end benchmark. Here an
//! allocation is a pointer bump, a free is a count down, and when the count reaches zero
//! (after each call) the whole arena is free again.
//!
//! It is safe by construction rather than by a reset hook: memory is only reused once no
//! allocation from it is live, so something kept across calls (a cache, a static) merely
//! stops the arena from starting over; the allocations that then do not fit go to the system
//! allocator, as do the ones larger than the arena.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;

/// Bytes the arena takes from linear memory (once, at the first allocation): a batch of
/// requests of the usual size needs a few tens of KiB; bigger ones are served by the
/// system allocator.
const ARENA_BYTES: usize = 256 * 1024;
/// Linear memory grows in pages of this size.
const PAGE: usize = 64 * 1024;

/// See the module.
pub struct Arena {
    state: UnsafeCell<State>,
}

struct State {
    /// The arena's bounds; `end == 0` before it was set up, `start == end` when linear
    /// memory could not grow (everything then goes to the system allocator).
    start: usize,
    end: usize,
    /// Where the next allocation may start.
    next: usize,
    /// Allocations from the arena not freed yet.
    live: usize,
}

// SAFETY: a wasm32-wasip2 component instance runs on one thread; nothing shares the arena.
unsafe impl Sync for Arena {}

impl Arena {
    pub const fn new() -> Self {
        Arena { state: UnsafeCell::new(State { start: 0, end: 0, next: 0, live: 0 }) }
    }
}

impl State {
    fn holds(&self, ptr: *mut u8) -> bool {
        (self.start..self.end).contains(&(ptr as usize))
    }

    fn set_up(&mut self) {
        let old_pages = core::arch::wasm32::memory_grow(0, ARENA_BYTES / PAGE);
        self.start = if old_pages == usize::MAX { 1 } else { old_pages * PAGE };
        self.end = if old_pages == usize::MAX { 1 } else { self.start + ARENA_BYTES };
        self.next = self.start;
    }

    /// `layout` from the arena, or `None` when it does not fit.
    fn bump(&mut self, layout: Layout) -> Option<*mut u8> {
        if self.end == 0 {
            self.set_up();
        }
        let at = self.next.checked_add(layout.align() - 1)? & !(layout.align() - 1);
        let end = at.checked_add(layout.size())?;
        if end > self.end {
            return None;
        }
        self.next = end;
        self.live += 1;
        Some(at as *mut u8)
    }

    fn free(&mut self) {
        self.live -= 1;
        if self.live == 0 {
            self.next = self.start;
        }
    }
}

unsafe impl GlobalAlloc for Arena {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: one thread (see `Sync`), and no reference to the state outlives this call.
        let s = unsafe { &mut *self.state.get() };
        match s.bump(layout) {
            Some(p) => p,
            None => unsafe { System.alloc(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let s = unsafe { &mut *self.state.get() };
        if s.holds(ptr) {
            s.free();
        } else {
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        {
            let s = unsafe { &mut *self.state.get() };
            if !s.holds(ptr) {
                return unsafe { System.realloc(ptr, layout, new_size) };
            }
            // The newest allocation grows or shrinks where it is.
            if ptr as usize + layout.size() == s.next && ptr as usize + new_size <= s.end {
                s.next = ptr as usize + new_size;
                return ptr;
            }
        }
        // SAFETY: `layout.align()` is a valid alignment, and `new_size` does not overflow
        // when rounded up to it (the caller's contract for `realloc`).
        let moved = unsafe { self.alloc(Layout::from_size_align_unchecked(new_size, layout.align())) };
        if !moved.is_null() {
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        moved
    }
}
