//! [`ProgressConsumer`]: an `indicatif` progress bar driven by events.

use std::fmt;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex, PoisonError};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use nerve_core::Event;
use nerve_router::{Bus, Subscribe};

use crate::error::{AttachError, BuildError};
use crate::run::{Attachment, Role, RunPatternText, RunPatterns, total_of};

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
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct ProgressConsumer {
    inner: Arc<Inner>,
}

struct Inner {
    patterns: RunPatterns,
    bar: ProgressBar,
    counts: Mutex<(u64, u64)>,
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
    /// [`BuildError::Pattern`] for an invalid pattern.
    pub fn build(self) -> Result<ProgressConsumer, BuildError> {
        let target = if self.hidden || !std::io::stdout().is_terminal() {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        let bar = ProgressBar::with_draw_target(None, target);
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}",
        ) {
            bar.set_style(style);
        }
        Ok(ProgressConsumer {
            inner: Arc::new(Inner {
                patterns: self.patterns.parse()?,
                bar,
                counts: Mutex::new((0, 0)),
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
    /// `nerve.progress`.
    ///
    /// # Errors
    ///
    /// [`AttachError::Subscribe`] when the bus is shut down.
    pub fn attach(&self, bus: &Bus) -> Result<Attachment, AttachError> {
        let inner = self.inner.clone();
        let id = bus.subscribe_with(
            self.inner.patterns.all(),
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
    fn on_event(&self, event: &Event) {
        let Some(role) = self.patterns.role(event.event_type()) else {
            return;
        };
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        match role {
            Role::Start => {
                *counts = (0, 0);
                self.bar.reset();
                match total_of(event) {
                    Some(total) => self.bar.set_length(total),
                    None => self.bar.unset_length(),
                }
                self.bar.set_message("");
            }
            Role::End => self.bar.finish(),
            Role::Success | Role::Failure => {
                if role == Role::Success {
                    counts.0 += 1;
                } else {
                    counts.1 += 1;
                }
                self.bar.inc(1);
                let (ok, failed) = *counts;
                #[allow(clippy::cast_precision_loss)] // Item counts stay far below 2^52.
                let rate = ok as f64 / (ok + failed) as f64;
                let mut message = format!("{:.0}% ok", rate * 100.0);
                if self.bar.length().is_some() {
                    message.push_str(&format!(", ETA {}s", self.bar.eta().as_secs()));
                }
                self.bar.set_message(message);
            }
        }
    }
}
