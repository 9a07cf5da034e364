//! What a subscriber says: the options of a subscription, its patterns, and
//! the id the bus gives it back.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use nerve_core::{Event, Pattern, PatternError};

use crate::handler::FilterFn;
use crate::queue::Overflow;

pub use nerve_core::SubscriptionId;

/// Options of a subscription, for [`Bus::subscribe_with`](crate::Bus::subscribe_with)
/// and its async and typed twins.
///
/// | option        | default                               |
/// |---------------|---------------------------------------|
/// | `priority`    | 0; higher runs first, ties in subscription order |
/// | `name`        | none (stats and errors show the id)   |
/// | `filter`      | none: every matching event            |
/// | `timeout`     | the bus's `handler_timeout`           |
/// | `concurrency` | 1: one event at a time, in order (async only) |
/// | `queued`      | off: sync handlers run inline on the emitting thread |
/// | queue capacity| async handlers and queued sync handlers: 65,536 |
/// | `overflow`    | handlers: [`Overflow::Block`]; streams: [`Overflow::DropOldest`] |
///
/// ```
/// use nerve::Subscribe;
/// let options = Subscribe::new()
///     .priority(300)
///     .name("pager")
///     .filter(|e| e.data()["severity"] == "critical");
/// ```
#[derive(Clone, Default)]
#[must_use]
pub struct Subscribe {
    pub(crate) priority: i32,
    pub(crate) name: Option<String>,
    pub(crate) filter: Option<FilterFn>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) concurrency: Option<usize>,
    pub(crate) queue_capacity: Option<usize>,
    pub(crate) queued: bool,
    pub(crate) overflow: Option<Overflow>,
}

impl Subscribe {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Higher priority handlers run first; ties run in subscription order.
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// A name shown in stats, errors and `system.handler_error` events.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Only events for which `filter` returns true are delivered. The filter
    /// runs on the emitting thread; a panic in it counts as a handler panic.
    pub fn filter<F>(mut self, filter: F) -> Self
    where
        F: Fn(&Event) -> bool + Send + Sync + 'static,
    {
        self.filter = Some(Arc::new(filter));
        self
    }

    /// How long one delivery may take (overrides the bus's `handler_timeout`).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// For async handlers: run up to `n` deliveries at once. Order between
    /// events is then no longer kept for this subscriber. 0 is treated as 1.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = Some(n.max(1));
        self
    }

    /// Runs a sync handler on its own worker thread, behind a queue of
    /// `capacity` events, instead of inline: a slow handler then stops
    /// slowing the emitter. For an async handler, sets its queue's capacity.
    pub fn queued(mut self, capacity: usize) -> Self {
        self.queued = true;
        self.queue_capacity = Some(capacity.max(1));
        self
    }

    /// What this subscriber's queue does when full (async and queued
    /// handlers; inline handlers have no queue).
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = Some(overflow);
        self
    }
}

impl fmt::Debug for Subscribe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscribe")
            .field("priority", &self.priority)
            .field("name", &self.name)
            .field("filter", &self.filter.is_some())
            .field("timeout", &self.timeout)
            .field("concurrency", &self.concurrency)
            .field("queued", &self.queued)
            .field("queue_capacity", &self.queue_capacity)
            .field("overflow", &self.overflow)
            .finish()
    }
}

/// One or more patterns, as accepted by `subscribe`: a `&str`, a `String`, a
/// [`Pattern`], or a slice, array or `Vec` of them.
pub trait IntoPatterns {
    /// Parses the patterns.
    ///
    /// # Errors
    ///
    /// The first [`PatternError`].
    fn into_patterns(self) -> Result<Vec<Pattern>, PatternError>;
}

impl IntoPatterns for &str {
    fn into_patterns(self) -> Result<Vec<Pattern>, PatternError> {
        Ok(vec![Pattern::parse(self)?])
    }
}

impl IntoPatterns for String {
    fn into_patterns(self) -> Result<Vec<Pattern>, PatternError> {
        Ok(vec![Pattern::parse(&self)?])
    }
}

impl IntoPatterns for &String {
    fn into_patterns(self) -> Result<Vec<Pattern>, PatternError> {
        Ok(vec![Pattern::parse(self)?])
    }
}

impl IntoPatterns for Pattern {
    fn into_patterns(self) -> Result<Vec<Pattern>, PatternError> {
        Ok(vec![self])
    }
}

impl<T: Clone + IntoPatterns> IntoPatterns for &[T] {
    fn into_patterns(self) -> Result<Vec<Pattern>, PatternError> {
        let mut out = Vec::with_capacity(self.len());
        for p in self {
            out.extend(p.clone().into_patterns()?);
        }
        Ok(out)
    }
}

impl<T: Clone + IntoPatterns, const N: usize> IntoPatterns for [T; N] {
    fn into_patterns(self) -> Result<Vec<Pattern>, PatternError> {
        self.as_slice().into_patterns()
    }
}

impl<T: Clone + IntoPatterns> IntoPatterns for Vec<T> {
    fn into_patterns(self) -> Result<Vec<Pattern>, PatternError> {
        self.as_slice().into_patterns()
    }
}
