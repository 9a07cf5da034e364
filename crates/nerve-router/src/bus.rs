//! The [`Bus`]: publish events, route them to handlers, wait, flush, shut down.
//!
//! This file is the public API and its docs; the work happens in
//! [`dispatch`](crate::dispatch) (the path of an event), the
//! [`ledger`](crate::ledger) (the bookkeeping) and the modules they use.

use std::future::Future;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Instant;

use nerve_core::metrics::Metrics;
use nerve_core::query::HistoryQuery;
use nerve_core::sink::{FaultReporter, SinkError};
use nerve_core::{Event, EventId, Pattern, TypedEvent, Value};
use tokio::runtime::Handle;

use crate::attachment::{Attachment, AttachmentId};
use crate::config::Config;
use crate::dead_letter::Redeliver;
use crate::dispatch::{Data, Dispatched, Dispatcher, WaitMode};
use crate::error::{EmitError, EmitManyError, SubscribeError};
use crate::handler::{self, HandlerError, IntoHandlerResult};
use crate::queue::{Overflow, Queue};
use crate::reentry::{self, block_here};
use crate::report::{DeliveryReport, Outcomes, Waiter};
use crate::stats::BusStats;
use crate::stream::{EventStream, StreamOptions};
use crate::subscribe::{IntoPatterns, Subscribe, SubscriptionId};
use crate::subscription::{AsyncSlot, Delivery, HandlerKind, QueuedSlot, StreamItem, Subscription};
use crate::turn::Turn;
use crate::worker;

/// Queue capacity of async and queued handlers unless `Subscribe::queued` says.
const DEFAULT_HANDLER_QUEUE: usize = 65_536;

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

/// What the `Bus` handles share: the engine, and what only the handles use.
pub(crate) struct BusInner {
    /// Live `Bus` handles (not `WeakBus`es, nor the workers' weak
    /// references): the last one to go shuts the bus down.
    handles: AtomicU64,
    core: Arc<Dispatcher>,
    next_subscription: AtomicU64,
    shutdown: Mutex<Option<ShutdownReport>>,
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
            .field("id", &self.inner.core.id)
            .field("subscriptions", &self.inner.core.routes.load().len())
            .field("closed", &self.inner.core.gate.is_closed())
            .finish_non_exhaustive()
    }
}

