//! Configuring a [`Bus`].

use std::sync::Arc;
use std::time::Duration;

use nerve_core::instrument::{Instrument, Instruments};
use nerve_core::metrics::Metrics;
use nerve_core::sink::EventSink;

use nerve_core::name::NameRules;
use nerve_core::{Event, Pattern};
use tokio::runtime::Handle;

use crate::bus::Bus;
use crate::config::{Config, Reject};
use crate::dead_letter::DeadLetterQueue;
use crate::error::BuildError;
use crate::queue::Overflow;

/// Builds a [`Bus`]. Made by [`Bus::builder`].
///
/// | setting                   | default                                        |
/// |---------------------------|------------------------------------------------|
/// | `validate_names`          | off: any name that is non-empty, without spaces, `*` or empty segments |
/// | `allowed_domains`         | all (setting it turns `validate_names` on)     |
/// | `history_capacity`        | 10,000 events (0 turns history off)            |
/// | `handler_timeout`         | 30 s for async handlers; inline sync handlers untimed unless set |
/// | `max_concurrent_handlers` | unlimited                                      |
/// | `runtime`                 | the tokio runtime current at emit time         |
/// | `shutdown_timeout`        | 5 s                                            |
/// | `generate_correlation_ids`| on: an event with no explicit or ambient id gets a fresh one |
/// | `max_depth`               | 64 levels of emits nested inside handlers      |
/// | `terminal_patterns`       | `*.completed`, `*.finished`, `*.failed`, `*.error` |
/// | `durable_patterns`        | the terminal events: on disk before `emit` returns |
/// | `guard`                   | none                                           |
/// | `run_history`             | 500 events per run, 200 runs (least recently used evicted) |
/// | `journal`                 | none: events live in memory only               |
/// | `dead_letters`            | none: failures are counted and published, not kept |
/// | `metrics`                 | none: only `stats()` counts                    |
/// | `max_pending`             | none: each subscriber's queue bounds itself    |
/// | `instrument`              | none: no tracing bridge                        |
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let bus = nerve::Bus::builder()
///     .validate_names(true)
///     .allowed_domains(["user", "chat"])
///     .build()?;
/// assert!(bus.emit("billing.charge", nerve::json!({})).is_err());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct BusBuilder {
    config: Config,
    validate_names: bool,
    allowed_domains: Option<Vec<String>>,
}

impl Bus {
    /// Starts configuring a bus.
    pub fn builder() -> BusBuilder {
        BusBuilder::default()
    }
}

impl BusBuilder {
    /// Enforce the `{domain}.{action}` convention on every emitted name.
    pub fn validate_names(mut self, on: bool) -> Self {
        self.validate_names = on;
        self
    }

    /// Only accept names in these domains (turns `validate_names` on).
    pub fn allowed_domains<I, S>(mut self, domains: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.validate_names = true;
        self.allowed_domains = Some(domains.into_iter().map(Into::into).collect());
        self
    }

