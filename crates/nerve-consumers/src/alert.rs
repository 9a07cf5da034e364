//! [`AlertConsumer`]: rules that turn events into alerts, and the sinks that
//! deliver them (webhook, email, command).
//!
//! The rules are checked inline on the emitting thread (a pattern, an
//! optional condition, the dedup key); everything slow happens on tokio: an
//! alert that passes is handed to a background task through a bounded
//! channel, and each sink delivers it with retries and backoff. The emitter
//! never waits for a sink, and an alert that finds the channel full is
//! counted as dropped, never silently lost.
//!
//! ```no_run
//! use std::time::Duration;
//! use nerve::consumers::alert::{AlertConsumer, AlertRule, Condition, WebhookSink};
//! use nerve::Bus;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
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
//! // ... run ...
//! alerts.flush(Duration::from_secs(10)).await;
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nerve_core::redact::Redactor;
use nerve_core::{Event, Pattern, Timestamp, Value};
use nerve_router::{Bus, DeadLetterQueue, Subscribe};
use serde::Serialize;
use tokio::runtime::Handle;
use tokio::sync::{Notify, Semaphore, mpsc};

use crate::error::{AttachError, BuildError};
use crate::run::{Attachment, run_of};

mod command;
mod email;
mod rule;
mod sink;
mod webhook;

pub use command::CommandSink;
pub use email::{EmailBuilder, EmailSink};
pub use rule::{AlertRule, Condition, DEFAULT_WINDOW};
pub use sink::{AlertSink, SinkError, SinkFuture};
pub use webhook::{WebhookBuilder, WebhookSink};

/// Alerts waiting for the sinks at most, unless configured.
pub const DEFAULT_CAPACITY: usize = 1_024;
/// Deliveries running at once at most.
pub const MAX_CONCURRENT_DELIVERIES: usize = 16;
/// Dedup keys remembered per consumer; past this, expired ones are swept.
const MAX_KEYS: usize = 10_000;

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
    /// Deliveries that failed after their retries (each also a dead letter
    /// when a queue is attached).
    pub failed: u64,
    /// Retries made.
    pub retries: u64,
    /// Alerts queued or being delivered now.
    pub pending: u64,
}

#[derive(Default)]
struct Counters {
    triggered: AtomicU64,
    suppressed: AtomicU64,
    dropped: AtomicU64,
    delivered: AtomicU64,
    failed: AtomicU64,
    retries: AtomicU64,
    pending: AtomicU64,
}

/// Retries of a failed delivery: `attempts` in all, waiting `backoff`,
/// then twice as long each time, at most `max_backoff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Retry {
    attempts: u32,
    backoff: Duration,
    max_backoff: Duration,
}

struct CompiledRule {
    rule: AlertRule,
    pattern: Pattern,
}

/// An alert on its way to the sinks, with the event for dead letters.
struct Job {
    alert: Arc<Alert>,
    event: Event,
}

/// Turns matching events into alerts and delivers them to its sinks.
///
/// Deduplication and rate limiting are per rule: an alert whose key (see
/// [`AlertRule::key`]) was sent within the rule's window is suppressed and
/// counted. Sinks run on tokio; each delivery is retried with exponential
/// backoff, and one that still fails is counted in
/// [`AlertStats::failed`] and added to the dead letter queue, if one is
/// given, with reason
/// [`DeliveryFailed`](nerve_router::DeadLetterReason::DeliveryFailed).
///
/// | option        | default |
/// |---------------|---------|
/// | `rule`        | at least one required |
/// | `sink`        | at least one required |
/// | `redactor`    | none; with one, `message` and `data` are redacted before any sink sees them |
/// | `retry`       | 3 attempts, 500 ms backoff doubling to at most 30 s |
/// | `capacity`    | [`DEFAULT_CAPACITY`] alerts waiting for the sinks |
/// | `dead_letters`| none |
/// | `runtime`     | the runtime `attach` is called in |
///
/// See the [module docs](self) for an example.
#[derive(Clone)]
pub struct AlertConsumer {
    inner: Arc<Inner>,
}

struct Inner {
    rules: Vec<CompiledRule>,
    sinks: Vec<Arc<dyn AlertSink>>,
    redactor: Option<Redactor>,
    retry: Retry,
    dead_letters: Option<DeadLetterQueue>,
    runtime: Option<Handle>,
    /// Last time each (rule index, key) was sent.
    sent: Mutex<HashMap<(usize, String), Instant>>,
    tx: mpsc::Sender<Job>,
    rx: Mutex<Option<mpsc::Receiver<Job>>>,
    counters: Counters,
    idle: Notify,
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

    /// Adds a dead letter for each delivery that failed after its retries.
    pub fn dead_letters(mut self, queue: DeadLetterQueue) -> Self {
        self.dead_letters = Some(queue);
        self
    }

