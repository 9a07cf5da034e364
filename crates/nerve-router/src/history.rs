//! The in-memory history: the most recent events, newest `capacity` by `seq`.
//!
//! Emitters on different threads share no line of it: each group of
//! threads (`thread_number()` modulo [`SHARDS`]) keeps its own events in a
//! shard of its own, ordered by `seq`, and a read merges the shards by `seq`
//! and keeps the newest `capacity`. A push evicts from its own shard the
//! oldest event if it is no longer among the newest `capacity`: an event
//! its own thread allocated, freed one per push where the allocator reuses
//! it for the next event (`docs/benchmarks.md`, "Router design notes"). A
//! group of threads that stops emitting has its shard emptied by the
//! others, a little at a time, as its events age out. The few events the
//! bus does not number (its reports of journal faults) are kept apart, in a
//! short ring of their own.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};

use crossbeam_utils::CachePadded;
use nerve_core::Event;
use nerve_core::query::HistoryQuery;

use crate::counter::thread_number;

/// Unnumbered events kept at most (fewer if the history is smaller).
const UNNUMBERED: usize = 64;

/// Shards per history: one per group of threads, as many as route copies.
const SHARDS: usize = 8;

/// Every this many events, one shard is swept (see [`History::sweep`]),
/// each in turn.
const SWEEP_EVERY: u64 = 16;

/// What one push evicts: at most two events, dropped once the shard is
/// unlocked.
type Evicted = (Option<Event>, Option<Event>);

/// One group of threads' events, oldest `seq` first.
type Shard = CachePadded<Mutex<VecDeque<Event>>>;

pub(crate) struct History {
    capacity: usize,
    shards: Box<[Shard]>,
    /// Events without a `seq`, oldest first, with the order they came in.
    unnumbered: Mutex<(u64, VecDeque<(u64, Event)>)>,
}

impl History {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            unnumbered: Mutex::new((0, VecDeque::new())),
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    fn shard(&self, at: usize) -> MutexGuard<'_, VecDeque<Event>> {
        self.shards[at]
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
        let capacity = self.capacity as u64;
        let evicted = {
            let mut shard = self.shard(thread_number() % SHARDS);
            match shard.back() {
                Some(last) if last.seq() > seq => {
                    // Another thread of the group pushed a later `seq` first.
                    let at = shard.partition_point(|e| e.seq() < seq);
                    shard.insert(at, event.clone());
                }
                _ => shard.push_back(event.clone()),
            }
            let newest = shard.back().map_or(seq, Event::seq);
            evict_older(&mut shard, newest, capacity)
        };
        // Freed once the shard is unlocked.
        drop(evicted);
        if seq % SWEEP_EVERY == 0 {
            self.sweep((seq / SWEEP_EVERY) as usize % SHARDS, seq);
        }
    }

    /// Evicts from shard `at` a few events no longer among the newest
    /// since `seq` was pushed, if it is not in use: what a group of threads
    /// that stopped emitting left (one that emits keeps its own shard
    /// trimmed). A few at a time, so that freeing them never holds up the
    /// allocator for the thread that allocated them, should it come back.
    fn sweep(&self, at: usize, seq: u64) {
        // A shard that is locked is in use: its threads are emitting.
        let mut shard = match self.shards[at].try_lock() {
            Ok(shard) => shard,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        let capacity = self.capacity as u64;
        // Its newest event still counts: its threads are emitting, and
        // trim it themselves.
        if shard
            .back()
            .is_some_and(|e| seq.saturating_sub(e.seq()) < capacity)
        {
            return;
        }
        let evicted = evict_older(&mut shard, seq, capacity);
        drop(shard);
        drop(evicted);
    }

    /// The numbered events kept, oldest first, before the newest
    /// `capacity` are taken.
    fn numbered(&self) -> Vec<Event> {
        let mut all = Vec::new();
        for at in 0..SHARDS {
            all.extend(self.shard(at).iter().cloned());
        }
        all
    }

    pub(crate) fn len(&self) -> usize {
        let numbered: usize = (0..SHARDS).map(|at| self.shard(at).len()).sum();
        // Everything kept beyond the newest `capacity` is older than them
        // (see `query`), so this is what a query finds.
        numbered.min(self.capacity) + self.unnumbered().1.len()
    }

    pub(crate) fn clear(&self) {
        for at in 0..SHARDS {
            let cleared = std::mem::take(&mut *self.shard(at));
            drop(cleared);
        }
        self.unnumbered().1.clear();
    }

    pub(crate) fn query(&self, query: &HistoryQuery) -> Vec<Event> {
        // The newest `capacity` numbered events: a shard that has not
        // pushed for a while may still hold older ones.
        let mut numbered = self.numbered();
        numbered.sort_unstable_by_key(|e| std::cmp::Reverse(e.seq()));
        numbered.truncate(self.capacity);
        let mut found: Vec<(u64, Event)> = self
            .unnumbered()
            .1
            .iter()
            .filter(|(_, e)| query.matches(e))
            .cloned()
            .collect();
        found.extend(
            numbered
                .into_iter()
                .filter(|e| query.matches(e))
                .map(|e| (0, e)),
        );
        // Ordered by `seq` (events without one, by when they were pushed).
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

/// Takes off the front of `shard` (ordered by `seq`) the oldest event if
/// it is no longer among the newest `capacity` now that `newest` has been
/// pushed; a second one too if the shard holds more than `capacity`.
///
/// One per push, as one is allocated: a thread frees what it allocates at
/// the pace it allocates, which the allocator's per-thread cache absorbs;
/// freeing the backlog of a pause at once overflowed that cache and sent
/// the frees to the arenas, whose locks are shared (`docs/benchmarks.md`).
fn evict_older(shard: &mut VecDeque<Event>, newest: u64, capacity: u64) -> Evicted {
    let first = evict_oldest(shard, newest, capacity);
    let second = if first.is_some() && shard.len() as u64 > capacity {
        evict_oldest(shard, newest, capacity)
    } else {
        None
    };
    (first, second)
}

/// The oldest event of `shard`, taken off if it is no longer among the
/// newest `capacity`.
fn evict_oldest(shard: &mut VecDeque<Event>, newest: u64, capacity: u64) -> Option<Event> {
    let oldest = shard.front()?;
    if newest.saturating_sub(oldest.seq()) >= capacity {
        shard.pop_front()
    } else {
        None
    }
}
