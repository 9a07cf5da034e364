//! Subscriptions: ids, options, and the bus's record of each one.

use std::fmt;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use nerve_core::instrument::{HandlerInfo, HandlerMode};
use nerve_core::{Event, Pattern, PatternError};

use crate::handler::{AsyncFn, FilterFn, SyncFn};
use crate::queue::{DropReason, Overflow, Queue};

pub use nerve_core::SubscriptionId;

/// Options of a subscription, for [`Bus::subscribe_with`](crate::Bus::subscribe_with)
/// and its async and typed twins.
///
/// | option        | default                               |
/// |---------------|---------------------------------------|
/// | `priority`    | 0; higher runs first, ties in subscription order |
/// | `name`        | none (stats and errors show the id)   |
/// | `filter`      | none: every matching event            |
/// | `timeout`     | the bus's `handler_timeout`           |
/// | `concurrency` | 1: one event at a time, in order (async only) |
/// | `queued`      | off: sync handlers run inline on the emitting thread |
/// | queue capacity| async handlers and queued sync handlers: 65,536 |
/// | `overflow`    | handlers: [`Overflow::Block`]; streams: [`Overflow::DropOldest`] |
///
/// ```
/// use nerve::Subscribe;
/// let options = Subscribe::new()
///     .priority(300)
///     .name("pager")
///     .filter(|e| e.data()["severity"] == "critical");
/// ```
#[derive(Clone, Default)]
#[must_use]
pub struct Subscribe {
    pub(crate) priority: i32,
    pub(crate) name: Option<String>,
    pub(crate) filter: Option<FilterFn>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) concurrency: Option<usize>,
    pub(crate) queue_capacity: Option<usize>,
    pub(crate) queued: bool,
    pub(crate) overflow: Option<Overflow>,
}

impl Subscribe {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Higher priority handlers run first; ties run in subscription order.
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// A name shown in stats, errors and `system.handler_error` events.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Only events for which `filter` returns true are delivered. The filter
    /// runs on the emitting thread; a panic in it counts as a handler panic.
    pub fn filter<F>(mut self, filter: F) -> Self
    where
        F: Fn(&Event) -> bool + Send + Sync + 'static,
    {
        self.filter = Some(Arc::new(filter));
        self
    }

    /// How long one delivery may take (overrides the bus's `handler_timeout`).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// For async handlers: run up to `n` deliveries at once. Order between
    /// events is then no longer kept for this subscriber. 0 is treated as 1.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = Some(n.max(1));
        self
    }

    /// Runs a sync handler on its own worker thread, behind a queue of
    /// `capacity` events, instead of inline: a slow handler then stops
    /// slowing the emitter. For an async handler, sets its queue's capacity.
    pub fn queued(mut self, capacity: usize) -> Self {
        self.queued = true;
        self.queue_capacity = Some(capacity.max(1));
        self
    }

    /// What this subscriber's queue does when full (async and queued
    /// handlers; inline handlers have no queue).
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = Some(overflow);
        self
    }
}

impl fmt::Debug for Subscribe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscribe")
            .field("priority", &self.priority)
            .field("name", &self.name)
            .field("filter", &self.filter.is_some())
            .field("timeout", &self.timeout)
            .field("concurrency", &self.concurrency)
            .field("queued", &self.queued)
            .field("queue_capacity", &self.queue_capacity)
            .field("overflow", &self.overflow)
            .finish()
    }
}

/// One or more patterns, as accepted by `subscribe`: a `&str`, a `String`, a
/// [`Pattern`], or a slice, array or `Vec` of them.
pub trait IntoPatterns {
    /// Parses the patterns.
    ///
    /// # Errors
    ///
    /// The first [`PatternError`].
    fn into_patterns(self) -> Result<Vec<Pattern>, PatternError>;
}

impl IntoPatterns for &str {
    fn into_patterns(self) -> Result<Vec<Pattern>, PatternError> {
        Ok(vec![Pattern::parse(self)?])
    }
}

impl IntoPatterns for String {
    fn into_patterns(self) -> Result<Vec<Pattern>, PatternError> {
        Ok(vec![Pattern::parse(&self)?])
    }
}

impl IntoPatterns for &String {
    fn into_patterns(self) -> Result<Vec<Pattern>, PatternError> {
        Ok(vec![Pattern::parse(self)?])
    }
}

impl IntoPatterns for Pattern {
    fn into_patterns(self) -> Result<Vec<Pattern>, PatternError> {
        Ok(vec![self])
    }
}

impl<T: Clone + IntoPatterns> IntoPatterns for &[T] {
    fn into_patterns(self) -> Result<Vec<Pattern>, PatternError> {
        let mut out = Vec::with_capacity(self.len());
        for p in self {
            out.extend(p.clone().into_patterns()?);
        }
        Ok(out)
    }
}

impl<T: Clone + IntoPatterns, const N: usize> IntoPatterns for [T; N] {
    fn into_patterns(self) -> Result<Vec<Pattern>, PatternError> {
        self.as_slice().into_patterns()
    }
}

impl<T: Clone + IntoPatterns> IntoPatterns for Vec<T> {
    fn into_patterns(self) -> Result<Vec<Pattern>, PatternError> {
        self.as_slice().into_patterns()
    }
}

pub(crate) enum HandlerKind {
    /// Runs inline on the emitting thread.
    Sync(SyncFn),
    /// Runs on its own thread behind a queue.
    Queued(QueuedSlot),
    /// Runs on the tokio runtime behind a queue.
    Async(AsyncSlot),
    /// Feeds an [`EventStream`](crate::EventStream).
    Stream(Arc<Queue<crate::stream::StreamItem>>),
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
    pub(crate) queue: Arc<Queue<crate::worker::Delivery>>,
}

pub(crate) struct AsyncSlot {
    pub(crate) handler: AsyncFn,
    pub(crate) concurrency: usize,
    pub(crate) queue: Arc<Queue<crate::worker::Delivery>>,
    /// The running worker, started on first delivery (a runtime is needed then,
    /// not at subscribe time) and restarted if its runtime went away.
    pub(crate) worker: Mutex<Option<crate::worker::WorkerHandle>>,
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
    pub(crate) succeeded: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) panicked: AtomicU64,
    pub(crate) timed_out: AtomicU64,
    pub(crate) halted: AtomicU64,
    pub(crate) pending: AtomicU64,
}

impl SubscriptionCounters {
    pub(crate) fn reset(&self) {
        for c in self.dropped.iter().chain([
            &self.offered,
            &self.delivered,
            &self.unannounced,
            &self.succeeded,
            &self.failed,
            &self.panicked,
            &self.timed_out,
            &self.halted,
        ]) {
            c.store(0, Ordering::Relaxed);
        }
    }

    pub(crate) fn dropped_total(&self) -> u64 {
        self.dropped.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}
