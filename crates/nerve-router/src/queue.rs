//! A subscriber's bounded queue and what it does when full.
//!
//! One queue sits between the emitter and each subscriber that does not run
//! inline: async handlers, queued sync handlers and streams. The emitter
//! pushes; one consumer (a worker task, a worker thread or a stream) pops.
//! Every item pushed is either popped or dropped with a reason, so per
//! subscriber `delivered + dropped == offered` once the queue is empty.
//!
//! # Design
//!
//! The common case, a push into a queue with room, is lock-free: the item
//! goes into a bounded ring (`crossbeam_queue::ArrayQueue`), and the reader
//! is woken only if it has parked, which the emitter learns from one flag
//! rather than a lock. Everything rare goes through one mutex, the "slow
//! side":
//!
//! * a push into a full queue (every overflow policy, terminal eviction,
//!   waiting for room);
//! * items outside the ring: `front` holds terminal items that an eviction
//!   took from the ring's head while looking for the oldest non-terminal one
//!   (they stay ahead of everything in the ring), `back` holds items beyond
//!   the ring's size (queues larger than [`RING_MAX`], and terminal items
//!   pushed over capacity). The queue's order is `front`, ring, `back`.
//!   While either holds anything, pushes take the slow side, so the bound
//!   and the order stay exact (but for a lock-free push that read `state`
//!   just before an eviction moved items to `front`: it may land after, one
//!   item over the bound per emitter racing so, as with `max_pending`);
//! * the reader, once per batch: it takes `front`, then the ring, then
//!   `back` under the lock, so that an eviction moving items from the ring to
//!   `front` never lets the reader overtake them.
//!
//! Hand-written rather than taken from a channel crate: tokio, crossbeam and
//! async-broadcast each offer one fixed full-queue policy, while nerve needs
//! five per subscriber, plus eviction of the oldest non-terminal item (from
//! the middle of the queue, which no lock-free ring offers), exact per-item
//! accounting of what is dropped and why, and a consumer that may be a thread
//! or a task. The lock-free part is crossbeam's; what is written here is the
//! slow side around it and the parking protocol.

use std::collections::VecDeque;
use std::sync::{Arc, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;
use serde::Serialize;

// Through the shim, so that `--cfg nerve_loom` model-checks the protocol
// (see `sync.rs`).
use crate::sync::{
    AtomicBool, AtomicU64, AtomicUsize, AtomicWaker, Condvar, MODEL, Mutex, MutexGuard, Ordering,
    Ring, thread,
};

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
    /// Whether the item counts as offered to the subscriber (an event, not
    /// an end-of-stream marker).
    fn counted(&self) -> bool {
        true
    }
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
    /// Queued, but the queue was closed at the same moment: what it held,
    /// the new item among it, was taken back, lost as
    /// [`DropReason::Closed`].
    Withdrawn(Vec<T>),
}

/// The largest ring a queue allocates up front; a larger capacity keeps the
/// rest in `back`, on the slow side. Streams (1,024 by default) fit whole;
/// handler queues (65,536 by default) do not allocate 65,536 slots each.
pub(crate) const RING_MAX: usize = 1024;

/// How many events must have come in while a blocking reader yielded for it
/// to take them as a stream and doze while a batch gathers.
const STREAMING: usize = 2;

/// How long a blocking reader dozes at most while a batch gathers. Linux
/// adds its timer slack (50 µs by default) to a sleep this short.
const DOZE: Duration = Duration::from_micros(50);

/// How a consumer waits when it finds its queue empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Waiting {
    /// Polled by whatever executor: a tokio task spins briefly, anything
    /// else backs off as crossbeam's receivers do, then registers its waker
    /// and returns `Pending`. Nothing here blocks for long, as an executor's
    /// thread may have other work.
    Poll,
    /// A thread of its own that blocks until an item comes
    /// (`EventStream::recv_blocking`, a queued handler's worker): it may
    /// let a batch gather first (see `poll_pop_with`).
    Block,
    /// As `Poll`, without the spin: for a worker whose last delivery's
    /// emitter waits for its reply, so nothing comes before the reply.
    Park,
}

/// `state`'s bit for a closed queue; the bits below [`EVICTING`] count the
/// items in `front` and `back`.
const CLOSED: usize = 1 << (usize::BITS - 1);

/// `state`'s bit for an eviction under way: set before it pops from the
/// ring, so that lock-free pushes take the slow side (and wait for the lock)
/// instead of filling the slots the eviction frees. Cleared, with the count
/// of spilled items, when the eviction is done.
const EVICTING: usize = 1 << (usize::BITS - 2);

/// See [`Queue::hot`].
struct Hot {
    /// [`CLOSED`] | [`EVICTING`] | items in `front` and `back`; written
    /// under the lock.
    state: AtomicUsize,
    /// Counted items the queue ever accepted: the subscriber's offers that
    /// were not refused, so the emitter does not count them again. Each
    /// push's SeqCst add also orders the push before the pusher's look at
    /// `parked` and `state`; the reader (parking, or seeing `CLOSED`) and
    /// `close` read it with SeqCst before they look at the ring, so either
    /// side sees the other (a Dekker handshake, at the price of one atomic
    /// add the emitter would make anyway to count the offer).
    accepted: AtomicU64,
    /// The reader registered its waker and is about to sleep: the next push
    /// wakes it. The only field here the reader writes, once per sleep.
    parked: AtomicBool,
}

