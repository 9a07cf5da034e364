//! [`InMemoryMetrics`]: bounded series kept in memory, and their snapshots.

use std::borrow::{Borrow, Cow};
use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use serde::{Serialize, Serializer};

use super::Metrics;

/// How many distinct label sets [`InMemoryMetrics::new`] keeps per metric name.
pub const DEFAULT_MAX_SERIES: usize = 1_000;

/// How many of its most recent observations a histogram series keeps for its
/// quantiles.
pub const RESERVOIR_SIZE: usize = 1_024;

/// A [`Metrics`] that keeps every series in memory, for tests, debugging
/// endpoints and small deployments.
///
/// A *series* is one metric name with one set of labels. Label order does not
/// matter: `[("a", "1"), ("b", "2")]` and `[("b", "2"), ("a", "1")]` are the
/// same series.
///
/// | setting | default | |
/// |---------|---------|-|
/// | series per metric name | [`DEFAULT_MAX_SERIES`] (1,000) | [`with_max_series`](Self::with_max_series) |
/// | observations kept per histogram series | [`RESERVOIR_SIZE`] (1,024) | fixed |
///
/// # Bounded, and loss is counted
///
/// Labels such as `event_type` can take many values. Once a metric name (of
/// one kind) has `max_series` label sets, recordings for a new label set are
/// not stored; each one adds to [`overflowed`](Self::overflowed) instead, so
/// nothing is lost silently. Existing series keep updating.
///
/// # Histograms
///
/// A histogram series tracks the count, sum, minimum and maximum of every
/// observation, and keeps the last [`RESERVOIR_SIZE`] observations, from which
/// a [snapshot](Self::snapshot) computes p50, p90 and p99 (nearest rank). The
/// quantiles therefore describe recent behaviour, while the count and sum
/// cover the whole life of the series. A series holds at most 8 KiB of
/// samples.
///
/// Cloning is cheap: clones share the same series, so a test can hand one
/// clone to the bus and read from another.
///
/// # Example
///
/// ```
/// use nerve::metrics::{InMemoryMetrics, Metrics, names};
///
/// let metrics = InMemoryMetrics::new();
/// let reader = metrics.clone();
/// metrics.counter(names::EVENTS_EMITTED_TOTAL, 2, &[("event_type", "user.login")]);
/// metrics.gauge(names::PENDING, 4.0, &[]);
///
/// assert_eq!(reader.counter_value(names::EVENTS_EMITTED_TOTAL, &[("event_type", "user.login")]), 2);
/// assert_eq!(reader.gauge_value(names::PENDING, &[]), Some(4.0));
/// // Serialize, for an exporter or a test report.
/// println!("{:?}", reader.snapshot());
/// ```
#[derive(Clone)]
pub struct InMemoryMetrics {
    inner: Arc<Inner>,
}

struct Inner {
    max_series: usize,
    counters: Family<u64>,
    gauges: Family<f64>,
    histograms: Family<Reservoir>,
    overflowed: AtomicU64,
}

/// The series of every metric name of one kind.
type Family<T> = DashMap<&'static str, HashMap<OwnedLabels, T>>;

impl InMemoryMetrics {
    /// An empty store keeping up to [`DEFAULT_MAX_SERIES`] label sets per
    /// metric name.
    #[must_use]
    pub fn new() -> Self {
        Self::with_max_series(DEFAULT_MAX_SERIES)
    }

