//! A subscriber's bounded queue and what it does when full.
//!
//! One queue sits between the emitter and each subscriber that does not run
//! inline: async handlers, queued sync handlers and streams. The emitter
//! pushes; one consumer (a worker task, a worker thread or a stream) pops.
//! Every item pushed is either popped or dropped with a reason, so per
//! subscriber `delivered + dropped == offered` once the queue is empty.
//!
//! Hand-written rather than taken from a channel crate: tokio, crossbeam and
//! async-broadcast each offer one fixed full-queue policy, while nerve needs
//! five per subscriber, plus eviction of the oldest non-terminal item, and a
//! consumer that may be a thread or a task.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use serde::Serialize;

/// What a subscriber's queue does with a new event when it is full.
///
/// Terminal events (see `BusBuilder::terminal_patterns`) are never dropped,
/// whatever the policy: a terminal event evicts the oldest non-terminal one,
/// and when only terminal events are queued it waits for room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Overflow {
    /// Drop the new event.
    DropNewest,
    /// Drop the oldest queued event to make room (the default for streams).
    #[default]
    DropOldest,
    /// Refuse: `emit` returns [`EmitError::QueueFull`](crate::EmitError::QueueFull)
    /// naming the subscriber (after delivering to everyone else).
    Error,
    /// Wait for room: a slow subscriber slows the emitter. Where waiting
    /// would wait on itself (inside a handler of the same bus, or on the
    /// current-thread runtime that drains the queue), `emit` fails fast
    /// with [`EmitError::WouldDeadlock`](crate::EmitError::WouldDeadlock).
    Block,
    /// Wait for room up to this long, then drop the new event. Where waiting
    /// would wait on itself, the event is dropped at once.
    BlockTimeout(Duration),
}

/// Why a subscriber lost an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DropReason {
    /// `DropNewest`: the queue was full.
    QueueFull,
    /// `DropOldest`: evicted to make room for a newer event.
    Evicted,
    /// Evicted to make room for a terminal event.
    TerminalPriority,
    /// `Error`: refused, and `emit` said so.
    Refused,
    /// `BlockTimeout`: no room within the timeout.
    BlockTimeout,
    /// The subscription was closed with the event still queued.
    Closed,
    /// The bus-wide `max_pending` bound was reached.
    MaxPending,
}

impl DropReason {
    /// Every reason, in a fixed order.
    pub const ALL: [DropReason; 7] = [
        DropReason::QueueFull,
        DropReason::Evicted,
        DropReason::TerminalPriority,
        DropReason::Refused,
        DropReason::BlockTimeout,
        DropReason::Closed,
        DropReason::MaxPending,
    ];

