//! The bus's bookkeeping: what it counts (bus-wide, per subscriber, per event
//! type), what it tells metrics, the drops and failures it reports, and the
//! dead letters it keeps.
//!
//! The dispatch pipeline, the workers and the dead letter queue account
//! through one [`Ledger`]. Reports the bus makes about itself (`system.*`
//! events) go back into the bus through a [`Publish`] handle, which is all
//! the ledger knows of the engine.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, Weak};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use nerve_core::metrics::Metrics;
use nerve_core::metrics::names as metric;
use nerve_core::sink::{SinkErrorKind, SinkFault};
use nerve_core::{Event, Value};
use serde_json::json;

use crate::counter::Counter;
use crate::dead_letter::{DeadLetterQueue, DeadLetterReason, Failure};
use crate::error::EmitError;
use crate::pending::Pending;
use crate::queue::DropReason;
use crate::report::Outcome;
use crate::subscription::Subscription;

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
pub(crate) const JOURNAL_ERROR: &str = "system.journal_error";

/// At most one `system.events_dropped` per subscriber in this long.
const DROP_ANNOUNCE_INTERVAL: Duration = Duration::from_secs(1);

/// Distinct event types counted apart in stats; the rest share `(other)`.
const MAX_COUNTED_TYPES: usize = 10_000;

/// Publishes a report of the bus about itself into the bus: the one way
/// back from the bookkeeping to the engine.
pub(crate) trait Publish: Send + Sync {
    /// Emits `event` as any event is emitted.
    ///
    /// # Errors
    ///
    /// As `Bus::emit_event`.
    fn publish(&self, event: Event) -> Result<(), EmitError>;
}

/// Bus-wide counters, since the bus was built or its stats were reset.
#[derive(Default)]
pub(crate) struct Totals {
    pub(crate) rejected: AtomicU64,
    /// Bumped by every successful inline delivery: striped.
    pub(crate) delivered: Counter,
    pub(crate) dropped: AtomicU64,
    pub(crate) journal_errors: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) panicked: AtomicU64,
    pub(crate) timed_out: AtomicU64,
    pub(crate) halted: AtomicU64,
    pub(crate) not_recorded: AtomicU64,
    pub(crate) subscriptions_total: AtomicU64,
}

impl Totals {
    fn reset(&self) {
        self.delivered.reset();
        for c in [
            &self.rejected,
            &self.dropped,
            &self.journal_errors,
            &self.failed,
            &self.panicked,
            &self.timed_out,
            &self.halted,
            &self.not_recorded,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }
}

/// The bus's bookkeeping (see the module docs).
pub(crate) struct Ledger {
    pub(crate) totals: Totals,
    /// Deliveries queued or running, shared with each [`Delivery`](crate::subscription::Delivery).
    pub(crate) in_flight: Arc<Pending>,
    by_type: DashMap<Box<str>, Arc<Counter>, foldhash::fast::RandomState>,
    types_counted: AtomicUsize,
    /// Where types past `MAX_COUNTED_TYPES` are counted.
    other_types: Arc<Counter>,
    metrics: Option<Arc<dyn Metrics>>,
    dead_letters: Option<DeadLetterQueue>,
    publish: Weak<dyn Publish>,
}

impl Ledger {
    pub(crate) fn new(
        metrics: Option<Arc<dyn Metrics>>,
        dead_letters: Option<DeadLetterQueue>,
        publish: Weak<dyn Publish>,
    ) -> Self {
        Self {
            totals: Totals::default(),
            in_flight: Arc::default(),
            by_type: DashMap::default(),
            types_counted: AtomicUsize::new(0),
            other_types: Arc::default(),
            metrics,
            dead_letters,
            publish,
        }
    }

    pub(crate) fn metrics(&self) -> Option<&dyn Metrics> {
        self.metrics.as_deref()
    }

    pub(crate) fn dead_letters(&self) -> Option<&DeadLetterQueue> {
        self.dead_letters.as_ref()
    }

    /// Sets every bus-wide and per-type counter to zero.
    pub(crate) fn reset(&self) {
        self.totals.reset();
        self.in_flight.reset_abandoned();
        for counter in &self.by_type {
            counter.value().reset();
        }
        self.other_types.reset();
    }

    /// The counter of `event_type`, made on first use; called on route-cache
    /// misses only.
    pub(crate) fn type_counter(&self, event_type: &str) -> Arc<Counter> {
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

    /// Events emitted per type, `(other)` included, leaving out zeros.
    pub(crate) fn by_type(&self) -> impl Iterator<Item = (String, u64)> + '_ {
        self.by_type
            .iter()
            .map(|e| (e.key().to_string(), e.value().get()))
            .chain(std::iter::once((
                "(other)".to_owned(),
                self.other_types.get(),
            )))
            .filter(|(_, n)| *n > 0)
    }

    /// Counts an event refused before it was numbered.
    pub(crate) fn rejected(&self, reason: Option<&'static str>) {
        self.totals.rejected.fetch_add(1, Ordering::Relaxed);
        if let Some(reason) = reason {
            self.metric_counter(
                metric::EVENTS_REJECTED_TOTAL,
                &[(metric::label::REASON, reason)],
            );
        }
    }

