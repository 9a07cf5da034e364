//! The metrics vocabulary of the bus: what it measures and where it reports.
//!
//! The bus reports through one small trait, [`Metrics`], with one method per
//! [`MetricKind`]. It names its metrics with the constants in [`names`] and
//! labels them with `(key, value)` pairs borrowed from the caller, so recording
//! a metric allocates nothing on the bus's side.
//!
//! # Implementations
//!
//! | type | what it does |
//! |------|--------------|
//! | [`NoopMetrics`] | drops everything; the default |
//! | [`InMemoryMetrics`] | keeps bounded series in memory, for tests, dashboards and [`MetricsSnapshot`]s |
//! | [`CallbackMetrics`] | calls a closure for every recording |
//! | `MetricsFacade` | forwards to the [`metrics`](https://docs.rs/metrics) crate and its exporters (feature `metrics-facade`) |
//!
//! `Arc<M>` implements [`Metrics`] whenever `M` does, `Arc<dyn Metrics>`
//! included, so one recorder can be shared by several buses.
//!
//! # Example
//!
//! ```
//! use nerve::metrics::{InMemoryMetrics, Metrics, names};
//!
//! let metrics = InMemoryMetrics::new();
//! metrics.counter(names::EVENTS_DELIVERED_TOTAL, 1, &[("subscription", "audit")]);
//! metrics.histogram(names::HANDLER_DURATION_SECONDS, 0.002, &[("subscription", "audit")]);
//!
//! assert_eq!(metrics.counter_value(names::EVENTS_DELIVERED_TOTAL, &[("subscription", "audit")]), 1);
//! assert_eq!(metrics.histogram_count(names::HANDLER_DURATION_SECONDS, &[("subscription", "audit")]), 1);
//! ```

use std::sync::Arc;

use serde::Serialize;

mod callback;
#[cfg(feature = "metrics-facade")]
mod facade;
mod memory;
pub mod names;

pub use callback::CallbackMetrics;
#[cfg(feature = "metrics-facade")]
pub use facade::MetricsFacade;
pub use memory::{
    DEFAULT_MAX_SERIES, HistogramSummary, InMemoryMetrics, MetricsSnapshot, RESERVOIR_SIZE, Series,
};

/// Where the bus reports its metrics.
///
/// Each method takes a metric name (one of [`names`] for the bus's own
/// metrics), a value, and labels as `(key, value)` pairs. Label keys are
/// `'static`; label values are borrowed, so the caller allocates nothing. An
/// implementation that keeps labels must copy them.
///
/// Implementations are called on the hot path, from any thread, and must not
/// block for long or panic.
///
/// # Example
///
/// ```
/// use nerve::metrics::Metrics;
///
/// /// Counts every counter increment, whatever its name.
/// #[derive(Default)]
/// struct Total(std::sync::atomic::AtomicU64);
///
/// impl Metrics for Total {
///     fn counter(&self, _name: &'static str, value: u64, _labels: &[(&'static str, &str)]) {
///         self.0.fetch_add(value, std::sync::atomic::Ordering::Relaxed);
///     }
///     fn gauge(&self, _name: &'static str, _value: f64, _labels: &[(&'static str, &str)]) {}
///     fn histogram(&self, _name: &'static str, _value: f64, _labels: &[(&'static str, &str)]) {}
/// }
/// ```
pub trait Metrics: Send + Sync + 'static {
    /// Increments the counter `name` with these labels by `value`.
    fn counter(&self, name: &'static str, value: u64, labels: &[(&'static str, &str)]);

    /// Sets the gauge `name` with these labels to `value`.
    fn gauge(&self, name: &'static str, value: f64, labels: &[(&'static str, &str)]);

    /// Records one observation of `value` in the histogram `name` with these
    /// labels.
    fn histogram(&self, name: &'static str, value: f64, labels: &[(&'static str, &str)]);
}

impl<M: Metrics + ?Sized> Metrics for Arc<M> {
    fn counter(&self, name: &'static str, value: u64, labels: &[(&'static str, &str)]) {
        (**self).counter(name, value, labels);
    }

    fn gauge(&self, name: &'static str, value: f64, labels: &[(&'static str, &str)]) {
        (**self).gauge(name, value, labels);
    }

    fn histogram(&self, name: &'static str, value: f64, labels: &[(&'static str, &str)]) {
        (**self).histogram(name, value, labels);
    }
}

/// The kind of a metric, one per method of [`Metrics`].
///
/// The set is closed: it mirrors the three methods of the trait, which are the
/// three kinds every metrics backend understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricKind {
    /// A monotonic count, incremented by [`Metrics::counter`].
    Counter,
    /// A value that goes up and down, set by [`Metrics::gauge`].
    Gauge,
    /// A distribution of observations, recorded by [`Metrics::histogram`].
    Histogram,
}

impl MetricKind {
    /// The kind's name in lowercase: `"counter"`, `"gauge"` or `"histogram"`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

impl std::fmt::Display for MetricKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A [`Metrics`] that drops everything: the bus's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoopMetrics;

impl Metrics for NoopMetrics {
    fn counter(&self, _name: &'static str, _value: u64, _labels: &[(&'static str, &str)]) {}

    fn gauge(&self, _name: &'static str, _value: f64, _labels: &[(&'static str, &str)]) {}

    fn histogram(&self, _name: &'static str, _value: f64, _labels: &[(&'static str, &str)]) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arc_and_dyn_forward_to_the_inner_recorder() {
        let inner = InMemoryMetrics::new();
        let shared: Arc<dyn Metrics> = Arc::new(inner.clone());
        let twice = Arc::new(shared.clone());

        shared.counter("c", 2, &[]);
        twice.counter("c", 3, &[]);
        twice.gauge("g", 1.5, &[]);
        twice.histogram("h", 0.25, &[]);

        assert_eq!(inner.counter_value("c", &[]), 5);
        assert_eq!(inner.gauge_value("g", &[]), Some(1.5));
        assert_eq!(inner.histogram_count("h", &[]), 1);
    }

    #[test]
    fn noop_accepts_everything() {
        let noop: &dyn Metrics = &NoopMetrics;
        noop.counter(names::EVENTS_EMITTED_TOTAL, 1, &[("event_type", "a.b")]);
        noop.gauge(names::PENDING, 1.0, &[]);
        noop.histogram(names::HANDLER_DURATION_SECONDS, 1.0, &[]);
    }

    #[test]
    fn kinds_print_and_serialize_in_lowercase() {
        for (kind, text) in [
            (MetricKind::Counter, "counter"),
            (MetricKind::Gauge, "gauge"),
            (MetricKind::Histogram, "histogram"),
        ] {
            assert_eq!(kind.to_string(), text);
            assert_eq!(serde_json::to_value(kind).unwrap(), text);
        }
    }
}
