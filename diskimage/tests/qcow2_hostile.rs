//! Hostile input: a proptest mutating the header, tables and data of valid images (built here,
//! tables first and last, 512 B to 64 KiB clusters) asserts the converter never panics and
//! never allocates more than its budget plus a fixed overhead, measured by a counting allocator.
//! `PROPTEST_CASES=N` runs more cases (the default 256 runs in plain `cargo test`).

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use kiln_diskimage::qcow2::{self, Options};
use proptest::prelude::*;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged, only counting bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(l.size(), Ordering::Relaxed) + l.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        // SAFETY: p was allocated by System with layout l.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const BUDGET: usize = 1 << 20;
/// Outside the budget: the 1 MiB input buffer, a cluster-sized chunk and decompression
/// buffer (64 KiB clusters here), zstd/deflate state and bookkeeping.
const OVERHEAD: usize = 3 << 20;

fn mutation() -> impl Strategy<Value = Vec<(usize, u8)>> {
    prop::collection::vec((0usize..1 << 20, any::<u8>()), 1..24)
}

proptest! {
    #[test]
    fn mutated_images_never_panic_or_overallocate(
        bits in prop::sample::select(vec![9u32, 12, 16]),
        tables_last in any::<bool>(),
        header_hits in prop::collection::vec((0usize..112, any::<u8>()), 0..6),
        anywhere in mutation(),
    ) {
        let (mut image, _) = support::synthetic(bits, tables_last);
        let len = image.len();
        for (at, v) in header_hits.into_iter().chain(anywhere.into_iter().map(|(a, v)| (a % len, v))) {
            image[at] = v;
        }
        let base = LIVE.load(Ordering::Relaxed);
        PEAK.store(base, Ordering::Relaxed);
        let opts = Options { budget: BUDGET, ..Options::default() };
        let result = std::panic::catch_unwind(|| qcow2::extents(&image[..], &opts, |_| Ok(())).map(|_| ()));
        let peak = PEAK.load(Ordering::Relaxed) - base;
        prop_assert!(result.is_ok(), "panicked");
        prop_assert!(peak <= BUDGET + OVERHEAD, "allocated {peak} bytes");
    }
}