    /// An empty store keeping up to `max_series` label sets per metric name.
    ///
    /// With `0`, nothing is stored and every recording counts as
    /// [overflowed](Self::overflowed).
    #[must_use]
    pub fn with_max_series(max_series: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                max_series,
                counters: DashMap::new(),
                gauges: DashMap::new(),
                histograms: DashMap::new(),
                overflowed: AtomicU64::new(0),
            }),
        }
    }

    /// How many label sets are kept per metric name.
    #[must_use]
    pub fn max_series(&self) -> usize {
        self.inner.max_series
    }

    /// How many recordings were not stored because their series would have
    /// exceeded [`max_series`](Self::max_series).
    #[must_use]
    pub fn overflowed(&self) -> u64 {
        self.inner.overflowed.load(Ordering::Relaxed)
    }

    /// The value of a counter series, `0` if it was never incremented.
    #[must_use]
    pub fn counter_value(&self, name: &str, labels: &[(&'static str, &str)]) -> u64 {
        lookup(&self.inner.counters, name, labels, |v| *v).unwrap_or(0)
    }

    /// The value of a gauge series, `None` if it was never set.
    #[must_use]
    pub fn gauge_value(&self, name: &str, labels: &[(&'static str, &str)]) -> Option<f64> {
        lookup(&self.inner.gauges, name, labels, |v| *v)
    }

    /// How many observations a histogram series has recorded, `0` if none.
    #[must_use]
    pub fn histogram_count(&self, name: &str, labels: &[(&'static str, &str)]) -> u64 {
        lookup(&self.inner.histograms, name, labels, |r| r.count).unwrap_or(0)
    }

    /// The summary of a histogram series, `None` if it recorded nothing.
    #[must_use]
    pub fn histogram_summary(
        &self,
        name: &str,
        labels: &[(&'static str, &str)],
    ) -> Option<HistogramSummary> {
        lookup(&self.inner.histograms, name, labels, Reservoir::summary)
    }

    /// A copy of every series, sorted by name and then by labels.
    #[must_use]
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            counters: collect(&self.inner.counters, |v| *v),
            gauges: collect(&self.inner.gauges, |v| *v),
            histograms: collect(&self.inner.histograms, Reservoir::summary),
            overflowed: self.overflowed(),
        }
    }

    /// Applies `update` to the series, creating it with `T::default()` first
    /// if there is room.
    fn update<T: Default>(
        &self,
        family: &Family<T>,
        name: &'static str,
        labels: &[(&'static str, &str)],
        update: impl FnOnce(&mut T),
    ) {
        let labels = sorted(labels);
        let key = BorrowedLabels(&labels);
        let mut series = family.entry(name).or_default();
        if let Some(value) = series.get_mut(&key as &dyn LabelView) {
            update(value);
        } else if series.len() < self.inner.max_series {
            update(series.entry(OwnedLabels::from(&key)).or_default());
        } else {
            self.inner.overflowed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Default for InMemoryMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for InMemoryMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryMetrics")
            .field("max_series", &self.inner.max_series)
            .field("overflowed", &self.overflowed())
            .finish_non_exhaustive()
    }
}

impl Metrics for InMemoryMetrics {
    fn counter(&self, name: &'static str, value: u64, labels: &[(&'static str, &str)]) {
        self.update(&self.inner.counters, name, labels, |v| {
            *v = v.saturating_add(value);
        });
    }

    fn gauge(&self, name: &'static str, value: f64, labels: &[(&'static str, &str)]) {
        self.update(&self.inner.gauges, name, labels, |v| *v = value);
    }

    fn histogram(&self, name: &'static str, value: f64, labels: &[(&'static str, &str)]) {
        self.update(&self.inner.histograms, name, labels, |r| r.record(value));
    }
}

fn lookup<T, R>(
    family: &Family<T>,
    name: &str,
    labels: &[(&'static str, &str)],
    read: impl FnOnce(&T) -> R,
) -> Option<R> {
    let labels = sorted(labels);
    let series = family.get(name)?;
    series
        .get(&BorrowedLabels(&labels) as &dyn LabelView)
        .map(read)
}

fn collect<T, R>(family: &Family<T>, read: impl Fn(&T) -> R) -> Vec<Series<R>> {
    let mut out: Vec<Series<R>> = family
        .iter()
        .flat_map(|entry| {
            let name = *entry.key();
            entry
                .value()
                .iter()
                .map(|(labels, value)| Series {
                    name,
                    labels: labels
                        .0
                        .iter()
                        .map(|(k, v)| (*k, String::from(&**v)))
                        .collect(),
                    value: read(value),
                })
                .collect::<Vec<_>>()
        })
        .collect();
    out.sort_by(|a, b| (a.name, &a.labels).cmp(&(b.name, &b.labels)));
    out
}

/// The labels in canonical (sorted) order, borrowed when the caller already
/// sorted them, which is the common case, so lookups need not allocate.
fn sorted<'a>(labels: &'a [(&'static str, &'a str)]) -> Cow<'a, [(&'static str, &'a str)]> {
    if labels.is_sorted() {
        Cow::Borrowed(labels)
    } else {
        let mut owned = labels.to_vec();
        owned.sort_unstable();
        Cow::Owned(owned)
    }
}

/// A label set, stored or borrowed, hashed and compared the same way so a
/// borrowed one can look up a stored one without allocating.
trait LabelView {
    fn len(&self) -> usize;
    fn pair(&self, index: usize) -> (&'static str, &str);
}

impl Hash for dyn LabelView + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_usize(self.len());
        for i in 0..self.len() {
            self.pair(i).hash(state);
        }
    }
}

impl PartialEq for dyn LabelView + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && (0..self.len()).all(|i| self.pair(i) == other.pair(i))
    }
}