    /// The reason as a metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::Evicted => "evicted",
            DropReason::TerminalPriority => "terminal_priority",
            DropReason::Refused => "refused",
            DropReason::BlockTimeout => "block_timeout",
            DropReason::Closed => "closed",
            DropReason::MaxPending => "max_pending",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// Something a queue holds: it knows whether it must never be dropped.
pub(crate) trait QueueItem {
    fn is_terminal(&self) -> bool;
}

/// The result of a push.
pub(crate) enum Pushed<T> {
    /// Queued; an older item may have been evicted to make room.
    Queued(Option<(T, DropReason)>),
    /// The new item was dropped.
    Dropped(T, DropReason),
    /// `Overflow::Error`: refused.
    Full(T),
    /// `Overflow::Block` would have to wait where waiting is not allowed.
    WouldBlock(T),
    /// The queue is closed.
    Closed(T),
}

struct State<T> {
    items: VecDeque<T>,
    closed: bool,
    waker: Option<Waker>,
    /// Producers waiting for room (`Block`, `BlockTimeout`, terminal events).
    waiting: usize,
    /// Whether a consumer thread sleeps in `pop_blocking`. std's `Condvar`
    /// makes a futex syscall on every notify, waiter or not, so the queue
    /// notifies only when someone waits.
    sleeping: bool,
    /// Items ever pushed; published in `Queue::pushes`.
    pushed: u64,
}

pub(crate) struct Queue<T> {
    state: Mutex<State<T>>,
    room: Condvar,
    ready: Condvar,
    capacity: usize,
    overflow: Overflow,
    /// Items ever pushed, so a reader can watch for new ones without the
    /// lock; on a cache line of its own, away from the lock's.
    pushes: CacheLine<AtomicU64>,
}

/// A value alone on its cache line.
#[repr(align(128))]
struct CacheLine<T>(T);

impl<T> std::ops::Deref for CacheLine<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: QueueItem> Queue<T> {
    pub(crate) fn new(capacity: usize, overflow: Overflow) -> Self {
        Self {
            state: Mutex::new(State {
                items: VecDeque::with_capacity(capacity.min(1024)),
                closed: false,
                waker: None,
                waiting: 0,
                sleeping: false,
                pushed: 0,
            }),
            room: Condvar::new(),
            ready: Condvar::new(),
            capacity: capacity.max(1),
            overflow,
            pushes: CacheLine(AtomicU64::new(0)),
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    pub(crate) fn overflow(&self) -> Overflow {
        self.overflow
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// Pushes `item`, applying the overflow policy when full. `may_block`
    /// says whether this thread may wait; `block` runs a wait (so that the
    /// caller can hand a runtime worker's tasks elsewhere first).
    pub(crate) fn push(
        &self,
        item: T,
        may_block: bool,
        block: impl FnOnce(&mut dyn FnMut()),
    ) -> Pushed<T> {
        self.push_deferring(item, may_block, block, None)
    }

    /// [`push`](Self::push), leaving the reader's wake-up, if one is due, in
    /// `wakes` for the caller to do once it has pushed to every subscriber:
    /// a fan-out then wakes its readers together, after the event is in every
    /// queue, as a broadcast channel does, instead of one at a time between
    /// pushes.
    pub(crate) fn push_deferring(
        &self,
        item: T,
        may_block: bool,
        block: impl FnOnce(&mut dyn FnMut()),
        wakes: Option<&mut Wakes>,
    ) -> Pushed<T> {
        let mut state = self.lock();
        if state.closed {
            return Pushed::Closed(item);
        }
        if state.items.len() < self.capacity {
            return self.queued(state, item, None, wakes);
        }
        if item.is_terminal() {
            if let Some(evicted) = Self::evict_oldest_plain(&mut state) {
                return self.queued(
                    state,
                    item,
                    Some((evicted, DropReason::TerminalPriority)),
                    wakes,
                );
            }
            if !may_block {
                // Only terminal events are queued, waiting would wait on
                // ourselves, and terminal events are never dropped: go over
                // capacity by one rather than lose it.
                return self.queued(state, item, None, wakes);
            }
            drop(state);
            wake_all(wakes);
            return self.wait_then_push(item, None, block);
        }
        match self.overflow {
            Overflow::DropNewest => Pushed::Dropped(item, DropReason::QueueFull),
            Overflow::DropOldest => match Self::evict_oldest_plain(&mut state) {
                Some(evicted) => {
                    self.queued(state, item, Some((evicted, DropReason::Evicted)), wakes)
                }
                None => Pushed::Dropped(item, DropReason::QueueFull),
            },
            Overflow::Error => Pushed::Full(item),
            Overflow::Block if !may_block => Pushed::WouldBlock(item),
            Overflow::Block => {
                drop(state);
                wake_all(wakes);
                self.wait_then_push(item, None, block)
            }
            Overflow::BlockTimeout(_) if !may_block => {
                Pushed::Dropped(item, DropReason::BlockTimeout)
            }
            Overflow::BlockTimeout(limit) => {
                drop(state);
                wake_all(wakes);
                self.wait_then_push(item, Some(Instant::now() + limit), block)
            }
        }
    }

    /// Takes the oldest non-terminal item, making room.
    pub(crate) fn evict_oldest(&self) -> Option<T> {
        let mut state = self.lock();
        let evicted = Self::evict_oldest_plain(&mut state);
        drop(state);
        if evicted.is_some() {
            self.room.notify_one();
        }
        evicted
    }

    fn evict_oldest_plain(state: &mut State<T>) -> Option<T> {
        let at = state.items.iter().position(|i| !i.is_terminal())?;
        state.items.remove(at)
    }

    fn queued(
        &self,
        mut state: MutexGuard<'_, State<T>>,
        item: T,
        evicted: Option<(T, DropReason)>,
        wakes: Option<&mut Wakes>,
    ) -> Pushed<T> {
        state.items.push_back(item);
        state.pushed += 1;
        // A plain store, under the lock: cheaper than an atomic add.
        self.pushes.store(state.pushed, Ordering::Release);
        let waker = state.waker.take();
        let sleeping = state.sleeping;
        drop(state);
        if sleeping {
            self.ready.notify_one();
        }
        if let Some(w) = waker {
            match wakes {
                Some(wakes) => wakes.push(w),
                None => w.wake(),
            }
        }
        Pushed::Queued(evicted)
    }

    fn wait_then_push(
        &self,
        item: T,
        deadline: Option<Instant>,
        block: impl FnOnce(&mut dyn FnMut()),
    ) -> Pushed<T> {
        let mut outcome = None;
        let mut item = Some(item);
        block(&mut || {
            let mut state = self.lock();
            loop {
                let Some(pending) = item.take() else { return };
                if state.closed {
                    outcome = Some(Pushed::Closed(pending));
                    return;
                }
                if state.items.len() < self.capacity {
                    outcome = Some(self.queued(state, pending, None, None));
                    return;
                }
                item = Some(pending);
                state.waiting += 1;
                state = match deadline {
                    None => self
                        .room
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner),
                    Some(deadline) => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            state.waiting -= 1;
                            let pending = item.take().unwrap_or_else(|| unreachable_item());
                            outcome = Some(Pushed::Dropped(pending, DropReason::BlockTimeout));
                            return;
                        }
                        self.room
                            .wait_timeout(state, left)
                            .unwrap_or_else(PoisonError::into_inner)
                            .0
                    }
                };
                state.waiting -= 1;
            }
        });
        match (outcome, item) {
            (Some(outcome), _) => outcome,
            // `block` did not run the wait: treat as closed rather than lose it.
            (None, Some(item)) => Pushed::Closed(item),
            (None, None) => Pushed::Queued(None),
        }
    }

