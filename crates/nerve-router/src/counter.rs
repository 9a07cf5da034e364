//! A counter that threads bump without sharing a cache line: each thread
//! adds to one of a few padded stripes, and reading sums them. For counts
//! made on every emit or inline delivery and read only by `stats`.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;

/// Stripes per counter: enough to keep the threads of a small machine
/// apart, few enough that a counter per event type stays small.
const STRIPES: usize = 4;

#[derive(Default)]
pub(crate) struct Counter {
    stripes: [CachePadded<AtomicU64>; STRIPES],
}

thread_local! {
    /// This thread's number, handed out in order on first use.
    static THREAD: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// A number for this thread, handed out in order, so that threads started
/// together get different stripes of anything striped by it modulo a small
/// count (counters here, route copies in `routes.rs`).
pub(crate) fn thread_number() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    THREAD
        .try_with(|s| {
            if s.get() == usize::MAX {
                s.set(NEXT.fetch_add(1, Ordering::Relaxed));
            }
            s.get()
        })
        .unwrap_or(0)
}

fn stripe() -> usize {
    thread_number() % STRIPES
}

impl Counter {
    #[inline]
    pub(crate) fn add(&self, n: u64) {
        self.stripes[stripe()].fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
        self.stripes
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }

    pub(crate) fn reset(&self) {
        for s in &self.stripes {
            s.store(0, Ordering::Relaxed);
        }
    }
}
