//! The process's allocator: the system's, with a bounded cache of large freed blocks in front.
//!
//! A forward pass without autodiff (the precomputed reference log-probs, `eval`, scoring in the
//! demo) frees each layer's multi-megabyte temporaries as soon as the next op has read them, and
//! the next layer asks for the same sizes again. The system allocator hands such blocks back to
//! the operating system: glibc unmaps blocks above its mmap threshold and shrinks or deletes the
//! heaps of the arenas that rayon's threads allocate from (every command runs on one of them);
//! Windows' heap serves large blocks straight from `VirtualAlloc`. Each reuse then page-faults and
//! zero-fills every page again: on the real SmolLM2, `eval` of 64 pairs spent 20 of its 51 s in
//! the kernel, 8.1 M minor faults (docs/performance.md "What made it faster").
//!
//! Blocks of at least [`MIN_BLOCK`] bytes are rounded up to a size class (eight per doubling,
//! so at most 12.5% larger) and, when freed, kept by class, up to [`CAPACITY`] bytes and
//! [`SLOTS`] blocks; the oldest go back to the system first. Smaller blocks, and the resizing of
//! any block, are the system's alone. Nothing here allocates, and the lock is held only to scan a
//! fixed array.
//!
//! Memory that lives as long as the run, a model's weights, is allocated inside
//! [`with_fresh_blocks`], which hands out no kept block: loaded into recycled blocks, the real
//! SmolLM2 decoded 8 rows at a time 5% slower (alternated six times), though one row and training
//! did not change. The likely reason is the pages' physical order: a recycled block's pages were
//! first touched by several threads at once, a fresh one's by the single copy that fills it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// The smallest block that goes through the cache.
pub const MIN_BLOCK: usize = 1 << 20;
/// The most bytes kept in freed blocks.
pub const CAPACITY: usize = 64 << 20;
/// The most freed blocks kept.
pub const SLOTS: usize = 128;

/// The cache the process allocates through.
static PROCESS: LargeBlockCache = LargeBlockCache::new();

/// The process's allocator, [`PROCESS`]'s front (`#[global_allocator]` in the binary and in the
/// library's tests).
pub struct ProcessAllocator;

/// Runs `f` with the process's cache out of the way ([`LargeBlockCache::with_fresh_blocks`]).
pub fn with_fresh_blocks<R>(f: impl FnOnce() -> R) -> R {
    PROCESS.with_fresh_blocks(f)
}

/// The system allocator with a cache of large freed blocks.
struct LargeBlockCache {
    locked: AtomicBool,
    /// How many [`Self::with_fresh_blocks`] calls are running, in any thread.
    fresh_only: AtomicUsize,
    kept: UnsafeCell<Kept>,
}

// SAFETY: `kept` is only reached through `with_kept`, which holds `locked`.
unsafe impl Sync for LargeBlockCache {}

/// The freed blocks: `blocks[..len]`, `bytes` their sizes' sum, `clock` the count of frees (the
/// age of a block is the clock when it was freed).
struct Kept {
    blocks: [Block; SLOTS],
    len: usize,
    bytes: usize,
    clock: u64,
}

impl Kept {
    /// The most recently freed block of layout `class`.
    fn newest_of(&self, class: Layout) -> Option<usize> {
        (0..self.len)
            .filter(|&i| self.blocks[i].layout == class)
            .max_by_key(|&i| self.blocks[i].freed_at)
    }

    /// Takes out the block freed longest ago.
    fn pop_oldest(&mut self) -> Option<Block> {
        let oldest = (0..self.len).min_by_key(|&i| self.blocks[i].freed_at)?;
        Some(self.remove(oldest))
    }

    /// Takes block `i` out (the last one moves into its place).
    fn remove(&mut self, i: usize) -> Block {
        let block = self.blocks[i];
        self.len -= 1;
        self.blocks[i] = self.blocks[self.len];
        self.bytes -= block.layout.size();
        block
    }
}

#[derive(Clone, Copy)]
struct Block {
    ptr: *mut u8,
    /// The layout the system allocated it with (a size class).
    layout: Layout,
    freed_at: u64,
}

const EMPTY: Block = Block {
    ptr: std::ptr::null_mut(),
    layout: Layout::new::<u8>(),
    freed_at: 0,
};

