//! Queries over recorded events: the bus's in-memory history, and (later) the
//! journal on disk, answer the same [`HistoryQuery`].

use crate::correlation::CorrelationId;
use crate::event::{Event, Timestamp};
use crate::pattern::{Pattern, PatternError};

/// Which recorded events to return, and how many.
///
/// Every condition set must hold. Results are newest first unless
/// [`oldest_first`](HistoryQuery::oldest_first) is set.
///
/// ```
/// use nerve::{Event, HistoryQuery};
/// let q = HistoryQuery::new().pattern("task.*")?.source("wf-1").limit(10);
/// let e = Event::builder("task.done").source("wf-1").build().unwrap();
/// assert!(q.matches(&e));
/// # Ok::<(), nerve::PatternError>(())
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct HistoryQuery {
    patterns: Vec<Pattern>,
    source: Option<String>,
    run_id: Option<String>,
    correlation_id: Option<CorrelationId>,
    since: Option<Timestamp>,
    until: Option<Timestamp>,
    limit: Option<usize>,
    oldest_first: bool,
}

impl HistoryQuery {
    /// A query that matches every event, newest first, with no limit.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only events whose type matches `pattern` (several calls: any of them).
    ///
    /// # Errors
    ///
    /// A [`PatternError`] when `pattern` is not a valid pattern.
    pub fn pattern(mut self, pattern: &str) -> Result<Self, PatternError> {
        self.patterns.push(Pattern::parse(pattern)?);
        Ok(self)
    }

    /// Only events whose type matches this parsed pattern.
    pub fn with_pattern(mut self, pattern: Pattern) -> Self {
        self.patterns.push(pattern);
        self
    }

    /// Only events from this source.
    pub fn source(mut self, source: impl Into<String>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Only events of this run.
    pub fn run_id(mut self, run_id: impl Into<String>) -> Self {
        self.run_id = Some(run_id.into());
        self
    }

    /// Only events with this correlation id.
    pub fn correlation_id(mut self, id: impl Into<CorrelationId>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// Only events at or after this time.
    pub fn since(mut self, t: Timestamp) -> Self {
        self.since = Some(t);
        self
    }

    /// Only events at or before this time.
    pub fn until(mut self, t: Timestamp) -> Self {
        self.until = Some(t);
        self
    }

    /// At most `n` events.
    pub fn limit(mut self, n: usize) -> Self {
        self.limit = Some(n);
        self
    }

    /// Oldest first instead of newest first.
    pub fn oldest_first(mut self) -> Self {
        self.oldest_first = true;
        self
    }

    /// The limit, if any.
    pub fn get_limit(&self) -> Option<usize> {
        self.limit
    }

    /// Whether results are oldest first.
    pub fn is_oldest_first(&self) -> bool {
        self.oldest_first
    }

    /// Whether `event` meets every condition (the limit aside).
    pub fn matches(&self, event: &Event) -> bool {
        (self.patterns.is_empty() || self.patterns.iter().any(|p| p.matches(event.event_type())))
            && self
                .source
                .as_deref()
                .is_none_or(|s| event.source() == Some(s))
            && self
                .run_id
                .as_deref()
                .is_none_or(|r| event.run_id() == Some(r))
            && self
                .correlation_id
                .as_ref()
                .is_none_or(|c| event.correlation_id() == Some(c))
            && self.since.is_none_or(|t| event.timestamp() >= t)
            && self.until.is_none_or(|t| event.timestamp() <= t)
    }
}
