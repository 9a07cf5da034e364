//! The in-memory history: a bounded ring of the most recent events.
//!
//! Emitters on different threads do not share a lock: each push takes the
//! next position (one atomic add) and locks only its own slot. The event a
//! push evicts is freed on the emitting thread, where the allocator reuses
//! its memory for the next event (`docs/benchmarks.md`, "Router design
//! notes").

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use nerve_core::Event;
use nerve_core::query::HistoryQuery;

/// An event and the position it was pushed at.
type Slot = Mutex<Option<(u64, Event)>>;

pub(crate) struct History {
    capacity: usize,
    /// Where the next push goes (modulo `capacity`).
    next: AtomicU64,
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
            next: AtomicU64::new(0),
            cleared_at: AtomicU64::new(0),
            slots: (0..capacity).map(|_| Mutex::new(None)).collect(),
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
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
            let mut slot = self.slot((position % self.capacity as u64) as usize);
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
