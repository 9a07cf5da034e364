//! [`MetricsConsumer`]: live metrics of each run, from the same events.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use nerve_core::metrics::Metrics;
use nerve_core::{Event, Pattern, Timestamp};
use nerve_router::{Bus, Subscribe};
use serde::{Deserialize, Serialize};

use crate::error::{AttachError, ConfigError};
use crate::run::{Attachment, CurrentRun, Role, RunPatternText, RunPatterns, total_of};

/// The event emitted every `snapshot_every` items, its data a [`RunMetrics`].
pub const SNAPSHOT_EVENT: &str = "metrics.snapshot";
/// Item latencies kept per run for the percentiles (the most recent ones).
pub const LATENCY_WINDOW: usize = 1_024;
/// Items in flight (seen processing, not yet completed) remembered per run.
pub const MAX_IN_FLIGHT: usize = 10_000;
/// Runs remembered at most; the oldest is forgotten to make room.
pub const MAX_RUNS: usize = 1_024;

/// The metrics the consumer reports through a [`Metrics`] backend. Every one
/// carries the label `run_id` (empty for items of no run).
///
/// | name | kind | extra labels | meaning |
/// |------|------|--------------|---------|
/// | `nerve_run_items_total` | counter | `outcome` (`succeeded`, `failed`) | items counted |
/// | `nerve_run_success_rate` | gauge | | `succeeded / processed` |
/// | `nerve_run_throughput_per_minute` | gauge | | items per minute |
/// | `nerve_run_eta_seconds` | gauge | | time left, once the total is known |
/// | `nerve_run_item_duration_seconds` | histogram | | processing to outcome, per item |
pub mod names {
    /// Items counted; labels `run_id`, `outcome`.
    pub const ITEMS_TOTAL: &str = "nerve_run_items_total";
    /// `succeeded / processed`; label `run_id`.
    pub const SUCCESS_RATE: &str = "nerve_run_success_rate";
    /// Items per minute; label `run_id`.
    pub const THROUGHPUT_PER_MINUTE: &str = "nerve_run_throughput_per_minute";
    /// Seconds left, once the run's total is known; label `run_id`.
    pub const ETA_SECONDS: &str = "nerve_run_eta_seconds";
    /// From an item's processing event to its outcome; label `run_id`.
    pub const ITEM_DURATION_SECONDS: &str = "nerve_run_item_duration_seconds";
}

/// Live metrics per run: items processed, succeeded and failed, success
/// rate, throughput, elapsed time, ETA and item latency percentiles.
///
/// Time is measured on the events' own timestamps: `elapsed` runs from the
/// run's start event (else its first item) to its latest event, so the
/// numbers are the same when a recorded run is replayed. An item's latency
/// is the time from its processing event (`specimen.processing`) to its
/// outcome, matched by the item id (`specimen_id` in the data); an outcome
/// event carrying `duration_ms` gives its latency directly.
///
/// | option | default | meaning |
/// |--------|---------|---------|
/// | `success` / `failure` | `specimen.completed` / `specimen.failed` | item outcomes |
/// | `start` / `end` | `extraction.started` / `extraction.completed`, `extraction.failed` | run events; the start's `total_specimens` or `total` gives the ETA |
/// | `processing` | `specimen.processing` | an item starts |
/// | `item_id_key` | `specimen_id` | data key matching processing and outcome |
/// | `snapshot_every` | off | emit `metrics.snapshot` every this many items of a run |
/// | `metrics` | none | a [`Metrics`] backend to report to (see [`names`]) |
///
/// ```
/// use nerve::consumers::MetricsConsumer;
/// use nerve::{Bus, json};
///
/// let bus = Bus::new();
/// let metrics = MetricsConsumer::builder().build()?;
/// metrics.attach(&bus)?;
/// bus.emit("extraction.started", json!({"run_id": "r1", "total_specimens": 4}))?;
/// bus.emit("specimen.completed", json!({"specimen_id": "a"}))?;
/// bus.emit("specimen.failed", json!({"specimen_id": "b"}))?;
///
/// let snapshot = metrics.snapshot().unwrap();
/// assert_eq!(snapshot.run_id.as_deref(), Some("r1"));
/// assert_eq!((snapshot.processed, snapshot.succeeded, snapshot.failed), (2, 1, 1));
/// assert_eq!(snapshot.success_rate, 0.5);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct MetricsConsumer {
    inner: Arc<Inner>,
}

