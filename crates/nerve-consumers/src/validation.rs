//! [`ValidationConsumer`]: stop a broken run after its first few items.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use nerve_core::{Event, Value};
use nerve_router::{Bus, HandlerError, Subscribe};
use serde::Serialize;
use serde_json::json;

use crate::error::{AttachError, ConfigError};
use crate::run::{Attachment, CurrentRun, Role, RunPatternText, RunPatterns, total_of};

/// The event emitted when a run reaches its early checkpoint.
pub const CHECKPOINT_EVENT: &str = "validation.checkpoint";
/// The event emitted when a run's success rate is below the warning threshold.
pub const WARNING_EVENT: &str = "validation.warning";
/// The priority of the validation handler unless configured: high, so that it
/// runs before the other handlers of the item that decides the checkpoint.
pub const DEFAULT_PRIORITY: i32 = 1_000_000;
/// Runs remembered at most; the oldest is forgotten to make room.
pub const MAX_RUNS: usize = 1_024;

/// Early validation of a run: counts its successful and failed items,
/// checks the success rate at an early checkpoint, halts the emitter when
/// it is too low, and warns while the rate stays low.
///
/// It runs as an inline sync handler with a high priority, so the halt
/// reaches the code that emitted the item deciding the checkpoint: that
/// `emit` returns [`EmitError::Halted`](nerve_router::EmitError::Halted) with
/// a reason like `early validation failed: 0% success rate after 5
/// specimens`. Every later item of a run that failed its checkpoint halts
/// with the same reason, so an emitter that ignores the first halt still
/// stops at the next item.
///
/// Runs are told apart by run id (the event's `run_id`, else a `run_id` in
/// its data); items without one belong to the run started last (see the
/// [crate docs](crate#runs)).
///
/// | option              | default | meaning |
/// |---------------------|---------|---------|
/// | `early_checkpoint`  | 5       | items after which the run is checked once |
/// | `early_threshold`   | 0.5     | below this success rate the checkpoint fails and the emitter is halted |
/// | `warning_threshold` | 0.7     | below this rate a warning is emitted ... |
/// | `warning_interval`  | 50      | ... every this many items |
/// | `success` / `failure` | `specimen.completed` / `specimen.failed` | patterns of the item events |
/// | `start` / `end`     | `extraction.started` / `extraction.completed`, `extraction.failed` | run events |
/// | `items`             | `specimens` | the items' name in messages |
/// | `priority`          | [`DEFAULT_PRIORITY`] | priority of the handler |
///
/// # Events emitted
///
/// `validation.checkpoint` once per run, `validation.warning` every
/// `warning_interval` items while below the warning threshold, each with the
/// run's `run_id` (`null` for items of no run), `processed`, `succeeded`,
/// `failed`, `success_rate` and `threshold`; the checkpoint adds `passed`,
/// and when it failed, `reason` (the halt's reason, which a
/// `ProgressConsumer` shows on a stopped bar).
///
/// ```
/// use nerve::consumers::ValidationConsumer;
/// use nerve::{Bus, EmitError, json};
///
/// let bus = Bus::new();
/// let validator = ValidationConsumer::builder().early_checkpoint(5).build()?;
/// validator.attach(&bus)?;
///
/// bus.emit("extraction.started", json!({"run_id": "r1", "total_specimens": 2885}))?;
/// for i in 1..=4 {
///     bus.emit("specimen.failed", json!({"sequence": i}))?;
/// }
/// let err = bus.emit("specimen.failed", json!({"sequence": 5})).unwrap_err();
/// assert!(matches!(&err, EmitError::Halted { reason, .. }
///     if reason == "early validation failed: 0% success rate after 5 specimens"));
/// assert!(!validator.status().unwrap().passed());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct ValidationConsumer {
    inner: Arc<Inner>,
}

