//! [`ProgressConsumer`]: an `indicatif` progress bar driven by events.

use std::fmt;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex, PoisonError};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use nerve_core::{Event, Pattern};
use nerve_router::{Bus, Subscribe};

use crate::error::{AttachError, ConfigError};
use crate::run::{Attachment, Role, RunPatternText, RunPatterns, total_of};
use crate::validation::CHECKPOINT_EVENT;

/// The bar while a run goes on.
const RUNNING: &str = "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}";
/// The terminal event a bus with signal handling emits on SIGINT or SIGTERM
/// (see `nerve::signals`): it ends a run in progress.
const INTERRUPTED_EVENT: &str = "system.interrupted";
/// The bar of a run that ended with all its items done.
const COMPLETED: &str = "✓ [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}";
/// The bar of a run that ended early: left where it stopped.
const STOPPED: &str = "✗ [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}";

/// A progress bar for a run: its length from the start event
/// (`total_specimens` or `total`), its position from completions and
/// failures, its message the live success rate and the ETA.
///
/// The bar draws on standard error, and only when standard output is a
/// terminal (so a run piped into a file or a CI log stays clean); it is
/// hidden otherwise, or always with [`hidden`](ProgressBuilder::hidden). Its
/// state is readable either way with [`state`](ProgressConsumer::state).
/// One bar follows one run at a time: each start event resets it.
///
/// # How a run's bar ends
///
/// A run that ends with all its items done is finished in place: the bar is
/// full and keeps its last message, behind a `✓`. A run that ends before
/// its last item (its end event arrives at 5 of 30, say) or whose early
/// checkpoint failed is **stopped**: the bar stays where the run stopped,
/// behind a `✗`, with the reason as its message, as in
/// `✗ [00:00:02] ████░░░░ 5/30 stopped: early validation failed: 0% success
/// rate after 5 specimens`. The reason is the failed
/// [`validation.checkpoint`](crate::validation::CHECKPOINT_EVENT)'s, else
/// the end event's `reason` (or `error`) in its data, else the end event's
/// type; [`ProgressState::stopped`] holds it. A run interrupted by
/// SIGINT or SIGTERM (the `system.interrupted` event of `nerve::signals`) is
/// stopped the same way, with `interrupted (SIGINT)` as its reason.
///
/// | option | default |
/// |--------|---------|
/// | `success` / `failure` | `specimen.completed` / `specimen.failed` |
/// | `start` / `end` | `extraction.started` / `extraction.completed`, `extraction.failed` |
/// | `hidden` | only when standard output is not a terminal |
///
/// ```
/// use nerve::consumers::ProgressConsumer;
/// use nerve::{Bus, json};
///
/// let bus = Bus::new();
/// let progress = ProgressConsumer::builder().hidden().build()?;
/// progress.attach(&bus)?;
/// bus.emit("extraction.started", json!({"run_id": "r1", "total_specimens": 10}))?;
/// bus.emit("specimen.completed", json!({}))?;
/// let state = progress.state();
/// assert_eq!((state.position, state.length), (1, Some(10)));
/// assert!(state.message.starts_with("100% ok"));
///
/// // The run ends after 1 of its 10 items: the bar stays at 1/10.
/// bus.emit("extraction.failed", json!({"run_id": "r1", "reason": "out of credits"}))?;
/// let state = progress.state();
/// assert_eq!((state.position, state.finished), (1, true));
/// assert_eq!(state.stopped.as_deref(), Some("out of credits"));
/// assert_eq!(state.message, "stopped: out of credits");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct ProgressConsumer {
    inner: Arc<Inner>,
}

struct Inner {
    patterns: RunPatterns,
    bar: ProgressBar,
    run: Mutex<RunState>,
}

/// What the bar knows of the run it follows.
#[derive(Debug, Default)]
struct RunState {
    succeeded: u64,
    failed: u64,
    /// Why the run was halted, once its early checkpoint failed.
    halted: Option<String>,
    /// Why the run ended early, once it did.
    stopped: Option<String>,
    /// A start event began the run (and its end has not come).
    running: bool,
}

/// What the bar shows, as [`ProgressConsumer::state`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProgressState {
    /// Items done (succeeded or failed).
    pub position: u64,
    /// Items of the run, once a start event said.
    pub length: Option<u64>,
    /// The message: success rate and ETA.
    pub message: String,
    /// Whether the run's end event was seen.
    pub finished: bool,
    /// Why the run ended early, when it did: the bar was left at
    /// `position` instead of being filled (see [How a run's bar
    /// ends](ProgressConsumer#how-a-runs-bar-ends)).
    pub stopped: Option<String>,
    /// Whether the bar draws nothing.
    pub hidden: bool,
}

/// Builds a [`ProgressConsumer`]; see its docs for the defaults.
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct ProgressBuilder {
    patterns: RunPatternText,
    hidden: bool,
}

impl ProgressBuilder {
    crate::run::run_pattern_setters!();

