//! [`AlertConsumer`]: rules that turn events into alerts, and the sinks that
//! deliver them: webhook (feature `webhook`), email (feature `email`), a
//! program, or an [`AlertSink`] of your own.
//!
//! The rules are checked inline on the emitting thread (a pattern, an
//! optional condition, the dedup key); everything slow happens on the
//! consumer's own delivery thread: an alert that passes is handed to it
//! through a bounded channel, and each sink delivers it with retries and
//! backoff. An ordinary emit never waits for a sink, and an alert that finds
//! the channel full is counted as dropped, never silently lost.
//!
//! A **terminal** event (one the bus marks terminal, such as
//! `extraction.failed`, or `system.interrupted` on a signal) is different:
//! its `emit` returns only once every alert accepted so far, those it
//! triggers included, was delivered or recorded as a dead letter saying why
//! not, within [`terminal_wait`](AlertBuilder::terminal_wait). So a script
//! may exit right after emitting its failure, as the guide's does, and the
//! alert still goes out.
//!
//! ```no_run
//! use std::time::Duration;
//! # #[cfg(feature = "webhook")] {
//! use nerve::consumers::alert::{AlertConsumer, AlertRule, Condition, WebhookSink};
//! use nerve::{Bus, json};
//!
//! # fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let bus = Bus::new();
//! let alerts = AlertConsumer::builder()
//!     .rule(
//!         AlertRule::new("low-success", "validation.warning")
//!             .when(Condition::below("success_rate", 0.6))
//!             .message("Success rate dropped to {data.success_rate:%} in {run_id}"),
//!     )
//!     .rule(AlertRule::new("run-failed", "extraction.failed"))
//!     .sink(WebhookSink::builder().url("https://hooks.slack.com/services/T/B/X").build()?)
//!     .build()?;
//! alerts.attach(&bus)?;
//! // ... run; on an early failure:
//! bus.emit("extraction.failed", json!({"run_id": "extraction_001"}))?;
//! // The webhook was called (or the failure recorded) before emit returned.
//! std::process::exit(1);
//! # }
//! # }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nerve_core::redact::Redactor;
use nerve_core::{Event, Pattern, Timestamp, Value};
use nerve_router::{Bus, DEFAULT_TERMINAL_PATTERNS, DeadLetterQueue, Subscribe, WeakBus};
use serde::Serialize;
use tokio::runtime::Handle;
use tokio::sync::mpsc;

use crate::error::{AttachError, ConfigError};
use crate::run::{Attachment, run_of};

mod command;
mod delivery;
#[cfg(feature = "email")]
mod email;
mod flush;
mod ledger;
mod rule;
mod sink;
#[cfg(feature = "webhook")]
mod webhook;

pub use command::CommandSink;
#[cfg(feature = "email")]
#[cfg_attr(docsrs, doc(cfg(feature = "email")))]
pub use email::{EmailBuilder, EmailSink};
pub use flush::{FlushError, FlushReport};
pub use rule::{AlertRule, Condition, DEFAULT_WINDOW};
pub use sink::{AlertError, AlertSink, SinkFuture};
#[cfg(feature = "webhook")]
#[cfg_attr(docsrs, doc(cfg(feature = "webhook")))]
pub use webhook::{WebhookBuilder, WebhookSink};

use delivery::{Counters, Delivery, Job, Retry, Worker, delivering};
use ledger::{Ledger, Waiting};

/// Alerts waiting for the sinks at most, unless configured.
pub const DEFAULT_CAPACITY: usize = 1_024;
/// Deliveries running at once at most.
pub const MAX_CONCURRENT_DELIVERIES: usize = 16;
/// Dedup keys remembered per consumer; past this, expired ones are swept.
const MAX_KEYS: usize = 10_000;
/// How long a terminal event waits for the alerts before it, unless
/// configured: long enough for a webhook or a relay that answers, a refused
/// connection and its retries; short enough that a dead sink does not hold a
/// failing script for long.
pub const DEFAULT_TERMINAL_WAIT: Duration = Duration::from_secs(10);
/// The event published when a delivery fails after its retries.
///
/// Its data: `sink` (`webhook`, `email`, ...), `rule`, `key`, `error`,
/// `attempts`, and the triggering event's `event_id`, `event_type` and
/// `run_id`; its envelope carries the triggering event's run and correlation
/// ids, and the triggering event as its cause.
pub const ALERT_FAILED_EVENT: &str = "system.alert_failed";
/// The terminal event a bus with signal handling emits on SIGINT or
/// SIGTERM: one of the default [`terminal_patterns`](AlertBuilder::terminal_patterns).
const INTERRUPTED_EVENT: &str = "system.interrupted";

