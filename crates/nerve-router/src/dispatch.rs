//! The path of one event, as a pipeline: [`accept`](Dispatcher::accept) it
//! (names, guards, correlation), [`route`](Dispatcher::route) it (the
//! subscriptions its type matches), [`number`](Dispatcher::number) it (`seq`,
//! terminal mark, lane and run log), [`journal`](Dispatcher::journal) it
//! (sink, history, counters), [`deliver`](Dispatcher::deliver) it to each
//! subscription, then [`settle`](Dispatcher::settle) what the deliveries
//! left (wake-ups, failure reports, drop reports).
//!
//! `deliver` is the one way an event reaches a subscription: emits, retries
//! and dead-letter redeliveries all go through it.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;
use nerve_core::correlation::{self, CorrelationId};
use nerve_core::instrument::HandlerMode;
use nerve_core::metrics::names as metric;
use nerve_core::sink::{SinkError, SinkFault};
use nerve_core::{Event, EventId, Stamp, Timestamp, Value};
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::task::AbortHandle;

use crate::attachment::Attachments;
use crate::call::Caller;
use crate::config::{Config, Reject};
use crate::dead_letter::{DeadLetterReason, Failure};
use crate::error::EmitError;
use crate::gate::{Gate, Pass};
use crate::handler::panic_message;
use crate::history::History;
use crate::ledger::{JOURNAL_ERROR, Ledger, Publish};
use crate::queue::{DropReason, Fast, Overflow, Pushed, Queue, QueueItem, Wakes, wake_all};
use crate::reentry::{self, Blocked, Chain, DepthGuard, block_here, retrying};
use crate::report::{DeliveryReport, HandlerOutcome, Outcome, Waiter};
use crate::routes::{Route, Routes, TopicTraits};
use crate::runs::Runs;
use crate::subscription::{AsyncSlot, Delivery, HandlerKind, StreamItem, Subscription};
use crate::worker::{self, HeldTurn};

/// The engine of one bus: its settings, its subscriptions, and what the
/// pipeline reads and writes on every emit.
pub(crate) struct Dispatcher {
    pub(crate) id: u64,
    pub(crate) config: Config,
    pub(crate) routes: Arc<Routes>,
    /// Events numbered so far: also the count of events emitted, which
    /// `stats` reports from here (less `emitted_base`) rather than from a
    /// counter of its own, saving the emit path an atomic add.
    /// Padded: every emit writes it, and the fields beside it are read by
    /// every emit.
    pub(crate) seq: CachePadded<AtomicU64>,
    /// `seq` at the last `reset_stats`.
    pub(crate) emitted_base: AtomicU64,
    pub(crate) history: History,
    pub(crate) runs: Runs,
    pub(crate) ledger: Arc<Ledger>,
    pub(crate) caller: Arc<Caller>,
    /// Closed by shutdown: no event is accepted, no subscription added;
    /// every emit passes it until its event is recorded (`gate.rs`).
    pub(crate) gate: Gate,
    /// Every worker started, so that shutdown can cancel the workers of
    /// subscriptions removed while their deliveries were still running.
    pub(crate) workers: Mutex<Vec<AbortHandle>>,
    /// What is attached to the bus and reports in its stats.
    pub(crate) attachments: Attachments,
    /// Whether `accept` only fills in correlation and causation: no name
    /// rules, guards or instrument (see [`emit`](Self::emit)).
    plain_accept: bool,
}

/// The payload of an event [`Dispatcher::emit`] makes.
pub(crate) enum Data {
    Owned(Value),
    Shared(Arc<Value>),
}

impl Drop for Dispatcher {
    /// The bus is gone: close every queue, so that streams end once drained
    /// and queued handlers' threads stop, instead of waiting forever for
    /// events that cannot come.
    fn drop(&mut self) {
        for sub in self.routes.load().subscriptions() {
            sub.close_queue();
        }
    }
}