impl Eq for dyn LabelView + '_ {}

struct BorrowedLabels<'a>(&'a [(&'static str, &'a str)]);

impl LabelView for BorrowedLabels<'_> {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn pair(&self, index: usize) -> (&'static str, &str) {
        self.0[index]
    }
}

/// A stored label set, in sorted order.
struct OwnedLabels(Box<[(&'static str, Box<str>)]>);

impl From<&BorrowedLabels<'_>> for OwnedLabels {
    fn from(labels: &BorrowedLabels<'_>) -> Self {
        Self(labels.0.iter().map(|&(k, v)| (k, Box::from(v))).collect())
    }
}

impl LabelView for OwnedLabels {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn pair(&self, index: usize) -> (&'static str, &str) {
        let (key, value) = &self.0[index];
        (key, value)
    }
}

impl<'a> Borrow<dyn LabelView + 'a> for OwnedLabels {
    fn borrow(&self) -> &(dyn LabelView + 'a) {
        self
    }
}

impl Hash for OwnedLabels {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self as &dyn LabelView).hash(state);
    }
}

impl PartialEq for OwnedLabels {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Eq for OwnedLabels {}

/// One histogram series: totals over its life, samples from its recent past.
#[derive(Default)]
struct Reservoir {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    samples: Vec<f64>,
    /// Where the next sample goes once `samples` is full.
    next: usize,
}

impl Reservoir {
    fn record(&mut self, value: f64) {
        if self.count == 0 {
            self.min = value;
            self.max = value;
        } else {
            self.min = self.min.min(value);
            self.max = self.max.max(value);
        }
        self.count += 1;
        self.sum += value;
        if self.samples.len() < RESERVOIR_SIZE {
            self.samples.push(value);
        } else {
            self.samples[self.next] = value;
            self.next = (self.next + 1) % RESERVOIR_SIZE;
        }
    }

    fn summary(&self) -> HistogramSummary {
        let mut sorted = self.samples.clone();
        sorted.sort_unstable_by(f64::total_cmp);
        HistogramSummary {
            count: self.count,
            sum: self.sum,
            min: self.min,
            max: self.max,
            p50: percentile(&sorted, 50),
            p90: percentile(&sorted, 90),
            p99: percentile(&sorted, 99),
        }
    }
}

/// The nearest-rank percentile of sorted, non-empty samples: the smallest
/// sample at or below which `pct` percent of the samples lie.
fn percentile(sorted: &[f64], pct: usize) -> f64 {
    // Integer arithmetic, so that p90 of 100 samples is exactly the 90th.
    let rank = (sorted.len() * pct).div_ceil(100).max(1);
    sorted[rank - 1]
}

/// A copy of every series of an [`InMemoryMetrics`], from
/// [`InMemoryMetrics::snapshot`].
///
/// Each list is sorted by name and then by labels, so two snapshots of the
/// same data serialize identically. As JSON:
///
/// ```json
/// {
///   "counters": [
///     {"name": "nerve_events_emitted_total", "labels": {"event_type": "user.login"}, "value": 2}
///   ],
///   "gauges": [
///     {"name": "nerve_pending", "labels": {}, "value": 4.0}
///   ],
///   "histograms": [
///     {"name": "nerve_handler_duration_seconds", "labels": {"subscription": "audit"},
///      "value": {"count": 1, "sum": 0.002, "min": 0.002, "max": 0.002,
///                "p50": 0.002, "p90": 0.002, "p99": 0.002}}
///   ],
///   "overflowed": 0
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// Every counter series and its total.
    pub counters: Vec<Series<u64>>,
    /// Every gauge series and its last value.
    pub gauges: Vec<Series<f64>>,
    /// Every histogram series and its summary.
    pub histograms: Vec<Series<HistogramSummary>>,
    /// Recordings not stored because of the series bound, as
    /// [`InMemoryMetrics::overflowed`].
    pub overflowed: u64,
}

/// One series of a [`MetricsSnapshot`]: a metric name, its labels and its
/// value.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Series<T> {
    /// The metric's name.
    pub name: &'static str,
    /// The labels, sorted by key; serialized as a JSON object.
    #[serde(serialize_with = "labels_as_map")]
    pub labels: Vec<(&'static str, String)>,
    /// The value: the total, the last value, or a [`HistogramSummary`].
    pub value: T,
}