/// One alert, as every sink receives it (and [`CommandSink`] writes it).
///
/// When the consumer has a [`Redactor`], `message` and `data` have passed
/// through it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Alert {
    /// The rule that fired.
    pub rule: String,
    /// Its dedup key.
    pub key: String,
    /// The rendered message.
    pub message: String,
    /// The event's type.
    pub event_type: String,
    /// The event's id.
    pub event_id: String,
    /// The event's run, if any.
    pub run_id: Option<String>,
    /// The event's correlation id, if any.
    pub correlation_id: Option<String>,
    /// When the event happened.
    pub timestamp: Timestamp,
    /// The event's data.
    pub data: Value,
}

/// What the consumer did, as [`AlertConsumer::stats`] returns it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct AlertStats {
    /// Events that matched a rule and its condition.
    pub triggered: u64,
    /// Of those, alerts not sent because their key was sent within the
    /// rule's window.
    pub suppressed: u64,
    /// Alerts lost because the channel to the sinks was full or closed.
    pub dropped: u64,
    /// Deliveries that succeeded (one per alert and sink).
    pub delivered: u64,
    /// Deliveries that failed after their retries (each logged at warn,
    /// published as [`system.alert_failed`](ALERT_FAILED_EVENT), and a dead
    /// letter when a queue is attached).
    pub failed: u64,
    /// Retries made.
    pub retries: u64,
    /// Deliveries still under way when a terminal event's wait ran out
    /// (each a dead letter then, when a queue is attached).
    pub overdue: u64,
    /// Alerts queued or being delivered now.
    pub pending: u64,
}

struct CompiledRule {
    rule: AlertRule,
    pattern: Pattern,
}

/// Turns matching events into alerts and delivers them to its sinks.
///
/// Deduplication and rate limiting are per rule: an alert whose key (see
/// [`AlertRule::key`]) was sent within the rule's window is suppressed and
/// counted. Sinks run on the consumer's own delivery thread (a
/// current-thread tokio runtime named `nerve-alerts`), so the consumer needs
/// no runtime of the caller's; each delivery is retried with exponential
/// backoff.
///
/// # Terminal events wait for the alerts
///
/// When the consumer's handler sees an event marked terminal
/// ([`Event::is_marked_terminal`]: the bus's terminal patterns, or
/// `Event::terminal`), it blocks that `emit` until every alert accepted so
/// far, those this event triggers included, was delivered or failed for
/// good (and so recorded), at most [`terminal_wait`](AlertBuilder::terminal_wait).
/// A delivery still under way when the wait runs out is recorded as a dead
/// letter then, saying so (and counted in [`AlertStats::overdue`]); it goes
/// on, is not recorded twice, and later terminal events do not wait for it
/// again (a dead sink delays one terminal event, not every item of a run). A dead letter queue made with
/// [`DeadLetterQueue::with_store`] and the journal's `DeadLetterJournal` has
/// the entry in its file before `emit` returns. So `emit("extraction.failed", ..)` followed by
/// `std::process::exit(1)` loses no alert: it was sent, or the file says why
/// not.
///
/// The wait is safe on any thread: a plain thread, a tokio worker, or the
/// only thread of a current-thread runtime, since the deliveries it waits
/// for run on the consumer's thread. When nothing is on its way (the usual
/// case for per-item events such as `specimen.completed`, which the default
/// terminal patterns match) it costs one atomic load. The handler sees
/// terminal events whose types match its
/// [`terminal_patterns`](AlertBuilder::terminal_patterns) (the bus's
/// defaults and `system.interrupted`, so a signal flushes pending alerts);
/// give it the bus's patterns when you changed those.
///
/// # Failures are visible
///
/// A delivery that still fails after its retries is logged at warn through
/// `tracing`, counted in [`AlertStats::failed`], published on the bus as
/// [`system.alert_failed`](ALERT_FAILED_EVENT), and added to the dead
/// letter queue, if one is given, with reason
/// [`DeliveryFailed`](nerve_router::DeadLetterReason::DeliveryFailed) and
/// target `alert:<rule>:<sink>`. [`flush`](Self::flush) returns a
/// [`FlushError`] naming how many deliveries failed.
///
/// | option              | default |
/// |---------------------|---------|
/// | `rule`              | at least one required |
/// | `sink`              | at least one required |
/// | `redactor`          | none; with one, `message` and `data` are redacted before any sink sees them |
/// | `retry`             | 3 attempts, 500 ms backoff doubling to at most 30 s |
/// | `capacity`          | [`DEFAULT_CAPACITY`] alerts waiting for the sinks |
/// | `dead_letters`      | none |
/// | `terminal_wait`     | [`DEFAULT_TERMINAL_WAIT`] (10 s); zero turns the wait off |
/// | `terminal_patterns` | [`DEFAULT_TERMINAL_PATTERNS`] and `system.interrupted` |
/// | `runtime`           | none: a thread of the consumer's own |
///
/// See the [module docs](self) for an example.
#[derive(Clone)]
pub struct AlertConsumer {
    inner: Arc<Inner>,
}