/// The layout a request is allocated with: its size rounded up to its class when it is large
/// enough to be cached, `None` when it is left to the system as it is. A function of the request
/// alone, so a block's `dealloc` finds the layout its `alloc` used.
fn class_layout(layout: Layout) -> Option<Layout> {
    let size = layout.size();
    if size < MIN_BLOCK {
        return None;
    }
    let step = 1usize << (usize::BITS - 1 - size.leading_zeros() - 3); // an eighth of 2^⌊log2 size⌋
    let class = size.checked_add(step - 1)? & !(step - 1);
    Layout::from_size_align(class, layout.align()).ok()
}

impl LargeBlockCache {
    const fn new() -> Self {
        Self {
            locked: AtomicBool::new(false),
            fresh_only: AtomicUsize::new(0),
            kept: UnsafeCell::new(Kept {
                blocks: [EMPTY; SLOTS],
                len: 0,
                bytes: 0,
                clock: 0,
            }),
        }
    }

    /// Runs `f` with the cache out of the way, for allocations that live as long as the run: large
    /// requests get fresh memory from the system, and freed blocks go straight back to it (so
    /// loading's temporaries are not kept idle either).
    fn with_fresh_blocks<R>(&self, f: impl FnOnce() -> R) -> R {
        struct Running<'a>(&'a AtomicUsize);
        impl Drop for Running<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.fresh_only.fetch_add(1, Ordering::Relaxed);
        let _running = Running(&self.fresh_only);
        f()
    }

    /// Whether a [`Self::with_fresh_blocks`] call is running.
    fn bypassed(&self) -> bool {
        self.fresh_only.load(Ordering::Relaxed) > 0
    }

    /// Runs `f` on the freed blocks under the lock (`f` must not panic or allocate).
    fn with_kept<R>(&self, f: impl FnOnce(&mut Kept) -> R) -> R {
        let mut spins = 0u32;
        while self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now(); // the holder may have been descheduled
            }
        }
        // SAFETY: the lock is held until the store below.
        let result = f(unsafe { &mut *self.kept.get() });
        self.locked.store(false, Ordering::Release);
        result
    }

    /// A kept block of exactly `class`, the most recently freed one (its pages the likeliest to
    /// be in cache).
    fn take(&self, class: Layout) -> Option<*mut u8> {
        if self.bypassed() {
            return None;
        }
        self.with_kept(|kept| kept.newest_of(class).map(|i| kept.remove(i).ptr))
    }

    /// Keeps the freed block `ptr` of layout `class`, first giving the oldest kept blocks back to
    /// the system, one at a time outside the lock, until it fits (straight back to the system
    /// when it never fits, or while [`Self::with_fresh_blocks`] runs).
    ///
    /// # Safety
    /// `ptr` was allocated by the system with layout `class` and is no longer used.
    unsafe fn keep(&self, ptr: *mut u8, class: Layout) {
        if class.size() > CAPACITY || self.bypassed() {
            return unsafe { System.dealloc(ptr, class) };
        }
        loop {
            let evicted = self.with_kept(|kept| {
                if kept.len < SLOTS && kept.bytes + class.size() <= CAPACITY {
                    kept.clock += 1;
                    kept.blocks[kept.len] = Block {
                        ptr,
                        layout: class,
                        freed_at: kept.clock,
                    };
                    kept.len += 1;
                    kept.bytes += class.size();
                    return None;
                }
                kept.pop_oldest()
            });
            match evicted {
                // SAFETY: a kept block was allocated by the system with its layout.
                Some(old) => unsafe { System.dealloc(old.ptr, old.layout) },
                None => return,
            }
        }
    }

    /// The bytes and number of the freed blocks kept now.
    #[cfg(test)]
    fn kept(&self) -> (usize, usize) {
        self.with_kept(|kept| (kept.bytes, kept.len))
    }
}

