//! The in-memory history: a bounded ring of the most recent events.
//!
//! Emitters on different threads do not share a lock: each push takes the
//! next position (one atomic add) and locks only its own slot. The event a
//! push evicts is freed on the emitting thread, where the allocator reuses
//! its memory for the next event (`docs/benchmarks.md`, "Router design
//! notes").

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use crossbeam_utils::CachePadded;
use nerve_core::Event;
use nerve_core::query::HistoryQuery;

/// An event and the position it was pushed at.
type Slot = Mutex<Option<(u64, Event)>>;

pub(crate) struct History {
    capacity: usize,
    /// Where the next push goes (see `index`). Padded: every emit writes
    /// it, and the fields beside it are read by every emit.
    next: CachePadded<AtomicU64>,
    /// The slot of position `p` is `p * stride % capacity`: consecutive
    /// pushes (from different threads, often) land on different cache lines.
    stride: usize,
    /// `next` at the last `clear`.
    cleared_at: AtomicU64,
    /// Each slot holds the event pushed at some position, with that
    /// position, so that a push that wrapped round late never replaces a
    /// newer event.
    slots: Box<[Slot]>,
}

impl History {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            next: CachePadded::new(AtomicU64::new(0)),
            stride: stride_for(capacity),
            cleared_at: AtomicU64::new(0),
            slots: (0..capacity).map(|_| Mutex::new(None)).collect(),
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// The slot of `position`: a permutation of the positions modulo the
    /// capacity, so that a push still replaces the one `capacity` before it.
    fn index(&self, position: u64) -> usize {
        let at = (position % self.capacity as u64) as usize;
        (at * self.stride) % self.capacity
    }

    fn slot(&self, at: usize) -> std::sync::MutexGuard<'_, Option<(u64, Event)>> {
        self.slots[at]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn push(&self, event: &Event) {
        if self.capacity == 0 {
            return;
        }
        let position = self.next.fetch_add(1, Ordering::Relaxed);
        let evicted = {
            let mut slot = self.slot(self.index(position));
            match &*slot {
                Some((held, _)) if *held > position => None,
                _ => slot.replace((position, event.clone())).map(|(_, e)| e),
            }
        };
        drop(evicted);
    }

    pub(crate) fn len(&self) -> usize {
        let pushed = self.next.load(Ordering::Relaxed) - self.cleared_at.load(Ordering::Relaxed);
        pushed.min(self.capacity as u64) as usize
    }

    pub(crate) fn clear(&self) {
        self.cleared_at
            .store(self.next.load(Ordering::Relaxed), Ordering::Relaxed);
        for at in 0..self.capacity {
            drop(self.slot(at).take());
        }
    }

    pub(crate) fn query(&self, query: &HistoryQuery) -> Vec<Event> {
        let mut found: Vec<(u64, Event)> = (0..self.capacity)
            .filter_map(|at| {
                self.slot(at)
                    .as_ref()
                    .filter(|(_, e)| query.matches(e))
                    .cloned()
            })
            .collect();
        // Concurrent emitters may push slightly out of `seq` order; the
        // answer is ordered by `seq` all the same (events without one, by
        // when they were pushed).
        let key = |(position, e): &(u64, Event)| (e.seq(), *position);
        if query.is_oldest_first() {
            found.sort_unstable_by_key(key);
        } else {
            found.sort_unstable_by_key(|found| std::cmp::Reverse(key(found)));
        }
        if let Some(limit) = query.get_limit() {
            found.truncate(limit);
        }
        found.into_iter().map(|(_, e)| e).collect()
    }
}

/// A stride coprime with `capacity` that puts consecutive slots on
/// different cache lines; 1 for small rings.
fn stride_for(capacity: usize) -> usize {
    fn gcd(a: usize, b: usize) -> usize {
        if b == 0 { a } else { gcd(b, a % b) }
    }
    [
        61, 59, 53, 47, 43, 41, 37, 31, 29, 23, 19, 17, 13, 11, 7, 5, 3,
    ]
    .into_iter()
    .find(|&s| capacity > 2 * s && gcd(s, capacity) == 1)
    .unwrap_or(1)
}