    /// After a pop: wakes waiting producers once the queue is half empty,
    /// not after every pop. Waking a blocked emitter for each free slot made
    /// every event of a full queue cost two context switches (65 times
    /// slower than crossbeam with 16 subscribers on 2 cores); waking at half
    /// lets it push a batch. A producer whose deadline passes re-checks for
    /// room before it gives up, so none drops an event the queue had room for.
    fn took(&self, state: MutexGuard<'_, State<T>>) {
        let wake = state.waiting > 0 && state.items.len() <= self.capacity / 2;
        drop(state);
        if wake {
            self.room.notify_all();
        }
    }

    /// Pops for an async consumer.
    pub(crate) fn poll_pop(&self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut state = self.lock();
        if let Some(item) = state.items.pop_front() {
            self.took(state);
            return Poll::Ready(Some(item));
        }
        if state.closed {
            return Poll::Ready(None);
        }
        if !state
            .waker
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            state.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Pops up to `max` items at once for an async consumer, into `out`:
    /// one lock for a batch instead of one per item, which keeps a fast
    /// emitter and many readers from taking turns at the lock.
    /// `Ready(false)` once closed and empty.
    pub(crate) fn poll_pop_batch(
        &self,
        cx: &mut Context<'_>,
        max: usize,
        out: &mut VecDeque<T>,
    ) -> Poll<bool> {
        let mut state = self.lock();
        if state.items.is_empty() && !state.closed {
            // Before going to sleep, give a busy emitter a moment: parking
            // and being unparked for every event (a futex call and a context
            // switch each) cost a reader ~1.5 µs an event, where crossbeam's
            // receivers spin briefly first. This backoff is the same idea:
            // a few pause instructions, growing, watching the push count
            // without the lock. A reader in a tokio task spins 7 pauses:
            // longer, it holds up the worker's other tasks and the emitter's
            // core (63 made one reader 10 % slower; none made 16 readers 2x
            // slower). A reader on its own thread spins 63: it parks
            // otherwise, a context switch per event (16 thread readers were
            // 2x slower with 7).
            let seen = self.pushes.load(Ordering::Acquire);
            drop(state);
            let steps = if tokio::task::try_id().is_some() {
                3
            } else {
                6
            };
            for step in 0..steps {
                for _ in 0..(1 << step) {
                    std::hint::spin_loop();
                }
                if self.pushes.load(Ordering::Acquire) != seen {
                    break;
                }
            }
            state = self.lock();
        }
        if !state.items.is_empty() {
            let n = state.items.len().min(max);
            out.extend(state.items.drain(..n));
            self.took(state);
            return Poll::Ready(true);
        }
        if state.closed {
            return Poll::Ready(false);
        }
        if !state
            .waker
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            state.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Pops for a consumer thread, waiting for an item; `None` once closed
    /// and empty.
    pub(crate) fn pop_blocking(&self) -> Option<T> {
        let mut state = self.lock();
        loop {
            if let Some(item) = state.items.pop_front() {
                self.took(state);
                return Some(item);
            }
            if state.closed {
                return None;
            }
            state.sleeping = true;
            state = self
                .ready
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            state.sleeping = false;
        }
    }

    /// Closes the queue: pushes fail, waiting producers wake, and the
    /// consumer sees the end once it has taken what is queued.
    pub(crate) fn close(&self) {
        let waker = {
            let mut state = self.lock();
            state.closed = true;
            state.waker.take()
        };
        self.room.notify_all();
        self.ready.notify_all();
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Takes what the queue holds, leaving it open.
    pub(crate) fn take_all(&self) -> Vec<T> {
        let items: Vec<T> = self.lock().items.drain(..).collect();
        self.room.notify_all();
        items
    }

    /// Closes the queue and takes what it holds.
    pub(crate) fn close_and_drain(&self) -> Vec<T> {
        let items: Vec<T> = {
            let mut state = self.lock();
            state.closed = true;
            state.items.drain(..).collect()
        };
        self.close();
        items
    }
}

/// Wake-ups a fan-out defers until every queue has the event.
pub(crate) type Wakes = smallvec::SmallVec<[Waker; 8]>;

/// Wakes what a fan-out deferred: before any wait, so that nothing the
/// emitter waits for is itself waiting for a wake-up still in its hands.
pub(crate) fn wake_all(wakes: Option<&mut Wakes>) {
    if let Some(wakes) = wakes {
        for waker in wakes.drain(..) {
            waker.wake();
        }
    }
}

#[cold]
fn unreachable_item<T>() -> T {
    // `item` is put back before every wait, so it is always there on wake.
    panic!("queue wait lost its item")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Item(u32, bool);
    impl QueueItem for Item {
        fn is_terminal(&self) -> bool {
            self.1
        }
    }

    fn no_block(_: &mut dyn FnMut()) {}
    fn run(wait: &mut dyn FnMut()) {
        wait();
    }

    fn drain(q: &Queue<Item>) -> Vec<u32> {
        q.close_and_drain().into_iter().map(|i| i.0).collect()
    }

    #[test]
    fn policies_when_full() {
        let q = Queue::new(2, Overflow::DropNewest);
        assert!(matches!(
            q.push(Item(1, false), false, no_block),
            Pushed::Queued(None)
        ));
        assert!(matches!(
            q.push(Item(2, false), false, no_block),
            Pushed::Queued(None)
        ));
        assert!(matches!(
            q.push(Item(3, false), false, no_block),
            Pushed::Dropped(Item(3, _), DropReason::QueueFull)
        ));
        assert_eq!(drain(&q), [1, 2]);

        let q = Queue::new(2, Overflow::DropOldest);
        q.push(Item(1, false), false, no_block);
        q.push(Item(2, false), false, no_block);
        assert!(matches!(
            q.push(Item(3, false), false, no_block),
            Pushed::Queued(Some((Item(1, _), DropReason::Evicted)))
        ));
        assert_eq!(drain(&q), [2, 3]);

        let q = Queue::new(1, Overflow::Error);
        q.push(Item(1, false), false, no_block);
        assert!(matches!(
            q.push(Item(2, false), false, no_block),
            Pushed::Full(Item(2, _))
        ));

        let q = Queue::new(1, Overflow::Block);
        q.push(Item(1, false), false, no_block);
        assert!(matches!(
            q.push(Item(2, false), false, no_block),
            Pushed::WouldBlock(_)
        ));

        let q = Queue::new(1, Overflow::BlockTimeout(Duration::from_millis(1)));
        q.push(Item(1, false), false, no_block);
        assert!(matches!(
            q.push(Item(2, false), true, run),
            Pushed::Dropped(_, DropReason::BlockTimeout)
        ));
    }

    #[test]
    fn terminal_items_evict_plain_ones_and_are_never_dropped() {
        let q = Queue::new(2, Overflow::DropNewest);
        q.push(Item(1, true), false, no_block);
        q.push(Item(2, false), false, no_block);
        assert!(matches!(
            q.push(Item(3, true), false, no_block),
            Pushed::Queued(Some((Item(2, _), DropReason::TerminalPriority)))
        ));
        // Only terminal items left, and no waiting allowed: over capacity.
        assert!(matches!(
            q.push(Item(4, true), false, no_block),
            Pushed::Queued(None)
        ));
        assert_eq!(drain(&q), [1, 3, 4]);
    }

    #[test]
    fn block_waits_for_the_consumer() {
        let q = std::sync::Arc::new(Queue::new(1, Overflow::Block));
        q.push(Item(0, false), false, no_block);
        let consumer = {
            let q = q.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                while let Some(i) = q.pop_blocking() {
                    got.push(i.0);
                }
                got
            })
        };
        for n in 1..1000 {
            assert!(matches!(
                q.push(Item(n, false), true, run),
                Pushed::Queued(None)
            ));
        }
        q.close();
        assert_eq!(consumer.join().unwrap(), (0..1000).collect::<Vec<_>>());
    }
}