/// The slow side: everything a lock-free push cannot do.
struct Slow<T> {
    /// Terminal items evicted from the ring's head, ahead of the ring.
    front: VecDeque<T>,
    /// Items that did not fit in the ring, behind it.
    back: VecDeque<T>,
    /// Producers waiting for room (`Block`, `BlockTimeout`, terminal events).
    waiting: usize,
}

pub(crate) struct Queue<T> {
    ring: Ring<T>,
    /// What the emitter reads or writes on every push besides the ring,
    /// together on one cache line of its own: one line to bring in per
    /// push, which misses only when the reader has parked since.
    hot: CachePadded<Hot>,
    /// Taken by the reader once per batch.
    slow: CachePadded<Mutex<Slow<T>>>,
    /// Producers wait here for room.
    room: Condvar,
    /// The reader's waker, set before it parks.
    waker: AtomicWaker,
    /// A blocking reader dozes while a batch gathers: a push that finds the
    /// queue full wakes it. Not in `hot`: only the slow side looks, and the
    /// reader writes it twice a doze.
    dozing: AtomicBool,
    capacity: usize,
    overflow: Overflow,
}

/// Wakes a reader thread parked in [`Queue::pop_blocking`].
struct ThreadWaker(thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// A waker that unparks the current thread.
pub(crate) fn thread_waker() -> Waker {
    Waker::from(Arc::new(ThreadWaker(thread::current())))
}

/// Polls with `waker` (a [`thread_waker`] of this thread) until `poll` is
/// ready, parking the thread in between: how a consumer thread of its own
/// waits, without an executor.
pub(crate) fn park_until<R>(waker: &Waker, mut poll: impl FnMut(&mut Context<'_>) -> Poll<R>) -> R {
    let mut cx = Context::from_waker(waker);
    loop {
        match poll(&mut cx) {
            Poll::Ready(value) => return value,
            Poll::Pending => thread::park(),
        }
    }
}

impl<T: QueueItem> Queue<T> {
    pub(crate) fn new(capacity: usize, overflow: Overflow) -> Self {
        Self::with_ring(capacity, overflow, RING_MAX)
    }

    /// A queue whose ring holds at most `ring` items (tests use small rings
    /// to reach `back`).
    fn with_ring(capacity: usize, overflow: Overflow, ring: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            ring: Ring::new(capacity.min(ring.max(1))),
            hot: CachePadded::new(Hot {
                state: AtomicUsize::new(0),
                accepted: AtomicU64::new(0),
                parked: AtomicBool::new(false),
            }),
            slow: CachePadded::new(Mutex::new(Slow {
                front: VecDeque::new(),
                back: VecDeque::new(),
                waiting: 0,
            })),
            room: Condvar::new(),
            waker: AtomicWaker::new(),
            dozing: AtomicBool::new(false),
            capacity,
            overflow,
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    pub(crate) fn overflow(&self) -> Overflow {
        self.overflow
    }

    fn lock(&self) -> MutexGuard<'_, Slow<T>> {
        self.slow.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Items queued; exact when nothing pushes or pops meanwhile.
    pub(crate) fn len(&self) -> usize {
        self.ring.len() + (self.hot.state.load(Ordering::Acquire) & !(CLOSED | EVICTING))
    }

    /// Counted items ever accepted (see `QueueItem::counted`).
    pub(crate) fn accepted(&self) -> u64 {
        self.hot.accepted.load(Ordering::Relaxed)
    }

    fn len_locked(&self, slow: &Slow<T>) -> usize {
        self.ring.len() + slow.front.len() + slow.back.len()
    }

    /// Publishes how many items are outside the ring, ending an eviction's
    /// [`EVICTING`]; under the lock.
    fn set_spilled(&self, slow: &Slow<T>) {
        let closed = self.hot.state.load(Ordering::Relaxed) & CLOSED;
        self.hot.state.store(
            closed | (slow.front.len() + slow.back.len()),
            Ordering::SeqCst,
        );
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
        self.push_deferring(item, move || may_block, block, None)
    }

    /// [`push`](Self::push), leaving the reader's wake-up, if one is due, in
    /// `wakes` for the caller to do once it has pushed to every subscriber:
    /// a fan-out then wakes its readers together, after the event is in every
    /// queue, as a broadcast channel does, instead of one at a time between
    /// pushes. `may_block` is asked only if the queue is full.
    #[inline]
    pub(crate) fn push_deferring(
        &self,
        item: T,
        may_block: impl FnOnce() -> bool,
        block: impl FnOnce(&mut dyn FnMut()),
        wakes: Option<&mut Wakes>,
    ) -> Pushed<T> {
        match self.push_fast(item) {
            Fast::Queued => {
                self.wake_reader(wakes);
                Pushed::Queued(None)
            }
            Fast::Withdrawn(items) => Pushed::Withdrawn(items),
            Fast::Slow(item) => self.push_slow(item, may_block, block, wakes),
        }
    }

    /// The fast path: open, nothing outside the ring, no eviction under way,
    /// and the ring has room. Lock-free. Does not wake the reader: a caller
    /// that is about to read the item itself (a waiting emitter holding its
    /// subscription's turn, `turn.rs`) uses it alone.
    #[inline]
    pub(crate) fn push_fast(&self, item: T) -> Fast<T> {
        if self.hot.state.load(Ordering::Acquire) != 0 {
            return Fast::Slow(item);
        }
        let counted = u64::from(item.counted());
        match self.ring.push(item) {
            Ok(()) => {
                self.hot.accepted.fetch_add(counted, Ordering::SeqCst);
                if self.hot.state.load(Ordering::SeqCst) & CLOSED != 0 {
                    // Closed while we pushed: whoever closed may have
                    // drained before our item landed. Take back what is
                    // left, so nothing stays in a queue nobody reads.
                    return Fast::Withdrawn(self.take_all());
                }
                Fast::Queued
            }
            Err(item) => Fast::Slow(item),
        }
    }

    /// Puts `item` behind everything queued; under the lock.
    fn put(&self, slow: &mut Slow<T>, item: T) {
        if slow.back.is_empty() {
            if let Err(item) = self.ring.push(item) {
                slow.back.push_back(item);
                self.set_spilled(slow);
            }
        } else {
            slow.back.push_back(item);
            self.set_spilled(slow);
        }
    }

    /// After a `counted` item was put under the lock (now released): counts
    /// it and wakes the reader.
    fn queued(
        &self,
        counted: bool,
        evicted: Option<(T, DropReason)>,
        wakes: Option<&mut Wakes>,
    ) -> Pushed<T> {
        self.hot
            .accepted
            .fetch_add(u64::from(counted), Ordering::SeqCst);
        self.wake_reader(wakes);
        Pushed::Queued(evicted)
    }

    /// Wakes the reader if it parked; called after a push and its SeqCst add
    /// to `accepted`.
    fn wake_reader(&self, wakes: Option<&mut Wakes>) {
        // A compare-exchange, not a swap: only the pusher that clears the
        // flag writes it. A swap by a pusher that finds it cleared would
        // write `false` again, which loom (its modification order is only
        // partial) may order after the reader's next `true`, reporting a
        // lost wake-up no hardware can produce. One locked op either way.
        if self.hot.parked.load(Ordering::SeqCst)
            && self
                .hot
                .parked
                .compare_exchange(true, false, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            if let Some(w) = self.waker.take() {
                match wakes {
                    Some(wakes) => wakes.push(w),
                    None => w.wake(),
                }
            }
        }
    }

    #[inline(never)]
    fn push_slow(
        &self,
        item: T,
        may_block: impl FnOnce() -> bool,
        block: impl FnOnce(&mut dyn FnMut()),
        wakes: Option<&mut Wakes>,
    ) -> Pushed<T> {
        let mut slow = self.lock();
        // Under the lock, `close` either happened before (seen here) or
        // drains after us (and finds the item).
        if self.hot.state.load(Ordering::Relaxed) & CLOSED != 0 {
            return Pushed::Closed(item);
        }
        let counted = item.counted();
        if self.len_locked(&slow) < self.capacity {
            self.put(&mut slow, item);
            drop(slow);
            return self.queued(counted, None, wakes);
        }
        // Full: a reader dozing while a batch gathers has one.
        if self.dozing.load(Ordering::SeqCst) {
            self.waker.wake();
        }
        let terminal = item.is_terminal();
        if terminal || self.overflow == Overflow::DropOldest {
            if let Some(evicted) = self.evict_locked(&mut slow) {
                self.put(&mut slow, item);
                drop(slow);
                let reason = if terminal {
                    DropReason::TerminalPriority
                } else {
                    DropReason::Evicted
                };
                return self.queued(counted, Some((evicted, reason)), wakes);
            }
        }
        let may_block = may_block();
        if terminal {
            if !may_block {
                // Only terminal events are queued, waiting would wait on
                // ourselves, and terminal events are never dropped: go over
                // capacity by one rather than lose it.
                self.put(&mut slow, item);
                drop(slow);
                return self.queued(counted, None, wakes);
            }
            drop(slow);
            wake_all(wakes);
            return self.wait_then_push(item, None, block);
        }
        match self.overflow {
            // With `DropOldest`, only terminal items are queued.
            Overflow::DropNewest | Overflow::DropOldest => {
                Pushed::Dropped(item, DropReason::QueueFull)
            }
            Overflow::Error => Pushed::Full(item),
            Overflow::Block if !may_block => Pushed::WouldBlock(item),
            Overflow::Block => {
                drop(slow);
                wake_all(wakes);
                self.wait_then_push(item, None, block)
            }
            Overflow::BlockTimeout(_) if !may_block => {
                Pushed::Dropped(item, DropReason::BlockTimeout)
            }
            Overflow::BlockTimeout(limit) => {
                drop(slow);
                wake_all(wakes);
                self.wait_then_push(item, Some(Instant::now() + limit), block)
            }
        }
    }

    /// Takes the oldest non-terminal item, making room.
    pub(crate) fn evict_oldest(&self) -> Option<T> {
        let mut slow = self.lock();
        let evicted = self.evict_locked(&mut slow);
        drop(slow);
        if evicted.is_some() {
            self.room.notify_one();
        }
        evicted
    }

    /// Takes the oldest non-terminal item; under the lock, so the reader
    /// does not pop meanwhile. `front` holds only terminal items, so the
    /// oldest non-terminal one is in the ring (terminal items met at its
    /// head on the way move to the end of `front`, keeping their order), or
    /// else in `back`.
    ///
    /// [`EVICTING`] is set before the first pop: until then a lock-free push
    /// may still land in the ring (it read `state` before), after it none
    /// does. Without it, `state` stayed 0 while the pops freed slots, and
    /// one emitter could fill every freed slot, one push after another,
    /// before the eviction published the spilled count: with two slots freed
    /// (a terminal item moved to `front`, then the evicted one) the bound
    /// overshot by two with a single emitter (found by the `loom` model
    /// `loom_eviction_racing_push_overshoots_by_at_most_one_per_emitter`).
    fn evict_locked(&self, slow: &mut Slow<T>) -> Option<T> {
        self.hot.state.fetch_or(EVICTING, Ordering::SeqCst);
        let mut found = None;
        while let Some(item) = self.ring.pop() {
            if item.is_terminal() {
                slow.front.push_back(item);
            } else {
                found = Some(item);
                break;
            }
        }
        if found.is_none() {
            if let Some(at) = slow.back.iter().position(|i| !i.is_terminal()) {
                found = slow.back.remove(at);
            }
        }
        self.set_spilled(slow);
        found
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
            let mut slow = self.lock();
            loop {
                let Some(pending) = item.take() else { return };
                if self.hot.state.load(Ordering::Relaxed) & CLOSED != 0 {
                    outcome = Some(Pushed::Closed(pending));
                    return;
                }
                if self.len_locked(&slow) < self.capacity {
                    let counted = pending.counted();
                    self.put(&mut slow, pending);
                    drop(slow);
                    outcome = Some(self.queued(counted, None, None));
                    return;
                }
                item = Some(pending);
                slow.waiting += 1;
                slow = match deadline {
                    None => self.room.wait(slow).unwrap_or_else(PoisonError::into_inner),
                    Some(deadline) => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            slow.waiting -= 1;
                            let pending = item.take().unwrap_or_else(|| unreachable_item());
                            outcome = Some(Pushed::Dropped(pending, DropReason::BlockTimeout));
                            return;
                        }
                        self.room
                            .wait_timeout(slow, left)
                            .unwrap_or_else(PoisonError::into_inner)
                            .0
                    }
                };
                slow.waiting -= 1;
            }
        });
        match (outcome, item) {
            (Some(outcome), _) => outcome,
            // `block` did not run the wait: treat as closed rather than lose it.
            (None, Some(item)) => Pushed::Closed(item),
            (None, None) => Pushed::Queued(None),
        }
    }

    /// Takes up to `max` items, oldest first, into `out`: `front`, then the
    /// ring, then `back`, under the lock. Wakes waiting producers once the
    /// queue is half empty, not after every pop, so that a woken emitter
    /// pushes a batch rather than paying two context switches an event (see
    /// `docs/benchmarks.md`, "Router design notes"). A producer whose
    /// deadline passes re-checks for room before it gives up, so none drops
    /// an event the queue had room for.
    fn take(&self, max: usize, out: &mut impl FnMut(T)) -> usize {
        let mut slow = self.lock();
        let mut n = 0;
        let spilled = !slow.front.is_empty() || !slow.back.is_empty();
        while n < max {
            let Some(item) = slow.front.pop_front() else {
                break;
            };
            out(item);
            n += 1;
        }
        while n < max {
            let Some(item) = self.ring.pop() else { break };
            out(item);
            n += 1;
        }
        while n < max && !slow.back.is_empty() && self.ring.is_empty() {
            let Some(item) = slow.back.pop_front() else {
                break;
            };
            out(item);
            n += 1;
        }
        if spilled {
            self.set_spilled(&slow);
        }
        let wake = n > 0 && slow.waiting > 0 && self.len_locked(&slow) <= self.capacity / 2;
        drop(slow);
        if wake {
            self.room.notify_all();
        }
        n
    }

    /// [`take`](Self::take), without the lock when the queue is seen empty
    /// (nothing outside the ring, no eviction under way, an empty ring): a
    /// reader then parks, and its look after registering takes the lock.
    fn take_unless_empty(&self, max: usize, out: &mut impl FnMut(T)) -> usize {
        if self.hot.state.load(Ordering::Acquire) == 0 && self.ring.is_empty() {
            return 0;
        }
        self.take(max, out)
    }

    /// Takes the oldest item, if any, for a reader that does not wait (a
    /// waiting emitter holding its subscription's turn, `turn.rs`).
    pub(crate) fn pop_now(&self) -> Option<T> {
        let mut one = None;
        self.take_unless_empty(1, &mut |item| one = Some(item));
        one
    }

    /// Wakes the reader if the queue holds anything: for a reader that
    /// stands in for the parked one (see [`pop_now`](Self::pop_now)) and
    /// leaves items behind. It wakes the registered waker without touching
    /// `parked`: a push that comes later still finds the flag as the reader
    /// left it (a stale `true` costs that push one compare-exchange), and the
    /// park protocol between pushers and the reader stays theirs alone.
    pub(crate) fn wake_reader_if_queued(&self) {
        if self.len() > 0 {
            self.waker.wake();
        }
    }

    /// Whether the ring is empty, without the lock: what a reader watches
    /// while it spins (items outside the ring it takes under the lock
    /// before parking anyway), so that it reads no line the emitter writes
    /// but the ring's.
    fn looks_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// A blocking reader that found its queue empty lets a batch gather
    /// before it watches the ring, when events are streaming in: it yields
    /// once (with more threads than cores, the core goes to the emitter or
    /// to a reader with work), and if several but fewer than half its ring
    /// came meanwhile, it dozes, for at most [`DOZE`] or until a push finds the
    /// queue full, then takes what is there. If at most one came during the
    /// yield, events are not streaming (a request and its reply, say, where
    /// one side waits for the other): it goes on to watch and then park,
    /// and the next push wakes it at once.
    ///
    /// A reader watching the ring under a stream of events reads the ring's
    /// tail while the emitter writes it, and every push waits for the cache
    /// line; dozing only while events stream keeps a request and its reply
    /// fast. The cost is latency under a stream of events: a reader that has
    /// just emptied its queue looks again after about 0.1 ms at most. The
    /// figures behind this are in `docs/benchmarks.md`, "Router design notes".
    fn gather(&self, cx: &Context<'_>) {
        if MODEL {
            // A doze is a timed wait, which the checker cannot model; it
            // only delays the park that the models do check.
            return;
        }
        // A reader finding half its ring queued has plenty to take: no doze.
        let gather = (self.ring.capacity() / 2).max(1);
        std::thread::yield_now();
        let queued = self.ring.len();
        if queued < STREAMING || queued >= gather {
            return;
        }
        // The waker is the thread's (`Waiting::Block`); registered before
        // `dozing` is set, so a push that sees the flag reaches this thread.
        self.waker.register(cx.waker());
        self.dozing.store(true, Ordering::SeqCst);
        if self.ring.len() < gather && self.hot.state.load(Ordering::SeqCst) & CLOSED == 0 {
            std::thread::park_timeout(DOZE);
        }
        self.dozing.store(false, Ordering::Relaxed);
    }

    /// Pops for a consumer that waits as `waiting` says.
    pub(crate) fn poll_pop(&self, cx: &mut Context<'_>, waiting: Waiting) -> Poll<Option<T>> {
        let mut one = None;
        match self.poll_pop_with(cx, 1, &mut |item| one = Some(item), waiting) {
            Poll::Ready(_) => Poll::Ready(one),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Pops up to `max` items at once for an async consumer, into `out`:
    /// one lock for a batch instead of one per item. `Ready(false)` once
    /// closed and empty.
    pub(crate) fn poll_pop_batch(
        &self,
        cx: &mut Context<'_>,
        max: usize,
        out: &mut VecDeque<T>,
        waiting: Waiting,
    ) -> Poll<bool> {
        self.poll_pop_with(cx, max, &mut |item| out.push_back(item), waiting)
    }

    fn poll_pop_with(
        &self,
        cx: &mut Context<'_>,
        max: usize,
        out: &mut impl FnMut(T),
        waiting: Waiting,
    ) -> Poll<bool> {
        if self.take_unless_empty(max, out) > 0 {
            return Poll::Ready(true);
        }
        // Before going to sleep, give a busy emitter a moment, as parking
        // and being woken costs a futex call and a context switch an event.
        // A reader in a tokio task spins 7 pauses, watching the ring without
        // the lock (longer holds up the worker's other tasks); a reader on a
        // thread of another executor backs off as crossbeam's receivers do,
        // whose `yield_now`s hand the core to the emitter. Why these
        // numbers: `docs/benchmarks.md`, "Router design notes".
        if MODEL {
            // No spinning in a model build: it only delays the park, and
            // each look would multiply the interleavings to explore.
        } else if waiting == Waiting::Park {
            // Nothing comes before the reply: straight to parking.
        } else if waiting == Waiting::Poll && tokio::task::try_id().is_some() {
            for step in 0..3 {
                for _ in 0..(1 << step) {
                    std::hint::spin_loop();
                }
                if !self.looks_empty() {
                    break;
                }
            }
        } else {
            if waiting == Waiting::Block {
                self.gather(cx);
            }
            let backoff = crossbeam_utils::Backoff::new();
            while self.looks_empty() && !backoff.is_completed() {
                backoff.snooze();
            }
        }
        if !self.looks_empty() && self.take(max, out) > 0 {
            return Poll::Ready(true);
        }
        // Park: register the waker, say so, then look again. A push either
        // lands before the second look (and is taken), or sees `parked`
        // after its add to `accepted` and wakes us.
        self.waker.register(cx.waker());
        self.hot.parked.store(true, Ordering::SeqCst);
        self.hot.accepted.load(Ordering::SeqCst);
        if self.take(max, out) > 0 {
            self.hot.parked.store(false, Ordering::Relaxed);
            return Poll::Ready(true);
        }
        if self.hot.state.load(Ordering::SeqCst) & CLOSED != 0 {
            self.hot.parked.store(false, Ordering::Relaxed);
            // A push that raced with `close` and did not see `CLOSED` (so
            // will not withdraw its item) added to `accepted` before `close`
            // set it: after reading `CLOSED`, then `accepted`, its item is
            // visible here.
            self.hot.accepted.load(Ordering::SeqCst);
            return Poll::Ready(self.take(max, out) > 0);
        }
        Poll::Pending
    }

    /// Pops for a consumer thread, waiting for an item; `None` once closed
    /// and empty. `waker` is the thread's ([`thread_waker`]), made once by
    /// the caller rather than for every wait.
    pub(crate) fn pop_blocking(&self, waker: &Waker) -> Option<T> {
        park_until(waker, |cx| self.poll_pop(cx, Waiting::Block))
    }

    /// Closes the queue: pushes fail, waiting producers wake, and the
    /// consumer sees the end once it has taken what is queued.
    pub(crate) fn close(&self) {
        {
            let _slow = self.lock();
            self.hot.state.fetch_or(CLOSED, Ordering::SeqCst);
        }
        // Pairs with a lock-free push's add to `accepted`: that push either
        // is seen by whoever drains next, or sees `CLOSED` and withdraws.
        self.hot.accepted.load(Ordering::SeqCst);
        self.room.notify_all();
        self.waker.wake();
    }

    /// Takes what the queue holds, leaving it open.
    pub(crate) fn take_all(&self) -> Vec<T> {
        let mut slow = self.lock();
        let mut items: Vec<T> = slow.front.drain(..).collect();
        while let Some(item) = self.ring.pop() {
            items.push(item);
        }
        items.extend(slow.back.drain(..));
        self.set_spilled(&slow);
        drop(slow);
        self.room.notify_all();
        items
    }

    /// Closes the queue and takes what it holds.
    pub(crate) fn close_and_drain(&self) -> Vec<T> {
        self.close();
        self.take_all()
    }
}

/// What [`Queue::push_fast`] did.
pub(crate) enum Fast<T> {
    /// The item is in the ring; the reader may need a wake-up.
    Queued,
    /// Closed while pushing: what the queue held, the item among it.
    Withdrawn(Vec<T>),
    /// The lock-free path could not take it: the slow side must.
    Slow(T),
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
                let waker = thread_waker();
                while let Some(i) = q.pop_blocking(&waker) {
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
    fn overflow_of(n: u8) -> Overflow {
        match n % 5 {
            0 => Overflow::DropNewest,
            1 => Overflow::DropOldest,
            2 => Overflow::Error,
            3 => Overflow::Block,
            _ => Overflow::BlockTimeout(Duration::from_micros(50)),
        }
    }

    /// What the queue must do, as the obvious single-threaded `VecDeque`.
    struct Model {
        items: VecDeque<Item>,
        capacity: usize,
        overflow: Overflow,
    }

    /// A push's outcome, comparable: (kind, item, evicted item and reason).
    type Seen = (&'static str, Option<u32>, Option<(u32, DropReason)>);

    impl Model {
        fn evict(&mut self) -> Option<Item> {
            let at = self.items.iter().position(|i| !i.1)?;
            self.items.remove(at)
        }

        fn push(&mut self, item: Item) -> Seen {
            if self.items.len() < self.capacity {
                self.items.push_back(item);
                return ("queued", None, None);
            }
            if item.1 || self.overflow == Overflow::DropOldest {
                let reason = if item.1 {
                    DropReason::TerminalPriority
                } else {
                    DropReason::Evicted
                };
                if let Some(e) = self.evict() {
                    self.items.push_back(item);
                    return ("queued", None, Some((e.0, reason)));
                }
            }
            if item.1 {
                self.items.push_back(item);
                return ("queued", None, None);
            }
            match self.overflow {
                Overflow::DropNewest | Overflow::DropOldest => (
                    "dropped",
                    Some(item.0),
                    Some((item.0, DropReason::QueueFull)),
                ),
                Overflow::Error => ("full", Some(item.0), None),
                Overflow::Block => ("would_block", Some(item.0), None),
                Overflow::BlockTimeout(_) => (
                    "dropped",
                    Some(item.0),
                    Some((item.0, DropReason::BlockTimeout)),
                ),
            }
        }
    }

    fn seen(pushed: Pushed<Item>) -> Seen {
        match pushed {
            Pushed::Queued(e) => ("queued", None, e.map(|(i, r)| (i.0, r))),
            Pushed::Dropped(i, r) => ("dropped", Some(i.0), Some((i.0, r))),
            Pushed::Full(i) => ("full", Some(i.0), None),
            Pushed::WouldBlock(i) => ("would_block", Some(i.0), None),
            Pushed::Closed(i) => ("closed", Some(i.0), None),
            Pushed::Withdrawn(_) => ("withdrawn", None, None),
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push(bool),
        Pop(usize),
        Evict,
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            // One push in four is terminal.
            4 => (0u8..4).prop_map(|n| Op::Push(n == 0)),
            2 => (1usize..6).prop_map(Op::Pop),
            1 => Just(Op::Evict),
        ]
    }

    /// Takes from a thread-side consumer: a batch, or `None` at the end.
    fn pop_batch(q: &Queue<Item>, max: usize) -> Option<Vec<Item>> {
        let mut out = VecDeque::new();
        park_until(&thread_waker(), |cx| {
            q.poll_pop_batch(cx, max, &mut out, Waiting::Block)
        })
        .then(|| out.into())
    }

    proptest::proptest! {
        /// Single-threaded, the queue does exactly what the model does, for
        /// every policy, with rings smaller than the capacity (so `back` is
        /// used) and terminal items evicting from the middle.
        #[test]
        fn matches_the_model(
            capacity in 1usize..8,
            ring in 1usize..8,
            policy in 0u8..5,
            ops in proptest::collection::vec(op(), 1..80),
        ) {
            let overflow = overflow_of(policy);
            let q = Queue::with_ring(capacity, overflow, ring);
            let mut model = Model { items: VecDeque::new(), capacity, overflow };
            let waker = futures::task::noop_waker();
            let mut cx = Context::from_waker(&waker);
            for (n, op) in ops.into_iter().enumerate() {
                let n = n as u32;
                match op {
                    Op::Push(t) => {
                        let got = seen(q.push(Item(n, t), false, no_block));
                        proptest::prop_assert_eq!(got, model.push(Item(n, t)));
                    }
                    Op::Pop(k) => {
                        let mut out = VecDeque::new();
                        let _ = q.poll_pop_batch(&mut cx, k, &mut out, Waiting::Poll);
                        let want: Vec<u32> = (0..k.min(model.items.len()))
                            .filter_map(|_| model.items.pop_front().map(|i| i.0))
                            .collect();
                        let got: Vec<u32> = out.into_iter().map(|i| i.0).collect();
                        proptest::prop_assert_eq!(got, want);
                    }
                    Op::Evict => {
                        let got = q.evict_oldest().map(|i| i.0);
                        proptest::prop_assert_eq!(got, model.evict().map(|i| i.0));
                    }
                }
                proptest::prop_assert_eq!(q.len(), model.items.len());
            }
            let rest: Vec<u32> = model.items.iter().map(|i| i.0).collect();
            proptest::prop_assert_eq!(drain(&q), rest);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

        /// Concurrent producers and one consumer, under every policy: each
        /// item is received exactly once or reported lost exactly once,
        /// terminal items are never lost, and each producer's items arrive
        /// in the order it pushed them.
        #[test]
        fn concurrent_producers_keep_order_and_account_exactly(
            capacity in 1usize..40,
            ring in 1usize..40,
            policy in 0u8..5,
            producers in 1u32..4,
            batch in 1usize..70,
        ) {
            const PER: u32 = 2_000;
            let q = Arc::new(Queue::with_ring(capacity, overflow_of(policy), ring));
            let consumer = {
                let q = q.clone();
                std::thread::spawn(move || {
                    let mut got = Vec::new();
                    while let Some(items) = pop_batch(&q, batch) {
                        got.extend(items);
                    }
                    got
                })
            };
            let pushers: Vec<_> = (0..producers)
                .map(|p| {
                    let q = q.clone();
                    std::thread::spawn(move || {
                        let (mut lost, mut evicted) = (Vec::new(), 0);
                        for i in 0..PER {
                            // Every 16th item terminal; the id says who and when.
                            let item = Item(p * PER + i, i % 16 == 0);
                            match q.push(item, true, run) {
                                Pushed::Queued(None) => {}
                                Pushed::Queued(Some((e, reason))) => {
                                    evicted += usize::from(reason == DropReason::TerminalPriority);
                                    lost.push(e)
                                }
                                Pushed::Dropped(e, _) => lost.push(e),
                                Pushed::Full(e) | Pushed::WouldBlock(e) | Pushed::Closed(e) => {
                                    lost.push(e)
                                }
                                Pushed::Withdrawn(items) => lost.extend(items),
                            }
                        }
                        (lost, evicted)
                    })
                })
                .collect();
            let (mut lost, mut by_terminals) = (Vec::new(), 0);
            for p in pushers {
                let (l, e) = p.join().unwrap();
                lost.extend(l);
                by_terminals += e;
            }
            q.close();
            let got = consumer.join().unwrap();
            proptest::prop_assert!(q.close_and_drain().is_empty());
            proptest::prop_assert!(lost.iter().all(|i| !i.1), "a terminal item was lost");
            let mut all: Vec<u32> = got.iter().chain(&lost).map(|i| i.0).collect();
            all.sort_unstable();
            proptest::prop_assert_eq!(all, (0..producers * PER).collect::<Vec<_>>());
            for p in 0..producers {
                let mine: Vec<u32> = got.iter().map(|i| i.0).filter(|i| i / PER == p).collect();
                proptest::prop_assert!(mine.windows(2).all(|w| w[0] < w[1]), "out of order");
            }
            if matches!(overflow_of(policy), Overflow::Block) {
                // Only terminal items make room under `Block`.
                proptest::prop_assert_eq!(lost.len(), by_terminals);
            }
        }

        /// Producers racing with a consumer that goes away: whatever the
        /// consumer did not take comes back from `close_and_drain`, a push,
        /// or a withdrawal, exactly once.
        #[test]
        fn close_racing_with_pushes_loses_nothing_uncounted(
            capacity in 1usize..64,
            take in 0usize..3_000,
        ) {
            const PER: u32 = 2_000;
            let q = Arc::new(Queue::with_ring(capacity, Overflow::DropNewest, 16));
            let pushers: Vec<_> = (0..2u32)
                .map(|p| {
                    let q = q.clone();
                    std::thread::spawn(move || {
                        let mut lost = Vec::new();
                        for i in 0..PER {
                            match q.push(Item(p * PER + i, i % 50 == 0), false, no_block) {
                                Pushed::Queued(None) => {}
                                Pushed::Queued(Some((e, _))) | Pushed::Dropped(e, _) => lost.push(e),
                                Pushed::Full(e) | Pushed::WouldBlock(e) | Pushed::Closed(e) => {
                                    lost.push(e)
                                }
                                Pushed::Withdrawn(items) => lost.extend(items),
                            }
                        }
                        lost
                    })
                })
                .collect();
            let waker = futures::task::noop_waker();
            let mut cx = Context::from_waker(&waker);
            let mut got = VecDeque::new();
            while got.len() < take {
                match q.poll_pop_batch(&mut cx, 7, &mut got, Waiting::Poll) {
                    Poll::Ready(_) => {}
                    Poll::Pending => {
                        if pushers.iter().all(|p| p.is_finished()) {
                            break;
                        }
                        std::thread::yield_now();
                    }
                }
            }
            let left = q.close_and_drain();
            let lost: Vec<Item> = pushers.into_iter().flat_map(|p| p.join().unwrap()).collect();
            // Nothing stays behind after the drain: late pushes withdrew.
            proptest::prop_assert_eq!(q.len(), 0);
            let mut all: Vec<u32> = got.iter().chain(&left).chain(&lost).map(|i| i.0).collect();
            all.sort_unstable();
            proptest::prop_assert_eq!(all, (0..2 * PER).collect::<Vec<_>>());
        }
    }

    #[test]
    fn terminal_eviction_with_a_full_ring_keeps_the_order() {
        // The ring is full: T T N N. A terminal evicts the first N, moving
        // the two terminal items ahead of it out of the ring, to `front`.
        let q = Queue::with_ring(4, Overflow::Block, 4);
        for (n, t) in [(1, true), (2, true), (3, false), (4, false)] {
            assert!(matches!(
                q.push(Item(n, t), false, no_block),
                Pushed::Queued(None)
            ));
        }
        assert!(matches!(
            q.push(Item(5, true), false, no_block),
            Pushed::Queued(Some((Item(3, false), DropReason::TerminalPriority)))
        ));
        assert_eq!(q.len(), 4);
        // Still full: a plain item may not slip into the ring's free slot.
        assert!(matches!(
            q.push(Item(6, false), false, no_block),
            Pushed::WouldBlock(Item(6, false))
        ));
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut out = VecDeque::new();
        assert!(matches!(
            q.poll_pop_batch(&mut cx, 3, &mut out, Waiting::Poll),
            Poll::Ready(true)
        ));
        assert_eq!(out.iter().map(|i| i.0).collect::<Vec<_>>(), [1, 2, 4]);
        assert_eq!(drain(&q), [5]);
    }

    /// An item that calls [`HOOK`] whenever the queue asks whether it is
    /// terminal: how a test runs code in the middle of an eviction, which
    /// asks each item it pops.
    struct Probe(u32, bool);

    type Hook = Box<dyn FnMut(u32)>;

    thread_local! {
        static HOOK: std::cell::RefCell<Option<Hook>> = std::cell::RefCell::new(None);
    }

    impl QueueItem for Probe {
        fn is_terminal(&self) -> bool {
            HOOK.with(|hook| {
                if let Some(hook) = hook.borrow_mut().as_mut() {
                    hook(self.0);
                }
            });
            self.1
        }
    }

    /// Regression: an eviction freed ring slots before it published that
    /// items had moved out of the ring, and a lock-free push in between
    /// filled them, so one emitter could put the queue two over its bound
    /// (the loom model `loom_eviction_racing_push_overshoots_by_at_most_one_per_emitter`
    /// found it). Here the emitter's pushes run at the worst moment: after
    /// the eviction popped a terminal item and the item it evicts, before it
    /// published anything. None may land; only a push that read `state`
    /// before the eviction began may (one per emitter).
    #[test]
    fn eviction_keeps_lock_free_pushes_out_of_the_slots_it_frees() {
        const CAPACITY: usize = 2;
        let q = Arc::new(Queue::new(CAPACITY, Overflow::DropOldest));
        for probe in [Probe(1, true), Probe(2, false)] {
            assert!(matches!(
                q.push(probe, false, no_block),
                Pushed::Queued(None)
            ));
        }
        let landed = Arc::new(std::sync::Mutex::new(Vec::new()));
        {
            let (q, landed) = (q.clone(), landed.clone());
            let mut fired = false;
            HOOK.with(|hook| {
                *hook.borrow_mut() = Some(Box::new(move |id| {
                    // Asked about 2 right after popping it: the ring is empty.
                    if id == 2 && !fired {
                        fired = true;
                        for id in [20, 21] {
                            if let Fast::Queued = q.push_fast(Probe(id, false)) {
                                landed.lock().unwrap().push(id);
                            }
                        }
                    }
                }));
            });
        }
        let pushed = q.push(Probe(10, false), false, no_block);
        HOOK.with(|hook| hook.borrow_mut().take());
        assert!(matches!(
            pushed,
            Pushed::Queued(Some((Probe(2, false), DropReason::Evicted)))
        ));
        let landed = landed.lock().unwrap();
        assert!(landed.is_empty(), "pushed into freed slots: {landed:?}");
        assert_eq!(q.len(), CAPACITY);
        let left: Vec<u32> = q.close_and_drain().into_iter().map(|p| p.0).collect();
        assert_eq!(left, [1, 10]);
    }

    #[test]
    fn a_parked_reader_is_woken_by_the_next_push() {
        let q = Arc::new(Queue::new(8, Overflow::Block));
        let reader = {
            let q = q.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                while let Some(items) = pop_batch(&q, 64) {
                    got.extend(items.into_iter().map(|i| i.0));
                }
                got
            })
        };
        for n in 0..10_000 {
            assert!(matches!(
                q.push(Item(n, false), true, run),
                Pushed::Queued(None)
            ));
            if n % 100 == 0 {
                // Let the reader catch up and park now and then.
                while !q.looks_empty() {
                    std::thread::yield_now();
                }
            }
        }
        q.close();
        assert_eq!(reader.join().unwrap(), (0..10_000).collect::<Vec<_>>());
    }
}