fn labels_as_map<S: Serializer>(
    labels: &[(&'static str, String)],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_map(labels.iter().map(|(k, v)| (k, v)))
}

/// The summary of one histogram series.
///
/// `count`, `sum`, `min` and `max` cover every observation; the quantiles
/// cover the last [`RESERVOIR_SIZE`] of them (nearest rank).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[non_exhaustive]
pub struct HistogramSummary {
    /// How many observations were recorded.
    pub count: u64,
    /// The sum of every observation.
    pub sum: f64,
    /// The smallest observation.
    pub min: f64,
    /// The largest observation.
    pub max: f64,
    /// The median of the recent observations.
    pub p50: f64,
    /// The 90th percentile of the recent observations.
    pub p90: f64,
    /// The 99th percentile of the recent observations.
    pub p99: f64,
}

#[cfg(test)]
mod tests {
    use std::sync::Barrier;

    use super::*;
    use crate::metrics::names;

    const AUDIT: &[(&str, &str)] = &[("subscription", "audit")];

    #[test]
    fn counters_add() {
        let m = InMemoryMetrics::new();
        m.counter("c", 2, AUDIT);
        m.counter("c", 3, AUDIT);
        m.counter("c", 7, &[("subscription", "mailer")]);

        assert_eq!(m.counter_value("c", AUDIT), 5);
        assert_eq!(m.counter_value("c", &[("subscription", "mailer")]), 7);
        assert_eq!(m.counter_value("c", &[]), 0);
        assert_eq!(m.counter_value("missing", AUDIT), 0);
    }

    #[test]
    fn gauges_set() {
        let m = InMemoryMetrics::new();
        assert_eq!(m.gauge_value(names::QUEUE_DEPTH, AUDIT), None);
        m.gauge(names::QUEUE_DEPTH, 10.0, AUDIT);
        m.gauge(names::QUEUE_DEPTH, 3.0, AUDIT);
        assert_eq!(m.gauge_value(names::QUEUE_DEPTH, AUDIT), Some(3.0));
    }

    #[test]
    fn label_order_does_not_matter() {
        let m = InMemoryMetrics::new();
        m.counter("c", 1, &[("subscription", "a"), ("reason", "full")]);
        m.counter("c", 1, &[("reason", "full"), ("subscription", "a")]);

        assert_eq!(
            m.counter_value("c", &[("reason", "full"), ("subscription", "a")]),
            2
        );
        assert_eq!(
            m.counter_value("c", &[("subscription", "a"), ("reason", "full")]),
            2
        );
        assert_eq!(m.snapshot().counters.len(), 1);
    }

    #[test]
    fn histogram_quantiles_on_known_data() {
        let m = InMemoryMetrics::new();
        // 1..=100 in a scrambled order: the summary must not depend on it.
        for i in 0..100u32 {
            m.histogram("h", f64::from((i * 37) % 100 + 1), &[]);
        }

        let s = m.histogram_summary("h", &[]).unwrap();
        assert_eq!(s.count, 100);
        assert_eq!(s.sum, 5050.0);
        assert_eq!((s.min, s.max), (1.0, 100.0));
        assert_eq!((s.p50, s.p90, s.p99), (50.0, 90.0, 99.0));
        assert_eq!(m.histogram_count("h", &[]), 100);
        assert_eq!(m.histogram_summary("other", &[]), None);
    }

    #[test]
    fn histogram_quantiles_of_one_and_two_samples() {
        let check = |samples: &[f64], expected: (f64, f64, f64)| {
            let m = InMemoryMetrics::new();
            for &s in samples {
                m.histogram("h", s, &[]);
            }
            let s = m.histogram_summary("h", &[]).unwrap();
            assert_eq!((s.p50, s.p90, s.p99), expected, "{samples:?}");
        };
        check(&[0.5], (0.5, 0.5, 0.5));
        check(&[2.0, 1.0], (1.0, 2.0, 2.0));
        check(&[-1.0, 0.0, 1.0], (0.0, 1.0, 1.0));
    }

    #[test]
    fn histogram_quantiles_cover_only_the_recent_reservoir() {
        let m = InMemoryMetrics::new();
        for _ in 0..RESERVOIR_SIZE {
            m.histogram("h", 1000.0, &[]);
        }
        for _ in 0..RESERVOIR_SIZE {
            m.histogram("h", 1.0, &[]);
        }

        let s = m.histogram_summary("h", &[]).unwrap();
        assert_eq!(s.count, 2 * RESERVOIR_SIZE as u64);
        assert_eq!((s.min, s.max), (1.0, 1000.0));
        assert_eq!((s.p50, s.p99), (1.0, 1.0));
    }

    #[test]
    fn series_beyond_the_bound_are_counted_not_stored() {
        let m = InMemoryMetrics::with_max_series(2);
        assert_eq!(m.max_series(), 2);
        m.counter("c", 1, &[("event_type", "a")]);
        m.counter("c", 1, &[("event_type", "b")]);
        m.counter("c", 1, &[("event_type", "c")]);
        m.counter("c", 1, &[("event_type", "d")]);
        // Existing series keep updating once the bound is reached.
        m.counter("c", 1, &[("event_type", "a")]);
        // The bound is per metric name.
        m.gauge("g", 1.0, &[]);
        m.histogram("h", 1.0, &[]);

        assert_eq!(m.counter_value("c", &[("event_type", "a")]), 2);
        assert_eq!(m.counter_value("c", &[("event_type", "b")]), 1);
        assert_eq!(m.counter_value("c", &[("event_type", "c")]), 0);
        assert_eq!(m.overflowed(), 2);
        assert_eq!(m.snapshot().overflowed, 2);
        assert_eq!(m.gauge_value("g", &[]), Some(1.0));
        assert_eq!(m.histogram_count("h", &[]), 1);

        let none = InMemoryMetrics::with_max_series(0);
        none.counter("c", 1, &[]);
        none.gauge("g", 1.0, &[]);
        assert_eq!(none.overflowed(), 2);
        assert_eq!(none.snapshot().counters, vec![]);
    }

    #[test]
    fn concurrent_increments_from_four_threads_sum_exactly() {
        const PER_THREAD: u64 = 10_000;
        let m = InMemoryMetrics::new();
        let start = Barrier::new(4);
        std::thread::scope(|scope| {
            for t in 0..4 {
                let (m, start) = (m.clone(), &start);
                scope.spawn(move || {
                    let own = format!("t{t}");
                    start.wait();
                    for _ in 0..PER_THREAD {
                        m.counter("shared", 1, AUDIT);
                        m.counter("own", 1, &[("subscription", &own)]);
                        m.histogram("h", 1.0, AUDIT);
                    }
                });
            }
        });

        assert_eq!(m.counter_value("shared", AUDIT), 4 * PER_THREAD);
        for t in 0..4 {
            let own = format!("t{t}");
            assert_eq!(
                m.counter_value("own", &[("subscription", &own)]),
                PER_THREAD
            );
        }
        assert_eq!(m.histogram_count("h", AUDIT), 4 * PER_THREAD);
        assert_eq!(m.overflowed(), 0);
    }

    #[test]
    fn snapshot_is_sorted_and_serializes_to_json() {
        let m = InMemoryMetrics::new();
        m.counter(names::EVENTS_EMITTED_TOTAL, 1, &[("event_type", "z.b")]);
        m.counter(names::EVENTS_EMITTED_TOTAL, 2, &[("event_type", "a.b")]);
        m.counter(
            names::EVENTS_DROPPED_TOTAL,
            1,
            &[("subscription", "audit"), ("reason", "full")],
        );
        m.gauge(names::PENDING, 4.0, &[]);
        m.histogram(names::HANDLER_DURATION_SECONDS, 0.5, AUDIT);

        let snapshot = m.snapshot();
        assert_eq!(snapshot, m.snapshot());
        assert_eq!(
            serde_json::to_value(&snapshot).unwrap(),
            serde_json::json!({
                "counters": [
                    {"name": "nerve_events_dropped_total",
                     "labels": {"reason": "full", "subscription": "audit"}, "value": 1},
                    {"name": "nerve_events_emitted_total",
                     "labels": {"event_type": "a.b"}, "value": 2},
                    {"name": "nerve_events_emitted_total",
                     "labels": {"event_type": "z.b"}, "value": 1},
                ],
                "gauges": [
                    {"name": "nerve_pending", "labels": {}, "value": 4.0},
                ],
                "histograms": [
                    {"name": "nerve_handler_duration_seconds",
                     "labels": {"subscription": "audit"},
                     "value": {"count": 1, "sum": 0.5, "min": 0.5, "max": 0.5,
                               "p50": 0.5, "p90": 0.5, "p99": 0.5}},
                ],
                "overflowed": 0,
            })
        );
        assert_eq!(
            snapshot.counters[0].labels,
            vec![
                ("reason", "full".to_owned()),
                ("subscription", "audit".to_owned())
            ]
        );
    }

    #[test]
    fn clones_share_series_and_debug_is_short() {
        let m = InMemoryMetrics::default();
        m.clone().counter("c", 1, &[]);
        assert_eq!(m.counter_value("c", &[]), 1);
        assert_eq!(
            format!("{m:?}"),
            "InMemoryMetrics { max_series: 1000, overflowed: 0, .. }"
        );
    }
}
