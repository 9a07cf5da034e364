//! The [`Bus`]: publish events, route them to handlers, wait, flush, shut down.

use std::collections::BTreeSet;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use nerve_core::correlation::{self, Ambient, CorrelationId};
use nerve_core::instrument::{HandlerMode, Instrument};
use nerve_core::query::HistoryQuery;
use nerve_core::{Event, EventId, Pattern, TypedEvent, Value};
use serde_json::json;
use smallvec::SmallVec;
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::AbortHandle;

use crate::builder::{BusBuilder, Config, Reject};
use crate::dead_letter::{DeadLetter, DeadLetterReason, Failure};
use crate::error::{EmitError, EmitManyError, SubscribeError};
use crate::handler::{self, HandlerError, IntoHandlerResult, SyncFn, panic_message};
use crate::history::History;
use crate::queue::{DropReason, Overflow, Pushed, Queue, QueueItem};
use crate::reentry::{self, Blocked, DepthGuard};
use crate::report::{DeliveryReport, HandlerOutcome, Outcome};
use crate::routes::{Route, RouteTable, Routes, TopicTraits};
use crate::stats::{BusStats, EventStats, RunStats, Shared, SubscriberStats, SubscriptionStats};
use crate::stream::{EventStream, Runs, StreamItem, StreamOptions};
use crate::subscription::{
    AsyncSlot, HandlerKind, IntoPatterns, QueuedSlot, Subscribe, Subscription, SubscriptionId,
};
use crate::worker::{self, Delivery, Waiter};
use nerve_core::metrics::names as metric;
use nerve_core::sink::{FaultReporter, SinkError, SinkErrorKind, SinkFault};

/// Event types the bus emits about itself. A failure while handling one of
/// them is counted and logged but not reported as another event, so a failing
/// `system.*` handler cannot loop.
const SELF_REPORTED: [&str; 3] = [
    "system.handler_error",
    "system.events_dropped",
    JOURNAL_ERROR,
];

/// Published when the bus's sink (the journal) fails. It takes no `seq` and
/// is not recorded in the sink, so every number the bus assigns is the
/// journal's to account for (`docs/journal-format.md`), and a report of a
/// failing journal cannot fail in turn.
const JOURNAL_ERROR: &str = "system.journal_error";

/// Queue capacity of async and queued handlers unless `Subscribe::queued` says.
const DEFAULT_HANDLER_QUEUE: usize = 65_536;

/// At most one `system.events_dropped` per subscriber in this long.
const DROP_ANNOUNCE_INTERVAL: Duration = Duration::from_secs(1);

/// Distinct event types counted apart in stats; the rest share `(other)`.
const MAX_COUNTED_TYPES: usize = 10_000;

static NEXT_BUS_ID: AtomicU64 = AtomicU64::new(1);

/// An event bus: publish events by name, deliver them to the handlers whose
/// patterns match, in priority order, isolated from each other's failures.
///
/// `Bus` is a cheap handle: clones share one bus. See the [crate docs](crate)
/// for the delivery rules.
///
/// ```
/// use nerve::{Bus, Subscribe, json};
/// use std::sync::{Arc, Mutex};
///
/// let bus = Bus::new();
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let log = seen.clone();
/// bus.subscribe_with("user.*", move |e: &nerve::Event| {
///     log.lock().unwrap().push(e.event_type().to_owned());
/// }, Subscribe::new().priority(10))?;
/// bus.emit("user.login", json!({"username": "alice"}))?;
/// assert_eq!(*seen.lock().unwrap(), ["user.login"]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Dropping the last handle
///
/// When the last `Bus` handle is dropped (a [`WeakBus`] does not count), the
/// bus shuts down as [`shutdown_blocking`](Self::shutdown_blocking) does: it
/// waits up to the shutdown timeout for queued deliveries, then flushes and
/// closes the journal. So a program that returns from `main`, or whose `main`
/// panics and unwinds, leaves every accepted event on disk. (On a
/// current-thread tokio runtime whose thread the async handlers need, it
/// cannot wait; what is queued is then counted as abandoned and said so,
/// through `tracing` or, without a subscriber, on stderr.) Handlers that
/// hold a `Bus` clone keep the bus alive: capture [`Bus::downgrade`] instead,
/// or call `shutdown` explicitly. `std::process::exit` runs no destructors;
/// the bus's *durable* events (terminal ones by default, see
/// [`BusBuilder::durable_patterns`](crate::BusBuilder::durable_patterns)) are
/// on disk before their `emit` returns for that reason.
pub struct Bus {
    inner: Arc<BusInner>,
}

impl Clone for Bus {
    fn clone(&self) -> Self {
        self.inner.handles.fetch_add(1, Ordering::Relaxed);
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        if self.inner.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.inner.last_handle_dropped();
        }
    }
}

/// A handle to a [`Bus`] that does not keep it open: made by
/// [`Bus::downgrade`], for handlers and helper threads that emit into the
/// bus they are subscribed to (a `Bus` clone captured by a handler would
/// keep the bus from ever seeing its last handle dropped).
#[derive(Clone)]
pub struct WeakBus {
    inner: std::sync::Weak<BusInner>,
}

impl WeakBus {
    /// The bus, unless its last [`Bus`] handle was dropped.
    pub fn upgrade(&self) -> Option<Bus> {
        let inner = self.inner.upgrade()?;
        let mut n = inner.handles.load(Ordering::Acquire);
        loop {
            if n == 0 {
                return None;
            }
            match inner
                .handles
                .compare_exchange_weak(n, n + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(Bus { inner }),
                Err(now) => n = now,
            }
        }
    }
}

impl std::fmt::Debug for WeakBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeakBus").finish_non_exhaustive()
    }
}

/// Shuts its bus down when dropped, as
/// [`Bus::shutdown_blocking`] does. Made by [`Bus::shutdown_guard`].
#[must_use = "the bus is shut down when the guard is dropped"]
#[derive(Debug)]
pub struct ShutdownGuard {
    bus: WeakBus,
}

impl Drop for ShutdownGuard {
    fn drop(&mut self) {
        if let Some(bus) = self.bus.upgrade() {
            let report = bus.shutdown_blocking();
            if !report.drained {
                announce_abandoned(report.abandoned, "the bus's shutdown guard");
            }
        }
    }
}

pub(crate) struct BusInner {
    pub(crate) id: u64,
    /// Live `Bus` handles (not `WeakBus`es, nor the workers' weak
    /// references): the last one to go shuts the bus down.
    handles: AtomicU64,
    pub(crate) config: Config,
    routes: Routes,
    /// Serializes writers of `routes`; emitters never take it.
    write_lock: Mutex<()>,
    next_subscription: AtomicU64,
    /// Events numbered so far: also the count of events emitted, which
    /// `stats` reports from here (less `emitted_base`) rather than from a
    /// counter of its own, saving the emit path an atomic add.
    seq: AtomicU64,
    /// `seq` at the last `reset_stats`.
    emitted_base: AtomicU64,
    history: History,
    runs: Runs,
    shared: Arc<Shared>,
    by_type: DashMap<Box<str>, Arc<AtomicU64>, foldhash::fast::RandomState>,
    types_counted: std::sync::atomic::AtomicUsize,
    /// Where types past `MAX_COUNTED_TYPES` are counted.
    other_types: Arc<AtomicU64>,
    closed: AtomicBool,
    pub(crate) semaphore: Option<Arc<Semaphore>>,
    shutdown: Mutex<Option<ShutdownReport>>,
    /// Every worker started, so that shutdown can cancel the workers of
    /// subscriptions removed while their deliveries were still running.
    workers: Mutex<Vec<AbortHandle>>,
}

impl Drop for BusInner {
    /// The last handle is gone: close every queue, so that streams end once
    /// drained and queued handlers' threads stop, instead of waiting forever
    /// for events that cannot come.
    fn drop(&mut self) {
        for sub in self.routes.load().subscriptions() {
            sub.close_queue();
        }
    }
}

/// How a shutdown went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ShutdownReport {
    /// Whether every queued delivery finished within the shutdown timeout.
    pub drained: bool,
    /// Deliveries still queued or running when the timeout passed; they were
    /// cancelled and counted as abandoned.
    pub abandoned: u64,
}

