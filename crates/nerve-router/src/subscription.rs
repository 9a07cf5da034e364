//! Subscriptions: ids, options, and the bus's record of each one.

use std::fmt;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use nerve_core::{Event, Pattern, PatternError};
use serde::Serialize;

use crate::handler::{AsyncFn, FilterFn, SyncFn};

/// Identifies a subscription on its bus. Returned by every `subscribe*` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct SubscriptionId(pub(crate) u64);

impl SubscriptionId {
    /// The id as a number (unique per bus, in subscription order).
    pub fn as_u64(&self) -> u64 {
        self.0
    }
}

impl fmt::Display for SubscriptionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sub-{}", self.0)
    }
}

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
///
/// ```
/// use nerve_router::Subscribe;
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
}

impl fmt::Debug for Subscribe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscribe")
            .field("priority", &self.priority)
            .field("name", &self.name)
            .field("filter", &self.filter.is_some())
            .field("timeout", &self.timeout)
            .field("concurrency", &self.concurrency)
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

pub(crate) enum HandlerKind {
    Sync(SyncFn),
    Async(AsyncSlot),
}

pub(crate) struct AsyncSlot {
    pub(crate) handler: AsyncFn,
    pub(crate) concurrency: usize,
    /// The running worker, started on first delivery (a runtime is needed then,
    /// not at subscribe time) and restarted if its runtime went away.
    pub(crate) worker: Mutex<Option<crate::worker::WorkerHandle>>,
}

/// The bus's record of a subscription.
pub(crate) struct Subscription {
    pub(crate) id: SubscriptionId,
    pub(crate) name: Option<Box<str>>,
    pub(crate) patterns: Vec<Pattern>,
    pub(crate) priority: i32,
    pub(crate) filter: Option<FilterFn>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) kind: HandlerKind,
    pub(crate) active: AtomicBool,
    pub(crate) counters: SubscriptionCounters,
}

impl Subscription {
    pub(crate) fn is_async(&self) -> bool {
        matches!(self.kind, HandlerKind::Async(_))
    }

    /// `name` when given, else the id: how stats and errors refer to it.
    pub(crate) fn label(&self) -> String {
        match &self.name {
            Some(n) => n.to_string(),
            None => self.id.to_string(),
        }
    }
}

#[derive(Default)]
pub(crate) struct SubscriptionCounters {
    pub(crate) delivered: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) panicked: AtomicU64,
    pub(crate) timed_out: AtomicU64,
    pub(crate) halted: AtomicU64,
    pub(crate) pending: AtomicU64,
}

impl SubscriptionCounters {
    pub(crate) fn reset(&self) {
        for c in [
            &self.delivered,
            &self.failed,
            &self.panicked,
            &self.timed_out,
            &self.halted,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }
}
