//! Settings of a bus, as the builder leaves them and the bus reads them on
//! every emit, and the guards' refusal type.

use std::sync::Arc;
use std::time::Duration;

use nerve_core::instrument::Instrument;
use nerve_core::metrics::Metrics;
use nerve_core::name::NameRules;
use nerve_core::sink::EventSink;
use nerve_core::{Event, Pattern};
use tokio::runtime::Handle;

use crate::dead_letter::DeadLetterQueue;
use crate::queue::Overflow;

/// Which events a bus holds `emit` for until its sink has them (see
/// [`BusBuilder::durable_patterns`](crate::BusBuilder::durable_patterns)):
/// what [`Bus::durable`](crate::Bus::durable) returns, for what extends the
/// journal's promise elsewhere (a NATS bridge's durable export holds the same
/// emits until its stream acknowledged them). A copy of the setting: it holds
/// no reference to the bus.
#[derive(Clone, Debug)]
pub struct Durable {
    /// `None`: the terminal events (the default).
    patterns: Option<Arc<[Pattern]>>,
}

impl Durable {
    /// Whether `event`, as the bus delivers it to handlers (marked terminal
    /// when it matches the terminal patterns), is one the bus holds `emit`
    /// for.
    pub fn matches(&self, event: &Event) -> bool {
        match &self.patterns {
            None => event.is_marked_terminal(),
            Some(patterns) => patterns.iter().any(|p| p.matches(event.event_type())),
        }
    }
}

/// Settings of a bus, read on every emit.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) name_rules: Option<NameRules>,
    pub(crate) history_capacity: usize,
    pub(crate) handler_timeout: Option<Duration>,
    /// Whether `handler_timeout` was set on the builder, which makes it apply
    /// to inline sync handlers too.
    pub(crate) handler_timeout_explicit: bool,
    pub(crate) max_concurrent_handlers: Option<usize>,
    pub(crate) runtime: Option<Handle>,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) generate_correlation_ids: bool,
    pub(crate) max_depth: usize,
    pub(crate) terminal_patterns: Vec<Pattern>,
    /// Events recorded with `EventSink::record_and_wait`: `None` for the
    /// terminal ones (the default), else those matching these patterns.
    pub(crate) durable_patterns: Option<Vec<Pattern>>,
    pub(crate) guards: Vec<GuardFn>,
    pub(crate) run_history: (usize, usize),
    pub(crate) sink: Option<Arc<dyn EventSink>>,
    pub(crate) dead_letters: Option<DeadLetterQueue>,
    pub(crate) metrics: Option<Arc<dyn Metrics>>,
    pub(crate) max_pending: Option<(usize, Overflow)>,
    /// Every instrument, combined into one (`None` costs one branch).
    pub(crate) instrument: Option<Arc<dyn Instrument>>,
}

/// An emit-time check; see [`BusBuilder::guard`](crate::BusBuilder::guard).
pub(crate) type GuardFn = Arc<dyn Fn(&Event) -> Result<(), Reject> + Send + Sync>;

/// A guard's refusal of an event, with the reason `emit` reports.
///
/// ```
/// use nerve::{Bus, Reject};
/// let bus = Bus::builder()
///     .guard(|e| match e.data().get("chain_of_thought") {
///         Some(_) => Err(Reject::new("events must not carry hidden reasoning")),
///         None => Ok(()),
///     })
///     .build()?;
/// let err = bus.emit("agent.step", nerve::json!({"chain_of_thought": "..."})).unwrap_err();
/// assert!(err.to_string().contains("hidden reasoning"));
/// # Ok::<(), nerve::BuildError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    reason: String,
}

impl Reject {
    /// A refusal with this reason.
    pub fn new(reason: impl std::fmt::Display) -> Self {
        Self {
            reason: reason.to_string(),
        }
    }

    /// The reason.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl std::fmt::Display for Reject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

/// Event types never dropped by a full queue unless configured otherwise.
pub const DEFAULT_TERMINAL_PATTERNS: [&str; 4] =
    ["*.completed", "*.finished", "*.failed", "*.error"];

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("name_rules", &self.name_rules)
            .field("history_capacity", &self.history_capacity)
            .field("handler_timeout", &self.handler_timeout)
            .field("max_concurrent_handlers", &self.max_concurrent_handlers)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("terminal_patterns", &self.terminal_patterns)
            .field("durable_patterns", &self.durable_patterns)
            .field("guards", &self.guards.len())
            .field("run_history", &self.run_history)
            .field("sink", &self.sink.is_some())
            .field("dead_letters", &self.dead_letters)
            .field("metrics", &self.metrics.is_some())
            .field("instrument", &self.instrument.is_some())
            .field("max_pending", &self.max_pending)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// The bus-wide timeout of inline sync handlers: only an explicit one.
    pub(crate) fn sync_timeout(&self) -> Option<Duration> {
        self.handler_timeout
            .filter(|_| self.handler_timeout_explicit)
    }
}

impl Config {
    /// The durable setting, as [`Durable`].
    pub(crate) fn durable(&self) -> Durable {
        Durable {
            patterns: self.durable_patterns.as_deref().map(Arc::from),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            name_rules: None,
            history_capacity: 10_000,
            handler_timeout: Some(Duration::from_secs(30)),
            handler_timeout_explicit: false,
            max_concurrent_handlers: None,
            runtime: None,
            shutdown_timeout: Duration::from_secs(5),
            generate_correlation_ids: true,
            max_depth: 64,
            terminal_patterns: DEFAULT_TERMINAL_PATTERNS
                .iter()
                .filter_map(|p| Pattern::parse(p).ok())
                .collect(),
            durable_patterns: None,
            guards: Vec::new(),
            run_history: (500, 200),
            sink: None,
            dead_letters: None,
            metrics: None,
            instrument: None,
            max_pending: None,
        }
    }
}