struct Inner {
    early_checkpoint: u64,
    early_threshold: f64,
    warning_threshold: f64,
    warning_interval: u64,
    items: String,
    priority: i32,
    patterns: RunPatterns,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    current: CurrentRun,
    runs: HashMap<String, RunState>,
    /// Run keys, oldest first, for eviction.
    order: VecDeque<String>,
    /// The run that changed last.
    latest: Option<String>,
}

#[derive(Debug, Clone, Default)]
struct RunState {
    total: Option<u64>,
    succeeded: u64,
    failed: u64,
    checkpoint: Checkpoint,
    warnings: u64,
    halt: Option<String>,
    ended: bool,
}

/// Where a run stands with its early checkpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Checkpoint {
    /// Fewer items than the checkpoint so far.
    #[default]
    Pending,
    /// The success rate at the checkpoint was at or above the threshold.
    Passed,
    /// The success rate at the checkpoint was below the threshold; the run
    /// is halted.
    Failed,
}

/// The validation state of one run, as [`ValidationConsumer::status`]
/// returns it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ValidationStatus {
    /// The run, `None` for items of no run.
    pub run_id: Option<String>,
    /// Items announced by the run's start event, if it said.
    pub total: Option<u64>,
    /// Items counted: `succeeded + failed`.
    pub processed: u64,
    /// Successful items.
    pub succeeded: u64,
    /// Failed items.
    pub failed: u64,
    /// `succeeded / processed`, 0 before the first item.
    pub success_rate: f64,
    /// The early checkpoint's outcome.
    pub checkpoint: Checkpoint,
    /// `validation.warning` events emitted for this run.
    pub warnings: u64,
    /// Why the run is halted, once it failed its checkpoint.
    pub halt_reason: Option<String>,
    /// Whether the run's end event was seen.
    pub ended: bool,
}

impl ValidationStatus {
    /// Whether the run has not failed its checkpoint (a pending checkpoint
    /// counts as not failed).
    pub fn passed(&self) -> bool {
        self.checkpoint != Checkpoint::Failed
    }
}

/// Builds a [`ValidationConsumer`]; see its docs for the defaults.
#[derive(Debug, Clone)]
#[must_use]
pub struct ValidationBuilder {
    early_checkpoint: u64,
    early_threshold: f64,
    warning_threshold: f64,
    warning_interval: u64,
    items: String,
    priority: i32,
    patterns: RunPatternText,
}

impl Default for ValidationBuilder {
    fn default() -> Self {
        Self {
            early_checkpoint: 5,
            early_threshold: 0.5,
            warning_threshold: 0.7,
            warning_interval: 50,
            items: "specimens".to_owned(),
            priority: DEFAULT_PRIORITY,
            patterns: RunPatternText::default(),
        }
    }
}

impl ValidationBuilder {
    /// Items after which the run's success rate is checked (default 5).
    pub fn early_checkpoint(mut self, items: u64) -> Self {
        self.early_checkpoint = items;
        self
    }

    /// The lowest success rate that passes the checkpoint (default 0.5).
    pub fn early_threshold(mut self, rate: f64) -> Self {
        self.early_threshold = rate;
        self
    }

    /// Below this success rate, warnings are emitted (default 0.7).
    pub fn warning_threshold(mut self, rate: f64) -> Self {
        self.warning_threshold = rate;
        self
    }

    /// Items between two warning checks (default 50).
    pub fn warning_interval(mut self, items: u64) -> Self {
        self.warning_interval = items;
        self
    }

    crate::run::run_pattern_setters!();

    /// What the items are called in messages (default `specimens`).
    pub fn items(mut self, name: impl Into<String>) -> Self {
        self.items = name.into();
        self
    }

