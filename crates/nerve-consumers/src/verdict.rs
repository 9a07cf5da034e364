//! [`VerdictConsumer`]: stop a run's emitter on a verdict reached elsewhere,
//! such as the early validation of a run split over several processes.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use nerve_core::run::{RunRole, RunTracker, explicit_run_id};
use nerve_core::{Event, Pattern};
use nerve_router::{Bus, HandlerError, Subscribe};
use serde::Serialize;

use crate::error::{AttachError, ConfigError};
use crate::run::{Attachment, DEFAULT_START};
use crate::validation::{CHECKPOINT_EVENT, DEFAULT_PRIORITY, MAX_RUNS};

/// The events that declare a run failed, unless configured otherwise.
pub const DEFAULT_VERDICT: &str = "extraction.failed";
/// The events refused once a run is halted, unless configured otherwise.
pub const DEFAULT_HALTED: &str = "specimen.*";

/// Follows the verdicts of a validator that runs somewhere else and halts
/// this bus's emitter of a failed run at its next item.
///
/// The [`ValidationConsumer`](crate::ValidationConsumer) halts the code
/// that emits on *its* bus. When a run is split over several worker
/// processes, one validator sees every worker's items (imported over the
/// NATS bridge, `nerve::nats`) and its verdict has to travel back: each
/// worker imports the validator's `validation.checkpoint` and
/// `extraction.failed` events and attaches a `VerdictConsumer`. Once a
/// verdict says the run failed, the worker's next `emit` of an item of
/// that run (`specimen.*`) returns
/// [`EmitError::Halted`](nerve_router::EmitError::Halted) with the
/// validator's reason (`early validation failed: 0% success rate after 5
/// specimens`), and every later one does too, so a worker loop that
/// handles the halt as it does a local one stops there.
///
/// As with any halt, the halted item was still delivered to every handler
/// (exports included: the item happened, its outcome is recorded); the
/// halt tells its emitter to stop. Run start and end events, verdicts and
/// checkpoints are never halted, so a stopped worker can still report
/// (`extraction.failed`, say). Refusals are counted in
/// [`refused`](Self::refused).
///
/// A verdict is:
///
/// * a checkpoint event (`validation.checkpoint`) with `passed: false`: the
///   run is halted with its `reason`; with `passed: true` the run passed
///   (see [`wait_verdict`](Self::wait_verdict));
/// * a verdict event (`extraction.failed`): the run is halted with its
///   data's `message`, else its `reason`, else `run failed`.
///
/// The run of a verdict or an item is its `run_id` (envelope, else data),
/// else the run opened by the latest start event (`extraction.started`)
/// seen on this bus. A run started again under the same id starts afresh.
/// Verdict events do not close the current run, so items that name no run
/// are still halted after one.
///
/// | option       | default | meaning |
/// |--------------|---------|---------|
/// | `halted`     | `specimen.*` | the item events refused once a run is halted |
/// | `verdict`    | `extraction.failed` | events that declare their run failed |
/// | `checkpoint` | `validation.checkpoint` | checkpoint events (`passed`, `reason`) |
/// | `start`      | `extraction.started` | run start events |
/// | `priority`   | the validation consumer's | priority of the handler |
///
/// ```
/// use nerve::consumers::VerdictConsumer;
/// use nerve::{Bus, EmitError, json};
///
/// // A worker's bus; the validator's verdict arrives (over NATS in real life).
/// let bus = Bus::new();
/// let verdicts = VerdictConsumer::new();
/// verdicts.attach(&bus)?;
/// bus.emit("specimen.failed", json!({"run_id": "r1", "sequence": 1}))?;
/// bus.emit("validation.checkpoint", json!({
///     "run_id": "r1", "passed": false,
///     "reason": "early validation failed: 0% success rate after 5 specimens",
/// }))?;
/// let err = bus.emit("specimen.processing", json!({"run_id": "r1", "sequence": 2})).unwrap_err();
/// assert!(matches!(&err, EmitError::Halted { reason, .. }
///     if reason == "early validation failed: 0% success rate after 5 specimens"));
/// // Other runs go on; the stopped worker can still report.
/// bus.emit("specimen.processing", json!({"run_id": "r2", "sequence": 1}))?;
/// bus.emit("extraction.failed", json!({"run_id": "r1", "reason": "early_validation_failed"}))?;
/// assert_eq!(verdicts.refused(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct VerdictConsumer {
    inner: Arc<Inner>,
}

