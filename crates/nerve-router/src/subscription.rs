//! The bus's record of each subscription, and what travels through a
//! subscriber's queue: a [`Delivery`] to a handler, a [`StreamItem`] to a
//! stream.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use nerve_core::instrument::{HandlerInfo, HandlerMode};
use nerve_core::{Event, Pattern};
use tokio::task::JoinHandle;

use crate::counter::Counter;
use crate::handler::{AsyncFn, FilterFn, SyncFn};
use crate::pending::Pending;
use crate::queue::{DropReason, Overflow, Queue, QueueItem};
use crate::reentry::Chain;
use crate::report::{HandlerOutcome, Outcome, Waiter};
use crate::subscribe::SubscriptionId;
use crate::turn::Turn;

pub(crate) enum HandlerKind {
    /// Runs inline on the emitting thread.
    Sync(SyncFn),
    /// Runs on its own thread behind a queue.
    Queued(QueuedSlot),
    /// Runs on the tokio runtime behind a queue.
    Async(AsyncSlot),
    /// Feeds an [`EventStream`](crate::EventStream).
    Stream(Arc<Queue<StreamItem>>),
}

impl HandlerKind {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            HandlerKind::Sync(_) => "sync",
            HandlerKind::Queued(_) => "queued",
            HandlerKind::Async(_) => "async",
            HandlerKind::Stream(_) => "stream",
        }
    }

    /// Events the subscriber's queue ever accepted; 0 without a queue.
    pub(crate) fn accepted(&self) -> u64 {
        match self {
            HandlerKind::Sync(_) => 0,
            HandlerKind::Queued(slot) => slot.queue.accepted(),
            HandlerKind::Async(slot) => slot.queue.accepted(),
            HandlerKind::Stream(q) => q.accepted(),
        }
    }

    /// Events offered to a subscriber with a queue: those the queue accepted
    /// since the last reset, and those it turned away.
    pub(crate) fn offered(&self, counters: &SubscriptionCounters) -> u64 {
        let base = counters.offered_base.load(Ordering::Relaxed);
        counters.offered.load(Ordering::Relaxed) + self.accepted().saturating_sub(base)
    }

    /// The queue, depth and capacity, of a subscriber that has one.
    pub(crate) fn queue_depth(&self) -> Option<(usize, usize, Overflow)> {
        match self {
            HandlerKind::Sync(_) => None,
            HandlerKind::Queued(slot) => Some((
                slot.queue.len(),
                slot.queue.capacity(),
                slot.queue.overflow(),
            )),
            HandlerKind::Async(slot) => Some((
                slot.queue.len(),
                slot.queue.capacity(),
                slot.queue.overflow(),
            )),
            HandlerKind::Stream(q) => Some((q.len(), q.capacity(), q.overflow())),
        }
    }
}

pub(crate) struct QueuedSlot {
    pub(crate) queue: Arc<Queue<Delivery>>,
}

pub(crate) struct AsyncSlot {
    pub(crate) handler: AsyncFn,
    pub(crate) concurrency: usize,
    pub(crate) queue: Arc<Queue<Delivery>>,
    /// The running worker, started on first delivery (a runtime is needed then,
    /// not at subscribe time) and restarted if its runtime went away.
    pub(crate) worker: Mutex<Option<JoinHandle<()>>>,
    /// Set while a worker task is alive, so that a delivery finds it without
    /// taking `worker`'s lock.
    pub(crate) running: Arc<AtomicBool>,
    /// Who runs the next delivery (`concurrency(1)` only): the worker, or a
    /// waiting emitter that runs its own delivery in place.
    pub(crate) turn: Arc<Turn>,
    /// The chain of a delivery no emitter waits on (this subscription
    /// alone), made on its first such delivery: an emitter that runs its
    /// own delivery in the subscription's turn takes a reference count,
    /// not an allocation.
    pub(crate) alone: OnceLock<Chain>,
}

/// The bus's record of a subscription.
pub(crate) struct Subscription {
    pub(crate) id: SubscriptionId,
    pub(crate) name: Option<Box<str>>,
    pub(crate) patterns: Vec<Pattern>,
    pub(crate) priority: i32,
    pub(crate) filter: Option<FilterFn>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) kind: HandlerKind,
    /// For run streams: the run, so `close_run` can end them.
    pub(crate) run_id: Option<Box<str>>,
    pub(crate) active: AtomicBool,
    pub(crate) counters: crossbeam_utils::CachePadded<SubscriptionCounters>,
    /// `label()`, made once, for metric labels.
    pub(crate) metric_label: Box<str>,
}

impl Subscription {
    /// A stream subscription to `pattern`, as `Bus::stream` makes one: for
    /// the tests and models of the routing table.
    #[cfg(test)]
    pub(crate) fn stream_for_test(id: u64, pattern: &str) -> Arc<Subscription> {
        Arc::new(Subscription {
            id: SubscriptionId::from_u64(id),
            name: None,
            patterns: vec![Pattern::parse(pattern).expect("a valid pattern")],
            priority: 0,
            filter: None,
            timeout: None,
            kind: HandlerKind::Stream(Arc::new(Queue::new(8, Overflow::DropOldest))),
            run_id: None,
            active: AtomicBool::new(true),
            counters: Default::default(),
            metric_label: id.to_string().into_boxed_str(),
        })
    }