impl Bus {
    /// A bus with the default settings (see [`BusBuilder`](crate::BusBuilder)).
    pub fn new() -> Self {
        Self::from_config(Config::default())
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
        let core = Dispatcher::new(NEXT_BUS_ID.fetch_add(1, Ordering::Relaxed), config);
        if let Some(dlq) = &core.config.dead_letters {
            let core_weak: std::sync::Weak<Dispatcher> = Arc::downgrade(&core);
            let redeliver: std::sync::Weak<dyn Redeliver> = core_weak;
            dlq.attach(redeliver);
        }
        if let Some(sink) = &core.config.sink {
            let ledger = Arc::downgrade(&core.ledger);
            sink.attach(FaultReporter::new(move |fault| {
                if let Some(ledger) = ledger.upgrade() {
                    ledger.sink_fault(fault);
                }
            }));
        }
        Self {
            inner: Arc::new(BusInner {
                handles: AtomicU64::new(1),
                core,
                next_subscription: AtomicU64::new(1),
                shutdown: Mutex::new(None),
            }),
        }
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
        if let Err(e) = worker::spawn_thread(
            Arc::downgrade(&self.inner.core.caller),
            name,
            queue,
            handler,
        ) {
            self.inner.core.routes.remove(id);
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
            running: Arc::default(),
            turn: Arc::new(Turn::new()),
            alone: OnceLock::new(),
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
        self.inner.core.routes.remove(id)
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
    /// handler, nesting too deep, [`EmitError::Halted`] when a handler asked
    /// to stop, or [`EmitError::NotRecorded`] when a durable (by default
    /// terminal) event could not be confirmed on disk, or an inline handler
    /// that keeps events elsewhere (a NATS export) could not confirm it
    /// ([`HandlerError::not_recorded`](crate::HandlerError::not_recorded));
    /// in each, the event was still delivered to every handler.
    pub fn emit(
        &self,
        event_type: impl AsRef<str>,
        data: impl Into<Value>,
    ) -> Result<EventId, EmitError> {
        self.inner
            .core
            .emit(event_type.as_ref(), Data::Owned(data.into()))
    }

    /// Publishes an event whose payload is shared rather than copied: the
    /// event holds the `Arc`, so emitting one payload many times (a batch
    /// announced to several topics, a config broadcast) costs no deep copy,
    /// and the last holder frees it, not necessarily the emitting thread.
    /// Otherwise as [`emit`](Self::emit).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use nerve::{Bus, Event};
    ///
    /// let bus = Bus::new();
    /// let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    /// let sink = Arc::clone(&seen);
    /// bus.subscribe("batch.*", move |e: &Event| sink.lock().unwrap().push(e.clone()))?;
    ///
    /// let payload = Arc::new(nerve::json!({"rows": [1, 2, 3]}));
    /// bus.emit_shared("batch.ready", Arc::clone(&payload))?;
    /// bus.emit_shared("batch.announced", Arc::clone(&payload))?;
    ///
    /// let seen = seen.lock().unwrap();
    /// assert!(std::ptr::eq(seen[0].data(), &*payload));
    /// assert!(std::ptr::eq(seen[1].data(), &*payload));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`emit`](Self::emit).
    pub fn emit_shared(
        &self,
        event_type: impl AsRef<str>,
        data: Arc<Value>,
    ) -> Result<EventId, EmitError> {
        self.inner
            .core
            .emit(event_type.as_ref(), Data::Shared(data))
    }

    /// Publishes a built event (see [`Event::builder`]); as [`emit`](Self::emit).
    ///
    /// # Errors
    ///
    /// As [`emit`](Self::emit).
    pub fn emit_event(&self, event: Event) -> Result<EventId, EmitError> {
        self.inner.core.dispatch(event, None)?.into_result()
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
    /// Called from a task of the bus's runtime, this may run the delivery
    /// to an idle async handler with `concurrency(1)` itself, on the
    /// calling task, instead of waking the handler's worker: the handler
    /// still sees its events one at a time and in queue order (whatever was
    /// queued ahead of this event runs first), with the same correlation
    /// id, timeout, panic isolation and accounting. A handler that does not
    /// finish in its first poll goes on in a task of its own. Handlers with
    /// more concurrency, and emitters on another runtime or thread, always
    /// go through the worker.
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
        event_type: impl AsRef<str>,
        data: impl Into<Value>,
    ) -> Result<DeliveryReport, EmitError> {
        let (waiter, outcomes) = Waiter::new();
        let dispatched = self.inner.core.emit_waiting(
            event_type.as_ref(),
            data.into(),
            waiter,
            WaitMode::Async,
        )?;
        self.wait_async(dispatched, outcomes).await
    }

    /// [`emit_and_wait`](Self::emit_and_wait) for a built event.
    ///
    /// # Errors
    ///
    /// As [`emit_and_wait`](Self::emit_and_wait).
    pub async fn emit_event_and_wait(&self, event: Event) -> Result<DeliveryReport, EmitError> {
        let (waiter, outcomes) = Waiter::new();
        let dispatched = self
            .inner
            .core
            .dispatch(event, Some((waiter, WaitMode::Async)))?;
        self.wait_async(dispatched, outcomes).await
    }

    /// The rest of an `emit_and_wait`, once its event was dispatched.
    async fn wait_async(
        &self,
        mut dispatched: Dispatched,
        outcomes: Outcomes,
    ) -> Result<DeliveryReport, EmitError> {
        if let Some((turn, ours)) = dispatched.take_turn() {
            // An idle async handler's delivery runs here, on this task,
            // rather than on its worker's (`turn.rs`); finished in this poll.
            self.inner.core.run_in_turn(turn, ours).await;
        }
        dispatched.into_report(outcomes.await)
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
        event_type: impl AsRef<str>,
        data: impl Into<Value>,
    ) -> Result<DeliveryReport, EmitError> {
        let (waiter, outcomes) = Waiter::new();
        let dispatched = self.inner.core.emit_waiting(
            event_type.as_ref(),
            data.into(),
            waiter,
            WaitMode::Blocking,
        )?;
        Self::wait_blocking(dispatched, outcomes)
    }

    /// [`emit_and_wait_blocking`](Self::emit_and_wait_blocking) for a built event.
    ///
    /// # Errors
    ///
    /// As [`emit_and_wait_blocking`](Self::emit_and_wait_blocking).
    pub fn emit_event_and_wait_blocking(&self, event: Event) -> Result<DeliveryReport, EmitError> {
        let (waiter, outcomes) = Waiter::new();
        let dispatched = self
            .inner
            .core
            .dispatch(event, Some((waiter, WaitMode::Blocking)))?;
        Self::wait_blocking(dispatched, outcomes)
    }

    /// The rest of an `emit_and_wait_blocking`, once its event was
    /// dispatched.
    fn wait_blocking(
        dispatched: Dispatched,
        outcomes: Outcomes,
    ) -> Result<DeliveryReport, EmitError> {
        // `futures`' executor does not refuse to run inside a runtime; the
        // deadlock cases were refused by `dispatch`.
        let outcomes = block_here(|| futures::executor::block_on(outcomes));
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
        self.inner.core.ledger.in_flight.wait().await;
        self.inner.flush_sink();
    }

    /// The blocking twin of [`flush`](Self::flush). On a current-thread tokio
    /// runtime whose thread the handlers need, it returns at once; use
    /// `flush().await` there.
    pub fn flush_blocking(&self) {
        if reentry::in_handler() || self.inner.core.blocking_would_deadlock() {
            tracing::warn!("Bus::flush_blocking would wait on itself; returning without waiting");
            return;
        }
        block_here(|| self.inner.core.ledger.in_flight.wait_blocking(None));
        self.inner.flush_sink();
    }

    // ----- reading -----

    /// Recent events matching `query`, newest first unless it says otherwise.
    pub fn history(&self, query: &HistoryQuery) -> Vec<Event> {
        self.inner.core.history.query(query)
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
        match &self.inner.core.config.sink {
            Some(sink) => {
                self.inner.flush_sink();
                sink.query(query)
            }
            None => Ok(self.inner.core.history.query(query)),
        }
    }

    /// Empties the in-memory history.
    pub fn clear_history(&self) {
        self.inner.core.history.clear();
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> BusStats {
        BusStats::of(&self.inner.core)
    }

    /// Attaches `attachment`: from now on every [`stats`](Self::stats)
    /// snapshot carries its state and counters in
    /// [`BusStats::attachments`]. See [`attachment`](crate::attachment).
    pub fn attach(&self, attachment: Arc<dyn Attachment>) -> AttachmentId {
        self.inner.core.attachments.attach(attachment)
    }

    /// Removes an attachment; whether it was attached.
    pub fn detach(&self, id: AttachmentId) -> bool {
        self.inner.core.attachments.detach(id)
    }

    /// Which events this bus holds `emit` for until its sink has them:
    /// the terminal ones unless
    /// [`BusBuilder::durable_patterns`](crate::BusBuilder::durable_patterns)
    /// says otherwise.
    ///
    /// ```
    /// let bus = nerve::Bus::builder().durable_patterns(["checkpoint.*"])?.build()?;
    /// let checkpoint = nerve::Event::builder("checkpoint.saved").build()?;
    /// assert!(bus.durable().matches(&checkpoint));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn durable(&self) -> crate::config::Durable {
        self.inner.core.config.durable()
    }

    /// The redaction hook of the bus's journal (or other sink), if it has
    /// one ([`EventSink::redaction`](nerve_core::sink::EventSink::redaction)),
    /// so that what carries the bus's events out of the process can redact
    /// them as its journal does: a NATS bridge on the bus applies it to
    /// every event it exports unless told otherwise.
    ///
    /// ```
    /// let bus = nerve::Bus::new();
    /// assert!(bus.redaction().is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn redaction(&self) -> Option<nerve_core::sink::Redaction> {
        self.inner.core.config.sink.as_ref()?.redaction()
    }

    /// The metrics recorder the bus was built with
    /// ([`BusBuilder::metrics`](crate::BusBuilder::metrics)), if any, so
    /// that what is attached to the bus reports where the bus does.
    pub fn metrics(&self) -> Option<Arc<dyn Metrics>> {
        self.inner.core.config.metrics.clone()
    }

    /// Sets every counter to zero.
    pub fn reset_stats(&self) {
        let core = &self.inner.core;
        core.ledger.reset();
        core.emitted_base
            .store(core.seq.load(Ordering::Relaxed), Ordering::Relaxed);
        for sub in core.routes.load().subscriptions() {
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
        self.inner.core.gate.is_closed()
    }

    // ----- shutting down -----

    /// Stops accepting events, waits up to the shutdown timeout for the
    /// events accepted before to be recorded and their queued deliveries to
    /// run, cancels what is left, and removes every subscription.
    /// Idempotent: later calls return the first call's report.
    ///
    /// An emit racing with the shutdown is either refused
    /// ([`EmitError::Closed`]) or recorded before the journal is closed,
    /// never half-way.
    ///
    /// Handlers that hold a clone of the bus keep it alive; shutting down
    /// releases them.
    pub async fn shutdown(&self) -> ShutdownReport {
        if let Some(report) = self.inner.begin_shutdown() {
            return report;
        }
        let timeout = self.inner.core.config.shutdown_timeout;
        let start = Instant::now();
        let recorded = self.inner.core.gate.wait_empty_async(timeout).await;
        self.inner.accepted_recorded(recorded);
        let left = timeout.saturating_sub(start.elapsed());
        let drained = tokio::time::timeout(left, self.inner.core.ledger.in_flight.wait())
            .await
            .is_ok();
        self.inner.finish_shutdown(drained)
    }

    /// Shuts down as [`shutdown_blocking`](Self::shutdown_blocking) does,
    /// with `last` as the bus's last event: the bus stops accepting events
    /// first and waits (up to the shutdown timeout) for the events it
    /// accepted to be recorded, then `last` is emitted (recorded, durable if
    /// terminal, and delivered). So nothing emitted concurrently is
    /// numbered, journaled or kept in the history after it: the journal
    /// ends with `last`. Its handlers' own emits are refused as `Closed`.
    /// Used by [`signals`](crate::signals) for `system.interrupted`.
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
        let start = Instant::now();
        self.inner.wait_accepted();
        let emitted = {
            // Only around the emit: the wait below must not look like
            // blocking the runtime's own thread, which this is not.
            let _runtime = runtime.map(Handle::enter);
            self.inner.core.dispatch_last(last)
        };
        if let Err(e) = emitted {
            tracing::warn!(error = %e, "the last event was not emitted");
        }
        self.inner.drain_blocking(start)
    }

    /// The blocking twin of [`shutdown`](Self::shutdown).
    pub fn shutdown_blocking(&self) -> ShutdownReport {
        if let Some(report) = self.inner.begin_shutdown() {
            return report;
        }
        self.inner.close_blocking()
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
        let routes = &self.core.routes;
        let _writer = routes.writer();
        if self.core.gate.is_closed() {
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
        routes.store(routes.load().with(sub.clone()));
        self.core
            .ledger
            .totals
            .subscriptions_total
            .fetch_add(1, Ordering::Relaxed);
        Ok(sub)
    }

    /// Subscribes a stream; for a run, replays the run's log first.
    fn open_stream(
        &self,
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
        let routes = Arc::downgrade(&self.core.routes);
        if !replay_run {
            let sub = self.add_sub(patterns, subscribe, kind, run_id)?;
            return Ok(EventStream::new(queue, sub, routes, Vec::new()));
        }
        let run = options.run_id.clone().unwrap_or_default();
        // Holding the run log while subscribing: an emit of this run is
        // either in the snapshot or, recorded after it, routed to the new
        // subscription (see `Dispatcher::number`).
        let runs = &self.core.runs;
        let mut log = runs.lock();
        let (replay, closed) = match log.get(&run) {
            Some(log) => (log.events.iter().cloned().collect(), log.closed),
            None => (Vec::new(), false),
        };
        let sub = self.add_sub(patterns, subscribe, kind, run_id)?;
        if closed {
            let _ = queue.push(StreamItem::End, false, |_| {});
        } else {
            // Touch the run so that `close_run` knows it, and it is fresh.
            log.touch(&run, runs.max_runs());
        }
        drop(log);
        Ok(EventStream::new(queue, sub, routes, replay))
    }

    fn close_run(&self, run_id: &str) -> bool {
        let known = {
            let mut runs = self.core.runs.lock();
            match runs.get_mut(run_id) {
                Some(log) => {
                    log.closed = true;
                    true
                }
                None => false,
            }
        };
        for sub in self.core.routes.load().subscriptions() {
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

    /// Closes the bus; `Some` with the earlier report if it was closed already.
    fn begin_shutdown(&self) -> Option<ShutdownReport> {
        if !self.core.gate.close() {
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
        if !self.core.gate.close() {
            return;
        }
        let report = self.close_blocking();
        if !report.drained {
            announce_abandoned(report.abandoned, "dropping the last bus handle");
        }
    }

    /// The rest of a blocking shutdown once the gate is closed: waits for
    /// the emits accepted before to record their events, then for queued
    /// deliveries, within one shutdown timeout.
    fn close_blocking(&self) -> ShutdownReport {
        let start = Instant::now();
        self.wait_accepted();
        self.drain_blocking(start)
    }

    /// Waits, up to the shutdown timeout, for the emits that passed the
    /// gate before it closed to record their events. Blocking is safe on
    /// any thread: an emit holds its pass only while it runs, never across
    /// an await.
    fn wait_accepted(&self) {
        let recorded = self.core.gate.wait_empty(self.core.config.shutdown_timeout);
        self.accepted_recorded(recorded);
    }

    /// Says so if the emits accepted before the shutdown were still
    /// recording their events when the wait for them ended.
    fn accepted_recorded(&self, recorded: bool) {
        if !recorded {
            tracing::warn!(
                timeout = ?self.core.config.shutdown_timeout,
                "shutting down while events accepted before are still being recorded: \
                 they may follow the last event, or meet a closed journal (counted as journal errors)"
            );
        }
    }

    /// Waits for queued deliveries where that cannot wait on itself, for
    /// what is left of the shutdown timeout since `start`, then finishes
    /// the shutdown `begin_shutdown` started.
    fn drain_blocking(&self, start: Instant) -> ShutdownReport {
        let in_flight = &self.core.ledger.in_flight;
        let drained = if reentry::in_handler() || self.core.blocking_would_deadlock() {
            in_flight.get() == 0
        } else {
            let left = self
                .core
                .config
                .shutdown_timeout
                .saturating_sub(start.elapsed());
            block_here(|| in_flight.wait_blocking(Some(left)))
        };
        self.finish_shutdown(drained)
    }

    /// Flushes the sink, counting a failure.
    fn flush_sink(&self) {
        if let Some(sink) = &self.core.config.sink {
            let timeout = self.core.config.shutdown_timeout;
            if let Err(e) = block_here(|| sink.flush(timeout)) {
                self.core.ledger.sink_failed("flush", &e);
            }
        }
    }

    fn finish_shutdown(&self, drained: bool) -> ShutdownReport {
        let core = &self.core;
        let abandoned = core.ledger.in_flight.get();
        let _writer = core.routes.writer();
        let table = core.routes.swap(crate::routes::RouteTable::default());
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
                        worker.abort();
                    }
                }
            }
        }
        let workers =
            std::mem::take(&mut *core.workers.lock().unwrap_or_else(PoisonError::into_inner));
        if !drained {
            // Workers of unsubscribed subscriptions may still run deliveries.
            for worker in workers {
                worker.abort();
            }
        }
        if let Some(sink) = &core.config.sink {
            let timeout = core.config.shutdown_timeout;
            if let Err(e) = block_here(|| sink.close(timeout)) {
                core.ledger.sink_failed("close", &e);
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

/// Says that a shutdown nobody gets a report of (a drop) abandoned queued
/// deliveries: through `tracing`, or on stderr when no `tracing` subscriber
/// was ever set, so that the loss is never silent.
#[cold]
fn announce_abandoned(abandoned: u64, by: &str) {
    tracing::warn!(abandoned, "{by} abandoned queued deliveries");
    if !tracing::dispatcher::has_been_set() {
        // Not `eprintln!`: it panics when stderr is closed, and this runs in drops.
        let _ = writeln!(
            std::io::stderr(),
            "nerve: warning: {by} abandoned {abandoned} queued deliveries (on a current-thread \
             runtime the bus cannot wait for async handlers; call `bus.shutdown().await` first)"
        );
    }
}