    /// Runs the sinks on this runtime instead of the one `attach` is called
    /// in.
    pub fn runtime(mut self, handle: Handle) -> Self {
        self.runtime = Some(handle);
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// [`BuildError`] without a rule or a sink, for an invalid pattern, or
    /// for zero attempts, capacity or window.
    pub fn build(self) -> Result<AlertConsumer, BuildError> {
        if self.rules.is_empty() {
            return Err(BuildError::Missing { option: "rule" });
        }
        if self.sinks.is_empty() {
            return Err(BuildError::Missing { option: "sink" });
        }
        if self.retry.attempts == 0 {
            return Err(BuildError::Zero {
                option: "retry attempts",
            });
        }
        if self.capacity == 0 {
            return Err(BuildError::Zero { option: "capacity" });
        }
        let rules = self
            .rules
            .into_iter()
            .map(|rule| {
                if rule.window.is_zero() {
                    return Err(BuildError::Zero { option: "window" });
                }
                Ok(CompiledRule {
                    pattern: Pattern::parse(&rule.pattern)?,
                    rule,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (tx, rx) = mpsc::channel(self.capacity);
        Ok(AlertConsumer {
            inner: Arc::new(Inner {
                rules,
                sinks: self.sinks,
                redactor: self.redactor,
                retry: self.retry,
                dead_letters: self.dead_letters,
                runtime: self.runtime,
                sent: Mutex::new(HashMap::new()),
                tx,
                rx: Mutex::new(Some(rx)),
                counters: Counters::default(),
                idle: Notify::new(),
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
    /// `nerve.alerts`, that only checks rules and queues alerts) and starts
    /// the delivery task on the runtime. Attaching to a second bus shares
    /// the task.
    ///
    /// # Errors
    ///
    /// [`AttachError::NoRuntime`] without a runtime (see
    /// [`AlertBuilder::runtime`]); [`AttachError::Subscribe`] when the bus
    /// is shut down.
    pub fn attach(&self, bus: &Bus) -> Result<Attachment, AttachError> {
        let runtime = match &self.inner.runtime {
            Some(handle) => handle.clone(),
            None => Handle::try_current().map_err(|_| AttachError::NoRuntime)?,
        };
        let patterns: Vec<Pattern> = self.inner.rules.iter().map(|r| r.pattern.clone()).collect();
        let inner = self.inner.clone();
        let id = bus.subscribe_with(
            patterns,
            move |event: &Event| inner.on_event(event),
            // Low priority: alerts describe what the other handlers made of
            // the event, and must not delay a halt.
            Subscribe::new().name("nerve.alerts").priority(-1_000),
        )?;
        let rx = self
            .inner
            .rx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(rx) = rx {
            runtime.spawn(deliver_all(self.inner.clone(), rx));
        }
        Ok(Attachment::new(bus, vec![id]))
    }

    /// The counts so far.
    pub fn stats(&self) -> AlertStats {
        let c = &self.inner.counters;
        AlertStats {
            triggered: c.triggered.load(Ordering::Relaxed),
            suppressed: c.suppressed.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            delivered: c.delivered.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            pending: c.pending.load(Ordering::Acquire),
        }
    }

    /// Waits until every queued alert was delivered or failed, at most
    /// `timeout`; returns whether nothing is pending.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping the future stops the wait, not the deliveries.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let wait = async {
            loop {
                let idle = self.inner.idle.notified();
                if self.inner.counters.pending.load(Ordering::Acquire) == 0 {
                    return;
                }
                idle.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }
}

impl fmt::Debug for AlertConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlertConsumer")
            .field("rules", &self.inner.rules.len())
            .field("sinks", &self.inner.sinks.len())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn on_event(&self, event: &Event) {
        for (index, compiled) in self.rules.iter().enumerate() {
            let rule = &compiled.rule;
            if !compiled.pattern.matches(event.event_type())
                || !rule.condition.as_ref().is_none_or(|c| c.matches(event))
            {
                continue;
            }
            self.counters.triggered.fetch_add(1, Ordering::Relaxed);
            let key = rule::render(&rule.key, &rule.name, event);
            if !self.first_in_window(index, &key, rule.window) {
                self.counters.suppressed.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let alert = self.alert(rule, key, event);
            self.counters.pending.fetch_add(1, Ordering::AcqRel);
            let job = Job {
                alert: Arc::new(alert),
                event: event.clone(),
            };
            if self.tx.try_send(job).is_err() {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                self.done();
                tracing::warn!(rule = %rule.name, "alert dropped: the sinks are behind");
            }
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

    fn done(&self) {
        if self.counters.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }

    /// One sink, one alert, with retries; a final failure is counted and
    /// dead-lettered.
    async fn deliver(&self, sink: &dyn AlertSink, job: &Job) -> bool {
        let mut backoff = self.retry.backoff;
        let mut attempt = 1;
        loop {
            let error = match sink.send(&job.alert).await {
                Ok(()) => {
                    self.counters.delivered.fetch_add(1, Ordering::Relaxed);
                    return true;
                }
                Err(e) => e,
            };
            if error.is_permanent() || attempt >= self.retry.attempts {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    rule = %job.alert.rule,
                    sink = sink.name(),
                    attempts = attempt,
                    %error,
                    "alert delivery failed"
                );
                if let Some(dlq) = &self.dead_letters {
                    dlq.record(
                        job.event.clone(),
                        Some(format!("alert:{}:{}", job.alert.rule, sink.name())),
                        format!("after {attempt} attempts: {error}"),
                    );
                }
                return false;
            }
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.retry.max_backoff);
            attempt += 1;
        }
    }
}

/// The delivery task: each alert to every sink, up to
/// [`MAX_CONCURRENT_DELIVERIES`] alerts at once.
async fn deliver_all(inner: Arc<Inner>, mut rx: mpsc::Receiver<Job>) {
    let permits = Arc::new(Semaphore::new(MAX_CONCURRENT_DELIVERIES));
    while let Some(job) = rx.recv().await {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let inner = inner.clone();
        tokio::spawn(async move {
            let job = job;
            let sends = inner
                .sinks
                .iter()
                .map(|sink| inner.deliver(sink.as_ref(), &job));
            futures::future::join_all(sends).await;
            inner.done();
            drop(permit);
        });
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
    fn attaching_needs_a_runtime() {
        let alerts = AlertConsumer::builder()
            .rule(AlertRule::new("r", "a.b"))
            .sink(Nowhere)
            .build()
            .unwrap();
        let err = alerts.attach(&Bus::new()).unwrap_err();
        assert!(matches!(err, AttachError::NoRuntime));
    }
}