    /// Never draws, even on a terminal.
    pub fn hidden(mut self) -> Self {
        self.hidden = true;
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Pattern`] for an invalid pattern.
    pub fn build(self) -> Result<ProgressConsumer, ConfigError> {
        let target = if self.hidden || !std::io::stdout().is_terminal() {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        let bar = ProgressBar::with_draw_target(None, target);
        set_style(&bar, RUNNING);
        Ok(ProgressConsumer {
            inner: Arc::new(Inner {
                patterns: self.patterns.parse()?,
                bar,
                run: Mutex::new(RunState::default()),
            }),
        })
    }
}

impl ProgressConsumer {
    /// Starts configuring a consumer.
    pub fn builder() -> ProgressBuilder {
        ProgressBuilder::default()
    }

    /// Subscribes the consumer to `bus`: one inline handler, named
    /// `nerve.progress`, for the run's events, `validation.checkpoint`
    /// (whose failure gives a stopped run its reason) and
    /// `system.interrupted` (a signal stops the run in progress).
    ///
    /// # Errors
    ///
    /// [`AttachError::Subscribe`] when the bus is shut down.
    pub fn attach(&self, bus: &Bus) -> Result<Attachment, AttachError> {
        let inner = self.inner.clone();
        let mut patterns = self.inner.patterns.all();
        if let Ok(checkpoint) = Pattern::parse(CHECKPOINT_EVENT) {
            patterns.push(checkpoint);
        }
        if let Ok(interrupted) = Pattern::parse(INTERRUPTED_EVENT) {
            patterns.push(interrupted);
        }
        let id = bus.subscribe_with(
            patterns,
            move |event: &Event| inner.on_event(event),
            Subscribe::new().name("nerve.progress"),
        )?;
        Ok(Attachment::new(bus, vec![id]))
    }

    /// What the bar shows now.
    pub fn state(&self) -> ProgressState {
        let bar = &self.inner.bar;
        ProgressState {
            position: bar.position(),
            length: bar.length(),
            message: bar.message(),
            finished: bar.is_finished(),
            stopped: self.inner.lock().stopped.clone(),
            hidden: bar.is_hidden(),
        }
    }

    /// The bar itself, to restyle it or draw it inside a `MultiProgress`.
    pub fn bar(&self) -> &ProgressBar {
        &self.inner.bar
    }
}

impl fmt::Debug for ProgressConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProgressConsumer")
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, RunState> {
        self.run.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn on_event(&self, event: &Event) {
        if event.event_type() == CHECKPOINT_EVENT {
            self.on_checkpoint(event);
            return;
        }
        if event.event_type() == INTERRUPTED_EVENT {
            self.on_interrupted(event);
            return;
        }
        let Some(role) = self.patterns.role(event.event_type()) else {
            return;
        };
        let mut run = self.lock();
        match role {
            Role::Start => {
                *run = RunState {
                    running: true,
                    ..RunState::default()
                };
                self.bar.reset();
                set_style(&self.bar, RUNNING);
                match total_of(event) {
                    Some(total) => self.bar.set_length(total),
                    None => self.bar.unset_length(),
                }
                self.bar.set_message("");
            }
            Role::End => self.end(&mut run, event),
            Role::Success | Role::Failure => {
                if role == Role::Success {
                    run.succeeded += 1;
                } else {
                    run.failed += 1;
                }
                self.bar.inc(1);
                #[allow(clippy::cast_precision_loss)] // Item counts stay far below 2^52.
                let rate = run.succeeded as f64 / (run.succeeded + run.failed) as f64;
                let mut message = format!("{:.0}% ok", rate * 100.0);
                if self.bar.length().is_some() {
                    message.push_str(&format!(", ETA {}s", self.bar.eta().as_secs()));
                }
                self.bar.set_message(message);
            }
        }
    }

    /// Remembers why the run was halted when its early checkpoint failed.
    fn on_checkpoint(&self, event: &Event) {
        let data = event.data();
        if data.get("passed").and_then(serde_json::Value::as_bool) != Some(false) {
            return;
        }
        let reason = text(event, "reason").unwrap_or_else(|| {
            let rate = data
                .get("success_rate")
                .and_then(serde_json::Value::as_f64)
                .unwrap_or(0.0);
            let processed = data
                .get("processed")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0);
            format!(
                "early validation failed: {:.0}% success rate after {processed}",
                rate * 100.0
            )
        });
        self.lock().halted = Some(reason);
    }

    /// Leaves the bar of a run in progress where the signal stopped it,
    /// with the signal as the reason.
    fn on_interrupted(&self, event: &Event) {
        let mut run = self.lock();
        if !run.running {
            return;
        }
        let signal = text(event, "signal").unwrap_or_else(|| "a signal".to_owned());
        run.halted = Some(format!("interrupted ({signal})"));
        self.end(&mut run, event);
    }

    /// Ends the bar where the run ended: full and `✓` when every item was
    /// done, else left at its position, `✗`, with the reason.
    fn end(&self, run: &mut RunState, event: &Event) {
        run.running = false;
        let short = self
            .bar
            .length()
            .is_some_and(|length| self.bar.position() < length);
        if run.halted.is_none() && !short {
            set_style(&self.bar, COMPLETED);
            self.bar.finish();
            return;
        }
        let reason = run
            .halted
            .clone()
            .or_else(|| text(event, "reason"))
            .or_else(|| text(event, "error"))
            .unwrap_or_else(|| event.event_type().to_owned());
        set_style(&self.bar, STOPPED);
        self.bar.abandon_with_message(format!("stopped: {reason}"));
        run.stopped = Some(reason);
    }
}

/// A string in the event's data.
fn text(event: &Event, key: &str) -> Option<String> {
    event
        .data()
        .get(key)
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
}

fn set_style(bar: &ProgressBar, template: &str) {
    // The templates are constants, checked by the tests.
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_templates_parse() {
        for template in [RUNNING, COMPLETED, STOPPED] {
            assert!(ProgressStyle::with_template(template).is_ok(), "{template}");
        }
    }
}