    pub(crate) fn metric_counter(&self, name: &'static str, labels: &[(&'static str, &str)]) {
        if let Some(metrics) = &self.metrics {
            metrics.counter(name, 1, labels);
        }
    }

    /// The gauges of a subscriber's queue after an offer to it.
    pub(crate) fn queue_gauges(&self, sub: &Subscription, depth: usize) {
        if let Some(metrics) = &self.metrics {
            let label = [(metric::label::SUBSCRIPTION, &*sub.metric_label)];
            metrics.gauge(metric::QUEUE_DEPTH, depth as f64, &label);
            metrics.gauge(metric::PENDING, self.in_flight.get() as f64, &[]);
        }
    }

    /// Counts a finished delivery's outcome and reports it if it failed;
    /// `dead_letter` says whether a failure becomes a dead letter (not for
    /// retries of one).
    pub(crate) fn account(
        &self,
        event: &Event,
        sub: &Subscription,
        outcome: &Outcome,
        elapsed: Duration,
        dead_letter: bool,
    ) {
        self.count(sub, outcome, elapsed);
        if outcome.is_failure() {
            self.report_failure(event, sub, outcome, dead_letter);
        }
    }

    /// Counts a delivery's outcome, bus-wide and for its subscriber.
    #[inline(always)]
    pub(crate) fn count(&self, sub: &Subscription, outcome: &Outcome, elapsed: Duration) {
        if let Some(metrics) = &self.metrics {
            count_metrics(&**metrics, sub, outcome, elapsed);
        }
        let (s, c) = (&self.totals, &sub.counters);
        let pairs: &[(&AtomicU64, &AtomicU64)] = match outcome {
            Outcome::Delivered => {
                s.delivered.add(1);
                c.succeeded.add(1);
                return;
            }
            Outcome::Failed(_) => &[(&s.failed, &c.failed)],
            Outcome::Panicked(_) => &[(&s.failed, &c.failed), (&s.panicked, &c.panicked)],
            Outcome::TimedOut(_) => &[(&s.timed_out, &c.timed_out)],
            Outcome::Halted(_) => &[(&s.halted, &c.halted)],
            Outcome::NotRecorded { .. } => &[(&s.not_recorded, &c.not_recorded)],
            Outcome::Abandoned | Outcome::Dropped(_) => &[],
        };
        for (bus, one) in pairs {
            bus.fetch_add(1, Ordering::Relaxed);
            one.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts an event a subscriber lost.
    pub(crate) fn count_drop(&self, sub: &Subscription, reason: DropReason) {
        sub.counters.dropped[reason.index()].fetch_add(1, Ordering::Relaxed);
        sub.counters.unannounced.fetch_add(1, Ordering::Relaxed);
        self.totals.dropped.fetch_add(1, Ordering::Relaxed);
        if let Some(metrics) = &self.metrics {
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
        let Some(dlq) = &self.dead_letters else {
            return;
        };
        let reason = failure.reason;
        dlq.push(failure);
        if let Some(metrics) = &self.metrics {
            metrics.counter(
                metric::DEAD_LETTERS_TOTAL,
                1,
                &[(metric::label::REASON, reason.as_str())],
            );
            metrics.gauge(metric::DEAD_LETTERS, dlq.len() as f64, &[]);
        }
    }

    /// Publishes `system.handler_error` for a failed delivery, and records
    /// it as a dead letter if `dead_letter`.
    pub(crate) fn report_failure(
        &self,
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
        self.publish("system.handler_error", report.build().map_err(Into::into));
    }

    /// Publishes `system.events_dropped` for a subscriber that lost events,
    /// at most once per interval; drops in between are summed into the next.
    pub(crate) fn announce_drops(&self, event: &Event, sub: &Subscription) {
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
        let report = Event::builder("system.events_dropped")
            .data(data)
            .source("nerve")
            .build();
        self.publish("system.events_dropped", report.map_err(Into::into));
    }

    /// Counts a fault of the sink and publishes it as `system.journal_error`.
    /// May run on the sink's writer thread.
    pub(crate) fn sink_fault(&self, fault: SinkFault) {
        self.totals.journal_errors.fetch_add(1, Ordering::Relaxed);
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
        self.publish(JOURNAL_ERROR, builder.build().map_err(Into::into));
    }

    /// Counts a failed flush or close of the sink.
    pub(crate) fn sink_failed(&self, what: &str, error: &dyn std::fmt::Display) {
        self.totals.journal_errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%error, "journal {what} failed");
    }

    /// Emits a report into the bus, if it is still there.
    fn publish(&self, what: &str, report: Result<Event, EmitError>) {
        let result = report.and_then(|event| match self.publish.upgrade() {
            Some(bus) => bus.publish(event),
            None => Err(EmitError::Closed),
        });
        if let Err(e) = result {
            tracing::debug!(error = %e, "{what} not published");
        }
    }
}

fn count_metrics(metrics: &dyn Metrics, sub: &Subscription, outcome: &Outcome, elapsed: Duration) {
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