struct Inner {
    patterns: RunPatterns,
    processing: Vec<Pattern>,
    item_id_key: String,
    snapshot_every: Option<u64>,
    metrics: Option<Arc<dyn Metrics>>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    current: CurrentRun,
    runs: HashMap<String, RunState>,
    order: VecDeque<String>,
    latest: Option<String>,
}

#[derive(Default)]
struct RunState {
    total: Option<u64>,
    started: Option<Timestamp>,
    last: Option<Timestamp>,
    succeeded: u64,
    failed: u64,
    in_flight: HashMap<String, Timestamp>,
    latencies: VecDeque<f64>,
    latency_count: u64,
    ended: bool,
}

/// One run's metrics, as [`MetricsConsumer::snapshot`] returns them and
/// `metrics.snapshot` events carry them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RunMetrics {
    /// The run, `None` for items of no run.
    pub run_id: Option<String>,
    /// Items announced by the start event, if it said.
    pub total: Option<u64>,
    /// Items counted: `succeeded + failed`.
    pub processed: u64,
    /// Successful items.
    pub succeeded: u64,
    /// Failed items.
    pub failed: u64,
    /// `succeeded / processed`, 0 before the first item.
    pub success_rate: f64,
    /// Items per minute over `elapsed_seconds` (0 until time has passed).
    pub throughput_per_minute: f64,
    /// From the start event (else the first item) to the latest event.
    pub elapsed_seconds: f64,
    /// Seconds left at the current throughput, once the total is known and
    /// the throughput is not zero.
    pub eta_seconds: Option<f64>,
    /// Item latency percentiles over the last [`LATENCY_WINDOW`] items.
    pub latency: Latency,
    /// Whether the run's end event was seen.
    pub ended: bool,
}

/// Item latency percentiles, in milliseconds (all 0 when none was measured).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Latency {
    /// Items whose latency was measured, over the whole run.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// The largest in the window.
    pub max_ms: f64,
}

/// Builds a [`MetricsConsumer`]; see its docs for the defaults.
#[must_use]
pub struct MetricsBuilder {
    patterns: RunPatternText,
    processing: Vec<String>,
    item_id_key: String,
    snapshot_every: Option<u64>,
    metrics: Option<Arc<dyn Metrics>>,
}

impl Default for MetricsBuilder {
    fn default() -> Self {
        Self {
            patterns: RunPatternText::default(),
            processing: vec!["specimen.processing".to_owned()],
            item_id_key: "specimen_id".to_owned(),
            snapshot_every: None,
            metrics: None,
        }
    }
}

impl fmt::Debug for MetricsBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsBuilder")
            .field("patterns", &self.patterns)
            .field("snapshot_every", &self.snapshot_every)
            .field("metrics", &self.metrics.is_some())
            .finish_non_exhaustive()
    }
}

impl MetricsBuilder {
    crate::run::run_pattern_setters!();

    /// The pattern of events that start an item (default
    /// `specimen.processing`).
    pub fn processing(mut self, pattern: impl Into<String>) -> Self {
        self.processing = vec![pattern.into()];
        self
    }

    /// The data key that names an item in its processing and outcome events
    /// (default `specimen_id`).
    pub fn item_id_key(mut self, key: impl Into<String>) -> Self {
        self.item_id_key = key.into();
        self
    }

    /// Emits `metrics.snapshot` every `items` items of a run.
    pub fn snapshot_every(mut self, items: u64) -> Self {
        self.snapshot_every = Some(items);
        self
    }

    /// Reports to this backend as well (see [`names`]).
    pub fn metrics(mut self, metrics: impl Metrics) -> Self {
        self.metrics = Some(Arc::new(metrics));
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] for an invalid pattern or `snapshot_every(0)`.
    pub fn build(self) -> Result<MetricsConsumer, ConfigError> {
        if self.snapshot_every == Some(0) {
            return Err(ConfigError::Zero {
                option: "snapshot_every",
            });
        }
        let processing = self
            .processing
            .iter()
            .map(|p| Pattern::parse(p))
            .collect::<Result<_, _>>()?;
        Ok(MetricsConsumer {
            inner: Arc::new(Inner {
                patterns: self.patterns.parse()?,
                processing,
                item_id_key: self.item_id_key,
                snapshot_every: self.snapshot_every,
                metrics: self.metrics,
                state: Mutex::new(State::default()),
            }),
        })
    }
}