impl Publish for Dispatcher {
    fn publish(&self, event: Event) -> Result<(), EmitError> {
        self.dispatch(event, None).map(drop)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum WaitMode {
    Async,
    Blocking,
}

/// What `dispatch` did, before anyone waited.
pub(crate) struct Dispatched {
    event_id: EventId,
    halt: Option<(Arc<Subscription>, String)>,
    /// A subscriber's queue refused the event (`Overflow::Error`, or a
    /// `Block` that would wait on itself). Boxed: rare, and large.
    refused: Option<Box<EmitError>>,
    /// The journal did not confirm a durable event. Boxed: rare.
    not_recorded: Option<Box<SinkError>>,
    /// The turn of an async subscription whose delivery the waiting
    /// emitter runs itself ([`Dispatcher::run_in_turn`]).
    turn: Option<HeldTurn>,
}

/// The error of an inline handler that could not record its event, named
/// after its subscription.
fn not_recorded_by(
    sub: &Subscription,
    kind: nerve_core::sink::SinkErrorKind,
    reason: &str,
) -> SinkError {
    SinkError::new(kind, format!("{}: {reason}", sub.label()))
}

/// What stage 2 found: the route, and for a route with async handlers the
/// runtime they run on, the chain of subscriptions the emitter blocks, and
/// whether the emitter may run its own async delivery (`turn.rs`).
struct Routed {
    route: Arc<Route>,
    runtime: Option<Handle>,
    chain: Option<Chain>,
    may_take_turn: bool,
}

impl Dispatched {
    /// The turn the emitter took, if it took one, and the event, for
    /// [`Dispatcher::run_in_turn`].
    pub(crate) fn take_turn(&mut self) -> Option<(HeldTurn, EventId)> {
        Some((self.turn.take()?, self.event_id))
    }

    fn halted_error(event_id: EventId, sub: &Subscription, reason: String) -> EmitError {
        EmitError::Halted {
            event_id,
            subscription: sub.id,
            subscription_label: sub.label(),
            reason,
        }
    }

    /// What `emit` returns.
    #[inline(always)]
    pub(crate) fn into_result(self) -> Result<EventId, EmitError> {
        match (self.halt, self.refused, self.not_recorded) {
            (Some((sub, reason)), _, _) => Err(Self::halted_error(self.event_id, &sub, reason)),
            (None, Some(refused), _) => Err(*refused),
            (None, None, Some(source)) => Err(EmitError::NotRecorded {
                event_id: self.event_id,
                error: *source,
            }),
            (None, None, None) => Ok(self.event_id),
        }
    }

    /// What `emit_and_wait` returns, once every outcome is in.
    pub(crate) fn into_report(
        self,
        outcomes: Vec<HandlerOutcome>,
    ) -> Result<DeliveryReport, EmitError> {
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
        if let Some(source) = self.not_recorded {
            return Err(EmitError::NotRecorded {
                event_id: self.event_id,
                error: *source,
            });
        }
        // An async handler's word, which only a waiting emitter hears.
        for o in &outcomes {
            if let Outcome::NotRecorded { kind, reason } = &o.outcome {
                let by = o.name.clone().unwrap_or_else(|| o.subscription.to_string());
                return Err(EmitError::NotRecorded {
                    event_id: self.event_id,
                    error: SinkError::new(*kind, format!("{by}: {reason}")),
                });
            }
        }
        Ok(DeliveryReport {
            event_id: self.event_id,
            outcomes,
        })
    }
}

/// One event's deliveries: how they are made (the same for every
/// subscription), and what they leave for [`Dispatcher::settle`]: failures
/// to report, queues that dropped events, a halt or a refusal to return.
pub(crate) struct Deliveries {
    waiter: Option<Waiter>,
    /// The subscriptions blocked on the emitter, when it waits.
    chain: Option<Chain>,
    /// Never dropped by a full queue.
    terminal: bool,
    runtime: Option<Handle>,
    /// Handlers that ran inline, and whether any subscriber was queued: an
    /// event whose inline handlers all failed, with none queued, is one
    /// `AllHandlersFailed` dead letter rather than one per handler.
    inline_ran: usize,
    queued_any: bool,
    /// Empty, and so free to make and drop, on the common path.
    failures: Vec<(Arc<Subscription>, Outcome)>,
    drops: Vec<Arc<Subscription>>,
    halt: Option<(Arc<Subscription>, String)>,
    refused: Option<Box<EmitError>>,
    /// The journal, or else an inline handler, could not confirm it
    /// recorded the event (`HandlerError::not_recorded`). Boxed: rare.
    not_recorded: Option<Box<SinkError>>,
    /// Whether this thread may wait for room in a queue, worked out on
    /// first need.
    may_block: Option<bool>,
    /// Readers to wake once the event is in every queue.
    wakes: Wakes,
    /// Delivering to the route's last subscription, after which nothing
    /// reports to `waiter`.
    last: bool,
    /// Whether the emitter may take the turn of an async subscription to
    /// run its delivery itself, and the turn it took (one at most).
    may_take_turn: bool,
    turn: Option<HeldTurn>,
}

impl Deliveries {
    fn new(
        waiter: Option<Waiter>,
        chain: Option<Chain>,
        terminal: bool,
        runtime: Option<Handle>,
    ) -> Self {
        Self {
            waiter,
            chain,
            terminal,
            runtime,
            inline_ran: 0,
            queued_any: false,
            failures: Vec::new(),
            drops: Vec::new(),
            halt: None,
            refused: None,
            not_recorded: None,
            may_block: None,
            wakes: Wakes::default(),
            last: false,
            may_take_turn: false,
            turn: None,
        }
    }

    /// A retry's delivery: reported to `waiter`, terminal (never dropped by
    /// a full queue, never waiting for room) and made on `runtime`.
    pub(crate) fn retry(waiter: Waiter, runtime: Option<Handle>) -> Self {
        let mut deliveries = Self::new(Some(waiter), None, true, runtime);
        deliveries.may_block = Some(false);
        deliveries
    }

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

/// Whether a route lookup starts at the route cache, or knows that it
/// just missed there (`Dispatcher::emit` looked) and makes the route.
#[derive(Clone, Copy)]
enum Lookup {
    Cached,
    Missed,
}

impl Dispatcher {
    pub(crate) fn new(id: u64, config: Config) -> Arc<Self> {
        // A reopened journal continues its sequence.
        let first_seq = config.sink.as_ref().and_then(|s| s.last_seq()).unwrap_or(0);
        Arc::new_cyclic(|me: &Weak<Self>| {
            let publish: Weak<dyn Publish> = me.clone();
            let ledger = Arc::new(Ledger::new(
                config.metrics.clone(),
                config.dead_letters.clone(),
                publish,
            ));
            let caller = Arc::new(Caller::new(
                id,
                config.instrument.clone(),
                config.sync_timeout(),
                config.handler_timeout,
                config.max_concurrent_handlers,
                ledger.clone(),
            ));
            Self {
                id,
                plain_accept: config.name_rules.is_none()
                    && config.guards.is_empty()
                    && config.instrument.is_none(),
                history: History::new(config.history_capacity),
                runs: Runs::new(config.run_history.0, config.run_history.1),
                config,
                routes: Arc::new(Routes::new()),
                seq: CachePadded::new(AtomicU64::new(first_seq)),
                emitted_base: AtomicU64::new(first_seq),
                ledger,
                caller,
                gate: Gate::new(),
                workers: Mutex::new(Vec::new()),
                attachments: Attachments::default(),
            }
        })
    }

    /// The event `emit` and its twins built, counting an invalid name.
    pub(crate) fn build(
        &self,
        built: Result<Event, nerve_core::name::ValidationError>,
    ) -> Result<Event, EmitError> {
        built.map_err(|e| {
            self.ledger.rejected(None);
            EmitError::Invalid(e)
        })
    }

    /// The tokio runtime async handlers run on: the bus's own, else the
    /// current one.
    pub(crate) fn runtime(&self) -> Option<Handle> {
        self.config
            .runtime
            .clone()
            .or_else(|| Handle::try_current().ok())
    }

    /// Whether blocking this thread would stop the async handlers it waits
    /// for: it drives a current-thread runtime, and the bus has none of its own.
    pub(crate) fn blocking_would_deadlock(&self) -> bool {
        self.config.runtime.is_none()
            && Handle::try_current()
                .is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::CurrentThread)
    }

    /// `Bus::emit` and `emit_shared`: makes an event of type `topic`
    /// carrying `data` and emits it.
    ///
    /// On the common path (a topic routed before, so a valid name; nothing
    /// in `accept` but correlation; no async subscriber) the event is made
    /// once its route is known, numbered and correlated as it is made, in
    /// one allocation, with the route's copy of its name: what `accept` and
    /// `number` do, without checking the name again or copying the event
    /// on write. Otherwise, the event is made and dispatched as any other.
    #[inline]
    pub(crate) fn emit(&self, topic: &str, data: Data) -> Result<EventId, EmitError> {
        let Some(pass) = self.gate.enter() else {
            return Err(EmitError::Closed);
        };
        let (route, lookup) = self.common_route(topic);
        let Some(route) = route.filter(|route| !route.has_async) else {
            let event = match data {
                Data::Owned(data) => Event::new(topic, data),
                Data::Shared(data) => Event::builder(topic).data_shared(data).build(),
            };
            let event = self.build(event)?;
            return self
                .dispatch_with(event, None, lookup, Some(pass))?
                .into_result();
        };
        let _depth = DepthGuard::enter(self.config.max_depth)
            .map_err(|depth| EmitError::TooDeep { depth })?;
        let stamp = self.stamp(&route);
        let event = match data {
            Data::Owned(data) => Event::stamped(&route.event_type, data, stamp),
            Data::Shared(data) => Event::stamped_shared(&route.event_type, data, stamp),
        };
        let deliveries = Deliveries::new(None, None, route.terminal, None);
        self.record_and_deliver(&event, &route, deliveries, Some(pass))
            .into_result()
    }

    /// `Bus::emit_and_wait`: makes an event of type `topic` carrying `data`
    /// and dispatches it for `waiter`, on the common path (a topic routed
    /// before, nothing in `accept` but correlation) as [`emit`](Self::emit)
    /// does: the route first, then the event, made numbered and correlated.
    pub(crate) fn emit_waiting(
        &self,
        topic: &str,
        data: Value,
        waiter: Waiter,
        mode: WaitMode,
    ) -> Result<Dispatched, EmitError> {
        let Some(pass) = self.gate.enter() else {
            return Err(EmitError::Closed);
        };
        let (route, lookup) = self.common_route(topic);
        let Some(route) = route else {
            let event = self.build(Event::new(topic, data))?;
            return self.dispatch_with(event, Some((waiter, mode)), lookup, Some(pass));
        };
        let _depth = DepthGuard::enter(self.config.max_depth)
            .map_err(|depth| EmitError::TooDeep { depth })?;
        let Routed {
            route,
            runtime,
            chain,
            may_take_turn,
        } = self.routed(topic, route, Some(mode))?;
        let event = Event::stamped(&route.event_type, data, self.stamp(&route));
        let mut deliveries = Deliveries::new(Some(waiter), chain, route.terminal, runtime);
        deliveries.may_take_turn = may_take_turn;
        Ok(self.record_and_deliver(&event, &route, deliveries, Some(pass)))
    }

    /// The route of `topic` if `emit` and `emit_waiting` may take the
    /// common path (a topic routed before, on a bus whose `accept` only
    /// fills in correlation and causation), and whether looking the topic
    /// up again later would be worth it (not after a miss here).
    #[inline]
    fn common_route(&self, topic: &str) -> (Option<Arc<Route>>, Lookup) {
        if !self.plain_accept {
            return (None, Lookup::Cached);
        }
        match self.routes.cached(topic) {
            Some(route) => (Some(route), Lookup::Cached),
            None => (None, Lookup::Missed),
        }
    }

    /// What `accept` and `number` give an event of `route` made on the
    /// common path: a new id and time, the ambient correlation and cause
    /// (a root event names its correlation after itself), the next `seq`
    /// if recorded, and the route's terminal mark. Taken only once nothing
    /// can refuse the event, so `seq` has no gaps.
    #[inline]
    fn stamp(&self, route: &Route) -> Stamp {
        let ambient = correlation::current_ambient();
        let timestamp = Timestamp::now();
        let event_id = EventId::for_timestamp(timestamp);
        Stamp::new(event_id, timestamp)
            .with_correlation_id(ambient.correlation_id.or_else(|| {
                self.config
                    .generate_correlation_ids
                    .then(|| CorrelationId::from(event_id))
            }))
            .with_causation_id(ambient.causation_id)
            .with_seq(if route.recorded {
                self.seq.fetch_add(1, Ordering::Relaxed) + 1
            } else {
                0
            })
            .with_terminal(route.terminal)
    }

    /// Emits `event` through the pipeline; `waiter` collects the handlers'
    /// outcomes for `emit_and_wait`.
    #[inline]
    pub(crate) fn dispatch(
        &self,
        event: Event,
        waiter: Option<(Waiter, WaitMode)>,
    ) -> Result<Dispatched, EmitError> {
        let Some(pass) = self.gate.enter() else {
            return Err(EmitError::Closed);
        };
        self.dispatch_with(event, waiter, Lookup::Cached, Some(pass))
    }

    /// `dispatch` through a closed gate: for the last event of a bus that
    /// is shutting down (`Bus::shutdown_with`), once every event accepted
    /// before it is recorded.
    pub(crate) fn dispatch_last(&self, event: Event) -> Result<Dispatched, EmitError> {
        self.dispatch_with(event, None, Lookup::Cached, None)
    }

    /// `dispatch`, told whether the route cache is worth a look, with the
    /// emit's pass through the gate (none for the last event).
    fn dispatch_with(
        &self,
        event: Event,
        waiter: Option<(Waiter, WaitMode)>,
        lookup: Lookup,
        pass: Option<Pass<'_>>,
    ) -> Result<Dispatched, EmitError> {
        let _depth = DepthGuard::enter(self.config.max_depth)
            .map_err(|depth| EmitError::TooDeep { depth })?;
        let event = self.accept(event)?;
        let Routed {
            route,
            runtime,
            chain,
            may_take_turn,
        } = self.route(&event, waiter.as_ref().map(|(_, m)| *m), lookup)?;
        let (event, route) = self.number(event, route);
        let terminal = event.is_marked_terminal();
        let mut deliveries = Deliveries::new(waiter.map(|(w, _)| w), chain, terminal, runtime);
        deliveries.may_take_turn = may_take_turn;
        Ok(self.record_and_deliver(&event, &route, deliveries, pass))
    }

    /// Stages 4 to 6 of a numbered event: journal, deliver, settle. The
    /// pass is given back once the event is recorded. The stages are
    /// `#[inline(always)]`: their calls took 98 of an emit's 1,503
    /// instructions (`docs/benchmarks.md`, stop 38).
    #[inline]
    fn record_and_deliver(
        &self,
        event: &Event,
        route: &Route,
        mut deliveries: Deliveries,
        pass: Option<Pass<'_>>,
    ) -> Dispatched {
        // The journal's word first: it is the bus's own record (an inline
        // handler's `not_recorded` keeps it).
        deliveries.not_recorded = self.journal(event, route, pass);
        self.deliver_all(event, route, &mut deliveries);
        self.settle(event, &mut deliveries);
        Dispatched {
            event_id: event.event_id(),
            halt: deliveries.halt,
            refused: deliveries.refused,
            not_recorded: deliveries.not_recorded,
            turn: deliveries.turn,
        }
    }

    /// Stage 1: validates an event and fills in its correlation and causation.
    fn accept(&self, mut event: Event) -> Result<Event, EmitError> {
        if let Some(rules) = &self.config.name_rules {
            if let Err(e) = rules.validate(event.event_type()) {
                self.ledger.rejected(Some("validation"));
                self.ledger.dead_letter(Failure {
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
                self.ledger.rejected(Some("guard"));
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

    /// Stage 2: the subscriptions the event goes to, and what delivering to
    /// them needs (a runtime for async handlers; for a wait, the check that
    /// it cannot wait on itself). The last stage that may refuse the event.
    #[allow(clippy::type_complexity)] // Three results of one lookup, used once.
    fn route(
        &self,
        event: &Event,
        wait: Option<WaitMode>,
        lookup: Lookup,
    ) -> Result<Routed, EmitError> {
        let route = self.lookup(event, lookup);
        self.routed(event.event_type(), route, wait)
    }

    /// `route` once the route is known.
    fn routed(
        &self,
        event_type: &str,
        route: Arc<Route>,
        wait: Option<WaitMode>,
    ) -> Result<Routed, EmitError> {
        if !route.has_async {
            return Ok(Routed {
                route,
                runtime: None,
                chain: None,
                may_take_turn: false,
            });
        }
        let runtime = self.runtime().ok_or_else(|| EmitError::NoRuntime {
            event_type: event_type.to_owned(),
        })?;
        let chain = match wait {
            Some(mode) => {
                self.check_wait(event_type, &route, mode)?;
                reentry::chain()
            }
            None => None,
        };
        // An emitter awaiting the outcomes on a task of the bus's runtime
        // may run its own delivery to an idle async handler (`turn.rs`).
        // Not a retry: its deliveries report to the dead letter queue.
        let may_take_turn = wait == Some(WaitMode::Async)
            && !retrying()
            && (self.config.runtime.is_none()
                || Handle::try_current().is_ok_and(|current| current.id() == runtime.id()));
        Ok(Routed {
            route,
            runtime: Some(runtime),
            chain,
            may_take_turn,
        })
    }

    /// The route of `event_type`, made on a cache miss.
    fn lookup(&self, event: &Event, lookup: Lookup) -> Arc<Route> {
        let extras = |t: &str| {
            let terminal = self.config.terminal_patterns.iter().any(|p| p.matches(t));
            let durable = match &self.config.durable_patterns {
                None => terminal,
                Some(patterns) => patterns.iter().any(|p| p.matches(t)),
            };
            TopicTraits {
                event_type: event.checked_type(),
                type_counter: self.ledger.type_counter(t),
                terminal,
                durable,
                recorded: t != JOURNAL_ERROR,
            }
        };
        match lookup {
            Lookup::Cached => self.routes.route(event.event_type(), extras),
            Lookup::Missed => self.routes.route_missed(event.event_type(), extras),
        }
    }

    /// Stage 3: numbers the event (`seq`; its lane's count) and marks it
    /// terminal; an event of a run goes in the run's log here.
    fn number(&self, event: Event, mut route: Arc<Route>) -> (Event, Arc<Route>) {
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
            event = self.runs.append(event);
            route = self.lookup(&event, Lookup::Cached);
        }
        (event, route)
    }

    /// Reports what the sink said of `event`; for a durable event, the
    /// error `emit` returns too (it promised the event on disk).
    #[cold]
    fn not_recorded(&self, event: &Event, e: SinkError, durable: bool) -> Option<Box<SinkError>> {
        self.ledger.sink_fault(SinkFault {
            kind: e.kind(),
            message: e.to_string(),
            event: Some(event.clone()),
        });
        durable.then(|| Box::new(e))
    }

    /// Stage 4: records the event (the sink, the history) and counts it.
    /// What the sink said of a durable event it could not record, which
    /// `emit` returns as [`EmitError::NotRecorded`].
    #[inline(always)]
    fn journal(
        &self,
        event: &Event,
        route: &Route,
        pass: Option<Pass<'_>>,
    ) -> Option<Box<SinkError>> {
        let mut failed = None;
        if let Some(sink) = self.config.sink.as_ref().filter(|_| route.recorded) {
            // Durable events (terminal ones unless configured) are on disk,
            // with everything before them, before any handler runs.
            let durable = route.durable
                || (self.config.durable_patterns.is_none() && event.is_marked_terminal());
            let recorded = if durable {
                sink.record_and_wait(event)
            } else {
                sink.record(event)
            };
            if let Err(e) = recorded {
                failed = Some((e, durable));
            }
        }
        self.history
            .push(event, route.recorded.then(|| event.seq()));
        // Recorded: a shutdown waiting for this emit may go on. Before the
        // fault is reported, whose `journal.error` handlers run here and
        // might shut the bus down themselves.
        drop(pass);
        let not_recorded = failed.and_then(|(e, durable)| self.not_recorded(event, e, durable));
        if let Some(instrument) = &self.config.instrument {
            instrument.emitted(event);
        }
        route.type_counter.add(1);
        if let Some(metrics) = self.ledger.metrics() {
            metrics.counter(
                metric::EVENTS_EMITTED_TOTAL,
                1,
                &[(metric::label::EVENT_TYPE, event.event_type())],
            );
        }
        if route.subscriptions.is_empty() {
            if let Some(dlq) = self.ledger.dead_letters() {
                if dlq.records_unrouted()
                    && !event.event_type().starts_with("system.")
                    && !retrying()
                {
                    self.ledger.dead_letter(Failure {
                        event: event.clone(),
                        subscription: None,
                        reason: DeadLetterReason::NoSubscriber,
                        error: "no subscription matched the event".to_owned(),
                        targets: Vec::new(),
                    });
                }
            }
        }
        not_recorded
    }

    /// Stage 5: delivers the event to every subscription of its route whose
    /// filter takes it.
    #[inline(always)]
    fn deliver_all(&self, event: &Event, route: &Route, deliveries: &mut Deliveries) {
        // Inline handlers and filters see the event's correlation id as
        // ambient, and the event as the cause of anything they emit.
        let _ambient = route.runs_inline.then(|| correlation::enter_event(event));
        let last = route.subscriptions.len().saturating_sub(1);
        for (at, sub) in route.subscriptions.iter().enumerate() {
            if !sub.active.load(Ordering::Acquire) {
                continue;
            }
            // The last subscription's delivery may take the waiter itself
            // instead of a clone: nothing after it reports to the waiter.
            deliveries.last = at == last;
            if let Some(filter) = &sub.filter {
                match catch_unwind(AssertUnwindSafe(|| filter(event))) {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(panic) => {
                        let outcome =
                            Outcome::Panicked(format!("filter {}", panic_message(&*panic)));
                        deliveries.inline_ran += 1;
                        if !sub.is_inline() {
                            sub.counters.offered.fetch_add(1, Ordering::Relaxed);
                            sub.counters.delivered.fetch_add(1, Ordering::Relaxed);
                        }
                        self.finish_inline(event, sub, outcome, Duration::ZERO, deliveries);
                        continue;
                    }
                }
            }
            // A lost event is counted and reported inside; the emit goes on.
            let _ = self.deliver(sub, event, deliveries);
        }
    }

    /// Delivers `event` to one subscription: calls an inline handler, or
    /// puts the event on the subscriber's queue. `Err` with the reason when
    /// the subscriber lost the event instead (counted, reported, and told to
    /// any waiter). The one way an event reaches a subscription: emits,
    /// retries and dead-letter redeliveries all come here.
    pub(crate) fn deliver(
        &self,
        sub: &Arc<Subscription>,
        event: &Event,
        deliveries: &mut Deliveries,
    ) -> Result<(), DropReason> {
        match &sub.kind {
            HandlerKind::Sync(f) => {
                // No offered/delivered counts here: for an inline handler
                // both equal the sum of its outcomes, which stats derive,
                // saving two atomic adds a handler. Two clock reads per call
                // are a large part of an inline delivery, so sync handlers
                // are timed only when a timeout was asked for explicitly.
                let limit = sub.timeout.or(self.caller.sync_timeout);
                deliveries.inline_ran += 1;
                // A handler may wait for what a queued one does.
                if !deliveries.wakes.is_empty() {
                    wake_all(Some(&mut deliveries.wakes));
                }
                let (outcome, elapsed) =
                    self.caller
                        .call_sync(f, event, limit, sub, HandlerMode::Inline);
                self.finish_inline(event, sub, outcome, elapsed, deliveries);
                Ok(())
            }
            HandlerKind::Queued(slot) => {
                deliveries.queued_any = true;
                self.enqueue(sub, event, &slot.queue, deliveries)
            }
            HandlerKind::Async(slot) => {
                deliveries.queued_any = true;
                if deliveries.runtime.is_none() {
                    deliveries.runtime = self.runtime();
                }
                let result = self.enqueue(sub, event, &slot.queue, deliveries);
                // After the offer: a worker spawned on a runtime that is
                // gone is dropped unpolled, abandoning what is queued, this
                // delivery included, instead of leaving it for a worker that
                // never comes. With no runtime (subscribed after the check)
                // the delivery waits for the next emit to start one.
                if let Some(runtime) = &deliveries.runtime {
                    self.ensure_worker(slot, runtime);
                }
                result
            }
            HandlerKind::Stream(queue) => {
                // A retry's event is terminal for streams too, which read the
                // mark on the event.
                let copy = if deliveries.terminal && !event.is_marked_terminal() {
                    event.clone().terminal()
                } else {
                    event.clone()
                };
                let item = StreamItem::Event(copy);
                self.offer(event.event_id(), sub, queue, item, deliveries)
            }
        }
    }

    /// Puts a handler delivery on its subscriber's queue, within the bus's
    /// `max_pending` bound.
    fn enqueue(
        &self,
        sub: &Arc<Subscription>,
        event: &Event,
        queue: &Queue<Delivery>,
        deliveries: &mut Deliveries,
    ) -> Result<(), DropReason> {
        let refused = self.admit(event, sub, queue, deliveries);
        let delivery = Delivery::new(
            event.clone(),
            sub.clone(),
            if deliveries.last {
                deliveries.waiter.take()
            } else {
                deliveries.waiter.clone()
            },
            deliveries.chain.clone(),
            deliveries.terminal,
            !retrying(),
            self.ledger.in_flight.clone(),
        );
        match refused {
            None => {
                let delivery =
                    match self.take_turn(event.event_id(), sub, queue, delivery, deliveries) {
                        Ok(taken) => return taken,
                        Err(delivery) => delivery,
                    };
                self.offer(event.event_id(), sub, queue, delivery, deliveries)
            }
            Some(reason) => {
                // Turned away by `admit`: offered, then lost.
                sub.counters.offered.fetch_add(1, Ordering::Relaxed);
                self.lose(sub, delivery, reason, deliveries);
                Err(reason)
            }
        }
    }

    /// For an emitter that waits on a task of the bus's runtime: takes the
    /// turn of an idle async subscription (`turn.rs`) and queues `delivery`
    /// without waking the worker, for [`Dispatcher::run_in_turn`] to run it
    /// on the emitter's task. `Err` with the delivery, for `offer`, when the
    /// turn is not to be had or the queue's fast path cannot take it (a
    /// full queue may make the push wait, which it must not do holding the
    /// turn its reader needs).
    fn take_turn(
        &self,
        event_id: EventId,
        sub: &Arc<Subscription>,
        queue: &Queue<Delivery>,
        delivery: Delivery,
        deliveries: &mut Deliveries,
    ) -> Result<Result<(), DropReason>, Delivery> {
        if !deliveries.may_take_turn || deliveries.turn.is_some() {
            return Err(delivery);
        }
        let Some(runtime) = &deliveries.runtime else {
            return Err(delivery);
        };
        let Some(turn) = HeldTurn::try_take(sub, runtime) else {
            return Err(delivery);
        };
        let pushed = match queue.push_fast(delivery) {
            Fast::Queued => {
                deliveries.turn = Some(turn);
                Pushed::Queued(None)
            }
            // Closed while pushing: given back with the turn.
            Fast::Withdrawn(items) => Pushed::Withdrawn(items),
            Fast::Slow(delivery) => return Err(delivery),
        };
        Ok(self.account_offer(event_id, sub, queue, pushed, deliveries))
    }

    /// Runs the delivery whose turn the emitter took (`take_turn`) on the
    /// emitter's task, after whatever was queued before it.
    pub(crate) async fn run_in_turn(&self, turn: HeldTurn, ours: EventId) {
        if let Some(rest) = worker::run_in_turn(Arc::downgrade(&self.caller), turn, ours).await {
            // A handler that did not finish in its first poll goes on in
            // a task of its own: shutdown aborts it as it aborts workers.
            let mut workers = self.workers.lock().unwrap_or_else(PoisonError::into_inner);
            workers.retain(|w| !w.is_finished());
            workers.push(rest.abort_handle());
        }
    }

    /// Puts `item` on a subscriber's queue, applying the queue's overflow
    /// policy, and accounts for whatever is lost.
    fn offer<T: QueueItem + Discard>(
        &self,
        event_id: EventId,
        sub: &Arc<Subscription>,
        queue: &Queue<T>,
        item: T,
        deliveries: &mut Deliveries,
    ) -> Result<(), DropReason> {
        // What the queue accepts it counts as offered itself (one atomic
        // add it makes anyway); here only what it turns away is counted.
        // Worked out only if the queue is full: it reads thread-locals and
        // the runtime handle.
        let may_block = || {
            *deliveries.may_block.get_or_insert_with(|| {
                !reentry::dispatching_in_handler() && !self.blocking_would_deadlock()
            })
        };
        let pushed = queue.push_deferring(
            item,
            may_block,
            |wait| block_here(wait),
            Some(&mut deliveries.wakes),
        );
        self.account_offer(event_id, sub, queue, pushed, deliveries)
    }

    /// Accounts for what a push onto a subscriber's queue did: counts what
    /// it turned away, loses what it dropped or evicted, and updates the
    /// queue's gauges.
    fn account_offer<T: QueueItem + Discard>(
        &self,
        event_id: EventId,
        sub: &Arc<Subscription>,
        queue: &Queue<T>,
        pushed: Pushed<T>,
        deliveries: &mut Deliveries,
    ) -> Result<(), DropReason> {
        let (lost, result) = match pushed {
            Pushed::Queued(None) => (None, Ok(())),
            Pushed::Queued(Some((evicted, reason))) => (Some((evicted, reason)), Ok(())),
            Pushed::Dropped(item, reason) => {
                sub.counters.offered.fetch_add(1, Ordering::Relaxed);
                (Some((item, reason)), Err(reason))
            }
            Pushed::Full(item) => {
                sub.counters.offered.fetch_add(1, Ordering::Relaxed);
                deliveries.refuse(|| EmitError::QueueFull {
                    event_id,
                    subscription: sub.id,
                    subscription_label: sub.label(),
                });
                (Some((item, DropReason::Refused)), Err(DropReason::Refused))
            }
            Pushed::WouldBlock(item) => {
                sub.counters.offered.fetch_add(1, Ordering::Relaxed);
                deliveries.refuse(|| EmitError::WouldDeadlock {
                    reason: format!(
                        "the queue of {} is full and its policy is Block, but waiting here \
                         (inside a handler, or on the current-thread runtime that drains it) \
                         would wait on itself",
                        sub.label()
                    ),
                });
                (Some((item, DropReason::Refused)), Err(DropReason::Refused))
            }
            Pushed::Closed(item) => {
                sub.counters.offered.fetch_add(1, Ordering::Relaxed);
                (Some((item, DropReason::Closed)), Err(DropReason::Closed))
            }
            Pushed::Withdrawn(items) => {
                for item in items.into_iter().filter(|i| i.event().is_some()) {
                    self.lose(sub, item, DropReason::Closed, deliveries);
                }
                (None, Err(DropReason::Closed))
            }
        };
        if let Some((item, reason)) = lost {
            self.lose(sub, item, reason, deliveries);
        }
        self.ledger.queue_gauges(sub, queue.len());
        result
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
        deliveries: &mut Deliveries,
    ) -> Option<DropReason> {
        let (max, overflow) = self.config.max_pending?;
        let max = max as u64;
        let in_flight = &self.ledger.in_flight;
        if deliveries.terminal || in_flight.get() < max {
            return None;
        }
        let may_block = *deliveries.may_block.get_or_insert_with(|| {
            !reentry::dispatching_in_handler() && !self.blocking_would_deadlock()
        });
        let deadline = match overflow {
            Overflow::Block if may_block => None,
            Overflow::BlockTimeout(d) if may_block => Some(Instant::now() + d),
            Overflow::DropOldest => {
                return match queue.evict_oldest() {
                    Some(evicted) => {
                        self.lose(sub, evicted, DropReason::MaxPending, deliveries);
                        None
                    }
                    None => Some(DropReason::MaxPending),
                };
            }
            Overflow::Error => {
                deliveries.refuse(|| EmitError::PendingFull {
                    event_id: event.event_id(),
                    max_pending: max as usize,
                    subscription_label: sub.label(),
                });
                return Some(DropReason::Refused);
            }
            Overflow::Block => {
                deliveries.refuse(|| EmitError::WouldDeadlock {
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
        wake_all(Some(&mut deliveries.wakes));
        if block_here(|| in_flight.wait_below(max, deadline)) {
            None
        } else {
            Some(DropReason::MaxPending)
        }
    }

    /// Accounts for an item a subscriber lost: counted, dead-lettered,
    /// announced later, and whoever waits for it told.
    fn lose<T: Discard>(
        &self,
        sub: &Arc<Subscription>,
        item: T,
        reason: DropReason,
        deliveries: &mut Deliveries,
    ) {
        if reason != DropReason::Closed && !retrying() {
            if let Some(event) = item.event() {
                self.ledger.dead_letter(Failure {
                    event: event.clone(),
                    subscription: Some((sub.id, sub.name.as_deref().map(str::to_owned))),
                    reason: DeadLetterReason::OverflowDrop,
                    error: format!("dropped by a full queue ({})", reason.as_str()),
                    targets: Vec::new(),
                });
            }
        }
        item.discard(reason);
        self.ledger.count_drop(sub, reason);
        if !deliveries.drops.iter().any(|s| s.id == sub.id) {
            deliveries.drops.push(sub.clone());
        }
    }

    /// Counts an inline outcome, and keeps what `settle` and the waiter need.
    #[inline(always)]
    fn finish_inline(
        &self,
        event: &Event,
        sub: &Arc<Subscription>,
        outcome: Outcome,
        elapsed: Duration,
        deliveries: &mut Deliveries,
    ) {
        self.ledger.count(sub, &outcome, elapsed);
        if let Some(w) = &deliveries.waiter {
            w.send(HandlerOutcome {
                subscription: sub.id,
                name: sub.name.as_deref().map(str::to_owned),
                outcome: outcome.clone(),
                elapsed,
            });
        }
        if !matches!(outcome, Outcome::Delivered) {
            Self::keep_outcome(event, sub, outcome, deliveries);
        }
    }

    /// What an inline handler that did not simply succeed leaves for
    /// `settle` and the emitter: a failure to report, a halt, an event it
    /// could not record. Out of line: the common path is a success.
    #[cold]
    #[inline(never)]
    fn keep_outcome(
        event: &Event,
        sub: &Arc<Subscription>,
        outcome: Outcome,
        deliveries: &mut Deliveries,
    ) {
        match &outcome {
            Outcome::Halted(reason) => {
                deliveries
                    .halt
                    .get_or_insert_with(|| (sub.clone(), reason.clone()));
            }
            Outcome::NotRecorded { kind, reason } => {
                deliveries
                    .not_recorded
                    .get_or_insert_with(|| Box::new(not_recorded_by(sub, *kind, reason)));
            }
            _ => {}
        }
        if outcome.is_failure() {
            deliveries.failures.push((sub.clone(), outcome));
        } else {
            tracing::debug!(subscription = %sub.label(), event_type = event.event_type(), ?outcome, "inline handler outcome");
        }
    }

    /// Stage 6: what the deliveries left: wakes the queues' readers, reports
    /// inline failures and announces drops.
    #[inline(always)]
    pub(crate) fn settle(&self, event: &Event, deliveries: &mut Deliveries) {
        // Each of these is empty on the common path; looked at first, so
        // that it costs a compare rather than a loop's set-up and tear-down.
        if !deliveries.wakes.is_empty() {
            wake_all(Some(&mut deliveries.wakes));
        }
        if !deliveries.failures.is_empty() {
            let failures = std::mem::take(&mut deliveries.failures);
            self.report_failures(event, failures, deliveries);
        }
        if !deliveries.drops.is_empty() {
            for sub in std::mem::take(&mut deliveries.drops) {
                self.ledger.announce_drops(event, &sub);
            }
        }
    }

    /// Reports the failures of inline deliveries: one `AllHandlersFailed`
    /// dead letter when every handler of an event with no queued subscriber
    /// failed, else one report per failure.
    #[cold]
    fn report_failures(
        &self,
        event: &Event,
        failures: Vec<(Arc<Subscription>, Outcome)>,
        deliveries: &Deliveries,
    ) {
        let all_failed = !deliveries.queued_any
            && deliveries.inline_ran >= 2
            && failures.len() == deliveries.inline_ran;
        // Only looked up when a failure may become a dead letter.
        let retrying = retrying();
        if all_failed && !retrying && self.ledger.dead_letters().is_some() {
            let error = failures
                .iter()
                .map(|(sub, o)| format!("{}: {}", sub.label(), o.error().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join("; ");
            self.ledger.dead_letter(Failure {
                event: event.clone(),
                subscription: None,
                reason: DeadLetterReason::AllHandlersFailed,
                error,
                targets: failures.iter().map(|(sub, _)| sub.id).collect(),
            });
        }
        for (sub, outcome) in failures {
            self.ledger
                .report_failure(event, &sub, &outcome, !retrying && !all_failed);
        }
    }

    /// Refuses an `emit_and_wait` that would wait on itself.
    fn check_wait(&self, event_type: &str, route: &Route, mode: WaitMode) -> Result<(), EmitError> {
        if mode == WaitMode::Blocking && self.blocking_would_deadlock() {
            return Err(EmitError::WouldDeadlock {
                reason: format!(
                    "event {} has async handlers, and blocking this current-thread runtime would stop them; \
                     use emit_and_wait().await",
                    event_type
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
                            event_type
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
                            event_type
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// Starts the subscription's worker on `runtime` unless one is running.
    fn ensure_worker(&self, slot: &AsyncSlot, runtime: &Handle) {
        if slot.running.load(Ordering::Acquire) {
            return;
        }
        let mut worker = slot.worker.lock().unwrap_or_else(PoisonError::into_inner);
        if worker.as_ref().is_some_and(|w| !w.is_finished()) {
            return;
        }
        // Set before the spawn: a task dropped at once (its runtime is gone)
        // clears it again.
        slot.running.store(true, Ordering::Release);
        // First delivery, or the worker's runtime went away: start one here.
        let started = worker::spawn(Arc::downgrade(&self.caller), runtime, slot);
        {
            let mut workers = self.workers.lock().unwrap_or_else(PoisonError::into_inner);
            workers.retain(|w| !w.is_finished());
            workers.push(started.abort_handle());
        }
        *worker = Some(started);
    }
}
