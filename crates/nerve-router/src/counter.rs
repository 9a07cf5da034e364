//! A counter that threads bump without sharing a cache line: each thread
//! adds to one of a few padded stripes, and reading sums them. For counts
//! made on every emit or inline delivery and read only by `stats`.

use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crossbeam_utils::CachePadded;

/// Stripes per counter: enough to keep the threads of a small machine
/// apart, few enough that a counter per event type stays small.
const STRIPES: usize = 4;

#[derive(Default)]
pub(crate) struct Counter {
    stripes: [CachePadded<AtomicU64>; STRIPES],
}

/// This thread's number, taken on first use and given back when the
/// thread ends.
struct Number(Cell<usize>);

impl Drop for Number {
    fn drop(&mut self) {
        let n = self.0.get();
        if n != usize::MAX {
            free_numbers().push(Reverse(n));
        }
    }
}

thread_local! {
    static THREAD: Number = const { Number(Cell::new(usize::MAX)) };
}

/// Numbers of threads that have ended, for the next threads to take.
fn free_numbers() -> MutexGuard<'static, BinaryHeap<Reverse<usize>>> {
    static FREE: Mutex<BinaryHeap<Reverse<usize>>> = Mutex::new(BinaryHeap::new());
    FREE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A number for this thread: the lowest that no running thread holds, so
/// that threads started together get different stripes of anything striped
/// by it modulo a small count (counters here, route copies in `routes.rs`,
/// history shards in `history.rs`), and a thread started after another
/// ended takes over its stripes (and what the ended thread left in them,
/// still warm, rather than a stripe last used long ago).
#[inline]
pub(crate) fn thread_number() -> usize {
    THREAD
        .try_with(|s| match s.0.get() {
            usize::MAX => take_number(&s.0),
            n => n,
        })
        .unwrap_or(0)
}

/// Gives this thread its number, on its first call of [`thread_number`].
#[cold]
fn take_number(cell: &Cell<usize>) -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = free_numbers()
        .pop()
        .map_or_else(|| NEXT.fetch_add(1, Ordering::Relaxed), |Reverse(n)| n);
    cell.set(n);
    n
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