struct Inner {
    rules: Vec<CompiledRule>,
    redactor: Option<Redactor>,
    terminal_wait: Duration,
    terminal_patterns: Vec<Pattern>,
    runtime: Option<Handle>,
    /// Last time each (rule index, key) was sent.
    sent: Mutex<HashMap<(usize, String), Instant>>,
    tx: mpsc::Sender<Arc<Job>>,
    /// Taken by the first `attach`, which starts the worker.
    rx: Mutex<Option<mpsc::Receiver<Arc<Job>>>>,
    delivery: Arc<Delivery>,
    /// The counts at the previous flush: delivered, failed, dropped.
    flushed: Mutex<(u64, u64, u64)>,
}

/// Builds an [`AlertConsumer`]; see its docs for the defaults.
#[must_use]
pub struct AlertBuilder {
    rules: Vec<AlertRule>,
    sinks: Vec<Arc<dyn AlertSink>>,
    redactor: Option<Redactor>,
    retry: Retry,
    capacity: usize,
    dead_letters: Option<DeadLetterQueue>,
    terminal_wait: Duration,
    terminal_patterns: Vec<String>,
    runtime: Option<Handle>,
}

impl Default for AlertBuilder {
    fn default() -> Self {
        Self {
            rules: Vec::new(),
            sinks: Vec::new(),
            redactor: None,
            retry: Retry {
                attempts: 3,
                backoff: Duration::from_millis(500),
                max_backoff: Duration::from_secs(30),
            },
            capacity: DEFAULT_CAPACITY,
            dead_letters: None,
            terminal_wait: DEFAULT_TERMINAL_WAIT,
            terminal_patterns: DEFAULT_TERMINAL_PATTERNS
                .iter()
                .chain(&[INTERRUPTED_EVENT])
                .map(|p| (*p).to_owned())
                .collect(),
            runtime: None,
        }
    }
}

impl fmt::Debug for AlertBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlertBuilder")
            .field("rules", &self.rules)
            .field(
                "sinks",
                &self.sinks.iter().map(|s| s.name()).collect::<Vec<_>>(),
            )
            .field("retry", &self.retry)
            .field("capacity", &self.capacity)
            .field("terminal_wait", &self.terminal_wait)
            .field("terminal_patterns", &self.terminal_patterns)
            .finish_non_exhaustive()
    }
}

impl AlertBuilder {
    /// Adds a rule.
    pub fn rule(mut self, rule: AlertRule) -> Self {
        self.rules.push(rule);
        self
    }

    /// Adds a sink; every alert goes to every sink.
    pub fn sink(mut self, sink: impl AlertSink) -> Self {
        self.sinks.push(Arc::new(sink));
        self
    }

    /// Redacts each alert's message and data before any sink sees it.
    pub fn redactor(mut self, redactor: Redactor) -> Self {
        self.redactor = Some(redactor);
        self
    }

    /// Tries each delivery `attempts` times in all, waiting `backoff` after
    /// the first failure and twice as long after each next one (at most
    /// 30 s).
    pub fn retry(mut self, attempts: u32, backoff: Duration) -> Self {
        self.retry.attempts = attempts;
        self.retry.backoff = backoff;
        self
    }