struct Inner {
    halted: Vec<Pattern>,
    verdict: Vec<Pattern>,
    checkpoint: Vec<Pattern>,
    start: Vec<Pattern>,
    priority: i32,
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    current: RunTracker,
    runs: HashMap<String, Verdict>,
    /// Run keys, oldest first, for eviction.
    order: VecDeque<String>,
    refused: u64,
}

/// What a run's verdict said, as [`VerdictConsumer::verdict`] returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Verdict {
    /// The run, `None` for items of no run.
    pub run_id: Option<String>,
    /// Whether the run may go on: a passed checkpoint, and no failure since.
    pub passed: bool,
    /// Why the run is halted, when it is.
    pub reason: Option<String>,
    /// The event that decided: `validation.checkpoint`, `extraction.failed`.
    pub event_type: String,
    /// That event's `source` (`nats:{origin}/...` when it was imported).
    pub source: Option<String>,
}

impl fmt::Debug for VerdictConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerdictConsumer")
            .field("halted", &self.inner.halted)
            .field("verdict", &self.inner.verdict)
            .field("checkpoint", &self.inner.checkpoint)
            .finish_non_exhaustive()
    }
}

impl Default for VerdictConsumer {
    fn default() -> Self {
        Self::new()
    }
}

/// Builds a [`VerdictConsumer`]; see its docs for the defaults.
#[derive(Debug, Clone)]
#[must_use]
pub struct VerdictBuilder {
    halted: Vec<String>,
    verdict: Vec<String>,
    checkpoint: Vec<String>,
    start: Vec<String>,
    priority: i32,
}

impl Default for VerdictBuilder {
    fn default() -> Self {
        Self {
            halted: vec![DEFAULT_HALTED.to_owned()],
            verdict: vec![DEFAULT_VERDICT.to_owned()],
            checkpoint: vec![CHECKPOINT_EVENT.to_owned()],
            start: vec![DEFAULT_START.to_owned()],
            priority: DEFAULT_PRIORITY,
        }
    }
}

impl VerdictBuilder {
    /// The item events refused once their run is halted (default
    /// `specimen.*`); replaces the default, may be called again to add.
    pub fn halted(mut self, pattern: impl Into<String>) -> Self {
        if self.halted == [DEFAULT_HALTED] {
            self.halted.clear();
        }
        self.halted.push(pattern.into());
        self
    }

    /// The events that declare their run failed (default
    /// `extraction.failed`); replaces the default, may be called again to add.
    pub fn verdict(mut self, pattern: impl Into<String>) -> Self {
        if self.verdict == [DEFAULT_VERDICT] {
            self.verdict.clear();
        }
        self.verdict.push(pattern.into());
        self
    }

    /// The checkpoint events (default `validation.checkpoint`).
    pub fn checkpoint(mut self, pattern: impl Into<String>) -> Self {
        self.checkpoint = vec![pattern.into()];
        self
    }

    /// The run start events (default `extraction.started`).
    pub fn start(mut self, pattern: impl Into<String>) -> Self {
        self.start = vec![pattern.into()];
        self
    }