// SAFETY: every block is the system's, allocated and freed with the same layout (its class
// layout when `class_layout` gives one, which depends on the request alone), and a kept block is
// handed out to one caller only (taken under the lock).
unsafe impl GlobalAlloc for LargeBlockCache {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match class_layout(layout) {
            None => unsafe { System.alloc(layout) },
            Some(class) => self
                .take(class)
                .unwrap_or_else(|| unsafe { System.alloc(class) }),
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match class_layout(layout) {
            None => unsafe { System.alloc_zeroed(layout) },
            Some(class) => match self.take(class) {
                Some(ptr) => {
                    // SAFETY: the block holds at least `layout.size()` bytes.
                    unsafe { ptr.write_bytes(0, layout.size()) };
                    ptr
                }
                None => unsafe { System.alloc_zeroed(class) },
            },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match class_layout(layout) {
            None => unsafe { System.dealloc(ptr, layout) },
            Some(class) => unsafe { self.keep(ptr, class) },
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size` with this alignment is a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        let old = class_layout(layout).unwrap_or(layout);
        match class_layout(new_layout) {
            Some(new) if new == old => ptr, // the block already has the new class's size
            // The system resizes (in place or by `mremap` where it can) to the size the new
            // request is allocated with, so `dealloc` finds it as usual.
            new => unsafe { System.realloc(ptr, old, new.unwrap_or(new_layout).size()) },
        }
    }
}

// SAFETY: every call goes to the one `PROCESS` cache.
unsafe impl GlobalAlloc for ProcessAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { PROCESS.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        unsafe { PROCESS.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { PROCESS.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        unsafe { PROCESS.realloc(ptr, layout, new_size) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    /// Fills `len` bytes at `ptr` with a pattern of `seed`, or checks them against it.
    unsafe fn pattern(ptr: *mut u8, len: usize, seed: u8, write: bool) -> bool {
        let bytes = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
        let value = |i: usize| (i as u8).wrapping_mul(31).wrapping_add(seed);
        if write {
            bytes
                .iter_mut()
                .enumerate()
                .for_each(|(i, b)| *b = value(i));
            true
        } else {
            bytes.iter().enumerate().all(|(i, &b)| b == value(i))
        }
    }

    /// Gives every kept block back (a test's cache is not the process's allocator).
    fn release(cache: &LargeBlockCache) {
        while let Some(block) = cache.with_kept(Kept::pop_oldest) {
            unsafe { System.dealloc(block.ptr, block.layout) };
        }
    }

    #[test]
    fn classes_round_up_by_at_most_an_eighth() {
        assert_eq!(class_layout(layout(MIB - 1, 8)), None);
        assert_eq!(class_layout(layout(MIB, 8)), Some(layout(MIB, 8)));
        assert_eq!(
            class_layout(layout(MIB + 1, 8)),
            Some(layout(MIB + MIB / 8, 8))
        );
        assert_eq!(
            class_layout(layout(3 * MIB + 5, 64)),
            Some(layout(3 * MIB + MIB / 4, 64))
        );
        for size in [MIB, MIB + 7, 5 * MIB + 12345, 1 << 33, (1 << 40) + 3] {
            let class = class_layout(layout(size, 16)).unwrap().size();
            assert!(
                class >= size && (class - size) * 8 <= size,
                "{size} → {class}"
            );
            // Every size of a class maps to the class itself.
            assert_eq!(class_layout(layout(class, 16)).unwrap().size(), class);
        }
        // Too large to round: left to the system.
        assert_eq!(class_layout(layout(isize::MAX as usize - 100, 1)), None);
    }

    #[test]
    fn a_freed_large_block_is_reused_by_the_next_request_of_its_class() {
        let cache = LargeBlockCache::new();
        unsafe {
            let a = cache.alloc(layout(3 * MIB + 1, 64));
            pattern(a, 3 * MIB + 1, 1, true);
            cache.dealloc(a, layout(3 * MIB + 1, 64));
            assert_eq!(cache.kept(), (3 * MIB + MIB / 4, 1));
            // Another size of the same class and alignment gets the same block back, zeroed
            // when asked for zeroed memory.
            let b = cache.alloc_zeroed(layout(3 * MIB + 1000, 64));
            assert_eq!(b, a);
            assert!(
                std::slice::from_raw_parts(b, 3 * MIB + 1000)
                    .iter()
                    .all(|&x| x == 0)
            );
            assert_eq!(cache.kept(), (0, 0));
            cache.dealloc(b, layout(3 * MIB + 1000, 64));
            // Another alignment or class does not.
            let c = cache.alloc(layout(3 * MIB + 1, 4096));
            let d = cache.alloc(layout(4 * MIB, 64));
            assert!(c != a && d != a);
            assert_eq!(cache.kept().1, 1);
            cache.dealloc(c, layout(3 * MIB + 1, 4096));
            cache.dealloc(d, layout(4 * MIB, 64));
            assert_eq!(cache.kept().1, 3);
            // Small blocks are never kept.
            let e = cache.alloc(layout(1000, 8));
            cache.dealloc(e, layout(1000, 8));
            assert_eq!(cache.kept().1, 3);
        }
        release(&cache);
    }

    #[test]
    fn the_oldest_blocks_go_back_first_and_the_cache_stays_bounded() {
        let cache = LargeBlockCache::new();
        let big = CAPACITY * 2 / 5;
        let class = class_layout(layout(big, 8)).unwrap().size();
        unsafe {
            let blocks: Vec<*mut u8> = (0..3).map(|_| cache.alloc(layout(big, 8))).collect();
            for &b in &blocks {
                cache.dealloc(b, layout(big, 8));
            }
            // Three do not fit: the first one freed went back.
            assert_eq!(cache.kept(), (2 * class, 2));
            let again = cache.alloc(layout(big, 8));
            assert_eq!(
                again, blocks[2],
                "the most recently freed block is reused first"
            );
            cache.dealloc(again, layout(big, 8));
            // Many small-class blocks: the cache keeps as many as the bounds allow, newest first.
            let many: Vec<*mut u8> = (0..SLOTS + 5)
                .map(|_| cache.alloc(layout(MIB, 8)))
                .collect();
            for &b in &many {
                cache.dealloc(b, layout(MIB, 8));
            }
            assert_eq!(cache.kept(), {
                let len = (CAPACITY / MIB).min(SLOTS);
                (len * MIB, len)
            });
            assert_eq!(cache.alloc(layout(MIB, 8)), many[SLOTS + 4]);
            cache.dealloc(many[SLOTS + 4], layout(MIB, 8));
            // A block larger than the whole capacity goes straight back.
            let before = cache.kept();
            let huge = cache.alloc(layout(CAPACITY + 1, 8));
            cache.dealloc(huge, layout(CAPACITY + 1, 8));
            assert_eq!(cache.kept(), before);
        }
        release(&cache);
    }

    #[test]
    fn fresh_blocks_are_not_recycled_ones() {
        let cache = LargeBlockCache::new();
        unsafe {
            let a = cache.alloc(layout(2 * MIB, 8));
            cache.dealloc(a, layout(2 * MIB, 8));
            let b = cache.with_fresh_blocks(|| cache.alloc(layout(2 * MIB, 8)));
            assert_ne!(b, a);
            assert_eq!(cache.kept().1, 1);
            cache.with_fresh_blocks(|| cache.dealloc(b, layout(2 * MIB, 8)));
            assert_eq!(
                cache.kept().1,
                1,
                "a block freed meanwhile goes back to the system"
            );
        }
        release(&cache);
    }

    #[test]
    fn resizing_keeps_the_contents_across_the_threshold_and_classes() {
        let cache = LargeBlockCache::new();
        unsafe {
            let mut size = 1000;
            let mut ptr = cache.alloc(layout(size, 8));
            pattern(ptr, size, 7, true);
            // small → large → same class (in place) → larger class → small.
            for new_size in [2 * MIB + 3, 2 * MIB + 100, 9 * MIB, 4000] {
                let grown = cache.realloc(ptr, layout(size, 8), new_size);
                assert!(
                    pattern(grown, size.min(new_size), 7, false),
                    "{size} → {new_size}"
                );
                if new_size == 2 * MIB + 100 {
                    assert_eq!(grown, ptr, "a resize within one class stays in place");
                }
                pattern(grown, new_size, 7, true);
                (ptr, size) = (grown, new_size);
            }
            cache.dealloc(ptr, layout(size, 8));
        }
        release(&cache);
    }

    #[test]
    fn threads_never_share_a_block() {
        let cache = LargeBlockCache::new();
        std::thread::scope(|s| {
            for t in 0..4u8 {
                let cache = &cache;
                s.spawn(move || {
                    for i in 0..200usize {
                        let size = MIB + (i % 5) * MIB / 3;
                        unsafe {
                            let p = cache.alloc(layout(size, 32));
                            pattern(p, size, t.wrapping_add(i as u8), true);
                            std::thread::yield_now();
                            assert!(pattern(p, size, t.wrapping_add(i as u8), false));
                            cache.dealloc(p, layout(size, 32));
                        }
                    }
                });
            }
        });
        assert!(cache.kept().0 <= CAPACITY);
        release(&cache);
    }
}