    /// The handler's priority (default [`DEFAULT_PRIORITY`]).
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] for an invalid pattern, a threshold outside `0..=1`,
    /// or a zero checkpoint or interval.
    pub fn build(self) -> Result<ValidationConsumer, ConfigError> {
        for (option, value) in [
            ("early_threshold", self.early_threshold),
            ("warning_threshold", self.warning_threshold),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(ConfigError::OutOfRange { option, value });
            }
        }
        for (option, value) in [
            ("early_checkpoint", self.early_checkpoint),
            ("warning_interval", self.warning_interval),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero { option });
            }
        }
        Ok(ValidationConsumer {
            inner: Arc::new(Inner {
                early_checkpoint: self.early_checkpoint,
                early_threshold: self.early_threshold,
                warning_threshold: self.warning_threshold,
                warning_interval: self.warning_interval,
                items: self.items,
                priority: self.priority,
                patterns: self.patterns.parse()?,
                state: Mutex::new(State::default()),
            }),
        })
    }
}

/// What the handler does after releasing the state lock.
struct Actions {
    emit: Vec<(&'static str, Value, String)>,
    halt: Option<String>,
}

impl ValidationConsumer {
    /// Starts configuring a consumer.
    pub fn builder() -> ValidationBuilder {
        ValidationBuilder::default()
    }

    /// A consumer with the defaults.
    pub fn new() -> Self {
        // The defaults are valid, so building cannot fail.
        match Self::builder().build() {
            Ok(consumer) => consumer,
            Err(e) => unreachable!("the default validation settings are valid: {e}"),
        }
    }

    /// Subscribes the consumer to `bus`: one inline handler, named
    /// `nerve.validation`, for the run and item patterns.
    ///
    /// # Errors
    ///
    /// [`AttachError::Subscribe`] when the bus is shut down.
    pub fn attach(&self, bus: &Bus) -> Result<Attachment, AttachError> {
        let inner = self.inner.clone();
        // Weak, so that the handler does not keep the bus open.
        let emitter = bus.downgrade();
        let id = bus.subscribe_with(
            inner.patterns.all(),
            move |event: &Event| match emitter.upgrade() {
                Some(bus) => inner.on_event(&bus, event),
                None => Ok(()),
            },
            Subscribe::new()
                .name("nerve.validation")
                .priority(self.inner.priority),
        )?;
        Ok(Attachment::new(bus, vec![id]))
    }

    /// The state of the run that changed last, if any.
    pub fn status(&self) -> Option<ValidationStatus> {
        let state = self.inner.lock();
        let key = state.latest.as_ref()?;
        state.runs.get(key).map(|run| status(key, run))
    }

    /// The state of run `run_id` (`""` for items of no run).
    pub fn status_of(&self, run_id: &str) -> Option<ValidationStatus> {
        let state = self.inner.lock();
        state.runs.get(run_id).map(|run| status(run_id, run))
    }

    /// The state of every run remembered, oldest first.
    pub fn runs(&self) -> Vec<ValidationStatus> {
        let state = self.inner.lock();
        state
            .order
            .iter()
            .filter_map(|k| state.runs.get(k).map(|run| status(k, run)))
            .collect()
    }
}

impl Default for ValidationConsumer {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ValidationConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValidationConsumer")
            .field("early_checkpoint", &self.inner.early_checkpoint)
            .field("early_threshold", &self.inner.early_threshold)
            .field("warning_threshold", &self.inner.warning_threshold)
            .field("warning_interval", &self.inner.warning_interval)
            .finish_non_exhaustive()
    }
}

fn status(key: &str, run: &RunState) -> ValidationStatus {
    let processed = run.succeeded + run.failed;
    ValidationStatus {
        run_id: (!key.is_empty()).then(|| key.to_owned()),
        total: run.total,
        processed,
        succeeded: run.succeeded,
        failed: run.failed,
        success_rate: rate(run.succeeded, processed),
        checkpoint: run.checkpoint,
        warnings: run.warnings,
        halt_reason: run.halt.clone(),
        ended: run.ended,
    }
}