    /// How many recent events `history` keeps (10,000 unless set; 0 keeps
    /// none).
    ///
    /// Each kept event holds its payload: 10,000 events of 1 KB payloads keep
    /// about 10 MB alive. A smaller history also makes emits faster, since
    /// the event it lets go of each time is then still in the CPU's caches:
    /// emitting a small JSON object took about 13 % less time with a
    /// history of 100 than with 10,000 (`docs/benchmarks.md`). The journal,
    /// not the history, is the record to rely on.
    ///
    /// ```
    /// use nerve::Bus;
    /// let bus = Bus::builder().history_capacity(100).build()?;
    /// for i in 0..150 {
    ///     bus.emit("tick.counted", nerve::json!({ "i": i }))?;
    /// }
    /// assert_eq!(bus.history(&nerve::HistoryQuery::new()).len(), 100);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn history_capacity(mut self, capacity: usize) -> Self {
        self.config.history_capacity = capacity;
        self
    }

    /// How long one delivery may take; `None` for no limit. An async handler
    /// past it is cancelled; an inline sync handler cannot be interrupted, so
    /// it is reported as timed out when it returns late.
    ///
    /// Without this call, async handlers get 30 s and inline sync handlers
    /// are not timed (timing costs two clock reads per call);
    /// [`Subscribe::timeout`](crate::Subscribe::timeout) sets one per
    /// subscription. Async timeouts need
    /// a runtime with timers enabled (`enable_time`, on in `#[tokio::main]`).
    pub fn handler_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.config.handler_timeout = timeout.into();
        self.config.handler_timeout_explicit = true;
        self
    }

    /// At most `n` async handlers run at once across the bus.
    pub fn max_concurrent_handlers(mut self, n: usize) -> Self {
        self.config.max_concurrent_handlers = Some(n);
        self
    }

    /// Run async handlers on this runtime instead of the one current at emit
    /// time; lets sync code with no runtime emit to async handlers.
    pub fn runtime(mut self, handle: Handle) -> Self {
        self.config.runtime = Some(handle);
        self
    }

    /// How long `shutdown` waits for queued deliveries.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.config.shutdown_timeout = timeout;
        self
    }

    /// Whether events with no explicit or ambient correlation id get a fresh one.
    pub fn generate_correlation_ids(mut self, on: bool) -> Self {
        self.config.generate_correlation_ids = on;
        self
    }

    /// How deeply emits may nest inside handlers before `emit` fails with
    /// [`EmitError::TooDeep`](crate::EmitError::TooDeep).
    pub fn max_depth(mut self, depth: usize) -> Self {
        self.config.max_depth = depth;
        self
    }

    /// Events matching these patterns are terminal: a full queue never drops
    /// them (replaces the defaults). [`Event::terminal`] marks one event more.
    ///
    /// # Errors
    ///
    /// A [`PatternError`](nerve_core::PatternError) for an invalid pattern.
    pub fn terminal_patterns<I, S>(mut self, patterns: I) -> Result<Self, nerve_core::PatternError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.config.terminal_patterns = patterns
            .into_iter()
            .map(|p| Pattern::parse(p.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(self)
    }

    /// Which events the journal must have written before `emit` returns
    /// (replaces the default, which is every terminal event: those matching
    /// the [terminal patterns](Self::terminal_patterns) or marked with
    /// [`Event::terminal`]). An empty list turns the wait off.
    ///
    /// For these events the bus calls
    /// [`EventSink::record_and_wait`](nerve_core::sink::EventSink::record_and_wait):
    /// the event, and everything emitted before it, is handed to the
    /// operating system before any handler runs, so a program may emit its
    /// final `extraction.failed` and call `std::process::exit` at once, or be
    /// killed, without losing it. The wait is a hand-off to the journal's
    /// writer thread and its acknowledgement, not a sync (unless the journal's
    /// policy is `Fsync::Always`); `docs/benchmarks.md` has its cost. Without
    /// a journal this setting does nothing.
    ///
    /// # Errors
    ///
    /// A [`PatternError`](nerve_core::PatternError) for an invalid pattern.
    pub fn durable_patterns<I, S>(mut self, patterns: I) -> Result<Self, nerve_core::PatternError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.config.durable_patterns = Some(
            patterns
                .into_iter()
                .map(|p| Pattern::parse(p.as_ref()))
                .collect::<Result<_, _>>()?,
        );
        Ok(self)
    }

    /// Checks every event before it is accepted; a refused event is not
    /// delivered, not recorded, counted as rejected, and `emit` returns
    /// [`EmitError::Rejected`](crate::EmitError::Rejected) with the reason.
    /// Guards run in the order added.
    pub fn guard<F>(mut self, guard: F) -> Self
    where
        F: Fn(&Event) -> Result<(), Reject> + Send + Sync + 'static,
    {
        self.config.guards.push(Arc::new(guard));
        self
    }

    /// How much of each run [`Bus::subscribe_run`] can replay: the newest
    /// `per_run` events of each of the `max_runs` most recently used runs.
    pub fn run_history(mut self, per_run: usize, max_runs: usize) -> Self {
        self.config.run_history = (per_run, max_runs);
        self
    }

    /// Records every accepted event in `sink`, such as the JSONL journal of
    /// `nerve-journal`, before handlers see it. See
    /// [`nerve_core::sink`] for what the bus does with the sink's errors:
    /// they are counted (`stats().events.journal_errors`), published as
    /// `system.journal_error`, and the event is still delivered in memory.
    /// `shutdown` closes the sink; `flush` flushes it.
    pub fn journal(mut self, sink: impl EventSink) -> Self {
        self.config.sink = Some(Arc::new(sink));
        self
    }

    /// Keeps failed deliveries in `queue` for inspection and retry (see
    /// [`DeadLetterQueue`]). Attach a queue to one bus only.
    pub fn dead_letters(mut self, queue: DeadLetterQueue) -> Self {
        self.config.dead_letters = Some(queue);
        self
    }

    /// Reports the bus's metrics (see [`nerve_core::metrics::names`]) to
    /// `metrics`: events emitted by type, delivered, dropped by reason,
    /// handler durations and failures, queue depths, pending deliveries and
    /// dead letters. Inline handlers are timed when a recorder is set.
    pub fn metrics(mut self, metrics: impl Metrics) -> Self {
        self.config.metrics = Some(Arc::new(metrics));
        self
    }

    /// Lets `instrument` see every emit and run around every delivery: how
    /// the OpenTelemetry and `tracing` bridges of `nerve-otel` follow the
    /// work (see [`nerve_core::instrument`]). Several instruments are called
    /// in the order added, the first one's scope outermost.
    pub fn instrument(mut self, instrument: impl Instrument) -> Self {
        let added: Arc<dyn Instrument> = Arc::new(instrument);
        self.config.instrument = Some(match self.config.instrument.take() {
            None => added,
            Some(first) => Arc::new([first, added].into_iter().collect::<Instruments>()),
        });
        self
    }

    /// Bounds the deliveries accepted but not yet finished across every
    /// async and queued handler of the bus to `max`, with `overflow` applied
    /// when the bound is reached: `DropNewest` drops the new delivery,
    /// `DropOldest` evicts the oldest delivery queued for the same
    /// subscriber (or drops the new one if it has none), `Error` makes
    /// `emit` return [`EmitError::PendingFull`](crate::EmitError::PendingFull),
    /// `Block` waits for room, `BlockTimeout(d)` waits up to `d` then drops.
    /// Drops are counted per subscriber with reason `max_pending`. Terminal
    /// events pass the bound. Streams are bounded by their own capacity.
    pub fn max_pending(mut self, max: usize, overflow: Overflow) -> Self {
        self.config.max_pending = Some((max.max(1), overflow));
        self
    }

    /// The bus.
    ///
    /// # Errors
    ///
    /// A [`BuildError`] when a setting cannot work: zero concurrency, or an
    /// allowed domain that is not `[a-z][a-z0-9_]*`.
    pub fn build(self) -> Result<Bus, BuildError> {
        let mut config = self.config;
        if config.max_concurrent_handlers == Some(0) {
            return Err(BuildError::ZeroConcurrency);
        }
        if self.validate_names {
            let mut rules = NameRules::new();
            if let Some(domains) = self.allowed_domains {
                for d in &domains {
                    let probe = format!("{d}.x");
                    if nerve_core::name::extract_domain(&probe) != d
                        || !nerve_core::name::is_valid_event_type(&probe)
                    {
                        return Err(BuildError::InvalidDomain(d.clone()));
                    }
                }
                rules = rules.allowed_domains(domains);
            }
            config.name_rules = Some(rules);
        }
        Ok(Bus::from_config(config))
    }
}