impl MetricsConsumer {
    /// Starts configuring a consumer.
    pub fn builder() -> MetricsBuilder {
        MetricsBuilder::default()
    }

    /// Subscribes the consumer to `bus`: one inline handler, named
    /// `nerve.metrics`.
    ///
    /// # Errors
    ///
    /// [`AttachError::Subscribe`] when the bus is shut down.
    pub fn attach(&self, bus: &Bus) -> Result<Attachment, AttachError> {
        let inner = self.inner.clone();
        // Weak, so that the handler does not keep the bus open.
        let emitter = bus.downgrade();
        let mut patterns = self.inner.patterns.all();
        patterns.extend(self.inner.processing.iter().cloned());
        let id = bus.subscribe_with(
            patterns,
            move |event: &Event| {
                if let Some(bus) = emitter.upgrade() {
                    inner.on_event(&bus, event);
                }
            },
            Subscribe::new().name("nerve.metrics"),
        )?;
        Ok(Attachment::new(bus, vec![id]))
    }

    /// The metrics of the run that changed last, if any.
    pub fn snapshot(&self) -> Option<RunMetrics> {
        let state = self.inner.lock();
        let key = state.latest.as_ref()?;
        state.runs.get(key).map(|run| run.metrics(key))
    }

    /// The metrics of run `run_id` (`""` for items of no run).
    pub fn snapshot_of(&self, run_id: &str) -> Option<RunMetrics> {
        let state = self.inner.lock();
        state.runs.get(run_id).map(|run| run.metrics(run_id))
    }

    /// The metrics of every run remembered, oldest first.
    pub fn runs(&self) -> Vec<RunMetrics> {
        let state = self.inner.lock();
        state
            .order
            .iter()
            .filter_map(|k| state.runs.get(k).map(|run| run.metrics(k)))
            .collect()
    }
}

impl fmt::Debug for MetricsConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsConsumer")
            .field("snapshot_every", &self.inner.snapshot_every)
            .finish_non_exhaustive()
    }
}

#[allow(clippy::cast_precision_loss)] // Counts and microseconds stay far below 2^52.
fn seconds_between(from: Timestamp, to: Timestamp) -> f64 {
    (to.as_micros() - from.as_micros()).max(0) as f64 / 1e6
}

/// The `q` quantile of sorted values, nearest rank.
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss
)] // The rank is within 1..=len, which is small.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

impl RunState {
    #[allow(clippy::cast_precision_loss)] // Item counts stay far below 2^52.
    fn metrics(&self, key: &str) -> RunMetrics {
        let processed = self.succeeded + self.failed;
        let elapsed = match (self.started, self.last) {
            (Some(from), Some(to)) => seconds_between(from, to),
            _ => 0.0,
        };
        let throughput = if elapsed > 0.0 {
            processed as f64 / (elapsed / 60.0)
        } else {
            0.0
        };
        let eta = self.total.filter(|_| throughput > 0.0).map(|total| {
            let left = total.saturating_sub(processed) as f64;
            left / throughput * 60.0
        });
        let mut sorted: Vec<f64> = self.latencies.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        RunMetrics {
            run_id: (!key.is_empty()).then(|| key.to_owned()),
            total: self.total,
            processed,
            succeeded: self.succeeded,
            failed: self.failed,
            success_rate: if processed == 0 {
                0.0
            } else {
                self.succeeded as f64 / processed as f64
            },
            throughput_per_minute: throughput,
            elapsed_seconds: elapsed,
            eta_seconds: eta,
            latency: Latency {
                count: self.latency_count,
                p50_ms: quantile(&sorted, 0.5),
                p90_ms: quantile(&sorted, 0.9),
                p99_ms: quantile(&sorted, 0.99),
                max_ms: sorted.last().copied().unwrap_or(0.0),
            },
            ended: self.ended,
        }
    }

