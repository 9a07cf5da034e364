//! Streams of events: [`EventStream`] and its options.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Waker};

use nerve_core::{Event, EventId};

use crate::handler::FilterFn;
use crate::queue::{DropReason, Overflow, Queue, Waiting, park_until};
use crate::routes::Routes;
use crate::subscribe::SubscriptionId;
use crate::subscription::{StreamItem, Subscription};

/// At most this many events move from a stream's queue to its reader at a
/// time, so that the emitter and the readers do not take turns at each
/// queue's lock (see `docs/benchmarks.md`, "Router design notes"), at the cost of a reader holding up to this
/// many events its queue no longer counts.
const READ_BATCH: usize = 64;

/// Options of a stream, for [`Bus::stream_with`](crate::Bus::stream_with).
///
/// | option     | default                          |
/// |------------|----------------------------------|
/// | `capacity` | 1,024 events                     |
/// | `overflow` | [`Overflow::DropOldest`]         |
/// | `run_id`, `lane`, `source`, `filter` | none: every matching event |
/// | `name`     | none (stats show the id)         |
#[derive(Clone)]
#[must_use]
pub struct StreamOptions {
    pub(crate) capacity: usize,
    pub(crate) overflow: Overflow,
    pub(crate) run_id: Option<String>,
    pub(crate) lane: Option<String>,
    pub(crate) source: Option<String>,
    pub(crate) filter: Option<FilterFn>,
    pub(crate) name: Option<String>,
}

impl Default for StreamOptions {
    fn default() -> Self {
        Self {
            capacity: 1024,
            overflow: Overflow::DropOldest,
            run_id: None,
            lane: None,
            source: None,
            filter: None,
            name: None,
        }
    }
}

impl StreamOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many events wait for the consumer before `overflow` applies.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// What happens when the stream's queue is full.
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = overflow;
        self
    }

    /// Only events of this run.
    pub fn run_id(mut self, run_id: impl Into<String>) -> Self {
        self.run_id = Some(run_id.into());
        self
    }

    /// Only events of this lane.
    pub fn lane(mut self, lane: impl Into<String>) -> Self {
        self.lane = Some(lane.into());
        self
    }

    /// Only events from this source.
    pub fn source(mut self, source: impl Into<String>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Only events for which `filter` returns true.
    pub fn filter<F>(mut self, filter: F) -> Self
    where
        F: Fn(&Event) -> bool + Send + Sync + 'static,
    {
        self.filter = Some(Arc::new(filter));
        self
    }

    /// A name shown in stats and drop reports.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The filters combined into one.
    pub(crate) fn combined_filter(&self) -> Option<FilterFn> {
        if self.run_id.is_none()
            && self.lane.is_none()
            && self.source.is_none()
            && self.filter.is_none()
        {
            return None;
        }
        let (run_id, lane, source, user) = (
            self.run_id.clone(),
            self.lane.clone(),
            self.source.clone(),
            self.filter.clone(),
        );
        Some(Arc::new(move |e: &Event| {
            run_id.as_deref().is_none_or(|r| e.run_id() == Some(r))
                && lane.as_deref().is_none_or(|l| e.lane() == Some(l))
                && source.as_deref().is_none_or(|s| e.source() == Some(s))
                && user.as_ref().is_none_or(|f| f(e))
        }))
    }
}

impl fmt::Debug for StreamOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamOptions")
            .field("capacity", &self.capacity)
            .field("overflow", &self.overflow)
            .field("run_id", &self.run_id)
            .field("lane", &self.lane)
            .field("source", &self.source)
            .field("filter", &self.filter.is_some())
            .field("name", &self.name)
            .finish()
    }
}

/// A live stream of events: a [`futures::Stream`] of [`Event`]s backed by a
/// bounded queue. Made by [`Bus::stream`](crate::Bus::stream) and friends.
///
/// Dropping the stream unsubscribes it. A stream from
/// [`Bus::subscribe_run`](crate::Bus::subscribe_run) first yields the run's
/// recorded events, oldest first, then live ones, with no gap and no
/// duplicate at the seam, and ends after [`Bus::close_run`](crate::Bus::close_run).
///
/// # Cancel safety
///
/// `next()` is cancel safe: an event is only taken from the queue when it is
/// returned.
pub struct EventStream {
    queue: Arc<Queue<StreamItem>>,
    sub: Arc<Subscription>,
    /// Where the stream unsubscribes itself when dropped.
    routes: Weak<Routes>,
    replay: VecDeque<Event>,
    /// Events taken from the queue in one batch, not yet yielded.
    batch: VecDeque<StreamItem>,
    /// Replayed events that may also arrive live, skipped then.
    replayed: HashSet<EventId>,
    ended: bool,
    /// The waker of the thread that last read with `recv_blocking`.
    thread_waker: Option<(std::thread::ThreadId, Waker)>,
}

impl EventStream {
    pub(crate) fn new(
        queue: Arc<Queue<StreamItem>>,
        sub: Arc<Subscription>,
        routes: Weak<Routes>,
        replay: Vec<Event>,
    ) -> Self {
        Self {
            queue,
            sub,
            routes,
            replayed: replay.iter().map(Event::event_id).collect(),
            replay: replay.into(),
            batch: VecDeque::new(),
            ended: false,
            thread_waker: None,
        }
    }