impl Default for Bus {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("id", &self.inner.id)
            .field("subscriptions", &self.inner.routes.load().len())
            .field("closed", &self.inner.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Bus {
    /// A bus with the default settings (see [`BusBuilder`]).
    pub fn new() -> Self {
        Self::from_config(Config::default())
    }

    /// Starts configuring a bus.
    pub fn builder() -> BusBuilder {
        BusBuilder::default()
    }

    /// A handle that does not keep the bus open (see "Dropping the last
    /// handle" above): for handlers that emit into their own bus.
    pub fn downgrade(&self) -> WeakBus {
        WeakBus {
            inner: Arc::downgrade(&self.inner),
        }
    }

    /// A guard that shuts the bus down when dropped (waiting for queued
    /// deliveries up to the shutdown timeout, then flushing and closing the
    /// journal), whoever else still holds a handle: keep it in `main` when
    /// handlers hold clones of the bus, or the bus is global. A panic that
    /// unwinds out of `main` drops it too.
    ///
    /// ```
    /// # use nerve::Bus;
    /// let bus = Bus::new();
    /// let _shutdown = bus.shutdown_guard();
    /// bus.emit("job.started", nerve::json!({}))?;
    /// # Ok::<(), nerve::EmitError>(())
    /// ```
    pub fn shutdown_guard(&self) -> ShutdownGuard {
        ShutdownGuard {
            bus: self.downgrade(),
        }
    }

    pub(crate) fn from_config(config: Config) -> Self {
        let semaphore = config
            .max_concurrent_handlers
            .map(|n| Arc::new(Semaphore::new(n)));
        // A reopened journal continues its sequence.
        let first_seq = config.sink.as_ref().and_then(|s| s.last_seq()).unwrap_or(0);
        let bus = Self {
            inner: Arc::new(BusInner {
                id: NEXT_BUS_ID.fetch_add(1, Ordering::Relaxed),
                handles: AtomicU64::new(1),
                history: History::new(config.history_capacity),
                runs: Runs::new(config.run_history.0, config.run_history.1),
                config,
                routes: Routes::new(),
                write_lock: Mutex::new(()),
                next_subscription: AtomicU64::new(1),
                seq: AtomicU64::new(first_seq),
                emitted_base: AtomicU64::new(first_seq),
                shared: Arc::default(),
                by_type: DashMap::default(),
                types_counted: std::sync::atomic::AtomicUsize::new(0),
                other_types: Arc::default(),
                closed: AtomicBool::new(false),
                semaphore,
                shutdown: Mutex::new(None),
                workers: Mutex::new(Vec::new()),
            }),
        };
        if let Some(dlq) = &bus.inner.config.dead_letters {
            dlq.attach(Arc::downgrade(&bus.inner));
        }
        if let Some(sink) = &bus.inner.config.sink {
            let weak = Arc::downgrade(&bus.inner);
            sink.attach(FaultReporter::new(move |fault| {
                if let Some(bus) = weak.upgrade() {
                    bus.sink_fault(fault);
                }
            }));
        }
        bus
    }

    // ----- subscribing -----

    /// Runs `handler` inline, on the emitting thread, for every event matching
    /// `patterns`. The handler returns `()` or `Result<(), E: Display>`.
    ///
    /// # Errors
    ///
    /// [`SubscribeError`] for an invalid pattern or a shut-down bus.
    pub fn subscribe<P, F, R>(
        &self,
        patterns: P,
        handler: F,
    ) -> Result<SubscriptionId, SubscribeError>
    where
        P: IntoPatterns,
        F: Fn(&Event) -> R + Send + Sync + 'static,
        R: IntoHandlerResult,
    {
        self.subscribe_with(patterns, handler, Subscribe::new())
    }

    /// [`subscribe`](Self::subscribe) with options: priority, name, filter, timeout.
    ///
    /// # Errors
    ///
    /// [`SubscribeError`] for an invalid pattern or a shut-down bus.
    pub fn subscribe_with<P, F, R>(
        &self,
        patterns: P,
        handler: F,
        options: Subscribe,
    ) -> Result<SubscriptionId, SubscribeError>
    where
        P: IntoPatterns,
        F: Fn(&Event) -> R + Send + Sync + 'static,
        R: IntoHandlerResult,
    {
        let handler = handler::sync_fn(handler);
        if !options.queued {
            return self.inner.add(
                patterns.into_patterns()?,
                options,
                HandlerKind::Sync(handler),
                None,
            );
        }
        let queue = handler_queue(&options);
        let kind = HandlerKind::Queued(QueuedSlot {
            queue: queue.clone(),
        });
        let id = self
            .inner
            .add(patterns.into_patterns()?, options, kind, None)?;
        let name = format!("nerve-queued-{}", id.as_u64());
        if let Err(e) = worker::spawn_thread(Arc::downgrade(&self.inner), name, queue, handler) {
            self.inner.remove(id);
            return Err(SubscribeError::Worker(e));
        }
        Ok(id)
    }

    /// Runs the async `handler` on the tokio runtime for every event matching
    /// `patterns`. Each subscription handles its events one at a time, in
    /// order, unless [`Subscribe::concurrency`] says otherwise.
    ///
    /// No runtime is needed to subscribe; emitting an event this handler
    /// matches needs one (see [`EmitError::NoRuntime`]).
    ///
    /// # Errors
    ///
    /// [`SubscribeError`] for an invalid pattern or a shut-down bus.
    pub fn subscribe_async<P, F, Fut, R>(
        &self,
        patterns: P,
        handler: F,
    ) -> Result<SubscriptionId, SubscribeError>
    where
        P: IntoPatterns,
        F: Fn(Event) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: IntoHandlerResult,
    {
        self.subscribe_async_with(patterns, handler, Subscribe::new())
    }

    /// [`subscribe_async`](Self::subscribe_async) with options.
    ///
    /// # Errors
    ///
    /// [`SubscribeError`] for an invalid pattern or a shut-down bus.
    pub fn subscribe_async_with<P, F, Fut, R>(
        &self,
        patterns: P,
        handler: F,
        options: Subscribe,
    ) -> Result<SubscriptionId, SubscribeError>
    where
        P: IntoPatterns,
        F: Fn(Event) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: IntoHandlerResult,
    {
        let kind = HandlerKind::Async(AsyncSlot {
            handler: handler::async_fn(handler),
            concurrency: options.concurrency.unwrap_or(1),
            queue: handler_queue(&options),
            worker: Mutex::new(None),
        });
        self.inner
            .add(patterns.into_patterns()?, options, kind, None)
    }

    /// Runs `handler` inline with each `T::NAME` event's payload decoded as
    /// `T`. A payload that does not decode is a handler failure naming the
    /// event and the type.
    ///
    /// # Errors
    ///
    /// [`SubscribeError`] when `T::NAME` is not a valid pattern or the bus is
    /// shut down.
    pub fn subscribe_typed<T, F, R>(&self, handler: F) -> Result<SubscriptionId, SubscribeError>
    where
        T: TypedEvent,
        F: Fn(T) -> R + Send + Sync + 'static,
        R: IntoHandlerResult,
    {
        self.subscribe_typed_with(handler, Subscribe::new())
    }

    /// [`subscribe_typed`](Self::subscribe_typed) with options.
    ///
    /// # Errors
    ///
    /// As [`subscribe_typed`](Self::subscribe_typed).
    pub fn subscribe_typed_with<T, F, R>(
        &self,
        handler: F,
        options: Subscribe,
    ) -> Result<SubscriptionId, SubscribeError>
    where
        T: TypedEvent,
        F: Fn(T) -> R + Send + Sync + 'static,
        R: IntoHandlerResult,
    {
        let decode_then_handle = move |e: &Event| -> Result<(), HandlerError> {
            let value: T = e.decode().map_err(HandlerError::new)?;
            handler(value).into_handler_result()
        };
        self.subscribe_with(T::NAME, decode_then_handle, options)
    }

    /// The async twin of [`subscribe_typed`](Self::subscribe_typed).
    ///
    /// # Errors
    ///
    /// As [`subscribe_typed`](Self::subscribe_typed).
    pub fn subscribe_typed_async<T, F, Fut, R>(
        &self,
        handler: F,
        options: Subscribe,
    ) -> Result<SubscriptionId, SubscribeError>
    where
        T: TypedEvent,
        F: Fn(T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: IntoHandlerResult,
    {
        let handler = Arc::new(handler);
        let decode_then_handle = move |e: Event| {
            let handler = handler.clone();
            async move {
                let value: T = e.decode().map_err(HandlerError::new)?;
                handler(value).await.into_handler_result()
            }
        };
        self.subscribe_async_with(T::NAME, decode_then_handle, options)
    }

    /// Removes a subscription; `false` if it was not there. Deliveries already
    /// queued for an async handler still run; no new ones start.
    pub fn unsubscribe(&self, id: SubscriptionId) -> bool {
        self.inner.remove(id)
    }

    // ----- streams -----

    /// A live stream of the events matching `patterns`, with the default
    /// [`StreamOptions`] (1,024 events, [`Overflow::DropOldest`]).
    ///
    /// # Errors
    ///
    /// [`SubscribeError`] for an invalid pattern or a shut-down bus.
    pub fn stream<P: IntoPatterns>(&self, patterns: P) -> Result<EventStream, SubscribeError> {
        self.stream_with(patterns, StreamOptions::new())
    }

    /// A live stream with options: capacity, overflow policy, and filters
    /// on run id, lane, source or a predicate.
    ///
    /// # Errors
    ///
    /// [`SubscribeError`] for an invalid pattern or a shut-down bus.
    pub fn stream_with<P: IntoPatterns>(
        &self,
        patterns: P,
        options: StreamOptions,
    ) -> Result<EventStream, SubscribeError> {
        self.inner
            .open_stream(patterns.into_patterns()?, options, false)
    }

    /// Every event from every run, live only.
    ///
    /// # Errors
    ///
    /// [`SubscribeError::Closed`] on a shut-down bus.
    pub fn stream_global(&self) -> Result<EventStream, SubscribeError> {
        self.stream("*")
    }

    /// The events of one run: first the run's recorded events, oldest first,
    /// then live ones, with no gap and no duplicate at the seam; the stream
    /// ends after [`close_run`](Self::close_run). A subscriber that joins
    /// mid-run sees the whole run, within the run history's bounds
    /// (`BusBuilder::run_history`).
    ///
    /// # Errors
    ///
    /// [`SubscribeError::Closed`] on a shut-down bus.
    pub fn subscribe_run(&self, run_id: &str) -> Result<EventStream, SubscribeError> {
        self.subscribe_run_with(run_id, StreamOptions::new())
    }

    /// [`subscribe_run`](Self::subscribe_run) with options: capacity,
    /// overflow policy and further filters (the run id is set to `run_id`).
    ///
    /// # Errors
    ///
    /// [`SubscribeError::Closed`] on a shut-down bus.
    pub fn subscribe_run_with(
        &self,
        run_id: &str,
        options: StreamOptions,
    ) -> Result<EventStream, SubscribeError> {
        let options = options.run_id(run_id);
        self.inner
            .open_stream(vec![Pattern::parse("*")?], options, true)
    }

    /// Ends the streams of a run: each gets the end after what is queued, and
    /// later `subscribe_run` calls replay the run and end. `false` if the bus
    /// has no record of the run.
    pub fn close_run(&self, run_id: &str) -> bool {
        self.inner.close_run(run_id)
    }

    // ----- emitting -----

    /// Publishes an event of type `event_type` carrying `data` and runs the
    /// inline handlers before returning; async handlers are queued.
    ///
    /// The event takes its correlation id from the ambient scope (see
    /// [`nerve_core::correlation`]), else a fresh one; inside a handler it
    /// also gets the handled event as its `causation_id`.
    ///
    /// # Errors
    ///
    /// [`EmitError`]: invalid name, shut-down bus, no runtime for an async
    /// handler, nesting too deep, or [`EmitError::Halted`] when a handler asked
    /// to stop (the event was still delivered to every handler).
    pub fn emit(
        &self,
        event_type: impl Into<String>,
        data: impl Into<Value>,
    ) -> Result<EventId, EmitError> {
        let event = self.inner.build(event_type, data)?;
        self.inner.dispatch(event, None)?.into_result()
    }

    /// Publishes a built event (see [`Event::builder`]); as [`emit`](Self::emit).
    ///
    /// # Errors
    ///
    /// As [`emit`](Self::emit).
    pub fn emit_event(&self, event: Event) -> Result<EventId, EmitError> {
        self.inner.dispatch(event, None)?.into_result()
    }

    /// Publishes `value` as a `T::NAME` event.
    ///
    /// # Errors
    ///
    /// [`EmitError::Serialize`] when `value` does not serialize, else as
    /// [`emit`](Self::emit).
    pub fn emit_typed<T: TypedEvent>(&self, value: &T) -> Result<EventId, EmitError> {
        let data = serde_json::to_value(value).map_err(|source| EmitError::Serialize {
            event_type: T::NAME.to_owned(),
            source,
        })?;
        self.emit(T::NAME, data)
    }

    /// Publishes events in order, stopping at the first that fails.
    ///
    /// # Errors
    ///
    /// An [`EmitManyError`] with the position and error of the failing
    /// event and the ids of those emitted before it.
    pub fn emit_many<I>(&self, events: I) -> Result<Vec<EventId>, EmitManyError>
    where
        I: IntoIterator<Item = Event>,
    {
        let mut emitted = Vec::new();
        for (index, event) in events.into_iter().enumerate() {
            match self.emit_event(event) {
                Ok(id) => emitted.push(id),
                Err(source) => {
                    return Err(EmitManyError {
                        index,
                        emitted,
                        source,
                    });
                }
            }
        }
        Ok(emitted)
    }

    /// Publishes an event and waits until every handler it reached has
    /// finished, failed or timed out.
    ///
    /// # Errors
    ///
    /// As [`emit`](Self::emit), plus [`EmitError::WouldDeadlock`] when called
    /// inside an async handler for an event that handler's subscription (or one
    /// waiting on it) must also handle. A halt from any handler, sync or
    /// async, is returned as [`EmitError::Halted`].
    ///
    /// # Cancel safety
    ///
    /// Dropping the future stops the waiting, not the deliveries.
    pub async fn emit_and_wait(
        &self,
        event_type: impl Into<String>,
        data: impl Into<Value>,
    ) -> Result<DeliveryReport, EmitError> {
        let event = self.inner.build(event_type, data)?;
        self.emit_event_and_wait(event).await
    }

    /// [`emit_and_wait`](Self::emit_and_wait) for a built event.
    ///
    /// # Errors
    ///
    /// As [`emit_and_wait`](Self::emit_and_wait).
    pub async fn emit_event_and_wait(&self, event: Event) -> Result<DeliveryReport, EmitError> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let dispatched = self.inner.dispatch(event, Some((tx, WaitMode::Async)))?;
        let mut outcomes = Vec::new();
        while let Some(outcome) = rx.recv().await {
            outcomes.push(outcome);
        }
        dispatched.into_report(outcomes)
    }

    /// The blocking twin of [`emit_and_wait`](Self::emit_and_wait), for sync code.
    ///
    /// # Errors
    ///
    /// As [`emit_and_wait`](Self::emit_and_wait), plus
    /// [`EmitError::WouldDeadlock`] when called on a current-thread tokio
    /// runtime while async handlers must run (they would need this thread).
    pub fn emit_and_wait_blocking(
        &self,
        event_type: impl Into<String>,
        data: impl Into<Value>,
    ) -> Result<DeliveryReport, EmitError> {
        let event = self.inner.build(event_type, data)?;
        self.emit_event_and_wait_blocking(event)
    }

    /// [`emit_and_wait_blocking`](Self::emit_and_wait_blocking) for a built event.
    ///
    /// # Errors
    ///
    /// As [`emit_and_wait_blocking`](Self::emit_and_wait_blocking).
    pub fn emit_event_and_wait_blocking(&self, event: Event) -> Result<DeliveryReport, EmitError> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let dispatched = self.inner.dispatch(event, Some((tx, WaitMode::Blocking)))?;
        // `futures`' executor, unlike `blocking_recv`, does not refuse to run
        // inside a runtime; the deadlock cases were refused by `dispatch`.
        let outcomes = block_here(|| {
            futures::executor::block_on(async move {
                let mut outcomes = Vec::new();
                while let Some(outcome) = rx.recv().await {
                    outcomes.push(outcome);
                }
                outcomes
            })
        });
        dispatched.into_report(outcomes)
    }

    /// Waits until every queued async delivery has finished.
    ///
    /// Called from inside a handler it returns at once, as waiting there
    /// would wait on itself.
    pub async fn flush(&self) {
        if reentry::in_handler() {
            tracing::warn!("Bus::flush called inside a handler; returning without waiting");
            return;
        }
        self.inner.shared.pending.wait().await;
        self.inner.flush_sink();
    }

    /// The blocking twin of [`flush`](Self::flush). On a current-thread tokio
    /// runtime whose thread the handlers need, it returns at once; use
    /// `flush().await` there.
    pub fn flush_blocking(&self) {
        if reentry::in_handler() || self.inner.blocking_would_deadlock() {
            tracing::warn!("Bus::flush_blocking would wait on itself; returning without waiting");
            return;
        }
        block_here(|| self.inner.shared.pending.wait_blocking(None));
        self.inner.flush_sink();
    }

    // ----- reading -----

    /// Recent events matching `query`, newest first unless it says otherwise.
    pub fn history(&self, query: &HistoryQuery) -> Vec<Event> {
        self.inner.history.query(query)
    }

    /// Recorded events matching `query`, read through the journal when the
    /// bus has one (so events older than the in-memory history are found),
    /// else from the in-memory history. Newest first unless the query says
    /// otherwise.
    ///
    /// # Errors
    ///
    /// A [`SinkError`] when the journal cannot be read.
    pub fn events(&self, query: &HistoryQuery) -> Result<Vec<Event>, SinkError> {
        match &self.inner.config.sink {
            Some(sink) => {
                self.inner.flush_sink();
                sink.query(query)
            }
            None => Ok(self.inner.history.query(query)),
        }
    }

    /// Empties the in-memory history.
    pub fn clear_history(&self) {
        self.inner.history.clear();
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> BusStats {
        self.inner.stats()
    }

    /// Sets every counter to zero.
    pub fn reset_stats(&self) {
        let inner = &self.inner;
        inner.shared.reset();
        inner
            .emitted_base
            .store(inner.seq.load(Ordering::Relaxed), Ordering::Relaxed);
        for counter in &inner.by_type {
            counter.value().store(0, Ordering::Relaxed);
        }
        inner.other_types.store(0, Ordering::Relaxed);
        for sub in inner.routes.load().subscriptions() {
            sub.counters.reset();
            // Queues count their own offers, and are not reset (their count
            // orders pushes before wake-ups): start from where they are.
            sub.counters
                .offered_base
                .store(sub.kind.accepted(), Ordering::Relaxed);
        }
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    // ----- shutting down -----

    /// Stops accepting events, waits up to the shutdown timeout for queued
    /// deliveries, cancels what is left, and removes every subscription.
    /// Idempotent: later calls return the first call's report.
    ///
    /// Handlers that hold a clone of the bus keep it alive; shutting down
    /// releases them.
    pub async fn shutdown(&self) -> ShutdownReport {
        if let Some(report) = self.inner.begin_shutdown() {
            return report;
        }
        let timeout = self.inner.config.shutdown_timeout;
        let drained = tokio::time::timeout(timeout, self.inner.shared.pending.wait())
            .await
            .is_ok();
        self.inner.finish_shutdown(drained)
    }

    /// Shuts down as [`shutdown_blocking`](Self::shutdown_blocking) does,
    /// with `last` as the bus's last event: the bus stops accepting events
    /// first, then `last` is emitted (recorded, durable if terminal, and
    /// delivered), so nothing emitted concurrently is numbered after it. Its
    /// handlers' own emits are refused as `Closed`. Used by
    /// [`signals`](crate::signals) for `system.interrupted`.
    ///
    /// `last` is not emitted if the bus was already shut down.
    pub fn shutdown_with(&self, last: Event) -> ShutdownReport {
        self.shutdown_with_in(last, None)
    }

    /// [`shutdown_with`](Self::shutdown_with), emitting `last` inside
    /// `runtime` (for a thread outside it, such as the signal thread), so
    /// that async handlers of `last` can be queued there.
    pub(crate) fn shutdown_with_in(&self, last: Event, runtime: Option<&Handle>) -> ShutdownReport {
        if let Some(report) = self.inner.begin_shutdown() {
            return report;
        }
        let emitted = {
            // Only around the emit: the wait below must not look like
            // blocking the runtime's own thread, which this is not.
            let _runtime = runtime.map(Handle::enter);
            self.inner.dispatch_open(last, None)
        };
        if let Err(e) = emitted {
            tracing::warn!(error = %e, "the last event was not emitted");
        }
        self.drain_blocking()
    }

    /// The blocking twin of [`shutdown`](Self::shutdown).
    pub fn shutdown_blocking(&self) -> ShutdownReport {
        if let Some(report) = self.inner.begin_shutdown() {
            return report;
        }
        self.drain_blocking()
    }

    /// Waits for queued deliveries where that cannot wait on itself, then
    /// finishes the shutdown `begin_shutdown` started.
    fn drain_blocking(&self) -> ShutdownReport {
        let drained = if reentry::in_handler() || self.inner.blocking_would_deadlock() {
            self.inner.shared.pending.get() == 0
        } else {
            let timeout = self.inner.config.shutdown_timeout;
            block_here(|| self.inner.shared.pending.wait_blocking(Some(timeout)))
        };
        self.inner.finish_shutdown(drained)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum WaitMode {
    Async,
    Blocking,
}

/// What `dispatch` did, before anyone waited.
struct Dispatched {
    event_id: EventId,
    halt: Option<(Arc<Subscription>, String)>,
    /// A subscriber's queue refused the event (`Overflow::Error`, or a
    /// `Block` that would wait on itself). Boxed: rare, and large.
    refused: Option<Box<EmitError>>,
}

/// What the delivery loop leaves for after it: failures to report, queues
/// that dropped events, a halt or a refusal to return.
#[derive(Default)]
struct AfterDelivery {
    failures: SmallVec<[(Arc<Subscription>, Outcome); 2]>,
    drops: SmallVec<[Arc<Subscription>; 2]>,
    halt: Option<(Arc<Subscription>, String)>,
    refused: Option<Box<EmitError>>,
    may_block: Option<bool>,
    /// Readers to wake once the event is in every queue.
    wakes: crate::queue::Wakes,
}

impl AfterDelivery {
    /// Records why `emit` must fail, unless an earlier reason was recorded.
    fn refuse(&mut self, error: impl FnOnce() -> EmitError) {
        if self.refused.is_none() {
            self.refused = Some(Box::new(error()));
        }
    }
}

/// Something a full queue can drop, telling whoever waits for it.
trait Discard {
    fn event(&self) -> Option<&Event>;
    fn discard(self, reason: DropReason);
}

impl Discard for Delivery {
    fn event(&self) -> Option<&Event> {
        Some(&self.event)
    }
    fn discard(self, reason: DropReason) {
        Delivery::discard(self, reason);
    }
}

impl Discard for StreamItem {
    fn event(&self) -> Option<&Event> {
        match self {
            StreamItem::Event(event) => Some(event),
            StreamItem::End => None,
        }
    }
    fn discard(self, _reason: DropReason) {}
}

impl Dispatched {
    fn halted_error(event_id: EventId, sub: &Subscription, reason: String) -> EmitError {
        EmitError::Halted {
            event_id,
            subscription: sub.id,
            subscription_label: sub.label(),
            reason,
        }
    }

    fn into_result(self) -> Result<EventId, EmitError> {
        match (self.halt, self.refused) {
            (Some((sub, reason)), _) => Err(Self::halted_error(self.event_id, &sub, reason)),
            (None, Some(refused)) => Err(*refused),
            (None, None) => Ok(self.event_id),
        }
    }

    fn into_report(self, outcomes: Vec<HandlerOutcome>) -> Result<DeliveryReport, EmitError> {
        if let Some((sub, reason)) = self.halt {
            return Err(Self::halted_error(self.event_id, &sub, reason));
        }
        if let Some(refused) = self.refused {
            return Err(*refused);
        }
        for o in &outcomes {
            if let Outcome::Halted(reason) = &o.outcome {
                return Err(EmitError::Halted {
                    event_id: self.event_id,
                    subscription: o.subscription,
                    subscription_label: o
                        .name
                        .clone()
                        .unwrap_or_else(|| o.subscription.to_string()),
                    reason: reason.clone(),
                });
            }
        }
        Ok(DeliveryReport {
            event_id: self.event_id,
            outcomes,
        })
    }
}

impl BusInner {
    fn add(
        &self,
        patterns: Vec<Pattern>,
        options: Subscribe,
        kind: HandlerKind,
        run_id: Option<Box<str>>,
    ) -> Result<SubscriptionId, SubscribeError> {
        self.add_sub(patterns, options, kind, run_id)
            .map(|sub| sub.id)
    }

    fn add_sub(
        &self,
        patterns: Vec<Pattern>,
        options: Subscribe,
        kind: HandlerKind,
        run_id: Option<Box<str>>,
    ) -> Result<Arc<Subscription>, SubscribeError> {
        if patterns.is_empty() {
            return Err(SubscribeError::NoPatterns);
        }
        let _writer = self
            .write_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.closed.load(Ordering::Acquire) {
            return Err(SubscribeError::Closed);
        }
        let id = SubscriptionId::from_u64(self.next_subscription.fetch_add(1, Ordering::Relaxed));
        let mut patterns = patterns;
        patterns.dedup();
        let metric_label = match &options.name {
            Some(name) => name.clone().into_boxed_str(),
            None => id.to_string().into_boxed_str(),
        };
        let sub = Arc::new(Subscription {
            id,
            name: options.name.map(String::into_boxed_str),
            patterns,
            priority: options.priority,
            filter: options.filter,
            timeout: options.timeout,
            kind,
            run_id,
            active: AtomicBool::new(true),
            counters: Default::default(),
            metric_label,
        });
        let table = self.routes.load().with(sub.clone());
        self.routes.store(table);
        self.shared
            .subscriptions_total
            .fetch_add(1, Ordering::Relaxed);
        Ok(sub)
    }

    /// Subscribes a stream; for a run, replays the run's log first.
    pub(crate) fn open_stream(
        self: &Arc<Self>,
        patterns: Vec<Pattern>,
        options: StreamOptions,
        replay_run: bool,
    ) -> Result<EventStream, SubscribeError> {
        let queue = Arc::new(Queue::new(options.capacity, options.overflow));
        let subscribe = Subscribe {
            name: options.name.clone(),
            filter: options.combined_filter(),
            ..Subscribe::default()
        };
        let kind = HandlerKind::Stream(queue.clone());
        let run_id = options.run_id.as_deref().map(Box::from);
        if !replay_run {
            let sub = self.add_sub(patterns, subscribe, kind, run_id)?;
            return Ok(EventStream::new(
                queue,
                sub,
                Arc::downgrade(self),
                Vec::new(),
            ));
        }
        let run = options.run_id.clone().unwrap_or_default();
        // Holding the run log while subscribing: an emit of this run is
        // either in the snapshot or, recorded after it, routed to the new
        // subscription (see `dispatch`).
        let mut runs = self.runs.lock();
        let (replay, closed) = match runs.get(&run) {
            Some(log) => (log.events.iter().cloned().collect(), log.closed),
            None => (Vec::new(), false),
        };
        let sub = self.add_sub(patterns, subscribe, kind, run_id)?;
        if closed {
            let _ = queue.push(StreamItem::End, false, |_| {});
        } else {
            // Touch the run so that `close_run` knows it, and it is fresh.
            runs.touch(&run, self.runs.max_runs());
        }
        drop(runs);
        Ok(EventStream::new(queue, sub, Arc::downgrade(self), replay))
    }

    fn close_run(&self, run_id: &str) -> bool {
        let known = {
            let mut runs = self.runs.lock();
            match runs.get_mut(run_id) {
                Some(log) => {
                    log.closed = true;
                    true
                }
                None => false,
            }
        };
        for sub in self.routes.load().subscriptions() {
            if let (HandlerKind::Stream(queue), Some(r)) = (&sub.kind, sub.run_id.as_deref()) {
                if r == run_id {
                    // The end is terminal: never dropped, queued after what
                    // the stream has yet to read.
                    let _ = queue.push(StreamItem::End, false, |_| {});
                }
            }
        }
        known
    }

    pub(crate) fn remove(&self, id: SubscriptionId) -> bool {
        let _writer = self
            .write_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some((table, sub)) = self.routes.load().without(id) else {
            return false;
        };
        sub.active.store(false, Ordering::Release);
        self.routes.store(table);
        sub.close_queue();
        true
    }

    fn build(
        &self,
        event_type: impl Into<String>,
        data: impl Into<Value>,
    ) -> Result<Event, EmitError> {
        Event::builder(event_type).data(data).build().map_err(|e| {
            self.shared.rejected.fetch_add(1, Ordering::Relaxed);
            EmitError::Invalid(e)
        })
    }

    /// Validates an event and fills in its correlation and causation.
    fn accept(&self, mut event: Event) -> Result<Event, EmitError> {
        if let Some(rules) = &self.config.name_rules {
            if let Err(e) = rules.validate(event.event_type()) {
                self.shared.rejected.fetch_add(1, Ordering::Relaxed);
                self.metric_counter(
                    metric::EVENTS_REJECTED_TOTAL,
                    &[(metric::label::REASON, "validation")],
                );
                self.dead_letter(Failure {
                    event: event.clone(),
                    subscription: None,
                    reason: DeadLetterReason::ValidationError,
                    error: e.to_string(),
                    targets: Vec::new(),
                });
                return Err(EmitError::Invalid(e));
            }
        }
        for guard in &self.config.guards {
            let verdict =
                catch_unwind(AssertUnwindSafe(|| guard(&event))).unwrap_or_else(|panic| {
                    Err(Reject::new(format!("guard {}", panic_message(&*panic))))
                });
            if let Err(reject) = verdict {
                self.shared.rejected.fetch_add(1, Ordering::Relaxed);
                self.metric_counter(
                    metric::EVENTS_REJECTED_TOTAL,
                    &[(metric::label::REASON, "guard")],
                );
                return Err(EmitError::Rejected {
                    event_type: event.event_type().to_owned(),
                    reason: reject.reason().to_owned(),
                });
            }
        }
        if event.correlation_id().is_none() || event.causation_id().is_none() {
            let ambient = correlation::current_ambient();
            if let (None, Some(id)) = (event.correlation_id(), ambient.correlation_id) {
                event = event.with_correlation_id(id);
            }
            if let (None, Some(cause)) = (event.causation_id(), ambient.causation_id) {
                event = event.with_causation_id(cause);
            }
        }
        // Between the ambient id and a generated one: an instrument may take
        // the correlation from the current trace.
        if let Some(instrument) = &self.config.instrument {
            event = instrument.prepare(event);
        }
        if event.correlation_id().is_none() && self.config.generate_correlation_ids {
            // A root event names its correlation after itself.
            let id = CorrelationId::from(event.event_id());
            event = event.with_correlation_id(id);
        }
        Ok(event)
    }

    fn runtime(&self) -> Option<Handle> {
        self.config
            .runtime
            .clone()
            .or_else(|| Handle::try_current().ok())
    }

    /// Whether blocking this thread would stop the async handlers it waits
    /// for: it drives a current-thread runtime, and the bus has none of its own.
    fn blocking_would_deadlock(&self) -> bool {
        self.config.runtime.is_none()
            && Handle::try_current()
                .is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::CurrentThread)
    }

    /// The counter of `event_type`, made on first use; called on route-cache
    /// misses only.
    fn type_counter(&self, event_type: &str) -> Arc<AtomicU64> {
        if let Some(counter) = self.by_type.get(event_type) {
            return counter.clone();
        }
        if self.types_counted.load(Ordering::Relaxed) >= MAX_COUNTED_TYPES {
            return self.other_types.clone();
        }
        self.by_type
            .entry(event_type.into())
            .or_insert_with(|| {
                self.types_counted.fetch_add(1, Ordering::Relaxed);
                Arc::default()
            })
            .clone()
    }

    #[inline]
    fn dispatch(
        self: &Arc<Self>,
        event: Event,
        waiter: Option<(Waiter, WaitMode)>,
    ) -> Result<Dispatched, EmitError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(EmitError::Closed);
        }
        self.dispatch_open(event, waiter)
    }

    /// `dispatch` without the closed check: for the last event of a bus
    /// that is shutting down (`Bus::shutdown_with`).
    fn dispatch_open(
        self: &Arc<Self>,
        event: Event,
        waiter: Option<(Waiter, WaitMode)>,
    ) -> Result<Dispatched, EmitError> {
        let _depth = DepthGuard::enter(self.config.max_depth)
            .map_err(|depth| EmitError::TooDeep { depth })?;
        let event = self.accept(event)?;
        let mut route = self.route(event.event_type());
        let mut runtime = if route.has_async {
            let runtime = self.runtime().ok_or_else(|| EmitError::NoRuntime {
                event_type: event.event_type().to_owned(),
            })?;
            Some(runtime)
        } else {
            None
        };
        let chain = match &waiter {
            Some((_, mode)) if route.has_async => {
                self.check_wait(&event, &route, *mode)?;
                reentry::chain()
            }
            _ => None,
        };

        // Numbered only once nothing can refuse it, so `seq` has no gaps;
        // reports of journal faults are not numbered (the journal does not
        // record them).
        let mut event = if route.recorded {
            event.with_seq(self.seq.fetch_add(1, Ordering::Relaxed) + 1)
        } else {
            event
        };
        if route.terminal && !event.is_marked_terminal() {
            // Marked on the event, which streams' queues read (and which
            // subscribers see): still the only copy, so no copy is made.
            event = event.terminal();
        }
        if event.run_id().is_some() || event.lane().is_some() {
            // Recorded in the run's log before the routes are read again, so
            // a `subscribe_run` racing with this emit either replays the
            // event or receives it live (the stream drops the duplicate).
            event = self.runs.record(event);
            route = self.route(event.event_type());
        }
        if let Some(sink) = self.config.sink.as_ref().filter(|_| route.recorded) {
            // Durable events (terminal ones unless configured) are on disk,
            // with everything before them, before any handler runs.
            let durable = route.durable
                || (self.config.durable_patterns.is_none() && event.is_marked_terminal());
            let recorded = if durable {
                sink.record_and_wait(&event)
            } else {
                sink.record(&event)
            };
            if let Err(e) = recorded {
                self.sink_fault(SinkFault {
                    kind: e.kind(),
                    message: e.to_string(),
                    event: Some(event.clone()),
                });
            }
        }
        self.history.push(&event);
        if let Some(instrument) = &self.config.instrument {
            instrument.emitted(&event);
        }
        route.type_counter.fetch_add(1, Ordering::Relaxed);
        let terminal = event.is_marked_terminal();
        if let Some(metrics) = &self.config.metrics {
            metrics.counter(
                metric::EVENTS_EMITTED_TOTAL,
                1,
                &[(metric::label::EVENT_TYPE, event.event_type())],
            );
        }
        if route.subscriptions.is_empty() && self.config.dead_letters.is_some() && !retrying() {
            if let Some(dlq) = &self.config.dead_letters {
                if dlq.records_unrouted() && !event.event_type().starts_with("system.") {
                    self.dead_letter(Failure {
                        event: event.clone(),
                        subscription: None,
                        reason: DeadLetterReason::NoSubscriber,
                        error: "no subscription matched the event".to_owned(),
                        targets: Vec::new(),
                    });
                }
            }
        }
        // Handlers that ran inline, and whether any subscriber was queued:
        // an event whose inline handlers all failed, with none queued, is one
        // `AllHandlersFailed` dead letter rather than one per handler.
        let mut inline_ran = 0usize;
        let mut queued_any = false;

        let mut after = AfterDelivery::default();
        {
            // Inline handlers and filters see the event's correlation id as
            // ambient, and the event as the cause of anything they emit.
            let _ambient = route
                .runs_inline
                .then(|| correlation::enter_ambient(Ambient::of_event(&event)));
            for sub in route.subscriptions.iter() {
                if !sub.active.load(Ordering::Acquire) {
                    continue;
                }
                if let Some(filter) = &sub.filter {
                    match catch_unwind(AssertUnwindSafe(|| filter(&event))) {
                        Ok(true) => {}
                        Ok(false) => continue,
                        Err(panic) => {
                            let outcome =
                                Outcome::Panicked(format!("filter {}", panic_message(&*panic)));
                            inline_ran += 1;
                            if !sub.is_inline() {
                                sub.counters.offered.fetch_add(1, Ordering::Relaxed);
                                sub.counters.delivered.fetch_add(1, Ordering::Relaxed);
                            }
                            self.finish_inline(
                                &event,
                                sub,
                                outcome,
                                Duration::ZERO,
                                &waiter,
                                &mut after,
                            );
                            continue;
                        }
                    }
                }
                match &sub.kind {
                    HandlerKind::Sync(f) => {
                        // No offered/delivered counts here: for an inline
                        // handler both equal the sum of its outcomes, which
                        // stats derive, saving two atomic adds a handler.
                        // Two clock reads per call are a large part of an
                        // inline delivery, so sync handlers are timed only
                        // when a timeout was asked for explicitly.
                        let limit = sub.timeout.or(self.config.sync_timeout());
                        inline_ran += 1;
                        // A handler may wait for what a queued one does.
                        if !after.wakes.is_empty() {
                            crate::queue::wake_all(Some(&mut after.wakes));
                        }
                        let (outcome, elapsed) =
                            self.call_sync(f, &event, limit, sub, HandlerMode::Inline);
                        self.finish_inline(&event, sub, outcome, elapsed, &waiter, &mut after);
                    }
                    HandlerKind::Queued(slot) => {
                        queued_any = true;
                        let refused = self.admit(&event, sub, &slot.queue, terminal, &mut after);
                        let delivery = self.delivery(&event, sub, &waiter, &chain, terminal);
                        match refused {
                            None => self.offer(&event, sub, &slot.queue, delivery, &mut after),
                            Some(reason) => self.refuse(sub, delivery, reason, &mut after),
                        }
                    }
                    HandlerKind::Async(slot) => {
                        queued_any = true;
                        let refused = self.admit(&event, sub, &slot.queue, terminal, &mut after);
                        let delivery = self.delivery(&event, sub, &waiter, &chain, terminal);
                        if runtime.is_none() {
                            runtime = self.runtime();
                        }
                        match refused {
                            None => self.offer(&event, sub, &slot.queue, delivery, &mut after),
                            Some(reason) => self.refuse(sub, delivery, reason, &mut after),
                        }
                        // After the offer: a worker spawned on a runtime that
                        // is gone is dropped unpolled, abandoning what is
                        // queued, this delivery included, instead of leaving
                        // it for a worker that never comes. With no runtime
                        // (subscribed after the check) the delivery waits for
                        // the next emit to start one.
                        if let Some(runtime) = &runtime {
                            self.ensure_worker(slot, runtime);
                        }
                    }
                    HandlerKind::Stream(queue) => {
                        let item = StreamItem::Event(event.clone());
                        self.offer(&event, sub, queue, item, &mut after);
                    }
                }
            }
        }
        // Each of these is empty on the common path; looked at first, so
        // that it costs a compare rather than a loop's set-up and tear-down.
        if !after.wakes.is_empty() {
            crate::queue::wake_all(Some(&mut after.wakes));
        }
        if !after.failures.is_empty() {
            let failures = std::mem::take(&mut after.failures);
            self.after_failures(&event, failures, inline_ran, queued_any);
        }
        if !after.drops.is_empty() {
            for sub in std::mem::take(&mut after.drops) {
                self.announce_drops(&event, &sub);
            }
        }
        Ok(Dispatched {
            event_id: event.event_id(),
            halt: after.halt,
            refused: after.refused,
        })
    }

    /// Reports the failures of inline deliveries: one `AllHandlersFailed`
    /// dead letter when every handler of an event with no queued subscriber
    /// failed, else one report per failure.
    #[cold]
    fn after_failures(
        self: &Arc<Self>,
        event: &Event,
        failures: SmallVec<[(Arc<Subscription>, Outcome); 2]>,
        inline_ran: usize,
        queued_any: bool,
    ) {
        let all_failed = !queued_any && inline_ran >= 2 && failures.len() == inline_ran;
        // Only looked up when a failure may become a dead letter.
        let retrying = retrying();
        if all_failed && !retrying && self.config.dead_letters.is_some() {
            let error = failures
                .iter()
                .map(|(sub, o)| format!("{}: {}", sub.label(), o.error().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join("; ");
            self.dead_letter(Failure {
                event: event.clone(),
                subscription: None,
                reason: DeadLetterReason::AllHandlersFailed,
                error,
                targets: failures.iter().map(|(sub, _)| sub.id).collect(),
            });
        }
        for (sub, outcome) in failures {
            self.report_failure(event, &sub, &outcome, !retrying && !all_failed);
        }
    }

    fn route(&self, event_type: &str) -> Arc<Route> {
        self.routes.route(event_type, |t| {
            let terminal = self.config.terminal_patterns.iter().any(|p| p.matches(t));
            let durable = match &self.config.durable_patterns {
                None => terminal,
                Some(patterns) => patterns.iter().any(|p| p.matches(t)),
            };
            TopicTraits {
                type_counter: self.type_counter(t),
                terminal,
                durable,
                recorded: t != JOURNAL_ERROR,
            }
        })
    }

    fn delivery(
        &self,
        event: &Event,
        sub: &Arc<Subscription>,
        waiter: &Option<(Waiter, WaitMode)>,
        chain: &Option<reentry::Chain>,
        terminal: bool,
    ) -> Delivery {
        Delivery::new(
            event.clone(),
            sub.clone(),
            waiter.as_ref().map(|(w, _)| w.clone()),
            chain.clone(),
            terminal,
            !retrying(),
            self.shared.clone(),
        )
    }

    /// Calls a sync handler, catching panics, timing it if `limit` is set,
    /// inside the scope of the bus's instrument if it has one.
    #[inline(always)]
    pub(crate) fn call_sync(
        &self,
        f: &SyncFn,
        event: &Event,
        limit: Option<Duration>,
        sub: &Subscription,
        mode: HandlerMode,
    ) -> (Outcome, Duration) {
        match &self.config.instrument {
            None => self.call_sync_plain(f, event, limit),
            Some(instrument) => {
                self.call_sync_instrumented(&**instrument, f, event, limit, sub, mode)
            }
        }
    }

    #[inline(never)]
    fn call_sync_instrumented(
        &self,
        instrument: &dyn Instrument,
        f: &SyncFn,
        event: &Event,
        limit: Option<Duration>,
        sub: &Subscription,
        mode: HandlerMode,
    ) -> (Outcome, Duration) {
        let mut result = None;
        instrument.deliver(event, &sub.handler_info(mode), &mut |report| {
            let (outcome, elapsed) = self.call_sync_plain(f, event, limit);
            report(&outcome.as_delivery());
            result = Some((outcome, elapsed));
        });
        result.unwrap_or_else(|| {
            (
                Outcome::Failed("the instrument did not run the handler".to_owned()),
                Duration::ZERO,
            )
        })
    }

    #[inline(always)]
    fn call_sync_plain(
        &self,
        f: &SyncFn,
        event: &Event,
        limit: Option<Duration>,
    ) -> (Outcome, Duration) {
        let timed = limit.is_some() || self.config.metrics.is_some();
        let start = timed.then(Instant::now);
        let result = catch_unwind(AssertUnwindSafe(|| f(event)));
        let elapsed = start.map_or(Duration::ZERO, |s| s.elapsed());
        let outcome = match result {
            Ok(Ok(())) if limit.is_some_and(|l| elapsed > l) => Outcome::TimedOut(elapsed),
            Ok(Ok(())) => Outcome::Delivered,
            Ok(Err(e)) if e.is_halt() => Outcome::Halted(e.message().to_owned()),
            Ok(Err(e)) => Outcome::Failed(e.message().to_owned()),
            Err(panic) => Outcome::Panicked(panic_message(&*panic)),
        };
        (outcome, elapsed)
    }

    /// Puts `item` on a subscriber's queue, applying the bus's `max_pending`
    /// bound and the queue's overflow policy, and accounts for whatever is
    /// lost.
    fn offer<T: QueueItem + Discard>(
        &self,
        event: &Event,
        sub: &Arc<Subscription>,
        queue: &Queue<T>,
        item: T,
        after: &mut AfterDelivery,
    ) {
        // What the queue accepts it counts as offered itself (one atomic
        // add it makes anyway); here only what it turns away is counted.
        // Worked out only if the queue is full: it reads thread-locals and
        // the runtime handle.
        let may_block = || {
            *after.may_block.get_or_insert_with(|| {
                !reentry::dispatching_in_handler() && !self.blocking_would_deadlock()
            })
        };
        let lost = match queue.push_deferring(
            item,
            may_block,
            |wait| block_here(wait),
            Some(&mut after.wakes),
        ) {
            Pushed::Queued(None) => None,
            Pushed::Queued(Some((evicted, reason))) => Some((evicted, reason)),
            Pushed::Dropped(item, reason) => {
                sub.counters.offered.fetch_add(1, Ordering::Relaxed);
                Some((item, reason))
            }
            Pushed::Full(item) => {
                sub.counters.offered.fetch_add(1, Ordering::Relaxed);
                after.refuse(|| EmitError::QueueFull {
                    event_id: event.event_id(),
                    subscription: sub.id,
                    subscription_label: sub.label(),
                });
                Some((item, DropReason::Refused))
            }
            Pushed::WouldBlock(item) => {
                sub.counters.offered.fetch_add(1, Ordering::Relaxed);
                after.refuse(|| EmitError::WouldDeadlock {
                    reason: format!(
                        "the queue of {} is full and its policy is Block, but waiting here \
                         (inside a handler, or on the current-thread runtime that drains it) \
                         would wait on itself",
                        sub.label()
                    ),
                });
                Some((item, DropReason::Refused))
            }
            Pushed::Closed(item) => {
                sub.counters.offered.fetch_add(1, Ordering::Relaxed);
                Some((item, DropReason::Closed))
            }
            Pushed::Withdrawn(items) => {
                for item in items.into_iter().filter(|i| i.event().is_some()) {
                    self.lose(sub, item, DropReason::Closed, after);
                }
                None
            }
        };
        if let Some((item, reason)) = lost {
            self.lose(sub, item, reason, after);
        }
        if let Some(metrics) = &self.config.metrics {
            let label = [(metric::label::SUBSCRIPTION, &*sub.metric_label)];
            metrics.gauge(metric::QUEUE_DEPTH, queue.len() as f64, &label);
            metrics.gauge(metric::PENDING, self.shared.pending.get() as f64, &[]);
        }
    }

    /// Applies the bus-wide `max_pending` bound before a handler delivery is
    /// made: `None` to go ahead, else why the delivery is lost.
    ///
    /// Checked before the delivery counts as pending, so emitters blocked
    /// here hold no pending count of their own and wait only on deliveries
    /// that are queued or running. Concurrent emitters can overshoot the
    /// bound by at most one delivery each.
    fn admit(
        &self,
        event: &Event,
        sub: &Arc<Subscription>,
        queue: &Queue<Delivery>,
        terminal: bool,
        after: &mut AfterDelivery,
    ) -> Option<DropReason> {
        let (max, overflow) = self.config.max_pending?;
        let max = max as u64;
        if terminal || self.shared.pending.get() < max {
            return None;
        }
        let may_block = self.may_block(after);
        let deadline = match overflow {
            Overflow::Block if may_block => None,
            Overflow::BlockTimeout(d) if may_block => Some(Instant::now() + d),
            Overflow::DropOldest => {
                return match queue.evict_oldest() {
                    Some(evicted) => {
                        self.lose(sub, evicted, DropReason::MaxPending, after);
                        None
                    }
                    None => Some(DropReason::MaxPending),
                };
            }
            Overflow::Error => {
                after.refuse(|| EmitError::PendingFull {
                    event_id: event.event_id(),
                    max_pending: max as usize,
                    subscription_label: sub.label(),
                });
                return Some(DropReason::Refused);
            }
            Overflow::Block => {
                after.refuse(|| EmitError::WouldDeadlock {
                    reason: format!(
                        "max_pending ({max}) is reached and its policy is Block, but waiting \
                         here (inside a handler, or on the current-thread runtime that \
                         drains the queues) would wait on itself"
                    ),
                });
                return Some(DropReason::Refused);
            }
            Overflow::DropNewest | Overflow::BlockTimeout(_) => {
                return Some(DropReason::MaxPending);
            }
        };
        crate::queue::wake_all(Some(&mut after.wakes));
        if block_here(|| self.shared.pending.wait_below(max, deadline)) {
            None
        } else {
            Some(DropReason::MaxPending)
        }
    }

    /// Whether this dispatch may wait for room in a queue: not inside a
    /// handler, nor on the current-thread runtime that drains the queues.
    /// Worked out once per dispatch, on first need.
    fn may_block(&self, after: &mut AfterDelivery) -> bool {
        *after.may_block.get_or_insert_with(|| {
            !reentry::dispatching_in_handler() && !self.blocking_would_deadlock()
        })
    }

    /// A delivery `admit` turned away: offered, then lost.
    fn refuse(
        &self,
        sub: &Arc<Subscription>,
        delivery: Delivery,
        reason: DropReason,
        after: &mut AfterDelivery,
    ) {
        sub.counters.offered.fetch_add(1, Ordering::Relaxed);
        self.lose(sub, delivery, reason, after);
    }

    /// Accounts for an item a subscriber lost: counted, dead-lettered,
    /// announced later, and whoever waits for it told.
    fn lose<T: Discard>(
        &self,
        sub: &Arc<Subscription>,
        item: T,
        reason: DropReason,
        after: &mut AfterDelivery,
    ) {
        if reason != DropReason::Closed && !retrying() {
            if let Some(event) = item.event() {
                self.dead_letter(Failure {
                    event: event.clone(),
                    subscription: Some((sub.id, sub.name.as_deref().map(str::to_owned))),
                    reason: DeadLetterReason::OverflowDrop,
                    error: format!("dropped by a full queue ({})", reason.as_str()),
                    targets: Vec::new(),
                });
            }
        }
        item.discard(reason);
        self.count_drop(sub, reason);
        if !after.drops.iter().any(|s| s.id == sub.id) {
            after.drops.push(sub.clone());
        }
    }

    fn count_drop(&self, sub: &Subscription, reason: DropReason) {
        sub.counters.dropped[reason.index()].fetch_add(1, Ordering::Relaxed);
        sub.counters.unannounced.fetch_add(1, Ordering::Relaxed);
        self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        if let Some(metrics) = &self.config.metrics {
            metrics.counter(
                metric::EVENTS_DROPPED_TOTAL,
                1,
                &[
                    (metric::label::REASON, reason.as_str()),
                    (metric::label::SUBSCRIPTION, &sub.metric_label),
                ],
            );
        }
        tracing::debug!(subscription = %sub.label(), reason = reason.as_str(), "event dropped");
    }

    /// Adds a failure to the dead letter queue, if the bus has one.
    pub(crate) fn dead_letter(&self, failure: Failure) {
        let Some(dlq) = &self.config.dead_letters else {
            return;
        };
        let reason = failure.reason;
        dlq.push(failure);
        if let Some(metrics) = &self.config.metrics {
            metrics.counter(
                metric::DEAD_LETTERS_TOTAL,
                1,
                &[(metric::label::REASON, reason.as_str())],
            );
            metrics.gauge(metric::DEAD_LETTERS, dlq.len() as f64, &[]);
        }
    }

    fn metric_counter(&self, name: &'static str, labels: &[(&'static str, &str)]) {
        if let Some(metrics) = &self.config.metrics {
            metrics.counter(name, 1, labels);
        }
    }

    /// Publishes `system.events_dropped` for a subscriber that lost events,
    /// at most once per interval; drops in between are summed into the next.
    fn announce_drops(self: &Arc<Self>, event: &Event, sub: &Subscription) {
        if SELF_REPORTED.contains(&event.event_type()) {
            return;
        }
        {
            let mut at = sub
                .counters
                .announced_at
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            if at.is_some_and(|t| now.duration_since(t) < DROP_ANNOUNCE_INTERVAL) {
                return;
            }
            *at = Some(now);
        }
        let dropped = sub.counters.unannounced.swap(0, Ordering::Relaxed);
        if dropped == 0 {
            return;
        }
        let by_reason: serde_json::Map<String, Value> = DropReason::ALL
            .iter()
            .map(|r| {
                (
                    r.as_str().to_owned(),
                    json!(sub.counters.dropped[r.index()].load(Ordering::Relaxed)),
                )
            })
            .filter(|(_, n)| n != &json!(0))
            .collect();
        let data = json!({
            "subscription_id": sub.id,
            "subscription_name": sub.name.as_deref(),
            "dropped": dropped,
            "dropped_total": sub.counters.dropped_total(),
            "by_reason": by_reason,
            "event_type": event.event_type(),
        });
        let result = Event::builder("system.events_dropped")
            .data(data)
            .source("nerve")
            .build()
            .map_err(EmitError::from)
            .and_then(|e| self.dispatch(e, None));
        if let Err(e) = result {
            tracing::debug!(error = %e, "system.events_dropped not published");
        }
    }

    /// Counts a fault of the sink and publishes it as `system.journal_error`.
    /// May run on the sink's writer thread.
    pub(crate) fn sink_fault(self: &Arc<Self>, fault: SinkFault) {
        self.shared.journal_errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(kind = fault.kind.as_str(), message = %fault.message, "journal error");
        if let (SinkErrorKind::Serialize, Some(event)) = (fault.kind, &fault.event) {
            self.dead_letter(Failure {
                event: event.clone(),
                subscription: None,
                reason: DeadLetterReason::SerializationError,
                error: fault.message.clone(),
                targets: Vec::new(),
            });
        }
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        let data = json!({
            "kind": fault.kind.as_str(),
            "error": fault.message,
            "event_id": fault.event.as_ref().map(|e| e.event_id().to_string()),
            "event_type": fault.event.as_ref().map(|e| e.event_type().to_owned()),
        });
        let mut builder = Event::builder(JOURNAL_ERROR).data(data).source("nerve");
        if let Some(id) = fault.event.as_ref().and_then(Event::correlation_id) {
            builder = builder.correlation_id(id.clone());
        }
        let result = builder
            .build()
            .map_err(EmitError::from)
            .and_then(|e| self.dispatch(e, None));
        if let Err(e) = result {
            tracing::debug!(error = %e, "system.journal_error not published");
        }
    }

    /// Refuses an `emit_and_wait` that would wait on itself.
    fn check_wait(&self, event: &Event, route: &Route, mode: WaitMode) -> Result<(), EmitError> {
        if mode == WaitMode::Blocking && self.blocking_would_deadlock() {
            return Err(EmitError::WouldDeadlock {
                reason: format!(
                    "event {} has async handlers, and blocking this current-thread runtime would stop them; \
                     use emit_and_wait().await",
                    event.event_type()
                ),
            });
        }
        if let Some(chain) = reentry::chain() {
            for sub in route.subscriptions.iter().filter(|s| s.is_async()) {
                let me = Blocked {
                    bus: self.id,
                    subscription: sub.id,
                };
                if chain.contains(&me) {
                    return Err(EmitError::WouldDeadlock {
                        reason: format!(
                            "{} handles {} but is itself running or waiting higher up on this task",
                            sub.label(),
                            event.event_type()
                        ),
                    });
                }
            }
            // Each async handler of this bus blocked here holds one of its
            // permits until the wait ends; holding all of them, they leave
            // none for the handlers waited on.
            if let Some(max) = self.config.max_concurrent_handlers {
                let held = chain.iter().filter(|b| b.bus == self.id).count();
                if held >= max {
                    return Err(EmitError::WouldDeadlock {
                        reason: format!(
                            "the async handlers waiting on this task hold all {max} of the bus's \
                             max_concurrent_handlers permits, so the handlers of {} could never start",
                            event.event_type()
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    #[inline]
    fn finish_inline(
        &self,
        event: &Event,
        sub: &Arc<Subscription>,
        outcome: Outcome,
        elapsed: Duration,
        waiter: &Option<(Waiter, WaitMode)>,
        after: &mut AfterDelivery,
    ) {
        self.count(sub, &outcome, elapsed);
        if let Outcome::Halted(reason) = &outcome {
            after
                .halt
                .get_or_insert_with(|| (sub.clone(), reason.clone()));
        }
        if let Some((w, _)) = waiter {
            let _ = w.send(HandlerOutcome {
                subscription: sub.id,
                name: sub.name.as_deref().map(str::to_owned),
                outcome: outcome.clone(),
                elapsed,
            });
        }
        if is_failure(&outcome) {
            after.failures.push((sub.clone(), outcome));
        } else if !matches!(outcome, Outcome::Delivered) {
            tracing::debug!(subscription = %sub.label(), event_type = event.event_type(), ?outcome, "inline handler outcome");
        }
    }

    #[inline(always)]
    fn count(&self, sub: &Subscription, outcome: &Outcome, elapsed: Duration) {
        if let Some(metrics) = &self.config.metrics {
            self.count_metrics(&**metrics, sub, outcome, elapsed);
        }
        let (s, c) = (&self.shared, &sub.counters);
        let pairs: &[(&AtomicU64, &AtomicU64)] = match outcome {
            Outcome::Delivered => &[(&s.delivered, &c.succeeded)],
            Outcome::Failed(_) => &[(&s.failed, &c.failed)],
            Outcome::Panicked(_) => &[(&s.failed, &c.failed), (&s.panicked, &c.panicked)],
            Outcome::TimedOut(_) => &[(&s.timed_out, &c.timed_out)],
            Outcome::Halted(_) => &[(&s.halted, &c.halted)],
            Outcome::Abandoned | Outcome::Dropped(_) => &[],
        };
        for (bus, one) in pairs {
            bus.fetch_add(1, Ordering::Relaxed);
            one.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn count_metrics(
        &self,
        metrics: &dyn nerve_core::metrics::Metrics,
        sub: &Subscription,
        outcome: &Outcome,
        elapsed: Duration,
    ) {
        use nerve_core::metrics::names::handler_failure;
        let label = [(metric::label::SUBSCRIPTION, &*sub.metric_label)];
        if matches!(outcome, Outcome::Abandoned | Outcome::Dropped(_)) {
            return;
        }
        metrics.counter(metric::EVENTS_DELIVERED_TOTAL, 1, &label);
        metrics.histogram(
            metric::HANDLER_DURATION_SECONDS,
            elapsed.as_secs_f64(),
            &label,
        );
        let failure = match outcome {
            Outcome::Failed(_) => handler_failure::ERROR,
            Outcome::Panicked(_) => handler_failure::PANIC,
            Outcome::TimedOut(_) => handler_failure::TIMEOUT,
            _ => return,
        };
        metrics.counter(
            metric::HANDLER_FAILURES_TOTAL,
            1,
            &[
                (metric::label::REASON, failure),
                (metric::label::SUBSCRIPTION, &sub.metric_label),
            ],
        );
    }

    /// Counts a queued delivery's outcome and reports it if it failed;
    /// `dead_letter` says whether a failure becomes a dead letter (not for
    /// retries of one).
    pub(crate) fn record(
        self: &Arc<Self>,
        event: &Event,
        sub: &Subscription,
        outcome: &Outcome,
        elapsed: Duration,
        dead_letter: bool,
    ) {
        self.count(sub, outcome, elapsed);
        if is_failure(outcome) {
            self.report_failure(event, sub, outcome, dead_letter);
        }
    }

    /// Publishes `system.handler_error` for a failed delivery, and records
    /// it as a dead letter if `dead_letter`.
    fn report_failure(
        self: &Arc<Self>,
        event: &Event,
        sub: &Subscription,
        outcome: &Outcome,
        dead_letter: bool,
    ) {
        let error = outcome.error().unwrap_or_default();
        if dead_letter {
            let reason = match outcome {
                Outcome::Panicked(_) => DeadLetterReason::HandlerPanic,
                Outcome::TimedOut(_) => DeadLetterReason::HandlerTimeout,
                _ => DeadLetterReason::HandlerError,
            };
            self.dead_letter(Failure {
                event: event.clone(),
                subscription: Some((sub.id, sub.name.as_deref().map(str::to_owned))),
                reason,
                error: error.clone(),
                targets: Vec::new(),
            });
        }
        tracing::warn!(
            subscription = %sub.label(),
            event_type = event.event_type(),
            event_id = %event.event_id(),
            kind = outcome.kind(),
            %error,
            "handler failed",
        );
        if SELF_REPORTED.contains(&event.event_type()) {
            return;
        }
        let data = json!({
            "event_id": event.event_id(),
            "event_type": event.event_type(),
            "subscription_id": sub.id,
            "subscription_name": sub.name.as_deref(),
            "kind": outcome.kind(),
            "error": error,
            "correlation_id": event.correlation_id(),
        });
        let mut report = Event::builder("system.handler_error")
            .data(data)
            .source("nerve")
            .causation_id(event.event_id());
        if let Some(id) = event.correlation_id() {
            report = report.correlation_id(id);
        }
        if let Some(run) = event.run_id() {
            report = report.run_id(run);
        }
        let result = report
            .build()
            .map_err(EmitError::from)
            .and_then(|e| self.dispatch(e, None));
        if let Err(e) = result {
            tracing::debug!(error = %e, "system.handler_error not published");
        }
    }

    /// Redelivers a dead letter's event: to the subscriptions that failed,
    /// or, for an entry that belongs to none, through the whole bus. `Err`
    /// with the failure's text.
    pub(crate) async fn redeliver(self: &Arc<Self>, entry: &DeadLetter) -> Result<(), String> {
        if self.closed.load(Ordering::Acquire) {
            return Err("the bus is shut down".to_owned());
        }
        let targets: Vec<SubscriptionId> = if entry.targets.is_empty() {
            entry.subscription_id.into_iter().collect()
        } else {
            entry.targets.clone()
        };
        if targets.is_empty() {
            return self.re_emit(entry.event.clone()).await;
        }
        for id in targets {
            let sub = self
                .find_retry_target(id, entry)
                .ok_or_else(|| format!("subscription {id} no longer exists"))?;
            match self.deliver_to(&sub, &entry.event).await {
                Outcome::Delivered => {}
                other => return Err(other.error().unwrap_or_default()),
            }
        }
        Ok(())
    }

    /// The subscription a retry goes to: the same id with the same name; for
    /// an entry restored after a restart (ids start again), the subscription
    /// with the entry's name.
    fn find_retry_target(
        &self,
        id: SubscriptionId,
        entry: &DeadLetter,
    ) -> Option<Arc<Subscription>> {
        let routes = self.routes.load();
        let name = entry.subscription_name.as_deref();
        let same = |s: &&Arc<Subscription>| s.id == id && s.name.as_deref() == name;
        if let Some(sub) = routes.subscriptions().find(same) {
            return Some(sub.clone());
        }
        let name = name?;
        routes
            .subscriptions()
            .filter(|s| s.name.as_deref() == Some(name))
            .min_by_key(|s| s.id)
            .cloned()
    }

    /// Emits `event` again and waits for every handler.
    async fn re_emit(self: &Arc<Self>, event: Event) -> Result<(), String> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let dispatched = while_retrying(|| self.dispatch(event, Some((tx, WaitMode::Async))))
            .map_err(|e| e.to_string())?;
        let mut outcomes = Vec::new();
        while let Some(outcome) = rx.recv().await {
            outcomes.push(outcome);
        }
        let report = dispatched
            .into_report(outcomes)
            .map_err(|e| e.to_string())?;
        if report.outcomes.is_empty() {
            return Err("no subscription matched the event".to_owned());
        }
        match report.outcomes.iter().find(|o| !o.outcome.is_delivered()) {
            Some(o) => Err(o.outcome.error().unwrap_or_default()),
            None => Ok(()),
        }
    }

    /// Delivers `event` to one subscription, as a retry, and waits for the
    /// outcome. A retry's delivery is never dropped by a full queue (it is
    /// queued as a terminal event would be).
    async fn deliver_to(self: &Arc<Self>, sub: &Arc<Subscription>, event: &Event) -> Outcome {
        // A queue counts what it accepts as offered; what it turns away is
        // counted here.
        let (queue, slot) = match &sub.kind {
            HandlerKind::Sync(f) => {
                let _ambient = correlation::enter_ambient(Ambient::of_event(event));
                let limit = sub.timeout.or(self.config.sync_timeout());
                let (outcome, elapsed) =
                    while_retrying(|| self.call_sync(f, event, limit, sub, HandlerMode::Inline));
                self.record(event, sub, &outcome, elapsed, false);
                return outcome;
            }
            HandlerKind::Stream(queue) => {
                let item = StreamItem::Event(event.clone().terminal());
                return match queue.push(item, false, |_| {}) {
                    Pushed::Queued(evicted) => {
                        if let Some((item, reason)) = evicted {
                            let mut after = AfterDelivery::default();
                            while_retrying(|| self.lose(sub, item, reason, &mut after));
                        }
                        Outcome::Delivered
                    }
                    Pushed::Withdrawn(items) => {
                        for _ in items.iter().filter(|i| i.event().is_some()) {
                            self.count_drop(sub, DropReason::Closed);
                        }
                        Outcome::Dropped(DropReason::Closed)
                    }
                    _ => {
                        sub.counters.offered.fetch_add(1, Ordering::Relaxed);
                        self.count_drop(sub, DropReason::Closed);
                        Outcome::Dropped(DropReason::Closed)
                    }
                };
            }
            HandlerKind::Queued(slot) => (&slot.queue, None),
            HandlerKind::Async(slot) => (&slot.queue, Some(slot)),
        };
        let runtime = match slot {
            Some(_) => match self.runtime() {
                Some(runtime) => Some(runtime),
                None => return Outcome::Failed("no tokio runtime to run the async handler".into()),
            },
            None => None,
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let delivery = while_retrying(|| {
            Delivery::new(
                event.clone(),
                sub.clone(),
                Some(tx),
                None,
                true,
                false,
                self.shared.clone(),
            )
        });
        match queue.push(delivery, false, |_| {}) {
            Pushed::Queued(evicted) => {
                if let Some((item, reason)) = evicted {
                    let mut after = AfterDelivery::default();
                    while_retrying(|| self.lose(sub, item, reason, &mut after));
                }
            }
            Pushed::Closed(d) | Pushed::Full(d) | Pushed::WouldBlock(d) | Pushed::Dropped(d, _) => {
                sub.counters.offered.fetch_add(1, Ordering::Relaxed);
                d.discard(DropReason::Closed);
                self.count_drop(sub, DropReason::Closed);
                return Outcome::Dropped(DropReason::Closed);
            }
            Pushed::Withdrawn(items) => {
                for d in items {
                    d.discard(DropReason::Closed);
                    self.count_drop(sub, DropReason::Closed);
                }
                return Outcome::Dropped(DropReason::Closed);
            }
        }
        if let (Some(slot), Some(runtime)) = (slot, &runtime) {
            self.ensure_worker(slot, runtime);
        }
        match rx.recv().await {
            Some(o) => o.outcome,
            None => Outcome::Abandoned,
        }
    }

    /// Starts the subscription's worker on `runtime` unless one is running.
    fn ensure_worker(self: &Arc<Self>, slot: &AsyncSlot, runtime: &Handle) {
        let mut worker = slot.worker.lock().unwrap_or_else(PoisonError::into_inner);
        if worker.as_ref().is_some_and(|w| !w.task.is_finished()) {
            return;
        }
        // First delivery, or the worker's runtime went away: start one here.
        let started = worker::spawn(
            Arc::downgrade(self),
            runtime,
            slot.queue.clone(),
            slot.concurrency,
        );
        {
            let mut workers = self.workers.lock().unwrap_or_else(PoisonError::into_inner);
            workers.retain(|w| !w.is_finished());
            workers.push(started.task.abort_handle());
        }
        *worker = Some(started);
    }

    fn stats(&self) -> BusStats {
        let table = self.routes.load();
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let s = &self.shared;
        let mut patterns = BTreeSet::new();
        let mut subscribers = Vec::new();
        let mut handler_failures = std::collections::BTreeMap::new();
        for sub in table.subscriptions() {
            patterns.extend(sub.patterns.iter().map(|p| p.as_str().to_owned()));
            let stats = SubscriberStats::of(sub);
            let failures = stats.failed + stats.timed_out;
            if failures > 0 {
                // Names need not be unique: subscriptions sharing one add up.
                *handler_failures.entry(sub.label()).or_insert(0) += failures;
            }
            subscribers.push(stats);
        }
        BusStats {
            subscriptions: SubscriptionStats {
                active: table.len(),
                total: get(&s.subscriptions_total),
                patterns: patterns.into_iter().collect(),
            },
            events: EventStats {
                emitted: get(&self.seq).saturating_sub(get(&self.emitted_base)),
                rejected: get(&s.rejected),
                delivered: get(&s.delivered),
                dropped: get(&s.dropped),
                journal_errors: get(&s.journal_errors),
                failed: get(&s.failed),
                panicked: get(&s.panicked),
                timed_out: get(&s.timed_out),
                halted: get(&s.halted),
                abandoned: get(&s.abandoned),
            },
            by_event_type: self
                .by_type
                .iter()
                .map(|e| (e.key().to_string(), get(e.value())))
                .chain(std::iter::once((
                    "(other)".to_owned(),
                    get(&self.other_types),
                )))
                .filter(|(_, n)| *n > 0)
                .collect(),
            handler_failures,
            subscribers,
            pending: s.pending.get(),
            history_size: self.history.len(),
            history_capacity: self.history.capacity(),
            runs: {
                let runs = self.runs.lock();
                RunStats {
                    tracked: runs.len(),
                    max_runs: self.runs.max_runs(),
                    events_evicted: runs.events_evicted,
                    runs_evicted: runs.runs_evicted,
                }
            },
        }
    }

    /// Closes the bus; `Some` with the earlier report if it was closed already.
    fn begin_shutdown(&self) -> Option<ShutdownReport> {
        let already = self.closed.swap(true, Ordering::AcqRel);
        if already {
            let report = *self.shutdown.lock().unwrap_or_else(PoisonError::into_inner);
            // A concurrent first call may still be draining; it will finish.
            return Some(report.unwrap_or(ShutdownReport {
                drained: false,
                abandoned: 0,
            }));
        }
        None
    }

    /// The last `Bus` handle was dropped: shut down as `shutdown_blocking`
    /// does, waiting for queued deliveries where that cannot wait on itself.
    fn last_handle_dropped(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let timeout = self.config.shutdown_timeout;
        let drained = if reentry::in_handler() || self.blocking_would_deadlock() {
            self.shared.pending.get() == 0
        } else {
            block_here(|| self.shared.pending.wait_blocking(Some(timeout)))
        };
        let report = self.finish_shutdown(drained);
        if !report.drained {
            announce_abandoned(report.abandoned, "dropping the last bus handle");
        }
    }

    /// Flushes the sink, counting a failure.
    fn flush_sink(&self) {
        if let Some(sink) = &self.config.sink {
            let timeout = self.config.shutdown_timeout;
            if let Err(e) = block_here(|| sink.flush(timeout)) {
                self.shared.journal_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "journal flush failed");
            }
        }
    }

    fn finish_shutdown(&self, drained: bool) -> ShutdownReport {
        let abandoned = self.shared.pending.get();
        let _writer = self
            .write_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let table = self.routes.swap(RouteTable::default());
        for sub in table.subscriptions() {
            sub.active.store(false, Ordering::Release);
            sub.close_queue();
            if !drained {
                // What is still queued will not run: dropping it counts it
                // abandoned and tells any waiter.
                match &sub.kind {
                    HandlerKind::Queued(slot) => drop(slot.queue.take_all()),
                    HandlerKind::Async(slot) => drop(slot.queue.take_all()),
                    HandlerKind::Sync(_) | HandlerKind::Stream(_) => {}
                }
            }
            if let HandlerKind::Async(slot) = &sub.kind {
                if let Some(worker) = slot
                    .worker
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take()
                {
                    if !drained {
                        // Cancelled deliveries are dropped, which counts them abandoned.
                        worker.task.abort();
                    }
                }
            }
        }
        let workers =
            std::mem::take(&mut *self.workers.lock().unwrap_or_else(PoisonError::into_inner));
        if !drained {
            // Workers of unsubscribed subscriptions may still run deliveries.
            for worker in workers {
                worker.abort();
            }
        }
        if let Some(sink) = &self.config.sink {
            let timeout = self.config.shutdown_timeout;
            if let Err(e) = block_here(|| sink.close(timeout)) {
                self.shared.journal_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "journal close failed");
            }
        }
        let report = ShutdownReport { drained, abandoned };
        *self.shutdown.lock().unwrap_or_else(PoisonError::into_inner) = Some(report);
        report
    }
}

/// The queue of an async or queued handler, as its options ask: 65,536
/// events and `Overflow::Block` unless they say otherwise.
fn handler_queue(options: &Subscribe) -> Arc<Queue<Delivery>> {
    Arc::new(Queue::new(
        options.queue_capacity.unwrap_or(DEFAULT_HANDLER_QUEUE),
        options.overflow.unwrap_or(Overflow::Block),
    ))
}

thread_local! {
    /// Set while a dead letter is being retried on this thread, so that a
    /// retry that fails again updates its entry instead of adding another.
    static RETRYING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn retrying() -> bool {
    RETRYING.with(std::cell::Cell::get)
}

/// Runs `f` with `retrying()` true on this thread.
fn while_retrying<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            RETRYING.with(|r| r.set(self.0));
        }
    }
    let _restore = Restore(RETRYING.with(|r| r.replace(true)));
    f()
}

/// Runs `wait`, which blocks this thread until async handlers finish.
///
/// On a worker thread of a multi-thread runtime, a task this thread just woke
/// can sit in the worker's LIFO slot, which other workers never steal, so
/// blocking there could wait forever on a handler that never starts.
/// `block_in_place` hands the worker's queued tasks to another thread first.
fn block_here<R>(wait: impl FnOnce() -> R) -> R {
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(wait)
        }
        _ => wait(),
    }
}

/// Says that a shutdown nobody gets a report of (a drop) abandoned queued
/// deliveries: through `tracing`, or on stderr when no `tracing` subscriber
/// was ever set, so that the loss is never silent.
#[cold]
fn announce_abandoned(abandoned: u64, by: &str) {
    tracing::warn!(abandoned, "{by} abandoned queued deliveries");
    if !tracing::dispatcher::has_been_set() {
        eprintln!(
            "nerve: warning: {by} abandoned {abandoned} queued deliveries (on a current-thread \
             runtime the bus cannot wait for async handlers; call `bus.shutdown().await` first)"
        );
    }
}

fn is_failure(outcome: &Outcome) -> bool {
    matches!(
        outcome,
        Outcome::Failed(_) | Outcome::Panicked(_) | Outcome::TimedOut(_)
    )
}
