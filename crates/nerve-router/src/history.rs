//! The in-memory history: a bounded ring of the most recent events.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use nerve_core::Event;
use nerve_core::query::HistoryQuery;

pub(crate) struct History {
    capacity: usize,
    ring: Mutex<VecDeque<Event>>,
}

impl History {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            ring: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    pub(crate) fn push(&self, event: &Event) {
        if self.capacity == 0 {
            return;
        }
        let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        if ring.len() == self.capacity {
            ring.pop_front();
        }
        ring.push_back(event.clone());
    }

    pub(crate) fn len(&self) -> usize {
        self.ring
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub(crate) fn clear(&self) {
        self.ring
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    pub(crate) fn query(&self, query: &HistoryQuery) -> Vec<Event> {
        let mut found: Vec<Event> = {
            let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
            ring.iter().filter(|e| query.matches(e)).cloned().collect()
        };
        // Concurrent emitters may push slightly out of `seq` order; the
        // answer is ordered by `seq` all the same.
        if query.is_oldest_first() {
            found.sort_unstable_by_key(Event::seq);
        } else {
            found.sort_unstable_by_key(|e| std::cmp::Reverse(e.seq()));
        }
        if let Some(limit) = query.get_limit() {
            found.truncate(limit);
        }
        found
    }
}
