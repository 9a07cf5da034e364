//! Whose turn it is to run an async subscription's next delivery.
//!
//! A subscription with `concurrency(1)` runs one delivery at a time, in
//! queue order. Usually its worker task does. An `emit_and_wait` from a
//! task on the bus's runtime may instead take the turn while the worker is
//! idle, and run its own delivery where it waits: the round trip then costs
//! no wake-up of the worker and no second task switch back to the emitter
//! (`worker::run_in_turn`). Whoever holds the turn is the queue's only
//! reader; the worker holds it from the moment it looks for work until it
//! finds none.
//!
//! The hand-over: an emitter only ever *tries* to take the turn and never
//! waits for it. A worker that finds it taken registers its waker and
//! marks the turn *wanted*, in one atomic step that also takes the turn if
//! it was given back meanwhile; giving the turn back clears both marks in
//! one swap and wakes the worker if it was wanted. Both marks live in one
//! word, so the two steps are ordered one way or the other, and no worker
//! sleeps on a turn that is free.

use std::task::{Context, Poll};

use crate::queue::{Queue, QueueItem, Waiting};
use crate::sync::{AtomicUsize, AtomicWaker, Ordering};

/// `Turn::state`'s mark: someone holds the turn.
const TAKEN: usize = 1;
/// `Turn::state`'s mark: the worker waits for the turn, its waker in `waker`.
const WANTED: usize = 2;

pub(crate) struct Turn {
    /// [`TAKEN`] | [`WANTED`].
    state: AtomicUsize,
    waker: AtomicWaker,
}

impl Turn {
    pub(crate) fn new() -> Self {
        Self {
            state: AtomicUsize::new(0),
            waker: AtomicWaker::new(),
        }
    }

    /// Takes the turn if it is free; never waits.
    #[inline]
    pub(crate) fn try_take(&self) -> bool {
        self.state.load(Ordering::Relaxed) == 0
            && self
                .state
                .compare_exchange(0, TAKEN, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
    }

    /// Takes the turn, or registers to be woken when it is given back.
    pub(crate) fn poll_take(&self, cx: &Context<'_>) -> Poll<()> {
        if self.try_take() {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        // Taken now, or marked wanted while still taken: one step.
        let before = self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |state| {
                Some(if state & TAKEN == 0 {
                    TAKEN
                } else {
                    state | WANTED
                })
            })
            .unwrap_or_else(|state| state);
        if before & TAKEN == 0 {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Gives the turn back, waking a worker that waits for it.
    #[inline]
    pub(crate) fn give_back(&self) {
        if self.state.swap(0, Ordering::AcqRel) & WANTED != 0 {
            self.waker.wake();
        }
    }

    /// One look for work by the queue's own reader (the worker): takes the
    /// turn unless it holds it (`held`), then pops, keeping the turn with
    /// what it popped and giving it back when it found nothing.
    pub(crate) fn poll_pop<T: QueueItem>(
        &self,
        held: &mut bool,
        queue: &Queue<T>,
        cx: &mut Context<'_>,
        waiting: Waiting,
    ) -> Poll<Option<T>> {
        if !*held {
            std::task::ready!(self.poll_take(cx));
            *held = true;
        }
        let popped = queue.poll_pop(cx, waiting);
        if !matches!(popped, Poll::Ready(Some(_))) {
            *held = false;
            self.give_back();
        }
        popped
    }

    /// Gives back a turn taken with [`try_take`](Self::try_take) by a
    /// reader standing in for the worker, waking the worker if `queue`
    /// still holds anything: a stand-in pushes its own item without a
    /// wake-up, and may leave it or others behind.
    pub(crate) fn give_back_after<T: QueueItem>(&self, queue: &Queue<T>) {
        self.give_back();
        queue.wake_reader_if_queued();
    }
}