    /// Alerts that may wait for the sinks; past this they are dropped and
    /// counted.
    pub fn capacity(mut self, alerts: usize) -> Self {
        self.capacity = alerts;
        self
    }

    /// Adds a dead letter for each delivery that failed after its retries,
    /// or was still under way when a terminal event stopped waiting.
    pub fn dead_letters(mut self, queue: DeadLetterQueue) -> Self {
        self.dead_letters = Some(queue);
        self
    }

    /// How long the `emit` of a terminal event waits for the alerts accepted
    /// before it to be delivered or recorded (see [Terminal events wait for
    /// the alerts](AlertConsumer#terminal-events-wait-for-the-alerts));
    /// [`Duration::ZERO`] turns the wait off.
    pub fn terminal_wait(mut self, wait: Duration) -> Self {
        self.terminal_wait = wait;
        self
    }

    /// The patterns of the terminal events the handler listens to, besides
    /// its rules'; replaces the default ([`DEFAULT_TERMINAL_PATTERNS`] and
    /// `system.interrupted`). Give it the bus's
    /// [`terminal_patterns`](nerve_router::BusBuilder::terminal_patterns)
    /// when you changed those. Only events the bus marked terminal wait.
    pub fn terminal_patterns<I, S>(mut self, patterns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.terminal_patterns = patterns.into_iter().map(Into::into).collect();
        self
    }

