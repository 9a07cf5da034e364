//! The in-memory history: a bounded ring of the most recent events.
//!
//! Emitters on different threads do not share a lock, nor a counter of
//! their own: an event goes in the slot of its `seq` (which the bus has
//! just taken), and the push locks only that slot. The few events the bus
//! does not number (its reports of journal faults) are kept apart, in a
//! short ring of their own. The event a push evicts is freed on the
//! emitting thread, where the allocator reuses its memory for the next
//! event (`docs/benchmarks.md`, "Router design notes").

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use nerve_core::Event;
use nerve_core::query::HistoryQuery;

/// Unnumbered events kept at most (fewer if the history is smaller).
const UNNUMBERED: usize = 64;

/// An event and the position it was pushed at.
type Slot = Mutex<Option<(u64, Event)>>;

pub(crate) struct History {
    capacity: usize,
    /// The slot of `seq` is `seq * stride % capacity`: consecutive events
    /// (from different threads, often) land on different cache lines.
    stride: usize,
    /// Each slot holds the event of some `seq`, with that `seq`, so that a
    /// push that wrapped round late never replaces a newer event.
    slots: Box<[Slot]>,
    /// Slots holding an event: counted only while the ring fills up.
    occupied: AtomicUsize,
    /// Events without a `seq`, oldest first, with the order they came in.
    unnumbered: Mutex<(u64, VecDeque<(u64, Event)>)>,
}

impl History {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            stride: stride_for(capacity),
            slots: (0..capacity).map(|_| Mutex::new(None)).collect(),
            occupied: AtomicUsize::new(0),
            unnumbered: Mutex::new((0, VecDeque::new())),
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// The slot of `seq`: a permutation of the numbers modulo the capacity,
    /// so that an event still replaces the one `capacity` before it.
    fn index(&self, seq: u64) -> usize {
        let at = (seq % self.capacity as u64) as usize;
        (at * self.stride) % self.capacity
    }

    fn slot(&self, at: usize) -> MutexGuard<'_, Option<(u64, Event)>> {
        self.slots[at]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn unnumbered(&self) -> MutexGuard<'_, (u64, VecDeque<(u64, Event)>)> {
        self.unnumbered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps `event`, numbered `seq` by the bus, or not numbered (`None`).
    pub(crate) fn push(&self, event: &Event, seq: Option<u64>) {
        if self.capacity == 0 {
            return;
        }
        let Some(seq) = seq else {
            let mut unnumbered = self.unnumbered();
            let (next, ring) = &mut *unnumbered;
            if ring.len() == self.capacity.min(UNNUMBERED) {
                ring.pop_front();
            }
            ring.push_back((*next, event.clone()));
            *next += 1;
            return;
        };
        let evicted = {
            let mut slot = self.slot(self.index(seq));
            match &*slot {
                Some((held, _)) if *held > seq => None,
                Some(_) => slot.replace((seq, event.clone())),
                None => {
                    self.occupied.fetch_add(1, Ordering::Relaxed);
                    slot.replace((seq, event.clone()))
                }
            }
        };
        drop(evicted);
    }

    pub(crate) fn len(&self) -> usize {
        self.occupied.load(Ordering::Relaxed) + self.unnumbered().1.len()
    }

    pub(crate) fn clear(&self) {
        for at in 0..self.capacity {
            if self.slot(at).take().is_some() {
                self.occupied.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.unnumbered().1.clear();
    }

    pub(crate) fn query(&self, query: &HistoryQuery) -> Vec<Event> {
        let mut found: Vec<(u64, Event)> = self
            .unnumbered()
            .1
            .iter()
            .filter(|(_, e)| query.matches(e))
            .cloned()
            .collect();
        found.extend((0..self.capacity).filter_map(|at| {
            self.slot(at)
                .as_ref()
                .filter(|(_, e)| query.matches(e))
                .cloned()
        }));
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