    /// The subscription behind this stream.
    pub fn id(&self) -> SubscriptionId {
        self.sub.id
    }

    /// Events waiting in the stream's queue.
    pub fn len(&self) -> usize {
        self.queue.len() + self.batch.len() + self.replay.len()
    }

    /// Whether no event is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits for the next event on this thread, for consumers that run on
    /// a thread of their own rather than in an async runtime: `None` once
    /// the stream has ended (the bus shut down, or the run closed).
    ///
    /// The same stream as [`next()`](futures::StreamExt::next), read without
    /// an executor: the thread spins briefly, then parks until an event
    /// arrives. Do not call it from async code, where it would block a
    /// runtime worker; await `next()` there.
    ///
    /// ```
    /// # use nerve::Bus;
    /// let bus = Bus::new();
    /// let mut stream = bus.stream("job.*").unwrap();
    /// let reader = std::thread::spawn(move || {
    ///     stream.blocking_iter().map(|e| e.event_type().to_owned()).collect::<Vec<_>>()
    /// });
    /// bus.emit("job.started", 1).unwrap();
    /// bus.emit("job.finished", 2).unwrap();
    /// bus.shutdown_blocking(); // ends the stream once it is drained
    /// assert_eq!(reader.join().unwrap(), ["job.started", "job.finished"]);
    /// ```
    pub fn recv_blocking(&mut self) -> Option<Event> {
        // Events already taken from the queue need no waker (and a waker
        // registered by a poll that then finds nothing is replaced below).
        if !self.batch.is_empty() || !self.replay.is_empty() || self.ended {
            let mut cx = Context::from_waker(Waker::noop());
            if let Poll::Ready(event) = self.poll_next_with(&mut cx, Waiting::Poll) {
                return event;
            }
        }
        let thread = std::thread::current().id();
        let waker = match self.thread_waker.take() {
            Some((id, waker)) if id == thread => waker,
            _ => crate::queue::thread_waker(),
        };
        let event = park_until(&waker, |cx| self.poll_next_with(cx, Waiting::Block));
        self.thread_waker = Some((thread, waker));
        event
    }

    /// The events of this stream as a blocking iterator on this thread (see
    /// [`recv_blocking`](Self::recv_blocking)); it ends with the stream.
    pub fn blocking_iter(&mut self) -> impl Iterator<Item = Event> + '_ {
        std::iter::from_fn(move || self.recv_blocking())
    }
}

impl fmt::Debug for EventStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream")
            .field("id", &self.sub.id)
            .field("queued", &self.queue.len())
            .field("replay", &self.replay.len())
            .field("ended", &self.ended)
            .finish()
    }
}

impl futures::Stream for EventStream {
    type Item = Event;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.get_mut().poll_next_with(cx, Waiting::Poll)
    }
}

impl EventStream {
    /// The next event, for a reader that waits as `waiting` says.
    fn poll_next_with(&mut self, cx: &mut Context<'_>, waiting: Waiting) -> Poll<Option<Event>> {
        let this = self;
        if let Some(event) = this.replay.pop_front() {
            return Poll::Ready(Some(event));
        }
        if this.ended {
            return Poll::Ready(None);
        }
        loop {
            let item = match this.batch.pop_front() {
                Some(item) => item,
                None => {
                    match this
                        .queue
                        .poll_pop_batch(cx, READ_BATCH, &mut this.batch, waiting)
                    {
                        Poll::Ready(true) => {
                            // Handed to the reader: counted once per batch, so
                            // the reader does not bounce the counters' cache line
                            // with the emitter for every event.
                            let events = this
                                .batch
                                .iter()
                                .filter(|i| matches!(i, StreamItem::Event(_)))
                                .count();
                            this.sub
                                .counters
                                .delivered
                                .fetch_add(events as u64, Ordering::Relaxed);
                            continue;
                        }
                        Poll::Ready(false) => StreamItem::End,
                        Poll::Pending => return Poll::Pending,
                    }
                }
            };
            match item {
                StreamItem::Event(event) => {
                    if !this.replayed.is_empty() && this.replayed.remove(&event.event_id()) {
                        continue; // Already yielded from the run's history.
                    }
                    return Poll::Ready(Some(event));
                }
                StreamItem::End => {
                    this.ended = true;
                    this.batch.clear();
                    return Poll::Ready(None);
                }
            }
        }
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        if let Some(routes) = self.routes.upgrade() {
            routes.remove(self.sub.id);
        }
        // What the reader took but never read counts as delivered (it was
        // handed over); what is still queued is lost with the stream.
        let left = self.queue.close_and_drain();
        let lost = left
            .iter()
            .filter(|i| matches!(i, StreamItem::Event(_)))
            .count();
        if lost > 0 {
            self.sub.counters.dropped[DropReason::Closed.index()]
                .fetch_add(lost as u64, Ordering::Relaxed);
        }
    }
}