    /// Runs the sinks on this runtime instead of the consumer's own thread
    /// (for sinks that need resources of that runtime).
    ///
    /// A terminal event's wait then needs this runtime to make progress
    /// while the emitting thread blocks, so emit terminal events from
    /// outside it: a task of this runtime that blocks in the wait holds the
    /// worker the delivery may be queued on (on a current-thread runtime,
    /// the only one), and the wait runs out. The default, a thread of the
    /// consumer's own, has no such limit.
    pub fn runtime(mut self, handle: Handle) -> Self {
        self.runtime = Some(handle);
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] without a rule or a sink, for an invalid pattern, or
    /// for zero attempts, capacity or window.
    pub fn build(self) -> Result<AlertConsumer, ConfigError> {
        if self.rules.is_empty() {
            return Err(ConfigError::Missing { option: "rule" });
        }
        if self.sinks.is_empty() {
            return Err(ConfigError::Missing { option: "sink" });
        }
        if self.retry.attempts == 0 {
            return Err(ConfigError::Zero {
                option: "retry attempts",
            });
        }
        if self.capacity == 0 {
            return Err(ConfigError::Zero { option: "capacity" });
        }
        let rules = self
            .rules
            .into_iter()
            .map(|rule| {
                if rule.window.is_zero() {
                    return Err(ConfigError::Zero { option: "window" });
                }
                Ok(CompiledRule {
                    pattern: Pattern::parse(&rule.pattern)?,
                    rule,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let terminal_patterns = self
            .terminal_patterns
            .iter()
            .map(|p| Pattern::parse(p))
            .collect::<Result<Vec<_>, _>>()?;
        let (tx, rx) = mpsc::channel(self.capacity);
        Ok(AlertConsumer {
            inner: Arc::new(Inner {
                rules,
                redactor: self.redactor,
                terminal_wait: self.terminal_wait,
                terminal_patterns,
                runtime: self.runtime,
                sent: Mutex::new(HashMap::new()),
                tx,
                rx: Mutex::new(Some(rx)),
                delivery: Arc::new(Delivery {
                    sinks: self.sinks,
                    retry: self.retry,
                    dead_letters: self.dead_letters,
                    counters: Counters::default(),
                    ledger: Ledger::new(),
                }),
                flushed: Mutex::new((0, 0, 0)),
            }),
        })
    }
}

impl AlertConsumer {
    /// Starts configuring a consumer.
    pub fn builder() -> AlertBuilder {
        AlertBuilder::default()
    }

    /// Subscribes the consumer to `bus` (one inline handler, named
    /// `nerve.alerts`, for the rules' patterns and the terminal patterns,
    /// that checks rules, queues alerts and waits at terminal events) and,
    /// the first time, starts the delivery thread (or task, on the
    /// builder's runtime). Attaching to a second bus shares the worker.
    ///
    /// Works with or without a tokio runtime around it. The handler holds
    /// a clone of `bus`, on which it publishes `system.alert_failed`: as
    /// with the other consumers, [`Attachment::detach`] or `Bus::shutdown`
    /// releases it.
    ///
    /// # Errors
    ///
    /// [`AttachError::Worker`] when the delivery thread or its runtime
    /// cannot be started; [`AttachError::Subscribe`] when the bus is shut
    /// down.
    pub fn attach(&self, bus: &Bus) -> Result<Attachment, AttachError> {
        self.start()?;
        let mut patterns: Vec<Pattern> = Vec::new();
        let rules = self.inner.rules.iter().map(|r| &r.pattern);
        for pattern in rules.chain(&self.inner.terminal_patterns) {
            if !patterns.contains(pattern) {
                patterns.push(pattern.clone());
            }
        }
        let inner = self.inner.clone();
        // Weak, so that neither the handler nor a pending alert keeps the
        // bus open.
        let emitter = bus.downgrade();
        let id = bus.subscribe_with(
            patterns,
            move |event: &Event| inner.on_event(&emitter, event),
            // Low priority: alerts describe what the other handlers made of
            // the event, and must not delay a halt.
            Subscribe::new().name("nerve.alerts").priority(-1_000),
        )?;
        Ok(Attachment::new(bus, vec![id]))
    }

    /// Starts the worker, once.
    fn start(&self) -> Result<(), AttachError> {
        let mut rx = self.inner.rx.lock().unwrap_or_else(PoisonError::into_inner);
        if rx.is_none() {
            return Ok(());
        }
        let worker = Worker::new(self.inner.runtime.clone()).map_err(AttachError::Worker)?;
        if let Some(rx) = rx.take() {
            worker
                .start(self.inner.delivery.clone(), rx)
                .map_err(AttachError::Worker)?;
        }
        Ok(())
    }

    /// The counts so far.
    pub fn stats(&self) -> AlertStats {
        let c = &self.inner.delivery.counters;
        AlertStats {
            triggered: c.triggered.load(Ordering::Relaxed),
            suppressed: c.suppressed.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            delivered: c.delivered.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            overdue: c.overdue.load(Ordering::Relaxed),
            pending: self.inner.delivery.ledger.pending(),
        }
    }

    /// Waits until every alert accepted so far was delivered or failed, at
    /// most `timeout`, and reports the deliveries settled since the
    /// previous flush.
    ///
    /// # Errors
    ///
    /// [`FlushError`] when a delivery failed or an alert was dropped since
    /// the previous flush, or alerts are still pending at `timeout`; its
    /// [`report`](FlushError::report) has the counts.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping the future stops the wait, not the deliveries.
    pub async fn flush(&self, timeout: Duration) -> Result<FlushReport, FlushError> {
        let ledger = &self.inner.delivery.ledger;
        let _ = ledger.wait(ledger.mark(), timeout).await;
        FlushError::check(self.report())
    }

    /// The blocking twin of [`flush`](Self::flush), for code without a
    /// runtime (inside a runtime, prefer `flush(timeout).await`).
    ///
    /// # Errors
    ///
    /// As [`flush`](Self::flush).
    pub fn flush_blocking(&self, timeout: Duration) -> Result<FlushReport, FlushError> {
        let ledger = &self.inner.delivery.ledger;
        let _ = ledger.wait_blocking(ledger.mark(), timeout, Waiting::All);
        FlushError::check(self.report())
    }

    /// The counts since the previous report; starts the next period.
    fn report(&self) -> FlushReport {
        let stats = self.stats();
        let mut flushed = self
            .inner
            .flushed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (delivered, failed, dropped) = *flushed;
        *flushed = (stats.delivered, stats.failed, stats.dropped);
        FlushReport {
            delivered: stats.delivered - delivered,
            failed: stats.failed - failed,
            dropped: stats.dropped - dropped,
            pending: stats.pending,
        }
    }
}

impl fmt::Debug for AlertConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlertConsumer")
            .field("rules", &self.inner.rules.len())
            .field("sinks", &self.inner.delivery.sinks.len())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn on_event(&self, bus: &WeakBus, event: &Event) {
        let counters = &self.delivery.counters;
        for (index, compiled) in self.rules.iter().enumerate() {
            let rule = &compiled.rule;
            if !compiled.pattern.matches(event.event_type())
                || !rule.condition.as_ref().is_none_or(|c| c.matches(event))
            {
                continue;
            }
            counters.triggered.fetch_add(1, Ordering::Relaxed);
            let key = rule::render(&rule.key, &rule.name, event);
            if !self.first_in_window(index, &key, rule.window) {
                counters.suppressed.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let alert = self.alert(rule, key, event);
            let sinks = self.delivery.sinks.len();
            let job = self
                .delivery
                .ledger
                .open(|ticket| Job::new(ticket, alert, event.clone(), bus.clone(), sinks));
            let ticket = job.ticket;
            if self.tx.try_send(job).is_err() {
                counters.dropped.fetch_add(1, Ordering::Relaxed);
                self.delivery.ledger.settle(ticket);
                tracing::warn!(rule = %rule.name, "alert dropped: the sinks are behind");
            }
        }
        if event.is_marked_terminal() {
            self.wait_for_alerts(event);
        }
    }

    /// A terminal event's wait: until every alert accepted so far is
    /// settled, at most `terminal_wait`; the deliveries still under way
    /// then are recorded as overdue.
    fn wait_for_alerts(&self, terminal: &Event) {
        let ledger = &self.delivery.ledger;
        // The worker's own emits (`system.alert_failed`) must not wait for
        // the worker.
        if self.terminal_wait.is_zero() || ledger.pending() == 0 || delivering() {
            return;
        }
        let upto = ledger.mark();
        if let Err(late) = ledger.wait_blocking(upto, self.terminal_wait, Waiting::OnTime) {
            self.delivery.overdue(&late, terminal, self.terminal_wait);
            ledger.mark_late(&late);
        }
    }

    /// Records that `key` is sent now, unless it was sent within `window`.
    fn first_in_window(&self, rule: usize, key: &str, window: Duration) -> bool {
        let now = Instant::now();
        let mut sent = self.sent.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(last) = sent.get(&(rule, key.to_owned())) {
            if now.duration_since(*last) < window {
                return false;
            }
        }
        if sent.len() >= MAX_KEYS {
            let rules = &self.rules;
            sent.retain(|(r, _), last| now.duration_since(*last) < rules[*r].rule.window);
        }
        sent.insert((rule, key.to_owned()), now);
        true
    }

    fn alert(&self, rule: &AlertRule, key: String, event: &Event) -> Alert {
        let mut message = rule::render(&rule.message, &rule.name, event);
        let mut data = event.data().clone();
        if let Some(redactor) = &self.redactor {
            message = redactor.redact_str(&message).into_owned();
            redactor.redact_value(&mut data);
        }
        Alert {
            rule: rule.name.clone(),
            key,
            message,
            event_type: event.event_type().to_owned(),
            event_id: event.event_id().to_string(),
            run_id: run_of(event).map(str::to_owned),
            correlation_id: event.correlation_id().map(|c| c.as_str().to_owned()),
            timestamp: event.timestamp(),
            data,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nowhere;

    impl AlertSink for Nowhere {
        fn name(&self) -> &str {
            "nowhere"
        }
        fn send<'a>(&'a self, _alert: &'a Alert) -> SinkFuture<'a> {
            Box::pin(async { Ok(()) })
        }
    }

    #[test]
    fn settings_are_checked() {
        let missing = AlertConsumer::builder().sink(Nowhere).build().unwrap_err();
        assert_eq!(missing.to_string(), "rule is required");
        let missing = AlertConsumer::builder()
            .rule(AlertRule::new("r", "a.b"))
            .build()
            .unwrap_err();
        assert_eq!(missing.to_string(), "sink is required");
        let zero = AlertConsumer::builder()
            .rule(AlertRule::new("r", "a.b").window(Duration::ZERO))
            .sink(Nowhere)
            .build()
            .unwrap_err();
        assert_eq!(zero.to_string(), "window must be greater than zero");
    }

    #[test]
    fn attaching_needs_no_runtime() {
        let alerts = AlertConsumer::builder()
            .rule(AlertRule::new("r", "a.b"))
            .sink(Nowhere)
            .build()
            .unwrap();
        let bus = Bus::new();
        alerts.attach(&bus).unwrap();
        bus.emit("a.b", serde_json::json!({})).unwrap();
        let report = alerts.flush_blocking(Duration::from_secs(20)).unwrap();
        assert_eq!(report.delivered, 1);
    }
}