    fn record_latency(&mut self, ms: f64) {
        if self.latencies.len() == LATENCY_WINDOW {
            self.latencies.pop_front();
        }
        self.latencies.push_back(ms);
        self.latency_count += 1;
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn item_id(&self, event: &Event) -> Option<String> {
        match event.data().get(&self.item_id_key)? {
            serde_json::Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    }

    fn on_event(&self, bus: &Bus, event: &Event) {
        let role = self.patterns.role(event.event_type());
        let processing = role.is_none()
            && self
                .processing
                .iter()
                .any(|p| p.matches(event.event_type()));
        if role.is_none() && !processing {
            return;
        }
        let (snapshot, latency) = {
            let mut guard = self.lock();
            let state = &mut *guard;
            // A processing event belongs to a run as an item does.
            let key = state.current.key(event, role.unwrap_or(Role::Success));
            if !state.runs.contains_key(&key) {
                if state.order.len() >= MAX_RUNS {
                    if let Some(old) = state.order.pop_front() {
                        state.runs.remove(&old);
                    }
                }
                state.order.push_back(key.clone());
            }
            state.latest = Some(key.clone());
            let run = state.runs.entry(key.clone()).or_default();
            if role == Some(Role::Start) {
                *run = RunState {
                    total: total_of(event),
                    started: Some(event.timestamp()),
                    ..RunState::default()
                };
            }
            run.started.get_or_insert(event.timestamp());
            run.last = Some(event.timestamp());
            let mut latency = None;
            match role {
                None => {
                    if let Some(id) = self.item_id(event) {
                        if run.in_flight.len() < MAX_IN_FLIGHT {
                            run.in_flight.insert(id, event.timestamp());
                        }
                    }
                }
                Some(Role::End) => run.ended = true,
                Some(Role::Start) => {}
                Some(outcome @ (Role::Success | Role::Failure)) => {
                    if outcome == Role::Success {
                        run.succeeded += 1;
                    } else {
                        run.failed += 1;
                    }
                    let started = self.item_id(event).and_then(|id| run.in_flight.remove(&id));
                    latency = event
                        .data()
                        .get("duration_ms")
                        .and_then(serde_json::Value::as_f64)
                        .or_else(|| started.map(|t| seconds_between(t, event.timestamp()) * 1e3));
                    if let Some(ms) = latency {
                        run.record_latency(ms);
                    }
                }
            }
            let is_item = matches!(role, Some(Role::Success | Role::Failure));
            let metrics = run.metrics(&key);
            let due = is_item
                && self
                    .snapshot_every
                    .is_some_and(|n| metrics.processed % n == 0);
            (is_item.then_some((metrics, due, role)), latency)
        };
        let Some((metrics, due, role)) = snapshot else {
            return;
        };
        if let Some(backend) = &self.inner_metrics() {
            let run_id = metrics.run_id.as_deref().unwrap_or("");
            let outcome = if role == Some(Role::Success) {
                "succeeded"
            } else {
                "failed"
            };
            backend.counter(
                names::ITEMS_TOTAL,
                1,
                &[("run_id", run_id), ("outcome", outcome)],
            );
            let labels = [("run_id", run_id)];
            backend.gauge(names::SUCCESS_RATE, metrics.success_rate, &labels);
            backend.gauge(
                names::THROUGHPUT_PER_MINUTE,
                metrics.throughput_per_minute,
                &labels,
            );
            if let Some(eta) = metrics.eta_seconds {
                backend.gauge(names::ETA_SECONDS, eta, &labels);
            }
            if let Some(ms) = latency {
                backend.histogram(names::ITEM_DURATION_SECONDS, ms / 1e3, &labels);
            }
        }
        if due {
            let mut builder = Event::builder(SNAPSHOT_EVENT);
            if let Some(run) = &metrics.run_id {
                builder = builder.run_id(run.clone());
            }
            let emitted = serde_json::to_value(&metrics)
                .map_err(|e| e.to_string())
                .and_then(|data| builder.data(data).build().map_err(|e| e.to_string()))
                .and_then(|e| bus.emit_event(e).map_err(|e| e.to_string()));
            if let Err(error) = emitted {
                tracing::warn!(%error, "metrics snapshot not emitted");
            }
        }
    }

    fn inner_metrics(&self) -> Option<&Arc<dyn Metrics>> {
        self.metrics.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert!((quantile(&v, 0.5) - 50.0).abs() < f64::EPSILON);
        assert!((quantile(&v, 0.9) - 90.0).abs() < f64::EPSILON);
        assert!((quantile(&v, 0.99) - 99.0).abs() < f64::EPSILON);
        assert!((quantile(&[7.0], 0.99) - 7.0).abs() < f64::EPSILON);
        assert!(quantile(&[], 0.5).abs() < f64::EPSILON);
    }

    #[test]
    fn zero_snapshot_interval_is_refused() {
        let err = MetricsConsumer::builder()
            .snapshot_every(0)
            .build()
            .unwrap_err();
        assert_eq!(err.to_string(), "snapshot_every must be greater than zero");
    }
}