    /// How instruments see this subscription for a delivery run in `mode`.
    pub(crate) fn handler_info(&self, mode: HandlerMode) -> HandlerInfo<'_> {
        HandlerInfo::new(self.id.as_u64(), self.name.as_deref(), mode)
    }

    /// Whether it runs inline on the emitting thread (no queue).
    pub(crate) fn is_inline(&self) -> bool {
        matches!(self.kind, HandlerKind::Sync(_))
    }

    pub(crate) fn is_async(&self) -> bool {
        matches!(self.kind, HandlerKind::Async(_))
    }

    /// Closes this subscriber's queue, if it has one; what is queued still
    /// runs (handlers) or is dropped (streams).
    pub(crate) fn close_queue(&self) {
        match &self.kind {
            HandlerKind::Sync(_) => {}
            HandlerKind::Queued(slot) => slot.queue.close(),
            HandlerKind::Async(slot) => slot.queue.close(),
            HandlerKind::Stream(q) => q.close(),
        }
    }

    /// `name` when given, else the id: how stats and errors refer to it.
    pub(crate) fn label(&self) -> String {
        match &self.name {
            Some(n) => n.to_string(),
            None => self.id.to_string(),
        }
    }
}

#[derive(Default)]
pub(crate) struct SubscriptionCounters {
    /// Events offered to this subscriber (passed its filter) that its queue
    /// did not accept; what it accepted its queue counts (see
    /// [`HandlerKind::offered`]).
    pub(crate) offered: AtomicU64,
    /// What the queue had accepted at the last `reset_stats`.
    pub(crate) offered_base: AtomicU64,
    /// Events handed to the handler or stream, whatever the outcome.
    pub(crate) delivered: AtomicU64,
    /// Events lost, by [`DropReason`] index.
    pub(crate) dropped: [AtomicU64; DropReason::ALL.len()],
    /// Drops not yet announced by a `system.events_dropped` event.
    pub(crate) unannounced: AtomicU64,
    /// When drops were last announced.
    pub(crate) announced_at: Mutex<Option<std::time::Instant>>,
    /// Bumped by every successful inline delivery: striped.
    pub(crate) succeeded: Counter,
    pub(crate) failed: AtomicU64,
    pub(crate) panicked: AtomicU64,
    pub(crate) timed_out: AtomicU64,
    pub(crate) halted: AtomicU64,
    pub(crate) not_recorded: AtomicU64,
    pub(crate) pending: AtomicU64,
}

impl SubscriptionCounters {
    pub(crate) fn reset(&self) {
        self.succeeded.reset();
        for c in self.dropped.iter().chain([
            &self.offered,
            &self.delivered,
            &self.unannounced,
            &self.failed,
            &self.panicked,
            &self.timed_out,
            &self.halted,
            &self.not_recorded,
        ]) {
            c.store(0, Ordering::Relaxed);
        }
    }

    pub(crate) fn dropped_total(&self) -> u64 {
        self.dropped.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

/// One event on its way to one async handler. Counted as pending from
/// creation until dropped; dropped unfinished, it counts as abandoned.
pub(crate) struct Delivery {
    pub(crate) event: Event,
    pub(crate) sub: Arc<Subscription>,
    pub(crate) waiter: Option<Waiter>,
    /// The subscriptions blocked on the emitter, when it waits for this one.
    pub(crate) chain: Option<Chain>,
    /// Never dropped by a full queue.
    pub(crate) terminal: bool,
    /// Whether a failure becomes a dead letter (not for retries of one).
    pub(crate) dead_letter: bool,
    in_flight: Arc<Pending>,
    finished: bool,
}

impl QueueItem for Delivery {
    fn is_terminal(&self) -> bool {
        self.terminal
    }
}

impl Delivery {
    pub(crate) fn new(
        event: Event,
        sub: Arc<Subscription>,
        waiter: Option<Waiter>,
        chain: Option<Chain>,
        terminal: bool,
        dead_letter: bool,
        in_flight: Arc<Pending>,
    ) -> Self {
        in_flight.add();
        sub.counters.pending.fetch_add(1, Ordering::Relaxed);
        Self {
            event,
            sub,
            waiter,
            chain,
            terminal,
            dead_letter,
            in_flight,
            finished: false,
        }
    }

    /// Drops the delivery because its queue had no room (counted by the
    /// caller), telling a waiting `emit_and_wait`.
    pub(crate) fn discard(self, reason: DropReason) {
        self.finish(Outcome::Dropped(reason), Duration::ZERO);
    }

    pub(crate) fn finish(mut self, outcome: Outcome, elapsed: Duration) {
        self.finished = true;
        if let Some(waiter) = self.waiter.take() {
            waiter.send(HandlerOutcome {
                subscription: self.sub.id,
                name: self.sub.name.as_deref().map(str::to_owned),
                outcome,
                elapsed,
            });
        }
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        if !self.finished {
            self.in_flight.abandon();
            if let Some(waiter) = self.waiter.take() {
                waiter.send(HandlerOutcome {
                    subscription: self.sub.id,
                    name: self.sub.name.as_deref().map(str::to_owned),
                    outcome: Outcome::Abandoned,
                    elapsed: Duration::ZERO,
                });
            }
        }
        self.sub.counters.pending.fetch_sub(1, Ordering::Relaxed);
        self.in_flight.done();
    }
}

/// What a stream's queue holds: an event, or the end of a closed run.
///
/// One pointer wide (the end is the null niche), so that a queue slot is two
/// words, as a crossbeam channel's is: a fan-out writes every slot (see
/// `docs/benchmarks.md`, "Router design notes"). Whether an event is terminal is therefore marked on the
/// event itself when the bus accepts it (see `Event::is_marked_terminal`).
pub(crate) enum StreamItem {
    Event(Event),
    End,
}

impl QueueItem for StreamItem {
    fn is_terminal(&self) -> bool {
        match self {
            StreamItem::Event(event) => event.is_marked_terminal(),
            StreamItem::End => true,
        }
    }

    fn counted(&self) -> bool {
        matches!(self, StreamItem::Event(_))
    }
}