    /// The handler's priority (default the validation consumer's).
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Pattern`] for an invalid pattern.
    pub fn build(self) -> Result<VerdictConsumer, ConfigError> {
        let parse = |v: &[String]| -> Result<Vec<Pattern>, ConfigError> {
            v.iter()
                .map(|p| Pattern::parse(p).map_err(ConfigError::from))
                .collect()
        };
        Ok(VerdictConsumer {
            inner: Arc::new(Inner {
                halted: parse(&self.halted)?,
                verdict: parse(&self.verdict)?,
                checkpoint: parse(&self.checkpoint)?,
                start: parse(&self.start)?,
                priority: self.priority,
                state: Mutex::new(State::default()),
                changed: Condvar::new(),
            }),
        })
    }
}

impl VerdictConsumer {
    /// Starts configuring a consumer.
    pub fn builder() -> VerdictBuilder {
        VerdictBuilder::default()
    }

    /// A consumer with the defaults.
    pub fn new() -> Self {
        match Self::builder().build() {
            Ok(consumer) => consumer,
            Err(e) => unreachable!("the default verdict settings are valid: {e}"),
        }
    }

    /// Subscribes the consumer to `bus`: one inline handler, named
    /// `nerve.verdict`.
    ///
    /// # Errors
    ///
    /// [`AttachError::Subscribe`] when the bus is shut down.
    pub fn attach(&self, bus: &Bus) -> Result<Attachment, AttachError> {
        let inner = self.inner.clone();
        let mut patterns = Vec::new();
        for p in inner
            .halted
            .iter()
            .chain(&inner.verdict)
            .chain(&inner.checkpoint)
            .chain(&inner.start)
        {
            if !patterns.contains(p) {
                patterns.push(p.clone());
            }
        }
        let id = bus.subscribe_with(
            patterns,
            move |event: &Event| inner.on_event(event),
            Subscribe::new()
                .name("nerve.verdict")
                .priority(self.inner.priority),
        )?;
        Ok(Attachment::new(bus, vec![id]))
    }

    /// The verdict on run `run_id` (`""` for items of no run), if one came.
    pub fn verdict(&self, run_id: &str) -> Option<Verdict> {
        self.inner.lock().runs.get(run_id).cloned()
    }

    /// Waits until a verdict on run `run_id` came, at most `timeout`: a
    /// worker that must not go past the checkpoint before the validator
    /// has spoken calls it after emitting the checkpoint's item. `None`
    /// when none came in time.
    pub fn wait_verdict(&self, run_id: &str, timeout: Duration) -> Option<Verdict> {
        let deadline = Instant::now() + timeout;
        let mut state = self.inner.lock();
        loop {
            if let Some(v) = state.runs.get(run_id) {
                return Some(v.clone());
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            state = self
                .inner
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Item emits halted because their run had failed.
    pub fn refused(&self) -> u64 {
        self.inner.lock().refused
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn on_event(&self, event: &Event) -> Result<(), HandlerError> {
        let t = event.event_type();
        let any = |ps: &[Pattern]| ps.iter().any(|p| p.matches(t));
        let mut state = self.lock();
        if any(&self.checkpoint) {
            let Some(passed) = event.data().get("passed").and_then(|v| v.as_bool()) else {
                return Ok(());
            };
            let reason = if passed {
                None
            } else {
                Some(text(event, &["reason"]).unwrap_or("early validation failed"))
            };
            state.record(event, reason);
            self.changed.notify_all();
        } else if any(&self.verdict) {
            let reason = text(event, &["message", "reason"]).unwrap_or("run failed");
            state.record(event, Some(reason));
            self.changed.notify_all();
        } else if any(&self.start) {
            if let Some(run) = state.current.observe(event, RunRole::Start) {
                // A run started again starts afresh.
                state.runs.remove(&run);
            }
        } else if any(&self.halted) {
            let key = state
                .current
                .observe(event, RunRole::Member)
                .unwrap_or_default();
            let reason = state
                .runs
                .get(&key)
                .filter(|v| !v.passed)
                .and_then(|v| v.reason.clone());
            if let Some(reason) = reason {
                state.refused += 1;
                return Err(HandlerError::halt(reason));
            }
        }
        Ok(())
    }
}

impl State {
    /// Records a verdict on the event's run: a failure (with `reason`)
    /// stays, a pass does not undo one.
    fn record(&mut self, event: &Event, reason: Option<&str>) {
        let key = explicit_run_id(event)
            .map(str::to_owned)
            .or_else(|| self.current.current().map(str::to_owned))
            .unwrap_or_default();
        if reason.is_none() && self.runs.get(&key).is_some_and(|v| !v.passed) {
            return;
        }
        if !self.runs.contains_key(&key) {
            if self.order.len() >= MAX_RUNS {
                if let Some(old) = self.order.pop_front() {
                    self.runs.remove(&old);
                }
            }
            self.order.push_back(key.clone());
        }
        let verdict = Verdict {
            run_id: (!key.is_empty()).then(|| key.clone()),
            passed: reason.is_none(),
            reason: reason.map(str::to_owned),
            event_type: event.event_type().to_owned(),
            source: event.source().map(str::to_owned),
        };
        self.runs.insert(key, verdict);
    }
}

/// The first of `keys` that is a string in the event's data.
fn text<'a>(event: &'a Event, keys: &[&str]) -> Option<&'a str> {
    keys.iter()
        .find_map(|k| event.data().get(*k).and_then(|v| v.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nerve_router::EmitError;
    use serde_json::json;

    fn halted(r: Result<nerve_core::EventId, EmitError>) -> Option<String> {
        match r {
            Err(EmitError::Halted { reason, .. }) => Some(reason),
            Ok(_) => None,
            Err(e) => panic!("unexpected error {e}"),
        }
    }

    #[test]
    fn a_failed_checkpoint_halts_every_later_item_of_its_run_only() {
        let bus = Bus::new();
        let v = VerdictConsumer::new();
        v.attach(&bus).unwrap();
        assert_eq!(
            halted(bus.emit("specimen.completed", json!({"run_id": "a"}))),
            None
        );
        bus.emit(
            "validation.checkpoint",
            json!({"run_id": "a", "passed": false, "reason": "too few"}),
        )
        .unwrap();
        for t in [
            "specimen.processing",
            "specimen.completed",
            "specimen.failed",
        ] {
            assert_eq!(
                halted(bus.emit(t, json!({"run_id": "a"}))).as_deref(),
                Some("too few"),
                "{t}"
            );
        }
        assert_eq!(
            halted(bus.emit("specimen.failed", json!({"run_id": "b"}))),
            None
        );
        // Reporting the stop is never halted.
        assert_eq!(
            halted(bus.emit("extraction.failed", json!({"run_id": "a"}))),
            None
        );
        assert_eq!(v.refused(), 3);
        let verdict = v.verdict("a").unwrap();
        assert!(!verdict.passed);
        assert_eq!(verdict.run_id.as_deref(), Some("a"));
    }

    #[test]
    fn a_verdict_event_halts_items_that_name_no_run() {
        let bus = Bus::new();
        let v = VerdictConsumer::new();
        v.attach(&bus).unwrap();
        bus.emit("extraction.started", json!({"run_id": "r"}))
            .unwrap();
        bus.emit(
            "extraction.failed",
            json!({"run_id": "r", "reason": "early_validation_failed", "message": "0% after 5"}),
        )
        .unwrap();
        assert_eq!(
            halted(bus.emit("specimen.processing", json!({"sequence": 9}))).as_deref(),
            Some("0% after 5")
        );
        // Started again: afresh.
        bus.emit("extraction.started", json!({"run_id": "r"}))
            .unwrap();
        assert_eq!(halted(bus.emit("specimen.processing", json!({}))), None);
    }

    #[test]
    fn a_pass_is_waited_for_and_does_not_undo_a_failure() {
        let bus = Bus::new();
        let v = VerdictConsumer::builder()
            .halted("task.*")
            .verdict("job.aborted")
            .build()
            .unwrap();
        v.attach(&bus).unwrap();
        assert_eq!(v.wait_verdict("j", Duration::from_millis(1)), None);
        let waiter = {
            let v = v.clone();
            std::thread::spawn(move || v.wait_verdict("j", Duration::from_secs(30)))
        };
        bus.emit(
            "validation.checkpoint",
            json!({"run_id": "j", "passed": true}),
        )
        .unwrap();
        let got = waiter.join().unwrap().unwrap();
        assert!(got.passed && got.reason.is_none());
        assert_eq!(halted(bus.emit("task.done", json!({"run_id": "j"}))), None);
        bus.emit("job.aborted", json!({"run_id": "j"})).unwrap();
        bus.emit(
            "validation.checkpoint",
            json!({"run_id": "j", "passed": true}),
        )
        .unwrap();
        assert_eq!(
            halted(bus.emit("task.done", json!({"run_id": "j"}))).as_deref(),
            Some("run failed")
        );
        // `specimen.*` is no longer halted: the default was replaced.
        assert_eq!(
            halted(bus.emit("specimen.failed", json!({"run_id": "j"}))),
            None
        );
    }

    #[test]
    fn bad_patterns_are_refused() {
        let err = VerdictConsumer::builder()
            .halted("a..b")
            .build()
            .unwrap_err();
        assert!(matches!(err, ConfigError::Pattern(_)), "{err}");
    }
}