#[allow(clippy::cast_precision_loss)] // Item counts stay far below 2^52.
fn rate(succeeded: u64, processed: u64) -> f64 {
    if processed == 0 {
        0.0
    } else {
        succeeded as f64 / processed as f64
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn on_event(&self, bus: &Bus, event: &Event) -> Result<(), HandlerError> {
        let Some(role) = self.patterns.role(event.event_type()) else {
            return Ok(());
        };
        let actions = self.update(event, role);
        // Emit with the lock released: handlers of these events may read
        // the status, or be this consumer again.
        for (event_type, data, run) in actions.emit {
            let mut builder = Event::builder(event_type).data(data);
            if !run.is_empty() {
                builder = builder.run_id(run);
            }
            let emitted = builder
                .build()
                .map_err(|e| e.to_string())
                .and_then(|e| bus.emit_event(e).map_err(|e| e.to_string()));
            if let Err(error) = emitted {
                tracing::warn!(%error, event_type, "validation event not emitted");
            }
        }
        match actions.halt {
            Some(reason) => Err(HandlerError::halt(reason)),
            None => Ok(()),
        }
    }

    fn update(&self, event: &Event, role: Role) -> Actions {
        let mut actions = Actions {
            emit: Vec::new(),
            halt: None,
        };
        let mut guard = self.lock();
        let state = &mut *guard;
        let key = state.current.key(event, role);
        if !state.runs.contains_key(&key) {
            if state.order.len() >= MAX_RUNS {
                if let Some(old) = state.order.pop_front() {
                    state.runs.remove(&old);
                }
            }
            state.order.push_back(key.clone());
        }
        let run = state.runs.entry(key.clone()).or_default();
        state.latest = Some(key.clone());
        match role {
            Role::Start => {
                // A run started again under the same id starts afresh.
                *run = RunState {
                    total: total_of(event),
                    ..RunState::default()
                };
                return actions;
            }
            Role::End => {
                run.ended = true;
                return actions;
            }
            Role::Success => run.succeeded += 1,
            Role::Failure => run.failed += 1,
        }
        let processed = run.succeeded + run.failed;
        let success_rate = rate(run.succeeded, processed);
        let run_id = if key.is_empty() {
            Value::Null
        } else {
            Value::from(key.as_str())
        };
        if let Some(reason) = &run.halt {
            actions.halt = Some(reason.clone());
            return actions;
        }
        if processed == self.early_checkpoint {
            let passed = success_rate >= self.early_threshold;
            run.checkpoint = if passed {
                Checkpoint::Passed
            } else {
                Checkpoint::Failed
            };
            let mut data = json!({
                "run_id": run_id,
                "processed": processed,
                "succeeded": run.succeeded,
                "failed": run.failed,
                "success_rate": success_rate,
                "threshold": self.early_threshold,
                "passed": passed,
            });
            if !passed {
                let reason = format!(
                    "early validation failed: {:.0}% success rate after {processed} {}",
                    success_rate * 100.0,
                    self.items
                );
                data["reason"] = Value::from(reason.as_str());
                run.halt = Some(reason.clone());
                actions.halt = Some(reason);
            }
            actions.emit.push((CHECKPOINT_EVENT, data, key.clone()));
        }
        if processed % self.warning_interval == 0 && success_rate < self.warning_threshold {
            run.warnings += 1;
            actions.emit.push((
                WARNING_EVENT,
                json!({
                    "run_id": run_id,
                    "processed": processed,
                    "succeeded": run.succeeded,
                    "failed": run.failed,
                    "success_rate": success_rate,
                    "threshold": self.warning_threshold,
                }),
                key,
            ));
        }
        actions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked() {
        let err = ValidationConsumer::builder()
            .early_threshold(1.5)
            .build()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "early_threshold must be between 0 and 1, got 1.5"
        );
        let err = ValidationConsumer::builder()
            .warning_interval(0)
            .build()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "warning_interval must be greater than zero"
        );
        assert!(
            ValidationConsumer::builder()
                .success("bad..pattern")
                .build()
                .is_err()
        );
    }

    #[test]
    fn rates_round_like_the_seed_message() {
        assert!((rate(1, 5) - 0.2).abs() < f64::EPSILON);
        assert!(rate(0, 0).abs() < f64::EPSILON);
        assert_eq!(format!("{:.0}%", rate(23, 25) * 100.0), "92%");
    }
}
