//! The compression cache keeps to its byte bound, counted by a global allocator: many tiny
//! entries (tagged regions, short parts) weigh what they really cost, moka's bookkeeping
//! included.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]
#![allow(
    unsafe_code,
    reason = "a counting global allocator that measures the cache"
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};

use lingua_proxy::compress::{Budget, CacheKey, CompressOutput, CompressionCache, MokaCache};

/// Live heap bytes of the process.
static LIVE: AtomicIsize = AtomicIsize::new(0);

struct Counting;

// SAFETY: every call is forwarded to the system allocator unchanged; only a counter is kept.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded as received.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded as received.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: forwarded as received.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn output(text: &str) -> Arc<CompressOutput> {
    Arc::new(CompressOutput {
        text: text.to_string(),
        origin_tokens: 2,
        compressed_tokens: 1,
        budget_exceeded_by_units: false,
    })
}

/// The heap the cache holds after `n` inserts of `text`-sized entries, bounded at `bound`.
fn held(bound: u64, n: usize, text: &str) -> isize {
    let before = LIVE.load(Ordering::Relaxed);
    let cache = MokaCache::new(bound);
    let budget = Budget::rate(0.5);
    for i in 0..n {
        let key = CacheKey::new("c", &budget, &i.to_string());
        cache.insert(key, output(text));
    }
    cache.settle();
    let after = LIVE.load(Ordering::Relaxed);
    drop(cache);
    after - before
}

#[test]
fn many_tiny_entries_stay_within_the_bound() {
    const BOUND: u64 = 8 << 20;
    for (n, text) in [(400_000, "x"), (150_000, &*"word ".repeat(20))] {
        let bytes = held(BOUND, n, text);
        println!("{n} entries of {} bytes: {bytes} bytes held", text.len());
        assert!(
            bytes as f64 <= BOUND as f64 * 1.25,
            "{n} entries of {} bytes hold {bytes} bytes for a bound of {BOUND}",
            text.len()
        );
    }
}
